//! Draft CodeX radiotherapy orders (`context.draftOrders` of order-select and order-sign) → the
//! proposal `CheckPrescription` judges (§3.4 of the EHR design).
//!
//! A course prescription (`ServiceRequest`, code SNOMED 1217123003) and its phase prescriptions
//! (code 1222565005, `basedOn` the course): each phase's fractions from
//! `radiotherapyFractionsPrescribed`, its dose per fraction from the one `fractionDose` (cGy) all
//! its volumes share, its kind from `vlms-rt-phase-kind` or, failing that, CodeX's convention that
//! a boost phase treats a strict subset of the initial phase's volumes. Anything that cannot be
//! read exactly makes the course "not checkable", with the reason; nothing is guessed.

use serde::Deserialize;

use super::fhir::{self, CodeableConcept, Reference, SNOMED};
use super::mapping::Names;
use crate::pb;

const CODEX: &str = "http://hl7.org/fhir/us/codex-radiation-therapy/StructureDefinition/";
const COURSE: &str = "1217123003";
const PHASE: &str = "1222565005";

/// The elements of a draft `ServiceRequest` the check reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRequest {
    pub id: Option<String>,
    pub status: Option<String>,
    #[serde(default)]
    pub code: CodeableConcept,
    #[serde(default)]
    pub extension: Vec<OrderExtension>,
    #[serde(default)]
    pub based_on: Vec<Reference>,
    pub occurrence_date_time: Option<String>,
    pub occurrence_period: Option<fhir::Period>,
}

/// An extension of an order: the value types CodeX and vlms-rt use there.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderExtension {
    #[serde(default)]
    pub url: String,
    pub value_positive_int: Option<u32>,
    pub value_unsigned_int: Option<u32>,
    pub value_quantity: Option<fhir::Quantity>,
    pub value_reference: Option<Reference>,
    pub value_codeable_concept: Option<CodeableConcept>,
    pub value_code: Option<String>,
    pub value_boolean: Option<bool>,
    #[serde(default)]
    pub extension: Vec<OrderExtension>,
}

impl ServiceRequest {
    fn is(&self, code: &str) -> bool {
        self.code.has(SNOMED, code)
    }

    fn reference(&self) -> String {
        format!("ServiceRequest/{}", self.id.as_deref().unwrap_or("(no id)"))
    }

    fn extensions<'a>(&'a self, url: &'a str) -> impl Iterator<Item = &'a OrderExtension> {
        self.extension.iter().filter(move |e| e.url == url)
    }
}

/// One draft course as the check sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftCourse {
    /// `ServiceRequest/<id>` of the course.
    pub course: String,
    /// `ServiceRequest/<id>` of each phase, in the order of `phases`.
    pub phase_refs: Vec<String>,
    /// The setting the course states; `None` when it states none.
    pub setting: Option<pb::Setting>,
    pub phases: Vec<pb::Phase>,
    /// The planned start (facility-local date), when the course gives one.
    pub planned_start: Option<String>,
    /// Whether the course says it involves re-irradiation (CodeX).
    pub reirradiation: Option<bool>,
}

/// What the draft orders allow.
#[derive(Debug, Clone, PartialEq)]
pub enum Drafts {
    /// No radiotherapy course with a complete phase is among the (selected) drafts.
    Nothing,
    /// A course that cannot be checked as drafted, and why.
    NotCheckable {
        course: String,
        reason: String,
    },
    Course(DraftCourse),
}

