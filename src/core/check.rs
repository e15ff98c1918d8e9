//! `check`: the prescription check of clinical spec §12. A proposal is validated like a case
//! (every violation with its request path), then compared with the plan `recommend` gives.

use super::case::{Case, RawCase, RawEnum, Stage};
use super::date::Date;
use super::ids::{FindingCode, Verdict};
use super::plan::{
    Finding, Indication, Phase, PhaseKind, Plan, Report, Setting, StartWindow, WindowStatus,
};
use super::profile::{
    MAX_RETROPERITONEAL_TOTAL_DOSE_GY, MAX_TOTAL_DOSE_GY, MarginRow, Profile, ScheduleDef,
    ScheduleGroup, tg263_metric_unit,
};
use super::radiobiology::eqd2_gy;
use super::rules::{recommend, schedule_for, schedule_group, start_window};
use super::violation::Violations;

/// Largest dose per fraction a proposal may name, in Gy.
pub const MAX_DOSE_PER_FRACTION_GY: f64 = 20.0;
/// Most fractions a phase may name.
pub const MAX_FRACTIONS: i64 = 60;
/// Longest structure name of a dose metric, in characters (TG-263 names have at most 16).
pub const MAX_STRUCTURE_CHARS: usize = 64;

/// A raw proposed phase.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPhase {
    pub kind: RawEnum<PhaseKind>,
    pub dose_per_fraction_gy: f64,
    pub fractions: i64,
}

/// A raw achieved dose metric.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDoseMetric {
    pub structure: String,
    pub metric: String,
    pub value: f64,
}

/// A raw prescription-check request, exactly as a caller may send it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawProposal<'a> {
    pub case: Option<RawCase<'a>>,
    pub setting: RawEnum<Setting>,
    pub phases: Vec<RawPhase>,
    pub planned_start_date: String,
    pub dose_metrics: Vec<RawDoseMetric>,
}

/// An achieved dose metric (validated).
#[derive(Debug, Clone, PartialEq)]
pub struct DoseMetric {
    pub structure: String,
    pub metric: String,
    pub value: f64,
}

/// A validated prescription-check request: the case and the proposal.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal<'a> {
    case: Case<'a>,
    setting: Setting,
    phases: Vec<Phase>,
    planned_start_date: Option<Date>,
    dose_metrics: Vec<DoseMetric>,
}

