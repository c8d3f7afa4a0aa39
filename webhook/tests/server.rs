//! Tests of the `outrigger-injector` admission server: router (oneshot), real TLS end to end,
//! certificate rotation, configuration reload, SIGTERM draining, caBundle keeping, the replica
//! memo.

#[path = "server/ca_bundle.rs"]
mod ca_bundle;
#[path = "server/common.rs"]
mod common;
#[path = "server/e2e.rs"]
mod e2e;
#[path = "server/injection.rs"]
mod injection;
#[path = "server/limits.rs"]
mod limits;
#[path = "server/logs.rs"]
mod logs;
#[path = "server/memory.rs"]
mod memory;
#[path = "server/process.rs"]
mod process;
#[path = "server/reload.rs"]
mod reload;
#[path = "server/replicas.rs"]
mod replicas;
#[path = "server/rotation.rs"]
mod rotation;
#[path = "server/router.rs"]
mod router;
#[path = "server/sigterm.rs"]
mod sigterm;
#[path = "server/slow_client.rs"]
mod slow_client;
