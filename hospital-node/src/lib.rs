//! The hospital node process as a library: its configuration schema
//! ([`config::FileConfig`], which launchers such as `scenarios` build
//! configs from) and the driver ([`run`]). The `hospital-node` binary is a
//! thin command line over these.
//!
//! What this crate does not own: the protocol's rules (`protocol`), the
//! transport, PKI and driver loop (`node`), data loading and the model maths
//! (`learning`).

pub mod config;
pub mod run;
