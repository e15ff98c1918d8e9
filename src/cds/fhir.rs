//! The FHIR R4 elements the mapping reads, as serde structs: only the elements §2 of the design
//! reads are declared, everything else in a resource is ignored. A declared element of the wrong
//! JSON type makes the whole request a 400 naming the element (`serde_path_to_error`), so nothing
//! is read from a resource the service does not understand.
//!
//! Chosen over a generated FHIR model crate: the mapping reads about forty elements of five
//! resources, and the generated R4B models (hundreds of resource types) would add minutes of
//! compile time on the project's 2-core machines for types it never uses.

use serde::Deserialize;

pub const SNOMED: &str = "http://snomed.info/sct";
pub const LOINC: &str = "http://loinc.org";
pub const NCIT: &str = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl";
pub const ICD_O_3: &str = "http://terminology.hl7.org/CodeSystem/icd-o-3";
pub const ICD_10_CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
pub const UCUM: &str = "http://unitsofmeasure.org";
pub const TG263: &str = "http://hl7.org/fhir/us/mcode/CodeSystem/tg263-cs";
pub const MCODE: &str = "http://hl7.org/fhir/us/mcode/StructureDefinition/";
pub const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
pub const CONDITION_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/condition-ver-status";

/// A `Coding`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Coding {
    pub system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
}

impl Coding {
    pub fn is(&self, system: &str, code: &str) -> bool {
        self.system.as_deref() == Some(system) && self.code.as_deref() == Some(code)
    }
}

/// A `CodeableConcept`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CodeableConcept {
    #[serde(default)]
    pub coding: Vec<Coding>,
    #[serde(default)]
    pub extension: Vec<Extension>,
    pub text: Option<String>,
}

impl CodeableConcept {
    pub fn has(&self, system: &str, code: &str) -> bool {
        self.coding.iter().any(|coding| coding.is(system, code))
    }

    /// The codes of `system` this concept holds.
    pub fn codes<'a>(&'a self, system: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.coding
            .iter()
            .filter(move |coding| coding.system.as_deref() == Some(system))
            .filter_map(|coding| coding.code.as_deref())
    }
}

/// A `Reference` (only its literal reference is read).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Reference {
    pub reference: Option<String>,
}

impl Reference {
    /// Whether this reference names `Type/id`, relative or absolute (`…/Type/id`, no version).
    pub fn names(&self, resource_type: &str, id: &str) -> bool {
        let Some(reference) = self.reference.as_deref() else {
            return false;
        };
        let reference = reference.split("/_history/").next().unwrap_or(reference);
        let wanted = format!("{resource_type}/{id}");
        reference == wanted || reference.ends_with(&format!("/{wanted}"))
    }
}

/// A `Quantity`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Quantity {
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub system: Option<String>,
    pub code: Option<String>,
}

/// A `Period`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Period {
    pub start: Option<String>,
    pub end: Option<String>,
}

/// An `Extension` with the value types the mapping reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    #[serde(default)]
    pub url: String,
    pub value_boolean: Option<bool>,
    pub value_codeable_concept: Option<CodeableConcept>,
    pub value_reference: Option<Reference>,
    pub value_code: Option<String>,
    #[serde(default)]
    pub extension: Vec<Extension>,
}

/// The extensions of `list` with this URL.
pub fn extensions<'a>(list: &'a [Extension], url: &'a str) -> impl Iterator<Item = &'a Extension> {
    list.iter().filter(move |extension| extension.url == url)
}

/// `meta` (only the claimed profiles are read).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub profile: Vec<String>,
}

/// `Patient`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    pub id: Option<String>,
    pub birth_date: Option<String>,
}

/// `Condition`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub id: Option<String>,
    #[serde(default)]
    pub meta: Meta,
    #[serde(default)]
    pub extension: Vec<Extension>,
    pub clinical_status: Option<CodeableConcept>,
    pub verification_status: Option<CodeableConcept>,
    pub code: Option<CodeableConcept>,
    #[serde(default)]
    pub body_site: Vec<CodeableConcept>,
}

/// An `Observation` component.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    #[serde(default)]
    pub code: CodeableConcept,
    pub value_boolean: Option<bool>,
    pub value_codeable_concept: Option<CodeableConcept>,
    pub value_quantity: Option<Quantity>,
}

