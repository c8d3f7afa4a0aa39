//! The control plane end to end: the real `outrigger-pilot` (in the node's namespace, reading
//! outrigger-testkit's fake API server) streams the client pod's real proxy its configuration
//! over the plaintext xDS port; every pod is captured by outrigger-iptables. Traffic follows the
//! VirtualService; an edit moves it within 1 s; an endpoint added or removed is used or dropped
//! within 1 s; pilot killed, the proxy keeps serving the last configuration; pilot back, it
//! resyncs; a proxy with a bad token is refused, both sides saying so in their logs.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use outrigger_e2e::control_plane::{Pilot, pilot_address};
use outrigger_e2e::topology::{INIT_ARGS, ProxyProcess, Topology, metric_sum};
use serde_json::json;

use crate::APP;

const CLUSTER_IP: &str = "10.96.0.10";
const PORT: u16 = 9080;
const PODS: [&str; 5] = ["client", "reviews-v1", "reviews-v2", "reviews-v2b", "rogue"];

fn pod_yaml(topology: &Topology, name: &str) -> String {
    let (app, version) = match name {
        "reviews-v1" => ("reviews", "v1"),
        "reviews-v2" | "reviews-v2b" => ("reviews", "v2"),
        other => (other, "v1"),
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}-0\n  namespace: e2e\n  labels: {{app: {app}, version: {version}}}\n\
         spec:\n  serviceAccountName: {app}\n  containers:\n  - name: app\n    image: e2e/app\nstatus:\n  phase: Running\n  podIP: {ip}\n---\n",
        ip = topology.pod(name).ip,
    )
}

fn endpoint(topology: &Topology, name: &str) -> serde_json::Value {
    json!({
        "addresses": [topology.pod(name).ip.to_string()],
        "conditions": {"ready": true},
        "targetRef": {"kind": "Pod", "name": format!("{name}-0"), "namespace": "e2e"},
    })
}

/// The cluster: the pods, the Service `reviews` (a ClusterIP no interface owns), its
/// EndpointSlice (v1 and v2, not v2b yet), subsets by version, and a VirtualService to v1.
fn cluster(topology: &Topology) -> String {
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e\n---\n");
    for name in PODS {
        text += &pod_yaml(topology, name);
    }
    text += &format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: e2e\n\
         spec:\n  clusterIP: {CLUSTER_IP}\n  selector: {{app: reviews}}\n  ports:\n  - name: http\n    port: {PORT}\n    targetPort: {PORT}\n---\n"
    );
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "reviews-x1", "namespace": "e2e",
                     "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
        "endpoints": [endpoint(topology, "reviews-v1"), endpoint(topology, "reviews-v2")],
    });
    text += &format!("{slice}\n---\n");
    text += r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: e2e}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: e2e}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    text
}

