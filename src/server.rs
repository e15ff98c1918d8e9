//! The tonic service: admit, decode, call the core, encode. Every error becomes a `Status` through
//! [`crate::status`], and every call writes one log line with its RPC, status code, latency, caller
//! and case_id (never other case content).
//!
//! Read in order: the RPCs (`impl RecommendationService for Service`), then admission (`Limiter`,
//! the `Call` guard), the service's own steps (`impl Service`), the helpers, the running
//! `RecommendStream` (`StreamCall`), and last what the CDS Hooks front calls in-process
//! (`CardLink`, `recommend_in_process`, `check_in_process`, `feedback_in_process`, the card
//! records).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::audit::{Auditor, Kind, NewRecord, RecordWithFeedback};
use crate::auth::{ANONYMOUS, Caller};
use crate::client_deadline::parse_grpc_timeout;
use crate::convert;
use crate::core::{self, Profile, Proposal, Violations};
use crate::metrics::Metrics;
use crate::pb;
use crate::pb::server::recommendation_service_server::RecommendationService;
use crate::status::{self, in_band_status, invalid_argument};
use crate::wire::{EncodedRecommendResponse, EncodedStreamResponse, EncodedStreamResult};

/// What the service needs besides the profile.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub metrics: Arc<Metrics>,
    /// Process-wide admission: one place per call in flight.
    pub limiter: Arc<Limiter>,
    pub max_stream_items: u64,
    /// Longest wait for the next item of a `RecommendStream`.
    pub stream_idle_timeout: Duration,
    /// The audit trail; `None` when auditing is disabled.
    pub audit: Option<Auditor>,
    /// Longest wait for the audit store to confirm a record; past it the call fails closed with
    /// UNAVAILABLE. Shorter than the call timeout, so that a stalled store is answered as what it
    /// is (and logged and counted) rather than cut off as a timed-out call.
    pub audit_wait: Duration,
}

/// Largest feedback reason, in characters.
pub const MAX_FEEDBACK_REASON_CHARS: usize = 2000;
/// Default and largest page of `ListRecommendations`.
pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;
/// Most bytes of records in one `ListRecommendations` page: a quarter of the 4 MiB that gRPC
/// clients accept by default, so that large stored checks cannot make a case's history unreadable.
/// A page holds at least one record, whatever its size.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// The service over one guideline profile.
#[derive(Debug, Clone)]
pub struct Service {
    profile: Arc<Profile>,
    options: ServiceOptions,
}

