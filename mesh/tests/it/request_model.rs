//! The request-side fields the proxy applies: `headers` (rule and destination level, names
//! lowercased), `mirror` with `mirrorPercentage`, and a Sidecar's `outboundTrafficPolicy`.

use outrigger_mesh::config::{OutboundTrafficPolicy, ProxyConfig};
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
kind: Service
metadata: {name: api, namespace: app}
spec:
  clusterIP: 10.96.0.10
  selector: {app: api}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: shadow, namespace: app}
spec:
  clusterIP: 10.96.0.11
  selector: {app: api}
  ports: [{name: http, port: 8080, targetPort: 8080}]
"#;

const API: &str = "api.app.svc.cluster.local:8080";

fn config(extra: &str) -> ProxyConfig {
    let mut snapshot = Snapshot::default();
    snapshot.add_yaml("base", BASE).expect("base loads");
    snapshot.add_yaml("extra", extra).expect("extra loads");
    resolve(
        &snapshot,
        &ProxyId::from_pod(&snapshot, "app/client").expect("pod"),
    )
}

#[test]
fn headers_of_the_rule_and_of_each_destination_are_kept_lowercase() {
    let config = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: app}
spec:
  hosts: [api]
  http:
  - headers:
      request: {set: {X-Env: prod}, add: {x-tag: a}, remove: [X-Debug]}
      response: {remove: [server]}
    route:
    - destination: {host: api}
      headers: {response: {set: {x-from: api}}}
"#,
    );
    let route = &config.destinations[API].http.routes[0];
    let rules = route.headers.as_ref().expect("rule headers");
    assert_eq!(rules.request.set["x-env"], "prod");
    assert_eq!(rules.request.add["x-tag"], "a");
    assert_eq!(rules.request.remove, ["x-debug"]);
    assert_eq!(rules.response.remove, ["server"]);
    let destination = route.action.destinations[0]
        .headers
        .as_ref()
        .expect("destination headers");
    assert_eq!(destination.response.set["x-from"], "api");
    assert!(destination.request.is_empty());
    // Round trip through the file format.
    let text = serde_json::to_string(&config).expect("json");
    let back: ProxyConfig = serde_json::from_str(&text).expect("reads back");
    assert_eq!(back, config);
}

#[test]
fn mirror_names_its_cluster_and_percentage_defaults_to_100() {
    let config = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: app}
spec:
  hosts: [api]
  http:
  - match: [{uri: {prefix: /half}}]
    route: [{destination: {host: api}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 50.5}
  - route: [{destination: {host: api}}]
    mirror: {host: shadow}
"#,
    );
    let routes = &config.destinations[API].http.routes;
    let half = routes[0].mirrors.first().expect("mirror");
    assert_eq!(routes[0].mirrors.len(), 1);
    assert_eq!(half.cluster, "outbound|8080||shadow.app.svc.cluster.local");
    assert_eq!(half.host, "shadow.app.svc.cluster.local");
    assert_eq!((half.port, half.percentage), (8080, 50.5));
    assert_eq!(
        routes[1]
            .mirrors
            .iter()
            .map(|m| m.percentage)
            .collect::<Vec<_>>(),
        [100.0]
    );
}

#[test]
fn mirrors_list_gives_one_copy_per_entry_in_order() {
    let config = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: app}
spec:
  hosts: [api]
  http:
  - route: [{destination: {host: api}}]
    mirrors:
    - destination: {host: shadow}
      percentage: {value: 25}
    - destination: {host: api, port: {number: 8080}}
"#,
    );
    let mirrors = &config.destinations[API].http.routes[0].mirrors;
    let got: Vec<(&str, f64)> = mirrors
        .iter()
        .map(|m| (m.cluster.as_str(), m.percentage))
        .collect();
    assert_eq!(
        got,
        [
            ("outbound|8080||shadow.app.svc.cluster.local", 25.0),
            ("outbound|8080||api.app.svc.cluster.local", 100.0),
        ]
    );
}

#[test]
fn outbound_traffic_policy_comes_from_the_sidecar_that_applies() {
    assert_eq!(
        config("").outbound_traffic_policy,
        OutboundTrafficPolicy::AllowAny
    );
    let root = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}
"#;
    assert_eq!(
        config(root).outbound_traffic_policy,
        OutboundTrafficPolicy::RegistryOnly
    );
    // The namespace's Sidecar wins over the root's, a selecting one over both.
    let namespace = format!(
        "{root}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: app}}\nspec: {{outboundTrafficPolicy: {{mode: ALLOW_ANY}}}}\n"
    );
    assert_eq!(
        config(&namespace).outbound_traffic_policy,
        OutboundTrafficPolicy::AllowAny
    );
    let selecting = format!(
        "{namespace}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: client, namespace: app}}\nspec: {{workloadSelector: {{labels: {{app: client}}}}, outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}}}\n"
    );
    let config = config(&selecting);
    assert_eq!(
        config.outbound_traffic_policy,
        OutboundTrafficPolicy::RegistryOnly
    );
    let text = serde_json::to_string(&config).expect("json");
    assert!(
        text.contains(r#""outboundTrafficPolicy":"REGISTRY_ONLY""#),
        "{text}"
    );
}
