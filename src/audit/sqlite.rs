//! The SQLite audit store: WAL, `synchronous=FULL`, versioned migrations at start-up, the file
//! created with mode 0600 (it holds clinical data). Responses are stored compressed against the
//! store's dictionary (see [`super::dictionary`]) when that makes them smaller — a plan as a frame
//! of the dictionary's parts ([`super::parts`]), anything else with zstd — compressed by the
//! calling thread ([`super::compress`]); readers get the bytes the client received. The hash
//! chain covers a compressed response as stored with its dictionary's SHA-256 (chain version 2);
//! records written before that (chain version 1) were hashed over the response as sent, and
//! `verify` checks each record by its own version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use rusqlite::{Connection, OptionalExtension, params};

use super::compress::Compression;
use super::{
    AuditError, BrokenLink, Kind, NewRecord, Reader, RecordWithFeedback, Store, StoredRecord,
    chain_hash, check_link, neighbour_hash,
};

/// Schema migrations, applied in order; a database records the versions it has.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE records (
        seq INTEGER PRIMARY KEY,
        recommendation_id TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        caller TEXT NOT NULL,
        guideline_version TEXT NOT NULL,
        guideline_sha256 TEXT NOT NULL,
        case_id TEXT NOT NULL,
        subject_id TEXT,
        request BLOB NOT NULL,
        response BLOB NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL
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
    (
        3,
        // Compressed responses: a record names the dictionary its response was compressed with (NULL:
        // stored as sent). Dictionaries are kept for good, by SHA-256.
        "CREATE TABLE dictionaries (
        id INTEGER PRIMARY KEY,
        sha256 BLOB NOT NULL UNIQUE,
        content BLOB NOT NULL
    );
    ALTER TABLE records ADD COLUMN response_dictionary INTEGER REFERENCES dictionaries (id);",
    ),
    (
        4,
        // How a record's hash covers its response: 1, the response as sent (every record before
        // this migration, compressed or not); 2, a compressed response as stored plus its
        // dictionary's SHA-256.
        "ALTER TABLE records ADD COLUMN chain_version INTEGER NOT NULL DEFAULT 1;",
    ),
];

/// The chain version of a record whose response is compressed as stored (see `MIGRATIONS`).
const CHAIN_COMPRESSED: i64 = 2;

/// Largest response a stored frame may claim to decompress to (a plan is a few KB; larger ones are
/// never compressed, see [`super::compress::MAX_RESPONSE`]); a larger claim is treated as a
/// changed record rather than allocated.
const MAX_RESPONSE: u64 = super::compress::MAX_RESPONSE as u64;

fn store_error(error: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable(error.to_string())
}

/// A SQLite error as the kind of audit failure it is: busy, full, corrupt or unavailable.
fn sqlite_error(error: rusqlite::Error) -> AuditError {
    use rusqlite::ErrorCode;
    let code = match &error {
        rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
        _ => None,
    };
    let message = error.to_string();
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => AuditError::Busy(message),
        Some(ErrorCode::DiskFull) => AuditError::Full(message),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            AuditError::Corrupt(format!("{message}; run `vlms-rt-server audit verify`"))
        }
        _ => AuditError::Unavailable(message),
    }
}

/// A value of another type than this program writes (text where it wrote a blob, as an edit with
/// the sqlite3 shell easily leaves) is a changed record; anything else is the store's failure.
fn corrupt_or_store(error: &rusqlite::Error) -> AuditError {
    match error {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => AuditError::Corrupt(format!(
            "a column holds a value of another type than was written ({error}): the record was changed; run `vlms-rt-server audit verify`"
        )),
        other => store_error(other),
    }
}

fn connect(path: &Path) -> Result<Connection, AuditError> {
    let connection = Connection::open(path).map_err(store_error)?;
    // With plans stored compressed a record is a few hundred bytes: SQLite's default 4 KiB pages
    // write the least per commit (32 KiB pages suited the ~8 KB records stored before compression;
    // docs/perf/decisions/016-audit-zstd-dictionary.md). page_size only takes effect on a new
    // database, before WAL mode is set. A lock held by another process is waited on for 2 s at
    // most, well inside the default 5 s call timeout: the batch then fails (its calls
    // UNAVAILABLE, health NOT_SERVING until a probe commits).
    connection
        .execute_batch(
            "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 2000;",
        )
        .map_err(store_error)?;
    Ok(connection)
}

/// Creates the file with mode 0600 if it does not exist yet (SQLite gives its -wal and -shm files
/// the same mode).
fn create_private(path: &Path) -> Result<(), AuditError> {
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(AuditError::Unavailable(format!(
            "cannot create {}: {error}",
            path.display()
        ))),
    }
}

/// The newest migration a database records (`None`: none recorded).
fn newest_migration(connection: &Connection) -> Result<Option<i64>, AuditError> {
    connection
        .query_row("SELECT max(version) FROM schema_migrations", [], |row| {
            row.get(0)
        })
        .map_err(store_error)
}

fn migrate(connection: &mut Connection) -> Result<(), AuditError> {
    connection
        .execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);")
        .map_err(store_error)?;
    for (version, sql) in MIGRATIONS {
        // IMMEDIATE: the write lock is taken before the schema is read, so a newer build that
        // migrates the file meanwhile cannot slip in between the refusal check and this migration.
        let transaction = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(store_error)?;
        super::refuse_newer_schema(newest_migration(&transaction)?, MIGRATIONS)?;
        let applied: Option<i64> = transaction
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |row| row.get(0),
            )
            .optional()
            .map_err(store_error)?;
        if applied.is_none() {
            transaction.execute_batch(sql).map_err(store_error)?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    params![version, super::now_rfc3339()],
                )
                .map_err(store_error)?;
            tracing::info!(version, "audit schema migration applied");
        }
        transaction.commit().map_err(store_error)?;
    }
    Ok(())
}

