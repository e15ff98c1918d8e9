//! Table-driven tests of the core, one family per section of the clinical specification, with the
//! boundaries the specification names (5.0 cm, day 27/28/42/43, 90/91 days, R0 close or not,
//! compartmental with R1).

use smallvec::{SmallVec, smallvec};
use vlms_rt::core::case::{
    Depth, Grade, IvcSegment, Margin, Organ, RawCase, RawEnum, RawResection, RawTumor,
    Resectability, TreatmentPhase, VascularManagement, Vessel,
};
use vlms_rt::core::check::{RawDoseMetric, RawPhase, RawProposal};
use vlms_rt::core::ids::{AlertCode, FindingCode, RuleId, Severity, Verdict, VolumeCode};
use vlms_rt::core::plan::{Indication, PhaseKind, Setting, StartWindow, WindowStatus};
use vlms_rt::core::{self, Case, Plan, Proposal};

use crate::support::profile;

fn known<T>(value: T) -> RawEnum<T> {
    RawEnum::Known(value)
}

/// A valid preoperative femoral case: 7 cm, grade 3, deep, resectable.
fn pre(vessel: Vessel) -> RawCase<'static> {
    RawCase {
        case_id: "t",
        evaluation_date: "2026-11-26",
        vessel: known(vessel),
        ivc_segment: if vessel == Vessel::InferiorVenaCava {
            known(IvcSegment::Middle)
        } else {
            RawEnum::Unset
        },
        tumor: Some(RawTumor {
            size_cm: 7.0,
            grade: known(Grade::Grade3),
            depth: known(Depth::Deep),
        }),
        phase: known(TreatmentPhase::PreResection),
        resectability: known(Resectability::Resectable),
        surgery_mutilating: false,
        resection: None,
        organs_at_risk: SmallVec::new(),
        solitary_functioning_kidney: false,
        prior_radiotherapy: false,
        metastatic_disease: false,
        preoperative_rt_delivered: false,
    }
}

/// A valid postoperative case with margin `margin`, operated on 2026-10-22 (35 days earlier).
fn post(vessel: Vessel, margin: Margin) -> RawCase<'static> {
    RawCase {
        phase: known(TreatmentPhase::PostResection),
        resectability: RawEnum::Unset,
        resection: Some(RawResection {
            margin: known(margin),
            close_margin: false,
            surgery_date: "2026-10-22",
            compartmental_contained: false,
            re_excision_feasible: false,
            hematoma_present: false,
            vascular_management: RawEnum::Unset,
            periaortic_dissection: false,
        }),
        ..pre(vessel)
    }
}

fn with_tumor(mut raw: RawCase, size_cm: f64, grade: Grade, depth: Option<Depth>) -> RawCase {
    raw.tumor = Some(RawTumor {
        size_cm,
        grade: known(grade),
        depth: depth.map_or(RawEnum::Unset, known),
    });
    raw
}

fn resection<'r, 'a>(raw: &'r mut RawCase<'a>) -> &'r mut RawResection<'a> {
    raw.resection.as_mut().expect("post-resection case")
}