impl<'a> Proposal<'a> {
    /// Validates a request: case violations (paths `case.…`) and proposal violations (`setting`,
    /// `phases[i].…`, `planned_start_date`, `dose_metrics[i].…`) together, in field order.
    pub fn validate(raw: &RawProposal<'a>) -> Result<Proposal<'a>, Violations> {
        let mut violations = Violations::default();
        let case = match &raw.case {
            None => {
                violations.push("case", "is required");
                None
            }
            Some(raw_case) => match Case::validate(raw_case, "case") {
                Ok(case) => Some(case),
                Err(case_violations) => {
                    violations.extend(case_violations);
                    None
                }
            },
        };
        // The phase the case claims, when that field itself is valid.
        let case_phase = raw.case.as_ref().and_then(|raw_case| match raw_case.phase {
            RawEnum::Known(phase) => Some(phase),
            RawEnum::Unset | RawEnum::Unknown(_) => None,
        });

        let setting = match raw.setting {
            RawEnum::Known(
                setting @ (Setting::Preoperative
                | Setting::Postoperative
                | Setting::NeoadjuvantChemoradiation),
            ) => {
                let fits = match (setting, case_phase) {
                    (_, None) => true,
                    (Setting::Postoperative, Some(phase)) => {
                        phase == super::case::TreatmentPhase::PostResection
                    }
                    (_, Some(phase)) => phase == super::case::TreatmentPhase::PreResection,
                };
                if fits {
                    Some(setting)
                } else if setting == Setting::Postoperative {
                    violations.push("setting", "POSTOPERATIVE needs a case after resection");
                    None
                } else {
                    violations.push(
                        "setting",
                        "PREOPERATIVE and NEOADJUVANT_CHEMORADIATION need a case before resection",
                    );
                    None
                }
            }
            RawEnum::Known(Setting::None) | RawEnum::Unset => {
                violations.push(
                    "setting",
                    "must be PREOPERATIVE, POSTOPERATIVE or NEOADJUVANT_CHEMORADIATION",
                );
                None
            }
            RawEnum::Unknown(number) => {
                violations.push(
                    "setting",
                    format!("holds {number}, which is not a value of this enum"),
                );
                None
            }
        };

        let mut phases = Vec::with_capacity(raw.phases.len());
        if raw.phases.is_empty() {
            violations.push("phases", "must hold at least one phase (INITIAL first)");
        }
        let (mut seen_initial, mut seen_boost) = (false, false);
        for (index, phase) in raw.phases.iter().enumerate() {
            let kind = match phase.kind {
                RawEnum::Known(kind) => {
                    let problem = match kind {
                        // The spec's list is closed: a first phase that is not INITIAL, a
                        // second INITIAL, a second BOOST. An INITIAL after a bad first phase is
                        // not one of them (the first phase carries the violation).
                        PhaseKind::Initial if seen_initial => {
                            Some("a second INITIAL phase is not allowed")
                        }
                        PhaseKind::Boost if index == 0 => Some("the first phase must be INITIAL"),
                        PhaseKind::Boost if seen_boost => {
                            Some("a second BOOST phase is not allowed")
                        }
                        PhaseKind::Initial | PhaseKind::Boost => None,
                    };
                    match kind {
                        PhaseKind::Initial => seen_initial = true,
                        PhaseKind::Boost => seen_boost = true,
                    }
                    match problem {
                        Some(problem) => {
                            violations.push(format!("phases[{index}].kind"), problem);
                            None
                        }
                        None => Some(kind),
                    }
                }
                RawEnum::Unset => {
                    violations.push(
                        format!("phases[{index}].kind"),
                        "is required (INITIAL or BOOST)",
                    );
                    None
                }
                RawEnum::Unknown(number) => {
                    violations.push(
                        format!("phases[{index}].kind"),
                        format!("holds {number}, which is not a value of this enum"),
                    );
                    None
                }
            };
            let dose_ok = phase.dose_per_fraction_gy.is_finite()
                && phase.dose_per_fraction_gy > 0.0
                && phase.dose_per_fraction_gy <= MAX_DOSE_PER_FRACTION_GY;
            if !dose_ok {
                violations.push(
                    format!("phases[{index}].dose_per_fraction_gy"),
                    "must be a finite number greater than 0 and at most 20 (Gy)",
                );
            }
            let fractions_ok = (1..=MAX_FRACTIONS).contains(&phase.fractions);
            if !fractions_ok {
                violations.push(
                    format!("phases[{index}].fractions"),
                    "must be between 1 and 60",
                );
            }
            if let (Some(kind), true, true) = (kind, dose_ok, fractions_ok) {
                phases.push(Phase {
                    kind,
                    dose_per_fraction_gy: phase.dose_per_fraction_gy,
                    // In 1..=60, so the conversion is exact.
                    fractions: u32::try_from(phase.fractions).unwrap_or(0),
                });
            }
        }

        let planned_start_date = if raw.planned_start_date.is_empty() {
            None
        } else {
            match Date::parse(&raw.planned_start_date) {
                Ok(date) => {
                    // Checked only when the case is valid (clinical spec §15.6).
                    let before_surgery = case
                        .as_ref()
                        .and_then(Case::resection)
                        .is_some_and(|resection| date < resection.surgery_date);
                    if before_surgery {
                        violations
                            .push("planned_start_date", "must not be before the surgery date");
                    }
                    Some(date)
                }
                Err(error) => {
                    violations.push("planned_start_date", error.describe());
                    None
                }
            }
        };

        let mut dose_metrics = Vec::with_capacity(raw.dose_metrics.len());
        for (index, metric) in raw.dose_metrics.iter().enumerate() {
            if metric.structure.trim().is_empty() {
                violations.push(
                    format!("dose_metrics[{index}].structure"),
                    "must name a structure (TG-263); empty or blank is not a name",
                );
            } else if let Some(problem) =
                super::violation::free_text_problem(&metric.structure, MAX_STRUCTURE_CHARS)
            {
                violations.push(format!("dose_metrics[{index}].structure"), problem);
            }
            let unit = tg263_metric_unit(&metric.metric);
            if unit.is_none() {
                violations.push(
                    format!("dose_metrics[{index}].metric"),
                    "must be a TG-263 metric: Mean|Max|Min[Gy|cGy], V<dose>Gy|cGy[%|cc] or D<volume>%|cc[Gy|cGy]",
                );
            }
            let value_ok = metric.value.is_finite()
                && metric.value >= 0.0
                && !(unit == Some("%") && metric.value > 100.0);
            if !value_ok {
                violations.push(
                    format!("dose_metrics[{index}].value"),
                    "must be a finite number of at least 0 (at most 100 for [%])",
                );
            }
            dose_metrics.push(DoseMetric {
                structure: metric.structure.clone(),
                metric: metric.metric.clone(),
                value: metric.value,
            });
        }

        match (case, setting) {
            (Some(case), Some(setting)) if violations.is_empty() => Ok(Proposal {
                case,
                setting,
                phases,
                planned_start_date,
                dose_metrics,
            }),
            _ => {
                if violations.is_empty() {
                    violations.push("setting", "is incomplete");
                }
                Err(violations)
            }
        }
    }

    /// The validated case.
    pub fn case(&self) -> &Case<'a> {
        &self.case
    }
    /// The proposed setting.
    pub fn setting(&self) -> Setting {
        self.setting
    }
    /// The proposed phases.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }
}

