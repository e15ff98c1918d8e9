//! Compression of stored responses against the store's dictionary ([`super::dictionary`]): a
//! standard zstd frame with its content checksum on, read back and compared before it is kept, or
//! the bytes as sent. Done on the thread that answers the call, before the record is queued for
//! the committer: its serial path then hashes and stores a few hundred bytes instead of the whole
//! plan, and the plan's buffer never crosses threads. The parts frames of earlier builds
//! ([`super::parts`]) are read, never written.
//!
//! A record compressed here carries the dictionary's SHA-256 ([`super::NewRecord::response_dictionary`]);
//! its link in the hash chain covers the compressed frame and that SHA-256 (chain version 2), which
//! fixes the bytes that were sent just as well, since decompression is deterministic and a
//! dictionary is kept, and checked, by its SHA-256.

use std::cell::RefCell;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::AuditError;

/// zstd settings. A fast negative level does nearly as well as level 1 here, because nearly all of
/// a plan is found in the dictionary; every audited call pays for it on its own thread
/// (docs/perf/decisions/016-audit-zstd-dictionary.md). The window and hash table are set so the
/// whole dictionary (under 512 KiB) stays reachable: left to itself zstd sizes both for the few-KB
/// input and finds only the dictionary's last few KB.
const COMPRESSION_LEVEL: i32 = -3;
const WINDOW_LOG: u32 = 19;
const HASH_LOG: u32 = 17;

/// Largest response compressed (a plan is a few KB): a larger one is stored as sent, since the
/// readers (the stores, `audit verify`, `scripts/read-audit-record.py`) refuse frames that claim
/// more, to bound what a changed record can make them allocate. A record past it that an earlier
/// build compressed would read as changed; none is expected (plans and checks are a few KB).
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// A dictionary responses are compressed against.
#[derive(Debug)]
pub struct Compression {
    dictionary: Arc<[u8]>,
    sha256: [u8; 32],
}

