//! Table-driven tests of the FHIR R4 → Case mapping, one table per row of §2 of the EHR
//! integration design (`docs/ehr-integration.md` in the shared docs): §2.1's selection rules and
//! age gate, every field of §2.2, the vessel ConceptMap and organs of §2.3, and the 2026.2
//! addendum §2.5.
//!
//! Every row starts from one base chart, written in the forms of the design's examples: an IVC
//! segment II leiomyosarcoma after an R1 resection, with every fact present (also those the
//! contract does not read after an R1 resection, so rows can show they are ignored). A row mutates
//! that chart and names what the mapping must give: a Case field's value, a missing or conflict
//! gap for exactly these fields, out of scope, or a minor.

use jiff::civil::{Date, date};
use jiff::tz::{self, TimeZone};
use serde_json::{Value, json};

use super::*;
use crate::pb;

const SITE: &str = "https://vlms-rt.example.org";
const PRIMARY: &str = "cond-lms-ivc";
const OTHER_PRIMARY: &str = "cond-breast";
const EVALUATION: Date = date(2026, 11, 25);
/// The resection's facility-local date (performed 2026-10-27T08:40:00+01:00).
const SURGERY: &str = "2026-10-27";

/// The facility's zone: UTC+1, so that datetimes near midnight fall on another local date.
fn zone() -> TimeZone {
    TimeZone::fixed(tz::offset(1))
}

fn cs(name: &str) -> String {
    format!("{SITE}/fhir/CodeSystem/{name}")
}

fn sd(name: &str) -> String {
    format!("{SITE}/fhir/StructureDefinition/{name}")
}

fn coding(system: &str, code: &str) -> Value {
    json!({"system": system, "code": code})
}

fn concept(system: &str, code: &str) -> Value {
    json!({"coding": [coding(system, code)]})
}

fn sct(code: &str) -> Value {
    concept(SNOMED, code)
}

fn case_code(code: &str) -> Value {
    concept(&cs("vlms-rt-case"), code)
}

fn condition_ref(id: &str) -> Value {
    json!({"reference": format!("Condition/{id}")})
}

fn ext_bool(name: &str, value: bool) -> Value {
    json!({"url": sd(name), "valueBoolean": value})
}

fn ext_concept(name: &str, value: Value) -> Value {
    json!({"url": sd(name), "valueCodeableConcept": value})
}

fn segment(code: &str) -> Value {
    ext_concept(
        "vlms-rt-ivc-segment",
        concept(&cs("vlms-rt-ivc-segment"), code),
    )
}

fn vascular(code: &str) -> Value {
    ext_concept(
        "vlms-rt-vascular-management",
        concept(&cs("vlms-rt-vascular-management"), code),
    )
}

fn setting(code: &str) -> Value {
    ext_concept("vlms-rt-setting", concept(&cs("vlms-rt-setting"), code))
}

/// A final Observation about the primary (`focus`).
fn observation(id: &str, code: Value, effective: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final", "code": code,
        "subject": {"reference": "Patient/pat-1"}, "focus": [condition_ref(PRIMARY)],
        "effectiveDateTime": effective,
    })
}

/// A `vlms-rt-case#<code>` Observation valued `value`.
fn flag(id: &str, code: &str, effective: &str, value: bool) -> Value {
    let mut observation = observation(id, case_code(code), effective);
    observation["valueBoolean"] = json!(value);
    observation
}

/// mCODE TumorSize linked by `mcode-related-condition`; `specimen` for gross pathology.
fn tumor_size(id: &str, effective: &str, value: f64, unit: &str, specimen: bool) -> Value {
    let mut size = observation(id, concept(LOINC, "21889-1"), effective);
    size.as_object_mut().expect("an object").remove("focus");
    size["extension"] = json!([{
        "url": format!("{MCODE}mcode-related-condition"),
        "valueReference": condition_ref(PRIMARY),
    }]);
    size["component"] = json!([{
        "code": concept(LOINC, "33728-7"),
        "valueQuantity": {"value": value, "unit": unit, "system": fhir::UCUM, "code": unit},
    }]);
    if specimen {
        size["specimen"] = json!({"reference": "Specimen/spec-resection"});
    }
    size
}

/// mCODE HistologicGrade valued `value`, with the FNCLCC method when `fnclcc`.
fn grade(id: &str, effective: &str, value: Value, fnclcc: bool) -> Value {
    let mut grade = observation(id, concept(NCIT, "C18000"), effective);
    grade["valueCodeableConcept"] = value;
    if fnclcc {
        grade["method"] = sct("426757001");
    }
    grade
}

/// mCODE CancerStage "Residual tumor stage" (SNOMED 17964000 + LOINC 84892-9) valued `value`.
fn residual(id: &str, effective: &str, value: &str) -> Value {
    let code = json!({"coding": [coding(SNOMED, "17964000"), coding(LOINC, "84892-9")]});
    let mut stage = observation(id, code, effective);
    stage["specimen"] = json!({"reference": "Specimen/spec-resection"});
    stage["valueCodeableConcept"] = sct(value);
    stage
}

/// A distant-metastasis (M) category Observation.
fn m_category(id: &str, code: &str, effective: &str, value: &str) -> Value {
    let mut category = observation(id, sct(code), effective);
    category["valueCodeableConcept"] = sct(value);
    category
}

/// The organs-adjacent-to-target assessment with one component per TG-263 code.
fn organs(id: &str, effective: &str, any: Option<bool>, codes: &[&str]) -> Value {
    let mut assessment = observation(id, case_code("organs-adjacent-to-target"), effective);
    if let Some(any) = any {
        assessment["valueBoolean"] = json!(any);
    }
    if !codes.is_empty() {
        let components: Vec<Value> = codes
            .iter()
            .map(|code| {
                json!({"code": case_code("adjacent-organ"), "valueCodeableConcept": concept(TG263, code)})
            })
            .collect();
        assessment["component"] = Value::Array(components);
    }
    assessment
}

/// The resectability assessment with its surgery-mutilating component.
fn assessment(id: &str, effective: &str, value: Option<&str>, mutilating: Option<bool>) -> Value {
    let mut assessment = observation(id, case_code("resectability-assessment"), effective);
    if let Some(value) = value {
        assessment["valueCodeableConcept"] = concept(&cs("vlms-rt-resectability"), value);
    }
    if let Some(mutilating) = mutilating {
        assessment["component"] = json!([{
            "code": case_code("surgery-mutilating"), "valueBoolean": mutilating,
        }]);
    }
    assessment
}

/// An mCODE PrimaryCancerCondition: confirmed, active, with this ICD-O-3 histology.
fn primary(id: &str, histology: &str, site: Value) -> Value {
    json!({
        "resourceType": "Condition", "id": id,
        "meta": {"profile": [format!("{MCODE}mcode-primary-cancer-condition")]},
        "extension": [{
            "url": format!("{MCODE}mcode-histology-morphology-behavior"),
            "valueCodeableConcept": concept(ICD_O_3, histology),
        }],
        "clinicalStatus": concept(CONDITION_CLINICAL, "active"),
        "verificationStatus": concept(CONDITION_VERIFICATION, "confirmed"),
        "code": sct("363346000"),
        "subject": {"reference": "Patient/pat-1"},
        "bodySite": [site],
    })
}

/// A confirmed, active mCODE SecondaryCancerCondition.
fn secondary(id: &str, code: Value, profile: bool) -> Value {
    let mut condition = json!({
        "resourceType": "Condition", "id": id,
        "clinicalStatus": concept(CONDITION_CLINICAL, "active"),
        "verificationStatus": concept(CONDITION_VERIFICATION, "confirmed"),
        "code": code,
        "subject": {"reference": "Patient/pat-1"},
    });
    if profile {
        condition["meta"] =
            json!({"profile": [format!("{MCODE}mcode-secondary-cancer-condition")]});
    }
    condition
}

/// An mCODE RadiotherapyCourseSummary with the given extensions and reason.
fn course(id: &str, status: &str, end: &str, extension: Vec<Value>, reason: Value) -> Value {
    let mut course = json!({
        "resourceType": "Procedure", "id": id,
        "meta": {"profile": [format!("{MCODE}mcode-radiotherapy-course-summary")]},
        "status": status, "code": sct("1217123003"),
        "subject": {"reference": "Patient/pat-1"},
        "performedPeriod": {"start": "2026-08-08", "end": end},
        "extension": extension,
    });
    for (key, value) in reason.as_object().expect("an object") {
        course[key] = value.clone();
    }
    course
}

/// A completed preoperative course of the primary, marked `preoperative`, ending `end`.
fn preop_course(end: &str) -> Value {
    course(
        "proc-rt-preop",
        "completed",
        end,
        vec![setting("preoperative")],
        json!({"reasonReference": [condition_ref(PRIMARY)]}),
    )
}

/// The chart as a list of FHIR resources in JSON, mutated by the rows.
struct Fixture(Vec<Value>);

impl Fixture {
    /// IVC segment II leiomyosarcoma, R1 resection on 2026-10-27, every fact present.
    fn base() -> Fixture {
        let site = json!({"extension": [segment("II")], "coding": [coding(SNOMED, "64131007")]});
        let resection = json!({
            "resourceType": "Procedure", "id": "proc-resection",
            "meta": {"profile": [format!("{MCODE}mcode-cancer-related-surgical-procedure")]},
            "extension": [
                ext_bool("vlms-rt-primary-tumor-resection", true),
                vascular("graft"),
                ext_bool("vlms-rt-periaortic-dissection", true),
                ext_bool("vlms-rt-compartmental-resection", true),
            ],
            "status": "completed", "code": {"text": "En bloc resection of IVC leiomyosarcoma"},
            "subject": {"reference": "Patient/pat-1"},
            "performedDateTime": "2026-10-27T08:40:00+01:00",
            "reasonReference": [condition_ref(PRIMARY)],
        });
        let mut depth = observation("obs-depth", case_code("tumor-depth"), "2026-11-20");
        depth["valueCodeableConcept"] = sct("795002");
        Fixture(vec![
            json!({"resourceType": "Patient", "id": "pat-1", "birthDate": "1968-04-12"}),
            primary(PRIMARY, "8890/3", site),
            resection,
            tumor_size("obs-size", "2026-10-29", 9.5, "cm", true),
            grade("obs-grade", "2026-10-29", sct("1228851006"), false),
            depth,
            assessment(
                "obs-resectability",
                "2026-09-02",
                Some("marginal"),
                Some(true),
            ),
            residual("obs-residual", "2026-10-29", "1222639002"),
            flag("obs-close-margin", "close-margin", "2026-10-29", true),
            flag("obs-reexcision", "re-excision-feasible", "2026-11-05", true),
            flag("obs-hematoma", "postoperative-hematoma", "2026-11-20", true),
            organs("obs-oar", "2026-11-20", Some(true), &["Kidney_R", "Liver"]),
            flag(
                "obs-kidney",
                "solitary-functioning-kidney",
                "2026-11-20",
                false,
            ),
            flag(
                "obs-prior-rt",
                "prior-radiotherapy-to-region",
                "2026-11-20",
                false,
            ),
            m_category("obs-cm0", "399387003", "2026-09-01", "1229901006"),
            flag(
                "obs-preop-rt",
                "preoperative-rt-delivered",
                "2026-11-20",
                false,
            ),
        ])
    }

    fn get(&mut self, id: &str) -> &mut Value {
        self.0
            .iter_mut()
            .find(|resource| resource["id"] == id)
            .unwrap_or_else(|| panic!("the base chart has no resource {id}"))
    }