/// A dose in a finding's message: to the nano-gray the comparisons are made in, trailing zeros
/// dropped down to two decimals (2.00, 66.0099, 2.0099999), so that two doses judged differently
/// never print alike — with two decimals 66.0099 Gy (a listed 66 Gy within the tolerance) and
/// 66.01 Gy (past the 66 Gy maximum) both printed "66.01".
fn dose_text(dose_gy: f64) -> String {
    let mut text = format!("{dose_gy:.9}");
    if let Some(point) = text.find('.') {
        while text.len() > point + 3 && text.ends_with('0') {
            text.pop();
        }
    }
    text
}

/// An organ-at-risk metric's value as given, or in exponent form when it is too large to read.
fn value_text(value: f64) -> String {
    if value.abs() >= 1e9 {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}

/// The one tolerance of clinical spec §12 for every dose comparison, in Gy: x **equals** y when
/// |x − y| < tolerance, **exceeds** y when x − y ≥ tolerance, is **below** y when y − x ≥
/// tolerance. Differences are taken in whole nano-grays, so that the binary form of the decimals
/// cannot tip a verdict: 50.41 − 50.4 is 0.00999… Gy in floating point, yet 50.41 Gy exceeds
/// 50.4 Gy.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    nano_gy: f64,
}

impl Tolerance {
    fn new(tolerance_gy: f64) -> Tolerance {
        Tolerance {
            nano_gy: (tolerance_gy * 1e9).round(),
        }
    }
    fn gap(x: f64, y: f64) -> f64 {
        ((x - y) * 1e9).round()
    }
    fn equals(self, x: f64, y: f64) -> bool {
        Self::gap(x, y).abs() < self.nano_gy
    }
    fn exceeds(self, x: f64, y: f64) -> bool {
        Self::gap(x, y) >= self.nano_gy
    }
    fn below(self, x: f64, y: f64) -> bool {
        Self::gap(y, x) >= self.nano_gy
    }
    /// Inside a band: not below its lower end and not above its upper end.
    fn inside(self, x: f64, low: f64, high: f64) -> bool {
        !self.below(x, low) && !self.exceeds(x, high)
    }
}

/// What every finding of one check reads: the profile, the proposal, the plan for its case, the
/// schedule row it is judged against and its doses.
struct Judging<'c, 'p> {
    profile: &'p Profile,
    proposal: &'c Proposal<'p>,
    tolerance: Tolerance,
    group: ScheduleGroup,
    /// The §4 row for the case's schedule group, the proposed setting and the margin column;
    /// `None` after a completed preoperative course (no row applies to a further course).
    row: Option<&'p ScheduleDef>,
    total_dose_gy: f64,
    /// EQD2 of the proposal at the tumour α/β (E4) and the late-tissue α/β (E3).
    eqd2_tumor_gy: f64,
    eqd2_late_gy: f64,
}

