//! Caller authentication: bearer tokens checked against a token file of `caller-name:sha256-hex`
//! lines (no plaintext secret on disk). Comparison runs in constant time over every entry, and
//! every refusal says the same thing, so a response never helps guessing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;

/// The authenticated caller of a request, stored in the request's extensions when a token file is
/// configured (without one there is none, and the caller is [`ANONYMOUS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// Name logged for calls when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A line is not `caller-name:sha256-hex`, or repeats a token hash of an earlier line.
    #[error("token file {path} line {line}: {problem}")]
    Line {
        path: String,
        line: usize,
        problem: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    caller: String,
    token_sha256: [u8; 32],
}

/// The current set of accepted tokens, reloadable while serving.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    entries: RwLock<Arc<Vec<Entry>>>,
}

impl TokenStore {
    /// Loads the token file at `path`. A file with no token (empty, or comments only) admits no
    /// caller.
    pub fn load(path: &Path) -> Result<TokenStore, TokenFileError> {
        let entries = read_entries(path)?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            entries: RwLock::new(Arc::new(entries)),
        })
    }

    /// Re-reads the file; on error the tokens in force stay unchanged. Returns the number of
    /// entries: 0 when the file holds none, which revokes every token (no caller is admitted).
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let entries = read_entries(&self.path)?;
        let count = entries.len();
        match self.entries.write() {
            Ok(mut guard) => *guard = Arc::new(entries),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(entries),
        }
        Ok(count)
    }

    /// How many tokens are in force.
    pub fn len(&self) -> usize {
        match self.entries.read() {
            Ok(guard) => guard.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// No token is in force: every call is refused.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The caller whose token this is, comparing against every entry in constant time.
    pub fn caller_for(&self, token: &str) -> Option<String> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let entries = match self.entries.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let mut found: Option<&str> = None;
        for entry in entries.iter() {
            // Every entry is compared, whatever matched before, so timing does not tell which.
            let equal: bool = entry.token_sha256.ct_eq(&digest).into();
            if equal && found.is_none() {
                found = Some(&entry.caller);
            }
        }
        found.map(str::to_string)
    }
}

fn read_entries(path: &Path) -> Result<Vec<Entry>, TokenFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: name.clone(),
        source,
    })?;
    let mut entries: Vec<Entry> = Vec::new();
    // The line number of each entry, for messages.
    let mut lines: Vec<usize> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let problem = |problem: &str| TokenFileError::Line {
            path: name.clone(),
            line: index + 1,
            problem: problem.to_string(),
        };
        let (caller, hash) = line
            .rsplit_once(':')
            .ok_or_else(|| problem("expected caller-name:sha256-hex"))?;
        let caller = caller.trim();
        let valid_name = !caller.is_empty()
            && caller.len() <= 64
            && caller
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_name {
            return Err(problem(
                "the caller name must be 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let token_sha256 = decode_hex_32(hash.trim())
            .ok_or_else(|| problem("the hash must be 64 hex digits (SHA-256 of the token)"))?;
        // One token names one caller: a hash listed twice would make the caller a call is
        // logged and audited under depend on the order of the lines.
        if let Some((earlier_line, earlier)) = entries
            .iter()
            .zip(&lines)
            .find(|(entry, _)| entry.token_sha256 == token_sha256)
            .map(|(entry, line)| (*line, entry.caller.clone()))
        {
            return Err(problem(&format!(
                "this token hash is already listed on line {earlier_line} (caller {earlier}); a token names one caller"
            )));
        }
        entries.push(Entry {
            caller: caller.to_string(),
            token_sha256,
        });
        lines.push(index + 1);
    }
    Ok(entries)
}

fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0_u8; 32];
    for (index, pair) in text.as_bytes().chunks(2).enumerate() {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        out[index] = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

/// Lowercase hex SHA-256 of a token, as written in the token file.
pub fn token_sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The bearer-token check in front of the recommendation service (applied by [`Authenticate`])
/// and of health `Watch` (by `health_gate::HealthGate`).
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Option<Arc<TokenStore>>,
}

impl Authenticator {
    /// Checks tokens against `store`, or lets every call in as `anonymous` when `None`.
    pub fn new(store: Option<Arc<TokenStore>>) -> Self {
        Self { store }
    }
}

impl Authenticator {
    /// The caller a request's `authorization: Bearer …` header names: `Ok(None)` when no token file
    /// is configured (the caller is then `anonymous`), an UNAUTHENTICATED status (the same for
    /// every refusal) when the token is missing or unknown.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Option<Caller>, Status> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let token = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .filter(|token| !token.is_empty());
        match token.and_then(|token| store.caller_for(token)) {
            Some(caller) => Ok(Some(Caller(caller))),
            None => {
                tracing::warn!("call refused: missing or unknown bearer token");
                Err(crate::status::unauthenticated())
            }
        }
    }
}

