//! Development certificates: a CA and a serving certificate generated with rcgen into a directory
//! (`ca.crt`, `tls.crt`, `tls.key`), reused when they already exist.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::tls::CertPaths;

/// File name of the CA certificate.
pub const CA_FILE: &str = "ca.crt";
/// File name of the serving certificate.
pub const CERT_FILE: &str = "tls.crt";
/// File name of the serving key.
pub const KEY_FILE: &str = "tls.key";
/// Default Service name of the injector.
pub const DEFAULT_SERVICE: &str = "outrigger-injector";
/// Default namespace of the injector.
pub const DEFAULT_NAMESPACE: &str = "outrigger-system";

/// Failure to create the development certificates.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    #[error("cannot generate the certificates")]
    Generate(#[source] rcgen::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The Service the certificate must be valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    pub service: String,
    pub namespace: String,
}

impl Default for ServiceNames {
    fn default() -> Self {
        ServiceNames {
            service: DEFAULT_SERVICE.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }
}

impl ServiceNames {
    /// Subject alternative names of the serving certificate.
    pub fn subject_alt_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.service, &self.namespace);
        vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            svc.clone(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ]
    }
}

/// PEM texts of a freshly generated CA and serving pair.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA certificate and its key (PEM).
#[derive(Debug, Clone)]
pub struct CaPair {
    pub cert_pem: String,
    pub key_pem: String,
}

fn ca_params() -> Result<CertificateParams, SelfSignedError> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(SelfSignedError::Generate)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(DnType::CommonName, "outrigger-injector CA");
    Ok(ca)
}

/// Generate a CA (pure, nothing written).
pub fn generate_ca() -> Result<CaPair, SelfSignedError> {
    let ca_key = KeyPair::generate().map_err(SelfSignedError::Generate)?;
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .map_err(SelfSignedError::Generate)?;
    Ok(CaPair {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    })
}

/// Issue a serving certificate for `names` from `ca` (pure, nothing written).
pub fn issue(ca: &CaPair, names: &ServiceNames) -> Result<Bundle, SelfSignedError> {
    // The issuer is rebuilt from the CA's parameters and key (its subject and key identifier
    // follow from them), so the CA certificate need not be parsed: a CA made by
    // [`generate_ca`] in any replica issues certificates that verify against it.
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(SelfSignedError::Generate)?;
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let key = KeyPair::generate().map_err(SelfSignedError::Generate)?;
    let mut leaf =
        CertificateParams::new(names.subject_alt_names()).map_err(SelfSignedError::Generate)?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        format!("{}.{}.svc", names.service, names.namespace),
    );
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf
        .signed_by(&key, &issuer)
        .map_err(SelfSignedError::Generate)?;
    Ok(Bundle {
        ca_pem: ca.cert_pem.clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Generate a CA and a serving certificate signed by it (pure, nothing written).
pub fn generate(names: &ServiceNames) -> Result<Bundle, SelfSignedError> {
    issue(&generate_ca()?, names)
}

/// Write `ca` and a serving certificate issued from it into `dir` (replacing what is there).
pub fn write_issued(
    dir: &Path,
    ca: &CaPair,
    names: &ServiceNames,
) -> Result<SelfSignedFiles, SelfSignedError> {
    let files = SelfSignedFiles::in_dir(dir);
    std::fs::create_dir_all(dir).map_err(|source| SelfSignedError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_bundle(&files, &issue(ca, names)?)?;
    Ok(files)
}

fn write_bundle(files: &SelfSignedFiles, bundle: &Bundle) -> Result<(), SelfSignedError> {
    // The key first and the certificate last, each replaced atomically.
    write_atomic(&files.serving.key, bundle.key_pem.as_bytes(), 0o600)?;
    write_atomic(&files.ca, bundle.ca_pem.as_bytes(), 0o644)?;
    write_atomic(&files.serving.cert, bundle.cert_pem.as_bytes(), 0o644)
}

/// The three files of a self-signed directory.
#[derive(Debug, Clone)]
pub struct SelfSignedFiles {
    pub ca: PathBuf,
    pub serving: CertPaths,
}

impl SelfSignedFiles {
    pub fn in_dir(dir: &Path) -> Self {
        SelfSignedFiles {
            ca: dir.join(CA_FILE),
            serving: CertPaths {
                cert: dir.join(CERT_FILE),
                key: dir.join(KEY_FILE),
            },
        }
    }

    fn all_exist(&self) -> bool {
        [&self.ca, &self.serving.cert, &self.serving.key]
            .iter()
            .all(|p| p.is_file())
    }
}

/// Make sure `dir` holds a CA and serving pair; generate them unless all three exist.
/// Returns the paths and whether new files were written.
pub fn ensure(
    dir: &Path,
    names: &ServiceNames,
) -> Result<(SelfSignedFiles, bool), SelfSignedError> {
    let files = SelfSignedFiles::in_dir(dir);
    if files.all_exist() {
        return Ok((files, false));
    }
    std::fs::create_dir_all(dir).map_err(|source| SelfSignedError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_bundle(&files, &generate(names)?)?;
    Ok((files, true))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SelfSignedError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| SelfSignedError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tls::ReloadingResolver;

    #[test]
    fn certificates_issued_from_one_ca_in_two_places_verify_against_it() {
        let ca = generate_ca().unwrap();
        let names = ServiceNames::default();
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject as _;
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
            .unwrap();
        use rustls::client::danger::ServerCertVerifier as _;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        for _ in 0..2 {
            let bundle = issue(&ca, &names).unwrap();
            let leaf =
                rustls::pki_types::CertificateDer::from_pem_slice(bundle.cert_pem.as_bytes())
                    .unwrap();
            let name =
                rustls::pki_types::ServerName::try_from("outrigger-injector.outrigger-system.svc")
                    .unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
                .expect("verifies against the shared CA");
        }
    }

    #[test]
    fn creates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("certs");
        let names = ServiceNames::default();
        let (files, created) = ensure(&target, &names).unwrap();
        assert!(created);
        let before = std::fs::read(&files.serving.cert).unwrap();
        let (files, created) = ensure(&target, &names).unwrap();
        assert!(!created);
        assert_eq!(std::fs::read(&files.serving.cert).unwrap(), before);
        // The pair is usable by the server.
        ReloadingResolver::load(files.serving.clone()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&files.serving.key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn sans_cover_local_and_service_names() {
        let names = ServiceNames {
            service: "inj".into(),
            namespace: "mesh".into(),
        };
        assert_eq!(
            names.subject_alt_names(),
            [
                "localhost",
                "127.0.0.1",
                "inj",
                "inj.mesh",
                "inj.mesh.svc",
                "inj.mesh.svc.cluster.local"
            ]
        );
    }
}
