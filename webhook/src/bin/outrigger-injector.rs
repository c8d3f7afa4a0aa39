//! `outrigger-injector` binary (skeleton until its issue lands).

fn main() -> std::process::ExitCode {
    eprintln!("outrigger-injector: not implemented yet");
    std::process::ExitCode::FAILURE
}