    fn remove(&mut self, id: &str) {
        let before = self.0.len();
        self.0.retain(|resource| resource["id"] != id);
        assert_ne!(before, self.0.len(), "the chart has no resource {id}");
    }

    fn push(&mut self, resource: Value) {
        self.0.push(resource);
    }

    fn set(&mut self, id: &str, key: &str, value: Value) {
        self.get(id)[key] = value;
    }

    fn unset(&mut self, id: &str, key: &str) {
        self.get(id).as_object_mut().expect("an object").remove(key);
    }

    /// Removes the extensions named `name` (a vlms-rt StructureDefinition) from a resource.
    fn remove_extension(&mut self, id: &str, name: &str) {
        let url = sd(name);
        self.get(id)["extension"]
            .as_array_mut()
            .expect("extensions")
            .retain(|extension| extension["url"] != url.as_str());
    }

    /// Replaces the extensions with the URL of `extension`.
    fn replace_extension(&mut self, id: &str, extension: Value) {
        let url = extension["url"].clone();
        let list = self.get(id)["extension"]
            .as_array_mut()
            .expect("extensions");
        list.retain(|existing| existing["url"] != url);
        list.push(extension);
    }

    fn add_extension(&mut self, id: &str, extension: Value) {
        self.get(id)["extension"]
            .as_array_mut()
            .expect("extensions")
            .push(extension);
    }

    /// The primary's (first) bodySite.
    fn site(&mut self) -> &mut Value {
        &mut self.get(PRIMARY)["bodySite"][0]
    }

    /// The primary's bodySite coded `code` without the IVC segment extension.
    fn vein(&mut self, code: &str) {
        *self.site() = json!({"coding": [coding(SNOMED, code)]});
    }

    /// Before resection: no resection Procedure (the resectability assessment stays).
    fn pre(&mut self) {
        self.remove("proc-resection");
    }

    /// R0 instead of R1.
    fn r0(&mut self) {
        self.set("obs-residual", "valueCodeableConcept", sct("1222638005"));
    }

    /// R2 instead of R1.
    fn r2(&mut self) {
        self.set("obs-residual", "valueCodeableConcept", sct("1222640000"));
    }

    /// A second confirmed, active primary cancer (breast, ICD-O-3 8500/3).
    fn second_primary(&mut self) {
        self.push(primary(OTHER_PRIMARY, "8500/3", sct("76752008")));
    }

    fn chart(&self) -> Chart {
        let mut chart = Chart::default();
        for (index, value) in self.0.iter().enumerate() {
            let resource = fhir::resource(value, &format!("chart[{index}]"))
                .unwrap_or_else(|error| panic!("unreadable test resource: {error}"));
            chart.add(resource);
        }
        chart
    }

    fn map(&self) -> Outcome {
        map(&self.chart(), &Names::new(SITE), &zone(), EVALUATION, |c| {
            format!("case-{c}")
        })
    }
}

/// What a row expects.
enum Expect {
    /// A Case, and this field reads as this value (see [`read`]).
    Is(&'static str, String),
    /// Gaps for exactly these fields (missing, conflicting).
    Gaps(Vec<&'static str>, Vec<&'static str>),
    /// A Case whose notes contain this text.
    Noted(&'static str),
    OutOfScope,
    Minor(i16),
}

fn is(field: &'static str, value: impl Into<String>) -> Expect {
    Expect::Is(field, value.into())
}

fn missing(field: &'static str) -> Expect {
    Expect::Gaps(vec![field], Vec::new())
}

fn conflict(field: &'static str) -> Expect {
    Expect::Gaps(Vec::new(), vec![field])
}

fn fields(gaps: &[Gap]) -> Vec<&'static str> {
    let mut fields: Vec<&'static str> = gaps.iter().map(|gap| gap.field).collect();
    fields.sort_unstable();
    fields.dedup();
    fields
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::OutOfScope => "out of scope".into(),
        Outcome::Minor { age, .. } => format!("minor ({age})"),
        Outcome::Gaps {
            missing, conflicts, ..
        } => format!(
            "gaps: missing {:?}, conflicting {:?}",
            fields(missing),
            fields(conflicts)
        ),
        Outcome::Case(_) => "a case".into(),
    }
}

impl Expect {
    fn check(&self, outcome: &Outcome) -> Result<(), String> {
        let got = || format!("got {}", describe(outcome));
        match (self, outcome) {
            (Expect::Is(field, value), Outcome::Case(mapped)) => {
                let actual = read(&mapped.case, field);
                if actual == *value {
                    Ok(())
                } else {
                    Err(format!("{field} = {actual}, expected {value}"))
                }
            }
            (Expect::Is(field, value), _) => Err(format!("expected {field} = {value}, {}", got())),
            (
                Expect::Gaps(want_missing, want_conflicts),
                Outcome::Gaps {
                    missing, conflicts, ..
                },
            ) => {
                let mut want_missing = want_missing.clone();
                let mut want_conflicts = want_conflicts.clone();
                want_missing.sort_unstable();
                want_conflicts.sort_unstable();
                if fields(missing) == want_missing && fields(conflicts) == want_conflicts {
                    Ok(())
                } else {
                    Err(format!(
                        "expected missing {want_missing:?}, conflicting {want_conflicts:?}; {}",
                        got()
                    ))
                }
            }
            (Expect::Gaps(missing, conflicts), _) => Err(format!(
                "expected missing {missing:?}, conflicting {conflicts:?}; {}",
                got()
            )),
            (Expect::Noted(text), Outcome::Case(mapped)) => {
                if mapped.notes.iter().any(|note| note.contains(text)) {
                    Ok(())
                } else {
                    Err(format!("no note with {text:?} in {:?}", mapped.notes))
                }
            }
            (Expect::Noted(text), _) => Err(format!("expected a case noting {text:?}, {}", got())),
            (Expect::OutOfScope, Outcome::OutOfScope) => Ok(()),
            (Expect::Minor(age), Outcome::Minor { age: actual, .. }) if age == actual => Ok(()),
            (Expect::OutOfScope | Expect::Minor(_), _) => Err(got()),
        }
    }
}

/// A Case field by its contract path: enums by their proto name, numbers and booleans as text,
/// the organs as a comma-separated list, `resection` as present or absent.
fn read(case: &pb::Case, field: &str) -> String {
    fn name<E: TryFrom<i32>>(value: i32, name: fn(&E) -> &'static str) -> String {
        E::try_from(value).map_or_else(|_| format!("unknown {value}"), |e| name(&e).to_string())
    }
    let tumor = case.tumor.unwrap_or_default();
    let resection = case.resection.clone().unwrap_or_default();
    match field {
        "case_id" => case.case_id.clone(),
        "evaluation_date" => case.evaluation_date.clone(),
        "vessel" => name(case.vessel, pb::Vessel::as_str_name),
        "ivc_segment" => name(case.ivc_segment, pb::IvcSegment::as_str_name),
        "tumor.size_cm" => tumor.size_cm.to_string(),
        "tumor.grade" => name(tumor.grade, pb::Grade::as_str_name),
        "tumor.depth" => name(tumor.depth, pb::Depth::as_str_name),
        "phase" => name(case.phase, pb::TreatmentPhase::as_str_name),
        "resectability" => name(case.resectability, pb::Resectability::as_str_name),
        "surgery_mutilating" => case.surgery_mutilating.to_string(),
        "resection" => if case.resection.is_some() {
            "present"
        } else {
            "absent"
        }
        .into(),
        "resection.margin" => name(resection.margin, pb::Margin::as_str_name),
        "resection.close_margin" => resection.close_margin.to_string(),
        "resection.surgery_date" => resection.surgery_date,
        "resection.compartmental_contained" => resection.compartmental_contained.to_string(),
        "resection.re_excision_feasible" => resection.re_excision_feasible.to_string(),
        "resection.hematoma_present" => resection.hematoma_present.to_string(),
        "resection.vascular_management" => name(
            resection.vascular_management,
            pb::VascularManagement::as_str_name,
        ),
        "resection.periaortic_dissection" => resection.periaortic_dissection.to_string(),
        "organs_at_risk" => case
            .organs_at_risk
            .iter()
            .map(|organ| name(*organ, pb::Organ::as_str_name))
            .collect::<Vec<_>>()
            .join(","),
        "solitary_functioning_kidney" => case.solitary_functioning_kidney.to_string(),
        "prior_radiotherapy" => case.prior_radiotherapy.to_string(),
        "metastatic_disease" => case.metastatic_disease.to_string(),
        "preoperative_rt_delivered" => case.preoperative_rt_delivered.to_string(),
        other => panic!("no Case field {other}"),
    }
}

/// One table row: a description, a mutation of the base chart, what the mapping must give.
struct Row {
    name: String,
    mutate: Box<dyn Fn(&mut Fixture)>,
    expect: Vec<Expect>,
}

fn row(
    name: impl Into<String>,
    mutate: impl Fn(&mut Fixture) + 'static,
    expect: Vec<Expect>,
) -> Row {
    Row {
        name: name.into(),
        mutate: Box::new(mutate),
        expect,
    }
}

