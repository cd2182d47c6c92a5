//! The hospital node's configuration file (`hospital.json`) and its CLI
//! overrides, parsed and checked before any I/O.
//!
//! Relative paths in the file are resolved against the file's directory;
//! paths given on the command line are relative to the current directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
pub use node::config::PkiFiles;
use node::config::{read_json, resolve, secs};
use serde::{Deserialize, Serialize};

/// `hospital.json`. Every field but `name` and `train_csv` has the default given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Node name; must be the name in this node's certificate and in the coordinator's
    /// roster. Required.
    pub name: Option<String>,
    /// How ring messages travel. Default "relay": through the coordinator, sealed end
    /// to end; the node opens one outbound connection and listens on nothing. "direct":
    /// ring peers connect to this node's `listen` address.
    pub transport: Transport,
    /// Direct mode: UDP address to listen on for ring peers. Default "0.0.0.0:7001".
    /// Refused in relay mode, which listens on nothing.
    pub listen: Option<String>,
    /// Direct mode: the address ring peers should use to reach this node, announced to
    /// the coordinator. Default: none, and then the address the node bound when
    /// `listen` names an IP (so port 0 works), or the coordinator's roster address when
    /// it listens on 0.0.0.0/[::]. Refused in relay mode.
    pub advertise: Option<String>,
    /// The coordinator's address. Default "127.0.0.1:7000".
    pub coordinator_address: String,
    /// The coordinator's certificate name. Default "coordinator".
    pub coordinator_name: String,
    /// PKI files. Default `pki/ca.pem`, `pki/<name>.pem`, `pki/<name>.key`.
    pub pki: Option<PkiFiles>,
    /// Training CSV (header row). Required. Without `schema` every column but the target
    /// is a numeric feature used as given; with it, columns are matched by name.
    pub train_csv: Option<PathBuf>,
    /// Name of the target column. Default "target" (with `schema`: the schema's target,
    /// and a different value here is an error).
    pub target: String,
    /// The consortium schema (JSON, the same file the coordinator and every hospital
    /// name): columns, types, categories, imputation, the target, scaling, the
    /// intercept. Default none: the CSV's columns are used as given.
    pub schema: Option<PathBuf>,
    /// Where to write the trained model at the end (`hospital-node predict` reads it;
    /// mode 0600). Default "model.json".
    pub model_path: PathBuf,
    /// Optional test CSV with the same columns; enables test MSE reporting. Default none.
    pub test_csv: Option<PathBuf>,
    /// Where to write this node's own report JSON at the end. Default none.
    pub report_path: Option<PathBuf>,
    /// How long (seconds) to keep trying to reach the coordinator, at start and after
    /// losing it (a resumed coordinator). Default 300.
    pub coordinator_retry_secs: f64,
    /// How long (seconds) to keep dialing a ring peer. Default 30.
    pub peer_dial_secs: f64,
    /// Size cap of one message in bytes. Default 16 MiB.
    pub max_message_bytes: usize,
    /// How long (seconds) a silent connection stays open. Default 30.
    pub idle_timeout_secs: f64,
    /// The consortium's hospitals in ring order, this node included: every ring and
    /// member set the coordinator proposes must be drawn from it. Required.
    pub roster: Vec<String>,
    /// Fewest members of any ring or unmasked set this hospital takes part in (at
    /// least 3). Default 3.
    pub min_ring: usize,
    /// Take part in runs with masks off. WEAKENS PRIVACY: without masks, the
    /// coordinator colluding with this hospital's two ring neighbours learns its
    /// gradient. Default false (masks are then mandatory whatever the coordinator says).
    pub allow_unmasked: bool,
    /// Most rounds a run may have. Default 100000.
    pub max_rounds: u32,
    /// Largest learning rate accepted. Default 1000.
    pub max_eta: f64,
    /// Largest Paillier key (bits) of a run this hospital takes part in; it also
    /// sizes what it accepts from ring peers before it learns the run's key.
    /// Default 4096.
    pub max_key_bits: usize,
    /// Send per-round and final test metrics to the coordinator (they are functions
    /// of this hospital's data). Default false.
    pub share_metrics: bool,
    /// This node's persisted protocol state (its commitments; mode 0600). Default
    /// "hospital-state.json".
    pub state_path: PathBuf,
    /// This node's secret mask key (32 bytes, created 0600 on first start, refused if
    /// others can read it). Default "mask-key".
    pub mask_key_path: PathBuf,
    /// The consortium's threshold key, when it has one (`key-ceremony deal`):
    /// `{"public": "threshold-public.json", "share": "hospital-1.share.json"}`. With it
    /// this hospital takes part only in runs under that key, and gives a partial
    /// decryption only of the round sum its member set agreed on. The share file must be
    /// this hospital's and readable by its owner only. Default none.
    pub threshold: Option<ThresholdFiles>,
    /// Append-only audit log of every message that left this node (kind, size, round,
    /// recipient), one JSON line each (mode 0600). Default "audit.jsonl".
    pub audit_log_path: PathBuf,
    /// TEST FAULT INJECTION, never for real runs: corrupt the ciphertexts of this many
    /// outgoing ring passes (replaced by zeros, which receivers must reject). Default 0.
    // Left out of written configs when 0, so a generated config never names it.
    #[serde(
        rename = "test_fault_corrupt_ring_passes",
        skip_serializing_if = "is_zero"
    )]
    pub test_fault_corrupt_ring_passes: u32,
    /// TEST FAULT INJECTION, never for real runs: after each message this node sends, also
    /// send the recipient this many junk frames of every kind it accepts from this node, each
    /// at that kind's size limit (a hostile, authenticated peer flooding). Default 0.
    #[serde(rename = "test_fault_flood", skip_serializing_if = "is_zero")]
    pub test_fault_flood: u32,
    /// TEST FAULT INJECTION: the coordinator's key size and `max_features`, from which the
    /// flood computes the coordinator's limits. Default none (no flood to the coordinator).
    #[serde(
        rename = "test_fault_flood_coordinator",
        skip_serializing_if = "Option::is_none"
    )]
    pub test_fault_flood_coordinator: Option<(usize, usize)>,
}

