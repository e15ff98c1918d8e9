//! The server binary: load the guideline profile and settings, bind, serve; SIGHUP reloads the
//! token file, SIGTERM or SIGINT shut down gracefully.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use vlms_rt::auth::TokenStore;
use vlms_rt::config::ServerConfig;
use vlms_rt::startup::{Drain, Limits, Settings, TlsMaterial};
use vlms_rt::{guideline, startup, telemetry};

// mimalloc: the system allocator's arena locks showed up under load
// (docs/perf/decisions/002-mimalloc.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read {what} {}: {error}", path.display()))
}

/// The TLS files, read and checked (each file what it should be, the key the certificate's); a
/// certificate outside its validity period is logged, not refused.
fn tls_material(config: &ServerConfig) -> Result<Option<TlsMaterial>, String> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let material = TlsMaterial {
        cert_pem: read(cert, "TLS certificate")?,
        key_pem: read(key, "TLS key")?,
        client_ca_pem: config
            .tls_client_ca
            .as_deref()
            .map(|path| read(path, "client CA"))
            .transpose()?,
    };
    let validity = vlms_rt::tls::check(
        (cert, &material.cert_pem),
        (key, &material.key_pem),
        config
            .tls_client_ca
            .as_deref()
            .zip(material.client_ca_pem.as_deref()),
    )?;
    let now = std::time::SystemTime::now();
    match validity.problem_at(now) {
        Some(problem) => tracing::warn!(
            certificate = %cert.display(),
            not_before = %time::OffsetDateTime::from(validity.not_before),
            not_after = %time::OffsetDateTime::from(validity.not_after),
            "the server's TLS certificate {problem}: clients that check it will refuse every connection"
        ),
        None => tracing::info!(
            certificate = %cert.display(),
            days_left = vlms_rt::tls::days_between(now, validity.not_after),
            "TLS certificate checked"
        ),
    }
    Ok(Some(material))
}

/// Everything but the audit trail, checked before anything is bound or opened: a broken input
/// stops start-up (exit 2) having touched nothing.
fn settings(config: &ServerConfig) -> Result<Settings, String> {
    let profile = match &config.guideline {
        Some(path) => guideline::from_path(path),
        None => guideline::embedded(),
    }
    .map_err(|error| error.to_string())?;
    let tls = tls_material(config)?;
    let tokens = config
        .auth_tokens
        .as_deref()
        .map(TokenStore::load)
        .transpose()
        .map_err(|error| error.to_string())?
        .map(Arc::new);
    Ok(Settings {
        listen: config.listen,
        profile: Arc::new(profile),
        tls,
        tokens,
        limits: Limits {
            max_request_bytes: config.max_request_bytes,
            max_stream_items: config.max_stream_items,
            call_timeout: config.call_timeout,
            max_concurrent_calls: config.max_concurrent_calls,
            max_health_watches: config.max_health_watches,
            handshake_timeout: config.handshake_timeout,
            max_calls_per_caller: config.max_calls_per_caller,
            keepalive_interval: config.keepalive_interval,
            max_connection_age: config.max_connection_age,
            shutdown_grace: config.shutdown_grace,
            ..Limits::default()
        },
        metrics_listen: config.metrics_listen,
        audit: None,
        health_listen: config.health_listen,
        cds_hooks: cds_hooks(config)?,
    })
}

/// The CDS Hooks port's settings, its files read and checked.
fn cds_hooks(config: &ServerConfig) -> Result<Option<vlms_rt::cds::CdsSettings>, String> {
    let Some(listen) = config.cds_hooks_listen else {
        return Ok(None);
    };
    let time_zone = jiff::tz::TimeZone::get(&config.facility_time_zone).map_err(|error| {
        format!(
            "--facility-time-zone {:?}: {error}",
            config.facility_time_zone
        )
    })?;
    let issuers = config
        .cds_hooks_issuers
        .as_deref()
        .map(vlms_rt::cds::jwt::Issuers::load)
        .transpose()
        .map_err(|error| error.to_string())?
        .map(Arc::new);
    if !listen.ip().is_loopback() && issuers.is_none() {
        return Err(format!(
            "--cds-hooks-listen {listen} is not a loopback address: give --cds-hooks-issuers (the trusted JWT issuers)"
        ));
    }
    let case_id_key = match &config.cds_hooks_case_id_key {
        Some(path) => {
            let key = read(path, "CDS Hooks case-id key")?;
            if key.len() < 32 {
                return Err(format!(
                    "{}: the case-id key must hold at least 32 bytes",
                    path.display()
                ));
            }
            key
        }
        None => {
            tracing::warn!(
                "no --cds-hooks-case-id-key: CDS Hooks case ids are stable only within this process"
            );
            let mut key = uuid::Uuid::new_v4().as_bytes().to_vec();
            key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            key
        }
    };
    for origin in &config.cds_hooks_cors_origins {
        if !(origin.starts_with("https://") || origin.starts_with("http://"))
            || origin.ends_with('/')
        {
            return Err(format!(
                "--cds-hooks-cors-origins: {origin:?} is not an origin like https://ehr.example.org"
            ));
        }
    }
    Ok(Some(vlms_rt::cds::CdsSettings {
        listen,
        canonical_base: config.cds_hooks_canonical_base.clone(),
        extension_prefix: config.cds_hooks_extension_prefix.clone(),
        time_zone,
        issuers,
        public_url: config.cds_hooks_public_url.clone(),
        case_id_key,
        max_body_bytes: config.cds_hooks_max_body_bytes,
        cors_origins: config.cds_hooks_cors_origins.clone(),
        intake_url: config.cds_hooks_intake_url.clone(),
        fetch: vlms_rt::cds::fetch::FetchPolicy {
            allow_loopback_http: config.cds_hooks_fhir_loopback_http,
            ..vlms_rt::cds::fetch::FetchPolicy::default()
        },
    }))
}

