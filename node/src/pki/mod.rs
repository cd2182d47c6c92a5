//! Consortium PKI: the federation's certificates, keys and revocation list.
//!
//! One consortium CA signs one certificate per node (the coordinator and each
//! hospital). A node's identity is its name, carried as the certificate's only
//! DNS subject-alternative name; the transport checks that name against the
//! roster after every handshake, and every handshake checks the peer's
//! certificate against the consortium's certificate revocation list (CRL).
//!
//! Keys never leave the machine that uses them:
//! - each node generates its own key (0600) and a certificate signing request
//!   ([`request`]);
//! - the CA's operator signs requests with [`ca::Ca::sign`], which reads only
//!   the request, never a node's key; the CA key lives in the CA's own
//!   directory (0600) on the CA operator's machine;
//! - the signed certificate, the CA certificate and the CRL go back to the
//!   node; a renewal is a new request, a revocation a new CRL
//!   ([`ca::Ca::revoke`]) distributed with the roster.
//!
//! [`provision`] runs the same steps for every node on one machine (local
//! trials only: the CA key then sits next to the nodes' keys).
//!
//! This module owns the files on disk (`ca.pem`, `crl.pem`, `<name>.pem`,
//! `<name>.key`, `<name>.csr`, the CA directory) and their checks; it does no
//! network I/O.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::files::{self, FileError};

pub mod ca;

/// Default name of the coordinator's certificate.
pub const DEFAULT_COORDINATOR_NAME: &str = "coordinator";

/// File name of the consortium CA certificate inside a PKI directory.
pub const CA_FILE: &str = "ca.pem";

/// File name of the consortium's certificate revocation list inside a PKI
/// directory (and inside the CA's directory, where it is issued).
pub const CRL_FILE: &str = "crl.pem";

/// Folder of the CA inside a directory made by [`provision`] (local trials).
pub const LOCAL_CA_DIR: &str = "consortium-ca";

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
    /// A secret file (a private key) is missing, unreadable or readable by
    /// others; names the file.
    #[error(transparent)]
    Secret(#[from] FileError),
    /// A certificate signing request is unparsable or its signature (the
    /// requester's proof of holding the key) does not verify.
    #[error("{path}: not a valid certificate signing request: {reason}")]
    BadRequest {
        /// The request file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A request asks for another name than the one the CA operator signs for.
    #[error(
        "{path} requests the name(s) {requested:?}, not {expected:?}; refusing to sign \
         (a request must name exactly the node it is signed for)"
    )]
    RequestNameMismatch {
        /// The request file.
        path: PathBuf,
        /// The names the request carries (DNS names and common name).
        requested: Vec<String>,
        /// The name given to the CA.
        expected: String,
    },
    /// A validity period is out of bounds or a date is unparsable.
    #[error("invalid validity: {0}")]
    BadValidity(String),
    /// A directory is not a CA directory (no CA key in it).
    #[error(
        "{dir} is not a consortium CA directory ({missing} is missing); the CA key lives \
         only in the directory `consortium-ca init` made on the CA operator's machine"
    )]
    NotACa {
        /// The directory given.
        dir: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// The CA's register of issued certificates is unreadable.
    #[error("{path}: {reason}")]
    CaRegister {
        /// The register file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// A serial to revoke was never issued by this CA.
    #[error("serial {serial} was not issued by the CA in {dir}")]
    UnknownSerial {
        /// The serial (hex).
        serial: String,
        /// The CA directory.
        dir: PathBuf,
    },
    /// A revocation list is unparsable, or is not signed by a trusted CA.
    #[error("{path}: unusable certificate revocation list: {reason}")]
    BadCrl {
        /// The CRL file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// No revocation list of a trusted CA is present: every peer certificate
    /// from that CA would be refused (revocation status unknown).
    #[error(
        "{path} holds no revocation list issued by the CA {ca:?} of {ca_file}; \
         get the consortium's current crl.pem from the CA operator"
    )]
    MissingCrl {
        /// The CRL file.
        path: PathBuf,
        /// The CA file.
        ca_file: PathBuf,
        /// The CA's subject.
        ca: String,
    },
}

