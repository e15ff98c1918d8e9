//! The audit trail through the real server: every answer recorded before it leaves and returned
//! byte for byte, paging, feedback, the stream recording planned items only, fail-closed behaviour
//! with health following the store, crash safety under kill -9, and tamper evidence.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message;
use tonic::Code;
use vlms_rt::audit::{AuditError, Auditor, NewRecord, Store};
use vlms_rt::pb;
use vlms_rt::pb::recommendation_service_client::RecommendationServiceClient;
use vlms_rt::startup::Settings;

use crate::support::{TestServer, profile, vignettes};

fn temp_db() -> PathBuf {
    std::env::temp_dir().join(format!("vlms-rt-audit-{}.sqlite3", uuid::Uuid::new_v4()))
}

fn case_named(name: &str) -> pb::Case {
    vignettes()
        .into_iter()
        .find(|vignette| vignette.name == name)
        .expect("vignette")
        .case()
}

fn with_case_id(name: &str, case_id: &str) -> pb::RecommendRequest {
    let mut case = case_named(name);
    case.case_id = case_id.to_string();
    pb::RecommendRequest { case: Some(case) }
}

/// The SQLite store with a switch that makes every write fail, as a full or broken disk would.
struct Switchable {
    inner: vlms_rt::audit::sqlite::SqliteStore,
    failing: Arc<AtomicBool>,
}

impl Store for Switchable {
    fn append(&mut self, records: &[NewRecord]) -> Result<(), AuditError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(AuditError::Store("injected write failure".into()));
        }
        self.inner.append(records)
    }
    fn probe(&mut self) -> Result<(), AuditError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(AuditError::Store("injected write failure".into()));
        }
        self.inner.probe()
    }
}

async fn audited_server(path: &std::path::Path) -> (TestServer, Arc<AtomicBool>) {
    let (store, reader) = vlms_rt::audit::sqlite::open(path).expect("audit db");
    let failing = Arc::new(AtomicBool::new(false));
    let auditor = Auditor::start(
        Box::new(Switchable {
            inner: store,
            failing: Arc::clone(&failing),
        }),
        Arc::new(reader),
    );
    let mut settings = Settings::new("127.0.0.1:0".parse().expect("address"), profile());
    settings.audit = Some(auditor);
    (TestServer::start_with(settings).await, failing)
}

