//! Builds the pods, starts the proxies under test in pod a and runs each path in one run.
//!
//! Pod a (captured by the real `outrigger-iptables`) holds the client and, as UID 1337 so their
//! upstream connections are not captured, outrigger-proxy, nginx and haproxy; pod b (not
//! captured) the server. Each path is one hop from the client in a to the server in b:
//! direct (UID 1337 to b), outrigger L7 (UID 1000 to a ClusterIP, captured, routed by the
//! configuration `outrigger-routes build` wrote), nginx and haproxy (`mode http`) on loopback,
//! outrigger's TCP relay (UID 1000 straight to b: an unknown destination) and haproxy
//! `mode tcp`; then nginx and haproxy again from the captured UID through a nat REDIRECT (the
//! netfilter cost outrigger's path pays).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use outrigger_e2e::bins::{stage, workspace_bin};
use outrigger_e2e::process::Guarded;
use outrigger_e2e::topology::{APP_UID, INIT_ARGS, PROXY_UID, Topology};

const CLUSTER_IP: &str = "10.96.0.10";
/// Addresses a captured client (UID 1000) reaches nginx and haproxy `mode http` at through a
/// nat REDIRECT, so those rows pay the same netfilter path (nat + conntrack) as outrigger's.
const NGINX_CAPTURED_IP: &str = "10.96.0.11";
const HAPROXY_CAPTURED_IP: &str = "10.96.0.12";
const PORT: u16 = 8080;
const NGINX_PORT: u16 = 18080;
const HAPROXY_HTTP_PORT: u16 = 18081;
const HAPROXY_TCP_PORT: u16 = 18082;
const RPS_CONNECTIONS: &str = "32";
const RPS_SECONDS: &str = "5";
const LATENCY_SECONDS: &str = "3";

struct Route {
    name: &'static str,
    uid: u32,
    addr: String,
    host: String,
    h2: bool,
    /// Whose CPU to read during the throughput run.
    proxy: Option<&'static str>,
}

#[derive(Debug, Default, Clone)]
struct Figures {
    rps: f64,
    errors: u64,
    p50: f64,
    p99: f64,
    cpu_per_krps: Option<f64>,
}

/// `run [--only TEXT] [--seconds N] [--rounds N]`: only the paths whose name contains TEXT
/// (or one of `A|B|...`; the two direct paths always run: the added latency is against them); N seconds per
/// throughput run instead of 5 (a longer run to profile one path under load); N rounds over
/// the paths, interleaved, and each figure's median (on a shared machine a path measured once
/// can land in another process's burst).
#[derive(Debug, Default)]
pub struct RunOptions {
    only: Option<String>,
    seconds: Option<u32>,
    rounds: u32,
}

pub fn parse_run(args: &[String]) -> Result<RunOptions> {
    let mut options = RunOptions::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--only" => options.only = Some(args.next().context("--only TEXT")?.clone()),
            "--seconds" => {
                let seconds = args.next().context("--seconds N")?;
                options.seconds = Some(seconds.parse().context("--seconds N")?);
            }
            "--rounds" => {
                let rounds = args.next().context("--rounds N")?;
                options.rounds = rounds.parse().context("--rounds N")?;
            }
            other => {
                bail!("run: unknown argument {other:?} (--only TEXT, --seconds N, --rounds N)")
            }
        }
    }
    Ok(options)
}

