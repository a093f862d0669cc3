"""LFW 10-fold verification (View 2, pairs.txt) through the notebooks' own path, plain and score-normalised.

The same functions as notebooks 02 and 05, nothing else: :func:`nnprak.evaluate.verification_crops` (notebook
02's MTCNN detection of the pairs' images with the profile's settings: batched, ``min_face_size``, retry,
``face_select``), the profile's embedder (:func:`nnprak.embed.get_embedder` with ``embed["dlib_align"]``) and
:func:`nnprak.evaluate.profile_verification` (cached embeddings, 10-fold protocol, optional cohort
normalisation). The options select *settings* of that path (config overrides):

* ``--profile full`` (default): all 6,000 pairs; ``--folds N`` / ``--pairs-per-fold N`` / ``--quick`` fewer;
* ``--min-face-size``, ``--select``: MTCNN settings (other than the profile's: crops, detections and
  embeddings go to ``<interim>/bench/<settings>/``, so the notebooks' caches stay as they are);
* ``--align mtcnn|dlib5|both``, ``--no-flip``: the dlib chips (see :class:`nnprak.embed.DlibBackend`);
* ``--norm none cohort`` (default both, side by side), ``--cohort-k``: the score normalisation.

With the profile's settings the bench reuses (and fills) the notebooks' caches, so it prints the number that
notebook 05 saves and notebook 06 shows. Prints mean ± std over the folds, the errors (and how many LFW's
errata list as mislabelled), AUC and the run time; ``--out`` writes one record per normalisation (read by
``python -m nnprak bench --write`` for the README).

    .venv/bin/python bench/bench_verification.py --errors 12 --out results/bench_verification.json
    .venv/bin/python bench/bench_verification.py --min-face-size 20 --align mtcnn --norm none
    .venv/bin/python bench/bench_verification.py --quick              # 3 folds × 20 pairs (smoke run)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Threads that wait for each other should sleep, not spin: on 2 cores shared with other processes the default
# (spinning) OpenMP barrier makes 2 PyTorch threads ~4x slower than 1 (must be set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnprak import config, embed, evaluate  # noqa: E402
from nnprak.utils import write_json  # noqa: E402

DETECTION_OVERRIDES = ("min_face_size", "face_select")
"""Config fields of the bench's options that change the detection (and so need their own cache folders)."""


def bench_config(profile: str = "full", folds: int | None = None, pairs_per_fold: int | None = None,
                 **overrides) -> config.Config:
    """Return the profile's config with the bench's overrides (None = the profile's value)."""
    cfg = config.load(profile)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if folds is not None:
        changes["verification_folds"] = folds
    if pairs_per_fold is not None:
        changes["verification_pairs_per_fold"] = pairs_per_fold or None    # 0: all pairs of a fold
    return config.load(profile, **changes) if changes else cfg


def cache_dirs(cfg: config.Config) -> dict:
    """Return where the crops table, crops and embeddings go: the notebooks' folders, or a bench folder when the
    detection settings differ from the profile's."""
    base = config.Config(profile=cfg.profile, paths=cfg.paths, **config.PROFILE_SETTINGS[cfg.profile])
    changed = [f"{k}{getattr(cfg, k)}" for k in DETECTION_OVERRIDES if getattr(cfg, k) != getattr(base, k)]
    if not changed:
        return dict(faces_dir=None, out=None, embeddings_dir=None)
    folder = cfg.paths.interim / "bench" / "_".join(changed)
    return dict(faces_dir=folder / "faces", out=folder / evaluate.VERIFICATION_CROPS,
                embeddings_dir=folder / "embeddings")


def run(cfg: config.Config, backend: str = "dlib", align: str | None = None, flip: bool = True,
        norms=("none", "cohort"), progress: bool = False) -> dict:
    """Return ``{norm: VerificationResult}`` of the notebooks' path with these settings (crops, embedder, protocol)."""
    dirs = cache_dirs(cfg)
    table = evaluate.verification_crops(cfg, progress=progress, faces_dir=dirs["faces_dir"], out=dirs["out"])
    align = align or cfg.embed.get("dlib_align", "mtcnn")
    if backend == "dlib":
        embedder = embed.DlibBackend(flip=flip, align=align)
    else:
        embedder = embed.get_embedder(backend, dlib_align=align)
    return {norm: evaluate.profile_verification(cfg, embedder, table, norm=norm,
                                                embeddings_dir=dirs["embeddings_dir"], progress=progress)
            for norm in norms}


