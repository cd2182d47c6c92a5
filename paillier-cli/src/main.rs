//! `paillier`: python-paillier's `pheutil` command line on this crate, plus
//! `bench`.
//!
//! The subcommands, arguments and files are pheutil's (python-paillier 1.5),
//! so a pheutil script can switch to this binary: JWK-style keys,
//! `{"v": "<decimal>", "e": <exponent>}` ciphertexts (with an extra
//! `key_fingerprint` member that pheutil ignores), `-` for stdin/stdout
//! wherever pheutil takes it, decrypted numbers printed as Python prints them.
//! Differences: `genpkey` defaults to 3072 bits (pheutil: 2048) and refuses
//! keys below 2048 bits; negative plaintexts need no `--`; `--id` sets the
//! keys' `kid` (pheutil ignores it). The file formats live in `paillier_cli::phe`;
//! this binary only reads, writes and reports.

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use paillier::{EncryptedNumber, DEFAULT_KEY_BITS, MAX_KEY_BITS, MIN_KEY_BITS};
use paillier_cli::phe::{self, PhePrivateKey, PhePublicKey};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Each command encrypts or obfuscates at most once, so building the key's DJN
/// fixed-base table (tens of milliseconds) would cost more than it saves.
const RANDOMNESS: phe::Randomness = phe::Randomness::Textbook;

/// python-paillier's timing script, run by `bench --vs-phe`.
const PHE_BENCH_SCRIPT: &str = include_str!("../tests/python/phe_bench.py");

