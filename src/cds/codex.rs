//! A plan as CodeX Radiation Therapy resources: the plan card's `suggestions` (CDS Hooks) and the
//! FHIR R4 Bundle form (docs: ehr-integration.md §3.1, §3.2 and §3.5).
//!
//! Pure: no I/O, no clock, no randomness except through [`Ids`]. Every number comes from the plan;
//! nothing clinical is computed here beyond unit changes (Gy → cGy) and sums of the plan's own
//! phase doses for the per-volume course totals of a boost.
//!
//! Two forms of the same option resources:
//! - **suggestion form** (§3.2): temporary ids `vlmsrt-<uuid>`, relative references to each other
//!   and to the EHR's data, `intent = original-order`, CodeX `meta.profile` on the prescriptions;
//! - **Bundle form** (§3.5): `urn:uuid:` fullUrls, EHR data referenced absolutely (when the EHR's
//!   FHIR base is known), `intent = option` and no CodeX profile claim on the prescriptions.
//!
//! FHIR JSON forbids empty strings, arrays and objects, and `null`: every resource goes through
//! [`prune`] before it leaves this module, so an absent plan field leaves its element out.

use serde_json::{Map, Number, Value, json};

use crate::pb;

/// Names the site configures (the design's example.org names are placeholders).
pub struct Naming {
    /// e.g. "https://vlms-rt.example.org": guideline pages are {site}/guideline/{version},
    /// recommendation pages {site}/recommendations/{id}, FHIR canonicals {site}/fhir/...
    pub site: String,
}

/// What the EHR request says about the patient and user.
pub struct Subject {
    /// `context.patientId`.
    pub patient_id: String,
    /// The primary Condition's id.
    pub condition_id: String,
    /// `context.userId`, e.g. "PractitionerRole/pr-radonc-7".
    pub user_id: Option<String>,
    /// `context.encounterId`.
    pub encounter_id: Option<String>,
    /// Absolute base of the EHR's FHIR server, for Bundle references.
    pub fhir_server: Option<String>,
    /// The tumour site coding used as bodySite for preoperative courses: (system, code, display).
    pub tumour_site: (String, String, String),
}

/// A source of fresh identifiers (UUIDs): tests pass a deterministic one.
pub trait Ids {
    /// A fresh UUID, never returned before.
    fn uuid(&mut self) -> uuid::Uuid;
}

/// [`Ids`] from random (version 4) UUIDs.
pub struct RandomIds;

impl Ids for RandomIds {
    fn uuid(&mut self) -> uuid::Uuid {
        uuid::Uuid::new_v4()
    }
}

/// One suggestion of the plan card, for the feedback mapping (§3.3: accepting the preferred option
/// is ACCEPTED, accepting another is MODIFIED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuggestedOption {
    /// The suggestion's `uuid`.
    pub uuid: uuid::Uuid,
    /// The prescription's label.
    pub label: String,
    /// Whether this is the guideline-preferred option.
    pub preferred: bool,
}

const CODEX: &str = "http://hl7.org/fhir/us/codex-radiation-therapy/StructureDefinition/";
const MCODE: &str = "http://hl7.org/fhir/us/mcode/StructureDefinition/";
const SCT: &str = "http://snomed.info/sct";
const UCUM: &str = "http://unitsofmeasure.org";
const TG263: &str = "http://hl7.org/fhir/us/mcode/CodeSystem/tg263-cs";

/// The plan card's `suggestions` array (§3.1/§3.2): one per prescription option, preferred first,
/// CodeX RadiotherapyVolume(s) + RadiotherapyCoursePrescription + one RadiotherapyPhasePrescription
/// per phase, `intent = original-order`, `status = draft`. `isRecommended: true` only on the
/// preferred option and only when the indication is INDICATED or MANDATORY (key omitted
/// otherwise). Empty when the plan has no prescriptions. Each suggestion's uuid comes from `ids`.
///
/// Also returns, per suggestion in the same order, its uuid, label and whether it is preferred, so
/// the caller can store the mapping for feedback.
pub fn plan_suggestions(
    plan: &pb::Plan,
    naming: &Naming,
    subject: &Subject,
    ids: &mut dyn Ids,
) -> (Vec<Value>, Vec<SuggestedOption>) {
    let names = Names::new(naming);
    let refs = Refs::Relative;
    let recommendable = matches!(
        plan.indication(),
        pb::Indication::Indicated | pb::Indication::Mandatory
    );
    let mut suggestions = Vec::new();
    let mut options = Vec::new();
    let mut recommended_given = false;
    for prescription in options_in_order(plan) {
        let suggestion_uuid = ids.uuid();
        let resources = option_resources(plan, prescription, &names, subject, &refs, ids);
        let role = if prescription.preferred {
            "guideline-preferred"
        } else {
            "alternative"
        };
        let label = option_label(prescription);
        let mut actions = volume_creates(&resources, "");
        actions.push(json!({
            "type": "create",
            "description": format!(
                "Create draft course prescription {} Gy (CodeX RadiotherapyCoursePrescription)",
                number_text(prescription.total_dose_gy)
            ),
            "resource": prune(resources.course.clone()),
        }));
        for (phase, resource) in prescription.phases.iter().zip(&resources.phases) {
            actions.push(json!({
                "type": "create",
                "description": format!(
                    "Create draft phase prescription {} (CodeX RadiotherapyPhasePrescription)",
                    phase_schedule(phase)
                ),
                "resource": prune(resource.resource.clone()),
            }));
        }
        let mut suggestion = Map::new();
        suggestion.insert(
            "label".into(),
            json!(format!("Draft order: {label} ({role})")),
        );
        suggestion.insert("uuid".into(), json!(suggestion_uuid.to_string()));
        // At most one suggestion may be recommended under `at-most-one`, even if a malformed plan
        // marked two options preferred. `false` is never written (§5.2: FHIRPath engines count it).
        if recommendable && prescription.preferred && !recommended_given {
            suggestion.insert("isRecommended".into(), json!(true));
            recommended_given = true;
        }
        suggestion.insert("actions".into(), Value::Array(actions));
        suggestions.push(prune(Value::Object(suggestion)));
        options.push(SuggestedOption {
            uuid: suggestion_uuid,
            label: prescription.label.clone(),
            preferred: prescription.preferred,
        });
    }
    (suggestions, options)
}

/// The rx-check card's "Replace with guideline-preferred …" suggestion (§3.4), or None when the
/// plan has no preferred option. `draft_orders` is the request's context.draftOrders Bundle;
/// `course` / `phase_refs` name the checked draft course and its phases ("ServiceRequest/<id>",
/// phases in initial-then-boost order).
///
/// Actions, in order: a `delete` (by `resourceId`) of each draft phase beyond the preferred
/// option's phase count; a `create` of the preferred option's target volume(s); an `update` of the
/// draft course and of each kept draft phase, rewritten to the preferred option's CodeX content
/// but keeping the draft's `id` and `identifier` (and its `subject`, `requester` and
/// `reasonReference` when it has them), the phases `basedOn` the draft course; a `create` of each
/// preferred phase the draft lacks. Phases are paired by position.
///
/// Also None when the draft course or one of its phases cannot be found exactly once, by id, among
/// the draft orders: a suggestion that updates or deletes orders it cannot name is not offered.
pub fn replace_suggestion(
    plan: &pb::Plan,
    draft_orders: &Value,
    course: &str,
    phase_refs: &[String],
    naming: &Naming,
    subject: &Subject,
    ids: &mut dyn Ids,
) -> Option<(Value, SuggestedOption)> {
    let preferred = options_in_order(plan)
        .into_iter()
        .find(|prescription| prescription.preferred)?;
    let draft_course = draft_request(draft_orders, course)?;
    let draft_phases: Vec<&Map<String, Value>> = phase_refs
        .iter()
        .map(|reference| draft_request(draft_orders, reference))
        .collect::<Option<_>>()?;
    let names = Names::new(naming);
    let suggestion_uuid = ids.uuid();
    let resources = option_resources(plan, preferred, &names, subject, &Refs::Relative, ids);
    let label = option_label(preferred);
    let kind_url = names.extension("vlms-rt-phase-kind");
    let preferred_boosted = preferred.phases.iter().any(is_boost);
    let preferred_count = preferred.phases.len();

    let mut actions = Vec::new();
    for (reference, draft) in phase_refs.iter().zip(&draft_phases).skip(preferred_count) {
        let stated_kind = draft
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|extension| extension.get("url").and_then(Value::as_str) == Some(&kind_url))
            .find_map(|extension| extension.get("valueCode").and_then(Value::as_str));
        let description = match stated_kind {
            Some("boost") if !preferred_boosted => format!(
                "Remove the draft boost phase {reference} (the guideline-preferred option has no boost)"
            ),
            _ => format!(
                "Remove the draft phase {reference} (the guideline-preferred option has {preferred_count} phase{})",
                if preferred_count == 1 { "" } else { "s" }
            ),
        };
        actions
            .push(json!({"type": "delete", "resourceId": reference, "description": description}));
    }
    actions.extend(volume_creates(
        &resources,
        " for the guideline-preferred option",
    ));
    actions.push(json!({
        "type": "update",
        "description": format!(
            "Update the draft course prescription {course} to the guideline-preferred {} Gy (CodeX RadiotherapyCoursePrescription)",
            number_text(preferred.total_dose_gy)
        ),
        "resource": keep_draft(resources.course.clone(), draft_course),
    }));
    let based_on = json!([{"reference": course}]);
    for (index, (phase, generated)) in preferred.phases.iter().zip(&resources.phases).enumerate() {
        let kind = match phase.kind() {
            pb::PhaseKind::Initial => "initial phase",
            pb::PhaseKind::Boost => "boost phase",
            pb::PhaseKind::Unspecified => "phase",
        };
        let mut resource = generated.resource.clone();
        if let Some(members) = resource.as_object_mut() {
            members.insert("basedOn".into(), based_on.clone());
        }
        match (phase_refs.get(index), draft_phases.get(index)) {
            (Some(reference), Some(draft)) => actions.push(json!({
                "type": "update",
                "description": format!(
                    "Update the draft phase {reference} to the guideline-preferred {kind} {} (CodeX RadiotherapyPhasePrescription)",
                    phase_schedule(phase)
                ),
                "resource": keep_draft(resource, draft),
            })),
            _ => actions.push(json!({
                "type": "create",
                "description": format!(
                    "Create the guideline-preferred {kind} {} of the draft course {course} (CodeX RadiotherapyPhasePrescription)",
                    phase_schedule(phase)
                ),
                "resource": prune(resource),
            })),
        }
    }
    let suggestion = prune(json!({
        "label": format!("Replace with guideline-preferred {label}"),
        "uuid": suggestion_uuid.to_string(),
        "actions": actions,
    }));
    Some((
        suggestion,
        SuggestedOption {
            uuid: suggestion_uuid,
            label: preferred.label.clone(),
            preferred: true,
        },
    ))
}

