//! Cleartext learning maths and data for the federation.
//!
//! This crate owns:
//! - [`Dataset`]: a regression data set read from a CSV with a header row and a
//!   named target column, with errors that name the row and column of bad input;
//! - the linear-regression maths ([`predict`], [`gradient`], [`mse`],
//!   [`train_local`], [`least_squares`]);
//! - [`sklearn_scale`], the feature scaling of scikit-learn's `load_diabetes()`;
//! - the federation's update rule ([`Mode`], [`apply_aggregate`]) and
//!   [`ReferenceRun`], the one in-process cleartext twin of the federated
//!   protocol that the encrypted runs are held to (the in-memory protocol
//!   tests, the multi-process coordinator tests and the scenarios), able to
//!   follow the participants each round really had.
//!
//! It does no cryptography and no networking; the `protocol`, `coordinator` and
//! `hospital-node` crates build on it.

mod data;
mod error;
mod federated;
mod model;
mod scale;

pub use data::{Dataset, Schema};
pub use error::{Error, Result};
pub use federated::{
    apply_aggregate, participant_indices, train_local_for, Mode, PooledDivisor, PooledResult,
    ReferenceResult, ReferenceRun,
};
pub use model::{gradient, least_squares, mse, predict, train_local};
pub use scale::sklearn_scale;

/// Re-export of the array crate the API is expressed in, so dependants use the same version.
pub use ndarray;