pub fn run(options: RunOptions) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "http-load: WARNING: debug build; run `cargo build --release --workspace --bins` and `target/release/http-load`"
        );
    }
    for tool in ["nginx", "haproxy"] {
        if Command::new(tool).arg("-v").output().is_err() {
            bail!("{tool} is missing: apt-get install nginx haproxy (Debian packages)");
        }
    }
    let me: PathBuf = std::env::current_exe()?;
    let topology = Topology::new(&["a", "b"], &me)?;
    topology.capture("a", INIT_ARGS)?;
    let b = topology.pod("b");
    let server_addr = b.addr(PORT);
    let _server = topology.start_server("b", &["serve", &server_addr])?;
    let work = topology.dir.path().join("work");
    std::fs::create_dir_all(&work)?;
    std::os::unix::fs::chown(&work, Some(PROXY_UID), Some(PROXY_UID))?;

    let config = build(&topology, "small", &small_inputs(&topology))?;
    let quiet = [("RUST_LOG", "warn")];
    let proxy_a = topology.start_proxy("a", &quiet, &["--config-file", path_str(&config)?])?;
    let nginx = start_nginx(&topology, &work, &server_addr)?;
    let haproxy = start_haproxy(&topology, &work, &server_addr)?;
    redirect_to_loopback(&topology, NGINX_CAPTURED_IP, NGINX_PORT)?;
    redirect_to_loopback(&topology, HAPROXY_CAPTURED_IP, HAPROXY_HTTP_PORT)?;
    std::thread::sleep(Duration::from_millis(500));

    println!(
        "http-load: pods a -> b over a veth/bridge node; outrigger-proxy --concurrency 2, nginx worker_processes 2, haproxy nbthread 2; {} CPUs, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    let service = format!("web:{PORT}");
    let local = |port: u16| format!("127.0.0.1:{port}");
    let routes = [
        Route {
            name: "direct",
            uid: PROXY_UID,
            addr: server_addr.clone(),
            host: server_addr.clone(),
            h2: false,
            proxy: None,
        },
        Route {
            name: "outrigger L7 (HTTP/1.1)",
            uid: APP_UID,
            addr: format!("{CLUSTER_IP}:{PORT}"),
            host: service.clone(),
            h2: false,
            proxy: Some("outrigger"),
        },
        Route {
            name: "nginx (proxy_pass, keepalive)",
            uid: PROXY_UID,
            addr: local(NGINX_PORT),
            host: service.clone(),
            h2: false,
            proxy: Some("nginx"),
        },
        Route {
            name: "haproxy (mode http)",
            uid: PROXY_UID,
            addr: local(HAPROXY_HTTP_PORT),
            host: service.clone(),
            h2: false,
            proxy: Some("haproxy"),
        },
        Route {
            name: "direct HTTP/2",
            uid: PROXY_UID,
            addr: server_addr.clone(),
            host: server_addr.clone(),
            h2: true,
            proxy: None,
        },
        Route {
            name: "outrigger L7 (HTTP/2 in, HTTP/1.1 out)",
            uid: APP_UID,
            addr: format!("{CLUSTER_IP}:{PORT}"),
            host: service.clone(),
            h2: true,
            proxy: Some("outrigger"),
        },
        Route {
            name: "outrigger TCP relay",
            uid: APP_UID,
            addr: server_addr.clone(),
            host: server_addr.clone(),
            h2: false,
            proxy: Some("outrigger"),
        },
        Route {
            name: "haproxy (mode tcp)",
            uid: PROXY_UID,
            addr: local(HAPROXY_TCP_PORT),
            host: server_addr.clone(),
            h2: false,
            proxy: Some("haproxy"),
        },
        // Like for like with the outrigger L7 row: the same client UID, a ClusterIP-like
        // address, the nat REDIRECT and conntrack on the way in.
        Route {
            name: "nginx via nat REDIRECT",
            uid: APP_UID,
            addr: format!("{NGINX_CAPTURED_IP}:{PORT}"),
            host: service.clone(),
            h2: false,
            proxy: Some("nginx"),
        },
        Route {
            name: "haproxy (mode http) via nat REDIRECT",
            uid: APP_UID,
            addr: format!("{HAPROXY_CAPTURED_IP}:{PORT}"),
            host: service.clone(),
            h2: false,
            proxy: Some("haproxy"),
        },
    ];
    let pids = |which: &str| -> u32 {
        match which {
            "outrigger" => proxy_a.process.child.id(),
            "nginx" => nginx.child.id(),
            _ => haproxy.child.id(),
        }
    };
    let routes: Vec<Route> = routes
        .into_iter()
        .filter(|route| {
            route.proxy.is_none()
                || options
                    .only
                    .as_deref()
                    .is_none_or(|only| only.split('|').any(|part| route.name.contains(part)))
        })
        .collect();
    let rps_seconds = options
        .seconds
        .map_or(RPS_SECONDS.to_owned(), |s| s.to_string());
    let mut rounds: Vec<Vec<Figures>> = vec![Vec::new(); routes.len()];
    for round in 1..=options.rounds.max(1) {
        if options.rounds > 1 {
            println!("round {round} of {}:", options.rounds);
        }
        for (route, figures) in routes.iter().zip(&mut rounds) {
            let measured = measure(&topology, route, &rps_seconds, &pids)?;
            print_figures(route.name, &measured);
            figures.push(measured);
        }
    }
    let results: Vec<Figures> = rounds.iter().map(|r| median(r)).collect();
    if options.rounds > 1 {
        println!(
            "\nmedian of {} rounds (each path's figures taken separately):",
            options.rounds
        );
        for (route, figures) in routes.iter().zip(&results) {
            print_figures(route.name, figures);
        }
    }
    let of = |name: &str| {
        routes
            .iter()
            .position(|route| route.name == name)
            .map(|at| results[at].clone())
            .unwrap_or_default()
    };
    let (direct, direct_h2) = (of("direct"), of("direct HTTP/2"));
    println!(
        "\nadded latency per hop (single connection, vs the direct path of the same protocol):"
    );
    for (route, figures) in routes
        .iter()
        .zip(&results)
        .filter(|(r, _)| r.proxy.is_some())
    {
        let base = if route.h2 { &direct_h2 } else { &direct };
        println!(
            "  {:<40} p50 +{:.0} us  p99 +{:.0} us",
            route.name,
            figures.p50 - base.p50,
            figures.p99 - base.p99
        );
    }
    let rss = memory_kib(proxy_a.process.child.id(), "VmHWM:")?;
    println!(
        "\noutrigger-proxy peak RSS over the run (small configuration): {:.1} MiB",
        rss as f64 / 1024.0
    );
    drop(nginx);
    drop(haproxy);

    large_rss(&topology, "b", &[])
}

