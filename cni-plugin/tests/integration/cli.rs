//! The plugin binary from the command line, without root: version, error replies and codes, and
//! the ADD paths that end before the network namespace is entered.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::api::FakeApiServer;
use crate::support::runtime::{self, Sandbox};
use crate::support::{injected_pod, unique};

const PLUGIN: &str = env!("CARGO_BIN_EXE_outrigger-cni");

/// Runs the plugin with exactly `env` and `stdin`; (success, stdout).
fn call(env: &[(&str, &str)], stdin: &[u8]) -> (bool, String) {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plugin starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("stdin written");
    let out = child.wait_with_output().expect("plugin finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn error_code(stdout: &str) -> u64 {
    let reply: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("stdout is not the error JSON: {stdout:?}: {e}"));
    assert!(
        reply["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "error without msg: {reply}"
    );
    reply["code"].as_u64().expect("error has a code")
}

const ADD_ENV: [(&str, &str); 5] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c1"),
    ("CNI_NETNS", "/var/run/netns/does-not-exist"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/usr/lib/cni"),
];

#[test]
fn version_lists_every_supported_version() {
    let (ok, out) = call(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.1.0"}"#);
    assert!(ok);
    let reply: Value = serde_json::from_str(&out).expect("JSON reply");
    assert_eq!(
        reply,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn bad_stdin_configs_give_the_spec_error_codes() {
    let cases: [(&[u8], u64); 6] = [
        (b"", 6),
        (b"{\"cniVersion\": ", 6),
        (br#"{"name":"n","type":"outrigger-cni"}"#, 7),
        (
            br#"{"cniVersion":"1.0.0","name":"n","exclude_namespaces":{"a":1}}"#,
            7,
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":"x"}}"#,
            7,
        ),
        (br#"{"cniVersion":"0.2.0","name":"n"}"#, 1),
    ];
    for (stdin, code) in cases {
        let (ok, out) = call(&ADD_ENV, stdin);
        assert!(!ok, "{}", String::from_utf8_lossy(stdin));
        assert_eq!(
            error_code(&out),
            code,
            "{}: {out}",
            String::from_utf8_lossy(stdin)
        );
    }
}

#[test]
fn bad_environment_gives_code_4() {
    let conf = br#"{"cniVersion":"1.0.0","name":"n"}"#;
    for missing in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let env: Vec<_> = ADD_ENV
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let (ok, out) = call(&env, conf);
        assert!(!ok);
        assert_eq!(error_code(&out), 4, "{missing}: {out}");
    }
}

#[test]
fn non_kubernetes_sandbox_passes_the_previous_result_through() {
    let prev = json!({"cniVersion": "0.3.1", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.9.0.2/24", "interface": 0}]});
    let conf =
        json!({"cniVersion": "0.3.1", "name": "n", "type": "outrigger-cni", "prevResult": prev});
    let (ok, out) = call(&ADD_ENV, conf.to_string().as_bytes());
    assert!(ok, "{out}");
    let result: Value = serde_json::from_str(&out).expect("result JSON");
    let mut expected = prev.clone();
    expected["ips"][0]["version"] = json!("4");
    assert_eq!(result, expected);
}

#[test]
fn del_without_netns_and_gc_succeed_silently() {
    let conf = br#"{"cniVersion":"1.1.0","name":"n","type":"outrigger-cni"}"#;
    let (ok, out) = call(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ],
        conf,
    );
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out) = call(&[("CNI_COMMAND", "GC")], conf);
    assert!(ok && out.is_empty(), "{out}");
}

#[test]
fn status_reports_a_missing_kubeconfig_with_code_50() {
    let (ok, out) = call(
        &[("CNI_COMMAND", "STATUS")],
        br#"{"cniVersion":"1.1.0","name":"n","kubeconfig":"/nonexistent"}"#,
    );
    assert!(!ok);
    assert_eq!(error_code(&out), 50);
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let conf = json!({"cniVersion": "1.1.0", "name": "n", "kubeconfig": kubeconfig});
    let (ok, out) = call(&[("CNI_COMMAND", "STATUS")], conf.to_string().as_bytes());
    assert!(ok && out.is_empty(), "{out}");
}

/// ADD for a pod served by `api`, with a namespace path that does not exist.
fn add_for(
    api: &FakeApiServer,
    pod: &Value,
    timeout: f64,
) -> Result<Option<Value>, runtime::PluginFailure> {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "outrigger-cni", "kubeconfig": kubeconfig,
                      "api_timeout_seconds": timeout});
    let sandbox = Sandbox {
        container_id: "c1".into(),
        netns: Path::new("/var/run/netns/does-not-exist"),
        ifname: "eth0",
        cni_args: format!(
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME={}",
            pod["metadata"]["name"].as_str().expect("name")
        ),
        cni_path: runtime::cni_path(),
    };
    runtime::invoke(&sandbox, "ADD", "outrigger-cni", &conf)
}

#[test]
fn invalid_annotation_fails_add_naming_it() {
    let api = FakeApiServer::start();
    let mut pod = injected_pod();
    pod["metadata"]["name"] = json!(unique("web-"));
    pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] =
        json!("8080,metrics");
    api.add_pod(pod.clone());
    let failure = add_for(&api, &pod, 5.0).expect_err("ADD must fail");
    assert_eq!(failure.code(), 101);
    assert!(
        failure
            .stdout
            .contains("traffic.sidecar.istio.io/excludeInboundPorts"),
        "{}",
        failure.stdout
    );
}

#[test]
fn api_server_that_keeps_failing_gives_try_again_later() {
    let api = FakeApiServer::start();
    let mut pod = injected_pod();
    pod["metadata"]["name"] = json!(unique("web-"));
    api.fail_next(&[500; 100]);
    let start = std::time::Instant::now();
    let failure = add_for(&api, &pod, 1.0).expect_err("ADD must fail");
    assert_eq!(failure.code(), 11, "{}", failure.stdout);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "budget not honoured: {:?}",
        start.elapsed()
    );
    assert!(api.requests().len() >= 2, "no retry: {:?}", api.requests());
}

#[test]
fn missing_pod_is_a_kubernetes_error_without_retries() {
    let api = FakeApiServer::start();
    let mut pod = injected_pod();
    pod["metadata"]["name"] = json!(unique("gone-"));
    let failure = add_for(&api, &pod, 5.0).expect_err("ADD must fail");
    assert_eq!(failure.code(), 100, "{}", failure.stdout);
    assert_eq!(api.requests().len(), 1);
}

#[test]
fn captured_pod_with_a_missing_namespace_fails_with_code_102() {
    let api = FakeApiServer::start();
    let mut pod = injected_pod();
    pod["metadata"]["name"] = json!(unique("web-"));
    api.add_pod(pod.clone());
    let failure = add_for(&api, &pod, 5.0).expect_err("ADD must fail");
    assert_eq!(failure.code(), 102, "{}", failure.stdout);
    assert!(
        failure.stdout.contains("/var/run/netns/does-not-exist"),
        "{}",
        failure.stdout
    );
}
