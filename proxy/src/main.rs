//! `outrigger-proxy`: parses arguments, sets up logging, runs, maps errors to the exit code.

use std::process::ExitCode;

use clap::Parser;
use outrigger_proxy::cli::{Cli, Command, LogFormat};
use outrigger_proxy::config::{EnvSource, log_format};
use outrigger_proxy::names::DEFAULT_LOG_FILTER;
use outrigger_runtime::error_chain;
use outrigger_runtime::logging::{FILTER_ENV, Logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let vars = EnvSource::from_map(std::env::vars());
    let format = match &cli.command {
        // A bad format is reported by `run` itself, with the variable's name.
        Command::Run(args) => log_format(args, &vars).unwrap_or_default(),
        _ => LogFormat::default(),
    };
    outrigger_runtime::logging::init(Logging {
        format,
        directives: vars.get(FILTER_ENV),
        default: DEFAULT_LOG_FILTER,
        file: None,
    });
    match outrigger_proxy::run(cli, &vars) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("outrigger-proxy: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}
