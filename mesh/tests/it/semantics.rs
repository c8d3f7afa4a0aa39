//! Resolution semantics on small inline inputs: gateways, sourceLabels, exportTo, short names,
//! default routes, 404 when a VirtualService owns the host, subset policy merging,
//! `consecutiveErrors`, protocol per port.

use outrigger_mesh::config::{ActionKind, ProxyConfig};
use outrigger_mesh::explain::{explain, parse_request};
use outrigger_mesh::{ProxyId, Snapshot, resolve};

const BASE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {serviceAccountName: client, containers: [{name: c, image: c}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: app, labels: {app: api, version: v1}}
spec: {containers: [{name: c, image: c}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: api-2, namespace: app, labels: {app: api, version: v2}}
spec: {containers: [{name: c, image: c}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: app}
spec:
  clusterIP: 10.96.0.10
  selector: {app: api}
  ports:
  - {name: http, port: 8080, targetPort: 8080}
  - {name: mysql-main, port: 3306, targetPort: 3306}
  - {name: other, port: 9000, targetPort: 9000}
"#;

fn config(extra: &str, pod: &str) -> ProxyConfig {
    let mut snapshot = Snapshot::default();
    snapshot.add_yaml("base", BASE).expect("base loads");
    snapshot.add_yaml("extra", extra).expect("extra loads");
    resolve(&snapshot, &ProxyId::from_pod(&snapshot, pod).expect("pod"))
}

fn route_of(
    config: &ProxyConfig,
    headers: &[&str],
    line: &str,
) -> (Option<String>, Option<usize>, serde_json::Value) {
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let answer = explain(config, &parse_request(line, &headers).expect("request"));
    (
        answer.virtual_service,
        answer.rule,
        serde_json::to_value(&answer.destinations).expect("json"),
    )
}

const API: &str = "api.app.svc.cluster.local:8080";

#[test]
fn no_virtual_service_gives_the_default_route_and_istio_default_retries() {
    let config = config("", "app/client");
    let table = &config.destinations[API].http;
    assert!(!table.from_virtual_service);
    assert_eq!(table.routes.len(), 1);
    let route = &table.routes[0];
    assert_eq!(
        route.action.destinations[0].cluster,
        "outbound|8080||api.app.svc.cluster.local"
    );
    assert_eq!(route.retries.attempts, 2);
    assert_eq!(
        route.retries.retry_on,
        "connect-failure,refused-stream,unavailable,cancelled"
    );
    assert_eq!(route.timeout_ms, None);
    assert_eq!(config.addresses["10.96.0.10:8080"], API);
    assert_eq!(config.host_aliases["api:8080"], API);
    assert_eq!(config.host_aliases["api.app.svc:8080"], API);
    let endpoints: Vec<_> = config.clusters["outbound|8080||api.app.svc.cluster.local"]
        .endpoints
        .iter()
        .map(|e| e.address.clone())
        .collect();
    assert_eq!(endpoints, vec!["10.0.1.1:8080", "10.0.1.2:8080"]);
}

#[test]
fn protocols_per_port() {
    let config = config("", "app/client");
    assert_eq!(config.destinations[API].protocol.as_str(), "http");
    assert_eq!(
        config.destinations["api.app.svc.cluster.local:3306"]
            .protocol
            .as_str(),
        "mysql"
    );
    assert_eq!(
        config.destinations["api.app.svc.cluster.local:9000"]
            .protocol
            .as_str(),
        "auto"
    );
    assert!(
        config.destinations["api.app.svc.cluster.local:3306"]
            .http
            .routes
            .is_empty()
    );
    assert_eq!(
        config.destinations["api.app.svc.cluster.local:3306"]
            .tcp
            .len(),
        1
    );
}

const VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: app}
spec:
  hosts: [api]
  http:
  - match:
    - uri: {prefix: /v2}
    route:
    - destination: {host: api, subset: v2}
"#;

#[test]
fn a_virtual_service_owns_the_host_no_match_is_404() {
    let config = config(VS, "app/client");
    assert!(config.destinations[API].http.from_virtual_service);
    let answer = explain(
        &config,
        &parse_request("GET http://api:8080/v1", &[]).expect("request"),
    );
    assert_eq!(answer.action["type"], "noRoute");
    assert_eq!(answer.action["status"], 404);
    let (vs, rule, _) = route_of(&config, &[], "GET http://api:8080/v2/x");
    assert_eq!((vs.as_deref(), rule), (Some("app/api"), Some(0)));
    // the v2 subset has no DestinationRule: the cluster does not exist (503 NR)
    assert!(
        !config
            .clusters
            .contains_key("outbound|8080|v2|api.app.svc.cluster.local")
    );
    assert!(answer.notes.iter().any(|n| n.contains("404 NR")));
}

#[test]
fn gateway_bound_virtual_services_do_not_apply_to_sidecars() {
    let only_gateway = VS.replace("hosts: [api]", "hosts: [api]\n  gateways: [ingress]");
    assert!(
        !config(&only_gateway, "app/client").destinations[API]
            .http
            .from_virtual_service
    );
    let both = VS.replace("hosts: [api]", "hosts: [api]\n  gateways: [ingress, mesh]");
    assert!(
        config(&both, "app/client").destinations[API]
            .http
            .from_virtual_service
    );
    let match_gateway = VS.replace(
        "    - uri: {prefix: /v2}",
        "    - uri: {prefix: /v2}\n      gateways: [ingress]",
    );
    let config = config(&match_gateway, "app/client");
    let destination = &config.destinations[API];
    assert!(destination.http.routes.is_empty());
    assert!(
        destination.excluded[0]
            .reason
            .contains("do not include mesh"),
        "{:?}",
        destination.excluded
    );
}

#[test]
fn source_labels_and_ports_are_decided_per_proxy() {
    let vs = VS.replace(
        "    - uri: {prefix: /v2}",
        "    - uri: {prefix: /v2}\n      sourceLabels: {app: client}\n      port: 8080",
    );
    assert_eq!(
        config(&vs, "app/client").destinations[API]
            .http
            .routes
            .len(),
        1
    );
    let from_api = config(&vs, "app/api-1");
    assert!(from_api.destinations[API].http.routes.is_empty());
    assert!(
        from_api.destinations[API].excluded[0]
            .reason
            .contains("sourceLabels app=client")
    );
    let wrong_port = VS.replace(
        "    - uri: {prefix: /v2}",
        "    - uri: {prefix: /v2}\n      port: 9999",
    );
    assert!(
        config(&wrong_port, "app/client").destinations[API].excluded[0]
            .reason
            .contains("port 9999")
    );
}

#[test]
fn export_to_is_honoured() {
    let other = r#"
apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: other, labels: {app: outsider}}
spec: {containers: [{name: c, image: c}]}
"#;
    let hidden = format!(
        "{}---\n{other}",
        VS.replace("hosts: [api]", "hosts: [api]\n  exportTo: [\".\"]")
    );
    assert!(
        config(&hidden, "app/client").destinations[API]
            .http
            .from_virtual_service
    );
    assert!(
        !config(&hidden, "other/outsider").destinations[API]
            .http
            .from_virtual_service
    );
    let service_hidden = format!(
        "{other}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: private\n  namespace: app\n  annotations: {{networking.istio.io/exportTo: \".\"}}\nspec:\n  ports: [{{name: http, port: 80}}]\n"
    );
    assert!(
        config(&service_hidden, "app/client")
            .destinations
            .contains_key("private.app.svc.cluster.local:80")
    );
    assert!(
        !config(&service_hidden, "other/outsider")
            .destinations
            .contains_key("private.app.svc.cluster.local:80")
    );
}

#[test]
fn subset_policy_overrides_and_consecutive_errors_is_read() {
    let dr = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: app}
spec:
  host: api.app.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 10}}
    outlierDetection: {consecutiveErrors: 7, interval: 1s}
    portLevelSettings:
    - port: {number: 3306}
      connectionPool: {tcp: {maxConnections: 2}}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
