//! Production hardening through the real server: TLS and mutual TLS with throw-away certificates,
//! bearer tokens (and their reload on SIGHUP in a real process), limits and load shedding, hostile
//! input, graceful shutdown on SIGTERM, and the metrics endpoint.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use vlms_rt::auth::{TokenStore, token_sha256_hex};
use vlms_rt::pb;
use vlms_rt::pb::recommendation_service_client::RecommendationServiceClient;
use vlms_rt::startup::{Limits, Settings, TlsMaterial};

use crate::support::{
    TestServer, connect, http_get, plan_mismatches, profile, raw_grpc_headers, run_client, vignette,
};

fn settings() -> Settings {
    Settings::new("127.0.0.1:0".parse().expect("address"), profile())
}

fn a_case() -> pb::Case {
    vignette("femoral-postop-r0").case()
}

fn request() -> pb::RecommendRequest {
    pb::RecommendRequest {
        case: Some(a_case()),
    }
}

struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    stranger_cert_pem: String,
    stranger_key_pem: String,
}

fn issuer(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(
        names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>(),
    )
    .expect("params");
    let mut params = params;
    // The subject names the holder (rcgen's default is the same for every certificate).
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
    let cert = params.signed_by(&key, issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let ca = issuer("vlms-rt test CA");
    let other = issuer("some other CA");
    let (server_cert_pem, server_key_pem) = leaf(&ca, &["localhost", "127.0.0.1"]);
    let (client_cert_pem, client_key_pem) = leaf(&ca, &["ris-gateway"]);
    let (stranger_cert_pem, stranger_key_pem) = leaf(&other, &["stranger"]);
    Pki {
        ca_pem: ca.pem(),
        server_cert_pem,
        server_key_pem,
        client_cert_pem,
        client_key_pem,
        stranger_cert_pem,
        stranger_key_pem,
    }
}

async fn tls_call(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<pb::Plan, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let mut client = RecommendationServiceClient::new(channel);
    client
        .recommend(request())
        .await
        .map(|response| response.into_inner().plan.unwrap_or_default())
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

/// A client certificate's subject names the caller in logs and records: characters that could
/// forge a log line or reorder what a reader sees come out as `?`.
#[test]
fn a_certificate_subject_cannot_forge_the_caller_name() {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "ris\ncaller=admin\u{202e}x");
    let key = KeyPair::generate().expect("key");
    let certificate = params.self_signed(&key).expect("certificate");
    let caller = vlms_rt::auth::certificate_caller(certificate.der()).expect("a subject");
    assert!(caller.0.starts_with("CN=ris"), "{:?}", caller.0);
    // The line break is escaped by the RFC 4514 form itself; the bidi override is replaced.
    assert!(
        !caller.0.chars().any(|c| c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)),
        "{:?}",
        caller.0
    );
    assert!(caller.0.ends_with("admin?x"), "{:?}", caller.0);
}