/// One path: requests per second with `RPS_CONNECTIONS` for `seconds`, the proxy's CPU over
/// that run, then p50/p99 with one connection.
fn measure(
    topology: &Topology,
    route: &Route,
    seconds: &str,
    pids: &dyn Fn(&str) -> u32,
) -> Result<Figures> {
    let before = route.proxy.map(|p| cpu_ticks(pids(p)));
    let rps = load(topology, route, RPS_CONNECTIONS, seconds)?;
    let after = route.proxy.map(|p| cpu_ticks(pids(p)));
    let latency = load(topology, route, "1", LATENCY_SECONDS)?;
    let seconds: f64 = seconds.parse()?;
    let cpu_per_krps = match (before, after) {
        (Some(Ok(b)), Some(Ok(a))) if rps.rps > 0.0 => {
            let vcpu = (a - b) as f64 / 100.0 / seconds;
            Some(vcpu / (rps.rps / 1000.0))
        }
        _ => None,
    };
    Ok(Figures {
        rps: rps.rps,
        errors: rps.errors + latency.errors,
        p50: latency.p50,
        p99: latency.p99,
        cpu_per_krps,
    })
}

fn print_figures(name: &str, figures: &Figures) {
    println!(
        "{:<40} {:>8.0} req/s ({} errors)  p50 {:>6.0} us  p99 {:>6.0} us  cpu {}",
        name,
        figures.rps,
        figures.errors,
        figures.p50,
        figures.p99,
        figures
            .cpu_per_krps
            .map_or("-".to_owned(), |c| format!("{c:.3} vCPU per 1,000 req/s"))
    );
}

/// Each figure's median over the rounds (errors summed).
fn median(rounds: &[Figures]) -> Figures {
    fn mid(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => 0.0,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        }
    }
    let cpu: Vec<f64> = rounds.iter().filter_map(|f| f.cpu_per_krps).collect();
    Figures {
        rps: mid(rounds.iter().map(|f| f.rps).collect()),
        errors: rounds.iter().map(|f| f.errors).sum(),
        p50: mid(rounds.iter().map(|f| f.p50).collect()),
        p99: mid(rounds.iter().map(|f| f.p99).collect()),
        cpu_per_krps: (!cpu.is_empty()).then(|| mid(cpu)),
    }
}

/// Memory with a large configuration: 1,000 services of 10 pods each, one VirtualService
/// (header rule + default) per service: 2,000 routes, 10,000 endpoints. The proxy runs in
/// `pod` (not captured) as the throughput run's does; RSS is read a second after it is ready.
fn large_rss(topology: &Topology, pod: &str, env: &[(String, String)]) -> Result<()> {
    let large = build(topology, "large", &large_inputs())?;
    let size = std::fs::metadata(&large)?.len();
    let mut vars = vec![("RUST_LOG", "warn")];
    vars.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let proxy = topology.start_proxy(pod, &vars, &["--config-file", path_str(&large)?])?;
    std::thread::sleep(Duration::from_secs(1));
    let rss = memory_kib(proxy.process.child.id(), "VmRSS:")?;
    let hwm = memory_kib(proxy.process.child.id(), "VmHWM:")?;
    println!(
        "outrigger-proxy with 1,000 destinations, 2,000 routes, 10,000 endpoints ({:.1} MiB of JSON): RSS {:.1} MiB (peak {:.1} MiB while loading)",
        size as f64 / 1048576.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    Ok(())
}

/// `--rss-only [--proxy BIN] [--env NAME=VALUE]...`: which proxy binary to measure (default:
/// the workspace's) and extra environment for it (e.g. `MALLOC_ARENA_MAX=2`).
#[derive(Debug, Default)]
pub struct RssOnly {
    proxy: Option<PathBuf>,
    env: Vec<(String, String)>,
}

pub fn parse_rss_only(args: &[String]) -> Result<RssOnly> {
    let mut options = RssOnly::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--proxy" => {
                options.proxy = Some(args.next().context("--proxy BIN")?.into());
            }
            "--env" => {
                let pair = args.next().context("--env NAME=VALUE")?;
                let (name, value) = pair.split_once('=').context("--env NAME=VALUE")?;
                options.env.push((name.to_owned(), value.to_owned()));
            }
            other => {
                bail!("--rss-only: unknown argument {other:?} (--proxy BIN, --env NAME=VALUE)")
            }
        }
    }
    Ok(options)
}

