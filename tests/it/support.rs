//! Shared test helpers: the vignette files, the comparisons they define, and a running server.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use vlms_rt::pb;

/// Directory of the shared vignettes (`../shared/vignettes-2026.2` beside the repository, or
/// `VLMS_RT_VIGNETTES`). Tests fail, never skip, when it is missing.
pub fn vignette_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("VLMS_RT_VIGNETTES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vignettes-2026.2")
}

/// One vignette file.
#[derive(Debug, Clone)]
pub struct Vignette {
    pub name: String,
    pub json: Value,
}

impl Vignette {
    pub fn is_plan(&self) -> bool {
        self.json.get("case").is_some() && self.json.get("expected").is_some()
    }
    pub fn is_check(&self) -> bool {
        self.json.get("request").is_some() && self.json.get("expected").is_some()
    }
    pub fn is_bad_case(&self) -> bool {
        self.json.get("case").is_some() && self.json.get("expected_error").is_some()
    }
    pub fn is_bad_check(&self) -> bool {
        self.json.get("request").is_some() && self.json.get("expected_error").is_some()
    }
    pub fn case(&self) -> pb::Case {
        serde_json::from_value(self.json["case"].clone()).unwrap_or_else(|error| {
            panic!("{}: case is not proto3 JSON of a Case: {error}", self.name)
        })
    }
    pub fn check_request(&self) -> pb::CheckPrescriptionRequest {
        serde_json::from_value(self.json["request"].clone()).unwrap_or_else(|error| {
            panic!(
                "{}: request is not proto3 JSON of a CheckPrescriptionRequest: {error}",
                self.name
            )
        })
    }
    pub fn expected(&self) -> &Value {
        &self.json["expected"]
    }
    pub fn expected_fields(&self) -> Vec<String> {
        self.json["expected_error"]["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: expected_error.fields missing", self.name))
            .iter()
            .map(|field| field.as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// The vignette called `name` (its file name without `.json`). Panics (fails the test) when
/// there is none.
pub fn vignette(name: &str) -> Vignette {
    vignettes()
        .into_iter()
        .find(|vignette| vignette.name == name)
        .unwrap_or_else(|| panic!("no vignette {name} in {}", vignette_dir().display()))
}

/// The first plan vignette, for a test that needs any valid case.
pub fn any_plan_vignette() -> Vignette {
    vignettes()
        .into_iter()
        .find(Vignette::is_plan)
        .expect("a plan vignette")
}

/// Every vignette, sorted by name. Panics (fails the test) when the directory is missing or empty.
pub fn vignettes() -> Vec<Vignette> {
    let dir = vignette_dir();
    let mut vignettes = Vec::new();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read vignettes at {}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable vignette");
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or_default()
            .to_string();
        vignettes.push(Vignette { name, json });
    }
    vignettes.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        vignettes.len() >= 20,
        "expected the shared vignettes in {}",
        dir.display()
    );
    vignettes
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 0.01 + 1e-9
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

pub fn enum_name<E: TryFrom<i32>>(value: i32, name: impl Fn(&E) -> &'static str) -> String {
    E::try_from(value)
        .map(|value| name(&value))
        .unwrap_or("<unknown>")
        .to_string()
}

/// Compares a plan with a vignette's `expected`, returning every mismatch.
pub fn plan_mismatches(plan: &pb::Plan, expected: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut same = |what: &str, actual: String, expected: &Value| {
        if Some(actual.as_str()) != expected.as_str() {
            problems.push(format!("{what}: got {actual}, expected {expected}"));
        }
    };
    same(
        "indication",
        enum_name(plan.indication, pb::Indication::as_str_name),
        &expected["indication"],
    );
    same(
        "setting",
        enum_name(plan.setting, pb::Setting::as_str_name),
        &expected["setting"],
    );
    same(
        "site_group",
        enum_name(plan.site_group, pb::SiteGroup::as_str_name),
        &expected["site_group"],
    );

    let expected_rx = expected["prescriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if plan.prescriptions.len() != expected_rx.len() {
        problems.push(format!(
            "prescriptions: got {}, expected {}",
            plan.prescriptions.len(),
            expected_rx.len()
        ));
    }
    for (index, (actual, wanted)) in plan.prescriptions.iter().zip(&expected_rx).enumerate() {
        if Some(actual.preferred) != wanted["preferred"].as_bool() {
            problems.push(format!(
                "prescriptions[{index}].preferred: got {}",
                actual.preferred
            ));
        }
        let wanted_phases = wanted["phases"].as_array().cloned().unwrap_or_default();
        let phases_match = actual.phases.len() == wanted_phases.len()
            && actual
                .phases
                .iter()
                .zip(&wanted_phases)
                .all(|(phase, wanted)| {
                    Some(enum_name(phase.kind, pb::PhaseKind::as_str_name).as_str())
                        == wanted["kind"].as_str()
                        && close(
                            phase.dose_per_fraction_gy,
                            number(&wanted["dose_per_fraction_gy"]),
                        )
                        && Some(i64::from(phase.fractions)) == wanted["fractions"].as_i64()
                        && close(
                            phase.dose_gy,
                            phase.dose_per_fraction_gy * f64::from(phase.fractions),
                        )
                });
        if !phases_match {
            problems.push(format!(
                "prescriptions[{index}].phases: got {:?}, expected {wanted_phases:?}",
                actual.phases
            ));
        }
        for (field, value) in [
            ("total_dose_gy", actual.total_dose_gy),
            ("eqd2_tumor_gy", actual.eqd2_tumor_gy),
            ("eqd2_late_gy", actual.eqd2_late_gy),
        ] {
            if !close(value, number(&wanted[field])) {
                problems.push(format!(
                    "prescriptions[{index}].{field}: got {value}, expected {}",
                    wanted[field]
                ));
            }
        }
        if actual.technique != pb::Technique::Imrt as i32 {
            problems.push(format!("prescriptions[{index}].technique is not IMRT"));
        }
    }
    let preferred = plan.prescriptions.iter().filter(|rx| rx.preferred).count();
    if !plan.prescriptions.is_empty() && preferred != 1 {
        problems.push(format!("{preferred} preferred prescriptions"));
    }

    let window = plan.start_window.clone().unwrap_or_default();
    let wanted_window = &expected["start_window"];
    if Some(enum_name(window.status, pb::WindowStatus::as_str_name).as_str())
        != wanted_window["status"].as_str()
    {
        problems.push(format!("start_window.status: got {:?}", window.status));
    }
    if window.earliest != wanted_window["earliest"].as_str().unwrap_or_default()
        || window.latest != wanted_window["latest"].as_str().unwrap_or_default()
        || i64::from(window.days_since_surgery)
            != wanted_window["days_since_surgery"].as_i64().unwrap_or(0)
    {
        problems.push(format!(
            "start_window: got {window:?}, expected {wanted_window}"
        ));
    }

    let mut volumes: Vec<String> = plan
        .volumes
        .iter()
        .map(|volume| volume.code.clone())
        .collect();
    volumes.sort();
    let mut wanted_volumes: Vec<String> = expected["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|value| value.as_str().unwrap_or_default().to_string())
        .collect();
    wanted_volumes.sort();
    if volumes != wanted_volumes {
        problems.push(format!(
            "volumes: got {volumes:?}, expected {wanted_volumes:?}"
        ));
    }

    let mut constraints: Vec<(String, String, f64)> = plan
        .organ_constraints
        .iter()
        .map(|row| (row.structure.clone(), row.metric.clone(), row.limit))
        .collect();
    constraints.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut wanted_constraints: Vec<(String, String, f64)> = expected["organ_constraints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|row| {
            (
                row["structure"].as_str().unwrap_or_default().to_string(),
                row["metric"].as_str().unwrap_or_default().to_string(),
                number(&row["limit"]),
            )
        })
        .collect();
    wanted_constraints.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let constraints_match = constraints.len() == wanted_constraints.len()
        && constraints
            .iter()
            .zip(&wanted_constraints)
            .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && close(a.2, b.2));
    if !constraints_match {
        problems.push(format!(
            "organ_constraints: got {constraints:?}, expected {wanted_constraints:?}"
        ));
    }

