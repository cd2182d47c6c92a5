"""The federation's protocol run by python-paillier in one process, for `scenarios bench`.

Same data files, rounds, learning rate and mode as the multi-process run:
each round every hospital computes its gradient X^T (X w - y), encrypts it
value by value with phe, the ring adds the ciphertexts in hospital order, the
server decrypts the sum and divides it (by the number of hospitals in `seed`
mode, by the number of training rows in `global` mode), every hospital steps.
This follows data61/python-paillier's examples/federated_learning_with_encryption.py.

Usage:
    python paillier_federation.py --key-bits 2048 --rounds 50 --eta 0.01 --mode seed \
        --target target hospital-1.csv hospital-2.csv hospital-3.csv
Prints one JSON object on stdout.
"""
import argparse
import json
import time

import numpy as np
import phe


def load(path, target):
    with open(path) as f:
        header = f.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    t = header.index(target)
    feats = [i for i in range(len(header)) if i != t]
    return data[:, feats], data[:, t]


def gradient(x, y, w):
    return (x.dot(w) - y).dot(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--key-bits", type=int, required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--eta", type=float, required=True)
    p.add_argument("--mode", choices=["seed", "global"], required=True)
    p.add_argument("--target", required=True)
    p.add_argument("csv", nargs="+")
    a = p.parse_args()

    hospitals = [load(c, a.target) for c in a.csv]
    n_h = len(hospitals)
    n_rows = sum(len(y) for _, y in hospitals)
    d = hospitals[0][0].shape[1]

    t0 = time.perf_counter()
    pub, priv = phe.generate_paillier_keypair(n_length=a.key_bits)
    keygen = time.perf_counter() - t0

    local = []
    for x, y in hospitals:
        w = np.zeros(d)
        for _ in range(a.rounds):
            w -= a.eta * gradient(x, y, w)
        local.append(w)
    if a.mode == "seed":
        weights = [w.copy() for w in local]
    else:
        weights = [np.zeros(d) for _ in hospitals]

    round_seconds = []
    t_train = time.perf_counter()
    for _ in range(a.rounds):
        t_round = time.perf_counter()
        acc = None
        for (x, y), w in zip(hospitals, weights):
            enc = [pub.encrypt(float(v)) for v in gradient(x, y, w)]
            acc = enc if acc is None else [s + e for s, e in zip(acc, enc)]
        total = np.array([priv.decrypt(c) for c in acc])
        divisor = n_h if a.mode == "seed" else n_rows
        step = total / divisor
        for w in weights:
            w -= a.eta * step
        round_seconds.append(time.perf_counter() - t_round)
    training = time.perf_counter() - t_train

    print(json.dumps({
        "implementation": "python-paillier " + getattr(phe, "__version__", "?"),
        "gmpy2": bool(getattr(phe.util, "HAVE_GMP", False)),
        "key_bits": a.key_bits,
        "hospitals": n_h,
        "features": d,
        "rounds": a.rounds,
        "keygen_seconds": keygen,
        "training_seconds": training,
        "round_seconds": round_seconds,
        "final_weights": [list(map(float, w)) for w in weights],
    }))


if __name__ == "__main__":
    main()
