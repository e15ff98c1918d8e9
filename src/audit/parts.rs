//! Plans stored as references to the guideline's own parts: the read-only decoder of the records
//! builds before 2026-12 wrote this way (new records are standard zstd frames, see
//! [`super::compress`]). The encoder is kept for the tests only, which make frames to read back.
//!
//! Nearly every byte of a plan is a sub-message the guideline profile fixes: a rule firing, an
//! alert, a volume, a prescription option, an organ-at-risk constraint, an outcome, a reference,
//! the guideline block, the disclaimer. The store's dictionary ([`super::dictionary`]) opens with
//! a *parts section* that lists those fields once, encoded exactly as a plan carries them; a stored
//! plan is then a *parts frame*: the plan's top-level fields in order, each either the index of a
//! listed part with exactly its bytes or the field's own bytes. Building a frame is a walk over the
//! plan's fields and a table lookup per field.
//!
//! Reading a frame back is concatenation, so the bytes sent come back exactly; a lookup compares
//! whole fields, so a part is only named where the plan holds its very bytes. Anything that is not
//! a plan of top-level protobuf fields, or that the parts do not cover, is left to zstd
//! ([`super::compress`]).
//!
//! Parts section: [`SECTION_MAGIC`], the number of parts (varint), then each part as its length
//! (varint) and bytes. Parts frame: [`FRAME_MAGIC`], the response's length (varint), then operations
//! to the end: a varint `n << 1` followed by `n` literal bytes, or a varint `index << 1 | 1` naming
//! a part. A zstd frame opens with the bytes 28 B5 2F FD, so the two never look alike.

use std::ops::Range;

use prost::encoding::decode_varint;
#[cfg(test)]
use prost::encoding::encode_varint;
#[cfg(test)]
use std::collections::HashMap;
#[cfg(test)]
use std::hash::{BuildHasherDefault, Hasher};

/// Opens a dictionary that begins with a parts section.
pub const SECTION_MAGIC: &[u8] = b"vlms-rt plan parts v1\n";

/// Opens a response stored as a parts frame.
pub const FRAME_MAGIC: &[u8; 4] = b"VLP\x01";

/// Most parts a section may list.
const MAX_PARTS: u64 = 1 << 16;

/// A parts section listing `fields` (duplicates are the caller's to avoid: the first of equal
/// parts is the one frames name). Only tests write sections now.
#[cfg(test)]
pub fn section<'a>(fields: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut section = SECTION_MAGIC.to_vec();
    encode_varint(fields.len() as u64, &mut section);
    for field in fields {
        encode_varint(field.len() as u64, &mut section);
        section.extend_from_slice(field);
    }
    section
}

/// Where each part of `dictionary`'s parts section lies in `dictionary`: `Ok(None)` when the
/// dictionary has no parts section, `Err` when it has a malformed one.
pub fn parse_section(dictionary: &[u8]) -> Result<Option<Vec<Range<usize>>>, &'static str> {
    const MALFORMED: &str = "its parts section is malformed";
    let Some(mut rest) = dictionary.strip_prefix(SECTION_MAGIC) else {
        return Ok(None);
    };
    let count = decode_varint(&mut rest).map_err(|_| MALFORMED)?;
    if count > MAX_PARTS {
        return Err(MALFORMED);
    }
    let mut parts = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let length = decode_varint(&mut rest).map_err(|_| MALFORMED)?;
        let length = usize::try_from(length)
            .ok()
            .filter(|length| *length <= rest.len())
            .ok_or(MALFORMED)?;
        let start = dictionary.len() - rest.len();
        parts.push(start..start + length);
        rest = &rest[length..];
    }
    Ok(Some(parts))
}

