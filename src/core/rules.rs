//! `recommend`: the rules of clinical spec §3–§10, stages A to E, each recording itself in the
//! trace under the id of the specification.

use smallvec::SmallVec;

use super::case::{
    Case, Depth, Grade, Margin, Organ, Resectability, SiteGroup, Stage, VascularManagement, Vessel,
};
use super::ids::{AlertCode, RuleId, Severity, VolumeCode};
use super::plan::{
    Alert, Indication, OrganConstraint, Plan, Prescription, RuleFiring, Setting, StartWindow,
    Statement, VolumeGuidance, WindowStatus, references_in_profile_order, rt_on_table,
};
use super::profile::{MarginRow, Profile, ScheduleDef, ScheduleGroup};

/// Facts derived from a case (clinical spec §2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub site_group: SiteGroup,
    pub schedule_group: ScheduleGroup,
    pub high_grade: bool,
    pub low_grade: bool,
    pub large: bool,
    pub deep: bool,
    pub abdominal_oar: bool,
}

pub(crate) fn derive_facts(profile: &Profile, case: &Case) -> Facts {
    let site_group = case.vessel().site_group();
    let tumor = case.tumor();
    Facts {
        site_group,
        schedule_group: schedule_group(site_group),
        high_grade: matches!(tumor.grade(), Grade::Grade2 | Grade::Grade3),
        low_grade: tumor.grade() == Grade::Grade1,
        large: tumor.size_cm() > profile.large_tumor_size_cm,
        deep: site_group == SiteGroup::Retroperitoneal || tumor.depth() == Some(Depth::Deep),
        abdominal_oar: case
            .organs_at_risk()
            .iter()
            .any(|organ| organ.is_abdominal()),
    }
}

/// The schedule group of a site group (clinical spec §2): extremity sites are planned on the
/// extremity rows; retroperitoneal and unclassified (OTHER) sites on the conservative
/// retroperitoneal rows (at most 50.4 Gy, no boost).
pub(crate) fn schedule_group(site_group: SiteGroup) -> ScheduleGroup {
    match site_group {
        SiteGroup::Extremity => ScheduleGroup::Extremity,
        SiteGroup::Retroperitoneal | SiteGroup::Other => ScheduleGroup::Retroperitoneal,
    }
}

/// The schedule-table margin column for a case and setting: postoperative extremity rows depend
/// on the margin, every other row does not.
pub(crate) fn margin_row(group: ScheduleGroup, setting: Setting, case: &Case) -> MarginRow {
    match (group, setting, case.resection()) {
        (ScheduleGroup::Extremity, Setting::Postoperative, Some(resection)) => {
            if resection.margin == Margin::R0 && !resection.close_margin {
                MarginRow::R0NotClose
            } else {
                MarginRow::R0CloseOrPositive
            }
        }
        // A postoperative extremity proposal always comes with a resection (validated); the
        // conservative row stands in otherwise.
        (ScheduleGroup::Extremity, Setting::Postoperative, None) => MarginRow::R0CloseOrPositive,
        _ => MarginRow::Any,
    }
}

/// The schedule row for a case and a treatment setting: the case's schedule group, the setting
/// and (postoperative extremity) the case's margin column.
pub(crate) fn schedule_for<'p>(
    profile: &'p Profile,
    case: &Case,
    setting: Setting,
) -> Option<&'p ScheduleDef> {
    let group = schedule_group(case.vessel().site_group());
    profile.schedule(group, setting, margin_row(group, setting, case))
}

struct Builder<'p> {
    profile: &'p Profile,
    plan: Plan<'p>,
    cited: u64,
}

impl<'p> Builder<'p> {
    fn fire(&mut self, rule_id: RuleId) {
        if self
            .plan
            .trace
            .iter()
            .any(|firing| firing.rule_id == rule_id)
        {
            return;
        }
        self.cited |= self.profile.rule(rule_id).reference_mask;
        self.plan.trace.push(RuleFiring::of(self.profile, rule_id));
    }

