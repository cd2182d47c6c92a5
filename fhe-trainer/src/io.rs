//! Files exchanged between the data owner and the server.
//!
//! Every file is a fixed header followed by one payload:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `b"FHETRAIN"` |
//! | 2 | format version, little endian ([`FORMAT_VERSION`]) |
//! | 1 | [`FileKind`] |
//! | 1 | reserved, 0 |
//! | 8 | payload length, little endian |
//!
//! The payload is bincode behind a size limit that depends on the kind, so a
//! corrupt or hostile length can never make the reader allocate more than the
//! limit. Ciphertexts that tfhe can version (`shortint::Ciphertext`) are
//! written with tfhe's `safe_serialize` and read back with `safe_deserialize`
//! and a per-ciphertext limit; tfhe 1.8 offers no `Named` impl for the
//! compressed server key and seeded ciphertexts, so those go through bincode
//! under this header and are checked with tfhe's `is_conformant` after
//! decoding.
//!
//! Every file is written with mode 0600 through a fresh temporary file
//! (`create_new`) renamed into place; the client key and the owner file are
//! refused on load when their group or others have any access.

use std::io::{Read, Write};
use std::path::Path;

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tfhe::shortint::parameters::CiphertextConformanceParams;
use tfhe::shortint::Ciphertext;

use crate::error::{Error, Result};

/// File magic.
pub const MAGIC: &[u8; 8] = b"FHETRAIN";
/// Current format version.
pub const FORMAT_VERSION: u16 = 2;
/// Header length in bytes.
pub const HEADER_LEN: usize = 20;
/// Upper bound of one safe-serialized shortint ciphertext.
pub const CIPHERTEXT_LIMIT: u64 = 1 << 16;

/// What a file holds; each kind has its own size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// The data owner's secret key material and preprocessing.
    ClientKey = 1,
    /// The compressed server key.
    ServerKey = 2,
    /// The circuit config, encrypted training batches and initial weights.
    Batches = 3,
    /// Encrypted weights after training.
    Weights = 4,
    /// Encrypted rows for inference.
    Rows = 5,
    /// Encrypted sigmoid levels from inference.
    Predictions = 6,
    /// The data owner's clear preprocessing, circuit config and test rows.
    Owner = 7,
    /// A decrypted model.
    Model = 8,
}

impl FileKind {
    fn from_byte(b: u8) -> Option<FileKind> {
        Some(match b {
            1 => FileKind::ClientKey,
            2 => FileKind::ServerKey,
            3 => FileKind::Batches,
            4 => FileKind::Weights,
            5 => FileKind::Rows,
            6 => FileKind::Predictions,
            7 => FileKind::Owner,
            8 => FileKind::Model,
            _ => return None,
        })
    }

    /// Largest payload accepted for this kind.
    pub fn limit(self) -> u64 {
        match self {
            FileKind::ClientKey => 64 << 20,
            FileKind::ServerKey => 1 << 30,
            FileKind::Batches | FileKind::Rows => 512 << 20,
            FileKind::Weights | FileKind::Predictions => 64 << 20,
            FileKind::Owner => 256 << 20,
            FileKind::Model => 16 << 20,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileKind::ClientKey => "client key file",
            FileKind::ServerKey => "server key file",
            FileKind::Batches => "batches file",
            FileKind::Weights => "weights file",
            FileKind::Rows => "rows file",
            FileKind::Predictions => "predictions file",
            FileKind::Owner => "owner file",
            FileKind::Model => "model file",
        }
    }

    /// Kinds holding secrets: refused on load when others may read them.
    fn is_secret(self) -> bool {
        matches!(self, FileKind::ClientKey | FileKind::Owner)
    }
}

fn bincode_opts(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(limit)
}

/// Encodes `value` as a complete file of `kind` in memory.
pub fn encode<T: Serialize>(kind: FileKind, value: &T) -> Result<Vec<u8>> {
    let payload = bincode_opts(kind.limit())
        .serialize(value)
        .map_err(|e| Error::Encode {
            what: kind.name(),
            detail: e.to_string(),
        })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a complete file of `kind`; never panics on bad bytes.
pub fn decode<T: DeserializeOwned>(kind: FileKind, bytes: &[u8]) -> Result<T> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::Header(format!(
            "{}: {} bytes is shorter than the header",
            kind.name(),
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(Error::Header(format!("{}: bad magic", kind.name())));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(Error::Header(format!(
            "{}: format version {version}, this build reads {FORMAT_VERSION}",
            kind.name()
        )));
    }
    match FileKind::from_byte(bytes[10]) {
        Some(k) if k == kind => {}
        Some(k) => {
            return Err(Error::Header(format!(
                "expected a {}, found a {}",
                kind.name(),
                k.name()
            )))
        }
        None => {
            return Err(Error::Header(format!(
                "{}: unknown kind {}",
                kind.name(),
                bytes[10]
            )))
        }
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len_bytes);
    if len > kind.limit() {
        return Err(Error::TooLarge {
            what: kind.name(),
            size: len,
            limit: kind.limit(),
        });
    }
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(Error::Header(format!(
            "{}: header says {len} payload bytes, file has {}",
            kind.name(),
            payload.len()
        )));
    }
    bincode_opts(kind.limit())
        .deserialize(payload)
        .map_err(|e| Error::Decode {
            what: kind.name(),
            detail: e.to_string(),
        })
}

