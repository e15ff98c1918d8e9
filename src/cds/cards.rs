//! Plan → CDS Hooks cards (§3.1 of the EHR design), and the cards that say why there is no plan
//! (missing or conflicting facts, a minor, a case the service refused).

use serde_json::{Value, json};

use super::mapping::{ADULT_AGE_YEARS, Gap, Used};
use crate::pb;

/// What the cards name: the site's canonical base and the JSON-extension prefix.
#[derive(Debug, Clone)]
pub struct Site {
    /// e.g. `https://vlms-rt.example.org`.
    pub base: String,
    /// e.g. `org.example.vlms-rt`.
    pub extension_prefix: String,
}

impl Site {
    pub fn code_system(&self, name: &str) -> String {
        format!("{}/fhir/CodeSystem/{name}", self.base)
    }

    pub fn guideline_url(&self, version: &str) -> String {
        format!("{}/guideline/{version}", self.base)
    }

    pub fn extension_key(&self, name: &str) -> String {
        format!("{}.{name}", self.extension_prefix)
    }
}

/// A card with its uuid, and what the audit trail stores about it.
#[derive(Debug, Clone)]
pub struct Card {
    pub uuid: String,
    /// The alert the card is about; `None` for the plan, check or data card.
    pub alert_code: Option<String>,
    pub json: Value,
}

impl Card {
    /// A card not about an alert (the plan, check, data and refusal cards); its uuid is the one
    /// in its JSON.
    fn without_alert(json: Value) -> Card {
        Card {
            uuid: json["uuid"].as_str().unwrap_or_default().to_string(),
            alert_code: None,
            json,
        }
    }
}

/// The override reasons offered on plan cards (CDS Hooks 3.0's example code system; each needs a
/// display).
fn override_reasons() -> Value {
    let system = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes";
    let reasons = [
        (
            "expert-contradicts",
            "Advice from expert contradicts the recommended action",
        ),
        (
            "patient-ineligible",
            "Patient does not meet eligibility for recommended action",
        ),
        (
            "need-more-info",
            "Could not address recommended action due to need for more information/pending results/pending consult",
        ),
        (
            "risk-benefit-ratio",
            "Recipient assessment of risk/benefit ratio",
        ),
        (
            "prefers-alternative",
            "Patient prefers an alternative approach or treatment",
        ),
    ];
    Value::Array(
        reasons
            .iter()
            .map(|(code, display)| json!({"system": system, "code": code, "display": display}))
            .collect(),
    )
}

/// The display of an override reason code, for feedback.
pub fn override_display(code: &str) -> Option<String> {
    override_reasons()
        .as_array()?
        .iter()
        .find(|reason| reason["code"] == code)
        .and_then(|reason| reason["display"].as_str().map(str::to_string))
}

fn indicator(severity: i32) -> &'static str {
    match pb::Severity::try_from(severity) {
        Ok(pb::Severity::Critical) => "critical",
        Ok(pb::Severity::Warning) => "warning",
        _ => "info",
    }
}

fn enum_name<E: TryFrom<i32>>(value: i32, name: impl Fn(E) -> &'static str) -> &'static str {
    E::try_from(value).map(name).unwrap_or("UNSPECIFIED")
}

fn indication_name(value: i32) -> &'static str {
    enum_name(value, |e: pb::Indication| e.as_str_name()).trim_start_matches("INDICATION_")
}

fn setting_name(value: i32) -> &'static str {
    enum_name(value, |e: pb::Setting| e.as_str_name()).trim_start_matches("SETTING_")
}

