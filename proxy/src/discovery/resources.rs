//! What the proxy holds of pilot's resources (pure: no I/O): the Destinations by the name asked,
//! the Endpoints by cluster name, the names pilot does not know, and the `ProxyConfig` built from
//! them for the L7 path. A response is applied to a copy and committed only when the whole of it
//! parses and compiles (Envoy NACKs a response, not a resource). A new version of a destination
//! that names a cluster whose endpoints have not come yet is held back ("warming", as Envoy
//! warms a cluster before using it) while the previous version serves: a route moved to a new
//! subset never meets an empty cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use outrigger_mesh::ProxyConfig as MeshConfig;
use outrigger_mesh::config::{Cluster, DestinationConfig, Endpoint, ProxyInfo};
use outrigger_mesh::names::{PROXY_CONFIG_API_VERSION, PROXY_CONFIG_KIND};
use outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use outrigger_xds_api::outrigger::v1alpha1;
use outrigger_xds_api::{DESTINATION_TYPE, ENDPOINTS_TYPE};
use prost::Message as _;
use serde::Deserialize;

/// The JSON inside a `Destination` resource (pilot/README.md, "Wire protocol").
#[derive(Debug, Clone, Deserialize)]
pub struct DestinationPayload {
    pub destination: DestinationConfig,
    /// Cluster name → cluster (its endpoints come as their own resource).
    #[serde(default)]
    pub clusters: BTreeMap<String, Cluster>,
    /// The `ClusterIP:port` addresses of the destination.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// One resource held, with the version pilot gave it.
#[derive(Debug, Clone)]
pub struct Held<T> {
    pub version: String,
    pub aliases: Vec<String>,
    pub payload: T,
}

/// Everything received, and what is subscribed.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// Name asked (`ClusterIP:port`, `host:port`) → destination in force.
    pub destinations: BTreeMap<String, Held<DestinationPayload>>,
    /// Newer versions waiting for the endpoints of a cluster they name (the one in
    /// `destinations` serves meanwhile).
    pub warming: BTreeMap<String, Held<DestinationPayload>>,
    /// Cluster name → its endpoints (an empty list when pilot removed it).
    pub endpoints: BTreeMap<String, Held<Vec<Endpoint>>>,
    /// Destination names pilot answered as unknown: relayed as TCP (still subscribed, so a
    /// Service created later is sent).
    pub absent: BTreeSet<String>,
    /// Every destination name subscribed.
    pub wanted: BTreeSet<String>,
    /// Every cluster name subscribed (the clusters the held destinations name).
    pub clusters: BTreeSet<String>,
}

/// What a committed response changes in the subscriptions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClusterChanges {
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
}

impl Resources {
    /// Adds a destination name to the subscriptions; `true` when it is new.
    pub fn want(&mut self, name: &str) -> bool {
        self.wanted.insert(name.to_owned())
    }

    /// Whether a connection to `name` can go on: pilot answered it as unknown, or its
    /// destination and the endpoints of every cluster it names are here.
    pub fn settled(&self, name: &str) -> bool {
        if self.absent.contains(name) {
            return true;
        }
        self.destinations
            .get(name)
            .is_some_and(|held| self.warm(held))
    }

    /// Applies one response of either type. The error is the NACK's message: the resource, the
    /// field and the reason.
    pub fn apply(&mut self, response: &DeltaDiscoveryResponse) -> Result<(), String> {
        match response.type_url.as_str() {
            DESTINATION_TYPE => {
                for resource in &response.resources {
                    let payload = decode_destination(&resource.name, resource)?;
                    self.absent.remove(&resource.name);
                    let held = Held {
                        version: resource.version.clone(),
                        aliases: resource.aliases.clone(),
                        payload,
                    };
                    if self.destinations.contains_key(&resource.name) && !self.warm(&held) {
                        self.warming.insert(resource.name.clone(), held);
                    } else {
                        self.warming.remove(&resource.name);
                        self.destinations.insert(resource.name.clone(), held);
                    }
                }
                for name in &response.removed_resources {
                    self.destinations.remove(name);
                    self.warming.remove(name);
                    self.absent.insert(name.clone());
                }
            }
            ENDPOINTS_TYPE => {
                for resource in &response.resources {
                    let payload = decode_endpoints(&resource.name, resource)?;
                    self.endpoints.insert(
                        resource.name.clone(),
                        Held {
                            version: resource.version.clone(),
                            aliases: Vec::new(),
                            payload,
                        },
                    );
                }
                for name in &response.removed_resources {
                    // Gone: no endpoint (requests get 503 UH, as Envoy with an empty cluster).
                    self.endpoints.insert(
                        name.clone(),
                        Held {
                            version: String::new(),
                            aliases: Vec::new(),
                            payload: Vec::new(),
                        },
                    );
                }
                let ready: Vec<String> = self
                    .warming
                    .iter()
                    .filter(|(_, held)| self.warm(held))
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in ready {
                    if let Some(held) = self.warming.remove(&name) {
                        self.destinations.insert(name, held);
                    }
                }
            }
            other => return Err(format!("unexpected type URL {other:?}")),
        }
        Ok(())
    }

