//! The HTTPS admission server (`outrigger-injector`) around the injection engine: it adds HTTP,
//! TLS, configuration loading and observability, and nothing about templates.

pub mod admission;
pub mod app;
pub mod body_budget;
pub mod ca_bundle;
pub mod config_reload;
pub mod handshake_log;
pub mod metrics;
pub mod path_env;
pub mod replica_memo;
pub mod review;
pub mod selfsigned;
pub mod serve;
pub mod shared_ca;
pub mod tls;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::net::TcpListener;

use self::config_reload::ConfigStore;
use self::metrics::{Metrics, Reload};
use self::selfsigned::ServiceNames;
use self::tls::{CertPaths, ReloadingResolver};
use outrigger_runtime::error_chain;

/// Default HTTPS address in development.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9443";
/// Default metrics address in development (the manifests use 0.0.0.0:15014).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:15014";
/// Default time a client gets for the TLS handshake, the headers, and the body (each).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default grace period for in-flight requests after SIGTERM.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(15);
/// Default time the injector keeps serving, not ready, after SIGTERM before it drains: long
/// enough for the endpoint removal to reach the API servers (which otherwise still dial a pod
/// that stopped accepting, and with `failurePolicy: Fail` reject pod creations).
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files maintained by someone else (a mounted Secret), reloaded on change.
    Files(CertPaths),
    /// Generated once into a directory (development and self-managed mode).
    SelfSigned { dir: PathBuf, names: ServiceNames },
}