/// The lock file beside an audit database: `<database>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the exclusive lock that makes one process the only writer of an audit database, for as
/// long as the returned file is open (the process's life). Two writers would each extend the hash
/// chain from their own last hash and break it. The lock file names its holder, so a second
/// server's refusal can say who has it.
fn lock_exclusively(path: &Path) -> Result<std::fs::File, AuditError> {
    use std::io::{Read, Seek, Write};
    let lock_path = lock_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&lock_path).map_err(|error| {
        AuditError::Unavailable(format!(
            "cannot open the lock file {}: {error}",
            lock_path.display()
        ))
    })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(AuditError::Unavailable(format!(
                "{} is in use by another process ({}); one audit database takes one server (lock file {})",
                path.display(),
                if holder.is_empty() {
                    "holder unknown"
                } else {
                    holder
                },
                lock_path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(AuditError::Unavailable(format!(
                "cannot lock {}: {error}",
                lock_path.display()
            )));
        }
    }
    let holder = format!(
        "vlms-rt-server pid {} since {}\n",
        std::process::id(),
        super::now_rfc3339()
    );
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(holder.as_bytes()));
    written.map_err(|error| {
        AuditError::Unavailable(format!(
            "cannot write the lock file {}: {error}",
            lock_path.display()
        ))
    })?;
    Ok(file)
}

/// The identity of the file at `path` (device and inode), to tell when the path no longer names
/// the file a connection writes.
#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn file_identity(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// Opens (creating and migrating if needed) the audit database at `path` as its only writer (an
/// exclusive lock held until the store is dropped). With a `dictionary` (see
/// [`super::dictionary::plan_dictionary`]), responses are stored compressed against it; it is
/// saved in the database first (once per distinct dictionary).
pub fn open(
    path: &Path,
    dictionary: Option<&[u8]>,
) -> Result<(SqliteStore, SqliteReader), AuditError> {
    let lock = lock_exclusively(path)?;
    create_private(path)?;
    let identity = file_identity(path);
    let mut writer = connect(path)?;
    migrate(&mut writer)?;
    let compression = match Compression::new(dictionary.unwrap_or_default())? {
        Some(compression) => Some((
            save_dictionary(&writer, compression.dictionary())?,
            compression,
        )),
        None => None,
    };
    let reader = connect(path)?;
    Ok((
        SqliteStore {
            connection: writer,
            last_hash: None,
            compression,
            path: path.to_path_buf(),
            identity,
            replaced: false,
            _lock: lock,
        },
        SqliteReader {
            state: Mutex::new(ReaderState {
                connection: reader,
                dictionaries: Dictionaries::default(),
            }),
            path: path.to_path_buf(),
        },
    ))
}

/// The id of `dictionary` in the database, storing it if it is new.
fn save_dictionary(connection: &Connection, dictionary: &[u8]) -> Result<i64, AuditError> {
    let sha256: [u8; 32] = Sha256::digest(dictionary).into();
    connection
        .execute(
            "INSERT OR IGNORE INTO dictionaries (sha256, content) VALUES (?1, ?2)",
            params![sha256.as_slice(), dictionary],
        )
        .map_err(store_error)?;
    connection
        .query_row(
            "SELECT id FROM dictionaries WHERE sha256 = ?1",
            [sha256.as_slice()],
            |row| row.get(0),
        )
        .map_err(store_error)
}

/// The writing connection.
pub struct SqliteStore {
    connection: Connection,
    last_hash: Option<[u8; 32]>,
    /// The dictionary's id and the compression callers apply with it; `None`: responses are stored
    /// as sent.
    compression: Option<(i64, Arc<Compression>)>,
    path: PathBuf,
    /// Device and inode of the database file when it was opened.
    identity: Option<(u64, u64)>,
    /// The path stopped naming the opened file: every later write fails until a restart.
    replaced: bool,
    /// The exclusive lock on `<database>.lock`, held for the store's life.
    _lock: std::fs::File,
}

