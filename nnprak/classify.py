"""Stage 05: classifiers on face embeddings (SVM, KNN) and the open-set "unknown" decision.

The classifiers are scikit-learn Pipelines (L2 normalisation → SVC or KNN) tuned with GridSearchCV on the
training split. Model choice is made to hold on small data (a class of 5-40 people with 10-25 photos each):

* the number of CV folds follows the smallest class (:func:`nnprak.config.cv_folds`);
* equal CV scores (common: many settings score 1.000 on a few photos per person) are broken toward the
  *less* regularised setting (larger C, fewer neighbours), see :data:`LESS_REGULARISED`;
* the chosen setting, refit on the whole training split, is checked on the validation split: when its accuracy
  there falls far below its CV score (a degenerate refit, e.g. a linear SVM with tiny C that names one person
  for every face), it is reported and the next setting is tried (:func:`select_model`).

Open set ("unknown"): the classifier *names* the person; whether the face is accepted as that person is decided by
a score that does not depend on the classifier: how close the L2-normalised embedding lies to the predicted
person's faces in the gallery (:func:`gallery_scores`; nearest face, mean of the 3 nearest, or the person's
centroid, chosen on validation faces by :func:`compare_scores`). The SVM's Platt probability is a poor open-set
score (it is spread over 62 classes and calibrated on closed-set errors): at a 1 % false-accept threshold it
rejected 28 % of known test faces. A face is accepted when its score is above a threshold chosen on validation
faces of people outside the gallery (impostors) for a target false-accept rate; :func:`open_set_evaluation`
measures it on other people, with bootstrap confidence intervals. The same rule serves a person enrolled later
(:meth:`FaceClassifier.enroll`).
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


REFIT_MIN_DROP, REFIT_ALPHA = 0.05, 0.01
"""A refit fails on validation when it scores more than 5 points below its CV score and the drop is significant at 1 %."""


def refit_failed(cv_score: float, n_train: int, val_score: float, n_val: int) -> tuple[bool, float]:
    """Return (whether a refit failed on the validation split, the one-sided p-value of its drop below the CV score).

    Failed means more than :data:`REFIT_MIN_DROP` below the CV score and a drop that chance does not explain:
    Fisher's exact test of the faces named right in cross-validation (``cv_score`` of ``n_train``) against those on
    validation (``val_score`` of ``n_val``; balanced accuracies taken as proportions), p below :data:`REFIT_ALPHA`.
    Both samples count: a perfect CV score on 40 faces and 9 of 10 validation faces is chance (p = 0.2), a refit
    that names one person for everyone is not.
    """
    from scipy.stats import fisher_exact

    if cv_score - val_score <= REFIT_MIN_DROP:
        return False, 1.0
    n_train, n_val = max(1, int(n_train)), max(1, int(n_val))
    right_cv = int(round(min(max(cv_score, 0.0), 1.0) * n_train))
    right_val = int(round(min(max(val_score, 0.0), 1.0) * n_val))
    p = float(fisher_exact([[right_cv, n_train - right_cv], [right_val, n_val - right_val]], alternative="greater")[1])
    return p < REFIT_ALPHA, p


def select_model(search: GridSearchCV, kind: str, X, y, X_val=None, y_val=None, tie_key=None) -> GridSearchCV:
    """Return ``search`` (fitted with ``refit=False``) with the chosen setting refit on (X, y) as ``best_estimator_``.

    Settings are ranked by mean CV score, ties toward the less regularised one (:data:`LESS_REGULARISED`).
    Without validation data the first is taken. With it, each setting in rank order is refit on (X, y) and scored
    on the validation split; the first whose refit did not fail there (:func:`refit_failed`: not significantly and
    clearly below its CV score) is taken. If none is, the setting with the best validation score is taken and
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
            failed, p = refit_failed(scores[i], len(X), val_scores[i], len(X_val))
            if not failed:
                chosen = i
                break
            selection["rejected"].append({"params": params[i], "cv_score": float(scores[i]),
                                          "val_score": val_scores[i],
                                          "reason": f"validation {val_scores[i]:.3f} against CV {scores[i]:.3f}, "
                                                    f"p = {p:.2g} (Fisher's exact test)"})
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


