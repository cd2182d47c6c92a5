//! The TFHE evaluator (`Fhe::Execute`): the circuit's blocks are tfhe
//! shortint ciphertexts under `PARAM_MESSAGE_2_CARRY_2_KS32_PBS_TUNIFORM_2M128`, linear steps
//! are tfhe's `unchecked_*` operations (the plan checks the bounds they skip)
//! and each [`Table`] is one programmable bootstrap. Independent bootstraps of
//! a circuit level run in parallel on rayon's pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use tfhe::shortint::server_key::LookupTableOwned;
use tfhe::shortint::{Ciphertext, ServerKey};

use crate::circuit::{Backend, Table};

/// The shortint parameter set every ciphertext and key uses.
pub const PARAMS: tfhe::shortint::parameters::KeySwitch32PBSParameters =
    tfhe::shortint::parameters::PARAM_MESSAGE_2_CARRY_2_KS32_PBS_TUNIFORM_2M128;

/// Evaluates the circuit on ciphertexts with a server key.
pub struct TfheBackend {
    sks: Arc<ServerKey>,
    pbs: AtomicU64,
    luts: Mutex<HashMap<Table, Arc<LookupTableOwned>>>,
}

impl std::fmt::Debug for TfheBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TfheBackend")
            .field("pbs", &self.pbs_count())
            .finish_non_exhaustive()
    }
}

impl TfheBackend {
    /// An evaluator using `sks`.
    pub fn new(sks: Arc<ServerKey>) -> Self {
        TfheBackend {
            sks,
            pbs: AtomicU64::new(0),
            luts: Mutex::new(HashMap::new()),
        }
    }

    /// The server key.
    pub fn server_key(&self) -> &ServerKey {
        &self.sks
    }

    /// The tfhe accumulator of a table, built once and cached.
    fn lut(&self, t: &Table) -> Arc<LookupTableOwned> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map itself is still valid.
        let mut map = self.luts.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(t.clone())
            .or_insert_with(|| {
                Arc::new(
                    self.sks
                        .generate_lookup_table(|x| u64::from(t.get((x % 16) as u8))),
                )
            })
            .clone()
    }
}

impl Backend for TfheBackend {
    type Ct = Ciphertext;

    fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) {
        self.sks.unchecked_add_assign(a, b);
    }

    fn scalar_mul_assign(&self, a: &mut Ciphertext, k: u8) {
        self.sks.unchecked_scalar_mul_assign(a, k);
    }

    fn lookups(&self, jobs: &[(&Ciphertext, &Table)]) -> Vec<Ciphertext> {
        let luts: Vec<Arc<LookupTableOwned>> = jobs.iter().map(|(_, t)| self.lut(t)).collect();
        self.pbs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        jobs.par_iter()
            .zip(luts.par_iter())
            .map(|((ct, _), lut)| self.sks.apply_lookup_table(ct, lut))
            .collect()
    }

    fn pbs_count(&self) -> u64 {
        self.pbs.load(Ordering::Relaxed)
    }
}
