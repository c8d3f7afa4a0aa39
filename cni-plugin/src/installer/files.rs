//! File system side of the installer: atomic writes and copies, and finding the primary network
//! configuration the way the container runtime does.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::conflist;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The configuration the runtime uses for pods: the lowest file name among valid ones.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryConfig {
    pub path: PathBuf,
    /// `.conflist` (true) or `.conf` (false).
    pub is_list: bool,
    pub value: Value,
}

/// Scans `dir` for `.conf` and `.conflist` files in name order and returns the first that parses
/// and is valid; unreadable or invalid files are skipped like the runtime skips them.
pub fn find_primary(dir: &Path) -> Result<Option<PrimaryConfig>, FilesError> {
    let read_dir = |source| FilesError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut candidates: Vec<(PathBuf, bool)> = fs::read_dir(dir)
        .map_err(read_dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .filter_map(|path| match path.extension().and_then(|e| e.to_str()) {
            Some("conflist") => Some((path, true)),
            Some("conf") => Some((path, false)),
            _ => None,
        })
        .collect();
    candidates.sort();
    for (path, is_list) in candidates {
        let Ok(text) = fs::read(&path) else { continue };
        let Ok(value) = serde_json::from_slice::<Value>(&text) else {
            tracing::warn!(path = %path.display(), "skipping network configuration that is not JSON");
            continue;
        };
        if conflist::is_valid(&value, is_list) {
            return Ok(Some(PrimaryConfig {
                path,
                is_list,
                value,
            }));
        }
        tracing::warn!(path = %path.display(), "skipping invalid network configuration");
    }
    Ok(None)
}

/// Replaces `path` with `contents` atomically (temporary file in the same directory, fsync,
/// rename). The mode of an existing file is kept; a new file gets `new_mode`.
pub fn write_atomic(path: &Path, contents: &[u8], new_mode: u32) -> Result<(), FilesError> {
    let write_err = |source| FilesError::Write {
        path: path.to_owned(),
        source,
    };
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => new_mode,
        Err(err) => return Err(write_err(err)),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".outrigger-tmp-")
        .tempfile_in(dir)
        .map_err(write_err)?;
    tmp.write_all(contents).map_err(write_err)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|err| write_err(err.error))?;
    if let Ok(dir) = fs::File::open(dir) {
        // Durability of the rename; failure here does not undo the (already visible) write.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Copies `source` to `dest` atomically with `mode` (a running plugin binary is never truncated).
pub fn copy_atomic(source: &Path, dest: &Path, mode: u32) -> Result<(), FilesError> {
    let contents = fs::read(source).map_err(|err| FilesError::Read {
        path: source.to_owned(),
        source: err,
    })?;
    if fs::read(dest).is_ok_and(|existing| existing == contents) {
        fs::set_permissions(dest, fs::Permissions::from_mode(mode)).map_err(|err| {
            FilesError::Write {
                path: dest.to_owned(),
                source: err,
            }
        })?;
        return Ok(());
    }
    write_atomic(dest, &contents, mode)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode)).map_err(|err| FilesError::Write {
        path: dest.to_owned(),
        source: err,
    })
}

/// Removes `path`; a file that is already gone is fine.
pub fn remove_if_present(path: &Path) -> Result<(), FilesError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FilesError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads a file as text; `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FilesError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FilesError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn lowest_valid_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "05-broken.conflist", "{not json");
        write(
            dir.path(),
            "07-empty.conflist",
            r#"{"name":"e","plugins":[]}"#,
        );
        write(
            dir.path(),
            "10-calico.conflist",
            r#"{"name":"k8s","cniVersion":"0.3.1","plugins":[{"type":"calico"}]}"#,
        );
        write(
            dir.path(),
            "20-bridge.conf",
            r#"{"name":"b","type":"bridge"}"#,
        );
        write(dir.path(), "00-notes.txt", "ignored");
        write(dir.path(), "outrigger-cni-kubeconfig", "ignored");
        let primary = find_primary(dir.path()).unwrap().unwrap();
        assert_eq!(primary.path, dir.path().join("10-calico.conflist"));
        assert!(primary.is_list);
        assert_eq!(primary.value["plugins"][0]["type"], "calico");
    }

    #[test]
    fn conf_files_count_and_empty_dirs_have_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_primary(dir.path()).unwrap(), None);
        write(
            dir.path(),
            "99-bridge.conf",
            r#"{"name":"b","type":"bridge"}"#,
        );
        let primary = find_primary(dir.path()).unwrap().unwrap();
        assert!(!primary.is_list);
        assert_eq!(primary.value, json!({"name": "b", "type": "bridge"}));
    }

    #[test]
    fn missing_dir_is_an_error_naming_it() {
        let err = find_primary(Path::new("/nonexistent/cni/net.d")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cni/net.d"));
    }

    #[test]
    fn atomic_write_keeps_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-x.conflist");
        write_atomic(&path, b"one", 0o644).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("10-x.conflist")]);
    }

    #[test]
    fn copy_sets_mode_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dest = dir.path().join("dest");
        fs::write(&src, b"\x7fELF plugin").unwrap();
        copy_atomic(&src, &dest, 0o755).unwrap();
        copy_atomic(&src, &dest, 0o755).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"\x7fELF plugin");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let err = copy_atomic(&dir.path().join("missing"), &dest, 0o755).unwrap_err();
        assert!(matches!(err, FilesError::Read { .. }));
    }

    #[test]
    fn remove_and_read_optional_tolerate_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        remove_if_present(&path).unwrap();
        assert_eq!(read_optional(&path).unwrap(), None);
        fs::write(&path, b"x").unwrap();
        assert_eq!(read_optional(&path).unwrap(), Some(b"x".to_vec()));
        remove_if_present(&path).unwrap();
        assert!(!path.exists());
    }
}
