//! Upstream clusters at run time: their endpoints with active-request counts, the load
//! balancer (`LEAST_REQUEST` by power of two choices, `ROUND_ROBIN`, `RANDOM`) and the
//! connection-pool limits that answer 503 `UO` on overflow.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use outrigger_mesh::ProxyConfig as MeshConfig;
use outrigger_mesh::config::{Cluster, Health};
use outrigger_mesh::protocol::Protocol;

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

/// One upstream address with what metrics and `/clusters` need.
#[derive(Debug)]
pub struct EndpointState {
    /// `ip:port` or `hostname:port`, as the URI authority of upstream requests.
    pub address: String,
    pub health: Health,
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    /// Requests in flight to this endpoint (shared with the previous configuration's entry
    /// for the same address, so a reload does not forget the load).
    pub active: Arc<AtomicU32>,
    /// Requests sent, for `/clusters`.
    pub total: Arc<AtomicU32>,
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
    pub endpoints: Vec<EndpointState>,
    pub connect_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// Requests in flight over the whole cluster and the cap (`http2MaxRequests`, and for
    /// HTTP/1 `maxConnections + http1MaxPendingRequests`).
    pub active: Arc<AtomicU32>,
    pub max_active: Option<u32>,
    /// Retries in flight and the cap (`maxRetries`).
    pub retries: Arc<AtomicU32>,
    pub max_retries: Option<u32>,
    /// Requests refused by the limits (`UO`).
    pub overflows: Arc<AtomicU32>,
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
    fn build(cluster: &Cluster) -> Result<Self, (usize, String)> {
        let mut endpoints = Vec::with_capacity(cluster.endpoints.len());
        for (index, endpoint) in cluster.endpoints.iter().enumerate() {
            let valid = endpoint
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err((index, endpoint.address.clone()));
            }
            let label = |keys: &[&str]| {
                keys.iter()
                    .find_map(|key| endpoint.labels.get(*key))
                    .cloned()
                    .unwrap_or_else(|| crate::workload::UNKNOWN.to_owned())
            };
            endpoints.push(EndpointState {
                address: endpoint.address.clone(),
                health: endpoint.health,
                workload: endpoint
                    .workload
                    .clone()
                    .unwrap_or_else(|| crate::workload::UNKNOWN.to_owned()),
                namespace: endpoint.namespace.clone(),
                app: label(&[
                    "service.istio.io/canonical-name",
                    "app.kubernetes.io/name",
                    "app",
                ]),
                version: label(&[
                    "service.istio.io/canonical-revision",
                    "app.kubernetes.io/version",
                    "version",
                ]),
                active: Arc::default(),
                total: Arc::default(),
            });
        }
        let pool = &cluster.connection_pool;
        let http2 = matches!(cluster.protocol, Protocol::Http2 | Protocol::Grpc);
        let http1_cap = match (pool.max_connections, pool.http1_max_pending_requests) {
            (Some(connections), Some(pending)) if !http2 => {
                Some(connections.saturating_add(pending))
            }
            _ => None,
        };
        let max_active = match (http1_cap, pool.http2_max_requests) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(ClusterState {
            name: cluster.name.clone(),
            host: cluster.host.clone(),
            port: cluster.port,
            subset: cluster.subset.clone(),
            balancer: Balancer::parse(&cluster.load_balancer),
            http2,
            endpoints,
            connect_timeout: pool.connect_timeout_ms.map(Duration::from_millis),
            idle_timeout: pool.idle_timeout_ms.map(Duration::from_millis),
            active: Arc::default(),
            max_active,
            retries: Arc::default(),
            max_retries: pool.max_retries,
            overflows: Arc::default(),
            round_robin: AtomicUsize::new(0),
        })
    }

    /// A request slot, or `None` when the pool limits are reached (503 `UO`).
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

    /// Chooses an endpoint: healthy ones first (draining ones only when none is healthy),
    /// avoiding the ones `tried` already when others remain (Istio's previous-hosts retry
    /// predicate). `None`: no usable endpoint (503 `UH`).
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let usable = |health: Health| -> Vec<usize> {
            self.endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| e.health == health)
                .map(|(i, _)| i)
                .collect()
        };
        let mut candidates = usable(Health::Healthy);
        if candidates.is_empty() {
            candidates = usable(Health::Draining);
        }
        if candidates.is_empty() {
            return None;
        }
        let fresh: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| !tried.contains(i))
            .collect();
        let candidates = if fresh.is_empty() { candidates } else { fresh };
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
}