/// Only the large-configuration RSS: one pod, no capture, no client, no nginx or haproxy.
pub fn rss_only(options: RssOnly) -> Result<()> {
    let me: PathBuf = std::env::current_exe()?;
    let mut topology = Topology::new(&["b"], &me)?;
    if let Some(proxy) = &options.proxy {
        let dir = topology.dir.path().join("proxy-under-test");
        std::fs::create_dir_all(&dir)?;
        topology.bins.proxy = stage(proxy, &dir)?;
    }
    println!("proxy: {} {:?}", topology.bins.proxy.display(), options.env);
    large_rss(&topology, "b", &options.env)
}

/// `large-config OUT`: the large configuration as the RSS measurement loads it (the real
/// `outrigger-routes build`), for heap profiles (`proxy/examples/config_heap.rs`).
pub fn write_large_config(out: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("large.yaml");
    std::fs::write(&input, large_inputs())?;
    routes_build(&input, out)
}

/// In pod a, ahead of outrigger's capture: the app UID's connections to `ip:PORT` go to
/// `127.0.0.1:port` (REDIRECT maps locally generated packets to loopback).
fn redirect_to_loopback(topology: &Topology, ip: &str, port: u16) -> Result<()> {
    let uid = APP_UID.to_string();
    let port = port.to_string();
    let out = topology.pod("a").ns.exec(
        "iptables",
        &[
            "-t",
            "nat",
            "-I",
            "OUTPUT",
            "1",
            "-p",
            "tcp",
            "-d",
            ip,
            "--dport",
            &PORT.to_string(),
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "-j",
            "REDIRECT",
            "--to-ports",
            &port,
        ],
    )?;
    if !out.status.success() {
        bail!(
            "iptables REDIRECT {ip}:{PORT} -> 127.0.0.1:{port} in pod a: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("UTF-8 path")
}

fn load(topology: &Topology, route: &Route, connections: &str, seconds: &str) -> Result<Figures> {
    let mut args = vec!["load", &route.addr, &route.host, connections, seconds];
    if route.h2 {
        args.push("h2");
    }
    let out = topology.run_app_as("a", route.uid, &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "load on {}: {}",
            route.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |name: &str| -> f64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
            .unwrap_or(0.0)
    };
    Ok(Figures {
        rps: field("rps="),
        errors: field("errors=") as u64,
        p50: field("p50_us="),
        p99: field("p99_us="),
        cpu_per_krps: None,
    })
}

fn small_inputs(topology: &Topology) -> String {
    let (a, b) = (topology.pod("a"), topology.pod("b"));
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: bench}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: bench, labels: {{app: client}}}}\n\
         spec: {{containers: [{{name: app, image: x}}]}}\nstatus: {{phase: Running, podIP: {}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: bench, labels: {{app: web, version: v1}}}}\n\
         spec: {{containers: [{{name: app, image: x}}]}}\nstatus: {{phase: Running, podIP: {}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: bench}}\n\
         spec: {{clusterIP: {CLUSTER_IP}, selector: {{app: web}}, ports: [{{name: http, port: {PORT}, targetPort: {PORT}}}]}}\n",
        a.ip, b.ip
    )
}

