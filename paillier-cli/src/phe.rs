//! python-paillier 1.5 (`phe`) file formats, as its `pheutil` command line
//! writes and reads them, so that keys and ciphertexts move freely between
//! python-paillier and this crate.
//!
//! This module owns:
//! - JWK-style keys: public `{"kty": "DAJ", "alg": "PAI-GN1", "key_ops":
//!   ["encrypt"], "n": ..., "kid": ...}` and private `{"kty": "DAJ", "key_ops":
//!   ["decrypt"], "p": ..., "q": ..., "pub": {public}, "kid": ...}`, the numbers
//!   as unpadded base64url of their big-endian bytes ([`PhePublicKey`],
//!   [`PhePrivateKey`]);
//! - ciphertexts `{"v": "<decimal>", "e": <exponent>}` ([`parse_ciphertext`],
//!   [`ciphertext_to_json`]), to which this crate adds an optional
//!   `"key_fingerprint"` (SHA-256 of `n`, hex) so that a ciphertext used with the
//!   wrong key is caught; python-paillier ignores the extra member;
//! - pheutil's conventions: encrypted numbers leave with their exponent lowered
//!   to [`PHEUTIL_EXPONENT`] and freshly obfuscated ([`pheutil_output`]), with
//!   the source of randomness chosen for the caller's workload ([`Randomness`]);
//! - printing a decrypted number exactly as Python's `print` does
//!   ([`PheValue`], [`python_float_repr`]).
//!
//! Parsing validates everything (key sizes and moduli through
//! [`PublicKey::from_n`] and [`PrivateKey::from_primes`], ciphertext range and
//! `gcd(c, n) = 1`, exponent range) and never panics on file contents. The
//! encoding and the arithmetic themselves live in [`paillier::encoding`]; this
//! module does no I/O.

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use num_bigint::{BigInt, BigUint};
use num_traits::Zero;
use paillier::encoding::{EncodedNumber, EncryptedNumber, BASE};
use paillier::{Ciphertext, Error, KeyFingerprint, PrivateKey, PublicKey, Result, MAX_KEY_BITS};
use serde_json::{Map, Value};
use std::fmt;

/// The JWK key type python-paillier uses (`kty`).
pub const KTY: &str = "DAJ";
/// The JWK algorithm of python-paillier's public keys (`alg`).
pub const ALG: &str = "PAI-GN1";
/// The exponent pheutil gives every ciphertext it writes (when the number's
/// own exponent is not already lower).
pub const PHEUTIL_EXPONENT: i32 = -32;
/// The member this crate adds to ciphertext documents: the hex SHA-256 of the
/// key's `n` (see [`KeyFingerprint`]).
pub const FINGERPRINT_MEMBER: &str = "key_fingerprint";
/// Largest document accepted. A private key of [`MAX_KEY_BITS`] is under 5 KiB
/// and a ciphertext under 6 KiB; the bound keeps hostile input cheap to reject.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

const PUBLIC_KEY: &str = "python-paillier public key";
const PRIVATE_KEY: &str = "python-paillier private key";
const CIPHERTEXT: &str = "python-paillier ciphertext";

/// [`Error::Malformed`]: the library's error for bytes or text that do not
/// parse, which file contents that are not pheutil's format are too.
fn malformed(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Malformed {
        what,
        reason: reason.into(),
    }
}

/// pheutil's base64url: URL-safe alphabet, written without padding. Reading
/// accepts padding too, as Python's `urlsafe_b64decode` does after phe pads.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// phe's `util.int_to_base64`: the minimal big-endian bytes, base64url without
/// padding.
pub fn uint_to_base64url(x: &BigUint) -> String {
    BASE64URL.encode(x.to_bytes_be())
}

/// phe's `util.base64_to_int`, strict about the alphabet. `what` names the
/// document in errors, `member` the JSON member.
fn base64url_to_uint(s: &str, what: &'static str, member: &str) -> Result<BigUint> {
    // Four base64 characters per three bytes: a bound on the work before decoding.
    if s.len() > (MAX_KEY_BITS / 8 + 3) / 3 * 4 {
        return Err(malformed(what, format!("\"{member}\" is too long")));
    }
    let bytes = BASE64URL
        .decode(s)
        .map_err(|e| malformed(what, format!("\"{member}\" is not unpadded base64url: {e}")))?;
    let x = BigUint::from_bytes_be(&bytes);
    if x.is_zero() {
        return Err(malformed(what, format!("\"{member}\" is zero")));
    }
    Ok(x)
}