    fn alert(&mut self, code: AlertCode) {
        let severity = self.profile.alert(code).severity;
        self.alert_with(code, severity);
    }

    fn alert_with(&mut self, code: AlertCode, severity: Severity) {
        self.cited |= self.profile.alert(code).reference_mask;
        self.plan
            .alerts
            .push(Alert::of(self.profile, code, severity));
    }

    fn volume(&mut self, code: VolumeCode) {
        self.cited |= self.profile.volume(code).reference_mask;
        self.plan
            .volumes
            .push(VolumeGuidance::of(self.profile, code));
    }

    fn outcome(&mut self, rule_id: RuleId) {
        if let Some(definition) = self.profile.outcome(rule_id) {
            self.cited |= definition.reference_mask;
            self.plan
                .expected_outcomes
                .extend(Statement::of(self.profile, rule_id));
            self.fire(rule_id);
        }
    }

    fn rt_on_table(&self) -> bool {
        rt_on_table(self.plan.indication, self.plan.setting)
    }

    fn cap_at_consider(&mut self) -> bool {
        match self.plan.indication {
            Indication::Indicated | Indication::Mandatory => {
                self.plan.indication = Indication::Consider;
                true
            }
            Indication::Consider | Indication::NotIndicated => false,
        }
    }

    fn finish(mut self) -> Plan<'p> {
        self.plan.references = references_in_profile_order(self.profile, self.cited);
        self.plan
    }
}

/// Turns a validated case into a plan (clinical spec §3–§10). Pure and deterministic: the same
/// profile and case always give the same plan.
pub fn recommend<'p>(profile: &'p Profile, case: &Case<'p>) -> Plan<'p> {
    let facts = derive_facts(profile, case);
    let mut builder = Builder {
        profile,
        plan: Plan {
            guideline_version: profile.version(),
            guideline_sha256: profile.sha256(),
            alpha_beta_tumor_gy: profile.alpha_beta_tumor_gy(),
            alpha_beta_late_gy: profile.alpha_beta_late_gy(),
            case_id: case.case_id(),
            evaluation_date: case.evaluation_date(),
            indication: Indication::NotIndicated,
            setting: Setting::None,
            site_group: facts.site_group,
            // Held inline (see `Plan`): grown one push at a time they reallocated several times a
            // plan, and allocated up front they still cost one allocation each
            // (docs/perf/decisions/014-plan-lists-inline.md).
            prescriptions: SmallVec::new(),
            start_window: StartWindow::NotApplicable,
            volumes: SmallVec::new(),
            organ_constraints: SmallVec::new(),
            alerts: SmallVec::new(),
            expected_outcomes: SmallVec::new(),
            trace: SmallVec::new(),
            references: SmallVec::new(),
            disclaimer: profile.disclaimer(),
        },
        cited: 0,
    };

    // Stage A: the scope gate stops everything else.
    if case.metastatic_disease() {
        builder.plan.indication = Indication::Consider;
        builder.plan.setting = Setting::None;
        builder.fire(RuleId::GateMetastatic);
        builder.alert(AlertCode::OutOfScopeMetastatic);
        return builder.finish();
    }

    let base_indication = stage_b_base_indication(&mut builder, case, &facts);
    stage_c_site_modifiers(&mut builder, case, &facts, base_indication);
    stage_d_safety_modifiers(&mut builder, case, &facts);
    stage_e_plan_content(&mut builder, case, &facts);
    builder.finish()
}

