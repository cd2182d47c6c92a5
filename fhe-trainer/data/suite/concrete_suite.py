"""Concrete ML's encrypted training on fhe-trainer's accuracy suite (binary sets).

    /work/concrete-venv/bin/python fhe-trainer/data/suite/concrete_suite.py

Needs a Python with concrete-ml 1.9.0 (and its scikit-learn). For every set in
`suite.json`'s `binary` list and each of its 5 stratified splits: features
min-max scaled to [-1, 1] on the training rows, test rows clipped (exactly
make_suite.py's `MinMaxScaler(feature_range=(-1, 1), clip=True)`), then

    SGDClassifier(fit_encrypted=True, parameters_range=(-1, 1), random_state=42)
        .fit(x_train, y_train, fhe="simulate")

trained in FHE simulation, and scored with `predict(x_test, fhe="disable")`
(the quantized model evaluated in the clear; inference is not encrypted).

Training length: Concrete ML's `max_iter` counts SGD steps (each one batch of
8 rows drawn at random by its seeded sampler), not epochs, so the suite's
epoch counts do not map onto it; Concrete ML's default (max_iter=1000 steps,
no early stopping, learning rate 1, 6-bit training circuit) is used. The step
count fhe-trainer's suite uses (epochs x whole batches of 8) is recorded per
set for comparison; `--steps suite` trains Concrete ML for that many steps
instead.

Prints a per-set table of mean test accuracy (%) and writes
`concrete_suite.json` (or `--out`) with per-split accuracies, the versions
and the exact call (rewritten after each set, so an interrupted run keeps the
sets it finished). `--sets a,b` runs only those sets, in that order.
"""

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 8          # fhe-trainer's and Concrete ML's batch size
MIN_STEPS = 300    # fhe-trainer model::MIN_STEPS
MAX_EPOCHS = 20    # fhe-trainer model::MAX_EPOCHS


def suite_epochs(train_rows):
    """fhe-trainer's model::default_epochs for batch 8."""
    per_epoch = max(train_rows // BATCH, 1)
    return min(max(-(-MIN_STEPS // per_epoch), 1), MAX_EPOCHS)


def load_csv(path):
    import numpy as np
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip().split(",")
        data = np.loadtxt(f, delimiter=",", ndmin=2)
    t = header.index("target")
    y = data[:, t].astype(np.int64)
    x = np.delete(data, t, axis=1)
    return x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="", help="comma-separated set names (default: all binary)")
    ap.add_argument("--splits", type=int, default=5, help="splits per set (default 5)")
    ap.add_argument("--steps", choices=["default", "suite"], default="default",
                    help="max_iter: Concrete ML's default (1000) or fhe-trainer's step count")
    ap.add_argument("--out", default=os.path.join(HERE, "concrete_suite.json"))
    args = ap.parse_args()

    import numpy as np
    from importlib.metadata import version
    from sklearn.preprocessing import MinMaxScaler
    from concrete.ml.sklearn import SGDClassifier

    with open(os.path.join(HERE, "suite.json")) as f:
        suite = json.load(f)
    sets = suite["binary"]
    if args.sets:
        want = args.sets.split(",")
        by_name = {s["name"]: s for s in sets}
        missing = set(want) - set(by_name)
        if missing:
            raise SystemExit(f"unknown binary sets: {sorted(missing)}")
        sets = [by_name[n] for n in want]

    call = ("SGDClassifier(fit_encrypted=True, parameters_range=(-1, 1), random_state=42"
            + (", max_iter=<suite steps>" if args.steps == "suite" else "")
            + ").fit(x_train, y_train, fhe='simulate'); predict(x_test, fhe='disable')")
    out = {
        "generator": "concrete_suite.py",
        "concrete_ml": version("concrete-ml"),
        "concrete_python": version("concrete-python"),
        "scikit_learn": version("scikit-learn"),
        "python": platform.python_version(),
        "call": call,
        "scaling": "MinMaxScaler(feature_range=(-1, 1), clip=True) fitted on the training rows",
        "max_iter": "Concrete ML default (1000 steps of 8 rows)" if args.steps == "default"
                    else "fhe-trainer suite steps (epochs x train_rows // 8)",
        "sets": [],
    }
    rows = []
    for s in sets:
        x, y = load_csv(os.path.join(HERE, s["file"]))
        accs, secs = [], []
        epochs = steps = None
        for k, test_idx in enumerate(s["test_indices"][: args.splits]):
            is_test = np.zeros(len(y), dtype=bool)
            is_test[test_idx] = True
            tr, te = np.flatnonzero(~is_test), np.asarray(test_idx)
            epochs = suite_epochs(len(tr))
            steps = epochs * (len(tr) // BATCH)
            sc = MinMaxScaler(feature_range=(-1, 1), clip=True).fit(x[tr])
            xtr, xte = sc.transform(x[tr]), sc.transform(x[te])
            kw = {"max_iter": steps} if args.steps == "suite" else {}
            model = SGDClassifier(fit_encrypted=True, parameters_range=(-1, 1),
                                  random_state=42, **kw)
            t = time.perf_counter()
            model.fit(xtr, y[tr], fhe="simulate")
            pred = model.predict(xte, fhe="disable")
            secs.append(time.perf_counter() - t)
            accs.append(float(np.mean(pred == y[te])))
            print(f"{s['name']:28} split {k}: {100 * accs[-1]:5.1f}  ({secs[-1]:.1f} s)",
                  file=sys.stderr, flush=True)
        rec = {
            "name": s["name"], "rows": s["rows"], "features": s["features"],
            "suite_epochs": epochs, "suite_steps": steps,
            "max_iter": model.max_iter,
            "accuracy": accs, "mean": float(np.mean(accs)),
            "seconds": secs,
            "sklearn_lr_mean": float(np.mean(s["sklearn_lr"][: len(accs)])),
            "majority_mean": float(np.mean(s["majority"][: len(accs)])),
        }
        out["sets"].append(rec)
        rows.append(rec)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")

    print(f"Concrete ML {out['concrete_ml']}: {call}")
    print(f"{'data set':28} {'rows x feat':>12} {'max_iter':>8} {'Concrete ML':>11} "
          f"{'sklearn LR':>10} {'majority':>8}")
    for r in rows:
        print(f"{r['name']:28} {r['rows']:>5} x {r['features']:<4} {r['max_iter']:>8} "
              f"{100 * r['mean']:>11.1f} {100 * r['sklearn_lr_mean']:>10.1f} "
              f"{100 * r['majority_mean']:>8.1f}")


if __name__ == "__main__":
    main()
