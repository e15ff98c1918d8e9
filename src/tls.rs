//! Checks of the server's TLS files before anything else starts: each file parses as what it
//! should hold, the key belongs to the certificate, and the certificate's validity period is
//! known (a certificate outside it is reported, not refused: an operator may be rotating it).
//! A problem names the file and what is wrong with it, so that a swapped, mismatched or garbage
//! file stops start-up with a message instead of a transport error after the audit store opened.

use std::path::Path;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_cert::der::Decode;

/// What was found in valid TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateValidity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertificateValidity {
    /// Why the certificate is not valid at `now`, if it is not.
    pub fn problem_at(&self, now: SystemTime) -> Option<&'static str> {
        if now < self.not_before {
            Some("is not valid yet")
        } else if now > self.not_after {
            Some("has expired")
        } else {
            None
        }
    }
}

fn certificates(
    pem: &[u8],
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certificates {
        Ok(certificates) if !certificates.is_empty() => Ok(certificates),
        Ok(_) => Err(format!(
            "{what} {} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
            path.display()
        )),
        Err(error) => Err(format!(
            "{what} {} is not a PEM certificate file: {error}",
            path.display()
        )),
    }
}

fn validity_of(
    certificate: &CertificateDer<'_>,
    path: &Path,
) -> Result<CertificateValidity, String> {
    let parsed = x509_cert::Certificate::from_der(certificate.as_ref()).map_err(|error| {
        format!(
            "TLS certificate {} is not an X.509 certificate: {error}",
            path.display()
        )
    })?;
    let period = &parsed.tbs_certificate.validity;
    let time = |time: &x509_cert::time::Time| SystemTime::UNIX_EPOCH + time.to_unix_duration();
    Ok(CertificateValidity {
        not_before: time(&period.not_before),
        not_after: time(&period.not_after),
    })
}

/// Checks the server's certificate chain (`cert_pem`, read from `cert_path`), its private key
/// (`key_pem`, from `key_path`) and, for mutual TLS, the client CA (`client_ca`): every file is
/// what it should be and the key is the certificate's. Returns the certificate's validity period.
pub fn check(
    (cert_path, cert_pem): (&Path, &[u8]),
    (key_path, key_pem): (&Path, &[u8]),
    client_ca: Option<(&Path, &[u8])>,
) -> Result<CertificateValidity, String> {
    let chain = certificates(cert_pem, cert_path, "TLS certificate")?;
    let validity = validity_of(&chain[0], cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| {
        format!(
            "TLS key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {error}",
            key_path.display()
        )
    })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|error| {
        format!(
            "TLS key {} is not a usable private key: {error}",
            key_path.display()
        )
    })?;
    rustls::sign::CertifiedKey::new(chain, signing_key)
        .keys_match()
        .map_err(|error| {
            format!(
                "TLS key {} does not belong to the certificate {} ({error})",
                key_path.display(),
                cert_path.display()
            )
        })?;
    if let Some((ca_path, ca_pem)) = client_ca {
        for certificate in certificates(ca_pem, ca_path, "client CA")? {
            validity_of(&certificate, ca_path)?;
        }
    }
    Ok(validity)
}

/// Days from `now` to `until` (negative when past), for messages.
pub fn days_between(now: SystemTime, until: SystemTime) -> i64 {
    let seconds = match until.duration_since(now) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
        Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
    };
    seconds / 86_400
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn good_files_pass_and_bad_ones_are_named() {
        let (cert, key) = pair();
        let (other_cert, other_key) = pair();
        let (c, k, ca) = (Path::new("c.pem"), Path::new("k.pem"), Path::new("ca.pem"));
        let validity = check((c, cert.as_bytes()), (k, key.as_bytes()), None).expect("valid");
        assert!(validity.problem_at(SystemTime::now()).is_none());
        let cases: [(&str, &str, Option<&str>, &str); 6] = [
            (
                &cert,
                &other_key,
                None,
                "TLS key k.pem does not belong to the certificate c.pem",
            ),
            (
                &key,
                &cert,
                None,
                "TLS certificate c.pem holds no PEM certificate",
            ),
            (
                "garbage",
                &key,
                None,
                "TLS certificate c.pem holds no PEM certificate",
            ),
            (
                &cert,
                "garbage",
                None,
                "TLS key k.pem holds no PEM private key",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &key,
                None,
                "TLS certificate c.pem is not an X.509 certificate",
            ),
            (
                &cert,
                &key,
                Some(&other_key),
                "client CA ca.pem holds no PEM certificate",
            ),
        ];
        for (cert_pem, key_pem, ca_pem, expected) in cases {
            let error = check(
                (c, cert_pem.as_bytes()),
                (k, key_pem.as_bytes()),
                ca_pem.map(|pem| (ca, pem.as_bytes())),
            )
            .expect_err(expected);
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let _ = other_cert;
    }

    #[test]
    fn validity_is_reported_against_now() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let validity = CertificateValidity {
            not_before: now - day,
            not_after: now + day,
        };
        assert_eq!(validity.problem_at(now), None);
        assert_eq!(validity.problem_at(now + 2 * day), Some("has expired"));
        assert_eq!(validity.problem_at(now - 2 * day), Some("is not valid yet"));
        assert_eq!(days_between(now, now + 3 * day + Duration::from_secs(5)), 3);
        assert_eq!(
            days_between(now, now - 3 * day - Duration::from_secs(5)),
            -3
        );
    }
}
