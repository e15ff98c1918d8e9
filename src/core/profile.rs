//! The guideline profile: every number, text and reference the rules use (clinical spec: "every
//! number here is a parameter of the guideline profile"). [`ProfileSpec`] is the profile as written
//! in a file, with string ids; [`Profile::new`] checks it whole and resolves it into lookup tables
//! indexed by the id enums, so that evaluation never searches and never fails.

use super::case::Organ;
use super::ids::{AlertCode, FindingCode, RuleId, Severity, VolumeCode};
use super::plan::{Phase, PhaseKind, Setting};

/// Highest total dose any prescription may carry (clinical spec §12a).
pub const MAX_TOTAL_DOSE_GY: f64 = 66.0;
/// Highest total dose for a retroperitoneal site (clinical spec §12a).
pub const MAX_RETROPERITONEAL_TOTAL_DOSE_GY: f64 = 50.4;
/// Longest alert summary, in characters.
pub const MAX_SUMMARY_CHARS: usize = 140;
/// Most references a profile may define (plans track citations in a 64-bit set).
pub const MAX_REFERENCES: usize = 64;

// ---------------------------------------------------------------------------------------------
// The profile as written (string ids), filled by the loader.

/// The profile as written in a file.
#[derive(Debug, Clone, Default)]
pub struct ProfileSpec {
    pub version: String,
    /// The version this one replaces (empty for a first version).
    pub previous_version: String,
    pub disclaimer: String,
    pub alpha_beta_tumor_gy: f64,
    pub alpha_beta_late_gy: f64,
    pub large_tumor_size_cm: f64,
    pub window_earliest_days: i64,
    pub window_latest_days: i64,
    pub overdue_critical_after_days: i64,
    pub references: Vec<ReferenceSpec>,
    pub rules: Vec<RuleSpec>,
    pub alerts: Vec<AlertSpec>,
    pub volumes: Vec<VolumeSpec>,
    pub outcomes: Vec<OutcomeSpec>,
    pub constraints: Vec<ConstraintSpec>,
    pub schedules: Vec<ScheduleSpec>,
    pub check: CheckSpec,
    pub changes: Vec<ChangeSpec>,
}

/// One change since the previous version, for the guideline committee.
#[derive(Debug, Clone, Default)]
pub struct ChangeSpec {
    pub summary: String,
    pub reason: String,
    pub references: Vec<String>,
}

/// A literature reference.
#[derive(Debug, Clone, Default)]
pub struct ReferenceSpec {
    pub id: String,
    pub citation: String,
    pub doi: String,
}

/// A rule's statement and references.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub id: String,
    pub statement: String,
    pub references: Vec<String>,
}

/// An alert's texts and default severity.
#[derive(Debug, Clone, Default)]
pub struct AlertSpec {
    pub code: String,
    pub severity: String,
    pub summary: String,
    pub detail: String,
    pub references: Vec<String>,
}

/// A target-volume description.
#[derive(Debug, Clone, Default)]
pub struct VolumeSpec {
    pub code: String,
    pub description: String,
    pub references: Vec<String>,
}

/// An expected-outcome statement, keyed by its OUTCOME-… rule id.
#[derive(Debug, Clone, Default)]
pub struct OutcomeSpec {
    pub rule: String,
    pub text: String,
    pub references: Vec<String>,
}

/// An organ-at-risk constraint row.
#[derive(Debug, Clone, Default)]
pub struct ConstraintSpec {
    /// Organs (ORGAN names without prefix, e.g. `KIDNEY_LEFT`) whose presence emits the row.
    pub organs: Vec<String>,
    pub structure: String,
    pub metric: String,
    pub limit: f64,
    /// A bilateral-kidney limit: not emitted with a solitary functioning kidney.
    pub bilateral_kidneys: bool,
    /// The endpoint and context of the limit, returned with the constraint.
    pub note: String,
    pub references: Vec<String>,
}

/// One row of the schedule table (clinical spec §4).
#[derive(Debug, Clone, Default)]
pub struct ScheduleSpec {
    /// The schedule group: `RETROPERITONEAL` or `EXTREMITY`.
    pub group: String,
    /// `PREOPERATIVE`, `POSTOPERATIVE` or `NEOADJUVANT_CHEMORADIATION`.
    pub setting: String,
    /// `ANY`, `R0_NOT_CLOSE` or `R0_CLOSE_OR_POSITIVE`.
    pub margins: String,
    pub options: Vec<OptionSpec>,
}

/// One prescription option of a schedule row.
#[derive(Debug, Clone, Default)]
pub struct OptionSpec {
    pub label: String,
    pub preferred: bool,
    pub concurrent_chemotherapy: bool,
    /// An alert code the option raises when listed (e.g. the hypofractionation alert), or empty.
    pub alert: String,
    pub phases: Vec<PhaseSpec>,
    pub references: Vec<String>,
}

/// One phase of an option.
#[derive(Debug, Clone, Default)]
pub struct PhaseSpec {
    /// `INITIAL` or `BOOST`.
    pub kind: String,
    pub dose_per_fraction_gy: f64,
    pub fractions: u32,
}

