//! Trusting CDS clients: the signed JWT every CDS Hooks request carries (`Authorization: Bearer`),
//! checked against the issuers file (`--cds-hooks-issuers`): the issuer must be listed, the
//! signature made with RS384 or ES384 by one of its keys (JWK sets inline, never fetched), `aud` the
//! endpoint's URL, `exp` in the future, `iat` not in the future, and `jti` not seen before.
//!
//! The issuers file (JSON), reloaded on SIGHUP like the token file:
//! ```json
//! {"issuers": [{"iss": "https://ehr.example.org", "jwks": {"keys": [{"kty": "EC", "crv": "P-384", "kid": "k1", "x": "…", "y": "…"}]},
//!               "allowEvaluationDate": false}]}
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// How far a client's clock may be off.
const LEEWAY_SECONDS: u64 = 30;
/// The longest token lifetime accepted (CDS Hooks asks for about five minutes); it also bounds how
/// long a `jti` is remembered.
const MAX_LIFETIME_SECONDS: u64 = 3600;
/// Most `jti`s remembered at once; a full cache refuses new tokens rather than forget one.
const MAX_REMEMBERED: usize = 200_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssuersFile {
    issuers: Vec<IssuerEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssuerEntry {
    iss: String,
    jwks: JwkSet,
    #[serde(default)]
    allow_evaluation_date: bool,
}

struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

struct Issuer {
    keys: Vec<Key>,
    allow_evaluation_date: bool,
}

/// Why the issuers file was refused.
#[derive(Debug, thiserror::Error)]
pub enum IssuersFileError {
    #[error("cannot read issuers file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("issuers file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn parse(path: &Path, text: &str) -> Result<HashMap<String, Issuer>, IssuersFileError> {
    let invalid = |message: String| IssuersFileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let file: IssuersFile =
        serde_json::from_str(text).map_err(|error| invalid(error.to_string()))?;
    let mut issuers = HashMap::new();
    for entry in file.issuers {
        if entry.iss.is_empty() {
            return Err(invalid("an issuer with an empty `iss`".into()));
        }
        let mut keys = Vec::new();
        for jwk in &entry.jwks.keys {
            let algorithm = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS384,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                    if ec.curve == jsonwebtoken::jwk::EllipticCurve::P384 =>
                {
                    Algorithm::ES384
                }
                _ => {
                    return Err(invalid(format!(
                        "issuer {}: only RSA and EC P-384 keys are accepted (RS384, ES384)",
                        entry.iss
                    )));
                }
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|error| invalid(format!("issuer {}: {error}", entry.iss)))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err(invalid(format!("issuer {} has no keys", entry.iss)));
        }
        if issuers
            .insert(
                entry.iss.clone(),
                Issuer {
                    keys,
                    allow_evaluation_date: entry.allow_evaluation_date,
                },
            )
            .is_some()
        {
            return Err(invalid(format!("issuer {} is listed twice", entry.iss)));
        }
    }
    Ok(issuers)
}

/// The trusted issuers and the `jti`s already used.
pub struct Issuers {
    path: PathBuf,
    issuers: RwLock<HashMap<String, Issuer>>,
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuers").field("path", &self.path).finish()
    }
}

/// A request's verified client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub issuer: String,
    /// Whether this issuer may set the evaluation date (test harnesses, MDT "as of" runs).
    pub may_set_evaluation_date: bool,
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    exp: u64,
    iat: u64,
    jti: String,
}

impl Issuers {
    /// Reads the issuers file; refused whole on any problem.
    pub fn load(path: &Path) -> Result<Issuers, IssuersFileError> {
        let issuers = Self::read(path)?;
        Ok(Issuers {
            path: path.to_path_buf(),
            issuers: RwLock::new(issuers),
            seen: Mutex::new(HashMap::new()),
        })
    }

