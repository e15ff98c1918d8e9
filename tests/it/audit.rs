//! The audit trail through the real server: every answer recorded before it leaves and returned
//! byte for byte, paging, feedback, the stream recording planned items only, fail-closed behaviour
//! with health following the store, crash safety under kill -9, and tamper evidence — each against
//! both backends: a SQLite file and a real PostgreSQL (a fresh database per test on the throw-away
//! cluster `scripts/with-postgres` starts; TLS to it verified against its test CA). PostgreSQL
//! alone: two replicas on one database with one of them killed mid-load.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tonic::Code;
use vlms_rt::audit::{AuditError, Auditor, NewRecord, Store};
use vlms_rt::pb;
use vlms_rt::pb::recommendation_service_client::RecommendationServiceClient;
use vlms_rt::startup::Settings;

use crate::support::{
    TestServer, any_plan_vignette, bad_request_fields, connect, http_get, profile,
    raw_grpc_headers, run_client, vignette,
};

/// Where a test's audit trail lives.
enum Target {
    Sqlite(PathBuf),
    Postgres {
        /// The test's own database, reached with TLS.
        url: String,
        ca: PathBuf,
        /// The cluster's superuser URL (plaintext, for set-up, outages and tampering).
        admin: String,
        database: String,
    },
}

/// The cluster started by `scripts/with-postgres` (the README's test command runs the suite
/// inside it); a test never assumes a server it was not given.
fn postgres_cluster() -> (String, PathBuf) {
    let url = std::env::var("VLMS_RT_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "the PostgreSQL audit tests need a throw-away cluster: run `scripts/test`, or \
             `scripts/with-postgres cargo test`, which starts one and sets VLMS_RT_TEST_POSTGRES_URL"
        )
    });
    let ca = std::env::var("VLMS_RT_TEST_POSTGRES_CA").expect("VLMS_RT_TEST_POSTGRES_CA");
    (url, PathBuf::from(ca))
}

/// A plaintext superuser connection for test set-up.
async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects to the test cluster");
    tokio::spawn(connection);
    client
}

impl Target {
    fn sqlite() -> Target {
        Target::Sqlite(
            std::env::temp_dir().join(format!("vlms-rt-audit-{}.sqlite3", uuid::Uuid::new_v4())),
        )
    }

    /// A new, empty database on the test cluster.
    async fn postgres() -> Target {
        let (admin_url, ca) = postgres_cluster();
        let database = format!("vlms_audit_{}", uuid::Uuid::new_v4().simple());
        admin(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create database");
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .expect("a URL with a database");
        Target::Postgres {
            url: format!("{base}/{database}?sslmode=require"),
            ca,
            admin: admin_url,
            database,
        }
    }

    /// An administrator's connection to this target's own database (PostgreSQL only).
    async fn database_admin(&self) -> tokio_postgres::Client {
        let Target::Postgres {
            admin: admin_url,
            database,
            ..
        } = self
        else {
            unreachable!("a PostgreSQL target")
        };
        let base = admin_url.rsplit_once('/').expect("url").0;
        admin(&format!("{base}/{database}")).await
    }

    /// The `--audit-db` (and `--audit-db-ca`) arguments.
    fn args(&self) -> Vec<std::ffi::OsString> {
        match self {
            Target::Sqlite(path) => vec!["--audit-db".into(), path.into()],
            Target::Postgres { url, ca, .. } => vec![
                "--audit-db".into(),
                url.into(),
                "--audit-db-ca".into(),
                ca.into(),
            ],
        }
    }

    fn open(&self) -> (Box<dyn Store>, Arc<dyn vlms_rt::audit::Reader>) {
        match self {
            Target::Sqlite(path) => {
                // As the server opens it: plans compressed against the profile's dictionary.
                let profile = vlms_rt::guideline::embedded().expect("profile");
                let dictionary = vlms_rt::audit::dictionary::plan_dictionary(&profile);
                vlms_rt::audit::open(path.to_str().expect("utf-8 path"), None, Some(&dictionary))
                    .expect("audit db")
            }
            Target::Postgres { url, ca, .. } => {
                let ca = std::fs::read(ca).expect("CA");
                vlms_rt::audit::open(url, Some(&ca), None).expect("audit db")
            }
        }
    }

    /// Flips the last byte of a stored response, behind the service's back.
    async fn tamper(&self, recommendation_id: &str) {
        match self {
            Target::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path).expect("open");
                let mut response: Vec<u8> = connection
                    .query_row(
                        "SELECT response FROM records WHERE recommendation_id = ?1",
                        [recommendation_id],
                        |row| row.get(0),
                    )
                    .expect("row");
                let last = response.len() - 1;
                response[last] ^= 0x01;
                connection
                    .execute(
                        "UPDATE records SET response = ?1 WHERE recommendation_id = ?2",
                        rusqlite::params![response, recommendation_id],
                    )
                    .expect("tamper");
            }
            Target::Postgres { .. } => {
                let client = self.database_admin().await;
                let changed = client
                    .execute(
                        "UPDATE records SET response = overlay(response placing \
                         set_byte('\\x00'::bytea, 0, get_byte(response, length(response) - 1) # 1) \
                         from length(response)) WHERE recommendation_id = $1",
                        &[&recommendation_id],
                    )
                    .await
                    .expect("tamper");
                assert_eq!(changed, 1);
            }
        }
    }
}

/// The test `$name(target)` against each audit backend, as `$name::sqlite` and `$name::postgres`;
/// the SQLite run on the runtime the second form names (two workers where the test needs them).
macro_rules! on_both_backends {
    ($name:ident) => {
        on_both_backends!($name, tokio::test);
    };
    ($name:ident, $($sqlite:tt)+) => {
        mod $name {
            #[$($sqlite)+]
            async fn sqlite() {
                super::$name(super::Target::sqlite()).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(super::Target::postgres().await).await;
            }
        }
    };
}

/// Makes the store fail from now on, or recover: for SQLite through the injected switch (a full
/// or broken disk), for PostgreSQL for real — the database stops admitting connections and the
/// replica's open ones are terminated, as in a database outage.
async fn set_store_failing(target: &Target, switch: &AtomicBool, failing: bool) {
    match target {
        Target::Sqlite(_) => switch.store(failing, Ordering::SeqCst),
        Target::Postgres {
            admin: admin_url,
            database,
            ..
        } => {
            let client = admin(admin_url).await;
            client
                .batch_execute(&format!(
                    "ALTER DATABASE {database} WITH ALLOW_CONNECTIONS {}",
                    !failing
                ))
                .await
                .expect("alter database");
            if failing {
                client
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                        &[database],
                    )
                    .await
                    .expect("terminate");
            }
        }
    }
}

fn case_named(name: &str) -> pb::Case {
    vignette(name).case()
}

fn with_case_id(name: &str, case_id: &str) -> pb::RecommendRequest {
    let mut case = case_named(name);
    case.case_id = case_id.to_string();
    pb::RecommendRequest { case: Some(case) }
}

/// A client of the recommendation service.
type Client = RecommendationServiceClient<tonic::transport::Channel>;

/// The plan `client` is given for the vignette `name` under `case_id`; fails the test on an error.
async fn recommended(client: &mut Client, name: &str, case_id: &str) -> pb::Plan {
    client
        .recommend(with_case_id(name, case_id))
        .await
        .expect("ok")
        .into_inner()
        .plan
        .expect("plan")
}

/// A store with a switch that makes every write fail, as a full or broken disk would.
struct Switchable {
    inner: Box<dyn Store>,
    failing: Arc<AtomicBool>,
}

impl Store for Switchable {
    fn append(&mut self, records: &[NewRecord]) -> Result<(), AuditError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(AuditError::Unavailable("injected write failure".into()));
        }
        self.inner.append(records)
    }
    fn probe(&mut self) -> Result<(), AuditError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(AuditError::Unavailable("injected write failure".into()));
        }
        self.inner.probe()
    }
    fn compression(&self) -> Option<Arc<vlms_rt::audit::compress::Compression>> {
        self.inner.compression()
    }
    fn commits_locally(&self) -> bool {
        self.inner.commits_locally()
    }
}