/// Checks a proposal against the guideline (clinical spec §12). Findings come in the order of the
/// §12 table; the verdict is the worst of them.
pub fn check<'p>(profile: &'p Profile, proposal: &Proposal<'p>) -> Report<'p> {
    let case = &proposal.case;
    let plan = recommend(profile, case);
    let params = profile.check_params();
    let row = if case.preoperative_rt_delivered() {
        None
    } else {
        schedule_for(profile, case, proposal.setting)
    };
    let judging = Judging {
        profile,
        proposal,
        tolerance: Tolerance::new(params.dose_tolerance_gy),
        group: schedule_group(plan.site_group),
        row,
        total_dose_gy: proposal.phases.iter().map(Phase::dose_gy).sum(),
        eqd2_tumor_gy: eqd2_gy(&proposal.phases, profile.alpha_beta_tumor_gy()),
        eqd2_late_gy: eqd2_gy(&proposal.phases, profile.alpha_beta_late_gy()),
    };

    let mut findings = Vec::new();
    findings.extend(not_indicated(&judging, &plan));
    findings.extend(setting_mismatch(&judging, &plan));
    findings.extend(reirradiation(&judging));
    let schedule = schedule_finding(&judging);
    let schedule_matched = schedule.verdict == Verdict::Pass;
    findings.push(schedule);
    findings.push(dose_finding(&judging, schedule_matched));
    findings.extend(after_preop_rt(&judging));
    findings.extend(fraction_sizes(&judging));
    findings.extend(boost_finding(&judging));
    findings.extend(start_date(&judging));
    findings.extend(
        proposal
            .dose_metrics
            .iter()
            .map(|metric| oar_finding(&judging, metric)),
    );

    let verdict = findings
        .iter()
        .map(|finding| finding.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    Report {
        verdict,
        findings,
        total_dose_gy: judging.total_dose_gy,
        eqd2_tumor_gy: judging.eqd2_tumor_gy,
        eqd2_late_gy: judging.eqd2_late_gy,
        plan,
    }
}

impl<'p> Judging<'_, 'p> {
    fn finding(&self, code: FindingCode, verdict: Verdict, message: String) -> Finding<'p> {
        Finding {
            code,
            verdict,
            message,
            reference_ids: self.profile.finding_references(code),
        }
    }

    /// The row's name in messages: "extremity POSTOPERATIVE (R0 close, R1 or R2)".
    fn row_name(&self, row: &ScheduleDef) -> String {
        let group = match row.group {
            ScheduleGroup::Extremity => "extremity",
            ScheduleGroup::Retroperitoneal => "retroperitoneal",
        };
        let margins = match row.margins {
            MarginRow::Any => "",
            MarginRow::R0NotClose => " (R0, not close)",
            MarginRow::R0CloseOrPositive => " (R0 close, R1 or R2)",
        };
        format!("{group} {}{margins}", setting_name(row.setting))
    }
}

/// RX_NOT_INDICATED: the guideline does not indicate radiotherapy for the case.
fn not_indicated<'p>(judging: &Judging<'_, 'p>, plan: &Plan<'p>) -> Option<Finding<'p>> {
    (plan.indication == Indication::NotIndicated).then(|| {
        judging.finding(
            FindingCode::NotIndicated,
            Verdict::Fail,
            "The guideline does not indicate radiotherapy for this case.".into(),
        )
    })
}

/// RX_SETTING_MISMATCH: the proposed setting is not the recommended one.
fn setting_mismatch<'p>(judging: &Judging<'_, 'p>, plan: &Plan<'p>) -> Option<Finding<'p>> {
    let proposed = judging.proposal.setting;
    (plan.setting != proposed).then(|| {
        judging.finding(
            FindingCode::SettingMismatch,
            Verdict::Review,
            format!(
                "Proposed setting {} differs from the recommended setting {}.",
                setting_name(proposed),
                setting_name(plan.setting)
            ),
        )
    })
}

/// RX_REIRRADIATION: earlier radiotherapy to the region.
fn reirradiation<'p>(judging: &Judging<'_, 'p>) -> Option<Finding<'p>> {
    judging.proposal.case.prior_radiotherapy().then(|| {
        judging.finding(
            FindingCode::Reirradiation,
            Verdict::Review,
            "Earlier radiotherapy to this region: the cumulative dose needs physics review.".into(),
        )
    })
}

