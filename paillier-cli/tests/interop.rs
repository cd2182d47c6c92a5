//! Interoperability with the real python-paillier 1.5: keys made by each tool
//! used by the other, ciphertexts made by each decrypted by the other, the same
//! arithmetic done on both sides giving the same exponents and printing the
//! same numbers, and decrypted numbers printed exactly as Python prints them.
//!
//! Needs Python with phe 1.5.0 and click (see `interop_util`): missing ones
//! are installed, and the tests fail when that is impossible.

mod interop_util;

use interop_util::{
    args, dir_with, exponent_of, oracle, paillier, paillier_key, paillier_stdin, phe_batch,
    pheutil, pheutil_key, pheutil_stdin, KeyFiles,
};
use num_bigint::{BigInt, RandBigInt};
use paillier::EncodedNumber;
use paillier_cli::phe::{python_float_repr, PheValue};
use std::path::Path;

/// Plaintexts and how Python prints `float(plaintext)`.
const VALUES: &[(&str, &str)] = &[
    ("1.5", "1.5"),
    ("-2.25", "-2.25"),
    ("0.1", "0.1"),
    ("0", "0.0"),
    ("-0.0", "0.0"),
    ("7", "7.0"),
    ("-3e10", "-30000000000.0"),
    ("123456789.123", "123456789.123"),
    ("1e20", "1e+20"),
    ("-1e300", "-1e+300"),
    ("1e-40", "1e-40"),
    ("5e-324", "5e-324"),
];

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write file");
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("read file")
}

/// Checks both directions of encryption under the key in `dir`.
fn encrypt_both_ways(dir: &Path) {
    let mut commands = Vec::new();
    for (i, (plain, _)) in VALUES.iter().enumerate() {
        let ours = paillier(dir, &["encrypt", "public.json", "--", plain]).ok();
        write(dir, &format!("ours{i}.json"), &ours);
        let theirs = format!("theirs{i}.json");
        commands.push(args(&[
            "pheutil",
            "encrypt",
            "--output",
            &theirs,
            "public.json",
            "--",
            plain,
        ]));
        commands.push(args(&[
            "pheutil",
            "decrypt",
            "private.json",
            &format!("ours{i}.json"),
        ]));
    }
    let results = phe_batch(dir, &commands);
    let mut results = results.into_iter();
    for (i, (plain, printed)) in VALUES.iter().enumerate() {
        results.next().expect("encrypt result").ok();
        let by_phe = results.next().expect("decrypt result").ok();
        assert_eq!(
            by_phe.trim_end(),
            *printed,
            "pheutil decrypting our {plain}"
        );
        let (ours, theirs) = (format!("ours{i}.json"), format!("theirs{i}.json"));
        assert_eq!(
            exponent_of(&read(dir, &ours)),
            exponent_of(&read(dir, &theirs)),
            "exponent of {plain}"
        );
        let by_us = paillier(dir, &["decrypt", "private.json", &theirs]).ok();
        assert_eq!(
            by_us.trim_end(),
            *printed,
            "paillier decrypting pheutil's {plain}"
        );
    }
}

#[test]
fn pheutil_keys_work_with_paillier() {
    let keys = pheutil_key();
    let dir = dir_with(keys);
    let d = dir.path();
    // Our extract gives pheutil's public key file byte for byte.
    let extracted = paillier(d, &["extract", "private.json", "-"]).ok();
    assert_eq!(extracted, keys.public);
    encrypt_both_ways(d);
}

#[test]
fn paillier_keys_work_with_pheutil() {
    let keys = paillier_key();
    let dir = dir_with(keys);
    let d = dir.path();
    // pheutil extracts the same public key file from our private key, and phe's
    // own PaillierPrivateKey accepts our primes (p * q == n).
    let results = phe_batch(
        d,
        &[
            args(&["pheutil", "extract", "private.json", "extracted.json"]),
            args(&["check-key", "private.json"]),
        ],
    );
    let [extract, check] = <[_; 2]>::try_from(results).expect("two results");
    extract.ok();
    assert_eq!(read(d, "extracted.json"), keys.public);
    let check = check.ok();
    let check: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(check["bits"], 2048);
    encrypt_both_ways(d);
}

/// One step of the arithmetic script: subcommand, inputs (names of earlier
/// results), plaintext argument.
struct Step {
    name: &'static str,
    command: &'static str,
    inputs: &'static [&'static str],
    plaintext: Option<&'static str>,
}

