//! Tracing setup: text or JSON to stderr, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::config::EnvSource;

/// Installs the global subscriber. A bad `RUST_LOG` falls back to `info` and says so.
pub fn init(format: LogFormat, vars: &EnvSource) {
    let directives = vars.get("RUST_LOG").unwrap_or("info");
    let (filter, bad_filter) = match EnvFilter::try_new(directives) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(error) = bad_filter {
        tracing::warn!(%error, directives, "ignoring invalid RUST_LOG");
    }
}
