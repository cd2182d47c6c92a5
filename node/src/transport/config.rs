//! What an [`Endpoint`](super::Endpoint) is built from: the caller's
//! [`TransportOptions`], and the rustls and quinn configurations derived from
//! them and the node's identity (TLS 1.3 only, mutual authentication against
//! the consortium CA with its revocation lists, the roster check on client
//! names, one flow-controlled stream per connection).
//!
//! This file owns no socket and no connection; it only builds configurations.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use protocol::{Limits, PeerLimits};

use super::{Result, TransportError, ALPN, DEFAULT_MAX_FRAME, STREAM_WINDOW};
use crate::pki::{dns_names, NodeIdentity};

/// Transport tunables.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Largest frame payload sent.
    pub max_frame: usize,
    /// Limits of the frames accepted, per peer and message kind.
    pub limits: PeerLimits,
    /// A connection silent for this long is considered dead.
    pub idle_timeout: Duration,
    /// Keep-alive interval (keeps idle links open between rounds).
    pub keep_alive: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            max_frame: DEFAULT_MAX_FRAME,
            limits: PeerLimits::new(Limits::uniform(DEFAULT_MAX_FRAME)),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(2),
        }
    }
}

impl TransportOptions {
    /// A node's options from its config: the largest frame it sends, the
    /// limits of what it accepts, the idle timeout; the default keep-alive.
    pub fn for_node(max_frame: usize, limits: PeerLimits, idle_timeout: Duration) -> Self {
        TransportOptions {
            max_frame,
            limits,
            idle_timeout,
            ..TransportOptions::default()
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::TlsConfig(e.to_string())
}

/// Shared set of peer names an endpoint accepts inbound.
pub(super) type Allowed = Arc<RwLock<BTreeSet<String>>>;

pub(super) fn allowed_snapshot(allowed: &Allowed) -> BTreeSet<String> {
    // A poisoned lock only means another thread panicked mid-update of a plain
    // set; its content is still a valid set.
    match allowed.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Client-certificate verifier: the CA check of rustls' WebPKI verifier, then
/// the roster check, logging refused peers with the name they claim.
#[derive(Debug)]
struct RosterClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Allowed,
}

impl ClientCertVerifier for RosterClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let claimed = dns_names(end_entity).unwrap_or_default();
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            tracing::warn!(
                claimed_names = ?claimed,
                "refusing client certificate of {claimed:?} (not issued by the consortium CA, \
                 revoked, expired or not yet valid): {e}"
            );
            return Err(e);
        }
        let allowed = allowed_snapshot(&self.allowed);
        if !claimed.iter().any(|n| allowed.contains(n)) {
            tracing::warn!(
                names = ?claimed,
                allowed = ?allowed,
                "refusing client: certificate name not allowed here"
            );
            return Err(rustls::Error::General(format!(
                "client name {claimed:?} not allowed"
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server and client configurations of an endpoint for `identity`, whose
/// inbound peers must present a name in `allowed`.
pub(super) fn quinn_configs(
    identity: &NodeIdentity,
    allowed: &Allowed,
    options: &TransportOptions,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    for ca in identity.ca() {
        roots.add(ca.clone()).map_err(tls_err)?;
    }
    let roots = Arc::new(roots);

    // Revocation: the full chain against the consortium's lists; a
    // certificate whose status is unknown (no list of its CA) is refused.
    let webpki = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(identity.crls().iter().cloned())
        .build()
        .map_err(tls_err)?;
    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(identity.crls().iter().cloned())
            .build()
            .map_err(tls_err)?;
    let verifier = Arc::new(RosterClientVerifier {
        inner: webpki,
        allowed: allowed.clone(),
    });
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert().clone()], identity.key())
        .map_err(tls_err)?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_webpki_verifier(server_verifier)
        .with_client_auth_cert(vec![identity.cert().clone()], identity.key())
        .map_err(tls_err)?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(options.idle_timeout).map_err(tls_err)?,
        ))
        .keep_alive_interval(Some(options.keep_alive.min(options.idle_timeout / 3)))
        // One stream per link, opened by the connector; flow control bounds
        // what a peer can make us buffer.
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window((2 * STREAM_WINDOW).into());
    let transport = Arc::new(transport);

    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).map_err(tls_err)?,
    ));
    server_config.transport_config(transport.clone());
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client).map_err(tls_err)?,
    ));
    client_config.transport_config(transport);

    Ok((server_config, client_config))
}

/// The DNS names of the peer's certificate (empty if it presented none).
pub(super) fn peer_names(conn: &quinn::Connection) -> Vec<String> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().map(|c| dns_names(c).unwrap_or_default()))
        .unwrap_or_default()
}
