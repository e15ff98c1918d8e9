//! `vlms.rt.v1.RecommendRequest` as the server receives it: the message's bytes as they arrived,
//! kept inline (a typical request is under 100 bytes), and a reading of its case that borrows its
//! texts from those bytes. prost's generated message allocates a `String` for each of the three
//! texts and a `Vec` for the organs, and its decoding was a tenth of a streamed plan's
//! instructions (docs/performance.md, item 26).
//!
//! What is encoded again (the audit record's request, `Message::encode_raw`) is prost's encoding of
//! the content read, never the bytes as sent: fields the contract does not define and values a
//! later repeat replaced carry nothing the service read, and must not reach the audit trail (they
//! could hold anything, up to the request size limit).
//!
//! The reader here takes only the plain shape of a request — each known field with its own wire
//! type and a one-byte key, the case and its two nested messages at most once each, texts that are
//! UTF-8 — and hands everything else (unknown fields, a nested message repeated, so merged by
//! protobuf's rules, a malformed or truncated message) to prost's generated decoding, whose result
//! or error is then the answer. So the server accepts, rejects and reads exactly what prost does;
//! `tests/it/fuzz.rs` compares the two on random and mutated messages.

use std::borrow::Cow;
use std::ops::Range;

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};
use smallvec::SmallVec;

use crate::convert;
use crate::core::case::{RawCase, RawResection};
use crate::pb;

/// Bytes of a request kept without a heap allocation; longer requests spill to the heap.
const INLINE_BYTES: usize = 192;

/// A received `RecommendRequest`. The generated server takes this type for `Recommend` and
/// `RecommendStream` (build.rs maps the message here); clients send the generated message.
#[derive(Debug, Clone, Default)]
pub struct ReceivedRecommendRequest {
    /// The message as received, which `Content::Read` points into (empty once prost's
    /// field-by-field `merge`, which the server's codec does not use, has built the content).
    bytes: SmallVec<[u8; INLINE_BYTES]>,
    content: Content,
}

#[derive(Debug, Clone)]
enum Content {
    /// Read here: the case's fields, its texts as ranges of `bytes` (checked UTF-8 when read).
    Read(Option<ReadCase>),
    /// Decoded by prost: anything the reader here does not take.
    Decoded(pb::RecommendRequest),
}

impl Default for Content {
    fn default() -> Self {
        Content::Read(None)
    }
}

#[derive(Debug, Clone, Default)]
struct ReadCase {
    case_id: Range<usize>,
    evaluation_date: Range<usize>,
    vessel: i32,
    ivc_segment: i32,
    tumor: Option<pb::Tumor>,
    phase: i32,
    resectability: i32,
    surgery_mutilating: bool,
    resection: Option<ReadResection>,
    organs_at_risk: SmallVec<[i32; 8]>,
    solitary_functioning_kidney: bool,
    prior_radiotherapy: bool,
    metastatic_disease: bool,
}

#[derive(Debug, Clone, Default)]
struct ReadResection {
    margin: i32,
    close_margin: bool,
    surgery_date: Range<usize>,
    compartmental_contained: bool,
    re_excision_feasible: bool,
    hematoma_present: bool,
    vascular_management: i32,
    periaortic_dissection: bool,
}

