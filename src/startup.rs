//! Bind, then serve. The server binary and every test start the service through [`start`], so
//! tests run the real server: the same routes, authentication, limits, health, reflection, metrics
//! and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{Authenticator, TokenStore};
use crate::core::Profile;
use crate::framing::CheckFrames;
use crate::metrics::Metrics;
use crate::never_internal::NeverInternal;
use crate::pb;
use crate::pb::server::recommendation_service_server::RecommendationServiceServer;
use crate::server::{Limiter, Service, ServiceOptions};

/// The name health reports for the recommendation service.
pub const SERVICE_NAME: &str = "vlms.rt.v1.RecommendationService";
/// The health-check name a liveness probe asks for: SERVING while the process answers at all. The
/// service name and the empty name follow readiness (NOT_SERVING while draining or while the audit
/// store cannot commit).
pub const LIVENESS_SERVICE_NAME: &str = "liveness";

/// Limits that keep one caller from hurting the others.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest decoded request message; a `RecommendStream` item counts alone.
    pub max_request_bytes: usize,
    /// Most items one `RecommendStream` call may send.
    pub max_stream_items: u64,
    /// Server-side limit of a unary call (a shorter client deadline wins), and the longest wait for
    /// the next item of a stream.
    pub call_timeout: Duration,
    /// Calls admitted at once across the process; beyond it calls are shed with RESOURCE_EXHAUSTED.
    pub max_concurrent_calls: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams_per_connection: u32,
    /// Calls in flight for one caller (an authenticated caller, or one client IP without
    /// authentication); `None`: half of `max_concurrent_calls` (at least one).
    pub max_calls_per_caller: Option<usize>,
    /// How long a new connection may take to finish its TLS handshake, and then to send the
    /// HTTP/2 preface, before it is closed (see `accept`).
    pub handshake_timeout: Duration,
    /// Open `grpc.health.v1.Health/Watch` streams across the process (see `health_gate`).
    pub max_health_watches: usize,
    /// HTTP/2 keepalive ping interval and the time to wait for its answer.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Connections are closed gracefully after this age so clients rebalance across replicas.
    pub max_connection_age: Duration,
    /// How long in-flight calls may run after a shutdown signal, or after their connection
    /// reached `max_connection_age` (the connection is then closed).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 64 * 1024,
            max_stream_items: 10_000,
            call_timeout: Duration::from_secs(5),
            max_concurrent_calls: 256,
            max_concurrent_streams_per_connection: 128,
            max_health_watches: 64,
            handshake_timeout: Duration::from_secs(10),
            max_calls_per_caller: None,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// PEM material for TLS; with `client_ca_pem`, only clients with a certificate signed by that CA
/// get in (mutual TLS).
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub profile: Arc<Profile>,
    pub tls: Option<TlsMaterial>,
    pub tokens: Option<Arc<TokenStore>>,
    pub limits: Limits,
    pub metrics_listen: Option<SocketAddr>,
    /// The audit trail; `None` disables auditing.
    pub audit: Option<crate::audit::Auditor>,
    /// A plaintext port serving only `grpc.health.v1.Health`, for probes that speak no TLS (the
    /// main port may require mutual TLS).
    pub health_listen: Option<SocketAddr>,
    /// The CDS Hooks / FHIR port (`crate::cds`), with the gRPC port's TLS settings.
    pub cds_hooks: Option<crate::cds::CdsSettings>,
}

impl Settings {
    /// Defaults around a profile: no TLS, no tokens, default limits, no metrics.
    pub fn new(listen: SocketAddr, profile: Arc<Profile>) -> Settings {
        Settings {
            listen,
            profile,
            tls: None,
            tokens: None,
            limits: Limits::default(),
            metrics_listen: None,
            audit: None,
            health_listen: None,
            cds_hooks: None,
        }
    }
}

/// Errors while starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Reflection could not be built from the descriptor set.
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS material was refused.
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    /// The metrics registry or endpoint failed.
    #[error("cannot start metrics: {0}")]
    Metrics(String),
    /// The CDS Hooks port's settings were refused.
    #[error("CDS Hooks port: {0}")]
    CdsHooks(String),
}

