//! The CDS Hooks front through the real server: every published vignette's case written as a FHIR
//! chart (`fhir_chart`) and sent as patient-view gives, in its cards, the plan `Recommend` gives for
//! that case; missing, conflicting and out-of-scope charts, omitted prefetch keys, malformed
//! requests, order-sign with the check vignettes, feedback, the JWT checks, CORS and HTTP/2.
//!
//! Every request and response pair is also written to `target/cds-out/` for the offline FHIR and
//! CDS Hooks validator (`tests/python/test_cds_hooks_validate.py` runs it).

use std::sync::Arc;

use serde_json::{Value, json};
use vlms_rt::pb;
use vlms_rt::startup::Settings;

use crate::fhir_chart::{
    ChartOptions, ChartVariant, FHIR_SERVER, chartable, mapped_case, patient_view_request,
    prefetch, prefetch_without, request_around, required_fields,
};
use crate::support::{TestServer, profile, vignettes};

const SITE: &str = "https://vlms-rt.example.org";
const ORIGIN: &str = "https://ehr.example.org";

/// A server with a SQLite audit trail and the CDS Hooks port on loopback.
struct Front {
    server: TestServer,
    cds: String,
    /// The SQLite audit file.
    audit: std::path::PathBuf,
}

impl Front {
    async fn start(issuers: Option<Arc<vlms_rt::cds::jwt::Issuers>>) -> Front {
        let path =
            std::env::temp_dir().join(format!("vlms-rt-cds-{}.sqlite3", uuid::Uuid::new_v4()));
        let (store, reader) =
            vlms_rt::audit::open(path.to_str().expect("utf-8"), None, None).expect("audit store");
        let mut settings = Settings::new("127.0.0.1:0".parse().expect("address"), profile());
        settings.audit = Some(vlms_rt::audit::Auditor::start(store, reader));
        settings.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
        settings.cds_hooks = Some(cds_settings(issuers));
        let server = TestServer::start_with(settings).await;
        let cds = cds_address(&server);
        Front {
            server,
            cds,
            audit: path,
        }
    }

    async fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        http(&self.cds, "POST", path, &[], body).await
    }

    async fn hook(&self, service: &str, request: &Value) -> (u16, Value) {
        let (status, body) = post_hook(&self.cds, service, request).await;
        let body = serde_json::from_str(&body)
            .unwrap_or_else(|error| panic!("answer is not JSON ({error}): {body}"));
        (status, body)
    }

    /// Posts `feedback` to `service`'s feedback endpoint: the status and the body of the answer.
    async fn feedback(&self, service: &str, feedback: &Value) -> (u16, String) {
        self.post(
            &format!("/cds-services/{service}/feedback"),
            feedback.to_string().as_bytes(),
        )
        .await
    }
}

/// Calls the CDS service `service` on the CDS Hooks port at `address` with `request`, without a
/// token: the status and the body of the answer.
async fn post_hook(address: &str, service: &str, request: &Value) -> (u16, String) {
    http(
        address,
        "POST",
        &format!("/cds-services/{service}"),
        &[],
        request.to_string().as_bytes(),
    )
    .await
}

/// The id of the recommendation (or check) a card was issued for, which names its audit record.
fn recommendation_id(card: &Value) -> &str {
    card["extension"]["org.example.vlms-rt.recommendation"]["recommendationId"]
        .as_str()
        .unwrap_or_else(|| panic!("a card without a recommendation id: {card}"))
}

/// The audit record of `id`, which the test expects to be there.
async fn stored_record(
    client: &mut pb::recommendation_service_client::RecommendationServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
) -> pb::RecommendationRecord {
    client
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: id.to_owned(),
        })
        .await
        .unwrap_or_else(|status| panic!("{id} not recorded: {status:?}"))
        .into_inner()
}

/// The `host:port` of a running server's CDS Hooks port.
fn cds_address(server: &TestServer) -> String {
    server
        .server
        .as_ref()
        .and_then(|running| running.cds_hooks.as_ref())
        .expect("CDS Hooks port")
        .local_addr
        .to_string()
}

fn cds_settings(issuers: Option<Arc<vlms_rt::cds::jwt::Issuers>>) -> vlms_rt::cds::CdsSettings {
    vlms_rt::cds::CdsSettings {
        listen: "127.0.0.1:0".parse().expect("address"),
        canonical_base: SITE.into(),
        extension_prefix: "org.example.vlms-rt".into(),
        time_zone: jiff::tz::TimeZone::get("Europe/Amsterdam").expect("time zone"),
        issuers,
        public_url: None,
        case_id_key: vec![7; 32],
        max_body_bytes: 256 * 1024,
        cors_origins: vec![ORIGIN.into()],
        intake_url: Some("https://intake.example.org/launch".into()),
        fetch: vlms_rt::cds::fetch::FetchPolicy {
            allow_loopback_http: true,
            timeout: std::time::Duration::from_secs(5),
            ..vlms_rt::cds::fetch::FetchPolicy::default()
        },
    }
}

/// One HTTP/1.1 exchange: the status and the body (bodies here always carry a length).
async fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let (status, head, body) = http_with_head(address, method, path, headers, body).await;
    let _ = head;
    (status, body)
}

async fn http_with_head(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("CDS Hooks port");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8(answer).expect("utf-8 answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    (status, head.to_string(), body.to_string())
}

fn out_dir() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cds-out");
    std::fs::create_dir_all(&dir).expect("output directory");
    dir
}

/// Saves a request and its answer for the offline validator.
fn save(name: &str, request: &Value, response: &Value) {
    let dir = out_dir();
    std::fs::write(
        dir.join(format!("{name}.request.json")),
        request.to_string(),
    )
    .expect("write request");
    std::fs::write(
        dir.join(format!("{name}.response.json")),
        response.to_string(),
    )
    .expect("write response");
}

/// Saves the Bundle form of a saved exchange.
fn save_bundle(name: &str, bundle: &Value) {
    std::fs::write(
        out_dir().join(format!("{name}.bundle.json")),
        bundle.to_string(),
    )
    .expect("write bundle");
}

fn options(index: usize) -> ChartOptions {
    let mut options = ChartOptions::new(&format!("pat-{index}"), &format!("cond-lms-{index}"));
    // Every variant is used by some vignette.
    options.variant = ChartVariant::all()[index % 16];
    options
}

fn severity_indicator(severity: i32) -> &'static str {
    match pb::Severity::try_from(severity) {
        Ok(pb::Severity::Critical) => "critical",
        Ok(pb::Severity::Warning) => "warning",
        _ => "info",
    }
}

