//! Merged metrics on the status port: the proxy's own plus the application's, scraped from the
//! target(s) the injector recorded in `ISTIO_PROMETHEUS_ANNOTATIONS`.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use http::Request;
use http_body_util::Full;
use outrigger_api::proxy_env::{EnvFormatError, PrometheusScrape};

use crate::client::{self, Wire};
use crate::names::APP_SCRAPE_TIMEOUT;
use crate::status::probes::local_app_source;

/// The application's scrape targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeConfig {
    pub targets: Vec<ScrapeTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub port: u16,
    pub path: String,
}

impl ScrapeConfig {
    /// Reads `ISTIO_PROMETHEUS_ANNOTATIONS` (the format of
    /// [`outrigger_api::proxy_env::PrometheusScrape`]); `None` when there is nothing to merge.
    pub fn from_json(json: &str) -> Result<Option<Self>, EnvFormatError> {
        PrometheusScrape::from_json(json).map(|scrape| ScrapeConfig::from_settings(&scrape))
    }

    /// `None` when scraping is off or no port is known (nothing of the app's to merge).
    /// `targets` replaces `port`/`path`; a missing path is `/metrics`.
    pub fn from_settings(scrape: &PrometheusScrape) -> Option<Self> {
        if !scrape.is_on() {
            return None;
        }
        let targets: Vec<ScrapeTarget> = match &scrape.targets {
            Some(targets) => targets
                .iter()
                .map(|t| ScrapeTarget::new(t.port, t.path.as_deref()))
                .collect(),
            None => scrape
                .port
                .map(|port| ScrapeTarget::new(port, scrape.path.as_deref()))
                .into_iter()
                .collect(),
        };
        (!targets.is_empty()).then_some(ScrapeConfig { targets })
    }
}

impl ScrapeTarget {
    fn new(port: u16, path: Option<&str>) -> Self {
        ScrapeTarget {
            port,
            path: match path {
                None | Some("") => "/metrics".to_owned(),
                Some(p) if p.starts_with('/') => p.to_owned(),
                Some(p) => format!("/{p}"),
            },
        }
    }
}

/// The proxy's exposition without its OpenMetrics `# EOF` terminator, then each target's body.
/// A target that cannot be scraped is logged and left out, so the proxy's own metrics survive.
pub async fn merged(own: &str, scrape: Option<&ScrapeConfig>, app_ip: IpAddr) -> String {
    let mut out = own.strip_suffix("# EOF\n").unwrap_or(own).to_owned();
    for target in scrape.map(|s| s.targets.as_slice()).unwrap_or_default() {
        let addr = SocketAddr::new(app_ip, target.port);
        match scrape_one(addr, &target.path).await {
            Ok(body) => {
                out.push_str(&body);
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            Err(reason) => {
                tracing::warn!(target = %addr, path = %target.path, %reason, "app metrics scrape failed");
            }
        }
    }
    out
}

async fn scrape_one(addr: SocketAddr, path: &str) -> Result<String, String> {
    let request = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::ACCEPT, "text/plain;version=0.0.4")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("invalid request: {e}"))?;
    let send = client::send(addr, local_app_source(addr.ip()), Wire::Http1, request);
    let reply = tokio::time::timeout(APP_SCRAPE_TIMEOUT, send)
        .await
        .map_err(|_| format!("timed out after {APP_SCRAPE_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    if !reply.status.is_success() {
        return Err(format!("returned {}", reply.status));
    }
    String::from_utf8(reply.body.to_vec()).map_err(|_| "body is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_target_from_port_and_path() {
        let config = ScrapeConfig::from_json(r#"{"scrape":"true","path":"/stats","port":"8080"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            config.targets,
            vec![ScrapeTarget {
                port: 8080,
                path: "/stats".into()
            }]
        );
    }

    #[test]
    fn explicit_targets_win() {
        let config = ScrapeConfig::from_json(
            r#"{"scrape":"true","path":"/metrics","port":"8080","targets":[{"port":"8080","path":"/metrics"},{"port":"9100","path":"custom"}]}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.targets[1].path, "/custom");
        assert_eq!(config.targets[1].port, 9100);
    }

    #[test]
    fn scrape_off_or_bad_input() {
        assert_eq!(
            ScrapeConfig::from_json(r#"{"scrape":"false","port":"80"}"#).unwrap(),
            None
        );
        let error = ScrapeConfig::from_json(r#"{"scrape":"true","port":"http"}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("port"), "{error}");
        assert!(ScrapeConfig::from_json("[]").is_err());
    }
}
