//! The caller's own deadline (`grpc-timeout`). tonic ends a call whose deadline passes with
//! CANCELLED ("Timeout expired"), before any of the service's code can log or count it. This layer
//! answers such a call itself, a moment (one timer tick) before tonic would: DEADLINE_EXCEEDED, as
//! gRPC specifies, with a log line and a count in `vlms_rt_calls_total`. A deadline already gone
//! when the call arrives is answered so at once, if the call is not answered in its first poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;
use tonic::Code;

use crate::metrics::Metrics;

/// How much earlier than tonic this layer ends a call: tokio's timers tick once a millisecond.
const AHEAD: Duration = Duration::from_millis(1);

/// A `grpc-timeout` header value: at most eight digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most eight digits: no overflow below, even in hours.
    let number = digits
        .iter()
        .fold(0_u64, |number, digit| number * 10 + u64::from(digit - b'0'));
    match unit {
        b'H' => Some(Duration::from_secs(number * 3600)),
        b'M' => Some(Duration::from_secs(number * 60)),
        b'S' => Some(Duration::from_secs(number)),
        b'm' => Some(Duration::from_millis(number)),
        b'u' => Some(Duration::from_micros(number)),
        b'n' => Some(Duration::from_nanos(number)),
        _ => None,
    }
}

/// Wraps services in [`ClientDeadline`].
#[derive(Debug, Clone)]
pub struct ClientDeadlineLayer {
    metrics: Arc<Metrics>,
}

impl ClientDeadlineLayer {
    /// Counts the calls it ends in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for ClientDeadlineLayer {
    type Service = ClientDeadline<S>;

    fn layer(&self, inner: S) -> ClientDeadline<S> {
        ClientDeadline {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// A service whose calls end with DEADLINE_EXCEEDED at their caller's deadline.
#[derive(Debug, Clone)]
pub struct ClientDeadline<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for ClientDeadline<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = DeadlinedCall<S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> DeadlinedCall<S::Future> {
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()));
        let rpc = crate::metrics::rpc_label(request.uri().path().rsplit('/').next().unwrap_or(""));
        DeadlinedCall {
            call: self.inner.call(request),
            timer: deadline.map(|deadline| tokio::time::sleep(deadline.saturating_sub(AHEAD))),
            deadline: deadline.unwrap_or_default(),
            started: Instant::now(),
            rpc,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call under [`ClientDeadline`].
    pub struct DeadlinedCall<F> {
        #[pin]
        call: F,
        #[pin]
        timer: Option<Sleep>,
        deadline: Duration,
        started: Instant,
        rpc: &'static str,
        metrics: Arc<Metrics>,
    }
}

impl<F, R, E> Future for DeadlinedCall<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    R: Default,
{
    type Output = Result<http::Response<R>, E>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(answer) = this.call.poll(context) {
            return Poll::Ready(answer);
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(context)) {
            Some(Poll::Ready(())) => {
                let elapsed = this.started.elapsed();
                this.metrics
                    .call(this.rpc, Code::DeadlineExceeded, elapsed.as_secs_f64());
                tracing::info!(
                    rpc = *this.rpc,
                    code = ?Code::DeadlineExceeded,
                    latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                    deadline_us = u64::try_from(this.deadline.as_micros()).unwrap_or(u64::MAX),
                    "call ended at the caller's deadline"
                );
                Poll::Ready(Ok(
                    crate::status::caller_deadline_passed(*this.deadline).into_http()
                ))
            }
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values_are_read_as_the_protocol_writes_them() {
        assert_eq!(parse_grpc_timeout(b"1S"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_grpc_timeout(b"0n"), Some(Duration::ZERO));
        assert_eq!(
            parse_grpc_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            &b""[..],
            b"S",
            b"123456789S",
            b"1x",
            b"-1S",
            b"1.5S",
            b"5s",
            b"5 S",
            "\u{e9}S".as_bytes(),
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
