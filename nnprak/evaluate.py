"""Evaluation protocols.

Sections:

* LFW face verification (View 2, ``pairs.txt``): :func:`read_lfw_pairs`, :func:`lfw_verification` and its
  :class:`VerificationResult` (with :meth:`VerificationResult.errors`, the misclassified pairs), the building
  blocks :func:`pair_distances` and :func:`best_threshold`, :func:`read_lfw_people` (the people of each fold)
  and :func:`read_lfw_errata` (the matched pairs that LFW's authors list as mislabelled).
* Score normalisation against a cohort of other people (``lfw_verification(..., norm="cohort")``):
  :func:`cohort_closeness`, :func:`normalised_distances`.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, auc, roc_curve

from nnprak import config

# =========================================================================================================
# LFW verification (View 2: 10 folds of 300 matched + 300 mismatched pairs)
# =========================================================================================================

LFW_PAIRS_FILE = "pairs.txt"
LFW_ERRATA_FILE = "ERRATA_from_lfw_website_index_html.txt"


def lfw_image_path(images_dir: str | os.PathLike, name: str, number: int) -> Path:
    """Return the path of LFW image ``number`` of ``name``: ``<images_dir>/<name>/<name>_<number:04d>.jpg``."""
    return Path(images_dir) / name / f"{name}_{int(number):04d}.jpg"


def read_lfw_pairs(path: str | os.PathLike, images_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Return LFW's pairs file as a DataFrame: fold, path1, path2, same (bool), name1, name2 (one row per pair).

    ``path`` is ``pairs.txt`` (or pairsDevTrain/Test.txt): a header ``<folds>\\t<n>`` (or just ``<n>`` for the
    dev files, read as one fold), then per fold ``n`` matched lines ``name i j`` and ``n`` mismatched lines
    ``name1 i name2 j``. Image paths are built under ``images_dir`` (default: ``lfw-deepfunneled`` next to
    the pairs file).

    Raises:
        ValueError: naming the file and line when the file does not have this layout.
    """
    path = Path(path)
    images_dir = Path(images_dir) if images_dir is not None else path.parent / config.LFW_IMAGES_SUBDIR
    lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    try:
        head = [int(v) for v in lines[0]]
    except ValueError:
        raise ValueError(f"{path}:1: expected a header '<folds> <pairs per class>', got {' '.join(lines[0])!r}")
    folds, n = (head[0], head[1]) if len(head) == 2 else (1, head[0])
    if len(lines) - 1 != folds * 2 * n:
        raise ValueError(f"{path}: header says {folds} folds × 2 × {n} pairs = {folds * 2 * n} lines, "
                         f"found {len(lines) - 1}")
    rows = []
    for idx, parts in enumerate(lines[1:]):
        fold, within = divmod(idx, 2 * n)
        same = within < n
        try:
            if same and len(parts) == 3:
                name1, i, j = parts
                name2 = name1
            elif not same and len(parts) == 4:
                name1, i, name2, j = parts
            else:
                raise ValueError
            i, j = int(i), int(j)
        except ValueError:
            kind = "matched 'name i j'" if same else "mismatched 'name1 i name2 j'"
            raise ValueError(f"{path}:{idx + 2}: expected a {kind} line, got {' '.join(parts)!r}") from None
        rows.append((fold, str(lfw_image_path(images_dir, name1, i)), str(lfw_image_path(images_dir, name2, j)),
                     same, name1, name2))
    return pd.DataFrame(rows, columns=["fold", "path1", "path2", "same", "name1", "name2"])