fn plan_of(raw: &RawCase<'static>, profile: &core::Profile) -> Plan<'static> {
    let case =
        Case::validate(raw, "case").unwrap_or_else(|violations| panic!("rejected: {violations}"));
    // The profile outlives the test: leak one per call site to keep the plan's borrows simple.
    let profile: &'static core::Profile = Box::leak(Box::new(profile.clone()));
    core::recommend(profile, &case)
}

fn trace(plan: &Plan<'_>) -> Vec<RuleId> {
    plan.trace.iter().map(|firing| firing.rule_id).collect()
}

fn alerts(plan: &Plan<'_>) -> Vec<(AlertCode, Severity)> {
    let mut alerts: Vec<_> = plan
        .alerts
        .iter()
        .map(|alert| (alert.code, alert.severity))
        .collect();
    alerts.sort();
    alerts
}

fn totals(plan: &Plan<'_>) -> Vec<(f64, bool)> {
    plan.prescriptions
        .iter()
        .map(|rx| ((rx.total_dose_gy * 100.0).round() / 100.0, rx.preferred))
        .collect()
}

fn violations(raw: &RawCase) -> Vec<String> {
    match Case::validate(raw, "case") {
        Ok(_) => Vec::new(),
        Err(violations) => violations
            .iter()
            .map(|violation| violation.field.clone())
            .collect(),
    }
}

#[test]
fn risk_rules_and_the_five_centimetre_boundary() {
    let profile = profile();
    let cases = [
        (
            5.0,
            Grade::Grade3,
            Depth::Deep,
            RuleId::IndHgDeepSmall,
            Indication::Consider,
        ),
        (
            5.01,
            Grade::Grade2,
            Depth::Deep,
            RuleId::IndHgDeepLarge,
            Indication::Indicated,
        ),
        (
            12.0,
            Grade::Grade2,
            Depth::Superficial,
            RuleId::IndHgSuperficial,
            Indication::Consider,
        ),
        (
            12.0,
            Grade::Unknown,
            Depth::Deep,
            RuleId::IndGradeUnknown,
            Indication::Consider,
        ),
        (
            12.0,
            Grade::Grade1,
            Depth::Deep,
            RuleId::IndLowRisk,
            Indication::NotIndicated,
        ),
    ];
    for (size, grade, depth, rule, indication) in cases {
        let plan = plan_of(
            &with_tumor(pre(Vessel::FemoralVein), size, grade, Some(depth)),
            &profile,
        );
        assert_eq!(plan.indication, indication, "{size} {grade:?} {depth:?}");
        assert_eq!(trace(&plan)[0], rule);
        let expected_setting = if indication == Indication::NotIndicated {
            Setting::None
        } else {
            Setting::Preoperative
        };
        assert_eq!(plan.setting, expected_setting);
    }
}

#[test]
fn retroperitoneal_sites_are_deep_and_capped() {
    let profile = profile();
    for vessel in [
        Vessel::InferiorVenaCava,
        Vessel::RenalVein,
        Vessel::GonadalVein,
        Vessel::IliacVein,
    ] {
        let plan = plan_of(&with_tumor(pre(vessel), 6.0, Grade::Grade2, None), &profile);
        assert_eq!(plan.indication, Indication::Consider, "{vessel:?}");
        assert_eq!(
            &trace(&plan)[..2],
            &[RuleId::IndHgDeepLarge, RuleId::ModRpsCap]
        );
        assert!(alerts(&plan).contains(&(AlertCode::RpsRtNotStandard, Severity::Warning)));
        assert_eq!(
            totals(&plan),
            vec![(50.4, true), (50.0, false), (45.0, false)]
        );
    }
    // Postoperative, base CONSIDER: no cap, no pre-resection alert, RPS_POSTOP as a warning.
    let plan = plan_of(
        &with_tumor(
            post(Vessel::IliacVein, Margin::R0),
            4.0,
            Grade::Grade3,
            None,
        ),
        &profile,
    );
    assert_eq!(plan.indication, Indication::Consider);
    assert!(!trace(&plan).contains(&RuleId::ModRpsCap));
    assert!(alerts(&plan).contains(&(AlertCode::RpsPostopRtNotRecommended, Severity::Warning)));
    assert_eq!(totals(&plan), vec![(45.0, true), (50.4, false)]);
    // Postoperative, base INDICATED: capped; still a warning (critical only when MANDATORY).
    let plan = plan_of(&post(Vessel::InferiorVenaCava, Margin::R0), &profile);
    assert!(trace(&plan).contains(&RuleId::ModRpsCap));
    assert!(alerts(&plan).contains(&(AlertCode::RpsPostopRtNotRecommended, Severity::Warning)));
    // R2 that cannot be re-excised: MANDATORY capped, critical, gross residual disease, no boost.
    let plan = plan_of(&post(Vessel::RenalVein, Margin::R2), &profile);
    assert_eq!(plan.indication, Indication::Consider);
    assert!(alerts(&plan).contains(&(AlertCode::RpsPostopRtNotRecommended, Severity::Critical)));
    assert!(alerts(&plan).contains(&(AlertCode::GrossResidualDisease, Severity::Warning)));
    assert!(
        plan.prescriptions
            .iter()
            .all(|rx| rx.total_dose_gy <= 50.4 && rx.phases.len() == 1)
    );
}

#[test]
fn margins_compartments_and_re_excision() {
    let profile = profile();
    // R0 not close: 60 Gy preferred, 50 Gy in 20 as an alternative with its alert.
    let plan = plan_of(&post(Vessel::PoplitealVein, Margin::R0), &profile);
    assert_eq!(totals(&plan), vec![(60.0, true), (50.0, false)]);
    assert!(alerts(&plan).contains(&(AlertCode::HypofractionationLimitedEvidence, Severity::Info)));
    // R0 close: 66 Gy only, no hypofractionation alert.
    let mut raw = post(Vessel::PoplitealVein, Margin::R0);
    resection(&mut raw).close_margin = true;
    let plan = plan_of(&raw, &profile);
    assert_eq!(totals(&plan), vec![(66.0, true)]);
    assert!(!trace(&plan).contains(&RuleId::AlertHypofractionation));
    // Compartmental R0, even close: not indicated.
    resection(&mut raw).compartmental_contained = true;
    let plan = plan_of(&raw, &profile);
    assert_eq!(
        (plan.indication, plan.setting),
        (Indication::NotIndicated, Setting::None)
    );
    assert_eq!(trace(&plan), vec![RuleId::IndCompartmental]);
    assert!(plan.prescriptions.is_empty() && plan.volumes.is_empty());
    // Compartmental is read only with R0: R1 stays mandatory.
    let mut raw = post(Vessel::SaphenousVein, Margin::R1);
    resection(&mut raw).compartmental_contained = true;
    resection(&mut raw).close_margin = true;
    let plan = plan_of(&raw, &profile);
    assert_eq!(plan.indication, Indication::Mandatory);
    assert_eq!(totals(&plan), vec![(66.0, true)]);
    // Re-excision feasible is read only with R1/R2.
    let mut raw = post(Vessel::FemoralVein, Margin::R0);
    resection(&mut raw).re_excision_feasible = true;
    assert_eq!(plan_of(&raw, &profile).indication, Indication::Indicated);
    let mut raw = post(Vessel::FemoralVein, Margin::R2);
    resection(&mut raw).re_excision_feasible = true;
    let plan = plan_of(&raw, &profile);
    assert_eq!(
        (plan.indication, plan.setting),
        (Indication::Consider, Setting::None)
    );
    assert_eq!(
        alerts(&plan),
        vec![(AlertCode::ReExcisionFirst, Severity::Warning)]
    );
    assert_eq!(plan.start_window, StartWindow::NotApplicable);
}

#[test]
fn start_window_boundaries_and_overdue_severity() {
    let profile = profile();
    let cases = [
        ("2026-10-30", 27, WindowStatus::Before, None),
        ("2026-10-29", 28, WindowStatus::Open, None),
        ("2026-10-15", 42, WindowStatus::Open, None),
        (
            "2026-10-14",
            43,
            WindowStatus::Passed,
            Some(Severity::Warning),
        ),
        (
            "2026-08-28",
            90,
            WindowStatus::Passed,
            Some(Severity::Warning),
        ),
        (
            "2026-08-27",
            91,
            WindowStatus::Passed,
            Some(Severity::Critical),
        ),
    ];
    for (surgery, days, status, overdue) in cases {
        let mut raw = post(Vessel::FemoralVein, Margin::R1);
        resection(&mut raw).surgery_date = surgery;
        let plan = plan_of(&raw, &profile);
        match plan.start_window {
            StartWindow::Applicable {
                status: got,
                days_since_surgery,
                earliest,
                latest,
            } => {
                assert_eq!((got, days_since_surgery), (status, days), "{surgery}");
                assert_eq!(latest.days_since(earliest), 14);
            }
            StartWindow::NotApplicable => panic!("{surgery}: no window"),
        }
        let overdue_alert = plan
            .alerts
            .iter()
            .find(|alert| alert.code == AlertCode::RtStartOverdue)
            .map(|alert| alert.severity);
        assert_eq!(overdue_alert, overdue, "{surgery}");
        assert_eq!(
            trace(&plan).contains(&RuleId::WindowOverdue),
            overdue.is_some()
        );
    }
    // Surgery on the evaluation day itself is valid: day 0, before the window.
    let mut raw = post(Vessel::FemoralVein, Margin::R1);
    resection(&mut raw).surgery_date = "2026-11-26";
    assert!(matches!(
        plan_of(&raw, &profile).start_window,
        StartWindow::Applicable {
            status: WindowStatus::Before,
            days_since_surgery: 0,
            ..
        }
    ));
}

#[test]
fn volumes_constraints_and_safety_modifiers() {
    let profile = profile();
    let mut raw = post(Vessel::InferiorVenaCava, Margin::R1);
    resection(&mut raw).vascular_management = known(VascularManagement::Ligation);
    resection(&mut raw).hematoma_present = true;
    raw.organs_at_risk = smallvec![
        known(Organ::SmallBowel),
        known(Organ::LargeBowel),
        known(Organ::SmallBowel),
        known(Organ::Stomach),
    ];
    let plan = plan_of(&raw, &profile);
    let volumes: Vec<VolumeCode> = plan.volumes.iter().map(|volume| volume.code).collect();
    assert_eq!(
        volumes,
        vec![VolumeCode::Hematoma, VolumeCode::SurgicalBed],
        "ligation is no reconstruction"
    );
    let rows: Vec<(&str, &str)> = plan
        .organ_constraints
        .iter()
        .map(|row| (row.structure, row.metric))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("Bag_Bowel", "V45Gy[cc]"),
            ("Bowel_Small", "V15Gy[cc]"),
            ("Stomach", "D100%[Gy]")
        ]
    );
    assert!(trace(&plan).ends_with(&[
        RuleId::OutcomeRpsEvidence,
        RuleId::OutcomeIvcLigation,
        RuleId::OutcomeIvcRenal
    ]));

    // Solitary kidney: the bilateral Kidneys rows give way to the alert; other rows stay.
    let mut raw = pre(Vessel::FemoralVein);
    raw.organs_at_risk = smallvec![known(Organ::KidneyRight), known(Organ::Liver)];
    raw.solitary_functioning_kidney = true;
    let plan = plan_of(&raw, &profile);
    assert!(alerts(&plan).contains(&(AlertCode::SolitaryKidney, Severity::Critical)));
    let rows: Vec<&str> = plan
        .organ_constraints
        .iter()
        .map(|row| row.structure)
        .collect();
    assert_eq!(rows, vec!["Liver-GTV"]);
    assert!(!plan.organ_constraints[0].note.is_empty());
    // No kidney near an extremity target: no solitary-kidney alert.
    raw.organs_at_risk = smallvec![known(Organ::Liver)];
    assert!(
        !alerts(&plan_of(&raw, &profile))
            .iter()
            .any(|(code, _)| *code == AlertCode::SolitaryKidney)
    );
    // Abdominal organs near an extremity: no OAR_DOSE_MODIFICATION (retroperitoneal/other only).
    assert!(!trace(&plan_of(&raw, &profile)).contains(&RuleId::ModOar));

    // Prior radiotherapy: capped, critical, no prescription, volumes and constraints stay.
    let mut raw = pre(Vessel::FemoralVein);
    raw.prior_radiotherapy = true;
    raw.organs_at_risk = smallvec![known(Organ::SpinalCord)];
    let plan = plan_of(&raw, &profile);
    assert_eq!(plan.indication, Indication::Consider);
    assert!(plan.prescriptions.is_empty());
    assert!(!trace(&plan).contains(&RuleId::RxSchedule));
    assert!(alerts(&plan).contains(&(AlertCode::Reirradiation, Severity::Critical)));
    assert_eq!(plan.volumes.len(), 1);
    assert_eq!(plan.organ_constraints.len(), 1);

    // Not on the table: no constraints even with organs named.
    let mut raw = with_tumor(
        pre(Vessel::FemoralVein),
        3.0,
        Grade::Grade1,
        Some(Depth::Deep),
    );
    raw.organs_at_risk = smallvec![known(Organ::SpinalCord)];
    let plan = plan_of(&raw, &profile);
    assert!(plan.organ_constraints.is_empty() && plan.expected_outcomes.is_empty());
    assert_eq!(
        trace(&plan),
        vec![RuleId::IndLowRisk, RuleId::AlertReferenceCenter]
    );
}

