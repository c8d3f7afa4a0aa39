//! App probes recorded by the injector (`ISTIO_KUBE_APP_PROBERS`), executed on the kubelet's
//! behalf: HTTP GET (path, headers, scheme), TCP connect, or gRPC health check.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use outrigger_api::proxy_env::{AppProbers, EnvFormatError, ProbeHandler, Scheme};

use crate::client::{self, Wire};
use crate::names::{DEFAULT_PROBE_TIMEOUT, INBOUND_SOURCE_V4, INBOUND_SOURCE_V6};
use outrigger_runtime::error_chain;

/// The original probes, by rewritten path (`/app-health/<container>/readyz`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probers(BTreeMap<String, Probe>);

/// One original probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub action: ProbeAction,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeAction {
    Http {
        host: Option<String>,
        port: u16,
        path: String,
        https: bool,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Grpc {
        port: u16,
        service: Option<String>,
    },
}

impl Probers {
    /// Reads `ISTIO_KUBE_APP_PROBERS` (the format of [`outrigger_api::proxy_env::AppProbers`]).
    pub fn from_json(json: &str) -> Result<Self, EnvFormatError> {
        AppProbers::from_json(json).map(Probers::from)
    }

    pub fn get(&self, path: &str) -> Option<&Probe> {
        self.0.get(path)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The recorded probes as the proxy runs them: empty hosts and services mean none, a missing
/// path is `/`, a missing or zero timeout is Kubernetes' default.
impl From<AppProbers> for Probers {
    fn from(recorded: AppProbers) -> Self {
        let probes = recorded.0.into_iter().map(|(path, probe)| {
            let action = match probe.handler {
                ProbeHandler::HttpGet(http) => ProbeAction::Http {
                    host: http.host.filter(|h| !h.is_empty()),
                    port: http.port,
                    path: normalize_path(http.path.as_deref()),
                    https: http.scheme == Some(Scheme::Https),
                    headers: http
                        .http_headers
                        .into_iter()
                        .map(|h| (h.name, h.value))
                        .collect(),
                },
                ProbeHandler::TcpSocket(tcp) => ProbeAction::Tcp {
                    host: tcp.host.filter(|h| !h.is_empty()),
                    port: tcp.port,
                },
                ProbeHandler::Grpc(grpc) => ProbeAction::Grpc {
                    port: grpc.port,
                    service: grpc.service.filter(|s| !s.is_empty()),
                },
            };
            let timeout = match probe.timeout_seconds {
                None | Some(0) => DEFAULT_PROBE_TIMEOUT,
                Some(seconds) => Duration::from_secs(u64::from(seconds)),
            };
            (path, Probe { action, timeout })
        });
        Probers(probes.collect())
    }
}

fn normalize_path(path: Option<&str>) -> String {
    match path {
        None | Some("") => "/".to_owned(),
        Some(p) if p.starts_with('/') => p.to_owned(),
        Some(p) => format!("/{p}"),
    }
}

/// Result of running a probe: the status returned to the kubelet and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub status: StatusCode,
    pub detail: String,
}

impl ProbeResult {
    fn ok(detail: impl Into<String>) -> Self {
        ProbeResult {
            status: StatusCode::OK,
            detail: detail.into(),
        }
    }