/// Writes a file of `kind`, readable and writable by its owner only (0600).
pub fn write_file<T: Serialize>(path: &Path, kind: FileKind, value: &T) -> Result<()> {
    write_private(path, &encode(kind, value)?)
}

/// Writes `bytes` to `path` with mode 0600: into a fresh temporary file next
/// to it (`create_new`, so an existing file or a planted link is never
/// followed), synced, then renamed over `path`.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::Error::other("path has no file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let tmp = dir.join(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Refuses a secret file that its group or others may read or write.
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
    Ok(())
}

/// Reads a file of `kind`, refusing files over the kind's limit before
/// reading them, and secret kinds (client key, owner file) that others can
/// read.
pub fn read_file<T: DeserializeOwned>(path: &Path, kind: FileKind) -> Result<T> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if kind.is_secret() {
        check_private(path, &meta)?;
    }
    let size = meta.len();
    let max = kind.limit() + HEADER_LEN as u64;
    if size > max {
        return Err(Error::TooLarge {
            what: kind.name(),
            size,
            limit: max,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    decode(kind, &bytes)
}

/// Reads a whole (unframed) file of at most `limit` bytes, refusing larger
/// ones before reading them.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if size > limit {
        return Err(Error::TooLarge {
            what: "file",
            size,
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// `safe_serialize` of one ciphertext.
pub fn ct_to_bytes(ct: &Ciphertext) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    tfhe::safe_serialization::safe_serialize(ct, &mut out, CIPHERTEXT_LIMIT).map_err(|e| {
        Error::Encode {
            what: "ciphertext",
            detail: e.to_string(),
        }
    })?;
    Ok(out)
}

/// `safe_deserialize_conformant` of one ciphertext, with [`CIPHERTEXT_LIMIT`]:
/// the ciphertext must have exactly the shape, moduli, atomic pattern, noise
/// level and degree of `params`.
pub fn ct_from_bytes(bytes: &[u8], params: &CiphertextConformanceParams) -> Result<Ciphertext> {
    tfhe::safe_serialization::safe_deserialize_conformant(bytes, CIPHERTEXT_LIMIT, params).map_err(
        |e| Error::Decode {
            what: "ciphertext",
            detail: e,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header_checks() {
        let v: Vec<u32> = vec![1, 2, 3];
        let bytes = encode(FileKind::Weights, &v).unwrap();
        assert_eq!(decode::<Vec<u32>>(FileKind::Weights, &bytes).unwrap(), v);
        assert!(matches!(
            decode::<Vec<u32>>(FileKind::Batches, &bytes),
            Err(Error::Header(_))
        ));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(decode::<Vec<u32>>(FileKind::Weights, &bad).is_err());
        let mut bad = bytes.clone();
        bad[8] = 9;
        assert!(decode::<Vec<u32>>(FileKind::Weights, &bad)
            .unwrap_err()
            .to_string()
            .contains("version"));
        assert!(decode::<Vec<u32>>(FileKind::Weights, &bytes[..bytes.len() - 1]).is_err());
        assert!(decode::<Vec<u32>>(FileKind::Weights, &bytes[..5]).is_err());
    }

    #[test]
    fn oversized_length_is_refused() {
        let mut bytes = encode(FileKind::Weights, &0u8).unwrap();
        bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode::<u8>(FileKind::Weights, &bytes),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn hostile_vector_length_is_refused() {
        // A payload that claims a huge vector must fail on the limit, not allocate.
        let mut bytes = encode(FileKind::Weights, &vec![0u8; 4]).unwrap();
        bytes[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(decode::<Vec<u8>>(FileKind::Weights, &bytes).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = decode::<Vec<u64>>(FileKind::Rows, &data);
        }
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private_and_open_secrets_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.bin");
        write_file(&p, FileKind::ClientKey, &7u32).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_file::<u32>(&p, FileKind::ClientKey).unwrap(), 7);
        // Overwriting keeps 0600 and leaves no temporary file behind.
        write_file(&p, FileKind::ClientKey, &8u32).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_file::<u32>(&p, FileKind::ClientKey).unwrap_err();
        assert!(matches!(e, Error::Permissions { mode: 0o644, .. }), "{e}");
        // A non-secret kind with the same mode still loads.
        write_file(&p, FileKind::Weights, &9u32).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_file::<u32>(&p, FileKind::Weights).unwrap(), 9);
    }
}