impl SqliteStore {
    /// Fails when the database file was deleted or replaced since it was opened: what this
    /// connection commits would then go to a file no one can read (records lost in silence). Once
    /// seen, the store stays failed (calls UNAVAILABLE, health NOT_SERVING) until an operator
    /// restarts the server; the log says so once.
    fn still_the_opened_file(&mut self) -> Result<(), AuditError> {
        if !self.replaced && self.identity.is_some() && file_identity(&self.path) != self.identity {
            self.replaced = true;
            tracing::error!(
                audit_db = %self.path.display(),
                "the audit database file was deleted or replaced while in use: refusing every answer until the server is restarted (records committed since then would be lost)"
            );
        }
        if self.replaced {
            return Err(AuditError::Unavailable(format!(
                "the audit database {} was deleted or replaced while in use; restart the server",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn stored_last_hash(&self) -> Result<[u8; 32], AuditError> {
        let hash: Option<Vec<u8>> = self
            .connection
            .query_row(
                "SELECT hash FROM records ORDER BY seq DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(store_error)?;
        match hash {
            None => Ok([0; 32]),
            Some(bytes) => bytes.try_into().map_err(|_| {
                AuditError::Unavailable("the last record's hash is not 32 bytes".into())
            }),
        }
    }
}

impl Store for SqliteStore {
    fn append(&mut self, records: &[NewRecord]) -> Result<(), AuditError> {
        let mut previous = match self.last_hash {
            Some(hash) => hash,
            None => self.stored_last_hash()?,
        };
        // Forget the cached hash until this batch commits: a failed batch leaves the chain as stored.
        self.last_hash = None;
        let transaction = self.connection.transaction().map_err(sqlite_error)?;
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO records (recommendation_id, created_at, kind, caller, guideline_version, guideline_sha256,
                        case_id, subject_id, request, response, prev_hash, hash, response_dictionary, chain_version)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(store_error)?;
            for record in records {
                // Compressed by the caller (`compress`), with this store's dictionary only.
                let (dictionary, chain_version) =
                    match (&record.response_dictionary, &self.compression) {
                        (None, _) => (None, 1),
                        (Some(sha256), Some((id, compression)))
                            if sha256 == compression.sha256() =>
                        {
                            (Some(*id), CHAIN_COMPRESSED)
                        }
                        (Some(_), _) => {
                            return Err(AuditError::Unavailable(
                            "a record was compressed with a dictionary this store does not hold"
                                .into(),
                        ));
                        }
                    };
                let hash = chain_hash(&previous, record);
                insert
                    .execute(params![
                        record.recommendation_id,
                        record.created_at,
                        record.kind.as_str(),
                        record.caller,
                        record.guideline_version,
                        record.guideline_sha256,
                        record.case_id,
                        record.subject_id,
                        record.request,
                        record.response,
                        previous.as_slice(),
                        hash.as_slice(),
                        dictionary,
                        chain_version,
                    ])
                    .map_err(sqlite_error)?;
                previous = hash;
            }
        }
        transaction.commit().map_err(sqlite_error)?;
        // Checked after the commit, so that a file deleted at any moment before it fails the
        // batch: its callers are refused rather than answered from an unreadable file.
        self.still_the_opened_file()?;
        self.last_hash = Some(previous);
        Ok(())
    }

    fn probe(&mut self) -> Result<(), AuditError> {
        self.still_the_opened_file()?;
        self.connection
            .execute(
                "INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?1)",
                [super::now_rfc3339()],
            )
            .map_err(sqlite_error)?;
        Ok(())
    }

    fn compression(&self) -> Option<Arc<Compression>> {
        self.compression
            .as_ref()
            .map(|(_, compression)| Arc::clone(compression))
    }

    fn commits_locally(&self) -> bool {
        true
    }
}

/// The reading connection.
pub struct SqliteReader {
    state: Mutex<ReaderState>,
    path: PathBuf,
}

struct ReaderState {
    connection: Connection,
    dictionaries: Dictionaries,
}

/// Dictionaries by id, each with its SHA-256, its parts section and its zstd decompressor, loaded
/// from the database on first use.
#[derive(Default)]
struct Dictionaries(HashMap<i64, Dictionary>);

struct Dictionary {
    sha256: [u8; 32],
    content: Vec<u8>,
    /// Where its parts lie in `content` (empty when it has no parts section).
    parts: Vec<std::ops::Range<usize>>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

/// Why a stored response could not be turned back into the bytes that were sent.
enum Unreadable {
    /// The database could not be read.
    Store(AuditError),
    /// The record or its dictionary is not what was written.
    Changed(&'static str),
}

impl Dictionaries {
    /// The response as it was sent: `stored` itself, or `stored` (a parts frame or a zstd frame)
    /// read with dictionary `id`. A dictionary is checked against its SHA-256 when it is loaded.
    fn response(
        &mut self,
        connection: &Connection,
        id: Option<i64>,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, Unreadable> {
        let Some(id) = id else {
            return Ok(stored);
        };
        let dictionary = self.load(connection, id)?;
        const UNDECODABLE: &str =
            "its stored response does not decompress (the record was changed)";
        if stored.starts_with(super::parts::FRAME_MAGIC) {
            return super::parts::decode(
                &dictionary.parts,
                &dictionary.content,
                &stored,
                MAX_RESPONSE,
            )
            .ok_or(Unreadable::Changed(UNDECODABLE));
        }
        let size = zstd::zstd_safe::get_frame_content_size(&stored)
            .ok()
            .flatten()
            .filter(|size| *size <= MAX_RESPONSE)
            .ok_or(Unreadable::Changed(UNDECODABLE))?;
        let response = dictionary
            .decompressor
            .decompress(&stored, size as usize)
            .map_err(|_| Unreadable::Changed(UNDECODABLE))?;
        if response.len() as u64 != size {
            return Err(Unreadable::Changed(UNDECODABLE));
        }
        Ok(response)
    }

    /// Dictionary `id`; it is checked against its SHA-256 when it is first loaded.
    fn load(&mut self, connection: &Connection, id: i64) -> Result<&mut Dictionary, Unreadable> {
        Ok(match self.0.entry(id) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let (sha256, content): (Vec<u8>, Vec<u8>) = connection
                    .query_row(
                        "SELECT sha256, content FROM dictionaries WHERE id = ?1",
                        [id],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(|error| Unreadable::Store(store_error(error)))?
                    .ok_or(Unreadable::Changed(
                        "the compression dictionary it names is missing (the dictionaries were changed)",
                    ))?;
                let actual: [u8; 32] = Sha256::digest(&content).into();
                if actual.as_slice() != sha256.as_slice() {
                    return Err(Unreadable::Changed(
                        "the compression dictionary it names does not match its SHA-256 (the dictionary was changed)",
                    ));
                }
                // Its SHA-256 sits beside it in the same table, so an edit can change both: a
                // malformed section is a changed dictionary.
                let parts = super::parts::parse_section(&content)
                    .map_err(|_| {
                        Unreadable::Changed(
                            "the compression dictionary it names has a malformed parts section",
                        )
                    })?
                    .unwrap_or_default();
                let decompressor = zstd::bulk::Decompressor::with_dictionary(&content)
                    .map_err(|error| Unreadable::Store(store_error(error)))?;
                entry.insert(Dictionary {
                    sha256: actual,
                    content,
                    parts,
                    decompressor,
                })
            }
        })
    }
}

const COLUMNS: &str = "seq, recommendation_id, created_at, kind, caller, guideline_version, guideline_sha256, case_id, subject_id, request, response, response_dictionary";

/// `COLUMNS` and what a read checks each record against: its previous hash, hash and chain version.
/// The last two are the neighbours' links (the hash of the record before, the previous hash of the
/// one after), selected in the same query.
const CHECKED_COLUMNS: &str = "seq, recommendation_id, created_at, kind, caller, guideline_version, guideline_sha256, case_id, subject_id, request, response, response_dictionary, prev_hash, hash, chain_version, \
    (SELECT older.hash FROM records AS older WHERE older.seq < records.seq ORDER BY older.seq DESC LIMIT 1), \
    (SELECT newer.prev_hash FROM records AS newer WHERE newer.seq > records.seq ORDER BY newer.seq LIMIT 1)";

/// A row as stored: the record with its response still as stored, and the dictionary it names.
fn row_to_stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<(StoredRecord, Option<i64>)> {
    let kind: String = row.get(3)?;
    let record = StoredRecord {
        seq: row.get(0)?,
        record: NewRecord {
            recommendation_id: row.get(1)?,
            created_at: row.get(2)?,
            kind: Kind::parse(&kind).unwrap_or(Kind::Feedback),
            caller: row.get(4)?,
            guideline_version: row.get(5)?,
            guideline_sha256: row.get(6)?,
            case_id: row.get(7)?,
            subject_id: row.get(8)?,
            request: row.get(9)?,
            response: row.get(10)?,
            response_dictionary: None,
        },
    };
    Ok((record, row.get(11)?))
}

impl ReaderState {
    /// The records a query selects (with `CHECKED_COLUMNS`), responses as they were sent. Each
    /// is checked against its hash and its neighbours in the chain, as `audit verify` checks it:
    /// a changed record is refused ([`AuditError::Corrupt`]), never served.
    fn records(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredRecord>, AuditError> {
        let rows = self
            .connection
            .prepare_cached(sql)
            .map_err(store_error)?
            .query_map(params, |row| {
                Ok((
                    row_to_stored(row)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, Vec<u8>>(12)?,
                    row.get::<_, Vec<u8>>(13)?,
                    row.get::<_, i64>(14)?,
                    row.get::<_, Option<Vec<u8>>>(15)?,
                    row.get::<_, Option<Vec<u8>>>(16)?,
                ))
            })
            .map_err(|error| corrupt_or_store(&error))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| corrupt_or_store(&error))?;
        let mut records = Vec::with_capacity(rows.len());
        for ((mut stored, dictionary), kind, prev_hash, hash, version, previous, next_prev_hash) in
            rows
        {
            let unreadable = |unreadable: Unreadable, seq: i64| match unreadable {
                Unreadable::Store(error) => error,
                Unreadable::Changed(problem) => AuditError::Corrupt(format!(
                    "record {seq} cannot be read: {problem}; run `vlms-rt-server audit verify`"
                )),
            };
            let as_stored = std::mem::take(&mut stored.record.response);
            let (hashed_response, response_dictionary) = as_hashed(
                &mut self.dictionaries,
                &self.connection,
                version,
                dictionary,
                as_stored.clone(),
            )
            .map_err(|problem| unreadable(problem, stored.seq))?;
            let mut hashed = stored.clone();
            hashed.record.response = hashed_response;
            hashed.record.response_dictionary = response_dictionary;
            let previous = neighbour_hash(previous, stored.seq)?;
            let next_prev_hash = neighbour_hash(next_prev_hash, stored.seq)?;
            super::check_read(
                &previous.unwrap_or([0; 32]),
                &hashed,
                &kind,
                &prev_hash,
                &hash,
                next_prev_hash.as_ref().map(<[u8; 32]>::as_slice),
            )?;
            stored.record.response = self
                .dictionaries
                .response(&self.connection, dictionary, as_stored)
                .map_err(|problem| unreadable(problem, stored.seq))?;
            records.push(stored);
        }
        Ok(records)
    }

    fn with_feedback(&mut self, record: StoredRecord) -> Result<RecordWithFeedback, AuditError> {
        let feedback = self.records(
            &format!("SELECT {CHECKED_COLUMNS} FROM records WHERE subject_id = ?1 AND kind = 'feedback' ORDER BY seq"),
            [&record.record.recommendation_id],
        )?;
        Ok(RecordWithFeedback { record, feedback })
    }
}

impl SqliteReader {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, ReaderState>, AuditError> {
        self.state
            .lock()
            .map_err(|_| AuditError::Unavailable("reader lock poisoned".into()))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Reader for SqliteReader {
    fn card(&self, uuid: &str) -> Result<Option<StoredRecord>, AuditError> {
        let mut state = self.state()?;
        Ok(state
            .records(
                &format!(
                    "SELECT {CHECKED_COLUMNS} FROM records WHERE recommendation_id = ?1 AND kind = 'cds-card'"
                ),
                [uuid],
            )?
            .pop())
    }

    fn get(&self, recommendation_id: &str) -> Result<Option<RecordWithFeedback>, AuditError> {
        let mut state = self.state()?;
        let record = state
            .records(
                &format!(
                    "SELECT {CHECKED_COLUMNS} FROM records WHERE recommendation_id = ?1 AND kind IN ('recommend', 'check')"
                ),
                [recommendation_id],
            )?
            .pop();
        record.map(|record| state.with_feedback(record)).transpose()
    }

    fn list(
        &self,
        case_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RecordWithFeedback>, AuditError> {
        let mut state = self.state()?;
        let records = state.records(
            &format!(
                "SELECT {CHECKED_COLUMNS} FROM records WHERE case_id = ?1 AND kind IN ('recommend', 'check') AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ),
            params![
                case_id,
                before.unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
        )?;
        records
            .into_iter()
            .map(|record| state.with_feedback(record))
            .collect()
    }

    fn has_older(&self, case_id: &str, before: i64) -> Result<bool, AuditError> {
        let state = self.state()?;
        state
            .connection
            .prepare_cached(
                "SELECT 1 FROM records WHERE case_id = ?1 AND kind IN ('recommend', 'check') AND seq < ?2 LIMIT 1",
            )
            .map_err(store_error)?
            .exists(params![case_id, before])
            .map_err(store_error)
    }
}

/// A stored response in the form its record's hash covers: as sent (chain version 1), or as stored
/// with its dictionary's SHA-256 (version 2). Either way a compressed response must decompress.
fn as_hashed(
    dictionaries: &mut Dictionaries,
    connection: &Connection,
    version: i64,
    dictionary: Option<i64>,
    stored: Vec<u8>,
) -> Result<(Vec<u8>, Option<[u8; 32]>), Unreadable> {
    let sent = dictionaries.response(connection, dictionary, stored.clone())?;
    Ok(match (version, dictionary) {
        (CHAIN_COMPRESSED, Some(id)) => (stored, Some(dictionaries.load(connection, id)?.sha256)),
        _ => (sent, None),
    })
}

/// Walks the hash chain of the database at `path`: the number of records when intact, or the first
/// broken link. Every compressed response must decompress; each record's hash is checked by its
/// chain version.
pub fn verify(path: &Path) -> Result<Result<u64, BrokenLink>, AuditError> {
    if !path.exists() {
        return Err(AuditError::Unavailable(format!(
            "no audit database at {}",
            path.display()
        )));
    }
    let connection = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(store_error)?;
    // A newer build's database may hold records this one cannot read or check: refused, rather
    // than reported as broken.
    let has_migrations: i64 = connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            [],
            |row| row.get(0),
        )
        .map_err(store_error)?;
    if has_migrations > 0 {
        super::refuse_newer_schema(newest_migration(&connection)?, MIGRATIONS)?;
    }
    let mut dictionaries = Dictionaries::default();
    // A copy made before migration 3 (a backup from an older version) has no dictionaries: every
    // response in it is stored as sent; one made before migration 4 has chain version 1 throughout.
    let has_column = |name: &str| {
        connection
            .query_row(
                "SELECT count(*) FROM pragma_table_info('records') WHERE name = ?1",
                [name],
                |row| row.get::<_, i64>(0),
            )
            .map(|count| count > 0)
            .map_err(store_error)
    };
    let mut columns = COLUMNS.to_string();
    if !has_column("response_dictionary")? {
        columns = columns.replace("response_dictionary", "NULL AS response_dictionary");
    }
    let chain_version = if has_column("chain_version")? {
        "chain_version"
    } else {
        "1 AS chain_version"
    };
    let mut statement = connection
        .prepare(&format!(
            "SELECT {columns}, prev_hash, hash, {chain_version} FROM records ORDER BY seq"
        ))
        .map_err(store_error)?;
    let mut rows = statement.query([]).map_err(store_error)?;
    let mut previous = [0_u8; 32];
    let mut count = 0_u64;
    while let Some(row) = rows.next().map_err(store_error)? {
        // A value of another type than this program writes (text where it wrote a blob, as an
        // edit with the sqlite3 shell easily leaves) is a changed record, named like any other.
        let changed = |error: rusqlite::Error| -> Result<Result<u64, BrokenLink>, AuditError> {
            match error {
                rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..) => Ok(Err(BrokenLink {
                    seq: row.get(0).unwrap_or(-1),
                    recommendation_id: match row.get_ref(1) {
                        Ok(rusqlite::types::ValueRef::Text(bytes))
                        | Ok(rusqlite::types::ValueRef::Blob(bytes)) => {
                            String::from_utf8_lossy(bytes).into_owned()
                        }
                        Ok(rusqlite::types::ValueRef::Integer(number)) => number.to_string(),
                        _ => String::new(),
                    },
                    problem: format!(
                        "a column holds a value of another type than was written ({error}): the record was changed"
                    ),
                })),
                other => Err(store_error(other)),
            }
        };
        let read = row_to_stored(row).and_then(|stored| {
            Ok((
                stored,
                row.get::<_, i64>(14)?,
                row.get::<_, String>(3)?,
                row.get::<_, Vec<u8>>(12)?,
                row.get::<_, Vec<u8>>(13)?,
            ))
        });
        let ((mut record, dictionary), version, kind, prev_hash, hash) = match read {
            Ok(read) => read,
            Err(error) => return changed(error),
        };
        let stored = std::mem::take(&mut record.record.response);
        match as_hashed(&mut dictionaries, &connection, version, dictionary, stored) {
            Ok((response, response_dictionary)) => {
                record.record.response = response;
                record.record.response_dictionary = response_dictionary;
            }
            Err(Unreadable::Store(error)) => return Err(error),
            Err(Unreadable::Changed(problem)) => {
                return Ok(Err(BrokenLink {
                    seq: record.seq,
                    recommendation_id: record.record.recommendation_id,
                    problem: problem.to_string(),
                }));
            }
        }
        previous = match check_link(&previous, &record, &kind, &prev_hash, &hash) {
            Ok(next) => next,
            Err(broken) => return Ok(Err(broken)),
        };
        count += 1;
    }
    Ok(Ok(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_failures_keep_their_kind() {
        use rusqlite::ffi;
        let failure =
            |code| sqlite_error(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
        for (code, kind) in [
            (ffi::SQLITE_BUSY, AuditError::Busy(String::new())),
            (ffi::SQLITE_LOCKED, AuditError::Busy(String::new())),
            (ffi::SQLITE_FULL, AuditError::Full(String::new())),
            (ffi::SQLITE_CORRUPT, AuditError::Corrupt(String::new())),
            (ffi::SQLITE_IOERR, AuditError::Unavailable(String::new())),
        ] {
            let error = failure(code);
            assert_eq!(
                std::mem::discriminant(&error),
                std::mem::discriminant(&kind),
                "SQLite code {code}: {error:?}, expected the kind of {kind:?}"
            );
        }
    }

    fn temp_db() -> PathBuf {
        std::env::temp_dir().join(format!("vlms-rt-audit-{}.sqlite3", uuid::Uuid::new_v4()))
    }

    /// A new database at `path` as a build that knew only the first `version` migrations left it.
    fn database_at_version(path: &Path, version: usize) -> Connection {
        let connection = Connection::open(path).expect("open");
        connection
            .execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .expect("schema_migrations");
        for (number, sql) in &MIGRATIONS[..version] {
            connection.execute_batch(sql).expect("migration");
            connection
                .execute(
                    "INSERT INTO schema_migrations VALUES (?1, 'then')",
                    [number],
                )
                .expect("migration recorded");
        }
        connection
    }

    fn record(id: &str, case_id: &str, kind: Kind, subject: Option<&str>) -> NewRecord {
        NewRecord {
            recommendation_id: id.into(),
            created_at: super::super::now_rfc3339(),
            kind,
            caller: "anonymous".into(),
            guideline_version: "2026.1".into(),
            guideline_sha256: "ab".repeat(32),
            case_id: case_id.into(),
            subject_id: subject.map(str::to_string),
            request: vec![1, 2, 3],
            response: format!("plan {id}").into_bytes(),
            response_dictionary: None,
        }
    }

    /// `new` as the service hands it to `store`: its response compressed when the store compresses
    /// and that makes it smaller.
    fn prepared(store: &SqliteStore, mut new: NewRecord) -> NewRecord {
        let (response, dictionary) =
            super::super::compress::stored_response(store.compression().as_deref(), &new.response);
        new.response = response;
        new.response_dictionary = dictionary;
        new
    }

    #[test]
    fn records_chain_read_back_and_page_newest_first() {
        let path = temp_db();
        let (mut store, reader) = open(&path, None).expect("open");
        store
            .append(&[
                record("a", "case-1", Kind::Recommend, None),
                record("b", "case-2", Kind::Check, None),
            ])
            .expect("append");
        store
            .append(&[
                record("c", "case-1", Kind::Recommend, None),
                record("f", "case-1", Kind::Feedback, Some("a")),
            ])
            .expect("append");
        let got = reader.get("a").expect("read").expect("found");
        assert_eq!(got.record.record.response, b"plan a");
        assert_eq!(got.feedback.len(), 1);
        assert!(
            reader.get("f").expect("read").is_none(),
            "feedback is not a record of its own"
        );
        assert!(reader.get("zzz").expect("read").is_none());
        let page = reader.list("case-1", None, 1).expect("list");
        assert_eq!(page[0].record.record.recommendation_id, "c");
        let next = reader
            .list("case-1", Some(page[0].record.seq), 10)
            .expect("list");
        assert_eq!(
            next.iter()
                .map(|r| r.record.record.recommendation_id.as_str())
                .collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(verify(&path).expect("verify"), Ok(4));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Reopening (a restart) runs no migration twice and keeps chaining.
        drop(store);
        let (mut store, _) = open(&path, None).expect("reopen");
        store
            .append(&[record("d", "case-3", Kind::Recommend, None)])
            .expect("append");
        assert_eq!(verify(&path).expect("verify"), Ok(5));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_version_1_database_is_migrated_and_feedback_reads_use_the_partial_index() {
        let path = temp_db();
        drop(database_at_version(&path, 1));
        let (mut store, reader) = open(&path, None).expect("open migrates");
        store
            .append(&[
                record("a", "x", Kind::Recommend, None),
                record("f", "x", Kind::Feedback, Some("a")),
            ])
            .expect("append");
        assert_eq!(
            reader
                .get("a")
                .expect("read")
                .expect("found")
                .feedback
                .len(),
            1
        );
        let connection = Connection::open(&path).expect("open");
        let versions: Vec<i64> = connection
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(versions, vec![1, 2, 3, 4]);
        let plan: String = connection
            .query_row(
                "EXPLAIN QUERY PLAN SELECT seq FROM records WHERE subject_id = 'a' AND kind = 'feedback' ORDER BY seq",
                [],
                |row| row.get(3),
            )
            .expect("plan");
        assert!(plan.contains("records_by_subject"), "{plan}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused_not_migrated_or_misreported() {
        let path = temp_db();
        {
            let (mut store, _) = open(&path, None).expect("open");
            store
                .append(&[record("a", "x", Kind::Recommend, None)])
                .expect("append");
        }
        let newer = MIGRATIONS.last().expect("migrations").0 + 1;
        Connection::open(&path)
            .expect("open")
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 'later')",
                [newer],
            )
            .expect("a newer build's migration");
        let counts = || {
            let connection = Connection::open(&path).expect("open");
            ["records", "dictionaries", "schema_migrations"].map(|table| {
                connection
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                        row.get::<_, i64>(0)
                    })
                    .expect("count")
            })
        };
        let before = counts();
        assert_eq!(before[1], 0, "opened without a dictionary: none saved");
        // Opened with a dictionary, a store that was not refused would save it first.
        let profile = crate::guideline::embedded().expect("profile");
        let dictionary = super::super::dictionary::plan_dictionary(&profile);
        for error in [
            open(&path, Some(&dictionary))
                .map(|_| ())
                .expect_err("open refuses"),
            verify(&path).map(|_| ()).expect_err("verify refuses"),
        ] {
            let text = error.to_string();
            assert!(
                text.contains(&format!("schema version {newer}")) && text.contains("newer"),
                "{text}"
            );
        }
        // The refused open wrote nothing: no record, no dictionary, no migration.
        assert_eq!(counts(), before);
        let _ = std::fs::remove_file(&path);
        // A database holding only a newer build's migration record: refused before any table of
        // this build's is created in it.
        let bare = temp_db();
        let tables = || -> i64 {
            Connection::open(&bare)
                .expect("open")
                .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
                .expect("tables")
        };
        Connection::open(&bare)
            .expect("open")
            .execute_batch(&format!(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);
                 INSERT INTO schema_migrations VALUES ({newer}, 'later');"
            ))
            .expect("bare");
        assert_eq!(tables(), 1);
        open(&bare, Some(&dictionary))
            .map(|_| ())
            .expect_err("open refuses");
        verify(&bare).map(|_| ()).expect_err("verify refuses");
        assert_eq!(tables(), 1);
        let _ = std::fs::remove_file(&bare);
    }

    #[test]
    fn verify_reads_a_copy_made_before_compression() {
        let path = temp_db();
        let connection = database_at_version(&path, 2);
        let old = record("a", "x", Kind::Recommend, None);
        let hash = chain_hash(&[0; 32], &old);
        connection
            .execute(
                "INSERT INTO records (recommendation_id, created_at, kind, caller, guideline_version, guideline_sha256,
                    case_id, subject_id, request, response, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    old.recommendation_id,
                    old.created_at,
                    old.kind.as_str(),
                    old.caller,
                    old.guideline_version,
                    old.guideline_sha256,
                    old.case_id,
                    old.subject_id,
                    old.request,
                    old.response,
                    [0_u8; 32].as_slice(),
                    hash.as_slice(),
                ],
            )
            .expect("insert");
        drop(connection);
        assert_eq!(verify(&path).expect("verify"), Ok(1));
        // Opened by this version, it is migrated and keeps chaining, old and new records readable.
        let profile = crate::guideline::embedded().expect("profile");
        let dictionary = super::super::dictionary::plan_dictionary(&profile);
        let (mut store, reader) = open(&path, Some(&dictionary)).expect("open");
        let mut new = record("b", "x", Kind::Recommend, None);
        new.response = plan_like(&dictionary, "b");
        store
            .append(&[prepared(&store, new.clone())])
            .expect("append");
        assert_eq!(
            reader.get("a").expect("read").expect("found").record.record,
            old
        );
        assert_eq!(
            reader.get("b").expect("read").expect("found").record.record,
            new
        );
        assert_eq!(verify(&path).expect("verify"), Ok(2));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn verify_names_the_first_changed_or_removed_record() {
        let path = temp_db();
        let (mut store, _) = open(&path, None).expect("open");
        store
            .append(&[
                record("a", "x", Kind::Recommend, None),
                record("b", "x", Kind::Recommend, None),
                record("c", "x", Kind::Recommend, None),
            ])
            .expect("append");
        let tamper = Connection::open(&path).expect("open");
        tamper
            .execute(
                "UPDATE records SET response = X'00' WHERE recommendation_id = 'b'",
                [],
            )
            .expect("tamper");
        let broken = verify(&path).expect("verify").expect_err("broken");
        assert_eq!((broken.seq, broken.recommendation_id.as_str()), (2, "b"));
        assert!(broken.problem.contains("changed"));
        tamper
            .execute("DELETE FROM records WHERE recommendation_id = 'b'", [])
            .expect("delete");
        let broken = verify(&path).expect("verify").expect_err("broken");
        assert_eq!(broken.recommendation_id, "c");
        assert!(broken.problem.contains("removed"));
        let _ = std::fs::remove_file(&path);
    }

    /// A plan-like response for zstd (not protobuf fields, so no parts frame): a stretch of the
    /// sample plans that end the dictionary, with this record's own bytes around it.
    fn plan_like(dictionary: &[u8], id: &str) -> Vec<u8> {
        let mut response = format!("plan {id} ").into_bytes();
        response.extend_from_slice(&dictionary[dictionary.len() - 7_500..]);
        response.extend_from_slice(id.as_bytes());
        response
    }

    /// The response a reader gives back for `id`.
    fn response_of(reader: &SqliteReader, id: &str) -> Vec<u8> {
        reader
            .get(id)
            .expect("read")
            .expect("found")
            .record
            .record
            .response
    }

    fn stored_response(path: &Path, id: &str) -> (usize, Option<i64>) {
        Connection::open(path)
            .expect("open")
            .query_row(
                "SELECT length(response), response_dictionary FROM records WHERE recommendation_id = ?1",
                [id],
                |row| Ok((row.get::<_, i64>(0)? as usize, row.get(1)?)),
            )
            .expect("row")
    }

    #[test]
    fn compressed_responses_read_back_byte_for_byte_across_dictionaries() {
        let path = temp_db();
        let profile = crate::guideline::embedded().expect("profile");
        let dictionary = super::super::dictionary::plan_dictionary(&profile);
        let (mut store, reader) = open(&path, Some(&dictionary)).expect("open");
        let plan = plan_like(&dictionary, "a");
        // Bytes no dictionary helps with are stored as sent.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect();
        let mut a = record("a", "x", Kind::Recommend, None);
        a.response = plan.clone();
        let mut b = record("b", "x", Kind::Check, None);
        b.response = noise.clone();
        store
            .append(&[prepared(&store, a), prepared(&store, b)])
            .expect("append");
        let (stored, used) = stored_response(&path, "a");
        assert!(
            used.is_some() && stored * 10 < plan.len(),
            "{stored} of {}",
            plan.len()
        );
        assert_eq!(stored_response(&path, "b"), (noise.len(), None));
        assert_eq!(response_of(&reader, "a"), plan);
        assert_eq!(response_of(&reader, "b"), noise);

        // A restart with another dictionary (an upgrade, a new guideline) keeps the old one for the
        // records that use it.
        drop((store, reader));
        let other = dictionary[..100_000].to_vec();
        let (mut store, reader) = open(&path, Some(&other)).expect("reopen");
        let mut c = record("c", "x", Kind::Recommend, None);
        c.response = plan_like(&dictionary, "c");
        store
            .append(&[prepared(&store, c.clone())])
            .expect("append");
        let (_, used_now) = stored_response(&path, "c");
        assert!(used_now.is_some() && used_now != used);
        let listed: Vec<Vec<u8>> = reader
            .list("x", None, 10)
            .expect("list")
            .into_iter()
            .map(|found| found.record.record.response)
            .collect();
        assert_eq!(listed, vec![c.response, noise, plan.clone()]);
        // And a store opened without a dictionary still reads them.
        drop((store, reader));
        let (_, reader) = open(&path, None).expect("reopen");
        assert_eq!(response_of(&reader, "a"), plan);
        assert_eq!(verify(&path).expect("verify"), Ok(3));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn plans_are_stored_as_checksummed_zstd_frames_that_read_back_exactly_and_verify() {
        let path = temp_db();
        let profile = crate::guideline::embedded().expect("profile");
        let dictionary = super::super::dictionary::plan_dictionary(&profile);
        let (mut store, reader) = open(&path, Some(&dictionary)).expect("open");
        // Real plans: those of the dictionary's sample cases, each under its own id.
        let plans: Vec<(String, Vec<u8>)> = super::super::dictionary::sample_cases()
            .into_iter()
            .enumerate()
            .map(|(n, case)| {
                let request = crate::pb::RecommendRequest { case: Some(case) };
                let case = crate::convert::case_from_request(&request).expect("valid");
                let id = format!("01KB{n:022}");
                let plan = crate::wire::encode_plan(&crate::core::recommend(&profile, &case), &id);
                (id, plan)
            })
            .collect();
        let records: Vec<NewRecord> = plans
            .iter()
            .map(|(id, plan)| {
                let mut new = record(id, "x", Kind::Recommend, None);
                new.response = plan.clone();
                prepared(&store, new)
            })
            .collect();
        // A check's answer (here: a plan nested in field 1) is compressed the same way.
        let mut check = record("check", "x", Kind::Check, None);
        check.response = vec![0x0a];
        prost::encoding::encode_varint(plans[0].1.len() as u64, &mut check.response);
        check.response.extend_from_slice(&plans[0].1);
        let check_stored = prepared(&store, check.clone());
        assert!(check_stored.response_dictionary.is_some());
        assert!(check_stored.response.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
        store.append(&records).expect("append");
        store.append(&[check_stored]).expect("append");
        let connection = Connection::open(&path).expect("open");
        for (id, plan) in &plans {
            let stored: Vec<u8> = connection
                .query_row(
                    "SELECT response FROM records WHERE recommendation_id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .expect("row");
            assert!(
                stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
                "a zstd frame"
            );
            assert_ne!(stored[4] & 0b100, 0, "with its content checksum");
            assert!(
                stored.len() * 4 < plan.len(),
                "{} of {}",
                stored.len(),
                plan.len()
            );
            assert_eq!(&response_of(&reader, id), plan);
        }
        assert_eq!(response_of(&reader, "check"), check.response);
        let count = plans.len() as u64 + 1;
        assert_eq!(verify(&path).expect("verify"), Ok(count));

        // Reopened with another dictionary (a later build's), the frames still read: each names
        // the dictionary it was written against.
        drop((store, reader));
        let (_, reader) = open(&path, Some(&dictionary[1000..])).expect("reopen");
        assert_eq!(response_of(&reader, &plans[3].0), plans[3].1);

        // One byte of a frame changed: verify names that record.
        connection
            .execute(
                "UPDATE records SET response = CAST(substr(response, 1, 40) || X'41' || substr(response, 42) AS BLOB) WHERE recommendation_id = ?1",
                [&plans[5].0],
            )
            .expect("change");
        let broken = verify(&path).expect("verify").expect_err("broken");
        assert_eq!(broken.recommendation_id, plans[5].0);
        // Cut short, it no longer reads as a frame at all.
        connection
            .execute(
                "UPDATE records SET response = substr(response, 1, 20) WHERE recommendation_id = ?1",
                [&plans[5].0],
            )
            .expect("cut");
        let broken = verify(&path).expect("verify").expect_err("broken");
        assert_eq!(broken.recommendation_id, plans[5].0);
        assert!(broken.problem.contains("decompress"), "{}", broken.problem);
        // Text where a blob was written (`SET response = 'x'` in the sqlite3 shell), or an id
        // turned into a blob with the same bytes: named too, not a failure to read.
        for (edit, id) in [
            (
                "UPDATE records SET response = 'x' WHERE recommendation_id = ?1",
                &plans[2].0,
            ),
            (
                "UPDATE records SET recommendation_id = CAST(recommendation_id AS BLOB) WHERE recommendation_id = ?1",
                &plans[1].0,
            ),
        ] {
            connection.execute(edit, [id]).expect("edit");
            let broken = verify(&path).expect("verify").expect_err("broken");
            assert_eq!(&broken.recommendation_id, id);
            assert!(broken.problem.contains("type"), "{}", broken.problem);
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn verify_names_a_changed_compressed_record_or_dictionary() {
        let path = temp_db();
        let profile = crate::guideline::embedded().expect("profile");
        let dictionary = super::super::dictionary::plan_dictionary(&profile);
        let (mut store, reader) = open(&path, Some(&dictionary)).expect("open");
        let records: Vec<NewRecord> = ["a", "b", "c"]
            .into_iter()
            .map(|id| {
                let mut new = record(id, "x", Kind::Recommend, None);
                new.response = plan_like(&dictionary, id);
                prepared(&store, new)
            })
            .collect();
        assert!(
            records
                .iter()
                .all(|record| record.response_dictionary.is_some())
        );
        store.append(&records).expect("append");
        drop(store);
        assert_eq!(verify(&path).expect("verify"), Ok(3));
        let tamper = Connection::open(&path).expect("open");
        // One byte of b's compressed response.
        let mut stored: Vec<u8> = tamper
            .query_row(
                "SELECT response FROM records WHERE recommendation_id = 'b'",
                [],
                |row| row.get(0),
            )
            .expect("row");
        let last = stored.len() - 1;
        stored[last] ^= 0x01;
        tamper
            .execute(
                "UPDATE records SET response = ?1 WHERE recommendation_id = 'b'",
                [&stored],
            )
            .expect("tamper");
        let broken = verify(&path).expect("verify").expect_err("broken");
        assert_eq!((broken.seq, broken.recommendation_id.as_str()), (2, "b"));
        assert!(broken.problem.contains("changed"), "{}", broken.problem);
        assert!(
            reader.get("b").is_err(),
            "a changed record is not served as if intact"
        );
        // The dictionary itself: every record compressed with it is in doubt, the first is named.
        stored[last] ^= 0x01;
        tamper
            .execute(
                "UPDATE records SET response = ?1 WHERE recommendation_id = 'b'",
                [&stored],
            )
            .expect("restore");
        assert_eq!(verify(&path).expect("verify"), Ok(3));
        // Its chain version: read as hashed over the response as sent, it no longer matches.
        tamper
            .execute(
                "UPDATE records SET chain_version = 1 WHERE recommendation_id = 'b'",
                [],
            )
            .expect("tamper");
        let broken = verify(&path).expect("verify").expect_err("broken");
        assert_eq!(broken.recommendation_id, "b");
        assert!(broken.problem.contains("changed"), "{}", broken.problem);
        tamper
            .execute(
                "UPDATE records SET chain_version = 2 WHERE recommendation_id = 'b'",
                [],
            )
            .expect("restore");
        assert_eq!(verify(&path).expect("verify"), Ok(3));
        tamper
            .execute(
                "UPDATE dictionaries SET content = substr(content, 1, 1000)",
                [],
            )
            .expect("tamper");
        let broken = verify(&path).expect("verify").expect_err("broken");
        assert_eq!(broken.recommendation_id, "a");
        assert!(broken.problem.contains("dictionary"), "{}", broken.problem);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_copy_with_responses_hashed_as_sent_verifies_and_keeps_chaining() {
        // Migration 3's records: compressed, but hashed over the response as sent.
        let path = temp_db();
        let profile = crate::guideline::embedded().expect("profile");
        let dictionary = super::super::dictionary::plan_dictionary(&profile);
        let compression = Compression::new(&dictionary)
            .expect("loads")
            .expect("not empty");
        let connection = database_at_version(&path, 3);
        let id = save_dictionary(&connection, &dictionary).expect("dictionary");
        let mut old = record("a", "x", Kind::Recommend, None);
        old.response = plan_like(&dictionary, "a");
        let hash = chain_hash(&[0; 32], &old);
        let frame = compression.compress(&old.response).expect("compresses");
        connection
            .execute(
                "INSERT INTO records (recommendation_id, created_at, kind, caller, guideline_version, guideline_sha256,
                    case_id, subject_id, request, response, prev_hash, hash, response_dictionary)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    old.recommendation_id,
                    old.created_at,
                    old.kind.as_str(),
                    old.caller,
                    old.guideline_version,
                    old.guideline_sha256,
                    old.case_id,
                    old.subject_id,
                    old.request,
                    frame,
                    [0_u8; 32].as_slice(),
                    hash.as_slice(),
                    id,
                ],
            )
            .expect("insert");
        drop(connection);
        assert_eq!(verify(&path).expect("verify"), Ok(1));
        let (mut store, reader) = open(&path, Some(&dictionary)).expect("open migrates");
        let mut new = record("b", "x", Kind::Recommend, None);
        new.response = plan_like(&dictionary, "b");
        store
            .append(&[prepared(&store, new.clone())])
            .expect("append");
        assert_eq!(verify(&path).expect("verify"), Ok(2));
        assert_eq!(response_of(&reader, "a"), old.response);
        assert_eq!(response_of(&reader, "b"), new.response);
        let versions: Vec<i64> = Connection::open(&path)
            .expect("open")
            .prepare("SELECT chain_version FROM records ORDER BY seq")
            .expect("prepare")
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(versions, vec![1, CHAIN_COMPRESSED]);
        // A record compressed with a dictionary the store does not hold is refused, not stored.
        let other = Compression::new(&dictionary[..50_000])
            .expect("loads")
            .expect("not empty");
        let mut foreign = record("c", "x", Kind::Recommend, None);
        let (frame, used) =
            super::super::compress::stored_response(Some(&other), &plan_like(&dictionary, "c"));
        foreign.response = frame;
        foreign.response_dictionary = used;
        assert!(store.append(&[foreign]).is_err());
        assert_eq!(verify(&path).expect("verify"), Ok(2));
        let _ = std::fs::remove_file(&path);
    }
}
