//! `injector-load`: drives keep-alive HTTPS load at the real `outrigger-injector` and, in the same
//! run, at a minimal axum+rustls server that answers with a canned response (the limit), then
//! prints requests/s, latency percentiles and each server's peak RSS.
//!
//! Run: `cargo build --release -p outrigger-webhook --bin outrigger-injector -p injector-load &&
//! target/release/injector-load` (see `--help`).

mod canned;
mod client;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use injector_load::{REVIEW, reviews};

use crate::client::{Check, Pool};

#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Request rate of the fixed-rate latency measurement.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Distinct replicas (uid + token volume name) generated before the runs and cycled through
    /// [default: 4096; 96 with `--pods large`].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    reviews: Option<u64>,
    /// Replicas of one workload (the common case), pods that share nothing (each the first
    /// of its kind: the injector's answers cannot be reused), or distinct pods of 3-5 MiB (the
    /// injector's memory under one tenant's large pods; one closed-loop run, no canned server).
    #[arg(long, value_enum, default_value_t = reviews::Pods::Replicas)]
    pods: reviews::Pods,
    /// Seed of the replica generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The injector binary (default: next to this one).
    #[arg(long)]
    injector: Option<PathBuf>,
    /// One more argument for the injector (repeatable), e.g.
    /// `--injector-arg=--max-inflight-body-bytes=1073741824` to measure without the budget.
    #[arg(long, allow_hyphen_values = true)]
    injector_arg: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Internal: run the canned server (started by the benchmark itself).
    CannedServer {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        response: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("injector-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A child server, killed on drop.
struct Server {
    name: &'static str,
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        report::cpu_time(self.child.id())
    }

    /// Peak resident set size (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        report::vm_hwm_kib(self.child.id())
    }

    /// Resident set size now (VmRSS) in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        report::vm_rss_kib(self.child.id())
    }
}

/// Start `cmd`, read its stderr until a line carries `addr=<socket address>`.
fn start(name: &'static str, mut cmd: Command) -> anyhow::Result<Server> {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start the {name} server"))?;
    let stderr = child.stderr.take().context("stderr piped")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let Some(line) = lines.next() else {
            let _ = child.kill();
            bail!("the {name} server exited before listening");
        };
        let line = line?;
        if let Some(addr) = listening_addr(&line) {
            break addr
                .parse()
                .with_context(|| format!("bad address {addr:?}"))?;
        }
    };
    // Keep draining its stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Server { name, child, addr })
}

/// The address in a "listening" line: `addr=<a>` (canned) or the injector's JSON log field.
fn listening_addr(line: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return (v["fields"]["message"] == "listening")
            .then(|| v["fields"]["addr"].as_str().map(str::to_owned))
            .flatten();
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(str::to_owned)
}

