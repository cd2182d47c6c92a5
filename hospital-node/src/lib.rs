//! The hospital node process as a library: its configuration schema
//! ([`config::FileConfig`], which launchers such as `scenarios` build
//! configs from), the driver ([`run`]) and scoring with the model a run
//! wrote ([`predict`]). The `hospital-node` binary is a
//! thin command line over these.
//!
//! What this crate does not own: the protocol's rules (`protocol`), the
//! transport, PKI and driver loop (`node`), data loading and the model maths
//! (`learning`).

pub mod config;
pub mod predict;
pub mod run;
