//! Consortium PKI: provisioning and loading of the federation's certificates.
//!
//! One consortium CA signs one certificate per node (the coordinator and each
//! hospital). A node's identity is its name, carried as the certificate's only
//! DNS subject-alternative name; the transport checks that name against the
//! roster after every handshake. This module owns the files on disk
//! (`ca.pem`, `<name>.pem`, `<name>.key`) and their checks; it does no network
//! I/O. The CA's private key is used only while provisioning and never written,
//! so adding a node means provisioning the consortium again.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Default name of the coordinator's certificate.
pub const DEFAULT_COORDINATOR_NAME: &str = "coordinator";

/// File name of the consortium CA certificate inside a PKI directory.
pub const CA_FILE: &str = "ca.pem";

/// Errors of provisioning and loading the consortium PKI (local setup).
/// [`crate::Error::Pki`] carries them for users handling one error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A node name is not usable as a certificate DNS name.
    #[error("invalid node name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The same node name was given twice.
    #[error("node name {0:?} given more than once")]
    DuplicateName(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Provisioning refuses to overwrite an existing file.
    #[error("{0} already exists; refusing to overwrite PKI material")]
    AlreadyExists(PathBuf),
    /// A file does not hold the expected PEM block.
    #[error("{path}: not a PEM file holding {expected}")]
    NotPem {
        /// The file concerned.
        path: PathBuf,
        /// What it should have held.
        expected: &'static str,
    },
    /// A certificate could not be parsed.
    #[error("{path}: unparsable certificate: {reason}")]
    BadCertificate {
        /// The file concerned.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A private key could not be parsed.
    #[error("{path}: unparsable private key: {reason}")]
    BadKey {
        /// The file concerned.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate is not signed by the consortium CA.
    #[error("certificate {cert} is not signed by the consortium CA {ca}: {reason}")]
    NotSignedByCa {
        /// The certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// Why verification failed.
        reason: String,
    },
    /// The certificate does not carry exactly one DNS name.
    #[error("certificate {path} must carry exactly one DNS name, found {found:?}")]
    NoSingleName {
        /// The certificate file.
        path: PathBuf,
        /// The DNS names found.
        found: Vec<String>,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

type Result<T> = std::result::Result<T, PkiError>;

/// Checks that `name` is a single lower-case DNS label (what the roster and
/// certificates use as node identity).
pub fn validate_node_name(name: &str) -> Result<()> {
    let bad = |reason| PkiError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1 to 63 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("only a-z, 0-9 and '-' are allowed"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("must not start or end with '-'"));
    }
    Ok(())
}

/// Paths of a node's PKI files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    /// The consortium CA certificate.
    pub ca: PathBuf,
    /// The node's certificate.
    pub cert: PathBuf,
    /// The node's private key.
    pub key: PathBuf,
}

impl PkiPaths {
    /// The conventional paths of node `name` inside a provisioned directory.
    pub fn in_dir(dir: &Path, name: &str) -> PkiPaths {
        PkiPaths {
            ca: dir.join(CA_FILE),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// Provisions a consortium into `out_dir`: a fresh CA, then one certificate and
/// key per name in `nodes` (the coordinator's name included by the caller).
/// Keys are created with mode 0600; existing files are never overwritten.
/// Returns the written paths per node, in the order given.
pub fn provision(out_dir: &Path, nodes: &[String]) -> Result<Vec<(String, PkiPaths)>> {
    for (i, n) in nodes.iter().enumerate() {
        validate_node_name(n)?;
        if nodes[..i].contains(n) {
            return Err(PkiError::DuplicateName(n.clone()));
        }
    }
    fs::create_dir_all(out_dir).map_err(|source| PkiError::Io {
        path: out_dir.to_owned(),
        source,
    })?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    // A unique name per consortium, so another consortium's CA is never even
    // taken for ours by name.
    let ca_name = format!("federation consortium CA {:016x}", rand::random::<u64>());
    dn.push(DnType::CommonName, ca_name);
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write_new(&out_dir.join(CA_FILE), ca_cert.pem().as_bytes(), 0o644)?;

    let mut written = Vec::with_capacity(nodes.len());
    for name in nodes {
        let mut params = CertificateParams::new(vec![name.clone()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name.as_str());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node is both a TLS server (accepting) and a client (connecting).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        let paths = PkiPaths::in_dir(out_dir, name);
        write_new(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
        write_new(&paths.cert, cert.pem().as_bytes(), 0o644)?;
        written.push((name.clone(), paths));
    }
    Ok(written)
}

/// Creates `path` with `mode` (the mode is applied at creation, so a key is never
/// readable by others, not even briefly) and writes `bytes`, synced to disk.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::AlreadyExists(path.to_owned())
            } else {
                io(e)
            }
        })?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Loads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(path)?;
    let mut slice = bytes.as_slice();
    let mut out = Vec::new();
    for c in rustls_pemfile::certs(&mut slice) {
        let c = c.map_err(|e| PkiError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        x509_parser::parse_x509_certificate(&c).map_err(|e| PkiError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        out.push(c);
    }
    if out.is_empty() {
        return Err(PkiError::NotPem {
            path: path.to_owned(),
            expected: "a CERTIFICATE block",
        });
    }
    Ok(out)
}

/// Loads the first certificate of a PEM file.
pub fn load_cert(path: &Path) -> Result<CertificateDer<'static>> {
    let bytes = read(path)?;
    let mut slice = bytes.as_slice();
    let first = rustls_pemfile::certs(&mut slice).next();
    match first {
        Some(Ok(c)) => {
            // Parse once here so later code can rely on a well-formed certificate.
            x509_parser::parse_x509_certificate(&c).map_err(|e| PkiError::BadCertificate {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            Ok(c)
        }
        Some(Err(e)) => Err(PkiError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        None => Err(PkiError::NotPem {
            path: path.to_owned(),
            expected: "a CERTIFICATE block",
        }),
    }
}

/// Loads a PEM private key (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read(path)?;
    match rustls_pemfile::private_key(&mut bytes.as_slice()) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(PkiError::NotPem {
            path: path.to_owned(),
            expected: "a PRIVATE KEY block",
        }),
        Err(e) => Err(PkiError::BadKey {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// The DNS subject-alternative names of a certificate.
pub fn dns_names(cert: &CertificateDer<'_>) -> std::result::Result<Vec<String>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for gn in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = gn {
                names.push((*n).to_owned());
            }
        }
    }
    Ok(names)
}

/// A node's loaded, checked credentials: the consortium CA (the CA file may
/// hold several CA certificates, e.g. during a CA rollover: all are trusted),
/// its certificate and matching private key, and the name the certificate asserts.
pub struct NodeIdentity {
    name: String,
    ca: Vec<CertificateDer<'static>>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key never appears in logs.
        f.debug_struct("NodeIdentity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            name: self.name.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl NodeIdentity {
    /// Loads and checks a node's files: each is PEM, the key matches the
    /// certificate, the certificate is signed by the CA and carries exactly one
    /// DNS name (the node's identity).
    pub fn load(paths: &PkiPaths) -> Result<NodeIdentity> {
        let ca = load_certs(&paths.ca)?;
        let cert = load_cert(&paths.cert)?;
        let key = load_key(&paths.key)?;

        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert).map_err(|e| PkiError::BadCertificate {
                path: paths.cert.clone(),
                reason: e.to_string(),
            })?;
        let mut last_err = String::new();
        let signed = ca
            .iter()
            .any(|c| match x509_parser::parse_x509_certificate(c) {
                Ok((_, ca_parsed)) => match parsed.verify_signature(Some(ca_parsed.public_key())) {
                    Ok(()) => true,
                    Err(e) => {
                        last_err = e.to_string();
                        false
                    }
                },
                Err(e) => {
                    last_err = e.to_string();
                    false
                }
            });
        if !signed {
            return Err(PkiError::NotSignedByCa {
                cert: paths.cert.clone(),
                ca: paths.ca.clone(),
                reason: last_err,
            });
        }

        let key_pem = fs::read_to_string(&paths.key).map_err(|source| PkiError::Io {
            path: paths.key.clone(),
            source,
        })?;
        let pair = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadKey {
            path: paths.key.clone(),
            reason: e.to_string(),
        })?;
        if pair.public_key_der() != parsed.public_key().raw {
            return Err(PkiError::KeyMismatch {
                cert: paths.cert.clone(),
                key: paths.key.clone(),
            });
        }

        let names = dns_names(&cert).map_err(|reason| PkiError::BadCertificate {
            path: paths.cert.clone(),
            reason,
        })?;
        let [name] = names.as_slice() else {
            return Err(PkiError::NoSingleName {
                path: paths.cert.clone(),
                found: names,
            });
        };
        let name = name.clone();
        Ok(NodeIdentity {
            name,
            ca,
            cert,
            key,
        })
    }

    /// The node name its certificate asserts.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The trusted CA certificates.
    pub fn ca(&self) -> &[CertificateDer<'static>] {
        &self.ca
    }

    /// The node's certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// A copy of the node's private key (for building TLS configs).
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn provision_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let written = provision(dir.path(), &names(&["coordinator", "hospital-1"])).unwrap();
        assert_eq!(written.len(), 2);
        for (name, paths) in &written {
            let id = NodeIdentity::load(paths).unwrap();
            assert_eq!(id.name(), name);
            let mode = fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "key {} mode {mode:o}", paths.key.display());
        }
        assert!(dir.path().join("ca.pem").exists());
    }

    #[test]
    fn refuses_overwrite_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        provision(dir.path(), &names(&["a"])).unwrap();
        assert!(matches!(
            provision(dir.path(), &names(&["b"])),
            Err(PkiError::AlreadyExists(_))
        ));
        for bad in ["", "Upper", "has space", "-lead", "trail-", "a.b"] {
            assert!(validate_node_name(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            provision(&dir.path().join("x"), &names(&["a", "a"])),
            Err(PkiError::DuplicateName(_))
        ));
    }

    #[test]
    fn load_errors_are_specific() {
        let dir = tempfile::tempdir().unwrap();
        let w = provision(dir.path(), &names(&["n1", "n2"])).unwrap();
        let p1 = &w[0].1;
        let p2 = &w[1].1;

        let missing = PkiPaths {
            cert: dir.path().join("nope.pem"),
            ..p1.clone()
        };
        let e = NodeIdentity::load(&missing).unwrap_err();
        assert!(matches!(e, PkiError::Io { .. }), "{e}");
        assert!(e.to_string().contains("nope.pem"));

        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "hello").unwrap();
        let e = NodeIdentity::load(&PkiPaths {
            cert: junk.clone(),
            ..p1.clone()
        })
        .unwrap_err();
        assert!(matches!(e, PkiError::NotPem { .. }), "{e}");
        let e = NodeIdentity::load(&PkiPaths {
            key: junk,
            ..p1.clone()
        })
        .unwrap_err();
        assert!(matches!(e, PkiError::NotPem { .. }), "{e}");

        let e = NodeIdentity::load(&PkiPaths {
            key: p2.key.clone(),
            ..p1.clone()
        })
        .unwrap_err();
        assert!(matches!(e, PkiError::KeyMismatch { .. }), "{e}");

        let other = tempfile::tempdir().unwrap();
        let w2 = provision(other.path(), &names(&["n1"])).unwrap();
        let e = NodeIdentity::load(&PkiPaths {
            ca: p1.ca.clone(),
            ..w2[0].1.clone()
        })
        .unwrap_err();
        assert!(matches!(e, PkiError::NotSignedByCa { .. }), "{e}");
    }
}
