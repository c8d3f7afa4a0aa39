//! CLI tests: the real `kube-inject` binary on the sample manifests in `manifests/samples/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use outrigger_inject::manifest::split_documents;
use serde_json::Value;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/samples")
}

fn sample(name: &str) -> String {
    samples()
        .join(name)
        .to_str()
        .expect("sample path is UTF-8")
        .to_owned()
}

fn kube_inject(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-inject"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kube-inject starts");
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("kube-inject finishes");
    writer.join().expect("stdin writer").expect("stdin written");
    out
}

fn ok(args: &[&str]) -> (String, String) {
    let out = kube_inject(args, None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "kube-inject {args:?} failed: {stderr}"
    );
    (String::from_utf8(out.stdout).expect("UTF-8 output"), stderr)
}

fn docs(text: &str) -> Vec<Value> {
    split_documents(text)
        .iter()
        .map(|d| serde_yaml_ng::from_str(d).expect("each output document is YAML"))
        .collect()
}

fn pod_spec(doc: &Value) -> &Value {
    match doc["kind"].as_str() {
        Some("Pod") => &doc["spec"],
        Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &doc["spec"]["template"]["spec"],
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn shop_is_injected_and_other_documents_are_byte_identical() {
    let input = std::fs::read_to_string(sample("shop.yaml")).expect("shop sample");
    let (out, stderr) = ok(&["-f", &sample("shop.yaml")]);
    let before = split_documents(&input);
    let after = split_documents(&out);
    assert_eq!(before.len(), after.len(), "document count and order kept");
    for (b, a) in before.iter().zip(&after) {
        let doc: Value = serde_yaml_ng::from_str(b).expect("input YAML");
        let kind = doc["kind"].as_str().unwrap_or_default();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        match (kind, name) {
            ("Namespace" | "ConfigMap" | "Service", _) | ("Job", "migrate") => {
                assert_eq!(b, a, "{kind}/{name} must pass through byte for byte")
            }
            _ => {
                let injected: Value = serde_yaml_ng::from_str(a).expect("output YAML");
                let spec = pod_spec(&injected);
                let all: Vec<&str> = names(&spec["containers"]);
                assert_eq!(
                    names(&spec["initContainers"])[0],
                    "istio-init",
                    "{kind}/{name}"
                );
                assert!(all.contains(&"istio-proxy"), "{kind}/{name}: {all:?}");
                assert_eq!(
                    injected["metadata"], doc["metadata"],
                    "object metadata untouched"
                );
            }
        }
    }
    assert_eq!(
        stderr.trim(),
        "Job shop/migrate: not injected: pod label sidecar.istio.io/inject=\"false\""
    );
}

#[test]
fn workload_kinds_lists_and_skips() {
    let (out, stderr) = ok(&["-f", &sample("workloads.yaml")]);
    let d = docs(&out);
    assert_eq!(d.len(), 4);
    assert!(
        names(&pod_spec(&d[0])["containers"]).contains(&"istio-proxy"),
        "Pod"
    );
    let items = d[1]["items"].as_array().expect("List items");
    for item in &items[..2] {
        assert!(
            names(&pod_spec(item)["containers"]).contains(&"istio-proxy"),
            "{item}"
        );
    }
    assert_eq!(items[2]["kind"], "Service");
    assert!(
        items[2]
            .get("spec")
            .and_then(|s| s.get("template"))
            .is_none()
    );
    assert!(
        names(&pod_spec(&d[2])["containers"]).contains(&"istio-proxy"),
        "DaemonSet"
    );
    let original = std::fs::read_to_string(sample("workloads.yaml")).expect("sample");
    assert_eq!(
        split_documents(&out)[3],
        split_documents(&original)[3],
        "host-network DaemonSet unchanged"
    );
    assert!(
        stderr.contains("DaemonSet tools/host-probe: not injected: pod uses hostNetwork"),
        "{stderr}"
    );
    // The owner of a pod template is the workload: its name becomes the canonical name fallback.
    let labels = &d[2]["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["service.istio.io/canonical-name"], "node-agent");
}

#[test]
fn cronjob_statefulset_and_annotations_follow_through() {
    let (out, _) = ok(&["-f", &sample("shop.yaml")]);
    let d = docs(&out);
    let find = |kind: &str, name: &str| {
        d.iter()
            .find(|x| x["kind"] == kind && x["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} in output"))
    };
    let cron = pod_spec(find("CronJob", "nightly-report"));
    assert_eq!(names(&cron["containers"]), ["report", "istio-proxy"]);
    let cart = find("Deployment", "cart");
    assert_eq!(
        names(&pod_spec(cart)["containers"]),
        ["istio-proxy", "cart"],
        "hold puts the proxy first"
    );
    let cart_args = &pod_spec(cart)["initContainers"][0]["args"];
    assert!(
        cart_args.to_string().contains(r#""-o","6379""#),
        "{cart_args}"
    );
    let catalog = find("Deployment", "catalog");
    let proxy = &pod_spec(catalog)["containers"][1];
    assert_eq!(proxy["resources"]["requests"]["cpu"], "50m");
    let anns = &catalog["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(anns["prometheus.io/port"], "15020");
    let redis = pod_spec(find("StatefulSet", "redis"));
    assert_eq!(
        redis["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/app-health/redis/readyz"
    );
}

#[test]
fn output_is_stable_when_injected_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first.yaml");
    let first_s = first.to_str().expect("UTF-8 path");
    let (stdout, _) = ok(&["-f", &sample("shop.yaml"), "-o", first_s]);
    assert!(stdout.is_empty(), "-o writes the file, not stdout");
    let written = std::fs::read_to_string(&first).expect("output file");
    let (again, _) = ok(&["-f", first_s]);
    assert_eq!(
        again, written,
        "injecting injected manifests changes nothing"
    );
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI): sudo ./scripts/test.sh installs and runs it"]
fn output_is_valid_kubernetes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first.yaml");
    let first_s = first.to_str().expect("UTF-8 path");
    ok(&["-f", &sample("shop.yaml"), "-o", first_s]);
    outrigger_testkit::kubernetes_validate::validate_files("kube-inject output", &[&first]);
}

#[test]
fn stdin_and_several_files() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: x\n";
    let out = kube_inject(&["-f", "-", "-f", &sample("workloads.yaml")], Some(pod));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = docs(&String::from_utf8(out.stdout).expect("UTF-8"));
    assert_eq!(d.len(), 5);
    assert_eq!(d[0]["metadata"]["name"], "p");
    assert_eq!(names(&d[0]["spec"]["containers"]), ["c", "istio-proxy"]);
}

#[test]
fn invalid_annotations_stop_with_the_whole_message() {
    let out = kube_inject(&["-f", &sample("bad-annotations.yaml")], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing is written on error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "kube-inject: Deployment shop/broken: invalid value '10.0.0.0/33' for annotation \
         'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/33' is not a CIDR (e.g. 10.0.0.0/8); \
         invalid value 'MAGIC' for annotation 'sidecar.istio.io/interceptionMode': expected REDIRECT, TPROXY or NONE; \
         invalid value 'lots' for annotation 'sidecar.istio.io/proxyMemory': not a Kubernetes resource quantity \
         (e.g. 100m, 128Mi, 1.5)"
    );
}

#[test]
fn config_dir_values_mesh_revision_and_native_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.yaml"), "policy: disabled\n").expect("write config");
    let cfg = dir.path().to_str().expect("UTF-8 path");
    let (out, stderr) = ok(&["-f", &sample("workloads.yaml"), "--config-dir", cfg]);
    let original = std::fs::read_to_string(sample("workloads.yaml")).expect("sample");
    assert_eq!(out, original, "policy disabled: nothing injected");
    assert!(stderr.contains("injection policy is disabled"), "{stderr}");

    let values = dir.path().join("cni.yaml");
    std::fs::write(&values, "pilot:\n  cni:\n    enabled: true\n").expect("write values");
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, "defaultConfig:\n  interceptionMode: TPROXY\n").expect("write mesh");
    let (out, _) = ok(&[
        "-f",
        &sample("workloads.yaml"),
        "--values",
        values.to_str().expect("UTF-8"),
        "--mesh",
        mesh.to_str().expect("UTF-8"),
        "--revision",
        "canary",
        "--native-sidecars",
    ]);
    let pod = &docs(&out)[0];
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        ["istio-validation", "istio-proxy"]
    );
    assert_eq!(names(&pod["spec"]["containers"]), ["shell"]);
    assert_eq!(pod["metadata"]["annotations"]["istio.io/rev"], "canary");
    assert_eq!(
        pod["metadata"]["annotations"]["sidecar.istio.io/interceptionMode"],
        "TPROXY"
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("values.yaml"),
        "global:\n  proxy:\n    uid: root\n",
    )
    .expect("write values");
    let cfg = dir.path().to_str().expect("UTF-8 path");
    let out = kube_inject(
        &["-f", &sample("workloads.yaml"), "--config-dir", cfg],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("values.yaml: global.proxy.uid: invalid type: string \"root\""),
        "{stderr}"
    );
    let missing = kube_inject(&["-f", "/nonexistent/x.yaml"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("reading /nonexistent/x.yaml"));
    let broken = kube_inject(
        &["-f", "-"],
        Some("kind: ConfigMap\n---\nkind: [unclosed\n"),
    );
    assert_eq!(broken.status.code(), Some(1));
    assert!(broken.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.starts_with("kube-inject: document 2: not valid YAML: "),
        "{stderr}"
    );
    let none = kube_inject(&[], None);
    assert!(String::from_utf8_lossy(&none.stderr).contains("no input"));
}

#[test]
fn check_explains_every_workload() {
    // A workload the injector would refuse makes `check` exit non-zero, after the full report.
    let out = kube_inject(
        &[
            "check",
            "-f",
            &sample("shop.yaml"),
            "-f",
            &sample("bad-annotations.yaml"),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check must fail on ERROR rows");
    assert!(
        stderr.contains("1 workload(s) would be refused"),
        "{stderr}"
    );
    let table = String::from_utf8(out.stdout).expect("UTF-8 output");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("WORKLOAD") && lines[0].contains("REASON"),
        "{table}"
    );
    assert_eq!(lines.len(), 1 + 7, "{table}");
    let row = |w: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(w))
            .unwrap_or_else(|| panic!("{w} row in {table}"))
    };
    assert!(
        row("Job/migrate ").contains("SKIP") && row("Job/migrate ").contains("inject=\"false\"")
    );
    assert!(
        row("Deployment/frontend ").contains("INJECT")
            && row("Deployment/frontend ").contains("sidecar")
    );
    assert!(
        row("Deployment/broken ").contains("ERROR") && row("Deployment/broken ").contains("MAGIC")
    );

    let (json, _) = ok(&["check", "-f", &sample("workloads.yaml"), "--output", "json"]);
    let reports: Value = serde_json::from_str(&json).expect("JSON report");
    let verdicts: Vec<(&str, &str)> = reports
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or(""),
                r["verdict"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("debug", "inject"),
            ("legacy", "inject"),
            ("echo", "inject"),
            ("node-agent", "inject"),
            ("host-probe", "skip")
        ]
    );
    assert_eq!(reports[0]["templates"], serde_json::json!(["sidecar"]));
    assert_eq!(reports[4]["reason"], "pod uses hostNetwork");
}

