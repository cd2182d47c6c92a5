//! `consortium-ca`: the federation consortium's certificate authority, run by
//! the CA's operator on the CA's own machine (not the coordinator's).
//!
//! `init --out DIR` creates the CA (key 0600 in DIR, certificate, empty
//! revocation list); `sign --ca DIR --csr FILE --name NAME` signs a node's
//! certificate signing request (the CA reads the request only, never a key);
//! `revoke --ca DIR --serial HEX | --cert FILE` revokes a certificate and
//! rewrites DIR/crl.pem, which goes to every node with the roster.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Parser, Subcommand};
use node::pki::ca::{self, Ca, RevokeReason, Validity};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Certificate authority of a federation consortium: signs the nodes' certificate \
             requests (never sees their keys) and revokes certificates"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a CA: DIR/ca.key (0600, stays in DIR), DIR/ca.pem and DIR/crl.pem (for every
    /// node), DIR/issued.json (the register).
    Init {
        /// The CA directory, created 0700; an existing CA is never overwritten [required]
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity of the CA certificate in days (at most 7300)
        #[arg(long, default_value_t = ca::DEFAULT_CA_DAYS, value_name = "N")]
        days: u32,
    },
    /// Sign a node's certificate signing request (made by `coordinator pki request` or
    /// `hospital-node pki request` on the node's machine).
    Sign {
        /// The CA directory made by `init` [required]
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The node's request (`<name>.csr`) [required]
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// The node name the operator signs for; a request naming anything else is
        /// refused [required]
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Validity in days (at most 825; renew with a new request)
        #[arg(long, default_value_t = ca::DEFAULT_CERT_DAYS, value_name = "N")]
        days: u32,
        /// First day of validity, YYYY-MM-DD (UTC) [default: now]
        #[arg(long, value_name = "DATE")]
        not_before: Option<String>,
        /// Where to write the certificate; never overwritten [default: the request's
        /// path with extension .pem]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Revoke a certificate and rewrite DIR/crl.pem (distribute it with the roster).
    #[command(group(ArgGroup::new("which").required(true).args(["serial", "cert"])))]
    Revoke {
        /// The CA directory [required]
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The serial to revoke (hex, as `sign` prints it)
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
        /// The certificate file to revoke
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
        /// unspecified, key-compromise, affiliation-changed, superseded or
        /// cessation-of-operation
        #[arg(long, default_value = "unspecified", value_name = "REASON")]
        reason: String,
    },
    /// List the certificates the CA issued.
    List {
        /// The CA directory [required]
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    node::logging::init();
    node::process::exit_code("consortium-ca", real_main(cli))
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Init { out, days } => {
            let ca = Ca::init(&out, days)
                .with_context(|| format!("creating the CA in {}", out.display()))?;
            println!(
                "ca key: {} (0600; it never leaves this directory)",
                out.join(ca::KEY_FILE).display()
            );
            println!(
                "ca certificate: {} (give it to every node)",
                ca.cert_path().display()
            );
            println!(
                "revocation list: {} (give it to every node with the roster)",
                ca.crl_path().display()
            );
            Ok(())
        }
        Cmd::Sign {
            ca,
            csr,
            name,
            days,
            not_before,
            out,
        } => {
            let validity = match &not_before {
                Some(d) => Validity::starting(d, days)?,
                None => Validity::from_now(days)?,
            };
            let out = out.unwrap_or_else(|| csr.with_extension("pem"));
            let mut authority =
                Ca::open(&ca).with_context(|| format!("opening the CA in {}", ca.display()))?;
            let issued = authority
                .sign(&csr, &name, &validity, &out)
                .with_context(|| format!("signing {}", csr.display()))?;
            println!(
                "{name}: certificate {} serial {} valid from {} until {} ({days} days)",
                out.display(),
                issued.serial,
                ca::format_unix(issued.not_before),
                ca::format_unix(issued.not_after)
            );
            println!(
                "send back {}, {} and {}",
                out.display(),
                authority.cert_path().display(),
                authority.crl_path().display()
            );
            Ok(())
        }
        Cmd::Revoke {
            ca,
            serial,
            cert,
            reason,
        } => {
            let reason: RevokeReason = reason.parse().map_err(anyhow::Error::msg)?;
            let mut authority =
                Ca::open(&ca).with_context(|| format!("opening the CA in {}", ca.display()))?;
            let serial = match (serial, cert) {
                (Some(s), _) => s,
                (None, Some(c)) => authority.serial_of(&c)?,
                (None, None) => bail!("give --serial or --cert"),
            };
            let entry = authority.revoke(&serial, reason)?;
            println!(
                "revoked {} (serial {}, {}); distribute {} to every node with the roster",
                entry.name,
                entry.serial,
                entry.reason.as_deref().unwrap_or("unspecified"),
                authority.crl_path().display()
            );
            Ok(())
        }
        Cmd::List { ca } => {
            let authority =
                Ca::open(&ca).with_context(|| format!("opening the CA in {}", ca.display()))?;
            for c in authority.issued() {
                let status = match c.revoked_at {
                    Some(at) => format!(
                        "revoked {} ({})",
                        ca::format_unix(at),
                        c.reason.as_deref().unwrap_or("unspecified")
                    ),
                    None => "active".into(),
                };
                println!(
                    "{} {} {} .. {} {status}",
                    c.serial,
                    c.name,
                    ca::format_unix(c.not_before),
                    ca::format_unix(c.not_after)
                );
            }
            Ok(())
        }
    }
}
