//! The index: one `Generation` per debounced snapshot, the views resolved from it (one per
//! namespace and set of labels that some `sourceLabels` reads), and each view cut into the wire
//! resources: one `Destination` per `FQDN:port` (routes and cluster policy, no endpoints) and one
//! `Endpoints` per cluster. Pure: no I/O, no async; the xDS layer only translates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use outrigger_mesh::config::{Cluster, DestinationConfig};
use outrigger_mesh::names::CLUSTER_DOMAIN;
use outrigger_mesh::resolve::{host_matches, resolve_host};
use outrigger_mesh::{ProxyConfig, ProxyId, Resolver, Snapshot};
use prost::Message as _;

use crate::name_pool::NamePool;
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

/// One resource as sent: its name, a version (FNV-1a 64 of the JSON, so every replica gives
/// equal content the same version and a reconnect to another replica resends nothing that did
/// not change), and the protobuf message (`Destination` or `Endpoints`, field 1 = the JSON),
/// encoded once: every proxy is sent these bytes as the `Any` value.
#[derive(Debug, PartialEq, Eq)]
pub struct WireResource {
    /// The canonical name: `FQDN:port` or the cluster name. Pooled ([`WirePool::name`]): the
    /// views key their maps with it.
    pub name: Arc<str>,
    /// Shared: every subscribed stream keeps it as what it last sent.
    pub version: Arc<str>,
    encoded: Vec<u8>,
    /// Where the JSON starts in `encoded` (after the field tag and length).
    json_at: usize,
}

impl WireResource {
    fn new(name: Arc<str>, json: Vec<u8>) -> Self {
        let version = Arc::from(fnv1a(&json));
        // Both messages are `bytes json = 1`: the encoding is the tag, the length, the JSON.
        let encoded = outrigger_xds_api::outrigger::v1alpha1::Endpoints { json }.encode_to_vec();
        let json_at = encoded.len() - json_len(&encoded);
        Self {
            name,
            version,
            encoded,
            json_at,
        }
    }

    /// The content: the JSON payload of the resource.
    pub fn json(&self) -> &[u8] {
        &self.encoded[self.json_at..]
    }

    /// The encoded protobuf message (`Destination` or `Endpoints`: same encoding).
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

/// The length of field 1's bytes in an encoded one-field message (0 for an empty message).
fn json_len(encoded: &[u8]) -> usize {
    let mut length = 0usize;
    for (i, byte) in encoded.iter().skip(1).enumerate().take(10) {
        length |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            break;
        }
    }
    length
}

/// The wire resources alive anywhere (any view, any generation), by name and version: equal
/// content is stored once, however many views and generations hold it. Most destinations
/// resolve the same in every namespace and most resources do not change between generations,
/// so this is what keeps a 20-namespace cluster at the size of one view.
///
/// The names views look resources up by are pooled here too: the 20 namespace views of
/// bench/pilot-load named the same 1,000 destinations and 3,000 clusters, and most of the
/// same aliases and addresses, each with `String`s of its own (~250,000 small strings), and a
/// patched view copied its maps' strings again.
#[derive(Debug, Default)]
pub struct WirePool {
    resources: Mutex<HashMap<(String, String), Weak<WireResource>>>,
    names: NamePool,
}

impl WirePool {
    /// The pooled resource of this name and content.
    pub fn intern(&self, name: &str, json: Vec<u8>) -> Arc<WireResource> {
        let version = fnv1a(&json);
        let key = (name.to_owned(), version);
        let mut resources = self.lock();
        if let Some(live) = resources.get(&key).and_then(Weak::upgrade)
            && live.json() == json.as_slice()
        {
            return live;
        }
        let resource = Arc::new(WireResource::new(self.name(name), json));
        resources.insert(key, Arc::downgrade(&resource));
        resource
    }

