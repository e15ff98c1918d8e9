//! Property tests: every valid case gives a plan inside the bounds of clinical spec §12a, with a
//! reference list equal to what the plan cites; every valid proposal gets a check inside those
//! bounds; the server's direct plan encoding is prost's, byte for byte; no raw input, case or
//! proposal, panics.

use std::collections::BTreeSet;

use proptest::prelude::*;
use vlms_rt::core::case::{
    Depth, Grade, IvcSegment, Margin, Organ, RawCase, RawEnum, RawResection, RawTumor,
    Resectability, SiteGroup, TreatmentPhase, VascularManagement, Vessel,
};
use vlms_rt::core::check::{RawDoseMetric, RawPhase, RawProposal};
use vlms_rt::core::ids::{FindingCode, Verdict};
use vlms_rt::core::plan::{Indication, PhaseKind, Setting};
use vlms_rt::core::profile::{MarginRow, ScheduleGroup};
use vlms_rt::core::{self, Case, Plan, Proposal};

use crate::support::profile;

const VESSELS: [Vessel; 9] = [
    Vessel::InferiorVenaCava,
    Vessel::RenalVein,
    Vessel::GonadalVein,
    Vessel::IliacVein,
    Vessel::FemoralVein,
    Vessel::PoplitealVein,
    Vessel::SaphenousVein,
    Vessel::UpperLimbVein,
    Vessel::Other,
];
const ORGANS: [Organ; 12] = [
    Organ::KidneyLeft,
    Organ::KidneyRight,
    Organ::Liver,
    Organ::SmallBowel,
    Organ::LargeBowel,
    Organ::Stomach,
    Organ::SpinalCord,
    Organ::Duodenum,
    Organ::Heart,
    Organ::Lungs,
    Organ::Esophagus,
    Organ::Bladder,
];

/// Generated texts for the raw case, which borrows its texts as it would from a request: a few
/// hundred bytes per generated case, kept for the rest of the test run.
fn leak(text: String) -> &'static str {
    text.leak()
}

fn date_strategy() -> impl Strategy<Value = (i64, String)> {
    // Days from 2000-01-01, printed through the core's own date type.
    (0_i64..9000).prop_map(|offset| {
        let date = core::date::Date::parse("2000-01-01")
            .expect("date")
            .add_days(offset);
        (offset, date.to_string())
    })
}

prop_compose! {
    fn valid_case()(
        vessel in prop::sample::select(VESSELS.to_vec()),
        segment in prop::sample::select(vec![IvcSegment::Lower, IvcSegment::Middle, IvcSegment::Upper]),
        size_cm in prop_oneof![0.1_f64..60.0, Just(5.0), Just(60.0)],
        grade in prop::sample::select(vec![Grade::Grade1, Grade::Grade2, Grade::Grade3, Grade::Unknown]),
        depth in prop::sample::select(vec![Some(Depth::Superficial), Some(Depth::Deep), None]),
        before in any::<bool>(),
        resectability in prop::sample::select(vec![Resectability::Resectable, Resectability::Marginal, Resectability::Unresectable]),
        margin in prop::sample::select(vec![Margin::R0, Margin::R1, Margin::R2]),
        vascular in prop::sample::select(vec![None, Some(VascularManagement::None), Some(VascularManagement::Ligation), Some(VascularManagement::PrimaryRepair), Some(VascularManagement::Patch), Some(VascularManagement::Graft)]),
        flags in prop::collection::vec(any::<bool>(), 11),
        organs in prop::collection::vec(prop::sample::select(ORGANS.to_vec()), 0..14),
        (surgery_offset, surgery_date) in date_strategy(),
        days_after in 0_i64..400,
    ) -> RawCase<'static> {
        let retroperitoneal = vessel.site_group() == SiteGroup::Retroperitoneal;
        let depth = match (retroperitoneal, depth) {
            (true, Some(Depth::Superficial)) => None,
            (false, None) => Some(Depth::Deep),
            (_, depth) => depth,
        };
        let evaluation = core::date::Date::parse("2000-01-01").expect("date").add_days(surgery_offset + days_after);
        RawCase {
            case_id: "prop-case",
            evaluation_date: leak(evaluation.to_string()),
            vessel: RawEnum::Known(vessel),
            ivc_segment: if vessel == Vessel::InferiorVenaCava { RawEnum::Known(segment) } else { RawEnum::Unset },
            tumor: Some(RawTumor { size_cm, grade: RawEnum::Known(grade), depth: depth.map_or(RawEnum::Unset, RawEnum::Known) }),
            phase: RawEnum::Known(if before { TreatmentPhase::PreResection } else { TreatmentPhase::PostResection }),
            resectability: if before { RawEnum::Known(resectability) } else { RawEnum::Unset },
            surgery_mutilating: flags[0],
            resection: (!before).then(|| RawResection {
                margin: RawEnum::Known(margin),
                close_margin: flags[1],
                surgery_date: leak(surgery_date),
                compartmental_contained: flags[2],
                re_excision_feasible: flags[3],
                hematoma_present: flags[4],
                vascular_management: vascular.map_or(RawEnum::Unset, RawEnum::Known),
                periaortic_dissection: flags[5],
            }),
            organs_at_risk: organs.into_iter().map(RawEnum::Known).collect(),
            solitary_functioning_kidney: flags[6],
            prior_radiotherapy: flags[7],
            metastatic_disease: flags[8] && flags[9],
            preoperative_rt_delivered: flags[10],
        }
    }
}

