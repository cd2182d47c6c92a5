//! Shared by the CLI and interoperability tests: runs the `paillier` binary and
//! the real python-paillier (its `pheutil` and `tests/python/phe_oracle.py`)
//! as processes, each test in its own temporary directory.
//!
//! Python is `$PHE_PYTHON` or `<workspace>/.venv/bin/python`. pheutil needs
//! `phe` 1.5.0 and `click`; when neither interpreter has them, the workspace
//! venv is created or completed with pip (under a file lock, so parallel test
//! binaries do not race), and the tests fail, never pass, when that is
//! impossible.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// A finished process.
#[derive(Debug)]
pub struct Run {
    /// What ran, for messages.
    pub what: String,
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Run {
    /// Stdout, asserting success.
    pub fn ok(self) -> String {
        assert!(
            self.success,
            "{} failed:\nstdout: {}\nstderr: {}",
            self.what, self.stdout, self.stderr
        );
        self.stdout
    }

    /// Stderr, asserting a non-zero exit with nothing on stdout.
    pub fn fails(self) -> String {
        assert!(
            !self.success,
            "{} should have failed but printed: {}",
            self.what, self.stdout
        );
        assert!(
            self.stdout.is_empty(),
            "{}: stdout {:?}",
            self.what,
            self.stdout
        );
        self.stderr
    }
}

fn finish(what: String, out: Output) -> Run {
    Run {
        what,
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `program args` in `dir` with `stdin` fed in.
pub fn run(dir: &Path, program: &Path, args: &[&str], stdin: &str) -> Run {
    let what = format!("{} {}", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).expect("writing stdin");
    drop(input);
    finish(what, child.wait_with_output().expect("waiting"))
}

/// The `paillier` binary under test.
pub fn paillier_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_paillier"))
}

/// `paillier args` in `dir`.
pub fn paillier(dir: &Path, args: &[&str]) -> Run {
    run(dir, paillier_bin(), args, "")
}

/// `paillier args` in `dir` reading `stdin`.
pub fn paillier_stdin(dir: &Path, args: &[&str], stdin: &str) -> Run {
    run(dir, paillier_bin(), args, stdin)
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python_script(name: &str) -> String {
    crate_dir()
        .join("tests/python")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// python-paillier's real `pheutil` (`phe.command_line.cli`) in `dir`.
pub fn pheutil(dir: &Path, args: &[&str]) -> Run {
    pheutil_stdin(dir, args, "")
}

/// `pheutil args` in `dir` reading `stdin`.
pub fn pheutil_stdin(dir: &Path, args: &[&str], stdin: &str) -> Run {
    let script = python_script("pheutil.py");
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    run(dir, python(), &all, stdin)
}

/// `tests/python/phe_oracle.py args` in `dir` reading `stdin`.
pub fn oracle(dir: &Path, args: &[&str], stdin: &str) -> Run {
    let script = python_script("phe_oracle.py");
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    run(dir, python(), &all, stdin)
}

/// Owned argument lists from string slices.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs each command (an argument list for `phe_oracle.py`, `pheutil ...`
/// included) in one Python process, in order: the real pheutil code without
/// paying Python's start-up and phe's import for every call.
pub fn phe_batch(dir: &Path, commands: &[Vec<String>]) -> Vec<Run> {
    let input: String = commands
        .iter()
        .map(|c| serde_json::to_string(c).expect("JSON") + "\n")
        .collect();
    let batch = oracle(dir, &["batch"], &input);
    let lines: Vec<&str> = batch.stdout.lines().collect();
    assert!(
        batch.success && lines.len() == commands.len(),
        "phe_oracle.py batch answered {} of {} commands: {}",
        lines.len(),
        commands.len(),
        batch.stderr
    );
    commands
        .iter()
        .zip(lines)
        .map(|(c, line)| {
            let v: serde_json::Value = serde_json::from_str(line).expect("batch result JSON");
            Run {
                what: format!("python-paillier {}", c.join(" ")),
                success: v["ok"].as_bool().expect("ok"),
                stdout: v["stdout"].as_str().expect("stdout").to_string(),
                stderr: v["stderr"].as_str().expect("stderr").to_string(),
            }
        })
        .collect()
}

/// A Python interpreter with phe 1.5.0 and click (for pheutil), set up once
/// per test binary.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        find_or_install_python().unwrap_or_else(|e| {
            panic!(
                "the interoperability tests need python-paillier 1.5.0 and click, and they \
                 could not be set up: {e}\nInstall them with `python3 -m venv .venv && \
                 .venv/bin/pip install phe==1.5.0 gmpy2 click` in the workspace root, or set \
                 PHE_PYTHON to a Python that has them."
            )
        })
    })
}

const PROBE: &str = "import phe, click; assert phe.__version__ == '1.5.0', phe.__version__";

