//! Measures `RecommendStream` throughput: sends one stream of N copies of a case and reports plans
//! per second, checking that every item is a plan.
//!
//! Usage: `stream_bench URL CASE.json [N] [ROUNDS]`

use std::time::Instant;

use vlms_rt::pb::recommendation_service_client::RecommendationServiceClient;
use vlms_rt::{client, pb};

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
    let mut client = RecommendationServiceClient::connect(url)
        .await?
        .max_decoding_message_size(16 * 1024 * 1024);
    let mut best = 0.0_f64;
    for _ in 0..rounds {
        let requests: Vec<pb::RecommendRequest> = (0..count)
            .map(|_| pb::RecommendRequest {
                case: Some(case.clone()),
            })
            .collect();
        let started = Instant::now();
        let mut responses = client
            .recommend_stream(tokio_stream::iter(requests))
            .await?
            .into_inner();
        let mut plans = 0;
        while let Some(item) = responses.message().await? {
            anyhow::ensure!(
                matches!(
                    item.result,
                    Some(pb::recommend_stream_response::Result::Plan(_))
                ),
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
