"""Train the scratch CNN and its plain twin for several seeds (optionally at other depths) and write mean ± std.

    python bench/bench_scratch_seeds.py              # the main model's pair (1-1-1-1 on LFW-62), seeds 42 43 44, 2 threads
    python bench/bench_scratch_seeds.py --depths 1,1,1,1 2,2,2,2 --seeds 42 --verify
    python bench/bench_scratch_seeds.py --depths 3,3,3,3 --seeds 42 --merge       # add runs to the results file
    python bench/bench_scratch_seeds.py --set preact=False --out results/x.json   # a trial: its own file
    python bench/bench_scratch_seeds.py --crops /tmp/pgm/processed/crops.csv --out results/x.json  # other data

Data: notebook 02's MTCNN crops of the profile (the ``crop`` variant of the settings, ``crop_aligned`` by default,
of ``crops.csv``), else ``--crops``; the background people (``cfg.scratch["background"]``, :mod:`nnprak.background`)
from notebook 02's ``background_crops.csv``, else ``--background-crops``. Settings: ``cfg.scratch`` fitted to the
training set by :func:`nnprak.config.scratch_for_data`.
Writes ``results/bench_scratch_seeds.json`` (default; notebook 03 and the report read it, so runs with other
settings or data, or without the main model's pair and ``--merge``, are refused there and need ``--out``): per
network the seeds, and mean, std (ddof=1) and values of test accuracy, macro-F1, best validation accuracy, epochs,
wall and CPU minutes per thread; plus every run with
its learning curve (notebook 03 shows these when the default run trains the main model only). ``--verify`` adds
each network's penultimate-feature verification on LFW pairs without its training people (notebook 03's measure).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=os.environ.get("NNPRAK_PROFILE") or "default")
    ap.add_argument("--crops", type=Path, help="crops CSV (default: the profile's crops.csv)")
    ap.add_argument("--path-column", default=None, help="crop column (default: the settings' crop variant, "
                    "cfg.scratch['crop'], or box crops where config.scratch_for_data picks them)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--depths", nargs="+", default=None, help="blocks per stage, e.g. 1,1,1,1 2,2,2,2 "
                    "(default: the profile's)")
    ap.add_argument("--epochs", type=int, default=None, help="override the schedule (screening only)")
    ap.add_argument("--residual-only", action="store_true", help="skip the plain twins")
    ap.add_argument("--plain-only", action="store_true", help="skip the residual networks")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a cfg.scratch setting (Python literal), e.g. --set zero_init_residual=False")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: <results>/bench_scratch_seeds.json)")
    ap.add_argument("--eigenfaces", action="store_true", help="also fit the eigenfaces + SVM baseline on the same splits")
    ap.add_argument("--checkpoint-dir", type=Path, default=None,
                    help="keep each run's checkpoint here (scratch_<network>_s<seed>.pt) and resume from it")
    ap.add_argument("--merge", action="store_true", help="add these runs to an existing --out file of the same data and "
                    "settings (a run of the same network and seed is replaced) and summarise them all")
    ap.add_argument("--verify", action="store_true", help="also measure each network's penultimate-feature LFW "
                    "verification on the pairs without its training people (notebook 03's; needs notebook 02's "
                    "verification_crops.csv)")
    ap.add_argument("--background-crops", type=Path, default=None, help="crops CSV of the background people "
                    "(default: the profile's background_crops.csv; --set background=False trains on the set alone)")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


SELECTION_KEYS = ("blocks", "background_min_images", "background_per_person", "background_people", "aligned_fill")
"""Settings ``--merge`` does not compare: each run records its own depth (``--depths``), which background people
were chosen is compared by their number and images (``background_people`` / ``background_images`` of the file), and
``aligned_fill`` is measured on the data (the crop it picks is compared as ``crop_column``)."""


RUN_LISTS = ("history", "test_correct", "machine")
"""Per-run entries of the results file besides the metrics: the learning curve; per test face in the split's order,
1 if the network named the face right (``ablation.paired_test`` compares two networks face by face), else 0; and the
machine it trained on (``utils.machine_info``: a seed's result can differ between CPUs; None in older runs)."""


def _recipe(settings: dict | None) -> dict:
    """Return results-file settings without :data:`SELECTION_KEYS` (the training recipe ``--merge`` compares)."""
    return {k: v for k, v in (settings or {}).items() if k not in SELECTION_KEYS}


def default_file_problem(args: argparse.Namespace, depths: list[tuple], main_blocks) -> str:
    """Return why these runs must not go to the profile's own results file (notebook 03 and the report read it), or "".

    That file holds the profile's settings and data: runs with ``--set``, ``--epochs`` or other crops are trials,
    and without ``--merge`` a run must keep the main model's pair (its depth, ResNet and plain twin).
    """
    changed = [f"--{name}" for name, value in (("set", args.set), ("epochs", args.epochs), ("crops", args.crops),
                                                ("path-column", args.path_column),
                                                ("background-crops", args.background_crops)) if value]
    if changed:
        return f"these runs use {', '.join(changed)} (a trial)"
    main = tuple(int(b) for b in main_blocks)
    if not args.merge and (args.residual_only or args.plain_only or main not in depths):
        return (f"without --merge they would replace the main model's pair ({'-'.join(map(str, main))}, ResNet and "
                "plain twin)")
    return ""


def data_label(crops: str | os.PathLike) -> str:
    """Return how the results file names its crops table: relative to the checkout, or, outside it (a temporary
    work folder of ``bench_small_data.py``), ``<work>/`` and the last two parts (no machine paths in results/)."""
    p = Path(crops).resolve()
    if p.is_relative_to(ROOT):
        return p.relative_to(ROOT).as_posix()
    return "<work>/" + "/".join(p.parts[-2:])


def dataset_label(dataset: dict) -> dict:
    """Return ``data.describe_manifest``'s record with an absolute photo folder named as :func:`data_label` names
    files (``"lfw"`` and folders that ``utils.display_path`` already made relative or ``~/...`` are kept)."""
    src = str(dataset.get("source") or "")
    if not os.path.isabs(src):
        return dataset
    shown = data_label(src)
    return dict(dataset, source=shown, description=str(dataset.get("description", "")).replace(src, shown, 1))


def main(argv=None) -> dict:
    import ast

    args = parse(argv)
    from nnprak import ablation, background, config, data, faces
    from nnprak.utils import machine_info, write_json

    cfg = config.load(args.profile)
    threads = args.threads or cfg.threads
    machine = machine_info()
    config.set_threads(threads)
    settings = dict(cfg.scratch)
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):   # a bare word: a string setting, e.g. shortcut=avgpool
            settings[key] = value
    table = faces.load_crops(args.crops or cfg.paths.crops)
    ok = faces.usable_crops(table, args.path_column or faces.crop_column(settings["crop"]))   # the faces found
    classes = sorted(ok["person"].unique())
    n_train, n_test = int((ok["split"] == "train").sum()), int((ok["split"] == "test").sum())
    t0 = time.perf_counter()
    bg_table = None
    if settings.get("background"):
        bg_path = args.background_crops or cfg.paths.processed / background.BACKGROUND_CROPS
        if not bg_path.exists():
            raise SystemExit(f"{bg_path} is missing: run notebook 02 (or pass --background-crops, or "
                             "--set background=False to train on the set alone)")
        bg_table = faces.load_crops(bg_path)
    # the set's people plus the background people, at the size the rules pick (as notebook 03)
    cached, training, settings = ablation.scratch_data(table, settings, classes, args.path_column, bg_table)
    column = args.path_column or faces.crop_column(settings["crop"])   # the rules' crop unless --path-column
    bg_people, bg_images = background.background_count(training)
    print(f"{len(classes)} people, {n_train} training images, background {bg_people} people / {bg_images} images; "
          f"decoded in {time.perf_counter() - t0:.1f} s; settings {settings}", flush=True)
    depths = [tuple(int(b) for b in d.split(",")) for d in args.depths] if args.depths else [settings["blocks"]]
    out = args.out or cfg.paths.seed_bench
    problem = "" if args.out is not None else default_file_problem(args, depths, settings["blocks"])
    if problem:
        raise SystemExit(f"{out} is the seed bench of the profile's own settings, which notebook 03 and the report "
                         f"read; {problem}: name another results file with --out results/<name>.json")
    jsettings = json.loads(json.dumps(settings))   # as the results file stores them (tuples become lists)
    old = None
    if args.merge and out.exists():   # checked before training: a refused merge must not cost the runs
        old = json.loads(out.read_text(encoding="utf-8"))
        same = (old.get("background_people", 0), old.get("crop_column"), old.get("epochs_override"))
        if (not ablation.same_data(old, len(classes), n_train, bg_images, n_test)   # a file without test_images: not
                or same != (bg_people, column, args.epochs)                       # measured on these faces
                or _recipe(old.get("settings")) != _recipe(jsettings)):
            raise SystemExit(f"--merge: {out} was measured on other data or settings; write to another --out")
    rows, lists, baseline_row = [], [], None   # lists: each run's RUN_LISTS
    ver_ds = None
    if args.verify:   # the pairs' faces, decoded once for every run
        from nnprak import evaluate

        ver_ds = evaluate.verification_dataset(faces.load_crops(cfg.paths.processed / evaluate.VERIFICATION_CROPS),
                                               column, int(settings["image_size"]))
    if args.eigenfaces:
        from nnprak import baseline

        baseline_row = baseline.eigenfaces_baseline(cached, max_cv_folds=cfg.max_cv_folds)["row"]
        print(f"eigenfaces + SVM: test accuracy {baseline_row['accuracy']:.4f}, macro-F1 {baseline_row['macro_f1']:.4f} "
              f"({baseline_row['components']} components, C {baseline_row['C']:g}, {baseline_row['seconds']:.0f} s)",
              flush=True)
    for blocks in depths:
        for residual in ((True,) if args.residual_only else (False,) if args.plain_only else (True, False)):
            for seed in args.seeds:
                ckpt = None
                if args.checkpoint_dir is not None:
                    name = ablation.network_name(residual, blocks).replace(" ", "_")
                    ckpt = args.checkpoint_dir / f"scratch_{name}_s{seed}.pt"
                run = ablation.train_variant(training, settings, residual=residual, blocks=blocks, seed=seed,
                                             epochs=args.epochs, progress=not args.no_progress, threads=threads,
                                             checkpoint_path=ckpt, resume=ckpt is not None)
                if ver_ds is not None:
                    ver = evaluate.network_verification(run["model"], ver_ds, background.trained_people(training), cfg)
                    run["row"]["verification"] = float(ver.accuracy)
                    print(f"{run['row']['network']:>16} seed {seed}: unseen-people verification {ver.summary()}",
                          flush=True)
                rows.append(run["row"])
                lists.append({"history": {k: [float(v) for v in run["history"][k]]
                                          for k in ("epoch", "train_loss", "val_loss", "train_acc", "val_acc")},
                              "test_correct": [int(t == p) for t, p in zip(run["y_true"], run["y_pred"])],
                              "machine": machine})
                r = run["row"]
                print(f"{r['network']:>16} seed {seed}: test accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, "
                      f"best val {r['best val accuracy']:.4f}, {r['epochs']} epochs / {r['steps']} steps, "
                      f"{r['minutes']:.2f} min wall, {r['cpu_minutes_per_thread']:.2f} CPU min / thread", flush=True)
    import pandas as pd

    runs = [dict(r, **extra) for r, extra in zip(rows, lists)]
    if old is not None:
        new_keys = {(r["network"], r["seed"]) for r in rows}
        runs = [r for r in old.get("runs", []) if (r["network"], r["seed"]) not in new_keys] + runs
        baseline_row = baseline_row or old.get("eigenfaces")
    rows = [{k: v for k, v in r.items() if k not in RUN_LISTS} for r in runs]
    lists = [{k: r.get(k) for k in RUN_LISTS} for r in runs]
    frame = pd.DataFrame(rows)
    print(ablation.seed_summary(frame).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    res = {"data": data_label(args.crops or cfg.paths.crops), "dataset": dataset_label(data.describe_manifest(table)),
           "crop_column": column, "people": len(classes),
           "train_images": n_train, "test_images": n_test, "background_people": bg_people, "background_images": bg_images,
           "threads": threads, "settings": jsettings, "epochs_override": args.epochs,
           "summary": ablation.summary_json(frame),
           "runs": [dict(r, **extra) for r, extra in zip(json.loads(frame.to_json(orient="records")), lists)],
           "eigenfaces": baseline_row}
    write_json(out, res)
    print("written:", out)
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
