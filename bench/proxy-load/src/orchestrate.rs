//! Builds the topology, runs each role on each path in one run and prints the figures.
//!
//! Paths from pod a to pod b (inbound port 7001 is excluded from capture, and UID 1337 is exempt
//! from outbound capture, so all four run on the same two pods at the same time):
//! direct (no proxy), outbound hop (proxy a), inbound hop (proxy b), both hops.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use outrigger_e2e::topology::{APP_UID, INIT_ARGS, PROXY_UID, Topology};

const BULK_BYTES: usize = 1 << 30;
const RR_ITERS: &str = "20000";
const RR_SIZE: &str = "64";
const CONNECT_SECS: &str = "3";
const CONNECT_THREADS: &str = "2";
const HELD: usize = 1000;
/// The injector's default init arguments, with port 7001 (the direct path) also excluded from
/// inbound capture.
fn init_args() -> Vec<String> {
    let mut args: Vec<String> = INIT_ARGS.iter().map(|a| a.to_string()).collect();
    let d = args
        .iter()
        .position(|a| a == "-d")
        .expect("the sidecar arguments exclude inbound ports with -d");
    args[d + 1].push_str(",7001");
    args
}

struct Path {
    name: &'static str,
    uid: u32,
    port: u16,
}

const PATHS: [Path; 4] = [
    Path {
        name: "direct",
        uid: PROXY_UID,
        port: 7001,
    },
    Path {
        name: "outbound hop (proxy a)",
        uid: APP_UID,
        port: 7001,
    },
    Path {
        name: "inbound hop (proxy b)",
        uid: PROXY_UID,
        port: 7000,
    },
    Path {
        name: "both hops",
        uid: APP_UID,
        port: 7000,
    },
];

