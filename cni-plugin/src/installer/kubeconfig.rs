//! The plugin's kubeconfig, built from the installer's ServiceAccount token and cluster CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::json;

use super::files::{self, FilesError};

/// Where the token and CA come from and which API server address the plugin uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigSource {
    pub token_path: PathBuf,
    pub ca_path: PathBuf,
    /// `https://host:port`.
    pub server: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("ServiceAccount file {path} is missing")]
    Missing { path: PathBuf },
    #[error("ServiceAccount token in {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("reading ServiceAccount files")]
    Files(#[from] FilesError),
    #[error("encoding kubeconfig")]
    Encode(#[from] serde_yaml_ng::Error),
}

/// `https://host:port`, with brackets around IPv6 addresses.
pub fn server_url(host: &str, port: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:{port}"),
        _ => format!("https://{host}:{port}"),
    }
}

/// The kubeconfig text for `token`, `ca_pem` and `server`.
pub fn render(token: &str, ca_pem: &[u8], server: &str) -> Result<String, KubeconfigError> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "outrigger-cni", "user": {"token": token}}],
        "contexts": [{"name": "outrigger-cni", "context": {"cluster": "local", "user": "outrigger-cni"}}],
        "current-context": "outrigger-cni",
    });
    Ok(serde_yaml_ng::to_string(&doc)?)
}

impl KubeconfigSource {
    /// Reads the token and CA and renders the kubeconfig.
    pub fn load(&self) -> Result<String, KubeconfigError> {
        let read = |path: &Path| {
            files::read_optional(path)?.ok_or_else(|| KubeconfigError::Missing {
                path: path.to_owned(),
            })
        };
        let token = String::from_utf8_lossy(&read(&self.token_path)?)
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(KubeconfigError::EmptyToken {
                path: self.token_path.clone(),
            });
        }
        let ca = read(&self.ca_path)?;
        render(&token, &ca, &self.server)
    }

    /// Writes the kubeconfig to `dest` (mode 0600) when its content differs; true when written.
    pub fn sync(&self, dest: &Path) -> Result<bool, KubeconfigError> {
        let text = self.load()?;
        if files::read_optional(dest)?.as_deref() == Some(text.as_bytes()) {
            return Ok(false);
        }
        files::write_atomic(dest, text.as_bytes(), 0o600)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(server_url("10.96.0.1", "443"), "https://10.96.0.1:443");
        assert_eq!(server_url("fd00::1", "6443"), "https://[fd00::1]:6443");
        assert_eq!(
            server_url("kubernetes.default.svc", "443"),
            "https://kubernetes.default.svc:443"
        );
    }

    #[test]
    fn rendered_kubeconfig_is_readable_by_kube_rs() {
        let text = render(
            "tok-123",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "https://10.96.0.1:443",
        )
        .unwrap();
        let parsed = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("outrigger-cni"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.as_ref().unwrap())
            .unwrap();
        assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(
            parsed.auth_infos[0]
                .auth_info
                .as_ref()
                .unwrap()
                .token
                .is_some()
        );
        assert!(text.contains("token: tok-123"), "{text}");
    }

    /// A source reading `token` and `ca.crt` in `dir`.
    fn source_in(dir: &Path, server: &str) -> KubeconfigSource {
        KubeconfigSource {
            token_path: dir.join("token"),
            ca_path: dir.join("ca.crt"),
            server: server.into(),
        }
    }

    #[test]
    fn sync_rewrites_only_when_the_token_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_in(dir.path(), "https://10.96.0.1:443");
        let dest = dir.path().join("outrigger-cni-kubeconfig");
        std::fs::write(&source.token_path, "first\n").unwrap();
        std::fs::write(&source.ca_path, "CA").unwrap();
        assert!(source.sync(&dest).unwrap());
        assert!(!source.sync(&dest).unwrap());
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&source.token_path, "second").unwrap();
        assert!(source.sync(&dest).unwrap());
        let text = std::fs::read_to_string(&dest).unwrap();
        assert!(text.contains("second") && !text.contains("first"), "{text}");
    }

    #[test]
    fn missing_or_empty_token_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_in(dir.path(), "https://x:1");
        assert!(matches!(
            source.load().unwrap_err(),
            KubeconfigError::Missing { .. }
        ));
        std::fs::write(&source.token_path, "  \n").unwrap();
        assert!(matches!(
            source.load().unwrap_err(),
            KubeconfigError::EmptyToken { .. }
        ));
    }
}
