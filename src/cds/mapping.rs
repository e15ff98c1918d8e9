//! FHIR R4 chart → `vlms.rt.v1.Case`, as §2 of `docs/ehr-integration.md` (in the shared docs)
//! defines it: every Case field is set only from explicit evidence, an absent record is missing
//! (never "no"), contradictory records are a conflict, and the mapper never picks a winner.
//!
//! The result is one of: out of scope (no confirmed venous leiomyosarcoma primary: no cards), a
//! minor (an information card), a list of gaps (missing or conflicting facts: the data-required
//! card, no plan), or the Case with the list of EHR resources each field came from.

use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::fhir::{
    self, CONDITION_CLINICAL, CONDITION_VERIFICATION, CodeableConcept, Condition, ICD_10_CM,
    ICD_O_3, LOINC, MCODE, NCIT, Observation, Patient, Procedure, Resource, SNOMED, TG263,
};
use crate::pb;

/// The site's names for the vlms-rt code systems and extensions.
#[derive(Debug, Clone)]
pub struct Names {
    code_system: String,
    structure_definition: String,
}

impl Names {
    /// Names under a canonical site base such as `https://vlms-rt.example.org` (its FHIR
    /// artefacts live under `{site}/fhir/`).
    pub fn new(site: &str) -> Names {
        let site = site.trim_end_matches('/');
        Names {
            code_system: format!("{site}/fhir/CodeSystem/"),
            structure_definition: format!("{site}/fhir/StructureDefinition/"),
        }
    }

    pub fn code_system(&self, name: &str) -> String {
        format!("{}{name}", self.code_system)
    }

    pub fn extension(&self, name: &str) -> String {
        format!("{}{name}", self.structure_definition)
    }
}

/// The chart as the prefetch (or the FHIR server) gave it.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub patient: Option<Patient>,
    pub conditions: Vec<Condition>,
    pub observations: Vec<Observation>,
    pub procedures: Vec<Procedure>,
}

impl Chart {
    /// Collects resources; the same `Type/id` met twice (two prefetch keys can return it) is kept
    /// once.
    pub fn add(&mut self, resource: Resource) {
        fn push_once<T>(list: &mut Vec<T>, item: T, id_of: impl Fn(&T) -> Option<&str>) {
            let id = id_of(&item);
            if id.is_none() || !list.iter().any(|seen| id_of(seen) == id) {
                list.push(item);
            }
        }
        match resource {
            Resource::Patient(patient) => self.patient = Some(*patient),
            Resource::Condition(condition) => {
                push_once(&mut self.conditions, *condition, |c| c.id.as_deref());
            }
            Resource::Observation(observation) => {
                push_once(&mut self.observations, *observation, |o| o.id.as_deref());
            }
            Resource::Procedure(procedure) => {
                push_once(&mut self.procedures, *procedure, |p| p.id.as_deref());
            }
            Resource::OperationOutcome | Resource::Other => {}
        }
    }
}

/// One fact the chart lacks or contradicts, named by its Case field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The Case field, e.g. `resection.margin`.
    pub field: &'static str,
    /// What would satisfy it (missing) or what contradicts what (conflict).
    pub detail: String,
    /// The resources involved (`Type/id`), for a conflict.
    pub sources: Vec<String>,
}

/// Where a Case field came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Used {
    pub field: &'static str,
    /// `Type/id`.
    pub source: String,
    pub element: String,
}

/// The mapped case and its provenance.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub case: pb::Case,
    pub used: Vec<Used>,
    /// The primary Condition's id.
    pub primary_id: String,
    /// The primary's body-site coding the vessel came from (for preoperative course body sites).
    pub site: fhir::Coding,
    /// Things the clinician should know that set nothing (unused organs, unmarked RT courses,
    /// a birth date that is not recorded).
    pub notes: Vec<String>,
}

/// The youngest age, in whole years at the evaluation date, the guideline is meant for: it
/// covers adults (clinical-spec "intended use"; design §1.3, the row for patients under 18).
pub const ADULT_AGE_YEARS: i16 = 18;

/// What the chart allows.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// No confirmed, active leiomyosarcoma (ICD-O-3 8890/3) primary: no decision support.
    OutOfScope,
    /// The patient is younger than [`ADULT_AGE_YEARS`] at the evaluation date.
    Minor {
        age: i16,
        primary_id: String,
    },
    /// Facts are missing or contradict each other: no plan.
    Gaps {
        missing: Vec<Gap>,
        conflicts: Vec<Gap>,
        used: Vec<Used>,
        primary_id: Option<String>,
    },
    Case(Box<Mapped>),
}

/// Converts a FHIR date or dateTime to the facility-local date; `None` for a partial date
/// (`2026`, `2026-10`) or text that is not a FHIR date.
pub fn local_date(text: &str, zone: &TimeZone) -> Option<Date> {
    if text.len() == 10 {
        return text.parse::<Date>().ok();
    }
    let instant: jiff::Timestamp = text.parse().ok()?;
    Some(instant.to_zoned(zone.clone()).date())
}

/// Maps the chart as of `evaluation_date` in the facility's time zone.
pub fn map(
    chart: &Chart,
    names: &Names,
    zone: &TimeZone,
    evaluation_date: Date,
    case_id: impl FnOnce(&str) -> String,
) -> Outcome {
    let primaries = Primaries::find(chart);
    let primary = match primaries.venous_lms.as_slice() {
        [] => return Outcome::OutOfScope,
        [one] => *one,
        several => {
            return Outcome::Gaps {
                missing: Vec::new(),
                conflicts: vec![Gap {
                    field: "vessel",
                    detail: "more than one confirmed leiomyosarcoma primary: the service does not choose between them".into(),
                    sources: several.iter().map(|c| reference("Condition", c.id.as_deref())).collect(),
                }],
                used: Vec::new(),
                primary_id: None,
            };
        }
    };
    let primary_id = primary.id.clone().unwrap_or_default();
    let mut mapper = Mapper {
        chart,
        names,
        zone,
        evaluation_date,
        primary,
        primary_id: primary_id.clone(),
        only_primary: primaries.cancer_count <= 1,
        missing: Vec::new(),
        conflicts: Vec::new(),
        used: Vec::new(),
        notes: Vec::new(),
    };
    if let Some(age) = mapper.age().filter(|age| *age < ADULT_AGE_YEARS) {
        return Outcome::Minor { age, primary_id };
    }
    let case = mapper.case(case_id(&primary_id));
    if mapper.missing.is_empty() && mapper.conflicts.is_empty() {
        let site = mapper.site_coding();
        Outcome::Case(Box::new(Mapped {
            case,
            used: mapper.used,
            primary_id,
            site,
            notes: mapper.notes,
        }))
    } else {
        Outcome::Gaps {
            missing: mapper.missing,
            conflicts: mapper.conflicts,
            used: mapper.used,
            primary_id: Some(primary_id),
        }
    }
}

