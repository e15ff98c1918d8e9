//! Recommendation ids: ULIDs (26 characters of Crockford base32: 48 bits of milliseconds since the
//! Unix epoch, then 80 random bits). They are unique like a UUID v4 but sort by time, so the audit
//! store's id index grows at its end instead of at random places.

/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID's 26 characters, held inline: making one allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ulid([u8; 26]);

impl Ulid {
    /// The ULID as text.
    pub fn as_str(&self) -> &str {
        // Every byte is from ALPHABET (see `encode`), hence ASCII: the check cannot fail.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for Ulid {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Ulid {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Ulid {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), formatter)
    }
}

impl PartialEq<&str> for Ulid {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The 128-bit value of a ULID made at `millis` with the given random bits (only the low 80 are
/// used), as its 26-character text.
pub fn encode(millis: u64, random: u128) -> Ulid {
    let value = (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1_u128 << 80) - 1));
    let mut text = [0_u8; 26];
    let mut rest = value;
    for slot in text.iter_mut().rev() {
        *slot = ALPHABET[(rest & 31) as usize];
        rest >>= 5;
    }
    Ulid(text)
}

/// A fresh ULID for now.
pub fn new() -> Ulid {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        });
    // A v4 UUID's bytes 0..4 and 10..16 are random (its version and variant bits lie elsewhere):
    // 80 random bits from the same fast generator the service already uses.
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let mut random = 0_u128;
    for byte in bytes[0..4].iter().chain(&bytes[10..16]) {
        random = (random << 8) | u128::from(*byte);
    }
    encode(millis, random)
}

/// Whether `text` is a ULID in canonical form: 26 upper-case Crockford characters, the first at most
/// `7` (the value has 128 bits).
pub fn is_ulid(text: &str) -> bool {
    text.len() == 26
        && text.bytes().all(|byte| ALPHABET.contains(&byte))
        && text.as_bytes()[0] <= b'7'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_order() {
        assert_eq!(encode(0, 0), "00000000000000000000000000");
        assert_eq!(encode(u64::MAX, u128::MAX), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        // The time part alone: 1 ms is the last character of the first ten.
        assert_eq!(&encode(1, 0)[..10], "0000000001");
        assert_eq!(&encode(32, 0)[..10], "0000000010");
        assert!(encode(1_700_000_000_000, u128::MAX) < encode(1_700_000_000_001, 0));
        let id = new();
        assert!(is_ulid(&id), "{id}");
        assert_ne!(new(), new());
        assert!(!is_ulid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
        assert!(!is_ulid("01arz3ndektsv4rrffq69g5fav"));
        assert!(!is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAU"));
        assert!(!is_ulid("0000000000000000000000000"));
        // The text forms agree.
        let id = encode(1_700_000_000_000, 12_345);
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(format!("{id:?}"), format!("{:?}", id.as_str()));
        assert_eq!(id.len(), 26);
    }
}
