//! The env formats the injector writes on `istio-proxy` and the proxy reads ("What the injector
//! tells the proxy" in docs/DESIGN.md): `ISTIO_KUBE_APP_PROBERS` ([`AppProbers`]) and
//! `ISTIO_PROMETHEUS_ANNOTATIONS` ([`PrometheusScrape`]). Both sides use these types, so a value
//! one writes and the other cannot read fails a test here instead of in a pod.
//!
//! Istio's references: `KubeAppProbers` / `Prober` and `PrometheusScrapeConfiguration` in
//! pilot/cmd/pilot-agent/status/server.go (read with `json.Unmarshal`: unknown fields are
//! ignored, as here).

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names::env;
use crate::values::parse_port;

/// A value of one of these variables could not be read: which variable, where in it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {}{reason}", field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct EnvFormatError {
    /// The env variable, e.g. `ISTIO_KUBE_APP_PROBERS`.
    pub variable: &'static str,
    /// Where in the JSON (`/app-health/web/readyz.httpGet.port`, `targets[1].port`); `None` when
    /// the problem is the whole value (not JSON, wrong type at the top).
    pub field: Option<String>,
    pub reason: String,
}

fn from_json<'de, T: Deserialize<'de>>(
    variable: &'static str,
    json: &'de str,
) -> Result<T, EnvFormatError> {
    let mut reader = serde_json::Deserializer::from_str(json);
    let value: T = serde_path_to_error::deserialize(&mut reader).map_err(|error| {
        let path = error.path().to_string();
        EnvFormatError {
            variable,
            field: (path != "." && path != "?").then_some(path),
            reason: error.into_inner().to_string(),
        }
    })?;
    reader.end().map_err(|error| EnvFormatError {
        variable,
        field: None,
        reason: error.to_string(),
    })?;
    Ok(value)
}

fn to_json<T: Serialize>(value: &T) -> String {
    // String keys and plain fields only: serializing into a String cannot fail.
    serde_json::to_string(value).expect("env formats always serialize")
}

// ---------------------------------------------------------------------------------------------
// ISTIO_KUBE_APP_PROBERS

/// `ISTIO_KUBE_APP_PROBERS`: rewritten path (`/app-health/<container>/readyz`,
/// `/app-lifecycle/<container>/prestopz`) to the original probe. The order of the JSON object is
/// kept (reading then writing gives the same text); a path may appear once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppProbers(pub Vec<(String, AppProbe)>);

/// One original probe: its action with a numeric port, and its `timeoutSeconds` if it had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppProbe {
    pub handler: ProbeHandler,
    pub timeout_seconds: Option<u32>,
}

/// The probe action, with Kubernetes' field names on the wire (`httpGet`, `tcpSocket`, `grpc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeHandler {
    HttpGet(HttpGetAction),
    TcpSocket(TcpSocketAction),
    Grpc(GrpcAction),
}

/// `httpGet`. The port is a number; the injector resolves named ports, and a number written as
/// a string (`"8080"`) is read too, as Kubernetes' `IntOrString` allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(with = "number_port")]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// `httpGet.scheme`; read in any case (`https`), written as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// One of `httpGet.httpHeaders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// `tcpSocket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpSocketAction {
    #[serde(with = "number_port")]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `grpc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrpcAction {
    #[serde(with = "number_port")]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl AppProbers {
    /// Reads the variable's value; errors name the probe path and the field.
    pub fn from_json(json: &str) -> Result<Self, EnvFormatError> {
        from_json(env::APP_PROBERS, json)
    }

    /// The compact JSON the injector writes.
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// The probe recorded for `path`.
    pub fn get(&self, path: &str) -> Option<&AppProbe> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, probe)| probe)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &AppProbe)> {
        self.0.iter().map(|(path, probe)| (path.as_str(), probe))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for AppProbers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (path, probe) in &self.0 {
            map.serialize_entry(path, probe)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for AppProbers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProbersVisitor;
        impl<'de> Visitor<'de> for ProbersVisitor {
            type Value = AppProbers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of probe path to probe")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AppProbers, A::Error> {
                let mut probes: Vec<(String, AppProbe)> = Vec::new();
                while let Some(path) = map.next_key::<String>()? {
                    let probe: AppProbe = map.next_value()?;
                    if probes.iter().any(|(p, _)| *p == path) {
                        return Err(de::Error::custom(format!(
                            "probe path {path:?} appears twice"
                        )));
                    }
                    probes.push((path, probe));
                }
                Ok(AppProbers(probes))
            }
        }
        deserializer.deserialize_map(ProbersVisitor)
    }
}

