//! The command-line client: argument parsing, reading proto3 JSON, calling the server and printing
//! the answer as clinician-readable text or canonical proto3 JSON.

mod open_enums;
mod text;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::metrics::code_name;
use crate::pb;
use crate::pb::recommendation_service_client::RecommendationServiceClient;

/// `print!` to stdout, for the client's output. When the reader has gone (`vlms-rt … | head`) the
/// client ends quietly with status 0 instead of panicking; any other write error (a full disk) is
/// reported and ends it with status 2.
macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
}

/// `println!` to stdout, as [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("vlms-rt: cannot write the output: {error}");
        std::process::exit(2);
    }
}

/// Exit code: the server rejected the input.
pub const EXIT_BAD_INPUT: u8 = 3;
/// Exit code: the server could not be reached.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code: usage or local input error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: any other failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: `check --fail-on` and the verdict reached it.
pub const EXIT_CHECK_VERDICT: u8 = 5;

/// `vlms-rt`: radiotherapy recommendations for venous leiomyosarcoma from a vlms-rt server.
#[derive(Debug, clap::Parser)]
#[command(
    name = "vlms-rt",
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 server error, 2 usage or local input error, 3 input rejected by the server, 4 server unreachable, 5 check verdict at or past --fail-on."
)]
pub struct Cli {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "VLMS_RT_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Seconds to wait for an answer.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout_seconds: u64,
    /// CA certificate (PEM) to verify the server with; implies TLS.
    #[arg(long, global = true, env = "VLMS_RT_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --key.
    #[arg(long, global = true, env = "VLMS_RT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "VLMS_RT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File holding the bearer token (never pass a token on the command line).
    #[arg(long, global = true, env = "VLMS_RT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// What a clinician reads.
    Text,
    /// Canonical proto3 JSON (one object; one line per item for `stream`).
    Json,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Recommend a plan for one case (proto3 JSON of a Case, or an object whose `case` member is one).
    Recommend {
        /// JSON file, or - for standard input.
        file: PathBuf,
        /// Evaluation date (YYYY-MM-DD) when the file has none; defaults to today.
        #[arg(long)]
        evaluation_date: Option<String>,
    },
    /// Recommend plans for many cases over one stream (JSON Lines: one case per line).
    Stream {
        /// JSON Lines file, or - for standard input.
        file: PathBuf,
        /// Evaluation date (YYYY-MM-DD) for cases that have none; defaults to today.
        #[arg(long)]
        evaluation_date: Option<String>,
    },
    /// Check a proposed prescription (proto3 JSON of a CheckPrescriptionRequest, or an object whose
    /// `request` member is one).
    Check {
        /// JSON file, or - for standard input.
        file: PathBuf,
        /// Evaluation date (YYYY-MM-DD) when the case has none; defaults to today.
        #[arg(long)]
        evaluation_date: Option<String>,
        /// Exit 5 (after printing the answer) when the verdict is this or worse: `fail`, or
        /// `review` (REVIEW or FAIL). Without it the exit code is 0 whatever the verdict.
        #[arg(long, value_enum)]
        fail_on: Option<FailOn>,
    },
    /// Show the guideline: version, rules with statements and references, alert codes.
    Guideline,
    /// Show the stored record of an earlier plan or check, with its feedback.
    Show {
        /// The recommendation_id the plan or check was answered with.
        recommendation_id: String,
    },
    /// List every stored plan and check of a case, newest first.
    History {
        /// The case_id.
        case_id: String,
    },
    /// Record what the clinician did with a plan (appended, never overwriting).
    Feedback {
        /// The recommendation_id of the plan or check.
        recommendation_id: String,
        /// What was done.
        #[arg(long, value_enum)]
        outcome: FeedbackChoice,
        /// Why (required unless accepted).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Ask the server's health service whether the recommendation service is serving.
    Health {
        /// Service name to ask about ("" for the whole server).
        #[arg(long, default_value = "vlms.rt.v1.RecommendationService")]
        service: String,
    },
}

/// The verdict from which `check --fail-on` exits non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// FAIL only.
    Fail,
    /// REVIEW or FAIL.
    Review,
}

