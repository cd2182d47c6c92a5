//! Cleartext learning maths and data for the federation.
//!
//! This crate owns:
//! - [`Dataset`]: a regression data set read from a CSV with a header row and a
//!   named target column, with errors that name the row and column of bad input;
//! - the linear-regression maths ([`predict`], [`gradient`], [`mse`],
//!   [`train_local`], [`least_squares`]);
//! - the federation's update rule ([`Mode`], [`apply_aggregate`]) and
//!   [`ReferenceRun`], the in-process cleartext twin of the federated protocol
//!   that the encrypted multi-process runs are held to.
//!
//! It does no cryptography and no networking; the `protocol`, `coordinator` and
//! `hospital-node` crates build on it.

mod data;
mod error;
mod federated;
mod model;

pub use data::{Dataset, Schema};
pub use error::{Error, Result};
pub use federated::{apply_aggregate, train_local_for, Mode, ReferenceResult, ReferenceRun};
pub use model::{gradient, least_squares, mse, predict, train_local};

/// Re-export of the array crate the API is expressed in, so dependants use the same version.
pub use ndarray;
