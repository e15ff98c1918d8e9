//! Proto ↔ core. Incoming messages are destructured exhaustively (a new proto field is a compile
//! error here) into the core's raw types, which the core validates; core results are encoded
//! into proto messages. Nothing here decides anything clinical.

use crate::core::{
    self,
    case::{
        Depth, Grade, IvcSegment, Margin, Organ, RawCase, RawEnum, RawResection, RawTumor,
        Resectability, SiteGroup, TreatmentPhase, VascularManagement, Vessel,
    },
    check::{RawDoseMetric, RawPhase, RawProposal},
    ids::{Severity, Verdict},
    plan::{Indication, PhaseKind, Setting, StartWindow, WindowStatus},
};
use crate::pb;

fn raw_enum<P, T>(value: i32, known: impl Fn(P) -> Option<T>) -> RawEnum<T>
where
    P: TryFrom<i32>,
{
    if value == 0 {
        return RawEnum::Unset;
    }
    match P::try_from(value).ok().and_then(known) {
        Some(value) => RawEnum::Known(value),
        None => RawEnum::Unknown(value),
    }
}

fn vessel(value: pb::Vessel) -> Option<Vessel> {
    match value {
        pb::Vessel::Unspecified => None,
        pb::Vessel::InferiorVenaCava => Some(Vessel::InferiorVenaCava),
        pb::Vessel::RenalVein => Some(Vessel::RenalVein),
        pb::Vessel::GonadalVein => Some(Vessel::GonadalVein),
        pb::Vessel::IliacVein => Some(Vessel::IliacVein),
        pb::Vessel::FemoralVein => Some(Vessel::FemoralVein),
        pb::Vessel::PoplitealVein => Some(Vessel::PoplitealVein),
        pb::Vessel::SaphenousVein => Some(Vessel::SaphenousVein),
        pb::Vessel::UpperLimbVein => Some(Vessel::UpperLimbVein),
        pb::Vessel::Other => Some(Vessel::Other),
    }
}

fn ivc_segment(value: pb::IvcSegment) -> Option<IvcSegment> {
    match value {
        pb::IvcSegment::Unspecified => None,
        pb::IvcSegment::Lower => Some(IvcSegment::Lower),
        pb::IvcSegment::Middle => Some(IvcSegment::Middle),
        pb::IvcSegment::Upper => Some(IvcSegment::Upper),
    }
}

fn grade(value: pb::Grade) -> Option<Grade> {
    match value {
        pb::Grade::Unspecified => None,
        pb::Grade::Grade1 => Some(Grade::Grade1),
        pb::Grade::Grade2 => Some(Grade::Grade2),
        pb::Grade::Grade3 => Some(Grade::Grade3),
        pb::Grade::Unknown => Some(Grade::Unknown),
    }
}

fn depth(value: pb::Depth) -> Option<Depth> {
    match value {
        pb::Depth::Unspecified => None,
        pb::Depth::Superficial => Some(Depth::Superficial),
        pb::Depth::Deep => Some(Depth::Deep),
    }
}

fn treatment_phase(value: pb::TreatmentPhase) -> Option<TreatmentPhase> {
    match value {
        pb::TreatmentPhase::Unspecified => None,
        pb::TreatmentPhase::PreResection => Some(TreatmentPhase::PreResection),
        pb::TreatmentPhase::PostResection => Some(TreatmentPhase::PostResection),
    }
}

fn resectability(value: pb::Resectability) -> Option<Resectability> {
    match value {
        pb::Resectability::Unspecified => None,
        pb::Resectability::Resectable => Some(Resectability::Resectable),
        pb::Resectability::Marginal => Some(Resectability::Marginal),
        pb::Resectability::Unresectable => Some(Resectability::Unresectable),
    }
}

fn margin(value: pb::Margin) -> Option<Margin> {
    match value {
        pb::Margin::Unspecified => None,
        pb::Margin::R0 => Some(Margin::R0),
        pb::Margin::R1 => Some(Margin::R1),
        pb::Margin::R2 => Some(Margin::R2),
    }
}