/// Parses a document's text as a JSON object.
fn parse_object(text: &str, what: &'static str) -> Result<Map<String, Value>> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(malformed(
            what,
            format!("document is larger than {MAX_DOCUMENT_BYTES} bytes"),
        ));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(malformed(
            what,
            format!("expected a JSON object, found {}", json_kind(&other)),
        )),
        Err(e) => Err(malformed(what, format!("not valid JSON: {e}"))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_member<'a>(
    map: &'a Map<String, Value>,
    member: &str,
    what: &'static str,
) -> Result<&'a str> {
    match map.get(member) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(malformed(
            what,
            format!("\"{member}\" must be a string, found {}", json_kind(other)),
        )),
        None => Err(malformed(what, format!("missing \"{member}\""))),
    }
}

/// The optional `kid`: a string when present.
fn kid_member(map: &Map<String, Value>, what: &'static str) -> Result<Option<String>> {
    match map.get("kid") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(malformed(
            what,
            format!("\"kid\" must be a string, found {}", json_kind(other)),
        )),
    }
}

fn check_kty(map: &Map<String, Value>, what: &'static str) -> Result<()> {
    let kty = string_member(map, "kty", what)?;
    if kty != KTY {
        return Err(malformed(
            what,
            format!("\"kty\" is {kty:?}, expected {KTY:?} (a python-paillier key)"),
        ));
    }
    Ok(())
}

/// `key_ops` must be a list of strings when present; returns it.
fn key_ops<'a>(map: &'a Map<String, Value>, what: &'static str) -> Result<Option<Vec<&'a str>>> {
    match map.get("key_ops") {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| malformed(what, "\"key_ops\" must be a list of strings"))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(other) => Err(malformed(
            what,
            format!("\"key_ops\" must be a list, found {}", json_kind(other)),
        )),
    }
}

/// A public key with the `kid` of its JWK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhePublicKey {
    key: PublicKey,
    kid: Option<String>,
}

impl PhePublicKey {
    /// Pairs a key with the `kid` its JWK will carry.
    pub fn new(key: PublicKey, kid: Option<String>) -> PhePublicKey {
        PhePublicKey { key, kid }
    }

    /// Parses and validates a pheutil public key (as `pheutil extract` writes).
    ///
    /// A private key document is refused with a message saying so, as pheutil
    /// refuses it (it has no `alg`).
    pub fn from_json(text: &str) -> Result<PhePublicKey> {
        Self::from_map(&parse_object(text, PUBLIC_KEY)?)
    }

    fn from_map(map: &Map<String, Value>) -> Result<PhePublicKey> {
        if ["p", "q", "pub"].iter().any(|m| map.contains_key(*m)) {
            return Err(malformed(
                PUBLIC_KEY,
                "this is a private key (it has \"p\", \"q\" or \"pub\"), where a public key \
                 is expected: extract the public key with `paillier extract`",
            ));
        }
        check_kty(map, PUBLIC_KEY)?;
        let alg = string_member(map, "alg", PUBLIC_KEY)?;
        if alg != ALG {
            return Err(malformed(
                PUBLIC_KEY,
                format!("\"alg\" is {alg:?}, expected {ALG:?}"),
            ));
        }
        key_ops(map, PUBLIC_KEY)?;
        let n = base64url_to_uint(string_member(map, "n", PUBLIC_KEY)?, PUBLIC_KEY, "n")?;
        let key = PublicKey::from_n(n)?;
        Ok(PhePublicKey {
            key,
            kid: kid_member(map, PUBLIC_KEY)?,
        })
    }

    /// The document pheutil writes, laid out as Python's `json.dump` does
    /// (without the trailing newline).
    pub fn to_json(&self) -> String {
        let mut members = vec![
            ("kty", Json::Str(KTY.into())),
            ("alg", Json::Str(ALG.into())),
            ("key_ops", Json::List(vec!["encrypt".into()])),
            ("n", Json::Str(uint_to_base64url(self.key.n()))),
        ];
        if let Some(kid) = &self.kid {
            members.push(("kid", Json::Str(kid.clone())));
        }
        python_json_object(&members)
    }

    /// The key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The JWK's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
}

/// A private key with the `kid`s of its JWK and of the public JWK inside it.
#[derive(Clone, Debug)]
pub struct PhePrivateKey {
    key: PrivateKey,
    kid: Option<String>,
    public: PhePublicKey,
}

impl PhePrivateKey {
    /// Pairs a key with the `kid`s its JWK and embedded public JWK will carry.
    pub fn new(key: PrivateKey, kid: Option<String>, public_kid: Option<String>) -> PhePrivateKey {
        let public = PhePublicKey::new(key.public_key().clone(), public_kid);
        PhePrivateKey { key, kid, public }
    }