/// A client of a server's health service.
type Health = tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>;

/// Health statuses, as the health service reports them.
const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

/// The status health reports for `service` now.
async fn health_status(health: &mut Health, service: &str) -> i32 {
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

/// Polls health for `service` until it reports `status`; fails with `what` after `seconds`.
async fn wait_for_health(
    health: &mut Health,
    service: &str,
    status: i32,
    seconds: u64,
    what: &str,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if health_status(health, service).await == status {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn audited_server(target: &Target) -> (TestServer, Arc<AtomicBool>) {
    let (store, reader) = target.open();
    let failing = Arc::new(AtomicBool::new(false));
    let auditor = Auditor::start(
        Box::new(Switchable {
            inner: store,
            failing: Arc::clone(&failing),
        }),
        reader,
    );
    (
        TestServer::start_with(audited_settings(auditor)).await,
        failing,
    )
}

/// A server's settings: any free port, auditing with `auditor`, metrics on any free port.
fn audited_settings(auditor: Auditor) -> Settings {
    let mut settings = Settings::new("127.0.0.1:0".parse().expect("address"), profile());
    settings.audit = Some(auditor);
    settings.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    settings
}

/// The value of the unlabelled series `name` in a metrics exposition.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes `metrics` until the series `name` satisfies `holds`; fails with `what` after 10 s.
async fn wait_for_metric(metrics: &str, name: &str, holds: impl Fn(f64) -> bool, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = http_get(metrics, "/metrics").await;
        if metric_value(&text, name).is_some_and(&holds) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {name} in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `audit verify` on `target`: its exit code, and what it wrote (stdout, then stderr).
fn verify(target: &Target) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
        .args(["audit", "verify"])
        .args(target.args())
        .output()
        .expect("verify runs");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Runs `audit verify` on `target` and fails the test unless it finds the trail intact; gives
/// its report.
fn assert_intact(target: &Target) -> String {
    let (code, report) = verify(target);
    assert_eq!(code, 0, "{report}");
    report
}

/// [`assert_intact`], and fails the test unless the trail holds `records` records.
fn assert_intact_records(target: &Target, records: usize) {
    let report = assert_intact(target);
    assert!(
        report.contains(&format!("intact: {records} records")),
        "{report}"
    );
}

async fn answers_are_recorded_and_returned_byte_for_byte_with_paging_and_feedback(target: Target) {
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;

    let mut plans = Vec::new();
    for _ in 0..5 {
        plans.push(recommended(&mut client, "femoral-postop-r0", "mdt-0001").await);
    }
    let record = stored_record(&mut client, &plans[0].recommendation_id).await;
    assert_eq!(record.case_id, "mdt-0001");
    assert_eq!(record.caller, "anonymous");
    // The record names the guideline as the plan does, alpha/beta ratios included.
    assert_eq!(record.guideline, plans[0].guideline);
    assert_eq!(
        record.guideline.as_ref().expect("guideline").version,
        "2026.2"
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

    // The SQLite store keeps plans compressed against its dictionary (and still answered the exact
    // plan above).
    if let Target::Sqlite(path) = &target {
        let connection = rusqlite::Connection::open(path).expect("open");
        let (stored, dictionary): (i64, Option<i64>) = connection
            .query_row(
                "SELECT length(response), response_dictionary FROM records WHERE recommendation_id = ?1",
                [&plans[0].recommendation_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("row");
        assert!(dictionary.is_some(), "stored uncompressed");
        assert!(
            (stored as usize) * 4 < plans[0].encode_to_vec().len(),
            "{stored} bytes stored"
        );
    }
    // PostgreSQL asks for no compression (its TOAST compresses large values) and refuses a record
    // that arrives compressed rather than store bytes it would later serve as a plan.
    if let Target::Postgres { .. } = &target {
        let (mut store, _) = target.open();
        assert!(store.compression().is_none());
        let compressed = NewRecord {
            recommendation_id: "01JCXZ00000000000000000000".into(),
            created_at: vlms_rt::audit::now_rfc3339(),
            kind: vlms_rt::audit::Kind::Recommend,
            caller: "anonymous".into(),
            guideline_version: "2026.1".into(),
            guideline_sha256: "ab".repeat(32),
            case_id: "mdt-0001".into(),
            subject_id: None,
            request: Vec::new(),
            response: vec![0x28, 0xb5, 0x2f, 0xfd],
            response_dictionary: Some([7; 32]),
        };
        let refused = tokio::task::spawn_blocking(move || store.append(&[compressed]))
            .await
            .expect("joins");
        assert!(refused.is_err(), "{refused:?}");
    }

    // A check is recorded with its own id.
    let check = vignette("check-ivc-postop-boost-fails");
    let mut request = check.check_request();
    request.case.as_mut().expect("case").case_id = "mdt-0001".into();
    let response = client
        .check_prescription(request.clone())
        .await
        .expect("ok")
        .into_inner();
    // The plan inside a check's answer carries the check's id, which names the stored check.
    assert_eq!(
        response
            .recommended_plan
            .as_ref()
            .expect("recommended plan")
            .recommendation_id,
        response.recommendation_id
    );
    let stored = stored_record(&mut client, &response.recommendation_id).await;
    assert_eq!(stored.guideline, response.guideline);
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
    let pages = every_page(&mut client, "mdt-0001", 2).await;
    assert!(pages.iter().all(|page| page.records.len() <= 2));
    let seen = listed_ids(&pages);
    let mut expected: Vec<String> = plans
        .iter()
        .map(|plan| plan.recommendation_id.clone())
        .collect();
    expected.push(response.recommendation_id.clone());
    expected.reverse();
    assert_eq!(seen, expected, "newest first, every record once");

    // Bad listing requests.
    for (request, field) in [
        (list_request("", 0, ""), "case_id"),
        (list_request("mdt-0001", -1, ""), "page_size"),
        (list_request("mdt-0001", 2, "zz"), "page_token"),
    ] {
        let status = client
            .list_recommendations(request)
            .await
            .expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_request_fields(&status), vec![field.to_string()]);
    }
    // AIP-158: a page size above the largest page is served as the largest page, not refused.
    for page_size in [101, i32::MAX] {
        let page = client
            .list_recommendations(list_request("mdt-0001", page_size, ""))
            .await
            .expect("coerced to the largest page")
            .into_inner();
        assert_eq!(page.records.len(), expected.len());
        assert!(page.next_page_token.is_empty());
    }
    // A token of one case does not page another.
    let first = client
        .list_recommendations(list_request("mdt-0001", 1, ""))
        .await
        .expect("page")
        .into_inner();
    let status = client
        .list_recommendations(list_request("mdt-0002", 1, &first.next_page_token))
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
    // A ULID's letters are case-insensitive: a lower-case copy of an id names the same record.
    let lower = client
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: plans[0].recommendation_id.to_ascii_lowercase(),
        })
        .await
        .expect("found under its lower-case spelling")
        .into_inner();
    assert_eq!(lower.recommendation_id, plans[0].recommendation_id);

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
        // Text that would forge what `vlms-rt show` prints to the next reader.
        (
            feedback(
                pb::FeedbackOutcome::Overridden,
                "fine\u{1b}[2J\u{1b}[HPrescription check: PASS",
                &id,
            ),
            "reason",
        ),
        (
            feedback(
                pb::FeedbackOutcome::Modified,
                "dose\nFeedback: ACCEPTED by chief",
                &id,
            ),
            "reason",
        ),
        (
            feedback(pb::FeedbackOutcome::Modified, "\u{202E}DEPTECCA", &id),
            "reason",
        ),
    ] {
        let status = client.record_feedback(request).await.expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_request_fields(&status), vec![field.to_string()]);
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
    let record = stored_record(&mut client, &id).await;
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
    let pages = every_page(&mut client, "mdt-0003", 10).await;
    assert_eq!(pages.len(), 1, "two records fit on one page of ten");
    let mut listed = listed_ids(&pages);
    listed.reverse();
    assert_eq!(listed, planned);
    assert_eq!(planned.len(), 2);

    server.stop().await;
    assert_intact_records(&target, 10);
}

/// Sends `items` as one `RecommendStream` and gives the status it ends with; fails the test if any
/// answer comes first.
async fn stream_ending_before_any_answer(
    client: &mut Client,
    items: Vec<pb::RecommendRequest>,
) -> tonic::Status {
    let mut responses = client
        .recommend_stream(tokio_stream::iter(items))
        .await
        .expect("stream")
        .into_inner();
    match responses.message().await {
        Err(status) => status,
        Ok(answer) => panic!("an answer before the stream ended: {answer:?}"),
    }
}

/// A stream longer than the server's pipeline of items in work: answers in request order, every
/// plan recorded (byte for byte) and no rejected item; with the store failing, no plan at all.
async fn a_long_stream_is_answered_and_recorded_in_request_order(target: Target) {
    let (server, failing) = audited_server(&target).await;
    let mut client = server.client().await;
    const ITEMS: usize = 75;
    let rejected = |index: usize| index % 25 == 10;
    let names = ["femoral-postop-r0", "iliac-marginal", "ivc-metastatic"];
    let items: Vec<pb::RecommendRequest> = (0..ITEMS)
        .map(|index| {
            let mut item = with_case_id(names[index % names.len()], &format!("long-{index:03}"));
            if rejected(index) {
                item.case.as_mut().expect("case").tumor = None;
            }
            item
        })
        .collect();
    let mut responses = client
        .recommend_stream(tokio_stream::iter(items))
        .await
        .expect("stream")
        .into_inner();
    let mut answers = Vec::new();
    while let Some(item) = responses.message().await.expect("item") {
        answers.push(item);
    }
    assert_eq!(answers.len(), ITEMS);
    for (index, answer) in answers.into_iter().enumerate() {
        let case_id = format!("long-{index:03}");
        assert_eq!(answer.case_id, case_id, "answers in request order");
        let listed = client
            .list_recommendations(list_request(&case_id, 10, ""))
            .await
            .expect("page")
            .into_inner()
            .records;
        match answer.result.expect("result") {
            pb::recommend_stream_response::Result::Plan(plan) => {
                assert!(!rejected(index), "item {index} should have been rejected");
                assert_eq!(listed.len(), 1, "item {index} recorded once");
                assert_eq!(listed[0].recommendation_id, plan.recommendation_id);
                assert_eq!(
                    recorded_plan(&listed[0]).encode_to_vec(),
                    plan.encode_to_vec(),
                    "item {index}: the plan, byte for byte"
                );
            }
            pb::recommend_stream_response::Result::Error(status) => {
                assert!(rejected(index), "item {index}: {status:?}");
                assert_eq!(status.code, Code::InvalidArgument as i32);
                assert!(listed.is_empty(), "rejected item {index} not recorded");
            }
        }
    }

    set_store_failing(&target, &failing, true).await;
    let items: Vec<pb::RecommendRequest> = (0..40)
        .map(|index| with_case_id("iliac-marginal", &format!("long-failing-{index:02}")))
        .collect();
    let ended = stream_ending_before_any_answer(&mut client, items).await;
    assert_eq!(ended.code(), Code::Unavailable);
    // Items after the first were in work too, and their records were queued before the stream
    // ended; a call queued behind them, failing as well, shows they were all refused, so that
    // turning the store back on cannot commit them (were it on already, they would be stored
    // unsent, the safe side).
    let status = client
        .recommend(with_case_id("iliac-marginal", "long-barrier"))
        .await
        .expect_err("still failing");
    assert_eq!(status.code(), Code::Unavailable);
    set_store_failing(&target, &failing, false).await;

    server.stop().await;
    assert_intact_records(&target, ITEMS - 3);
}

/// A store whose first append says it has begun and then waits until the test lets it go (30 s at
/// most), noting every batch's size.
struct Gated {
    inner: Box<dyn Store>,
    entered: std::sync::mpsc::Sender<()>,
    release: Option<std::sync::mpsc::Receiver<()>>,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Store for Gated {
    fn append(&mut self, records: &[NewRecord]) -> Result<(), AuditError> {
        if let Some(release) = self.release.take() {
            let _ = self.entered.send(());
            let _ = release.recv_timeout(Duration::from_secs(30));
        }
        self.batches.lock().expect("batches").push(records.len());
        self.inner.append(records)
    }
    fn probe(&mut self) -> Result<(), AuditError> {
        self.inner.probe()
    }
    fn compression(&self) -> Option<Arc<vlms_rt::audit::compress::Compression>> {
        self.inner.compression()
    }
    fn commits_locally(&self) -> bool {
        self.inner.commits_locally()
    }
}

/// A server over a `Gated` SQLite store, with metrics: the sender that lets the held first append
/// go, the receiver told when that append began, and every batch's size.
struct GatedServer {
    target: Target,
    server: TestServer,
    metrics: String,
    release: std::sync::mpsc::Sender<()>,
    first_append: std::sync::mpsc::Receiver<()>,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl GatedServer {
    async fn start(adjust: impl FnOnce(&mut Settings)) -> GatedServer {
        GatedServer::start_bounded(
            vlms_rt::audit::DEFAULT_QUEUE_LIMIT,
            vlms_rt::audit::DEFAULT_QUEUE_BYTES,
            adjust,
        )
        .await
    }

    /// As `start`, with the audit writer's queue limited to `queue_limit` records and
    /// `byte_limit` bytes.
    async fn start_bounded(
        queue_limit: usize,
        byte_limit: usize,
        adjust: impl FnOnce(&mut Settings),
    ) -> GatedServer {
        let target = Target::sqlite();
        let (store, reader) = target.open();
        let (release, gate) = std::sync::mpsc::channel();
        let (entered, first_append) = std::sync::mpsc::channel();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let auditor = Auditor::start_bounded(
            Box::new(Gated {
                inner: store,
                entered,
                release: Some(gate),
                batches: Arc::clone(&batches),
            }),
            reader,
            queue_limit,
            byte_limit,
        );
        let mut settings = audited_settings(auditor);
        adjust(&mut settings);
        let server = TestServer::start_with(settings).await;
        let metrics = server.metrics_addr();
        GatedServer {
            target,
            server,
            metrics,
            release,
            first_append,
            batches,
        }
    }
}

/// Plans the server has counted, over every indication.
fn plans_counted(metrics_text: &str) -> u64 {
    metrics_text
        .lines()
        .filter(|line| line.starts_with("vlms_rt_plans_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// With auditing on, a stream does not wait for one item's commit before planning the next: while
/// the first record's commit is held, the rest of the stream is planned, and their records then
/// share commits. Answers still come in request order, after their records.
#[tokio::test]
async fn an_audited_stream_plans_its_next_items_while_a_commit_is_pending() {
    let GatedServer {
        target,
        server,
        metrics,
        release,
        first_append,
        batches,
    } = GatedServer::start(|settings| {
        // The first record's commit is held for as long as the test needs: no audit wait may end
        // it first, however slow the machine.
        settings.limits.call_timeout = Duration::from_secs(120);
    })
    .await;
    let mut client = server.client().await;
    const ITEMS: u64 = 5;
    let (items, requests) = tokio::sync::mpsc::channel(ITEMS as usize);
    let item = |index: u64| with_case_id("iliac-marginal", &format!("gate-{index}"));
    // The first item alone, until its record's commit has begun (and is held): the first batch
    // is then that one record whatever the scheduling, and the rest arrive behind a pending commit.
    items.send(item(0)).await.expect("first item");
    let answered = tokio::spawn(async move {
        let mut responses = client
            .recommend_stream(tokio_stream::wrappers::ReceiverStream::new(requests))
            .await
            .expect("stream")
            .into_inner();
        let mut case_ids = Vec::new();
        while let Some(item) = responses.message().await.expect("item") {
            assert!(
                matches!(
                    item.result,
                    Some(pb::recommend_stream_response::Result::Plan(_))
                ),
                "{item:?}"
            );
            case_ids.push(item.case_id);
        }
        case_ids
    });

    tokio::task::spawn_blocking(move || first_append.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("join")
        .expect("the first record's commit began");
    for index in 1..ITEMS {
        items.send(item(index)).await.expect("item");
    }
    drop(items);
    let mut planned = 0;
    for _ in 0..500 {
        planned = plans_counted(&http_get(&metrics, "/metrics").await);
        if planned == ITEMS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        planned, ITEMS,
        "every item planned while the first commit was held"
    );
    assert!(!answered.is_finished(), "no answer before its commit");
    release.send(()).expect("release");
    let case_ids = answered.await.expect("client task");
    let expected: Vec<String> = (0..ITEMS).map(|index| format!("gate-{index}")).collect();
    assert_eq!(case_ids, expected, "answers in request order");
    let batches = batches.lock().expect("batches").clone();
    assert_eq!(batches.iter().sum::<usize>(), ITEMS as usize, "{batches:?}");
    assert_eq!(batches[0], 1, "{batches:?}");
    assert!(
        batches.len() < ITEMS as usize,
        "records shared commits: {batches:?}"
    );
    server.stop().await;
    assert_intact(&target);
}

/// The audit writer's queue is bounded, in records and in bytes: while the store is stuck on a
/// commit, records queue up to the limit and the call after that fails closed with UNAVAILABLE at
/// once, without a plan and without waiting, instead of growing the queue for as long as callers
/// retry. The queued calls are answered when the store goes on.
#[tokio::test]
async fn a_full_audit_queue_fails_the_call_unavailable_at_once() {
    // Two records fit: of three calls behind the held one, whichever arrives last is refused.
    full_queue(2, vlms_rt::audit::DEFAULT_QUEUE_BYTES, 1).await;
    // One byte: the held record alone fills it (one record always fits an empty queue).
    full_queue(vlms_rt::audit::DEFAULT_QUEUE_LIMIT, 1, 3).await;
}

/// Holds the first record's commit, sends three more calls to a queue of `queue_limit` records
/// and `byte_limit` bytes, and checks that `refused` of them fail at once and the rest are stored.
async fn full_queue(queue_limit: usize, byte_limit: usize, refused: usize) {
    let GatedServer {
        target,
        server,
        release,
        first_append,
        batches,
        ..
    } = GatedServer::start_bounded(queue_limit, byte_limit, |settings| {
        // Queued calls wait as long as the test needs: no audit wait may end them first.
        settings.limits.call_timeout = Duration::from_secs(120);
    })
    .await;
    let channel = server.channel().await;
    let call = |index: usize| {
        let mut client = RecommendationServiceClient::new(channel.clone());
        async move {
            client
                .recommend(with_case_id("femoral-postop-r0", &format!("queue-{index}")))
                .await
        }
    };
    // The first record is taken by the writer and held inside the store's commit.
    let first = tokio::spawn(call(0));
    tokio::task::spawn_blocking(move || first_append.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("join")
        .expect("the first record's commit began");
    let mut rest = tokio::task::JoinSet::new();
    for index in 1..=3 {
        rest.spawn(call(index));
    }
    for _ in 0..refused {
        let status = tokio::time::timeout(Duration::from_secs(30), rest.join_next())
            .await
            .expect("refused calls are answered while the commit is held")
            .expect("a call")
            .expect("join")
            .expect_err("no plan past the queue limit");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("audit store"), "{status:?}");
    }
    assert!(!first.is_finished(), "the held call is still waiting");
    release.send(()).expect("release");
    let first = first.await.expect("join").expect("first call answered");
    let mut recorded = vec![first.into_inner().plan.expect("plan").recommendation_id];
    while let Some(answer) = rest.join_next().await {
        let answer = answer.expect("join").expect("queued call answered");
        recorded.push(answer.into_inner().plan.expect("plan").recommendation_id);
    }
    assert_eq!(recorded.len(), 4 - refused);
    assert_eq!(
        batches.lock().expect("batches").iter().sum::<usize>(),
        4 - refused,
        "only the answered calls were recorded"
    );
    // With the queue drained, calls are recorded again.
    let mut client = server.client().await;
    client
        .recommend(with_case_id("femoral-postop-r0", "queue-after"))
        .await
        .expect("recorded once the queue has room");
    for id in recorded {
        client
            .get_recommendation(pb::GetRecommendationRequest {
                recommendation_id: id,
            })
            .await
            .expect("every answered plan is stored");
    }
    server.stop().await;
    assert_intact_records(&target, 5 - refused);
}

/// A store that does not answer (a disk that hangs, a lock held elsewhere) fails the call closed
/// with UNAVAILABLE before the call would time out — before the server's call timeout, and before
/// a shorter deadline of the caller's — logged and counted like any other call, and health goes
/// NOT_SERVING (a hung store finishes no batch to report itself) until the store answers again.
/// On two workers, as the server binary runs on two cores or more: the hung commit holds one of
/// them (a local file's store is committed on the runtime), and the other answers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_fails_the_call_unavailable_before_the_call_timeout() {
    let GatedServer {
        target: _target,
        server,
        metrics,
        release,
        ..
    } = GatedServer::start(|settings| settings.limits.call_timeout = Duration::from_secs(5)).await;
    let mut client = server.client().await;
    let mut health = Health::new(server.channel().await);
    // A caller's deadline shorter than the server's call timeout: DEADLINE_EXCEEDED from the
    // server before the caller's own timer, and no judgement on the store (a caller must not flip
    // health with short deadlines).
    let mut with_deadline = tonic::Request::new(with_case_id("femoral-postop-r0", "stall-1"));
    // 3 s: the server answers at 2.4 s, well before the client's own timer.
    with_deadline.set_timeout(Duration::from_secs(3));
    let status = client
        .recommend(with_deadline)
        .await
        .expect_err("no plan while the store stalls");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("audit store"), "{status:?}");
    assert_eq!(
        health_status(&mut health, "vlms.rt.v1.RecommendationService").await,
        SERVING,
        "a caller's short deadline is not a store failure"
    );
    // Without a deadline of its own the call waits the server's audit wait: UNAVAILABLE.
    let status = client
        .recommend(with_case_id("femoral-postop-r0", "stall-1"))
        .await
        .expect_err("no plan while the store stalls");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("in time"), "{status:?}");
    let text = http_get(&metrics, "/metrics").await;
    // The records held by the stalled store are visible as queued bytes.
    assert!(
        metric_value(&text, "vlms_rt_audit_queued_bytes").is_some_and(|bytes| bytes > 0.0),
        "{text}"
    );
    for counted in [
        "vlms_rt_calls_total{code=\"DEADLINE_EXCEEDED\",rpc=\"Recommend\"} 1",
        "vlms_rt_calls_total{code=\"UNAVAILABLE\",rpc=\"Recommend\"} 1",
    ] {
        assert!(
            text.lines().any(|line| line.starts_with(counted)),
            "{counted} in {text}"
        );
    }
    wait_for_health(
        &mut health,
        "vlms.rt.v1.RecommendationService",
        NOT_SERVING,
        10,
        "a stalled store left health SERVING",
    )
    .await;
    release.send(()).expect("release");
    wait_for_health(
        &mut health,
        "vlms.rt.v1.RecommendationService",
        SERVING,
        30,
        "health never recovered once the store answered",
    )
    .await;
    client
        .recommend(with_case_id("femoral-postop-r0", "stall-1"))
        .await
        .expect("answered once the store answers");
    // The held transaction shows in the commit times: it took the whole stall, over 2 s (the
    // first call alone waited 2.4 s for it).
    let text = http_get(&metrics, "/metrics").await;
    let slowest_under_one_second =
        metric_value(&text, r#"vlms_rt_audit_commit_seconds_bucket{le="1"}"#);
    let timed = metric_value(&text, "vlms_rt_audit_commit_seconds_count");
    assert!(
        matches!((slowest_under_one_second, timed), (Some(fast), Some(all)) if fast < all),
        "{text}"
    );
    assert!(
        metric_value(&text, "vlms_rt_audit_commit_seconds_sum").is_some_and(|sum| sum > 2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "vlms_rt_audit_queued_bytes"),
        Some(0.0),
        "{text}"
    );
    server.stop().await;
}

async fn an_unwritable_store_fails_closed_and_health_follows_it(target: Target) {
    let (server, failing) = audited_server(&target).await;
    let mut client = server.client().await;
    let mut health = Health::new(server.channel().await);
    client
        .recommend(with_case_id("femoral-postop-r0", "fc-1"))
        .await
        .expect("ok while writable");

    set_store_failing(&target, &failing, true).await;
    let status = client
        .recommend(with_case_id("femoral-postop-r0", "fc-1"))
        .await
        .expect_err("fails closed");
    assert_eq!(status.code(), Code::Unavailable);
    let status = client
        .check_prescription(vignette("check-femoral-postop-60gy-pass").check_request())
        .await
        .expect_err("fails closed");
    assert_eq!(status.code(), Code::Unavailable);
    let ended =
        stream_ending_before_any_answer(&mut client, vec![with_case_id("iliac-marginal", "fc-1")])
            .await;
    assert_eq!(ended.code(), Code::Unavailable);
    wait_for_health(
        &mut health,
        "vlms.rt.v1.RecommendationService",
        NOT_SERVING,
        10,
        "health never went NOT_SERVING",
    )
    .await;
    // The operator sees the failed transactions; no record stays queued for a store that failed.
    let metrics = server.metrics_addr();
    wait_for_metric(
        &metrics,
        "vlms_rt_audit_failed_batches",
        |failed| failed >= 1.0,
        "no failed batch counted",
    )
    .await;
    // Liveness is not readiness: a database outage must not get every replica restarted.
    assert_eq!(
        health_status(&mut health, vlms_rt::startup::LIVENESS_SERVICE_NAME).await,
        SERVING,
        "liveness stays SERVING while the store fails"
    );

    set_store_failing(&target, &failing, false).await;
    wait_for_health(&mut health, "", SERVING, 10, "health never recovered").await;
    client
        .recommend(with_case_id("femoral-postop-r0", "fc-1"))
        .await
        .expect("recovered");
    let listed = client
        .list_recommendations(list_request("fc-1", 10, ""))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(
        listed.records.len(),
        2,
        "nothing answered while failing was recorded, nothing recorded was lost"
    );
    let text = http_get(&metrics, "/metrics").await;
    assert_eq!(
        metric_value(&text, "vlms_rt_audit_records"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "vlms_rt_audit_queued_bytes"),
        Some(0.0),
        "{text}"
    );
    // Every batch's transaction was timed, the failed ones too.
    let timed = metric_value(&text, "vlms_rt_audit_commit_seconds_count").expect("histogram");
    let batches = metric_value(&text, "vlms_rt_audit_batches").expect("batches");
    let failed = metric_value(&text, "vlms_rt_audit_failed_batches").expect("failed");
    assert_eq!(timed, batches + failed, "{text}");
    server.stop().await;
    assert_intact(&target);
}

async fn every_answer_survives_kill_9_and_the_chain_stays_intact(target: Target) {
    let mut received: Vec<pb::Plan> = Vec::new();
    for round in 0..3 {
        let (mut child, url) = spawn_server(&target);
        let channel = connect(&url).await;
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
    assert_intact(&target);
    // Restart on the same store: every answer any client received is there, byte for byte.
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;
    assert_every_plan_stored(&mut client, &received).await;
    eprintln!(
        "crash test: {} answers over 3 kill -9 rounds, all retrievable",
        received.len()
    );
    server.stop().await;
}

async fn verify_names_a_record_changed_in_the_file(target: Target) {
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            recommended(&mut client, "iliac-marginal", "tamper")
                .await
                .recommendation_id,
        );
    }
    server.stop().await;
    assert_intact(&target);
    target.tamper(&ids[1]).await;
    let (code, output) = verify(&target);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&ids[1]) && output.contains("record 2"),
        "{output}"
    );
    // Every read checks the record's hash as verify does: the changed record is refused on
    // purpose (DATA_LOSS), not served and not left to whether its bytes still decompress.
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;
    let get = |id: &str| pb::GetRecommendationRequest {
        recommendation_id: id.to_string(),
    };
    let status = client
        .get_recommendation(get(&ids[1]))
        .await
        .expect_err("a changed record is refused");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains("changed"), "{status:?}");
    for untouched in [&ids[0], &ids[2]] {
        client
            .get_recommendation(get(untouched))
            .await
            .expect("its neighbours are intact");
    }
    let status = client
        .list_recommendations(list_request("tamper", 10, ""))
        .await
        .expect_err("a page holding the changed record is refused");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    // A page that holds only intact records is served, even when the record after it is the
    // changed one: that one is not read until its own page is asked for.
    let first = client
        .list_recommendations(list_request("tamper", 1, ""))
        .await
        .expect("the newest record alone is intact")
        .into_inner();
    assert_eq!(first.records[0].recommendation_id, ids[2]);
    assert!(!first.next_page_token.is_empty());
    let status = client
        .list_recommendations(list_request("tamper", 1, &first.next_page_token))
        .await
        .expect_err("the changed record's own page is refused");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_byte_flipped_inside_a_compressed_response_is_refused_on_read() {
    let target = Target::sqlite();
    let Target::Sqlite(path) = &target else {
        unreachable!("sqlite")
    };
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;
    let id = recommended(&mut client, "ivc-middle-postop-r1", "flip")
        .await
        .recommendation_id;
    server.stop().await;
    // One bit in the middle of the stored (compressed) bytes.
    let connection = rusqlite::Connection::open(path).expect("open");
    let (mut response, dictionary): (Vec<u8>, Option<i64>) = connection
        .query_row(
            "SELECT response, response_dictionary FROM records WHERE recommendation_id = ?1",
            [&id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("row");
    assert!(dictionary.is_some(), "the response is stored compressed");
    let middle = response.len() / 2;
    response[middle] ^= 0x10;
    connection
        .execute(
            "UPDATE records SET response = ?1 WHERE recommendation_id = ?2",
            rusqlite::params![response, id],
        )
        .expect("tamper");
    drop(connection);
    let (server, _) = audited_server(&target).await;
    let status = server
        .client()
        .await
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: id.clone(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    server.stop().await;
}

async fn the_client_shows_lists_and_records_feedback(target: Target) {
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;
    let plan = recommended(&mut client, "iliac-marginal", "cli-case").await;
    let run = |args: &[&str]| {
        let args: Vec<String> = ["--server", server.url.as_str()]
            .iter()
            .chain(args)
            .map(|arg| arg.to_string())
            .collect();
        run_client(args, None)
    };
    let id = plan.recommendation_id.clone();
    let output = run(&["feedback", &id, "--outcome", "overridden"]).await;
    output.expect_exit_for(3, "a reason is required");
    assert!(output.stderr.contains("  reason: "));
    let output = run(&[
        "feedback",
        &id,
        "--outcome",
        "overridden",
        "--reason",
        "surgery first",
    ])
    .await;
    output.expect_exit(0);

    let output = run(&["show", &id]).await;
    output.expect_exit(0);
    let text = &output.stdout;
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
    assert!(
        text.contains("Case as sent: ILIAC_VEIN; 6 cm GRADE_2; PRE_RESECTION; MARGINAL\n"),
        "{text}"
    );

    let output = run(&["--output", "json", "show", &id]).await;
    let record: pb::RecommendationRecord =
        serde_json::from_str(&output.stdout).expect("record JSON");
    assert_eq!(recorded_plan(&record), &plan);

    let output = run(&["history", "cli-case"]).await;
    let text = &output.stdout;
    assert!(
        text.contains(&id)
            && text.contains("plan: CONSIDER / PREOPERATIVE")
            && text.contains("feedback OVERRIDDEN"),
        "{text}"
    );

    let output = run(&["show", &uuid::Uuid::new_v4().to_string()]).await;
    output.expect_exit(1);
    assert!(output.stderr.contains("NOT_FOUND"));

    // A refused case id: the violation and exit code 3, and no heading before it.
    let output = run(&["history", "a b"]).await;
    output.expect_exit(3);
    assert_eq!(output.stdout, "");
    assert!(output.stderr.contains("case_id"));
    server.stop().await;
}

on_both_backends!(answers_are_recorded_and_returned_byte_for_byte_with_paging_and_feedback);

// On two workers for SQLite: its batches then commit on the runtime.
on_both_backends!(
    a_long_stream_is_answered_and_recorded_in_request_order,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);

// On two workers for SQLite: its batches then commit on the runtime.
on_both_backends!(
    an_unwritable_store_fails_closed_and_health_follows_it,
    tokio::test(flavor = "multi_thread", worker_threads = 2)
);

on_both_backends!(every_answer_survives_kill_9_and_the_chain_stays_intact);

on_both_backends!(verify_names_a_record_changed_in_the_file);

on_both_backends!(the_client_shows_lists_and_records_feedback);

/// A database a newer build has migrated (a rollback after an upgrade): the server refuses to
/// start on it and `audit verify` refuses to judge it (exit 2, not a reported break), naming the
/// schema version; the refused start writes nothing.
async fn a_database_from_a_newer_build_is_refused(target: Target) {
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;
    client
        .recommend(with_case_id("iliac-marginal", "rollback"))
        .await
        .expect("ok");
    server.stop().await;
    let newer = "INSERT INTO schema_migrations (version, applied_at) VALUES (1000, 'later')";
    const COUNTS: &str =
        "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM schema_migrations)";
    // Records and migrations in the database, after `sql` (if any) ran on it.
    let counts = |sql: Option<&'static str>| {
        let target = &target;
        async move {
            match target {
                Target::Sqlite(path) => {
                    let connection = rusqlite::Connection::open(path).expect("open");
                    if let Some(sql) = sql {
                        connection.execute_batch(sql).expect("sql");
                    }
                    connection
                        .query_row(COUNTS, [], |row| Ok((row.get(0)?, row.get(1)?)))
                        .expect("counts")
                }
                Target::Postgres { .. } => {
                    let client = target.database_admin().await;
                    if let Some(sql) = sql {
                        client.batch_execute(sql).await.expect("sql");
                    }
                    let row = client.query_one(COUNTS, &[]).await.expect("counts");
                    (row.get::<_, i64>(0), row.get::<_, i64>(1))
                }
            }
        }
    };
    let before: (i64, i64) = counts(Some(newer)).await;
    assert_eq!(before.0, 1, "the one recommendation is recorded");
    refused_as_newer(&target).await;
    assert_eq!(
        counts(None).await,
        before,
        "the refused start wrote nothing"
    );
}

/// Asserts that the server refuses to start on `target` and `audit verify` refuses to judge it,
/// both with exit code 2 and naming schema version 1000.
async fn refused_as_newer(target: &Target) {
    // A server that failed to refuse would serve until killed: bounded, and killed on drop.
    let started = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(target.args())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the server refuses to start rather than serving")
    .expect("server runs");
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert_eq!(started.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("schema version 1000"), "{stderr}");
    let (code, output) = verify(target);
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("schema version 1000"), "{output}");
}

/// A database that holds nothing but a newer build's migration record (its tables are the newer
/// build's business): refused before anything is created in it, by the server and by `verify`
/// (which refuses before it would report the missing records table). An empty PostgreSQL
/// database is reported as holding no audit trail.
async fn a_bare_database_from_a_newer_build_is_refused(target: Target) {
    const BARE: &str = "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL); \
                        INSERT INTO schema_migrations VALUES (1000, 'later')";
    let tables = || async {
        match &target {
            Target::Sqlite(path) => rusqlite::Connection::open(path)
                .expect("open")
                .query_row("SELECT count(*) FROM sqlite_master", [], |row| {
                    row.get::<_, i64>(0)
                })
                .expect("tables"),
            Target::Postgres { .. } => target
                .database_admin()
                .await
                .query_one(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = 'public'",
                    &[],
                )
                .await
                .expect("tables")
                .get(0),
        }
    };
    match &target {
        Target::Sqlite(path) => rusqlite::Connection::open(path)
            .expect("open")
            .execute_batch(BARE)
            .expect("bare"),
        Target::Postgres { .. } => {
            let client = target.database_admin().await;
            let (code, output) = verify(&target);
            assert_eq!(code, 2, "{output}");
            assert!(output.contains("no audit trail"), "{output}");
            client.batch_execute(BARE).await.expect("bare");
        }
    }
    let before = tables().await;
    assert!(before >= 1, "{before}");
    refused_as_newer(&target).await;
    assert_eq!(tables().await, before, "nothing was created");
}

on_both_backends!(a_database_from_a_newer_build_is_refused);

on_both_backends!(a_bare_database_from_a_newer_build_is_refused);

/// Starts a `vlms-rt-server` process on `target`, its JSON log on a pipe to be read.
fn start_server_process(target: &Target) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(target.args())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts")
}

/// Starts a `vlms-rt-server` process on `target`, returning it and its URL once it serves.
fn spawn_server(target: &Target) -> (std::process::Child, String) {
    let mut child = start_server_process(target);
    let address = crate::support::wait_for_address(&mut child);
    (child, format!("http://{address}"))
}

#[tokio::test]
async fn two_replicas_share_one_chain_and_survive_losing_one_mid_load() {
    let target = Target::postgres().await;
    // Both replicas start together: the migration runs once, under its advisory lock.
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| spawn_server(&target));
        let second = scope.spawn(|| spawn_server(&target));
        (first.join().expect("first"), second.join().expect("second"))
    });
    let (mut doomed, doomed_url) = first;
    let (mut survivor, survivor_url) = second;

    // Both replicas reach the database over TLS.
    if let Target::Postgres {
        admin: admin_url,
        database,
        ..
    } = &target
    {
        let client = admin(admin_url).await;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.application_name = 'vlms-rt'",
                &[database],
            )
            .await
            .expect("pg_stat_ssl");
        let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
        assert!(all >= 2, "both replicas hold a connection: {all}");
        assert_eq!(encrypted, all, "every replica connection uses TLS");
    }

    let channels = [connect(&doomed_url).await, connect(&survivor_url).await];
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..16_usize {
        // Each client alternates between the replicas, as a load balancer would spread calls.
        let mut clients: Vec<_> = channels
            .iter()
            .map(|channel| RecommendationServiceClient::new(channel.clone()))
            .collect();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut plans = Vec::new();
            let mut alive = [true, true];
            let mut call = task;
            while !stop.load(Ordering::SeqCst) {
                let replica = if alive[call % 2] {
                    call % 2
                } else {
                    1 - call % 2
                };
                call += 1;
                match clients[replica]
                    .recommend(with_case_id(
                        "ivc-middle-postop-r1",
                        &format!("replica-{task}"),
                    ))
                    .await
                {
                    Ok(response) => plans.push(response.into_inner().plan.expect("plan")),
                    // Only the killed replica may fail; its calls go to the survivor from now on.
                    Err(status) => {
                        assert_eq!(replica, 0, "the surviving replica failed: {status:?}");
                        alive[0] = false;
                    }
                }
            }
            plans
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    doomed.kill().expect("kill -9 one replica");
    let _ = doomed.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut received = Vec::new();
    for task in tasks {
        received.extend(task.await.expect("client task"));
    }
    assert!(received.len() >= 32, "load ran: {} answers", received.len());

    // Every id any client received is retrievable, byte for byte, from the surviving replica.
    let mut client = RecommendationServiceClient::new(channels[1].clone());
    assert_every_plan_stored(&mut client, &received).await;
    let _ = survivor.kill();
    let _ = survivor.wait();
    let output = assert_intact(&target);
    let stored: usize = output
        .split("intact: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("a record count: {output}"));
    // Answers cut off by the kill after their commit are stored but never received.
    assert!(
        stored >= received.len(),
        "{stored} stored, {} received",
        received.len()
    );
    eprintln!(
        "two replicas: {} answers, one replica killed mid-load, all retrievable",
        received.len()
    );
}

#[tokio::test]
async fn a_database_certificate_from_another_ca_is_refused() {
    let Target::Postgres { url, .. } = Target::postgres().await else {
        unreachable!("a PostgreSQL target")
    };
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a CA");
    let ca = std::env::temp_dir().join(format!("vlms-rt-stranger-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&ca, stranger.cert.pem()).expect("write CA");
    let output = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--audit-db",
            &url,
            "--audit-db-ca",
        ])
        .arg(&ca)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot open the audit database") && stderr.contains("certificate"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&ca);
}

#[tokio::test]
async fn a_replica_stuck_holding_the_chain_lock_does_not_wedge_the_others() {
    let target = Target::postgres().await;
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;
    let mut health = Health::new(server.channel().await);
    client
        .recommend(with_case_id("iliac-marginal", "stuck"))
        .await
        .expect("ok before");

    // Another "replica" takes the chain lock and never lets go (a session-level lock).
    let stuck = target.database_admin().await;
    stuck
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&vlms_rt::audit::postgres::CHAIN_LOCK],
        )
        .await
        .expect("lock");

    // The database ends the wait (lock_timeout): the call fails closed instead of hanging.
    let started = std::time::Instant::now();
    let status = client
        .recommend(with_case_id("iliac-marginal", "stuck"))
        .await
        .expect_err("no answer without its record");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The probe needs the chain lock too, so health cannot claim SERVING while it is held.
    wait_for_health(
        &mut health,
        "",
        NOT_SERVING,
        10,
        "health never went NOT_SERVING",
    )
    .await;

    drop(stuck);
    wait_for_health(&mut health, "", SERVING, 15, "health never recovered").await;
    client
        .recommend(with_case_id("iliac-marginal", "stuck"))
        .await
        .expect("ok after the lock is released");
    server.stop().await;
    assert_intact_records(&target, 2);
}