impl FailOn {
    /// Whether `verdict` (a `pb::Verdict` number) is at or past this threshold.
    pub fn reached_by(self, verdict: i32) -> bool {
        let fail = verdict == pb::Verdict::Fail as i32;
        match self {
            FailOn::Fail => fail,
            FailOn::Review => fail || verdict == pb::Verdict::Review as i32,
        }
    }
}

/// Feedback outcomes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FeedbackChoice {
    /// The plan was followed as recommended.
    Accepted,
    /// The plan was followed with changes.
    Modified,
    /// The plan was not followed.
    Overridden,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// Usage or local input error.
    Usage(String),
    /// The server rejected the input.
    BadInput {
        message: String,
        violations: Vec<(String, String)>,
    },
    /// The server could not be reached.
    Unreachable(String),
    /// Any other error.
    Other(String),
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::BadInput { .. } => EXIT_BAD_INPUT,
            Failure::Unreachable(_) => EXIT_UNREACHABLE,
            Failure::Other(_) => EXIT_FAILURE,
        })
    }

    /// What to print on standard error: one field violation per line.
    pub fn render(&self) -> String {
        match self {
            Failure::Usage(message) => format!("vlms-rt: {message}\n"),
            Failure::Unreachable(message) => format!("vlms-rt: server unreachable: {message}\n"),
            Failure::Other(message) => format!("vlms-rt: {message}\n"),
            Failure::BadInput {
                message,
                violations,
            } => {
                // A long list ends with an entry counting the violations it leaves out.
                let count = match violations.split_last() {
                    Some(((_, last), listed)) => crate::status::omitted_violations(last)
                        .map_or(violations.len(), |omitted| listed.len() + omitted),
                    None => 1,
                };
                let mut out = format!(
                    "vlms-rt: the server rejected the input (INVALID_ARGUMENT): {count} problem(s)\n"
                );
                if violations.is_empty() {
                    out.push_str(&format!("  {message}\n"));
                }
                for (field, description) in violations {
                    out.push_str(&format!("  {field}: {description}\n"));
                }
                out
            }
        }
    }
}

/// Maps a call's status to a failure.
pub fn failure_from_status(status: &Status) -> Failure {
    // A status this client made itself carries its cause as its source; one the server answered
    // does not. Either the client's own deadline ran out, or the connection failed — after the
    // TLS handshake, most often a server refusing the client certificate.
    if let Some(cause) = std::error::Error::source(status) {
        if cause.is::<tonic::TimeoutExpired>() {
            return Failure::Unreachable(
                "no answer within the client's deadline (--timeout-seconds)".into(),
            );
        }
        return Failure::Unreachable(format!(
            "{}: {}: {} (the connection failed: if the server requires mutual TLS, check \
             --cert and --key name a client certificate it trusts; http:// against a TLS port \
             fails like this too)",
            code_name(status.code()),
            status.message(),
            error_chain(cause)
        ));
    }
    match status.code() {
        Code::InvalidArgument => Failure::BadInput {
            message: status.message().to_string(),
            violations: status
                .get_details_bad_request()
                .map(|bad_request| {
                    bad_request
                        .field_violations
                        .into_iter()
                        .map(|violation| (violation.field, violation.description))
                        .collect()
                })
                .unwrap_or_default(),
        },
        // The server answered: it is reachable, but could not serve the call (its audit store
        // cannot record, or it is draining) or did not finish it in time.
        Code::Unavailable | Code::DeadlineExceeded => Failure::Other(format!(
            "{}: {} (the server answered but could not serve the call; retry later)",
            code_name(status.code()),
            status.message()
        )),
        Code::NotFound => Failure::Other(format!("NOT_FOUND: {}", status.message())),
        Code::Unauthenticated => Failure::Other(format!(
            "UNAUTHENTICATED: {} (check --token-file)",
            status.message()
        )),
        code => Failure::Other(format!("{}: {}", code_name(code), status.message())),
    }
}

/// Adds `authorization: Bearer <token>` to every call when a token file was given.
#[derive(Debug, Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Authed = tonic::service::interceptor::InterceptedService<Channel, BearerToken>;

/// An error with its causes, outermost first.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn read_pem(path: &PathBuf, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|error| Failure::Usage(format!("cannot read {what} {}: {error}", path.display())))
}