#[tokio::test]
async fn every_vignette_chart_gives_the_plan_recommend_gives() {
    let front = Front::start(None).await;
    let mut client = front.server.client().await;
    let mut plans = 0;
    let mut refused = 0;
    for (index, (name, case)) in chartable().into_iter().enumerate() {
        let options = options(index);
        let request = patient_view_request(&case, &options, &uuid::Uuid::new_v4().to_string());
        let (status, answer) = front.hook("vlms-rt-plan", &request).await;
        assert_eq!(status, 200, "{name}: {answer}");
        save(&format!("plan-{name}"), &request, &answer);
        let cards = answer["cards"].as_array().expect("cards");
        let expected_case = mapped_case(&case);
        let direct = client
            .recommend(pb::RecommendRequest {
                case: Some(expected_case.clone()),
            })
            .await;
        let direct = match direct {
            Ok(response) => response.into_inner().plan.expect("plan"),
            Err(status) => {
                // The chart holds values the guideline refuses: one warning card naming them.
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{name}");
                assert_eq!(cards.len(), 1, "{name}: {answer}");
                assert_eq!(cards[0]["indicator"], "warning", "{name}");
                for field in crate::support::bad_request_fields(&status) {
                    let field = field.trim_start_matches("case.");
                    assert!(
                        cards[0]["detail"].as_str().expect("detail").contains(field),
                        "{name}: the card does not name {field}"
                    );
                }
                refused += 1;
                continue;
            }
        };
        plans += 1;
        let plan_card = &cards[0];
        let link = &plan_card["extension"]["org.example.vlms-rt.recommendation"];
        // The recorded case is the chart's, read exactly; the recorded plan is Recommend's.
        let record = stored_record(&mut client, recommendation_id(plan_card)).await;
        let Some(pb::recommendation_record::Content::Recommend(stored)) = record.content else {
            panic!("{name}: not a plan record");
        };
        let mut sent_case = stored.case.expect("case");
        assert!(
            sent_case.case_id.starts_with("cdsh:"),
            "{}",
            sent_case.case_id
        );
        sent_case.case_id.clear();
        assert_eq!(
            sent_case, expected_case,
            "{name}: the chart was not read exactly"
        );
        let mut stored_plan = stored.plan.expect("plan");
        let mut direct = direct;
        stored_plan.recommendation_id.clear();
        stored_plan.case_id.clear();
        direct.recommendation_id.clear();
        direct.case_id.clear();
        assert_eq!(
            stored_plan, direct,
            "{name}: the plan differs from Recommend's"
        );
        // The cards say what the plan says.
        let rule_ids: Vec<&str> = direct.trace.iter().map(|t| t.rule_id.as_str()).collect();
        assert_eq!(link["ruleIds"], json!(rule_ids), "{name}");
        let worst = direct.alerts.iter().map(|a| a.severity).max().unwrap_or(0);
        assert_eq!(plan_card["indicator"], severity_indicator(worst), "{name}");
        assert_eq!(cards.len(), 1 + direct.alerts.len(), "{name}");
        for (card, alert) in cards[1..].iter().zip(&direct.alerts) {
            assert_eq!(card["summary"], alert.summary, "{name}");
            assert_eq!(card["source"]["topic"]["code"], alert.code, "{name}");
            assert_eq!(
                card["indicator"],
                severity_indicator(alert.severity),
                "{name}"
            );
        }
        for card in cards {
            let summary = card["summary"].as_str().expect("summary");
            assert!(summary.chars().count() < 140, "{name}: {summary}");
        }
        let preferred = direct.prescriptions.iter().find(|p| p.preferred);
        if let Some(preferred) = preferred {
            let summary = plan_card["summary"].as_str().expect("summary");
            let total = format!("{} Gy", trim(preferred.total_dose_gy));
            assert!(summary.contains(&total), "{name}: {summary}");
        }
        // One draft-order suggestion per option; recommended only when the guideline indicates.
        let suggestions = plan_card["suggestions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(suggestions.len(), direct.prescriptions.len(), "{name}");
        let recommendable = matches!(
            direct.indication(),
            pb::Indication::Indicated | pb::Indication::Mandatory
        );
        let recommended = suggestions
            .iter()
            .filter(|s| s["isRecommended"] == json!(true))
            .count();
        assert_eq!(
            recommended,
            usize::from(recommendable && preferred.is_some()),
            "{name}"
        );
        assert!(
            suggestions
                .iter()
                .all(|s| s["isRecommended"] != json!(false)),
            "{name}"
        );
        // The same request as the FHIR Bundle form.
        let (status, bundle) = front
            .post("/fhir/$recommend", request.to_string().as_bytes())
            .await;
        assert_eq!(status, 200, "{name}: {bundle}");
        let bundle: Value = serde_json::from_str(&bundle).expect("Bundle");
        save_bundle(&format!("plan-{name}"), &bundle);
        let kinds: Vec<&str> = bundle["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["resource"]["resourceType"].as_str())
            .collect();
        let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
        assert_eq!(count("GuidanceResponse"), 1, "{name}");
        assert_eq!(count("DetectedIssue"), direct.alerts.len(), "{name}");
        assert_eq!(count("Provenance"), 1, "{name}");
        let resources: Vec<&Value> = bundle["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| &e["resource"])
            .collect();
        // The Bundle says what the plan says: its alerts, in order, and one option per
        // prescription.
        let issue_codes: Vec<&Value> = resources
            .iter()
            .filter(|r| r["resourceType"] == "DetectedIssue")
            .map(|r| &r["code"]["coding"][0]["code"])
            .collect();
        let alert_codes: Vec<Value> = direct.alerts.iter().map(|a| json!(a.code)).collect();
        assert_eq!(
            issue_codes,
            alert_codes.iter().collect::<Vec<_>>(),
            "{name}"
        );
        let options = resources
            .iter()
            .find(|r| r["resourceType"] == "RequestGroup")
            .and_then(|group| group["action"][0]["action"].as_array())
            .map_or(0, Vec::len);
        assert_eq!(options, direct.prescriptions.len(), "{name}");
    }
    assert!(plans >= 20, "{plans} vignettes planned");
    assert!(refused >= 1, "{refused} vignettes refused");
    front.server.stop().await;
}

fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[tokio::test]
async fn each_missing_fact_gives_the_data_required_card_and_no_plan() {
    let front = Front::start(None).await;
    let mut asked = 0;
    for (index, (name, case)) in chartable().into_iter().enumerate().step_by(3) {
        let options = options(index);
        for field in required_fields(&case, &options) {
            let without = prefetch_without(&case, &options, field).expect("charted fact");
            let request = request_around(
                &case,
                &options,
                "0d8c2b11-0000-4000-8000-000000000001",
                without,
            );
            let (status, answer) = front.hook("vlms-rt-plan", &request).await;
            assert_eq!(status, 200, "{name} without {field}: {answer}");
            let cards = answer["cards"].as_array().expect("cards");
            assert_eq!(cards.len(), 1, "{name} without {field}: {answer}");
            let data = &cards[0]["extension"]["org.example.vlms-rt.data-required"];
            assert_eq!(data["missing"], json!([field]), "{name} without {field}");
            assert!(data.get("conflicting").is_none(), "{name} without {field}");
            assert_eq!(cards[0]["indicator"], "info");
            assert_eq!(cards[0]["links"][0]["type"], "smart");
            asked += 1;
            if asked % 25 == 1 {
                save(
                    &format!("missing-{name}-{}", field.replace('.', "_")),
                    &request,
                    &answer,
                );
            }
        }
    }
    assert!(asked > 50, "{asked} facts removed");
    // No plan was recorded for any of them.
    let metrics = crate::support::http_get(&front.server.metrics_addr(), "/metrics").await;
    assert!(!metrics.contains("outcome=\"plan\""), "{metrics}");
    assert!(metrics.contains("outcome=\"data-required\""), "{metrics}");
    front.server.stop().await;
}

/// The IVC R1 vignette's chart, for the tests below.
fn ivc_chart() -> (pb::Case, ChartOptions) {
    let (_, case) = chartable()
        .into_iter()
        .find(|(name, _)| name == "ivc-middle-postop-r1")
        .expect("the IVC vignette");
    (case, ChartOptions::new("pat-ivc", "cond-lms-ivc"))
}

fn entries<'a>(prefetch: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    prefetch[key]["entry"].as_array_mut().expect("entries")
}

#[tokio::test]
async fn contradicting_or_out_of_scope_charts_give_no_plan() {
    let front = Front::start(None).await;
    let (case, options) = ivc_chart();
    // Two residual-tumour classifications on the same day that disagree: a conflict card.
    let mut chart = prefetch(&case, &options);
    let margin = entries(&mut chart, "pathology")
        .iter()
        .map(|entry| &entry["resource"])
        .find(|o| o["code"]["coding"][0]["code"] == "17964000")
        .cloned()
        .expect("margin observation");
    let mut other = margin.clone();
    other["id"] = json!("obs-residual-2");
    other["valueCodeableConcept"]["coding"][0]["code"] = json!("1222638005");
    entries(&mut chart, "pathology").push(json!({"resource": other}));
    let request = request_around(
        &case,
        &options,
        "1d8c2b11-0000-4000-8000-000000000001",
        chart,
    );
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!(status, 200, "{answer}");
    save("conflict-margin", &request, &answer);
    assert_eq!(
        answer["cards"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(answer["cards"][0]["indicator"], "warning");
    assert_eq!(
        answer["cards"][0]["extension"]["org.example.vlms-rt.data-required"]["conflicting"],
        json!(["resection.margin"])
    );

    // Not a leiomyosarcoma: no decision support, no cards.
    let mut chart = prefetch(&case, &options);
    let condition = &mut entries(&mut chart, "conditions")[0]["resource"];
    let histology = condition["extension"]
        .as_array_mut()
        .expect("extensions")
        .iter_mut()
        .find(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("histology-morphology-behavior"))
        })
        .expect("histology");
    histology["valueCodeableConcept"]["coding"][0]["code"] = json!("8800/3");
    let request = request_around(
        &case,
        &options,
        "2d8c2b11-0000-4000-8000-000000000001",
        chart,
    );
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!((status, answer.clone()), (200, json!({"cards": []})));

    // A provisional diagnosis is not a confirmed primary either.
    let mut chart = prefetch(&case, &options);
    entries(&mut chart, "conditions")[0]["resource"]["verificationStatus"]["coding"][0]["code"] =
        json!("provisional");
    let request = request_around(
        &case,
        &options,
        "3d8c2b11-0000-4000-8000-000000000001",
        chart,
    );
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!((status, answer), (200, json!({"cards": []})));

    // A minor: an information card, no plan.
    let mut young = options.clone();
    young.birth_date = Some("2010-01-01".into());
    let request = patient_view_request(&case, &young, "4d8c2b11-0000-4000-8000-000000000001");
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!(status, 200);
    save("minor", &request, &answer);
    assert_eq!(answer["cards"].as_array().map(Vec::len), Some(1));
    assert!(
        answer["cards"][0]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("outside the intended population")),
        "{answer}"
    );
    front.server.stop().await;
}

#[tokio::test]
async fn omitted_prefetch_without_a_fhir_server_token_is_412() {
    let front = Front::start(None).await;
    let (case, options) = ivc_chart();
    let mut request = patient_view_request(&case, &options, "5d8c2b11-0000-4000-8000-000000000001");
    request["prefetch"]
        .as_object_mut()
        .expect("prefetch")
        .remove("assessments");
    request["prefetch"]["staging"] = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]});
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!(status, 412, "{answer}");
    assert_eq!(answer["resourceType"], "OperationOutcome");
    let expressions: Vec<&Value> = answer["issue"]
        .as_array()
        .expect("issues")
        .iter()
        .map(|issue| &issue["expression"][0])
        .collect();
    assert_eq!(
        expressions,
        vec![&json!("prefetch.staging"), &json!("prefetch.assessments")]
    );
    assert!(
        answer["issue"]
            .as_array()
            .expect("issues")
            .iter()
            .all(|i| i["code"] == "required")
    );

    // A paginated searchset cannot be shown complete: 412 as well.
    let mut request = patient_view_request(&case, &options, "6d8c2b11-0000-4000-8000-000000000001");
    request["prefetch"]["procedures"]["link"] =
        json!([{"relation": "next", "url": format!("{FHIR_SERVER}/Procedure?page=2")}]);
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!(status, 412, "{answer}");

    // A key sent as null means "the chart has none": not an error, and here a missing fact.
    let mut request = patient_view_request(&case, &options, "7d8c2b11-0000-4000-8000-000000000001");
    request["prefetch"]["staging"] = Value::Null;
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["cards"][0]["extension"]["org.example.vlms-rt.data-required"]["missing"],
        json!(["metastatic_disease"])
    );
    front.server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_with_an_operation_outcome() {
    let front = Front::start(None).await;
    let (case, options) = ivc_chart();
    let good = patient_view_request(&case, &options, "8d8c2b11-0000-4000-8000-000000000001");
    let mut wrong_hook = good.clone();
    wrong_hook["hook"] = json!("order-sign");
    let mut no_context = good.clone();
    no_context
        .as_object_mut()
        .expect("object")
        .remove("context");
    let mut bad_boolean = good.clone();
    entries(&mut bad_boolean["prefetch"], "assessments")[0]["resource"]["valueBoolean"] =
        json!("yes");
    let oversized = vec![b' '; 300 * 1024];
    let plan = "/cds-services/vlms-rt-plan";
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("not JSON", plan, b"{not json".to_vec(), 400),
        ("wrong hook", plan, wrong_hook.to_string().into_bytes(), 400),
        ("no context", plan, no_context.to_string().into_bytes(), 400),
        (
            "bad FHIR value",
            plan,
            bad_boolean.to_string().into_bytes(),
            400,
        ),
        (
            "unknown service",
            "/cds-services/nope",
            good.to_string().into_bytes(),
            404,
        ),
        (
            "unknown path",
            "/somewhere",
            good.to_string().into_bytes(),
            404,
        ),
        ("oversized", plan, oversized, 413),
        ("a JSON array", plan, b"[1,2]".to_vec(), 400),
    ];
    for (what, path, body, expected) in cases {
        let (status, answer) = front.post(path, &body).await;
        assert_eq!(status, expected, "{what}: {answer}");
        let answer: Value = serde_json::from_str(&answer).expect("an OperationOutcome");
        assert_eq!(answer["resourceType"], "OperationOutcome", "{what}");
        assert!(answer["issue"][0]["diagnostics"].is_string(), "{what}");
    }
    let (status, answer) = http(&front.cds, "GET", "/cds-services/vlms-rt-plan", &[], b"").await;
    assert_eq!(status, 405, "{answer}");
    // The bad boolean is named by its place in the request.
    let (_, answer) = front
        .post(
            "/cds-services/vlms-rt-plan",
            bad_boolean.to_string().as_bytes(),
        )
        .await;
    assert!(
        answer.contains("prefetch.assessments.entry[0].resource.valueBoolean"),
        "{answer}"
    );
    // Arbitrary bytes never make a 5xx.
    let mut seed = 0x2545_f491_u64;
    for round in 0..200 {
        let mut body = good.to_string().into_bytes();
        for _ in 0..8 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % body.len();
            body[at] = (seed >> 32) as u8;
        }
        let (status, answer) = front.post("/cds-services/vlms-rt-plan", &body).await;
        assert!(status < 500, "round {round}: {status} {answer}");
    }
    front.server.stop().await;
}

