//! Helpers of the transport's unit tests: provisioned identities, options.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use protocol::{Limits, PeerLimits};

use super::TransportOptions;
use crate::pki::{provision, NodeIdentity, PkiPaths};

pub(super) fn ids(dir: &Path, names: &[&str]) -> Vec<NodeIdentity> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    provision(dir, &names).unwrap();
    names
        .iter()
        .map(|n| NodeIdentity::load(&PkiPaths::in_dir(dir, n)).unwrap())
        .collect()
}

pub(super) fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub(super) fn opts() -> TransportOptions {
    TransportOptions {
        max_frame: 1024,
        limits: PeerLimits::new(Limits::uniform(1024)),
        idle_timeout: Duration::from_secs(5),
        keep_alive: Duration::from_secs(1),
    }
}

pub(super) fn set(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub(super) fn reload(dir: &Path, name: &str) -> NodeIdentity {
    NodeIdentity::load(&PkiPaths::in_dir(dir, name)).unwrap()
}