/// Parameters of the prescription check (clinical spec §12).
#[derive(Debug, Clone, Default)]
pub struct CheckSpec {
    pub dose_tolerance_gy: f64,
    pub fraction_pass_min_gy: f64,
    pub fraction_pass_max_gy: f64,
    pub fraction_review_min_gy: f64,
    pub fraction_review_max_gy: f64,
    /// RX_DOSE fails beyond this multiple of the row's highest late-tissue EQD2.
    pub late_eqd2_fail_factor: f64,
    pub findings: Vec<FindingSpec>,
}

/// References of a finding code.
#[derive(Debug, Clone, Default)]
pub struct FindingSpec {
    pub code: String,
    pub references: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The resolved profile.

/// The schedule group (clinical spec §2): it picks the §4 rows, the §12 rows and bounds.
/// Retroperitoneal and unclassified (OTHER) sites are planned on the retroperitoneal rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScheduleGroup {
    Retroperitoneal,
    Extremity,
}

/// Margin column of the postoperative schedule rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarginRow {
    /// Rows that do not depend on the margin.
    Any,
    /// R0, not close.
    R0NotClose,
    /// R0 close, R1 or R2.
    R0CloseOrPositive,
}

/// A reference as cited in plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceDef {
    pub id: String,
    pub citation: String,
    pub doi: String,
}

/// Texts with their references and the set of cited reference positions.
#[derive(Debug, Clone)]
pub struct Cited {
    pub text: String,
    pub reference_ids: Vec<String>,
    pub(crate) reference_mask: u64,
}

/// An alert definition.
#[derive(Debug, Clone)]
pub struct AlertDef {
    pub severity: Severity,
    pub summary: String,
    pub detail: String,
    pub reference_ids: Vec<String>,
    pub(crate) reference_mask: u64,
}

/// A resolved constraint row.
#[derive(Debug, Clone)]
pub struct ConstraintDef {
    pub organs: Vec<Organ>,
    pub structure: String,
    pub metric: String,
    pub limit: f64,
    pub bilateral_kidneys: bool,
    pub note: String,
    pub reference_ids: Vec<String>,
    pub(crate) reference_mask: u64,
}

/// A resolved prescription option.
#[derive(Debug, Clone)]
pub struct OptionDef {
    pub label: String,
    pub preferred: bool,
    pub concurrent_chemotherapy: bool,
    pub alert: Option<AlertCode>,
    pub phases: Vec<Phase>,
    pub total_dose_gy: f64,
    pub eqd2_tumor_gy: f64,
    pub eqd2_late_gy: f64,
    pub reference_ids: Vec<String>,
    pub(crate) reference_mask: u64,
}

/// A resolved schedule row; options with the preferred one first.
#[derive(Debug, Clone)]
pub struct ScheduleDef {
    pub group: ScheduleGroup,
    pub setting: Setting,
    pub margins: MarginRow,
    pub options: Vec<OptionDef>,
}

/// The resolved check parameters.
#[derive(Debug, Clone)]
pub struct CheckParams {
    pub dose_tolerance_gy: f64,
    pub fraction_pass_min_gy: f64,
    pub fraction_pass_max_gy: f64,
    pub fraction_review_min_gy: f64,
    pub fraction_review_max_gy: f64,
    pub late_eqd2_fail_factor: f64,
    /// After a completed preoperative course there is no schedule row: RX_DOSE judges the
    /// late-tissue EQD2 against this one, the boost of the extremity postoperative row for a
    /// close or positive margin (2.0 Gy x 8 = 16 Gy in 2026.2).
    pub after_preop_rt_reference_late_gy: f64,
    pub finding_references: Vec<Vec<String>>,
}

/// One change since the previous version, resolved.
#[derive(Debug, Clone)]
pub struct ChangeDef {
    pub summary: String,
    pub reason: String,
    pub reference_ids: Vec<String>,
}

/// A validated guideline profile.
#[derive(Debug, Clone)]
pub struct Profile {
    version: String,
    previous_version: String,
    sha256: String,
    disclaimer: String,
    pub(crate) alpha_beta_tumor_gy: f64,
    pub(crate) alpha_beta_late_gy: f64,
    pub(crate) large_tumor_size_cm: f64,
    pub(crate) window_earliest_days: i64,
    pub(crate) window_latest_days: i64,
    pub(crate) overdue_critical_after_days: i64,
    references: Vec<ReferenceDef>,
    rules: Vec<Cited>,
    alerts: Vec<AlertDef>,
    volumes: Vec<Cited>,
    outcomes: Vec<Option<Cited>>,
    constraints: Vec<ConstraintDef>,
    schedules: Vec<ScheduleDef>,
    check: CheckParams,
    changes: Vec<ChangeDef>,
}

/// Why a profile was refused: every problem found, one sentence each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid guideline profile: {}", .problems.join("; "))]
pub struct ProfileError {
    pub problems: Vec<String>,
}

