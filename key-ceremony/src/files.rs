//! The ceremony's files, written once and checked whenever read.
//!
//! A ceremony directory holds:
//! - [`PUBLIC_FILE`] (`threshold-key.json`, mode 0644): for every node. The
//!   hospitals in party order (the first is party 1) and the threshold key's
//!   public file ([`paillier::threshold::files`]: the modulus, the threshold,
//!   the verification base and one verification key per party).
//! - one share file per hospital ([`share_file_name`], `<hospital>.share.json`,
//!   mode 0600): the hospital's name and its share file (index, secret share,
//!   a copy of the public key). It goes to that hospital only, and is then
//!   deleted from the dealer's directory.
//!
//! Every file is created with `create_new` (an existing file or a planted
//! symlink is never written through) and fsynced, then the directory is. A
//! share file that group or others may access is refused on load; reads are
//! bounded before allocating; every error names its file. The share text is
//! held in wiped buffers; its inner document is borrowed from the file text,
//! never copied into an unwiped value.

use std::fs::{self, DirBuilder};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use paillier::threshold::{self, KeyShare, ThresholdKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use crate::{validate_hospital_name, Error, Plan, Result};

/// File name of the public file inside a ceremony directory.
pub const PUBLIC_FILE: &str = "threshold-key.json";
/// Format tag of the public file.
pub const PUBLIC_FORMAT: &str = "key-ceremony-public/1";
/// Format tag of a share file.
pub const SHARE_FORMAT: &str = "key-ceremony-share/1";
/// Largest file read: the key's own documents plus the hospitals' names.
pub const MAX_FILE_BYTES: u64 = threshold::files::MAX_FILE_BYTES as u64 + (64 << 10);

/// File name of `hospital`'s share file inside a ceremony directory.
pub fn share_file_name(hospital: &str) -> String {
    format!("{hospital}.share.json")
}

/// A ceremony's public part: the threshold key and which hospital holds
/// which party index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyKey {
    hospitals: Vec<String>,
    key: ThresholdKey,
}

impl CeremonyKey {
    /// Pairs a dealt key with its hospitals (party order); their numbers
    /// must agree.
    pub fn new(hospitals: Vec<String>, key: ThresholdKey) -> paillier::Result<CeremonyKey> {
        if hospitals.len() != key.parties() as usize {
            return Err(malformed(format!(
                "{} hospitals for a key of {} parties",
                hospitals.len(),
                key.parties()
            )));
        }
        for (i, h) in hospitals.iter().enumerate() {
            validate_hospital_name(h).map_err(|e| malformed(e.to_string()))?;
            if hospitals[..i].contains(h) {
                return Err(malformed(format!("hospital {h:?} is listed twice")));
            }
        }
        Ok(CeremonyKey { hospitals, key })
    }

    /// The hospitals in party order (index 0 is party 1).
    pub fn hospitals(&self) -> &[String] {
        &self.hospitals
    }

    /// The threshold key.
    pub fn key(&self) -> &ThresholdKey {
        &self.key
    }

    /// `hospital`'s party index (1-based).
    pub fn index_of(&self, hospital: &str) -> Option<u32> {
        self.hospitals
            .iter()
            .position(|h| h == hospital)
            .map(|i| i as u32 + 1)
    }

    /// The hospital holding party `index` (1-based).
    pub fn hospital(&self, index: u32) -> Option<&str> {
        index
            .checked_sub(1)
            .and_then(|i| self.hospitals.get(i as usize))
            .map(String::as_str)
    }
}

/// One hospital's share, loaded and checked against the public file.
#[derive(Debug)]
pub struct HospitalShare {
    hospital: String,
    share: KeyShare,
}

impl HospitalShare {
    /// The hospital this share was dealt to.
    pub fn hospital(&self) -> &str {
        &self.hospital
    }

    /// The share (secret; its `Debug` hides the value).
    pub fn share(&self) -> &KeyShare {
        &self.share
    }
}

fn malformed(reason: impl Into<String>) -> paillier::Error {
    paillier::Error::Malformed {
        what: "key ceremony file",
        reason: reason.into(),
    }
}

#[derive(Serialize)]
struct PublicOut<'a> {
    format: &'static str,
    hospitals: &'a [String],
    key: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicIn<'a> {
    format: String,
    hospitals: Vec<String>,
    #[serde(borrow)]
    key: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareIn<'a> {
    format: String,
    hospital: String,
    #[serde(borrow)]
    share: &'a RawValue,
}

/// The public file's text.
pub fn public_to_json(key: &CeremonyKey) -> String {
    let inner = threshold::files::public_to_json(&key.key);
    let inner = RawValue::from_string(inner).expect("serde_json wrote it");
    let mut s = serde_json::to_string_pretty(&PublicOut {
        format: PUBLIC_FORMAT,
        hospitals: &key.hospitals,
        key: &inner,
    })
    .expect("plain data");
    s.push('\n');
    s
}

