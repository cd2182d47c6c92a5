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
//!
//! A file rewritten on every round (a hospital's protocol state, the
//! coordinator's checkpoint) is a [`Journal`] instead: each new version is
//! appended as one line and made durable with one `fdatasync`, about a third
//! of what an atomic replacement costs (file and directory fsyncs); the
//! newest complete line is the file's content.

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
    /// A journal's newest record is not the JSON its reader expects.
    #[error("{path}: its newest record does not parse: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
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

/// Bytes after which a [`Journal`] is compacted to its newest record.
const COMPACT_BYTES: u64 = 4 << 20;

/// A file whose content is its newest record, kept as an append-only log of
/// one-line records (compact JSON never holds a raw newline).
///
/// `append` writes `record\n` in one `write` to a file opened with
/// `O_APPEND` (and `O_NOFOLLOW`: a planted symlink is refused, not followed),
/// and with `durable` calls `fdatasync` before returning, which makes every
/// earlier append durable too. A crash can leave at most a torn last line,
/// which has no newline: [`open`](Self::open) ignores it (the next append
/// cuts it off), so the newest
/// complete line is always a record that was written whole. Past
/// `COMPACT_BYTES` the file is replaced atomically and durably by its newest
/// record alone. The file is created with `mode` and refused on open when
/// group or others may access it and `mode` does not allow that.
pub struct Journal {
    path: PathBuf,
    mode: u32,
    /// Open for appending, once the file exists.
    file: Option<fs::File>,
    /// Complete lines' bytes.
    len: u64,
    /// Whether a torn line follows them.
    torn: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal at `path` (creating nothing yet) and returns its
    /// newest complete record, if any. A torn last line is ignored here and
    /// cut by the next append (so a caller that cannot parse the record
    /// leaves the file as it found it).
    pub fn open(path: &Path, mode: u32) -> Result<(Self, Option<Vec<u8>>), FileError> {
        let mut j = Journal {
            path: path.to_owned(),
            mode,
            file: None,
            len: 0,
            torn: false,
        };
        let bytes = match read_journal_file(path, mode)? {
            Some(b) => b,
            None => return Ok((j, None)),
        };
        let complete = complete_len(&bytes);
        j.file = Some(append_handle(path, mode, false).map_err(io(path))?);
        j.len = complete as u64;
        j.torn = complete < bytes.len();
        Ok((j, newest_line(&bytes[..complete]).map(<[u8]>::to_vec)))
    }

    /// [`open`](Self::open), the newest record parsed as JSON.
    pub fn open_json<T: serde::de::DeserializeOwned>(
        path: &Path,
        mode: u32,
    ) -> Result<(Self, Option<T>), FileError> {
        let (j, newest) = Self::open(path, mode)?;
        let value = newest
            .map(|r| serde_json::from_slice(&r))
            .transpose()
            .map_err(|source| FileError::Parse {
                path: path.to_owned(),
                source,
            })?;
        Ok((j, value))
    }

    /// The newest complete record of the journal at `path`, without opening
    /// it for writing (for readers such as tests and tools).
    pub fn read_newest(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
        Ok(read_journal_file(path, 0o777)?
            .and_then(|b| newest_line(&b[..complete_len(&b)]).map(<[u8]>::to_vec)))
    }

    /// Appends `record` (one line: it must not contain a newline); durable
    /// before this returns when `durable`.
    pub fn append(&mut self, record: &[u8], durable: bool) -> Result<(), FileError> {
        if record.contains(&b'\n') {
            return Err(FileError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a journal record must be one line",
                ),
            });
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        if self.len + line.len() as u64 > COMPACT_BYTES && self.file.is_some() {
            // Replace the whole log by this record (durable whatever was asked).
            write_atomic(&self.path, &line, self.mode, true)?;
            self.file = Some(append_handle(&self.path, self.mode, false).map_err(io(&self.path))?);
            self.len = line.len() as u64;
            self.torn = false;
            return Ok(());
        }
        let path = &self.path;
        if self.file.is_none() {
            if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(d).map_err(io(d))?;
            }
            self.file = Some(append_handle(path, self.mode, true).map_err(io(path))?);
            if durable {
                // The new file's directory entry is part of what must last.
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                fs::File::open(dir.unwrap_or(Path::new(".")))
                    .and_then(|d| d.sync_all())
                    .map_err(io(path))?;
            }
        }
        let f = self.file.as_mut().expect("opened above");
        if self.torn {
            // Cut the torn line so this record starts on a line of its own.
            f.set_len(self.len).map_err(io(path))?;
            self.torn = false;
        }
        f.write_all(&line).map_err(io(path))?;
        if durable {
            f.sync_data().map_err(io(path))?;
        }
        self.len += line.len() as u64;
        Ok(())
    }
}

