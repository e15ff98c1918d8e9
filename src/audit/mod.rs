//! The audit trail: every answered plan and check is written durably before its answer leaves the
//! server. [`Store`] is the durable part (SQLite in [`sqlite`]); [`Auditor`] is the async handle the
//! service uses. One committer at a time does group commit: records that arrive while a batch is
//! being written wait for the next one, each batch is one transaction (one fsync), and every
//! caller is answered only after its batch committed. The committer runs while records wait: on a
//! runtime worker for a local SQLite file when the runtime has another, else on a blocking
//! thread. Records form a hash chain: each carries
//! SHA-256(previous hash ‖ its own content), so an edited or removed record breaks the chain.
//! A store may compress responses ([`compress`]); the caller's thread does that before the record
//! is queued.

pub mod compress;
pub mod dictionary;
pub mod parts;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};

/// Most records written in one transaction.
pub const MAX_BATCH: usize = 512;
/// The writer's queue limit when none is given: 32 batches.
pub const DEFAULT_QUEUE_LIMIT: usize = 32 * MAX_BATCH;
/// The most bytes of records the writer's queue holds (requests and stored responses, plus a
/// fixed allowance per record): a bound on its memory whatever the records' sizes (a check's
/// request may be 64 KiB, a PostgreSQL store keeps plans uncompressed).
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// What a queued record is counted as against the queue's byte limit.
fn queued_size(record: &NewRecord) -> usize {
    const PER_RECORD: usize = 512;
    record.request.len() + record.response.len() + PER_RECORD
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `Recommend` call or a planned `RecommendStream` item: request = RecommendRequest,
    /// response = Plan.
    Recommend,
    /// A `CheckPrescription` call: request = CheckPrescriptionRequest, response =
    /// CheckPrescriptionResponse.
    Check,
    /// Clinician feedback on the record `subject_id`: request = RecordFeedbackRequest.
    Feedback,
    /// A CDS Hooks card about the plan or check `subject_id`; its `recommendation_id` is the
    /// card's uuid, so feedback on the card finds its recommendation on any replica. request =
    /// the hook's context (JSON), response = what the card shows (JSON, `CardLink::shows` in
    /// `server.rs`: `card` is plan, alert, suggestion or check, with the alert code, the
    /// checked course, or the option's label and whether it is the preferred one).
    CdsCard,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Recommend => "recommend",
            Kind::Check => "check",
            Kind::Feedback => "feedback",
            Kind::CdsCard => "cds-card",
        }
    }

    /// From the stored name.
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "recommend" => Some(Kind::Recommend),
            "check" => Some(Kind::Check),
            "feedback" => Some(Kind::Feedback),
            "cds-card" => Some(Kind::CdsCard),
            _ => None,
        }
    }
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub recommendation_id: String,
    pub created_at: String,
    pub kind: Kind,
    pub caller: String,
    pub guideline_version: String,
    pub guideline_sha256: String,
    pub case_id: String,
    /// For feedback: the recommendation_id it is about.
    pub subject_id: Option<String>,
    pub request: Vec<u8>,
    /// The response as sent, or, when `response_dictionary` is set, a frame of it against that
    /// dictionary: a parts frame ([`parts`]) or a zstd frame.
    pub response: Vec<u8>,
    /// The SHA-256 of the dictionary `response` is compressed with (see [`compress`]); `None`: the
    /// response as sent. Records read back always hold the response as sent.
    pub response_dictionary: Option<[u8; 32]>,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: i64,
    pub record: NewRecord,
}

/// A stored plan or check with its feedback, oldest feedback first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordWithFeedback {
    pub record: StoredRecord,
    pub feedback: Vec<StoredRecord>,
}

/// Audit failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The store could not be written or read (a connection lost, a file missing, a failed
    /// statement).
    #[error("audit store: {0}")]
    Unavailable(String),
    /// The store is held by another writer (SQLite's lock), and stayed so past the busy timeout.
    #[error("audit store busy: {0}")]
    Busy(String),
    /// The disk or the database is full.
    #[error("audit store full: {0}")]
    Full(String),
    /// The committer ended without committing the record (the runtime shutting down).
    #[error("audit committer stopped before the record was committed")]
    WriterGone,
    /// The writer's queue holds its limit of records (or of bytes) not yet committed: the store
    /// has stopped keeping up (or stalled), and queueing more would only grow memory while callers
    /// retry.
    #[error("audit writer is behind: its queue of records waiting to be committed is full")]
    Backlog,
    /// A stored record no longer matches its hash or its place in the chain: it was changed
    /// after it was written, and is refused rather than served.
    #[error("audit record changed: {0}")]
    Corrupt(String),
}