def read_lfw_people(path: str | os.PathLike) -> pd.DataFrame:
    """Return LFW's people file as a DataFrame: fold, name, images (one row per person).

    ``people.txt`` has a header ``<folds>``, then per fold a count ``n`` and ``n`` lines ``name images``; the
    people of the ten folds are disjoint and are those of ``pairs.txt``'s folds. ``peopleDevTrain/Test.txt``
    have just a count and the lines (read as fold 0).

    Raises:
        ValueError: naming the file and line when the file does not have this layout.
    """
    path = Path(path)
    lines = [(no, ln.split()) for no, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if ln.strip()]
    lines.append((lines[-1][0] + 1 if lines else 1, None))                # the end of the file
    rows, at = [], 0

    def where() -> str:
        no, parts = lines[at]
        return f"{path}:{no}", ("the end of the file" if parts is None else " ".join(parts))

    def count(what: str) -> int:
        parts = lines[at][1]
        if not parts or len(parts) != 1 or not parts[0].isdigit():
            loc, got = where()
            raise ValueError(f"{loc}: expected {what}, got {got!r}")
        return int(parts[0])

    folds = count("a count")
    if lines[1][1] is not None and len(lines[1][1]) == 1:   # people.txt: the number of folds, then one count per fold
        at = 1
    else:                                                   # the dev files: the count of their single fold
        folds = 1
    for fold in range(folds):
        n = count(f"the number of people of fold {fold + 1}")
        at += 1
        for _ in range(n):
            parts = lines[at][1]
            if not parts or len(parts) != 2 or not parts[1].isdigit():
                loc, got = where()
                raise ValueError(f"{loc}: expected a line 'name images', got {got!r}")
            rows.append((fold, parts[0], int(parts[1])))
            at += 1
    if lines[at][1] is not None:
        loc, got = where()
        raise ValueError(f"{loc}: unexpected line after the last fold: {got!r}")
    return pd.DataFrame(rows, columns=["fold", "name", "images"])


def read_lfw_errata(path: str | os.PathLike | None = None, missing_ok: bool = False) -> pd.DataFrame | None:
    """Return the View 2 matched pairs that LFW's errata call mislabelled: fold (0-based), name, number1, number2.

    LFW keeps these labels as they are (results must use them), so such a pair predicted "different" counts
    as an error although the prediction is right; knowing them explains part of the remaining errors.
    ``path`` is the errata text from the LFW web site (default: ``ERRATA_from_lfw_website_index_html.txt`` in
    the LFW folder). Its list after "The current known errors in View 2 are:" has a ``Fold k:`` line and two
    ``First Last, n`` lines per pair.

    With ``missing_ok`` a missing file (or LFW folder) gives None (LFW copies other than this project's may lack
    it).

    Raises:
        ValueError: naming the file when it has no such list.
    """
    if path is None:
        try:
            path = config.find_lfw(download=not missing_ok) / LFW_ERRATA_FILE
        except config.LFWNotFound:
            if missing_ok:
                return None
            raise
    path = Path(path)
    if missing_ok and not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    start = text.find("The current known errors in View 2 are:")
    if start < 0:
        raise ValueError(f"{path}: no 'The current known errors in View 2 are:' list; is this LFW's errata page?")
    rows, fold, images = [], None, []
    for line in text[start:].splitlines()[1:]:
        line = line.strip()
        if not line:
            continue
        head = re.fullmatch(r"Fold (\d+):", line)
        item = re.fullmatch(r"([^,]+), (\d+)", line)
        if head:
            fold, images = int(head.group(1)) - 1, []
        elif item and fold is not None:
            images.append((item.group(1).strip().replace(" ", "_"), int(item.group(2))))
            if len(images) == 2:
                (name, n1), (name2, n2) = images
                if name != name2:
                    raise ValueError(f"{path}: a matched pair with two names: {name}, {name2}")
                rows.append((fold, name, n1, n2))
                fold, images = None, []
        else:
            break                                  # the list ends with the first other line
    if not rows:
        raise ValueError(f"{path}: the View 2 errata list is empty")
    return pd.DataFrame(rows, columns=["fold", "name", "number1", "number2"])


def lfw_mislabelled_images(lfw_dir: str | os.PathLike | None = None) -> set[str]:
    """Return the stems of LFW images that LFW's errata say show someone else (e.g. ``Recep_Tayyip_Erdogan_0004``);
    an empty set when the LFW folder has no errata file."""
    errata = Path(lfw_dir or config.find_lfw(download=False)) / LFW_ERRATA_FILE
    if not errata.exists():
        return set()
    return set(re.findall(r"([A-Z][\w\-]+_\d{4})\s+is incorrect", errata.read_text(errors="replace")))


