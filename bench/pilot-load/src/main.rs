//! pilot under load: the testkit's fake API server holds N namespaces × services (each with an
//! EndpointSlice, pods v1/v2, half with a VirtualService and DestinationRule); the real
//! `outrigger-pilot` binary runs as a child process against it; P simulated proxies subscribe to
//! D destinations each (and their clusters' endpoints) and ACK every response. Prints pilot's
//! RSS and CPU, and the latency from a change in the fake API to each subscribed proxy's ACK
//! (p50, p99, last) for endpoint changes and VirtualService changes.
//!
//! `cargo build --release -p outrigger-pilot -p outrigger-bench-pilot-load && target/release/pilot-load-bench`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use outrigger_testkit::FakeApiServer;
use outrigger_xds_api::envoy::config::core::v3::Node;
use outrigger_xds_api::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use outrigger_xds_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use outrigger_xds_api::subscribe::split_request;
use outrigger_xds_api::{DESTINATION_TYPE, ENDPOINTS_TYPE};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    #[arg(long, default_value_t = 50)]
    services_per_namespace: usize,
    #[arg(long, default_value_t = 10)]
    pods_per_service: usize,
    /// Every other service gets a VirtualService and a DestinationRule.
    #[arg(long, default_value_t = 2)]
    virtual_service_every: usize,
    #[arg(long, default_value_t = 2000)]
    proxies: usize,
    #[arg(long, default_value_t = 20)]
    destinations_per_proxy: usize,
    /// HTTP/2 connections the proxies' streams share (real sidecars have one each:
    /// `--connections` equal to `--proxies`).
    #[arg(long, default_value_t = 20)]
    connections: usize,
    /// Changes of each kind to time.
    #[arg(long, default_value_t = 10)]
    changes: usize,
    #[arg(long)]
    pilot_bin: Option<PathBuf>,
    /// Instead of the load run: build the same cluster in-process and time one rebuild
    /// (snapshot, every namespace's view, wire resources), count its bytes and the RSS it adds.
    #[arg(long)]
    rebuild_profile: bool,
}

fn service_name(ns: usize, s: usize) -> (String, String) {
    (format!("ns-{ns}"), format!("svc-{s}"))
}

fn fixtures(args: &Args) -> Vec<Value> {
    let mut out = Vec::new();
    for ns in 0..args.namespaces {
        let namespace = format!("ns-{ns}");
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}));
        for s in 0..args.services_per_namespace {
            let (_, name) = service_name(ns, s);
            let ip = |i: usize| format!("10.{}.{}.{}", 100 + ns, s, i + 1);
            out.push(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"clusterIP": format!("10.96.{ns}.{s}"), "selector": {"app": name},
                         "ports": [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]}}));
            let mut endpoints = Vec::new();
            for p in 0..args.pods_per_service {
                let version = if p % 2 == 0 { "v1" } else { "v2" };
                let pod = format!("{name}-{version}-5d8f7c-{p:05}");
                out.push(json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": namespace,
                                 "labels": {"app": name, "version": version, "pod-template-hash": "5d8f7c"}},
                    // As the injector leaves a meshed pod: the app and istio-proxy.
                    "spec": {"serviceAccountName": name, "containers": [
                        {"name": "app", "image": "app:1",
                         "ports": [{"name": "http", "containerPort": 8080}]},
                        {"name": "istio-proxy", "image": "outrigger-proxy:1",
                         "args": ["run", "--concurrency", "2"],
                         "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}]}]},
                    "status": {"phase": "Running", "podIP": ip(p), "podIPs": [{"ip": ip(p)}]}}));
                endpoints.push(json!({"addresses": [ip(p)], "conditions": {"ready": true},
                                      "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace}}));
            }
            out.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-abcde"), "namespace": namespace,
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints}));
            if s % args.virtual_service_every == 0 {
                out.push(
                    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"host": name, "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                       {"name": "v2", "labels": {"version": "v2"}}],
                             "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 100}},
                                               "outlierDetection": {"consecutive5xxErrors": 5}}}}),
                );
                out.push(virtual_service(&namespace, &name, 90));
            }
        }
    }
    out
}

fn virtual_service(namespace: &str, name: &str, v1_weight: i64) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hosts": [name], "http": [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": name, "subset": "v2"}}]},
            {"match": [{"uri": {"regex": "/items/[0-9]+"}}],
             "route": [{"destination": {"host": name, "subset": "v1"}}], "timeout": "2s"},
            {"route": [{"destination": {"host": name, "subset": "v1"}, "weight": v1_weight},
                       {"destination": {"host": name, "subset": "v2"}, "weight": 100 - v1_weight}]}]}})
}

