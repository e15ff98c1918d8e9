//! Clinician-readable text for plans, checks, stream items and the guideline.

use std::fmt::Write;

use crate::pb;

/// A dose in Gy without needless zeros: 50.4, 50, 1.8, 2.
pub fn gy(value: f64) -> String {
    let rounded = format!("{value:.2}");
    let trimmed = rounded.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_string()
}

fn name<E: TryFrom<i32>>(value: i32, as_str: impl Fn(&E) -> &'static str, prefix: &str) -> String {
    E::try_from(value)
        .map(|value| as_str(&value).trim_start_matches(prefix).to_string())
        .unwrap_or_else(|_| format!("<unknown {value}>"))
}

/// Text from a server or its store made safe to print: a control or bidirectional-formatting
/// character (an escape sequence, a newline that would start a forged line) is shown as its
/// `\u{…}` escape instead of acting on the terminal. The server refuses such characters in the
/// free text it stores; this also covers older records and other servers.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if crate::core::violation::unsafe_char(text).is_none() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if crate::core::violation::unsafe_char(c.encode_utf8(&mut [0; 4])).is_some() {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn refs(ids: &[String]) -> String {
    if ids.is_empty() {
        String::new()
    } else {
        format!(" [{}]", ids.join(", "))
    }
}

/// `50.4 Gy in 28 × 1.8 Gy, IMRT — EQD2 48.7 Gy (α/β 4), 48.4 Gy (α/β 3)`.
pub fn prescription_line(
    prescription: &pb::Prescription,
    guideline: Option<&pb::GuidelineRef>,
) -> String {
    let mut phases = String::new();
    for (index, phase) in prescription.phases.iter().enumerate() {
        let boost = if index == 0 { "" } else { " + boost " };
        let _ = write!(
            phases,
            "{boost}{} × {} Gy",
            phase.fractions,
            gy(phase.dose_per_fraction_gy)
        );
    }
    let technique = name(
        prescription.technique,
        pb::Technique::as_str_name,
        "TECHNIQUE_",
    );
    let chemo = if prescription.concurrent_chemotherapy {
        " with concurrent chemotherapy"
    } else {
        ""
    };
    let (tumor_ab, late_ab) =
        guideline.map_or((String::from("?"), String::from("?")), |guideline| {
            (
                gy(guideline.alpha_beta_tumor_gy),
                gy(guideline.alpha_beta_late_gy),
            )
        });
    format!(
        "{} Gy in {phases}{chemo}, {technique} — EQD2 {:.1} Gy (α/β {tumor_ab}), {:.1} Gy (α/β {late_ab})",
        gy(prescription.total_dose_gy),
        prescription.eqd2_tumor_gy,
        prescription.eqd2_late_gy
    )
}

/// A prescription of a plan: its line, then its label and references.
fn prescription_lines(
    out: &mut String,
    prescription: &pb::Prescription,
    guideline: Option<&pb::GuidelineRef>,
) {
    let _ = writeln!(out, "  {}", prescription_line(prescription, guideline));
    let _ = writeln!(
        out,
        "  {}{}",
        prescription.label,
        refs(&prescription.reference_ids)
    );
}

