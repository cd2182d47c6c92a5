//! The masks that hide each hospital's contribution: pairwise masks that cancel
//! in the sum, a self-mask per hospital, and the derivation of their seeds.
//!
//! A hospital `i` of a round's masking set `M_i` adds to each packed plaintext
//! it encrypts, all modulo the Paillier modulus `n`:
//! - its **self-mask** `PRG(b_i)`, from a seed derived from its own mask key and
//!   the model state it computed the gradient at ([`self_seed`]): the same state
//!   always gives the same self-mask, so a re-sent contribution is identical;
//! - for every other member `j` of `M_i`, `+PRG(s_ij)` if `j`'s name orders
//!   after `i`'s and `-PRG(s_ij)` otherwise. `s_ij` is drawn by whichever of the
//!   two comes first in the consortium roster ([`pair_seed`]) and sent to the
//!   other over their authenticated channel; it is fixed for the whole round
//!   (every attempt of a round reuses it).
//!
//! Pairwise terms of two members of the decrypted set cancel. What does not
//! cancel is removed by the coordinator from what the survivors reveal after all
//! of them committed to one member set `U` (see the hospital machine): each
//! `i` in `U` reveals `b_i` and `s_ij` for every `j` in `M_i \ U`, never any
//! other seed. A contribution that reaches an adversary alone is therefore
//! hidden by `PRG(b_i)` unless `i` was unmasked as a survivor, and then by its
//! pairwise masks with the other honest survivors.
//!
//! The PRG: ChaCha20 keyed with `SHA-256(domain || seed || round || index)`, so
//! every (round, ciphertext index) gets an independent stream; a value is drawn
//! by rejection sampling (bits(n) random bits, redrawn while >= n), so it is
//! exactly uniform in `[0, n)`.

use num_bigint::BigUint;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// Domain separation of the pairwise-mask PRG's key derivation.
const PAIR_DOMAIN: &[u8] = b"private-training/pairwise-mask/v2";
/// Domain separation of the self-mask PRG's key derivation.
const SELF_DOMAIN: &[u8] = b"private-training/self-mask/v2";
/// Domain separation of seed derivation from a hospital's mask key.
const SEED_DOMAIN: &[u8] = b"private-training/mask-seed/v2";

/// Bytes of a mask seed.
pub const SEED_BYTES: usize = 32;

/// A mask seed; wiped when dropped.
pub type Seed = zeroize::Zeroizing<[u8; SEED_BYTES]>;

/// Which of the two mask kinds a PRG stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskKind {
    /// A pairwise mask, shared by two hospitals.
    Pair,
    /// A hospital's own self-mask.
    SelfMask,
}

/// The uniform mask value in `[0, n)` of one seed for one (round, index).
pub fn prg_value(
    kind: MaskKind,
    seed: &[u8; SEED_BYTES],
    round: u32,
    index: u64,
    n: &BigUint,
) -> BigUint {
    let mut h = Sha256::new();
    h.update(match kind {
        MaskKind::Pair => PAIR_DOMAIN,
        MaskKind::SelfMask => SELF_DOMAIN,
    });
    h.update(seed);
    h.update(round.to_be_bytes());
    h.update(index.to_be_bytes());
    let key: [u8; 32] = h.finalize().into();
    let mut rng = ChaCha20Rng::from_seed(key);
    sample_below(&mut rng, n)
}

/// Uniform value in `[0, n)` by rejection sampling; `n` must be non-zero.
fn sample_below(rng: &mut ChaCha20Rng, n: &BigUint) -> BigUint {
    let bits = n.bits();
    if bits == 0 {
        return BigUint::default();
    }
    let nbytes = bits.div_ceil(8) as usize;
    // Bits of the top byte that lie above bits(n); clearing them makes each draw
    // succeed with probability > 1/2.
    let excess = (nbytes as u64 * 8 - bits) as u32;
    let top_mask = 0xffu8 >> excess;
    let mut buf = vec![0u8; nbytes];
    loop {
        rng.fill_bytes(&mut buf);
        buf[0] &= top_mask;
        let v = BigUint::from_bytes_be(&buf);
        if &v < n {
            return v;
        }
    }
}

/// A hospital's self-mask seed for the model state `state` (a digest of its
/// weights and training data): a pure function of its secret mask key and that
/// state, so the same state always yields the same contribution.
pub fn self_seed(mask_key: &[u8; SEED_BYTES], state: &[u8; 32]) -> Seed {
    let mut h = Sha256::new();
    h.update(SEED_DOMAIN);
    h.update(b"self");
    h.update(mask_key);
    h.update(state);
    zeroize::Zeroizing::new(h.finalize().into())
}

