//! What the node's integration tests share: a consortium provisioned on disk
//! (a coordinator and three hospitals) and its names.

use std::path::Path;

use node::pki::{self, NodeIdentity, PkiPaths};

pub const A: &str = "hospital-1";
pub const B: &str = "hospital-2";
pub const C: &str = "hospital-3";
pub const ROSTER: [&str; 3] = [A, B, C];

/// The roster as owned names.
pub fn roster() -> Vec<String> {
    ROSTER.iter().map(|s| s.to_string()).collect()
}

/// A provisioned consortium (coordinator and three hospitals) on disk.
pub struct Consortium {
    dir: tempfile::TempDir,
}

impl Consortium {
    pub fn new() -> Consortium {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = ["coordinator", A, B, C]
            .iter()
            .map(|s| s.to_string())
            .collect();
        pki::provision(dir.path(), &names).unwrap();
        Consortium { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn identity(&self, name: &str) -> NodeIdentity {
        NodeIdentity::load(&PkiPaths::in_dir(self.path(), name)).unwrap()
    }
}
