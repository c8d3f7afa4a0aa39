//! The discovery client: one delta xDS stream to outrigger-pilot (pilot/README.md, "Wire
//! protocol"), on-demand Destinations for the original destinations the proxy meets, the
//! Endpoints of the clusters they name, ACK/NACK, reconnect with backoff, and the last good
//! configuration kept while pilot is away. What it receives is built into the same `ProxyConfig`
//! a `--config-file` gives and put in the [`ConfigStore`], so the L7 path serves it unchanged.

pub mod client;
pub mod metrics;
pub mod resources;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use outrigger_api::names::networking::CLUSTER_DOMAIN;
use outrigger_mesh::config::ProxyInfo;
use outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use outrigger_xds_api::{DESTINATION_TYPE, ENDPOINTS_TYPE};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::drain::Lifecycle;
use crate::l7::source::{ConfigStore, Loaded};
use crate::workload::Workload;
pub use metrics::DiscoveryMetrics;
use resources::Resources;

/// The discovery client's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// As given (`host:port`, or with `http://` / `https://`).
    pub address: String,
    /// Where tonic connects (`http://host:port` or `https://host:port`).
    pub uri: String,
    /// The host name the TLS certificate must carry.
    pub host: String,
    pub tls: bool,
    /// PEM of the CA that signs pilot's certificate (TLS only).
    pub ca_file: PathBuf,
    /// The projected service-account token, re-read at each connection.
    pub token_file: PathBuf,
    /// Istio's node id (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`).
    pub node_id: String,
    /// How long a connection to an unknown original destination waits for pilot's answer.
    pub on_demand_timeout: Duration,
    /// How long `/healthz/ready` waits for the first connection to pilot.
    pub ready_timeout: Duration,
    /// A destination no connection used for this long is unsubscribed; `None`: never.
    pub idle_timeout: Option<Duration>,
}

/// Reads a discovery address: `host:port` is TLS unless the port is pilot's plaintext port
/// (15010), as Istio's agent decides; an explicit `http://` or `https://` wins.
pub fn parse_address(text: &str) -> Result<(String, String, bool), String> {
    let text = text.trim();
    let (rest, tls) = if let Some(rest) = text.strip_prefix("https://") {
        (rest, Some(true))
    } else if let Some(rest) = text.strip_prefix("http://") {
        (rest, Some(false))
    } else if text.contains("://") {
        return Err("the scheme must be http:// or https://".into());
    } else {
        (text, None)
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_owned())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 || rest.contains('/') {
        return Err("expected host:port".into());
    }
    let tls = tls.unwrap_or(port != outrigger_api::names::port::PILOT_XDS);
    let scheme = if tls { "https" } else { "http" };
    Ok((format!("{scheme}://{rest}"), host.to_owned(), tls))
}

/// Istio's node id for a sidecar; `None` names the env variable missing.
pub fn node_id(workload: &Workload) -> Result<String, &'static str> {
    use outrigger_api::names::env;
    let ip = workload.instance_ip.ok_or(env::INSTANCE_IP)?;
    if workload.pod_name.is_empty() {
        return Err(env::POD_NAME);
    }
    if workload.namespace.is_empty() || workload.namespace == crate::workload::UNKNOWN {
        return Err(env::POD_NAMESPACE);
    }
    let (pod, namespace) = (&workload.pod_name, &workload.namespace);
    Ok(format!(
        "sidecar~{ip}~{pod}.{namespace}~{namespace}.{CLUSTER_DOMAIN}"
    ))
}

/// The client's connection state, for `/config_dump`.
#[derive(Debug)]
pub struct Status {
    address: String,
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    connected: bool,
    connected_since: Option<SystemTime>,
    disconnected_since: Option<SystemTime>,
    last_update: Option<SystemTime>,
    last_error: Option<String>,
    destinations: usize,
    endpoints: usize,
}

fn unix(time: Option<SystemTime>) -> serde_json::Value {
    time.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(serde_json::Value::Null, |d| json!(d.as_secs()))
}

