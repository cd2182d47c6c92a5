//! The federation's wire format: message types, the envelope around them, and the
//! framing of envelopes on a byte stream.
//!
//! Every message travels in an [`Envelope`] `{ version, run_id, round, from, body }`
//! serialized as JSON. A frame is a 4-byte big-endian length, then one byte naming
//! the message [`Kind`], then the JSON; the length counts the kind byte and the
//! JSON. The body's JSON is the kind's struct itself (no `"type"` tag): the kind
//! travels in the header, so the receiver knows it before the payload arrives.
//!
//! Framing is pure: [`encode_frame`] turns an envelope into bytes and
//! [`FrameDecoder`] turns arbitrary incoming bytes back into envelopes, never
//! panicking. It checks the announced length against the kind's own limit
//! ([`Limits`], derived from the run's configuration, see [`crate::limits`])
//! before buffering the payload, and [`decode_payload`] deserializes the concrete
//! struct of the kind with its vectors bounded while they are read. This is the one
//! framing code path of production (the `node` transport), the fuzz target and the
//! in-memory test harness.
//!
//! Ciphertexts are carried as the paillier crate's compact bytes, base64 in JSON
//! ([`Bytes`]). They are parsed and validated against the run's public key (whose
//! fingerprint travels with them) by the state machines when the message arrives,
//! so code past that point only sees valid `paillier::Ciphertext`s.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::limits::{bounded, with_items};
pub use crate::limits::{ItemLimits, Limits, PeerLimits, RunShape};

/// Protocol version spoken by this build; envelopes with another version are rejected.
/// Version 2 put the message kind in the frame header and dropped the body's
/// `"type"` tag.
pub const PROTOCOL_VERSION: u32 = 2;

/// Default cap on one message's JSON payload: 16 MiB, room for a 1000-feature
/// gradient sent one ciphertext per value at 3072 bits (about 2 MiB) several times over.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Bytes of a frame's header: the length prefix and the kind byte.
pub const FRAME_HEADER_BYTES: usize = LENGTH_PREFIX_BYTES + 1;

/// The kind of a message, as named by the byte after a frame's length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// [`Body::Hello`].
    Hello = 1,
    /// [`Body::Rejoin`].
    Rejoin,
    /// [`Body::Setup`].
    Setup,
    /// [`Body::PeerRound`].
    PeerRound,
    /// [`Body::RoundStart`].
    RoundStart,
    /// [`Body::RingPass`].
    RingPass,
    /// [`Body::Receipt`].
    Receipt,
    /// [`Body::Unmask`].
    Unmask,
    /// [`Body::PeerCommit`].
    PeerCommit,
    /// [`Body::Reveal`].
    Reveal,
    /// [`Body::Aggregate`].
    Aggregate,
    /// [`Body::RoundAck`].
    RoundAck,
    /// [`Body::Abort`].
    Abort,
    /// [`Body::Finish`].
    Finish,
    /// [`Body::Report`].
    Report,
    /// [`Body::Done`].
    Done,
    /// [`Body::Stop`].
    Stop,
    /// Relay mode: a hospital-to-hospital message sealed end to end, or a
    /// hospital's signed key offer, carried between a hospital and its
    /// coordinator as opaque bytes (no envelope; see [`encode_relay_frame`]).
    Relay,
    /// [`Body::Decrypt`].
    Decrypt,
    /// [`Body::Partial`].
    Partial,
}