impl ReceivedRecommendRequest {
    /// Reads a request from its encoded bytes: the same message, or the same error, as prost's
    /// `pb::RecommendRequest::decode`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        let bytes = SmallVec::from_slice(bytes);
        let content = match read_request(&bytes) {
            Some(case) => Content::Read(case),
            None => Content::Decoded(pb::RecommendRequest::decode(bytes.as_slice())?),
        };
        Ok(ReceivedRecommendRequest { bytes, content })
    }

    /// The case as raw core values (`None`: the request has no case).
    pub fn raw_case(&self) -> Option<RawCase<'_>> {
        match &self.content {
            Content::Decoded(request) => request.case.as_ref().map(convert::raw_case),
            Content::Read(case) => {
                let case = case.as_ref()?;
                Some(RawCase {
                    case_id: self.text(&case.case_id),
                    evaluation_date: self.text(&case.evaluation_date),
                    vessel: convert::raw_vessel(case.vessel),
                    ivc_segment: convert::raw_ivc_segment(case.ivc_segment),
                    tumor: case.tumor.as_ref().map(convert::raw_tumor),
                    phase: convert::raw_treatment_phase(case.phase),
                    resectability: convert::raw_resectability(case.resectability),
                    surgery_mutilating: case.surgery_mutilating,
                    resection: case.resection.as_ref().map(|resection| RawResection {
                        margin: convert::raw_margin(resection.margin),
                        close_margin: resection.close_margin,
                        surgery_date: self.text(&resection.surgery_date),
                        compartmental_contained: resection.compartmental_contained,
                        re_excision_feasible: resection.re_excision_feasible,
                        hematoma_present: resection.hematoma_present,
                        vascular_management: convert::raw_vascular_management(
                            resection.vascular_management,
                        ),
                        periaortic_dissection: resection.periaortic_dissection,
                    }),
                    organs_at_risk: case
                        .organs_at_risk
                        .iter()
                        .map(|value| convert::raw_organ(*value))
                        .collect(),
                    solitary_functioning_kidney: case.solitary_functioning_kidney,
                    prior_radiotherapy: case.prior_radiotherapy,
                    metastatic_disease: case.metastatic_disease,
                })
            }
        }
    }

    /// The case's `case_id` as sent ("" without a case).
    pub fn case_id(&self) -> &str {
        match &self.content {
            Content::Decoded(request) => request.case.as_ref().map_or("", |case| &case.case_id),
            Content::Read(case) => case.as_ref().map_or("", |case| self.text(&case.case_id)),
        }
    }

    /// prost's encoding of the request's content: what the audit record keeps (see the module's
    /// doc).
    pub fn canonical_encoding(&self) -> Vec<u8> {
        self.as_pb().encode_to_vec()
    }

    /// The generated message with the same content.
    pub fn to_pb(&self) -> pb::RecommendRequest {
        self.as_pb().into_owned()
    }

    /// The generated message with the same content, borrowed when prost decoded it.
    fn as_pb(&self) -> Cow<'_, pb::RecommendRequest> {
        match &self.content {
            Content::Decoded(request) => Cow::Borrowed(request),
            Content::Read(case) => Cow::Owned(self.read_as_pb(case.as_ref())),
        }
    }

    /// The generated message for a case read here (its texts copied out of `bytes`).
    fn read_as_pb(&self, case: Option<&ReadCase>) -> pb::RecommendRequest {
        pb::RecommendRequest {
            case: case.map(|case| pb::Case {
                case_id: self.text(&case.case_id).to_string(),
                evaluation_date: self.text(&case.evaluation_date).to_string(),
                vessel: case.vessel,
                ivc_segment: case.ivc_segment,
                tumor: case.tumor,
                phase: case.phase,
                resectability: case.resectability,
                surgery_mutilating: case.surgery_mutilating,
                resection: case.resection.as_ref().map(|resection| pb::Resection {
                    margin: resection.margin,
                    close_margin: resection.close_margin,
                    surgery_date: self.text(&resection.surgery_date).to_string(),
                    compartmental_contained: resection.compartmental_contained,
                    re_excision_feasible: resection.re_excision_feasible,
                    hematoma_present: resection.hematoma_present,
                    vascular_management: resection.vascular_management,
                    periaortic_dissection: resection.periaortic_dissection,
                }),
                organs_at_risk: case.organs_at_risk.to_vec(),
                solitary_functioning_kidney: case.solitary_functioning_kidney,
                prior_radiotherapy: case.prior_radiotherapy,
                metastatic_disease: case.metastatic_disease,
            }),
        }
    }

    /// Whether the reader here took the message (rather than prost's decoding); for tests.
    pub fn read_directly(&self) -> bool {
        matches!(self.content, Content::Read(_))
    }

    /// A text of the message; its bytes were checked as UTF-8 when the message was read, and the
    /// message cannot change since (no method mutates `bytes` without replacing `content`).
    fn text(&self, range: &Range<usize>) -> &str {
        std::str::from_utf8(&self.bytes[range.clone()])
            .expect("a text's bytes were checked as UTF-8 when the message was read")
    }
}

