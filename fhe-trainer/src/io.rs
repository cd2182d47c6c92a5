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
//! under this header.

use std::io::{Read, Write};
use std::path::Path;

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tfhe::shortint::Ciphertext;

use crate::error::{Error, Result};

/// File magic.
pub const MAGIC: &[u8; 8] = b"FHETRAIN";
/// Current format version.
pub const FORMAT_VERSION: u16 = 1;
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
        }
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

/// Writes a file of `kind`.
pub fn write_file<T: Serialize>(path: &Path, kind: FileKind, value: &T) -> Result<()> {
    let bytes = encode(kind, value)?;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&bytes).map_err(|e| Error::io(path, e))
}

/// Reads a file of `kind`, refusing files over the kind's limit before
/// reading them.
pub fn read_file<T: DeserializeOwned>(path: &Path, kind: FileKind) -> Result<T> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
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

/// `safe_deserialize` of one ciphertext, with [`CIPHERTEXT_LIMIT`].
pub fn ct_from_bytes(bytes: &[u8]) -> Result<Ciphertext> {
    tfhe::safe_serialization::safe_deserialize(bytes, CIPHERTEXT_LIMIT).map_err(|e| Error::Decode {
        what: "ciphertext",
        detail: e,
    })
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
}