    let mut alerts: Vec<(String, String)> = plan
        .alerts
        .iter()
        .map(|alert| {
            (
                alert.code.clone(),
                enum_name(alert.severity, pb::Severity::as_str_name),
            )
        })
        .collect();
    alerts.sort();
    let mut wanted_alerts: Vec<(String, String)> = expected["alerts"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|(code, severity)| {
            (
                code.clone(),
                severity.as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    wanted_alerts.sort();
    if alerts != wanted_alerts {
        problems.push(format!(
            "alerts: got {alerts:?}, expected {wanted_alerts:?}"
        ));
    }

    let trace: Vec<&str> = plan
        .trace
        .iter()
        .map(|firing| firing.rule_id.as_str())
        .collect();
    let mut position = 0;
    for wanted in expected["rules_fired"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let wanted = wanted.as_str().unwrap_or_default();
        match trace[position..].iter().position(|rule| *rule == wanted) {
            Some(offset) => position += offset + 1,
            None => problems.push(format!(
                "rules_fired: {wanted} missing or out of order in {trace:?}"
            )),
        }
    }
    problems
}

/// Compares a check response with a vignette's `expected`.
pub fn check_mismatches(response: &pb::CheckPrescriptionResponse, expected: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let verdict = enum_name(response.verdict, pb::Verdict::as_str_name);
    if Some(verdict.as_str()) != expected["verdict"].as_str() {
        problems.push(format!(
            "verdict: got {verdict}, expected {}",
            expected["verdict"]
        ));
    }
    let mut findings: Vec<(String, String)> = response
        .findings
        .iter()
        .map(|finding| {
            (
                finding.code.clone(),
                enum_name(finding.verdict, pb::Verdict::as_str_name),
            )
        })
        .collect();
    findings.sort();
    let mut wanted: Vec<(String, String)> = expected["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|finding| {
            (
                finding["code"].as_str().unwrap_or_default().to_string(),
                finding["verdict"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    wanted.sort();
    if findings != wanted {
        problems.push(format!("findings: got {findings:?}, expected {wanted:?}"));
    }
    for (field, value) in [
        ("total_dose_gy", response.total_dose_gy),
        ("eqd2_tumor_gy", response.eqd2_tumor_gy),
        ("eqd2_late_gy", response.eqd2_late_gy),
    ] {
        if !close(value, number(&expected[field])) {
            problems.push(format!(
                "{field}: got {value}, expected {}",
                expected[field]
            ));
        }
    }
    problems
}

/// The embedded profile, loaded once per test binary.
pub fn profile() -> Arc<vlms_rt::core::Profile> {
    static PROFILE: std::sync::OnceLock<Arc<vlms_rt::core::Profile>> = std::sync::OnceLock::new();
    PROFILE
        .get_or_init(|| {
            Arc::new(vlms_rt::guideline::embedded().expect("the embedded profile is valid"))
        })
        .clone()
}

/// A real server on 127.0.0.1:0 and a connected client.
pub struct TestServer {
    pub server: Option<vlms_rt::startup::RunningServer>,
    pub url: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(vlms_rt::startup::Settings::new(
            "127.0.0.1:0".parse().expect("address"),
            profile(),
        ))
        .await
    }

    pub async fn start_with(settings: vlms_rt::startup::Settings) -> TestServer {
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server = vlms_rt::startup::start(settings)
            .await
            .expect("server starts");
        let url = format!("{scheme}://{}", server.local_addr);
        TestServer {
            server: Some(server),
            url,
        }
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        connect(&self.url).await
    }

    /// The `host:port` of the metrics endpoint the server was started with.
    pub fn metrics_addr(&self) -> String {
        self.server
            .as_ref()
            .and_then(|running| running.metrics_addr)
            .expect("metrics address")
            .to_string()
    }

    pub async fn client(
        &self,
    ) -> pb::recommendation_service_client::RecommendationServiceClient<tonic::transport::Channel>
    {
        pb::recommendation_service_client::RecommendationServiceClient::new(self.channel().await)
    }

    /// Stops the server, accepting that hostile calls were cut at the end of the grace period.
    pub async fn stop_allowing_cut(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("shutdown");
        }
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            assert_eq!(
                server.shutdown().await.expect("clean shutdown"),
                vlms_rt::startup::Drain::Complete
            );
        }
    }
}

/// A plaintext channel to the server at `url`.
pub async fn connect(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connects")
}

/// Reads a server process's log until it reports its address.
pub fn wait_for_address(child: &mut std::process::Child) -> String {
    wait_until_serving(child).address
}

/// A server process's log lines, collected as they come.
pub type ServerLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Reads a server process's log until it reports its address, and goes on collecting the
/// log's lines.
pub fn wait_for_address_and_log(child: &mut std::process::Child) -> (String, ServerLog) {
    let serving = wait_until_serving(child);
    (serving.address, serving.log)
}

/// What a server process reported when it began serving.
pub struct Serving {
    /// The `host:port` it answers gRPC on.
    pub address: String,
    /// The `host:port` of its metrics endpoint, if it has one.
    pub metrics: Option<String>,
    /// Its log lines so far, the one that reported the address included, and every later one.
    pub log: ServerLog,
}

/// Reads a server process's log (on its stderr, in the JSON or the text format) until it reports
/// the addresses it serves on, and goes on collecting the log's lines.
pub fn wait_until_serving(child: &mut std::process::Child) -> Serving {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    let log = ServerLog::default();
    let collected = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(mut lines) = collected.lock() {
                lines.push(line.clone());
            }
            if !sent && line.contains("\"serving vlms.rt.v1.RecommendationService\"") {
                let record: serde_json::Value = serde_json::from_str(&line).expect("json log");
                let listen = record["listen"].as_str().unwrap_or_default().to_string();
                let metrics = record["metrics"]
                    .as_str()
                    .filter(|value| *value != "off")
                    .map(str::to_string);
                let _ = sender.send((listen, metrics));
                sent = true;
            } else if !sent && line.contains(" serving vlms.rt.v1.RecommendationService ") {
                // The text format: `… listen=ADDRESS … metrics=ADDRESS|off …`.
                let field = |name: &str| {
                    line.split(' ')
                        .find_map(|pair| pair.strip_prefix(name))
                        .map(|value| value.trim_matches('"').to_string())
                };
                let listen = field("listen=").unwrap_or_default();
                let metrics = field("metrics=").filter(|value| value != "off");
                let _ = sender.send((listen, metrics));
                sent = true;
            }
        }
    });
    let (address, metrics) = receiver
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("server reports its address");
    Serving {
        address,
        metrics,
        log,
    }
}

