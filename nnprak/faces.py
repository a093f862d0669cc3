"""Stage 02: MTCNN face detection, face selection, box crops and 5-point alignment, the failure log.

One image goes through small steps, each one function::

    load_image ─► detect ─► select_face ─► crop_box     ─► <faces>/plain/<person>/<stem>.png
                                      └──► align_face   ─► <faces>/aligned/<person>/<stem>.png

:func:`crop_manifest` runs them over a manifest: equal-sized images are detected in batches, results are
kept in a per-image JSON sidecar (``<faces>/detections/<person>/<stem>.json``) so that an interrupted run
resumes without detecting again, and the returned table is the manifest plus these columns:

=============  =====================================================================================
face_status    ``ok`` | ``no_face`` | ``low_confidence`` | ``too_small`` | ``detector_error`` | ``unreadable`` |
               ``skipped`` (manifest row not ok)
face_reason    why a row is not ``ok`` ("" when ok, but :data:`WHOLE_PHOTO_REASON` for a face :func:`whole_photo_faces`
               placed in a face-only set)
n_faces        faces MTCNN found (0 when none or not run)
face_index     index of the selected face among them (-1 when none)
min_face_size  the MTCNN minimum face size (px) of the detection used: ``cfg.min_face_size``, or the retry size
prob           MTCNN probability of the selected face (NaN when none)
box            JSON ``[x1, y1, x2, y2]`` of the selected face in original pixels ("" when none)
landmarks      JSON 5×2 ``[[x, y], ...]``: left eye, right eye, nose, left and right mouth corner ("" when none)
crop_plain     manifest-style path of the box crop ("" unless face_status is ok)
crop_aligned   manifest-style path of the aligned crop ("" unless face_status is ok)
=============  =====================================================================================

Face selection (``cfg.face_select``) when MTCNN finds several faces — among the faces with probability
>= ``cfg.min_face_prob`` (all faces when none reaches it):

* ``central``  (default) the face nearest the image centre *in units of its own size*:
  (distance of the box centre from the image centre + a tenth of the image's shorter side) / sqrt(box area).
  The subject of a portrait is central and large: a small face in the background near the centre does not
  beat it, a large face slightly off-centre still wins, and of two equal faces the central one wins.
* ``largest``  the face with the largest box area.
* ``probable`` the face with the highest MTCNN probability.

A selected face below ``cfg.min_face_prob`` gives ``low_confidence`` (no crop written).

Speed: LFW faces are large, so the detector ignores faces smaller than ``min_face_size`` pixels
(:data:`DEFAULT_MIN_FACE_SIZE`, overridable by a ``min_face_size`` field of the config or an argument),
which removes the most expensive levels of MTCNN's image pyramid. An image in which no face is found at that
size (a small web photo, a face far from the camera) is detected again at ``retry_min_face_size``
(:data:`DEFAULT_RETRY_MIN_FACE_SIZE`, MTCNN's own default), and then once more inside a grey border
(:data:`DEFAULT_PAD_RETRY`: photos that are already face crops) before it is called ``no_face`` (in a set made only of
face crops it then gets the set's face layout: :func:`whole_photo_faces`); images smaller than
the minimum face size go straight to that retry (MTCNN cannot run on them otherwise), and images with a side
under 12 px (MTCNN's smallest window) are ``too_small``. Photos larger than ``max_side`` pixels
are detected on a downscaled copy (boxes are mapped back), crops always come from the original.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from . import config, data
from .utils import ProgressBar, atomic_path, write_json

FACE_STATUSES = ("ok", "no_face", "low_confidence", "too_small", "detector_error", "unreadable", "skipped",
                 "no_training_face")
SELECT_RULES = ("central", "largest", "probable")
VARIANTS = ("plain", "aligned")
FACE_COLUMNS = ["face_status", "face_reason", "n_faces", "face_index", "min_face_size", "prob", "box", "landmarks",
                "crop_plain", "crop_aligned"]


def crop_column(variant: str) -> str:
    """Return the crops-table column of a crop variant: ``"crop_plain"`` or ``"crop_aligned"``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown crop variant {variant!r}; use one of {', '.join(VARIANTS)}")
    return f"crop_{variant}"


def usable_crops(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Return the rows of a crops table with a face (``face_status`` "ok") and a crop in ``column``."""
    return table[(table["face_status"] == "ok") & (table[column].astype(str) != "")]


DEFAULT_MIN_FACE_SIZE = 60
"""Smallest face (pixels) MTCNN looks for (MTCNN's default: 20).

LFW's subjects are 62-145 px wide (median 92) in its 250 px images; 60 finds all 3,023 of the default profile at
about half the CPU time of 40. Own photos with smaller faces (group or full-body shots) need a lower value.
"""
DEFAULT_RETRY_MIN_FACE_SIZE = 20
"""Minimum face size of the second detection of images without a face (MTCNN's default)."""
DEFAULT_PAD_RETRY = 0.15
"""Grey border, as a fraction of the longer side, around an image in which both passes found no face, for a third
detection. Photos that are already face crops (a downloaded set of cropped faces, a cut-out passport photo: chin or
forehead at the edge) are found by MTCNN only with room around the face: of 400 LFW photos cut to their face box
(92 x 112 px grey, ``bench/bench_face_crops.py``) notebook 02 found 199 faces without the border and 383 with it;
:func:`whole_photo_faces` gives the other 17 the set's median face box and landmarks."""
MTCNN_WINDOW = 12
"""P-Net's input size: MTCNN cannot look at an image whose shorter side is below this."""
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)
"""MTCNN's P-, R- and O-net thresholds (facenet-pytorch defaults)."""
DEFAULT_FACTOR = 0.709
"""Scale step of MTCNN's image pyramid (facenet-pytorch default)."""
DEFAULT_MAX_SIDE = 1024
"""Images with a longer side are detected on a copy downscaled to this size (own phone photos)."""
MAX_BATCH_PIXELS = 8_000_000
"""At most this many pixels go through MTCNN at once (a batch of 128 LFW images, or 8 one-megapixel photos)."""
MAX_CHUNK_PIXELS = 64_000_000
"""Most pixels of decoded originals one detection batch holds (kept for cropping): 64 MP is ~190 MB of RGB, so
32 LFW images (2 MP) or 5 phone photos of 12 MP make a batch, never 32 photos of 24 MP (2.3 GB per worker)."""

ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
"""Canonical positions of the 5 MTCNN landmarks in a 112×112 ArcFace crop (insightface)."""

SIDECAR_VERSION = 3   # 3: the image's sha1 is recorded and checked


# ----------------------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorSettings:
    """MTCNN settings that change what is detected (part of the sidecar key: a change re-detects)."""

    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    thresholds: tuple = DEFAULT_THRESHOLDS
    factor: float = DEFAULT_FACTOR
    max_side: int | None = DEFAULT_MAX_SIDE
    retry_min_face_size: int | None = DEFAULT_RETRY_MIN_FACE_SIZE
    pad_retry: float | None = DEFAULT_PAD_RETRY

    def as_dict(self) -> dict:
        """Return the settings as a JSON-friendly dict."""
        return dict(min_face_size=int(self.min_face_size), thresholds=[float(t) for t in self.thresholds],
                    factor=float(self.factor), max_side=self.max_side,
                    retry_min_face_size=None if self.retry_min_face_size is None else int(self.retry_min_face_size),
                    pad_retry=float(self.pad_retry) if self.pad_retry else None)


_DETECTORS: dict = {}


def make_detector(min_face_size: int = DEFAULT_MIN_FACE_SIZE, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                  factor: float = DEFAULT_FACTOR, device=None):
    """Return a facenet-pytorch ``MTCNN`` (weights ship with the package) on ``device``, cached per settings.

    ``device``: a ``device`` setting or ``torch.device``; None = the active profile's (:func:`config.resolve_device`).
    """
    device = config.resolve_device(device)
    key = (int(min_face_size), tuple(float(t) for t in thresholds), float(factor), str(device))
    if key not in _DETECTORS:
        from facenet_pytorch import MTCNN

        _DETECTORS[key] = MTCNN(min_face_size=key[0], thresholds=list(key[1]), factor=key[2], keep_all=True,
                                device=device).eval()
    return _DETECTORS[key]


Detection = tuple  # (boxes (n, 4), probs (n,), landmarks (n, 5, 2)) in original-image pixels


def _empty_detection() -> Detection:
    return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))