impl Status {
    pub fn new(address: &str) -> Self {
        Status {
            address: address.to_owned(),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connected(&self) -> bool {
        self.lock().connected
    }

    fn set_connected(&self) {
        let mut inner = self.lock();
        inner.connected = true;
        inner.connected_since = Some(SystemTime::now());
        inner.disconnected_since = None;
        inner.last_error = None;
    }

    fn set_disconnected(&self, error: String) {
        let mut inner = self.lock();
        if inner.connected || inner.disconnected_since.is_none() {
            inner.disconnected_since = Some(SystemTime::now());
        }
        inner.connected = false;
        inner.connected_since = None;
        inner.last_error = Some(error);
    }

    fn updated(&self, destinations: usize, endpoints: usize) {
        let mut inner = self.lock();
        inner.last_update = Some(SystemTime::now());
        inner.destinations = destinations;
        inner.endpoints = endpoints;
    }

    /// `{address, connected, connectedSinceUnixSeconds, disconnectedSinceUnixSeconds,
    /// lastUpdateUnixSeconds, lastError, destinations, endpoints}`.
    pub fn to_json(&self) -> serde_json::Value {
        let inner = self.lock();
        json!({
            "address": self.address,
            "connected": inner.connected,
            "connectedSinceUnixSeconds": unix(inner.connected_since),
            "disconnectedSinceUnixSeconds": unix(inner.disconnected_since),
            "lastUpdateUnixSeconds": unix(inner.last_update),
            "lastError": inner.last_error,
            "destinations": inner.destinations,
            "endpoints": inner.endpoints,
        })
    }
}

/// One proxy's discovery client: the resources held, the store they feed, and the channel to
/// the stream task.
#[derive(Debug)]
pub struct Discovery {
    pub settings: DiscoverySettings,
    pub status: Arc<Status>,
    pub store: Arc<ConfigStore>,
    pub metrics: DiscoveryMetrics,
    proxy: ProxyInfo,
    resources: Mutex<Resources>,
    /// Bumped after every committed response (the store already holds its result).
    updates: watch::Sender<u64>,
    /// Subscriptions and unsubscriptions for the open stream (dropped while pilot is away:
    /// the next stream sends everything held).
    requests: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    requests_rx: Mutex<Option<mpsc::UnboundedReceiver<DeltaDiscoveryRequest>>>,
    /// Destination name → connections open to it and when the last one ended.
    usage: Mutex<HashMap<String, Usage>>,
}

#[derive(Debug)]
struct Usage {
    open: usize,
    last_used: Instant,
}

/// Held by a captured connection for its life: its destination is in use, so it is not
/// unsubscribed as idle.
#[derive(Debug)]
pub struct InUse {
    discovery: Arc<Discovery>,
    name: String,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut usage = self.discovery.usage();
        if let Some(entry) = usage.get_mut(&self.name) {
            entry.open = entry.open.saturating_sub(1);
            entry.last_used = Instant::now();
        }
    }
}

impl Discovery {
    /// A client with an empty configuration (every connection relayed as TCP until pilot
    /// answers); [`client::run`] starts the stream.
    pub fn new(
        settings: DiscoverySettings,
        workload: &Workload,
        l7: crate::l7::telemetry::L7Metrics,
        metrics: DiscoveryMetrics,
    ) -> Arc<Self> {
        let proxy = ProxyInfo {
            namespace: workload.namespace.clone(),
            pod: workload.pod_name.clone(),
            ip: workload.instance_ip.map(|ip| ip.to_string()),
            ..ProxyInfo::default()
        };
        let status = Arc::new(Status::new(&settings.address));
        let initial = Loaded::empty(Resources::default().build(&proxy));
        let store = ConfigStore::discovery(initial, status.clone(), l7);
        let (requests, requests_rx) = mpsc::unbounded_channel();
        Arc::new(Discovery {
            settings,
            status,
            store,
            metrics,
            proxy,
            resources: Mutex::new(Resources::default()),
            updates: watch::channel(0).0,
            requests,
            requests_rx: Mutex::new(Some(requests_rx)),
            usage: Mutex::default(),
        })
    }