/// A server running in the background.
#[derive(Debug)]
pub struct RunningServer {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// The metrics endpoint's address, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    health: HealthReporter,
    /// Set at shutdown; the audit-health follower ends on it (and with it its hold on the audit
    /// store, whose SQLite lock is then released).
    stopping: tokio::sync::watch::Sender<bool>,
    tokens: Option<Arc<TokenStore>>,
    metrics: Arc<Metrics>,
    grace: Duration,
    shutdown: Option<oneshot::Sender<()>>,
    metrics_shutdown: Option<oneshot::Sender<()>>,
    /// The plaintext health port's address, when enabled.
    pub health_addr: Option<SocketAddr>,
    health_shutdown: Option<oneshot::Sender<()>>,
    /// The CDS Hooks port, when enabled.
    pub cds_hooks: Option<crate::cds::RunningFront>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every in-flight call finished within the grace period.
    Complete,
    /// The grace period ran out; remaining calls were cut.
    GraceExpired,
}

impl RunningServer {
    /// Re-reads the CDS Hooks issuers file (`None` without one); the issuers in force stay on error.
    pub fn reload_cds_issuers(&self) -> Option<Result<usize, crate::cds::jwt::IssuersFileError>> {
        self.cds_hooks
            .as_ref()
            .and_then(crate::cds::RunningFront::reload_issuers)
    }

    /// Re-reads the token file (no-op without one). The tokens in force stay on error; a file
    /// with no token revokes them all. The outcome is counted in the metrics.
    pub fn reload_tokens(&self) -> Result<Option<usize>, crate::auth::TokenFileError> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let result = tokens.reload();
        self.metrics.token_reload(result.is_ok(), tokens.len());
        result.map(Some)
    }

    /// Graceful shutdown: health flips to NOT_SERVING, new calls are refused, in-flight calls
    /// finish within the grace period, then the server ends.
    pub async fn shutdown(mut self) -> Result<Drain, anyhow::Error> {
        self.stopping.send_replace(true);
        self.health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(front) = &self.cds_hooks {
            front.stop();
        }
        let drain = match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(joined) => {
                joined??;
                Drain::Complete
            }
            Err(_) => {
                self.task.abort();
                Drain::GraceExpired
            }
        };
        if let Some(sender) = self.metrics_shutdown.take() {
            let _ = sender.send(());
        }
        // The health port goes last, so probes see NOT_SERVING during the drain.
        if let Some(sender) = self.health_shutdown.take() {
            let _ = sender.send(());
        }
        Ok(drain)
    }

    /// Waits until the server ends by itself (it does not, short of an error).
    pub async fn wait(&mut self) -> Result<(), anyhow::Error> {
        (&mut self.task).await??;
        Ok(())
    }
}

/// Binds the listener.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind { address, source })
}

/// Binds `settings.listen` (and the metrics port) and starts serving in the background.
pub async fn start(settings: Settings) -> Result<RunningServer, StartError> {
    let listener = bind(settings.listen).await?;
    start_on(listener, settings).await
}

