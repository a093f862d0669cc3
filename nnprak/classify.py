"""Stage 05: classifiers on face embeddings (SVM, KNN) and the open-set "unknown" decision.

The classifiers are scikit-learn Pipelines (L2 normalisation → SVC or KNN) tuned with GridSearchCV on the
training split. Model choice is made to hold on small data (a class of 5-40 people with 10-25 photos each):

* the number of CV folds follows the smallest class (:func:`nnprak.config.cv_folds`);
* equal CV scores (common: many settings score 1.000 on a few photos per person) are broken toward the
  *less* regularised setting (larger C, fewer neighbours), see :data:`LESS_REGULARISED`;
* the chosen setting, refit on the whole training split, is checked on the validation split: when its accuracy
  there falls far below its CV score (a degenerate refit, e.g. a linear SVM with tiny C that names one person
  for every face), it is reported and the next setting is tried (:func:`select_model`). Open set: a face is accepted as its predicted person only when its confidence score is above a
threshold chosen on validation faces of people outside the gallery (impostors) for a target false-accept rate.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import warnings

from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer
from sklearn.svm import SVC

from . import config

UNKNOWN = "unknown"

PARAM_GRIDS = {
    "svm_linear": {"svc__C": [0.01, 0.1, 1, 10, 100]},
    "svm_rbf": {"svc__C": [1, 10, 100], "svc__gamma": ["scale", 1, 4]},
    "knn": {"knn__n_neighbors": [1, 3, 5, 9], "knn__weights": ["uniform", "distance"]},
}
"""The hyper-parameters GridSearchCV tries for each classifier kind."""

LESS_REGULARISED = {
    "svm_linear": lambda p: (-p["svc__C"],),
    "svm_rbf": lambda p: (-p["svc__C"], -(0.0 if p["svc__gamma"] == "scale" else float(p["svc__gamma"]))),
    "knn": lambda p: (p["knn__n_neighbors"], p["knn__weights"] != "distance"),
}
"""Sort keys over a kind's parameters: the least regularised setting sorts first (used to break CV-score ties)."""


def make_pipeline(kind: str, seed: int = config.SEED) -> Pipeline:
    """Return an untrained Pipeline ``Normalizer(l2) → SVC/KNN`` for ``kind`` in :data:`PARAM_GRIDS`.

    The SVC predicts with its own one-vs-one decision function and gives Platt-scaled class probabilities
    (``probability=True``) as the confidence shown to users. scikit-learn 1.9 deprecates that flag in favour
    of ``CalibratedClassifierCV``, but a calibrated wrapper *predicts* by the argmax of per-class sigmoids,
    which on LFW-62 (14 training faces for the rarest people) starves the rare people: 92 % instead of
    99 % test accuracy in our measurement. We keep the flag while the pinned scikit-learn has it.
    """
    if kind in ("svm_linear", "svm_rbf"):
        svc = SVC(kernel=kind.split("_")[1], class_weight="balanced", probability=True, random_state=seed)
        return Pipeline([("l2", Normalizer()), ("svc", svc)])
    if kind == "knn":
        return Pipeline([("l2", Normalizer()), ("knn", KNeighborsClassifier(metric="euclidean"))])
    raise ValueError(f"unknown classifier kind {kind!r}; use one of {', '.join(PARAM_GRIDS)}")


