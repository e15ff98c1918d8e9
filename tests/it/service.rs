//! The real server on 127.0.0.1:0, driven through the generated client: every vignette over
//! Recommend and one RecommendStream, CheckPrescription, GetGuideline, health, reflection, and
//! bad input of every kind.

use std::collections::HashSet;

use prost::Message;
use tonic::Code;
use vlms_rt::core::ids::{AlertCode, RuleId};
use vlms_rt::pb;

use crate::support::{
    TestServer, any_plan_vignette, bad_request_fields, check_mismatches, plan_mismatches, vignette,
    vignettes,
};

fn is_ulid(text: &str) -> bool {
    vlms_rt::ulid::is_ulid(text)
}

#[tokio::test]
async fn every_plan_vignette_over_recommend() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut failures = Vec::new();
    let mut ids = HashSet::new();
    for vignette in vignettes()
        .into_iter()
        .filter(|vignette| vignette.is_plan())
    {
        let plan = client
            .recommend(pb::RecommendRequest {
                case: Some(vignette.case()),
            })
            .await
            .unwrap_or_else(|status| panic!("{}: {status:?}", vignette.name))
            .into_inner()
            .plan
            .expect("a plan");
        failures.extend(
            plan_mismatches(&plan, vignette.expected())
                .into_iter()
                .map(|problem| format!("{}: {problem}", vignette.name)),
        );
        assert!(
            is_ulid(&plan.recommendation_id),
            "{}: id {}",
            vignette.name,
            plan.recommendation_id
        );
        assert!(
            ids.insert(plan.recommendation_id.clone()),
            "recommendation_id repeated"
        );
        let guideline = plan.guideline.clone().expect("guideline ref");
        assert_eq!(guideline.version, "2026.2");
        assert_eq!(guideline.sha256.len(), 64);
        assert!(
            guideline
                .sha256
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        );
        assert_eq!(plan.case_id, vignette.case().case_id);
        assert_eq!(plan.evaluation_date, vignette.case().evaluation_date);
        assert!(!plan.disclaimer.is_empty());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}

#[tokio::test]
async fn the_same_case_twice_gives_the_same_plan_but_a_new_id() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let vignette = vignette("ivc-middle-postop-r1");
    let mut first = client
        .recommend(pb::RecommendRequest {
            case: Some(vignette.case()),
        })
        .await
        .expect("ok")
        .into_inner()
        .plan
        .expect("plan");
    let mut second = client
        .recommend(pb::RecommendRequest {
            case: Some(vignette.case()),
        })
        .await
        .expect("ok")
        .into_inner()
        .plan
        .expect("plan");
    assert_ne!(first.recommendation_id, second.recommendation_id);
    first.recommendation_id.clear();
    second.recommendation_id.clear();
    assert_eq!(first, second);
    server.stop().await;
}

#[tokio::test]
async fn bad_cases_over_recommend_list_every_violation() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for vignette in vignettes()
        .into_iter()
        .filter(|vignette| vignette.is_bad_case())
    {
        let status = client
            .recommend(pb::RecommendRequest {
                case: Some(vignette.case()),
            })
            .await
            .expect_err(&vignette.name);
        assert_eq!(status.code(), Code::InvalidArgument, "{}", vignette.name);
        assert_eq!(
            bad_request_fields(&status),
            vignette.expected_fields(),
            "{}",
            vignette.name
        );
    }
    let status = client
        .recommend(pb::RecommendRequest { case: None })
        .await
        .expect_err("no case");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), vec!["case".to_string()]);
    server.stop().await;
}

