//! Shared setup: a fake API server loaded with the shop fixture.

use std::time::Duration;

use outrigger_testkit::FakeApiServer;

pub const SHOP: &str = include_str!("../fixtures/shop.yaml");

pub async fn api_server() -> FakeApiServer {
    let server = FakeApiServer::start().await.expect("fake API server");
    server.load_yaml(SHOP).expect("shop fixture");
    server
}

/// Polls `check` every 20 ms for up to 5 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
