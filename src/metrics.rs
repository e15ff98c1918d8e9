//! Prometheus metrics (the `prometheus` crate renders the exposition format), served on a separate
//! plain HTTP port when `--metrics-listen` is set: calls by RPC and status code, latency, calls in
//! flight, shed calls and plans by indication; with the audit trail on, its committer's batches,
//! records, failed batches, queued bytes and commit times.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// The RPCs whose series are resolved once and kept (see [`Resolved`]); any other name is looked
/// up by label each time.
const RPCS: [&str; 7] = [
    "Recommend",
    "RecommendStream",
    "CheckPrescription",
    "GetGuideline",
    "GetRecommendation",
    "ListRecommendations",
    "RecordFeedback",
];

/// The `rpc` label for a method name taken from a request path: the name itself for one of the
/// service's RPCs, `unknown` for anything else (a client cannot add label values).
pub fn rpc_label(method: &str) -> &'static str {
    RPCS.iter()
        .find(|name| **name == method)
        .copied()
        .unwrap_or("unknown")
}

/// gRPC status codes (0 to 16).
const CODES: usize = 17;

/// Series already looked up, by RPC (position in [`RPCS`]) and status code, and plans by
/// indication (its proto number): `with_label_values` hashes the labels, takes a lock and
/// searches a map on every call, three times per `Recommend`. A series is created on its first
/// use, exactly as `with_label_values` creates it, so the exposition is unchanged.
#[derive(Debug, Default)]
struct Resolved {
    calls: [[OnceLock<IntCounter>; CODES]; RPCS.len()],
    latency: [OnceLock<Histogram>; RPCS.len()],
    plans: [OnceLock<IntCounter>; 8],
}

/// The service's metrics, each in its own registry so several servers can live in one process.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
    shed: IntCounterVec,
    plans: IntCounterVec,
    token_reloads: IntCounterVec,
    tokens: IntGauge,
    refused_handshakes: IntCounter,
    silent_connections: IntCounter,
    cds_requests: IntCounterVec,
    resolved: Arc<Resolved>,
    audit: Option<AuditGauges>,
}