/// Parses and checks a public file's text (keys of at least 2048 bits).
pub fn public_from_json(text: &str) -> paillier::Result<CeremonyKey> {
    parse_public(text, threshold::files::public_from_json)
}

fn parse_public(
    text: &str,
    inner: fn(&str) -> paillier::Result<ThresholdKey>,
) -> paillier::Result<CeremonyKey> {
    let f: PublicIn = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    if f.format != PUBLIC_FORMAT {
        return Err(malformed(format!(
            "format {:?}, expected {PUBLIC_FORMAT:?}",
            f.format
        )));
    }
    if f.hospitals.len() > threshold::MAX_PARTIES as usize {
        return Err(malformed(format!(
            "{} hospitals, at most {}",
            f.hospitals.len(),
            threshold::MAX_PARTIES
        )));
    }
    CeremonyKey::new(f.hospitals, inner(f.key.get())?)
}

/// `hospital`'s share file text (secret; wiped when dropped).
pub fn share_to_json(hospital: &str, share: &KeyShare) -> Zeroizing<String> {
    let inner = threshold::files::share_to_json(share);
    let head = format!(
        "{{\n  \"format\": {},\n  \"hospital\": {},\n  \"share\": ",
        serde_json::to_string(SHARE_FORMAT).expect("a string"),
        serde_json::to_string(hospital).expect("a string"),
    );
    // Sized once: growing would leave unwiped copies of the share behind.
    let mut s = Zeroizing::new(String::with_capacity(head.len() + inner.len() + 4));
    s.push_str(&head);
    s.push_str(&inner);
    s.push_str("\n}\n");
    s
}

/// Parses a share file's text and checks it against `public`: the share
/// against its verification key, the same threshold key, and the hospital
/// named in the file holding the share's party index.
pub fn share_from_json(text: &str, public: &CeremonyKey) -> paillier::Result<HospitalShare> {
    parse_share(text, public, threshold::files::share_from_json)
}

fn parse_share(
    text: &str,
    public: &CeremonyKey,
    inner: fn(&str) -> paillier::Result<KeyShare>,
) -> paillier::Result<HospitalShare> {
    let f: ShareIn = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    if f.format != SHARE_FORMAT {
        return Err(malformed(format!(
            "format {:?}, expected {SHARE_FORMAT:?}",
            f.format
        )));
    }
    let share = inner(f.share.get())?;
    if share.key() != public.key() {
        return Err(malformed(
            "the share belongs to another threshold key than the public file's",
        ));
    }
    match public.index_of(&f.hospital) {
        Some(i) if i == share.index() => {}
        Some(i) => {
            return Err(malformed(format!(
                "the share is party {}'s, but the public file gives {:?} party {i}",
                share.index(),
                f.hospital
            )))
        }
        None => {
            return Err(malformed(format!(
                "hospital {:?} is not in the public file",
                f.hospital
            )))
        }
    }
    Ok(HospitalShare {
        hospital: f.hospital,
        share,
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// The paths a ceremony for `plan` writes in `dir`: the public file, then
/// each hospital's share file in party order.
pub fn ceremony_paths(dir: &Path, plan: &Plan) -> (PathBuf, Vec<PathBuf>) {
    (
        dir.join(PUBLIC_FILE),
        plan.hospitals()
            .iter()
            .map(|h| dir.join(share_file_name(h)))
            .collect(),
    )
}

/// Fails with [`Error::Exists`] when a file the ceremony would write in `dir`
/// exists: checked before dealing (which takes minutes), and again by
/// [`write_ceremony`]'s `create_new`.
pub fn check_free(dir: &Path, plan: &Plan) -> Result<()> {
    let (public, shares) = ceremony_paths(dir, plan);
    for p in std::iter::once(&public).chain(&shares) {
        if fs::symlink_metadata(p).is_ok() {
            return Err(Error::Exists { path: p.clone() });
        }
    }
    Ok(())
}

fn create_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    node::files::create_new_synced(path, bytes, mode).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists {
                path: path.to_owned(),
            }
        } else {
            io(path)(e)
        }
    })
}

/// What [`deal_into`] dealt and wrote.
#[derive(Debug)]
pub struct Dealt {
    /// The public threshold key.
    pub key: ThresholdKey,
    /// The public file written.
    pub public: PathBuf,
    /// Each hospital's share file, in party order.
    pub shares: Vec<PathBuf>,
    /// How long dealing took (safe primes: seconds to minutes).
    pub dealing: std::time::Duration,
}