/// RX_SCHEDULE: PASS when the phases equal, phase by phase, those of one option of the row.
fn schedule_finding<'p>(judging: &Judging<'_, 'p>) -> Finding<'p> {
    let proposed = phases_text(&judging.proposal.phases);
    let Some(row) = judging.row else {
        return judging.finding(
            FindingCode::Schedule,
            Verdict::Review,
            format!(
                "Proposed {proposed}: a preoperative course has been completed, and no guideline schedule applies to a further course."
            ),
        );
    };
    let tolerance = judging.tolerance;
    let matched = row.options.iter().find(|option| {
        option.phases.len() == judging.proposal.phases.len()
            && option
                .phases
                .iter()
                .zip(&judging.proposal.phases)
                .all(|(listed, proposed)| {
                    listed.kind == proposed.kind
                        && listed.fractions == proposed.fractions
                        && tolerance
                            .equals(proposed.dose_per_fraction_gy, listed.dose_per_fraction_gy)
                })
    });
    match matched {
        Some(option) => judging.finding(
            FindingCode::Schedule,
            Verdict::Pass,
            format!(
                "Proposed {proposed} is the guideline schedule \"{}\" of the {} row.",
                option.label,
                judging.row_name(row)
            ),
        ),
        None => {
            let listed: Vec<String> = row
                .options
                .iter()
                .map(|option| phases_text(&option.phases))
                .collect();
            judging.finding(
                FindingCode::Schedule,
                Verdict::Review,
                format!(
                    "Proposed {proposed} is none of the guideline schedules of the {} row: {}.",
                    judging.row_name(row),
                    listed.join("; ")
                ),
            )
        }
    }
}

/// RX_DOSE: the proposal's EQD2 against its row's schedules, and the §12a total-dose caps.
fn dose_finding<'p>(judging: &Judging<'_, 'p>, schedule_matched: bool) -> Finding<'p> {
    let profile = judging.profile;
    let params = profile.check_params();
    let tolerance = judging.tolerance;
    let (ab_tumor, ab_late) = (profile.alpha_beta_tumor_gy(), profile.alpha_beta_late_gy());
    let (e3, e4) = (judging.eqd2_late_gy, judging.eqd2_tumor_gy);
    let factor = params.late_eqd2_fail_factor;
    let proposal_text = format!(
        "Proposal: total {} Gy, E3 = {} Gy (EQD2, late-tissue alpha/beta {}), E4 = {} Gy (EQD2, tumour alpha/beta {})",
        dose_text(judging.total_dose_gy),
        dose_text(e3),
        ab_late,
        dose_text(e4),
        ab_tumor
    );
    let Some(row) = judging.row else {
        // After a completed preoperative course: no row. Nothing more for a truncal target; at
        // an extremity at most a boost-sized dose is for review.
        if judging.group == ScheduleGroup::Retroperitoneal {
            return judging.finding(
                FindingCode::Dose,
                Verdict::Fail,
                format!(
                    "{proposal_text}. A preoperative course has been completed: no further dose is within the guideline for a retroperitoneal or unclassified site."
                ),
            );
        }
        let reference = params.after_preop_rt_reference_late_gy;
        let limit = factor * reference;
        let verdict = if tolerance.exceeds(e3, limit) {
            Verdict::Fail
        } else {
            Verdict::Review
        };
        let judged = if verdict == Verdict::Fail {
            "exceeds"
        } else {
            "does not exceed"
        };
        return judging.finding(
            FindingCode::Dose,
            verdict,
            format!(
                "{proposal_text}. A preoperative course has been completed: the reference is the {} Gy late-tissue EQD2 of the guideline's postoperative boost; E3 {judged} {factor:.2} x {} = {} Gy.",
                dose_text(reference),
                dose_text(reference),
                dose_text(limit)
            ),
        );
    };
    if schedule_matched {
        return judging.finding(
            FindingCode::Dose,
            Verdict::Pass,
            format!(
                "{proposal_text}: a guideline schedule of the {} row.",
                judging.row_name(row)
            ),
        );
    }
    let max3 = row
        .options
        .iter()
        .map(|option| option.eqd2_late_gy)
        .fold(f64::NEG_INFINITY, f64::max);
    let min4 = row
        .options
        .iter()
        .map(|option| option.eqd2_tumor_gy)
        .fold(f64::INFINITY, f64::min);
    let cap = match judging.group {
        ScheduleGroup::Extremity => MAX_TOTAL_DOSE_GY,
        ScheduleGroup::Retroperitoneal => MAX_RETROPERITONEAL_TOTAL_DOSE_GY,
    };
    let fail_above = factor * max3;
    let row_text = format!(
        "Row {}: MAX3 = {} Gy (highest EQD2 at alpha/beta {}), MIN4 = {} Gy (lowest EQD2 at alpha/beta {})",
        judging.row_name(row),
        dose_text(max3),
        ab_late,
        dose_text(min4),
        ab_tumor
    );
    let (verdict, reason) = if tolerance.exceeds(judging.total_dose_gy, cap) {
        (
            Verdict::Fail,
            format!(
                "the total exceeds the {} Gy cap for this site",
                dose_text(cap)
            ),
        )
    } else if tolerance.exceeds(e3, fail_above) {
        (
            Verdict::Fail,
            format!(
                "E3 exceeds {factor:.2} x MAX3 = {} Gy",
                dose_text(fail_above)
            ),
        )
    } else if tolerance.exceeds(e3, max3) {
        (
            Verdict::Review,
            format!(
                "E3 exceeds MAX3, above the guideline's highest late-tissue dose (but not {factor:.2} x MAX3 = {} Gy)",
                dose_text(fail_above)
            ),
        )
    } else if tolerance.below(e4, min4) {
        (
            Verdict::Review,
            "E4 is below MIN4, under the guideline's lowest tumour dose".to_string(),
        )
    } else {
        (
            Verdict::Pass,
            "E3 does not exceed MAX3 and E4 is not below MIN4".to_string(),
        )
    };
    judging.finding(
        FindingCode::Dose,
        verdict,
        format!("{proposal_text}. {row_text}. {reason}."),
    )
}

