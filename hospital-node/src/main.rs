//! `hospital-node`: one hospital of the federation.
//!
//! `hospital-node run --config hospital.json [overrides]` loads the hospital's
//! CSV, trains its local-only model and takes part in the coordinator's
//! encrypted ring rounds over QUIC with mutual TLS. Progress goes to stdout as
//! JSON lines, logs to stderr (`RUST_LOG` filters them).
//! `hospital-node predict --model model.json --data rows.csv` scores rows with
//! the model a run wrote.
//! `hospital-node pki request --name NAME --out DIR` generates the hospital's
//! key (it never leaves DIR) and a certificate request for the consortium CA.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hospital_node::{config, predict, run};

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
    /// Score a CSV with a model file a run wrote: predictions (regression) or
    /// probabilities and 0/1 labels (logistic), one line per row; with the target
    /// column present, the metrics too.
    Predict {
        /// The model file (`model_path` of the run's config) [required]
        #[arg(long, value_name = "FILE")]
        model: PathBuf,
        /// Rows to score, with the schema's columns (any order; the target optional)
        /// [required]
        #[arg(long, value_name = "CSV")]
        data: PathBuf,
        /// Write the predictions here (mode 0600, never overwriting) and print a JSON
        /// summary to stdout [default: predictions to stdout, the summary to stderr]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Consortium PKI: this hospital's key and certificate request.
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
        Cmd::Predict { model, data, out } => {
            let p = predict::predict(&model, &data)?;
            let summary = predict::summary(&p, out.as_deref());
            match &out {
                Some(path) => {
                    let mut buf = Vec::new();
                    predict::write_csv(&p, &mut buf).context("formatting the predictions")?;
                    node::files::create_secret(path, &buf)
                        .with_context(|| format!("writing predictions {}", path.display()))?;
                    println!("{summary}");
                }
                None => {
                    predict::write_csv(&p, &mut std::io::stdout().lock())
                        .context("writing the predictions to stdout")?;
                    eprintln!("{summary}");
                }
            }
            Ok(())
        }
        Cmd::Pki {
            cmd: PkiCmd::Request(req),
        } => {
            println!("{}", req.run().with_context(|| req.describe())?);
            Ok(())
        }
    }
}