/// The whole ceremony for `plan` into `dir`: refuses files that exist before
/// dealing, deals with `rng`, writes the files ([`write_ceremony`]) and drops
/// the shares (wiped), the factorization being gone already. What
/// `key-ceremony deal` does, and what a one-machine trial runs.
pub fn deal_into<R: rand::RngCore + rand::CryptoRng>(
    dir: &Path,
    plan: &Plan,
    rng: &mut R,
) -> Result<Dealt> {
    check_free(dir, plan)?;
    let t0 = std::time::Instant::now();
    let (key, shares) = plan.deal(rng)?;
    let dealing = t0.elapsed();
    let (public, share_paths) = write_ceremony(dir, plan, &key, &shares)?;
    drop(shares);
    Ok(Dealt {
        key,
        public,
        shares: share_paths,
        dealing,
    })
}

/// Writes a dealt ceremony into `dir` (created 0700 if missing): the share
/// files (0600) and the public file (0644), each created new and fsynced,
/// then the directory. On any failure the files written so far are removed
/// and nothing is left half done. Returns the paths written.
pub fn write_ceremony(
    dir: &Path,
    plan: &Plan,
    key: &ThresholdKey,
    shares: &[KeyShare],
) -> Result<(PathBuf, Vec<PathBuf>)> {
    let public = CeremonyKey::new(plan.hospitals().to_vec(), key.clone()).map_err(|source| {
        Error::Content {
            path: dir.join(PUBLIC_FILE),
            source,
        }
    })?;
    assert_eq!(
        shares.len(),
        plan.hospitals().len(),
        "one share per hospital"
    );
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let (public_path, share_paths) = ceremony_paths(dir, plan);
    let mut written: Vec<&Path> = Vec::new();
    let result = (|| {
        for ((h, s), p) in plan.hospitals().iter().zip(shares).zip(&share_paths) {
            debug_assert_eq!(public.index_of(h), Some(s.index()));
            create_new(p, share_to_json(h, s).as_bytes(), 0o600)?;
            written.push(p);
        }
        create_new(&public_path, public_to_json(&public).as_bytes(), 0o644)?;
        written.push(&public_path);
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    })();
    if result.is_err() {
        for p in written {
            let _ = fs::remove_file(p);
        }
    }
    result.map(|()| (public_path.clone(), share_paths.clone()))
}

/// Reads at most [`MAX_FILE_BYTES`] of `path` into a wiped buffer.
fn read_bounded(path: &Path, file: fs::File) -> Result<Zeroizing<String>> {
    let len = file.metadata().map_err(io(path))?.len();
    if len > MAX_FILE_BYTES {
        return Err(Error::Content {
            path: path.to_owned(),
            source: malformed(format!("{len} bytes, at most {MAX_FILE_BYTES}")),
        });
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(len as usize));
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    match std::str::from_utf8(&bytes) {
        Ok(_) => Ok(Zeroizing::new(
            String::from_utf8(std::mem::take(&mut *bytes)).expect("checked"),
        )),
        Err(_) => Err(Error::Content {
            path: path.to_owned(),
            source: malformed("not UTF-8"),
        }),
    }
}

/// Loads and checks a ceremony's public file.
pub fn load_public(path: &Path) -> Result<CeremonyKey> {
    load_public_with(path, threshold::files::public_from_json)
}

fn load_public_with(
    path: &Path,
    inner: fn(&str) -> paillier::Result<ThresholdKey>,
) -> Result<CeremonyKey> {
    let file = fs::File::open(path).map_err(io(path))?;
    let text = read_bounded(path, file)?;
    parse_public(&text, inner).map_err(|source| Error::Content {
        path: path.to_owned(),
        source,
    })
}

/// Loads a hospital's share file, refusing it when group or others may
/// access it, and checks it against `public` (see [`share_from_json`]).
pub fn load_share(path: &Path, public: &CeremonyKey) -> Result<HospitalShare> {
    load_share_with(path, public, threshold::files::share_from_json)
}

