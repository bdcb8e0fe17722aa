//! SHA-256 manifests of a directory's files (`checksums.json`): written last into a directory
//! that is then renamed into place, and verified before its files are trusted. A directory whose
//! manifest is missing, lists other files than it holds, or names a file whose bytes changed is
//! refused, naming the file, so a half-written or damaged checkpoint is never taken for a good one.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

pub const MANIFEST: &str = "checksums.json";

#[derive(Serialize, Deserialize)]
struct Manifest {
    /// Path relative to the directory ('/'-separated) -> lowercase hex SHA-256.
    sha256: BTreeMap<String, String>,
}

/// The SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Every regular file under `dir` but the manifest, as ('/'-joined relative name, path), sorted.
fn files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut pending = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, at)) = pending.pop() {
        for entry in std::fs::read_dir(&at).map_err(|e| Error::io(&at, e))? {
            let entry = entry.map_err(|e| Error::io(&at, e))?;
            let path = entry.path();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_dir() {
                pending.push((format!("{name}/"), path));
            } else if name != MANIFEST {
                out.push((name, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Hashes every file under `dir` into `dir/checksums.json` and flushes that file to disk.
pub fn write_manifest(dir: &Path) -> Result<()> {
    let sha256 = files(dir)?.into_iter().map(|(name, path)| Ok((name, sha256_file(&path)?))).collect::<Result<_>>()?;
    let path = dir.join(MANIFEST);
    // Compact: no white space whose damage would leave the manifest meaning the same.
    let text = serde_json::to_string(&Manifest { sha256 }).map_err(|e| Error::json(&path, e))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    crate::atomic_file::sync_file(&path)
}

/// Checks `dir` against its `checksums.json`: the same files, each with its recorded hash.
pub fn verify_manifest(dir: &Path) -> Result<()> {
    let path = dir.join(MANIFEST);
    let text =
        match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::format(
                &path,
                "missing: the directory is incomplete or was written before checksums existed, so it is not trusted \
                 (delete it to redo that work)",
            )),
            Err(e) => return Err(Error::io(&path, e)),
        };
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    let on_disk = files(dir)?;
    for (name, file) in &on_disk {
        let Some(want) = manifest.sha256.get(name) else {
            return Err(Error::format(
                file,
                format!("not listed in {}: not part of the checkpoint as written", path.display()),
            ));
        };
        let got = sha256_file(file)?;
        if &got != want {
            return Err(Error::format(
                file,
                format!("checksum mismatch (SHA-256 {got}, {} records {want}): the file is corrupted", MANIFEST),
            ));
        }
    }
    if let Some(name) = manifest.sha256.keys().find(|n| !on_disk.iter().any(|(d, _)| d == *n)) {
        // A listed name is only ever joined below `dir`, never followed elsewhere.
        let plain = Path::new(name).components().all(|c| matches!(c, Component::Normal(_)));
        let shown = if plain { dir.join(name) } else { path.clone() };
        return Err(Error::format(shown, format!("missing, though {MANIFEST} lists `{name}`")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_missing_or_extra_file_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("soft-checksums-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.json"), "{}").unwrap();
        std::fs::write(dir.join("sub/b.bin"), [1u8, 2, 3]).unwrap();
        let err = verify_manifest(&dir).unwrap_err().to_string();
        assert!(err.contains("checksums.json: missing"), "{err}");
        write_manifest(&dir).unwrap();
        verify_manifest(&dir).unwrap();
        // The published vector for "abc".
        std::fs::write(dir.join("sub/b.bin"), b"abc").unwrap();
        assert_eq!(
            sha256_file(&dir.join("sub/b.bin")).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let err = verify_manifest(&dir).unwrap_err().to_string();
        assert!(err.contains("b.bin") && err.contains("checksum mismatch"), "{err}");
        write_manifest(&dir).unwrap();
        std::fs::write(dir.join("extra"), "x").unwrap();
        let err = verify_manifest(&dir).unwrap_err().to_string();
        assert!(err.contains("extra") && err.contains("not listed"), "{err}");
        std::fs::remove_file(dir.join("extra")).unwrap();
        std::fs::remove_file(dir.join("a.json")).unwrap();
        let err = verify_manifest(&dir).unwrap_err().to_string();
        assert!(err.contains("a.json") && err.contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
