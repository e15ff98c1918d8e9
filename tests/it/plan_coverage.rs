//! The plan encoder's contract, checked structurally: `wire::encode_plan` writes the `Plan`
//! message itself (not through prost), so a field added to the contract and forgotten there would
//! never be sent. Walking the compiled descriptor set, every field of `vlms.rt.v1.Plan` and of
//! every message it holds must be written for some plan of the vignettes or of a spread of
//! generated cases — so the byte-for-byte property test cannot be passed by cases that never set a
//! field.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use vlms_rt::core::{self, Case};
use vlms_rt::{convert, pb};

use crate::support::{profile, vignettes};

/// Every message of the descriptor set by its full name (`.vlms.rt.v1.Plan`).
fn messages() -> BTreeMap<String, DescriptorProto> {
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut found = BTreeMap::new();
    fn walk(
        prefix: &str,
        message: &DescriptorProto,
        found: &mut BTreeMap<String, DescriptorProto>,
    ) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            walk(&name, nested, found);
        }
        found.insert(name, message.clone());
    }
    for file in &set.file {
        for message in &file.message_type {
            walk(&format!(".{}", file.package()), message, &mut found);
        }
    }
    found
}

/// The (message, field number) pairs of `root` and of every message its fields hold.
fn reachable(messages: &BTreeMap<String, DescriptorProto>, root: &str) -> BTreeSet<(String, i32)> {
    let mut pairs = BTreeSet::new();
    let mut to_visit = vec![root.to_string()];
    let mut visited = BTreeSet::new();
    while let Some(name) = to_visit.pop() {
        if !visited.insert(name.clone()) {
            continue;
        }
        let message = &messages[&name];
        for field in &message.field {
            pairs.insert((name.clone(), field.number()));
            if field.r#type() == Type::Message {
                to_visit.push(field.type_name().to_string());
            }
        }
    }
    pairs
}

/// Records every field present in `bytes`, read as message `name`.
fn record_fields(
    messages: &BTreeMap<String, DescriptorProto>,
    name: &str,
    mut bytes: &[u8],
    seen: &mut BTreeSet<(String, i32)>,
) {
    let message = &messages[name];
    while !bytes.is_empty() {
        let (number, wire_type) = decode_key(&mut bytes).expect("a field key");
        let number = i32::try_from(number).expect("field number");
        seen.insert((name.to_string(), number));
        let field = message
            .field
            .iter()
            .find(|field| field.number() == number)
            .unwrap_or_else(|| panic!("{name} has no field {number}"));
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut bytes).expect("varint");
            }
            WireType::SixtyFourBit => bytes = &bytes[8..],
            WireType::ThirtyTwoBit => bytes = &bytes[4..],
            WireType::LengthDelimited => {
                let length =
                    usize::try_from(decode_varint(&mut bytes).expect("length")).expect("length");
                let (value, rest) = bytes.split_at(length);
                if field.r#type() == Type::Message {
                    record_fields(messages, field.type_name(), value, seen);
                }
                bytes = rest;
            }
            other => panic!("unexpected wire type {other:?} in {name}"),
        }
    }
}

/// A spread of cases beside the vignettes: every vessel, before and after resection, every
/// resectability and margin, every flag, every organ, start windows open and long passed.
fn generated_cases() -> Vec<pb::Case> {
    let mut cases = Vec::new();
    for vessel in 1..=9 {
        let segment = if vessel == pb::Vessel::InferiorVenaCava as i32 {
            2
        } else {
            0
        };
        let base = pb::Case {
            case_id: format!("coverage-{vessel}"),
            evaluation_date: "2026-11-26".into(),
            vessel,
            ivc_segment: segment,
            tumor: Some(pb::Tumor {
                size_cm: 8.0,
                grade: pb::Grade::Grade3 as i32,
                depth: pb::Depth::Deep as i32,
            }),
            organs_at_risk: (1..=12).collect(),
            ..Default::default()
        };
        for resectability in 1..=3 {
            cases.push(pb::Case {
                phase: pb::TreatmentPhase::PreResection as i32,
                resectability,
                ..base.clone()
            });
        }
        for margin in 1..=3 {
            for (surgery_date, close) in [("2026-10-22", false), ("2026-06-01", true)] {
                cases.push(pb::Case {
                    phase: pb::TreatmentPhase::PostResection as i32,
                    resection: Some(pb::Resection {
                        margin,
                        close_margin: close,
                        surgery_date: surgery_date.into(),
                        hematoma_present: true,
                        vascular_management: pb::VascularManagement::Graft as i32,
                        periaortic_dissection: true,
                        ..Default::default()
                    }),
                    solitary_functioning_kidney: close,
                    ..base.clone()
                });
            }
        }
    }
    cases
}

#[test]
fn every_field_of_the_plan_is_written_by_the_plan_encoder() {
    let profile = profile();
    let messages = messages();
    let expected = reachable(&messages, ".vlms.rt.v1.Plan");
    assert!(expected.len() > 50, "{} fields", expected.len());
    let mut seen = BTreeSet::new();
    let cases = vignettes()
        .into_iter()
        .filter(|vignette| vignette.is_plan())
        .map(|vignette| vignette.case())
        .chain(generated_cases());
    let mut planned = 0;
    for case in cases {
        let Ok(case) = Case::validate(&convert::raw_case(&case), "case") else {
            continue;
        };
        planned += 1;
        let plan = core::recommend(&profile, &case);
        let encoded = vlms_rt::wire::encode_plan(&plan, "01JDQ5Z8M4X7R2K9V3T6N1B0CE");
        record_fields(&messages, ".vlms.rt.v1.Plan", &encoded, &mut seen);
    }
    assert!(planned > 50, "only {planned} cases planned");
    let never: Vec<String> = expected
        .difference(&seen)
        .map(|(message, number)| {
            let field = messages[message]
                .field
                .iter()
                .find(|field| field.number() == *number)
                .map_or("?", |field| field.name());
            format!("{message}.{field} ({number})")
        })
        .collect();
    assert!(never.is_empty(), "never written by encode_plan: {never:?}");
}
