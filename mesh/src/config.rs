//! `ProxyConfig`: everything one proxy needs, already resolved. Lookup tables keyed the way the
//! proxy asks (`ClusterIP:port`, `host:port`, cluster name); no selector or short name left.
//! This is the file `outrigger-routes build` writes and `outrigger-proxy run --config-file` reads.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::matcher::CompiledRoutes;
use crate::names::{PROXY_CONFIG_API_VERSION, PROXY_CONFIG_KIND};
use crate::protocol::Protocol;

/// The resolved configuration of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// `outrigger.dev/v1alpha1`.
    pub api_version: String,
    /// `ProxyConfig`.
    pub kind: String,
    /// Hash of the content (16 hex digits): equal content, equal version.
    pub version: String,
    pub proxy: ProxyInfo,
    /// `host:port` (FQDN) → destination.
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// `ClusterIP:port` → key of `destinations`.
    pub addresses: BTreeMap<String, String>,
    /// Every authority an application may send (`catalog`, `catalog:8080`, `catalog.shop`,
    /// `catalog.shop.svc`, the FQDN, with and without port) → key of `destinations`.
    pub host_aliases: BTreeMap<String, String>,
    /// Cluster name (`outbound|8080|v2|catalog.shop.svc.cluster.local`) → cluster.
    pub clusters: BTreeMap<String, Cluster>,
    /// What happens to a destination the configuration does not know (Istio's
    /// `outboundTrafficPolicy.mode`); `ALLOW_ANY` when absent.
    #[serde(default, skip_serializing_if = "OutboundTrafficPolicy::is_allow_any")]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
}

/// Istio's `outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// Unknown destinations are passed through (`PassthroughCluster`), Istio's default.
    #[default]
    AllowAny,
    /// Unknown destinations are refused (`BlackHoleCluster`: HTTP 502 `NR`, TCP closed).
    RegistryOnly,
}

impl OutboundTrafficPolicy {
    pub fn is_allow_any(&self) -> bool {
        *self == OutboundTrafficPolicy::AllowAny
    }

    /// Istio's spelling (`ALLOW_ANY`, `REGISTRY_ONLY`); anything else is `None`.
    pub fn parse(mode: &str) -> Option<Self> {
        match mode {
            "ALLOW_ANY" => Some(OutboundTrafficPolicy::AllowAny),
            "REGISTRY_ONLY" => Some(OutboundTrafficPolicy::RegistryOnly),
            _ => None,
        }
    }
}

impl ProxyConfig {
    /// Finds the destination of an authority (`host[:port]`) or address (`ip:port`); `port` is
    /// the original destination port, used when the authority has none.
    pub fn destination(&self, authority: &str, port: u16) -> Option<(&str, &DestinationConfig)> {
        // Borrowed when the authority has its port (every request's `ip:port` lookup).
        let with_port: std::borrow::Cow<'_, str> =
            if authority.contains(':') && !authority.starts_with('[') {
                authority.into()
            } else {
                format!("{authority}:{port}").into()
            };
        let with_port = with_port.as_ref();
        let key = self
            .addresses
            .get(with_port)
            .or_else(|| self.host_aliases.get(with_port))
            .or_else(|| self.host_aliases.get(authority))
            .map(String::as_str)
            .or_else(|| {
                self.destinations
                    .contains_key(with_port)
                    .then_some(with_port)
            })?;
        self.destinations
            .get_key_value(key)
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Compiles every route table once (the proxy calls this at load to refuse a bad file).
    pub fn compile(&self) -> Result<(), crate::matcher::MatchError> {
        for destination in self.destinations.values() {
            destination.http.compile()?;
        }
        Ok(())
    }

    /// A new config with the version computed from the content: the FNV-1a hash of its JSON,
    /// hashed as it is written (a namespace's view is megabytes of JSON, never held).
    pub(crate) fn seal(mut self) -> Self {
        self.version = String::new();
        let mut hash = Fnv1a::default();
        serde_json::to_writer(&mut hash, &self).expect("a ProxyConfig always serializes");
        self.version = format!("{:016x}", hash.0);
        self
    }

    pub(crate) fn empty(proxy: ProxyInfo) -> Self {
        Self {
            api_version: PROXY_CONFIG_API_VERSION.to_owned(),
            kind: PROXY_CONFIG_KIND.to_owned(),
            version: String::new(),
            proxy,
            destinations: BTreeMap::new(),
            addresses: BTreeMap::new(),
            host_aliases: BTreeMap::new(),
            clusters: BTreeMap::new(),
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
        }
    }
}

/// FNV-1a, 64 bits, over what is written to it: small, stable across releases and platforms.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 = bytes.iter().fold(self.0, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Which proxy the configuration is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyInfo {
    pub namespace: String,
    pub pod: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// One `host:port` the proxy can send to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationConfig {
    /// FQDN.
    pub host: String,
    pub port: u16,
    /// `namespace/name` of the Service or ServiceEntry.
    pub service: String,
    pub protocol: Protocol,
    /// Why this protocol (appProtocol, port name, well-known port, detection).
    pub protocol_reason: String,
    /// HTTP routes in order, first match wins (empty when the protocol is not HTTP).
    #[serde(default)]
    pub http: RouteTable,
    /// TLS routes (SNI) in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<L4Route>,
    /// TCP routes in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<L4Route>,
    /// Rules of the VirtualServices for this host that can never apply to this proxy and why
    /// (port, sourceLabels, sourceNamespace, gateways); for `explain`, ignored by the proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<ExcludedRule>,
}