#[test]
fn other_site_grade_unknown_and_the_metastatic_gate() {
    let profile = profile();
    let mut raw = pre(Vessel::Other);
    raw.organs_at_risk = smallvec![known(Organ::Liver)];
    let plan = plan_of(&raw, &profile);
    assert_eq!(plan.indication, Indication::Consider);
    assert!(alerts(&plan).contains(&(AlertCode::SiteUnclassified, Severity::Warning)));
    assert!(alerts(&plan).contains(&(AlertCode::OarDoseModification, Severity::Warning)));
    assert_eq!(
        totals(&plan),
        vec![(50.4, true), (50.0, false), (45.0, false)],
        "an unclassified site is planned on the retroperitoneal rows"
    );

    let mut raw = with_tumor(
        post(Vessel::FemoralVein, Margin::R1),
        3.0,
        Grade::Unknown,
        Some(Depth::Superficial),
    );
    resection(&mut raw).re_excision_feasible = true;
    let plan = plan_of(&raw, &profile);
    assert!(
        alerts(&plan).contains(&(AlertCode::GradeUnknown, Severity::Warning)),
        "on every path"
    );

    let mut raw = post(Vessel::InferiorVenaCava, Margin::R2);
    raw.metastatic_disease = true;
    raw.prior_radiotherapy = true;
    raw.organs_at_risk = smallvec![known(Organ::Liver)];
    let plan = plan_of(&raw, &profile);
    assert_eq!(
        (plan.indication, plan.setting),
        (Indication::Consider, Setting::None)
    );
    assert_eq!(trace(&plan), vec![RuleId::GateMetastatic]);
    assert_eq!(
        alerts(&plan),
        vec![(AlertCode::OutOfScopeMetastatic, Severity::Critical)]
    );
    assert!(
        plan.prescriptions.is_empty()
            && plan.volumes.is_empty()
            && plan.organ_constraints.is_empty()
    );
    assert!(plan.expected_outcomes.is_empty());
    let references: Vec<&str> = plan
        .references
        .iter()
        .map(|reference| reference.id.as_str())
        .collect();
    assert_eq!(references, vec!["ESMO2021"]);
}

/// An alert's text is the same on every plan it is attached to, so it may not state what only
/// some of those plans do: a dose, an indication or a schedule the plan in hand does not have.
#[test]
fn alert_texts_do_not_contradict_the_plans_they_sit_in() {
    let profile = profile();
    let text_of = |plan: &Plan<'_>, code: AlertCode| {
        let alert = plan
            .alerts
            .iter()
            .find(|alert| alert.code == code)
            .unwrap_or_else(|| panic!("{code:?} on this plan"));
        format!("{} {}", alert.summary, alert.detail)
    };
    // R2 in the retroperitoneum: 45 Gy (50.4 Gy at most), so no "schedule here reaches 66 Gy".
    let plan = plan_of(&post(Vessel::InferiorVenaCava, Margin::R2), &profile);
    let highest = plan
        .prescriptions
        .iter()
        .map(|rx| rx.total_dose_gy)
        .fold(0.0, f64::max);
    assert!(highest < 63.0, "{:?}", totals(&plan));
    let text = text_of(&plan, AlertCode::GrossResidualDisease);
    assert!(!text.contains("reaches 66 Gy"), "{text}");
    // Grade unknown with R1: MANDATORY (the margin rule does not read the grade), so the grade
    // alert may not say the indication is CONSIDER at most.
    let plan = plan_of(
        &with_tumor(
            post(Vessel::FemoralVein, Margin::R1),
            3.0,
            Grade::Unknown,
            Some(Depth::Superficial),
        ),
        &profile,
    );
    assert_eq!(plan.indication, Indication::Mandatory);
    let text = text_of(&plan, AlertCode::GradeUnknown);
    assert!(
        !text.contains("the indication is CONSIDER at most"),
        "{text}"
    );
    // An OTHER site is planned on the retroperitoneal rows: its alert may not point at the
    // extremity schedules, and no schedule it gets carries a boost or exceeds 50.4 Gy.
    let mut raw = post(Vessel::Other, Margin::R1);
    raw.organs_at_risk = smallvec![known(Organ::Liver)];
    let plan = plan_of(&raw, &profile);
    assert!(
        totals(&plan).iter().all(|(total, _)| *total <= 50.4),
        "{:?}",
        totals(&plan)
    );
    let text = text_of(&plan, AlertCode::SiteUnclassified);
    assert!(!text.contains("extremity schedules"), "{text}");
    assert!(text.contains("retroperitoneal"), "{text}");
}

#[test]
fn neoadjuvant_and_marginal_paths() {
    let profile = profile();
    let mut raw = pre(Vessel::UpperLimbVein);
    raw.surgery_mutilating = true;
    let plan = plan_of(&raw, &profile);
    assert_eq!(plan.setting, Setting::NeoadjuvantChemoradiation);
    assert!(plan.prescriptions[0].concurrent_chemotherapy);
    assert!(alerts(&plan).contains(&(AlertCode::PreopWoundComplications, Severity::Info)));
    // surgery_mutilating is read only before resection.
    let mut raw = post(Vessel::FemoralVein, Margin::R0);
    raw.surgery_mutilating = true;
    assert_eq!(plan_of(&raw, &profile).setting, Setting::Postoperative);
    let mut raw = pre(Vessel::GonadalVein);
    raw.resectability = known(Resectability::Unresectable);
    let plan = plan_of(&raw, &profile);
    assert_eq!(totals(&plan), vec![(50.4, true)]);
    assert!(
        !alerts(&plan)
            .iter()
            .any(|(code, _)| *code == AlertCode::PreopWoundComplications)
    );
}

#[test]
fn validation_reports_every_violation_in_field_order() {
    // 126 characters: the longest case_id allowed is 128.
    let long_id = "A-z_0.9:x".repeat(14);
    let cases: Vec<(RawCase, Vec<&str>)> = vec![
        (
            {
                let mut raw = pre(Vessel::FemoralVein);
                raw.ivc_segment = known(IvcSegment::Lower);
                raw
            },
            vec!["case.ivc_segment"],
        ),
        (
            with_tumor(
                pre(Vessel::IliacVein),
                3.0,
                Grade::Grade3,
                Some(Depth::Superficial),
            ),
            vec!["case.tumor.depth"],
        ),
        (
            with_tumor(pre(Vessel::PoplitealVein), 3.0, Grade::Grade3, None),
            vec!["case.tumor.depth"],
        ),
        (
            with_tumor(
                pre(Vessel::InferiorVenaCava),
                3.0,
                Grade::Grade3,
                Some(Depth::Deep),
            ),
            vec![],
        ),
        (
            {
                let mut raw = pre(Vessel::FemoralVein);
                raw.vessel = RawEnum::Unset;
                raw.ivc_segment = known(IvcSegment::Lower);
                raw.tumor.as_mut().unwrap().depth = RawEnum::Unset;
                raw
            },
            vec!["case.vessel"],
        ),
        (
            {
                let mut raw = pre(Vessel::FemoralVein);
                raw.tumor.as_mut().unwrap().depth = RawEnum::Unknown(9);
                raw
            },
            vec!["case.tumor.depth"],
        ),
        (
            {
                let mut raw = post(Vessel::FemoralVein, Margin::R0);
                raw.resectability = known(Resectability::Marginal);
                raw
            },
            vec!["case.resectability"],
        ),
        (
            {
                let mut raw = pre(Vessel::FemoralVein);
                raw.resection = post(Vessel::FemoralVein, Margin::R0).resection;
                raw.resection.as_mut().unwrap().margin = RawEnum::Unset;
                raw
            },
            vec!["case.resection"],
        ),
        (
            {
                let mut raw = post(Vessel::FemoralVein, Margin::R0);
                raw.phase = RawEnum::Unset;
                raw.resectability = RawEnum::Unknown(8);
                raw.resection.as_mut().unwrap().margin = RawEnum::Unset;
                raw
            },
            vec!["case.phase"],
        ),
        (
            {
                let mut raw = pre(Vessel::FemoralVein);
                raw.resectability = RawEnum::Unset;
                raw
            },
            vec!["case.resectability"],
        ),
        (
            {
                let mut raw = post(Vessel::FemoralVein, Margin::R0);
                raw.evaluation_date = "2026-13-01";
                raw.resection.as_mut().unwrap().surgery_date = "2099-01-01";
                raw
            },
            vec!["case.evaluation_date"],
        ),
        (
            {
                let mut raw = post(Vessel::FemoralVein, Margin::R0);
                raw.resection.as_mut().unwrap().vascular_management = RawEnum::Unknown(77);
                raw
            },
            vec!["case.resection.vascular_management"],
        ),
        (
            {
                let mut raw = pre(Vessel::FemoralVein);
                raw.tumor = None;
                raw.case_id = "a b";
                raw
            },
            vec!["case.case_id", "case.tumor"],
        ),
        (
            {
                let mut raw = pre(Vessel::FemoralVein);
                raw.case_id = &long_id;
                raw
            },
            vec![],
        ),
        (
            {
                let mut raw = pre(Vessel::FemoralVein);
                raw.case_id = "é";
                raw
            },
            vec!["case.case_id"],
        ),
    ];
    for (raw, expected) in cases {
        assert_eq!(violations(&raw), expected, "{raw:?}");
    }
}