    /// Parses and validates a pheutil private key (as `pheutil genpkey` writes):
    /// `p` and `q` distinct primes whose product is the embedded public key's `n`.
    pub fn from_json(text: &str) -> Result<PhePrivateKey> {
        let map = parse_object(text, PRIVATE_KEY)?;
        if !map.contains_key("p") && !map.contains_key("q") && map.contains_key("n") {
            return Err(malformed(
                PRIVATE_KEY,
                "this is a public key (it has \"n\" but no \"p\" and \"q\"), where the private \
                 key is expected: decryption needs the file `genpkey` wrote",
            ));
        }
        check_kty(&map, PRIVATE_KEY)?;
        match key_ops(&map, PRIVATE_KEY)? {
            Some(ops) if ops.contains(&"decrypt") => {}
            _ => return Err(malformed(PRIVATE_KEY, "\"key_ops\" must list \"decrypt\"")),
        }
        let p = base64url_to_uint(string_member(&map, "p", PRIVATE_KEY)?, PRIVATE_KEY, "p")?;
        let q = base64url_to_uint(string_member(&map, "q", PRIVATE_KEY)?, PRIVATE_KEY, "q")?;
        let public = match map.get("pub") {
            Some(Value::Object(m)) => PhePublicKey::from_map(m)?,
            Some(other) => {
                return Err(malformed(
                    PRIVATE_KEY,
                    format!("\"pub\" must be an object, found {}", json_kind(other)),
                ))
            }
            None => return Err(malformed(PRIVATE_KEY, "missing \"pub\"")),
        };
        // Cheap consistency check before the primality tests of from_primes.
        if &(&p * &q) != public.key.n() {
            return Err(Error::InvalidKey(
                "p * q is not the n of the embedded public key",
            ));
        }
        let key = PrivateKey::from_primes(p, q)?;
        Ok(PhePrivateKey {
            key,
            kid: kid_member(&map, PRIVATE_KEY)?,
            public,
        })
    }

    /// The document pheutil writes, laid out as Python's `json.dump` does
    /// (without the trailing newline); `p < q` as python-paillier orders them.
    /// Contains the secret primes.
    pub fn to_json(&self) -> String {
        let (p, q) = if self.key.p() < self.key.q() {
            (self.key.p(), self.key.q())
        } else {
            (self.key.q(), self.key.p())
        };
        let mut public = vec![
            ("kty", Json::Str(KTY.into())),
            ("alg", Json::Str(ALG.into())),
            ("key_ops", Json::List(vec!["encrypt".into()])),
            ("n", Json::Str(uint_to_base64url(self.key.public_key().n()))),
        ];
        if let Some(kid) = &self.public.kid {
            public.push(("kid", Json::Str(kid.clone())));
        }
        let mut members = vec![
            ("kty", Json::Str(KTY.into())),
            ("key_ops", Json::List(vec!["decrypt".into()])),
            ("p", Json::Str(uint_to_base64url(p))),
            ("q", Json::Str(uint_to_base64url(q))),
            ("pub", Json::Object(public)),
        ];
        if let Some(kid) = &self.kid {
            members.push(("kid", Json::Str(kid.clone())));
        }
        python_json_object(&members)
    }

    /// The key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The public key with its own `kid`.
    pub fn public(&self) -> &PhePublicKey {
        &self.public
    }

    /// The JWK's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
}

/// Parses and validates a ciphertext document `{"v": "<decimal>", "e": <int>}`
/// under `pk`: `v` in `[1, n^2)` with `gcd(v, n) = 1`, `e` within the crate's
/// exponent range, and, when the document carries a `key_fingerprint`, that it
/// is `pk`'s (else [`Error::KeyMismatch`]). Other members are ignored, as
/// pheutil ignores them.
pub fn parse_ciphertext(pk: &PublicKey, text: &str) -> Result<EncryptedNumber> {
    let map = parse_object(text, CIPHERTEXT)?;
    if let Some(fp) = map.get(FINGERPRINT_MEMBER) {
        let found = fp
            .as_str()
            .ok_or_else(|| {
                malformed(
                    CIPHERTEXT,
                    format!("\"{FINGERPRINT_MEMBER}\" must be a hex string"),
                )
            })
            .and_then(KeyFingerprint::from_hex)?;
        if found != pk.fingerprint() {
            return Err(Error::KeyMismatch {
                expected: pk.fingerprint(),
                found,
            });
        }
    }
    let v = match map.get("v") {
        Some(Value::String(s)) => parse_decimal(s.trim(), pk)?,
        Some(Value::Number(x)) => match x.as_u64() {
            Some(x) => BigUint::from(x),
            None => {
                return Err(malformed(
                    CIPHERTEXT,
                    "\"v\" must be a non-negative integer written as a decimal string",
                ))
            }
        },
        Some(other) => {
            return Err(malformed(
                CIPHERTEXT,
                format!("\"v\" must be a decimal string, found {}", json_kind(other)),
            ))
        }
        None => return Err(malformed(CIPHERTEXT, "missing \"v\"")),
    };
    let e = match map.get("e") {
        Some(Value::Number(x)) => x
            .as_i64()
            .ok_or_else(|| malformed(CIPHERTEXT, format!("\"e\" must be an integer, found {x}")))?,
        Some(other) => {
            return Err(malformed(
                CIPHERTEXT,
                format!("\"e\" must be an integer, found {}", json_kind(other)),
            ))
        }
        None => return Err(malformed(CIPHERTEXT, "missing \"e\"")),
    };
    let exponent = i32::try_from(e).map_err(|_| Error::ExponentOutOfRange {
        exponent: e,
        min: paillier::encoding::MIN_EXPONENT,
        max: paillier::encoding::MAX_EXPONENT,
    })?;
    let ct = Ciphertext::from_biguint(pk, v)?;
    EncryptedNumber::new(ct, exponent)
}