impl From<BrokenLink> for AuditError {
    fn from(broken: BrokenLink) -> AuditError {
        AuditError::Corrupt(format!(
            "record {} (recommendation_id {}): {}; run `vlms-rt-server audit verify`",
            broken.seq, broken.recommendation_id, broken.problem
        ))
    }
}

/// Checks a record read for an answer against the chain: its own hash (over `hashed`, the record
/// in the form its hash covers), the hash of the record before it (`previous`, zeros for the
/// first) and the previous-hash of the record after it (`next_prev_hash`, if there is one).
pub(crate) fn check_read(
    previous: &[u8; 32],
    hashed: &StoredRecord,
    kind: &str,
    prev_hash: &[u8],
    hash: &[u8],
    next_prev_hash: Option<&[u8]>,
) -> Result<(), AuditError> {
    let expected = check_link(previous, hashed, kind, prev_hash, hash)?;
    if next_prev_hash.is_some_and(|next| next != expected.as_slice()) {
        return Err(BrokenLink {
            seq: hashed.seq,
            recommendation_id: hashed.record.recommendation_id.clone(),
            problem: "the record after it names another previous hash (a record was changed \
                      and its hash recomputed, or records were reordered)"
                .into(),
        }
        .into());
    }
    Ok(())
}

/// A neighbour's hash as a read selected it, as 32 bytes (`None`: no such record); `seq` is the
/// record read, named if the neighbour's hash has another length.
pub(crate) fn neighbour_hash(
    bytes: Option<Vec<u8>>,
    seq: i64,
) -> Result<Option<[u8; 32]>, AuditError> {
    bytes
        .map(|bytes| {
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                AuditError::Corrupt(format!(
                    "the record next to {seq} holds a hash that is not 32 bytes"
                ))
            })
        })
        .transpose()
}

/// The first broken link of a hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub recommendation_id: String,
    pub problem: String,
}

/// The hash of a record: SHA-256 over the previous hash and every field, each length-prefixed.
/// A response stored as sent is one field (chain version 1); a compressed one is two, the
/// dictionary's SHA-256 and the compressed frame (chain version 2).
pub fn chain_hash(previous: &[u8; 32], record: &NewRecord) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    let subject = record.subject_id.as_deref().unwrap_or("");
    let dictionary = record
        .response_dictionary
        .as_ref()
        .map(|sha256| &sha256[..]);
    let fields: [Option<&[u8]>; 11] = [
        Some(record.recommendation_id.as_bytes()),
        Some(record.created_at.as_bytes()),
        Some(record.kind.as_str().as_bytes()),
        Some(record.caller.as_bytes()),
        Some(record.guideline_version.as_bytes()),
        Some(record.guideline_sha256.as_bytes()),
        Some(record.case_id.as_bytes()),
        Some(subject.as_bytes()),
        Some(&record.request),
        dictionary,
        Some(&record.response),
    ];
    for field in fields.into_iter().flatten() {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// Checks one link of the chain as `verify` reads it back: the stored kind, previous-hash and hash
/// of `record`, after `previous` (the hash of the record before it). Gives the hash the next record
/// must chain to, or what is broken here. Shared by both backends' `verify`.
pub(crate) fn check_link(
    previous: &[u8; 32],
    record: &StoredRecord,
    kind: &str,
    prev_hash: &[u8],
    hash: &[u8],
) -> Result<[u8; 32], BrokenLink> {
    let broken = |problem: &str| BrokenLink {
        seq: record.seq,
        recommendation_id: record.record.recommendation_id.clone(),
        problem: problem.to_string(),
    };
    if Kind::parse(kind).is_none() {
        return Err(broken("unknown record kind"));
    }
    if prev_hash != previous.as_slice() {
        return Err(broken(
            "its previous-hash does not match the record before it (a record was removed or reordered)",
        ));
    }
    let expected = chain_hash(previous, &record.record);
    if hash != expected.as_slice() {
        return Err(broken(
            "its content does not match its hash (the record was changed)",
        ));
    }
    Ok(expected)
}

/// The durable part of the audit trail.
pub trait Store: Send + 'static {
    /// Appends the records in one durable transaction, chained after the last stored record; all
    /// or nothing.
    fn append(&mut self, records: &[NewRecord]) -> Result<(), AuditError>;
    /// A small durable write that proves the store can commit again.
    fn probe(&mut self) -> Result<(), AuditError>;
    /// How this store wants responses compressed before they reach it; `None`: stored as sent.
    /// (No default: a store that wraps another must pass its answer on.)
    fn compression(&self) -> Option<Arc<compress::Compression>>;
    /// Whether a commit is a local file's write and fsync, short enough to run on a runtime worker
    /// that can be spared; `false` for a store across the network, whose commits wait on round
    /// trips and timeouts and run on a blocking thread. (No default, as for `compression`.)
    fn commits_locally(&self) -> bool;
}

