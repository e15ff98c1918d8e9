//! Typed settings of the server binary: command-line flags with environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::telemetry::LogFormat;

/// `vlms-rt-server`: radiotherapy recommendations for venous leiomyosarcoma over gRPC.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "vlms-rt-server", version, about)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "VLMS_RT_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Guideline profile (TOML) to use instead of the embedded one.
    #[arg(long, env = "VLMS_RT_GUIDELINE")]
    pub guideline: Option<PathBuf>,

    /// Log line format.
    #[arg(long, value_enum, env = "VLMS_RT_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Server certificate chain (PEM); enables TLS together with --tls-key.
    #[arg(long, env = "VLMS_RT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Server private key (PEM).
    #[arg(long, env = "VLMS_RT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate (PEM) that client certificates must be signed by (mutual TLS).
    #[arg(long, env = "VLMS_RT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Token file: one `caller-name:sha256-of-token` per line. When set, every call except health
    /// and reflection needs `authorization: Bearer <token>`. Reloaded on SIGHUP.
    #[arg(long, env = "VLMS_RT_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,

    /// Largest request message in bytes (a RecommendStream item counts alone).
    #[arg(long, env = "VLMS_RT_MAX_REQUEST_BYTES", default_value_t = 64 * 1024, value_parser = parse_request_bytes)]
    pub max_request_bytes: usize,

    /// Most items per RecommendStream call.
    #[arg(long, env = "VLMS_RT_MAX_STREAM_ITEMS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_stream_items: u64,

    /// Server-side call timeout (a shorter client deadline wins); also the longest wait for the
    /// next stream item. Examples: 5s, 500ms.
    #[arg(long, env = "VLMS_RT_CALL_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub call_timeout: Duration,

    /// Open health Watch streams across the process; beyond it a Watch is refused with
    /// RESOURCE_EXHAUSTED (Check, which probes use, is never limited).
    #[arg(long, env = "VLMS_RT_MAX_HEALTH_WATCHES", default_value_t = 64, value_parser = parse_positive_count)]
    pub max_health_watches: usize,

    /// How long a new connection may take to finish its TLS handshake, and then to send the HTTP/2
    /// preface, before it is closed (refused handshakes are logged and counted).
    #[arg(long, env = "VLMS_RT_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub handshake_timeout: Duration,

    /// Calls in flight for one caller (an authenticated caller, or one client IP without
    /// authentication), so that one caller cannot take every place; beyond it that caller's calls
    /// are shed with RESOURCE_EXHAUSTED. Default: half of --max-concurrent-calls.
    #[arg(long, env = "VLMS_RT_MAX_CALLS_PER_CALLER", value_parser = parse_positive_count)]
    pub max_calls_per_caller: Option<usize>,

    /// Calls in flight across the process; beyond it calls are shed with RESOURCE_EXHAUSTED.
    #[arg(long, env = "VLMS_RT_MAX_CONCURRENT_CALLS", default_value_t = 256, value_parser = parse_positive_count)]
    pub max_concurrent_calls: usize,

    /// Connections are closed gracefully after this age so clients rebalance across replicas.
    #[arg(long, env = "VLMS_RT_MAX_CONNECTION_AGE", default_value = "300s", value_parser = parse_positive_duration)]
    pub max_connection_age: Duration,

    /// HTTP/2 keepalive ping interval.
    #[arg(long, env = "VLMS_RT_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    pub keepalive_interval: Duration,

    /// How long in-flight calls may run after SIGTERM or SIGINT, or after their connection
    /// reached --max-connection-age.
    #[arg(long, env = "VLMS_RT_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Serve Prometheus metrics on this plain HTTP address (GET /metrics); off by default.
    #[arg(long, env = "VLMS_RT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Audit database: a SQLite file (created with mode 0600; one replica) or a
    /// `postgres://user:password@host:port/database` URL (replicas sharing one trail). Every answer
    /// is recorded before it is sent. `none` disables auditing.
    #[arg(
        long,
        env = "VLMS_RT_AUDIT_DB",
        default_value = "vlms-rt-audit.sqlite3"
    )]
    pub audit_db: String,

    /// PEM CA certificate(s) that signed the PostgreSQL server's certificate: turns on TLS to the
    /// audit database, verifying the server's name and chain.
    #[arg(long, env = "VLMS_RT_AUDIT_DB_CA")]
    pub audit_db_ca: Option<PathBuf>,

    /// Also serve `grpc.health.v1.Health` alone on this plaintext address, for probes that speak
    /// no TLS (e.g. Kubernetes gRPC probes when the main port requires mutual TLS).
    #[arg(long, env = "VLMS_RT_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Serve HL7 CDS Hooks 3.0 (FHIR R4) on this address, HTTP/1.1 and HTTP/2 with the gRPC
    /// port's TLS settings; off by default. A non-loopback address needs --cds-hooks-issuers.
    #[arg(long, env = "VLMS_RT_CDS_HOOKS_LISTEN")]
    pub cds_hooks_listen: Option<SocketAddr>,

    /// Trusted CDS clients: a JSON file of JWT issuers with their JWK sets (RS384 or ES384).
    /// Reloaded on SIGHUP. Without it the CDS Hooks port accepts unauthenticated calls, and only
    /// on a loopback address.
    #[arg(long, env = "VLMS_RT_CDS_HOOKS_ISSUERS", requires = "cds_hooks_listen")]
    pub cds_hooks_issuers: Option<PathBuf>,

    /// The URL EHRs call the CDS Hooks port at (behind a proxy, its public URL): a JWT's `aud`
    /// must be this plus the endpoint's path. Default: http(s)://ADDRESS of --cds-hooks-listen.
    #[arg(
        long,
        env = "VLMS_RT_CDS_HOOKS_PUBLIC_URL",
        requires = "cds_hooks_listen"
    )]
    pub cds_hooks_public_url: Option<String>,

    /// The hospital's canonical base for the vlms-rt FHIR code systems, extensions, guideline and
    /// recommendation pages (the design's example.org name is a placeholder).
    #[arg(
        long,
        env = "VLMS_RT_CDS_HOOKS_CANONICAL_BASE",
        default_value = "https://vlms-rt.example.org"
    )]
    pub cds_hooks_canonical_base: String,

    /// Prefix of the CDS Hooks JSON extension keys (reverse domain notation).
    #[arg(
        long,
        env = "VLMS_RT_CDS_HOOKS_EXTENSION_PREFIX",
        default_value = "org.example.vlms-rt"
    )]
    pub cds_hooks_extension_prefix: String,

    /// The facility's IANA time zone: a CDS Hooks request is evaluated as of the local date it
    /// arrives, and chart date-times are compared as local dates.
    #[arg(long, env = "VLMS_RT_FACILITY_TIME_ZONE", default_value = "UTC")]
    pub facility_time_zone: String,

    /// File holding the secret key (at least 32 bytes) of the CDS Hooks case-id HMAC; share it
    /// between replicas so a patient's tumour keeps one case id. Without it a random key is used
    /// per process.
    #[arg(
        long,
        env = "VLMS_RT_CDS_HOOKS_CASE_ID_KEY",
        requires = "cds_hooks_listen"
    )]
    pub cds_hooks_case_id_key: Option<PathBuf>,

    /// Browser origins allowed to call the CDS Hooks port (CORS), comma-separated.
    #[arg(long, env = "VLMS_RT_CDS_HOOKS_CORS_ORIGINS", value_delimiter = ',')]
    pub cds_hooks_cors_origins: Vec<String>,

    /// The SMART intake app the missing-data card links to.
    #[arg(long, env = "VLMS_RT_CDS_HOOKS_INTAKE_URL")]
    pub cds_hooks_intake_url: Option<String>,

    /// Let the CDS Hooks port fetch omitted prefetch over plain HTTP from a loopback FHIR server
    /// (a local sandbox or tests); otherwise only https is used.
    #[arg(long, env = "VLMS_RT_CDS_HOOKS_FHIR_LOOPBACK_HTTP")]
    pub cds_hooks_fhir_loopback_http: bool,

    /// Largest CDS Hooks request body in bytes.
    #[arg(long, env = "VLMS_RT_CDS_HOOKS_MAX_BODY_BYTES", default_value_t = crate::cds::DEFAULT_MAX_BODY_BYTES, value_parser = parse_positive_count)]
    pub cds_hooks_max_body_bytes: usize,

    #[command(subcommand)]
    pub command: Option<ServerCommand>,
}

