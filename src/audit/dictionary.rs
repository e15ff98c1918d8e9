//! The compression dictionary of the SQLite audit store. It opens with a parts section
//! ([`super::parts`]): the profile's plan sub-messages, each encoded once exactly as a plan carries
//! it, which a stored plan names by index. After it come plans this service would give for a
//! spread of synthetic cases (every vessel and IVC segment, resectable or not, every margin, every
//! organ at risk), for zstd to find what the parts do not cover (a check's answer holds a whole
//! plan). Either way the bytes SQLite writes twice (WAL, then checkpoint) and syncs shrink many
//! times over. The synthetic cases only feed compression; no plan is answered from them.
//!
//! The dictionary is data like any other: the store keeps each one it has used, by SHA-256, and a
//! record names the one its plan was compressed with, so a record stays readable after an upgrade
//! or a guideline reload changes what a fresh dictionary would hold.

use crate::core::Profile;
use crate::pb;

/// Fixed dates keep the dictionary the same from one start to the next for the same profile.
const EVALUATION_DATE: &str = "2026-01-15";
const SURGERY_DATE: &str = "2025-12-16";

/// Most bytes of sample plans the dictionary holds after its parts section; plans beyond it add
/// little that earlier samples do not hold.
const MAX_LEN: usize = 384 * 1024;

pub(crate) fn sample_cases() -> Vec<pb::Case> {
    let organs: Vec<i32> = (1..=7).collect();
    let mut cases = Vec::new();
    for vessel in 1..=9 {
        let segments: &[i32] = if vessel == pb::Vessel::InferiorVenaCava as i32 {
            &[1, 2, 3]
        } else {
            &[0]
        };
        for &segment in segments {
            let base = pb::Case {
                case_id: format!("sample-{vessel}-{segment}"),
                evaluation_date: EVALUATION_DATE.into(),
                vessel,
                ivc_segment: segment,
                tumor: Some(pb::Tumor {
                    size_cm: 9.0,
                    grade: pb::Grade::Grade3 as i32,
                    depth: pb::Depth::Deep as i32,
                }),
                organs_at_risk: organs.clone(),
                solitary_functioning_kidney: true,
                ..Default::default()
            };
            for resectability in [
                pb::Resectability::Resectable as i32,
                pb::Resectability::Unresectable as i32,
            ] {
                cases.push(pb::Case {
                    phase: pb::TreatmentPhase::PreResection as i32,
                    resectability,
                    ..base.clone()
                });
            }
            for margin in 1..=3 {
                cases.push(pb::Case {
                    phase: pb::TreatmentPhase::PostResection as i32,
                    resection: Some(pb::Resection {
                        margin,
                        surgery_date: SURGERY_DATE.into(),
                        hematoma_present: true,
                        vascular_management: pb::VascularManagement::Graft as i32,
                        periaortic_dissection: segment != 0,
                        ..Default::default()
                    }),
                    ..base.clone()
                });
            }
        }
    }
    cases
}

/// The dictionary for `profile`: a parts section ([`super::parts`]) listing the top-level fields of
/// the sample cases' plans that do not name the call (all but its id, case id, evaluation date and
/// start window), most frequent first, then the profile's other parts
/// ([`crate::wire::ProfileParts::fields`], and every alert at every severity); then, for zstd, the encoded plans of the sample cases
/// the profile accepts, most distinctive last (zstd reaches the end of a dictionary most cheaply),
/// at most 384 KiB of them.
pub fn plan_dictionary(profile: &Profile) -> Vec<u8> {
    let plans: Vec<Vec<u8>> = sample_cases()
        .into_iter()
        .filter_map(|case| {
            let request = pb::RecommendRequest { case: Some(case) };
            let case = crate::convert::case_from_request(&request).ok()?;
            let plan = crate::core::recommend(profile, &case);
            Some(crate::wire::encode_plan(
                &plan,
                "00000000000000000000000000",
            ))
        })
        .collect();
    // Plan fields 1, 3, 4 and 9 hold the call's id, case id, evaluation date and start window.
    const OWN_FIELDS: [u32; 4] = [1, 3, 4, 9];
    let mut counted: Vec<(&[u8], usize)> = Vec::new();
    let mut position = std::collections::HashMap::new();
    for plan in &plans {
        for (tag, range) in super::parts::fields(plan).unwrap_or_default() {
            let field = &plan[range];
            if OWN_FIELDS.contains(&tag) || field[0] & 7 != 2 {
                continue;
            }
            let at = *position.entry(field).or_insert_with(|| {
                counted.push((field, 0));
                counted.len() - 1
            });
            counted[at].1 += 1;
        }
    }
    // Stable: equally frequent parts keep their first appearance's order.
    counted.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let profile_parts = crate::wire::ProfileParts::new(std::sync::Arc::new(profile.clone()));
    let mut listed: Vec<&[u8]> = counted.iter().map(|(field, _)| *field).collect();
    let alerts = crate::wire::alert_fields(profile);
    for field in profile_parts
        .fields()
        .chain(alerts.iter().map(Vec::as_slice))
    {
        if !position.contains_key(field) {
            position.insert(field, listed.len());
            listed.push(field);
        }
    }
    let mut dictionary = super::parts::section(listed.iter().copied());
    let mut samples = 0;
    for plan in &plans {
        if samples + plan.len() > MAX_LEN {
            continue;
        }
        samples += plan.len();
        dictionary.extend_from_slice(plan);
    }
    dictionary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_case_is_valid_and_the_dictionary_is_stable() {
        for case in sample_cases() {
            let request = pb::RecommendRequest { case: Some(case) };
            if let Err(violations) = crate::convert::case_from_request(&request) {
                panic!("sample case rejected: {violations:?}");
            }
        }
        let profile = crate::guideline::embedded().expect("profile");
        let dictionary = plan_dictionary(&profile);
        assert!(dictionary.len() > 64 * 1024, "{}", dictionary.len());
        // zstd's window (2^19 bytes, see `compress`) reaches all of it.
        assert!(dictionary.len() <= 1 << 19, "{}", dictionary.len());
        assert_eq!(dictionary, plan_dictionary(&profile));
        // Every part the profile defines is listed, once.
        let parts = super::super::parts::parse_section(&dictionary)
            .expect("well-formed")
            .expect("a parts section");
        let listed: Vec<&[u8]> = parts
            .iter()
            .map(|range| &dictionary[range.clone()])
            .collect();
        let profile_parts = crate::wire::ProfileParts::new(std::sync::Arc::new(profile.clone()));
        for field in profile_parts.fields() {
            assert!(listed.contains(&field));
        }
        let distinct: std::collections::HashSet<&[u8]> = listed.iter().copied().collect();
        assert_eq!(distinct.len(), listed.len());
    }
}