/// The outcome rules, whose statements come from `outcomes`.
pub const OUTCOME_RULES: [RuleId; 4] = [
    RuleId::OutcomeLocalControl,
    RuleId::OutcomeRpsEvidence,
    RuleId::OutcomeIvcLigation,
    RuleId::OutcomeIvcRenal,
];

/// Schedule rows the rules need, each exactly once.
pub const REQUIRED_SCHEDULES: [(ScheduleGroup, Setting, MarginRow); 7] = [
    (
        ScheduleGroup::Extremity,
        Setting::Preoperative,
        MarginRow::Any,
    ),
    (
        ScheduleGroup::Extremity,
        Setting::NeoadjuvantChemoradiation,
        MarginRow::Any,
    ),
    (
        ScheduleGroup::Extremity,
        Setting::Postoperative,
        MarginRow::R0NotClose,
    ),
    (
        ScheduleGroup::Extremity,
        Setting::Postoperative,
        MarginRow::R0CloseOrPositive,
    ),
    (
        ScheduleGroup::Retroperitoneal,
        Setting::Preoperative,
        MarginRow::Any,
    ),
    (
        ScheduleGroup::Retroperitoneal,
        Setting::NeoadjuvantChemoradiation,
        MarginRow::Any,
    ),
    (
        ScheduleGroup::Retroperitoneal,
        Setting::Postoperative,
        MarginRow::Any,
    ),
];

