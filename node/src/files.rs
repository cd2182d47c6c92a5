//! Files a node writes and reads that must not be tampered with or leaked:
//! atomic replacement (checkpoints, state, results), secret files created
//! 0600 and refused on load when others can read them.
//!
//! Atomic writes go through a temporary file with an unpredictable name,
//! created with `create_new` (never an existing file or a planted symlink)
//! and its final mode from the start, then renamed over the target. With
//! `durable`, the file and its directory are fsynced before this returns, so
//! what a caller sends afterwards never refers to state a power loss could
//! undo; without, the rename still makes the write atomic against a crash of
//! the process.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file operation failed; names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A secret file is readable or writable by group or others.
    #[error(
        "{path} holds a secret but has mode {mode:03o}; only its owner may read it \
         (run `chmod 600 {path}`)"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Replaces `path` with `bytes` atomically, the new file having `mode` from
/// its creation; fsynced (file and directory) when `durable`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            fs::File::open(&dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io(path))
}

/// Creates secret file `path` (mode 0600, never overwriting) with `bytes`.
pub fn create_secret(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(d).map_err(io(d))?;
    }
    create_new_synced(path, bytes, 0o600).map_err(io(path))
}

/// Creates `path` (never replacing anything: an existing file or link is
/// `ErrorKind::AlreadyExists`) with `mode` applied at creation, so a secret
/// is never readable by others, not even briefly; writes `bytes` and syncs
/// them to disk. The raw I/O error, for callers with their own error types.
pub fn create_new_synced(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Reads secret file `path`, refusing it when group or others may access it.
pub fn read_secret(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, FileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(FileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(zeroize::Zeroizing::new(fs::read(path).map_err(io(path))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_create_the_folder_and_leave_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.json");
        write_atomic(&p, b"one", 0o600, true).unwrap();
        write_atomic(&p, b"two", 0o600, false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn atomic_writes_replace_and_keep_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one", 0o600, true).unwrap();
        write_atomic(&p, b"two", 0o600, false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let p = dir.path().join("checkpoint.json");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, b"new", 0o600, false).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn secrets_are_0600_never_overwritten_and_refused_when_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mask-key");
        create_secret(&p, &[7; 32]).unwrap();
        assert!(create_secret(&p, &[8; 32]).is_err());
        assert_eq!(read_secret(&p).unwrap().as_slice(), &[7; 32]);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&p).unwrap_err();
        assert!(matches!(e, FileError::TooOpen { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains("mask-key"), "{e}");
    }
}
