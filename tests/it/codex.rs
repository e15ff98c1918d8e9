//! Every plan vignette through `cds::codex`: the plan card's CodeX suggestions and the FHIR Bundle
//! form, checked for the structural facts of ehr-integration.md §3.2 and §3.5.
//!
//! With `VLMS_RT_CDS_OUT=<dir>` the test also writes, per vignette, a CDS Hooks response holding
//! the suggestions and the Bundle, for the offline validator (`validate.py`, see §5.2).

use std::collections::HashSet;

use serde_json::{Value, json};
use vlms_rt::cds::codex::{self, Ids, Naming, Subject};
use vlms_rt::convert;
use vlms_rt::core::{self, Case};
use vlms_rt::pb;

use crate::support::{profile, vignettes};

/// Distinct, reproducible UUIDs.
struct Counter(u128);

impl Ids for Counter {
    fn uuid(&mut self) -> uuid::Uuid {
        self.0 += 1;
        // A version-4-shaped UUID whose random bits are the counter.
        uuid::Builder::from_random_bytes(self.0.to_be_bytes()).into_uuid()
    }
}

fn naming() -> Naming {
    Naming {
        site: String::from("https://vlms-rt.example.org"),
    }
}

fn subject() -> Subject {
    Subject {
        patient_id: String::from("pat-ivc-01"),
        condition_id: String::from("cond-lms-ivc"),
        user_id: Some(String::from("PractitionerRole/pr-radonc-7")),
        encounter_id: Some(String::from("enc-mdt-2026-11-26")),
        fhir_server: Some(String::from("https://ehr.example.org/fhir")),
        tumour_site: (
            String::from("http://snomed.info/sct"),
            String::from("64131007"),
            String::from("Inferior vena cava structure"),
        ),
    }
}

fn plans() -> Vec<(String, pb::Plan)> {
    let profile = profile();
    let mut plans = Vec::new();
    for vignette in vignettes().into_iter().filter(|v| v.is_plan()) {
        let sent = vignette.case();
        let case = Case::validate(&convert::raw_case(&sent), "case")
            .unwrap_or_else(|violations| panic!("{}: rejected: {violations}", vignette.name));
        let plan = convert::plan_out(
            &core::recommend(&profile, &case),
            String::from("01M98WP75C9TB60KB3C4Z8S0AC"),
        );
        plans.push((vignette.name, plan));
    }
    assert!(plans.len() >= 15, "only {} plan vignettes", plans.len());
    plans
}

/// Every place where FHIR JSON would hold an empty string, array or object, or a null.
fn empties(value: &Value, at: &str, found: &mut Vec<String>) {
    match value {
        Value::Null => found.push(format!("{at}: null")),
        Value::String(text) if text.is_empty() => found.push(format!("{at}: empty string")),
        Value::Array(items) => {
            if items.is_empty() {
                found.push(format!("{at}: empty array"));
            }
            for (index, item) in items.iter().enumerate() {
                empties(item, &format!("{at}[{index}]"), found);
            }
        }
        Value::Object(members) => {
            if members.is_empty() {
                found.push(format!("{at}: empty object"));
            }
            for (key, member) in members {
                empties(member, &format!("{at}.{key}"), found);
            }
        }
        _ => {}
    }
}

fn extensions<'a>(resource: &'a Value, suffix: &str) -> Vec<&'a Value> {
    resource["extension"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|ext| ext["url"].as_str().is_some_and(|url| url.ends_with(suffix)))
                .collect()
        })
        .unwrap_or_default()
}

fn sub<'a>(extension: &'a Value, url: &str) -> Vec<&'a Value> {
    extension["extension"]
        .as_array()
        .map(|list| list.iter().filter(|ext| ext["url"] == url).collect())
        .unwrap_or_default()
}

fn cgy(gy: f64) -> f64 {
    (gy * 100.0 * 100.0).round() / 100.0
}

fn code_of(resource: &Value) -> &str {
    resource["code"]["coding"][0]["code"]
        .as_str()
        .unwrap_or_default()
}

