//! Key custody and certificate checks with real processes: the `consortium-ca`,
//! `coordinator` and `hospital-node` binaries, each node in a directory of
//! its own (its "machine"), on 127.0.0.1.
//!
//! - the CA signs requests without seeing a key, and a consortium provisioned
//!   that way trains;
//! - a coordinator that mints a "hospital-2" of its own is refused by the real
//!   hospitals;
//! - revoked, expired and not-yet-valid certificates are refused on connect;
//! - key files others may read are refused on load, naming the file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod util;
use util::*;

const CA: &str = env!("CARGO_BIN_EXE_consortium-ca");

const HOSPITALS: [&str; 3] = ["hospital-1", "hospital-2", "hospital-3"];

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn ok(bin: &Path, args: &[&str]) -> String {
    let o = run(bin, args);
    assert!(
        o.status.success(),
        "{} {args:?} failed:\n{}",
        bin.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ca_bin() -> &'static Path {
    Path::new(CA)
}

fn coord_bin() -> &'static Path {
    Path::new(COORD)
}

fn node_bin(name: &str) -> &'static Path {
    if name == "coordinator" {
        coord_bin()
    } else {
        hospital_bin()
    }
}

/// A consortium laid out as separate machines under one temporary folder:
/// `ca-machine/ca` (the CA), `coordinator/` and `hospital-N/` (the nodes),
/// each node with its config, data and `pki/`.
struct Consortium {
    root: tempfile::TempDir,
    coord_port: u16,
}