impl Profile {
    /// Checks a profile whole and resolves it. `sha256` is the hex SHA-256 of the file's bytes.
    pub fn new(spec: ProfileSpec, sha256: String) -> Result<Profile, ProfileError> {
        let mut problems = Problems::default();
        problems.non_empty("version", &spec.version);
        problems.non_empty("disclaimer", &spec.disclaimer);
        problems.positive("alpha_beta_tumor_gy", spec.alpha_beta_tumor_gy);
        problems.positive("alpha_beta_late_gy", spec.alpha_beta_late_gy);
        problems.positive("large_tumor_size_cm", spec.large_tumor_size_cm);
        if spec.window_earliest_days < 0 || spec.window_earliest_days > spec.window_latest_days {
            problems.push(format!(
                "window: earliest_days {} and latest_days {} are not a range (need 0 <= earliest <= latest)",
                spec.window_earliest_days, spec.window_latest_days
            ));
        }
        if spec.overdue_critical_after_days < spec.window_latest_days {
            problems.push(format!(
                "window: overdue_critical_after_days {} is before latest_days {}",
                spec.overdue_critical_after_days, spec.window_latest_days
            ));
        }

        let references = resolve_references(&spec.references, &mut problems);
        let cite = |problems: &mut Problems, context: &str, ids: &[String]| -> u64 {
            let mut mask = 0_u64;
            if ids.is_empty() {
                problems.push(format!("{context}: cites no reference"));
            }
            for id in ids {
                match references.iter().position(|reference| &reference.id == id) {
                    Some(index) if index < MAX_REFERENCES => mask |= 1 << index,
                    _ => problems.push(format!("{context}: cites unknown reference id {id:?}")),
                }
            }
            mask
        };

        // Rules, alerts, volumes and outcomes: every id exactly once.
        let rules = resolve_by_id(
            &spec.rules,
            "rule",
            |rule| &rule.id,
            RuleId::parse,
            "not a rule id of the clinical specification",
            &mut problems,
            |problems, context, rule| {
                problems.non_empty(&format!("{context} statement"), &rule.statement);
                Cited {
                    text: rule.statement.clone(),
                    reference_ids: rule.references.clone(),
                    reference_mask: cite(problems, context, &rule.references),
                }
            },
        );
        let rules = complete(rules, RuleId::ALL, "rule", &mut problems);

        let alerts = resolve_by_id(
            &spec.alerts,
            "alert",
            |alert| &alert.code,
            AlertCode::parse,
            "not an alert code of the clinical specification",
            &mut problems,
            |problems, context, alert| {
                let severity = Severity::parse(&alert.severity);
                if severity.is_none() {
                    problems.push(format!(
                        "{context}: severity {:?} is not INFO, WARNING or CRITICAL",
                        alert.severity
                    ));
                }
                problems.non_empty(&format!("{context} summary"), &alert.summary);
                problems.non_empty(&format!("{context} detail"), &alert.detail);
                let length = alert.summary.chars().count();
                if length > MAX_SUMMARY_CHARS {
                    problems.push(format!(
                        "{context}: summary has {length} characters, more than {MAX_SUMMARY_CHARS}"
                    ));
                }
                AlertDef {
                    severity: severity.unwrap_or(Severity::Critical),
                    summary: alert.summary.clone(),
                    detail: alert.detail.clone(),
                    reference_ids: alert.references.clone(),
                    reference_mask: cite(problems, context, &alert.references),
                }
            },
        );
        let alerts = complete(alerts, AlertCode::ALL, "alert", &mut problems);

        let volumes = resolve_by_id(
            &spec.volumes,
            "volume",
            |volume| &volume.code,
            VolumeCode::parse,
            "not a volume code of the clinical specification",
            &mut problems,
            |problems, context, volume| {
                problems.non_empty(&format!("{context} description"), &volume.description);
                Cited {
                    text: volume.description.clone(),
                    reference_ids: volume.references.clone(),
                    reference_mask: cite(problems, context, &volume.references),
                }
            },
        );
        let volumes = complete(volumes, VolumeCode::ALL, "volume", &mut problems);

        let outcomes = resolve_by_id(
            &spec.outcomes,
            "outcome",
            |outcome| &outcome.rule,
            |rule| RuleId::parse(rule).filter(|rule| OUTCOME_RULES.contains(rule)),
            "not an OUTCOME-… rule id",
            &mut problems,
            |problems, context, outcome| {
                problems.non_empty(&format!("{context} text"), &outcome.text);
                Cited {
                    text: outcome.text.clone(),
                    reference_ids: outcome.references.clone(),
                    reference_mask: cite(problems, context, &outcome.references),
                }
            },
        );
        for rule in OUTCOME_RULES {
            if outcomes[rule.index()].is_none() {
                problems.push(format!("outcome {:?}: missing", rule.as_str()));
            }
        }

        let mut constraints = Vec::with_capacity(spec.constraints.len());
        let mut seen_rows: Vec<(&str, &str)> = Vec::new();
        for constraint in &spec.constraints {
            let context = format!("constraint {} {}", constraint.structure, constraint.metric);
            problems.non_empty(&format!("{context} structure"), &constraint.structure);
            if !is_tg263_metric(&constraint.metric) {
                problems.push(format!(
                    "{context}: metric {:?} is not in TG-263 form",
                    constraint.metric
                ));
            }
            problems.positive(&format!("{context} limit"), constraint.limit);
            problems.non_empty(&format!("{context} note"), &constraint.note);
            if seen_rows.contains(&(constraint.structure.as_str(), constraint.metric.as_str())) {
                problems.push(format!("{context}: defined twice"));
            }
            seen_rows.push((&constraint.structure, &constraint.metric));
            let mut organs = Vec::new();
            for organ in &constraint.organs {
                match parse_organ(organ) {
                    Some(organ) => organs.push(organ),
                    None => problems.push(format!("{context}: unknown organ {organ:?}")),
                }
            }
            if organs.is_empty() {
                problems.push(format!("{context}: names no organ"));
            }
            let mask = cite(&mut problems, &context, &constraint.references);
            constraints.push(ConstraintDef {
                organs,
                structure: constraint.structure.clone(),
                metric: constraint.metric.clone(),
                limit: constraint.limit,
                bilateral_kidneys: constraint.bilateral_kidneys,
                note: constraint.note.clone(),
                reference_ids: constraint.references.clone(),
                reference_mask: mask,
            });
        }
        // Plans list constraints sorted by structure, then metric.
        constraints.sort_by(|a, b| (&a.structure, &a.metric).cmp(&(&b.structure, &b.metric)));

        let mut schedules = Vec::with_capacity(spec.schedules.len());
        for schedule in &spec.schedules {
            let context = format!(
                "schedule {}/{}/{}",
                schedule.group, schedule.setting, schedule.margins
            );
            let group = parse_group(&schedule.group);
            let setting = parse_treatment_setting(&schedule.setting);
            let margins = match schedule.margins.as_str() {
                "ANY" => Some(MarginRow::Any),
                "R0_NOT_CLOSE" => Some(MarginRow::R0NotClose),
                "R0_CLOSE_OR_POSITIVE" => Some(MarginRow::R0CloseOrPositive),
                _ => None,
            };
            let (Some(group), Some(setting), Some(margins)) = (group, setting, margins) else {
                problems.push(format!(
                    "{context}: group, setting or margins not recognised"
                ));
                continue;
            };
            if !REQUIRED_SCHEDULES.contains(&(group, setting, margins)) {
                problems.push(format!("{context}: not a row of the schedule table"));
                continue;
            }
            if schedules.iter().any(|row: &ScheduleDef| {
                (row.group, row.setting, row.margins) == (group, setting, margins)
            }) {
                problems.push(format!("{context}: defined twice"));
                continue;
            }
            let mut options = Vec::new();
            for option in &schedule.options {
                let option_context = format!("{context} option {:?}", option.label);
                if let Some(option) = resolve_option(
                    option,
                    group,
                    &option_context,
                    spec.alpha_beta_tumor_gy,
                    spec.alpha_beta_late_gy,
                    &mut problems,
                    &cite,
                ) {
                    options.push(option);
                }
            }
            let preferred = options.iter().filter(|option| option.preferred).count();
            if preferred != 1 {
                problems.push(format!(
                    "{context}: {preferred} preferred options, need exactly 1"
                ));
            }
            options.sort_by_key(|option| !option.preferred);
            schedules.push(ScheduleDef {
                group,
                setting,
                margins,
                options,
            });
        }
        for (group, setting, margins) in REQUIRED_SCHEDULES {
            if !schedules
                .iter()
                .any(|row| (row.group, row.setting, row.margins) == (group, setting, margins))
            {
                problems.push(format!(
                    "schedule {group:?}/{setting:?}/{margins:?}: missing"
                ));
            }
        }

        let check = resolve_check(
            &spec.check,
            &schedules,
            spec.alpha_beta_late_gy,
            &mut problems,
            &cite,
        );

        problems.non_empty("previous_version", &spec.previous_version);
        if spec.previous_version == spec.version {
            problems.push(format!(
                "previous_version {:?} is this version",
                spec.previous_version
            ));
        }
        if spec.changes.is_empty() {
            problems.push("changes: none listed since the previous version".to_string());
        }
        let mut changes = Vec::with_capacity(spec.changes.len());
        for (index, change) in spec.changes.iter().enumerate() {
            let context = format!("change {}", index + 1);
            problems.non_empty(&format!("{context} summary"), &change.summary);
            problems.non_empty(&format!("{context} reason"), &change.reason);
            cite(&mut problems, &context, &change.references);
            changes.push(ChangeDef {
                summary: change.summary.clone(),
                reason: change.reason.clone(),
                reference_ids: change.references.clone(),
            });
        }

        if !problems.0.is_empty() {
            return Err(ProfileError {
                problems: problems.0,
            });
        }
        Ok(Profile {
            version: spec.version,
            previous_version: spec.previous_version,
            sha256,
            disclaimer: spec.disclaimer,
            alpha_beta_tumor_gy: spec.alpha_beta_tumor_gy,
            alpha_beta_late_gy: spec.alpha_beta_late_gy,
            large_tumor_size_cm: spec.large_tumor_size_cm,
            window_earliest_days: spec.window_earliest_days,
            window_latest_days: spec.window_latest_days,
            overdue_critical_after_days: spec.overdue_critical_after_days,
            references,
            rules,
            alerts,
            volumes,
            outcomes,
            constraints,
            schedules,
            check,
            changes,
        })
    }