fn reference(kind: &str, id: Option<&str>) -> String {
    format!("{kind}/{}", id.unwrap_or("(no id)"))
}

/// The patient's primary cancers.
struct Primaries<'c> {
    /// Confirmed, active primaries with ICD-O-3 8890/3 histology.
    venous_lms: Vec<&'c Condition>,
    /// Confirmed, active primary cancers of any histology (evidence is linked explicitly when
    /// there is more than one).
    cancer_count: usize,
}

const HISTOLOGY: &str = "mcode-histology-morphology-behavior";
const SECONDARY_PROFILE: &str = "mcode-secondary-cancer-condition";
const PRIMARY_PROFILE: &str = "mcode-primary-cancer-condition";

impl<'c> Primaries<'c> {
    fn find(chart: &'c Chart) -> Primaries<'c> {
        let histology = format!("{MCODE}{HISTOLOGY}");
        let primary_profile = format!("{MCODE}{PRIMARY_PROFILE}");
        let secondary_profile = format!("{MCODE}{SECONDARY_PROFILE}");
        let mut venous_lms = Vec::new();
        let mut cancer_count = 0;
        for condition in &chart.conditions {
            let declares = |profile: &str| condition.meta.profile.iter().any(|p| p == profile);
            if declares(&secondary_profile) || !confirmed_and_active(condition) {
                continue;
            }
            let histologies: Vec<&CodeableConcept> =
                fhir::extensions(&condition.extension, &histology)
                    .filter_map(|e| e.value_codeable_concept.as_ref())
                    .collect();
            if histologies.is_empty() && !declares(&primary_profile) {
                continue;
            }
            cancer_count += 1;
            if histologies.iter().any(|h| h.has(ICD_O_3, "8890/3")) {
                venous_lms.push(condition);
            }
        }
        Primaries {
            venous_lms,
            cancer_count,
        }
    }
}

fn confirmed_and_active(condition: &Condition) -> bool {
    let confirmed = condition
        .verification_status
        .as_ref()
        .is_some_and(|status| status.has(CONDITION_VERIFICATION, "confirmed"));
    let active = condition.clinical_status.as_ref().is_some_and(|status| {
        ["active", "recurrence", "relapse"]
            .iter()
            .any(|code| status.has(CONDITION_CLINICAL, code))
    });
    confirmed && active
}

/// Observation statuses whose value counts.
fn usable(observation: &Observation) -> bool {
    matches!(
        observation.status.as_deref(),
        Some("final" | "amended" | "corrected")
    )
}

/// The latest of several dated candidates, or the conflict among those on the latest date.
enum Pick<'c, T> {
    None,
    One(T, &'c Observation),
    Conflict(Vec<String>),
}

struct Mapper<'c> {
    chart: &'c Chart,
    names: &'c Names,
    zone: &'c TimeZone,
    evaluation_date: Date,
    primary: &'c Condition,
    primary_id: String,
    /// One primary cancer: patient-level evidence is taken as this one's.
    only_primary: bool,
    missing: Vec<Gap>,
    conflicts: Vec<Gap>,
    used: Vec<Used>,
    notes: Vec<String>,
}

/// What the field's value needs to be set, for the missing-data card.
fn missing(field: &'static str, detail: impl Into<String>) -> Gap {
    Gap {
        field,
        detail: detail.into(),
        sources: Vec::new(),
    }
}

impl<'c> Mapper<'c> {
    fn missing(&mut self, field: &'static str, detail: impl Into<String>) {
        self.missing.push(missing(field, detail));
    }

    fn conflict(&mut self, field: &'static str, detail: impl Into<String>, sources: Vec<String>) {
        self.conflicts.push(Gap {
            field,
            detail: detail.into(),
            sources,
        });
    }

    fn used(&mut self, field: &'static str, source: String, element: impl Into<String>) {
        self.used.push(Used {
            field,
            source,
            element: element.into(),
        });
    }

    fn age(&mut self) -> Option<i16> {
        let birth = self
            .chart
            .patient
            .as_ref()
            .and_then(|patient| patient.birth_date.as_deref())
            .and_then(|text| text.parse::<Date>().ok());
        let Some(birth) = birth else {
            self.notes.push(
                "Age not verified: the record has no full birth date (the guideline is for adults)."
                    .into(),
            );
            return None;
        };
        let mut age = self.evaluation_date.year() - birth.year();
        if (self.evaluation_date.month(), self.evaluation_date.day()) < (birth.month(), birth.day())
        {
            age -= 1;
        }
        Some(age)
    }

    /// Whether an Observation is evidence about the primary.
    fn linked(&self, observation: &Observation) -> bool {
        let related = format!("{MCODE}mcode-related-condition");
        let names_primary = observation
            .focus
            .iter()
            .any(|focus| focus.names("Condition", &self.primary_id))
            || fhir::extensions(&observation.extension, &related).any(|extension| {
                extension
                    .value_reference
                    .as_ref()
                    .is_some_and(|r| r.names("Condition", &self.primary_id))
            });
        if names_primary {
            return true;
        }
        // With one primary cancer, patient-level evidence counts, unless it names another
        // Condition as its focus or its related condition.
        let names_condition = |reference: Option<&fhir::Reference>| {
            reference
                .and_then(|r| r.reference.as_deref())
                .is_some_and(|r| r.contains("Condition/"))
        };
        let names_other_condition = observation.focus.iter().any(|f| names_condition(Some(f)))
            || fhir::extensions(&observation.extension, &related)
                .any(|extension| names_condition(extension.value_reference.as_ref()));
        self.only_primary && !names_other_condition
    }

