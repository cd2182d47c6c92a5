//! `scenarios`: the binary a new user runs first.
//!
//! - `scenarios diabetes`: python-paillier's federated diabetes example run as
//!   a real federation (coordinator plus one `hospital-node` process per
//!   hospital, encrypted), checked against its in-process cleartext twin, with
//!   a table, `results.json` and a PNG plot.
//! - `scenarios bench`: the same protocol in python-paillier (one process)
//!   against this project's multi-process run, and the scaling table.

mod bench;
mod federation;
mod numpy_rng;
mod prep;
mod report;
mod scenario;
mod wire_format;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "scenarios",
    version,
    about = "End-to-end scenarios of the private-training federation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Local-only against federated training on the diabetes data (or --data CSV).
    Diabetes(scenario::DiabetesArgs),
    /// python-paillier (one process) against this project's federation, and the scaling table.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Diabetes(args) => scenario::run_diabetes(&args),
        Command::Bench(args) => bench::run_bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
