//! Checking a relayed certificate and a key offer's signature, the way the
//! transport checks a peer in a TLS handshake: the same rustls WebPKI client
//! verifier over the consortium CA and revocation lists, the same
//! one-DNS-name identity, the roster of this hospital's own config, and the
//! signature verified by webpki with the algorithm rustls maps the scheme to.
//!
//! It owns no files: the CA, the lists and the signing key come from a loaded
//! [`NodeIdentity`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, SignatureScheme};

use super::SealError;
use crate::pki::{dns_names, NodeIdentity};

/// The signature schemes a key offer may be signed with: TLS 1.3's, for the
/// key types a consortium certificate can have.
pub(crate) const OFFER_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

/// Why a relayed certificate was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertRefusal {
    /// The consortium's revocation list names it.
    Revoked,
    /// Not issued by a CA this hospital trusts (another consortium's, or
    /// self-signed).
    UnknownIssuer,
    /// Past its validity period.
    Expired,
    /// Before its validity period.
    NotValidYet,
    /// No revocation list of its CA is present.
    UnknownRevocationStatus,
    /// Any other reason WebPKI gives (unparsable, wrong key usage, ...).
    Other(String),
}

impl fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertRefusal::Revoked => f.write_str("revoked by the consortium's revocation list"),
            CertRefusal::UnknownIssuer => f.write_str("not issued by the consortium CA"),
            CertRefusal::Expired => f.write_str("expired"),
            CertRefusal::NotValidYet => f.write_str("not valid yet"),
            CertRefusal::UnknownRevocationStatus => {
                f.write_str("revocation status unknown (no list of its CA)")
            }
            CertRefusal::Other(s) => f.write_str(s),
        }
    }
}

impl CertRefusal {
    fn from_rustls(e: rustls::Error) -> CertRefusal {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::Revoked => CertRefusal::Revoked,
                CertificateError::UnknownIssuer => CertRefusal::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    CertRefusal::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    CertRefusal::NotValidYet
                }
                CertificateError::UnknownRevocationStatus => CertRefusal::UnknownRevocationStatus,
                other => CertRefusal::Other(format!("{other:?}")),
            },
            other => CertRefusal::Other(other.to_string()),
        }
    }
}

/// What a hospital trusts: the consortium CA and revocation lists of its
/// identity, and the roster of hospitals of its own config.
pub struct Trust {
    me: String,
    roster: BTreeSet<String>,
    verifier: Arc<dyn ClientCertVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("me", &self.me)
            .field("roster", &self.roster)
            .finish_non_exhaustive()
    }
}

impl Trust {
    /// Trust for `identity`'s node among the hospitals of `roster` (its own
    /// config's, never the coordinator's word). The coordinator's name must
    /// not be in it: it is a relay, not a peer.
    pub fn new(
        identity: &NodeIdentity,
        roster: impl IntoIterator<Item = String>,
    ) -> Result<Trust, SealError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in identity.ca() {
            roots
                .add(ca.clone())
                .map_err(|e| SealError::LocalSetup(format!("consortium CA unusable: {e}")))?;
        }
        // Revocation: the full chain against the consortium's lists; an
        // unknown status is refused (the transport's policy).
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(identity.crls().iter().cloned())
                .build()
                .map_err(|e| SealError::LocalSetup(format!("certificate verifier: {e}")))?;
        Ok(Trust {
            me: identity.name().to_owned(),
            roster: roster.into_iter().collect(),
            verifier,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// This hospital's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether `name` is a hospital of the roster.
    pub fn in_roster(&self, name: &str) -> bool {
        self.roster.contains(name)
    }

    /// Checks that `cert` is a valid, unrevoked consortium certificate at
    /// `now` whose one DNS name is `claimed`, a hospital of the roster.
    pub fn check_certificate(
        &self,
        claimed: &str,
        cert: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<(), SealError> {
        if !self.in_roster(claimed) {
            return Err(SealError::NotInRoster {
                claimed: claimed.to_owned(),
            });
        }
        self.verifier
            .verify_client_cert(cert, &[], now)
            .map_err(|e| SealError::CertificateRefused {
                claimed: claimed.to_owned(),
                reason: CertRefusal::from_rustls(e),
            })?;
        let names = dns_names(cert).map_err(|e| SealError::CertificateRefused {
            claimed: claimed.to_owned(),
            reason: CertRefusal::Other(e),
        })?;
        if names != [claimed] {
            return Err(SealError::CertificateNameMismatch {
                claimed: claimed.to_owned(),
                certified: names,
            });
        }
        Ok(())
    }

    /// Verifies `signature` over `msg` with `cert`'s key under `scheme`.
    pub(crate) fn verify_signature(
        &self,
        claimed: &str,
        cert: &CertificateDer<'_>,
        scheme: u16,
        msg: &[u8],
        signature: &[u8],
    ) -> Result<(), SealError> {
        let bad = || SealError::BadSignature {
            claimed: claimed.to_owned(),
        };
        let scheme = SignatureScheme::from(scheme);
        if !OFFER_SCHEMES.contains(&scheme) {
            return Err(bad());
        }
        let alg = self
            .algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme)
            .and_then(|(_, algs)| algs.first())
            .ok_or_else(bad)?;
        let ee = webpki::EndEntityCert::try_from(cert).map_err(|_| bad())?;
        ee.verify_signature(*alg, msg, signature).map_err(|_| bad())
    }
}