/// The end of the protobuf field that starts at `at` in `message`, and whether it is
/// length-delimited; `None` when no well-formed field starts there (groups included: no
/// message of this service has one).
#[cfg(test)]
fn field_end(message: &[u8], at: usize) -> Option<(usize, bool)> {
    let mut rest = message.get(at..)?;
    let key = decode_varint(&mut rest).ok()?;
    if key >> 3 == 0 || key >> 3 > u64::from(u32::MAX >> 3) {
        return None;
    }
    let body = match key & 7 {
        0 => {
            decode_varint(&mut rest).ok()?;
            0
        }
        1 => 8,
        2 => usize::try_from(decode_varint(&mut rest).ok()?).ok()?,
        5 => 4,
        _ => return None,
    };
    let end = (message.len() - rest.len()).checked_add(body)?;
    (end <= message.len()).then_some((end, key & 7 == 2))
}

/// The top-level fields of `message`, as (tag, byte range of the whole field); `None` unless the
/// whole message is well-formed fields.
#[cfg(test)]
pub fn fields(message: &[u8]) -> Option<Vec<(u32, Range<usize>)>> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < message.len() {
        let (end, _) = field_end(message, at)?;
        let mut key = &message[at..end];
        let tag = (decode_varint(&mut key).ok()? >> 3) as u32;
        fields.push((tag, at..end));
        at = end;
    }
    Some(fields)
}

/// A field's bucket: its length and its first and last eight bytes (a plan's parts of one kind
/// share their first bytes, and rarely their length and last bytes too). Whole fields are compared
/// within a bucket.
#[cfg(test)]
type Key = (u32, u64, u64);

#[cfg(test)]
fn key(field: &[u8]) -> Key {
    let mut head = [0; 8];
    let mut tail = [0; 8];
    let n = field.len().min(8);
    head[..n].copy_from_slice(&field[..n]);
    tail[..n].copy_from_slice(&field[field.len() - n..]);
    (
        field.len() as u32,
        u64::from_le_bytes(head),
        u64::from_le_bytes(tail),
    )
}

/// A multiply-rotate hash for the three integers of a key: the table is built once from the
/// profile, and a lookup the bytes of a request could steer into one bucket still compares only
/// against the few hundred parts there are.
#[cfg(test)]
#[derive(Default)]
struct KeyHasher(u64);

#[cfg(test)]
impl KeyHasher {
    fn add(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[cfg(test)]
impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }
}

#[cfg(test)]
/// The parts of a dictionary, found by their bytes.
#[derive(Debug)]
pub struct PartIndex {
    parts: Vec<Range<usize>>,
    by_key: HashMap<Key, Vec<u32>, BuildHasherDefault<KeyHasher>>,
}

#[cfg(test)]
impl PartIndex {
    /// The index of `dictionary`'s parts section; `None` when it has none (or a malformed one).
    pub fn new(dictionary: &[u8]) -> Option<PartIndex> {
        let parts = parse_section(dictionary).ok()??;
        let mut by_key: HashMap<Key, Vec<u32>, BuildHasherDefault<KeyHasher>> = HashMap::default();
        for (index, range) in parts.iter().enumerate() {
            let bucket = by_key.entry(key(&dictionary[range.clone()])).or_default();
            // The first of equal parts is the one named.
            if !bucket.iter().any(|&other| {
                dictionary[parts[other as usize].clone()] == dictionary[range.clone()]
            }) {
                bucket.push(index as u32);
            }
        }
        Some(PartIndex { parts, by_key })
    }

    fn find(&self, dictionary: &[u8], field: &[u8]) -> Option<u32> {
        self.by_key
            .get(&key(field))?
            .iter()
            .copied()
            .find(|&index| dictionary[self.parts[index as usize].clone()] == *field)
    }

    /// Whether `frame` stands for exactly `response` against `dictionary` (the one this index was
    /// built from).
    pub fn reproduces(&self, dictionary: &[u8], frame: &[u8], response: &[u8]) -> bool {
        reproduces(&self.parts, dictionary, frame, response)
    }

