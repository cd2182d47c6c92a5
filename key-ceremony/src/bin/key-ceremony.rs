//! `key-ceremony`: deals a threshold Paillier key to the hospitals of a
//! federation. Run by a dealer who is not the coordinator, ideally on an
//! offline machine; the dealer sees the factorization while dealing and must
//! be trusted at that moment (see the README's threshold key mode).
//!
//! `deal --hospitals a,b,c [--threshold T] [--key-bits B] --out DIR` checks
//! everything it can before dealing (names, threshold, key size, that no
//! file it would write exists), deals, writes DIR/threshold-key.json and one
//! DIR/<hospital>.share.json (0600) per hospital, and forgets the
//! factorization and the shares.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use key_ceremony::{files, Plan};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Threshold Paillier key ceremony: deals one key share per hospital, so that no \
             single party (the coordinator included) can decrypt"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Deal a t-of-n key: DIR/threshold-key.json (public key, threshold, hospitals and
    /// their verification keys: for every node) and DIR/<hospital>.share.json (0600: for
    /// that hospital only; delete it here once delivered).
    Deal {
        /// The hospitals, comma separated, in party order; their roster (certificate)
        /// names [required]
        #[arg(long, value_delimiter = ',', value_name = "NAMES", required = true)]
        hospitals: Vec<String>,
        /// Partial decryptions needed to decrypt: at least 2, at most n - 1 [default: the
        /// majority, n / 2 + 1]
        #[arg(long, value_name = "T")]
        threshold: Option<u32>,
        /// Bits of the modulus (even, 2048 to 8192); dealing draws safe primes and takes
        /// seconds to minutes
        #[arg(long, default_value_t = paillier::DEFAULT_KEY_BITS, value_name = "BITS")]
        key_bits: usize,
        /// Output directory, created 0700; existing key files are never overwritten
        /// [required]
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Deal {
            hospitals,
            threshold,
            key_bits,
            out,
        } => deal(hospitals, threshold, key_bits, out),
    }
}

fn deal(
    hospitals: Vec<String>,
    threshold: Option<u32>,
    key_bits: usize,
    out: PathBuf,
) -> Result<()> {
    // Everything that can be refused is refused before minutes of dealing.
    let plan = Plan::new(hospitals, threshold, key_bits).context("the ceremony's plan")?;
    // Refused before minutes of dealing when a file exists.
    files::check_free(&out, &plan)?;
    eprintln!(
        "dealing a {}-of-{} key of {} bits (safe primes: this takes a while)",
        plan.threshold(),
        plan.hospitals().len(),
        plan.key_bits()
    );
    let dealt = files::deal_into(&out, &plan, &mut rand::rngs::OsRng)?;
    println!(
        "dealt in {:.1} s: a {}-of-{} threshold key, fingerprint {}",
        dealt.dealing.as_secs_f64(),
        plan.threshold(),
        plan.hospitals().len(),
        dealt.key.public_key().fingerprint()
    );
    println!(
        "public key, threshold and verification keys (every node): {}",
        dealt.public.display()
    );
    for (h, p) in plan.hospitals().iter().zip(&dealt.shares) {
        println!("share for {h} only (0600): {}", p.display());
    }
    println!(
        "Deliver each share file to its hospital alone, then delete it here: any {} of them \
         decrypt everything encrypted under this key.",
        plan.threshold()
    );
    Ok(())
}
