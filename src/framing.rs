//! Request bodies whose gRPC framing is followed to its end. A message frame is a 5-byte header
//! (a compression flag and a 4-byte length) and that many bytes. tonic reports a body that ends
//! inside a frame's payload, but a body that ends just after a complete header announcing a
//! non-empty payload ended a `RecommendStream` with OK, as if the last item had never been sent.
//! [`CheckedFrames`] follows the frames as the bytes pass and turns a body that ends inside a frame
//! into an INVALID_ARGUMENT error, so no truncated item goes unnoticed.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use prost::bytes::{Buf, Bytes};

/// The error type of a checked body: the inner body's error, or the truncation status.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Bytes of a gRPC message frame's header.
const HEADER: usize = 5;

/// Where the body is in its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// `have` bytes of a header read (0: between frames, where a body may end).
    Header { have: usize, header: [u8; HEADER] },
    /// Inside a payload, `left` bytes to go.
    Payload { left: u64 },
    /// The truncation was reported; nothing follows.
    Reported,
}

impl Position {
    fn between_frames(self) -> bool {
        matches!(self, Position::Header { have: 0, .. } | Position::Reported)
    }

    /// Follows `data` through the framing.
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self {
                Position::Header { have, header } => {
                    let take = (HEADER - *have).min(data.len());
                    header[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    data = &data[take..];
                    if *have == HEADER {
                        let length =
                            u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                        *self = if length == 0 {
                            Position::Header {
                                have: 0,
                                header: [0; HEADER],
                            }
                        } else {
                            Position::Payload {
                                left: u64::from(length),
                            }
                        };
                    }
                }
                Position::Payload { left } => {
                    let take =
                        usize::try_from(*left).map_or(data.len(), |left| left.min(data.len()));
                    *left -= take as u64;
                    data = &data[take..];
                    if *left == 0 {
                        *self = Position::Header {
                            have: 0,
                            header: [0; HEADER],
                        };
                    }
                }
                Position::Reported => return,
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body whose end must fall between gRPC frames.
    pub struct CheckedFrames<B> {
        #[pin]
        inner: B,
        position: Position,
    }
}

impl<B> CheckedFrames<B> {
    /// Follows `inner`'s framing from its start.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            position: Position::Header {
                have: 0,
                header: [0; HEADER],
            },
        }
    }
}

impl<B> Body for CheckedFrames<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.position == Position::Reported {
            return Poll::Ready(None);
        }
        match std::task::ready!(this.inner.poll_frame(context)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.position.advance(data.chunk());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            None if this.position.between_frames() => Poll::Ready(None),
            None => {
                let missing = match *this.position {
                    Position::Header { have, .. } => format!("{} header bytes", HEADER - have),
                    Position::Payload { left } => format!("{left} bytes of its message"),
                    Position::Reported => String::new(),
                };
                *this.position = Position::Reported;
                Poll::Ready(Some(Err(Box::new(crate::status::truncated_frame(
                    &missing,
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.position.between_frames()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A service whose request bodies are [`CheckedFrames`].
#[derive(Debug, Clone)]
pub struct CheckFrames<S>(pub S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for CheckFrames<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower_service::Service<http::Request<B>> for CheckFrames<S>
where
    S: tower_service::Service<http::Request<CheckedFrames<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> S::Future {
        self.0.call(request.map(CheckedFrames::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(chunks: &[&[u8]]) -> Position {
        let mut position = Position::Header {
            have: 0,
            header: [0; HEADER],
        };
        for chunk in chunks {
            position.advance(chunk);
        }
        position
    }

    #[test]
    fn frames_are_followed_across_chunks() {
        let frame: &[u8] = &[0, 0, 0, 0, 3, 7, 8, 9];
        assert!(after(&[frame]).between_frames());
        assert!(after(&[&frame[..2], &frame[2..6], &frame[6..]]).between_frames());
        assert!(after(&[frame, frame]).between_frames());
        assert!(
            after(&[&[0, 0, 0, 0, 0]]).between_frames(),
            "an empty message"
        );
        assert_eq!(after(&[&frame[..5]]), Position::Payload { left: 3 });
        assert_eq!(after(&[frame, &frame[..7]]), Position::Payload { left: 1 });
        assert!(!after(&[frame, &frame[..2]]).between_frames());
    }
}
