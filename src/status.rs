//! Every error the service answers with becomes a gRPC status here, and only here: what a caller
//! reads (code, message, details) is decided in this module, for the handlers' own refusals, for
//! the statuses tonic sets before a handler runs (rewritten in the response's headers by
//! `codec::ClientFault` and `never_internal::NeverInternal`), for the layers in front of the
//! service (token check, health `Watch` gate, request framing, the caller's deadline) and for the
//! audit trail. Logging and counting stay with the layer that sees the call.
//!
//! The promise behind the rewrites: nothing a client can send is answered INTERNAL.

use std::time::Duration;

use prost::Message;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::core::Violations;
use crate::pb;

// --- Bad input --------------------------------------------------------------------------------

/// Most field violations reported for one request. Real cases have far fewer; the cap keeps a
/// hostile request (thousands of bad list entries) from producing trailers no client can read.
pub const MAX_REPORTED_VIOLATIONS: usize = 50;

/// The one mapping of validation failures to a status: INVALID_ARGUMENT with a
/// `google.rpc.BadRequest` holding every violation in field order. Past
/// [`MAX_REPORTED_VIOLATIONS`] + 1 of them, the first [`MAX_REPORTED_VIOLATIONS`] are listed and
/// one more entry, at the next violation's field, says how many were left out (one more real
/// violation fits in that entry's place, so up to 51 are all listed).
pub fn invalid_argument(violations: &Violations) -> Status {
    let listed = if violations.len() > MAX_REPORTED_VIOLATIONS + 1 {
        MAX_REPORTED_VIOLATIONS
    } else {
        violations.len()
    };
    let mut field_violations: Vec<FieldViolation> = violations
        .iter()
        .take(listed)
        .map(|violation| {
            FieldViolation::new(violation.field.clone(), violation.description.clone())
        })
        .collect();
    if listed < violations.len()
        && let Some(next) = violations.iter().nth(listed)
    {
        field_violations.push(FieldViolation::new(
            next.field.clone(),
            omitted_note(violations.len() - listed),
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

/// The description of the entry that stands for the violations left out of a long list.
fn omitted_note(count: usize) -> String {
    format!("{count} more violations from here on are not listed")
}

/// How many violations an entry stands for when it is the [`omitted_note`] of a long list.
pub fn omitted_violations(description: &str) -> Option<usize> {
    let count = description.strip_suffix(" more violations from here on are not listed")?;
    count
        .parse()
        .ok()
        .filter(|count| omitted_note(*count) == description)
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

/// A request body that is not a valid protobuf message (`codec::StrictDecoder`): the caller's
/// fault, not prost's INTERNAL.
pub fn not_protobuf(error: &prost::DecodeError) -> Status {
    Status::invalid_argument(format!("the message is not valid protobuf: {error}"))
}

/// The start of [`not_protobuf`]'s message, as it is percent-encoded in `grpc-message`.
const NOT_PROTOBUF: &[u8] = b"the%20message%20is%20not%20valid%20protobuf";

/// A request body that ended inside a message frame (`framing::CheckFrames`); `missing` says what
/// was missing.
pub fn truncated_frame(missing: &str) -> Status {
    Status::invalid_argument(format!(
        "the request ended inside a message frame: its last item is truncated ({missing} missing)"
    ))
}

/// A `RecommendStream` item tonic could not read: a malformed one (tonic's INTERNAL, the caller's
/// fault) becomes INVALID_ARGUMENT, one over the size limit (tonic's OUT_OF_RANGE)
/// RESOURCE_EXHAUSTED, as gRPC reports it elsewhere; any other status stays what it is.
pub fn unreadable_stream_item(status: Status) -> Status {
    match status.code() {
        Code::Internal => {
            Status::invalid_argument(format!("malformed stream item: {}", status.message()))
        }
        Code::OutOfRange => {
            Status::resource_exhausted(format!("stream item too large: {}", status.message()))
        }
        _ => status,
    }
}

// --- Who may call, and how many ---------------------------------------------------------------

/// A call without a bearer token the server knows (the same answer for every refusal).
pub fn unauthenticated() -> Status {
    Status::unauthenticated("a valid bearer token is required")
}

/// The status of a call shed because every place is taken.
pub fn overloaded() -> Status {
    Status::resource_exhausted("the server is at its concurrency limit; retry with backoff")
}

/// The status of a call shed because its caller holds its share of `per_caller` places.
pub fn caller_share_taken(per_caller: usize) -> Status {
    Status::resource_exhausted(format!(
        "this caller already has {per_caller} calls in flight, its share of the server; retry with backoff"
    ))
}

/// A health `Watch` refused because `limit` of them are open.
pub fn too_many_health_watches(limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "at most {limit} health Watch streams may be open at once; use Check to poll"
    ))
}

/// A `RecommendStream` item past the `max_items` a stream may carry.
pub fn too_many_stream_items(max_items: u64) -> Status {
    Status::resource_exhausted(format!("a stream may carry at most {max_items} items"))
}

// --- Deadlines --------------------------------------------------------------------------------

/// A call still pending at its caller's `grpc-timeout` (`client_deadline`).
pub fn caller_deadline_passed(deadline: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the caller's deadline ({} ms) passed before the answer was ready",
        deadline.as_millis()
    ))
}

/// A `RecommendStream` still open at its caller's deadline.
pub fn stream_deadline_passed() -> Status {
    Status::deadline_exceeded("the caller's deadline passed before the stream ended")
}

/// A `RecommendStream` whose next item did not come within `idle_timeout`.
pub fn stream_idle(idle_timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "no stream item within {} s",
        idle_timeout.as_secs_f64()
    ))
}