fn stage_b_base_indication(builder: &mut Builder<'_>, case: &Case, facts: &Facts) -> Indication {
    match case.stage() {
        Stage::PreResection {
            resectability,
            surgery_mutilating,
        } => {
            if case.preoperative_rt_delivered() {
                // The course is complete: surgery (or restaging) is next, not a second course.
                set_base(
                    builder,
                    RuleId::IndAfterPreopRt,
                    Indication::NotIndicated,
                    Setting::None,
                );
                builder.alert(AlertCode::PreopRtComplete);
            } else if *resectability == Resectability::Unresectable || *surgery_mutilating {
                set_base(
                    builder,
                    RuleId::IndUnresectable,
                    Indication::Consider,
                    Setting::NeoadjuvantChemoradiation,
                );
                builder.alert(AlertCode::ChemoradiationInvestigational);
            } else if *resectability == Resectability::Marginal {
                // ASTRO 2021: RT is recommended when a close or positive margin is anticipated;
                // a low-grade tumour is only to be considered.
                let high_or_unknown = facts.high_grade || case.tumor().grade() == Grade::Unknown;
                let indication = if high_or_unknown {
                    Indication::Indicated
                } else {
                    Indication::Consider
                };
                set_base(
                    builder,
                    RuleId::IndMarginal,
                    indication,
                    Setting::Preoperative,
                );
                if high_or_unknown {
                    builder.alert(AlertCode::ChemoradiationOption);
                }
            } else {
                risk_rules(builder, case, facts, Setting::Preoperative);
            }
        }
        Stage::PostResection(resection) => {
            let positive = matches!(resection.margin, Margin::R1 | Margin::R2);
            if positive && resection.re_excision_feasible {
                set_base(
                    builder,
                    RuleId::IndReexcision,
                    Indication::Consider,
                    Setting::None,
                );
                builder.alert(AlertCode::ReExcisionFirst);
            } else if case.preoperative_rt_delivered() {
                // No second course: nothing more after R0, and after R1/R2 a postoperative boost
                // is not routine (an MDT decision, no prescription).
                if positive {
                    set_base(
                        builder,
                        RuleId::IndAfterPreopRt,
                        Indication::Consider,
                        Setting::None,
                    );
                    builder.alert(AlertCode::PostopBoostNotRoutine);
                    if resection.margin == Margin::R2 {
                        builder.alert(AlertCode::GrossResidualDisease);
                    }
                } else {
                    set_base(
                        builder,
                        RuleId::IndAfterPreopRt,
                        Indication::NotIndicated,
                        Setting::None,
                    );
                    builder.alert(AlertCode::PreopRtComplete);
                }
            } else if positive {
                set_base(
                    builder,
                    RuleId::IndPositiveMargin,
                    Indication::Mandatory,
                    Setting::Postoperative,
                );
                if resection.margin == Margin::R2 {
                    builder.alert(AlertCode::GrossResidualDisease);
                }
            } else if resection.compartmental_contained {
                set_base(
                    builder,
                    RuleId::IndCompartmental,
                    Indication::NotIndicated,
                    Setting::None,
                );
                builder.alert(AlertCode::CompartmentalNoRt);
            } else {
                risk_rules(builder, case, facts, Setting::Postoperative);
            }
        }
    }
    builder.plan.indication
}

fn set_base(builder: &mut Builder<'_>, rule_id: RuleId, indication: Indication, setting: Setting) {
    builder.plan.indication = indication;
    builder.plan.setting = setting;
    builder.fire(rule_id);
}

fn risk_rules(builder: &mut Builder<'_>, case: &Case, facts: &Facts, setting: Setting) {
    if facts.high_grade && facts.deep && facts.large {
        set_base(
            builder,
            RuleId::IndHgDeepLarge,
            Indication::Indicated,
            setting,
        );
    } else if facts.high_grade && facts.deep {
        set_base(
            builder,
            RuleId::IndHgDeepSmall,
            Indication::Consider,
            setting,
        );
    } else if facts.high_grade {
        set_base(
            builder,
            RuleId::IndHgSuperficial,
            Indication::Consider,
            setting,
        );
    } else if case.tumor().grade() == Grade::Unknown {
        set_base(
            builder,
            RuleId::IndGradeUnknown,
            Indication::Consider,
            setting,
        );
    } else {
        debug_assert!(facts.low_grade);
        set_base(
            builder,
            RuleId::IndLowRisk,
            Indication::NotIndicated,
            Setting::None,
        );
    }
}