/// The draft `ServiceRequest` a reference "ServiceRequest/<id>" names, when exactly one entry of
/// the draft orders has that id.
fn draft_request<'a>(draft_orders: &'a Value, reference: &str) -> Option<&'a Map<String, Value>> {
    let id = reference
        .strip_prefix("ServiceRequest/")
        .filter(|id| !id.is_empty())?;
    let mut found = draft_orders
        .get("entry")?
        .as_array()?
        .iter()
        .filter_map(|entry| entry.get("resource").and_then(Value::as_object))
        .filter(|resource| {
            resource.get("resourceType").and_then(Value::as_str) == Some("ServiceRequest")
                && resource.get("id").and_then(Value::as_str) == Some(id)
        });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The preferred option's resource as an update of a draft: the draft's `id` and `identifier`,
/// and what the clinician set that the guideline does not decide (`subject`, `requester`,
/// `reasonReference`, `encounter`, `note`, the planned start `occurrence[x]`) when it has them
/// (each only if it is still of the right JSON type and non-empty once pruned; the generated one
/// stays otherwise).
fn keep_draft(mut resource: Value, draft: &Map<String, Value>) -> Value {
    if let Some(members) = resource.as_object_mut() {
        for key in [
            "id",
            "identifier",
            "subject",
            "requester",
            "reasonReference",
            "encounter",
            "note",
            "occurrenceDateTime",
            "occurrencePeriod",
        ] {
            let Some(value) = draft.get(key).cloned().map(prune) else {
                continue;
            };
            let fits = match (key, &value) {
                ("id", Value::String(id)) => !id.is_empty(),
                ("identifier" | "reasonReference" | "note", Value::Array(items)) => {
                    !items.is_empty()
                }
                (
                    "subject" | "requester" | "encounter" | "occurrencePeriod",
                    Value::Object(members),
                ) => !members.is_empty(),
                ("occurrenceDateTime", Value::String(text)) => !text.is_empty(),
                _ => false,
            };
            if fits {
                members.insert(key.into(), value);
            }
        }
    }
    prune(resource)
}

