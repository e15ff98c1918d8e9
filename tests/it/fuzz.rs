//! Fuzzing of request decoding and validation: arbitrary bytes, and valid requests with bytes
//! flipped, decoded as the server decodes them, validated, and (when valid) evaluated. Nothing may
//! panic. The suite runs a few thousand cases; for a long run:
//!
//! `VLMS_RT_FUZZ_CASES=2000000 cargo test --release --test it fuzz -- --nocapture`

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use vlms_rt::core::{self, Proposal};
use vlms_rt::{convert, pb};

use crate::support::{profile, vignettes};

fn cases() -> u32 {
    std::env::var("VLMS_RT_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3000)
}

/// The server's path for bytes on the wire; returns what happened, for the statistics.
fn exercise(bytes: &[u8]) -> &'static str {
    let profile = profile();
    let mut outcome = "undecodable";
    if let Ok(request) = pb::RecommendRequest::decode(bytes) {
        let raw = request.case.as_ref().map(convert::raw_case);
        outcome = match convert::case_from_raw(raw.as_ref()) {
            Ok(case) => {
                let plan = core::recommend(&profile, &case);
                let encoded = convert::plan_out(&plan, String::new()).encode_to_vec();
                assert!(!encoded.is_empty());
                "planned"
            }
            Err(violations) => {
                assert!(!violations.is_empty());
                let _ = vlms_rt::status::invalid_argument(&violations);
                "rejected"
            }
        };
    }
    if let Ok(request) = pb::CheckPrescriptionRequest::decode(bytes)
        && let Ok(proposal) = Proposal::validate(&convert::raw_proposal(&request))
    {
        let report = core::check(&profile, &proposal);
        assert!(!report.findings.is_empty());
    }
    outcome
}

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for vignette in vignettes() {
        if vignette.is_plan() || vignette.is_bad_case() {
            seeds.push(
                pb::RecommendRequest {
                    case: Some(vignette.case()),
                }
                .encode_to_vec(),
            );
        } else {
            seeds.push(vignette.check_request().encode_to_vec());
        }
    }
    seeds
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// A seed with up to `most_flips - 1` of its bytes changed.
fn mutated(seeds: &[Vec<u8>], most_flips: usize) -> impl Strategy<Value = Vec<u8>> + use<> {
    let seeds = seeds.to_vec();
    (
        0..seeds.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..most_flips),
    )
        .prop_map(move |(seed, flips)| {
            let mut bytes = seeds[seed].clone();
            for (index, value) in flips {
                let position = index.index(bytes.len().max(1));
                if let Some(byte) = bytes.get_mut(position) {
                    *byte = value;
                }
            }
            bytes
        })
}

#[test]
fn arbitrary_and_mutated_requests_never_panic() {
    let seeds = seeds();
    let mut runner = runner();
    let counts = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u64>::new());
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        mutated(&seeds, 8),
    ];
    runner
        .run(&strategy, |bytes| {
            *counts.borrow_mut().entry(exercise(&bytes)).or_default() += 1;
            Ok(())
        })
        .expect("no input panics");
    let counts = counts.into_inner();
    eprintln!("fuzz outcomes: {counts:?}");
    assert!(counts.values().sum::<u64>() >= u64::from(cases()));
}