impl Message for ReceivedRecommendRequest {
    /// prost's encoding of the content (see the module's doc: not the bytes as sent).
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.as_pb().encode_raw(buf);
    }

    /// Field by field, as prost merges: the content becomes prost's, and the bytes are no longer
    /// the whole message. The server's codec decodes whole messages (`decode` below) instead.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if let Content::Read(_) = self.content {
            self.content = Content::Decoded(self.to_pb());
        }
        self.bytes.clear();
        match &mut self.content {
            Content::Decoded(request) => request.merge_field(tag, wire_type, buf, ctx),
            Content::Read(_) => Ok(()),
        }
    }

    fn encoded_len(&self) -> usize {
        self.as_pb().encoded_len()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    /// A whole message: its bytes kept, read here or by prost (see the module's doc).
    fn decode(mut buf: impl Buf) -> Result<Self, prost::DecodeError>
    where
        Self: Default,
    {
        if buf.chunk().len() == buf.remaining() {
            let received = Self::from_bytes(buf.chunk());
            buf.advance(buf.remaining());
            received
        } else {
            let bytes = buf.copy_to_bytes(buf.remaining());
            Self::from_bytes(&bytes)
        }
    }
}

/// One-byte keys (field number << 3 | wire type) of the fields the reader takes.
mod key {
    pub const VARINT: u8 = 0;
    pub const FIXED64: u8 = 1;
    pub const LEN: u8 = 2;

    pub const fn of(field: u8, wire_type: u8) -> u8 {
        (field << 3) | wire_type
    }
}

/// A cursor over one message's bytes; every read returns `None` where prost might decide
/// otherwise than a plain reading (truncation, an over-long varint).
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    /// A varint of at most ten bytes whose tenth byte is 0 or 1, as prost accepts.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0_u64;
        for index in 0..10 {
            let byte = self.byte()?;
            if index == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// The bounds of a length-delimited field's content, which must lie inside the message.
    fn delimited(&mut self) -> Option<Range<usize>> {
        let length = usize::try_from(self.varint()?).ok()?;
        let start = self.at;
        let end = start.checked_add(length)?;
        if end > self.bytes.len() {
            return None;
        }
        self.at = end;
        Some(start..end)
    }

    /// An `int32` or enum field: the varint's low 32 bits, as prost casts it.
    fn int32(&mut self) -> Option<i32> {
        Some(self.varint()? as i32)
    }

    fn bool(&mut self) -> Option<bool> {
        Some(self.varint()? != 0)
    }

    fn double(&mut self) -> Option<f64> {
        let end = self.at.checked_add(8)?;
        let bytes: [u8; 8] = self.bytes.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(f64::from_le_bytes(bytes))
    }

    /// A text field: its bounds, when its bytes are UTF-8 (prost rejects the message otherwise).
    fn text(&mut self) -> Option<Range<usize>> {
        let range = self.delimited()?;
        let text = &self.bytes[range.clone()];
        // Case ids and dates are ASCII; `is_ascii` checks a short text in a fraction of the time.
        if !text.is_ascii() {
            std::str::from_utf8(text).ok()?;
        }
        Some(range)
    }

    /// A cursor over a nested message, its positions still those of the whole message.
    fn nested(&mut self) -> Option<Self> {
        let range = self.delimited()?;
        Some(Cursor {
            bytes: &self.bytes[..range.end],
            at: range.start,
        })
    }
}

