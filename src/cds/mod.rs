//! The EHR front: HL7 CDS Hooks 3.0 with FHIR R4 data (`--cds-hooks-listen`), on the same service,
//! profile and audit trail as gRPC. Design: `docs/ehr-integration.md` in the shared docs;
//! integration guide: `docs/integrating.md`.
//!
//! A request goes: body limit → JWT check (`jwt`) → CDS Hooks request shape → prefetch → FHIR
//! chart (`fhir`) → `Case` (`mapping`, which never guesses) → the service's own `Recommend` (so
//! validation, admission and the audit record are the gRPC path's) → cards (`cards`) → the card
//! uuids recorded in the audit trail (fail closed) → answer.

pub mod cards;
pub mod codex;
pub mod fetch;
pub mod fhir;
pub mod jwt;
pub mod mapping;
pub mod orders;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use prometheus::IntCounterVec;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::pb;
use crate::server::Service;
use cards::{Card, Site};
use mapping::{Chart, Names, Outcome};

/// The service ids and their hooks.
pub const PLAN_SERVICE: &str = "vlms-rt-plan";
pub const CHECK_SERVICE: &str = "vlms-rt-rx-check";

/// Settings of the CDS Hooks port.
#[derive(Debug, Clone)]
pub struct CdsSettings {
    pub listen: SocketAddr,
    /// The canonical base of the site's FHIR artefacts and pages (`https://vlms-rt.example.org`
    /// in the design; a placeholder for the hospital's domain).
    pub canonical_base: String,
    /// Prefix of the JSON extension keys (`org.example.vlms-rt`).
    pub extension_prefix: String,
    /// The facility's time zone: the evaluation date is the local date a request arrives.
    pub time_zone: TimeZone,
    /// Trusted JWT issuers; `None` only on a loopback address (no authentication).
    pub issuers: Option<Arc<jwt::Issuers>>,
    /// The URL clients call, without a trailing slash (JWT `aud` = this + the endpoint's path);
    /// `None`: `http(s)://` + the bound address.
    pub public_url: Option<String>,
    /// Key of the case-id HMAC (stable per patient and tumour across replicas when shared).
    pub case_id_key: Vec<u8>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// The SMART intake app the missing-data card links to, if the site has one.
    pub intake_url: Option<String>,
    /// How prefetch the client omitted is fetched from its FHIR server.
    pub fetch: fetch::FetchPolicy,
}

/// Open connections the CDS Hooks port keeps at once.
const MAX_CONNECTIONS: usize = 512;

/// How long a client may take to send its whole request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default request-body limit: room for several times the prefetch of a whole sarcoma chart.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

struct Front {
    settings: CdsSettings,
    site: Site,
    names: Names,
    service: Service,
    guideline_version: String,
    requests: IntCounterVec,
}

/// The CDS Hooks port, running.
#[derive(Debug)]
pub struct RunningFront {
    pub local_addr: SocketAddr,
    issuers: Option<Arc<jwt::Issuers>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl RunningFront {
    /// Stops accepting and closes the port's connections.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    /// Re-reads the issuers file (`None` without one).
    pub fn reload_issuers(&self) -> Option<Result<usize, jwt::IssuersFileError>> {
        self.issuers.as_ref().map(|issuers| issuers.reload())
    }
}

/// Binds and serves the CDS Hooks port over HTTP/1.1 and HTTP/2, with TLS when `tls` is given.
pub async fn start(
    listener: TcpListener,
    settings: CdsSettings,
    service: Service,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: &crate::metrics::Metrics,
    handshake_timeout: Duration,
) -> std::io::Result<RunningFront> {
    let local_addr = listener.local_addr()?;
    let mut settings = settings;
    if settings.public_url.is_none() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        settings.public_url = Some(format!("{scheme}://{local_addr}"));
    }
    let site = Site {
        base: settings.canonical_base.trim_end_matches('/').to_string(),
        extension_prefix: settings.extension_prefix.clone(),
    };
    let names = Names::new(&site.base);
    let guideline_version = service.guideline_version().to_string();
    let issuers = settings.issuers.clone();
    let front = Arc::new(Front {
        settings,
        site,
        names,
        service,
        guideline_version,
        requests: metrics.cds_requests(),
    });
    let app = router(front);
    let tls = tls.map(|config| {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let (shutdown, mut stopped) = tokio::sync::watch::channel(false);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            let Ok((stream, peer)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            // A bounded number of connections: one more is closed at once (and logged).
            let Ok(place) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::warn!(peer = %peer, limit = MAX_CONNECTIONS, "CDS Hooks port: connection refused, too many open");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let tls = tls.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let _place = place;
                let service = hyper_util::service::TowerToHyperService::new(app);
                let mut builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                // A client must send its request head within the handshake timeout.
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(handshake_timeout);
                let served = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => {
                                let connection = builder.serve_connection(
                                    hyper_util::rt::TokioIo::new(stream),
                                    service,
                                );
                                tokio::select! {
                                    result = connection => result,
                                    _ = stopped.wait_for(|stop| *stop) => Ok(()),
                                }
                            }
                            _ => {
                                tracing::info!(peer = %peer, "CDS Hooks port: TLS handshake refused");
                                return;
                            }
                        }
                    }
                    None => {
                        let connection =
                            builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        tokio::select! {
                            result = connection => result,
                            _ = stopped.wait_for(|stop| *stop) => Ok(()),
                        }
                    }
                };
                if let Err(error) = served {
                    tracing::debug!(peer = %peer, %error, "CDS Hooks connection ended with an error");
                }
            });
        }
    });
    Ok(RunningFront {
        local_addr,
        issuers,
        shutdown,
    })
}

fn router(front: Arc<Front>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/cds-services", get(discovery).options(preflight))
        .route("/health", get(health))
        .route("/cds-services/{id}", post(hook).options(preflight))
        .route(
            "/cds-services/{id}/feedback",
            post(feedback).options(preflight),
        )
        .route("/fhir/$recommend", post(fhir_recommend).options(preflight))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(front)
}

/// A refused request: its HTTP status and the OperationOutcome naming the problem.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            self.body.to_string(),
        )
            .into_response()
    }
}

