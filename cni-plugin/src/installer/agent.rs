//! The installer agent: installs the binary, kubeconfig and chain entry, keeps them correct while
//! it runs (directory watch plus periodic resync), and removes them on shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde_json::{Value, json};

use super::conflist::{self, ConflistError};
use super::files::{self, FilesError, PrimaryConfig};
use super::kubeconfig::{KubeconfigError, KubeconfigSource};
use crate::config::InstallerPods;
use crate::metrics::Metrics;
use crate::names;

/// Everything the installer needs to know; built by the binary from flags and environment.
#[derive(Debug, Clone)]
pub struct InstallerSettings {
    /// The plugin binary shipped in the image.
    pub plugin_source: PathBuf,
    /// The host CNI bin directory, as mounted in the installer.
    pub cni_bin_dir: PathBuf,
    /// The host CNI config directory, as mounted in the installer.
    pub cni_conf_dir: PathBuf,
    /// The same config directory as the plugin sees it on the host (paths in our entry).
    pub host_cni_conf_dir: PathBuf,
    pub kubeconfig: KubeconfigSource,
    pub exclude_namespaces: Vec<String>,
    pub log_level: String,
    pub log_file: Option<PathBuf>,
    pub installer_pods: InstallerPods,
    /// Periodic re-check besides the directory watch (token rotation, missed events).
    pub resync: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error("writing the plugin kubeconfig")]
    Kubeconfig(#[from] KubeconfigError),
    #[error("editing network configuration {path}")]
    Conflist {
        path: PathBuf,
        #[source]
        source: ConflistError,
    },
    #[error("watching {path}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("uninstall left {} problem(s): {}", .0.len(), .0.iter().map(|e| outrigger_runtime::error_chain(e)).collect::<Vec<_>>().join("; "))]
    Uninstall(Vec<InstallError>),
}

/// State of the chain after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainState {
    /// No primary network configuration yet (the network plugin has not started).
    NoPrimary,
    /// Our entry was already last in this file.
    Correct(PathBuf),
    /// Our entry was (re-)inserted into this file.
    Inserted(PathBuf),
}

pub struct Installer {
    settings: InstallerSettings,
}

impl Installer {
    pub fn new(settings: InstallerSettings) -> Self {
        Self { settings }
    }

    pub fn binary_path(&self) -> PathBuf {
        self.settings.cni_bin_dir.join(names::PLUGIN_BINARY)
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.settings.cni_conf_dir.join(names::KUBECONFIG_FILE)
    }

    /// Our entry in the chain.
    pub fn entry(&self) -> Value {
        let s = &self.settings;
        let mut entry = json!({
            "type": names::PLUGIN_TYPE,
            "kubeconfig": s.host_cni_conf_dir.join(names::KUBECONFIG_FILE),
            "exclude_namespaces": s.exclude_namespaces,
            "log_level": s.log_level,
            "installer_pods": {"namespace": s.installer_pods.namespace, "name_prefix": s.installer_pods.name_prefix},
        });
        if let Some(log_file) = &s.log_file {
            entry["log_file"] = json!(log_file);
        }
        entry
    }

    pub fn install_binary(&self) -> Result<(), InstallError> {
        Ok(files::copy_atomic(
            &self.settings.plugin_source,
            &self.binary_path(),
            0o755,
        )?)
    }

    /// Writes the kubeconfig when it changed (first run, token rotation); true when written.
    pub fn sync_kubeconfig(&self) -> Result<bool, InstallError> {
        Ok(self.settings.kubeconfig.sync(&self.kubeconfig_path())?)
    }

