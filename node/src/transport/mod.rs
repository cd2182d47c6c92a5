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
//! [`FrameDecoder`](protocol::FrameDecoder) under the peer's
//! [`PeerLimits`](protocol::PeerLimits) (per message kind and per
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
//!
//! # Layout
//!
//! - `config`: [`TransportOptions`] and the rustls / quinn configurations
//!   built from them (certificate and roster verification);
//! - `endpoint`: the [`Endpoint`] (bind, accept, connect: handshake, roster
//!   check, preamble);
//! - `link`: framing on one connection ([`Link`] and its halves);
//! - `hub`: the [`Hub`] owning a node's links and their tasks, and the
//!   [`NetEvent`]s it hands the driver.
//!
//! This file holds the tunables and the [`TransportError`] they share.

mod config;
mod endpoint;
mod hub;
mod link;
#[cfg(test)]
mod test_util;

pub use config::TransportOptions;
pub use endpoint::Endpoint;
pub use hub::{Hub, NetEvent};
pub use link::{Link, LinkHandle, LinkReceiver, LinkSender};

use std::net::SocketAddr;

use crate::pki::PkiError;

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

/// Bytes of frames one link may have received that the driver has not
/// handled yet (at least one frame of the link's largest kind): its reader
/// stops reading beyond them, and QUIC flow control stops the peer.
pub const LINK_BYTES: usize = 1 << 20;

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