fn proposal<'a>(
    case: RawCase<'a>,
    setting: Setting,
    phases: &[(PhaseKind, f64, i64)],
) -> RawProposal<'a> {
    RawProposal {
        case: Some(case),
        setting: known(setting),
        phases: phases
            .iter()
            .map(|(kind, dose, fractions)| RawPhase {
                kind: known(*kind),
                dose_per_fraction_gy: *dose,
                fractions: *fractions,
            })
            .collect(),
        planned_start_date: String::new(),
        dose_metrics: Vec::new(),
    }
}

fn findings(raw: &RawProposal) -> Vec<(FindingCode, Verdict)> {
    let profile = profile();
    let proposal =
        Proposal::validate(raw).unwrap_or_else(|violations| panic!("rejected: {violations}"));
    let report = core::check(&profile, &proposal);
    let worst = report
        .findings
        .iter()
        .map(|finding| finding.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    assert_eq!(report.verdict, worst);
    report
        .findings
        .iter()
        .map(|finding| (finding.code, finding.verdict))
        .collect()
}

fn verdict_of(raw: &RawProposal, code: FindingCode) -> Vec<Verdict> {
    findings(raw)
        .into_iter()
        .filter(|(found, _)| *found == code)
        .map(|(_, verdict)| verdict)
        .collect()
}

#[test]
fn fraction_size_boundaries() {
    use PhaseKind::Initial;
    let cases = [
        (1.4, Verdict::Fail),
        (1.48, Verdict::Fail),
        (1.495, Verdict::Review),
        (1.5, Verdict::Review),
        (1.78, Verdict::Review),
        (1.795, Verdict::Pass),
        (1.8, Verdict::Pass),
        (2.0, Verdict::Pass),
        (2.005, Verdict::Pass),
        // Just inside the 0.01 Gy tolerance is inside.
        (2.009_999_9, Verdict::Pass),
        (1.790_000_1, Verdict::Pass),
        (2.02, Verdict::Review),
        (6.0, Verdict::Review),
        (6.02, Verdict::Fail),
    ];
    for (dose, verdict) in cases {
        let raw = proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Initial, dose, 25)],
        );
        assert_eq!(
            verdict_of(&raw, FindingCode::FractionSize),
            vec![verdict],
            "{dose}"
        );
    }
    // Exactly the tolerance (0.01 Gy) from a bound or a listed schedule is outside it, the same
    // whatever the decimals come to in binary: 2.01 Gy is neither within the 2.0 Gy bound nor the
    // listed 2.0 Gy x 25, with 25 fractions or 24; 1.79 is below 1.8 likewise.
    for (dose, fractions) in [(2.01, 25), (2.01, 24), (1.79, 25), (1.79, 28)] {
        let raw = proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Initial, dose, fractions)],
        );
        assert_eq!(
            verdict_of(&raw, FindingCode::FractionSize),
            vec![Verdict::Review],
            "{dose} x {fractions}"
        );
    }
    // Totals likewise: 50.41 Gy is above the retroperitoneal 50.4 Gy cap (RX_DOSE FAIL), 50.405
    // Gy is still 50.4 Gy; a boost of 2.002 Gy per fraction equals the listed 2.0 Gy (schedule
    // PASS, so RX_DOSE PASS).
    let total_cases = [
        (
            proposal(
                pre(Vessel::InferiorVenaCava),
                Setting::Preoperative,
                &[(Initial, 2.0, 25), (PhaseKind::Boost, 0.41, 1)],
            ),
            Verdict::Fail,
        ),
        (
            proposal(
                pre(Vessel::InferiorVenaCava),
                Setting::Preoperative,
                &[(Initial, 1.8, 28), (PhaseKind::Boost, 0.005, 1)],
            ),
            Verdict::Pass,
        ),
        (
            proposal(
                post(Vessel::FemoralVein, Margin::R0),
                Setting::Postoperative,
                &[(Initial, 2.0, 25), (PhaseKind::Boost, 2.002, 5)],
            ),
            Verdict::Pass,
        ),
    ];
    for (raw, verdict) in total_cases {
        assert_eq!(
            verdict_of(&raw, FindingCode::Dose),
            vec![verdict],
            "{:?}",
            raw.phases
        );
    }
    // 2.5 Gy x 20 passes where its row lists it (extremity, postoperative, R0 not close) only.
    let listed = proposal(
        post(Vessel::FemoralVein, Margin::R0),
        Setting::Postoperative,
        &[(Initial, 2.5, 20)],
    );
    assert_eq!(
        verdict_of(&listed, FindingCode::FractionSize),
        vec![Verdict::Pass]
    );
    assert_eq!(
        verdict_of(&listed, FindingCode::Schedule),
        vec![Verdict::Pass]
    );
    assert_eq!(verdict_of(&listed, FindingCode::Dose), vec![Verdict::Pass]);
    let unlisted = proposal(
        post(Vessel::FemoralVein, Margin::R1),
        Setting::Postoperative,
        &[(Initial, 2.5, 20)],
    );
    assert_eq!(
        verdict_of(&unlisted, FindingCode::FractionSize),
        vec![Verdict::Review]
    );
    assert_eq!(
        verdict_of(&unlisted, FindingCode::Dose),
        vec![Verdict::Review],
        "E4 54.17 Gy is below MIN4 66 Gy"
    );
}

