//! `proxy-load`: measures outrigger-proxy on the pod topology of the end-to-end tests.
//!
//! `proxy-load` (no arguments, as root, release build) builds two captured pods, runs every
//! measurement and prints the figures. The other subcommands are the load roles it starts
//! inside the pods: `serve`, `bulk`, `rr`, `connect`, `hold`.

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
            eprintln!("proxy-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}