type StreamResult = Pin<Box<dyn Stream<Item = Result<EncodedStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RecommendationService for Service {
    async fn recommend(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<Response<EncodedRecommendResponse>, Status> {
        let call = self.begin("Recommend", &request)?;
        let wait = self.audit_wait(&request);
        let request = request.into_inner();
        let case_id = loggable_case_id(request_case_id(&request));
        let result = match self.recommend_encoded(&request) {
            Ok(encoded) => self
                .record_encoded_plan(&request, &encoded, call.caller(), wait)
                .await
                .map(|()| Response::new(EncodedRecommendResponse { plan: encoded.plan })),
            Err(violations) => Err(invalid_argument(&violations)),
        };
        call.end(result, case_id)
    }

    type RecommendStreamStream = StreamResult;

    async fn recommend_stream(
        &self,
        request: Request<Streaming<pb::RecommendRequest>>,
    ) -> Result<Response<Self::RecommendStreamStream>, Status> {
        let started = Instant::now();
        let caller = caller_of(&request);
        let admission = self.admit_shared("RecommendStream", &request, &caller)?;
        // The caller's deadline bounds the whole stream (tonic applies it to the answer's headers
        // only, which a stream sends at once).
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()))
            .map(|deadline| Box::pin(tokio::time::sleep(deadline)));
        // Shared by the stream's items: one reference count each, not a copy of every handle the
        // service holds (profile, metrics, limiter, audit trail) and of the caller's name.
        let service = Arc::new(self.clone());
        let item_caller: Arc<str> = Arc::from(caller.as_ref());
        let max_items = self.options.max_stream_items;
        // A stream's items wait the configured time each: the caller's deadline, if any, bounds
        // the whole stream, not one item.
        let audit_wait = self.options.audit_wait;
        let idle_timeout = self.options.stream_idle_timeout;
        let mut received = 0_u64;
        // Items are answered in request order; each plan is recorded before it is sent. With the
        // audit trail on, up to STREAM_PIPELINE items are worked on at once, so that the records of
        // consecutive items share a commit instead of waiting for one each; without it an item is
        // done when it is read, and one at a time costs least. A transport or decode failure, a
        // stream idle for longer than the call timeout, one item too many, or an audit store that
        // cannot record ends the stream with that status at that item (items after it that were
        // already recorded are not sent: recorded and unsent is the safe side).
        let inbound = Box::pin(crate::deadline::IdleTimeout::new(
            request.into_inner(),
            idle_timeout,
        ));
        let answer = move |item: Result<Result<pb::RecommendRequest, Status>, _>| {
            let item = item
                .map_err(|_| status::stream_idle(idle_timeout))
                .and_then(|item| item.map_err(status::unreadable_stream_item));
            if item.is_ok() {
                received += 1;
            }
            let too_many = received > max_items;
            let service = Arc::clone(&service);
            let caller = Arc::clone(&item_caller);
            async move {
                let item = item?;
                if too_many {
                    return Err(status::too_many_stream_items(max_items));
                }
                let result = match service.recommend_encoded(&item) {
                    Ok(encoded) => {
                        service
                            .record_encoded_plan(&item, &encoded, &caller, audit_wait)
                            .await?;
                        EncodedStreamResult::Plan(encoded.plan)
                    }
                    Err(violations) => {
                        EncodedStreamResult::Error(in_band_status(&invalid_argument(&violations)))
                    }
                };
                Ok(EncodedStreamResponse {
                    case_id: request_case_id(&item).into(),
                    result,
                })
            }
        };
        let outbound: StreamResult = if self.options.audit.is_some() {
            Box::pin(futures_util::StreamExt::buffered(
                inbound.map(answer),
                STREAM_PIPELINE,
            ))
        } else {
            Box::pin(inbound.then(answer))
        };
        let place = Arc::new(StreamPlace {
            admission: std::sync::Mutex::new(Some(admission)),
            last_polled: std::sync::Mutex::new(Instant::now()),
            released: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(reclaim_unread(
            Arc::downgrade(&place),
            self.options.stream_idle_timeout * 2,
            caller.to_string(),
        ));
        let logged = StreamCall {
            inner: outbound,
            service: self.clone(),
            started,
            caller: caller.into_owned(),
            items: 0,
            rejected: 0,
            done: false,
            place,
            deadline,
        };
        Ok(Response::new(Box::pin(logged)))
    }

    async fn check_prescription(
        &self,
        request: Request<pb::CheckPrescriptionRequest>,
    ) -> Result<Response<pb::CheckPrescriptionResponse>, Status> {
        let call = self.begin("CheckPrescription", &request)?;
        let wait = self.audit_wait(&request);
        let request = request.into_inner();
        let case_id = loggable_case_id(request.case.as_ref().map_or("", |case| &case.case_id));
        let result = match Proposal::validate(&convert::raw_proposal(&request)) {
            Ok(proposal) => {
                let report = core::check(&self.profile, &proposal);
                // The plan inside the answer carries the check's own id: every id the service
                // hands out names a stored record (this check's, which holds the plan).
                let recommendation_id = new_recommendation_id();
                let response = convert::report_out(
                    &report,
                    recommendation_id.to_string(),
                    recommendation_id.to_string(),
                );
                self.record(
                    Answered {
                        recommendation_id: &response.recommendation_id,
                        kind: Kind::Check,
                        caller: call.caller(),
                        case_id: proposal.case().case_id(),
                        subject_id: None,
                    },
                    &request,
                    &response,
                    wait,
                )
                .await
                .map(|()| Response::new(response))
            }
            Err(violations) => Err(invalid_argument(&violations)),
        };
        call.end(result, case_id)
    }

    async fn get_guideline(
        &self,
        request: Request<pb::GetGuidelineRequest>,
    ) -> Result<Response<pb::Guideline>, Status> {
        let call = self.begin("GetGuideline", &request)?;
        let guideline = convert::guideline_out(&self.profile);
        call.end(Ok(Response::new(guideline)), "")
    }

    async fn get_recommendation(
        &self,
        request: Request<pb::GetRecommendationRequest>,
    ) -> Result<Response<pb::RecommendationRecord>, Status> {
        let call = self.begin("GetRecommendation", &request)?;
        let request = request.into_inner();
        let result = self
            .get_record(&request.recommendation_id)
            .await
            .map(Response::new);
        call.end(result, "")
    }

    async fn list_recommendations(
        &self,
        request: Request<pb::ListRecommendationsRequest>,
    ) -> Result<Response<pb::ListRecommendationsResponse>, Status> {
        let call = self.begin("ListRecommendations", &request)?;
        let request = request.into_inner();
        let case_id = if is_valid_case_id(&request.case_id) {
            request.case_id.clone()
        } else {
            String::from("<invalid>")
        };
        let result = self.list_records(&request).await.map(Response::new);
        call.end(result, &case_id)
    }

    async fn record_feedback(
        &self,
        request: Request<pb::RecordFeedbackRequest>,
    ) -> Result<Response<pb::RecordFeedbackResponse>, Status> {
        let call = self.begin("RecordFeedback", &request)?;
        let wait = self.audit_wait(&request);
        let request = request.into_inner();
        let result = self
            .feedback(&request, call.caller(), wait)
            .await
            .map(Response::new);
        call.end(result, "")
    }
}

/// Process-wide admission without a queue: the calls in flight, at most `max` of them, and at most
/// `per_caller` for any one caller (an authenticated caller by name, an anonymous one by its
/// connection), so that one caller cannot take every place while others are shed. A call is
/// admitted or shed at once and never waits.
#[derive(Debug)]
pub struct Limiter {
    in_flight: AtomicUsize,
    max: usize,
    per_caller: usize,
    by_caller: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    gauge: prometheus::IntGauge,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Every place is taken.
    Full,
    /// This caller holds its share.
    CallerShare,
}

impl Limiter {
    /// Admits at most `max` calls at once, and at most `per_caller` of one caller; keeps
    /// `metrics`' in-flight gauge.
    pub fn new(max: usize, per_caller: usize, metrics: &Metrics) -> Limiter {
        Limiter {
            in_flight: AtomicUsize::new(0),
            max,
            per_caller: per_caller.max(1),
            by_caller: std::sync::Mutex::default(),
            gauge: metrics.in_flight().clone(),
        }
    }

    /// Takes a place for `caller` if one is free and the caller has not used up its share.
    fn try_acquire(&self, caller: &str) -> Result<(), Refusal> {
        let mut by_caller = match self.by_caller.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if by_caller.get(caller).copied().unwrap_or(0) >= self.per_caller {
            return Err(Refusal::CallerShare);
        }
        self.in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |in_flight| {
                (in_flight < self.max).then_some(in_flight + 1)
            })
            .map_err(|_| Refusal::Full)?;
        *by_caller.entry(caller.to_string()).or_default() += 1;
        self.gauge.inc();
        Ok(())
    }

    fn release(&self, caller: &str) {
        let mut by_caller = match self.by_caller.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(held) = by_caller.get_mut(caller) {
            *held -= 1;
            if *held == 0 {
                by_caller.remove(caller);
            }
        }
        // The gauge first: a call admitted into the freed place then never finds it one high.
        self.gauge.dec();
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// An admitted call's place, given back when it is dropped: borrowed from the service for a unary
/// call, shared for a stream that outlives its handler. It names the caller whose share it counts
/// in.
struct Admission<L: std::ops::Deref<Target = Limiter>>(L, String);

impl<L: std::ops::Deref<Target = Limiter>> Drop for Admission<L> {
    fn drop(&mut self) {
        self.0.release(&self.1);
    }
}

/// One unary call's bookkeeping: its place (given back when the guard is dropped) and the one log
/// line and count it writes when it ends ([`Call::end`]). A call shed at admission gets no guard:
/// `shed` logs and counts it.
struct Call<'s> {
    service: &'s Service,
    rpc: &'static str,
    started: Instant,
    caller: std::borrow::Cow<'static, str>,
    _admission: Admission<&'s Limiter>,
}

impl Call<'_> {
    /// The caller the call is for.
    fn caller(&self) -> &str {
        &self.caller
    }

    /// Writes the call's log line and count for `result`, and hands `result` on.
    fn end<T>(self, result: Result<T, Status>, case_id: &str) -> Result<T, Status> {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.service
            .finish(self.rpc, code, self.started, &self.caller, case_id);
        result
    }
}

