//! Loading the guideline profile: the TOML file under `guideline/`, embedded in the binary and
//! overridable by a path. The file is parsed into serde types here (the core carries no serde),
//! mapped into [`ProfileSpec`] and validated whole by [`Profile::new`].

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::core::profile::{
    AlertSpec, ChangeSpec, CheckSpec, ConstraintSpec, FindingSpec, OptionSpec, OutcomeSpec,
    PhaseSpec, ReferenceSpec, RuleSpec, ScheduleSpec, VolumeSpec,
};
use crate::core::{Profile, ProfileError, ProfileSpec};

/// The profile shipped with the binary.
pub const EMBEDDED_PROFILE: &str = include_str!("../guideline/vlms-rt-2026.2.toml");
/// Name under which the embedded profile is reported.
pub const EMBEDDED_PROFILE_NAME: &str = "guideline/vlms-rt-2026.2.toml (embedded)";

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read guideline profile {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8 TOML of the expected shape.
    #[error("guideline profile {path} is not a valid profile file: {message}")]
    Parse { path: String, message: String },
    /// The file parsed but breaks the profile's rules.
    #[error("guideline profile {path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: ProfileError,
    },
}

/// Loads the embedded profile.
pub fn embedded() -> Result<Profile, LoadError> {
    from_bytes(EMBEDDED_PROFILE.as_bytes(), EMBEDDED_PROFILE_NAME)
}

/// Loads a profile from a file.
pub fn from_path(path: &Path) -> Result<Profile, LoadError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: name.clone(),
        source,
    })?;
    from_bytes(&bytes, &name)
}