    /// Makes our entry the last of the primary configuration's chain.
    pub fn reconcile_chain(&self) -> Result<ChainState, InstallError> {
        let Some(PrimaryConfig {
            path,
            is_list,
            value,
        }) = files::find_primary(&self.settings.cni_conf_dir)?
        else {
            return Ok(ChainState::NoPrimary);
        };
        let conflist_error = |source| InstallError::Conflist {
            path: path.clone(),
            source,
        };
        let entry = self.entry();
        if is_list && conflist::chain_is_correct(&value, &entry) {
            return Ok(ChainState::Correct(path));
        }
        let list = if is_list {
            value
        } else {
            conflist::conf_to_conflist(&value).map_err(conflist_error)?
        };
        let merged = conflist::with_entry(&list, &entry).map_err(conflist_error)?;
        let target = if is_list {
            path.clone()
        } else {
            path.with_extension("conflist")
        };
        // The bytes as the network plugin wrote them, for uninstall. A file that already holds a
        // (stale) entry of ours is not the original: the copy taken before that edit stays.
        let untouched = conflist::without_entry(&list).is_ok_and(|clean| clean == list);
        if untouched && let Some(bytes) = files::read_optional(&path)? {
            let mode = std::fs::metadata(&path)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                .unwrap_or(0o644);
            let original = original_copy(&path);
            files::remove_if_present(&original)?;
            files::write_atomic(&original, &bytes, mode)?;
        }
        files::write_atomic(&target, &to_pretty_json(&merged), 0o644)?;
        if !is_list {
            files::remove_if_present(&path)?;
        }
        tracing::info!(path = %target.display(), "inserted our entry last in the chain");
        Ok(ChainState::Inserted(target))
    }

    /// Ready only while binary, kubeconfig and chain are all in place.
    pub fn is_ready(&self) -> bool {
        let chain_ok = matches!(
            files::find_primary(&self.settings.cni_conf_dir),
            Ok(Some(PrimaryConfig { is_list: true, ref value, .. })) if conflist::chain_is_correct(value, &self.entry())
        );
        chain_ok && self.binary_path().is_file() && self.kubeconfig_path().is_file()
    }

    /// Removes our entry from every configuration in the directory, the kubeconfig and the
    /// binary; keeps going after a failure and reports all of them.
    pub fn uninstall(&self) -> Result<(), InstallError> {
        let mut problems = Vec::new();
        if let Err(err) = self.remove_entries() {
            problems.push(err);
        }
        for path in [self.kubeconfig_path(), self.binary_path()] {
            if let Err(err) = files::remove_if_present(&path) {
                problems.push(err.into());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InstallError::Uninstall(problems))
        }
    }

    fn remove_entries(&self) -> Result<(), InstallError> {
        let dir = &self.settings.cni_conf_dir;
        let read_err = |source| FilesError::Read {
            path: dir.clone(),
            source,
        };
        let mut problems = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if let Some(original) = original_of(&path)
                && let Err(err) = restore_original(&path, &original)
            {
                problems.push(err);
            }
        }
        if !problems.is_empty() {
            return Err(InstallError::Uninstall(problems));
        }
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("conflist") {
                continue;
            }
            let Some(Ok(list)) =
                files::read_optional(&path)?.map(|b| serde_json::from_slice::<Value>(&b))
            else {
                continue;
            };
            let Ok(cleaned) = conflist::without_entry(&list) else {
                continue;
            };
            if cleaned != list {
                files::write_atomic(&path, &to_pretty_json(&cleaned), 0o644)?;
                tracing::info!(path = %path.display(), "removed our entry from the chain");
            }
        }
        Ok(())
    }

    /// One pass of everything; errors are logged and reflected in readiness, never fatal.
    fn reconcile_all(&self, metrics: &Metrics) {
        metrics.reconcile_passes.inc();
        if let Err(err) = self.sync_kubeconfig() {
            tracing::warn!(error = %outrigger_runtime::error_chain(&err), "kubeconfig not written");
        }
        if !self.binary_path().is_file()
            && let Err(err) = self.install_binary()
        {
            tracing::warn!(error = %outrigger_runtime::error_chain(&err), "plugin binary not installed");
        }
        match self.reconcile_chain() {
            Ok(ChainState::Inserted(_)) => {
                metrics.chain_insertions.inc();
            }
            Ok(ChainState::NoPrimary) => {
                tracing::info!(dir = %self.settings.cni_conf_dir.display(), "waiting for a primary network configuration");
            }
            Ok(ChainState::Correct(_)) => {}
            Err(err) => {
                tracing::warn!(error = %outrigger_runtime::error_chain(&err), "chain not repaired")
            }
        }
    }

    /// Installs, then keeps everything correct until `shutdown` resolves, then uninstalls.
    /// `ready` follows [`Installer::is_ready`] after every pass.
    pub async fn run(
        &self,
        ready: Arc<AtomicBool>,
        metrics: Metrics,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), InstallError> {
        self.install_binary()?;
        self.sync_kubeconfig()?;
        let (tx, mut events) = tokio::sync::mpsc::channel::<()>(1);
        let dir = self.settings.cni_conf_dir.clone();
        let watch_err = |source| InstallError::Watch {
            path: dir.clone(),
            source,
        };
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|event| changes_content(&event.kind)) {
                    // A full channel already holds a pending wake-up; one pass covers both.
                    let _ = tx.try_send(());
                }
            })
            .map_err(watch_err)?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(watch_err)?;
        let mut tick = tokio::time::interval(self.settings.resync);
        tokio::pin!(shutdown);
        loop {
            self.reconcile_all(&metrics);
            ready.store(self.is_ready(), Ordering::SeqCst);
            tokio::select! {
                () = &mut shutdown => break,
                _ = events.recv() => {}
                _ = tick.tick() => {}
            }
        }
        ready.store(false, Ordering::SeqCst);
        drop(watcher);
        tracing::info!("shutting down: removing our entry, kubeconfig and binary");
        self.uninstall()
    }
}