/// Read access to stored records.
pub trait Reader: Send + Sync + 'static {
    /// The plan or check with this id and its feedback; `None` if there is none (feedback ids are
    /// not records of their own to callers).
    fn get(&self, recommendation_id: &str) -> Result<Option<RecordWithFeedback>, AuditError>;
    /// Plans and checks of a case, newest first, with `seq` below `before` when given.
    fn list(
        &self,
        case_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RecordWithFeedback>, AuditError>;
    /// Whether the case has a plan or check with `seq` below `before` (a page's next page), read
    /// without reading the record itself.
    fn has_older(&self, case_id: &str, before: i64) -> Result<bool, AuditError>;
    /// The CDS Hooks card (or suggestion) record with this uuid (its `subject_id` names the plan
    /// or check it was shown for); `None` if there is none.
    fn card(&self, uuid: &str) -> Result<Option<StoredRecord>, AuditError>;
}

/// A record waiting for its batch, with the caller to answer once the batch is committed.
type Waiting = (NewRecord, oneshot::Sender<Result<(), AuditError>>);

/// Records waiting for a commit, and whether a committer is at work on them.
#[derive(Default)]
struct Queue {
    waiting: std::collections::VecDeque<Waiting>,
    /// A committer is running: it takes every waiting record, batch after batch, and clears this
    /// under the same lock when it finds none (so a record queued is always taken by someone).
    committing: bool,
}

/// The store, and whether a write panicked in it.
struct StoreSlot {
    store: Box<dyn Store>,
    /// A write panicked: the store's state is unknown (a chain hash moved on, a transaction half
    /// done), so it takes no more writes until the server restarts, and calls fail closed.
    broken: bool,
}

/// What the auditor's handles and the committer share.
struct Shared {
    queue: Mutex<Queue>,
    store: Mutex<StoreSlot>,
    /// The store commits to a local file, briefly enough to run on a runtime worker.
    local: bool,
    /// The most records `queue` holds.
    queue_limit: usize,
    stats: Arc<WriterStats>,
    health: watch::Sender<bool>,
}

/// Locks `mutex`, also if a panic left it poisoned (none is expected: the queue's changes cannot
/// panic, and the store's panics are caught inside its lock).
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Runs `work` (a batch or a probe) on the store and sets health from its result; a panic in
    /// it fails this write and every later one (see [`StoreSlot::broken`]) instead of ending the
    /// committer with records still waiting.
    fn with_store<T>(
        &self,
        work: impl FnOnce(&mut dyn Store) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let mut slot = lock(&self.store);
        let result = if slot.broken {
            Err(AuditError::Unavailable(
                "an earlier write to the audit store panicked; restart the server".into(),
            ))
        } else {
            let store = slot.store.as_mut();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(store))) {
                Ok(result) => result,
                Err(_) => {
                    slot.broken = true;
                    tracing::error!(
                        "a write to the audit store panicked; no more records until a restart"
                    );
                    Err(AuditError::Unavailable(
                        "a write to the audit store panicked; restart the server".into(),
                    ))
                }
            }
        };
        // Under the store's lock, so that health follows the writes (batches and probes) in the
        // order they happened: a late success never covers a failure that came after it.
        self.set_health(result.is_ok());
        result
    }

    /// Commits the next batch of waiting records (at most [`MAX_BATCH`]) in one transaction and
    /// answers their callers; `false`, with the committer marked stopped, when none was waiting.
    fn commit_next(&self) -> bool {
        let batch: Vec<Waiting> = {
            let mut queue = lock(&self.queue);
            if queue.waiting.is_empty() {
                queue.committing = false;
                return false;
            }
            let taken = queue.waiting.len().min(MAX_BATCH);
            queue.waiting.drain(..taken).collect()
        };
        let (records, replies): (Vec<NewRecord>, Vec<_>) = batch.into_iter().unzip();
        let started = std::time::Instant::now();
        let result = self.with_store(|store| store.append(&records));
        let stats = &self.stats;
        if let Some(histogram) = stats.commit_seconds.get() {
            histogram.observe(started.elapsed().as_secs_f64());
        }
        let bytes: usize = records.iter().map(queued_size).sum();
        stats.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if result.is_ok() {
            let count = records.len() as u64;
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.records.fetch_add(count, Ordering::Relaxed);
            stats.largest_batch.fetch_max(count, Ordering::Relaxed);
        } else {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
        for reply in replies {
            let _ = reply.send(result.clone());
        }
        true
    }

    fn set_health(&self, ok: bool) {
        self.health.send_if_modified(|healthy| {
            let changed = *healthy != ok;
            *healthy = ok;
            changed
        });
    }
}