def _image_number(path: str) -> int:
    return int(Path(path).stem.rsplit("_", 1)[-1])


def pair_distances(emb1: np.ndarray, emb2: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Return the distance of each row pair: ``euclidean`` (L2), ``sqeuclidean`` or ``cosine`` (1 - cos)."""
    emb1, emb2 = np.asarray(emb1, dtype=np.float64), np.asarray(emb2, dtype=np.float64)
    if metric == "euclidean":
        return np.linalg.norm(emb1 - emb2, axis=1)
    if metric == "sqeuclidean":
        return ((emb1 - emb2) ** 2).sum(axis=1)
    if metric == "cosine":
        n1, n2 = np.linalg.norm(emb1, axis=1), np.linalg.norm(emb2, axis=1)
        return 1.0 - (emb1 * emb2).sum(axis=1) / np.maximum(n1 * n2, 1e-12)
    raise ValueError(f"unknown metric {metric!r}; use 'euclidean', 'sqeuclidean' or 'cosine'")


def best_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Return (threshold, accuracy) that maximises accuracy of "same iff distance < threshold" on these pairs.

    Candidates are the midpoints between consecutive distinct distances (and ±inf at the ends); on ties the
    smallest such threshold wins.
    """
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    if len(d) == 0:
        raise ValueError("no pairs to choose a threshold on")
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    # predicting the first k pairs (smallest distances) "same": correct = same among them + different after
    same_below = np.concatenate([[0], np.cumsum(y)])
    diff_above = (~y).sum() - np.concatenate([[0], np.cumsum(~y)])
    correct = same_below + diff_above                      # index k = 0..n
    valid = np.ones(len(d) + 1, dtype=bool)
    valid[1:-1] = d[1:] > d[:-1]                           # a threshold can only fall between distinct values
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        thr = -np.inf
    elif k == len(d):
        thr = np.inf
    else:
        thr = (d[k - 1] + d[k]) / 2
    return float(thr), float(correct[k] / len(d))


SCORE_NORMS = ("none", "cohort")
"""Score normalisations of :func:`lfw_verification`: plain distance, or distance minus the cohort closeness."""
DEFAULT_COHORT_K = 50
"""Cohort images per image in :func:`cohort_closeness` (the k nearest of several thousand other people's faces)."""


def _distance_matrix(a: np.ndarray, b: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Return the len(a)×len(b) matrix of :func:`pair_distances` between every row of ``a`` and every row of ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return 1.0 - a @ b.T
    d2 = np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)
    if metric == "sqeuclidean":
        return d2
    if metric == "euclidean":
        return np.sqrt(d2)
    raise ValueError(f"unknown metric {metric!r}; use 'euclidean', 'sqeuclidean' or 'cosine'")


def cohort_closeness(emb: np.ndarray, groups: np.ndarray, k: int = DEFAULT_COHORT_K, metric: str = "euclidean",
                     exclude=()) -> np.ndarray:
    """Return per image the mean distance to its ``k`` nearest cohort images (NaN for an image without embedding).

    An image's cohort are the images of every *other* group (``groups``: one label per row of ``emb``; for LFW
    the fold of pairs.txt, whose people are disjoint), minus the groups in ``exclude`` (the test fold) and
    images without an embedding. A face that lies close to many other people's faces (a common face, a blurred
    photo) gets a small value; a distinctive face a large one. With fewer than ``k`` cohort images all are used.
    """
    emb = np.asarray(emb, dtype=np.float64)
    groups = np.asarray(groups)
    good = np.isfinite(emb).all(axis=1)
    out = np.full(len(emb), np.nan)
    excluded = set(np.asarray(list(exclude)).tolist())
    for g in np.unique(groups):
        rows = np.flatnonzero((groups == g) & good)
        cols = np.flatnonzero(good & (groups != g) & ~np.isin(groups, list(excluded)))
        if not len(rows) or not len(cols):
            continue
        kk = min(int(k), len(cols))
        d = _distance_matrix(emb[rows], emb[cols], metric)
        out[rows] = np.partition(d, kk - 1, axis=1)[:, :kk].mean(axis=1)
    return out


def normalised_distances(emb: np.ndarray, i1: np.ndarray, i2: np.ndarray, groups: np.ndarray, test_group,
                         k: int = DEFAULT_COHORT_K, metric: str = "euclidean") -> np.ndarray:
    """Return the cohort-normalised distance of each pair (rows ``i1``, ``i2`` of ``emb``) for one test fold.

    score = distance(a, b) - (closeness(a) + closeness(b)) / 2 with :func:`cohort_closeness`, whose cohorts
    leave out the image's own group and ``test_group``: a pair of the test fold is normalised with the other
    nine folds' people only, and so are the pairs the threshold is chosen on (eight folds: never the test
    fold's images). Two faces that are close *for faces that close to everybody* become less similar. NaN
    where an image has no embedding.
    """
    emb = np.asarray(emb, dtype=np.float64)
    close = cohort_closeness(emb, groups, k, metric, exclude=[test_group])
    return pair_distances(emb[i1], emb[i2], metric) - (close[i1] + close[i2]) / 2


@dataclass
class VerificationResult:
    """The outcome of :func:`lfw_verification` (accuracies are fractions, not percent)."""

    accuracy: float                    # mean of the per-fold test accuracies
    std: float                         # their standard deviation (ddof=0, as usually reported on LFW)
    sem: float                         # standard error of the mean (ddof=1 std / sqrt(folds), the LFW readme's)
    fold_accuracies: list[float]
    thresholds: list[float]            # the threshold chosen on the other folds, per test fold
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    auc: float = float("nan")
    metric: str = "euclidean"
    norm: str = "none"                 # score normalisation (SCORE_NORMS); "cohort": distances are normalised
    cohort_k: int | None = None        # cohort size of norm="cohort"
    n_pairs: int = 0
    n_failed: int = 0                  # pairs with at least one image without an embedding (counted as wrong)
    n_failed_images: int = 0
    failed: str = "wrong"
    seconds: float = 0.0               # wall time of embedding + evaluation
    distances: np.ndarray = field(default=None, repr=False)
    same: np.ndarray = field(default=None, repr=False)
    folds: np.ndarray = field(default=None, repr=False)
    pairs: pd.DataFrame = field(default=None, repr=False)   # the evaluated pairs, in the order of ``distances``
    predicted: np.ndarray = field(default=None, repr=False)  # per pair: predicted "same" (failed pairs: wrong)

    def errors(self, errata: pd.DataFrame | None = None) -> pd.DataFrame:
        """Return the misclassified pairs, most confident error first.

        Columns: fold, name1, path1, name2, path2, same (names taken from the image folders when the evaluated
        pairs have no name columns), distance (NaN: no face in an image), threshold (the one chosen for the
        pair's fold), margin (how far the distance lies on the wrong side; inf for a pair without a face) and,
        when ``errata`` (from :func:`read_lfw_errata`) is given, ``mislabelled``: LFW lists the pair as wrongly
        labelled "same".
        """
        if self.pairs is None or self.predicted is None:
            raise ValueError("this result keeps no per-pair data (only lfw_verification's own results do)")
        wrong = self.predicted != self.same
        fold_threshold = dict(zip(sorted(np.unique(self.folds)), self.thresholds))     # folds in lfw_verification's order
        out = self.pairs.loc[wrong, ["fold", "path1", "path2", "same"]].copy()
        for i in ("1", "2"):
            out.insert(list(out.columns).index(f"path{i}"), f"name{i}",
                       self.pairs.loc[wrong, f"name{i}"] if f"name{i}" in self.pairs
                       else [Path(p).parent.name for p in out[f"path{i}"]])
        out["distance"], out["threshold"] = self.distances[wrong], out["fold"].map(fold_threshold).to_numpy()
        out["margin"] = np.where(np.isfinite(out["distance"]), np.abs(out["distance"] - out["threshold"]), np.inf)
        if errata is not None:
            known = {(int(r.fold), r.name, *sorted((int(r.number1), int(r.number2)))) for r in errata.itertuples()}
            out["mislabelled"] = [bool(r.same) and (int(r.fold), r.name1, *sorted(
                (_image_number(r.path1), _image_number(r.path2)))) in known for r in out.itertuples()]
        return out.sort_values("margin", ascending=False, kind="stable").reset_index(drop=True)

    def summary(self) -> str:
        """Return a one-line human-readable summary: mean ± std, AUC, failures, time."""
        score = self.metric if self.norm == "none" else f"{self.metric}, {self.norm} k={self.cohort_k}"
        errors = int((self.predicted != self.same).sum()) if self.predicted is not None else None
        return (f"LFW verification ({len(self.fold_accuracies)} folds, {self.n_pairs} pairs, {score}): "
                f"{100 * self.accuracy:.2f}% ± {100 * self.std:.2f}% (sem {100 * self.sem:.2f}%), "
                + ("" if errors is None else f"{errors} errors, ")
                + f"AUC {self.auc:.4f}, {self.n_failed} failed pairs ({self.n_failed_images} images without a face), "
                f"{self.seconds:.0f} s")

    def to_dict(self) -> dict:
        """Return the result as a JSON-friendly dict (ROC points included, per-pair arrays left out)."""
        per_pair = ("distances", "same", "folds", "pairs", "predicted")
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in per_pair}
        d["fold_accuracies"], d["thresholds"] = list(self.fold_accuracies), list(self.thresholds)
        d["fpr"], d["tpr"] = np.asarray(self.fpr).tolist(), np.asarray(self.tpr).tolist()
        return d


