//! The node installer: parses flags, sets up logging, runs the installer agent, the readiness and
//! metrics server and the repair loop until SIGTERM, then uninstalls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use outrigger_api::names::env;
use outrigger_cni::config::InstallerPods;
use outrigger_cni::installer::kubeconfig::{KubeconfigSource, server_url};
use outrigger_cni::installer::{Installer, InstallerSettings, server};
use outrigger_cni::metrics::Metrics;
use outrigger_cni::names;
use outrigger_cni::repair::{self, RepairMode};
use outrigger_runtime::logging::{self, FILTER_ENV, LogFormat, Logging};
use outrigger_runtime::{error_chain, shutdown_signal};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Repair {
    Delete,
    Label,
    Off,
}

#[derive(Debug, Parser)]
#[command(
    name = "outrigger-install-cni",
    about = "Installs and maintains the outrigger-cni chained plugin on this node"
)]
struct Args {
    /// Host CNI bin directory as mounted in this container.
    #[arg(long, env = "CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// Host CNI config directory as mounted in this container.
    #[arg(long, env = "CNI_CONF_DIR", default_value = "/host/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The CNI config directory as seen on the host (written into our chain entry).
    #[arg(long, env = "HOST_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    host_cni_conf_dir: PathBuf,
    /// The plugin binary shipped in this image.
    #[arg(
        long,
        env = "PLUGIN_BINARY",
        default_value = "/opt/outrigger/bin/outrigger-cni"
    )]
    plugin_binary: PathBuf,
    /// Namespaces whose pods the plugin passes through (comma-separated).
    #[arg(long, env = "EXCLUDE_NAMESPACES", value_delimiter = ',', default_values_t = outrigger_api::names::IGNORED_NAMESPACES.iter().map(|s| s.to_string()))]
    exclude_namespaces: Vec<String>,
    /// The plugin's log level.
    #[arg(long, env = "PLUGIN_LOG_LEVEL", default_value = "info")]
    plugin_log_level: String,
    /// The plugin's log file on the host.
    #[arg(long, env = "PLUGIN_LOG_FILE")]
    plugin_log_file: Option<PathBuf>,
    /// This DaemonSet's namespace (its pods are passed through by the plugin).
    #[arg(long, env = env::POD_NAMESPACE, default_value = names::DEFAULT_INSTALLER_NAMESPACE)]
    pod_namespace: String,
    /// Name prefix of this DaemonSet's pods.
    #[arg(long, env = "INSTALLER_POD_PREFIX", default_value = names::DEFAULT_INSTALLER_POD_PREFIX)]
    installer_pod_prefix: String,
    /// ServiceAccount token and CA for the plugin's kubeconfig.
    #[arg(long, env = "SA_TOKEN_PATH", default_value_os_t = PathBuf::from(names::SERVICE_ACCOUNT_DIR).join("token"))]
    token_path: PathBuf,
    #[arg(long, env = "SA_CA_PATH", default_value_os_t = PathBuf::from(names::SERVICE_ACCOUNT_DIR).join("ca.crt"))]
    ca_path: PathBuf,
    /// API server URL for the plugin; default from KUBERNETES_SERVICE_HOST/PORT.
    #[arg(long, env = "API_SERVER")]
    api_server: Option<String>,
    /// Readiness (/readyz) and metrics (/metrics) listen address.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8000")]
    listen: SocketAddr,
    /// Periodic re-check interval in seconds (besides watching the config directory).
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 5)]
    resync_seconds: u64,
    /// What the repair loop does with pods that raced the plugin.
    #[arg(long, env = "REPAIR_MODE", value_enum, default_value = "delete")]
    repair: Repair,
    /// This node's name (downward API), for the repair loop's pod watch.
    #[arg(long, env = names::ENV_NODE_NAME)]
    node_name: Option<String>,
    /// Log filter of the installer itself (a level or `RUST_LOG` directives); default: `RUST_LOG`,
    /// else `info`. An invalid filter falls back to `info` with a warning.
    #[arg(long, env = "LOG_LEVEL")]
    log_level: Option<String>,
    /// Log line format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// JSON log lines (same as `--log-format json`; kept for existing manifests).
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rust_log = std::env::var(FILTER_ENV).ok();
    logging::init(Logging {
        format: if args.log_json {
            LogFormat::Json
        } else {
            args.log_format
        },
        directives: args.log_level.as_deref().or(rust_log.as_deref()),
        default: "info",
        file: None,
    });
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let error = error_chain(err.as_ref());
            tracing::error!(%error, "outrigger-install-cni failed");
            ExitCode::FAILURE
        }
    }
}

fn api_server(args: &Args) -> anyhow::Result<String> {
    if let Some(server) = &args.api_server {
        return Ok(server.clone());
    }
    let host = std::env::var(names::ENV_KUBERNETES_SERVICE_HOST)
        .context("--api-server not given and KUBERNETES_SERVICE_HOST is not set")?;
    let port = std::env::var(names::ENV_KUBERNETES_SERVICE_PORT).unwrap_or_else(|_| "443".into());
    Ok(server_url(&host, &port))
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let settings = InstallerSettings {
        plugin_source: args.plugin_binary.clone(),
        cni_bin_dir: args.cni_bin_dir.clone(),
        cni_conf_dir: args.cni_conf_dir.clone(),
        host_cni_conf_dir: args.host_cni_conf_dir.clone(),
        kubeconfig: KubeconfigSource {
            token_path: args.token_path.clone(),
            ca_path: args.ca_path.clone(),
            server: api_server(&args)?,
        },
        exclude_namespaces: args.exclude_namespaces.clone(),
        log_level: args.plugin_log_level.clone(),
        log_file: args.plugin_log_file.clone(),
        installer_pods: InstallerPods {
            namespace: args.pod_namespace.clone(),
            name_prefix: args.installer_pod_prefix.clone(),
        },
        resync: Duration::from_secs(args.resync_seconds.max(1)),
    };
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Metrics::new();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let app = server::app(ready.clone(), metrics.clone());
    let http = tokio::spawn(async move { axum::serve(listener, app).await });

    let repair_mode = match args.repair {
        Repair::Delete => Some(RepairMode::Delete),
        Repair::Label => Some(RepairMode::Label),
        Repair::Off => None,
    };
    if let Some(mode) = repair_mode {
        let node = args
            .node_name
            .clone()
            .context("the repair loop needs --node-name / NODE_NAME")?;
        let client = kube::Client::try_default()
            .await
            .context("building the in-cluster API client")?;
        let metrics = metrics.clone();
        let instance = std::env::var(env::POD_NAME).ok();
        tokio::spawn(async move {
            repair::controller::run(client, &node, mode, metrics, instance).await
        });
    }

    let installer = Installer::new(settings);
    let result = installer.run(ready, metrics, shutdown_signal()).await;
    http.abort();
    result.context("installer")
}