/// The largest HTTP/2 frame the client accepts (SETTINGS_MAX_FRAME_SIZE), instead of the protocol's
/// default 16 KiB. The server sends each DATA frame with a write of its own, so a `RecommendStream`
/// of plans of a few KB each reaches this client in fewer writes
/// (docs/perf/decisions/012-stream-frames-64k.md; docs/integrating.md says how other clients can
/// do the same). A `Recommend` answer fits
/// one frame at either size; larger ones (a `ListRecommendations` page) need fewer frames too.
pub const MAX_FRAME_SIZE: u32 = 64 * 1024;

async fn connect(cli: &Cli) -> Result<Authed, Failure> {
    if !(cli.server.starts_with("http://") || cli.server.starts_with("https://")) {
        return Err(Failure::Usage(format!(
            "--server {:?} has no scheme: add http:// (plaintext) or https:// (TLS), e.g. http://{}",
            cli.server, cli.server
        )));
    }
    let mut endpoint = Endpoint::from_shared(cli.server.clone())
        .map_err(|error| {
            Failure::Usage(format!("--server {:?} is not a URL: {error}", cli.server))
        })?
        .max_frame_size(MAX_FRAME_SIZE)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(cli.timeout_seconds.max(1)));
    let https = cli.server.starts_with("https://");
    if (cli.ca.is_some() || cli.cert.is_some()) && !https {
        return Err(Failure::Usage(String::from(
            "--ca, --cert and --key need an https:// server URL",
        )));
    }
    if https {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        tls = match &cli.ca {
            Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(read_pem(
                ca,
                "CA certificate",
            )?)),
            None => tls.with_enabled_roots(),
        };
        if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read_pem(cert, "client certificate")?,
                read_pem(key, "client key")?,
            ));
        }
        endpoint = endpoint.tls_config(tls).map_err(|error| {
            Failure::Usage(format!(
                "TLS configuration refused: {}",
                error_chain(&error)
            ))
        })?;
    }
    let token = match &cli.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                Failure::Usage(format!(
                    "cannot read token file {}: {error}",
                    path.display()
                ))
            })?;
            let value = format!("Bearer {}", text.trim()).parse().map_err(|_| {
                Failure::Usage(format!(
                    "token file {} holds characters not allowed in a header",
                    path.display()
                ))
            })?;
            Some(value)
        }
        None => None,
    };
    let channel = endpoint.connect().await.map_err(|error| {
        Failure::Unreachable(format!("{}: {}", cli.server, error_chain(&error)))
    })?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        BearerToken(token),
    ))
}

fn read_input(file: &PathBuf) -> Result<String, Failure> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| Failure::Usage(format!("cannot read standard input: {error}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
            .map_err(|error| Failure::Usage(format!("cannot read {}: {error}", file.display())))
    }
}

