"""Generates the known-answer vectors in this directory, independently of the
Rust code: raw Paillier with Python's built-in pow (cross-checked against
python-paillier's raw_encrypt / raw_decrypt), and encoding / arithmetic
results from python-paillier 1.5 itself.

Run once (needs `pip install phe==1.5.0`):  python gen_vectors.py
The outputs are committed; tests read them, they never run this script.
"""
import json
import random

from phe import paillier
from phe.encoding import EncodedNumber

rng = random.Random(20261123)


def is_probable_prime(n, rounds=40):
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        a = rng.randrange(2, n - 1)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def prime(bits):
    while True:
        c = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if is_probable_prime(c):
            return c


def raw_vectors(bits):
    p, q = prime(bits // 2), prime(bits // 2)
    n = p * q
    n2 = n * n
    pk = paillier.PaillierPublicKey(n)
    sk = paillier.PaillierPrivateKey(pk, p, q)
    cases = []
    for m in [0, 1, 2, 42, n // 2, n - 1] + [rng.randrange(n) for _ in range(4)]:
        while True:
            r = rng.randrange(1, n)
            if __import__("math").gcd(r, n) == 1:
                break
        c = (1 + m * n) * pow(r, n, n2) % n2
        assert c == pk.raw_encrypt(m, r_value=r), "phe disagrees"
        assert sk.raw_decrypt(c) == m
        cases.append({"m": str(m), "r": str(r), "c": str(c)})
    return {"bits": bits, "p": str(p), "q": str(q), "n": str(n), "cases": cases}


def encoding_vectors():
    p, q = prime(512), prime(512)
    n = p * q
    pk = paillier.PaillierPublicKey(n)
    sk = paillier.PaillierPrivateKey(pk, p, q)
    floats = [0.0, -0.0, 1.0, -1.0, 0.5, 0.1, -0.1, 3.141592653589793, 1e-5, -2.5e-8,
              123456.789, -987654.321, 1e100, -1e300, 1.7976931348623157e308,
              2.2250738585072014e-308, 5e-324, 1e-320, 0.30000000000000004, 2.0 ** 60]
    ints = [0, 1, -1, 15, 16, -17, 2 ** 53 + 1, -(2 ** 62), 2 ** 63 - 1, -(2 ** 63)]
    enc = []
    for x in floats:
        e = EncodedNumber.encode(pk, x)
        enc.append({"kind": "f64", "x": repr(x), "encoding": str(e.encoding), "exponent": e.exponent,
                    "decoded": repr(float(e.decode()))})
    for x in ints:
        e = EncodedNumber.encode(pk, x)
        enc.append({"kind": "i64", "x": str(x), "encoding": str(e.encoding), "exponent": e.exponent,
                    "decoded": repr(float(e.decode()))})
    # max_exponent (the path _add_scalar takes).
    for x, me in [(0.5, -20), (3, -2), (-7.25, -15), (1e-3, -30)]:
        e = EncodedNumber.encode(pk, x, max_exponent=me)
        kind = "i64" if isinstance(x, int) else "f64"
        enc.append({"kind": kind, "x": repr(x) if kind == "f64" else str(x), "max_exponent": me,
                    "encoding": str(e.encoding), "exponent": e.exponent,
                    "decoded": repr(float(e.decode()))})

    ops = []
    pairs = [(1.5, 2.25), (0.1, -0.2), (3, 0.5), (-7, 11), (1e-5, 123456.0), (2.5, -3),
             (-0.0001, 1e10), (12345, -2.0 ** -20)]
    for a, b in pairs:
        ea, eb = pk.encrypt(a), pk.encrypt(b)
        results = {
            "add": ea + eb,
            "sub": ea - eb,
            "add_scalar": ea + b,
            "mul_scalar": ea * b,
            "neg": ea * -1,
        }
        for op, res in results.items():
            d = sk.decrypt_encoded(res)
            ops.append({"op": op, "a": repr(a), "a_int": isinstance(a, int), "b": repr(b),
                        "b_int": isinstance(b, int), "encoding": str(d.encoding),
                        "exponent": d.exponent, "decoded": repr(float(d.decode()))})
    return {"p": str(p), "q": str(q), "n": str(n), "max_int": str(pk.max_int),
            "encodings": enc, "ops": ops}


if __name__ == "__main__":
    with open("kat_raw.json", "w") as f:
        json.dump({"keys": [raw_vectors(1024), raw_vectors(2048)]}, f, indent=1)
    with open("phe_encoding.json", "w") as f:
        json.dump(encoding_vectors(), f, indent=1)