/// Whose share of the places a call counts in: an authenticated caller's name, or for an
/// anonymous call the address it comes from (its IP, whatever the port: more connections from one
/// host do not make a bigger share; behind a proxy every anonymous call shares one).
fn admission_key<T>(request: &Request<T>, caller: &str) -> String {
    match request.remote_addr() {
        Some(address) if caller == ANONYMOUS => format!("{ANONYMOUS} from {}", address.ip()),
        _ => caller.to_string(),
    }
}

impl Service {
    /// A service answering from `profile`.
    pub fn new(profile: Arc<Profile>, options: ServiceOptions) -> Self {
        Self { profile, options }
    }

    /// Admits a call or sheds it at once (no queue): overload answers fast instead of piling up.
    /// Starts a unary call: admits it (or sheds it) and returns its guard.
    fn begin<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<Call<'_>, Status> {
        let started = Instant::now();
        let caller = caller_of(request);
        let admission = self.admit(rpc, request, &caller)?;
        Ok(Call {
            service: self,
            rpc,
            started,
            caller,
            _admission: admission,
        })
    }

    fn admit<T>(
        &self,
        rpc: &'static str,
        request: &Request<T>,
        caller: &str,
    ) -> Result<Admission<&Limiter>, Status> {
        let key = admission_key(request, caller);
        match self.options.limiter.try_acquire(&key) {
            Ok(()) => Ok(Admission(&self.options.limiter, key)),
            Err(refusal) => self.shed(rpc, caller, refusal),
        }
    }

    /// `admit` for a call whose place outlives the handler (a stream).
    fn admit_shared<T>(
        &self,
        rpc: &'static str,
        request: &Request<T>,
        caller: &str,
    ) -> Result<Admission<Arc<Limiter>>, Status> {
        let key = admission_key(request, caller);
        match self.options.limiter.try_acquire(&key) {
            Ok(()) => Ok(Admission(Arc::clone(&self.options.limiter), key)),
            Err(refusal) => self.shed(rpc, caller, refusal),
        }
    }

    fn shed<T>(&self, rpc: &'static str, caller: &str, refusal: Refusal) -> Result<T, Status> {
        self.options.metrics.shed(rpc);
        tracing::info!(rpc, code = ?Code::ResourceExhausted, caller, reason = ?refusal, "shed");
        Err(match refusal {
            Refusal::Full => status::overloaded(),
            Refusal::CallerShare => status::caller_share_taken(self.options.limiter.per_caller),
        })
    }

    /// `Recommend`'s plan, encoded straight from the core's values (see `crate::wire`).
    fn recommend_encoded(&self, request: &pb::RecommendRequest) -> Result<EncodedPlan, Violations> {
        let case = convert::case_from_request(request)?;
        let plan = core::recommend(&self.profile, &case);
        let recommendation_id = new_recommendation_id();
        let encoded = crate::wire::encode_plan(&plan, &recommendation_id);
        let indication = plan.indication;
        drop(plan);
        // Counted when made, before the audit write: a plan withheld because the store failed is
        // counted too (the calls metric tells those apart by their UNAVAILABLE code).
        self.options
            .metrics
            .plan(convert::indication_out(indication).into());
        Ok(EncodedPlan {
            recommendation_id,
            plan: encoded,
        })
    }

    /// Records an encoded plan before it leaves; fails closed like `record`. The case id is the
    /// request's (the plan's is the same text).
    async fn record_encoded_plan(
        &self,
        request: &pb::RecommendRequest,
        encoded: &EncodedPlan,
        caller: &str,
        wait: Duration,
    ) -> Result<(), Status> {
        if self.options.audit.is_none() {
            return Ok(());
        }
        self.record_bytes(
            Answered {
                recommendation_id: &encoded.recommendation_id,
                kind: Kind::Recommend,
                caller,
                case_id: request_case_id(request),
                subject_id: None,
            },
            // prost's encoding of what was read: fields the contract does not define carry
            // nothing the service read and never reach the audit trail.
            request.encode_to_vec(),
            &encoded.plan,
            wait,
        )
        .await
    }

    /// Writes a record before its answer leaves; fails closed (UNAVAILABLE) when it cannot.
    async fn record(
        &self,
        answered: Answered<'_>,
        request: &impl Message,
        response: &impl Message,
        wait: Duration,
    ) -> Result<(), Status> {
        // Encode only when auditing: with `--audit-db none` there is nothing to encode for.
        if self.options.audit.is_none() {
            return Ok(());
        }
        self.record_bytes(
            answered,
            request.encode_to_vec(),
            &response.encode_to_vec(),
            wait,
        )
        .await
    }

    /// `record` with the request and response already encoded. The response is put in the form the
    /// store keeps (compressed, for SQLite) here, on the thread answering the call.
    async fn record_bytes(
        &self,
        answered: Answered<'_>,
        request: Vec<u8>,
        response: &[u8],
        wait: Duration,
    ) -> Result<(), Status> {
        let Some(audit) = &self.options.audit else {
            return Ok(());
        };
        let (response, response_dictionary) = audit.stored_response(response);
        let record = NewRecord {
            recommendation_id: answered.recommendation_id.to_string(),
            created_at: crate::audit::now_rfc3339(),
            kind: answered.kind,
            caller: answered.caller.to_string(),
            guideline_version: self.profile.version().to_string(),
            guideline_sha256: self.profile.sha256().to_string(),
            case_id: answered.case_id.to_string(),
            subject_id: answered.subject_id,
            request,
            response,
            response_dictionary,
        };
        match tokio::time::timeout(wait, audit.append(record)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::error!(%error, "audit write failed; the answer is withheld");
                Err(status::audit_write_failed())
            }
            // The record may still commit later: recorded and unsent is the safe side.
            Err(_) if wait < self.options.audit_wait => {
                // The caller's own deadline was the shorter: its business, not a sign that the
                // store is stuck (a caller must not be able to flip health with tiny deadlines).
                tracing::warn!(
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "the caller's deadline ran out before the audit store confirmed; the answer is withheld"
                );
                Err(status::audit_deadline_ran_out())
            }
            Err(_) => {
                // A hung store finishes no batch to report itself: the stall marks it unwritable.
                audit.report_stall();
                tracing::error!(
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "audit store did not confirm the record in time; the answer is withheld"
                );
                Err(status::audit_unconfirmed())
            }
        }
    }

    /// How long this call waits for its audit record: the configured wait, or four fifths of the
    /// caller's own deadline when that is shorter (tonic ends the call at the shorter of the two,
    /// and the call should end as UNAVAILABLE, logged and counted, before that).
    fn audit_wait<T>(&self, request: &Request<T>) -> Duration {
        if self.options.audit.is_none() {
            // Nothing to wait for: no header lookup on the unaudited path.
            return self.options.audit_wait;
        }
        request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()))
            .map_or(self.options.audit_wait, |deadline| {
                self.options.audit_wait.min(deadline.mul_f64(0.8))
            })
    }

    fn auditor(&self) -> Result<&Auditor, Status> {
        self.options
            .audit
            .as_ref()
            .ok_or_else(status::auditing_disabled)
    }

    async fn get_record(
        &self,
        recommendation_id: &str,
    ) -> Result<pb::RecommendationRecord, Status> {
        if !is_recommendation_id(recommendation_id) {
            let mut violations = Violations::default();
            violations.push("recommendation_id", RECOMMENDATION_ID_RULE);
            return Err(invalid_argument(&violations));
        }
        let found = self
            .auditor()?
            .get(canonical_recommendation_id(recommendation_id))
            .await
            .map_err(|error| read_failure(&error))?;
        match found {
            Some(record) => record_out(record),
            None => Err(status::no_recommendation(recommendation_id)),
        }
    }

    async fn list_records(
        &self,
        request: &pb::ListRecommendationsRequest,
    ) -> Result<pb::ListRecommendationsResponse, Status> {
        let mut violations = Violations::default();
        if request.case_id.is_empty() || !is_valid_case_id(&request.case_id) {
            violations.push(
                "case_id",
                "is required: 1-128 characters from A-Z a-z 0-9 . _ : -",
            );
        }
        // AIP-158: 0 asks for the default, a size above the largest page is served as the
        // largest page, a negative one is refused.
        let page_size = match request.page_size {
            0 => Some(DEFAULT_PAGE_SIZE),
            size if size > 0 => {
                Some(usize::try_from(size).map_or(MAX_PAGE_SIZE, |size| size.min(MAX_PAGE_SIZE)))
            }
            _ => {
                violations.push(
                    "page_size",
                    "must not be negative (0 means 20; above 100 means 100)",
                );
                None
            }
        };
        let before = if request.page_token.is_empty() {
            Some(None)
        } else {
            match parse_page_token(&request.page_token, &request.case_id) {
                Some(seq) => Some(Some(seq)),
                None => {
                    violations.push("page_token", "is not a page token of this case's listing");
                    None
                }
            }
        };
        let (Some(page_size), Some(before)) = (page_size, before) else {
            return Err(invalid_argument(&violations));
        };
        if !violations.is_empty() {
            return Err(invalid_argument(&violations));
        }
        let auditor = self.auditor()?;
        // Only the records served are read (and checked against the chain); whether an older
        // one follows is asked without reading it.
        let records = auditor
            .list(request.case_id.clone(), before, page_size)
            .await
            .map_err(|error| read_failure(&error))?;
        let mut more = match records.last() {
            Some(last) if records.len() == page_size => auditor
                .has_older(request.case_id.clone(), last.record.seq)
                .await
                .map_err(|error| read_failure(&error))?,
            _ => false,
        };
        // Bounded in bytes as well as records: the page ends before the record that would take
        // it past MAX_PAGE_BYTES, and the token continues from there.
        let mut page = Vec::with_capacity(records.len());
        let (mut bytes, mut last_seq) = (0_usize, None);
        for record in records {
            let seq = record.record.seq;
            let record = record_out(record)?;
            let size = Message::encoded_len(&record);
            if !page.is_empty() && bytes + size > MAX_PAGE_BYTES {
                more = true;
                break;
            }
            bytes += size;
            last_seq = Some(seq);
            page.push(record);
        }
        let next_page_token = match (more, last_seq) {
            (true, Some(seq)) => page_token(&request.case_id, seq),
            _ => String::new(),
        };
        Ok(pb::ListRecommendationsResponse {
            records: page,
            next_page_token,
        })
    }

    async fn feedback(
        &self,
        request: &pb::RecordFeedbackRequest,
        caller: &str,
        wait: Duration,
    ) -> Result<pb::RecordFeedbackResponse, Status> {
        let pb::RecordFeedbackRequest {
            recommendation_id,
            outcome,
            reason,
        } = request;
        let mut violations = Violations::default();
        if !is_recommendation_id(recommendation_id) {
            violations.push("recommendation_id", RECOMMENDATION_ID_RULE);
        }
        let outcome = pb::FeedbackOutcome::try_from(*outcome)
            .ok()
            .filter(|outcome| *outcome != pb::FeedbackOutcome::Unspecified);
        if outcome.is_none() {
            violations.push("outcome", "must be ACCEPTED, MODIFIED or OVERRIDDEN");
        }
        if let Some(problem) =
            crate::core::violation::free_text_problem(reason, MAX_FEEDBACK_REASON_CHARS)
        {
            violations.push("reason", problem);
        } else if outcome.is_some_and(|outcome| outcome != pb::FeedbackOutcome::Accepted)
            && reason.trim().is_empty()
        {
            violations.push("reason", "is required unless the outcome is ACCEPTED");
        }
        if !violations.is_empty() {
            return Err(invalid_argument(&violations));
        }
        let target = self
            .auditor()?
            .get(canonical_recommendation_id(recommendation_id))
            .await
            .map_err(|error| read_failure(&error))?
            .ok_or_else(|| status::no_recommendation(recommendation_id))?;
        self.record(
            Answered {
                recommendation_id: &new_recommendation_id(),
                kind: Kind::Feedback,
                caller,
                case_id: &target.record.record.case_id,
                subject_id: Some(target.record.record.recommendation_id.clone()),
            },
            request,
            &pb::RecordFeedbackResponse {},
            wait,
        )
        .await?;
        Ok(pb::RecordFeedbackResponse {})
    }

    fn finish(&self, rpc: &'static str, code: Code, started: Instant, caller: &str, case_id: &str) {
        let elapsed = started.elapsed();
        self.options.metrics.call(rpc, code, elapsed.as_secs_f64());
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // Plain strings, the code by name too: the text format writes a string bare, without
        // going through `fmt`, when it is plain, as these are (static RPC names, caller names and
        // case_ids validated to A-Z a-z 0-9 . _ : -, else `<invalid>`; see `telemetry::TextFields`).
        let code = code_log_name(code);
        // The text format's writer directly when it is installed (see `telemetry::call_line`),
        // if the filter admits this very event: its level, target and field names (a `RUST_LOG`
        // field directive such as `vlms_rt::server[{items}]=info` must leave it out, as it would
        // leave out the event).
        if !(tracing::event_enabled!(
            tracing::Level::INFO,
            message,
            rpc,
            code,
            latency_us,
            caller,
            case_id
        ) && crate::telemetry::call_line(rpc, code, latency_us, caller, case_id))
        {
            tracing::info!(rpc, code, latency_us, caller, case_id, "call");
        }
    }
}