/// Runs every row and reports all the rows that fail, not only the first.
fn check(rows: Vec<Row>) {
    assert!(!rows.is_empty());
    let mut failures = Vec::new();
    for row in &rows {
        assert!(!row.expect.is_empty(), "{}: nothing expected", row.name);
        let mut fixture = Fixture::base();
        (row.mutate)(&mut fixture);
        let outcome = fixture.map();
        for expect in &row.expect {
            if let Err(why) = expect.check(&outcome) {
                failures.push(format!("{}: {why}", row.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn keep(_: &mut Fixture) {}

#[test]
fn the_base_chart_maps_to_its_case() {
    let Outcome::Case(mapped) = Fixture::base().map() else {
        panic!("{}", describe(&Fixture::base().map()));
    };
    let expected = pb::Case {
        case_id: format!("case-{PRIMARY}"),
        evaluation_date: "2026-11-25".into(),
        vessel: pb::Vessel::InferiorVenaCava as i32,
        ivc_segment: pb::IvcSegment::Middle as i32,
        tumor: Some(pb::Tumor {
            size_cm: 9.5,
            grade: pb::Grade::Grade3 as i32,
            depth: pb::Depth::Deep as i32,
        }),
        phase: pb::TreatmentPhase::PostResection as i32,
        resection: Some(pb::Resection {
            margin: pb::Margin::R1 as i32,
            surgery_date: SURGERY.into(),
            re_excision_feasible: true,
            hematoma_present: true,
            vascular_management: pb::VascularManagement::Graft as i32,
            periaortic_dissection: true,
            ..Default::default()
        }),
        organs_at_risk: vec![pb::Organ::KidneyRight as i32, pb::Organ::Liver as i32],
        ..Default::default()
    };
    assert_eq!(mapped.case, expected);
    assert_eq!(mapped.primary_id, PRIMARY);
    assert!(mapped.notes.is_empty(), "{:?}", mapped.notes);
}

/// §2.1: the primary (confirmed, active, ICD-O-3 8890/3, not secondary; exactly one), linking
/// evidence to it, and which Observations count.
#[test]
fn primary_selection() {
    fn status(id: &str, key: &str, system: &str, code: &str) -> impl Fn(&mut Fixture) + 'static {
        let (id, key, system, code) = (
            id.to_string(),
            key.to_string(),
            system.to_string(),
            code.to_string(),
        );
        move |f: &mut Fixture| f.set(&id, &key, concept(&system, &code))
    }
    let histology = |code: &'static str, system: &'static str| {
        move |f: &mut Fixture| {
            f.get(PRIMARY)["extension"][0]["valueCodeableConcept"] = concept(system, code);
        }
    };
    let observation_status = |value: &'static str| {
        move |f: &mut Fixture| {
            f.set("obs-kidney", "status", json!(value));
            f.set("obs-kidney", "valueBoolean", json!(true));
        }
    };
    let mut rows = vec![
        row(
            "confirmed active 8890/3 primary",
            keep,
            vec![is("vessel", "VESSEL_INFERIOR_VENA_CAVA")],
        ),
        row(
            "verificationStatus provisional",
            status(
                PRIMARY,
                "verificationStatus",
                CONDITION_VERIFICATION,
                "provisional",
            ),
            vec![Expect::OutOfScope],
        ),
        row(
            "verificationStatus unconfirmed",
            status(
                PRIMARY,
                "verificationStatus",
                CONDITION_VERIFICATION,
                "unconfirmed",
            ),
            vec![Expect::OutOfScope],
        ),
        row(
            "verificationStatus absent",
            |f| f.unset(PRIMARY, "verificationStatus"),
            vec![Expect::OutOfScope],
        ),
        row(
            "clinicalStatus recurrence",
            status(PRIMARY, "clinicalStatus", CONDITION_CLINICAL, "recurrence"),
            vec![is("vessel", "VESSEL_INFERIOR_VENA_CAVA")],
        ),
        row(
            "clinicalStatus relapse",
            status(PRIMARY, "clinicalStatus", CONDITION_CLINICAL, "relapse"),
            vec![is("vessel", "VESSEL_INFERIOR_VENA_CAVA")],
        ),
        row(
            "clinicalStatus remission",
            status(PRIMARY, "clinicalStatus", CONDITION_CLINICAL, "remission"),
            vec![Expect::OutOfScope],
        ),
        row(
            "clinicalStatus resolved",
            status(PRIMARY, "clinicalStatus", CONDITION_CLINICAL, "resolved"),
            vec![Expect::OutOfScope],
        ),
        row(
            "clinicalStatus absent",
            |f| f.unset(PRIMARY, "clinicalStatus"),
            vec![Expect::OutOfScope],
        ),
        row(
            "clinicalStatus active in no code system",
            |f| {
                f.set(
                    PRIMARY,
                    "clinicalStatus",
                    json!({"coding": [{"code": "active"}]}),
                )
            },
            vec![Expect::OutOfScope],
        ),
        row(
            "histology 8891/3 (not 8890/3)",
            histology("8891/3", ICD_O_3),
            vec![Expect::OutOfScope],
        ),
        row(
            "histology 8890/0 (leiomyoma)",
            histology("8890/0", ICD_O_3),
            vec![Expect::OutOfScope],
        ),
        row(
            "histology 8890/3 outside ICD-O-3",
            histology("8890/3", SNOMED),
            vec![Expect::OutOfScope],
        ),
        row(
            "no histology extension",
            |f| f.set(PRIMARY, "extension", json!([])),
            vec![Expect::OutOfScope],
        ),
        row(
            "declares mcode-secondary-cancer-condition",
            |f| {
                f.get(PRIMARY)["meta"]["profile"]
                    .as_array_mut()
                    .expect("profiles")
                    .push(json!(format!("{MCODE}mcode-secondary-cancer-condition")));
            },
            vec![Expect::OutOfScope],
        ),
        row(
            "no Condition at all",
            |f| f.remove(PRIMARY),
            vec![Expect::OutOfScope],
        ),
        row(
            "two confirmed LMS primaries",
            |f| f.push(primary("cond-lms-2", "8890/3", sct("56400007"))),
            vec![conflict("vessel")],
        ),
        row(
            "a second LMS Condition that is only provisional",
            |f| {
                let mut second = primary("cond-lms-2", "8890/3", sct("56400007"));
                second["verificationStatus"] = concept(CONDITION_VERIFICATION, "provisional");
                f.push(second);
            },
            vec![is("vessel", "VESSEL_INFERIOR_VENA_CAVA")],
        ),
        row(
            "two primary cancers, all evidence linked to the LMS",
            Fixture::second_primary,
            vec![
                is("tumor.size_cm", "9.5"),
                is("tumor.grade", "GRADE_3"),
                is("phase", "TREATMENT_PHASE_POST_RESECTION"),
                is("metastatic_disease", "false"),
            ],
        ),
        row(
            "two primary cancers: patient-level evidence (no focus) is not used",
            |f| {
                f.second_primary();
                f.unset("obs-kidney", "focus");
            },
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "two primary cancers: evidence linked by mcode-related-condition counts",
            |f| {
                f.second_primary();
                f.unset("obs-kidney", "focus");
                f.set("obs-kidney", "valueBoolean", json!(true));
                f.set(
                    "obs-kidney",
                    "extension",
                    json!([{"url": format!("{MCODE}mcode-related-condition"), "valueReference": condition_ref(PRIMARY)}]),
                );
            },
            vec![is("solitary_functioning_kidney", "true")],
        ),
        row(
            "two primary cancers: focus by absolute URL counts",
            |f| {
                f.second_primary();
                f.set(
                    "obs-kidney",
                    "focus",
                    json!([{"reference": format!("https://ehr.example.org/fhir/Condition/{PRIMARY}")}]),
                );
                f.set("obs-kidney", "valueBoolean", json!(true));
            },
            vec![is("solitary_functioning_kidney", "true")],
        ),
        row(
            "two primary cancers: cM0 of the other primary is not used",
            |f| {
                f.second_primary();
                f.set("obs-cm0", "focus", json!([condition_ref(OTHER_PRIMARY)]));
            },
            vec![missing("metastatic_disease")],
        ),
        row(
            "two primary cancers: a resection for the other primary is not this one's",
            |f| {
                f.second_primary();
                f.set(
                    "proc-resection",
                    "reasonReference",
                    json!([condition_ref(OTHER_PRIMARY)]),
                );
            },
            vec![
                is("phase", "TREATMENT_PHASE_PRE_RESECTION"),
                is("resection", "absent"),
            ],
        ),
        row(
            "one primary: an Observation whose focus is another Condition is not used",
            |f| f.set("obs-kidney", "focus", json!([condition_ref("cond-ckd")])),
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "one primary: a TumorSize related to another Condition is not the primary's",
            |f| {
                let mut other = tumor_size("obs-size-met", "2026-11-02", 3.1, "cm", true);
                other["extension"][0]["valueReference"] = condition_ref("cond-met-lung");
                f.push(other);
            },
            vec![is("tumor.size_cm", "9.5")],
        ),
        row(
            "Observation status preliminary is ignored",
            observation_status("preliminary"),
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "Observation status registered is ignored",
            observation_status("registered"),
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "Observation status cancelled is ignored",
            observation_status("cancelled"),
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "Observation status entered-in-error is ignored",
            observation_status("entered-in-error"),
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "Observation without status is ignored",
            |f| f.unset("obs-kidney", "status"),
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "Observation status amended counts",
            observation_status("amended"),
            vec![is("solitary_functioning_kidney", "true")],
        ),
        row(
            "Observation status corrected counts",
            observation_status("corrected"),
            vec![is("solitary_functioning_kidney", "true")],
        ),
        row(
            "a preliminary Observation on the latest date does not conflict",
            |f| {
                let mut preliminary =
                    grade("obs-grade-prelim", "2026-10-29", sct("1228848004"), false);
                preliminary["status"] = json!("preliminary");
                f.push(preliminary);
            },
            vec![is("tumor.grade", "GRADE_3")],
        ),
        row(
            "the latest Observation wins (older one differs)",
            |f| {
                f.push(grade(
                    "obs-grade-old",
                    "2026-09-10",
                    sct("1228848004"),
                    false,
                ))
            },
            vec![is("tumor.grade", "GRADE_3")],
        ),
        row(
            "the latest Observation wins (newer one differs)",
            |f| {
                f.push(grade(
                    "obs-grade-new",
                    "2026-11-01",
                    sct("1228850007"),
                    false,
                ))
            },
            vec![is("tumor.grade", "GRADE_2")],
        ),
        row(
            "an Observation dated only to the month is left out",
            |f| f.set("obs-grade", "effectiveDateTime", json!("2026-10")),
            vec![missing("tumor.grade")],
        ),
        row(
            "effectivePeriod.start dates an Observation",
            |f| {
                f.unset("obs-grade", "effectiveDateTime");
                f.set(
                    "obs-grade",
                    "effectivePeriod",
                    json!({"start": "2026-10-29"}),
                );
            },
            vec![is("tumor.grade", "GRADE_3")],
        ),
        row(
            "the same Observation twice (two prefetch keys) is read once",
            |f| {
                let copy = f.get("obs-kidney").clone();
                f.push(copy);
            },
            vec![is("solitary_functioning_kidney", "false")],
        ),
        row(
            "the same-date disagreement is a conflict, never a pick",
            |f| {
                f.push(flag(
                    "obs-kidney-2",
                    "solitary-functioning-kidney",
                    "2026-11-20",
                    true,
                ))
            },
            vec![conflict("solitary_functioning_kidney")],
        ),
    ];
    rows.push(row(
        "the case id is derived from the primary",
        keep,
        vec![
            is("case_id", format!("case-{PRIMARY}")),
            is("evaluation_date", "2026-11-25"),
        ],
    ));
    check(rows);
}

/// §2.2 (gate) age: < 18 at the evaluation date is a minor; no full birth date proceeds, noted.
#[test]
fn age_gate() {
    let born = |date: &'static str| move |f: &mut Fixture| f.set("pat-1", "birthDate", json!(date));
    check(vec![
        row(
            "aged 58",
            keep,
            vec![is("vessel", "VESSEL_INFERIOR_VENA_CAVA")],
        ),
        row("aged 16", born("2010-06-01"), vec![Expect::Minor(16)]),
        row(
            "18th birthday tomorrow",
            born("2008-11-26"),
            vec![Expect::Minor(17)],
        ),
        row(
            "18th birthday today",
            born("2008-11-25"),
            vec![is("vessel", "VESSEL_INFERIOR_VENA_CAVA")],
        ),
        row(
            "no birthDate: proceed, age not verified",
            |f| f.unset("pat-1", "birthDate"),
            vec![
                is("vessel", "VESSEL_INFERIOR_VENA_CAVA"),
                Expect::Noted("Age not verified"),
            ],
        ),
        row(
            "birthDate with the year only: proceed, age not verified",
            born("1968"),
            vec![
                is("vessel", "VESSEL_INFERIOR_VENA_CAVA"),
                Expect::Noted("Age not verified"),
            ],
        ),
        row(
            "no Patient resource: proceed, age not verified",
            |f| f.remove("pat-1"),
            vec![
                is("vessel", "VESSEL_INFERIOR_VENA_CAVA"),
                Expect::Noted("Age not verified"),
            ],
        ),
        row(
            "a minor with missing facts is a minor",
            |f| {
                f.set("pat-1", "birthDate", json!("2012-01-01"));
                f.remove("obs-grade");
            },
            vec![Expect::Minor(14)],
        ),
        row(
            "a minor without an LMS primary is out of scope",
            |f| {
                f.set("pat-1", "birthDate", json!("2012-01-01"));
                f.remove(PRIMARY);
            },
            vec![Expect::OutOfScope],
        ),
    ]);
}

/// §2.2 `vessel` and the ConceptMap `vlms-rt-vessel` of §2.3.
#[test]
fn vessel() {
    let map: &[(&str, &str)] = &[
        ("56400007", "VESSEL_RENAL_VEIN"),
        ("976004", "VESSEL_GONADAL_VEIN"),
        ("244411005", "VESSEL_ILIAC_VEIN"),
        ("46027005", "VESSEL_ILIAC_VEIN"),
        ("63507001", "VESSEL_ILIAC_VEIN"),
        ("40300007", "VESSEL_ILIAC_VEIN"),
        ("83419000", "VESSEL_FEMORAL_VEIN"),
        ("397363009", "VESSEL_FEMORAL_VEIN"),
        ("397364003", "VESSEL_FEMORAL_VEIN"),
        ("23438002", "VESSEL_FEMORAL_VEIN"),
        ("56849005", "VESSEL_POPLITEAL_VEIN"),
        ("362072009", "VESSEL_SAPHENOUS_VEIN"),
        ("60734001", "VESSEL_SAPHENOUS_VEIN"),
        ("122775001", "VESSEL_UPPER_LIMB_VEIN"),
        ("68705008", "VESSEL_UPPER_LIMB_VEIN"),
        ("20115005", "VESSEL_UPPER_LIMB_VEIN"),
        ("20699002", "VESSEL_UPPER_LIMB_VEIN"),
        ("128553008", "VESSEL_UPPER_LIMB_VEIN"),
        ("48345005", "VESSEL_OTHER"),
        ("9454009", "VESSEL_OTHER"),
        ("8887007", "VESSEL_OTHER"),
        ("32764006", "VESSEL_OTHER"),
        ("8993003", "VESSEL_OTHER"),
        ("35819009", "VESSEL_OTHER"),
        ("128583004", "VESSEL_OTHER"),
    ];
    let qualifier = |code: &'static str| {
        move |f: &mut Fixture| {
            *f.site() = json!({
                "extension": [
                    {"url": format!("{MCODE}mcode-body-location-qualifier"), "valueCodeableConcept": sct(code)},
                    segment("II"),
                ],
                "coding": [coding(SNOMED, "35532006")],
            });
        }
    };
    let mut rows = vec![
        row(
            "64131007 Inferior vena cava structure",
            keep,
            vec![
                is("vessel", "VESSEL_INFERIOR_VENA_CAVA"),
                is("ivc_segment", "IVC_SEGMENT_MIDDLE"),
            ],
        ),
        row(
            "35532006 Vena caval structure + qualifier 261089000 Inferior",
            qualifier("261089000"),
            vec![
                is("vessel", "VESSEL_INFERIOR_VENA_CAVA"),
                is("ivc_segment", "IVC_SEGMENT_MIDDLE"),
            ],
        ),
        row(
            "35532006 + qualifier 261183002 Upper is not the IVC",
            qualifier("261183002"),
            vec![missing("vessel")],
        ),
        row(
            "35532006 without a qualifier",
            |f| {
                *f.site() =
                    json!({"extension": [segment("II")], "coding": [coding(SNOMED, "35532006")]})
            },
            vec![missing("vessel")],
        ),
        row(
            "a vein outside the map (281076005) is missing, never OTHER",
            |f| f.vein("281076005"),
            vec![missing("vessel")],
        ),
        row(
            "no bodySite",
            |f| f.unset(PRIMARY, "bodySite"),
            vec![missing("vessel")],
        ),
        row(
            "bodySite text only",
            |f| *f.site() = json!({"text": "inferior vena cava"}),
            vec![missing("vessel")],
        ),
        row(
            "64131007 outside SNOMED CT",
            |f| *f.site() = json!({"extension": [segment("II")], "coding": [coding("http://example.org/sites", "64131007")]}),
            vec![missing("vessel")],
        ),
        row(
            "two vessels in one bodySite",
            |f| {
                f.site()["coding"]
                    .as_array_mut()
                    .expect("codings")
                    .push(coding(SNOMED, "56400007"));
            },
            vec![conflict("vessel")],
        ),
        row(
            "two bodySites naming two vessels",
            |f| {
                f.get(PRIMARY)["bodySite"]
                    .as_array_mut()
                    .expect("sites")
                    .push(sct("83419000"));
            },
            vec![conflict("vessel")],
        ),
        row(
            "the IVC named twice, by 64131007 and 35532006 + Inferior",
            |f| {
                f.get(PRIMARY)["bodySite"].as_array_mut().expect("sites").push(json!({
                    "extension": [{"url": format!("{MCODE}mcode-body-location-qualifier"), "valueCodeableConcept": sct("261089000")}],
                    "coding": [coding(SNOMED, "35532006")],
                }));
            },
            vec![is("vessel", "VESSEL_INFERIOR_VENA_CAVA")],
        ),
    ];
    for &(code, vessel) in map {
        rows.push(row(
            format!("{code} → {vessel}"),
            move |f| f.vein(code),
            vec![
                is("vessel", vessel),
                is("ivc_segment", "IVC_SEGMENT_UNSPECIFIED"),
            ],
        ));
    }
    check(rows);
}

/// §2.2 `ivc_segment` (extension vlms-rt-ivc-segment on the primary's bodySite).
#[test]
fn ivc_segment() {
    let segments = |codes: &'static [&'static str]| {
        move |f: &mut Fixture| {
            f.site()["extension"] = Value::Array(codes.iter().map(|c| segment(c)).collect());
        }
    };
    check(vec![
        row(
            "#I",
            segments(&["I"]),
            vec![is("ivc_segment", "IVC_SEGMENT_LOWER")],
        ),
        row(
            "#II",
            segments(&["II"]),
            vec![is("ivc_segment", "IVC_SEGMENT_MIDDLE")],
        ),
        row(
            "#III",
            segments(&["III"]),
            vec![is("ivc_segment", "IVC_SEGMENT_UPPER")],
        ),
        row(
            "the same segment twice",
            segments(&["II", "II"]),
            vec![is("ivc_segment", "IVC_SEGMENT_MIDDLE")],
        ),
        row(
            "IVC without a segment",
            segments(&[]),
            vec![missing("ivc_segment")],
        ),
        row(
            "unknown segment code IV",
            segments(&["IV"]),
            vec![missing("ivc_segment")],
        ),
        row(
            "segment coded outside vlms-rt-ivc-segment",
            |f| {
                f.site()["extension"] =
                    json!([ext_concept("vlms-rt-ivc-segment", sct("260528009"))])
            },
            vec![missing("ivc_segment")],
        ),
        row(
            "the SNOMED qualifier Middle as a second coding is never read",
            |f| {
                *f.site() =
                    json!({"coding": [coding(SNOMED, "64131007"), coding(SNOMED, "260528009")]});
            },
            vec![missing("ivc_segment")],
        ),
        row(
            "two different segments",
            segments(&["I", "II"]),
            vec![conflict("ivc_segment")],
        ),
        row(
            "a segment on the renal vein",
            |f| f.site()["coding"] = json!([coding(SNOMED, "56400007")]),
            vec![conflict("ivc_segment")],
        ),
        row(
            "a segment on the femoral vein",
            |f| f.site()["coding"] = json!([coding(SNOMED, "83419000")]),
            vec![conflict("ivc_segment")],
        ),
        row(
            "no segment on the renal vein",
            |f| f.vein("56400007"),
            vec![is("ivc_segment", "IVC_SEGMENT_UNSPECIFIED")],
        ),
        row(
            "35532006 + Inferior without a segment",
            |f| {
                *f.site() = json!({
                    "extension": [{"url": format!("{MCODE}mcode-body-location-qualifier"), "valueCodeableConcept": sct("261089000")}],
                    "coding": [coding(SNOMED, "35532006")],
                });
            },
            vec![missing("ivc_segment")],
        ),
    ]);
}

/// §2.2 `tumor.size_cm` (mCODE TumorSize, longest dimension in cm or mm).
#[test]
fn tumor_size_cm() {
    let size = |value: f64, unit: &'static str| {
        move |f: &mut Fixture| {
            f.remove("obs-size");
            f.push(tumor_size("obs-size", "2026-10-29", value, unit, true));
        }
    };
    check(vec![
        row("9.5 cm", size(9.5, "cm"), vec![is("tumor.size_cm", "9.5")]),
        row(
            "95 mm ÷ 10",
            size(95.0, "mm"),
            vec![is("tumor.size_cm", "9.5")],
        ),
        row(
            "42 mm ÷ 10",
            size(42.0, "mm"),
            vec![is("tumor.size_cm", "4.2")],
        ),
        row(
            "3.7 [in_i] is another unit",
            size(3.7, "[in_i]"),
            vec![conflict("tumor.size_cm")],
        ),
        row(
            "0.095 m is another unit",
            size(0.095, "m"),
            vec![conflict("tumor.size_cm")],
        ),
        row(
            "no unit code",
            |f| {
                let quantity = &mut f.get("obs-size")["component"][0]["valueQuantity"];
                quantity.as_object_mut().expect("a quantity").remove("code");
            },
            vec![conflict("tumor.size_cm")],
        ),
        row(
            "no TumorSize",
            |f| f.remove("obs-size"),
            vec![missing("tumor.size_cm")],
        ),
        row(
            "after resection a biopsy specimen's size is not preferred to later imaging",
            |f| {
                f.remove("obs-size");
                f.push(tumor_size("obs-biopsy-size", "2026-09-01", 3.0, "cm", true));
                f.push(tumor_size("obs-ct-size", "2026-10-20", 9.0, "cm", false));
            },
            vec![is("tumor.size_cm", "9")],
        ),
        row(
            "no longest-dimension component",
            |f| f.get("obs-size")["component"][0]["code"] = concept(LOINC, "33729-5"),
            vec![missing("tumor.size_cm")],
        ),
        row(
            "component without a value",
            |f| {
                f.get("obs-size")["component"][0]
                    .as_object_mut()
                    .expect("a component")
                    .remove("valueQuantity");
            },
            vec![missing("tumor.size_cm")],
        ),
        row(
            "TumorSize preliminary",
            |f| f.set("obs-size", "status", json!("preliminary")),
            vec![missing("tumor.size_cm")],
        ),
        row(
            "same-date disagreement",
            |f| f.push(tumor_size("obs-size-2", "2026-10-29", 10.0, "cm", true)),
            vec![conflict("tumor.size_cm")],
        ),
        row(
            "same date, same size in mm and cm",
            |f| f.push(tumor_size("obs-size-2", "2026-10-29", 95.0, "mm", true)),
            vec![is("tumor.size_cm", "9.5")],
        ),
        row(
            "the latest pathology measurement wins",
            |f| f.push(tumor_size("obs-size-old", "2026-10-28", 12.0, "cm", true)),
            vec![is("tumor.size_cm", "9.5")],
        ),
        row(
            "after resection, gross pathology is preferred to later imaging",
            |f| f.push(tumor_size("obs-size-ct", "2026-11-20", 11.0, "cm", false)),
            vec![is("tumor.size_cm", "9.5")],
        ),
        row(
            "after resection without pathology, the latest imaging",
            |f| {
                f.unset("obs-size", "specimen");
                f.push(tumor_size("obs-size-ct", "2026-11-20", 11.0, "cm", false));
            },
            vec![is("tumor.size_cm", "11")],
        ),
        row(
            "before resection, the latest measurement",
            |f| {
                f.pre();
                f.push(tumor_size("obs-size-ct", "2026-11-20", 11.0, "cm", false));
            },
            vec![is("tumor.size_cm", "11")],
        ),
    ]);
}

/// §2.2 `tumor.grade` (mCODE HistologicGrade).
#[test]
fn tumor_grade() {
    let graded = |code: &'static str, fnclcc: bool| {
        move |f: &mut Fixture| {
            f.remove("obs-grade");
            f.push(grade("obs-grade", "2026-10-29", sct(code), fnclcc));
        }
    };
    check(vec![
        row(
            "AJCC G1 1228848004",
            graded("1228848004", false),
            vec![is("tumor.grade", "GRADE_1")],
        ),
        row(
            "AJCC G2 1228850007",
            graded("1228850007", false),
            vec![is("tumor.grade", "GRADE_2")],
        ),
        row(
            "AJCC G3 1228851006",
            graded("1228851006", false),
            vec![is("tumor.grade", "GRADE_3")],
        ),
        row(
            "low 1155708003 + FNCLCC",
            graded("1155708003", true),
            vec![is("tumor.grade", "GRADE_1")],
        ),
        row(
            "intermediate 1286893008 + FNCLCC",
            graded("1286893008", true),
            vec![is("tumor.grade", "GRADE_2")],
        ),
        row(
            "high 1155707008 + FNCLCC",
            graded("1155707008", true),
            vec![is("tumor.grade", "GRADE_3")],
        ),
        row(
            "low without FNCLCC method",
            graded("1155708003", false),
            vec![missing("tumor.grade")],
        ),
        row(
            "intermediate without FNCLCC method",
            graded("1286893008", false),
            vec![missing("tumor.grade")],
        ),
        row(
            "high without FNCLCC method",
            graded("1155707008", false),
            vec![missing("tumor.grade")],
        ),
        row(
            "high with another grading method",
            |f| {
                f.set("obs-grade", "valueCodeableConcept", sct("1155707008"));
                f.set(
                    "obs-grade",
                    "method",
                    json!({"text": "another grading system"}),
                );
            },
            vec![missing("tumor.grade")],
        ),
        row(
            "vlms-rt-case#grade-unknown",
            |f| {
                f.set(
                    "obs-grade",
                    "valueCodeableConcept",
                    case_code("grade-unknown"),
                )
            },
            vec![is("tumor.grade", "GRADE_UNKNOWN")],
        ),
        row(
            "grade-unknown in another code system",
            |f| {
                f.set(
                    "obs-grade",
                    "valueCodeableConcept",
                    concept("http://example.org/grades", "grade-unknown"),
                )
            },
            vec![missing("tumor.grade")],
        ),
        row(
            "no HistologicGrade is missing, not GRADE_UNKNOWN",
            |f| f.remove("obs-grade"),
            vec![missing("tumor.grade")],
        ),
        row(
            "HistologicGrade without a value",
            |f| f.unset("obs-grade", "valueCodeableConcept"),
            vec![missing("tumor.grade")],
        ),
        row(
            "same-date disagreement",
            |f| f.push(grade("obs-grade-2", "2026-10-29", sct("1228850007"), false)),
            vec![conflict("tumor.grade")],
        ),
        row(
            "same date, G3 as AJCC and as high + FNCLCC",
            |f| f.push(grade("obs-grade-2", "2026-10-29", sct("1155707008"), true)),
            vec![is("tumor.grade", "GRADE_3")],
        ),
    ]);
}

