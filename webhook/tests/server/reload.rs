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

/// A directory laid out as the kubelet lays out a ConfigMap volume: the files are links into
/// `..data`, which links to a hidden timestamped directory.
struct KubeletVolume {
    dir: std::path::PathBuf,
    generation: u32,
}

impl KubeletVolume {
    const FILES: [&str; 2] = ["config.yaml", "values.yaml"];

    fn create(dir: &Path, config: &str) -> KubeletVolume {
        let mut volume = KubeletVolume {
            dir: dir.to_owned(),
            generation: 0,
        };
        let first = volume.write_generation(config);
        std::os::unix::fs::symlink(&first, dir.join("..data")).expect("..data link");
        for file in Self::FILES {
            std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file))
                .expect("file link");
        }
        volume
    }

    fn hidden(&self) -> String {
        format!(
            "..2026_12_02_10_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        )
    }

    fn write_generation(&mut self, config: &str) -> String {
        self.generation += 1;
        let hidden = self.hidden();
        std::fs::create_dir(self.dir.join(&hidden)).expect("timestamped dir");
        std::fs::write(self.dir.join(&hidden).join("config.yaml"), config).expect("write");
        std::fs::write(self.dir.join(&hidden).join("values.yaml"), "global: {}\n").expect("write");
        hidden
    }

    /// The kubelet's AtomicWriter: new timestamped directory, `..data_tmp` link renamed over
    /// `..data`, then (a while later) the old directory removed.
    fn swap(&mut self, config: &str) {
        let old = self.hidden();
        let new = self.write_generation(config);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).expect("..data_tmp link");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        std::thread::sleep(Duration::from_millis(400));
        std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old directory");
    }

    /// Someone edits the file where it really is, inside the hidden directory.
    fn edit_in_place(&self, config: &str) {
        std::fs::write(self.dir.join(self.hidden()).join("config.yaml"), config).expect("edit");
    }
}

fn reload_count(metrics: &str) -> String {
    metrics
        .lines()
        .find(|l| l.starts_with("outrigger_injector_config_reload_total{result=\"success\"}"))
        .unwrap_or("no successful reload")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_swap_reloads_once_and_edits_in_the_hidden_directory_are_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    let mut volume = KubeletVolume::create(&config, EMBEDDED_CONFIG);
    let injector = Injector::start(&[
        "--self-signed-dir",
        certs.to_str().expect("utf-8 path"),
        "--config-dir",
        config.to_str().expect("utf-8 path"),
    ]);

    volume.swap(&format!("{EMBEDDED_CONFIG}\n# second version\n"));
    injector.wait_log("configuration reloaded", Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        injector.count_logs("configuration reloaded"),
        1,
        "one swap, one reload"
    );
    assert_eq!(
        reload_count(&injector.metrics().await),
        "outrigger_injector_config_reload_total{result=\"success\"} 1"
    );

    // An edit inside the hidden directory is a change too.
    volume.edit_in_place(&EMBEDDED_CONFIG.replace("\npolicy: enabled\n", "\npolicy: disabled\n"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while injector.count_logs("configuration reloaded") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the edit inside the hidden directory was missed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Client::trusting(&certs.join("ca.crt"));
    let mut conn = client.connect(injector.addr).await.expect("connect");
    let (_, v) = conn.post("/inject", &pod_review()).await.expect("response");
    assert!(
        v["response"]["patch"].is_null(),
        "policy disabled applies: {v}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        reload_count(&injector.metrics().await),
        "outrigger_injector_config_reload_total{result=\"success\"} 2"
    );
}
