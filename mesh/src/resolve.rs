//! `resolve(snapshot, proxy) -> ProxyConfig`: the services a proxy may reach, their protocols,
//! the VirtualService rules that apply to it, and the clusters with DestinationRule policy and
//! endpoints. Pure and deterministic: the snapshot's order does not matter. Resources with
//! validation errors are left out, as Istio's webhook would have refused them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use outrigger_api::duration::parse_duration;

use crate::config::{
    Action, ActionKind, Cluster, ConnectionPool, DestinationConfig, DirectResponse, Endpoint,
    ExcludedRule, Fault, FaultAbort, FaultDelay, HeaderOps, HeaderRules, Health, L4Route,
    MatchKind, Mirror, OutboundTrafficPolicy, OutlierDetection, ProxyConfig, ProxyInfo, Redirect,
    RequestMatch, RetryPolicy, Rewrite, Route, RouteTable, StringMatcher, WeightedCluster,
};
use crate::error::ProxyError;
use crate::istio::{
    self, ConnectionPoolSettings, DestinationRule, HttpRoute, L4Match, LoadBalancerSettings,
    Sidecar, StringMatch, TrafficPolicy, VirtualService,
};
use crate::names::{
    CLUSTER_DOMAIN, DEFAULT_BASE_EJECTION_MS, DEFAULT_CONSECUTIVE_5XX, DEFAULT_LOAD_BALANCER,
    DEFAULT_MAX_EJECTION_PERCENT, DEFAULT_OUTLIER_INTERVAL_MS, DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_ON, ENDPOINT_LABELS, EXPORT_TO_ANNOTATION, MESH_GATEWAY, ROOT_NAMESPACE,
    SERVICE_NAME_LABEL,
};
use crate::pod::PodInfo;
use crate::protocol::{self, Protocol};
use crate::snapshot::Snapshot;
use crate::validate;

/// The proxy a configuration is resolved for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyId {
    pub namespace: String,
    pub pod: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub ip: Option<String>,
}

impl ProxyId {
    /// The proxy of Pod `namespace/name` in the snapshot.
    pub fn from_pod(snapshot: &Snapshot, name: &str) -> Result<Self, ProxyError> {
        let (namespace, pod_name) = name
            .split_once('/')
            .filter(|(ns, pod)| !ns.is_empty() && !pod.is_empty() && !pod.contains('/'))
            .ok_or_else(|| ProxyError::BadName(name.to_owned()))?;
        let pod = snapshot
            .pods
            .iter()
            .find(|pod| pod.namespace == namespace && pod.name == pod_name)
            .ok_or_else(|| ProxyError::NoSuchPod(name.to_owned()))?;
        Ok(Self {
            namespace: namespace.to_owned(),
            pod: pod_name.to_owned(),
            labels: (*pod.labels).clone(),
            service_account: pod.service_account.clone(),
            ip: pod.ip.clone(),
        })
    }
}

/// Resolves the configuration of one proxy.
pub fn resolve(snapshot: &Snapshot, proxy: &ProxyId) -> ProxyConfig {
    Resolver::new(snapshot).resolve(proxy)
}

/// `reviews` in namespace `default` → `reviews.default.svc.cluster.local`; names with a dot and
/// wildcards are kept (Istio's rule).
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host.contains('.') || host == "*" {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.{CLUSTER_DOMAIN}")
    }
}

/// `*` matches all; `*.shop.example` matches every name ending in `.shop.example`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == host || pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => host.ends_with(suffix),
        _ => false,
    }
}

/// Istio's `exportTo`: empty or `*` everywhere, `.` the owner's namespace, `~` nowhere.
pub fn exported_to(export_to: &[String], owner: &str, namespace: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|to| to == "*" || to == namespace || (to == "." && owner == namespace))
}

/// Weights as Istio applies them: one destination gets 100; several keep their proportions,
/// rescaled to integers summing to 100 (largest remainder, ties to the earlier destination).
pub fn normalize_weights(weights: &[i64]) -> Vec<u32> {
    if weights.len() == 1 {
        return vec![100];
    }
    let weights: Vec<u128> = weights
        .iter()
        .map(|w| u128::try_from(*w).unwrap_or(0))
        .collect();
    let total: u128 = weights.iter().sum();
    if total == 0 {
        // Invalid (validation refuses it); split evenly rather than divide by zero.
        let equal = vec![1; weights.len()];
        return normalize_weights(&equal);
    }
    let mut shares: Vec<(u32, u128, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let scaled = w * 100;
            let share = u32::try_from(scaled / total).expect("a share of 100 fits in u32");
            (share, scaled % total, i)
        })
        .collect();
    let assigned: u32 = shares.iter().map(|s| s.0).sum();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| shares[*b].1.cmp(&shares[*a].1).then(a.cmp(b)));
    for index in order.into_iter().take((100 - assigned) as usize) {
        shares[index].0 += 1;
    }
    shares.into_iter().map(|s| s.0).collect()
}

/// `outbound|8080|v2|catalog.shop.svc.cluster.local`.
pub fn cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

fn millis(text: Option<&String>) -> Option<u64> {
    let duration = parse_duration(text?).ok()?;
    u64::try_from(duration.as_millis()).ok()
}

fn to_u32(value: Option<i64>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok())
}

/// An endpoint with every label of its workload (subsets select on all of them).
#[derive(Debug, Clone)]
struct Candidate {
    endpoint: Endpoint,
    /// All labels of the endpoint's pod (subset selectors match on them).
    selector_labels: Arc<BTreeMap<String, String>>,
}

