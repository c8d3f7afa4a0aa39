//! Layer 7 across real pods: a client pod and reviews v1/v2/v3, each captured by
//! outrigger-iptables with its proxy as UID 1337; a Service ClusterIP no interface owns; the
//! client proxy's configuration written by the real `outrigger-routes build`. Default route to
//! v1, a header rule to v2, a 90/10 split over 200 calls, an abort 500, a 1 s timeout against a
//! 3 s answer (504 UT), HTTP/2 with prior knowledge (curl), and the request metrics of both sides (the servers' proxies serve inbound HTTP).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use outrigger_e2e::bins::workspace_bin;
use outrigger_e2e::topology::{INIT_ARGS, Topology, metric_sum};

use crate::APP;

const CLUSTER_IP: &str = "10.96.0.10";
const PORT: u16 = 9080;

fn inputs(topology: &Topology) -> String {
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e\n---\n");
    for pod in &topology.pods {
        let (app, version) = match pod.name.split_once('-') {
            Some((app, version)) => (app.to_owned(), version.to_owned()),
            None => (pod.name.clone(), "v1".to_owned()),
        };
        text += &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: e2e\n  labels: {{app: {app}, version: {version}}}\n\
             spec:\n  containers:\n  - name: app\n    image: e2e/app\nstatus:\n  phase: Running\n  podIP: {ip}\n---\n",
            name = pod.name,
            ip = pod.ip,
        );
    }
    text += &format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: e2e\n\
         spec:\n  clusterIP: {CLUSTER_IP}\n  selector: {{app: reviews}}\n  ports:\n  - name: http\n    port: {PORT}\n    targetPort: {PORT}\n---\n"
    );
    text += r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: e2e}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: e2e}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 1s
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v3}, weight: 10}
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    text
}