const fn step(
    name: &'static str,
    command: &'static str,
    inputs: &'static [&'static str],
    plaintext: Option<&'static str>,
) -> Step {
    Step {
        name,
        command,
        inputs,
        plaintext,
    }
}

/// Runs the same arithmetic with both tools (each on its own results) and
/// checks every result against the other tool: same exponent, and all four
/// decryptions (each tool's result, by each tool) print the same number.
fn arithmetic_agrees(keys: &KeyFiles) {
    let dir = dir_with(keys);
    let d = dir.path();
    let steps = [
        step("s1", "add", &["a"], Some("0.1")),
        step("s2", "add", &["b"], Some("-1e-20")),
        step("s3", "multiply", &["a"], Some("0.1")),
        step("s4", "multiply", &["b"], Some("-3")),
        step("s5", "multiply", &["a"], Some("1e-10")),
        step("s6", "addenc", &["s3", "b"], None),
        step("s7", "addenc", &["s5", "s4"], None),
        step("s8", "multiply", &["s6"], Some("-7.5")),
        step("s9", "addenc", &["s8", "s1"], None),
        step("s10", "add", &["s9"], Some("1e15")),
        step("s11", "multiply", &["s2"], Some("0")),
    ];
    // Inputs shared by both chains: a encrypted by pheutil, b by paillier.
    let a = phe_batch(d, &[args(&["pheutil", "encrypt", "public.json", "1.5"])]);
    let a = a.into_iter().next().expect("one result").ok();
    let b = paillier(d, &["encrypt", "public.json", "-2.25"]).ok();
    for tool in ["ours", "phe"] {
        write(d, &format!("{tool}_a.json"), &a);
        write(d, &format!("{tool}_b.json"), &b);
    }
    let command = |s: &Step, tool: &str| {
        let mut c = vec![s.command.to_string()];
        if tool == "phe" {
            c.insert(0, "pheutil".into());
            c.extend(args(&["--output", &format!("phe_{}.json", s.name)]));
        }
        c.push("public.json".into());
        c.extend(s.inputs.iter().map(|i| format!("{tool}_{i}.json")));
        if let Some(p) = s.plaintext {
            c.extend(args(&["--", p]));
        }
        c
    };
    // Our chain, then pheutil's in one Python process.
    for s in &steps {
        let c = command(s, "ours");
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        let out = paillier(d, &c).ok();
        write(d, &format!("ours_{}.json", s.name), &out);
    }
    let phe_chain: Vec<Vec<String>> = steps.iter().map(|s| command(s, "phe")).collect();
    for r in phe_batch(d, &phe_chain) {
        r.ok();
    }
    // Every result decrypted by both tools.
    let mut decrypts = Vec::new();
    for s in &steps {
        for tool in ["ours", "phe"] {
            decrypts.push(args(&[
                "pheutil",
                "decrypt",
                "private.json",
                &format!("{tool}_{}.json", s.name),
            ]));
        }
    }
    let mut by_phe = phe_batch(d, &decrypts).into_iter().map(|r| r.ok());
    for s in &steps {
        let file = |tool: &str| format!("{tool}_{}.json", s.name);
        assert_eq!(
            exponent_of(&read(d, &file("ours"))),
            exponent_of(&read(d, &file("phe"))),
            "exponent after {}",
            s.name
        );
        let printed = [
            by_phe.next().expect("decryption"),
            by_phe.next().expect("decryption"),
            paillier(d, &["decrypt", "private.json", &file("ours")]).ok(),
            paillier(d, &["decrypt", "private.json", &file("phe")]).ok(),
        ];
        assert!(
            printed.iter().all(|p| p == &printed[0]),
            "{}: decryptions differ: {printed:?}",
            s.name
        );
    }
    // Spot-check the values themselves.
    let value = |name: &str| {
        paillier(
            d,
            &["decrypt", "private.json", &format!("ours_{name}.json")],
        )
        .ok()
        .trim_end()
        .to_string()
    };
    assert_eq!(value("s1"), "1.6");
    assert_eq!(value("s4"), "6.75");
    assert_eq!(value("s6"), "-2.1");
    assert_eq!(value("s11"), "0.0");
    assert!(exponent_of(&read(d, "ours_s5.json")) < -32);
}

