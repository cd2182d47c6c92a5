//! QUIC transport with mutual TLS 1.3 against the consortium CA.
//!
//! This module owns sockets: one [`Endpoint`] per node, bound to its listen
//! address, both accepts and opens connections. Every connection, in either
//! direction, is authenticated both ways with certificates signed by the
//! consortium CA only ([`crate::pki`]), and the peer's certificate name is
//! checked against the roster:
//! - inbound: the client's name must be in the endpoint's allowed set (a
//!   coordinator allows its roster, a hospital the coordinator and its ring
//!   peers; the set can change between rounds with [`Endpoint::set_allowed`]);
//! - outbound: the server must prove the roster's name for the dialled address.
//!
//! Both directions check the peer's certificate against the consortium's
//! revocation list (rustls' WebPKI verifiers `with_crls`, one list per
//! trusted CA, an unknown revocation status refused) and its validity period.
//!
//! A connection carries one bidirectional stream of frames ([`Link`]); the
//! peer may open no other stream. Frames are split by the protocol's
//! [`FrameDecoder`] under the peer's [`PeerLimits`] (per message kind and per
//! sender, derived from the run's configuration): a frame above its kind's
//! limit is refused, and the link closed, before its payload is read.
//!
//! # Bounded memory against authenticated peers
//!
//! - **One link per peer and side.** A peer's newer inbound link replaces its
//!   older one (which is closed): a node that crashed and reconnects gets
//!   through at once, and a peer opening link after link holds one. Outbound,
//!   a [`Hub`] dials a peer only while it has no link to it. So at most two
//!   links to a peer exist at once, and only while both sides dial each other
//!   at the same moment; frames then go over the older one.
//! - **Bounded channels with backpressure.** Readers hand frames to the driver
//!   over one channel of [`EVENT_QUEUE`] events; when it is full a reader stops
//!   reading, QUIC flow control (a bounded stream window) stops the peer, and
//!   nothing more is buffered. Each link's outgoing queue holds at most
//!   [`OUT_QUEUE`] frames; a peer that stops reading until it is full is
//!   disconnected rather than buffered for (the machines re-send what matters
//!   after a reconnection).
//! - **Per-kind limits before buffering** as above; the decoder buffers at
//!   most one frame (at its kind's limit) plus one read chunk.
//!
//! What the frames mean is the protocol's business, not this module's.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use protocol::{FrameDecoder, Limits, PeerLimits};

use crate::pki::{dns_names, NodeIdentity, PkiError};

/// ALPN protocol id of the federation; peers speaking anything else are refused.
pub const ALPN: &[u8] = b"fedlr/1";

/// Bytes the opener of a link sends first, so the acceptor sees the stream and
/// both sides agree on the transport framing version.
const PREAMBLE: &[u8; 8] = b"FEDLR\x00\x01\x00";

/// Default cap on one frame's payload (bytes).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// Events (frames, links up and down) queued from the links to the driver
/// before readers stop reading.
pub const EVENT_QUEUE: usize = 32;

/// Frames queued for one link before the link is dropped as not reading.
pub const OUT_QUEUE: usize = 256;

/// Bytes a peer may have in flight on its stream (QUIC flow control window):
/// what is buffered for a reader that stopped reading.
const STREAM_WINDOW: u32 = 1 << 20;

/// QUIC application error code used when we close a connection on purpose.
const CLOSE_POLICY: u32 = 0x10;
const CLOSE_DONE: u32 = 0x00;

/// Errors of the transport: local setup (bind, TLS) and peers that fail the
/// handshake or break the framing. [`crate::Error::Transport`] carries them for
/// users handling one error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Loading the node's PKI failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Building the TLS configuration failed (bad certificate or key).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// Binding the UDP socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Opening a connection failed (TLS handshake included).
    #[error("connection to {name} at {addr} failed: {reason}")]
    Connect {
        /// The dialled address.
        addr: SocketAddr,
        /// The name the server had to prove.
        name: String,
        /// Why it failed.
        reason: String,
    },
    /// An inbound connection failed its handshake (e.g. a certificate from
    /// another CA).
    #[error("inbound connection from {addr} refused: {reason}")]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// Why it failed.
        reason: String,
    },
    /// The peer's certificate is valid but its name is not one we accept here.
    #[error(
        "peer at {addr} presents names {names:?}, none of which is allowed (allowed: {allowed:?})"
    )]
    PeerNotAllowed {
        /// The peer's address.
        addr: SocketAddr,
        /// The names in its certificate.
        names: Vec<String>,
        /// The names we accept.
        allowed: Vec<String>,
    },
    /// A frame announced a payload above the size cap.
    #[error("frame from {peer} of {len} bytes exceeds the cap of {max} bytes")]
    FrameTooLarge {
        /// The peer's name.
        peer: String,
        /// The announced length.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// A frame to send exceeds the size cap.
    #[error("frame to {peer} of {len} bytes exceeds the cap of {max} bytes")]
    OutgoingTooLarge {
        /// The peer's name.
        peer: String,
        /// The frame's length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The peer opened its stream with something other than our preamble.
    #[error("peer {peer} does not speak this transport (bad preamble)")]
    BadPreamble {
        /// The peer's name.
        peer: String,
    },
    /// Reading or writing the stream failed (connection lost, reset, ...).
    #[error("stream with {peer}: {reason}")]
    Stream {
        /// The peer's name.
        peer: String,
        /// Why it failed.
        reason: String,
    },
    /// The endpoint was closed.
    #[error("endpoint closed")]
    EndpointClosed,
}

type Result<T> = std::result::Result<T, TransportError>;

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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::TlsConfig(e.to_string())
}

/// Shared set of peer names an endpoint accepts inbound.
type Allowed = Arc<RwLock<BTreeSet<String>>>;