/// Reads the draft orders. `selections` (order-select) limits the check to the courses listed, or
/// whose phases are listed; `None` (order-sign) checks every course. More than one checkable
/// course is not checkable: the service checks one course at a time.
pub fn read(
    draft_orders: &serde_json::Value,
    selections: Option<&[String]>,
    names: &Names,
    zone: &jiff::tz::TimeZone,
) -> Result<Drafts, fhir::Malformed> {
    let mut requests: Vec<ServiceRequest> = Vec::new();
    if let Some(entries) = draft_orders.get("entry") {
        let entries = entries.as_array().ok_or_else(|| fhir::Malformed {
            path: "context.draftOrders.entry".into(),
            message: "not an array".into(),
        })?;
        for (index, entry) in entries.iter().enumerate() {
            let Some(resource) = entry.get("resource") else {
                continue;
            };
            if resource.get("resourceType").and_then(|t| t.as_str()) != Some("ServiceRequest") {
                continue;
            }
            let path = format!("context.draftOrders.entry[{index}].resource");
            let request: ServiceRequest =
                serde_path_to_error::deserialize(resource).map_err(|error| fhir::Malformed {
                    path: format!("{path}.{}", error.path()),
                    message: error.inner().to_string(),
                })?;
            requests.push(request);
        }
    }
    let courses: Vec<&ServiceRequest> = requests.iter().filter(|r| r.is(COURSE)).collect();
    let phases_of = |course: &ServiceRequest| -> Vec<&ServiceRequest> {
        let id = course.id.as_deref().unwrap_or_default();
        requests
            .iter()
            .filter(|r| r.is(PHASE))
            .filter(|r| r.based_on.iter().any(|b| b.names("ServiceRequest", id)))
            .collect()
    };
    let selected = |course: &ServiceRequest| match selections {
        None => true,
        Some(list) => {
            let listed = |reference: &str| list.iter().any(|s| s == reference);
            listed(&course.reference()) || phases_of(course).iter().any(|p| listed(&p.reference()))
        }
    };
    let mut checkable: Vec<(&ServiceRequest, Vec<&ServiceRequest>)> = Vec::new();
    for course in courses.into_iter().filter(|c| selected(c)) {
        let phases = phases_of(course);
        // order-select sees orders being composed: only a course with at least one phase that
        // has its fractions and a fraction dose is worth checking.
        let complete = phases.iter().any(|phase| {
            !matches!(fractions(phase), Ok(None))
                && phase
                    .extensions(&format!(
                        "{CODEX}codexrt-radiotherapy-dose-prescribed-to-volume"
                    ))
                    .any(|d| d.extension.iter().any(|e| e.url == "fractionDose"))
        });
        if complete {
            checkable.push((course, phases));
        }
    }
    match checkable.as_slice() {
        [] => Ok(Drafts::Nothing),
        [(course, phases)] => Ok(course_of(course, phases, names, zone)),
        several => Ok(Drafts::NotCheckable {
            course: several
                .iter()
                .map(|(c, _)| c.reference())
                .collect::<Vec<_>>()
                .join(", "),
            reason:
                "more than one radiotherapy course is drafted; vlms-rt checks one course at a time"
                    .into(),
        }),
    }
}

/// The one value `values` hold: `None` when there is none, the value when every one stated
/// agrees, and an error naming `what` when they differ (nothing is guessed by taking the first).
fn one_value<T: PartialEq>(
    values: impl Iterator<Item = T>,
    what: &str,
) -> Result<Option<T>, String> {
    let mut found: Option<T> = None;
    for value in values {
        match &found {
            None => found = Some(value),
            Some(first) if *first == value => {}
            Some(_) => {
                return Err(format!(
                    "{what} is stated more than once, with different values"
                ));
            }
        }
    }
    Ok(found)
}

fn fractions(phase: &ServiceRequest) -> Result<Option<u32>, String> {
    one_value(
        phase
            .extensions(&format!("{CODEX}codexrt-radiotherapy-fractions-prescribed"))
            .filter_map(|e| e.value_positive_int.or(e.value_unsigned_int)),
        "radiotherapyFractionsPrescribed",
    )
}

/// A dose quantity in Gy: UCUM cGy (as CodeX fixes it) or Gy.
fn gray(quantity: &fhir::Quantity, what: &str) -> Result<f64, String> {
    let value = quantity.value.ok_or(format!("a {what} has no value"))?;
    match (quantity.system.as_deref(), quantity.code.as_deref()) {
        (Some(fhir::UCUM), Some("cGy")) => Ok(value / 100.0),
        (Some(fhir::UCUM), Some("Gy")) => Ok(value),
        _ => Err(format!("a {what} is not in UCUM cGy or Gy")),
    }
}