/// A refusal with one issue (`code` from the FHIR issue-type value set).
fn outcome(status: StatusCode, code: &str, text: &str, expression: Option<&str>) -> Refusal {
    let mut issue = json!({"severity": "error", "code": code, "diagnostics": text});
    if let Some(expression) = expression {
        issue["expression"] = json!([expression]);
    }
    Refusal {
        status,
        body: json!({"resourceType": "OperationOutcome", "issue": [issue]}),
    }
}

/// A 503: the service could not answer now, for the reason in `text`.
fn transient(text: &str) -> Refusal {
    outcome(StatusCode::SERVICE_UNAVAILABLE, "transient", text, None)
}

/// A 400 for EHR JSON that is not a FHIR resource the service can read, naming where.
fn malformed(error: &fhir::Malformed) -> Refusal {
    outcome(
        StatusCode::BAD_REQUEST,
        "structure",
        &error.to_string(),
        Some(&error.path),
    )
}

/// A 503 naming the error status the service answered with.
fn cannot_answer_now(status: &tonic::Status) -> Refusal {
    transient(&format!(
        "vlms-rt cannot answer now ({:?}): {}",
        status.code(),
        status.message()
    ))
}

/// The refusal of a call to a CDS service this server does not offer.
fn no_such_service(id: &str) -> Refusal {
    outcome(
        StatusCode::NOT_FOUND,
        "not-found",
        &format!("no CDS service {id:?}: see GET /cds-services"),
        None,
    )
}

fn json_response(body: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl Front {
    fn count(&self, service: &str, status: StatusCode, result: &str) {
        self.requests
            .with_label_values(&[service, status.as_str(), result])
            .inc();
    }

    /// CORS headers for an allowed browser origin (none otherwise).
    fn cors(&self, headers: &HeaderMap, response: &mut Response) {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return;
        };
        if !self
            .settings
            .cors_origins
            .iter()
            .any(|allowed| allowed == origin)
        {
            return;
        }
        let h = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }

    /// The client of a request: the verified JWT issuer, or none on a loopback-only front.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<Option<jwt::Client>, Refusal> {
        let Some(issuers) = &self.settings.issuers else {
            return Ok(None);
        };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                outcome(
                    StatusCode::UNAUTHORIZED,
                    "login",
                    "a CDS Hooks JWT is required: Authorization: Bearer <jwt>",
                    None,
                )
            })?;
        let base = self.settings.public_url.as_deref().unwrap_or_default();
        let audience = format!("{}{path}", base.trim_end_matches('/'));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        issuers
            .verify(token.trim(), &audience, now)
            .map(Some)
            .map_err(|problem| {
                tracing::info!(problem, "CDS Hooks JWT refused");
                outcome(
                    StatusCode::UNAUTHORIZED,
                    "login",
                    &format!("JWT refused: {problem}"),
                    None,
                )
            })
    }

    /// The prefetch templates of every service (§1.2), by key: the one list of the seven keys.
    fn prefetch_templates(&self) -> Vec<(&'static str, String)> {
        let case_system = self.site.code_system("vlms-rt-case");
        let assessments = [
            "resectability-assessment",
            "close-margin",
            "re-excision-feasible",
            "postoperative-hematoma",
            "organs-adjacent-to-target",
            "solitary-functioning-kidney",
            "prior-radiotherapy-to-region",
            "tumor-depth",
            "preoperative-rt-delivered",
        ]
        .iter()
        .map(|code| format!("{case_system}|{code}"))
        .collect::<Vec<_>>()
        .join(",");
        vec![
            ("patient", "Patient/{{context.patientId}}".into()),
            ("conditions", "Condition?patient={{context.patientId}}".into()),
            ("tumorSize", "Observation?patient={{context.patientId}}&code=http://loinc.org|21889-1&_sort=-date&_count=20".into()),
            ("pathology", "Observation?patient={{context.patientId}}&code=http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl|C18000,http://snomed.info/sct|17964000,http://loinc.org|84892-9&_sort=-date&_count=50".into()),
            ("staging", "Observation?patient={{context.patientId}}&code=http://snomed.info/sct|399387003,http://snomed.info/sct|371497001,http://snomed.info/sct|277208005&_sort=-date&_count=20".into()),
            ("assessments", format!("Observation?patient={{{{context.patientId}}}}&code={assessments}&_sort=-date&_count=100")),
            ("procedures", "Procedure?patient={{context.patientId}}&_sort=-date&_count=100".into()),
        ]
    }

    fn discovery(&self) -> Value {
        let prefetch: serde_json::Map<String, Value> = self
            .prefetch_templates()
            .into_iter()
            .map(|(key, template)| (key.to_string(), Value::String(template)))
            .collect();
        let extension = json!({
            self.site.extension_key("service"): {
                "guidelineVersion": self.guideline_version,
                "fhirVersion": "4.0.1",
            }
        });
        let service = |hook: &str, id: &str, title: &str, description: &str| {
            json!({
                "hook": hook,
                "hookVersion": "1.0",
                "version": "3.0.0",
                "id": id,
                "title": title,
                "description": description,
                "usageRequirements": "Needs the vlms-rt-case assessment Observations and the resection Procedure extensions besides mCODE data; returns no card for patients without an ICD-O-3 8890/3 primary of a mapped vein.",
                "prefetch": prefetch,
                "extension": extension,
            })
        };
        json!({"services": [
            service("patient-view", PLAN_SERVICE,
                "vlms-rt: radiotherapy recommendation for venous leiomyosarcoma",
                "Radiotherapy decision support for adults with primary venous leiomyosarcoma (IVC, renal, gonadal, iliac, femoral, popliteal, saphenous or upper-limb vein). Every statement cites its rule and references. It never fills in missing facts: it says what is missing instead."),
            service("order-select", CHECK_SERVICE,
                "vlms-rt: radiotherapy prescription check",
                "Checks a draft CodeX radiotherapy course prescription against the vlms-rt guideline while it is composed."),
            service("order-sign", CHECK_SERVICE,
                "vlms-rt: radiotherapy prescription check",
                "Checks a CodeX radiotherapy course prescription against the vlms-rt guideline before it is signed."),
        ]})
    }

    /// The evaluation date: the facility-local date now, or the request extension for clients
    /// allowed to set it.
    fn evaluation_date(
        &self,
        request: &Value,
        client: Option<&jwt::Client>,
    ) -> Result<jiff::civil::Date, Refusal> {
        let key = self.site.extension_key("evaluation-date");
        let Some(asked) = request.get("extension").and_then(|e| e.get(&key)) else {
            return Ok(jiff::Timestamp::now()
                .to_zoned(self.settings.time_zone.clone())
                .date());
        };
        let allowed = match client {
            None => true,
            Some(client) => client.may_set_evaluation_date,
        };
        if !allowed {
            return Err(outcome(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("this client may not set the evaluation date (extension {key})"),
                Some(&format!("extension.{key}")),
            ));
        }
        asked
            .as_str()
            .filter(|text| text.len() == 10)
            .and_then(|text| text.parse::<jiff::civil::Date>().ok())
            .ok_or_else(|| {
                outcome(
                    StatusCode::BAD_REQUEST,
                    "value",
                    &format!("extension {key} must be a date YYYY-MM-DD"),
                    Some(&format!("extension.{key}")),
                )
            })
    }

    /// `case_id` = `cdsh:` + 26 characters of base32(HMAC-SHA256(key, fhirServer|patient|condition)).
    fn case_id(&self, fhir_server: &str, patient_id: &str, condition_id: &str) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.settings.case_id_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(format!("{fhir_server}|{patient_id}|{condition_id}").as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut id = String::from("cdsh:");
        id.push_str(&base32_lower(&digest)[..26]);
        id
    }
}

fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

async fn not_found(State(front): State<Arc<Front>>) -> Response {
    front.count("none", StatusCode::NOT_FOUND, "refused");
    outcome(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such endpoint: this server offers GET /cds-services, POST /cds-services/{id}, POST /cds-services/{id}/feedback and POST /fhir/$recommend",
        None,
    )
    .into_response()
}

async fn method_not_allowed(State(front): State<Arc<Front>>) -> Response {
    front.count("none", StatusCode::METHOD_NOT_ALLOWED, "refused");
    outcome(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "method not allowed: discovery is GET, the services and feedback are POST",
        None,
    )
    .into_response()
}

async fn preflight(State(front): State<Arc<Front>>, headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    front.cors(&headers, &mut response);
    response
}

/// Readiness of the CDS Hooks port: SERVING while answers can be recorded (the gRPC health's
/// readiness, for probes that speak only HTTP to this port).
async fn health(State(front): State<Arc<Front>>) -> Response {
    let (status, text) = if front.service.can_record() {
        (StatusCode::OK, "SERVING")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING")
    };
    front.count("health", status, "health");
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": text}).to_string(),
    )
        .into_response()
}

async fn discovery(State(front): State<Arc<Front>>, headers: HeaderMap) -> Response {
    let mut response = json_response(&front.discovery());
    front.count("discovery", StatusCode::OK, "discovery");
    front.cors(&headers, &mut response);
    response
}

/// Reads a body up to the limit and parses it as JSON.
fn parse_body(front: &Front, body: &Bytes) -> Result<Value, Refusal> {
    if body.len() > front.settings.max_body_bytes {
        return Err(outcome(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            &format!(
                "request body of {} bytes is over the limit of {} bytes",
                body.len(),
                front.settings.max_body_bytes
            ),
            None,
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        outcome(
            StatusCode::BAD_REQUEST,
            "structure",
            &format!("the body is not JSON: {error}"),
            None,
        )
    })
}

async fn hook(
    State(front): State<Arc<Front>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let label = match id.as_str() {
        PLAN_SERVICE => PLAN_SERVICE,
        CHECK_SERVICE => CHECK_SERVICE,
        _ => "unknown",
    };
    let (status, result, mut response) = match answer_hook(&front, &id, &headers, body).await {
        Ok((result, response)) => (StatusCode::OK, result, response),
        Err(refusal) => (refusal.status, "refused", refusal.into_response()),
    };
    front.count(label, status, result);
    front.cors(&headers, &mut response);
    response
}

/// Reads at most the body limit (a larger body is refused without reading it all).
async fn read_body(front: &Front, body: axum::body::Body) -> Result<Bytes, Refusal> {
    let limit = front.settings.max_body_bytes;
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Err(_) => Err(outcome(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            &format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
            None,
        )),
        Ok(Err(_)) => Err(outcome(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            &format!("request body is over the limit of {limit} bytes (or could not be read)"),
            None,
        )),
    }
}