fn load_share_with(
    path: &Path,
    public: &CeremonyKey,
    inner: fn(&str) -> paillier::Result<KeyShare>,
) -> Result<HospitalShare> {
    // The mode of the file opened, not of whatever the path names later.
    let file = fs::File::open(path).map_err(io(path))?;
    let mode = file.metadata().map_err(io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let text = read_bounded(path, file)?;
    parse_share(&text, public, inner).map_err(|source| Error::Content {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::sync::OnceLock;

    /// A 2-of-3 key of 512 bits (INSECURE, tests only) for hospitals a, b, c.
    fn dealt() -> &'static (CeremonyKey, Vec<KeyShare>) {
        static K: OnceLock<(CeremonyKey, Vec<KeyShare>)> = OnceLock::new();
        K.get_or_init(|| {
            let mut rng = StdRng::seed_from_u64(14);
            let (k, s) = threshold::deal_insecure_for_tests(512, 2, 3, &mut rng).unwrap();
            let names = ["a", "b", "c"].map(String::from).to_vec();
            (CeremonyKey::new(names, k).unwrap(), s)
        })
    }

    fn small_public(text: &str) -> paillier::Result<CeremonyKey> {
        parse_public(text, threshold::files::public_from_json_insecure_for_tests)
    }

    fn small_share(text: &str, public: &CeremonyKey) -> paillier::Result<HospitalShare> {
        parse_share(
            text,
            public,
            threshold::files::share_from_json_insecure_for_tests,
        )
    }

    #[test]
    fn files_round_trip() {
        let (k, shares) = dealt();
        let k2 = small_public(&public_to_json(k)).unwrap();
        assert_eq!(&k2, k);
        assert_eq!((k2.index_of("b"), k2.hospital(3)), (Some(2), Some("c")));
        let s = small_share(&share_to_json("b", &shares[1]), k).unwrap();
        assert_eq!((s.hospital(), s.share().index()), ("b", 2));
        assert_eq!(s.share().secret(), shares[1].secret());
    }

    #[test]
    fn a_share_under_another_name_or_key_is_refused() {
        let (k, shares) = dealt();
        // b's share claimed by c: the share checks, the name does not.
        let e = small_share(&share_to_json("c", &shares[1]), k).unwrap_err();
        assert!(e.to_string().contains("party 2's"), "{e}");
        let e = small_share(&share_to_json("z", &shares[1]), k).unwrap_err();
        assert!(e.to_string().contains("\"z\" is not in"), "{e}");
        // The same names over another key.
        let mut rng = StdRng::seed_from_u64(15);
        let (other, _) = threshold::deal_insecure_for_tests(512, 2, 3, &mut rng).unwrap();
        let other = CeremonyKey::new(k.hospitals().to_vec(), other).unwrap();
        let e = small_share(&share_to_json("b", &shares[1]), &other).unwrap_err();
        assert!(e.to_string().contains("another threshold key"), "{e}");
    }

    #[test]
    fn malformed_public_files_are_refused() {
        let (k, _) = dealt();
        let good = public_to_json(k);
        for bad in [
            good.replace(PUBLIC_FORMAT, "key-ceremony-public/0"),
            good.replacen("\"a\"", "\"b\"", 1),
            good.replacen("\"a\",", "", 1),
            good.replacen("\"a\"", "\"A\"", 1),
            "{}".to_string(),
        ] {
            assert!(small_public(&bad).is_err(), "{bad}");
        }
        // The 2048-bit floor holds for the ordinary reader.
        let e = public_from_json(&good).unwrap_err();
        assert!(matches!(e, paillier::Error::KeySize { .. }), "{e}");
    }

    #[test]
    fn a_failed_write_leaves_no_share_behind() {
        let (k, shares) = dealt();
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::new(k.hospitals().to_vec(), Some(2), 2048).unwrap();
        // Planted after the check, as a racing process would.
        check_free(dir.path(), &plan).unwrap();
        let planted = dir.path().join(share_file_name("c"));
        fs::write(&planted, "keep me").unwrap();
        let e = write_ceremony(dir.path(), &plan, k.key(), shares).unwrap_err();
        assert!(
            matches!(e, Error::Exists { ref path } if path == &planted),
            "{e}"
        );
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "a and b's shares removed");
        assert_eq!(fs::read_to_string(&planted).unwrap(), "keep me");
        let e = check_free(dir.path(), &plan).unwrap_err();
        assert!(matches!(e, Error::Exists { .. }), "{e}");
    }

    #[test]
    fn loading_checks_the_mode_and_names_the_file() {
        let (k, shares) = dealt();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.share.json");
        create_new(&p, share_to_json("b", &shares[1]).as_bytes(), 0o600).unwrap();
        let inner = threshold::files::share_from_json_insecure_for_tests;
        let s = load_share_with(&p, k, inner).unwrap();
        assert_eq!(s.share().index(), 2);
        let e = create_new(&p, b"x", 0o600).unwrap_err();
        assert!(matches!(e, Error::Exists { ref path } if path == &p), "{e}");
        for mode in [0o640, 0o604, 0o660] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let e = load_share_with(&p, k, inner).unwrap_err();
            assert!(
                matches!(e, Error::TooOpen { mode: m, .. } if m == mode),
                "{e}"
            );
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, "{\"format\": 1}").unwrap();
        let e = load_share_with(&p, k, inner).unwrap_err();
        assert!(matches!(e, Error::Content { .. }), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        let missing = dir.path().join("missing.json");
        let e = load_public(&missing).unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
    }
}