/// The whole plan: indication and setting first, then the preferred prescription and the rest.
pub fn plan(plan: &pb::Plan) -> String {
    let mut out = String::new();
    let indication = name(plan.indication, pb::Indication::as_str_name, "INDICATION_");
    let setting = name(plan.setting, pb::Setting::as_str_name, "SETTING_");
    let site = name(plan.site_group, pb::SiteGroup::as_str_name, "SITE_GROUP_");
    let _ = writeln!(
        out,
        "Radiotherapy: {indication} — setting {setting} (site group {site})"
    );
    let case = case_id(&plan.case_id);
    let guideline = plan.guideline.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "Case {case}, evaluated {}; guideline {} (sha256 {}); recommendation {}",
        plan.evaluation_date,
        guideline.version,
        guideline.sha256.get(..12).unwrap_or(&guideline.sha256),
        plan.recommendation_id
    );

    let _ = writeln!(out);
    match plan
        .prescriptions
        .iter()
        .find(|prescription| prescription.preferred)
    {
        Some(preferred) => {
            let _ = writeln!(out, "Preferred prescription:");
            prescription_lines(&mut out, preferred, plan.guideline.as_ref());
        }
        None => {
            let _ = writeln!(out, "No prescription in this plan.");
        }
    }
    let alternatives: Vec<&pb::Prescription> = plan
        .prescriptions
        .iter()
        .filter(|prescription| !prescription.preferred)
        .collect();
    if !alternatives.is_empty() {
        let _ = writeln!(out, "Alternatives:");
        for alternative in alternatives {
            prescription_lines(&mut out, alternative, plan.guideline.as_ref());
        }
    }

    let window = plan.start_window.clone().unwrap_or_default();
    let status = name(
        window.status,
        pb::WindowStatus::as_str_name,
        "WINDOW_STATUS_",
    );
    if window.earliest.is_empty() {
        let _ = writeln!(out, "Start window: {status}");
    } else {
        let _ = writeln!(
            out,
            "Start window: {status} — start between {} and {} (day {} after surgery)",
            window.earliest, window.latest, window.days_since_surgery
        );
    }

    if !plan.alerts.is_empty() {
        let _ = writeln!(out, "\nAlerts:");
        for severity in [
            pb::Severity::Critical,
            pb::Severity::Warning,
            pb::Severity::Info,
        ] {
            for alert in plan
                .alerts
                .iter()
                .filter(|alert| alert.severity == severity as i32)
            {
                let label = severity.as_str_name().trim_start_matches("SEVERITY_");
                let _ = writeln!(
                    out,
                    "  {label:<8} {}: {}{}",
                    alert.code,
                    alert.summary,
                    refs(&alert.reference_ids)
                );
            }
        }
    }

    if !plan.volumes.is_empty() {
        let _ = writeln!(out, "\nTarget volumes:");
        for volume in &plan.volumes {
            let _ = writeln!(
                out,
                "  {}: {}{}",
                volume.code,
                volume.description,
                refs(&volume.reference_ids)
            );
        }
    }

    if !plan.organ_constraints.is_empty() {
        let _ = writeln!(
            out,
            "\nOrgan-at-risk constraints (achieved value must stay below the limit):"
        );
        let _ = writeln!(
            out,
            "  {:<12} {:<10} {:>8}  References",
            "Structure", "Metric", "Limit"
        );
        for row in &plan.organ_constraints {
            let _ = writeln!(
                out,
                "  {:<12} {:<10} {:>8}  {}",
                row.structure,
                row.metric,
                format!("< {}", gy(row.limit)),
                row.reference_ids.join(", ")
            );
        }
        // One note per structure (a structure's rows share their endpoint).
        let mut notes: Vec<(&str, &str)> = plan
            .organ_constraints
            .iter()
            .map(|row| (row.structure.as_str(), row.note.as_str()))
            .collect();
        notes.dedup();
        for (structure, note) in notes {
            let _ = writeln!(out, "  {structure}: {note}");
        }
    }

    if !plan.expected_outcomes.is_empty() {
        let _ = writeln!(out, "\nExpected outcomes:");
        for statement in &plan.expected_outcomes {
            let _ = writeln!(
                out,
                "  - {}{}",
                statement.text,
                refs(&statement.reference_ids)
            );
        }
    }

    let _ = writeln!(out, "\nRules fired:");
    for firing in &plan.trace {
        let _ = writeln!(
            out,
            "  {}: {}{}",
            firing.rule_id,
            firing.summary,
            refs(&firing.reference_ids)
        );
    }

    references(&mut out, &plan.references);
    let _ = writeln!(out, "\n{}", plan.disclaimer);
    out
}

/// A case id as printed: `(no case id)` when there is none.
fn case_id(id: &str) -> &str {
    if id.is_empty() { "(no case id)" } else { id }
}

fn references(out: &mut String, references: &[pb::Reference]) {
    let _ = writeln!(out, "\nReferences:");
    for reference in references {
        let doi = if reference.doi.is_empty() {
            String::new()
        } else {
            format!(" doi:{}", reference.doi)
        };
        let _ = writeln!(out, "  [{}] {}{doi}", reference.id, reference.citation);
    }
}

