//! The index: one `Generation` per debounced snapshot, the views resolved from it (one per
//! namespace and set of labels that some `sourceLabels` reads), and each view cut into the wire
//! resources: one `Destination` per `FQDN:port` (routes and cluster policy, no endpoints) and one
//! `Endpoints` per cluster. Pure: no I/O, no async; the xDS layer only translates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use outrigger_mesh::config::{Cluster, DestinationConfig};
use outrigger_mesh::{ProxyConfig, ProxyId, Resolver, Snapshot};
use serde::Serialize;

pub use outrigger_xds_api::{DESTINATION_TYPE, ENDPOINTS_TYPE};

/// Which proxies share a view: the namespace, and only those pod labels that some
/// VirtualService's `sourceLabels` reads (resolution reads no other label), so the pods of one
/// namespace share one view unless a `sourceLabels` tells them apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewKey {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// One resource as sent: its content JSON and a version (FNV-1a 64 of the JSON, so every
/// replica gives equal content the same version and a reconnect to another replica resends
/// nothing that did not change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireResource {
    /// The canonical name: `FQDN:port` or the cluster name.
    pub name: String,
    pub version: String,
    pub json: Vec<u8>,
}

/// What a `Destination` carries.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationPayload<'a> {
    pub destination: &'a DestinationConfig,
    /// Every cluster a route of this destination names, without endpoints (those come as
    /// `Endpoints` resources named by the cluster).
    pub clusters: BTreeMap<&'a str, Cluster>,
    /// `ClusterIP:port` addresses of the destination.
    pub addresses: Vec<&'a str>,
}

