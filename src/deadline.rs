//! The server's call timeout (`--call-timeout`), as a layer around every service of the server.
//!
//! It does what tonic's `Server::timeout` does — a call still unanswered when the timeout runs out
//! is ended with tonic's `TimeoutExpired` (CANCELLED, "Timeout expired") — but it arms its timer
//! only for a call that is still pending after its first poll. Most calls are answered in that
//! first poll (a plan without an audit trail, a rejected request, a shed call), and tonic's layer
//! made and dropped a timer for each of them: a clock read and a timer entry per call, 2–3% of
//! the server's CPU under load (docs/performance.md). The timeout then runs from that first poll
//! (in the call's own task) rather than from the call's arrival: later by that task's scheduling
//! delay and the poll itself — microseconds when the server has a core free, more when it is
//! saturated. The audit wait, which starts later still, keeps running out first.
//!
//! A caller's own deadline (`grpc-timeout`) is still applied by tonic, which arms a timer only
//! for calls that carry one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

/// Wraps services in [`CallTimeout`].
#[derive(Debug, Clone, Copy)]
pub struct CallTimeoutLayer {
    timeout: Duration,
}

impl CallTimeoutLayer {
    /// Ends calls still unanswered `timeout` after their first poll.
    pub fn new(timeout: Duration) -> CallTimeoutLayer {
        CallTimeoutLayer { timeout }
    }
}

impl<S> tower_layer::Layer<S> for CallTimeoutLayer {
    type Service = CallTimeout<S>;

    fn layer(&self, inner: S) -> CallTimeout<S> {
        CallTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// A service whose calls end with `tonic::TimeoutExpired` when unanswered for the timeout.
#[derive(Debug, Clone)]
pub struct CallTimeout<S> {
    inner: S,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, Request> tower_service::Service<Request> for CallTimeout<S>
where
    S: tower_service::Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimedCall<S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> TimedCall<S::Future> {
        TimedCall {
            call: self.inner.call(request),
            timeout: self.timeout,
            timer: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call under [`CallTimeout`]: its timer is made when the call first waits.
    pub struct TimedCall<F> {
        #[pin]
        call: F,
        timeout: Duration,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<F, T, E> Future for TimedCall<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(answer) = this.call.poll(context) {
            return Poll::Ready(answer.map_err(Into::into));
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(*this.timeout)));
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(context)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(tonic::TimeoutExpired(()).into())),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_layer::Layer;
    use tower_service::Service;

    /// A service answering after `delay` (none: at once).
    fn service(
        delay: Option<Duration>,
    ) -> impl Service<(), Response = &'static str, Error = std::convert::Infallible, Future: Send> + Clone
    {
        tower::service_fn(move |()| async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            Ok("answer")
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_answered_in_time_is_passed_through() {
        let layer = CallTimeoutLayer::new(Duration::from_secs(5));
        let answer = layer.layer(service(None)).call(()).await;
        assert_eq!(answer.expect("answered"), "answer");
        let answer = layer
            .layer(service(Some(Duration::from_millis(4_999))))
            .call(())
            .await;
        assert_eq!(answer.expect("answered before the timeout"), "answer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_pending_past_the_timeout_ends_as_tonic_ends_it() {
        let layer = CallTimeoutLayer::new(Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let error = layer
            .layer(service(Some(Duration::from_secs(3600))))
            .call(())
            .await
            .expect_err("timed out");
        assert!(error.is::<tonic::TimeoutExpired>(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // tonic turns it into the status its own timeout gives.
        let status = tonic::Status::from_error(error);
        assert_eq!(status.code(), tonic::Code::Cancelled);
    }

    #[tokio::test(start_paused = true)]
    async fn no_timer_is_made_for_a_call_answered_in_its_first_poll() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let mut timed =
            CallTimeoutLayer::new(Duration::from_secs(5)).layer(tower::service_fn(move |()| {
                counted.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok::<_, std::convert::Infallible>(7))
            }));
        let mut call = std::pin::pin!(timed.call(()));
        let waker = std::task::Waker::noop();
        let answer = call.as_mut().poll(&mut Context::from_waker(waker));
        assert!(matches!(answer, Poll::Ready(Ok(7))));
        assert!(call.timer.is_none(), "a timer was made");
        assert_eq!(polls.load(Ordering::Relaxed), 1);
    }
}