/// RX_AFTER_PREOP_RT: the proposal adds to a completed preoperative course.
fn after_preop_rt<'p>(judging: &Judging<'_, 'p>) -> Option<Finding<'p>> {
    judging.proposal.case.preoperative_rt_delivered().then(|| {
        judging.finding(
            FindingCode::AfterPreopRt,
            Verdict::Review,
            "A preoperative course of radiotherapy has been completed: this proposal adds to it, and the cumulative dose needs review (a postoperative boost after preoperative RT is not routine).".into(),
        )
    })
}

/// RX_FRACTION_SIZE, once per phase: the first band that holds wins.
fn fraction_sizes<'p>(judging: &Judging<'_, 'p>) -> Vec<Finding<'p>> {
    let params = judging.profile.check_params();
    let tolerance = judging.tolerance;
    let mut findings = Vec::with_capacity(judging.proposal.phases.len());
    for (index, phase) in judging.proposal.phases.iter().enumerate() {
        let dose = phase.dose_per_fraction_gy;
        // An initial phase the row lists as it stands (in 2026.2: 2.5 Gy x 20).
        let listed_initial = phase.kind == PhaseKind::Initial
            && judging.row.is_some_and(|row| {
                row.options.iter().any(|option| {
                    option.phases.first().is_some_and(|listed| {
                        listed.kind == PhaseKind::Initial
                            && listed.fractions == phase.fractions
                            && tolerance.equals(dose, listed.dose_per_fraction_gy)
                    })
                })
            });
        let pass_band = (params.fraction_pass_min_gy, params.fraction_pass_max_gy);
        let review_band = (params.fraction_review_min_gy, params.fraction_review_max_gy);
        let (verdict, band) = if tolerance.inside(dose, pass_band.0, pass_band.1) {
            (
                Verdict::Pass,
                format!("inside {}-{} Gy", pass_band.0, pass_band.1),
            )
        } else if listed_initial {
            (
                Verdict::Pass,
                "an initial phase listed in the guideline schedules for this case".to_string(),
            )
        } else if tolerance.inside(dose, review_band.0, review_band.1) {
            (
                Verdict::Review,
                format!(
                    "outside {}-{} Gy, inside {}-{} Gy",
                    pass_band.0, pass_band.1, review_band.0, review_band.1
                ),
            )
        } else {
            (
                Verdict::Fail,
                format!("outside {}-{} Gy", review_band.0, review_band.1),
            )
        };
        findings.push(judging.finding(
            FindingCode::FractionSize,
            verdict,
            format!(
                "Phase {} ({}): {} Gy per fraction × {}: {band}.",
                index + 1,
                phase_kind_name(phase.kind),
                dose_text(dose),
                phase.fractions
            ),
        ));
    }
    findings
}