fn raw_enum<T: Clone + std::fmt::Debug + 'static>(
    values: Vec<T>,
) -> impl Strategy<Value = RawEnum<T>> {
    prop_oneof![
        Just(RawEnum::Unset),
        prop::sample::select(values).prop_map(RawEnum::Known),
        any::<i32>().prop_map(RawEnum::Unknown)
    ]
}

fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(0.0),
        -100.0_f64..100.0
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9-]{0,12}",
        "\\PC{0,20}",
        Just("2024-02-29".to_string()),
        Just("9999-99-99".to_string())
    ]
}

prop_compose! {
    fn any_raw_case()(
        case_id in any_text(),
        evaluation_date in any_text(),
        vessel in raw_enum(VESSELS.to_vec()),
        ivc in raw_enum(vec![IvcSegment::Lower, IvcSegment::Middle, IvcSegment::Upper]),
        tumor in prop::option::of((any_float(), raw_enum(vec![Grade::Grade1, Grade::Grade2, Grade::Grade3, Grade::Unknown]), raw_enum(vec![Depth::Superficial, Depth::Deep]))),
        phase in raw_enum(vec![TreatmentPhase::PreResection, TreatmentPhase::PostResection]),
        resectability in raw_enum(vec![Resectability::Resectable, Resectability::Marginal, Resectability::Unresectable]),
        resection in prop::option::of((raw_enum(vec![Margin::R0, Margin::R1, Margin::R2]), any_text(), raw_enum(vec![VascularManagement::None, VascularManagement::Graft]), any::<[bool; 6]>())),
        organs in prop::collection::vec(raw_enum(ORGANS.to_vec()), 0..5),
        flags in any::<[bool; 5]>(),
    ) -> RawCase<'static> {
        RawCase {
            case_id: leak(case_id),
            evaluation_date: leak(evaluation_date),
            vessel,
            ivc_segment: ivc,
            tumor: tumor.map(|(size_cm, grade, depth)| RawTumor { size_cm, grade, depth }),
            phase,
            resectability,
            surgery_mutilating: flags[0],
            resection: resection.map(|(margin, surgery_date, vascular_management, bits)| RawResection {
                margin,
                close_margin: bits[0],
                surgery_date: leak(surgery_date),
                compartmental_contained: bits[1],
                re_excision_feasible: bits[2],
                hematoma_present: bits[3],
                vascular_management,
                periaortic_dissection: bits[4],
            }),
            organs_at_risk: organs.into(),
            solitary_functioning_kidney: flags[1],
            prior_radiotherapy: flags[2],
            metastatic_disease: flags[3],
            preoperative_rt_delivered: flags[4],
        }
    }
}

