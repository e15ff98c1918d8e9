//! The `Recommend` answer encoded straight from the core's plan, without building the owned
//! `pb::Plan` first.
//!
//! A plan is mostly guideline text (references, rule summaries, alert details): `convert::plan_out`
//! copies about a hundred of those strings out of the profile into owned `String`s only for prost to
//! copy them again into the response and then free them. Here each field is written once, from
//! the borrowed values, in exactly prost's encoding: same field order, proto3 defaults left out, the
//! same varints — a property test (tests/it/properties.rs) holds `encode_plan` byte-identical to
//! `convert::plan_out(..).encode_to_vec()` over 2,000 generated cases, and every vignette's plan
//! reaches the golden tests through it, so the stored audit bytes, `GetRecommendation` and every
//! client see no difference.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len, skip_field,
};

use crate::convert;
use crate::core;
use crate::core::plan::StartWindow;
use crate::core::profile::ReferenceDef;
use crate::pb;

/// A message body.
trait Body {
    fn emit(&self, sink: &mut Writer<'_>);
}

/// Writes a body in one pass: a nested message is written after a one-byte length, which is
/// widened afterwards (moving the body) when the body turns out to be 128 bytes or longer —
/// prost writes minimal varints, and so must this.
struct Writer<'b>(&'b mut Vec<u8>);

impl Writer<'_> {
    /// A varint; the one-byte case (every key and most lengths here) without a loop.
    #[inline]
    fn varint_value(&mut self, value: u64) {
        if value < 0x80 {
            self.0.push(value as u8);
        } else {
            encode_varint(value, self.0);
        }
    }

    #[inline]
    fn key(&mut self, tag: u32, wire_type: WireType) {
        self.varint_value((u64::from(tag) << 3) | wire_type as u64);
    }
}