def estimator(model):
    """Return the fitted estimator of ``model``: a GridSearchCV's ``best_estimator_``, else ``model`` itself."""
    return getattr(model, "best_estimator_", model)


def confidence(model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (predicted labels, confidence in [0, 1]) for every row.

    SVM: its prediction and the Platt-scaled probability of that person. KNN: ``1 - d / 2`` with ``d`` the distance of the L2-normalised
    embedding to its nearest gallery face (the face_recognition way: near the gallery means known).
    """
    X = np.asarray(X)
    est = estimator(model)
    if isinstance(est[-1], KNeighborsClassifier):
        dist, _ = est[-1].kneighbors(est[:-1].transform(X), n_neighbors=1)
        return est.predict(X), 1.0 - dist[:, 0] / 2.0
    pred = est.predict(X)
    proba = est.predict_proba(X)
    column = {c: i for i, c in enumerate(est.classes_)}
    return pred, proba[np.arange(len(pred)), [column[p] for p in pred]]


SCORE_METHODS = ("nearest", "knn3", "centroid")
"""Open-set scores of :func:`gallery_scores`: distance to the predicted person's nearest gallery face, the mean
distance to its 3 nearest, or the distance to the (re-normalised) mean of its gallery faces."""


def _unit(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def gallery_scores(gallery_X, gallery_y, X, names, method: str = "nearest") -> np.ndarray:
    """Return the open-set score of each row of X as the person ``names[i]``: ``1 - d / 2`` in [0, 1].

    ``d`` is the Euclidean distance between L2-normalised embeddings (0 = the same direction, 2 = opposite) from
    the face to the person's gallery faces: the nearest one (``"nearest"``), the mean of the 3 nearest
    (``"knn3"``) or the person's centroid (``"centroid"``). A name not in the gallery scores 0.
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"unknown open-set score {method!r}; use one of {', '.join(SCORE_METHODS)}")
    G, gy, Q = _unit(gallery_X), np.asarray(gallery_y, dtype=object), _unit(X)
    names = np.asarray(names, dtype=object)
    out = np.zeros(len(Q))
    for person in np.unique(names):
        rows, faces = np.flatnonzero(names == person), G[gy == person]
        if len(faces) == 0:
            continue
        if method == "centroid":
            d = np.linalg.norm(Q[rows] - _unit(faces.mean(axis=0, keepdims=True)), axis=1)
        else:
            dist = np.sqrt(np.maximum(2.0 - 2.0 * Q[rows] @ faces.T, 0.0))
            k = 1 if method == "nearest" else min(3, len(faces))
            d = np.sort(dist, axis=1)[:, :k].mean(axis=1)
        out[rows] = 1.0 - d / 2.0
    return out