#[tokio::test]
async fn hostile_numbers_enums_and_strings_are_rejected_not_crashed() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let base = vignette("femoral-postop-r0").case();
    let mut cases = Vec::new();
    for size in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        60.000_001,
        f64::MAX,
        f64::MIN_POSITIVE * 0.0,
    ] {
        let mut case = base.clone();
        case.tumor.as_mut().expect("tumor").size_cm = size;
        cases.push((case, vec!["case.tumor.size_cm"]));
    }
    let mut case = base.clone();
    case.vessel = 999;
    case.organs_at_risk = vec![-7, pb::Organ::Liver as i32, i32::MAX];
    cases.push((
        case,
        vec![
            "case.vessel",
            "case.organs_at_risk[0]",
            "case.organs_at_risk[2]",
        ],
    ));
    let mut case = base.clone();
    case.case_id = "Jane Doe".into();
    case.evaluation_date = "2026-02-30".into();
    cases.push((case, vec!["case.case_id", "case.evaluation_date"]));
    let mut case = base.clone();
    case.case_id = "x".repeat(129);
    case.resection.as_mut().expect("resection").surgery_date = "26-10-22".into();
    case.resection.as_mut().expect("resection").margin = 0;
    cases.push((
        case,
        vec![
            "case.case_id",
            "case.resection.margin",
            "case.resection.surgery_date",
        ],
    ));
    for (case, expected) in cases {
        let status = client
            .recommend(pb::RecommendRequest {
                case: Some(case.clone()),
            })
            .await
            .expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "{case:?}");
        assert_eq!(bad_request_fields(&status), expected, "{case:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn one_stream_mixes_good_and_bad_cases_in_request_order() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let all: Vec<_> = vignettes()
        .into_iter()
        .filter(|vignette| vignette.is_plan() || vignette.is_bad_case())
        .collect();
    let requests: Vec<pb::RecommendRequest> = all
        .iter()
        .map(|vignette| pb::RecommendRequest {
            case: Some(vignette.case()),
        })
        .collect();
    let mut responses = client
        .recommend_stream(tokio_stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();
    let mut index = 0;
    let mut failures = Vec::new();
    while let Some(item) = responses.message().await.expect("stream item") {
        let vignette = &all[index];
        assert_eq!(
            item.case_id,
            vignette.case().case_id,
            "item {index} out of order"
        );
        match item.result.expect("a result") {
            pb::recommend_stream_response::Result::Plan(plan) => {
                assert!(
                    vignette.is_plan(),
                    "{}: a plan for a bad case",
                    vignette.name
                );
                failures.extend(
                    plan_mismatches(&plan, vignette.expected())
                        .into_iter()
                        .map(|problem| format!("{}: {problem}", vignette.name)),
                );
            }
            pb::recommend_stream_response::Result::Error(status) => {
                assert!(
                    vignette.is_bad_case(),
                    "{}: rejected: {status:?}",
                    vignette.name
                );
                assert_eq!(status.code, Code::InvalidArgument as i32);
                let fields: Vec<String> = status
                    .details
                    .iter()
                    .filter(|detail| detail.type_url.ends_with("google.rpc.BadRequest"))
                    .flat_map(|detail| {
                        tonic_types::pb::BadRequest::decode(detail.value.as_ref())
                            .expect("BadRequest")
                            .field_violations
                    })
                    .map(|violation| violation.field)
                    .collect();
                assert_eq!(fields, vignette.expected_fields(), "{}", vignette.name);
            }
        }
        index += 1;
    }
    assert_eq!(index, all.len(), "every request answered");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}

/// One `RecommendStream` of `items` copies of `case` over a raw HTTP/2 connection whose client
/// accepts frames of up to `max_frame` bytes: the payload size of every DATA frame received, and
/// the answers decoded from the body, in order.
async fn stream_frames(
    address: &str,
    max_frame: u32,
    case: &pb::Case,
    items: usize,
) -> (Vec<usize>, Vec<pb::RecommendStreamResponse>) {
    let tcp = tokio::net::TcpStream::connect(address).await.expect("tcp");
    let (sender, connection) = h2::client::Builder::new()
        .max_frame_size(max_frame)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut sender = sender.ready().await.expect("ready");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{address}/vlms.rt.v1.RecommendationService/RecommendStream"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut stream) = sender.send_request(request, false).expect("send");
    let message = pb::RecommendRequest {
        case: Some(case.clone()),
    }
    .encode_to_vec();
    let mut body = Vec::new();
    for _ in 0..items {
        body.push(0);
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
    }
    stream
        .send_data(bytes::Bytes::from(body), true)
        .expect("body");
    let response = response.await.expect("response");
    assert_eq!(response.status(), http::StatusCode::OK);
    assert!(
        response.headers().get("grpc-status").is_none(),
        "answered with trailers only: {:?}",
        response.headers()
    );
    let mut received = response.into_body();
    let (mut frames, mut bytes) = (Vec::new(), Vec::new());
    // h2 yields one chunk per DATA frame, and refuses (FRAME_SIZE_ERROR) a frame over what this
    // client allows: an oversized frame fails here.
    while let Some(data) = received.data().await {
        let data = data.expect("data within the frame size this client allows");
        frames.push(data.len());
        bytes.extend_from_slice(&data);
        let _ = received.flow_control().release_capacity(data.len());
    }
    let trailers = received.trailers().await.expect("trailers").expect("some");
    assert_eq!(
        trailers.get("grpc-status").map(|value| value.as_bytes()),
        Some(&b"0"[..])
    );
    let mut answers = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a cut gRPC message header: {rest:?}");
        assert_eq!(rest[0], 0, "uncompressed");
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let (message, after) = rest[5..]
            .split_at_checked(length)
            .expect("the body holds the whole message its header announces");
        answers.push(pb::RecommendStreamResponse::decode(message).expect("an answer"));
        rest = after;
    }
    (frames, answers)
}