impl Consortium {
    fn new() -> Consortium {
        hospital_bin();
        let c = Consortium {
            root: tempfile::tempdir().unwrap(),
            coord_port: free_udp_port(),
        };
        for n in ["coordinator"].iter().chain(HOSPITALS.iter()) {
            std::fs::create_dir_all(c.machine(n)).unwrap();
        }
        c
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p)
    }

    fn machine(&self, name: &str) -> PathBuf {
        self.path(name)
    }

    fn ca_dir(&self) -> PathBuf {
        self.path("ca-machine/ca")
    }

    /// The CA operator's part: create the CA.
    fn init_ca(&self) {
        ok(ca_bin(), &["init", "--out", s(&self.ca_dir())]);
    }

    /// The distributed flow for `name`: the node makes its key and request on
    /// its machine, the request (only) travels to the CA machine, is signed
    /// there with `sign_args`, and the certificate, CA certificate and CRL
    /// travel back. Returns what `sign` printed.
    fn enroll(&self, name: &str, sign_args: &[&str]) -> String {
        let pki = self.machine(name).join("pki");
        ok(
            node_bin(name),
            &["pki", "request", "--name", name, "--out", s(&pki)],
        );
        let inbox = self.path("ca-machine/inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        let csr = inbox.join(format!("{name}.csr"));
        std::fs::copy(pki.join(format!("{name}.csr")), &csr).unwrap();
        let ca_dir = self.ca_dir();
        let mut args = vec!["sign", "--ca", s(&ca_dir), "--csr", s(&csr), "--name", name];
        args.extend_from_slice(sign_args);
        let printed = ok(ca_bin(), &args);
        std::fs::copy(
            inbox.join(format!("{name}.pem")),
            pki.join(format!("{name}.pem")),
        )
        .unwrap();
        self.distribute(&pki);
        printed
    }

    /// Copies the CA certificate and the current CRL into a node's `pki/`.
    fn distribute(&self, pki: &Path) {
        for f in ["ca.pem", "crl.pem"] {
            std::fs::copy(self.ca_dir().join(f), pki.join(f)).unwrap();
        }
    }

    /// Writes every node's config and data (pki paths: the `pki/` defaults).
    fn write_configs(&self, coord_extra: Value) {
        let roster: Vec<Value> = HOSPITALS
            .iter()
            .map(|n| json!({"name": n, "address": "127.0.0.1:9"}))
            .collect();
        let mut cfg = json!({
            "listen": format!("127.0.0.1:{}", self.coord_port),
            "roster": roster,
            "key_bits": 2048,
            "rounds": 2,
            "eta": 0.01,
            "round_timeout_secs": 5,
            "join_timeout_secs": 30,
            "idle_timeout_secs": 3,
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut cfg, coord_extra) {
            c.extend(e);
        }
        std::fs::write(
            self.machine("coordinator").join("coordinator.json"),
            cfg.to_string(),
        )
        .unwrap();
        for (i, n) in HOSPITALS.iter().enumerate() {
            let mut csv = String::from("x1,x2,intercept,target\n");
            for r in 0..20 {
                let (a, b) = ((r * 7 + i * 3) % 11, (r * 5 + i) % 13);
                csv.push_str(&format!("{a},{b},1,{}\n", 2 * a + b));
            }
            std::fs::write(self.machine(n).join("train.csv"), csv).unwrap();
            let h = json!({
                "name": n,
                "coordinator_address": format!("127.0.0.1:{}", self.coord_port),
                "train_csv": "train.csv",
                "coordinator_retry_secs": 20,
                "peer_dial_secs": 5,
                "idle_timeout_secs": 3,
                "roster": HOSPITALS,
            });
            std::fs::write(self.machine(n).join(format!("{n}.json")), h.to_string()).unwrap();
        }
    }

    /// Changes fields of `name`'s config.
    fn edit(&self, name: &str, fields: Value) {
        let p = self.config(name);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        if let (Value::Object(c), Value::Object(e)) = (&mut v, fields) {
            c.extend(e);
        }
        std::fs::write(&p, v.to_string()).unwrap();
    }

    fn config(&self, name: &str) -> PathBuf {
        self.machine(name).join(format!("{name}.json"))
    }

    fn log(&self, name: &str) -> PathBuf {
        self.machine(name).join(format!("{name}.log"))
    }

    /// Starts node `name` (`run --config`), stderr to its log.
    fn start(&self, name: &str) -> Child {
        Command::new(node_bin(name))
            .args(["run", "--config", s(&self.config(name))])
            .stdout(std::fs::File::create(self.machine(name).join(format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(self.log(name)).unwrap())
            .spawn()
            .unwrap()
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for n in ["coordinator"].iter().chain(HOSPITALS.iter()) {
            out.push_str(&format!("==== {n}\n{}\n", self.read_log(n)));
        }
        out
    }

    fn results(&self) -> PathBuf {
        self.machine("coordinator").join("results.json")
    }
}

fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Waits until `check` holds for the log of `name`.
fn wait_log(c: &Consortium, name: &str, limit: Duration, check: impl Fn(&str) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check(&c.read_log(name)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Some line of `log` contains every one of `words`.
fn line_with(log: &str, words: &[&str]) -> bool {
    log.lines().any(|l| words.iter().all(|w| l.contains(w)))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn private_keys_under(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("PRIVATE KEY")))
        .collect()
}

#[test]
fn the_ca_signs_requests_without_seeing_a_key_and_the_consortium_trains() {
    use std::os::unix::fs::PermissionsExt;
    let c = Consortium::new();
    c.init_ca();
    let mut keys_before = Vec::new();
    for n in ["coordinator"].iter().chain(HOSPITALS.iter()) {
        let printed = c.enroll(n, &[]);
        // Bounded validity: one year by default.
        assert!(printed.contains("(365 days)"), "{printed}");
        let key = c.machine(n).join(format!("pki/{n}.key"));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
        keys_before.push((key.clone(), std::fs::read(&key).unwrap()));
    }
    // The CA machine holds its own key and nothing else secret; each node
    // machine holds exactly its own key, and the coordinator's no CA key.
    assert_eq!(
        private_keys_under(&c.path("ca-machine")),
        vec![c.ca_dir().join("ca.key")]
    );
    for n in ["coordinator"].iter().chain(HOSPITALS.iter()) {
        assert_eq!(
            private_keys_under(&c.machine(n)),
            vec![c.machine(n).join(format!("pki/{n}.key"))],
            "{n}"
        );
    }
    // The coordinator's machine cannot sign: no CA key there.
    let o = run(
        ca_bin(),
        &[
            "sign",
            "--ca",
            s(&c.machine("coordinator").join("pki")),
            "--csr",
            s(&c.path("ca-machine/inbox/hospital-2.csr")),
            "--name",
            "hospital-2",
            "--out",
            s(&c.path("x.pem")),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a consortium CA directory"), "{err}");
    // A request is signed only for the name it asks for.
    let o = run(
        ca_bin(),
        &[
            "sign",
            "--ca",
            s(&c.ca_dir()),
            "--csr",
            s(&c.path("ca-machine/inbox/hospital-1.csr")),
            "--name",
            "hospital-2",
            "--out",
            s(&c.path("x.pem")),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("hospital-1") && err.contains("refusing to sign"),
        "{err}"
    );
    assert!(!c.path("x.pem").exists());
    // Validity is bounded.
    let o = run(
        ca_bin(),
        &[
            "sign",
            "--ca",
            s(&c.ca_dir()),
            "--csr",
            s(&c.path("ca-machine/inbox/hospital-1.csr")),
            "--name",
            "hospital-1",
            "--days",
            "4000",
            "--out",
            s(&c.path("x.pem")),
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("825"));

    // The consortium provisioned this way trains to the end.
    c.write_configs(json!({}));
    let mut procs = Procs::default();
    procs.0.push(c.start("coordinator"));
    for n in HOSPITALS {
        procs.0.push(c.start(n));
    }
    for (i, p) in procs.0.iter_mut().enumerate() {
        let st = wait(p, Duration::from_secs(120));
        assert!(
            st.is_some_and(|s| s.success()),
            "process {i}: {st:?}\n{}",
            c.logs()
        );
    }
    assert!(c.results().exists());
    // Nobody's key changed hands or content.
    for (key, bytes) in keys_before {
        assert_eq!(std::fs::read(&key).unwrap(), bytes, "{}", key.display());
    }
}

#[test]
fn a_coordinator_minting_its_own_hospital_is_refused_by_the_hospitals() {
    let c = Consortium::new();
    c.init_ca();
    for n in ["coordinator", "hospital-1", "hospital-3"] {
        c.enroll(n, &[]);
    }
    c.write_configs(json!({"join_timeout_secs": 20}));
    // The coordinator's operator, without the consortium's CA key, makes a CA
    // of its own on its machine and a "hospital-2" from it, which it runs
    // itself (a real hospital-node) and trusts alongside the consortium CA.
    let m = c.machine("coordinator");
    let evil_ca = m.join("evil-ca");
    ok(ca_bin(), &["init", "--out", s(&evil_ca)]);
    let fake = c.machine("hospital-2");
    let fake_pki = fake.join("pki");
    ok(
        hospital_bin(),
        &[
            "pki",
            "request",
            "--name",
            "hospital-2",
            "--out",
            s(&fake_pki),
        ],
    );
    ok(
        ca_bin(),
        &[
            "sign",
            "--ca",
            s(&evil_ca),
            "--csr",
            s(&fake_pki.join("hospital-2.csr")),
            "--name",
            "hospital-2",
        ],
    );
    let bundle = |f: &str| {
        let mut b = std::fs::read(c.ca_dir().join(f)).unwrap();
        b.extend(std::fs::read(evil_ca.join(f)).unwrap());
        b
    };
    for dir in [m.join("pki"), fake_pki.clone()] {
        std::fs::write(dir.join("both-ca.pem"), bundle("ca.pem")).unwrap();
        std::fs::write(dir.join("both-crl.pem"), bundle("crl.pem")).unwrap();
    }
    c.edit(
        "coordinator",
        json!({"pki": {"ca": "pki/both-ca.pem", "crl": "pki/both-crl.pem",
                       "cert": "pki/coordinator.pem", "key": "pki/coordinator.key"}}),
    );
    c.edit(
        "hospital-2",
        json!({"pki": {"ca": "pki/both-ca.pem", "crl": "pki/both-crl.pem",
                       "cert": "pki/hospital-2.pem", "key": "pki/hospital-2.key"}}),
    );

    let mut procs = Procs::default();
    procs.0.push(c.start("coordinator"));
    for n in HOSPITALS {
        procs.0.push(c.start(n));
    }
    // The coordinator takes its own hospital-2 in...
    let joined = |_: &str| {
        std::fs::read_to_string(m.join("coordinator.out"))
            .is_ok_and(|o| line_with(&o, &["\"joined\"", "\"hospital-2\""]))
    };
    assert!(
        wait_log(&c, "coordinator", Duration::from_secs(60), joined),
        "{}",
        c.logs()
    );
    // ...and each real hospital refuses it, naming it.
    for n in ["hospital-1", "hospital-3"] {
        assert!(
            // Relay mode: its key offer's certificate is refused (direct
            // mode: its TLS handshake).
            wait_log(&c, n, Duration::from_secs(60), |l| line_with(
                l,
                &["hospital-2", "not issued by the consortium CA"]
            ) || line_with(
                l,
                &["hospital-2", "UnknownIssuer"]
            )),
            "{n} did not refuse the minted hospital-2\n{}",
            c.logs()
        );
    }
    let st = wait(&mut procs.0[0], Duration::from_secs(90));
    assert!(!st.is_some_and(|s| s.success()), "{}", c.logs());
    assert!(
        !c.results().exists(),
        "a round completed with the minted hospital"
    );
    // No round completed: the minted hospital never got an authenticated
    // link to a real one. (The real hospitals' audit logs list what they
    // handed to the transport for hospital-2; no link to it ever came up.)
    let out = std::fs::read_to_string(m.join("coordinator.out")).unwrap();
    assert!(!out.contains("\"event\":\"round\""), "{out}");
}

/// A consortium provisioned by `coordinator pki init` (local trials) in each
/// machine's `pki/`, the CA in the coordinator's `pki/consortium-ca`.
fn local_consortium(coord_extra: Value) -> Consortium {
    let c = Consortium::new();
    let pki = c.machine("coordinator").join("pki");
    ok(
        coord_bin(),
        &[
            "pki",
            "init",
            "--out",
            s(&pki),
            "--nodes",
            &HOSPITALS.join(","),
        ],
    );
    for n in HOSPITALS {
        let d = c.machine(n).join("pki");
        std::fs::create_dir_all(&d).unwrap();
        for f in [
            "ca.pem",
            "crl.pem",
            &format!("{n}.pem"),
            &format!("{n}.key"),
        ] {
            std::fs::copy(pki.join(f), d.join(f)).unwrap();
        }
    }
    c.write_configs(coord_extra);
    c
}

/// Revokes `name` with the local CA and distributes the new CRL to everyone.
fn revoke(c: &Consortium, name: &str) {
    let pki = c.machine("coordinator").join("pki");
    let out = ok(
        ca_bin(),
        &[
            "revoke",
            "--ca",
            s(&pki.join("consortium-ca")),
            "--cert",
            s(&pki.join(format!("{name}.pem"))),
            "--reason",
            "key-compromise",
        ],
    );
    assert!(out.contains(name), "{out}");
    for n in ["coordinator"].iter().chain(HOSPITALS.iter()) {
        std::fs::copy(
            pki.join("consortium-ca/crl.pem"),
            c.machine(n).join("pki/crl.pem"),
        )
        .unwrap();
    }
}

#[test]
fn a_revoked_hospital_is_refused_by_the_coordinator_naming_it() {
    let c = local_consortium(json!({"join_timeout_secs": 8}));
    revoke(&c, "hospital-2");
    c.edit("hospital-2", json!({"coordinator_retry_secs": 4}));
    let mut procs = Procs::default();
    procs.0.push(c.start("coordinator"));
    for n in HOSPITALS {
        procs.0.push(c.start(n));
    }
    assert!(
        wait_log(&c, "coordinator", Duration::from_secs(30), |l| line_with(
            l,
            &["hospital-2", "Revoked"]
        )),
        "{}",
        c.logs()
    );
    let st = wait(&mut procs.0[2], Duration::from_secs(30)).expect("revoked hospital hangs");
    assert!(!st.success());
    let st = wait(&mut procs.0[0], Duration::from_secs(60)).expect("coordinator hangs");
    assert!(!st.success(), "coordinator ran without hospital-2");
    assert!(!c.results().exists());
}

#[test]
fn a_revoked_coordinator_is_refused_by_the_hospitals() {
    let c = local_consortium(json!({"join_timeout_secs": 6}));
    revoke(&c, "coordinator");
    for n in HOSPITALS {
        c.edit(n, json!({"coordinator_retry_secs": 4}));
    }
    let mut procs = Procs::default();
    procs.0.push(c.start("coordinator"));
    for n in HOSPITALS {
        procs.0.push(c.start(n));
    }
    for (i, n) in HOSPITALS.iter().enumerate() {
        let st = wait(&mut procs.0[i + 1], Duration::from_secs(60)).expect("hospital hangs");
        assert!(!st.success(), "{n} worked with a revoked coordinator");
        let log = c.read_log(n);
        assert!(line_with(&log, &["coordinator", "Revoked"]), "{n}:\n{log}");
    }
    let st = wait(&mut procs.0[0], Duration::from_secs(60)).expect("coordinator hangs");
    assert!(!st.success());
    assert!(!c.results().exists());
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let c = local_consortium(json!({"join_timeout_secs": 8}));
    // hospital-2 gets a certificate that expired, hospital-3 one valid only
    // from 2099, each by a new request signed by the consortium CA.
    let ca = c.machine("coordinator").join("pki/consortium-ca");
    for (n, from) in [("hospital-2", "2020-01-01"), ("hospital-3", "2099-01-01")] {
        let d = c.machine(n).join("pki-new");
        ok(
            hospital_bin(),
            &["pki", "request", "--name", n, "--out", s(&d)],
        );
        let printed = ok(
            ca_bin(),
            &[
                "sign",
                "--ca",
                s(&ca),
                "--csr",
                s(&d.join(format!("{n}.csr"))),
                "--name",
                n,
                "--not-before",
                from,
                "--days",
                "30",
            ],
        );
        assert!(printed.contains(&from[..4]), "{printed}");
        c.distribute_from(&ca, &d);
        c.edit(
            n,
            json!({"pki": {"ca": "pki-new/ca.pem", "cert": format!("pki-new/{n}.pem"),
                           "key": format!("pki-new/{n}.key")},
                   "coordinator_retry_secs": 4}),
        );
    }
    let mut procs = Procs::default();
    procs.0.push(c.start("coordinator"));
    for n in HOSPITALS {
        procs.0.push(c.start(n));
    }
    for (n, why) in [
        ("hospital-2", "certificate expired"),
        ("hospital-3", "certificate not valid yet"),
    ] {
        assert!(
            wait_log(&c, "coordinator", Duration::from_secs(30), |l| line_with(
                l,
                &[n, why]
            )),
            "{n}: {why}\n{}",
            c.logs()
        );
        // The node itself was warned at start.
        assert!(
            c.read_log(n).contains("outside its validity period"),
            "{}",
            c.read_log(n)
        );
    }
    let st = wait(&mut procs.0[0], Duration::from_secs(60)).expect("coordinator hangs");
    assert!(!st.success());
    assert!(!c.results().exists());
}

impl Consortium {
    /// Copies the CA certificate and CRL of CA directory `ca` into `pki`.
    fn distribute_from(&self, ca: &Path, pki: &Path) {
        for f in ["ca.pem", "crl.pem"] {
            std::fs::copy(ca.join(f), pki.join(f)).unwrap();
        }
    }
}

#[test]
fn key_files_readable_by_others_are_refused_on_load_naming_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let c = local_consortium(json!({"join_timeout_secs": 5}));
    let open = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // A hospital's TLS key.
    let key = c.machine("hospital-1").join("pki/hospital-1.key");
    open(&key, 0o644);
    let o = run(
        hospital_bin(),
        &["run", "--config", s(&c.config("hospital-1"))],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(s(&key)) && err.contains("chmod 600"), "{err}");
    // The coordinator's TLS key.
    let key = c.machine("coordinator").join("pki/coordinator.key");
    open(&key, 0o640);
    let o = run(
        coord_bin(),
        &["run", "--config", s(&c.config("coordinator"))],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(s(&key)) && err.contains("chmod 600"), "{err}");
    // The CA's key.
    let ca = c.machine("coordinator").join("pki/consortium-ca");
    open(&ca.join("ca.key"), 0o644);
    let o = run(
        ca_bin(),
        &[
            "revoke",
            "--ca",
            s(&ca),
            "--cert",
            s(&c.machine("hospital-1").join("pki/hospital-1.pem")),
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(s(&ca.join("ca.key"))) && err.contains("chmod 600"),
        "{err}"
    );
}