/// Today's date (local time, UTC when the local offset is unknown), YYYY-MM-DD.
pub fn today() -> String {
    let now = time::OffsetDateTime::now_local().unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let date = now.date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Fills a missing evaluation date; refuses a flag that contradicts the file.
fn apply_evaluation_date(
    case: &mut pb::Case,
    flag: Option<&str>,
    where_: &str,
) -> Result<(), Failure> {
    match (case.evaluation_date.is_empty(), flag) {
        (true, Some(date)) => case.evaluation_date = date.to_string(),
        (true, None) => case.evaluation_date = today(),
        (false, Some(date)) if date != case.evaluation_date => {
            return Err(Failure::Usage(format!(
                "{where_}: the file's evaluationDate {} differs from --evaluation-date {date}; remove one",
                case.evaluation_date
            )));
        }
        (false, _) => {}
    }
    Ok(())
}

/// Parses a Case from JSON: a Case itself, or an object whose `case` member is one.
pub fn parse_case(text: &str, where_: &str) -> Result<pb::Case, Failure> {
    let value = read_json(text, where_)?;
    let mut inner = match value.get("case") {
        Some(case) => case.clone(),
        None => value,
    };
    refuse_empty_evaluation_date(&inner, "", where_)?;
    let undefined = open_enums::CaseEnums::take(&mut inner);
    let mut case: pb::Case = from_json(inner, "vlms.rt.v1.Case", where_)?;
    undefined.put_back(&mut case);
    Ok(case)
}

/// Parses a CheckPrescriptionRequest from JSON: the request itself, or an object whose `request`
/// member is one.
pub fn parse_check_request(
    text: &str,
    where_: &str,
) -> Result<pb::CheckPrescriptionRequest, Failure> {
    let value = read_json(text, where_)?;
    let mut inner = match value.get("request") {
        Some(request) => request.clone(),
        None => value,
    };
    if let Some(case) = inner.get("case") {
        refuse_empty_evaluation_date(case, "case.", where_)?;
    }
    let undefined = open_enums::CheckEnums::take(&mut inner);
    let mut request: pb::CheckPrescriptionRequest =
        from_json(inner, "vlms.rt.v1.CheckPrescriptionRequest", where_)?;
    undefined.put_back(&mut request);
    Ok(request)
}

/// `value` as the message `name`, or a failure naming the field that does not fit (serde's own
/// errors from a JSON value name no place: "invalid type: string, expected a boolean").
fn from_json<T: serde::de::DeserializeOwned>(
    value: Value,
    name: &str,
    where_: &str,
) -> Result<T, Failure> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(" at {path}")
        };
        Failure::Usage(format!(
            "{where_}: not proto3 JSON of a {name}{at}: {}",
            error.inner()
        ))
    })
}

/// Refuses an `evaluationDate` written as `""`: proto3 JSON reads it as unset, and an unset date
/// is filled from `--evaluation-date` or today — a date someone meant to fill in must not quietly
/// become today's.
fn refuse_empty_evaluation_date(case: &Value, prefix: &str, where_: &str) -> Result<(), Failure> {
    for name in ["evaluationDate", "evaluation_date"] {
        if case.get(name).is_some_and(|date| date.as_str() == Some("")) {
            return Err(Failure::Usage(format!(
                "{where_}: {prefix}{name} is empty: give the date, or leave it out to use \
                 --evaluation-date or today"
            )));
        }
    }
    Ok(())
}

/// Reads a JSON input, stricter than serde_json and pbjson where their leniency could change a
/// case without a word, and as lenient as the proto3 JSON mapping where nothing can be lost:
/// - a name given twice in one object is refused (serde_json would keep the last one silently — a
///   date or a dose changed without a word);
/// - `null` is refused wherever it stands (the mapping reads it as the field's default, which for
///   `metastaticDisease` or `priorRadiotherapy` is "no" and for `evaluationDate` today's date: an
///   unknown answer must not become one);
/// - a number with a zero fraction or an exponent (`25.0`, `2.5e1`) is accepted where an integer
///   is expected.
fn read_json(text: &str, where_: &str) -> Result<Value, Failure> {
    // A byte-order mark, as some Windows editors write it, is no part of the JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde::Deserialize::deserialize(&mut deserializer)
        .and_then(|UniqueNames| deserializer.end())
        .map_err(|error| Failure::Usage(format!("{where_}: not JSON: {error}")))?;
    let mut value: Value = serde_json::from_str(text)
        .map_err(|error| Failure::Usage(format!("{where_}: not JSON: {error}")))?;
    if let Some(path) = first_null(&value, String::new()) {
        return Err(Failure::Usage(format!(
            "{where_}: {path} is null: give it a value or leave it out (null is not read as a default)"
        )));
    }
    whole_numbers_as_integers(&mut value);
    Ok(value)
}

/// Where `value` holds its first `null`, as a path (`case.metastaticDisease`, `phases[1]`).
fn first_null(value: &Value, path: String) -> Option<String> {
    match value {
        Value::Null => Some(if path.is_empty() {
            "the input".into()
        } else {
            path
        }),
        Value::Object(members) => members.iter().find_map(|(name, member)| {
            let inner = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            first_null(member, inner)
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| first_null(item, format!("{path}[{index}]"))),
        Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
    }
}

/// Writes whole-numbered floats as integers, throughout `value`.
fn whole_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Object(members) => members.values_mut().for_each(whole_numbers_as_integers),
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                && float.fract() == 0.0
                // Within ±2^53 every whole f64 is exact as an integer; beyond, leave it as it is.
                && float.abs() <= 9_007_199_254_740_992.0
            {
                *number = serde_json::Number::from(float as i64);
            }
        }
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// A JSON document in which no object names a member twice (checked while reading it; the value
/// itself is not kept).
struct UniqueNames;