fn stage_c_site_modifiers(
    builder: &mut Builder<'_>,
    case: &Case,
    facts: &Facts,
    base_indication: Indication,
) {
    let before_resection = matches!(case.stage(), Stage::PreResection { .. });
    if facts.site_group == SiteGroup::Retroperitoneal {
        let capped = builder.cap_at_consider();
        let alerts = builder.rt_on_table() && before_resection;
        if alerts {
            builder.alert(AlertCode::RpsRtNotStandard);
        }
        if capped || alerts {
            builder.fire(RuleId::ModRpsCap);
        }
        if builder.plan.setting == Setting::Postoperative {
            let severity = if base_indication == Indication::Mandatory {
                Severity::Critical
            } else {
                Severity::Warning
            };
            builder.alert_with(AlertCode::RpsPostopRtNotRecommended, severity);
            builder.fire(RuleId::ModRpsPostop);
        }
    }
    if facts.site_group == SiteGroup::Other {
        builder.cap_at_consider();
        builder.alert(AlertCode::SiteUnclassified);
        builder.fire(RuleId::ModSiteUnclassified);
    }
    if matches!(
        facts.site_group,
        SiteGroup::Retroperitoneal | SiteGroup::Other
    ) && builder.rt_on_table()
        && facts.abdominal_oar
    {
        builder.alert(AlertCode::OarDoseModification);
        builder.fire(RuleId::ModOar);
    }
}

fn stage_d_safety_modifiers(builder: &mut Builder<'_>, case: &Case, facts: &Facts) {
    if case.prior_radiotherapy() {
        builder.cap_at_consider();
        builder.alert(AlertCode::Reirradiation);
        builder.fire(RuleId::ModReirradiation);
    }
    let kidney_near = facts.site_group == SiteGroup::Retroperitoneal
        || case.organs_at_risk().iter().any(|organ| organ.is_kidney());
    if case.solitary_functioning_kidney() && builder.rt_on_table() && kidney_near {
        builder.alert(AlertCode::SolitaryKidney);
        builder.fire(RuleId::ModSolitaryKidney);
    }
    if case.tumor().grade() == Grade::Unknown {
        builder.alert(AlertCode::GradeUnknown);
        builder.fire(RuleId::ModGradeUnknown);
    }
}