fn allowed_snapshot(allowed: &Allowed) -> BTreeSet<String> {
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

/// A node's QUIC endpoint: accepts and opens mutually authenticated links.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    name: String,
    allowed: Allowed,
    options: TransportOptions,
}

impl Endpoint {
    /// Binds `addr` with `identity`; inbound peers must present one of `allowed`.
    pub fn bind(
        addr: SocketAddr,
        identity: &NodeIdentity,
        allowed: impl IntoIterator<Item = String>,
        options: TransportOptions,
    ) -> Result<Endpoint> {
        let provider = provider();
        let mut roots = rustls::RootCertStore::empty();
        for ca in identity.ca() {
            roots.add(ca.clone()).map_err(tls_err)?;
        }
        let roots = Arc::new(roots);
        let allowed: Allowed = Arc::new(RwLock::new(allowed.into_iter().collect()));

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

        let mut inner = quinn::Endpoint::server(server_config, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        inner.set_default_client_config(client_config);
        Ok(Endpoint {
            inner,
            name: identity.name().to_owned(),
            allowed,
            options,
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.inner.local_addr().map_err(|e| TransportError::Stream {
            peer: self.name.clone(),
            reason: e.to_string(),
        })
    }

    /// Replaces the set of names accepted inbound.
    pub fn set_allowed(&self, names: impl IntoIterator<Item = String>) {
        let set: BTreeSet<String> = names.into_iter().collect();
        match self.allowed.write() {
            Ok(mut g) => *g = set,
            Err(p) => *p.into_inner() = set,
        }
    }

    /// Adds names to the set accepted inbound.
    pub fn allow(&self, names: impl IntoIterator<Item = String>) {
        match self.allowed.write() {
            Ok(mut g) => g.extend(names),
            Err(p) => p.into_inner().extend(names),
        }
    }

    /// Waits for the next inbound connection and completes it into a [`Link`].
    /// Returns `None` once the endpoint is closed; `Some(Err)` for a refused
    /// peer (already logged), after which the caller simply keeps accepting.
    pub async fn accept(&self) -> Option<Result<Link>> {
        let incoming = self.inner.accept().await?;
        let addr = incoming.remote_address();
        Some(self.complete_inbound(incoming, addr).await)
    }

    async fn complete_inbound(&self, incoming: quinn::Incoming, addr: SocketAddr) -> Result<Link> {
        let refused = |reason: String| {
            tracing::warn!(peer_addr = %addr, "refused inbound connection: {reason}");
            TransportError::Handshake { addr, reason }
        };
        let conn = incoming
            .await
            .map_err(|e| refused(format!("handshake failed: {e}")))?;
        let names = peer_names(&conn);
        let allowed = allowed_snapshot(&self.allowed);
        let Some(peer) = names.iter().find(|n| allowed.contains(*n)).cloned() else {
            conn.close(CLOSE_POLICY.into(), b"name not allowed");
            tracing::warn!(peer_addr = %addr, names = ?names, "refused peer: name not allowed");
            return Err(TransportError::PeerNotAllowed {
                addr,
                names,
                allowed: allowed.into_iter().collect(),
            });
        };
        let accept = tokio::time::timeout(self.options.idle_timeout, conn.accept_bi());
        let (send, mut recv) = match accept.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(refused(format!("{peer}: no stream: {e}"))),
            Err(_) => return Err(refused(format!("{peer}: opened no stream in time"))),
        };
        let mut pre = [0u8; PREAMBLE.len()];
        recv.read_exact(&mut pre)
            .await
            .map_err(|e| refused(format!("{peer}: reading preamble: {e}")))?;
        if &pre != PREAMBLE {
            conn.close(CLOSE_POLICY.into(), b"bad preamble");
            return Err(TransportError::BadPreamble { peer });
        }
        // Acknowledge, so the connector knows this side accepted its identity
        // (in TLS 1.3 the client finishes before the server judges its cert).
        let mut send = send;
        send.write_all(PREAMBLE)
            .await
            .map_err(|e| refused(format!("{peer}: writing preamble: {e}")))?;
        tracing::debug!(peer = %peer, peer_addr = %addr, "accepted link");
        let limits = self.options.limits.get(&peer).clone();
        Ok(Link::new(
            conn,
            send,
            recv,
            peer,
            self.options.max_frame,
            limits,
        ))
    }

    /// Connects to `addr`, which must prove the roster name `expected_name`.
    pub async fn connect(&self, addr: SocketAddr, expected_name: &str) -> Result<Link> {
        let fail = |reason: String| {
            tracing::warn!(peer = expected_name, peer_addr = %addr, "connection failed: {reason}");
            TransportError::Connect {
                addr,
                name: expected_name.to_owned(),
                reason,
            }
        };
        let connecting = self
            .inner
            .connect(addr, expected_name)
            .map_err(|e| fail(e.to_string()))?;
        let conn = connecting.await.map_err(|e| fail(e.to_string()))?;
        // rustls already checked the name; checking again keeps the invariant
        // local and readable.
        let names = peer_names(&conn);
        if !names.iter().any(|n| n == expected_name) {
            conn.close(CLOSE_POLICY.into(), b"wrong name");
            return Err(fail(format!("server presents names {names:?}")));
        }
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| fail(e.to_string()))?;
        send.write_all(PREAMBLE)
            .await
            .map_err(|e| fail(e.to_string()))?;
        // Wait for the acceptor's preamble: only then did it accept our identity.
        let mut pre = [0u8; PREAMBLE.len()];
        match tokio::time::timeout(self.options.idle_timeout, recv.read_exact(&mut pre)).await {
            Ok(Ok(())) if &pre == PREAMBLE => {}
            Ok(Ok(())) => {
                return Err(TransportError::BadPreamble {
                    peer: expected_name.to_owned(),
                })
            }
            Ok(Err(e)) => return Err(fail(format!("refused by the peer: {e}"))),
            Err(_) => return Err(fail("no answer to the preamble in time".into())),
        }
        Ok(Link::new(
            conn,
            send,
            recv,
            expected_name.to_owned(),
            self.options.max_frame,
            self.options.limits.get(expected_name).clone(),
        ))
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.inner.close(CLOSE_DONE.into(), b"shutdown");
    }

    /// Waits until every connection has finished closing (so final frames are
    /// delivered before the process exits).
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }
}