/// The request's case (`Some(None)`: no case), or `None` when prost must decode the message.
fn read_request(bytes: &[u8]) -> Option<Option<ReadCase>> {
    let mut cursor = Cursor { bytes, at: 0 };
    let mut case = None;
    while !cursor.done() {
        match cursor.byte()? {
            key if key == key::of(1, key::LEN) && case.is_none() => {
                case = Some(read_case(cursor.nested()?)?);
            }
            _ => return None,
        }
    }
    Some(case)
}

fn read_case(mut cursor: Cursor<'_>) -> Option<ReadCase> {
    const CASE_ID: u8 = key::of(1, key::LEN);
    const EVALUATION_DATE: u8 = key::of(2, key::LEN);
    const VESSEL: u8 = key::of(3, key::VARINT);
    const IVC_SEGMENT: u8 = key::of(4, key::VARINT);
    const TUMOR: u8 = key::of(5, key::LEN);
    const PHASE: u8 = key::of(6, key::VARINT);
    const RESECTABILITY: u8 = key::of(7, key::VARINT);
    const SURGERY_MUTILATING: u8 = key::of(8, key::VARINT);
    const RESECTION: u8 = key::of(9, key::LEN);
    const ORGANS_UNPACKED: u8 = key::of(10, key::VARINT);
    const ORGANS_PACKED: u8 = key::of(10, key::LEN);
    const SOLITARY_KIDNEY: u8 = key::of(11, key::VARINT);
    const PRIOR_RADIOTHERAPY: u8 = key::of(12, key::VARINT);
    const METASTATIC: u8 = key::of(13, key::VARINT);

    let mut case = ReadCase::default();
    while !cursor.done() {
        match cursor.byte()? {
            CASE_ID => case.case_id = cursor.text()?,
            EVALUATION_DATE => case.evaluation_date = cursor.text()?,
            VESSEL => case.vessel = cursor.int32()?,
            IVC_SEGMENT => case.ivc_segment = cursor.int32()?,
            TUMOR if case.tumor.is_none() => case.tumor = Some(read_tumor(cursor.nested()?)?),
            PHASE => case.phase = cursor.int32()?,
            RESECTABILITY => case.resectability = cursor.int32()?,
            SURGERY_MUTILATING => case.surgery_mutilating = cursor.bool()?,
            RESECTION if case.resection.is_none() => {
                case.resection = Some(read_resection(cursor.nested()?)?);
            }
            ORGANS_UNPACKED => case.organs_at_risk.push(cursor.int32()?),
            ORGANS_PACKED => {
                let mut packed = cursor.nested()?;
                while !packed.done() {
                    case.organs_at_risk.push(packed.int32()?);
                }
            }
            SOLITARY_KIDNEY => case.solitary_functioning_kidney = cursor.bool()?,
            PRIOR_RADIOTHERAPY => case.prior_radiotherapy = cursor.bool()?,
            METASTATIC => case.metastatic_disease = cursor.bool()?,
            _ => return None,
        }
    }
    Some(case)
}

fn read_tumor(mut cursor: Cursor<'_>) -> Option<pb::Tumor> {
    const SIZE_CM: u8 = key::of(1, key::FIXED64);
    const GRADE: u8 = key::of(2, key::VARINT);
    const DEPTH: u8 = key::of(3, key::VARINT);

    let mut tumor = pb::Tumor::default();
    while !cursor.done() {
        match cursor.byte()? {
            SIZE_CM => tumor.size_cm = cursor.double()?,
            GRADE => tumor.grade = cursor.int32()?,
            DEPTH => tumor.depth = cursor.int32()?,
            _ => return None,
        }
    }
    Some(tumor)
}

