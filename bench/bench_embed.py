"""Faces per second: dlib's own API one face at a time vs the PyTorch port of its network, batched.

Both embed the same LFW face chips (dlib's detector + 5-point shape + get_face_chip, 150×150) in the same run:

* dlib:    ``dlib.face_recognition_model_v1(...).compute_face_descriptor(chip)`` per chip (the way the
           face_recognition package calls it);
* PyTorch: ``DlibEmbedder.embed_chips`` in batches of 32 with ``torch.set_num_threads(2)``.

The two are timed alternately for ``--rounds`` rounds (other processes may share the CPUs); the best round of
each and the ratio of the bests are printed, with the medians, and the largest descriptor difference.

    .venv/bin/python bench/bench_embed.py             # 256 chips, 2 rounds
    .venv/bin/python bench/bench_embed.py --quick     # 40 chips, 1 round (smoke run)
"""
from __future__ import annotations

import argparse
import os
import platform
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
from nnprak.models import dlib_resnet as D  # noqa: E402


def lfw_chips(n: int, embedder: D.DlibEmbedder) -> np.ndarray:
    """Return n dlib face chips from the first image of LFW people (alphabetical, people without a face skipped)."""
    img_dir = config.find_lfw() / config.LFW_IMAGES_SUBDIR
    chips = []
    for person in sorted(p for p in img_dir.iterdir() if p.is_dir()):
        chip = embedder.detect_and_chip(Image.open(sorted(person.glob("*.jpg"))[0]))
        if chip is not None:
            chips.append(chip)
        if len(chips) == n:
            break
    return np.stack(chips)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="number of face chips (default 256)")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds of each method, alternating (default 2)")
    ap.add_argument("--batch", type=int, default=32, help="PyTorch batch size (default 32)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: --n 40 --rounds 1")
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 40, 1
    torch.set_num_threads(args.threads)

    import dlib

    emb = D.DlibEmbedder(batch_size=args.batch, upsample=0)   # upsample 0: only to find the chips quickly
    t0 = time.perf_counter()
    chips = lfw_chips(args.n, emb)
    print(f"{len(chips)} LFW face chips in {time.perf_counter() - t0:.1f} s (detection not part of the benchmark)")
    facerec = dlib.face_recognition_model_v1(str(D.default_dat_path()))

    emb.embed_chips(chips[:args.batch])                         # warm-up: one batch
    facerec.compute_face_descriptor(chips[0])
    dlib_rates, torch_rates, dlib_cpu, torch_cpu = [], [], [], []
    for r in range(args.rounds):
        t, c0 = time.perf_counter(), time.process_time()
        ref = np.array([np.array(facerec.compute_face_descriptor(c)) for c in chips], dtype=np.float32)
        dlib_rates.append(len(chips) / (time.perf_counter() - t))
        dlib_cpu.append(1000 * (time.process_time() - c0) / len(chips))
        t, c0 = time.perf_counter(), time.process_time()
        ours = emb.embed_chips(chips)
        torch_rates.append(len(chips) / (time.perf_counter() - t))
        torch_cpu.append(1000 * (time.process_time() - c0) / len(chips))
        print(f"round {r + 1}: dlib {dlib_rates[-1]:.1f} faces/s ({dlib_cpu[-1]:.1f} CPU-ms/face), "
              f"PyTorch {torch_rates[-1]:.1f} faces/s ({torch_cpu[-1]:.1f} CPU-ms/face, all threads)")
    res = {
        "n_chips": len(chips), "rounds": args.rounds, "batch": args.batch, "torch_threads": args.threads,
        "dlib_faces_per_s": max(dlib_rates), "torch_faces_per_s": max(torch_rates),
        "ratio": max(torch_rates) / max(dlib_rates),
        "dlib_faces_per_s_median": float(np.median(dlib_rates)),
        "torch_faces_per_s_median": float(np.median(torch_rates)),
        "ratio_median": float(np.median(torch_rates) / np.median(dlib_rates)),
        "dlib_cpu_ms_per_face": min(dlib_cpu), "torch_cpu_ms_per_face": min(torch_cpu),
        "max_abs_diff": float(np.abs(ours - ref).max()),
        "torch": torch.__version__, "dlib": dlib.__version__, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(),
    }
    print(f"dlib compute_face_descriptor, one at a time: {res['dlib_faces_per_s']:.1f} faces/s "
          f"(best of {args.rounds})")
    print(f"PyTorch port, batch {args.batch}, {args.threads} threads: {res['torch_faces_per_s']:.1f} faces/s "
          f"(best of {args.rounds})")
    print(f"ratio PyTorch / dlib: {res['ratio']:.2f}× (medians: {res['ratio_median']:.2f}×)")
    print(f"CPU time per face (process time, less sensitive to other processes): "
          f"dlib {res['dlib_cpu_ms_per_face']:.1f} ms, "
          f"PyTorch {res['torch_cpu_ms_per_face']:.1f} ms (summed over {args.threads} threads) -> "
          f"{res['dlib_cpu_ms_per_face'] / res['torch_cpu_ms_per_face']:.1f}× less CPU")
    print(f"max |PyTorch - dlib| over {len(chips)}×128 descriptor values: {res['max_abs_diff']:.2e}")
    print(f"load average during the run: {', '.join(f'{x:.1f}' for x in res['load_average'])} "
          f"on {os.cpu_count()} CPUs (other processes share them: numbers are noisy)")
    if args.out:
        from nnprak.utils import write_json
        write_json(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