fn peer_names(conn: &quinn::Connection) -> Vec<String> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().map(|c| dns_names(c).unwrap_or_default()))
        .unwrap_or_default()
}

/// One authenticated connection to a named peer: a stream of frames each way.
#[derive(Debug)]
pub struct Link {
    conn: quinn::Connection,
    sender: LinkSender,
    receiver: LinkReceiver,
}

impl Link {
    fn new(
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        peer: String,
        max_frame: usize,
        limits: Limits,
    ) -> Link {
        Link {
            conn,
            sender: LinkSender {
                send,
                peer: peer.clone(),
                max_frame,
            },
            receiver: LinkReceiver {
                recv,
                peer,
                decoder: FrameDecoder::new(limits),
            },
        }
    }

    /// The peer's authenticated name.
    pub fn peer(&self) -> &str {
        &self.sender.peer
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Sends one frame.
    pub async fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.sender.send(payload).await
    }

    /// Receives one frame; `Ok(None)` when the peer finished its stream.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.receiver.recv().await
    }

    /// Splits into independent halves (for a reader task and a writer task)
    /// plus a handle to close the connection.
    pub fn split(self) -> (LinkSender, LinkReceiver, LinkHandle) {
        (self.sender, self.receiver, LinkHandle { conn: self.conn })
    }
}

/// Handle that can close a link's connection.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    conn: quinn::Connection,
}

impl LinkHandle {
    /// Closes the connection, telling the peer why.
    pub fn close(&self, reason: &str) {
        self.conn.close(CLOSE_POLICY.into(), reason.as_bytes());
    }

    /// Waits until the connection is closed (by either side or by timeout).
    pub async fn closed(&self) -> String {
        self.conn.closed().await.to_string()
    }
}

/// Sending half of a [`Link`].
#[derive(Debug)]
pub struct LinkSender {
    send: quinn::SendStream,
    peer: String,
    max_frame: usize,
}

impl LinkSender {
    /// The peer's authenticated name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Sends one frame: a 4-byte big-endian length, then the payload.
    pub async fn send(&mut self, payload: &[u8]) -> Result<()> {
        if payload.len() > self.max_frame || u32::try_from(payload.len()).is_err() {
            return Err(TransportError::OutgoingTooLarge {
                peer: self.peer.clone(),
                len: payload.len(),
                max: self.max_frame,
            });
        }
        let len = (payload.len() as u32).to_be_bytes();
        let err = |e: quinn::WriteError| TransportError::Stream {
            peer: self.peer.clone(),
            reason: e.to_string(),
        };
        self.send.write_all(&len).await.map_err(err)?;
        self.send.write_all(payload).await.map_err(err)
    }

    /// Sends one already framed message (4-byte big-endian length, then the
    /// payload, as `protocol::wire::encode_frame` makes it), checking the prefix.
    pub async fn send_frame(&mut self, frame: &[u8]) -> Result<()> {
        let bad = |len: usize| TransportError::OutgoingTooLarge {
            peer: self.peer.clone(),
            len,
            max: self.max_frame,
        };
        let Some((head, payload)) = frame.split_first_chunk::<4>() else {
            return Err(bad(frame.len()));
        };
        if u32::from_be_bytes(*head) as usize != payload.len() || payload.len() > self.max_frame {
            return Err(bad(payload.len()));
        }
        self.send
            .write_all(frame)
            .await
            .map_err(|e| TransportError::Stream {
                peer: self.peer.clone(),
                reason: e.to_string(),
            })
    }

    /// Finishes the stream: the peer's `recv` returns `Ok(None)` after the
    /// frames already sent.
    pub fn finish(&mut self) {
        // Finishing an already finished or reset stream is harmless here.
        let _ = self.send.finish();
    }

    /// Waits until the peer has received everything sent (or the link is gone).
    pub async fn flushed(&mut self) {
        let _ = self.send.stopped().await;
    }

    #[cfg(test)]
    async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| TransportError::Stream {
                peer: self.peer.clone(),
                reason: e.to_string(),
            })
    }
}

/// Receiving half of a [`Link`].
///
/// Frames are split by the protocol's [`FrameDecoder`], the decoder the fuzz
/// target exercises: one framing code path in tests, fuzzing and production.
#[derive(Debug)]
pub struct LinkReceiver {
    recv: quinn::RecvStream,
    peer: String,
    decoder: FrameDecoder,
}

/// Largest chunk read from the stream at once: what may be buffered beyond
/// the frame being assembled.
const READ_CHUNK: usize = 64 * 1024;