/// An HTTP rule left out at resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExcludedRule {
    pub virtual_service: String,
    pub rule: usize,
    pub reason: String,
}

/// The ordered HTTP routes of one destination. `select` compiles its matchers on first use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTable {
    pub routes: Vec<Route>,
    /// `true` when a VirtualService owns the host: a request no rule matches gets 404 NR.
    /// `false`: the table is the default route (no VirtualService).
    #[serde(default)]
    pub from_virtual_service: bool,
    #[serde(skip)]
    pub(crate) compiled: OnceLock<CompiledRoutes>,
}

impl PartialEq for RouteTable {
    fn eq(&self, other: &Self) -> bool {
        self.routes == other.routes && self.from_virtual_service == other.from_virtual_service
    }
}

/// One HTTP rule: matched when any of `matches` matches (all match when empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `namespace/name` of the VirtualService, `null` for the default route.
    pub virtual_service: Option<String>,
    /// Index of the rule in that VirtualService's `http` list.
    pub rule: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RequestMatch>,
    pub action: Action,
    /// Route timeout in milliseconds; absent: none (Istio's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy in force (Istio's default when the rule sets none).
    pub retries: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The rule's header operations (the proxy applies the destination's, then these).
    /// Boxed, as `mirror`: most routes have none, and a large configuration holds thousands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Box<HeaderRules>>,
    /// Copies of each request sent to other clusters (fire and forget): the rule's `mirror`
    /// (with `mirrorPercentage`) or each entry of its `mirrors` list, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
}

/// Header operations of a rule or a destination, on the request and on the response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRules {
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response: HeaderOps,
}

/// `set` (overwrite), `add` (append), `remove`; header names lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOps {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// One mirror: Istio's `mirror` with `mirrorPercentage`, or one `mirrors` entry with its
/// `percentage` (100 when unset, as Istio).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    pub cluster: String,
    pub host: String,
    pub port: u16,
    pub percentage: f64,
}

/// One match block: every condition must hold. Only request-time conditions remain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// Index in the rule's `match` list.
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatcher>,
    /// Lowercase header name → matcher.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatcher>,
    /// Lowercase header name → matcher that must not match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatcher>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatcher>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
}

/// How a value is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MatchKind {
    Exact,
    Prefix,
    /// RE2 syntax, must match the whole value.
    Regex,
    /// The value is present (any value).
    Present,
}

/// A compared value: `{kind: prefix, value: /api}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StringMatcher {
    pub kind: MatchKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// What a matched rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: ActionKind,
    /// For `route`: the weighted clusters (weights sum to 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<WeightedCluster>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActionKind {
    Route,
    Redirect,
    DirectResponse,
}

/// A cluster a route sends to and its share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedCluster {
    pub cluster: String,
    pub host: String,
    pub subset: Option<String>,
    pub port: u16,
    /// Percentage, after Istio's normalisation (all weights of a route sum to 100).
    pub weight: u32,
    /// This destination's header operations (applied before the rule's; boxed: rare).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Box<HeaderRules>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// 301 unless set.
    pub code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Retries in force on a route. `attempts: 0` means none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub attempts: u32,
    pub retry_on: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    pub fixed_delay_ms: u64,
    /// Percentage of requests delayed (0–100).
    pub percentage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Percentage of requests aborted (0–100).
    pub percentage: f64,
}

