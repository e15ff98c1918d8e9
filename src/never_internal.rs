//! The "never INTERNAL" promise for the services tonic generates for us (health, reflection):
//! tonic answers a request message that is not valid protobuf with INTERNAL and one over the size
//! limit with OUT_OF_RANGE, in the response's headers (a unary call) or its trailers (a stream).
//! [`NeverInternal`] rewrites both to what the caller's fault is — INVALID_ARGUMENT and
//! RESOURCE_EXHAUSTED — as `codec::ClientFault` does for the recommendation service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;

/// A service whose INTERNAL and OUT_OF_RANGE answers are rewritten (see the module's doc).
#[derive(Debug, Clone)]
pub struct NeverInternal<S>(pub S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for NeverInternal<S> {
    const NAME: &'static str = S::NAME;
}

/// tonic's message for a request message it could not decode, as percent-encoded in
/// `grpc-message`: the one INTERNAL that is the caller's fault.
const UNDECODABLE: &[u8] = b"failed%20to%20decode";

/// Rewrites the status in `headers` (response headers or trailers), if it is one to rewrite: an
/// INTERNAL from decoding the request, and OUT_OF_RANGE (a request over the size limit; health and
/// reflection never answer it themselves). Any other INTERNAL stays what it is.
fn rewrite(headers: &mut http::HeaderMap) {
    let undecodable = headers
        .get("grpc-message")
        .is_some_and(|message| message.as_bytes().starts_with(UNDECODABLE));
    let code = match headers.get("grpc-status").map(http::HeaderValue::as_bytes) {
        Some(b"13") if undecodable => "3",
        Some(b"11") => "8",
        _ => return,
    };
    headers.insert("grpc-status", http::HeaderValue::from_static(code));
    let prefix = if code == "3" {
        "malformed request: "
    } else {
        "request too large: "
    };
    let message = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let rewritten = format!("{}{message}", prefix.replace(' ', "%20"));
    if let Ok(value) = http::HeaderValue::from_str(&rewritten) {
        headers.insert("grpc-message", value);
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for NeverInternal<S>
where
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer {
        let answer = self.0.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            rewrite(response.headers_mut());
            Ok(response.map(|body| Body::new(RewrittenTrailers { inner: body })))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers are rewritten.
    struct RewrittenTrailers {
        #[pin]
        inner: Body,
    }
}

impl HttpBody for RewrittenTrailers {
    type Data = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match std::task::ready!(self.project().inner.poll_frame(context)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    rewrite(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_and_out_of_range_become_the_callers_fault() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("failed%20to%20decode%20Protobuf%20message"),
        );
        rewrite(&mut headers);
        assert_eq!(headers["grpc-status"], "3");
        assert_eq!(
            headers["grpc-message"],
            "malformed%20request:%20failed%20to%20decode%20Protobuf%20message"
        );
        // An INTERNAL of another cause is not the caller's fault: left as it is.
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
        headers.insert("grpc-message", http::HeaderValue::from_static("oops"));
        rewrite(&mut headers);
        assert_eq!(headers["grpc-status"], "13");
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("11"));
        rewrite(&mut headers);
        assert_eq!(headers["grpc-status"], "8");
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        rewrite(&mut headers);
        assert_eq!(headers["grpc-status"], "0");
    }
}