fn large_inputs() -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: bench, labels: {app: client}}\n\
         spec: {containers: [{name: app, image: x}]}\nstatus: {phase: Running, podIP: 10.200.255.1}\n---\n",
    );
    for s in 0..1000u32 {
        let (hi, lo) = (s / 250, s % 250);
        text += &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: bench}}\n\
             spec: {{clusterIP: 10.97.{hi}.{lo}, selector: {{app: svc-{s}}}, ports: [{{name: http, port: 8080, targetPort: 8080}}]}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{s}, namespace: bench}}\n\
             spec:\n  hosts: [svc-{s}]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    timeout: 2s\n    route: [{{destination: {{host: svc-{s}}}}}]\n  - route: [{{destination: {{host: svc-{s}}}}}]\n---\n"
        );
        for p in 0..10u32 {
            let n = s * 10 + p;
            text += &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: svc-{s}-{p}, namespace: bench, labels: {{app: svc-{s}, version: v1}}}}\n\
                 spec: {{containers: [{{name: app, image: x}}]}}\nstatus: {{phase: Running, podIP: 10.{}.{}.{}}}\n---\n",
                201 + n / 62500,
                (n / 250) % 250,
                n % 250 + 1
            );
        }
    }
    text
}

/// Runs the real `outrigger-routes build` for `bench/client`; readable by UID 1337.
fn build(topology: &Topology, name: &str, inputs: &str) -> Result<PathBuf> {
    let dir = topology.dir.path();
    let input = dir.join(format!("{name}.yaml"));
    std::fs::write(&input, inputs)?;
    let output = dir.join(format!("{name}.json"));
    routes_build(&input, &output)?;
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o644))?;
    Ok(output)
}

fn routes_build(input: &Path, output: &Path) -> Result<()> {
    let out = Command::new(workspace_bin("outrigger-routes"))
        .args(["build", "-f"])
        .arg(input)
        .args(["--for", "bench/client", "-o"])
        .arg(output)
        .output()?;
    if !out.status.success() {
        bail!(
            "outrigger-routes build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn spawn_as_proxy_uid(
    topology: &Topology,
    program: &str,
    args: &[&str],
    what: &str,
) -> Result<Guarded> {
    let log_path = topology.dir.path().join("work").join(format!("{what}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .uid(PROXY_UID)
        .gid(PROXY_UID)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: dropping the guard kills nginx's workers too, not only the master.
        .process_group(0);
    let mut process = Guarded::new(topology.pod("a").ns.spawn(command)?, what);
    std::thread::sleep(Duration::from_millis(300));
    if process.has_exited() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        bail!("{what} exited at start: {log}");
    }
    Ok(process)
}

fn start_nginx(topology: &Topology, work: &Path, upstream: &str) -> Result<Guarded> {
    let dir = work.display();
    let conf = format!(
        "worker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx.err warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
         upstream web {{ server {upstream}; keepalive 64; }}\n\
         server {{\n    listen 127.0.0.1:{NGINX_PORT};\n    keepalive_requests 100000000;\n    location / {{ proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n"
    );
    let path = work.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let err = format!("{dir}/nginx.err");
    spawn_as_proxy_uid(
        topology,
        "nginx",
        &["-e", &err, "-c", path_str(&path)?, "-g", "daemon off;"],
        "nginx",
    )
}

fn start_haproxy(topology: &Topology, work: &Path, upstream: &str) -> Result<Guarded> {
    let conf = format!(
        "global\n  nbthread 2\n  maxconn 4000\n\
         defaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend http_in\n  mode http\n  option http-keep-alive\n  bind 127.0.0.1:{HAPROXY_HTTP_PORT}\n  default_backend http_out\n\
         backend http_out\n  mode http\n  http-reuse always\n  server web {upstream}\n\
         frontend tcp_in\n  mode tcp\n  bind 127.0.0.1:{HAPROXY_TCP_PORT}\n  default_backend tcp_out\n\
         backend tcp_out\n  mode tcp\n  server web {upstream}\n"
    );
    let path = work.join("haproxy.cfg");
    std::fs::write(&path, conf)?;
    spawn_as_proxy_uid(
        topology,
        "haproxy",
        &["-db", "-f", path_str(&path)?],
        "haproxy",
    )
}

/// User + system CPU ticks of `pid` and its children (nginx's workers).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = |pid: u32| -> Option<(u32, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = text.rsplit_once(") ")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields.get(1)?.parse().ok()?;
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some((ppid, ticks))
    };
    let mut total = stat(pid).with_context(|| format!("/proc/{pid}/stat"))?.1;
    for entry in std::fs::read_dir("/proc")? {
        let Some(child) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, ticks)) = stat(child)
            && ppid == pid
        {
            total += ticks;
        }
    }
    Ok(total)
}

fn memory_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}
