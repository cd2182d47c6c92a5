//! The data owner ([`Client`]: key generation, encryption of batches and
//! weights, decryption) and the [`Server`] (server key only; trains and
//! infers on ciphertexts), with the file payloads they exchange.

use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tfhe::conformance::ParameterSetConformant;
use tfhe::shortint::ciphertext::Degree;
use tfhe::shortint::parameters::CiphertextConformanceParams;
use tfhe::shortint::{Ciphertext, ClientKey, CompressedCiphertext, CompressedServerKey};

use crate::circuit::{infer, train_batch, BatchData, CircuitConfig, Plan, WeightState, LO_LEVELS};
use crate::error::{Error, Result};
use crate::exec::{TfheBackend, PARAMS};
use crate::io::{ct_from_bytes, ct_to_bytes};

/// Random tag shared by all files made under one key set, so files from
/// different key sets are refused instead of decrypting to garbage.
pub type KeyId = [u8; 16];

/// Conformance parameters of a block of this parameter set whose public
/// degree (largest value it may hold) is `degree`.
fn conformance(degree: u64) -> CiphertextConformanceParams {
    let mut p = PARAMS.to_shortint_conformance_param();
    p.degree = Degree::new(degree);
    p
}

/// Checks a seeded ciphertext read from a file against the parameter set
/// (dimensions, moduli, atomic pattern, noise level, degree of a fresh 2-bit
/// encryption), so a hostile file cannot reach tfhe with a mismatched shape.
fn check_compressed(ct: &CompressedCiphertext) -> Result<()> {
    if !ct.is_conformant(&PARAMS.to_shortint_conformance_param()) {
        return Err(Error::Incompatible(
            "seeded ciphertext does not match the parameter set".into(),
        ));
    }
    Ok(())
}

/// Public degrees of the three digit vectors of a weight state.
fn state_degrees(config: &CircuitConfig) -> [u64; 3] {
    [u64::from(config.hi_max), u64::from(LO_LEVELS - 1), 2]
}

/// Degree of an encrypted sigmoid level (0..4).
const LEVEL_DEGREE: u64 = 3;

/// Serialized form of encrypted weights: each block `safe_serialize`d.
pub type StateBytes = WeightState<Vec<u8>>;

/// Serializes a state with canonical degrees (the public bound of each digit),
/// so that the reader can demand exactly those degrees.
fn state_to_bytes(st: &WeightState<Ciphertext>, config: &CircuitConfig) -> Result<StateBytes> {
    let [dh, dl, df] = state_degrees(config);
    let conv = |v: &[Ciphertext], d: u64| {
        v.iter()
            .map(|c| {
                let mut c = c.clone();
                c.degree = Degree::new(d);
                ct_to_bytes(&c)
            })
            .collect::<Result<Vec<_>>>()
    };
    Ok(WeightState {
        hi: conv(&st.hi, dh)?,
        lo: conv(&st.lo, dl)?,
        fwd: conv(&st.fwd, df)?,
    })
}

fn state_from_bytes(st: &StateBytes, config: &CircuitConfig) -> Result<WeightState<Ciphertext>> {
    let columns = config.n_features + 1;
    if st.hi.len() != columns || st.lo.len() != columns || st.fwd.len() != columns {
        return Err(Error::Shape(format!(
            "weight state does not have {columns} columns"
        )));
    }
    let [dh, dl, df] = state_degrees(config);
    let conv = |v: &[Vec<u8>], d: u64| {
        let params = conformance(d);
        v.iter()
            .map(|b| ct_from_bytes(b, &params))
            .collect::<Result<Vec<_>>>()
    };
    Ok(WeightState {
        hi: conv(&st.hi, dh)?,
        lo: conv(&st.lo, dl)?,
        fwd: conv(&st.fwd, df)?,
    })
}

/// The data owner's key. Its `Debug` output hides the secret. A key read
/// from a file is under this build's parameter set ([`PARAMS`]) or refused
/// there (a key made under another set would encrypt batches no server of
/// this build accepts).
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "ClientFile")]
pub struct Client {
    key_id: KeyId,
    cks: ClientKey,
}

/// A client key as stored, before its parameter set is checked.
#[derive(Deserialize)]
struct ClientFile {
    key_id: KeyId,
    cks: ClientKey,
}

impl TryFrom<ClientFile> for Client {
    type Error = String;

