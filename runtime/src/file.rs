//! Writing files so that a failure never costs the user what was there: the bytes go to a new
//! temporary file beside the target, which replaces the target (by a rename, which is atomic on
//! one filesystem) only once it is whole and synced. On any error the temporary file is removed
//! and the target is as it was. Every file incept writes (artifacts, `.npy` outputs, traces)
//! goes through here.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path`, replacing it only when the whole write has succeeded.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the contents written by `write` into the temporary file.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let target = resolve(path)?;
    let (mut file, tmp) = create_temporary(&target)?;
    let result = (|| {
        write(&mut file)?;
        file.flush()?;
        // What replaces a file must be on disk first, or a crash right after the rename can
        // leave an empty file where the old one was.
        file.sync_all()?;
        // A file that was there keeps its permissions.
        if let Ok(old) = std::fs::metadata(&target) {
            file.set_permissions(old.permissions())?;
        }
        drop(file);
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Fails now, without touching anything, if [`write_atomic`] could not write `path` later: its
/// folder is missing or not writable, or `path` is a folder.
pub fn check_writable(path: &Path) -> io::Result<()> {
    let target = resolve(path)?;
    if target.is_dir() {
        return Err(io::Error::new(io::ErrorKind::IsADirectory, "it is a folder"));
    }
    let (file, tmp) = create_temporary(&target)?;
    drop(file);
    std::fs::remove_file(&tmp)
}

/// Whether `a` and `b` name the same existing file (through links and other spellings).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                x.dev() == y.dev() && x.ino() == y.ino()
            }
            #[cfg(not(unix))]
            {
                let _ = (x, y);
                matches!((a.canonicalize(), b.canonicalize()), (Ok(p), Ok(q)) if p == q)
            }
        }
        _ => false,
    }
}

/// The file a write to `path` must replace: a symbolic link's target (a link stays a link).
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => path.canonicalize(),
        _ => Ok(path.to_path_buf()),
    }
}

/// A new, empty file beside `target` (so that the rename stays on one filesystem).
fn create_temporary(target: &Path) -> io::Result<(File, PathBuf)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}.{}-{n}.tmp", name.to_string_lossy(), std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("incept-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = scratch("fail");
        let target = dir.join("model.incept");
        std::fs::write(&target, b"yesterday's good artifact").unwrap();
        let err = write_atomic_with(&target, |f| {
            f.write_all(b"half of a new one")?;
            Err(io::Error::other("the disk filled up"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "the disk filled up");
        assert_eq!(std::fs::read(&target).unwrap(), b"yesterday's good artifact");
        assert_eq!(leftovers(&dir), ["model.incept"]);
    }

    #[test]
    fn a_whole_write_replaces_the_file_and_keeps_its_permissions() {
        let dir = scratch("ok");
        let target = dir.join("out.npy");
        std::fs::write(&target, b"old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
        write_atomic(&target, b"new contents").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new contents");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640);
        }
        write_atomic(&dir.join("fresh.npy"), b"x").unwrap();
        assert_eq!(leftovers(&dir), ["fresh.npy", "out.npy"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_is_written_through_and_stays_a_link() {
        let dir = scratch("link");
        let real = dir.join("real.incept");
        std::fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink(&real, dir.join("link.incept")).unwrap();
        write_atomic(&dir.join("link.incept"), b"new").unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert!(std::fs::symlink_metadata(dir.join("link.incept")).unwrap().file_type().is_symlink());
        assert!(same_file(&real, &dir.join("link.incept")));
        assert!(same_file(&real, &dir.join(".").join("real.incept")));
        assert!(!same_file(&real, &dir.join("missing")));
    }

    #[test]
    fn writability_is_checked_without_leaving_anything() {
        let dir = scratch("check");
        check_writable(&dir.join("new.incept")).unwrap();
        assert!(check_writable(&dir.join("no/such/folder/x.npy")).is_err());
        assert!(check_writable(&dir).is_err());
        assert!(leftovers(&dir).is_empty());
        let err = write_atomic(&dir.join("no/such/folder/x.npy"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
