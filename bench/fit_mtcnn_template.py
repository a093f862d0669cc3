"""Fit where facenet-pytorch's MTCNN landmarks fall in dlib's face chips (nnprak.models.dlib_resnet.MTCNN_TEMPLATE).

For LFW images in which dlib's HOG detector and MTCNN both find the face nearest the image centre, dlib's
5-point shape gives dlib's chip transform (the similarity get_face_chip_details fits to DLIB_TEMPLATE); its
inverse maps MTCNN's 5 points into chip pixels. The mean over all faces, in dlib's unpadded unit-square face
coordinates, is the template. Prints the constants to paste into dlib_resnet.py and how well the fitted
template reproduces dlib's chips.

    .venv/bin/python bench/fit_mtcnn_template.py            # 500 faces (a few minutes on 2 cores)
    .venv/bin/python bench/fit_mtcnn_template.py --quick    # 40 faces, a smoke run
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnprak import config  # noqa: E402
from nnprak.models import dlib_resnet as D  # noqa: E402

NAMES = ("left eye centre (image left)", "right eye centre", "nose tip", "mouth, left corner",
         "mouth, right corner")


def lfw_sample(n: int) -> list[Path]:
    """Return the first image of the first ``n`` LFW people (alphabetical)."""
    img_dir = config.find_lfw() / config.LFW_IMAGES_SUBDIR
    people = sorted(p for p in img_dir.iterdir() if p.is_dir())
    return [sorted(p.glob("*.jpg"))[0] for p in people[:n]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="LFW images to use (first image of the first n people)")
    ap.add_argument("--quick", action="store_true", help="smoke run: --n 40")
    args = ap.parse_args(argv)
    n = 40 if args.quick else args.n
    torch.set_num_threads(2)
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")
    emb = D.DlibEmbedder()
    chip_tpl = D.template_points(D.DLIB_TEMPLATE)          # dlib's template in 150-px chip pixels (padding 0.25)
    mapped, used = [], []
    t0 = time.perf_counter()
    for path in lfw_sample(n):
        img = np.asarray(Image.open(path).convert("RGB"))
        shape = emb.detect_shape(img)
        boxes, _, points = mtcnn.detect(Image.fromarray(img), landmarks=True)
        if shape is None or boxes is None:
            continue
        i = D.central_index(boxes, img.shape[1], img.shape[0])
        r = shape.rect
        cx, cy = (boxes[i, 0] + boxes[i, 2]) / 2, (boxes[i, 1] + boxes[i, 3]) / 2
        if not (r.left() <= cx <= r.right() and r.top() <= cy <= r.bottom()):
            continue                                        # the two detectors picked different faces
        chip_to_img = D.similarity_transform(chip_tpl, D.shape_points(shape))
        mapped.append(D.apply_transform(D.invert_transform(chip_to_img), points[i]))
        used.append(path)
    pts = np.stack(mapped)                                  # faces × 5 × 2, chip pixels
    mean = pts.mean(0)
    template = mean / D.CHIP_SIZE * (1 + 2 * D.CHIP_PADDING) - D.CHIP_PADDING
    print(f"{len(used)} of {n} images used ({time.perf_counter() - t0:.0f} s)")
    print("per-point std in chip pixels:", np.round(pts.std(0), 2).tolist())
    print("MTCNN_TEMPLATE = np.array([")
    for (x, y), name in zip(template, NAMES):
        print(f"    [{x:.4f}, {y:.4f}],   # {name}")
    print("])")

    # how close are chips made from MTCNN points on this template to dlib's own chips?
    diffs = []
    for path in used[:50]:
        img = np.asarray(Image.open(path).convert("RGB"))
        shape = emb.detect_shape(img)
        boxes, _, points = mtcnn.detect(Image.fromarray(img), landmarks=True)
        i = D.central_index(boxes, img.shape[1], img.shape[0])
        a = D.chip_from_dlib_shape(img, shape).astype(np.float32)
        b = D.chip_from_points(img, points[i], template).astype(np.float32)
        diffs.append(np.abs(a - b).mean())
    print(f"mean abs pixel difference dlib chip vs MTCNN-template chip (first {len(diffs)}): {np.mean(diffs):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