def describe(cfg: config.Config, backend: str, align: str, flip: bool, norm: str) -> str:
    """Return the label of one result: the settings that differ between the bench's runs."""
    score = "plain distance" if norm == "none" else f"{norm} normalisation (k={cfg.cohort_k})"
    return (f"MTCNN {cfg.min_face_size} px, {cfg.face_select} face, {align} alignment"
            + (", flip" if flip else "") + ("" if backend == "dlib" else f", {backend}") + f", {score}")


def main(argv=None) -> int:
    """Run the bench (see the module doc) and return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="full", choices=config.PROFILES,
                    help="whose settings and caches (default full: all 6,000 pairs)")
    ap.add_argument("--folds", type=int, default=None, help="use the first N folds (default: the profile's)")
    ap.add_argument("--pairs-per-fold", type=int, default=None,
                    help="matched + mismatched pairs per fold (0: all 600; default: the profile's)")
    ap.add_argument("--quick", action="store_true", help="smoke run: --folds 3 --pairs-per-fold 20")
    ap.add_argument("--min-face-size", type=int, default=None, help="MTCNN minimum face size (default: the profile's)")
    ap.add_argument("--select", default=None, choices=("central", "largest", "probable"),
                    help="face selection rule (default: the profile's)")
    ap.add_argument("--backend", default="dlib", help="embedder (default dlib)")
    ap.add_argument("--align", default=None, choices=embed.DLIB_ALIGNS,
                    help="dlib chip alignment (default: the profile's embed['dlib_align'])")
    ap.add_argument("--no-flip", action="store_true", help="do not average with the mirrored chip's descriptor")
    ap.add_argument("--norm", nargs="+", default=["none", "cohort"], choices=evaluate.SCORE_NORMS,
                    help="score normalisations to report (default: none and cohort)")
    ap.add_argument("--cohort-k", type=int, default=None, help="cohort size (default: the profile's cohort_k)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--errors", type=int, default=0, metavar="N", help="print the N most confident errors")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.folds, args.pairs_per_fold = 3, 20

    cfg = bench_config(args.profile, args.folds, args.pairs_per_fold, min_face_size=args.min_face_size,
                       face_select=args.select, cohort_k=args.cohort_k, threads=args.threads)
    config.set_threads(cfg.threads)
    align = args.align or cfg.embed.get("dlib_align", "mtcnn")
    t0 = time.perf_counter()
    found = run(cfg, args.backend, align, not args.no_flip, tuple(args.norm), progress=False)
    errata = evaluate.read_lfw_errata(missing_ok=True)               # None: this LFW copy has none
    out = {}
    for norm, res in found.items():
        label = describe(cfg, args.backend, align, not args.no_flip, norm)
        errors = res.errors(errata)
        n_mislabelled = int(errors["mislabelled"].sum()) if "mislabelled" in errors else None
        out[label] = dict(res.to_dict(), n_errors=int(len(errors)), n_mislabelled=n_mislabelled,
                          settings=dict(profile=cfg.profile, min_face_size=cfg.min_face_size,
                                        retry_min_face_size=cfg.retry_min_face_size, face_select=cfg.face_select,
                                        backend=args.backend, align=align, flip=not args.no_flip, norm=norm,
                                        cohort_k=cfg.cohort_k if norm != "none" else None))
        print(f"[{label}] {res.summary()}")
        print(f"  per fold: {', '.join(f'{100 * a:.2f}' for a in res.fold_accuracies)}")
        print(f"  {len(errors)} misclassified pairs" + ("" if n_mislabelled is None else
              f", {n_mislabelled} of them listed as mislabelled in LFW's errata"))
        for r in errors.head(args.errors).itertuples():
            print(f"    fold {r.fold + 1}  {'same' if r.same else 'diff'}  {Path(r.path1).stem} {Path(r.path2).stem}"
                  f"  d={r.distance:.3f} (threshold {r.threshold:.3f})"
                  + ("  [errata]" if getattr(r, "mislabelled", False) else ""))
    print(f"total {time.perf_counter() - t0:.0f} s (detection and embedding are cached for the next run)")
    if args.out:
        write_json(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
