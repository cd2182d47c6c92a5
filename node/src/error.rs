//! One error type over the I/O side, for library users who handle one type.
//!
//! Grouped like rustls: [`PkiError`] is local setup (certificate files, names,
//! keys), [`TransportError`] sockets, handshakes and peers that break the
//! framing, [`ConfigError`] a node's configuration, and [`protocol::Error`]
//! what the state machines reject. Functions of this crate return the narrow
//! type; `?` converts into [`Error`].

use crate::config::ConfigError;
use crate::pki::PkiError;
use crate::transport::TransportError;

/// Any error of a federation node's I/O side or protocol core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Provisioning or loading the consortium PKI failed; see [`PkiError`].
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The QUIC transport failed; see [`TransportError`].
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A configuration value is invalid; see [`ConfigError`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The protocol core refused a message or a run; see [`protocol::Error`].
    #[error(transparent)]
    Protocol(#[from] protocol::Error),
}

/// Result alias of the I/O side.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::pki::{NodeIdentity, PkiPaths};

    /// Loads an identity from files that do not exist, with `?` into [`Error`].
    fn load(dir: &Path) -> Result<NodeIdentity> {
        Ok(NodeIdentity::load(&PkiPaths::in_dir(dir, "hospital-1"))?)
    }

    #[test]
    fn pki_errors_convert_and_keep_their_message() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).unwrap_err();
        let Error::Pki(inner) = &e else {
            panic!("expected Error::Pki, got {e:?}");
        };
        assert!(matches!(inner, PkiError::Io { .. }), "{inner:?}");
        assert_eq!(e.to_string(), inner.to_string());
        assert!(e.to_string().contains("ca.pem"), "{e}");
    }

    #[test]
    fn transport_errors_convert_and_keep_their_message() {
        let inner = TransportError::BadPreamble {
            peer: "hospital-2".into(),
        };
        let msg = inner.to_string();
        let e = Error::from(inner);
        assert!(matches!(
            &e,
            Error::Transport(TransportError::BadPreamble { peer }) if peer == "hospital-2"
        ));
        assert_eq!(e.to_string(), msg);
    }
}