#[derive(Debug, Parser)]
#[command(
    name = "paillier",
    version,
    about = "Paillier encryption from the command line, compatible with python-paillier's pheutil",
    long_about = "Paillier encryption from the command line. The subcommands, arguments and \
                  files are those of python-paillier 1.5's `pheutil`, so scripts written for it \
                  work with `paillier` too. Use '-' for stdin or stdout where pheutil does."
)]
struct Cli {
    /// Log each step to stderr, as pheutil does.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a Paillier private key and write it as a JWK to OUTPUT ('-' for
    /// stdout). `extract` gets the public key out of it.
    Genpkey {
        /// The key size in bits (n's length): 2048 to 8192, even.
        #[arg(long, default_value_t = DEFAULT_KEY_BITS)]
        keysize: usize,
        /// An identifying comment, stored as the keys' "kid" (default: the
        /// generation time).
        #[arg(long)]
        id: Option<String>,
        /// Where to write the private key ('-' for stdout). Created readable by
        /// its owner only.
        output: PathBuf,
    },
    /// Extract the public key from the private key INPUT into OUTPUT ('-' for
    /// stdin / stdout).
    Extract {
        /// The private key file.
        input: PathBuf,
        /// Where to write the public key.
        output: PathBuf,
    },
    /// Encrypt PLAINTEXT (read as a floating-point number) with the PUBLIC key;
    /// the ciphertext has exponent -32 (lower when the number needs it).
    Encrypt {
        /// The public key file ('-' for stdin).
        public: PathBuf,
        /// The number to encrypt.
        #[arg(allow_hyphen_values = true)]
        plaintext: String,
        /// Save to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Decrypt CIPHERTEXT with the PRIVATE key and print the number.
    Decrypt {
        /// The private key file ('-' for stdin).
        private: PathBuf,
        /// The ciphertext file ('-' for stdin).
        ciphertext: PathBuf,
        /// Save to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Add two encrypted numbers together.
    Addenc {
        /// The public key file.
        public: PathBuf,
        /// The first ciphertext file.
        encrypted_a: PathBuf,
        /// The second ciphertext file.
        encrypted_b: PathBuf,
        /// Save to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Add an unencrypted number to an encrypted one.
    Add {
        /// The public key file.
        public: PathBuf,
        /// The ciphertext file.
        encrypted: PathBuf,
        /// The number to add (read as a floating-point number).
        #[arg(allow_hyphen_values = true)]
        plaintext: String,
        /// Save to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Multiply an encrypted number by an unencrypted one.
    Multiply {
        /// The public key file.
        public: PathBuf,
        /// The ciphertext file.
        encrypted: PathBuf,
        /// The number to multiply by (read as a floating-point number).
        #[arg(allow_hyphen_values = true)]
        plaintext: String,
        /// Save to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Time the main operations (median milliseconds), optionally beside
    /// python-paillier measured in the same run.
    Bench {
        /// Key sizes in bits, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "2048,3072")]
        bits: Vec<usize>,
        /// Also time python-paillier (phe 1.5) and print the ratios.
        #[arg(long)]
        vs_phe: bool,
        /// Runs per operation (key generation: at most 10).
        #[arg(long, default_value_t = 30)]
        iterations: usize,
        /// The Python with phe installed (default: $PHE_PYTHON, else the
        /// nearest .venv/bin/python above the current directory, this binary
        /// or the checkout it was built from).
        #[arg(long)]
        python: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut io = Io::new(cli.verbose);
    match cli.command {
        Command::Genpkey {
            keysize,
            id,
            output,
        } => genpkey(&mut io, keysize, id, &output),
        Command::Extract { input, output } => {
            io.log("Loading paillier keypair");
            let private = io.private_key(&input)?;
            io.write(Some(&output), &private.public().to_json(), false)?;
            io.log(&format!("Public key written to {}", output.display()));
            Ok(())
        }
        Command::Encrypt {
            public,
            plaintext,
            output,
        } => {
            let x = parse_plaintext(&plaintext)?;
            io.log("Loading public key");
            let pk = io.public_key(&public)?;
            io.log(&format!("Encrypting: {x:+.16}"));
            let c = phe::pheutil_encrypt(pk.key(), x, RANDOMNESS)
                .with_context(|| format!("encrypting {plaintext}"))?;
            io.write(output.as_deref(), &phe::ciphertext_to_json(&c), false)
        }
        Command::Decrypt {
            private,
            ciphertext,
            output,
        } => {
            io.log("Loading private key");
            let sk = io.private_key(&private)?;
            let c = io.ciphertext(sk.public(), &ciphertext)?;
            io.log("Decrypting ciphertext");
            let value = phe::decrypt(sk.key(), &c)
                .with_context(|| format!("decrypting {}", ciphertext.display()))?;
            io.write(output.as_deref(), &value.to_string(), false)
        }
        Command::Addenc {
            public,
            encrypted_a,
            encrypted_b,
            output,
        } => {
            io.log("Loading public key");
            let pk = io.public_key(&public)?;
            io.log("Loading first encrypted number");
            let a = io.ciphertext(&pk, &encrypted_a)?;
            io.log("Loading second encrypted number");
            let b = io.ciphertext(&pk, &encrypted_b)?;
            io.log("Adding encrypted numbers together");
            let sum = a.add(&b).context("adding the encrypted numbers")?;
            io.write_ciphertext(output.as_deref(), &sum)
        }
        Command::Add {
            public,
            encrypted,
            plaintext,
            output,
        } => with_plaintext(
            &mut io,
            [&public, &encrypted],
            &plaintext,
            output.as_deref(),
            ("Adding", "adding"),
            EncryptedNumber::add_f64,
        ),
        Command::Multiply {
            public,
            encrypted,
            plaintext,
            output,
        } => with_plaintext(
            &mut io,
            [&public, &encrypted],
            &plaintext,
            output.as_deref(),
            ("Multiplying", "multiplying by"),
            EncryptedNumber::mul_f64,
        ),
        Command::Bench {
            bits,
            vs_phe,
            iterations,
            python,
        } => bench::run(&bits, vs_phe, iterations, python),
    }
}

fn genpkey(io: &mut Io, keysize: usize, id: Option<String>, output: &Path) -> Result<()> {
    ensure!(
        (MIN_KEY_BITS..=MAX_KEY_BITS).contains(&keysize) && keysize.is_multiple_of(2),
        "--keysize {keysize} is not allowed: use an even size from {MIN_KEY_BITS} to \
         {MAX_KEY_BITS} bits ({DEFAULT_KEY_BITS} for 128-bit security)"
    );
    io.log(&format!(
        "Generating a paillier keypair with keysize of {keysize}"
    ));
    let (_, sk) = paillier::generate_keypair(keysize).context("generating the key pair")?;
    io.log("Keys generated");
    let (private_kid, public_kid) = match id {
        Some(id) => (id.clone(), id),
        None => {
            let date = utc_now();
            (
                format!("Paillier private key generated by paillier on {date} UTC"),
                format!("Paillier public key generated by paillier on {date} UTC"),
            )
        }
    };
    let private = PhePrivateKey::new(sk, Some(private_kid), Some(public_kid));
    io.write(Some(output), &private.to_json(), true)?;
    io.log(&format!("Private key written to {}", output.display()));
    Ok(())
}

/// Python's `float(text)` for the numbers a script passes: surrounding spaces
/// allowed, and finite (phe cannot encode infinities or NaN either).
/// `add` and `multiply`, in pheutil's steps: the public key and the
/// encrypted number at `[public, encrypted]`, then `op` with the plaintext
/// (`verb`: what the log says, what an error says), written to `output`.
fn with_plaintext(
    io: &mut Io,
    [public, encrypted]: [&Path; 2],
    plaintext: &str,
    output: Option<&Path>,
    (log, verb): (&str, &str),
    op: fn(&EncryptedNumber, f64) -> paillier::Result<EncryptedNumber>,
) -> Result<()> {
    let x = parse_plaintext(plaintext)?;
    io.log("Loading public key");
    let pk = io.public_key(public)?;
    io.log("Loading encrypted number");
    let c = io.ciphertext(&pk, encrypted)?;
    io.log(log);
    let r = op(&c, x).with_context(|| format!("{verb} {plaintext}"))?;
    io.write_ciphertext(output, &r)
}

fn parse_plaintext(text: &str) -> Result<f64> {
    let x: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("plaintext {text:?} is not a number"))?;
    ensure!(x.is_finite(), "plaintext {text:?} is not a finite number");
    Ok(x)
}

/// Reads documents and writes results, with pheutil's '-' conventions.
struct Io {
    verbose: bool,
    stdin_taken: bool,
}

impl Io {
    fn new(verbose: bool) -> Io {
        Io {
            verbose,
            stdin_taken: false,
        }
    }

    fn log(&self, message: &str) {
        if self.verbose {
            eprintln!("{message}");
        }
    }

    /// A document from `path`, or stdin for '-' (once per command), bounded in
    /// size so a wrong file is rejected cheaply.
    fn read(&mut self, path: &Path) -> Result<String> {
        let limit = phe::MAX_DOCUMENT_BYTES as u64 + 1;
        let mut bytes = Vec::new();
        if path == Path::new("-") {
            ensure!(
                !self.stdin_taken,
                "only one input can be read from stdin ('-')"
            );
            self.stdin_taken = true;
            std::io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut bytes)
                .context("reading stdin")?;
        } else {
            std::fs::File::open(path)
                .and_then(|f| f.take(limit).read_to_end(&mut bytes))
                .with_context(|| format!("reading {}", path.display()))?;
        }
        ensure!(
            bytes.len() <= phe::MAX_DOCUMENT_BYTES,
            "{} is larger than {} bytes: not a key or ciphertext file",
            display(path),
            phe::MAX_DOCUMENT_BYTES
        );
        String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", display(path)))
    }

    fn public_key(&mut self, path: &Path) -> Result<PhePublicKey> {
        let text = self.read(path)?;
        PhePublicKey::from_json(&text)
            .with_context(|| format!("public key {} is not usable", display(path)))
    }

    fn private_key(&mut self, path: &Path) -> Result<PhePrivateKey> {
        let text = self.read(path)?;
        PhePrivateKey::from_json(&text)
            .with_context(|| format!("private key {} is not usable", display(path)))
    }

    fn ciphertext(&mut self, pk: &PhePublicKey, path: &Path) -> Result<EncryptedNumber> {
        let text = self.read(path)?;
        phe::parse_ciphertext(pk.key(), &text).with_context(|| {
            format!(
                "ciphertext {} is not usable with the public key {}",
                display(path),
                pk.key().fingerprint()
            )
        })
    }

    /// pheutil's `serialise_encrypted`, then the write.
    fn write_ciphertext(&self, output: Option<&Path>, c: &EncryptedNumber) -> Result<()> {
        let out = phe::pheutil_output(c, RANDOMNESS).context("lowering the exponent to -32")?;
        self.write(output, &phe::ciphertext_to_json(&out), false)
    }

    /// Writes `text` and a newline to `output`, stdout for `None` or '-'.
    /// `secret` files are created readable by their owner only.
    fn write(&self, output: Option<&Path>, text: &str, secret: bool) -> Result<()> {
        let line = format!("{text}\n");
        match output {
            None => write_stdout(&line),
            Some(p) if p == Path::new("-") => write_stdout(&line),
            Some(path) => {
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                if secret {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                #[cfg(not(unix))]
                let _ = secret;
                let mut file = options
                    .open(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                // An existing file keeps its mode on open: tighten it before
                // the secret goes in.
                #[cfg(unix)]
                if secret {
                    use std::os::unix::fs::PermissionsExt;
                    file.set_permissions(std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("restricting {}", path.display()))?;
                }
                file.write_all(line.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))
            }
        }
    }
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing stdout")
}

fn display(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".into()
    } else {
        path.display().to_string()
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS` (pheutil's kid format).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `paillier bench`: the library's timings (`paillier_cli::bench`), and with
/// `--vs-phe` python-paillier's, taken in the same run by
/// `tests/python/phe_bench.py`.
mod bench {
    use super::*;
    use paillier_cli::bench::BenchRow;
    use std::collections::BTreeMap;
    use std::process::Command;

    /// What python-paillier's script reports.
    #[derive(Debug, serde::Deserialize)]
    struct PheReport {
        phe: String,
        gmpy2: bool,
        ops: BTreeMap<String, f64>,
    }

    /// Our operation (a `paillier_cli::bench` row), how it is labelled, and the
    /// python-paillier operation it is compared with.
    const COMPARED: &[(&str, &str, Option<&str>)] = &[
        ("keygen", "key generation", Some("keygen")),
        (
            "encrypt_f64",
            "encrypt f64 (DJN fixed-base)",
            Some("encrypt"),
        ),
        (
            "encrypt_djn",
            "encrypt raw (DJN fixed-base)",
            Some("encrypt"),
        ),
        (
            "encrypt_textbook",
            "encrypt raw (textbook)",
            Some("encrypt"),
        ),
        (
            "encrypt_crt",
            "encrypt raw (key holder's CRT)",
            Some("encrypt"),
        ),
        (
            "packed_encrypt_64",
            "packed encrypt, per value (64)",
            Some("encrypt"),
        ),
        (
            "decrypt_f64",
            "decrypt f64 (CRT, 2 threads)",
            Some("decrypt"),
        ),
        (
            "decrypt_parallel",
            "decrypt raw (CRT, 2 threads)",
            Some("decrypt"),
        ),
        (
            "decrypt_single_thread",
            "decrypt raw (CRT, 1 thread)",
            Some("decrypt"),
        ),
        ("add", "add ciphertexts", Some("add")),
        ("mul_f64", "multiply by f64", Some("mul_f64")),
        ("add_encrypted_f64", "add f64s of different exponents", None),
        ("mul_plain_small", "multiply raw by 27-bit integer", None),
        ("djn_table_build", "DJN table build (once per key)", None),
    ];

    pub(super) fn run(
        bits: &[usize],
        vs_phe: bool,
        iterations: usize,
        python: Option<PathBuf>,
    ) -> Result<()> {
        ensure!(!bits.is_empty(), "--bits needs at least one key size");
        for &b in bits {
            ensure!(
                (MIN_KEY_BITS..=MAX_KEY_BITS).contains(&b) && b.is_multiple_of(2),
                "--bits {b} is not allowed: use even sizes from {MIN_KEY_BITS} to {MAX_KEY_BITS}"
            );
        }
        ensure!(iterations > 0, "--iterations must be at least 1");
        let python = if vs_phe {
            Some(find_python(python)?)
        } else {
            None
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "paillier bench: median milliseconds per operation over {iterations} runs, \
             {threads} CPU threads"
        );
        let mut header_done = false;
        for &b in bits {
            eprintln!("measuring paillier at {b} bits...");
            let rows = paillier_cli::bench::run(b, iterations)
                .with_context(|| format!("benchmarking at {b} bits"))?;
            let phe = match &python {
                Some(py) => {
                    eprintln!("measuring python-paillier at {b} bits...");
                    Some(run_phe(py, b, iterations)?)
                }
                None => None,
            };
            if !header_done {
                if let Some(report) = &phe {
                    println!(
                        "python-paillier {} ({}) measured in the same run by \
                         tests/python/phe_bench.py; ratio = phe / paillier (higher is faster)",
                        report.phe,
                        if report.gmpy2 {
                            "with gmpy2"
                        } else {
                            "WITHOUT gmpy2"
                        }
                    );
                }
                println!();
                println!(
                    "{:>5}  {:<34} {:>12} {:>10} {:>9}",
                    "bits", "operation", "paillier ms", "phe ms", "ratio"
                );
                header_done = true;
            }
            print_rows(b, &rows, phe.as_ref());
        }
        Ok(())
    }

    fn print_rows(bits: usize, rows: &[BenchRow], phe: Option<&PheReport>) {
        let by_name: BTreeMap<&str, &BenchRow> =
            rows.iter().map(|r| (r.operation.as_str(), r)).collect();
        let mut printed = Vec::new();
        for (name, label, phe_op) in COMPARED {
            let Some(row) = by_name.get(name) else {
                continue;
            };
            printed.push(*name);
            let ours = row.median_ms_per_value();
            let theirs = phe.and_then(|p| phe_op.and_then(|op| p.ops.get(op)));
            match theirs {
                Some(t) => println!(
                    "{bits:>5}  {label:<34} {:>12} {:>10} {:>8.1}x",
                    fmt_ms(ours),
                    fmt_ms(*t),
                    t / ours
                ),
                None => println!("{bits:>5}  {label:<34} {:>12}", fmt_ms(ours)),
            }
        }
        // Rows the library added after this table was written.
        for row in rows
            .iter()
            .filter(|r| !printed.contains(&r.operation.as_str()))
        {
            println!(
                "{bits:>5}  {:<34} {:>12}",
                row.operation,
                fmt_ms(row.median_ms_per_value())
            );
        }
    }

    fn fmt_ms(ms: f64) -> String {
        if ms >= 100.0 {
            format!("{ms:.1}")
        } else if ms >= 1.0 {
            format!("{ms:.2}")
        } else {
            format!("{ms:.4}")
        }
    }

    fn run_phe(python: &Path, bits: usize, iterations: usize) -> Result<PheReport> {
        let out = Command::new(python)
            .arg("-c")
            .arg(PHE_BENCH_SCRIPT)
            .args(["--bits", &bits.to_string()])
            .args(["--samples", &iterations.min(30).to_string()])
            .args(["--keygen-samples", &iterations.min(10).to_string()])
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        if !out.status.success() {
            bail!(
                "python-paillier's benchmark failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout)
            .context("reading python-paillier's benchmark report (JSON expected)")
    }

    /// `--python`, else `$PHE_PYTHON`, else the nearest `.venv/bin/python` above
    /// the current directory, this executable or the checkout it was built
    /// from; it must import `phe`.
    fn find_python(explicit: Option<PathBuf>) -> Result<PathBuf> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = explicit {
            candidates.push(p);
        } else if let Some(p) = std::env::var_os("PHE_PYTHON") {
            candidates.push(PathBuf::from(p));
        } else {
            // The checkout it was built from last: a binary built elsewhere
            // (CARGO_TARGET_DIR) still finds the workspace's venv.
            let starts = [
                std::env::current_dir().ok(),
                std::env::current_exe().ok(),
                Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
            ];
            for start in starts.into_iter().flatten() {
                for dir in start.ancestors() {
                    let venv = dir.join(".venv/bin/python");
                    if venv.exists() {
                        candidates.push(venv);
                        break;
                    }
                }
            }
        }
        for python in &candidates {
            let ok = Command::new(python)
                .args(["-c", "import phe"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(python.clone());
            }
        }
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "--vs-phe needs a Python with python-paillier installed (tried: {}). Create one \
             with `python3 -m venv .venv && .venv/bin/pip install phe==1.5.0 gmpy2`, or pass \
             --python / set PHE_PYTHON",
            if tried.is_empty() {
                "none found".to_string()
            } else {
                tried.join(", ")
            }
        )
    }
}