    /// Whether the endpoints of every cluster a destination names are here.
    fn warm(&self, held: &Held<DestinationPayload>) -> bool {
        held.payload
            .clusters
            .keys()
            .all(|cluster| self.endpoints.contains_key(cluster))
    }

    /// Brings the cluster subscriptions in line with the clusters the destinations name;
    /// forgets the endpoints of clusters no longer named.
    pub fn sync_clusters(&mut self) -> ClusterChanges {
        let named: BTreeSet<String> = self
            .destinations
            .values()
            .chain(self.warming.values())
            .flat_map(|held| held.payload.clusters.keys().cloned())
            .collect();
        let changes = ClusterChanges {
            subscribe: named.difference(&self.clusters).cloned().collect(),
            unsubscribe: self.clusters.difference(&named).cloned().collect(),
        };
        for gone in &changes.unsubscribe {
            self.endpoints.remove(gone);
        }
        self.clusters = named;
        changes
    }

    /// Drops destination names (idle): no longer subscribed, held or remembered as absent;
    /// the clusters only they named go too.
    pub fn forget(&mut self, names: &[String]) -> ClusterChanges {
        for name in names {
            self.wanted.remove(name);
            self.destinations.remove(name);
            self.warming.remove(name);
            self.absent.remove(name);
        }
        self.sync_clusters()
    }

