//! The protobuf codec the generated service uses: prost's, except that a request body that is
//! not a valid protobuf message is INVALID_ARGUMENT (the caller's fault) rather than INTERNAL, so
//! that nothing a client sends is reported as a server failure.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use prost::bytes::Buf;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

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
        if std::any::TypeId::of::<T>()
            == std::any::TypeId::of::<crate::wire::EncodedStreamResponse>()
        {
            SizedEncoder {
                buffer_settings: BufferSettings::new(STREAM_SEND_BUFFER.0, STREAM_SEND_BUFFER.1),
                batch_room: STREAM_BATCH_ROOM,
                _type: PhantomData,
            }
        } else {
            SizedEncoder {
                buffer_settings: BufferSettings::default(),
                batch_room: 0,
                _type: PhantomData,
            }
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder {
            buffer_settings: BufferSettings::default(),
            _type: PhantomData,
        }
    }
}

/// The send buffer of a `RecommendStream` call (size, yield threshold). tonic gathers a stream's
/// answers in one buffer and hands them to HTTP/2 once it holds the threshold (32 KiB, tonic's
/// default). From tonic's default 8 KiB start, a stream of ~7.5 KB plans doubled the buffer three
/// times before each hand-off (8 → 16 → 32 → 64 KiB), copying all it held each time: ~5% of the
/// server's CPU on a long stream (perf). Starting at 64 KiB, the first hand-off comes before the
/// buffer is full. Unary calls keep tonic's 8 KiB: one answer each, and a plan fits.
///
/// What is handed off stays in the same allocation until HTTP/2 has written it, so when the rest
/// of the 64 KiB runs out the buffer moves to a new one, copying what it holds. Left to itself
/// that happened in the middle of a batch (~4.4 KB copied per plan on average); so the first
/// answer of each batch reserves room for the whole batch ([`SizedEncoder`]), and the move, when
/// one is needed, copies only that answer's five-byte gRPC header (docs/performance.md, item 24).
const STREAM_SEND_BUFFER: (usize, usize) = (64 * 1024, 32 * 1024);

/// The room a `RecommendStream` answer that starts a batch reserves beyond its own size: the
/// threshold, and 16 KiB for the answer that crosses it (plans are 5–9 KB; a larger one can still
/// move the buffer mid-batch, which costs a copy, not correctness).
const STREAM_BATCH_ROOM: usize = STREAM_SEND_BUFFER.1 + 16 * 1024;

/// The bytes tonic writes in front of each message: a compression flag and a 4-byte length.
const GRPC_HEADER: usize = 5;

/// prost's encoding, with room for the whole message reserved before any of it is written, so a
/// buffer that has to grow does it once and before the message, not while copying it in.
#[derive(Debug)]
pub struct SizedEncoder<T> {
    buffer_settings: BufferSettings,
    /// Room reserved, beyond its own size, by a message that starts a send batch; 0 for none.
    batch_room: usize,
    _type: PhantomData<T>,
}

impl<T> SizedEncoder<T> {
    /// The room to reserve for a message of `len` bytes when the send buffer holds `gathered`
    /// bytes: a message preceded only by its own gRPC header starts a batch (what came before
    /// was handed off) and reserves for the batch; any other message for itself (also one written
    /// into a buffer of its own, as tonic's compression does, where `gathered` is 0).
    fn room(&self, len: usize, gathered: usize) -> usize {
        if self.batch_room > 0 && gathered == GRPC_HEADER {
            len + self.batch_room
        } else {
            len
        }
    }
}

/// The bytes in tonic's send buffer (a `BytesMut`) since the last hand-off. tonic's `EncodeBuf`
/// shows only `BufMut`, whose remaining room `BytesMut` reports as `isize::MAX - len` (bytes
/// 1.x; a test holds it to that). Were that to change, only the moment of the batch reservation
/// would be wrong (a matter of copies), never the bytes written.
fn gathered(buf: &impl prost::bytes::BufMut) -> usize {
    (isize::MAX as usize).saturating_sub(buf.remaining_mut())
}

impl<T: Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(self.room(item.encoded_len(), gathered(buf)));
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.buffer_settings
    }
}