/// The server sends a stream's answers in frames over HTTP/2's default 16 KiB when the client
/// allows them (the bundled client asks for `client::MAX_FRAME_SIZE`, since each frame costs the
/// server a write), and the plans are the same whatever the frame size. (The frames come from the
/// stream's ~38 KB hand-offs to HTTP/2, `codec::STREAM_SEND_BUFFER`, on this unaudited server.)
#[tokio::test]
async fn a_stream_uses_frames_over_16_kib_when_the_client_allows_them() {
    let server = TestServer::start().await;
    let address = server.url.trim_start_matches("http://").to_string();
    let vignette = vignette("ivc-middle-postop-r1");
    let case = vignette.case();
    let items = 64;
    let (small, small_answers) = stream_frames(&address, 16 * 1024, &case, items).await;
    let allowed = vlms_rt::client::MAX_FRAME_SIZE;
    let (large, large_answers) = stream_frames(&address, allowed, &case, items).await;
    assert!(large.iter().any(|&size| size > 16 * 1024), "{large:?}");
    assert!(
        large.len() < small.len(),
        "{} frames at 64 KiB, {} at 16 KiB",
        large.len(),
        small.len()
    );
    for answers in [&small_answers, &large_answers] {
        assert_eq!(answers.len(), items);
        for answer in answers.iter() {
            assert_eq!(answer.case_id, case.case_id);
            let Some(pb::recommend_stream_response::Result::Plan(plan)) = &answer.result else {
                panic!("not a plan: {answer:?}");
            };
            let problems = plan_mismatches(plan, vignette.expected());
            assert!(problems.is_empty(), "{}", problems.join("\n"));
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn check_prescription_pass_review_and_fail() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut verdicts = HashSet::new();
    for vignette in vignettes()
        .into_iter()
        .filter(|vignette| vignette.is_check())
    {
        let response = client
            .check_prescription(vignette.check_request())
            .await
            .expect(&vignette.name)
            .into_inner();
        let problems = check_mismatches(&response, vignette.expected());
        assert!(
            problems.is_empty(),
            "{}: {}",
            vignette.name,
            problems.join("; ")
        );
        assert!(is_ulid(&response.recommendation_id));
        for finding in &response.findings {
            verdicts.insert(finding.verdict);
            assert!(!finding.message.is_empty() && !finding.reference_ids.is_empty());
        }
        let plan = response.recommended_plan.expect("the recommended plan");
        assert!(is_ulid(&plan.recommendation_id));
        assert_eq!(
            plan.recommendation_id, response.recommendation_id,
            "the check's id, which names the stored check"
        );
    }
    assert_eq!(verdicts.len(), 3, "PASS, REVIEW and FAIL all exercised");
    for vignette in vignettes()
        .into_iter()
        .filter(|vignette| vignette.is_bad_check())
    {
        let status = client
            .check_prescription(vignette.check_request())
            .await
            .expect_err(&vignette.name);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            bad_request_fields(&status),
            vignette.expected_fields(),
            "{}",
            vignette.name
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn get_guideline_lists_every_rule_and_alert() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let guideline = client
        .get_guideline(pb::GetGuidelineRequest {})
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(guideline.version, "2026.2");
    // The changes since the previous version come with it, each with a reason and references.
    assert_eq!(guideline.previous_version, "2026.1");
    assert!(guideline.changes.len() >= 8, "{:?}", guideline.changes);
    for change in &guideline.changes {
        assert!(!change.summary.is_empty() && !change.reason.is_empty());
        assert!(!change.reference_ids.is_empty(), "{}", change.summary);
    }
    let rule_ids: Vec<&str> = guideline
        .rules
        .iter()
        .map(|rule| rule.rule_id.as_str())
        .collect();
    let expected: Vec<&str> = RuleId::ALL.iter().map(|rule| rule.as_str()).collect();
    assert_eq!(rule_ids, expected);
    assert_eq!(rule_ids.len(), 36);
    let reference_ids: HashSet<&str> = guideline
        .references
        .iter()
        .map(|reference| reference.id.as_str())
        .collect();
    for rule in &guideline.rules {
        assert!(!rule.statement.is_empty(), "{}", rule.rule_id);
        assert!(!rule.reference_ids.is_empty(), "{}", rule.rule_id);
        assert!(
            rule.reference_ids
                .iter()
                .all(|id| reference_ids.contains(id.as_str())),
            "{}",
            rule.rule_id
        );
    }
    assert_eq!(guideline.alert_codes.len(), 23);
    assert_eq!(
        guideline.alert_codes,
        AlertCode::ALL
            .iter()
            .map(|code| code.as_str().to_string())
            .collect::<Vec<_>>()
    );
    assert!(
        guideline
            .alerts
            .iter()
            .all(|alert| alert.summary.chars().count() < 140)
    );
    let plan = client
        .recommend(pb::RecommendRequest {
            case: Some(any_plan_vignette().case()),
        })
        .await
        .expect("ok")
        .into_inner()
        .plan
        .expect("plan");
    assert_eq!(plan.guideline.expect("ref").sha256, guideline.sha256);
    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving_for_the_service_and_the_server() {
    let server = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for service in ["vlms.rt.v1.RecommendationService", ""] {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(
            response.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

/// A v1 reflection request for the file that defines `symbol`.
fn file_containing(symbol: &str) -> tonic_reflection::pb::v1::ServerReflectionRequest {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
    }
}

/// The descriptor of the file `name` among those a v1 reflection response serves; fails the test
/// when the response serves no such file.
fn served_file(
    response: tonic_reflection::pb::v1::ServerReflectionResponse,
    name: &str,
) -> prost_types::FileDescriptorProto {
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let files = match response.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => files,
        other => panic!("not a file descriptor response: {other:?}"),
    };
    files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor")
        })
        .find(|file| file.name() == name)
        .unwrap_or_else(|| panic!("{name} not served"))
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_service_and_resolve_case() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start().await;

    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let requests = vec![
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        file_containing("vlms.rt.v1.Case"),
        // The details of every rejected call, so generic tools can show the field violations.
        file_containing("google.rpc.BadRequest"),
    ];
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("v1")
        .into_inner();
    let listed = responses.message().await.expect("ok").expect("response");
    match listed.message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            let names: Vec<String> = list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect();
            assert!(
                names.contains(&"vlms.rt.v1.RecommendationService".to_string()),
                "{names:?}"
            );
            assert!(
                names.contains(&"grpc.health.v1.Health".to_string()),
                "{names:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    for (file, message) in [
        ("vlms/rt/v1/case.proto", "Case"),
        ("google/rpc/error_details.proto", "BadRequest"),
    ] {
        let response = responses.message().await.expect("ok").expect("response");
        assert!(
            served_file(response, file)
                .message_type
                .iter()
                .any(|served| served.name() == message),
            "{file} without {message}"
        );
    }

    let mut alpha =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1alpha")
        .into_inner();
    match responses
        .message()
        .await
        .expect("ok")
        .expect("response")
        .message_response
    {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            assert!(
                list.service
                    .iter()
                    .any(|service| service.name == "vlms.rt.v1.RecommendationService")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    server.stop().await;
}

/// Sends raw bytes as a request body, bypassing the generated types.
mod raw {
    use prost::bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct BytesCodec;
    pub struct BytesEncoder;
    pub struct BytesDecoder;

    impl Codec for BytesCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = BytesEncoder;
        type Decoder = BytesDecoder;
        fn encoder(&mut self) -> BytesEncoder {
            BytesEncoder
        }
        fn decoder(&mut self) -> BytesDecoder {
            BytesDecoder
        }
    }
    impl Encoder for BytesEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for BytesDecoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            Ok(Some(bytes.to_vec()))
        }
    }
}

#[tokio::test]
async fn garbage_and_oversized_bodies_are_the_callers_fault_not_internal() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/vlms.rt.v1.RecommendationService/Recommend",
    );
    let bodies: Vec<(Vec<u8>, Vec<Code>)> = vec![
        (
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![Code::InvalidArgument],
        ),
        (vec![0x0a, 0x10, 0x01], vec![Code::InvalidArgument]),
        (vec![0x0a; 70 * 1024], vec![Code::ResourceExhausted]),
    ];
    for (body, allowed) in bodies {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary(tonic::Request::new(body), path.clone(), raw::BytesCodec)
            .await
            .expect_err("rejected");
        assert!(allowed.contains(&status.code()), "{status:?}");
        if status.code() == Code::InvalidArgument {
            assert!(
                status
                    .message()
                    .starts_with("the message is not valid protobuf: "),
                "{status:?}"
            );
        }
    }
    // As stream items: a message over the size limit ends the stream RESOURCE_EXHAUSTED too.
    let stream_path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/vlms.rt.v1.RecommendationService/RecommendStream",
    );
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let items = tokio_stream::iter(vec![vec![0x0a; 70 * 1024]]);
    let status = match grpc
        .streaming(tonic::Request::new(items), stream_path, raw::BytesCodec)
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut answers = response.into_inner();
            loop {
                match answers.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("an oversized item ended the stream OK"),
                    Err(status) => break status,
                }
            }
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The server is still healthy after the hostile bodies.
    let mut client = server.client().await;
    let case = any_plan_vignette().case();
    client
        .recommend(pb::RecommendRequest { case: Some(case) })
        .await
        .expect("still serving");
    server.stop().await;
}
