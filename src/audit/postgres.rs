//! The PostgreSQL audit store, for several replicas sharing one audit trail.
//!
//! Same semantics as the SQLite store: a batch is one transaction (one commit, one WAL flush on
//! the database side), versioned migrations at start-up, and one hash chain. Replicas never fork
//! the chain: every append takes a transaction-scoped advisory lock, reads the last record's
//! sequence number and hash under it, and numbers its records after them, so batches from all
//! replicas are serialised into one order and `seq` has no gaps.
//!
//! tokio-postgres with a deadpool pool, on a small runtime of its own: the store is driven from
//! blocking threads (the audit committer's, and the reader's blocking tasks), never from a worker
//! of the runtime serving gRPC, whose workers a database round trip or timeout never holds. TLS to the database is rustls, verifying the server against the CA
//! given with `--audit-db-ca`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::{IsolationLevel, Row};

use super::{
    AuditError, BrokenLink, Kind, NewRecord, Reader, RecordWithFeedback, Store, StoredRecord,
    chain_hash, check_link, neighbour_hash,
};

/// Advisory-lock key serialising appends to the chain ("vlms-rt" chain).
pub const CHAIN_LOCK: i64 = 0x766c_6d73_2d72_7401;
/// Advisory-lock key serialising migrations when replicas start together.
const MIGRATION_LOCK: i64 = 0x766c_6d73_2d72_7402;
/// How long one database operation may take before it counts as a failure (fail closed).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sent data may go unacknowledged before the kernel closes the database connection.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// Keepalive probing of an idle database connection: the first probe after 30 s idle, then every
/// 10 s. With TCP_USER_TIMEOUT set, Linux closes the connection once a probe has gone unanswered
/// for that long (about 40 s in all); the retry count applies where no user timeout is set.
/// Without these, a dead idle connection goes unnoticed for the kernel's two hours.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVES_RETRIES: u32 = 3;
/// tokio-postgres's default `keepalives_idle` (libpq's): taken to mean the URL did not set one.
const LIBPQ_DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// Connections per replica: the writer and a few concurrent readers.
const POOL_SIZE: usize = 6;
/// Session settings so that the database itself ends what would otherwise wedge a replica: a wait
/// for the chain lock (another replica hung inside its append), a statement that runs away, and a
/// transaction left open by a replica that stopped mid-append (its lock is then released).
const SESSION_OPTIONS: &str =
    "-c lock_timeout=2s -c statement_timeout=8s -c idle_in_transaction_session_timeout=15s";
/// Records read per round trip by `verify`.
const VERIFY_PAGE: i64 = 1000;

/// Schema migrations, applied in order under an advisory lock.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE records (
        seq BIGINT PRIMARY KEY,
        recommendation_id TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        caller TEXT NOT NULL,
        guideline_version TEXT NOT NULL,
        guideline_sha256 TEXT NOT NULL,
        case_id TEXT NOT NULL,
        subject_id TEXT,
        request BYTEA NOT NULL,
        response BYTEA NOT NULL,
        prev_hash BYTEA NOT NULL,
        hash BYTEA NOT NULL
    );
    CREATE INDEX records_by_case ON records (case_id, seq);
    CREATE INDEX records_by_subject ON records (subject_id, seq);
    CREATE TABLE probe (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL);",
    ),
    (
        2,
        // Only feedback has a subject: index those rows alone, so a plan's insert touches two indexes
        // (id, case), not three.
        "DROP INDEX records_by_subject;
    CREATE INDEX records_by_subject ON records (subject_id, seq) WHERE subject_id IS NOT NULL;",
    ),
];

const COLUMNS: &str = "seq, recommendation_id, created_at, kind, caller, guideline_version, guideline_sha256, case_id, subject_id, request, response";

const INSERT: &str = "INSERT INTO records (seq, recommendation_id, created_at, kind, caller, guideline_version,
        guideline_sha256, case_id, subject_id, request, response, prev_hash, hash)
    SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[], $12::bytea[], $13::bytea[])";

/// The error with its chain of causes (a TLS failure names the certificate problem).
fn store_error(error: impl std::error::Error) -> AuditError {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    AuditError::Unavailable(text)
}

/// Whether an `--audit-db` value names a PostgreSQL database.
pub fn is_url(audit_db: &str) -> bool {
    scheme_end(audit_db).is_some()
}

