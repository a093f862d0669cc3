"""LFW verification with a distance learned on the other folds (View 2, "unrestricted" protocol).

Can a metric fitted on LFW itself push dlib's descriptors past plain Euclidean distance? For each test fold,
every method is fitted on all images of the people in the *other nine* sets of ``people.txt`` (the people of
``pairs.txt``'s ten folds are disjoint), the threshold is chosen on the other nine folds' pairs (people the
metric was fitted on, so the threshold may be a little optimistic for them), and the test fold is scored --
LFW's "unrestricted, labeled outside data" setting. Methods:

* ``euclidean``: no learning (the baseline of ``bench_verification.py``);
* ``whitened``: Euclidean after whitening the within-person covariance (shrunk towards its mean variance);
* ``plda``: the log-likelihood ratio of the two-covariance model (between- and within-person Gaussians);
* ``cohort``: Euclidean distance minus the mean distance of each image to its ``k`` closest people of the
  training folds (score normalisation against a cohort of impostors);
* ``logistic``: logistic regression on the squared coordinate differences of same/different training pairs
  (a learned diagonal metric).

Descriptors: the notebooks' path with the full profile's settings (notebook 02's MTCNN detection, the dlib
backend with the profile's alignment, mean with the mirror image), as ``bench_verification.py``, but for all
13,233 LFW images (the first run detects and embeds them all, several minutes on 2 cores; crops and descriptors
are cached), later runs take about 25 seconds. ``evaluate.lfw_verification(..., norm="cohort")`` is the cohort
normalisation the notebooks use (its cohort: the other folds' pairs, not all their people's images).

    .venv/bin/python bench/bench_learned_metrics.py
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see bench_verification.py (before torch is imported)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnprak import config, data, embed, faces  # noqa: E402
from nnprak import evaluate as E  # noqa: E402


def all_descriptors(paths: list[str]) -> np.ndarray:
    """Return the profile's dlib descriptors of these LFW images through the notebooks' path (NaN rows: no face).

    Detection by :func:`nnprak.faces.crop_manifest` with the full profile's settings (crops and sidecars in
    ``build/full/data/interim/bench/all_lfw/``), descriptors by :class:`nnprak.embed.DlibBackend` with the
    profile's alignment, cached like notebook 05's.
    """
    cfg = config.load("full")
    folder = cfg.paths.interim / "bench" / "all_lfw"
    people: dict[str, list[Path]] = {}
    for p in paths:
        people.setdefault(Path(p).parent.name, []).append(Path(p))
    table = faces.crop_manifest(data.scan_files(people, progress=False), cfg, progress=True,
                                faces_dir=folder / "faces", out=folder / "crops.csv")
    embedder = embed.DlibBackend(align=cfg.embed["dlib_align"])
    X = embed.cached_embeddings(embedder, table, folder / "embeddings")
    index = {str(data.abs_path(p)): i for i, p in enumerate(table["path"])}
    return X[[index[str(Path(p))] for p in paths]].astype(np.float64)


def person_means(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (class means, per-image class index, images per class)."""
    names, inv = np.unique(y, return_inverse=True)
    means = np.zeros((len(names), X.shape[1]))
    np.add.at(means, inv, X)
    counts = np.bincount(inv)
    return means / counts[:, None], inv, counts


def within_cov(X, means, inv, counts) -> np.ndarray:
    """Return the pooled within-person covariance from :func:`person_means` (people with one image add nothing)."""
    keep = counts[inv] > 1
    R = X[keep] - means[inv][keep]
    return R.T @ R / (keep.sum() - (counts > 1).sum())


def fit_whitened(X, y, shrink=0.3):
    Sw = within_cov(X, *person_means(X, y))
    Sw = (1 - shrink) * Sw + shrink * np.trace(Sw) / len(Sw) * np.eye(len(Sw))
    e, U = np.linalg.eigh(Sw)
    W = U / np.sqrt(e)
    return lambda a, b: -np.linalg.norm((a - b) @ W, axis=1)


