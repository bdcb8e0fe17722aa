//! The one way the workspace writes an output file: whole or not at all, flushed to disk before
//! it replaces anything; and the fsync helpers that checkpoints use for whole directories.

use std::path::Path;

use crate::{Error, Result};

/// Writes `path` atomically: into a temp file beside it (`.NAME.tmpPID`, same directory so the
/// rename stays on one file system), then a rename over `path`. A killed or failed run never
/// leaves a half-written file in place of a good one, and a failed write removes its temp file.
/// Missing parent directories are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    // The bytes reach the disk before the rename publishes them, and the rename itself is
    // flushed with its directory: a crash right after never leaves an empty or partial file.
    let result = std::fs::write(&tmp, bytes)
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| sync_file(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)))
        .and_then(|()| sync_parent(path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Flushes a file's content to disk.
pub fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, e))
}

/// Flushes a directory's entries (names created, renamed or removed in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    sync_file(dir)
}

/// Flushes the directory that holds `path`.
pub fn sync_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => sync_dir(dir),
        None => sync_dir(Path::new(".")),
    }
}

/// Flushes every file and directory under `dir`, `dir` included.
pub fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if entry.file_type().map_err(|e| Error::io(&path, e))?.is_dir() {
            sync_tree(&path)?;
        } else {
            sync_file(&path)?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("soft-atomic-{}", std::process::id()));
        let path = dir.join("sub").join("out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        // A directory in the way: the rename fails, the error names the path, no temp file stays.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("inner")).unwrap();
        let err = write_atomic(&blocked, b"x").unwrap_err().to_string();
        assert!(err.contains("blocked"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