/// Where the `postgres://` or `postgresql://` scheme of a URL ends, in any letter case.
fn scheme_end(audit_db: &str) -> Option<usize> {
    ["postgres://", "postgresql://"].iter().find_map(|scheme| {
        audit_db
            .get(..scheme.len())
            .filter(|start| start.eq_ignore_ascii_case(scheme))
            .map(|_| scheme.len())
    })
}

/// The URL with its scheme in lower case, as the PostgreSQL client reads it (`POSTGRES://` is
/// the same URL, and must never be taken for a SQLite file name, which would print it whole).
pub fn normalized_url(audit_db: &str) -> std::borrow::Cow<'_, str> {
    match scheme_end(audit_db) {
        Some(end)
            if !audit_db[..end]
                .bytes()
                .all(|byte| !byte.is_ascii_uppercase()) =>
        {
            std::borrow::Cow::Owned(format!(
                "{}{}",
                audit_db[..end].to_ascii_lowercase(),
                &audit_db[end..]
            ))
        }
        _ => std::borrow::Cow::Borrowed(audit_db),
    }
}

/// The database a URL names, without its password, for messages and logs.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgresql database {} on {host}:{port}",
        config.get_dbname().unwrap_or("(default)")
    )
}

/// The runtime and pool shared by a replica's store and reader.
struct Shared {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
}

