"""Stage 03's experiments: train one scratch-CNN variant, the shortcut ablation and the seed loop.

Notebook 03 and ``bench/bench_scratch_seeds.py`` call these instead of writing their own loops::

    from nnprak import ablation
    cached = train.cached_splits(table, 64, path_column=faces.crop_column(cfg.scratch["crop"]), classes=classes)
    run = ablation.train_variant(cached, cfg.scratch, residual=True, seed=cfg.seed)   # one model
    table = ablation.shortcut_ablation(cached, cfg.scratch, depths=((1, 1, 1, 1), (2, 2, 2, 2)), seeds=(42,))
    ablation.seed_summary(table)        # mean and std per network over the seeds
    ablation.paired_table(bench)        # a seed bench's pairs face by face (exact McNemar test)

Every variant gets the same data, augmentation, optimiser and schedule (:func:`nnprak.train.fit_from_settings`);
only ``residual`` (shortcuts or not) and ``blocks`` (depth) change. A row of the tables holds the network's
name, depth, seed, epochs, best validation accuracy, test accuracy, macro-F1, balanced accuracy, parameters,
wall minutes and CPU minutes per thread (process CPU time / threads: the wall time of an otherwise idle machine).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import pandas as pd
import torch

from . import config, train
from .background import main_classes
from .models.scratch import count_parameters, from_settings, keep_classes
from .results import mean_std


def blocks_per_stage(blocks: Sequence[int]) -> str:
    """Return a depth as the report says it: ``"2"`` when every stage has two blocks, else e.g. ``"2-1-2-1"``."""
    blocks = [int(b) for b in blocks]
    return str(blocks[0]) if len(set(blocks)) == 1 else "-".join(map(str, blocks))


def network_name(residual: bool, blocks: Sequence[int]) -> str:
    """Return the table name of a variant, e.g. ``"ResNet 1-1-1-1"`` or ``"plain 2-2-2-2"``."""
    return f"{'ResNet' if residual else 'plain'} {'-'.join(str(int(b)) for b in blocks)}"


def scratch_data(table: pd.DataFrame, settings: dict, classes: Sequence[str], path_column: str | None = None,
                 background_table: pd.DataFrame | None = None, progress: bool = False) -> tuple[dict, dict, dict]:
    """Return ``(cached, training, fitted settings)``: the set's splits, the same with the background people's faces
    in the training split, and ``settings`` fitted to them by :func:`nnprak.config.scratch_for_data`.

    ``table``: notebook 02's crops; ``path_column``: the crops the network learns from (None: the fitted settings'
    ``crop``, which the rules take from the training faces' :func:`nnprak.faces.median_aligned_fill`; a crop column
    given here overrides the rule and becomes the fitted ``crop``); ``background_table``:
    :func:`nnprak.background.load_background` (None: the set alone). The splits are decoded once, at the fitted image
    size (e.g. larger for a small set).
    """
    from . import background, faces

    counted = path_column or faces.crop_column(settings["crop"])   # both variants exist for every face found
    n_train = int((faces.usable_crops(table, counted)["split"] == "train").sum())
    fill = faces.median_aligned_fill(table[table["split"] == "train"])
    bg = background.usable_background(background_table, counted, classes)
    fitted = config.scratch_for_data(settings, n_train, len(classes), 0 if bg is None else len(bg), fill)
    forced = {faces.crop_column(v): v for v in faces.VARIANTS}.get(path_column)
    if forced:
        fitted["crop"] = forced
    path_column = path_column or faces.crop_column(fitted["crop"])
    cached = train.cached_splits(table, int(fitted["image_size"]), path_column=path_column, classes=classes,
                                 progress=progress)
    return cached, background.with_background(cached, bg, path_column, progress=progress), fitted


def variant_loaders(cached: dict, settings: dict, seed: int = config.SEED):
    """Return ``(train, val, test)`` loaders over cached splits with the settings' size, augmentation and sampling."""
    size = int(settings["image_size"])
    train_tf = train.train_transforms(size, **settings.get("augment", {}))
    eval_tf = train.eval_transforms(size)
    return train.make_loaders(cached["train"].with_transform(train_tf), cached["val"].with_transform(eval_tf),
                              cached["test"].with_transform(eval_tf), batch_size=int(settings["batch_size"]),
                              balanced=settings.get("balanced", 0.5), seed=seed)


