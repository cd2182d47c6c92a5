#!/usr/bin/env python3
"""Time python-paillier 1.5 operations for `paillier bench --vs-phe`.

Prints one JSON object on stdout:
  {"phe": "1.5.0", "gmpy2": true, "bits": 2048,
   "ops": {"keygen": ms, "encrypt": ms, "decrypt": ms, "add": ms, "mul_f64": ms}}
Each figure is the median over --samples samples of the time of one operation,
a sample being a batch of operations long enough to time reliably. The
operations are the ones `paillier bench` times on its side: generate a key pair,
encrypt a float (phe's `encrypt`, which also obfuscates), decrypt and decode,
add two ciphertexts of equal exponent, multiply a ciphertext by a float.
"""
import argparse
import json
import random
import statistics
import sys
import time

import phe
from phe import util


def median_ms(op, samples, min_sample_s=0.02):
    """Median time of one `op()` call in milliseconds."""
    start = time.perf_counter()
    op()
    single = max(time.perf_counter() - start, 1e-9)
    batch = max(1, int(min_sample_s / single))
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(batch):
            op()
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--keygen-samples", type=int, default=5)
    args = ap.parse_args()

    rng = random.Random(7)
    keygen = median_ms(lambda: phe.generate_paillier_keypair(n_length=args.bits),
                       args.keygen_samples, min_sample_s=0)
    pub, priv = phe.generate_paillier_keypair(n_length=args.bits)
    xs = [rng.uniform(-1e3, 1e3) for _ in range(64)]
    # pheutil's shape (exponent -32) for all, so that adding two of them is a
    # single multiplication mod n^2, without aligning exponents.
    encs = [pub.encrypt(x).decrease_exponent_to(-32) for x in xs]
    counter = iter(range(1 << 62))

    def pick(seq):
        return seq[next(counter) % len(seq)]

    ops = {
        "keygen": keygen,
        "encrypt": median_ms(lambda: pub.encrypt(pick(xs)), args.samples),
        "decrypt": median_ms(lambda: priv.decrypt(pick(encs)), args.samples),
        "add": median_ms(lambda: encs[0] + pick(encs), args.samples),
        "mul_f64": median_ms(lambda: pick(encs) * 0.37, args.samples),
    }
    print(json.dumps({"phe": phe.__version__, "gmpy2": util.HAVE_GMP,
                      "bits": args.bits, "ops": ops}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