    fn observations(&self, is: impl Fn(&CodeableConcept) -> bool) -> Vec<&'c Observation> {
        self.chart
            .observations
            .iter()
            .filter(|o| usable(o) && is(&o.code) && self.linked(o))
            .collect()
    }

    fn vlms_code(&self, code: &str) -> impl Fn(&CodeableConcept) -> bool + use<'_> {
        let system = self.names.code_system("vlms-rt-case");
        let code = code.to_string();
        move |concept: &CodeableConcept| concept.has(&system, &code)
    }

    fn effective(&self, observation: &Observation) -> Option<Date> {
        let text = observation
            .effective_date_time
            .as_deref()
            .or(observation.effective_instant.as_deref())
            .or(observation
                .effective_period
                .as_ref()
                .and_then(|p| p.start.as_deref()))?;
        local_date(text, self.zone)
    }

    /// The latest dated candidate's value; candidates without a full date are left out, and so
    /// are those dated before `not_before` (stale). Records dated after the evaluation date are
    /// read as they are: the service refuses a surgery after it, and the card says so.
    fn pick<T: PartialEq + Clone>(
        &self,
        candidates: &[(&'c Observation, T)],
        not_before: Option<Date>,
    ) -> Pick<'c, T> {
        let dated: Vec<(Date, &'c Observation, &T)> = candidates
            .iter()
            .filter_map(|(o, v)| self.effective(o).map(|d| (d, *o, v)))
            .filter(|(d, _, _)| not_before.is_none_or(|floor| *d >= floor))
            .collect();
        let Some(latest) = dated.iter().map(|(d, _, _)| *d).max() else {
            return Pick::None;
        };
        let on_latest: Vec<&(Date, &'c Observation, &T)> =
            dated.iter().filter(|(d, _, _)| *d == latest).collect();
        let first = on_latest[0];
        if on_latest.iter().all(|(_, _, v)| *v == first.2) {
            Pick::One(first.2.clone(), first.1)
        } else {
            Pick::Conflict(
                on_latest
                    .iter()
                    .map(|(_, o, _)| reference("Observation", o.id.as_deref()))
                    .collect(),
            )
        }
    }

    /// A boolean assessment (`vlms-rt-case#<code>` valueBoolean).
    fn boolean(
        &mut self,
        field: &'static str,
        code: &str,
        not_before: Option<Date>,
    ) -> Option<bool> {
        let candidates: Vec<(&Observation, bool)> = self
            .observations(self.vlms_code(code))
            .into_iter()
            .filter_map(|o| o.value_boolean.map(|v| (o, v)))
            .collect();
        match self.pick(&candidates, not_before) {
            Pick::One(value, observation) => {
                self.used(
                    field,
                    reference("Observation", observation.id.as_deref()),
                    "Observation.valueBoolean",
                );
                Some(value)
            }
            Pick::Conflict(sources) => {
                self.conflict(
                    field,
                    format!("two `{code}` observations on the same date disagree"),
                    sources,
                );
                None
            }
            Pick::None => {
                let when = match not_before {
                    Some(date) => format!(", dated on or after the surgery ({date})"),
                    None => String::new(),
                };
                self.missing(
                    field,
                    format!("a final Observation `vlms-rt-case#{code}` with valueBoolean{when}"),
                );
                None
            }
        }
    }

    fn case(&mut self, case_id: String) -> pb::Case {
        let mut case = pb::Case {
            case_id,
            evaluation_date: self.evaluation_date.to_string(),
            ..Default::default()
        };
        let vessel = self.vessel();
        if let Some(vessel) = vessel {
            case.vessel = vessel as i32;
        }
        let segment = self.ivc_segment(vessel);
        if let Some(segment) = segment {
            case.ivc_segment = segment as i32;
        }
        let resection = self.resection_procedure();
        let surgery_date = resection.as_ref().map(|(_, date)| *date);
        case.tumor = Some(self.tumor(vessel, surgery_date));
        match self.phase(resection.as_ref().map(|(p, _)| *p)) {
            Some(pb::TreatmentPhase::PreResection) => {
                case.phase = pb::TreatmentPhase::PreResection as i32;
                self.pre_resection(&mut case);
            }
            Some(pb::TreatmentPhase::PostResection) => {
                case.phase = pb::TreatmentPhase::PostResection as i32;
                if let Some((procedure, date)) = resection {
                    case.resection = Some(self.resection(procedure, date));
                }
            }
            _ => {}
        }
        if let Some(organs) = self.organs() {
            case.organs_at_risk = organs.into_iter().map(|o| o as i32).collect();
        }
        if let Some(value) = self.boolean(
            "solitary_functioning_kidney",
            "solitary-functioning-kidney",
            None,
        ) {
            case.solitary_functioning_kidney = value;
        }
        if let Some(value) =
            self.boolean("prior_radiotherapy", "prior-radiotherapy-to-region", None)
        {
            case.prior_radiotherapy = value;
        }
        self.prior_rt_evidence();
        if let Some(value) = self.metastatic() {
            case.metastatic_disease = value;
        }
        if let Some(value) = self.preoperative_rt(surgery_date) {
            case.preoperative_rt_delivered = value;
        }
        case
    }

    fn site_coding(&self) -> fhir::Coding {
        self.primary
            .body_site
            .iter()
            .flat_map(|site| site.coding.iter())
            .find(|coding| coding.system.as_deref() == Some(SNOMED))
            .cloned()
            .unwrap_or_default()
    }

    fn vessel(&mut self) -> Option<pb::Vessel> {
        let source = reference("Condition", Some(&self.primary_id));
        let qualifier = format!("{MCODE}mcode-body-location-qualifier");
        let mut found: Vec<pb::Vessel> = Vec::new();
        for site in &self.primary.body_site {
            for code in site.codes(SNOMED) {
                let vessel = match vessel_of(code) {
                    Some(vessel) => Some(vessel),
                    // Vena caval structure + the qualifier Inferior (mCODE's TG-263 V_Venacava_I).
                    None if code == "35532006" => fhir::extensions(&site.extension, &qualifier)
                        .filter_map(|e| e.value_codeable_concept.as_ref())
                        .any(|q| q.has(SNOMED, "261089000"))
                        .then_some(pb::Vessel::InferiorVenaCava),
                    None => None,
                };
                if let Some(vessel) = vessel.filter(|v| !found.contains(v)) {
                    found.push(vessel);
                }
            }
        }
        match found.as_slice() {
            [one] => {
                self.used("vessel", source, "Condition.bodySite");
                Some(*one)
            }
            [] => {
                let detail = if self.primary.body_site.is_empty() {
                    "the primary Condition's bodySite, coded in SNOMED CT as one of the veins the guideline covers"
                } else {
                    "vein not recognised: the primary's bodySite holds no SNOMED CT code of the vlms-rt-vessel map; choose the vein"
                };
                self.missing("vessel", detail);
                None
            }
            _ => {
                self.conflict(
                    "vessel",
                    "the primary's bodySite names more than one vein",
                    vec![source],
                );
                None
            }
        }
    }

    fn ivc_segment(&mut self, vessel: Option<pb::Vessel>) -> Option<pb::IvcSegment> {
        let url = self.names.extension("vlms-rt-ivc-segment");
        let system = self.names.code_system("vlms-rt-ivc-segment");
        let source = reference("Condition", Some(&self.primary_id));
        let mut segments: Vec<Option<pb::IvcSegment>> = Vec::new();
        for site in &self.primary.body_site {
            for extension in fhir::extensions(&site.extension, &url) {
                let segment = extension.value_codeable_concept.as_ref().and_then(|value| {
                    value.codes(&system).find_map(|code| match code {
                        "I" => Some(pb::IvcSegment::Lower),
                        "II" => Some(pb::IvcSegment::Middle),
                        "III" => Some(pb::IvcSegment::Upper),
                        _ => None,
                    })
                });
                if !segments.contains(&segment) {
                    segments.push(segment);
                }
            }
        }
        match vessel {
            Some(pb::Vessel::InferiorVenaCava) => match segments.as_slice() {
                [Some(segment)] => {
                    self.used(
                        "ivc_segment",
                        source,
                        "Condition.bodySite.extension[vlms-rt-ivc-segment]",
                    );
                    Some(*segment)
                }
                [] | [None] => {
                    self.missing(
                        "ivc_segment",
                        "extension vlms-rt-ivc-segment (I, II or III) on the primary's bodySite",
                    );
                    None
                }
                _ => {
                    self.conflict(
                        "ivc_segment",
                        "the primary's bodySite names more than one IVC segment",
                        vec![source],
                    );
                    None
                }
            },
            Some(_) if !segments.is_empty() => {
                self.conflict(
                    "ivc_segment",
                    "an IVC segment is recorded for a site that is not the IVC",
                    vec![source],
                );
                None
            }
            _ => None,
        }
    }

    fn tumor(&mut self, vessel: Option<pb::Vessel>, surgery: Option<Date>) -> pb::Tumor {
        let mut tumor = pb::Tumor::default();
        if let Some(size) = self.size(surgery) {
            tumor.size_cm = size;
        }
        if let Some(grade) = self.grade() {
            tumor.grade = grade as i32;
        }
        if let Some(depth) = self.depth(vessel) {
            tumor.depth = depth as i32;
        }
        tumor
    }

    fn size(&mut self, surgery: Option<Date>) -> Option<f64> {
        let all = self.observations(|code| code.has(LOINC, "21889-1"));
        // After resection a gross-pathology measurement (with a specimen, dated on or after the
        // surgery: a biopsy's is not the tumour's size) is preferred to imaging.
        let pathology: Vec<&Observation> = all
            .iter()
            .copied()
            .filter(|o| {
                o.specimen.is_some()
                    && surgery.is_some_and(|date| self.effective(o).is_some_and(|d| d >= date))
            })
            .collect();
        let measured = if pathology.is_empty() { all } else { pathology };
        let mut candidates: Vec<(&Observation, SizeValue)> = Vec::new();
        for observation in measured {
            let Some(component) = observation
                .component
                .iter()
                .find(|c| c.code.has(LOINC, "33728-7"))
            else {
                continue;
            };
            let Some(quantity) = &component.value_quantity else {
                continue;
            };
            let value = match (quantity.value, quantity.code.as_deref()) {
                (Some(value), Some("cm")) => SizeValue::Cm(value),
                (Some(value), Some("mm")) => SizeValue::Cm(value / 10.0),
                (Some(_), code) => SizeValue::BadUnit(code.unwrap_or("(none)").to_string()),
                (None, _) => continue,
            };
            candidates.push((observation, value));
        }
        match self.pick(&candidates, None) {
            Pick::One(SizeValue::Cm(value), observation) => {
                self.used(
                    "tumor.size_cm",
                    reference("Observation", observation.id.as_deref()),
                    "Observation.component[33728-7].valueQuantity",
                );
                Some(value)
            }
            Pick::One(SizeValue::BadUnit(unit), observation) => {
                self.conflict(
                    "tumor.size_cm",
                    format!(
                        "the longest dimension is in unit `{unit}`; only UCUM cm or mm can be read"
                    ),
                    vec![reference("Observation", observation.id.as_deref())],
                );
                None
            }
            Pick::Conflict(sources) => {
                self.conflict(
                    "tumor.size_cm",
                    "two tumour size measurements on the same date disagree",
                    sources,
                );
                None
            }
            Pick::None => {
                self.missing(
                    "tumor.size_cm",
                    "an mCODE TumorSize Observation (LOINC 21889-1) with the longest dimension (33728-7) in cm or mm",
                );
                None
            }
        }
    }

    fn grade(&mut self) -> Option<pb::Grade> {
        let unknown = self.names.code_system("vlms-rt-case");
        let mut candidates: Vec<(&Observation, Option<pb::Grade>)> = Vec::new();
        for observation in self.observations(|code| code.has(NCIT, "C18000")) {
            let Some(value) = &observation.value_codeable_concept else {
                continue;
            };
            let fnclcc = observation
                .method
                .as_ref()
                .is_some_and(|m| m.has(SNOMED, "426757001"));
            let grade = if value.has(SNOMED, "1228848004") {
                Some(pb::Grade::Grade1)
            } else if value.has(SNOMED, "1228850007") {
                Some(pb::Grade::Grade2)
            } else if value.has(SNOMED, "1228851006") {
                Some(pb::Grade::Grade3)
            } else if value.has(&unknown, "grade-unknown") {
                Some(pb::Grade::Unknown)
            } else if fnclcc && value.has(SNOMED, "1155708003") {
                Some(pb::Grade::Grade1)
            } else if fnclcc && value.has(SNOMED, "1286893008") {
                Some(pb::Grade::Grade2)
            } else if fnclcc && value.has(SNOMED, "1155707008") {
                Some(pb::Grade::Grade3)
            } else {
                // low/intermediate/high without the FNCLCC method, or another code: not a grade
                // the guideline can read.
                None
            };
            candidates.push((observation, grade));
        }
        match self.pick(&candidates, None) {
            Pick::One(Some(grade), observation) => {
                self.used(
                    "tumor.grade",
                    reference("Observation", observation.id.as_deref()),
                    "Observation.valueCodeableConcept",
                );
                Some(grade)
            }
            Pick::One(None, observation) => {
                self.missing.push(Gap {
                    field: "tumor.grade",
                    detail: "the latest grade is not an FNCLCC grade: AJCC G1-G3, or low/intermediate/high with method FNCLCC (SNOMED 426757001), or vlms-rt-case#grade-unknown".into(),
                    sources: vec![reference("Observation", observation.id.as_deref())],
                });
                None
            }
            Pick::Conflict(sources) => {
                self.conflict(
                    "tumor.grade",
                    "two histologic grades on the same date disagree",
                    sources,
                );
                None
            }
            Pick::None => {
                self.missing(
                    "tumor.grade",
                    "an mCODE HistologicGrade Observation (NCIt C18000) with an FNCLCC grade, or vlms-rt-case#grade-unknown when no grade can be given",
                );
                None
            }
        }
    }

    fn depth(&mut self, vessel: Option<pb::Vessel>) -> Option<pb::Depth> {
        let candidates: Vec<(&Observation, Option<pb::Depth>)> = self
            .observations(self.vlms_code("tumor-depth"))
            .into_iter()
            .filter_map(|o| {
                let value = o.value_codeable_concept.as_ref()?;
                let depth = if value.has(SNOMED, "795002") {
                    Some(pb::Depth::Deep)
                } else if value.has(SNOMED, "26283006") {
                    Some(pb::Depth::Superficial)
                } else {
                    None
                };
                Some((o, depth))
            })
            .collect();
        let retroperitoneal = vessel.is_some_and(|v| {
            matches!(
                v,
                pb::Vessel::InferiorVenaCava
                    | pb::Vessel::RenalVein
                    | pb::Vessel::GonadalVein
                    | pb::Vessel::IliacVein
            )
        });
        match self.pick(&candidates, None) {
            Pick::One(Some(depth), observation) => {
                self.used(
                    "tumor.depth",
                    reference("Observation", observation.id.as_deref()),
                    "Observation.valueCodeableConcept",
                );
                Some(depth)
            }
            Pick::Conflict(sources) => {
                self.conflict(
                    "tumor.depth",
                    "two depth assessments on the same date disagree",
                    sources,
                );
                None
            }
            // Retroperitoneal sites are deep by definition: the contract allows depth unset.
            _ if retroperitoneal || vessel.is_none() => None,
            _ => {
                self.missing(
                    "tumor.depth",
                    "an Observation vlms-rt-case#tumor-depth valued SNOMED 795002 Deep or 26283006 Superficial",
                );
                None
            }
        }
    }

    /// The latest completed resection of the primary and its facility-local date.
    fn resection_procedure(&mut self) -> Option<(&'c Procedure, Date)> {
        let flag = self.names.extension("vlms-rt-primary-tumor-resection");
        let resections: Vec<&'c Procedure> = self
            .chart
            .procedures
            .iter()
            .filter(|p| p.status.as_deref() == Some("completed"))
            .filter(|p| {
                p.reason_reference
                    .iter()
                    .any(|r| r.names("Condition", &self.primary_id))
            })
            .filter(|p| {
                fhir::extensions(&p.extension, &flag).any(|e| e.value_boolean == Some(true))
            })
            .collect();
        let mut dated: Vec<(&'c Procedure, Date)> = Vec::new();
        for procedure in resections {
            let performed = procedure.performed_date_time.as_deref().or(procedure
                .performed_period
                .as_ref()
                .and_then(|p| p.start.as_deref()));
            match performed.and_then(|text| local_date(text, self.zone)) {
                Some(date) => dated.push((procedure, date)),
                None => self.missing.push(Gap {
                    field: "resection.surgery_date",
                    detail: "the resection Procedure's performedDateTime or performedPeriod.start as a full date".into(),
                    sources: vec![reference("Procedure", procedure.id.as_deref())],
                }),
            }
        }
        let latest = dated.iter().map(|(_, d)| *d).max()?;
        let on_latest: Vec<&(&Procedure, Date)> =
            dated.iter().filter(|(_, d)| *d == latest).collect();
        if on_latest.len() > 1 {
            self.conflict(
                "resection.surgery_date",
                "two resections of the primary on the same date",
                on_latest
                    .iter()
                    .map(|(p, _)| reference("Procedure", p.id.as_deref()))
                    .collect(),
            );
            return None;
        }
        Some(*on_latest[0])
    }

    fn phase(&mut self, resection: Option<&'c Procedure>) -> Option<pb::TreatmentPhase> {
        if let Some(procedure) = resection {
            self.used(
                "phase",
                reference("Procedure", procedure.id.as_deref()),
                "Procedure.status=completed + extension[vlms-rt-primary-tumor-resection]",
            );
            return Some(pb::TreatmentPhase::PostResection);
        }
        if self
            .missing
            .iter()
            .chain(&self.conflicts)
            .any(|gap| gap.field == "resection.surgery_date")
        {
            // A resection exists but cannot be dated: the phase is known, the rest is reported.
            return None;
        }
        if !self
            .observations(self.vlms_code("resectability-assessment"))
            .is_empty()
        {
            // A completed procedure of the primary that is not marked as its resection (a biopsy,
            // or a resection recorded only by its procedure code) is shown, so that a resection
            // the chart does not mark cannot pass unseen as "before resection".
            let flag = self.names.extension("vlms-rt-primary-tumor-resection");
            for procedure in &self.chart.procedures {
                let own = procedure
                    .reason_reference
                    .iter()
                    .any(|r| r.names("Condition", &self.primary_id));
                let marked = fhir::extensions(&procedure.extension, &flag)
                    .next()
                    .is_some();
                if own
                    && !marked
                    && procedure.status.as_deref() == Some("completed")
                    && !procedure.code.has(SNOMED, "1217123003")
                {
                    self.notes.push(format!(
                        "{} is a completed procedure of this tumour not marked as its resection (extension vlms-rt-primary-tumor-resection): read as not a resection, so the plan is for before resection.",
                        reference("Procedure", procedure.id.as_deref())
                    ));
                }
            }
            return Some(pb::TreatmentPhase::PreResection);
        }
        self.missing(
            "phase",
            "a completed resection Procedure of the primary (extension vlms-rt-primary-tumor-resection = true), or, before surgery, a vlms-rt-case#resectability-assessment Observation",
        );
        None
    }

    fn pre_resection(&mut self, case: &mut pb::Case) {
        let system = self.names.code_system("vlms-rt-resectability");
        let mutilating = self.names.code_system("vlms-rt-case");
        let assessments = self.observations(self.vlms_code("resectability-assessment"));
        // The two facts are picked from the same assessments, so they come from the same date;
        // a disagreement is reported on the fact that differs.
        let values: Vec<(&Observation, Option<pb::Resectability>)> = assessments
            .iter()
            .map(|o| {
                let value = o.value_codeable_concept.as_ref().and_then(|v| {
                    v.codes(&system).find_map(|code| match code {
                        "resectable" => Some(pb::Resectability::Resectable),
                        "marginal" => Some(pb::Resectability::Marginal),
                        "unresectable" => Some(pb::Resectability::Unresectable),
                        _ => None,
                    })
                });
                (*o, value)
            })
            .collect();
        let components: Vec<(&Observation, Option<bool>)> = assessments
            .iter()
            .map(|o| {
                let component = o
                    .component
                    .iter()
                    .find(|c| c.code.has(&mutilating, "surgery-mutilating"))
                    .and_then(|c| c.value_boolean);
                (*o, component)
            })
            .collect();
        match self.pick(&values, None) {
            Pick::One(Some(value), observation) => {
                case.resectability = value as i32;
                self.used(
                    "resectability",
                    reference("Observation", observation.id.as_deref()),
                    "Observation.valueCodeableConcept",
                );
            }
            Pick::One(None, _) => self.missing(
                "resectability",
                "the resectability assessment's value from vlms-rt-resectability (resectable, marginal, unresectable)",
            ),
            Pick::Conflict(sources) => self.conflict(
                "resectability",
                "two resectability assessments on the same date disagree",
                sources,
            ),
            Pick::None => self.missing(
                "resectability",
                "a dated vlms-rt-case#resectability-assessment Observation",
            ),
        }
        match self.pick(&components, None) {
            Pick::One(Some(value), observation) => {
                case.surgery_mutilating = value;
                self.used(
                    "surgery_mutilating",
                    reference("Observation", observation.id.as_deref()),
                    "Observation.component[surgery-mutilating].valueBoolean",
                );
            }
            Pick::One(None, _) | Pick::None => self.missing(
                "surgery_mutilating",
                "component vlms-rt-case#surgery-mutilating (valueBoolean) of a dated resectability assessment",
            ),
            Pick::Conflict(sources) => self.conflict(
                "surgery_mutilating",
                "two resectability assessments on the same date disagree on whether adequate surgery would be mutilating",
                sources,
            ),
        }
    }

    fn resection(&mut self, procedure: &'c Procedure, date: Date) -> pb::Resection {
        let source = reference("Procedure", procedure.id.as_deref());
        let mut resection = pb::Resection {
            surgery_date: date.to_string(),
            ..Default::default()
        };
        self.used(
            "resection.surgery_date",
            source.clone(),
            "Procedure.performed[x] (facility-local date)",
        );
        let margin = self.margin(date);
        if let Some(margin) = margin {
            resection.margin = margin as i32;
        }
        if margin == Some(pb::Margin::R0) {
            if let Some(value) = self.boolean("resection.close_margin", "close-margin", Some(date))
            {
                resection.close_margin = value;
            }
            if let Some(value) = self.procedure_flag(
                procedure,
                "resection.compartmental_contained",
                "vlms-rt-compartmental-resection",
            ) {
                resection.compartmental_contained = value;
            }
        }
        if matches!(margin, Some(pb::Margin::R1 | pb::Margin::R2))
            && let Some(value) = self.boolean(
                "resection.re_excision_feasible",
                "re-excision-feasible",
                Some(date),
            )
        {
            resection.re_excision_feasible = value;
        }
        if let Some(value) = self.boolean(
            "resection.hematoma_present",
            "postoperative-hematoma",
            Some(date),
        ) {
            resection.hematoma_present = value;
        }
        if let Some(value) = self.vascular_management(procedure) {
            resection.vascular_management = value as i32;
        }
        if let Some(value) = self.procedure_flag(
            procedure,
            "resection.periaortic_dissection",
            "vlms-rt-periaortic-dissection",
        ) {
            resection.periaortic_dissection = value;
        }
        resection
    }

    fn margin(&mut self, surgery: Date) -> Option<pb::Margin> {
        let candidates: Vec<(&Observation, Option<pb::Margin>)> = self
            .observations(|code| code.has(SNOMED, "17964000") || code.has(LOINC, "84892-9"))
            .into_iter()
            .map(|o| {
                let margin = o.value_codeable_concept.as_ref().and_then(|v| {
                    if v.has(SNOMED, "1222638005") || v.has(SNOMED, "258254000") {
                        Some(pb::Margin::R0)
                    } else if v.has(SNOMED, "1222639002") || v.has(SNOMED, "278271003") {
                        Some(pb::Margin::R1)
                    } else if v.has(SNOMED, "1222640000") || v.has(SNOMED, "278272005") {
                        Some(pb::Margin::R2)
                    } else {
                        None
                    }
                });
                (o, margin)
            })
            .collect();
        match self.pick(&candidates, Some(surgery)) {
            Pick::One(Some(margin), observation) => {
                self.used(
                    "resection.margin",
                    reference("Observation", observation.id.as_deref()),
                    "Observation.valueCodeableConcept",
                );
                Some(margin)
            }
            Pick::Conflict(sources) => {
                self.conflict(
                    "resection.margin",
                    "two residual-tumour (R) classifications on the same date disagree",
                    sources,
                );
                None
            }
            Pick::One(None, _) | Pick::None => {
                self.missing(
                    "resection.margin",
                    format!("an mCODE CancerStage Observation 'Residual tumor stage' (SNOMED 17964000 or LOINC 84892-9) valued R0, R1 or R2, dated on or after the surgery ({surgery})"),
                );
                None
            }
        }
    }

    fn procedure_flag(
        &mut self,
        procedure: &'c Procedure,
        field: &'static str,
        extension: &str,
    ) -> Option<bool> {
        let url = self.names.extension(extension);
        let values: Vec<bool> = fhir::extensions(&procedure.extension, &url)
            .filter_map(|e| e.value_boolean)
            .collect();
        let source = reference("Procedure", procedure.id.as_deref());
        match values.as_slice() {
            [] => {
                self.missing(
                    field,
                    format!("extension {extension} (valueBoolean) on the resection Procedure"),
                );
                None
            }
            [first, rest @ ..] if rest.iter().all(|v| v == first) => {
                self.used(field, source, format!("Procedure.extension[{extension}]"));
                Some(*first)
            }
            _ => {
                self.conflict(
                    field,
                    format!("extension {extension} appears with both values"),
                    vec![source],
                );
                None
            }
        }
    }

    fn vascular_management(&mut self, procedure: &'c Procedure) -> Option<pb::VascularManagement> {
        let url = self.names.extension("vlms-rt-vascular-management");
        let system = self.names.code_system("vlms-rt-vascular-management");
        let mut values: Vec<Option<pb::VascularManagement>> = Vec::new();
        for extension in fhir::extensions(&procedure.extension, &url) {
            let value = extension.value_codeable_concept.as_ref().and_then(|v| {
                v.codes(&system).find_map(|code| match code {
                    "none" => Some(pb::VascularManagement::None),
                    "ligation" => Some(pb::VascularManagement::Ligation),
                    "primary-repair" => Some(pb::VascularManagement::PrimaryRepair),
                    "patch" => Some(pb::VascularManagement::Patch),
                    "graft" => Some(pb::VascularManagement::Graft),
                    _ => None,
                })
            });
            if !values.contains(&value) {
                values.push(value);
            }
        }
        let source = reference("Procedure", procedure.id.as_deref());
        match values.as_slice() {
            [Some(value)] => {
                self.used(
                    "resection.vascular_management",
                    source,
                    "Procedure.extension[vlms-rt-vascular-management]",
                );
                Some(*value)
            }
            [] | [None] => {
                self.missing(
                    "resection.vascular_management",
                    "extension vlms-rt-vascular-management on the resection Procedure (none, ligation, primary-repair, patch or graft; `none` must be stated)",
                );
                None
            }
            _ => {
                self.conflict(
                    "resection.vascular_management",
                    "the resection Procedure names more than one vascular procedure",
                    vec![source],
                );
                None
            }
        }
    }

    fn organs(&mut self) -> Option<Vec<pb::Organ>> {
        let component_system = self.names.code_system("vlms-rt-case");
        let mut unused: Vec<String> = Vec::new();
        let mut candidates: Vec<(&Observation, Adjacent)> = Vec::new();
        for observation in self.observations(self.vlms_code("organs-adjacent-to-target")) {
            let Some(any) = observation.value_boolean else {
                continue;
            };
            let mut organs: Vec<pb::Organ> = Vec::new();
            let mut listed = false;
            for component in &observation.component {
                if !component.code.has(&component_system, "adjacent-organ") {
                    continue;
                }
                listed = true;
                for code in component
                    .value_codeable_concept
                    .iter()
                    .flat_map(|v| v.codes(TG263))
                {
                    match organ_of(code) {
                        Some(organ) if !organs.contains(&organ) => organs.push(organ),
                        Some(_) => {}
                        None => unused.push(code.to_string()),
                    }
                }
            }
            let value = match (any, organs.is_empty()) {
                // "false" (none) while organs are listed contradicts itself.
                (false, _) if listed => Adjacent::NoneButListed,
                (false, _) => Adjacent::Organs(Vec::new()),
                (true, false) => Adjacent::Organs(organs),
                // "true" with no organ the guideline knows cannot be read as "none".
                (true, true) => Adjacent::Unreadable,
            };
            candidates.push((observation, value));
        }
        match self.pick(&candidates, None) {
            Pick::One(Adjacent::Organs(organs), observation) => {
                self.used(
                    "organs_at_risk",
                    reference("Observation", observation.id.as_deref()),
                    "Observation.valueBoolean + component[adjacent-organ]",
                );
                unused.sort();
                unused.dedup();
                if !unused.is_empty() {
                    self.notes.push(format!(
                        "Organs next to the target that the guideline does not use: {}.",
                        unused.join(", ")
                    ));
                }
                Some(organs)
            }
            Pick::One(Adjacent::NoneButListed, observation) => {
                self.conflict(
                    "organs_at_risk",
                    "the organ-at-risk assessment is valued false (none) but lists adjacent organs",
                    vec![reference("Observation", observation.id.as_deref())],
                );
                None
            }
            Pick::Conflict(sources) => {
                self.conflict(
                    "organs_at_risk",
                    "two organ-at-risk assessments on the same date disagree",
                    sources,
                );
                None
            }
            Pick::One(Adjacent::Unreadable, _) | Pick::None => {
                self.missing(
                    "organs_at_risk",
                    "an Observation vlms-rt-case#organs-adjacent-to-target: valueBoolean false for none, or true with adjacent-organ components coded in TG-263",
                );
                None
            }
        }
    }

    /// Radiotherapy history that is shown, never read as `prior_radiotherapy`.
    fn prior_rt_evidence(&mut self) {
        for procedure in &self.chart.procedures {
            let course = procedure.code.has(SNOMED, "1217123003");
            let own = procedure
                .reason_reference
                .iter()
                .any(|r| r.names("Condition", &self.primary_id));
            if course && !own {
                self.notes.push(format!(
                    "Radiotherapy course on record for another condition: {} (prior_radiotherapy is read only from vlms-rt-case#prior-radiotherapy-to-region).",
                    reference("Procedure", procedure.id.as_deref())
                ));
            }
        }
        for condition in &self.chart.conditions {
            if condition
                .code
                .as_ref()
                .is_some_and(|c| c.has(ICD_10_CM, "Z92.3") || c.has(SNOMED, "429479009"))
            {
                self.notes.push(format!(
                    "History of irradiation on record: {}.",
                    reference("Condition", condition.id.as_deref())
                ));
            }
        }
    }

    fn metastatic(&mut self) -> Option<bool> {
        let secondary_profile = format!("{MCODE}{SECONDARY_PROFILE}");
        let related_primary = format!("{MCODE}mcode-related-primary-cancer-condition");
        let secondaries: Vec<String> = self
            .chart
            .conditions
            .iter()
            .filter(|c| confirmed_and_active(c))
            .filter(|c| {
                c.meta.profile.contains(&secondary_profile)
                    || c.code.as_ref().is_some_and(|code| {
                        code.has(SNOMED, "128462008")
                            || code
                                .codes(ICD_10_CM)
                                .any(|icd| ["C77", "C78", "C79"].iter().any(|p| icd.starts_with(p)))
                    })
            })
            .filter(|c| {
                self.only_primary
                    || fhir::extensions(&c.extension, &related_primary).any(|e| {
                        e.value_reference
                            .as_ref()
                            .is_some_and(|r| r.names("Condition", &self.primary_id))
                    })
            })
            .map(|c| reference("Condition", c.id.as_deref()))
            .collect();
        let candidates: Vec<(&Observation, bool)> = self
            .observations(|code| {
                code.has(SNOMED, "399387003")
                    || code.has(SNOMED, "371497001")
                    || code.has(SNOMED, "277208005")
            })
            .into_iter()
            .filter_map(|o| {
                let value = o.value_codeable_concept.as_ref()?;
                Some((o, value.has(SNOMED, "1229901006")))
            })
            .collect();
        let staging = self.pick(&candidates, None);
        match (secondaries.is_empty(), staging) {
            (false, Pick::One(true, observation)) => {
                let mut sources = secondaries;
                sources.push(reference("Observation", observation.id.as_deref()));
                self.conflict(
                    "metastatic_disease",
                    "an active secondary cancer condition and an M0 staging are both on record",
                    sources,
                );
                None
            }
            (false, _) => {
                let source = secondaries[0].clone();
                self.used(
                    "metastatic_disease",
                    source,
                    "Condition (mCODE SecondaryCancerCondition, active)",
                );
                Some(true)
            }
            (true, Pick::One(true, observation)) => {
                self.used(
                    "metastatic_disease",
                    reference("Observation", observation.id.as_deref()),
                    "Observation.valueCodeableConcept = cM0",
                );
                Some(false)
            }
            (true, Pick::Conflict(sources)) => {
                self.conflict(
                    "metastatic_disease",
                    "two distant-metastasis (M) stagings on the same date disagree",
                    sources,
                );
                None
            }
            (true, Pick::One(false, _) | Pick::None) => {
                self.missing(
                    "metastatic_disease",
                    "an mCODE TNMDistantMetastasesCategory Observation valued cM0 (SNOMED 1229901006), or an active mCODE SecondaryCancerCondition",
                );
                None
            }
        }
    }

    /// §2.5: a completed, marked preoperative course of this tumour, or the explicit Observation.
    fn preoperative_rt(&mut self, surgery: Option<Date>) -> Option<bool> {
        let setting_url = self.names.extension("vlms-rt-setting");
        let setting_system = self.names.code_system("vlms-rt-setting");
        let ceiling = surgery.unwrap_or(self.evaluation_date);
        let mut qualifying: Vec<String> = Vec::new();
        let mut contradicting: Vec<String> = Vec::new();
        for procedure in &self.chart.procedures {
            if !procedure.code.has(SNOMED, "1217123003")
                || !procedure
                    .reason_reference
                    .iter()
                    .any(|r| r.names("Condition", &self.primary_id))
            {
                continue;
            }
            let source = reference("Procedure", procedure.id.as_deref());
            let marked = fhir::extensions(&procedure.extension, &setting_url)
                .filter_map(|e| e.value_codeable_concept.as_ref())
                .any(|v| {
                    v.has(&setting_system, "preoperative")
                        || v.has(&setting_system, "neoadjuvant-chemoradiation")
                });
            if !marked {
                if procedure.status.as_deref() != Some("entered-in-error") {
                    self.notes.push(format!(
                        "Radiotherapy course of this tumour without a vlms-rt-setting marker: {source} (it sets nothing: it cannot be told apart from a postoperative or definitive course)."
                    ));
                }
                continue;
            }
            match procedure.status.as_deref() {
                Some("completed") => {}
                Some("entered-in-error") => continue,
                _ => {
                    contradicting.push(source);
                    continue;
                }
            }
            let ended = procedure
                .performed_period
                .as_ref()
                .and_then(|p| p.end.as_deref())
                .or(procedure.performed_date_time.as_deref())
                .and_then(|text| local_date(text, self.zone));
            match ended {
                Some(end) if end <= ceiling => qualifying.push(source),
                _ => contradicting.push(source),
            }
        }
        let candidates: Vec<(&Observation, bool)> = self
            .observations(self.vlms_code("preoperative-rt-delivered"))
            .into_iter()
            .filter_map(|o| o.value_boolean.map(|v| (o, v)))
            .collect();
        let observed = self.pick(&candidates, None);
        if !contradicting.is_empty() {
            self.conflict(
                "preoperative_rt_delivered",
                "a preoperative course of this tumour is on record that is not completed, has no end date, or ended after the resection (the guideline covers only a completed preoperative course)",
                contradicting,
            );
            return None;
        }
        match (qualifying.first().cloned(), observed) {
            (Some(source), Pick::One(false, observation)) => {
                self.conflict(
                    "preoperative_rt_delivered",
                    "a completed preoperative course is on record and an Observation says none was given",
                    vec![source, reference("Observation", observation.id.as_deref())],
                );
                None
            }
            (_, Pick::Conflict(sources)) => {
                self.conflict(
                    "preoperative_rt_delivered",
                    "two preoperative-RT observations on the same date disagree",
                    sources,
                );
                None
            }
            (Some(source), _) => {
                self.used(
                    "preoperative_rt_delivered",
                    source,
                    "Procedure (mCODE RadiotherapyCourseSummary, extension[vlms-rt-setting] preoperative, completed)",
                );
                Some(true)
            }
            (None, Pick::One(value, observation)) => {
                self.used(
                    "preoperative_rt_delivered",
                    reference("Observation", observation.id.as_deref()),
                    "Observation.valueBoolean",
                );
                Some(value)
            }
            (None, Pick::None) => {
                self.missing(
                    "preoperative_rt_delivered",
                    "a completed mCODE RadiotherapyCourseSummary of this tumour marked vlms-rt-setting preoperative, or an Observation vlms-rt-case#preoperative-rt-delivered (valueBoolean; false when no such course was given)",
                );
                None
            }
        }
    }
}

/// What one organs-adjacent-to-target assessment says. Two assessments agree when they name the
/// same organs, in whatever order each lists them.
#[derive(Debug, Clone)]
enum Adjacent {
    /// The organs the guideline knows (none for `false`).
    Organs(Vec<pb::Organ>),
    /// `true` without an organ the guideline knows.
    Unreadable,
    /// `false` with adjacent-organ components.
    NoneButListed,
}

impl PartialEq for Adjacent {
    fn eq(&self, other: &Adjacent) -> bool {
        match (self, other) {
            // Each list holds an organ once, so equal lengths and inclusion make equal sets.
            (Adjacent::Organs(a), Adjacent::Organs(b)) => {
                a.len() == b.len() && a.iter().all(|organ| b.contains(organ))
            }
            (Adjacent::Unreadable, Adjacent::Unreadable)
            | (Adjacent::NoneButListed, Adjacent::NoneButListed) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum SizeValue {
    Cm(f64),
    BadUnit(String),
}

/// ConceptMap `vlms-rt-vessel` (§2.3): exact SNOMED CT codes only.
pub fn vessel_of(code: &str) -> Option<pb::Vessel> {
    use pb::Vessel::*;
    Some(match code {
        "64131007" => InferiorVenaCava,
        "56400007" => RenalVein,
        "976004" => GonadalVein,
        "244411005" | "46027005" | "63507001" | "40300007" => IliacVein,
        "83419000" | "397363009" | "397364003" | "23438002" => FemoralVein,
        "56849005" => PoplitealVein,
        "362072009" | "60734001" => SaphenousVein,
        "122775001" | "68705008" | "20115005" | "20699002" | "128553008" => UpperLimbVein,
        "48345005" | "9454009" | "8887007" | "32764006" | "8993003" | "35819009" | "128583004" => {
            Other
        }
        _ => return None,
    })
}

/// TG-263 structure name → `Organ` (§2.2, §2.5). `Lung_L`/`Lung_R` alone are not LUNGS.
pub fn organ_of(code: &str) -> Option<pb::Organ> {
    use pb::Organ::*;
    Some(match code {
        "Kidney_L" => KidneyLeft,
        "Kidney_R" => KidneyRight,
        "Liver" => Liver,
        "Bowel_Small" => SmallBowel,
        "Bowel_Large" => LargeBowel,
        "Stomach" => Stomach,
        "SpinalCord" => SpinalCord,
        "Duodenum" => Duodenum,
        "Heart" => Heart,
        "Lungs" => Lungs,
        "Esophagus" => Esophagus,
        "Bladder" => Bladder,
        _ => return None,
    })
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