    /// `initial_resource_versions` of one type at reconnect (removed ones are not "held").
    pub fn versions(&self, type_url: &str) -> BTreeMap<String, String> {
        let held: Vec<(&String, &String)> = match type_url {
            DESTINATION_TYPE => self
                .destinations
                .iter()
                .map(|(n, h)| (n, &h.version))
                .collect(),
            _ => self
                .endpoints
                .iter()
                .filter(|(n, _)| self.clusters.contains(*n))
                .map(|(n, h)| (n, &h.version))
                .collect(),
        };
        held.into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// The `ProxyConfig` of what is held, in the shape `--config-file` gives (so the L7 path
    /// serves it unchanged). Its version is a hash of the names and versions held.
    pub fn build(&self, proxy: &ProxyInfo) -> MeshConfig {
        let mut config = MeshConfig {
            api_version: PROXY_CONFIG_API_VERSION.to_owned(),
            kind: PROXY_CONFIG_KIND.to_owned(),
            version: String::new(),
            proxy: proxy.clone(),
            destinations: BTreeMap::new(),
            addresses: BTreeMap::new(),
            host_aliases: BTreeMap::new(),
            clusters: BTreeMap::new(),
            // Pilot does not send the Sidecar's outboundTrafficPolicy yet: a destination pilot
            // does not know is relayed (ALLOW_ANY), as Istio's default.
            outbound_traffic_policy: outrigger_mesh::config::OutboundTrafficPolicy::AllowAny,
        };
        let mut hash = Fnv::default();
        for (name, held) in &self.destinations {
            hash.add(name);
            hash.add(&held.version);
            let destination = &held.payload.destination;
            let key = format!("{}:{}", destination.host, destination.port);
            config.destinations.insert(key.clone(), destination.clone());
            for address in &held.payload.addresses {
                config.addresses.insert(address.clone(), key.clone());
            }
            if name.parse::<SocketAddr>().is_ok() {
                config.addresses.insert(name.clone(), key.clone());
            } else if *name != key {
                config.host_aliases.insert(name.clone(), key.clone());
            }
            for alias in held.aliases.iter().filter(|a| **a != key) {
                config.host_aliases.insert(alias.clone(), key.clone());
            }
            for (cluster_name, cluster) in &held.payload.clusters {
                let mut cluster = cluster.clone();
                cluster.endpoints = self
                    .endpoints
                    .get(cluster_name)
                    .map(|held| held.payload.clone())
                    .unwrap_or_default();
                config.clusters.insert(cluster_name.clone(), cluster);
            }
        }
        for (name, held) in &self.endpoints {
            hash.add(name);
            hash.add(&held.version);
        }
        config.version = format!("{:016x}", hash.0);
        config
    }
}

fn decode_destination(
    name: &str,
    resource: &outrigger_xds_api::envoy::service::discovery::v3::Resource,
) -> Result<DestinationPayload, String> {
    let bytes = any_value(name, resource, DESTINATION_TYPE)?;
    let message = v1alpha1::Destination::decode(bytes)
        .map_err(|e| format!("destination {name:?}: not a Destination message: {e}"))?;
    let payload: DestinationPayload = json(&message.json, &format!("destination {name:?}"))?;
    payload
        .destination
        .http
        .compile()
        .map_err(|e| format!("destination {name:?}: destination.http: {e}"))?;
    Ok(payload)
}

fn decode_endpoints(
    name: &str,
    resource: &outrigger_xds_api::envoy::service::discovery::v3::Resource,
) -> Result<Vec<Endpoint>, String> {
    let bytes = any_value(name, resource, ENDPOINTS_TYPE)?;
    let message = v1alpha1::Endpoints::decode(bytes)
        .map_err(|e| format!("endpoints {name:?}: not an Endpoints message: {e}"))?;
    let endpoints: Vec<Endpoint> = json(&message.json, &format!("endpoints {name:?}"))?;
    for (index, endpoint) in endpoints.iter().enumerate() {
        if endpoint.address.parse::<SocketAddr>().is_err() {
            return Err(format!(
                "endpoints {name:?}: [{index}].address: {:?} is not ip:port",
                endpoint.address
            ));
        }
    }
    Ok(endpoints)
}

fn any_value<'a>(
    name: &str,
    resource: &'a outrigger_xds_api::envoy::service::discovery::v3::Resource,
    type_url: &str,
) -> Result<&'a [u8], String> {
    let any = resource
        .resource
        .as_ref()
        .ok_or_else(|| format!("{name:?}: the resource has no body"))?;
    if any.type_url != type_url {
        return Err(format!(
            "{name:?}: body of type {:?} in a {type_url:?} response",
            any.type_url
        ));
    }
    Ok(&any.value)
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path.is_empty() || path == "?" {
            ".".to_owned()
        } else {
            path
        };
        format!("{what}: {field}: {}", e.inner())
    })
}