/// A TLS (SNI) or TCP route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4Route {
    pub virtual_service: Option<String>,
    pub rule: Option<usize>,
    /// SNI names any of which must match (TLS only; empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    pub destinations: Vec<WeightedCluster>,
}

/// An upstream cluster: one host, port and subset, its policy and endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
    pub protocol: Protocol,
    /// `namespace/name` of the DestinationRule applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<String>,
    /// `LEAST_REQUEST` (Istio's default), `ROUND_ROBIN`, `RANDOM`, `PASSTHROUGH`.
    pub load_balancer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<serde_json::Value>,
    pub connection_pool: ConnectionPool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
    /// A ServiceEntry host outside the mesh: the proxy sends it no metadata-exchange headers
    /// (Istio's `metadataExchangeHeaders` mode `IN_MESH`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mesh_external: bool,
    pub endpoints: Vec<Endpoint>,
}

/// Limits; absent: unlimited (Envoy's defaults are not imitated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

/// Outlier detection with Istio's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    pub interval_ms: u64,
    pub base_ejection_time_ms: u64,
    pub max_ejection_percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<u32>,
}

/// One upstream address with what metrics need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `ip:port` (or `hostname:port` for DNS ServiceEntries).
    pub address: String,
    pub health: Health,
    /// Shared by the endpoints with the same labels (see [`sharing_labels`]).
    #[serde(
        default,
        skip_serializing_if = "labels_are_empty",
        serialize_with = "serialize_labels",
        deserialize_with = "deserialize_labels"
    )]
    pub labels: Arc<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// From EndpointSlice conditions: `ready` → healthy; `serving` and `terminating` → draining
/// (Istio sends to it only when nothing is healthy); else unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Health {
    Healthy,
    Draining,
    Unhealthy,
}

/// The label maps seen so far while sharing.
type SeenLabels = HashSet<Arc<BTreeMap<String, String>>>;

fn labels_are_empty(labels: &Arc<BTreeMap<String, String>>) -> bool {
    labels.is_empty()
}

fn serialize_labels<S: serde::Serializer>(
    labels: &Arc<BTreeMap<String, String>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    labels.as_ref().serialize(serializer)
}

thread_local! {
    /// The label maps deserialized so far inside [`sharing_labels`] on this thread.
    static SHARED_LABELS: RefCell<Option<SeenLabels>> =
        const { RefCell::new(None) };
}

/// Runs `f` (a deserialization of a `ProxyConfig`) so that endpoints with equal labels share
/// one map, as they are parsed. Ten thousand endpoints have a few hundred distinct label sets,
/// and a map's node is about 540 bytes even for two labels: sharing while parsing keeps the
/// peak near the size of what stays (the proxy's RSS, bench/http-load). Outside it, each
/// endpoint gets its own map.
pub fn sharing_labels<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(Option<SeenLabels>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let previous = self.0.take();
            SHARED_LABELS.with(|shared| *shared.borrow_mut() = previous);
        }
    }
    let previous = SHARED_LABELS.with(|shared| shared.borrow_mut().replace(HashSet::new()));
    let _reset = Reset(previous);
    f()
}

fn deserialize_labels<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Arc<BTreeMap<String, String>>, D::Error> {
    let labels = BTreeMap::<String, String>::deserialize(deserializer)?;
    Ok(
        SHARED_LABELS.with(|shared| match shared.borrow_mut().as_mut() {
            None => Arc::new(labels),
            Some(seen) => match seen.get(&labels) {
                Some(map) => map.clone(),
                None => {
                    let map = Arc::new(labels);
                    seen.insert(map.clone());
                    map
                }
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn the_version_hash_is_fnv1a_of_the_whole_json_however_it_is_written() {
        let mut whole = Fnv1a::default();
        whole.write_all(b"a").expect("hash");
        // FNV-1a 64 of "a", the published test vector.
        assert_eq!(whole.0, 0xaf63_dc4c_8601_ec8c);

        let config = ProxyConfig::empty(ProxyInfo::default());
        let text = serde_json::to_vec(&config).expect("json");
        let mut at_once = Fnv1a::default();
        at_once.write_all(&text).expect("hash");
        let mut in_pieces = Fnv1a::default();
        for piece in text.chunks(3) {
            in_pieces.write_all(piece).expect("hash");
        }
        assert_eq!(at_once.0, in_pieces.0);
        assert_eq!(config.seal().version, format!("{:016x}", at_once.0));
    }
}
