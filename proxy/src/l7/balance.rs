//! Upstream clusters at run time: their endpoints with active-request counts and outlier
//! state, the load balancer (`LEAST_REQUEST` by power of two choices, `ROUND_ROBIN`, `RANDOM`,
//! `consistentHash` on a ring) over the endpoints not ejected, and the connection-pool limits
//! that answer 503 `UO` on overflow (requests here, connections in [`crate::l7::limit`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use outrigger_api::workload_labels;
use outrigger_mesh::ProxyConfig as MeshConfig;
use outrigger_mesh::config::{Cluster, Endpoint, Health};
use outrigger_mesh::protocol::Protocol;

use crate::l7::hash::{HashError, HashPolicy};
use crate::l7::limit::ConnectionLimit;
use crate::l7::outlier::{self, Detector, Observed, Policy};
use crate::l7::upstream::Pool;

/// A cluster of the configuration the proxy cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("clusters.{cluster}.endpoints[{index}].address: {address:?} is not ip:port")]
    Endpoint {
        cluster: String,
        index: usize,
        address: String,
    },
    #[error("clusters.{cluster}.consistentHash.{}: {}", .error.field, .error.message)]
    ConsistentHash { cluster: String, error: HashError },
}

/// Istio's `loadBalancer.simple`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancer {
    /// Istio's default: two random endpoints, the one with fewer active requests.
    LeastRequest,
    RoundRobin,
    Random,
}

impl Balancer {
    fn parse(name: &str) -> Self {
        match name {
            "ROUND_ROBIN" => Balancer::RoundRobin,
            "RANDOM" => Balancer::Random,
            // LEAST_REQUEST, LEAST_CONN, UNSPECIFIED (resolve normalises them) and PASSTHROUGH,
            // which has no meaning when the cluster lists its endpoints.
            _ => Balancer::LeastRequest,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Balancer::LeastRequest => "LEAST_REQUEST",
            Balancer::RoundRobin => "ROUND_ROBIN",
            Balancer::Random => "RANDOM",
        }
    }
}

/// One upstream address with what metrics and `/clusters` need. It is the only copy of the
/// configuration's endpoint: [`Clusters::build`] moves the endpoints out of the model, and
/// [`EndpointState::to_model`] gives them back for `/config_dump`.
#[derive(Debug)]
pub struct EndpointState {
    /// `ip:port` or `hostname:port`, as the URI authority of upstream requests.
    pub address: String,
    pub health: Health,
    /// Metric labels, shared by every endpoint with the same value (one workload has many).
    pub workload: Arc<str>,
    pub namespace: Arc<str>,
    pub app: Arc<str>,
    pub version: Arc<str>,
    /// The rest of the model's endpoint, for `/config_dump` only.
    model: ModelFields,
    /// Requests in flight to this endpoint (shared with the previous configuration's entry
    /// for the same address, so a reload does not forget the load).
    pub active: Arc<AtomicU32>,
    /// Requests sent, for `/clusters`.
    pub total: Arc<AtomicU32>,
    /// Outlier detection (carried over a reload like the counters); one shared, never
    /// used detector when the cluster has no `outlierDetection` (no allocation per endpoint).
    pub outlier: Arc<Detector>,
    /// The upstream connections, created on first use (carried over a reload when the
    /// protocol stays the same).
    pool: OnceLock<Arc<Pool>>,
}

/// The fields of the model's endpoint that the run-time state does not use. The label map is
/// shared by every endpoint with the same labels (the pods of one Deployment), the strings by
/// every endpoint with the same value (a pod's name is often its workload's).
#[derive(Debug)]
struct ModelFields {
    labels: Arc<BTreeMap<String, String>>,
    /// The model's `workload` (`None` is shown as `unknown` in the metric label).
    workload: Option<Arc<str>>,
    pod: Option<Arc<str>>,
    service_account: Option<Arc<str>>,
}

impl EndpointState {
    /// The configuration's endpoint this state was built from, field for field.
    pub fn to_model(&self) -> Endpoint {
        Endpoint {
            address: self.address.clone(),
            health: self.health,
            labels: self.model.labels.clone(),
            workload: self.model.workload.as_deref().map(str::to_owned),
            pod: self.model.pod.as_deref().map(str::to_owned),
            namespace: self.namespace.to_string(),
            service_account: self.model.service_account.as_deref().map(str::to_owned),
        }
    }

