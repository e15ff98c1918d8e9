//! The case a radiation oncologist sends, as validated core types, and the validation that turns
//! raw values into them (clinical spec §1). Validation reports every violation with the request's
//! field path, in field order, and never panics.

use smallvec::SmallVec;

use super::date::Date;
use super::violation::{Violation, Violations};

/// A raw enum as it arrives from a caller: unset (`_UNSPECIFIED`), a known value, or a number the
/// contract does not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEnum<T> {
    /// The zero value `_UNSPECIFIED`.
    Unset,
    /// A value the contract defines.
    Known(T),
    /// A number the contract does not define.
    Unknown(i32),
}

/// The vein the tumour arises from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vessel {
    InferiorVenaCava,
    RenalVein,
    GonadalVein,
    IliacVein,
    FemoralVein,
    PoplitealVein,
    SaphenousVein,
    UpperLimbVein,
    Other,
}

/// Segment of the inferior vena cava (recorded; no rule of the guideline reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IvcSegment {
    Lower,
    Middle,
    Upper,
}

/// FNCLCC grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grade {
    Grade1,
    Grade2,
    Grade3,
    Unknown,
}

/// Depth relative to the superficial fascia.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Depth {
    Superficial,
    Deep,
}

/// Before or after resection, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TreatmentPhase {
    PreResection,
    PostResection,
}

/// Surgical judgement before resection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resectability {
    Resectable,
    Marginal,
    Unresectable,
}

/// Residual-tumour classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Margin {
    R0,
    R1,
    R2,
}

/// What was done with the vein.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VascularManagement {
    None,
    Ligation,
    PrimaryRepair,
    Patch,
    Graft,
}

/// An organ at risk next to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Organ {
    KidneyLeft,
    KidneyRight,
    Liver,
    SmallBowel,
    LargeBowel,
    Stomach,
    SpinalCord,
    Duodenum,
    Heart,
    Lungs,
    Esophagus,
    Bladder,
}

/// Anatomical site group (clinical spec §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SiteGroup {
    Retroperitoneal,
    Extremity,
    Other,
}

impl Vessel {
    /// IVC, renal, gonadal and iliac veins are retroperitoneal; femoral, popliteal, saphenous and
    /// upper-limb veins are extremity; OTHER is OTHER.
    pub fn site_group(self) -> SiteGroup {
        match self {
            Vessel::InferiorVenaCava
            | Vessel::RenalVein
            | Vessel::GonadalVein
            | Vessel::IliacVein => SiteGroup::Retroperitoneal,
            Vessel::FemoralVein
            | Vessel::PoplitealVein
            | Vessel::SaphenousVein
            | Vessel::UpperLimbVein => SiteGroup::Extremity,
            Vessel::Other => SiteGroup::Other,
        }
    }
}

impl Organ {
    /// Kidneys, liver, bowel, stomach and duodenum are abdominal organs at risk (clinical spec
    /// §2); the spinal cord and the thoracic and pelvic organs are not.
    pub fn is_abdominal(self) -> bool {
        match self {
            Organ::KidneyLeft
            | Organ::KidneyRight
            | Organ::Liver
            | Organ::SmallBowel
            | Organ::LargeBowel
            | Organ::Stomach
            | Organ::Duodenum => true,
            Organ::SpinalCord | Organ::Heart | Organ::Lungs | Organ::Esophagus | Organ::Bladder => {
                false
            }
        }
    }

    /// Either kidney.
    pub fn is_kidney(self) -> bool {
        matches!(self, Organ::KidneyLeft | Organ::KidneyRight)
    }
}

/// Raw tumour values.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTumor {
    pub size_cm: f64,
    pub grade: RawEnum<Grade>,
    pub depth: RawEnum<Depth>,
}

/// Raw resection values.
#[derive(Debug, Clone, PartialEq)]
pub struct RawResection<'a> {
    pub margin: RawEnum<Margin>,
    pub close_margin: bool,
    pub surgery_date: &'a str,
    pub compartmental_contained: bool,
    pub re_excision_feasible: bool,
    pub hematoma_present: bool,
    pub vascular_management: RawEnum<VascularManagement>,
    pub periaortic_dissection: bool,
}