    /// Profile version, e.g. `2026.2`.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// The version this profile replaces.
    pub fn previous_version(&self) -> &str {
        &self.previous_version
    }
    /// What changed since the previous version, and why.
    pub fn changes(&self) -> &[ChangeDef] {
        &self.changes
    }
    /// Hex SHA-256 of the profile file's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Disclaimer attached to every plan.
    pub fn disclaimer(&self) -> &str {
        &self.disclaimer
    }
    /// Tumour α/β in Gy.
    pub fn alpha_beta_tumor_gy(&self) -> f64 {
        self.alpha_beta_tumor_gy
    }
    /// Late-tissue α/β in Gy.
    pub fn alpha_beta_late_gy(&self) -> f64 {
        self.alpha_beta_late_gy
    }
    /// Every reference, in profile order.
    pub fn references(&self) -> &[ReferenceDef] {
        &self.references
    }
    /// A rule's statement and references.
    pub fn rule(&self, id: RuleId) -> &Cited {
        &self.rules[id.index()]
    }
    /// An alert's definition.
    pub fn alert(&self, code: AlertCode) -> &AlertDef {
        &self.alerts[code.index()]
    }
    /// A volume's description.
    pub fn volume(&self, code: VolumeCode) -> &Cited {
        &self.volumes[code.index()]
    }
    /// An outcome rule's statement (`None` for rules that are not OUTCOME-… rules).
    pub fn outcome(&self, rule: RuleId) -> Option<&Cited> {
        self.outcomes.get(rule.index()).and_then(Option::as_ref)
    }
    /// Every constraint row, sorted by structure then metric.
    pub fn constraints(&self) -> &[ConstraintDef] {
        &self.constraints
    }
    /// The schedule row for a schedule group, setting and margin column, if the table has it.
    pub fn schedule(
        &self,
        group: ScheduleGroup,
        setting: Setting,
        margins: MarginRow,
    ) -> Option<&ScheduleDef> {
        self.schedules
            .iter()
            .find(|row| row.group == group && row.setting == setting && row.margins == margins)
    }
    /// Every schedule row.
    pub fn schedules(&self) -> &[ScheduleDef] {
        &self.schedules
    }
    /// Check parameters.
    pub fn check_params(&self) -> &CheckParams {
        &self.check
    }
    /// References of a finding code.
    pub fn finding_references(&self, code: FindingCode) -> &[String] {
        &self.check.finding_references[code.index()]
    }
    /// Start-window offsets in days after surgery: (earliest, latest).
    pub fn window_days(&self) -> (i64, i64) {
        (self.window_earliest_days, self.window_latest_days)
    }
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, problem: String) {
        self.0.push(problem);
    }
    fn non_empty(&mut self, context: &str, text: &str) {
        if text.trim().is_empty() {
            self.0.push(format!("{context}: empty text"));
        }
    }
    fn positive(&mut self, context: &str, value: f64) {
        if !(value.is_finite() && value > 0.0) {
            self.0.push(format!(
                "{context}: {value} is not a finite number greater than 0"
            ));
        }
    }
}