/// Sends one `Recommend` whose message is `message` exactly (not written by the generated
/// client) and decodes the answer.
async fn recommend_raw(address: &str, message: &[u8]) -> pb::RecommendResponse {
    let (response, mut stream) =
        raw_grpc_headers(address, "/vlms.rt.v1.RecommendationService/Recommend").await;
    let mut body = vec![0_u8];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(message);
    stream
        .send_data(bytes::Bytes::from(body), true)
        .expect("body");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered")
        .expect("response");
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        received.extend_from_slice(&chunk.expect("data"));
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    assert_eq!(
        trailers.get("grpc-status").map(|value| value.as_bytes()),
        Some(&b"0"[..]),
        "{trailers:?}"
    );
    pb::RecommendResponse::decode(&received[5..]).expect("a RecommendResponse")
}

#[tokio::test]
async fn a_record_keeps_the_request_as_read_not_fields_the_contract_does_not_define() {
    let target = Target::sqlite();
    let (server, _failing) = audited_server(&target).await;
    let address = server.url.trim_start_matches("http://").to_string();
    let request = pb::RecommendRequest {
        case: Some(any_plan_vignette().case()),
    };
    let canonical = request.encode_to_vec();
    // The same request with a text under a field number the contract does not define, and with
    // an earlier case_id that the later one replaces.
    let mut sent = vec![0x3a, 8];
    sent.extend(b"Jane Doe");
    sent.extend(&canonical);
    let Some(case) = &request.case else {
        unreachable!("built with a case")
    };
    let mut inner = vec![0x0a, 9];
    inner.extend(b"Jane-Does");
    prost::encoding::string::encode(1, &case.case_id, &mut inner);
    sent.push(0x0a);
    prost::encoding::encode_varint(inner.len() as u64, &mut sent);
    sent.extend(&inner);
    // The case sent a second time holds only case_ids: merged, the last one is the case's own.

    let response = recommend_raw(&address, &sent).await;
    let id = response.plan.expect("a plan").recommendation_id;
    let Target::Sqlite(path) = &target else {
        unreachable!("a SQLite target")
    };
    let connection = rusqlite::Connection::open(path).expect("open");
    let stored: Vec<u8> = connection
        .query_row(
            "SELECT request FROM records WHERE recommendation_id = ?1",
            [&id],
            |row| row.get(0),
        )
        .expect("the answer was recorded");
    assert_eq!(stored, canonical, "prost's encoding of what was read");
    assert!(!stored.windows(4).any(|window| window == b"Jane"));
}