    /// The pooled copy of a name (a resource's, an alias's, an address's).
    pub fn name(&self, name: &str) -> Arc<str> {
        self.names.intern(name)
    }

    /// Forgets the resources no view holds any more; returns how many are alive.
    pub fn prune(&self) -> usize {
        let mut resources = self.lock();
        resources.retain(|_, weak| weak.strong_count() > 0);
        resources.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Weak<WireResource>>> {
        self.resources.lock().unwrap_or_else(|p| p.into_inner())
    }
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

fn wire(pool: &WirePool, name: &str, value: &impl Serialize) -> Arc<WireResource> {
    pool.intern(name, serde_json::to_vec(value).unwrap_or_default())
}

/// Cluster names a destination's routes send to (the `cluster` of every weighted destination
/// of its HTTP, TLS and TCP routes: the only place the model names a cluster).
fn clusters_named(destination: &DestinationConfig) -> BTreeSet<&str> {
    let http = destination
        .http
        .routes
        .iter()
        .flat_map(|r| &r.action.destinations);
    let l4 = destination
        .tls
        .iter()
        .chain(&destination.tcp)
        .flat_map(|r| &r.destinations);
    http.chain(l4).map(|d| d.cluster.as_str()).collect()
}

/// How a view finds a destination by the names a proxy meets (the typed configuration is not
/// kept: its content is in the wire resources). Shared by a view and its patched successors.
#[derive(Debug, Default)]
struct Lookup {
    /// `ClusterIP:port` → destination key.
    addresses: HashMap<Arc<str>, Arc<str>>,
    /// Every authority an application may send → destination key (as `ProxyConfig`).
    host_aliases: HashMap<Arc<str>, Arc<str>>,
}

/// One resolved view, cut into wire resources.
#[derive(Debug, Clone)]
pub struct View {
    lookup: Arc<Lookup>,
    /// Keyed by the resources' own (pooled) names.
    destinations: HashMap<Arc<str>, Arc<WireResource>>,
    endpoints: HashMap<Arc<str>, Arc<WireResource>>,
}

/// The `Destination` resources of `config` whose key `wanted` accepts.
fn destination_resources(
    config: &ProxyConfig,
    pool: &WirePool,
    wanted: impl Fn(&str, &DestinationConfig) -> bool,
) -> HashMap<Arc<str>, Arc<WireResource>> {
    let mut addresses: HashMap<&str, Vec<&str>> = HashMap::new();
    for (address, key) in &config.addresses {
        addresses.entry(key.as_str()).or_default().push(address);
    }
    let mut destinations = HashMap::new();
    for (key, destination) in &config.destinations {
        if !wanted(key, destination) {
            continue;
        }
        let clusters = clusters_named(destination)
            .into_iter()
            .filter_map(|name| config.clusters.get_key_value(name))
            .map(|(name, cluster)| {
                let cluster = Cluster {
                    endpoints: Vec::new(),
                    ..cluster.clone()
                };
                (name.as_str(), cluster)
            })
            .collect();
        let payload = DestinationPayload {
            destination,
            clusters,
            addresses: addresses.get(key.as_str()).cloned().unwrap_or_default(),
        };
        let resource = wire(pool, key, &payload);
        destinations.insert(resource.name.clone(), resource);
    }
    destinations
}

impl View {
    pub fn new(config: ProxyConfig, pool: &WirePool) -> Self {
        let destinations = destination_resources(&config, pool, |_, _| true);
        let endpoints = config
            .clusters
            .iter()
            .map(|(name, cluster)| {
                let resource = wire(pool, name, &cluster.endpoints);
                (resource.name.clone(), resource)
            })
            .collect();
        let pooled = |names: BTreeMap<String, String>| {
            names
                .iter()
                .map(|(name, key)| (pool.name(name), pool.name(key)))
                .collect()
        };
        Self {
            lookup: Arc::new(Lookup {
                addresses: pooled(config.addresses),
                host_aliases: pooled(config.host_aliases),
            }),
            destinations,
            endpoints,
        }
    }

    /// The destination a proxy asked for by any name it may meet: `FQDN:port`,
    /// `ClusterIP:port`, or a short name with port (`catalog:8080`, `catalog.shop:8080`); the
    /// order of `ProxyConfig::destination` (address, alias, key), a port required.
    pub fn destination(&self, name: &str) -> Option<&Arc<WireResource>> {
        name.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())?;
        let key = self
            .lookup
            .addresses
            .get(name)
            .or_else(|| self.lookup.host_aliases.get(name))
            .map_or(name, |key| &**key);
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

    /// Every wire resource of the view (destinations, then endpoints), for counting.
    pub fn resources(&self) -> impl Iterator<Item = &Arc<WireResource>> {
        self.destinations.values().chain(self.endpoints.values())
    }

    /// This view with the endpoints of `clusters` replaced (an endpoint-only change: the
    /// destinations do not read endpoints, so they stay as they are).
    fn with_endpoints(&self, clusters: &BTreeMap<String, Cluster>, pool: &WirePool) -> Self {
        let mut view = self.clone();
        for (name, cluster) in clusters {
            if let Some(slot) = view.endpoints.get_mut(name.as_str()) {
                *slot = wire(pool, name, &cluster.endpoints);
            }
        }
        view
    }

    /// This view with the destinations `config` resolved replaced (the ones whose host
    /// `affected` accepts; a VirtualService change: the endpoints do not read routes).
    fn with_destinations(
        &self,
        config: &ProxyConfig,
        pool: &WirePool,
        affected: &impl Fn(&str) -> bool,
    ) -> Self {
        let mut view = self.clone();
        let changed = destination_resources(config, pool, |key, d| {
            affected(&d.host) && view.destinations.contains_key(key)
        });
        view.destinations.extend(changed);
        view
    }
}

/// What an incremental rebuild re-resolves; anything else in a batch means a full rebuild.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Patch {
    /// Services whose EndpointSlices or Pods changed: their clusters' endpoints.
    pub endpoints_of: ServiceRefs,
    /// VirtualServices `(namespace, name)` created, edited or deleted: the destinations whose
    /// host one of them names, before or after the change.
    pub virtual_services: BTreeSet<(String, String)>,
}

/// The Services whose endpoints an endpoint-only batch changed, as `(namespace, name)`.
pub type ServiceRefs = BTreeSet<(String, String)>;

type ViewCells = HashMap<ViewKey, Arc<OnceLock<Arc<View>>>>;

/// One snapshot of the cluster and the views resolved from it so far.
#[derive(Debug)]
pub struct Generation {
    /// Increases by one per rebuild (the `system_version_info` pilot sends).
    pub number: u64,
    /// When the first change that this generation contains was seen (for convergence time).
    pub changed_at: Instant,
    snapshot: Arc<Snapshot>,
    pool: Arc<WirePool>,
    source_label_keys: BTreeSet<String>,
    pods: HashMap<(String, String), usize>,
    /// One cell per key: the first caller resolves, concurrent callers wait for it.
    views: Mutex<ViewCells>,
}

impl Generation {
    /// A generation of `snapshot` whose views share `pool`'s resources (pilot keeps one pool
    /// for its lifetime, so consecutive generations share what did not change).
    pub fn new(number: u64, changed_at: Instant, snapshot: Snapshot, pool: Arc<WirePool>) -> Self {
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
            .map(|(index, pod)| ((pod.namespace.clone(), pod.name.clone()), index))
            .collect();
        Self {
            number,
            changed_at,
            snapshot: Arc::new(snapshot),
            pool,
            source_label_keys,
            pods,
            views: Mutex::new(HashMap::new()),
        }
    }

