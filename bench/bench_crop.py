"""Images per second of face cropping: a plain facenet-pytorch loop versus the nnprak pipeline.

(a) ``MTCNN(image_size=160, margin=14)`` called once per image (``mtcnn(img)``: detect, select, crop);
(b) :func:`nnprak.faces.crop_manifest`: batched detection, face selection, both crop variants, PNG + sidecar
    writes into a temporary folder.

Both run on the same ``--n`` LFW images (people with >= 20 images, a seeded sample), in this process, with
``torch.set_num_threads(2)``, after a short warm-up of each. Image decoding is timed in both.

    python bench/bench_crop.py              # 500 images
    python bench/bench_crop.py --n 100 --min-face-size 40

Wall-clock numbers depend on what else runs on the machine; CPU seconds (both threads) are printed too.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nnprak import config, data, faces


def sample_files(n: int, seed: int = 0, min_images: int = 20) -> dict[str, list[Path]]:
    """Return ``{person: [files]}`` of ``n`` LFW images of people with >= ``min_images`` images (seeded)."""
    lfw = config.find_lfw()
    img_dir = data.lfw_image_dir(lfw)
    files = [f for p in data.lfw_people(lfw, min_images) for f in sorted((img_dir / p).glob("*.jpg"))]
    pick = sorted(np.random.default_rng(seed).choice(len(files), size=min(n, len(files)), replace=False))
    out: dict[str, list[Path]] = {}
    for i in pick:
        out.setdefault(files[i].parent.name, []).append(files[i])
    return out


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w, time.process_time() - c


def bench_loop(paths: list[Path]) -> tuple[int, float, float]:
    """Return (faces found, wall s, CPU s) of ``mtcnn(img)`` per image with facenet-pytorch defaults."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(image_size=160, margin=14)
    for p in paths[:3]:  # warm-up
        mtcnn(data.load_image(p))

    def run():
        return sum(mtcnn(data.load_image(p)) is not None for p in paths)

    return _timed(run)


def bench_pipeline(manifest, cfg: config.Config, min_face_size: int | None) -> tuple[dict, float, float]:
    """Return (stats, wall s, CPU s) of :func:`faces.crop_manifest` writing into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bench_crop_") as tmp:
        tmp = Path(tmp)
        paths = replace(cfg.paths, interim=tmp / "warm", processed=tmp / "warm")
        faces.crop_manifest(manifest.head(3), replace(cfg, paths=paths), progress=False, out=False,
                            min_face_size=min_face_size)  # warm-up
        paths = replace(cfg.paths, interim=tmp / "interim", processed=tmp / "processed")
        stats: dict = {}
        _, wall, cpu = _timed(lambda: faces.crop_manifest(manifest, replace(cfg, paths=paths), progress=False,
                                                          min_face_size=min_face_size, stats=stats))
    return stats, wall, cpu


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its numbers and return them as a dict."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="number of LFW images (default 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the config's detect_batch_size")
    ap.add_argument("--min-face-size", type=int, default=None,
                    help=f"nnprak pipeline only (default {faces.DEFAULT_MIN_FACE_SIZE})")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = config.load("default", threads=args.threads)
    if args.batch_size:
        cfg = replace(cfg, detect_batch_size=args.batch_size)
    people = sample_files(args.n, args.seed)
    manifest = data.scan_files(people, cfg.min_image_side, progress=False)
    paths = [data.abs_path(p) for p in manifest["path"]]
    n = len(paths)
    print(f"{n} LFW images, torch threads {torch.get_num_threads()}, batch {cfg.detect_batch_size}, "
          f"min_face_size {args.min_face_size or faces.DEFAULT_MIN_FACE_SIZE}")

    found, loop_wall, loop_cpu = bench_loop(paths)
    print(f"(a) facenet-pytorch mtcnn(img) loop: {n / loop_wall:6.2f} img/s  ({loop_wall:.1f} s wall, "
          f"{loop_cpu:.1f} s CPU, faces in {found}/{n})")
    stats, pipe_wall, pipe_cpu = bench_pipeline(manifest, cfg, args.min_face_size)
    print(f"(b) nnprak crop_manifest:            {n / pipe_wall:6.2f} img/s  ({pipe_wall:.1f} s wall, "
          f"{pipe_cpu:.1f} s CPU, ok {stats['ok']}/{n})")
    ratio, cpu_ratio = loop_wall / pipe_wall, loop_cpu / pipe_cpu
    print(f"speed-up (b)/(a): {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU")
    result = dict(n=n, threads=args.threads, batch_size=cfg.detect_batch_size,
                  min_face_size=args.min_face_size or faces.DEFAULT_MIN_FACE_SIZE,
                  loop_img_s=n / loop_wall, loop_cpu_s=loop_cpu, loop_found=int(found),
                  pipeline_img_s=n / pipe_wall, pipeline_cpu_s=pipe_cpu, pipeline_ok=stats["ok"],
                  speedup_wall=ratio, speedup_cpu=cpu_ratio)
    if args.json:
        from nnprak.utils import write_json

        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