/// A status code's name as `Debug` writes it (`Ok`, `InvalidArgument`, …), without formatting.
pub(crate) fn code_log_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The caller `auth::Authenticate` found (a token's, or a client certificate's subject), or
/// `anonymous`.
fn caller_of<T>(request: &Request<T>) -> std::borrow::Cow<'static, str> {
    request
        .extensions()
        .get::<Caller>()
        .map_or(std::borrow::Cow::Borrowed(ANONYMOUS), |caller| {
            std::borrow::Cow::Owned(caller.0.clone())
        })
}

/// A fresh unique id for a plan or a check: a ULID (time-ordered, so the audit store's id index
/// grows at its end).
pub fn new_recommendation_id() -> crate::ulid::Ulid {
    crate::ulid::new()
}

const RECOMMENDATION_ID_RULE: &str =
    "must be the id a plan or check was answered with (a 26-character ULID)";

/// The stored form of a recommendation id: a ULID in upper case (its canonical form; a ULID's
/// letters are case-insensitive, so a caller's lower-case copy names the same record), a UUID in
/// lower case (the form it was stored in).
fn canonical_recommendation_id(text: &str) -> String {
    let upper = text.to_ascii_uppercase();
    if crate::ulid::is_ulid(&upper) {
        upper
    } else {
        text.to_ascii_lowercase()
    }
}