/// `threshold` in a hospital's config: the key ceremony's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdFiles {
    /// The public file every node reads.
    pub public: PathBuf,
    /// This hospital's share file (0600).
    pub share: PathBuf,
}

/// How ring messages travel between hospitals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Through the coordinator, sealed end to end; the node only dials out.
    #[default]
    Relay,
    /// Ring peers connect to this node's `listen` address.
    Direct,
}

/// Direct mode's listen address when the config names none.
const DEFAULT_LISTEN: &str = "0.0.0.0:7001";

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            name: None,
            transport: Transport::Relay,
            listen: None,
            advertise: None,
            coordinator_address: "127.0.0.1:7000".to_owned(),
            coordinator_name: protocol::coordinator::DEFAULT_COORDINATOR_NAME.to_owned(),
            pki: None,
            train_csv: None,
            target: "target".to_owned(),
            schema: None,
            model_path: PathBuf::from("model.json"),
            test_csv: None,
            report_path: None,
            coordinator_retry_secs: 300.0,
            peer_dial_secs: 30.0,
            max_message_bytes: protocol::DEFAULT_MAX_MESSAGE_BYTES,
            idle_timeout_secs: 30.0,
            roster: Vec::new(),
            min_ring: protocol::hospital::MIN_RING,
            allow_unmasked: false,
            max_rounds: 100_000,
            max_key_bits: protocol::hospital::DEFAULT_MAX_KEY_BITS,
            max_eta: 1_000.0,
            share_metrics: false,
            state_path: PathBuf::from("hospital-state.json"),
            mask_key_path: PathBuf::from("mask-key"),
            threshold: None,
            audit_log_path: PathBuf::from("audit.jsonl"),
            test_fault_corrupt_ring_passes: 0,
            test_fault_flood: 0,
            test_fault_flood_coordinator: None,
        }
    }
}