#[test]
fn arithmetic_agrees_under_a_pheutil_key() {
    arithmetic_agrees(pheutil_key());
}

#[test]
fn arithmetic_agrees_under_a_paillier_key() {
    arithmetic_agrees(paillier_key());
}

#[test]
fn numbers_with_phe_native_exponents() {
    let dir = dir_with(pheutil_key());
    let d = dir.path();
    // What phe's API (not pheutil) writes: exponents above -32, an integer with
    // exponent 0, and one lowered further.
    let cases = [
        ("native.json", args(&["1.5"]), -13, "1.5"),
        ("int.json", args(&["5", "--int"]), 0, "5"),
        ("negint.json", args(&["-12", "--int"]), 0, "-12"),
        ("low.json", args(&["2.5", "--exponent", "-40"]), -40, "2.5"),
    ];
    let made: Vec<Vec<String>> = cases
        .iter()
        .map(|(_, a, _, _)| {
            let mut c = args(&["encrypt", "public.json"]);
            c.extend(a.iter().cloned());
            c
        })
        .collect();
    for ((name, _, e, _), r) in cases.iter().zip(phe_batch(d, &made)) {
        let doc = r.ok();
        assert_eq!(exponent_of(&doc), *e, "{name}");
        write(d, name, &doc);
    }
    let ops = |name: &str| {
        [
            args(&["add", "public.json", name, "0.5"]),
            args(&["multiply", "public.json", name, "3"]),
            args(&["addenc", "public.json", name, "native.json"]),
        ]
    };
    // pheutil: decrypt each, and the three operations on each.
    let mut commands = Vec::new();
    for (name, ..) in &cases {
        commands.push(args(&["pheutil", "decrypt", "private.json", name]));
        for (k, op) in ops(name).into_iter().enumerate() {
            let mut c = args(&["pheutil", &op[0], "--output", &format!("phe_{k}_{name}")]);
            c.extend(op[1..].iter().cloned());
            commands.push(c);
        }
    }
    let mut theirs = phe_batch(d, &commands).into_iter();
    let mut decrypts = Vec::new();
    for (name, _, _, printed) in &cases {
        let ours = paillier(d, &["decrypt", "private.json", name]).ok();
        assert_eq!(ours.trim_end(), *printed);
        assert_eq!(ours, theirs.next().expect("decryption").ok(), "{name}");
        for (k, op) in ops(name).into_iter().enumerate() {
            theirs.next().expect("operation").ok();
            let op: Vec<&str> = op.iter().map(String::as_str).collect();
            let a = paillier(d, &op).ok();
            let b = read(d, &format!("phe_{k}_{name}"));
            // Exponents are lowered exactly as pheutil lowers them.
            assert_eq!(exponent_of(&a), exponent_of(&b), "{op:?}");
            write(d, &format!("ours_{k}_{name}"), &a);
            let by_us = paillier(d, &["decrypt", "private.json", &format!("phe_{k}_{name}")]).ok();
            decrypts.push((format!("ours_{k}_{name}"), by_us));
        }
    }
    // phe's subtraction of a paillier ciphertext and a pheutil one.
    let x = paillier(d, &["encrypt", "public.json", "10"]).ok();
    write(d, "x.json", &x);
    let mut commands: Vec<Vec<String>> = decrypts
        .iter()
        .map(|(f, _)| args(&["pheutil", "decrypt", "private.json", f]))
        .collect();
    commands.push(args(&["sub", "public.json", "x.json", "native.json"]));
    let results = phe_batch(d, &commands);
    let (diff, results) = results.split_last().expect("results");
    for ((f, by_us), r) in decrypts.iter().zip(results) {
        assert_eq!(&r.stdout, by_us, "{f}: {}", r.stderr);
    }
    write(d, "diff.json", &diff.stdout);
    let out = paillier(d, &["decrypt", "private.json", "diff.json"]).ok();
    assert_eq!(out, "8.5\n");
}

#[test]
fn pipelines_mix_the_two_tools() {
    let dir = dir_with(paillier_key());
    let d = dir.path();
    let c = pheutil(d, &["encrypt", "public.json", "3"]).ok();
    let c = paillier_stdin(d, &["multiply", "public.json", "-", "2"], &c).ok();
    let c = pheutil_stdin(d, &["add", "public.json", "-", "0.5"], &c).ok();
    let out = pheutil_stdin(d, &["decrypt", "private.json", "-"], &c).ok();
    assert_eq!(out, "6.5\n");
    let out = paillier_stdin(d, &["decrypt", "private.json", "-"], &c).ok();
    assert_eq!(out, "6.5\n");
}