/// A recommendation over `url`, for the tests that drive server processes.
async fn recommend_over(url: &str, case_id: &str) -> Result<pb::Plan, tonic::Status> {
    RecommendationServiceClient::new(connect(url).await)
        .recommend(with_case_id("iliac-marginal", case_id))
        .await
        .map(|response| response.into_inner().plan.expect("plan"))
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_refused_naming_the_file_and_its_holder() {
    let target = Target::sqlite();
    let Target::Sqlite(path) = &target else {
        unreachable!("sqlite")
    };
    let (mut first, url) = spawn_server(&target);
    recommend_over(&url, "one-owner").await.expect("answered");
    let second = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(target.args())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is in use by another process", path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("vlms-rt-server pid {}", first.id())),
        "the holder is named: {stderr}"
    );
    // The first server goes on, alone on its chain.
    for index in 0..6 {
        recommend_over(&url, &format!("one-owner-{index}"))
            .await
            .expect("answered");
    }
    first.kill().expect("kill");
    first.wait().expect("ended");
    assert_intact_records(&target, 7);
    // With the holder gone, the lock is free again.
    let (mut next, url) = spawn_server(&target);
    recommend_over(&url, "after").await.expect("answered");
    next.kill().expect("kill");
    next.wait().expect("ended");
}