/// Command-line overrides of [`FileConfig`] fields: each flag replaces the
/// config file's value, whose default is given in its help.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// This node's name: its certificate's name and its name in the coordinator's roster
    /// [config `name`, required]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How ring messages travel: relay (through the coordinator, sealed end to end; no
    /// listening socket) or direct [config `transport`, default relay]
    #[arg(long, value_enum, value_name = "MODE")]
    pub transport: Option<Transport>,
    /// Direct mode: UDP address (IP:port) to listen on for ring peers; port 0 picks a
    /// free port, announced in the `listening` line on stdout [config `listen`, default
    /// 0.0.0.0:7001]
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// Direct mode: the address ring peers should dial, announced to the coordinator
    /// [config `advertise`, default: the bound address when --listen names an IP, else
    /// the roster's address]
    #[arg(long, value_name = "IP:PORT")]
    pub advertise: Option<String>,
    /// The coordinator's address [config `coordinator_address`, default 127.0.0.1:7000]
    #[arg(long, value_name = "IP:PORT")]
    pub coordinator: Option<String>,
    /// The coordinator's certificate name; a peer presenting any other is refused
    /// [config `coordinator_name`, default coordinator]
    #[arg(long, value_name = "NAME")]
    pub coordinator_name: Option<String>,
    /// Training CSV (header row, numeric cells); it never leaves this node
    /// [config `train_csv`, required]
    #[arg(long, value_name = "CSV")]
    pub train: Option<PathBuf>,
    /// Target column of the CSVs [config `target`, default target]
    #[arg(long, value_name = "COL")]
    pub target: Option<String>,
    /// Test CSV with the same columns, for the test MSE in progress and reports
    /// [config `test_csv`, default none]
    #[arg(long, value_name = "CSV")]
    pub test: Option<PathBuf>,
    /// The consortium schema file (the same file the coordinator names)
    /// [config `schema`, default none: the CSV's columns as given]
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Where to write the trained model at the end [config `model_path`, default
    /// model.json beside the config]
    #[arg(long, value_name = "FILE")]
    pub model_out: Option<PathBuf>,
    /// Where to write this node's own report JSON at the end [config `report_path`,
    /// default none]
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Seconds to keep trying to reach the coordinator, at start and after losing it
    /// [config `coordinator_retry_secs`, default 300]
    #[arg(long, value_name = "SECS")]
    pub coordinator_retry_secs: Option<f64>,
    /// TEST FAULT INJECTION (never for real runs): corrupt this many outgoing ring passes.
    #[arg(long, hide = true)]
    pub test_fault_corrupt_ring_passes: Option<u32>,
}

/// The checked configuration the driver runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub transport: Transport,
    /// Direct mode's listen address (None in relay mode).
    pub listen: Option<SocketAddr>,
    pub advertise: Option<String>,
    pub coordinator_address: SocketAddr,
    pub coordinator_name: String,
    pub pki: node::pki::PkiPaths,
    pub train_csv: PathBuf,
    pub target: String,
    pub schema: Option<learning::ConsortiumSchema>,
    pub model_path: PathBuf,
    pub test_csv: Option<PathBuf>,
    pub report_path: Option<PathBuf>,
    pub coordinator_retry: Duration,
    pub peer_dial: Duration,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub policy: protocol::HospitalPolicy,
    pub state_path: PathBuf,
    pub mask_key_path: PathBuf,
    pub threshold: Option<ThresholdFiles>,
    pub audit_log_path: PathBuf,
    pub test_fault_corrupt_ring_passes: u32,
    pub test_fault_flood: u32,
    pub test_fault_flood_coordinator: Option<(usize, usize)>,
}