/// Runs the real `outrigger-routes build` for one pod; the file is readable by 1337.
fn build_config(topology: &Topology, pod: &str) -> PathBuf {
    let dir = topology.dir.path();
    let input = dir.join("mesh.yaml");
    std::fs::write(&input, inputs(topology)).expect("write inputs");
    let output = dir.join(format!("{pod}-proxy.json"));
    let routes = workspace_bin("outrigger-routes");
    let out = std::process::Command::new(routes)
        .args(["build", "-f"])
        .arg(&input)
        .args(["--for", &format!("e2e/{pod}"), "-o"])
        .arg(&output)
        .output()
        .expect("run outrigger-routes");
    assert!(
        out.status.success(),
        "outrigger-routes build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    output
}

/// `curl` from the client pod as root (captured like any app UID but 1337): prints each body
/// followed by a line `code=<status>`.
fn curl(topology: &Topology, args: &[&str]) -> String {
    let mut all = vec!["-sS", "--max-time", "10", "-w", "\\ncode=%{http_code}\\n"];
    all.extend_from_slice(args);
    let out = topology
        .pod("client")
        .ns
        .exec("curl", &all)
        .expect("run curl (the e2e tests need curl with HTTP/2)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn url(path: &str) -> String {
    format!("http://{CLUSTER_IP}:{PORT}{path}")
}

/// The version of every `hello from <ip>:<port>` answer, in order.
fn versions(topology: &Topology, text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("hello from "))
        .map(|addr| {
            topology
                .pods
                .iter()
                .find(|p| addr.starts_with(&format!("{}:", p.ip)))
                .map_or("?".to_owned(), |p| p.name.clone())
        })
        .collect()
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn requests_are_routed_by_the_istio_model_across_pods() {
    let names = ["client", "reviews-v1", "reviews-v2", "reviews-v3"];
    let topology = Topology::new(&names, Path::new(APP)).expect("build the topology");
    let mut servers = Vec::new();
    for name in names {
        topology.capture(name, INIT_ARGS).expect("capture rules");
    }
    let config = build_config(&topology, "client");
    let config_arg = config.to_str().expect("utf-8 path");
    let client_proxy = topology
        .start_proxy("client", &[], &["--config-file", config_arg])
        .expect("client proxy");
    let mut server_proxies = Vec::new();
    for name in &names[1..] {
        // Each server proxy has its own pod's configuration: inbound HTTP on the `http` port.
        let server_config = build_config(&topology, name);
        let server_arg = server_config.to_str().expect("utf-8 path");
        server_proxies.push(
            topology
                .start_proxy(name, &[], &["--config-file", server_arg])
                .expect("server proxy"),
        );
        let addr = topology.pod(name).addr(PORT);
        servers.push(
            topology
                .start_server(name, &["http-server", &addr])
                .expect("app server"),
        );
    }
    let log = || client_proxy.log_text();

    // Default route: v1; the header rule: v2 (one keep-alive connection for 10 calls each).
    let urls: Vec<String> = (0..10).map(|_| url("/reviews")).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let plain = curl(&topology, &urls);
    assert_eq!(
        versions(&topology, &plain),
        vec!["reviews-v1"; 10],
        "{plain}\n{}",
        log()
    );
    let mut jason = vec!["-H", "end-user: jason"];
    jason.extend_from_slice(&urls);
    let jason = curl(&topology, &jason);
    assert_eq!(
        versions(&topology, &jason),
        vec!["reviews-v2"; 10],
        "{jason}"
    );

    // 90/10 over 200 calls on one connection (the choice is per request).
    let split: Vec<String> = (0..200).map(|_| url("/split")).collect();
    let split: Vec<&str> = split.iter().map(String::as_str).collect();
    let answers = versions(&topology, &curl(&topology, &split));
    assert_eq!(answers.len(), 200);
    let v3 = answers.iter().filter(|v| *v == "reviews-v3").count();
    let v1 = answers.iter().filter(|v| *v == "reviews-v1").count();
    assert_eq!(v1 + v3, 200);
    assert!(
        (5..=40).contains(&v3),
        "v3 got {v3} of 200 (expected about 20)"
    );

    // Abort at 100 %.
    let abort = curl(&topology, &[&url("/abort")]);
    assert!(abort.ends_with("fault filter abort\ncode=500\n"), "{abort}");

    // A 1 s route timeout against an app that answers in 3 s.
    let started = std::time::Instant::now();
    let slow = curl(&topology, &[&url("/slow")]);
    assert!(
        slow.ends_with("upstream request timeout\ncode=504\n"),
        "{slow}"
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(2500));

    // HTTP/2 with prior knowledge from the client to its proxy (with the response headers:
    // the server proxy's metadata exchange answer is stripped before the client sees it).
    let h2 = curl(
        &topology,
        &[
            "--http2-prior-knowledge",
            "-i",
            "-H",
            "end-user: jason",
            &url("/reviews"),
        ],
    );
    assert_eq!(
        versions(&topology, &h2),
        vec!["reviews-v2"],
        "{h2}\n{}",
        log()
    );
    assert!(h2.contains("HTTP/2 200"), "{h2}");
    assert!(!h2.contains("x-envoy-peer-metadata"), "{h2}");

    // The client proxy counted the requests under Istio's names and labels.
    let metrics = topology.metrics("client").expect("client metrics");
    let service = r#"destination_service="reviews.e2e.svc.cluster.local""#;
    let ok_v1 = metric_sum(
        &metrics,
        "istio_requests_total",
        &[
            r#"reporter="source""#,
            service,
            r#"destination_version="v1""#,
            r#"response_code="200""#,
        ],
    );
    assert_eq!(ok_v1, 10.0 + v1 as f64, "{metrics}");
    assert_eq!(
        metric_sum(
            &metrics,
            "istio_requests_total",
            &[r#"response_code="500""#, r#"response_flags="FI""#]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "istio_requests_total",
            &[r#"response_code="504""#, r#"response_flags="UT""#]
        ),
        1.0
    );
    // The server side counted the same requests (inbound HTTP, reporter="destination"): the
    // ten of the header rule and the HTTP/2 one reached v2, and the client proxy's metadata
    // exchange told it who sent them.
    let v2 = topology.metrics("reviews-v2").expect("v2 metrics");
    assert_eq!(
        metric_sum(
            &v2,
            "istio_requests_total",
            &[
                r#"reporter="destination""#,
                service,
                r#"source_workload="client""#,
                r#"source_workload_namespace="e2e""#,
                r#"source_app="client""#,
                r#"source_version="v1""#,
                r#"destination_workload="reviews-v2""#,
                r#"destination_version="v2""#,
                r#"response_code="200""#,
            ]
        ),
        11.0,
        "{v2}"
    );
    drop(servers);
    drop(server_proxies);
}
