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
            // Debug, not PartialEq: a NaN size reads the same on both sides but is not equal.
            prop_assert_eq!(format!("{:?}", ours.to_pb()), format!("{prost:?}"));
            // What the audit record keeps is prost's encoding of the content, not the bytes sent.
            let canonical = prost.encode_to_vec();
            prop_assert_eq!(&ours.canonical_encoding(), &canonical);
            prop_assert_eq!(&ours.encode_to_vec(), &canonical);
            prop_assert_eq!(ours.encoded_len(), canonical.len());
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

/// One field that is not a nested message: any field number 1-14 with any wire type, so that
/// repeats, unknown fields and mismatched wire types all occur.
fn leaf_field() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        Just(b"2026-03-01".to_vec()),
        "[0-9A-Za-z._:-]{0,12}".prop_map(String::into_bytes),
        Just("é".as_bytes().to_vec()),
        Just(vec![0xff, 0x41]),
    ];
    (1_u32..15, 0_u8..6, any::<u64>(), text, any::<f64>()).prop_map(
        |(field, wire, number, text, double)| {
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
                    encode_key(field, WireType::SixtyFourBit, &mut bytes);
                    bytes.extend(double.to_le_bytes());
                }
                4 => {
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

/// One field of a `Case`-shaped message: a leaf, or a nested message of leaves (the tumour's
/// and the resection's fields, and any others) under any field number, sometimes cut short.
fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
    let nested = (
        1_u32..15,
        prop::collection::vec(leaf_field(), 0..6),
        0_u8..8,
    )
        .prop_map(|(field, leaves, cut)| {
            use prost::encoding::{WireType, encode_key, encode_varint};
            let mut body = leaves.concat();
            if cut == 0 {
                body.truncate(body.len().saturating_sub(1));
            }
            let mut bytes = Vec::new();
            encode_key(field, WireType::LengthDelimited, &mut bytes);
            encode_varint(body.len() as u64, &mut bytes);
            bytes.extend(body);
            bytes
        });
    prop_oneof![leaf_field(), nested]
}

/// A request whose fields all have their own wire types but may repeat: the case's scalar
/// fields from one to three generated cases in a row, its tumour and resection each one nested
/// message holding up to three generated ones in a row (so every field's last value must win).
fn typed_request() -> impl Strategy<Value = Vec<u8>> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let text = || {
        prop_oneof![
            Just("2026-03-01".to_string()),
            Just("2026-02-30".to_string()),
            "[0-9A-Za-z._:-]{0,8}",
            Just("é".to_string()),
        ]
    };
    let small = || -2_i32..9;
    let tumor = (prop_oneof![any::<f64>(), 0.0..70.0_f64], small(), small()).prop_map(
        |(size_cm, grade, depth)| {
            pb::Tumor {
                size_cm,
                grade,
                depth,
            }
            .encode_to_vec()
        },
    );
    let resection = (
        small(),
        any::<bool>(),
        text(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        small(),
        any::<bool>(),
    )
        .prop_map(
            |(
                margin,
                close,
                surgery_date,
                compartmental,
                re_excision,
                hematoma,
                vascular,
                periaortic,
            )| {
                pb::Resection {
                    margin,
                    close_margin: close,
                    surgery_date,
                    compartmental_contained: compartmental,
                    re_excision_feasible: re_excision,
                    hematoma_present: hematoma,
                    vascular_management: vascular,
                    periaortic_dissection: periaortic,
                }
                .encode_to_vec()
            },
        );
    let case = (
        text(),
        text(),
        (small(), small(), small(), small()),
        any::<bool>(),
        prop::collection::vec(small(), 0..4),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                case_id,
                evaluation_date,
                (vessel, segment, phase, resectability),
                mutilating,
                organs,
                flags,
            )| {
                pb::Case {
                    case_id,
                    evaluation_date,
                    vessel,
                    ivc_segment: segment,
                    tumor: None,
                    phase,
                    resectability,
                    surgery_mutilating: mutilating,
                    resection: None,
                    organs_at_risk: organs,
                    solitary_functioning_kidney: flags.0,
                    prior_radiotherapy: flags.1,
                    metastatic_disease: flags.2,
                }
                .encode_to_vec()
            },
        );
    (
        prop::collection::vec(case, 1..4),
        prop::collection::vec(tumor, 0..4),
        prop::collection::vec(resection, 0..4),
    )
        .prop_map(|(cases, tumors, resections)| {
            let mut body = cases.concat();
            for (field, parts) in [(5, tumors), (9, resections)] {
                if !parts.is_empty() {
                    let nested = parts.concat();
                    encode_key(field, WireType::LengthDelimited, &mut body);
                    encode_varint(nested.len() as u64, &mut body);
                    body.extend(nested);
                }
            }
            let mut bytes = Vec::new();
            encode_key(1, WireType::LengthDelimited, &mut bytes);
            encode_varint(body.len() as u64, &mut bytes);
            bytes.extend(body);
            bytes
        })
}

#[test]
fn the_servers_request_reader_agrees_with_prost() {
    let seeds = seeds();
    let mut runner = runner();
    let counts = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u64>::new());
    // A case made of random fields, wrapped as field 1 of a request (sometimes twice, sometimes
    // with a field after it, sometimes cut short); a well-typed request with repeated fields;
    // every published request; those with bytes changed; random bytes.
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
        typed_request(),
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