def fit_plda(X, y):
    means, inv, counts = person_means(X, y)
    Sw, m, multi = within_cov(X, means, inv, counts), X.mean(0), counts > 1
    B = np.cov((means[multi] - m).T) - Sw * np.mean(1 / counts[multi])    # between-person covariance
    T, Z = B + Sw, np.zeros_like(B)
    Q = np.linalg.inv(np.block([[T, Z], [Z, T]])) - np.linalg.inv(np.block([[T, B], [B, T]]))

    def score(a, b):
        x = np.hstack([a - m, b - m])
        return (x @ Q * x).sum(1)
    return score


def fit_cohort(X, y, k=200):
    C = person_means(X, y)[0]

    def closeness(a):
        d2 = (a * a).sum(1)[:, None] + (C * C).sum(1)[None] - 2 * a @ C.T
        return np.sort(np.sqrt(np.maximum(d2, 0)), axis=1)[:, :k].mean(1)

    return lambda a, b: -np.linalg.norm(a - b, axis=1) + 0.5 * (closeness(a) + closeness(b))


def fit_logistic(X, y, cap=20, n_diff=50_000, C=0.1, seed=config.SEED):
    rng = np.random.default_rng(seed)
    _, inv, _ = person_means(X, y)
    a, b = [], []
    for c in np.unique(inv):
        ids = np.flatnonzero(inv == c)[:cap]
        i, j = np.triu_indices(len(ids), 1)
        a += ids[i].tolist()
        b += ids[j].tolist()
    n_same = len(a)
    da, db = rng.integers(0, len(X), n_diff), rng.integers(0, len(X), n_diff)
    diff = inv[da] != inv[db]
    a, b = np.r_[a, da[diff]], np.r_[b, db[diff]]
    labels = np.r_[np.ones(n_same), np.zeros(diff.sum())]
    clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit((X[a] - X[b]) ** 2, labels)
    return lambda p, q: clf.decision_function((p - q) ** 2)


METHODS = {"euclidean": lambda X, y: (lambda a, b: -np.linalg.norm(a - b, axis=1)),
           "whitened": fit_whitened, "plda": fit_plda, "cohort": fit_cohort, "logistic": fit_logistic}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    lfw = config.find_lfw()
    root = lfw / config.LFW_IMAGES_SUBDIR
    people = E.read_lfw_people(lfw / "people.txt")
    set_of = dict(zip(people["name"], people["fold"]))
    paths = sorted(str(p) for p in root.glob("*/*.jpg"))
    t0 = time.perf_counter()
    V = all_descriptors(paths)
    print(f"{len(paths)} images, {int((~np.isfinite(V).all(1)).sum())} without a face "
          f"({time.perf_counter() - t0:.0f} s)")
    name = np.array([Path(p).parent.name for p in paths])
    image_set = np.array([set_of.get(n, -1) for n in name])
    good = np.isfinite(V).all(1)
    pairs = E.read_lfw_pairs(lfw / "pairs.txt")
    index = {p: i for i, p in enumerate(paths)}
    i1, i2 = pairs["path1"].map(index).to_numpy(), pairs["path2"].map(index).to_numpy()
    fold, same = pairs["fold"].to_numpy(), pairs["same"].to_numpy(bool)
    bad = ~(good[i1] & good[i2])
    for method in args.methods:
        t0, accs = time.perf_counter(), []
        for f in range(10):
            train = (image_set != f) & (image_set >= 0) & good
            score = np.full(len(pairs), -np.inf)
            score[~bad] = METHODS[method](V[train], name[train])(V[i1[~bad]], V[i2[~bad]])
            fit = (fold != f) & ~bad
            thr, _ = E.best_threshold(-score[fit], same[fit])
            test = fold == f
            right = ((-score[test] < thr) == same[test]) & ~bad[test]     # a pair without a face is wrong
            accs.append(float(right.mean()))
        accs = np.array(accs)
        print(f"{method:10s} {100 * accs.mean():.2f} % ± {100 * accs.std():.2f} %  "
              f"({int(round(len(pairs) * (1 - accs.mean())))} errors, {time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