/// Starts serving on a listener already bound to `settings.listen` (so that a busy port is
/// found before anything else, the audit store included, is touched).
pub async fn start_on(
    listener: TcpListener,
    settings: Settings,
) -> Result<RunningServer, StartError> {
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        address: settings.listen,
        source,
    })?;
    if !local_addr.ip().is_loopback() && settings.tls.is_none() {
        tracing::warn!(listen = %local_addr, "listening on a non-loopback address without TLS: calls and case data travel in plaintext");
    }
    let metrics = Arc::new(
        Metrics::new(settings.audit.as_ref().map(crate::audit::Auditor::stats))
            .map_err(|error| StartError::Metrics(error.to_string()))?,
    );
    let (metrics_addr, metrics_shutdown) = match settings.metrics_listen {
        Some(address) => {
            let (sender, receiver) = oneshot::channel::<()>();
            let bound = crate::metrics::serve(address, Arc::clone(&metrics), async {
                let _ = receiver.await;
            })
            .await
            .map_err(|error| StartError::Metrics(format!("cannot listen on {address}: {error}")))?;
            (Some(bound), Some(sender))
        }
        None => (None, None),
    };

    if let Some(tokens) = &settings.tokens {
        metrics.set_tokens(tokens.len());
    }
    let limits = settings.limits.clone();
    let service = Service::new(
        Arc::clone(&settings.profile),
        ServiceOptions {
            metrics: Arc::clone(&metrics),
            limiter: Arc::new(Limiter::new(
                limits.max_concurrent_calls,
                limits
                    .max_calls_per_caller
                    .unwrap_or(limits.max_concurrent_calls / 2),
                &metrics,
            )),
            max_stream_items: limits.max_stream_items,
            stream_idle_timeout: limits.call_timeout,
            audit: settings.audit.clone(),
            audit_wait: audit_wait(limits.call_timeout),
        },
    );
    let cds_hooks = match settings.cds_hooks.clone() {
        Some(cds) => Some(
            start_cds_hooks(
                cds,
                service.clone(),
                settings.tls.as_ref(),
                &metrics,
                &limits,
            )
            .await?,
        ),
        None => None,
    };
    let recommendation = CheckFrames(
        RecommendationServiceServer::new(service)
            .max_decoding_message_size(limits.max_request_bytes),
    );
    // Outside in: refusals before the handlers counted and mapped, then the token check.
    let recommendation = crate::codec::ClientFault::new(
        crate::auth::Authenticate::new(recommendation, Authenticator::new(settings.tokens.clone())),
        Arc::clone(&metrics),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    health.set_service_status("", ServingStatus::Serving).await;
    // Liveness: SERVING as long as the process answers, whatever the audit store does (a liveness
    // probe on the other names would restart every replica during a database outage).
    health
        .set_service_status(LIVENESS_SERVICE_NAME, ServingStatus::Serving)
        .await;
    // Check stays open for probes; Watch streams need a token (with a token file) and a place.
    let watch_places = Arc::new(tokio::sync::Semaphore::new(limits.max_health_watches));
    // Health and reflection keep the service's request limit and its "never INTERNAL" promise.
    let health_service = NeverInternal(crate::health_gate::HealthGate::new(
        CheckFrames(health_service.max_decoding_message_size(limits.max_request_bytes)),
        Authenticator::new(settings.tokens.clone()),
        Arc::clone(&watch_places),
        limits.max_health_watches,
    ));
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    if let Some(audit) = settings.audit.clone() {
        tokio::spawn(follow_audit_health(audit, health.clone(), stopped));
    }

    // Reflection in both versions clients ask for, over the same descriptors.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()?
        .max_decoding_message_size(limits.max_request_bytes);
    let reflection_v1 = NeverInternal(CheckFrames(reflection_v1));
    let reflection_v1alpha = reflection()
        .build_v1alpha()?
        .max_decoding_message_size(limits.max_request_bytes);
    let reflection_v1alpha = NeverInternal(CheckFrames(reflection_v1alpha));

    let builder = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams_per_connection)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_connection_age(limits.max_connection_age)
        // A connection past its age gets the shutdown grace to finish its calls, then is closed.
        // Without it a stream whose client stopped reading its answers (HTTP/2 flow control then
        // stops the server reading the client's items too, so no idle timer runs) held its
        // connection and its admission for as long as the client kept the connection open.
        .max_connection_age_grace(limits.shutdown_grace);
    // TLS is done by the accept loop (`accept`), which bounds and counts handshakes.
    let tls_config = match &settings.tls {
        Some(tls) => Some(crate::accept::server_config(tls).map_err(StartError::Tls)?),
        None => None,
    };
    let (health_addr, health_shutdown) = match settings.health_listen {
        Some(address) => {
            let health_listener = bind(address).await?;
            let bound = health_listener
                .local_addr()
                .map_err(|source| StartError::Bind { address, source })?;
            let (sender, receiver) = oneshot::channel::<()>();
            let health_only = Server::builder().add_service(health_service.clone());
            tokio::spawn(health_only.serve_with_incoming_shutdown(
                crate::accept::plain(
                    health_listener,
                    limits.handshake_timeout,
                    metrics.accept_counters(),
                ),
                async {
                    let _ = receiver.await;
                },
            ));
            (Some(bound), Some(sender))
        }
        None => (None, None),
    };
    // The call timeout, armed only for calls that wait (see `deadline`), in place of tonic's.
    let router = builder
        .layer(crate::deadline::CallTimeoutLayer::new(limits.call_timeout))
        .layer(crate::client_deadline::ClientDeadlineLayer::new(
            Arc::clone(&metrics),
        ))
        .add_service(recommendation)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let (sender, receiver) = oneshot::channel::<()>();
    // TCP_NODELAY is set on every accepted socket: without it, small gRPC frames wait on Nagle and
    // delayed ACKs.
    let shutdown = async {
        let _ = receiver.await;
    };
    let counters = metrics.accept_counters();
    let task = match tls_config {
        Some(config) => tokio::spawn(router.serve_with_incoming_shutdown(
            crate::accept::tls(listener, config, limits.handshake_timeout, counters),
            shutdown,
        )),
        None => tokio::spawn(router.serve_with_incoming_shutdown(
            crate::accept::plain(listener, limits.handshake_timeout, counters),
            shutdown,
        )),
    };
    Ok(RunningServer {
        local_addr,
        metrics_addr,
        health,
        stopping,
        tokens: settings.tokens,
        metrics,
        grace: limits.shutdown_grace,
        shutdown: Some(sender),
        metrics_shutdown,
        health_addr,
        health_shutdown,
        cds_hooks,
        task,
    })
}

