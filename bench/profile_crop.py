"""Where the time of face cropping goes: cProfile of :func:`nnprak.faces.crop_manifest` and of the plain loop.

Runs both on the same ``--n`` LFW images as ``bench/bench_crop.py`` (seeded sample, ``torch.set_num_threads``)
and prints, for each, the cumulative seconds of the stages that matter: JPEG decoding, the image pyramid
(``imresample``), P-Net, R-Net, O-Net, NMS, the box/crop post-processing of facenet-pytorch, nnprak's own crop and
PNG/JSON writing. ``--top`` also prints cProfile's own top functions.

    python bench/profile_crop.py --n 100
    python bench/profile_crop.py --n 128 --modes --json results/profile_crop.json   # + threads vs workers

Numbers are CPU-bound wall seconds and depend on what else runs on the machine.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_crop import sample_files  # noqa: E402

from nnprak import config, data, faces  # noqa: E402

STAGES = {
    # label: (file substring, function name) as cProfile names them
    "decode (PIL open/convert)": ("nnprak/data.py", "load_image"),
    "MTCNN detect_face total": ("facenet_pytorch/models/utils/detect_face.py", "detect_face"),
    "pyramid resize (imresample)": ("facenet_pytorch/models/utils/detect_face.py", "imresample"),
    "NMS (batched_nms)": ("torchvision/ops/boxes.py", "batched_nms"),
    "P-Net box generation": ("facenet_pytorch/models/utils/detect_face.py", "generateBoundingBox"),
    "box padding/crops for R/O-Net": ("facenet_pytorch/models/utils/detect_face.py", "pad"),
    "MTCNN.detect (incl. numpy post-processing)": ("facenet_pytorch/models/mtcnn.py", "detect"),
    "nnprak crops (crop_box + align_face + PNG)": ("nnprak/faces.py", "_write_crops"),
    "nnprak sidecar JSON": ("nnprak/faces.py", "_write_sidecar"),
    "MTCNN.extract (plain loop's crop+resize)": ("facenet_pytorch/models/mtcnn.py", "extract"),
}


def stage_seconds(prof: cProfile.Profile) -> dict[str, float]:
    """Return ``{stage label: cumulative seconds}`` of :data:`STAGES` from a finished profile."""
    stats = pstats.Stats(prof)
    out = {}
    for label, (where, name) in STAGES.items():
        out[label] = sum(cum for (file, _, func), (_, _, _, cum, _) in stats.stats.items()
                         if where in file.replace("\\", "/") and func == name)
    return out


def forward_seconds(prof: cProfile.Profile) -> dict[str, float]:
    """Return the cumulative seconds of PNet/RNet/ONet.forward told apart by their first line number."""
    import facenet_pytorch.models.mtcnn as m

    lines = {c: getattr(m, c).forward.__code__.co_firstlineno for c in ("PNet", "RNet", "ONet")}
    stats = pstats.Stats(prof)
    out = {f"{c} forward": 0.0 for c in lines}
    for (file, line, func), (_, ncalls, _, cum, _) in stats.stats.items():
        for c, first in lines.items():
            if func == "forward" and line == first and file.endswith("facenet_pytorch/models/mtcnn.py"):
                out[f"{c} forward"] += cum
                out[f"{c} calls"] = ncalls
    return out


def detect_once(n: int, seed: int, intra: int, workers: int, batch: int, out: Path) -> None:
    """Detect the sample with ``intra`` torch threads and ``workers`` batches at once; pickle times and detections.

    Runs in a fresh process per mode (``--detect-once``): PyTorch's thread pool keeps its first size otherwise.
    """
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    torch.set_num_threads(intra)
    cfg = config.load("default", device="cpu")
    manifest = data.scan_files(sample_files(n, seed), cfg.min_image_side, progress=False)
    images = [data.load_image(data.abs_path(p)) for p in manifest["path"]]
    mtcnn = faces.make_detector(faces.DEFAULT_MIN_FACE_SIZE, device="cpu")
    chunks = [images[k:k + batch] for k in range(0, len(images), batch)]   # LFW: all 250x250
    mtcnn.detect(images[:4], landmarks=True)   # warm-up
    w, c = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        res = list(pool.map(lambda ch: mtcnn.detect(ch, landmarks=True), chunks))
    w, c = time.perf_counter() - w, time.process_time() - c
    dets = [None if b is None else tuple(np.asarray(x, dtype=np.float64) for x in (b, p, l))
            for r in res for b, p, l in zip(*r)]
    out.write_bytes(pickle.dumps({"wall": w, "cpu": c, "dets": dets}))


def thread_modes(n: int, seed: int, batch: int = 32, threads: int = 2, repeats: int = 2) -> dict:
    """Return wall/CPU seconds of MTCNN over the sample in batches: one batch at a time with ``threads`` torch
    threads (crop_manifest before issue 16) or 1, and ``threads`` batches at once with 1 torch thread each (after),
    each mode in a fresh process, plus how many images' detections agree bitwise between the modes."""
    import pickle
    import subprocess

    import numpy as np

    modes = {f"1 batch at a time, {threads} torch threads": (threads, 1), "1 batch at a time, 1 torch thread": (1, 1),
             f"{threads} batches at once, 1 torch thread each": (1, threads)}
    out: dict = {"batch": batch, "seconds": {}, "cpu_seconds": {}}
    dets = {}
    with tempfile.TemporaryDirectory(prefix="profile_crop_modes_") as tmp:
        for rep in range(repeats):
            for name, (intra, workers) in modes.items():
                f = Path(tmp) / f"{intra}_{workers}.pkl"
                subprocess.run([sys.executable, __file__, "--detect-once", str(intra), str(workers), str(batch),
                                str(f), "--n", str(n), "--seed", str(seed)], check=True)
                r = pickle.loads(f.read_bytes())
                out["seconds"].setdefault(name, []).append(round(r["wall"], 2))
                out["cpu_seconds"].setdefault(name, []).append(round(r["cpu"], 2))
                dets[name] = r["dets"]

    def same(a, b):
        return sum((x is None and y is None) or (x is not None and y is not None and all(
            u.shape == v.shape and np.array_equal(u, v) for u, v in zip(x, y))) for x, y in zip(a, b))

    old, one, par = (dets[k] for k in modes)
    out["bitwise_old_vs_parallel"] = f"{same(old, par)}/{len(old)} images"
    out["bitwise_1_thread_vs_parallel"] = f"{same(one, par)}/{len(old)} images"
    return out