/// A decimal numeral of at most as many digits as `n^2 - 1` has (bounding the
/// quadratic decimal conversion), as a number.
fn parse_decimal(s: &str, pk: &PublicKey) -> Result<BigUint> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(
            CIPHERTEXT,
            "\"v\" must be a string of decimal digits",
        ));
    }
    // n^2 has at most bits * log10(2) + 1 < bits * 0.30103 + 1 digits.
    let max_digits = pk.n_squared().bits() as usize * 30103 / 100000 + 2;
    if s.trim_start_matches('0').len() > max_digits {
        return Err(Error::InvalidCiphertext("c >= n^2"));
    }
    s.parse::<BigUint>()
        .map_err(|e| malformed(CIPHERTEXT, format!("\"v\": {e}")))
}

/// The ciphertext document as pheutil lays it out, `{"v": "<decimal>", "e":
/// <int>}`, plus this crate's `key_fingerprint` member; no trailing newline.
/// Writes the ciphertext as it is: see [`pheutil_output`] for pheutil's
/// exponent lowering and obfuscation.
pub fn ciphertext_to_json(x: &EncryptedNumber) -> String {
    python_json_object(&[
        ("v", Json::Str(x.ciphertext().value().to_string())),
        ("e", Json::Int(x.exponent().into())),
        (
            FINGERPRINT_MEMBER,
            Json::Str(x.public_key().fingerprint().to_hex()),
        ),
    ])
}

/// Where the fresh randomness of an encryption or an obfuscation comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Randomness {
    /// The key's Damgard-Jurik-Nielsen fixed-base table (the crate's default
    /// path): by far the cheapest per operation once the table exists, but
    /// building it costs tens of milliseconds per key. For processes that
    /// encrypt many numbers under one key.
    FixedBase,
    /// Textbook `r^n mod n^2` with a full-size random `r`: no table, so the
    /// cheapest for a process that encrypts once (a command-line call), and
    /// resting on the standard DCR assumption alone.
    Textbook,
}

impl Randomness {
    fn encrypt(self, pk: &PublicKey, encoded: &EncodedNumber) -> Result<EncryptedNumber> {
        match self {
            Randomness::FixedBase => pk.encrypt_encoded(encoded),
            Randomness::Textbook => {
                let ct = pk.encrypt_raw_textbook(encoded.encoding())?;
                EncryptedNumber::new(ct, encoded.exponent())
            }
        }
    }

    fn rerandomize(self, x: &EncryptedNumber) -> Result<EncryptedNumber> {
        match self {
            Randomness::FixedBase => Ok(x.rerandomize()),
            Randomness::Textbook => {
                let zero = x.public_key().encrypt_raw_textbook(&BigUint::zero())?;
                EncryptedNumber::new(x.ciphertext().add(&zero)?, x.exponent())
            }
        }
    }
}

/// pheutil's `serialise_encrypted`: lowers the exponent to
/// [`PHEUTIL_EXPONENT`] when it is higher, and obfuscates (re-randomizes) the
/// ciphertext, as `EncryptedNumber.ciphertext(be_secure=True)` does before a
/// number leaves the process.
pub fn pheutil_output(x: &EncryptedNumber, randomness: Randomness) -> Result<EncryptedNumber> {
    let lowered = if x.exponent() > PHEUTIL_EXPONENT {
        x.decrease_exponent_to(PHEUTIL_EXPONENT)?
    } else {
        x.clone()
    };
    randomness.rerandomize(&lowered)
}

/// pheutil's `encrypt`: `float(PLAINTEXT)` encoded as phe does, then lowered to
/// [`PHEUTIL_EXPONENT`]. Encoding directly at the lower exponent gives the same
/// encoding, with the overflow check done at the final exponent (phe checks
/// before lowering and could wrap silently).
pub fn pheutil_encrypt(pk: &PublicKey, x: f64, randomness: Randomness) -> Result<EncryptedNumber> {
    let encoded = EncodedNumber::encode_f64(pk, x, Some(PHEUTIL_EXPONENT))?;
    randomness.encrypt(pk, &encoded)
}

