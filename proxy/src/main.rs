//! `outrigger-proxy`: parses arguments, sets up logging, runs, maps errors to the exit code.

use std::process::ExitCode;

use clap::Parser;
use outrigger_proxy::cli::{Cli, Command, LogFormat};
use outrigger_proxy::config::{EnvSource, log_format};
use outrigger_proxy::report::error_chain;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let vars = EnvSource::from_map(std::env::vars());
    let format = match &cli.command {
        Command::Run(args) => log_format(args, &vars).unwrap_or(LogFormat::Text),
        _ => LogFormat::Text,
    };
    outrigger_proxy::logging::init(format, &vars);
    match outrigger_proxy::run(cli, &vars) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("outrigger-proxy: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}
