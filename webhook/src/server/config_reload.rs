//! The injector configuration in service: loaded once, swapped atomically on reload, and kept
//! as it is when a new version is invalid.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::metrics::{Metrics, Reload};
use outrigger_inject::config_source::load_config_dir;
use outrigger_inject::{Config, ConfigError};

/// The configuration currently used by the request handlers.
#[derive(Debug)]
pub struct ConfigStore {
    current: ArcSwap<Config>,
    dir: Option<PathBuf>,
    metrics: Arc<Metrics>,
}

impl ConfigStore {
    /// Load from `dir`, or the embedded default when `None`. A bad initial config is an error.
    pub fn load(dir: Option<&Path>, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let config = match dir {
            Some(dir) => load_config_dir(dir)?,
            None => Config::embedded()?,
        };
        Ok(ConfigStore {
            current: ArcSwap::from_pointee(config),
            dir: dir.map(Path::to_path_buf),
            metrics,
        })
    }

    /// Wrap an already loaded configuration (tests, embedded use).
    pub fn fixed(config: Config, metrics: Arc<Metrics>) -> Self {
        ConfigStore {
            current: ArcSwap::from_pointee(config),
            dir: None,
            metrics,
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