#[tokio::test]
async fn discovery_lists_the_services_over_http1_and_http2_with_cors() {
    let front = Front::start(None).await;
    let (status, head, body) = http_with_head(
        &front.cds,
        "GET",
        "/cds-services",
        &[("Origin", ORIGIN)],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{head}"
    );
    let discovery: Value = serde_json::from_str(&body).expect("JSON");
    let services: Vec<(&str, &str)> = discovery["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or(""),
                s["hook"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        services,
        vec![
            ("vlms-rt-plan", "patient-view"),
            ("vlms-rt-rx-check", "order-select"),
            ("vlms-rt-rx-check", "order-sign")
        ]
    );
    for service in discovery["services"].as_array().expect("services") {
        let keys: Vec<&String> = service["prefetch"]
            .as_object()
            .expect("prefetch")
            .keys()
            .collect();
        assert_eq!(keys.len(), 7);
        assert_eq!(
            service["extension"]["org.example.vlms-rt.service"]["guidelineVersion"],
            "2026.2"
        );
    }
    let (status, body) = http(&front.cds, "GET", "/health", &[], b"").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"SERVING"}"#));
    // An origin not configured gets no CORS headers; a preflight from a configured one does.
    let (_, head, _) = http_with_head(
        &front.cds,
        "GET",
        "/cds-services",
        &[("Origin", "https://elsewhere.example.org")],
        b"",
    )
    .await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{head}"
    );
    let (status, head, _) = http_with_head(
        &front.cds,
        "OPTIONS",
        "/cds-services/vlms-rt-plan",
        &[
            ("Origin", ORIGIN),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 204);
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-headers: authorization, content-type"),
        "{head}"
    );

    // HTTP/2 with prior knowledge.
    let tcp = tokio::net::TcpStream::connect(&front.cds)
        .await
        .expect("connect");
    let (mut sender, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("GET")
        .uri(format!("http://{}/cds-services", front.cds))
        .body(())
        .expect("request");
    let (response, _) = sender.send_request(request, true).expect("send");
    let response = response.await.expect("answer");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("chunk");
        body.flow_control()
            .release_capacity(chunk.len())
            .expect("capacity");
        bytes.extend_from_slice(&chunk);
    }
    let over_h2: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(over_h2, discovery);
    front.server.stop().await;
}

