//! Fuzzing of request decoding and validation: arbitrary bytes, and valid requests with bytes
//! flipped, decoded as the server decodes them, validated, and (when valid) evaluated. Nothing may
//! panic. The suite runs a few thousand cases; for a long run:
//!
//! `VLMS_RT_FUZZ_CASES=2000000 cargo test --release --test it fuzz -- --nocapture`

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use vlms_rt::core::{self, Proposal};
use vlms_rt::received::ReceivedRecommendRequest;
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
    if let Ok(request) = ReceivedRecommendRequest::from_bytes(bytes) {
        outcome = match convert::case_from_raw(request.raw_case().as_ref()) {
            Ok(case) => {
                let plan = core::recommend(&profile, &case);
                let encoded = convert::plan_out(&plan, String::new()).encode_to_vec();
                assert!(!encoded.is_empty());
                "planned"
            }
            Err(violations) => {
                assert!(!violations.is_empty());
                let _ = vlms_rt::server::invalid_argument(&violations);
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

/// The server reads `RecommendRequest`s itself (`vlms_rt::received`) and hands prost what it does
/// not take: it must accept, reject and read exactly what prost's generated decoding does.
fn same_as_prost(bytes: &[u8]) -> Result<&'static str, TestCaseError> {
    let ours = ReceivedRecommendRequest::from_bytes(bytes);
    let prost = pb::RecommendRequest::decode(bytes);
    match (ours, prost) {
        (Ok(ours), Ok(prost)) => {
            prop_assert_eq!(&ours.to_pb(), &prost);
            let kept = ours.encoded();
            prop_assert_eq!(kept.as_ref(), bytes, "kept as received");
            prop_assert_eq!(
                ours.case_id(),
                prost.case.as_ref().map_or("", |case| case.case_id.as_str())
            );
            prop_assert_eq!(
                format!("{:?}", ours.raw_case()),
                format!("{:?}", prost.case.as_ref().map(convert::raw_case))
            );
            Ok(if ours.read_directly() {
                "read directly"
            } else {
                "decoded by prost"
            })
        }
        (Err(ours), Err(prost)) => {
            prop_assert_eq!(ours.to_string(), prost.to_string());
            Ok("rejected")
        }
        (ours, prost) => Err(TestCaseError::fail(format!(
            "ours {ours:?}, prost {prost:?} for {bytes:?}"
        ))),
    }
}

/// One field of a `Case`-shaped message, any field number 1-14 with any wire type, so that
/// repeats, unknown fields and mismatched wire types all occur.
fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        Just(b"2026-03-01".to_vec()),
        "[0-9A-Za-z._:-]{0,12}".prop_map(String::into_bytes),
        Just("é".as_bytes().to_vec()),
        Just(vec![0xff, 0x41]),
    ];
    let nested = prop::collection::vec((1_u32..10, 0_u64..300), 0..5).prop_map(|fields| {
        let mut bytes = Vec::new();
        for (field, value) in fields {
            prost::encoding::encode_key(field, prost::encoding::WireType::Varint, &mut bytes);
            prost::encoding::encode_varint(value, &mut bytes);
        }
        bytes
    });
    (1_u32..15, 0_u8..7, any::<u64>(), text, nested, any::<f64>()).prop_map(
        |(field, wire, number, text, nested, double)| {
            use prost::encoding::{WireType, encode_key, encode_varint};
            let mut bytes = Vec::new();
            match wire {
                0 => {
                    encode_key(field, WireType::Varint, &mut bytes);
                    encode_varint(number % 12, &mut bytes);
                }
                1 => {
                    encode_key(field, WireType::Varint, &mut bytes);
                    encode_varint(number, &mut bytes);
                }
                2 => {
                    encode_key(field, WireType::LengthDelimited, &mut bytes);
                    encode_varint(text.len() as u64, &mut bytes);
                    bytes.extend(text);
                }
                3 => {
                    encode_key(field, WireType::LengthDelimited, &mut bytes);
                    encode_varint(nested.len() as u64, &mut bytes);
                    bytes.extend(nested);
                }
                4 => {
                    encode_key(field, WireType::SixtyFourBit, &mut bytes);
                    bytes.extend(double.to_le_bytes());
                }
                5 => {
                    // A ten-byte varint whose last byte may overflow 64 bits.
                    encode_key(field, WireType::Varint, &mut bytes);
                    bytes.extend([0xff; 9]);
                    bytes.push((number % 4) as u8);
                }
                _ => {
                    encode_key(field, WireType::ThirtyTwoBit, &mut bytes);
                    bytes.extend((number as u32).to_le_bytes());
                }
            }
            bytes
        },
    )
}

#[test]
fn the_servers_request_reader_agrees_with_prost() {
    let seeds = seeds();
    let mut runner = runner();
    let counts = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u64>::new());
    // A case made of random fields, wrapped as field 1 of a request (sometimes twice, sometimes
    // with a field after it); every published request; and those with bytes changed.
    let built = (
        prop::collection::vec(field_bytes(), 0..12),
        0_u8..4,
        prop::collection::vec(field_bytes(), 0..3),
    )
        .prop_map(|(fields, shape, extra)| {
            use prost::encoding::{WireType, encode_key, encode_varint};
            let case: Vec<u8> = fields.concat();
            let mut bytes = Vec::new();
            let copies = if shape == 1 { 2 } else { 1 };
            for _ in 0..copies {
                encode_key(1, WireType::LengthDelimited, &mut bytes);
                encode_varint(case.len() as u64, &mut bytes);
                bytes.extend(&case);
            }
            if shape == 2 {
                bytes.extend(extra.concat());
            }
            if shape == 3 {
                bytes.truncate(bytes.len().saturating_sub(1));
            }
            bytes
        });
    let strategy = prop_oneof![
        built,
        (0..seeds.len()).prop_map({
            let seeds = seeds.clone();
            move |seed| seeds[seed].clone()
        }),
        mutated(&seeds, 4),
        prop::collection::vec(any::<u8>(), 0..128),
    ];
    runner
        .run(&strategy, |bytes| {
            let outcome = same_as_prost(&bytes)?;
            *counts.borrow_mut().entry(outcome).or_default() += 1;
            Ok(())
        })
        .expect("the reader agrees with prost");
    let counts = counts.into_inner();
    eprintln!("request reader outcomes: {counts:?}");
    // Every path was taken: the plain shape read here, the rest by prost, errors from both.
    for outcome in ["read directly", "decoded by prost", "rejected"] {
        assert!(
            counts.get(outcome).copied().unwrap_or(0) >= u64::from(cases()) / 50,
            "{outcome}: {counts:?}"
        );
    }
}

#[test]
fn every_published_request_is_read_without_prost() {
    for vignette in vignettes() {
        if vignette.is_plan() || vignette.is_bad_case() {
            let bytes = pb::RecommendRequest {
                case: Some(vignette.case()),
            }
            .encode_to_vec();
            let received = ReceivedRecommendRequest::from_bytes(&bytes).expect("valid");
            assert!(received.read_directly(), "{}", vignette.name);
        }
    }
}