/// prost's decoding, with parse errors reported as INVALID_ARGUMENT, and from a byte slice: a
/// message decoded through `DecodeBuf` pays for every varint and every advance going through
/// two layers of `Buf` (about 2,300 instructions of the ~4,800 a `RecommendRequest` took).
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
        decoded.map(Some).map_err(|error| {
            Status::invalid_argument(format!("the message is not valid protobuf: {error}"))
        })
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
/// request.
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

/// The status the caller sees for a status tonic (or the token check) set before any handler ran,
/// with the message's new prefix when it is mapped; `None` for a status a handler chose. The
/// handlers never answer INTERNAL, OUT_OF_RANGE, UNAUTHENTICATED or UNIMPLEMENTED, and their
/// INVALID_ARGUMENT messages never start as the request decoder's does.
fn answered_before_handlers(
    status: &[u8],
    message: Option<&[u8]>,
) -> Option<(Code, Option<&'static str>)> {
    match status {
        b"13" => Some((
            Code::InvalidArgument,
            Some("malformed%20request%20framing:%20"),
        )),
        b"11" => Some((Code::ResourceExhausted, Some("request%20too%20large:%20"))),
        b"16" => Some((Code::Unauthenticated, None)),
        b"12" => Some((Code::Unimplemented, None)),
        b"3" if message.is_some_and(|message| message.starts_with(NOT_PROTOBUF)) => {
            Some((Code::InvalidArgument, None))
        }
        _ => None,
    }
}

