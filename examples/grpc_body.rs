//! Writes the gRPC-framed body of a `Recommend` request for a case file, for h2load's `-d`; with
//! COUNT, that message COUNT times over: the body of a `RecommendStream` of COUNT cases.
//!
//! Usage: `grpc_body CASE.json OUT.bin [COUNT]` (a Case, or an object whose `case` member is one).

use prost::Message;
use vlms_rt::{client, pb};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: grpc_body CASE.json OUT.bin [COUNT]");
    };
    let count: usize = args.next().map_or(Ok(1), |text| text.parse())?;
    anyhow::ensure!(count >= 1, "COUNT must be at least 1");
    let text = std::fs::read_to_string(&input)?;
    let case =
        client::parse_case(&text, &input).map_err(|failure| anyhow::anyhow!(failure.render()))?;
    let message = pb::RecommendRequest { case: Some(case) }.encode_to_vec();
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0); // not compressed
    framed.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    framed.extend_from_slice(&message);
    std::fs::write(&output, framed.repeat(count))?;
    Ok(())
}