/// A case as raw values, exactly as a caller may send it (any value at all). Its texts borrow from
/// the request (`'a`), so reading a case copies none of them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawCase<'a> {
    pub case_id: &'a str,
    pub evaluation_date: &'a str,
    pub vessel: RawEnum<Vessel>,
    pub ivc_segment: RawEnum<IvcSegment>,
    pub tumor: Option<RawTumor>,
    pub phase: RawEnum<TreatmentPhase>,
    pub resectability: RawEnum<Resectability>,
    pub surgery_mutilating: bool,
    pub resection: Option<RawResection<'a>>,
    /// Inline up to twelve entries (twelve organs exist); more only in a request that repeats
    /// them.
    pub organs_at_risk: SmallVec<[RawEnum<Organ>; 12]>,
    pub solitary_functioning_kidney: bool,
    pub prior_radiotherapy: bool,
    pub metastatic_disease: bool,
    pub preoperative_rt_delivered: bool,
}

/// A validated tumour.
#[derive(Debug, Clone, PartialEq)]
pub struct Tumor {
    size_cm: f64,
    grade: Grade,
    depth: Option<Depth>,
}

/// A validated resection.
#[derive(Debug, Clone, PartialEq)]
pub struct Resection {
    pub margin: Margin,
    pub close_margin: bool,
    pub surgery_date: Date,
    pub compartmental_contained: bool,
    pub re_excision_feasible: bool,
    pub hematoma_present: bool,
    pub vascular_management: VascularManagement,
    pub periaortic_dissection: bool,
}

/// Where the patient is in the surgical pathway, with what each phase requires.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Surgery not yet done.
    PreResection {
        resectability: Resectability,
        surgery_mutilating: bool,
    },
    /// The tumour has been resected.
    PostResection(Resection),
}

/// A validated case: every value inside the ranges of clinical spec §1. The only way to get one is
/// [`Case::validate`]. Its caller reference borrows from the raw case's (`'a`).
#[derive(Debug, Clone, PartialEq)]
pub struct Case<'a> {
    case_id: &'a str,
    evaluation_date: Date,
    vessel: Vessel,
    ivc_segment: Option<IvcSegment>,
    tumor: Tumor,
    stage: Stage,
    organs_at_risk: SmallVec<[Organ; 12]>,
    solitary_functioning_kidney: bool,
    prior_radiotherapy: bool,
    metastatic_disease: bool,
    preoperative_rt_delivered: bool,
}

/// Largest tumour diameter accepted, in cm.
pub const MAX_SIZE_CM: f64 = 60.0;
/// Longest caller reference accepted, in characters.
pub const MAX_CASE_ID_CHARS: usize = 128;

impl Tumor {
    /// Largest diameter in cm.
    pub fn size_cm(&self) -> f64 {
        self.size_cm
    }
    /// FNCLCC grade.
    pub fn grade(&self) -> Grade {
        self.grade
    }
    /// Depth as sent (unset only for retroperitoneal sites).
    pub fn depth(&self) -> Option<Depth> {
        self.depth
    }
}

