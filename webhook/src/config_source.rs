//! Reads the injector configuration directory (`config.yaml`, `values.yaml`, `mesh.yaml`) from disk.
//! (Skeleton: lands with issue 2.)

use std::path::Path;

use crate::inject::{Config, ConfigError};

/// Load and validate the configuration directory; files that are absent fall back to the embedded default.
pub fn load_config_dir(_dir: &Path) -> Result<Config, ConfigError> {
    Config::embedded()
}
