//! `outrigger-pilot`: parses the flags, sets up logging, runs pilot until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use outrigger_api::names::port;
use outrigger_pilot::app::{Debounce, Pilot};
use outrigger_pilot::auth::{Authenticator, ISTIO_CA_AUDIENCE};
use outrigger_runtime::LogFormat;
use outrigger_runtime::logging::Logging;

/// `0.0.0.0:<port>`: pilot serves every proxy of the cluster.
fn any_address(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

/// The control plane: watches the cluster once and streams each proxy its destinations.
#[derive(Debug, Parser)]
#[command(name = "outrigger-pilot", version)]
struct Cli {
    /// Plaintext delta xDS (as istiod's 15010; for tests and in-cluster meshes without TLS).
    #[arg(long, default_value_t = any_address(port::PILOT_XDS), env = "PILOT_XDS_ADDRESS")]
    xds_address: SocketAddr,
    /// TLS delta xDS (as istiod's 15012); needs --tls-cert-file and --tls-key-file.
    #[arg(long, default_value_t = any_address(port::PILOT_XDS_TLS), env = "PILOT_XDS_TLS_ADDRESS")]
    xds_tls_address: SocketAddr,
    /// PEM certificate chain for the TLS port; without it the TLS port is not opened.
    #[arg(long, env = "PILOT_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "PILOT_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// /metrics, /ready, /healthz (as istiod's 15014).
    #[arg(
        long,
        default_value_t = any_address(port::PILOT_MONITORING),
        env = "PILOT_MONITORING_ADDRESS"
    )]
    monitoring_address: SocketAddr,
    /// Audience the proxies' tokens must carry (Istio's istio-token volume).
    #[arg(long, default_value = ISTIO_CA_AUDIENCE, env = "PILOT_TOKEN_AUDIENCE")]
    token_audience: String,
    /// Accept every proxy without a token (local development only).
    #[arg(long)]
    insecure_skip_auth: bool,
    /// Quiet period before a rebuild (Istio's PILOT_DEBOUNCE_AFTER).
    #[arg(long, default_value = "100ms", env = "PILOT_DEBOUNCE_AFTER", value_parser = duration)]
    debounce_after: Duration,
    /// Longest wait before a rebuild (Istio's PILOT_DEBOUNCE_MAX).
    #[arg(long, default_value = "10s", env = "PILOT_DEBOUNCE_MAX", value_parser = duration)]
    debounce_max: Duration,
    /// After SIGTERM: how long open xDS streams may stay before pilot exits anyway (they never
    /// end by themselves; the proxies reconnect to another replica and resubscribe).
    #[arg(long, default_value = "5s", env = "PILOT_SHUTDOWN_DRAIN", value_parser = duration)]
    shutdown_drain: Duration,
    /// Responses sent per xDS stream and not yet answered (ACK/NACK) by the proxy; the rest
    /// wait, planned, in the stream's outbox.
    #[arg(long, default_value_t = outrigger_pilot::xds::DEFAULT_QUEUE_DEPTH, env = "PILOT_XDS_QUEUE_DEPTH")]
    xds_queue_depth: usize,
    /// Responses sent and not yet answered across all xDS streams: bounds the encoded
    /// responses waiting in HTTP/2 buffers while a push goes to every proxy at once.
    #[arg(long, default_value_t = outrigger_pilot::xds::DEFAULT_UNACKED_RESPONSES, env = "PILOT_XDS_UNACKED_RESPONSES")]
    xds_unacked_responses: usize,
    /// How long an unanswered response counts against --xds-unacked-responses (a proxy that
    /// stops reading then holds back only its own stream).
    #[arg(long, default_value = "5s", env = "PILOT_XDS_ACK_WAIT", value_parser = duration)]
    xds_ack_wait: Duration,
    /// HTTP/2 receive window per stream, bytes (the proxies only send small requests and ACKs;
    /// hyper's default is 1 MiB).
    #[arg(long, default_value_t = outrigger_pilot::xds::DEFAULT_STREAM_WINDOW, env = "PILOT_XDS_STREAM_WINDOW")]
    xds_stream_window: u32,
    /// HTTP/2 receive window per connection, bytes (see `DEFAULT_CONNECTION_WINDOW`: keep it
    /// at least ~6.5 times the stream window, or one proxy's burst of ACKs can close its
    /// connection).
    #[arg(long, default_value_t = outrigger_pilot::xds::DEFAULT_CONNECTION_WINDOW, env = "PILOT_XDS_CONNECTION_WINDOW")]
    xds_connection_window: u32,
    #[arg(long, default_value = "json", env = "PILOT_LOG_FORMAT")]
    log_format: LogFormat,
}

/// Views and wire resources are many short-lived allocations per rebuild, beside 2,000
/// long-lived streams. jemalloc keeps the least beyond the live heap: in bench/pilot-load, with
/// 133 MiB live at rest, the RSS was 208 MiB under jemalloc, 274 MiB under mimalloc (250 MiB
/// with its purge delay at 0), and more under glibc malloc. Its options are compiled in from
/// `JEMALLOC_SYS_WITH_MALLOC_CONF` (the repository's `.cargo/config.toml`: two arenas).
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `--features dhat-heap`: every allocation counted by site, the profile written at exit.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