#[derive(Debug)]
struct PortInfo {
    number: u16,
    protocol: Protocol,
    reason: String,
    candidates: Vec<Candidate>,
}

#[derive(Debug)]
struct ServiceInfo {
    /// `namespace/name`.
    id: String,
    namespace: String,
    /// Kubernetes Service name (aliases), `None` for ServiceEntry hosts.
    short_name: Option<String>,
    host: String,
    addresses: Vec<String>,
    ports: Vec<PortInfo>,
    export_to: Vec<String>,
    /// A ServiceEntry host outside the mesh (`location` other than `MESH_INTERNAL`; Istio's
    /// default is `MESH_EXTERNAL`).
    mesh_external: bool,
}

#[derive(Debug)]
struct VsInfo<'a> {
    vs: &'a VirtualService,
    id: String,
    namespace: String,
    hosts: Vec<String>,
}

#[derive(Debug)]
struct DrInfo<'a> {
    dr: &'a DestinationRule,
    id: String,
    namespace: String,
    host: String,
}

/// The snapshot indexed once; `resolve` per proxy reads it.
#[derive(Debug)]
pub struct Resolver<'a> {
    services: Vec<ServiceInfo>,
    virtual_services: Vec<VsInfo<'a>>,
    destination_rules: Vec<DrInfo<'a>>,
    sidecars: &'a [Sidecar],
}

fn creation_key<S>(resource: &istio::Resource<S>) -> (String, String) {
    let created = resource
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    (
        created,
        format!("{}/{}", resource.namespace(), resource.name()),
    )
}