/// The journal's bytes, or None when it does not exist; refused when its mode
/// grants group or others more than `mode` does, or when it is a symlink.
fn read_journal_file(path: &Path, mode: u32) -> Result<Option<Vec<u8>>, FileError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    if !meta.file_type().is_file() {
        return Err(io(path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file (a symlink is never followed)",
        )));
    }
    refuse_open(path, &meta, mode)?;
    fs::read(path).map(Some).map_err(io(path))
}

/// Refuses `path` when its permissions grant group or others more than
/// `allowed` does.
fn refuse_open(path: &Path, meta: &fs::Metadata, allowed: u32) -> Result<(), FileError> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 & !allowed != 0 {
        return Err(FileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Bytes of `bytes` up to and including its last newline (its complete lines).
fn complete_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// The last line of `complete` (which ends with a newline, or is empty),
/// without its newline.
fn newest_line(complete: &[u8]) -> Option<&[u8]> {
    let body = complete.strip_suffix(b"\n")?;
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Some(&body[start..])
}

fn append_handle(path: &Path, mode: u32, create: bool) -> std::io::Result<fs::File> {
    OpenOptions::new()
        .append(true)
        .create_new(create)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Reads secret file `path`, refusing it when group or others may access it.
pub fn read_secret(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, FileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    refuse_open(path, &meta, 0o600)?;
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
    fn a_journal_reads_back_its_newest_record_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        let (mut j, first) = Journal::open(&p, 0o600).unwrap();
        assert_eq!(first, None);
        j.append(b"{\"v\":1}", true).unwrap();
        j.append(b"{\"v\":2}", false).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(j);
        let (mut j, newest) = Journal::open(&p, 0o600).unwrap();
        assert_eq!(newest.as_deref(), Some(&b"{\"v\":2}"[..]));
        j.append(b"{\"v\":3}", true).unwrap();
        assert_eq!(
            Journal::read_newest(&p).unwrap().as_deref(),
            Some(&b"{\"v\":3}"[..])
        );
        assert!(j.append(b"two\nlines", false).is_err());
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("checkpoint.json");
        let (mut j, _) = Journal::open(&p, 0o600).unwrap();
        j.append(b"whole", true).unwrap();
        drop(j);
        // A crash in the middle of the next append.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"tor").unwrap();
        drop(f);
        let (mut j, newest) = Journal::open(&p, 0o600).unwrap();
        assert_eq!(newest.as_deref(), Some(&b"whole"[..]));
        j.append(b"next", false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"whole\nnext\n");
    }

    #[test]
    fn a_journal_compacts_to_its_newest_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let (mut j, _) = Journal::open(&p, 0o600).unwrap();
        let big = vec![b'x'; 1 << 20];
        for _ in 0..5 {
            j.append(&big, false).unwrap();
        }
        j.append(b"last", false).unwrap();
        assert!(fs::metadata(&p).unwrap().len() < COMPACT_BYTES);
        assert_eq!(
            Journal::read_newest(&p).unwrap().as_deref(),
            Some(&b"last"[..])
        );
        drop(j);
        let (_, newest) = Journal::open(&p, 0o600).unwrap();
        assert_eq!(newest.as_deref(), Some(&b"last"[..]));
    }

    #[test]
    fn a_journal_refuses_open_modes_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        fs::write(&p, b"x\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Journal::open(&p, 0o600).unwrap_err();
        assert!(matches!(e, FileError::TooOpen { mode: 0o644, .. }), "{e}");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep\n").unwrap();
        let l = dir.path().join("link.json");
        std::os::unix::fs::symlink(&victim, &l).unwrap();
        let e = Journal::open(&l, 0o600).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep\n");
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
