//! What every Outrigger binary repeats, written once: the error chain a binary prints, the
//! logging setup behind `--log-format text|json` and `RUST_LOG`, and the SIGTERM/Ctrl-C future.

pub mod error;
pub mod logging;
#[cfg(feature = "signal")]
pub mod signal;

pub use error::error_chain;
pub use logging::LogFormat;
#[cfg(feature = "signal")]
pub use signal::shutdown_signal;