/// Draft CodeX orders for a proposal, in the form of the design's order-sign example.
fn draft_orders(request: &pb::CheckPrescriptionRequest, patient: &str, condition: &str) -> Value {
    let codex = "http://hl7.org/fhir/us/codex-radiation-therapy/StructureDefinition/";
    let category =
        json!([{"coding": [{"system": "http://snomed.info/sct", "code": "1287742003"}]}]);
    let setting = match pb::Setting::try_from(request.setting) {
        Ok(pb::Setting::Preoperative) => "preoperative",
        Ok(pb::Setting::Postoperative) => "postoperative",
        _ => "neoadjuvant-chemoradiation",
    };
    let total: f64 = request
        .phases
        .iter()
        .map(|p| p.dose_per_fraction_gy * f64::from(p.fractions))
        .sum();
    let fractions: i32 = request.phases.iter().map(|p| p.fractions).sum();
    let mut course = json!({
        "resourceType": "ServiceRequest", "id": "rx-course", "status": "draft", "intent": "original-order",
        "identifier": [{"use": "usual", "system": "https://ehr.example.org/rt-rx", "value": "rx-course"},
                       {"use": "official", "system": "urn:ietf:rfc:3986", "value": "urn:uuid:6a5c2d0e-8f51-4c0b-9e1a-3a4cf0e2b6d1"}],
        "category": category,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1217123003"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "reasonReference": [{"reference": format!("Condition/{condition}")}],
        "extension": [
            {"url": format!("{codex}codexrt-radiotherapy-dose-prescribed-to-volume"), "extension": [
                {"url": "volume", "valueReference": {"reference": "BodyStructure/ptv"}},
                {"url": "totalDose", "valueQuantity": {"value": (total * 100.0).round(), "unit": "cGy", "system": "http://unitsofmeasure.org", "code": "cGy"}},
                {"url": "fractions", "valuePositiveInt": fractions}]},
            {"url": format!("{SITE}/fhir/StructureDefinition/vlms-rt-setting"),
             "valueCodeableConcept": {"coding": [{"system": format!("{SITE}/fhir/CodeSystem/vlms-rt-setting"), "code": setting}]}}
        ]
    });
    if !request.planned_start_date.is_empty() {
        course["occurrencePeriod"] = json!({"start": request.planned_start_date});
    }
    let mut entry = vec![json!({"resource": course})];
    for (index, phase) in request.phases.iter().enumerate() {
        let kind = if phase.kind == pb::PhaseKind::Boost as i32 {
            "boost"
        } else {
            "initial"
        };
        let cgy = (phase.dose_per_fraction_gy * 100.0 * 1000.0).round() / 1000.0;
        entry.push(json!({"resource": {
            "resourceType": "ServiceRequest", "id": format!("rx-phase-{index}"), "status": "draft", "intent": "original-order",
            "identifier": [{"use": "usual", "system": "https://ehr.example.org/rt-rx", "value": format!("rx-phase-{index}")},
                           {"use": "official", "system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:6a5c2d0e-8f51-4c0b-9e1a-3a4cf0e2b6{index:02}")}],
            "category": category,
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1222565005"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "basedOn": [{"reference": "ServiceRequest/rx-course"}],
            "extension": [
                {"url": format!("{codex}codexrt-radiotherapy-fractions-prescribed"), "valuePositiveInt": phase.fractions},
                {"url": format!("{codex}codexrt-radiotherapy-dose-prescribed-to-volume"), "extension": [
                    {"url": "volume", "valueReference": {"reference": "BodyStructure/ptv"}},
                    {"url": "totalDose", "valueQuantity": {"value": (cgy * f64::from(phase.fractions) * 1000.0).round() / 1000.0, "unit": "cGy", "system": "http://unitsofmeasure.org", "code": "cGy"}},
                    {"url": "fractionDose", "valueQuantity": {"value": cgy, "unit": "cGy", "system": "http://unitsofmeasure.org", "code": "cGy"}}]},
                {"url": format!("{SITE}/fhir/StructureDefinition/vlms-rt-phase-kind"), "valueCode": kind}
            ]
        }}));
    }
    json!({"resourceType": "Bundle", "type": "collection", "entry": entry})
}

