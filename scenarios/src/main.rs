//! `scenarios`: the binary a new user runs first.
//!
//! - `scenarios diabetes`: python-paillier's federated diabetes example run as
//!   a real federation (coordinator plus one `hospital-node` process per
//!   hospital, encrypted), checked against its in-process cleartext twin, with
//!   a table, `results.json` and a PNG plot.
//! - `scenarios breast-cancer`: the same for binary logistic regression on
//!   the Wisconsin breast cancer data, split by tumour size so that every
//!   hospital sees another case mix; the federation scales the raw rows from
//!   its secure statistics.
//! - `scenarios bench`: the same protocol in python-paillier (one process)
//!   against this project's multi-process run, and the scaling table.

// Layers, lowest first; a module uses only those of lower layers: data
// (`numpy_rng`, `prep`) and settings (`plan`); the node binaries' interface
// (`binaries`, `nodes`); running them (`federation`); checking and
// reporting (`verify`, `outcome`, `table`, `plot`); the subcommands
// (`scenario`, `bench`).
mod bench;
mod binaries;
mod classify;
mod federation;
mod nodes;
mod numpy_rng;
mod outcome;
mod plan;
mod plot;
mod prep;
mod scenario;
mod table;
mod verify;

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
    /// Local-only against federated logistic regression on breast cancer diagnoses, the
    /// hospitals holding different case mixes (or --data CSV with a 0/1 target).
    BreastCancer(scenario::DiabetesArgs),
    /// python-paillier (one process) against this project's federation, and the scaling table.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = federation::stop_nodes_on_signals() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Diabetes(args) => scenario::run_diabetes(&args),
        Command::BreastCancer(args) => scenario::run_breast_cancer(&args),
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