impl<'a> Case<'a> {
    /// Validates raw values. `prefix` is the path of the case in the request (`case`); every
    /// violation is reported, in field order.
    pub fn validate(raw: &RawCase<'a>, prefix: &str) -> Result<Case<'a>, Violations> {
        let mut violations = Violations::default();
        let path = |field: &str| format!("{prefix}.{field}");

        if raw.case_id.chars().count() > MAX_CASE_ID_CHARS {
            violations.push(path("case_id"), "must be at most 128 characters");
        } else if !raw
            .case_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
        {
            violations.push(
                path("case_id"),
                "may contain only A-Z a-z 0-9 . _ : - (no spaces, no names)",
            );
        }

        let evaluation_date = match Date::parse(raw.evaluation_date) {
            Ok(date) => Some(date),
            Err(error) => {
                violations.push(path("evaluation_date"), error.describe());
                None
            }
        };

        let vessel = required_enum(&mut violations, || path("vessel"), raw.vessel);

        let ivc_segment = match vessel {
            None => None,
            Some(Vessel::InferiorVenaCava) => match raw.ivc_segment {
                RawEnum::Known(segment) => Some(segment),
                RawEnum::Unset => {
                    violations.push(
                        path("ivc_segment"),
                        "is required when vessel is the inferior vena cava",
                    );
                    None
                }
                RawEnum::Unknown(number) => {
                    violations.push(path("ivc_segment"), unknown_enum(number));
                    None
                }
            },
            Some(_) => {
                match raw.ivc_segment {
                    RawEnum::Unset => {}
                    RawEnum::Known(_) => violations.push(
                        path("ivc_segment"),
                        "must be unset unless vessel is the inferior vena cava",
                    ),
                    RawEnum::Unknown(number) => {
                        violations.push(path("ivc_segment"), unknown_enum(number))
                    }
                }
                None
            }
        };

        let tumor = match &raw.tumor {
            None => {
                violations.push(path("tumor"), "is required");
                None
            }
            Some(raw_tumor) => validate_tumor(raw_tumor, vessel, prefix, &mut violations),
        };

        let phase = required_enum(&mut violations, || path("phase"), raw.phase);

        let stage_resectability = match phase {
            Some(TreatmentPhase::PreResection) => {
                required_enum(&mut violations, || path("resectability"), raw.resectability)
            }
            Some(TreatmentPhase::PostResection) => {
                match raw.resectability {
                    RawEnum::Unset => {}
                    RawEnum::Known(_) => {
                        violations.push(path("resectability"), "must be unset after resection")
                    }
                    RawEnum::Unknown(number) => {
                        violations.push(path("resectability"), unknown_enum(number))
                    }
                }
                None
            }
            None => None,
        };

        let resection = match (phase, &raw.resection) {
            (Some(TreatmentPhase::PostResection), None) => {
                violations.push(path("resection"), "is required after resection");
                None
            }
            (Some(TreatmentPhase::PostResection), Some(raw_resection)) => {
                validate_resection(raw_resection, evaluation_date, prefix, &mut violations)
            }
            (Some(TreatmentPhase::PreResection), Some(_)) => {
                violations.push(path("resection"), "must be absent before resection");
                None
            }
            (Some(TreatmentPhase::PreResection), None) | (None, _) => None,
        };

        let mut organs_at_risk = SmallVec::new();
        for (index, organ) in raw.organs_at_risk.iter().enumerate() {
            match *organ {
                RawEnum::Known(organ) => {
                    if !organs_at_risk.contains(&organ) {
                        organs_at_risk.push(organ);
                    }
                }
                RawEnum::Unset => violations.push(
                    format!("{prefix}.organs_at_risk[{index}]"),
                    "must name an organ (ORGAN_UNSPECIFIED is not one)",
                ),
                RawEnum::Unknown(number) => violations.push(
                    format!("{prefix}.organs_at_risk[{index}]"),
                    unknown_enum(number),
                ),
            }
        }

        let stage = match (phase, stage_resectability, resection) {
            (Some(TreatmentPhase::PreResection), Some(resectability), _) => {
                Some(Stage::PreResection {
                    resectability,
                    surgery_mutilating: raw.surgery_mutilating,
                })
            }
            (Some(TreatmentPhase::PostResection), _, Some(resection)) => {
                Some(Stage::PostResection(resection))
            }
            _ => None,
        };

        match (evaluation_date, vessel, tumor, stage) {
            (Some(evaluation_date), Some(vessel), Some(tumor), Some(stage))
                if violations.is_empty() =>
            {
                Ok(Case {
                    case_id: raw.case_id,
                    evaluation_date,
                    vessel,
                    ivc_segment,
                    tumor,
                    stage,
                    organs_at_risk,
                    solitary_functioning_kidney: raw.solitary_functioning_kidney,
                    prior_radiotherapy: raw.prior_radiotherapy,
                    metastatic_disease: raw.metastatic_disease,
                    preoperative_rt_delivered: raw.preoperative_rt_delivered,
                })
            }
            _ => {
                if violations.is_empty() {
                    // Unreachable by construction: every None above pushed a violation. Refuse
                    // rather than guess if that ever stops being true.
                    violations.push(prefix.to_string(), "is incomplete");
                }
                Err(violations)
            }
        }
    }

    /// The caller's reference.
    pub fn case_id(&self) -> &'a str {
        self.case_id
    }
    /// The "as of" date.
    pub fn evaluation_date(&self) -> Date {
        self.evaluation_date
    }
    /// The vein of origin.
    pub fn vessel(&self) -> Vessel {
        self.vessel
    }
    /// IVC segment (IVC only).
    pub fn ivc_segment(&self) -> Option<IvcSegment> {
        self.ivc_segment
    }
    /// The tumour.
    pub fn tumor(&self) -> &Tumor {
        &self.tumor
    }
    /// Before or after resection, with the phase's data.
    pub fn stage(&self) -> &Stage {
        &self.stage
    }
    /// The resection, after resection.
    pub fn resection(&self) -> Option<&Resection> {
        match &self.stage {
            Stage::PostResection(resection) => Some(resection),
            Stage::PreResection { .. } => None,
        }
    }
    /// Organs at risk, repeats removed, in the order first sent.
    pub fn organs_at_risk(&self) -> &[Organ] {
        &self.organs_at_risk
    }
    /// A single functioning kidney.
    pub fn solitary_functioning_kidney(&self) -> bool {
        self.solitary_functioning_kidney
    }
    /// Earlier radiotherapy to this region, before this tumour's treatment (re-irradiation).
    pub fn prior_radiotherapy(&self) -> bool {
        self.prior_radiotherapy
    }
    /// A preoperative course of radiotherapy for this tumour has been completed (before
    /// resection: surgery is pending; after it: the course came before this resection).
    pub fn preoperative_rt_delivered(&self) -> bool {
        self.preoperative_rt_delivered
    }
    /// Metastatic disease.
    pub fn metastatic_disease(&self) -> bool {
        self.metastatic_disease
    }
}