def _as_detection(boxes, probs, points) -> Detection:
    if boxes is None or len(boxes) == 0:
        return _empty_detection()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
    # Rounded once, right here: every later step (selection, crops, the table) sees the same numbers,
    # whether they come from this run or from a sidecar written by an earlier one.
    return boxes.round(2), probs.round(6), points.round(2)


def _detect_batch(mtcnn, images: list[Image.Image], stats: dict | None = None) -> list[Detection | str]:
    """Return the detections of equal-sized images in one MTCNN call, per image if the batch call fails.

    An image MTCNN raises on even alone gives the error's text instead of a detection.
    """
    if stats is not None:
        stats["detector_calls"] = stats.get("detector_calls", 0) + 1
    try:
        boxes, probs, points = mtcnn.detect(list(images), landmarks=True)
        return [_as_detection(b, p, l) for b, p, l in zip(boxes, probs, points)]
    except Exception as err:  # facenet-pytorch's batch path can raise (ragged numpy arrays, size mismatch)
        if len(images) == 1:
            return [f"MTCNN failed on this image ({type(err).__name__}: {err})"]
        if stats is not None:
            stats["batch_fallbacks"] = stats.get("batch_fallbacks", 0) + 1
        return [_detect_batch(mtcnn, [img], stats)[0] for img in images]


def _downscale(img: Image.Image, max_side: int | None) -> tuple[Image.Image, float]:
    side = max(img.size)
    if not max_side or side <= max_side:
        return img, 1.0
    s = max_side / side
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BILINEAR), s