pub fn run() -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "proxy-load: WARNING: debug build; run `cargo build --release --workspace --bins` and `target/release/proxy-load`"
        );
    }
    let me: PathBuf = std::env::current_exe()?;
    let topology = Topology::new(&["a", "b"], &me)?;
    let init_args = init_args();
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    for pod in ["a", "b"] {
        topology.capture(pod, &init_args)?;
        for (key, value) in [
            ("net.ipv4.tcp_tw_reuse", "1"),
            ("net.ipv4.ip_local_port_range", "1024 65000"),
        ] {
            let out = topology
                .pod(pod)
                .ns
                .exec("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
            if !out.status.success() {
                bail!(
                    "sysctl {key} in {pod}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    let b = topology.pod("b");
    let _server = topology.start_server("b", &["serve", &b.addr(7000), &b.addr(7001)])?;
    println!(
        "outrigger-proxy benchmark: pods a -> b over a veth/bridge node, proxies with concurrency 2, {} CPUs, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );

    // The direct path needs no proxy; measure it while both proxies run (same conditions).
    let mut summary = Vec::new();
    for mode in ["copy", "splice"] {
        let quiet = [("RUST_LOG", "warn")];
        let relay = ["--relay", mode];
        let proxy_a = topology.start_proxy("a", &quiet, &relay)?;
        let proxy_b = topology.start_proxy("b", &quiet, &relay)?;
        println!("\n######## relay mode: {mode}");
        let held = memory_at_held(&topology, &proxy_a, &proxy_b)?;
        let figures = measure_paths(&topology)?;
        let end = (
            memory(proxy_a.process.child.id())?,
            memory(proxy_b.process.child.id())?,
        );
        println!(
            "peak rss over this mode's run: proxy a {:.1} MiB, proxy b {:.1} MiB",
            mib(end.0.hwm_kib),
            mib(end.1.hwm_kib)
        );
        summary.push((mode, figures, held));
    }

    println!("\n######## targets (per hop = worse of the outbound-only and inbound-only paths)");
    for (mode, f, held) in &summary {
        println!(
            "{mode:>6}: throughput {:.2}x direct (target >= 0.7), added p50 {:+.1} us (<= 50), added p99 {:+.1} us (<= 200), rss at {HELD} connections {:.1} MiB (<= 20)",
            f.bulk[1].min(f.bulk[2]) / f.bulk[0],
            (f.p50[1] - f.p50[0]).max(f.p50[2] - f.p50[0]),
            (f.p99[1] - f.p99[0]).max(f.p99[2] - f.p99[0]),
            held
        );
    }
    Ok(())
}

/// Figures per path, indexed like [`PATHS`].
struct Figures {
    bulk: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

/// Opens 1,000 connections through both proxies and returns the larger proxy RSS in MiB.
fn memory_at_held(
    topology: &Topology,
    proxy_a: &outrigger_e2e::topology::ProxyProcess,
    proxy_b: &outrigger_e2e::topology::ProxyProcess,
) -> Result<f64> {
    let (pid_a, pid_b) = (proxy_a.process.child.id(), proxy_b.process.child.id());
    let idle = (memory(pid_a)?, memory(pid_b)?);
    let target = topology.pod("b").addr(7000);
    let mut holder = topology.start_interactive("a", &["hold", &target, &HELD.to_string()])?;
    let stdout = holder.child.stdout.take().context("piped stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != format!("held {HELD}") {
        bail!("hold failed: {line:?}");
    }
    let held = (memory(pid_a)?, memory(pid_b)?);
    drop(holder.child.stdin.take());
    holder.wait_timeout(std::time::Duration::from_secs(30))?;
    for (name, idle, held) in [
        ("a (outbound)", idle.0, held.0),
        ("b (inbound)", idle.1, held.1),
    ] {
        println!(
            "proxy {name}: idle rss {:.1} MiB; holding {HELD} connections rss {:.1} MiB (peak {:.1} MiB), {:.1} KiB per connection",
            mib(idle.rss_kib),
            mib(held.rss_kib),
            mib(held.hwm_kib),
            (held.rss_kib as f64 - idle.rss_kib as f64) / HELD as f64
        );
    }
    Ok(mib(held.0.rss_kib.max(held.1.rss_kib)))
}

fn measure_paths(topology: &Topology) -> Result<Figures> {
    let b = topology.pod("b");
    println!(
        "-- bulk throughput ({} GiB, one connection)",
        BULK_BYTES >> 30
    );
    let mut bulk = Vec::new();
    for path in &PATHS {
        let secs = best_of(
            topology,
            path,
            &["bulk", &b.addr(path.port), &BULK_BYTES.to_string()],
            true,
        )?[0];
        let gib_s = BULK_BYTES as f64 / secs / (1u64 << 30) as f64;
        bulk.push(gib_s);
        println!(
            "{:<24} {:>6.2} GiB/s  ({:.2}x direct)",
            path.name,
            gib_s,
            gib_s / bulk[0]
        );
    }
    println!(
        "-- request/response latency ({RR_SIZE} B, {RR_ITERS} round trips, one connection, best of {REPEATS})"
    );
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    for path in &PATHS {
        let v = best_of(
            topology,
            path,
            &["rr", &b.addr(path.port), RR_ITERS, RR_SIZE],
            true,
        )?;
        p50.push(v[0]);
        p99.push(v[1]);
        println!(
            "{:<24} p50 {:>7.1} us  p99 {:>7.1} us  (added p50 {:+.1} us, p99 {:+.1} us)",
            path.name,
            v[0],
            v[1],
            v[0] - p50[0],
            v[1] - p99[0]
        );
    }
    println!(
        "-- connection setup rate (connect + 1-byte echo + close, {CONNECT_THREADS} threads, {CONNECT_SECS} s, best of {REPEATS})"
    );
    let mut conn = Vec::new();
    for path in &PATHS {
        let per_sec = best_of(
            topology,
            path,
            &["connect", &b.addr(path.port), CONNECT_SECS, CONNECT_THREADS],
            false,
        )?[0];
        conn.push(per_sec);
        println!(
            "{:<24} {:>8.0} conn/s  ({:.2}x direct)",
            path.name,
            per_sec,
            per_sec / conn[0]
        );
    }
    Ok(Figures { bulk, p50, p99 })
}

/// Each figure is the best of this many runs: the machine is shared, so the best run is the
/// one least disturbed by other processes.
const REPEATS: usize = 3;

/// Runs a role [`REPEATS`] times and keeps, per figure, the lowest (`lower_is_better`) or the
/// highest value.
fn best_of(
    topology: &Topology,
    path: &Path,
    args: &[&str],
    lower_is_better: bool,
) -> Result<Vec<f64>> {
    let mut best = measure(topology, path, args)?;
    for _ in 1..REPEATS {
        let next = measure(topology, path, args)?;
        for (kept, new) in best.iter_mut().zip(next) {
            if (new < *kept) == lower_is_better {
                *kept = new;
            }
        }
    }
    Ok(best)
}

/// Runs one role on `path` and returns the numbers of its output line.
fn measure(topology: &Topology, path: &Path, args: &[&str]) -> Result<Vec<f64>> {
    let out = topology.run_app_as("a", path.uid, args)?;
    if !out.status.success() {
        bail!(
            "{args:?} on {} failed: {}",
            path.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    if numbers.is_empty() {
        bail!("no figures in {text:?}");
    }
    Ok(numbers)
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