/// The start of `StrictDecoder`'s message, as it is percent-encoded in `grpc-message`.
const NOT_PROTOBUF: &[u8] = b"the%20message%20is%20not%20valid%20protobuf";

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
        let headers = response.headers_mut();
        // INTERNAL: the framing was malformed. OUT_OF_RANGE: the message exceeded the size
        // limit, which gRPC reports as RESOURCE_EXHAUSTED everywhere else.
        let Some((code, prefix)) = headers.get("grpc-status").and_then(|status| {
            answered_before_handlers(
                status.as_bytes(),
                headers
                    .get("grpc-message")
                    .map(|message| message.as_bytes()),
            )
        }) else {
            return std::task::Poll::Ready(Ok(response));
        };
        if let Some(prefix) = prefix {
            let detail = headers
                .get("grpc-message")
                .and_then(|message| message.to_str().ok())
                .unwrap_or_default()
                .to_string();
            headers.insert("grpc-status", http::HeaderValue::from(i32::from(code)));
            if let Ok(value) = http::HeaderValue::from_str(&format!("{prefix}{detail}")) {
                headers.insert("grpc-message", value);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::bytes::{BufMut, BytesMut};

    #[test]
    fn the_send_buffer_length_is_read_from_its_remaining_room() {
        let mut buffer = BytesMut::with_capacity(64);
        assert_eq!(gathered(&buffer), 0);
        buffer.put_slice(&[0; GRPC_HEADER]);
        assert_eq!(gathered(&buffer), GRPC_HEADER);
        buffer.put_slice(&[1; 100]);
        assert_eq!(gathered(&buffer), 105);
        let handed_off = buffer.split_to(105).freeze();
        assert_eq!(gathered(&buffer), 0);
        assert_eq!(handed_off.len(), 105);
    }

    /// tonic's send loop for a long stream of plan-sized answers (header, reserve, message; hand
    /// off at the threshold, the handed-off bytes kept alive as HTTP/2 keeps them until written):
    /// with the batch reservation the buffer moves only at the start of a batch, copying nothing
    /// but a header; without it, it moved in the middle of batches.
    #[test]
    fn a_stream_buffer_moves_only_at_the_start_of_a_batch() {
        fn run(encoder: &SizedEncoder<()>) -> (usize, usize) {
            let (size, threshold) = STREAM_SEND_BUFFER;
            let mut buffer = BytesMut::with_capacity(size);
            let mut in_flight = std::collections::VecDeque::new();
            let (mut moves, mut copied) = (0, 0);
            for index in 0..2_000_usize {
                // 2–18 KB, in no order.
                let len = 2_000 + index * 7_919 % 16_000;
                let before = buffer.as_ptr();
                let held = gathered(&buffer);
                buffer.reserve(GRPC_HEADER);
                if buffer.as_ptr() != before {
                    moves += 1;
                    copied += held;
                }
                buffer.put_slice(&[0; GRPC_HEADER]);
                let before = buffer.as_ptr();
                let held = gathered(&buffer);
                buffer.reserve(encoder.room(len, held));
                if buffer.as_ptr() != before {
                    moves += 1;
                    copied += held;
                }
                buffer.put_bytes(7, len);
                if buffer.len() >= threshold {
                    in_flight.push_back(buffer.split_to(buffer.len()).freeze());
                    // HTTP/2 writes a batch while the next one is gathered.
                    if in_flight.len() > 1 {
                        in_flight.pop_front();
                    }
                }
            }
            (moves, copied)
        }
        let batched = SizedEncoder::<()> {
            buffer_settings: BufferSettings::default(),
            batch_room: STREAM_BATCH_ROOM,
            _type: PhantomData,
        };
        let (moves, copied) = run(&batched);
        assert!(moves > 100, "{moves}");
        assert_eq!(copied, moves * GRPC_HEADER);
        let unbatched = SizedEncoder::<()> {
            batch_room: 0,
            ..batched
        };
        let (moves, copied) = run(&unbatched);
        assert!(
            copied > moves * 10_000,
            "{moves} moves copied {copied} bytes"
        );
    }

    /// A message that notes, as it is written, how much the send buffer held before it and how
    /// much room was left for it.
    #[derive(Debug, Default)]
    struct Probe {
        len: usize,
        seen: Arc<std::sync::Mutex<Vec<(usize, usize, usize)>>>,
    }

    impl Message for Probe {
        fn encode_raw(&self, buf: &mut impl BufMut) {
            let room = buf.chunk_mut().len();
            self.seen
                .lock()
                .expect("lock")
                .push((gathered(buf), room, self.len));
            prost::encoding::bytes::encode(1, &vec![7_u8; self.len], buf);
        }

        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: prost::encoding::WireType,
            buf: &mut impl Buf,
            ctx: prost::encoding::DecodeContext,
        ) -> Result<(), prost::DecodeError> {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }

        fn encoded_len(&self) -> usize {
            prost::encoding::bytes::encoded_len(1, &vec![0_u8; self.len])
        }

        fn clear(&mut self) {}
    }

    /// `SizedEncoder::encode` itself, through tonic's `EncodeBody`: every message that starts a
    /// batch finds room for itself and the whole batch behind it; with no batch room, only for
    /// itself.
    #[tokio::test]
    async fn the_encoder_reserves_the_batch_room_at_each_batch_start() {
        use tonic::codec::{EncodeBody, SingleMessageCompressionOverride};
        use tonic::codegen::Body as _;

        async fn send(batch_room: usize) -> Vec<(usize, usize, usize)> {
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let messages: Vec<Result<Probe, Status>> = (0..300_usize)
                .map(|index| {
                    Ok(Probe {
                        len: 2_000 + index * 7_919 % 16_000,
                        seen: Arc::clone(&seen),
                    })
                })
                .collect();
            let encoder = SizedEncoder::<Probe> {
                buffer_settings: BufferSettings::new(STREAM_SEND_BUFFER.0, STREAM_SEND_BUFFER.1),
                batch_room,
                _type: PhantomData,
            };
            let mut body = std::pin::pin!(EncodeBody::new_server(
                encoder,
                tokio_stream::iter(messages),
                None,
                SingleMessageCompressionOverride::default(),
                None,
            ));
            while let Some(frame) =
                std::future::poll_fn(|context| body.as_mut().poll_frame(context)).await
            {
                frame.expect("a frame");
            }
            seen.lock().expect("lock").clone()
        }

        let seen = send(STREAM_BATCH_ROOM).await;
        assert_eq!(seen.len(), 300);
        let starts: Vec<_> = seen
            .iter()
            .filter(|(held, _, _)| *held == GRPC_HEADER)
            .collect();
        assert!(starts.len() > 50, "{}", starts.len());
        for (_, room, len) in &starts {
            assert!(*room >= len + STREAM_BATCH_ROOM, "{room} for {len}");
        }
        // Without it some batch starts find room for little more than themselves.
        let seen = send(0).await;
        assert!(
            seen.iter()
                .any(|(held, room, len)| *held == GRPC_HEADER && *room < len + STREAM_BATCH_ROOM)
        );
    }

    /// Through tonic's own send path (`EncodeBody`, as the server uses it) with the encoder the
    /// codec gives `RecommendStream`: the bytes are prost's framing of each answer, in order.
    #[tokio::test]
    async fn stream_answers_leave_as_prost_frames_them() {
        use crate::wire::{EncodedStreamResponse, EncodedStreamResult};
        use tonic::codec::{EncodeBody, SingleMessageCompressionOverride};
        use tonic::codegen::Body as _;

        let mut codec = ProtoCodec::<EncodedStreamResponse, crate::pb::RecommendRequest>::default();
        let encoder = codec.encoder();
        assert_eq!(encoder.batch_room, STREAM_BATCH_ROOM);
        let unary = ProtoCodec::<crate::wire::EncodedRecommendResponse, crate::pb::RecommendRequest>::default().encoder();
        assert_eq!(unary.batch_room, 0);

        let answers: Vec<EncodedStreamResponse> = (0..400_usize)
            .map(|index| EncodedStreamResponse {
                case_id: format!("case-{index}").as_str().into(),
                result: if index % 17 == 5 {
                    EncodedStreamResult::Error(crate::pb::google::rpc::Status {
                        code: 3,
                        message: format!("rejected {index}"),
                        details: Vec::new(),
                    })
                } else {
                    let len = 2_000 + index * 7_919 % 16_000;
                    EncodedStreamResult::Plan(
                        (0..len).map(|byte| (byte * 31 + index) as u8).collect(),
                    )
                },
            })
            .collect();
        let mut expected = Vec::new();
        for answer in &answers {
            let message = answer.encode_to_vec();
            expected.push(0);
            expected.extend_from_slice(&(message.len() as u32).to_be_bytes());
            expected.extend_from_slice(&message);
        }
        let source = tokio_stream::iter(answers.into_iter().map(Ok));
        let mut body = std::pin::pin!(EncodeBody::new_server(
            encoder,
            source,
            None,
            SingleMessageCompressionOverride::default(),
            None,
        ));
        let mut sent = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|context| body.as_mut().poll_frame(context)).await
        {
            if let Ok(data) = frame.expect("a frame").into_data() {
                sent.extend_from_slice(&data);
            }
        }
        assert_eq!(sent.len(), expected.len());
        assert!(sent == expected, "the framed answers differ");
    }

    #[test]
    fn statuses_set_before_the_handlers_are_told_from_the_handlers_own() {
        let framing = answered_before_handlers(b"13", None);
        assert_eq!(framing.map(|(code, _)| code), Some(Code::InvalidArgument));
        assert!(framing.and_then(|(_, prefix)| prefix).is_some());
        let size = answered_before_handlers(b"11", Some(b"Error,%20decoded"));
        assert_eq!(size.map(|(code, _)| code), Some(Code::ResourceExhausted));
        assert_eq!(
            answered_before_handlers(b"16", None),
            Some((Code::Unauthenticated, None))
        );
        assert_eq!(
            answered_before_handlers(b"12", None),
            Some((Code::Unimplemented, None))
        );
        assert_eq!(
            answered_before_handlers(
                b"3",
                Some(b"the%20message%20is%20not%20valid%20protobuf:%20failed")
            ),
            Some((Code::InvalidArgument, None))
        );
        // The handlers' own answers are theirs to log and count.
        assert_eq!(
            answered_before_handlers(b"3", Some(b"the%20request%20has%202%20invalid")),
            None
        );
        for handlers in [&b"0"[..], b"5", b"8", b"14"] {
            assert_eq!(answered_before_handlers(handlers, None), None);
        }
    }
}
