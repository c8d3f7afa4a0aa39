//! The test topology that stands in for a cluster node: a "node" namespace with a bridge, and
//! one namespace per pod attached to it by a veth pair. Each pod gets its capture rules from the
//! real `outrigger-iptables`, its proxy as UID/GID 1337, and apps as an ordinary UID.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::bins::{stage, workspace_bin};
use crate::netns::{Netns, require_root, unique_prefix};
use crate::process::Guarded;

pub const PROXY_UID: u32 = 1337;
pub const APP_UID: u32 = 1000;
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);
/// Exactly what the injector's default template passes to the init container.
pub const INIT_ARGS: &[&str] = outrigger_init::SIDECAR_ARGS;
pub const POD_NAMESPACE: &str = "e2e";

/// Binaries staged where every UID can run them.
#[derive(Debug)]
pub struct Bins {
    pub proxy: PathBuf,
    pub iptables: PathBuf,
    pub app: PathBuf,
}

/// One pod: its namespace and IP.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub ip: Ipv4Addr,
    pub ns: Netns,
}

impl Pod {
    pub fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.ip)
    }
}

/// The node, its pods and a scratch directory; everything is removed on drop.
#[derive(Debug)]
pub struct Topology {
    pub pods: Vec<Pod>,
    pub node: Netns,
    pub bins: Bins,
    pub dir: TempDir,
}

/// A running proxy and where its logs go.
#[derive(Debug)]
pub struct ProxyProcess {
    pub process: Guarded,
    pub log: PathBuf,
}

