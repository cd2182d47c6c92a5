"""Builds the accuracy suite of fhe-trainer: public data sets as CSV, five
stratified 70/30 splits per set and scikit-learn's reference accuracies on
those exact splits.

    python3 -m venv .venv-suite && .venv-suite/bin/pip install scikit-learn
    .venv-suite/bin/python fhe-trainer/data/suite/make_suite.py

Writes `<name>.csv` (features, then `target`) and `suite.json` next to this
file. The reference is `LogisticRegression()` with scikit-learn's defaults
(L2, C = 1, lbfgs; max_iter raised until it converges) on features min-max
scaled to [-1, 1] on the training rows (test rows clipped, as fhe-trainer's
scaler does). Deterministic: every generator and split is seeded.
"""

import json
import os
import sys

import numpy as np
import sklearn
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import MinMaxScaler

HERE = os.path.dirname(os.path.abspath(__file__))
N_SPLITS = 5
TEST_SIZE = 0.3


def ordinal_survey():
    """8 ordinal answers (1..5) from a latent logistic model, ~32% positives."""
    rng = np.random.RandomState(8)
    n = 800
    z = rng.normal(size=(n, 8))
    answers = np.clip(np.round(z * 1.1 + 3), 1, 5)
    w = np.array([0.9, -0.7, 0.5, 0.4, -0.3, 0.25, 0.0, 0.0])
    logit = (answers - 3) @ w - 0.9 + rng.logistic(size=n) * 0.9
    y = (logit > 0).astype(int)
    names = [f"q{i + 1}" for i in range(8)]
    return names, answers, y


def binary_sets():
    out = {}
    bc = datasets.load_breast_cancer()
    out["breast_cancer"] = (list(bc.feature_names), bc.data, bc.target,
                            "Wisconsin diagnostic breast cancer (scikit-learn), benign = 1")
    wine = datasets.load_wine()
    out["wine_class0"] = (list(wine.feature_names), wine.data, (wine.target == 0).astype(int),
                          "UCI wine (scikit-learn), cultivar 0 against the other two")
    iris = datasets.load_iris()
    keep = iris.target > 0
    out["iris_versicolor_virginica"] = (
        [n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names],
        iris.data[keep], (iris.target[keep] == 2).astype(int),
        "Fisher's iris (scikit-learn), virginica against versicolor (setosa dropped)")
    x, y = datasets.make_classification(n_samples=600, n_features=20, n_informative=6,
                                        n_redundant=4, flip_y=0.15, class_sep=0.8,
                                        random_state=20)
    out["synthetic_noisy20"] = ([f"f{i}" for i in range(20)], x, y,
                                "make_classification(600, 20 features, 6 informative, flip_y=0.15, seed 20)")
    dig = datasets.load_digits()
    out["digits_ge5"] = ([f"px{i}" for i in range(64)], dig.data, (dig.target >= 5).astype(int),
                         "UCI optical digits 8x8 (scikit-learn), digit >= 5")
    names, x, y = ordinal_survey()
    out["ordinal_survey8"] = (names, x, y,
                              "synthetic survey: 8 answers on a 1..5 scale, latent logistic model, seed 8")
    dia = datasets.load_diabetes(scaled=False)
    out["diabetes_high"] = (list(dia.feature_names), dia.data,
                            (dia.target > np.median(dia.target)).astype(int),
                            "diabetes (Efron et al. 2004, scikit-learn), progression above the median")
    return out


def multiclass_sets():
    out = {}
    iris = datasets.load_iris()
    out["iris3"] = ([n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names],
                    iris.data, iris.target, "Fisher's iris, 3 species")
    wine = datasets.load_wine()
    out["wine3"] = (list(wine.feature_names), wine.data, wine.target, "UCI wine, 3 cultivars")
    dig = datasets.load_digits()
    out["digits10"] = ([f"px{i}" for i in range(64)], dig.data, dig.target,
                       "UCI optical digits 8x8, 10 classes")
    return out


def fmt(v):
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def write_csv(path, names, x, y):
    with open(path, "w") as f:
        f.write(",".join(list(names) + ["target"]) + "\n")
        for row, label in zip(x, y):
            f.write(",".join(fmt(v) for v in row) + f",{int(label)}\n")


def reference(x, y):
    splits, accs, majority = [], [], []
    sss = StratifiedShuffleSplit(n_splits=N_SPLITS, test_size=TEST_SIZE, random_state=0)
    for tr, te in sss.split(x, y):
        sc = MinMaxScaler(feature_range=(-1, 1), clip=True).fit(x[tr])
        lr = LogisticRegression(max_iter=100000).fit(sc.transform(x[tr]), y[tr])
        accs.append(float(lr.score(sc.transform(x[te]), y[te])))
        counts = np.bincount(y[tr])
        majority.append(float(np.mean(y[te] == np.argmax(counts))))
        splits.append(sorted(int(i) for i in te))
    return splits, accs, majority


def main():
    suite = {"generator": f"make_suite.py, scikit-learn {sklearn.__version__}",
             "test_size": TEST_SIZE, "binary": [], "multiclass": []}
    for kind, sets in [("binary", binary_sets()), ("multiclass", multiclass_sets())]:
        for name, (names, x, y, origin) in sets.items():
            x = np.asarray(x, dtype=float)
            y = np.asarray(y, dtype=int)
            write_csv(os.path.join(HERE, f"{name}.csv"), names, x, y)
            splits, accs, majority = reference(x, y)
            suite[kind].append({
                "name": name, "file": f"{name}.csv", "origin": origin,
                "rows": int(len(y)), "features": int(x.shape[1]),
                "classes": int(len(np.unique(y))),
                "test_indices": splits, "sklearn_lr": accs, "majority": majority,
            })
            print(f"{kind:10} {name:28} {x.shape[0]:5} x {x.shape[1]:2}  "
                  f"LR {100 * np.mean(accs):5.1f}  majority {100 * np.mean(majority):5.1f}",
                  file=sys.stderr)
    with open(os.path.join(HERE, "suite.json"), "w") as f:
        json.dump(suite, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
