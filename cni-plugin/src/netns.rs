//! Runs a closure inside a pod's network namespace without ever moving the calling thread.
//!
//! The closure runs on a short-lived helper thread that joins the target namespace with
//! `setns(2)` and then exits, so no thread of the process is ever left in the pod's namespace,
//! whatever the closure does (panics included). Child processes the closure starts (such as
//! `iptables-restore`) inherit the helper thread's namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the work inside network namespace {path} panicked")]
    Panicked { path: PathBuf },
}

/// Runs `work` inside the network namespace at `path` (e.g. `/var/run/netns/x` or
/// `/proc/<pid>/ns/net`) and returns its value.
pub fn run_in<T, F>(path: &Path, work: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let target = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    std::thread::scope(|scope| {
        let helper = scope.spawn(move || {
            setns(&target, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: path.to_owned(),
                source,
            })?;
            Ok(work())
        });
        helper.join().unwrap_or_else(|_| {
            Err(NetnsError::Panicked {
                path: path.to_owned(),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_an_open_error() {
        let err = run_in(Path::new("/nonexistent/netns/x"), || ()).unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/netns/x"));
    }

    #[test]
    fn a_file_that_is_no_namespace_cannot_be_entered() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = run_in(file.path(), || ()).unwrap_err();
        assert!(matches!(err, NetnsError::Enter { .. }), "{err:?}");
    }

    #[test]
    #[ignore = "needs root: sudo ./scripts/test.sh runs it"]
    fn own_namespace_runs_the_closure_and_leaves_the_caller_alone() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "setns needs CAP_SYS_ADMIN: run this test as root (CI does)"
        );
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let inside = run_in(Path::new("/proc/self/ns/net"), || {
            std::fs::read_link("/proc/thread-self/ns/net").unwrap()
        })
        .unwrap();
        assert_eq!(inside, before);
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            before
        );
    }
}
