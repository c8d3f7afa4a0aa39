//! Test support shared by the workspace. [`FakeApiServer`] is an in-test kube-apiserver that
//! serves any resource kind from YAML fixtures with the API server's JSON: GET, LIST (with
//! `resourceVersion`, `limit`/`continue`, label and field selectors), WATCH (ADDED, MODIFIED,
//! DELETED, BOOKMARK, `ERROR` 410 Gone for a compacted `resourceVersion`), and create (409
//! AlreadyExists), replace (409 Conflict on a stale `resourceVersion`), merge, strategic merge
//! and JSON patch, and delete both over HTTP and from the test code, reaching every open watch;
//! a log of every request with its answer's status, and gates that hold requests until N arrive.
//! [`kubernetes_validate`] checks manifests against the real Kubernetes schemas.

pub mod kubernetes_validate;
mod selector;
mod server;

pub use selector::{FieldSelector, LabelSelector, SelectorError};
pub use server::{CreateHandler, FakeApiServer, Fault, Gate, KindInfo, Recorded};