/// Every cluster of a configuration by name.
#[derive(Debug, Default)]
pub struct Clusters(HashMap<String, Arc<ClusterState>>);

impl Clusters {
    /// Builds the run-time state; an endpoint address that is not `host:port` is refused as
    /// `(cluster, index, address)`.
    pub fn build(config: &MeshConfig) -> Result<Self, (String, usize, String)> {
        let mut clusters = HashMap::with_capacity(config.clusters.len());
        for (name, cluster) in &config.clusters {
            let state = ClusterState::build(cluster)
                .map_err(|(index, address)| (name.clone(), index, address))?;
            clusters.insert(name.clone(), Arc::new(state));
        }
        Ok(Clusters(clusters))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<ClusterState>> {
        self.0.get(name)
    }

    /// Sorted by name (for `/clusters`).
    pub fn sorted(&self) -> Vec<&Arc<ClusterState>> {
        let mut all: Vec<_> = self.0.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Shares the counters of the clusters and endpoints that `previous` had too, so the load
    /// in flight and the pool limits carry over a reload.
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
            for endpoint in &mut state.endpoints {
                if let Some(before) = old.endpoints.iter().find(|e| e.address == endpoint.address) {
                    endpoint.active = before.active.clone();
                    endpoint.total = before.total.clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_mesh::config::{ConnectionPool, Endpoint};

    fn cluster(lb: &str, healths: &[Health], pool: ConnectionPool) -> ClusterState {
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
        ClusterState::build(&Cluster {
            name: "outbound|8080||c.shop.svc.cluster.local".into(),
            host: "c.shop.svc.cluster.local".into(),
            port: 8080,
            subset: None,
            protocol: Protocol::Http,
            destination_rule: None,
            load_balancer: lb.into(),
            consistent_hash: None,
            connection_pool: pool,
            outlier_detection: None,
            tls: None,
            endpoints,
        })
        .unwrap()
    }

    #[test]
    fn round_robin_visits_every_healthy_endpoint_in_turn() {
        let c = cluster(
            "ROUND_ROBIN",
            &[Health::Healthy, Health::Unhealthy, Health::Healthy],
            Default::default(),
        );
        let picks: Vec<_> = (0..4).map(|_| c.pick(&[]).unwrap()).collect();
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
            assert_eq!(c.pick(&[]), Some(1));
        }
    }

    #[test]
    fn draining_endpoints_only_when_nothing_is_healthy_and_none_usable_is_none() {
        let c = cluster(
            "RANDOM",
            &[Health::Draining, Health::Unhealthy],
            Default::default(),
        );
        assert_eq!(c.pick(&[]), Some(0));
        let c = cluster("RANDOM", &[Health::Unhealthy], Default::default());
        assert_eq!(c.pick(&[]), None);
    }

    #[test]
    fn retries_avoid_the_endpoints_already_tried() {
        let c = cluster(
            "RANDOM",
            &[Health::Healthy, Health::Healthy],
            Default::default(),
        );
        for _ in 0..50 {
            assert_eq!(c.pick(&[0]), Some(1));
        }
        assert!(c.pick(&[0, 1]).is_some(), "all tried: any");
    }

    #[test]
    fn pool_limits_overflow_and_slots_are_given_back() {
        let pool = ConnectionPool {
            max_connections: Some(1),
            http1_max_pending_requests: Some(1),
            ..Default::default()
        };
        let c = cluster("RANDOM", &[Health::Healthy], pool);
        let a = c.request_slot().expect("first");
        let _b = c.request_slot().expect("second (pending)");
        assert!(c.request_slot().is_none(), "third overflows");
        drop(a);
        assert!(c.request_slot().is_some(), "a slot was freed");
        assert_eq!(c.overflows.load(Ordering::Relaxed), 1);
    }
}