/// A decrypted python-paillier number as phe's `EncodedNumber.decode` returns
/// it: an exact integer when the exponent is non-negative, else a float.
#[derive(Clone, Debug, PartialEq)]
pub enum PheValue {
    /// `mantissa * 16^exponent`, exact (Python `int`).
    Int(BigInt),
    /// `mantissa / 16^-exponent`, correctly rounded (Python `float`).
    Float(f64),
}

impl PheValue {
    /// Decodes an encoded number as phe does; overflow (an encoding between
    /// `max_int` and `n - max_int`, or a value beyond the `f64` range) is an error.
    pub fn decode(x: &EncodedNumber) -> Result<PheValue> {
        if x.exponent() >= 0 {
            let scale = BigUint::from(BASE).pow(x.exponent().unsigned_abs());
            Ok(PheValue::Int(x.mantissa()? * BigInt::from(scale)))
        } else {
            x.decode_f64().map(PheValue::Float)
        }
    }

    /// The value as an `f64` (an integer beyond 2^53 rounded, beyond the `f64`
    /// range infinite).
    pub fn to_f64(&self) -> f64 {
        match self {
            PheValue::Int(i) => num_traits::ToPrimitive::to_f64(i).unwrap_or(f64::NAN),
            PheValue::Float(x) => *x,
        }
    }
}

impl fmt::Display for PheValue {
    /// What Python's `print` shows: the integer, or the float's `repr`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PheValue::Int(i) => write!(f, "{i}"),
            PheValue::Float(x) => f.write_str(&python_float_repr(*x)),
        }
    }
}

/// Decrypts and decodes as pheutil's `decrypt` does.
pub fn decrypt(sk: &PrivateKey, x: &EncryptedNumber) -> Result<PheValue> {
    PheValue::decode(&sk.decrypt_encoded(x)?)
}

/// Python's `repr(float)`: the shortest decimal that reads back as `x` (nearest
/// to `x` among those, ties to even), in positional notation for decimal
/// exponents -4 to 15 (`0.0001`, `1e+16`, `100.0`), else scientific with a
/// signed exponent of at least two digits (`1e-05`).
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = shortest_scientific(x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!(
            "{sign}{first}{dot}{rest}e{exp_sign}{:02}",
            exp.unsigned_abs()
        )
    } else if exp < 0 {
        let zeros = "0".repeat(exp.unsigned_abs() as usize - 1);
        format!("{sign}0.{zeros}{digits}")
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            let zeros = "0".repeat(int_len - digits.len());
            format!("{sign}{digits}{zeros}.0")
        } else {
            let (int_part, frac) = digits.split_at(int_len);
            format!("{sign}{int_part}.{frac}")
        }
    }
}

/// The shortest scientific form that reads back as `x`, nearest to `x` among
/// those with ties to even, as Python picks. Rust's `{:e}` finds the shortest
/// length but breaks an exact tie upwards; its fixed-precision form rounds
/// exactly with ties to even, so it is used at that length when it reads back.
fn shortest_scientific(x: f64) -> String {
    let shortest = format!("{x:e}");
    let significant = shortest
        .split_once('e')
        .map_or(0, |(m, _)| m.chars().filter(char::is_ascii_digit).count());
    let precision = significant.saturating_sub(1);
    let nearest = format!("{x:.precision$e}");
    if nearest.parse::<f64>() == Ok(x) {
        nearest
    } else {
        shortest
    }
}

/// A JSON value for [`python_json_object`].
enum Json {
    Str(String),
    Int(i64),
    List(Vec<String>),
    Object(Vec<(&'static str, Json)>),
}

/// Python's `json.dumps` layout (`", "` and `": "` separators, members in the
/// given order, non-ASCII escaped as `\uXXXX`), so our files match pheutil's
/// byte for byte apart from the values.
fn python_json_object(members: &[(&str, Json)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_python_json_string(&mut out, name);
        out.push_str(": ");
        match value {
            Json::Str(s) => push_python_json_string(&mut out, s),
            Json::Int(x) => out.push_str(&x.to_string()),
            Json::List(items) => {
                out.push('[');
                for (j, item) in items.iter().enumerate() {
                    if j > 0 {
                        out.push_str(", ");
                    }
                    push_python_json_string(&mut out, item);
                }
                out.push(']');
            }
            Json::Object(inner) => out.push_str(&python_json_object(inner)),
        }
    }
    out.push('}');
    out
}

/// A JSON string as Python's `json.dumps` (`ensure_ascii=True`) writes it.
fn push_python_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// One 2048-bit key pair for the whole module (the formats refuse smaller keys).
    fn keys() -> &'static (PublicKey, PrivateKey) {
        static KEYS: OnceLock<(PublicKey, PrivateKey)> = OnceLock::new();
        KEYS.get_or_init(|| paillier::generate_keypair(2048).expect("2048-bit key generation"))
    }