    /// The next generation after an endpoint-only change of `services` (see [`Self::patched`]).
    pub fn with_endpoints_of(
        &self,
        number: u64,
        changed_at: Instant,
        snapshot: Snapshot,
        services: &ServiceRefs,
    ) -> Self {
        let patch = Patch {
            endpoints_of: services.clone(),
            ..Patch::default()
        };
        self.patched(number, changed_at, snapshot, &patch)
            .unwrap_or_else(|next| *next)
    }

    /// The next generation after the changes of `patch`, `snapshot` being the cluster now:
    /// every view `self` has resolved is carried over with only what the patch touches
    /// re-resolved (from a snapshot of just what that reads), instead of re-resolving every
    /// destination of every view. Equal to a full rebuild: nothing but a cluster's endpoints
    /// reads EndpointSlices or Pods, and a VirtualService reaches only the destinations of the
    /// hosts it names. `Err` (a generation without views, resolved on demand as after a full
    /// rebuild) when the change moves proxies between views (the `sourceLabels` keys changed).
    pub fn patched(
        &self,
        number: u64,
        changed_at: Instant,
        snapshot: Snapshot,
        patch: &Patch,
    ) -> Result<Self, Box<Self>> {
        let next = Self::new(number, changed_at, snapshot, self.pool.clone());
        if next.source_label_keys != self.source_label_keys {
            return Err(Box::new(next));
        }
        let endpoints_part = next.part_of(&patch.endpoints_of);
        let endpoints = Resolver::new(&endpoints_part);
        let hosts = self.hosts_of(&patch.virtual_services, &next);
        let affected = |host: &str| hosts.iter().any(|h| host_matches(h, host));
        let routes_part = if hosts.is_empty() {
            Snapshot::default()
        } else {
            next.routes_part(&affected)
        };
        let routes = Resolver::new(&routes_part);
        let resolved: Vec<(ViewKey, Arc<View>)> = self
            .lock_views()
            .iter()
            .filter_map(|(key, cell)| Some((key.clone(), cell.get()?.clone())))
            .collect();
        let mut views = next.lock_views();
        for (key, view) in resolved {
            let proxy = proxy_of(&key);
            let mut view = (*view).clone();
            if !patch.endpoints_of.is_empty() {
                let clusters = endpoints.resolve(&proxy).clusters;
                view = view.with_endpoints(&clusters, &self.pool);
            }
            if !hosts.is_empty() {
                let config = routes.resolve(&proxy);
                view = view.with_destinations(&config, &self.pool, &affected);
            }
            views.insert(key, Arc::new(OnceLock::from(Arc::new(view))));
        }
        drop(views);
        Ok(next)
    }