    fn try_from(f: ClientFile) -> std::result::Result<Client, String> {
        let expected: tfhe::shortint::parameters::ShortintParameterSet = PARAMS.into();
        if f.cks.parameters() != expected {
            return Err(
                "the client key was made under another tfhe parameter set than this build's \
                 (an older fhe-trainer?): make a new key with `fhe-trainer keygen`"
                    .into(),
            );
        }
        Ok(Client {
            key_id: f.key_id,
            cks: f.cks,
        })
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("key_id", &hex(&self.key_id))
            .finish_non_exhaustive()
    }
}

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the server receives to evaluate: the compressed server key.
#[derive(Clone, Serialize, Deserialize)]
pub struct ServerKeyFile {
    /// Key-set tag.
    pub key_id: KeyId,
    /// tfhe's compressed (seeded) server key.
    pub key: CompressedServerKey,
}

impl std::fmt::Debug for ServerKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeyFile")
            .field("key_id", &hex(&self.key_id))
            .finish_non_exhaustive()
    }
}

/// Encrypted training input: the public circuit config, the initial
/// encrypted weights and the batches of each model (one model for binary
/// data, one per class for one-vs-rest), each batch a row-major block of
/// seeded ciphertexts.
#[derive(Clone, Serialize, Deserialize)]
pub struct BatchesFile {
    /// Key-set tag.
    pub key_id: KeyId,
    /// The circuit the server must run.
    pub config: CircuitConfig,
    /// Initial weights, the starting point of every model.
    pub initial: StateBytes,
    /// Training batches of each model (the same number for every model).
    pub batches: Vec<Vec<BatchData<CompressedCiphertext>>>,
}

impl BatchesFile {
    /// Batches per model.
    pub fn batches_per_model(&self) -> usize {
        self.batches.first().map_or(0, Vec::len)
    }
}

impl std::fmt::Debug for BatchesFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchesFile")
            .field("key_id", &hex(&self.key_id))
            .field("models", &self.batches.len())
            .field("batches", &self.batches_per_model())
            .finish_non_exhaustive()
    }
}

/// Encrypted weights, as returned by the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeightsFile {
    /// Key-set tag.
    pub key_id: KeyId,
    /// The circuit config the weights belong to.
    pub config: CircuitConfig,
    /// Batches trained so far, per model.
    pub batches_done: u64,
    /// The weights of each model.
    pub states: Vec<StateBytes>,
}

/// Encrypted rows for inference.
#[derive(Clone, Serialize, Deserialize)]
pub struct RowsFile {
    /// Key-set tag.
    pub key_id: KeyId,
    /// Rows of seeded ciphertexts, bias column last.
    pub rows: Vec<Vec<CompressedCiphertext>>,
}

impl std::fmt::Debug for RowsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowsFile")
            .field("key_id", &hex(&self.key_id))
            .field("rows", &self.rows.len())
            .finish()
    }
}

/// Encrypted sigmoid levels from inference, one per row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PredictionsFile {
    /// Key-set tag.
    pub key_id: KeyId,
    /// One safe-serialized ciphertext per row.
    pub levels: Vec<Vec<u8>>,
}