def _resolve_pairs(pairs, lfw_dir) -> pd.DataFrame:
    if isinstance(pairs, pd.DataFrame):
        return pairs
    p = Path(pairs)
    if not p.is_file():
        p = Path(config.find_lfw(lfw_dir)) / p
    images_dir = Path(config.find_lfw(lfw_dir)) / config.LFW_IMAGES_SUBDIR if lfw_dir is not None else None
    return read_lfw_pairs(p, images_dir)


def lfw_verification(embed_fn: Callable[[list[str]], np.ndarray], pairs=LFW_PAIRS_FILE,
                     lfw_dir: str | os.PathLike | None = None, folds: int | None = 10, metric: str = "euclidean",
                     failed: str = "wrong", norm: str | None = "none",
                     cohort_k: int = DEFAULT_COHORT_K) -> VerificationResult:
    """Return the LFW 10-fold verification result of ``embed_fn`` (threshold fitted on 9 folds, tested on the 10th).

    Args:
        embed_fn: ``embed_fn(list_of_image_paths) -> N×D array``; it is called once with every distinct image
            of the used folds. A row containing NaN means "no face found": every pair with such an image is
            counted as wrong (``failed="wrong"``, the default) or predicted "different" (``failed="different"``).
            In the ROC such pairs always get the "most different" score.
        pairs: the pairs file (absolute, or relative to the LFW folder) or a DataFrame from
            :func:`read_lfw_pairs` (columns fold, path1, path2, same).
        lfw_dir: the LFW folder (default: :func:`nnprak.config.find_lfw`).
        folds: use the first ``folds`` folds (None: all); at least 2. Thresholds are chosen on the other
            used folds.
        metric: ``euclidean`` (dlib, FaceNet), ``sqeuclidean`` or ``cosine``.
        failed: ``"wrong"`` or ``"different"``, see ``embed_fn``.
        norm: ``"none"`` (or None): plain distances; ``"cohort"``: :func:`normalised_distances` per test fold,
            with cohorts of ``cohort_k`` images drawn only from people outside the test fold (LFW's folds have
            disjoint people; the unrestricted protocol's "other nine folds"). The result's ``distances`` are
            then the test folds' normalised scores.
    """
    if failed not in ("wrong", "different"):
        raise ValueError(f"failed must be 'wrong' or 'different', not {failed!r}")
    norm = norm or "none"
    if norm not in SCORE_NORMS:
        raise ValueError(f"norm must be one of {', '.join(SCORE_NORMS)}, not {norm!r}")
    t0 = time.perf_counter()
    df = _resolve_pairs(pairs, lfw_dir)
    fold_ids = sorted(df["fold"].unique())
    if folds is not None:
        fold_ids = fold_ids[:folds]
    if len(fold_ids) < 2:
        raise ValueError(f"need at least 2 folds for cross-validated thresholds, got {len(fold_ids)}")
    if norm == "cohort" and len(fold_ids) < 3:
        raise ValueError(f"cohort normalisation needs at least 3 folds (the cohort of the threshold's pairs leaves "
                         f"out their own fold and the test fold), got {len(fold_ids)}")
    df = df[df["fold"].isin(fold_ids)].reset_index(drop=True)

    images = list(dict.fromkeys(df["path1"].tolist() + df["path2"].tolist()))
    emb = np.asarray(embed_fn(images), dtype=np.float64)
    if emb.ndim != 2 or len(emb) != len(images):
        raise ValueError(f"embed_fn returned shape {emb.shape} for {len(images)} images; expected N×D")
    index = {p: i for i, p in enumerate(images)}
    i1 = df["path1"].map(index).to_numpy()
    i2 = df["path2"].map(index).to_numpy()
    bad_image = ~np.isfinite(emb).all(axis=1)
    bad = bad_image[i1] | bad_image[i2]
    dist = np.full(len(df), np.nan)
    dist[~bad] = pair_distances(emb[i1[~bad]], emb[i2[~bad]], metric)

    same = df["same"].to_numpy(dtype=bool)
    fold = df["fold"].to_numpy()
    if norm == "cohort":
        image_fold = np.empty(len(images), dtype=fold.dtype)
        image_fold[i1], image_fold[i2] = fold, fold
        fold_dist = {f: normalised_distances(emb, i1, i2, image_fold, f, cohort_k, metric) for f in fold_ids}
        for f in fold_ids:                     # the reported score of a pair: that of its own test fold
            dist[fold == f] = fold_dist[f][fold == f]
        dist[bad] = np.nan
    accs, thrs = [], []
    predicted = np.zeros(len(df), dtype=bool)
    for f in fold_ids:
        train, test = (fold != f) & ~bad, fold == f
        fd = fold_dist[f] if norm == "cohort" else dist
        thr, _ = best_threshold(fd[train], same[train]) if train.any() else (np.inf, 0.0)
        ok = ~bad[test]
        pred = np.zeros(test.sum(), dtype=bool)
        pred[ok] = fd[test][ok] < thr
        if failed == "wrong":                  # a pair without embeddings is always an error
            pred[~ok] = ~same[test][~ok]
        accs.append(float(accuracy_score(same[test], pred)))
        thrs.append(float(thr))
        predicted[test] = pred

    # ROC over all used pairs: score = -distance; failed pairs get a score below every real one
    score = -dist
    if bad.any():
        floor = np.nanmin(score) - 1.0 if (~bad).any() else -1.0
        score = np.where(bad, floor, score)
    if same.all() or not same.any():
        fpr = tpr = np.array([np.nan])
        area = float("nan")
    else:
        fpr, tpr, _ = roc_curve(same, score)
        area = float(auc(fpr, tpr))

    accs_arr = np.array(accs)
    return VerificationResult(
        accuracy=float(accs_arr.mean()), std=float(accs_arr.std()),
        sem=float(accs_arr.std(ddof=1) / np.sqrt(len(accs_arr))) if len(accs_arr) > 1 else float("nan"),
        fold_accuracies=accs, thresholds=thrs, fpr=fpr, tpr=tpr, auc=area, metric=metric, norm=norm,
        cohort_k=int(cohort_k) if norm == "cohort" else None, n_pairs=len(df),
        n_failed=int(bad.sum()), n_failed_images=int(bad_image.sum()), failed=failed,
        seconds=time.perf_counter() - t0, distances=dist, same=same, folds=fold, pairs=df, predicted=predicted)