/// §2.2 `tumor.depth`: required for extremity and other sites, unset allowed when retroperitoneal.
#[test]
fn tumor_depth() {
    let without_depth_at = |code: &'static str| {
        move |f: &mut Fixture| {
            f.vein(code);
            f.remove("obs-depth");
        }
    };
    check(vec![
        row("795002 Deep", keep, vec![is("tumor.depth", "DEPTH_DEEP")]),
        row(
            "26283006 Superficial at the IVC is passed through",
            |f| f.set("obs-depth", "valueCodeableConcept", sct("26283006")),
            vec![is("tumor.depth", "DEPTH_SUPERFICIAL")],
        ),
        row(
            "26283006 Superficial at the femoral vein",
            |f| {
                f.vein("83419000");
                f.set("obs-depth", "valueCodeableConcept", sct("26283006"));
            },
            vec![is("tumor.depth", "DEPTH_SUPERFICIAL")],
        ),
        row(
            "unset at the IVC",
            |f| f.remove("obs-depth"),
            vec![is("tumor.depth", "DEPTH_UNSPECIFIED")],
        ),
        row(
            "unset at the renal vein",
            without_depth_at("56400007"),
            vec![is("tumor.depth", "DEPTH_UNSPECIFIED")],
        ),
        row(
            "unset at the gonadal vein",
            without_depth_at("976004"),
            vec![is("tumor.depth", "DEPTH_UNSPECIFIED")],
        ),
        row(
            "unset at the iliac vein",
            without_depth_at("46027005"),
            vec![is("tumor.depth", "DEPTH_UNSPECIFIED")],
        ),
        row(
            "missing at the femoral vein",
            without_depth_at("83419000"),
            vec![missing("tumor.depth")],
        ),
        row(
            "missing at the popliteal vein",
            without_depth_at("56849005"),
            vec![missing("tumor.depth")],
        ),
        row(
            "missing at the saphenous vein",
            without_depth_at("60734001"),
            vec![missing("tumor.depth")],
        ),
        row(
            "missing at an upper-limb vein",
            without_depth_at("68705008"),
            vec![missing("tumor.depth")],
        ),
        row(
            "missing at an OTHER vein (SVC)",
            without_depth_at("48345005"),
            vec![missing("tumor.depth")],
        ),
        row(
            "an unknown depth code at the femoral vein",
            |f| {
                f.vein("83419000");
                f.set("obs-depth", "valueCodeableConcept", sct("261183002"));
            },
            vec![missing("tumor.depth")],
        ),
        row(
            "same-date disagreement",
            |f| {
                let mut other = observation("obs-depth-2", case_code("tumor-depth"), "2026-11-20");
                other["valueCodeableConcept"] = sct("26283006");
                f.push(other);
            },
            vec![conflict("tumor.depth")],
        ),
        row(
            "no depth gap while the vein is unknown",
            |f| {
                f.vein("281076005");
                f.remove("obs-depth");
            },
            vec![missing("vessel")],
        ),
    ]);
}

