//! `http-load`: outrigger-proxy at layer 7 on the pod topology, against the direct path and
//! nginx and haproxy configured as the same one-hop proxy.
//!
//! `http-load` (no arguments, as root, release build) builds the pods, runs every measurement
//! and prints the figures. `serve` and `load` are the roles it starts inside the pods.

mod orchestrate;
mod roles;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("run") => orchestrate::run(),
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