impl Writer<'_> {
    /// A length-delimited field, written even when empty (repeated strings, nested messages).
    fn delimited(&mut self, tag: u32, bytes: &[u8]) {
        self.key(tag, WireType::LengthDelimited);
        self.varint_value(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    /// A nested message field (always present).
    fn message<B: Body>(&mut self, tag: u32, body: &B) {
        self.key(tag, WireType::LengthDelimited);
        let at = self.0.len();
        self.0.push(0);
        body.emit(self);
        let length = self.0.len() - at - 1;
        if length < 0x80 {
            // Fits the placeholder: a one-byte varint is the value itself.
            self.0[at] = length as u8;
        } else {
            // Widen the placeholder: move the body right, then write the varint in front of it.
            let width = encoded_len_varint(length as u64);
            let end = self.0.len();
            self.0.resize(end + width - 1, 0);
            self.0.copy_within(at + 1..end, at + width);
            let mut value = length as u64;
            for slot in &mut self.0[at..at + width] {
                *slot = (value & 0x7F) as u8 | 0x80;
                value >>= 7;
            }
            self.0[at + width - 1] &= 0x7F;
        }
    }

    /// A varint field (int32, enum, bool), already known to differ from its default.
    fn varint(&mut self, tag: u32, value: u64) {
        self.key(tag, WireType::Varint);
        self.varint_value(value);
    }

    /// A 64-bit field (double), already known to differ from its default.
    fn fixed64(&mut self, tag: u32, value: u64) {
        self.key(tag, WireType::SixtyFourBit);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A proto3 string: left out when empty.
    fn string(&mut self, tag: u32, value: &str) {
        if !value.is_empty() {
            self.delimited(tag, value.as_bytes());
        }
    }

    /// A repeated string: every element, empty ones included.
    fn strings(&mut self, tag: u32, values: &[String]) {
        for value in values {
            self.delimited(tag, value.as_bytes());
        }
    }

    /// A proto3 double: left out when it compares equal to 0 (as prost does).
    fn double(&mut self, tag: u32, value: f64) {
        if value != 0.0 {
            self.fixed64(tag, value.to_bits());
        }
    }

    /// A proto3 int32 or enum: left out when 0; negative values sign-extend to ten bytes.
    fn int32(&mut self, tag: u32, value: i32) {
        if value != 0 {
            self.varint(tag, i64::from(value) as u64);
        }
    }

    /// A proto3 bool: left out when false.
    fn boolean(&mut self, tag: u32, value: bool) {
        if value {
            self.varint(tag, 1);
        }
    }
}

/// `YYYY-MM-DD`, as `Date`'s `Display` writes it, without the formatting machinery or an
/// allocation (three dates a plan).
fn iso_date(date: crate::core::date::Date) -> IsoDate {
    let (year, month, day) = date.ymd();
    if !(0..=9999).contains(&year) {
        return IsoDate::Other(date.to_string());
    }
    let digit = |value: i64| b'0' + (value % 10) as u8;
    IsoDate::Ten([
        digit(year / 1000),
        digit(year / 100),
        digit(year / 10),
        digit(year),
        b'-',
        digit(month / 10),
        digit(month),
        b'-',
        digit(day / 10),
        digit(day),
    ])
}

/// A formatted date: ten ASCII bytes, or (a year outside 0–9999, which the contract's 1900–2100
/// never produces) whatever `Display` writes; empty for no date.
enum IsoDate {
    None,
    Ten([u8; 10]),
    Other(String),
}

impl IsoDate {
    fn as_str(&self) -> &str {
        match self {
            IsoDate::None => "",
            // Digits and dashes only: always UTF-8.
            IsoDate::Ten(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            IsoDate::Other(text) => text,
        }
    }
}

struct PlanBody<'a, 'p> {
    plan: &'a core::Plan<'p>,
    recommendation_id: &'a str,
    evaluation_date: IsoDate,
    start_window: StartWindowBody,
}

struct GuidelineBody<'a, 'p>(&'a core::Plan<'p>);
struct PrescriptionBody<'a, 'p>(&'a core::plan::Prescription<'p>);
struct PhaseBody<'a>(&'a core::plan::Phase);
struct VolumeBody<'a, 'p>(&'a core::plan::VolumeGuidance<'p>);
struct ConstraintBody<'a, 'p>(&'a core::plan::OrganConstraint<'p>);
struct AlertBody<'a, 'p>(&'a core::plan::Alert<'p>);
struct StatementBody<'a, 'p>(&'a core::plan::Statement<'p>);
struct FiringBody<'a, 'p>(&'a core::plan::RuleFiring<'p>);
struct ReferenceBody<'a>(&'a ReferenceDef);

/// The start window with its dates already formatted.
struct StartWindowBody {
    status: i32,
    earliest: IsoDate,
    latest: IsoDate,
    days_since_surgery: i32,
}

impl StartWindowBody {
    fn of(window: &StartWindow) -> StartWindowBody {
        match *window {
            StartWindow::NotApplicable => StartWindowBody {
                status: pb::WindowStatus::NotApplicable.into(),
                earliest: IsoDate::None,
                latest: IsoDate::None,
                days_since_surgery: 0,
            },
            StartWindow::Applicable {
                status,
                earliest,
                latest,
                days_since_surgery,
            } => StartWindowBody {
                status: convert::window_status_out(status).into(),
                earliest: iso_date(earliest),
                latest: iso_date(latest),
                days_since_surgery: i32::try_from(days_since_surgery).unwrap_or(i32::MAX),
            },
        }
    }
}

impl Body for StartWindowBody {
    fn emit(&self, sink: &mut Writer<'_>) {
        sink.int32(1, self.status);
        sink.string(2, self.earliest.as_str());
        sink.string(3, self.latest.as_str());
        sink.int32(4, self.days_since_surgery);
    }
}

impl Body for PlanBody<'_, '_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        let plan = self.plan;
        sink.string(1, self.recommendation_id);
        sink.message(2, &GuidelineBody(plan));
        sink.string(3, plan.case_id);
        sink.string(4, self.evaluation_date.as_str());
        sink.int32(5, convert::indication_out(plan.indication).into());
        sink.int32(6, convert::setting_out(plan.setting).into());
        sink.int32(7, convert::site_group_out(plan.site_group).into());
        for prescription in &plan.prescriptions {
            sink.message(8, &PrescriptionBody(prescription));
        }
        sink.message(9, &self.start_window);
        for volume in &plan.volumes {
            sink.message(10, &VolumeBody(volume));
        }
        for constraint in &plan.organ_constraints {
            sink.message(11, &ConstraintBody(constraint));
        }
        for alert in &plan.alerts {
            sink.message(12, &AlertBody(alert));
        }
        for statement in &plan.expected_outcomes {
            sink.message(13, &StatementBody(statement));
        }
        for firing in &plan.trace {
            sink.message(14, &FiringBody(firing));
        }
        for reference in &plan.references {
            sink.message(15, &ReferenceBody(reference));
        }
        sink.string(16, plan.disclaimer);
    }
}

impl Body for GuidelineBody<'_, '_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        sink.string(1, self.0.guideline_version);
        sink.string(2, self.0.guideline_sha256);
        sink.double(3, self.0.alpha_beta_tumor_gy);
        sink.double(4, self.0.alpha_beta_late_gy);
    }
}

