//! The plan and the prescription-check report: what the core returns. Texts borrow from the
//! profile (`'p`), so building a plan copies no guideline text.

use smallvec::SmallVec;

use super::case::SiteGroup;
use super::date::Date;
use super::ids::{AlertCode, FindingCode, RuleId, Severity, Verdict, VolumeCode};
use super::profile::{ConstraintDef, OptionDef, Profile, ReferenceDef};

/// How strongly radiotherapy is recommended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Indication {
    Indicated,
    Mandatory,
    Consider,
    NotIndicated,
}

/// When radiotherapy is given relative to surgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    None,
    Preoperative,
    Postoperative,
    NeoadjuvantChemoradiation,
}

/// Role of a phase in a prescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhaseKind {
    Initial,
    Boost,
}

/// One phase: `dose_per_fraction_gy` × `fractions`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub kind: PhaseKind,
    pub dose_per_fraction_gy: f64,
    pub fractions: u32,
}

impl Phase {
    /// Total dose of the phase in Gy.
    pub fn dose_gy(&self) -> f64 {
        self.dose_per_fraction_gy * f64::from(self.fractions)
    }
}

/// One dose-fractionation option of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Prescription<'p> {
    pub label: &'p str,
    pub preferred: bool,
    pub phases: &'p [Phase],
    pub total_dose_gy: f64,
    pub eqd2_tumor_gy: f64,
    pub eqd2_late_gy: f64,
    pub concurrent_chemotherapy: bool,
    pub reference_ids: &'p [String],
}

impl<'p> Prescription<'p> {
    /// The plan's form of one of the profile's dose-fractionation options.
    pub fn of(option: &'p OptionDef) -> Prescription<'p> {
        Prescription {
            label: &option.label,
            preferred: option.preferred,
            phases: &option.phases,
            total_dose_gy: option.total_dose_gy,
            eqd2_tumor_gy: option.eqd2_tumor_gy,
            eqd2_late_gy: option.eqd2_late_gy,
            concurrent_chemotherapy: option.concurrent_chemotherapy,
            reference_ids: &option.reference_ids,
        }
    }
}

/// Where the evaluation date lies relative to the postoperative start window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartWindow {
    /// No postoperative window applies.
    NotApplicable,
    /// A window applies.
    Applicable {
        status: WindowStatus,
        earliest: Date,
        latest: Date,
        days_since_surgery: i64,
    },
}

/// Status of an applicable start window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStatus {
    Before,
    Open,
    Passed,
}

/// Target-volume guidance.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeGuidance<'p> {
    pub code: VolumeCode,
    pub description: &'p str,
    pub reference_ids: &'p [String],
}

/// An organ-at-risk constraint (the achieved value must stay below `limit`).
#[derive(Debug, Clone, PartialEq)]
pub struct OrganConstraint<'p> {
    pub structure: &'p str,
    pub metric: &'p str,
    pub limit: f64,
    pub reference_ids: &'p [String],
    pub note: &'p str,
}

impl<'p> OrganConstraint<'p> {
    /// The plan row of one of the profile's organ-at-risk constraints.
    pub fn of(definition: &'p ConstraintDef) -> OrganConstraint<'p> {
        OrganConstraint {
            structure: &definition.structure,
            metric: &definition.metric,
            limit: definition.limit,
            reference_ids: &definition.reference_ids,
            note: &definition.note,
        }
    }
}

/// An alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert<'p> {
    pub code: AlertCode,
    pub severity: Severity,
    pub summary: &'p str,
    pub detail: &'p str,
    pub reference_ids: &'p [String],
}

/// An expected-outcome statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement<'p> {
    pub rule_id: RuleId,
    pub text: &'p str,
    pub reference_ids: &'p [String],
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleFiring<'p> {
    pub rule_id: RuleId,
    pub summary: &'p str,
    pub reference_ids: &'p [String],
}

impl<'p> RuleFiring<'p> {
    /// The firing of `rule_id`: its statement and references from the profile.
    pub fn of(profile: &'p Profile, rule_id: RuleId) -> Self {
        let rule = profile.rule(rule_id);
        RuleFiring {
            rule_id,
            summary: &rule.text,
            reference_ids: &rule.reference_ids,
        }
    }
}

