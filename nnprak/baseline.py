"""The classic baseline of notebook 03: eigenfaces (PCA with whitening) and an RBF support vector machine.

Turk & Pentland's eigenfaces (1991) project a grey face onto the principal components of the training faces;
an SVM then separates the people in that space (the scikit-learn face recognition example). The network of
notebook 03 is compared with this, on the same splits of the same crops::

    from nnprak import baseline
    cached = train.cached_splits(table, 64, path_column=faces.crop_column(cfg.scratch["crop"]), classes=classes)
    run = baseline.eigenfaces_baseline(cached, max_cv_folds=cfg.max_cv_folds)
    run["row"]          # accuracy, macro-F1, components, C, seconds
"""
from __future__ import annotations

import time

import numpy as np

EIGEN_SIZE = 32
"""Side in pixels of the grey faces the eigenfaces see (1,024 numbers per face, like the sklearn example's 50x37)."""


def gray_matrix(images, size: int = EIGEN_SIZE) -> np.ndarray:
    """Return an (N, size*size) float32 matrix of grey faces in [0, 1] from (N, 3, H, W) uint8 images."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(images).float().div(255)
    from .train import luma

    grey = luma(x[:, 0], x[:, 1], x[:, 2]).unsqueeze(1)
    if grey.shape[-1] != size or grey.shape[-2] != size:
        grey = F.interpolate(grey, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return grey.flatten(1).numpy().astype(np.float32)


def eigenfaces_pipeline(n_components: int | float = 0.95, C: float = 10.0, gamma: str | float = "scale"):
    """Return an unfitted Pipeline: per-pixel centring, PCA(whiten=True), RBF SVC with balanced class weights."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC

    return Pipeline([("pca", PCA(n_components=n_components, whiten=True, svd_solver="full", random_state=0)),
                     ("svm", SVC(kernel="rbf", C=C, gamma=gamma, class_weight="balanced"))])


def fit_eigenfaces(X: np.ndarray, y, max_cv_folds: int = 5, n_jobs: int | None = None):
    """Return a fitted GridSearchCV over components (80/90/95 % of the variance) and C, folds from the data."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from .config import SEED, cv_folds

    _, counts = np.unique(np.asarray(y), return_counts=True)
    folds = cv_folds(counts, max_cv_folds)
    grid = {"pca__n_components": [0.80, 0.90, 0.95], "svm__C": [1.0, 10.0, 100.0, 1000.0]}   # gamma "scale": 1 / components
    search = GridSearchCV(eigenfaces_pipeline(), grid, cv=StratifiedKFold(folds, shuffle=True, random_state=SEED),
                          scoring="accuracy", n_jobs=n_jobs, refit=True)
    return search.fit(X, np.asarray(y))


def eigenfaces_baseline(cached: dict, size: int = EIGEN_SIZE, max_cv_folds: int = 5, split: str = "test") -> dict:
    """Fit eigenfaces + SVM on the train split of ``cached`` (``train.cached_splits``) and score it on ``split``.

    Returns ``{"row": {network, accuracy, macro_f1, balanced_accuracy, components, C, parameters,
    seconds}, "search": the fitted GridSearchCV, "y_true", "y_pred"}`` (labels are class indices). Training
    and validation images are both used for fitting: the grid search does its own cross-validation.
    """
    from .results import classification_metrics

    t0 = time.perf_counter()
    fit_splits = [s for s in ("train", "val") if s in cached and s != split]
    X = np.concatenate([gray_matrix(cached[s].images, size) for s in fit_splits])
    y = np.concatenate([np.asarray(cached[s].targets) for s in fit_splits])
    search = fit_eigenfaces(X, y, max_cv_folds=max_cv_folds)
    y_true = np.asarray(cached[split].targets)
    y_pred = search.predict(gray_matrix(cached[split].images, size))
    metrics = classification_metrics(y_true, y_pred)
    best = search.best_estimator_
    pca, svm = best.named_steps["pca"], best.named_steps["svm"]
    row = {"network": "eigenfaces + SVM", "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
           "balanced_accuracy": metrics["balanced_accuracy"], "components": int(pca.n_components_),
           "C": float(svm.C),
           "parameters": int(pca.components_.size + svm.support_vectors_.size),
           "seconds": time.perf_counter() - t0}
    row["minutes"] = row["seconds"] / 60
    return {"row": row, "search": search, "y_true": y_true, "y_pred": y_pred}
