//! The federation's protocol core: wire format, pairwise masks and the
//! coordinator's and hospitals' state machines, with no I/O.
//!
//! In the style of quinn-proto: the state machines take the current time as an
//! argument, are fed authenticated messages, connection changes and timeouts, and
//! emit messages to send, events and their next deadline. Encryption, masking and
//! the model maths (the `paillier` and `learning` crates) happen inside them as
//! pure computation. This crate depends on no async runtime, socket, TLS or
//! certificate crate: the QUIC transport, the consortium PKI and the driver loop
//! that feeds these machines live in the `node` crate, as quinn drives
//! quinn-proto.
//!
//! # Threat model
//!
//! The coordinator holds the Paillier key and may deviate; hospitals enforce
//! their own policy (roster, ring floor, masks mandatory, bounds) and release
//! unmasking material for one member set per model state, persisted before
//! it leaves. Each contribution carries a self-mask and pairwise masks, so no
//! ring ciphertext and no sum other than a committed set's aggregate can be
//! unmasked. The protocol and its argument are in `docs/secure-aggregation.md`;
//! the properties and the tests that back them are in the README's threat
//! model (`protocol/tests/attacks.rs` plays the adversaries).
//!
//! # What a driver must do
//!
//! 1. Authenticate every connection (mutual TLS, [`transport`]) and pass the
//!    peer's certificate name as the sender; the machines check that
//!    `envelope.from` matches it, and check run id, round and epoch themselves.
//! 2. Deliver frames in order per peer (one ordered stream per direction is
//!    enough); any interleaving across peers is fine.
//! 3. After each call into a machine, drain `poll_transmit` and `poll_event`;
//!    call `handle_timeout` once `next_deadline` has passed.
//! 4. Coordinator: call `peer_lost` when a connection closes; write each
//!    `Checkpoint` event atomically and keep the private key separately (a
//!    checkpoint holds only its fingerprint).
//! 5. Hospital: call `peer_connected` on every (re)connection to the
//!    coordinator (the machine rejoins and re-syncs by replaying the aggregate
//!    history); route transmits addressed to a hospital over a direct
//!    connection dialled to the address from `RingChanged`.
//! 6. The machines do CPU-heavy crypto inside each call: run them off the
//!    async reactor (a dedicated thread or `spawn_blocking`).
//! 7. Exit once `is_done()` and every transmit is flushed.

mod codec;
pub mod coordinator;
mod error;
pub mod hospital;
pub mod limits;
pub mod masks;
pub mod plan;
pub mod wire;

pub use coordinator::{
    Checkpoint, CoordinatorConfig, CoordinatorEvent, CoordinatorMachine, DecryptionDone,
    DecryptionWork, HospitalResult, RoundSummary, RunKey, RunResults, ThresholdRun,
};
pub use error::{Error, Result};
pub use hospital::{
    Commitment, HospitalConfig, HospitalEvent, HospitalMachine, HospitalPolicy, HospitalState,
    LocalReport,
};
pub use wire::{
    decode_payload, encode_frame, encode_relay_frame, Envelope, FixedPoint, FrameDecoder, Kind,
    Limits, Member, PeerLimits, RunId, RunParams, RunShape, DEFAULT_MAX_MESSAGE_BYTES,
    FRAME_HEADER_BYTES, PROTOCOL_VERSION,
};