#[tokio::test]
async fn a_deleted_audit_file_fails_closed_instead_of_answering_into_the_void() {
    let target = Target::sqlite();
    let Target::Sqlite(path) = &target else {
        unreachable!("sqlite")
    };
    let mut child = start_server_process(&target);
    let (address, log) = crate::support::wait_for_address_and_log(&mut child);
    let url = format!("http://{address}");
    recommend_over(&url, "before").await.expect("answered");
    std::fs::remove_file(path).expect("delete the audit file");
    for index in 0..3 {
        let status = recommend_over(&url, &format!("after-{index}"))
            .await
            .expect_err("no answer without its record");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    let mut health = Health::new(connect(&url).await);
    wait_for_health(
        &mut health,
        "vlms.rt.v1.RecommendationService",
        NOT_SERVING,
        10,
        "NOT_SERVING once the audit file is gone",
    )
    .await;
    // A new file at the path does not make the server whole: it keeps refusing until restarted.
    std::fs::write(path, b"").expect("a new file");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = recommend_over(&url, "still")
        .await
        .expect_err("still refused");
    assert_eq!(status.code(), Code::Unavailable);
    child.kill().expect("kill");
    child.wait().expect("ended");
    // The log thread has read everything once the pipe closes; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let text = log.lock().expect("log").join("\n");
        if text.contains("deleted or replaced") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        log.matches("the audit database file was deleted or replaced while in use")
            .count(),
        1,
        "said once: {log}"
    );
}

