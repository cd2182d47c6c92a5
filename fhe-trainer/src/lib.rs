//! Logistic-regression training on TFHE-encrypted data.
//!
//! A data owner encrypts a labelled data set with TFHE (tfhe-rs 1.8
//! `shortint`); a server trains a logistic-regression model by mini-batch SGD
//! on the ciphertexts alone and returns encrypted weights that only the owner
//! can decrypt. The weights stay encrypted across batches and epochs, so the
//! server runs any number of batches without the owner.
//!
//! This crate owns the circuit, its three evaluators, the owner's encodings,
//! the client/server file exchange, the accuracy suite and the `fhe-trainer`
//! CLI. It does no networking: files move however the deployment likes.
//! Measured figures (accuracy tables, timings) live in the repository's
//! README with the commands that reproduce them, not here.
//!
//! # Threat model
//!
//! The server is *semi-honest*: it runs the circuit it is given and tries to
//! learn from what it sees, which is the compressed server key, ciphertexts,
//! and the public circuit config. From the config and the files it learns the
//! shapes (features, rows per batch, number of batches and so epochs x
//! batches per epoch), the hyper-parameters (learning rate, weight range,
//! bits, clips, sigmoid levels) and the feature ratio, which is the same
//! public constant for every feature ([`encode::INNER_RATIO`], on the
//! [`circuit::RATIO_GRID`] the circuit enforces). It never learns the exact
//! row count (only full batches are sent; leftover rows change from epoch to
//! epoch), a centre, a spread, a label or a feature value. A malicious server
//! that runs another circuit learns nothing more from the ciphertexts (IND-CPA)
//! but can make the returned weights wrong. The owner must **not** send
//! decryption results, or anything that depends on them, such as accuracies
//! or whether decryption succeeded, back to an untrusted server: TFHE is not
//! IND-CPA-D secure, and decryptions of ciphertexts a malicious server crafted
//! can recover the key. The client key and the owner file (clear test rows
//! and labels) are written 0600 and the client key is refused when its group
//! or others may read it.
//!
//! # One circuit, three evaluators
//!
//! [`circuit::train_batch`] and [`circuit::infer`] are generic over
//! [`circuit::Backend`]. [`circuit::ClearBackend`] runs them on plain `u8`
//! blocks (`Fhe::Simulate`), [`exec::TfheBackend`] on shortint ciphertexts
//! (`Fhe::Execute`); both evaluate the same table lookups on the same inputs,
//! so they agree bit for bit (tests/execute.rs checks full weight states
//! batch by batch at B = 4, d = 5, and at 8 x 30 in an ignored test).
//! `Fhe::Disable` is the float32 reference ([`float`]) on the same
//! preprocessing, batches and learning rate. [`model::SgdClassifier`] puts
//! the three behind one sklearn-like API (`fit`, `partial_fit`, `predict`,
//! `predict_proba`, with encrypted inference in `Execute`);
//! [`owner::LinearModel`] is the decrypted model and its inference.
//! [`model::OneVsRest`] trains `k` binary circuits for `k` classes (the
//! owner encrypts `k` label-flipped copies of each batch; the server runs
//! them as `k` independent models), in all three modes and in the split
//! workflow.
//!
//! # Encodings
//!
//! Every value is a 4-bit *block*, the whole message-and-carry space of
//! `PARAM_MESSAGE_2_CARRY_2_KS_PBS` (TUniform, p_fail 2^-128). A block is
//! either combined linearly (sums, multiplication by 4) or sent through a
//! table lookup (one programmable bootstrap, PBS). Public metadata follows
//! every block: its largest possible value (kept <= 15) and the squared
//! 2-norm of its linear combination (kept <= 25, the parameter set's noise
//! bound of 5). The clear backend asserts both, so a circuit that runs in
//! Simulate is valid under encryption. A decrypted block of 16 or more (the
//! padding bit set) is an error, never folded away.
//!
//! * **Features** (chosen by the owner from the training rows, in the clear,
//!   recorded in the owner file): min-max scaled to [-1, 1], then centred on
//!   the training median and divided by a per-feature spread fitted by
//!   Lloyd's algorithm with the level ratio fixed ([`encode::Quantizer`]).
//!   Each feature is then 2 bits with levels `[-1, -1/2, 1/2, 1]`. The inner
//!   level 1/2 is the same for every feature: the server learns nothing from
//!   it, and the forward product `x * (+-s)` is exactly on the `s / 2` grid
//!   of the product encoding (data-dependent ratios rounded most inner
//!   products to 0). Centring is an affine change of variables the bias
//!   absorbs; the exported model is an ordinary logistic regression on the
//!   [-1, 1] features.
//! * **Labels never travel alone**: the owner encrypts `x * (1 - 2y)` (index
//!   `3 - k` when `y = 1`) and the bias column as `1 - 2y`. Then the margin
//!   `m = (1 - 2y) z` is the forward sum itself and the logistic gradient is
//!   `sum_i x'_i sigmoid(m_i)`: no subtraction of `y`, no extra lookup.
//! * **Master weights**: `W = 4 hi + lo`, a high digit `hi <= 11` and a 2-bit
//!   low digit (48 levels over `parameters_range`, "6 bits"). The forward pass
//!   reads a ternary weight `{-s, 0, s}` derived from `hi` (one lookup per
//!   weight per batch); the update acts on the full `W`.
//! * **Requantization** rounds relative to zero with ties to even, so a
//!   backward product `1/2 * 1/3` on the `1/3` grid goes to 0 and `1/2 * 1`
//!   to `2/3` alike for both signs: no drift from one-sided rounding.
//!
//! # The circuit for one batch (B rows, d features, c = d + 1 columns)
//!
//! 1. Forward products `x'_ij * f_j`: pack `4 x + f` (linear), one lookup each,
//!    output on 5 levels: `B c` PBS.
//! 2. Margin reduction per row: sum 3 products (<= 12), requantize to 5 levels
//!    clipped at +-2, repeat until the sum fits a block (a lone leftover
//!    already on the tree's encoding is carried up without a lookup); then
//!    one lookup gives the 4-level sigmoid `a_i` of `{0, 1/3, 2/3, 1}`.
//! 3. Backward products `x'_ij * a_i`: pack `4 x + a`, one lookup each, output
//!    on 7 levels: `B c` PBS.
//! 4. Gradient reduction per column, the same way (pairs, then 5 levels).
//! 5. Update: one lookup maps the gradient sum to `round(-lr g / (B delta))`
//!    clipped to +-6 steps, offset by 6; add it to `lo` (<= 15); two lookups
//!    give the carry and the new `lo`; add the carry to `hi`; two lookups give
//!    the clamped `hi` and the next forward weight.
//!
//! For B = 8, d = 30: 248 forward products + 128 margin-tree + 8 sigmoid +
//! 248 backward products + 155 gradient-tree + 31 update + 62 carry/low +
//! 62 clamp/forward = **942 PBS per batch**, every one on a 4-bit block
//! (counted by running the circuit: `circuit::tests`).
//!
//! # The PBS price of each choice
//!
//! * Fixed inner level 1/2 instead of per-feature ratios: 0 PBS (the same
//!   tables, now exact in the forward pass).
//! * Skipping identity lookups in the reduction trees: -39 PBS per 8 x 30
//!   batch (981 before), identical weights.
//! * Epochs: the per-batch price is unchanged; the default training length
//!   ([`model::default_epochs`]: enough epochs for [`model::MIN_STEPS`] steps,
//!   at most [`model::MAX_EPOCHS`]) multiplies the number of batches, so
//!   small data sets pay for several epochs and large ones for one.
//! * Dropping leftover rows: at most `B - 1` rows unused per epoch, a
//!   different set each epoch; 0 PBS.
//! * Owner-side model selection ([`model::select_config`], opt-in): 0 PBS;
//!   the owner runs six Simulate trainings on its own rows in the clear and
//!   the server learns only the chosen entry of the public grid.
//! * One-vs-rest for `k` classes: `k` times the binary batch (`k` models on
//!   `k` label-flipped copies of each batch).
//! * Finer reduction trees (`tree_max` 6 instead of 4): tree values summed
//!   in pairs instead of triples, so more tree levels and lookups per row and
//!   column; measured worse on the suite, so not the default.
//!
//! # Files
//!
//! [`io`] frames every file with a magic, a version, a kind and a length,
//! and reads it under a per-kind size limit; ciphertexts use tfhe's
//! `safe_serialize` and `safe_deserialize_conformant` (shape, moduli, atomic
//! pattern, noise level and the exact public degree of each digit), the
//! compressed server key and seeded ciphertexts (no `Named` impl in tfhe
//! 1.8) bincode under that header with tfhe's `is_conformant` check. Every
//! file is written 0600 through a fresh temporary file renamed into place.
//! [`keys::Client`] encrypts batches as seeded ciphertexts and decrypts
//! weights; [`keys::Server`] only ever holds the compressed server key.

pub mod circuit;
pub mod data;
pub mod encode;
pub mod error;
pub mod exec;
pub mod float;
pub mod io;
pub mod keys;
pub mod model;
pub mod owner;
pub mod plot;
pub mod suite;

pub use error::{Error, Result};
pub use model::{Fhe, SgdClassifier, TrainerConfig, TrainerConfigBuilder};