/// Marks the committer stopped if it ends without saying so itself (its task dropped as the
/// runtime shuts down, or a panic outside the store), so that the next append starts another, and
/// fails the records it leaves waiting with [`AuditError::WriterGone`]. On a normal end
/// `commit_next` has marked it under the queue's lock, and a new committer may already be running:
/// this then does nothing.
struct Committing {
    shared: Arc<Shared>,
    stopped: bool,
}

impl Committing {
    fn commit_next(&mut self) -> bool {
        let more = self.shared.commit_next();
        self.stopped = !more;
        more
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // Nothing will commit the records left waiting: their calls fail closed now rather than
        // at their timeouts (the next append starts a new committer).
        let abandoned: Vec<Waiting> = {
            let mut queue = lock(&self.shared.queue);
            queue.committing = false;
            queue.waiting.drain(..).collect()
        };
        let bytes: usize = abandoned
            .iter()
            .map(|(record, _)| queued_size(record))
            .sum();
        self.shared
            .stats
            .queued_bytes
            .fetch_sub(bytes, Ordering::AcqRel);
        for (_, reply) in abandoned {
            let _ = reply.send(Err(AuditError::WriterGone));
        }
    }
}

/// Whether the current runtime can lend one of its workers to the committer: a multi-thread
/// runtime with at least two, so that a commit held up by the disk leaves another to answer calls,
/// health and metrics. Otherwise the committer runs on a blocking thread.
fn runtime_can_commit() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|handle| {
        handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && handle.metrics().num_workers() >= 2
    })
}

/// Statistics of the writer, for metrics and the benchmark notes.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches committed.
    pub batches: std::sync::atomic::AtomicU64,
    /// Records committed.
    pub records: std::sync::atomic::AtomicU64,
    pub largest_batch: std::sync::atomic::AtomicU64,
    /// Batches whose transaction failed (their calls were answered UNAVAILABLE).
    pub failed_batches: std::sync::atomic::AtomicU64,
    /// Bytes of the records in the writer's queue ([`queued_size`]): records of calls still
    /// waiting, and of calls that gave up waiting on a stalled store.
    pub queued_bytes: AtomicUsize,
    /// Where the writer reports how long each batch's transaction took, fsync included (failed
    /// ones too), once the metrics have registered it.
    pub commit_seconds: std::sync::OnceLock<prometheus::Histogram>,
}

/// The service's handle on the audit trail.
#[derive(Clone)]
pub struct Auditor {
    shared: Arc<Shared>,
    /// The limit of the bytes of records in the writer's queue ([`WriterStats::queued_bytes`]).
    byte_limit: usize,
    reader: Arc<dyn Reader>,
    healthy: watch::Receiver<bool>,
    stats: Arc<WriterStats>,
    compression: Option<Arc<compress::Compression>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Auditor")
            .field("healthy", &*self.healthy.borrow())
            .finish()
    }
}

impl Auditor {
    /// An auditor over `store` with a queue of [`DEFAULT_QUEUE_LIMIT`] records and
    /// [`DEFAULT_QUEUE_BYTES`]; reads go through `reader`.
    pub fn start(store: Box<dyn Store>, reader: Arc<dyn Reader>) -> Auditor {
        Auditor::start_bounded(store, reader, DEFAULT_QUEUE_LIMIT, DEFAULT_QUEUE_BYTES)
    }

