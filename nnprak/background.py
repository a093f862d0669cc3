"""Background people: public faces the from-scratch CNN learns beside the set's own people (notebooks 02 and 03).

A network trained from nothing on 40 people × 6 photos learns only what tells those 240 photos apart. Trained at the
same time to tell apart ~100 more people from LFW (the *background people*, never the set's own), it learns what
makes faces differ in general, and tells the set's people apart far better: on 40 people × 10 grayscale LFW photos
test accuracy went from 78.3 % to 88.3 % (``bench/bench_small_data.py``, three seeds; 91.25 % with the small-set
rules of :func:`nnprak.config.scratch_for_data` that came after, 80 px inputs and the last epoch), and on LFW-62 the features'
verification of people it never saw from 86.8 % to 88.4 % (``bench/bench_scratch_seeds.py --verify``; each on the
LFW pairs without any of its training people: 1,904 and 1,788 pairs). The network still starts from random
weights and is trained in notebook 03; the background people get their own outputs during training, which
:func:`nnprak.models.scratch.keep_classes` removes afterwards, so the network predicts only the set's people.

The background people are the LFW people with at least ``background_min_images`` photos who are not among the set's
people (names compared without case, spaces or underscores), at most ``background_per_person`` photos each (the first
in file order). LFW-62 (the default set) gets the 96 people with 10-19 photos (1,301 images). Notebook 02 crops
them like every other image into ``<processed>/background_crops.csv``. Without LFW on the machine the network
learns from the set alone (and says so).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from . import config
from .data import person_key

BACKGROUND_CROPS = "background_crops.csv"
"""Notebook 02's crops table of the background people, in the profile's processed folder."""


def background_images(lfw_dir: str | os.PathLike, exclude: Iterable[str] = (), min_images: int = 10,
                      per_person: int | None = 40, max_people: int | None = None) -> dict[str, list[Path]]:
    """Return ``{person: image paths}`` of the LFW people with ``min_images`` or more photos, none of ``exclude``.

    Each person keeps the first ``per_person`` photos (file order); ``max_people`` keeps the first people by name.
    """
    from .data import lfw_files, lfw_people

    skip = {person_key(p) for p in exclude}
    people = [p for p in lfw_people(lfw_dir, int(min_images)) if person_key(p) not in skip]
    people = sorted(people)[:max_people] if max_people else sorted(people)
    return {p: lfw_files(lfw_dir, p, per_person) for p in people}


def background_crops(cfg: config.Config, exclude: Iterable[str], progress: bool = True,
                     faces_dir: str | os.PathLike | None = None,
                     out: str | os.PathLike | None = None) -> pd.DataFrame | None:
    """Return the crops table of the background people (notebook 02), or None when the profile uses none.

    ``exclude`` are the set's people. The images are cropped by :func:`nnprak.faces.crop_manifest` like every
    other image and the table written to ``out`` (default ``<processed>/background_crops.csv``); crops of an
    earlier run are reused. Without LFW on the machine this prints why and returns None (notebook 03 then trains
    on the set alone).
    """
    from . import data, faces

    s = cfg.scratch
    if not s.get("background"):
        return None
    try:
        lfw = config.find_lfw(download=False)
    except config.LFWNotFound as err:
        print(f"no background people: {err} The from-scratch CNN learns from your photos alone.")
        return None
    people = background_images(lfw, exclude, s.get("background_min_images", 10), s.get("background_per_person"),
                               s.get("background_people"))
    manifest = data.scan_files(people, cfg.min_image_side, progress=False).assign(split="train")
    return faces.crop_manifest(manifest, cfg, progress=progress, faces_dir=faces_dir,
                               out=out if out is not None else cfg.paths.processed / BACKGROUND_CROPS)


def load_background(cfg: config.Config, path: str | os.PathLike | None = None) -> pd.DataFrame | None:
    """Return notebook 02's background crops table, or None when the profile uses none or notebook 02 made none."""
    from . import faces

    path = Path(path) if path is not None else cfg.paths.processed / BACKGROUND_CROPS
    if not cfg.scratch.get("background") or not path.exists():
        return None
    return faces.load_crops(path)


def is_grey(images: torch.Tensor) -> bool:
    """Return whether most of a batch of uint8 images (N, 3, H, W) are grayscale (three equal channels)."""
    if len(images) == 0:
        return False
    flat = images.flatten(2).to(torch.int16)
    grey = ((flat[:, 0] - flat[:, 1]).abs().amax(1) <= 2) & ((flat[:, 1] - flat[:, 2]).abs().amax(1) <= 2)
    return bool(grey.float().mean() > 0.5)


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """Return uint8 images (N, 3, H, W) converted to grayscale (ITU-R 601 luma in all three channels)."""
    from .train import luma

    x = images.float()
    grey = luma(x[:, 0:1], x[:, 1:2], x[:, 2:3]).round().clamp(0, 255).to(torch.uint8)
    return grey.expand(-1, 3, -1, -1).contiguous()


def usable_background(table: pd.DataFrame | None, path_column: str, own_people: Iterable[str]) -> pd.DataFrame | None:
    """Return the rows of a background crops table that :func:`with_background` joins: a face in ``path_column`` and
    none of ``own_people`` (names compared by :func:`person_key`); None without a table."""
    from . import faces

    if table is None:
        return None
    ok = faces.usable_crops(table, path_column)
    return ok[~ok["person"].map(person_key).isin({person_key(p) for p in own_people})]


def with_background(cached: dict, table: pd.DataFrame | None, path_column: str, grey: bool | str = "auto",
                    progress: bool = False) -> dict:
    """Return cached splits whose training set also holds the background people's faces.

    ``cached`` is :func:`nnprak.train.cached_splits`; ``table`` :func:`load_background` (None or no usable face: the
    splits come back unchanged). The background people's labels follow the set's (``train.classes`` grows, the
    validation and test sets keep the set's people only); ``main_classes`` is the number of the set's people.
    ``grey="auto"``: the background faces are converted to grayscale when most of the set's training photos are.
    """
    from . import data, train

    base = cached["train"]
    ok = usable_background(table, path_column, base.classes)
    if ok is None or ok.empty:
        return cached
    people = sorted(ok["person"].unique())
    bg = train.CachedDataset(data.FaceDataset(ok.assign(split="train"), "train", path_column=path_column,
                                              classes=people), base.size, progress=progress)
    images = to_grey(bg.images) if (is_grey(base.images) if grey == "auto" else grey) else bg.images
    k = len(base.classes)
    joined = base.with_transform(base.transform)
    joined.images = torch.cat([base.images, images])
    joined.targets = list(base.targets) + [k + t for t in bg.targets]
    joined.classes = list(base.classes) + people
    joined.frame = pd.concat([base.frame, bg.frame], ignore_index=True) if base.frame is not None else bg.frame
    joined.paths = list(base.paths) + list(bg.paths)
    joined.main_classes = k
    return dict(cached, train=joined)


def trained_people(cached: dict) -> list[str]:
    """Return every person a network trained on ``cached`` saw: the set's people and the background people."""
    return list(cached["train"].classes)


def main_classes(cached: dict) -> int:
    """Return the number of the set's own people in cached splits (the training classes before the background)."""
    tr = cached["train"]
    return int(getattr(tr, "main_classes", len(tr.classes)))


def background_count(cached: dict) -> tuple[int, int]:
    """Return ``(people, images)`` of the background people in cached splits (``(0, 0)`` without them)."""
    tr = cached["train"]
    k = main_classes(cached)
    return len(tr.classes) - k, int(np.sum(np.asarray(tr.targets) >= k))