fn injector_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("outrigger-injector"),
    };
    if !path.is_file() {
        bail!(
            "{} not found; build it first: cargo build --release -p outrigger-webhook --bin outrigger-injector",
            path.display()
        );
    }
    Ok(path)
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Mode::CannedServer {
        cert,
        key,
        response,
    }) = args.mode
    {
        return canned::serve(&cert, &key, &response).await;
    }
    let work = std::env::temp_dir().join(format!("injector-load-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = measure(&args, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn measure(args: &Args, work: &Path) -> anyhow::Result<()> {
    let certs = work.join("certs");
    let mut cmd = Command::new(injector_path(args.injector.clone())?);
    cmd.args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .arg("--self-signed-dir")
        .arg(&certs)
        .args(["--log-format", "json"])
        .args(&args.injector_arg)
        .env(
            "RUST_LOG",
            "warn,outrigger_webhook::server=info,outrigger_webhook::server::app=warn",
        );
    let injector = start("injector", cmd)?;
    let client = client::Client::new(&certs.join("ca.crt"))?;
    let default_count = match args.pods {
        reviews::Pods::Large => LARGE_POOL,
        reviews::Pods::Replicas | reviews::Pods::Distinct => 4096,
    };
    let count = usize::try_from(args.reviews.unwrap_or(default_count)).context("--reviews")?;
    let reviews: Arc<[reviews::Review]> =
        reviews::pool_of(args.pods, REVIEW, count, args.seed)?.into();

    // The canned server answers exactly what the injector answers to the first replica.
    let first = &reviews[0];
    let response = client.one(injector.addr, &first.body).await?;
    if let Err(mismatch) = first.check(&response) {
        bail!(
            "the injector did not inject the benchmark pod ({mismatch:?}): {}",
            String::from_utf8_lossy(&response)
        );
    }
    if args.pods == reviews::Pods::Large {
        return measure_large(args, &injector, &client, reviews).await;
    }
    let response_file = work.join("response.json");
    std::fs::write(&response_file, &response)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("canned-server")
        .arg("--cert")
        .arg(certs.join("tls.crt"))
        .arg("--key")
        .arg(certs.join("tls.key"))
        .arg("--response")
        .arg(&response_file);
    let canned = start("canned", cmd)?;

    let duration = Duration::from_secs(args.seconds);
    println!(
        "injector-load: {} keep-alive HTTPS connections, {} s per run, {} pods ({}: fresh uid and token volume each{}), request {} bytes, response {} bytes",
        args.connections,
        args.seconds,
        reviews.len(),
        match args.pods {
            reviews::Pods::Replicas => "replicas",
            reviews::Pods::Distinct => "distinct",
            reviews::Pods::Large => "large",
        },
        match args.pods {
            reviews::Pods::Replicas => "",
            reviews::Pods::Distinct | reviews::Pods::Large => ", and a pod-template-hash label",
        },
        first.body.len(),
        response.len()
    );
    let mut rows = Vec::new();
    for (server, check) in [(&canned, Check::Status), (&injector, Check::Review)] {
        let pool = Pool::new(reviews.clone(), check);
        // Warm up connections and caches.
        client
            .closed_loop(server.addr, &pool, args.connections, Duration::from_secs(1))
            .await?;
        let cpu_before = server.cpu_time()?;
        let mut run = client
            .closed_loop(server.addr, &pool, args.connections, duration)
            .await?;
        run.server_cpu = server.cpu_time()?.saturating_sub(cpu_before);
        rows.push((server.name, "max throughput", run));
    }
    let pool = Pool::new(reviews.clone(), Check::Review);
    let cpu_before = injector.cpu_time()?;
    let mut fixed = client
        .fixed_rate(injector.addr, &pool, args.connections, args.rate, duration)
        .await?;
    fixed.server_cpu = injector.cpu_time()?.saturating_sub(cpu_before);
    rows.push((injector.name, "fixed rate", fixed));

    report::print(&rows);
    let limit = rows[0].2.throughput();
    let ours = rows[1].2.throughput();
    println!(
        "throughput ratio injector/canned: {:.2} (target >= 0.60); CPU per request ratio canned/injector: {:.2}",
        ours / limit,
        rows[0].2.cpu_per_request().as_secs_f64() / rows[1].2.cpu_per_request().as_secs_f64()
    );
    println!(
        "p99 at {} req/s with {} connections: {:.2} ms (target <= 5 ms)",
        args.rate,
        args.connections,
        rows[2].2.percentile(99.0).as_secs_f64() * 1e3
    );
    let rss = injector.peak_rss_kib()?;
    println!(
        "peak RSS (VmHWM): injector {:.1} MiB (target <= 40 MiB), canned {:.1} MiB",
        rss as f64 / 1024.0,
        canned.peak_rss_kib()? as f64 / 1024.0
    );
    for (server, run_name, run) in &rows {
        if run.errors > 0 {
            bail!(
                "{server} {run_name}: {} requests failed or were answered wrongly; first: {}",
                run.errors,
                run.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// Pods in a `--pods large` pool: as many as the old replica memo kept (256) would take 1 GiB
/// in this process; 96 of 3-5 MiB (about 400 MiB here) are well past the injector's 128 Mi.
const LARGE_POOL: u64 = 96;
/// The injector's memory limit in `manifests/webhook/base/deployment.yaml`.
const MEMORY_LIMIT_MIB: f64 = 128.0;

/// `--pods large`: every pool pod through the injector (closed loop), then its peak and
/// current RSS against the Deployment's memory limit.
async fn measure_large(
    args: &Args,
    injector: &Server,
    client: &client::Client,
    reviews: Arc<[reviews::Review]>,
) -> anyhow::Result<()> {
    let bytes: usize = reviews.iter().map(|r| r.body.len()).sum();
    println!(
        "injector-load: {} keep-alive HTTPS connections, {} s, {} distinct large pods ({:.1}-{:.1} MiB requests, {:.0} MiB in all)",
        args.connections,
        args.seconds,
        reviews.len(),
        reviews.iter().map(|r| r.body.len()).min().unwrap_or(0) as f64 / 1048576.0,
        reviews.iter().map(|r| r.body.len()).max().unwrap_or(0) as f64 / 1048576.0,
        bytes as f64 / 1048576.0,
    );
    let pool = Pool::new(reviews.clone(), Check::Review);
    let cpu_before = injector.cpu_time()?;
    let mut run = client
        .closed_loop(
            injector.addr,
            &pool,
            args.connections,
            Duration::from_secs(args.seconds),
        )
        .await?;
    run.server_cpu = injector.cpu_time()?.saturating_sub(cpu_before);
    let rows = [(injector.name, "large pods", run)];
    report::print(&rows);
    let peak = injector.peak_rss_kib()? as f64 / 1024.0;
    let now = injector.rss_kib()? as f64 / 1024.0;
    println!(
        "requests: {} ({} pool rounds); injector RSS peak (VmHWM) {peak:.1} MiB, after the load (VmRSS) {now:.1} MiB; memory limit {MEMORY_LIMIT_MIB:.0} MiB: {}",
        rows[0].2.latencies.len(),
        rows[0].2.latencies.len() as f64 / reviews.len() as f64,
        if peak < MEMORY_LIMIT_MIB {
            "under"
        } else {
            "OVER (the pod would be OOM-killed)"
        }
    );
    if rows[0].2.errors > 0 {
        bail!(
            "{} requests failed or were answered wrongly; first: {}",
            rows[0].2.errors,
            rows[0].2.first_error.as_deref().unwrap_or("?")
        );
    }
    if peak >= MEMORY_LIMIT_MIB {
        bail!("injector peak RSS {peak:.1} MiB is over the {MEMORY_LIMIT_MIB:.0} MiB memory limit");
    }
    Ok(())
}
