//! Istio's HTTP metadata exchange (istio/proxy's `peer_metadata` filter with `istio_headers`):
//! the client proxy adds its node id and metadata to every upstream request
//! (`x-envoy-peer-metadata-id`, `x-envoy-peer-metadata`: standard base64 of a serialized
//! `google.protobuf.Struct`), the server proxy reads and strips them before the app sees the
//! request, labels its `reporter="destination"` metrics with the client's workload, and answers
//! with its own two headers, which the client proxy reads and strips before its app sees them.
//!
//! The metadata is **telemetry only**: plaintext headers are spoofable (as in Istio without
//! mTLS), so nothing here routes or authorizes. A peer's values are user-controlled: each is
//! bounded (length, characters) and the distinct peers a proxy labels with are capped, so the
//! metric series stay bounded; bad metadata never fails a request, it gives `unknown`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use http::{HeaderMap, HeaderName, HeaderValue};
use outrigger_api::names::peer_metadata::{ID_HEADER, METADATA_HEADER, field};
use outrigger_api::workload_labels;
use prost::Message as _;
use prost_types::value::Kind;
use prost_types::{Struct, Value};

use crate::l7::source::Loaded;
use crate::l7::telemetry::L7Metrics;
use crate::l7::telemetry::Label;
use crate::workload::{UNKNOWN, Workload};

/// The largest `x-envoy-peer-metadata` value read (its base64 text); a larger one is ignored.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The longest namespace, app or version taken from a peer (a Kubernetes label value, a
/// namespace name); a longer one is `unknown`.
pub const MAX_VALUE_BYTES: usize = 63;
/// The longest workload name taken from a peer (a Kubernetes object name).
pub const MAX_WORKLOAD_BYTES: usize = 253;
/// Distinct peers (workload, namespace, app, version) one side of a proxy labels its metrics
/// with; later new ones are `unknown` (counted with `reason="peer_limit"`).
pub const MAX_PEERS: usize = 1024;

/// The labels kept when all of the pod's would make our own header larger than a peer reads
/// (Istio's filter sends only these): the ones endpoints carry for telemetry and subsets.
const TELEMETRY_LABELS: &[&str] = outrigger_mesh::names::ENDPOINT_LABELS;

/// Standard base64; decoding accepts the value with or without padding (Envoy's
/// `decodeWithoutPadding` does too).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What a peer said about itself, as metric label values: each valid or `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub workload: Label,
    pub namespace: Label,
    pub app: Label,
    pub version: Label,
}

/// Why a peer's metadata was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("larger than {MAX_HEADER_BYTES} bytes")]
    TooLarge,
    #[error("not base64")]
    NotBase64,
    #[error("not a serialized google.protobuf.Struct")]
    NotStruct,
}

impl PeerError {
    /// The `reason` label of `outrigger_proxy_peer_metadata_errors_total`.
    pub fn reason(self) -> &'static str {
        match self {
            PeerError::TooLarge => "too_large",
            PeerError::NotBase64 => "not_base64",
            PeerError::NotStruct => "not_protobuf",
        }
    }
}

/// The Struct this proxy sends: Istio's node metadata names, the fields known, and `LABELS`
/// (the pod's labels) as a nested Struct.
pub fn node_metadata(workload: &Workload, labels: &BTreeMap<String, String>) -> Struct {
    let mut fields = BTreeMap::new();
    let known = |value: &str| !value.is_empty() && value != UNKNOWN;
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(value) = value.filter(|v| known(v)) {
            fields.insert(key.to_owned(), string(value));
        }
    };
    put(field::NAME, Some(workload.pod_name.as_str()));
    put(field::NAMESPACE, Some(workload.namespace.as_str()));
    put(field::WORKLOAD_NAME, Some(workload.name.as_str()));
    put(field::OWNER, workload.owner.as_deref());
    put(field::CLUSTER_ID, workload.cluster_id.as_deref());
    put(field::MESH_ID, workload.mesh_id.as_deref());
    put(field::SERVICE_ACCOUNT, workload.service_account.as_deref());
    let ip = workload.instance_ip.map(|ip| ip.to_string());
    put(field::INSTANCE_IPS, ip.as_deref());
    let labels = labels
        .iter()
        .map(|(key, value)| (key.clone(), string(value)))
        .collect();
    fields.insert(
        field::LABELS.to_owned(),
        Value {
            kind: Some(Kind::StructValue(Struct { fields: labels })),
        },
    );
    Struct { fields }
}