def profile(fn) -> tuple[cProfile.Profile, float]:
    """Return (profile, wall seconds) of one call of ``fn``."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    return prof, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    """Profile both paths, print the stage table and return it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="detection batch size (the default profile's)")
    ap.add_argument("--top", type=int, default=0, help="also print cProfile's top N functions (tottime)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--modes", action="store_true",
                    help="also time MTCNN with 2 vs 1 torch threads and batches in parallel, and compare their boxes")
    ap.add_argument("--detect-once", nargs=4, metavar=("INTRA", "WORKERS", "BATCH", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.detect_once:
        intra, workers, batch, out = args.detect_once
        detect_once(args.n, args.seed, int(intra), int(workers), int(batch), Path(out))
        return {}

    torch.set_num_threads(args.threads)
    cfg = config.load("default", threads=args.threads, device="cpu")
    manifest = data.scan_files(sample_files(args.n, args.seed), cfg.min_image_side, progress=False)
    paths = [data.abs_path(p) for p in manifest["path"]]
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(image_size=160, margin=14)
    for p in paths[:3]:
        mtcnn(data.load_image(p))
    loop_prof, loop_wall = profile(lambda: [mtcnn(data.load_image(p)) for p in paths])

    with tempfile.TemporaryDirectory(prefix="profile_crop_") as tmp:
        tmp = Path(tmp)
        warm = replace(cfg, paths=replace(cfg.paths, interim=tmp / "warm", processed=tmp / "warm"))
        faces.crop_manifest(manifest.head(3), warm, progress=False, out=False)
        # one batch at a time: cProfile sees the main thread only
        run = replace(cfg, paths=replace(cfg.paths, interim=tmp / "interim", processed=tmp / "processed"),
                      detect_workers=1)
        pipe_prof, pipe_wall = profile(lambda: faces.crop_manifest(manifest, run, progress=False, out=False))

    result = {"n": len(paths), "threads": args.threads, "loop_wall_s": loop_wall, "pipeline_wall_s": pipe_wall,
              "loop": {**stage_seconds(loop_prof), **forward_seconds(loop_prof)},
              "pipeline": {**stage_seconds(pipe_prof), **forward_seconds(pipe_prof)}}
    print(f"{len(paths)} LFW images, {args.threads} threads; pipeline: crop_manifest one batch at a time, 1 torch "
          "thread (cProfile adds overhead to both)")
    print(f"{'stage':46s} {'plain loop':>11s} {'pipeline':>11s}")
    print(f"{'wall (profiled)':46s} {loop_wall:10.2f}s {pipe_wall:10.2f}s")
    for k in result["pipeline"]:
        lv, pv = result["loop"].get(k, 0.0), result["pipeline"].get(k, 0.0)
        unit = "" if k.endswith("calls") else "s"
        print(f"{k:46s} {lv:10.2f}{unit or ' '} {pv:10.2f}{unit or ' '}")
    if args.top:
        for name, prof in (("plain loop", loop_prof), ("pipeline", pipe_prof)):
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
            print(f"--- {name}: top {args.top} by own time ---")
            print("\n".join(s.getvalue().splitlines()[6:6 + args.top + 3]))
    if args.modes:
        result["modes"] = thread_modes(args.n, args.seed, args.batch, args.threads)
        print("MTCNN detection of the sample, wall seconds per repeat (CPU seconds):")
        for name, secs in result["modes"]["seconds"].items():
            print(f"  {name:46s} {secs} ({result['modes']['cpu_seconds'][name]})")
        for key in ("bitwise_old_vs_parallel", "bitwise_1_thread_vs_parallel"):
            print(f"  {key}: {result['modes'][key]}")
    if args.json:
        from nnprak.utils import write_json

        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