/// The FHIR R4 Bundle form (§3.5): `Bundle.type = collection` with GuidanceResponse,
/// RequestGroup, per-option RadiotherapyVolume + course + phase ServiceRequests with
/// `intent = option` (no CodeX `meta.profile`), a DetectedIssue per alert, Device and Provenance.
///
/// `hook_instance` gives `requestIdentifier`; `evaluated_at` (an RFC 3339 instant) the
/// occurrence, authoring and recording times; `ehr_resources_used` are relative references such as
/// "Observation/obs-size" (absolutized with `subject.fhir_server` when given). With
/// `data_required` (case field path, what satisfies it) the GuidanceResponse has status
/// `data-required` and one `dataRequirement` per entry, and there is no RequestGroup, no option
/// and no DetectedIssue (a plan passed alongside is then ignored except for its guideline).
/// Without a plan and without `data_required` the status is `failure`.
#[allow(clippy::too_many_arguments)] // one argument per part of §3.5's Bundle
pub fn bundle(
    plan: Option<&pb::Plan>,
    naming: &Naming,
    subject: &Subject,
    hook_instance: &str,
    evaluated_at: &str,
    ehr_resources_used: &[String],
    data_required: Option<&[(String, String)]>,
    ids: &mut dyn Ids,
) -> Value {
    let names = Names::new(naming);
    let refs = Refs::Absolute(subject.fhir_server.clone());
    let guideline = plan.and_then(|plan| plan.guideline.as_ref());
    let version = guideline.map(|guideline| guideline.version.as_str());
    let canonical = names.plan_definition(version);
    let recommendation_id = plan
        .map(|plan| plan.recommendation_id.as_str())
        .filter(|id| !id.is_empty() && data_required.is_none());

    let device_uuid = ids.uuid();
    let device_url = urn(device_uuid);
    let guidance_uuid = ids.uuid();
    let guidance_url = urn(guidance_uuid);

    let mut entries: Vec<(String, Value)> = Vec::new();
    let mut generated: Vec<String> = vec![guidance_url.clone()];

    // The plan's own resources: only when there is a plan and nothing blocks it.
    let usable_plan = plan.filter(|_| data_required.is_none());
    let mut request_group: Option<(String, Value)> = None;
    let mut option_entries: Vec<(String, Value)> = Vec::new();
    let mut issue_entries: Vec<(String, Value)> = Vec::new();
    if let Some(plan) = usable_plan {
        let group_uuid = ids.uuid();
        let group_url = urn(group_uuid);
        let mut option_actions = Vec::new();
        for prescription in options_in_order(plan) {
            let resources = option_resources(plan, prescription, &names, subject, &refs, ids);
            for volume in resources.volumes {
                option_entries.push((volume.full_url, volume.resource));
            }
            option_actions.push(option_action(
                plan,
                prescription,
                &names,
                &resources.course_full_url,
            ));
            option_entries.push((resources.course_full_url, resources.course));
            for phase in resources.phases {
                option_entries.push((phase.full_url, phase.resource));
            }
        }
        for alert in &plan.alerts {
            let issue_uuid = ids.uuid();
            issue_entries.push((
                urn(issue_uuid),
                detected_issue(
                    alert,
                    issue_uuid,
                    &names,
                    version,
                    subject,
                    &refs,
                    evaluated_at,
                    &device_url,
                ),
            ));
        }
        let mut group = json!({
            "resourceType": "RequestGroup",
            "id": resource_id(recommendation_id, group_uuid),
            "instantiatesCanonical": [canonical],
            "status": "draft",
            "intent": "proposal",
            "subject": {"reference": refs.ehr(&format!("Patient/{}", subject.patient_id))},
            "encounter": subject.encounter_id.as_ref().map(|id| json!({"reference": refs.ehr(&format!("Encounter/{id}"))})),
            "authoredOn": evaluated_at,
            "author": {"reference": device_url},
            "reasonReference": [{"reference": refs.ehr(&format!("Condition/{}", subject.condition_id))}],
        });
        // FHIR JSON forbids an empty `action`: a plan without options has none (§3.5).
        if !option_actions.is_empty() {
            group["action"] = json!([{
                "title": group_title(plan),
                "groupingBehavior": "logical-group",
                "selectionBehavior": "at-most-one",
                "documentation": version.map(|version| json!([{
                    "type": "documentation",
                    "label": format!("vlms-rt guideline {version}"),
                    "url": names.guideline_page(version),
                }])),
                "action": option_actions,
            }]);
        }
        request_group = Some((group_url, group));
    }

    // GuidanceResponse.
    let mut guidance = Map::new();
    guidance.insert("resourceType".into(), json!("GuidanceResponse"));
    guidance.insert(
        "id".into(),
        json!(resource_id(recommendation_id, guidance_uuid)),
    );
    if let Some(plan) = usable_plan {
        let issue_urls: Vec<&str> = issue_entries.iter().map(|(url, _)| url.as_str()).collect();
        guidance.insert(
            "contained".into(),
            json!([output_parameters(plan, &names, &issue_urls)]),
        );
    }
    guidance.insert(
        "requestIdentifier".into(),
        json!({"system": "urn:ietf:rfc:3986", "value": uuid_urn_text(hook_instance)}),
    );
    if let Some(id) = recommendation_id {
        guidance.insert(
            "identifier".into(),
            json!([{"system": names.naming_system("recommendation-id"), "value": id}]),
        );
    }
    guidance.insert("moduleCanonical".into(), json!(canonical));
    let status = if data_required.is_some() {
        "data-required"
    } else if usable_plan.is_some() {
        "success"
    } else {
        "failure"
    };
    guidance.insert("status".into(), json!(status));
    guidance.insert(
        "subject".into(),
        json!({"reference": refs.ehr(&format!("Patient/{}", subject.patient_id))}),
    );
    if let Some(encounter) = &subject.encounter_id {
        guidance.insert(
            "encounter".into(),
            json!({"reference": refs.ehr(&format!("Encounter/{encounter}"))}),
        );
    }
    guidance.insert("occurrenceDateTime".into(), json!(evaluated_at));
    guidance.insert("performer".into(), json!({"reference": device_url}));
    let sources = ehr_sources(subject, ehr_resources_used, &refs);
    guidance.insert(
        "reasonReference".into(),
        Value::Array(
            sources
                .iter()
                .map(|reference| json!({"reference": reference}))
                .collect(),
        ),
    );
    if let Some(plan) = plan.filter(|plan| !plan.disclaimer.is_empty()) {
        guidance.insert("note".into(), json!([{"text": plan.disclaimer}]));
    }
    if usable_plan.is_some() {
        guidance.insert("outputParameters".into(), json!({"reference": "#output"}));
    }
    if let Some(required) = data_required {
        guidance.insert(
            "dataRequirement".into(),
            Value::Array(
                required
                    .iter()
                    .map(|(field, need)| data_requirement(field, need, &names))
                    .collect(),
            ),
        );
    }
    if let Some((group_url, _)) = &request_group {
        guidance.insert("result".into(), json!({"reference": group_url}));
    }
    entries.push((guidance_url, Value::Object(guidance)));
    if let Some((url, group)) = request_group {
        generated.push(url.clone());
        entries.push((url, group));
    }
    for (url, resource) in option_entries.into_iter().chain(issue_entries) {
        generated.push(url.clone());
        entries.push((url, resource));
    }
    entries.push((device_url.clone(), device(version, &names)));

    // Provenance: what was generated, from which guideline, from which EHR data.
    let provenance_uuid = ids.uuid();
    let mut entity = Vec::new();
    if let Some(guideline) = guideline.filter(|guideline| !guideline.sha256.is_empty()) {
        entity.push(json!({
            "role": "source",
            "what": {
                "identifier": {
                    "system": names.naming_system("guideline-profile-sha256"),
                    "value": guideline.sha256,
                },
                "display": format!("vlms-rt guideline profile {} (SHA-256 of the profile file)", guideline.version),
            },
        }));
    }
    for reference in &sources {
        entity.push(json!({"role": "source", "what": {"reference": reference}}));
    }
    let provenance = json!({
        "resourceType": "Provenance",
        "id": format!("vlmsrt-{provenance_uuid}"),
        "target": generated.iter().map(|url| json!({"reference": url})).collect::<Vec<_>>(),
        "recorded": evaluated_at,
        "policy": [canonical],
        "activity": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
            "code": "CREATE",
            "display": "create",
        }]},
        "agent": [{
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "code": "assembler",
                "display": "Assembler",
            }]},
            "who": {"reference": device_url},
        }],
        "entity": entity,
    });
    entries.push((urn(provenance_uuid), provenance));

    let bundle_uuid = ids.uuid();
    prune(json!({
        "resourceType": "Bundle",
        "id": resource_id(recommendation_id, bundle_uuid),
        "identifier": recommendation_id.map(|id| json!({"system": names.naming_system("recommendation-id"), "value": id})),
        "type": "collection",
        "timestamp": evaluated_at,
        "entry": entries
            .into_iter()
            .map(|(full_url, resource)| json!({"fullUrl": full_url, "resource": resource}))
            .collect::<Vec<_>>(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Names and references
// ---------------------------------------------------------------------------------------------

/// The site's URLs.
struct Names {
    site: String,
}

impl Names {
    fn new(naming: &Naming) -> Names {
        Names {
            site: naming.site.trim_end_matches('/').to_string(),
        }
    }
    fn guideline_page(&self, version: &str) -> String {
        format!("{}/guideline/{version}", self.site)
    }
    fn fhir(&self, kind: &str, name: &str) -> String {
        format!("{}/fhir/{kind}/{name}", self.site)
    }
    fn extension(&self, name: &str) -> String {
        self.fhir("StructureDefinition", name)
    }
    fn code_system(&self, name: &str) -> String {
        self.fhir("CodeSystem", name)
    }
    fn naming_system(&self, name: &str) -> String {
        self.fhir("NamingSystem", name)
    }
    /// The guideline's PlanDefinition canonical, versioned when the version is known.
    fn plan_definition(&self, version: Option<&str>) -> String {
        let base = self.fhir("PlanDefinition", "vlms-rt-venous-lms");
        match version.filter(|version| !version.is_empty()) {
            Some(version) => format!("{base}|{version}"),
            None => base,
        }
    }
}

/// How resources point at each other and at the EHR's data.
enum Refs {
    /// Suggestion form: `Type/id` for both (the EHR resolves them against its own base).
    Relative,
    /// Bundle form: `urn:uuid:` between generated resources; EHR data absolute under this base
    /// (relative when the base is unknown).
    Absolute(Option<String>),
}

impl Refs {
    /// A reference to an EHR resource given relatively ("Patient/pat-1"). Already absolute
    /// references are kept as they are.
    fn ehr(&self, relative: &str) -> String {
        match self {
            Refs::Absolute(Some(base)) if !is_absolute(relative) => {
                format!("{}/{}", base.trim_end_matches('/'), relative)
            }
            _ => relative.to_string(),
        }
    }
    /// A generated resource: its `id` and how the others reference it.
    fn generated(&self, kind: &str, uuid: uuid::Uuid) -> (String, String) {
        let id = format!("vlmsrt-{uuid}");
        let reference = match self {
            Refs::Relative => format!("{kind}/{id}"),
            Refs::Absolute(_) => urn(uuid),
        };
        (id, reference)
    }
    fn bundle_form(&self) -> bool {
        matches!(self, Refs::Absolute(_))
    }
}

fn is_absolute(reference: &str) -> bool {
    reference.contains("://") || reference.starts_with("urn:")
}

fn urn(uuid: uuid::Uuid) -> String {
    format!("urn:uuid:{uuid}")
}

/// `hookInstance` as a URI (it is a UUID in CDS Hooks; kept as is if already a `urn:`).
fn uuid_urn_text(hook_instance: &str) -> String {
    if hook_instance.starts_with("urn:") {
        hook_instance.to_string()
    } else {
        format!("urn:uuid:{hook_instance}")
    }
}

/// `vlmsrt-<recommendation id in lowercase>` (a ULID fits FHIR's id pattern), else from a UUID.
fn resource_id(recommendation_id: Option<&str>, uuid: uuid::Uuid) -> String {
    match recommendation_id.filter(|id| id.chars().all(|c| c.is_ascii_alphanumeric())) {
        Some(id) => format!("vlmsrt-{}", id.to_ascii_lowercase()),
        None => format!("vlmsrt-{uuid}"),
    }
}

/// The Condition, then every EHR resource used, each once.
fn ehr_sources(subject: &Subject, used: &[String], refs: &Refs) -> Vec<String> {
    let mut sources = vec![refs.ehr(&format!("Condition/{}", subject.condition_id))];
    for reference in used.iter().filter(|reference| !reference.is_empty()) {
        let reference = refs.ehr(reference);
        if !sources.contains(&reference) {
            sources.push(reference);
        }
    }
    sources
}

// ---------------------------------------------------------------------------------------------
// One option: volumes, course, phases
// ---------------------------------------------------------------------------------------------

struct Generated {
    name: String,
    full_url: String,
    resource: Value,
}

struct OptionResources {
    volumes: Vec<Generated>,
    course_full_url: String,
    course: Value,
    phases: Vec<Generated>,
}

/// The prescriptions, preferred first (the contract already orders them so; kept stable).
fn options_in_order(plan: &pb::Plan) -> Vec<&pb::Prescription> {
    let mut options: Vec<&pb::Prescription> = plan.prescriptions.iter().collect();
    options.sort_by_key(|prescription| !prescription.preferred);
    options
}

fn option_label(prescription: &pb::Prescription) -> String {
    if prescription.label.is_empty() {
        format!("{} Gy", number_text(prescription.total_dose_gy))
    } else {
        prescription.label.clone()
    }
}

fn is_boost(phase: &pb::Phase) -> bool {
    phase.kind() == pb::PhaseKind::Boost
}

/// The setting's target name (TG-263), location and `vlms-rt-setting` coding.
struct SettingFacts {
    target: &'static str,
    location: Option<Value>,
    setting: Option<Value>,
}

fn setting_facts(plan: &pb::Plan, subject: &Subject, names: &Names) -> SettingFacts {
    let tumour_site = || {
        let (system, code, display) = &subject.tumour_site;
        json!({"coding": [{"system": system, "code": code, "display": display}]})
    };
    let setting = |code: &str, display: &str, snomed: &str, snomed_display: &str| {
        Some(json!({"coding": [
            {"system": names.code_system("vlms-rt-setting"), "code": code, "display": display},
            {"system": SCT, "code": snomed, "display": snomed_display},
        ]}))
    };
    match plan.setting() {
        pb::Setting::Postoperative => SettingFacts {
            target: "PTVsb",
            location: Some(json!({"coding": [{
                "system": SCT, "code": "1162492000", "display": "Tumor bed (morphologic abnormality)",
            }]})),
            setting: setting(
                "postoperative",
                "Postoperative",
                "373846009",
                "Adjuvant - intent",
            ),
        },
        pb::Setting::Preoperative => SettingFacts {
            target: "PTVp",
            location: Some(tumour_site()),
            setting: setting(
                "preoperative",
                "Preoperative",
                "373847000",
                "Neoadjuvant - intent",
            ),
        },
        pb::Setting::NeoadjuvantChemoradiation => SettingFacts {
            target: "PTVp",
            location: Some(tumour_site()),
            setting: setting(
                "neoadjuvant-chemoradiation",
                "Neoadjuvant chemoradiation",
                "373847000",
                "Neoadjuvant - intent",
            ),
        },
        // Not a setting with prescriptions under the contract: name no site and claim no setting.
        pb::Setting::Unspecified | pb::Setting::None => SettingFacts {
            target: "PTV",
            location: None,
            setting: None,
        },
    }
}

fn option_resources(
    plan: &pb::Plan,
    prescription: &pb::Prescription,
    names: &Names,
    subject: &Subject,
    refs: &Refs,
    ids: &mut dyn Ids,
) -> OptionResources {
    let facts = setting_facts(plan, subject, names);
    let boosted = prescription.phases.iter().any(is_boost);
    let label = option_label(prescription);

    // Volumes: one PTV, or `_Low` (everything) and `_High` (initial + boost) with a boost.
    let volume_names: Vec<String> = if boosted {
        vec![
            format!("{}_Low", facts.target),
            format!("{}_High", facts.target),
        ]
    } else {
        vec![facts.target.to_string()]
    };
    let mut volumes = Vec::new();
    let mut volume_refs = Vec::new();
    for (index, name) in volume_names.iter().enumerate() {
        let uuid = ids.uuid();
        let (id, reference) = refs.generated("BodyStructure", uuid);
        let high = boosted && index == 1;
        let resource = volume(plan, name, &id, high, &facts, names, subject, refs, uuid);
        volume_refs.push(json!({"reference": reference, "display": name}));
        volumes.push(Generated {
            name: name.clone(),
            full_url: urn(uuid),
            resource: prune(resource),
        });
    }
    let volume_ref = |index: usize| volume_refs.get(index).cloned();

    // Course.
    let course_uuid = ids.uuid();
    let (course_id, course_ref) = refs.generated("ServiceRequest", course_uuid);
    let mut course_extensions = Vec::new();
    course_extensions.extend(modality_and_technique(prescription));
    let all_fractions: i64 = prescription
        .phases
        .iter()
        .map(|phase| i64::from(phase.fractions))
        .sum();
    if boosted {
        let initial = prescription.phases.iter().filter(|phase| !is_boost(phase));
        let low_total: f64 = initial.clone().map(|phase| phase.dose_gy).sum();
        let low_fractions: i64 = initial.map(|phase| i64::from(phase.fractions)).sum();
        course_extensions.push(course_dose(
            volume_ref(0),
            low_total,
            low_fractions,
            None,
            plan,
        ));
        course_extensions.push(course_dose(
            volume_ref(1),
            prescription.total_dose_gy,
            all_fractions,
            Some(prescription),
            plan,
        ));
    } else {
        course_extensions.push(course_dose(
            volume_ref(0),
            prescription.total_dose_gy,
            all_fractions,
            Some(prescription),
            plan,
        ));
    }
    if let Some(setting) = &facts.setting {
        course_extensions.push(
            json!({"url": names.extension("vlms-rt-setting"), "valueCodeableConcept": setting}),
        );
    }
    if let Some(window) = start_window(plan) {
        course_extensions
            .push(json!({"url": names.extension("vlms-rt-start-window"), "valuePeriod": window}));
    }
    // The profile decides which options carry concurrent chemotherapy; this only writes it.
    if prescription.concurrent_chemotherapy {
        course_extensions.push(json!({
            "url": names.extension("vlms-rt-concurrent-therapy"),
            "valueCodeableConcept": {"coding": [{"system": SCT, "code": "367336001", "display": "Chemotherapy (procedure)"}]},
        }));
    }
    for constraint in &plan.organ_constraints {
        course_extensions.push(oar_constraint(constraint, names));
    }
    let course_official = urn(ids.uuid());
    let mut course = prescription_request(
        "course",
        &course_id,
        &label,
        &course_official,
        plan,
        &facts,
        names,
        subject,
        refs,
    );
    course["extension"] = Value::Array(course_extensions);

    // Phases.
    let mut phases = Vec::new();
    for (index, phase) in prescription.phases.iter().enumerate() {
        let number = index + 1;
        let phase_uuid = ids.uuid();
        let official = urn(ids.uuid());
        let id = format!("{course_id}-p{number}");
        let kind = match phase.kind() {
            pb::PhaseKind::Initial => Some("initial"),
            pb::PhaseKind::Boost => Some("boost"),
            pb::PhaseKind::Unspecified => None,
        };
        let phase_label = match kind {
            Some(kind) => format!("{label} — phase {number} ({kind})"),
            None => format!("{label} — phase {number}"),
        };
        let mut resource = prescription_request(
            "phase",
            &id,
            &phase_label,
            &official,
            plan,
            &facts,
            names,
            subject,
            refs,
        );
        let mut extensions = Vec::new();
        extensions.extend(modality_and_technique(prescription));
        if phase.fractions > 0 {
            extensions.push(json!({
                "url": format!("{CODEX}codexrt-radiotherapy-fractions-prescribed"),
                "valuePositiveInt": phase.fractions,
            }));
        }
        // The initial phase treats every volume; a boost only the `_High` one.
        let targets: Vec<usize> = if boosted && is_boost(phase) {
            vec![1]
        } else {
            (0..volumes.len()).collect()
        };
        for target in targets {
            extensions.push(json!({
                "url": format!("{CODEX}codexrt-radiotherapy-dose-prescribed-to-volume"),
                "extension": [
                    {"url": "volume", "valueReference": volume_ref(target)},
                    {"url": "fractionDose", "valueQuantity": cgy(phase.dose_per_fraction_gy)},
                    {"url": "totalDose", "valueQuantity": cgy(phase.dose_gy)},
                ],
            }));
        }
        if let Some(kind) = kind {
            extensions
                .push(json!({"url": names.extension("vlms-rt-phase-kind"), "valueCode": kind}));
        }
        resource["extension"] = Value::Array(extensions);
        resource["basedOn"] = json!([{"reference": course_ref}]);
        phases.push(Generated {
            name: phase_label,
            full_url: urn(phase_uuid),
            resource: prune(resource),
        });
    }

    OptionResources {
        volumes,
        course_full_url: urn(course_uuid),
        course: prune(course),
        phases,
    }
}

/// CodeX RadiotherapyVolume (BodyStructure).
#[allow(clippy::too_many_arguments)]
fn volume(
    plan: &pb::Plan,
    name: &str,
    id: &str,
    high: bool,
    facts: &SettingFacts,
    names: &Names,
    subject: &Subject,
    refs: &Refs,
    uuid: uuid::Uuid,
) -> Value {
    let guidance: Vec<&pb::VolumeGuidance> = if high {
        Vec::new()
    } else {
        plan.volumes
            .iter()
            .filter(|guidance| !guidance.code.is_empty())
            .collect()
    };
    let extensions: Vec<Value> = guidance
        .iter()
        .map(|guidance| {
            json!({
                "url": names.extension("vlms-rt-volume-guidance"),
                "valueCodeableConcept": {"coding": [{
                    "system": names.code_system("vlms-rt-volume-guidance"),
                    "code": guidance.code,
                    "display": guidance.description,
                }]},
            })
        })
        .collect();
    let texts: Vec<&str> = guidance
        .iter()
        .map(|guidance| guidance.description.trim().trim_end_matches('.'))
        .filter(|text| !text.is_empty())
        .collect();
    let description = if high {
        let low = name.trim_end_matches("_High");
        format!(
            "Boost volume inside {low}_Low: it receives the boost phase on top of the initial phase \
             (its extent is not set by the vlms-rt volume guidance; PTV margins are not set by the guideline)."
        )
    } else if texts.is_empty() {
        "Target volume (no vlms-rt volume guidance in this plan; PTV margins are not set by the guideline).".to_string()
    } else {
        format!(
            "Target must encompass: {} (vlms-rt volume guidance; PTV margins are not set by the guideline).",
            texts.join("; ")
        )
    };
    json!({
        "resourceType": "BodyStructure",
        "id": id,
        "meta": {"profile": [
            format!("{CODEX}codexrt-radiotherapy-volume"),
            format!("{MCODE}mcode-radiotherapy-volume"),
        ]},
        "extension": extensions,
        "identifier": [
            {"use": "usual", "system": names.naming_system("tg263-structure-name"), "value": name},
            {"use": "official", "system": "urn:dicom:uid", "value": dicom_uid(uuid)},
        ],
        "morphology": {"coding": [{
            "system": SCT, "code": "228793007", "display": "Planning target volume (observable entity)",
        }]},
        "location": facts.location,
        "description": description,
        "patient": {"reference": refs.ehr(&format!("Patient/{}", subject.patient_id))},
    })
}

/// A DICOM UID under the UUID-derived root 2.25 (ISO/IEC 9834-8): the UUID as one decimal integer.
fn dicom_uid(uuid: uuid::Uuid) -> String {
    format!("urn:oid:2.25.{}", uuid.as_u128())
}

/// The elements shared by course and phase prescriptions (CodeX RadiotherapyPrescriptionsCommon).
#[allow(clippy::too_many_arguments)]
fn prescription_request(
    which: &str,
    id: &str,
    label: &str,
    official: &str,
    plan: &pb::Plan,
    facts: &SettingFacts,
    names: &Names,
    subject: &Subject,
    refs: &Refs,
) -> Value {
    let (profile, code, display) = if which == "course" {
        (
            "codexrt-radiotherapy-course-prescription",
            "1217123003",
            "Radiotherapy course of treatment (regime/therapy)",
        )
    } else {
        (
            "codexrt-radiotherapy-phase-prescription",
            "1222565005",
            "Radiotherapy treatment phase (regime/therapy)",
        )
    };
    let version = plan
        .guideline
        .as_ref()
        .map(|guideline| guideline.version.as_str())
        .filter(|version| !version.is_empty());
    let bundle_form = refs.bundle_form();
    json!({
        "resourceType": "ServiceRequest",
        "id": id,
        // In the Bundle the options are `intent = option`, which CodeX's fixed `original-order`
        // forbids: no profile is claimed there (§3.5).
        "meta": (!bundle_form).then(|| json!({"profile": [format!("{CODEX}{profile}")]})),
        "identifier": [
            {"use": "usual", "system": names.naming_system("rt-prescription-label"), "value": label},
            {"use": "official", "system": "urn:ietf:rfc:3986", "value": official},
        ],
        "instantiatesUri": version.map(|version| json!([names.guideline_page(version)])),
        "status": "draft",
        "intent": if bundle_form { "option" } else { "original-order" },
        "category": [{"coding": [{"system": SCT, "code": "1287742003", "display": "Radiotherapy (procedure)"}]}],
        "code": {"coding": [{"system": SCT, "code": code, "display": display}]},
        "subject": {"reference": refs.ehr(&format!("Patient/{}", subject.patient_id))},
        "requester": subject.user_id.as_ref().filter(|user| !user.is_empty()).map(|user| json!({"reference": refs.ehr(user)})),
        "reasonReference": [{"reference": refs.ehr(&format!("Condition/{}", subject.condition_id))}],
        "bodySite": facts.location.as_ref().map(|location| json!([location])),
    })
}

/// mCODE modality and technique: IMRT implies photons (invariant TechniquesForPhotonBeamModality).
fn modality_and_technique(prescription: &pb::Prescription) -> Option<Value> {
    match prescription.technique() {
        pb::Technique::Imrt => Some(json!({
            "url": format!("{MCODE}mcode-radiotherapy-modality-and-technique"),
            "extension": [
                {
                    "url": format!("{MCODE}mcode-radiotherapy-modality"),
                    "valueCodeableConcept": {"coding": [{
                        "system": SCT, "code": "1156506007",
                        "display": "External beam radiation therapy using photons (procedure)",
                    }]},
                },
                {
                    "url": format!("{MCODE}mcode-radiotherapy-technique"),
                    "valueCodeableConcept": {"coding": [{
                        "system": SCT, "code": "441799006",
                        "display": "Intensity modulated radiation therapy (procedure)",
                    }]},
                },
            ],
        })),
        pb::Technique::Unspecified => None,
    }
}

/// A course's dose to one volume: total (cGy), fractions, and the plan's EQD2 values when they
/// belong to this volume (the whole prescription's dose).
fn course_dose(
    volume: Option<Value>,
    total_gy: f64,
    fractions: i64,
    eqd2_of: Option<&pb::Prescription>,
    plan: &pb::Plan,
) -> Value {
    let mut parts = vec![
        json!({"url": "volume", "valueReference": volume}),
        json!({"url": "totalDose", "valueQuantity": cgy(total_gy)}),
    ];
    if fractions > 0 {
        parts.push(json!({"url": "fractions", "valuePositiveInt": fractions}));
    }
    if let (Some(prescription), Some(guideline)) = (eqd2_of, plan.guideline.as_ref()) {
        for (value, alpha_beta) in [
            (prescription.eqd2_tumor_gy, guideline.alpha_beta_tumor_gy),
            (prescription.eqd2_late_gy, guideline.alpha_beta_late_gy),
        ] {
            // Unrounded, in Gy; left out when the plan gives no usable value or ratio.
            if value.is_finite() && value > 0.0 && alpha_beta.is_finite() && alpha_beta > 0.0 {
                parts.push(json!({
                    "url": format!("{CODEX}codexrt-radiobiologic-metric"),
                    "valueQuantity": {"value": value, "unit": format!("EQD2Gy(a/b = {})", number_text(alpha_beta))},
                }));
            }
        }
    }
    json!({
        "url": format!("{CODEX}codexrt-radiotherapy-dose-prescribed-to-volume"),
        "extension": parts,
    })
}

/// A dose in Gy as a UCUM cGy Quantity. The value is rounded to 0.01 cGy only to shed binary
/// noise (28 × 1.8 Gy is 50.400000000000006 Gy); whole cGy are written as integers.
fn cgy(gy: f64) -> Value {
    json!({"value": number(gy * 100.0), "unit": "cGy", "system": UCUM, "code": "cGy"})
}

/// A JSON number: an integer when whole, else rounded to two decimals; `null` (pruned) if not finite.
fn number(value: f64) -> Value {
    if !value.is_finite() {
        return Value::Null;
    }
    let rounded = (value * 100.0).round() / 100.0;
    if rounded.fract() == 0.0 && rounded.abs() < 9.0e15 {
        // Whole and far inside i64: the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        let whole = rounded as i64;
        Value::Number(Number::from(whole))
    } else {
        Number::from_f64(rounded).map_or(Value::Null, Value::Number)
    }
}

/// The `create` actions of an option's target volumes; `purpose` ends the description.
fn volume_creates(resources: &OptionResources, purpose: &str) -> Vec<Value> {
    resources
        .volumes
        .iter()
        .map(|volume| {
            json!({
                "type": "create",
                "description": format!("Create target volume {}{purpose} (CodeX RadiotherapyVolume)", volume.name),
                "resource": prune(volume.resource.clone()),
            })
        })
        .collect()
}

/// A number for text, as the cards write doses ("45", "50.4", "1.8").
fn number_text(value: f64) -> String {
    super::cards::gy(value)
}

fn phase_schedule(phase: &pb::Phase) -> String {
    format!(
        "{} Gy × {}",
        number_text(phase.dose_per_fraction_gy),
        phase.fractions
    )
}

/// The start window as a Period, when the plan has one.
fn start_window(plan: &pb::Plan) -> Option<Value> {
    let window = plan.start_window.as_ref()?;
    if window.status() == pb::WindowStatus::NotApplicable
        || window.earliest.is_empty()
        || window.latest.is_empty()
    {
        return None;
    }
    Some(json!({"start": window.earliest, "end": window.latest}))
}

/// `vlms-rt-oar-constraint`: TG-263 structure, metric, `<` limit in UCUM, note, citations.
fn oar_constraint(constraint: &pb::OrganConstraint, names: &Names) -> Value {
    let mut structure = json!({"system": TG263, "code": constraint.structure});
    if let Some(display) = tg263_display(&constraint.structure) {
        structure["display"] = json!(display);
    }
    let mut limit = json!({"comparator": "<", "value": constraint.limit});
    match metric_unit(&constraint.metric) {
        Some((unit, code)) => {
            limit["unit"] = json!(unit);
            limit["system"] = json!(UCUM);
            limit["code"] = json!(code);
        }
        None => {
            // Not a unit this module knows as UCUM: say what the metric says, claim no code.
            if let Some(unit) = metric_bracket(&constraint.metric) {
                limit["unit"] = json!(unit);
            }
        }
    }
    let mut parts = vec![
        json!({"url": "structure", "valueCoding": structure}),
        json!({"url": "metric", "valueString": constraint.metric}),
        json!({"url": "limit", "valueQuantity": limit}),
    ];
    if !constraint.note.is_empty() {
        parts.push(json!({"url": "note", "valueString": constraint.note}));
    }
    for citation in constraint.reference_ids.iter().filter(|id| !id.is_empty()) {
        parts.push(json!({"url": "citation", "valueString": citation}));
    }
    json!({"url": names.extension("vlms-rt-oar-constraint"), "extension": parts})
}

/// The unit in a TG-263 metric's trailing brackets: "V20Gy[%]" → "%".
fn metric_bracket(metric: &str) -> Option<&str> {
    let open = metric.rfind('[')?;
    let unit = metric.get(open + 1..)?.strip_suffix(']')?;
    (!unit.is_empty()).then_some(unit)
}

/// (unit text, UCUM code) of a TG-263 metric: `Gy`, `cGy`, `%`, and `cm3` for `[cc]`.
fn metric_unit(metric: &str) -> Option<(&'static str, &'static str)> {
    match metric_bracket(metric)? {
        "Gy" => Some(("Gy", "Gy")),
        "cGy" => Some(("cGy", "cGy")),
        "%" => Some(("%", "%")),
        "cc" => Some(("cc", "cm3")),
        _ => None,
    }
}

/// Displays of TG-263 structures, only where a source was read: the design's example (Bag_Bowel)
/// and the TG-263 descriptions in mCODE's TG263 ConceptMap. Other structures carry the code alone.
fn tg263_display(structure: &str) -> Option<&'static str> {
    match structure {
        "Bag_Bowel" => Some("Bowel bag"),
        "Bowel_Small" => Some("Small Bowel (small intestine)"),
        "Kidneys" => Some("Both Kidneys"),
        "Liver" => Some("Liver"),
        "SpinalCord" => Some("Spinal Cord"),
        "Bladder" => Some("Urinary Bladder"),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Bundle-only resources
// ---------------------------------------------------------------------------------------------

/// The words for an indication; an unspecified one claims none.
pub(super) fn indication_text(indication: pb::Indication) -> &'static str {
    match indication {
        pb::Indication::Indicated => "Radiotherapy indicated",
        pb::Indication::Mandatory => "Radiotherapy mandatory",
        pb::Indication::Consider => "Consider radiotherapy at MDT",
        pb::Indication::NotIndicated => "Radiotherapy not indicated",
        pb::Indication::Unspecified => "Radiotherapy",
    }
}

/// The words for a setting with prescriptions; `None` for no setting.
pub(super) fn setting_text(setting: pb::Setting) -> Option<&'static str> {
    match setting {
        pb::Setting::Preoperative => Some("preoperative"),
        pb::Setting::Postoperative => Some("postoperative"),
        pb::Setting::NeoadjuvantChemoradiation => Some("neoadjuvant chemoradiation"),
        pb::Setting::None | pb::Setting::Unspecified => None,
    }
}

/// The RequestGroup's option-group title: indication and setting.
fn group_title(plan: &pb::Plan) -> String {
    let indication = indication_text(plan.indication());
    match setting_text(plan.setting()) {
        Some(setting) => format!("{indication} ({setting}): radiotherapy options"),
        None => format!("{indication}: radiotherapy options"),
    }
}

/// One RequestGroup option: title, schedule, preferred/alternative code, citations, course.
fn option_action(
    plan: &pb::Plan,
    prescription: &pb::Prescription,
    names: &Names,
    course_url: &str,
) -> Value {
    let schedule: Vec<String> = prescription
        .phases
        .iter()
        .map(|phase| {
            if is_boost(phase) {
                format!("{} boost", phase_schedule(phase))
            } else {
                phase_schedule(phase)
            }
        })
        .collect();
    let mut description = format!(
        "{}; total {} Gy",
        schedule.join(" + "),
        number_text(prescription.total_dose_gy)
    );
    if let Some(guideline) = &plan.guideline
        && prescription.eqd2_tumor_gy.is_finite()
        && prescription.eqd2_tumor_gy > 0.0
    {
        description.push_str(&format!(
            "; EQD2 {:.2} Gy (α/β {})",
            prescription.eqd2_tumor_gy,
            number_text(guideline.alpha_beta_tumor_gy)
        ));
    }
    let (code, display) = if prescription.preferred {
        ("preferred", "Guideline-preferred option")
    } else {
        ("alternative", "Alternative option")
    };
    let documentation: Vec<Value> = prescription
        .reference_ids
        .iter()
        .filter(|id| !id.is_empty())
        .map(|id| citation(plan, id))
        .collect();
    json!({
        "title": option_label(prescription),
        "description": description,
        "code": [{"coding": [{"system": names.code_system("vlms-rt-option"), "code": code, "display": display}]}],
        "documentation": documentation,
        "resource": {"reference": course_url},
    })
}

/// A RelatedArtifact citation for a reference id, from the plan's reference list.
fn citation(plan: &pb::Plan, id: &str) -> Value {
    match plan.references.iter().find(|reference| reference.id == id) {
        Some(reference) => json!({
            "type": "citation",
            "label": id,
            "citation": reference.citation,
            "url": (!reference.doi.is_empty()).then(|| format!("https://doi.org/{}", reference.doi)),
        }),
        None => json!({"type": "citation", "label": id}),
    }
}

#[allow(clippy::too_many_arguments)]
fn detected_issue(
    alert: &pb::Alert,
    uuid: uuid::Uuid,
    names: &Names,
    version: Option<&str>,
    subject: &Subject,
    refs: &Refs,
    evaluated_at: &str,
    device_url: &str,
) -> Value {
    let severity = match alert.severity() {
        pb::Severity::Critical => Some("high"),
        pb::Severity::Warning => Some("moderate"),
        pb::Severity::Info => Some("low"),
        pb::Severity::Unspecified => None,
    };
    let detail = match (alert.summary.trim(), alert.detail.trim()) {
        ("", detail) => detail.to_string(),
        (summary, "") => summary.to_string(),
        (summary, detail) => format!("{summary} {detail}"),
    };
    json!({
        "resourceType": "DetectedIssue",
        "id": format!("vlmsrt-{uuid}"),
        "status": "final",
        "code": {"coding": [{"system": names.code_system("vlms-rt-alert"), "code": alert.code, "display": alert.code}]},
        "severity": severity,
        "patient": {"reference": refs.ehr(&format!("Patient/{}", subject.patient_id))},
        "identifiedDateTime": evaluated_at,
        "author": {"reference": device_url},
        "implicated": [{"reference": refs.ehr(&format!("Condition/{}", subject.condition_id))}],
        "detail": detail,
        // The guideline page is vlms-rt's own URL: never rebased onto the EHR.
        "reference": version.filter(|version| !version.is_empty()).map(|version| names.guideline_page(version)),
    })
}

fn device(version: Option<&str>, names: &Names) -> Value {
    let version_type = |code: &str, display: &str| json!({"coding": [{"system": names.code_system("vlms-rt-version-type"), "code": code, "display": display}]});
    let mut versions = Vec::new();
    if let Some(version) = version.filter(|version| !version.is_empty()) {
        versions.push(json!({"type": version_type("guideline-profile", "Guideline profile version"), "value": version}));
    }
    versions.push(json!({
        "type": version_type("build", "Service build"),
        "value": env!("CARGO_PKG_VERSION"),
    }));
    json!({
        "resourceType": "Device",
        "id": "vlms-rt",
        "identifier": [{"system": names.naming_system("software"), "value": "vlms-rt"}],
        "deviceName": [{"name": "vlms-rt radiotherapy decision support", "type": "user-friendly-name"}],
        "version": versions,
    })
}

/// The GuidanceResponse's contained `Parameters` (id `output`).
fn output_parameters(plan: &pb::Plan, names: &Names, issue_urls: &[&str]) -> Value {
    let coding =
        |system: &str, code: &str| json!({"system": names.code_system(system), "code": code});
    let mut parameters = vec![
        json!({"name": "indication", "valueCoding": coding("vlms-rt-indication", plan.indication().as_str_name())}),
        json!({"name": "setting", "valueCoding": coding("vlms-rt-setting", plan.setting().as_str_name())}),
        json!({"name": "siteGroup", "valueCoding": coding("vlms-rt-site-group", plan.site_group().as_str_name())}),
    ];
    if let Some(window) = &plan.start_window {
        let mut parts = vec![json!({"name": "status", "valueCode": window.status().as_str_name()})];
        if let Some(period) = start_window(plan) {
            parts.push(json!({"name": "window", "valuePeriod": period}));
            parts.push(
                json!({"name": "daysSinceSurgery", "valueInteger": window.days_since_surgery}),
            );
        }
        parameters.push(json!({"name": "startWindow", "part": parts}));
    }
    let reference_parts = |ids: &[String]| -> Vec<Value> {
        ids.iter()
            .filter(|id| !id.is_empty())
            .map(|id| json!({"name": "referenceId", "valueString": id}))
            .collect()
    };
    for rule in &plan.trace {
        let mut parts = vec![
            json!({"name": "ruleId", "valueString": rule.rule_id}),
            json!({"name": "summary", "valueString": rule.summary}),
        ];
        parts.extend(reference_parts(&rule.reference_ids));
        parameters.push(json!({"name": "ruleFired", "part": parts}));
    }
    for outcome in &plan.expected_outcomes {
        let mut parts = vec![json!({"name": "text", "valueString": outcome.text})];
        parts.extend(reference_parts(&outcome.reference_ids));
        parameters.push(json!({"name": "expectedOutcome", "part": parts}));
    }
    for url in issue_urls {
        parameters.push(json!({"name": "detectedIssue", "valueReference": {"reference": url}}));
    }
    prune(json!({"resourceType": "Parameters", "id": "output", "parameter": parameters}))
}

/// One `dataRequirement` for a missing Case fact. R4 DataRequirement has no free-text element, so
/// the Case field and what satisfies it travel in the `vlms-rt-missing-fact` extension; `type` is
/// the FHIR resource type the need names first ("Observation …"), else `Resource`, and an
/// Observation code given as `system|code` becomes a `codeFilter`.
fn data_requirement(field: &str, need: &str, names: &Names) -> Value {
    let first = need.split([' ', '.']).next().unwrap_or_default();
    let resource_type = if !first.is_empty()
        && first.chars().all(|c| c.is_ascii_alphabetic())
        && first.starts_with(|c: char| c.is_ascii_uppercase())
    {
        first
    } else {
        "Resource"
    };
    let code_filter = (resource_type == "Observation")
        .then(|| {
            need.split_whitespace()
                .find_map(|word| word.split_once('|'))
                .filter(|(system, code)| is_absolute(system) && !code.is_empty())
                .map(|(system, code)| json!([{"path": "code", "code": [{"system": system, "code": code}]}]))
        })
        .flatten();
    json!({
        "extension": [{
            "url": names.extension("vlms-rt-missing-fact"),
            "extension": [
                {"url": "field", "valueString": field},
                {"url": "need", "valueString": need},
            ],
        }],
        "type": resource_type,
        "codeFilter": code_filter,
    })
}

/// Removes what FHIR JSON forbids: `null`, empty strings, empty arrays and empty objects, at any
/// depth (repeatedly, so an object left empty by its pruned members goes too).
pub fn prune(value: Value) -> Value {
    fn keep(value: &Value) -> bool {
        match value {
            Value::Null => false,
            Value::String(text) => !text.is_empty(),
            Value::Array(items) => !items.is_empty(),
            Value::Object(members) => !members.is_empty(),
            Value::Bool(_) | Value::Number(_) => true,
        }
    }
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(prune).filter(keep).collect()),
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(key, value)| (key, prune(value)))
                .filter(|(_, value)| keep(value))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u128);

    impl Ids for Counter {
        fn uuid(&mut self) -> uuid::Uuid {
            self.0 += 1;
            uuid::Uuid::from_u128(self.0)
        }
    }

    fn naming() -> Naming {
        Naming {
            site: String::from("https://rt.hospital.test/"),
        }
    }

    fn subject() -> Subject {
        Subject {
            patient_id: String::from("p1"),
            condition_id: String::from("c1"),
            user_id: None,
            encounter_id: None,
            fhir_server: None,
            tumour_site: (
                String::from(SCT),
                String::from("83419000"),
                String::from("Femoral vein structure"),
            ),
        }
    }

    fn phase(kind: pb::PhaseKind, dose: f64, fractions: i32) -> pb::Phase {
        pb::Phase {
            kind: kind as i32,
            dose_per_fraction_gy: dose,
            fractions,
            dose_gy: dose * f64::from(fractions),
        }
    }

    /// A postoperative extremity plan: 50 Gy + 10 Gy boost (preferred), 50 Gy in 20 (alternative).
    fn plan(indication: pb::Indication) -> pb::Plan {
        pb::Plan {
            recommendation_id: String::from("01M98WP75C9TB60KB3C4Z8S0AC"),
            guideline: Some(pb::GuidelineRef {
                version: String::from("2026.2"),
                sha256: String::from("ab"),
                alpha_beta_tumor_gy: 4.0,
                alpha_beta_late_gy: 3.0,
            }),
            indication: indication as i32,
            setting: pb::Setting::Postoperative as i32,
            prescriptions: vec![
                pb::Prescription {
                    label: String::from("Postoperative 50 Gy plus 10 Gy boost (60 Gy), IMRT"),
                    preferred: true,
                    phases: vec![
                        phase(pb::PhaseKind::Initial, 2.0, 25),
                        phase(pb::PhaseKind::Boost, 2.0, 5),
                    ],
                    total_dose_gy: 60.0,
                    eqd2_tumor_gy: 60.0,
                    eqd2_late_gy: 60.0,
                    technique: pb::Technique::Imrt as i32,
                    ..pb::Prescription::default()
                },
                pb::Prescription {
                    label: String::from("Hypofractionated 50 Gy in 20, IMRT"),
                    phases: vec![phase(pb::PhaseKind::Initial, 2.5, 20)],
                    total_dose_gy: 50.0,
                    eqd2_tumor_gy: 54.166_666_666_666_664,
                    eqd2_late_gy: 55.0,
                    technique: pb::Technique::Imrt as i32,
                    ..pb::Prescription::default()
                },
            ],
            ..pb::Plan::default()
        }
    }

    fn resources(suggestion: &Value) -> Vec<Value> {
        suggestion["actions"]
            .as_array()
            .map(|actions| actions.iter().map(|a| a["resource"].clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn numbers_units_and_uids() {
        assert_eq!(cgy(28.0 * 1.8)["value"], json!(5040));
        assert_eq!(cgy(1.8)["value"], json!(180));
        assert_eq!(cgy(2.125)["value"], json!(212.5));
        assert_eq!(number(f64::NAN), Value::Null);
        assert_eq!(number_text(50.400_000_000_000_006), "50.4");
        assert_eq!(number_text(45.0), "45");
        assert_eq!(metric_unit("V45Gy[cc]"), Some(("cc", "cm3")));
        assert_eq!(metric_unit("V20Gy[%]"), Some(("%", "%")));
        assert_eq!(metric_unit("Mean[Gy]"), Some(("Gy", "Gy")));
        assert_eq!(metric_unit("D2cc"), None);
        assert_eq!(dicom_uid(uuid::Uuid::from_u128(0xff)), "urn:oid:2.25.255");
        assert_eq!(
            prune(json!({"a": [], "b": {"c": ""}, "d": null, "e": [1, {}], "f": false})),
            json!({"e": [1], "f": false})
        );
    }

    #[test]
    fn is_recommended_only_for_the_preferred_option_when_indicated_or_mandatory() {
        for (indication, recommended) in [
            (pb::Indication::Indicated, true),
            (pb::Indication::Mandatory, true),
            (pb::Indication::Consider, false),
        ] {
            let (suggestions, options) =
                plan_suggestions(&plan(indication), &naming(), &subject(), &mut Counter(0));
            assert_eq!(suggestions.len(), 2);
            let flags: Vec<Option<&Value>> =
                suggestions.iter().map(|s| s.get("isRecommended")).collect();
            let want = if recommended {
                Some(&json!(true))
            } else {
                None
            };
            assert_eq!(flags, [want, None], "{indication:?}");
            assert!(options[0].preferred && !options[1].preferred);
            assert_eq!(suggestions[0]["uuid"], options[0].uuid.to_string());
        }
        // Two options wrongly marked preferred: still at most one recommended.
        let mut twice = plan(pb::Indication::Indicated);
        twice.prescriptions[1].preferred = true;
        let (suggestions, _) = plan_suggestions(&twice, &naming(), &subject(), &mut Counter(0));
        let count = suggestions
            .iter()
            .filter(|s| s.get("isRecommended").is_some())
            .count();
        assert_eq!(count, 1);
        // No prescriptions, no suggestions.
        let mut none = plan(pb::Indication::NotIndicated);
        none.prescriptions.clear();
        let (suggestions, options) =
            plan_suggestions(&none, &naming(), &subject(), &mut Counter(0));
        assert!(suggestions.is_empty() && options.is_empty());
    }

    #[test]
    fn a_boost_gives_low_and_high_volumes_with_their_own_totals() {
        let (suggestions, _) = plan_suggestions(
            &plan(pb::Indication::Indicated),
            &naming(),
            &subject(),
            &mut Counter(0),
        );
        let resources = resources(&suggestions[0]);
        let kinds: Vec<&str> = resources
            .iter()
            .map(|r| r["resourceType"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            kinds,
            [
                "BodyStructure",
                "BodyStructure",
                "ServiceRequest",
                "ServiceRequest",
                "ServiceRequest"
            ]
        );
        assert_eq!(resources[0]["identifier"][0]["value"], "PTVsb_Low");
        assert_eq!(resources[1]["identifier"][0]["value"], "PTVsb_High");
        // Site base without the trailing slash.
        assert_eq!(
            resources[2]["instantiatesUri"][0],
            "https://rt.hospital.test/guideline/2026.2"
        );
        let course = &resources[2];
        let doses: Vec<&Value> = course["extension"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|e| {
                        e["url"] == format!("{CODEX}codexrt-radiotherapy-dose-prescribed-to-volume")
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(doses.len(), 2);
        assert_eq!(
            doses[0]["extension"][0]["valueReference"]["display"],
            "PTVsb_Low"
        );
        assert_eq!(
            doses[0]["extension"][1]["valueQuantity"]["value"],
            json!(5000)
        );
        assert_eq!(doses[0]["extension"][2]["valuePositiveInt"], json!(25));
        assert_eq!(
            doses[1]["extension"][1]["valueQuantity"]["value"],
            json!(6000)
        );
        assert_eq!(doses[1]["extension"][2]["valuePositiveInt"], json!(30));
        assert_eq!(
            doses[1]["extension"][3]["valueQuantity"]["unit"],
            "EQD2Gy(a/b = 4)"
        );
        // The boost phase treats `_High` only, and points at the course.
        let boost = &resources[4];
        let boost_doses: Vec<&Value> = boost["extension"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|e| {
                        e["url"]
                            .as_str()
                            .is_some_and(|u| u.ends_with("dose-prescribed-to-volume"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(boost_doses.len(), 1);
        assert_eq!(
            boost_doses[0]["extension"][0]["valueReference"]["display"],
            "PTVsb_High"
        );
        assert_eq!(
            boost["basedOn"][0]["reference"],
            format!(
                "ServiceRequest/{}",
                course["id"].as_str().unwrap_or_default()
            )
        );
        // No requester without a user, no empty anything.
        assert!(course.get("requester").is_none());
        // The unrounded EQD2 of the alternative survives.
        let alternative = suggestions[1].to_string();
        assert!(alternative.contains("54.166666666666664"), "{alternative}");
    }

    /// Draft orders as an EHR sends them: a course `rx-course-1` and phases `rx-phase-N` of the
    /// given kinds, each with two identifiers, the course with a requester.
    fn drafts(kinds: &[&str]) -> (Value, String, Vec<String>) {
        let identifiers = |id: &str| {
            json!([
                {"use": "usual", "system": "https://ehr.test/rt-rx", "value": id},
                {"use": "official", "system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:00000000-0000-4000-8000-{:012}", id.len())},
            ])
        };
        let mut entry = vec![json!({"resource": {
            "resourceType": "ServiceRequest", "id": "rx-course-1", "status": "draft",
            "identifier": identifiers("rx-course-1"),
            "code": {"coding": [{"system": SCT, "code": "1217123003"}]},
            "subject": {"reference": "Patient/p1"},
            "requester": {"reference": "PractitionerRole/pr-7"},
            "reasonReference": [{"reference": "Condition/c1"}],
        }})];
        let mut refs = Vec::new();
        for (index, kind) in kinds.iter().enumerate() {
            let id = format!("rx-phase-{}", index + 1);
            entry.push(json!({"resource": {
                "resourceType": "ServiceRequest", "id": id, "status": "draft",
                "identifier": identifiers(&id),
                "code": {"coding": [{"system": SCT, "code": "1222565005"}]},
                "subject": {"reference": "Patient/p1"},
                "basedOn": [{"reference": "ServiceRequest/rx-course-1"}],
                "extension": [{"url": "https://rt.hospital.test/fhir/StructureDefinition/vlms-rt-phase-kind", "valueCode": kind}],
            }}));
            refs.push(format!("ServiceRequest/{id}"));
        }
        (
            json!({"resourceType": "Bundle", "type": "collection", "entry": entry}),
            String::from("ServiceRequest/rx-course-1"),
            refs,
        )
    }

    fn actions_of<'a>(suggestion: &'a Value, kind: &str) -> Vec<&'a Value> {
        suggestion["actions"]
            .as_array()
            .map(|actions| actions.iter().filter(|a| a["type"] == kind).collect())
            .unwrap_or_default()
    }

    fn draft_entry<'a>(orders: &'a Value, id: &str) -> &'a Value {
        orders["entry"]
            .as_array()
            .and_then(|entries| entries.iter().find(|e| e["resource"]["id"] == id))
            .map_or(&Value::Null, |e| &e["resource"])
    }

    /// What every replace suggestion must hold, whatever the counts.
    fn assert_well_formed(suggestion: &Value, orders: &Value) {
        assert_eq!(prune(suggestion.clone()), *suggestion, "nothing empty");
        assert!(suggestion.get("isRecommended").is_none());
        let actions = suggestion["actions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!actions.is_empty());
        for action in &actions {
            assert!(
                action["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty())
            );
            if action["type"] == "delete" {
                assert!(action.get("resource").is_none());
                assert!(action["resourceId"].as_str().is_some());
            }
        }
        for update in actions_of(suggestion, "update") {
            let resource = &update["resource"];
            let id = resource["id"].as_str().unwrap_or_default();
            let draft = draft_entry(orders, id);
            assert!(draft.is_object(), "update of {id}: not a draft");
            assert_eq!(resource["identifier"], draft["identifier"], "{id}");
            assert_eq!(resource["subject"], draft["subject"], "{id}");
            assert_eq!(resource["status"], "draft");
            assert_eq!(resource["intent"], "original-order");
        }
        for action in actions_of(suggestion, "update")
            .into_iter()
            .chain(actions_of(suggestion, "create"))
        {
            let resource = &action["resource"];
            if resource["code"]["coding"][0]["code"] == "1222565005" {
                assert_eq!(
                    resource["basedOn"],
                    json!([{"reference": "ServiceRequest/rx-course-1"}])
                );
            }
        }
    }

    #[test]
    fn replacing_a_boosted_draft_with_a_preferred_option_without_boost() {
        // The preferred option is the 50 Gy in 20 one, without boost.
        let mut plan = plan(pb::Indication::Indicated);
        plan.prescriptions[0].preferred = false;
        plan.prescriptions[1].preferred = true;
        let (orders, course, phases) = drafts(&["initial", "boost"]);
        let (suggestion, option) = replace_suggestion(
            &plan,
            &orders,
            &course,
            &phases,
            &naming(),
            &subject(),
            &mut Counter(0),
        )
        .expect("a preferred option");
        assert_well_formed(&suggestion, &orders);
        assert_eq!(
            suggestion["label"],
            "Replace with guideline-preferred Hypofractionated 50 Gy in 20, IMRT"
        );
        assert_eq!(suggestion["uuid"], option.uuid.to_string());
        assert!(option.preferred);
        let deletes = actions_of(&suggestion, "delete");
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0]["resourceId"], "ServiceRequest/rx-phase-2");
        assert!(
            deletes[0]["description"]
                .as_str()
                .is_some_and(|d| d.contains("boost")),
            "{}",
            deletes[0]
        );
        let creates = actions_of(&suggestion, "create");
        assert_eq!(creates.len(), 1, "one volume, no phase");
        assert_eq!(creates[0]["resource"]["resourceType"], "BodyStructure");
        let updates = actions_of(&suggestion, "update");
        let updated: Vec<&Value> = updates.iter().map(|u| &u["resource"]["id"]).collect();
        assert_eq!(updated, [&json!("rx-course-1"), &json!("rx-phase-1")]);
        // The course keeps the draft's requester, and takes the preferred total in cGy.
        let course = &updates[0]["resource"];
        assert_eq!(course["requester"]["reference"], "PractitionerRole/pr-7");
        let text = course.to_string();
        assert!(text.contains("\"value\":5000"), "{text}");
        // The kept phase: 2.5 Gy × 20 to the new volume.
        let phase = updates[1]["resource"].to_string();
        assert!(phase.contains("\"valuePositiveInt\":20"), "{phase}");
        assert!(phase.contains("\"value\":250"), "{phase}");
        let volume_id = creates[0]["resource"]["id"].as_str().unwrap_or_default();
        assert!(
            phase.contains(&format!("BodyStructure/{volume_id}")),
            "{phase}"
        );
        // Delete first, then create, then the updates.
        let order: Vec<&Value> = suggestion["actions"]
            .as_array()
            .map(|a| a.iter().map(|a| &a["type"]).collect())
            .unwrap_or_default();
        assert_eq!(
            order,
            [
                &json!("delete"),
                &json!("create"),
                &json!("update"),
                &json!("update")
            ]
        );
    }

    #[test]
    fn replacing_a_draft_without_boost_with_a_boosted_preferred_option() {
        let (orders, course, phases) = drafts(&["initial"]);
        let (suggestion, _) = replace_suggestion(
            &plan(pb::Indication::Indicated),
            &orders,
            &course,
            &phases,
            &naming(),
            &subject(),
            &mut Counter(0),
        )
        .expect("a preferred option");
        assert_well_formed(&suggestion, &orders);
        assert!(actions_of(&suggestion, "delete").is_empty());
        let creates = actions_of(&suggestion, "create");
        let created: Vec<&Value> = creates
            .iter()
            .map(|c| &c["resource"]["resourceType"])
            .collect();
        assert_eq!(
            created,
            [
                &json!("BodyStructure"),
                &json!("BodyStructure"),
                &json!("ServiceRequest")
            ],
            "PTVsb_Low, PTVsb_High and the boost phase"
        );
        let boost = &creates[2]["resource"];
        assert!(
            boost["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("vlmsrt-"))
        );
        assert!(boost.to_string().contains("\"valueCode\":\"boost\""));
        let updates = actions_of(&suggestion, "update");
        let updated: Vec<&Value> = updates.iter().map(|u| &u["resource"]["id"]).collect();
        assert_eq!(updated, [&json!("rx-course-1"), &json!("rx-phase-1")]);
        assert!(
            updates[1]["resource"]
                .to_string()
                .contains("\"valueCode\":\"initial\"")
        );
        // A draft phase without a requester gets the request's user (none here).
        assert!(updates[1]["resource"].get("requester").is_none());
    }

    #[test]
    fn no_replacement_without_a_preferred_option_or_a_findable_draft() {
        let (orders, course, phases) = drafts(&["initial", "boost"]);
        let mut no_preferred = plan(pb::Indication::Indicated);
        no_preferred.prescriptions[0].preferred = false;
        let mut none = plan(pb::Indication::NotIndicated);
        none.prescriptions.clear();
        for plan in [&no_preferred, &none] {
            let replaced = replace_suggestion(
                plan,
                &orders,
                &course,
                &phases,
                &naming(),
                &subject(),
                &mut Counter(0),
            );
            assert!(replaced.is_none());
        }
        let plan = plan(pb::Indication::Indicated);
        let missing = [String::from("ServiceRequest/rx-phase-9")];
        for (course, phases) in [
            ("ServiceRequest/elsewhere", &phases[..]),
            ("rx-course-1", &phases[..]),
            (course.as_str(), &missing[..]),
        ] {
            let replaced = replace_suggestion(
                &plan,
                &orders,
                course,
                phases,
                &naming(),
                &subject(),
                &mut Counter(0),
            );
            assert!(replaced.is_none(), "{course} {phases:?}");
        }
    }

    #[test]
    fn bundle_references_are_urns_inside_and_absolute_outside() {
        let mut subject = subject();
        subject.fhir_server = Some(String::from("https://ehr.test/fhir/"));
        let bundle = bundle(
            Some(&plan(pb::Indication::Indicated)),
            &naming(),
            &subject,
            "hook-1",
            "2026-11-26T09:12:04+01:00",
            &[
                String::from("Observation/o1"),
                String::from("https://other.test/fhir/Observation/o2"),
            ],
            None,
            &mut Counter(0),
        );
        let text = bundle.to_string();
        assert!(text.contains("\"https://ehr.test/fhir/Patient/p1\""));
        assert!(text.contains("\"https://ehr.test/fhir/Observation/o1\""));
        assert!(text.contains("\"https://other.test/fhir/Observation/o2\""));
        assert!(!text.contains("\"Patient/p1\""));
        assert!(!text.contains("\"original-order\""));
        assert_eq!(bundle["id"], "vlmsrt-01m98wp75c9tb60kb3c4z8s0ac");
    }
}