impl Config {
    /// Reads `path` (if given), applies `ov` and checks everything.
    pub fn load(path: Option<&Path>, ov: &Overrides) -> Result<Config> {
        let (mut fc, base) = read_json::<FileConfig>(path)?;
        let rel = |p: &Option<PathBuf>| p.as_ref().map(|p| resolve(&base, p));
        fc.train_csv = rel(&fc.train_csv);
        fc.test_csv = rel(&fc.test_csv);
        fc.report_path = rel(&fc.report_path);
        fc.schema = rel(&fc.schema);
        fc.model_path = resolve(&base, &fc.model_path);
        fc.state_path = resolve(&base, &fc.state_path);
        fc.mask_key_path = resolve(&base, &fc.mask_key_path);
        fc.audit_log_path = resolve(&base, &fc.audit_log_path);
        fc.threshold = fc.threshold.map(|t| ThresholdFiles {
            public: resolve(&base, &t.public),
            share: resolve(&base, &t.share),
        });
        let file_pki = fc.pki.as_ref().map(|p| p.resolve(&base));
        macro_rules! set {
            ($($f:ident <- $o:ident),*) => { $(if let Some(v) = &ov.$o { fc.$f = v.clone().into(); })* };
        }
        if let Some(t) = ov.transport {
            fc.transport = t;
        }
        set!(name <- name, listen <- listen, advertise <- advertise,
             coordinator_address <- coordinator, coordinator_name <- coordinator_name,
             train_csv <- train, target <- target, test_csv <- test, report_path <- report,
             schema <- schema, model_path <- model_out,
             coordinator_retry_secs <- coordinator_retry_secs,
             test_fault_corrupt_ring_passes <- test_fault_corrupt_ring_passes);

        let name = fc
            .name
            .context("no node name: set `name` in the config or pass --name")?;
        node::pki::validate_node_name(&name).context("config field `name`")?;
        node::pki::validate_node_name(&fc.coordinator_name)
            .context("config field `coordinator_name`")?;
        if name == fc.coordinator_name {
            bail!("the hospital's name {name:?} is the coordinator's");
        }
        let pki = file_pki.unwrap_or_else(|| {
            let d = resolve(&base, Path::new("pki"));
            node::pki::PkiPaths::in_dir(&d, &name)
        });
        let listen =
            match fc.transport {
                Transport::Relay => {
                    for (field, set) in [
                        ("listen", fc.listen.is_some()),
                        ("advertise", fc.advertise.is_some()),
                    ] {
                        if set {
                            bail!(
                            "config field `{field}` is for direct mode, but `transport` is relay \
                             (this node listens on nothing): remove it, or set \
                             `\"transport\": \"direct\"`"
                        );
                        }
                    }
                    None
                }
                Transport::Direct => {
                    let l = fc.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
                    Some(l.parse().with_context(|| {
                        format!("config field `listen`: {l:?} is not an IP:port")
                    })?)
                }
            };
        let coordinator_address = fc.coordinator_address.parse().with_context(|| {
            format!(
                "config field `coordinator_address`: {:?} is not an IP:port",
                fc.coordinator_address
            )
        })?;
        if let Some(a) = &fc.advertise {
            a.parse::<SocketAddr>()
                .with_context(|| format!("config field `advertise`: {a:?} is not an IP:port"))?;
        }
        let train_csv = fc
            .train_csv
            .context("no training data: set `train_csv` in the config or pass --train")?;
        if fc.target.is_empty() {
            bail!("config field `target` is empty");
        }
        let schema = fc
            .schema
            .as_ref()
            .map(|p| learning::ConsortiumSchema::from_path(p).context("config field `schema`"))
            .transpose()?;
        let target = match &schema {
            Some(s) if fc.target != s.target() && fc.target != FileConfig::default().target => {
                bail!(
                    "config field `target` is {:?} but the consortium schema's target is {:?} \
                     (leave `target` out when a schema is given)",
                    fc.target,
                    s.target()
                )
            }
            Some(s) => s.target().to_owned(),
            None => fc.target,
        };
        if fc.roster.is_empty() {
            bail!(
                "config field `roster` is empty: list the consortium's hospitals in ring order \
                 (this node included); the hospital refuses rings naming anyone else"
            );
        }
        let policy = protocol::HospitalPolicy {
            roster: fc.roster.clone(),
            min_ring: fc.min_ring,
            allow_unmasked: fc.allow_unmasked,
            max_rounds: fc.max_rounds,
            max_eta: fc.max_eta,
            max_key_bits: fc.max_key_bits,
            share_metrics: fc.share_metrics,
        };
        policy
            .validate(&name, &fc.coordinator_name)
            .map_err(|e| anyhow::anyhow!("config fields `roster`/`min_ring`: {e}"))?;
        if fc.max_message_bytes < 1024 {
            bail!("max_message_bytes {} is too small", fc.max_message_bytes);
        }
        Ok(Config {
            name,
            transport: fc.transport,
            listen,
            advertise: fc.advertise,
            coordinator_address,
            coordinator_name: fc.coordinator_name,
            pki,
            train_csv,
            target,
            schema,
            model_path: fc.model_path,
            test_csv: fc.test_csv,
            report_path: fc.report_path,
            coordinator_retry: secs("coordinator_retry_secs", fc.coordinator_retry_secs)?,
            peer_dial: secs("peer_dial_secs", fc.peer_dial_secs)?,
            max_message_bytes: fc.max_message_bytes,
            idle_timeout: secs("idle_timeout_secs", fc.idle_timeout_secs)?,
            policy,
            state_path: fc.state_path,
            mask_key_path: fc.mask_key_path,
            threshold: fc.threshold,
            audit_log_path: fc.audit_log_path,
            test_fault_corrupt_ring_passes: fc.test_fault_corrupt_ring_passes,
            test_fault_flood: fc.test_fault_flood,
            test_fault_flood_coordinator: fc.test_fault_flood_coordinator,
        })
    }
}

