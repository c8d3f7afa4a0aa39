//! The Istio contract shared by every Outrigger crate: the names and numbers of docs/DESIGN.md,
//! one parser per Istio value type, and the formats the injector writes and the other parts read.
//! Pure: no I/O, no async, cheap to depend on.

pub mod duration;
