//! Watches directories (a mounted Secret or ConfigMap) and calls a reload function on change.
//!
//! Kubernetes updates mounted volumes by swapping a `..data` symlink, so the parent directory is
//! watched, not the files; bursts of events are coalesced into one reload (the reload runs once
//! the directory has been quiet for [`DEBOUNCE`]). A directory laid out as the kubelet lays out
//! a ConfigMap or Secret volume (it has a `..data` entry) is watched recursively, so a file
//! edited in place inside the hidden timestamped directory is seen too; any other directory is
//! watched alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Quiet time after an event before reloading, so a multi-file update is seen whole.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Failure to set up a watch.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {dir}")]
pub struct WatchError {
    dir: PathBuf,
    #[source]
    source: notify::Error,
}

/// Recursive for a kubelet volume (its files are links into `..data`), else the directory alone.
fn mode(dir: &std::path::Path) -> RecursiveMode {
    if dir.join(KUBELET_DATA_LINK).symlink_metadata().is_ok() {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    }
}

/// The link the kubelet swaps to update a ConfigMap, Secret or projected volume atomically.
const KUBELET_DATA_LINK: &str = "..data";

/// Start watching `dirs`; `reload` runs on a blocking thread after each burst of changes.
/// The watch lives as long as the returned task.
pub fn spawn<F>(dirs: Vec<PathBuf>, reload: F) -> Result<JoinHandle<()>, WatchError>
where
    F: Fn() + Send + Sync + 'static,
{
    let changed = Arc::new(Notify::new());
    let notifier = changed.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            notifier.notify_one();
        }
    })
    .map_err(|source| WatchError {
        dir: dirs.first().cloned().unwrap_or_default(),
        source,
    })?;
    for dir in &dirs {
        watcher.watch(dir, mode(dir)).map_err(|source| WatchError {
            dir: dir.clone(),
            source,
        })?;
    }
    let reload = Arc::new(reload);
    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            changed.notified().await;
            // Wait until the burst is over: each event restarts the quiet time.
            while tokio::time::timeout(DEBOUNCE, changed.notified())
                .await
                .is_ok()
            {}
            let reload = reload.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || reload()).await {
                tracing::error!(error = %e, "reload task panicked");
            }
        }
    }))
}
