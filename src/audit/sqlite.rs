//! The SQLite audit store: WAL, `synchronous=FULL`, versioned migrations at start-up, the file
//! created with mode 0600 (it holds clinical data).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AuditError, BrokenLink, Kind, NewRecord, Reader, RecordWithFeedback, Store, StoredRecord,
    chain_hash, check_link,
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
];

fn store_error(error: impl std::fmt::Display) -> AuditError {
    AuditError::Store(error.to_string())
}

fn connect(path: &Path) -> Result<Connection, AuditError> {
    let connection = Connection::open(path).map_err(store_error)?;
    // A record is ~8 KB (request and plan): 32 KiB pages keep most records off overflow chains.
    // page_size only takes effect on a new database, before WAL mode is set.
    connection
        .execute_batch(
            "PRAGMA page_size = 32768; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
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
        Err(error) => Err(AuditError::Store(format!(
            "cannot create {}: {error}",
            path.display()
        ))),
    }
}

fn migrate(connection: &mut Connection) -> Result<(), AuditError> {
    connection
        .execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);")
        .map_err(store_error)?;
    for (version, sql) in MIGRATIONS {
        let transaction = connection.transaction().map_err(store_error)?;
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

/// Opens (creating and migrating if needed) the audit database at `path`.
pub fn open(path: &Path) -> Result<(SqliteStore, SqliteReader), AuditError> {
    create_private(path)?;
    let mut writer = connect(path)?;
    migrate(&mut writer)?;
    let reader = connect(path)?;
    Ok((
        SqliteStore {
            connection: writer,
            last_hash: None,
        },
        SqliteReader {
            connection: Mutex::new(reader),
            path: path.to_path_buf(),
        },
    ))
}

/// The writing connection.
pub struct SqliteStore {
    connection: Connection,
    last_hash: Option<[u8; 32]>,
}

impl SqliteStore {
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
            Some(bytes) => bytes
                .try_into()
                .map_err(|_| AuditError::Store("the last record's hash is not 32 bytes".into())),
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
        let transaction = self.connection.transaction().map_err(store_error)?;
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO records (recommendation_id, created_at, kind, caller, guideline_version, guideline_sha256,
                        case_id, subject_id, request, response, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(store_error)?;
            for record in records {
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
                    ])
                    .map_err(store_error)?;
                previous = hash;
            }
        }
        transaction.commit().map_err(store_error)?;
        self.last_hash = Some(previous);
        Ok(())
    }

    fn probe(&mut self) -> Result<(), AuditError> {
        self.connection
            .execute(
                "INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?1)",
                [super::now_rfc3339()],
            )
            .map_err(store_error)?;
        Ok(())
    }
}

/// The reading connection.
pub struct SqliteReader {
    connection: Mutex<Connection>,
    path: PathBuf,
}

const COLUMNS: &str = "seq, recommendation_id, created_at, kind, caller, guideline_version, guideline_sha256, case_id, subject_id, request, response";

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    let kind: String = row.get(3)?;
    Ok(StoredRecord {
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
        },
    })
}

impl SqliteReader {
    fn with_feedback(
        connection: &Connection,
        record: StoredRecord,
    ) -> Result<RecordWithFeedback, AuditError> {
        let mut statement = connection
            .prepare_cached(&format!("SELECT {COLUMNS} FROM records WHERE subject_id = ?1 AND kind = 'feedback' ORDER BY seq"))
            .map_err(store_error)?;
        let feedback = statement
            .query_map([&record.record.recommendation_id], row_to_record)
            .map_err(store_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(store_error)?;
        Ok(RecordWithFeedback { record, feedback })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Reader for SqliteReader {
    fn get(&self, recommendation_id: &str) -> Result<Option<RecordWithFeedback>, AuditError> {
        let connection = self
            .connection
            .lock()
            .map_err(|_| AuditError::Store("reader lock poisoned".into()))?;
        let record = connection
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM records WHERE recommendation_id = ?1 AND kind != 'feedback'"
            ))
            .map_err(store_error)?
            .query_row([recommendation_id], row_to_record)
            .optional()
            .map_err(store_error)?;
        record
            .map(|record| Self::with_feedback(&connection, record))
            .transpose()
    }

    fn list(
        &self,
        case_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RecordWithFeedback>, AuditError> {
        let connection = self
            .connection
            .lock()
            .map_err(|_| AuditError::Store("reader lock poisoned".into()))?;
        let records = connection
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM records WHERE case_id = ?1 AND kind != 'feedback' AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ))
            .map_err(store_error)?
            .query_map(params![case_id, before.unwrap_or(i64::MAX), i64::try_from(limit).unwrap_or(i64::MAX)], row_to_record)
            .map_err(store_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(store_error)?;
        records
            .into_iter()
            .map(|record| Self::with_feedback(&connection, record))
            .collect()
    }
}

/// Walks the hash chain of the database at `path`: the number of records when intact, or the first
/// broken link.
pub fn verify(path: &Path) -> Result<Result<u64, BrokenLink>, AuditError> {
    if !path.exists() {
        return Err(AuditError::Store(format!(
            "no audit database at {}",
            path.display()
        )));
    }
    let connection = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(store_error)?;
    let mut statement = connection
        .prepare(&format!(
            "SELECT {COLUMNS}, prev_hash, hash FROM records ORDER BY seq"
        ))
        .map_err(store_error)?;
    let mut rows = statement.query([]).map_err(store_error)?;
    let mut previous = [0_u8; 32];
    let mut count = 0_u64;
    while let Some(row) = rows.next().map_err(store_error)? {
        let record = row_to_record(row).map_err(store_error)?;
        let kind: String = row.get(3).map_err(store_error)?;
        let prev_hash: Vec<u8> = row.get(11).map_err(store_error)?;
        let hash: Vec<u8> = row.get(12).map_err(store_error)?;
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

    fn temp_db() -> PathBuf {
        std::env::temp_dir().join(format!("vlms-rt-audit-{}.sqlite3", uuid::Uuid::new_v4()))
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
        }
    }

    #[test]
    fn records_chain_read_back_and_page_newest_first() {
        let path = temp_db();
        let (mut store, reader) = open(&path).expect("open");
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
        let (mut store, _) = open(&path).expect("reopen");
        store
            .append(&[record("d", "case-3", Kind::Recommend, None)])
            .expect("append");
        assert_eq!(verify(&path).expect("verify"), Ok(5));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_version_1_database_is_migrated_and_feedback_reads_use_the_partial_index() {
        let path = temp_db();
        {
            let connection = Connection::open(&path).expect("open");
            connection
                .execute_batch(&format!(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);
                     {}
                     INSERT INTO schema_migrations VALUES (1, 'then');",
                    MIGRATIONS[0].1
                ))
                .expect("version 1");
        }
        let (mut store, reader) = open(&path).expect("open migrates");
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
        assert_eq!(versions, vec![1, 2]);
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
    fn verify_names_the_first_changed_or_removed_record() {
        let path = temp_db();
        let (mut store, _) = open(&path).expect("open");
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
}