/// One `curl` from the client pod (root: captured); the pod that answered, or what went wrong.
fn call(topology: &Topology) -> String {
    let url = format!("http://{CLUSTER_IP}:{PORT}/reviews");
    let out = topology
        .pod("client")
        .ns
        .exec("curl", &["-sS", "--max-time", "5", &url])
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.trim().strip_prefix("hello from ") {
        Some(addr) => topology
            .pods
            .iter()
            .find(|p| addr.starts_with(&format!("{}:", p.ip)))
            .map_or(format!("? {addr}"), |p| p.name.clone()),
        None => format!("error: {text} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// Calls until `done` holds for the answers so far (checked after each call), for up to
/// `limit`; the time it took.
fn until(
    topology: &Topology,
    limit: Duration,
    mut done: impl FnMut(&str) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done(&call(topology)) {
            return Some(started.elapsed());
        }
    }
    None
}

fn logs(client: &ProxyProcess, pilot: &Pilot) -> String {
    format!(
        "client proxy:\n{}\npilot:\n{}",
        client.log_text(),
        pilot.log_text()
    )
}

fn set_route(api: &outrigger_testkit::FakeApiServer, subset: &str) {
    api.modify(
        "networking.istio.io/v1",
        "VirtualService",
        "e2e",
        "reviews",
        |vs| {
            vs["spec"]["http"] =
                json!([{"route": [{"destination": {"host": "reviews", "subset": subset}}]}]);
        },
    )
    .expect("edit the VirtualService");
}

fn set_endpoints(api: &outrigger_testkit::FakeApiServer, endpoints: Vec<serde_json::Value>) {
    api.modify(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "e2e",
        "reviews-x1",
        |slice| {
            slice["endpoints"] = json!(endpoints);
        },
    )
    .expect("edit the EndpointSlice");
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn proxies_follow_pilot_and_keep_the_last_configuration_while_it_is_away() {
    let topology = Topology::new(&PODS, Path::new(APP)).expect("build the topology");
    for name in PODS {
        topology.capture(name, INIT_ARGS).expect("capture rules");
    }
    let api = topology
        .start_api_server(&cluster(&topology))
        .expect("API server");
    let mut pilot = topology.start_pilot(&api, "pilot.log").expect("pilot");
    let mut servers = Vec::new();
    let mut server_proxies = Vec::new();
    for name in ["reviews-v1", "reviews-v2", "reviews-v2b"] {
        server_proxies.push(topology.start_proxy(name, &[], &[]).expect("server proxy"));
        let addr = topology.pod(name).addr(PORT);
        servers.push(
            topology
                .start_server(name, &["http-server", &addr])
                .expect("app"),
        );
    }
    let token = topology
        .token_file("client-token", "token-client")
        .expect("token");
    let address = pilot_address();
    let discovery = [
        "--discovery-address",
        address.as_str(),
        "--discovery-token-file",
        token.to_str().expect("utf-8"),
    ];
    let client = topology
        .start_proxy("client", &[], &discovery)
        .expect("client proxy");

    // Traffic follows the VirtualService (the first call waits for the on-demand answer).
    for _ in 0..5 {
        assert_eq!(call(&topology), "reviews-v1", "{}", logs(&client, &pilot));
    }

    // The VirtualService edited: traffic moves within 1 s.
    set_route(&api.api, "v2");
    // No call fails while it moves: the new subset's cluster warms before the route uses it.
    let mut failed = Vec::new();
    let moved = until(&topology, Duration::from_secs(5), |pod| {
        if !pod.starts_with("reviews-") {
            failed.push(pod.to_owned());
        }
        pod == "reviews-v2"
    });
    assert!(
        failed.is_empty(),
        "calls failed during the move: {failed:?}"
    );
    assert!(
        moved.is_some_and(|t| t < Duration::from_secs(1)),
        "moved after {moved:?}\n{}",
        logs(&client, &pilot)
    );
    eprintln!("VirtualService edit -> traffic moved: {moved:?}");

    // An endpoint added is used within 1 s ...
    set_endpoints(
        &api.api,
        vec![
            endpoint(&topology, "reviews-v1"),
            endpoint(&topology, "reviews-v2"),
            endpoint(&topology, "reviews-v2b"),
        ],
    );
    let added = until(&topology, Duration::from_secs(5), |pod| {
        pod == "reviews-v2b"
    });
    assert!(
        added.is_some_and(|t| t < Duration::from_secs(1)),
        "used after {added:?}\n{}",
        logs(&client, &pilot)
    );
    eprintln!("endpoint added -> used: {added:?}");
    // ... and one removed is dropped within 1 s (then never answers again).
    set_endpoints(
        &api.api,
        vec![
            endpoint(&topology, "reviews-v1"),
            endpoint(&topology, "reviews-v2b"),
        ],
    );
    // The time of the last answer from the removed pod, over calls until ten in a row
    // come from the others.
    let started = Instant::now();
    let mut last_removed = None;
    let mut streak = 0;
    let settled = until(&topology, Duration::from_secs(5), |pod| {
        if pod == "reviews-v2" {
            last_removed = Some(started.elapsed());
            streak = 0;
        } else {
            assert_eq!(pod, "reviews-v2b", "{}", logs(&client, &pilot));
            streak += 1;
        }
        streak == 10
    });
    assert!(
        settled.is_some(),
        "reviews-v2 still answered\n{}",
        logs(&client, &pilot)
    );
    assert!(
        last_removed.is_none_or(|t| t < Duration::from_secs(1)),
        "the removed endpoint answered {last_removed:?} after the change"
    );
    eprintln!("endpoint removed -> last answer from it at {last_removed:?}");
    for _ in 0..10 {
        assert_eq!(call(&topology), "reviews-v2b");
    }

    // Pilot killed: the proxy keeps serving the last configuration, and counts it.
    pilot.process.signal(Signal::SIGKILL).expect("kill pilot");
    pilot
        .process
        .wait_timeout(Duration::from_secs(5))
        .expect("pilot gone");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_sum(
        &topology.metrics("client").expect("metrics"),
        "outrigger_proxy_discovery_connected",
        &[],
    ) != 0.0
    {
        assert!(
            Instant::now() < deadline,
            "the lost stream is never seen\n{}",
            logs(&client, &pilot)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..10 {
        assert_eq!(call(&topology), "reviews-v2b", "{}", logs(&client, &pilot));
    }
    let metrics = topology.metrics("client").expect("metrics");
    assert!(metric_sum(&metrics, "outrigger_proxy_discovery_disconnects_total", &[]) >= 1.0);
    assert!(
        metric_sum(
            &metrics,
            "outrigger_proxy_discovery_stale_connections_total",
            &[]
        ) >= 10.0,
        "{metrics}"
    );
    assert!(
        client
            .log_text()
            .contains("discovery stream to pilot lost: keeping the last good configuration"),
        "{}",
        logs(&client, &pilot)
    );
    let (status, _) = topology
        .from_node(&topology.pod("client").addr(15021), "GET", "/healthz/ready")
        .expect("ready");
    assert_eq!(status, 200, "still ready while pilot is away");

    // Changed while pilot was away; pilot back: the proxy resyncs.
    set_route(&api.api, "v1");
    let mut pilot = topology
        .start_pilot(&api, "pilot-2.log")
        .expect("pilot again");
    let resynced = until(&topology, Duration::from_secs(20), |pod| {
        pod == "reviews-v1"
    });
    assert!(
        resynced.is_some(),
        "never resynced\n{}\npilot:\n{}",
        client.log_text(),
        pilot.log_text()
    );
    eprintln!("pilot back -> resynced after {resynced:?}");
    assert!(
        metric_sum(
            &topology.metrics("client").expect("metrics"),
            "outrigger_proxy_discovery_connects_total",
            &[]
        ) >= 2.0
    );

    // A proxy with a bad token: refused, with a clear line on both sides.
    let bad = topology.token_file("rogue-token", "stolen").expect("token");
    let rogue_args = [
        "--discovery-address",
        address.as_str(),
        "--discovery-token-file",
        bad.to_str().expect("utf-8"),
        "--discovery-ready-timeout",
        "1s",
    ];
    let rogue = topology
        .start_proxy("rogue", &[], &rogue_args)
        .expect("rogue proxy (ready after the bound)");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let proxy_side = rogue.log_text();
        let pilot_side = pilot.log_text();
        if proxy_side.contains("discovery refused by pilot")
            && proxy_side.contains("token not authenticated by the API server")
            && pilot_side.contains("proxy refused: authentication failed")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rogue proxy:\n{proxy_side}\npilot:\n{pilot_side}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pilot.process.signal(Signal::SIGTERM).expect("stop pilot");
    let _ = pilot.process.wait_timeout(Duration::from_secs(5));
    drop(servers);
}
