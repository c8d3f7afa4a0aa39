//! `analyze(snapshot)`: validation errors and the mistakes users ask about, before they become
//! 503s at run time. Codes are Istio's (`IST0101`…) where Istio's analyzer has the same check,
//! `OR01xx` for ours.

use std::collections::{BTreeMap, BTreeSet};

use crate::istio::{self, VirtualService};
use crate::names::MESH_GATEWAY;
use crate::protocol::{self, Protocol};
use crate::resolve::{host_matches, resolve_host};
use crate::snapshot::Snapshot;
use crate::validate::{self, Finding, Severity};

const NOT_FOUND: (&str, &str) = ("IST0101", "ReferencedResourceNotFound");
const CONFLICT: (&str, &str) = ("IST0109", "ConflictingMeshGatewayVirtualServiceHosts");
const SNIFFED: (&str, &str) = ("IST0118", "PortNameIsNotUnderNamingConvention");
const HOST_UNKNOWN: (&str, &str) = ("OR0101", "VirtualServiceHostNotFound");
const EMPTY_SUBSET: (&str, &str) = ("OR0102", "SubsetSelectsNoPod");

fn finding(
    severity: Severity,
    code: (&'static str, &'static str),
    resource: String,
    path: String,
    message: String,
) -> Finding {
    Finding {
        severity,
        code: code.0,
        name: code.1,
        resource,
        path,
        message,
    }
}