/// One line per record for a case's history.
pub fn record_line(record: &pb::RecommendationRecord) -> String {
    let what = match &record.content {
        Some(pb::recommendation_record::Content::Recommend(stored)) => {
            let plan = stored.plan.clone().unwrap_or_default();
            format!(
                "plan: {} / {}",
                name(plan.indication, pb::Indication::as_str_name, "INDICATION_"),
                name(plan.setting, pb::Setting::as_str_name, "SETTING_")
            )
        }
        Some(pb::recommendation_record::Content::Check(stored)) => {
            let response = stored.response.clone().unwrap_or_default();
            format!(
                "check: {}",
                name(response.verdict, pb::Verdict::as_str_name, "VERDICT_")
            )
        }
        None => String::from("(empty)"),
    };
    let feedback = record
        .feedback
        .last()
        .map(|entry| {
            format!(
                ", feedback {}",
                name(
                    entry.outcome,
                    pb::FeedbackOutcome::as_str_name,
                    "FEEDBACK_OUTCOME_"
                )
            )
        })
        .unwrap_or_default();
    format!(
        "  {}  {}  {what}  by {}{feedback}",
        record.created_at,
        shown(&record.recommendation_id),
        shown(&record.caller)
    )
}

/// A stored record in full: who, when, under which guideline, what was answered, feedback.
pub fn record(record: &pb::RecommendationRecord) -> String {
    let mut out = String::new();
    let guideline = record.guideline.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "Record {} of case {}",
        shown(&record.recommendation_id),
        shown(&record.case_id)
    );
    let _ = writeln!(
        out,
        "Answered {} to {}, guideline {} (sha256 {})",
        record.created_at,
        shown(&record.caller),
        guideline.version,
        guideline.sha256.get(..12).unwrap_or(&guideline.sha256)
    );
    if record.feedback.is_empty() {
        let _ = writeln!(out, "Feedback: none");
    } else {
        let _ = writeln!(out, "Feedback:");
        for entry in &record.feedback {
            let outcome = name(
                entry.outcome,
                pb::FeedbackOutcome::as_str_name,
                "FEEDBACK_OUTCOME_",
            );
            let reason = if entry.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", shown(&entry.reason))
            };
            let _ = writeln!(
                out,
                "  {} {outcome} by {}{reason}",
                entry.created_at,
                shown(&entry.caller)
            );
        }
    }
    let _ = writeln!(out);
    let stored_case = match &record.content {
        Some(pb::recommendation_record::Content::Recommend(stored)) => stored.case.as_ref(),
        Some(pb::recommendation_record::Content::Check(stored)) => stored
            .request
            .as_ref()
            .and_then(|request| request.case.as_ref()),
        None => None,
    };
    if let Some(stored_case) = stored_case {
        let _ = writeln!(out, "Case as sent: {}\n", case_summary(stored_case));
    }
    match &record.content {
        Some(pb::recommendation_record::Content::Recommend(stored)) => {
            if let Some(found) = &stored.plan {
                out.push_str(&plan(found));
            }
        }
        Some(pb::recommendation_record::Content::Check(stored)) => {
            if let Some(response) = &stored.response {
                out.push_str(&check(response));
            }
        }
        None => {}
    }
    out
}

/// The clinical facts of a case on one line: vessel, tumour, phase and margin, organs at risk and
/// every flag that is set (the completed preoperative course among them).
pub fn case_summary(case: &pb::Case) -> String {
    let mut parts = vec![name(case.vessel, pb::Vessel::as_str_name, "VESSEL_")];
    if case.ivc_segment != 0 {
        parts.push(format!(
            "segment {}",
            name(
                case.ivc_segment,
                pb::IvcSegment::as_str_name,
                "IVC_SEGMENT_"
            )
        ));
    }
    if let Some(tumor) = &case.tumor {
        let mut tumour = format!(
            "{} cm {}",
            gy(tumor.size_cm),
            name(tumor.grade, pb::Grade::as_str_name, "")
        );
        if tumor.depth != 0 {
            tumour.push(' ');
            tumour.push_str(&name(tumor.depth, pb::Depth::as_str_name, "DEPTH_"));
        }
        parts.push(tumour);
    }
    parts.push(name(
        case.phase,
        pb::TreatmentPhase::as_str_name,
        "TREATMENT_PHASE_",
    ));
    if case.resectability != 0 {
        parts.push(name(
            case.resectability,
            pb::Resectability::as_str_name,
            "RESECTABILITY_",
        ));
    }
    if let Some(resection) = &case.resection {
        parts.push(format!(
            "{} on {}",
            name(resection.margin, pb::Margin::as_str_name, "MARGIN_"),
            resection.surgery_date
        ));
    }
    if !case.organs_at_risk.is_empty() {
        let organs: Vec<String> = case
            .organs_at_risk
            .iter()
            .map(|organ| name(*organ, pb::Organ::as_str_name, "ORGAN_"))
            .collect();
        parts.push(format!("organs at risk {}", organs.join(", ")));
    }
    for (set, flag) in [
        (case.surgery_mutilating, "surgery mutilating"),
        (
            case.solitary_functioning_kidney,
            "solitary functioning kidney",
        ),
        (
            case.prior_radiotherapy,
            "prior radiotherapy (re-irradiation)",
        ),
        (
            case.preoperative_rt_delivered,
            "preoperative RT course completed",
        ),
        (case.metastatic_disease, "metastatic disease"),
    ] {
        if set {
            parts.push(flag.to_string());
        }
    }
    parts.join("; ")
}