/// A dose in Gy as people write it: `45`, `50.4`, `1.8`.
pub fn gy(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    let text = format!("{rounded:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn schedule(prescription: &pb::Prescription) -> String {
    prescription
        .phases
        .iter()
        .map(|phase| {
            let boost = if phase.kind == pb::PhaseKind::Boost as i32 {
                " boost"
            } else {
                ""
            };
            format!(
                "{} Gy × {}{boost}",
                gy(phase.dose_per_fraction_gy),
                phase.fractions
            )
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The plan card's summary (§3.1's template; < 140 characters for every plan the profile makes).
pub fn plan_summary(plan: &pb::Plan) -> String {
    let mut summary = String::from(super::codex::indication_text(plan.indication()));
    match super::codex::setting_text(plan.setting()) {
        None => summary.push_str(": no radiotherapy setting now"),
        Some(name) => {
            summary.push_str(&format!(" ({name})"));
            if let Some(preferred) = plan.prescriptions.iter().find(|p| p.preferred) {
                let technique = if preferred.technique == pb::Technique::Imrt as i32 {
                    ", IMRT"
                } else {
                    ""
                };
                summary.push_str(&format!(
                    ": {} Gy, {}{technique}",
                    gy(preferred.total_dose_gy),
                    schedule(preferred)
                ));
            }
        }
    }
    if let Some(window) = &plan.start_window {
        match pb::WindowStatus::try_from(window.status) {
            Ok(pb::WindowStatus::Before | pb::WindowStatus::Open) => {
                summary.push_str(&format!("; start {} to {}", window.earliest, window.latest));
            }
            Ok(pb::WindowStatus::Passed) => {
                summary.push_str(&format!("; start window passed ({})", window.latest));
            }
            _ => {}
        }
    }
    summary
}

fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn sources(ids: &[String], plan: &pb::Plan) -> String {
    ids.iter()
        .map(|id| match plan.references.iter().find(|r| &r.id == id) {
            Some(reference) if !reference.doi.is_empty() => {
                format!("[{id}](https://doi.org/{})", reference.doi)
            }
            _ => id.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plan card's markdown detail: everything a clinician needs to review the basis.
pub fn plan_detail(plan: &pb::Plan, used: &[Used], notes: &[String]) -> String {
    let guideline = plan.guideline.clone().unwrap_or_default();
    let mut d = format!(
        "**vlms-rt guideline {}** — indication `{}`, setting `{}`, site group `{}`. Recommendation `{}`.\n\n",
        guideline.version,
        indication_name(plan.indication),
        setting_name(plan.setting),
        enum_name(plan.site_group, |e: pb::SiteGroup| e.as_str_name())
            .trim_start_matches("SITE_GROUP_"),
        plan.recommendation_id
    );
    if !plan.alerts.is_empty() {
        d.push_str("**Alerts**\n\n");
        for alert in &plan.alerts {
            d.push_str(&format!(
                "- **{}** `{}`: {}\n",
                indicator(alert.severity).to_uppercase(),
                alert.code,
                alert.summary
            ));
        }
        d.push('\n');
    }
    if !plan.prescriptions.is_empty() {
        d.push_str(&format!(
            "**Dose-fractionation options** (EQD2 shown to 0.1 Gy; α/β {} and {})\n\n",
            gy(guideline.alpha_beta_tumor_gy),
            gy(guideline.alpha_beta_late_gy)
        ));
        d.push_str(&format!(
            "| Option | Schedule | Total | EQD2 α/β {} | EQD2 α/β {} | Sources |\n|---|---|---|---|---|---|\n",
            gy(guideline.alpha_beta_tumor_gy),
            gy(guideline.alpha_beta_late_gy)
        ));
        for prescription in &plan.prescriptions {
            let chemo = if prescription.concurrent_chemotherapy {
                " with concurrent chemotherapy"
            } else {
                ""
            };
            d.push_str(&format!(
                "| {} | {}{chemo} | {} Gy | {:.1} Gy | {:.1} Gy | {} |\n",
                if prescription.preferred {
                    "**preferred**"
                } else {
                    "alternative"
                },
                schedule(prescription),
                gy(prescription.total_dose_gy),
                prescription.eqd2_tumor_gy,
                prescription.eqd2_late_gy,
                sources(&prescription.reference_ids, plan)
            ));
        }
        d.push('\n');
    }
    if let Some(window) = &plan.start_window {
        let status = enum_name(window.status, |e: pb::WindowStatus| e.as_str_name())
            .trim_start_matches("WINDOW_STATUS_");
        if !window.earliest.is_empty() {
            d.push_str(&format!(
                "**Start window**: {} to {} — `{status}` (day {} after surgery).\n\n",
                window.earliest, window.latest, window.days_since_surgery
            ));
        } else {
            d.push_str(&format!("**Start window**: `{status}`.\n\n"));
        }
    }
    if !plan.volumes.is_empty() {
        d.push_str("**Target volume must encompass**\n\n");
        for volume in &plan.volumes {
            d.push_str(&format!("- `{}`: {}\n", volume.code, volume.description));
        }
        d.push('\n');
    }
    if !plan.organ_constraints.is_empty() {
        d.push_str("**Organ-at-risk constraints (TG-263; achieved value must stay below the limit)**\n\n| Structure | Metric | Limit | Note |\n|---|---|---|---|\n");
        for constraint in &plan.organ_constraints {
            d.push_str(&format!(
                "| {} | `{}` | < {} | {} |\n",
                constraint.structure,
                constraint.metric,
                gy(constraint.limit),
                escape_cell(&constraint.note)
            ));
        }
        d.push('\n');
    }
    if !plan.expected_outcomes.is_empty() {
        d.push_str("**Expected outcomes**\n\n");
        for outcome in &plan.expected_outcomes {
            d.push_str(&format!(
                "- {} ({})\n",
                outcome.text,
                sources(&outcome.reference_ids, plan)
            ));
        }
        d.push('\n');
    }
    let rules: Vec<String> = plan
        .trace
        .iter()
        .map(|firing| format!("`{}`", firing.rule_id))
        .collect();
    d.push_str(&format!("**Rules fired**: {}\n\n", rules.join(", ")));
    d.push_str(&used_table(used));
    if !notes.is_empty() {
        d.push_str("**Also in the record**\n\n");
        for note in notes {
            d.push_str(&format!("- {note}\n"));
        }
        d.push('\n');
    }
    if !plan.references.is_empty() {
        d.push_str("**References**\n\n");
        for (index, reference) in plan.references.iter().enumerate() {
            d.push_str(&format!("{}. {}", index + 1, reference.citation));
            if !reference.doi.is_empty() && !reference.citation.contains(&reference.doi) {
                d.push_str(&format!(" https://doi.org/{}", reference.doi));
            }
            d.push('\n');
        }
        d.push('\n');
    }
    d.push_str(&format!("*{}*\n", plan.disclaimer));
    d
}

fn used_table(used: &[Used]) -> String {
    if used.is_empty() {
        return String::new();
    }
    let mut table =
        String::from("**EHR data used**\n\n| Input | Source | Element |\n|---|---|---|\n");
    for entry in used {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            entry.field,
            escape_cell(&entry.source),
            escape_cell(&entry.element)
        ));
    }
    table.push('\n');
    table
}

fn source(
    site: &Site,
    version: &str,
    topic_code: &str,
    topic_system: &str,
    display: &str,
) -> Value {
    json!({
        "label": format!("vlms-rt guideline {version} (venous leiomyosarcoma RT)"),
        "url": site.guideline_url(version),
        "topic": {"system": topic_system, "code": topic_code, "display": display},
    })
}

/// The plan card and one card per alert, in firing order.
pub fn plan_cards(
    plan: &pb::Plan,
    site: &Site,
    used: &[Used],
    notes: &[String],
    suggestions: Vec<Value>,
    mut uuid: impl FnMut() -> String,
) -> Vec<Card> {
    let guideline = plan.guideline.clone().unwrap_or_default();
    let worst = plan.alerts.iter().map(|a| a.severity).max().unwrap_or(0);
    let mut card = json!({
        "uuid": uuid(),
        "summary": plan_summary(plan),
        "indicator": indicator(worst),
        "detail": plan_detail(plan, used, notes),
        "source": source(site, &guideline.version, "rt-recommendation", &site.code_system("vlms-rt-card-topic"), "Radiotherapy recommendation"),
        "overrideReasons": override_reasons(),
        "links": [{
            "label": "Basis of this recommendation: rules, inputs, references",
            "url": format!("{}/recommendations/{}", site.base, plan.recommendation_id),
            "type": "absolute",
        }],
        "extension": {
            site.extension_key("recommendation"): {
                "recommendationId": plan.recommendation_id,
                "guideline": {"version": guideline.version, "sha256": guideline.sha256},
                "ruleIds": plan.trace.iter().map(|t| t.rule_id.clone()).collect::<Vec<_>>(),
            }
        },
    });
    if !suggestions.is_empty() {
        card["suggestions"] = Value::Array(suggestions);
        card["selectionBehavior"] = json!("at-most-one");
    }
    let mut cards = vec![Card::without_alert(card)];
    for alert in &plan.alerts {
        let detail = format!(
            "{}\n\nSources: {}.\n\nRecommendation `{}`.",
            alert.detail,
            sources(&alert.reference_ids, plan),
            plan.recommendation_id
        );
        let card_uuid = uuid();
        cards.push(Card {
            uuid: card_uuid.clone(),
            alert_code: Some(alert.code.clone()),
            json: json!({
                "uuid": card_uuid,
                "summary": alert.summary,
                "indicator": indicator(alert.severity),
                "detail": detail,
                "source": source(site, &guideline.version, &alert.code, &site.code_system("vlms-rt-alert"), &alert.code),
                "overrideReasons": override_reasons(),
                "extension": {
                    site.extension_key("recommendation"): {
                        "recommendationId": plan.recommendation_id,
                        "alertCode": alert.code,
                    }
                },
            }),
        });
    }
    cards
}

fn verdict_name(value: i32) -> &'static str {
    enum_name(value, |e: pb::Verdict| e.as_str_name()).trim_start_matches("VERDICT_")
}

/// The prescription check's card (§3.4): indicator from the verdict, every finding in the detail,
/// and the given `suggestions` (the "Replace with guideline-preferred …" one, or none).
pub fn check_card(
    check: &pb::CheckPrescriptionResponse,
    phases: &[pb::Phase],
    site: &Site,
    used: &[Used],
    suggestions: Vec<Value>,
    uuid: String,
) -> Card {
    let guideline = check.guideline.clone().unwrap_or_default();
    let count = |verdict: pb::Verdict| {
        check
            .findings
            .iter()
            .filter(|f| f.verdict == verdict as i32)
            .count()
    };
    let verdict = verdict_name(check.verdict);
    let summary = format!(
        "Rx check {verdict}: {} Gy proposed ({} FAIL, {} REVIEW) vs vlms-rt {}",
        gy(check.total_dose_gy),
        count(pb::Verdict::Fail),
        count(pb::Verdict::Review),
        guideline.version
    );
    let proposal: Vec<String> = phases
        .iter()
        .map(|phase| {
            let kind = enum_name(phase.kind, |e: pb::PhaseKind| e.as_str_name())
                .trim_start_matches("PHASE_KIND_")
                .to_lowercase();
            format!(
                "{} Gy × {} ({kind})",
                gy(phase.dose_per_fraction_gy),
                phase.fractions
            )
        })
        .collect();
    let mut detail = format!(
        "Proposal: {}; total {} Gy; EQD2 {:.1} Gy (α/β {}), {:.1} Gy (α/β {}). Check `{}`.\n\n| Verdict | Finding | Message |\n|---|---|---|\n",
        proposal.join(", "),
        gy(check.total_dose_gy),
        check.eqd2_tumor_gy,
        gy(guideline.alpha_beta_tumor_gy),
        check.eqd2_late_gy,
        gy(guideline.alpha_beta_late_gy),
        check.recommendation_id
    );
    for finding in &check.findings {
        detail.push_str(&format!(
            "| {} | `{}` | {} |\n",
            verdict_name(finding.verdict),
            finding.code,
            escape_cell(&finding.message)
        ));
    }
    detail.push('\n');
    if let Some(plan) = &check.recommended_plan {
        detail.push_str(&format!(
            "**The guideline recommends**: {}\n\n",
            plan_summary(plan)
        ));
    }
    detail.push_str(&used_table(used));
    let indicator = match pb::Verdict::try_from(check.verdict) {
        Ok(pb::Verdict::Fail) => "critical",
        Ok(pb::Verdict::Review) => "warning",
        _ => "info",
    };
    let mut json = json!({
        "uuid": uuid,
        "summary": summary,
        "indicator": indicator,
        "detail": detail,
        "source": source(site, &guideline.version, "rx-check", &site.code_system("vlms-rt-card-topic"), "Prescription check"),
        "overrideReasons": override_reasons(),
        "extension": {
            site.extension_key("recommendation"): {
                "recommendationId": check.recommendation_id,
                "verdict": pb::Verdict::try_from(check.verdict).map_or("VERDICT_UNSPECIFIED", |v| v.as_str_name()),
            }
        },
    });
    if !suggestions.is_empty() {
        json["suggestions"] = Value::Array(suggestions);
        json["selectionBehavior"] = json!("at-most-one");
    }
    Card::without_alert(json)
}

/// The card for draft orders the check cannot read exactly (a simultaneous integrated boost, an
/// undeterminable phase order, several courses): nothing was checked.
pub fn not_checkable_card(
    site: &Site,
    guideline_version: &str,
    course: &str,
    reason: &str,
    uuid: String,
) -> Card {
    let json = json!({
        "uuid": uuid,
        "summary": "vlms-rt cannot check this prescription as drafted; nothing was checked",
        "indicator": "warning",
        "detail": format!("Draft {course}: {reason}."),
        "source": source(site, guideline_version, "rx-check", &site.code_system("vlms-rt-card-topic"), "Prescription check"),
    });
    Card::without_alert(json)
}

/// The card shown instead of a plan when facts are missing (info) or contradict each other
/// (warning): no plan, a table of what is needed, a SMART link to the intake form.
pub fn data_card(
    site: &Site,
    guideline_version: &str,
    missing: &[Gap],
    conflicts: &[Gap],
    used: &[Used],
    intake_url: Option<&str>,
    uuid: String,
) -> Card {
    let count = missing.len() + conflicts.len();
    let noun = if count == 1 { "fact" } else { "facts" };
    let summary = format!(
        "vlms-rt cannot advise yet: {count} required {noun} missing or conflicting in the record"
    );
    let mut detail = String::from(
        "No recommendation was made: vlms-rt never fills in a missing fact and never chooses between contradicting records.\n\n",
    );
    if !missing.is_empty() {
        detail.push_str("**Missing**\n\n| Input | What satisfies it |\n|---|---|\n");
        for gap in missing {
            detail.push_str(&format!(
                "| `{}` | {} |\n",
                gap.field,
                escape_cell(&gap.detail)
            ));
        }
        detail.push('\n');
    }
    if !conflicts.is_empty() {
        detail.push_str("**Conflicting**\n\n| Input | Conflict | Sources |\n|---|---|---|\n");
        for gap in conflicts {
            detail.push_str(&format!(
                "| `{}` | {} | {} |\n",
                gap.field,
                escape_cell(&gap.detail),
                escape_cell(&gap.sources.join(", "))
            ));
        }
        detail.push('\n');
    }
    detail.push_str(&used_table(used));
    let fields: Vec<&str> = missing
        .iter()
        .chain(conflicts)
        .map(|gap| gap.field)
        .collect();
    let mut card = json!({
        "uuid": uuid,
        "summary": summary,
        "indicator": if conflicts.is_empty() { "info" } else { "warning" },
        "detail": detail,
        "source": source(site, guideline_version, "data-required", &site.code_system("vlms-rt-card-topic"), "Data required"),
        "extension": {
            site.extension_key("data-required"): {
                "missing": missing.iter().map(|g| g.field).collect::<Vec<_>>(),
                "conflicting": conflicts.iter().map(|g| g.field).collect::<Vec<_>>(),
            }
        },
    });
    if let Some(url) = intake_url {
        card["links"] = json!([{
            "label": "Record the missing facts (vlms-rt intake)",
            "url": url,
            "type": "smart",
            "appContext": json!({"fields": fields}).to_string(),
        }]);
    }
    strip_empty(&mut card["extension"]);
    Card::without_alert(card)
}

/// The card for a patient younger than the intended population.
pub fn minor_card(site: &Site, guideline_version: &str, age: i16, uuid: String) -> Card {
    let json = json!({
        "uuid": uuid,
        "summary": "vlms-rt: patient outside the intended population (adults); no recommendation",
        "indicator": "info",
        "detail": format!("The patient is {age} years old at the evaluation date. The vlms-rt guideline covers adults ({ADULT_AGE_YEARS} years and older) only; no plan was made."),
        "source": source(site, guideline_version, "out-of-scope", &site.code_system("vlms-rt-card-topic"), "Outside the intended population"),
    });
    Card::without_alert(json)
}

/// The card for a case the service refused (`INVALID_ARGUMENT`): the chart holds values the
/// guideline cannot take, each violation shown with the EHR element it came from.
pub fn refused_card(
    site: &Site,
    guideline_version: &str,
    violations: &[(String, String)],
    used: &[Used],
    uuid: String,
) -> Card {
    let mut detail = String::from(
        "The record maps to a case the guideline cannot evaluate; no plan was made. Correct the record:\n\n| Input | Problem | Source |\n|---|---|---|\n",
    );
    for (field, problem) in violations {
        let case_field = field.trim_start_matches("case.");
        let from: Vec<String> = used
            .iter()
            .filter(|u| case_field == u.field || case_field.starts_with(&format!("{}[", u.field)))
            .map(|u| format!("{} ({})", u.source, u.element))
            .collect();
        detail.push_str(&format!(
            "| `{}` | {} | {} |\n",
            case_field,
            escape_cell(problem),
            escape_cell(&from.join("; "))
        ));
    }
    let json = json!({
        "uuid": uuid,
        "summary": format!("vlms-rt cannot advise: {} value(s) in the record are outside what the guideline accepts", violations.len()),
        "indicator": "warning",
        "detail": detail,
        "source": source(site, guideline_version, "data-required", &site.code_system("vlms-rt-card-topic"), "Data required"),
    });
    Card::without_alert(json)
}

/// Removes empty arrays from an object's members (FHIR-style JSON carries no empty arrays).
fn strip_empty(value: &mut Value) {
    if let Value::Object(map) = value {
        for member in map.values_mut() {
            strip_empty(member);
        }
        map.retain(|_, member| !matches!(member, Value::Array(a) if a.is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doses_read_as_written() {
        assert_eq!(gy(45.0), "45");
        assert_eq!(gy(50.4), "50.4");
        assert_eq!(gy(1.8), "1.8");
        assert_eq!(gy(2.5), "2.5");
        assert_eq!(gy(195.0), "195");
    }
}