/// A `RecommendStream` whose answers were not read, so its place was given back.
pub fn stream_unread() -> Status {
    Status::deadline_exceeded(
        "the client did not read the stream's answers; its place was given back",
    )
}

// --- The audit trail --------------------------------------------------------------------------

/// The audit store refused a record: the answer is withheld.
pub fn audit_write_failed() -> Status {
    Status::unavailable("the audit store cannot record this answer, so none was sent; retry later")
}

/// The caller's own deadline ran out before the audit store confirmed the record.
pub fn audit_deadline_ran_out() -> Status {
    Status::deadline_exceeded(
        "the deadline ran out before the audit store confirmed this answer, so none was sent",
    )
}

/// The audit store did not confirm the record within the server's audit wait.
pub fn audit_unconfirmed() -> Status {
    Status::unavailable(
        "the audit store did not confirm this answer in time, so none was sent; retry later",
    )
}

/// A read of the audit trail that failed: DATA_LOSS for a record that no longer matches its hash
/// (refused, not served), UNAVAILABLE otherwise.
pub fn audit_read_failed(error: &crate::audit::AuditError) -> Status {
    match error {
        crate::audit::AuditError::Corrupt(problem) => Status::data_loss(format!(
            "the stored record was changed after it was written and is not served: {problem}"
        )),
        other => Status::unavailable(format!("the audit store cannot be read: {other}")),
    }
}

/// A stored record part (`what`: its request, plan, response, kind or feedback) that does not
/// decode as the message it should be.
pub fn damaged_record(what: &str) -> Status {
    Status::data_loss(format!(
        "the stored {what} of this record cannot be decoded"
    ))
}

/// An answer this server encoded that does not decode again (the CDS Hooks front reads the plan
/// it gets in-process): a defect of the server, never the caller's fault.
pub fn own_answer_not_decodable(what: &str) -> Status {
    Status::internal(format!("the {what} this server encoded does not decode"))
}

/// A call that needs the audit trail on a server running without one.
pub fn auditing_disabled() -> Status {
    Status::failed_precondition("auditing is disabled on this server (--audit-db none)")
}

/// No record under `recommendation_id` (as the caller wrote it).
pub fn no_recommendation(recommendation_id: &str) -> Status {
    Status::not_found(format!("no recommendation {recommendation_id}"))
}

// --- Statuses tonic set before a handler ran --------------------------------------------------

