//! Test support: the workspace's fake API server (outrigger-testkit) over TLS, network
//! namespaces with cleanup, a CNI runtime.

pub mod api;
pub mod netns;
pub mod runtime;

/// Fails the calling test loudly when not run as root (CI runs as root).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates network namespaces and must run as root (CI runs as root; use sudo ./scripts/test.sh)"
    );
}

/// A name unique across test threads and processes: `<prefix><pid><counter>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The injected-pod fixture, as the API server sends it.
pub fn injected_pod() -> serde_json::Value {
    serde_json::from_str(include_str!("../../fixtures/injected-pod.json")).expect("fixture is JSON")
}
