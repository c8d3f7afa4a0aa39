//! One logging setup for every binary: `tracing` to stderr (stdout may carry a protocol reply or
//! YAML), text or JSON lines, filtered by `RUST_LOG` with a per-binary default, colour only on a
//! terminal, and an optional copy to a file (the CNI plugin's `log_file`).

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

/// The environment variable every binary reads its filter from.
pub const FILTER_ENV: &str = "RUST_LOG";

/// `--log-format`: human text or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (use text or json)")),
        }
    }
}

/// What one binary asks for.
#[derive(Debug, Clone, Copy)]
pub struct Logging<'a> {
    pub format: LogFormat,
    /// The filter directives as given (`RUST_LOG`, or a level from a config file); `None` uses
    /// `default`.
    pub directives: Option<&'a str>,
    /// The binary's default filter, e.g. `info`.
    pub default: &'a str,
    /// Also append the lines to this file (errors opening it are reported, logging goes on).
    pub file: Option<&'a Path>,
}

/// Why part of the setup was not taken; reported once logging works.
#[derive(Debug, Default)]
struct Problems {
    bad_filter: Option<(String, String)>,
    bad_file: Option<String>,
}

/// Parses the directives, falling back to `default` (and reporting) when they are invalid.
fn filter(directives: Option<&str>, default: &str) -> (EnvFilter, Option<(String, String)>) {
    let Some(text) = directives.filter(|d| !d.trim().is_empty()) else {
        return (EnvFilter::new(default), None);
    };
    match EnvFilter::try_new(text) {
        Ok(filter) => (filter, None),
        Err(error) => (
            EnvFilter::new(default),
            Some((text.to_owned(), error.to_string())),
        ),
    }
}

/// Installs the global subscriber. A bad filter falls back to the default and says so with a
/// warning (naming the directives and why); a second call reports and changes nothing.
pub fn init(logging: Logging<'_>) {
    let mut problems = Problems::default();
    let (filter, bad_filter) = filter(logging.directives, logging.default);
    problems.bad_filter = bad_filter;
    let ansi = std::io::stderr().is_terminal();
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    let stderr = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    layers.push(match logging.format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => stderr.json().boxed(),
    });
    if let Some(path) = logging.file {
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => {
                let file = fmt::layer().with_writer(Mutex::new(file)).with_ansi(false);
                layers.push(match logging.format {
                    LogFormat::Text => file.boxed(),
                    LogFormat::Json => file.json().boxed(),
                });
            }
            Err(error) => problems.bad_file = Some(format!("{}: {error}", path.display())),
        }
    }
    if let Err(error) = tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init()
    {
        eprintln!("logging already initialised: {error}");
        return;
    }
    if let Some((directives, error)) = problems.bad_filter {
        tracing::warn!(%directives, %error, default = logging.default, "ignoring an invalid log filter");
    }
    if let Some(error) = problems.bad_file {
        tracing::warn!(%error, "cannot open the log file; logging to stderr only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!(
            "yaml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("text or json")
        );
    }

    #[test]
    fn a_bad_filter_falls_back_to_the_default_and_is_reported() {
        let (filter, bad) = filter(Some("info,[=bad"), "warn");
        assert_eq!(filter.to_string(), "warn");
        let (directives, _) = bad.expect("reported");
        assert_eq!(directives, "info,[=bad");
        let (filter, bad) = filter_ok("outrigger=debug");
        assert_eq!(filter.to_string(), "outrigger=debug");
        assert!(bad.is_none());
        let (filter, bad) = super::filter(Some("  "), "info");
        assert_eq!(filter.to_string(), "info");
        assert!(bad.is_none());
    }

    fn filter_ok(text: &str) -> (EnvFilter, Option<(String, String)>) {
        super::filter(Some(text), "info")
    }
}