/// FNV-1a 64, as the mesh crate versions a `ProxyConfig`.
pub fn fnv1a(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn wire(name: &str, value: &impl Serialize) -> Arc<WireResource> {
    let json = serde_json::to_vec(value).unwrap_or_default();
    Arc::new(WireResource {
        name: name.to_owned(),
        version: fnv1a(&json),
        json,
    })
}

/// Cluster names a destination's routes send to (every `cluster` field of its route tables).
fn clusters_named(destination: &DestinationConfig) -> BTreeSet<String> {
    fn walk(value: &serde_json::Value, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("cluster", serde_json::Value::String(name)) => {
                            out.insert(name.clone());
                        }
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    if let Ok(value) = serde_json::to_value(destination) {
        walk(&value, &mut out);
    }
    out
}

/// One resolved view, cut into wire resources.
#[derive(Debug)]
pub struct View {
    config: ProxyConfig,
    destinations: HashMap<String, Arc<WireResource>>,
    endpoints: HashMap<String, Arc<WireResource>>,
}

impl View {
    pub fn new(config: ProxyConfig) -> Self {
        let mut addresses: HashMap<&str, Vec<&str>> = HashMap::new();
        for (address, key) in &config.addresses {
            addresses.entry(key.as_str()).or_default().push(address);
        }
        let mut destinations = HashMap::new();
        for (key, destination) in &config.destinations {
            let clusters = clusters_named(destination)
                .into_iter()
                .filter_map(|name| config.clusters.get_key_value(name.as_str()))
                .map(|(name, cluster)| {
                    let mut cluster = cluster.clone();
                    cluster.endpoints.clear();
                    (name.as_str(), cluster)
                })
                .collect();
            let payload = DestinationPayload {
                destination,
                clusters,
                addresses: addresses.get(key.as_str()).cloned().unwrap_or_default(),
            };
            destinations.insert(key.clone(), wire(key, &payload));
        }
        let endpoints = config
            .clusters
            .iter()
            .map(|(name, cluster)| (name.clone(), wire(name, &cluster.endpoints)))
            .collect();
        // Lookups read only addresses, aliases and destinations; the clusters (with every
        // endpoint) now live in the wire resources, so the typed copy is dropped.
        let mut config = config;
        config.clusters.clear();
        Self {
            config,
            destinations,
            endpoints,
        }
    }

    /// The destination a proxy asked for by any name it may meet: `FQDN:port`,
    /// `ClusterIP:port`, or a short name with port (`catalog:8080`, `catalog.shop:8080`).
    pub fn destination(&self, name: &str) -> Option<&Arc<WireResource>> {
        let port = name
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())?;
        let (key, _) = self.config.destination(name, port)?;
        self.destinations.get(key)
    }

    pub fn endpoints(&self, cluster: &str) -> Option<&Arc<WireResource>> {
        self.endpoints.get(cluster)
    }

    pub fn resource(&self, type_url: &str, name: &str) -> Option<&Arc<WireResource>> {
        match type_url {
            DESTINATION_TYPE => self.destination(name),
            ENDPOINTS_TYPE => self.endpoints(name),
            _ => None,
        }
    }

    pub fn destination_count(&self) -> usize {
        self.destinations.len()
    }
}

/// One snapshot of the cluster and the views resolved from it so far.
#[derive(Debug)]
pub struct Generation {
    /// Increases by one per rebuild (the `system_version_info` pilot sends).
    pub number: u64,
    /// When the first change that this generation contains was seen (for convergence time).
    pub changed_at: Instant,
    snapshot: Arc<Snapshot>,
    source_label_keys: BTreeSet<String>,
    pods: HashMap<(String, String), usize>,
    /// One cell per key: the first caller resolves, concurrent callers wait for it.
    views: Mutex<HashMap<ViewKey, Arc<OnceLock<Arc<View>>>>>,
}

impl Generation {
    pub fn new(number: u64, changed_at: Instant, snapshot: Snapshot) -> Self {
        let mut source_label_keys = BTreeSet::new();
        for vs in &snapshot.virtual_services {
            let http = vs
                .spec
                .http
                .iter()
                .flat_map(|r| &r.matches)
                .map(|m| &m.source_labels);
            let tls = vs
                .spec
                .tls
                .iter()
                .flat_map(|r| &r.matches)
                .map(|m| &m.source_labels);
            let tcp = vs
                .spec
                .tcp
                .iter()
                .flat_map(|r| &r.matches)
                .map(|m| &m.source_labels);
            for labels in http.chain(tls).chain(tcp) {
                source_label_keys.extend(labels.keys().cloned());
            }
        }
        let pods = snapshot
            .pods
            .iter()
            .enumerate()
            .map(|(index, pod)| {
                let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                ((namespace, name), index)
            })
            .collect();
        Self {
            number,
            changed_at,
            snapshot: Arc::new(snapshot),
            source_label_keys,
            pods,
            views: Mutex::new(HashMap::new()),
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The pod `namespace/name`, if the reflector has it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&k8s_openapi::api::core::v1::Pod> {
        self.pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|index| self.snapshot.pods.get(*index))
    }

    /// The view key of a proxy in `namespace` with these pod labels.
    pub fn view_key(&self, namespace: &str, labels: &BTreeMap<String, String>) -> ViewKey {
        ViewKey {
            namespace: namespace.to_owned(),
            labels: labels
                .iter()
                .filter(|(k, _)| self.source_label_keys.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The view of `key`, resolved on first use (once, however many callers ask at the same
    /// time). Blocking: async callers go through `spawn_blocking` unless `is_resolved`.
    pub fn view(&self, key: &ViewKey) -> Arc<View> {
        let cell = self.cell(key);
        cell.get_or_init(|| Arc::new(resolve_view(&Resolver::new(&self.snapshot), key)))
            .clone()
    }

    /// Whether `view(key)` would answer without resolving.
    pub fn is_resolved(&self, key: &ViewKey) -> bool {
        self.lock_views()
            .get(key)
            .is_some_and(|c| c.get().is_some())
    }

    /// Resolves every key not resolved yet with one index of the snapshot.
    pub fn precompute<'k>(&self, keys: impl IntoIterator<Item = &'k ViewKey>) {
        let missing: Vec<&ViewKey> = keys.into_iter().filter(|k| !self.is_resolved(k)).collect();
        if missing.is_empty() {
            return;
        }
        let resolver = Resolver::new(&self.snapshot);
        for key in missing {
            self.cell(key)
                .get_or_init(|| Arc::new(resolve_view(&resolver, key)));
        }
    }

    fn cell(&self, key: &ViewKey) -> Arc<OnceLock<Arc<View>>> {
        self.lock_views().entry(key.clone()).or_default().clone()
    }

    fn lock_views(&self) -> std::sync::MutexGuard<'_, HashMap<ViewKey, Arc<OnceLock<Arc<View>>>>> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn resolve_view(resolver: &Resolver<'_>, key: &ViewKey) -> View {
    let proxy = ProxyId {
        namespace: key.namespace.clone(),
        labels: key.labels.clone(),
        ..ProxyId::default()
    };
    View::new(resolver.resolve(&proxy))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: catalog, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 8080, targetPort: 8080}]
  selector: {app: catalog}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: catalog-abc, namespace: shop, labels: {kubernetes.io/service-name: catalog}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.244.0.5]
  conditions: {ready: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog]
  http:
  - match: [{sourceLabels: {canary: "true"}}]
    route: [{destination: {host: catalog, subset: v2}}]
  - route: [{destination: {host: catalog, subset: v1}}]
"#;

    fn generation(yaml: &str) -> Generation {
        let mut snapshot = Snapshot::default();
        snapshot.add_yaml("test", yaml).expect("fixture");
        Generation::new(1, Instant::now(), snapshot)
    }

    #[test]
    fn destinations_are_found_by_every_name_a_proxy_meets() {
        let generation = generation(SHOP);
        let view = generation.view(&generation.view_key("shop", &BTreeMap::new()));
        let canonical = "catalog.shop.svc.cluster.local:8080";
        for name in [
            canonical,
            "10.96.0.10:8080",
            "catalog:8080",
            "catalog.shop:8080",
        ] {
            let resource = view.destination(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(resource.name, canonical);
        }
        assert!(view.destination("nothing:80").is_none());
        assert!(view.destination("catalog").is_none(), "a name needs a port");
        let payload: serde_json::Value =
            serde_json::from_slice(&view.destination(canonical).expect("dest").json).expect("json");
        assert_eq!(payload["addresses"], serde_json::json!(["10.96.0.10:8080"]));
        assert!(
            payload["clusters"]
                .as_object()
                .expect("clusters")
                .keys()
                .all(|k| k.starts_with("outbound|8080|")),
            "{payload}"
        );
        let endpoints = view
            .endpoints("outbound|8080||catalog.shop.svc.cluster.local")
            .expect("endpoints of the default cluster");
        assert!(String::from_utf8_lossy(&endpoints.json).contains("10.244.0.5:8080"));
    }

    #[test]
    fn an_endpoint_change_changes_only_endpoint_versions() {
        let before = generation(SHOP);
        let after = generation(&SHOP.replace("10.244.0.5", "10.244.0.6"));
        let key = before.view_key("shop", &BTreeMap::new());
        let (a, b) = (before.view(&key), after.view(&key));
        let name = "catalog.shop.svc.cluster.local:8080";
        assert_eq!(
            a.destination(name).map(|r| &r.version),
            b.destination(name).map(|r| &r.version)
        );
        let cluster = "outbound|8080||catalog.shop.svc.cluster.local";
        assert_ne!(
            a.endpoints(cluster).map(|r| &r.version),
            b.endpoints(cluster).map(|r| &r.version)
        );
    }

    #[test]
    fn concurrent_callers_share_one_resolution() {
        let generation = Arc::new(generation(SHOP));
        let key = generation.view_key("shop", &BTreeMap::new());
        let views: Vec<Arc<View>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| generation.view(&key)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert!(views.iter().all(|v| Arc::ptr_eq(v, &views[0])));
        assert!(generation.is_resolved(&key));
    }

    #[test]
    fn only_labels_read_by_source_labels_split_views() {
        let generation = generation(SHOP);
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let plain = generation.view_key(
            "shop",
            &labels(&[("app", "web"), ("pod-template-hash", "x")]),
        );
        assert!(plain.labels.is_empty());
        let canary = generation.view_key("shop", &labels(&[("app", "web"), ("canary", "true")]));
        assert_eq!(canary.labels, labels(&[("canary", "true")]));
        generation.precompute([&plain, &canary]);
        let name = "catalog:8080";
        assert_ne!(
            generation
                .view(&plain)
                .destination(name)
                .map(|r| r.version.clone()),
            generation
                .view(&canary)
                .destination(name)
                .map(|r| r.version.clone()),
            "the canary's first route applies to it only"
        );
    }
}