fn unknown_enum(number: i32) -> String {
    format!("holds {number}, which is not a value of this enum")
}

/// `path` is built only when there is something to report: a valid case formats no paths.
fn required_enum<T: Copy>(
    violations: &mut Violations,
    path: impl FnOnce() -> String,
    value: RawEnum<T>,
) -> Option<T> {
    match value {
        RawEnum::Known(value) => Some(value),
        RawEnum::Unset => {
            violations.push(path(), "is required");
            None
        }
        RawEnum::Unknown(number) => {
            violations.push(path(), unknown_enum(number));
            None
        }
    }
}

fn validate_tumor(
    raw: &RawTumor,
    vessel: Option<Vessel>,
    prefix: &str,
    violations: &mut Violations,
) -> Option<Tumor> {
    let size_ok = raw.size_cm.is_finite() && raw.size_cm > 0.0 && raw.size_cm <= MAX_SIZE_CM;
    if !size_ok {
        violations.push(
            format!("{prefix}.tumor.size_cm"),
            "must be a finite number greater than 0 and at most 60 (cm)",
        );
    }
    let grade = required_enum(violations, || format!("{prefix}.tumor.grade"), raw.grade);
    let depth_path = || format!("{prefix}.tumor.depth");
    let depth = match raw.depth {
        RawEnum::Unknown(number) => {
            violations.push(depth_path(), unknown_enum(number));
            return None;
        }
        RawEnum::Unset => None,
        RawEnum::Known(depth) => Some(depth),
    };
    let depth_ok = match (vessel.map(Vessel::site_group), depth) {
        (None, _) => false,
        (Some(SiteGroup::Retroperitoneal), Some(Depth::Superficial)) => {
            violations.push(
                depth_path(),
                "cannot be superficial for a retroperitoneal site (deep by definition)",
            );
            false
        }
        (Some(SiteGroup::Retroperitoneal), _) => true,
        (Some(SiteGroup::Extremity | SiteGroup::Other), None) => {
            violations.push(depth_path(), "is required for extremity and other sites");
            false
        }
        (Some(SiteGroup::Extremity | SiteGroup::Other), Some(_)) => true,
    };
    match (size_ok, grade, depth_ok) {
        (true, Some(grade), true) => Some(Tumor {
            size_cm: raw.size_cm,
            grade,
            depth,
        }),
        _ => None,
    }
}

/// The surgery-date rules: a valid date, not after the evaluation date when that one is valid (no
/// "surgery after evaluation" when either date is invalid).
fn surgery_date(text: &str, evaluation_date: Option<Date>) -> Result<Date, &'static str> {
    let date = Date::parse(text).map_err(|error| error.describe())?;
    match evaluation_date {
        Some(evaluation_date) if date > evaluation_date => Err("must not be after evaluation_date"),
        _ => Ok(date),
    }
}

fn validate_resection(
    raw: &RawResection<'_>,
    evaluation_date: Option<Date>,
    prefix: &str,
    violations: &mut Violations,
) -> Option<Resection> {
    let margin = required_enum(
        violations,
        || format!("{prefix}.resection.margin"),
        raw.margin,
    );
    let surgery_date = match surgery_date(raw.surgery_date, evaluation_date) {
        Ok(date) => Some(date),
        Err(problem) => {
            violations.push(format!("{prefix}.resection.surgery_date"), problem);
            None
        }
    };
    let vascular_management = match raw.vascular_management {
        RawEnum::Unset => Some(VascularManagement::None),
        RawEnum::Known(value) => Some(value),
        RawEnum::Unknown(number) => {
            violations.push(
                format!("{prefix}.resection.vascular_management"),
                unknown_enum(number),
            );
            None
        }
    };
    Some(Resection {
        margin: margin?,
        close_margin: raw.close_margin,
        surgery_date: surgery_date?,
        compartmental_contained: raw.compartmental_contained,
        re_excision_feasible: raw.re_excision_feasible,
        hematoma_present: raw.hematoma_present,
        vascular_management: vascular_management?,
        periaortic_dissection: raw.periaortic_dissection,
    })
}

impl Violations {
    /// Violations as (field, description) pairs for callers that do not need the type.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.iter()
            .map(|violation: &Violation| violation.field.as_str())
    }
}