/// RX_BOOST: a boost phase is present.
fn boost_finding<'p>(judging: &Judging<'_, 'p>) -> Option<Finding<'p>> {
    let proposal = judging.proposal;
    if !proposal
        .phases
        .iter()
        .any(|phase| phase.kind == PhaseKind::Boost)
    {
        return None;
    }
    let (verdict, message) = if judging.group == ScheduleGroup::Retroperitoneal {
        (
            Verdict::Fail,
            "No boost for a retroperitoneal or unclassified site: bowel tolerance excludes it.",
        )
    } else if matches!(
        proposal.setting,
        Setting::Preoperative | Setting::NeoadjuvantChemoradiation
    ) {
        (
            Verdict::Review,
            "A boost before resection is not part of the guideline schedules.",
        )
    } else {
        (
            Verdict::Pass,
            "Postoperative boost at an extremity site, as in the guideline schedules.",
        )
    };
    Some(judging.finding(FindingCode::Boost, verdict, message.into()))
}

/// RX_START_DATE: a postoperative planned start against the §6 window.
fn start_date<'p>(judging: &Judging<'_, 'p>) -> Option<Finding<'p>> {
    let proposal = judging.proposal;
    let (Setting::Postoperative, Some(planned), Stage::PostResection(resection)) = (
        proposal.setting,
        proposal.planned_start_date,
        proposal.case.stage(),
    ) else {
        return None;
    };
    let window = start_window(judging.profile, resection.surgery_date, planned);
    let (verdict, message) = match window {
        StartWindow::Applicable {
            status: WindowStatus::Open,
            earliest,
            latest,
            ..
        } => (
            Verdict::Pass,
            format!("Planned start {planned} lies inside the window {earliest} to {latest}."),
        ),
        StartWindow::Applicable {
            earliest, latest, ..
        } => (
            Verdict::Review,
            format!("Planned start {planned} lies outside the window {earliest} to {latest}."),
        ),
        StartWindow::NotApplicable => (
            Verdict::Review,
            format!("Planned start {planned}: no window applies."),
        ),
    };
    Some(judging.finding(FindingCode::StartDate, verdict, message))
}

/// RX_OAR, once per dose metric: the exact (structure, metric) of a §8 row.
fn oar_finding<'p>(judging: &Judging<'_, 'p>, metric: &DoseMetric) -> Finding<'p> {
    let row = judging
        .profile
        .constraints()
        .iter()
        .find(|row| row.structure == metric.structure && row.metric == metric.metric);
    let (verdict, message) = match row {
        Some(row)
            if row.bilateral_kidneys && judging.proposal.case.solitary_functioning_kidney() =>
        {
            (
                Verdict::Review,
                format!(
                    "{} {}: bilateral-kidney limit not evaluated with a solitary functioning kidney.",
                    metric.structure, metric.metric
                ),
            )
        }
        Some(row) => {
            // [Gy] metrics compare with the tolerance (below: at least 0.01 Gy under the
            // limit); [%] and [cc] exactly.
            let below = if tg263_metric_unit(&metric.metric) == Some("Gy") {
                judging.tolerance.below(metric.value, row.limit)
            } else {
                metric.value < row.limit
            };
            let (verdict, judged) = if below {
                (Verdict::Pass, "is below")
            } else {
                (Verdict::Fail, "is not below")
            };
            (
                verdict,
                format!(
                    "{} {} = {} {judged} the limit < {}.",
                    metric.structure,
                    metric.metric,
                    value_text(metric.value),
                    row.limit
                ),
            )
        }
        None => (
            Verdict::Review,
            format!(
                "{} {}: no guideline constraint for this pair (not evaluated).",
                metric.structure, metric.metric
            ),
        ),
    };
    judging.finding(FindingCode::Oar, verdict, message)
}

/// Phases in messages: "25 x 2.00 Gy + BOOST 8 x 2.00 Gy".
fn phases_text(phases: &[Phase]) -> String {
    let parts: Vec<String> = phases
        .iter()
        .map(|phase| {
            let kind = match phase.kind {
                PhaseKind::Initial => "",
                PhaseKind::Boost => "boost ",
            };
            format!(
                "{kind}{} × {} Gy",
                phase.fractions,
                dose_text(phase.dose_per_fraction_gy)
            )
        })
        .collect();
    parts.join(" + ")
}

fn setting_name(setting: Setting) -> &'static str {
    match setting {
        Setting::None => "NONE",
        Setting::Preoperative => "PREOPERATIVE",
        Setting::Postoperative => "POSTOPERATIVE",
        Setting::NeoadjuvantChemoradiation => "NEOADJUVANT_CHEMORADIATION",
    }
}

fn phase_kind_name(kind: PhaseKind) -> &'static str {
    match kind {
        PhaseKind::Initial => "INITIAL",
        PhaseKind::Boost => "BOOST",
    }
}