fn string(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_owned())),
    }
}

/// The header value of a Struct: standard base64 (padded) of its serialization (prost writes
/// the map in key order, as Envoy's deterministic serialization does).
pub fn encode(metadata: &Struct) -> String {
    general_purpose::STANDARD.encode(metadata.encode_to_vec())
}

/// A header value back to its Struct, refusing more than [`MAX_HEADER_BYTES`] before any work.
pub fn decode(value: &[u8]) -> Result<Struct, PeerError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(PeerError::TooLarge);
    }
    let bytes = BASE64
        .decode(value.trim_ascii())
        .map_err(|_| PeerError::NotBase64)?;
    Struct::decode(bytes.as_slice()).map_err(|_| PeerError::NotStruct)
}

/// The label values of a peer's Struct: `WORKLOAD_NAME`, `NAMESPACE`, and from `LABELS` the
/// app and version as Istio's telemetry reads them (the `app` and `version` labels,
/// [`workload_labels`]). A field absent, not a string, too long or with characters a
/// Kubernetes name or label value cannot have is `unknown`; the flag says whether any present
/// field was refused so.
pub fn peer_of(metadata: &Struct) -> (Peer, bool) {
    let mut refused = false;
    let mut take = |value: Option<&Value>, max: usize| -> Label {
        let Some(value) = value else {
            return Label::unknown();
        };
        match &value.kind {
            Some(Kind::StringValue(text)) if bounded(text, max) => Label::from(text.as_str()),
            _ => {
                refused = true;
                Label::unknown()
            }
        }
    };
    let labels = match metadata.fields.get(field::LABELS).map(|v| &v.kind) {
        Some(Some(Kind::StructValue(labels))) => Some(labels),
        _ => None,
    };
    let label = |key: &str| labels.and_then(|labels| labels.fields.get(key));
    let peer = Peer {
        workload: take(
            metadata.fields.get(field::WORKLOAD_NAME),
            MAX_WORKLOAD_BYTES,
        ),
        namespace: take(metadata.fields.get(field::NAMESPACE), MAX_VALUE_BYTES),
        app: take(workload_labels::app(label), MAX_VALUE_BYTES),
        version: take(workload_labels::version(label), MAX_VALUE_BYTES),
    };
    (peer, refused)
}