    /// An auditor over `store`, whose queue holds at most `queue_limit` records (at least one)
    /// and `byte_limit` bytes of them (one record always fits an empty queue): past either an
    /// append fails at once with [`AuditError::Backlog`]. No thread starts here: the first append
    /// starts the committer.
    pub fn start_bounded(
        store: Box<dyn Store>,
        reader: Arc<dyn Reader>,
        queue_limit: usize,
        byte_limit: usize,
    ) -> Auditor {
        let (health, healthy) = watch::channel(true);
        let stats = Arc::new(WriterStats::default());
        let compression = store.compression();
        let local = store.commits_locally();
        Auditor {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                store: Mutex::new(StoreSlot {
                    store,
                    broken: false,
                }),
                local,
                queue_limit: queue_limit.max(1),
                stats: Arc::clone(&stats),
                health,
            }),
            byte_limit,
            reader,
            healthy,
            stats,
            compression,
        }
    }

    /// `response` in the form the store keeps, with the dictionary it is compressed with: done on
    /// the caller's thread, so the writer's serial path does not compress, nor hash whole plans.
    pub fn stored_response(&self, response: &[u8]) -> (Vec<u8>, Option<[u8; 32]>) {
        compress::stored_response(self.compression.as_deref(), response)
    }

    /// Writes a record durably; returns once its batch has committed.
    pub async fn append(&self, record: NewRecord) -> Result<(), AuditError> {
        if tokio::runtime::Handle::try_current().is_err() {
            // Nothing could commit the record (the committer runs on the runtime or its threads).
            return Err(AuditError::WriterGone);
        }
        let size = queued_size(&record);
        let queued_bytes = &self.stats.queued_bytes;
        let before = queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before.saturating_add(size) > self.byte_limit {
            queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(AuditError::Backlog);
        }
        let (reply, answer) = oneshot::channel();
        let start_committer = {
            let mut queue = lock(&self.shared.queue);
            if queue.waiting.len() >= self.shared.queue_limit {
                drop(queue);
                queued_bytes.fetch_sub(size, Ordering::AcqRel);
                return Err(AuditError::Backlog);
            }
            queue.waiting.push_back((record, reply));
            !std::mem::replace(&mut queue.committing, true)
        };
        if start_committer {
            self.start_committer();
        }
        answer.await.map_err(|_| AuditError::WriterGone)?
    }

    /// Starts the committer, which commits batches until no record waits. A store on a local
    /// file is committed on the runtime when it can spare a worker ([`runtime_can_commit`]): on a
    /// two-core machine that saves the hand-off to another thread and back
    /// (docs/perf/decisions/015-audit-commits-on-runtime-worker.md). Otherwise, and for a store
    /// across the network, on a blocking thread.
    fn start_committer(&self) {
        let mut committing = Committing {
            shared: Arc::clone(&self.shared),
            stopped: false,
        };
        if self.shared.local && runtime_can_commit() {
            tokio::spawn(async move {
                while committing.commit_next() {
                    // Between batches the worker takes its other tasks' turn.
                    tokio::task::yield_now().await;
                }
            });
        } else {
            tokio::task::spawn_blocking(move || while committing.commit_next() {});
        }
    }

    /// Asks the store to prove it can commit (on a blocking thread, after any batch in progress).
    pub async fn probe(&self) -> Result<(), AuditError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.with_store(|store| store.probe()))
            .await
            .map_err(|_| AuditError::WriterGone)?
    }

    /// Whether the last write (or probe) succeeded; changes are announced.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.healthy.clone()
    }

    /// Reports a record the store did not confirm in time: the store counts as unwritable (health
    /// NOT_SERVING, probes begin) until a batch or a probe commits again.
    pub fn report_stall(&self) {
        self.shared.health.send_if_modified(|healthy| {
            let changed = *healthy;
            *healthy = false;
            changed
        });
    }

    /// Writer statistics.
    pub fn stats(&self) -> Arc<WriterStats> {
        Arc::clone(&self.stats)
    }

    /// A stored plan or check with its feedback.
    pub async fn get(
        &self,
        recommendation_id: String,
    ) -> Result<Option<RecordWithFeedback>, AuditError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || reader.get(&recommendation_id))
            .await
            .map_err(|error| AuditError::Unavailable(error.to_string()))?
    }

    /// The CDS Hooks card or suggestion record with this uuid.
    pub async fn card(&self, uuid: String) -> Result<Option<StoredRecord>, AuditError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || reader.card(&uuid))
            .await
            .map_err(|error| AuditError::Unavailable(error.to_string()))?
    }

    /// Plans and checks of a case, newest first.
    pub async fn list(
        &self,
        case_id: String,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RecordWithFeedback>, AuditError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || reader.list(&case_id, before, limit))
            .await
            .map_err(|error| AuditError::Unavailable(error.to_string()))?
    }

    /// Whether the case has a plan or check older than `before`.
    pub async fn has_older(&self, case_id: String, before: i64) -> Result<bool, AuditError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || reader.has_older(&case_id, before))
            .await
            .map_err(|error| AuditError::Unavailable(error.to_string()))?
    }
}