#[tokio::test]
async fn an_audit_store_refusal_is_not_reported_as_an_unreachable_server() {
    let target = Target::sqlite();
    let (server, failing) = audited_server(&target).await;
    failing.store(true, Ordering::SeqCst);
    let case = crate::support::vignette_dir().join("iliac-marginal.json");
    let case = case.to_str().expect("a UTF-8 path");
    let output = run_client(["--server", &server.url, "recommend", case], None).await;
    output.expect_exit(1);
    let stderr = &output.stderr;
    assert!(stderr.contains("UNAVAILABLE"), "{stderr}");
    assert!(!stderr.contains("unreachable"), "{stderr}");
    failing.store(false, Ordering::SeqCst);
    server.stop().await;
}

#[tokio::test]
async fn a_history_of_large_checks_comes_in_pages_every_client_can_read() {
    let target = Target::sqlite();
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;
    // Checks carrying as many dose metrics as a 64 KiB request holds: each stored record (the
    // request, and the answer with one finding per metric) is a few hundred KB.
    let mut case = case_named("ivc-middle-postop-r1");
    case.case_id = "large-history".into();
    let request = pb::CheckPrescriptionRequest {
        case: Some(case),
        setting: pb::Setting::Postoperative as i32,
        phases: vec![pb::Phase {
            kind: pb::PhaseKind::Initial as i32,
            dose_per_fraction_gy: 1.8,
            fractions: 25,
            dose_gy: 0.0,
        }],
        planned_start_date: String::new(),
        dose_metrics: (0..1800)
            .map(|index| pb::DoseMetric {
                structure: format!("PTV_{index}"),
                metric: "Max[Gy]".into(),
                value: 1.0,
            })
            .collect(),
    };
    let mut ids = Vec::new();
    for _ in 0..15 {
        let response = client
            .check_prescription(request.clone())
            .await
            .expect("checked")
            .into_inner();
        ids.push(response.recommendation_id);
    }
    let pages = every_page(&mut client, "large-history", 100).await;
    for (index, page) in pages.iter().enumerate() {
        assert!(
            page.encoded_len() <= vlms_rt::server::MAX_PAGE_BYTES + 1024,
            "page {} holds {} bytes",
            index + 1,
            page.encoded_len()
        );
        assert!(!page.records.is_empty());
    }
    assert!(pages.len() > 1, "the records did not need paging");
    ids.reverse();
    assert_eq!(listed_ids(&pages), ids, "every record once, newest first");
    // The client pages through by itself.
    let output = run_client(["--server", &server.url, "history", "large-history"], None).await;
    output.expect_exit(0);
    let text = &output.stdout;
    for id in &ids {
        assert!(text.contains(id.as_str()), "{id} missing: {text}");
    }
    server.stop().await;
}

