//! Finding the node binaries `coordinator` and `hospital-node`: they are
//! looked up next to the running `scenarios` executable (cargo puts every
//! workspace binary of one profile in one folder, and `cargo test
//! --workspace` builds them all before running any test).
//!
//! When one is missing and `scenarios` was started by cargo (`cargo run -p
//! scenarios`: cargo sets `CARGO`) from a workspace that is still there, it
//! builds the two with cargo for the same profile and target folder and says
//! so, so that a fresh clone needs nothing but `cargo run --release -p
//! scenarios -- diabetes`. Binaries that are there are used as they are:
//! `cargo build --release -p coordinator -p hospital-node` refreshes them.
//! Started any other way, a missing binary is an error naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The two node executables.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `coordinator`.
    pub coordinator: PathBuf,
    /// `hospital-node`.
    pub hospital_node: PathBuf,
}

impl Binaries {
    /// The binaries' paths in `dir` (whether or not they exist).
    pub fn in_dir(dir: &Path) -> Binaries {
        let exe = |stem: &str| dir.join(format!("{stem}{}", std::env::consts::EXE_SUFFIX));
        Binaries {
            coordinator: exe("coordinator"),
            hospital_node: exe("hospital-node"),
        }
    }

    /// The ones that are not there.
    fn missing(&self) -> Vec<&Path> {
        [&self.coordinator, &self.hospital_node]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(PathBuf::as_path)
            .collect()
    }
}

fn list(paths: &[&Path]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Finds `coordinator` and `hospital-node`, building them when missing (see
/// the module docs).
pub fn locate() -> Result<Binaries> {
    let me = std::env::current_exe().context("locating the scenarios executable")?;
    let mut dir = me
        .parent()
        .context("the scenarios executable has no parent directory")?
        .to_path_buf();
    // Test executables live in <target>/<profile>/deps.
    if dir.file_name().is_some_and(|n| n == "deps") {
        if let Some(p) = dir.parent() {
            dir = p.to_path_buf();
        }
    }
    let bins = Binaries::in_dir(&dir);
    let missing = bins.missing();
    if missing.is_empty() {
        return Ok(bins);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let Some(cargo) = std::env::var_os("CARGO").filter(|_| manifest.is_file()) else {
        bail!(
            "{} not found next to scenarios; build them with \
             `cargo build --release -p coordinator -p hospital-node` \
             (or run via `cargo run --release -p scenarios`, which builds them)",
            list(&missing)
        );
    };
    let profile_dir = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let target_dir = dir
        .parent()
        .context("cannot tell the target directory of the scenarios executable")?;
    let profile = if profile_dir == "debug" {
        "dev"
    } else {
        profile_dir.as_str()
    };
    eprintln!(
        "{} not built yet: building coordinator and hospital-node (cargo, profile {profile}) ...",
        list(&missing)
    );
    let status = Command::new(&cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args([
            "--profile",
            profile,
            "-p",
            "coordinator",
            "-p",
            "hospital-node",
        ])
        .status()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("building coordinator and hospital-node failed ({status})");
    }
    let missing = bins.missing();
    if !missing.is_empty() {
        bail!(
            "cargo built coordinator and hospital-node but {} is not there",
            list(&missing)
        );
    }
    Ok(bins)
}