impl Client {
    /// Generates a fresh client key (the expensive server key is derived
    /// on demand by [`Client::server_key`]).
    pub fn generate() -> Client {
        let mut key_id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut key_id);
        Client {
            key_id,
            cks: ClientKey::new(PARAMS),
        }
    }

    /// The key-set tag.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The compressed server key, for the server.
    pub fn server_key(&self) -> ServerKeyFile {
        ServerKeyFile {
            key_id: self.key_id,
            key: CompressedServerKey::new(&self.cks),
        }
    }

    /// The uncompressed server key, for in-process use.
    pub fn server_key_uncompressed(&self) -> tfhe::shortint::ServerKey {
        tfhe::shortint::ServerKey::new(&self.cks)
    }

    fn enc(&self, v: u8) -> Ciphertext {
        // The full 4-bit block space is used, so no reduction modulo the
        // message modulus: `unchecked_encrypt`.
        self.cks.unchecked_encrypt(u64::from(v))
    }

    /// Encrypts a clear weight state (all three digit vectors).
    pub fn encrypt_state(&self, st: &WeightState<u8>) -> WeightState<Ciphertext> {
        let e = |v: &[u8]| v.iter().map(|&x| self.enc(x)).collect();
        WeightState {
            hi: e(&st.hi),
            lo: e(&st.lo),
            fwd: e(&st.fwd),
        }
    }

    /// Decrypts a weight state.
    pub fn decrypt_state(&self, st: &WeightState<Ciphertext>) -> Result<WeightState<u8>> {
        let d = |v: &[Ciphertext]| {
            v.iter()
                .map(|c| self.decrypt_block(c))
                .collect::<Result<Vec<_>>>()
        };
        Ok(WeightState {
            hi: d(&st.hi)?,
            lo: d(&st.lo)?,
            fwd: d(&st.fwd)?,
        })
    }

    /// Decrypts one block (full 4-bit space). tfhe decodes modulo 32, the
    /// padding bit included; a value of 16 or more means the block overflowed
    /// into the padding bit, which is an error, never folded away.
    pub fn decrypt_block(&self, ct: &Ciphertext) -> Result<u8> {
        let v = self.cks.decrypt_message_and_carry(ct);
        if v > u64::from(crate::circuit::MAX_RAW) {
            return Err(Error::Overflow { value: v });
        }
        Ok(v as u8)
    }

    /// Encrypts feature-index rows (`0..3`, [`crate::circuit::X_INDICES`]) as
    /// seeded ciphertexts.
    pub fn encrypt_rows_compressed(
        &self,
        rows: &[Vec<u8>],
    ) -> Result<Vec<Vec<CompressedCiphertext>>> {
        rows.iter()
            .map(|r| {
                r.iter()
                    .map(|&v| {
                        if v >= crate::circuit::X_INDICES {
                            return Err(Error::Shape(format!(
                                "feature index {v} is not below {}",
                                crate::circuit::X_INDICES
                            )));
                        }
                        Ok(self.cks.encrypt_compressed(u64::from(v)))
                    })
                    .collect()
            })
            .collect()
    }

    /// Encrypts one clear batch into seeded ciphertexts.
    pub fn encrypt_batch(&self, batch: &BatchData<u8>) -> Result<BatchData<CompressedCiphertext>> {
        Ok(BatchData {
            rows: self.encrypt_rows_compressed(&batch.rows)?,
        })
    }

    /// Builds the batches file for the server: `per_model[m]` are model
    /// `m`'s batches (one model for binary data).
    pub fn batches_file(
        &self,
        config: &CircuitConfig,
        initial: &WeightState<u8>,
        per_model: &[Vec<BatchData<u8>>],
    ) -> Result<BatchesFile> {
        if per_model.is_empty() || per_model.iter().any(|b| b.len() != per_model[0].len()) {
            return Err(Error::Shape(
                "every model needs the same, non-zero number of batch lists".into(),
            ));
        }
        Ok(BatchesFile {
            key_id: self.key_id,
            config: config.clone(),
            initial: state_to_bytes(&self.encrypt_state(initial), config)?,
            batches: per_model
                .iter()
                .map(|bs| {
                    bs.iter()
                        .map(|b| self.encrypt_batch(b))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?,
        })
    }

    /// Decrypts a weights file into one clear state per model.
    pub fn decrypt_weights_file(&self, f: &WeightsFile) -> Result<Vec<WeightState<u8>>> {
        self.check_id(&f.key_id)?;
        Plan::new(f.config.clone())?;
        f.states
            .iter()
            .map(|s| self.decrypt_state(&state_from_bytes(s, &f.config)?))
            .collect()
    }

    /// Builds a rows file for encrypted inference.
    pub fn rows_file(&self, rows: &[Vec<u8>]) -> Result<RowsFile> {
        Ok(RowsFile {
            key_id: self.key_id,
            rows: self.encrypt_rows_compressed(rows)?,
        })
    }

    /// Decrypts predicted sigmoid levels (0..4).
    pub fn decrypt_predictions(&self, f: &PredictionsFile) -> Result<Vec<u8>> {
        self.check_id(&f.key_id)?;
        let params = conformance(LEVEL_DEGREE);
        f.levels
            .iter()
            .map(|b| self.decrypt_block(&ct_from_bytes(b, &params)?))
            .collect()
    }

    fn check_id(&self, id: &KeyId) -> Result<()> {
        if *id != self.key_id {
            return Err(Error::Incompatible(format!(
                "file was made for key set {}, this is {}",
                hex(id),
                hex(&self.key_id)
            )));
        }
        Ok(())
    }
}

/// The training server: holds the server key only.
#[derive(Debug)]
pub struct Server {
    key_id: KeyId,
    backend: TfheBackend,
}

impl Server {
    /// Decompresses a server key file; the key is checked against the
    /// parameter set first.
    pub fn new(file: &ServerKeyFile) -> Result<Server> {
        use tfhe::shortint::ciphertext::MaxDegree;
        use tfhe::shortint::parameters::AtomicPatternParameters;
        let expected = (
            AtomicPatternParameters::from(PARAMS),
            MaxDegree::from_msg_carry_modulus(PARAMS.message_modulus, PARAMS.carry_modulus),
        );
        if !file.key.is_conformant(&expected) {
            return Err(Error::Incompatible(
                "server key does not match the parameter set".into(),
            ));
        }
        Ok(Server {
            key_id: file.key_id,
            backend: TfheBackend::new(Arc::new(file.key.decompress())),
        })
    }

    /// A server around an already expanded key (in-process use).
    pub fn from_key(key_id: KeyId, key: Arc<tfhe::shortint::ServerKey>) -> Server {
        Server {
            key_id,
            backend: TfheBackend::new(key),
        }
    }

    /// The evaluator (for bootstrap counts).
    pub fn backend(&self) -> &TfheBackend {
        &self.backend
    }

    fn check_id(&self, id: &KeyId) -> Result<()> {
        if *id != self.key_id {
            return Err(Error::Incompatible(format!(
                "file was made for key set {}, server key is {}",
                hex(id),
                hex(&self.key_id)
            )));
        }
        Ok(())
    }

    /// Loads the initial encrypted state of a batches file.
    pub fn initial_state(&self, f: &BatchesFile) -> Result<WeightState<Ciphertext>> {
        self.check_id(&f.key_id)?;
        Plan::new(f.config.clone())?;
        state_from_bytes(&f.initial, &f.config)
    }

    /// Loads the states of a weights file (to continue training).
    pub fn state_from_file(&self, f: &WeightsFile) -> Result<Vec<WeightState<Ciphertext>>> {
        self.check_id(&f.key_id)?;
        Plan::new(f.config.clone())?;
        f.states
            .iter()
            .map(|s| state_from_bytes(s, &f.config))
            .collect()
    }

    /// Expands one seeded batch, checking every ciphertext.
    pub fn expand_batch(
        &self,
        b: &BatchData<CompressedCiphertext>,
    ) -> Result<BatchData<Ciphertext>> {
        let rows = b
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| {
                        check_compressed(c)?;
                        Ok(c.decompress())
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BatchData { rows })
    }

    /// One SGD step on an encrypted batch.
    pub fn train(
        &self,
        plan: &Plan,
        state: &mut WeightState<Ciphertext>,
        batch: &BatchData<Ciphertext>,
    ) -> Result<()> {
        train_batch(&self.backend, plan, state, batch)
    }

    /// Packs the states of every model into a weights file.
    pub fn weights_file(
        &self,
        config: &CircuitConfig,
        batches_done: u64,
        states: &[WeightState<Ciphertext>],
    ) -> Result<WeightsFile> {
        Ok(WeightsFile {
            key_id: self.key_id,
            config: config.clone(),
            batches_done,
            states: states
                .iter()
                .map(|s| state_to_bytes(s, config))
                .collect::<Result<_>>()?,
        })
    }

    /// Encrypted inference on a rows file with an encrypted state.
    pub fn predict(
        &self,
        plan: &Plan,
        state: &WeightState<Ciphertext>,
        rows: &RowsFile,
    ) -> Result<PredictionsFile> {
        self.check_id(&rows.key_id)?;
        let expanded = self.expand_batch(&BatchData {
            rows: rows.rows.clone(),
        })?;
        let levels = infer(&self.backend, plan, state, &expanded.rows)?;
        Ok(PredictionsFile {
            key_id: self.key_id,
            levels: levels
                .into_iter()
                .map(|mut c| {
                    c.degree = Degree::new(LEVEL_DEGREE);
                    ct_to_bytes(&c)
                })
                .collect::<Result<_>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client key file made under another parameter set (the classic
    /// keyswitch of earlier builds) is refused when read, naming the cause;
    /// this build's key reads back.
    #[test]
    fn a_client_key_under_another_parameter_set_is_refused_on_load() {
        let old = Client {
            key_id: [7; 16],
            cks: ClientKey::new(tfhe::shortint::parameters::PARAM_MESSAGE_2_CARRY_2_KS_PBS),
        };
        let bytes = bincode::serialize(&old).unwrap();
        let e = bincode::deserialize::<Client>(&bytes).unwrap_err();
        assert!(e.to_string().contains("another tfhe parameter set"), "{e}");
        let new = Client::generate();
        let back: Client = bincode::deserialize(&bincode::serialize(&new).unwrap()).unwrap();
        assert_eq!(back.key_id, new.key_id);
    }

    #[test]
    fn overflow_into_the_padding_bit_is_an_error() {
        let c = Client::generate();
        assert_eq!(c.decrypt_block(&c.enc(15)).unwrap(), 15);
        // 20 sets the padding bit (tfhe decodes modulo 32): refused, not
        // folded to 4.
        let e = c.decrypt_block(&c.cks.unchecked_encrypt(20)).unwrap_err();
        assert!(matches!(e, Error::Overflow { value: 20 }), "{e}");
    }

    #[test]
    fn ciphertexts_of_the_wrong_degree_are_refused() {
        let c = Client::generate();
        let mut ct = c.enc(2);
        ct.degree = Degree::new(2);
        let bytes = ct_to_bytes(&ct).unwrap();
        assert!(ct_from_bytes(&bytes, &conformance(2)).is_ok());
        assert!(ct_from_bytes(&bytes, &conformance(3)).is_err());
    }
}