/// Checks one option's course and phases against its prescription; `intent` is the form's.
fn check_option(
    name: &str,
    plan: &pb::Plan,
    prescription: &pb::Prescription,
    resources: &[&Value],
    intent: &str,
    problems: &mut Vec<String>,
) {
    let boosted = prescription
        .phases
        .iter()
        .any(|phase| phase.kind() == pb::PhaseKind::Boost);
    let volumes: Vec<&&Value> = resources
        .iter()
        .filter(|r| r["resourceType"] == "BodyStructure")
        .collect();
    let courses: Vec<&&Value> = resources
        .iter()
        .filter(|r| code_of(r) == "1217123003")
        .collect();
    let phases: Vec<&&Value> = resources
        .iter()
        .filter(|r| code_of(r) == "1222565005")
        .collect();
    let want_volumes = if boosted { 2 } else { 1 };
    if volumes.len() != want_volumes || courses.len() != 1 {
        problems.push(format!(
            "{name}: {} volumes, {} courses",
            volumes.len(),
            courses.len()
        ));
        return;
    }
    if phases.len() != prescription.phases.len() {
        problems.push(format!(
            "{name}: {} phase resources for {} phases",
            phases.len(),
            prescription.phases.len()
        ));
        return;
    }
    let base = match plan.setting() {
        pb::Setting::Postoperative => "PTVsb",
        _ => "PTVp",
    };
    let volume_names: Vec<&str> = volumes
        .iter()
        .map(|v| v["identifier"][0]["value"].as_str().unwrap_or_default())
        .collect();
    let want_names: Vec<String> = if boosted {
        vec![format!("{base}_Low"), format!("{base}_High")]
    } else {
        vec![base.to_string()]
    };
    if volume_names != want_names {
        problems.push(format!("{name}: volumes {volume_names:?}"));
    }
    for volume in &volumes {
        let uid = volume["identifier"][1]["value"]
            .as_str()
            .unwrap_or_default();
        let digits = uid.strip_prefix("urn:oid:2.25.").unwrap_or_default();
        if digits.is_empty()
            || !digits.chars().all(|c| c.is_ascii_digit())
            || digits.starts_with('0')
        {
            problems.push(format!("{name}: DICOM UID {uid}"));
        }
    }
    for resource in courses.iter().chain(&phases) {
        if resource["intent"] != intent || resource["status"] != "draft" {
            problems.push(format!("{name}: intent/status {}", resource["intent"]));
        }
        let has_profile = resource.get("meta").is_some();
        if has_profile != (intent == "original-order") {
            problems.push(format!("{name}: meta.profile present = {has_profile}"));
        }
    }
    // Course: the full-dose volume's total is the plan's total, in cGy, with the plan's EQD2.
    let course = courses[0];
    let doses = extensions(course, "codexrt-radiotherapy-dose-prescribed-to-volume");
    let full = doses.last().copied().unwrap_or(&Value::Null);
    let total = sub(full, "totalDose")
        .first()
        .and_then(|t| t["valueQuantity"]["value"].as_f64());
    if total != Some(cgy(prescription.total_dose_gy)) {
        problems.push(format!(
            "{name}: course total {total:?} for {} Gy",
            prescription.total_dose_gy
        ));
    }
    let metrics: Vec<f64> = sub(
        full,
        "http://hl7.org/fhir/us/codex-radiation-therapy/StructureDefinition/codexrt-radiobiologic-metric",
    )
    .iter()
    .filter_map(|m| m["valueQuantity"]["value"].as_f64())
    .collect();
    if metrics != [prescription.eqd2_tumor_gy, prescription.eqd2_late_gy] {
        problems.push(format!("{name}: EQD2 {metrics:?}"));
    }
    if doses.iter().any(|d| !sub(d, "fractionDose").is_empty()) {
        problems.push(format!("{name}: fractionDose at course level"));
    }
    let chemo = !extensions(course, "vlms-rt-concurrent-therapy").is_empty();
    let want_chemo = prescription.concurrent_chemotherapy
        || plan.setting() == pb::Setting::NeoadjuvantChemoradiation;
    if chemo != want_chemo {
        problems.push(format!("{name}: concurrent chemotherapy {chemo}"));
    }
    if extensions(course, "vlms-rt-oar-constraint").len() != plan.organ_constraints.len() {
        problems.push(format!("{name}: OAR constraint count"));
    }
    let setting_codes: Vec<&str> = extensions(course, "vlms-rt-setting")
        .first()
        .and_then(|e| e["valueCodeableConcept"]["coding"].as_array())
        .map(|c| c.iter().filter_map(|c| c["code"].as_str()).collect())
        .unwrap_or_default();
    let want_snomed = if plan.setting() == pb::Setting::Postoperative {
        "373846009"
    } else {
        "373847000"
    };
    if setting_codes.get(1) != Some(&want_snomed) {
        problems.push(format!("{name}: setting codes {setting_codes:?}"));
    }
    // Phases: one per phase, in order, each with its own cGy dose and fractions.
    for (phase, resource) in prescription.phases.iter().zip(&phases) {
        let fractions = extensions(resource, "codexrt-radiotherapy-fractions-prescribed");
        if fractions.len() != 1 || fractions[0]["valuePositiveInt"] != phase.fractions {
            problems.push(format!("{name}: phase fractions"));
        }
        let kind = extensions(resource, "vlms-rt-phase-kind");
        let want_kind = if phase.kind() == pb::PhaseKind::Boost {
            "boost"
        } else {
            "initial"
        };
        if kind.len() != 1 || kind[0]["valueCode"] != want_kind {
            problems.push(format!("{name}: phase kind"));
        }
        let doses = extensions(resource, "codexrt-radiotherapy-dose-prescribed-to-volume");
        let want_targets = if phase.kind() == pb::PhaseKind::Boost {
            1
        } else {
            want_volumes
        };
        if doses.len() != want_targets {
            problems.push(format!(
                "{name}: phase prescribes to {} volumes",
                doses.len()
            ));
        }
        for dose in doses {
            let value = |url| {
                sub(dose, url)
                    .first()
                    .and_then(|q| q["valueQuantity"]["value"].as_f64())
            };
            if value("fractionDose") != Some(cgy(phase.dose_per_fraction_gy))
                || value("totalDose") != Some(cgy(phase.dose_gy))
            {
                problems.push(format!("{name}: phase doses {dose}"));
            }
            if !sub(dose, "fractions").is_empty() {
                problems.push(format!("{name}: fractions in a phase"));
            }
        }
    }
}