    /// The hosts (FQDN patterns) the VirtualServices `ids` name in `self` or in `next`.
    fn hosts_of(&self, ids: &BTreeSet<(String, String)>, next: &Self) -> BTreeSet<String> {
        let mut hosts = BTreeSet::new();
        for generation in [self, next] {
            for vs in &generation.snapshot.virtual_services {
                let namespace = vs.namespace();
                if ids.contains(&(namespace.to_owned(), vs.name().to_owned())) {
                    hosts.extend(vs.spec.hosts.iter().map(|h| resolve_host(h, namespace)));
                }
            }
        }
        hosts
    }

    /// What resolving the destinations of the hosts `affected` accepts reads: those Services,
    /// the Services the VirtualServices applying to them route to (ports and cluster policy),
    /// every ServiceEntry, VirtualService, DestinationRule and Namespace; no endpoints.
    fn routes_part(&self, affected: &impl Fn(&str) -> bool) -> Snapshot {
        let snapshot = &self.snapshot;
        let mut part = Snapshot::default();
        let host_of = |s: &k8s_openapi::api::core::v1::Service| {
            format!(
                "{}.{}.{CLUSTER_DOMAIN}",
                s.metadata.name.as_deref().unwrap_or_default(),
                s.metadata.namespace.as_deref().unwrap_or("default")
            )
        };
        let mut wanted: BTreeSet<String> = snapshot
            .services
            .iter()
            .map(|s| host_of(s))
            .filter(|h| affected(h))
            .collect();
        let targets: Vec<String> = wanted.iter().cloned().collect();
        for vs in &snapshot.virtual_services {
            let namespace = vs.namespace();
            let applies = vs.spec.hosts.iter().any(|h| {
                let h = resolve_host(h, namespace);
                targets.iter().any(|t| host_matches(&h, t))
            });
            if !applies {
                continue;
            }
            let http = vs
                .spec
                .http
                .iter()
                .flat_map(|r| r.route.iter().map(|d| &d.destination));
            let tls = vs
                .spec
                .tls
                .iter()
                .flat_map(|r| r.route.iter().map(|d| &d.destination));
            let tcp = vs
                .spec
                .tcp
                .iter()
                .flat_map(|r| r.route.iter().map(|d| &d.destination));
            for destination in http.chain(tls).chain(tcp) {
                wanted.insert(resolve_host(&destination.host, namespace));
            }
        }
        part.services = snapshot
            .services
            .iter()
            .filter(|s| wanted.contains(&host_of(s)))
            .cloned()
            .collect();
        part.service_entries = snapshot.service_entries.clone();
        part.virtual_services = snapshot.virtual_services.clone();
        part.destination_rules = snapshot.destination_rules.clone();
        part.namespaces = snapshot.namespaces.clone();
        part.gateways = snapshot.gateways.clone();
        part.sidecars = snapshot.sidecars.clone();
        part
    }