impl<'de> serde::Deserialize<'de> for UniqueNames {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueNamesVisitor)
    }
}

struct UniqueNamesVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueNamesVisitor {
    type Value = UniqueNames;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueNames, E> {
        Ok(UniqueNames)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueNames, E> {
        Ok(UniqueNames)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueNames, E> {
        Ok(UniqueNames)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueNames, E> {
        Ok(UniqueNames)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueNames, E> {
        Ok(UniqueNames)
    }

    fn visit_unit<E>(self) -> Result<UniqueNames, E> {
        Ok(UniqueNames)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut items: A,
    ) -> Result<UniqueNames, A::Error> {
        while items.next_element::<UniqueNames>()?.is_some() {}
        Ok(UniqueNames)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut members: A,
    ) -> Result<UniqueNames, A::Error> {
        let mut names = std::collections::HashSet::new();
        while let Some(name) = members.next_key::<String>()? {
            members.next_value::<UniqueNames>()?;
            if !names.insert(name.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "\"{name}\" is given twice in one object"
                )));
            }
        }
        Ok(UniqueNames)
    }
}

/// One `RecommendStream` item as one line of proto3 JSON. A rejected case's `google.rpc.Status`
/// carries its `BadRequest` in an `Any`, whose canonical JSON is the message's own fields beside
/// `@type` (pbjson's `Any` would give the bytes in base64 under `typeUrl`/`value`, which neither a
/// person nor a proto3 JSON parser reads as the violations).
fn stream_item_json(item: &pb::RecommendStreamResponse) -> String {
    let Some(pb::recommend_stream_response::Result::Error(status)) = &item.result else {
        return json(item, false);
    };
    let details: Vec<Value> = status.details.iter().map(any_json).collect();
    let mut error = serde_json::Map::new();
    error.insert("code".into(), status.code.into());
    if !status.message.is_empty() {
        error.insert("message".into(), status.message.clone().into());
    }
    if !details.is_empty() {
        error.insert("details".into(), details.into());
    }
    let mut rendered = serde_json::Map::new();
    if !item.case_id.is_empty() {
        rendered.insert("caseId".into(), item.case_id.clone().into());
    }
    rendered.insert("error".into(), error.into());
    json(&rendered, false)
}

/// The canonical proto3 JSON of an `Any` the service sends: a `google.rpc.BadRequest` as its
/// fields with `@type`; any other type (the service sends none, and the client has no schema
/// for) as `@type` with the bytes in base64 under `value`.
fn any_json(any: &pbjson_types::Any) -> Value {
    const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";
    let decoded = (any.type_url == BAD_REQUEST)
        .then(|| <tonic_types::pb::BadRequest as prost::Message>::decode(any.value.as_ref()).ok())
        .flatten();
    let mut rendered = match decoded {
        Some(bad_request) => {
            // The string fields, each left out when empty as proto3 JSON does (the service sets
            // `field` and `description` only; it never sends a `localized_message`).
            let violations: Vec<Value> = bad_request
                .field_violations
                .iter()
                .map(|violation| {
                    let fields: serde_json::Map<String, Value> = [
                        ("field", &violation.field),
                        ("description", &violation.description),
                        ("reason", &violation.reason),
                    ]
                    .into_iter()
                    .filter(|(_, text)| !text.is_empty())
                    .map(|(name, text)| (name.to_string(), Value::from(text.as_str())))
                    .collect();
                    Value::Object(fields)
                })
                .collect();
            let mut fields = serde_json::Map::new();
            if !violations.is_empty() {
                fields.insert("fieldViolations".into(), violations.into());
            }
            fields
        }
        None => {
            let mut fields = serde_json::Map::new();
            if let Ok(Value::Object(raw)) = serde_json::to_value(any) {
                fields.extend(raw.into_iter().filter(|(key, _)| key != "typeUrl"));
            }
            fields
        }
    };
    rendered.insert("@type".into(), any.type_url.clone().into());
    Value::Object(rendered)
}

fn json<T: serde::Serialize>(value: &T, pretty: bool) -> String {
    let rendered = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    rendered.unwrap_or_else(|error| format!("{{\"error\":\"cannot render JSON: {error}\"}}"))
}

/// Runs one command: one function per subcommand.
pub async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match &cli.command {
        Command::Recommend {
            file,
            evaluation_date,
        } => recommend(&cli, file, evaluation_date.as_deref()).await,
        Command::Stream {
            file,
            evaluation_date,
        } => stream(&cli, file, evaluation_date.as_deref()).await,
        Command::Check {
            file,
            evaluation_date,
            fail_on,
        } => check(&cli, file, evaluation_date.as_deref(), *fail_on).await,
        Command::Guideline => guideline(&cli).await,
        Command::Show { recommendation_id } => show(&cli, recommendation_id).await,
        Command::History { case_id } => history(&cli, case_id).await,
        Command::Feedback {
            recommendation_id,
            outcome,
            reason,
        } => feedback(&cli, recommendation_id, *outcome, reason).await,
        Command::Health { service } => health(&cli, service).await,
    }
}