fn vascular_management(value: pb::VascularManagement) -> Option<VascularManagement> {
    match value {
        pb::VascularManagement::Unspecified => None,
        pb::VascularManagement::None => Some(VascularManagement::None),
        pb::VascularManagement::Ligation => Some(VascularManagement::Ligation),
        pb::VascularManagement::PrimaryRepair => Some(VascularManagement::PrimaryRepair),
        pb::VascularManagement::Patch => Some(VascularManagement::Patch),
        pb::VascularManagement::Graft => Some(VascularManagement::Graft),
    }
}

fn organ(value: pb::Organ) -> Option<Organ> {
    match value {
        pb::Organ::Unspecified => None,
        pb::Organ::KidneyLeft => Some(Organ::KidneyLeft),
        pb::Organ::KidneyRight => Some(Organ::KidneyRight),
        pb::Organ::Liver => Some(Organ::Liver),
        pb::Organ::SmallBowel => Some(Organ::SmallBowel),
        pb::Organ::LargeBowel => Some(Organ::LargeBowel),
        pb::Organ::Stomach => Some(Organ::Stomach),
        pb::Organ::SpinalCord => Some(Organ::SpinalCord),
        pb::Organ::Duodenum => Some(Organ::Duodenum),
        pb::Organ::Heart => Some(Organ::Heart),
        pb::Organ::Lungs => Some(Organ::Lungs),
        pb::Organ::Esophagus => Some(Organ::Esophagus),
        pb::Organ::Bladder => Some(Organ::Bladder),
    }
}

fn setting_in(value: pb::Setting) -> Option<Setting> {
    match value {
        pb::Setting::Unspecified => None,
        pb::Setting::None => Some(Setting::None),
        pb::Setting::Preoperative => Some(Setting::Preoperative),
        pb::Setting::Postoperative => Some(Setting::Postoperative),
        pb::Setting::NeoadjuvantChemoradiation => Some(Setting::NeoadjuvantChemoradiation),
    }
}

fn phase_kind_in(value: pb::PhaseKind) -> Option<PhaseKind> {
    match value {
        pb::PhaseKind::Unspecified => None,
        pb::PhaseKind::Initial => Some(PhaseKind::Initial),
        pb::PhaseKind::Boost => Some(PhaseKind::Boost),
    }
}

/// A proto case as raw core values (no validation here: the core does it).
pub fn raw_case(case: &pb::Case) -> RawCase<'_> {
    let pb::Case {
        case_id,
        evaluation_date,
        vessel,
        ivc_segment,
        tumor,
        phase,
        resectability,
        surgery_mutilating,
        resection,
        organs_at_risk,
        solitary_functioning_kidney,
        prior_radiotherapy,
        metastatic_disease,
        preoperative_rt_delivered,
    } = case;
    RawCase {
        case_id,
        evaluation_date,
        vessel: raw_vessel(*vessel),
        ivc_segment: raw_ivc_segment(*ivc_segment),
        tumor: tumor.as_ref().map(raw_tumor),
        phase: raw_treatment_phase(*phase),
        resectability: raw_resectability(*resectability),
        surgery_mutilating: *surgery_mutilating,
        resection: resection.as_ref().map(|resection| {
            let pb::Resection {
                margin,
                close_margin,
                surgery_date,
                compartmental_contained,
                re_excision_feasible,
                hematoma_present,
                vascular_management,
                periaortic_dissection,
            } = resection;
            RawResection {
                margin: raw_margin(*margin),
                close_margin: *close_margin,
                surgery_date,
                compartmental_contained: *compartmental_contained,
                re_excision_feasible: *re_excision_feasible,
                hematoma_present: *hematoma_present,
                vascular_management: raw_vascular_management(*vascular_management),
                periaortic_dissection: *periaortic_dissection,
            }
        }),
        organs_at_risk: organs_at_risk
            .iter()
            .map(|value| raw_organ(*value))
            .collect(),
        solitary_functioning_kidney: *solitary_functioning_kidney,
        prior_radiotherapy: *prior_radiotherapy,
        metastatic_disease: *metastatic_disease,
        preoperative_rt_delivered: *preoperative_rt_delivered,
    }
}