fn duration(text: &str) -> Result<Duration, String> {
    outrigger_api::duration::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = Cli::parse();
    let directives = std::env::var(outrigger_runtime::logging::FILTER_ENV).ok();
    outrigger_runtime::logging::init(Logging {
        format: cli.log_format,
        directives: directives.as_deref(),
        default: "info",
        file: None,
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(error = %error, "cannot start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %outrigger_runtime::error_chain(error.as_ref()), "outrigger-pilot failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server (in-cluster config or KUBECONFIG)")?;
    let auth = if cli.insecure_skip_auth {
        tracing::warn!("--insecure-skip-auth: proxies are not authenticated");
        Authenticator::Disabled
    } else {
        Authenticator::token_review(client.clone(), &cli.token_audience)
    };
    let pilot = Pilot::start(
        client,
        auth,
        Debounce {
            quiet: cli.debounce_after,
            max: cli.debounce_max,
        },
    );
    let monitoring = tokio::net::TcpListener::bind(cli.monitoring_address)
        .await
        .with_context(|| format!("binding the monitoring port {}", cli.monitoring_address))?;
    let router = pilot.monitoring();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(monitoring, router).await {
            tracing::error!(error = %error, "monitoring server ended");
        }
    });
    let drain = cli.shutdown_drain;
    let drained = async move {
        outrigger_runtime::shutdown_signal().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = serve(&cli, &pilot) => result,
        () = drained => {
            tracing::info!(drain = ?drain, "xDS streams still open after the drain period: exiting");
            Ok(())
        }
    }
}

/// The plaintext xDS port, and the TLS one when a certificate is given, until SIGTERM and
/// their streams end.
async fn serve(cli: &Cli, pilot: &Pilot) -> anyhow::Result<()> {
    let windows = |server: tonic::transport::Server| {
        server
            .initial_stream_window_size(cli.xds_stream_window)
            .initial_connection_window_size(cli.xds_connection_window)
    };
    // One server for both ports, so they share the bound on unanswered responses.
    let server = pilot
        .xds()
        .with_queue_depth(cli.xds_queue_depth)
        .with_unacked_responses(cli.xds_unacked_responses)
        .with_ack_wait(cli.xds_ack_wait);
    let xds = || server.clone().into_service();
    let plain = windows(tonic::transport::Server::builder())
        .add_service(xds())
        .serve_with_shutdown(cli.xds_address, outrigger_runtime::shutdown_signal());
    tracing::info!(xds = %cli.xds_address, monitoring = %cli.monitoring_address, "outrigger-pilot listening");
    match (&cli.tls_cert_file, &cli.tls_key_file) {
        (Some(cert), Some(key)) => {
            let cert =
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            let tls = windows(
                outrigger_pilot::app::tls_server(&cert, &key)
                    .context("TLS configuration of the xDS port")?,
            )
            .add_service(xds())
            .serve_with_shutdown(cli.xds_tls_address, outrigger_runtime::shutdown_signal());
            tracing::info!(xds_tls = %cli.xds_tls_address, "TLS xDS listening");
            let (a, b) = tokio::join!(plain, tls);
            a.context("plaintext xDS server")?;
            b.context("TLS xDS server")?;
        }
        _ => plain.await.context("plaintext xDS server")?,
    }
    Ok(())
}

#[cfg(all(test, not(feature = "dhat-heap")))]
mod tests {
    /// The number the repository's jemalloc options (`.cargo/config.toml`) give `option`.
    fn compiled_option<T: std::str::FromStr>(option: &str) -> T {
        let conf = env!("JEMALLOC_SYS_WITH_MALLOC_CONF");
        conf.split(',')
            .find_map(|part| part.strip_prefix(option)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("the build sets {option}: {conf:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{option} is a number: {conf:?}"))
    }

    /// The options `.cargo/config.toml` gives the build (cargo's `[env]` reaches this crate's
    /// compilation too) are the ones the allocator runs with.
    #[test]
    fn the_allocator_runs_with_the_arenas_the_build_sets() {
        // A build without it (outside this repository's `.cargo/config.toml`) does not compile.
        let conf = env!("JEMALLOC_SYS_WITH_MALLOC_CONF");
        let wanted: u32 = compiled_option("narenas");
        assert!(
            std::env::var_os("_RJEM_MALLOC_CONF").is_none(),
            "unset _RJEM_MALLOC_CONF to run this test: it overrides the compiled-in options"
        );
        let arenas = tikv_jemalloc_ctl::opt::narenas::read().expect("jemalloc answers");
        assert_eq!(
            arenas, wanted,
            "jemalloc's arenas, with {conf:?} compiled in"
        );
    }

    /// Large allocations go to jemalloc's huge arena, which returns their pages when they are
    /// freed (`.cargo/config.toml`): the build's options are the ones jemalloc was given.
    #[test]
    fn large_allocations_go_to_the_arena_that_purges_at_once() {
        let conf = env!("JEMALLOC_SYS_WITH_MALLOC_CONF");
        let threshold: usize = compiled_option("oversize_threshold");
        assert!(
            threshold <= 32 * 1024,
            "at most the largest size the thread caches keep: {conf:?}"
        );
        let compiled = tikv_jemalloc_ctl::config::malloc_conf::read().expect("jemalloc answers");
        // tikv-jemalloc-ctl hands the C string back with its terminating NUL.
        assert_eq!(
            compiled.trim_end_matches('\0'),
            conf,
            "jemalloc was built with the repository's options"
        );
    }
}