/// Reads entries keyed by an id string into a table indexed by the id enum `I`. Each entry's
/// problems start with `kind` and its key (`rule "IND-LOW-RISK"`); a key `parse` refuses is the
/// problem `not_an_id`, and an id defined twice is a problem. `resolve` checks one entry and
/// builds its value.
fn resolve_by_id<S, I: Id, T: Clone>(
    entries: &[S],
    kind: &str,
    key: impl Fn(&S) -> &String,
    parse: impl Fn(&str) -> Option<I>,
    not_an_id: &str,
    problems: &mut Problems,
    mut resolve: impl FnMut(&mut Problems, &str, &S) -> T,
) -> Vec<Option<T>> {
    let mut table = vec![None; I::ALL.len()];
    for entry in entries {
        let context = format!("{kind} {:?}", key(entry));
        let Some(id) = parse(key(entry)) else {
            problems.push(format!("{context}: {not_an_id}"));
            continue;
        };
        let value = resolve(problems, &context, entry);
        if table[id.position()].is_some() {
            problems.push(format!("{context}: defined twice"));
        }
        table[id.position()] = Some(value);
    }
    table
}

/// The table without its gaps; each id missing is a problem. The result is indexed by id only
/// when nothing is missing, which holds for every profile served: a profile with any problem is
/// refused as a whole.
fn complete<T, I: Id>(
    table: Vec<Option<T>>,
    ids: &[I],
    kind: &str,
    problems: &mut Problems,
) -> Vec<T> {
    let mut resolved = Vec::with_capacity(table.len());
    for (entry, id) in table.into_iter().zip(ids) {
        match entry {
            Some(entry) => resolved.push(entry),
            None => problems.push(format!("{kind} {:?}: missing", id.name())),
        }
    }
    resolved
}

/// An id enum of `ids` that the profile keeps a table of.
trait Id: Copy + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
    /// Its place in `ALL` (the enum's own `index`), where its entry goes in a table.
    fn position(self) -> usize;
}

macro_rules! impl_id {
    ($($id:ident),+) => {$(
        impl Id for $id {
            const ALL: &'static [Self] = $id::ALL;
            fn name(self) -> &'static str {
                $id::as_str(self)
            }
            fn position(self) -> usize {
                $id::index(self)
            }
        }
    )+};
}
impl_id!(RuleId, AlertCode, VolumeCode, FindingCode);

fn resolve_references(specs: &[ReferenceSpec], problems: &mut Problems) -> Vec<ReferenceDef> {
    if specs.len() > MAX_REFERENCES {
        problems.push(format!(
            "references: {} defined, at most {MAX_REFERENCES} allowed",
            specs.len()
        ));
    }
    let mut references: Vec<ReferenceDef> = Vec::with_capacity(specs.len());
    for reference in specs {
        let context = format!("reference {:?}", reference.id);
        problems.non_empty(&format!("{context} id"), &reference.id);
        problems.non_empty(&format!("{context} citation"), &reference.citation);
        if !reference.doi.is_empty() && !reference.doi.starts_with("10.") {
            problems.push(format!(
                "{context}: doi {:?} does not start with 10.",
                reference.doi
            ));
        }
        if references.iter().any(|seen| seen.id == reference.id) {
            problems.push(format!("{context}: defined twice"));
        }
        references.push(ReferenceDef {
            id: reference.id.clone(),
            citation: reference.citation.clone(),
            doi: reference.doi.clone(),
        });
    }
    references
}

