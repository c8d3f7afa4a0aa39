//! Which protocol a destination port speaks, by Istio's rules: the Service's `protocol: UDP`,
//! then `appProtocol`, then the port-name prefix, then the well-known TCP ports, else detection.

use serde::{Deserialize, Serialize};

use crate::names::WELL_KNOWN_TCP_PORTS;

/// A destination's protocol. `auto` means the proxy detects it on the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Mongo,
    Mysql,
    Redis,
    Udp,
    Auto,
}

impl Protocol {
    /// Istio's protocol names (case-insensitive), as in port names, `appProtocol` and
    /// ServiceEntry ports.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" => Self::Http,
            "http2" | "kubernetes.io/h2c" => Self::Http2,
            "grpc" => Self::Grpc,
            "grpc-web" => Self::GrpcWeb,
            "https" => Self::Https,
            "tls" => Self::Tls,
            "tcp" => Self::Tcp,
            "mongo" => Self::Mongo,
            "mysql" => Self::Mysql,
            "redis" => Self::Redis,
            "udp" => Self::Udp,
            _ => return None,
        })
    }

    /// The lowercase name (`grpc-web`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
            Self::GrpcWeb => "grpc-web",
            Self::Https => "https",
            Self::Tls => "tls",
            Self::Tcp => "tcp",
            Self::Mongo => "mongo",
            Self::Mysql => "mysql",
            Self::Redis => "redis",
            Self::Udp => "udp",
            Self::Auto => "auto",
        }
    }

    /// HTTP routes apply (to `auto` too, once detection has seen HTTP).
    pub fn uses_http_routes(self) -> bool {
        matches!(
            self,
            Self::Http | Self::Http2 | Self::Grpc | Self::GrpcWeb | Self::Auto
        )
    }

    /// TLS routes apply (SNI).
    pub fn uses_tls_routes(self) -> bool {
        matches!(self, Self::Https | Self::Tls)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol of a Kubernetes Service port and the reason, in words.
pub fn for_service_port(
    port: i32,
    name: Option<&str>,
    l4_protocol: Option<&str>,
    app_protocol: Option<&str>,
) -> (Protocol, String) {
    match l4_protocol {
        Some("UDP") => return (Protocol::Udp, "Service port protocol is UDP".to_owned()),
        Some("SCTP") => {
            return (
                Protocol::Tcp,
                "Service port protocol is SCTP (relayed as TCP)".to_owned(),
            );
        }
        _ => {}
    }
    if let Some(app) = app_protocol
        && let Some(protocol) = Protocol::parse(app)
    {
        return (protocol, format!("appProtocol {app:?}"));
    }
    let name = name.unwrap_or("");
    let lower = name.to_ascii_lowercase();
    // Istio checks `grpc-web` before cutting at the first `-` (the name contains one).
    if lower.starts_with("grpc-web") {
        return (
            Protocol::GrpcWeb,
            format!("port name {name:?} starts with \"grpc-web\""),
        );
    }
    let prefix = lower.split('-').next().unwrap_or("");
    if let Some(protocol) = Protocol::parse(prefix) {
        return (
            protocol,
            format!("port name {name:?} has the protocol prefix {prefix:?}"),
        );
    }
    if WELL_KNOWN_TCP_PORTS.contains(&port) {
        return (
            Protocol::Tcp,
            format!(
                "port {port} is a well-known server-first port and its name {name:?} names no protocol: TCP"
            ),
        );
    }
    let unknown = match app_protocol {
        Some(app) => format!("appProtocol {app:?} is not a protocol Istio knows and "),
        None => String::new(),
    };
    (
        Protocol::Auto,
        format!(
            "{unknown}port name {name:?} has no protocol prefix (name it <protocol>[-<suffix>] or set appProtocol): detected from the first bytes"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_istio_order() {
        assert_eq!(
            for_service_port(80, Some("web"), Some("TCP"), Some("http2")).0,
            Protocol::Http2
        );
        assert_eq!(
            for_service_port(80, Some("http-web"), None, None).0,
            Protocol::Http
        );
        assert_eq!(
            for_service_port(80, Some("HTTP2"), None, None).0,
            Protocol::Http2
        );
        assert_eq!(
            for_service_port(80, Some("grpc-web"), None, None).0,
            Protocol::GrpcWeb
        );
        assert_eq!(
            for_service_port(80, Some("grpc-api"), None, None).0,
            Protocol::Grpc
        );
        assert_eq!(
            for_service_port(80, Some("httpx"), None, None).0,
            Protocol::Auto
        );
        assert_eq!(
            for_service_port(3306, Some("db"), None, None).0,
            Protocol::Tcp
        );
        assert_eq!(
            for_service_port(3306, Some("mysql"), None, None).0,
            Protocol::Mysql
        );
        assert_eq!(
            for_service_port(53, Some("dns"), Some("UDP"), None).0,
            Protocol::Udp
        );
        assert_eq!(for_service_port(8080, None, None, None).0, Protocol::Auto);
    }
}