# =========================================================================================================
# Which pairs a profile verifies, and embed functions over notebook 02's crops
# =========================================================================================================

def select_pairs(pairs: pd.DataFrame, folds: int | None = None, per_fold: int | None = None) -> pd.DataFrame:
    """Return the pairs of the first ``folds`` folds, keeping ``per_fold // 2`` matched and mismatched pairs each.

    ``None`` keeps everything (the official protocol: 10 folds × 300 + 300 pairs); the smoke profile uses a few
    pairs per fold so that CI stays fast.
    """
    df = pairs[pairs["fold"].isin(sorted(pairs["fold"].unique())[:folds])] if folds else pairs
    if per_fold:
        df = df.groupby(["fold", "same"], sort=False, group_keys=False).head(per_fold // 2)
    return df.reset_index(drop=True)


def profile_pairs(cfg: config.Config, pairs_file: str = LFW_PAIRS_FILE) -> pd.DataFrame:
    """Return the LFW verification pairs a profile evaluates (``cfg.verification_folds``/``..._pairs_per_fold``)."""
    lfw = config.find_lfw()
    return select_pairs(read_lfw_pairs(lfw / pairs_file), cfg.verification_folds, cfg.verification_pairs_per_fold)


VERIFICATION_CROPS = "verification_crops.csv"
"""Notebook 02's crops table of the verification pairs' images, in the profile's processed folder."""


def verification_crops(cfg: config.Config, progress: bool = True, faces_dir: str | os.PathLike | None = None,
                       out: str | os.PathLike | None = None) -> pd.DataFrame:
    """Return the crops table of the images of the profile's verification pairs (notebook 02's detection).

    The same :func:`nnprak.faces.crop_manifest` as every other image (the config's MTCNN settings, selection rule
    and retry), written to ``out`` (default ``<processed>/verification_crops.csv``); crops and detections of an
    earlier run are reused.
    """
    from . import data, faces

    pairs = profile_pairs(cfg)
    manifest = data.scan_files(pair_images(pairs), progress=False)
    return faces.crop_manifest(manifest, cfg, progress=progress, faces_dir=faces_dir,
                               out=out if out is not None else cfg.paths.processed / VERIFICATION_CROPS)


def profile_verification(cfg: config.Config, embedder, table: pd.DataFrame, norm: str | None = "none",
                         embeddings_dir: str | os.PathLike | None = None,
                         progress: bool = True) -> VerificationResult:
    """Return the profile's LFW verification of an embedder on a :func:`verification_crops` table (notebook 05).

    Embeddings come from :func:`nnprak.embed.cached_embeddings` (in ``embeddings_dir``, default the profile's
    embeddings folder), pairs from :func:`profile_pairs`; ``norm`` as in :func:`lfw_verification` with
    ``cfg.cohort_k``. ``seconds`` covers embedding (or reading the cache) and the protocol.
    """
    from . import embed

    t0 = time.perf_counter()
    X = embed.cached_embeddings(embedder, table, embeddings_dir or cfg.paths.embeddings, progress=progress)
    res = lfw_verification(lookup_embed_fn(table, X), profile_pairs(cfg), norm=norm, cohort_k=cfg.cohort_k)
    res.seconds = time.perf_counter() - t0
    return res


def without_people(pairs: pd.DataFrame, people) -> pd.DataFrame:
    """Return the pairs in which neither image shows one of ``people``, e.g. a network's training identities.

    A network trained to tell LFW-62's people apart has seen those people: pairs with them would flatter its
    verification accuracy. The folds stay as they are (with fewer, and fewer matched, pairs).
    """
    from .data import person_key

    people = {person_key(p) for p in people}      # a folder "bill gates" is LFW's Bill_Gates
    keep = ~(pairs["name1"].map(person_key).isin(people) | pairs["name2"].map(person_key).isin(people))
    return pairs[keep].reset_index(drop=True)


def unseen_people_verification(table: pd.DataFrame, features: np.ndarray, trained_people, cfg: config.Config,
                                metric: str = "cosine", norm: str | None = "none") -> VerificationResult:
    """Return the profile's LFW verification of a trained network's features, on the pairs none of whose people it saw.

    ``table`` (a crops table with a manifest ``path`` column) is aligned with ``features`` (see
    :func:`lookup_embed_fn`); ``trained_people`` are the network's classes (see :func:`without_people`); ``norm="cohort"`` normalises
    each distance against cohorts from the other folds (see :func:`lfw_verification`).
    """
    pairs = without_people(profile_pairs(cfg), trained_people)
    return lfw_verification(lookup_embed_fn(table, features), pairs, metric=metric, norm=norm)


def verification_dataset(ver_table: pd.DataFrame, path_column: str, size: int):
    """Return the faces of the verification pairs, decoded once at a network's input ``size`` (eval transform).

    ``ver_table`` is notebook 02's crops of the pairs' images (``verification_crops.csv``), ``path_column`` the
    crop variant the network learnt from. One dataset serves every network of that size (see
    :func:`network_verification`).
    """
    from nnprak import data, train

    return train.CachedDataset(data.FaceDataset(ver_table, None, transform=None, path_column=path_column,
                                                classes=sorted(ver_table["person"].unique())),
                               size, transform=train.eval_transforms(size))


def network_verification(model, ver_ds, trained_people, cfg: config.Config, norm: str | None = "cohort",
                         flip: bool = True) -> VerificationResult:
    """Return the LFW verification of a network's penultimate features on the pairs without its training people.

    ``ver_ds`` is :func:`verification_dataset` at the network's input size. Each face's features are the mean over
    the face and its mirror image (``flip``, see :func:`network_features`); ``norm="cohort"`` normalises the
    distances against cohorts of faces from the other folds (see :func:`lfw_verification`).
    """
    features, _ = network_features(model, ver_ds, flip=flip)
    return unseen_people_verification(ver_ds.frame, features, trained_people, cfg, norm=norm)


def pair_images(pairs: pd.DataFrame) -> dict[str, list[Path]]:
    """Return ``{person: [image paths]}`` of the distinct images of some pairs (to crop them like any photo)."""
    people: dict[str, list[Path]] = {}
    for name_col, path_col in (("name1", "path1"), ("name2", "path2")):
        for name, path in zip(pairs[name_col], pairs[path_col]):
            people.setdefault(name, [])
            if Path(path) not in people[name]:
                people[name].append(Path(path))
    return {p: sorted(files) for p, files in sorted(people.items())}


def lookup_embed_fn(table: pd.DataFrame, embeddings: np.ndarray) -> Callable[[list[str]], np.ndarray]:
    """Return an ``embed_fn`` for :func:`lfw_verification` that looks images up in a table's precomputed rows.

    ``table`` has a manifest ``path`` column aligned with ``embeddings``; images not in it come back as NaN
    (counted as failed pairs).
    """
    from nnprak import data

    index = {str(data.abs_path(p).resolve()): i for i, p in enumerate(table["path"])}
    emb = np.asarray(embeddings, dtype=np.float64)

    def embed_fn(paths: list[str]) -> np.ndarray:
        out = np.full((len(paths), emb.shape[1]), np.nan)
        for k, p in enumerate(paths):
            i = index.get(str(Path(p).resolve()))
            if i is not None:
                out[k] = emb[i]
        return out

    return embed_fn


def network_features(model, dataset, batch_size: int = 128, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(features N×D, labels N)`` of a dataset through ``model.features`` (the penultimate layer), in order.

    ``flip=True`` returns the mean of the features of each image and of its mirror image (left-right flip), the
    usual test-time trick of face verification: a face and its mirror are the same person, and the mean is less
    sensitive to which way the head turns.
    """
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))   # wherever training left it
    feats, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device)
            f = model.features(x).flatten(1)
            if flip:
                f = (f + model.features(torch.flip(x, dims=[-1])).flatten(1)) / 2
            feats.append(f.cpu().numpy())
            labels.append(np.asarray(y))
    dim = getattr(model, "feature_dim", 0)
    return (np.concatenate(feats) if feats else np.empty((0, dim), np.float32),
            np.concatenate(labels) if labels else np.empty(0, np.int64))
