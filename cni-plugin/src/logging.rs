//! Log setup for both binaries: stderr (never stdout, which carries CNI replies) and optionally a
//! log file, filtered by level.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

/// Installs the global subscriber. A log file that cannot be opened is reported on stderr and
/// logging continues there. `json` selects JSON lines for clusters.
pub fn init(level: &str, log_file: Option<&Path>, json: bool) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let file =
        log_file.and_then(
            |path| match OpenOptions::new().create(true).append(true).open(path) {
                Ok(file) => Some(Mutex::new(file)),
                Err(err) => {
                    eprintln!("cannot open log file {}: {err}", path.display());
                    None
                }
            },
        );
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    let stderr = fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    layers.push(if json {
        stderr.json().boxed()
    } else {
        stderr.boxed()
    });
    if let Some(file) = file {
        let file = fmt::layer().with_writer(file).with_ansi(false);
        layers.push(if json {
            file.json().boxed()
        } else {
            file.boxed()
        });
    }
    let result = tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init();
    if let Err(err) = result {
        eprintln!("logging already initialised: {err}");
    }
}