impl<'a> Resolver<'a> {
    /// Indexes the snapshot: services with their ports, protocols and endpoints; valid
    /// VirtualServices in Istio's precedence (oldest first, then namespace/name).
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let pods: HashMap<(&str, &str), &PodInfo> = snapshot
            .pods
            .iter()
            .filter(|pod| !pod.name.is_empty())
            .map(|pod| ((pod.namespace.as_str(), pod.name.as_str()), &**pod))
            .collect();
        let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in &snapshot.endpoint_slices {
            let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(service) = service {
                slices_by_service
                    .entry((namespace, service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        let mut services: Vec<ServiceInfo> = snapshot
            .services
            .iter()
            .filter_map(|service| kube_service(snapshot, &pods, &slices_by_service, service))
            .collect();
        services.sort_by(|a, b| a.id.cmp(&b.id));
        let mut entries: Vec<ServiceInfo> = snapshot
            .service_entries
            .iter()
            .filter(|se| validate::is_valid(&validate::service_entry(se)))
            .flat_map(service_entry)
            .collect();
        entries.sort_by(|a, b| (&a.host, &a.id).cmp(&(&b.host, &b.id)));
        services.extend(entries);

        let mut virtual_services: Vec<(_, VsInfo<'a>)> = snapshot
            .virtual_services
            .iter()
            .filter(|vs| validate::is_valid(&validate::virtual_service(vs)))
            .filter(|vs| {
                vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == MESH_GATEWAY)
            })
            .map(|vs| {
                let namespace = vs.namespace().to_owned();
                let info = VsInfo {
                    vs,
                    id: format!("{namespace}/{}", vs.name()),
                    hosts: vs
                        .spec
                        .hosts
                        .iter()
                        .map(|h| resolve_host(h, &namespace))
                        .collect(),
                    namespace,
                };
                (creation_key(vs), info)
            })
            .collect();
        virtual_services.sort_by(|a, b| a.0.cmp(&b.0));
        let mut destination_rules: Vec<(_, DrInfo<'a>)> = snapshot
            .destination_rules
            .iter()
            .filter(|dr| validate::is_valid(&validate::destination_rule(dr)))
            .map(|dr| {
                let namespace = dr.namespace().to_owned();
                let info = DrInfo {
                    dr,
                    id: format!("{namespace}/{}", dr.name()),
                    host: resolve_host(&dr.spec.host, &namespace),
                    namespace,
                };
                (creation_key(dr), info)
            })
            .collect();
        destination_rules.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            services,
            virtual_services: virtual_services.into_iter().map(|(_, v)| v).collect(),
            destination_rules: destination_rules.into_iter().map(|(_, d)| d).collect(),
            sidecars: &snapshot.sidecars,
        }
    }

    /// The configuration of one proxy.
    pub fn resolve(&self, proxy: &ProxyId) -> ProxyConfig {
        let mut config = ProxyConfig::empty(ProxyInfo {
            namespace: proxy.namespace.clone(),
            pod: proxy.pod.clone(),
            labels: proxy.labels.clone(),
            service_account: proxy.service_account.clone(),
            ip: proxy.ip.clone(),
        });
        config.outbound_traffic_policy = outbound_traffic_policy(self.sidecars, proxy);
        let virtual_services: Vec<&VsInfo<'a>> = self
            .virtual_services
            .iter()
            .filter(|v| exported_to(&v.vs.spec.export_to, &v.namespace, &proxy.namespace))
            .collect();
        let visible: Vec<&ServiceInfo> = self
            .services
            .iter()
            .filter(|s| exported_to(&s.export_to, &s.namespace, &proxy.namespace))
            .collect();
        let mut port_counts: HashMap<&str, (usize, u16)> = HashMap::new();
        for service in &visible {
            let entry = port_counts.entry(service.host.as_str()).or_insert((0, 0));
            entry.0 += service.ports.len();
            if let Some(port) = service.ports.first() {
                entry.1 = port.number;
            }
        }
        for service in visible {
            for port in &service.ports {
                let key = format!("{}:{}", service.host, port.number);
                if config.destinations.contains_key(&key) {
                    continue; // the same host from a later Service or ServiceEntry
                }
                let applying: Vec<&&VsInfo<'a>> = virtual_services
                    .iter()
                    .filter(|v| v.hosts.iter().any(|h| host_matches(h, &service.host)))
                    .collect();
                let destination = self.destination(service, port, &applying, proxy, &port_counts);
                for address in &service.addresses {
                    config
                        .addresses
                        .entry(format!("{address}:{}", port.number))
                        .or_insert_with(|| key.clone());
                }
                for alias in aliases(service, port.number, &proxy.namespace) {
                    config
                        .host_aliases
                        .entry(alias)
                        .or_insert_with(|| key.clone());
                }
                config.destinations.insert(key, destination);
                for cluster in self.clusters(service, port, proxy) {
                    config.clusters.insert(cluster.name.clone(), cluster);
                }
            }
        }
        config.seal()
    }

    fn destination(
        &self,
        service: &ServiceInfo,
        port: &PortInfo,
        applying: &[&&VsInfo<'a>],
        proxy: &ProxyId,
        port_counts: &HashMap<&str, (usize, u16)>,
    ) -> DestinationConfig {
        let mut destination = DestinationConfig {
            host: service.host.clone(),
            port: port.number,
            service: service.id.clone(),
            protocol: port.protocol,
            protocol_reason: port.reason.clone(),
            http: RouteTable::default(),
            tls: Vec::new(),
            tcp: Vec::new(),
            excluded: Vec::new(),
        };
        let resolver = DestinationResolver {
            port: port.number,
            port_counts,
        };
        if port.protocol.uses_http_routes() {
            let with_http: Vec<_> = applying
                .iter()
                .filter(|v| !v.vs.spec.http.is_empty())
                .collect();
            destination.http.from_virtual_service = !with_http.is_empty();
            for vs in with_http {
                for (index, rule) in vs.vs.spec.http.iter().enumerate() {
                    match resolver.http_route(vs, index, rule, proxy) {
                        Ok(route) => destination.http.routes.push(route),
                        Err(reason) => destination.excluded.push(ExcludedRule {
                            virtual_service: vs.id.clone(),
                            rule: index,
                            reason,
                        }),
                    }
                }
            }
            if destination.http.routes.is_empty() && !destination.http.from_virtual_service {
                destination
                    .http
                    .routes
                    .push(default_route(&service.host, port.number));
            }
        }
        if port.protocol.uses_tls_routes() {
            for vs in applying {
                for (index, rule) in vs.vs.spec.tls.iter().enumerate() {
                    let route = rule.route.iter().map(|r| (&r.destination, r.weight));
                    if let Some(route) = resolver.l4_route(vs, index, &rule.matches, route, proxy) {
                        destination.tls.push(route);
                    }
                }
            }
        }
        if port.protocol != Protocol::Http
            && port.protocol != Protocol::Http2
            && port.protocol != Protocol::Grpc
            && port.protocol != Protocol::GrpcWeb
        {
            for vs in applying {
                for (index, rule) in vs.vs.spec.tcp.iter().enumerate() {
                    let route = rule.route.iter().map(|r| (&r.destination, r.weight));
                    if let Some(route) = resolver.l4_route(vs, index, &rule.matches, route, proxy) {
                        destination.tcp.push(route);
                    }
                }
            }
            if destination.tcp.is_empty() {
                destination.tcp.push(L4Route {
                    virtual_service: None,
                    rule: None,
                    sni_hosts: Vec::new(),
                    destination_subnets: Vec::new(),
                    destinations: vec![WeightedCluster {
                        cluster: cluster_name(port.number, None, &service.host),
                        host: service.host.clone(),
                        subset: None,
                        port: port.number,
                        weight: 100,
                        headers: None,
                    }],
                });
            }
        }
        destination
    }

    fn destination_rule(&self, service: &ServiceInfo, proxy: &ProxyId) -> Option<&DrInfo<'a>> {
        self.destination_rules
            .iter()
            .filter(|d| host_matches(&d.host, &service.host))
            .filter(|d| exported_to(&d.dr.spec.export_to, &d.namespace, &proxy.namespace))
            .enumerate()
            .min_by_key(|(order, d)| {
                let scope = if d.namespace == proxy.namespace {
                    0
                } else if d.namespace == service.namespace {
                    1
                } else if d.namespace == ROOT_NAMESPACE {
                    2
                } else {
                    3
                };
                (scope, d.host != service.host, *order)
            })
            .map(|(_, d)| d)
    }

    fn clusters(&self, service: &ServiceInfo, port: &PortInfo, proxy: &ProxyId) -> Vec<Cluster> {
        let rule = self.destination_rule(service, proxy);
        let base = Policy::default().apply(
            rule.and_then(|r| r.dr.spec.traffic_policy.as_ref()),
            port.number,
        );
        let mut clusters = vec![build_cluster(
            service,
            port,
            None,
            rule.map(|r| r.id.clone()),
            &base,
            None,
        )];
        if let Some(rule) = rule {
            for subset in &rule.dr.spec.subsets {
                let policy = base
                    .clone()
                    .apply(subset.traffic_policy.as_ref(), port.number);
                clusters.push(build_cluster(
                    service,
                    port,
                    Some(&subset.name),
                    Some(rule.id.clone()),
                    &policy,
                    Some(&subset.labels),
                ));
            }
        }
        clusters
    }
}

fn default_route(host: &str, port: u16) -> Route {
    Route {
        virtual_service: None,
        rule: None,
        name: None,
        matches: Vec::new(),
        action: Action {
            kind: ActionKind::Route,
            destinations: vec![WeightedCluster {
                cluster: cluster_name(port, None, host),
                host: host.to_owned(),
                subset: None,
                port,
                weight: 100,
                headers: None,
            }],
            redirect: None,
            direct_response: None,
            rewrite: None,
        },
        timeout_ms: None,
        retries: default_retries(),
        fault: None,
        headers: None,
        mirrors: Vec::new(),
    }
}

fn default_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: DEFAULT_RETRY_ATTEMPTS,
        retry_on: DEFAULT_RETRY_ON.to_owned(),
        per_try_timeout_ms: None,
    }
}

struct DestinationResolver<'m> {
    port: u16,
    port_counts: &'m HashMap<&'m str, (usize, u16)>,
}