#[tokio::test]
async fn order_sign_checks_the_draft_as_check_prescription_does() {
    let front = Front::start(None).await;
    let mut client = front.server.client().await;
    let mut checked = 0;
    let mut replaced = 0;
    let mut feedback_given = false;
    for (index, vignette) in vignettes().into_iter().enumerate() {
        if !vignette.is_check() {
            continue;
        }
        let request = vignette.check_request();
        let case = request.case.clone().expect("case");
        let options = options(index);
        let Ok(chart) = crate::fhir_chart::try_prefetch(&case, &options) else {
            continue;
        };
        let mut hook = request_around(
            &case,
            &options,
            "9d8c2b11-0000-4000-8000-000000000001",
            chart,
        );
        hook["hook"] = json!("order-sign");
        hook["context"]["draftOrders"] =
            draft_orders(&request, &options.patient_id, &options.condition_id);
        let (status, answer) = front.hook("vlms-rt-rx-check", &hook).await;
        assert_eq!(status, 200, "{}: {answer}", vignette.name);
        save(&format!("check-{}", vignette.name), &hook, &answer);
        let mut direct_request = request.clone();
        direct_request.case = Some(mapped_case(&case));
        direct_request.dose_metrics.clear();
        let direct = client
            .check_prescription(direct_request)
            .await
            .expect("direct check")
            .into_inner();
        let cards = answer["cards"].as_array().expect("cards");
        assert_eq!(cards.len(), 1, "{}: {answer}", vignette.name);
        let verdict = pb::Verdict::try_from(direct.verdict)
            .expect("verdict")
            .as_str_name();
        assert_eq!(
            cards[0]["extension"]["org.example.vlms-rt.recommendation"]["verdict"], verdict,
            "{}",
            vignette.name
        );
        let detail = cards[0]["detail"].as_str().expect("detail");
        for finding in &direct.findings {
            assert!(
                detail.contains(&format!("`{}`", finding.code)),
                "{}",
                vignette.name
            );
        }
        // The stored check holds the same findings.
        let id = recommendation_id(&cards[0]);
        let record = stored_record(&mut client, id).await;
        let Some(pb::recommendation_record::Content::Check(stored)) = record.content else {
            panic!("not a check record");
        };
        assert_eq!(stored.response.expect("response").findings, direct.findings);
        // Not PASS with a preferred option: one suggestion replacing the draft with it (§3.4).
        let drafts = &hook["context"]["draftOrders"];
        let preferred = direct
            .recommended_plan
            .as_ref()
            .and_then(|plan| plan.prescriptions.iter().find(|p| p.preferred));
        let suggestions = cards[0].get("suggestions");
        match preferred.filter(|_| direct.verdict != pb::Verdict::Pass as i32) {
            None => assert!(suggestions.is_none(), "{}: {answer}", vignette.name),
            Some(preferred) => {
                let suggestions = suggestions.and_then(Value::as_array).expect("suggestions");
                assert_eq!(suggestions.len(), 1, "{}", vignette.name);
                assert_eq!(cards[0]["selectionBehavior"], "at-most-one");
                let suggestion = &suggestions[0];
                assert_eq!(
                    suggestion["label"],
                    format!("Replace with guideline-preferred {}", preferred.label)
                );
                assert!(suggestion.get("isRecommended").is_none());
                let actions = suggestion["actions"].as_array().expect("actions");
                let of = |kind: &str| -> Vec<&Value> {
                    actions.iter().filter(|a| a["type"] == kind).collect()
                };
                let (kept, drafted) = (preferred.phases.len(), request.phases.len());
                // Deleted: exactly the draft phases beyond the preferred option's phase count.
                let deleted: Vec<&Value> = of("delete").iter().map(|a| &a["resourceId"]).collect();
                let beyond: Vec<Value> = (kept..drafted)
                    .map(|index| json!(format!("ServiceRequest/rx-phase-{index}")))
                    .collect();
                assert_eq!(
                    deleted,
                    beyond.iter().collect::<Vec<_>>(),
                    "{}",
                    vignette.name
                );
                for delete in of("delete") {
                    assert!(delete.get("resource").is_none());
                }
                // Updated: the draft course and the kept phases, with their ids and identifiers.
                let mut expected = vec![String::from("rx-course")];
                expected.extend((0..kept.min(drafted)).map(|index| format!("rx-phase-{index}")));
                let updates = of("update");
                let updated: Vec<&str> = updates
                    .iter()
                    .map(|a| a["resource"]["id"].as_str().unwrap_or_default())
                    .collect();
                assert_eq!(updated, expected, "{}", vignette.name);
                for update in &updates {
                    let resource = &update["resource"];
                    let draft = drafts["entry"]
                        .as_array()
                        .and_then(|e| e.iter().find(|e| e["resource"]["id"] == resource["id"]))
                        .expect("the updated draft");
                    assert_eq!(resource["identifier"], draft["resource"]["identifier"]);
                    // The clinician's planned start stays (the guideline does not decide it).
                    assert_eq!(
                        resource["occurrencePeriod"],
                        draft["resource"]["occurrencePeriod"]
                    );
                    assert_eq!(
                        (&resource["status"], &resource["intent"]),
                        (&json!("draft"), &json!("original-order"))
                    );
                    if resource["id"] != "rx-course" {
                        assert_eq!(
                            resource["basedOn"],
                            json!([{"reference": "ServiceRequest/rx-course"}])
                        );
                    }
                }
                // Created: the volume(s) and the preferred phases the draft lacks.
                let created_phases = of("create")
                    .iter()
                    .filter(|a| a["resource"]["resourceType"] == "ServiceRequest")
                    .count();
                assert_eq!(
                    created_phases,
                    kept.saturating_sub(drafted),
                    "{}",
                    vignette.name
                );
                assert!(actions.iter().all(|a| a["description"].is_string()));
                // Accepting it is accepting the guideline's recommendation.
                if !feedback_given {
                    let feedback = json!({"feedback": [
                        {"card": cards[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-26T10:00:00Z",
                         "acceptedSuggestions": [{"id": suggestion["uuid"]}]}
                    ]});
                    let (status, body) = front.feedback("vlms-rt-rx-check", &feedback).await;
                    assert_eq!(status, 200, "{body}");
                    let record = stored_record(&mut client, id).await;
                    assert_eq!(
                        record.feedback.last().map(|f| f.outcome),
                        Some(pb::FeedbackOutcome::Accepted as i32),
                        "{}",
                        vignette.name
                    );
                    feedback_given = true;
                }
                replaced += 1;
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "{checked} check vignettes");
    assert!(replaced >= 1, "{replaced} replace suggestions");

    // order-select with nothing complete selected: no cards.
    let (case, options) = ivc_chart();
    let mut hook = patient_view_request(&case, &options, "ad8c2b11-0000-4000-8000-000000000001");
    hook["hook"] = json!("order-select");
    hook["context"]["selections"] = json!(["ServiceRequest/something-else"]);
    hook["context"]["draftOrders"] = json!({"resourceType": "Bundle", "type": "collection"});
    let (status, answer) = front.hook("vlms-rt-rx-check", &hook).await;
    assert_eq!((status, answer), (200, json!({"cards": []})));
    front.server.stop().await;
}

/// Draft orders whose numbers disagree with each other, or state a value twice: one "cannot check"
/// card naming the problem, never a verdict on a dose the order does not give.
#[tokio::test]
async fn a_draft_that_contradicts_itself_is_not_checked() {
    let front = Front::start(None).await;
    let (vignette, request, case, options, chart) = vignettes()
        .into_iter()
        .enumerate()
        .filter(|(_, vignette)| vignette.is_check())
        .find_map(|(index, vignette)| {
            let request = vignette.check_request();
            let case = request.case.clone()?;
            let options = options(index);
            let chart = crate::fhir_chart::try_prefetch(&case, &options).ok()?;
            Some((vignette, request, case, options, chart))
        })
        .expect("a chartable check vignette");
    let drafts = draft_orders(&request, &options.patient_id, &options.condition_id);
    let phase_extensions =
        |drafts: &mut Value| -> Value { drafts["entry"][1]["resource"]["extension"].take() };
    type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;
    let edits: [(&str, Edit); 4] = [
        (
            "its totalDose",
            Box::new(|drafts: &mut Value| {
                let mut extensions = phase_extensions(drafts);
                let total = &mut extensions[1]["extension"][1]["valueQuantity"]["value"];
                *total = json!(total.as_f64().expect("cGy") + 200.0);
                drafts["entry"][1]["resource"]["extension"] = extensions;
            }),
        ),
        (
            "radiotherapyFractionsPrescribed is stated more than once",
            Box::new(|drafts: &mut Value| {
                let mut extensions = phase_extensions(drafts);
                let mut again = extensions[0].clone();
                again["valuePositiveInt"] =
                    json!(again["valuePositiveInt"].as_i64().expect("n") + 3);
                extensions.as_array_mut().expect("extensions").push(again);
                drafts["entry"][1]["resource"]["extension"] = extensions;
            }),
        ),
        (
            "vlms-rt-phase-kind is stated more than once",
            Box::new(|drafts: &mut Value| {
                let mut extensions = phase_extensions(drafts);
                let mut again = extensions[2].clone();
                let other = if again["valueCode"] == "boost" {
                    "initial"
                } else {
                    "boost"
                };
                again["valueCode"] = json!(other);
                extensions.as_array_mut().expect("extensions").push(again);
                drafts["entry"][1]["resource"]["extension"] = extensions;
            }),
        ),
        (
            "the planned start \"2026-12-01T09:00\"",
            Box::new(|drafts: &mut Value| {
                drafts["entry"][0]["resource"]["occurrencePeriod"] =
                    json!({"start": "2026-12-01T09:00"});
            }),
        ),
    ];
    for (problem, edit) in edits {
        let mut hook = request_around(
            &case,
            &options,
            "9d8c2b11-0000-4000-8000-000000000002",
            chart.clone(),
        );
        hook["hook"] = json!("order-sign");
        let mut edited = drafts.clone();
        edit(&mut edited);
        hook["context"]["draftOrders"] = edited;
        let (status, answer) = front.hook("vlms-rt-rx-check", &hook).await;
        assert_eq!(status, 200, "{}, {problem}: {answer}", vignette.name);
        let cards = answer["cards"].as_array().expect("cards");
        assert_eq!(cards.len(), 1, "{problem}: {answer}");
        assert_eq!(cards[0]["indicator"], "warning", "{problem}: {answer}");
        assert_eq!(
            cards[0]["summary"],
            "vlms-rt cannot check this prescription as drafted; nothing was checked"
        );
        let detail = cards[0]["detail"].as_str().expect("detail");
        assert!(detail.contains(problem), "{problem}: {detail}");
        assert!(cards[0].get("suggestions").is_none(), "{problem}: {answer}");
    }
    // The draft as written is checked.
    let mut hook = request_around(
        &case,
        &options,
        "9d8c2b11-0000-4000-8000-000000000003",
        chart,
    );
    hook["hook"] = json!("order-sign");
    hook["context"]["draftOrders"] = drafts;
    let (status, answer) = front.hook("vlms-rt-rx-check", &hook).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["cards"][0]["extension"]["org.example.vlms-rt.recommendation"]["verdict"]
            .is_string(),
        "{answer}"
    );
}

#[tokio::test]
async fn feedback_on_a_card_lands_on_its_recommendation() {
    let front = Front::start(None).await;
    let mut client = front.server.client().await;
    let (case, options) = ivc_chart();
    let request = patient_view_request(&case, &options, "bd8c2b11-0000-4000-8000-000000000001");
    let (_, answer) = front.hook("vlms-rt-plan", &request).await;
    let plan_card = answer["cards"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_string();
    let alert_card = answer["cards"][1]["uuid"]
        .as_str()
        .expect("uuid")
        .to_string();
    let plan_id = recommendation_id(&answer["cards"][0]).to_string();
    let feedback = json!({"feedback": [
        {"card": plan_card, "outcome": "overridden", "outcomeTimestamp": "2026-11-26T09:21:02Z",
         "overrideReason": {"reason": {"system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                                       "code": "expert-contradicts", "display": "Advice from expert contradicts the recommended action"},
                            "userComment": "Sarcoma MDT chose observation."}},
        {"card": alert_card, "outcome": "overridden", "outcomeTimestamp": "2026-11-26T09:22:00Z"}
    ]});
    let (status, body) = front.feedback("vlms-rt-plan", &feedback).await;
    assert_eq!(status, 200, "{body}");
    let record = stored_record(&mut client, &plan_id).await;
    assert_eq!(
        record.feedback.len(),
        1,
        "alert feedback is not plan feedback"
    );
    // The alert card's feedback is a record of its own beside the card, naming the plan.
    let trail = rusqlite::Connection::open(&front.audit).expect("audit file");
    let (count, subject): (i64, String) = trail
        .query_row(
            "SELECT count(*), max(subject_id) FROM records WHERE kind = 'cds-card' AND recommendation_id LIKE ?1",
            [format!("{alert_card}/feedback/%")],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("query");
    assert_eq!((count, subject.as_str()), (1, plan_id.as_str()));
    assert_eq!(
        record.feedback[0].outcome,
        pb::FeedbackOutcome::Overridden as i32
    );
    assert_eq!(
        record.feedback[0].reason,
        "Advice from expert contradicts the recommended action (expert-contradicts) — Sarcoma MDT chose observation. at 2026-11-26T09:21:02Z"
    );
    // Accepting the alternative option is a modification of the recommendation.
    let alternative = answer["cards"][0]["suggestions"]
        .as_array()
        .expect("suggestions")
        .iter()
        .find(|s| {
            s["label"]
                .as_str()
                .is_some_and(|l| l.ends_with("(alternative)"))
        })
        .expect("an alternative option")
        .clone();
    let feedback = json!({"feedback": [
        {"card": plan_card, "outcome": "accepted", "outcomeTimestamp": "2026-11-26T10:00:00Z",
         "acceptedSuggestions": [{"id": alternative["uuid"]}]}
    ]});
    let (status, body) = front.feedback("vlms-rt-plan", &feedback).await;
    assert_eq!(status, 200, "{body}");
    let record = stored_record(&mut client, &plan_id).await;
    assert_eq!(record.feedback.len(), 2);
    assert_eq!(
        record.feedback[1].outcome,
        pb::FeedbackOutcome::Modified as i32
    );
    assert!(
        record.feedback[1]
            .reason
            .starts_with("accepted alternative option: "),
        "{}",
        record.feedback[1].reason
    );
    // One item the service cannot record (a control character in the comment): refused before
    // anything is written, the alert item ahead of it included.
    let alert_records = |trail: &rusqlite::Connection| -> i64 {
        trail
            .query_row(
                "SELECT count(*) FROM records WHERE recommendation_id LIKE ?1",
                [format!("{alert_card}/feedback/%")],
                |row| row.get(0),
            )
            .expect("query")
    };
    let feedback = json!({"feedback": [
        {"card": alert_card, "outcome": "overridden", "outcomeTimestamp": "2026-11-26T11:00:00Z"},
        {"card": plan_card, "outcome": "overridden", "outcomeTimestamp": "2026-11-26T11:00:00Z",
         "overrideReason": {"userComment": "line one\nline two"}}
    ]});
    let (status, body) = front.feedback("vlms-rt-plan", &feedback).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("feedback[1].overrideReason"), "{body}");
    assert_eq!(alert_records(&trail), 1);
    assert_eq!(stored_record(&mut client, &plan_id).await.feedback.len(), 2);
    // An alert card's uuid is not a suggestion to accept.
    let feedback = json!({"feedback": [
        {"card": plan_card, "outcome": "accepted", "outcomeTimestamp": "2026-11-26T11:00:00Z",
         "acceptedSuggestions": [{"id": alert_card}]}
    ]});
    let (status, body) = front.feedback("vlms-rt-plan", &feedback).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("acceptedSuggestions[0].id"), "{body}");
    assert_eq!(stored_record(&mut client, &plan_id).await.feedback.len(), 2);
    // A uuid is the same card in upper case; text that is no uuid names no card.
    let feedback = json!({"feedback": [
        {"card": plan_card.to_uppercase(), "outcome": "accepted", "outcomeTimestamp": "2026-11-26T12:00:00Z"}
    ]});
    let (status, body) = front.feedback("vlms-rt-plan", &feedback).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored_record(&mut client, &plan_id).await.feedback.len(), 3);
    let feedback = json!({"feedback": [
        {"card": format!("{plan_card}/feedback"), "outcome": "accepted", "outcomeTimestamp": "2026-11-26T12:00:00Z"}
    ]});
    let (status, body) = front.feedback("vlms-rt-plan", &feedback).await;
    assert_eq!(status, 404, "{body}");
    // A card vlms-rt never issued, and a body that is not feedback.
    let (status, _) = front
        .feedback(
            "vlms-rt-plan",
            &json!({"feedback": [{"card": "4a1c2d0e-0000-4000-8000-000000000000", "outcome": "accepted", "acceptedSuggestions": [], "outcomeTimestamp": "2026-11-26T09:21:02Z"}]}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = front
        .post("/cds-services/vlms-rt-plan/feedback", br#"{"cards": []}"#)
        .await;
    assert_eq!(status, 400);
    front.server.stop().await;
}

/// An EC P-384 key pair: the issuers-file JWK and the PEM to sign with.
fn es384_key(kid: &str) -> (Value, Vec<u8>) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let raw = pair.public_key_raw();
    assert_eq!(raw.len(), 97, "an uncompressed P-384 point");
    let jwk = json!({"kty": "EC", "crv": "P-384", "kid": kid, "x": b64url(&raw[1..49]), "y": b64url(&raw[49..])});
    (jwk, pair.serialize_pem().into_bytes())
}

fn sign(pem: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some(kid.into());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pem).expect("signing key");
    jsonwebtoken::encode(&header, claims, &key).expect("token")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn only_a_valid_fresh_jwt_from_a_trusted_issuer_gets_in() {
    let (jwk, pem) = es384_key("k1");
    let (_, stranger_pem) = es384_key("k1");
    let issuers_file =
        std::env::temp_dir().join(format!("vlms-rt-issuers-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &issuers_file,
        json!({"issuers": [
            {"iss": "https://ehr.example.org", "jwks": {"keys": [jwk.clone()]}},
            {"iss": "https://mdt.example.org", "jwks": {"keys": [jwk]}, "allowEvaluationDate": true}
        ]})
        .to_string(),
    )
    .expect("issuers file");
    let issuers = Arc::new(vlms_rt::cds::jwt::Issuers::load(&issuers_file).expect("issuers"));
    let front = Front::start(Some(issuers)).await;
    let audience = format!("http://{}/cds-services/vlms-rt-plan", front.cds);
    let (case, options) = ivc_chart();
    let request = patient_view_request(&case, &options, "cd8c2b11-0000-4000-8000-000000000001");
    let claims = |iss: &str, aud: &str, exp: u64, jti: &str| json!({"iss": iss, "aud": aud, "exp": exp, "iat": now(), "jti": jti, "sub": "ehr-client"});
    let post = |token: Option<String>, body: Value| {
        let address = front.cds.clone();
        async move {
            let header = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = header
                .as_deref()
                .map(|h| vec![("Authorization", h)])
                .unwrap_or_default();
            http(
                &address,
                "POST",
                "/cds-services/vlms-rt-plan",
                &headers,
                body.to_string().as_bytes(),
            )
            .await
        }
    };
    // The MDT issuer may set the evaluation date.
    let token = sign(
        &pem,
        "k1",
        &claims("https://mdt.example.org", &audience, now() + 300, "a-1"),
    );
    let (status, body) = post(Some(token.clone()), request.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The same token again: replayed.
    let (status, body) = post(Some(token), request.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("replayed"), "{body}");
    // The EHR issuer may not set the evaluation date; without it, it gets in.
    let token = sign(
        &pem,
        "k1",
        &claims("https://ehr.example.org", &audience, now() + 300, "b-1"),
    );
    let (status, body) = post(Some(token), request.clone()).await;
    assert_eq!(status, 403, "{body}");
    let mut dated_now = request.clone();
    dated_now
        .as_object_mut()
        .expect("object")
        .remove("extension");
    let token = sign(
        &pem,
        "k1",
        &claims("https://ehr.example.org", &audience, now() + 300, "b-2"),
    );
    let (status, body) = post(Some(token), dated_now).await;
    assert_eq!(status, 200, "{body}");
    let refusals = [
        ("no token", None),
        (
            "unknown issuer",
            Some(sign(
                &pem,
                "k1",
                &claims("https://other.example.org", &audience, now() + 300, "c-1"),
            )),
        ),
        (
            "another endpoint",
            Some(sign(
                &pem,
                "k1",
                &claims(
                    "https://mdt.example.org",
                    "https://elsewhere.example.org/cds-services/vlms-rt-plan",
                    now() + 300,
                    "c-2",
                ),
            )),
        ),
        (
            "expired",
            Some(sign(
                &pem,
                "k1",
                &claims("https://mdt.example.org", &audience, now() - 600, "c-3"),
            )),
        ),
        (
            "signed by a stranger",
            Some(sign(
                &stranger_pem,
                "k1",
                &claims("https://mdt.example.org", &audience, now() + 300, "c-4"),
            )),
        ),
        (
            "HMAC",
            Some(
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                    &claims("https://mdt.example.org", &audience, now() + 300, "c-5"),
                    &jsonwebtoken::EncodingKey::from_secret(b"shared secret"),
                )
                .expect("token"),
            ),
        ),
        (
            "unsigned",
            Some(format!(
                "{}.{}.",
                "eyJhbGciOiJub25lIn0", "eyJpc3MiOiJodHRwczovL21kdC5leGFtcGxlLm9yZyJ9"
            )),
        ),
        ("garbage", Some("not-a-token".into())),
    ];
    for (what, token) in refusals {
        let (status, body) = post(token, request.clone()).await;
        assert_eq!(status, 401, "{what}: {body}");
        let outcome: Value = serde_json::from_str(&body).expect("OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], "login", "{what}");
    }
    // A new issuer is trusted after a reload (SIGHUP in the binary); a broken file changes nothing.
    let (new_jwk, new_pem) = es384_key("k2");
    std::fs::write(
        &issuers_file,
        json!({"issuers": [{"iss": "https://new.example.org", "jwks": {"keys": [new_jwk]}}]})
            .to_string(),
    )
    .expect("issuers file");
    let reloaded = front
        .server
        .server
        .as_ref()
        .and_then(|running| running.reload_cds_issuers())
        .expect("an issuers file");
    assert_eq!(reloaded.expect("reloaded"), 1);
    let token = sign(
        &new_pem,
        "k2",
        &claims("https://new.example.org", &audience, now() + 300, "d-1"),
    );
    let mut dated_now = request.clone();
    dated_now
        .as_object_mut()
        .expect("object")
        .remove("extension");
    let (status, body) = post(Some(token), dated_now).await;
    assert_eq!(status, 200, "{body}");
    let token = sign(
        &pem,
        "k1",
        &claims("https://mdt.example.org", &audience, now() + 300, "d-2"),
    );
    let (status, _) = post(Some(token), request.clone()).await;
    assert_eq!(status, 401, "the old issuers are gone");
    std::fs::write(&issuers_file, "{not json").expect("issuers file");
    let reloaded = front
        .server
        .server
        .as_ref()
        .and_then(|running| running.reload_cds_issuers())
        .expect("an issuers file");
    assert!(reloaded.is_err());
    // Nothing refused reached the service: three plans were recorded, by three issuers.
    let metrics = crate::support::http_get(&front.server.metrics_addr(), "/metrics").await;
    assert!(
        metrics.contains(r#"vlms_rt_calls_total{code="OK",rpc="Recommend"} 3"#),
        "{metrics}"
    );
    front.server.stop().await;
    std::fs::remove_file(issuers_file).ok();
}

#[tokio::test]
async fn a_cds_hooks_port_off_loopback_needs_trusted_issuers() {
    let mut settings = Settings::new("127.0.0.1:0".parse().expect("address"), profile());
    let mut cds = cds_settings(None);
    cds.listen = "0.0.0.0:0".parse().expect("address");
    settings.cds_hooks = Some(cds);
    let error = vlms_rt::startup::start(settings)
        .await
        .expect_err("refused without issuers");
    assert!(error.to_string().contains("--cds-hooks-issuers"), "{error}");
}

#[test]
fn every_alert_summary_fits_a_cds_hooks_card() {
    let guideline = vlms_rt::convert::guideline_out(&profile());
    assert!(!guideline.alerts.is_empty());
    for alert in &guideline.alerts {
        let length = alert.summary.chars().count();
        assert!(length < 140, "{}: {length} characters", alert.code);
    }
}

type Seen = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A FHIR server for the tests on `listener`: answers GET `path?query` from a table, records each
/// request's target and Authorization header, and answers 404 for anything else.
fn serve_fhir(
    listener: tokio::net::TcpListener,
    answers: std::collections::HashMap<String, (u16, Value)>,
) -> Seen {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen: Seen = Arc::default();
    let answers = Arc::new(answers);
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answers = Arc::clone(&answers);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split(' ').nth(1).unwrap_or_default().to_string();
                let authorization = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("authorization")
                            .then(|| value.trim().to_string())
                    })
                    .unwrap_or_default();
                log.lock()
                    .expect("log")
                    .push((target.clone(), authorization));
                let (status, body) = answers
                    .get(&target)
                    .cloned()
                    .unwrap_or((404, json!({"resourceType": "OperationOutcome"})));
                let body = body.to_string();
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    seen
}

async fn bind_fhir() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/fhir", listener.local_addr().expect("address"));
    (listener, base)
}

#[tokio::test]
async fn omitted_prefetch_is_fetched_from_the_clients_fhir_server() {
    let front = Front::start(None).await;
    let (case, options) = ivc_chart();
    let full = prefetch(&case, &options);
    let (_, discovery) = http(&front.cds, "GET", "/cds-services", &[], b"").await;
    let discovery: Value = serde_json::from_str(&discovery).expect("discovery");
    let template = |key: &str| {
        format!(
            "/fhir/{}",
            discovery["services"][0]["prefetch"][key]
                .as_str()
                .expect("template")
                .replace("{{context.patientId}}", &options.patient_id)
        )
    };
    // `assessments` comes in two pages; `patient` is a plain read.
    let (listener, base) = bind_fhir().await;
    let all: Vec<Value> = full["assessments"]["entry"]
        .as_array()
        .expect("entries")
        .clone();
    let (head, tail) = all.split_at(all.len() / 2);
    let mut first_page = full["assessments"].clone();
    first_page["entry"] = json!(head);
    first_page["link"] = json!([{"relation": "next", "url": format!("{base}/page-2")}]);
    let mut second_page = full["assessments"].clone();
    second_page["entry"] = json!(tail);
    let mut answers = std::collections::HashMap::new();
    answers.insert(template("assessments"), (200, first_page));
    answers.insert("/fhir/page-2".to_string(), (200, second_page));
    answers.insert(template("patient"), (200, full["patient"].clone()));
    let seen = serve_fhir(listener, answers);

    let mut request = patient_view_request(&case, &options, "ed8c2b11-0000-4000-8000-000000000001");
    let sent = request["prefetch"].as_object_mut().expect("prefetch");
    sent.remove("assessments");
    sent.remove("patient");
    request["fhirServer"] = json!(base);
    request["fhirAuthorization"] = json!({"access_token": "sandbox-token", "token_type": "Bearer",
        "expires_in": 300, "scope": "user/Patient.r user/Observation.rs", "subject": "vlms-rt"});
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["cards"][0]["extension"]["org.example.vlms-rt.recommendation"].is_object(),
        "{answer}"
    );
    save("fetched-prefetch", &request, &answer);
    let seen = seen.lock().expect("log").clone();
    let targets: Vec<&str> = seen.iter().map(|(target, _)| target.as_str()).collect();
    assert!(
        targets.contains(&template("patient").as_str()),
        "{targets:?}"
    );
    assert!(
        targets.contains(&template("assessments").as_str()),
        "{targets:?}"
    );
    assert!(targets.contains(&"/fhir/page-2"), "{targets:?}");
    assert!(
        seen.iter().all(|(_, auth)| auth == "Bearer sandbox-token"),
        "{seen:?}"
    );

    // The FHIR server failing is a 412 naming the key, never a guess.
    let (listener, base) = bind_fhir().await;
    let _ = serve_fhir(listener, std::collections::HashMap::new());
    request["fhirServer"] = json!(base);
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!(status, 412, "{answer}");
    let text = answer.to_string();
    assert!(
        text.contains("prefetch.assessments") && text.contains("404"),
        "{text}"
    );
    // The failure names the server, not the query holding the patient's id (it is logged).
    assert!(!text.contains(&options.patient_id), "{text}");

    // Not https and not loopback: refused without a connection.
    request["fhirServer"] = json!("http://ehr.example.org/fhir");
    let (status, answer) = front.hook("vlms-rt-plan", &request).await;
    assert_eq!(status, 412, "{answer}");
    assert!(answer.to_string().contains("https"), "{answer}");
    front.server.stop().await;
}

#[tokio::test]
async fn an_rs384_token_from_a_trusted_issuer_gets_in() {
    // An RSA key made with openssl (ring cannot generate RSA keys).
    let dir = std::env::temp_dir().join(format!("vlms-rt-rsa-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key_path = dir.join("key.pem");
    let status = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key_path)
        .arg("2048")
        .output()
        .expect("openssl runs");
    assert!(status.status.success(), "{status:?}");
    let modulus = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&key_path)
        .output()
        .expect("openssl runs");
    let modulus = String::from_utf8(modulus.stdout).expect("text");
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let jwk = json!({"kty": "RSA", "kid": "rsa-1", "n": b64url(&bytes), "e": "AQAB"});
    let issuers_file = dir.join("issuers.json");
    std::fs::write(
        &issuers_file,
        json!({"issuers": [{"iss": "https://ehr.example.org", "jwks": {"keys": [jwk]}}]})
            .to_string(),
    )
    .expect("issuers file");
    let issuers = Arc::new(vlms_rt::cds::jwt::Issuers::load(&issuers_file).expect("issuers"));
    let front = Front::start(Some(issuers)).await;
    let pem = std::fs::read(&key_path).expect("key");
    let token = |alg: jsonwebtoken::Algorithm, jti: &str| {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some("rsa-1".into());
        let claims = json!({"iss": "https://ehr.example.org",
            "aud": format!("http://{}/cds-services/vlms-rt-plan/feedback", front.cds),
            "exp": now() + 300, "iat": now(), "jti": jti});
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
        )
        .expect("token")
    };
    // Feedback on an unknown card: 404 once the token is accepted, 401 before.
    let body =
        json!({"feedback": [{"card": "4a1c2d0e-0000-4000-8000-000000000001", "outcome": "accepted",
        "acceptedSuggestions": [], "outcomeTimestamp": "2026-11-26T09:21:02Z"}]})
        .to_string();
    for (algorithm, jti, expected) in [
        (jsonwebtoken::Algorithm::RS384, "r-1", 404),
        // RS256 with the same key is not accepted: only RS384 and ES384.
        (jsonwebtoken::Algorithm::RS256, "r-2", 401),
    ] {
        let bearer = format!("Bearer {}", token(algorithm, jti));
        let (status, answer) = http(
            &front.cds,
            "POST",
            "/cds-services/vlms-rt-plan/feedback",
            &[("Authorization", &bearer)],
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, expected, "{algorithm:?}: {answer}");
    }
    front.server.stop().await;
    std::fs::remove_dir_all(dir).ok();
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[tokio::test]
async fn the_cds_hooks_port_speaks_tls_like_the_grpc_port() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("certificate");
    let mut settings = Settings::new("127.0.0.1:0".parse().expect("address"), profile());
    settings.tls = Some(vlms_rt::startup::TlsMaterial {
        cert_pem: certified.cert.pem().into_bytes(),
        key_pem: certified.signing_key.serialize_pem().into_bytes(),
        client_ca_pem: None,
    });
    settings.cds_hooks = Some(cds_settings(None));
    let server = TestServer::start_with(settings).await;
    let address = server
        .server
        .as_ref()
        .and_then(|running| running.cds_hooks.as_ref())
        .expect("CDS Hooks port")
        .local_addr;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let connect = |alpn: &'static [u8]| {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        async move {
            let tcp = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").expect("name"),
                    tcp,
                )
                .await
                .expect("TLS handshake")
        }
    };
    // HTTP/1.1 over TLS.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = connect(b"http/1.1").await;
        tls.write_all(
            b"GET /cds-services HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write");
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.ok();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("vlms-rt-plan"), "{answer}");
    }
    // HTTP/2 over TLS.
    let tls = connect(b"h2").await;
    let (mut sender, connection) = h2::client::handshake(tls).await.expect("h2 over TLS");
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("GET")
        .uri(format!("https://localhost:{}/cds-services", address.port()))
        .body(())
        .expect("request");
    let (response, _) = sender.send_request(request, true).expect("send");
    assert_eq!(response.await.expect("answer").status(), 200);
    // Plain HTTP on the TLS port gets nowhere.
    let (status, _) = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let _ = tcp
            .write_all(b"GET /cds-services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        (answer.starts_with(b"HTTP/1.1 200"), ())
    })
    .await
    .expect("closed, not hung");
    assert!(!status, "plaintext was served on the TLS port");
    server.stop().await;
}