/// One stream item: the plan, or the rejection with every field violation.
pub fn stream_item(item: &pb::RecommendStreamResponse) -> String {
    let case = case_id(&item.case_id);
    match &item.result {
        Some(pb::recommend_stream_response::Result::Plan(found)) => {
            format!("=== {case}\n{}\n", plan(found))
        }
        Some(pb::recommend_stream_response::Result::Error(status)) => {
            let mut out = format!("=== {case}\nRejected: {}\n", shown(&status.message));
            for detail in &status.details {
                if let Ok(bad_request) =
                    <tonic_types::pb::BadRequest as prost::Message>::decode(detail.value.as_ref())
                {
                    for violation in bad_request.field_violations {
                        let _ = writeln!(
                            out,
                            "  {}: {}",
                            shown(&violation.field),
                            shown(&violation.description)
                        );
                    }
                }
            }
            out.push('\n');
            out
        }
        None => format!("=== {case}\n(empty item)\n\n"),
    }
}

/// A prescription-check report.
pub fn check(response: &pb::CheckPrescriptionResponse) -> String {
    let mut out = String::new();
    let verdict = name(response.verdict, pb::Verdict::as_str_name, "VERDICT_");
    let guideline = response.guideline.clone().unwrap_or_default();
    let _ = writeln!(out, "Prescription check: {verdict}");
    let _ = writeln!(
        out,
        "Proposal: {} Gy — EQD2 {:.1} Gy (α/β {}), {:.1} Gy (α/β {})",
        gy(response.total_dose_gy),
        response.eqd2_tumor_gy,
        gy(guideline.alpha_beta_tumor_gy),
        response.eqd2_late_gy,
        gy(guideline.alpha_beta_late_gy)
    );
    let _ = writeln!(
        out,
        "Guideline {}; check {}",
        guideline.version, response.recommendation_id
    );
    let _ = writeln!(out, "\nFindings:");
    for verdict in [pb::Verdict::Fail, pb::Verdict::Review, pb::Verdict::Pass] {
        for finding in response
            .findings
            .iter()
            .filter(|finding| finding.verdict == verdict as i32)
        {
            let label = verdict.as_str_name().trim_start_matches("VERDICT_");
            let _ = writeln!(
                out,
                "  {label:<6} {}: {}{}",
                shown(&finding.code),
                shown(&finding.message),
                refs(&finding.reference_ids)
            );
        }
    }
    if let Some(recommended) = &response.recommended_plan {
        let _ = writeln!(out, "\nWhat the guideline recommends for this case:");
        out.push_str(&plan(recommended));
    }
    out
}