async fn answer_hook(
    front: &Front,
    id: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(&'static str, Response), Refusal> {
    let hooks: &[&str] = match id {
        PLAN_SERVICE => &["patient-view"],
        CHECK_SERVICE => &["order-select", "order-sign"],
        _ => return Err(no_such_service(id)),
    };
    let client = front.authenticate(headers, &format!("/cds-services/{id}"))?;
    let body = read_body(front, body).await?;
    let request = parse_body(front, &body)?;
    let request = HookRequest::read(&request, hooks)?;
    let evaluation_date = front.evaluation_date(request.raw, client.as_ref())?;
    let caller = caller_name(client.as_ref());
    // order-select and order-sign: what is drafted decides whether there is anything to check.
    let drafts = if id == CHECK_SERVICE {
        let draft_orders = request.draft_orders()?;
        let selections = request.selections()?;
        let drafts = orders::read(
            draft_orders,
            selections.as_deref(),
            &front.names,
            &front.settings.time_zone,
        )
        .map_err(|error| malformed(&error))?;
        match drafts {
            orders::Drafts::Nothing => return Ok(("no-card", cards_response(Vec::new()))),
            orders::Drafts::NotCheckable { course, reason } => {
                let card = cards::not_checkable_card(
                    &front.site,
                    &front.guideline_version,
                    &course,
                    &reason,
                    new_uuid(),
                );
                return Ok(("not-checkable", cards_response(vec![card])));
            }
            orders::Drafts::Course(course) => Some((course, draft_orders)),
        }
    } else {
        None
    };
    let mapped = front.map_chart(&request, evaluation_date).await?;
    let mapped = match mapped {
        Outcome::OutOfScope => return Ok(("no-card", cards_response(Vec::new()))),
        Outcome::Minor { age, .. } => {
            let card = cards::minor_card(&front.site, &front.guideline_version, age, new_uuid());
            return Ok(("minor", cards_response(vec![card])));
        }
        Outcome::Gaps {
            missing,
            conflicts,
            used,
            ..
        } => return Ok(front.data_required(&missing, &conflicts, &used)),
        Outcome::Case(mapped) => mapped,
    };
    let context = json!({
        "hook": request.hook,
        "hookInstance": request.hook_instance,
        "service": id,
        "fhirServer": request.fhir_server,
        "userId": request.user_id,
        "evaluationDate": evaluation_date.to_string(),
        "ehrResources": mapped.used.iter().map(|u| u.source.clone()).collect::<Vec<_>>(),
    });
    match drafts {
        None => {
            let subject = front.subject(&request, &mapped);
            front.plan(&mapped, &subject, &caller, &context).await
        }
        Some((course, draft_orders)) => {
            let subject = front.subject(&request, &mapped);
            front
                .check(&mapped, course, draft_orders, &subject, &caller, &context)
                .await
        }
    }
}

/// The caller the service logs and records: the verified issuer, or `cds-hooks` on a
/// loopback-only front without issuers.
fn caller_name(client: Option<&jwt::Client>) -> String {
    client.map_or_else(
        || "cds-hooks".to_string(),
        |client| format!("cds-hooks:{}", client.issuer),
    )
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn cards_response(cards: Vec<Card>) -> Response {
    json_response(&json!({"cards": cards.into_iter().map(|c| c.json).collect::<Vec<_>>()}))
}

impl Front {
    /// The request's chart (prefetch, and what was fetched) mapped to a case as of
    /// `evaluation_date`.
    async fn map_chart(
        &self,
        request: &HookRequest<'_>,
        evaluation_date: jiff::civil::Date,
    ) -> Result<Outcome, Refusal> {
        let chart = request.chart(self).await?;
        Ok(mapping::map(
            &chart,
            &self.names,
            &self.settings.time_zone,
            evaluation_date,
            |condition| {
                self.case_id(
                    request.fhir_server.unwrap_or(""),
                    request.patient_id,
                    condition,
                )
            },
        ))
    }

    /// The data-required (missing) or conflict card.
    fn data_required(
        &self,
        missing: &[mapping::Gap],
        conflicts: &[mapping::Gap],
        used: &[mapping::Used],
    ) -> (&'static str, Response) {
        let result = if conflicts.is_empty() {
            "data-required"
        } else {
            "conflict"
        };
        let card = cards::data_card(
            &self.site,
            &self.guideline_version,
            missing,
            conflicts,
            used,
            self.settings.intake_url.as_deref(),
            new_uuid(),
        );
        (result, cards_response(vec![card]))
    }

    /// Who and what the suggested orders are about.
    fn subject(&self, request: &HookRequest<'_>, mapped: &mapping::Mapped) -> codex::Subject {
        codex::Subject {
            patient_id: request.patient_id.to_string(),
            condition_id: mapped.primary_id.clone(),
            user_id: request.user_id.map(str::to_string),
            encounter_id: request.encounter_id.map(str::to_string),
            fhir_server: request.fhir_server.map(str::to_string),
            tumour_site: (
                mapped.site.system.clone().unwrap_or_default(),
                mapped.site.code.clone().unwrap_or_default(),
                mapped.site.display.clone().unwrap_or_default(),
            ),
        }
    }

    /// patient-view: the plan card (with one draft-order suggestion per option) and one card per
    /// alert, all recorded before they are sent.
    async fn plan(
        &self,
        mapped: &mapping::Mapped,
        subject: &codex::Subject,
        caller: &str,
        context: &Value,
    ) -> Result<(&'static str, Response), Refusal> {
        let plan = match self
            .service
            .recommend_in_process(mapped.case.clone(), caller)
            .await
        {
            Ok(plan) => plan,
            Err(status) => return self.refused_or_unavailable(&status, &mapped.used),
        };
        let naming = codex::Naming {
            site: self.site.base.clone(),
        };
        let (suggestions, options) =
            codex::plan_suggestions(&plan, &naming, subject, &mut codex::RandomIds);
        let cards = cards::plan_cards(
            &plan,
            &self.site,
            &mapped.used,
            &mapped.notes,
            suggestions,
            new_uuid,
        );
        let mut links: Vec<crate::server::CardLink> = cards
            .iter()
            .map(|card| crate::server::CardLink {
                card_uuid: card.uuid.clone(),
                shows: json!({"card": if card.alert_code.is_some() { "alert" } else { "plan" }, "alertCode": card.alert_code}),
            })
            .collect();
        links.extend(options.iter().map(|option| crate::server::CardLink {
            card_uuid: option.uuid.to_string(),
            shows: json!({"card": "suggestion", "label": option.label, "preferred": option.preferred}),
        }));
        self.record(
            caller,
            &plan.recommendation_id,
            &mapped.case.case_id,
            context,
            &links,
        )
        .await?;
        Ok(("plan", cards_response(cards)))
    }

    /// order-select / order-sign: the check's card, recorded before it is sent. When the verdict
    /// is FAIL or REVIEW and the guideline has a preferred option, the card suggests replacing the
    /// draft with it (§3.4).
    async fn check(
        &self,
        mapped: &mapping::Mapped,
        course: orders::DraftCourse,
        draft_orders: &Value,
        subject: &codex::Subject,
        caller: &str,
        context: &Value,
    ) -> Result<(&'static str, Response), Refusal> {
        let post = mapped.case.phase == pb::TreatmentPhase::PostResection as i32;
        let setting = match course.setting {
            Some(setting) => setting,
            // After resection POSTOPERATIVE is the only setting the contract accepts: not a guess.
            None if post => pb::Setting::Postoperative,
            None => {
                let gap = mapping::Gap {
                    field: "setting",
                    detail: format!(
                        "the draft course {} states no vlms-rt-setting (preoperative or neoadjuvant-chemoradiation cannot be told apart before resection)",
                        course.course
                    ),
                    sources: Vec::new(),
                };
                return Ok(self.data_required(&[gap], &[], &mapped.used));
            }
        };
        if course.reirradiation == Some(true) && !mapped.case.prior_radiotherapy {
            let gap = mapping::Gap {
                field: "prior_radiotherapy",
                detail: "the draft course says it involves re-irradiation, the chart says no prior radiotherapy to this region".into(),
                sources: vec![course.course.clone()],
            };
            return Ok(self.data_required(&[], &[gap], &mapped.used));
        }
        let request = pb::CheckPrescriptionRequest {
            case: Some(mapped.case.clone()),
            setting: setting as i32,
            phases: course.phases.clone(),
            planned_start_date: course.planned_start.clone().unwrap_or_default(),
            dose_metrics: Vec::new(),
        };
        let check = match self.service.check_in_process(request, caller).await {
            Ok(check) => check,
            Err(status) => return self.refused_or_unavailable(&status, &mapped.used),
        };
        let replacement = match (
            pb::Verdict::try_from(check.verdict),
            &check.recommended_plan,
        ) {
            (Ok(pb::Verdict::Fail | pb::Verdict::Review), Some(plan)) => {
                let naming = codex::Naming {
                    site: self.site.base.clone(),
                };
                codex::replace_suggestion(
                    plan,
                    draft_orders,
                    &course.course,
                    &course.phase_refs,
                    &naming,
                    subject,
                    &mut codex::RandomIds,
                )
            }
            _ => None,
        };
        let (suggestions, replaced): (Vec<Value>, Option<codex::SuggestedOption>) =
            match replacement {
                Some((suggestion, option)) => (vec![suggestion], Some(option)),
                None => (Vec::new(), None),
            };
        let card = cards::check_card(
            &check,
            &course.phases,
            &self.site,
            &mapped.used,
            suggestions,
            new_uuid(),
        );
        let mut links = vec![crate::server::CardLink {
            card_uuid: card.uuid.clone(),
            shows: json!({"card": "check", "course": course.course}),
        }];
        links.extend(replaced.map(|option| crate::server::CardLink {
            card_uuid: option.uuid.to_string(),
            shows: json!({"card": "suggestion", "label": option.label, "preferred": option.preferred}),
        }));
        self.record(
            caller,
            &check.recommendation_id,
            &mapped.case.case_id,
            context,
            &links,
        )
        .await?;
        Ok(("check", cards_response(vec![card])))
    }

    async fn record(
        &self,
        caller: &str,
        recommendation_id: &str,
        case_id: &str,
        context: &Value,
        links: &[crate::server::CardLink],
    ) -> Result<(), Refusal> {
        self.service
            .record_cards(caller, recommendation_id, case_id, context, links)
            .await
            .map_err(|status| transient(status.message()))
    }

    /// A refused case becomes a warning card (the chart holds values the guideline cannot take:
    /// the user must see it); a service that cannot answer now becomes a 503.
    fn refused_or_unavailable(
        &self,
        status: &tonic::Status,
        used: &[mapping::Used],
    ) -> Result<(&'static str, Response), Refusal> {
        use tonic_types::StatusExt;
        if status.code() == tonic::Code::InvalidArgument {
            let violations: Vec<(String, String)> = status
                .get_details_bad_request()
                .map(|bad| {
                    bad.field_violations
                        .into_iter()
                        .map(|v| (v.field, v.description))
                        .collect()
                })
                .unwrap_or_else(|| vec![(String::from("case"), status.message().to_string())]);
            let card = cards::refused_card(
                &self.site,
                &self.guideline_version,
                &violations,
                used,
                new_uuid(),
            );
            return Ok(("refused-case", cards_response(vec![card])));
        }
        Err(cannot_answer_now(status))
    }
}

/// The parts of a CDS Hooks request the service reads.
struct HookRequest<'r> {
    raw: &'r Value,
    hook: &'r str,
    hook_instance: &'r str,
    fhir_server: Option<&'r str>,
    /// `fhirAuthorization.access_token`.
    fhir_token: Option<&'r str>,
    patient_id: &'r str,
    user_id: Option<&'r str>,
    encounter_id: Option<&'r str>,
    prefetch: Option<&'r serde_json::Map<String, Value>>,
}

impl<'r> HookRequest<'r> {
    /// `context.draftOrders`: a Bundle of the draft orders (both order hooks require it).
    fn draft_orders(&self) -> Result<&'r Value, Refusal> {
        self.raw
            .get("context")
            .and_then(|c| c.get("draftOrders"))
            .filter(|d| d.get("resourceType").and_then(Value::as_str) == Some("Bundle"))
            .ok_or_else(|| {
                outcome(
                    StatusCode::BAD_REQUEST,
                    "structure",
                    "`context.draftOrders` must be a FHIR Bundle of the draft orders",
                    Some("context.draftOrders"),
                )
            })
    }

    /// `context.selections` (order-select): the orders the user selected.
    fn selections(&self) -> Result<Option<Vec<String>>, Refusal> {
        if self.hook != "order-select" {
            return Ok(None);
        }
        let bad = || {
            outcome(
                StatusCode::BAD_REQUEST,
                "structure",
                "`context.selections` must be an array of references (order-select)",
                Some("context.selections"),
            )
        };
        let list = self
            .raw
            .get("context")
            .and_then(|c| c.get("selections"))
            .and_then(Value::as_array)
            .ok_or_else(bad)?;
        list.iter()
            .map(|item| item.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn read(raw: &'r Value, hooks: &[&str]) -> Result<HookRequest<'r>, Refusal> {
        let bad = |text: &str, expression: &str| {
            outcome(StatusCode::BAD_REQUEST, "structure", text, Some(expression))
        };
        let hook = raw
            .get("hook")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("not a CDS Hooks request: `hook` is missing", "hook"))?;
        if !hooks.contains(&hook) {
            return Err(bad(
                &format!("this service answers {}, not {hook:?}", hooks.join(" and ")),
                "hook",
            ));
        }
        let hook_instance = raw
            .get("hookInstance")
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty() && text.len() <= 128)
            .ok_or_else(|| {
                bad(
                    "`hookInstance` must be a non-empty string (a UUID)",
                    "hookInstance",
                )
            })?;
        let context = raw
            .get("context")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("`context` must be an object", "context"))?;
        let patient_id = context
            .get("patientId")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| bad("`context.patientId` is required", "context.patientId"))?;
        let user_id = context.get("userId").and_then(Value::as_str);
        let encounter_id = context.get("encounterId").and_then(Value::as_str);
        let fhir_server = match raw.get("fhirServer") {
            None => None,
            Some(Value::String(url)) => Some(url.as_str()),
            Some(_) => return Err(bad("`fhirServer` must be a URL string", "fhirServer")),
        };
        let fhir_token = match raw.get("fhirAuthorization") {
            None | Some(Value::Null) => None,
            Some(authorization) => Some(
                authorization
                    .get("access_token")
                    .and_then(Value::as_str)
                    .filter(|token| !token.is_empty())
                    .ok_or_else(|| {
                        bad(
                            "`fhirAuthorization.access_token` must be a non-empty string",
                            "fhirAuthorization.access_token",
                        )
                    })?,
            ),
        };
        if fhir_token.is_some() && fhir_server.is_none() {
            return Err(bad(
                "`fhirAuthorization` needs `fhirServer`",
                "fhirAuthorization",
            ));
        }
        // The id goes into FHIR query URLs: FHIR's own id syntax only.
        if patient_id.len() > 64
            || !patient_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(bad(
                "`context.patientId` is not a FHIR id ([A-Za-z0-9-.]{1,64})",
                "context.patientId",
            ));
        }
        let prefetch = match raw.get("prefetch") {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(bad("`prefetch` must be an object", "prefetch")),
        };
        Ok(HookRequest {
            raw,
            hook,
            hook_instance,
            fhir_server,
            fhir_token,
            patient_id,
            user_id,
            encounter_id,
            prefetch,
        })
    }

    /// The chart from the prefetch, and from the client's FHIR server for what it did not send
    /// when it gave `fhirServer` + `fhirAuthorization`. A key omitted (or answered with an
    /// OperationOutcome, or paginated) that cannot be fetched is a 412 naming every such key.
    async fn chart(&self, front: &Front) -> Result<Chart, Refusal> {
        let mut chart = Chart::default();
        let mut unavailable: Vec<(String, String)> = Vec::new();
        let mut to_fetch: Vec<(&'static str, String)> = Vec::new();
        for (key, template) in front.prefetch_templates() {
            let path = format!("prefetch.{key}");
            let sent = self.prefetch.and_then(|p| p.get(key));
            let complete = match sent {
                Some(Value::Null) => continue,
                None => None,
                Some(value) => {
                    let resources =
                        fhir::resources_of(value, &path).map_err(|error| malformed(&error))?;
                    let usable =
                        !matches!(resources.as_slice(), [fhir::Resource::OperationOutcome])
                            && !fhir::has_next_page(value);
                    usable.then_some(resources)
                }
            };
            match complete {
                Some(resources) => resources.into_iter().for_each(|r| chart.add(r)),
                None if self.fhir_server.is_some() && self.fhir_token.is_some() => {
                    to_fetch.push((key, template.replace("{{context.patientId}}", self.patient_id)));
                }
                None => unavailable.push((
                    key.to_string(),
                    "was not sent (or was an OperationOutcome, or has more pages) and no fhirServer with fhirAuthorization was given to fetch it".into(),
                )),
            }
        }
        // What the client did not send is fetched from its FHIR server, all keys at once.
        if let (Some(base), Some(token)) = (self.fhir_server, self.fhir_token) {
            let source = fetch::Source { base, token };
            let fetched = futures_util::future::join_all(
                to_fetch
                    .iter()
                    .map(|(_, query)| fetch::fetch(&front.settings.fetch, &source, query)),
            )
            .await;
            for ((key, _), result) in to_fetch.iter().zip(fetched) {
                let path = format!("prefetch.{key}");
                match result {
                    Ok(value) => {
                        let resources = fhir::resources_of(&value, &format!("{path} (fetched)"))
                            .map_err(|error| {
                                outcome(
                                    StatusCode::PRECONDITION_FAILED,
                                    "required",
                                    &format!("the FHIR server's answer cannot be read: {error}"),
                                    Some(&path),
                                )
                            })?;
                        resources.into_iter().for_each(|r| chart.add(r));
                    }
                    Err(problem) => {
                        tracing::info!(key, problem, "prefetch fetch failed");
                        unavailable.push((
                            key.to_string(),
                            format!("was not sent, and fetching it from the FHIR server failed: {problem}"),
                        ));
                    }
                }
            }
        }
        if !unavailable.is_empty() {
            let issues: Vec<Value> = unavailable
                .iter()
                .map(|(key, why)| {
                    json!({
                        "severity": "error",
                        "code": "required",
                        "diagnostics": format!("prefetch key {key:?} {why}"),
                        "expression": [format!("prefetch.{key}")],
                    })
                })
                .collect();
            return Err(Refusal {
                status: StatusCode::PRECONDITION_FAILED,
                body: json!({"resourceType": "OperationOutcome", "issue": issues}),
            });
        }
        Ok(chart)
    }
}