type Result<T> = std::result::Result<T, PkiError>;

/// Checks that `name` is a single lower-case DNS label (what the roster and
/// certificates use as node identity).
pub fn validate_node_name(name: &str) -> Result<()> {
    match node_name_problem(name) {
        Some(reason) => Err(PkiError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What is wrong with `name` as a node name (1 to 63 characters of `a-z`,
/// `0-9` and `-`, no `-` at either end, so also a safe file name), if
/// anything: the one rule for every tool that names nodes.
pub fn node_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 63 {
        return Some("must be 1 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("only a-z, 0-9 and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("must not start or end with '-'");
    }
    None
}

/// `pki request`, the same in both binaries: this node's private key (0600)
/// and a certificate signing request for the consortium CA (`consortium-ca
/// sign`); the key never leaves `out`.
#[derive(Clone, Debug, clap::Args)]
pub struct RequestArgs {
    /// The node's name (its certificate's DNS name, the roster's name) [required]
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Directory for <name>.key and <name>.csr; existing files are never overwritten
    /// (a renewal is a new request into a new directory) [required]
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl RequestArgs {
    /// Writes the key and the request; returns what to do next, for the
    /// operator.
    pub fn run(&self) -> Result<String> {
        Ok(request(&self.out, &self.name)?.next_steps(&self.name))
    }

    /// What it does, for an error's context.
    pub fn describe(&self) -> String {
        format!(
            "requesting a certificate for {} in {}",
            self.name,
            self.out.display()
        )
    }
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
    /// The consortium's certificate revocation list (one CRL per trusted CA).
    pub crl: PathBuf,
}

impl PkiPaths {
    /// The conventional paths of node `name` inside a provisioned directory.
    pub fn in_dir(dir: &Path, name: &str) -> PkiPaths {
        PkiPaths {
            ca: dir.join(CA_FILE),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            crl: dir.join(CRL_FILE),
        }
    }
}

/// What [`request`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPaths {
    /// The new private key (0600). It stays where it is.
    pub key: PathBuf,
    /// The certificate signing request, for the CA's operator.
    pub csr: PathBuf,
    /// Where the signed certificate is expected back.
    pub cert: PathBuf,
}

impl RequestPaths {
    /// What was written and what the node's operator does next, for humans.
    pub fn next_steps(&self, name: &str) -> String {
        let dir = self.cert.parent().unwrap_or(Path::new("."));
        format!(
            "key: {} (0600; it stays on this machine)\n\
             request: {}\n\
             next: send the request to the CA operator, who runs \
             `consortium-ca sign --ca CA_DIR --csr {name}.csr --name {name}`; put the returned \
             {name}.pem, ca.pem and crl.pem in {}",
            self.key.display(),
            self.csr.display(),
            dir.display()
        )
    }
}

/// Generates node `name`'s private key into `out_dir/<name>.key` (mode 0600,
/// never overwriting) and a certificate signing request for it into
/// `out_dir/<name>.csr`. The request carries only the public key and the
/// name, signed with the key (proof of possession); the key never leaves
/// `out_dir`. A renewal is a new request (into a new directory).
pub fn request(out_dir: &Path, name: &str) -> Result<RequestPaths> {
    validate_node_name(name)?;
    let paths = RequestPaths {
        key: out_dir.join(format!("{name}.key")),
        csr: out_dir.join(format!("{name}.csr")),
        cert: out_dir.join(format!("{name}.pem")),
    };
    for p in [&paths.key, &paths.csr, &paths.cert] {
        if p.exists() {
            return Err(PkiError::AlreadyExists(p.clone()));
        }
    }
    fs::create_dir_all(out_dir).map_err(|source| PkiError::Io {
        path: out_dir.to_owned(),
        source,
    })?;
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let key = KeyPair::generate()?;
    let csr = params.serialize_request(&key)?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    create_secret(&paths.key, key_pem.as_bytes())?;
    write_new(&paths.csr, csr.pem()?.as_bytes(), 0o644)?;
    Ok(paths)
}

/// Provisions a consortium on one machine, for local trials: the CA in
/// `out_dir/consortium-ca/` ([`ca::Ca::init`]), then for every name in
/// `nodes` (the coordinator's included by the caller) the steps of the
/// distributed flow: the node's own key and request ([`request`]), the
/// request signed by the CA ([`ca::Ca::sign`], which reads the request only),
/// and `ca.pem` and `crl.pem` copied next to the nodes' files. Keys are
/// created 0600; existing files are never overwritten. Returns the paths per
/// node, in the order given.
pub fn provision(out_dir: &Path, nodes: &[String]) -> Result<Vec<(String, PkiPaths)>> {
    for (i, n) in nodes.iter().enumerate() {
        validate_node_name(n)?;
        if nodes[..i].contains(n) {
            return Err(PkiError::DuplicateName(n.clone()));
        }
    }
    // Refuse before writing anything, so a second run leaves the first intact.
    let ca_dir = out_dir.join(LOCAL_CA_DIR);
    let mut targets = vec![
        ca_dir.clone(),
        out_dir.join(CA_FILE),
        out_dir.join(CRL_FILE),
    ];
    for n in nodes {
        let p = PkiPaths::in_dir(out_dir, n);
        targets.extend([p.cert, p.key, out_dir.join(format!("{n}.csr"))]);
    }
    if let Some(p) = targets.iter().find(|p| p.exists()) {
        return Err(PkiError::AlreadyExists(p.clone()));
    }
    let mut authority = ca::Ca::init(&ca_dir, ca::DEFAULT_CA_DAYS)?;
    let mut written = Vec::with_capacity(nodes.len());
    for name in nodes {
        let req = request(out_dir, name)?;
        let validity = ca::Validity::from_now(ca::DEFAULT_CERT_DAYS)?;
        authority.sign(&req.csr, name, &validity, &req.cert)?;
        written.push((name.clone(), PkiPaths::in_dir(out_dir, name)));
    }
    for f in [CA_FILE, CRL_FILE] {
        let bytes = read(&ca_dir.join(f))?;
        write_new(&out_dir.join(f), &bytes, 0o644)?;
    }
    Ok(written)
}

/// Creates secret file `path` (0600 from creation, never overwriting).
fn create_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    files::create_secret(path, bytes).map_err(|e| match e {
        FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            PkiError::AlreadyExists(path.to_owned())
        }
        e => PkiError::Secret(e),
    })
}

/// Creates `path` with `mode` (the mode is applied at creation, so a key is never
/// readable by others, not even briefly) and writes `bytes`, synced to disk.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    crate::files::create_new_synced(path, bytes, mode).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::AlreadyExists(path.to_owned())
        } else {
            PkiError::Io {
                path: path.to_owned(),
                source: e,
            }
        }
    })
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
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