/// Everything `run` needs; the binary builds it from its flags.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub tls: TlsSource,
    pub config_dir: Option<PathBuf>,
    pub grace: Duration,
    /// Time a client gets for the TLS handshake, the headers, and the body (each).
    pub read_timeout: Duration,
    /// A connection with no request in flight is closed after this long (both ports).
    pub idle_timeout: Duration,
    /// Connections served at once on the TLS port and on the metrics port.
    pub max_connections: usize,
    pub metrics_max_connections: usize,
    /// After SIGTERM: keep serving (readiness failing) this long, then stop accepting and drain.
    pub shutdown_delay: Duration,
    /// Keep the caBundle of this MutatingWebhookConfiguration equal to the serving CA.
    pub webhook_config: Option<String>,
    /// The CA for the caBundle; defaults to the self-signed CA.
    pub ca_cert: Option<PathBuf>,
    /// Self-signed mode for several replicas: the CA is shared through this Secret (in the
    /// service namespace), created by the first replica and read by the others.
    pub ca_secret: Option<String>,
    /// How much the replica memo keeps.
    pub replica_memo: replica_memo::Limits,
    /// Request-body bytes in flight at once, over every connection (`body_budget`).
    pub max_inflight_body_bytes: usize,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot load the injector configuration")]
    Config(#[source] outrigger_inject::ConfigError),
    #[error("cannot prepare the self-signed certificates")]
    SelfSigned(#[source] selfsigned::SelfSignedError),
    #[error("cannot load the serving certificate")]
    Tls(#[source] tls::TlsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch for changes")]
    Watch(#[source] watch::WatchError),
    #[error("--webhook-config needs the CA: give --ca-cert, or use --self-signed-dir")]
    NoCa,
    #[error("cannot read the CA certificate {path}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the Kubernetes client for --webhook-config or --ca-secret")]
    Kube(#[source] kube::Error),
    #[error("cannot get the shared CA (--ca-secret)")]
    SharedCa(#[source] shared_ca::SharedCaError),
}

/// Run the injector until `shutdown` resolves; returns once in-flight requests have finished
/// or the grace period is over.
pub async fn run(
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::new());
    let config = Arc::new(
        ConfigStore::load(options.config_dir.as_deref(), metrics.clone())
            .map_err(ServerError::Config)?,
    );
    let (cert_paths, self_signed_ca) = match &options.tls {
        TlsSource::Files(paths) => (paths.clone(), None),
        TlsSource::SelfSigned { dir, names } => match &options.ca_secret {
            Some(secret) => {
                let client = kube::Client::try_default()
                    .await
                    .map_err(ServerError::Kube)?;
                let shared = shared_ca::CaSecret {
                    namespace: names.namespace.clone(),
                    name: secret.clone(),
                };
                let (files, obtained) = shared
                    .ensure_dir(client, dir, names)
                    .await
                    .map_err(ServerError::SharedCa)?;
                tracing::info!(secret = %format!("{}/{}", shared.namespace, shared.name), ?obtained, dir = %dir.display(), "shared CA; serving certificate issued from it");
                (files.serving, Some(files.ca))
            }
            None => {
                let (files, created) =
                    selfsigned::ensure(dir, names).map_err(ServerError::SelfSigned)?;
                tracing::info!(dir = %dir.display(), created, ca = %files.ca.display(), "self-signed certificates");
                (files.serving, Some(files.ca))
            }
        },
    };
    let resolver = Arc::new(ReloadingResolver::load(cert_paths.clone()).map_err(ServerError::Tls)?);
    let tls_config = tls::server_config(resolver.clone()).map_err(ServerError::Tls)?;

    let mut background = Vec::new();
    let cert_metrics = metrics.clone();
    let watched = resolver.clone();
    background.push(
        watch::spawn(cert_paths.watch_dirs(), move || match watched.reload() {
            Ok(true) => {
                cert_metrics.cert_reloaded(Reload::Success);
                tracing::info!(cert = %watched.paths().cert.display(), "serving certificate reloaded");
            }
            Ok(false) => {}
            Err(error) => {
                cert_metrics.cert_reloaded(Reload::Failure);
                tracing::error!(error = %error_chain(&error), "certificate reload refused; the previous one keeps serving");
            }
        })
        .map_err(ServerError::Watch)?,
    );
    if let Some(dir) = config.dir() {
        let store = config.clone();
        background.push(
            watch::spawn(vec![dir.to_path_buf()], move || {
                // `reload` logs and counts both outcomes.
                let _ = store.reload();
            })
            .map_err(ServerError::Watch)?,
        );
    }

    if let Some(name) = &options.webhook_config {
        let ca_path = options
            .ca_cert
            .clone()
            .or(self_signed_ca)
            .ok_or(ServerError::NoCa)?;
        background.extend(spawn_ca_bundle_keeper(name, ca_path).await?);
    }

    let listener = bind(options.addr).await?;
    let metrics_listener = bind(options.metrics_addr).await?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: options.addr,
        source,
    })?;
    let metrics_local = metrics_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: options.metrics_addr,
            source,
        })?;

    // SIGTERM: not ready at once, keep serving for the shutdown delay (the API servers learn of
    // the endpoint's removal meanwhile), then stop accepting and drain.
    let ready_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let delay = options.shutdown_delay;
    let stop = {
        let ready = ready_flag.clone();
        async move {
            shutdown.await;
            ready.store(false, Ordering::Release);
            tracing::info!(
                shutdown_delay_seconds = delay.as_secs_f64(),
                "SIGTERM: not ready; serving until the shutdown delay is over"
            );
            tokio::time::sleep(delay).await;
        }
    }
    .shared();
    let mut state = app::AppState::with_replica_memo(config, metrics.clone(), options.replica_memo);
    state.body_timeout = options.read_timeout;
    state.bodies = body_budget::BodyBudget::new(options.max_inflight_body_bytes);
    state.ready = ready_flag.clone();
    let limits = serve::Limits {
        read_timeout: options.read_timeout,
        idle_timeout: options.idle_timeout,
        max_connections: options.max_connections,
        grace: options.grace,
    };
    let metrics_server = tokio::spawn(serve::serve_plain(
        metrics_listener,
        app::metrics_app(metrics.clone()),
        stop.clone(),
        serve::Limits {
            max_connections: options.metrics_max_connections,
            ..limits
        },
    ));
    ready_flag.store(true, Ordering::Release);
    tracing::info!(addr = %local, metrics_addr = %metrics_local, "listening");

    let handshakes = handshake_log::HandshakeLog::new(metrics);
    serve::serve_tls(
        listener,
        tls_config,
        app::app(state),
        stop,
        limits,
        handshakes,
    )
    .await;
    for task in background {
        task.abort();
    }
    if let Err(error) = metrics_server.await {
        tracing::warn!(%error, "metrics server task failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Read the CA, start the keeper, and re-read the CA when its directory changes.
async fn spawn_ca_bundle_keeper(
    name: &str,
    ca_path: PathBuf,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServerError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| ServerError::ReadCa {
            path: path.clone(),
            source,
        })
    };
    let (tx, rx) = tokio::sync::watch::channel(read(&ca_path)?);
    let client = kube::Client::try_default()
        .await
        .map_err(ServerError::Kube)?;
    let keeper = tokio::spawn(ca_bundle::CaBundleKeeper::new(client, name, rx).run());
    let watched = ca_path.clone();
    let ca_watch = watch::spawn(vec![tls::parent_dir(&ca_path)], move || {
        match read(&watched) {
            Ok(pem) => {
                tx.send_if_modified(|current| {
                    let changed = *current != pem;
                    *current = pem;
                    changed
                });
            }
            Err(error) => tracing::error!(error = %error_chain(&error), "cannot re-read the CA"),
        }
    })
    .map_err(ServerError::Watch)?;
    Ok(vec![keeper, ca_watch])
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}
