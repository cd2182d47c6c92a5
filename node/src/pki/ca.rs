//! The consortium CA: its directory, signing of certificate requests and the
//! revocation list.
//!
//! A CA directory (made by [`Ca::init`], on the CA operator's machine, mode
//! 0700) holds:
//! - `ca.key`: the CA's private key (0600; refused on load when others may
//!   read it). It never leaves this directory and is never needed by a node;
//! - `ca.pem`: the CA certificate, for every node;
//! - `crl.pem`: the current certificate revocation list, for every node (it
//!   travels with the roster);
//! - `issued.json`: the register of issued certificates (serial, name,
//!   validity, revocation).
//!
//! [`Ca::sign`] reads a node's certificate signing request only: the CA never
//! sees a node's private key. It refuses a request whose name is not the one
//! the operator signs for, and issues certificates of bounded validity
//! (default [`DEFAULT_CERT_DAYS`], at most [`MAX_CERT_DAYS`]) built from its own
//! parameters, never from extensions the request asks for.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::{
    create_secret, read, validate_node_name, write_new, PkiError, Result, CA_FILE, CRL_FILE,
};
use crate::files;

/// File name of the CA's private key inside its directory.
pub const KEY_FILE: &str = "ca.key";
/// File name of the CA's register of issued certificates.
pub const REGISTER_FILE: &str = "issued.json";
/// Default validity of a node certificate (days).
pub const DEFAULT_CERT_DAYS: u32 = 365;
/// Longest validity of a node certificate (days).
pub const MAX_CERT_DAYS: u32 = 825;
/// Default validity of the CA certificate (days).
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Longest validity of the CA certificate (days).
pub const MAX_CA_DAYS: u32 = 7300;
/// How far back a certificate starting "now" is dated, for clock skew.
const SKEW: Duration = Duration::minutes(5);
/// The register's format tag.
const REGISTER_FORMAT: &str = "consortium-ca-register/1";

/// A certificate's validity period: from `not_before`, for `days` days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    not_before: OffsetDateTime,
    days: u32,
}

impl Validity {
    /// From `not_before`, for `days` days (1 to [`MAX_CERT_DAYS`]).
    pub fn new(not_before: OffsetDateTime, days: u32) -> Result<Validity> {
        if !(1..=MAX_CERT_DAYS).contains(&days) {
            return Err(PkiError::BadValidity(format!(
                "{days} days; a node certificate is valid 1 to {MAX_CERT_DAYS} days \
                 (renew with a new request)"
            )));
        }
        Ok(Validity { not_before, days })
    }

    /// Starting now (dated a few minutes back for clock skew), for `days` days.
    pub fn from_now(days: u32) -> Result<Validity> {
        Validity::new(now() - SKEW, days)
    }

    /// Starting at midnight UTC of `date` (`YYYY-MM-DD`), for `days` days; a
    /// date in the future issues a certificate that is not valid yet (for a
    /// scheduled rollover), one in the past may issue an expired one.
    pub fn starting(date: &str, days: u32) -> Result<Validity> {
        Validity::new(parse_date(date)?, days)
    }

    /// The first instant of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The last instant of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_before + Duration::days(i64::from(self.days))
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
}

/// Unix seconds as a UTC date and time, for humans.
pub fn format_unix(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix).map_or_else(|_| unix.to_string(), |t| t.to_string())
}

/// Parses `YYYY-MM-DD` as midnight UTC.
pub fn parse_date(date: &str) -> Result<OffsetDateTime> {
    let bad = || PkiError::BadValidity(format!("{date:?} is not a date of the form YYYY-MM-DD"));
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let d: u8 = d.parse().map_err(|_| bad())?;
    let month = time::Month::try_from(m).map_err(|_| bad())?;
    let day = time::Date::from_calendar_date(y, month, d).map_err(|_| bad())?;
    Ok(day.midnight().assume_utc())
}

/// Why a certificate is revoked (the CRL's reason code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeReason {
    /// No reason given.
    Unspecified,
    /// The node's key is (suspected to be) compromised.
    KeyCompromise,
    /// The node left the consortium or changed its role.
    AffiliationChanged,
    /// A renewed certificate replaces this one.
    Superseded,
    /// The node stopped operating.
    CessationOfOperation,
}