/// For a response of the recommendation service (`codec::ClientFault`): the status the caller
/// sees when tonic (or the token check) set it before any handler ran, rewritten in `headers` when
/// it is one to rewrite; `None` for a status a handler chose, left as it is. tonic's INTERNAL from
/// the request's framing (a truncated body, an unnegotiated compressed flag, a missing request
/// message) becomes INVALID_ARGUMENT and its OUT_OF_RANGE for a request over the size limit
/// RESOURCE_EXHAUSTED; UNAUTHENTICATED, UNIMPLEMENTED and the decoder's INVALID_ARGUMENT stay.
pub fn answered_before_handlers(headers: &mut http::HeaderMap) -> Option<Code> {
    let (code, prefix) = before_handlers(
        headers.get("grpc-status")?.as_bytes(),
        headers.get("grpc-message").map(http::HeaderValue::as_bytes),
    )?;
    if let Some(prefix) = prefix {
        set_status(headers, code, prefix);
    }
    Some(code)
}

/// [`answered_before_handlers`]'s decision on a `grpc-status` and `grpc-message`: the code the
/// caller sees and the (percent-encoded) prefix of its new message when it is rewritten. The
/// handlers never answer INTERNAL, OUT_OF_RANGE, UNAUTHENTICATED or UNIMPLEMENTED, and their
/// INVALID_ARGUMENT messages never start as [`not_protobuf`]'s does.
fn before_handlers(status: &[u8], message: Option<&[u8]>) -> Option<(Code, Option<&'static str>)> {
    match status {
        b"13" => Some((
            Code::InvalidArgument,
            Some("malformed%20request%20framing:%20"),
        )),
        b"11" => Some((Code::ResourceExhausted, Some("request%20too%20large:%20"))),
        b"16" => Some((Code::Unauthenticated, None)),
        b"12" => Some((Code::Unimplemented, None)),
        b"3" if message.is_some_and(|message| message.starts_with(NOT_PROTOBUF)) => {
            Some((Code::InvalidArgument, None))
        }
        _ => None,
    }
}

/// tonic's message for a request message it could not decode, as percent-encoded in
/// `grpc-message`: the one INTERNAL of the services tonic generates that is the caller's fault.
const UNDECODABLE: &[u8] = b"failed%20to%20decode";

/// For a response of the services tonic generates for us, health and reflection
/// (`never_internal::NeverInternal`; `headers` are its headers or its trailers): an INTERNAL from
/// decoding the request becomes INVALID_ARGUMENT and OUT_OF_RANGE (a request over the size limit;
/// health and reflection never answer it themselves) RESOURCE_EXHAUSTED. Any other status, another
/// INTERNAL included, stays what it is.
pub fn rewrite_generated_service_status(headers: &mut http::HeaderMap) {
    let undecodable = headers
        .get("grpc-message")
        .is_some_and(|message| message.as_bytes().starts_with(UNDECODABLE));
    match headers.get("grpc-status").map(http::HeaderValue::as_bytes) {
        Some(b"13") if undecodable => {
            set_status(headers, Code::InvalidArgument, "malformed%20request:%20");
        }
        Some(b"11") => set_status(
            headers,
            Code::ResourceExhausted,
            "request%20too%20large:%20",
        ),
        _ => {}
    }
}

