//! Helpers both binaries' configuration loaders share: reading a JSON config
//! file, resolving its relative paths, checked durations, and the PKI file
//! paths every node has.
//!
//! Each binary owns its own schema (`FileConfig`) and checked `Config`; this
//! module owns only what is the same in both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::pki::PkiPaths;

/// A node's configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The config file is not valid JSON for this schema.
    #[error("parsing config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde found wrong (it names the line, column and field).
        source: serde_json::Error,
    },
    /// A field holds a value outside its range.
    #[error("config field `{field}`: {reason}")]
    Invalid {
        /// The field's name in the file.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

/// PKI file paths of one node as written in a config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiFiles {
    /// Consortium CA certificate (PEM). Default `pki/ca.pem`.
    pub ca: PathBuf,
    /// This node's certificate (PEM). Default `pki/<name>.pem`.
    pub cert: PathBuf,
    /// This node's private key (PEM, mode 0600). Default `pki/<name>.key`.
    pub key: PathBuf,
    /// The consortium's certificate revocation list (PEM), distributed with
    /// the roster. Default `crl.pem` next to `ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

impl PkiFiles {
    /// The conventional `pki/` paths of node `name`.
    pub fn for_node(name: &str) -> PkiFiles {
        PkiFiles {
            ca: PathBuf::from("pki/ca.pem"),
            cert: PathBuf::from(format!("pki/{name}.pem")),
            key: PathBuf::from(format!("pki/{name}.key")),
            crl: None,
        }
    }

    /// The paths resolved against `base` (the config file's directory).
    pub fn resolve(&self, base: &Path) -> PkiPaths {
        PkiPaths {
            ca: resolve(base, &self.ca),
            cert: resolve(base, &self.cert),
            key: resolve(base, &self.key),
            crl: match &self.crl {
                Some(c) => resolve(base, c),
                None => resolve(base, &self.ca).with_file_name(crate::pki::CRL_FILE),
            },
        }
    }
}

/// Reads config file `path` (the schema's defaults when `None`) and returns it
/// with the directory its relative paths are resolved against.
pub fn read_json<T: DeserializeOwned + Default>(
    path: Option<&Path>,
) -> Result<(T, PathBuf), ConfigError> {
    let Some(p) = path else {
        return Ok((T::default(), PathBuf::new()));
    };
    let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
        path: p.to_owned(),
        source,
    })?;
    let fc = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
        path: p.to_owned(),
        source,
    })?;
    Ok((fc, p.parent().map(Path::to_owned).unwrap_or_default()))
}

/// `p` resolved against `base` unless it is absolute.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Config field `field` of `v` seconds as a duration: positive, finite and
/// below 10^9 s (so it cannot overflow an `Instant`).
pub fn secs(field: &'static str, v: f64) -> Result<Duration, ConfigError> {
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(ConfigError::Invalid {
            field,
            reason: format!("must be a positive number of seconds, got {v}"),
        });
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_must_be_positive_and_finite() {
        assert_eq!(secs("t", 1.5).unwrap(), Duration::from_millis(1500));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e10] {
            let e = secs("round_timeout_secs", bad).unwrap_err().to_string();
            assert!(e.contains("round_timeout_secs"), "{e}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_base() {
        let base = Path::new("/etc/fed");
        assert_eq!(resolve(base, Path::new("k.json")), base.join("k.json"));
        assert_eq!(resolve(base, Path::new("/abs")), PathBuf::from("/abs"));
        let p = PkiFiles::for_node("hospital-1").resolve(base);
        assert_eq!(p.cert, base.join("pki/hospital-1.pem"));
    }

    #[test]
    fn unreadable_and_unparsable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.json");
        let e = read_json::<PkiFilesDefault>(Some(&missing)).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert!(e.to_string().contains("none.json"), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{ \"ca\": 1 }").unwrap();
        let e = read_json::<PkiFilesDefault>(Some(&bad)).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("bad.json"), "{e}");
    }

    /// A one-field schema for the loader tests.
    #[derive(Debug, Default, Deserialize)]
    struct PkiFilesDefault {
        #[allow(dead_code)]
        ca: String,
    }
}