/// A store with its reader, as `open` returns them.
pub type Opened = (Box<dyn Store>, Arc<dyn Reader>);

/// Opens the audit store an `--audit-db` value names: a `postgres://` or `postgresql://` URL (TLS
/// verified against `ca_pem` when given) or a SQLite file path. `none` is not a store: callers
/// handle it before. A SQLite store compresses responses against `plan_dictionary` when given
/// ([`dictionary::plan_dictionary`]); PostgreSQL stores them as sent.
pub fn open(
    audit_db: &str,
    ca_pem: Option<&[u8]>,
    plan_dictionary: Option<&[u8]>,
) -> Result<Opened, AuditError> {
    if postgres::is_url(audit_db) {
        let (store, reader) = postgres::open(audit_db, ca_pem)?;
        Ok((Box::new(store), Arc::new(reader)))
    } else {
        if ca_pem.is_some() {
            return Err(AuditError::Unavailable(
                "--audit-db-ca applies to a PostgreSQL audit database only".into(),
            ));
        }
        let (store, reader) = sqlite::open(std::path::Path::new(audit_db), plan_dictionary)?;
        Ok((Box::new(store), Arc::new(reader)))
    }
}

/// Walks the hash chain of the store an `--audit-db` value names.
pub fn verify(
    audit_db: &str,
    ca_pem: Option<&[u8]>,
) -> Result<Result<u64, BrokenLink>, AuditError> {
    if postgres::is_url(audit_db) {
        postgres::verify(audit_db, ca_pem)
    } else {
        sqlite::verify(std::path::Path::new(audit_db))
    }
}

/// An `--audit-db` value fit for logs and messages (a URL loses its password).
pub fn describe(audit_db: &str) -> String {
    if postgres::is_url(audit_db) {
        postgres::normalized_url(audit_db)
            .parse::<tokio_postgres::Config>()
            .map(|config| postgres::describe(&config))
            .unwrap_or_else(|_| "an unparsable PostgreSQL URL".into())
    } else {
        audit_db.to_string()
    }
}

/// Refuses a database whose newest schema migration (`newest`, `None` for a database with none
/// recorded) is past the newest of `migrations`, this build's: it was written by a newer build,
/// whose records this one may not read or chain correctly. The way on is that build or a later
/// one: a backup taken before the upgrade lacks every record written since.
fn refuse_newer_schema(newest: Option<i64>, migrations: &[(i64, &str)]) -> Result<(), AuditError> {
    let known = migrations
        .iter()
        .map(|(version, _)| *version)
        .max()
        .unwrap_or(0);
    match newest {
        Some(version) if version > known => Err(AuditError::Unavailable(format!(
            "the audit database has schema version {version}, newer than the {known} this build knows: \
             it was written by a newer vlms-rt; run that version or a later one (restoring a backup \
             taken before the upgrade would lose every record written since)"
        ))),
        _ => Ok(()),
    }
}

