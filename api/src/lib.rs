//! The Istio contract shared by every Outrigger crate: the names and numbers of docs/DESIGN.md,
//! one parser per Istio value type, the capture settings every capture path plans from, the
//! formats the injector writes and the other parts read, and a workload's app, version and
//! canonical service as Istio reads them from its labels. Pure: no I/O, no async, cheap to
//! depend on.

pub mod capture;
pub mod duration;
pub mod iptables;
pub mod names;
pub mod proxy_env;
pub mod values;
pub mod workload_labels;
