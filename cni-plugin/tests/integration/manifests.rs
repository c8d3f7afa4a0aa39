//! The CNI manifests against the real Kubernetes schemas (PyPI kubernetes-validate, strict).

use std::path::{Path, PathBuf};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/cni")
}

/// The resource files the kustomization lists.
fn resources() -> Vec<PathBuf> {
    let dir = manifests_dir();
    let text = std::fs::read_to_string(dir.join("kustomization.yaml"))
        .expect("kustomization.yaml readable");
    let kustomization: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).expect("kustomization.yaml is YAML");
    kustomization["resources"]
        .as_sequence()
        .expect("kustomization lists resources")
        .iter()
        .map(|r| dir.join(r.as_str().expect("resource is a file name")))
        .collect()
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI): sudo ./scripts/test.sh installs and runs it"]
fn manifests_validate_against_kubernetes_schemas() {
    let files = resources();
    assert_eq!(files.len(), 5, "{files:?}");
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let report = outrigger_testkit::kubernetes_validate::validate_files("cni", &paths);
    assert_eq!(
        report.matches(" passed for resource ").count(),
        5,
        "{report}"
    );
}

#[test]
fn daemonset_runs_everywhere_critical_and_without_capabilities() {
    let text = std::fs::read_to_string(manifests_dir().join("daemonset.yaml"))
        .expect("daemonset.yaml readable");
    let ds: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["priorityClassName"].as_str(),
        Some("system-node-critical")
    );
    let tolerations = pod["tolerations"].as_sequence().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"].as_str() == Some("Exists") && t.get("key").is_none())
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0].as_str(),
        Some("ALL")
    );
    assert!(
        container["securityContext"]["capabilities"]
            .get("add")
            .is_none()
    );
    let mounts: Vec<&str> = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert!(
        mounts.contains(&"/opt/cni/bin") && mounts.contains(&"/etc/cni/net.d"),
        "{mounts:?}"
    );
    // The installer's own pods are the ones the plugin passes through.
    assert!(
        format!("{}-", ds["metadata"]["name"].as_str().expect("name"))
            .starts_with(outrigger_cni::names::DEFAULT_INSTALLER_POD_PREFIX)
    );
    assert_eq!(
        ds["metadata"]["namespace"].as_str(),
        Some(outrigger_cni::names::DEFAULT_INSTALLER_NAMESPACE)
    );
}

/// On the host network a wildcard address would open the port on every interface of every
/// node: the installer listens on the node's loopback, and the kubelet probes it there.
#[test]
fn daemonset_listens_on_the_nodes_loopback_only() {
    let text = std::fs::read_to_string(manifests_dir().join("daemonset.yaml"))
        .expect("daemonset.yaml readable");
    let ds: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    let listen = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("LISTEN"))
        .and_then(|e| e["value"].as_str())
        .expect("LISTEN is set");
    let addr: std::net::SocketAddr = listen.parse().expect("LISTEN is ip:port");
    assert!(addr.ip().is_loopback(), "LISTEN={listen}");
    let probe = &container["readinessProbe"]["httpGet"];
    assert_eq!(probe["host"].as_str(), Some("127.0.0.1"));
    assert_eq!(probe["port"].as_u64(), Some(u64::from(addr.port())));
}
