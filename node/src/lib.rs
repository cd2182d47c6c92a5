//! The I/O side of a federation node, as `quinn` is to `quinn-proto`: what the
//! `coordinator` and `hospital-node` binaries share around the sans-IO state
//! machines of the `protocol` crate.
//!
//! - [`transport`]: QUIC with mutual TLS 1.3 against the consortium CA, one
//!   ordered stream of length-prefixed frames per link, the [`transport::Hub`]
//!   that owns a node's links.
//! - [`pki`]: the consortium's certificate files, provisioning and loading.
//! - [`driver`]: the one event loop that feeds a state machine from the hub
//!   and the clock and sends what it polls; each binary supplies a
//!   [`driver::Role`] for what differs (what to do with events, where to send
//!   a message that has no link yet).
//! - [`audit`]: a hospital's append-only log of what left it.
//! - [`relay`]: relay mode, the hospital's sealing client and the
//!   coordinator's forwarder around [`seal`].
//! - [`seal`]: end-to-end sealing of the hospital-to-hospital messages the
//!   coordinator relays (signed X25519 key offers, per-direction AEAD).
//! - [`config`], [`logging`], [`files`], [`process`]: the binaries' shared
//!   config helpers, log and progress output, atomic and secret files, and
//!   facts about the running process.
//!
//! What this crate does not own: the protocol's rules (the `protocol` crate
//! decides what to send and what to accept), the binaries' config schemas and
//! command lines, and the model maths.

pub mod audit;
pub mod config;
pub mod driver;
mod error;
pub mod files;
pub mod logging;
pub mod pki;
pub mod process;
pub mod relay;
pub mod seal;
pub mod transport;

pub use error::{Error, Result};