/// How far a stated `totalDose` may lie from fractions × `fractionDose`: half a cGy, the unit
/// CodeX orders are written in.
const TOTAL_DOSE_ROUNDING_GY: f64 = 0.005;

/// A phase's dose per fraction in Gy (the one `fractionDose` all its volumes share), the volumes
/// it treats, and every `totalDose` it states, in Gy.
fn phase_dose(phase: &ServiceRequest) -> Result<(f64, Vec<String>, Vec<f64>), String> {
    let mut doses: Vec<f64> = Vec::new();
    let mut volumes: Vec<String> = Vec::new();
    let mut totals: Vec<f64> = Vec::new();
    for dose in phase.extensions(&format!(
        "{CODEX}codexrt-radiotherapy-dose-prescribed-to-volume"
    )) {
        if let Some(volume) = dose
            .extension
            .iter()
            .find(|e| e.url == "volume")
            .and_then(|e| e.value_reference.as_ref())
            .and_then(|r| r.reference.clone())
        {
            volumes.push(volume);
        }
        for part in &dose.extension {
            let Some(quantity) = part.value_quantity.as_ref() else {
                continue;
            };
            match part.url.as_str() {
                "fractionDose" => {
                    let gy = gray(quantity, "fractionDose")?;
                    if !doses.iter().any(|d| (d - gy).abs() < 1e-9) {
                        doses.push(gy);
                    }
                }
                "totalDose" => totals.push(gray(quantity, "totalDose")?),
                _ => {}
            }
        }
    }
    match doses.as_slice() {
        [one] => Ok((*one, volumes, totals)),
        [] => Err("a phase has no fractionDose".into()),
        _ => Err("a phase prescribes different doses per fraction to different volumes (a simultaneous integrated boost), which the guideline's phases cannot express".into()),
    }
}