    /// Connections opened so far (Envoy's `cx_total`).
    pub fn connections_opened(&self) -> u64 {
        self.pool
            .get()
            .map_or(0, |p| p.opened.load(Ordering::Relaxed))
    }

    /// Connections open now (Envoy's `cx_active`).
    pub fn connections_open(&self) -> u64 {
        self.pool
            .get()
            .map_or(0, |p| p.open.load(Ordering::Relaxed))
    }
}

/// The detector of endpoints whose cluster has no outlier detection.
fn unused_detector() -> Arc<Detector> {
    static UNUSED: OnceLock<Arc<Detector>> = OnceLock::new();
    UNUSED.get_or_init(Arc::default).clone()
}

/// One cluster at run time.
#[derive(Debug)]
pub struct ClusterState {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
    pub balancer: Balancer,
    /// The upstream speaks HTTP/2 (`http2`, `grpc`): one multiplexed connection per endpoint.
    pub http2: bool,
    /// A host outside the mesh: no metadata-exchange headers go to it, none are read from it.
    pub mesh_external: bool,
    pub endpoints: Vec<EndpointState>,
    /// Indices of the healthy and of the draining endpoints (the configuration does not
    /// change while it is in force).
    healthy: Vec<usize>,
    draining: Vec<usize>,
    pub connect_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// `maxRequestsPerConnection`: an upstream connection closes after this many requests.
    pub max_requests_per_connection: Option<u32>,
    /// Requests in flight over the whole cluster and the cap (`http2MaxRequests`, Envoy's
    /// `max_requests`, whatever the protocol).
    pub active: Arc<AtomicU32>,
    pub max_active: Option<u32>,
    /// Upstream connections over the whole cluster against `maxConnections`, and the
    /// requests waiting for one against `http1MaxPendingRequests`.
    pub connections: Arc<ConnectionLimit>,
    /// Retries in flight and the cap (`maxRetries`).
    pub retries: Arc<AtomicU32>,
    pub max_retries: Option<u32>,
    /// Requests refused by the limits (`UO`).
    pub overflows: Arc<AtomicU32>,
    /// `outlierDetection`, when the DestinationRule sets it.
    pub outlier: Option<Policy>,
    /// `consistentHash`, when the DestinationRule sets it (it replaces `balancer`).
    pub hash: Option<HashPolicy>,
    round_robin: AtomicUsize,
}

/// A request slot of a cluster, released when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn acquire(counter: &Arc<AtomicU32>, limit: Option<u32>) -> Option<Slot> {
    let previous = counter.fetch_add(1, Ordering::Relaxed);
    let slot = Slot(counter.clone());
    match limit {
        Some(limit) if previous >= limit => None, // dropping `slot` gives the unit back
        _ => Some(slot),
    }
}

