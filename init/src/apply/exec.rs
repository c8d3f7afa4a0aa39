//! Running the iptables and iproute2 tools: one place that spawns processes and turns their
//! failures into `ApplyError`s.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::error::ApplyError;

/// Runs `program args`, feeding `stdin` when given; returns stdout on success.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ApplyError> {
    let spawn_err = |source| ApplyError::Spawn {
        program: program.to_owned(),
        source,
    };
    tracing::debug!(program, ?args, "running");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(ApplyError::Command {
            program: format!("{program} {}", args.join(" "))
                .trim_end()
                .to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
