//! Limb vectors: conversions to and from `BigUint`, wiping a `BigUint`,
//! reading bit windows of an exponent, and the masked table lookup.

use num_bigint::BigUint;

/// Converts a `BigUint` to exactly `limbs` little-endian 64-bit limbs.
/// `x` must fit; callers reduce first.
pub(crate) fn to_limbs(x: &BigUint, limbs: usize) -> Vec<u64> {
    let mut v = x.to_u64_digits();
    debug_assert!(v.len() <= limbs, "value wider than the modulus");
    v.resize(limbs, 0);
    v
}

/// Converts little-endian 64-bit limbs back to a `BigUint`.
pub(crate) fn from_limbs(limbs: &[u64]) -> BigUint {
    let mut v32 = Vec::with_capacity(limbs.len() * 2);
    for &l in limbs {
        v32.push(l as u32);
        v32.push((l >> 32) as u32);
    }
    BigUint::new(v32)
}

/// Overwrites a `BigUint`'s digit buffer with zeros in place (assigning an
/// all-zero slice of the same length reuses the existing allocation).
pub(crate) fn wipe(x: &mut BigUint) {
    let digits = x.bits().div_ceil(32) as usize;
    x.assign_from_slice(&vec![0u32; digits]);
}

/// Reads `w` bits of the little-endian limb array starting at bit `pos`.
pub(super) fn extract_bits(digits: &[u64], pos: usize, w: usize) -> usize {
    let limb = pos / 64;
    let off = pos % 64;
    let lo = digits.get(limb).copied().unwrap_or(0) >> off;
    let hi = if off + w > 64 && off != 0 {
        digits.get(limb + 1).copied().unwrap_or(0) << (64 - off)
    } else {
        0
    };
    ((lo | hi) & ((1u64 << w) - 1)) as usize
}

/// Copies entry `idx` of a flattened table of `k`-limb entries into `out`,
/// reading every entry so the memory access pattern does not depend on `idx`.
pub(super) fn ct_select(table: &[u64], k: usize, idx: usize, out: &mut [u64]) {
    out.fill(0);
    for (i, entry) in table.chunks_exact(k).enumerate() {
        // All-ones when i == idx, computed without a branch.
        let diff = (i ^ idx) as u64;
        let mask = ((diff | diff.wrapping_neg()) >> 63).wrapping_sub(1);
        for (o, &e) in out.iter_mut().zip(entry) {
            *o |= e & mask;
        }
    }
}
