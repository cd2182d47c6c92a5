//! `coordinator`: the federation's coordinator process.
//!
//! `coordinator run --config coordinator.json [--resume] [overrides]` drives a
//! training run; `coordinator pki request --name coordinator --out DIR`
//! generates the coordinator's key and certificate request (for the consortium
//! CA, `consortium-ca sign`); `coordinator pki init --out DIR --nodes a,b,c`
//! provisions a whole consortium on one machine, for local trials only. Progress goes to stdout as JSON
//! lines, logs to stderr (`RUST_LOG` filters them). The formats are documented
//! in the README's federation section.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use coordinator::{config, run};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Federation coordinator (encrypted ring aggregation over QUIC + mTLS)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
// Parsed once at start; the size of the `run` variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Run (or resume) a training run.
    Run {
        /// The configuration file (JSON, fields in docs/federation.md);
        /// relative paths in it resolve against its folder [default: every field's
        /// default, which lacks a roster and so is refused]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Continue the run saved in the checkpoint (same config and Paillier key) instead
        /// of starting over; without it an existing checkpoint is refused [default: off]
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        overrides: config::Overrides,
    },
    /// Consortium PKI management.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
}

#[derive(Subcommand, Debug)]
enum PkiCmd {
    /// Generate this node's private key (0600) and a certificate signing request for the
    /// consortium CA (`consortium-ca sign`); the key never leaves DIR.
    Request(node::pki::RequestArgs),
    /// LOCAL TRIALS ONLY: a whole consortium on this machine. Runs the distributed steps
    /// for every node (its own key and request, signed by a new CA in DIR/consortium-ca)
    /// and so leaves the CA key and every node's key in one place. For a real
    /// consortium, use `pki request` on each node and `consortium-ca` on the CA's machine.
    Init {
        /// Output directory, created; existing files are never overwritten, so the CA's
        /// key is never replaced by accident [required]
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Hospital names, comma separated; they become the certificates' DNS names and
        /// must be the roster's names [required]
        #[arg(long, value_delimiter = ',', required = true, value_name = "NAMES")]
        nodes: Vec<String>,
        /// The coordinator's name (its certificate's DNS name, the hospitals'
        /// `coordinator_name`)
        #[arg(long, default_value = node::pki::DEFAULT_COORDINATOR_NAME, value_name = "NAME")]
        coordinator_name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    node::logging::init();
    node::process::exit_code("coordinator", real_main(cli))
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run {
            config,
            resume,
            overrides,
        } => {
            let cfg = config::Config::load(config.as_deref(), &overrides)?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(run::run(cfg, resume, &overrides))
        }
        Cmd::Pki {
            cmd: PkiCmd::Request(req),
        } => pki_request(&req),
        Cmd::Pki {
            cmd:
                PkiCmd::Init {
                    out,
                    nodes,
                    coordinator_name,
                },
        } => {
            let mut all = vec![coordinator_name];
            all.extend(nodes.into_iter().map(|n| n.trim().to_owned()));
            let written = node::pki::provision(&out, &all)
                .with_context(|| format!("provisioning PKI in {}", out.display()))?;
            for (name, paths) in written {
                println!(
                    "{name}: cert {} key {}",
                    paths.cert.display(),
                    paths.key.display()
                );
            }
            println!("ca: {}", out.join(node::pki::CA_FILE).display());
            println!("crl: {}", out.join(node::pki::CRL_FILE).display());
            println!(
                "ca key: {} (local trials only: a real consortium keeps it on the CA's machine)",
                out.join(node::pki::LOCAL_CA_DIR)
                    .join(node::pki::ca::KEY_FILE)
                    .display()
            );
            Ok(())
        }
    }
}

fn pki_request(req: &node::pki::RequestArgs) -> Result<()> {
    println!("{}", req.run().with_context(|| req.describe())?);
    Ok(())
}