fn resolve_option(
    option: &OptionSpec,
    group: ScheduleGroup,
    context: &str,
    alpha_beta_tumor_gy: f64,
    alpha_beta_late_gy: f64,
    problems: &mut Problems,
    cite: &dyn Fn(&mut Problems, &str, &[String]) -> u64,
) -> Option<OptionDef> {
    problems.non_empty(&format!("{context} label"), &option.label);
    let alert = if option.alert.is_empty() {
        None
    } else {
        // Only the hypofractionated option raises an alert of its own (ALERT-HYPOFRACTIONATION).
        let code = AlertCode::parse(&option.alert)
            .filter(|code| *code == AlertCode::HypofractionationLimitedEvidence);
        if code.is_none() {
            problems.push(format!(
                "{context}: alert {:?} is not HYPOFRACTIONATION_LIMITED_EVIDENCE, the only alert an option can raise",
                option.alert
            ));
        }
        code
    };
    let mut phases = Vec::with_capacity(option.phases.len());
    for (index, phase) in option.phases.iter().enumerate() {
        let kind = match phase.kind.as_str() {
            "INITIAL" => PhaseKind::Initial,
            "BOOST" => PhaseKind::Boost,
            other => {
                problems.push(format!(
                    "{context} phase {index}: kind {other:?} is not INITIAL or BOOST"
                ));
                continue;
            }
        };
        let expected = if index == 0 {
            PhaseKind::Initial
        } else {
            PhaseKind::Boost
        };
        if kind != expected || index > 1 {
            problems.push(format!(
                "{context}: phases must be one INITIAL then at most one BOOST"
            ));
        }
        if !(phase.dose_per_fraction_gy.is_finite()
            && phase.dose_per_fraction_gy > 0.0
            && phase.dose_per_fraction_gy <= 20.0)
        {
            problems.push(format!(
                "{context} phase {index}: dose per fraction {} Gy out of range",
                phase.dose_per_fraction_gy
            ));
        }
        if phase.fractions == 0 || phase.fractions > 60 {
            problems.push(format!(
                "{context} phase {index}: {} fractions out of range 1-60",
                phase.fractions
            ));
        }
        phases.push(Phase {
            kind,
            dose_per_fraction_gy: phase.dose_per_fraction_gy,
            fractions: phase.fractions,
        });
    }
    if phases.is_empty() {
        problems.push(format!("{context}: no phases"));
    }
    let total_dose_gy: f64 = phases.iter().map(Phase::dose_gy).sum();
    if total_dose_gy > MAX_TOTAL_DOSE_GY + 1e-9 {
        problems.push(format!(
            "{context}: total {total_dose_gy} Gy above the {MAX_TOTAL_DOSE_GY} Gy bound"
        ));
    }
    if group == ScheduleGroup::Retroperitoneal {
        if total_dose_gy > MAX_RETROPERITONEAL_TOTAL_DOSE_GY + 1e-9 {
            problems.push(format!(
                "{context}: total {total_dose_gy} Gy above the retroperitoneal bound of {MAX_RETROPERITONEAL_TOTAL_DOSE_GY} Gy"
            ));
        }
        if phases.iter().any(|phase| phase.kind == PhaseKind::Boost) {
            problems.push(format!(
                "{context}: a retroperitoneal option cannot carry a boost"
            ));
        }
    }
    let reference_mask = cite(problems, context, &option.references);
    Some(OptionDef {
        label: option.label.clone(),
        preferred: option.preferred,
        concurrent_chemotherapy: option.concurrent_chemotherapy,
        alert,
        eqd2_tumor_gy: super::radiobiology::eqd2_gy(&phases, alpha_beta_tumor_gy),
        eqd2_late_gy: super::radiobiology::eqd2_gy(&phases, alpha_beta_late_gy),
        phases,
        total_dose_gy,
        reference_ids: option.references.clone(),
        reference_mask,
    })
}

fn resolve_check(
    spec: &CheckSpec,
    schedules: &[ScheduleDef],
    alpha_beta_late_gy: f64,
    problems: &mut Problems,
    cite: &dyn Fn(&mut Problems, &str, &[String]) -> u64,
) -> CheckParams {
    problems.positive("check dose_tolerance_gy", spec.dose_tolerance_gy);
    // Doses are compared in whole nano-grays (`check`): a tolerance that is not a whole number of
    // them would be rounded without a word.
    let nano_grays = spec.dose_tolerance_gy * 1e9;
    if spec.dose_tolerance_gy > 0.0
        && (nano_grays < 1.0 || (nano_grays - nano_grays.round()).abs() > 1e-6)
    {
        problems.push(format!(
            "check dose_tolerance_gy: {} is not a whole number of the nano-grays doses are compared in",
            spec.dose_tolerance_gy
        ));
    }
    let ordered = [
        spec.fraction_review_min_gy,
        spec.fraction_pass_min_gy,
        spec.fraction_pass_max_gy,
        spec.fraction_review_max_gy,
    ];
    if ordered
        .iter()
        .any(|value| !value.is_finite() || *value <= 0.0)
        || ordered.windows(2).any(|pair| pair[0] > pair[1])
    {
        problems.push(format!(
            "check fraction sizes: need 0 < review_min <= pass_min <= pass_max <= review_max, got {ordered:?}"
        ));
    }
    if !(spec.late_eqd2_fail_factor.is_finite() && spec.late_eqd2_fail_factor >= 1.0) {
        problems.push(format!(
            "check late_eqd2_fail_factor: {} is not a finite number of at least 1",
            spec.late_eqd2_fail_factor
        ));
    }
    // The reference after a completed preoperative course: the boost of the extremity
    // postoperative schedule for a close or positive margin.
    let boost_row = schedules.iter().find(|row| {
        (row.group, row.setting, row.margins)
            == (
                ScheduleGroup::Extremity,
                Setting::Postoperative,
                MarginRow::R0CloseOrPositive,
            )
    });
    let boost = boost_row
        .and_then(|row| row.options.iter().find(|option| option.preferred))
        .and_then(|option| {
            option
                .phases
                .iter()
                .find(|phase| phase.kind == PhaseKind::Boost)
        });
    let after_preop_rt_reference_late_gy = match boost {
        Some(boost) => super::radiobiology::eqd2_gy(&[*boost], alpha_beta_late_gy),
        None => {
            if boost_row.is_some() {
                problems.push(
                    "schedule Extremity/Postoperative/R0CloseOrPositive: its preferred option has no BOOST phase, the reference of RX_DOSE after a completed preoperative course".to_string(),
                );
            }
            0.0
        }
    };
    let finding_references = resolve_by_id(
        &spec.findings,
        "finding",
        |finding| &finding.code,
        FindingCode::parse,
        "not a finding code",
        problems,
        |problems, context, finding| {
            cite(problems, context, &finding.references);
            finding.references.clone()
        },
    );
    let finding_references = complete(finding_references, FindingCode::ALL, "finding", problems);
    CheckParams {
        dose_tolerance_gy: spec.dose_tolerance_gy,
        fraction_pass_min_gy: spec.fraction_pass_min_gy,
        fraction_pass_max_gy: spec.fraction_pass_max_gy,
        fraction_review_min_gy: spec.fraction_review_min_gy,
        fraction_review_max_gy: spec.fraction_review_max_gy,
        late_eqd2_fail_factor: spec.late_eqd2_fail_factor,
        after_preop_rt_reference_late_gy,
        finding_references,
    }
}