#[test]
fn floats_print_as_python_prints_them() {
    let mut rng = rand::thread_rng();
    let mut xs: Vec<f64> = (0..4000)
        .map(|_| f64::from_bits(rand::Rng::gen(&mut rng)))
        .filter(|x: &f64| x.is_finite())
        .collect();
    // Decimal-looking values, where ties and short forms are common.
    xs.extend((0..2000).map(|i| {
        let m = rand::Rng::gen_range(&mut rng, 0..10_000_000) as f64;
        m / 10f64.powi(i % 30 - 8)
    }));
    let input: String = xs
        .iter()
        .map(|x| format!("{:016x}\n", x.to_bits()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let want = oracle(dir.path(), &["reprs"], &input).ok();
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(want.len(), xs.len());
    for (x, w) in xs.iter().zip(want) {
        assert_eq!(python_float_repr(*x), w, "bits {:016x}", x.to_bits());
    }
}

#[test]
fn decoding_matches_phe_decode() {
    // Random mantissas up to max_int at exponents from deep subnormal range to
    // positive: checks rounding (ties to even, subnormals), overflow and
    // integer printing against phe's EncodedNumber.decode.
    let (pk, _) = paillier::generate_keypair_insecure_for_tests(1024).unwrap();
    let mut rng = rand::thread_rng();
    let mut cases = Vec::new();
    for i in 0..3000u32 {
        let bits = rand::Rng::gen_range(&mut rng, 1..pk.max_int().bits());
        let mut m = BigInt::from(rng.gen_biguint(bits));
        if i % 5 == 0 {
            // Exactly halfway between two floats: 2^53 + 1 shifted, plus ties.
            m = (BigInt::from((1u64 << 53) + 1) << (i % 200)) + (i % 3);
        }
        if rand::Rng::gen(&mut rng) {
            m = -m;
        }
        let e = rand::Rng::gen_range(&mut rng, -520..8);
        cases.push((m, e));
    }
    let input: String = cases.iter().map(|(m, e)| format!("{m} {e}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let want = oracle(dir.path(), &["decode"], &input).ok();
    let want: Vec<&str> = want.lines().collect();
    assert_eq!(want.len(), cases.len());
    for ((m, e), w) in cases.iter().zip(want) {
        if m.magnitude() > pk.max_int() {
            continue;
        }
        let encoding = if m.sign() == num_bigint::Sign::Minus {
            pk.n() - m.magnitude()
        } else {
            m.magnitude().clone()
        };
        let encoded = EncodedNumber::new(&pk, encoding, *e).unwrap();
        let got = match PheValue::decode(&encoded) {
            Ok(v) => v.to_string(),
            Err(paillier::Error::EncodingOverflow(_)) => "OverflowError".to_string(),
            Err(other) => panic!("{m} {e}: {other}"),
        };
        assert_eq!(got, w, "mantissa {m} exponent {e}");
    }
}

#[test]
fn bench_vs_phe_prints_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let python = interop_util::python().to_string_lossy().into_owned();
    let out = paillier(
        dir.path(),
        &[
            "bench",
            "--bits",
            "2048",
            "--iterations",
            "2",
            "--vs-phe",
            "--python",
            &python,
        ],
    )
    .ok();
    assert!(out.contains("python-paillier 1.5.0"), "{out}");
    let encrypt = out
        .lines()
        .find(|l| l.contains("encrypt f64 (DJN fixed-base)"))
        .unwrap_or_else(|| panic!("no encrypt row in:\n{out}"));
    let cols: Vec<&str> = encrypt.split_whitespace().collect();
    let ratio = cols.last().unwrap().trim_end_matches('x');
    assert!(ratio.parse::<f64>().unwrap() > 0.0, "{encrypt}");
    // A Python without phe is reported, not ignored.
    let err = paillier(
        dir.path(),
        &[
            "bench",
            "--bits",
            "2048",
            "--vs-phe",
            "--python",
            "/nonexistent/python",
        ],
    )
    .fails();
    assert!(err.contains("python-paillier"), "{err}");
}