/// The same logging flags as every binary: `--log-format text|json`, `RUST_LOG` with a bad filter
/// reported (default `warn`), and logs on stderr only: stdout stays the YAML.
#[test]
fn logs_go_to_stderr_in_the_chosen_format() {
    let (plain, _) = ok(&["-f", &sample("shop.yaml")]);
    let out = Command::new(env!("CARGO_BIN_EXE_kube-inject"))
        .args(["-f", &sample("shop.yaml"), "--log-format", "json"])
        .env("RUST_LOG", "[=bad")
        .output()
        .expect("kube-inject runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), plain);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning: Value = serde_json::from_str(
        stderr
            .lines()
            .find(|l| l.starts_with('{'))
            .expect("a JSON log line on stderr"),
    )
    .expect("JSON log line");
    assert_eq!(
        warning["fields"]["message"],
        "ignoring an invalid log filter"
    );
    assert_eq!(warning["fields"]["default"], "warn");
    let bad = kube_inject(&["-f", &sample("shop.yaml"), "--log-format", "yaml"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use text or json"));
}

#[test]
fn files_with_a_byte_order_mark_are_read_and_duplicate_keys_refused() {
    // Issue 14 #12: kubectl accepts a UTF-8 BOM before a file and refuses a key written twice.
    let dir = tempfile::tempdir().expect("tempdir");
    let shop = std::fs::read_to_string(sample("shop.yaml")).expect("sample");
    let bom = dir.path().join("bom.yaml");
    std::fs::write(&bom, format!("\u{feff}---\n{shop}")).expect("write");
    let bom = bom.to_str().expect("UTF-8 path");
    let (alone, _) = ok(&["-f", bom]);
    let (joined, _) = ok(&["-f", &sample("workloads.yaml"), "-f", bom]);
    assert!(!alone.starts_with('\u{feff}'));
    assert!(!joined.contains('\u{feff}'));
    assert_eq!(docs(&alone).len(), docs(&shop).len());
    let dup = kube_inject(
        &["-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: a\n    image: x\n  containers: []\n",
        ),
    );
    assert_eq!(dup.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&dup.stderr).trim_end(),
        "kube-inject: document 1: not valid YAML: line 9: in spec: duplicate key \"containers\" (kubectl refuses it); first set at line 6"
    );
}