fn verify(path: &std::path::Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
        .args(["audit", "verify", "--audit-db"])
        .arg(path)
        .output()
        .expect("verify runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn answers_are_recorded_and_returned_byte_for_byte_with_paging_and_feedback() {
    let path = temp_db();
    let (server, _) = audited_server(&path).await;
    let mut client = server.client().await;

    let mut plans = Vec::new();
    for _ in 0..5 {
        let plan = client
            .recommend(with_case_id("femoral-postop-r0", "mdt-0001"))
            .await
            .expect("ok")
            .into_inner()
            .plan
            .expect("plan");
        plans.push(plan);
    }
    let record = client
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: plans[0].recommendation_id.clone(),
        })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(record.case_id, "mdt-0001");
    assert_eq!(record.caller, "anonymous");
    assert_eq!(
        record.guideline.as_ref().expect("guideline").version,
        "2026.1"
    );
    assert!(record.created_at.ends_with('Z') && record.created_at.contains('T'));
    match record.content.expect("content") {
        pb::recommendation_record::Content::Recommend(stored) => {
            assert_eq!(
                stored.plan.expect("plan").encode_to_vec(),
                plans[0].encode_to_vec(),
                "the plan, byte for byte"
            );
            assert_eq!(
                stored.case.expect("case"),
                with_case_id("femoral-postop-r0", "mdt-0001")
                    .case
                    .expect("case")
            );
        }
        other => panic!("unexpected {other:?}"),
    }

    // A check is recorded with its own id.
    let check = vignettes()
        .into_iter()
        .find(|vignette| vignette.name == "check-ivc-postop-boost-fails")
        .expect("vignette");
    let mut request = check.check_request();
    request.case.as_mut().expect("case").case_id = "mdt-0001".into();
    let response = client
        .check_prescription(request.clone())
        .await
        .expect("ok")
        .into_inner();
    let stored = client
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: response.recommendation_id.clone(),
        })
        .await
        .expect("found")
        .into_inner();
    match stored.content.expect("content") {
        pb::recommendation_record::Content::Check(record) => {
            assert_eq!(
                record.response.expect("response").encode_to_vec(),
                response.encode_to_vec()
            );
            assert_eq!(record.request.expect("request"), request);
        }
        other => panic!("unexpected {other:?}"),
    }

    // Paging: newest first, two at a time, across six records.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_recommendations(pb::ListRecommendationsRequest {
                case_id: "mdt-0001".into(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.records.len() <= 2);
        seen.extend(
            page.records
                .into_iter()
                .map(|record| record.recommendation_id),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = plans
        .iter()
        .map(|plan| plan.recommendation_id.clone())
        .collect();
    expected.push(response.recommendation_id.clone());
    expected.reverse();
    assert_eq!(seen, expected, "newest first, every record once");

    // Bad listing requests.
    for (request, field) in [
        (
            pb::ListRecommendationsRequest {
                case_id: String::new(),
                page_size: 0,
                page_token: String::new(),
            },
            "case_id",
        ),
        (
            pb::ListRecommendationsRequest {
                case_id: "mdt-0001".into(),
                page_size: 101,
                page_token: String::new(),
            },
            "page_size",
        ),
        (
            pb::ListRecommendationsRequest {
                case_id: "mdt-0001".into(),
                page_size: -1,
                page_token: String::new(),
            },
            "page_size",
        ),
        (
            pb::ListRecommendationsRequest {
                case_id: "mdt-0001".into(),
                page_size: 2,
                page_token: "zz".into(),
            },
            "page_token",
        ),
    ] {
        let status = client
            .list_recommendations(request)
            .await
            .expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = tonic_types::StatusExt::get_details_bad_request(&status)
            .map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|violation| violation.field)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(fields, vec![field.to_string()]);
    }
    // A token of one case does not page another.
    let first = client
        .list_recommendations(pb::ListRecommendationsRequest {
            case_id: "mdt-0001".into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    let status = client
        .list_recommendations(pb::ListRecommendationsRequest {
            case_id: "mdt-0002".into(),
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .expect_err("foreign token");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Lookups.
    let status = client
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: "not-an-id".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument);

    // Feedback: validated, appended (never overwriting), and itself audited.
    let id = plans[1].recommendation_id.clone();
    let feedback =
        |outcome: pb::FeedbackOutcome, reason: &str, id: &str| pb::RecordFeedbackRequest {
            recommendation_id: id.to_string(),
            outcome: outcome as i32,
            reason: reason.to_string(),
        };
    for (request, field) in [
        (
            feedback(pb::FeedbackOutcome::Unspecified, "x", &id),
            "outcome",
        ),
        (
            feedback(pb::FeedbackOutcome::Overridden, "  ", &id),
            "reason",
        ),
        (feedback(pb::FeedbackOutcome::Modified, "", &id), "reason"),
        (
            feedback(pb::FeedbackOutcome::Accepted, &"x".repeat(2001), &id),
            "reason",
        ),
        (
            feedback(pb::FeedbackOutcome::Accepted, "", "nope"),
            "recommendation_id",
        ),
    ] {
        let status = client.record_feedback(request).await.expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = tonic_types::StatusExt::get_details_bad_request(&status)
            .map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|violation| violation.field)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(fields, vec![field.to_string()]);
    }
    let status = client
        .record_feedback(feedback(
            pb::FeedbackOutcome::Accepted,
            "",
            &uuid::Uuid::new_v4().to_string(),
        ))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    client
        .record_feedback(feedback(pb::FeedbackOutcome::Accepted, "", &id))
        .await
        .expect("accepted without reason");
    client
        .record_feedback(feedback(
            pb::FeedbackOutcome::Overridden,
            "tumour board chose surgery alone",
            &id,
        ))
        .await
        .expect("overridden");
    let record = client
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: id.clone(),
        })
        .await
        .expect("found")
        .into_inner();
    let outcomes: Vec<(i32, String)> = record
        .feedback
        .iter()
        .map(|entry| (entry.outcome, entry.reason.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (pb::FeedbackOutcome::Accepted as i32, String::new()),
            (
                pb::FeedbackOutcome::Overridden as i32,
                "tumour board chose surgery alone".to_string()
            )
        ]
    );
    assert!(
        record
            .feedback
            .iter()
            .all(|entry| entry.caller == "anonymous" && !entry.created_at.is_empty())
    );

    // A stream records its planned items, not the rejected ones.
    let items = vec![
        with_case_id("ivc-metastatic", "mdt-0003"),
        {
            let mut bad = with_case_id("femoral-postop-r0", "mdt-0003");
            bad.case.as_mut().expect("case").tumor = None;
            bad
        },
        with_case_id("iliac-marginal", "mdt-0003"),
    ];
    let mut responses = client
        .recommend_stream(tokio_stream::iter(items))
        .await
        .expect("stream")
        .into_inner();
    let mut planned = Vec::new();
    while let Some(item) = responses.message().await.expect("item") {
        if let Some(pb::recommend_stream_response::Result::Plan(plan)) = item.result {
            planned.push(plan.recommendation_id);
        }
    }
    let listed = client
        .list_recommendations(pb::ListRecommendationsRequest {
            case_id: "mdt-0003".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    let mut listed: Vec<String> = listed
        .records
        .into_iter()
        .map(|record| record.recommendation_id)
        .collect();
    listed.reverse();
    assert_eq!(listed, planned);
    assert_eq!(planned.len(), 2);

    server.stop().await;
    let (code, output) = verify(&path);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("intact: 10 records"), "{output}");
}