/// A proto tumour as raw core values.
pub fn raw_tumor(tumor: &pb::Tumor) -> RawTumor {
    let pb::Tumor {
        size_cm,
        grade: grade_value,
        depth: depth_value,
    } = tumor;
    RawTumor {
        size_cm: *size_cm,
        grade: raw_enum(*grade_value, grade),
        depth: raw_enum(*depth_value, depth),
    }
}

/// `Case.vessel` as sent (an open enum: any number may arrive).
pub fn raw_vessel(value: i32) -> RawEnum<Vessel> {
    raw_enum(value, vessel)
}

/// `Case.ivc_segment` as sent.
pub fn raw_ivc_segment(value: i32) -> RawEnum<IvcSegment> {
    raw_enum(value, ivc_segment)
}

/// `Case.phase` as sent.
pub fn raw_treatment_phase(value: i32) -> RawEnum<TreatmentPhase> {
    raw_enum(value, treatment_phase)
}

/// `Case.resectability` as sent.
pub fn raw_resectability(value: i32) -> RawEnum<Resectability> {
    raw_enum(value, resectability)
}

/// `Resection.margin` as sent.
pub fn raw_margin(value: i32) -> RawEnum<Margin> {
    raw_enum(value, margin)
}

/// `Resection.vascular_management` as sent.
pub fn raw_vascular_management(value: i32) -> RawEnum<VascularManagement> {
    raw_enum(value, vascular_management)
}

/// One of `Case.organs_at_risk` as sent.
pub fn raw_organ(value: i32) -> RawEnum<Organ> {
    raw_enum(value, organ)
}

/// Validates the case of a `RecommendRequest` (paths `case.…`).
pub fn case_from_request(
    request: &pb::RecommendRequest,
) -> Result<core::Case<'_>, core::Violations> {
    let pb::RecommendRequest { case } = request;
    case_from_raw(case.as_ref().map(raw_case).as_ref())
}

/// Validates a request's case given as raw core values (`None`: the request has no case).
pub fn case_from_raw<'a>(case: Option<&RawCase<'a>>) -> Result<core::Case<'a>, core::Violations> {
    match case {
        Some(case) => core::Case::validate(case, "case"),
        None => {
            let mut violations = core::Violations::default();
            violations.push("case", "is required");
            Err(violations)
        }
    }
}

/// A proto check request as raw core values.
pub fn raw_proposal(request: &pb::CheckPrescriptionRequest) -> RawProposal<'_> {
    let pb::CheckPrescriptionRequest {
        case,
        setting,
        phases,
        planned_start_date,
        dose_metrics,
    } = request;
    RawProposal {
        case: case.as_ref().map(raw_case),
        setting: raw_enum(*setting, setting_in),
        phases: phases
            .iter()
            .map(|phase| {
                // dose_gy is output only: a request's value is ignored, the core recomputes it.
                let pb::Phase {
                    kind,
                    dose_per_fraction_gy,
                    fractions,
                    dose_gy: _,
                } = phase;
                RawPhase {
                    kind: raw_enum(*kind, phase_kind_in),
                    dose_per_fraction_gy: *dose_per_fraction_gy,
                    fractions: i64::from(*fractions),
                }
            })
            .collect(),
        planned_start_date: planned_start_date.clone(),
        dose_metrics: dose_metrics
            .iter()
            .map(|metric| {
                let pb::DoseMetric {
                    structure,
                    metric,
                    value,
                } = metric;
                RawDoseMetric {
                    structure: structure.clone(),
                    metric: metric.clone(),
                    value: *value,
                }
            })
            .collect(),
    }
}

pub(crate) fn indication_out(value: Indication) -> pb::Indication {
    match value {
        Indication::Indicated => pb::Indication::Indicated,
        Indication::Mandatory => pb::Indication::Mandatory,
        Indication::Consider => pb::Indication::Consider,
        Indication::NotIndicated => pb::Indication::NotIndicated,
    }
}

pub(crate) fn setting_out(value: Setting) -> pb::Setting {
    match value {
        Setting::None => pb::Setting::None,
        Setting::Preoperative => pb::Setting::Preoperative,
        Setting::Postoperative => pb::Setting::Postoperative,
        Setting::NeoadjuvantChemoradiation => pb::Setting::NeoadjuvantChemoradiation,
    }
}

