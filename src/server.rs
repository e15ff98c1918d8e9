//! The tonic service: admit, decode, call the core, encode. Every error becomes a `Status` in one
//! place ([`invalid_argument`] for bad input, [`overloaded`] for shed calls), and every call writes
//! one log line with its RPC, status code, latency, caller and case_id (never other case content).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::auth::{ANONYMOUS, Caller};
use crate::convert;
use crate::core::{self, Profile, Proposal, Violations};
use crate::metrics::Metrics;
use crate::pb;
use crate::pb::recommendation_service_server::RecommendationService;

/// Most field violations reported for one request. Real cases have far fewer; the cap keeps a
/// hostile request (thousands of bad list entries) from producing trailers no client can read.
pub const MAX_REPORTED_VIOLATIONS: usize = 50;

/// What the service needs besides the profile.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub metrics: Arc<Metrics>,
    /// Process-wide admission: one permit per call in flight.
    pub limiter: Arc<Semaphore>,
    pub max_stream_items: u64,
    /// Longest wait for the next item of a `RecommendStream`.
    pub stream_idle_timeout: Duration,
}

/// The service over one guideline profile.
#[derive(Debug, Clone)]
pub struct Service {
    profile: Arc<Profile>,
    options: ServiceOptions,
}

/// An admitted call: holds its concurrency permit and keeps the in-flight gauge right.
struct Admission {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.metrics.in_flight().dec();
    }
}

impl Service {
    /// A service answering from `profile`.
    pub fn new(profile: Arc<Profile>, options: ServiceOptions) -> Self {
        Self { profile, options }
    }

    /// Admits a call or sheds it at once (no queue): overload answers fast instead of piling up.
    fn admit(&self, rpc: &'static str, caller: &str) -> Result<Admission, Status> {
        match Arc::clone(&self.options.limiter).try_acquire_owned() {
            Ok(permit) => {
                self.options.metrics.in_flight().inc();
                Ok(Admission {
                    _permit: permit,
                    metrics: Arc::clone(&self.options.metrics),
                })
            }
            Err(_) => {
                self.options.metrics.shed(rpc);
                tracing::info!(rpc, code = ?Code::ResourceExhausted, caller, "shed");
                Err(overloaded())
            }
        }
    }

    fn recommend_one(&self, request: &pb::RecommendRequest) -> Result<pb::Plan, Violations> {
        let case = convert::case_from_request(request)?;
        let plan = core::recommend(&self.profile, &case);
        let plan = convert::plan_out(&plan, new_recommendation_id());
        self.options.metrics.plan(indication_label(plan.indication));
        Ok(plan)
    }

    fn finish(&self, rpc: &'static str, code: Code, started: Instant, caller: &str, case_id: &str) {
        let elapsed = started.elapsed();
        self.options.metrics.call(rpc, code, elapsed.as_secs_f64());
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        tracing::info!(rpc, code = ?code, latency_us, caller, case_id, "call");
    }
}

fn indication_label(indication: i32) -> &'static str {
    pb::Indication::try_from(indication).map_or("UNKNOWN", |indication| indication.as_str_name())
}

fn caller_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| ANONYMOUS.to_string(), |caller| caller.0.clone())
}

/// A fresh unique id for a plan or a check.
pub fn new_recommendation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The status of a shed call.
pub fn overloaded() -> Status {
    Status::resource_exhausted("the server is at its concurrency limit; retry with backoff")
}

/// The one mapping of validation failures to a status: INVALID_ARGUMENT with a
/// `google.rpc.BadRequest` holding every violation in field order (at most
/// [`MAX_REPORTED_VIOLATIONS`], the last one saying how many more there were).
pub fn invalid_argument(violations: &Violations) -> Status {
    let mut field_violations: Vec<FieldViolation> = violations
        .iter()
        .take(MAX_REPORTED_VIOLATIONS)
        .map(|violation| {
            FieldViolation::new(violation.field.clone(), violation.description.clone())
        })
        .collect();
    if violations.len() > MAX_REPORTED_VIOLATIONS
        && let Some(next) = violations.iter().nth(MAX_REPORTED_VIOLATIONS)
    {
        field_violations.push(FieldViolation::new(
            next.field.clone(),
            format!(
                "{} more violations from here on are not listed",
                violations.len() - MAX_REPORTED_VIOLATIONS
            ),
        ));
    }
    let summary: Vec<String> = violations
        .iter()
        .take(5)
        .map(|violation| format!("{}: {}", violation.field, violation.description))
        .collect();
    let message = format!(
        "the request has {} invalid field{}: {}{}",
        violations.len(),
        if violations.len() == 1 { "" } else { "s" },
        summary.join("; "),
        if violations.len() > 5 { "; …" } else { "" }
    );
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(field_violations),
    )
}

/// The same failure as an in-band `google.rpc.Status` for a stream item.
pub fn in_band_status(status: &Status) -> pb::google::rpc::Status {
    // `with_error_details` stores the encoded google.rpc.Status (code, message, details) as the
    // status details; decoding it again keeps one source of truth for the error's shape.
    pb::google::rpc::Status::decode(status.details()).unwrap_or_else(|_| pb::google::rpc::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: Vec::new(),
    })
}