impl LinkReceiver {
    /// The peer's authenticated name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Receives one frame (kind byte and JSON); `Ok(None)` when the peer
    /// finished its stream cleanly between frames. A length above its kind's
    /// limit is refused before its payload is buffered: at most [`READ_CHUNK`] bytes beyond the frame in progress are
    /// ever held.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            match self.decoder.next_payload() {
                Ok(Some(payload)) => return Ok(Some(payload)),
                Ok(None) => {}
                Err(protocol::Error::Oversized { len, max }) => {
                    return Err(TransportError::FrameTooLarge {
                        peer: self.peer.clone(),
                        len,
                        max,
                    })
                }
                Err(e) => {
                    return Err(TransportError::Stream {
                        peer: self.peer.clone(),
                        reason: e.to_string(),
                    })
                }
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                Ok(None) if self.decoder.buffered() == 0 => return Ok(None),
                Ok(None) => {
                    return Err(TransportError::Stream {
                        peer: self.peer.clone(),
                        reason: format!(
                            "stream ended inside a frame ({} bytes buffered)",
                            self.decoder.buffered()
                        ),
                    })
                }
                Err(e) => {
                    return Err(TransportError::Stream {
                        peer: self.peer.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
}

/// What a [`Hub`] reports to its driver.
#[derive(Debug)]
pub enum NetEvent {
    /// An authenticated link to `peer` is up (inbound or outbound).
    Up {
        /// The peer's authenticated name.
        peer: String,
        /// Id of this link (a peer may have several over time).
        id: u64,
        /// Queue of frames to write on this link.
        out: tokio::sync::mpsc::Sender<Vec<u8>>,
        /// Handle to close the link.
        handle: LinkHandle,
    },
    /// A frame's payload arrived, in order per link.
    Frame {
        /// The peer's authenticated name.
        peer: String,
        /// The link it came over.
        id: u64,
        /// The payload (length prefix removed, size cap checked).
        payload: Vec<u8>,
    },
    /// A link went down.
    Down {
        /// The peer's authenticated name.
        peer: String,
        /// The link.
        id: u64,
        /// Why.
        reason: String,
    },
}

#[derive(Debug)]
struct LinkEntry {
    id: u64,
    out: tokio::sync::mpsc::Sender<Vec<u8>>,
    handle: LinkHandle,
}

/// Owns a node's links: accepts inbound links, opens outbound ones on demand,
/// runs one reader and one writer task per link, and reports everything as
/// [`NetEvent`]s on one channel, so a driver's loop only reads that channel
/// and keeps its state machine single-threaded.
///
/// Per peer, frames are sent over its oldest live link, so their order is kept.
#[derive(Debug)]
pub struct Hub {
    endpoint: Endpoint,
    events: tokio::sync::mpsc::Sender<NetEvent>,
    links: std::collections::HashMap<String, Vec<LinkEntry>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    /// Held by every writer task; closed once all have flushed and finished.
    writers_alive: Option<tokio::sync::mpsc::Sender<()>>,
    writers_done: tokio::sync::mpsc::Receiver<()>,
    dialing: BTreeSet<String>,
}

impl Hub {
    /// Starts accepting on `endpoint`; returns the hub and its event channel.
    pub fn start(endpoint: Endpoint) -> (Hub, tokio::sync::mpsc::Receiver<NetEvent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let (alive, done) = tokio::sync::mpsc::channel(1);
        let next_id = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let hub = Hub {
            endpoint: endpoint.clone(),
            events: tx.clone(),
            links: std::collections::HashMap::new(),
            next_id: next_id.clone(),
            writers_alive: Some(alive.clone()),
            writers_done: done,
            dialing: BTreeSet::new(),
        };
        let weak = alive.downgrade();
        drop(alive);
        tokio::spawn(async move {
            // The live inbound link of each peer: a newer one replaces it.
            let mut inbound: std::collections::HashMap<String, LinkHandle> =
                std::collections::HashMap::new();
            while let Some(r) = endpoint.accept().await {
                // Refusals were logged by `accept`; keep serving others.
                if let (Ok(link), Some(alive)) = (r, weak.upgrade()) {
                    let peer = link.peer().to_owned();
                    if let Some(old) = inbound.remove(&peer) {
                        tracing::info!(%peer, "a newer link from the peer replaces its older one");
                        old.close("replaced by a newer link");
                    }
                    inbound.insert(
                        peer,
                        LinkHandle {
                            conn: link.conn.clone(),
                        },
                    );
                    if !spawn_link(link, &next_id, &tx, alive).await {
                        break;
                    }
                }
            }
        });
        (hub, rx)
    }

    /// The endpoint (to change the allowed set, read the local address).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Records a link that came up. Returns `true` if the peer had no live link
    /// before (the driver tells its state machine the peer connected).
    pub fn link_up(
        &mut self,
        peer: &str,
        id: u64,
        out: tokio::sync::mpsc::Sender<Vec<u8>>,
        handle: LinkHandle,
    ) -> bool {
        self.dialing.remove(peer);
        let list = self.links.entry(peer.to_owned()).or_default();
        list.push(LinkEntry { id, out, handle });
        list.len() == 1
    }

    /// Records a link that went down. Returns `true` if the peer now has no
    /// live link (the driver tells its state machine the peer was lost).
    pub fn link_down(&mut self, peer: &str, id: u64) -> bool {
        let Some(list) = self.links.get_mut(peer) else {
            return false;
        };
        let before = list.len();
        list.retain(|e| e.id != id);
        if list.is_empty() {
            self.links.remove(peer);
            return before > 0;
        }
        false
    }

    /// Whether `peer` has a live link.
    pub fn is_connected(&self, peer: &str) -> bool {
        self.links.get(peer).is_some_and(|l| !l.is_empty())
    }

    /// Queues a frame for `peer` on its oldest live link; `false` if it has
    /// none. A link whose queue is full ([`OUT_QUEUE`] frames: the peer stopped
    /// reading) is closed instead of buffering more.
    pub fn send(&mut self, peer: &str, frame: Vec<u8>) -> bool {
        use tokio::sync::mpsc::error::TrySendError;
        let Some(list) = self.links.get_mut(peer) else {
            return false;
        };
        let mut frame = frame;
        while let Some(first) = list.first() {
            match first.out.try_send(frame) {
                Ok(()) => return true,
                Err(TrySendError::Full(f)) => {
                    tracing::warn!(%peer, "dropping link: the peer does not read its frames");
                    first.handle.close("not reading");
                    frame = f;
                }
                // Its writer is gone; the Down event is on its way.
                Err(TrySendError::Closed(f)) => frame = f,
            }
            list.remove(0);
        }
        false
    }

    /// Closes every link of `peer`.
    pub fn disconnect(&mut self, peer: &str, reason: &str) {
        if let Some(list) = self.links.remove(peer) {
            for e in list {
                e.handle.close(reason);
            }
        }
    }

    /// Whether an outbound connection to `peer` is being attempted.
    pub fn is_dialing(&self, peer: &str) -> bool {
        self.dialing.contains(peer)
    }

    /// Dials `peer` at `addr` in the background, retrying with backoff until
    /// `give_up`; success arrives as [`NetEvent::Up`], giving up as
    /// [`NetEvent::Down`] with id 0. Does nothing if already dialing `peer`.
    pub fn dial(&mut self, peer: &str, addr: SocketAddr, give_up: std::time::Instant) {
        if !self.dialing.insert(peer.to_owned()) {
            return;
        }
        let endpoint = self.endpoint.clone();
        let tx = self.events.clone();
        let next_id = self.next_id.clone();
        let Some(alive) = self.writers_alive.clone() else {
            return;
        };
        let peer = peer.to_owned();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            // The last attempt often ends in a plain timeout while an earlier
            // one said why (a certificate refused): keep that for the report.
            let mut refused: Option<String> = None;
            loop {
                // An unanswered handshake would only fail at the idle timeout:
                // never wait past `give_up`.
                let left = give_up.saturating_duration_since(std::time::Instant::now());
                let attempt = match tokio::time::timeout(left, endpoint.connect(addr, &peer)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(TransportError::Connect {
                        addr,
                        name: peer.clone(),
                        reason: "no answer".into(),
                    }),
                };
                match attempt {
                    Ok(link) => {
                        spawn_link(link, &next_id, &tx, alive).await;
                        return;
                    }
                    Err(e) => {
                        let text = e.to_string();
                        let silent = text.contains("no answer") || text.contains("timed out");
                        if std::time::Instant::now() + backoff >= give_up {
                            let reason = match refused.filter(|r| silent && *r != text) {
                                Some(r) => {
                                    format!(
                                        "gave up dialing: {e}; an earlier attempt was refused: {r}"
                                    )
                                }
                                None => format!("gave up dialing: {e}"),
                            };
                            let _ = tx
                                .send(NetEvent::Down {
                                    peer,
                                    id: 0,
                                    reason,
                                })
                                .await;
                            return;
                        }
                        if !silent {
                            refused = Some(text);
                        }
                        tracing::debug!(peer = %peer, "dial failed, retrying: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    }

    /// Marks a failed dial as over (after its `Down` with id 0).
    pub fn dial_failed(&mut self, peer: &str) {
        self.dialing.remove(peer);
    }

    /// Flushes every queued frame (each writer finishes its stream and waits
    /// until the peer has read it, or `grace` passes), then closes the endpoint.
    pub async fn shutdown(mut self, grace: Duration) {
        self.links.clear();
        self.writers_alive = None;
        let _ = tokio::time::timeout(grace, self.writers_done.recv()).await;
        self.endpoint.close();
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
    }
}

/// Starts a link's reader and writer tasks after queueing its `Up`; `false`
/// once the driver is gone.
async fn spawn_link(
    link: Link,
    next_id: &std::sync::atomic::AtomicU64,
    events: &tokio::sync::mpsc::Sender<NetEvent>,
    alive: tokio::sync::mpsc::Sender<()>,
) -> bool {
    let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let peer = link.peer().to_owned();
    let (mut sender, mut receiver, handle) = link.split();
    let (out, mut queue) = tokio::sync::mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let writer_handle = handle.clone();
    tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            if let Err(e) = sender.send_frame(&frame).await {
                tracing::warn!(peer = %sender.peer(), "dropping link: {e}");
                writer_handle.close("write failed");
                break;
            }
        }
        sender.finish();
        let _ = tokio::time::timeout(Duration::from_secs(5), sender.flushed()).await;
        drop(alive);
    });
    let reader_handle = handle.clone();
    // Up is queued before the reader starts, so the driver sees it first.
    let up = NetEvent::Up {
        peer,
        id,
        out,
        handle: handle.clone(),
    };
    if events.send(up).await.is_err() {
        handle.close("shutting down");
        return false;
    }
    let tx = events.clone();
    tokio::spawn(async move {
        let reason = loop {
            match receiver.recv().await {
                Ok(Some(payload)) => {
                    let ev = NetEvent::Frame {
                        peer: receiver.peer().to_owned(),
                        id,
                        payload,
                    };
                    // Waits while the driver's queue is full: backpressure.
                    if tx.send(ev).await.is_err() {
                        break "driver gone".to_owned();
                    }
                }
                Ok(None) => break "peer finished its stream".to_owned(),
                Err(e) => {
                    // After an oversized prefix the stream is out of sync: close.
                    tracing::warn!(peer = %receiver.peer(), "closing link: {e}");
                    reader_handle.close("protocol violation");
                    break e.to_string();
                }
            }
        };
        let _ = tx
            .send(NetEvent::Down {
                peer: receiver.peer().to_owned(),
                id,
                reason,
            })
            .await;
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{provision, PkiPaths};
    use std::path::Path;

    fn ids(dir: &Path, names: &[&str]) -> Vec<NodeIdentity> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        provision(dir, &names).unwrap();
        names
            .iter()
            .map(|n| NodeIdentity::load(&PkiPaths::in_dir(dir, n)).unwrap())
            .collect()
    }

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn opts() -> TransportOptions {
        TransportOptions {
            max_frame: 1024,
            limits: PeerLimits::new(Limits::uniform(1024)),
            idle_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(1),
        }
    }

    fn set(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn mutual_tls_link_exchanges_frames() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let client = Endpoint::bind(local(), &v[1], set(&["coordinator"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move {
            let mut link = s.accept().await.unwrap().unwrap();
            assert_eq!(link.peer(), "hospital-1");
            let got = link.recv().await.unwrap().unwrap();
            let (kind, rest) = got.split_first().unwrap();
            let mut back = vec![*kind];
            back.extend(rest.iter().rev());
            link.send(&back).await.unwrap();
            assert!(link.recv().await.unwrap().is_none());
        });
        let link = client.connect(addr, "coordinator").await.unwrap();
        assert_eq!(link.peer(), "coordinator");
        let (mut tx, mut rx, _h) = link.split();
        tx.send(b"\x07hello").await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), b"\x07olleh");
        tx.finish();
        acceptor.await.unwrap();
    }

    #[tokio::test]
    async fn foreign_ca_client_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator"]);
        let other = tempfile::tempdir().unwrap();
        // Same name, other CA: a hospital certificate the consortium never issued.
        ids(other.path(), &["hospital-1"]);
        // The rogue trusts both CAs, so it accepts our server and presents its
        // certificate: the refusal checked here is the server's.
        let bundle = other.path().join("bundle.pem");
        let mut pem = std::fs::read(other.path().join("ca.pem")).unwrap();
        pem.extend(std::fs::read(dir.path().join("ca.pem")).unwrap());
        std::fs::write(&bundle, pem).unwrap();
        let crls = other.path().join("crls.pem");
        let mut pem = std::fs::read(other.path().join("crl.pem")).unwrap();
        pem.extend(std::fs::read(dir.path().join("crl.pem")).unwrap());
        std::fs::write(&crls, pem).unwrap();
        let rogue = NodeIdentity::load(&PkiPaths {
            ca: bundle,
            crl: crls,
            ..PkiPaths::in_dir(other.path(), "hospital-1")
        })
        .unwrap();
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move { s.accept().await.unwrap() });
        let client = Endpoint::bind(local(), &rogue, set(&["coordinator"]), opts()).unwrap();
        let r = client.connect(addr, "coordinator").await;
        assert!(r.is_err(), "rogue client connected");
        let e = acceptor.await.unwrap().unwrap_err();
        assert!(matches!(e, TransportError::Handshake { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("invalid peer certificate"), "{msg}");
    }

    #[tokio::test]
    async fn client_not_in_roster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-9"]);
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move { s.accept().await.unwrap() });
        let client = Endpoint::bind(local(), &v[1], set(&[]), opts()).unwrap();
        let e = client.connect(addr, "coordinator").await.unwrap_err();
        assert!(matches!(e, TransportError::Connect { .. }), "{e}");
        let e = acceptor.await.unwrap().unwrap_err();
        assert!(
            e.to_string().contains("hospital-9") || e.to_string().contains("not allowed"),
            "{e}"
        );
        // Allowing it later (ring re-formed) lets it in.
        server.allow(set(&["hospital-9"]));
        let s = server.clone();
        let acceptor = tokio::spawn(async move { s.accept().await.unwrap() });
        let _link = client.connect(addr, "coordinator").await.unwrap();
        assert_eq!(acceptor.await.unwrap().unwrap().peer(), "hospital-9");
    }

    #[tokio::test]
    async fn wrong_name_server_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["hospital-2", "hospital-1"]);
        // hospital-2 listens where the roster says hospital-3 is.
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        tokio::spawn(async move { while s.accept().await.is_some() {} });
        let client = Endpoint::bind(local(), &v[1], set(&[]), opts()).unwrap();
        let e = client.connect(addr, "hospital-3").await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("hospital-3"), "{msg}");
        assert!(matches!(e, TransportError::Connect { .. }));
        server.close();
    }

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let client = Endpoint::bind(local(), &v[1], set(&[]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move {
            let mut link = s.accept().await.unwrap().unwrap();
            link.recv().await
        });
        let mut link = client.connect(addr, "coordinator").await.unwrap();
        // Our own sender refuses to send above the cap...
        let e = link.send(&vec![0u8; 1025]).await.unwrap_err();
        assert!(matches!(e, TransportError::OutgoingTooLarge { .. }), "{e}");
        // ...and a peer announcing a huge frame is refused before any payload.
        link.sender.send_raw(&u32::MAX.to_be_bytes()).await.unwrap();
        link.sender
            .send_raw(&[protocol::Kind::Receipt.byte()])
            .await
            .unwrap();
        let e = acceptor.await.unwrap().unwrap_err();
        assert!(
            matches!(e, TransportError::FrameTooLarge { len, max: 1024, .. } if len == u32::MAX as u64 - 1),
            "{e}"
        );
        assert!(e.to_string().contains("hospital-1"));
    }

    /// Revokes `name`'s certificate in the CA that `provision` made in `dir`
    /// and distributes the new list to `dir/crl.pem`.
    fn revoke(dir: &Path, name: &str) {
        let mut ca = crate::pki::ca::Ca::open(&dir.join(crate::pki::LOCAL_CA_DIR)).unwrap();
        let serial = ca.serial_of(&dir.join(format!("{name}.pem"))).unwrap();
        ca.revoke(&serial, crate::pki::ca::RevokeReason::KeyCompromise)
            .unwrap();
        std::fs::copy(ca.crl_path(), dir.join(crate::pki::CRL_FILE)).unwrap();
    }

    fn reload(dir: &Path, name: &str) -> NodeIdentity {
        NodeIdentity::load(&PkiPaths::in_dir(dir, name)).unwrap()
    }

    /// Connects `client` to `server`; returns the client's error and the
    /// server's accept result.
    async fn attempt(
        server: &NodeIdentity,
        server_allows: &[&str],
        client: &NodeIdentity,
        dial_as: &str,
    ) -> (Result<Link>, Result<Link>) {
        let server = Endpoint::bind(local(), server, set(server_allows), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move { s.accept().await.unwrap() });
        let client = Endpoint::bind(local(), client, set(&[]), opts()).unwrap();
        let c = client.connect(addr, dial_as).await;
        let a = match tokio::time::timeout(Duration::from_secs(5), acceptor).await {
            Ok(r) => r.unwrap(),
            Err(_) => Err(TransportError::EndpointClosed),
        };
        (c, a)
    }

    #[tokio::test]
    async fn revoked_client_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        ids(dir.path(), &["coordinator", "hospital-1", "hospital-2"]);
        revoke(dir.path(), "hospital-2");
        let coord = reload(dir.path(), "coordinator");
        let (c, a) = attempt(
            &coord,
            &["hospital-1", "hospital-2"],
            &reload(dir.path(), "hospital-2"),
            "coordinator",
        )
        .await;
        assert!(c.is_err(), "revoked client connected");
        let e = a.unwrap_err().to_string();
        assert!(e.contains("Revoked"), "{e}");
        // Not revoked: still in.
        let (c, a) = attempt(
            &coord,
            &["hospital-1", "hospital-2"],
            &reload(dir.path(), "hospital-1"),
            "coordinator",
        )
        .await;
        assert!(c.is_ok() && a.is_ok());
    }