/// The pairwise seed that hospital `me` draws for `peer` in one round: a pure
/// function of `me`'s mask key, the run, the round, the shared aggregate
/// history (so a round replayed on another history gets other seeds) and the
/// peer's name.
pub fn pair_seed(
    mask_key: &[u8; SEED_BYTES],
    run_id: &str,
    round: u32,
    history: &[u8; 32],
    peer: &str,
) -> Seed {
    let mut h = Sha256::new();
    h.update(SEED_DOMAIN);
    h.update(b"pair");
    h.update(mask_key);
    h.update((run_id.len() as u64).to_be_bytes());
    h.update(run_id.as_bytes());
    h.update(round.to_be_bytes());
    h.update(history);
    h.update((peer.len() as u64).to_be_bytes());
    h.update(peer.as_bytes());
    zeroize::Zeroizing::new(h.finalize().into())
}

/// One hospital's mask for one round: its self-mask seed (if any) and the
/// seeds it shares with the other members of its masking set. The coordinator
/// builds the same structure from what a survivor revealed to remove it.
#[derive(Clone)]
pub struct MaskSet {
    me: String,
    round: u32,
    self_seed: Option<Seed>,
    seeds: Vec<(String, Seed)>,
}

impl std::fmt::Debug for MaskSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Seeds are secrets: show whom they are shared with, never their bytes.
        let peers: Vec<&str> = self.seeds.iter().map(|(p, _)| p.as_str()).collect();
        f.debug_struct("MaskSet")
            .field("me", &self.me)
            .field("round", &self.round)
            .field("self_mask", &self.self_seed.is_some())
            .field("peers", &peers)
            .finish()
    }
}

impl MaskSet {
    /// The masks of `me` in `round`: an optional self-mask seed and the seed
    /// shared with each other member of its masking set.
    pub fn new(
        me: impl Into<String>,
        round: u32,
        self_seed: Option<Seed>,
        seeds: Vec<(String, Seed)>,
    ) -> MaskSet {
        MaskSet {
            me: me.into(),
            round,
            self_seed,
            seeds,
        }
    }

    /// The combined mask of ciphertext `index`, in `[0, n)`.
    pub fn mask(&self, index: u64, n: &BigUint) -> BigUint {
        let mut plus = match &self.self_seed {
            Some(b) => prg_value(MaskKind::SelfMask, b, self.round, index, n),
            None => BigUint::default(),
        };
        let mut minus = BigUint::default();
        for (peer, seed) in &self.seeds {
            let v = prg_value(MaskKind::Pair, seed, self.round, index, n);
            if peer.as_str() > self.me.as_str() {
                plus += v;
            } else {
                minus += v;
            }
        }
        let plus = plus % n;
        let minus = minus % n;
        (plus + n - minus) % n
    }

    /// Adds this mask to `plaintexts` (each in `[0, n)`), in place.
    pub fn apply(&self, plaintexts: &mut [BigUint], n: &BigUint) {
        for (i, m) in plaintexts.iter_mut().enumerate() {
            let r = self.mask(i as u64, n);
            *m = (&*m + r) % n;
        }
    }