impl Serialize for AppProbe {
    /// `{"httpGet":{...},"timeoutSeconds":1}`: the action, then the timeout when set.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match &self.handler {
            ProbeHandler::HttpGet(action) => map.serialize_entry("httpGet", action)?,
            ProbeHandler::TcpSocket(action) => map.serialize_entry("tcpSocket", action)?,
            ProbeHandler::Grpc(action) => map.serialize_entry("grpc", action)?,
        }
        if let Some(seconds) = self.timeout_seconds {
            map.serialize_entry("timeoutSeconds", &seconds)?;
        }
        map.end()
    }
}

/// The wire shape before "exactly one action" is checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireProbe {
    http_get: Option<HttpGetAction>,
    tcp_socket: Option<TcpSocketAction>,
    grpc: Option<GrpcAction>,
    timeout_seconds: Option<u32>,
}

impl<'de> Deserialize<'de> for AppProbe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireProbe::deserialize(deserializer)?;
        let handler = match (wire.http_get, wire.tcp_socket, wire.grpc) {
            (Some(http), None, None) => ProbeHandler::HttpGet(http),
            (None, Some(tcp), None) => ProbeHandler::TcpSocket(tcp),
            (None, None, Some(grpc)) => ProbeHandler::Grpc(grpc),
            _ => {
                return Err(de::Error::custom(
                    "needs exactly one of httpGet, tcpSocket or grpc",
                ));
            }
        };
        Ok(AppProbe {
            handler,
            timeout_seconds: wire.timeout_seconds,
        })
    }
}

impl Serialize for Scheme {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Scheme::Http => "HTTP",
            Scheme::Https => "HTTPS",
        })
    }
}

impl<'de> Deserialize<'de> for Scheme {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_uppercase().as_str() {
            "HTTP" => Ok(Scheme::Http),
            "HTTPS" => Ok(Scheme::Https),
            _ => Err(de::Error::custom(format!(
                "unknown scheme {text:?} (use HTTP or HTTPS)"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ISTIO_PROMETHEUS_ANNOTATIONS

/// `ISTIO_PROMETHEUS_ANNOTATIONS`: the application's `prometheus.io/*` settings, which the
/// injector replaced to point at the merged metrics. Values are strings, as annotations are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct PrometheusScrape {
    /// `prometheus.io/scrape`; only `"true"` turns the merge on ([`Self::is_on`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `prometheus.io/port`, a port number written as a string (`"8080"`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "string_port_opt"
    )]
    pub port: Option<u16>,
    /// From `prometheus.istio.io/scrape-targets`; when present, these replace `port`/`path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<ScrapeTarget>>,
}

/// One of `targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeTarget {
    #[serde(with = "string_port")]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Serialize for PrometheusScrape {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PrometheusScrape::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for PrometheusScrape {
    /// A JSON object only (the derived form would also take an array, which Go's json refuses).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = PrometheusScrape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object with scrape, path, port and targets")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PrometheusScrape, A::Error> {
                PrometheusScrape::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl PrometheusScrape {
    /// Reads the variable's value; errors name the field (`targets[1].port`).
    pub fn from_json(json: &str) -> Result<Self, EnvFormatError> {
        from_json(env::PROMETHEUS_ANNOTATIONS, json)
    }

    /// The compact JSON the injector writes.
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Whether the application asked to be scraped (`scrape` is `"true"`).
    pub fn is_on(&self) -> bool {
        self.scrape.as_deref() == Some("true")
    }
}

// ---------------------------------------------------------------------------------------------
// PROXY_CONFIG

/// `PROXY_CONFIG`: the pod's merged Istio `ProxyConfig` as JSON (mesh `defaultConfig` deep-merged
/// with the `proxy.istio.io/config` annotation), as Istio's template writes it. Only the fields
/// the proxy reads are typed; every other field is kept as is (`other`), so a value written by
/// the injector round-trips.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshProxyConfig {
    /// `host:port` of the control plane (Istio's `discoveryAddress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_address: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl MeshProxyConfig {
    /// Reads the variable's value; errors name the field (`discoveryAddress`).
    pub fn from_json(json: &str) -> Result<Self, EnvFormatError> {
        from_json(env::PROXY_CONFIG, json)
    }

