//! `http-load`: outrigger-proxy at layer 7 on the pod topology, against the direct path and
//! nginx and haproxy configured as the same one-hop proxy.
//!
//! `http-load` (no arguments, as root, release build) builds the pods, runs every measurement
//! and prints the figures. `http-load run --only A|B --seconds N --rounds N` runs only the
//! paths named so, N seconds each, in N interleaved rounds, and prints each figure's median.
//! `http-load --rss-only [--proxy BIN]` measures only the proxy's RSS with the large
//! configuration (no throughput run). `http-load large-config OUT` writes that configuration
//! (no root). `serve` and `load` are the roles it starts inside the pods.

mod orchestrate;
mod roles;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => orchestrate::run(orchestrate::RunOptions::default()),
        Some("run") => orchestrate::parse_run(&args[1..]).and_then(orchestrate::run),
        Some("--rss-only") => {
            orchestrate::parse_rss_only(&args[1..]).and_then(orchestrate::rss_only)
        }
        Some("large-config") => match args.get(1) {
            Some(out) => orchestrate::write_large_config(std::path::Path::new(out)),
            None => Err(anyhow::anyhow!("usage: http-load large-config OUT.json")),
        },
        Some(_) => roles::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("http-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}
