//! Network-namespace fixtures for the root tests: uniquely named namespaces and veth pairs that
//! are deleted even when a test fails, and helpers to run commands and code inside them.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails the test loudly when not root: these tests must run (CI runs them as root).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the network-namespace tests need root (CI runs them as root); run them with sudo: \
         `sudo ./scripts/test.sh` (or `sudo -E cargo test -p outrigger-init --test netns -- --include-ignored`)"
    );
}

/// A unique number for this process: names and subnets derive from it.
pub fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command, returning its output (never panics on a failing exit).
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The absolute path of `ip`.
fn ip_binary() -> std::path::PathBuf {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join("ip"))
        .find(|p| p.is_file())
        .expect("iproute2's ip is installed")
}

/// A network namespace that is deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `or-<pid>-<n>-<label>` with loopback up.
    pub fn new(label: &str) -> Self {
        require_root();
        let name = format!("or-{}-{}-{label}", std::process::id(), next_id());
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `program args` inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut argv = vec!["netns", "exec", &self.name, program];
        argv.extend_from_slice(args);
        run("ip", &argv)
    }

    /// Runs `program args` inside the namespace; it must succeed. Returns stdout.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "in {}: {program} {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the outrigger-iptables binary inside the namespace with a clean environment.
    pub fn outrigger(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        // `ip` is resolved with this process's PATH: `env` may replace the child's PATH.
        let mut cmd = Command::new(ip_binary());
        cmd.args([
            "netns",
            "exec",
            &self.name,
            env!("CARGO_BIN_EXE_outrigger-iptables"),
        ])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied());
        cmd.output().expect("ip netns exec outrigger-iptables runs")
    }

    /// iptables-save (or another save tool) output without the timestamped comment lines.
    pub fn save(&self, program: &str) -> String {
        self.exec_ok(program, &[])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it opens live here;
    /// processes it spawns start here).
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the test namespace");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = run("ip", &["netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "warning: could not delete namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Two namespaces joined by a veth pair: `client` has .1, `pod` has .2 in 10.<x>.<y>.0/24.
pub struct Pair {
    pub client: Netns,
    pub pod: Netns,
    pub client_ip: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
}

impl Pair {
    pub fn new() -> Self {
        let client = Netns::new("client");
        let pod = Netns::new("pod");
        let id = next_id();
        let subnet = (std::process::id() % 200 + 20, id % 250 + 1);
        let client_ip = Ipv4Addr::new(10, subnet.0 as u8, subnet.1 as u8, 1);
        let pod_ip = Ipv4Addr::new(10, subnet.0 as u8, subnet.1 as u8, 2);
        let (a, b) = (
            format!("orc{}x{id}", std::process::id() % 100000),
            format!("orp{}x{id}", std::process::id() % 100000),
        );
        // Created inside the client namespace so nothing is left in the host namespace.
        client.exec_ok(
            "ip",
            &[
                "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &pod.name,
            ],
        );
        client.exec_ok(
            "ip",
            &["addr", "add", &format!("{client_ip}/24"), "dev", &a],
        );
        client.exec_ok("ip", &["link", "set", &a, "up"]);
        pod.exec_ok("ip", &["addr", "add", &format!("{pod_ip}/24"), "dev", &b]);
        pod.exec_ok("ip", &["link", "set", &b, "up"]);
        Pair {
            client,
            pod,
            client_ip,
            pod_ip,
        }
    }
}
