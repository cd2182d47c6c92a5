//! The coordinator process as a library: its configuration schema
//! ([`config::FileConfig`], which launchers such as `scenarios` build
//! configs from), key and file handling ([`files`]) and the driver
//! ([`run`]). The `coordinator` binary is a thin command line over these.
//!
//! What this crate does not own: the protocol's rules (`protocol`), the
//! transport, PKI and driver loop (`node`).

pub mod config;
pub mod files;
pub mod run;