/// Prints `message` as the output format asks: canonical proto3 JSON, or `text`'s rendering.
fn print<M: serde::Serialize>(cli: &Cli, message: &M, text: impl FnOnce(&M) -> String) {
    match cli.output {
        OutputFormat::Json => outln!("{}", json(message, true)),
        OutputFormat::Text => out!("{}", text(message)),
    }
}

/// A client of the recommendation service on a connection to `cli.server`.
async fn service(cli: &Cli) -> Result<RecommendationServiceClient<Authed>, Failure> {
    Ok(RecommendationServiceClient::new(connect(cli).await?))
}

/// The failure a refused call stands for.
fn refused(status: Status) -> Failure {
    failure_from_status(&status)
}

/// `recommend FILE`: one plan.
async fn recommend(
    cli: &Cli,
    file: &PathBuf,
    evaluation_date: Option<&str>,
) -> Result<ExitCode, Failure> {
    let text = read_input(file)?;
    let where_ = file.display().to_string();
    let mut case = parse_case(&text, &where_)?;
    apply_evaluation_date(&mut case, evaluation_date, &where_)?;
    let response = service(cli)
        .await?
        .recommend(pb::RecommendRequest { case: Some(case) })
        .await
        .map_err(refused)?
        .into_inner();
    print(cli, &response.plan.unwrap_or_default(), text::plan);
    Ok(ExitCode::SUCCESS)
}

/// `stream FILE`: one plan per JSON line over one `RecommendStream`; exit 3 when a line was
/// rejected.
async fn stream(
    cli: &Cli,
    file: &PathBuf,
    evaluation_date: Option<&str>,
) -> Result<ExitCode, Failure> {
    let text = read_input(file)?;
    let mut requests = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let where_ = format!("{} line {}", file.display(), number + 1);
        let mut case = parse_case(line, &where_)?;
        apply_evaluation_date(&mut case, evaluation_date, &where_)?;
        requests.push(pb::RecommendRequest { case: Some(case) });
    }
    let mut responses = service(cli)
        .await?
        .recommend_stream(tokio_stream::iter(requests))
        .await
        .map_err(refused)?
        .into_inner();
    let mut rejected = 0_u32;
    while let Some(item) = responses.message().await.map_err(refused)? {
        if matches!(
            item.result,
            Some(pb::recommend_stream_response::Result::Error(_))
        ) {
            rejected += 1;
        }
        match cli.output {
            OutputFormat::Json => outln!("{}", stream_item_json(&item)),
            OutputFormat::Text => out!("{}", text::stream_item(&item)),
        }
    }
    Ok(if rejected > 0 {
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::SUCCESS
    })
}

