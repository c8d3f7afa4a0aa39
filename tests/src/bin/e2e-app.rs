//! `e2e-app`: the stand-in application of the end-to-end tests (HTTP server, HTTP client, TCP
//! echo server and clients). Runs as an ordinary UID inside a pod's network namespace.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match outrigger_e2e::app::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("e2e-app: {error:#}");
            ExitCode::FAILURE
        }
    }
}
