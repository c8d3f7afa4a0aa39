//! rustls server configuration with a certificate resolver that reloads the PEM files in place.
//!
//! Each handshake takes the certificate current at that moment; connections already
//! established keep the one they started with, so a rotation never breaks a request.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocols offered: HTTP/2 (the API server prefers it) and HTTP/1.1.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Failure to load or use the serving certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a valid PEM certificate chain")]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} is not a valid PEM private key")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the key in {key} does not match the certificate in {cert}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
}

/// Where the serving certificate chain and key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPaths {
    /// Directories to watch for a rotation (parents of both files, deduplicated).
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.cert, &self.key]
            .iter()
            .map(|p| parent_dir(p))
            .collect();
        dirs.dedup();
        dirs
    }
}

pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parse a PEM chain + key pair and check that they belong together.
pub fn parse_certified_key(
    paths: &CertPaths,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadCertificate {
            path: paths.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: paths.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::BadKey {
        path: paths.key.clone(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Mismatch {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        source,
    })
}

/// Serves the current certificate; [`ReloadingResolver::reload`] swaps it atomically.
pub struct ReloadingResolver {
    paths: CertPaths,
    current: ArcSwap<CertifiedKey>,
    /// The PEM bytes behind `current` and the last refused ones, to skip reloads that change
    /// nothing (and to report a broken pair once, not on every event).
    files: Mutex<Files>,
}

#[derive(Default)]
struct Files {
    loaded: (Vec<u8>, Vec<u8>),
    refused: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl ReloadingResolver {
    /// Load the files once; fails if they are unusable.
    pub fn load(paths: CertPaths) -> Result<Self, TlsError> {
        let cert_pem = read(&paths.cert)?;
        let key_pem = read(&paths.key)?;
        let key = parse_certified_key(&paths, &cert_pem, &key_pem)?;
        Ok(ReloadingResolver {
            paths,
            current: ArcSwap::from_pointee(key),
            files: Mutex::new(Files {
                loaded: (cert_pem, key_pem),
                refused: None,
            }),
        })
    }

    pub fn paths(&self) -> &CertPaths {
        &self.paths
    }

    /// Re-read the files. `Ok(true)` if a new certificate is now served, `Ok(false)` if the
    /// files did not change (or are the pair already refused); on error the previous
    /// certificate stays in service.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let pair = (read(&self.paths.cert)?, read(&self.paths.key)?);
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.loaded == pair || files.refused.as_ref() == Some(&pair) {
            return Ok(false);
        }
        match parse_certified_key(&self.paths, &pair.0, &pair.1) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                *files = Files {
                    loaded: pair,
                    refused: None,
                };
                Ok(true)
            }
            Err(error) => {
                files.refused = Some(pair);
                Err(error)
            }
        }
    }

    /// The certificate chain currently served (leaf first).
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 + 1.3 server configuration (ring) around the resolver.
pub fn server_config(resolver: Arc<ReloadingResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::selfsigned::{ServiceNames, generate};

    fn write_pair(dir: &Path, names: &ServiceNames) -> CertPaths {
        let bundle = generate(names).unwrap();
        let paths = CertPaths {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&paths.cert, &bundle.cert_pem).unwrap();
        std::fs::write(&paths.key, &bundle.key_pem).unwrap();
        paths
    }

    #[test]
    fn reload_swaps_only_on_change_and_keeps_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let names = ServiceNames::default();
        let paths = write_pair(dir.path(), &names);
        let resolver = ReloadingResolver::load(paths.clone()).unwrap();
        let first = resolver.current_chain();
        assert!(
            !resolver.reload().unwrap(),
            "unchanged files must not reload"
        );

        write_pair(dir.path(), &names);
        assert!(resolver.reload().unwrap());
        let second = resolver.current_chain();
        assert_ne!(first, second);

        std::fs::write(&paths.key, b"garbage").unwrap();
        let err = resolver.reload().unwrap_err();
        assert!(matches!(err, TlsError::BadKey { .. }), "{err}");
        assert_eq!(resolver.current_chain(), second);
        assert!(
            !resolver.reload().unwrap(),
            "the same broken pair is refused once"
        );
        assert_eq!(resolver.current_chain(), second);
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let names = ServiceNames::default();
        let paths = write_pair(dir.path(), &names);
        let other = generate(&names).unwrap();
        std::fs::write(&paths.key, &other.key_pem).unwrap();
        let err = ReloadingResolver::load(paths).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn missing_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths {
            cert: dir.path().join("none.crt"),
            key: dir.path().join("none.key"),
        };
        assert!(matches!(
            ReloadingResolver::load(paths.clone()).unwrap_err(),
            TlsError::Read { .. }
        ));
        std::fs::write(&paths.cert, b"").unwrap();
        std::fs::write(&paths.key, b"").unwrap();
        assert!(matches!(
            ReloadingResolver::load(paths).unwrap_err(),
            TlsError::NoCertificate { .. }
        ));
    }
}
