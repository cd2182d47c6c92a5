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
//! batches per epoch) and the hyper-parameters (learning rate, an entry of
//! a public four-entry grid; weight range, bits, forward step, clips,
//! sigmoid levels); the feature levels `[-1, 0,
//! 1]` are the same public constants for every data set
//! ([`circuit::X_LEVELS`]). It never learns the exact
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
//! `PARAM_MESSAGE_2_CARRY_2_KS32_PBS_TUNIFORM_2M128` (p_fail 2^-129.6 at
//! 2-norm 5, the same LWE and GLWE dimensions, bootstrapping key and noise
//! bound as the classic `PARAM_MESSAGE_2_CARRY_2_KS_PBS`, with the
//! keyswitch computed on 32-bit words: a quarter smaller server key and
//! faster bootstraps on a CPU). A block is
//! either combined linearly (sums, multiplication by 4) or sent through a
//! table lookup (one programmable bootstrap, PBS). Public metadata follows
//! every block: its largest possible value (kept <= 15) and the squared
//! 2-norm of its linear combination (kept <= 25, the parameter set's noise
//! bound of 5). The clear backend asserts both, so a circuit that runs in
//! Simulate is valid under encryption. A decrypted block of 16 or more (the
//! padding bit set) is an error, never folded away.
//!
//! * **Features** (chosen by the owner from the training rows, in the clear,
//!   recorded in the owner file): min-max scaled to [-1, 1], then centred
//!   and divided by a per-feature spread, both fitted together by Lloyd's
//!   algorithm on the levels `[-1, 0, 1]` ([`encode::Quantizer`]): each
//!   feature is one of 3 indices. The levels are public constants, the
//!   centre and spread stay with the owner; a feature that sits mostly at
//!   one value (image pixels at 0) gets that value as a level of its own,
//!   which the previous median-centred 4-level encoding `[-1, -1/2, 1/2, 1]`
//!   could not give it. Centring is an affine change of variables the bias
//!   absorbs; the exported model is an ordinary logistic regression on the
//!   [-1, 1] features.
//! * **Learning rate** (chosen by the owner from the training rows, in the
//!   clear, recorded in the owner file's circuit config;
//!   [`model::rule_learning_rate`]): the largest entry of the public grid
//!   `{0.1, 0.15, 0.2, 0.3}` ([`model::LEARNING_RATE_GRID`]) not above
//!   `1 / lambda`, where `lambda` is the largest eigenvalue of the
//!   second-moment matrix `E[u u^T]` of the 3-level training features with
//!   the bias column. The logistic loss has curvature at most `lambda / 4`,
//!   so the rule is a quarter of the classical `1 / L` step: where many
//!   columns move together (tens of correlated features) the rate drops to
//!   0.2 or below and the final SGD iterate is less noisy where the loss is
//!   steepest; where features are few or independent it stays 0.3, the
//!   former fixed default (the README lists `1 / lambda` per suite set).
//!   The same code for every data set; a learning
//!   rate given explicitly (`TrainerConfigBuilder::learning_rate`,
//!   `--learning-rate`) turns it off. The server learns the grid entry
//!   (two bits about `lambda`), nothing finer.
//! * **Labels never travel alone**: the owner encrypts `x * (1 - 2y)` (index
//!   `2 - k` when `y = 1`) and the bias column as `1 - 2y`. Then the margin
//!   `m = (1 - 2y) z` is the forward sum itself and the logistic gradient is
//!   `sum_i x'_i sigmoid(m_i)`: no subtraction of `y`, no extra lookup.
//! * **Master weights**: `W = 4 hi + lo`, a high digit `hi <= 11` and a 2-bit
//!   low digit (48 levels over `parameters_range`, "6 bits"). The forward pass
//!   reads a 5-level weight `{-s, -s/2, 0, s/2, s}` derived from `hi` (one
//!   lookup per weight per batch; `s` = `forward_step`, by default the weight
//!   range 1); the update acts on the full `W`.
//! * **Forward products** `x * f` with `x` in `{-1, 0, 1}` and `f` in
//!   `{-s, ..., s}` are exactly on the 5-level grid `s / 2` (one lookup on
//!   `3 f + x`: 15 of the 16 inputs), so the margin is a sum of exact terms.
//! * **Requantization** rounds relative to zero with ties to even, so a
//!   backward product `1/2 * 1/3` on the `1/3` grid goes to 0 and `1/2 * 1`
//!   to `2/3` alike for both signs: no drift from one-sided rounding.
//!
//! # The circuit for one batch (B rows, d features, c = d + 1 columns)
//!
//! 1. Forward products `x'_ij * f_j`: pack `3 f + x` (linear), one lookup
//!    each, output on 5 levels (`-s .. s` in steps `s / 2`): `B c` PBS.
//! 2. Margin per row, accumulated column by column in one block: the first
//!    three products are summed (raw <= 12) and clipped onto the accumulator
//!    (`+-5` product steps, i.e. `+-2.5 s`, 11 levels: one lookup), then each
//!    further product is added (raw <= 14) and clipped again (one lookup);
//!    the last sum goes straight into the lookup of the 4-level sigmoid
//!    `a_i` of `{0, 1/3, 2/3, 1}`. The margin is exact on the product grid as
//!    long as the running sums stay within the clip (the sigmoid saturates
//!    beyond `+-1.6` anyway): `c - 2` lookups per row (sigmoid included).
//! 3. Backward products `x'_ij * a_i`: pack `4 x + a`, one lookup each, output
//!    on 7 levels: `B c` PBS.
//! 4. Gradient reduction per column: pairs summed, requantized to 5 levels
//!    clipped at +-2, repeated until the sum fits a block (a lone leftover
//!    already on the tree's encoding is carried up without a lookup).
//! 5. Update: one lookup maps the gradient sum to `round(-lr g / (B delta))`
//!    clipped to +-6 steps, offset by 6; add it to `lo` (<= 15); two lookups
//!    give the carry and the new `lo`; add the carry to `hi`; two lookups give
//!    the clamped `hi` and the next forward weight.
//!
//! For B = 8, d = 30: 248 forward products + 224 margin accumulator + 8
//! sigmoid + 248 backward products + 155 gradient-tree + 31 update + 62
//! carry/low + 62 clamp/forward = **1038 PBS per batch**, every one on a 4-bit
//! block (counted by running the circuit: `circuit::tests`).
//!
//! # The PBS price of each choice
//!
//! * 3-level features with a fitted centre instead of 4-level median-centred
//!   ones, and 5-level forward weights instead of ternary: 0 PBS (still one
//!   lookup per product; the pair `(f, x)` fills 15 of the 16 inputs).
//! * The column-by-column margin accumulator instead of a tree of
//!   5-level partial sums (which rounded groups of three products onto a
//!   grid of 1.0 and clipped every partial sum at +-2): `c - 2` lookups per
//!   row instead of about `c / 2`, +96 PBS per 8 x 30 batch (942 before).
//!   It is also a chain of `c - 2` dependent lookups per row (the rows run
//!   side by side), where the tree had 4 levels.
//! * Skipping identity lookups in the gradient tree: -39 PBS per 8 x 30
//!   batch in the old circuit (both trees), identical weights.
//! * The owner's learning-rate rule: 0 PBS (it only changes the entries of
//!   the update table); the owner computes one eigenvalue in the clear.
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
//! * Finer gradient tree (`tree_max` 6 instead of 4): tree values summed
//!   one by one instead of in pairs, so more tree levels and lookups per
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