/// `Observation`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    pub id: Option<String>,
    #[serde(default)]
    pub extension: Vec<Extension>,
    pub status: Option<String>,
    #[serde(default)]
    pub code: CodeableConcept,
    #[serde(default)]
    pub focus: Vec<Reference>,
    pub effective_date_time: Option<String>,
    pub effective_period: Option<Period>,
    pub effective_instant: Option<String>,
    pub value_boolean: Option<bool>,
    pub value_codeable_concept: Option<CodeableConcept>,
    pub value_quantity: Option<Quantity>,
    pub method: Option<CodeableConcept>,
    pub specimen: Option<Reference>,
    #[serde(default)]
    pub component: Vec<Component>,
}

/// `Procedure`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Procedure {
    pub id: Option<String>,
    #[serde(default)]
    pub meta: Meta,
    #[serde(default)]
    pub extension: Vec<Extension>,
    pub status: Option<String>,
    #[serde(default)]
    pub code: CodeableConcept,
    pub performed_date_time: Option<String>,
    pub performed_period: Option<Period>,
    #[serde(default)]
    pub reason_reference: Vec<Reference>,
    #[serde(default)]
    pub reason_code: Vec<CodeableConcept>,
}

/// One resource of the chart, of a type the mapping reads; others are kept as `Other` and not read.
#[derive(Debug, Clone)]
pub enum Resource {
    Patient(Box<Patient>),
    Condition(Box<Condition>),
    Observation(Box<Observation>),
    Procedure(Box<Procedure>),
    /// An OperationOutcome in place of a prefetch result: the client could not fetch it.
    OperationOutcome,
    Other,
}

/// A prefetch value or one Bundle entry that is not a FHIR resource the service can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Malformed {
    /// Where, e.g. `prefetch.assessments.entry[2].resource.valueBoolean`.
    pub path: String,
    pub message: String,
}

/// Parses one resource; `path` names it in errors.
pub fn resource(value: &serde_json::Value, path: &str) -> Result<Resource, Malformed> {
    let kind = value
        .get("resourceType")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| Malformed {
            path: path.to_string(),
            message: "not a FHIR resource (no resourceType)".into(),
        })?;
    fn typed<T: serde::de::DeserializeOwned>(
        value: &serde_json::Value,
        path: &str,
    ) -> Result<T, Malformed> {
        serde_path_to_error::deserialize(value).map_err(|error| Malformed {
            path: format!("{path}.{}", error.path()),
            message: error.inner().to_string(),
        })
    }
    Ok(match kind {
        "Patient" => Resource::Patient(Box::new(typed(value, path)?)),
        "Condition" => Resource::Condition(Box::new(typed(value, path)?)),
        "Observation" => Resource::Observation(Box::new(typed(value, path)?)),
        "Procedure" => Resource::Procedure(Box::new(typed(value, path)?)),
        "OperationOutcome" => Resource::OperationOutcome,
        _ => Resource::Other,
    })
}

/// The resources of a prefetch value: a single resource, or the entries of a Bundle. `Err` names
/// the first entry that cannot be read.
pub fn resources_of(value: &serde_json::Value, path: &str) -> Result<Vec<Resource>, Malformed> {
    if value
        .get("resourceType")
        .and_then(serde_json::Value::as_str)
        != Some("Bundle")
    {
        return Ok(vec![resource(value, path)?]);
    }
    let Some(entries) = value.get("entry") else {
        return Ok(Vec::new());
    };
    let entries = entries.as_array().ok_or_else(|| Malformed {
        path: format!("{path}.entry"),
        message: "not an array".into(),
    })?;
    let mut resources = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let entry_path = format!("{path}.entry[{index}].resource");
        // A search's OperationOutcome entry (search mode "outcome") carries warnings, not data.
        let Some(resource_value) = entry.get("resource") else {
            return Err(Malformed {
                path: entry_path,
                message: "entry without a resource".into(),
            });
        };
        resources.push(resource(resource_value, &entry_path)?);
    }
    Ok(resources)
}

/// Whether a Bundle says more results follow (`link` with relation `next`).
pub fn has_next_page(value: &serde_json::Value) -> bool {
    value
        .get("link")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|links| {
            links.iter().any(|link| {
                link.get("relation").and_then(serde_json::Value::as_str) == Some("next")
            })
        })
}