    fn usage(&self) -> MutexGuard<'_, HashMap<String, Usage>> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resources(&self) -> MutexGuard<'_, Resources> {
        self.resources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure the configuration knows `orig_dst` before a captured connection to it is
    /// served: an address not yet asked is subscribed, and the connection waits (at most
    /// `on_demand_timeout`) for pilot's answer and the endpoints it names. Without an answer
    /// the connection goes on as it would: relayed as TCP. Keep the answer for the life of the
    /// connection.
    pub async fn ensure(self: &Arc<Self>, orig_dst: SocketAddr) -> InUse {
        let name = orig_dst.to_string();
        self.usage()
            .entry(name.clone())
            .and_modify(|u| u.open += 1)
            .or_insert(Usage {
                open: 1,
                last_used: Instant::now(),
            });
        let in_use = InUse {
            discovery: self.clone(),
            name: name.clone(),
        };
        self.settle(&name).await;
        in_use
    }

    async fn settle(&self, name: &str) {
        let name = name.to_owned();
        let mut updates = self.updates.subscribe();
        {
            let mut resources = self.resources();
            if resources.settled(&name) {
                if !self.status.connected() {
                    self.metrics.stale_connections.inc();
                }
                return;
            }
            if resources.want(&name) {
                // The stream task owns the receiver for the life of the process.
                let _ = self.requests.send(DeltaDiscoveryRequest {
                    type_url: DESTINATION_TYPE.to_owned(),
                    resource_names_subscribe: vec![name.clone()],
                    ..Default::default()
                });
            }
        }
        if !self.status.connected() {
            self.metrics.stale_connections.inc();
            return;
        }
        let settled = async {
            loop {
                if updates.changed().await.is_err() {
                    return;
                }
                if self.resources().settled(&name) {
                    return;
                }
            }
        };
        if tokio::time::timeout(self.settings.on_demand_timeout, settled)
            .await
            .is_err()
        {
            self.metrics.on_demand_timeouts.inc();
            tracing::info!(destination = %name, timeout = ?self.settings.on_demand_timeout,
                "no answer from pilot in time: relaying as TCP");
        }
    }

    /// Starts the stream task and the readiness gate (ready at the first connection, or after
    /// `ready_timeout` without one).
    pub fn start(self: &Arc<Self>, lifecycle: &Lifecycle) {
        lifecycle.set_config_ready(false);
        let this = self.clone();
        let gate = lifecycle.clone();
        tokio::spawn(async move {
            let mut updates = this.updates.subscribe();
            let connected = async {
                while !this.status.connected() {
                    let wait = tokio::time::sleep(Duration::from_millis(50));
                    tokio::select! {
                        _ = updates.changed() => {}
                        () = wait => {}
                    }
                }
            };
            if tokio::time::timeout(this.settings.ready_timeout, connected)
                .await
                .is_err()
            {
                tracing::warn!(timeout = ?this.settings.ready_timeout, address = %this.settings.address,
                    "no connection to pilot yet: reporting ready anyway (every connection relayed as TCP)");
            }
            gate.set_config_ready(true);
        });
        let receiver = self
            .requests_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(receiver) = receiver {
            tokio::spawn(client::run(self.clone(), receiver));
        }
        if let Some(idle) = self.settings.idle_timeout {
            let this = self.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    this.unsubscribe_idle(idle);
                }
            });
        }
    }

    /// Unsubscribes the destinations no open connection uses and none used for `idle`; returns
    /// their names.
    pub fn unsubscribe_idle(&self, idle: Duration) -> Vec<String> {
        let names: Vec<String> = {
            let mut usage = self.usage();
            let idle_names: Vec<String> = usage
                .iter()
                .filter(|(_, u)| u.open == 0 && u.last_used.elapsed() >= idle)
                .map(|(name, _)| name.clone())
                .collect();
            for name in &idle_names {
                usage.remove(name);
            }
            idle_names
        };
        if names.is_empty() {
            return names;
        }
        let mut resources = self.resources();
        let changes = resources.forget(&names);
        let config = resources.build(&self.proxy);
        match Loaded::new(config) {
            Ok(loaded) => self.store.replace(loaded),
            // What is left was accepted before; an error here would be a bug, not input.
            Err(error) => tracing::warn!(%error,
                "cannot rebuild the configuration after unsubscribing idle destinations"),
        }
        tracing::info!(destinations = ?names, "unsubscribing idle destinations");
        // Sent under the lock: a connection that asks for one of them again right now
        // subscribes after this (requests keep their order).
        let _ = self.requests.send(DeltaDiscoveryRequest {
            type_url: DESTINATION_TYPE.to_owned(),
            resource_names_unsubscribe: names.clone(),
            ..Default::default()
        });
        if !changes.unsubscribe.is_empty() {
            let _ = self.requests.send(DeltaDiscoveryRequest {
                type_url: ENDPOINTS_TYPE.to_owned(),
                resource_names_unsubscribe: changes.unsubscribe,
                ..Default::default()
            });
        }
        drop(resources);
        self.updates.send_modify(|n| *n += 1);
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_pick_tls_by_port_unless_the_scheme_says() {
        assert_eq!(
            parse_address("outrigger-pilot.outrigger-system.svc:15012").unwrap(),
            (
                "https://outrigger-pilot.outrigger-system.svc:15012".to_owned(),
                "outrigger-pilot.outrigger-system.svc".to_owned(),
                true
            )
        );
        assert!(
            !parse_address("outrigger-pilot.outrigger-system.svc:15010")
                .unwrap()
                .2
        );
        assert_eq!(
            parse_address("http://10.66.0.1:4000").unwrap().0,
            "http://10.66.0.1:4000"
        );
        assert!(parse_address("https://localhost:15010").unwrap().2);
        for bad in [
            "pilot",
            "pilot:http",
            "grpc://pilot:15010",
            ":15010",
            "pilot:0",
            "pilot:1/x",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_ids_are_istios() {
        let workload = Workload {
            name: "web".into(),
            namespace: "shop".into(),
            pod_name: "web-7d9".into(),
            instance_ip: Some("10.244.1.30".parse().unwrap()),
            ..Workload::default()
        };
        assert_eq!(
            node_id(&workload).unwrap(),
            "sidecar~10.244.1.30~web-7d9.shop~shop.svc.cluster.local"
        );
        let no_ip = Workload {
            instance_ip: None,
            ..workload.clone()
        };
        assert_eq!(node_id(&no_ip), Err("INSTANCE_IP"));
        let no_pod = Workload {
            pod_name: String::new(),
            ..workload
        };
        assert_eq!(node_id(&no_pod), Err("POD_NAME"));
    }
}
