"""LFW 10-fold verification (View 2, pairs.txt) with dlib's face ResNet ported to PyTorch.

Detection and alignment (the face nearest the image centre; 150×150 chip, padding 0.25, dlib's resampling):

* ``--landmarks dlib``:  dlib's HOG face detector (``--upsample``, default 1) + dlib's 5-point shape
  predictor + dlib's template -- dlib's own pipeline (``get_face_chip``);
* ``--landmarks mtcnn``: MTCNN's 5 points (facenet-pytorch) mapped onto dlib's template (``MTCNN_TEMPLATE``);
* ``--fallback mtcnn|dlib``: where the first detector finds no face, use the other one's landmarks (e.g.
  ``--landmarks mtcnn --fallback dlib``: MTCNN misses one LFW image of the pairs, Marilyn_Monroe_0001).

Descriptors: plain (dlib's 99.13 % setting), ``--flip`` (mean with the mirrored chip) or ``--jitter N`` (mean
over N jittered chips, dlib's ``num_jitters``; dlib reports 99.38 % with 100).

Landmarks are cached per image in ``<nnprak cache>/lfw_landmarks/`` (detection is the slow part), so
re-runs with other descriptor options only cost the embedding; jittered descriptors are cached too
(``lfw_embeddings/``), so an interrupted ``--jitter`` run resumes where it stopped. Prints mean ± std over
the folds, AUC, failed pairs (an image without a face: counted as wrong), the run time (detection +
embedding + protocol) and how many of the misclassified pairs LFW's errata list as mislabelled (``--errors N``
also prints the N most confident errors).

    .venv/bin/python bench/bench_verification.py                      # all 6000 pairs, dlib landmarks
    .venv/bin/python bench/bench_verification.py --landmarks mtcnn --fallback dlib --flip --errors 20
    .venv/bin/python bench/bench_verification.py --quick              # 2 folds × 40 pairs (smoke run)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Threads that wait for each other should sleep, not spin: on 2 cores shared with other processes the default
# (spinning) OpenMP barrier makes 2 PyTorch threads ~4x slower than 1 (must be set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnprak import config  # noqa: E402
from nnprak import evaluate as E  # noqa: E402
from nnprak.models import dlib_resnet as D  # noqa: E402
from nnprak.utils import atomic_path, atomic_write_text, user_cache_dir  # noqa: E402


def landmarks(paths: list[str], kind: str, emb: D.DlibEmbedder, root: Path, cache: bool = True) -> dict:
    """Return {path: 5×2 points or None} of the central face, from/into the landmark cache of ``kind``."""
    name = f"{kind}_up{emb.upsample}" if kind == "dlib" else kind
    file = user_cache_dir() / "lfw_landmarks" / f"{name}.json"
    known = json.loads(file.read_text()) if cache and file.is_file() else {}
    todo = [p for p in paths if str(Path(p).relative_to(root)) not in known]
    t0 = time.perf_counter()
    for i, p in enumerate(todo):
        with Image.open(p) as im:
            img = np.asarray(im.convert("RGB"))
        if kind == "dlib":
            shape = emb.detect_shape(img)
            pts = None if shape is None else D.shape_points(shape)
        else:
            pts = emb.mtcnn_points(img)
        known[str(Path(p).relative_to(root))] = None if pts is None else np.round(pts, 3).tolist()
        if (i + 1) % 250 == 0 or i + 1 == len(todo):
            if cache:
                atomic_write_text(file, json.dumps(known))
            print(f"  {kind} landmarks: {i + 1}/{len(todo)} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {p: None if known[str(Path(p).relative_to(root))] is None
            else np.array(known[str(Path(p).relative_to(root))]) for p in paths}


def make_embed_fn(emb: D.DlibEmbedder, kind: str, fallback: str | None, args, root: Path, stats: dict):
    """Return an ``embed_fn(paths)`` for lfw_verification: landmarks → chips → descriptors (NaN: no face)."""
    templates = {"dlib": D.DLIB_TEMPLATE, "mtcnn": D.MTCNN_TEMPLATE}

    def embed_fn(paths):
        t0 = time.perf_counter()
        pts = landmarks(paths, kind, emb, root, cache=not args.no_cache)
        stats["detect_s"] = time.perf_counter() - t0
        missing = [p for p in paths if pts[p] is None]
        source = {p: kind for p in paths if pts[p] is not None}
        if fallback and missing:
            extra = landmarks(missing, fallback, emb, root, cache=not args.no_cache)
            for p in missing:
                if extra[p] is not None:
                    pts[p] = extra[p]
                    source[p] = fallback
        stats["n_fallback"] = sum(1 for s in source.values() if s != kind)
        t0 = time.perf_counter()
        out = np.full((len(paths), D.EMBEDDING_DIM), np.nan, dtype=np.float32)
        rows = [i for i, p in enumerate(paths) if pts[p] is not None]
        # slow settings (jitter) keep their descriptors in the cache, so that an interrupted run resumes
        cache_file = (user_cache_dir() / "lfw_embeddings" / f"{kind}_up{emb.upsample}_{fallback or 'nofb'}_"
                      f"flip{int(args.flip)}_j{args.jitter}.npz")
        key = {i: str(Path(paths[i]).relative_to(root)) for i in rows}
        done = {}
        if args.jitter > 1 and not args.no_cache and cache_file.is_file():
            with np.load(cache_file) as z:
                done = dict(zip(z["paths"].tolist(), z["vectors"]))
        for i in rows:
            if key[i] in done:
                out[i] = done[key[i]]
        rows = [i for i in rows if key[i] not in done]
        for start in range(0, len(rows), 256):
            chunk = rows[start:start + 256]
            chips = []
            for i in chunk:
                with Image.open(paths[i]) as im:
                    img = np.asarray(im.convert("RGB"))
                chips.append(D.chip_from_points(img, pts[paths[i]], templates[source[paths[i]]]))
            out[chunk] = emb.embed_chips(np.stack(chips), flip=args.flip, jitter=args.jitter, seed=chunk[0])
            if args.jitter > 1:
                done.update((key[i], out[i]) for i in chunk)
                if not args.no_cache:
                    with atomic_path(cache_file) as tmp:
                        np.savez(tmp, paths=np.array(list(done)), vectors=np.stack(list(done.values())))
                print(f"  embedded {start + len(chunk)}/{len(rows)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        stats["embed_s"] = time.perf_counter() - t0
        return out

    return embed_fn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--landmarks", choices=("dlib", "mtcnn", "both"), default="dlib")
    ap.add_argument("--fallback", choices=("none", "mtcnn", "dlib"), default="none",
                    help="the other detector's landmarks where the first finds no face (default none)")
    ap.add_argument("--flip", action="store_true", help="average with the mirrored chip's descriptor")
    ap.add_argument("--jitter", type=int, default=0, help="average over N jittered chips (dlib: 100)")
    ap.add_argument("--folds", type=int, default=10, help="use the first N folds (default 10)")
    ap.add_argument("--n", type=int, default=None,
                    help="use only the first N matched and N mismatched pairs of each fold (default: all 300)")
    ap.add_argument("--quick", action="store_true", help="smoke run: --folds 2 --n 20")
    ap.add_argument("--upsample", type=int, default=1, help="dlib detector upsampling (default 1)")
    ap.add_argument("--metric", default="euclidean", choices=("euclidean", "cosine"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--no-cache", action="store_true", help="detect again instead of using cached landmarks")
    ap.add_argument("--errors", type=int, default=0, metavar="N", help="print the N most confident errors")
    ap.add_argument("--out", type=Path, help="write the result(s) as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.folds, args.n = 2, 20
    torch.set_num_threads(args.threads)

    lfw = config.find_lfw()
    root = lfw / config.LFW_IMAGES_SUBDIR
    pairs = E.read_lfw_pairs(lfw / "pairs.txt")
    pairs = pairs[pairs["fold"] < args.folds]
    if args.n:
        pairs = pairs.groupby(["fold", "same"], sort=False).head(args.n)
    n_images = len(set(pairs["path1"]) | set(pairs["path2"]))
    print(f"{len(pairs)} pairs in {args.folds} folds, {n_images} distinct images")

    errata = E.read_lfw_errata(lfw / E.LFW_ERRATA_FILE, missing_ok=True)   # None: this LFW copy has none
    emb = D.DlibEmbedder(upsample=args.upsample)
    results = {}
    for kind in (("dlib", "mtcnn") if args.landmarks == "both" else (args.landmarks,)):
        fallback = args.fallback if args.fallback not in ("none", kind) else None
        stats: dict = {}
        res = E.lfw_verification(make_embed_fn(emb, kind, fallback, args, root, stats), pairs=pairs,
                                 folds=args.folds, metric=args.metric)
        label = (f"{kind} landmarks" + (f" + {fallback} fallback" if fallback else "")
                 + (", flip" if args.flip else "") + (f", {args.jitter} jitters" if args.jitter > 1 else ""))
        errors = res.errors(errata)
        errors["mislabelled"] = errors.get("mislabelled", False)
        stats["n_errors"], stats["n_mislabelled"] = len(errors), int(errors["mislabelled"].sum())
        results[label] = dict(res.to_dict(), **stats)
        print(f"[{label}] {res.summary()}")
        print(f"  per fold: {', '.join(f'{100 * a:.2f}' for a in res.fold_accuracies)}")
        print(f"  thresholds: {', '.join(f'{t:.3f}' for t in res.thresholds)}")
        print(f"  landmarks {stats['detect_s']:.0f} s (0 when cached), embedding {stats['embed_s']:.0f} s, "
              f"{stats['n_fallback']} images aligned by the fallback")
        print(f"  mean ± std: {100 * res.accuracy:.2f} ± {100 * res.std:.2f} %, n_failed {res.n_failed}, "
              f"run time {res.seconds:.0f} s")
        print(f"  {len(errors)} misclassified pairs, {stats['n_mislabelled']} of them listed as mislabelled in "
              f"LFW's errata")
        for r in errors.head(args.errors).itertuples():
            print(f"    fold {r.fold + 1}  {'same' if r.same else 'diff'}  {Path(r.path1).stem} {Path(r.path2).stem}"
                  f"  d={r.distance:.3f} (threshold {r.threshold:.3f}){'  [errata]' if r.mislabelled else ''}")
    if args.out:
        from nnprak.utils import write_json
        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
