//! Cleartext learning maths and data for the federation.
//!
//! This crate owns:
//! - [`Dataset`]: a data set read from a CSV with a header row and a
//!   named target column, with errors that name the row and column of bad input;
//! - the linear-regression maths ([`predict`], [`gradient`], [`mse`],
//!   [`train_local`], [`least_squares`]);
//! - [`sklearn_scale`], the feature scaling of scikit-learn's `load_diabetes()`;
//! - the consortium schema and the preprocessing derived from pooled
//!   statistics ([`schema`]), the model kinds ([`ModelKind`]: linear, ridge,
//!   logistic), the federated evaluation sums and metrics ([`Metrics`]) and the
//!   trained model as a file ([`Model`], [`ModelFile`]);
//! - the federation's update rule ([`Mode`], [`apply_aggregate`]) and
//!   [`ReferenceRun`], the one in-process cleartext twin of the federated
//!   protocol that the encrypted runs are held to (the in-memory protocol
//!   tests, the multi-process coordinator tests and the scenarios), able to
//!   follow the participants each round really had.
//!
//! It does no cryptography and no networking; the `protocol`, `coordinator` and
//! `hospital-node` crates build on it.

mod artifact;
mod data;
mod error;
mod federated;
mod metrics;
mod model;
mod scale;
pub mod schema;

pub use artifact::{Model, ModelFile, TrainingInfo, MODEL_FORMAT, MODEL_VERSION};
pub use data::{Dataset, Schema};
pub use error::{Error, Result};
pub use federated::{
    apply_aggregate, converging_eta, eta_from_summed, participant_indices, train_local_for, Mode,
    Objective, PooledDivisor, PooledResult, ReferenceResult, ReferenceRun,
};
pub use metrics::{evaluation_len, histogram_auc, local_evaluation, roc_auc, Metrics};
pub use model::{gradient, least_squares, mse, predict, sigmoid, softplus, train_local, ModelKind};
pub use scale::sklearn_scale;
pub use schema::{ConsortiumSchema, Preprocessor, RawTable, Scaler, Target};

/// Re-export of the array crate the API is expressed in, so dependants use the same version.
pub use ndarray;