    /// Subtracts this mask from `plaintexts` (each in `[0, n)`), in place.
    pub fn remove(&self, plaintexts: &mut [BigUint], n: &BigUint) {
        for (i, m) in plaintexts.iter_mut().enumerate() {
            let r = self.mask(i as u64, n);
            *m = (&*m + n - r) % n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn mask_sets(
        names: &[String],
        round: u32,
        seed_of: impl Fn(usize, usize) -> [u8; 32],
    ) -> Vec<MaskSet> {
        let mut pair = BTreeMap::new();
        for i in 0..names.len() {
            for j in i + 1..names.len() {
                pair.insert((i, j), seed_of(i, j));
            }
        }
        (0..names.len())
            .map(|i| {
                let seeds = (0..names.len())
                    .filter(|&j| j != i)
                    .map(|j| {
                        (
                            names[j].clone(),
                            zeroize::Zeroizing::new(pair[&(i.min(j), i.max(j))]),
                        )
                    })
                    .collect();
                MaskSet::new(names[i].clone(), round, None, seeds)
            })
            .collect()
    }

    #[test]
    fn prg_is_deterministic_and_separated() {
        let n = BigUint::from(1_000_003u64) * BigUint::from(999_983u64);
        let s = [7u8; 32];
        let p = |kind, round, index| prg_value(kind, &s, round, index, &n);
        assert_eq!(p(MaskKind::Pair, 2, 3), p(MaskKind::Pair, 2, 3));
        assert_ne!(p(MaskKind::Pair, 2, 3), p(MaskKind::Pair, 2, 4));
        assert_ne!(p(MaskKind::Pair, 2, 3), p(MaskKind::Pair, 3, 3));
        assert_ne!(p(MaskKind::Pair, 2, 3), p(MaskKind::SelfMask, 2, 3));
        assert!(p(MaskKind::SelfMask, 2, 3) < n);
    }

    #[test]
    fn sampling_is_uniform_over_a_small_modulus() {
        // n = 5 needs 3 bits, so 3 of 8 draws are rejected; all residues appear
        // about equally often.
        let n = BigUint::from(5u32);
        let mut counts = [0u32; 5];
        for i in 0..5000u64 {
            let v = prg_value(MaskKind::Pair, &[1; 32], 0, i, &n);
            counts[usize::try_from(v.iter_u64_digits().next().unwrap_or(0)).unwrap()] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "counts {counts:?}");
        }
    }

    proptest! {
        #[test]
        fn masks_of_any_ring_cancel(
            n_parties in 2usize..7,
            round in any::<u32>(),
            salt in any::<u8>(),
            n_raw in proptest::collection::vec(any::<u8>(), 8..40),
        ) {
            let mut n = BigUint::from_bytes_be(&n_raw);
            n |= BigUint::from(1u32); // odd and non-zero, like a Paillier modulus
            let names: Vec<String> = (0..n_parties).map(|i| format!("h{}", (i * 7 + salt as usize) % 97)).collect();
            prop_assume!(names.iter().collect::<std::collections::BTreeSet<_>>().len() == names.len());
            let sets = mask_sets(&names, round, |i, j| [(i * 16 + j) as u8 ^ salt; 32]);
            for index in 0..3u64 {
                let total = sets.iter().fold(BigUint::default(), |acc, s| (acc + s.mask(index, &n)) % &n);
                prop_assert_eq!(total, BigUint::default());
            }
            // Masked plaintexts sum to the plain sum.
            let plain: Vec<BigUint> = (0..n_parties).map(|i| BigUint::from(i as u64 * 3 + 1) % &n).collect();
            let mut sum_masked = BigUint::default();
            for (s, p) in sets.iter().zip(&plain) {
                let mut v = vec![p.clone()];
                s.apply(&mut v, &n);
                prop_assert!(v[0] < n);
                sum_masked = (sum_masked + &v[0]) % &n;
            }
            let sum_plain = plain.iter().fold(BigUint::default(), |a, p| (a + p) % &n);
            prop_assert_eq!(sum_masked, sum_plain);
        }
    }

    /// What the coordinator does with survivors' reveals: for a decrypted set
    /// `U` of a masking set `M`, removing each survivor's self-mask and its
    /// pairwise masks with `M \ U` leaves exactly the plain sum of `U`.
    #[test]
    fn reveals_of_the_survivors_unmask_their_sum() {
        let n = BigUint::from(1_000_003u64) * BigUint::from(999_983u64);
        let names: Vec<String> = (1..=5).map(|i| format!("hospital-{i}")).collect();
        let seed = |i: usize, j: usize| zeroize::Zeroizing::new([(i * 16 + j) as u8; 32]);
        let selfs: Vec<Seed> = (0..5)
            .map(|i| zeroize::Zeroizing::new([200 + i as u8; 32]))
            .collect();
        let full = |i: usize, peers: &[usize]| {
            let seeds = peers
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| (names[j].clone(), seed(i.min(j), i.max(j))))
                .collect();
            MaskSet::new(names[i].clone(), 9, Some(selfs[i].clone()), seeds)
        };
        let all = [0, 1, 2, 3, 4];
        let survivors = [0, 1, 3, 4]; // hospital-3 dropped after masking
        let plain: Vec<BigUint> = (0..5).map(|i| BigUint::from(1000 + i as u64)).collect();
        let mut sum = BigUint::default();
        for &i in &survivors {
            let mut v = vec![plain[i].clone()];
            full(i, &all).apply(&mut v, &n);
            sum = (sum + &v[0]) % &n;
        }
        // Each survivor reveals its self seed and its seed with hospital-3 only.
        let mut v = vec![sum];
        for &i in &survivors {
            full(i, &[i, 2]).remove(&mut v, &n);
        }
        let expected: BigUint = survivors.iter().map(|&i| &plain[i]).sum();
        assert_eq!(v[0], expected % &n);
    }
}