async fn feedback(
    State(front): State<Arc<Front>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (status, result, mut response) = match answer_feedback(&front, &id, &headers, body).await {
        Ok(count) => (
            StatusCode::OK,
            "feedback",
            (
                StatusCode::OK,
                format!("{count} feedback item(s) recorded\n"),
            )
                .into_response(),
        ),
        Err(refusal) => (refusal.status, "refused", refusal.into_response()),
    };
    front.count("feedback", status, result);
    front.cors(&headers, &mut response);
    response
}

/// One feedback item as CDS Hooks sends it.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeedbackItem {
    card: String,
    outcome: String,
    #[serde(default)]
    accepted_suggestions: Vec<AcceptedSuggestion>,
    override_reason: Option<OverrideReason>,
    outcome_timestamp: String,
}

#[derive(Debug, serde::Deserialize)]
struct AcceptedSuggestion {
    id: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct OverrideReason {
    reason: Option<fhir::Coding>,
    user_comment: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct FeedbackBody {
    feedback: Vec<FeedbackItem>,
}

/// The audit record of the card or suggestion `uuid` names, if vlms-rt issued one. The uuid is
/// read as RFC 4122 text in any of its spellings (vlms-rt writes lower case); anything else names
/// no card. A record that fails its hash check is a server error, not a reason to retry.
async fn issued_card(
    front: &Front,
    uuid: &str,
) -> Result<Option<crate::audit::StoredRecord>, Refusal> {
    let Ok(uuid) = uuid::Uuid::try_parse(uuid) else {
        return Ok(None);
    };
    front
        .service
        .card_record(&uuid.to_string())
        .await
        .map_err(|status| match status.code() {
            tonic::Code::DataLoss => outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                status.message(),
                None,
            ),
            _ => transient(status.message()),
        })
}

/// Feedback (§3.3): each item's card is looked up in the audit trail (any replica's); plan and
/// check cards land as `RecordFeedback` on their recommendation; alert cards (the contract has no
/// per-alert feedback) as an audit record of their own beside the card. Every item is checked
/// before any is recorded.
async fn answer_feedback(
    front: &Front,
    id: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<usize, Refusal> {
    if id != PLAN_SERVICE && id != CHECK_SERVICE {
        return Err(no_such_service(id));
    }
    let client = front.authenticate(headers, &format!("/cds-services/{id}/feedback"))?;
    let caller = caller_name(client.as_ref());
    let body = read_body(front, body).await?;
    let value = parse_body(front, &body)?;
    let parsed: FeedbackBody = serde_path_to_error::deserialize(&value).map_err(|error| {
        outcome(
            StatusCode::BAD_REQUEST,
            "structure",
            &format!("not a CDS Hooks feedback body: {}", error.inner()),
            Some(&error.path().to_string()),
        )
    })?;
    let unavailable = |status: tonic::Status| transient(status.message());
    let mut requests: Vec<pb::RecordFeedbackRequest> = Vec::new();
    let mut alert_feedback: Vec<(String, String, crate::server::CardLink)> = Vec::new();
    for (index, item) in parsed.feedback.iter().enumerate() {
        let at = |field: &str| format!("feedback[{index}].{field}");
        let card = issued_card(front, &item.card).await?.ok_or_else(|| {
            outcome(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!("no card {:?} was issued by vlms-rt", item.card),
                Some(&at("card")),
            )
        })?;
        let shows: Value = serde_json::from_slice(&card.record.response).unwrap_or_default();
        let recommendation_id = card.record.subject_id.clone().unwrap_or_default();
        let kind = shows
            .get("card")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !["plan", "check", "alert"].contains(&kind) {
            return Err(outcome(
                StatusCode::BAD_REQUEST,
                "value",
                &format!("{:?} is not a card's uuid", item.card),
                Some(&at("card")),
            ));
        }
        let (outcome_code, reason) = match item.outcome.as_str() {
            "accepted" => {
                let mut alternative: Option<String> = None;
                for (position, accepted) in item.accepted_suggestions.iter().enumerate() {
                    let suggestion = issued_card(front, &accepted.id)
                        .await?
                        .filter(|s| s.record.subject_id.as_deref() == Some(&recommendation_id))
                        .ok_or_else(|| {
                            outcome(
                                StatusCode::BAD_REQUEST,
                                "value",
                                &format!("{:?} is not a suggestion of this card", accepted.id),
                                Some(&at(&format!("acceptedSuggestions[{position}].id"))),
                            )
                        })?;
                    let shown: Value =
                        serde_json::from_slice(&suggestion.record.response).unwrap_or_default();
                    if shown.get("card").and_then(Value::as_str) != Some("suggestion") {
                        return Err(outcome(
                            StatusCode::BAD_REQUEST,
                            "value",
                            &format!("{:?} is not a suggestion of this card", accepted.id),
                            Some(&at(&format!("acceptedSuggestions[{position}].id"))),
                        ));
                    }
                    if shown.get("preferred").and_then(Value::as_bool) != Some(true) {
                        alternative = Some(
                            shown
                                .get("label")
                                .and_then(Value::as_str)
                                .unwrap_or("an alternative option")
                                .to_string(),
                        );
                    }
                }
                match alternative {
                    Some(label) => (
                        pb::FeedbackOutcome::Modified,
                        format!("accepted alternative option: {label}"),
                    ),
                    None => (
                        pb::FeedbackOutcome::Accepted,
                        String::from("accepted in the EHR"),
                    ),
                }
            }
            "overridden" => {
                let reason = match &item.override_reason {
                    Some(OverrideReason {
                        reason: Some(coding),
                        user_comment,
                    }) => {
                        let code = coding.code.clone().unwrap_or_default();
                        let display = coding
                            .display
                            .clone()
                            .or_else(|| cards::override_display(&code))
                            .unwrap_or_else(|| code.clone());
                        match user_comment {
                            Some(comment) => format!("{display} ({code}) — {comment}"),
                            None => format!("{display} ({code})"),
                        }
                    }
                    Some(OverrideReason {
                        reason: None,
                        user_comment: Some(comment),
                    }) => format!("overridden in the EHR — {comment}"),
                    _ => String::from("overridden in the EHR, no reason given"),
                };
                (pb::FeedbackOutcome::Overridden, reason)
            }
            other => {
                return Err(outcome(
                    StatusCode::BAD_REQUEST,
                    "value",
                    &format!("outcome {other:?} is neither accepted nor overridden"),
                    Some(&at("outcome")),
                ));
            }
        };
        // Checked here, as RecordFeedback would, so that a refused item leaves nothing recorded.
        let recorded_reason = format!("{reason} at {}", item.outcome_timestamp);
        if let Some(problem) = crate::core::violation::free_text_problem(
            &recorded_reason,
            crate::server::MAX_FEEDBACK_REASON_CHARS,
        ) {
            return Err(outcome(
                StatusCode::BAD_REQUEST,
                "value",
                &format!("the reason this feedback would record {problem}"),
                Some(&at("overrideReason")),
            ));
        }
        if kind == "alert" {
            // The contract has no per-alert feedback: it is kept in the audit trail as a record
            // of its own beside the card's (never as feedback on the whole plan).
            let alert = shows
                .get("alertCode")
                .and_then(Value::as_str)
                .unwrap_or_default();
            alert_feedback.push((
                recommendation_id,
                card.record.case_id.clone(),
                crate::server::CardLink {
                    card_uuid: format!(
                        "{}/feedback/{}",
                        item.card,
                        crate::server::new_recommendation_id()
                    ),
                    shows: json!({
                        "card": "alert-feedback",
                        "alertCode": alert,
                        "outcome": item.outcome,
                        "reason": reason,
                        "at": item.outcome_timestamp,
                    }),
                },
            ));
            continue;
        }
        requests.push(pb::RecordFeedbackRequest {
            recommendation_id,
            outcome: outcome_code as i32,
            reason: recorded_reason,
        });
    }
    let count = parsed.feedback.len();
    for (recommendation_id, case_id, link) in alert_feedback {
        front
            .service
            .record_cards(
                &caller,
                &recommendation_id,
                &case_id,
                &json!({"feedbackOn": "alert card"}),
                std::slice::from_ref(&link),
            )
            .await
            .map_err(unavailable)?;
    }
    for request in requests {
        front
            .service
            .feedback_in_process(request, &caller)
            .await
            .map_err(|status| {
                if status.code() == tonic::Code::InvalidArgument {
                    outcome(StatusCode::BAD_REQUEST, "value", status.message(), None)
                } else {
                    unavailable(status)
                }
            })?;
    }
    Ok(count)
}

async fn fhir_recommend(
    State(front): State<Arc<Front>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (status, result, mut response) = match answer_fhir_recommend(&front, &headers, body).await {
        Ok((result, response)) => (StatusCode::OK, result, response),
        Err(refusal) => (refusal.status, "refused", refusal.into_response()),
    };
    front.count("fhir-recommend", status, result);
    front.cors(&headers, &mut response);
    response
}

/// `POST /fhir/$recommend`: the patient-view request body, answered as the FHIR R4 Bundle form
/// (§3.5). Missing facts give the Bundle with a `data-required` GuidanceResponse; conflicts, a
/// case the guideline refuses, and a patient outside scope give a 422 OperationOutcome.
async fn answer_fhir_recommend(
    front: &Front,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(&'static str, Response), Refusal> {
    let client = front.authenticate(headers, "/fhir/$recommend")?;
    let body = read_body(front, body).await?;
    let request = parse_body(front, &body)?;
    let request = HookRequest::read(&request, &["patient-view"])?;
    let evaluation_date = front.evaluation_date(request.raw, client.as_ref())?;
    let caller = caller_name(client.as_ref());
    let mapped = front.map_chart(&request, evaluation_date).await?;
    let unprocessable =
        |text: String| outcome(StatusCode::UNPROCESSABLE_ENTITY, "processing", &text, None);
    let naming = codex::Naming {
        site: front.site.base.clone(),
    };
    let evaluated_at = jiff::Timestamp::now().to_string();
    let mapped = match mapped {
        Outcome::OutOfScope => {
            return Err(unprocessable(
                "no confirmed, active leiomyosarcoma (ICD-O-3 8890/3) primary: vlms-rt has no decision support for this patient".into(),
            ));
        }
        Outcome::Minor { age, .. } => {
            return Err(unprocessable(format!(
                "the patient is {age} years old: the guideline covers adults only"
            )));
        }
        Outcome::Gaps {
            missing,
            conflicts,
            used,
            primary_id,
        } => {
            if !conflicts.is_empty() {
                let text = conflicts
                    .iter()
                    .map(|gap| {
                        format!("{}: {} ({})", gap.field, gap.detail, gap.sources.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(unprocessable(format!(
                    "the record contradicts itself, so no recommendation was made: {text}"
                )));
            }
            let subject = codex::Subject {
                patient_id: request.patient_id.to_string(),
                condition_id: primary_id.unwrap_or_default(),
                user_id: request.user_id.map(str::to_string),
                encounter_id: request.encounter_id.map(str::to_string),
                fhir_server: request.fhir_server.map(str::to_string),
                tumour_site: Default::default(),
            };
            let required: Vec<(String, String)> = missing
                .iter()
                .map(|gap| (gap.field.to_string(), gap.detail.clone()))
                .collect();
            let sources: Vec<String> = used.iter().map(|u| u.source.clone()).collect();
            let bundle = codex::bundle(
                None,
                &naming,
                &subject,
                request.hook_instance,
                &evaluated_at,
                &sources,
                Some(&required),
                &mut codex::RandomIds,
            );
            return Ok(("data-required", fhir_response(&bundle)));
        }
        Outcome::Case(mapped) => mapped,
    };
    let plan = match front
        .service
        .recommend_in_process(mapped.case.clone(), &caller)
        .await
    {
        Ok(plan) => plan,
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            use tonic_types::StatusExt;
            let problems = status
                .get_details_bad_request()
                .map(|bad| {
                    bad.field_violations
                        .into_iter()
                        .map(|v| format!("{}: {}", v.field, v.description))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|| status.message().to_string());
            return Err(unprocessable(format!(
                "the record maps to a case the guideline cannot evaluate: {problems}"
            )));
        }
        Err(status) => return Err(cannot_answer_now(&status)),
    };
    let subject = front.subject(&request, &mapped);
    let sources: Vec<String> = mapped.used.iter().map(|u| u.source.clone()).collect();
    let bundle = codex::bundle(
        Some(&plan),
        &naming,
        &subject,
        request.hook_instance,
        &evaluated_at,
        &sources,
        None,
        &mut codex::RandomIds,
    );
    Ok(("plan", fhir_response(&bundle)))
}

fn fhir_response(body: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_is_rfc4648_lowercase() {
        assert_eq!(base32_lower(b"f"), "my");
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }
}