def train_variant(cached: dict, settings: dict, *, residual: bool = True, blocks: Sequence[int] | None = None,
                  seed: int = config.SEED, epochs: int | None = None, checkpoint_path=None, resume: bool = False,
                  progress: bool = True, threads: int | None = None,
                  on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train one scratch-CNN variant from ``settings`` (``cfg.scratch``) and return its row, history and model.

    ``cached`` is :func:`nnprak.train.cached_splits` at ``settings["image_size"]``, with the background people
    when :func:`nnprak.background.with_background` added them (the network then predicts the set's people only);
    ``blocks`` overrides the
    settings' depth; ``epochs`` the settings' schedule. Returns ``{"row": dict, "history": DataFrame,
    "model": the trained network (best epoch), "y_true", "y_pred", "probs"}``; ``row`` has the columns of the
    module text.
    """
    blocks = tuple(int(b) for b in (blocks if blocks is not None else settings["blocks"]))
    threads = int(threads if threads is not None else torch.get_num_threads())
    config.seed_everything(seed)
    loaders = variant_loaders(cached, settings, seed)
    model = from_settings(len(cached["train"].classes), settings, residual=residual, blocks=blocks)
    cpu0 = time.process_time()
    history = train.fit_from_settings(model, loaders, settings, epochs=epochs, checkpoint_path=checkpoint_path,
                                      resume=resume, max_minutes=settings.get("max_minutes"), seed=seed,
                                      progress=progress, on_epoch=on_epoch, val_classes=main_classes(cached))
    cpu = time.process_time() - cpu0
    keep_classes(model, main_classes(cached))   # drop the background people's outputs (nnprak.background)
    run = result_row(model, history, loaders, seed=seed, cpu_minutes_per_thread=cpu / 60 / max(threads, 1),
                     flip_tta=bool(settings.get("flip_tta", False)))
    return dict(run, history=history, model=model)


def result_row(model, history: pd.DataFrame, loaders, *, seed: int = config.SEED,
               cpu_minutes_per_thread: float | None = None, flip_tta: bool = False) -> dict:
    """Return ``{"row", "y_true", "y_pred", "probs"}`` of a trained scratch CNN on the test loader ``loaders[2]``.

    ``flip_tta``: each face is scored with its mirror image too (:func:`nnprak.train.predict`; ``cfg.scratch``'s
    ``flip_tta``).

    Used by :func:`train_variant` and by notebook 03 for its main model (trained with its own checkpoint),
    so that the main model's row can go into :func:`shortcut_ablation` via ``known`` (see :func:`row_key`).
    """
    from .results import classification_metrics

    y_true, y_pred, probs = train.predict(model, loaders[2], flip_tta=flip_tta)
    metrics = classification_metrics(y_true, y_pred)
    blocks = tuple(int(b) for b in model.blocks)
    row = {"network": network_name(model.residual, blocks), "residual": bool(model.residual),
           "blocks": "-".join(map(str, blocks)), "seed": int(seed), "epochs": len(history),
           "steps": len(history) * len(loaders[0]), "parameters": count_parameters(model),
           "best val accuracy": float(history["val_acc"].max()),
           **{k: metrics[k] for k in ("accuracy", "macro_f1", "balanced_accuracy")},
           "minutes": float(history["seconds"].sum()) / 60,
           "cpu_minutes_per_thread": float("nan") if cpu_minutes_per_thread is None else float(cpu_minutes_per_thread)}
    return {"row": row, "y_true": y_true, "y_pred": y_pred, "probs": probs}


def row_key(row: dict) -> tuple:
    """Return the ``known`` key of a result row for :func:`shortcut_ablation`: ``(residual, blocks, seed)``."""
    return bool(row["residual"]), tuple(int(b) for b in str(row["blocks"]).split("-")), int(row["seed"])


def shortcut_ablation(cached: dict, settings: dict, *, depths: Sequence[Sequence[int]] | None = None,
                      seeds: Sequence[int] = (config.SEED,), epochs: int | None = None, known: dict | None = None,
                      progress: bool = True, checkpoint_dir=None, resume: bool = False,
                      histories: dict | None = None) -> pd.DataFrame:
    """Return one row per (depth, residual or plain, seed): the shortcut ablation, optionally over seeds.

    ``depths`` are blocks per stage (default: the settings' ``ablation_depths``, else its depth); each depth is trained with and
    without shortcuts, same recipe. ``known`` maps ``(residual, blocks tuple, seed)`` to a row already
    trained (e.g. notebook 03's main model: ``{(True, (2, 2, 2, 2), 42): run["row"]}``), which is reused.
    ``histories``, when given a dict, is filled with ``network (seed) -> history`` for learning curves.
    ``checkpoint_dir`` keeps one checkpoint per run (``scratch_<network>_s<seed>.pt``); ``resume=True`` continues
    from those (a finished run returns at once: only after an interruption, never after changing the settings).
    """
    from pathlib import Path

    depths = [tuple(int(b) for b in d) for d in (depths or settings.get("ablation_depths") or [settings["blocks"]])]
    known = dict(known or {})
    rows = []
    for blocks in depths:
        for residual in (True, False):
            for seed in seeds:
                key = (bool(residual), blocks, int(seed))
                if key in known:
                    rows.append(dict(known[key]))
                    continue
                ckpt = None
                if checkpoint_dir is not None:
                    name = network_name(residual, blocks).replace(" ", "_")
                    ckpt = Path(checkpoint_dir) / f"scratch_{name}_s{seed}.pt"
                run = train_variant(cached, settings, residual=residual, blocks=blocks, seed=seed, epochs=epochs,
                                    checkpoint_path=ckpt, resume=resume and ckpt is not None, progress=progress)
                rows.append(run["row"])
                if histories is not None:
                    histories[f"{run['row']['network']} (seed {seed})"] = run["history"]
    return pd.DataFrame(rows)


def seed_summary(table: pd.DataFrame, columns: Sequence[str] = ("accuracy", "macro_f1", "best val accuracy",
                                                                 "verification", "cpu_minutes_per_thread")
                 ) -> pd.DataFrame:
    """Return mean, std (ddof=1; 0 for one seed) and the number of seeds per network of an ablation table."""
    columns = [c for c in columns if c in table.columns]
    g = table.groupby("network", sort=False)
    out = g[columns].mean().add_suffix(" mean").join(g[columns].std(ddof=1).fillna(0.0).add_suffix(" std"))
    out["seeds"] = g.size()
    order = [f"{c} {s}" for c in columns for s in ("mean", "std")] + ["seeds"]
    return out[order].reset_index()


def summary_json(table: pd.DataFrame) -> dict:
    """Return ``{network: {metric: {"mean", "std", "values"}}, ...}`` of an ablation table (for a results file)."""
    out = {}
    for name, g in table.groupby("network", sort=False):
        entry = {"seeds": [int(s) for s in g["seed"]], "blocks": str(g["blocks"].iloc[0]),
                 "residual": bool(g["residual"].iloc[0]), "parameters": int(g["parameters"].iloc[0])}
        for col in ("accuracy", "macro_f1", "balanced_accuracy", "best val accuracy", "verification", "epochs",
                    "minutes", "cpu_minutes_per_thread"):
            if col in g and g[col].notna().all():
                vals = [float(v) for v in g[col]]
                std = float(g[col].std(ddof=1)) if len(vals) > 1 else 0.0
                entry[col.replace(" ", "_")] = {"mean": float(sum(vals) / len(vals)), "std": std, "values": vals}
        out[name] = entry
    return out


def _read_json(path) -> dict | None:
    """Return a results file's JSON, or None when it is missing or unreadable."""
    import json
    from pathlib import Path

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_seed_bench(path, n_people: int, n_train: int, n_background: int = 0,
                    n_test: int | None = None) -> dict | None:
    """Return ``bench/bench_scratch_seeds.py``'s results file if it was measured on this data, else None.

    "This data" means the same number of people, of training images and of background people's images
    (:mod:`nnprak.background`; LFW-62 for the committed file) and, when ``n_test`` is given, of test images (a file
    without that count is then refused): the numbers of another data set must not appear as this one's. A missing or
    unreadable file gives None.
    """
    bench = _read_json(path)
    return bench if bench is not None and same_data(bench, n_people, n_train, n_background, n_test) else None


def same_data(bench: dict, n_people: int, n_train: int, n_background: int = 0, n_test: int | None = None) -> bool:
    """Return whether a seed-bench results file was measured on this data: the same number of people, of training
    images, of background people's images and, when ``n_test`` is given, of test images (a file without it: False)."""
    seen = (bench.get("people", -1), bench.get("train_images", -1), bench.get("background_images", 0))
    if tuple(int(v) for v in seen) != (int(n_people), int(n_train), int(n_background)):
        return False
    return n_test is None or int(bench.get("test_images", -1)) == int(n_test)


def seed_table(bench: dict | None, run_rows: Sequence[dict] = (), extra_rows: Sequence[dict] = ()) -> pd.DataFrame:
    """Return the ablation table of notebook 03 and the report: this run's networks, the seed bench, baselines.

    Rows: ``run_rows`` (networks trained in this run, one seed each: :func:`result_row` rows), every network of
    ``bench`` (:func:`load_seed_bench`; mean ± std in percent over its seeds) and ``extra_rows`` (e.g. the
    eigenfaces baseline, one fit). Columns: network, source, seeds, parameters, test accuracy (%), macro-F1 (%),
    minutes (training, per run); when the bench measured it (``--verify``), also "unseen-people verification (%)":
    the penultimate features' LFW verification on pairs without the network's people.
    """
    ver = VERIFICATION_COLUMN

    def single(row: dict) -> dict:
        seed = f" (seed {row['seed']})" if "seed" in row else ""
        return {"network": row["network"], "source": "this run" + seed, "seeds": 1 if seed else "–",
                "parameters": int(row["parameters"]), "test accuracy (%)": f"{row['accuracy'] * 100:.1f}",
                "macro-F1 (%)": f"{row['macro_f1'] * 100:.1f}",
                ver: f"{row['verification'] * 100:.1f}" if row.get("verification") is not None else "",
                "minutes": f"{row['minutes']:.1f}"}

    rows = [single(r) for r in run_rows]
    for name, entry in depth_order((bench or {}).get("summary") or {}):
        rows.append({"network": name, "source": "seed bench", "seeds": len(entry.get("seeds", [])),
                     "parameters": int(entry.get("parameters", 0)),
                     "test accuracy (%)": mean_std(entry.get("accuracy")), "macro-F1 (%)": mean_std(entry.get("macro_f1")),
                     ver: mean_std(entry.get("verification")) if entry.get("verification") else "",
                     "minutes": f"{entry['minutes']['mean']:.1f}" if entry.get("minutes") else ""})
    rows += [single(r) for r in extra_rows]
    columns = ["network", "source", "seeds", "parameters", "test accuracy (%)", "macro-F1 (%)", ver, "minutes"]
    table = pd.DataFrame(rows, columns=columns)
    return table if (table[ver] != "").any() else table.drop(columns=ver)


def depth_order(summary: dict) -> list[tuple[str, dict]]:
    """Return a seed bench's ``summary`` items shallowest first, each ResNet before its plain twin (runs merged later
    come first in the file)."""
    def key(item):
        blocks = str(item[1].get("blocks", ""))
        return sum(int(b) for b in blocks.split("-") if b.isdigit()), not item[1].get("residual", True)
    return sorted(summary.items(), key=key)


VERIFICATION_COLUMN = "unseen-people verification (%)"
"""The :func:`seed_table` column of the features' LFW verification on pairs without the network's people."""


def bench_histories(bench: dict | None, seed: int | None = None, skip: Sequence[str] = ()) -> dict[str, pd.DataFrame]:
    """Return ``{"<network> (seed s)": history}`` of the seed bench's runs that kept their history (first seed by default).

    ``skip``: networks left out, e.g. the one this run trained itself (its curve is already drawn).
    """
    out = {}
    for run in (bench or {}).get("runs") or []:
        if not run.get("history") or run["network"] in skip:
            continue
        s = int(run["seed"])
        if seed is None:
            seed = s
        if s == seed:
            out[f"{run['network']} (seed {s})"] = pd.DataFrame(run["history"])
    return out


def seed_numbers(bench: dict | None, run_rows: Sequence[dict] = ()) -> dict[str, str]:
    """Return the report's ablation numbers (LaTeX) from the seed bench and the networks trained in this run.

    ``ResNetSeedAcc`` / ``PlainSeedAcc``: test accuracy mean ± std of the 1-1-1-1 pair over the bench's seeds,
    ``DeepResNetAcc`` / ``DeepPlainAcc``: the same for the deepest pair the bench has, ``SeedCount``: its number of
    seeds; a network the bench lacks is taken from ``run_rows`` (one seed), else "not measured on this data".
    ``ResNetSeedVer`` / ``PlainSeedVer`` / ``DeepResNetVer`` / ``DeepPlainVer``: the unseen-people verification of
    their features over the bench's seeds (``--verify``), else "not measured on this data".
    ``SeedPairTest`` / ``DeepPairTest``: each pair face by face (:func:`paired_test`), e.g. "31 against 32 faces,
    $p = 1.00$" (faces only the ResNet / only the plain twin named right, exact McNemar test), else "not measured on
    this data".
    """
    summary = (bench or {}).get("summary") or {}
    runs = {r["network"]: r for r in run_rows}
    missing = "not measured on this data"

    def stat(name: str, key: str = "accuracy") -> str:
        entry = summary.get(name) or {}
        if entry.get(key):
            one = "" if len(entry.get("seeds", [])) > 1 else " (one seed)"
            return mean_std(entry[key], "\\%", " $\\pm$ ") + one
        if name in runs and runs[name].get(key) is not None:
            return f"{runs[name][key] * 100:.1f}\\% (one seed)"
        return missing

    depths = sorted({str(e["blocks"]) for e in summary.values()} | {str(r["blocks"]) for r in run_rows},
                    key=lambda b: sum(int(x) for x in b.split("-")))
    deep = depths[-1] if len(depths) > 1 else "2-2-2-2"   # only one depth measured: the deeper pair is missing
    seeds = max((len(e.get("seeds", [])) for e in summary.values()), default=1)
    pairs = {"ResNetSeed": "ResNet 1-1-1-1", "PlainSeed": "plain 1-1-1-1", "DeepResNet": f"ResNet {deep}",
             "DeepPlain": f"plain {deep}"}

    def paired(blocks: str) -> str:
        return pair_text(paired_test(bench, f"ResNet {blocks}", f"plain {blocks}"), missing)

    return {"DeepBlocks": deep, "SeedCount": str(seeds),
            **{f"{macro}Acc": stat(name) for macro, name in pairs.items()},
            **{f"{macro}Ver": stat(name, "verification") for macro, name in pairs.items()},
            "SeedPairTest": paired("1-1-1-1"), "DeepPairTest": paired(deep)}


def paired_test(bench: dict | None, first: str, second: str, second_bench: dict | None = None) -> dict | None:
    """Return the exact McNemar test of two networks of a seed bench on the same test faces, or None without them.

    Each run of ``bench/bench_scratch_seeds.py`` keeps, per test face in the split's order, whether the network named
    it right (``test_correct``). The runs of ``first`` and ``second`` with the same seed are paired face by face and
    the seeds both have are pooled. ``second_bench``: take ``second`` from another results file of the same data (e.g.
    one measured with ``--set preact=True``; the network names may then be equal). Returns ``{"seeds", "faces", "first_only", "second_only", "p_value"}``:
    ``first_only`` counts the faces only ``first`` named right, ``second_only`` the other way round, and ``p_value``
    is the two-sided exact binomial test of ``first_only`` out of ``first_only + second_only`` at 1/2 (McNemar's test
    without the chi-square approximation; 1 when no face differs). Faces both networks got right or wrong say
    nothing about which is better, so only these two counts matter. Pooling the seeds counts the same faces once per
    seed: a face hard for one run tends to be hard for the others, so the pooled test tends to call a difference too
    readily rather than too late, and a large p-value is all the more a tie.
    """
    from scipy.stats import binomtest

    def correct(b: dict | None, network: str) -> dict[int, list]:
        return {int(r.get("seed", -1)): r["test_correct"] for r in (b or {}).get("runs") or []
                if r.get("network") == network and r.get("test_correct")}

    ours, theirs = correct(bench, first), correct(bench if second_bench is None else second_bench, second)
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return None
    first_only = second_only = faces = 0
    for seed in seeds:
        a, b = ours[seed], theirs[seed]
        if len(a) != len(b):
            raise ValueError(f"{first} and {second} (seed {seed}) were tested on {len(a)} and {len(b)} faces: "
                             "not the same test set; re-run bench/bench_scratch_seeds.py for both")
        faces += len(a)
        first_only += sum(1 for x, y in zip(a, b) if x and not y)
        second_only += sum(1 for x, y in zip(a, b) if y and not x)
    n = first_only + second_only
    p = float(binomtest(first_only, n, 0.5).pvalue) if n else 1.0
    return {"seeds": seeds, "faces": faces, "first_only": first_only, "second_only": second_only, "p_value": p}


def p_text(p: float) -> str:
    """Return a p-value as the report writes it: ``"= 0.38"``, ``"= 0.008"`` below 0.01, ``"< 0.001"`` below 0.001."""
    p = float(p)
    return "< 0.001" if p < 0.001 else f"= {p:.3f}" if p < 0.01 else f"= {p:.2f}"


def paired_table(bench: dict | None) -> pd.DataFrame:
    """Return one row per depth of a seed bench: each ResNet against its plain twin, face by face (:func:`paired_test`).

    Columns: depth, seeds, test faces (over the seeds), faces only the ResNet named right, faces only the plain
    network named right, and the exact McNemar p-value (two significant digits). Depths whose runs lack the per-face
    results are left out.
    """
    rows = []
    for name, entry in depth_order((bench or {}).get("summary") or {}):
        if not entry.get("residual", True):
            continue
        blocks = str(entry.get("blocks", ""))
        test = paired_test(bench, name, f"plain {blocks}")
        if test is not None:
            rows.append({"depth": blocks, "seeds": len(test["seeds"]), "test faces": test["faces"],
                         "only the ResNet right": test["first_only"], "only the plain twin right": test["second_only"],
                         "McNemar p": float(f"{test['p_value']:.2g}")})
    return pd.DataFrame(rows, columns=["depth", "seeds", "test faces", "only the ResNet right",
                                       "only the plain twin right", "McNemar p"])


def _residual_entry(bench: dict, blocks: int | None = None) -> tuple[str | None, dict | None]:
    """Return ``(name, summary entry)`` of a seed bench's first residual network (with ``blocks`` in every stage, if
    given), or ``(None, None)``."""
    return next(((name, e) for name, e in (bench.get("summary") or {}).items() if e.get("residual", True) and (
        blocks is None or set(str(e.get("blocks", "")).split("-")) == {str(blocks)})), (None, None))


def _small_entry(bench: dict) -> dict | None:
    """Return a small-data bench's residual network at the small-data rule's depth (:data:`config.SMALL_DATA_BLOCKS`)."""
    return _residual_entry(bench, config.SMALL_DATA_BLOCKS)[1]


def _photo_points(bench: dict) -> str:
    """Return the points of test accuracy one test photo is worth in a seed bench (``--`` without per-face results)."""
    n = {len(r["test_correct"]) for r in bench.get("runs", []) if r.get("test_correct")}
    return f"{100 / n.pop():.2f}" if len(n) == 1 else "--"


def small_data_numbers(path, alone_path=None) -> dict[str, str]:
    """Return the report's macros of ``bench/bench_small_data.py``'s results file ("--" for each when it is missing).

    The numbers are those of the residual network at the small-data rule's depth (:data:`config.SMALL_DATA_BLOCKS`).

    ``SmallPeople`` / ``SmallTrain``: people and training images of the set, ``SmallSeeds``: seeds of the scratch
    CNN, ``SmallAcc``: its test accuracy mean ± std, ``SmallEigenAcc``: eigenfaces + SVM on the same crops and split,
    ``SmallErrorCut``: the share of the eigenfaces' test errors the CNN avoids (``1 - error_cnn / error_eigenfaces``),
    ``SmallBackground``: the background people it also learnt from (:mod:`nnprak.background`). ``alone_path``: the
    same bench with ``--set background=False`` (the set alone, the small-data recipe), its accuracy ``SmallAloneAcc``.
    ``SmallPhotoPoints``: the points of test accuracy one test photo is worth (100 / the test photos of a run).
    """
    keys = ("SmallPeople", "SmallTrain", "SmallSeeds", "SmallAcc", "SmallEigenAcc", "SmallErrorCut",
            "SmallBackground", "SmallAloneAcc", "SmallPhotoPoints")
    bench = _read_json(path) or {}
    entry = _small_entry(bench)
    eigen = (bench.get("eigenfaces") or {}).get("accuracy")
    if entry is None or eigen is None:
        return dict.fromkeys(keys, "--")
    alone = _small_entry(_read_json(alone_path) or {}) if alone_path is not None else None
    cut = 1 - (1 - entry["accuracy"]["mean"]) / (1 - eigen) if eigen < 1 else float("nan")
    return {"SmallPeople": str(bench["people"]), "SmallTrain": str(bench["train_images"]),
            "SmallSeeds": str(len(entry["seeds"])), "SmallAcc": mean_std(entry["accuracy"], "\\%", " $\\pm$ "),
            "SmallEigenAcc": f"{100 * eigen:.1f}\\%", "SmallErrorCut": f"{100 * cut:.0f}\\%",
            "SmallBackground": str(bench.get("background_people", 0)),
            "SmallAloneAcc": mean_std(alone["accuracy"], "\\%", " $\\pm$ ") if alone else "--",
            "SmallPhotoPoints": _photo_points(bench)}


def mid_data_numbers(path, original_path=None) -> dict[str, str]:
    """Return the report's macros of the 40 x 25 grey set's bench against its original blocks ("--" when missing).

    ``path``: ``bench/bench_small_data.py --people 40 --images 25``'s results file (the settings' pre-activation
    blocks: 15 or more training photos a person is not a small set); ``original_path``: the same with ``--set
    preact=False``. ``MidPeople`` / ``MidTrain`` / ``MidPerPerson``: people, training images and training images a
    person; ``MidSeeds``: seeds; ``MidAcc`` / ``MidOriginalAcc``: the residual network's test accuracy mean ± std
    with each block form; ``MidEigenAcc``: eigenfaces + SVM on the same crops and split; ``MidPairTest``: the two
    block forms face by face (:func:`paired_test`), e.g. "17 against 7 faces, $p = 0.06$".
    """
    keys = ("MidPeople", "MidTrain", "MidPerPerson", "MidSeeds", "MidAcc", "MidOriginalAcc", "MidEigenAcc",
            "MidPairTest")
    bench = _read_json(path) or {}
    original = (_read_json(original_path) if original_path is not None else None) or {}
    name, entry = _residual_entry(bench)
    eigen = (bench.get("eigenfaces") or {}).get("accuracy")
    if entry is None or eigen is None:
        return dict.fromkeys(keys, "--")
    other_name, other = _residual_entry(original)
    test = paired_test(bench, name, other_name, second_bench=original) if other is not None else None
    return {"MidPeople": str(bench["people"]), "MidTrain": str(bench["train_images"]),
            "MidPerPerson": f"{bench['train_images'] / bench['people']:.0f}", "MidSeeds": str(len(entry["seeds"])),
            "MidAcc": mean_std(entry["accuracy"], "\\%", " $\\pm$ "),
            "MidOriginalAcc": mean_std(other["accuracy"], "\\%", " $\\pm$ ") if other is not None else "--",
            "MidEigenAcc": f"{100 * eigen:.1f}\\%",
            "MidPairTest": pair_text(test)}


def other_crop_numbers(other: dict | None, first: dict | None = None) -> dict[str, str]:
    """Return the report's macros of the one-block pair's seed bench with one background crop changed
    (``config.OTHER_CROP_BENCH``).

    ``other``: that results file when it was measured on this data (:func:`load_seed_bench`), else None (every macro
    then says "not measured on this data"); ``first``: the seed bench of the same schedule on the fresh crops
    (``config.SEED_BENCH_30_EPOCHS``; one of another schedule is not compared: "not the same schedule").
    ``OtherCropResNetAcc`` / ``OtherCropPlainAcc``: test accuracy mean ± std; ``OtherCropPairTest``: the pair face by
    face; ``OtherCropMoved``: the ResNet's runs of the same seeds on the two sets of crops face by face (faces only
    the changed crops' runs named right first).
    """
    missing = "not measured on this data"
    summary = (other or {}).get("summary") or {}
    resnet, plain = summary.get("ResNet 1-1-1-1"), summary.get("plain 1-1-1-1")
    if resnet is None or plain is None:
        return dict.fromkeys(("OtherCropResNetAcc", "OtherCropPlainAcc", "OtherCropPairTest", "OtherCropMoved"), missing)
    moved = paired_test(other, "ResNet 1-1-1-1", "ResNet 1-1-1-1", second_bench=first) if first is not None else None
    steps = [(b.get("settings") or {}).get("steps") for b in (other, first or {})]
    if first is not None and steps[0] != steps[1]:   # runs of different lengths: not the crops' effect alone
        moved, missing_moved = None, "not the same schedule"
    else:
        missing_moved = missing
    return {"OtherCropResNetAcc": mean_std(resnet["accuracy"], "\\%", " $\\pm$ "),
            "OtherCropPlainAcc": mean_std(plain["accuracy"], "\\%", " $\\pm$ "),
            "OtherCropPairTest": pair_text(paired_test(other, "ResNet 1-1-1-1", "plain 1-1-1-1"), missing),
            "OtherCropMoved": pair_text(moved, missing_moved)}


def pair_text(test: dict | None, missing: str = "--") -> str:
    """Return a :func:`paired_test` as the report writes it, "25 against 15 faces, $p = 0.15$", or ``missing``."""
    if test is None:
        return missing
    return f"{test['first_only']} against {test['second_only']} faces, $p {p_text(test['p_value'])}$"
