//! The coordinator's Paillier key file (atomic writes of the checkpoint and
//! results go through [`node::files::write_atomic`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use num_bigint::BigUint;
use paillier::PrivateKey;
use serde::{Deserialize, Serialize};

/// On-disk form of the Paillier private key: its two primes, hex.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    /// Modulus size in bits.
    bits: usize,
    /// First prime, lower-case hex.
    p: String,
    /// Second prime, lower-case hex.
    q: String,
}

/// Loads the key at `path` if it exists (checking its size is `bits`), else
/// generates one and saves it with mode 0600. Returns the key and whether it
/// was generated.
pub fn load_or_generate_key(path: &Path, bits: usize) -> Result<(PrivateKey, bool)> {
    if path.exists() {
        // Refused when others can read it; wiped from memory after parsing.
        let text = node::files::read_secret(path)?;
        let kf: KeyFile = serde_json::from_slice(&text)
            .with_context(|| format!("parsing key file {}", path.display()))?;
        let parse = |s: &str, what: &str| {
            BigUint::parse_bytes(s.as_bytes(), 16)
                .with_context(|| format!("key file {}: {what} is not hex", path.display()))
        };
        let sk = PrivateKey::from_primes(parse(&kf.p, "p")?, parse(&kf.q, "q")?)
            .with_context(|| format!("key file {} holds an invalid key", path.display()))?;
        let have = sk.public_key().bits();
        if have != bits {
            bail!(
                "key file {} holds a {have}-bit key but key_bits is {bits} (delete it or change key_bits)",
                path.display()
            );
        }
        return Ok((sk, false));
    }
    let (_, sk) = paillier::generate_keypair(bits)
        .with_context(|| format!("generating a {bits}-bit Paillier key"))?;
    let kf = KeyFile {
        bits,
        p: sk.p().to_str_radix(16),
        q: sk.q().to_str_radix(16),
    };
    let json = serde_json::to_vec_pretty(&kf).context("serializing the key")?;
    node::files::create_secret(path, &json)?;
    Ok((sk, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_round_trip_and_size_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        let (sk, generated) = load_or_generate_key(&p, 2048).unwrap();
        assert!(generated);
        let (sk2, generated) = load_or_generate_key(&p, 2048).unwrap();
        assert!(!generated);
        assert_eq!(sk.public_key(), sk2.public_key());
        let e = format!("{:#}", load_or_generate_key(&p, 3072).unwrap_err());
        assert!(e.contains("2048-bit") && e.contains("3072"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", load_or_generate_key(&p, 2048).unwrap_err());
        assert!(e.contains("mode 644"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, "{}").unwrap();
        assert!(load_or_generate_key(&p, 2048).is_err());
    }

    #[test]
    fn reads_peak_rss() {
        assert!(node::process::peak_rss_bytes().unwrap() > 0);
    }
}
