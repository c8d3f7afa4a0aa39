//! The CNI protocol as the spec defines it: commands, versions, results and errors. Imports go
//! one way: `version` is a leaf; `error` and `result` build on it; `command` on all three.

pub mod command;
pub mod error;
pub mod result;
pub mod version;

pub use command::{CniArgs, Command, Invocation};
pub use error::{CniError, ErrorCode};
pub use version::CniVersion;