def detect(images: Sequence[Image.Image], mtcnn=None, batch_size: int = 32, max_side: int | None = DEFAULT_MAX_SIDE,
           stats: dict | None = None, errors: dict | None = None) -> list[Detection]:
    """Return one ``(boxes (n,4), probs (n,), landmarks (n,5,2))`` per RGB image, all faces, original pixels.

    Equal-sized images are detected together in batches of ``batch_size`` (fewer when they are large);
    an image without faces gives arrays with n = 0, and so does an image MTCNN fails on (too small for its
    ``min_face_size``, say): never an exception. ``errors``, when given, receives ``{index: reason}`` for those.
    """
    mtcnn = mtcnn if mtcnn is not None else make_detector()
    scaled = [_downscale(img, max_side) for img in images]
    groups: dict[tuple, list[int]] = {}
    for i, (img, _) in enumerate(scaled):
        groups.setdefault(img.size, []).append(i)
    out: list[Detection | None] = [None] * len(images)
    for (w, h), idx in groups.items():
        step = max(1, min(batch_size, MAX_BATCH_PIXELS // max(1, w * h)))
        for k in range(0, len(idx), step):
            chunk = idx[k:k + step]
            dets = _detect_batch(mtcnn, [scaled[i][0] for i in chunk], stats)
            for i, det in zip(chunk, dets):
                if isinstance(det, str):
                    if errors is not None:
                        errors[i] = det
                    det = _empty_detection()
                boxes, probs, points = det
                s = scaled[i][1]
                out[i] = (boxes, probs, points) if s == 1.0 else _as_detection(boxes / s, probs, points / s)
    return out


def detection_side(size: tuple[int, int], max_side: int | None = DEFAULT_MAX_SIDE) -> float:
    """Return the shorter side (px) of an image of ``size`` as MTCNN sees it (after the ``max_side`` downscale)."""
    w, h = size
    s = min(1.0, max_side / max(w, h)) if max_side else 1.0
    return min(w, h) * s


def detect_with_retry(images: Sequence[Image.Image], settings: "DetectorSettings", batch_size: int = 32,
                      stats: dict | None = None, min_prob: float = 0.0,
                      device=None) -> list[tuple[Detection, int, str]]:
    """Return ``(detection, min_face_size used, problem)`` per image: detected at ``settings.min_face_size``, and
    where no face with probability >= ``min_prob`` was found, again at ``settings.retry_min_face_size``, and where
    that found none either, once more with a grey border around the image (``settings.pad_retry``, see
    :data:`DEFAULT_PAD_RETRY`; its boxes and landmarks are given in the image's own pixels, so a box may reach
    past the image's edge).

    A retry's detection replaces the earlier one when it has a face reaching ``min_prob`` (or the earlier had
    none at all). Images whose shorter side is below the minimum face size are detected at the retry size (or
    at their own side when that is smaller still); ``problem`` is "" or the reason no detection could be made
    (``"too_small: ..."``, ``"detector_error: ..."``), with an empty detection. ``device``: see :func:`make_detector`.
    ``stats`` counts the images detected again (``retried``) and those detected with the border (``padded``).
    """
    out: list = [None] * len(images)
    first, retry = [], []
    for i, img in enumerate(images):
        side = detection_side(img.size, settings.max_side)
        if side < MTCNN_WINDOW:
            out[i] = (_empty_detection(), 0, f"too_small: {img.width}x{img.height} px, MTCNN needs faces of at "
                                             f"least {MTCNN_WINDOW} px: use a larger photo")
        elif side < settings.min_face_size:
            retry.append(i)
        else:
            first.append(i)
    for i, result in zip(first, _detect_at(images, first, settings.min_face_size, settings, batch_size, stats,
                                                device)):
        out[i] = result
    retry += [i for i in first if not (out[i][0][1] >= min_prob).any()]
    # without a configured retry size an image keeps its first result
    todo = [i for i in retry if out[i] is None or settings.retry_min_face_size is not None]
    if stats is not None and todo:
        stats["retried"] = stats.get("retried", 0) + len(todo)
    for i, new in _detect_at_retry_size(images, todo, settings, batch_size, stats, device).items():
        if _replaces(out[i], new, min_prob):
            out[i] = new  # else the retry failed or found nothing better: keep the first pass's result
    if settings.pad_retry:
        faceless = [i for i in retry if not out[i][2] and not (out[i][0][1] >= min_prob).any()]
        for i, new in zip(faceless, _detect_padded(images, faceless, settings, batch_size, stats, device)):
            if _replaces(out[i], new, min_prob):
                out[i] = new
    return out


def _replaces(old, new, min_prob: float) -> bool:
    """Return True when a later pass's ``(detection, size, problem)`` should replace the earlier one: there was none
    or it failed, or the new one has a face reaching ``min_prob`` (or the earlier had no face at all)."""
    return old is None or bool(old[2]) or (not new[2] and ((new[0][1] >= min_prob).any() or len(old[0][0]) == 0))


def _detect_at_retry_size(images, idx: Sequence[int], settings: "DetectorSettings", batch_size: int,
                          stats: dict | None, device=None) -> dict[int, tuple[Detection, int, str]]:
    """Return ``{i: (detection, size, problem)}`` for ``images[i]``, i in ``idx``, detected with the retry's minimum
    face size (or the image's shorter side when that is smaller), images of one such size together."""
    low = settings.retry_min_face_size or settings.min_face_size
    by_size: dict[int, list[int]] = {}
    for i in idx:
        by_size.setdefault(int(min(low, detection_side(images[i].size, settings.max_side))), []).append(i)
    out: dict = {}
    for size, group in by_size.items():
        out.update(zip(group, _detect_at(images, group, size, settings, batch_size, stats, device)))
    return out


def pad_image(img: Image.Image, fraction: float) -> tuple[Image.Image, int]:
    """Return (the image with a mid-grey border of ``fraction`` x its longer side on every side, the border in px)."""
    from PIL import ImageOps

    px = max(1, round(fraction * max(img.size)))
    return ImageOps.expand(img.convert("RGB"), border=px, fill=(128, 128, 128)), px


def _detect_padded(images, idx: list[int], settings: "DetectorSettings", batch_size: int, stats: dict | None,
                   device=None) -> list[tuple[Detection, int, str]]:
    """Return ``(detection, size, problem)`` for ``images[i]``, i in ``idx``, detected with a grey border around
    them (:func:`pad_image`), boxes and landmarks moved back into the image's own pixels."""
    if not idx:
        return []
    if stats is not None:
        stats["padded"] = stats.get("padded", 0) + len(idx)
    padded = [pad_image(images[i], settings.pad_retry) for i in idx]
    found = _detect_at_retry_size([img for img, _ in padded], range(len(idx)), settings, batch_size, stats, device)
    out = []
    for k, (_, px) in enumerate(padded):
        (boxes, probs, points), used, problem = found[k]
        out.append((_as_detection(boxes - px, probs, points - px) if len(boxes) else found[k][0], used, problem))
    return out


def _detect_at(images, idx: list[int], size: int, settings: "DetectorSettings", batch_size: int,
               stats: dict | None, device=None) -> list[tuple[Detection, int, str]]:
    """Return ``(detection, size, problem)`` for ``images[i]``, i in ``idx``, detected with minimum face ``size``."""
    errors: dict = {}
    mtcnn = make_detector(size, settings.thresholds, settings.factor, device)
    dets = detect([images[i] for i in idx], mtcnn, batch_size, settings.max_side, stats, errors)
    return [(det, size, f"detector_error: {errors[k]}" if k in errors else "") for k, det in enumerate(dets)]


def select_face(boxes: np.ndarray, probs: np.ndarray, image_size: tuple[int, int], rule: str = "central",
                min_prob: float = 0.0) -> int:
    """Return the index of the face chosen by ``rule`` (``central``/``largest``/``probable``), -1 when none.

    Only faces with probability >= ``min_prob`` compete, unless none reaches it (then all do).
    ``image_size`` is ``(width, height)``.
    """
    if rule not in SELECT_RULES:
        raise ValueError(f"unknown face selection rule {rule!r}; use one of {', '.join(SELECT_RULES)}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(boxes) == 0:
        return -1
    cand = np.flatnonzero(probs >= min_prob)
    if len(cand) == 0:
        cand = np.arange(len(boxes))
    b, p = boxes[cand], probs[cand]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if rule == "largest":
        key = -area
    elif rule == "probable":
        key = -p
    else:  # distance from the centre (plus a tenth of the image) in units of the face's own size
        w, h = image_size
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        key = (np.hypot(cx - w / 2, cy - h / 2) + 0.1 * min(w, h)) / np.sqrt(np.maximum(area, 1e-9))
    order = np.lexsort((-area, key))  # ties: the larger face
    return int(cand[order[0]])


# ----------------------------------------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------------------------------------
def margin_box(box: Sequence[float], image_size: tuple[int, int], size: int = 160, margin: int = 14) -> list[int]:
    """Return the integer crop box ``[x1, y1, x2, y2]`` of ``box`` plus ``margin`` (pixels of the final size).

    Same arithmetic as facenet-pytorch's ``extract_face``: the box grows by ``margin * box_side / (size - margin)``
    and is clipped to the image.
    """
    mx = margin * (box[2] - box[0]) / (size - margin)
    my = margin * (box[3] - box[1]) / (size - margin)
    w, h = image_size
    return [int(max(box[0] - mx / 2, 0)), int(max(box[1] - my / 2, 0)),
            int(min(box[2] + mx / 2, w)), int(min(box[3] + my / 2, h))]


def crop_box(img: Image.Image, box: Sequence[float], size: int = 160, margin: int = 14) -> Image.Image:
    """Return the ``size``×``size`` RGB crop of ``box`` plus margin (facenet-pytorch ``extract_face`` semantics)."""
    return img.crop(margin_box(box, img.size, size, margin)).resize((size, size), Image.BILINEAR)


def template(size: int = 160) -> np.ndarray:
    """Return the 5×2 canonical landmark positions for a ``size``×``size`` crop (ArcFace's 112 px template scaled)."""
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Return the 2×3 similarity matrix (rotation, scale, shift) mapping ``src`` points onto ``dst`` (Umeyama)."""
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s_c ** 2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def align_face(img: Image.Image, landmarks: np.ndarray, size: int = 160) -> Image.Image:
    """Return the ``size``×``size`` RGB crop whose 5 landmarks are moved onto :func:`template` by a similarity warp."""
    import cv2

    m = similarity_transform(landmarks, template(size))
    out = cv2.warpAffine(np.asarray(img), m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0))
    return Image.fromarray(out)


def aligned_fill(landmarks, image_size: tuple[int, int], grid: int = 28) -> float:
    """Return the fraction of a face's aligned crop (:func:`align_face`) that lies outside its photo: the black fill.

    ``image_size`` is the photo's ``(width, height)``; the crop is sampled at ``grid`` x ``grid`` points. About 0 for
    a face inside an ordinary photo (LFW-62, its background people and the web, GIF and PGM sets of
    ``bench/make_photo_sets.py``: median 0, no face over 0.05); most of the crop for a photo that is already a face
    crop, whose chin and forehead touch the edge and whose landmarks then lie far apart (its ``cropped`` set: median
    0.74, every one of 383 faces over 0.46).
    """
    m = similarity_transform(np.asarray(landmarks, dtype=np.float64), template(112))
    ticks = (np.arange(grid) + 0.5) * 112 / grid
    xx, yy = np.meshgrid(ticks, ticks)
    src = (np.stack([xx.ravel(), yy.ravel()], 1) - m[:, 2]) @ np.linalg.inv(m[:, :2]).T   # crop point -> photo
    w, h = image_size
    return float(np.mean((src[:, 0] < 0) | (src[:, 0] > w) | (src[:, 1] < 0) | (src[:, 1] > h)))


def aligned_fills(table: pd.DataFrame) -> pd.Series:
    """Return the :func:`aligned_fill` of each face of a crops table (rows with ``face_status`` "ok" and landmarks),
    indexed like the table; empty for a table without landmarks (e.g. a manifest)."""
    if "landmarks" not in table:
        return pd.Series(dtype=float)
    ok = table[(table["face_status"] == "ok") & (table["landmarks"].astype(str).str.startswith("["))]
    return pd.Series([aligned_fill(parse_landmarks(lm), (int(w), int(h)))
                      for lm, w, h in zip(ok["landmarks"], ok["width"], ok["height"])], index=ok.index, dtype=float)


def median_aligned_fill(table: pd.DataFrame) -> float:
    """Return the median :func:`aligned_fill` of a crops table's faces (:func:`aligned_fills`); 0 without."""
    fills = aligned_fills(table)
    return float(fills.median()) if len(fills) else 0.0


FACE_ONLY_MIN_FACES = 8
"""Faces found before :func:`face_only_layout` trusts a set's layout (their median box and landmarks)."""
FACE_ONLY_SHARE = 0.9
"""Share of a set's found faces whose aligned crop is more than :data:`nnprak.config.ALIGNED_MAX_FILL` black (their
photo is already a face crop) for :func:`face_only_layout` to call the whole set face-only."""
WHOLE_PHOTO_REASON = "no face found; the set's photos are face crops: its median face box and landmarks on this photo"
"""``face_reason`` of a row :func:`whole_photo_faces` gave a face (``face_status`` "ok", ``n_faces`` 0)."""


def face_only_layout(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the median face box (4,) and landmarks (5, 2), as fractions of the photo's width and height, of a set
    whose photos are all face crops; None for any other set.

    A set is face-only when at least :data:`FACE_ONLY_MIN_FACES` faces were found and :data:`FACE_ONLY_SHARE` of them
    have an :func:`aligned_fill` over :data:`nnprak.config.ALIGNED_MAX_FILL` (chin and forehead at the photo's
    edge). LFW-62, its background people and the web, GIF and PGM sets of ``bench/make_photo_sets.py`` have no such
    face; its ``cropped`` set (40 people x 10 photos cut to the face box) has nothing else.
    """
    fills = aligned_fills(table)   # a face with landmarks has a box too (crop_manifest writes both)
    if len(fills) < FACE_ONLY_MIN_FACES or (fills > config.ALIGNED_MAX_FILL).mean() < FACE_ONLY_SHARE:
        return None
    ok = table.loc[fills.index]
    sizes = ok[["width", "height"]].astype(float).to_numpy()
    marks = np.stack([parse_landmarks(v) for v in ok["landmarks"]])
    boxes = np.stack([parse_box(v) for v in ok["box"]]) / np.tile(sizes, 2)
    return np.median(boxes, axis=0), np.median(marks / sizes[:, None, :], axis=0)


LAYOUT_ASPECT_TOLERANCE = 0.1
"""Relative difference of width / height from the gallery's photos up to which :func:`layout_face` trusts a set's
face layout on a new photo (a phone photo of another shape is not one of the set's face crops)."""


def face_layout_info(table: pd.DataFrame, cfg=None) -> dict:
    """Return ``{"face_layout": {"box", "landmarks", "aspect"}}`` (JSON-friendly) for a face-only set, else ``{}``.

    What a saved classifier keeps (``FaceClassifier.info``) so that ``nnprak predict`` and ``enroll`` can treat a
    new photo of such a set as notebook 02 treats its photos: :func:`face_only_layout`'s median box and landmarks
    (fractions of the photo's width and height) and the median width / height of the set's photos. ``{}`` also
    when ``cfg`` turns the layout off (its ``face_only_layout``).
    """
    layout = face_only_layout(table) if getattr(cfg, "face_only_layout", True) else None
    if layout is None:
        return {}
    box, marks = layout
    sizes = table.loc[aligned_fills(table).index, ["width", "height"]].astype(float)
    return {"face_layout": {"box": [round(float(v), 5) for v in box],
                            "landmarks": [[round(float(x), 5), round(float(y), 5)] for x, y in marks],
                            "aspect": round(float((sizes["width"] / sizes["height"]).median()), 5)}}


def layout_face(size: tuple[int, int], layout: dict | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Return (box (1, 4), landmarks (1, 5, 2)) of a :func:`face_layout_info` layout on a photo of ``size`` (w, h);
    None without a layout or when the photo's shape is not the set's (:data:`LAYOUT_ASPECT_TOLERANCE`)."""
    if not layout:
        return None
    w, h = size
    if abs(w / h - layout["aspect"]) > LAYOUT_ASPECT_TOLERANCE * layout["aspect"]:
        return None
    box, marks = _layout_on_photo(np.asarray(layout["box"], float), np.asarray(layout["landmarks"], float), size)
    return box[None], marks[None]


def _layout_on_photo(box: np.ndarray, marks: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return a layout's box (4,) and landmarks (5, 2), fractions of width and height, in pixels of ``size``."""
    w, h = size
    return box * np.array([w, h, w, h]), marks * np.array([w, h])


def whole_photo_faces(table: pd.DataFrame, faces_dir: str | os.PathLike, size: int = 160, margin: int = 14,
                      names: Sequence[str] | None = None) -> pd.DataFrame:
    """Return the crops table with a face for every ``no_face`` photo of a face-only set, its crops written.

    In a set whose photos are already face crops (:func:`face_only_layout`), a photo in which MTCNN finds no face
    still shows one, where the other photos show theirs: it gets the set's median box and landmarks, scaled to its
    size, and both crop variants from them (``face_status`` "ok", ``n_faces`` 0, ``prob`` NaN, ``face_reason``
    :data:`WHOLE_PHOTO_REASON`). Without it such a photo could only count as an error in test and is missing from
    training (17 of the 400 photos of ``bench/make_photo_sets.py cropped``). Any other set is returned unchanged.
    ``names``: each row's crop name (:func:`crop_name` made unique; default: computed here).
    """
    layout = face_only_layout(table)
    rows = table.index[(table["face_status"] == "no_face")] if layout is not None else []
    if len(rows) == 0:
        return table
    table = table.copy()
    box, marks = layout
    names = list(names) if names is not None else _unique_names(table)
    position = {idx: k for k, idx in enumerate(table.index)}
    for i in rows:
        try:
            img = data.load_image(data.abs_path(table.at[i, "path"]))
        except data.ImageError:   # read before; changed since: leave the row as it is
            continue
        b, lm = _layout_on_photo(box, marks, img.size)
        paths = crop_paths(faces_dir, table.at[i, "person"], names[position[i]])
        _write_crops(img, (b[None], np.array([math.nan]), lm[None]), 0, paths, size, margin)
        table.loc[i, ["face_status", "face_reason", "box", "landmarks", "crop_plain", "crop_aligned"]] = [
            "ok", WHOLE_PHOTO_REASON, json.dumps([round(float(v), 2) for v in b]),
            json.dumps([[round(float(x), 2), round(float(y), 2)] for x, y in lm]),
            data.rel_path(paths["plain"]), data.rel_path(paths["aligned"])]
    return table


# ----------------------------------------------------------------------------------------------------------
# Files: crop paths, sidecars, freshness
# ----------------------------------------------------------------------------------------------------------
def crop_name(path: str | os.PathLike, person: str) -> str:
    """Return a crop's name below ``<variant>/<person>/``: the path below the person's folder, suffix ``.png``."""
    parts = Path(path).parts
    below = parts[len(parts) - 1 - parts[::-1].index(person) + 1:] if person in parts[:-1] else parts[-1:]
    return Path(*below).with_suffix(".png").as_posix()


def crop_paths(faces_dir: str | os.PathLike, person: str, name: str) -> dict[str, Path]:
    """Return ``{variant: png path}`` and ``"detections": json sidecar path`` of one image's outputs."""
    faces_dir = Path(faces_dir)
    out = {v: faces_dir / v / person / name for v in VARIANTS}
    out["detections"] = (faces_dir / "detections" / person / name).with_suffix(".json")
    return out


def _unique_names(manifest: pd.DataFrame) -> list[str]:
    """Return each row's crop name (:func:`crop_name`), made unique per person: photo.jpg and photo.png of one person
    become photo.png and photo_png.png, a third clash (e.g. ``Anna/Anna/photo.jpg``) photo_jpg_2.png."""
    names, seen = [], set()
    for path, person in zip(manifest["path"], manifest["person"]):
        name = crop_name(path, person)
        if (person, name) in seen:
            stem = Path(name).with_suffix("").as_posix() + Path(path).suffix.replace(".", "_")
            name, k = stem + ".png", 2
            while (person, name) in seen:
                name, k = f"{stem}_{k}.png", k + 1
        seen.add((person, name))
        names.append(name)
    return names


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -math.inf


def _read_sidecar(path: Path, src_mtime: float, settings: DetectorSettings, sha1: str = "") -> dict | None:
    """Return an earlier run's detection of an image, or None when it cannot be reused: older than the image, made
    with other detector settings, or of other bytes (``sha1``: a photo replaced by another under the same name keeps
    its old date when it is moved, copied with ``cp -p`` or unpacked)."""
    if _mtime(path) < src_mtime:
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if rec.get("version") != SIDECAR_VERSION or rec.get("detector") != settings.as_dict():
        return None
    if sha1 and rec.get("sha1") != sha1:
        return None
    return rec


def _sha1_of(df: pd.DataFrame, i) -> str:
    """Return the manifest's sha1 of row ``i`` ("" when the table has none)."""
    value = df.at[i, "sha1"] if "sha1" in df else ""
    return value if isinstance(value, str) else ""


def _sidecar_detection(rec: dict) -> Detection:
    return (np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4),
            np.asarray(rec["probs"], dtype=np.float64).reshape(-1),
            np.asarray(rec["landmarks"], dtype=np.float64).reshape(-1, 5, 2))


def _write_sidecar(path: Path, source: str, image_size, settings: DetectorSettings, det: Detection,
                   crop: dict | None, used: int, problem: str, sha1: str = "") -> None:
    boxes, probs, points = det
    write_json(path, dict(version=SIDECAR_VERSION, source=source, sha1=sha1, image_size=list(image_size),
                          detector=settings.as_dict(), min_face_size_used=int(used), problem=problem,
                          boxes=boxes.tolist(), probs=probs.tolist(), landmarks=points.tolist(), crop=crop))


def _save_png(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", compress_level=3)


def _write_crops(img: Image.Image, det: Detection, j: int, paths: dict, size: int, margin: int) -> None:
    boxes, _, points = det
    _save_png(crop_box(img, boxes[j], size, margin), paths["plain"])
    _save_png(align_face(img, points[j], size), paths["aligned"])


# ----------------------------------------------------------------------------------------------------------
# The stage: a manifest in, the crops table out
# ----------------------------------------------------------------------------------------------------------
def _selection(det: Detection, image_size, rule: str, min_prob: float, used: int = 0, problem: str = "") -> dict:
    boxes, probs, points = det
    i = select_face(boxes, probs, image_size, rule, min_prob)
    row = dict(n_faces=len(boxes), face_index=i, min_face_size=int(used), prob=math.nan, box="", landmarks="",
               face_status="no_face", face_reason=f"MTCNN found no face of {used} px or more")
    if problem:
        status, reason = problem.split(": ", 1)
        row.update(face_status=status, face_reason=reason)
    if i < 0:
        return row
    row.update(prob=float(probs[i]), box=json.dumps([float(v) for v in boxes[i]]),
               landmarks=json.dumps([[float(x), float(y)] for x, y in points[i]]), face_status="ok", face_reason="")
    if probs[i] < min_prob:
        row.update(face_status="low_confidence",
                   face_reason=f"best face has probability {probs[i]:.3f} < min_face_prob {min_prob}")
    return row


def detector_settings(cfg, **overrides) -> DetectorSettings:
    """Return the :class:`DetectorSettings` of a config (its min_face_size/mtcnn_* fields if any) plus ``overrides``.

    Config fields read when present: ``min_face_size``, ``retry_min_face_size``, ``mtcnn_thresholds``,
    ``mtcnn_factor``, ``detect_max_side``, ``detect_pad_retry``;
    otherwise the module defaults apply.
    """
    base = dict(min_face_size=getattr(cfg, "min_face_size", DEFAULT_MIN_FACE_SIZE),
                retry_min_face_size=getattr(cfg, "retry_min_face_size", DEFAULT_RETRY_MIN_FACE_SIZE),
                thresholds=tuple(getattr(cfg, "mtcnn_thresholds", DEFAULT_THRESHOLDS)),
                factor=getattr(cfg, "mtcnn_factor", DEFAULT_FACTOR),
                max_side=getattr(cfg, "detect_max_side", DEFAULT_MAX_SIDE),
                pad_retry=getattr(cfg, "detect_pad_retry", DEFAULT_PAD_RETRY))
    base.update({k: v for k, v in overrides.items() if v is not None})
    base["thresholds"] = tuple(base["thresholds"])
    return DetectorSettings(**base)


def _in_order(fn: Callable, items: Sequence, workers: int) -> Iterator:
    """Yield ``fn(item)`` for the items in order, computing up to ``workers`` of them at once in threads.

    No more than ``workers`` items are started ahead of the consumer: when it stops (an exception, an interrupt),
    the items already running finish and no new one starts.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        queue = deque(pool.submit(fn, item) for item in items[:workers])
        rest = iter(items[workers:])
        try:
            while queue:
                result = queue.popleft().result()
                nxt = next(rest, _END)
                if nxt is not _END:
                    queue.append(pool.submit(fn, nxt))
                yield result
        finally:
            for future in queue:
                future.cancel()


_END = object()


def detection_workers(cfg, device=None) -> int:
    """Return how many batches :func:`crop_manifest` detects at once: ``cfg.detect_workers``, else one per CPU thread
    (``cfg.threads``) on the CPU and one on a GPU.

    MTCNN is many small tensor operations (a pyramid level, one 24 or 48 px resize per candidate box); PyTorch's
    intra-op threads gain little on those and lose much when the cores are shared. Measured on 128 LFW images,
    2 cores (bench/profile_crop.py): one batch at a time with 2 threads 9-12 s, with 1 thread 2.8-4.4 s, two batches
    at once with 1 thread each 1.4-2.8 s; the boxes of 1 and 2 workers are bitwise equal.
    """
    n = getattr(cfg, "detect_workers", None)
    if n:
        return max(1, int(n))
    device = config.resolve_device(cfg.device) if device is None else device   # a name is enough here
    return 1 if getattr(device, "type", str(device)) != "cpu" else max(1, int(cfg.threads))


def _chunks(todo: list[int], batch: int, pixels: dict[int, int]) -> list[list[int]]:
    """Return ``todo`` cut into batches of at most ``batch`` rows and :data:`MAX_CHUNK_PIXELS` pixels."""
    chunks, cur, px = [], [], 0
    for i in todo:
        p = max(1, int(pixels.get(i, 0)))
        if cur and (len(cur) == batch or px + p > MAX_CHUNK_PIXELS):
            chunks.append(cur)
            cur, px = [], 0
        cur.append(i)
        px += p
    return chunks + ([cur] if cur else [])


NO_TRAINING_FACE = "no_training_face"
"""Face status of the faces of a person with too few training faces (:func:`leave_out_faceless_people`)."""
MIN_TRAINING_FACES = data.MIN_TRAIN_PHOTOS
"""Training faces a person needs (as many training photos as notebook 01 keeps a person): notebook 05 cross-validates
its classifiers with at least two folds, each holding a face of every person (:func:`nnprak.config.cv_folds`).
Notebook 01's :data:`nnprak.data.MIN_PHOTOS_PER_PERSON` gives every person two training photos; this catches the
people whose training photos show no face."""


def leave_out_faceless_people(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Return (the crops table with the faces of every person with fewer than :data:`MIN_TRAINING_FACES` training
    faces set to ``no_training_face``, {person: message} for each such person, in name order).

    The models cannot learn a person from fewer (notebook 05's cross-validation stops), and that person's validation
    and test faces could then only be named wrong: such people are left out of every later notebook, as notebook 01
    leaves out people with too few photos. Their rows lose their crop paths, as rows without a face have none (the
    crop files stay on disk for a later run). The table passed in is not changed.
    """
    table = table.copy()
    usable = table[table["status"] == data.STATUS_OK]
    messages = {}
    for person, rows in usable.groupby("person", sort=True):
        has_face = rows["face_status"] == "ok"
        in_train = rows["split"] == "train"
        train_faces = int((has_face & in_train).sum())
        if train_faces >= MIN_TRAINING_FACES:
            continue
        reason = (f"{train_faces} of the {int(in_train.sum())} training photo(s) with a face, fewer than "
                  f"{MIN_TRAINING_FACES}")
        table.loc[has_face[has_face].index, ["face_status", "face_reason", "crop_plain", "crop_aligned"]] = [
            NO_TRAINING_FACE, f"{person}: {reason}", "", ""]
        messages[person] = (f"left out: {person} ({reason}; faces in {int(has_face.sum())} of {len(rows)} photos): add "
                            "photos in which the face is large, frontal and lit, then run notebooks 01 and 02 again")
    return table, messages


def left_out_people(table: pd.DataFrame) -> set[str]:
    """Return the people of a crops table's usable photos that have no face to learn from: none found, or left out by
    :func:`leave_out_faceless_people`. Later notebooks leave all their photos out."""
    usable = table[table["status"] == data.STATUS_OK]
    return set(usable["person"]) - set(usable.loc[usable["face_status"] == "ok", "person"])


def faceless_predictions(table: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Return one prediction row (``path``, ``crop`` "", ``true``, ``pred`` "no_face", ``score`` 0) per usable photo
    of ``split`` in which no face was found, for the people the models know.

    A model that sees only face crops (notebooks 03 and 04) never meets these photos; appended to its predictions,
    they count as errors, as in the embedding pipeline of notebook 05 (:func:`nnprak.classify.predict_with_missing`),
    so every model is scored on the same test photos.
    """
    known = ~table["person"].isin(left_out_people(table))
    rows = table[(table["status"] == data.STATUS_OK) & (table["split"] == split) & known
                 & (table["face_status"] != "ok")]
    return pd.DataFrame({"path": rows["path"].to_numpy(), "crop": "", "true": rows["person"].to_numpy(),
                         "pred": "no_face", "score": 0.0})


def crop_manifest(manifest, cfg, progress: bool = True, faces_dir: str | os.PathLike | None = None,
                  out: str | os.PathLike | None | bool = None, min_face_size: int | None = None,
                  stats: dict | None = None, on_batch: Callable[[int], None] | None = None,
                  leave_out: bool = False) -> pd.DataFrame:
    """Return the manifest plus face columns (see module doc), writing both crop variants and the table.

    Args:
        manifest: a manifest DataFrame or the path of its CSV (never modified).
        cfg: the :class:`nnprak.config.Config` (crop_size, crop_margin, face_select, min_face_prob,
            detect_batch_size, threads, paths).
        faces_dir: where crops go; default ``cfg.paths.faces``.
        out: where the table is written; default ``cfg.paths.crops``; ``False`` writes nothing.
        min_face_size: overrides the config's / :data:`DEFAULT_MIN_FACE_SIZE`.
        stats: a dict filled with counts (``detected``, ``reused``, ``cropped``, ``detector_calls``, ...) and
            ``seconds``; the same dict is also in ``table.attrs["stats"]``.
        on_batch: called with the number of images finished after every batch (progress hooks, tests).
        leave_out: leave out people without a training face (:func:`leave_out_faceless_people`, a printed line
            each; ``stats["left_out"]`` lists them): notebook 02 does for the data set, not for strangers.

    Images whose crops and sidecar are newer than the image are not detected or cropped again.
    """
    import torch

    t0 = time.perf_counter()
    df = data.load_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else manifest
    df = df.reset_index(drop=True).copy()
    faces_dir = Path(faces_dir) if faces_dir is not None else cfg.paths.faces
    settings = detector_settings(cfg, min_face_size=min_face_size)
    size, margin, rule, min_prob = int(cfg.crop_size), int(cfg.crop_margin), cfg.face_select, float(cfg.min_face_prob)
    crop_key = dict(rule=rule, min_prob=min_prob, size=size, margin=margin)
    if rule not in SELECT_RULES:
        raise ValueError(f"cfg.face_select={rule!r}; use one of {', '.join(SELECT_RULES)}")
    device = config.resolve_device(cfg.device)
    stats = stats if stats is not None else {}
    stats.update(rows=len(df), detected=0, reused=0, retried=0, padded=0, cropped=0, skipped=0, unreadable=0, detector_calls=0,
                 batch_fallbacks=0)

    rows: list[dict] = [dict() for _ in range(len(df))]
    names = _unique_names(df)
    todo: list[int] = []
    for i, r in df.iterrows():
        if r["status"] != data.STATUS_OK:
            rows[i] = dict(face_status="skipped", face_reason=f"manifest status {r['status']}")
            stats["skipped"] += 1
        else:
            todo.append(i)
    # Batches of equal-sized images: sort by the manifest's size (stable, so LFW keeps its order).
    size_of = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce").fillna(0).astype(int)
                            for c in ("width", "height")})
    todo.sort(key=lambda i: (size_of.at[i, "width"], size_of.at[i, "height"]))

    batch = max(1, int(cfg.detect_batch_size))

    def process(chunk: list[int]) -> dict:
        """Detect, select, crop and record one batch of rows (fills ``rows``); return its counts."""
        counts: dict = {}
        paths = {i: crop_paths(faces_dir, df.at[i, "person"], names[i]) for i in chunk}
        src = {i: data.abs_path(df.at[i, "path"]) for i in chunk}
        src_mtime = {i: _mtime(src[i]) for i in chunk}
        sha1s = {i: _sha1_of(df, i) for i in chunk}
        dets: dict[int, Detection] = {}
        sizes: dict[int, tuple] = {}
        used: dict[int, int] = {}        # min_face_size of the detection kept
        problems: dict[int, str] = {}    # "" or "<face_status>: <reason>" when no detection could be made
        need_crop: list[int] = []
        done_crops: dict[int, dict | None] = {}  # crop settings of the crops made by an earlier run

        def count(key: str) -> None:
            counts[key] = counts.get(key, 0) + 1

        for i in chunk:
            rec = _read_sidecar(paths[i]["detections"], src_mtime[i], settings, sha1s[i])
            if rec is not None:
                dets[i], sizes[i], done_crops[i] = _sidecar_detection(rec), tuple(rec["image_size"]), rec.get("crop")
                used[i], problems[i] = int(rec["min_face_size_used"]), rec["problem"]
                count("reused")
        images: dict[int, Image.Image] = {}
        for i in chunk:
            if i in dets:
                continue
            try:
                images[i] = data.load_image(src[i])
            except data.ImageError as err:
                rows[i] = dict(face_status="unreadable", face_reason=f"{err.status}: {err.detail}")
                count("unreadable")
        if images:
            for i, (det, size_used, problem) in zip(images, detect_with_retry(list(images.values()), settings, batch,
                                                                               counts, min_prob, device)):
                dets[i], sizes[i], used[i], problems[i] = det, images[i].size, size_used, problem
                count("detected")
        for i in dets:
            sel = _selection(dets[i], sizes[i], rule, min_prob, used[i], problems[i])
            rows[i] = sel
            if sel["face_status"] != "ok":
                continue
            fresh = (i not in images and all(_mtime(paths[i][v]) >= src_mtime[i] for v in VARIANTS)
                     and done_crops.get(i) == dict(crop_key, face_index=sel["face_index"]))
            if not fresh:
                need_crop.append(i)
            for v in VARIANTS:
                sel[crop_column(v)] = data.rel_path(paths[i][v])
        for i in need_crop:
            img = images.get(i)
            if img is None:
                try:
                    img = data.load_image(src[i])
                except data.ImageError as err:
                    rows[i] = dict(face_status="unreadable", face_reason=f"{err.status}: {err.detail}")
                    count("unreadable")
                    continue
            _write_crops(img, dets[i], rows[i]["face_index"], paths[i], size, margin)
            count("cropped")
        for i in dets:  # the sidecar last: its presence means this image is finished
            if rows[i].get("face_status") == "unreadable" or not (i in images or i in need_crop):
                continue
            if (problems[i] or "").startswith("detector_error"):  # a failure of MTCNN itself: try again next run
                continue
            crop = dict(crop_key, face_index=rows[i]["face_index"]) if rows[i]["face_status"] == "ok" else None
            _write_sidecar(paths[i]["detections"], df.at[i, "path"], sizes[i], settings, dets[i], crop, used[i],
                           problems[i], sha1s[i])
        return counts

    # Batches run in parallel, each with one PyTorch thread (see detection_workers): every batch then computes
    # exactly what it computes alone, whatever the number of workers.
    workers = detection_workers(cfg, device)
    stats["workers"] = workers
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    chunks = _chunks(todo, batch, (size_of["width"] * size_of["height"]).to_dict())
    bar = ProgressBar(total=len(todo), desc="face detection", unit="images", progress=progress)
    done = 0
    try:
        for chunk, counts in zip(chunks, _in_order(process, chunks, workers)):
            for key, n in counts.items():
                stats[key] = stats.get(key, 0) + n
            done += len(chunk)
            bar.update(len(chunk))
            if on_batch is not None:
                on_batch(done)
    finally:
        torch.set_num_threads(threads)
    bar.close()

    face = pd.DataFrame(rows, index=df.index)
    defaults = dict(face_status="skipped", face_reason="", n_faces=0, face_index=-1, min_face_size=0, prob=math.nan,
                    box="", landmarks="", crop_plain="", crop_aligned="")
    for col in FACE_COLUMNS:
        face[col] = face[col].fillna(defaults[col]) if col in face else defaults[col]
    face["n_faces"] = face["n_faces"].astype(int)
    face["face_index"] = face["face_index"].astype(int)
    face["min_face_size"] = face["min_face_size"].astype(int)
    face["prob"] = face["prob"].astype(float)
    table = pd.concat([df.drop(columns=[c for c in FACE_COLUMNS if c in df]), face[FACE_COLUMNS]], axis=1)
    found = int((table["face_status"] == "ok").sum())
    if getattr(cfg, "face_only_layout", True):   # face-only sets: the photos MTCNN missed
        table = whole_photo_faces(table, faces_dir, size, margin, names)
    stats["ok"] = int((table["face_status"] == "ok").sum())   # faces found (before people are left out)
    stats["whole_photo"] = stats["ok"] - found
    if leave_out:
        table, messages = leave_out_faceless_people(table)
        stats["left_out"] = list(messages)
        for message in messages.values():
            print(message)
    stats["seconds"] = time.perf_counter() - t0
    stats["device"] = str(device)
    table.attrs["stats"] = stats
    if out is not False:
        data.save_manifest(table, out if out is not None else cfg.paths.crops)
    return table


def load_crops(path: str | os.PathLike) -> pd.DataFrame:
    """Return the crops table written by :func:`crop_manifest` with numeric columns parsed (prob NaN when none).

    A ``crops.csv`` beside a ``manifest.csv`` (a profile's ``data/processed``) must have been cropped from that
    manifest (:func:`nnprak.data.dataset_id`): after notebook 01 ran again (photos added, another seed), notebooks
    03-05 would otherwise train on the old split and record their results as the new one's. A ValueError says to
    run notebook 02 again.
    """
    path = Path(path)
    df = data.load_manifest(path)
    manifest = path.parent / config.MANIFEST_FILE
    if path.name == config.CROPS_FILE and manifest.exists():
        now, cropped = data.dataset_id(data.load_manifest(manifest)), data.dataset_id(df)
        if now != cropped:
            raise ValueError(f"{path} was cropped from another manifest than {manifest} (data set {cropped}, now "
                             f"{now}): notebook 01 ran again since notebook 02. Run notebook 02 again, then this one.")
    for col in ("face_status", "face_reason", "box", "landmarks", "crop_plain", "crop_aligned"):
        df[col] = df[col].astype(str)
    df["prob"] = pd.to_numeric(df["prob"], errors="coerce").astype(float)
    df["n_faces"] = pd.to_numeric(df["n_faces"]).astype(int)
    df["face_index"] = pd.to_numeric(df["face_index"]).astype(int)
    if "min_face_size" in df:
        df["min_face_size"] = pd.to_numeric(df["min_face_size"]).astype(int)
    return df


def failures(table: pd.DataFrame) -> pd.DataFrame:
    """Return the rows whose face_status is not ``ok``: path, person, split, face_status, face_reason, n_faces, prob."""
    cols = ["path", "person", "split", "face_status", "face_reason", "n_faces", "prob"]
    cols = [c for c in cols if c in table]
    return table.loc[table["face_status"] != "ok", cols].reset_index(drop=True)


def summary(table: pd.DataFrame) -> pd.Series:
    """Return the number of rows per face_status (every status listed, in :data:`FACE_STATUSES` order)."""
    return table["face_status"].value_counts().reindex(list(FACE_STATUSES), fill_value=0).rename("images")


def parse_box(value: str) -> np.ndarray | None:
    """Return a table's ``box`` JSON as a (4,) array, None when empty."""
    return np.asarray(json.loads(value), dtype=np.float64) if isinstance(value, str) and value else None


def parse_landmarks(value: str) -> np.ndarray | None:
    """Return a table's ``landmarks`` JSON as a (5, 2) array, None when empty."""
    return np.asarray(json.loads(value), dtype=np.float64).reshape(5, 2) if isinstance(value, str) and value else None


# ----------------------------------------------------------------------------------------------------------
# Figures (plain functions returning matplotlib figures)
# ----------------------------------------------------------------------------------------------------------
def _grid(n: int, cols: int, cell: float = 2.0):
    import matplotlib.pyplot as plt

    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, list(axes.flat)


def _draw(ax, img, boxes=(), landmarks=(), selected: int = -1, title: str = ""):
    import matplotlib.patches as patches

    ax.imshow(img)
    for j, b in enumerate(boxes):
        sel = j == selected
        ax.add_patch(patches.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False,
                                       edgecolor="lime" if sel else "orange", linewidth=2 if sel else 1,
                                       linestyle="-" if sel else "--"))
    for j, pts in enumerate(landmarks):
        if pts is not None and (selected < 0 or j == selected):
            pts = np.asarray(pts).reshape(5, 2)
            ax.scatter(pts[:, 0], pts[:, 1], s=6, c="red")
    if title:
        ax.set_title(title, fontsize=7)


def plot_detections(images: Sequence[Image.Image], detections: Sequence[Detection], rule: str = "central",
                    min_prob: float = 0.0, cols: int = 4, titles: Sequence[str] | None = None):
    """Return a figure of images with every detected box (dashed) and the selected one (green, with landmarks)."""
    fig, axes = _grid(len(images), cols, 2.5)
    for k, (img, (boxes, probs, points)) in enumerate(zip(images, detections)):
        sel = select_face(boxes, probs, img.size, rule, min_prob)
        title = titles[k] if titles else (f"{len(boxes)} face(s), p={probs[sel]:.3f}" if sel >= 0 else "no face")
        _draw(axes[k], img, boxes, points, sel, title)
    fig.tight_layout()
    return fig


def plot_crop_grid(table: pd.DataFrame, n: int = 16, variant: str = "plain", cols: int = 8, seed: int = 0):
    """Return a figure of ``n`` random crops of one variant (``plain``/``aligned``), titled by person."""
    column = crop_column(variant)
    ok = usable_crops(table, column)
    pick = ok.sample(min(n, len(ok)), random_state=seed) if len(ok) else ok
    fig, axes = _grid(max(1, len(pick)), cols, 1.6)
    for ax, (_, r) in zip(axes, pick.iterrows()):
        ax.imshow(Image.open(data.abs_path(r[column])))
        ax.set_title(r["person"].replace("_", " ")[:18], fontsize=6)
    fig.suptitle(f"{variant} crops ({len(pick)} of {len(ok)})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_variants(table: pd.DataFrame, n: int = 6, seed: int = 0):
    """Return a figure with, per row, an original image (selected box), its plain crop and its aligned crop."""
    ok = table[table["face_status"] == "ok"]
    pick = ok.sample(min(n, len(ok)), random_state=seed) if len(ok) else ok
    fig, axes = _grid(3 * max(1, len(pick)), 3, 2.0)
    for k, (_, r) in enumerate(pick.iterrows()):
        box, pts = parse_box(r["box"]), parse_landmarks(r["landmarks"])
        _draw(axes[3 * k], data.load_image(data.abs_path(r["path"])), [box], [pts], 0, r["person"][:20])
        for j, v in enumerate(VARIANTS, start=1):
            axes[3 * k + j].imshow(Image.open(data.abs_path(r[crop_column(v)])))
            axes[3 * k + j].set_title(v, fontsize=7)
    fig.tight_layout()
    return fig


def plot_prob_hist(table: pd.DataFrame, min_prob: float | None = None):
    """Return a histogram figure of the selected faces' MTCNN probabilities (log count), with the threshold."""
    import matplotlib.pyplot as plt

    p = table["prob"].astype(float).dropna()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(p, bins=np.linspace(min(0.6, p.min() if len(p) else 0.6), 1.0, 41), color="steelblue")
    ax.set_yscale("log")
    if min_prob is not None:
        ax.axvline(min_prob, color="red", linestyle="--", label=f"min_face_prob = {min_prob}")
        ax.legend(fontsize=8)
    ax.set_xlabel("MTCNN probability of the selected face")
    ax.set_ylabel("images")
    fig.tight_layout()
    return fig


def plot_failures(table: pd.DataFrame, n: int = 12, cols: int = 4):
    """Return a figure of up to ``n`` non-ok images (readable ones), titled with their face_status."""
    bad = table[table["face_status"].isin(["no_face", "low_confidence"])].head(n)
    fig, axes = _grid(max(1, len(bad)), cols, 2.5)
    if not len(bad):
        axes[0].text(0.5, 0.5, "no failures", ha="center", va="center")
    for ax, (_, r) in zip(axes, bad.iterrows()):
        box, pts = parse_box(r["box"]), parse_landmarks(r["landmarks"])
        title = f"{r['person'][:16]}: {r['face_status']}" + (f" p={r['prob']:.2f}" if box is not None else "")
        _draw(ax, data.load_image(data.abs_path(r["path"])), [box] if box is not None else [],
              [pts] if pts is not None else [], 0 if box is not None else -1, title)
    fig.tight_layout()
    return fig