/// Binds and starts the CDS Hooks port. Refused on a non-loopback address without trusted
/// issuers: an EHR front must authenticate its clients.
async fn start_cds_hooks(
    cds: crate::cds::CdsSettings,
    service: Service,
    tls: Option<&TlsMaterial>,
    metrics: &Metrics,
    limits: &Limits,
) -> Result<crate::cds::RunningFront, StartError> {
    if !cds.listen.ip().is_loopback() && cds.issuers.is_none() {
        return Err(StartError::CdsHooks(format!(
            "{} is not a loopback address: give --cds-hooks-issuers (the trusted JWT issuers)",
            cds.listen
        )));
    }
    let listener = bind(cds.listen).await?;
    let tls = match tls {
        Some(tls) => Some(crate::accept::server_config(tls).map_err(StartError::Tls)?),
        None => None,
    };
    let address = cds.listen;
    crate::cds::start(
        listener,
        cds,
        service,
        tls,
        metrics,
        limits.handshake_timeout,
    )
    .await
    .map_err(|source| StartError::Bind { address, source })
}

/// How long a call waits for its audit record to commit: four fifths of the call timeout, so that a
/// stalled store fails the call UNAVAILABLE (logged, counted) before tonic cuts it off.
fn audit_wait(call_timeout: Duration) -> Duration {
    call_timeout.mul_f64(0.8)
}

/// Keeps health in step with the audit store: NOT_SERVING while it cannot commit (calls then fail
/// closed with UNAVAILABLE), probing it until it can, then SERVING again. Ends when the server
/// stops.
async fn follow_audit_health(
    audit: crate::audit::Auditor,
    health: HealthReporter,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut healthy = audit.health();
    let stopped = |stopping: &tokio::sync::watch::Receiver<bool>| *stopping.borrow();
    loop {
        tokio::select! {
            changed = healthy.changed() => if changed.is_err() {
                return;
            },
            _ = stopping.wait_for(|stopped| *stopped) => return,
        }
        let writable = *healthy.borrow_and_update();
        if stopped(&stopping) {
            return;
        }
        if writable {
            tracing::info!("audit store writable again: SERVING");
            health
                .set_service_status(SERVICE_NAME, ServingStatus::Serving)
                .await;
            health.set_service_status("", ServingStatus::Serving).await;
            continue;
        }
        tracing::error!("audit store cannot commit: NOT_SERVING until it can");
        health
            .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // Probe until a write commits; the probe's result reaches `healthy` and the loop above.
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stopped(&stopping) {
                return;
            }
            if audit.probe().await.is_ok() {
                break;
            }
        }
    }
}