/// `check FILE`: a prescription check; exit 5 when the verdict reaches `fail_on`.
async fn check(
    cli: &Cli,
    file: &PathBuf,
    evaluation_date: Option<&str>,
    fail_on: Option<FailOn>,
) -> Result<ExitCode, Failure> {
    let text = read_input(file)?;
    let where_ = file.display().to_string();
    let mut request = parse_check_request(&text, &where_)?;
    if let Some(case) = request.case.as_mut() {
        apply_evaluation_date(case, evaluation_date, &where_)?;
    }
    let response = service(cli)
        .await?
        .check_prescription(request)
        .await
        .map_err(refused)?
        .into_inner();
    print(cli, &response, text::check);
    if fail_on.is_some_and(|threshold| threshold.reached_by(response.verdict)) {
        return Ok(ExitCode::from(EXIT_CHECK_VERDICT));
    }
    Ok(ExitCode::SUCCESS)
}

/// `guideline`: the profile the server runs on.
async fn guideline(cli: &Cli) -> Result<ExitCode, Failure> {
    let guideline = service(cli)
        .await?
        .get_guideline(pb::GetGuidelineRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    print(cli, &guideline, text::guideline);
    Ok(ExitCode::SUCCESS)
}

/// `show ID`: one stored record with its feedback.
async fn show(cli: &Cli, recommendation_id: &str) -> Result<ExitCode, Failure> {
    let record = service(cli)
        .await?
        .get_recommendation(pb::GetRecommendationRequest {
            recommendation_id: recommendation_id.to_string(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    print(cli, &record, text::record);
    Ok(ExitCode::SUCCESS)
}

/// `history CASE_ID`: every record of a case, newest first, page after page.
async fn history(cli: &Cli, case_id: &str) -> Result<ExitCode, Failure> {
    let mut client = service(cli).await?;
    let mut page_token = String::new();
    let mut first = true;
    loop {
        let page = client
            .list_recommendations(pb::ListRecommendationsRequest {
                case_id: case_id.to_string(),
                page_size: 100,
                page_token: page_token.clone(),
            })
            .await
            .map_err(refused)?
            .into_inner();
        // The heading once the server has accepted the case id, not before a refusal.
        if std::mem::take(&mut first) && cli.output == OutputFormat::Text {
            outln!("History of case {case_id}, newest first:");
        }
        for record in &page.records {
            match cli.output {
                OutputFormat::Json => outln!("{}", json(record, false)),
                OutputFormat::Text => outln!("{}", text::record_line(record)),
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        page_token = page.next_page_token;
    }
}

/// `feedback ID --outcome … --reason …`: what the clinician did with a plan.
async fn feedback(
    cli: &Cli,
    recommendation_id: &str,
    outcome: FeedbackChoice,
    reason: &str,
) -> Result<ExitCode, Failure> {
    let outcome = match outcome {
        FeedbackChoice::Accepted => pb::FeedbackOutcome::Accepted,
        FeedbackChoice::Modified => pb::FeedbackOutcome::Modified,
        FeedbackChoice::Overridden => pb::FeedbackOutcome::Overridden,
    };
    service(cli)
        .await?
        .record_feedback(pb::RecordFeedbackRequest {
            recommendation_id: recommendation_id.to_string(),
            outcome: outcome as i32,
            reason: reason.to_string(),
        })
        .await
        .map_err(refused)?;
    if cli.output == OutputFormat::Text {
        outln!(
            "feedback recorded on {recommendation_id}: {}",
            outcome
                .as_str_name()
                .trim_start_matches("FEEDBACK_OUTCOME_")
        );
    } else {
        outln!(
            "{}",
            serde_json::json!({ "recommendationId": recommendation_id, "outcome": outcome.as_str_name() })
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `health`: whether the server's health service says the service is serving (exit 1 if not).
async fn health(cli: &Cli, service: &str) -> Result<ExitCode, Failure> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(connect(cli).await?);
    let response = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let status = tonic_health::pb::health_check_response::ServingStatus::try_from(response.status)
        .map(|status| status.as_str_name())
        .unwrap_or("UNKNOWN");
    let shown = if service.is_empty() {
        "(server)"
    } else {
        service
    };
    match cli.output {
        OutputFormat::Json => outln!(
            "{}",
            serde_json::json!({ "service": service, "status": status })
        ),
        OutputFormat::Text => outln!("{shown}: {status}"),
    }
    Ok(if status == "SERVING" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}