impl DestinationResolver<'_> {
    /// Why a match block cannot apply to this proxy and port, or `None` when it can.
    fn static_mismatch(
        &self,
        port: Option<u32>,
        gateways: &[String],
        source_labels: &BTreeMap<String, String>,
        source_namespace: Option<&String>,
        proxy: &ProxyId,
    ) -> Option<String> {
        if !gateways.is_empty() && !gateways.iter().any(|g| g == MESH_GATEWAY) {
            return Some(format!("gateways {gateways:?} do not include mesh"));
        }
        if let Some(port) = port
            && port != u32::from(self.port)
        {
            return Some(format!(
                "port {port} is not the destination port {}",
                self.port
            ));
        }
        if let Some((key, value)) = source_labels
            .iter()
            .find(|(k, v)| proxy.labels.get(*k) != Some(*v))
        {
            return Some(format!(
                "sourceLabels {key}={value} does not select this proxy"
            ));
        }
        if let Some(namespace) = source_namespace
            && *namespace != proxy.namespace
        {
            return Some(format!(
                "sourceNamespace {namespace} is not the proxy's namespace {}",
                proxy.namespace
            ));
        }
        None
    }

    fn weighted<'d>(
        &self,
        namespace: &str,
        route: impl Iterator<Item = (&'d istio::Destination, Option<i64>)>,
    ) -> Vec<WeightedCluster> {
        let route: Vec<_> = route.collect();
        let weights: Vec<i64> = route.iter().map(|(_, w)| w.unwrap_or(0)).collect();
        route
            .iter()
            .zip(normalize_weights(&weights))
            .map(|((destination, _), weight)| {
                let host = resolve_host(&destination.host, namespace);
                let port = match &destination.port {
                    Some(selector) => u16::try_from(selector.number).unwrap_or(self.port),
                    None => match self.port_counts.get(host.as_str()) {
                        Some((1, only)) => *only,
                        _ => self.port,
                    },
                };
                let subset = destination.subset.clone().filter(|s| !s.is_empty());
                WeightedCluster {
                    cluster: cluster_name(port, subset.as_deref(), &host),
                    host,
                    subset,
                    port,
                    weight,
                    headers: None,
                }
            })
            .collect()
    }

    fn http_route(
        &self,
        vs: &VsInfo<'_>,
        index: usize,
        rule: &HttpRoute,
        proxy: &ProxyId,
    ) -> Result<Route, String> {
        let mut matches = Vec::new();
        let mut reasons = Vec::new();
        for (j, block) in rule.matches.iter().enumerate() {
            let mismatch = self.static_mismatch(
                block.port,
                &block.gateways,
                &block.source_labels,
                block.source_namespace.as_ref(),
                proxy,
            );
            match mismatch {
                Some(reason) => reasons.push(format!("match[{j}]: {reason}")),
                None => matches.push(RequestMatch {
                    index: j,
                    name: block.name.clone(),
                    uri: block.uri.as_ref().map(matcher),
                    method: block.method.as_ref().map(matcher),
                    authority: block.authority.as_ref().map(matcher),
                    scheme: block.scheme.as_ref().map(matcher),
                    headers: header_matchers(&block.headers),
                    without_headers: header_matchers(&block.without_headers),
                    query_params: block
                        .query_params
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_ref().map_or(present(), matcher)))
                        .collect(),
                    ignore_uri_case: block.ignore_uri_case,
                }),
            }
        }
        if !rule.matches.is_empty() && matches.is_empty() {
            return Err(reasons.join("; "));
        }
        let action = if let Some(redirect) = &rule.redirect {
            Action {
                kind: ActionKind::Redirect,
                destinations: Vec::new(),
                redirect: Some(Redirect {
                    uri: redirect.uri.clone(),
                    authority: redirect.authority.clone(),
                    port: redirect.port.and_then(|p| u16::try_from(p).ok()),
                    scheme: redirect.scheme.clone(),
                    code: redirect
                        .redirect_code
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(301),
                }),
                direct_response: None,
                rewrite: None,
            }
        } else if let Some(direct) = &rule.direct_response {
            Action {
                kind: ActionKind::DirectResponse,
                destinations: Vec::new(),
                redirect: None,
                direct_response: Some(DirectResponse {
                    status: u16::try_from(direct.status).unwrap_or(500),
                    body: direct
                        .body
                        .as_ref()
                        .and_then(|b| b.string.clone().or_else(|| b.bytes.clone())),
                }),
                rewrite: None,
            }
        } else {
            let mut destinations = self.weighted(
                &vs.namespace,
                rule.route.iter().map(|r| (&r.destination, r.weight)),
            );
            for (destination, written) in destinations.iter_mut().zip(&rule.route) {
                destination.headers = written
                    .headers
                    .as_ref()
                    .and_then(header_rules)
                    .map(Box::new);
            }
            Action {
                kind: ActionKind::Route,
                destinations,
                redirect: None,
                direct_response: None,
                rewrite: rule.rewrite.as_ref().map(|r| Rewrite {
                    uri: r.uri.clone(),
                    authority: r.authority.clone(),
                }),
            }
        };
        let retries = match &rule.retries {
            None => default_retries(),
            Some(retries) => RetryPolicy {
                attempts: u32::try_from(retries.attempts).unwrap_or(0),
                retry_on: retries
                    .retry_on
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| DEFAULT_RETRY_ON.to_owned()),
                per_try_timeout_ms: millis(retries.per_try_timeout.as_ref()),
            },
        };
        let fault = rule.fault.as_ref().map(|fault| Fault {
            delay: fault.delay.as_ref().map(|delay| FaultDelay {
                fixed_delay_ms: millis(delay.fixed_delay.as_ref()).unwrap_or(0),
                percentage: delay
                    .percentage
                    .as_ref()
                    .map(|p| p.value)
                    .or(delay.percent.map(|p| p as f64))
                    .unwrap_or(0.0),
            }),
            abort: fault.abort.as_ref().map(|abort| FaultAbort {
                http_status: abort.http_status.and_then(|s| u16::try_from(s).ok()),
                grpc_status: abort.grpc_status.clone(),
                percentage: abort.percentage.as_ref().map_or(0.0, |p| p.value),
            }),
        });
        // `mirror` (with `mirrorPercentage`) and the newer `mirrors` list are exclusive
        // (validation says so); either gives the list of copies to send.
        let single = rule.mirror.as_ref().map(|destination| {
            (
                destination,
                rule.mirror_percentage.as_ref().map_or(100.0, |p| p.value),
            )
        });
        let listed = rule.mirrors.iter().map(|policy| {
            (
                &policy.destination,
                policy.percentage.as_ref().map_or(100.0, |p| p.value),
            )
        });
        let mirrors = if action.kind == ActionKind::Route {
            single
                .into_iter()
                .chain(listed)
                .filter_map(|(destination, percentage)| {
                    let target = self
                        .weighted(&vs.namespace, std::iter::once((destination, Some(100))))
                        .pop()?;
                    Some(Mirror {
                        cluster: target.cluster,
                        host: target.host,
                        port: target.port,
                        percentage,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Route {
            virtual_service: Some(vs.id.clone()),
            rule: Some(index),
            name: rule.name.clone(),
            matches,
            action,
            timeout_ms: millis(rule.timeout.as_ref()).filter(|ms| *ms > 0),
            retries,
            fault,
            headers: rule.headers.as_ref().and_then(header_rules).map(Box::new),
            mirrors,
        })
    }

    fn l4_route<'d>(
        &self,
        vs: &VsInfo<'_>,
        index: usize,
        matches: &[L4Match],
        route: impl Iterator<Item = (&'d istio::Destination, Option<i64>)>,
        proxy: &ProxyId,
    ) -> Option<L4Route> {
        let kept: Vec<&L4Match> = matches
            .iter()
            .filter(|m| {
                self.static_mismatch(
                    m.port,
                    &m.gateways,
                    &m.source_labels,
                    m.source_namespace.as_ref(),
                    proxy,
                )
                .is_none()
            })
            .collect();
        if !matches.is_empty() && kept.is_empty() {
            return None;
        }
        let mut sni_hosts: Vec<String> = kept
            .iter()
            .flat_map(|m| m.sni_hosts.iter().cloned())
            .collect();
        sni_hosts.sort();
        sni_hosts.dedup();
        let mut destination_subnets: Vec<String> = kept
            .iter()
            .flat_map(|m| m.destination_subnets.iter().cloned())
            .collect();
        destination_subnets.sort();
        destination_subnets.dedup();
        Some(L4Route {
            virtual_service: Some(vs.id.clone()),
            rule: Some(index),
            sni_hosts,
            destination_subnets,
            destinations: self.weighted(&vs.namespace, route),
        })
    }
}

fn present() -> StringMatcher {
    StringMatcher {
        kind: MatchKind::Present,
        value: String::new(),
    }
}

fn matcher(m: &StringMatch) -> StringMatcher {
    let (kind, value) = if let Some(exact) = &m.exact {
        (MatchKind::Exact, exact.clone())
    } else if let Some(prefix) = &m.prefix {
        (MatchKind::Prefix, prefix.clone())
    } else if let Some(regex) = &m.regex {
        (MatchKind::Regex, regex.clone())
    } else {
        (MatchKind::Present, String::new())
    };
    StringMatcher { kind, value }
}

/// Header matchers with lowercase names; `{}` and `prefix: ""` mean "present" (Istio's
/// catch-all header match).
fn header_matchers(
    headers: &BTreeMap<String, Option<StringMatch>>,
) -> BTreeMap<String, StringMatcher> {
    headers
        .iter()
        .map(|(name, m)| {
            let mut compiled = m.as_ref().map_or(present(), matcher);
            if compiled.kind == MatchKind::Prefix && compiled.value.is_empty() {
                compiled = present();
            }
            (name.to_ascii_lowercase(), compiled)
        })
        .collect()
}

/// The names an application may use for a Service port.
fn aliases(service: &ServiceInfo, port: u16, proxy_namespace: &str) -> Vec<String> {
    let mut names = vec![service.host.clone()];
    if let Some(short) = &service.short_name {
        names.push(format!("{short}.{}", service.namespace));
        names.push(format!("{short}.{}.svc", service.namespace));
        if service.namespace == proxy_namespace {
            names.push(short.clone());
        }
    }
    let mut out: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
    if port == 80 {
        out.extend(names);
    }
    out
}

#[derive(Debug, Clone, Default)]
struct Policy<'p> {
    load_balancer: Option<&'p LoadBalancerSettings>,
    connection_pool: Option<&'p ConnectionPoolSettings>,
    outlier: Option<&'p istio::OutlierDetection>,
    tls: Option<&'p serde_json::Value>,
}

impl<'p> Policy<'p> {
    /// Overrides the fields `policy` sets, then its `portLevelSettings` for `port`.
    fn apply(mut self, policy: Option<&'p TrafficPolicy>, port: u16) -> Self {
        let Some(policy) = policy else { return self };
        self.load_balancer = policy.load_balancer.as_ref().or(self.load_balancer);
        self.connection_pool = policy.connection_pool.as_ref().or(self.connection_pool);
        self.outlier = policy.outlier_detection.as_ref().or(self.outlier);
        self.tls = policy.tls.as_ref().or(self.tls);
        if let Some(level) = policy
            .port_level_settings
            .iter()
            .find(|l| l.port.as_ref().is_some_and(|p| p.number == u32::from(port)))
        {
            self.load_balancer = level.load_balancer.as_ref().or(self.load_balancer);
            self.connection_pool = level.connection_pool.as_ref().or(self.connection_pool);
            self.outlier = level.outlier_detection.as_ref().or(self.outlier);
            self.tls = level.tls.as_ref().or(self.tls);
        }
        self
    }
}

fn build_cluster(
    service: &ServiceInfo,
    port: &PortInfo,
    subset: Option<&str>,
    destination_rule: Option<String>,
    policy: &Policy<'_>,
    selector: Option<&BTreeMap<String, String>>,
) -> Cluster {
    let load_balancer = policy
        .load_balancer
        .and_then(|lb| lb.simple.clone())
        .map(|simple| match simple.as_str() {
            "LEAST_CONN" | "UNSPECIFIED" => DEFAULT_LOAD_BALANCER.to_owned(),
            _ => simple,
        })
        .unwrap_or_else(|| DEFAULT_LOAD_BALANCER.to_owned());
    let connection_pool = policy
        .connection_pool
        .map_or_else(ConnectionPool::default, |pool| {
            let tcp = pool.tcp.as_ref();
            let http = pool.http.as_ref();
            ConnectionPool {
                max_connections: to_u32(tcp.and_then(|t| t.max_connections)),
                connect_timeout_ms: millis(tcp.and_then(|t| t.connect_timeout.as_ref())),
                http1_max_pending_requests: to_u32(http.and_then(|h| h.http1_max_pending_requests)),
                http2_max_requests: to_u32(http.and_then(|h| h.http2_max_requests)),
                max_requests_per_connection: to_u32(
                    http.and_then(|h| h.max_requests_per_connection),
                ),
                max_retries: to_u32(http.and_then(|h| h.max_retries)),
                idle_timeout_ms: millis(http.and_then(|h| h.idle_timeout.as_ref())),
            }
        });
    let outlier_detection = policy.outlier.map(|o| OutlierDetection {
        consecutive_5xx_errors: to_u32(o.consecutive_5xx_errors.or(o.consecutive_errors))
            .unwrap_or(DEFAULT_CONSECUTIVE_5XX),
        consecutive_gateway_errors: to_u32(o.consecutive_gateway_errors),
        interval_ms: millis(o.interval.as_ref()).unwrap_or(DEFAULT_OUTLIER_INTERVAL_MS),
        base_ejection_time_ms: millis(o.base_ejection_time.as_ref())
            .unwrap_or(DEFAULT_BASE_EJECTION_MS),
        max_ejection_percent: to_u32(o.max_ejection_percent)
            .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT),
        min_health_percent: to_u32(o.min_health_percent),
    });
    let endpoints = port
        .candidates
        .iter()
        .filter(|c| {
            selector.is_none_or(|s| s.iter().all(|(k, v)| c.selector_labels.get(k) == Some(v)))
        })
        .map(|c| c.endpoint.clone())
        .collect();
    Cluster {
        name: cluster_name(port.number, subset, &service.host),
        host: service.host.clone(),
        port: port.number,
        subset: subset.map(str::to_owned),
        protocol: port.protocol,
        destination_rule,
        load_balancer,
        consistent_hash: policy
            .load_balancer
            .and_then(|lb| lb.consistent_hash.clone()),
        connection_pool,
        outlier_detection,
        tls: policy.tls.cloned(),
        mesh_external: service.mesh_external,
        endpoints,
    }
}

