//! What the tests that start real federations share: the `scenarios`
//! binary, and the node binaries it starts, found next to it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const SCENARIOS: &str = env!("CARGO_BIN_EXE_scenarios");

/// Asserts that `coordinator` and `hospital-node` are next to `scenarios`,
/// where `cargo test --workspace` builds them before any test runs; the tests
/// never build them (nor let `scenarios` do it) themselves.
pub fn require_node_binaries() {
    let dir = Path::new(SCENARIOS).parent().expect("binary dir");
    for stem in ["coordinator", "hospital-node"] {
        let bin: PathBuf = dir.join(format!("{stem}{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "{} is missing: these tests start the node binaries; build them with \
             `cargo test --workspace` or `cargo build -p coordinator -p hospital-node` \
             (same profile as the tests)",
            bin.display()
        );
    }
}