    /// `response` as a parts frame against `dictionary` (the one this index was built from), if
    /// it comes to at most `limit` bytes; `None` when it would be longer (found out as soon as the
    /// frame so far and the literal bytes pending pass `limit`, so a response the parts do not
    /// cover is not copied first) or when `response` is not a sequence of well-formed protobuf
    /// fields.
    pub fn frame(&self, dictionary: &[u8], response: &[u8], limit: usize) -> Option<Vec<u8>> {
        fn literal(frame: &mut Vec<u8>, bytes: &[u8]) {
            if !bytes.is_empty() {
                encode_varint((bytes.len() as u64) << 1, frame);
                frame.extend_from_slice(bytes);
            }
        }
        let mut frame = Vec::with_capacity(256);
        frame.extend_from_slice(FRAME_MAGIC);
        encode_varint(response.len() as u64, &mut frame);
        let (mut at, mut pending) = (0, 0);
        while at < response.len() {
            let (end, delimited) = field_end(response, at)?;
            if delimited && let Some(index) = self.find(dictionary, &response[at..end]) {
                literal(&mut frame, &response[pending..at]);
                encode_varint((u64::from(index) << 1) | 1, &mut frame);
                pending = end;
            }
            at = end;
            // What is written, plus the literal bytes pending (their length prefix aside).
            if frame.len() + (at - pending) > limit {
                return None;
            }
        }
        literal(&mut frame, &response[pending..]);
        (frame.len() <= limit).then_some(frame)
    }
}

/// Walks a parts frame against the dictionary whose section `parts` describes: calls `piece` with
/// the claimed length and each piece of the response in order, and returns the claimed length once
/// the pieces add up to it; `None` for bytes that do not parse as a frame (bad magic, an unknown
/// part, a literal past the end, pieces past or short of the claimed length), one claiming more
/// than `max` bytes, or when `piece` returns false. No piece past the claimed length is passed on,
/// so a frame naming a large part a million times costs no more than its claim.
fn walk<'a>(
    parts: &[Range<usize>],
    dictionary: &'a [u8],
    frame: &'a [u8],
    max: u64,
    mut piece: impl FnMut(usize, &'a [u8]) -> bool,
) -> Option<usize> {
    let mut rest = frame.strip_prefix(FRAME_MAGIC)?;
    let total = usize::try_from(decode_varint(&mut rest).ok()?)
        .ok()
        .filter(|total| *total as u64 <= max)?;
    let mut produced = 0;
    while !rest.is_empty() {
        let operation = decode_varint(&mut rest).ok()?;
        let value = usize::try_from(operation >> 1).ok()?;
        let bytes = if operation & 1 == 0 {
            if value == 0 || value > rest.len() {
                return None;
            }
            let (bytes, tail) = rest.split_at(value);
            rest = tail;
            bytes
        } else {
            dictionary.get(parts.get(value)?.clone())?
        };
        if bytes.len() > total - produced || !piece(total, bytes) {
            return None;
        }
        produced += bytes.len();
    }
    (produced == total).then_some(total)
}

/// The response a parts frame stands for, against the dictionary whose section `parts` describes;
/// `None` for bytes that do not parse as a frame (see `walk`) or one claiming more than `max`
/// bytes. A changed frame may still parse, to other bytes: the hash chain (`verify`) is what
/// detects it.
pub fn decode(
    parts: &[Range<usize>],
    dictionary: &[u8],
    frame: &[u8],
    max: u64,
) -> Option<Vec<u8>> {
    let mut response = Vec::new();
    walk(parts, dictionary, frame, max, |total, piece| {
        if response.is_empty() {
            response.reserve_exact(total.min(64 * 1024));
        }
        response.extend_from_slice(piece);
        true
    })?;
    Some(response)
}