/// A value a Kubernetes name or label value could be: 1 to `max` bytes of `[A-Za-z0-9._-]`
/// (which also keeps quotes and newlines out of the metrics text).
fn bounded(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Removes both exchange headers (every value of each).
pub fn strip(headers: &mut HeaderMap) {
    headers.remove(ID_NAME);
    headers.remove(METADATA_NAME);
}

/// The two headers' names as names, not text: inserting text copies the name each time, and
/// removing by text parses it.
const ID_NAME: HeaderName = HeaderName::from_static(ID_HEADER);
const METADATA_NAME: HeaderName = HeaderName::from_static(METADATA_HEADER);

/// This proxy's two header values, encoded once, and the same identity as metric labels.
#[derive(Debug)]
pub struct Exchange {
    /// `None` without a pod IP, name or namespace (no node id to give).
    id: Option<HeaderValue>,
    metadata: HeaderValue,
    /// Workload, namespace, app and version as this proxy's requests are labelled.
    pub labels: OwnLabels,
}

/// This proxy's side of Istio's request labels (`source_*` outbound, `destination_*`
/// inbound), shared by every request.
#[derive(Debug, Clone)]
pub struct OwnLabels {
    pub workload: Label,
    pub namespace: Label,
    pub app: Label,
    pub version: Label,
}

impl Exchange {
    pub fn new(workload: &Workload, labels: &BTreeMap<String, String>) -> Self {
        let mut text = encode(&node_metadata(workload, labels));
        if text.len() > MAX_HEADER_BYTES {
            let fewer: BTreeMap<String, String> = labels
                .iter()
                .filter(|(key, _)| TELEMETRY_LABELS.contains(&key.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            tracing::warn!(
                bytes = text.len(),
                max = MAX_HEADER_BYTES,
                "the pod's labels make the peer metadata too large for a peer: sending only the app, version and canonical labels"
            );
            text = encode(&node_metadata(workload, &fewer));
        }
        let metadata = HeaderValue::from_str(&text).expect("base64 is a valid header value");
        let id = crate::discovery::node_id(workload)
            .ok()
            .and_then(|id| HeaderValue::from_str(&id).ok());
        let label = |key: &str| labels.get(key).map(String::as_str);
        let known = |value: Option<&str>| value.map_or_else(Label::unknown, Label::from);
        let labels = OwnLabels {
            workload: Label::from(workload.name.as_str()),
            namespace: Label::from(workload.namespace.as_str()),
            app: known(workload_labels::app(label)),
            version: known(workload_labels::version(label)),
        };
        Exchange {
            id,
            metadata,
            labels,
        }
    }

    /// Sets both headers (replacing any the app sent: the metadata is the proxy's to give).
    pub fn insert(&self, headers: &mut HeaderMap) {
        self.answer(headers, true, true);
    }

    /// Sets the id and/or the metadata: on an answer, each only when the request carried it,
    /// as Istio's filter answers only a peer that spoke first.
    pub fn answer(&self, headers: &mut HeaderMap, id: bool, metadata: bool) {
        if id && let Some(value) = &self.id {
            headers.insert(ID_NAME, value.clone());
        }
        if metadata {
            headers.insert(METADATA_NAME, self.metadata.clone());
        }
    }

    /// The metadata header value (tests, `/config_dump`).
    pub fn metadata(&self) -> &HeaderValue {
        &self.metadata
    }
}

/// This proxy's side of the exchange: its labels (the pod's from the `istio-podinfo` volume,
/// else the configuration's `proxy.labels`) and its two headers, encoded at start, or again
/// only when a new configuration version brings other labels.
#[derive(Debug)]
pub struct Local {
    workload: Arc<Workload>,
    /// Encoded at start when the pod's labels were read from the podinfo file.
    fixed: Option<Arc<Exchange>>,
    /// Otherwise: for the configuration version (and its labels) last seen.
    current: ArcSwapOption<Versioned>,
}

#[derive(Debug)]
struct Versioned {
    version: String,
    labels: BTreeMap<String, String>,
    exchange: Arc<Exchange>,
}

impl Local {
    pub fn new(workload: Arc<Workload>) -> Self {
        let fixed = (!workload.labels.is_empty())
            .then(|| Arc::new(Exchange::new(&workload, &workload.labels)));
        Local {
            workload,
            fixed,
            current: ArcSwapOption::empty(),
        }
    }

    /// The headers to send with the configuration in force.
    pub fn exchange(&self, loaded: &Loaded) -> Arc<Exchange> {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        let current = self.current.load();
        if let Some(current) = current.as_ref() {
            if current.version == loaded.config.version {
                return current.exchange.clone();
            }
            if current.labels == loaded.config.proxy.labels {
                // Same identity in a new version: keep the encoding, remember the version.
                let exchange = current.exchange.clone();
                self.current.store(Some(Arc::new(Versioned {
                    version: loaded.config.version.clone(),
                    labels: current.labels.clone(),
                    exchange: exchange.clone(),
                })));
                return exchange;
            }
        }
        let labels = loaded.config.proxy.labels.clone();
        let exchange = Arc::new(Exchange::new(&self.workload, &labels));
        self.current.store(Some(Arc::new(Versioned {
            version: loaded.config.version.clone(),
            labels,
            exchange: exchange.clone(),
        })));
        exchange
    }
}

/// What a request (inbound) or answer (outbound) carried.
#[derive(Debug, Default)]
pub struct Received {
    pub id: bool,
    pub metadata: bool,
    /// The peer, when its metadata decoded and it is within the cap of distinct peers.
    pub peer: Option<Peer>,
}

/// The peers one side of a proxy has labelled metrics with, capped at [`MAX_PEERS`].
#[derive(Debug, Default)]
pub struct Peers {
    seen: RwLock<HashSet<Peer>>,
    /// Header values already decoded into an admitted peer, with no value refused (at most
    /// [`MAX_PEERS`]): a client proxy sends the same value with every request, so it is
    /// decoded once, not per request.
    decoded: RwLock<HashMap<HeaderValue, Peer>>,
}

impl Peers {
    /// Reads and strips both headers; decodes the metadata when `decode` (a side that has no
    /// use for it only strips). Never fails: bad metadata is logged at debug and counted in
    /// `outrigger_proxy_peer_metadata_errors_total{reason}`, and gives no peer.
    pub fn receive(&self, headers: &mut HeaderMap, metrics: &L7Metrics, decode: bool) -> Received {
        let id = headers.remove(ID_NAME);
        let value = headers.remove(METADATA_NAME);
        let mut received = Received {
            id: id.is_some(),
            metadata: value.is_some(),
            peer: None,
        };
        let Some(value) = value.filter(|_| decode) else {
            return received;
        };
        let known = self
            .decoded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&value)
            .cloned();
        if let Some(peer) = known {
            received.peer = Some(peer);
            return received;
        }
        let metadata = match self::decode(value.as_bytes()) {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::debug!(%error, bytes = value.len(), peer_id = ?id, "peer metadata ignored");
                metrics.peer_metadata_error(error.reason());
                return received;
            }
        };
        let (peer, refused) = peer_of(&metadata);
        if refused {
            tracing::debug!(peer_id = ?id, "peer metadata: a value out of bounds is unknown");
            metrics.peer_metadata_error("invalid_value");
        }
        received.peer = self.admit(peer, metrics);
        if let Some(peer) = received.peer.as_ref().filter(|_| !refused) {
            let mut decoded = self.decoded.write().unwrap_or_else(|p| p.into_inner());
            if decoded.len() < MAX_PEERS {
                decoded.insert(value, peer.clone());
            }
        }
        received
    }

    /// The peer if it is known already or there is room for one more.
    fn admit(&self, peer: Peer, metrics: &L7Metrics) -> Option<Peer> {
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&peer) {
            return Some(peer);
        }
        let full = seen.len() >= MAX_PEERS;
        drop(seen);
        if full {
            tracing::debug!(workload = %peer.workload, namespace = %peer.namespace, max = MAX_PEERS, "too many distinct peers: labelled unknown");
            metrics.peer_metadata_error("peer_limit");
            return None;
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_PEERS && !seen.contains(&peer) {
            metrics.peer_metadata_error("peer_limit");
            return None;
        }
        seen.insert(peer.clone());
        Some(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn workload() -> Workload {
        Workload {
            name: "reviews-v1".into(),
            namespace: "bookinfo".into(),
            pod_name: "reviews-v1-5c9b8f7d6-x2x4q".into(),
            instance_ip: Some("10.244.1.7".parse().expect("ip")),
            owner: Some(
                "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/reviews-v1".into(),
            ),
            cluster_id: Some("Kubernetes".into()),
            mesh_id: Some("cluster.local".into()),
            service_account: Some("bookinfo-reviews".into()),
            labels: BTreeMap::new(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn text(metadata: &Struct, key: &str) -> Option<String> {
        match &metadata.fields.get(key)?.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn metrics() -> (L7Metrics, Registry) {
        let mut registry = Registry::default();
        (L7Metrics::register(&mut registry), registry)
    }

    fn exposition(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    #[test]
    fn encode_then_decode_gives_back_every_field_and_the_labels() {
        let pod = labels(&[("app", "reviews"), ("version", "v1"), ("team", "books")]);
        let sent = node_metadata(&workload(), &pod);
        let value = encode(&sent);
        // Standard alphabet, padded: what Envoy's `Base64::encode` writes.
        assert_eq!(
            general_purpose::STANDARD
                .decode(&value)
                .expect("strict standard base64"),
            sent.encode_to_vec()
        );
        let got = decode(value.as_bytes()).expect("decodes");
        assert_eq!(got, sent);
        for (key, expected) in [
            (field::NAME, "reviews-v1-5c9b8f7d6-x2x4q"),
            (field::NAMESPACE, "bookinfo"),
            (field::WORKLOAD_NAME, "reviews-v1"),
            (
                field::OWNER,
                "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/reviews-v1",
            ),
            (field::CLUSTER_ID, "Kubernetes"),
            (field::MESH_ID, "cluster.local"),
            (field::SERVICE_ACCOUNT, "bookinfo-reviews"),
            (field::INSTANCE_IPS, "10.244.1.7"),
        ] {
            assert_eq!(text(&got, key).as_deref(), Some(expected), "{key}");
        }
        let (peer, refused) = peer_of(&got);
        assert!(!refused);
        assert_eq!(
            peer,
            Peer {
                workload: "reviews-v1".into(),
                namespace: "bookinfo".into(),
                app: "reviews".into(),
                version: "v1".into(),
            }
        );
    }

    #[test]
    fn unknown_fields_are_not_sent() {
        let workload = Workload {
            owner: None,
            cluster_id: None,
            mesh_id: None,
            service_account: None,
            instance_ip: None,
            name: UNKNOWN.into(),
            ..workload()
        };
        let sent = node_metadata(&workload, &BTreeMap::new());
        let keys: Vec<&str> = sent.fields.keys().map(String::as_str).collect();
        assert_eq!(keys, ["LABELS", "NAME", "NAMESPACE"]);
        let exchange = Exchange::new(&workload, &BTreeMap::new());
        assert!(exchange.id.is_none(), "no node id without the pod IP");
    }

    /// A Struct as Istio's proxy sends it (istio/proxy `convertWorkloadMetadataToStruct` plus
    /// the older exchange's keys: other types, nested structs), built by hand.
    #[test]
    fn metadata_written_the_way_istio_writes_it_decodes() {
        let s = |v: &str| string(v);
        let nested = |pairs: Vec<(&str, Value)>| Value {
            kind: Some(Kind::StructValue(Struct {
                fields: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            })),
        };
        let mut fields = BTreeMap::new();
        fields.insert("NAME".to_owned(), s("productpage-v1-84975bc778-pxz2w"));
        fields.insert("NAMESPACE".to_owned(), s("default"));
        fields.insert("WORKLOAD_NAME".to_owned(), s("productpage-v1"));
        fields.insert("CLUSTER_ID".to_owned(), s("Kubernetes"));
        fields.insert(
            "OWNER".to_owned(),
            s("kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1"),
        );
        fields.insert(
            "LABELS".to_owned(),
            nested(vec![
                ("app.kubernetes.io/name", s("productpage")),
                ("app.kubernetes.io/version", s("v1")),
                ("service.istio.io/canonical-name", s("productpage")),
                ("service.istio.io/canonical-revision", s("v1")),
            ]),
        );
        fields.insert(
            "PLATFORM_METADATA".to_owned(),
            nested(vec![("gcp_project", s("p"))]),
        );
        fields.insert(
            "INSTANCE_IPS".to_owned(),
            Value {
                kind: Some(Kind::ListValue(prost_types::ListValue {
                    values: vec![s("10.52.0.34")],
                })),
            },
        );
        fields.insert(
            "ISTIO_VERSION".to_owned(),
            Value {
                kind: Some(Kind::NumberValue(1.24)),
            },
        );
        let bytes = Struct { fields }.encode_to_vec();
        let padded = general_purpose::STANDARD.encode(&bytes);
        let unpadded = general_purpose::STANDARD_NO_PAD.encode(&bytes);
        for value in [padded, unpadded] {
            let (peer, refused) = peer_of(&decode(value.as_bytes()).expect("decodes"));
            assert!(!refused);
            assert_eq!(
                peer,
                Peer {
                    workload: "productpage-v1".into(),
                    namespace: "default".into(),
                    // No `app`/`version` labels: `unknown`, as Istio's stats filter says (the
                    // canonical and app.kubernetes.io labels are not its app and version).
                    app: UNKNOWN.into(),
                    version: UNKNOWN.into(),
                }
            );
        }
    }

    /// What this proxy labels its own requests with and what a peer reads from its header
    /// agree: the `app` and `version` labels, whatever canonical labels the pod has.
    #[test]
    fn own_labels_and_the_peer_s_reading_of_them_are_the_app_and_version_labels() {
        let pod = labels(&[
            ("app", "reviews"),
            ("version", "v1"),
            ("service.istio.io/canonical-name", "reviews-svc"),
            ("service.istio.io/canonical-revision", "r7"),
            ("app.kubernetes.io/name", "reviews-k8s"),
            ("app.kubernetes.io/version", "1.0"),
        ]);
        let exchange = Exchange::new(&workload(), &pod);
        let own = (
            exchange.labels.app.as_str(),
            exchange.labels.version.as_str(),
        );
        assert_eq!(own, ("reviews", "v1"));
        let (peer, _) = peer_of(&node_metadata(&workload(), &pod));
        assert_eq!((peer.app.as_str(), peer.version.as_str()), own);
        // Without `app`/`version`: `unknown` on both sides, not a canonical label.
        let pod = labels(&[("service.istio.io/canonical-name", "reviews-svc")]);
        let exchange = Exchange::new(&workload(), &pod);
        let (peer, _) = peer_of(&node_metadata(&workload(), &pod));
        assert_eq!(exchange.labels.app.as_str(), UNKNOWN);
        assert_eq!(peer.app.as_str(), UNKNOWN);
    }

    #[test]
    fn app_and_version_labels_win_over_the_app_kubernetes_io_ones() {
        let pod = labels(&[
            ("app", "ratings"),
            ("app.kubernetes.io/name", "other"),
            ("version", "v2"),
            ("app.kubernetes.io/version", "9"),
        ]);
        let (peer, _) = peer_of(&node_metadata(&workload(), &pod));
        assert_eq!(
            (peer.app.as_str(), peer.version.as_str()),
            ("ratings", "v2")
        );
    }

    #[test]
    fn oversize_garbage_and_out_of_bounds_values_give_unknown() {
        let big = "A".repeat(MAX_HEADER_BYTES + 1);
        assert_eq!(decode(big.as_bytes()), Err(PeerError::TooLarge));
        assert_eq!(decode(b"not base64 at all!"), Err(PeerError::NotBase64));
        // Valid base64 of bytes that are no Struct (a field with a bad wire type).
        let junk = general_purpose::STANDARD.encode([0x0f, 0xff, 0xff, 0xff]);
        assert_eq!(decode(junk.as_bytes()), Err(PeerError::NotStruct));

        let long = "w".repeat(MAX_WORKLOAD_BYTES + 1);
        let quoted = "a\"b";
        let pod = labels(&[
            ("app", "a".repeat(MAX_VALUE_BYTES + 1).as_str()),
            ("version", quoted),
        ]);
        let workload = Workload {
            name: long,
            namespace: "ns\nwith newline".into(),
            ..workload()
        };
        let metadata = decode(encode(&node_metadata(&workload, &pod)).as_bytes()).expect("decodes");
        let (peer, refused) = peer_of(&metadata);
        assert!(refused);
        assert_eq!(
            peer,
            Peer {
                workload: UNKNOWN.into(),
                namespace: UNKNOWN.into(),
                app: UNKNOWN.into(),
                version: UNKNOWN.into(),
            }
        );
        // The longest allowed values are kept.
        let ok = Workload {
            name: "w".repeat(MAX_WORKLOAD_BYTES),
            ..self::workload()
        };
        let pod = labels(&[("app", "a".repeat(MAX_VALUE_BYTES).as_str())]);
        let (peer, refused) = peer_of(&node_metadata(&ok, &pod));
        assert!(!refused);
        assert_eq!(peer.workload.len(), MAX_WORKLOAD_BYTES);
        assert_eq!(peer.app.len(), MAX_VALUE_BYTES);
        assert_eq!(peer.version, UNKNOWN, "absent: unknown, not refused");
    }

    #[test]
    fn receive_strips_both_headers_and_counts_what_it_ignores() {
        let (metrics, registry) = metrics();
        let peers = Peers::default();
        let exchange = Exchange::new(&workload(), &labels(&[("app", "reviews")]));
        let mut headers = HeaderMap::new();
        exchange.insert(&mut headers);
        headers.append(METADATA_HEADER, HeaderValue::from_static("second"));
        let received = peers.receive(&mut headers, &metrics, true);
        assert!(headers.is_empty(), "{headers:?}");
        assert!(received.id && received.metadata);
        assert_eq!(received.peer.expect("a peer").app, "reviews");

        let mut headers = HeaderMap::new();
        headers.insert(METADATA_HEADER, HeaderValue::from_static("%%%"));
        let received = peers.receive(&mut headers, &metrics, true);
        assert!(headers.is_empty());
        assert!(received.metadata && !received.id && received.peer.is_none());
        let text = exposition(&registry);
        assert!(
            text.contains(r#"outrigger_proxy_peer_metadata_errors_total{reason="not_base64"} 1"#),
            "{text}"
        );

        // Not decoded when the side has no use for it, but stripped all the same.
        let mut headers = HeaderMap::new();
        headers.insert(METADATA_HEADER, HeaderValue::from_static("%%%"));
        let received = peers.receive(&mut headers, &metrics, false);
        assert!(headers.is_empty() && received.peer.is_none());
        assert!(exposition(&registry).contains(r#"{reason="not_base64"} 1"#));
    }

    #[test]
    fn distinct_peers_are_capped() {
        let (metrics, registry) = metrics();
        let peers = Peers::default();
        let peer = |i: usize| Peer {
            workload: format!("w{i}").into(),
            namespace: "ns".into(),
            app: "a".into(),
            version: "v".into(),
        };
        for i in 0..MAX_PEERS {
            assert!(peers.admit(peer(i), &metrics).is_some());
        }
        assert!(peers.admit(peer(MAX_PEERS), &metrics).is_none());
        assert!(peers.admit(peer(0), &metrics).is_some(), "known peers stay");
        assert!(
            exposition(&registry)
                .contains(r#"outrigger_proxy_peer_metadata_errors_total{reason="peer_limit"} 1"#)
        );
    }

    #[test]
    fn a_header_value_is_decoded_once_unless_a_value_in_it_was_refused() {
        let (metrics, registry) = metrics();
        let peers = Peers::default();
        let pod = labels(&[("app", "reviews"), ("version", "v1")]);
        let value =
            HeaderValue::from_str(&encode(&node_metadata(&workload(), &pod))).expect("ascii");
        let mut first = None;
        for _ in 0..3 {
            let mut headers = HeaderMap::new();
            headers.insert(METADATA_HEADER, value.clone());
            let received = peers.receive(&mut headers, &metrics, true);
            assert!(headers.is_empty(), "stripped every time");
            let peer = received.peer.expect("a peer");
            assert_eq!(peer.app, "reviews");
            assert_eq!(*first.get_or_insert_with(|| peer.clone()), peer);
        }
        assert_eq!(peers.decoded.read().expect("lock").len(), 1, "decoded once");

        // A value with a field out of bounds is decoded (and counted) at every request.
        let mut bad = workload();
        bad.namespace = "bad namespace".into();
        let value = HeaderValue::from_str(&encode(&node_metadata(&bad, &pod))).expect("ascii");
        for _ in 0..2 {
            let mut headers = HeaderMap::new();
            headers.insert(METADATA_HEADER, value.clone());
            let peer = peers
                .receive(&mut headers, &metrics, true)
                .peer
                .expect("a peer");
            assert_eq!(peer.namespace, UNKNOWN);
        }
        assert_eq!(peers.decoded.read().expect("lock").len(), 1, "not kept");
        assert!(
            exposition(&registry).contains(r#"{reason="invalid_value"} 2"#),
            "{}",
            exposition(&registry)
        );
    }

    #[test]
    fn an_answer_carries_only_what_the_request_did() {
        let exchange = Exchange::new(&workload(), &BTreeMap::new());
        let mut headers = HeaderMap::new();
        exchange.answer(&mut headers, false, true);
        assert!(headers.get(ID_HEADER).is_none());
        assert_eq!(headers.get(METADATA_HEADER), Some(exchange.metadata()));
        exchange.answer(&mut headers, true, false);
        assert_eq!(
            headers.get(ID_HEADER).and_then(|v| v.to_str().ok()),
            Some(
                "sidecar~10.244.1.7~reviews-v1-5c9b8f7d6-x2x4q.bookinfo~bookinfo.svc.cluster.local"
            )
        );
    }

    #[test]
    fn too_many_labels_fall_back_to_the_telemetry_ones() {
        let mut pod: BTreeMap<String, String> = (0..400)
            .map(|i| (format!("example.com/label-{i}"), "x".repeat(20)))
            .collect();
        pod.insert("app".into(), "reviews".into());
        let exchange = Exchange::new(&workload(), &pod);
        let value = exchange.metadata().as_bytes();
        assert!(value.len() <= MAX_HEADER_BYTES, "{}", value.len());
        let (peer, _) = peer_of(&decode(value).expect("decodes"));
        assert_eq!(peer.app, "reviews");
    }
}