thread_local! {
    /// This thread's compressor, loaded with the dictionary of the given SHA-256. One per thread:
    /// a zstd context is not shared, and building one (loading the dictionary) takes milliseconds,
    /// so it is kept for the next record.
    static COMPRESSOR: RefCell<Option<([u8; 32], zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    /// This thread's decompressor for reading a zstd frame back before it is kept (same dictionary
    /// key), and the buffer it decompresses into.
    static READ_BACK: RefCell<Option<ReadBack>> = const { RefCell::new(None) };
}

/// A decompressor loaded with the dictionary of the given SHA-256, and its output buffer.
type ReadBack = ([u8; 32], zstd::bulk::Decompressor<'static>, Vec<u8>);

impl Compression {
    /// Compression against `dictionary`; `None` for an empty one. Fails if zstd refuses it.
    pub fn new(dictionary: &[u8]) -> Result<Option<Arc<Compression>>, AuditError> {
        if dictionary.is_empty() {
            return Ok(None);
        }
        if super::parts::parse_section(dictionary).is_err() {
            return Err(AuditError::Unavailable(
                "the compression dictionary's parts section is malformed".into(),
            ));
        }
        let compression = Compression {
            dictionary: Arc::from(dictionary),
            sha256: Sha256::digest(dictionary).into(),
        };
        // Fail at start-up, not on the first call, if zstd cannot load it.
        compression.compressor()?;
        Ok(Some(Arc::new(compression)))
    }

    /// The dictionary.
    pub fn dictionary(&self) -> &[u8] {
        &self.dictionary
    }

    /// The dictionary's SHA-256, which names it in the store and in the hash chain.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    fn compressor(&self) -> Result<zstd::bulk::Compressor<'static>, AuditError> {
        use zstd::zstd_safe::CParameter;
        let error = |error: &dyn std::fmt::Display| AuditError::Unavailable(error.to_string());
        let mut compressor =
            zstd::bulk::Compressor::new(COMPRESSION_LEVEL).map_err(|e| error(&e))?;
        for parameter in [
            CParameter::WindowLog(WINDOW_LOG),
            CParameter::HashLog(HASH_LOG),
            CParameter::ContentSizeFlag(true),
            // The frame carries a checksum of its content (zstd's own, XXH64), so any reader,
            // the zstd tool included, notices a changed frame by itself.
            CParameter::ChecksumFlag(true),
            // Compress against the dictionary's tables in place. By default zstd copies them into
            // the context for inputs past 8 KB, which a plan can be; either way the frame decodes
            // to the same bytes (docs/perf/decisions/017-zstd-attach-dictionary.md).
            CParameter::ForceAttachDict(zstd::zstd_safe::DictAttachPref::ForceAttach),
        ] {
            compressor.set_parameter(parameter).map_err(|e| error(&e))?;
        }
        compressor
            .context_mut()
            .load_dictionary(&self.dictionary)
            .map_err(|code| error(&zstd::zstd_safe::get_error_name(code)))?;
        Ok(compressor)
    }

    /// `response` as a zstd frame against the dictionary when that is smaller; `None` otherwise
    /// (incompressible bytes, a zstd error, or a frame that does not read back as `response`: the
    /// response is then stored as sent). A frame is kept only after it was read back and compared
    /// with `response`.
    pub fn compress(&self, response: &[u8]) -> Option<Vec<u8>> {
        let frame = COMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell
                .as_ref()
                .is_none_or(|(sha256, _)| *sha256 != self.sha256)
            {
                *cell = Some((self.sha256, self.compressor().ok()?));
            }
            let (_, compressor) = cell.as_mut()?;
            compressor
                .compress(response)
                .ok()
                .filter(|frame| frame.len() < response.len())
        })?;
        // A zstd frame is read back too (decompressed and compared), so that nothing is kept that
        // does not give back the bytes sent; if it ever did not, the response is stored as sent.
        if self.zstd_reproduces(&frame, response) {
            Some(frame)
        } else {
            static LOGGED: std::sync::Once = std::sync::Once::new();
            LOGGED.call_once(|| {
                tracing::error!(
                    "a zstd frame did not read back as the response it was made from; such \
                     responses are stored as sent instead: please report this"
                );
            });
            None
        }
    }

    /// Whether the zstd `frame` decompresses against the dictionary to exactly `response`.
    fn zstd_reproduces(&self, frame: &[u8], response: &[u8]) -> bool {
        READ_BACK.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell
                .as_ref()
                .is_none_or(|(sha256, _, _)| *sha256 != self.sha256)
            {
                let Ok(decompressor) = zstd::bulk::Decompressor::with_dictionary(&self.dictionary)
                else {
                    return false;
                };
                *cell = Some((self.sha256, decompressor, Vec::new()));
            }
            let Some((_, decompressor, buffer)) = cell.as_mut() else {
                return false;
            };
            buffer.clear();
            // At least one byte of room past the response: a frame giving more fails or differs.
            buffer.reserve(response.len() + 1);
            let same = decompressor
                .decompress_to_buffer(frame, buffer)
                .is_ok_and(|_| buffer.as_slice() == response);
            // The buffer is kept for the next record unless a large response grew it.
            if buffer.capacity() > 256 * 1024 {
                *buffer = Vec::new();
            }
            same
        })
    }
}

