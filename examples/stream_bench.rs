//! Measures `RecommendStream` throughput: sends one stream of N copies of a case and reports plans
//! per second, checking that every item is a plan.
//!
//! Each answer is read only as far as its shape: the `result` oneof must be a plan (field 2), not an
//! error (field 3); the plan stays undecoded bytes. That keeps the client's cost per item small, as
//! h2load's is for the unary benchmark (it decodes nothing): fully decoding every plan cost this
//! client more CPU per item than the server spent, and made the figure the client's speed on the
//! shared cores.
//!
//! Usage: `stream_bench URL CASE.json [N] [ROUNDS]`

use std::time::Instant;

use http::uri::PathAndQuery;
use tonic::transport::Endpoint;
use vlms_rt::{client, pb};

/// `RecommendStreamResponse` as far as this benchmark reads it.
#[derive(Clone, PartialEq, prost::Message)]
struct ItemShape {
    #[prost(string, tag = "1")]
    case_id: String,
    #[prost(bytes = "bytes", optional, tag = "2")]
    plan: Option<bytes::Bytes>,
    #[prost(bytes = "bytes", optional, tag = "3")]
    error: Option<bytes::Bytes>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: stream_bench URL CASE.json [N] [ROUNDS]"))?;
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: stream_bench URL CASE.json [N] [ROUNDS]"))?;
    let count: usize = args.next().map_or(Ok(1000), |text| text.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |text| text.parse())?;
    let text = std::fs::read_to_string(&path)?;
    let case =
        client::parse_case(&text, &path).map_err(|failure| anyhow::anyhow!(failure.render()))?;
    // The bundled client's frame size (see `client::MAX_FRAME_SIZE`).
    let channel = Endpoint::from_shared(url)?
        .max_frame_size(client::MAX_FRAME_SIZE)
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    let method = PathAndQuery::from_static("/vlms.rt.v1.RecommendationService/RecommendStream");
    let mut best = 0.0_f64;
    for _ in 0..rounds {
        let requests: Vec<pb::RecommendRequest> = (0..count)
            .map(|_| pb::RecommendRequest {
                case: Some(case.clone()),
            })
            .collect();
        let started = Instant::now();
        grpc.ready().await?;
        let codec = tonic_prost::ProstCodec::<pb::RecommendRequest, ItemShape>::default();
        let mut responses = grpc
            .streaming(
                tonic::Request::new(tokio_stream::iter(requests)),
                method.clone(),
                codec,
            )
            .await?
            .into_inner();
        let mut plans = 0;
        while let Some(item) = responses.message().await? {
            anyhow::ensure!(
                item.error.is_none() && item.plan.as_ref().is_some_and(|plan| !plan.is_empty()),
                "item {plans} is not a plan"
            );
            plans += 1;
        }
        anyhow::ensure!(plans == count, "{plans} of {count} answered");
        let rate = plans as f64 / started.elapsed().as_secs_f64();
        best = best.max(rate);
        println!("stream of {count}: {rate:.0} plans/s");
    }
    println!("best: {best:.0} plans/s");
    Ok(())
}