/// A `ListRecommendations` request: the page of `case_id`'s records `page_token` names (the
/// newest, when empty), of at most `page_size` records.
fn list_request(case_id: &str, page_size: i32, page_token: &str) -> pb::ListRecommendationsRequest {
    pb::ListRecommendationsRequest {
        case_id: case_id.to_owned(),
        page_size,
        page_token: page_token.to_owned(),
    }
}

/// Every page of `case_id`'s records, `page_size` at a time, from the first page on until one
/// has no next page token; fails the test when a page is refused or the pages never end.
async fn every_page(
    client: &mut Client,
    case_id: &str,
    page_size: i32,
) -> Vec<pb::ListRecommendationsResponse> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_recommendations(list_request(case_id, page_size, &token))
            .await
            .unwrap_or_else(|status| panic!("page {}: {status:?}", pages.len() + 1))
            .into_inner();
        token = page.next_page_token.clone();
        pages.push(page);
        if token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 10_000, "the listing never ends");
    }
}

/// The ids of the records on `pages`, in order.
fn listed_ids(pages: &[pb::ListRecommendationsResponse]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| &page.records)
        .map(|record| record.recommendation_id.clone())
        .collect()
}

/// The record of `id`, which the test expects to be there and readable.
async fn stored_record(client: &mut Client, id: &str) -> pb::RecommendationRecord {
    client
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: id.to_owned(),
        })
        .await
        .unwrap_or_else(|status| panic!("{id} not readable: {status:?}"))
        .into_inner()
}