/// `Ok` when `python` can run pheutil, else why not.
fn probe(python: &Path) -> Result<(), String> {
    match Command::new(python).args(["-c", PROBE]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{}: {}",
            python.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{}: {e}", python.display())),
    }
}

fn pip_install(python: &Path, packages: &[&str]) -> Result<(), String> {
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages)
        .output()
        .map_err(|e| format!("running pip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pip install {} with {} failed: {}",
            packages.join(" "),
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn find_or_install_python() -> Result<PathBuf, String> {
    let workspace = crate_dir()
        .parent()
        .ok_or("the crate has no parent directory")?;
    let venv = workspace.join(".venv");
    let venv_python = venv.join("bin/python");
    let explicit = std::env::var_os("PHE_PYTHON").map(PathBuf::from);
    let candidates: Vec<PathBuf> = explicit
        .iter()
        .cloned()
        .chain([venv_python.clone()])
        .collect();
    let mut problems = Vec::new();
    for c in &candidates {
        match probe(c) {
            Ok(()) => return Ok(c.clone()),
            Err(e) => problems.push(e),
        }
    }

    // Install under a lock: other test binaries (or other checkouts' runs) may
    // be doing the same right now.
    std::fs::create_dir_all(&venv).map_err(|e| format!("creating {}: {e}", venv.display()))?;
    let lock_path = venv.join(".paillier-tests.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("creating {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    for c in &candidates {
        if probe(c).is_ok() {
            return Ok(c.clone());
        }
    }
    // A given interpreter that has phe but lacks click (CI's venv) only needs click.
    if let Some(p) = &explicit {
        let has_phe = Command::new(p)
            .args(["-c", "import phe"])
            .output()
            .is_ok_and(|o| o.status.success());
        if has_phe && pip_install(p, &["click"]).is_ok() && probe(p).is_ok() {
            return Ok(p.clone());
        }
    }
    if !venv_python.exists() {
        let out = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .map_err(|e| format!("running python3 -m venv: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "python3 -m venv {} failed: {}",
                venv.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    pip_install(&venv_python, &["phe==1.5.0", "click"])?;
    // gmpy2 only makes phe faster; its absence is not a reason to fail.
    let _ = pip_install(&venv_python, &["gmpy2"]);
    probe(&venv_python).map_err(|e| {
        problems.push(e);
        problems.join("; ")
    })?;
    Ok(venv_python)
}

/// A key pair as files' contents: the private JWK and the public JWK.
#[derive(Clone, Debug)]
pub struct KeyFiles {
    /// The private key document.
    pub private: String,
    /// The public key document.
    pub public: String,
}

impl KeyFiles {
    /// Writes `private.json` and `public.json` into `dir`.
    pub fn write_to(&self, dir: &Path) {
        std::fs::write(dir.join("private.json"), &self.private).expect("write private key");
        std::fs::write(dir.join("public.json"), &self.public).expect("write public key");
    }
}

/// A 2048-bit key made by `paillier genpkey` (and `extract`), once per binary.
pub fn paillier_key() -> &'static KeyFiles {
    static KEY: OnceLock<KeyFiles> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        paillier(
            dir.path(),
            &["genpkey", "--keysize", "2048", "private.json"],
        )
        .ok();
        paillier(dir.path(), &["extract", "private.json", "public.json"]).ok();
        read_keys(dir.path())
    })
}

/// A second 2048-bit `paillier` key, for wrong-key tests.
pub fn other_paillier_key() -> &'static KeyFiles {
    static KEY: OnceLock<KeyFiles> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        paillier(
            dir.path(),
            &["genpkey", "--keysize", "2048", "private.json"],
        )
        .ok();
        paillier(dir.path(), &["extract", "private.json", "public.json"]).ok();
        read_keys(dir.path())
    })
}

/// A 2048-bit key (pheutil's default size) made by the real `pheutil genpkey`
/// and `pheutil extract`, once per binary.
pub fn pheutil_key() -> &'static KeyFiles {
    static KEY: OnceLock<KeyFiles> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = phe_batch(
            dir.path(),
            &[
                args(&["pheutil", "genpkey", "private.json"]),
                args(&["pheutil", "extract", "private.json", "public.json"]),
            ],
        );
        for r in made {
            r.ok();
        }
        read_keys(dir.path())
    })
}

fn read_keys(dir: &Path) -> KeyFiles {
    KeyFiles {
        private: std::fs::read_to_string(dir.join("private.json")).expect("private key"),
        public: std::fs::read_to_string(dir.join("public.json")).expect("public key"),
    }
}

/// A temporary directory holding `keys` as `private.json` and `public.json`.
pub fn dir_with(keys: &KeyFiles) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    keys.write_to(dir.path());
    dir
}

/// The `"e"` of a ciphertext document.
pub fn exponent_of(doc: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(doc).expect("ciphertext JSON");
    v["e"].as_i64().expect("integer e")
}