fn read_resection(mut cursor: Cursor<'_>) -> Option<ReadResection> {
    const MARGIN: u8 = key::of(1, key::VARINT);
    const CLOSE_MARGIN: u8 = key::of(2, key::VARINT);
    const SURGERY_DATE: u8 = key::of(3, key::LEN);
    const COMPARTMENTAL: u8 = key::of(4, key::VARINT);
    const RE_EXCISION: u8 = key::of(5, key::VARINT);
    const HEMATOMA: u8 = key::of(6, key::VARINT);
    const VASCULAR: u8 = key::of(7, key::VARINT);
    const PERIAORTIC: u8 = key::of(8, key::VARINT);

    let mut resection = ReadResection::default();
    while !cursor.done() {
        match cursor.byte()? {
            MARGIN => resection.margin = cursor.int32()?,
            CLOSE_MARGIN => resection.close_margin = cursor.bool()?,
            SURGERY_DATE => resection.surgery_date = cursor.text()?,
            COMPARTMENTAL => resection.compartmental_contained = cursor.bool()?,
            RE_EXCISION => resection.re_excision_feasible = cursor.bool()?,
            HEMATOMA => resection.hematoma_present = cursor.bool()?,
            VASCULAR => resection.vascular_management = cursor.int32()?,
            PERIAORTIC => resection.periaortic_dissection = cursor.bool()?,
            _ => return None,
        }
    }
    Some(resection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_case() -> pb::Case {
        pb::Case {
            case_id: "ivc-1".into(),
            evaluation_date: "2026-03-01".into(),
            vessel: pb::Vessel::InferiorVenaCava as i32,
            ivc_segment: pb::IvcSegment::Middle as i32,
            tumor: Some(pb::Tumor {
                size_cm: 7.5,
                grade: pb::Grade::Grade3 as i32,
                depth: pb::Depth::Deep as i32,
            }),
            phase: pb::TreatmentPhase::PostResection as i32,
            resectability: 0,
            surgery_mutilating: true,
            resection: Some(pb::Resection {
                margin: pb::Margin::R1 as i32,
                close_margin: true,
                surgery_date: "2026-02-01".into(),
                compartmental_contained: true,
                re_excision_feasible: true,
                hematoma_present: true,
                vascular_management: pb::VascularManagement::Graft as i32,
                periaortic_dissection: true,
            }),
            organs_at_risk: vec![1, 3, 7, -5, 99],
            solitary_functioning_kidney: true,
            prior_radiotherapy: true,
            metastatic_disease: true,
        }
    }

    #[test]
    fn a_plain_request_is_read_here_with_every_field_as_prost_reads_it() {
        let request = pb::RecommendRequest {
            case: Some(full_case()),
        };
        let bytes = request.encode_to_vec();
        let received = ReceivedRecommendRequest::from_bytes(&bytes).expect("valid");
        assert!(received.read_directly());
        assert_eq!(received.to_pb(), request);
        assert_eq!(received.case_id(), "ivc-1");
        assert_eq!(received.canonical_encoding(), bytes);
        assert_eq!(received.encode_to_vec(), bytes);
        assert_eq!(received.encoded_len(), bytes.len());
        assert_eq!(
            format!("{:?}", received.raw_case()),
            format!("{:?}", request.case.as_ref().map(convert::raw_case))
        );
    }

    #[test]
    fn repeated_nested_messages_unknown_fields_and_errors_go_to_prost() {
        let case = full_case();
        let mut twice = pb::RecommendRequest {
            case: Some(case.clone()),
        }
        .encode_to_vec();
        twice.extend(
            pb::RecommendRequest {
                case: Some(pb::Case {
                    tumor: Some(pb::Tumor {
                        size_cm: 0.0,
                        grade: 0,
                        depth: 2,
                    }),
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
        );
        let merged = ReceivedRecommendRequest::from_bytes(&twice).expect("valid");
        assert!(!merged.read_directly());
        assert_eq!(
            merged.to_pb(),
            pb::RecommendRequest::decode(twice.as_slice()).expect("valid")
        );
        // The record keeps the merged content, not the two copies sent.
        assert_eq!(
            merged.canonical_encoding(),
            pb::RecommendRequest::decode(twice.as_slice())
                .expect("valid")
                .encode_to_vec()
        );
        assert!(merged.canonical_encoding().len() < twice.len());

        let mut unknown = pb::RecommendRequest { case: Some(case) }.encode_to_vec();
        unknown.extend([0x10, 0x01]); // field 2, varint: not in the message
        let read = ReceivedRecommendRequest::from_bytes(&unknown).expect("valid");
        assert!(!read.read_directly());
        assert_eq!(read.case_id(), "ivc-1");
        // A field the contract does not define is not kept for the record.
        assert_eq!(read.canonical_encoding(), &unknown[..unknown.len() - 2]);

        // A ten-byte varint is read when its last byte is 0 or 1, as prost reads it.
        let mut long = vec![0x0a, 0x0b, 0x18];
        long.extend([0xff; 9]);
        long.push(0x01);
        let read = ReceivedRecommendRequest::from_bytes(&long).expect("valid");
        assert!(read.read_directly());
        assert_eq!(
            read.to_pb(),
            pb::RecommendRequest::decode(long.as_slice()).expect("valid")
        );
        let mut overflow = long.clone();
        *overflow.last_mut().expect("byte") = 0x02;
        for bad in [
            &[0x0a, 0x05, 0x0a][..],
            &[0x0a, 0x02, 0x0a, 0x01, 0xff],
            &[0x07],
            &overflow,
        ] {
            let ours = ReceivedRecommendRequest::from_bytes(bad).expect_err("invalid");
            let prost = pb::RecommendRequest::decode(bad).expect_err("invalid");
            assert_eq!(ours.to_string(), prost.to_string());
        }
    }

    #[test]
    fn an_empty_message_has_no_case_and_merge_still_works() {
        let received = ReceivedRecommendRequest::from_bytes(&[]).expect("valid");
        assert!(received.raw_case().is_none());
        assert_eq!(received.case_id(), "");
        let request = pb::RecommendRequest {
            case: Some(full_case()),
        };
        let mut merged = ReceivedRecommendRequest::default();
        merged
            .merge(request.encode_to_vec().as_slice())
            .expect("valid");
        assert_eq!(merged.to_pb(), request);
        assert_eq!(merged.encode_to_vec(), request.encode_to_vec());
        assert_eq!(merged.encoded_len(), request.encoded_len());

        // Merging into a request read here: the same as prost merging into its own message.
        let more = pb::RecommendRequest {
            case: Some(pb::Case {
                case_id: "other".into(),
                tumor: Some(pb::Tumor {
                    size_cm: 0.0,
                    grade: 0,
                    depth: 1,
                }),
                organs_at_risk: vec![2],
                ..Default::default()
            }),
        }
        .encode_to_vec();
        let mut ours =
            ReceivedRecommendRequest::from_bytes(&request.encode_to_vec()).expect("valid");
        assert!(ours.read_directly());
        ours.merge(more.as_slice()).expect("valid");
        let mut theirs = request.clone();
        theirs.merge(more.as_slice()).expect("valid");
        assert_eq!(ours.to_pb(), theirs);
        assert_eq!(ours.case_id(), "other");
        assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec());
    }

    #[test]
    fn a_message_in_two_pieces_decodes_as_one() {
        let bytes = pb::RecommendRequest {
            case: Some(full_case()),
        }
        .encode_to_vec();
        let (first, second) = bytes.split_at(17);
        let pieces = ReceivedRecommendRequest::decode(first.chain(second)).expect("valid");
        assert!(pieces.read_directly());
        assert_eq!(
            pieces.to_pb(),
            pb::RecommendRequest::decode(bytes.as_slice()).expect("valid")
        );
        let short = &bytes[..bytes.len() - 1];
        let (first, second) = short.split_at(10);
        let cut = ReceivedRecommendRequest::decode(first.chain(second)).expect_err("cut");
        let prost = pb::RecommendRequest::decode(short).expect_err("cut");
        assert_eq!(cut.to_string(), prost.to_string());
    }
}
