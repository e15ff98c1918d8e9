//! The "never INTERNAL" promise for the services tonic generates for us (health, reflection):
//! tonic answers a request message that is not valid protobuf with INTERNAL and one over the size
//! limit with OUT_OF_RANGE, in the response's headers (a unary call) or its trailers (a stream).
//! [`NeverInternal`] rewrites both to what the caller's fault is — INVALID_ARGUMENT and
//! RESOURCE_EXHAUSTED — as `codec::ClientFault` does for the recommendation service (the mapping:
//! [`crate::status::rewrite_generated_service_status`]).

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
            crate::status::rewrite_generated_service_status(response.headers_mut());
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
                    crate::status::rewrite_generated_service_status(&mut trailers);
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