/// Every finding for the snapshot, sorted (resource, path, code) so the output is stable.
pub fn analyze(snapshot: &Snapshot) -> Vec<Finding> {
    let mut findings = Vec::new();
    for vs in &snapshot.virtual_services {
        findings.extend(validate::virtual_service(vs));
    }
    for dr in &snapshot.destination_rules {
        findings.extend(validate::destination_rule(dr));
    }
    for se in &snapshot.service_entries {
        findings.extend(validate::service_entry(se));
    }

    // Every known host → its namespace (Services) and the subsets DestinationRules define.
    let mut hosts: BTreeMap<String, Option<&k8s_openapi::api::core::v1::Service>> = BTreeMap::new();
    for service in &snapshot.services {
        let (Some(name), namespace) = (
            service.metadata.name.as_deref(),
            service.metadata.namespace.as_deref().unwrap_or("default"),
        ) else {
            continue;
        };
        hosts.insert(resolve_host(name, namespace), Some(service));
    }
    for se in &snapshot.service_entries {
        for host in &se.spec.hosts {
            hosts.entry(host.clone()).or_insert(None);
        }
    }
    let known = |host: &str| {
        hosts
            .keys()
            .any(|h| host_matches(host, h) || host_matches(h, host))
    };
    let mut subsets: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for dr in &snapshot.destination_rules {
        let host = resolve_host(&dr.spec.host, dr.namespace());
        let entry = subsets.entry(host).or_default();
        entry.extend(dr.spec.subsets.iter().map(|s| s.name.as_str()));
    }

    let mut by_host: BTreeMap<String, Vec<&VirtualService>> = BTreeMap::new();
    for vs in &snapshot.virtual_services {
        let mesh =
            vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == MESH_GATEWAY);
        let namespace = vs.namespace();
        for (i, host) in vs.spec.hosts.iter().enumerate() {
            let host = resolve_host(host, namespace);
            if mesh {
                by_host.entry(host.clone()).or_default().push(vs);
                if !host.contains('*') && !known(&host) {
                    findings.push(finding(Severity::Warning, HOST_UNKNOWN, vs.display_name(), format!("spec.hosts[{i}]"), format!("host {host:?} matches no Service or ServiceEntry: the rules never apply to mesh traffic")));
                }
            }
        }
        for (path, destination) in destinations(vs) {
            let host = resolve_host(&destination.host, namespace);
            if !known(&host) {
                findings.push(finding(
                    Severity::Error,
                    NOT_FOUND,
                    vs.display_name(),
                    format!("{path}.host"),
                    format!("host {host:?} matches no Service or ServiceEntry"),
                ));
                continue;
            }
            if let Some(subset) = destination.subset.as_deref().filter(|s| !s.is_empty()) {
                let defined = subsets
                    .iter()
                    .any(|(h, names)| host_matches(h, &host) && names.contains(subset));
                if !defined {
                    findings.push(finding(Severity::Error, NOT_FOUND, vs.display_name(), format!("{path}.subset"), format!("subset {subset:?} of host {host:?} is not defined by any DestinationRule: requests routed there get 503 NR")));
                }
            }
        }
    }
    for (host, list) in &by_host {
        if list.len() < 2 {
            continue;
        }
        let mut ordered: Vec<&&VirtualService> = list.iter().collect();
        ordered.sort_by_key(|vs| {
            let created = vs
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            (created, vs.namespace().to_owned(), vs.name().to_owned())
        });
        let names: Vec<String> = ordered
            .iter()
            .map(|vs| format!("{}/{}", vs.namespace(), vs.name()))
            .collect();
        for vs in &ordered {
            findings.push(finding(Severity::Warning, CONFLICT, vs.display_name(), "spec.hosts".to_owned(), format!(
                "the VirtualServices {} all define host {host:?} for the mesh gateway: their rules are merged, oldest first (then by namespace/name), so {} is tried first and a catch-all rule there hides the others; put the rules in one VirtualService",
                names.join(", "), names[0]
            )));
        }
    }
    for dr in &snapshot.destination_rules {
        let host = resolve_host(&dr.spec.host, dr.namespace());
        let Some(Some(service)) = hosts.get(&host) else {
            continue;
        };
        let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        for (i, subset) in dr.spec.subsets.iter().enumerate() {
            let selects = snapshot.pods.iter().any(|pod| {
                pod.namespace == namespace
                    && selector
                        .iter()
                        .chain(subset.labels.iter())
                        .all(|(k, v)| pod.labels.get(k) == Some(v))
            });
            if !selects {
                findings.push(finding(Severity::Warning, EMPTY_SUBSET, dr.display_name(), format!("spec.subsets[{i}]"), format!("subset {:?} selects no pod of Service {namespace}/{}: its cluster has no endpoints (503 UH)", subset.name, service.metadata.name.as_deref().unwrap_or(""))));
            }
        }
    }
    for service in &snapshot.services {
        let name = service.metadata.name.as_deref().unwrap_or("");
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        for (i, port) in service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (protocol, _) = protocol::for_service_port(
                port.port,
                port.name.as_deref(),
                port.protocol.as_deref(),
                port.app_protocol.as_deref(),
            );
            if protocol == Protocol::Auto {
                findings.push(finding(Severity::Info, SNIFFED, format!("Service {namespace}/{name}"), format!("spec.ports[{i}]"), format!(
                    "port {} (name {:?}) names no protocol: it will be detected by sniffing the first bytes, and server-first protocols (MySQL, SMTP, …) hang; name it <protocol>[-<suffix>] (http-, grpc-, tcp-…) or set appProtocol",
                    port.port, port.name.as_deref().unwrap_or("")
                )));
            }
        }
    }
    findings.sort();
    findings.dedup();
    findings
}

/// Every destination of a VirtualService with its field path.
fn destinations(vs: &VirtualService) -> Vec<(String, &istio::Destination)> {
    let spec = &vs.spec;
    let http = spec.http.iter().enumerate().flat_map(|(i, r)| {
        r.route.iter().enumerate().map(move |(k, d)| {
            (
                format!("spec.http[{i}].route[{k}].destination"),
                &d.destination,
            )
        })
    });
    let tls = spec.tls.iter().enumerate().flat_map(|(i, r)| {
        r.route.iter().enumerate().map(move |(k, d)| {
            (
                format!("spec.tls[{i}].route[{k}].destination"),
                &d.destination,
            )
        })
    });
    let tcp = spec.tcp.iter().enumerate().flat_map(|(i, r)| {
        r.route.iter().enumerate().map(move |(k, d)| {
            (
                format!("spec.tcp[{i}].route[{k}].destination"),
                &d.destination,
            )
        })
    });
    http.chain(tls).chain(tcp).collect()
}