    fn read(path: &Path) -> Result<HashMap<String, Issuer>, IssuersFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| IssuersFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse(path, &text)
    }

    /// Re-reads the file; the issuers in force stay on error. Returns how many are trusted.
    pub fn reload(&self) -> Result<usize, IssuersFileError> {
        let issuers = Self::read(&self.path)?;
        let count = issuers.len();
        *self.issuers.write().unwrap_or_else(|e| e.into_inner()) = issuers;
        Ok(count)
    }

    /// Checks a bearer token for the endpoint `audience` at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, audience: &str, now: u64) -> Result<Client, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|error| format!("not a JWT: {error}"))?;
        if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
            return Err(format!(
                "algorithm {:?} is not accepted (RS384 or ES384 only)",
                header.alg
            ));
        }
        let claimed_issuer = unverified_issuer(token)?;
        let issuers = self.issuers.read().unwrap_or_else(|e| e.into_inner());
        let issuer = issuers
            .get(&claimed_issuer)
            .ok_or_else(|| format!("issuer {claimed_issuer:?} is not trusted"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&claimed_issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "jti"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        let mut last_error = String::from("no key of this issuer matches the token");
        for key in issuer.keys.iter().filter(|key| {
            key.algorithm == header.alg
                && (header.kid.is_none() || header.kid.as_deref() == key.kid.as_deref())
        }) {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    if claims.iat > now + LEEWAY_SECONDS {
                        return Err("token issued in the future (iat)".into());
                    }
                    if claims.exp > now + MAX_LIFETIME_SECONDS {
                        return Err(format!(
                            "token expires more than {MAX_LIFETIME_SECONDS} s from now"
                        ));
                    }
                    if claims.exp + LEEWAY_SECONDS < now {
                        return Err("token expired".into());
                    }
                    self.remember(&claims, now)?;
                    return Ok(Client {
                        issuer: claims.iss,
                        may_set_evaluation_date: issuer.allow_evaluation_date,
                    });
                }
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(last_error)
    }

    fn remember(&self, claims: &Claims, now: u64) -> Result<(), String> {
        if claims.jti.is_empty() {
            return Err("empty jti".into());
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (claims.iss.clone(), claims.jti.clone());
        if seen.contains_key(&key) {
            return Err("token replayed (jti already used)".into());
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, expires| *expires + LEEWAY_SECONDS >= now);
            if seen.len() >= MAX_REMEMBERED {
                return Err("too many live tokens to remember; retry shortly".into());
            }
        }
        seen.insert(key, claims.exp);
        Ok(())
    }
}

/// The `iss` a token claims, read before its signature is checked only to pick the keys to check
/// it with.
fn unverified_issuer(token: &str) -> Result<String, String> {
    use base64_url::decode as b64;
    let payload = token.split('.').nth(1).ok_or("not a JWT")?;
    let bytes = b64(payload).map_err(|_| "JWT payload is not base64url".to_string())?;
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let claims: Iss =
        serde_json::from_slice(&bytes).map_err(|_| "JWT payload is not JSON".to_string())?;
    claims.iss.ok_or_else(|| "JWT has no iss".to_string())
}

mod base64_url {
    /// Decodes unpadded base64url (RFC 4648 §5).
    pub fn decode(text: &str) -> Result<Vec<u8>, ()> {
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        let mut buffer = 0u32;
        let mut bits = 0;
        for byte in text.trim_end_matches('=').bytes() {
            let value = match byte {
                b'A'..=b'Z' => byte - b'A',
                b'a'..=b'z' => byte - b'a' + 26,
                b'0'..=b'9' => byte - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => return Err(()),
            };
            buffer = (buffer << 6) | u32::from(value);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((buffer >> bits) as u8);
                buffer &= (1 << bits) - 1;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_decodes() {
        assert_eq!(base64_url::decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_url::decode("_-8").unwrap(), vec![0xff, 0xef]);
        assert!(base64_url::decode("a b").is_err());
    }

    #[test]
    fn issuers_file_refuses_symmetric_keys() {
        let text =
            r#"{"issuers": [{"iss": "x", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}]}"#;
        assert!(parse(Path::new("f"), text).is_err());
        let text = r#"{"issuers": [{"iss": "x", "jwks": {"keys": []}}]}"#;
        assert!(parse(Path::new("f"), text).is_err());
        let text = r#"{"issuers": [], "extra": 1}"#;
        assert!(parse(Path::new("f"), text).is_err());
    }
}