#[test]
fn total_dose_boost_start_date_and_organ_metrics() {
    use PhaseKind::{Boost, Initial};
    let retro = |dose: f64, fractions: i64| {
        proposal(
            pre(Vessel::IliacVein),
            Setting::Preoperative,
            &[(Initial, dose, fractions)],
        )
    };
    assert_eq!(
        verdict_of(&retro(1.8, 28), FindingCode::Dose),
        vec![Verdict::Pass]
    );
    assert_eq!(
        verdict_of(&retro(2.0, 20), FindingCode::Dose),
        vec![Verdict::Review],
        "40 Gy: E4 below MIN4 43.5 Gy"
    );
    assert_eq!(
        verdict_of(&retro(1.8, 22), FindingCode::Dose),
        vec![Verdict::Review],
        "39.6 Gy: E4 below MIN4 43.5 Gy"
    );
    assert_eq!(
        verdict_of(&retro(1.8, 29), FindingCode::Dose),
        vec![Verdict::Fail],
        "52.2 Gy is above the 50.4 Gy cap"
    );
    let boosted = proposal(
        pre(Vessel::FemoralVein),
        Setting::Preoperative,
        &[(Initial, 2.0, 25), (Boost, 2.0, 2)],
    );
    assert_eq!(
        verdict_of(&boosted, FindingCode::Boost),
        vec![Verdict::Review]
    );
    assert_eq!(
        verdict_of(&boosted, FindingCode::Dose),
        vec![Verdict::Review],
        "54 Gy: E3 exceeds MAX3 50, not 55"
    );
    let mut close = post(Vessel::FemoralVein, Margin::R0);
    resection(&mut close).close_margin = true;
    let sixty = proposal(
        close.clone(),
        Setting::Postoperative,
        &[(Initial, 2.0, 25), (Boost, 2.0, 5)],
    );
    assert_eq!(
        verdict_of(&sixty, FindingCode::Dose),
        vec![Verdict::Review],
        "60 Gy is not the close-margin row: E4 below MIN4 66"
    );
    assert_eq!(verdict_of(&sixty, FindingCode::Boost), vec![Verdict::Pass]);

    for (start, verdict) in [
        ("2026-11-18", Verdict::Review),
        ("2026-11-19", Verdict::Pass),
        ("2026-12-03", Verdict::Pass),
        ("2026-12-04", Verdict::Review),
    ] {
        let mut raw = proposal(
            post(Vessel::FemoralVein, Margin::R1),
            Setting::Postoperative,
            &[(Initial, 2.0, 25), (Boost, 2.0, 8)],
        );
        raw.planned_start_date = start.into();
        assert_eq!(
            verdict_of(&raw, FindingCode::StartDate),
            vec![verdict],
            "{start}"
        );
    }

    let metric = |structure: &str, metric: &str, value: f64| RawDoseMetric {
        structure: structure.into(),
        metric: metric.into(),
        value,
    };
    let raw = proposal(
        post(Vessel::InferiorVenaCava, Margin::R1),
        Setting::Postoperative,
        &[(Initial, 1.8, 25)],
    );
    // Each table: the metrics sent and the verdict expected for each, in order.
    let with_metrics = |raw: &RawProposal<'static>, table: &[(&str, &str, f64, Verdict)]| {
        let mut sent = raw.clone();
        sent.dose_metrics = table
            .iter()
            .map(|(structure, name, value, _)| metric(structure, name, *value))
            .collect();
        sent
    };
    let verdicts = |raw: &RawProposal<'static>, table: &[(&str, &str, f64, Verdict)]| {
        let expected: Vec<Verdict> = table.iter().map(|row| row.3).collect();
        let found = verdict_of(&with_metrics(raw, table), FindingCode::Oar);
        assert_eq!(found, expected, "{table:?}");
    };
    let limits = [
        ("Kidneys", "Mean[Gy]", 15.0, Verdict::Fail),
        ("Kidneys", "Mean[Gy]", 14.5, Verdict::Pass),
        ("Kidneys", "V20Gy[%]", 32.0, Verdict::Fail),
        ("Liver", "Mean[cGy]", 100.0, Verdict::Review),
        ("SpinalCord", "Max[Gy]", 49.0, Verdict::Pass),
    ];
    verdicts(&raw, &limits);
    // A [Gy] metric passes only when it is below the limit by the tolerance (value <= limit -
    // 0.01 Gy, clinical spec §12): 14.99, 14.989 and 14.9899999 Gy pass the 15 Gy kidney limit,
    // 14.9900004 does not; 49.99 and 49.985 pass the 50 Gy cord limit, 49.995 does not. Percent
    // metrics compare exactly.
    verdicts(
        &raw,
        &[
            ("Kidneys", "Mean[Gy]", 14.99, Verdict::Pass),
            ("Kidneys", "Mean[Gy]", 14.990_000_4, Verdict::Fail),
            ("Kidneys", "Mean[Gy]", 14.989, Verdict::Pass),
            ("Kidneys", "Mean[Gy]", 14.989_999_9, Verdict::Pass),
            ("SpinalCord", "Max[Gy]", 49.99, Verdict::Pass),
            ("SpinalCord", "Max[Gy]", 49.995, Verdict::Fail),
            ("SpinalCord", "Max[Gy]", 49.985, Verdict::Pass),
            ("Kidneys", "V20Gy[%]", 31.995, Verdict::Pass),
        ],
    );
    // The first table's metrics under the modifiers: a solitary kidney and prior RT.
    let mut solitary = with_metrics(&raw, &limits);
    solitary.case.as_mut().unwrap().solitary_functioning_kidney = true;
    solitary.case.as_mut().unwrap().prior_radiotherapy = true;
    assert_eq!(
        verdict_of(&solitary, FindingCode::Oar)[..3],
        [Verdict::Review, Verdict::Review, Verdict::Review]
    );
    assert_eq!(
        verdict_of(&solitary, FindingCode::Reirradiation),
        vec![Verdict::Review]
    );
}

#[test]
fn proposal_validation_paths() {
    use PhaseKind::{Boost, Initial};
    let fields = |raw: &RawProposal| -> Vec<String> {
        match Proposal::validate(raw) {
            Ok(_) => Vec::new(),
            Err(violations) => violations
                .iter()
                .map(|violation| violation.field.clone())
                .collect(),
        }
    };
    let base = || {
        proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Initial, 2.0, 25)],
        )
    };
    assert!(fields(&base()).is_empty());
    let mut raw = base();
    raw.phases.clear();
    assert_eq!(fields(&raw), vec!["phases"]);
    assert_eq!(
        fields(&proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Boost, 2.0, 5)]
        )),
        vec!["phases[0].kind"]
    );
    assert_eq!(
        fields(&proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Initial, 2.0, 5), (Initial, 2.0, 5)]
        )),
        vec!["phases[1].kind"]
    );
    // A BOOST first is the one violation: the INITIAL after it is neither a second INITIAL nor a
    // second BOOST (the spec's list is closed); a second BOOST after it is one.
    assert_eq!(
        fields(&proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Boost, 2.0, 5), (Initial, 2.0, 25)]
        )),
        vec!["phases[0].kind"]
    );
    assert_eq!(
        fields(&proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Boost, 2.0, 5), (Initial, 2.0, 25), (Boost, 2.0, 5)]
        )),
        vec!["phases[0].kind", "phases[2].kind"]
    );
    let mut raw = proposal(
        pre(Vessel::FemoralVein),
        Setting::Preoperative,
        &[(Initial, 2.0, 5), (Initial, 2.0, 25)],
    );
    raw.phases[0].kind = RawEnum::Unset;
    assert_eq!(fields(&raw), vec!["phases[0].kind"]);
    assert_eq!(
        fields(&proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Initial, 2.0, 5), (Boost, 2.0, 5), (Boost, 2.0, 5)]
        )),
        vec!["phases[2].kind"]
    );
    assert_eq!(
        fields(&proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Initial, 20.5, 61), (Boost, f64::NAN, 0)]
        )),
        vec![
            "phases[0].dose_per_fraction_gy",
            "phases[0].fractions",
            "phases[1].dose_per_fraction_gy",
            "phases[1].fractions"
        ]
    );
    let mut raw = base();
    raw.phases[0].kind = RawEnum::Unset;
    raw.setting = known(Setting::None);
    assert_eq!(fields(&raw), vec!["setting", "phases[0].kind"]);
    let mut raw = proposal(
        post(Vessel::FemoralVein, Margin::R0),
        Setting::NeoadjuvantChemoradiation,
        &[(Initial, 2.0, 25)],
    );
    raw.planned_start_date = "2026-10-21".into();
    assert_eq!(fields(&raw), vec!["setting", "planned_start_date"]);
    // The start date is checked against the surgery date only when the case is valid (clinical
    // spec §15.6): not while another field of the case is invalid, nor when the surgery date
    // itself is (invalid, or after the evaluation date), nor when the case's phase is not after
    // resection.
    let before_surgery = || {
        let mut raw = proposal(
            post(Vessel::FemoralVein, Margin::R0),
            Setting::Postoperative,
            &[(Initial, 2.0, 25)],
        );
        raw.planned_start_date = "2026-10-01".into();
        raw
    };
    let mut raw = before_surgery();
    raw.case.as_mut().unwrap().organs_at_risk = smallvec![RawEnum::Unset];
    assert_eq!(fields(&raw), vec!["case.organs_at_risk[0]"]);
    let mut raw = before_surgery();
    raw.case.as_mut().unwrap().tumor.as_mut().unwrap().size_cm = -1.0;
    raw.case.as_mut().unwrap().evaluation_date = "someday";
    assert_eq!(
        fields(&raw),
        vec!["case.evaluation_date", "case.tumor.size_cm"]
    );
    // A valid case: reported.
    assert_eq!(fields(&before_surgery()), vec!["planned_start_date"]);
    let mut raw = before_surgery();
    raw.case.as_mut().unwrap().evaluation_date = "2026-01-01";
    assert_eq!(fields(&raw), vec!["case.resection.surgery_date"]);
    let mut raw = before_surgery();
    raw.case.as_mut().unwrap().phase = RawEnum::Unknown(9);
    assert_eq!(fields(&raw), vec!["case.phase"]);
    let mut raw = base();
    raw.case.as_mut().unwrap().vessel = RawEnum::Unset;
    raw.planned_start_date = "soon".into();
    raw.dose_metrics = vec![
        RawDoseMetric {
            structure: " ".into(),
            metric: "V20Gy[%]".into(),
            value: 100.5,
        },
        RawDoseMetric {
            structure: "Liver".into(),
            metric: "Mean[Gy]".into(),
            value: -1.0,
        },
        RawDoseMetric {
            structure: "Liver".into(),
            metric: "D2cc[Gy]".into(),
            value: 150.0,
        },
    ];
    assert_eq!(
        fields(&raw),
        vec![
            "case.vessel",
            "planned_start_date",
            "dose_metrics[0].structure",
            "dose_metrics[0].value",
            "dose_metrics[1].value"
        ]
    );
    let mut raw = base();
    raw.case = None;
    assert_eq!(fields(&raw), vec!["case"]);
}

fn messages_of(raw: &RawProposal, code: FindingCode) -> Vec<(Verdict, String)> {
    let profile = profile();
    let proposal =
        Proposal::validate(raw).unwrap_or_else(|violations| panic!("rejected: {violations}"));
    core::check(&profile, &proposal)
        .findings
        .into_iter()
        .filter(|finding| finding.code == code)
        .map(|finding| (finding.verdict, finding.message))
        .collect()
}