    #[tokio::test]
    async fn revoked_server_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        ids(dir.path(), &["coordinator", "hospital-1"]);
        revoke(dir.path(), "coordinator");
        let (c, _) = attempt(
            &reload(dir.path(), "coordinator"),
            &["hospital-1"],
            &reload(dir.path(), "hospital-1"),
            "coordinator",
        )
        .await;
        let e = c.unwrap_err();
        assert!(matches!(e, TransportError::Connect { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("coordinator") && e.contains("Revoked"), "{e}");
    }

    /// Issues `name` a certificate from the CA in `dir` with `validity`, into
    /// a directory of its own (the node's).
    fn issue(dir: &Path, name: &str, validity: crate::pki::ca::Validity) -> NodeIdentity {
        let node_dir = dir.join(format!("node-{name}"));
        let req = crate::pki::request(&node_dir, name).unwrap();
        let mut ca = crate::pki::ca::Ca::open(&dir.join(crate::pki::LOCAL_CA_DIR)).unwrap();
        ca.sign(&req.csr, name, &validity, &req.cert).unwrap();
        for f in [crate::pki::CA_FILE, crate::pki::CRL_FILE] {
            std::fs::copy(dir.join(f), node_dir.join(f)).unwrap();
        }
        reload(&node_dir, name)
    }

    #[tokio::test]
    async fn expired_and_not_yet_valid_certificates_are_refused() {
        use crate::pki::ca::Validity;
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator"]);
        let expired = issue(
            dir.path(),
            "hospital-1",
            Validity::starting("2020-01-01", 30).unwrap(),
        );
        let early = issue(
            dir.path(),
            "hospital-2",
            Validity::starting("2099-01-01", 30).unwrap(),
        );
        for (client, why) in [
            (&expired, "certificate expired"),
            (&early, "certificate not valid yet"),
        ] {
            let (c, a) = attempt(&v[0], &["hospital-1", "hospital-2"], client, "coordinator").await;
            assert!(c.is_err(), "{why} client connected");
            let e = a.unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            // And as a server: the coordinator dialling it refuses it.
            let (c, _) = attempt(client, &["coordinator"], &v[0], client.name()).await;
            let e = c.unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(client.name()), "{e}");
        }
    }