def fit_classifier(kind: str, X: np.ndarray, y, cv: int | None = None, seed: int = config.SEED, n_jobs: int = 1,
                   X_val: np.ndarray | None = None, y_val=None, max_cv_folds: int = 5) -> GridSearchCV:
    """Return a GridSearchCV over :data:`PARAM_GRIDS` ``[kind]`` fitted on (X, y), refit on all of it.

    Scored by balanced accuracy (LFW-62 is very unbalanced); folds are stratified and seeded, ``cv`` of them
    (default: :func:`nnprak.config.cv_folds` of the class sizes, at most ``max_cv_folds``). The setting is
    chosen by :func:`select_model` (ties toward the less regularised setting; with ``X_val``/``y_val``, a
    setting whose refit fails on the validation split is rejected). ``search.selection_`` tells what happened.
    """
    X, y = np.asarray(X), np.asarray(y)
    cv = cv or config.cv_folds(np.unique(y, return_counts=True)[1], max_cv_folds)
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    search = GridSearchCV(make_pipeline(kind, seed), PARAM_GRIDS[kind], cv=folds, scoring="balanced_accuracy",
                          n_jobs=n_jobs, refit=False)
    with warnings.catch_warnings():  # SVC(probability=True) is deprecated in 1.9: see make_pipeline
        warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
        search.fit(X, y)
        return select_model(search, kind, X, y, X_val, y_val)


def validation_tolerance(cv_score: float, n_val: int) -> float:
    """Return how far a validation accuracy may fall below the CV score before the refit counts as failed.

    Three binomial standard errors of the CV score on ``n_val`` faces, and at least 5 points.
    """
    p = min(max(float(cv_score), 0.0), 1.0)
    return max(0.05, 3.0 * float(np.sqrt(p * (1 - p) / max(1, n_val))))


def select_model(search: GridSearchCV, kind: str, X, y, X_val=None, y_val=None, tie_key=None) -> GridSearchCV:
    """Return ``search`` (fitted with ``refit=False``) with the chosen setting refit on (X, y) as ``best_estimator_``.

    Settings are ranked by mean CV score, ties toward the less regularised one (:data:`LESS_REGULARISED`).
    Without validation data the first is taken. With it, each setting in rank order is refit on (X, y) and scored
    on the validation split; the first whose balanced accuracy there is within :func:`validation_tolerance` of
    its CV score is taken. If none is, the setting with the best validation score is taken and
    ``selection_["warning"]`` says so. ``search.selection_`` holds the folds, the chosen setting, its CV and
    validation scores and every rejected setting with the reason. ``tie_key`` replaces
    ``LESS_REGULARISED[kind]`` (for other parameter grids).
    """
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score

    res = search.cv_results_
    params, scores = list(res["params"]), np.asarray(res["mean_test_score"], dtype=float)
    tie_key = tie_key or LESS_REGULARISED[kind]
    order = sorted(range(len(params)), key=lambda i: (-round(scores[i], 9), tie_key(params[i])))
    selection = {"kind": kind, "cv_folds": int(search.cv.get_n_splits()), "rejected": [], "warning": "",
                 "tie": int(np.sum(np.isclose(scores, scores[order[0]], atol=1e-9)))}
    fitted, val_scores = {}, {}
    chosen = order[0]
    if X_val is not None and len(X_val):
        for i in order:
            fitted[i] = clone(search.estimator).set_params(**params[i]).fit(X, y)
            val_scores[i] = float(balanced_accuracy_score(np.asarray(y_val), fitted[i].predict(np.asarray(X_val))))
            tol = validation_tolerance(scores[i], len(X_val))
            if val_scores[i] >= scores[i] - tol:
                chosen = i
                break
            selection["rejected"].append({"params": params[i], "cv_score": float(scores[i]),
                                          "val_score": val_scores[i],
                                          "reason": f"validation {val_scores[i]:.3f} < CV {scores[i]:.3f} - {tol:.3f}"})
        else:
            chosen = max(val_scores, key=lambda i: (val_scores[i], scores[i]))
            selection["warning"] = (f"{kind}: no setting held its CV score on the validation split; using the best "
                                    f"on validation, {params[chosen]} ({val_scores[chosen]:.3f}). Look at the data: "
                                    "too few photos per person, or mislabelled photos?")
    if chosen not in fitted:
        fitted[chosen] = clone(search.estimator).set_params(**params[chosen]).fit(X, y)
    search.best_index_, search.best_params_ = chosen, params[chosen]
    search.best_score_, search.best_estimator_ = float(scores[chosen]), fitted[chosen]
    search.refit = True  # the search now behaves like a refit GridSearchCV (predict, predict_proba, ...)
    selection.update(params=params[chosen], cv_score=float(scores[chosen]), val_score=val_scores.get(chosen))
    search.selection_ = selection
    return search


