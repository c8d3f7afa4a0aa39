//! Running the iptables and iproute2 tools: one place that spawns processes and turns their
//! failures into `ApplyError`s.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::ApplyError;

/// Where the tools live when `PATH` does not say (a CNI plugin may get a minimal `PATH`).
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The full path of `program`: from `PATH`, then the usual system directories; `None` when
/// it is installed nowhere.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    let from_path =
        std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
    from_path
        .unwrap_or_default()
        .into_iter()
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A command for `program`, resolved with `find_program` (left to the OS when not found, so the
/// spawn error names it).
pub(crate) fn command(program: &str) -> Command {
    match find_program(program) {
        Some(path) => Command::new(path),
        None => Command::new(Path::new(program)),
    }
}

/// Runs `program args`, feeding `stdin` when given; returns stdout on success.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ApplyError> {
    let spawn_err = |source| ApplyError::Spawn {
        program: program.to_owned(),
        source,
    };
    tracing::debug!(program, ?args, "running");
    let mut child = command(program)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_to_full_paths() {
        let sh = find_program("sh").expect("sh is installed");
        assert!(sh.is_absolute() && sh.ends_with("sh"));
        assert!(find_program("no-such-program-outrigger").is_none());
        let out = run("sh", &["-c", "cat; echo err >&2; exit 3"], Some("in")).unwrap_err();
        match out {
            ApplyError::Command { stderr, status, .. } => {
                assert_eq!(stderr, "err");
                assert!(status.contains('3'), "{status}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            run("sh", &["-c", "cat"], Some("payload")).unwrap(),
            "payload"
        );
        assert!(matches!(
            run("no-such-program-outrigger", &[], None),
            Err(ApplyError::Spawn { .. })
        ));
    }
}
