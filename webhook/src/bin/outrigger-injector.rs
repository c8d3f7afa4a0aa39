//! `outrigger-injector`: the sidecar injection admission webhook (HTTPS).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use outrigger_runtime::logging::{self, LogFormat, Logging};
use outrigger_webhook::server::selfsigned::{DEFAULT_NAMESPACE, DEFAULT_SERVICE, ServiceNames};
use outrigger_webhook::server::tls::CertPaths;
use outrigger_webhook::server::{self, Options, TlsSource};
use outrigger_webhook::server::{body_budget, replica_memo, serve};

/// Each admission request builds and drops thousands of small JSON nodes; under load glibc
/// malloc/free took about a third of the server's CPU (perf), mimalloc much less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sidecar injection admission webhook.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// HTTPS listen address.
    #[arg(long, default_value = server::DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Serving certificate chain (PEM), reloaded when it changes. Needs --tls-key.
    #[arg(long, requires = "tls_key", conflicts_with = "self_signed_dir")]
    tls_cert: Option<PathBuf>,
    /// Serving private key (PEM). Needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Directory for a generated CA and serving certificate (ca.crt, tls.crt, tls.key);
    /// created unless present. The default when no --tls-cert is given.
    #[arg(long, default_value_os_t = default_self_signed_dir())]
    self_signed_dir: PathBuf,
    /// Service name the certificate is generated for.
    #[arg(long, default_value = DEFAULT_SERVICE)]
    service_name: String,
    /// Namespace the certificate is generated for.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    service_namespace: String,
    /// Configuration directory (config.yaml, values.yaml, mesh.yaml), watched and reloaded.
    /// Without it the embedded default configuration is used.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Keep the caBundle of every webhook in this MutatingWebhookConfiguration holding the
    /// serving CA and every other CA a live replica serves with (self-managed certificates;
    /// needs RBAC get/list/watch/patch on it).
    #[arg(long)]
    webhook_config: Option<String>,
    /// CA certificate (PEM) to put in the caBundle; defaults to the self-signed CA.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Self-signed mode for several replicas: share the CA through this Secret in
    /// --service-namespace (the first replica creates it, the others read it; needs RBAC get and
    /// create on Secrets there). Each replica issues its own serving certificate from it.
    #[arg(long, conflicts_with = "tls_cert")]
    ca_secret: Option<String>,
    /// Only parse and check the flags, print the resulting settings, and exit.
    #[arg(long)]
    check_args: bool,
    /// Prometheus metrics address (plain HTTP).
    #[arg(long, default_value = server::DEFAULT_METRICS_ADDR)]
    metrics_addr: SocketAddr,
    /// Seconds to let in-flight requests finish after SIGTERM.
    #[arg(long, default_value_t = server::DEFAULT_GRACE.as_secs())]
    grace_period_seconds: u64,
    /// Seconds a client gets for the TLS handshake, the request headers (HTTP/1, and the first
    /// request of an HTTP/2 connection), and the body (each), on both ports.
    #[arg(long, default_value_t = server::DEFAULT_READ_TIMEOUT.as_secs())]
    read_timeout_seconds: u64,
    /// Seconds a connection (HTTP/1 or HTTP/2, either port) may stay open with no request in
    /// flight before it is closed.
    #[arg(long, default_value_t = serve::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout_seconds: u64,
    /// Connections the HTTPS port serves at once; more wait in the accept queue until one ends.
    #[arg(long, default_value_t = serve::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Connections the metrics port serves at once.
    #[arg(long, default_value_t = serve::DEFAULT_METRICS_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    metrics_max_connections: u64,
    /// Seconds to keep serving after SIGTERM, with /readyz failing, before stopping accepting
    /// and draining (so the endpoint is gone before the server stops); then
    /// --grace-period-seconds for in-flight requests.
    #[arg(long, default_value_t = server::DEFAULT_SHUTDOWN_DELAY.as_secs())]
    shutdown_delay_seconds: u64,
    /// Bytes of answers the replica memo keeps at most (replicas of a workload are answered
    /// from it); 0 turns it off. Keep it well under the container's memory limit.
    #[arg(long, default_value_t = replica_memo::DEFAULT_BUDGET_BYTES)]
    replica_memo_bytes: usize,
    /// Pods whose JSON text is longer are not memoized (always decoded and injected).
    #[arg(long, default_value_t = replica_memo::DEFAULT_MAX_POD_BYTES)]
    replica_memo_max_pod_bytes: usize,
    /// Bytes of request bodies read and processed at once, over all connections; a request
    /// whose body does not fit waits (up to --read-timeout-seconds, then 503) before its body is
    /// read. A body larger than this runs alone. A large pod in flight costs about 10 times its body.
    #[arg(long, default_value_t = body_budget::DEFAULT_BUDGET_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_inflight_body_bytes: usize,
    /// Log format on stderr: text or json (filter: RUST_LOG, default info).
    #[arg(long, default_value = "text", value_name = "text|json")]
    log_format: LogFormat,
}

fn default_self_signed_dir() -> PathBuf {
    std::env::temp_dir().join("outrigger-certs")
}

impl Args {
    fn options(self) -> Options {
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => TlsSource::Files(CertPaths { cert, key }),
            _ => TlsSource::SelfSigned {
                dir: self.self_signed_dir,
                names: ServiceNames {
                    service: self.service_name,
                    namespace: self.service_namespace,
                },
            },
        };
        Options {
            addr: self.addr,
            metrics_addr: self.metrics_addr,
            tls,
            config_dir: self.config_dir,
            grace: Duration::from_secs(self.grace_period_seconds),
            read_timeout: Duration::from_secs(self.read_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            // Both at most a million (the flags' range): they fit any usize.
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            metrics_max_connections: usize::try_from(self.metrics_max_connections)
                .unwrap_or(usize::MAX),
            shutdown_delay: Duration::from_secs(self.shutdown_delay_seconds),
            webhook_config: self.webhook_config,
            ca_cert: self.ca_cert,
            ca_secret: self.ca_secret,
            replica_memo: replica_memo::Limits {
                budget_bytes: self.replica_memo_bytes,
                max_pod_bytes: self.replica_memo_max_pod_bytes,
            },
            max_inflight_body_bytes: self.max_inflight_body_bytes,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let directives = std::env::var(logging::FILTER_ENV).ok();
    logging::init(Logging {
        format: args.log_format,
        directives: directives.as_deref(),
        default: "info",
        file: None,
    });
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("outrigger-injector: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.check_args {
        println!("{:#?}", args.options());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(server::run(
        args.options(),
        outrigger_runtime::shutdown_signal(),
    ))?;
    Ok(())
}
