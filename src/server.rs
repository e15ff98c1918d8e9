//! The tonic service: decode, call the core, encode. Every error becomes a `Status` in one place
//! ([`invalid_argument`]), and every call writes one log line with its RPC, code, latency and
//! case_id (never other case content).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::convert;
use crate::core::{self, Profile, Proposal, Violations};
use crate::pb;
use crate::pb::recommendation_service_server::RecommendationService;

/// The service over one guideline profile.
#[derive(Debug, Clone)]
pub struct Service {
    profile: Arc<Profile>,
}

impl Service {
    /// A service answering from `profile`.
    pub fn new(profile: Arc<Profile>) -> Self {
        Self { profile }
    }

    fn recommend_one(&self, request: &pb::RecommendRequest) -> Result<pb::Plan, Violations> {
        let case = convert::case_from_request(request)?;
        let plan = core::recommend(&self.profile, &case);
        Ok(convert::plan_out(&plan, new_recommendation_id()))
    }
}

/// A fresh unique id for a plan or a check.
pub fn new_recommendation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The one mapping of validation failures to a status: INVALID_ARGUMENT with a
/// `google.rpc.BadRequest` holding every violation in field order.
pub fn invalid_argument(violations: &Violations) -> Status {
    let field_violations: Vec<FieldViolation> = violations
        .iter()
        .map(|violation| {
            FieldViolation::new(violation.field.clone(), violation.description.clone())
        })
        .collect();
    let message = format!(
        "the request has {} invalid field{}: {violations}",
        violations.len(),
        if violations.len() == 1 { "" } else { "s" }
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

fn log_call(rpc: &'static str, code: Code, started: Instant, case_id: &str) {
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    tracing::info!(rpc, code = ?code, latency_us, case_id, "call");
}

/// A case_id fit for a log line: only the characters a valid case_id may hold, and only 128 of them,
/// so that an invalid request cannot write other content into the log.
fn loggable_case_id(case: Option<&pb::Case>) -> String {
    case.map(|case| {
        case.case_id
            .chars()
            .take(core::case::MAX_CASE_ID_CHARS)
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
            .collect()
    })
    .unwrap_or_default()
}

type StreamResult = Pin<Box<dyn Stream<Item = Result<pb::RecommendStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RecommendationService for Service {
    async fn recommend(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let case_id = loggable_case_id(request.case.as_ref());
        let result = self
            .recommend_one(&request)
            .map(|plan| Response::new(pb::RecommendResponse { plan: Some(plan) }))
            .map_err(|violations| invalid_argument(&violations));
        log_call(
            "Recommend",
            result.as_ref().map_or_else(Status::code, |_| Code::Ok),
            started,
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
        let service = self.clone();
        let inbound = request.into_inner();
        // Items are answered one by one in request order; a transport or decode failure ends the
        // stream with that status.
        let outbound = inbound.map(move |item| {
            let item = item?;
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
        let logged = LogOnEnd {
            inner: Box::pin(outbound),
            started,
            items: 0,
            rejected: 0,
            logged: false,
        };
        Ok(Response::new(Box::pin(logged)))
    }

    async fn check_prescription(
        &self,
        request: Request<pb::CheckPrescriptionRequest>,
    ) -> Result<Response<pb::CheckPrescriptionResponse>, Status> {
        let started = Instant::now();
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
        log_call(
            "CheckPrescription",
            result.as_ref().map_or_else(Status::code, |_| Code::Ok),
            started,
            &case_id,
        );
        result
    }

    async fn get_guideline(
        &self,
        _request: Request<pb::GetGuidelineRequest>,
    ) -> Result<Response<pb::Guideline>, Status> {
        let started = Instant::now();
        let guideline = convert::guideline_out(&self.profile);
        log_call("GetGuideline", Code::Ok, started, "");
        Ok(Response::new(guideline))
    }
}

/// Wraps the outbound stream to write the call's log line when it ends normally.
struct LogOnEnd {
    inner: StreamResult,
    started: Instant,
    items: u64,
    rejected: u64,
    logged: bool,
}

impl Stream for LogOnEnd {
    type Item = Result<pb::RecommendStreamResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(context);
        match &polled {
            std::task::Poll::Ready(Some(Ok(response))) => {
                self.items += 1;
                if matches!(
                    response.result,
                    Some(pb::recommend_stream_response::Result::Error(_))
                ) {
                    self.rejected += 1;
                }
            }
            std::task::Poll::Ready(Some(Err(status))) if !self.logged => {
                let code = status.code();
                self.log(code);
            }
            std::task::Poll::Ready(None) if !self.logged => self.log(Code::Ok),
            _ => {}
        }
        polled
    }
}

impl LogOnEnd {
    fn log(&mut self, code: Code) {
        self.logged = true;
        let latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            rpc = "RecommendStream",
            code = ?code,
            latency_us,
            items = self.items,
            rejected = self.rejected,
            "call"
        );
    }
}
