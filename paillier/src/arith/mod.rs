//! Big-integer arithmetic under the scheme: Montgomery multiplication over
//! 64-bit limbs, fixed-window modular exponentiation, and the fixed-base
//! exponentiation table used by the DJN encryption path.
//!
//! Why not `num_bigint::BigUint::modpow`: it allocates on every step, uses a
//! plain bit-by-bit ladder and has no dedicated squaring. Here the modulus is
//! fixed per key, so the Montgomery constants are computed once ([`Monty`]),
//! squarings use the symmetric product and a separate reduction (about 25%
//! fewer limb products; measured about 20% faster than a multiplication at
//! 2048 to 4096 bits, `examples/modpow_cmp.rs`), the carry chains are laid out
//! so that several run side by side (the multiplier, not carry latency, sets
//! the pace), and the exponent is consumed in fixed windows; short exponents
//! that need no regularity use a sliding window ([`Monty::pow_vartime`]).
//!
//! Side channels: the exponentiation is *regular*: for a given exponent bit
//! length it performs the same sequence of squarings and multiplications
//! whatever the exponent bits are, table entries are selected with a masked scan
//! of the whole table, and the final Montgomery subtraction is masked. This is
//! a best-effort hardening in safe Rust, not an audited constant-time
//! guarantee (the compiler may still introduce branches). Everything in this
//! module named `_vartime` makes no such attempt: its doc says which
//! arguments its timing leaks, and each call site passes only public values
//! there or says why the leak is acceptable. Secrets (the primes, values
//! derived from them) get inverses from [`inverse_mod_prime`] (Fermat, through
//! the regular exponentiation) and [`lift_inverse`].
//!
//! Files, lowest first: `limbs` (conversions, wiping, bit windows, masked
//! lookup), `kernels` (the limb-level multiply, square and reduce),
//! `montgomery` ([`Monty`]), `modpow` (its exponentiations), `fixed_base`
//! ([`FixedBaseTable`]) and `inverse` (modular inverses).

mod fixed_base;
mod inverse;
mod kernels;
mod limbs;
mod modpow;
mod montgomery;

pub use fixed_base::FixedBaseTable;
pub use inverse::{
    inverse_mod_prime, inverse_mod_square_vartime, lift_inverse, mod_inverse_vartime,
};
/// Zeroes a secret `BigUint` in place (for modules above `arith`).
pub(crate) use limbs::wipe as wipe_biguint;
pub(crate) use limbs::{from_limbs, to_limbs, wipe};
pub use montgomery::Monty;

/// The seeded generator of the arithmetic's unit tests.
#[cfg(test)]
fn test_rng() -> rand::rngs::StdRng {
    rand::SeedableRng::seed_from_u64(7)
}