    /// The compact JSON the injector writes.
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// `discoveryAddress` when set and not blank.
    pub fn discovery_address(&self) -> Option<&str> {
        self.discovery_address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
    }
}

// ---------------------------------------------------------------------------------------------
// Ports: one grammar ([`parse_port`]), a number or a string of digits on input.

struct PortVisitor;

impl Visitor<'_> for PortVisitor {
    type Value = u16;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number (1-65535)")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u16, E> {
        u16::try_from(value)
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| E::custom(format!("'{value}' is not a port number (1-65535)")))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u16, E> {
        u64::try_from(value)
            .map_err(|_| E::custom(format!("'{value}' is not a port number (1-65535)")))
            .and_then(|value| self.visit_u64(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<u16, E> {
        parse_port(value).map_err(|error| {
            if value.trim().chars().all(|c| c.is_ascii_digit()) {
                E::custom(error)
            } else {
                E::custom(format!(
                    "{error}; a named port must be resolved to its number by the injector"
                ))
            }
        })
    }
}

/// Written as a JSON number (`"port":8080`).
mod number_port {
    use super::*;

    pub fn serialize<S: Serializer>(port: &u16, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(*port)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
        deserializer.deserialize_any(PortVisitor)
    }
}

/// Written as a JSON string (`"port":"8080"`).
mod string_port {
    use super::*;

    pub fn serialize<S: Serializer>(port: &u16, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(port)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
        deserializer.deserialize_any(PortVisitor)
    }
}

mod string_port_opt {
    use super::*;

    pub fn serialize<S: Serializer>(port: &Option<u16>, serializer: S) -> Result<S::Ok, S::Error> {
        match port {
            Some(port) => serializer.collect_str(port),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u16>, D::Error> {
        #[derive(Deserialize)]
        struct Port(#[serde(with = "string_port")] u16);
        Ok(Option::<Port>::deserialize(deserializer)?.map(|Port(port)| port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of docs/DESIGN.md, "What the injector tells the proxy".
    const DESIGN_PROBERS: &str = r#"{"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":8080},"timeoutSeconds":1},"/app-health/web/livez":{"tcpSocket":{"port":8080}},"/app-lifecycle/web/prestopz":{"httpGet":{"port":91}}}"#;
    const DESIGN_SCRAPE: &str = r#"{"scrape":"true","path":"/metrics","port":"8080"}"#;
    const DESIGN_TARGETS: &str = r#"{"scrape":"true","path":"/metrics","port":"8080","targets":[{"port":"8080","path":"/metrics"},{"port":"9100","path":"/custom-metrics"}]}"#;

    #[test]
    fn the_design_probers_round_trip() {
        let probers = AppProbers::from_json(DESIGN_PROBERS).unwrap();
        assert_eq!(probers.len(), 3);
        assert_eq!(
            probers.get("/app-health/web/readyz"),
            Some(&AppProbe {
                handler: ProbeHandler::HttpGet(HttpGetAction {
                    path: Some("/ready".into()),
                    port: 8080,
                    host: None,
                    scheme: None,
                    http_headers: vec![],
                }),
                timeout_seconds: Some(1),
            })
        );
        assert_eq!(
            probers.get("/app-health/web/livez").map(|p| &p.handler),
            Some(&ProbeHandler::TcpSocket(TcpSocketAction {
                port: 8080,
                host: None
            }))
        );
        assert_eq!(probers.to_json(), DESIGN_PROBERS);
    }

    #[test]
    fn every_probe_field_is_written_in_kubernetes_order() {
        let json = r#"{"/a":{"httpGet":{"path":"/p","port":1,"host":"h","scheme":"HTTPS","httpHeaders":[{"name":"X","value":"y"}]},"timeoutSeconds":3},"/b":{"grpc":{"port":9090,"service":"svc"}},"/c":{"tcpSocket":{"port":2,"host":"db"}}}"#;
        let probers = AppProbers::from_json(json).unwrap();
        assert_eq!(probers.to_json(), json);
        let (_, grpc) = probers.iter().nth(1).unwrap();
        assert_eq!(
            grpc.handler,
            ProbeHandler::Grpc(GrpcAction {
                port: 9090,
                service: Some("svc".into())
            })
        );
    }

    #[test]
    fn a_numeric_string_port_and_a_lower_case_scheme_are_read() {
        let probers = AppProbers::from_json(
            r#"{"/a":{"tcpSocket":{"port":"8081"}},"/b":{"httpGet":{"port":80,"scheme":"https"}},"/c":{"httpGet":{"port":80},"exec":{"command":["x"]},"periodSeconds":5}}"#,
        )
        .unwrap();
        assert_eq!(
            probers.to_json(),
            r#"{"/a":{"tcpSocket":{"port":8081}},"/b":{"httpGet":{"port":80,"scheme":"HTTPS"}},"/c":{"httpGet":{"port":80}}}"#,
            "numbers written as numbers, unknown fields ignored as Go's json does"
        );
        assert!(AppProbers::from_json("{}").unwrap().is_empty());
    }

    #[test]
    fn bad_probers_name_the_variable_the_probe_and_the_field() {
        for (json, field, reason) in [
            (
                r#"{"/app-health/web/readyz":{"httpGet":{"port":"http"}}}"#,
                Some("/app-health/web/readyz.httpGet.port"),
                "'http' is not a port number (1-65535); a named port must be resolved",
            ),
            (
                r#"{"/p":{"tcpSocket":{"port":70000}}}"#,
                Some("/p.tcpSocket.port"),
                "'70000' is not a port number (1-65535)",
            ),
            (
                r#"{"/p":{"grpc":{"port":0}}}"#,
                Some("/p.grpc.port"),
                "'0' is not a port number",
            ),
            (
                r#"{"/p":{"exec":{"command":["true"]}}}"#,
                Some("/p"),
                "needs exactly one of httpGet, tcpSocket or grpc",
            ),
            (
                r#"{"/p":{"httpGet":{"port":80},"tcpSocket":{"port":80}}}"#,
                Some("/p"),
                "needs exactly one of",
            ),
            (
                r#"{"/p":{"httpGet":{"port":80,"scheme":"FTP"}}}"#,
                Some("/p.httpGet.scheme"),
                "unknown scheme \"FTP\" (use HTTP or HTTPS)",
            ),
            (
                r#"{"/p":{"httpGet":{"port":80},"timeoutSeconds":-1}}"#,
                Some("/p.timeoutSeconds"),
                "invalid value",
            ),
            (
                r#"{"/p":{"tcpSocket":{"port":1}},"/p":{"tcpSocket":{"port":2}}}"#,
                None,
                "probe path \"/p\" appears twice",
            ),
            ("{not json", None, "key must be a string"),
            ("[]", None, "expected a JSON object of probe path to probe"),
            ("{} x", None, "trailing characters"),
        ] {
            let error = AppProbers::from_json(json).unwrap_err();
            assert_eq!(error.variable, "ISTIO_KUBE_APP_PROBERS", "{json}");
            assert_eq!(error.field.as_deref(), field, "{json}: {error}");
            assert!(error.reason.contains(reason), "{json}: {error}");
        }
        let error = AppProbers::from_json(r#"{"/p":{"tcpSocket":{"port":"x"}}}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("ISTIO_KUBE_APP_PROBERS: /p.tcpSocket.port: 'x' is not a port"),
            "{error}"
        );
    }

    #[test]
    fn the_design_scrape_settings_round_trip() {
        let scrape = PrometheusScrape::from_json(DESIGN_SCRAPE).unwrap();
        assert_eq!(
            scrape,
            PrometheusScrape {
                scrape: Some("true".into()),
                path: Some("/metrics".into()),
                port: Some(8080),
                targets: None,
            }
        );
        assert!(scrape.is_on());
        assert_eq!(scrape.to_json(), DESIGN_SCRAPE);
        let with_targets = PrometheusScrape::from_json(DESIGN_TARGETS).unwrap();
        assert_eq!(
            with_targets.targets.as_deref(),
            Some(
                &[
                    ScrapeTarget {
                        port: 8080,
                        path: Some("/metrics".into())
                    },
                    ScrapeTarget {
                        port: 9100,
                        path: Some("/custom-metrics".into())
                    }
                ][..]
            )
        );
        assert_eq!(with_targets.to_json(), DESIGN_TARGETS);
    }

    #[test]
    fn scrape_settings_in_any_order_and_off() {
        let scrape =
            PrometheusScrape::from_json(r#"{"port":"8080","scrape":"false","extra":1}"#).unwrap();
        assert!(!scrape.is_on());
        assert_eq!(scrape.to_json(), r#"{"scrape":"false","port":"8080"}"#);
        assert_eq!(PrometheusScrape::from_json("{}").unwrap().to_json(), "{}");
    }

    #[test]
    fn bad_scrape_settings_name_the_field() {
        for (json, field, reason) in [
            (
                r#"{"scrape":"true","port":"http"}"#,
                Some("port"),
                "'http' is not a port number (1-65535)",
            ),
            (
                r#"{"targets":[{"port":"80"},{"port":"0"}]}"#,
                Some("targets[1].port"),
                "'0' is not a port number",
            ),
            (
                r#"{"scrape":true}"#,
                Some("scrape"),
                "invalid type: boolean",
            ),
            (
                "[]",
                None,
                "expected a JSON object with scrape, path, port and targets",
            ),
        ] {
            let error = PrometheusScrape::from_json(json).unwrap_err();
            assert_eq!(error.variable, "ISTIO_PROMETHEUS_ANNOTATIONS");
            assert_eq!(error.field.as_deref(), field, "{json}: {error}");
            assert!(error.reason.contains(reason), "{json}: {error}");
        }
    }

    #[test]
    fn proxy_config_gives_the_discovery_address_and_keeps_the_rest() {
        let json = r#"{"discoveryAddress":"outrigger-pilot.outrigger-system.svc:15012","concurrency":2,"proxyMetadata":{"A":"b"}}"#;
        let config = MeshProxyConfig::from_json(json).unwrap();
        assert_eq!(
            config.discovery_address(),
            Some("outrigger-pilot.outrigger-system.svc:15012")
        );
        assert_eq!(config.other["concurrency"], 2);
        let again = MeshProxyConfig::from_json(&config.to_json()).unwrap();
        assert_eq!(again, config);
        assert_eq!(
            MeshProxyConfig::from_json("{}")
                .unwrap()
                .discovery_address(),
            None
        );
        let blank = MeshProxyConfig::from_json(r#"{"discoveryAddress":" "}"#).unwrap();
        assert_eq!(blank.discovery_address(), None);
    }

    #[test]
    fn a_bad_proxy_config_names_the_variable_and_field() {
        let error = MeshProxyConfig::from_json(r#"{"discoveryAddress":15010}"#).unwrap_err();
        assert_eq!(error.variable, "PROXY_CONFIG");
        assert_eq!(error.field.as_deref(), Some("discoveryAddress"));
        let error = MeshProxyConfig::from_json("discoveryAddress: x").unwrap_err();
        assert_eq!(error.variable, "PROXY_CONFIG");
        assert_eq!(error.field, None);
    }
}