fn cited_ids(plan: &Plan<'_>) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut add = |refs: &[String]| ids.extend(refs.iter().cloned());
    plan.trace.iter().for_each(|item| add(item.reference_ids));
    plan.alerts.iter().for_each(|item| add(item.reference_ids));
    plan.prescriptions
        .iter()
        .for_each(|item| add(item.reference_ids));
    plan.volumes.iter().for_each(|item| add(item.reference_ids));
    plan.organ_constraints
        .iter()
        .for_each(|item| add(item.reference_ids));
    plan.expected_outcomes
        .iter()
        .for_each(|item| add(item.reference_ids));
    ids
}

/// The audit store's dictionary and its compression, made once.
type AuditDictionary = (
    Vec<u8>,
    std::sync::Arc<vlms_rt::audit::compress::Compression>,
);

/// The audit store's dictionary for the test profile and its compression, made once.
fn audit_dictionary() -> &'static AuditDictionary {
    static MADE: std::sync::OnceLock<AuditDictionary> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let dictionary = vlms_rt::audit::dictionary::plan_dictionary(&profile());
        let compression = vlms_rt::audit::compress::Compression::new(&dictionary)
            .expect("loads")
            .expect("not empty");
        (dictionary, compression)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn every_valid_case_gives_a_plan_inside_the_bounds(raw in valid_case()) {
        let profile = profile();
        let case = Case::validate(&raw, "case");
        prop_assert!(case.is_ok(), "valid case rejected: {:?}", case.err());
        let case = case.expect("checked");
        let plan = core::recommend(&profile, &case);
        let retroperitoneal = plan.site_group == SiteGroup::Retroperitoneal;
        // The retroperitoneal schedule group: retroperitoneal and unclassified sites.
        let truncal = retroperitoneal || plan.site_group == SiteGroup::Other;

        for prescription in &plan.prescriptions {
            prop_assert!(prescription.total_dose_gy <= 66.0 + 1e-9);
            if truncal {
                prop_assert!(prescription.total_dose_gy <= 50.4 + 1e-9);
                prop_assert!(prescription.phases.iter().all(|phase| phase.kind == PhaseKind::Initial));
            }
        }
        let strong = matches!(plan.indication, Indication::Indicated | Indication::Mandatory);
        if retroperitoneal || plan.site_group == SiteGroup::Other || case.prior_radiotherapy() || case.metastatic_disease() {
            prop_assert!(!strong, "{:?} for {:?}", plan.indication, raw);
        }
        let should_prescribe = plan.rt_on_table() && !case.prior_radiotherapy();
        prop_assert_eq!(!plan.prescriptions.is_empty(), should_prescribe);
        if case.preoperative_rt_delivered() {
            prop_assert!(plan.prescriptions.is_empty(), "a prescription after a completed preoperative course");
        }
        if should_prescribe {
            prop_assert_eq!(plan.prescriptions.iter().filter(|rx| rx.preferred).count(), 1);
        }
        if plan.setting == Setting::None {
            prop_assert!(plan.prescriptions.is_empty() && plan.volumes.is_empty());
        }

        let listed: BTreeSet<String> = plan.references.iter().map(|reference| reference.id.clone()).collect();
        prop_assert_eq!(listed.len(), plan.references.len(), "each reference once");
        prop_assert_eq!(listed, cited_ids(&plan));
        prop_assert!(plan.alerts.iter().all(|alert| alert.summary.chars().count() <= 140));
        let mut rules: Vec<_> = plan.trace.iter().map(|firing| firing.rule_id).collect();
        let fired = rules.len();
        rules.sort();
        rules.dedup();
        prop_assert_eq!(rules.len(), fired, "each rule once in the trace");
        let mut codes: Vec<_> = plan.alerts.iter().map(|alert| alert.code).collect();
        let alert_count = codes.len();
        codes.sort();
        codes.dedup();
        prop_assert_eq!(codes.len(), alert_count, "each alert once");

        prop_assert!(!plan.spilled(), "a plan list outgrew its room: {:?}", raw);

        let again = core::recommend(&profile, &case);
        prop_assert_eq!(plan, again, "deterministic");
    }

    #[test]
    fn the_direct_plan_encoding_is_prosts_byte_for_byte(raw in valid_case(), id in "[0-9A-Z]{0,30}") {
        let profile = profile();
        let case = Case::validate(&raw, "case").expect("valid");
        let plan = core::recommend(&profile, &case);
        let direct = vlms_rt::wire::encode_plan(&plan, &id);
        let owned = vlms_rt::convert::plan_out(&plan, id.clone());
        prop_assert_eq!(&direct, &prost::Message::encode_to_vec(&owned));
        // The server's response type encodes as the generated RecommendResponse does.
        let response = vlms_rt::wire::EncodedRecommendResponse { plan: direct };
        let generated = vlms_rt::pb::RecommendResponse { plan: Some(owned) };
        prop_assert_eq!(
            prost::Message::encode_to_vec(&response),
            prost::Message::encode_to_vec(&generated)
        );
        prop_assert_eq!(prost::Message::encoded_len(&response), prost::Message::encoded_len(&generated));
        // And a RecommendStream item, with or without a case_id.
        for case_id in [String::new(), plan.case_id.to_string()] {
            let item = vlms_rt::wire::EncodedStreamResponse {
                case_id: case_id.as_str().into(),
                result: vlms_rt::wire::EncodedStreamResult::Plan(response.plan.clone()),
            };
            let generated = vlms_rt::pb::RecommendStreamResponse {
                case_id,
                result: Some(vlms_rt::pb::recommend_stream_response::Result::Plan(
                    generated.plan.clone().expect("plan"),
                )),
            };
            prop_assert_eq!(prost::Message::encode_to_vec(&item), prost::Message::encode_to_vec(&generated));
            prop_assert_eq!(prost::Message::encoded_len(&item), prost::Message::encoded_len(&generated));
        }
    }

    #[test]
    fn every_plan_is_audited_as_a_checksummed_zstd_frame_that_reads_back_exactly(raw in valid_case(), id in "[0-9A-Z]{26}") {
        let profile = profile();
        let case = Case::validate(&raw, "case").expect("valid");
        let plan = core::recommend(&profile, &case);
        let (dictionary, compression) = audit_dictionary();
        let sent = vlms_rt::wire::encode_plan(&plan, &id);
        let stored = compression.compress(&sent).expect("compressed");
        // A standard zstd frame (magic 28 B5 2F FD) with its content checksum on, a small part of
        // the plan, never a parts frame.
        prop_assert!(stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
        prop_assert!(stored[4] & 0b100 != 0, "no content checksum");
        prop_assert!(stored.len() < sent.len(), "{} of {} bytes", stored.len(), sent.len());
        let mut decompressor = zstd::bulk::Decompressor::with_dictionary(dictionary).expect("decompressor");
        prop_assert_eq!(decompressor.decompress(&stored, sent.len()).expect("frame"), sent);
    }

    #[test]
    fn a_rejected_stream_item_encodes_as_the_generated_message(raw in any_raw_case(), case_id in "[0-9A-Za-z._:-]{0,40}") {
        if let Err(violations) = Case::validate(&raw, "case") {
            let status = vlms_rt::status::in_band_status(&vlms_rt::status::invalid_argument(&violations));
            let item = vlms_rt::wire::EncodedStreamResponse {
                case_id: case_id.as_str().into(),
                result: vlms_rt::wire::EncodedStreamResult::Error(status.clone()),
            };
            let generated = vlms_rt::pb::RecommendStreamResponse {
                case_id,
                result: Some(vlms_rt::pb::recommend_stream_response::Result::Error(status)),
            };
            prop_assert_eq!(prost::Message::encode_to_vec(&item), prost::Message::encode_to_vec(&generated));
            prop_assert_eq!(prost::Message::encoded_len(&item), prost::Message::encoded_len(&generated));
        }
    }

    #[test]
    fn no_raw_case_panics(raw in any_raw_case()) {
        let profile = profile();
        match Case::validate(&raw, "case") {
            Ok(case) => {
                let _ = core::recommend(&profile, &case);
            }
            Err(violations) => {
                prop_assert!(!violations.is_empty());
                prop_assert!(violations.iter().all(|violation| violation.field.starts_with("case") && !violation.description.is_empty()));
            }
        }
    }

    #[test]
    fn no_raw_proposal_panics(
        case in prop_oneof![valid_case().prop_map(Some), any_raw_case().prop_map(Some), Just(None)],
        setting in raw_enum(vec![Setting::None, Setting::Preoperative, Setting::Postoperative, Setting::NeoadjuvantChemoradiation]),
        phases in prop::collection::vec((raw_enum(vec![PhaseKind::Initial, PhaseKind::Boost]), any_float(), any::<i64>()), 0..4),
        planned_start_date in any_text(),
        metrics in prop::collection::vec((any_text(), prop_oneof![any_text(), Just("Mean[Gy]".to_string()), Just("V20Gy[%]".to_string())], any_float()), 0..4),
    ) {
        let profile = profile();
        let raw = RawProposal {
            case,
            setting,
            phases: phases.into_iter().map(|(kind, dose_per_fraction_gy, fractions)| RawPhase { kind, dose_per_fraction_gy, fractions }).collect(),
            planned_start_date,
            dose_metrics: metrics.into_iter().map(|(structure, metric, value)| RawDoseMetric { structure, metric, value }).collect(),
        };
        match Proposal::validate(&raw) {
            Ok(proposal) => {
                let report = core::check(&profile, &proposal);
                prop_assert!(report.total_dose_gy.is_finite() && report.eqd2_tumor_gy.is_finite());
                prop_assert!(!report.findings.is_empty());
            }
            Err(violations) => prop_assert!(!violations.is_empty()),
        }
    }

    #[test]
    fn every_valid_proposal_gets_a_check_inside_the_bounds(
        raw in valid_case(),
        listed in any::<prop::sample::Index>(),
        take_listed in any::<bool>(),
        initial in (0.5_f64..8.0, 1_i64..40),
        boost in prop::option::of((0.5_f64..8.0, 1_i64..15)),
        neoadjuvant in any::<bool>(),
    ) {
        let profile = profile();
        let case = Case::validate(&raw, "case").expect("valid");
        let before = matches!(raw.phase, RawEnum::Known(TreatmentPhase::PreResection));
        let setting = match (before, neoadjuvant) {
            (true, true) => Setting::NeoadjuvantChemoradiation,
            (true, false) => Setting::Preoperative,
            (false, _) => Setting::Postoperative,
        };
        // The row this proposal is judged on, found here from the spec's definitions.
        let group = match case.vessel().site_group() {
            SiteGroup::Extremity => ScheduleGroup::Extremity,
            SiteGroup::Retroperitoneal | SiteGroup::Other => ScheduleGroup::Retroperitoneal,
        };
        let margins = match (group, setting, case.resection()) {
            (ScheduleGroup::Extremity, Setting::Postoperative, Some(resection))
                if resection.margin == Margin::R0 && !resection.close_margin => MarginRow::R0NotClose,
            (ScheduleGroup::Extremity, Setting::Postoperative, _) => MarginRow::R0CloseOrPositive,
            _ => MarginRow::Any,
        };
        let row = profile.schedule(group, setting, margins).expect("a row for every setting");
        // Half the proposals are a listed schedule's phases, the rest random.
        let phases: Vec<(PhaseKind, f64, i64)> = if take_listed {
            listed.get(&row.options).phases.iter()
                .map(|phase| (phase.kind, phase.dose_per_fraction_gy, i64::from(phase.fractions)))
                .collect()
        } else {
            let mut phases = vec![(PhaseKind::Initial, initial.0, initial.1)];
            phases.extend(boost.map(|(dose, fractions)| (PhaseKind::Boost, dose, fractions)));
            phases
        };
        let proposal = RawProposal {
            case: Some(raw.clone()),
            setting: RawEnum::Known(setting),
            phases: phases.iter().map(|(kind, dose, fractions)| RawPhase {
                kind: RawEnum::Known(*kind),
                dose_per_fraction_gy: *dose,
                fractions: *fractions,
            }).collect(),
            planned_start_date: String::new(),
            dose_metrics: Vec::new(),
        };
        let proposal = Proposal::validate(&proposal).expect("a valid proposal");
        let report = core::check(&profile, &proposal);

        let codes: Vec<FindingCode> = report.findings.iter().map(|finding| finding.code).collect();
        let mut ordered = codes.clone();
        ordered.sort();
        prop_assert_eq!(&codes, &ordered, "findings in the order of the spec's table");
        let verdict_of = |code: FindingCode| -> Vec<Verdict> {
            report.findings.iter().filter(|finding| finding.code == code).map(|finding| finding.verdict).collect()
        };
        prop_assert_eq!(verdict_of(FindingCode::Schedule).len(), 1);
        prop_assert_eq!(verdict_of(FindingCode::FractionSize).len(), phases.len());
        let dose = verdict_of(FindingCode::Dose);
        prop_assert_eq!(dose.len(), 1);
        let dose = dose[0];
        let schedule_pass = verdict_of(FindingCode::Schedule) == vec![Verdict::Pass];

        let ab_late = profile.alpha_beta_late_gy();
        let e3: f64 = phases.iter().map(|(_, d, n)| *n as f64 * d * (d + ab_late) / (2.0 + ab_late)).sum();
        prop_assert!((report.eqd2_late_gy - e3).abs() < 1e-9);
        let total: f64 = phases.iter().map(|(_, d, n)| *n as f64 * d).sum();
        if case.preoperative_rt_delivered() {
            prop_assert!(report.verdict != Verdict::Pass, "a PASS after a completed preoperative course");
            prop_assert!(dose != Verdict::Pass && !schedule_pass);
            prop_assert_eq!(verdict_of(FindingCode::AfterPreopRt), vec![Verdict::Review]);
            if group == ScheduleGroup::Retroperitoneal {
                prop_assert_eq!(dose, Verdict::Fail);
            }
        } else {
            prop_assert!(verdict_of(FindingCode::AfterPreopRt).is_empty());
            if take_listed {
                prop_assert!(schedule_pass, "a listed schedule not recognised: {:?}", phases);
            }
            let max3 = row.options.iter().map(|option| option.eqd2_late_gy).fold(f64::MIN, f64::max);
            let cap = if group == ScheduleGroup::Retroperitoneal { 50.4 } else { 66.0 };
            if !schedule_pass {
                if e3 - max3 >= 0.01 + 1e-9 {
                    prop_assert!(dose != Verdict::Pass && report.verdict != Verdict::Pass,
                        "E3 {} above MAX3 {} passed", e3, max3);
                }
                if e3 - 1.10 * max3 >= 0.01 + 1e-9 || total - cap >= 0.01 + 1e-9 {
                    prop_assert_eq!(dose, Verdict::Fail);
                    prop_assert_eq!(report.verdict, Verdict::Fail);
                }
            } else {
                prop_assert_eq!(dose, Verdict::Pass);
            }
        }
        if group == ScheduleGroup::Retroperitoneal && phases.iter().any(|(kind, _, _)| *kind == PhaseKind::Boost) {
            prop_assert_eq!(verdict_of(FindingCode::Boost), vec![Verdict::Fail]);
        }
    }

}
