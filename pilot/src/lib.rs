//! outrigger-pilot: the control plane. Reflectors watch the cluster once (`cluster`), a
//! debounced rebuild turns the stores into a mesh `Snapshot` and views (`index`), and the delta
//! xDS server streams each proxy the destinations and endpoints it subscribed to (`xds`).

pub mod app;
pub mod auth;
pub mod cluster;
pub mod index;
pub mod metrics;
pub mod name_pool;
pub mod xds;
