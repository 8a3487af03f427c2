//! How `DATABASE_URL` asks to reach PostgreSQL over TLS: its `sslmode` (and `sslrootcert`), read
//! as libpq reads them, with rustls underneath (tokio-postgres-rustls).
//!
//! | `sslmode` | encrypted | server certificate checked |
//! | --- | --- | --- |
//! | `disable` | no | - |
//! | `prefer` (the default, as in libpq) | if the server offers TLS | no |
//! | `require` | yes, or the connection fails | no (as libpq without a root certificate) |
//! | `verify-ca` | yes | chain to `sslrootcert` |
//! | `verify-full` | yes | chain to `sslrootcert` and the host name |
//!
//! `sslrootcert` names a PEM file of trusted roots (libpq's default `~/.postgresql/root.crt` when
//! absent). tokio-postgres itself knows only `disable`, `prefer` and `require`, so both
//! parameters are taken out of the URL before it is parsed.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres::config::SslMode;
use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS connector every PostgreSQL connection of ours uses.
pub type Tls = MakeRustlsConnect;

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Result<Self, TlsError> {
        Ok(match text {
            "disable" => Self::Disable,
            "prefer" | "allow" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => return Err(TlsError::Mode(other.to_owned())),
        })
    }
}

/// Why the URL's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslmode={0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    Mode(String),
    #[error("sslmode={mode} needs trusted roots: cannot read sslrootcert {path}: {reason}")]
    RootCert {
        mode: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Splits `url` into what tokio-postgres parses and the TLS it asks for.
pub fn split_url(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut keep = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_owned());
            false
        }
        "sslrootcert" => {
            root = Some(value.to_owned());
            false
        }
        _ => true,
    };
    let rest = if url.contains("://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        keep(key, value)
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                keep(key.trim(), value.trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root)
}

/// Sets `config`'s TLS mode and builds the connector for `sslmode` / `sslrootcert`.
pub fn connector(
    config: &mut Config,
    mode: Option<&str>,
    root: Option<&str>,
) -> Result<Tls, TlsError> {
    let mode = mode.map(Mode::parse).transpose()?.unwrap_or(Mode::Prefer);
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        Mode::Disable | Mode::Prefer | Mode::Require => Arc::new(Lenient {
            chain: None,
            provider,
        }),
        Mode::VerifyCa | Mode::VerifyFull => {
            let name = if mode == Mode::VerifyCa {
                "verify-ca"
            } else {
                "verify-full"
            };
            let roots = roots(name, root)?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|err| TlsError::Rustls(rustls::Error::General(err.to_string())))?;
            if mode == Mode::VerifyCa {
                Arc::new(Lenient {
                    chain: Some(webpki),
                    provider,
                })
            } else {
                webpki
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn roots(mode: &'static str, root: Option<&str>) -> Result<RootCertStore, TlsError> {
    let path = match root {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".postgresql/root.crt"),
    };
    let failed = |reason: String| TlsError::RootCert {
        mode,
        path: path.clone(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .map_err(|err| failed(err.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|err| failed(err.to_string()))?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(failed("no certificate in it".into()));
    }
    Ok(store)
}

/// `prefer`, `require` and `verify-ca`: encrypted, and handshake signatures verified always;
/// with `chain` (`verify-ca`) the certificate must lead to a trusted root, though it may name
/// another host; without (`prefer`, `require`) the certificate is not checked, as libpq does
/// without a root certificate. `verify-full` uses rustls's own verifier instead.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_leave_the_url() {
        assert_eq!(
            split_url(
                "postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=/r.pem&application_name=x"
            ),
            (
                "postgres://u@h:5432/db?application_name=x".to_owned(),
                Some("verify-full".to_owned()),
                Some("/r.pem".to_owned())
            )
        );
        assert_eq!(
            split_url("postgres://u@h/db?sslmode=require"),
            (
                "postgres://u@h/db".to_owned(),
                Some("require".to_owned()),
                None
            )
        );
        assert_eq!(
            split_url("host=h dbname=db sslmode=disable"),
            (
                "host=h dbname=db".to_owned(),
                Some("disable".to_owned()),
                None
            )
        );
        assert_eq!(
            split_url("postgres://h/db"),
            ("postgres://h/db".to_owned(), None, None)
        );
    }

    #[test]
    fn an_unknown_sslmode_is_refused() {
        let mut config = Config::new();
        let Err(err) = connector(&mut config, Some("verify"), None) else {
            panic!("an unknown sslmode was accepted");
        };
        assert!(err.to_string().contains("sslmode=\"verify\""), "{err}");
    }
}