/// A service behind the bearer-token check: a call with a token the store knows goes on with its
/// [`Caller`] in the request's extensions; without a token file every call goes on, its caller the
/// client certificate's subject on mutual TLS; a missing or unknown token is answered
/// UNAUTHENTICATED here, before the service sees the call.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Authenticator,
}

impl<S> Authenticate<S> {
    /// `inner` behind `auth`.
    pub fn new(inner: S, auth: Authenticator) -> Self {
        Self { inner, auth }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authenticate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Authenticate<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<http::Response<R>, S::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.auth.authenticate(request.headers()) {
            Ok(caller) => {
                // A token names the caller; without one, a client certificate does.
                if let Some(caller) = caller.or_else(|| tls_caller(request.extensions())) {
                    request.extensions_mut().insert(caller);
                }
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// The caller a client certificate names: its subject as an RFC 4514 string
/// (`CN=ris-gateway,O=Hospital`), for a call that carries no bearer token over mutual TLS. The
/// certificate was verified against the client CA during the handshake; characters that could
/// forge a log line are replaced.
pub fn certificate_caller(der: &[u8]) -> Option<Caller> {
    use x509_cert::der::Decode;
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    let subject = certificate.tbs_certificate.subject.to_string();
    if subject.is_empty() {
        return None;
    }
    let subject: String = subject
        .chars()
        .map(|c| {
            if crate::core::violation::unsafe_char(c.encode_utf8(&mut [0; 4])).is_some() {
                '?'
            } else {
                c
            }
        })
        .collect();
    Some(Caller(subject))
}

/// The caller of a request when no token named one: the subject of the client certificate of a
/// mutual-TLS connection, if there is one.
pub fn tls_caller(extensions: &http::Extensions) -> Option<Caller> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certificates = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    certificate_caller(certificates.first()?.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile_path::TempFile {
        tempfile_path::TempFile::new(text)
    }

    mod tempfile_path {
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(text: &str) -> TempFile {
                let path =
                    std::env::temp_dir().join(format!("vlms-rt-tokens-{}", uuid::Uuid::new_v4()));
                std::fs::write(&path, text).expect("write");
                TempFile(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn tokens_map_to_callers_and_nothing_else_does() {
        let tokens = file(&format!(
            "# callers\nris-gateway:{}\n\ntps:{}\n",
            token_sha256_hex("alpha"),
            token_sha256_hex("beta")
        ));
        let store = TokenStore::load(&tokens.0).expect("valid");
        assert_eq!(store.caller_for("alpha").as_deref(), Some("ris-gateway"));
        assert_eq!(store.caller_for("beta").as_deref(), Some("tps"));
        assert_eq!(store.caller_for("gamma"), None);
        assert_eq!(store.caller_for(""), None);
        assert_eq!(
            store.caller_for(&token_sha256_hex("alpha")),
            None,
            "the hash itself is no token"
        );
    }

    #[test]
    fn bad_token_files_are_refused_with_the_line() {
        let hash = token_sha256_hex("x");
        for (text, expected) in [
            ("no-colon\n", "line 1"),
            (
                &format!("a:{hash}\nb:{}\nc:{hash}\n", token_sha256_hex("y")),
                "line 3: this token hash is already listed on line 1 (caller a)",
            ),
            (
                &format!("a:{hash}\n# again\na:{hash}\n"),
                "already listed on line 1",
            ),
            ("name:abc\n", "64 hex digits"),
            (
                &format!("bad name:{}\n", token_sha256_hex("x")),
                "caller name",
            ),
        ] {
            let tokens = file(text);
            let error = TokenStore::load(&tokens.0).expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_file_without_tokens_revokes_every_token() {
        let tokens = file(&format!("tps:{}\n", token_sha256_hex("alpha")));
        let store = TokenStore::load(&tokens.0).expect("valid");
        assert_eq!(store.caller_for("alpha").as_deref(), Some("tps"));
        for emptied in ["", "# every token revoked\n", "\n  \n"] {
            std::fs::write(&tokens.0, emptied).expect("write");
            assert_eq!(store.reload().expect("an empty file is a valid file"), 0);
            assert!(store.is_empty());
            assert_eq!(store.caller_for("alpha"), None, "{emptied:?}");
        }
        // A broken file keeps what is in force (here: nothing), and says why.
        std::fs::write(&tokens.0, "broken\n").expect("write");
        assert!(store.reload().is_err());
        assert!(store.is_empty());
        let empty = file("# nobody yet\n");
        assert!(TokenStore::load(&empty.0).expect("loads").is_empty());
    }
}
