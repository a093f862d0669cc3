"""Train the scratch ResNet on LFW-62 with 2 threads and print epochs, minutes, test accuracy and macro-F1.

    python bench/bench_scratch.py                         # the default profile's settings, stand-in crops
    python bench/bench_scratch.py --crops data/processed/crops.csv       # MTCNN crops (the profile's crop variant)
    python bench/bench_scratch.py --size 64 --epochs 20 --lr 0.2 --plain  # any knob, for tuning

Until notebook 02's crops exist, a centre crop of the 250 px deep-funneled LFW images
(``nnprak.train.LFW_STAND_IN_CROP`` pixels) stands in for the face crops.

Besides wall-clock minutes it prints "CPU minutes / threads": the process's CPU time divided by the thread
count, which estimates the wall time on an otherwise idle machine when other programs share the cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def parse(argv=None) -> argparse.Namespace:
    from nnprak import config, faces

    cfg = config.load(os.environ.get("NNPRAK_PROFILE") or "default")
    s = cfg.scratch
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=cfg.profile, help="config profile (default: %(default)s)")
    ap.add_argument("--crops", type=Path, help="crops CSV (manifest with a crop column) instead of stand-in crops")
    ap.add_argument("--path-column", default=faces.crop_column(s["crop"]),
                    help="crop column of --crops (default: the profile's crop variant, %(default)s)")
    ap.add_argument("--crop", type=float, default=None,
                    help="centre crop in px (>1) or fraction (<=1) before resizing; default: "
                         "stand-in crop for LFW originals, none for --crops")
    ap.add_argument("--size", type=int, default=s["image_size"])
    ap.add_argument("--widths", default=",".join(map(str, s["widths"])))
    ap.add_argument("--blocks", default=",".join(map(str, s["blocks"])))
    ap.add_argument("--epochs", type=int, default=s["epochs"])
    ap.add_argument("--batch-size", type=int, default=s["batch_size"])
    ap.add_argument("--lr", type=float, default=s["lr"])
    ap.add_argument("--weight-decay", type=float, default=s["weight_decay"])
    ap.add_argument("--label-smoothing", type=float, default=s["label_smoothing"])
    ap.add_argument("--patience", type=int, default=s["patience"])
    ap.add_argument("--max-minutes", type=float, default=s["max_minutes"])
    ap.add_argument("--optimizer", default=s.get("optimizer", "adamw"), choices=["sgd", "adamw"])
    ap.add_argument("--schedule", default=s.get("schedule", "onecycle"), choices=["onecycle", "cosine"])
    ap.add_argument("--balanced", type=float, default=s.get("balanced", 1.0),
                    help="class-balanced sampling power: 1 = balanced, 0 = plain shuffle, 0.5 = square root")
    ap.add_argument("--dropout", type=float, default=s.get("dropout", 0.2))
    ap.add_argument("--plain", action="store_true", help="no shortcuts (the ablation's plain CNN)")
    ap.add_argument("--shortcut", default=s.get("shortcut", "conv"), choices=["conv", "avgpool"],
                    help="projection shortcut of the downsampling blocks (default: %(default)s)")
    ap.add_argument("--zero-init", action=argparse.BooleanOptionalAction, default=s.get("zero_init_residual", True),
                    help="start every residual block's last batch-norm scale at 0 (default: %(default)s)")
    ap.add_argument("--stem-stride", type=int, default=s.get("stem_stride", 2))
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--threads", type=int, default=cfg.threads)
    ap.add_argument("--seed", type=int, default=cfg.seed)
    ap.add_argument("--limit-train", type=int, default=None, help="use only the first N training images (quick runs)")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    from sklearn.metrics import accuracy_score, f1_score

    from nnprak import config, data, train
    from nnprak.models.scratch import count_parameters, from_settings

    config.set_threads(args.threads)
    config.seed_everything(args.seed)
    cfg = config.load(args.profile)
    t_data = time.perf_counter()
    if args.crops:
        manifest, column = data.load_manifest(args.crops), args.path_column
        crop = args.crop
    else:
        manifest = (data.load_manifest(cfg.paths.manifest) if cfg.paths.manifest.exists()
                    else data.build_manifest(cfg, progress=False))
        column, crop = "path", args.crop if args.crop is not None else "auto"
    if isinstance(crop, float) and crop > 1:
        crop = int(crop)
    cached = train.cached_splits(manifest, args.size, path_column=column, crop=crop)
    classes = cached["train"].classes
    if args.limit_train:
        cached["train"].images = cached["train"].images[:args.limit_train]
        cached["train"].targets = cached["train"].targets[:args.limit_train]
    t_data = time.perf_counter() - t_data
    train_ds = cached["train"].with_transform(train.train_transforms(args.size))
    val_ds = cached["val"].with_transform(train.eval_transforms(args.size))
    test_ds = cached["test"].with_transform(train.eval_transforms(args.size))
    loaders = train.make_loaders(train_ds, val_ds, test_ds, batch_size=args.batch_size,
                                 balanced=args.balanced, seed=args.seed)

    widths = tuple(int(w) for w in args.widths.split(","))
    blocks = tuple(int(b) for b in args.blocks.split(","))
    settings = dict(cfg.scratch, image_size=args.size, widths=widths, blocks=blocks, epochs=args.epochs,
                    shortcut=args.shortcut, zero_init_residual=args.zero_init, stem_stride=args.stem_stride,
                    dropout=args.dropout,
                    batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                    schedule=args.schedule, balanced=args.balanced, label_smoothing=args.label_smoothing,
                    patience=args.patience, max_minutes=args.max_minutes, channels_last=args.channels_last)
    model = from_settings(len(classes), settings, residual=not args.plain)
    print(f"{len(classes)} people; train/val/test {len(train_ds)}/{len(val_ds)}/{len(test_ds)} images "
          f"({'crops ' + str(args.crops) if args.crops else 'stand-in crops'}, centre crop {cached['train'].crop}) "
          f"-> {args.size} px, "
          f"decoded in {t_data:.1f} s; model {widths} x {blocks}, {count_parameters(model):,} parameters, "
          f"{'plain' if args.plain else f'residual ({args.shortcut} shortcut, zero init {args.zero_init})'}, "
          f"stem stride {args.stem_stride}; {args.threads} threads", flush=True)

    cpu0, t0 = time.process_time(), time.perf_counter()
    hist = train.fit_from_settings(
        model, loaders, settings, max_minutes=args.max_minutes, seed=args.seed, progress=not args.no_progress,
        on_epoch=None if not args.no_progress else lambda r: print(
            f"epoch {r['epoch']:3d}  loss {r['train_loss']:.3f}  acc {r['train_acc']:.3f}  val loss "
            f"{r['val_loss']:.3f}  val acc {r['val_acc']:.3f}  lr {r['lr']:.3g}  {r['seconds']:.1f} s "
            f"(cpu {(time.process_time() - cpu0) / args.threads:.0f} s)", flush=True))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    y_true, y_pred, _ = train.predict(model, loaders[2], channels_last=args.channels_last)
    _, y_flip, _ = train.predict(model, loaders[2], channels_last=args.channels_last, flip_tta=True)
    res = dict(
        epochs=len(hist), best_epoch=hist.attrs["best_epoch"], stopped=hist.attrs["stopped"],
        train_minutes=wall / 60, cpu_minutes_per_thread=cpu / 60 / args.threads,
        epoch_seconds_median=float(hist["seconds"].median()),
        best_val_acc=float(hist.attrs["best_val_acc"]),
        test_accuracy=float(accuracy_score(y_true, y_pred)),
        test_macro_f1=float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        test_accuracy_flip_tta=float(accuracy_score(y_true, y_flip)),
        test_macro_f1_flip_tta=float(f1_score(y_true, y_flip, average="macro", zero_division=0)),
        parameters=count_parameters(model), settings=settings,
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    with_cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    print(hist[with_cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"epochs {res['epochs']} (best {res['best_epoch']}, stopped: {res['stopped']}); training "
          f"{res['train_minutes']:.2f} min wall, {res['cpu_minutes_per_thread']:.2f} CPU min / thread; "
          f"median epoch {res['epoch_seconds_median']:.1f} s")
    print(f"best val accuracy {res['best_val_acc']:.4f}; test accuracy {res['test_accuracy']:.4f}, "
          f"macro-F1 {res['test_macro_f1']:.4f} (with flip TTA: {res['test_accuracy_flip_tta']:.4f}, "
          f"{res['test_macro_f1_flip_tta']:.4f})")
    if args.json:
        from nnprak.utils import write_json
        write_json(args.json, res)
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