impl Body for PrescriptionBody<'_, '_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        let prescription = self.0;
        sink.string(1, prescription.label);
        sink.boolean(2, prescription.preferred);
        for phase in prescription.phases {
            sink.message(3, &PhaseBody(phase));
        }
        sink.double(4, prescription.total_dose_gy);
        sink.double(5, prescription.eqd2_tumor_gy);
        sink.double(6, prescription.eqd2_late_gy);
        sink.int32(7, pb::Technique::Imrt.into());
        sink.strings(8, prescription.reference_ids);
        sink.boolean(9, prescription.concurrent_chemotherapy);
    }
}

impl Body for PhaseBody<'_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        let phase = self.0;
        sink.int32(1, convert::phase_kind_out(phase.kind).into());
        sink.double(2, phase.dose_per_fraction_gy);
        sink.int32(3, i32::try_from(phase.fractions).unwrap_or(i32::MAX));
        sink.double(4, phase.dose_gy());
    }
}

impl Body for VolumeBody<'_, '_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        sink.string(1, self.0.code.as_str());
        sink.string(2, self.0.description);
        sink.strings(3, self.0.reference_ids);
    }
}

impl Body for ConstraintBody<'_, '_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        let constraint = self.0;
        sink.string(1, constraint.structure);
        sink.string(2, constraint.metric);
        sink.double(3, constraint.limit);
        sink.strings(4, constraint.reference_ids);
        sink.string(5, constraint.note);
    }
}

impl Body for AlertBody<'_, '_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        let alert = self.0;
        sink.string(1, alert.code.as_str());
        sink.int32(2, convert::severity_out(alert.severity).into());
        sink.string(3, alert.summary);
        sink.string(4, alert.detail);
        sink.strings(5, alert.reference_ids);
    }
}

impl Body for StatementBody<'_, '_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        sink.string(1, self.0.text);
        sink.strings(2, self.0.reference_ids);
    }
}

impl Body for FiringBody<'_, '_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        sink.string(1, self.0.rule_id.as_str());
        sink.string(2, self.0.summary);
        sink.strings(3, self.0.reference_ids);
    }
}

impl Body for ReferenceBody<'_> {
    fn emit(&self, sink: &mut Writer<'_>) {
        sink.string(1, &self.0.id);
        sink.string(2, &self.0.citation);
        sink.string(3, &self.0.doi);
    }
}

/// The `vlms.rt.v1.Plan` message of `plan` with its id, encoded: the same bytes as
/// `convert::plan_out(plan, id).encode_to_vec()` (docs/perf/decisions/005-plan-encoder.md).
pub fn encode_plan(plan: &core::Plan<'_>, recommendation_id: &str) -> Vec<u8> {
    let body = PlanBody {
        plan,
        recommendation_id,
        evaluation_date: iso_date(plan.evaluation_date),
        start_window: StartWindowBody::of(&plan.start_window),
    };
    // Most plans fit; a larger one grows the buffer once or twice.
    let mut buffer = Vec::with_capacity(8 * 1024);
    body.emit(&mut Writer(&mut buffer));
    buffer
}

/// Largest piece `put_in_pieces` copies at once.
const COPY_PIECE: usize = 1024;

/// Copies an encoded plan into tonic's send buffer a kilobyte at a time. glibc copies 2,112 bytes
/// or more with `rep movsb`, which is slow on some virtual machines; pieces below that size keep
/// glibc on its vector loop (docs/perf/decisions/007-plan-copied-in-pieces.md). The bytes
/// written are the same.
fn put_in_pieces(bytes: &[u8], buf: &mut impl BufMut) {
    for piece in bytes.chunks(COPY_PIECE) {
        buf.put_slice(piece);
    }
}

/// Writes an encoded plan as the length-delimited field `tag`.
fn put_plan_field(tag: u32, plan: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(plan.len() as u64, buf);
    put_in_pieces(plan, buf);
}

/// The encoded length of a length-delimited field `tag` of `length` bytes.
fn delimited_len(tag: u32, length: usize) -> usize {
    key_len(tag) + encoded_len_varint(length as u64) + length
}

/// `vlms.rt.v1.RecommendResponse` as the server sends it: the plan already encoded. The generated
/// server uses this type for `Recommend` (build.rs maps the message here); clients decode the
/// ordinary generated `RecommendResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedRecommendResponse {
    /// An encoded `vlms.rt.v1.Plan` (field 1 of the response).
    pub plan: Vec<u8>,
}

impl prost::Message for EncodedRecommendResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_plan_field(1, &self.plan, buf);
    }

    /// The server never decodes its own responses; anything offered is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        delimited_len(1, self.plan.len())
    }

    fn clear(&mut self) {
        self.plan.clear();
    }
}

/// What a `RecommendStream` item carries: a plan already encoded, or why the case was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum EncodedStreamResult {
    /// An encoded `vlms.rt.v1.Plan` (field 2 of the item).
    Plan(Vec<u8>),
    /// INVALID_ARGUMENT with its details (field 3 of the item).
    Error(pb::google::rpc::Status),
}