/// §2.2 `phase`: a completed, flagged resection of the primary, else a resectability assessment.
#[test]
fn phase() {
    const POST: &str = "TREATMENT_PHASE_POST_RESECTION";
    const PRE: &str = "TREATMENT_PHASE_PRE_RESECTION";
    let resection_status = |status: &'static str| {
        move |f: &mut Fixture| f.set("proc-resection", "status", json!(status))
    };
    check(vec![
        row(
            "completed flagged resection",
            keep,
            vec![is("phase", POST), is("resection", "present")],
        ),
        row(
            "no resection, an assessment",
            Fixture::pre,
            vec![is("phase", PRE), is("resection", "absent")],
        ),
        row(
            "resection in progress",
            resection_status("in-progress"),
            vec![is("phase", PRE)],
        ),
        row(
            "resection not-done",
            resection_status("not-done"),
            vec![is("phase", PRE)],
        ),
        row(
            "a procedure without the resection flag (a biopsy) is not a resection",
            |f| f.remove_extension("proc-resection", "vlms-rt-primary-tumor-resection"),
            vec![is("phase", PRE)],
        ),
        row(
            "an unmarked completed procedure of the tumour is shown on a pre-resection plan",
            |f| f.remove_extension("proc-resection", "vlms-rt-primary-tumor-resection"),
            vec![Expect::Noted(
                "Procedure/proc-resection is a completed procedure of this tumour not marked as its resection",
            )],
        ),
        row(
            "resection flag false",
            |f| {
                f.replace_extension(
                    "proc-resection",
                    ext_bool("vlms-rt-primary-tumor-resection", false),
                )
            },
            vec![is("phase", PRE)],
        ),
        row(
            "resection without reasonReference",
            |f| f.unset("proc-resection", "reasonReference"),
            vec![is("phase", PRE)],
        ),
        row(
            "resection's reasonReference as an absolute URL",
            |f| {
                f.set(
                    "proc-resection",
                    "reasonReference",
                    json!([{"reference": format!("https://ehr.example.org/fhir/Condition/{PRIMARY}")}]),
                );
            },
            vec![is("phase", POST)],
        ),
        row(
            "neither resection nor assessment",
            |f| {
                f.pre();
                f.remove("obs-resectability");
            },
            vec![missing("phase")],
        ),
        row(
            "a resection in progress and no assessment",
            |f| {
                f.set("proc-resection", "status", json!("in-progress"));
                f.remove("obs-resectability");
            },
            vec![missing("phase")],
        ),
        row(
            "a preliminary assessment and no resection",
            |f| {
                f.pre();
                f.set("obs-resectability", "status", json!("preliminary"));
            },
            vec![missing("phase")],
        ),
        row(
            "an undated resection: the phase is not guessed",
            |f| f.unset("proc-resection", "performedDateTime"),
            vec![missing("resection.surgery_date")],
        ),
        row(
            "two resections on the same date",
            |f| {
                let mut second = f.get("proc-resection").clone();
                second["id"] = json!("proc-resection-2");
                f.push(second);
            },
            vec![conflict("resection.surgery_date")],
        ),
        row(
            "two resections on different dates: the latest",
            |f| {
                let mut earlier = f.get("proc-resection").clone();
                earlier["id"] = json!("proc-resection-earlier");
                earlier["performedDateTime"] = json!("2026-08-01");
                f.push(earlier);
            },
            vec![is("phase", POST), is("resection.surgery_date", SURGERY)],
        ),
    ]);
}

/// §2.2 `resectability`: read before resection only.
#[test]
fn resectability() {
    let valued = |code: &'static str| {
        move |f: &mut Fixture| {
            f.pre();
            f.set(
                "obs-resectability",
                "valueCodeableConcept",
                concept(&cs("vlms-rt-resectability"), code),
            );
        }
    };
    check(vec![
        row(
            "#resectable",
            valued("resectable"),
            vec![is("resectability", "RESECTABILITY_RESECTABLE")],
        ),
        row(
            "#marginal",
            valued("marginal"),
            vec![is("resectability", "RESECTABILITY_MARGINAL")],
        ),
        row(
            "#unresectable",
            valued("unresectable"),
            vec![is("resectability", "RESECTABILITY_UNRESECTABLE")],
        ),
        row(
            "unknown code",
            valued("borderline"),
            vec![missing("resectability")],
        ),
        row(
            "assessment without a value",
            |f| {
                f.pre();
                f.unset("obs-resectability", "valueCodeableConcept");
            },
            vec![missing("resectability")],
        ),
        row(
            "after resection an old assessment is not sent",
            keep,
            vec![is("resectability", "RESECTABILITY_UNSPECIFIED")],
        ),
        row(
            "same-date disagreement",
            |f| {
                f.pre();
                f.push(assessment(
                    "obs-resectability-2",
                    "2026-09-02",
                    Some("unresectable"),
                    Some(true),
                ));
            },
            vec![conflict("resectability")],
        ),
        row(
            "the latest assessment",
            |f| {
                f.pre();
                f.push(assessment(
                    "obs-resectability-old",
                    "2026-08-01",
                    Some("unresectable"),
                    Some(false),
                ));
            },
            vec![
                is("resectability", "RESECTABILITY_MARGINAL"),
                is("surgery_mutilating", "true"),
            ],
        ),
    ]);
}