"#;
    let config = config(dr, "app/client");
    let base = &config.clusters["outbound|8080||api.app.svc.cluster.local"];
    assert_eq!(base.load_balancer, "ROUND_ROBIN");
    assert_eq!(base.connection_pool.max_connections, Some(10));
    let outlier = base.outlier_detection.as_ref().expect("outlier detection");
    assert_eq!(
        (
            outlier.consecutive_5xx_errors,
            outlier.interval_ms,
            outlier.base_ejection_time_ms,
            outlier.max_ejection_percent
        ),
        (7, 1000, 30_000, 10)
    );
    let v2 = &config.clusters["outbound|8080|v2|api.app.svc.cluster.local"];
    assert_eq!(v2.load_balancer, "RANDOM");
    assert_eq!(
        v2.connection_pool.max_connections,
        Some(10),
        "the subset keeps what it does not override"
    );
    assert_eq!(
        v2.endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect::<Vec<_>>(),
        vec!["10.0.1.2:8080"]
    );
    assert_eq!(
        config.clusters["outbound|3306||api.app.svc.cluster.local"]
            .connection_pool
            .max_connections,
        Some(2)
    );
}

#[test]
fn weighted_routes_and_short_names_in_the_rule_namespace() {
    let vs = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: app}
spec:
  hosts: [api.app.svc.cluster.local]
  http:
  - route:
    - destination: {host: api}
      weight: 3
    - destination: {host: api.app.svc.cluster.local, port: {number: 9000}}
      weight: 1