impl Shared {
    /// Runs `future` on the store's runtime and waits for it, from any thread: inside another
    /// runtime's context the wait happens on a scoped helper thread (tokio forbids blocking there).
    fn block_on<F>(&self, future: F) -> Result<F::Output, AuditError>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let handle = self
            .runtime
            .as_ref()
            .ok_or_else(|| AuditError::Unavailable("the audit store is shut down".into()))?
            .handle()
            .clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|scope| {
                scope
                    .spawn(move || handle.block_on(future))
                    .join()
                    .map_err(|_| AuditError::Unavailable("an audit database task panicked".into()))
            })
        } else {
            Ok(handle.block_on(future))
        }
    }

    /// `operation` with the operation timeout: a database that stops answering is a failure.
    fn run<T, F>(&self, operation: F) -> Result<T, AuditError>
    where
        F: Future<Output = Result<T, AuditError>> + Send,
        T: Send,
    {
        self.block_on(async {
            tokio::time::timeout(OPERATION_TIMEOUT, operation)
                .await
                .map_err(|_| {
                    AuditError::Unavailable(format!(
                        "the audit database did not answer within {} s",
                        OPERATION_TIMEOUT.as_secs()
                    ))
                })?
        })?
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Never blocks, so it is safe wherever the last handle is dropped (even in async code).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Parses `url` and builds the TLS policy: with a CA file the server must present a certificate
/// it signed (sslmode is then `require`); `sslmode=require` without a CA file is refused, since the
/// server could not be verified.
fn configure(
    url: &str,
    ca_pem: Option<&[u8]>,
) -> Result<(tokio_postgres::Config, Option<rustls::ClientConfig>), AuditError> {
    let mut config: tokio_postgres::Config = normalized_url(url).parse().map_err(|error| {
        AuditError::Unavailable(format!("--audit-db is not a valid URL: {error}"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("vlms-rt");
    }
    // A network that drops the connection silently (a failed-over database, a firewall that
    // forgets the flow) must end it in seconds, not after the kernel's defaults (two hours before
    // the first keepalive probe when idle, ~15 minutes of retransmissions when busy): otherwise
    // the statement waiting on it holds its pooled connection long after the operation timeout
    // has failed the batch. Data unacknowledged for TCP_USER_TIMEOUT, or an idle connection whose
    // keepalive probes go unanswered, closes the socket; the pool then opens a fresh connection.
    // Values the URL sets (`tcp_user_timeout`, `keepalives_idle`) win.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_keepalives_idle() == LIBPQ_DEFAULT_KEEPALIVES_IDLE {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    // Options from the URL come after ours, so an operator's explicit setting wins.
    let options = match config.get_options() {
        Some(given) => format!("{SESSION_OPTIONS} {given}"),
        None => SESSION_OPTIONS.to_string(),
    };
    config.options(options);
    let Some(ca_pem) = ca_pem else {
        if config.get_ssl_mode() == SslMode::Require {
            return Err(AuditError::Unavailable(
                "sslmode=require needs --audit-db-ca (the CA that signed the database server's certificate)".into(),
            ));
        }
        // Without a CA there is no TLS at all (not even opportunistic): say so plainly.
        config.ssl_mode(SslMode::Disable);
        return Ok((config, None));
    };
    if config.get_ssl_mode() == SslMode::Disable {
        return Err(AuditError::Unavailable(
            "--audit-db-ca was given but the URL says sslmode=disable".into(),
        ));
    }
    config.ssl_mode(SslMode::Require);
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        let certificate = certificate.map_err(|error| {
            AuditError::Unavailable(format!("--audit-db-ca is not a PEM certificate: {error}"))
        })?;
        roots.add(certificate).map_err(|error| {
            AuditError::Unavailable(format!(
                "--audit-db-ca holds an unusable certificate: {error}"
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(AuditError::Unavailable(
            "--audit-db-ca holds no certificate".into(),
        ));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(store_error)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok((config, Some(tls)))
}

fn connect(url: &str, ca_pem: Option<&[u8]>) -> Result<Arc<Shared>, AuditError> {
    let (config, tls) = configure(url, ca_pem)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vlms-rt-audit-pg")
        .enable_all()
        .build()
        .map_err(store_error)?;
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Some(tls) => Manager::from_config(
            config,
            tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            manager_config,
        ),
        None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
    };
    let pool = {
        let _entered = runtime.enter();
        Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(OPERATION_TIMEOUT))
            .create_timeout(Some(OPERATION_TIMEOUT))
            .recycle_timeout(Some(OPERATION_TIMEOUT))
            .build()
            .map_err(store_error)?
    };
    Ok(Arc::new(Shared {
        runtime: Some(runtime),
        pool,
    }))
}

/// Refuses a database a newer build has migrated (see [`super::refuse_newer_schema`]).
async fn refuse_newer_schema(
    transaction: &tokio_postgres::Transaction<'_>,
) -> Result<(), AuditError> {
    let newest: Option<i64> = transaction
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .map_err(store_error)?
        .try_get(0)
        .map_err(store_error)?;
    super::refuse_newer_schema(newest, MIGRATIONS)
}

async fn migrate(pool: &Pool) -> Result<(), AuditError> {
    let mut client = pool.get().await.map_err(store_error)?;
    let transaction = client.transaction().await.map_err(store_error)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(store_error)?;
    transaction
        .batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
        .await
        .map_err(store_error)?;
    refuse_newer_schema(&transaction).await?;
    for (version, sql) in MIGRATIONS {
        let applied = transaction
            .query_opt(
                "SELECT version FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await
            .map_err(store_error)?;
        if applied.is_none() {
            transaction.batch_execute(sql).await.map_err(store_error)?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[version, &super::now_rfc3339()],
                )
                .await
                .map_err(store_error)?;
            tracing::info!(version, "audit schema migration applied (PostgreSQL)");
        }
    }
    transaction.commit().await.map_err(store_error)
}

/// Connects to the database at `url` (TLS verified against `ca_pem` when given), runs the
/// migrations and returns the store and reader. Refuses to start when the database cannot be
/// reached: a replica that cannot record must not answer.
pub fn open(url: &str, ca_pem: Option<&[u8]>) -> Result<(PgStore, PgReader), AuditError> {
    let shared = connect(url, ca_pem)?;
    shared.run(migrate(&shared.pool))?;
    Ok((
        PgStore {
            shared: Arc::clone(&shared),
        },
        PgReader { shared },
    ))
}

/// The writing side (used by the audit committer, on a blocking thread).
pub struct PgStore {
    shared: Arc<Shared>,
}

async fn append(pool: &Pool, records: &[NewRecord]) -> Result<(), AuditError> {
    // This store asks for no compression (`Store::compression` is `None`): responses arrive as sent.
    if records
        .iter()
        .any(|record| record.response_dictionary.is_some())
    {
        return Err(AuditError::Unavailable(
            "a record was compressed, but the PostgreSQL store keeps responses as sent".into(),
        ));
    }
    let mut client = pool.get().await.map_err(store_error)?;
    let transaction = client.transaction().await.map_err(store_error)?;
    // Serialises the chain across replicas until this transaction ends.
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
        .await
        .map_err(store_error)?;
    let last = transaction
        .query_opt(
            "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(store_error)?;
    let (mut seq, mut previous) = match last {
        None => (0_i64, [0_u8; 32]),
        Some(row) => {
            let hash: Vec<u8> = row.try_get(1).map_err(store_error)?;
            let hash: [u8; 32] = hash.try_into().map_err(|_| {
                AuditError::Unavailable("the last record's hash is not 32 bytes".into())
            })?;
            (row.try_get(0).map_err(store_error)?, hash)
        }
    };
    let mut seqs = Vec::with_capacity(records.len());
    let mut prev_hashes = Vec::with_capacity(records.len());
    let mut hashes = Vec::with_capacity(records.len());
    for record in records {
        seq += 1;
        let hash = chain_hash(&previous, record);
        seqs.push(seq);
        prev_hashes.push(previous.to_vec());
        hashes.push(hash.to_vec());
        previous = hash;
    }
    let column = |field: fn(&NewRecord) -> &str| records.iter().map(field).collect::<Vec<&str>>();
    let ids = column(|record| &record.recommendation_id);
    let created = column(|record| &record.created_at);
    let kinds = column(|record| record.kind.as_str());
    let callers = column(|record| &record.caller);
    let versions = column(|record| &record.guideline_version);
    let digests = column(|record| &record.guideline_sha256);
    let cases = column(|record| &record.case_id);
    let subjects: Vec<Option<&str>> = records
        .iter()
        .map(|record| record.subject_id.as_deref())
        .collect();
    let requests: Vec<&[u8]> = records.iter().map(|record| &record.request[..]).collect();
    let responses: Vec<&[u8]> = records.iter().map(|record| &record.response[..]).collect();
    let insert = transaction
        .prepare_cached(INSERT)
        .await
        .map_err(store_error)?;
    transaction
        .execute(
            &insert,
            &[
                &seqs,
                &ids,
                &created,
                &kinds,
                &callers,
                &versions,
                &digests,
                &cases,
                &subjects,
                &requests,
                &responses,
                &prev_hashes,
                &hashes,
            ],
        )
        .await
        .map_err(store_error)?;
    transaction.commit().await.map_err(store_error)
}

impl Store for PgStore {
    fn append(&mut self, records: &[NewRecord]) -> Result<(), AuditError> {
        self.shared.run(append(&self.shared.pool, records))
    }

    /// Proves an append could commit now: a transaction that takes the chain lock and writes.
    fn probe(&mut self) -> Result<(), AuditError> {
        let pool = &self.shared.pool;
        self.shared.run(async move {
            let mut client = pool.get().await.map_err(store_error)?;
            let transaction = client.transaction().await.map_err(store_error)?;
            transaction
                .execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
                .await
                .map_err(store_error)?;
            transaction
                .execute(
                    "INSERT INTO probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
                    &[&super::now_rfc3339()],
                )
                .await
                .map_err(store_error)?;
            transaction.commit().await.map_err(store_error)
        })
    }

    /// None: PostgreSQL compresses large values itself (TOAST), so responses are kept as sent.
    fn compression(&self) -> Option<Arc<super::compress::Compression>> {
        None
    }

    fn commits_locally(&self) -> bool {
        false
    }
}

/// The reading side.
pub struct PgReader {
    shared: Arc<Shared>,
}

fn row_to_record(row: &Row) -> Result<StoredRecord, AuditError> {
    let kind: String = row.try_get(3).map_err(store_error)?;
    Ok(StoredRecord {
        seq: row.try_get(0).map_err(store_error)?,
        record: NewRecord {
            recommendation_id: row.try_get(1).map_err(store_error)?,
            created_at: row.try_get(2).map_err(store_error)?,
            kind: Kind::parse(&kind).unwrap_or(Kind::Feedback),
            caller: row.try_get(4).map_err(store_error)?,
            guideline_version: row.try_get(5).map_err(store_error)?,
            guideline_sha256: row.try_get(6).map_err(store_error)?,
            case_id: row.try_get(7).map_err(store_error)?,
            subject_id: row.try_get(8).map_err(store_error)?,
            request: row.try_get(9).map_err(store_error)?,
            response: row.try_get(10).map_err(store_error)?,
            response_dictionary: None,
        },
    })
}

/// What a read selects besides `COLUMNS`: the record's previous hash and hash, and its
/// neighbours' links (the hash of the record before it and the previous hash of the one after),
/// all in the one query, so that checking a page costs no round trip of its own.
const CHECK_COLUMNS: &str = "prev_hash, hash, \
    (SELECT older.hash FROM records older WHERE older.seq < records.seq ORDER BY older.seq DESC LIMIT 1), \
    (SELECT newer.prev_hash FROM records newer WHERE newer.seq > records.seq ORDER BY newer.seq LIMIT 1)";

/// A row selected with `{COLUMNS}, {CHECK_COLUMNS}`, checked against its hash and its neighbours
/// in the chain as `audit verify` checks it: a changed record is refused, never served.
fn checked_record(row: &Row) -> Result<StoredRecord, AuditError> {
    let record = row_to_record(row)?;
    let kind: String = row.try_get(3).map_err(store_error)?;
    let prev_hash: Vec<u8> = row.try_get(11).map_err(store_error)?;
    let hash: Vec<u8> = row.try_get(12).map_err(store_error)?;
    let previous = neighbour_hash(row.try_get(13).map_err(store_error)?, record.seq)?;
    let next_prev_hash = neighbour_hash(row.try_get(14).map_err(store_error)?, record.seq)?;
    super::check_read(
        &previous.unwrap_or([0; 32]),
        &record,
        &kind,
        &prev_hash,
        &hash,
        next_prev_hash.as_ref().map(<[u8; 32]>::as_slice),
    )?;
    Ok(record)
}

async fn with_feedback(
    client: &deadpool_postgres::Client,
    record: StoredRecord,
) -> Result<RecordWithFeedback, AuditError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS}, {CHECK_COLUMNS} FROM records WHERE subject_id = $1 AND kind = 'feedback' ORDER BY seq"
        ))
        .await
        .map_err(store_error)?;
    let rows = client
        .query(&statement, &[&record.record.recommendation_id])
        .await
        .map_err(store_error)?;
    let feedback = rows
        .iter()
        .map(checked_record)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordWithFeedback { record, feedback })
}

impl Reader for PgReader {
    fn card(&self, uuid: &str) -> Result<Option<StoredRecord>, AuditError> {
        let pool = &self.shared.pool;
        self.shared.run(async move {
            let client = pool.get().await.map_err(store_error)?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, {CHECK_COLUMNS} FROM records WHERE recommendation_id = $1 AND kind = 'cds-card'"
                ))
                .await
                .map_err(store_error)?;
            let row = client
                .query_opt(&statement, &[&uuid])
                .await
                .map_err(store_error)?;
            row.as_ref().map(checked_record).transpose()
        })
    }

    fn get(&self, recommendation_id: &str) -> Result<Option<RecordWithFeedback>, AuditError> {
        let pool = &self.shared.pool;
        self.shared.run(async move {
            let client = pool.get().await.map_err(store_error)?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, {CHECK_COLUMNS} FROM records WHERE recommendation_id = $1 AND kind IN ('recommend', 'check')"
                ))
                .await
                .map_err(store_error)?;
            let row = client
                .query_opt(&statement, &[&recommendation_id])
                .await
                .map_err(store_error)?;
            match row {
                None => Ok(None),
                Some(row) => Ok(Some(
                    with_feedback(&client, checked_record(&row)?).await?,
                )),
            }
        })
    }

    fn list(
        &self,
        case_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RecordWithFeedback>, AuditError> {
        let pool = &self.shared.pool;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let before = before.unwrap_or(i64::MAX);
        self.shared.run(async move {
            let client = pool.get().await.map_err(store_error)?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, {CHECK_COLUMNS} FROM records WHERE case_id = $1 AND kind IN ('recommend', 'check') AND seq < $2 ORDER BY seq DESC LIMIT $3"
                ))
                .await
                .map_err(store_error)?;
            let rows = client
                .query(&statement, &[&case_id, &before, &limit])
                .await
                .map_err(store_error)?;
            let mut records = Vec::with_capacity(rows.len());
            for row in &rows {
                records.push(with_feedback(&client, checked_record(row)?).await?);
            }
            Ok(records)
        })
    }

    fn has_older(&self, case_id: &str, before: i64) -> Result<bool, AuditError> {
        let pool = &self.shared.pool;
        self.shared.run(async move {
            let client = pool.get().await.map_err(store_error)?;
            let statement = client
                .prepare_cached(
                    "SELECT 1 FROM records WHERE case_id = $1 AND kind IN ('recommend', 'check') AND seq < $2 LIMIT 1",
                )
                .await
                .map_err(store_error)?;
            Ok(client
                .query_opt(&statement, &[&case_id, &before])
                .await
                .map_err(store_error)?
                .is_some())
        })
    }
}