/// Current UTC time, RFC 3339 with microseconds (the date and seconds formatted once per second
/// per thread: every audited call stamps its record).
pub fn now_rfc3339() -> String {
    crate::telemetry::utc_now_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    struct NoReader;

    impl Reader for NoReader {
        fn get(&self, _: &str) -> Result<Option<RecordWithFeedback>, AuditError> {
            Ok(None)
        }

        fn card(&self, _: &str) -> Result<Option<StoredRecord>, AuditError> {
            Ok(None)
        }
        fn list(
            &self,
            _: &str,
            _: Option<i64>,
            _: usize,
        ) -> Result<Vec<RecordWithFeedback>, AuditError> {
            Ok(Vec::new())
        }
        fn has_older(&self, _: &str, _: i64) -> Result<bool, AuditError> {
            Ok(false)
        }
    }

    /// A store that fails every append, the first only once `release` says so (reporting on
    /// `entered` that it began), and notes each batch's size.
    struct HeldThenFailing {
        entered: std::sync::mpsc::Sender<()>,
        release: Option<std::sync::mpsc::Receiver<()>>,
        batch_sizes: Arc<Mutex<Vec<usize>>>,
    }

    impl Store for HeldThenFailing {
        fn append(&mut self, records: &[NewRecord]) -> Result<(), AuditError> {
            if let Some(release) = self.release.take() {
                let _ = self.entered.send(());
                let _ = release.recv();
            }
            self.batch_sizes.lock().expect("sizes").push(records.len());
            Err(AuditError::Unavailable("injected write failure".into()))
        }
        fn probe(&mut self) -> Result<(), AuditError> {
            Err(AuditError::Unavailable("injected write failure".into()))
        }
        fn compression(&self) -> Option<Arc<compress::Compression>> {
            None
        }
        fn commits_locally(&self) -> bool {
            false
        }
    }

    /// A store that commits at once, or panics on its first append when `panicking`.
    struct Quick {
        local: bool,
        panicking: bool,
    }

    impl Store for Quick {
        fn append(&mut self, _: &[NewRecord]) -> Result<(), AuditError> {
            if std::mem::take(&mut self.panicking) {
                panic!("a store bug");
            }
            Ok(())
        }
        fn probe(&mut self) -> Result<(), AuditError> {
            Ok(())
        }
        fn compression(&self) -> Option<Arc<compress::Compression>> {
            None
        }
        fn commits_locally(&self) -> bool {
            self.local
        }
    }

    /// An auditor over a [`Quick`] store.
    fn quick(local: bool, panicking: bool) -> Auditor {
        Auditor::start(Box::new(Quick { local, panicking }), Arc::new(NoReader))
    }

    fn runtime(workers: Option<usize>) -> tokio::runtime::Runtime {
        match workers {
            Some(workers) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build(),
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        }
        .expect("runtime")
    }

    /// A local store is committed on the runtime when it has a worker to spare; a store across
    /// the network, or a runtime of one worker, gets a blocking thread (seen in the runtime's
    /// count of them: nothing else here spawns one; that count needs `--cfg tokio_unstable`, which
    /// `.cargo/config.toml` sets).
    #[cfg(tokio_unstable)]
    #[test]
    fn the_committer_runs_on_a_spare_worker_only_for_a_local_store() {
        for (local, workers, on_runtime) in [
            (true, Some(2), true),
            (true, Some(4), true),
            (false, Some(2), false),
            (true, Some(1), false),
            (true, None, false),
        ] {
            runtime(workers).block_on(async {
                let auditor = quick(local, false);
                let calls: Vec<_> = ["a", "b", "c", "d"]
                    .into_iter()
                    .map(|id| {
                        let auditor = auditor.clone();
                        tokio::spawn(async move { auditor.append(record(id)).await })
                    })
                    .collect();
                for call in calls {
                    call.await.expect("join").expect("committed");
                }
                let stats = auditor.stats();
                assert_eq!(stats.records.load(Ordering::Relaxed), 4);
                assert_eq!(stats.queued_bytes.load(Ordering::Acquire), 0);
                let blocking = tokio::runtime::Handle::current()
                    .metrics()
                    .num_blocking_threads();
                assert_eq!(
                    blocking == 0,
                    on_runtime,
                    "local {local}, workers {workers:?}: {blocking} blocking threads"
                );
            });
        }
    }

    /// A store that panics fails its batch's calls (never a plan) and every later call until a
    /// restart (its state is unknown), and the committer goes on: later calls are answered, not
    /// left waiting.
    #[test]
    fn a_panicking_store_fails_closed_without_wedging_the_committer() {
        for (local, workers) in [(true, Some(2)), (false, Some(2)), (true, None)] {
            runtime(workers).block_on(async {
                let auditor = quick(local, true);
                let first = tokio::time::timeout(Duration::from_secs(10), auditor.append(record("a")))
                    .await
                    .expect("answered");
                assert!(matches!(&first, Err(AuditError::Unavailable(message)) if message.contains("panicked")), "{first:?}");
                assert_eq!(auditor.stats().failed_batches.load(Ordering::Relaxed), 1);
                for id in ["b", "c"] {
                    let later = tokio::time::timeout(Duration::from_secs(10), auditor.append(record(id)))
                        .await
                        .expect("answered, not left waiting on a dead committer");
                    assert!(
                        matches!(&later, Err(AuditError::Unavailable(message)) if message.contains("panicked")),
                        "{later:?}"
                    );
                }
                assert!(auditor.probe().await.is_err());
                assert!(!*auditor.health().borrow());
                assert_eq!(auditor.stats().records.load(Ordering::Relaxed), 0);
                assert_eq!(auditor.stats().queued_bytes.load(Ordering::Acquire), 0);
            });
        }
    }

    /// A committer that ends without stopping itself (its task dropped at shutdown) fails the
    /// records it leaves waiting at once, gives their bytes back, and lets the next append start
    /// a new committer.
    #[test]
    fn a_committer_dropped_midway_fails_what_waits_and_a_new_one_starts() {
        runtime(Some(2)).block_on(async {
            let auditor = quick(true, false);
            let stats = auditor.stats();
            let mut answers = Vec::new();
            {
                let mut queue = lock(&auditor.shared.queue);
                for id in ["a", "b"] {
                    let (reply, answer) = oneshot::channel();
                    stats
                        .queued_bytes
                        .fetch_add(queued_size(&record(id)), Ordering::AcqRel);
                    queue.waiting.push_back((record(id), reply));
                    answers.push(answer);
                }
                queue.committing = true;
            }
            drop(Committing {
                shared: Arc::clone(&auditor.shared),
                stopped: false,
            });
            for answer in answers {
                assert!(matches!(answer.await, Ok(Err(AuditError::WriterGone))));
            }
            assert_eq!(stats.queued_bytes.load(Ordering::Acquire), 0);
            assert!(!lock(&auditor.shared.queue).committing);
            tokio::time::timeout(Duration::from_secs(10), auditor.append(record("c")))
                .await
                .expect("answered")
                .expect("committed by a new committer");
            assert_eq!(stats.records.load(Ordering::Relaxed), 1);
        });
    }

    fn record(id: &str) -> NewRecord {
        NewRecord {
            recommendation_id: id.into(),
            created_at: "2026-11-29T00:00:00.000000Z".into(),
            kind: Kind::Recommend,
            caller: "anonymous".into(),
            guideline_version: "test".into(),
            guideline_sha256: "00".repeat(32),
            case_id: "case".into(),
            subject_id: None,
            request: vec![1, 2, 3],
            response: vec![4, 5, 6],
            response_dictionary: None,
        }
    }

    /// A failed transaction is counted once however many records it held, each transaction is
    /// timed, and the failed records leave the queue's byte count.
    #[tokio::test]
    async fn failed_batches_are_counted_once_each_and_timed() {
        let (entered, writer_entered) = std::sync::mpsc::channel();
        let (release, gate) = std::sync::mpsc::channel();
        let batch_sizes = Arc::new(Mutex::new(Vec::new()));
        let auditor = Auditor::start(
            Box::new(HeldThenFailing {
                entered,
                release: Some(gate),
                batch_sizes: Arc::clone(&batch_sizes),
            }),
            Arc::new(NoReader),
        );
        let stats = auditor.stats();
        let commit_seconds = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(
            "commit_seconds",
            "test",
        ))
        .expect("histogram");
        assert!(stats.commit_seconds.set(commit_seconds.clone()).is_ok());
        let append = |id: &'static str| {
            let auditor = auditor.clone();
            tokio::spawn(async move { auditor.append(record(id)).await })
        };
        // The first record's transaction is held; two more queue behind it and share the next.
        let first = append("a");
        tokio::task::spawn_blocking(move || writer_entered.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("join")
            .expect("the writer began the first transaction");
        let (second, third) = (append("b"), append("c"));
        let all_queued = 3 * queued_size(&record("a"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stats.queued_bytes.load(Ordering::Acquire) < all_queued {
            assert!(std::time::Instant::now() < deadline, "records never queued");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).expect("release");
        for call in [first, second, third] {
            assert!(matches!(
                call.await.expect("join"),
                Err(AuditError::Unavailable(_))
            ));
        }
        assert_eq!(*batch_sizes.lock().expect("sizes"), [1, 2]);
        assert_eq!(stats.failed_batches.load(Ordering::Relaxed), 2);
        assert_eq!(stats.batches.load(Ordering::Relaxed), 0);
        assert_eq!(stats.records.load(Ordering::Relaxed), 0);
        assert_eq!(commit_seconds.get_sample_count(), 2);
        assert_eq!(stats.queued_bytes.load(Ordering::Acquire), 0);
    }
}