/// What a run of the `vlms-rt` client binary printed, and how it exited.
pub struct ClientRun {
    /// The exit code; -1 when a signal ended the client.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    /// Fails the test unless the client exited with `code`, showing what it printed.
    #[track_caller]
    pub fn expect_exit(&self, code: i32) {
        self.expect_exit_for(code, "");
    }

    /// [`ClientRun::expect_exit`], saying `what` was expected of the run.
    #[track_caller]
    pub fn expect_exit_for(&self, code: i32, what: &str) {
        assert_eq!(
            self.code, code,
            "{what}\nstderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
    }
}

/// Runs the `vlms-rt` client binary with `args` (and without `VLMS_RT_SERVER` from this
/// environment), writing `stdin`, if any, to its standard input.
pub async fn run_client<I>(args: I, stdin: Option<&str>) -> ClientRun
where
    I: IntoIterator,
    I::Item: AsRef<std::ffi::OsStr>,
{
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vlms-rt"))
        .args(args)
        .env_remove("VLMS_RT_SERVER")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let output = child.wait_with_output().await.expect("client runs");
    ClientRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The field paths of a status's `google.rpc.BadRequest`, in order (none without one).
pub fn bad_request_fields(status: &tonic::Status) -> Vec<String> {
    tonic_types::StatusExt::get_details_bad_request(status)
        .map(|bad_request| {
            bad_request
                .field_violations
                .into_iter()
                .map(|violation| violation.field)
                .collect()
        })
        .unwrap_or_default()
}

/// A plain HTTP/1.1 GET (the metrics endpoint); the whole response, status line included.
pub async fn http_get(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("metrics port");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text
}

/// Opens an HTTP/2 connection and sends the headers of a gRPC call to `path`, leaving its body
/// open: the response to come and the stream to send the body on.
pub async fn raw_grpc_headers(
    address: &str,
    path: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    raw_grpc_request(address, path, &[]).await
}

/// [`raw_grpc_headers`] with `extra` headers (a `grpc-timeout`, say).
pub async fn raw_grpc_request(
    address: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let tcp = tokio::net::TcpStream::connect(address).await.expect("tcp");
    let (sender, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut sender = sender.ready().await.expect("ready");
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let request = request.body(()).expect("request");
    sender.send_request(request, false).expect("send")
}