#[test]
fn codex_suggestions_and_bundle_for_every_plan_vignette() {
    let out = std::env::var_os("VLMS_RT_CDS_OUT").map(std::path::PathBuf::from);
    let mut problems = Vec::new();
    let mut with_options = 0;
    for (name, plan) in plans() {
        let mut ids = Counter(0);
        let (suggestions, options) =
            codex::plan_suggestions(&plan, &naming(), &subject(), &mut ids);
        let used = [
            String::from("Observation/obs-size"),
            String::from("Procedure/proc-ivc-resection"),
        ];
        let bundle = codex::bundle(
            Some(&plan),
            &naming(),
            &subject(),
            "6f1c2f3e-4b9a-4d7e-9a59-2b0f8c7d1e44",
            "2026-11-26T09:12:04+01:00",
            &used,
            None,
            &mut ids,
        );

        // Suggestions: one per option, preferred first, `isRecommended` only where §3.1 allows.
        if suggestions.len() != plan.prescriptions.len() || options.len() != suggestions.len() {
            problems.push(format!("{name}: {} suggestions", suggestions.len()));
            continue;
        }
        if !plan.prescriptions.is_empty() {
            with_options += 1;
        }
        let recommendable = matches!(
            plan.indication(),
            pb::Indication::Indicated | pb::Indication::Mandatory
        );
        for ((suggestion, option), prescription) in
            suggestions.iter().zip(&options).zip(&plan.prescriptions)
        {
            if suggestion["uuid"] != option.uuid.to_string() || option.label != prescription.label {
                problems.push(format!("{name}: option mapping"));
            }
            match suggestion.get("isRecommended") {
                None if !(recommendable && prescription.preferred) => {}
                Some(Value::Bool(true)) if recommendable && prescription.preferred => {}
                other => problems.push(format!("{name}: isRecommended {other:?}")),
            }
            let actions = suggestion["actions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if actions
                .iter()
                .any(|a| a["type"] != "create" || a["description"].as_str().is_none())
            {
                problems.push(format!("{name}: an action is not a described create"));
            }
            let resources: Vec<&Value> = actions.iter().map(|a| &a["resource"]).collect();
            check_option(
                &name,
                &plan,
                prescription,
                &resources,
                "original-order",
                &mut problems,
            );
            // Relative references inside a suggestion resolve to its own resources.
            let ids: HashSet<String> = resources
                .iter()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r["resourceType"].as_str().unwrap_or_default(),
                        r["id"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            let text = serde_json::to_string(&resources).unwrap_or_default();
            for reference in text.split("\"reference\":\"").skip(1) {
                let reference = reference.split('"').next().unwrap_or_default();
                if reference.contains("vlmsrt-") && !ids.contains(reference) {
                    problems.push(format!("{name}: dangling {reference}"));
                }
            }
        }
        let mut found = Vec::new();
        for (index, suggestion) in suggestions.iter().enumerate() {
            empties(suggestion, &format!("suggestions[{index}]"), &mut found);
        }
        empties(&bundle, "bundle", &mut found);
        problems.extend(found.into_iter().map(|f| format!("{name}: {f}")));

        // Bundle: the options again with `intent = option`, an issue per alert, every internal
        // reference resolvable, every fullUrl unique.
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        let urls: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["fullUrl"].as_str())
            .collect();
        if urls.iter().collect::<HashSet<_>>().len() != urls.len() {
            problems.push(format!("{name}: duplicate fullUrl"));
        }
        let text = bundle.to_string();
        for reference in text.split("\"reference\":\"urn:uuid:").skip(1) {
            let reference = format!(
                "urn:uuid:{}",
                reference.split('"').next().unwrap_or_default()
            );
            if !urls.contains(&reference.as_str()) {
                problems.push(format!("{name}: dangling {reference}"));
            }
        }
        let of_type = |kind: &str| -> Vec<&Value> {
            entries
                .iter()
                .map(|e| &e["resource"])
                .filter(|r| r["resourceType"] == kind)
                .collect()
        };
        let guidance = of_type("GuidanceResponse");
        if guidance.len() != 1 || guidance[0]["status"] != "success" {
            problems.push(format!("{name}: GuidanceResponse"));
        }
        let group = of_type("RequestGroup");
        let group_options = group
            .first()
            .and_then(|g| g["action"][0]["action"].as_array())
            .map_or(0, Vec::len);
        if group.len() != 1 || group_options != plan.prescriptions.len() {
            problems.push(format!("{name}: RequestGroup with {group_options} options"));
        }
        if of_type("DetectedIssue").len() != plan.alerts.len() {
            problems.push(format!("{name}: DetectedIssue count"));
        }
        let resources: Vec<&Value> = entries.iter().map(|e| &e["resource"]).collect();
        let mut start = 0;
        for prescription in plan
            .prescriptions
            .iter()
            .filter(|p| p.preferred)
            .chain(plan.prescriptions.iter().filter(|p| !p.preferred))
        {
            let boosted = prescription
                .phases
                .iter()
                .any(|phase| phase.kind() == pb::PhaseKind::Boost);
            let count = usize::from(boosted) + 2 + prescription.phases.len();
            let first = resources
                .iter()
                .skip(start)
                .position(|r| r["resourceType"] == "BodyStructure")
                .map_or(resources.len(), |at| at + start);
            let slice = resources.get(first..first + count).unwrap_or_default();
            check_option(&name, &plan, prescription, slice, "option", &mut problems);
            start = first + count;
        }

        if let Some(dir) = &out {
            let mut card = json!({
                "uuid": uuid::Uuid::from_u128(0xcafe).to_string(),
                "summary": "x",
                "indicator": "info",
                "source": {"label": "vlms-rt"},
            });
            // A card without options has neither `suggestions` nor `selectionBehavior`.
            if !suggestions.is_empty() {
                card["suggestions"] = Value::Array(suggestions.clone());
                card["selectionBehavior"] = json!("at-most-one");
            }
            let response = json!({"cards": [card]});
            let write = |suffix: &str, value: &Value| {
                let path = dir.join(format!("{name}.{suffix}.json"));
                std::fs::write(
                    &path,
                    serde_json::to_string_pretty(value).unwrap_or_default(),
                )
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            };
            write("response", &response);
            write("bundle", &bundle);
        }
    }
    assert!(with_options >= 10, "only {with_options} plans with options");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn codex_bundle_when_data_are_required_has_no_result() {
    let missing = [
        (
            String::from("resection.hematoma_present"),
            String::from(
                "Observation https://vlms-rt.example.org/fhir/CodeSystem/vlms-rt-case|postoperative-hematoma dated on/after 2026-10-27",
            ),
        ),
        (
            String::from("resection.periaortic_dissection"),
            String::from("Procedure.extension vlms-rt-periaortic-dissection"),
        ),
    ];
    let bundle = codex::bundle(
        None,
        &naming(),
        &subject(),
        "9b2e7a10-2c4d-4f8e-8c1b-5e6f7a8b9c0d",
        "2026-11-26T09:12:04+01:00",
        &[String::from("Condition/cond-lms-ivc")],
        Some(&missing),
        &mut Counter(0),
    );
    let mut found = Vec::new();
    empties(&bundle, "bundle", &mut found);
    assert!(found.is_empty(), "{found:?}");
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect();
    assert_eq!(kinds, ["GuidanceResponse", "Device", "Provenance"]);
    let guidance = &entries[0]["resource"];
    assert_eq!(guidance["status"], "data-required");
    assert!(guidance.get("result").is_none());
    let requirements = guidance["dataRequirement"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(requirements.len(), 2);
    assert_eq!(requirements[0]["type"], "Observation");
    assert_eq!(
        requirements[0]["codeFilter"][0]["code"][0]["code"],
        "postoperative-hematoma"
    );
    assert_eq!(requirements[1]["type"], "Procedure");
    // The Condition is listed once although it was also passed as used.
    assert_eq!(
        guidance["reasonReference"].as_array().map(Vec::len),
        Some(1)
    );
    if let Some(dir) = std::env::var_os("VLMS_RT_CDS_OUT").map(std::path::PathBuf::from) {
        let path = dir.join("data-required.bundle.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&bundle).unwrap_or_default(),
        )
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    }
}