fn read_ca(audit_db_ca: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, String> {
    audit_db_ca
        .map(|path| read(path, "audit database CA"))
        .transpose()
}

fn open_audit(
    audit_db: &str,
    audit_db_ca: Option<&std::path::Path>,
    profile: &vlms_rt::core::Profile,
    queue_limit: usize,
) -> Result<Option<vlms_rt::audit::Auditor>, String> {
    if audit_db == "none" {
        tracing::warn!(
            "AUDITING IS DISABLED (--audit-db none): answers are not recorded and cannot be shown later"
        );
        eprintln!("vlms-rt-server: WARNING: auditing is disabled (--audit-db none)");
        return Ok(None);
    }
    let ca_pem = read_ca(audit_db_ca)?;
    // A relative SQLite path is logged as the file it resolves to.
    let described = match std::path::absolute(audit_db) {
        Ok(path) if !vlms_rt::audit::postgres::is_url(audit_db) => path.display().to_string(),
        _ => vlms_rt::audit::describe(audit_db),
    };
    let dictionary = vlms_rt::audit::dictionary::plan_dictionary(profile);
    let (store, reader) = vlms_rt::audit::open(audit_db, ca_pem.as_deref(), Some(&dictionary))
        .map_err(|error| format!("cannot open the audit database {described}: {error}"))?;
    tracing::info!(audit_db = %described, queue_limit, "audit trail on");
    Ok(Some(vlms_rt::audit::Auditor::start_bounded(
        store,
        reader,
        queue_limit,
        vlms_rt::audit::DEFAULT_QUEUE_BYTES,
    )))
}

/// `tokens check PATH`: what the server would make of a token file.
fn check_tokens(path: &std::path::Path) -> ExitCode {
    match TokenStore::load(path) {
        Ok(tokens) if tokens.is_empty() => {
            println!(
                "{}: no token: every call will be refused (all tokens revoked)",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Ok(tokens) => {
            println!("{}: {} tokens", path.display(), tokens.len());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("vlms-rt-server: {error}");
            ExitCode::from(2)
        }
    }
}

fn verify(audit_db: &str, audit_db_ca: Option<&std::path::Path>) -> ExitCode {
    let described = vlms_rt::audit::describe(audit_db);
    let result = read_ca(audit_db_ca).and_then(|ca_pem| {
        vlms_rt::audit::verify(audit_db, ca_pem.as_deref()).map_err(|error| error.to_string())
    });
    match result {
        Ok(Ok(count)) => {
            println!("audit chain intact: {count} records in {described}");
            ExitCode::SUCCESS
        }
        Ok(Err(broken)) => {
            println!(
                "audit chain BROKEN at record {} (recommendation_id {}): {}",
                broken.seq, broken.recommendation_id, broken.problem
            );
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("vlms-rt-server: {error}");
            ExitCode::from(2)
        }
    }
}

/// The server's tokio runtime: tokio's multi-threaded default (one worker per CPU), with its LIFO
/// slot off when the build allows it (`tokio_unstable`, set in .cargo/config.toml). With the slot,
/// a finished call wakes its connection's task straight after itself, so each answer tends to
/// leave in a write of its own; without it the connection runs after the calls that were ready,
/// and their answers leave together: fewer write calls under load, a little slower for a single
/// caller (docs/perf/decisions/009-tokio-lifo-slot-off.md).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

fn main() -> ExitCode {
    let config = ServerConfig::parse();
    let log_writer = telemetry::init(config.log_format);
    let code = match runtime() {
        Ok(runtime) => {
            let code = runtime.block_on(serve(config));
            // Calls still running when the shutdown grace period ran out (a stream cut off) end
            // as the runtime shuts down, and log their call lines then: the log writer must
            // outlive them, or those last lines are lost. A thread that does not end (an audit
            // commit or probe held by a disk that hangs) is left behind after a few seconds
            // instead of holding the exit: its transaction never committed, and no caller was
            // answered for it.
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            code
        }
        Err(error) => {
            eprintln!("vlms-rt-server: cannot start the async runtime: {error}");
            ExitCode::from(1)
        }
    };
    drop(log_writer);
    code
}

async fn serve(config: ServerConfig) -> ExitCode {
    if let Some(vlms_rt::config::ServerCommand::Audit {
        action:
            vlms_rt::config::AuditAction::Verify {
                audit_db,
                audit_db_ca,
            },
    }) = &config.command
    {
        return verify(audit_db, audit_db_ca.as_deref());
    }
    if let Some(vlms_rt::config::ServerCommand::Tokens {
        action: vlms_rt::config::TokensAction::Check { path },
    }) = &config.command
    {
        return check_tokens(path);
    }

    let refuse = |error: String, code: u8| {
        eprintln!("vlms-rt-server: {error}");
        tracing::error!(%error, "refusing to start");
        ExitCode::from(code)
    };
    let mut settings = match settings(&config) {
        Ok(settings) => settings,
        Err(error) => return refuse(error, 2),
    };
    // The port is bound before the audit store is opened (or migrated): a second start on a
    // busy port changes nothing.
    let listener = match startup::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => return refuse(error.to_string(), 1),
    };
    settings.audit = match open_audit(
        &config.audit_db,
        config.audit_db_ca.as_deref(),
        &settings.profile,
        vlms_rt::server::audit_queue_limit(config.max_concurrent_calls),
    ) {
        Ok(audit) => audit,
        Err(error) => return refuse(error, 2),
    };
    let version = settings.profile.version().to_string();
    let sha256 = settings.profile.sha256().to_string();
    let authenticated = settings.tokens.is_some();
    if settings
        .tokens
        .as_ref()
        .is_some_and(|tokens| tokens.is_empty())
    {
        tracing::warn!(
            "the token file holds no token: every call is refused until one is added and the server reloaded"
        );
    }
    let tls = settings.tls.as_ref().map_or("off", |tls| {
        if tls.client_ca_pem.is_some() {
            "mutual"
        } else {
            "on"
        }
    });
    let server = match startup::start_on(listener, settings).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("vlms-rt-server: {error}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        listen = %server.local_addr,
        metrics = %server.metrics_addr.map_or_else(|| String::from("off"), |addr| addr.to_string()),
        health_port = %server.health_addr.map_or_else(|| String::from("off"), |addr| addr.to_string()),
        cds_hooks = %server.cds_hooks.as_ref().map_or_else(|| String::from("off"), |front| front.local_addr.to_string()),
        tls,
        authenticated,
        guideline_version = %version,
        guideline_sha256 = %sha256,
        "serving vlms.rt.v1.RecommendationService"
    );
    run_until_signalled(server).await
}

#[cfg(unix)]
async fn run_until_signalled(mut server: startup::RunningServer) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("vlms-rt-server: cannot install signal handlers");
        return ExitCode::from(1);
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match server.reload_cds_issuers() {
                    Some(Ok(count)) => tracing::info!(issuers = count, "CDS Hooks issuers file reloaded"),
                    Some(Err(error)) => tracing::error!(%error, "CDS Hooks issuers file reload failed; the previous issuers stay in force"),
                    None => {}
                }
                match server.reload_tokens() {
                Ok(Some(0)) => tracing::warn!(tokens = 0, "token file reloaded: it holds no token, so every call is refused (all tokens revoked)"),
                Ok(Some(count)) => tracing::info!(tokens = count, "token file reloaded"),
                Ok(None) => tracing::info!("SIGHUP: no token file configured"),
                Err(error) => tracing::error!(%error, "token file reload failed; the previous tokens stay in force (vlms_rt_token_reloads_total{{result=\"failed\"}})"),
            }},
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            result = server.wait() => {
                if let Err(error) = result {
                    eprintln!("vlms-rt-server: {error}");
                    return ExitCode::from(1);
                }
                return ExitCode::SUCCESS;
            }
        }
    }
    tracing::info!("shutdown signal received: NOT_SERVING, draining in-flight calls");
    match server.shutdown().await {
        Ok(Drain::Complete) => {
            tracing::info!("stopped after draining every call");
            ExitCode::SUCCESS
        }
        Ok(Drain::GraceExpired) => {
            tracing::warn!("stopped: the shutdown grace period expired with calls still running");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("vlms-rt-server: {error}");
            ExitCode::from(1)
        }
    }
}

#[cfg(not(unix))]
async fn run_until_signalled(server: startup::RunningServer) -> ExitCode {
    let _ = tokio::signal::ctrl_c().await;
    match server.shutdown().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}
