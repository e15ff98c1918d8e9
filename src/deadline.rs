//! The server's call timeout (`--call-timeout`), as a layer around every service of the server.
//!
//! It does what tonic's `Server::timeout` does — a call still unanswered when the timeout runs out
//! is ended with tonic's `TimeoutExpired` (CANCELLED, "Timeout expired") — but it arms its timer
//! only for a call that is still pending after its first poll. Most calls are answered in that
//! first poll (a plan without an audit trail, a rejected request, a shed call), and tonic's layer
//! made and dropped a timer for each of them: a clock read and a timer entry per call
//! (docs/perf/decisions/013-admission-and-lazy-timers.md). The timeout then runs from that first poll
//! (in the call's own task) rather than from the call's arrival: later by that task's scheduling
//! delay and the poll itself — microseconds when the server has a core free, more when it is
//! saturated. The audit wait, which starts later still, keeps running out first.
//!
//! A caller's own deadline (`grpc-timeout`) is still applied by tonic, which arms a timer only
//! for calls that carry one.
//!
//! [`IdleTimeout`] bounds the wait for each item of a client stream (`RecommendStream`) the same
//! way: its timer runs only while the stream is waiting for the client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;

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

/// A stream item that did not come in time ([`IdleTimeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idle;

pin_project_lite::pin_project! {
    /// A stream whose next item must come within `idle` of the moment the stream is found waiting
    /// for it. Unlike `tokio_stream`'s `timeout`, which restarts its timer at every item (a clock
    /// read and a timer-wheel update each), the timer is armed only when the inner stream is pending, so the items of a request
    /// already received in full pass without touching it. The wait is counted from when the
    /// server is ready for the next item (without the audit trail, once the previous answer is
    /// made; with it, once its pipeline has room) rather than from the previous item's arrival: a
    /// client reading its answers slowly does not use up the time it has to send. After `Idle`,
    /// a further poll waits the whole time again.
    pub struct IdleTimeout<S> {
        #[pin]
        inner: S,
        idle: Duration,
        #[pin]
        timer: Option<Sleep>,
        armed: bool,
    }
}

impl<S> IdleTimeout<S> {
    /// `inner`, its items each allowed `idle`.
    pub fn new(inner: S, idle: Duration) -> IdleTimeout<S> {
        IdleTimeout {
            inner,
            idle,
            timer: None,
            armed: false,
        }
    }
}

impl<S: Stream> Stream for IdleTimeout<S> {
    type Item = Result<S::Item, Idle>;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if let Poll::Ready(item) = this.inner.poll_next(context) {
            *this.armed = false;
            return Poll::Ready(item.map(Ok));
        }
        if !*this.armed {
            // A wait too long to add to the clock is as good as none (as `tokio::time::sleep`
            // treats it), rather than a panic.
            let now = Instant::now();
            let deadline = now
                .checked_add(*this.idle)
                .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
            match this.timer.as_mut().as_pin_mut() {
                Some(timer) => timer.reset(deadline),
                None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
            }
            *this.armed = true;
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(context)) {
            Some(Poll::Ready(())) => {
                *this.armed = false;
                Poll::Ready(Some(Err(Idle)))
            }
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

    /// A stream giving `items` after each's delay.
    fn delayed(items: Vec<(u64, u32)>) -> impl Stream<Item = u32> {
        futures_util::stream::unfold(items.into_iter(), |mut items| async move {
            let (delay, item) = items.next()?;
            if delay > 0 {
                tokio::time::sleep(Duration::from_secs(delay)).await;
            }
            Some((item, items))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn items_within_the_idle_time_pass_and_a_longer_wait_ends_in_idle() {
        use tokio_stream::StreamExt;
        let started = Instant::now();
        let stream = IdleTimeout::new(
            delayed(vec![(0, 1), (4, 2), (4, 3), (5, 4), (6, 5)]),
            Duration::from_secs(5),
        );
        let mut stream = std::pin::pin!(stream);
        // 4 s and 4 s again: the timer restarts with every wait, not from the stream's start.
        assert_eq!(stream.next().await, Some(Ok(1)));
        assert_eq!(stream.next().await, Some(Ok(2)));
        assert_eq!(stream.next().await, Some(Ok(3)));
        // Exactly the idle time: the item comes as the timer runs out (the inner stream is
        // polled first).
        assert_eq!(stream.next().await, Some(Ok(4)));
        assert_eq!(started.elapsed(), Duration::from_secs(13));
        // 6 s: idle after 5.
        assert_eq!(stream.next().await, Some(Err(Idle)));
        assert_eq!(started.elapsed(), Duration::from_secs(18));
        // Polled again, it waits afresh: the item due at 19 s passes.
        assert_eq!(stream.next().await, Some(Ok(5)));
        assert_eq!(started.elapsed(), Duration::from_secs(19));
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_idle_error_the_next_wait_gets_the_whole_idle_time_again() {
        use tokio_stream::StreamExt;
        let started = Instant::now();
        let mut stream = std::pin::pin!(IdleTimeout::new(
            futures_util::stream::pending::<u32>(),
            Duration::from_secs(5)
        ));
        assert_eq!(stream.next().await, Some(Err(Idle)));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(stream.next().await, Some(Err(Idle)));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn items_ready_at_once_make_no_timer_and_the_end_passes_through() {
        use tokio_stream::StreamExt;
        let mut stream = std::pin::pin!(IdleTimeout::new(
            tokio_stream::iter([1, 2, 3]),
            Duration::from_secs(5)
        ));
        for expected in [1, 2, 3] {
            assert_eq!(stream.next().await, Some(Ok(expected)));
            assert!(stream.timer.is_none(), "a timer was made");
        }
        assert_eq!(stream.next().await, None);
        assert!(stream.timer.is_none(), "a timer was made");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_time_too_long_for_the_clock_waits_instead_of_panicking() {
        let mut stream = std::pin::pin!(IdleTimeout::new(
            futures_util::stream::pending::<u32>(),
            Duration::MAX
        ));
        let waker = std::task::Waker::noop();
        let polled = stream.as_mut().poll_next(&mut Context::from_waker(waker));
        assert!(polled.is_pending());
        assert!(stream.timer.is_some() && stream.armed);
    }
}
