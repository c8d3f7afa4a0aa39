//! The injector configuration in service: loaded once, swapped atomically on reload, and kept
//! as it is when a new version is invalid.
//!
//! A reload whose files are byte for byte the ones last read does nothing (no log, no count):
//! the watcher may wake more than once for one ConfigMap update (the kubelet writes a new
//! timestamped directory, swaps the `..data` link, then removes the old directory), and one
//! update must be one reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::metrics::{Metrics, Reload};
use outrigger_inject::config_source::load_config_dir;
use outrigger_inject::{CONFIG_FILE, MESH_FILE, VALUES_FILE};
use outrigger_inject::{Config, ConfigError};

/// The bytes of the three files as last read (`None`: absent or unreadable).
type Contents = [Option<Vec<u8>>; 3];

fn contents(dir: &Path) -> Contents {
    [CONFIG_FILE, VALUES_FILE, MESH_FILE].map(|name| std::fs::read(dir.join(name)).ok())
}

/// The configuration currently used by the request handlers.
#[derive(Debug)]
pub struct ConfigStore {
    current: ArcSwap<Config>,
    dir: Option<PathBuf>,
    metrics: Arc<Metrics>,
    /// What the last load or reload read, accepted or not.
    last: Mutex<Option<Contents>>,
}

impl ConfigStore {
    /// Load from `dir`, or the embedded default when `None`. A bad initial config is an error.
    pub fn load(dir: Option<&Path>, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let last = dir.map(contents);
        let config = match dir {
            Some(dir) => load_config_dir(dir)?,
            None => Config::embedded()?,
        };
        Ok(ConfigStore {
            current: ArcSwap::from_pointee(config),
            dir: dir.map(Path::to_path_buf),
            metrics,
            last: Mutex::new(last),
        })
    }

    /// Wrap an already loaded configuration (tests, embedded use).
    pub fn fixed(config: Config, metrics: Arc<Metrics>) -> Self {
        ConfigStore {
            current: ArcSwap::from_pointee(config),
            dir: None,
            metrics,
            last: Mutex::new(None),
        }
    }

    /// The directory being served, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The configuration for one request.
    pub fn get(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Re-read the directory. On error the old configuration keeps serving; either way the
    /// outcome is logged and counted.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let read = contents(dir);
        {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.as_ref() == Some(&read) {
                tracing::debug!(dir = %dir.display(), "configuration unchanged");
                return Ok(());
            }
            *last = Some(read);
        }
        match load_config_dir(dir) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                self.metrics.config_reloaded(Reload::Success);
                tracing::info!(dir = %dir.display(), "configuration reloaded");
                Ok(())
            }
            Err(error) => {
                self.metrics.config_reloaded(Reload::Failure);
                tracing::error!(
                    dir = %dir.display(),
                    %error,
                    "new configuration refused; the previous one keeps serving"
                );
                Err(error)
            }
        }
    }
}