impl RevokeReason {
    /// Every reason, with the name the CLI uses for it.
    pub const ALL: [(RevokeReason, &'static str); 5] = [
        (RevokeReason::Unspecified, "unspecified"),
        (RevokeReason::KeyCompromise, "key-compromise"),
        (RevokeReason::AffiliationChanged, "affiliation-changed"),
        (RevokeReason::Superseded, "superseded"),
        (RevokeReason::CessationOfOperation, "cessation-of-operation"),
    ];

    /// The CLI name.
    pub fn as_str(self) -> &'static str {
        RevokeReason::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("unspecified", |(_, n)| n)
    }

    fn code(self) -> RevocationReason {
        match self {
            RevokeReason::Unspecified => RevocationReason::Unspecified,
            RevokeReason::KeyCompromise => RevocationReason::KeyCompromise,
            RevokeReason::AffiliationChanged => RevocationReason::AffiliationChanged,
            RevokeReason::Superseded => RevocationReason::Superseded,
            RevokeReason::CessationOfOperation => RevocationReason::CessationOfOperation,
        }
    }
}

impl std::str::FromStr for RevokeReason {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        RevokeReason::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(r, _)| *r)
            .ok_or_else(|| {
                let names: Vec<_> = RevokeReason::ALL.iter().map(|(_, n)| *n).collect();
                format!("unknown reason {s:?} (one of {})", names.join(", "))
            })
    }
}

/// One certificate the CA issued, as its register records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issued {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// The node name it certifies.
    pub name: String,
    /// Start of validity (Unix seconds).
    pub not_before: i64,
    /// End of validity (Unix seconds).
    pub not_after: i64,
    /// When it was revoked (Unix seconds), if it was.
    pub revoked_at: Option<i64>,
    /// Why it was revoked.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    format: String,
    /// Number of the next CRL (monotonic, RFC 5280 5.2.3).
    next_crl_number: u64,
    certs: Vec<Issued>,
}