/// Whether `frame` stands for exactly `response` against the dictionary whose section `parts`
/// describes; compares piece by piece, building nothing.
pub fn reproduces(
    parts: &[Range<usize>],
    dictionary: &[u8],
    frame: &[u8],
    response: &[u8],
) -> bool {
    let mut at = 0;
    walk(
        parts,
        dictionary,
        frame,
        response.len() as u64,
        |_, piece| {
            let same = response.get(at..at + piece.len()) == Some(piece);
            at += piece.len();
            same
        },
    ) == Some(response.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dictionary() -> Vec<u8> {
        let parts: [&[u8]; 4] = [
            b"\x0a\x03abc",
            b"\x12\x02xy",
            b"\x0a\x03abc", // a duplicate: frames name the first
            b"\x1a\x00",
        ];
        let mut dictionary = section(parts.into_iter());
        dictionary.extend_from_slice(b"samples that follow the section");
        dictionary
    }

    #[test]
    fn a_message_of_parts_and_its_own_fields_round_trips() {
        let dictionary = dictionary();
        let parts = parse_section(&dictionary)
            .expect("well-formed")
            .expect("has one");
        assert_eq!(parts.len(), 4);
        let index = PartIndex::new(&dictionary).expect("index");
        // field 1 "abc" (a part), field 3 varint 5 (own), field 2 "xy" (a part), field 1 "abd"
        // (own: same bucket length, different bytes), field 4 fixed64, field 3 empty (a part).
        let message: Vec<u8> = [
            &b"\x0a\x03abc"[..],
            b"\x18\x05",
            b"\x12\x02xy",
            b"\x0a\x03abd",
            b"\x21\x01\x02\x03\x04\x05\x06\x07\x08",
            b"\x1a\x00",
        ]
        .concat();
        let frame = index
            .frame(&dictionary, &message, usize::MAX)
            .expect("fields");
        let mut expected = FRAME_MAGIC.to_vec();
        expected.push(message.len() as u8);
        expected.push(1); // part 0
        expected.extend_from_slice(b"\x04\x18\x05"); // 2 literal bytes
        expected.push(3); // part 1
        expected.push(14 << 1); // 14 literal bytes
        expected.extend_from_slice(&message[11..25]);
        expected.push(7); // part 3
        assert_eq!(frame, expected);
        assert_eq!(
            decode(&parts, &dictionary, &frame, 1 << 20).as_deref(),
            Some(&message[..])
        );
        // Read back in place: the very bytes only.
        assert!(index.reproduces(&dictionary, &frame, &message));
        let mut changed = message.clone();
        changed[2] ^= 1; // inside part 0
        assert!(!index.reproduces(&dictionary, &frame, &changed));
        changed = message.clone();
        changed[6] ^= 1; // inside the literal
        assert!(!index.reproduces(&dictionary, &frame, &changed));
        assert!(!index.reproduces(&dictionary, &frame, &message[..message.len() - 1]));
        assert!(!index.reproduces(&dictionary, &frame, &[&message[..], b"\x18\x05"].concat()));
        assert!(!index.reproduces(&dictionary, &frame[..frame.len() - 1], &message));
        // Nothing but own fields, and nothing at all.
        for message in [&b"\x18\x05"[..], b""] {
            let frame = index
                .frame(&dictionary, message, usize::MAX)
                .expect("fields");
            assert_eq!(
                decode(&parts, &dictionary, &frame, 1 << 20).as_deref(),
                Some(message)
            );
        }
    }

    #[test]
    fn a_frame_past_its_limit_is_given_up() {
        let dictionary = dictionary();
        let index = PartIndex::new(&dictionary).expect("index");
        // Part 0, then a 9-byte field of its own: a 4 + 1 + 1 + 1 + 9 = 16-byte frame.
        let message = [&b"\x0a\x03abc"[..], b"\x0a\x07abcdefg"].concat();
        let frame = index
            .frame(&dictionary, &message, usize::MAX)
            .expect("fields");
        assert_eq!(frame.len(), 16);
        assert_eq!(
            index.frame(&dictionary, &message, 16).as_deref(),
            Some(&frame[..])
        );
        assert_eq!(index.frame(&dictionary, &message, 15), None);
        // A response of nothing but its own bytes is given up on before any is copied.
        assert_eq!(index.frame(&dictionary, &[0x18; 64], 8), None);
    }

    #[test]
    fn a_frame_of_many_references_never_builds_more_than_it_claims() {
        // One 64 KiB part named a million times would be 64 GiB: the claimed length (at most the
        // limit) stops the decoding at the first piece past it, so this returns at once.
        let big = [&b"\x0a\x80\x80\x04"[..], &vec![7_u8; 65_536]].concat();
        let dictionary = section([&big[..]].into_iter());
        let parts = parse_section(&dictionary).unwrap().unwrap();
        let mut frame = FRAME_MAGIC.to_vec();
        encode_varint(1 << 20, &mut frame);
        frame.extend(std::iter::repeat_n(1_u8, 1 << 20));
        assert_eq!(decode(&parts, &dictionary, &frame, 1 << 20), None);
        // And a frame whose claim is past the limit is refused before anything is built.
        let mut frame = FRAME_MAGIC.to_vec();
        encode_varint((1 << 20) + 1, &mut frame);
        frame.push(1);
        assert_eq!(decode(&parts, &dictionary, &frame, 1 << 20), None);
        // Fifteen references within the limit: exactly what it claims.
        let mut frame = FRAME_MAGIC.to_vec();
        encode_varint(15 * big.len() as u64, &mut frame);
        frame.extend([1_u8; 15]);
        assert_eq!(
            decode(&parts, &dictionary, &frame, 1 << 20),
            Some(big.repeat(15))
        );
    }

    #[test]
    fn what_is_not_protobuf_fields_gets_no_frame() {
        let dictionary = dictionary();
        let index = PartIndex::new(&dictionary).expect("index");
        for message in [
            &b"\x0a\x05abc"[..],                             // cut short
            b"\x00\x01",                                     // field 0
            b"\x0b\x0c",                                     // a group
            b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", // an eleven-byte varint
            b"\x21\x01",                                     // fixed64 cut short
        ] {
            assert_eq!(
                index.frame(&dictionary, message, usize::MAX),
                None,
                "{message:?}"
            );
        }
        assert!(PartIndex::new(b"no section here").is_none());
        assert_eq!(parse_section(b"no section here"), Ok(None));
    }

    #[test]
    fn a_changed_frame_or_section_never_panics_or_overruns() {
        let dictionary = dictionary();
        let parts = parse_section(&dictionary).unwrap().unwrap();
        let message = b"\x0a\x03abc\x18\x05\x12\x02xy";
        let frame = PartIndex::new(&dictionary)
            .unwrap()
            .frame(&dictionary, message, usize::MAX)
            .unwrap();
        let decodes = |frame: &[u8]| decode(&parts, &dictionary, frame, 1 << 20);
        assert_eq!(decodes(&frame).as_deref(), Some(&message[..]));
        // Every cut, and every single-byte change, either fails or yields other bytes of the
        // claimed length; never a panic.
        for cut in 0..frame.len() {
            assert_ne!(decodes(&frame[..cut]).as_deref(), Some(&message[..]));
        }
        for at in 0..frame.len() {
            for value in 0..=255u8 {
                let mut changed = frame.clone();
                changed[at] = value;
                if let Some(response) = decodes(&changed) {
                    assert_eq!(response.len() as u64, {
                        let mut rest = &changed[4..];
                        decode_varint(&mut rest).unwrap()
                    });
                }
            }
        }
        // Named explicitly: an unknown part, a literal past the end, an empty literal, too long
        // or too short against the length claimed, a length past the limit, no magic.
        let mut frame = FRAME_MAGIC.to_vec();
        for (operations, total) in [
            (&[9u8][..], 5u8),
            (&[0x10, b'a'][..], 8),
            (&[0x00, 0x01][..], 5),
            (&[0x01, 0x01][..], 5),
            (&[0x01][..], 6),
        ] {
            frame.truncate(4);
            frame.push(total);
            frame.extend_from_slice(operations);
            assert_eq!(decodes(&frame), None, "{frame:?}");
        }
        assert_eq!(
            decode(&parts, &dictionary, b"\x56\x4c\x50\x01\x05\x01", 4),
            None
        );
        assert_eq!(decodes(b"\x28\xb5\x2f\xfd\x00"), None);
        // A section whose count or lengths overrun is malformed.
        for section in [
            [SECTION_MAGIC, b"\x02\x01a"].concat(),
            [SECTION_MAGIC, b"\x01\x05ab"].concat(),
            [SECTION_MAGIC, b"\xff\xff\xff\xff\x0f"].concat(),
        ] {
            assert!(parse_section(&section).is_err());
            assert!(PartIndex::new(&section).is_none());
        }
    }
}