#[cfg(test)]
mod tests {

    /// The documented example in docs/federation.md is a valid config (so the
    /// document cannot drift from the parser).
    #[test]
    fn the_documented_example_loads() {
        let doc = include_str!("../../docs/federation.md");
        let start = doc.find("## hospital.json").expect("section");
        let block = &doc[start..];
        let open = block.find("```json\n").expect("example") + 8;
        let close = open + block[open..].find("```").expect("end of example");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("example.json");
        std::fs::write(&p, &block[open..close]).unwrap();
        let c = Config::load(Some(&p), &Overrides::default()).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.name, "hospital-1");
    }
    use super::*;

    /// The documented schema example is a valid consortium schema.
    #[test]
    fn the_documented_schema_parses() {
        let doc = include_str!("../../docs/federation.md");
        let start = doc.find("## schema.json").expect("section");
        let block = &doc[start..];
        let open = block.find("```json\n").expect("example") + 8;
        let close = open + block[open..].find("```").expect("end of example");
        let s = learning::ConsortiumSchema::from_json(&block.as_bytes()[open..close])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.feature_names().len(), 6);
        assert!(s.needs_statistics());
    }

    #[test]
    fn file_paths_resolve_against_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.json");
        std::fs::write(
            &p,
            r#"{"name":"hospital-2","train_csv":"h2.csv","test_csv":"/abs/t.csv",
                "roster":["hospital-1","hospital-2","hospital-3"]}"#,
        )
        .unwrap();
        let c = Config::load(Some(&p), &Overrides::default()).unwrap();
        assert_eq!(c.train_csv, dir.path().join("h2.csv"));
        assert_eq!(c.test_csv.as_deref(), Some(Path::new("/abs/t.csv")));
        assert_eq!(c.pki.cert, dir.path().join("pki/hospital-2.pem"));
        assert_eq!(c.coordinator_name, "coordinator");
        let ov = Overrides {
            name: Some("hospital-3".into()),
            coordinator: Some("10.0.0.1:9000".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&p), &ov).unwrap();
        assert_eq!(c.name, "hospital-3");
        assert_eq!(c.coordinator_address.port(), 9000);
    }

    /// Relay mode (the default) listens on nothing: `listen` or `advertise`
    /// is refused naming the field and the way out; direct mode takes them.
    #[test]
    fn listen_and_advertise_belong_to_direct_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.json");
        let base = r#""name":"hospital-2","train_csv":"h2.csv",
            "roster":["hospital-1","hospital-2","hospital-3"]"#;
        let c = |extra: &str| {
            std::fs::write(&p, format!("{{{base}{extra}}}")).unwrap();
            Config::load(Some(&p), &Overrides::default())
        };
        let relay = c("").unwrap();
        assert_eq!((relay.transport, relay.listen), (Transport::Relay, None));
        for field in ["listen", "advertise"] {
            let e = format!(
                "{:#}",
                c(&format!(r#","{field}":"127.0.0.1:7001""#)).unwrap_err()
            );
            assert!(
                e.contains(&format!("`{field}`")) && e.contains("direct"),
                "{e}"
            );
        }
        let direct = c(r#","transport":"direct","listen":"127.0.0.1:7001""#).unwrap();
        assert_eq!(direct.listen, Some("127.0.0.1:7001".parse().unwrap()));
        let default_listen = c(r#","transport":"direct""#).unwrap();
        assert_eq!(default_listen.listen, Some("0.0.0.0:7001".parse().unwrap()));
    }

    #[test]
    fn missing_required_fields_are_named() {
        let e = format!(
            "{:#}",
            Config::load(None, &Overrides::default()).unwrap_err()
        );
        assert!(e.contains("name"), "{e}");
        let ov = Overrides {
            name: Some("h".into()),
            ..Overrides::default()
        };
        let e = format!("{:#}", Config::load(None, &ov).unwrap_err());
        assert!(e.contains("train"), "{e}");
        let ov = Overrides {
            name: Some("coordinator".into()),
            train: Some("x.csv".into()),
            ..Overrides::default()
        };
        let e = format!("{:#}", Config::load(None, &ov).unwrap_err());
        assert!(e.contains("coordinator"), "{e}");
    }
}
