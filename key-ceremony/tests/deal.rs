//! The `key-ceremony` binary as a process: the files it writes and their
//! modes, its refusals (before any dealing), and a round trip through the
//! files it wrote: encrypt, partial decryptions from `t` share files,
//! combine.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use key_ceremony::files::{self, PUBLIC_FILE};
use key_ceremony::Error;
use num_bigint::BigUint;

fn ceremony(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_key-ceremony"))
        .args(args)
        .output()
        .expect("run key-ceremony")
}

fn refused(args: &[&str]) -> String {
    let out = ceremony(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn deals_files_that_decrypt_with_any_two_of_three_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ceremony");
    let d = dir.to_str().unwrap();
    let names = ["hospital-1", "hospital-2", "hospital-3"];
    let out = ceremony(&[
        "deal",
        "--hospitals",
        "hospital-1,hospital-2,hospital-3",
        "--key-bits",
        "2048",
        "--out",
        d,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2-of-3"),
        "the default is the majority: {stdout}"
    );

    // Files and modes: the directory and the shares owner-only, the public
    // file readable by all; nothing else.
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(PUBLIC_FILE)), 0o644);
    let mut listed: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|h| files::share_file_name(h)).collect();
    expected.push(PUBLIC_FILE.into());
    expected.sort();
    assert_eq!(listed, expected);
    for h in names {
        assert_eq!(mode(&dir.join(files::share_file_name(h))), 0o600, "{h}");
    }

    // The files load, each share under its hospital's party index.
    let public = files::load_public(&dir.join(PUBLIC_FILE)).unwrap();
    assert_eq!(public.hospitals(), names);
    assert_eq!(public.key().threshold(), 2);
    assert!(stdout.contains(&public.key().public_key().fingerprint().to_string()));
    let shares: Vec<_> = names
        .iter()
        .map(|h| files::load_share(&dir.join(files::share_file_name(h)), &public).unwrap())
        .collect();
    for (i, s) in shares.iter().enumerate() {
        assert_eq!((s.hospital(), s.share().index()), (names[i], i as u32 + 1));
    }

    // Round trip: any two shares decrypt a sum, one does not.
    let key = public.key();
    let pk = key.public_key();
    let a = pk.encrypt_raw(&BigUint::from(1_000_001u32)).unwrap();
    let b = pk.encrypt_raw(&BigUint::from(2_345u32)).unwrap();
    let sum = a.add(&b).unwrap();
    let mut rng = rand::rngs::OsRng;
    let parts: Vec<_> = shares
        .iter()
        .map(|s| s.share().partial_decrypt(&sum, &mut rng).unwrap())
        .collect();
    for pair in [[0, 1], [0, 2], [1, 2]] {
        let chosen = [parts[pair[0]].clone(), parts[pair[1]].clone()];
        assert_eq!(
            key.combine(&sum, &chosen).unwrap(),
            BigUint::from(1_002_346u32),
            "{pair:?}"
        );
    }
    let e = key.combine(&sum, &parts[..1]).unwrap_err();
    assert!(
        matches!(e, paillier::Error::TooFewShares { needed: 2, got: 1 }),
        "{e}"
    );

    // A share file others may read is refused, naming the file.
    let loose = dir.join(files::share_file_name("hospital-2"));
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    let e = files::load_share(&loose, &public).unwrap_err();
    assert!(matches!(e, Error::TooOpen { mode: 0o644, .. }), "{e}");
    assert!(e.to_string().contains(&loose.display().to_string()), "{e}");

    // A second ceremony into the same directory is refused before dealing,
    // naming the file, and changes nothing.
    let before = fs::read(dir.join(PUBLIC_FILE)).unwrap();
    let t0 = Instant::now();
    let err = refused(&[
        "deal",
        "--hospitals",
        "hospital-1,hospital-2,hospital-3",
        "--out",
        d,
    ]);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "refused before dealing"
    );
    assert!(err.contains("exists") && err.contains(PUBLIC_FILE), "{err}");
    assert_eq!(fs::read(dir.join(PUBLIC_FILE)).unwrap(), before);
}

#[test]
fn unusable_ceremonies_are_refused_before_dealing_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let o = out.to_str().unwrap();
    let three = "hospital-1,hospital-2,hospital-3";
    let cases: [(&[&str], &str); 7] = [
        (&["--hospitals", three, "--threshold", "1"], "at least 2"),
        (&["--hospitals", three, "--threshold", "3"], "at most 2"),
        (&["--hospitals", "hospital-1,hospital-2"], "at least 3"),
        (&["--hospitals", "a,b,a"], "\"a\" is named twice"),
        (&["--hospitals", "a,B,c"], "invalid hospital name \"B\""),
        (
            &["--hospitals", three, "--key-bits", "1024"],
            "key size 1024",
        ),
        (&["--hospitals", "a,../b,c"], "invalid hospital name"),
    ];
    for (args, says) in cases {
        let mut all = vec!["deal", "--out", o];
        all.extend_from_slice(args);
        let t0 = Instant::now();
        let err = refused(&all);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{args:?}: refused before dealing"
        );
        assert!(!out.exists(), "{args:?}: nothing written");
    }
    // One existing share file: refused, naming it, nothing else written.
    fs::create_dir(&out).unwrap();
    let planted = out.join(files::share_file_name("hospital-3"));
    fs::write(&planted, "keep me").unwrap();
    let err = refused(&["deal", "--hospitals", three, "--out", o]);
    assert!(err.contains(&planted.display().to_string()), "{err}");
    assert_eq!(fs::read_to_string(&planted).unwrap(), "keep me");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
}