fn stage_e_plan_content(builder: &mut Builder<'_>, case: &Case, facts: &Facts) {
    let profile = builder.profile;
    let on_table = builder.rt_on_table();
    let setting = builder.plan.setting;
    let preoperative_setting = matches!(
        setting,
        Setting::Preoperative | Setting::NeoadjuvantChemoradiation
    );

    // §4 prescriptions.
    // The profile holds a row for every treatment setting (checked when loaded).
    if on_table
        && !case.prior_radiotherapy()
        && let Some(schedule) = schedule_for(profile, case, setting)
    {
        let mut option_alerts: SmallVec<[AlertCode; 3]> = SmallVec::new();
        for option in &schedule.options {
            builder.cited |= option.reference_mask;
            builder.plan.prescriptions.push(Prescription::of(option));
            if let Some(alert) = option.alert {
                option_alerts.push(alert);
            }
        }
        builder.fire(RuleId::RxSchedule);
        for alert in option_alerts {
            builder.alert(alert);
            builder.fire(RuleId::AlertHypofractionation);
        }
    }
    if facts.schedule_group == ScheduleGroup::Extremity && on_table && preoperative_setting {
        builder.alert(AlertCode::PreopWoundComplications);
        builder.fire(RuleId::AlertPreopWound);
    }

    // §6 start window.
    if let (Stage::PostResection(resection), Setting::Postoperative) = (case.stage(), setting) {
        let window = start_window(profile, resection.surgery_date, case.evaluation_date());
        builder.plan.start_window = window;
        builder.fire(RuleId::Window);
        if let StartWindow::Applicable {
            status: WindowStatus::Passed,
            days_since_surgery,
            ..
        } = window
        {
            let severity = if days_since_surgery > profile.overdue_critical_after_days {
                Severity::Critical
            } else {
                Severity::Warning
            };
            builder.alert_with(AlertCode::RtStartOverdue, severity);
            builder.fire(RuleId::WindowOverdue);
        }
    }

    // §7 target volumes.
    if let (Stage::PostResection(resection), Setting::Postoperative) = (case.stage(), setting) {
        builder.volume(VolumeCode::SurgicalBed);
        if matches!(
            resection.vascular_management,
            VascularManagement::PrimaryRepair
                | VascularManagement::Patch
                | VascularManagement::Graft
        ) {
            builder.volume(VolumeCode::VascularReconstructionSite);
        }
        builder.fire(RuleId::VolPostop);
        if resection.hematoma_present {
            builder.volume(VolumeCode::Hematoma);
            builder.alert(AlertCode::HematomaDoNotDelay);
            builder.fire(RuleId::VolHematoma);
        }
    }
    if on_table && preoperative_setting {
        builder.volume(VolumeCode::GrossTumor);
        builder.fire(RuleId::VolPreop);
    }
    builder
        .plan
        .volumes
        .sort_by_key(|volume| volume.code.as_str());

    // §8 organ-at-risk constraints.
    if on_table {
        let organs = case.organs_at_risk();
        for constraint in profile.constraints() {
            let wanted = constraint.organs.iter().any(|organ| organs.contains(organ));
            let suppressed = constraint.bilateral_kidneys && case.solitary_functioning_kidney();
            if wanted && !suppressed {
                builder.cited |= constraint.reference_mask;
                builder
                    .plan
                    .organ_constraints
                    .push(OrganConstraint::of(constraint));
            }
        }
        if !builder.plan.organ_constraints.is_empty() {
            builder.fire(RuleId::OarConstraints);
        }
        if organs.contains(&Organ::Duodenum) {
            builder.alert(AlertCode::OarLimitNotVerified);
            builder.fire(RuleId::OarUnverified);
        }
        if facts.schedule_group == ScheduleGroup::Retroperitoneal
            && builder.plan.organ_constraints.is_empty()
        {
            builder.alert(AlertCode::NoOarConstraints);
            builder.fire(RuleId::AlertNoOarConstraints);
        }
    }

    // Stage E alerts.
    match case.stage() {
        Stage::PreResection { .. } => {
            builder.alert(AlertCode::ReferenceCenterSurgery);
            builder.fire(RuleId::AlertReferenceCenter);
        }
        Stage::PostResection(resection) => {
            if resection.periaortic_dissection {
                builder.alert(AlertCode::ChylousLeakRisk);
                builder.fire(RuleId::AlertChylousLeak);
            }
        }
    }

    // §10 expected outcomes.
    if on_table && facts.site_group != SiteGroup::Retroperitoneal {
        builder.outcome(RuleId::OutcomeLocalControl);
    }
    if on_table && facts.site_group == SiteGroup::Retroperitoneal {
        builder.outcome(RuleId::OutcomeRpsEvidence);
    }
    if case.vessel() == Vessel::InferiorVenaCava
        && let Some(resection) = case.resection()
    {
        if resection.vascular_management == VascularManagement::Ligation {
            builder.outcome(RuleId::OutcomeIvcLigation);
        }
        builder.outcome(RuleId::OutcomeIvcRenal);
    }
}

/// The postoperative start window of clinical spec §6 for a surgery date, as of an evaluation date.
pub fn start_window(
    profile: &Profile,
    surgery_date: super::date::Date,
    evaluation_date: super::date::Date,
) -> StartWindow {
    let (earliest_days, latest_days) = profile.window_days();
    let earliest = surgery_date.add_days(earliest_days);
    let latest = surgery_date.add_days(latest_days);
    let status = if evaluation_date < earliest {
        WindowStatus::Before
    } else if evaluation_date > latest {
        WindowStatus::Passed
    } else {
        WindowStatus::Open
    };
    StartWindow::Applicable {
        status,
        earliest,
        latest,
        days_since_surgery: evaluation_date.days_since(surgery_date),
    }
}
