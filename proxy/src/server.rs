//! Wires a proxy together: binds every listener, serves the status ports, accepts captured
//! connections, and runs the shutdown sequence.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use crate::cli::Ipv6Mode;
use crate::config::ProxyConfig;
use crate::discovery::Discovery;
use crate::drain::{self, DrainTiming, Ended, Lifecycle, Requests};
use crate::forward::Forwarder;
use crate::l7::source::{self, ConfigStore};
use crate::listener;
use crate::metrics::{Direction, Metrics};
use crate::orig_dst::OrigDstSource;
use crate::status::{self, StatusState, probes};
use crate::worker::{self, Workers};

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind the {what} listener on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the runtime or the worker threads")]
    Runtime(#[source] io::Error),
    #[error("cannot load the configuration file")]
    Config(#[from] crate::l7::source::LoadError),
}

/// The addresses a bound proxy listens on (useful when ports were 0).
#[derive(Debug, Clone, Default)]
pub struct BoundAddrs {
    pub outbound: Vec<SocketAddr>,
    pub inbound: Vec<SocketAddr>,
    pub status: Vec<SocketAddr>,
    pub health: Vec<SocketAddr>,
    pub stats: Vec<SocketAddr>,
    /// Loopback only.
    pub admin: Vec<SocketAddr>,
}

/// A proxy whose listeners are all bound, ready to run.
#[derive(Debug)]
pub struct BoundProxy {
    config: ProxyConfig,
    orig_dst: Arc<dyn OrigDstSource>,
    metrics: Arc<Metrics>,
    /// The traffic model (`--config-file` or discovery), when given.
    mesh: Option<Arc<ConfigStore>>,
    discovery: Option<Arc<Discovery>>,
    lifecycle: Lifecycle,
    requests: Requests,
    /// The capture listeners of each worker (outbound, inbound), one socket per worker and
    /// address in one `SO_REUSEPORT` group.
    capture: Vec<CaptureListeners>,
    /// One thread per worker, idle until [`BoundProxy::run`] hands it its listeners.
    workers: Workers,
    status: Vec<TcpListener>,
    health: Vec<TcpListener>,
    stats: Vec<TcpListener>,
    admin: Vec<TcpListener>,
    addrs: BoundAddrs,
}

impl BoundProxy {
    /// Binds every listener or fails naming the one that could not be bound.
    pub fn bind(config: ProxyConfig, orig_dst: Arc<dyn OrigDstSource>) -> Result<Self, ServeError> {
        let ports = config.ports;
        let v6 = config.ipv6;
        let mut addrs = BoundAddrs::default();
        let count = config.concurrency.max(1);
        let outbound = bind_capture("outbound", ports.outbound, v6, count, &mut addrs.outbound)?;
        let inbound = bind_capture("inbound", ports.inbound, v6, count, &mut addrs.inbound)?;
        let capture = outbound
            .into_iter()
            .zip(inbound)
            .map(|(outbound, inbound)| CaptureListeners { outbound, inbound })
            .collect();
        let status = on_runtime(
            "status",
            bind_all("status", ports.status, v6, &mut addrs.status)?,
        )?;
        let health = on_runtime(
            "health",
            bind_all("health", ports.health, v6, &mut addrs.health)?,
        )?;
        let stats = on_runtime(
            "stats",
            bind_all("stats", ports.stats, v6, &mut addrs.stats)?,
        )?;
        let admin = on_runtime(
            "admin",
            bind_loopback("admin", ports.admin, v6, &mut addrs.admin)?,
        )?;
        let workers = Workers::spawn(count).map_err(ServeError::Runtime)?;
        let (lifecycle, requests) = Lifecycle::new();
        let metrics = Arc::new(Metrics::new());
        let discovery = config.discovery.clone().map(|settings| {
            Discovery::new(
                settings,
                &config.workload,
                metrics.l7.clone(),
                metrics.discovery.clone(),
            )
        });
        let mesh = match (&config.config_file, &discovery) {
            (Some(path), _) => Some(ConfigStore::open(path, metrics.l7.clone())?),
            (None, Some(discovery)) => Some(discovery.store.clone()),
            (None, None) => None,
        };
        Ok(BoundProxy {
            config,
            orig_dst,
            metrics,
            mesh,
            discovery,
            lifecycle,
            requests,
            capture,
            workers,
            status,
            health,
            stats,
            admin,
            addrs,
        })
    }

    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.clone()
    }

    /// Serves until `signal` (SIGTERM) or `/quitquitquit`, then drains and returns.
    pub async fn run(self, signal: impl Future<Output = ()>) -> Ended {
        let BoundProxy {
            config,
            orig_dst,
            metrics,
            mesh,
            discovery,
            lifecycle,
            requests,
            capture,
            mut workers,
            status,
            health,
            stats,
            admin,
            addrs,
        } = self;
        if let Some(store) = mesh.as_ref().filter(|s| s.path().is_some()) {
            servers_watch(store.clone());
        }
        if let Some(discovery) = &discovery {
            discovery.start(&lifecycle);
        }
        let app_ip = probes::default_probe_ip(config.workload.instance_ip);
        let state = StatusState {
            lifecycle: lifecycle.clone(),
            metrics: metrics.clone(),
            probers: Arc::new(config.probers.clone()),
            scrape: config.scrape.clone().map(Arc::new),
            app_ip,
        };
        let mut servers = JoinSet::new();
        let routers = [
            (status, status::status_router(state)),
            (health, status::health_router(lifecycle.clone())),
            (stats, status::stats_router(metrics.clone())),
            (
                admin,
                crate::admin::admin_router(crate::admin::AdminState {
                    store: mesh.clone(),
                    metrics: metrics.clone(),
                }),
            ),
        ];
        for (listeners, router) in routers {
            for listener in listeners {
                servers.spawn(status::serve::serve(
                    listener,
                    router.clone(),
                    config.http_limits,
                    metrics.http_connections_refused(),
                ));
            }
        }

        let capture_ports = vec![config.ports.outbound, config.ports.inbound];
        let workload = Arc::new(config.workload.clone());
        let l7 = mesh.as_ref().map(|store| {
            Arc::new(crate::l7::http::Outbound::new(
                store.clone(),
                metrics.l7.clone(),
                workload.clone(),
                config.connect_timeout,
                config.protocol_detection_timeout,
            ))
        });
        let l7_inbound = mesh.as_ref().map(|store| {
            Arc::new(crate::l7::inbound::Inbound::new(
                store.clone(),
                metrics.l7.clone(),
                workload.clone(),
                config.connect_timeout,
                config.protocol_detection_timeout,
            ))
        });
        let tracker = TaskTracker::new();
        let forwarder = |direction: Direction| {
            Arc::new(Forwarder {
                direction,
                orig_dst: orig_dst.clone(),
                connect_timeout: config.connect_timeout,
                relay: config.relay,
                metrics: metrics.clone(),
                workload: workload.clone(),
                capture_ports: capture_ports.clone(),
                close: lifecycle.connections_token(),
                l7: l7.clone().filter(|_| direction == Direction::Outbound),
                discovery: discovery
                    .clone()
                    .filter(|_| direction == Direction::Outbound),
                l7_inbound: l7_inbound
                    .clone()
                    .filter(|_| direction == Direction::Inbound),
            })
        };
        let (outbound, inbound) = (
            forwarder(Direction::Outbound),
            forwarder(Direction::Inbound),
        );
        let assignments = capture
            .into_iter()
            .map(|listeners| worker::Assignment {
                listeners: listeners
                    .outbound
                    .into_iter()
                    .map(|l| (l, outbound.clone()))
                    .chain(listeners.inbound.into_iter().map(|l| (l, inbound.clone())))
                    .collect(),
            })
            .collect();
        workers.start(assignments, &lifecycle.accept_token(), &tracker);
        // The SIGTERM/Ctrl-C handlers are installed when the signal future is first polled:
        // do it before readiness, so a SIGTERM sent as soon as `/healthz/ready` says 200 is
        // caught (else the default action kills the process, exit by signal, no drain).
        let mut signal = std::pin::pin!(signal);
        let mut fired = false;
        std::future::poll_fn(|cx| {
            fired = signal.as_mut().poll(cx).is_ready();
            std::task::Poll::Ready(())
        })
        .await;
        // A finished future must not be polled again.
        let signal = async move {
            if !fired {
                signal.await;
            }
        };
        lifecycle.mark_listening();
        tracing::info!(
            outbound = ?addrs.outbound,
            inbound = ?addrs.inbound,
            status = ?addrs.status,
            workload = %workload.name,
            workers = workers.len(),
            probes = config.probers.len(),
            "proxy ready"
        );
        let timing = DrainTiming {
            drain_duration: config.drain_duration,
            termination_grace: config.termination_grace,
            exit_on_zero_active_connections: config.exit_on_zero_active_connections,
            minimum_drain_duration: config.minimum_drain_duration,
        };
        let ended = drain::coordinate(&lifecycle, requests, signal, timing, &tracker).await;
        workers.accepting_stopped().await;
        workers.exit().await;
        servers.abort_all();
        tracing::info!(?ended, "proxy stopped");
        ended
    }
}

