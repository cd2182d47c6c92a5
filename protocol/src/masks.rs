//! Pairwise masks that cancel in the ring's sum.
//!
//! Every pair of hospitals `(i, j)` in a ring shares a 32-byte seed `s_ij`, agreed
//! over their direct authenticated channel for one mask epoch (the member earlier
//! in that epoch's ring draws it and sends it, so a node only ever waits for nodes
//! before it and a stall is blamed on the right node). For each packed plaintext a
//! hospital encrypts, it adds `+PRG(s_ij)` for every peer `j` whose name orders
//! after its own and `-PRG(s_ij)` for every peer whose name orders before, all
//! modulo the Paillier modulus `n`. Each pair's two terms
//! cancel, so the masks of all ring members sum to zero mod `n` and the decrypted
//! aggregate is the plain sum of the encodings, while every single contribution is
//! hidden by a one-time pad unless all of that hospital's peers collude.
//!
//! The PRG: ChaCha20 keyed with `SHA-256(domain || seed || epoch || round || index)`,
//! so every (epoch, round, ciphertext index) gets an independent stream; a value is
//! drawn by rejection sampling (bits(n) random bits, redrawn while >= n), so it is
//! exactly uniform in `[0, n)`.

use num_bigint::BigUint;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// Domain separation of the mask PRG's key derivation.
const DOMAIN: &[u8] = b"private-training/pairwise-mask/v1";

/// Bytes of a pairwise seed.
pub const SEED_BYTES: usize = 32;

/// The uniform mask value in `[0, n)` of one pair for one (epoch, round, index).
pub fn prg_value(
    seed: &[u8; SEED_BYTES],
    epoch: u64,
    round: u32,
    index: u64,
    n: &BigUint,
) -> BigUint {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(seed);
    h.update(epoch.to_be_bytes());
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

/// One hospital's seeds with its ring peers for one epoch.
#[derive(Clone)]
pub struct MaskSet {
    me: String,
    epoch: u64,
    seeds: Vec<(String, [u8; SEED_BYTES])>,
}

impl std::fmt::Debug for MaskSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Seeds are secrets: show whom they are shared with, never their bytes.
        let peers: Vec<&str> = self.seeds.iter().map(|(p, _)| p.as_str()).collect();
        f.debug_struct("MaskSet")
            .field("me", &self.me)
            .field("epoch", &self.epoch)
            .field("peers", &peers)
            .finish()
    }
}

impl MaskSet {
    /// The masks of `me` for `epoch`, from the seed shared with each other ring member.
    pub fn new(
        me: impl Into<String>,
        epoch: u64,
        seeds: Vec<(String, [u8; SEED_BYTES])>,
    ) -> MaskSet {
        MaskSet {
            me: me.into(),
            epoch,
            seeds,
        }
    }

    /// The epoch these seeds belong to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The combined mask of ciphertext `index` in `round`, in `[0, n)`.
    pub fn mask(&self, round: u32, index: u64, n: &BigUint) -> BigUint {
        let mut plus = BigUint::default();
        let mut minus = BigUint::default();
        for (peer, seed) in &self.seeds {
            let v = prg_value(seed, self.epoch, round, index, n);
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

    /// Adds this hospital's masks to `plaintexts` (each in `[0, n)`), in place.
    pub fn apply(&self, round: u32, plaintexts: &mut [BigUint], n: &BigUint) {
        for (i, m) in plaintexts.iter_mut().enumerate() {
            let r = self.mask(round, i as u64, n);
            *m = (&*m + r) % n;
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
        epoch: u64,
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
                    .map(|j| (names[j].clone(), pair[&(i.min(j), i.max(j))]))
                    .collect();
                MaskSet::new(names[i].clone(), epoch, seeds)
            })
            .collect()
    }

    #[test]
    fn prg_is_deterministic_and_separated() {
        let n = BigUint::from(1_000_003u64) * BigUint::from(999_983u64);
        let s = [7u8; 32];
        assert_eq!(prg_value(&s, 1, 2, 3, &n), prg_value(&s, 1, 2, 3, &n));
        assert_ne!(prg_value(&s, 1, 2, 3, &n), prg_value(&s, 1, 2, 4, &n));
        assert_ne!(prg_value(&s, 1, 2, 3, &n), prg_value(&s, 2, 2, 3, &n));
        assert_ne!(prg_value(&s, 1, 2, 3, &n), prg_value(&s, 1, 3, 3, &n));
        assert!(prg_value(&s, 1, 2, 3, &n) < n);
    }

    #[test]
    fn sampling_is_uniform_over_a_small_modulus() {
        // n = 5 needs 3 bits, so 3 of 8 draws are rejected; all residues appear
        // about equally often.
        let n = BigUint::from(5u32);
        let mut counts = [0u32; 5];
        for i in 0..5000u64 {
            let v = prg_value(&[1; 32], 0, 0, i, &n);
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
            epoch in any::<u64>(),
            round in any::<u32>(),
            salt in any::<u8>(),
            n_raw in proptest::collection::vec(any::<u8>(), 8..40),
        ) {
            let mut n = BigUint::from_bytes_be(&n_raw);
            n |= BigUint::from(1u32); // odd and non-zero, like a Paillier modulus
            let names: Vec<String> = (0..n_parties).map(|i| format!("h{}", (i * 7 + salt as usize) % 97)).collect();
            prop_assume!(names.iter().collect::<std::collections::BTreeSet<_>>().len() == names.len());
            let sets = mask_sets(&names, epoch, |i, j| [(i * 16 + j) as u8 ^ salt; 32]);
            for index in 0..3u64 {
                let total = sets.iter().fold(BigUint::default(), |acc, s| (acc + s.mask(round, index, &n)) % &n);
                prop_assert_eq!(total, BigUint::default());
            }
            // Masked plaintexts sum to the plain sum.
            let plain: Vec<BigUint> = (0..n_parties).map(|i| BigUint::from(i as u64 * 3 + 1) % &n).collect();
            let mut sum_masked = BigUint::default();
            for (s, p) in sets.iter().zip(&plain) {
                let mut v = vec![p.clone()];
                s.apply(round, &mut v, &n);
                prop_assert!(v[0] < n);
                sum_masked = (sum_masked + &v[0]) % &n;
            }
            let sum_plain = plain.iter().fold(BigUint::default(), |a, p| (a + p) % &n);
            prop_assert_eq!(sum_masked, sum_plain);
        }
    }
}
