//! `check`: the prescription check of clinical spec §12. A proposal is validated like a case
//! (every violation with its request path), then compared with the plan `recommend` gives.

use super::case::{Case, RawCase, RawEnum, Stage};
use super::date::Date;
use super::ids::{FindingCode, Verdict};
use super::plan::{Finding, Phase, PhaseKind, Report, Setting, StartWindow, WindowStatus};
use super::profile::{Profile, ScheduleSite, tg263_metric_unit};
use super::radiobiology::eqd2_gy;
use super::rules::{recommend, schedule_for, schedule_site, start_window};
use super::violation::Violations;

/// Largest dose per fraction a proposal may name, in Gy.
pub const MAX_DOSE_PER_FRACTION_GY: f64 = 20.0;
/// Most fractions a phase may name.
pub const MAX_FRACTIONS: i64 = 60;

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
                    // Checked whenever the surgery date itself is valid, even when another
                    // field of the case is not (both violations are then reported).
                    let before_surgery = raw
                        .case
                        .as_ref()
                        .and_then(RawCase::valid_surgery_date)
                        .is_some_and(|surgery_date| date < surgery_date);
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

/// Checks a proposal against the guideline (clinical spec §12).
pub fn check<'p>(profile: &'p Profile, proposal: &Proposal<'p>) -> Report<'p> {
    let case = &proposal.case;
    let plan = recommend(profile, case);
    let params = profile.check_params();
    // "Dose comparisons within 0.01 Gy", in whole nano-grays so that the binary form of the
    // decimals cannot tip a verdict (2.01 − 2.0 is 0.00999… Gy and 2.0 + 0.01 is 2.01, which made
    // 2.01 Gy "equal" to a listed 2.0 Gy yet "above" a 2.0 Gy bound), while a dose that is truly
    // inside the tolerance stays inside (in micro-grays 2.0099999 Gy rounded to 2.01 and fell out).
    // A dose exactly the tolerance away from a schedule or a bound is neither equal to it nor
    // inside it — the reading that passes less; for an organ limit, where passing means staying
    // below, the reading that passes less counts a dose within the tolerance *or exactly at it*
    // below the limit as reaching it.
    let nano_gy = |dose: f64| (dose * 1e9).round();
    let tolerance = nano_gy(params.dose_tolerance_gy);
    let gap = |a: f64, b: f64| nano_gy(a - b);
    let equal = |a: f64, b: f64| gap(a, b).abs() < tolerance;
    let at_least = |value: f64, bound: f64| gap(value, bound) > -tolerance;
    let at_most = |value: f64, bound: f64| gap(value, bound) < tolerance;
    let reaches = |value: f64, limit: f64| gap(value, limit) >= -tolerance;
    let site = schedule_site(plan.site_group);
    let schedule = schedule_for(profile, case, proposal.setting);
    let total_dose_gy: f64 = proposal.phases.iter().map(Phase::dose_gy).sum();
    let mut findings = Vec::new();
    let mut add = |code: FindingCode, verdict: Verdict, message: String| {
        findings.push(Finding {
            code,
            verdict,
            message,
            reference_ids: profile.finding_references(code),
        });
    };

    if plan.indication == super::plan::Indication::NotIndicated {
        add(
            FindingCode::NotIndicated,
            Verdict::Fail,
            "The guideline does not indicate radiotherapy for this case.".into(),
        );
    }
    if plan.setting != proposal.setting {
        add(
            FindingCode::SettingMismatch,
            Verdict::Review,
            format!(
                "Proposed setting {} differs from the recommended setting {}.",
                setting_name(proposal.setting),
                setting_name(plan.setting)
            ),
        );
    }
    if case.prior_radiotherapy() {
        add(
            FindingCode::Reirradiation,
            Verdict::Review,
            "Earlier radiotherapy to this region: the cumulative dose needs physics review.".into(),
        );
    }

    // RX_TOTAL_DOSE: a listed schedule total passes; inside the bounds is for review; outside fails.
    let listed = schedule.is_some_and(|row| {
        row.options
            .iter()
            .any(|option| equal(option.total_dose_gy, total_dose_gy))
    });
    let bound = params
        .total_dose_bounds
        .iter()
        .find(|bound| bound.site == site && bound.setting == proposal.setting);
    let (total_verdict, total_message) = match bound {
        _ if listed => (
            Verdict::Pass,
            format!(
                "Total {} Gy matches a guideline schedule.",
                dose_text(total_dose_gy)
            ),
        ),
        Some(bound)
            if at_least(total_dose_gy, bound.min_gy) && at_most(total_dose_gy, bound.max_gy) =>
        {
            (
                Verdict::Review,
                format!(
                    "Total {} Gy is not a guideline schedule but lies within {:.1}-{:.1} Gy.",
                    dose_text(total_dose_gy),
                    bound.min_gy,
                    bound.max_gy
                ),
            )
        }
        Some(bound) => (
            Verdict::Fail,
            format!(
                "Total {} Gy lies outside {:.1}-{:.1} Gy.",
                dose_text(total_dose_gy),
                bound.min_gy,
                bound.max_gy
            ),
        ),
        None => (
            Verdict::Fail,
            format!(
                "Total {} Gy: no bounds for this setting.",
                dose_text(total_dose_gy)
            ),
        ),
    };
    add(FindingCode::TotalDose, total_verdict, total_message);

    // RX_FRACTION_SIZE, once per phase.
    for (index, phase) in proposal.phases.iter().enumerate() {
        let dose = phase.dose_per_fraction_gy;
        let listed_initial = phase.kind == PhaseKind::Initial
            && schedule.is_some_and(|row| {
                row.options.iter().any(|option| {
                    option.phases.first().is_some_and(|listed| {
                        listed.fractions == phase.fractions
                            && equal(listed.dose_per_fraction_gy, dose)
                    })
                })
            });
        let in_pass_range = at_least(dose, params.fraction_pass_min_gy)
            && at_most(dose, params.fraction_pass_max_gy);
        let in_review_range = at_least(dose, params.fraction_review_min_gy)
            && at_most(dose, params.fraction_review_max_gy);
        let verdict = if in_pass_range || listed_initial {
            Verdict::Pass
        } else if in_review_range {
            Verdict::Review
        } else {
            Verdict::Fail
        };
        add(
            FindingCode::FractionSize,
            verdict,
            format!(
                "Phase {} ({}): {} Gy per fraction × {}.",
                index + 1,
                phase_kind_name(phase.kind),
                dose_text(dose),
                phase.fractions
            ),
        );
    }

    if proposal
        .phases
        .iter()
        .any(|phase| phase.kind == PhaseKind::Boost)
    {
        let (verdict, message) = if site == ScheduleSite::Retroperitoneal {
            (
                Verdict::Fail,
                "No boost for a retroperitoneal site: bowel tolerance excludes it.",
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
                "Postoperative boost as in the guideline schedules.",
            )
        };
        add(FindingCode::Boost, verdict, message.into());
    }

    if let (Setting::Postoperative, Some(planned), Stage::PostResection(resection)) =
        (proposal.setting, proposal.planned_start_date, case.stage())
    {
        let window = start_window(profile, resection.surgery_date, planned);
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
        add(FindingCode::StartDate, verdict, message);
    }

    for metric in &proposal.dose_metrics {
        let row = profile
            .constraints()
            .iter()
            .find(|row| row.structure == metric.structure && row.metric == metric.metric);
        let (verdict, message) = match row {
            Some(row) if row.bilateral_kidneys && case.solitary_functioning_kidney() => (
                Verdict::Review,
                format!(
                    "{} {}: bilateral-kidney limit not evaluated with a solitary functioning kidney.",
                    metric.structure, metric.metric
                ),
            ),
            Some(row) => {
                let in_gy = tg263_metric_unit(&metric.metric) == Some("Gy");
                let reaches_limit = if in_gy {
                    reaches(metric.value, row.limit)
                } else {
                    metric.value >= row.limit
                };
                if reaches_limit {
                    (
                        Verdict::Fail,
                        format!(
                            "{} {} = {} reaches the limit < {}.",
                            metric.structure,
                            metric.metric,
                            value_text(metric.value),
                            row.limit
                        ),
                    )
                } else {
                    (
                        Verdict::Pass,
                        format!(
                            "{} {} = {} is below the limit < {}.",
                            metric.structure,
                            metric.metric,
                            value_text(metric.value),
                            row.limit
                        ),
                    )
                }
            }
            None => (
                Verdict::Review,
                format!(
                    "{} {}: no guideline constraint for this pair (not evaluated).",
                    metric.structure, metric.metric
                ),
            ),
        };
        add(FindingCode::Oar, verdict, message);
    }

    let verdict = findings
        .iter()
        .map(|finding| finding.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    Report {
        verdict,
        findings,
        total_dose_gy,
        eqd2_tumor_gy: eqd2_gy(&proposal.phases, profile.alpha_beta_tumor_gy()),
        eqd2_late_gy: eqd2_gy(&proposal.phases, profile.alpha_beta_late_gy()),
        plan,
    }
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