def describe_selection(search: GridSearchCV) -> str:
    """Return one or more lines telling which setting was chosen, on which evidence, and what was rejected."""
    sel = search.selection_
    val = "" if sel["val_score"] is None else f" | validation {sel['val_score']:.3f}"
    tie = f" (tie of {sel['tie']} settings: the less regularised kept)" if sel["tie"] > 1 else ""
    lines = [f"{sel['kind']:10s} {sel['params']} | {sel['cv_folds']}-fold CV {sel['cv_score']:.3f}{tie}{val}"]
    lines += [f"{'':10s} rejected {r['params']}: {r['reason']}" for r in sel["rejected"]]
    if sel["warning"]:
        lines.append(f"WARNING: {sel['warning']}")
    return "\n".join(lines)


def best_of(searches: dict, kinds) -> str:
    """Return the kind among ``kinds`` whose chosen setting scores best: on validation when known, then in CV."""
    def key(k):
        sel = searches[k].selection_
        return (sel["val_score"] if sel["val_score"] is not None else -1.0, sel["cv_score"])
    return max(kinds, key=key)


def confidence(model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (predicted labels, confidence in [0, 1]) for every row.

    SVM: its prediction and the Platt-scaled probability of that person. KNN: ``1 - d / 2`` with ``d`` the distance of the L2-normalised
    embedding to its nearest gallery face (the face_recognition way: near the gallery means known).
    """
    X = np.asarray(X)
    est = getattr(model, "best_estimator_", model)
    if isinstance(est[-1], KNeighborsClassifier):
        dist, _ = est[-1].kneighbors(est[:-1].transform(X), n_neighbors=1)
        return est.predict(X), 1.0 - dist[:, 0] / 2.0
    pred = est.predict(X)
    proba = est.predict_proba(X)
    column = {c: i for i, c in enumerate(est.classes_)}
    return pred, proba[np.arange(len(pred)), [column[p] for p in pred]]


def choose_threshold(impostor_scores: np.ndarray, far: float = 0.01) -> float:
    """Return the lowest threshold t such that at most ``far`` of the impostor scores are > t."""
    scores = np.sort(np.asarray(impostor_scores, dtype=float))[::-1]
    if len(scores) == 0:
        raise ValueError("no impostor scores: cannot choose an open-set threshold")
    k = int(np.floor(far * len(scores)))  # impostors we may accept
    return float(scores[min(k, len(scores) - 1)])


def apply_threshold(pred, scores, threshold: float) -> np.ndarray:
    """Return the predictions with every one whose score is not above ``threshold`` replaced by "unknown"."""
    pred = np.asarray(pred, dtype=object).copy()
    pred[np.asarray(scores) <= threshold] = UNKNOWN
    return pred


def open_set_rates(known_true, known_pred, known_scores, impostor_scores, threshold: float) -> dict:
    """Return the open-set rates at ``threshold``.

    * ``dir``: detection and identification rate: known faces accepted *and* correctly named,
    * ``far``: impostors accepted (named as someone in the gallery),
    * ``frr``: known faces rejected as unknown.
    """
    known_scores, impostor_scores = np.asarray(known_scores), np.asarray(impostor_scores)
    accepted = known_scores > threshold
    correct = np.asarray(known_true, dtype=object) == np.asarray(known_pred, dtype=object)
    return {"threshold": float(threshold), "dir": float(np.mean(accepted & correct)),
            "far": float(np.mean(impostor_scores > threshold)), "frr": float(np.mean(~accepted)),
            "n_known": int(len(known_scores)), "n_impostors": int(len(impostor_scores))}


def dir_far_curve(known_true, known_pred, known_scores, impostor_scores) -> dict[str, np.ndarray]:
    """Return the open-set ROC (DIR against FAR) over every threshold, for plotting."""
    thresholds = np.unique(np.concatenate([[-np.inf], np.asarray(known_scores), np.asarray(impostor_scores)]))
    correct = np.asarray(known_true, dtype=object) == np.asarray(known_pred, dtype=object)
    ks, imps = np.asarray(known_scores)[:, None], np.asarray(impostor_scores)[:, None]
    return {"threshold": thresholds, "far": np.mean(imps > thresholds, axis=0),
            "dir": np.mean((ks > thresholds) & correct[:, None], axis=0)}


@dataclass
class FaceClassifier:
    """A trained gallery classifier with its open-set threshold: what ``python -m nnprak predict`` loads."""

    model: object                      # fitted sklearn Pipeline (or GridSearchCV)
    threshold: float                   # scores at or below are "unknown"
    backend: str                       # embedder that made the training embeddings
    kind: str = "svm_linear"
    info: dict = field(default_factory=dict)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (names or "unknown", confidence) for embeddings X."""
        names, score, _ = self.predict_with_closest(X)
        return names, score

    def predict_with_closest(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (names or "unknown", confidence, the gallery person ranked first) for embeddings X."""
        closest, score = confidence(self.model, X)
        return apply_threshold(closest, score, self.threshold), score, closest

    def save(self, path: str | os.PathLike) -> Path:
        """Write the classifier with joblib (atomically) and return the path."""
        import joblib

        from .utils import atomic_path

        with atomic_path(path) as tmp:
            joblib.dump(self, tmp)
        return Path(path)

    @staticmethod
    def load(path: str | os.PathLike) -> "FaceClassifier":
        """Return the classifier saved at ``path`` (FileNotFoundError says how to make one)."""
        import joblib

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no trained model at {path}: run notebooks/05_embeddings_svm_knn.ipynb "
                                    "(or `make run`) first, or pass --model PATH")
        try:
            obj = joblib.load(path)
        except Exception as err:  # truncated file, another pickle, a different sklearn
            raise ValueError(f"{path} could not be read as an nnprak face classifier ({type(err).__name__}: "
                             f"{err}); re-run notebooks/05_embeddings_svm_knn.ipynb") from None
        if not isinstance(obj, FaceClassifier):
            raise ValueError(f"{path} is not an nnprak face classifier (got {type(obj).__name__})")
        return obj


def predict_with_missing(model, X: np.ndarray, missing_label: str = "no_face") -> tuple[np.ndarray, np.ndarray]:
    """Return (predictions, scores) for embeddings with NaN rows (no face found): those get ``missing_label``, 0.

    Faces the detector missed count as errors in every metric, never silently dropped.
    """
    X = np.asarray(X)
    ok = ~np.isnan(X).any(axis=1)
    pred = np.full(len(X), missing_label, dtype=object)
    score = np.zeros(len(X))
    if ok.any():
        pred[ok], score[ok] = confidence(model, X[ok])
    return pred, score


def open_set_evaluation(model, X_val_impostors, X_test, y_test, X_test_impostors, far: float = 0.01) -> dict:
    """Return the threshold chosen on validation impostors for ``far`` and the open-set rates on the test split.

    Keys: ``threshold``, ``rates`` (dir/far/frr on test, see :func:`open_set_rates`), ``curve`` (DIR vs FAR).
    Rows with NaN embeddings (no face found) are left out of the impostor sets and count as rejected
    known faces.
    """
    def scores(X):
        X = np.asarray(X)
        return confidence(model, X[~np.isnan(X).any(axis=1)])[1]

    threshold = choose_threshold(scores(X_val_impostors), far)
    pred, known_scores = predict_with_missing(model, X_test)
    imp = scores(X_test_impostors)
    return {"threshold": threshold, "far_target": far,
            "rates": open_set_rates(y_test, pred, known_scores, imp, threshold),
            "curve": dir_far_curve(y_test, pred, known_scores, imp)}
