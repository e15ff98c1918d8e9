//! The compression dictionary of the SQLite audit store: plans this service would give for a
//! spread of synthetic cases (every vessel and IVC segment, resectable or not, every margin, every
//! organ at risk), against which zstd compresses each stored response (a plan, or a check's answer,
//! which holds a whole plan), so the bytes SQLite writes twice (WAL, then checkpoint) and syncs
//! shrink many times over. The synthetic cases only feed compression; no plan is answered from
//! them. Dictionaries of builds before 2026-12 opened with a parts section ([`super::parts`]);
//! the records compressed with them are still read.
//!
//! The dictionary is data like any other: the store keeps each one it has used, by SHA-256, and a
//! record names the one its plan was compressed with, so a record stays readable after an upgrade
//! or a guideline reload changes what a fresh dictionary would hold.

use crate::core::Profile;
use crate::pb;

/// Fixed dates keep the dictionary the same from one start to the next for the same profile.
const EVALUATION_DATE: &str = "2026-01-15";
const SURGERY_DATE: &str = "2025-12-16";

/// Most bytes of sample plans the dictionary holds; plans beyond it add little that earlier
/// samples do not hold.
const MAX_LEN: usize = 384 * 1024;

pub(crate) fn sample_cases() -> Vec<pb::Case> {
    let organs: Vec<i32> = (1..=12).collect();
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

/// The dictionary for `profile`: the plans of the sample cases the profile accepts, each encoded
/// by prost as the contract defines the message (nothing of the service's own encoder), most
/// distinctive last (zstd reaches the end of a dictionary most cheaply), at most 384 KiB of them.
pub fn plan_dictionary(profile: &Profile) -> Vec<u8> {
    use prost::Message;
    let mut dictionary = Vec::new();
    for case in sample_cases() {
        let request = pb::RecommendRequest { case: Some(case) };
        let Ok(case) = crate::convert::case_from_request(&request) else {
            continue;
        };
        let plan = crate::convert::plan_out(
            &crate::core::recommend(profile, &case),
            "00000000000000000000000000".into(),
        )
        .encode_to_vec();
        if dictionary.len() + plan.len() <= MAX_LEN {
            dictionary.extend_from_slice(&plan);
        }
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
        // No parts section: new records are zstd frames, never parts frames.
        assert_eq!(super::super::parts::parse_section(&dictionary), Ok(None));
    }
}
