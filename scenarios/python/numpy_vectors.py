"""Print known-answer vectors of NumPy's legacy RandomState (MT19937) as JSON.

Regenerate scenarios/tests/data/numpy_legacy_rng.json with:
    python scenarios/python/numpy_vectors.py > scenarios/tests/data/numpy_legacy_rng.json
The Rust port in scenarios/src/numpy_rng.rs is tested against this file.
"""
import json
import struct
import sys

import numpy as np


def bits(values):
    """IEEE-754 bit patterns, so the Rust test compares doubles exactly."""
    return [struct.unpack("<Q", struct.pack("<d", float(v)))[0] for v in values]


def int_seed_case(seed):
    rs = np.random.RandomState(seed)
    key = rs.get_state()[1]
    case = {
        "seed": seed,
        "key_head": [int(v) for v in key[:4]],
        "key_tail": int(key[-1]),
        "uint32": [int(v) for v in rs.randint(0, 2**32, size=8, dtype=np.uint32)],
        "random_sample_bits": bits(rs.random_sample(8)),
    }
    # interval(max) == randint(0, max + 1) in the legacy generator (masked rejection).
    maxes = [0, 1, 2, 5, 7, 100, 441, 2**31, 2**32 - 2, 2**32, 2**40 + 12345]
    case["interval"] = [
        {"max": m, "values": [int(v) for v in rs.randint(0, m + 1, size=5, dtype=np.int64)]}
        for m in maxes
    ]
    case["permutation"] = {n: [int(v) for v in rs.permutation(n)] for n in (1, 2, 3, 10, 37)}
    case["choice_100_7"] = [int(v) for v in rs.choice(100, 7, replace=False)]
    return case


def main():
    out = {
        "numpy_version": np.__version__,
        "int_seeds": [int_seed_case(s) for s in (0, 1, 42, 12345, 2**32 - 1)],
    }
    rs = np.random.RandomState([1, 2, 3])
    out["array_seed"] = {
        "key": [1, 2, 3],
        "key_head": [int(v) for v in rs.get_state()[1][:4]],
        "random_sample_bits": bits(rs.random_sample(4)),
    }
    # The python-paillier federated example's split: seed 42, 442 rows.
    np.random.seed(42)
    perm = np.random.permutation(442)
    test_idx = np.random.choice(442, size=50, replace=False)
    out["diabetes_split_seed_42"] = {
        "n": 442,
        "permutation": [int(v) for v in perm],
        "test_idx": [int(v) for v in test_idx],
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