/// §2.2 `surgery_mutilating`: the assessment's component, read before resection only.
#[test]
fn surgery_mutilating() {
    let component = |value: Option<bool>| {
        move |f: &mut Fixture| {
            f.pre();
            f.remove("obs-resectability");
            f.push(assessment(
                "obs-resectability",
                "2026-09-02",
                Some("marginal"),
                value,
            ));
        }
    };
    check(vec![
        row(
            "component true",
            component(Some(true)),
            vec![is("surgery_mutilating", "true")],
        ),
        row(
            "component false",
            component(Some(false)),
            vec![is("surgery_mutilating", "false")],
        ),
        row(
            "no component",
            component(None),
            vec![missing("surgery_mutilating")],
        ),
        row(
            "component without valueBoolean",
            |f| {
                f.pre();
                f.get("obs-resectability")["component"][0]
                    .as_object_mut()
                    .expect("a component")
                    .remove("valueBoolean");
            },
            vec![missing("surgery_mutilating")],
        ),
        row(
            "after resection it is not read",
            keep,
            vec![is("surgery_mutilating", "false")],
        ),
        row(
            "same-date assessments agreeing on resectability, not on mutilation",
            |f| {
                f.pre();
                f.push(assessment(
                    "obs-resectability-2",
                    "2026-09-02",
                    Some("marginal"),
                    Some(false),
                ));
            },
            vec![conflict("surgery_mutilating")],
        ),
        row(
            "an undated assessment: both facts missing",
            |f| {
                f.pre();
                f.unset("obs-resectability", "effectiveDateTime");
            },
            vec![Expect::Gaps(
                vec!["resectability", "surgery_mutilating"],
                Vec::new(),
            )],
        ),
    ]);
}

/// §2.2 `resection.margin` (mCODE CancerStage, Residual tumor stage), dated on or after surgery.
#[test]
fn resection_margin() {
    let valued = |code: &'static str| {
        move |f: &mut Fixture| f.set("obs-residual", "valueCodeableConcept", sct(code))
    };
    let dated = |date: &'static str| {
        move |f: &mut Fixture| f.set("obs-residual", "effectiveDateTime", json!(date))
    };
    check(vec![
        row(
            "AJCC R0 1222638005",
            valued("1222638005"),
            vec![is("resection.margin", "MARGIN_R0")],
        ),
        row(
            "AJCC R1 1222639002",
            valued("1222639002"),
            vec![is("resection.margin", "MARGIN_R1")],
        ),
        row(
            "AJCC R2 1222640000",
            valued("1222640000"),
            vec![is("resection.margin", "MARGIN_R2")],
        ),
        row(
            "finding R0 258254000",
            valued("258254000"),
            vec![is("resection.margin", "MARGIN_R0")],
        ),
        row(
            "finding R1 278271003",
            valued("278271003"),
            vec![is("resection.margin", "MARGIN_R1")],
        ),
        row(
            "finding R2 278272005",
            valued("278272005"),
            vec![is("resection.margin", "MARGIN_R2")],
        ),
        row(
            "RX (any other value)",
            |f| {
                f.set(
                    "obs-residual",
                    "valueCodeableConcept",
                    json!({"text": "RX"}),
                )
            },
            vec![missing("resection.margin")],
        ),
        row(
            "no residual-tumour Observation",
            |f| f.remove("obs-residual"),
            vec![missing("resection.margin")],
        ),
        row(
            "code SNOMED 17964000 only",
            |f| f.set("obs-residual", "code", sct("17964000")),
            vec![is("resection.margin", "MARGIN_R1")],
        ),
        row(
            "code LOINC 84892-9 only",
            |f| f.set("obs-residual", "code", concept(LOINC, "84892-9")),
            vec![is("resection.margin", "MARGIN_R1")],
        ),
        row(
            "dated before the surgery: stale",
            dated("2026-10-20"),
            vec![missing("resection.margin")],
        ),
        row(
            "dated on the surgery date",
            dated(SURGERY),
            vec![is("resection.margin", "MARGIN_R1")],
        ),
        row(
            "23:30 UTC the evening before is the surgery's local date",
            dated("2026-10-26T23:30:00Z"),
            vec![is("resection.margin", "MARGIN_R1")],
        ),
        row(
            "00:30 at +02:00 on the surgery date is the local evening before: stale",
            dated("2026-10-27T00:30:00+02:00"),
            vec![missing("resection.margin")],
        ),
        row(
            "same-date R0 and R1",
            |f| f.push(residual("obs-residual-2", "2026-10-29", "1222638005")),
            vec![conflict("resection.margin")],
        ),
        row(
            "same date, R1 by both code sets",
            |f| f.push(residual("obs-residual-2", "2026-10-29", "278271003")),
            vec![is("resection.margin", "MARGIN_R1")],
        ),
        row(
            "a later R0 reading replaces R1",
            |f| f.push(residual("obs-residual-2", "2026-11-10", "1222638005")),
            vec![is("resection.margin", "MARGIN_R0")],
        ),
        row(
            "a stale R0 does not conflict with R1",
            |f| f.push(residual("obs-residual-old", "2026-10-01", "1222638005")),
            vec![is("resection.margin", "MARGIN_R1")],
        ),
    ]);
}

/// §2.2 `resection.close_margin`: read only with R0, dated on or after surgery.
#[test]
fn resection_close_margin() {
    check(vec![
        row(
            "R0, close true",
            Fixture::r0,
            vec![is("resection.close_margin", "true")],
        ),
        row(
            "R0, close false",
            |f| {
                f.r0();
                f.set("obs-close-margin", "valueBoolean", json!(false));
            },
            vec![is("resection.close_margin", "false")],
        ),
        row(
            "R0, no close-margin Observation",
            |f| {
                f.r0();
                f.remove("obs-close-margin");
            },
            vec![missing("resection.close_margin")],
        ),
        row(
            "R0, close margin dated before the surgery: stale",
            |f| {
                f.r0();
                f.set("obs-close-margin", "effectiveDateTime", json!("2026-10-01"));
            },
            vec![missing("resection.close_margin")],
        ),
        row(
            "R0, same-date disagreement",
            |f| {
                f.r0();
                f.push(flag(
                    "obs-close-margin-2",
                    "close-margin",
                    "2026-10-29",
                    false,
                ));
            },
            vec![conflict("resection.close_margin")],
        ),
        row(
            "R1: not read",
            keep,
            vec![is("resection.close_margin", "false")],
        ),
        row(
            "R2 without a close-margin Observation: no gap",
            |f| {
                f.r2();
                f.remove("obs-close-margin");
            },
            vec![is("resection.close_margin", "false")],
        ),
    ]);
}

/// §2.2 `resection.surgery_date`: performedDateTime or performedPeriod.start, facility-local.
#[test]
fn resection_surgery_date() {
    let performed = |text: &'static str| {
        move |f: &mut Fixture| f.set("proc-resection", "performedDateTime", json!(text))
    };
    check(vec![
        row(
            "performedDateTime at +01:00",
            keep,
            vec![is("resection.surgery_date", SURGERY)],
        ),
        row(
            "performedDateTime as a date",
            performed(SURGERY),
            vec![is("resection.surgery_date", SURGERY)],
        ),
        row(
            "performedPeriod.start",
            |f| {
                f.unset("proc-resection", "performedDateTime");
                f.set(
                    "proc-resection",
                    "performedPeriod",
                    json!({"start": "2026-10-27T08:40:00+01:00", "end": "2026-10-27T16:10:00+01:00"}),
                );
            },
            vec![is("resection.surgery_date", SURGERY)],
        ),
        row(
            "23:30 UTC is the next local day",
            performed("2026-10-26T23:30:00Z"),
            vec![is("resection.surgery_date", SURGERY)],
        ),
        row(
            "23:30 at -05:00 is the next local day",
            performed("2026-10-27T23:30:00-05:00"),
            vec![is("resection.surgery_date", "2026-10-28")],
        ),
        row(
            "a month only",
            performed("2026-10"),
            vec![missing("resection.surgery_date")],
        ),
        row(
            "no performed[x]",
            |f| f.unset("proc-resection", "performedDateTime"),
            vec![missing("resection.surgery_date")],
        ),
    ]);
}

/// §2.2 `resection.compartmental_contained`: Procedure extension, read only with R0.
#[test]
fn resection_compartmental_contained() {
    check(vec![
        row(
            "R0, true",
            Fixture::r0,
            vec![is("resection.compartmental_contained", "true")],
        ),
        row(
            "R0, false",
            |f| {
                f.r0();
                f.replace_extension(
                    "proc-resection",
                    ext_bool("vlms-rt-compartmental-resection", false),
                );
            },
            vec![is("resection.compartmental_contained", "false")],
        ),
        row(
            "R0, absent",
            |f| {
                f.r0();
                f.remove_extension("proc-resection", "vlms-rt-compartmental-resection");
            },
            vec![missing("resection.compartmental_contained")],
        ),
        row(
            "R0, both values",
            |f| {
                f.r0();
                f.add_extension(
                    "proc-resection",
                    ext_bool("vlms-rt-compartmental-resection", false),
                );
            },
            vec![conflict("resection.compartmental_contained")],
        ),
        row(
            "R1: not read",
            keep,
            vec![is("resection.compartmental_contained", "false")],
        ),
        row(
            "R1, absent: no gap",
            |f| f.remove_extension("proc-resection", "vlms-rt-compartmental-resection"),
            vec![is("resection.compartmental_contained", "false")],
        ),
    ]);
}

/// §2.2 `resection.re_excision_feasible`: read only with R1/R2, dated on or after surgery.
#[test]
fn resection_re_excision_feasible() {
    check(vec![
        row(
            "R1, true",
            keep,
            vec![is("resection.re_excision_feasible", "true")],
        ),
        row(
            "R1, false",
            |f| f.set("obs-reexcision", "valueBoolean", json!(false)),
            vec![is("resection.re_excision_feasible", "false")],
        ),
        row(
            "R2, true",
            Fixture::r2,
            vec![is("resection.re_excision_feasible", "true")],
        ),
        row(
            "R1, absent",
            |f| f.remove("obs-reexcision"),
            vec![missing("resection.re_excision_feasible")],
        ),
        row(
            "R2, absent",
            |f| {
                f.r2();
                f.remove("obs-reexcision");
            },
            vec![missing("resection.re_excision_feasible")],
        ),
        row(
            "R1, dated before the surgery: stale",
            |f| f.set("obs-reexcision", "effectiveDateTime", json!("2026-10-01")),
            vec![missing("resection.re_excision_feasible")],
        ),
        row(
            "R1, same-date disagreement",
            |f| {
                f.push(flag(
                    "obs-reexcision-2",
                    "re-excision-feasible",
                    "2026-11-05",
                    false,
                ))
            },
            vec![conflict("resection.re_excision_feasible")],
        ),
        row(
            "R0: not read",
            Fixture::r0,
            vec![is("resection.re_excision_feasible", "false")],
        ),
        row(
            "R0, absent: no gap",
            |f| {
                f.r0();
                f.remove("obs-reexcision");
            },
            vec![is("resection.re_excision_feasible", "false")],
        ),
    ]);
}