/// Walks the hash chain of the database at `url` in one consistent snapshot: the number of records
/// when intact, or the first broken link. Runs no migration and writes nothing.
pub fn verify(url: &str, ca_pem: Option<&[u8]>) -> Result<Result<u64, BrokenLink>, AuditError> {
    let shared = connect(url, ca_pem)?;
    let pool = &shared.pool;
    shared.block_on(async move {
        let mut client = pool.get().await.map_err(store_error)?;
        let transaction = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(store_error)?;
        let exists = |table: &'static str| {
            let transaction = &transaction;
            async move {
                transaction
                    .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&table])
                    .await
                    .map_err(store_error)?
                    .try_get::<_, bool>(0)
                    .map_err(store_error)
            }
        };
        // A newer build's database may hold records this one cannot read or check: refused,
        // rather than reported as broken. A partial restore may lack the migrations table.
        if exists("schema_migrations").await? {
            refuse_newer_schema(&transaction).await?;
        }
        if !exists("records").await? {
            return Err(AuditError::Unavailable(
                "no audit trail in this database (the records table does not exist)".into(),
            ));
        }
        let query = format!(
            "SELECT {COLUMNS}, prev_hash, hash FROM records WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        let mut previous = [0_u8; 32];
        let mut count = 0_u64;
        let mut after = i64::MIN;
        loop {
            let rows = transaction
                .query(&query, &[&after, &VERIFY_PAGE])
                .await
                .map_err(store_error)?;
            for row in &rows {
                let record = row_to_record(row)?;
                let kind: String = row.try_get(3).map_err(store_error)?;
                let prev_hash: Vec<u8> = row.try_get(11).map_err(store_error)?;
                let hash: Vec<u8> = row.try_get(12).map_err(store_error)?;
                previous = match check_link(&previous, &record, &kind, &prev_hash, &hash) {
                    Ok(next) => next,
                    Err(broken) => return Ok(Err(broken)),
                };
                count += 1;
                after = record.seq;
            }
            if rows.len() < VERIFY_PAGE as usize {
                break;
            }
        }
        Ok(Ok(count))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_recognised_in_any_letter_case_and_described_without_its_password() {
        for url in [
            "postgres://vlms:s3cret@db.example/audit",
            "POSTGRES://vlms:s3cret@db.example/audit",
            "PostgreSQL://vlms:s3cret@db.example/audit",
        ] {
            assert!(is_url(url), "{url}");
            let described = crate::audit::describe(url);
            assert!(described.contains("db.example"), "{described}");
            assert!(!described.contains("s3cret"), "{described}");
            assert!(configure(url, None).is_ok(), "{url}");
        }
        for not_a_url in ["audit.sqlite3", "postgres:/x", "./postgres://x", ""] {
            assert!(!is_url(not_a_url), "{not_a_url}");
        }
        assert_eq!(
            normalized_url("POSTGRES://Vlms@Db/Audit"),
            "postgres://Vlms@Db/Audit"
        );
    }

    #[test]
    fn tls_policy_is_explicit() {
        let (config, tls) = configure("postgres://vlms@db.example/audit", None).expect("plain");
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        assert!(tls.is_none());
        let error = configure("postgres://vlms@db.example/audit?sslmode=require", None)
            .expect_err("require without a CA");
        assert!(error.to_string().contains("--audit-db-ca"), "{error}");
        let error = configure(
            "postgres://vlms@db.example/audit?sslmode=disable",
            Some(b"not pem"),
        )
        .expect_err("contradiction");
        assert!(error.to_string().contains("sslmode=disable"), "{error}");
        let error = configure("postgres://vlms@db.example/audit", Some(b"not pem"))
            .expect_err("no certificate");
        assert!(error.to_string().contains("no certificate"), "{error}");
        assert!(configure("postgres://[::1", None).is_err());
    }

    #[test]
    fn a_silently_dropped_connection_is_detected_in_seconds_unless_the_url_says_otherwise() {
        let (config, _) = configure("postgres://vlms@db.example/audit", None).expect("plain");
        assert!(config.get_keepalives());
        assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(config.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));
        let (config, _) = configure(
            "postgres://vlms@db.example/audit?tcp_user_timeout=25&keepalives_idle=120&keepalives_interval=5&keepalives_retries=9",
            None,
        )
        .expect("explicit");
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(25))
        );
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(120));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(config.get_keepalives_retries(), Some(9));
    }

    #[test]
    fn descriptions_carry_no_password() {
        let config: tokio_postgres::Config = "postgres://vlms:secret@db.example:6543/audit"
            .parse()
            .expect("url");
        let text = describe(&config);
        assert_eq!(text, "postgresql database audit on db.example:6543");
        assert!(!text.contains("secret"));
    }
}