fn parse_group(text: &str) -> Option<ScheduleGroup> {
    match text {
        "RETROPERITONEAL" => Some(ScheduleGroup::Retroperitoneal),
        "EXTREMITY" => Some(ScheduleGroup::Extremity),
        _ => None,
    }
}

fn parse_treatment_setting(text: &str) -> Option<Setting> {
    match text {
        "PREOPERATIVE" => Some(Setting::Preoperative),
        "POSTOPERATIVE" => Some(Setting::Postoperative),
        "NEOADJUVANT_CHEMORADIATION" => Some(Setting::NeoadjuvantChemoradiation),
        _ => None,
    }
}

fn parse_organ(text: &str) -> Option<Organ> {
    match text {
        "KIDNEY_LEFT" => Some(Organ::KidneyLeft),
        "KIDNEY_RIGHT" => Some(Organ::KidneyRight),
        "LIVER" => Some(Organ::Liver),
        "SMALL_BOWEL" => Some(Organ::SmallBowel),
        "LARGE_BOWEL" => Some(Organ::LargeBowel),
        "STOMACH" => Some(Organ::Stomach),
        "SPINAL_CORD" => Some(Organ::SpinalCord),
        "DUODENUM" => Some(Organ::Duodenum),
        "HEART" => Some(Organ::Heart),
        "LUNGS" => Some(Organ::Lungs),
        "ESOPHAGUS" => Some(Organ::Esophagus),
        "BLADDER" => Some(Organ::Bladder),
        _ => None,
    }
}

/// TG-263 dose-volume metric forms accepted by the guideline (clinical spec §12):
/// `Mean|Max|Min[Gy|cGy]`, `V<dose>Gy|cGy[%|cc]`, `D<volume>%|cc[Gy|cGy]`.
pub fn is_tg263_metric(metric: &str) -> bool {
    tg263_metric_unit(metric).is_some()
}

/// The unit in brackets of a valid TG-263 metric (`Gy`, `cGy`, `%` or `cc`), or `None` when the
/// metric is not in an accepted form.
pub fn tg263_metric_unit(metric: &str) -> Option<&str> {
    let (head, unit) = metric.strip_suffix(']')?.split_once('[')?;
    match head {
        "Mean" | "Max" | "Min" => matches!(unit, "Gy" | "cGy").then_some(unit),
        _ => {
            if let Some(dose) = head.strip_prefix('V') {
                let number = dose
                    .strip_suffix("cGy")
                    .or_else(|| dose.strip_suffix("Gy"))?;
                (is_decimal(number) && matches!(unit, "%" | "cc")).then_some(unit)
            } else if let Some(volume) = head.strip_prefix('D') {
                let number = volume
                    .strip_suffix('%')
                    .or_else(|| volume.strip_suffix("cc"))?;
                (is_decimal(number) && matches!(unit, "Gy" | "cGy")).then_some(unit)
            } else {
                None
            }
        }
    }
}

fn is_decimal(text: &str) -> bool {
    let mut parts = text.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|byte| byte.is_ascii_digit())
        && fraction.is_none_or(|fraction| {
            !fraction.is_empty() && fraction.bytes().all(|byte| byte.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tg263_metric_forms() {
        for good in [
            "Mean[Gy]",
            "Max[cGy]",
            "Min[Gy]",
            "V20Gy[%]",
            "V4500cGy[cc]",
            "V12.5Gy[%]",
            "D95%[Gy]",
            "D2cc[cGy]",
            "D0.03cc[Gy]",
        ] {
            assert!(is_tg263_metric(good), "{good}");
        }
        for bad in [
            "",
            "mean dose",
            "Mean",
            "Mean[%]",
            "V20[%]",
            "V20Gy[Gy]",
            "D95%[%]",
            "VGy[%]",
            "V.5Gy[%]",
            "V5.Gy[%]",
            "D95[Gy]",
            "Mean[Gy] ",
            "V-1Gy[%]",
            "X[Gy]",
        ] {
            assert!(!is_tg263_metric(bad), "{bad}");
        }
        assert_eq!(tg263_metric_unit("V20Gy[%]"), Some("%"));
    }
}