#[tokio::test]
async fn tls_serves_and_mutual_tls_admits_only_our_clients() {
    let pki = pki();
    let mut tls_only = settings();
    tls_only.tls = Some(TlsMaterial {
        cert_pem: pki.server_cert_pem.clone().into_bytes(),
        key_pem: pki.server_key_pem.clone().into_bytes(),
        client_ca_pem: None,
    });
    let server = TestServer::start_with(tls_only).await;
    let plan = tls_call(&server.url, &pki.ca_pem, None)
        .await
        .expect("TLS call");
    assert!(plan_mismatches(&plan, vignette("femoral-postop-r0").expected()).is_empty());
    // A plaintext client cannot talk to the TLS port.
    let plaintext = Endpoint::from_shared(server.url.replace("https://", "http://"))
        .expect("url")
        .timeout(Duration::from_secs(2));
    let refused = match plaintext.connect().await {
        Ok(channel) => RecommendationServiceClient::new(channel)
            .recommend(request())
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "plaintext over the TLS port must fail");
    server.stop().await;

    let mut mutual = settings();
    mutual.tls = Some(TlsMaterial {
        cert_pem: pki.server_cert_pem.clone().into_bytes(),
        key_pem: pki.server_key_pem.clone().into_bytes(),
        client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
    });
    // Audited, to see who the call is recorded for.
    let audit_db =
        std::env::temp_dir().join(format!("vlms-rt-audit-{}.sqlite3", uuid::Uuid::new_v4()));
    let (store, reader) =
        vlms_rt::audit::open(audit_db.to_str().expect("utf-8"), None, None).expect("audit store");
    let auditor = vlms_rt::audit::Auditor::start(store, reader);
    mutual.audit = Some(auditor.clone());
    let server = TestServer::start_with(mutual).await;
    let plan = tls_call(
        &server.url,
        &pki.ca_pem,
        Some((&pki.client_cert_pem, &pki.client_key_pem)),
    )
    .await
    .expect("our client gets in");
    // Without a token, the client certificate's subject is the caller.
    let record = auditor
        .get(plan.recommendation_id.clone())
        .await
        .expect("readable")
        .expect("recorded");
    assert_eq!(record.record.record.caller, "CN=ris-gateway");
    assert!(
        tls_call(&server.url, &pki.ca_pem, None).await.is_err(),
        "no client certificate"
    );
    assert!(
        tls_call(
            &server.url,
            &pki.ca_pem,
            Some((&pki.stranger_cert_pem, &pki.stranger_key_pem))
        )
        .await
        .is_err(),
        "a certificate from another CA"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_client_binary_speaks_tls_and_sends_its_token_from_a_file() {
    let pki = pki();
    let dir = std::env::temp_dir().join(format!("vlms-rt-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let ca = write("ca.pem", &pki.ca_pem);
    let cert = write("client.pem", &pki.client_cert_pem);
    let key = write("client.key", &pki.client_key_pem);
    let token = write("token", "s3cret-token\n");
    let tokens = write(
        "tokens",
        &format!("cli:{}\n", token_sha256_hex("s3cret-token")),
    );
    let case = write(
        "case.json",
        &serde_json::to_string(&a_case()).expect("json"),
    );
    let mut mutual = settings();
    mutual.tls = Some(TlsMaterial {
        cert_pem: pki.server_cert_pem.into_bytes(),
        key_pem: pki.server_key_pem.into_bytes(),
        client_ca_pem: Some(pki.ca_pem.into_bytes()),
    });
    mutual.tokens = Some(Arc::new(
        TokenStore::load(std::path::Path::new(&tokens)).expect("tokens"),
    ));
    let server = TestServer::start_with(mutual).await;
    let url = server.url.clone();
    let run = |extra: Vec<String>| {
        let mut args = vec![
            "--server".to_string(),
            url.clone(),
            "--ca".into(),
            ca.clone(),
            "--cert".into(),
            cert.clone(),
            "--key".into(),
            key.clone(),
        ];
        args.extend(extra);
        run_client(args, None)
    };
    let output = run(vec![
        "--token-file".into(),
        token.clone(),
        "--output".into(),
        "json".into(),
        "recommend".into(),
        case.clone(),
    ])
    .await;
    output.expect_exit(0);
    let plan: pb::Plan = serde_json::from_str(&output.stdout).expect("plan");
    assert_eq!(plan.case_id, "femoral-postop-r0");
    let output = run(vec!["recommend".into(), case.clone()]).await;
    output.expect_exit_for(1, "no token");
    assert!(output.stderr.contains("UNAUTHENTICATED"));
    // Without a client certificate the server refuses the connection: a connection failure
    // (exit 4) that says where to look, not "Unknown: transport error".
    let output = run_client(
        [
            "--server",
            &url,
            "--ca",
            &ca,
            "--token-file",
            &token,
            "recommend",
            &case,
        ],
        None,
    )
    .await;
    output.expect_exit_for(4, "no client certificate");
    let stderr = &output.stderr;
    assert!(stderr.contains("client certificate"), "{stderr}");
    let output = run(vec!["health".into()]).await;
    output.expect_exit_for(0, "health is open without a token");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn with_authorization(value: Option<&str>) -> tonic::Request<pb::RecommendRequest> {
    let mut request = tonic::Request::new(request());
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii"));
    }
    request
}

#[tokio::test]
async fn bearer_tokens_admit_known_callers_only() {
    let path = std::env::temp_dir().join(format!("vlms-rt-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        format!("ris-gateway:{}\n", token_sha256_hex("correct horse")),
    )
    .expect("write");
    let mut with_tokens = settings();
    with_tokens.tokens = Some(Arc::new(TokenStore::load(&path).expect("tokens")));
    with_tokens.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    let server = TestServer::start_with(with_tokens).await;
    let metrics = server.metrics_addr();
    let mut client = server.client().await;
    client
        .recommend(with_authorization(Some("Bearer correct horse")))
        .await
        .expect("valid token passes");
    for bad in [
        None,
        Some("Bearer wrong horse"),
        Some("Basic Y29ycmVjdCBob3JzZQ=="),
        Some("Bearer"),
        Some("Bearer "),
        Some("correct horse"),
    ] {
        let status = client
            .recommend(with_authorization(bad))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{bad:?}");
        assert_eq!(
            status.message(),
            "a valid bearer token is required",
            "no detail that helps guessing"
        );
    }
    // Refused before the handlers run, and still counted.
    let text = http_get(&metrics, "/metrics").await;
    assert!(
        text.contains(r#"vlms_rt_calls_total{code="UNAUTHENTICATED",rpc="Recommend"} 6"#),
        "{text}"
    );
    // Health and reflection stay open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is open");
    server.stop().await;
    let _ = std::fs::remove_file(&path);
}

/// A vlms-rt-server process, stopped when dropped.
struct ServerProcess {
    child: Child,
    address: String,
    metrics: Option<String>,
    log: crate::support::ServerLog,
}

impl ServerProcess {
    fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_logging(args, "json", None)
    }

    /// A server logging in `format` (`json` or `text`), with `RUST_LOG` set to `filter` if given.
    fn start_logging(args: &[&str], format: &str, filter: Option<&str>) -> ServerProcess {
        let audit_db =
            std::env::temp_dir().join(format!("vlms-rt-audit-{}.sqlite3", uuid::Uuid::new_v4()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"));
        command.env_remove("RUST_LOG");
        if let Some(filter) = filter {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--log-format", format])
            .arg("--audit-db")
            .arg(&audit_db)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let crate::support::Serving {
            address,
            metrics,
            log,
        } = crate::support::wait_until_serving(&mut child);
        ServerProcess {
            child,
            address,
            metrics,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|line| line.starts_with("VmHWM:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_the_token_file_without_dropping_connections() {
    let path = std::env::temp_dir().join(format!("vlms-rt-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        format!("old-caller:{}\n", token_sha256_hex("old-token")),
    )
    .expect("write");
    let server = ServerProcess::start(&[
        "--auth-tokens",
        path.to_str().expect("utf-8"),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = server.metrics.clone().expect("metrics address");
    let channel = connect(&server.url()).await;
    let mut client = RecommendationServiceClient::new(channel.clone());
    client
        .recommend(with_authorization(Some("Bearer old-token")))
        .await
        .expect("old token works");

    // A stream opened before the reload keeps going across it.
    let (sender, receiver) = mpsc::channel(4);
    let mut stream_request = tonic::Request::new(ReceiverStream::new(receiver));
    stream_request
        .metadata_mut()
        .insert("authorization", "Bearer old-token".parse().expect("ascii"));
    sender.send(request()).await.expect("send");
    let mut responses = client
        .recommend_stream(stream_request)
        .await
        .expect("stream")
        .into_inner();
    assert!(responses.message().await.expect("item").is_some());

    std::fs::write(
        &path,
        format!("new-caller:{}\n", token_sha256_hex("new-token")),
    )
    .expect("rewrite");
    server.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .recommend(with_authorization(Some("Bearer new-token")))
            .await
        {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated);
                assert!(
                    std::time::Instant::now() < deadline,
                    "the new token never started working"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let status = client
        .recommend(with_authorization(Some("Bearer old-token")))
        .await
        .expect_err("old token revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    sender.send(request()).await.expect("send after reload");
    assert!(
        responses
            .message()
            .await
            .expect("item after reload")
            .is_some(),
        "the open stream survived the reload"
    );
    drop(sender);
    assert!(responses.message().await.expect("clean end").is_none());

    // A broken token file on reload keeps the tokens in force, and says so in the metrics; the
    // check that the systemd unit runs before the signal refuses it (so `systemctl reload` fails).
    std::fs::write(&path, "garbage\n").expect("rewrite");
    let check = tokens_check(&path);
    assert_eq!(check.0, 2, "{}", check.1);
    assert!(check.1.contains("line 1"), "{}", check.1);
    server.signal("HUP");
    wait_for_series(&metrics, "vlms_rt_token_reloads_total{result=\"failed\"} 1").await;
    for _ in 0..20 {
        client
            .recommend(with_authorization(Some("Bearer new-token")))
            .await
            .expect("tokens in force stay");
    }
    // One hash under two callers is refused the same way.
    let duplicated = format!("a:{hash}\nb:{hash}\n", hash = token_sha256_hex("new-token"));
    std::fs::write(&path, duplicated).expect("rewrite");
    let check = tokens_check(&path);
    assert_eq!(check.0, 2, "{}", check.1);
    assert!(check.1.contains("already listed on line 1"), "{}", check.1);
    server.signal("HUP");
    wait_for_series(&metrics, "vlms_rt_token_reloads_total{result=\"failed\"} 2").await;

    // An empty file (or comments only) revokes every token.
    std::fs::write(&path, "# every token revoked\n").expect("rewrite");
    let check = tokens_check(&path);
    assert_eq!(check.0, 0, "{}", check.1);
    assert!(
        check.1.contains("every call will be refused"),
        "{}",
        check.1
    );
    server.signal("HUP");
    wait_for_series(&metrics, "vlms_rt_auth_tokens 0").await;
    let status = client
        .recommend(with_authorization(Some("Bearer new-token")))
        .await
        .expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
    let text = http_get(&metrics, "/metrics").await;
    assert!(
        text.contains("vlms_rt_token_reloads_total{result=\"ok\"} 2"),
        "{text}"
    );
    let log = server.log.lock().expect("log").join("\n");
    assert!(
        log.contains("it holds no token, so every call is refused"),
        "{log}"
    );
    let _ = std::fs::remove_file(&path);
}

/// `vlms-rt-server tokens check PATH`: its exit code and its output.
fn tokens_check(path: &std::path::Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
        .args(["tokens", "check"])
        .arg(path)
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Scrapes `metrics` until it holds the line `series`; fails after 10 s.
async fn wait_for_series(metrics: &str, series: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = http_get(metrics, "/metrics").await;
        if text.lines().any(|line| line == series) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {series}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stream_limits_idle_streams_and_load_shedding() {
    let mut limited = settings();
    limited.limits = Limits {
        max_stream_items: 3,
        // Long enough that the shed call below surely runs while the idle stream holds the admission.
        call_timeout: Duration::from_secs(2),
        max_concurrent_calls: 1,
        ..Limits::default()
    };
    let server = TestServer::start_with(limited).await;
    let mut client = server.client().await;

    // The fourth item of a stream ends it with RESOURCE_EXHAUSTED after three answers.
    let items = vec![request(); 5];
    let mut responses = client
        .recommend_stream(tokio_stream::iter(items))
        .await
        .expect("stream")
        .into_inner();
    for _ in 0..3 {
        assert!(responses.message().await.expect("answer").is_some());
    }
    let status = responses.message().await.expect_err("too many items");
    assert_eq!(status.code(), Code::ResourceExhausted);

    // A stream that never sends ends with DEADLINE_EXCEEDED; while it holds the only admission,
    // other calls are shed at once and health still answers.
    let (sender, receiver) = mpsc::channel::<pb::RecommendRequest>(1);
    let mut idle = client
        .recommend_stream(ReceiverStream::new(receiver))
        .await
        .expect("stream")
        .into_inner();
    let shed = client.recommend(request()).await.expect_err("shed");
    assert_eq!(shed.code(), Code::ResourceExhausted);
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers under overload");
    let status = idle.message().await.expect_err("idle stream times out");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    drop(sender);
    // The admission is back: calls succeed again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while let Err(status) = client.recommend(request()).await {
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            std::time::Instant::now() < deadline,
            "admission never returned"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_stream_whose_client_stopped_reading_is_cut_off_after_its_connection_age() {
    let mut limited = settings();
    limited.limits = Limits {
        max_concurrent_calls: 1,
        max_connection_age: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(1),
        ..Limits::default()
    };
    let server = TestServer::start_with(limited).await;
    // A long stream whose answers are never read: once HTTP/2 flow control stops the server
    // sending, it stops reading the items too, and the call just waits, holding the only
    // admission.
    let mut stalled = server.client().await;
    let unread = stalled
        .recommend_stream(tokio_stream::iter(vec![request(); 5_000]))
        .await
        .expect("stream")
        .into_inner();
    // Each probe on a fresh connection, so that its own connection never reaches the age.
    let shed = server
        .client()
        .await
        .recommend(request())
        .await
        .expect_err("shed while the stream holds the admission");
    assert_eq!(shed.code(), Code::ResourceExhausted);
    // Its connection reaches its age after 1 s and is closed 1 s later: the admission returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Err(status) = server.client().await.recommend(request()).await {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled stream kept its admission"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(unread);
    server.stop_allowing_cut().await;
}

#[tokio::test]
async fn overload_sheds_fast_keeps_memory_bounded_and_recovers() {
    let server = ServerProcess::start(&["--max-concurrent-calls", "2"]);
    let expected = vignette("femoral-postop-r0");
    let channel = connect(&server.url()).await;
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut client = RecommendationServiceClient::new(channel.clone());
        let expected = expected.expected().clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut shed) = (0_u64, 0_u64);
            while tokio::time::Instant::now() < stop_at {
                match client.recommend(request()).await {
                    Ok(response) => {
                        let plan = response.into_inner().plan.expect("plan");
                        assert!(
                            plan_mismatches(&plan, &expected).is_empty(),
                            "a correct plan under load"
                        );
                        ok += 1;
                    }
                    Err(status) => {
                        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                        shed += 1;
                    }
                }
            }
            (ok, shed)
        }));
    }
    let (mut ok, mut shed) = (0, 0);
    for task in tasks {
        let (task_ok, task_shed) = task.await.expect("client task");
        ok += task_ok;
        shed += task_shed;
    }
    assert!(ok > 0, "some calls succeed under overload");
    let peak_kib = server.peak_rss_kib();
    assert!(
        peak_kib > 0 && peak_kib < 200 * 1024,
        "peak RSS {peak_kib} KiB"
    );
    eprintln!("overload: {ok} answered, {shed} shed, peak RSS {peak_kib} KiB");
    let mut client = RecommendationServiceClient::new(connect(&server.url()).await);
    client
        .recommend(request())
        .await
        .expect("answers normally right after");
}

#[tokio::test]
async fn sigterm_drains_in_flight_streams_and_exits_zero() {
    let mut server = ServerProcess::start(&["--shutdown-grace", "10s"]);
    let channel = connect(&server.url()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "vlms.rt.v1.RecommendationService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(
        watch
            .message()
            .await
            .expect("status")
            .expect("status")
            .status,
        serving
    );

    let mut streams = Vec::new();
    for _ in 0..3 {
        let (sender, receiver) = mpsc::channel(8);
        let mut client = RecommendationServiceClient::new(channel.clone());
        sender.send(request()).await.expect("send");
        let mut responses = client
            .recommend_stream(ReceiverStream::new(receiver))
            .await
            .expect("stream")
            .into_inner();
        assert!(responses.message().await.expect("first answer").is_some());
        streams.push((sender, responses));
    }
    server.signal("TERM");
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let next = watch
        .message()
        .await
        .expect("status update")
        .expect("status");
    assert_eq!(next.status, not_serving, "health flips to NOT_SERVING");
    // In-flight streams keep being answered after the signal, then end cleanly.
    for (sender, mut responses) in streams {
        for _ in 0..3 {
            sender.send(request()).await.expect("send during drain");
            let item = responses
                .message()
                .await
                .expect("answered during drain")
                .expect("item");
            assert!(matches!(
                item.result,
                Some(pb::recommend_stream_response::Result::Plan(_))
            ));
        }
        drop(sender);
        assert!(responses.message().await.expect("clean end").is_none());
    }
    drop(watch);
    drop(health);
    drop(channel);
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)),
        Some(0),
        "exit 0 after draining"
    );
}

/// A stream still open when the grace period runs out is cut off, and its call line still reaches
/// the log: the log writer outlives the runtime whose dropping ends the stream.
#[tokio::test]
async fn a_stream_cut_off_at_the_end_of_the_grace_period_is_still_logged() {
    let mut server = ServerProcess::start(&["--shutdown-grace", "1s"]);
    let channel = connect(&server.url()).await;
    let mut client = RecommendationServiceClient::new(channel.clone());
    let (sender, receiver) = mpsc::channel(8);
    sender.send(request()).await.expect("send");
    let mut responses = client
        .recommend_stream(ReceiverStream::new(receiver))
        .await
        .expect("stream")
        .into_inner();
    assert!(responses.message().await.expect("first answer").is_some());
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    drop(sender);
    // The log reader sees the pipe close just after the exit.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines = server.log.lock().expect("log").clone();
        let expired = lines
            .iter()
            .any(|line| line.contains("shutdown grace period expired"));
        let logged = lines.iter().any(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|record| {
                record["message"] == "call" && record["rpc"] == "RecommendStream"
            })
        });
        if expired && logged {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no call line for the cut-off stream:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !server
            .log
            .lock()
            .expect("log")
            .iter()
            .any(|line| line.contains("Unable to write")),
        "every log line was written"
    );
}

#[tokio::test]
async fn metrics_count_calls_codes_plans_and_shed_calls() {
    let server = ServerProcess::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--max-concurrent-calls",
        "1",
    ]);
    let metrics = server.metrics.clone().expect("metrics address");
    let mut client = RecommendationServiceClient::new(connect(&server.url()).await);
    client.recommend(request()).await.expect("ok");
    client
        .recommend(pb::RecommendRequest { case: None })
        .await
        .expect_err("bad");
    let (sender, receiver) = mpsc::channel::<pb::RecommendRequest>(1);
    let _holding = client
        .recommend_stream(ReceiverStream::new(receiver))
        .await
        .expect("stream");
    client.recommend(request()).await.expect_err("shed");
    // Calls answered before any handler runs (no permit needed) are counted too: a body that is not
    // protobuf, one over the size limit, a method the service does not have.
    let address = server.url().trim_start_matches("http://").to_string();
    let path = "/vlms.rt.v1.RecommendationService/Recommend";
    let frame = |message: &[u8]| {
        let mut body = vec![0];
        body.extend(u32::try_from(message.len()).expect("len").to_be_bytes());
        body.extend(message);
        body
    };
    let status = |answer: (Option<String>, Option<String>)| answer.0;
    assert_eq!(
        status(raw_grpc(&address, path, frame(&[0xff, 0xff, 0xff, 0xff, 0x0f])).await).as_deref(),
        Some("3")
    );
    assert_eq!(
        status(raw_grpc(&address, path, frame(&vec![0x0a; 70 * 1024])).await).as_deref(),
        Some("8")
    );
    assert_eq!(
        status(
            raw_grpc(
                &address,
                "/vlms.rt.v1.RecommendationService/Nope",
                frame(&[])
            )
            .await
        )
        .as_deref(),
        Some("12")
    );
    // ... and logged, like every call.
    let logged = |rpc: &str, code: &str| {
        server.log.lock().expect("log").iter().any(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|record| {
                record["message"] == "call" && record["rpc"] == rpc && record["code"] == code
            })
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(logged("unknown", "Unimplemented") && logged("Recommend", "ResourceExhausted")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no call lines for the calls refused before the handlers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = http_get(&metrics, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for expected in [
        r#"vlms_rt_calls_total{code="OK",rpc="Recommend"} 1"#,
        r#"vlms_rt_calls_total{code="INVALID_ARGUMENT",rpc="Recommend"} 2"#,
        r#"vlms_rt_calls_total{code="RESOURCE_EXHAUSTED",rpc="Recommend"} 2"#,
        r#"vlms_rt_calls_total{code="UNIMPLEMENTED",rpc="unknown"} 1"#,
        r#"vlms_rt_shed_calls_total{rpc="Recommend"} 1"#,
        r#"vlms_rt_plans_total{indication="INDICATION_INDICATED"} 1"#,
        "vlms_rt_in_flight_calls 1",
        r#"vlms_rt_call_duration_seconds_count{rpc="Recommend"} 4"#,
        // The one answered plan was recorded in the audit trail, in one transaction.
        "vlms_rt_audit_records 1",
        "vlms_rt_audit_batches 1",
        "vlms_rt_audit_failed_batches 0",
        "vlms_rt_audit_queued_bytes 0",
        "vlms_rt_audit_commit_seconds_count 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    drop(sender);
}

/// Sends one raw gRPC request over HTTP/2 and returns (grpc-status, grpc-message) from the
/// trailers (or trailers-only headers).
/// A `RecommendStream` whose client sends up to 2,000 cases and never reads an answer: the open
/// stream, and the task sending (it reports whether back-pressure stopped it, waiting at most
/// `patience` for room to send each case).
async fn flood_without_reading(
    server: &TestServer,
    patience: Duration,
) -> (
    tonic::Response<tonic::Streaming<pb::RecommendStreamResponse>>,
    tokio::task::JoinHandle<&'static str>,
) {
    let (sender, receiver) = mpsc::channel(64);
    let mut greedy = RecommendationServiceClient::new(server.channel().await);
    let unread = greedy
        .recommend_stream(ReceiverStream::new(receiver))
        .await
        .expect("stream");
    let pump = tokio::spawn(async move {
        for _ in 0..2_000 {
            if tokio::time::timeout(patience, sender.send(request()))
                .await
                .is_err()
            {
                return "back-pressured";
            }
        }
        "sent everything"
    });
    (unread, pump)
}

async fn raw_grpc(address: &str, path: &str, body: Vec<u8>) -> (Option<String>, Option<String>) {
    let (response, mut stream) = raw_grpc_headers(address, path).await;
    // The server may answer from the headers alone (an unknown method) and close the stream before
    // the body goes out; sending then fails. The answer read below is what the tests check, and a
    // server that closed the stream without one fails there.
    let _ = stream.send_data(bytes::Bytes::from(body), true);
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered, not hung")
        .expect("response");
    let header = |map: &http::HeaderMap, name: &str| {
        map.get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    if let Some(status) = header(response.headers(), "grpc-status") {
        return (Some(status), header(response.headers(), "grpc-message"));
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk.expect("data");
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    (
        header(&trailers, "grpc-status"),
        header(&trailers, "grpc-message"),
    )
}

#[tokio::test]
async fn truncated_frames_repeated_fields_silent_and_unread_streams_leave_the_server_healthy() {
    use prost::Message;
    let server = TestServer::start().await;
    let address = server.url.trim_start_matches("http://").to_string();
    let path = "/vlms.rt.v1.RecommendationService/Recommend";

    // A frame header announcing 100 bytes followed by only 10, then the end of the stream.
    let mut truncated = vec![0_u8, 0, 0, 0, 100];
    truncated.extend_from_slice(&[0x0a; 10]);
    let (status, message) = raw_grpc(&address, path, truncated).await;
    let code = status.expect("a grpc-status");
    assert_ne!(
        code, "13",
        "a truncated body is not an INTERNAL error: {message:?}"
    );
    assert_ne!(code, "0");
    let mut truncated_item = vec![0_u8, 0, 0, 0, 100];
    truncated_item.extend_from_slice(&[0x0a; 10]);
    let (status, message) = raw_grpc(
        &address,
        "/vlms.rt.v1.RecommendationService/RecommendStream",
        truncated_item,
    )
    .await;
    assert_eq!(
        status.as_deref(),
        Some("3"),
        "a truncated stream item is INVALID_ARGUMENT: {message:?}"
    );
    // Whole items first, then a truncated last one: the stream does not end OK as if nothing was
    // missing.
    let whole = {
        let encoded = request().encode_to_vec();
        let mut frame = vec![0_u8];
        frame.extend_from_slice(&u32::try_from(encoded.len()).expect("small").to_be_bytes());
        frame.extend_from_slice(&encoded);
        frame
    };
    for cut in [3_usize, 5, 12] {
        let mut body = whole.clone();
        body.extend_from_slice(&whole);
        body.extend_from_slice(&whole[..cut]);
        let (status, message) = raw_grpc(
            &address,
            "/vlms.rt.v1.RecommendationService/RecommendStream",
            body,
        )
        .await;
        assert_eq!(
            status.as_deref(),
            Some("3"),
            "a truncated last item ({cut} bytes) is INVALID_ARGUMENT: {message:?}"
        );
    }
    // A compressed-flag frame we never negotiated, and a frame header cut short.
    for body in [vec![1_u8, 0, 0, 0, 2, 0x08, 0x01], vec![0_u8, 0, 0]] {
        let (status, message) = raw_grpc(&address, path, body).await;
        let code = status.expect("a grpc-status");
        assert!(code != "0" && code != "13", "{code} {message:?}");
    }

    // Thousands of bad repeated entries: rejected with a bounded, readable list of violations.
    let mut case = a_case();
    case.organs_at_risk = vec![0; 20_000];
    let encoded = pb::RecommendRequest {
        case: Some(case.clone()),
    }
    .encoded_len();
    assert!(encoded < 64 * 1024, "{encoded}");
    let mut client = server.client().await;
    let status = client
        .recommend(pb::RecommendRequest { case: Some(case) })
        .await
        .expect_err("rejected");
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_details_bad_request(&status).expect("BadRequest");
    assert_eq!(
        details.field_violations.len(),
        vlms_rt::status::MAX_REPORTED_VIOLATIONS + 1
    );
    assert_eq!(details.field_violations[0].field, "case.organs_at_risk[0]");
    assert!(
        details
            .field_violations
            .last()
            .expect("last")
            .description
            .contains("19950 more")
    );

    // A client that sends a lot and never reads its responses, beside a stream that never sends.
    let (silent_sender, silent_receiver) = mpsc::channel::<pb::RecommendRequest>(1);
    let _silent = client
        .recommend_stream(ReceiverStream::new(silent_receiver))
        .await
        .expect("stream");
    let (unread, pump) = flood_without_reading(&server, Duration::from_secs(2)).await;
    // Other clients are served meanwhile.
    let mut other = RecommendationServiceClient::new(server.channel().await);
    for _ in 0..20 {
        other
            .recommend(request())
            .await
            .expect("served beside the hostile streams");
    }
    // Whether the greedy client was back-pressured or got everything in, it must not have wedged
    // the server: the calls above and below are the check.
    let _ = pump.await.expect("pump");
    drop(silent_sender);
    drop(unread);
    other.recommend(request()).await.expect("still healthy");
    // The hostile streams must not keep the server from shutting down within its grace period.
    let server_handle = server;
    server_handle.stop_allowing_cut().await;
}

#[test]
fn plaintext_on_a_non_loopback_address_is_logged_as_a_warning() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--log-format",
            "json",
            "--audit-db",
            "none",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut warned = false;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains("without TLS") && line.contains("WARN") {
            warned = true;
        }
        if line.contains("serving vlms.rt.v1.RecommendationService") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        warned,
        "a warning about plaintext on a non-loopback address"
    );
}

/// One `Recommend` answered with a plan, then one refused for a negative size whose case_id (a
/// name) must never be logged; the client, for more calls.
async fn a_plan_and_a_refusal(
    server: &ServerProcess,
) -> RecommendationServiceClient<tonic::transport::Channel> {
    let mut client = RecommendationServiceClient::new(connect(&server.url()).await);
    client.recommend(request()).await.expect("ok");
    let mut bad = a_case();
    bad.case_id = "Jane Doe, born 1961".into();
    bad.tumor.as_mut().expect("tumor").size_cm = -1.0;
    client
        .recommend(pb::RecommendRequest { case: Some(bad) })
        .await
        .expect_err("bad");
    client
}

#[test]
fn each_call_logs_one_line_with_rpc_code_latency_caller_and_case_id_only() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = ServerProcess::start(&[]);
    runtime.block_on(a_plan_and_a_refusal(&server));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let calls = loop {
        let calls: Vec<serde_json::Value> = server
            .log
            .lock()
            .expect("log")
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|record| record["message"] == "call")
            .collect();
        if calls.len() >= 2 || std::time::Instant::now() > deadline {
            break calls;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["rpc"], "Recommend");
    assert_eq!(calls[0]["code"], "Ok");
    assert_eq!(calls[0]["caller"], "anonymous");
    assert_eq!(calls[0]["case_id"], "femoral-postop-r0");
    assert!(calls[0]["latency_us"].as_u64().is_some());
    assert_eq!(calls[1]["code"], "InvalidArgument");
    // An invalid case_id never reaches the log: it might hold a name.
    assert_eq!(calls[1]["case_id"], "<invalid>");
    let everything = server.log.lock().expect("log").join("\n");
    assert!(
        !everything.contains("sizeCm")
            && !everything.contains("size_cm")
            && !everything.contains("GRADE_3")
    );
}

/// The text format's call lines (written straight to the log writer, not through tracing's
/// formatter): the same fields, quoted where not plain, and none when INFO is filtered out.
#[test]
fn text_call_lines_carry_the_fields_and_follow_the_log_filter() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let calls = |server: &ServerProcess| {
        runtime.block_on(async {
            let mut client = a_plan_and_a_refusal(server).await;
            client
                .get_guideline(pb::GetGuidelineRequest {})
                .await
                .expect("guideline");
        });
    };
    let server = ServerProcess::start_logging(&[], "text", None);
    calls(&server);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines: Vec<String> = server
            .log
            .lock()
            .expect("log")
            .iter()
            .filter(|line| line.contains(" INFO call "))
            .cloned()
            .collect();
        if lines.len() >= 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    let after_time = |line: &str| {
        let (time, rest) = line.split_once(' ').expect("timestamp");
        assert!(time.len() == 27 && time.ends_with('Z'), "{line}");
        rest.to_string()
    };
    let first = after_time(&lines[0]);
    let (head, latency) = first.split_once(" latency_us=").expect("latency field");
    assert_eq!(head, " INFO call rpc=Recommend code=Ok");
    let (digits, tail) = latency.split_once(' ').expect("fields after latency");
    assert!(digits.parse::<u64>().is_ok(), "{first}");
    assert_eq!(tail, "caller=anonymous case_id=femoral-postop-r0");
    let second = after_time(&lines[1]);
    assert!(
        second.starts_with(" INFO call rpc=Recommend code=InvalidArgument latency_us=")
            && second.ends_with(" caller=anonymous case_id=\"<invalid>\""),
        "{second}"
    );
    let third = after_time(&lines[2]);
    assert!(
        third.starts_with(" INFO call rpc=GetGuideline code=Ok latency_us=")
            && third.ends_with(" caller=anonymous case_id=\"\""),
        "{third}"
    );
    let everything = server.log.lock().expect("log").join("\n");
    assert!(!everything.contains("Jane"), "{everything}");
    drop(server);

    // With the handlers' unary call lines filtered out, none of them. The line of a call refused
    // before the handlers (another module, left at INFO) marks that the log has caught up: the
    // handlers' lines are queued before their answers leave, so before it.
    let quiet = ServerProcess::start_logging(
        &[],
        "text",
        // The handlers' events at INFO only when they carry an `items` field (stream calls do,
        // unary ones do not): a field directive, which the direct line must obey as well.
        Some("warn,vlms_rt_server=info,vlms_rt::codec=info,vlms_rt::server[{items}]=info"),
    );
    calls(&quiet);
    let address = quiet.url().trim_start_matches("http://").to_string();
    let (status, _) = runtime.block_on(raw_grpc(
        &address,
        "/vlms.rt.v1.RecommendationService/Nope",
        vec![0, 0, 0, 0, 0],
    ));
    assert_eq!(status.as_deref(), Some("12"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let logged = loop {
        let logged = quiet.log.lock().expect("log").join("\n");
        if logged.contains(" INFO call rpc=unknown code=Unimplemented ")
            || std::time::Instant::now() > deadline
        {
            break logged;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        logged.contains(" INFO call rpc=unknown code=Unimplemented "),
        "{logged}"
    );
    assert!(
        !logged.contains("rpc=Recommend") && !logged.contains("rpc=GetGuideline"),
        "{logged}"
    );
}

/// The server's call timeout ends a call still unanswered when it runs out — here one whose
/// request body never arrives — with tonic's CANCELLED, on the service and on health alike (the
/// layer sits around every service; its timer is armed when the call first waits).
#[tokio::test]
async fn a_call_left_waiting_ends_at_the_call_timeout() {
    let mut short = settings();
    short.limits.call_timeout = Duration::from_millis(500);
    let server = TestServer::start_with(short).await;
    let address = server.url.trim_start_matches("http://").to_string();
    for path in [
        "/vlms.rt.v1.RecommendationService/Recommend",
        "/grpc.health.v1.Health/Check",
    ] {
        // Headers only: the body (and its end) never comes.
        let (response, _stream) = raw_grpc_headers(&address, path).await;
        let started = std::time::Instant::now();
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("ended by the call timeout, not left hanging")
            .expect("response");
        let status = response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        assert_eq!(status.as_deref(), Some("1"), "{path}: {response:?}");
        assert!(started.elapsed() >= Duration::from_millis(450), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_plaintext_health_port_answers_probes_beside_a_mutual_tls_port() {
    let pki = pki();
    let mut mutual = settings();
    mutual.tls = Some(TlsMaterial {
        cert_pem: pki.server_cert_pem.into_bytes(),
        key_pem: pki.server_key_pem.into_bytes(),
        client_ca_pem: Some(pki.ca_pem.into_bytes()),
    });
    mutual.health_listen = Some("127.0.0.1:0".parse().expect("address"));
    let server = TestServer::start_with(mutual).await;
    let health_addr = server
        .server
        .as_ref()
        .and_then(|running| running.health_addr)
        .expect("health port");
    let channel = connect(&format!("http://{health_addr}")).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "vlms.rt.v1.RecommendationService",
        vlms_rt::startup::LIVENESS_SERVICE_NAME,
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("plaintext health")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    // Only health is served there: no recommendations over plaintext.
    let status = RecommendationServiceClient::new(channel)
        .recommend(request())
        .await
        .expect_err("not served");
    assert_eq!(status.code(), Code::Unimplemented);
    server.stop().await;
}

#[test]
fn an_unreachable_or_unverifiable_postgres_audit_database_refuses_to_start() {
    let run = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
            .args(["--listen", "127.0.0.1:0", "--audit-db", url])
            .env_remove("VLMS_RT_AUDIT_DB_CA")
            .output()
            .expect("runs")
    };
    // Nothing listens on port 1: a replica that cannot record must not answer.
    let output = run("postgres://vlms:s3cret@127.0.0.1:1/audit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot open the audit database postgresql database audit on 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");
    // TLS demanded but nothing to verify the server with.
    let output = run("postgres://vlms@127.0.0.1:1/audit?sslmode=require");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sslmode=require needs --audit-db-ca"),
        "{stderr}"
    );
}

/// The server binary run to its exit with `args`: exit code and stderr.
fn server_exit(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
        .args(args)
        .env_remove("VLMS_RT_AUDIT_DB")
        .output()
        .expect("runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the server binary on `listen` with the audit database `audit_db` and `args`, and fails
/// the test unless it exits with `code`, saying `expected`, before it created `audit_db`; gives
/// its stderr.
fn exit_before_the_audit_store(
    listen: &str,
    audit_db: &std::path::Path,
    args: &[&std::ffi::OsStr],
    code: i32,
    expected: &str,
) -> String {
    let mut all: Vec<&std::ffi::OsStr> = vec![
        "--listen".as_ref(),
        listen.as_ref(),
        "--audit-db".as_ref(),
        audit_db.as_os_str(),
    ];
    all.extend(args);
    let (exit, stderr) = server_exit(&all);
    assert_eq!(exit, Some(code), "{args:?}: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {expected}: {stderr}");
    assert!(
        !audit_db.exists(),
        "{args:?}: the audit database was created before start-up was refused"
    );
    stderr
}

#[test]
fn broken_tls_files_stop_start_up_naming_the_file_before_the_audit_store_is_touched() {
    let dir = std::env::temp_dir().join(format!("vlms-rt-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let one = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert = write("server.crt", &one.cert.pem());
    let key = write("server.key", &one.signing_key.serialize_pem());
    let other_key = write("other.key", &other.signing_key.serialize_pem());
    let garbage = write("garbage.crt", "not a certificate\n");
    let audit_db = dir.join("audit.sqlite3");
    for (cert_file, key_file, expected) in [
        (
            &cert,
            &other_key,
            format!(
                "TLS key {} does not belong to the certificate {}",
                other_key.display(),
                cert.display()
            ),
        ),
        (
            &key,
            &cert,
            format!("TLS certificate {} holds no PEM certificate", key.display()),
        ),
        (
            &garbage,
            &key,
            format!(
                "TLS certificate {} holds no PEM certificate",
                garbage.display()
            ),
        ),
    ] {
        let stderr = exit_before_the_audit_store(
            "127.0.0.1:0",
            &audit_db,
            &[
                "--tls-cert".as_ref(),
                cert_file.as_os_str(),
                "--tls-key".as_ref(),
                key_file.as_os_str(),
            ],
            2,
            &expected,
        );
        assert!(!stderr.contains("transport error"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_cds_hooks_setting_stops_start_up_before_the_audit_store_is_touched() {
    let dir = std::env::temp_dir().join(format!("vlms-rt-cds-start-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let short_key = dir.join("short.key");
    std::fs::write(&short_key, "too short").expect("write");
    let audit_db = dir.join("audit.sqlite3");
    let key = short_key.to_str().expect("utf-8");
    for (extra, expected) in [
        (
            vec!["--cds-hooks-listen", "0.0.0.0:0"],
            "is not a loopback address: give --cds-hooks-issuers",
        ),
        (
            vec![
                "--cds-hooks-listen",
                "127.0.0.1:0",
                "--facility-time-zone",
                "Mars/Olympus",
            ],
            "--facility-time-zone \"Mars/Olympus\"",
        ),
        (
            vec![
                "--cds-hooks-listen",
                "127.0.0.1:0",
                "--cds-hooks-case-id-key",
                key,
            ],
            "the case-id key must hold at least 32 bytes",
        ),
        (
            vec![
                "--cds-hooks-listen",
                "127.0.0.1:0",
                "--cds-hooks-cors-origins",
                "ehr.example.org",
            ],
            "is not an origin like https://ehr.example.org",
        ),
    ] {
        let extra: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
        exit_before_the_audit_store("127.0.0.1:0", &audit_db, &extra, 2, expected);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_busy_port_is_found_before_the_audit_store_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let audit_db =
        std::env::temp_dir().join(format!("vlms-rt-audit-{}.sqlite3", uuid::Uuid::new_v4()));
    exit_before_the_audit_store(
        &address,
        &audit_db,
        &[],
        1,
        &format!("cannot listen on {address}"),
    );
}

#[test]
fn nonsensical_limits_are_refused_at_start_up() {
    for (flag, value) in [
        ("--max-request-bytes", "0"),
        ("--max-request-bytes", "100"),
        ("--max-stream-items", "0"),
        ("--max-concurrent-calls", "0"),
        ("--call-timeout", "0s"),
        ("--keepalive-interval", "0"),
        ("--max-connection-age", "0ms"),
    ] {
        let (code, stderr) = server_exit(&[
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--audit-db".as_ref(),
            "none".as_ref(),
            flag.as_ref(),
            value.as_ref(),
        ]);
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[test]
fn an_expired_server_certificate_is_warned_about_at_start_up() {
    let dir = std::env::temp_dir().join(format!("vlms-rt-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert");
    let cert_path = dir.join("expired.crt");
    let key_path = dir.join("expired.key");
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let server = ServerProcess::start(&[
        "--tls-cert",
        cert_path.to_str().expect("utf-8"),
        "--tls-key",
        key_path.to_str().expect("utf-8"),
    ]);
    let log = server.log.lock().expect("log").join("\n");
    assert!(
        log.contains("the server's TLS certificate has expired"),
        "{log}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn health_watch_streams_are_limited_and_need_a_token() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let path = std::env::temp_dir().join(format!("vlms-rt-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, format!("watcher:{}\n", token_sha256_hex("w-token"))).expect("write");
    let mut limited = settings();
    limited.tokens = Some(Arc::new(TokenStore::load(&path).expect("tokens")));
    limited.limits.max_health_watches = 3;
    let server = TestServer::start_with(limited).await;
    let channel = server.channel().await;
    let watch = |token: Option<&'static str>| {
        let mut client = HealthClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            if let Some(token) = token {
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("ascii"),
                );
            }
            let mut stream = client.watch(request).await?.into_inner();
            // The first status arrives at once on an admitted stream.
            stream.message().await?;
            Ok::<_, tonic::Status>(stream)
        }
    };
    let status = watch(None).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(watch(Some("w-token")).await.expect("admitted"));
    }
    let status = watch(Some("w-token")).await.expect_err("full");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Check, which probes use, needs no token and no place.
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..5 {
        health
            .check(HealthCheckRequest {
                service: "vlms.rt.v1.RecommendationService".into(),
            })
            .await
            .expect("check is open");
    }
    // A stream that ends gives its place back.
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match watch(Some("w-token")).await {
            Ok(stream) => {
                open.push(stream);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert!(
                    std::time::Instant::now() < deadline,
                    "the place never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(open);
    server.stop_allowing_cut().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn one_caller_flooding_streams_leaves_room_for_the_others() {
    let path = std::env::temp_dir().join(format!("vlms-rt-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        format!(
            "greedy:{}\nris-gateway:{}\n",
            token_sha256_hex("greedy-token"),
            token_sha256_hex("ris-token")
        ),
    )
    .expect("write");
    let mut limited = settings();
    limited.tokens = Some(Arc::new(TokenStore::load(&path).expect("tokens")));
    limited.limits.max_concurrent_calls = 4;
    let server = TestServer::start_with(limited).await;
    let mut client = RecommendationServiceClient::new(server.channel().await);
    // The greedy caller opens streams and keeps them open: each holds a place.
    let mut held = Vec::new();
    let mut shed = None;
    for _ in 0..6 {
        let (sender, receiver) = mpsc::channel(4);
        let mut stream_request = tonic::Request::new(ReceiverStream::new(receiver));
        stream_request.metadata_mut().insert(
            "authorization",
            "Bearer greedy-token".parse().expect("ascii"),
        );
        sender.send(request()).await.expect("send");
        match client.recommend_stream(stream_request).await {
            Ok(response) => {
                let mut responses = response.into_inner();
                assert!(responses.message().await.expect("item").is_some());
                held.push((sender, responses));
            }
            Err(status) => {
                shed = Some(status);
                break;
            }
        }
    }
    let status = shed.expect("the greedy caller is held to its share");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("its share"),
        "{}",
        status.message()
    );
    assert_eq!(held.len(), 2, "half of the four places");
    // Another caller is still served.
    for _ in 0..3 {
        client
            .recommend(with_authorization(Some("Bearer ris-token")))
            .await
            .expect("the other caller gets in");
    }
    drop(held);
    server.stop_allowing_cut().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_stream_whose_answers_are_not_read_gives_its_place_back_in_seconds() {
    // The call timeout leaves the test's own client (on the same thread as the server) time to be
    // shed before the place comes back (after twice the timeout).
    let mut limited = settings();
    limited.limits.call_timeout = Duration::from_secs(3);
    limited.limits.max_concurrent_calls = 1;
    let server = TestServer::start_with(limited).await;
    // The other caller's connection is made first, so that its first call follows the flood's
    // admission at once (on a loaded machine a connection set up later could come after the
    // place was already given back).
    let mut other = RecommendationServiceClient::new(server.channel().await);
    // A client that sends a lot and never reads its answers.
    let (_unread, pump) = flood_without_reading(&server, Duration::from_secs(5)).await;
    // While it holds the only place, others are shed; within a few seconds it is given back.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut shed_meanwhile = 0;
    loop {
        match other.recommend(request()).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                shed_meanwhile += 1;
                assert!(
                    std::time::Instant::now() < deadline,
                    "the unread stream kept its place"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(shed_meanwhile > 0, "the unread stream never held the place");
    pump.abort();
    server.stop_allowing_cut().await;
}

/// Opens `count` TCP connections to `address` that send `first` (maybe nothing) and then wait;
/// returns how many the server closed within `within`.
async fn closed_by_server(address: &str, count: usize, first: &[u8], within: Duration) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sockets = Vec::new();
    for _ in 0..count {
        let mut socket = tokio::net::TcpStream::connect(address)
            .await
            .expect("connects");
        if !first.is_empty() {
            socket.write_all(first).await.expect("write");
        }
        sockets.push(socket);
    }
    let mut closed = 0;
    for mut socket in sockets {
        let mut buffer = vec![0_u8; 4096];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => {
                    closed += 1;
                    break;
                }
                // The server's own HTTP/2 settings, or a TLS alert: read on.
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    closed
}

#[tokio::test]
async fn silent_connections_and_refused_handshakes_are_closed_and_counted() {
    let mut quick = settings();
    quick.limits.handshake_timeout = Duration::from_millis(300);
    quick.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    let server = TestServer::start_with(quick).await;
    let address = server.url.trim_start_matches("http://").to_string();
    let metrics = server.metrics_addr();
    assert_eq!(
        closed_by_server(&address, 50, b"", Duration::from_secs(10)).await,
        50,
        "silent plaintext connections are closed"
    );
    wait_for_series(&metrics, "vlms_rt_silent_connections_closed_total 50").await;
    // A real client is served all the while.
    server
        .client()
        .await
        .recommend(request())
        .await
        .expect("served");
    server.stop().await;

    let pki = pki();
    let mut tls = settings();
    tls.tls = Some(TlsMaterial {
        cert_pem: pki.server_cert_pem.clone().into_bytes(),
        key_pem: pki.server_key_pem.clone().into_bytes(),
        client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
    });
    tls.limits.handshake_timeout = Duration::from_millis(300);
    tls.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    let server = TestServer::start_with(tls).await;
    let address = server.url.trim_start_matches("https://").to_string();
    let metrics = server.metrics_addr();
    // Sockets that never start a handshake, and ones that send something that is not TLS.
    assert_eq!(
        closed_by_server(&address, 20, b"", Duration::from_secs(10)).await,
        20
    );
    assert_eq!(
        closed_by_server(
            &address,
            5,
            b"GET / HTTP/1.1\r\n\r\n",
            Duration::from_secs(10)
        )
        .await,
        5
    );
    // A client without a certificate, and one from another CA, over mutual TLS.
    assert!(tls_call(&server.url, &pki.ca_pem, None).await.is_err());
    assert!(
        tls_call(
            &server.url,
            &pki.ca_pem,
            Some((&pki.stranger_cert_pem, &pki.stranger_key_pem))
        )
        .await
        .is_err()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = http_get(&metrics, "/metrics").await;
        let refused = text
            .lines()
            .find_map(|line| line.strip_prefix("vlms_rt_tls_handshakes_refused_total "))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0);
        if refused >= 27.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Our client still gets in.
    tls_call(
        &server.url,
        &pki.ca_pem,
        Some((&pki.client_cert_pem, &pki.client_key_pem)),
    )
    .await
    .expect("served");
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_keep_the_never_internal_promise() {
    let server = TestServer::start().await;
    let address = server.url.trim_start_matches("http://").to_string();
    for path in [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        // Not protobuf, a frame cut short, and a frame over the request limit.
        let mut too_large = vec![0_u8, 0, 2, 0, 0];
        too_large.extend(std::iter::repeat_n(0x0a, 128 * 1024));
        for body in [
            vec![0_u8, 0, 0, 0, 3, 0xff, 0xff, 0xff],
            vec![0_u8, 0, 0, 0, 100, 0x0a],
            too_large,
        ] {
            let first = body.get(5).copied();
            let (status, message) = raw_grpc(&address, path, body).await;
            let code = status.expect("a grpc-status");
            // INVALID_ARGUMENT or RESOURCE_EXHAUSTED (never INTERNAL); OK only as below.
            assert!(
                matches!(code.as_str(), "0" | "3" | "8"),
                "{path} ({first:?}): {code} {message:?}"
            );
            // tonic-reflection ends its stream quietly at any request it cannot read; health
            // answers every refusal with an error status.
            assert!(
                code != "0" || path.contains("Reflection"),
                "{path} ({first:?}): {code} {message:?}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_callers_deadline_ends_the_call_with_deadline_exceeded_logged_and_counted() {
    let mut with_metrics = settings();
    with_metrics.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    let server = TestServer::start_with(with_metrics).await;
    let metrics = server.metrics_addr();
    let mut client = server.client().await;
    // (The tonic client applies the deadline to the answer's headers only, which a stream sends
    // at once, so the server's end of the stream is what the client sees.)
    for deadline in [Duration::from_millis(500)] {
        // A stream that never sends an item waits for one until the caller's deadline.
        let (_sender, receiver) = mpsc::channel::<pb::RecommendRequest>(1);
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        request.set_timeout(deadline);
        let started = std::time::Instant::now();
        let status = match client.recommend_stream(request).await {
            Ok(response) => response
                .into_inner()
                .message()
                .await
                .expect_err("ended at the deadline"),
            Err(status) => status,
        };
        assert_eq!(
            status.code(),
            Code::DeadlineExceeded,
            "{deadline:?}: {status:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "not the server's own timeout"
        );
    }
    // A deadline already gone when the call arrives (the tonic client would time out on its
    // own first, so the request is written by hand).
    let address = server.url.trim_start_matches("http://").to_string();
    let (response, _body) = crate::support::raw_grpc_request(
        &address,
        "/vlms.rt.v1.RecommendationService/RecommendStream",
        &[("grpc-timeout", "0n")],
    )
    .await;
    let response = tokio::time::timeout(Duration::from_secs(4), response)
        .await
        .expect("answered at once")
        .expect("response");
    let status = match response.headers().get("grpc-status") {
        Some(status) => status.to_str().expect("ascii").to_string(),
        None => {
            let mut body = response.into_body();
            while let Some(chunk) = tokio::time::timeout(Duration::from_secs(4), body.data())
                .await
                .expect("not hung")
            {
                let _ = chunk.expect("data");
            }
            let trailers = body.trailers().await.expect("trailers").expect("trailers");
            trailers["grpc-status"].to_str().expect("ascii").to_string()
        }
    };
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    wait_for_series(
        &metrics,
        "vlms_rt_calls_total{code=\"DEADLINE_EXCEEDED\",rpc=\"RecommendStream\"} 2",
    )
    .await;
    server.stop_allowing_cut().await;
}

#[test]
fn the_start_up_log_names_the_audit_database_by_its_absolute_path() {
    let dir = std::env::temp_dir().join(format!("vlms-rt-cwd-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vlms-rt-server"))
        .current_dir(&dir)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--audit-db", "relative-audit.sqlite3"])
        .env_remove("VLMS_RT_AUDIT_DB")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let (_, log) = crate::support::wait_for_address_and_log(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    let log = log.lock().expect("log").join("\n");
    let absolute = dir.join("relative-audit.sqlite3");
    assert!(
        log.contains(&format!("\"audit_db\":\"{}\"", absolute.display())),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