impl ClusterState {
    /// Builds the run-time state of `cluster`, moving its endpoints out of it (the state keeps
    /// the only copy; see [`EndpointState::to_model`]).
    fn build(cluster: &mut Cluster, names: &mut Interner) -> Result<Self, BuildError> {
        let model = std::mem::take(&mut cluster.endpoints);
        let mut endpoints = Vec::with_capacity(model.len());
        for (index, endpoint) in model.into_iter().enumerate() {
            let valid = endpoint
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(BuildError::Endpoint {
                    cluster: cluster.name.clone(),
                    index,
                    address: endpoint.address,
                });
            }
            // `destination_app` and `destination_version`, as Istio's telemetry reads them.
            let label = |key: &str| endpoint.labels.get(key).map(String::as_str);
            let unknown = crate::workload::UNKNOWN;
            let app = names.get(workload_labels::app(label).unwrap_or(unknown));
            let version = names.get(workload_labels::version(label).unwrap_or(unknown));
            let workload = endpoint.workload.as_deref().map(|w| names.get(w));
            endpoints.push(EndpointState {
                health: endpoint.health,
                workload: workload
                    .clone()
                    .unwrap_or_else(|| names.get(crate::workload::UNKNOWN)),
                namespace: names.get(&endpoint.namespace),
                app,
                version,
                model: ModelFields {
                    labels: names.labels(endpoint.labels),
                    workload,
                    pod: endpoint.pod.as_deref().map(|p| names.get(p)),
                    service_account: endpoint.service_account.as_deref().map(|s| names.get(s)),
                },
                address: endpoint.address,
                active: Arc::default(),
                total: Arc::default(),
                outlier: if cluster.outlier_detection.is_some() {
                    Arc::default()
                } else {
                    unused_detector()
                },
                pool: OnceLock::new(),
            });
        }
        let hash = match &cluster.consistent_hash {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => {
                let addresses: Vec<&str> = endpoints.iter().map(|e| e.address.as_str()).collect();
                Some(HashPolicy::parse(value, &addresses).map_err(|error| {
                    BuildError::ConsistentHash {
                        cluster: cluster.name.clone(),
                        error,
                    }
                })?)
            }
        };
        let pool = &cluster.connection_pool;
        let http2 = matches!(cluster.protocol, Protocol::Http2 | Protocol::Grpc);
        Ok(ClusterState {
            name: cluster.name.clone(),
            host: cluster.host.clone(),
            port: cluster.port,
            subset: cluster.subset.clone(),
            balancer: Balancer::parse(&cluster.load_balancer),
            http2,
            mesh_external: cluster.mesh_external,
            healthy: indices(&endpoints, Health::Healthy),
            draining: indices(&endpoints, Health::Draining),
            endpoints,
            connect_timeout: pool.connect_timeout_ms.map(Duration::from_millis),
            idle_timeout: pool.idle_timeout_ms.map(Duration::from_millis),
            max_requests_per_connection: pool.max_requests_per_connection,
            active: Arc::default(),
            max_active: pool.http2_max_requests,
            connections: Arc::new(ConnectionLimit::new(
                pool.max_connections,
                pool.http1_max_pending_requests,
            )),
            retries: Arc::default(),
            max_retries: pool.max_retries,
            overflows: Arc::default(),
            outlier: cluster.outlier_detection.as_ref().map(Policy::from_model),
            hash,
            round_robin: AtomicUsize::new(0),
        })
    }

    /// A cluster `c` of healthy endpoints at `addresses`, for tests of other modules.
    #[cfg(test)]
    pub(crate) fn for_tests(
        addresses: &[std::net::SocketAddr],
        protocol: Protocol,
        connection_pool: outrigger_mesh::config::ConnectionPool,
    ) -> Self {
        let endpoints = addresses
            .iter()
            .map(|address| outrigger_mesh::config::Endpoint {
                address: address.to_string(),
                health: Health::Healthy,
                labels: Default::default(),
                workload: None,
                pod: None,
                namespace: "test".into(),
                service_account: None,
            })
            .collect();
        let mut cluster = Cluster {
            name: "c".into(),
            host: "c.test.svc.cluster.local".into(),
            port: 80,
            subset: None,
            protocol,
            destination_rule: None,
            load_balancer: "ROUND_ROBIN".into(),
            consistent_hash: None,
            connection_pool,
            outlier_detection: None,
            tls: None,
            mesh_external: false,
            endpoints,
        };
        ClusterState::build(&mut cluster, &mut Interner::default()).expect("a valid test cluster")
    }

    /// Envoy's name of the balancer in force (`RING_HASH` or `MAGLEV` with `consistentHash`).
    pub fn lb_policy(&self) -> &'static str {
        self.hash
            .as_ref()
            .map_or(self.balancer.as_str(), |h| h.lb_policy)
    }

    /// The connection pool of endpoint `index`, created on first use.
    pub fn pool(&self, index: usize) -> &Arc<Pool> {
        self.endpoints[index]
            .pool
            .get_or_init(|| Pool::new(self.connections.clone()))
    }

    /// A request slot, or `None` when `http2MaxRequests` requests are in flight (503 `UO`).
    pub fn request_slot(&self) -> Option<Slot> {
        let slot = acquire(&self.active, self.max_active);
        if slot.is_none() {
            self.overflows.fetch_add(1, Ordering::Relaxed);
        }
        slot
    }

    /// A retry slot, or `None` when `maxRetries` retries are already in flight.
    pub fn retry_slot(&self) -> Option<Slot> {
        acquire(&self.retries, self.max_retries)
    }

    /// Chooses an endpoint: healthy ones not ejected by outlier detection first (all healthy
    /// ones in panic mode, below `minHealthPercent`), draining ones only when none is left,
    /// avoiding the ones `tried` already when others remain (Istio's previous-hosts retry
    /// predicate). With `consistentHash`, the ring from `key` decides (random when the request
    /// has no key). `None`: no usable endpoint (503 `UH`).
    pub fn pick(&self, tried: &[usize], key: Option<u64>) -> Option<usize> {
        let now = if self.outlier.is_some() {
            outlier::now_ms()
        } else {
            0
        };
        let all = self.candidates(now);
        if all.is_empty() {
            return None;
        }
        // Indices are in ascending order: membership is a binary search.
        if let Some(hash) = &self.hash {
            let allowed = |i: usize| all.binary_search(&i).is_ok();
            return hash
                .pick(key, |i| allowed(i) && !tried.contains(&i))
                .or_else(|| hash.pick(key, allowed));
        }
        let fresh: Vec<usize>;
        let candidates: &[usize] = if tried.is_empty() {
            &all
        } else {
            fresh = all.iter().copied().filter(|i| !tried.contains(i)).collect();
            if fresh.is_empty() { &all } else { &fresh }
        };
        let n = candidates.len();
        let chosen = match self.balancer {
            Balancer::RoundRobin => {
                candidates[self.round_robin.fetch_add(1, Ordering::Relaxed) % n]
            }
            Balancer::Random => candidates[fastrand::usize(..n)],
            Balancer::LeastRequest if n == 1 => candidates[0],
            Balancer::LeastRequest => {
                let a = candidates[fastrand::usize(..n)];
                let mut b = candidates[fastrand::usize(..n - 1)];
                if b == a {
                    b = candidates[n - 1];
                }
                let load = |i: usize| self.endpoints[i].active.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        Some(chosen)
    }

    /// The endpoints the balancer may choose from at `now` (see [`ClusterState::pick`]), in
    /// ascending order; borrowed (no allocation) unless some endpoint is ejected.
    fn candidates(&self, now: u64) -> Cow<'_, [usize]> {
        let Some(policy) = &self.outlier else {
            return if self.healthy.is_empty() {
                Cow::Borrowed(&self.draining)
            } else {
                Cow::Borrowed(&self.healthy)
            };
        };
        let ejected = |i: &usize| self.endpoints[*i].outlier.is_ejected(now);
        let out = self.healthy.iter().filter(|i| ejected(i)).count();
        let usable = self.healthy.len() - out;
        if usable > 0 && out == 0 {
            return Cow::Borrowed(&self.healthy);
        }
        if policy.panics(usable, self.healthy.len()) {
            return Cow::Borrowed(&self.healthy);
        }
        if usable > 0 {
            return Cow::Owned(
                self.healthy
                    .iter()
                    .copied()
                    .filter(|i| !ejected(i))
                    .collect(),
            );
        }
        Cow::Owned(
            self.draining
                .iter()
                .copied()
                .filter(|i| !ejected(i))
                .collect(),
        )
    }

    /// Tells outlier detection how a try to endpoint `index` went, and ejects the endpoint
    /// when a threshold is reached and `maxEjectionPercent` allows it.
    pub fn observe(&self, index: usize, observed: Observed) {
        let (Some(policy), Some(endpoint)) = (&self.outlier, self.endpoints.get(index)) else {
            return;
        };
        if !endpoint.outlier.observe(policy, observed) {
            return;
        }
        let now = outlier::now_ms();
        if endpoint.outlier.is_ejected(now) {
            return;
        }
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.outlier.is_ejected(now))
            .count();
        if !policy.may_eject(ejected, self.endpoints.len()) {
            tracing::info!(
                cluster = %self.name,
                address = %endpoint.address,
                ejected,
                max_ejection_percent = policy.max_ejection_percent,
                "outlier detection: not ejecting, maxEjectionPercent reached"
            );
            return;
        }
        let time = endpoint.outlier.eject(policy, now);
        tracing::info!(
            cluster = %self.name,
            address = %endpoint.address,
            ejection_ms = time.as_millis() as u64,
            ejections = endpoint.outlier.ejections(),
            "outlier detection: endpoint ejected"
        );
    }
}

