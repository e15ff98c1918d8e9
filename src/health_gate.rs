//! The gate in front of `grpc.health.v1.Health`. `Check` stays open, so probes need no token.
//! `Watch` is a stream that stays open as long as its client wants: each one holds a place, there
//! are at most `--max-health-watches` of them, and with a token file configured a `Watch` needs a
//! token like any other call. Beyond the limit a `Watch` is refused at once with
//! RESOURCE_EXHAUSTED, so thousands of watchers cannot take the server's memory.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::body::Body;

use crate::auth::Authenticator;

/// The path of the health service's streaming method.
pub const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// The health service behind its gate (see the module's doc).
#[derive(Debug, Clone)]
pub struct HealthGate<S> {
    inner: S,
    auth: Authenticator,
    watches: Arc<Semaphore>,
    limit: usize,
}

impl<S> HealthGate<S> {
    /// Wraps `inner`, admitting at most `max_watches` open `Watch` streams at once (shared by
    /// every gate made with the same `watches`), each authenticated by `auth`.
    pub fn new(inner: S, auth: Authenticator, watches: Arc<Semaphore>, max_watches: usize) -> Self {
        Self {
            inner,
            auth,
            watches,
            limit: max_watches,
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for HealthGate<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for HealthGate<S>
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
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Answer {
        if request.uri().path() != WATCH_PATH {
            return Box::pin(self.inner.call(request));
        }
        match self.auth.authenticate(request.headers()) {
            Ok(Some(caller)) => {
                request.extensions_mut().insert(caller);
            }
            Ok(None) => {}
            Err(status) => return refuse(status),
        }
        let Ok(place) = Arc::clone(&self.watches).try_acquire_owned() else {
            tracing::info!(
                limit = self.limit,
                "health Watch refused: every place is taken"
            );
            return refuse(crate::status::too_many_health_watches(self.limit));
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // The place is held by the answer's body, so it is given back when the stream ends,
            // however it ends (the client going away included).
            Ok(response.map(move |body| {
                Body::new(body.map_err(move |error| {
                    let _held = &place;
                    error
                }))
            }))
        })
    }
}

fn refuse(status: Status) -> Answer {
    Box::pin(std::future::ready(Ok(status.into_http())))
}
