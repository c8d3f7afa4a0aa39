//! The chained CNI plugin: reads the invocation, runs it, writes the reply, picks the exit code.

use std::io::{Read, Write};
use std::process::ExitCode;

use outrigger_cni::cni::{CniError, Command, ErrorCode};
use outrigger_cni::config::PluginConfig;
use outrigger_cni::{node::RealNode, plugin};
use outrigger_runtime::logging::{self, LogFormat, Logging};

/// Logs go to stderr (and the configuration's `log_file`), never to stdout: stdout carries the
/// CNI reply. A `log_level` that is not a valid filter falls back to `info` with a warning.
fn init_logging(level: Option<&str>, file: Option<&std::path::Path>) {
    logging::init(Logging {
        format: LogFormat::Text,
        directives: level,
        default: "info",
        file,
    });
}

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut stdin) {
        return reply(
            Err(CniError::new(ErrorCode::Io, "reading stdin").with_details(err.to_string())),
            None,
        );
    }
    let version = PluginConfig::sniff_version(&stdin);
    let command = match Command::parse(|key| std::env::var(key).ok(), &stdin) {
        Ok(command) => command,
        Err(err) => {
            init_logging(None, None);
            tracing::error!(error = %err, "invalid invocation");
            return reply(Err(err), version);
        }
    };
    let version = command.version();
    if let Command::Add(inv) | Command::Del(inv) | Command::Check(inv) = &command {
        init_logging(Some(&inv.config.log_level), inv.config.log_file.as_deref());
    } else if let Command::Status(config) | Command::Gc(config) = &command {
        init_logging(Some(&config.log_level), config.log_file.as_deref());
    }
    reply(run(command), version)
}

fn run(command: Command) -> Result<Option<serde_json::Value>, CniError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            CniError::new(ErrorCode::Io, "starting the async runtime").with_details(err.to_string())
        })?;
    runtime.block_on(plugin::run(command, &RealNode))
}

/// Writes the result or the error JSON to stdout; exit code 0 or 1 as the spec asks.
fn reply(
    outcome: Result<Option<serde_json::Value>, CniError>,
    version: Option<outrigger_cni::cni::CniVersion>,
) -> ExitCode {
    let (text, code) = match outcome {
        Ok(Some(value)) => (value.to_string(), ExitCode::SUCCESS),
        Ok(None) => (String::new(), ExitCode::SUCCESS),
        Err(err) => {
            tracing::error!(code = err.code.as_u32(), msg = %err.msg, details = %err.details, "command failed");
            (err.to_json(version), ExitCode::FAILURE)
        }
    };
    let mut stdout = std::io::stdout().lock();
    if !text.is_empty() && (writeln!(stdout, "{text}").is_err() || stdout.flush().is_err()) {
        return ExitCode::FAILURE;
    }
    code
}