    #[test]
    fn base64url_matches_phe_vectors() {
        // phe.util.int_to_base64 of 1, 255, 256, 2^64 + 1 and 0xfbff.
        let cases: [(BigUint, &str); 5] = [
            (BigUint::from(1u32), "AQ"),
            (BigUint::from(255u32), "_w"),
            (BigUint::from(256u32), "AQA"),
            ((BigUint::from(1u32) << 64usize) + 1u32, "AQAAAAAAAAAB"),
            (BigUint::from(0xfbffu32), "-_8"),
        ];
        for (x, s) in cases {
            assert_eq!(uint_to_base64url(&x), s);
            assert_eq!(base64url_to_uint(s, PUBLIC_KEY, "n").unwrap(), x);
        }
        // Padding is accepted; the standard alphabet and garbage are not.
        assert_eq!(
            base64url_to_uint("AQA=", PUBLIC_KEY, "n").unwrap(),
            BigUint::from(256u32)
        );
        for bad in ["+w", "/w", "A", "A?", "AA", ""] {
            assert!(base64url_to_uint(bad, PUBLIC_KEY, "n").is_err(), "{bad}");
        }
    }

    #[test]
    fn python_repr_known_answers() {
        // Python 3.11's repr of each value.
        let cases: [(f64, &str); 18] = [
            (1.0, "1.0"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (-2.25, "-2.25"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e100, "1e+100"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            // An exact tie at the shortest length: Python rounds to even.
            (-(201562347225087.0 + 0.625), "-201562347225087.62"),
            (1.275, "1.275"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float_repr(x), want, "{x:e}");
        }
    }

    proptest! {
        #[test]
        fn python_repr_reads_back(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let s = python_float_repr(x);
            prop_assert_eq!(s.parse::<f64>().unwrap().to_bits(), x.to_bits());
            // No more digits than Rust's shortest form.
            let digits = |t: &str| t.split(['e', 'E']).next().unwrap()
                .chars().filter(char::is_ascii_digit).collect::<String>()
                .trim_start_matches('0').trim_end_matches('0').len();
            let shortest = format!("{x:e}");
            prop_assert!(digits(&s) <= digits(&shortest).max(1), "{} vs {}", s, shortest);
        }
    }

    #[test]
    fn python_json_layout() {
        let s = python_json_object(&[
            ("a", Json::Str("x\"y\\é😀\n".into())),
            ("b", Json::Int(-32)),
            ("c", Json::List(vec!["encrypt".into(), "d".into()])),
            ("d", Json::Object(vec![("e", Json::Int(1))])),
        ]);
        // json.dumps({"a": "x\"y\\é😀\n", "b": -32, "c": ["encrypt", "d"], "d": {"e": 1}})
        assert_eq!(
            s,
            r#"{"a": "x\"y\\\u00e9\ud83d\ude00\n", "b": -32, "c": ["encrypt", "d"], "d": {"e": 1}}"#
        );
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["a"], "x\"y\\é😀\n");
    }

    #[test]
    fn keys_round_trip() {
        let (pk, sk) = keys();
        let public = PhePublicKey::new(pk.clone(), Some("public ✓".into()));
        let back = PhePublicKey::from_json(&public.to_json()).unwrap();
        assert_eq!(back, public);
        let private = PhePrivateKey::new(sk.clone(), Some("private".into()), Some("pub".into()));
        let text = private.to_json();
        let back = PhePrivateKey::from_json(&text).unwrap();
        assert_eq!(back.key().public_key(), pk);
        assert_eq!(back.kid(), Some("private"));
        assert_eq!(back.public().kid(), Some("pub"));
        assert!(back.key().p() < back.key().q(), "written with p < q");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kty"], "DAJ");
        assert_eq!(v["key_ops"][0], "decrypt");
        assert_eq!(v["pub"]["alg"], "PAI-GN1");
        // Without kid, the member is left out.
        let bare = PhePublicKey::new(pk.clone(), None).to_json();
        assert!(!bare.contains("kid"));
        assert_eq!(PhePublicKey::from_json(&bare).unwrap().kid(), None);
    }

    fn public_doc(pk: &PublicKey) -> Value {
        serde_json::from_str(&PhePublicKey::new(pk.clone(), None).to_json()).unwrap()
    }

    fn err_text(r: Result<impl fmt::Debug>) -> String {
        r.expect_err("must be rejected").to_string()
    }

    #[test]
    fn public_key_rejections() {
        let (pk, sk) = keys();
        assert!(err_text(PhePublicKey::from_json("{")).contains("not valid JSON"));
        assert!(err_text(PhePublicKey::from_json("[1]")).contains("expected a JSON object"));
        let mut doc = public_doc(pk);
        doc["kty"] = "RSA".into();
        assert!(err_text(PhePublicKey::from_json(&doc.to_string())).contains("\"kty\" is \"RSA\""));
        let mut doc = public_doc(pk);
        doc["alg"] = "RS256".into();
        assert!(err_text(PhePublicKey::from_json(&doc.to_string())).contains("\"alg\""));
        let mut doc = public_doc(pk);
        doc.as_object_mut().unwrap().remove("alg");
        assert!(err_text(PhePublicKey::from_json(&doc.to_string())).contains("missing \"alg\""));
        let mut doc = public_doc(pk);
        doc["n"] = 12.into();
        assert!(
            err_text(PhePublicKey::from_json(&doc.to_string())).contains("\"n\" must be a string")
        );
        let mut doc = public_doc(pk);
        doc["n"] = "not*base64".into();
        assert!(err_text(PhePublicKey::from_json(&doc.to_string())).contains("base64url"));
        let mut doc = public_doc(pk);
        doc["n"] = uint_to_base64url(&(pk.n() + 1u32)).into();
        assert!(err_text(PhePublicKey::from_json(&doc.to_string())).contains("even"));
        let mut doc = public_doc(pk);
        doc["n"] = uint_to_base64url(&((BigUint::from(1u32) << 1023usize) + 1u32)).into();
        assert!(err_text(PhePublicKey::from_json(&doc.to_string())).contains("1024"));
        let mut doc = public_doc(pk);
        doc["kid"] = 5.into();
        assert!(err_text(PhePublicKey::from_json(&doc.to_string())).contains("\"kid\""));
        let private = PhePrivateKey::new(sk.clone(), None, None).to_json();
        assert!(err_text(PhePublicKey::from_json(&private)).contains("private key"));
        let huge = format!("{{\"kid\": \"{}\"}}", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(err_text(PhePublicKey::from_json(&huge)).contains("larger than"));
    }

    #[test]
    fn private_key_rejections() {
        let (pk, sk) = keys();
        let good: Value =
            serde_json::from_str(&PhePrivateKey::new(sk.clone(), None, None).to_json()).unwrap();
        let public = PhePublicKey::new(pk.clone(), None).to_json();
        assert!(err_text(PhePrivateKey::from_json(&public)).contains("this is a public key"));
        let mut doc = good.clone();
        doc["key_ops"] = serde_json::json!(["encrypt"]);
        assert!(err_text(PhePrivateKey::from_json(&doc.to_string())).contains("decrypt"));
        let mut doc = good.clone();
        doc["kty"] = "EC".into();
        assert!(err_text(PhePrivateKey::from_json(&doc.to_string())).contains("kty"));
        let mut doc = good.clone();
        doc.as_object_mut().unwrap().remove("pub");
        assert!(err_text(PhePrivateKey::from_json(&doc.to_string())).contains("missing \"pub\""));
        let mut doc = good.clone();
        doc["q"] = doc["p"].clone();
        assert!(err_text(PhePrivateKey::from_json(&doc.to_string())).contains("p * q"));
        // Another key's public part.
        let (other, _) = paillier::generate_keypair(2048).unwrap();
        let mut doc = good.clone();
        doc["pub"] = public_doc(&other);
        assert!(err_text(PhePrivateKey::from_json(&doc.to_string())).contains("p * q"));
        // p, q swapped are still fine.
        let mut doc = good.clone();
        let p = doc["p"].clone();
        doc["p"] = doc["q"].clone();
        doc["q"] = p;
        assert!(PhePrivateKey::from_json(&doc.to_string()).is_ok());
    }

    #[test]
    fn ciphertext_round_trip_and_exponents() {
        let (pk, sk) = keys();
        for (i, x) in [0.0, 1.5, -2.25, 0.1, 1e-40, -3e10, 1e300]
            .into_iter()
            .enumerate()
        {
            let how = [Randomness::FixedBase, Randomness::Textbook][i % 2];
            let c = pheutil_encrypt(pk, x, how).unwrap();
            assert!(c.exponent() <= PHEUTIL_EXPONENT);
            let text = ciphertext_to_json(&c);
            let back = parse_ciphertext(pk, &text).unwrap();
            assert_eq!(back, c);
            assert_eq!(decrypt(sk, &back).unwrap(), PheValue::Float(x));
        }
        // 1e-40 keeps its own exponent: frexp gives -132, floor((-132 - 53) / 4) = -47.
        assert_eq!(
            pheutil_encrypt(pk, 1e-40, Randomness::Textbook)
                .unwrap()
                .exponent(),
            -47
        );
        // A number with a high exponent leaves lowered to -32 and re-randomized.
        let int = pk.encrypt_i64(-7).unwrap();
        assert_eq!(int.exponent(), 0);
        assert_eq!(decrypt(sk, &int).unwrap(), PheValue::Int(BigInt::from(-7)));
        for how in [Randomness::FixedBase, Randomness::Textbook] {
            let out = pheutil_output(&int, how).unwrap();
            assert_eq!(out.exponent(), -32);
            assert_ne!(out.ciphertext().value(), int.ciphertext().value());
            assert_eq!(decrypt(sk, &out).unwrap(), PheValue::Float(-7.0));
            assert_eq!(decrypt(sk, &out).unwrap().to_string(), "-7.0");
            // Obfuscating again changes the ciphertext, not the number.
            let again = pheutil_output(&out, how).unwrap();
            assert_ne!(again.ciphertext().value(), out.ciphertext().value());
            assert_eq!(decrypt(sk, &again).unwrap().to_string(), "-7.0");
        }
    }

    fn ct_doc(v: &str, e: &str) -> String {
        format!("{{\"v\": {v}, \"e\": {e}}}")
    }

    #[test]
    fn ciphertext_rejections() {
        let (pk, _) = keys();
        let c = pheutil_encrypt(pk, 1.0, Randomness::Textbook).unwrap();
        let v = format!("\"{}\"", c.ciphertext().value());
        assert!(parse_ciphertext(pk, &ct_doc(&v, "-32")).is_ok());
        assert!(err_text(parse_ciphertext(pk, "nope")).contains("not valid JSON"));
        assert!(err_text(parse_ciphertext(pk, "{\"e\": -32}")).contains("missing \"v\""));
        assert!(
            err_text(parse_ciphertext(pk, &format!("{{\"v\": {v}}}"))).contains("missing \"e\"")
        );
        assert!(err_text(parse_ciphertext(pk, &ct_doc("\"12a\"", "-32"))).contains("decimal"));
        assert!(err_text(parse_ciphertext(pk, &ct_doc("\"-5\"", "-32"))).contains("decimal"));
        assert!(err_text(parse_ciphertext(pk, &ct_doc("1.5", "-32"))).contains("decimal"));
        assert!(err_text(parse_ciphertext(pk, &ct_doc("\"0\"", "-32"))).contains("c = 0"));
        let n2 = format!("\"{}\"", pk.n_squared());
        assert!(err_text(parse_ciphertext(pk, &ct_doc(&n2, "-32"))).contains("n^2"));
        let long = format!("\"{}\"", "9".repeat(5000));
        assert!(err_text(parse_ciphertext(pk, &ct_doc(&long, "-32"))).contains("n^2"));
        let n = format!("\"{}\"", pk.n());
        assert!(err_text(parse_ciphertext(pk, &ct_doc(&n, "-32"))).contains("gcd"));
        assert!(err_text(parse_ciphertext(pk, &ct_doc(&v, "5000"))).contains("out of range"));
        assert!(
            err_text(parse_ciphertext(pk, &ct_doc(&v, "-99999999999"))).contains("out of range")
        );
        assert!(err_text(parse_ciphertext(pk, &ct_doc(&v, "-32.5"))).contains("integer"));
        assert!(err_text(parse_ciphertext(pk, &ct_doc(&v, "\"-32\""))).contains("integer"));
        // A ciphertext under another key, caught by its fingerprint.
        let (other, _) = paillier::generate_keypair(2048).unwrap();
        let foreign =
            ciphertext_to_json(&pheutil_encrypt(&other, 1.0, Randomness::FixedBase).unwrap());
        let e = parse_ciphertext(pk, &foreign).unwrap_err();
        assert!(matches!(e, Error::KeyMismatch { .. }), "{e}");
        let bad_fp = format!("{{\"v\": {v}, \"e\": -32, \"key_fingerprint\": \"zz\"}}");
        assert!(err_text(parse_ciphertext(pk, &bad_fp)).contains("fingerprint"));
    }

    #[test]
    fn decode_overflow_is_an_error() {
        let (pk, sk) = keys();
        // An encoding in the band between max_int and n - max_int.
        let middle = pk.n() / 2u32;
        let c = EncryptedNumber::new(pk.encrypt_raw(&middle).unwrap(), -32).unwrap();
        assert!(matches!(decrypt(sk, &c), Err(Error::EncodingOverflow(_))));
        // max_int at exponent 0 prints as an exact integer, at -1 it is a float
        // far beyond f64: an error, as Python's int / int raises OverflowError.
        let big = EncryptedNumber::new(pk.encrypt_raw(pk.max_int()).unwrap(), 0).unwrap();
        assert_eq!(
            decrypt(sk, &big).unwrap(),
            PheValue::Int(BigInt::from(pk.max_int().clone()))
        );
        let big = EncryptedNumber::new(pk.encrypt_raw(pk.max_int()).unwrap(), -1).unwrap();
        assert!(matches!(decrypt(sk, &big), Err(Error::EncodingOverflow(_))));
    }
}