/// An open CA directory: its key, certificate and register.
pub struct Ca {
    dir: PathBuf,
    key: KeyPair,
    issuer: rcgen::Certificate,
    register: Register,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The CA key never appears in logs.
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a CA in `dir` (created 0700 if missing): a fresh key (0600),
    /// a self-signed CA certificate valid `days` days (1 to [`MAX_CA_DAYS`])
    /// and an empty revocation list. Never overwrites an existing CA.
    pub fn init(dir: &Path, days: u32) -> Result<Ca> {
        if !(1..=MAX_CA_DAYS).contains(&days) {
            return Err(PkiError::BadValidity(format!(
                "{days} days; the CA certificate is valid 1 to {MAX_CA_DAYS} days"
            )));
        }
        for f in [KEY_FILE, CA_FILE, CRL_FILE, REGISTER_FILE] {
            if dir.join(f).exists() {
                return Err(PkiError::AlreadyExists(dir.join(f)));
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| PkiError::Io {
                path: dir.to_owned(),
                source,
            })?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        // A unique name per consortium, so another consortium's CA is never even
        // taken for ours by name.
        let ca_name = format!("federation consortium CA {:016x}", rand::random::<u64>());
        dn.push(DnType::CommonName, ca_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now() - SKEW;
        params.not_after = params.not_before + Duration::days(i64::from(days));
        params.serial_number = Some(random_serial().1);
        let key = KeyPair::generate()?;
        let issuer = params.self_signed(&key)?;
        let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
        create_secret(&dir.join(KEY_FILE), key_pem.as_bytes())?;
        write_new(&dir.join(CA_FILE), issuer.pem().as_bytes(), 0o644)?;
        let mut ca = Ca {
            dir: dir.to_owned(),
            key,
            issuer,
            register: Register {
                format: REGISTER_FORMAT.into(),
                next_crl_number: 1,
                certs: Vec::new(),
            },
        };
        ca.write_crl()?;
        Ok(ca)
    }

    /// Opens the CA in `dir`: its key (refused when group or others may read
    /// it), its certificate (which the key must match) and its register.
    pub fn open(dir: &Path) -> Result<Ca> {
        let key_path = dir.join(KEY_FILE);
        if !key_path.exists() {
            return Err(PkiError::NotACa {
                dir: dir.to_owned(),
                missing: key_path,
            });
        }
        let key_pem = files::read_secret(&key_path)?;
        let key_text = std::str::from_utf8(&key_pem).map_err(|e| PkiError::BadKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let key = KeyPair::from_pem(key_text).map_err(|e| PkiError::BadKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let cert_path = dir.join(CA_FILE);
        let cert = super::load_cert(&cert_path)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert).map_err(|e| PkiError::BadCertificate {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        if parsed.public_key().raw != key.public_key_der() {
            return Err(PkiError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        // rcgen signs with the issuer's name, key identifier and key usages,
        // all taken from the certificate on disk.
        let params = CertificateParams::from_ca_cert_der(&cert)?;
        let issuer = params.self_signed(&key)?;
        let reg_path = dir.join(REGISTER_FILE);
        let bad = |reason: String| PkiError::CaRegister {
            path: reg_path.clone(),
            reason,
        };
        let register: Register =
            serde_json::from_slice(&read(&reg_path)?).map_err(|e| bad(e.to_string()))?;
        if register.format != REGISTER_FORMAT {
            return Err(bad(format!("unknown format {:?}", register.format)));
        }
        Ok(Ca {
            dir: dir.to_owned(),
            key,
            issuer,
            register,
        })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate's path (`ca.pem`), for every node.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    /// The current revocation list's path (`crl.pem`), for every node.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL_FILE)
    }

    /// Every certificate issued, in issuing order.
    pub fn issued(&self) -> &[Issued] {
        &self.register.certs
    }

    /// Signs the certificate signing request in `csr` for node `name`, valid
    /// for `validity`, and writes the certificate to `out` (never
    /// overwriting). Reads the request only. Refuses a request whose
    /// signature does not verify (the requester must hold the key) or whose
    /// names (DNS names and common name) are not exactly `name`. The
    /// certificate carries `name` as its only DNS name, a fresh random serial,
    /// and the usages of a federation node; nothing else of the request is
    /// copied.
    pub fn sign(
        &mut self,
        csr: &Path,
        name: &str,
        validity: &Validity,
        out: &Path,
    ) -> Result<Issued> {
        validate_node_name(name)?;
        let public_key = read_request(csr, name)?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node is both a TLS server (accepting) and a client (connecting).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = validity.not_before();
        params.not_after = validity.not_after();
        let (serial_hex, serial) = random_serial();
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&public_key, &self.issuer, &self.key)?;
        write_new(out, cert.pem().as_bytes(), 0o644)?;
        let issued = Issued {
            serial: serial_hex,
            name: name.to_owned(),
            not_before: validity.not_before().unix_timestamp(),
            not_after: validity.not_after().unix_timestamp(),
            revoked_at: None,
            reason: None,
        };
        self.register.certs.push(issued.clone());
        self.save_register()?;
        Ok(issued)
    }

    /// The serial (hex) of certificate file `cert`, which must have been
    /// issued by this CA.
    pub fn serial_of(&self, cert: &Path) -> Result<String> {
        let der = super::load_cert(cert)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::BadCertificate {
                path: cert.to_owned(),
                reason: e.to_string(),
            })?;
        let ca_der = super::load_cert(&self.cert_path())?;
        let (_, ca) =
            x509_parser::parse_x509_certificate(&ca_der).map_err(|e| PkiError::BadCertificate {
                path: self.cert_path(),
                reason: e.to_string(),
            })?;
        parsed
            .verify_signature(Some(ca.public_key()))
            .map_err(|e| PkiError::NotSignedByCa {
                cert: cert.to_owned(),
                ca: self.cert_path(),
                reason: e.to_string(),
            })?;
        Ok(hex(parsed.raw_serial()))
    }

    /// Revokes the certificate with serial `serial` (hex, as the register and
    /// `sign` print it) and rewrites `crl.pem` with a new CRL number. Revoking
    /// twice keeps the first revocation.
    pub fn revoke(&mut self, serial: &str, reason: RevokeReason) -> Result<Issued> {
        let serial = serial.trim().trim_start_matches("0x").to_ascii_lowercase();
        let Some(entry) = self.register.certs.iter_mut().find(|c| c.serial == serial) else {
            return Err(PkiError::UnknownSerial {
                serial,
                dir: self.dir.clone(),
            });
        };
        if entry.revoked_at.is_none() {
            entry.revoked_at = Some(now().unix_timestamp());
            entry.reason = Some(reason.as_str().to_owned());
        }
        let entry = entry.clone();
        self.write_crl()?;
        Ok(entry)
    }

    /// Issues a new CRL listing every revoked certificate (atomically
    /// replacing `crl.pem`) and saves the register.
    fn write_crl(&mut self) -> Result<()> {
        let this_update = now();
        let mut revoked = Vec::new();
        for c in &self.register.certs {
            let Some(at) = c.revoked_at else { continue };
            let bytes = unhex(&c.serial).ok_or_else(|| PkiError::CaRegister {
                path: self.dir.join(REGISTER_FILE),
                reason: format!("serial {:?} is not hex", c.serial),
            })?;
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: OffsetDateTime::from_unix_timestamp(at).unwrap_or(this_update),
                reason_code: c
                    .reason
                    .as_deref()
                    .and_then(|r| r.parse::<RevokeReason>().ok())
                    .map(RevokeReason::code),
                invalidity_date: None,
            });
        }
        let crl = CertificateRevocationListParams {
            this_update,
            // Informative: nodes use the list they are given until a newer one
            // is distributed (they do not enforce next_update).
            next_update: this_update + Duration::days(i64::from(DEFAULT_CERT_DAYS)),
            crl_number: SerialNumber::from(self.register.next_crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer, &self.key)?;
        self.register.next_crl_number += 1;
        let path = self.crl_path();
        files::write_atomic(&path, crl.pem()?.as_bytes(), 0o644, true).map_err(PkiError::Secret)?;
        self.save_register()
    }

    fn save_register(&self) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(&self.register).map_err(|e| PkiError::CaRegister {
                path: self.dir.join(REGISTER_FILE),
                reason: e.to_string(),
            })?;
        files::write_atomic(&self.dir.join(REGISTER_FILE), &bytes, 0o600, true)
            .map_err(PkiError::Secret)
    }
}

/// Reads and checks a certificate signing request for `name`; returns its
/// public key.
fn read_request(path: &Path, name: &str) -> Result<rcgen::SubjectPublicKeyInfo> {
    use x509_parser::prelude::FromDer;
    let bad = |reason: String| PkiError::BadRequest {
        path: path.to_owned(),
        reason,
    };
    let bytes = read(path)?;
    let der = match rustls_pemfile::csr(&mut bytes.as_slice()) {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Err(PkiError::NotPem {
                path: path.to_owned(),
                expected: "a CERTIFICATE REQUEST block",
            })
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| bad(e.to_string()))?;
    req.verify_signature()
        .map_err(|e| bad(format!("signature does not verify: {e}")))?;
    let info = &req.certification_request_info;
    let mut requested: Vec<String> = Vec::new();
    let mut dns = Vec::new();
    if let Some(exts) = req.requested_extensions() {
        for ext in exts {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                for gn in &san.general_names {
                    let n = match gn {
                        x509_parser::extensions::GeneralName::DNSName(n) => {
                            dns.push((*n).to_owned());
                            (*n).to_owned()
                        }
                        other => format!("{other:?}"),
                    };
                    requested.push(n);
                }
            }
        }
    }
    for cn in info.subject.iter_common_name() {
        requested.push(
            cn.as_str()
                .map_err(|e| bad(format!("common name: {e}")))?
                .to_owned(),
        );
    }
    if dns != [name] || requested.iter().any(|n| n != name) {
        return Err(PkiError::RequestNameMismatch {
            path: path.to_owned(),
            requested,
            expected: name.to_owned(),
        });
    }
    rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw).map_err(|e| bad(e.to_string()))
}

/// A fresh positive 128-bit serial (hex, and for rcgen).
fn random_serial() -> (String, SerialNumber) {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and of full length, so its DER encoding is these 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    (hex(&bytes), SerialNumber::from_slice(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
