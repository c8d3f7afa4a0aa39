//! `kube-inject` binary (skeleton until its issue lands).

fn main() -> std::process::ExitCode {
    eprintln!("kube-inject: not implemented yet");
    std::process::ExitCode::FAILURE
}