impl Kind {
    /// Number of kinds.
    pub const COUNT: usize = 20;
    /// Every kind, in byte order.
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Hello,
        Kind::Rejoin,
        Kind::Setup,
        Kind::PeerRound,
        Kind::RoundStart,
        Kind::RingPass,
        Kind::Receipt,
        Kind::Unmask,
        Kind::PeerCommit,
        Kind::Reveal,
        Kind::Aggregate,
        Kind::RoundAck,
        Kind::Abort,
        Kind::Finish,
        Kind::Report,
        Kind::Done,
        Kind::Stop,
        Kind::Relay,
        Kind::Decrypt,
        Kind::Partial,
    ];
    /// What a hospital sends its coordinator.
    pub const HOSPITAL_TO_COORDINATOR: [Kind; 10] = [
        Kind::Hello,
        Kind::Rejoin,
        Kind::RingPass,
        Kind::Receipt,
        Kind::Reveal,
        Kind::RoundAck,
        Kind::Abort,
        Kind::Report,
        Kind::Relay,
        Kind::Partial,
    ];
    /// What a coordinator sends a hospital.
    pub const COORDINATOR_TO_HOSPITAL: [Kind; 10] = [
        Kind::Setup,
        Kind::RoundStart,
        Kind::Unmask,
        Kind::Aggregate,
        Kind::Abort,
        Kind::Finish,
        Kind::Done,
        Kind::Stop,
        Kind::Relay,
        Kind::Decrypt,
    ];
    /// What a hospital sends another hospital.
    pub const HOSPITAL_TO_HOSPITAL: [Kind; 3] = [Kind::PeerRound, Kind::RingPass, Kind::PeerCommit];

    /// The kind a header byte names, if any.
    pub fn from_byte(b: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(b).checked_sub(1)?).copied()
    }

    /// The header byte.
    pub fn byte(self) -> u8 {
        self as u8
    }

    pub(crate) fn index(self) -> usize {
        self as usize - 1
    }

    /// Short name, as [`Body::kind`].
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Rejoin => "rejoin",
            Kind::Setup => "setup",
            Kind::PeerRound => "peer_round",
            Kind::RoundStart => "round_start",
            Kind::RingPass => "ring_pass",
            Kind::Receipt => "receipt",
            Kind::Unmask => "unmask",
            Kind::PeerCommit => "peer_commit",
            Kind::Reveal => "reveal",
            Kind::Aggregate => "aggregate",
            Kind::RoundAck => "round_ack",
            Kind::Abort => "abort",
            Kind::Finish => "finish",
            Kind::Report => "report",
            Kind::Done => "done",
            Kind::Stop => "stop",
            Kind::Relay => "relay",
            Kind::Decrypt => "decrypt",
            Kind::Partial => "partial",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifier of one training run: 1 to 64 characters from `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RunId(String);

/// The run id of messages sent before a hospital has been set up for any run
/// (its first `Hello`, or its withdrawal when it cannot take part).
pub const NO_RUN: &str = "none";

impl RunId {
    /// [`NO_RUN`].
    pub fn none() -> RunId {
        RunId(NO_RUN.to_owned())
    }

    /// Parses a run id, rejecting empty, overlong or oddly-charactered ones.
    pub fn new(s: impl Into<String>) -> Result<RunId> {
        let s = s.into();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if s.is_empty() || s.len() > 64 || !s.chars().all(ok_char) {
            return Err(Error::Config(format!(
                "run id {s:?} must be 1 to 64 characters of [A-Za-z0-9_.-]"
            )));
        }
        Ok(RunId(s))
    }

    /// Derives a fresh run id from 16 random bytes (hex).
    pub fn from_random(bytes: [u8; 16]) -> RunId {
        RunId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The run id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RunId::new(s).map_err(serde::de::Error::custom)
    }
}

/// Opaque bytes, base64 (standard alphabet, padded) in JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// One message with its routing header.
///
/// Serializes with the body untagged; parse frames with [`decode_payload`] or
/// [`FrameDecoder`], which take the body's kind from the frame header.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Envelope {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The run this message belongs to. A hospital that has not been set up yet
    /// sends its `Hello` with the run id it last took part in, or `"none"`.
    pub run_id: RunId,
    /// The round this message belongs to (0-based).
    pub round: u32,
    /// The sender's node name; must equal the authenticated peer name.
    pub from: String,
    /// The message.
    pub body: Body,
}

impl Envelope {
    /// Wraps `body` in an envelope of the current protocol version.
    pub fn new(run_id: RunId, round: u32, from: impl Into<String>, body: Body) -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            run_id,
            round,
            from: from.into(),
            body,
        }
    }

    /// Checks the header fields every receiver checks: version, and that `from`
    /// is the name the transport authenticated.
    pub fn check_header(&self, peer: &str) -> Result<()> {
        if self.version != PROTOCOL_VERSION {
            return Err(Error::WrongVersion {
                peer: peer.to_owned(),
                got: self.version,
                expected: PROTOCOL_VERSION,
            });
        }
        if self.from != peer {
            return Err(Error::SenderMismatch {
                peer: peer.to_owned(),
                claimed: self.from.clone(),
            });
        }
        Ok(())
    }
}

/// Training mode, as in `learning::Mode` (`"seed"` or `"global"` in JSON).
pub use learning::Mode;

/// The model a run trains.
pub use learning::ModelKind;

/// Column layout of a hospital's data set.
pub use learning::Schema;

/// Fixed-point encoding of gradient values, as carried in `Setup`; the wire twin of
/// `paillier::PackingSpec`.
///
/// A value `v` is encoded as `round(v * 2^frac_bits)`, needs `|v| < 2^int_bits`, and
/// up to `max_addends` encodings may be summed in one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedPoint {
    /// Fractional bits: resolution 2^-frac_bits.
    pub frac_bits: u32,
    /// Integer bits: magnitude bound 2^int_bits.
    pub int_bits: u32,
    /// Most encodings that may be added in one slot (at least the ring size).
    pub max_addends: u64,
}

impl FixedPoint {
    /// The default: 40 fractional bits (resolution 9.1e-13), 24 integer bits
    /// (|value| < 1.6e7, room for diabetes-like gradients of up to ~1e6 with 16x
    /// headroom) and up to 64 addends. A slot then takes about 71 bits, so a
    /// 2048-bit key packs 28 values per ciphertext and diabetes' 11-value gradient
    /// fits in one. After 50 rounds the quantization error of the weights stays
    /// many orders of magnitude below 1e-6.
    pub const DEFAULT: FixedPoint = FixedPoint {
        frac_bits: 40,
        int_bits: 24,
        max_addends: 64,
    };

    /// The paillier crate's packing spec with these parameters.
    pub fn packing_spec(&self) -> paillier::PackingSpec {
        paillier::PackingSpec {
            frac_bits: self.frac_bits,
            int_bits: self.int_bits,
            max_addends: self.max_addends,
        }
    }
}

impl Default for FixedPoint {
    fn default() -> Self {
        FixedPoint::DEFAULT
    }
}

/// A hospital in the ring: its name and where its peers reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Node name (the certificate's name).
    pub name: String,
    /// Address for hospital-to-hospital connections, e.g. `127.0.0.1:7001`.
    pub address: String,
}

/// Hyper-parameters of a run, fixed for its whole life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// `seed` or `global`.
    pub mode: Mode,
    /// Number of rounds (gradient steps).
    pub rounds: u32,
    /// Learning rate: the step on the mean gradient, in either mode (see
    /// [`learning::Mode`]).
    pub eta: f64,
    /// Fixed-point encoding of the gradients.
    pub fixed_point: FixedPoint,
    /// Pack many values per ciphertext (`true`) or one ciphertext per value.
    pub pack: bool,
    /// Pairwise masks on (`true`) or off.
    pub masks: bool,
    /// The model trained (`linear` when absent).
    #[serde(default, skip_serializing_if = "is_default")]
    pub model: ModelKind,
    /// L2 penalty on the mean loss (ridge); 0 when absent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub l2: f64,
    /// `global` mode stops once the penalized mean gradient's norm is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Whether step 0 aggregates the per-column statistics of the consortium
    /// schema's preprocessing.
    #[serde(default, skip_serializing_if = "is_default")]
    pub statistics: bool,
    /// Whether a last step aggregates the evaluation sums of the test rows.
    #[serde(default, skip_serializing_if = "is_default")]
    pub evaluate: bool,
    /// Hex SHA-256 of the consortium schema every hospital must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

impl RunParams {
    /// Linear regression with `mode`, `rounds` and `eta`, the default
    /// encoding, packing and masks on, no statistics or evaluation step: the
    /// original protocol (change fields with struct update syntax).
    pub fn new(mode: Mode, rounds: u32, eta: f64) -> RunParams {
        RunParams {
            mode,
            rounds,
            eta,
            fixed_point: FixedPoint::DEFAULT,
            pack: true,
            masks: true,
            model: ModelKind::Linear,
            l2: 0.0,
            tolerance: None,
            statistics: false,
            evaluate: false,
            schema: None,
        }
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// The aggregate of one completed round, as kept in the history hospitals replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateRecord {
    /// The round (0-based).
    pub round: u32,
    /// Sum of the participants' gradients.
    #[serde(deserialize_with = "bounded::values")]
    pub sum: Vec<f64>,
    /// How many hospitals contributed (the divisor in `seed` mode).
    pub n_hospitals: u32,
    /// Their training rows in total (the divisor in `global` mode).
    pub n_total_rows: u64,
}

/// Hospital -> coordinator: joining a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Node name (must equal the envelope's `from`).
    pub name: String,
    /// Feature names and target of the hospital's training data.
    pub schema: Schema,
    /// Training rows.
    pub rows: u64,
    /// Where peers reach this hospital; `None` means the roster's address.
    pub address: Option<String>,
    /// Rounds this hospital has completed in the envelope's run, if it has state
    /// of that run (a rejoin after a drop or a coordinator restart).
    pub completed_rounds: Option<u32>,
    /// Hex SHA-256 of the consortium schema this hospital's data follows (none:
    /// its columns are used as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_hash: Option<String>,
}

/// Coordinator -> hospital: everything needed to take part, sent on (re)joining.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The run's Paillier public key, in the paillier crate's byte form.
    pub public_key: Bytes,
    /// Its fingerprint (checked against the key on receipt).
    pub key_fingerprint: paillier::KeyFingerprint,
    /// Hyper-parameters.
    pub params: RunParams,
    /// Aggregates of all completed rounds, oldest first; a hospital recomputes its
    /// weights from them (from its local model in `seed` mode, from zeros in `global`).
    #[serde(deserialize_with = "bounded::history")]
    pub history: Vec<AggregateRecord>,
}

/// Hospital -> every other member of the ring, once per round attempt: "I was
/// given this ring", with the pair's mask seed when the sender draws it (the
/// member earlier in the consortium roster does; to an earlier member the
/// seed is empty). A member adds its contribution only once every other
/// member confirmed the same ring this way, so a coordinator that shows
/// members different rings stalls the round instead of receiving any sum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRound {
    /// Mask epoch (the round attempt).
    pub epoch: u64,
    /// SHA-256 of the run, round, epoch and ring names, as the sender saw them.
    pub ring_hash: Bytes,
    /// 32-byte pairwise seed for this round (fixed for all its attempts);
    /// empty when the receiver draws the pair's seed.
    pub seed: Bytes,
}

/// Coordinator -> hospitals: start (or restart) the envelope's round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundStart {
    /// Mask epoch; changes whenever the ring does (and on every retry).
    pub epoch: u64,
    /// The ring, head first; the tail sends the sum to the coordinator.
    #[serde(deserialize_with = "bounded::members")]
    pub ring: Vec<Member>,
    /// Training rows of the ring's hospitals together.
    pub n_total_rows: u64,
}

/// Hospital -> successor (tail -> coordinator): the encrypted running sum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingPass {
    /// Mask epoch of the round attempt.
    pub epoch: u64,
    /// Fingerprint of the key the ciphertexts are under.
    pub key_fingerprint: paillier::KeyFingerprint,
    /// Number of gradient values encoded.
    pub len: u32,
    /// Packed ciphertexts in paillier's compact byte form.
    #[serde(deserialize_with = "bounded::ciphertexts")]
    pub ciphertexts: Vec<Bytes>,
}

/// Hospital -> coordinator: a receipt. `Started` says the sender is alive in
/// this attempt (it processed the `RoundStart`); `SumReceived` that it
/// received and accepted the running sum from its predecessor. The
/// coordinator blames a stalled round on evidence: the last member that
/// provably held the sum, unless its successor never showed it was alive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Mask epoch of the round attempt.
    pub epoch: u64,
    /// What it acknowledges.
    pub stage: ReceiptStage,
}

/// What a [`Receipt`] acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStage {
    /// The attempt's `RoundStart` was processed.
    Started,
    /// The running sum from the predecessor was received and accepted.
    SumReceived,
}

/// Coordinator -> the members of a decrypted attempt: "release the unmasking
/// material for this member set". A hospital commits to one set per model
/// state, persists it, and refuses any other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unmask {
    /// Mask epoch of the attempt whose sum was decrypted.
    pub epoch: u64,
    /// The members whose contributions the decrypted sum holds, ring order.
    #[serde(deserialize_with = "bounded::members")]
    pub members: Vec<String>,
    /// Threshold runs: [`sum_digest`] of the ring's final sum as the
    /// coordinator received it. Members bind it into their commit hash, so
    /// the tail (which computes it from what it sent) vouches for it, and
    /// they decrypt that sum and no other ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum_digest: Option<Bytes>,
}

/// The digest of a round's final sum that threshold members agree on before
/// they reveal and later decrypt it: SHA-256 over the key fingerprint and
/// every ciphertext's value.
pub fn sum_digest(cts: &[paillier::Ciphertext]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"private-training/round-sum/v1");
    h.update((cts.len() as u64).to_be_bytes());
    for c in cts {
        h.update(c.key_fingerprint().0);
        let v = c.value().to_bytes_be();
        h.update((v.len() as u64).to_be_bytes());
        h.update(&v);
    }
    h.finalize().to_vec()
}

/// Hospital -> every other member of the set: "I committed to this set".
/// A hospital reveals only once every member of its set sent the same hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerCommit {
    /// SHA-256 of the run, round and member names of the committed set.
    pub set_hash: Bytes,
}

/// One pairwise seed a survivor reveals: the one it shares with a member of its
/// masking set that is not in the committed set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealedSeed {
    /// The other member of the pair (not in the committed set).
    pub peer: String,
    /// The 32-byte seed.
    pub seed: Bytes,
}

/// Hospital -> coordinator: the unmasking material of the committed set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reveal {
    /// Hash of the committed set (as in [`PeerCommit`]).
    pub set_hash: Bytes,
    /// The sender's self-mask seed for this contribution.
    pub self_seed: Bytes,
    /// Its seeds with masking-set members outside the committed set.
    #[serde(deserialize_with = "bounded::members")]
    pub pair_seeds: Vec<RevealedSeed>,
}

/// Hospital -> coordinator, threshold runs: the sender's partial decryptions
/// of the round's final sum (one per ciphertext, in order) with one batched
/// proof ([`paillier::threshold::BatchPartial`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partial {
    /// Mask epoch of the attempt whose sum it decrypts.
    pub epoch: u64,
    /// `c_k^(2 Delta s_i) mod n^2`, big-endian, one per ciphertext.
    #[serde(deserialize_with = "bounded::ciphertexts")]
    pub values: Vec<Bytes>,
    /// The proof's challenge, big-endian.
    pub challenge: Bytes,
    /// The proof's response, big-endian.
    pub response: Bytes,
}

/// Coordinator -> the committed set: the unmasked sum of the round's gradients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// The aggregate to apply.
    pub record: AggregateRecord,
}

/// Hospital -> coordinator: the step was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundAck {
    /// Test MSE after the step, when the hospital has a test set.
    pub test_mse: Option<f64>,
}

/// Coordinator -> ring, or hospital -> coordinator: abandon the envelope's round attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// Mask epoch of the attempt.
    pub epoch: u64,
    /// Why.
    pub reason: String,
    /// Nodes dropped from the ring because of it (coordinator only).
    #[serde(deserialize_with = "bounded::members")]
    pub dropped: Vec<String>,
    /// Hospital only: the member set it is committed to for this model state,
    /// when it refuses another one; the coordinator retries with exactly it.
    #[serde(default, deserialize_with = "bounded::opt_members")]
    pub committed: Option<Vec<String>>,
    /// Hospital only: the failure is deterministic (retrying cannot help, e.g.
    /// a gradient outside the fixed-point range); the run stops at once.
    #[serde(default)]
    pub deterministic: bool,
}

/// Hospital -> coordinator: the end of its run. Holds nothing derived from the
/// hospital's data alone unless its policy opts in: test metrics only with
/// `share_metrics`, weights only in `global` mode (where they are a function of
/// the aggregates, which the coordinator knows anyway).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Weights of the federated model (`global` mode only).
    #[serde(default, deserialize_with = "bounded::opt_values")]
    pub weights: Option<Vec<f64>>,
    /// Test MSE of the local-only model (opt-in, with a test set).
    #[serde(default)]
    pub local_test_mse: Option<f64>,
    /// Test MSE of the federated model (opt-in, with a test set).
    #[serde(default)]
    pub federated_test_mse: Option<f64>,
    /// The hospital process's peak resident set size in bytes, when its driver
    /// measured it (`HospitalMachine::set_peak_rss_bytes`).
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
}

/// Every message of the protocol. Serialized untagged (the frame header names
/// the kind, [`Body::message_kind`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// Hospital -> coordinator, first contact or reconnect.
    Hello(Hello),
    /// Hospital -> coordinator after it was dropped or lost the coordinator.
    Rejoin(Hello),
    /// Coordinator -> hospital, on (re)joining.
    Setup(Setup),
    /// Hospital -> hospital, once per attempt.
    PeerRound(PeerRound),
    /// Coordinator -> ring.
    RoundStart(RoundStart),
    /// Hospital -> successor, tail -> coordinator.
    RingPass(RingPass),
    /// Hospital -> coordinator, on accepting a running sum.
    Receipt(Receipt),
    /// Coordinator -> the decrypted attempt's members.
    Unmask(Unmask),
    /// Hospital -> hospital, on committing to a member set.
    PeerCommit(PeerCommit),
    /// Hospital -> coordinator, once every member committed.
    Reveal(Reveal),
    /// Coordinator -> members of a threshold run's committed set, once every
    /// member revealed: the round's final sum to partially decrypt (its
    /// digest is the one the members agreed on).
    Decrypt(RingPass),
    /// Member -> coordinator: its partial decryptions of that sum.
    Partial(Partial),
    /// Coordinator -> the committed set.
    Aggregate(Aggregate),
    /// Hospital -> coordinator.
    RoundAck(RoundAck),
    /// Either direction.
    Abort(Abort),
    /// Coordinator -> hospitals: training is over, send your report.
    Finish,
    /// Hospital -> coordinator.
    Report(Report),
    /// Coordinator -> hospitals: reports received, the run is complete.
    Done,
    /// Coordinator -> hospitals: the run failed and stops.
    Stop {
        /// Why.
        reason: String,
    },
}

impl Body {
    /// Short name of the message kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        self.message_kind().name()
    }

    /// The message kind, as named in the frame header.
    pub fn message_kind(&self) -> Kind {
        match self {
            Body::Hello(_) => Kind::Hello,
            Body::Rejoin(_) => Kind::Rejoin,
            Body::Setup(_) => Kind::Setup,
            Body::PeerRound(_) => Kind::PeerRound,
            Body::RoundStart(_) => Kind::RoundStart,
            Body::RingPass(_) => Kind::RingPass,
            Body::Receipt(_) => Kind::Receipt,
            Body::Unmask(_) => Kind::Unmask,
            Body::PeerCommit(_) => Kind::PeerCommit,
            Body::Reveal(_) => Kind::Reveal,
            Body::Aggregate(_) => Kind::Aggregate,
            Body::RoundAck(_) => Kind::RoundAck,
            Body::Abort(_) => Kind::Abort,
            Body::Finish => Kind::Finish,
            Body::Report(_) => Kind::Report,
            Body::Done => Kind::Done,
            Body::Stop { .. } => Kind::Stop,
            Body::Decrypt(_) => Kind::Decrypt,
            Body::Partial(_) => Kind::Partial,
        }
    }
}

/// The JSON of the bodies without fields (`{}`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The JSON of [`Body::Stop`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopBody {
    reason: String,
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Body::Hello(m) | Body::Rejoin(m) => m.serialize(s),
            Body::Setup(m) => m.serialize(s),
            Body::PeerRound(m) => m.serialize(s),
            Body::RoundStart(m) => m.serialize(s),
            Body::RingPass(m) | Body::Decrypt(m) => m.serialize(s),
            Body::Partial(m) => m.serialize(s),
            Body::Receipt(m) => m.serialize(s),
            Body::Unmask(m) => m.serialize(s),
            Body::PeerCommit(m) => m.serialize(s),
            Body::Reveal(m) => m.serialize(s),
            Body::Aggregate(m) => m.serialize(s),
            Body::RoundAck(m) => m.serialize(s),
            Body::Abort(m) => m.serialize(s),
            Body::Report(m) => m.serialize(s),
            Body::Finish | Body::Done => Empty {}.serialize(s),
            Body::Stop { reason } => StopBody {
                reason: reason.clone(),
            }
            .serialize(s),
        }
    }
}

/// An envelope whose body is the concrete struct `T` of a known kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeOf<T> {
    version: u32,
    run_id: RunId,
    round: u32,
    from: String,
    body: T,
}

fn parse<T: serde::de::DeserializeOwned>(
    json: &[u8],
    body: impl FnOnce(T) -> Body,
) -> Result<Envelope> {
    let e: EnvelopeOf<T> =
        serde_json::from_slice(json).map_err(|e| Error::Unparsable(e.to_string()))?;
    Ok(Envelope {
        version: e.version,
        run_id: e.run_id,
        round: e.round,
        from: e.from,
        body: body(e.body),
    })
}

fn parse_kind(kind: Kind, json: &[u8]) -> Result<Envelope> {
    match kind {
        Kind::Hello => parse(json, Body::Hello),
        Kind::Rejoin => parse(json, Body::Rejoin),
        Kind::Setup => parse(json, Body::Setup),
        Kind::PeerRound => parse(json, Body::PeerRound),
        Kind::RoundStart => parse(json, Body::RoundStart),
        Kind::RingPass => parse(json, Body::RingPass),
        Kind::Decrypt => parse(json, Body::Decrypt),
        Kind::Partial => parse(json, Body::Partial),
        Kind::Receipt => parse(json, Body::Receipt),
        Kind::Unmask => parse(json, Body::Unmask),
        Kind::PeerCommit => parse(json, Body::PeerCommit),
        Kind::Reveal => parse(json, Body::Reveal),
        Kind::Aggregate => parse(json, Body::Aggregate),
        Kind::RoundAck => parse(json, Body::RoundAck),
        Kind::Abort => parse(json, Body::Abort),
        Kind::Finish => parse(json, |Empty {}| Body::Finish),
        Kind::Report => parse(json, Body::Report),
        Kind::Done => parse(json, |Empty {}| Body::Done),
        Kind::Stop => parse(json, |s: StopBody| Body::Stop { reason: s.reason }),
        Kind::Relay => Err(Error::Unparsable(
            "a relay frame carries sealed bytes, not an envelope".into(),
        )),
    }
}

/// One relay frame around `payload` (a sealed message or a key offer): the
/// length prefix, [`Kind::Relay`]'s byte, the bytes as they are. Fails with
/// [`Error::Oversized`] above what a message of at most `max_message_bytes`
/// takes sealed ([`crate::limits::relay_frame_max`]).
pub fn encode_relay_frame(payload: &[u8], max_message_bytes: usize) -> Result<Vec<u8>> {
    let max_bytes = crate::limits::relay_frame_max(max_message_bytes);
    let len = payload.len();
    if len > max_bytes || len >= u32::MAX as usize {
        return Err(Error::Oversized {
            len: len as u64,
            max: max_bytes,
        });
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + len);
    out.extend_from_slice(&((len + 1) as u32).to_be_bytes());
    out.push(Kind::Relay.byte());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Serializes `env` into one frame: 4-byte big-endian length, the kind byte,
/// then the JSON. Fails with [`Error::Oversized`] when the JSON exceeds `max_bytes`.
pub fn encode_frame(env: &Envelope, max_bytes: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; FRAME_HEADER_BYTES];
    out[LENGTH_PREFIX_BYTES] = env.body.message_kind().byte();
    serde_json::to_writer(&mut out, env).map_err(|e| Error::Serialize(e.to_string()))?;
    let len = out.len() - FRAME_HEADER_BYTES;
    if len > max_bytes || len >= u32::MAX as usize {
        return Err(Error::Oversized {
            len: len as u64,
            max: max_bytes,
        });
    }
    out[..LENGTH_PREFIX_BYTES].copy_from_slice(&((len + 1) as u32).to_be_bytes());
    Ok(out)
}

/// Parses one frame's payload (the kind byte and the JSON after the length
/// prefix) under `limits`: the kind's byte limit, then its struct with every
/// vector bounded while it is read.
pub fn decode_payload(payload: &[u8], limits: &Limits) -> Result<Envelope> {
    let Some((&byte, json)) = payload.split_first() else {
        return Err(Error::Unparsable("empty frame (no kind byte)".into()));
    };
    let kind = Kind::from_byte(byte)
        .ok_or_else(|| Error::Unparsable(format!("unknown message kind byte {byte}")))?;
    let max = limits.max_bytes(kind);
    if json.len() > max {
        return Err(Error::Oversized {
            len: json.len() as u64,
            max,
        });
    }
    with_items(limits.items(), || parse_kind(kind, json))
}

/// Incremental decoder of a byte stream of frames.
///
/// Feed bytes with [`push`](Self::push) as they arrive and take envelopes with
/// [`next_envelope`](Self::next_envelope). A length above the announced kind's
/// limit (or an unknown kind byte) is reported as soon as the 5-byte header is
/// in, before its payload is buffered; after it (or after any such error) the
/// stream is out of sync and the connection should be closed. An unparsable
/// payload is consumed, so the decoder stays in sync and the caller may go on.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    limits: Limits,
    poisoned: bool,
}

impl FrameDecoder {
    /// A decoder accepting what `limits` allow.
    pub fn new(limits: Limits) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            limits,
            poisoned: false,
        }
    }

    /// The limits it checks.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.poisoned {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn poison(&mut self, e: Error) -> Error {
        self.poisoned = true;
        self.buf = Vec::new();
        e
    }

    /// The next complete frame's payload (the kind byte and the JSON after the
    /// length prefix), `Ok(None)` when more bytes are needed. The transport
    /// reads frames with this, so production framing and the fuzzed decoder are
    /// one code path.
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>> {
        if self.poisoned {
            return Err(Error::Unparsable(
                "stream out of sync after an oversized or unknown frame".into(),
            ));
        }
        if self.buf.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        prefix.copy_from_slice(&self.buf[..LENGTH_PREFIX_BYTES]);
        let len = u32::from_be_bytes(prefix) as usize;
        let byte = self.buf[LENGTH_PREFIX_BYTES];
        let Some(kind) = Kind::from_byte(byte) else {
            return Err(self.poison(Error::Unparsable(format!(
                "unknown message kind byte {byte}"
            ))));
        };
        let max = self.limits.max_bytes(kind);
        if len == 0 || len - 1 > max {
            return Err(self.poison(Error::Oversized {
                len: len.saturating_sub(1) as u64,
                max,
            }));
        }
        let end = LENGTH_PREFIX_BYTES + len;
        if self.buf.len() < end {
            // Room for exactly this frame, not a doubling past it.
            self.buf.reserve_exact(end - self.buf.len());
            return Ok(None);
        }
        let payload = self.buf[LENGTH_PREFIX_BYTES..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(payload))
    }

    /// The next complete envelope, `Ok(None)` when more bytes are needed.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>> {
        match self.next_payload()? {
            Some(payload) => decode_payload(&payload, &self.limits).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope::new(
            RunId::new("run-1").unwrap(),
            3,
            "hospital-1",
            Body::RoundAck(RoundAck {
                test_mse: Some(0.1 + 0.2),
            }),
        )
    }

    #[test]
    fn frame_round_trip_in_pieces() {
        let a = sample();
        let b = Envelope::new(
            RunId::new("run-1").unwrap(),
            4,
            "hospital-2",
            Body::Stop { reason: "x".into() },
        );
        let mut bytes = encode_frame(&a, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        bytes.extend(encode_frame(&b, DEFAULT_MAX_MESSAGE_BYTES).unwrap());
        let mut dec = FrameDecoder::new(Limits::uniform(DEFAULT_MAX_MESSAGE_BYTES));
        let mut got = Vec::new();
        for chunk in bytes.chunks(7) {
            dec.push(chunk);
            while let Some(env) = dec.next_envelope().unwrap() {
                got.push(env);
            }
        }
        assert_eq!(got, vec![a, b]);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn f64_survives_json_bit_exactly() {
        let env = sample();
        let bytes = encode_frame(&env, 1 << 20).unwrap();
        let back = decode_payload(&bytes[4..], &Limits::uniform(1 << 20)).unwrap();
        match back.body {
            Body::RoundAck(RoundAck { test_mse: Some(v) }) => {
                assert_eq!(v.to_bits(), (0.1f64 + 0.2).to_bits())
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let env = sample();
        assert!(matches!(
            encode_frame(&env, 10),
            Err(Error::Oversized { max: 10, .. })
        ));
        let mut dec = FrameDecoder::new(Limits::uniform(100));
        dec.push(&1001u32.to_be_bytes());
        dec.push(&[Kind::RoundAck.byte()]);
        assert!(matches!(
            dec.next_envelope(),
            Err(Error::Oversized {
                len: 1000,
                max: 100
            })
        ));
        // Out of sync from now on, and nothing more is buffered.
        dec.push(&[0; 50]);
        assert!(dec.next_envelope().is_err());
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn unparsable_payload_is_consumed() {
        let mut dec = FrameDecoder::new(Limits::uniform(1000));
        dec.push(&4u32.to_be_bytes());
        dec.push(&[Kind::Receipt.byte()]);
        dec.push(b"{x}");
        assert!(matches!(dec.next_envelope(), Err(Error::Unparsable(_))));
        let good = encode_frame(&sample(), 1000).unwrap();
        dec.push(&good);
        assert_eq!(dec.next_envelope().unwrap(), Some(sample()));
    }

    #[test]
    fn header_checks() {
        let env = sample();
        env.check_header("hospital-1").unwrap();
        assert!(matches!(
            env.check_header("hospital-2"),
            Err(Error::SenderMismatch { .. })
        ));
        let mut old = sample();
        old.version = 0;
        assert!(matches!(
            old.check_header("hospital-1"),
            Err(Error::WrongVersion { got: 0, .. })
        ));
    }

    #[test]
    fn run_ids_are_validated() {
        assert!(RunId::new("").is_err());
        assert!(RunId::new("a b").is_err());
        assert!(RunId::new("x".repeat(65)).is_err());
        assert!(serde_json::from_str::<RunId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<RunId>("\"no/\"").is_err());
        assert_eq!(RunId::from_random([0xab; 16]).as_str().len(), 32);
    }

    #[test]
    fn report_without_peak_rss_still_parses() {
        let json = r#"{"weights":[2.0],"local_test_mse":null,"federated_test_mse":0.5}"#;
        let r: Report = serde_json::from_str(json).unwrap();
        assert_eq!(r.peak_rss_bytes, None);
        // Local-only weights are a function of one hospital's data: the format
        // has no place for them.
        let leaky = r#"{"local_weights":[1.0],"weights":[2.0]}"#;
        assert!(serde_json::from_str::<Report>(leaky).is_err());
        assert_eq!(r.federated_test_mse, Some(0.5));
        let with = Report {
            peak_rss_bytes: Some(12 << 20),
            ..r
        };
        let back: Report = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }

    #[test]
    fn bytes_are_base64() {
        let b = Bytes(vec![1, 2, 3]);
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(s, "\"AQID\"");
        assert_eq!(serde_json::from_str::<Bytes>(&s).unwrap(), b);
        assert!(serde_json::from_str::<Bytes>("\"@@\"").is_err());
    }

    fn shape() -> RunShape {
        RunShape {
            key_bits: 2048,
            features: 10,
            hospitals: 5,
            rounds: 50,
        }
    }

    fn ring_pass(n: usize, ct_len: usize) -> Envelope {
        Envelope::new(
            RunId::new("run-1").unwrap(),
            49,
            "hospital-5",
            Body::RingPass(RingPass {
                epoch: u64::MAX,
                key_fingerprint: paillier::KeyFingerprint([0xff; 32]),
                len: u32::MAX,
                ciphertexts: vec![Bytes(vec![0xff; ct_len]); n],
            }),
        )
    }

    #[test]
    fn oversized_kind_is_refused_before_its_payload() {
        let limits = Limits::hospital_to_coordinator(&shape());
        let max = limits.max_bytes(Kind::RingPass);
        assert!(max > 0 && max < limits.max_bytes(Kind::Hello) * 10);
        let mut dec = FrameDecoder::new(limits.clone());
        dec.push(&((max + 2) as u32).to_be_bytes());
        dec.push(&[Kind::RingPass.byte()]);
        assert!(matches!(
            dec.next_payload(),
            Err(Error::Oversized { max: m, .. }) if m == max
        ));
        assert_eq!(dec.buffered(), 0);
        // A kind hospitals never send is refused whatever its size.
        let mut dec = FrameDecoder::new(limits.clone());
        dec.push(&10u32.to_be_bytes());
        dec.push(&[Kind::Setup.byte()]);
        assert!(matches!(
            dec.next_payload(),
            Err(Error::Oversized { max: 0, .. })
        ));
        // So is an unknown kind byte, and a frame with no kind byte.
        for (len, byte) in [(10u32, 0u8), (10, 200), (0, 1)] {
            let mut dec = FrameDecoder::new(limits.clone());
            dec.push(&len.to_be_bytes());
            dec.push(&[byte]);
            assert!(dec.next_payload().is_err());
            dec.push(&[0; 16]);
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn largest_honest_messages_fit_their_limits() {
        let sh = shape();
        // One ciphertext per value at the largest key: 2 * 2048 / 8 + 33 bytes.
        let big = ring_pass(sh.features, 33 + 512);
        let frame = encode_frame(&big, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        let limits = Limits::hospital_to_coordinator(&sh);
        let json = frame.len() - FRAME_HEADER_BYTES;
        assert!(json <= limits.max_bytes(Kind::RingPass), "{json}");
        let mut dec = FrameDecoder::new(limits);
        dec.push(&frame);
        assert_eq!(dec.next_envelope().unwrap(), Some(big));
        let record = AggregateRecord {
            round: u32::MAX,
            sum: vec![-1.2345678901234567e-308; sh.features],
            n_hospitals: u32::MAX,
            n_total_rows: u64::MAX,
        };
        let setup = Envelope::new(
            RunId::new("r".repeat(64)).unwrap(),
            0,
            "coordinator",
            Body::Setup(Setup {
                public_key: Bytes(vec![0xff; 2048 / 8 + 40]),
                key_fingerprint: paillier::KeyFingerprint([0xff; 32]),
                params: RunParams {
                    mode: Mode::Global,
                    rounds: u32::MAX,
                    eta: -1.2345678901234567e-308,
                    pack: false,
                    ..RunParams::new(Mode::Global, 0, 0.0)
                },
                history: vec![record; sh.rounds as usize],
            }),
        );
        let frame = encode_frame(&setup, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        let limits = Limits::coordinator_to_hospital(&sh);
        assert!(frame.len() - FRAME_HEADER_BYTES <= limits.max_bytes(Kind::Setup));
        assert_eq!(decode_payload(&frame[4..], &limits).unwrap(), setup);
    }

    #[test]
    fn vector_lengths_are_bounded_while_reading() {
        let sh = shape();
        let limits = Limits::hospital_to_coordinator(&sh);
        // Within the byte limit, one ciphertext too many.
        let over = ring_pass(sh.features + 1, 8);
        let frame = encode_frame(&over, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        assert!(frame.len() - FRAME_HEADER_BYTES <= limits.max_bytes(Kind::RingPass));
        let e = decode_payload(&frame[4..], &limits).unwrap_err();
        assert!(e.to_string().contains("more than 10 ciphertexts"), "{e}");
        // The G attack: a frame of empty strings up to the kind's limit.
        let max = limits.max_bytes(Kind::RingPass);
        let head = br#"{"version":2,"run_id":"r","round":0,"from":"h","body":{"ciphertexts":["#;
        let mut json = head.to_vec();
        while json.len() + 3 <= max {
            json.extend_from_slice(br#""","#);
        }
        let mut payload = vec![Kind::RingPass.byte()];
        payload.extend(json);
        let e = decode_payload(&payload, &limits).unwrap_err();
        assert!(e.to_string().contains("more than 10 ciphertexts"), "{e}");
        // Outside a decode (checkpoint files), vectors are not bounded.
        let many: AggregateRecord = serde_json::from_str(
            r#"{"round":0,"sum":[1,2,3,4,5,6,7,8,9,10,11,12],"n_hospitals":3,"n_total_rows":3}"#,
        )
        .unwrap();
        assert_eq!(many.sum.len(), 12);
        let members = Envelope::new(
            RunId::new("r").unwrap(),
            0,
            "coordinator",
            Body::Unmask(Unmask {
                epoch: 1,
                members: vec!["h".into(); sh.hospitals + 1],
                sum_digest: None,
            }),
        );
        let frame = encode_frame(&members, DEFAULT_MAX_MESSAGE_BYTES).unwrap();
        let e = decode_payload(&frame[4..], &Limits::coordinator_to_hospital(&sh)).unwrap_err();
        assert!(e.to_string().contains("more than 5 members"), "{e}");
    }

    #[test]
    fn every_kind_round_trips_with_its_header_byte() {
        let bodies = vec![
            Body::Finish,
            Body::Done,
            Body::Stop { reason: "r".into() },
            Body::Receipt(Receipt {
                epoch: 3,
                stage: ReceiptStage::SumReceived,
            }),
            Body::Abort(Abort {
                epoch: 1,
                reason: "x".into(),
                dropped: vec!["a".into()],
                committed: Some(vec!["b".into()]),
                deterministic: true,
            }),
            Body::Partial(Partial {
                epoch: 2,
                values: vec![Bytes(vec![1, 2]), Bytes(vec![3])],
                challenge: Bytes(vec![4]),
                response: Bytes(vec![5, 6]),
            }),
            Body::Decrypt(RingPass {
                epoch: 2,
                key_fingerprint: paillier::KeyFingerprint([9; 32]),
                len: 1,
                ciphertexts: vec![Bytes(vec![7])],
            }),
        ];
        for b in bodies {
            let env = Envelope::new(RunId::new("r").unwrap(), 1, "n", b);
            let frame = encode_frame(&env, 1 << 20).unwrap();
            assert_eq!(frame[4], env.body.message_kind().byte());
            assert_eq!(Kind::from_byte(frame[4]), Some(env.body.message_kind()));
            let back = decode_payload(&frame[4..], &Limits::uniform(1 << 20)).unwrap();
            assert_eq!(back, env);
            // The body carries no tag: the same JSON under another kind fails.
            let mut other = frame[4..].to_vec();
            other[0] = if other[0] == Kind::Hello.byte() { 2 } else { 1 };
            assert!(decode_payload(&other, &Limits::uniform(1 << 20)).is_err());
        }
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.byte() as usize, i + 1);
        }
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..8)) {
            let mut dec = FrameDecoder::new(Limits::uniform(256));
            for c in &chunks {
                dec.push(c);
                for _ in 0..4 {
                    match dec.next_envelope() {
                        Ok(Some(_)) => continue,
                        _ => break,
                    }
                }
            }
        }
    }
}
