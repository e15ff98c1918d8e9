//! Fetching what the CDS client did not prefetch, from the client's own FHIR server with the
//! access token it gave (`fhirServer` + `fhirAuthorization`): HTTPS only (plain HTTP only to a
//! loopback address, and only when configured, for tests), every query bounded in time and size,
//! searchset pages followed on the same server up to a bound. Any failure is reported, never
//! papered over: the front then answers 412 as for an omitted key.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use serde_json::Value;

/// How the front may fetch.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Allow `http://` to a loopback address (tests, a local sandbox); never to anything else.
    pub allow_loopback_http: bool,
    /// The whole fetch of one prefetch key, pages included.
    pub timeout: Duration,
    /// Largest response body of one page.
    pub max_bytes: usize,
    /// Most pages followed for one search.
    pub max_pages: usize,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allow_loopback_http: false,
            timeout: Duration::from_secs(10),
            max_bytes: 8 * 1024 * 1024,
            max_pages: 20,
        }
    }
}

/// A FHIR server and the bearer token to read it with.
pub struct Source<'a> {
    pub base: &'a str,
    pub token: &'a str,
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_or_else(
        |_| unreachable!("ring supports the default protocol versions"),
        |builder| builder.with_root_certificates(roots).with_no_client_auth(),
    );
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Fetches `query` (relative to the FHIR base, e.g. `Observation?patient=p1&code=…`) and, for a
/// search, every following page: the result is one resource, or one searchset Bundle holding
/// every page's entries.
pub async fn fetch(
    policy: &FetchPolicy,
    source: &Source<'_>,
    query: &str,
) -> Result<Value, String> {
    let url = format!("{}/{}", source.base.trim_end_matches('/'), query);
    tokio::time::timeout(policy.timeout, fetch_all(policy, source, url))
        .await
        .map_err(|_| {
            format!(
                "the FHIR server did not answer within {} s",
                policy.timeout.as_secs_f64()
            )
        })?
}

async fn fetch_all(
    policy: &FetchPolicy,
    source: &Source<'_>,
    url: String,
) -> Result<Value, String> {
    let mut first = get(policy, source, &url).await?;
    if first.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Ok(first);
    }
    let mut pages = 1;
    while let Some(next) = next_link(&first) {
        if pages >= policy.max_pages {
            return Err(format!(
                "the search has more than {} pages",
                policy.max_pages
            ));
        }
        if !same_server(source.base, &next) {
            return Err(format!(
                "a next page is on another server ({})",
                origin_of(&next)
            ));
        }
        let page = get(policy, source, &next).await?;
        pages += 1;
        let entries: Vec<Value> = page
            .get("entry")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !entries.is_empty() {
            match first.get_mut("entry").and_then(Value::as_array_mut) {
                Some(list) => list.extend(entries),
                None => first["entry"] = Value::Array(entries),
            }
        }
        first["link"] = page.get("link").cloned().unwrap_or(Value::Null);
    }
    if let Some(object) = first.as_object_mut() {
        object.remove("link");
    }
    Ok(first)
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|link| link.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
        .map(str::to_string)
}

fn same_server(base: &str, url: &str) -> bool {
    let origin = |text: &str| {
        text.parse::<http::Uri>()
            .ok()
            .and_then(|uri| Some((uri.scheme_str()?.to_string(), uri.authority()?.to_string())))
    };
    origin(base).is_some_and(|base| origin(url) == Some(base))
}

/// `scheme://host:port` of a URL, for messages (a query or path can name the patient).
fn origin_of(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|uri| Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?)))
        .unwrap_or_else(|| "the FHIR server".to_string())
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One GET, bounded in size, answered 200 with JSON.
async fn get(policy: &FetchPolicy, source: &Source<'_>, url: &str) -> Result<Value, String> {
    // Errors name the server, never the query: it holds the patient's id, and errors are logged.
    let server = origin_of(url);
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "the FHIR server's address is not a URL".to_string())?;
    let host = uri
        .host()
        .ok_or_else(|| format!("no host in {server}"))?
        .to_string();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if policy.allow_loopback_http && is_loopback(&host) => false,
        _ => {
            return Err(format!(
                "refusing {server}: the FHIR server must be reached over https"
            ));
        }
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|error| format!("cannot connect to {host}:{port}: {error}"))?;
    let _ = tcp.set_nodelay(true);
    let request = http::Request::builder()
        .method("GET")
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/fhir+json")
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", source.token),
        )
        .body(Empty::<axum::body::Bytes>::new())
        .map_err(|error| format!("cannot build the request: {error}"))?;
    let response = if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| format!("not a server name: {host}"))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|error| format!("TLS to {host}: {error}"))?;
        send(hyper_util::rt::TokioIo::new(tls), request).await?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request).await?
    };
    let status = response.status();
    let body = Limited::new(response.into_body(), policy.max_bytes)
        .collect()
        .await
        .map_err(|error| {
            format!(
                "reading from {server}: {error} (limit {} bytes)",
                policy.max_bytes
            )
        })?
        .to_bytes();
    if status != http::StatusCode::OK {
        return Err(format!("{server} answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|error| format!("{server} did not answer JSON: {error}"))
}

async fn send<T>(
    io: T,
    request: http::Request<Empty<axum::body::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| format!("HTTP handshake: {error}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|error| format!("HTTP request: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_loopback() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("[::1]"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.1"));
        assert!(!is_loopback("ehr.example.org"));
    }

    #[test]
    fn next_pages_must_stay_on_the_server() {
        assert!(same_server(
            "https://ehr.example.org/fhir",
            "https://ehr.example.org/fhir?page=2"
        ));
        assert!(!same_server(
            "https://ehr.example.org/fhir",
            "https://evil.example.org/fhir?page=2"
        ));
        assert!(!same_server(
            "https://ehr.example.org/fhir",
            "http://ehr.example.org/fhir?page=2"
        ));
    }

    #[tokio::test]
    async fn plain_http_is_refused_unless_loopback_and_allowed() {
        let source = Source {
            base: "http://ehr.example.org/fhir",
            token: "t",
        };
        let policy = FetchPolicy {
            allow_loopback_http: true,
            ..FetchPolicy::default()
        };
        let error = fetch(&policy, &source, "Patient/p1")
            .await
            .expect_err("refused");
        assert!(error.contains("https"), "{error}");
        let source = Source {
            base: "http://127.0.0.1:9/fhir",
            token: "t",
        };
        let error = fetch(&FetchPolicy::default(), &source, "Patient/p1")
            .await
            .expect_err("refused");
        assert!(error.contains("https"), "{error}");
    }
}