pub(crate) fn site_group_out(value: SiteGroup) -> pb::SiteGroup {
    match value {
        SiteGroup::Retroperitoneal => pb::SiteGroup::Retroperitoneal,
        SiteGroup::Extremity => pb::SiteGroup::Extremity,
        SiteGroup::Other => pb::SiteGroup::Other,
    }
}

pub(crate) fn phase_kind_out(value: PhaseKind) -> pb::PhaseKind {
    match value {
        PhaseKind::Initial => pb::PhaseKind::Initial,
        PhaseKind::Boost => pb::PhaseKind::Boost,
    }
}

/// Proto severity of a core severity.
pub fn severity_out(value: Severity) -> pb::Severity {
    match value {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    }
}

fn verdict_out(value: Verdict) -> pb::Verdict {
    match value {
        Verdict::Pass => pb::Verdict::Pass,
        Verdict::Review => pb::Verdict::Review,
        Verdict::Fail => pb::Verdict::Fail,
    }
}

pub(crate) fn window_status_out(value: WindowStatus) -> pb::WindowStatus {
    match value {
        WindowStatus::Before => pb::WindowStatus::Before,
        WindowStatus::Open => pb::WindowStatus::Open,
        WindowStatus::Passed => pb::WindowStatus::Passed,
    }
}

/// Encodes a core plan; `recommendation_id` is the caller's fresh id for it.
pub fn plan_out(plan: &core::Plan<'_>, recommendation_id: String) -> pb::Plan {
    let start_window = match plan.start_window {
        StartWindow::NotApplicable => pb::StartWindow {
            status: pb::WindowStatus::NotApplicable.into(),
            earliest: String::new(),
            latest: String::new(),
            days_since_surgery: 0,
        },
        StartWindow::Applicable {
            status,
            earliest,
            latest,
            days_since_surgery,
        } => pb::StartWindow {
            status: window_status_out(status).into(),
            earliest: earliest.to_string(),
            latest: latest.to_string(),
            // Dates lie within 1900-2100, so the difference fits easily.
            days_since_surgery: i32::try_from(days_since_surgery).unwrap_or(i32::MAX),
        },
    };
    pb::Plan {
        recommendation_id,
        guideline: Some(guideline_ref(plan)),
        case_id: plan.case_id.to_string(),
        evaluation_date: plan.evaluation_date.to_string(),
        indication: indication_out(plan.indication).into(),
        setting: setting_out(plan.setting).into(),
        site_group: site_group_out(plan.site_group).into(),
        prescriptions: plan
            .prescriptions
            .iter()
            .map(|prescription| pb::Prescription {
                label: prescription.label.to_string(),
                preferred: prescription.preferred,
                phases: prescription.phases.iter().map(phase_out).collect(),
                total_dose_gy: prescription.total_dose_gy,
                eqd2_tumor_gy: prescription.eqd2_tumor_gy,
                eqd2_late_gy: prescription.eqd2_late_gy,
                technique: pb::Technique::Imrt.into(),
                reference_ids: prescription.reference_ids.to_vec(),
                concurrent_chemotherapy: prescription.concurrent_chemotherapy,
            })
            .collect(),
        start_window: Some(start_window),
        volumes: plan
            .volumes
            .iter()
            .map(|volume| pb::VolumeGuidance {
                code: volume.code.as_str().to_string(),
                description: volume.description.to_string(),
                reference_ids: volume.reference_ids.to_vec(),
            })
            .collect(),
        organ_constraints: plan
            .organ_constraints
            .iter()
            .map(|constraint| pb::OrganConstraint {
                structure: constraint.structure.to_string(),
                metric: constraint.metric.to_string(),
                limit: constraint.limit,
                reference_ids: constraint.reference_ids.to_vec(),
                note: constraint.note.to_string(),
            })
            .collect(),
        alerts: plan
            .alerts
            .iter()
            .map(|alert| pb::Alert {
                code: alert.code.as_str().to_string(),
                severity: severity_out(alert.severity).into(),
                summary: alert.summary.to_string(),
                detail: alert.detail.to_string(),
                reference_ids: alert.reference_ids.to_vec(),
            })
            .collect(),
        expected_outcomes: plan
            .expected_outcomes
            .iter()
            .map(|statement| pb::Statement {
                text: statement.text.to_string(),
                reference_ids: statement.reference_ids.to_vec(),
            })
            .collect(),
        trace: plan
            .trace
            .iter()
            .map(|firing| pb::RuleFiring {
                rule_id: firing.rule_id.as_str().to_string(),
                summary: firing.summary.to_string(),
                reference_ids: firing.reference_ids.to_vec(),
            })
            .collect(),
        references: plan
            .references
            .iter()
            .map(|reference| reference_out(reference))
            .collect(),
        disclaimer: plan.disclaimer.to_string(),
    }
}