/// Set before pilot is stopped: the proxies' stream errors after that are expected.
static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One response seen by a proxy: which proxy, when, type, names.
struct Seen {
    proxy: usize,
    at: Instant,
    type_url: String,
    names: Vec<String>,
}

async fn run_proxy(
    id: usize,
    channel: tonic::transport::Channel,
    node: String,
    token: String,
    destinations: Vec<String>,
    clusters: Vec<String>,
    seen: mpsc::UnboundedSender<Seen>,
) -> anyhow::Result<()> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(64);
    // As outrigger-proxy's discovery client subscribes: requests cut to pilot's request size.
    let first = [
        DeltaDiscoveryRequest {
            node: Some(Node {
                id: node,
                cluster: String::new(),
            }),
            type_url: DESTINATION_TYPE.to_owned(),
            resource_names_subscribe: destinations,
            ..Default::default()
        },
        DeltaDiscoveryRequest {
            type_url: ENDPOINTS_TYPE.to_owned(),
            resource_names_subscribe: clusters,
            ..Default::default()
        },
    ];
    for request in first.into_iter().flat_map(split_request) {
        tx.send(request).await?;
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut responses = client
        .delta_aggregated_resources(request)
        .await?
        .into_inner();
    while let Some(response) = responses.message().await? {
        tx.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await?;
        let _ = seen.send(Seen {
            proxy: id,
            at: Instant::now(),
            type_url: response.type_url,
            names: response.resources.into_iter().map(|r| r.name).collect(),
        });
    }
    Ok(())
}

fn proc_stat(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime, stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the comm.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    (kib("VmHWM:").max(kib("VmRSS:")), ticks as f64 / 100.0)
}