#[tokio::test]
async fn an_unwritable_store_fails_closed_and_health_follows_it() {
    let path = temp_db();
    let (server, failing) = audited_server(&path).await;
    let mut client = server.client().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status_of = |response: tonic_health::pb::HealthCheckResponse| response.status;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    client
        .recommend(with_case_id("femoral-postop-r0", "fc-1"))
        .await
        .expect("ok while writable");

    failing.store(true, Ordering::SeqCst);
    let status = client
        .recommend(with_case_id("femoral-postop-r0", "fc-1"))
        .await
        .expect_err("fails closed");
    assert_eq!(status.code(), Code::Unavailable);
    let status = client
        .check_prescription(
            vignettes()
                .into_iter()
                .find(|v| v.name == "check-femoral-postop-60gy-pass")
                .expect("v")
                .check_request(),
        )
        .await
        .expect_err("fails closed");
    assert_eq!(status.code(), Code::Unavailable);
    let mut responses = client
        .recommend_stream(tokio_stream::iter(vec![with_case_id(
            "iliac-marginal",
            "fc-1",
        )]))
        .await
        .expect("stream")
        .into_inner();
    let ended = responses
        .message()
        .await
        .expect_err("the stream ends without the plan");
    assert_eq!(ended.code(), Code::Unavailable);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = status_of(
            health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "vlms.rt.v1.RecommendationService".into(),
                })
                .await
                .expect("health")
                .into_inner(),
        );
        if status == not_serving {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never went NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    failing.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = status_of(
            health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("health")
                .into_inner(),
        );
        if status == serving {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
        .recommend(with_case_id("femoral-postop-r0", "fc-1"))
        .await
        .expect("recovered");
    let listed = client
        .list_recommendations(pb::ListRecommendationsRequest {
            case_id: "fc-1".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(
        listed.records.len(),
        2,
        "nothing answered while failing was recorded, nothing recorded was lost"
    );
    server.stop().await;
    assert_eq!(verify(&path).0, 0);
}

#[tokio::test]
async fn every_answer_survives_kill_9_and_the_chain_stays_intact() {
    let path = temp_db();
    let mut received: Vec<pb::Plan> = Vec::new();
    for round in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--audit-db",
            ])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let address = crate::support::wait_for_address(&mut child);
        let url = format!("http://{address}");
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connects");
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for task in 0..16 {
            let mut client = RecommendationServiceClient::new(channel.clone());
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                let mut plans = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match client
                        .recommend(with_case_id(
                            "ivc-middle-postop-r1",
                            &format!("crash-{round}-{task}"),
                        ))
                        .await
                    {
                        Ok(response) => plans.push(response.into_inner().plan.expect("plan")),
                        Err(_) => break,
                    }
                }
                plans
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        // SIGKILL mid-load: no chance to flush anything that was not committed.
        child.kill().expect("kill -9");
        let _ = child.wait();
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            received.extend(task.await.expect("client task"));
        }
    }
    assert!(received.len() >= 16, "load ran: {} answers", received.len());
    let (code, output) = verify(&path);
    assert_eq!(code, 0, "{output}");
    // Restart on the same file: every answer any client received is there, byte for byte.
    let (store, reader) = vlms_rt::audit::sqlite::open(&path).expect("reopen");
    let auditor = Auditor::start(Box::new(store), Arc::new(reader));
    let mut settings = Settings::new("127.0.0.1:0".parse().expect("address"), profile());
    settings.audit = Some(auditor);
    let server = TestServer::start_with(settings).await;
    let mut client = server.client().await;
    for plan in &received {
        let record = client
            .get_recommendation(pb::GetRecommendationRequest {
                recommendation_id: plan.recommendation_id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("{} lost: {status:?}", plan.recommendation_id))
            .into_inner();
        match record.content {
            Some(pb::recommendation_record::Content::Recommend(stored)) => {
                assert_eq!(
                    stored.plan.expect("plan").encode_to_vec(),
                    plan.encode_to_vec()
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!(
        "crash test: {} answers over 3 kill -9 rounds, all retrievable",
        received.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn verify_names_a_record_changed_in_the_file() {
    let path = temp_db();
    let (server, _) = audited_server(&path).await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            client
                .recommend(with_case_id("iliac-marginal", "tamper"))
                .await
                .expect("ok")
                .into_inner()
                .plan
                .expect("plan")
                .recommendation_id,
        );
    }
    server.stop().await;
    assert_eq!(verify(&path).0, 0);
    let connection = rusqlite::Connection::open(&path).expect("open");
    let response: Vec<u8> = connection
        .query_row(
            "SELECT response FROM records WHERE recommendation_id = ?1",
            [&ids[1]],
            |row| row.get(0),
        )
        .expect("row");
    let mut changed = response.clone();
    let last = changed.len() - 1;
    changed[last] ^= 0x01;
    connection
        .execute(
            "UPDATE records SET response = ?1 WHERE recommendation_id = ?2",
            rusqlite::params![changed, ids[1]],
        )
        .expect("tamper");
    drop(connection);
    let (code, output) = verify(&path);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&ids[1]) && output.contains("record 2"),
        "{output}"
    );
}

#[tokio::test]
async fn the_client_shows_lists_and_records_feedback() {
    let path = temp_db();
    let (server, _) = audited_server(&path).await;
    let mut client = server.client().await;
    let plan = client
        .recommend(with_case_id("iliac-marginal", "cli-case"))
        .await
        .expect("ok")
        .into_inner()
        .plan
        .expect("plan");
    let run = |args: Vec<String>| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_vlms-rt"))
            .arg("--server")
            .arg(&server.url)
            .args(args)
            .env_remove("VLMS_RT_SERVER")
            .output()
    };
    let id = plan.recommendation_id.clone();
    let output = run(vec![
        "feedback".into(),
        id.clone(),
        "--outcome".into(),
        "overridden".into(),
    ])
    .await
    .expect("runs");
    assert_eq!(
        output.status.code(),
        Some(3),
        "a reason is required: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("  reason: "));
    let output = run(vec![
        "feedback".into(),
        id.clone(),
        "--outcome".into(),
        "overridden".into(),
        "--reason".into(),
        "surgery first".into(),
    ])
    .await
    .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = run(vec!["show".into(), id.clone()]).await.expect("runs");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with(&format!("Record {id} of case cli-case")),
        "{text}"
    );
    assert!(
        text.contains("OVERRIDDEN by anonymous: surgery first"),
        "{text}"
    );
    assert!(
        text.contains("Radiotherapy: CONSIDER — setting PREOPERATIVE"),
        "{text}"
    );

    let output = run(vec![
        "--output".into(),
        "json".into(),
        "show".into(),
        id.clone(),
    ])
    .await
    .expect("runs");
    let record: pb::RecommendationRecord =
        serde_json::from_slice(&output.stdout).expect("record JSON");
    match record.content {
        Some(pb::recommendation_record::Content::Recommend(stored)) => {
            assert_eq!(stored.plan.expect("plan"), plan)
        }
        other => panic!("unexpected {other:?}"),
    }

    let output = run(vec!["history".into(), "cli-case".into()])
        .await
        .expect("runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&id)
            && text.contains("plan: CONSIDER / PREOPERATIVE")
            && text.contains("feedback OVERRIDDEN"),
        "{text}"
    );

    let output = run(vec!["show".into(), uuid::Uuid::new_v4().to_string()])
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("NOT_FOUND"));
    server.stop().await;
}