/// An audit store that cannot commit anything.
struct BrokenStore;

impl vlms_rt::audit::Store for BrokenStore {
    fn append(
        &mut self,
        _: &[vlms_rt::audit::NewRecord],
    ) -> Result<(), vlms_rt::audit::AuditError> {
        Err(vlms_rt::audit::AuditError::Unavailable("disk gone".into()))
    }
    fn probe(&mut self) -> Result<(), vlms_rt::audit::AuditError> {
        Err(vlms_rt::audit::AuditError::Unavailable("disk gone".into()))
    }
    fn compression(&self) -> Option<Arc<vlms_rt::audit::compress::Compression>> {
        None
    }
    fn commits_locally(&self) -> bool {
        false
    }
}

struct EmptyReader;

impl vlms_rt::audit::Reader for EmptyReader {
    fn get(
        &self,
        _: &str,
    ) -> Result<Option<vlms_rt::audit::RecordWithFeedback>, vlms_rt::audit::AuditError> {
        Ok(None)
    }
    fn list(
        &self,
        _: &str,
        _: Option<i64>,
        _: usize,
    ) -> Result<Vec<vlms_rt::audit::RecordWithFeedback>, vlms_rt::audit::AuditError> {
        Ok(Vec::new())
    }
    fn has_older(&self, _: &str, _: i64) -> Result<bool, vlms_rt::audit::AuditError> {
        Ok(false)
    }
    fn card(
        &self,
        _: &str,
    ) -> Result<Option<vlms_rt::audit::StoredRecord>, vlms_rt::audit::AuditError> {
        Ok(None)
    }
}

