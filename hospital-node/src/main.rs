//! `hospital-node`: one hospital of the federation.
//!
//! `hospital-node run --config hospital.json [overrides]` loads the hospital's
//! CSV, trains its local-only model and takes part in the coordinator's
//! encrypted ring rounds over QUIC with mutual TLS. Progress goes to stdout as
//! JSON lines, logs to stderr (`RUST_LOG` filters them).
//! `hospital-node pki request --name NAME --out DIR` generates the hospital's
//! key (it never leaves DIR) and a certificate request for the consortium CA.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hospital_node::{config, run};

#[derive(Parser, Debug)]
#[command(version, about = "Federation hospital node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
// Parsed once at start; the size of the `run` variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Take part in a training run.
    Run {
        /// The configuration file (JSON, fields in docs/federation.md);
        /// relative paths in it resolve against its folder [default: none; then --name
        /// and --train are needed]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: config::Overrides,
    },
    /// Consortium PKI: this hospital's key and certificate request.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
}

#[derive(Subcommand, Debug)]
enum PkiCmd {
    /// Generate this hospital's private key (0600) and a certificate signing request for
    /// the consortium CA (`consortium-ca sign`); the key never leaves DIR.
    Request {
        /// The hospital's name (its certificate's DNS name, the roster's name) [required]
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Directory for <name>.key and <name>.csr; existing files are never overwritten
        /// (a renewal is a new request into a new directory) [required]
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    node::logging::init();
    node::process::exit_code("hospital-node", real_main(cli))
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run { config, overrides } => {
            let cfg = config::Config::load(config.as_deref(), &overrides)?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(run::run(cfg))
        }
        Cmd::Pki {
            cmd: PkiCmd::Request { name, out },
        } => {
            let req = node::pki::request(&out, &name).with_context(|| {
                format!("requesting a certificate for {name} in {}", out.display())
            })?;
            println!("{}", req.next_steps(&name));
            Ok(())
        }
    }
}
