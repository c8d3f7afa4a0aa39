//! Locating the workspace binaries under test and staging copies every UID can execute.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A binary of another workspace package, found next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("the test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Copies `binary` into `dir` (mode 0755, directory 0755) so processes running as the proxy or
/// app UID can execute it wherever the build tree lives (e.g. under a 0700 home directory).
pub fn stage(binary: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dir.display()))?;
    let name = binary.file_name().context("binary has a file name")?;
    let target = dir.join(name);
    std::fs::copy(binary, &target)
        .with_context(|| format!("copy {} to {}", binary.display(), target.display()))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    Ok(target)
}