impl<'p> Alert<'p> {
    /// Alert `code` at `severity`, its texts and references from the profile.
    pub fn of(profile: &'p Profile, code: AlertCode, severity: Severity) -> Self {
        let definition = profile.alert(code);
        Alert {
            code,
            severity,
            summary: &definition.summary,
            detail: &definition.detail,
            reference_ids: &definition.reference_ids,
        }
    }
}

impl<'p> VolumeGuidance<'p> {
    /// The guidance for volume `code` from the profile.
    pub fn of(profile: &'p Profile, code: VolumeCode) -> Self {
        let definition = profile.volume(code);
        VolumeGuidance {
            code,
            description: &definition.text,
            reference_ids: &definition.reference_ids,
        }
    }
}

impl<'p> Statement<'p> {
    /// The expected-outcome statement of `rule_id`, if the profile has one.
    pub fn of(profile: &'p Profile, rule_id: RuleId) -> Option<Self> {
        profile.outcome(rule_id).map(|outcome| Statement {
            rule_id,
            text: &outcome.text,
            reference_ids: &outcome.reference_ids,
        })
    }
}

/// The plan for one case. `'p` covers the profile and the case's caller reference.
///
/// Its lists are held in the plan itself up to a size that holds every plan of the 2026.2 profile
/// (every organ row, every reference, room for every alert and rule that can fire together), and
/// on the heap beyond it, so any profile works: building a plan allocates nothing. The property
/// and vignette tests report a plan that outgrows its room
/// (docs/perf/decisions/014-plan-lists-inline.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<'p> {
    pub guideline_version: &'p str,
    pub guideline_sha256: &'p str,
    pub alpha_beta_tumor_gy: f64,
    pub alpha_beta_late_gy: f64,
    pub case_id: &'p str,
    pub evaluation_date: Date,
    pub indication: Indication,
    pub setting: Setting,
    pub site_group: SiteGroup,
    pub prescriptions: SmallVec<[Prescription<'p>; 3]>,
    pub start_window: StartWindow,
    pub volumes: SmallVec<[VolumeGuidance<'p>; 3]>,
    pub organ_constraints: SmallVec<[OrganConstraint<'p>; 14]>,
    pub alerts: SmallVec<[Alert<'p>; 12]>,
    pub expected_outcomes: SmallVec<[Statement<'p>; 3]>,
    pub trace: SmallVec<[RuleFiring<'p>; 24]>,
    pub references: SmallVec<[&'p ReferenceDef; 24]>,
    pub disclaimer: &'p str,
}

impl Plan<'_> {
    /// Radiotherapy is on the table: INDICATED, MANDATORY or CONSIDER with a setting other than NONE.
    pub fn rt_on_table(&self) -> bool {
        rt_on_table(self.indication, self.setting)
    }
}

/// Clinical spec §2: indication INDICATED, MANDATORY or CONSIDER and setting not NONE.
pub fn rt_on_table(indication: Indication, setting: Setting) -> bool {
    let indicated = match indication {
        Indication::Indicated | Indication::Mandatory | Indication::Consider => true,
        Indication::NotIndicated => false,
    };
    indicated && setting != Setting::None
}

/// One finding of a prescription check.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding<'p> {
    pub code: FindingCode,
    pub verdict: Verdict,
    pub message: String,
    pub reference_ids: &'p [String],
}

/// The result of a prescription check.
#[derive(Debug, Clone, PartialEq)]
pub struct Report<'p> {
    pub verdict: Verdict,
    pub findings: Vec<Finding<'p>>,
    pub total_dose_gy: f64,
    pub eqd2_tumor_gy: f64,
    pub eqd2_late_gy: f64,
    /// The plan the guideline recommends for the case.
    pub plan: Plan<'p>,
}

/// Helper used by both the plan and the report to list references in profile order.
pub(crate) fn references_in_profile_order(
    profile: &Profile,
    cited: u64,
) -> SmallVec<[&ReferenceDef; 24]> {
    profile
        .references()
        .iter()
        .enumerate()
        .filter(|(index, _)| cited & (1_u64 << index) != 0)
        .map(|(_, reference)| reference)
        .collect()
}

impl Plan<'_> {
    /// Whether any of the plan's lists outgrew the room held in the plan (and so allocated).
    pub fn spilled(&self) -> bool {
        self.prescriptions.spilled()
            || self.volumes.spilled()
            || self.organ_constraints.spilled()
            || self.alerts.spilled()
            || self.expected_outcomes.spilled()
            || self.trace.spilled()
            || self.references.spilled()
    }
}