    fn failed(detail: impl Into<String>) -> Self {
        ProbeResult {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: detail.into(),
        }
    }
}

/// Where probes go when they name no host: the pod IP, as the kubelet would, else localhost.
pub fn default_probe_ip(instance_ip: Option<IpAddr>) -> IpAddr {
    instance_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Source address for a hop to the local app: 127.0.0.6 / ::6 unless the target is loopback,
/// so the pod's capture rules return the connection instead of redirecting it.
pub fn local_app_source(target: IpAddr) -> Option<IpAddr> {
    match target {
        ip if ip.is_loopback() => None,
        IpAddr::V4(_) => Some(IpAddr::V4(INBOUND_SOURCE_V4)),
        IpAddr::V6(_) => Some(IpAddr::V6(INBOUND_SOURCE_V6)),
    }
}

/// Runs `probe` against the app, bounded by the probe's timeout.
pub async fn run_probe(probe: &Probe, default_ip: IpAddr) -> ProbeResult {
    match tokio::time::timeout(probe.timeout, execute(&probe.action, default_ip)).await {
        Ok(result) => result,
        Err(_) => ProbeResult::failed(format!("probe timed out after {:?}", probe.timeout)),
    }
}

async fn execute(action: &ProbeAction, default_ip: IpAddr) -> ProbeResult {
    match action {
        ProbeAction::Http {
            host,
            port,
            path,
            https,
            headers,
        } => {
            let target = match resolve(host.as_deref(), *port, default_ip).await {
                Ok(target) => target,
                Err(detail) => return ProbeResult::failed(detail),
            };
            http_probe(target, host.as_deref(), path, *https, headers).await
        }
        ProbeAction::Tcp { host, port } => {
            let target = match resolve(host.as_deref(), *port, default_ip).await {
                Ok(target) => target,
                Err(detail) => return ProbeResult::failed(detail),
            };
            match client::connect(target, local_app_source(target.ip())).await {
                Ok(_) => ProbeResult::ok(format!("connected to {target}")),
                Err(e) => ProbeResult::failed(error_chain(&e)),
            }
        }
        ProbeAction::Grpc { port, service } => {
            grpc_probe(SocketAddr::new(default_ip, *port), service.as_deref()).await
        }
    }
}

async fn resolve(host: Option<&str>, port: u16, default_ip: IpAddr) -> Result<SocketAddr, String> {
    let Some(host) = host else {
        return Ok(SocketAddr::new(default_ip, port));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve probe host {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("probe host {host:?} has no address"))
}

async fn http_probe(
    target: SocketAddr,
    host: Option<&str>,
    path: &str,
    https: bool,
    headers: &[(String, String)],
) -> ProbeResult {
    let mut builder = Request::get(path).header(http::header::USER_AGENT, "kube-probe/outrigger");
    let mut has_host = false;
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            return ProbeResult::failed(format!("invalid probe header {name:?}"));
        };
        has_host |= name == http::header::HOST;
        builder = builder.header(name, value);
    }
    if !has_host {
        let authority = match host {
            Some(h) => format!("{h}:{}", target.port()),
            None => target.to_string(),
        };
        builder = builder.header(http::header::HOST, authority);
    }
    let request = match builder.body(Full::new(Bytes::new())) {
        Ok(request) => request,
        Err(e) => return ProbeResult::failed(format!("invalid probe request: {e}")),
    };
    let wire = if https { Wire::Https } else { Wire::Http1 };
    match client::send(target, local_app_source(target.ip()), wire, request).await {
        // Kubelet: 200 <= code < 400 is success.
        Ok(reply) if reply.status.as_u16() >= 200 && reply.status.as_u16() < 400 => {
            ProbeResult::ok(format!("{} returned {}", path, reply.status))
        }
        Ok(reply) => ProbeResult {
            status: if reply.status.as_u16() >= 400 {
                reply.status
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            detail: format!("{} returned {}", path, reply.status),
        },
        Err(e) => ProbeResult::failed(error_chain(&e)),
    }
}

/// `grpc.health.v1.Health/Check`; SERVING (1) is success.
async fn grpc_probe(target: SocketAddr, service: Option<&str>) -> ProbeResult {
    let message = encode_health_request(service.unwrap_or_default());
    let request = Request::post("/grpc.health.v1.Health/Check")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header(http::header::HOST, target.to_string())
        .body(Full::new(Bytes::from(message)));
    let request = match request {
        Ok(request) => request,
        Err(e) => return ProbeResult::failed(format!("invalid gRPC request: {e}")),
    };
    let reply =
        match client::send(target, local_app_source(target.ip()), Wire::Http2, request).await {
            Ok(reply) => reply,
            Err(e) => return ProbeResult::failed(error_chain(&e)),
        };
    let grpc_status = reply
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| reply.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
        .to_owned();
    if grpc_status != "0" {
        return ProbeResult::failed(format!(
            "gRPC health check failed: grpc-status {grpc_status}"
        ));
    }
    match decode_health_status(&reply.body) {
        Some(1) => ProbeResult::ok("gRPC service is SERVING"),
        Some(status) => ProbeResult::failed(format!("gRPC health status {status} (not SERVING)")),
        None => ProbeResult::failed("gRPC health response could not be decoded"),
    }
}

/// gRPC frame (uncompressed) holding `HealthCheckRequest { service = 1 }`.
fn encode_health_request(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads `HealthCheckResponse.status` (field 1, varint) from one gRPC frame; absent means 0.
fn decode_health_status(frame: &[u8]) -> Option<u64> {
    let (header, rest) = frame.split_at_checked(5)?;
    if header[0] != 0 {
        return None; // compressed: not something a health server sends unasked
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut message = rest.get(..len)?;
    let mut status = 0;
    while let Some((&key, tail)) = message.split_first() {
        let (value, tail) = read_varint(tail)?;
        match key {
            0x08 => status = value,
            _ if key & 0x07 == 0 => {}
            _ => return None,
        }
        message = tail;
    }
    Some(status)
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}