/// Sets `grpc-status` to `code` and puts `prefix` (percent-encoded) in front of `grpc-message`.
fn set_status(headers: &mut http::HeaderMap, code: Code, prefix: &str) {
    headers.insert("grpc-status", http::HeaderValue::from(i32::from(code)));
    let message = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if let Ok(value) = http::HeaderValue::from_str(&format!("{prefix}{message}")) {
        headers.insert("grpc-message", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_all_listed_up_to_one_past_the_cap_and_counted_beyond() {
        let listed = |count: usize| {
            let mut violations = Violations::default();
            for index in 0..count {
                violations.push(format!("case.organs_at_risk[{index}]"), "is bad");
            }
            let status = invalid_argument(&violations);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            tonic_types::StatusExt::get_details_bad_request(&status)
                .expect("BadRequest")
                .field_violations
        };
        for count in [1, MAX_REPORTED_VIOLATIONS, MAX_REPORTED_VIOLATIONS + 1] {
            let entries = listed(count);
            assert_eq!(entries.len(), count);
            assert!(entries.iter().all(|entry| entry.description == "is bad"));
        }
        let entries = listed(MAX_REPORTED_VIOLATIONS + 2);
        assert_eq!(entries.len(), MAX_REPORTED_VIOLATIONS + 1);
        let last = entries.last().expect("an entry");
        assert_eq!(
            last.field,
            format!("case.organs_at_risk[{MAX_REPORTED_VIOLATIONS}]")
        );
        assert_eq!(
            last.description,
            "2 more violations from here on are not listed"
        );
        assert_eq!(omitted_violations(&last.description), Some(2));
        assert_eq!(omitted_violations("is bad"), None);
        assert_eq!(
            omitted_violations("02 more violations from here on are not listed"),
            None
        );
    }

    #[test]
    fn statuses_set_before_the_handlers_are_told_from_the_handlers_own() {
        let framing = before_handlers(b"13", None);
        assert_eq!(framing.map(|(code, _)| code), Some(Code::InvalidArgument));
        assert!(framing.and_then(|(_, prefix)| prefix).is_some());
        let size = before_handlers(b"11", Some(b"Error,%20decoded"));
        assert_eq!(size.map(|(code, _)| code), Some(Code::ResourceExhausted));
        assert_eq!(
            before_handlers(b"16", None),
            Some((Code::Unauthenticated, None))
        );
        assert_eq!(
            before_handlers(b"12", None),
            Some((Code::Unimplemented, None))
        );
        assert_eq!(
            before_handlers(
                b"3",
                Some(b"the%20message%20is%20not%20valid%20protobuf:%20failed")
            ),
            Some((Code::InvalidArgument, None))
        );
        // The handlers' own answers are theirs to log and count.
        assert_eq!(
            before_handlers(b"3", Some(b"the%20request%20has%202%20invalid")),
            None
        );
        for handlers in [&b"0"[..], b"5", b"8", b"14"] {
            assert_eq!(before_handlers(handlers, None), None);
        }
    }

    #[test]
    fn a_framing_internal_is_rewritten_in_the_headers_and_the_decoders_refusal_kept() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
        headers.insert("grpc-message", http::HeaderValue::from_static("truncated"));
        assert_eq!(
            answered_before_handlers(&mut headers),
            Some(Code::InvalidArgument)
        );
        assert_eq!(headers["grpc-status"], "3");
        assert_eq!(
            headers["grpc-message"],
            "malformed%20request%20framing:%20truncated"
        );
        // The decoder's own refusal, as tonic writes it into the headers: told apart by its
        // message, and left as it is.
        let error = pb::RecommendRequest::decode(&[0xff_u8][..]).expect_err("not protobuf");
        let answer = not_protobuf(&error).into_http::<()>();
        let mut headers = answer.headers().clone();
        assert_eq!(
            answered_before_handlers(&mut headers),
            Some(Code::InvalidArgument)
        );
        assert_eq!(&headers, answer.headers());
    }

    #[test]
    fn a_generated_services_internal_and_out_of_range_become_the_callers_fault() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("failed%20to%20decode%20Protobuf%20message"),
        );
        rewrite_generated_service_status(&mut headers);
        assert_eq!(headers["grpc-status"], "3");
        assert_eq!(
            headers["grpc-message"],
            "malformed%20request:%20failed%20to%20decode%20Protobuf%20message"
        );
        // An INTERNAL of another cause is not the caller's fault: left as it is.
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
        headers.insert("grpc-message", http::HeaderValue::from_static("oops"));
        rewrite_generated_service_status(&mut headers);
        assert_eq!(headers["grpc-status"], "13");
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("11"));
        rewrite_generated_service_status(&mut headers);
        assert_eq!(headers["grpc-status"], "8");
        assert_eq!(headers["grpc-message"], "request%20too%20large:%20");
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        rewrite_generated_service_status(&mut headers);
        assert_eq!(headers["grpc-status"], "0");
    }
}