/// Polls the configuration file for the life of the runtime.
fn servers_watch(store: Arc<ConfigStore>) {
    tokio::spawn(store.watch(
        source::POLL_INTERVAL,
        tokio_util::sync::CancellationToken::new(),
    ));
}

/// The capture listeners of one worker.
#[derive(Debug)]
struct CaptureListeners {
    outbound: Vec<std::net::TcpListener>,
    inbound: Vec<std::net::TcpListener>,
}

/// [`bind_all`] with `SO_REUSEPORT`, once per worker: the first worker's sockets fix the
/// port (the kernel's, for port 0), the others join their groups.
fn bind_capture(
    what: &'static str,
    port: u16,
    ipv6: Ipv6Mode,
    workers: usize,
    bound: &mut Vec<SocketAddr>,
) -> Result<Vec<Vec<std::net::TcpListener>>, ServeError> {
    let unspecified = (Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED);
    let first = bind_pair(what, unspecified, port, ipv6, true, bound)?;
    let mut all = vec![first];
    for _ in 1..workers {
        let listeners = bound
            .iter()
            .map(|addr| {
                listener::bind_std(*addr, true).map_err(|source| ServeError::Bind {
                    what,
                    addr: *addr,
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        all.push(listeners);
    }
    Ok(all)
}

/// Registers listeners bound by [`bind_pair`] with the current runtime.
fn on_runtime(
    what: &'static str,
    listeners: Vec<std::net::TcpListener>,
) -> Result<Vec<TcpListener>, ServeError> {
    listeners
        .into_iter()
        .map(|listener| {
            let addr = local_addr(&listener, SocketAddr::from(([0, 0, 0, 0], 0)));
            TcpListener::from_std(listener).map_err(|source| ServeError::Bind {
                what,
                addr,
                source,
            })
        })
        .collect()
}

/// Binds `0.0.0.0:port`, and `[::]:port` when IPv6 is on (or available, for `auto`).
fn bind_all(
    what: &'static str,
    port: u16,
    ipv6: Ipv6Mode,
    bound: &mut Vec<SocketAddr>,
) -> Result<Vec<std::net::TcpListener>, ServeError> {
    let unspecified = (Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED);
    bind_pair(what, unspecified, port, ipv6, false, bound)
}

/// Binds `127.0.0.1:port`, and `[::1]:port` when IPv6 is on (or available, for `auto`).
fn bind_loopback(
    what: &'static str,
    port: u16,
    ipv6: Ipv6Mode,
    bound: &mut Vec<SocketAddr>,
) -> Result<Vec<std::net::TcpListener>, ServeError> {
    let loopback = (Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
    bind_pair(what, loopback, port, ipv6, false, bound)
}

/// Binds the IPv4 address, then the IPv6 one on the same port (the one the kernel gave, for
/// port 0) unless IPv6 is off; with `auto` a host without IPv6 is not an error.
fn bind_pair(
    what: &'static str,
    (ip4, ip6): (Ipv4Addr, Ipv6Addr),
    port: u16,
    ipv6: Ipv6Mode,
    reuse_port: bool,
    bound: &mut Vec<SocketAddr>,
) -> Result<Vec<std::net::TcpListener>, ServeError> {
    let mut listeners = Vec::new();
    let v4 = SocketAddr::new(IpAddr::V4(ip4), port);
    let listener = listener::bind_std(v4, reuse_port).map_err(|source| ServeError::Bind {
        what,
        addr: v4,
        source,
    })?;
    let port = local_addr(&listener, v4).port();
    bound.push(local_addr(&listener, v4));
    listeners.push(listener);
    if ipv6 != Ipv6Mode::False {
        let v6 = SocketAddr::new(IpAddr::V6(ip6), port);
        match listener::bind_std(v6, reuse_port) {
            Ok(listener) => {
                bound.push(local_addr(&listener, v6));
                listeners.push(listener);
            }
            Err(error) if ipv6 == Ipv6Mode::Auto && ipv6_unavailable(&error) => {
                tracing::debug!(%error, what, %v6, "no IPv6 listener: IPv6 is not available");
            }
            Err(source) => {
                return Err(ServeError::Bind {
                    what,
                    addr: v6,
                    source,
                });
            }
        }
    }
    Ok(listeners)
}

fn local_addr(listener: &std::net::TcpListener, requested: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(requested)
}

fn ipv6_unavailable(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(nix::libc::EAFNOSUPPORT | nix::libc::EADDRNOTAVAIL | nix::libc::EPROTONOSUPPORT)
    )
}

/// Runs the proxy until SIGTERM/SIGINT or `/quitquitquit`: captured traffic on `concurrency`
/// worker threads ([`crate::worker`]), the status and admin ports, configuration and discovery
/// on a runtime of one more thread.
pub fn run(config: ProxyConfig, orig_dst: Arc<dyn OrigDstSource>) -> Result<Ended, ServeError> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let proxy = BoundProxy::bind(config, orig_dst)?;
        Ok(proxy.run(outrigger_runtime::shutdown_signal()).await)
    })
}

/// Each relayed connection holds two descriptors: lift the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "cannot raise the open file limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open file limit"),
    }
}
