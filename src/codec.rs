//! The protobuf codec the generated service uses: prost's, except that a request body that is
//! not a valid protobuf message is INVALID_ARGUMENT (the caller's fault) rather than INTERNAL, so
//! that nothing a client sends is reported as a server failure.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::metrics::Metrics;

/// Codec for every RPC of the contract.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder { _type: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder {
            buffer_settings: BufferSettings::default(),
            _type: PhantomData,
        }
    }
}

/// prost's encoding, with room for the whole message reserved before any of it is written, so a
/// buffer that has to grow does it once and before the message, not while copying it in
/// (docs/perf/decisions/011-encoder-reserves-message-size.md).
#[derive(Debug)]
pub struct SizedEncoder<T> {
    _type: PhantomData<T>,
}

impl<T: Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// prost's decoding, with parse errors reported as INVALID_ARGUMENT, and from a byte slice: a
/// message decoded through `DecodeBuf` pays for every varint and every advance going through
/// two layers of `Buf` (docs/perf/decisions/008-request-decoded-from-slice.md).
#[derive(Debug)]
pub struct StrictDecoder<U> {
    buffer_settings: BufferSettings,
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let length = buf.remaining();
        // A `DecodeBuf` lies over one `BytesMut`, so the whole message is one chunk; the other
        // branch only keeps this correct should tonic ever hand over a split buffer.
        let decoded = if buf.chunk().len() == length {
            let decoded = U::decode(buf.chunk());
            buf.advance(length);
            decoded
        } else {
            U::decode(&mut *buf)
        };
        decoded
            .map(Some)
            .map_err(|error| crate::status::not_protobuf(&error))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.buffer_settings
    }
}

/// Wraps a gRPC service so that an INTERNAL status produced by tonic's request framing (a
/// truncated body, an unnegotiated compressed flag, a missing request message) reaches the caller
/// as INVALID_ARGUMENT: those are the caller's faults, and the service promises never to answer
/// INTERNAL to anything a client can send. Likewise tonic's OUT_OF_RANGE for a request over the
/// size limit becomes RESOURCE_EXHAUSTED, the code gRPC gives that elsewhere. The service's own
/// code never returns INTERNAL or OUT_OF_RANGE, so either one seen here came from decoding the
/// request. The mapping is [`crate::status::answered_before_handlers`].
///
/// Calls answered without reaching the service's handlers (refused by the token check, a body
/// that is not protobuf, a request over the size limit, a method the service does not have) get
/// the call log line and the `vlms_rt_calls_total` count the handlers give every other call.
#[derive(Debug, Clone)]
pub struct ClientFault<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> ClientFault<S> {
    /// Wraps `inner`; calls answered before the handlers are counted in `metrics`.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for ClientFault<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower_service::Service<http::Request<B>> for ClientFault<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = FaultFuture<S::Future, R>;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let rpc = crate::metrics::rpc_label(request.uri().path().rsplit('/').next().unwrap_or(""));
        FaultFuture {
            future: self.inner.call(request),
            started,
            rpc,
            metrics: Arc::clone(&self.metrics),
            _body: std::marker::PhantomData,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call through [`ClientFault`]: the service's answer, with the statuses set before the
    /// handlers mapped, logged and counted.
    pub struct FaultFuture<F, R> {
        #[pin]
        future: F,
        started: Instant,
        rpc: &'static str,
        metrics: Arc<Metrics>,
        _body: std::marker::PhantomData<R>,
    }
}

impl<F, R, E> std::future::Future for FaultFuture<F, R>
where
    F: std::future::Future<Output = Result<http::Response<R>, E>>,
    R: Default,
{
    type Output = Result<http::Response<R>, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.future.poll(context))?;
        let Some(code) = crate::status::answered_before_handlers(response.headers_mut()) else {
            return std::task::Poll::Ready(Ok(response));
        };
        let elapsed = this.started.elapsed();
        this.metrics.call(this.rpc, code, elapsed.as_secs_f64());
        tracing::info!(
            rpc = *this.rpc,
            code = crate::server::code_log_name(code),
            latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            caller = "unknown",
            case_id = "",
            "call"
        );
        std::task::Poll::Ready(Ok(response))
    }
}