/// Where the original bytes of the network configuration at `path` are kept.
fn original_copy(path: &std::path::Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(names::ORIGINAL_SUFFIX);
    PathBuf::from(name)
}

/// The configuration a copy of original bytes belongs to, when `copy` is one.
fn original_of(copy: &std::path::Path) -> Option<PathBuf> {
    let text = copy.to_str()?;
    text.strip_suffix(names::ORIGINAL_SUFFIX).map(PathBuf::from)
}

/// Puts the original bytes of `original` back when the file we edited is still what we made of
/// it (the original plus our entry): a `.conf` comes back as that `.conf` (the `.conflist` we
/// made is removed), a `.conflist` byte for byte. When the network plugin changed the file since,
/// its version wins: only our entry is removed (the generic pass). The copy is removed either way.
fn restore_original(
    copy: &std::path::Path,
    original: &std::path::Path,
) -> Result<(), InstallError> {
    let is_list = original.extension().and_then(|e| e.to_str()) == Some("conflist");
    let edited = if is_list {
        original.to_path_buf()
    } else {
        original.with_extension("conflist")
    };
    let bytes = files::read_optional(copy)?;
    let current = files::read_optional(&edited)?;
    let expected = bytes
        .as_deref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| {
            if is_list {
                Some(v)
            } else {
                conflist::conf_to_conflist(&v).ok()
            }
        });
    let cleaned = current
        .as_deref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| conflist::without_entry(&v).ok());
    match (bytes, expected, cleaned) {
        (Some(bytes), Some(expected), Some(cleaned)) if expected == cleaned => {
            let mode = std::fs::metadata(copy)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                .unwrap_or(0o644);
            if edited != original {
                files::remove_if_present(original)?;
            }
            files::write_atomic(original, &bytes, mode)?;
            if edited != original {
                files::remove_if_present(&edited)?;
            }
            tracing::info!(path = %original.display(), "restored the original network configuration");
        }
        _ => {
            tracing::warn!(path = %edited.display(), "network configuration changed since we edited it: only our entry is removed");
        }
    }
    files::remove_if_present(copy)?;
    Ok(())
}

/// Whether a watch event can change what a pass would find: a file created, written, removed or
/// renamed. Reads (access/open/close-nowrite) and metadata-only changes cannot; waking on them
/// made every pass, which reads the directory, wake the next one: a busy loop.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

fn to_pretty_json(value: &Value) -> Vec<u8> {
    let mut text =
        serde_json::to_vec_pretty(value).unwrap_or_else(|_| value.to_string().into_bytes());
    text.push(b'\n');
    text
}

#[cfg(test)]
mod tests;