/// The plan a recommendation's record holds; fails the test for a record of anything else.
fn recorded_plan(record: &pb::RecommendationRecord) -> &pb::Plan {
    match &record.content {
        Some(pb::recommendation_record::Content::Recommend(stored)) => {
            stored.plan.as_ref().expect("plan")
        }
        other => panic!("not a recommendation: {other:?}"),
    }
}

/// Fails the test unless every plan of `plans` is stored under its id, byte for byte.
async fn assert_every_plan_stored(client: &mut Client, plans: &[pb::Plan]) {
    for plan in plans {
        let record = stored_record(client, &plan.recommendation_id).await;
        assert_eq!(
            recorded_plan(&record).encode_to_vec(),
            plan.encode_to_vec(),
            "{}: the plan, byte for byte",
            plan.recommendation_id
        );
    }
}

/// A trail written by the build of 2026-12-07, whose plans are parts frames (the format before
/// standard zstd frames): a plan, a check and a feedback entry, with the answers as the client
/// received them. Every record must still read back byte for byte, and verify.
#[tokio::test]
async fn records_written_as_parts_frames_by_an_earlier_build_still_read_exactly() {
    use prost::Message;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let compressed =
        std::fs::read(fixtures.join("audit-parts-frames-2026-12-07.sqlite3.zst")).expect("fixture");
    let database = zstd::stream::decode_all(compressed.as_slice()).expect("zstd");
    let path = std::env::temp_dir().join(format!("vlms-rt-audit-{}.sqlite3", uuid::Uuid::new_v4()));
    std::fs::write(&path, database).expect("write");
    let target = Target::Sqlite(path.clone());
    {
        let connection = rusqlite::Connection::open(&path).expect("open");
        let first: Vec<u8> = connection
            .query_row("SELECT response FROM records WHERE seq = 1", [], |row| {
                row.get(0)
            })
            .expect("row");
        assert!(first.starts_with(vlms_rt::audit::parts::FRAME_MAGIC));
    }
    assert_intact_records(&target, 3);
    let read = |name: &str| {
        std::fs::read_to_string(fixtures.join(format!("audit-parts-frames-2026-12-07.{name}.json")))
            .expect("fixture")
    };
    let plan: pb::Plan = serde_json::from_str(&read("plan")).expect("plan JSON");
    let check: pb::CheckPrescriptionResponse =
        serde_json::from_str(&read("check")).expect("check JSON");
    // Served by today's server (which adds its own dictionary beside the old one).
    let (server, _) = audited_server(&target).await;
    let mut client = server.client().await;
    let record = stored_record(&mut client, &plan.recommendation_id).await;
    assert_eq!(recorded_plan(&record).encode_to_vec(), plan.encode_to_vec());
    assert_eq!(record.feedback.len(), 1);
    assert_eq!(record.feedback[0].reason, "45 Gy given");
    let record = stored_record(&mut client, &check.recommendation_id).await;
    match record.content {
        Some(pb::recommendation_record::Content::Check(stored)) => {
            assert_eq!(
                stored.response.expect("response").encode_to_vec(),
                check.encode_to_vec()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // A new record beside them is a zstd frame, and the chain goes on intact.
    client
        .recommend(with_case_id("iliac-marginal", "after-upgrade"))
        .await
        .expect("ok");
    server.stop().await;
    assert_intact(&target);
    let connection = rusqlite::Connection::open(&path).expect("open");
    let newest: Vec<u8> = connection
        .query_row(
            "SELECT response FROM records ORDER BY seq DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .expect("row");
    assert!(newest.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "{newest:?}");
    let _ = std::fs::remove_file(&path);
}