/// `vlms.rt.v1.RecommendStreamResponse` as the server sends it, the plan encoded straight from the
/// core's values like `Recommend`'s; build.rs maps the message here for the server, clients decode
/// the generated type. Encodes as prost encodes the generated message: `case_id` (left out when
/// empty), then the one `result` field, written even when its message is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedStreamResponse {
    pub case_id: InlineText,
    pub result: EncodedStreamResult,
}

/// A short text held inline (a stream item's case_id, copied from its request without a heap
/// allocation up to 32 bytes; longer ones spill to the heap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InlineText(smallvec::SmallVec<[u8; 32]>);

impl InlineText {
    /// The text's UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for InlineText {
    fn from(text: &str) -> Self {
        InlineText(smallvec::SmallVec::from_slice(text.as_bytes()))
    }
}

impl prost::Message for EncodedStreamResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.case_id.is_empty() {
            // As prost writes a string field.
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(self.case_id.as_bytes().len() as u64, buf);
            buf.put_slice(self.case_id.as_bytes());
        }
        match &self.result {
            EncodedStreamResult::Plan(plan) => put_plan_field(2, plan, buf),
            EncodedStreamResult::Error(status) => prost::encoding::message::encode(3, status, buf),
        }
    }

    /// The server never decodes its own responses; anything offered is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let case_id = if self.case_id.is_empty() {
            0
        } else {
            delimited_len(1, self.case_id.as_bytes().len())
        };
        let result = match &self.result {
            EncodedStreamResult::Plan(plan) => delimited_len(2, plan.len()),
            EncodedStreamResult::Error(status) => prost::encoding::message::encoded_len(3, status),
        };
        case_id + result
    }

    fn clear(&mut self) {
        self.case_id = InlineText::default();
        self.result = EncodedStreamResult::Plan(Vec::new());
    }
}

impl Default for EncodedStreamResponse {
    fn default() -> Self {
        EncodedStreamResponse {
            case_id: InlineText::default(),
            result: EncodedStreamResult::Plan(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::date::Date;

    #[test]
    fn iso_dates_match_display() {
        // Every day from 1900 to past 2100 (the range the contract admits), and far beyond.
        let mut date = Date::parse("1900-01-01").expect("date");
        for _ in 0..120_000 {
            assert_eq!(iso_date(date).as_str(), date.to_string());
            date = date.add_days(1);
        }
        let far = Date::parse("1900-01-01").expect("date").add_days(-700_000);
        assert_eq!(iso_date(far).as_str(), far.to_string());
    }

    #[test]
    fn long_nested_messages_get_minimal_length_varints() {
        struct Text(String);
        impl Body for Text {
            fn emit(&self, sink: &mut Writer<'_>) {
                sink.string(1, &self.0);
            }
        }
        for length in [
            0, 1, 125, 126, 127, 128, 300, 16_381, 16_382, 16_383, 16_384, 70_000,
        ] {
            let body = Text("x".repeat(length));
            let mut written = Vec::new();
            Writer(&mut written).message(2, &body);
            let mut expected = Vec::new();
            let inner = if length == 0 {
                Vec::new()
            } else {
                let mut inner = Vec::new();
                prost::encoding::string::encode(1, &body.0, &mut inner);
                inner
            };
            encode_key(2, WireType::LengthDelimited, &mut expected);
            encode_varint(inner.len() as u64, &mut expected);
            expected.extend_from_slice(&inner);
            assert_eq!(written, expected, "body of {length} characters");
        }
    }

    #[test]
    fn plans_copied_in_pieces_arrive_whole() {
        use prost::Message;
        for length in [
            0,
            1,
            COPY_PIECE - 1,
            COPY_PIECE,
            COPY_PIECE + 1,
            5_003,
            3 * COPY_PIECE,
        ] {
            let plan: Vec<u8> = (0..length).map(|index| (index * 7 % 251) as u8).collect();
            let mut expected = Vec::new();
            encode_key(1, WireType::LengthDelimited, &mut expected);
            encode_varint(length as u64, &mut expected);
            expected.extend_from_slice(&plan);
            let response = EncodedRecommendResponse { plan: plan.clone() };
            assert_eq!(response.encode_to_vec(), expected, "plan of {length} bytes");
            let item = EncodedStreamResponse {
                case_id: InlineText::default(),
                result: EncodedStreamResult::Plan(plan),
            };
            expected[0] = 0x12; // field 2, length-delimited
            assert_eq!(
                item.encode_to_vec(),
                expected,
                "stream item of {length} bytes"
            );
        }
    }
}