fn course_of(
    course: &ServiceRequest,
    phases: &[&ServiceRequest],
    names: &Names,
    zone: &jiff::tz::TimeZone,
) -> Drafts {
    let not_checkable = |reason: String| Drafts::NotCheckable {
        course: course.reference(),
        reason,
    };
    let kind_url = names.extension("vlms-rt-phase-kind");
    /// A phase as drafted: the order, fractions, Gy per fraction, volumes, kind if stated.
    type ReadPhase<'a> = (
        &'a ServiceRequest,
        i32,
        f64,
        Vec<String>,
        Option<pb::PhaseKind>,
    );
    let mut read: Vec<ReadPhase> = Vec::new();
    for phase in phases {
        let count = match fractions(phase) {
            Ok(Some(count)) => match i32::try_from(count) {
                Ok(count) => count,
                Err(_) => {
                    return not_checkable(format!(
                        "{}: {count} fractions is not a fraction count a prescription can hold",
                        phase.reference()
                    ));
                }
            },
            Ok(None) => {
                return not_checkable(format!(
                    "{} has no radiotherapyFractionsPrescribed",
                    phase.reference()
                ));
            }
            Err(reason) => return not_checkable(format!("{}: {reason}", phase.reference())),
        };
        let (dose, volumes, totals) = match phase_dose(phase) {
            Ok(read) => read,
            Err(reason) => return not_checkable(format!("{}: {reason}", phase.reference())),
        };
        // The check judges fractions × dose per fraction; an order stating another total would
        // be checked for a dose it does not give.
        let product = f64::from(count) * dose;
        if let Some(total) = totals
            .iter()
            .find(|total| (*total - product).abs() > TOTAL_DOSE_ROUNDING_GY)
        {
            return not_checkable(format!(
                "{}: its totalDose ({total} Gy) is not its fractions × fractionDose ({count} × {dose} Gy)",
                phase.reference()
            ));
        }
        let kind_code = match one_value(
            phase
                .extensions(&kind_url)
                .filter_map(|e| e.value_code.as_deref()),
            "vlms-rt-phase-kind",
        ) {
            Ok(code) => code,
            Err(reason) => return not_checkable(format!("{}: {reason}", phase.reference())),
        };
        let kind = match kind_code {
            Some("initial") => Some(pb::PhaseKind::Initial),
            Some("boost") => Some(pb::PhaseKind::Boost),
            Some(other) => {
                return not_checkable(format!(
                    "{}: vlms-rt-phase-kind {other:?} is neither initial nor boost",
                    phase.reference()
                ));
            }
            None => None,
        };
        read.push((phase, count, dose, volumes, kind));
    }
    // Kinds not stated: one phase is the initial one; of two, the boost treats a strict subset of
    // the other's volumes.
    if read.iter().any(|r| r.4.is_none()) {
        match read.len() {
            1 => read[0].4 = Some(pb::PhaseKind::Initial),
            2 => {
                let subset = |a: &[String], b: &[String]| {
                    a.len() < b.len() && a.iter().all(|volume| b.contains(volume))
                };
                let (first, second) = (&read[0].3, &read[1].3);
                let (initial, boost) = if subset(second, first) {
                    (0, 1)
                } else if subset(first, second) {
                    (1, 0)
                } else {
                    return not_checkable(
                        "the phase order cannot be determined: state vlms-rt-phase-kind (initial, boost) on each phase".into(),
                    );
                };
                for (index, kind) in [
                    (initial, pb::PhaseKind::Initial),
                    (boost, pb::PhaseKind::Boost),
                ] {
                    match read[index].4 {
                        None => read[index].4 = Some(kind),
                        Some(stated) if stated == kind => {}
                        Some(_) => {
                            return not_checkable(
                                "the phases' stated kinds contradict their volumes".into(),
                            );
                        }
                    }
                }
            }
            _ => {
                return not_checkable(
                    "the phase order cannot be determined: state vlms-rt-phase-kind (initial, boost) on each phase".into(),
                );
            }
        }
    }
    // Initial phases first, as the contract expects; the check itself judges repeated kinds.
    read.sort_by_key(|r| r.4.map_or(0, |k| k as i32));
    let setting_system = names.code_system("vlms-rt-setting");
    let settings: Vec<pb::Setting> = course
        .extensions(&names.extension("vlms-rt-setting"))
        .filter_map(|e| e.value_codeable_concept.as_ref())
        .filter_map(|value| {
            value.codes(&setting_system).find_map(|code| match code {
                "preoperative" => Some(pb::Setting::Preoperative),
                "postoperative" => Some(pb::Setting::Postoperative),
                "neoadjuvant-chemoradiation" => Some(pb::Setting::NeoadjuvantChemoradiation),
                _ => None,
            })
        })
        .collect();
    let setting = match settings.as_slice() {
        [] => None,
        [one] => Some(*one),
        [first, rest @ ..] if rest.iter().all(|s| s == first) => Some(*first),
        _ => return not_checkable("the course states more than one setting".into()),
    };
    let stated_start = course.occurrence_date_time.as_deref().or(course
        .occurrence_period
        .as_ref()
        .and_then(|p| p.start.as_deref()));
    let planned_start = match stated_start {
        None => None,
        Some(text) => match super::mapping::local_date(text, zone) {
            Some(date) => Some(date.to_string()),
            None => {
                return not_checkable(format!(
                    "the planned start {text:?} is neither a date nor a date-time with its offset"
                ));
            }
        },
    };
    let reirradiation = match one_value(
        course
            .extensions(&format!(
                "{CODEX}codexrt-radiotherapy-course-involves-reirradiation"
            ))
            .filter_map(|e| e.value_boolean),
        "courseInvolvesReirradiation",
    ) {
        Ok(stated) => stated,
        Err(reason) => return not_checkable(reason),
    };
    Drafts::Course(DraftCourse {
        course: course.reference(),
        phase_refs: read.iter().map(|r| r.0.reference()).collect(),
        setting,
        phases: read
            .iter()
            .map(|(_, count, dose, _, kind)| pb::Phase {
                kind: kind.map_or(0, |k| k as i32),
                dose_per_fraction_gy: *dose,
                fractions: *count,
                dose_gy: 0.0,
            })
            .collect(),
        planned_start,
        reirradiation,
    })
}
