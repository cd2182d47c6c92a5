"""Concrete ML's encrypted SGD training, timed per batch: the other half of
`fhe-trainer bench --concrete-python PATH`.

Trains `concrete.ml.sklearn.SGDClassifier(fit_encrypted=True)` with the
parameters of Concrete ML's encrypted-training example (random_state=42,
parameters_range=(-1, 1), Concrete ML's fixed batch of 8 rows, 6-bit training
circuit, learning rate 1) under real encryption (fhe="execute"), one
`partial_fit` call per batch, so every call is one 8-row SGD step on
ciphertexts: the batch and the weights are quantized and encrypted, the
training circuit runs, the weights are decrypted.

The first call also compiles the training circuit and generates the keys; it
is reported apart (`first_batch_s`, with Concrete ML's own `compile_s` and
`keygen_s` where its verbose output gives them). The following `--batches`
calls are the per-batch figure (`seconds_per_batch`), next to Concrete ML's
own timing of the circuit run alone (`run_seconds_per_batch`).

Input: a CSV with a header row and a 0/1 label column (`--data -` reads it
from standard input), min-max scaled to [-1, 1] over its rows as in Concrete
ML's example; each batch is drawn from those rows by Concrete ML's seeded
sampler. Output: one JSON object on standard output; everything else
(Concrete ML's progress) goes to standard error.

Run standalone:
    python concrete_sgd.py --data fhe-trainer/data/breast_cancer.csv --batches 2
"""

import argparse
import csv
import io
import json
import os
import platform
import re
import sys
import time

SCHEMA = "fhe-trainer/concrete-sgd-bench/1"


class Tee(io.TextIOBase):
    """Writes through to `out` and keeps a copy of the text."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.parts = []

    def write(self, s):
        self.parts.append(s)
        self.out.write(s)
        return len(s)

    def flush(self):
        self.out.flush()

    def take(self):
        text = "".join(self.parts)
        self.parts = []
        return text


def seconds(pattern, text):
    """The float in the first match of `pattern` in `text`, or None."""
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def load(path, target):
    """Rows of features and 0/1 labels from a CSV with a header."""
    f = sys.stdin if path == "-" else open(path, newline="", encoding="utf-8")
    with f:
        rows = list(csv.reader(f))
    if not rows:
        raise SystemExit(f"{path}: empty CSV")
    header, body = rows[0], [r for r in rows[1:] if r]
    if target not in header:
        raise SystemExit(f"{path}: no column named {target!r}")
    t = header.index(target)
    x = [[float(v) for i, v in enumerate(r) if i != t] for r in body]
    y = [int(float(r[t])) for r in body]
    if any(v not in (0, 1) for v in y):
        raise SystemExit(f"{path}: the label column {target!r} must hold 0 or 1")
    return x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CSV with a header ('-': standard input)")
    ap.add_argument("--target", default="target", help="name of the 0/1 label column")
    ap.add_argument("--batches", type=int, default=2, help="batches timed after the first")
    ap.add_argument("--seed", type=int, default=42, help="SGDClassifier's random_state")
    args = ap.parse_args()
    if args.batches < 1:
        raise SystemExit("--batches must be at least 1")

    # Concrete ML and its compiler print progress on standard output, some of
    # it from native code: send file descriptor 1 to standard error and keep a
    # private copy of the real standard output for the JSON.
    sys.stdout.flush()
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    tee = Tee(sys.stderr)
    sys.stdout = tee

    import numpy as np
    from importlib.metadata import version
    from sklearn.preprocessing import MinMaxScaler
    from concrete.ml.sklearn import SGDClassifier

    x, y = load(args.data, args.target)
    x = MinMaxScaler(feature_range=(-1, 1)).fit_transform(np.array(x, dtype=np.float64))
    y = np.array(y, dtype=np.int64)
    parameters_range = (-1.0, 1.0)
    model = SGDClassifier(
        random_state=args.seed,
        max_iter=1,
        fit_encrypted=True,
        parameters_range=parameters_range,
        verbose=True,
    )
    if x.shape[0] < model.batch_size:
        raise SystemExit(f"{args.data}: {x.shape[0]} rows, fewer than one batch of {model.batch_size}")

    classes = np.array([0, 1])
    t = time.perf_counter()
    model.partial_fit(x, y, fhe="execute", classes=classes)
    first_batch_s = time.perf_counter() - t
    log = tee.take()
    compile_s = seconds(r"Compilation took ([0-9.]+) seconds", log)
    keygen_s = seconds(r"Key generation took ([0-9.]+) seconds", log)
    first_run_s = seconds(r"Iteration 0 took ([0-9.]+) seconds", log)

    secs, run_secs = [], []
    for _ in range(args.batches):
        t = time.perf_counter()
        model.partial_fit(x, y, fhe="execute")
        secs.append(time.perf_counter() - t)
        run = seconds(r"Iteration 0 took ([0-9.]+) seconds", tee.take())
        if run is not None:
            run_secs.append(run)

    sys.stdout = sys.__stdout__
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    result = {
        "schema": SCHEMA,
        "concrete_ml": version("concrete-ml"),
        "concrete_python": version("concrete-python"),
        "python": platform.python_version(),
        "model": (
            f"SGDClassifier(fit_encrypted=True, parameters_range={parameters_range}, "
            f"random_state={args.seed}), partial_fit(fhe='execute') per batch"
        ),
        "n_bits_training": model.n_bits_training,
        "learning_rate": model.learning_rate_value,
        "rows": int(x.shape[0]),
        "features": int(x.shape[1]),
        "batch_size": int(model.batch_size),
        "cpus": cpus,
        "first_batch_s": first_batch_s,
        "compile_s": compile_s,
        "keygen_s": keygen_s,
        "first_run_s": first_run_s,
        "seconds_per_batch": secs,
        "run_seconds_per_batch": run_secs,
        "mean_seconds_per_batch": sum(secs) / len(secs),
    }
    result_out.write(json.dumps(result) + "\n")
    result_out.flush()


if __name__ == "__main__":
    main()