/// Maintenance commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServerCommand {
    /// Audit-trail maintenance.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Token-file maintenance.
    Tokens {
        #[command(subcommand)]
        action: TokensAction,
    },
}

/// Token-file maintenance actions.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokensAction {
    /// Read a token file as the server would and say what it admits (exit 2 when the server would
    /// refuse it). Run it before a reload: the systemd unit's ExecReload does, so that
    /// `systemctl reload` fails on a broken file instead of logging it.
    Check {
        /// The token file (`caller-name:sha256-hex` lines).
        path: PathBuf,
    },
}

/// Audit-trail maintenance actions.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditAction {
    /// Walk the hash chain and report the first broken link (exit 1 if any).
    Verify {
        /// The audit database: a SQLite file or a `postgres://` URL.
        #[arg(long, env = "VLMS_RT_AUDIT_DB")]
        audit_db: String,
        /// PEM CA certificate(s) for TLS to a PostgreSQL audit database.
        #[arg(long, env = "VLMS_RT_AUDIT_DB_CA")]
        audit_db_ca: Option<PathBuf>,
    },
}

/// Smallest and largest `--max-request-bytes`: below 1 KiB no case with its dose metrics fits; above
/// 16 MiB one request could hold the memory of thousands of calls.
pub const REQUEST_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=16 * 1024 * 1024;

fn parse_request_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of bytes"))?;
    if REQUEST_BYTES_RANGE.contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "{bytes} bytes is outside {}..={} (1 KiB to 16 MiB)",
            REQUEST_BYTES_RANGE.start(),
            REQUEST_BYTES_RANGE.end()
        ))
    }
}

fn parse_positive_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A duration (see [`parse_duration`]) that is not zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        Err("must be longer than zero".into())
    } else {
        Ok(duration)
    }
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unit must be ms, s or m")),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!("{text:?} must be more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
