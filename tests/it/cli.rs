//! The client binary against a live server: its JSON output equals the plan from Recommend, its
//! text output reads as a plan, and its exit codes tell bad input from an unreachable server.

use std::process::Stdio;

use tokio::process::Command;
use vlms_rt::pb;

use crate::support::{ClientRun, TestServer, run_client, vignette, vignette_dir};

/// The client binary against `server`.
async fn client(server: &str, args: &[&str], stdin: Option<&str>) -> ClientRun {
    run_client(["--server", server].iter().chain(args), stdin).await
}

fn vignette_path(name: &str) -> String {
    vignette_dir()
        .join(format!("{name}.json"))
        .display()
        .to_string()
}

#[tokio::test]
async fn json_output_equals_the_plan_from_recommend() {
    let server = TestServer::start().await;
    let mut grpc = server.client().await;
    for name in [
        "ivc-middle-postop-r1",
        "femoral-postop-r0",
        "ivc-metastatic",
    ] {
        let output = client(
            &server.url,
            &["--output", "json", "recommend", &vignette_path(name)],
            None,
        )
        .await;
        output.expect_exit_for(0, name);
        let mut from_cli: pb::Plan =
            serde_json::from_str(&output.stdout).expect("canonical proto3 JSON of a Plan");
        let vignette = vignette(name);
        let mut from_rpc = grpc
            .recommend(pb::RecommendRequest {
                case: Some(vignette.case()),
            })
            .await
            .expect("ok")
            .into_inner()
            .plan
            .expect("plan");
        assert!(!from_cli.recommendation_id.is_empty());
        from_cli.recommendation_id.clear();
        from_rpc.recommendation_id.clear();
        assert_eq!(from_cli, from_rpc, "{name}");
        // Canonical JSON uses lowerCamelCase names and enum value names.
        assert!(
            output.stdout.contains("\"siteGroup\": \"SITE_GROUP_"),
            "{}",
            output.stdout
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_reader_that_goes_away_ends_the_client_quietly_not_with_a_panic() {
    let server = TestServer::start().await;
    let path = vignette_path("ivc-middle-postop-r1");
    for args in [
        &["--output", "json", "recommend", path.as_str()][..],
        &["--output", "text", "recommend", path.as_str()][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vlms-rt"))
            .arg("--server")
            .arg(&server.url)
            .args(args)
            .env_remove("VLMS_RT_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client starts");
        // The reading end closes before the client has its answer to write (`… | head -0`).
        drop(child.stdout.take());
        let output = child.wait_with_output().await.expect("client runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    server.stop().await;
}

#[tokio::test]
async fn text_output_leads_with_indication_and_the_preferred_prescription() {
    let server = TestServer::start().await;
    let output = client(
        &server.url,
        &["recommend", &vignette_path("iliac-marginal")],
        None,
    )
    .await;
    output.expect_exit(0);
    let first_line = output.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first_line,
        "Radiotherapy: CONSIDER — setting PREOPERATIVE (site group RETROPERITONEAL)"
    );
    assert!(
        output
            .stdout
            .contains("50.4 Gy in 28 × 1.8 Gy, IMRT — EQD2 48.7 Gy (α/β 4), 48.4 Gy (α/β 3)"),
        "{}",
        output.stdout
    );
    let preferred = output
        .stdout
        .find("Preferred prescription")
        .expect("preferred");
    let alternatives = output.stdout.find("Alternatives").expect("alternatives");
    let alerts = output.stdout.find("Alerts").expect("alerts");
    assert!(preferred < alternatives && alternatives < alerts);
    let warning = output
        .stdout
        .find("WARNING  RPS_RT_NOT_STANDARD")
        .expect("warning alert");
    let info = output
        .stdout
        .find("INFO     CHEMORADIATION_OPTION")
        .expect("info alert");
    assert!(warning < info, "alerts by severity");
    assert!(output.stdout.contains("[STRASS2020]"));
    server.stop().await;
}

#[tokio::test]
async fn bad_input_prints_each_violation_and_exits_3() {
    let server = TestServer::start().await;
    let output = client(
        &server.url,
        &["recommend", &vignette_path("bad-three-missing")],
        None,
    )
    .await;
    output.expect_exit(3);
    for field in ["case.vessel", "case.tumor.grade", "case.phase"] {
        assert!(
            output
                .stderr
                .lines()
                .any(|line| line.trim_start().starts_with(&format!("{field}:"))),
            "{field} in {}",
            output.stderr
        );
    }
    let output = client(
        &server.url,
        &["check", &vignette_path("bad-check-postop-before-surgery")],
        None,
    )
    .await;
    output.expect_exit(3);
    assert!(
        output.stderr.contains("  dose_metrics[0].metric: "),
        "{}",
        output.stderr
    );

    // A list too long to show in full: the count covers the violations left out.
    let organs = vec!["ORGAN_UNSPECIFIED"; 60];
    let case = serde_json::json!({
        "evaluationDate": "2026-11-26",
        "vessel": "VESSEL_FEMORAL_VEIN",
        "tumor": {"sizeCm": 6.0, "grade": "GRADE_3", "depth": "DEPTH_DEEP"},
        "phase": "TREATMENT_PHASE_PRE_RESECTION",
        "resectability": "RESECTABILITY_RESECTABLE",
        "organsAtRisk": organs,
    })
    .to_string();
    let output = client(&server.url, &["recommend", "-"], Some(&case)).await;
    output.expect_exit(3);
    assert!(
        output.stderr.starts_with(
            "vlms-rt: the server rejected the input (INVALID_ARGUMENT): 60 problem(s)\n"
        ),
        "{}",
        output.stderr
    );
    assert!(
        output
            .stderr
            .contains("  case.organs_at_risk[50]: 10 more violations")
    );
    server.stop().await;
}

#[tokio::test]
async fn enum_numbers_the_contract_does_not_define_reach_the_server_as_violations() {
    // Proto3 JSON may give an enum as a number; one the contract does not define is the service's
    // to reject, field by field, not the client's to refuse as unreadable.
    let server = TestServer::start().await;
    let mut case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(vignette_path("femoral-postop-r0")).expect("read"),
    )
    .expect("json");
    let case = case.get_mut("case").expect("case");
    case["vessel"] = serde_json::json!(99);
    case["organsAtRisk"] = serde_json::json!(["ORGAN_LIVER", 42]);
    case["resection"]["margin"] = serde_json::json!(-3);
    let output = client(&server.url, &["recommend", "-"], Some(&case.to_string())).await;
    output.expect_exit(3);
    for field in [
        "case.vessel",
        "case.resection.margin",
        "case.organs_at_risk[1]",
    ] {
        assert!(
            output.stderr.contains(&format!("  {field}: ")),
            "{field} in {}",
            output.stderr
        );
    }
    let request = serde_json::json!({
        "case": case,
        "setting": 8,
        "phases": [{"kind": 5, "dosePerFractionGy": 2.0, "fractions": 25}]
    });
    let output = client(&server.url, &["check", "-"], Some(&request.to_string())).await;
    output.expect_exit(3);
    for field in ["case.vessel", "setting", "phases[0].kind"] {
        assert!(
            output.stderr.contains(&format!("  {field}: ")),
            "{field} in {}",
            output.stderr
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_exits_4_and_a_broken_file_exits_2() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let closed = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let output = client(
        &closed,
        &["recommend", &vignette_path("femoral-postop-r0")],
        None,
    )
    .await;
    output.expect_exit(4);
    assert!(output.stderr.contains("unreachable"));
    let output = client(&closed, &["recommend", "-"], Some("{not json")).await;
    output.expect_exit(2);
    let output = client(
        &closed,
        &["recommend", "-"],
        Some(r#"{"vesel": "VESSEL_OTHER"}"#),
    )
    .await;
    output.expect_exit_for(2, "misspelled fields are refused");
}

#[tokio::test]
async fn a_server_without_a_scheme_is_a_usage_error_and_a_byte_order_mark_is_read() {
    let output = client(
        "127.0.0.1:50051",
        &["recommend", &vignette_path("femoral-postop-r0")],
        None,
    )
    .await;
    output.expect_exit(2);
    assert!(
        output
            .stderr
            .contains("add http:// (plaintext) or https:// (TLS)"),
        "{}",
        output.stderr
    );
    let server = TestServer::start().await;
    let text = std::fs::read_to_string(vignette_path("femoral-postop-r0")).expect("read");
    let output = client(
        &server.url,
        &["--output", "json", "recommend", "-"],
        Some(&format!("\u{feff}{text}")),
    )
    .await;
    output.expect_exit(0);
    server.stop().await;
}

#[tokio::test]
async fn check_exits_5_when_the_verdict_reaches_fail_on() {
    let server = TestServer::start().await;
    for (vignette, fail_on, code) in [
        ("check-popliteal-r1-six-gy-fractions-fail", None, 0),
        ("check-popliteal-r1-six-gy-fractions-fail", Some("fail"), 5),
        (
            "check-popliteal-r1-six-gy-fractions-fail",
            Some("review"),
            5,
        ),
        ("check-femoral-preop-hypofractionated", Some("fail"), 0),
        ("check-femoral-preop-hypofractionated", Some("review"), 5),
        ("check-femoral-postop-60gy-pass", Some("review"), 0),
    ] {
        let path = vignette_path(vignette);
        let mut args = vec!["check", path.as_str()];
        if let Some(threshold) = fail_on {
            args.extend(["--fail-on", threshold]);
        }
        let output = client(&server.url, &args, None).await;
        output.expect_exit_for(code, &format!("{vignette} {fail_on:?}"));
        assert!(
            output.stdout.starts_with("Prescription check: "),
            "the answer is printed whatever the code: {}",
            output.stdout
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn stdin_with_default_evaluation_date_stream_check_guideline_and_health() {
    let server = TestServer::start().await;
    let mut case = vignette("femoral-preop-high-grade-deep-large").case();
    case.evaluation_date.clear();
    let json = serde_json::to_string(&case).expect("json");
    let output = client(
        &server.url,
        &["--output", "json", "recommend", "-"],
        Some(&json),
    )
    .await;
    output.expect_exit(0);
    let plan: pb::Plan = serde_json::from_str(&output.stdout).expect("plan");
    assert_eq!(plan.evaluation_date, vlms_rt::client::today());

    let output = client(
        &server.url,
        &[
            "--output",
            "json",
            "recommend",
            "--evaluation-date",
            "2026-01-05",
            "-",
        ],
        Some(&json),
    )
    .await;
    let plan: pb::Plan = serde_json::from_str(&output.stdout).expect("plan");
    assert_eq!(plan.evaluation_date, "2026-01-05");

    let lines = [
        std::fs::read_to_string(vignette_path("femoral-postop-r0")).expect("read"),
        std::fs::read_to_string(vignette_path("bad-negative-size")).expect("read"),
        std::fs::read_to_string(vignette_path("ivc-metastatic")).expect("read"),
    ]
    .iter()
    .map(|text| {
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(text).expect("json"))
            .expect("line")
    })
    .collect::<Vec<_>>()
    .join("\n");
    let output = client(
        &server.url,
        &["--output", "json", "stream", "-"],
        Some(&lines),
    )
    .await;
    output.expect_exit_for(3, "a rejected item makes the exit code 3");
    let items: Vec<serde_json::Value> = output
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("item"))
        .collect();
    assert_eq!(items.len(), 3);
    for index in [0, 2] {
        let item: pb::RecommendStreamResponse =
            serde_json::from_value(items[index].clone()).expect("a plan item");
        assert!(matches!(
            item.result,
            Some(pb::recommend_stream_response::Result::Plan(_))
        ));
    }
    assert_eq!(items[2]["caseId"], "ivc-metastatic");
    // A rejected case's violations in canonical proto3 JSON: the Any's `@type` beside the
    // BadRequest's own fields, not its bytes in base64.
    let error = &items[1]["error"];
    assert_eq!(error["code"], 3, "{error}");
    let details = error["details"].as_array().expect("details");
    assert_eq!(details.len(), 1, "{error}");
    assert_eq!(
        details[0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert!(details[0].get("value").is_none(), "{error}");
    let violations = details[0]["fieldViolations"]
        .as_array()
        .expect("violations");
    assert_eq!(violations.len(), 1, "{error}");
    assert_eq!(violations[0]["field"], "case.tumor.size_cm");
    assert!(
        violations[0]["description"]
            .as_str()
            .is_some_and(|text| !text.is_empty())
    );

    let output = client(
        &server.url,
        &["check", &vignette_path("check-ivc-postop-boost-fails")],
        None,
    )
    .await;
    output.expect_exit(0);
    assert!(
        output.stdout.starts_with("Prescription check: FAIL"),
        "{}",
        output.stdout
    );
    assert!(output.stdout.contains("FAIL   RX_BOOST"));

    let output = client(&server.url, &["guideline"], None).await;
    output.expect_exit(0);
    assert!(
        output.stdout.contains("GATE-METASTATIC") && output.stdout.contains("OUTCOME-IVC-RENAL")
    );
    // The version and what changed since the previous one, before the rules.
    assert!(
        output.stdout.starts_with("Guideline 2026.2 (sha256 "),
        "{}",
        output.stdout
    );
    let changes = output
        .stdout
        .find("Changes since 2026.1:")
        .expect("changes");
    let rules = output.stdout.find("\nRules:").expect("rules");
    assert!(changes < rules);
    assert!(
        output.stdout.contains("RX_TOTAL_DOSE") && output.stdout.contains("    Why: "),
        "{}",
        output.stdout
    );

    let output = client(&server.url, &["health"], None).await;
    assert_eq!(
        (output.code, output.stdout.trim()),
        (0, "vlms.rt.v1.RecommendationService: SERVING")
    );

    // Without an audit trail there is nothing to show; the code is named as gRPC spells it.
    let output = client(&server.url, &["show", "01JDQ5Z8M4X7R2K9V3T6N1B0CE"], None).await;
    output.expect_exit(1);
    assert!(
        output.stderr.contains("FAILED_PRECONDITION: "),
        "{}",
        output.stderr
    );
    server.stop().await;
}

#[tokio::test]
async fn the_2026_2_case_fields_are_read_from_json_and_shown() {
    let server = TestServer::start().await;
    // The completed preoperative course: no second course, said in the text.
    let output = client(
        &server.url,
        &[
            "recommend",
            &vignette_path("femoral-postop-r1-after-preop-rt"),
        ],
        None,
    )
    .await;
    output.expect_exit(0);
    assert!(
        output
            .stdout
            .starts_with("Radiotherapy: CONSIDER — setting NONE (site group EXTREMITY)"),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("WARNING  POSTOP_BOOST_NOT_ROUTINE"),
        "{}",
        output.stdout
    );
    assert!(!output.stdout.contains("Preferred prescription"));
    // The new organs by name in JSON, each row with its note.
    let case = r#"{"evaluationDate": "2026-11-26", "vessel": "VESSEL_ILIAC_VEIN",
        "tumor": {"sizeCm": 8, "grade": "GRADE_3"},
        "phase": "TREATMENT_PHASE_PRE_RESECTION", "resectability": "RESECTABILITY_RESECTABLE",
        "organsAtRisk": ["ORGAN_BLADDER", "ORGAN_DUODENUM", "ORGAN_HEART", "ORGAN_LUNGS",
                         "ORGAN_ESOPHAGUS"],
        "preoperativeRtDelivered": false}"#;
    let output = client(&server.url, &["recommend", "-"], Some(case)).await;
    output.expect_exit(0);
    for expected in [
        "Bladder      Max[Gy]",
        "Esophagus    Mean[Gy]",
        "Heart        V25Gy[%]",
        "Lungs        V20Gy[%]",
        "Bladder: Maximum bladder dose",
        "INFO     OAR_LIMIT_NOT_VERIFIED",
    ] {
        assert!(
            output.stdout.contains(expected),
            "{expected}: {}",
            output.stdout
        );
    }
    // `null` for the new flag is refused like any other null.
    let output = client(
        &server.url,
        &["recommend", "-"],
        Some(&case.replace("false}", "null}")),
    )
    .await;
    output.expect_exit(2);
    assert!(
        output.stderr.contains("preoperativeRtDelivered"),
        "{}",
        output.stderr
    );
    server.stop().await;
}

#[test]
fn json_input_refuses_repeated_names_and_nulls_and_takes_whole_numbers_as_integers() {
    use vlms_rt::client::{Failure, parse_case, parse_check_request};
    let case = r#"{"evaluationDate":"2026-11-26","vessel":"VESSEL_FEMORAL_VEIN",
        "tumor":{"sizeCm":6,"grade":"GRADE_3","depth":"DEPTH_DEEP"},
        "phase":"TREATMENT_PHASE_POST_RESECTION",
        "resection":{"margin":"MARGIN_R0","surgeryDate":"2026-10-20"}"#;

    // A name given twice is refused, never resolved silently to one of its values.
    for twice in [
        format!(r#"{case},"evaluationDate":"2026-11-27"}}"#),
        case.replace(r#""sizeCm":6,"#, r#""sizeCm":6,"sizeCm":16,"#) + "}",
    ] {
        match parse_case(&twice, "input") {
            Err(Failure::Usage(message)) => {
                assert!(message.contains("is given twice"), "{message}")
            }
            other => panic!("accepted a name given twice: {other:?}"),
        }
    }
    // The same name in two different objects is no repeat.
    let nested = format!(r#"{{"name":"x","case":{case}}}}}"#);
    assert!(parse_case(&nested, "input").is_ok());

    // `null` is refused wherever it stands, naming where: read as a default it would turn an
    // unknown answer into "no" (metastatic disease, prior RT) or into today's date.
    for (member, path) in [
        (r#""metastaticDisease":null"#, "metastaticDisease"),
        (r#""priorRadiotherapy":null"#, "priorRadiotherapy"),
        (r#""evaluationDate":null"#, "evaluationDate"),
        (r#""ivcSegment":null"#, "ivcSegment"),
        (r#""organsAtRisk":[null]"#, "organsAtRisk[0]"),
        (r#""caseId":null"#, "caseId"),
    ] {
        let with_null = format!(
            r#"{{"case":{},{member}}}}}"#,
            case.replace(r#""evaluationDate":"2026-11-26","#, "",)
        );
        match parse_case(&with_null, "input") {
            Err(Failure::Usage(message)) => assert!(
                message.contains(&format!("case.{path} is null")),
                "{member}: {message}"
            ),
            other => panic!("{member} accepted: {other:?}"),
        }
    }

    // An evaluation date written empty is refused rather than filled with today's.
    let empty_date = case.replace(r#""evaluationDate":"2026-11-26""#, r#""evaluationDate":"""#);
    match parse_case(&format!("{empty_date}}}"), "input") {
        Err(Failure::Usage(message)) => {
            assert!(message.contains("evaluationDate is empty"), "{message}")
        }
        other => panic!("an empty date accepted: {other:?}"),
    }
    let request = format!(r#"{{"case":{empty_date}}},"setting":"SETTING_POSTOPERATIVE"}}"#);
    match parse_check_request(&request, "input") {
        Err(Failure::Usage(message)) => {
            assert!(
                message.contains("case.evaluationDate is empty"),
                "{message}"
            )
        }
        other => panic!("an empty date accepted: {other:?}"),
    }

    // Whole numbers written with a fraction or an exponent, where an integer is expected.
    for fractions in ["25", "25.0", "2.5e1", "\"25\""] {
        let request = format!(
            r#"{{"case":{case}}},"setting":"SETTING_POSTOPERATIVE",
            "phases":[{{"kind":"PHASE_KIND_INITIAL","dosePerFractionGy":2.0,"fractions":{fractions}}}]}}"#
        );
        let parsed = parse_check_request(&request, "input")
            .unwrap_or_else(|error| panic!("{fractions}: {error:?}"));
        assert_eq!(parsed.phases[0].fractions, 25, "{fractions}");
        assert_eq!(parsed.phases[0].dose_per_fraction_gy, 2.0);
    }
    // A value of the wrong kind is refused with the place it stands.
    let request = format!(
        r#"{{"case":{case}}},"phases":[{{"kind":"PHASE_KIND_INITIAL","fractions":99999999999}}]}}"#
    );
    match parse_check_request(&request, "input") {
        Err(Failure::Usage(message)) => {
            assert!(message.contains(" at phases[0].fractions: "), "{message}")
        }
        other => panic!("accepted: {other:?}"),
    }
    let wrong_kind = case.replace(r#""sizeCm":6"#, r#""sizeCm":"six""#) + "}";
    match parse_case(&wrong_kind, "input") {
        Err(Failure::Usage(message)) => {
            assert!(message.contains(" at tumor.sizeCm: "), "{message}")
        }
        other => panic!("accepted: {other:?}"),
    }

    // A fraction is still no integer.
    let request = format!(
        r#"{{"case":{case}}},"phases":[{{"kind":"PHASE_KIND_INITIAL","fractions":25.5}}]}}"#
    );
    assert!(matches!(
        parse_check_request(&request, "input"),
        Err(Failure::Usage(_))
    ));
}