/// FNV-1a over the names and versions held (the mesh crate's version hash).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, text: &str) {
        for byte in text.bytes().chain([0]) {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_xds_api::envoy::service::discovery::v3::Resource;
    use serde_json::json;

    const CLUSTER: &str = "outbound|8080||catalog.shop.svc.cluster.local";

    fn destination_json(regex: &str) -> serde_json::Value {
        json!({
            "destination": {
                "host": "catalog.shop.svc.cluster.local", "port": 8080, "service": "shop/catalog",
                "protocol": "http", "protocolReason": "port name http",
                "http": {"routes": [{
                    "virtualService": null, "rule": null,
                    "matches": [{"index": 0, "uri": {"kind": "regex", "value": regex}}],
                    "action": {"type": "route", "destinations": [{"cluster": CLUSTER,
                        "host": "catalog.shop.svc.cluster.local", "subset": null, "port": 8080,
                        "weight": 100}]},
                    "retries": {"attempts": 2, "retryOn": "connect-failure"}
                }]}
            },
            "clusters": {CLUSTER: {
                "name": CLUSTER, "host": "catalog.shop.svc.cluster.local", "port": 8080,
                "subset": null, "protocol": "http", "loadBalancer": "LEAST_REQUEST",
                "connectionPool": {}, "endpoints": []
            }},
            "addresses": ["10.96.0.20:8080"]
        })
    }

    fn response(
        type_url: &str,
        resources: Vec<Resource>,
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.to_owned(),
            resources,
            removed_resources: removed.iter().map(|n| (*n).to_owned()).collect(),
            nonce: "1".to_owned(),
            ..Default::default()
        }
    }

    fn destination(name: &str, version: &str, body: &serde_json::Value) -> Resource {
        Resource {
            name: name.to_owned(),
            aliases: vec!["catalog.shop.svc.cluster.local:8080".to_owned()],
            version: version.to_owned(),
            resource: Some(prost_types::Any {
                type_url: DESTINATION_TYPE.to_owned(),
                value: v1alpha1::Destination {
                    json: serde_json::to_vec(body).unwrap(),
                }
                .encode_to_vec(),
            }),
        }
    }

    fn endpoints(name: &str, version: &str, addresses: &[&str]) -> Resource {
        let list: Vec<_> = addresses
            .iter()
            .map(|a| json!({"address": a, "health": "healthy", "namespace": "shop"}))
            .collect();
        Resource {
            name: name.to_owned(),
            aliases: Vec::new(),
            version: version.to_owned(),
            resource: Some(prost_types::Any {
                type_url: ENDPOINTS_TYPE.to_owned(),
                value: v1alpha1::Endpoints {
                    json: serde_json::to_vec(&list).unwrap(),
                }
                .encode_to_vec(),
            }),
        }
    }

    #[test]
    fn a_destination_and_its_endpoints_build_a_config_the_l7_path_can_look_up() {
        let mut held = Resources::default();
        held.want("10.96.0.20:8080");
        assert!(!held.settled("10.96.0.20:8080"));
        let body = destination_json("/v[0-9]+/.*");
        held.apply(&response(
            DESTINATION_TYPE,
            vec![destination("10.96.0.20:8080", "d1", &body)],
            &[],
        ))
        .unwrap();
        assert!(!held.settled("10.96.0.20:8080"), "endpoints not here yet");
        assert_eq!(
            held.sync_clusters(),
            ClusterChanges {
                subscribe: vec![CLUSTER.to_owned()],
                unsubscribe: vec![]
            }
        );
        held.apply(&response(
            ENDPOINTS_TYPE,
            vec![endpoints(CLUSTER, "e1", &["10.244.0.5:8080"])],
            &[],
        ))
        .unwrap();
        assert!(held.settled("10.96.0.20:8080"));
        let config = held.build(&ProxyInfo::default());
        config.compile().unwrap();
        let (key, found) = config.destination("10.96.0.20:8080", 8080).unwrap();
        assert_eq!(key, "catalog.shop.svc.cluster.local:8080");
        assert_eq!(found.service, "shop/catalog");
        assert_eq!(
            config.clusters[CLUSTER].endpoints[0].address,
            "10.244.0.5:8080"
        );
        assert!(
            config
                .destination("catalog.shop.svc.cluster.local:8080", 8080)
                .is_some()
        );
        let first = config.version.clone();
        assert_eq!(held.build(&ProxyInfo::default()).version, first, "stable");
        assert_eq!(
            held.versions(DESTINATION_TYPE),
            BTreeMap::from([("10.96.0.20:8080".to_owned(), "d1".to_owned())])
        );
        assert_eq!(
            held.versions(ENDPOINTS_TYPE),
            BTreeMap::from([(CLUSTER.to_owned(), "e1".to_owned())])
        );
        held.apply(&response(
            ENDPOINTS_TYPE,
            vec![endpoints(CLUSTER, "e2", &["10.244.0.6:8080"])],
            &[],
        ))
        .unwrap();
        assert_ne!(held.build(&ProxyInfo::default()).version, first);
    }

    #[test]
    fn removed_destinations_are_forgotten_and_remembered_as_absent() {
        let mut held = Resources::default();
        let body = destination_json("/.*");
        held.apply(&response(
            DESTINATION_TYPE,
            vec![destination("10.96.0.20:8080", "d1", &body)],
            &[],
        ))
        .unwrap();
        held.sync_clusters();
        held.apply(&response(DESTINATION_TYPE, vec![], &["10.96.0.20:8080"]))
            .unwrap();
        assert!(held.settled("10.96.0.20:8080"), "absent: relay as TCP");
        assert!(held.build(&ProxyInfo::default()).destinations.is_empty());
        assert_eq!(
            held.sync_clusters(),
            ClusterChanges {
                subscribe: vec![],
                unsubscribe: vec![CLUSTER.to_owned()]
            }
        );
        assert!(held.versions(DESTINATION_TYPE).is_empty());
    }

    #[test]
    fn a_payload_that_does_not_parse_or_compile_is_refused_naming_the_resource_and_field() {
        let mut held = Resources::default();
        let bad_regex = destination_json("(unclosed");
        let error = held
            .apply(&response(
                DESTINATION_TYPE,
                vec![destination("10.96.0.20:8080", "d1", &bad_regex)],
                &[],
            ))
            .unwrap_err();
        assert!(
            error.starts_with("destination \"10.96.0.20:8080\": destination.http"),
            "{error}"
        );
        let mut missing = destination_json("/.*");
        missing["destination"]["port"] = json!("eighty");
        let error = held
            .apply(&response(
                DESTINATION_TYPE,
                vec![destination("10.96.0.20:8080", "d1", &missing)],
                &[],
            ))
            .unwrap_err();
        assert!(error.contains("destination.port"), "{error}");
        let error = held
            .apply(&response(
                ENDPOINTS_TYPE,
                vec![endpoints(CLUSTER, "e1", &["pod-a:8080"])],
                &[],
            ))
            .unwrap_err();
        assert_eq!(
            error,
            format!("endpoints {CLUSTER:?}: [0].address: \"pod-a:8080\" is not ip:port")
        );
    }

    #[test]
    fn a_new_version_naming_a_cluster_without_endpoints_yet_warms_while_the_old_one_serves() {
        let mut held = Resources::default();
        let v1 = destination_json("/.*");
        held.apply(&response(
            DESTINATION_TYPE,
            vec![destination("10.96.0.20:8080", "d1", &v1)],
            &[],
        ))
        .unwrap();
        held.sync_clusters();
        held.apply(&response(
            ENDPOINTS_TYPE,
            vec![endpoints(CLUSTER, "e1", &["10.244.0.5:8080"])],
            &[],
        ))
        .unwrap();
        // The route moves to subset v2: a cluster whose endpoints are not here yet.
        const V2: &str = "outbound|8080|v2|catalog.shop.svc.cluster.local";
        let mut v2 = v1.clone();
        v2["destination"]["http"]["routes"][0]["action"]["destinations"][0]["cluster"] = json!(V2);
        let cluster = v2["clusters"][CLUSTER].clone();
        v2["clusters"] = json!({ V2: cluster });
        held.apply(&response(
            DESTINATION_TYPE,
            vec![destination("10.96.0.20:8080", "d2", &v2)],
            &[],
        ))
        .unwrap();
        let changes = held.sync_clusters();
        assert_eq!(changes.subscribe, [V2], "the new cluster is asked for");
        assert!(changes.unsubscribe.is_empty(), "the old one still serves");
        let config = held.build(&ProxyInfo::default());
        let route = &config.destinations["catalog.shop.svc.cluster.local:8080"]
            .http
            .routes[0];
        assert_eq!(
            route.action.destinations[0].cluster, CLUSTER,
            "d1 serves while d2 warms"
        );
        assert_eq!(held.versions(DESTINATION_TYPE)["10.96.0.20:8080"], "d1");

        held.apply(&response(
            ENDPOINTS_TYPE,
            vec![endpoints(V2, "e2", &["10.244.0.6:8080"])],
            &[],
        ))
        .unwrap();
        let changes = held.sync_clusters();
        assert_eq!(
            changes.unsubscribe,
            [CLUSTER],
            "warmed: the old cluster goes"
        );
        let config = held.build(&ProxyInfo::default());
        let route = &config.destinations["catalog.shop.svc.cluster.local:8080"]
            .http
            .routes[0];
        assert_eq!(route.action.destinations[0].cluster, V2);
        assert_eq!(config.clusters[V2].endpoints[0].address, "10.244.0.6:8080");
        assert!(held.warming.is_empty());
    }
}