    /// What resolving the endpoints of `services` reads: those Services, their EndpointSlices,
    /// the Pods the slices name, every DestinationRule (subsets) and Namespace.
    fn part_of(&self, services: &ServiceRefs) -> Snapshot {
        let snapshot = &self.snapshot;
        let key = |namespace: Option<&String>, name: Option<&String>| {
            (
                namespace.map_or("default", String::as_str).to_owned(),
                name.cloned().unwrap_or_default(),
            )
        };
        let mut part = Snapshot::default();
        part.services = snapshot
            .services
            .iter()
            .filter(|s| {
                services.contains(&key(
                    s.metadata.namespace.as_ref(),
                    s.metadata.name.as_ref(),
                ))
            })
            .cloned()
            .collect();
        part.endpoint_slices = snapshot
            .endpoint_slices
            .iter()
            .filter(|slice| {
                let service = slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(outrigger_api::names::label::SERVICE_NAME));
                services.contains(&key(slice.metadata.namespace.as_ref(), service))
            })
            .cloned()
            .collect();
        let named: BTreeSet<(String, String)> = part
            .endpoint_slices
            .iter()
            .flat_map(|slice| {
                let namespace = slice.metadata.namespace.clone();
                slice
                    .endpoints
                    .iter()
                    .flatten()
                    .filter_map(|e| e.target_ref.as_ref())
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .map(move |r| key(namespace.as_ref(), r.name.as_ref()))
            })
            .collect();
        part.pods = named
            .iter()
            .filter_map(|(namespace, name)| self.pod(namespace, name).cloned())
            .collect();
        part.destination_rules = snapshot.destination_rules.clone();
        part.namespaces = snapshot.namespaces.clone();
        part
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The pod `namespace/name`, if the reflector has it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Arc<outrigger_mesh::PodInfo>> {
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
        cell.get_or_init(|| {
            Arc::new(resolve_view(
                &Resolver::new(&self.snapshot),
                key,
                &self.pool,
            ))
        })
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
                .get_or_init(|| Arc::new(resolve_view(&resolver, key, &self.pool)));
        }
    }

    fn cell(&self, key: &ViewKey) -> Arc<OnceLock<Arc<View>>> {
        self.lock_views().entry(key.clone()).or_default().clone()
    }