"#;
    let config = config(vs, "app/client");
    let route = &config.destinations[API].http.routes[0];
    assert_eq!(route.action.kind, ActionKind::Route);
    let got: Vec<_> = route
        .action
        .destinations
        .iter()
        .map(|d| (d.cluster.as_str(), d.weight))
        .collect();
    assert_eq!(
        got,
        vec![
            ("outbound|8080||api.app.svc.cluster.local", 75),
            ("outbound|9000||api.app.svc.cluster.local", 25)
        ]
    );
}

/// A ServiceEntry is outside the mesh unless it says `MESH_INTERNAL` (Istio's default location
/// is `MESH_EXTERNAL`); a Kubernetes Service is inside. The flag travels with each cluster, and
/// is left out of the JSON when false.
#[test]
fn service_entry_location_marks_clusters_outside_the_mesh() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: app}
spec:
  hosts: [payments.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: app}
spec:
  hosts: [legacy.internal]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"#;
    let config = config(extra, "app/client");
    let external = |name: &str| {
        config
            .clusters
            .get(name)
            .unwrap_or_else(|| panic!("cluster {name} in {:?}", config.clusters.keys()))
            .mesh_external
    };
    assert!(external("outbound|443||payments.example.com"));
    assert!(!external("outbound|80||legacy.internal"));
    assert!(!external("outbound|8080||api.app.svc.cluster.local"));
    let json = serde_json::to_value(&config).expect("json");
    assert_eq!(
        json["clusters"]["outbound|443||payments.example.com"]["meshExternal"],
        true
    );
    assert!(
        json["clusters"]["outbound|8080||api.app.svc.cluster.local"]
            .get("meshExternal")
            .is_none()
    );
}

#[test]
fn a_pods_endpoints_share_one_label_map_across_ports_and_subsets() {
    let dr = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: app}
spec:
  host: api
  subsets:
  - {name: v1, labels: {version: v1}}
"#;
    let config = config(dr, "app/client");
    let endpoint = |cluster: &str| {
        config.clusters[cluster]
            .endpoints
            .iter()
            .find(|e| e.pod.as_deref() == Some("api-1"))
            .unwrap_or_else(|| panic!("api-1 in {cluster}"))
            .labels
            .clone()
    };
    let all = endpoint("outbound|8080||api.app.svc.cluster.local");
    let v1 = endpoint("outbound|8080|v1|api.app.svc.cluster.local");
    let other_port = endpoint("outbound|9000||api.app.svc.cluster.local");
    assert_eq!(
        all.iter().collect::<Vec<_>>(),
        [
            (&"app".to_owned(), &"api".to_owned()),
            (&"version".to_owned(), &"v1".to_owned())
        ]
    );
    // One map per pod, not a copy per endpoint (30,000 copies were 16 MiB of pilot's rebuild).
    assert!(
        std::sync::Arc::ptr_eq(&all, &v1),
        "the subset's endpoint shares the map"
    );
    assert!(
        std::sync::Arc::ptr_eq(&all, &other_port),
        "so does another port's"
    );
}
