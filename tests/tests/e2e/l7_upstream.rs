//! Outlier detection across real pods: a client pod and ratings v1/v2, where v2 has no app
//! (its connections are refused). The client proxy's default retries hide the refusals, and
//! after `consecutive5xxErrors` connect failures (Envoy counts them as 503) v2 is ejected:
//! `/clusters` on the client proxy's loopback admin port shows `/failed_outlier_check`, and
//! no further request is sent to it while it is out.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use outrigger_e2e::bins::workspace_bin;
use outrigger_e2e::topology::{INIT_ARGS, Topology, metric_sum};

use crate::APP;

const CLUSTER_IP: &str = "10.96.0.20";
const PORT: u16 = 9080;

fn inputs(topology: &Topology) -> String {
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e\n---\n");
    for pod in &topology.pods {
        let (app, version) = pod
            .name
            .split_once('-')
            .unwrap_or((pod.name.as_str(), "v1"));
        text += &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: e2e\n  labels: {{app: {app}, version: {version}}}\n\
             spec:\n  containers:\n  - name: app\n    image: e2e/app\nstatus:\n  phase: Running\n  podIP: {ip}\n---\n",
            name = pod.name,
            ip = pod.ip,
        );
    }
    text += &format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ratings\n  namespace: e2e\n\
         spec:\n  clusterIP: {CLUSTER_IP}\n  selector: {{app: ratings}}\n  ports:\n  - name: http\n    port: {PORT}\n    targetPort: {PORT}\n---\n"
    );
    text += r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: e2e}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
"#;
    text
}

fn build_config(topology: &Topology) -> PathBuf {
    let dir = topology.dir.path();
    let input = dir.join("mesh.yaml");
    std::fs::write(&input, inputs(topology)).expect("write inputs");
    let output = dir.join("client-proxy.json");
    let out = std::process::Command::new(workspace_bin("outrigger-routes"))
        .args(["build", "-f"])
        .arg(&input)
        .args(["--for", "e2e/client", "-o"])
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

/// `curl` from the client pod: each body followed by `code=<status>`.
fn curl(topology: &Topology, args: &[&str]) -> String {
    let mut all = vec!["-sS", "--max-time", "10", "-w", "\\ncode=%{http_code}\\n"];
    all.extend_from_slice(args);
    let out = topology
        .pod("client")
        .ns
        .exec("curl", &all)
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root: sudo ./scripts/test.sh runs it"]
fn an_endpoint_refusing_connections_is_ejected_across_pods() {
    let names = ["client", "ratings-v1", "ratings-v2"];
    let topology = Topology::new(&names, Path::new(APP)).expect("build the topology");
    topology
        .capture("client", INIT_ARGS)
        .expect("capture client");
    topology
        .capture("ratings-v1", INIT_ARGS)
        .expect("capture ratings-v1");
    let config = build_config(&topology);
    let client_proxy = topology
        .start_proxy(
            "client",
            &[],
            &["--config-file", config.to_str().expect("utf-8 path")],
        )
        .expect("client proxy");
    let _server_proxy = topology
        .start_proxy("ratings-v1", &[], &[])
        .expect("ratings-v1 proxy");
    let v1 = topology.pod("ratings-v1").addr(PORT);
    let _server = topology
        .start_server("ratings-v1", &["http-server", &v1])
        .expect("ratings-v1 app");
    let v2 = topology.pod("ratings-v2").addr(PORT);

    let urls: Vec<String> = (0..20)
        .map(|_| format!("http://{CLUSTER_IP}:{PORT}/"))
        .collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let answers = curl(&topology, &urls);
    assert_eq!(
        answers.matches("code=200").count(),
        20,
        "the default retries hide the refusals: {answers}\n{}",
        client_proxy.log_text()
    );

    let clusters = curl(&topology, &["http://127.0.0.1:15000/clusters"]);
    let cluster = "outbound|9080||ratings.e2e.svc.cluster.local";
    let line = |field: &str| {
        clusters
            .lines()
            .find(|l| l.starts_with(&format!("{cluster}::{v2}::{field}::")))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert!(
        line("health_flags").ends_with("::/failed_outlier_check"),
        "{clusters}"
    );
    assert!(line("outlier_ejections").ends_with("::1"), "{clusters}");
    let tried = line("rq_total");
    assert_eq!(
        tried,
        format!("{cluster}::{v2}::rq_total::2"),
        "two refusals, then no more tries while ejected: {clusters}"
    );
    assert!(
        clusters.contains(&format!("{cluster}::{v1}::health_flags::healthy")),
        "{clusters}"
    );
    let metrics = topology.metrics("client").expect("client metrics");
    assert_eq!(
        metric_sum(
            &metrics,
            "istio_requests_total",
            &[r#"response_code="200""#, r#"destination_version="v1""#]
        ),
        20.0,
        "{metrics}"
    );
}