fn pod_endpoint(
    pod: Option<&PodInfo>,
    namespace: &str,
    address: String,
    health: Health,
) -> Candidate {
    let labels = Arc::new(
        pod.into_iter()
            .flat_map(|p| p.labels.iter())
            .filter(|(k, _)| ENDPOINT_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    Candidate {
        endpoint: Endpoint {
            address,
            health,
            labels,
            workload: pod.map(|p| p.workload.clone()),
            pod: pod.map(|p| p.name.clone()),
            namespace: namespace.to_owned(),
            service_account: pod.map(|p| p.service_account.clone()),
        },
        selector_labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
    }
}

fn socket(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn kube_service(
    snapshot: &Snapshot,
    pods: &HashMap<(&str, &str), &PodInfo>,
    slices_by_service: &HashMap<(&str, &str), Vec<&EndpointSlice>>,
    service: &Service,
) -> Option<ServiceInfo> {
    let name = service.metadata.name.clone()?;
    let namespace = service
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let spec = service.spec.as_ref()?;
    let host = format!("{name}.{namespace}.{CLUSTER_DOMAIN}");
    let mut addresses: Vec<String> = spec
        .cluster_ips
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(spec.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None")
        .collect();
    addresses.sort();
    addresses.dedup();
    let export_to = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|value| {
            value
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let slices: Vec<&EndpointSlice> = slices_by_service
        .get(&(namespace.as_str(), name.as_str()))
        .cloned()
        .unwrap_or_default();
    let legacy = snapshot.endpoints.iter().find(|e| {
        e.metadata.namespace.as_deref().unwrap_or("default") == namespace
            && e.metadata.name.as_deref() == Some(&name)
    });
    let mut ports = Vec::new();
    for service_port in spec.ports.iter().flatten() {
        let Ok(number) = u16::try_from(service_port.port) else {
            continue;
        };
        if number == 0 {
            continue;
        }
        let (protocol, reason) = protocol::for_service_port(
            service_port.port,
            service_port.name.as_deref(),
            service_port.protocol.as_deref(),
            service_port.app_protocol.as_deref(),
        );
        let port_name = service_port.name.clone().unwrap_or_default();
        let mut candidates = Vec::new();
        if !slices.is_empty() {
            for slice in &slices {
                let Some(slice_port) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.clone().unwrap_or_default() == port_name)
                    .and_then(|p| p.port)
                else {
                    continue;
                };
                for endpoint in slice.endpoints.iter().flatten() {
                    let conditions = endpoint.conditions.as_ref();
                    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                    let health = if ready {
                        Health::Healthy
                    } else if serving && terminating {
                        Health::Draining
                    } else {
                        Health::Unhealthy
                    };
                    let pod = endpoint
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| pods.get(&(namespace.as_str(), r.name.as_deref()?)).copied());
                    for address in &endpoint.addresses {
                        candidates.push(pod_endpoint(
                            pod,
                            &namespace,
                            socket(address, slice_port),
                            health,
                        ));
                    }
                }
            }
        } else if let Some(legacy) = legacy {
            for subset in legacy.subsets.iter().flatten() {
                let Some(port) = subset
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.clone().unwrap_or_default() == port_name)
                    .map(|p| p.port)
                else {
                    continue;
                };
                let groups = [
                    (&subset.addresses, Health::Healthy),
                    (&subset.not_ready_addresses, Health::Unhealthy),
                ];
                for (addresses, health) in groups {
                    for address in addresses.iter().flatten() {
                        let pod = address.target_ref.as_ref().and_then(|r| {
                            pods.get(&(namespace.as_str(), r.name.as_deref()?)).copied()
                        });
                        candidates.push(pod_endpoint(
                            pod,
                            &namespace,
                            socket(&address.ip, port),
                            health,
                        ));
                    }
                }
            }
        } else if let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
            // No EndpointSlice in the inputs (offline YAML): select the pods as the
            // EndpointSlice controller would.
            for pod in &snapshot.pods {
                if pod.namespace != namespace
                    || !selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
                {
                    continue;
                }
                let Some(ip) = &pod.ip else {
                    continue;
                };
                let target = match &service_port.target_port {
                    Some(IntOrString::Int(port)) => Some(*port),
                    Some(IntOrString::String(name)) => pod.named_port(name),
                    None => Some(service_port.port),
                };
                let Some(target) = target else { continue };
                let health = if pod.ready {
                    Health::Healthy
                } else {
                    Health::Unhealthy
                };
                candidates.push(pod_endpoint(
                    Some(pod),
                    &namespace,
                    socket(ip, target),
                    health,
                ));
            }
        }
        candidates.sort_by(|a, b| {
            (&a.endpoint.address, &a.endpoint.pod).cmp(&(&b.endpoint.address, &b.endpoint.pod))
        });
        candidates.dedup_by(|a, b| a.endpoint.address == b.endpoint.address);
        ports.push(PortInfo {
            number,
            protocol,
            reason,
            candidates,
        });
    }
    ports.sort_by_key(|p| p.number);
    ports.dedup_by_key(|p| p.number);
    Some(ServiceInfo {
        id: format!("{namespace}/{name}"),
        namespace,
        short_name: Some(name),
        host,
        addresses,
        ports,
        export_to,
        mesh_external: false,
    })
}

fn service_entry(se: &istio::ServiceEntry) -> Vec<ServiceInfo> {
    let namespace = se.namespace().to_owned();
    let mesh_external = se.spec.location.as_deref() != Some("MESH_INTERNAL");
    let id = format!("{namespace}/{}", se.name());
    let dns = matches!(
        se.spec.resolution.as_deref(),
        Some("DNS" | "DNS_ROUND_ROBIN")
    );
    let mut addresses: Vec<String> = se
        .spec
        .addresses
        .iter()
        .filter(|a| !a.contains('/') || a.ends_with("/32"))
        .map(|a| a.trim_end_matches("/32").to_owned())
        .collect();
    addresses.sort();
    se.spec
        .hosts
        .iter()
        .map(|host| {
            let ports = se
                .spec
                .ports
                .iter()
                .filter_map(|port| {
                    let number = u16::try_from(port.number).ok().filter(|n| *n > 0)?;
                    let (protocol, reason) =
                        match port.protocol.as_deref().and_then(Protocol::parse) {
                            Some(protocol) => (
                                protocol,
                                format!(
                                    "ServiceEntry port protocol {:?}",
                                    port.protocol.as_deref().unwrap_or("")
                                ),
                            ),
                            None => protocol::for_service_port(
                                i32::from(number),
                                Some(&port.name),
                                None,
                                None,
                            ),
                        };
                    let target = port.target_port.unwrap_or(port.number);
                    let mut candidates: Vec<Candidate> = se
                        .spec
                        .endpoints
                        .iter()
                        .map(|e| {
                            let p = e.ports.get(&port.name).copied().unwrap_or(target);
                            Candidate {
                                endpoint: Endpoint {
                                    address: socket(&e.address, i32::try_from(p).unwrap_or(0)),
                                    health: Health::Healthy,
                                    labels: Arc::new(e.labels.clone()),
                                    workload: None,
                                    pod: None,
                                    namespace: namespace.clone(),
                                    service_account: e.service_account.clone(),
                                },
                                selector_labels: Arc::new(e.labels.clone()),
                            }
                        })
                        .collect();
                    if candidates.is_empty() && dns && !host.starts_with('*') {
                        candidates.push(Candidate {
                            endpoint: Endpoint {
                                address: format!("{host}:{target}"),
                                health: Health::Healthy,
                                labels: Arc::default(),
                                workload: None,
                                pod: None,
                                namespace: namespace.clone(),
                                service_account: None,
                            },
                            selector_labels: Arc::default(),
                        });
                    }
                    candidates.sort_by(|a, b| a.endpoint.address.cmp(&b.endpoint.address));
                    Some(PortInfo {
                        number,
                        protocol,
                        reason,
                        candidates,
                    })
                })
                .collect();
            ServiceInfo {
                id: id.clone(),
                namespace: namespace.clone(),
                short_name: None,
                host: host.clone(),
                addresses: addresses.clone(),
                ports,
                export_to: se.spec.export_to.clone(),
                mesh_external,
            }
        })
        .collect()
}

/// `outboundTrafficPolicy.mode` of the Sidecar that applies to the proxy, as Istio picks
/// it: one in the proxy's namespace whose `workloadSelector` selects it, else one there
/// without selector, else one without selector in the root namespace; else `ALLOW_ANY`
/// (the mesh default). A mode Istio does not know is `ALLOW_ANY` (validation's job).
fn outbound_traffic_policy(sidecars: &[Sidecar], proxy: &ProxyId) -> OutboundTrafficPolicy {
    let selects = |sidecar: &Sidecar| match &sidecar.spec.workload_selector {
        None => Some(false),
        Some(selector) => {
            let labels = selector.get("labels")?.as_object()?;
            labels
                .iter()
                .all(|(k, v)| v.as_str() == proxy.labels.get(k).map(String::as_str))
                .then_some(true)
        }
    };
    let in_namespace = |namespace: &str, selected: bool| {
        sidecars
            .iter()
            .filter(|s| s.namespace() == namespace)
            .find(|s| selects(s) == Some(selected))
    };
    let sidecar = in_namespace(&proxy.namespace, true)
        .or_else(|| in_namespace(&proxy.namespace, false))
        .or_else(|| in_namespace(ROOT_NAMESPACE, false));
    sidecar
        .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
        .and_then(|p| p.mode.as_deref())
        .and_then(OutboundTrafficPolicy::parse)
        .unwrap_or_default()
}

/// Istio's `headers` as the proxy applies them (names lowercase); `None` when empty.
fn header_rules(headers: &istio::Headers) -> Option<HeaderRules> {
    let ops = |ops: Option<&istio::HeaderOperations>| {
        let lower = |map: &BTreeMap<String, String>| {
            map.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        ops.map_or_else(HeaderOps::default, |ops| HeaderOps {
            set: lower(&ops.set),
            add: lower(&ops.add),
            remove: ops.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
        })
    };
    let rules = HeaderRules {
        request: ops(headers.request.as_ref()),
        response: ops(headers.response.as_ref()),
    };
    (!rules.request.is_empty() || !rules.response.is_empty()).then_some(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_100_and_keep_order() {
        assert_eq!(normalize_weights(&[90, 10]), vec![90, 10]);
        assert_eq!(normalize_weights(&[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(normalize_weights(&[3, 1]), vec![75, 25]);
        assert_eq!(normalize_weights(&[7]), vec![100]);
        assert_eq!(normalize_weights(&[0, 0]), vec![50, 50]);
    }

    #[test]
    fn hosts() {
        assert_eq!(resolve_host("cart", "shop"), "cart.shop.svc.cluster.local");
        assert_eq!(resolve_host("cart.shop", "x"), "cart.shop");
        assert!(host_matches(
            "*.svc.cluster.local",
            "cart.shop.svc.cluster.local"
        ));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(exported_to(&[".".to_owned()], "a", "a"));
        assert!(!exported_to(&[".".to_owned()], "a", "b"));
        assert!(!exported_to(&["~".to_owned()], "a", "a"));
    }
}
