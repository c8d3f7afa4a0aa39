//! ADD latency of the outrigger-cni binary against a local HTTPS API server; prints p50/p90/p99.

// The fake API server of the plugin's integration tests, shared by path; the benchmark uses only
// part of its interface.
#[path = "../../../cni-plugin/tests/integration/support/api.rs"]
#[allow(dead_code)]
mod api;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Measures outrigger-cni ADD latency")]
struct Args {
    /// ADD calls per scenario.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// The plugin binary; default: outrigger-cni next to this program.
    #[arg(long)]
    plugin: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        nix::unistd::geteuid().is_root(),
        "cni-add-bench creates network namespaces: run it as root"
    );
    let plugin = match args.plugin {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("program has a directory")?
            .join("outrigger-cni"),
    };
    ensure!(
        plugin.is_file(),
        "{} is missing: run `cargo build --release -p outrigger-cni` (or `cargo build --workspace --bins`) first",
        plugin.display()
    );

    let server = api::FakeApiServer::start();
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig);
    let mut pod: Value = serde_json::from_str(include_str!(
        "../../../cni-plugin/tests/fixtures/injected-pod.json"
    ))?;
    server.add_pod(pod.clone());
    pod["metadata"]["name"] = json!("not-injected");
    pod["metadata"]["annotations"]
        .as_object_mut()
        .context("fixture has annotations")?
        .remove("sidecar.istio.io/status");
    server.add_pod(pod);

    println!(
        "outrigger-cni ADD latency, {} runs per scenario, plugin {}",
        args.iterations,
        plugin.display()
    );
    for (scenario, cni_args, expect_rules) in [
        (
            "capture",
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-7d9c5b6f4-x2kqp",
            true,
        ),
        (
            "skip-api",
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=not-injected",
            false,
        ),
        ("skip-local", "IgnoreUnknown=1", false),
    ] {
        let mut samples = Vec::with_capacity(args.iterations);
        for i in 0..args.iterations {
            let ns = NetNs::new(&format!("orcni-bench-{}-{i}", std::process::id()))?;
            samples.push(add(&plugin, &kubeconfig, &ns.path(), cni_args)?);
            if i == 0 {
                let rules = ns.rules()?;
                ensure!(
                    rules.contains("ISTIO_OUTPUT") == expect_rules,
                    "{scenario}: unexpected rules state:\n{rules}"
                );
            }
        }
        report(scenario, &mut samples);
    }
    Ok(())
}

fn add(plugin: &Path, kubeconfig: &Path, netns: &Path, cni_args: &str) -> anyhow::Result<Duration> {
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": netns}],
                      "ips": [{"address": "10.44.0.7/24", "gateway": "10.44.0.1", "interface": 0}]});
    let conf = json!({"cniVersion": "1.0.0", "name": "bench", "type": "outrigger-cni", "kubeconfig": kubeconfig,
                      "log_level": "warn", "prevResult": prev});
    let start = Instant::now();
    let mut child = Command::new(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "bench")
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", cni_args)
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin is piped")?
        .write_all(conf.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!(
            "ADD failed: {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let result: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(result == prev, "result was not passed through: {result}");
    Ok(elapsed)
}

fn report(scenario: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{scenario:>10}: p50 {:7.2} ms  p90 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  min {:7.2} ms",
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(at(1.0)),
        ms(at(0.0))
    );
}

/// A network namespace deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new(name: &str) -> anyhow::Result<Self> {
        let status = Command::new("ip").args(["netns", "add", name]).status()?;
        ensure!(status.success(), "ip netns add {name} failed");
        Ok(Self(name.to_string()))
    }

    fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.0)
    }

    fn rules(&self) -> anyhow::Result<String> {
        let mut text = String::new();
        for tool in ["iptables-nft-save", "iptables-legacy-save"] {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.0, tool])
                .output()?;
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        Ok(text)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