/// The audit writer's figures, read from its [`crate::audit::WriterStats`] when the metrics are
/// rendered (its commit-time histogram it observes itself).
#[derive(Debug, Clone)]
struct AuditGauges {
    stats: Arc<crate::audit::WriterStats>,
    batches: IntGauge,
    records: IntGauge,
    largest: IntGauge,
    failed: IntGauge,
    queued_bytes: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric; with `audit`, also the audit writer's batch figures.
    pub fn new(
        audit: Option<Arc<crate::audit::WriterStats>>,
    ) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let calls = IntCounterVec::new(
            Opts::new(
                "vlms_rt_calls_total",
                "Completed calls by RPC and gRPC status code.",
            ),
            &["rpc", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "vlms_rt_call_duration_seconds",
                "Call latency by RPC, from admission to the last response.",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.5, 1.0, 5.0,
            ]),
            &["rpc"],
        )?;
        let in_flight = IntGauge::new(
            "vlms_rt_in_flight_calls",
            "Calls admitted and not yet finished.",
        )?;
        let shed = IntCounterVec::new(
            Opts::new(
                "vlms_rt_shed_calls_total",
                "Calls refused with RESOURCE_EXHAUSTED because the concurrency limit was reached.",
            ),
            &["rpc"],
        )?;
        let plans = IntCounterVec::new(
            Opts::new(
                "vlms_rt_plans_total",
                "Plans made, by indication (a plan withheld because the audit store failed included).",
            ),
            &["indication"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(plans.clone()))?;
        let cds_requests = IntCounterVec::new(
            Opts::new(
                "vlms_rt_cds_hooks_requests_total",
                "CDS Hooks port requests by service, HTTP status and outcome (plan, data-required, conflict, minor, no-card, discovery, refused).",
            ),
            &["service", "status", "outcome"],
        )?;
        registry.register(Box::new(cds_requests.clone()))?;
        let token_reloads = IntCounterVec::new(
            Opts::new(
                "vlms_rt_token_reloads_total",
                "Token-file reloads (SIGHUP) by result: ok, or failed (the tokens in force stay).",
            ),
            &["result"],
        )?;
        let tokens = IntGauge::new(
            "vlms_rt_auth_tokens",
            "Bearer tokens in force (0 with a token file that holds none: every call refused).",
        )?;
        let refused_handshakes = IntCounter::new(
            "vlms_rt_tls_handshakes_refused_total",
            "TLS handshakes that failed (a bad or missing client certificate, not TLS at all) or \
             did not finish within --handshake-timeout; the connection was closed.",
        )?;
        let silent_connections = IntCounter::new(
            "vlms_rt_silent_connections_closed_total",
            "Connections closed because no HTTP/2 preface arrived within --handshake-timeout.",
        )?;
        registry.register(Box::new(refused_handshakes.clone()))?;
        registry.register(Box::new(silent_connections.clone()))?;
        registry.register(Box::new(token_reloads.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        let audit = match audit {
            Some(stats) => {
                let batches = IntGauge::new(
                    "vlms_rt_audit_batches",
                    "Audit transactions committed (one fsync each).",
                )?;
                let records = IntGauge::new("vlms_rt_audit_records", "Audit records committed.")?;
                let largest = IntGauge::new(
                    "vlms_rt_audit_largest_batch",
                    "Most records committed in one transaction.",
                )?;
                let failed = IntGauge::new(
                    "vlms_rt_audit_failed_batches",
                    "Batches of audit records whose transaction failed; their calls were answered \
                     UNAVAILABLE.",
                )?;
                let queued_bytes = IntGauge::new(
                    "vlms_rt_audit_queued_bytes",
                    "Bytes of audit records waiting for their commit; past the queue's byte \
                     limit calls fail UNAVAILABLE at once.",
                )?;
                let commit_seconds = Histogram::with_opts(
                    HistogramOpts::new(
                        "vlms_rt_audit_commit_seconds",
                        "Time to write and commit one batch of audit records, fsync included \
                         (failed batches too).",
                    )
                    .buckets(vec![
                        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
                )?;
                for gauge in [&batches, &records, &largest, &failed, &queued_bytes] {
                    registry.register(Box::new(gauge.clone()))?;
                }
                registry.register(Box::new(commit_seconds.clone()))?;
                // A writer is reported to by the first metrics made over it.
                let _ = stats.commit_seconds.set(commit_seconds);
                Some(AuditGauges {
                    stats,
                    batches,
                    records,
                    largest,
                    failed,
                    queued_bytes,
                })
            }
            None => None,
        };
        Ok(Metrics {
            audit,
            registry,
            calls,
            latency,
            in_flight,
            shed,
            plans,
            token_reloads,
            tokens,
            refused_handshakes,
            silent_connections,
            cds_requests,
            resolved: Arc::default(),
        })
    }

    /// The outcome of a token-file reload, and the tokens in force after it.
    pub fn token_reload(&self, succeeded: bool, tokens_in_force: usize) {
        self.token_reloads
            .with_label_values(&[if succeeded { "ok" } else { "failed" }])
            .inc();
        self.set_tokens(tokens_in_force);
    }

    /// The counters of the accept loop.
    pub fn accept_counters(&self) -> crate::accept::Counters {
        crate::accept::Counters {
            refused_handshakes: self.refused_handshakes.clone(),
            silent_connections: self.silent_connections.clone(),
        }
    }

    /// The number of bearer tokens in force.
    pub fn set_tokens(&self, tokens_in_force: usize) {
        self.tokens
            .set(i64::try_from(tokens_in_force).unwrap_or(i64::MAX));
    }

    /// Records a finished call.
    pub fn call(&self, rpc: &str, code: tonic::Code, seconds: f64) {
        let code_index = usize::try_from(i32::from(code)).unwrap_or(CODES);
        match RPCS.iter().position(|name| *name == rpc) {
            Some(index) if code_index < CODES => {
                self.resolved.calls[index][code_index]
                    .get_or_init(|| self.calls.with_label_values(&[rpc, code_name(code)]))
                    .inc();
                self.resolved.latency[index]
                    .get_or_init(|| self.latency.with_label_values(&[rpc]))
                    .observe(seconds);
            }
            _ => {
                self.calls.with_label_values(&[rpc, code_name(code)]).inc();
                self.latency.with_label_values(&[rpc]).observe(seconds);
            }
        }
    }

    /// Records a shed call.
    pub fn shed(&self, rpc: &str) {
        self.shed.with_label_values(&[rpc]).inc();
        self.calls
            .with_label_values(&[rpc, code_name(tonic::Code::ResourceExhausted)])
            .inc();
    }

    /// The CDS Hooks port's request counter (labels: service, status, outcome).
    pub fn cds_requests(&self) -> IntCounterVec {
        self.cds_requests.clone()
    }

    /// Records a plan made, by its `vlms.rt.v1.Indication` number (before its audit write).
    pub fn plan(&self, indication: i32) {
        let label = || {
            crate::pb::Indication::try_from(indication)
                .map_or("UNKNOWN", |indication| indication.as_str_name())
        };
        match usize::try_from(indication)
            .ok()
            .and_then(|index| self.resolved.plans.get(index))
        {
            Some(resolved) => resolved
                .get_or_init(|| self.plans.with_label_values(&[label()]))
                .inc(),
            None => self.plans.with_label_values(&[label()]).inc(),
        }
    }

    /// The in-flight gauge.
    pub fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        if let Some(audit) = &self.audit {
            use std::sync::atomic::Ordering;
            let stats = &audit.stats;
            let read = |value: &std::sync::atomic::AtomicU64| {
                i64::try_from(value.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
            };
            audit.batches.set(read(&stats.batches));
            audit.records.set(read(&stats.records));
            audit.largest.set(read(&stats.largest_batch));
            audit.failed.set(read(&stats.failed_batches));
            audit
                .queued_bytes
                .set(i64::try_from(stats.queued_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        }
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            return format!("# error encoding metrics: {error}\n");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// A status code as gRPC spells it (`FAILED_PRECONDITION`): the metrics' `code` label, and how
/// the client names a code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Binds `address` and serves `GET /metrics` until `shutdown` completes. Returns the bound address.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "metrics endpoint failed");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_series_are_the_labelled_ones() {
        let metrics = Metrics::new(None).expect("metrics");
        metrics.call("Recommend", tonic::Code::Ok, 0.001);
        metrics.call("Recommend", tonic::Code::Ok, 0.002);
        metrics.shed("Recommend");
        metrics.call("Recommend", tonic::Code::ResourceExhausted, 0.0);
        metrics.call("SomethingElse", tonic::Code::Ok, 0.003);
        metrics.call("SomethingElse", tonic::Code::Ok, 0.003);
        metrics.plan(1);
        metrics.plan(1);
        metrics.plan(4);
        metrics.plan(99);
        metrics.plan(-1);
        let text = metrics.render();
        for line in [
            r#"vlms_rt_calls_total{code="OK",rpc="Recommend"} 2"#,
            r#"vlms_rt_calls_total{code="RESOURCE_EXHAUSTED",rpc="Recommend"} 2"#,
            r#"vlms_rt_calls_total{code="OK",rpc="SomethingElse"} 2"#,
            r#"vlms_rt_call_duration_seconds_count{rpc="Recommend"} 3"#,
            r#"vlms_rt_call_duration_seconds_count{rpc="SomethingElse"} 2"#,
            r#"vlms_rt_plans_total{indication="INDICATION_INDICATED"} 2"#,
            r#"vlms_rt_plans_total{indication="INDICATION_NOT_INDICATED"} 1"#,
            r#"vlms_rt_plans_total{indication="UNKNOWN"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // No series appears before its first use.
        assert!(!text.contains("INDICATION_MANDATORY"), "{text}");
        assert!(!text.contains(r#"rpc="CheckPrescription""#), "{text}");
    }
}