/// Whether `text` can be a recommendation id: a ULID in either case, or a UUID (the form early
/// development builds answered with, still found in their audit trails).
fn is_recommendation_id(text: &str) -> bool {
    crate::ulid::is_ulid(&text.to_ascii_uppercase()) || uuid::Uuid::parse_str(text).is_ok()
}

/// A failed read of the audit trail as its status ([`status::audit_read_failed`]), logged first when
/// it found a record changed after it was written.
fn read_failure(error: &crate::audit::AuditError) -> Status {
    if let crate::audit::AuditError::Corrupt(problem) = error {
        tracing::error!(%problem, "an audit record was changed after it was written; refused");
    }
    status::audit_read_failed(error)
}

/// A valid case_id: at most 128 characters from `A-Z a-z 0-9 . _ : -`.
fn is_valid_case_id(case_id: &str) -> bool {
    case_id.len() <= core::case::MAX_CASE_ID_CHARS
        && case_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

fn case_tag(case_id: &str) -> String {
    crate::auth::token_sha256_hex(case_id)[..16].to_string()
}

/// An opaque page token: the position in the listing and a tag of the case it belongs to.
fn page_token(case_id: &str, seq: i64) -> String {
    let raw = format!("v1:{seq}:{}", case_tag(case_id));
    raw.bytes().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_page_token(token: &str, case_id: &str) -> Option<i64> {
    if !token.len().is_multiple_of(2) || token.len() > 256 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(token.get(index..index + 2)?, 16).ok())
        .collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let mut parts = raw.split(':');
    let (Some("v1"), Some(seq), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let seq: i64 = seq.parse().ok()?;
    (tag == case_tag(case_id) && seq > 0).then_some(seq)
}

/// A stored record as the contract's message; the stored bytes decode into exactly the messages
/// that were answered.
fn record_out(stored: RecordWithFeedback) -> Result<pb::RecommendationRecord, Status> {
    let damaged = status::damaged_record;
    let record = stored.record.record;
    let content = match record.kind {
        Kind::Recommend => pb::recommendation_record::Content::Recommend(pb::RecommendRecord {
            case: pb::RecommendRequest::decode(record.request.as_slice())
                .map_err(|_| damaged("request"))?
                .case,
            plan: Some(pb::Plan::decode(record.response.as_slice()).map_err(|_| damaged("plan"))?),
        }),
        Kind::Check => pb::recommendation_record::Content::Check(pb::CheckRecord {
            request: Some(
                pb::CheckPrescriptionRequest::decode(record.request.as_slice())
                    .map_err(|_| damaged("request"))?,
            ),
            response: Some(
                pb::CheckPrescriptionResponse::decode(record.response.as_slice())
                    .map_err(|_| damaged("response"))?,
            ),
        }),
        Kind::Feedback | Kind::CdsCard => return Err(damaged("kind")),
    };
    let feedback = stored
        .feedback
        .into_iter()
        .map(|entry| {
            let request = pb::RecordFeedbackRequest::decode(entry.record.request.as_slice())
                .map_err(|_| damaged("feedback"))?;
            Ok(pb::Feedback {
                outcome: request.outcome,
                reason: request.reason,
                caller: entry.record.caller,
                created_at: entry.record.created_at,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    // The guideline as the stored answer names it (with its alpha/beta ratios), when that is the
    // one the record was written under; the record's own columns otherwise.
    let answered_under = match &content {
        pb::recommendation_record::Content::Recommend(stored) => {
            stored.plan.as_ref().and_then(|plan| plan.guideline.clone())
        }
        pb::recommendation_record::Content::Check(stored) => stored
            .response
            .as_ref()
            .and_then(|response| response.guideline.clone()),
    };
    let guideline = answered_under
        .filter(|guideline| {
            guideline.version == record.guideline_version
                && guideline.sha256 == record.guideline_sha256
        })
        .unwrap_or_else(|| pb::GuidelineRef {
            version: record.guideline_version,
            sha256: record.guideline_sha256,
            ..Default::default()
        });
    Ok(pb::RecommendationRecord {
        recommendation_id: record.recommendation_id,
        created_at: record.created_at,
        caller: record.caller,
        guideline: Some(guideline),
        case_id: record.case_id,
        content: Some(content),
        feedback,
    })
}

/// A case_id fit for a log line: the case_id itself when it is valid, `<invalid>` otherwise, so
/// that an invalid request cannot write other content (a name, say) into the log.
fn loggable_case_id(case_id: &str) -> &str {
    if is_valid_case_id(case_id) {
        case_id
    } else {
        "<invalid>"
    }
}

/// How many items of one `RecommendStream` are worked on at once (answers still leave in request
/// order). With the audit trail on, an item waits for its record's commit; working on several at
/// once lets consecutive items share a commit instead of paying one fsync each
/// (docs/perf/decisions/010-audited-stream-pipeline.md).
const STREAM_PIPELINE: usize = 32;

/// The audit writer's queue limit for a server admitting `max_concurrent_calls` calls: twice the
/// most records its admitted calls can have waiting at once (a stream has up to `STREAM_PIPELINE`),
/// so that it is never reached while the store keeps up, and bounds the records left queued by
/// calls that gave up on a stalled store (and by their retries) instead of letting them grow.
/// At most 2^18 (the queue's slots are allocated up front, 24 bytes each), so above 4,096
/// concurrent calls a stalled-store backlog is refused sooner than twice the admitted calls' worth;
/// the records' memory is bounded separately, in bytes ([`crate::audit::DEFAULT_QUEUE_BYTES`]).
pub fn audit_queue_limit(max_concurrent_calls: usize) -> usize {
    max_concurrent_calls
        .saturating_mul(STREAM_PIPELINE)
        .max(crate::audit::MAX_BATCH)
        .saturating_mul(2)
        .min(1 << 18)
}

/// A plan encoded for `Recommend`, with its id for the audit trail.
/// Who an audit record is for: the answer's id and kind, its caller and case, and (feedback) the
/// record it is about.
struct Answered<'a> {
    recommendation_id: &'a str,
    kind: Kind,
    caller: &'a str,
    case_id: &'a str,
    subject_id: Option<String>,
}

/// The request's `case_id` as sent ("" without a case).
fn request_case_id(request: &pb::RecommendRequest) -> &str {
    request
        .case
        .as_ref()
        .map_or("", |case| case.case_id.as_str())
}

struct EncodedPlan {
    recommendation_id: crate::ulid::Ulid,
    plan: Vec<u8>,
}

/// A running `RecommendStream` call: holds its admission and writes the call's one log line when
/// it ends (normally, with an error status, or when the client goes away).
struct StreamCall {
    inner: StreamResult,
    service: Service,
    started: Instant,
    caller: String,
    items: u64,
    rejected: u64,
    done: bool,
    place: Arc<StreamPlace>,
    /// The caller's deadline, if it sent one.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A stream's admission, and when the stream was last asked for an answer. A client that stops
/// reading stops HTTP/2 from taking answers, and then nothing asks the stream for one: no timer of
/// the stream's own runs. [`reclaim_unread`] watches from outside and gives the place back.
struct StreamPlace {
    admission: std::sync::Mutex<Option<Admission<Arc<Limiter>>>>,
    last_polled: std::sync::Mutex<Instant>,
    released: std::sync::atomic::AtomicBool,
}

/// Gives a stream's place back once its answers have not been taken for `unread_for` (twice the
/// call timeout: longer than any wait of a stream that is being read), and ends the stream if it
/// is ever asked again. Ends with the stream.
async fn reclaim_unread(place: std::sync::Weak<StreamPlace>, unread_for: Duration, caller: String) {
    let period = (unread_for / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(period).await;
        let Some(place) = place.upgrade() else {
            return;
        };
        let idle = match place.last_polled.lock() {
            Ok(last) => last.elapsed(),
            Err(poisoned) => poisoned.into_inner().elapsed(),
        };
        if idle < unread_for {
            continue;
        }
        place.released.store(true, Ordering::SeqCst);
        let admission = match place.admission.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(admission);
        tracing::info!(
            rpc = "RecommendStream",
            caller = %caller,
            unread_s = idle.as_secs(),
            "a stream whose answers were not read gave its place back"
        );
        return;
    }
}

impl StreamCall {
    fn log(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.started.elapsed();
        self.service
            .options
            .metrics
            .call("RecommendStream", code, elapsed.as_secs_f64());
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            rpc = "RecommendStream",
            code = ?code,
            latency_us,
            caller = %self.caller,
            items = self.items,
            rejected = self.rejected,
            "call"
        );
    }
}

impl Stream for StreamCall {
    type Item = Result<EncodedStreamResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.place.released.load(Ordering::SeqCst) {
            self.log(Code::DeadlineExceeded);
            return Poll::Ready(Some(Err(status::stream_unread())));
        }
        match self.place.last_polled.lock() {
            Ok(mut last) => *last = Instant::now(),
            Err(poisoned) => *poisoned.into_inner() = Instant::now(),
        }
        let polled = self.inner.as_mut().poll_next(context);
        if polled.is_pending()
            && let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(context).is_ready()
        {
            self.log(Code::DeadlineExceeded);
            return Poll::Ready(Some(Err(status::stream_deadline_passed())));
        }
        match &polled {
            Poll::Ready(Some(Ok(response))) => {
                self.items += 1;
                if matches!(response.result, EncodedStreamResult::Error(_)) {
                    self.rejected += 1;
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.log(code);
            }
            Poll::Ready(None) => self.log(Code::Ok),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for StreamCall {
    fn drop(&mut self) {
        // The client went away before the stream ended.
        self.log(Code::Cancelled);
    }
}

/// A CDS Hooks card or suggestion to record: its uuid and what it shows (stored as JSON: the
/// alert code of an alert card; the option label of a suggestion, and whether it is the preferred
/// one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardLink {
    pub card_uuid: String,
    pub shows: serde_json::Value,
}

/// What the CDS Hooks front (`crate::cds`) uses: the gRPC path's own admission, validation, audit
/// record and log line, called in-process.
impl Service {
    /// The guideline version plans report.
    pub fn guideline_version(&self) -> &str {
        self.profile.version()
    }

    /// Whether answers can be recorded now (always, without an audit trail): what readiness
    /// reports.
    pub fn can_record(&self) -> bool {
        self.options
            .audit
            .as_ref()
            .is_none_or(|audit| *audit.health().borrow())
    }

    /// `Recommend` for `case` on behalf of `caller`, exactly as a gRPC call (recorded before it
    /// returns).
    pub async fn recommend_in_process(
        &self,
        case: pb::Case,
        caller: &str,
    ) -> Result<pb::Plan, Status> {
        let mut request = Request::new(pb::RecommendRequest { case: Some(case) });
        request.extensions_mut().insert(Caller(caller.to_string()));
        let response = RecommendationService::recommend(self, request).await?;
        pb::Plan::decode(response.into_inner().plan.as_slice()).map_err(|error| {
            tracing::error!(%error, "a plan this server encoded does not decode");
            crate::status::own_answer_not_decodable("plan")
        })
    }

    /// `CheckPrescription` on behalf of `caller`, exactly as a gRPC call (recorded before it
    /// returns).
    pub async fn check_in_process(
        &self,
        request: pb::CheckPrescriptionRequest,
        caller: &str,
    ) -> Result<pb::CheckPrescriptionResponse, Status> {
        let mut request = Request::new(request);
        request.extensions_mut().insert(Caller(caller.to_string()));
        RecommendationService::check_prescription(self, request)
            .await
            .map(Response::into_inner)
    }

    /// `RecordFeedback` on behalf of `caller`, exactly as a gRPC call.
    pub async fn feedback_in_process(
        &self,
        request: pb::RecordFeedbackRequest,
        caller: &str,
    ) -> Result<(), Status> {
        let mut request = Request::new(request);
        request.extensions_mut().insert(Caller(caller.to_string()));
        RecommendationService::record_feedback(self, request)
            .await
            .map(|_| ())
    }

    /// The CDS Hooks card or suggestion record with this uuid, hash-checked.
    pub async fn card_record(
        &self,
        uuid: &str,
    ) -> Result<Option<crate::audit::StoredRecord>, Status> {
        self.auditor()?
            .card(uuid.to_string())
            .await
            .map_err(|error| read_failure(&error))
    }

    /// Records the cards shown for recommendation `recommendation_id` (one record per card, its
    /// uuid as the record id), so feedback on a card finds its recommendation on any replica.
    /// `context` is the hook invocation (hook, instance, FHIR server, user, EHR resources used).
    pub async fn record_cards(
        &self,
        caller: &str,
        recommendation_id: &str,
        case_id: &str,
        context: &serde_json::Value,
        cards: &[CardLink],
    ) -> Result<(), Status> {
        let request = context.to_string().into_bytes();
        let appends = cards.iter().map(|card| {
            let response = card.shows.to_string();
            let request = request.clone();
            async move {
                self.record_bytes(
                    Answered {
                        recommendation_id: &card.card_uuid,
                        kind: Kind::CdsCard,
                        caller,
                        case_id,
                        subject_id: Some(recommendation_id.to_string()),
                    },
                    request,
                    response.as_bytes(),
                    self.options.audit_wait,
                )
                .await
            }
        });
        futures_util::future::try_join_all(appends)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_queue_holds_twice_what_admitted_calls_can_have_waiting() {
        assert_eq!(audit_queue_limit(256), 256 * STREAM_PIPELINE * 2);
        assert_eq!(audit_queue_limit(1), crate::audit::MAX_BATCH * 2);
        assert_eq!(audit_queue_limit(usize::MAX), 1 << 18);
    }

    #[test]
    fn the_limiter_admits_up_to_its_limit_and_takes_places_back() {
        let metrics = Metrics::new(None).expect("metrics");
        let limiter = Arc::new(Limiter::new(2, 2, &metrics));
        let admit = |caller: &str| {
            limiter
                .try_acquire(caller)
                .map(|()| Admission(Arc::clone(&limiter), caller.to_string()))
        };
        let first = admit("a");
        let second = admit("b");
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(
            admit("c").err(),
            Some(Refusal::Full),
            "a third call is shed"
        );
        assert_eq!((limiter.in_flight(), metrics.in_flight().get()), (2, 2));
        drop(second);
        assert_eq!((limiter.in_flight(), metrics.in_flight().get()), (1, 1));
        let third = admit("c");
        assert!(third.is_ok());
        assert!(admit("d").is_err());
        drop((first, third));
        assert_eq!((limiter.in_flight(), metrics.in_flight().get()), (0, 0));
    }

    #[test]
    fn one_caller_cannot_take_every_place() {
        let metrics = Metrics::new(None).expect("metrics");
        let limiter = Arc::new(Limiter::new(4, 2, &metrics));
        let admit = |caller: &str| {
            limiter
                .try_acquire(caller)
                .map(|()| Admission(Arc::clone(&limiter), caller.to_string()))
        };
        let greedy = [admit("greedy"), admit("greedy")];
        assert!(greedy.iter().all(Result::is_ok));
        assert_eq!(admit("greedy").err(), Some(Refusal::CallerShare));
        let others = [admit("ris"), admit("tps")];
        assert!(others.iter().all(Result::is_ok), "the others still get in");
        assert_eq!(admit("third").err(), Some(Refusal::Full));
        drop(greedy);
        assert!(admit("greedy").is_ok(), "the share comes back");
        drop(others);
    }

    #[test]
    fn code_names_are_the_debug_names() {
        for number in 0..=16 {
            let code = Code::from_i32(number);
            assert_eq!(code_log_name(code), format!("{code:?}"));
        }
    }
}