/// The response as a store with `compression` keeps it, and the SHA-256 of the dictionary it was
/// compressed with (`None`: as sent).
pub fn stored_response(
    compression: Option<&Compression>,
    response: &[u8],
) -> (Vec<u8>, Option<[u8; 32]>) {
    match compression
        .filter(|_| response.len() <= MAX_RESPONSE)
        .and_then(|compression| {
            compression
                .compress(response)
                .map(|frame| (frame, *compression.sha256()))
        }) {
        Some((frame, sha256)) => (frame, Some(sha256)),
        None => (response.to_vec(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_against_the_dictionary_and_round_trips() {
        let profile = crate::guideline::embedded().expect("profile");
        let dictionary = super::super::dictionary::plan_dictionary(&profile);
        let compression = Compression::new(&dictionary)
            .expect("loads")
            .expect("not empty");
        assert_eq!(
            compression.sha256(),
            &<[u8; 32]>::from(Sha256::digest(&dictionary))
        );
        // A stretch of the sample plans that end the dictionary.
        let plan = dictionary[dictionary.len() - 7_500..].to_vec();
        let (stored, used) = stored_response(Some(&compression), &plan);
        assert_eq!(used, Some(*compression.sha256()));
        assert!(stored.len() * 10 < plan.len(), "{}", stored.len());
        let mut decompressor =
            zstd::bulk::Decompressor::with_dictionary(&dictionary).expect("decompressor");
        assert_eq!(
            decompressor.decompress(&stored, plan.len()).expect("frame"),
            plan
        );
        // Another dictionary on the same thread gets its own compressor.
        let other = Compression::new(&dictionary[..50_000])
            .expect("loads")
            .expect("not empty");
        let (_, used) = stored_response(Some(&other), &plan);
        assert_eq!(used, Some(*other.sha256()));
        // Nothing to gain: stored as sent.
        assert_eq!(
            stored_response(Some(&compression), b"x"),
            (b"x".to_vec(), None)
        );
        assert_eq!(stored_response(None, &plan), (plan.clone(), None));
        // Past what readers accept from a frame: stored as sent, however well it would compress.
        let huge = plan.repeat(MAX_RESPONSE / plan.len() + 1);
        assert!(compression.compress(&huge).is_some());
        assert!(stored_response(Some(&compression), &huge) == (huge.clone(), None));
        assert!(Compression::new(&[]).expect("empty").is_none());
    }

    #[test]
    fn a_plan_is_stored_as_a_checksummed_zstd_frame_read_back_before_it_is_kept() {
        let profile = crate::guideline::embedded().expect("profile");
        let dictionary = super::super::dictionary::plan_dictionary(&profile);
        let compression = Compression::new(&dictionary)
            .expect("loads")
            .expect("not empty");
        let case = super::super::dictionary::sample_cases()
            .into_iter()
            .next()
            .expect("a sample case");
        let request = crate::pb::RecommendRequest { case: Some(case) };
        let case = crate::convert::case_from_request(&request).expect("valid");
        let plan = crate::wire::encode_plan(
            &crate::core::recommend(&profile, &case),
            "01KB0000000000000000000000",
        );
        let stored = compression.compress(&plan).expect("compressed");
        assert!(
            stored.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
            "a zstd frame"
        );
        assert!(!stored.starts_with(super::super::parts::FRAME_MAGIC));
        // The frame header's descriptor (after the magic) has its checksum flag (bit 2) set.
        assert_ne!(stored[4] & 0b100, 0, "content checksum on");
        let mut decompressor =
            zstd::bulk::Decompressor::with_dictionary(&dictionary).expect("decompressor");
        assert_eq!(
            decompressor.decompress(&stored, plan.len()).expect("frame"),
            plan
        );
        // A frame is read back before it is kept: a changed one, or one for other bytes, is not
        // taken for the plan.
        assert!(compression.zstd_reproduces(&stored, &plan));
        let mut changed = stored.clone();
        let middle = changed.len() / 2;
        changed[middle] ^= 0x10;
        assert!(!compression.zstd_reproduces(&changed, &plan));
        let mut shorter = plan.clone();
        shorter.pop();
        assert!(!compression.zstd_reproduces(&stored, &shorter));
        let mut longer = plan.clone();
        longer.push(0);
        assert!(!compression.zstd_reproduces(&stored, &longer));
        // Against another dictionary (its own decompressor on this thread), the frame is not the plan.
        let other = Compression::new(&dictionary[..50_000])
            .expect("loads")
            .expect("not empty");
        assert!(!other.zstd_reproduces(&stored, &plan));
        assert!(compression.zstd_reproduces(&stored, &plan));
    }
}
