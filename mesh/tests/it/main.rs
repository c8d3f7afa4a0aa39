//! Integration tests, one binary: the real CLI, golden outputs of the shop application,
//! property tests of the resolver and a round trip of `ProxyConfig`.

mod cli;
mod golden;
mod props;
mod request_model;
mod roundtrip;
mod semantics;
mod support;