/// Loads a PEM private key (PKCS#8, SEC1 or PKCS#1), refusing a file that
/// group or others may read (the error names it).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = files::read_secret(path)?;
    parse_key(path, &bytes)
}

fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>> {
    match rustls_pemfile::private_key(&mut &bytes[..]) {
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

/// Loads the revocation lists of a PEM file (at least one), each checked to be
/// signed by one of `ca` (and so issued by a trusted CA), and checks that every
/// CA of `ca` has one: a CA without a list would make every certificate it
/// issued unverifiable (the transport refuses an unknown revocation status).
pub fn load_crls(
    path: &Path,
    ca: &[CertificateDer<'static>],
    ca_file: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let bad = |reason: String| PkiError::BadCrl {
        path: path.to_owned(),
        reason,
    };
    let bytes = read(path)?;
    let mut out = Vec::new();
    for c in rustls_pemfile::crls(&mut bytes.as_slice()) {
        out.push(c.map_err(|e| bad(e.to_string()))?);
    }
    if out.is_empty() {
        return Err(PkiError::NotPem {
            path: path.to_owned(),
            expected: "an X509 CRL block",
        });
    }
    let cas = ca
        .iter()
        .map(|c| x509_parser::parse_x509_certificate(c).map(|(_, p)| p))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| PkiError::BadCertificate {
            path: ca_file.to_owned(),
            reason: e.to_string(),
        })?;
    let mut covered = vec![false; cas.len()];
    for der in &out {
        let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|e| bad(e.to_string()))?;
        let issuer = cas
            .iter()
            .position(|c| c.subject().as_raw() == crl.issuer().as_raw())
            .ok_or_else(|| bad(format!("issued by {}, not a trusted CA", crl.issuer())))?;
        crl.verify_signature(cas[issuer].public_key())
            .map_err(|e| bad(format!("signature does not verify: {e}")))?;
        covered[issuer] = true;
    }
    if let Some(i) = covered.iter().position(|c| !c) {
        return Err(PkiError::MissingCrl {
            path: path.to_owned(),
            ca_file: ca_file.to_owned(),
            ca: cas[i].subject().to_string(),
        });
    }
    Ok(out)
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
/// the consortium's revocation lists (one per CA), its certificate and
/// matching private key, and the name the certificate asserts.
pub struct NodeIdentity {
    name: String,
    ca: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
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
            crls: self.crls.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl NodeIdentity {
    /// Loads and checks a node's files: each is PEM, the key file is readable
    /// by its owner only, the key matches the certificate, the certificate is
    /// signed by the CA and carries exactly one DNS name (the node's
    /// identity), and the CRL file holds a list signed by every trusted CA.
    /// A certificate outside its validity period is loaded with a warning
    /// (peers will refuse it).
    pub fn load(paths: &PkiPaths) -> Result<NodeIdentity> {
        let ca = load_certs(&paths.ca)?;
        let crls = load_crls(&paths.crl, &ca, &paths.ca)?;
        let cert = load_cert(&paths.cert)?;
        let key_pem = files::read_secret(&paths.key)?;
        let key = parse_key(&paths.key, &key_pem)?;

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

        let key_text = std::str::from_utf8(&key_pem).map_err(|e| PkiError::BadKey {
            path: paths.key.clone(),
            reason: e.to_string(),
        })?;
        let pair = KeyPair::from_pem(key_text).map_err(|e| PkiError::BadKey {
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
        if !parsed.validity().is_valid() {
            tracing::warn!(
                cert = %paths.cert.display(),
                not_before = %parsed.validity().not_before,
                not_after = %parsed.validity().not_after,
                "this node's certificate is outside its validity period: peers will refuse it \
                 (renew: a new `pki request`, signed by the CA)"
            );
        }
        Ok(NodeIdentity {
            name,
            ca,
            crls,
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

    /// The consortium's certificate revocation lists (checked on every
    /// handshake, both directions).
    pub fn crls(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crls
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
    fn the_ca_signs_only_the_requested_name_for_bounded_time_and_revokes() {
        use ca::{Ca, RevokeReason, Validity};
        let dir = tempfile::tempdir().unwrap();
        let mut authority = Ca::init(&dir.path().join("ca"), ca::DEFAULT_CA_DAYS).unwrap();
        assert!(matches!(
            Ca::init(&dir.path().join("ca"), 10),
            Err(PkiError::AlreadyExists(_))
        ));
        let node = dir.path().join("node");
        let req = request(&node, "hospital-1").unwrap();
        assert!(matches!(
            request(&node, "hospital-1"),
            Err(PkiError::AlreadyExists(_))
        ));
        let mode = fs::metadata(&req.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let v = Validity::from_now(ca::DEFAULT_CERT_DAYS).unwrap();
        let e = authority
            .sign(&req.csr, "hospital-2", &v, &dir.path().join("x.pem"))
            .unwrap_err();
        assert!(matches!(e, PkiError::RequestNameMismatch { .. }), "{e}");
        assert!(!dir.path().join("x.pem").exists());
        assert!(Validity::from_now(ca::MAX_CERT_DAYS + 1).is_err());
        assert!(Validity::from_now(0).is_err());
        assert!(Validity::starting("2024-13-01", 1).is_err());
        let issued = authority
            .sign(&req.csr, "hospital-1", &v, &req.cert)
            .unwrap();
        assert_eq!(issued.not_after - issued.not_before, 365 * 86400);
        assert_eq!(authority.serial_of(&req.cert).unwrap(), issued.serial);
        // A tampered request (signature broken) is refused.
        let mut pem = fs::read_to_string(&req.csr).unwrap();
        let i = pem.len() / 2;
        let c = if &pem[i..i + 1] == "A" { "B" } else { "A" };
        pem.replace_range(i..i + 1, c);
        let bad = dir.path().join("bad.csr");
        fs::write(&bad, pem).unwrap();
        assert!(authority
            .sign(&bad, "hospital-1", &v, &dir.path().join("y.pem"))
            .is_err());
        // Revocation survives reopening and lands in the CRL.
        assert!(matches!(
            authority.revoke("00ff", RevokeReason::Superseded),
            Err(PkiError::UnknownSerial { .. })
        ));
        authority
            .revoke(&issued.serial, RevokeReason::KeyCompromise)
            .unwrap();
        let reopened = Ca::open(&dir.path().join("ca")).unwrap();
        assert!(reopened.issued()[0].revoked_at.is_some());
        let crl = fs::read(reopened.crl_path()).unwrap();
        let der = rustls_pemfile::crls(&mut crl.as_slice())
            .next()
            .unwrap()
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_crl(&der).unwrap();
        let serials: Vec<String> = parsed
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        assert_eq!(serials, vec![issued.serial]);
        // Not a CA directory: says where the CA key lives.
        let e = Ca::open(&node).unwrap_err();
        assert!(matches!(e, PkiError::NotACa { .. }), "{e}");
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
        let junk_key = dir.path().join("junk.key");
        crate::files::create_secret(&junk_key, b"hello").unwrap();
        let e = NodeIdentity::load(&PkiPaths {
            key: junk_key,
            ..p1.clone()
        })
        .unwrap_err();
        assert!(matches!(e, PkiError::NotPem { .. }), "{e}");
        // A key others may read is refused, naming the file.
        fs::set_permissions(&p2.key, fs::Permissions::from_mode(0o644)).unwrap();
        let e = NodeIdentity::load(p2).unwrap_err();
        assert!(matches!(e, PkiError::Secret(_)), "{e}");
        assert!(e.to_string().contains(&*p2.key.to_string_lossy()), "{e}");
        fs::set_permissions(&p2.key, fs::Permissions::from_mode(0o600)).unwrap();
        // A CRL of another CA, or none, is refused.
        let e = NodeIdentity::load(&PkiPaths {
            crl: junk.clone(),
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
            crl: w2[0].1.crl.clone(),
            ..p1.clone()
        })
        .unwrap_err();
        assert!(matches!(e, PkiError::BadCrl { .. }), "{e}");
        // Trusting a second CA without its list: refused (its certificates'
        // revocation status would be unknown).
        let both = dir.path().join("both.pem");
        let mut pem = fs::read(&p1.ca).unwrap();
        pem.extend(fs::read(&w2[0].1.ca).unwrap());
        fs::write(&both, pem).unwrap();
        let e = NodeIdentity::load(&PkiPaths {
            ca: both,
            ..p1.clone()
        })
        .unwrap_err();
        assert!(matches!(e, PkiError::MissingCrl { .. }), "{e}");
        let e = NodeIdentity::load(&PkiPaths {
            ca: p1.ca.clone(),
            crl: p1.crl.clone(),
            ..w2[0].1.clone()
        })
        .unwrap_err();
        assert!(matches!(e, PkiError::NotSignedByCa { .. }), "{e}");
    }
}