impl ProxyProcess {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Topology {
    /// Builds the node and one pod per name (IPs 10.66.0.10, .11, ...). `app` is the test
    /// application binary (`env!("CARGO_BIN_EXE_e2e-app")` in the tests).
    pub fn new(pod_names: &[&str], app: &Path) -> Result<Topology> {
        require_root();
        let dir = tempfile::Builder::new().prefix("outrigger-e2e").tempdir()?;
        let bins = Bins {
            proxy: stage(&workspace_bin("outrigger-proxy"), dir.path())?,
            iptables: workspace_bin("outrigger-iptables"),
            app: stage(app, dir.path())?,
        };
        let prefix = unique_prefix("ore");
        let node = Netns::create(&format!("{prefix}node"))?;
        node.ip(&["link", "add", "br0", "type", "bridge"])?;
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "br0"])?;
        node.ip(&["link", "set", "br0", "up"])?;
        let mut topology = Topology {
            pods: Vec::new(),
            node,
            bins,
            dir,
        };
        for (i, name) in pod_names.iter().enumerate() {
            let index = u8::try_from(i).context("at most 200 pods")?;
            let ip = Ipv4Addr::new(10, 66, 0, 10 + index);
            let ns = Netns::create(&format!("{prefix}{name}"))?;
            let host_side = format!("veth{i}");
            topology.node.ip(&[
                "link",
                "add",
                &host_side,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ])?;
            topology
                .node
                .ip(&["link", "set", &host_side, "master", "br0"])?;
            topology.node.ip(&["link", "set", &host_side, "up"])?;
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            ns.ip(&["route", "add", "default", "via", &NODE_IP.to_string()])?;
            topology.pods.push(Pod {
                name: (*name).to_owned(),
                ip,
                ns,
            });
        }
        Ok(topology)
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .expect("pod declared in Topology::new")
    }

    /// Installs the capture rules in `pod` with the real `outrigger-iptables`, as the init
    /// container would (as root, inside the pod's namespace).
    pub fn capture(&self, pod: &str, args: &[&str]) -> Result<()> {
        let pod = self.pod(pod);
        let iptables = self.bins.iptables.to_str().context("UTF-8 path")?;
        let out = pod.ns.exec(iptables, args)?;
        if !out.status.success() {
            bail!(
                "outrigger-iptables failed in pod {}: {}",
                pod.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts `outrigger-proxy run` as UID/GID 1337 in `pod` with the env the injector sets,
    /// plus `env`, and waits until it reports ready on 15021.
    pub fn start_proxy(
        &self,
        pod: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<ProxyProcess> {
        let pod = self.pod(pod);
        let log = self.dir.path().join(format!("proxy-{}.log", pod.name));
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(&self.bins.proxy);
        command
            .arg("run")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("RUST_LOG", "info")
            .env("POD_NAME", format!("{}-0", pod.name))
            .env("POD_NAMESPACE", POD_NAMESPACE)
            .env("INSTANCE_IP", pod.ip.to_string())
            .env("ISTIO_META_WORKLOAD_NAME", &pod.name)
            .envs(env.iter().copied())
            .uid(PROXY_UID)
            .gid(PROXY_UID)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let process = Guarded::new(pod.ns.spawn(command)?, format!("proxy in {}", pod.name));
        let mut proxy = ProxyProcess { process, log };
        let health = pod.addr(15021);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.from_node(&health, "GET", "/healthz/ready") {
                return Ok(proxy);
            }
            if proxy.process.has_exited() || Instant::now() > deadline {
                bail!(
                    "proxy in {} never became ready; log:\n{}",
                    pod.name,
                    proxy.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn app_command(&self, args: &[&str]) -> Command {
        self.app_command_as(APP_UID, args)
    }

    fn app_command_as(&self, uid: u32, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bins.app);
        command
            .args(args)
            .env_clear()
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts a long-running app server in `pod` and waits for its `listening` line.
    pub fn start_server(&self, pod: &str, args: &[&str]) -> Result<Guarded> {
        let pod = self.pod(pod);
        let mut process = Guarded::new(
            pod.ns.spawn(self.app_command(args))?,
            format!("app {args:?} in {}", pod.name),
        );
        let stdout = process.child.stdout.take().context("piped stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        if !first.starts_with("listening") {
            bail!("{} did not start: {first:?}", process.what);
        }
        Ok(process)
    }

    /// Runs an app client in `pod` to completion.
    pub fn run_app(&self, pod: &str, args: &[&str]) -> Result<Output> {
        self.run_app_as(pod, APP_UID, args)
    }

    /// Runs an app client in `pod` as `uid` (e.g. [`PROXY_UID`] for an uncaptured client).
    pub fn run_app_as(&self, pod: &str, uid: u32, args: &[&str]) -> Result<Output> {
        let pod = self.pod(pod);
        let child = pod.ns.spawn(self.app_command_as(uid, args))?;
        child.wait_with_output().context("wait for the app client")
    }

    /// Starts an interactive app client (`hold`) with piped stdin and stdout.
    pub fn start_interactive(&self, pod: &str, args: &[&str]) -> Result<Guarded> {
        let pod = self.pod(pod);
        let mut command = self.app_command(args);
        command.stdin(Stdio::piped());
        Ok(Guarded::new(
            pod.ns.spawn(command)?,
            format!("app {args:?} in {}", pod.name),
        ))
    }

    /// An HTTP call from the node (like the kubelet or Prometheus): never captured.
    pub fn from_node(&self, addr: &str, method: &str, path: &str) -> Result<(u16, String)> {
        self.node.run(|| crate::http::request(addr, method, path))?
    }

    /// An HTTP call from inside `pod` (like the app container next to the proxy).
    pub fn from_pod(
        &self,
        pod: &str,
        addr: &str,
        method: &str,
        path: &str,
    ) -> Result<(u16, String)> {
        self.pod(pod)
            .ns
            .run(|| crate::http::request(addr, method, path))?
    }

    /// The proxy metrics of `pod` (its 15090), scraped from the node.
    pub fn metrics(&self, pod: &str) -> Result<String> {
        let (status, body) =
            self.from_node(&self.pod(pod).addr(15090), "GET", "/stats/prometheus")?;
        if status != 200 {
            bail!("metrics of {pod} answered {status}");
        }
        Ok(body)
    }
}

/// Sum of the samples of `metric` whose line contains all of `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