fn rss_now(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Waits until every proxy in `expected` has seen a response naming `resource` after `since`.
async fn latencies(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    since: Instant,
    type_url: &str,
    resource: &str,
    expected: &[usize],
) -> Vec<Duration> {
    let mut pending: std::collections::HashSet<usize> = expected.iter().copied().collect();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        let Ok(Some(s)) = tokio::time::timeout_at(deadline, seen.recv()).await else {
            eprintln!(
                "timed out: {} proxies did not get {resource}",
                pending.len()
            );
            break;
        };
        if s.at >= since
            && s.type_url == type_url
            && s.names.iter().any(|n| n == resource)
            && pending.remove(&s.proxy)
        {
            out.push(s.at - since);
        }
    }
    out.sort();
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rebuild_profile {
        return rebuild_profile(&args);
    }
    let api = FakeApiServer::start().await?;
    api.on_create(
        "authentication.k8s.io/v1",
        "tokenreviews",
        Arc::new(|review: &Value| {
            let token = review["spec"]["token"].as_str().unwrap_or("");
            let user = token.strip_prefix("token-").unwrap_or("nobody:nobody").replace('/', ":");
            Ok(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {},
                      "status": {"authenticated": true, "audiences": review["spec"]["audiences"],
                                 "user": {"username": format!("system:serviceaccount:{user}")}}}))
        }),
    );
    let started = Instant::now();
    let objects = fixtures(&args);
    let count = objects.len();
    for object in objects {
        api.create(object)?;
    }
    println!("fake API: {count} objects in {:?}", started.elapsed());

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig())?;
    let pilot_bin = args.pilot_bin.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/outrigger-pilot")
    });
    let xds_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let monitoring_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut pilot = tokio::process::Command::new(&pilot_bin)
        .env("KUBECONFIG", &kubeconfig)
        // `PILOT_LOG` (e.g. `info,h2=debug`) is pilot's RUST_LOG here; warnings only by default.
        .env(
            "RUST_LOG",
            std::env::var("PILOT_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .args([
            format!("--xds-address=127.0.0.1:{xds_port}"),
            format!("--monitoring-address=127.0.0.1:{monitoring_port}"),
            "--log-format=text".to_owned(),
        ])
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p outrigger-pilot)",
                pilot_bin.display()
            )
        })?;
    let pid = pilot.id().context("pilot pid")?;
    let url = format!("http://127.0.0.1:{xds_port}");
    // Wait for the port.
    let mut channels = Vec::new();
    for _ in 0..200 {
        if let Ok(c) = tonic::transport::Channel::from_shared(url.clone())?
            .connect()
            .await
        {
            channels.push(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(!channels.is_empty(), "pilot did not open {url}");
    for _ in 1..args.connections.max(1) {
        channels.push(
            tonic::transport::Channel::from_shared(url.clone())?
                .connect()
                .await?,
        );
    }

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut subscribers: HashMap<String, Vec<usize>> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let connect_start = Instant::now();
    for id in 0..args.proxies {
        let ns = id % args.namespaces;
        let s = (id / args.namespaces) % args.services_per_namespace;
        let (namespace, name) = service_name(ns, s);
        let pod = format!("{name}-v1-5d8f7c-{:05}", 0);
        let node = format!("sidecar~10.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local");
        let token = format!("token-{namespace}/{name}");
        let mut destinations = Vec::new();
        let mut clusters = Vec::new();
        // Destination 0 of every proxy is a VirtualService'd service in ns-0 (the hot one).
        for d in 0..args.destinations_per_proxy {
            let (tns, ts) = if d == 0 {
                (0, 0)
            } else {
                (
                    rng.usize(0..args.namespaces),
                    rng.usize(0..args.services_per_namespace),
                )
            };
            let (tns, ts) = service_name(tns, ts);
            let host = format!("{ts}.{tns}.svc.cluster.local");
            let dest = format!("{host}:8080");
            if destinations.contains(&dest) {
                continue;
            }
            subscribers.entry(dest.clone()).or_default().push(id);
            for subset in ["", "v1", "v2"] {
                let cluster = format!("outbound|8080|{subset}|{host}");
                subscribers.entry(cluster.clone()).or_default().push(id);
                clusters.push(cluster);
            }
            destinations.push(dest);
        }
        let channel = channels[id % channels.len()].clone();
        let seen = seen_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = run_proxy(id, channel, node, token, destinations, clusters, seen).await
                && !DONE.load(std::sync::atomic::Ordering::Relaxed)
            {
                eprintln!("proxy {id}: {e}");
            }
        });
    }
    // Initial configuration: every proxy got its destination answer.
    let all: Vec<usize> = (0..args.proxies).collect();
    let hot = "svc-0.ns-0.svc.cluster.local:8080";
    let initial = latencies(&mut seen, connect_start, DESTINATION_TYPE, hot, &all).await;
    println!(
        "initial: {} proxies configured in {:?} (p50 {:?}, p99 {:?})",
        initial.len(),
        initial.last().copied().unwrap_or_default(),
        percentile(&initial, 0.5),
        percentile(&initial, 0.99)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    while seen.try_recv().is_ok() {}
    let (rss_idle, cpu_before) = proc_stat(pid);
    println!(
        "pilot after initial push: RSS now {} MiB, peak {} MiB, CPU {:.1} s",
        rss_now(pid) / 1024,
        rss_idle / 1024,
        cpu_before
    );

    // Endpoint changes: flip one endpoint of the hot service's slice.
    let mut endpoint_all = Vec::new();
    let mut endpoint_last = Vec::new();
    let cluster = "outbound|8080|v1|svc-0.ns-0.svc.cluster.local";
    let expected = subscribers.get(cluster).cloned().unwrap_or_default();
    for i in 0..args.changes {
        let since = Instant::now();
        api.modify(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "ns-0",
            "svc-0-abcde",
            |slice| slice["endpoints"][0]["conditions"]["ready"] = json!(i % 2 == 1),
        )?;
        let l = latencies(&mut seen, since, ENDPOINTS_TYPE, cluster, &expected).await;
        endpoint_last.push(l.last().copied().unwrap_or_default());
        endpoint_all.extend(l);
        tokio::time::sleep(Duration::from_millis(300)).await;
        while seen.try_recv().is_ok() {}
    }
    // VirtualService changes on the hot service.
    let mut vs_all = Vec::new();
    let mut vs_last = Vec::new();
    let expected = subscribers.get(hot).cloned().unwrap_or_default();
    for i in 0..args.changes {
        let since = Instant::now();
        api.apply(virtual_service("ns-0", "svc-0", 80 - i as i64))?;
        let l = latencies(&mut seen, since, DESTINATION_TYPE, hot, &expected).await;
        vs_last.push(l.last().copied().unwrap_or_default());
        vs_all.extend(l);
        tokio::time::sleep(Duration::from_millis(300)).await;
        while seen.try_recv().is_ok() {}
    }
    let (peak, cpu_after) = proc_stat(pid);
    for (what, all, last, subs) in [
        (
            "endpoint change",
            &mut endpoint_all,
            &mut endpoint_last,
            subscribers.get(cluster).map_or(0, Vec::len),
        ),
        (
            "VirtualService change",
            &mut vs_all,
            &mut vs_last,
            subscribers.get(hot).map_or(0, Vec::len),
        ),
    ] {
        all.sort();
        last.sort();
        println!(
            "{what}: {} changes x {subs} subscribed proxies: per-proxy ACK p50 {:?} p99 {:?}; last proxy p50 {:?} max {:?}",
            args.changes,
            percentile(all, 0.5),
            percentile(all, 0.99),
            percentile(last, 0.5),
            last.last().copied().unwrap_or_default()
        );
    }
    println!(
        "pilot: peak RSS {} MiB, RSS now {} MiB, CPU {:.1} s total ({:.1} s during the {} changes)",
        peak / 1024,
        rss_now(pid) / 1024,
        cpu_after,
        cpu_after - cpu_before,
        2 * args.changes
    );
    let metrics = reqwest_metrics(monitoring_port).await.unwrap_or_default();
    for line in metrics.lines().filter(|l| {
        l.starts_with("pilot_xds ")
            || l.starts_with("pilot_rebuild_seconds_sum")
            || l.starts_with("pilot_rebuilds_total")
    }) {
        println!("  {line}");
    }
    DONE.store(true, std::sync::atomic::Ordering::Relaxed);
    // SIGTERM and a bounded wait, so a pilot built with `--features dhat-heap` writes its
    // heap profile; then SIGKILL whatever is left.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    match tokio::time::timeout(Duration::from_secs(60), pilot.wait()).await {
        Ok(status) => println!("pilot exited: {}", status?),
        Err(_) => {
            println!("pilot did not exit within 60 s of SIGTERM: killed");
            pilot.kill().await.ok();
        }
    }
    Ok(())
}

