//! The CNI protocol as the spec defines it: commands, versions, results and errors.

pub mod command;
pub mod error;
pub mod version;

pub use command::{CniArgs, Command, Invocation};
pub use error::{CniError, ErrorCode};
pub use version::CniVersion;
