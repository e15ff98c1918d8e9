//! The yardstick for `bench/load.sh`: a minimal tonic server on the same path as
//! `vlms.rt.v1.RecommendationService/Recommend` that reads the request bytes and answers with a
//! fixed, pre-encoded response of the same size as the service's plan for the benchmark case,
//! doing no other work. The service's throughput divided by this one's measures what vlms-rt
//! adds on top of gRPC itself.
//!
//! Usage: `echo_server ADDRESS CASE.json` (a Case, or an object whose `case` member is one).
//!
//! It runs on tokio's default runtime, as a bare tonic server does. `ECHO_NO_LIFO=1` in the
//! environment switches tokio's LIFO slot off, as vlms-rt-server does (builds with
//! `tokio_unstable`): the ratio with both servers scheduled alike.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use vlms_rt::{client, convert, core, guideline, pb};

// The same allocator as vlms-rt-server, so the comparison measures the service's own work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, destination: &mut EncodeBuf<'_>) -> Result<(), Status> {
        destination.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, source: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(source.copy_to_bytes(source.remaining())))
    }
}

#[derive(Clone)]
struct Echo {
    response: Bytes,
}

impl UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future = std::future::Ready<Result<Response<Bytes>, Status>>;
    fn call(&mut self, _request: Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(Response::new(self.response.clone())))
    }
}

#[derive(Clone)]
struct EchoService {
    echo: Echo,
}

impl NamedService for EchoService {
    const NAME: &'static str = "vlms.rt.v1.RecommendationService";
}

impl tower_service::Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let echo = self.echo.clone();
        Box::pin(async move { Ok(Grpc::new(RawCodec).unary(echo, request).await) })
    }
}

fn main() -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("ECHO_NO_LIFO").is_some_and(|value| value == "1") {
        #[cfg(tokio_unstable)]
        builder.disable_lifo_slot();
        #[cfg(not(tokio_unstable))]
        anyhow::bail!("ECHO_NO_LIFO=1 needs a build with --cfg tokio_unstable");
    }
    builder.build()?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let address: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:50052".into())
        .parse()?;
    let case_path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: echo_server ADDRESS CASE.json"))?;
    let text = std::fs::read_to_string(&case_path)?;
    let case = client::parse_case(&text, &case_path)
        .map_err(|failure| anyhow::anyhow!(failure.render()))?;
    // The same response size as the service's answer for this case (a UUID-sized id included).
    let profile = guideline::embedded()?;
    let validated = core::Case::validate(&convert::raw_case(&case), "case")
        .map_err(|violations| anyhow::anyhow!("{violations}"))?;
    let plan = convert::plan_out(
        &core::recommend(&profile, &validated),
        "00000000-0000-4000-8000-000000000000".into(),
    );
    let response = Bytes::from(pb::RecommendResponse { plan: Some(plan) }.encode_to_vec());
    eprintln!(
        "echo server on {address}, response {} bytes",
        response.len()
    );
    tonic::transport::Server::builder()
        .add_service(EchoService {
            echo: Echo { response },
        })
        .serve(address)
        .await?;
    Ok(())
}