#[test]
fn finding_messages_never_print_two_differently_judged_doses_alike() {
    use PhaseKind::{Boost, Initial};
    let r1 = || post(Vessel::FemoralVein, Margin::R1);
    let dose = |phases: &[(PhaseKind, f64, i64)]| {
        messages_of(
            &proposal(r1(), Setting::Postoperative, phases),
            FindingCode::Dose,
        )
    };
    // 66.0099 Gy is within the tolerance of the 66 Gy cap; 66.01 Gy exceeds it.
    let (verdict, message) = dose(&[(Initial, 2.0003, 33)]).remove(0);
    assert_eq!(verdict, Verdict::Review, "{message}");
    assert!(message.contains("total 66.0099 Gy"), "{message}");
    let (verdict, message) = dose(&[(Initial, 6.001, 11)]).remove(0);
    assert_eq!(verdict, Verdict::Fail, "{message}");
    assert!(message.contains("total 66.011 Gy"), "{message}");
    assert!(message.contains("exceeds the 66.00 Gy cap"), "{message}");
    // Phases that match a schedule within the tolerance pass whatever their rounding adds up to
    // (RX_DOSE is PASS whenever RX_SCHEDULE is).
    let (verdict, message) = dose(&[(Initial, 2.0, 25), (Boost, 2.00125, 8)]).remove(0);
    assert_eq!(verdict, Verdict::Pass, "{message}");
    assert!(message.contains("total 66.01 Gy"), "{message}");
    let fraction = |dose: f64| {
        messages_of(
            &proposal(
                pre(Vessel::FemoralVein),
                Setting::Preoperative,
                &[(Initial, dose, 25)],
            ),
            FindingCode::FractionSize,
        )
    };
    assert_eq!(
        fraction(2.009_999_9),
        vec![(
            Verdict::Pass,
            "Phase 1 (INITIAL): 2.0099999 Gy per fraction × 25: inside 1.8-2 Gy.".to_string()
        )]
    );
    assert_eq!(
        fraction(2.01),
        vec![(
            Verdict::Review,
            "Phase 1 (INITIAL): 2.01 Gy per fraction × 25: outside 1.8-2 Gy, inside 1.5-6 Gy."
                .to_string()
        )]
    );
    assert_eq!(
        fraction(1.8)[0].1,
        "Phase 1 (INITIAL): 1.80 Gy per fraction × 25: inside 1.8-2 Gy."
    );
}

/// The whole finding list of a check, for tables that state every finding in §12 order.
fn verdict_list(raw: &RawProposal) -> (Verdict, Vec<(FindingCode, Verdict)>) {
    let found = findings(raw);
    let worst = found
        .iter()
        .map(|(_, verdict)| *verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    (worst, found)
}

#[test]
fn a_completed_preoperative_course_before_and_after_resection() {
    let profile = profile();
    // Before resection: no second course, whatever the resectability; surgery is next.
    for resectability in [
        Resectability::Resectable,
        Resectability::Marginal,
        Resectability::Unresectable,
    ] {
        let mut raw = pre(Vessel::FemoralVein);
        raw.resectability = known(resectability);
        raw.surgery_mutilating = resectability == Resectability::Unresectable;
        raw.preoperative_rt_delivered = true;
        let plan = plan_of(&raw, &profile);
        assert_eq!(
            (plan.indication, plan.setting),
            (Indication::NotIndicated, Setting::None),
            "{resectability:?}"
        );
        assert_eq!(
            trace(&plan),
            vec![RuleId::IndAfterPreopRt, RuleId::AlertReferenceCenter]
        );
        assert_eq!(
            alerts(&plan),
            vec![
                (AlertCode::ReferenceCenterSurgery, Severity::Info),
                (AlertCode::PreopRtComplete, Severity::Info),
            ]
        );
        assert!(plan.prescriptions.is_empty() && plan.volumes.is_empty());
    }
    // Preoperative RT before resection at a retroperitoneal site: no cap, no RPS alert (RT is
    // not on the table).
    let mut raw = pre(Vessel::InferiorVenaCava);
    raw.preoperative_rt_delivered = true;
    raw.organs_at_risk = smallvec![known(Organ::Duodenum)];
    let plan = plan_of(&raw, &profile);
    assert_eq!(
        trace(&plan),
        vec![RuleId::IndAfterPreopRt, RuleId::AlertReferenceCenter]
    );

    // After resection: R0 (close or not, compartmental or not) is complete; R1/R2 is an MDT
    // decision without a prescription; R2 also gets the gross-residual alert.
    for (margin, close, compartmental) in [
        (Margin::R0, false, false),
        (Margin::R0, true, false),
        (Margin::R0, false, true),
    ] {
        let mut raw = post(Vessel::FemoralVein, margin);
        resection(&mut raw).close_margin = close;
        resection(&mut raw).compartmental_contained = compartmental;
        raw.preoperative_rt_delivered = true;
        let plan = plan_of(&raw, &profile);
        assert_eq!(
            (plan.indication, plan.setting),
            (Indication::NotIndicated, Setting::None)
        );
        assert_eq!(trace(&plan), vec![RuleId::IndAfterPreopRt]);
        assert_eq!(
            alerts(&plan),
            vec![(AlertCode::PreopRtComplete, Severity::Info)]
        );
        assert_eq!(plan.start_window, StartWindow::NotApplicable);
    }
    let mut raw = post(Vessel::PoplitealVein, Margin::R2);
    raw.preoperative_rt_delivered = true;
    let plan = plan_of(&raw, &profile);
    assert_eq!(
        (plan.indication, plan.setting),
        (Indication::Consider, Setting::None)
    );
    assert_eq!(trace(&plan), vec![RuleId::IndAfterPreopRt]);
    let codes: Vec<AlertCode> = plan.alerts.iter().map(|alert| alert.code).collect();
    assert_eq!(
        codes,
        vec![
            AlertCode::PostopBoostNotRoutine,
            AlertCode::GrossResidualDisease
        ],
        "in firing order"
    );
    assert!(plan.prescriptions.is_empty());
    // Re-excision still comes first after a preoperative course.
    resection(&mut raw).re_excision_feasible = true;
    let plan = plan_of(&raw, &profile);
    assert_eq!(trace(&plan), vec![RuleId::IndReexcision]);
    // An IVC after a preoperative course: the IVC outcome still fires, nothing else.
    let mut raw = post(Vessel::InferiorVenaCava, Margin::R1);
    raw.preoperative_rt_delivered = true;
    raw.organs_at_risk = smallvec![known(Organ::Liver)];
    let plan = plan_of(&raw, &profile);
    assert_eq!(
        trace(&plan),
        vec![RuleId::IndAfterPreopRt, RuleId::OutcomeIvcRenal]
    );
    assert_eq!(
        alerts(&plan),
        vec![(AlertCode::PostopBoostNotRoutine, Severity::Warning)]
    );
    // With earlier (re-)irradiation as well, both are said.
    raw.prior_radiotherapy = true;
    let plan = plan_of(&raw, &profile);
    assert_eq!(
        trace(&plan),
        vec![
            RuleId::IndAfterPreopRt,
            RuleId::ModReirradiation,
            RuleId::OutcomeIvcRenal
        ]
    );
}

#[test]
fn marginal_resectability_by_grade() {
    let profile = profile();
    for (grade, indication, option_alert) in [
        (Grade::Grade1, Indication::Consider, false),
        (Grade::Grade2, Indication::Indicated, true),
        (Grade::Grade3, Indication::Indicated, true),
        (Grade::Unknown, Indication::Indicated, true),
    ] {
        let mut raw = with_tumor(pre(Vessel::FemoralVein), 3.0, grade, Some(Depth::Deep));
        raw.resectability = known(Resectability::Marginal);
        let plan = plan_of(&raw, &profile);
        assert_eq!(plan.indication, indication, "{grade:?}");
        assert_eq!(plan.setting, Setting::Preoperative);
        assert_eq!(trace(&plan)[0], RuleId::IndMarginal);
        assert_eq!(
            alerts(&plan).contains(&(AlertCode::ChemoradiationOption, Severity::Info)),
            option_alert,
            "{grade:?}"
        );
        assert_eq!(totals(&plan), vec![(50.0, true)]);
    }
    // A retroperitoneal site is capped at CONSIDER whatever the grade.
    let mut raw = pre(Vessel::IliacVein);
    raw.resectability = known(Resectability::Marginal);
    let plan = plan_of(&raw, &profile);
    assert_eq!(plan.indication, Indication::Consider);
    assert_eq!(
        &trace(&plan)[..2],
        &[RuleId::IndMarginal, RuleId::ModRpsCap]
    );
}

#[test]
fn unverified_duodenum_and_missing_constraints() {
    let profile = profile();
    let oar_rules = |plan: &Plan<'_>| -> Vec<RuleId> {
        trace(plan)
            .into_iter()
            .filter(|rule| {
                matches!(
                    rule,
                    RuleId::OarConstraints | RuleId::OarUnverified | RuleId::AlertNoOarConstraints
                )
            })
            .collect()
    };
    // DUODENUM alone at a retroperitoneal site: no row, the unverified-limit alert, and the
    // missing-constraints warning, in that order.
    let mut raw = pre(Vessel::RenalVein);
    raw.organs_at_risk = smallvec![known(Organ::Duodenum)];
    let plan = plan_of(&raw, &profile);
    assert!(plan.organ_constraints.is_empty());
    assert_eq!(
        oar_rules(&plan),
        vec![RuleId::OarUnverified, RuleId::AlertNoOarConstraints]
    );
    assert!(alerts(&plan).contains(&(AlertCode::OarLimitNotVerified, Severity::Info)));
    assert!(alerts(&plan).contains(&(AlertCode::NoOarConstraints, Severity::Warning)));
    assert!(
        alerts(&plan).contains(&(AlertCode::OarDoseModification, Severity::Warning)),
        "the duodenum is abdominal"
    );
    // DUODENUM with a verified organ: rows, and the unverified-limit alert only.
    raw.organs_at_risk = smallvec![known(Organ::Duodenum), known(Organ::Stomach)];
    let plan = plan_of(&raw, &profile);
    assert_eq!(
        oar_rules(&plan),
        vec![RuleId::OarConstraints, RuleId::OarUnverified]
    );
    // DUODENUM at an extremity site: unverified, but no truncal-target warning.
    let mut raw = pre(Vessel::FemoralVein);
    raw.organs_at_risk = smallvec![known(Organ::Duodenum)];
    let plan = plan_of(&raw, &profile);
    assert_eq!(oar_rules(&plan), vec![RuleId::OarUnverified]);
    // A solitary kidney with only the kidneys listed: the kidney rows are suppressed, so the
    // retroperitoneal plan has no constraint left.
    let mut raw = pre(Vessel::InferiorVenaCava);
    raw.organs_at_risk = smallvec![known(Organ::KidneyLeft), known(Organ::KidneyRight)];
    raw.solitary_functioning_kidney = true;
    let plan = plan_of(&raw, &profile);
    assert!(plan.organ_constraints.is_empty());
    assert_eq!(oar_rules(&plan), vec![RuleId::AlertNoOarConstraints]);
    assert!(alerts(&plan).contains(&(AlertCode::SolitaryKidney, Severity::Critical)));
    // OTHER with no organs: planned on the retroperitoneal rows, so warned.
    let mut raw = post(Vessel::Other, Margin::R1);
    raw.organs_at_risk = SmallVec::new();
    let plan = plan_of(&raw, &profile);
    assert_eq!(oar_rules(&plan), vec![RuleId::AlertNoOarConstraints]);
    // An extremity with no organs: nothing to say.
    let plan = plan_of(&post(Vessel::FemoralVein, Margin::R1), &profile);
    assert!(oar_rules(&plan).is_empty());
    // RT not on the table: no constraint rule of any kind.
    let mut raw = post(Vessel::InferiorVenaCava, Margin::R0);
    raw.preoperative_rt_delivered = true;
    raw.organs_at_risk = smallvec![known(Organ::Duodenum)];
    let plan = plan_of(&raw, &profile);
    assert!(oar_rules(&plan).is_empty());
    // The thoracic and pelvic organs have rows and are not abdominal.
    let mut raw = pre(Vessel::IliacVein);
    raw.organs_at_risk = smallvec![
        known(Organ::Bladder),
        known(Organ::Heart),
        known(Organ::Lungs),
        known(Organ::Esophagus),
    ];
    let plan = plan_of(&raw, &profile);
    let rows: Vec<(&str, &str, f64)> = plan
        .organ_constraints
        .iter()
        .map(|row| (row.structure, row.metric, row.limit))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("Bladder", "Max[Gy]", 65.0),
            ("Esophagus", "Mean[Gy]", 34.0),
            ("Heart", "V25Gy[%]", 10.0),
            ("Lungs", "V20Gy[%]", 30.0),
        ]
    );
    assert!(
        plan.organ_constraints
            .iter()
            .all(|row| !row.note.is_empty())
    );
    assert!(!alerts(&plan).contains(&(AlertCode::OarDoseModification, Severity::Warning)));
}