def person_scores(gallery_X, gallery_y, X, method: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """Return (people, S): every gallery person and S[i, j], the :func:`gallery_scores` of face i as person j."""
    people = np.unique(np.asarray(gallery_y, dtype=object))
    X = np.asarray(X)
    S = np.column_stack([gallery_scores(gallery_X, gallery_y, X, np.full(len(X), p, dtype=object), method)
                         for p in people]) if len(X) else np.zeros((0, len(people)))
    return people, S


def choose_threshold(impostor_scores: np.ndarray, far: float = 0.01, confidence: float | None = None) -> float:
    """Return the lowest threshold t such that at most ``far`` of the impostor scores are > t.

    With ``confidence`` (e.g. 0.95), the lowest threshold whose *one-sided Clopper-Pearson upper bound* of the
    false-accept rate, estimated from these impostors, is at most ``far``: the validation impostors are a sample,
    and a threshold placed at exactly ``far`` on them lets through more than ``far`` of new strangers about half
    the time. On 1,100 impostors and ``far`` = 1 % it accepts at most 5 of them (0.45 %); when even accepting
    none cannot give that confidence (small pools), none is accepted.
    """
    scores = np.sort(np.asarray(impostor_scores, dtype=float))[::-1]
    n = len(scores)
    if n == 0:
        raise ValueError("no impostor scores: cannot choose an open-set threshold")
    k = int(np.floor(far * n))  # impostors we may accept
    if confidence is not None:
        from scipy.stats import beta

        upper = beta.ppf(confidence, np.arange(k + 1) + 1, n - np.arange(k + 1))  # bound after accepting 0..k
        k = int(np.flatnonzero(upper <= far).max()) if (upper <= far).any() else 0
    return float(scores[min(k, n - 1)])


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
    """A trained gallery classifier with its open-set threshold: what ``python -m nnprak predict`` loads.

    With a gallery (``gallery_X``, ``gallery_y``: the training embeddings) the accept/reject score is
    :func:`gallery_scores` with ``score`` (one of :data:`SCORE_METHODS`); without one (models saved before),
    it is the classifier's own :func:`confidence`.
    """

    model: object                      # fitted sklearn Pipeline (or GridSearchCV)
    threshold: float                   # scores at or below are "unknown"
    backend: str                       # embedder that made the training embeddings
    kind: str = "svm_linear"
    info: dict = field(default_factory=dict)
    gallery_X: np.ndarray | None = None
    gallery_y: np.ndarray | None = None
    score: str = "classifier"

    @property
    def people(self) -> list[str]:
        """Return the gallery's people, sorted."""
        return sorted(map(str, estimator(self.model).classes_))

    def scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (the person the classifier names, the open-set score) for embeddings X."""
        X = np.asarray(X)
        if len(X) == 0:
            return np.empty(0, dtype=object), np.empty(0)
        if self.gallery_X is None or self.score == "classifier":
            return confidence(self.model, X)
        names = estimator(self.model).predict(X)
        return names, gallery_scores(self.gallery_X, self.gallery_y, X, names, self.score)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (names or "unknown", confidence) for embeddings X."""
        names, score, _ = self.predict_with_closest(X)
        return names, score

    def predict_with_closest(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (names or "unknown", confidence, the gallery person ranked first) for embeddings X."""
        closest, score = self.scores(X)
        return apply_threshold(closest, score, self.threshold), score, closest

    def top_k(self, X: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Return, per face, up to ``k`` (person, score) candidates: the classifier's choice first, then the other
        gallery people by open-set score (the scores are those the threshold is compared with)."""
        X = np.asarray(X)
        named, own = self.scores(X)
        if self.gallery_X is None or self.score == "classifier":
            est = estimator(self.model)
            people = np.asarray(est.classes_, dtype=object)
            S = est.predict_proba(X) if hasattr(est, "predict_proba") else np.zeros((len(X), len(people)))
        else:
            people, S = person_scores(self.gallery_X, self.gallery_y, X, self.score)
        out = []
        for i in range(len(X)):
            rest = [(str(people[j]), float(S[i, j])) for j in np.argsort(-S[i]) if people[j] != named[i]]
            out.append([(str(named[i]), float(own[i]))] + rest[:max(0, k - 1)])
        return out

    def gallery_name(self, name: str) -> str:
        """Return the gallery's name for ``name`` when it is one of its people written otherwise ("george w bush" is
        ``George_W_Bush``, as predict's pictures show it; :func:`nnprak.data.person_key`), else ``name`` itself."""
        from .data import person_key

        same = [p for p in self.people if person_key(p) == person_key(name)]
        return same[0] if same else str(name)

    def enroll(self, name: str, X_new: np.ndarray) -> "FaceClassifier":
        """Add (or extend) the person ``name`` with embeddings ``X_new``, refit the classifier with its chosen
        setting on the whole gallery and return self. The threshold stays: the accept/reject rule is the same for
        everyone. A gallery person written otherwise (:meth:`gallery_name`) is extended, not added a second time.

        Raises:
            ValueError: no gallery is stored (a model saved before enrolment existed), or no embeddings given.
        """
        from sklearn.base import clone

        if self.gallery_X is None:
            raise ValueError("this model stores no gallery faces: re-run notebooks/05_embeddings_svm_knn.ipynb "
                             "(or `make run`) to save one that can enrol people")
        X_new = np.asarray(X_new, dtype=np.float64).reshape(-1, np.asarray(self.gallery_X).shape[1])
        if len(X_new) == 0:
            raise ValueError(f"no face embeddings to enrol {name!r}")
        name = self.gallery_name(name)
        self.gallery_X = np.vstack([self.gallery_X, X_new]).astype(np.float32)
        self.gallery_y = np.concatenate([np.asarray(self.gallery_y, dtype=object),
                                         np.full(len(X_new), name, dtype=object)])
        est = estimator(self.model)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
            self.model = clone(est).fit(self.gallery_X, self.gallery_y)
        self.info = {**self.info, "classes": sorted(map(str, set(self.gallery_y))),
                     "enrolled": sorted(set(self.info.get("enrolled", [])) | {name})}
        return self

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

    ``model``: a :class:`FaceClassifier` (its open-set score) or a fitted classifier (its :func:`confidence`).
    Faces the detector missed count as errors in every metric, never silently dropped.
    """
    X = np.asarray(X)
    ok = ~np.isnan(X).any(axis=1)
    pred = np.full(len(X), missing_label, dtype=object)
    score = np.zeros(len(X))
    if ok.any():
        pred[ok], score[ok] = model.scores(X[ok]) if isinstance(model, FaceClassifier) else confidence(model, X[ok])
    return pred, score


def _finite(X) -> np.ndarray:
    X = np.asarray(X)
    return X[~np.isnan(X).any(axis=1)] if len(X) else X


def compare_scores(model, gallery_X, gallery_y, X_val, y_val, X_val_impostors, far: float = 0.01,
                   methods=("classifier",) + SCORE_METHODS) -> dict[str, dict]:
    """Return, per open-set score, how well it separates known validation faces from validation impostors.

    ``auc``: the probability that a correctly named known face scores above an impostor; ``dir``: the DIR on
    the validation faces at the threshold that accepts ``far`` of the validation impostors. (Known validation
    faces and impostors both stay out of the gallery, as test faces do.)
    """
    from sklearn.metrics import roc_auc_score

    X_val, y_val = np.asarray(X_val), np.asarray(y_val, dtype=object)
    ok = ~np.isnan(X_val).any(axis=1)
    X_val, y_val, X_imp = X_val[ok], y_val[ok], _finite(X_val_impostors)
    out = {}
    for m in methods:
        fc = FaceClassifier(model, 0.0, "", gallery_X=gallery_X, gallery_y=gallery_y, score=m)
        pred, known = fc.scores(X_val)
        imp = fc.scores(X_imp)[1]
        correct = pred == y_val
        t = choose_threshold(imp, far)
        out[m] = {"auc": float(roc_auc_score(np.r_[np.ones(correct.sum()), np.zeros(len(imp))],
                                             np.r_[known[correct], imp])),
                  "dir": float(np.mean((known > t) & correct)), "threshold": t}
    return out


def best_score(comparison: dict[str, dict]) -> str:
    """Return the gallery score (:data:`SCORE_METHODS`) of :func:`compare_scores` with the highest validation DIR,
    then AUC, then the simpler one (the order of SCORE_METHODS).

    The classifier's own confidence is compared but never chosen: it changes whenever the classifier is refit
    (enrolment), and a distance to the gallery means the same for every person."""
    methods = [m for m in SCORE_METHODS if m in comparison]
    return max(methods, key=lambda m: (comparison[m]["dir"], comparison[m]["auc"], -methods.index(m)))


def bootstrap_open_set(known_correct, known_scores, val_impostor_scores, test_impostor_scores, far: float,
                       n_boot: int = 1000, seed: int = config.SEED, level: float = 0.95,
                       confidence: float | None = None) -> dict:
    """Return percentile confidence intervals ``dir_ci``, ``far_ci`` (each (low, high)) of the whole procedure.

    Each of ``n_boot`` replicates resamples the validation impostors (and re-chooses the threshold for ``far``),
    the known test faces and the test impostors, with replacement, and measures DIR and FAR again.
    """
    rng = np.random.default_rng(seed)
    correct, ks = np.asarray(known_correct, bool), np.asarray(known_scores, float)
    vi, ti = np.asarray(val_impostor_scores, float), np.asarray(test_impostor_scores, float)
    dirs, fars = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        t = choose_threshold(vi[rng.integers(0, len(vi), len(vi))], far, confidence)
        k = rng.integers(0, len(ks), len(ks))
        dirs[b] = np.mean((ks[k] > t) & correct[k])
        fars[b] = np.mean(ti[rng.integers(0, len(ti), len(ti))] > t)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {"dir_ci": tuple(float(v) for v in np.percentile(dirs, q)),
            "far_ci": tuple(float(v) for v in np.percentile(fars, q)), "n_boot": int(n_boot), "level": level}


def open_set_evaluation(model, X_val_impostors, X_test, y_test, X_test_impostors, far: float = 0.01,
                        far_targets=None, n_boot: int = 0, seed: int = config.SEED,
                        confidence: float | None = None) -> dict:
    """Return the threshold chosen on validation impostors for ``far`` and the open-set rates on the test split.

    ``model``: a :class:`FaceClassifier` (its open-set score is used) or a fitted classifier (its
    :func:`confidence`). Keys: ``threshold``, ``far_target``, ``rates`` (dir/far/frr on test, see
    :func:`open_set_rates`), ``curve`` (DIR vs FAR on test) and ``at``: per target in ``far_targets``
    (default: ``far`` only) the threshold, the rates and, with ``n_boot`` > 0, their bootstrap confidence
    intervals (:func:`bootstrap_open_set`). The main threshold (for ``far``) is chosen with ``confidence``
    (see :func:`choose_threshold`); the ``at`` rows place the threshold at exactly each target. Rows with NaN
    embeddings (no face found) are left out of the impostor sets and count as rejected known faces.
    """
    fc = model if isinstance(model, FaceClassifier) else FaceClassifier(model, 0.0, "")
    val_imp, imp = fc.scores(_finite(X_val_impostors))[1], fc.scores(_finite(X_test_impostors))[1]
    pred, known_scores = predict_with_missing(fc, X_test)
    correct = pred == np.asarray(y_test, dtype=object)
    at = {}
    for target in (far_targets or (far,)):
        t = choose_threshold(val_imp, target)
        at[target] = {"threshold": t, "rates": open_set_rates(y_test, pred, known_scores, imp, t)}
        if n_boot:
            at[target]["rates"].update(bootstrap_open_set(correct, known_scores, val_imp, imp, target, n_boot, seed))
    if far in at and confidence is None:
        main = at[far]
    else:
        t = choose_threshold(val_imp, far, confidence)
        main = {"threshold": t, "rates": open_set_rates(y_test, pred, known_scores, imp, t)}
        if n_boot:
            main["rates"].update(bootstrap_open_set(correct, known_scores, val_imp, imp, far, n_boot, seed,
                                                    confidence=confidence))
    return {"threshold": main["threshold"], "far_target": far, "rates": main["rates"], "at": at,
            "score": fc.score, "pred": pred, "known_scores": known_scores, "impostor_scores": imp,
            "curve": dir_far_curve(y_test, pred, known_scores, imp)}


def open_set_model(search, kind: str, X_train, y_train, X_val, y_val, X_val_impostors, X_test, y_test,
                   X_test_impostors, backend: str, info: dict | None = None, score: str = "auto", far: float = 0.01,
                   far_targets=None, n_boot: int = 0, seed: int = config.SEED,
                   confidence: float | None = None) -> tuple[FaceClassifier, dict]:
    """Return (the classifier as saved for ``predict``, its open-set evaluation) for a fitted ``search``.

    The gallery is the training split; ``score="auto"`` takes the open-set score that does best on the
    validation faces and validation impostors (:func:`compare_scores`, kept as ``evaluation["comparison"]``);
    the threshold is the one for ``far`` (with ``confidence``) on the validation impostors;
    :func:`open_set_evaluation` measures it.
    """
    est = estimator(search)
    X_train, y_train = np.asarray(X_train, dtype=np.float32), np.asarray(y_train, dtype=object)
    comparison = compare_scores(est, X_train, y_train, X_val, y_val, X_val_impostors, far)
    score = best_score(comparison) if score == "auto" else score
    fc = FaceClassifier(est, 0.0, backend, kind, info=dict(info or {}), gallery_X=X_train, gallery_y=y_train,
                        score=score)
    ev = open_set_evaluation(fc, X_val_impostors, X_test, y_test, X_test_impostors, far, far_targets, n_boot, seed,
                             confidence)
    fc.threshold = ev["threshold"]
    fc.info.update(score=score, far_target=far, far_confidence=confidence, classes=sorted(map(str, set(y_train))))
    ev["comparison"] = comparison
    return fc, ev


def open_set_summary(evaluation: dict) -> dict:
    """Return the JSON-friendly part of an :func:`open_set_model` evaluation (for results/ and tables)."""
    return {"score": evaluation["score"], "threshold": evaluation["threshold"],
            "far_target": evaluation["far_target"], "rates": evaluation["rates"],
            "at": {f"{t:g}": v for t, v in evaluation["at"].items()},
            "comparison": evaluation.get("comparison", {}),
            "curve": {k: [round(float(x), 6) for x in evaluation["curve"][k]] for k in ("far", "dir")}}


def best_open_set(evaluations: dict[str, dict]) -> str:
    """Return the name of the model whose chosen open-set score has the highest validation DIR, then AUC (ties to
    the first model).

    Chosen on the validation faces and validation impostors only (:func:`compare_scores`, kept by
    :func:`open_set_model` as ``evaluation["comparison"]``): the test rates are measured once, after the choice.
    """
    names = list(evaluations)

    def val(name):
        ev = evaluations[name]
        c = ev.get("comparison", {}).get(ev["score"])
        if c is None:
            raise ValueError(f"the open-set evaluation of {name!r} has no validation comparison of its score "
                             f"{ev['score']!r}: make it with classify.open_set_model")
        return c["dir"], c["auc"], -names.index(name)
    return max(names, key=val)


def open_set_table(evaluations: dict[str, dict]) -> "pd.DataFrame":
    """Return one row per (model, threshold rule): first the main rule (the threshold whose 95 % upper bound of
    the validation FAR is at the target: what ``predict`` uses), then one row per plain FAR target (the FAR
    measured on validation equals the target); score, threshold, test DIR and FAR with their confidence
    intervals, FRR and the numbers of faces (the report's open-set table)."""
    import pandas as pd

    rows = []
    for name, ev in evaluations.items():
        rules = [(ev["far_target"], "95 % bound", ev["threshold"], ev["rates"])]
        rules += [(float(t), "estimate", at["threshold"], at["rates"])
                  for t, at in sorted(ev["at"].items(), key=lambda kv: -float(kv[0]))]
        for target, rule, threshold, r in rules:
            ci = lambda k: f"{r[k + '_ci'][0]:.1%}–{r[k + '_ci'][1]:.1%}" if k + "_ci" in r else ""
            rows.append({"model": name, "score": ev["score"], "FAR target": target, "rule": rule,
                         "threshold": threshold, "DIR": r["dir"], "DIR 95% CI": ci("dir"), "FAR": r["far"],
                         "FAR 95% CI": ci("far"), "FRR": r["frr"], "known faces": r["n_known"],
                         "impostor faces": r["n_impostors"]})
    return pd.DataFrame(rows)


def score_table(evaluations: dict[str, dict]) -> "pd.DataFrame":
    """Return the validation comparison of open-set scores (:func:`compare_scores`) of every model."""
    import pandas as pd

    rows = [{"model": name, "score": m, "AUC": c["auc"], "val DIR": c["dir"], "chosen": m == ev["score"]}
            for name, ev in evaluations.items() for m, c in ev.get("comparison", {}).items()]
    return pd.DataFrame(rows)