/// One rebuild of the bench's cluster in-process: where the time and the memory go.
fn rebuild_profile(args: &Args) -> anyhow::Result<()> {
    use outrigger_pilot::index::Generation;
    let self_pid = std::process::id();
    let mut snapshot = outrigger_mesh::Snapshot::default();
    for object in fixtures(args) {
        snapshot.add_value("bench", 1, object)?;
    }
    let rss_start = rss_now(self_pid);
    let started = Instant::now();
    let copy = snapshot.clone();
    let clone_time = started.elapsed();
    let rss_snapshot = rss_now(self_pid);
    let keys: Vec<_> = (0..args.namespaces)
        .map(|ns| outrigger_pilot::index::ViewKey {
            namespace: format!("ns-{ns}"),
            labels: Default::default(),
        })
        .collect();
    let pool = Arc::new(outrigger_pilot::index::WirePool::default());
    let mut generations = Vec::new();
    for round in 0..2 {
        let started = Instant::now();
        let generation = Generation::new(round, Instant::now(), copy.clone(), pool.clone());
        let new_time = started.elapsed();
        let started = Instant::now();
        generation.precompute(&keys);
        let views_time = started.elapsed();
        let (mut count, mut bytes) = (0usize, 0usize);
        let mut unique = std::collections::HashSet::new();
        let mut unique_bytes = 0usize;
        for key in &keys {
            for resource in generation.view(key).resources() {
                count += 1;
                bytes += resource.json().len();
                if unique.insert(Arc::as_ptr(resource) as usize) {
                    unique_bytes += resource.json().len();
                }
            }
        }
        println!(
            "rebuild {round}: snapshot clone {clone_time:?} (+{} MiB), Generation::new {new_time:?}, {} views {views_time:?}; \
             {count} wire resources, {} MiB JSON, {} distinct allocations {} MiB; RSS {} MiB (start {} MiB)",
            (rss_snapshot.saturating_sub(rss_start)) / 1024,
            keys.len(),
            bytes >> 20,
            unique.len(),
            unique_bytes >> 20,
            rss_now(self_pid) / 1024,
            rss_start / 1024,
        );
        // Both generations alive, as while proxies move from one to the next.
        generations.push(generation);
    }
    let started = Instant::now();
    let services: outrigger_pilot::index::ServiceRefs =
        [("ns-0".to_owned(), "svc-0".to_owned())].into();
    let last = generations.last().context("a generation")?;
    let patched = last.with_endpoints_of(9, Instant::now(), copy.clone(), &services);
    println!(
        "endpoint-only rebuild of 1 service in {} views: {:?}; RSS {} MiB",
        keys.iter().filter(|k| patched.is_resolved(k)).count(),
        started.elapsed(),
        rss_now(self_pid) / 1024
    );
    Ok(())
}

/// GET /metrics with a raw HTTP/1.0 request (no client dependency).
async fn reqwest_metrics(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: pilot\r\n\r\n")
        .await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}
