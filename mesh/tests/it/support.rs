//! Paths and a runner for the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub const STOREFRONT: &str = "shop/storefront-v1-7c9d8f6b5d-x2k4p";
pub const CART: &str = "shop/cart-v1-8e1f9a2b7c-m9n0o";

pub fn routes(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outrigger-routes"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the outrigger-routes binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

pub fn shop() -> outrigger_mesh::Snapshot {
    outrigger_mesh::Snapshot::load(&[fixture("shop")]).expect("the shop fixture loads")
}