#[test]
fn unclassified_sites_use_the_retroperitoneal_schedules() {
    use PhaseKind::{Boost, Initial};
    let profile = profile();
    let mut raw = post(Vessel::Other, Margin::R1);
    raw.organs_at_risk = smallvec![known(Organ::SmallBowel), known(Organ::Stomach)];
    let plan = plan_of(&raw, &profile);
    assert_eq!(totals(&plan), vec![(45.0, true), (50.4, false)]);
    assert!(
        plan.prescriptions
            .iter()
            .all(|rx| rx.phases.iter().all(|phase| phase.kind == Initial))
    );
    // The site group stays OTHER: no RPS alert, the local-control outcome, no wound alert.
    assert!(
        !alerts(&plan)
            .iter()
            .any(|(code, _)| *code == AlertCode::RpsPostopRtNotRecommended)
    );
    assert!(trace(&plan).contains(&RuleId::OutcomeLocalControl));
    let plan = plan_of(&pre(Vessel::Other), &profile);
    assert!(!trace(&plan).contains(&RuleId::AlertPreopWound));
    // The check judges an OTHER site on the same rows: a boost fails, 66 Gy fails.
    let checked = proposal(
        raw,
        Setting::Postoperative,
        &[(Initial, 2.0, 25), (Boost, 2.0, 8)],
    );
    assert_eq!(
        verdict_of(&checked, FindingCode::Boost),
        vec![Verdict::Fail]
    );
    assert_eq!(verdict_of(&checked, FindingCode::Dose), vec![Verdict::Fail]);
}