/// §2.2 `resection.hematoma_present`: the latest, dated on or after surgery.
#[test]
fn resection_hematoma_present() {
    check(vec![
        row("true", keep, vec![is("resection.hematoma_present", "true")]),
        row(
            "false",
            |f| f.set("obs-hematoma", "valueBoolean", json!(false)),
            vec![is("resection.hematoma_present", "false")],
        ),
        row(
            "absent",
            |f| f.remove("obs-hematoma"),
            vec![missing("resection.hematoma_present")],
        ),
        row(
            "dated before the surgery: stale",
            |f| f.set("obs-hematoma", "effectiveDateTime", json!("2026-10-20")),
            vec![missing("resection.hematoma_present")],
        ),
        row(
            "dated on the surgery date",
            |f| f.set("obs-hematoma", "effectiveDateTime", json!(SURGERY)),
            vec![is("resection.hematoma_present", "true")],
        ),
        row(
            "an older true, a newer false: the latest",
            |f| {
                f.push(flag(
                    "obs-hematoma-2",
                    "postoperative-hematoma",
                    "2026-11-22",
                    false,
                ))
            },
            vec![is("resection.hematoma_present", "false")],
        ),
        row(
            "same-date disagreement",
            |f| {
                f.push(flag(
                    "obs-hematoma-2",
                    "postoperative-hematoma",
                    "2026-11-20",
                    false,
                ))
            },
            vec![conflict("resection.hematoma_present")],
        ),
        row(
            "before resection it is not read",
            |f| {
                f.pre();
                f.remove("obs-hematoma");
            },
            vec![is("resection", "absent")],
        ),
    ]);
}

/// §2.2 `resection.vascular_management`: Procedure extension, an explicit `none` required.
#[test]
fn resection_vascular_management() {
    let managed = |code: &'static str| {
        move |f: &mut Fixture| f.replace_extension("proc-resection", vascular(code))
    };
    check(vec![
        row(
            "#none",
            managed("none"),
            vec![is(
                "resection.vascular_management",
                "VASCULAR_MANAGEMENT_NONE",
            )],
        ),
        row(
            "#ligation",
            managed("ligation"),
            vec![is(
                "resection.vascular_management",
                "VASCULAR_MANAGEMENT_LIGATION",
            )],
        ),
        row(
            "#primary-repair",
            managed("primary-repair"),
            vec![is(
                "resection.vascular_management",
                "VASCULAR_MANAGEMENT_PRIMARY_REPAIR",
            )],
        ),
        row(
            "#patch",
            managed("patch"),
            vec![is(
                "resection.vascular_management",
                "VASCULAR_MANAGEMENT_PATCH",
            )],
        ),
        row(
            "#graft",
            managed("graft"),
            vec![is(
                "resection.vascular_management",
                "VASCULAR_MANAGEMENT_GRAFT",
            )],
        ),
        row(
            "absent is missing, not NONE",
            |f| f.remove_extension("proc-resection", "vlms-rt-vascular-management"),
            vec![missing("resection.vascular_management")],
        ),
        row(
            "unknown code",
            managed("bypass"),
            vec![missing("resection.vascular_management")],
        ),
        row(
            "code outside vlms-rt-vascular-management",
            |f| {
                f.replace_extension(
                    "proc-resection",
                    ext_concept("vlms-rt-vascular-management", sct("none")),
                )
            },
            vec![missing("resection.vascular_management")],
        ),
        row(
            "two different procedures",
            |f| f.add_extension("proc-resection", vascular("patch")),
            vec![conflict("resection.vascular_management")],
        ),
        row(
            "the same procedure twice",
            |f| f.add_extension("proc-resection", vascular("graft")),
            vec![is(
                "resection.vascular_management",
                "VASCULAR_MANAGEMENT_GRAFT",
            )],
        ),
    ]);
}

/// §2.2 `resection.periaortic_dissection`: Procedure extension.
#[test]
fn resection_periaortic_dissection() {
    check(vec![
        row(
            "true",
            keep,
            vec![is("resection.periaortic_dissection", "true")],
        ),
        row(
            "false",
            |f| {
                f.replace_extension(
                    "proc-resection",
                    ext_bool("vlms-rt-periaortic-dissection", false),
                )
            },
            vec![is("resection.periaortic_dissection", "false")],
        ),
        row(
            "absent",
            |f| f.remove_extension("proc-resection", "vlms-rt-periaortic-dissection"),
            vec![missing("resection.periaortic_dissection")],
        ),
        row(
            "both values",
            |f| {
                f.add_extension(
                    "proc-resection",
                    ext_bool("vlms-rt-periaortic-dissection", false),
                )
            },
            vec![conflict("resection.periaortic_dissection")],
        ),
    ]);
}

/// §2.2 and §2.5 `organs_at_risk`: TG-263 components of the adjacency assessment.
#[test]
fn organs_at_risk() {
    let listed = |any: Option<bool>, codes: &'static [&'static str]| {
        move |f: &mut Fixture| {
            f.remove("obs-oar");
            f.push(organs("obs-oar", "2026-11-20", any, codes));
        }
    };
    let tg263: &[(&str, &str)] = &[
        ("Kidney_L", "ORGAN_KIDNEY_LEFT"),
        ("Kidney_R", "ORGAN_KIDNEY_RIGHT"),
        ("Liver", "ORGAN_LIVER"),
        ("Bowel_Small", "ORGAN_SMALL_BOWEL"),
        ("Bowel_Large", "ORGAN_LARGE_BOWEL"),
        ("Stomach", "ORGAN_STOMACH"),
        ("SpinalCord", "ORGAN_SPINAL_CORD"),
        ("Duodenum", "ORGAN_DUODENUM"),
        ("Heart", "ORGAN_HEART"),
        ("Lungs", "ORGAN_LUNGS"),
        ("Esophagus", "ORGAN_ESOPHAGUS"),
        ("Bladder", "ORGAN_BLADDER"),
    ];
    let mut rows = vec![
        row(
            "Kidney_R and Liver",
            keep,
            vec![is("organs_at_risk", "ORGAN_KIDNEY_RIGHT,ORGAN_LIVER")],
        ),
        row(
            "valueBoolean false: none",
            listed(Some(false), &[]),
            vec![is("organs_at_risk", "")],
        ),
        row(
            "valueBoolean false with an organ listed contradicts itself",
            listed(Some(false), &["Liver"]),
            vec![conflict("organs_at_risk")],
        ),
        row(
            "true without components",
            listed(Some(true), &[]),
            vec![missing("organs_at_risk")],
        ),
        row(
            "components without valueBoolean",
            listed(None, &["Liver"]),
            vec![missing("organs_at_risk")],
        ),
        row(
            "no assessment",
            |f| f.remove("obs-oar"),
            vec![missing("organs_at_risk")],
        ),
        row(
            "Lung_L alone is not LUNGS",
            listed(Some(true), &["Lung_L"]),
            vec![missing("organs_at_risk")],
        ),
        row(
            "Lung_R alone is not LUNGS",
            listed(Some(true), &["Lung_R"]),
            vec![missing("organs_at_risk")],
        ),
        row(
            "Lung_L with Liver: Liver only, Lung_L noted",
            listed(Some(true), &["Lung_L", "Liver"]),
            vec![is("organs_at_risk", "ORGAN_LIVER"), Expect::Noted("Lung_L")],
        ),
        row(
            "only an organ the guideline does not use (Pancreas)",
            listed(Some(true), &["Pancreas"]),
            vec![missing("organs_at_risk")],
        ),
        row(
            "Pancreas and Spleen with Liver: Liver, the others noted",
            listed(Some(true), &["Pancreas", "Liver", "Spleen"]),
            vec![
                is("organs_at_risk", "ORGAN_LIVER"),
                Expect::Noted("Pancreas, Spleen"),
            ],
        ),
        row(
            "each organ once",
            listed(Some(true), &["Liver", "Liver"]),
            vec![is("organs_at_risk", "ORGAN_LIVER")],
        ),
        row(
            "SNOMED equivalents are optional and not read (10200004 Liver)",
            |f| {
                f.get("obs-oar")["component"] = json!([{"code": case_code("adjacent-organ"), "valueCodeableConcept": sct("10200004")}]);
            },
            vec![missing("organs_at_risk")],
        ),
        row(
            "a component with another code is not an organ",
            |f| f.get("obs-oar")["component"][1]["code"] = case_code("surgery-mutilating"),
            vec![is("organs_at_risk", "ORGAN_KIDNEY_RIGHT")],
        ),
        row(
            "same-date disagreement",
            |f| f.push(organs("obs-oar-2", "2026-11-20", Some(true), &["Liver"])),
            vec![conflict("organs_at_risk")],
        ),
        row(
            "same date, the same organs listed in another order agree",
            |f| {
                f.push(organs(
                    "obs-oar-2",
                    "2026-11-20",
                    Some(true),
                    &["Liver", "Kidney_R"],
                ))
            },
            vec![is("organs_at_risk", "ORGAN_KIDNEY_RIGHT,ORGAN_LIVER")],
        ),
        row(
            "the latest assessment",
            |f| f.push(organs("obs-oar-2", "2026-11-22", Some(false), &[])),
            vec![is("organs_at_risk", "")],
        ),
    ];
    for &(code, organ) in tg263 {
        rows.push(row(
            format!("TG-263 {code}"),
            move |f| {
                f.remove("obs-oar");
                f.push(organs("obs-oar", "2026-11-20", Some(true), &[code]));
            },
            vec![is("organs_at_risk", organ)],
        ));
    }
    check(rows);
}

/// §2.2 `solitary_functioning_kidney`: the Observation is authoritative.
#[test]
fn solitary_functioning_kidney() {
    check(vec![
        row(
            "false",
            keep,
            vec![is("solitary_functioning_kidney", "false")],
        ),
        row(
            "true",
            |f| f.set("obs-kidney", "valueBoolean", json!(true)),
            vec![is("solitary_functioning_kidney", "true")],
        ),
        row(
            "absent",
            |f| f.remove("obs-kidney"),
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "no valueBoolean",
            |f| f.unset("obs-kidney", "valueBoolean"),
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "a Z90.5 Condition without the Observation is missing",
            |f| {
                f.remove("obs-kidney");
                f.push(secondary("cond-z905", concept(ICD_10_CM, "Z90.5"), false));
            },
            vec![missing("solitary_functioning_kidney")],
        ),
        row(
            "same-date disagreement",
            |f| {
                f.push(flag(
                    "obs-kidney-2",
                    "solitary-functioning-kidney",
                    "2026-11-20",
                    true,
                ))
            },
            vec![conflict("solitary_functioning_kidney")],
        ),
    ]);
}

/// §2.2 `prior_radiotherapy`: the Observation is authoritative; courses are only shown.
#[test]
fn prior_radiotherapy() {
    let other_course = || {
        course(
            "proc-rt-earlier",
            "completed",
            "2014-05-01",
            vec![setting("preoperative")],
            json!({"reasonCode": [{"text": "Earlier malignancy treated with radiotherapy"}]}),
        )
    };
    check(vec![
        row("false", keep, vec![is("prior_radiotherapy", "false")]),
        row(
            "true",
            |f| f.set("obs-prior-rt", "valueBoolean", json!(true)),
            vec![is("prior_radiotherapy", "true")],
        ),
        row(
            "absent",
            |f| f.remove("obs-prior-rt"),
            vec![missing("prior_radiotherapy")],
        ),
        row(
            "same-date disagreement",
            |f| {
                f.push(flag(
                    "obs-prior-rt-2",
                    "prior-radiotherapy-to-region",
                    "2026-11-20",
                    true,
                ))
            },
            vec![conflict("prior_radiotherapy")],
        ),
        row(
            "a course for another condition is shown, the Observation decides",
            move |f| f.push(other_course()),
            vec![
                is("prior_radiotherapy", "false"),
                Expect::Noted("another condition"),
            ],
        ),
        row(
            "a course for another condition alone sets nothing",
            move |f| {
                f.remove("obs-prior-rt");
                f.push(other_course());
            },
            vec![missing("prior_radiotherapy")],
        ),
        row(
            "a Z92.3 history of irradiation alone sets nothing",
            |f| {
                f.remove("obs-prior-rt");
                f.push(secondary("cond-z923", concept(ICD_10_CM, "Z92.3"), false));
            },
            vec![missing("prior_radiotherapy")],
        ),
        row(
            "this tumour's own preoperative course is never prior RT",
            |f| {
                f.remove("obs-prior-rt");
                f.remove("obs-preop-rt");
                f.push(preop_course("2026-09-15"));
            },
            vec![missing("prior_radiotherapy")],
        ),
    ]);
}