#[tokio::test]
async fn no_card_leaves_when_the_audit_store_cannot_record_it() {
    let mut settings = Settings::new("127.0.0.1:0".parse().expect("address"), profile());
    settings.audit = Some(vlms_rt::audit::Auditor::start(
        Box::new(BrokenStore),
        Arc::new(EmptyReader),
    ));
    settings.cds_hooks = Some(cds_settings(None));
    let server = TestServer::start_with(settings).await;
    let cds = cds_address(&server);
    let (case, options) = ivc_chart();
    let request = patient_view_request(&case, &options, "fd8c2b11-0000-4000-8000-000000000001");
    let (status, body) = post_hook(&cds, "vlms-rt-plan", &request).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("cards"), "{body}");
    let outcome: Value = serde_json::from_str(&body).expect("OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "transient");
    // Readiness on the CDS Hooks port follows the store.
    let (status, body) = http(&cds, "GET", "/health", &[], b"").await;
    assert_eq!(
        (status, body.as_str()),
        (503, r#"{"status":"NOT_SERVING"}"#)
    );
    server.stop_allowing_cut().await;
}

#[tokio::test]
async fn the_sites_canonical_base_and_extension_prefix_name_everything() {
    let mut settings = Settings::new("127.0.0.1:0".parse().expect("address"), profile());
    let mut cds = cds_settings(None);
    cds.canonical_base = "https://rt.hospital.example".into();
    cds.extension_prefix = "org.hospital.rt".into();
    settings.cds_hooks = Some(cds);
    let server = TestServer::start_with(settings).await;
    let address = cds_address(&server);
    let (_, discovery) = http(&address, "GET", "/cds-services", &[], b"").await;
    assert!(!discovery.contains("example.org"), "{discovery}");
    let discovery: Value = serde_json::from_str(&discovery).expect("JSON");
    assert!(discovery["services"][0]["extension"]["org.hospital.rt.service"].is_object());
    assert!(
        discovery["services"][0]["prefetch"]["assessments"]
            .as_str()
            .is_some_and(
                |t| t.contains("https://rt.hospital.example/fhir/CodeSystem/vlms-rt-case|")
            ),
        "{discovery}"
    );
    // A chart written with the site's names is read; its cards carry the site's names.
    let (case, mut options) = ivc_chart();
    options.site = "https://rt.hospital.example".into();
    let mut request = patient_view_request(&case, &options, "0e8c2b11-0000-4000-8000-000000000001");
    let extension = request["extension"]
        .as_object_mut()
        .expect("extension")
        .remove("org.example.vlms-rt.evaluation-date")
        .expect("evaluation date");
    request["extension"]["org.hospital.rt.evaluation-date"] = extension;
    let (status, body) = post_hook(&address, "vlms-rt-plan", &request).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        answer["cards"][0]["extension"]["org.hospital.rt.recommendation"].is_object(),
        "{answer}"
    );
    assert!(!body.contains("vlms-rt.example.org"), "{body}");
    server.stop().await;
}