    /// A coordinator holding only its own key and certificate (no CA key)
    /// signs itself a "hospital-2" certificate, using its own certificate as
    /// the issuer; it trusts that issuer itself, so it can load and present it.
    /// The consortium's nodes refuse it in both directions.
    #[tokio::test]
    async fn hospital_minted_by_the_coordinator_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let d = dir.path();
        let coord_key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(d.join("coordinator.key")).unwrap())
                .unwrap();
        let coord_pem = std::fs::read_to_string(d.join("coordinator.pem")).unwrap();
        let mut issuer_params = rcgen::CertificateParams::from_ca_cert_pem(&coord_pem).unwrap();
        issuer_params.key_usages = Vec::new();
        let issuer = issuer_params.self_signed(&coord_key).unwrap();
        let evil = d.join("evil");
        std::fs::create_dir(&evil).unwrap();
        let req = crate::pki::request(&evil, "hospital-2").unwrap();
        let key_pem = std::fs::read_to_string(&req.key).unwrap();
        let fake_key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["hospital-2".to_string()]).unwrap();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let fake = p.signed_by(&fake_key, &issuer, &coord_key).unwrap();
        std::fs::write(&req.cert, fake.pem()).unwrap();
        // It trusts the consortium CA and its own "CA", with a list for each.
        let crl = rcgen::CertificateRevocationListParams {
            this_update: time::OffsetDateTime::now_utc(),
            next_update: time::OffsetDateTime::now_utc() + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer, &coord_key)
        .unwrap();
        let mut cas = std::fs::read_to_string(d.join("ca.pem")).unwrap();
        cas.push_str(&coord_pem);
        std::fs::write(evil.join("ca.pem"), cas).unwrap();
        let mut crls = std::fs::read_to_string(d.join("crl.pem")).unwrap();
        crls.push_str(&crl.pem().unwrap());
        std::fs::write(evil.join("crl.pem"), crls).unwrap();
        let rogue = reload(&evil, "hospital-2");
        assert_eq!(rogue.name(), "hospital-2");

        // hospital-1 accepts "hospital-2" (a ring peer): refused.
        let (c, a) = attempt(&v[1], &["coordinator", "hospital-2"], &rogue, "hospital-1").await;
        assert!(c.is_err(), "minted hospital-2 connected");
        let e = a.unwrap_err().to_string();
        assert!(e.contains("UnknownIssuer"), "{e}");
        // hospital-1 dials "hospital-2" where the coordinator says it is: refused.
        let (c, _) = attempt(&rogue, &["hospital-1"], &v[1], "hospital-2").await;
        let e = c.unwrap_err().to_string();
        assert!(
            e.contains("hospital-2") && e.contains("UnknownIssuer"),
            "{e}"
        );
        // The coordinator's own certificate, dialled as hospital-2: refused.
        let (c, _) = attempt(&v[0], &["hospital-1"], &v[1], "hospital-2").await;
        let e = c.unwrap_err().to_string();
        assert!(e.contains("hospital-2"), "{e}");
    }

    /// A frame of kind `receipt` holding `payload`; it arrives as the kind
    /// byte followed by `payload`.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32 + 1).to_be_bytes().to_vec();
        f.push(protocol::Kind::Receipt.byte());
        f.extend_from_slice(payload);
        f
    }

    fn received(payload: &[u8]) -> Vec<u8> {
        frame(payload)[4..].to_vec()
    }

    #[tokio::test]
    async fn newer_link_from_a_peer_replaces_the_older() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let (_shub, mut sev) = Hub::start(server);
        let client = Endpoint::bind(local(), &v[1], set(&[]), opts()).unwrap();
        let mut first = client.connect(addr, "coordinator").await.unwrap();
        let Some(NetEvent::Up { id: old, .. }) = sev.recv().await else {
            panic!("first link not up");
        };
        // A reconnect (or a peer opening link after link) replaces the old link.
        let mut second = client.connect(addr, "coordinator").await.unwrap();
        let (mut up, mut down) = (false, false);
        while !(up && down) {
            match tokio::time::timeout(Duration::from_secs(5), sev.recv()).await {
                Ok(Some(NetEvent::Up { id, .. })) => {
                    assert_ne!(id, old);
                    up = true;
                }
                Ok(Some(NetEvent::Down { id, .. })) => {
                    assert_eq!(id, old);
                    down = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let closed = tokio::time::timeout(Duration::from_secs(5), first.recv()).await;
        assert!(matches!(closed, Ok(Err(_)) | Ok(Ok(None))), "{closed:?}");
        // The new link carries frames; one above its kind's limit closes it.
        second.send(&received(b"ok")).await.unwrap();
        match sev.recv().await {
            Some(NetEvent::Frame { payload, .. }) => assert_eq!(payload, received(b"ok")),
            other => panic!("unexpected {other:?}"),
        }
        let mut head = 2000u32.to_be_bytes().to_vec();
        head.push(protocol::Kind::Receipt.byte());
        second.sender.send_raw(&head).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), sev.recv()).await {
            Ok(Some(NetEvent::Down { reason, .. })) => {
                assert!(reason.contains("exceeds"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn hub_dials_with_retry_delivers_in_order_and_reports_loss() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let addr: SocketAddr = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let client = Endpoint::bind(local(), &v[1], set(&["coordinator"]), opts()).unwrap();
        let (mut chub, mut cev) = Hub::start(client);
        // Dial before the server exists: the hub keeps retrying.
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        chub.dial("coordinator", addr, give_up);
        assert!(chub.is_dialing("coordinator"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let server = Endpoint::bind(addr, &v[0], set(&["hospital-1"]), opts()).unwrap();
        let (mut shub, mut sev) = Hub::start(server);

        let Some(NetEvent::Up {
            peer,
            id,
            out,
            handle,
        }) = cev.recv().await
        else {
            panic!("client link not up");
        };
        assert_eq!(peer, "coordinator");
        assert!(chub.link_up(&peer, id, out, handle));
        assert!(!chub.is_dialing("coordinator"));
        let Some(NetEvent::Up {
            peer,
            id,
            out,
            handle,
        }) = sev.recv().await
        else {
            panic!("server link not up");
        };
        assert_eq!(peer, "hospital-1");
        assert!(shub.link_up(&peer, id, out, handle));
        let server_link = id;

        for i in 0..50u32 {
            assert!(chub.send("coordinator", frame(&i.to_be_bytes())));
        }
        for i in 0..50u32 {
            match sev.recv().await {
                Some(NetEvent::Frame { peer, payload, .. }) => {
                    assert_eq!(peer, "hospital-1");
                    assert_eq!(payload, received(&i.to_be_bytes()));
                }
                other => panic!("expected frame {i}, got {other:?}"),
            }
        }
        assert!(!shub.send("hospital-2", frame(b"x")));

        // A dial to a dead address gives up with a Down of id 0.
        let dead: SocketAddr = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let soon = std::time::Instant::now() + Duration::from_millis(300);
        chub.dial("hospital-2", dead, soon);
        loop {
            match cev.recv().await {
                Some(NetEvent::Down { peer, id: 0, .. }) => {
                    assert_eq!(peer, "hospital-2");
                    chub.dial_failed(&peer);
                    break;
                }
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }

        // Shutting the client down finishes its stream: the server sees the loss.
        chub.shutdown(Duration::from_secs(2)).await;
        loop {
            match sev.recv().await {
                Some(NetEvent::Down { peer, id, .. }) => {
                    assert_eq!(peer, "hospital-1");
                    assert_eq!(id, server_link);
                    assert!(shub.link_down(&peer, id));
                    assert!(!shub.is_connected("hospital-1"));
                    break;
                }
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }
    }
}