/// One shared copy of each string and of each label map of the endpoints while a
/// configuration is built (10,000 endpoints have a few hundred distinct values).
#[derive(Debug, Default)]
struct Interner {
    strings: HashSet<Arc<str>>,
    labels: HashSet<Arc<BTreeMap<String, String>>>,
}

impl Interner {
    fn get(&mut self, value: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(value) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(value);
        self.strings.insert(shared.clone());
        shared
    }

    /// The model's map when the parse shared it already (`sharing_labels`), else one per value.
    fn labels(&mut self, labels: Arc<BTreeMap<String, String>>) -> Arc<BTreeMap<String, String>> {
        if let Some(shared) = self.labels.get(&*labels) {
            return shared.clone();
        }
        self.labels.insert(labels.clone());
        labels
    }
}

fn indices(endpoints: &[EndpointState], health: Health) -> Vec<usize> {
    endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.health == health)
        .map(|(i, _)| i)
        .collect()
}

/// Every cluster of a configuration by name.
#[derive(Debug, Default)]
pub struct Clusters(HashMap<String, Arc<ClusterState>>);

impl Clusters {
    /// Builds the run-time state; an endpoint address that is not `host:port` or a bad
    /// `consistentHash` is refused. The endpoints move out of `config` into the state (each
    /// cluster of `config` is left with none); [`Clusters::endpoints_of`] gives them back.
    pub fn build(config: &mut MeshConfig) -> Result<Self, BuildError> {
        let mut clusters = HashMap::with_capacity(config.clusters.len());
        let mut names = Interner::default();
        for (name, cluster) in &mut config.clusters {
            let state = ClusterState::build(cluster, &mut names).map_err(|error| match error {
                // The configuration's key names the cluster in errors.
                BuildError::Endpoint { index, address, .. } => BuildError::Endpoint {
                    cluster: name.clone(),
                    index,
                    address,
                },
                BuildError::ConsistentHash { error, .. } => BuildError::ConsistentHash {
                    cluster: name.clone(),
                    error,
                },
            })?;
            clusters.insert(name.clone(), Arc::new(state));
        }
        Ok(Clusters(clusters))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ClusterState>> {
        self.0.get(name)
    }

    /// The model's endpoints of cluster `name`, as the configuration listed them.
    pub fn endpoints_of(&self, name: &str) -> Vec<Endpoint> {
        self.0.get(name).map_or_else(Vec::new, |state| {
            state
                .endpoints
                .iter()
                .map(EndpointState::to_model)
                .collect()
        })
    }

    /// Sorted by name (for `/clusters`).
    pub fn sorted(&self) -> Vec<&Arc<ClusterState>> {
        let mut all: Vec<_> = self.0.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Shares the counters of the clusters and endpoints that `previous` had too, so the load
    /// in flight, the connections open and the pool limits carry over a reload.
    pub fn inherit(&mut self, previous: &Clusters) {
        for (name, state) in &mut self.0 {
            let Some(old) = previous.0.get(name) else {
                continue;
            };
            let Some(state) = Arc::get_mut(state) else {
                continue;
            };
            state.active = old.active.clone();
            state.retries = old.retries.clone();
            state.overflows = old.overflows.clone();
            // The connections still open count against the new caps.
            old.connections.set_caps(&state.connections);
            state.connections = old.connections.clone();
            for endpoint in &mut state.endpoints {
                if let Some(before) = old.endpoints.iter().find(|e| e.address == endpoint.address) {
                    endpoint.active = before.active.clone();
                    endpoint.total = before.total.clone();
                    if state.outlier.is_some() && old.outlier.is_some() {
                        endpoint.outlier = before.outlier.clone();
                    }
                    if state.http2 == old.http2
                        && let Some(pool) = before.pool.get()
                    {
                        endpoint.pool = OnceLock::from(pool.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_mesh::config::{ConnectionPool, Endpoint, OutlierDetection};

    fn cluster(lb: &str, healths: &[Health], pool: ConnectionPool) -> ClusterState {
        cluster_with(lb, healths, pool, None)
    }

    fn cluster_with(
        lb: &str,
        healths: &[Health],
        pool: ConnectionPool,
        outlier_detection: Option<OutlierDetection>,
    ) -> ClusterState {
        let endpoints = healths
            .iter()
            .enumerate()
            .map(|(i, health)| Endpoint {
                address: format!("10.0.0.{}:8080", i + 1),
                health: *health,
                labels: Default::default(),
                workload: Some(format!("w{i}")),
                pod: None,
                namespace: "shop".into(),
                service_account: None,
            })
            .collect();
        ClusterState::build(
            &mut Cluster {
                name: "outbound|8080||c.shop.svc.cluster.local".into(),
                host: "c.shop.svc.cluster.local".into(),
                port: 8080,
                subset: None,
                protocol: Protocol::Http,
                destination_rule: None,
                load_balancer: lb.into(),
                consistent_hash: None,
                connection_pool: pool,
                outlier_detection,
                tls: None,
                mesh_external: false,
                endpoints,
            },
            &mut Interner::default(),
        )
        .unwrap()
    }

    /// The structural property the large configuration's RSS relies on (bench/http-load):
    /// endpoints that repeat a value share one allocation of it, and the model keeps no second
    /// copy of the endpoints.
    #[test]
    fn endpoints_share_repeated_labels_and_strings_and_leave_the_model() {
        let endpoint = |address: &str| Endpoint {
            address: address.into(),
            health: Health::Healthy,
            // Its own map per endpoint: the build shares equal ones.
            labels: Arc::new(BTreeMap::from([
                ("app".to_owned(), "web".to_owned()),
                ("version".to_owned(), "v1".to_owned()),
                (
                    "service.istio.io/canonical-name".to_owned(),
                    "storefront".to_owned(),
                ),
                (
                    "service.istio.io/canonical-revision".to_owned(),
                    "r7".to_owned(),
                ),
            ])),
            workload: Some("web".into()),
            pod: Some("web-1".into()),
            namespace: "shop".into(),
            service_account: Some("web".into()),
        };
        let cluster = |name: &str, addresses: &[&str]| Cluster {
            name: name.into(),
            host: "web.shop.svc.cluster.local".into(),
            port: 8080,
            subset: None,
            protocol: Protocol::Http,
            destination_rule: None,
            load_balancer: "LEAST_REQUEST".into(),
            consistent_hash: None,
            connection_pool: ConnectionPool::default(),
            outlier_detection: None,
            tls: None,
            mesh_external: false,
            endpoints: addresses.iter().map(|a| endpoint(a)).collect(),
        };
        let mut config: MeshConfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "outrigger.dev/v1alpha1", "kind": "ProxyConfig", "version": "v",
            "proxy": {"namespace": "shop", "pod": "c", "labels": {}, "serviceAccount": "default"},
            "destinations": {}, "addresses": {}, "hostAliases": {}, "clusters": {},
        }))
        .unwrap();
        for name in ["a", "b"] {
            let c = cluster(name, &["10.0.0.1:8080", "10.0.0.2:8080"]);
            config.clusters.insert(name.into(), c);
        }
        let clusters = Clusters::build(&mut config).unwrap();
        assert!(config.clusters.values().all(|c| c.endpoints.is_empty()));
        let all: Vec<&EndpointState> = ["a", "b"]
            .iter()
            .flat_map(|n| clusters.get(n).unwrap().endpoints.iter())
            .collect();
        assert_eq!(all.len(), 4);
        let first = all[0];
        // destination_app/version are the `app`/`version` labels, not the canonical ones.
        assert_eq!((&*first.app, &*first.version), ("web", "v1"));
        for other in &all[1..] {
            assert!(Arc::ptr_eq(&first.model.labels, &other.model.labels));
            assert!(Arc::ptr_eq(&first.namespace, &other.namespace));
            assert!(Arc::ptr_eq(&first.workload, &other.workload));
            assert!(Arc::ptr_eq(&first.app, &other.app));
            let (Some(a), Some(b)) = (&first.model.service_account, &other.model.service_account)
            else {
                panic!("service accounts kept");
            };
            assert!(Arc::ptr_eq(a, b));
        }
        // The same workload name and pod name strings are one allocation too.
        assert!(Arc::ptr_eq(
            first.model.workload.as_ref().unwrap(),
            &first.workload
        ));
        assert_eq!(first.to_model(), endpoint("10.0.0.1:8080"));
    }

    #[test]
    fn round_robin_visits_every_healthy_endpoint_in_turn() {
        let c = cluster(
            "ROUND_ROBIN",
            &[Health::Healthy, Health::Unhealthy, Health::Healthy],
            Default::default(),
        );
        let picks: Vec<_> = (0..4).map(|_| c.pick(&[], None).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let c = cluster(
            "LEAST_REQUEST",
            &[Health::Healthy, Health::Healthy],
            Default::default(),
        );
        c.endpoints[0].active.store(10, Ordering::Relaxed);
        for _ in 0..50 {
            assert_eq!(c.pick(&[], None), Some(1));
        }
    }

    #[test]
    fn draining_endpoints_only_when_nothing_is_healthy_and_none_usable_is_none() {
        let c = cluster(
            "RANDOM",
            &[Health::Draining, Health::Unhealthy],
            Default::default(),
        );
        assert_eq!(c.pick(&[], None), Some(0));
        let c = cluster("RANDOM", &[Health::Unhealthy], Default::default());
        assert_eq!(c.pick(&[], None), None);
    }

    #[test]
    fn retries_avoid_the_endpoints_already_tried() {
        let c = cluster(
            "RANDOM",
            &[Health::Healthy, Health::Healthy],
            Default::default(),
        );
        for _ in 0..50 {
            assert_eq!(c.pick(&[0], None), Some(1));
        }
        assert!(c.pick(&[0, 1], None).is_some(), "all tried: any");
    }

    #[test]
    fn pool_limits_overflow_and_slots_are_given_back() {
        let pool = ConnectionPool {
            http2_max_requests: Some(2),
            ..Default::default()
        };
        let c = cluster("RANDOM", &[Health::Healthy], pool);
        let a = c.request_slot().expect("first");
        let _b = c.request_slot().expect("second");
        assert!(c.request_slot().is_none(), "third overflows");
        drop(a);
        assert!(c.request_slot().is_some(), "a slot was freed");
        assert_eq!(c.overflows.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn connection_caps_no_longer_cap_requests_in_flight() {
        // Envoy: maxConnections caps connections and http1MaxPendingRequests the requests
        // waiting for one (l7::upstream); requests in flight only by http2MaxRequests.
        let pool = ConnectionPool {
            max_connections: Some(1),
            http1_max_pending_requests: Some(1),
            ..Default::default()
        };
        let c = cluster("RANDOM", &[Health::Healthy], pool);
        let slots: Vec<_> = (0..5).map(|_| c.request_slot()).collect();
        assert!(slots.iter().all(Option::is_some));
        assert_eq!(c.max_active, None);
        assert_eq!(c.connections.max(), Some(1));
        assert_eq!(c.connections.max_pending(), Some(1));
    }

    #[test]
    fn a_reload_keeps_the_connection_count_under_the_new_caps() {
        let make = |max| {
            cluster(
                "RANDOM",
                &[Health::Healthy],
                ConnectionPool {
                    max_connections: max,
                    ..Default::default()
                },
            )
        };
        let before = make(None);
        let open = before.connections.try_open().expect("unlimited");
        let name = before.name.clone();
        let previous = Clusters(HashMap::from([(name.clone(), Arc::new(before))]));
        let mut next = Clusters(HashMap::from([(name.clone(), Arc::new(make(Some(1))))]));
        next.inherit(&previous);
        let after = next.get(&name).expect("the cluster");
        assert_eq!(
            after.connections.open(),
            1,
            "the open connection still counts"
        );
        assert!(
            after.connections.try_open().is_none(),
            "at the new cap of 1"
        );
        drop(open);
        assert!(
            after.connections.try_open().is_some(),
            "its slot was given back"
        );
    }

    fn detection(max_ejection_percent: u32, min_health_percent: Option<u32>) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx_errors: 2,
            consecutive_gateway_errors: None,
            interval_ms: 10_000,
            base_ejection_time_ms: 30_000,
            max_ejection_percent,
            min_health_percent,
        }
    }

    const ERROR: Observed = Observed::ServerError { gateway: false };

    #[test]
    fn an_ejected_endpoint_is_skipped_by_every_balancer() {
        for lb in ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"] {
            let c = cluster_with(
                lb,
                &[Health::Healthy; 3],
                Default::default(),
                Some(detection(100, None)),
            );
            c.observe(0, ERROR);
            assert!(
                !c.endpoints[0].outlier.is_ejected(outlier::now_ms()),
                "one error"
            );
            c.observe(0, ERROR);
            assert!(c.endpoints[0].outlier.is_ejected(outlier::now_ms()), "{lb}");
            for _ in 0..60 {
                assert_ne!(c.pick(&[], None), Some(0), "{lb}");
            }
            assert_eq!(c.endpoints[0].outlier.ejections(), 1);
        }
    }

    #[test]
    fn max_ejection_percent_keeps_the_rest_in_service() {
        // 10 % of 3: only the first ejection is allowed.
        let c = cluster_with(
            "ROUND_ROBIN",
            &[Health::Healthy; 3],
            Default::default(),
            Some(detection(10, None)),
        );
        for index in 0..3 {
            c.observe(index, ERROR);
            c.observe(index, ERROR);
        }
        let now = outlier::now_ms();
        let ejected: Vec<bool> = c
            .endpoints
            .iter()
            .map(|e| e.outlier.is_ejected(now))
            .collect();
        assert_eq!(ejected, [true, false, false]);
    }

    #[test]
    fn below_min_health_percent_ejections_are_ignored() {
        // Two of three ejected: 33 % usable is below 50 %, so all three are balanced over.
        let c = cluster_with(
            "ROUND_ROBIN",
            &[Health::Healthy; 3],
            Default::default(),
            Some(detection(100, Some(50))),
        );
        for index in 0..2 {
            c.observe(index, ERROR);
            c.observe(index, ERROR);
        }
        let mut picks: Vec<_> = (0..3).map(|_| c.pick(&[], None).expect("some")).collect();
        picks.sort();
        assert_eq!(picks, [0, 1, 2], "panic mode");
        // Istio's default 0 %: every endpoint ejected means no healthy upstream.
        let c = cluster_with(
            "RANDOM",
            &[Health::Healthy; 2],
            Default::default(),
            Some(detection(100, None)),
        );
        for index in 0..2 {
            c.observe(index, ERROR);
            c.observe(index, ERROR);
        }
        assert_eq!(c.pick(&[], None), None);
    }

    #[test]
    fn successes_keep_an_endpoint_in_and_no_policy_means_no_ejection() {
        let c = cluster_with(
            "RANDOM",
            &[Health::Healthy; 2],
            Default::default(),
            Some(detection(100, None)),
        );
        for _ in 0..10 {
            c.observe(0, ERROR);
            c.observe(0, Observed::Success);
        }
        assert_eq!(c.endpoints[0].outlier.ejections(), 0);
        let c = cluster("RANDOM", &[Health::Healthy; 2], Default::default());
        for _ in 0..10 {
            c.observe(0, ERROR);
        }
        assert_eq!(c.endpoints[0].outlier.ejections(), 0);
    }

    #[test]
    fn a_reload_keeps_ejections_and_pools_of_the_same_endpoints() {
        let make = || {
            cluster_with(
                "RANDOM",
                &[Health::Healthy; 3],
                Default::default(),
                Some(detection(100, None)),
            )
        };
        let before = make();
        before.observe(1, ERROR);
        before.observe(1, ERROR);
        let pool = before.pool(0).clone();
        let name = before.name.clone();
        let previous = Clusters(HashMap::from([(name.clone(), Arc::new(before))]));
        let mut next = Clusters(HashMap::from([(name.clone(), Arc::new(make()))]));
        next.inherit(&previous);
        let after = next.get(&name).expect("the cluster");
        assert!(
            after.endpoints[1].outlier.is_ejected(outlier::now_ms()),
            "still ejected"
        );
        assert!(Arc::ptr_eq(after.pool(0), &pool), "same pool");
        for _ in 0..30 {
            assert_ne!(after.pick(&[], None), Some(1));
        }
    }
}