/// The guideline's basis.
pub fn guideline(guideline: &pb::Guideline) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Guideline {} (sha256 {})",
        guideline.version, guideline.sha256
    );
    if !guideline.changes.is_empty() {
        let since = if guideline.previous_version.is_empty() {
            String::from("the previous version")
        } else {
            guideline.previous_version.clone()
        };
        let _ = writeln!(out, "\nChanges since {since}:");
        for change in &guideline.changes {
            let _ = writeln!(
                out,
                "  - {}{}\n    Why: {}",
                change.summary,
                refs(&change.reference_ids),
                change.reason
            );
        }
    }
    let _ = writeln!(out, "\nRules:");
    for rule in &guideline.rules {
        let _ = writeln!(
            out,
            "  {}: {}{}",
            rule.rule_id,
            rule.statement,
            refs(&rule.reference_ids)
        );
    }
    let _ = writeln!(out, "\nAlerts:");
    for alert in &guideline.alerts {
        let severity = name(alert.severity, pb::Severity::as_str_name, "SEVERITY_");
        let _ = writeln!(out, "  {:<8} {}: {}", severity, alert.code, alert.summary);
    }
    references(&mut out, &guideline.references);
    let _ = writeln!(out, "\n{}", guideline.disclaimer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_summary_names_the_new_organs_and_the_completed_preoperative_course() {
        let case = pb::Case {
            vessel: pb::Vessel::InferiorVenaCava as i32,
            ivc_segment: pb::IvcSegment::Upper as i32,
            tumor: Some(pb::Tumor {
                size_cm: 7.5,
                grade: pb::Grade::Grade3 as i32,
                depth: 0,
            }),
            phase: pb::TreatmentPhase::PostResection as i32,
            resection: Some(pb::Resection {
                margin: pb::Margin::R1 as i32,
                surgery_date: "2026-10-27".into(),
                ..Default::default()
            }),
            organs_at_risk: vec![
                pb::Organ::Duodenum as i32,
                pb::Organ::Heart as i32,
                pb::Organ::Bladder as i32,
                99,
            ],
            preoperative_rt_delivered: true,
            ..Default::default()
        };
        assert_eq!(
            case_summary(&case),
            "INFERIOR_VENA_CAVA; segment UPPER; 7.5 cm GRADE_3; POST_RESECTION; R1 on 2026-10-27; \
             organs at risk DUODENUM, HEART, BLADDER, <unknown 99>; preoperative RT course completed"
        );
    }

    #[test]
    fn stored_text_cannot_act_on_the_terminal() {
        assert_eq!(shown("surgery first"), "surgery first");
        assert_eq!(
            shown("ok\u{1b}[2J\nPASS \u{202E}x"),
            "ok\\u{1b}[2J\\u{a}PASS \\u{202e}x"
        );
        let stored = pb::RecommendationRecord {
            recommendation_id: "01JDQ5Z8M4X7R2K9V3T6N1B0CE".into(),
            case_id: "c".into(),
            caller: "tps\r".into(),
            feedback: vec![pb::Feedback {
                outcome: pb::FeedbackOutcome::Overridden as i32,
                reason: "x\nFeedback: none\u{7}".into(),
                caller: "a".into(),
                created_at: "2026-12-07T00:00:00Z".into(),
            }],
            ..Default::default()
        };
        let text = record(&stored);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert_eq!(
            text.lines()
                .filter(|line| line.starts_with("Feedback"))
                .count(),
            1,
            "no forged line: {text}"
        );
    }

    #[test]
    fn doses_print_without_needless_zeros() {
        assert_eq!(gy(50.4), "50.4");
        assert_eq!(gy(50.0), "50");
        assert_eq!(gy(1.8), "1.8");
        assert_eq!(gy(2.0), "2");
        assert_eq!(gy(0.25), "0.25");
    }

    #[test]
    fn prescription_line_reads_like_a_prescription() {
        let prescription = pb::Prescription {
            phases: vec![pb::Phase {
                kind: pb::PhaseKind::Initial as i32,
                dose_per_fraction_gy: 1.8,
                fractions: 28,
                dose_gy: 50.4,
            }],
            total_dose_gy: 50.4,
            eqd2_tumor_gy: 48.72,
            eqd2_late_gy: 48.384,
            technique: pb::Technique::Imrt as i32,
            ..Default::default()
        };
        let guideline = pb::GuidelineRef {
            alpha_beta_tumor_gy: 4.0,
            alpha_beta_late_gy: 3.0,
            ..Default::default()
        };
        assert_eq!(
            prescription_line(&prescription, Some(&guideline)),
            "50.4 Gy in 28 × 1.8 Gy, IMRT — EQD2 48.7 Gy (α/β 4), 48.4 Gy (α/β 3)"
        );
    }
}
