//! What the coordinator's process tests share: the node binaries, free
//! ports, and children killed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::OnceLock;

pub const COORD: &str = env!("CARGO_BIN_EXE_coordinator");

/// The `hospital-node` binary next to `coordinator`: a test of one package
/// cannot name another package's binary, but `cargo test --workspace` (or
/// `cargo test -p coordinator -p hospital-node`) builds both into one folder.
pub fn hospital_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(COORD).parent().expect("binary dir");
        let bin = dir.join(format!("hospital-node{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "{} is missing: these tests start the hospital-node binary; build it with \
             `cargo test --workspace` or `cargo build -p hospital-node` (same profile)",
            bin.display()
        );
        bin
    })
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills every child on drop, so a failing test leaves no process behind.
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
