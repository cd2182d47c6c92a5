//! The federation core's error type: rejected peer input, refused runs and local
//! failures of the wire format, the masks and the two state machines.
//!
//! A state machine returns one of these from `handle_message` when it rejects a
//! message; the message is then ignored, the machine keeps running, and the
//! driver logs the error (it always names the peer). Errors that end a run are
//! delivered as a `Failed` event instead.
//!
//! What this type does not cover: certificates, sockets and handshakes. Those
//! belong to the I/O side (the `node` crate), whose error types wrap this one.

use crate::wire::RunId;

/// Everything that can go wrong in the federation core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame declares (or a message serializes to) more bytes than the cap allows.
    #[error("message of {len} bytes exceeds the {max}-byte cap")]
    Oversized {
        /// Declared or actual payload length in bytes.
        len: u64,
        /// The configured cap.
        max: usize,
    },
    /// A frame's payload is not a well-formed envelope.
    #[error("unparsable message: {0}")]
    Unparsable(String),
    /// A local message could not be serialized.
    #[error("could not serialize message: {0}")]
    Serialize(String),
    /// The peer speaks another protocol version.
    #[error("{peer} speaks protocol version {got}, this node speaks {expected}")]
    WrongVersion {
        /// Authenticated name of the sending peer.
        peer: String,
        /// Version in the envelope.
        got: u32,
        /// Version this build speaks.
        expected: u32,
    },
    /// The message belongs to another training run.
    #[error("message from {peer} belongs to run {got}, this node runs {expected}")]
    WrongRun {
        /// Authenticated name of the sending peer.
        peer: String,
        /// Run id in the envelope.
        got: RunId,
        /// Run id of this node's run.
        expected: RunId,
    },
    /// The message belongs to a round that is already over.
    #[error(
        "stale message from {peer}: round {}, current round is {}",
        .got + 1,
        .current + 1
    )]
    StaleRound {
        /// Authenticated name of the sending peer.
        peer: String,
        /// Round in the envelope.
        got: u32,
        /// This node's current round.
        current: u32,
    },
    /// The message belongs to a round this node cannot have reached yet.
    #[error(
        "message from {peer} is for future round {}, current round is {}",
        .got + 1,
        .current + 1
    )]
    FutureRound {
        /// Authenticated name of the sending peer.
        peer: String,
        /// Round in the envelope.
        got: u32,
        /// This node's current round.
        current: u32,
    },
    /// The message belongs to another mask epoch (ring layout) than the current one.
    #[error("message from {peer} belongs to mask epoch {got}, current epoch is {current}")]
    WrongEpoch {
        /// Authenticated name of the sending peer.
        peer: String,
        /// Epoch in the message.
        got: u64,
        /// This node's current epoch.
        current: u64,
    },
    /// The envelope's `from` differs from the peer's authenticated name.
    #[error("message arrived over {peer}'s authenticated channel but claims to be from {claimed}")]
    SenderMismatch {
        /// Authenticated name of the sending peer.
        peer: String,
        /// Name in the envelope's `from` field.
        claimed: String,
    },
    /// The peer is not part of this run (not in the roster or not in the ring).
    #[error("{peer} is not {role}")]
    UnknownPeer {
        /// Authenticated name of the sending peer.
        peer: String,
        /// What the peer would have had to be, e.g. "in the roster".
        role: &'static str,
    },
    /// A well-formed message that the receiver's state does not allow now.
    #[error("unexpected {kind} message from {peer}: {why}")]
    Unexpected {
        /// Authenticated name of the sending peer.
        peer: String,
        /// Message kind.
        kind: &'static str,
        /// Why it is not accepted.
        why: String,
    },
    /// A ciphertext from the peer is invalid (range, gcd, encoding).
    #[error("invalid ciphertext from {peer}: {source}")]
    InvalidCiphertext {
        /// Authenticated name of the sending peer.
        peer: String,
        /// What the paillier crate found wrong.
        #[source]
        source: paillier::Error,
    },
    /// Ciphertexts from the peer are under another public key.
    #[error("ciphertexts from {peer} are under key {got}, the run's key is {expected}")]
    KeyMismatch {
        /// Authenticated name of the sending peer.
        peer: String,
        /// Fingerprint the peer sent.
        got: paillier::KeyFingerprint,
        /// Fingerprint of the run's key.
        expected: paillier::KeyFingerprint,
    },
    /// A message whose content is invalid (lengths, non-finite numbers, bad key, ...).
    #[error("invalid {kind} message from {peer}: {reason}")]
    InvalidMessage {
        /// Authenticated name of the sending peer.
        peer: String,
        /// Message kind.
        kind: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A hospital refused what the coordinator (or a peer) asked because its
    /// own privacy policy or an earlier commitment forbids it.
    #[error("refused {kind} from {peer}: {reason}")]
    PolicyRefused {
        /// Authenticated name of the sender of the refused message.
        peer: String,
        /// Message kind.
        kind: &'static str,
        /// What the policy or commitment forbids.
        reason: String,
    },
    /// Too few hospitals to run (or to go on) without leaking gradients.
    #[error(
        "refusing to run with {available} hospital(s), at least {min} are required \
         (with two, each learns the other's gradient from the aggregate){}{}",
        missing_note(missing),
        reasons_note(reasons)
    )]
    TooFewHospitals {
        /// Hospitals that are available.
        available: usize,
        /// The configured minimum (never below 3).
        min: usize,
        /// Roster hospitals that are missing or were dropped.
        missing: Vec<String>,
        /// What the missing hospitals said of why they cannot take part
        /// (`"hospital-2: reading train_csv ...: row 5 ..."`), where they could.
        reasons: Vec<String>,
    },
    /// A hospital's schema differs from the others'.
    #[error("hospital {hospital} has a different schema than {reference}: {detail}")]
    SchemaMismatch {
        /// The hospital whose schema differs.
        hospital: String,
        /// The hospital whose schema it was compared to.
        reference: String,
        /// The differing columns.
        detail: String,
    },
    /// A member set was asked to unmask and cannot complete: its members
    /// committed to it, so the round is never completed with another set.
    #[error(
        "round {} cannot complete: {} of the committed member set {} {} missing; \
         a committed set never changes (each hospital refuses any other), so restart the \
         missing hospital(s) and resume the coordinator",
        .round + 1,
        missing.join(", "),
        members.join(", "),
        if missing.len() == 1 { "is" } else { "are" }
    )]
    SetIncomplete {
        /// The round (0-based; shown 1-based).
        round: u32,
        /// The committed set.
        members: Vec<String>,
        /// Its members that are missing.
        missing: Vec<String>,
    },
    /// A threshold run's round cannot be decrypted: fewer than `t` members of
    /// its committed set can still give a valid partial decryption.
    #[error(
        "round {} cannot be decrypted: the threshold key needs {needed} partial decryptions \
         from members of the set; {got} valid one(s) arrived and {pending} more member(s) can \
         answer, so {missing} {} missing{}",
        .round + 1,
        if *missing == 1 { "is" } else { "are" },
        reasons_note(unavailable)
    )]
    TooFewPartials {
        /// The round (0-based; shown 1-based).
        round: u32,
        /// The key's threshold `t`.
        needed: u32,
        /// Valid partial decryptions received.
        got: u32,
        /// Members asked (or still askable) that may yet answer.
        pending: u32,
        /// How many partial decryptions no member can give: `needed - got - pending`.
        missing: u32,
        /// `"name: why"` for each member that did not give one.
        unavailable: Vec<String>,
    },
    /// A round failed too many times in a row.
    #[error("round {} failed {attempts} time(s); last reason: {reason}", .round + 1)]
    RoundFailed {
        /// The round (0-based; shown 1-based).
        round: u32,
        /// Attempts made.
        attempts: u32,
        /// Why the last attempt was aborted.
        reason: String,
    },
    /// Invalid local configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A checkpoint does not fit the configuration or key it is resumed with.
    #[error("checkpoint does not match: {0}")]
    CheckpointMismatch(String),
    /// The coordinator stopped the run.
    #[error("the coordinator stopped the run: {0}")]
    Stopped(String),
    /// This hospital cannot take part in the run as configured (its values do
    /// not fit the encoding, say): retrying would fail the same way. The
    /// coordinator was told the same reason.
    #[error("this hospital cannot take part: {0}")]
    CannotContribute(String),
    /// A local cryptographic operation failed.
    #[error("cryptography: {0}")]
    Crypto(#[source] paillier::Error),
    /// A local learning computation failed.
    #[error("learning: {0}")]
    Learning(#[source] learning::Error),
}

fn reasons_note(reasons: &[String]) -> String {
    if reasons.is_empty() {
        String::new()
    } else {
        format!("; {}", reasons.join("; "))
    }
}

fn missing_note(missing: &[String]) -> String {
    if missing.is_empty() {
        String::new()
    } else {
        format!("; missing: {}", missing.join(", "))
    }
}

/// Result alias of the federation core.
pub type Result<T> = std::result::Result<T, Error>;