/// Parses and validates profile bytes; `name` is used in error messages. The profile's sha256 is
/// computed over exactly these bytes.
pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Profile, LoadError> {
    let parse_error = |message: String| LoadError::Parse {
        path: name.to_string(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|error| parse_error(error.to_string()))?;
    let file: ProfileFile = toml::from_str(text).map_err(|error| parse_error(error.to_string()))?;
    let sha256 = hex(&Sha256::digest(bytes));
    Profile::new(file.into_spec(), sha256).map_err(|source| LoadError::Invalid {
        path: name.to_string(),
        source,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    version: String,
    previous_version: String,
    disclaimer: String,
    radiobiology: RadiobiologyFile,
    risk: RiskFile,
    window: WindowFile,
    references: Vec<ReferenceFile>,
    rules: Vec<RuleFile>,
    alerts: Vec<AlertFile>,
    volumes: Vec<VolumeFile>,
    outcomes: Vec<OutcomeFile>,
    constraints: Vec<ConstraintFile>,
    schedules: Vec<ScheduleFile>,
    check: CheckFile,
    changes: Vec<ChangeFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeFile {
    summary: String,
    reason: String,
    references: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RadiobiologyFile {
    alpha_beta_tumor_gy: f64,
    alpha_beta_late_gy: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskFile {
    large_tumor_size_cm: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    earliest_days: i64,
    latest_days: i64,
    overdue_critical_after_days: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceFile {
    id: String,
    citation: String,
    #[serde(default)]
    doi: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    statement: String,
    references: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertFile {
    code: String,
    severity: String,
    summary: String,
    detail: String,
    references: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeFile {
    code: String,
    description: String,
    references: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeFile {
    rule: String,
    text: String,
    references: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConstraintFile {
    organs: Vec<String>,
    structure: String,
    metric: String,
    limit: f64,
    #[serde(default)]
    bilateral_kidneys: bool,
    note: String,
    references: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    group: String,
    setting: String,
    margins: String,
    options: Vec<OptionFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionFile {
    label: String,
    #[serde(default)]
    preferred: bool,
    #[serde(default)]
    concurrent_chemotherapy: bool,
    #[serde(default)]
    alert: String,
    phases: Vec<PhaseFile>,
    references: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseFile {
    kind: String,
    dose_per_fraction_gy: f64,
    fractions: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    dose_tolerance_gy: f64,
    fraction_pass_min_gy: f64,
    fraction_pass_max_gy: f64,
    fraction_review_min_gy: f64,
    fraction_review_max_gy: f64,
    late_eqd2_fail_factor: f64,
    findings: Vec<FindingFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingFile {
    code: String,
    references: Vec<String>,
}

impl ProfileFile {
    fn into_spec(self) -> ProfileSpec {
        ProfileSpec {
            version: self.version,
            previous_version: self.previous_version,
            disclaimer: self.disclaimer,
            alpha_beta_tumor_gy: self.radiobiology.alpha_beta_tumor_gy,
            alpha_beta_late_gy: self.radiobiology.alpha_beta_late_gy,
            large_tumor_size_cm: self.risk.large_tumor_size_cm,
            window_earliest_days: self.window.earliest_days,
            window_latest_days: self.window.latest_days,
            overdue_critical_after_days: self.window.overdue_critical_after_days,
            references: self
                .references
                .into_iter()
                .map(|reference| ReferenceSpec {
                    id: reference.id,
                    citation: reference.citation,
                    doi: reference.doi,
                })
                .collect(),
            rules: self
                .rules
                .into_iter()
                .map(|rule| RuleSpec {
                    id: rule.id,
                    statement: rule.statement,
                    references: rule.references,
                })
                .collect(),
            alerts: self
                .alerts
                .into_iter()
                .map(|alert| AlertSpec {
                    code: alert.code,
                    severity: alert.severity,
                    summary: alert.summary,
                    detail: alert.detail,
                    references: alert.references,
                })
                .collect(),
            volumes: self
                .volumes
                .into_iter()
                .map(|volume| VolumeSpec {
                    code: volume.code,
                    description: volume.description,
                    references: volume.references,
                })
                .collect(),
            outcomes: self
                .outcomes
                .into_iter()
                .map(|outcome| OutcomeSpec {
                    rule: outcome.rule,
                    text: outcome.text,
                    references: outcome.references,
                })
                .collect(),
            constraints: self
                .constraints
                .into_iter()
                .map(|constraint| ConstraintSpec {
                    organs: constraint.organs,
                    structure: constraint.structure,
                    metric: constraint.metric,
                    limit: constraint.limit,
                    bilateral_kidneys: constraint.bilateral_kidneys,
                    note: constraint.note,
                    references: constraint.references,
                })
                .collect(),
            schedules: self
                .schedules
                .into_iter()
                .map(|schedule| ScheduleSpec {
                    group: schedule.group,
                    setting: schedule.setting,
                    margins: schedule.margins,
                    options: schedule
                        .options
                        .into_iter()
                        .map(|option| OptionSpec {
                            label: option.label,
                            preferred: option.preferred,
                            concurrent_chemotherapy: option.concurrent_chemotherapy,
                            alert: option.alert,
                            phases: option
                                .phases
                                .into_iter()
                                .map(|phase| PhaseSpec {
                                    kind: phase.kind,
                                    dose_per_fraction_gy: phase.dose_per_fraction_gy,
                                    fractions: phase.fractions,
                                })
                                .collect(),
                            references: option.references,
                        })
                        .collect(),
                })
                .collect(),
            check: CheckSpec {
                dose_tolerance_gy: self.check.dose_tolerance_gy,
                fraction_pass_min_gy: self.check.fraction_pass_min_gy,
                fraction_pass_max_gy: self.check.fraction_pass_max_gy,
                fraction_review_min_gy: self.check.fraction_review_min_gy,
                fraction_review_max_gy: self.check.fraction_review_max_gy,
                late_eqd2_fail_factor: self.check.late_eqd2_fail_factor,
                findings: self
                    .check
                    .findings
                    .into_iter()
                    .map(|finding| FindingSpec {
                        code: finding.code,
                        references: finding.references,
                    })
                    .collect(),
            },
            changes: self
                .changes
                .into_iter()
                .map(|change| ChangeSpec {
                    summary: change.summary,
                    reason: change.reason,
                    references: change.references,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_after(from: &str, to: &str) -> String {
        assert!(
            EMBEDDED_PROFILE.contains(from),
            "fixture text {from:?} not in the profile"
        );
        let edited = EMBEDDED_PROFILE.replacen(from, to, 1);
        match from_bytes(edited.as_bytes(), "edited.toml") {
            Ok(_) => panic!("accepted a profile with {to:?}"),
            Err(error) => error.to_string(),
        }
    }

    /// Every problem of a profile edited by `edits` (each replaces its first occurrence), in the
    /// order the loader found them.
    fn problem_list(edits: &[(&str, &str)]) -> Vec<String> {
        let mut edited = EMBEDDED_PROFILE.to_string();
        for (from, to) in edits {
            assert!(
                edited.contains(from),
                "fixture text {from:?} not in the profile"
            );
            edited = edited.replacen(from, to, 1);
        }
        match from_bytes(edited.as_bytes(), "edited.toml") {
            Ok(_) => panic!("accepted a profile edited by {edits:?}"),
            Err(LoadError::Invalid { source, .. }) => source.problems,
            Err(other) => panic!("refused before its tables were read: {other}"),
        }
    }

    #[test]
    fn problems_of_the_keyed_tables_are_named_exactly_and_in_order() {
        // A rule given another rule's id and no statement: its own problems, then the duplicate,
        // then the rule left without an entry.
        assert_eq!(
            problem_list(&[(
                "id = \"IND-AFTER-PREOP-RT\"\nstatement = \"A preoperative",
                "id = \"GATE-METASTATIC\"\nstatement = \" \" # A preoperative",
            )]),
            [
                "rule \"GATE-METASTATIC\" statement: empty text",
                "rule \"GATE-METASTATIC\": defined twice",
                "rule \"IND-AFTER-PREOP-RT\": missing",
            ]
        );
        // An alert with an unknown severity and an unknown reference; a finding with an unknown
        // code, and the one it replaced missing.
        assert_eq!(
            problem_list(&[
                (
                    "severity = \"CRITICAL\"\nsummary = \"Metastatic disease",
                    "severity = \"LOUD\"\nsummary = \"Metastatic disease",
                ),
                (
                    "references = [\"ESMO2021\"]\n\n[[alerts]]",
                    "references = [\"NOPE2021\"]\n\n[[alerts]]",
                ),
                ("code = \"RX_NOT_INDICATED\"", "code = \"RX_NOPE\""),
            ]),
            [
                "alert \"OUT_OF_SCOPE_METASTATIC\": severity \"LOUD\" is not INFO, WARNING or CRITICAL",
                "alert \"OUT_OF_SCOPE_METASTATIC\": cites unknown reference id \"NOPE2021\"",
                "finding \"RX_NOPE\": not a finding code",
                "finding \"RX_NOT_INDICATED\": missing",
            ]
        );
    }

    #[test]
    fn the_embedded_profile_loads_with_its_version_and_hash() {
        let profile = embedded().expect("valid");
        assert_eq!(profile.version(), "2026.2");
        assert_eq!(profile.previous_version(), "2026.1");
        assert!(!profile.changes().is_empty());
        assert_eq!(
            profile.sha256(),
            hex(&Sha256::digest(EMBEDDED_PROFILE.as_bytes()))
        );
        assert_eq!(profile.references().len(), 24);
    }

    #[test]
    fn broken_profiles_are_refused_with_the_problem_named() {
        let cases = [
            (
                r#"references = ["ESMO2021"]"#,
                r#"references = ["ESMO2022"]"#,
                "unknown reference id \"ESMO2022\"",
            ),
            ("earliest_days = 28", "earliest_days = 50", "not a range"),
            (
                "late_eqd2_fail_factor = 1.10",
                "late_eqd2_fail_factor = 0.9",
                "late_eqd2_fail_factor",
            ),
            (
                "previous_version = \"2026.1\"",
                "previous_version = \"2026.2\"",
                "is this version",
            ),
            (
                "fraction_pass_min_gy = 1.8",
                "fraction_pass_min_gy = 1.4",
                "review_min <= pass_min",
            ),
            (
                r#"summary = "Tumour grade unknown: the risk classification is incomplete. Obtain or review the FNCLCC grade before deciding.""#,
                &format!("summary = \"{}\"", "x".repeat(141)),
                "141 characters",
            ),
            (
                r#"statement = "Preoperative target: the gross tumour.""#,
                r#"statement = " ""#,
                "empty text",
            ),
            (
                r#"id = "WINDOW-OVERDUE""#,
                r#"id = "WINDOW-LATE""#,
                "not a rule id",
            ),
            (
                "alpha_beta_tumor_gy = 4.0",
                "alpha_beta_tumor_gy = -4.0",
                "alpha_beta_tumor_gy",
            ),
            ("limit = 45.0", "limit = nan", "limit"),
            (
                r#"note = "Maximum bladder dose, grade >= 3 late toxicity.""#,
                r#"note = "  ""#,
                "note: empty text",
            ),
            (
                "dose_tolerance_gy = 0.01",
                "dose_tolerance_gy = 0.0000000001",
                "not a whole number of the nano-grays",
            ),
            (
                "dose_tolerance_gy = 0.01",
                "dose_tolerance_gy = 0.0100000005",
                "not a whole number of the nano-grays",
            ),
            (r#"metric = "Max[Gy]""#, r#"metric = "max dose""#, "TG-263"),
            (
                r#"group = "EXTREMITY""#,
                r#"group = "EXTREMITY_OR_OTHER""#,
                "not recognised",
            ),
            (
                "{ kind = \"BOOST\", dose_per_fraction_gy = 2.0, fractions = 8 }",
                "{ kind = \"BOOST\", dose_per_fraction_gy = 2.0, fractions = 9 }",
                "above the 66 Gy bound",
            ),
            (
                "preferred = true\nconcurrent_chemotherapy = true\nphases = [{ kind = \"INITIAL\", dose_per_fraction_gy = 1.8",
                "concurrent_chemotherapy = true\nphases = [{ kind = \"INITIAL\", dose_per_fraction_gy = 1.8",
                "0 preferred options",
            ),
            (
                "version = \"2026.2\"",
                "version = \"2026.2\"\nunexpected = 1",
                "unknown field",
            ),
        ];
        for (from, to, expected) in cases {
            let message = problems_after(from, to);
            assert!(message.contains(expected), "{to:?}: {message}");
        }
    }

    /// The committee's change log and the profile's own list of changes say the same.
    #[test]
    fn the_change_log_lists_every_change_of_the_embedded_profile() {
        let log = include_str!("../guideline/CHANGES.md");
        let profile = embedded().expect("valid");
        let heading = format!(
            "## {} (replaces {})",
            profile.version(),
            profile.previous_version()
        );
        let start = log.find(&heading).expect("a section for this version");
        let section = &log[start..];
        let section = &section[..section[3..]
            .find("\n## ")
            .map_or(section.len(), |end| end + 3)];
        for change in profile.changes() {
            let row = format!(
                "| {} | {} | {} |",
                change.summary,
                change.reason,
                change.reference_ids.join(", ")
            );
            assert!(section.contains(&row), "CHANGES.md lacks: {row}");
        }
        assert_eq!(
            section.matches("\n| ").count(),
            profile.changes().len() + 1,
            "one table row per change, plus the header"
        );
    }

    #[test]
    fn a_missing_file_and_non_utf8_bytes_are_load_errors() {
        let missing = from_path(Path::new("no/such/profile.toml")).expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains("cannot read guideline profile")
        );
        let binary = from_bytes(&[0xff, 0xfe, 0x00], "binary").expect_err("binary");
        assert!(binary.to_string().contains("not a valid profile file"));
    }
}
