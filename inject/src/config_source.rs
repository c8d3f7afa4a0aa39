//! Reads the injector configuration directory (`config.yaml`, `values.yaml`, `mesh.yaml`) from
//! disk; a file that is absent falls back to the embedded default for that file.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::{CONFIG_FILE, Config, ConfigError, DEFAULT_CONFIG_YAML, MESH_FILE, VALUES_FILE};

/// Where each configuration file comes from; `None` everywhere means the embedded defaults.
#[derive(Debug, Clone, Default)]
pub struct ConfigPaths {
    /// Directory holding any of `config.yaml`, `values.yaml`, `mesh.yaml`.
    pub dir: Option<PathBuf>,
    /// A values file that replaces the directory's `values.yaml`.
    pub values: Option<PathBuf>,
    /// A mesh file that replaces the directory's `mesh.yaml`.
    pub mesh: Option<PathBuf>,
}

/// Load and validate the configuration directory; files that are absent fall back to the embedded default.
pub fn load_config_dir(dir: &Path) -> Result<Config, ConfigError> {
    load_config(&ConfigPaths {
        dir: Some(dir.to_owned()),
        ..Default::default()
    })
}

/// Load and validate the configuration from the given paths.
pub fn load_config(paths: &ConfigPaths) -> Result<Config, ConfigError> {
    if let Some(dir) = &paths.dir
        && !dir.is_dir()
    {
        return Err(ConfigError(format!(
            "configuration directory {} does not exist or is not a directory",
            dir.display()
        )));
    }
    let in_dir = |name: &str| paths.dir.as_ref().map(|d| d.join(name));
    let config = read_or(in_dir(CONFIG_FILE), false, DEFAULT_CONFIG_YAML)?;
    let values = read_or(
        paths.values.clone().or_else(|| in_dir(VALUES_FILE)),
        paths.values.is_some(),
        "",
    )?;
    let mesh = read_or(
        paths.mesh.clone().or_else(|| in_dir(MESH_FILE)),
        paths.mesh.is_some(),
        "",
    )?;
    // values.yaml and mesh.yaml are merged over the embedded defaults, so "" means "defaults".
    Config::from_sources(&config, &values, &mesh).map_err(|e| match &paths.dir {
        Some(dir) => ConfigError(format!("{}: {e}", dir.display())),
        None => e,
    })
}

/// The file's text; when it is absent and not `required`, the fallback.
fn read_or(path: Option<PathBuf>, required: bool, fallback: &str) -> Result<String, ConfigError> {
    let Some(path) = path else {
        return Ok(fallback.to_owned());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == ErrorKind::NotFound && !required => Ok(fallback.to_owned()),
        Err(e) => Err(ConfigError(format!("{}: cannot read: {e}", path.display()))),
    }
}
