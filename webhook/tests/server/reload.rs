//! Configuration directory reload: a good change takes effect without a restart, a bad one is
//! refused with a log line naming the problem, and the old configuration keeps serving.

use std::path::Path;
use std::time::Duration;

use crate::common::pod_review;
use crate::process::{Client, Injector};

const EMBEDDED_CONFIG: &str = outrigger_inject::DEFAULT_CONFIG_YAML;

/// Replace `config.yaml` atomically (write + rename), as a ConfigMap update does.
fn write_config(dir: &Path, text: &str) {
    let tmp = dir.join(".config.yaml.tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, dir.join("config.yaml")).expect("rename config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_config_applies_and_bad_config_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    write_config(&config, EMBEDDED_CONFIG);
    let injector = Injector::start(&[
        "--self-signed-dir",
        certs.to_str().expect("utf-8 path"),
        "--config-dir",
        config.to_str().expect("utf-8 path"),
    ]);
    let client = Client::trusting(&certs.join("ca.crt"));
    let mut conn = client.connect(injector.addr).await.expect("connect");
    let review = pod_review();
    let (_, v) = conn.post("/inject", &review).await.expect("response");
    assert_eq!(
        v["response"]["patchType"], "JSONPatch",
        "policy enabled injects: {v}"
    );

    // Good change: policy disabled, so the fixture pod (no opt-in) is left alone.
    assert!(EMBEDDED_CONFIG.contains("\npolicy: enabled\n"));
    write_config(
        &config,
        &EMBEDDED_CONFIG.replace("\npolicy: enabled\n", "\npolicy: disabled\n"),
    );
    injector.wait_log("configuration reloaded", Duration::from_secs(10));
    let (_, v) = conn.post("/inject", &review).await.expect("response");
    assert_eq!(v["response"]["allowed"], true);
    assert!(
        v["response"]["patch"].is_null(),
        "policy disabled skips: {v}"
    );

    // Bad change: refused, named in the log, the disabled policy keeps serving.
    write_config(&config, "policy: sometimes\n");
    let line = injector.wait_log("new configuration refused", Duration::from_secs(10));
    assert!(
        line.contains("sometimes") || line.contains("policy"),
        "{line}"
    );
    let (_, v) = conn.post("/inject", &review).await.expect("response");
    assert!(
        v["response"]["patch"].is_null(),
        "old config still serving: {v}"
    );
    assert_eq!(v["response"]["allowed"], true);

    let metrics = injector.metrics().await;
    for line in [
        "outrigger_injector_config_reload_total{result=\"failure\"}",
        "outrigger_injector_config_reload_total{result=\"success\"}",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[test]
fn bad_initial_config_stops_startup_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.yaml"), "policy: sometimes\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_outrigger-injector"))
        .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .arg("--self-signed-dir")
        .arg(dir.path().join("certs"))
        .arg("--config-dir")
        .arg(dir.path())
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot load the injector configuration"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sometimes") || stderr.contains("policy"),
        "{stderr}"
    );
}
