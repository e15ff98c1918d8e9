//! Plans stored as references to the guideline's own parts: the read-only decoder of the records
//! builds before 2026-12 wrote this way. New records are standard zstd frames
//! ([`super::compress`]); nothing writes this format any more (the tests write frames by hand).
//!
//! A dictionary of those builds ([`super::dictionary`]) opened with a *parts section* listing the
//! plan sub-messages the guideline profile fixes (rule firings, alerts, volumes, options,
//! constraints, outcomes, references, the guideline block, the disclaimer), each encoded exactly
//! as a plan carries it; a stored plan is a *parts frame*: the plan's top-level fields in order,
//! each either the index of a listed part or the field's own bytes. Reading a frame back is
//! concatenation.
//!
//! Parts section: [`SECTION_MAGIC`], the number of parts (varint), then each part as its length
//! (varint) and bytes. Parts frame: [`FRAME_MAGIC`], the response's length (varint), then operations
//! to the end: a varint `n << 1` followed by `n` literal bytes, or a varint `index << 1 | 1` naming
//! a part. A zstd frame opens with the bytes 28 B5 2F FD, so the two never look alike.

use std::ops::Range;

use prost::encoding::decode_varint;

/// Opens a dictionary that begins with a parts section.
pub const SECTION_MAGIC: &[u8] = b"vlms-rt plan parts v1\n";

/// Opens a response stored as a parts frame.
pub const FRAME_MAGIC: &[u8; 4] = b"VLP\x01";

/// Most parts a section may list.
const MAX_PARTS: u64 = 1 << 16;

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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::encode_varint;

    /// A parts section listing `parts`, as the builds before 2026-12 wrote one.
    fn section(parts: &[&[u8]]) -> Vec<u8> {
        let mut section = SECTION_MAGIC.to_vec();
        encode_varint(parts.len() as u64, &mut section);
        for part in parts {
            encode_varint(part.len() as u64, &mut section);
            section.extend_from_slice(part);
        }
        section
    }

    fn dictionary() -> Vec<u8> {
        let mut dictionary = section(&[b"\x0a\x03abc", b"\x12\x02xy", b"\x1a\x00"]);
        dictionary.extend_from_slice(b"samples that follow the section");
        dictionary
    }

    #[test]
    fn a_frame_of_parts_and_literal_bytes_reads_back_as_their_concatenation() {
        let dictionary = dictionary();
        let parts = parse_section(&dictionary)
            .expect("well-formed")
            .expect("has one");
        assert_eq!(parts.len(), 3);
        assert_eq!(&dictionary[parts[1].clone()], b"\x12\x02xy");
        // Part 0, two literal bytes, part 1, five literal bytes, part 2.
        let message: Vec<u8> = [
            &b"\x0a\x03abc"[..],
            b"\x18\x05",
            b"\x12\x02xy",
            b"\x0a\x03abd",
            b"\x1a\x00",
        ]
        .concat();
        let mut frame = FRAME_MAGIC.to_vec();
        frame.push(message.len() as u8);
        frame.push(1); // part 0
        frame.extend_from_slice(b"\x04\x18\x05"); // 2 literal bytes
        frame.push(3); // part 1
        frame.push(5 << 1); // 5 literal bytes
        frame.extend_from_slice(b"\x0a\x03abd");
        frame.push(5); // part 2
        assert_eq!(
            decode(&parts, &dictionary, &frame, 1 << 20).as_deref(),
            Some(&message[..])
        );
        // Nothing but literal bytes, and nothing at all.
        let literal = [&FRAME_MAGIC[..], b"\x02\x04\x18\x05"].concat();
        assert_eq!(
            decode(&parts, &dictionary, &literal, 1 << 20).as_deref(),
            Some(&b"\x18\x05"[..])
        );
        let empty = [&FRAME_MAGIC[..], b"\x00"].concat();
        assert_eq!(
            decode(&parts, &dictionary, &empty, 1 << 20).as_deref(),
            Some(&b""[..])
        );
        assert_eq!(parse_section(b"no section here"), Ok(None));
    }

    #[test]
    fn a_frame_of_many_references_never_builds_more_than_it_claims() {
        // One 64 KiB part named a million times would be 64 GiB: the claimed length (at most the
        // limit) stops the decoding at the first piece past it, so this returns at once.
        let big = [&b"\x0a\x80\x80\x04"[..], &vec![7_u8; 65_536]].concat();
        let dictionary = section(&[&big[..]]);
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
    fn a_changed_frame_or_section_never_panics_or_overruns() {
        let dictionary = dictionary();
        let parts = parse_section(&dictionary).unwrap().unwrap();
        let message = b"\x0a\x03abc\x18\x05\x12\x02xy";
        // Part 0, two literal bytes, part 1.
        let frame = [&FRAME_MAGIC[..], b"\x0b\x01\x04\x18\x05\x03"].concat();
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
        }
    }
}
