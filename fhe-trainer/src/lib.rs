//! Logistic-regression training on TFHE-encrypted data.
//!
//! A data owner encrypts a labelled data set with TFHE (tfhe-rs 1.8
//! `shortint`); a server trains a logistic-regression model by mini-batch SGD
//! on the ciphertexts alone and returns encrypted weights that only the owner
//! can decrypt. The weights stay encrypted across batches, so the server runs
//! any number of batches without the owner.
//!
//! This crate owns the circuit, its three evaluators, the owner's encodings,
//! the client/server file exchange and the `fhe-trainer` CLI. It does no
//! networking: files move however the deployment likes.
//!
//! # One circuit, three evaluators
//!
//! [`circuit::train_batch`] and [`circuit::infer`] are generic over
//! [`circuit::Backend`]. [`circuit::ClearBackend`] runs them on plain `u8`
//! blocks (`Fhe::Simulate`), [`exec::TfheBackend`] on shortint ciphertexts
//! (`Fhe::Execute`); both evaluate the same table lookups on the same inputs,
//! so they agree bit for bit (tests/execute.rs checks it batch by batch).
//! `Fhe::Disable` is the float32 reference ([`float`]) on the same
//! preprocessing, batches and learning rate. [`model::SgdClassifier`] puts
//! the three behind one sklearn-like API (`fit`, `partial_fit`, `predict`,
//! `predict_proba`, with encrypted inference in `Execute`).
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
//! Simulate is valid under encryption.
//!
//! * **Features**: min-max scaled to [-1, 1] (scaler fitted on training data,
//!   stored with the model), then preconditioned per feature by the owner:
//!   centred on the training median and divided by the mean deviation of the
//!   upper half ([`encode::Quantizer`]). Each feature is then 2 bits: sign and
//!   "outer or inner half", with levels `[-1, -r, r, 1]`. Centring is an
//!   affine change of variables the bias absorbs; the exported model is an
//!   ordinary logistic regression on the [-1, 1] features. The ratios `r` are
//!   public, like the input quantizers of a compiled Concrete ML circuit.
//! * **Labels never travel alone**: the owner encrypts `x * (1 - 2y)` (index
//!   `3 - k` when `y = 1`) and the bias column as `1 - 2y`. Then the margin
//!   `m = (1 - 2y) z` is the forward sum itself and the logistic gradient is
//!   `sum_i x'_i sigmoid(m_i)`: no subtraction of `y`, no extra lookup.
//! * **Master weights**: `W = 4 hi + lo`, a high digit `hi <= 11` and a 2-bit
//!   low digit (48 levels over `parameters_range`, "6 bits"). The forward pass
//!   reads a ternary weight `{-s, 0, s}` derived from `hi` (one lookup per
//!   weight per batch); the update acts on the full `W`.
//!
//! # The circuit for one batch (B rows, d features, c = d + 1 columns)
//!
//! 1. Forward products `x'_ij * f_j`: pack `4 x + f` (linear), one lookup each,
//!    output on 5 levels: `B c` PBS.
//! 2. Margin reduction per row: sum 3 products (<= 12), requantize to 5 levels
//!    clipped at +-2, repeat until the sum fits a block; then one lookup gives
//!    the 4-level sigmoid `a_i` of `{0, 1/3, 2/3, 1}`.
//! 3. Backward products `x'_ij * a_i`: pack `4 x + a`, one lookup each, output
//!    on 7 levels: `B c` PBS.
//! 4. Gradient reduction per column, the same way (pairs, then 5 levels).
//! 5. Update: one lookup maps the gradient sum to `round(-lr g / (B delta))`
//!    clipped to +-6 steps, offset by 6; add it to `lo` (<= 15); two lookups
//!    give the carry and the new `lo`; add the carry to `hi`; two lookups give
//!    the clamped `hi` and the next forward weight.
//!
//! For B = 8, d = 30: 248 forward products + 136 margin-tree + 8 sigmoid +
//! 248 backward products + 186 gradient-tree + 31 update + 62 carry/low +
//! 62 clamp/forward = **981 PBS per batch**, every one on a 4-bit block
//! (counted by running the circuit: `circuit::tests`). Concrete ML's graph
//! needs about 1040 PBS on 7-8-bit blocks for the same batch.
//!
//! # Why this design (measured)
//!
//! The measurements put a 4-bit PBS at 12-14 ms amortized on the two
//! cores here, a 6-bit one at 87-102 ms and an 8-bit one at 1.5-2.9 s, so the
//! width of every lookup dominates the cost. All products here are one 4-bit
//! bivariate lookup (2-bit x 2-bit); the square tricks need wider outputs.
//! Precision was then bought where it is cheap, by the owner: with uniform
//! 2-bit features and ternary forward weights one epoch of Simulate reached
//! 81.7% (8 splits); median centring with per-feature 2-bit levels, the
//! label-flip gradient, then a tuning of step, clips and learning rate over
//! 32 splits gives **95.6% mean test accuracy after one epoch against 96.0%
//! for float32 SGD on the same preprocessing and batches** (Concrete ML:
//! 90.6% after one epoch, scikit-learn's float SGD 94.7%). Per-batch
//! accuracy is printed and plotted by `fhe-trainer run`.
//!
//! On the default split (`fhe-trainer run --mode simulate`, seed 42) one
//! epoch is 49 batches; test accuracy after batches 1, 5, 10, 20, 30, 40, 49
//! is 83.6, 92.4, 94.7, 95.9, 96.5, 96.5, 95.9% against 86.5, 94.7, 95.9,
//! 96.5, 97.1, 97.7, 97.1% for float32; the integer inference circuit itself
//! (four output levels) classifies 95.3% correctly. Plain float SGD on the
//! min-max features without the preconditioning reaches 92.8% after one
//! epoch (learning rate 0.3, 32 splits) and 96.8% when converged.
//!
//! # Speed (`fhe-trainer bench`, this 2-core machine, shared)
//!
//! | | |
//! |---|---|
//! | parameters | `PARAM_MESSAGE_2_CARRY_2_KS_PBS` (TUniform, 2^-128) |
//! | PBS per batch of 8 x 30 | 981, all 4-bit |
//! | seconds per batch, Execute | 25.8 (load average 6.6 from other builds); 981 x 14.4 ms = 14 s expected on idle cores |
//! | server key | 120.4 MB, 30.1 MB compressed (the file the server gets) |
//! | key generation | 2.8 s (server key) |
//! | Concrete ML 1.9, same task | 62 s per batch (measured in the issue; not installed here) |
//!
//! Execute and Simulate give the same weights batch for batch on the full
//! data too: `fhe-trainer run --mode execute --batches 3` printed the same
//! test accuracies (83.6, 89.5, 89.5%) as Simulate.
//!
//! # Files
//!
//! [`io`] frames every file with a magic, a version, a kind and a length,
//! and reads it under a per-kind size limit; ciphertexts use tfhe's
//! `safe_serialize`, the compressed server key and seeded ciphertexts (no
//! `Named` impl in tfhe 1.8) bincode under that header. [`keys::Client`]
//! encrypts batches as seeded ciphertexts and decrypts weights;
//! [`keys::Server`] only ever holds the compressed server key.

pub mod circuit;
pub mod data;
pub mod encode;
pub mod error;
pub mod exec;
pub mod float;
pub mod io;
pub mod keys;
pub mod model;
pub mod plot;

pub use error::{Error, Result};
pub use model::{Fhe, SgdClassifier, TrainerConfig, TrainerConfigBuilder};
