//! Every shared vignette through the core (validation, recommend, check), without the network.

use vlms_rt::convert;
use vlms_rt::core::{self, Case, Proposal};

use crate::support::{check_mismatches, plan_mismatches, profile, vignettes};

#[test]
fn plan_vignettes_through_the_core() {
    let profile = profile();
    let mut failures = Vec::new();
    let mut seen = 0;
    for vignette in vignettes()
        .into_iter()
        .filter(|vignette| vignette.is_plan())
    {
        seen += 1;
        let sent = vignette.case();
        let case = Case::validate(&convert::raw_case(&sent), "case")
            .unwrap_or_else(|violations| panic!("{}: rejected: {violations}", vignette.name));
        let core_plan = core::recommend(&profile, &case);
        // The plan's lists are sized to hold a plan in place (see `core::Plan`): a profile or
        // rule change that outgrows them still works, but shows up here.
        if core_plan.spilled() {
            failures.push(format!("{}: a plan list outgrew its room", vignette.name));
        }
        let plan = convert::plan_out(&core_plan, String::from("test"));
        for problem in plan_mismatches(&plan, vignette.expected()) {
            failures.push(format!("{}: {problem}", vignette.name));
        }
    }
    assert!(seen >= 15, "only {seen} plan vignettes found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_vignettes_through_the_core() {
    let profile = profile();
    let mut failures = Vec::new();
    let mut seen = 0;
    for vignette in vignettes()
        .into_iter()
        .filter(|vignette| vignette.is_check())
    {
        seen += 1;
        let sent = vignette.check_request();
        let proposal = Proposal::validate(&convert::raw_proposal(&sent))
            .unwrap_or_else(|violations| panic!("{}: rejected: {violations}", vignette.name));
        let report = core::check(&profile, &proposal);
        if report.plan.spilled() {
            failures.push(format!("{}: a plan list outgrew its room", vignette.name));
        }
        let response = convert::report_out(&report, String::from("a"), String::from("b"));
        for problem in check_mismatches(&response, vignette.expected()) {
            failures.push(format!("{}: {problem}", vignette.name));
        }
    }
    assert!(seen >= 4, "only {seen} check vignettes found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_vignettes_are_rejected_with_exactly_their_fields() {
    let mut failures = Vec::new();
    let mut seen = 0;
    for vignette in vignettes() {
        let result = if vignette.is_bad_case() {
            Case::validate(&convert::raw_case(&vignette.case()), "case").map(|_| ())
        } else if vignette.is_bad_check() {
            Proposal::validate(&convert::raw_proposal(&vignette.check_request())).map(|_| ())
        } else {
            continue;
        };
        seen += 1;
        let expected = vignette.expected_fields();
        match result {
            Ok(()) => failures.push(format!(
                "{}: accepted, expected {expected:?}",
                vignette.name
            )),
            Err(violations) => {
                let fields: Vec<String> = violations
                    .iter()
                    .map(|violation| violation.field.clone())
                    .collect();
                if fields != expected {
                    failures.push(format!(
                        "{}: got {fields:?}, expected {expected:?}",
                        vignette.name
                    ));
                }
                if violations
                    .iter()
                    .any(|violation| violation.description.trim().is_empty())
                {
                    failures.push(format!(
                        "{}: a violation without a description",
                        vignette.name
                    ));
                }
            }
        }
    }
    assert!(seen >= 7, "only {seen} bad vignettes found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