/// §2.2 `metastatic_disease`: SecondaryCancerCondition (true) or cM0 (false); both conflict.
#[test]
fn metastatic_disease() {
    let secondary_only = |code: Value, profile: bool| {
        move |f: &mut Fixture| {
            f.remove("obs-cm0");
            f.push(secondary("cond-met-1", code.clone(), profile));
        }
    };
    let m0 = |code: &'static str| {
        move |f: &mut Fixture| {
            f.remove("obs-cm0");
            f.push(m_category("obs-m", code, "2026-09-01", "1229901006"));
        }
    };
    check(vec![
        row(
            "cM 399387003 = cM0",
            keep,
            vec![is("metastatic_disease", "false")],
        ),
        row(
            "pM 371497001 = cM0",
            m0("371497001"),
            vec![is("metastatic_disease", "false")],
        ),
        row(
            "M 277208005 = cM0",
            m0("277208005"),
            vec![is("metastatic_disease", "false")],
        ),
        row(
            "SecondaryCancerCondition by profile",
            secondary_only(sct("94391008"), true),
            vec![is("metastatic_disease", "true")],
        ),
        row(
            "secondary coded SNOMED 128462008",
            secondary_only(sct("128462008"), false),
            vec![is("metastatic_disease", "true")],
        ),
        row(
            "secondary coded ICD-10-CM C77.2",
            secondary_only(concept(ICD_10_CM, "C77.2"), false),
            vec![is("metastatic_disease", "true")],
        ),
        row(
            "secondary coded ICD-10-CM C78.01",
            secondary_only(concept(ICD_10_CM, "C78.01"), false),
            vec![is("metastatic_disease", "true")],
        ),
        row(
            "secondary coded ICD-10-CM C79.51",
            secondary_only(concept(ICD_10_CM, "C79.51"), false),
            vec![is("metastatic_disease", "true")],
        ),
        row(
            "SecondaryCancerCondition and cM0",
            |f| f.push(secondary("cond-met-1", sct("128462008"), true)),
            vec![conflict("metastatic_disease")],
        ),
        row(
            "a resolved secondary and cM0",
            |f| {
                let mut met = secondary("cond-met-1", sct("128462008"), true);
                met["clinicalStatus"] = concept(CONDITION_CLINICAL, "resolved");
                f.push(met);
            },
            vec![is("metastatic_disease", "false")],
        ),
        row(
            "a provisional secondary and cM0",
            |f| {
                let mut met = secondary("cond-met-1", sct("128462008"), true);
                met["verificationStatus"] = concept(CONDITION_VERIFICATION, "provisional");
                f.push(met);
            },
            vec![is("metastatic_disease", "false")],
        ),
        row(
            "an M value other than cM0 without a secondary",
            |f| f.set("obs-cm0", "valueCodeableConcept", json!({"text": "cM1"})),
            vec![missing("metastatic_disease")],
        ),
        row(
            "a later M value other than cM0 after a cM0",
            |f| {
                let mut later = m_category("obs-m1", "399387003", "2026-11-01", "0");
                later["valueCodeableConcept"] = json!({"text": "cM1"});
                f.push(later);
            },
            vec![missing("metastatic_disease")],
        ),
        row(
            "neither secondary nor M staging",
            |f| f.remove("obs-cm0"),
            vec![missing("metastatic_disease")],
        ),
        row(
            "same-date cM0 and another M value",
            |f| {
                let mut other = m_category("obs-m1", "399387003", "2026-09-01", "0");
                other["valueCodeableConcept"] = json!({"text": "cM1"});
                f.push(other);
            },
            vec![conflict("metastatic_disease")],
        ),
        row(
            "two primaries: a secondary linked to the LMS and cM0",
            |f| {
                f.second_primary();
                let mut met = secondary("cond-met-1", sct("128462008"), true);
                met["extension"] = json!([{
                    "url": format!("{MCODE}mcode-related-primary-cancer-condition"),
                    "valueReference": condition_ref(PRIMARY),
                }]);
                f.push(met);
            },
            vec![conflict("metastatic_disease")],
        ),
        row(
            "two primaries: an unlinked secondary is not the LMS's",
            |f| {
                f.second_primary();
                f.push(secondary("cond-met-1", sct("128462008"), true));
            },
            vec![is("metastatic_disease", "false")],
        ),
    ]);
}

/// §2.5 `preoperative_rt_delivered`: a completed, marked course of this tumour, or the Observation.
#[test]
fn preoperative_rt_delivered() {
    let course_only = |course: Value| {
        move |f: &mut Fixture| {
            f.remove("obs-preop-rt");
            f.push(course.clone());
        }
    };
    let marked = |status: &str, end: &str, marker: &str| {
        course(
            "proc-rt-preop",
            status,
            end,
            vec![setting(marker)],
            json!({"reasonReference": [condition_ref(PRIMARY)]}),
        )
    };
    let unmarked = course(
        "proc-rt-unmarked",
        "completed",
        "2026-09-15",
        Vec::new(),
        json!({"reasonReference": [condition_ref(PRIMARY)]}),
    );
    let other_condition = course(
        "proc-rt-earlier",
        "completed",
        "2014-05-01",
        vec![setting("preoperative")],
        json!({"reasonCode": [{"text": "Earlier malignancy treated with radiotherapy"}]}),
    );
    let other_condition_2 = other_condition.clone();
    let other_condition_3 = other_condition.clone();
    let unmarked_2 = unmarked.clone();
    check(vec![
        row(
            "Observation false",
            keep,
            vec![is("preoperative_rt_delivered", "false")],
        ),
        row(
            "Observation true (a course given elsewhere)",
            |f| f.set("obs-preop-rt", "valueBoolean", json!(true)),
            vec![is("preoperative_rt_delivered", "true")],
        ),
        row(
            "neither course nor Observation",
            |f| f.remove("obs-preop-rt"),
            vec![missing("preoperative_rt_delivered")],
        ),
        row(
            "Observation preliminary",
            |f| f.set("obs-preop-rt", "status", json!("preliminary")),
            vec![missing("preoperative_rt_delivered")],
        ),
        row(
            "same-date Observations disagree",
            |f| {
                f.push(flag(
                    "obs-preop-rt-2",
                    "preoperative-rt-delivered",
                    "2026-11-20",
                    true,
                ))
            },
            vec![conflict("preoperative_rt_delivered")],
        ),
        row(
            "a completed course marked preoperative, ended before the resection",
            course_only(marked("completed", "2026-09-15", "preoperative")),
            vec![
                is("preoperative_rt_delivered", "true"),
                is("prior_radiotherapy", "false"),
            ],
        ),
        row(
            "a completed course marked neoadjuvant-chemoradiation",
            course_only(marked(
                "completed",
                "2026-09-15",
                "neoadjuvant-chemoradiation",
            )),
            vec![is("preoperative_rt_delivered", "true")],
        ),
        row(
            "a marked course ending on the resection date",
            course_only(marked("completed", SURGERY, "preoperative")),
            vec![is("preoperative_rt_delivered", "true")],
        ),
        row(
            "a marked course ending after the resection",
            course_only(marked("completed", "2026-11-10", "preoperative")),
            vec![conflict("preoperative_rt_delivered")],
        ),
        row(
            "a marked course in progress",
            course_only(marked("in-progress", "2026-09-15", "preoperative")),
            vec![conflict("preoperative_rt_delivered")],
        ),
        row(
            "a marked course on hold",
            course_only(marked("on-hold", "2026-09-15", "preoperative")),
            vec![conflict("preoperative_rt_delivered")],
        ),
        row(
            "a marked course stopped",
            course_only(marked("stopped", "2026-09-15", "preoperative")),
            vec![conflict("preoperative_rt_delivered")],
        ),
        row(
            "a marked course and the Observation false",
            |f| f.push(preop_course("2026-09-15")),
            vec![conflict("preoperative_rt_delivered")],
        ),
        row(
            "a marked course and the Observation true",
            |f| {
                f.set("obs-preop-rt", "valueBoolean", json!(true));
                f.push(preop_course("2026-09-15"));
            },
            vec![is("preoperative_rt_delivered", "true")],
        ),
        row(
            "before resection, a marked course ended before the evaluation date",
            |f| {
                f.pre();
                f.remove("obs-preop-rt");
                f.push(preop_course("2026-11-01"));
            },
            vec![
                is("phase", "TREATMENT_PHASE_PRE_RESECTION"),
                is("preoperative_rt_delivered", "true"),
            ],
        ),
        row(
            "before resection, a marked course ending after the evaluation date",
            |f| {
                f.pre();
                f.remove("obs-preop-rt");
                f.push(preop_course("2026-11-30"));
            },
            vec![conflict("preoperative_rt_delivered")],
        ),
        row(
            "an unmarked course of this tumour sets nothing",
            course_only(unmarked),
            vec![missing("preoperative_rt_delivered")],
        ),
        row(
            "an unmarked course of this tumour is listed; the Observation decides",
            move |f| f.push(unmarked_2.clone()),
            vec![
                is("preoperative_rt_delivered", "false"),
                Expect::Noted("without a vlms-rt-setting marker"),
            ],
        ),
        row(
            "SNOMED 373847000 Neoadjuvant intent alone is not the marker",
            course_only(course(
                "proc-rt-preop",
                "completed",
                "2026-09-15",
                vec![ext_concept("vlms-rt-setting", sct("373847000"))],
                json!({"reasonReference": [condition_ref(PRIMARY)]}),
            )),
            vec![missing("preoperative_rt_delivered")],
        ),
        row(
            "a course marked postoperative sets nothing",
            course_only(marked("completed", "2026-09-15", "postoperative")),
            vec![missing("preoperative_rt_delivered")],
        ),
        row(
            "a marked course for another condition (reasonCode only) sets neither flag",
            move |f| {
                f.remove("obs-preop-rt");
                f.remove("obs-prior-rt");
                f.push(other_condition.clone());
            },
            vec![Expect::Gaps(
                vec!["preoperative_rt_delivered", "prior_radiotherapy"],
                Vec::new(),
            )],
        ),
        row(
            "a course for another condition with both Observations false",
            move |f| f.push(other_condition_2.clone()),
            vec![
                is("preoperative_rt_delivered", "false"),
                is("prior_radiotherapy", "false"),
                Expect::Noted("another condition"),
            ],
        ),
        row(
            "a marked course for another primary (reasonReference)",
            move |f| {
                f.second_primary();
                f.remove("obs-preop-rt");
                let mut other = other_condition_3.clone();
                other["reasonReference"] = json!([condition_ref(OTHER_PRIMARY)]);
                f.push(other);
            },
            vec![missing("preoperative_rt_delivered")],
        ),
    ]);
}