/// A case_id fit for a log line: the case_id itself when it is valid, `<invalid>` otherwise, so
/// that an invalid request cannot write other content (a name, say) into the log.
fn loggable_case_id(case: Option<&pb::Case>) -> String {
    let Some(case) = case else {
        return String::new();
    };
    let valid = case.case_id.len() <= core::case::MAX_CASE_ID_CHARS
        && case
            .case_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if valid {
        case.case_id.clone()
    } else {
        String::from("<invalid>")
    }
}

type StreamResult = Pin<Box<dyn Stream<Item = Result<pb::RecommendStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RecommendationService for Service {
    async fn recommend(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        let started = Instant::now();
        let caller = caller_of(&request);
        let _admission = self.admit("Recommend", &caller)?;
        let request = request.into_inner();
        let case_id = loggable_case_id(request.case.as_ref());
        let result = self
            .recommend_one(&request)
            .map(|plan| Response::new(pb::RecommendResponse { plan: Some(plan) }))
            .map_err(|violations| invalid_argument(&violations));
        self.finish(
            "Recommend",
            result.as_ref().map_or_else(Status::code, |_| Code::Ok),
            started,
            &caller,
            &case_id,
        );
        result
    }

    type RecommendStreamStream = StreamResult;

    async fn recommend_stream(
        &self,
        request: Request<Streaming<pb::RecommendRequest>>,
    ) -> Result<Response<Self::RecommendStreamStream>, Status> {
        let started = Instant::now();
        let caller = caller_of(&request);
        let admission = self.admit("RecommendStream", &caller)?;
        let service = self.clone();
        let max_items = self.options.max_stream_items;
        let idle_timeout = self.options.stream_idle_timeout;
        let mut received = 0_u64;
        // Items are answered one by one in request order. A transport or decode failure, a stream
        // idle for longer than the call timeout, or one item too many ends the stream with that status.
        let outbound = Box::pin(request.into_inner().timeout(idle_timeout)).map(move |item| {
            let item = item
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "no stream item within {} s",
                        idle_timeout.as_secs_f64()
                    ))
                })?
                // tonic reports a malformed item as INTERNAL; it is the caller's fault.
                .map_err(|status| match status.code() {
                    Code::Internal => Status::invalid_argument(format!(
                        "malformed stream item: {}",
                        status.message()
                    )),
                    _ => status,
                })?;
            received += 1;
            if received > max_items {
                return Err(Status::resource_exhausted(format!(
                    "a stream may carry at most {max_items} items"
                )));
            }
            let case_id = item
                .case
                .as_ref()
                .map(|case| case.case_id.clone())
                .unwrap_or_default();
            let result = match service.recommend_one(&item) {
                Ok(plan) => pb::recommend_stream_response::Result::Plan(plan),
                Err(violations) => pb::recommend_stream_response::Result::Error(in_band_status(
                    &invalid_argument(&violations),
                )),
            };
            Ok(pb::RecommendStreamResponse {
                case_id,
                result: Some(result),
            })
        });
        let logged = StreamCall {
            inner: Box::pin(outbound),
            service: self.clone(),
            started,
            caller,
            items: 0,
            rejected: 0,
            done: false,
            _admission: admission,
        };
        Ok(Response::new(Box::pin(logged)))
    }

    async fn check_prescription(
        &self,
        request: Request<pb::CheckPrescriptionRequest>,
    ) -> Result<Response<pb::CheckPrescriptionResponse>, Status> {
        let started = Instant::now();
        let caller = caller_of(&request);
        let _admission = self.admit("CheckPrescription", &caller)?;
        let request = request.into_inner();
        let case_id = loggable_case_id(request.case.as_ref());
        let result = Proposal::validate(&convert::raw_proposal(&request))
            .map(|proposal| {
                let report = core::check(&self.profile, &proposal);
                Response::new(convert::report_out(
                    &report,
                    new_recommendation_id(),
                    new_recommendation_id(),
                ))
            })
            .map_err(|violations| invalid_argument(&violations));
        self.finish(
            "CheckPrescription",
            result.as_ref().map_or_else(Status::code, |_| Code::Ok),
            started,
            &caller,
            &case_id,
        );
        result
    }

    async fn get_guideline(
        &self,
        request: Request<pb::GetGuidelineRequest>,
    ) -> Result<Response<pb::Guideline>, Status> {
        let started = Instant::now();
        let caller = caller_of(&request);
        let _admission = self.admit("GetGuideline", &caller)?;
        let guideline = convert::guideline_out(&self.profile);
        self.finish("GetGuideline", Code::Ok, started, &caller, "");
        Ok(Response::new(guideline))
    }
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
    _admission: Admission,
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
    type Item = Result<pb::RecommendStreamResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = self.inner.as_mut().poll_next(context);
        match &polled {
            Poll::Ready(Some(Ok(response))) => {
                self.items += 1;
                if matches!(
                    response.result,
                    Some(pb::recommend_stream_response::Result::Error(_))
                ) {
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