fn guideline_ref(plan: &core::Plan<'_>) -> pb::GuidelineRef {
    pb::GuidelineRef {
        version: plan.guideline_version.to_string(),
        sha256: plan.guideline_sha256.to_string(),
        alpha_beta_tumor_gy: plan.alpha_beta_tumor_gy,
        alpha_beta_late_gy: plan.alpha_beta_late_gy,
    }
}

fn phase_out(phase: &core::plan::Phase) -> pb::Phase {
    pb::Phase {
        kind: phase_kind_out(phase.kind).into(),
        dose_per_fraction_gy: phase.dose_per_fraction_gy,
        fractions: i32::try_from(phase.fractions).unwrap_or(i32::MAX),
        dose_gy: phase.dose_gy(),
    }
}

fn reference_out(reference: &core::profile::ReferenceDef) -> pb::Reference {
    pb::Reference {
        id: reference.id.clone(),
        citation: reference.citation.clone(),
        doi: reference.doi.clone(),
    }
}

/// Encodes a check report; the recommended plan gets its own fresh id.
pub fn report_out(
    report: &core::Report<'_>,
    recommendation_id: String,
    plan_recommendation_id: String,
) -> pb::CheckPrescriptionResponse {
    pb::CheckPrescriptionResponse {
        verdict: verdict_out(report.verdict).into(),
        findings: report
            .findings
            .iter()
            .map(|finding| pb::Finding {
                code: finding.code.as_str().to_string(),
                verdict: verdict_out(finding.verdict).into(),
                message: finding.message.clone(),
                reference_ids: finding.reference_ids.to_vec(),
            })
            .collect(),
        eqd2_tumor_gy: report.eqd2_tumor_gy,
        eqd2_late_gy: report.eqd2_late_gy,
        total_dose_gy: report.total_dose_gy,
        recommendation_id,
        guideline: Some(guideline_ref(&report.plan)),
        recommended_plan: Some(plan_out(&report.plan, plan_recommendation_id)),
    }
}

/// The guideline's basis for `GetGuideline`.
pub fn guideline_out(profile: &core::Profile) -> pb::Guideline {
    use crate::core::ids::{AlertCode, RuleId};
    pb::Guideline {
        version: profile.version().to_string(),
        sha256: profile.sha256().to_string(),
        rules: RuleId::ALL
            .iter()
            .map(|rule_id| {
                let rule = profile.rule(*rule_id);
                pb::GuidelineRule {
                    rule_id: rule_id.as_str().to_string(),
                    statement: rule.text.clone(),
                    reference_ids: rule.reference_ids.clone(),
                }
            })
            .collect(),
        references: profile.references().iter().map(reference_out).collect(),
        alert_codes: AlertCode::ALL
            .iter()
            .map(|code| code.as_str().to_string())
            .collect(),
        alerts: AlertCode::ALL
            .iter()
            .map(|code| {
                let alert = profile.alert(*code);
                pb::AlertDefinition {
                    code: code.as_str().to_string(),
                    severity: severity_out(alert.severity).into(),
                    summary: alert.summary.clone(),
                    reference_ids: alert.reference_ids.clone(),
                }
            })
            .collect(),
        disclaimer: profile.disclaimer().to_string(),
        previous_version: profile.previous_version().to_string(),
        changes: profile
            .changes()
            .iter()
            .map(|change| pb::GuidelineChange {
                summary: change.summary.clone(),
                reason: change.reason.clone(),
                reference_ids: change.reference_ids.clone(),
            })
            .collect(),
    }
}
