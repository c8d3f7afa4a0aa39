//! The outrigger-proxy data plane and status server.
//!
//! Redirected outbound (15001) and inbound (15006) connections are relayed to their original
//! destination; the status ports answer health, app probes, metrics and lifecycle calls.

pub mod addr;
pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod discovery;
pub mod drain;
pub mod forward;
pub mod hooks;
pub mod inbound;
pub mod l7;
pub mod listener;
pub mod metrics;
pub mod names;
pub mod orig_dst;
pub mod outbound;
pub mod relay;
pub mod server;
pub mod splice;
pub mod status;
pub mod worker;
pub mod workload;

use std::sync::Arc;

use cli::{Cli, Command};
use config::{ConfigError, EnvSource, ProxyConfig};

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error("the proxy failed")]
    Serve(#[from] server::ServeError),
    #[error(transparent)]
    Command(#[from] hooks::CommandError),
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
}

/// Runs the parsed command line with the given environment.
pub fn run(cli: Cli, vars: &EnvSource) -> Result<(), RunError> {
    match cli.command {
        Command::Run(args) => {
            let config = ProxyConfig::resolve(&args, vars)?;
            server::run(config, Arc::new(orig_dst::SocketOrigDst))?;
            Ok(())
        }
        Command::Wait(args) => Ok(block_on(hooks::wait_ready(
            args.health_port,
            args.timeout,
        ))??),
        Command::Drain(args) => Ok(block_on(hooks::drain(args.status_port))??),
    }
}

fn block_on<T>(future: impl Future<Output = T>) -> Result<T, RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    Ok(runtime.block_on(future))
}