#[test]
fn dose_check_worked_examples_and_edges() {
    use FindingCode as F;
    use PhaseKind::{Boost, Initial};
    use Verdict::{Fail, Pass, Review};
    let after_preop = |margin: Margin| {
        let mut raw = post(Vessel::FemoralVein, margin);
        raw.preoperative_rt_delivered = true;
        raw
    };
    // Femoral R1 after a completed preoperative course, 2 x 8 Gy: REVIEW (E3 16 Gy).
    let raw = proposal(
        after_preop(Margin::R1),
        Setting::Postoperative,
        &[(Initial, 2.0, 8)],
    );
    assert_eq!(
        verdict_list(&raw),
        (
            Review,
            vec![
                (F::SettingMismatch, Review),
                (F::Schedule, Review),
                (F::Dose, Review),
                (F::AfterPreopRt, Review),
                (F::FractionSize, Pass),
            ]
        )
    );
    // The full 66 Gy on top of it: E3 66 exceeds 1.10 x 16 = 17.6 Gy.
    let raw = proposal(
        after_preop(Margin::R1),
        Setting::Postoperative,
        &[(Initial, 2.0, 25), (Boost, 2.0, 8)],
    );
    assert_eq!(verdict_of(&raw, F::Dose), vec![Fail]);
    // The 17.6 Gy edge: 2 x 8 + 1 x 2 Gy is E3 17.6 (REVIEW), 2 x 8 + 1 x 3 Gy is 18.4 (FAIL).
    for (boost_fractions, verdict) in [(2, Review), (3, Fail)] {
        let raw = proposal(
            after_preop(Margin::R1),
            Setting::Postoperative,
            &[(Initial, 2.0, 8), (Boost, 1.0, boost_fractions)],
        );
        assert_eq!(
            verdict_of(&raw, F::Dose),
            vec![verdict],
            "{boost_fractions}"
        );
    }
    // After R0 and a preoperative course any proposal is not indicated.
    let raw = proposal(
        after_preop(Margin::R0),
        Setting::Postoperative,
        &[(Initial, 2.0, 5)],
    );
    assert_eq!(verdict_list(&raw).0, Fail);
    assert_eq!(verdict_of(&raw, F::NotIndicated), vec![Fail]);
    // A retroperitoneal site after a preoperative course: any further dose fails.
    let mut raw = post(Vessel::InferiorVenaCava, Margin::R1);
    raw.preoperative_rt_delivered = true;
    let raw = proposal(raw, Setting::Postoperative, &[(Initial, 1.8, 2)]);
    assert_eq!(verdict_of(&raw, F::Dose), vec![Fail]);
    // A preoperative course done, surgery pending, and another preoperative course proposed.
    let mut raw = pre(Vessel::FemoralVein);
    raw.preoperative_rt_delivered = true;
    let raw = proposal(raw, Setting::Preoperative, &[(Initial, 2.0, 25)]);
    assert_eq!(
        verdict_list(&raw),
        (
            Fail,
            vec![
                (F::NotIndicated, Fail),
                (F::SettingMismatch, Review),
                (F::Schedule, Review),
                (F::Dose, Fail),
                (F::AfterPreopRt, Review),
                (F::FractionSize, Pass),
            ]
        )
    );

    // Femoral R1, 11 x 6 Gy: E3 118.8 exceeds 1.10 x 66 = 72.6 Gy.
    let raw = proposal(
        post(Vessel::FemoralVein, Margin::R1),
        Setting::Postoperative,
        &[(Initial, 6.0, 11)],
    );
    assert_eq!(
        verdict_list(&raw),
        (
            Fail,
            vec![
                (F::Schedule, Review),
                (F::Dose, Fail),
                (F::FractionSize, Review)
            ]
        )
    );
    // IVC preoperative 8 x 6 Gy: E3 86.4 exceeds 1.10 x 50 = 55 Gy.
    let raw = proposal(
        pre(Vessel::InferiorVenaCava),
        Setting::Preoperative,
        &[(Initial, 6.0, 8)],
    );
    assert_eq!(verdict_of(&raw, F::Dose), vec![Fail]);
    // Femoral preoperative 5 x 6 Gy: E3 54 exceeds 50, not 55.
    let raw = proposal(
        pre(Vessel::FemoralVein),
        Setting::Preoperative,
        &[(Initial, 6.0, 5)],
    );
    assert_eq!(verdict_of(&raw, F::Dose), vec![Review]);
    // E3 exactly at 1.10 x MAX3: femoral preoperative 20 x 2.5 Gy is E3 55.0 = 1.10 x 50 (not
    // beyond it: REVIEW); 20 x 2.51 Gy is E3 55.3 (FAIL).
    for (dose, verdict) in [(2.5, Review), (2.51, Fail)] {
        let raw = proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Initial, dose, 20)],
        );
        assert_eq!(verdict_of(&raw, F::Dose), vec![verdict], "{dose}");
    }
    // Femoral R0 not close, 20 x 2.5 Gy: a listed schedule (E4 54.17 = MIN4).
    let raw = proposal(
        post(Vessel::FemoralVein, Margin::R0),
        Setting::Postoperative,
        &[(Initial, 2.5, 20)],
    );
    assert_eq!(
        verdict_list(&raw),
        (
            Pass,
            vec![
                (F::Schedule, Pass),
                (F::Dose, Pass),
                (F::FractionSize, Pass)
            ]
        )
    );
    // A schedule's phases in another order are not that schedule.
    let raw = proposal(
        post(Vessel::FemoralVein, Margin::R0),
        Setting::Postoperative,
        &[(Initial, 2.0, 5), (Boost, 2.0, 25)],
    );
    assert_eq!(verdict_of(&raw, F::Schedule), vec![Review]);

    // Fraction-size edges: inside 1.8-2.0 within the tolerance, then the review band.
    for (dose, verdict) in [
        (1.795, Pass),
        (1.805, Pass),
        (2.005, Pass),
        (1.79, Review),
        (2.01, Review),
        (1.495, Review),
        (1.49, Fail),
        (6.005, Review),
        (6.01, Fail),
    ] {
        let raw = proposal(
            pre(Vessel::FemoralVein),
            Setting::Preoperative,
            &[(Initial, dose, 25)],
        );
        assert_eq!(verdict_of(&raw, F::FractionSize), vec![verdict], "{dose}");
    }
    // The retroperitoneal cap's edge: 50.405 Gy does not exceed 50.4, 50.41 Gy does.
    for (boost, verdict) in [(0.005, Pass), (0.01, Fail)] {
        let raw = proposal(
            pre(Vessel::InferiorVenaCava),
            Setting::Preoperative,
            &[(Initial, 1.8, 28), (Boost, boost, 1)],
        );
        assert_eq!(verdict_of(&raw, F::Dose), vec![verdict], "{boost}");
    }
}

#[test]
fn dose_finding_messages_state_the_numbers_judged() {
    use PhaseKind::Initial;
    let messages = messages_of(
        &proposal(
            post(Vessel::FemoralVein, Margin::R1),
            Setting::Postoperative,
            &[(Initial, 6.0, 11)],
        ),
        FindingCode::Dose,
    );
    let (verdict, message) = &messages[0];
    assert_eq!(*verdict, Verdict::Fail);
    for part in [
        "total 66.00 Gy",
        "E3 = 118.80 Gy",
        "late-tissue alpha/beta 3",
        "E4 = 110.00 Gy",
        "tumour alpha/beta 4",
        "MAX3 = 66.00 Gy",
        "MIN4 = 66.00 Gy",
        "1.10 x MAX3 = 72.60 Gy",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    let mut raw = post(Vessel::FemoralVein, Margin::R1);
    raw.preoperative_rt_delivered = true;
    let messages = messages_of(
        &proposal(raw, Setting::Postoperative, &[(Initial, 2.0, 8)]),
        FindingCode::Dose,
    );
    let (verdict, message) = &messages[0];
    assert_eq!(*verdict, Verdict::Review);
    for part in ["E3 = 16.00 Gy", "16.00 Gy late-tissue EQD2", "= 17.60 Gy"] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

#[test]
fn structure_names_are_bounded_and_free_of_control_characters() {
    use PhaseKind::Initial;
    let mut raw = proposal(
        pre(Vessel::FemoralVein),
        Setting::Preoperative,
        &[(Initial, 2.0, 25)],
    );
    let metric = |structure: String| RawDoseMetric {
        structure,
        metric: "Max[Gy]".into(),
        value: 10.0,
    };
    raw.dose_metrics = vec![
        metric("SpinalCord".into()),
        metric("Heart\u{1b}[2J".into()),
        metric("Lungs\nRX_OAR PASS".into()),
        metric("x".repeat(65)),
        metric("Ösophagus".into()),
    ];
    let found: Vec<String> = match Proposal::validate(&raw) {
        Ok(_) => Vec::new(),
        Err(violations) => violations
            .iter()
            .map(|violation| violation.field.clone())
            .collect(),
    };
    assert_eq!(
        found,
        vec![
            "dose_metrics[1].structure",
            "dose_metrics[2].structure",
            "dose_metrics[3].structure",
        ]
    );
}

#[test]
fn organ_metrics_on_the_2026_2_rows() {
    use PhaseKind::Initial;
    let metric = |structure: &str, metric: &str, value: f64| RawDoseMetric {
        structure: structure.into(),
        metric: metric.into(),
        value,
    };
    let mut raw = proposal(
        pre(Vessel::InferiorVenaCava),
        Setting::Preoperative,
        &[(Initial, 1.8, 28)],
    );
    let table = [
        ("Stomach", "D100%[Gy]", 44.99, Verdict::Pass),
        ("Stomach", "D100%[Gy]", 44.995, Verdict::Fail),
        ("Stomach", "Max[Gy]", 50.0, Verdict::Review),
        ("Liver", "Mean[Gy]", 10.0, Verdict::Review),
        ("Liver-GTV", "Mean[Gy]", 30.0, Verdict::Fail),
        ("Bladder", "Max[Gy]", 64.99, Verdict::Pass),
        ("Heart", "V25Gy[%]", 10.0, Verdict::Fail),
        ("Heart", "V25Gy[%]", 9.999, Verdict::Pass),
        ("Lungs", "V20Gy[%]", 29.0, Verdict::Pass),
        ("Esophagus", "Mean[Gy]", 34.5, Verdict::Fail),
        ("Duodenum", "Max[Gy]", 40.0, Verdict::Review),
    ];
    raw.dose_metrics = table
        .iter()
        .map(|(structure, name, value, _)| metric(structure, name, *value))
        .collect();
    let expected: Vec<Verdict> = table.iter().map(|row| row.3).collect();
    assert_eq!(verdict_of(&raw, FindingCode::Oar), expected);
}