    fn lock_views(&self) -> std::sync::MutexGuard<'_, ViewCells> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn proxy_of(key: &ViewKey) -> ProxyId {
    ProxyId {
        namespace: key.namespace.clone(),
        labels: key.labels.clone(),
        ..ProxyId::default()
    }
}

fn resolve_view(resolver: &Resolver<'_>, key: &ViewKey, pool: &WirePool) -> View {
    View::new(resolver.resolve(&proxy_of(key)), pool)
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

    /// `SHOP` plus a second namespace whose proxies see the same catalog.
    fn with_web(yaml: &str) -> String {
        format!("{yaml}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: web}}\n")
    }

    fn snapshot(yaml: &str) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.add_yaml("test", yaml).expect("fixture");
        snapshot
    }

    /// Every resource of a view by name: (destination?, name) → version.
    fn versions(view: &View) -> BTreeMap<(bool, String), String> {
        let destinations = view.destinations.values().map(|r| (true, r));
        let endpoints = view.endpoints.values().map(|r| (false, r));
        destinations
            .chain(endpoints)
            .map(|(d, r)| ((d, r.name.to_string()), r.version.to_string()))
            .collect()
    }

    #[test]
    fn wire_resources_carry_the_encoded_message_and_its_json() {
        for json in [
            Vec::new(),
            b"[]".to_vec(),
            vec![b'x'; 300],
            vec![b'y'; 70_000],
        ] {
            let resource = WireResource::new(Arc::from("r"), json.clone());
            assert_eq!(resource.json(), json.as_slice());
            let decoded =
                outrigger_xds_api::outrigger::v1alpha1::Destination::decode(resource.encoded())
                    .expect("a Destination");
            assert_eq!(decoded.json, json);
            assert_eq!(&*resource.version, fnv1a(&json));
        }
    }

    #[test]
    fn equal_content_is_stored_once_across_views_and_generations() {
        let pool = Arc::new(WirePool::default());
        let yaml = with_web(SHOP);
        let first = Generation::new(1, Instant::now(), snapshot(&yaml), pool.clone());
        let shop = first.view_key("shop", &BTreeMap::new());
        let web = first.view_key("web", &BTreeMap::new());
        let (a, b) = (first.view(&shop), first.view(&web));
        let cluster = "outbound|8080||catalog.shop.svc.cluster.local";
        let name = "catalog.shop.svc.cluster.local:8080";
        assert!(Arc::ptr_eq(
            a.endpoints(cluster).expect("shop"),
            b.endpoints(cluster).expect("web")
        ));
        assert!(Arc::ptr_eq(
            a.destination(name).expect("shop"),
            b.destination(name).expect("web")
        ));
        let second = Generation::new(2, Instant::now(), snapshot(&yaml), pool.clone());
        assert!(Arc::ptr_eq(
            a.destination(name).expect("first"),
            second.view(&shop).destination(name).expect("second")
        ));
        let alive = pool.prune();
        drop((a, b, first, second));
        assert!(alive > 0);
        assert_eq!(pool.prune(), 0, "nothing held, nothing pooled");
    }

    #[test]
    fn an_endpoint_only_rebuild_equals_a_full_one() {
        let pool = Arc::new(WirePool::default());
        let before = Generation::new(1, Instant::now(), snapshot(&with_web(SHOP)), pool.clone());
        let keys = [
            before.view_key("shop", &BTreeMap::new()),
            before.view_key("web", &BTreeMap::new()),
        ];
        before.precompute(&keys);
        let changed = with_web(&SHOP.replace(
            "- addresses: [10.244.0.5]\n  conditions: {ready: true}",
            "- addresses: [10.244.0.5]\n  conditions: {ready: true}\n- addresses: [10.244.0.7]\n  conditions: {ready: false}",
        ));
        assert_ne!(changed, with_web(SHOP));
        let services = [("shop".to_owned(), "catalog".to_owned())].into();
        let patched = before.with_endpoints_of(2, Instant::now(), snapshot(&changed), &services);
        let full = Generation::new(2, Instant::now(), snapshot(&changed), pool.clone());
        for key in &keys {
            assert!(patched.is_resolved(key), "carried over, not re-resolved");
            let (patched, full, old) = (patched.view(key), full.view(key), before.view(key));
            assert_eq!(versions(&patched), versions(&full), "{key:?}");
            assert_ne!(versions(&patched), versions(&old), "{key:?}");
            let name = "catalog.shop.svc.cluster.local:8080";
            assert!(Arc::ptr_eq(
                patched.destination(name).expect("patched"),
                old.destination(name).expect("old")
            ));
        }
        // A Service nobody changed keeps its endpoints as they were.
        let none =
            before.with_endpoints_of(3, Instant::now(), snapshot(&changed), &ServiceRefs::new());
        assert_eq!(
            versions(&none.view(&keys[0])),
            versions(&before.view(&keys[0]))
        );
    }

    #[test]
    fn a_virtual_service_rebuild_equals_a_full_one() {
        let pool = Arc::new(WirePool::default());
        let extra = "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\nspec:\n  clusterIP: 10.96.0.11\n  ports: [{name: http, port: 9080}]\n";
        let base = with_web(&format!("{SHOP}{extra}"));
        let before = Generation::new(1, Instant::now(), snapshot(&base), pool.clone());
        let keys = [
            before.view_key("shop", &BTreeMap::new()),
            before.view_key("web", &BTreeMap::new()),
        ];
        before.precompute(&keys);
        let vs = ("shop".to_owned(), "catalog".to_owned());
        let patch = Patch {
            virtual_services: [vs].into(),
            ..Patch::default()
        };
        // Edited (a route moves to another subset), moved to another host, deleted.
        let edited = base.replace("subset: v1}}]\n", "subset: v2}}]\n");
        let moved = base.replace("hosts: [catalog]", "hosts: [reviews]");
        for (what, yaml) in [("edited", &edited), ("moved", &moved)] {
            assert_ne!(yaml, &base, "{what}");
            let patched = before
                .patched(2, Instant::now(), snapshot(yaml), &patch)
                .expect("no view moves");
            let full = Generation::new(2, Instant::now(), snapshot(yaml), pool.clone());
            for key in &keys {
                assert!(patched.is_resolved(key));
                let (patched, full, old) = (patched.view(key), full.view(key), before.view(key));
                assert_eq!(versions(&patched), versions(&full), "{what} {key:?}");
                assert_ne!(versions(&patched), versions(&old), "{what} {key:?}");
                let cluster = "outbound|8080||catalog.shop.svc.cluster.local";
                assert!(Arc::ptr_eq(
                    patched.endpoints(cluster).expect("patched"),
                    old.endpoints(cluster).expect("old")
                ));
            }
        }
        // An edit that drops the only `sourceLabels`: views merge, so a full rebuild.
        assert!(
            before
                .patched(
                    3,
                    Instant::now(),
                    snapshot(&base.replace(
                        "sourceLabels: {canary: \"true\"}",
                        "headers: {x: {exact: y}}"
                    )),
                    &patch
                )
                .is_err(),
            "the sourceLabels keys changed"
        );
    }

    fn generation(yaml: &str) -> Generation {
        let mut snapshot = Snapshot::default();
        snapshot.add_yaml("test", yaml).expect("fixture");
        Generation::new(1, Instant::now(), snapshot, Arc::default())
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
            assert_eq!(&*resource.name, canonical);
        }
        assert!(view.destination("nothing:80").is_none());
        assert!(view.destination("catalog").is_none(), "a name needs a port");
        let payload: serde_json::Value =
            serde_json::from_slice(view.destination(canonical).expect("dest").json())
                .expect("json");
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
        assert!(String::from_utf8_lossy(endpoints.json()).contains("10.244.0.5:8080"));
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
