"""The one training loop of nnprak (notebooks 03 and 04): data pipeline, optimiser helpers, ``fit`` and ``predict``.

``fit`` trains any classifier (the scratch ResNet of notebook 03, a pretrained ResNet-50 with per-group
learning rates in notebook 04) and gives:

* a tqdm progress bar (one bar over the epochs, its text updated every batch with loss and accuracy); under
  ``nnprak run`` the same text goes to the terminal instead (:class:`nnprak.utils.ProgressBar`),
* early stopping on validation accuracy (``patience`` epochs without improvement) and a time budget
  (``max_minutes``: a schedule that would not fit is re-planned after every epoch, at the median pace so far, so that
  it still ends at its lowest rate; without such a schedule training stops after the epoch that passes the budget),
* a checkpoint written atomically after every epoch: the last state (model, optimiser, scheduler, epoch,
  history, early-stopping counters) for ``resume=True`` and the best model so far,
* the best weights restored into the model at the end, and the history as a DataFrame
  (``epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds``).

Determinism: before every epoch ``fit`` reseeds Python, NumPy, PyTorch and the training loader's own
generators from ``(seed, epoch)``. The same seed therefore gives the same history on the CPU with
``num_workers=0``, and a run resumed from a checkpoint continues exactly like an uninterrupted one.

Speed on two CPU cores: images are decoded once into memory (:class:`CachedDataset`), the training
augmentation is one affine warp per batch (:class:`FaceAugment`, :meth:`CachedDataset.__getitems__`), and
``channels_last`` speeds up the convolutions; the default scratch CNN then needs about 10-14 s per epoch (3,422
images at 64 px with the background people), nearly all of it in the network's forward and backward passes.

Class imbalance: LFW-62 ranges from 530 (George W Bush) to 20 images per person. :func:`make_loaders`
uses **class-balanced sampling** (``WeightedRandomSampler``, weight ``n_class ** -balanced`` per image,
drawn with replacement) rather than class weights in the loss: a rare person's few images then come
back in every epoch with fresh augmentations, and the loss keeps its ordinary scale. ``balanced=0.5``
samples by the square root (a compromise between accuracy on the frequent people and macro-F1).

Typical use (notebook 03; the settings come from ``cfg.scratch``)::

    splits = cached_splits(manifest, size=64)                 # decode once: {split: CachedDataset}
    train_ds = splits["train"].with_transform(train_transforms(64))
    val_ds, test_ds = (splits[s].with_transform(eval_transforms(64)) for s in ("val", "test"))
    train_dl, val_dl, test_dl = make_loaders(train_ds, val_ds, test_ds, batch_size=64, balanced=0.5)
    model = ScratchResNet(len(train_ds.classes), in_size=64)
    opt = make_optimizer(model, "adamw", lr=3e-3, weight_decay=0.05)
    sched = make_scheduler(opt, "onecycle", epochs=30, steps_per_epoch=len(train_dl))
    history = fit(model, train_dl, val_dl, epochs=30, optimizer=opt, scheduler=sched, patience=8,
                  checkpoint_path=cfg.paths.models / "scratch.pt", resume=True, max_minutes=10,
                  channels_last=True)
    y_true, y_pred, probs = predict(model, test_dl)
"""
from __future__ import annotations

import math
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from . import config
from .utils import ProgressBar, atomic_path, progress_iter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
CHECKPOINT_FORMAT = "nnprak.train/1"

LFW_STAND_IN_CROP = 120
"""Centre crop (pixels of the 250x250 deep-funneled LFW image) used as a stand-in for the MTCNN face crop
until notebook 02's crops exist: about the face box plus a small margin."""


# ----------------------------------------------------------------------------------------------------------
# Transforms and the in-memory image cache
# ----------------------------------------------------------------------------------------------------------
def luma(r, g, b):
    """Return the grey value (ITU-R 601 luma) of red, green and blue channels (tensors or numbers)."""
    return 0.299 * r + 0.587 * g + 0.114 * b


class FaceAugment:
    """Random crop, flip, rotation and colour jitter of one image in a single affine warp (fast on CPUs).

    Equivalent in distribution to torchvision's ``RandomResizedCrop(scale, ratio) -> RandomHorizontalFlip
    -> RandomRotation -> ColorJitter(brightness, contrast, saturation) -> ToDtype -> Normalize`` (see
    :func:`train_transforms` with ``fast=False``), but the crop, flip and rotation are composed into one
    2x3 matrix and applied with one ``grid_sample``: about 0.5 ms instead of 2 ms per 64 px image, and
    :meth:`batch` warps a whole batch at once (about 0.1 ms an image; a DataLoader over a :class:`CachedDataset`
    uses it). Randomness comes from PyTorch's global generator (reseeded every epoch by :func:`fit`). Accepts a PIL
    image or a (3, H, W) uint8/float tensor; inputs of another size are first resized (antialiased) to ``size`` x
    ``size``.
    """

    def __init__(self, size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 scale: tuple[float, float] = (0.8, 1.0), ratio: tuple[float, float] = (0.9, 1.1),
                 rotation: float = 10.0, jitter: float = 0.3, flip: bool = True):
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)
        self.rotation, self.jitter, self.flip = float(rotation), float(jitter), bool(flip)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __repr__(self) -> str:
        return (f"FaceAugment(size={self.size}, scale={self.scale}, ratio={self.ratio}, rotation={self.rotation}, "
                f"jitter={self.jitter}, flip={self.flip})")

    def _to_float(self, img) -> torch.Tensor:
        """Return ``img`` (PIL image, (3, H, W) or (N, 3, H, W) tensor) as floats in 0..1 at ``size`` x ``size``."""
        if not torch.is_tensor(img):
            from torchvision.transforms.v2 import functional as TF
            img = TF.pil_to_tensor(img.convert("RGB"))
        x = img.float().div_(255) if img.dtype == torch.uint8 else img.float()
        if tuple(x.shape[-2:]) != (self.size, self.size):
            batch = x if x.ndim == 4 else x[None]
            batch = torch.nn.functional.interpolate(batch, size=(self.size, self.size), mode="bilinear",
                                                    antialias=True, align_corners=False)
            x = batch if x.ndim == 4 else batch[0]
        return x

    def _draw(self) -> tuple[list[list[float]], list[float] | None]:
        """Return one image's random warp (a 2x3 matrix) and colour factors (brightness, contrast, saturation)."""
        u = torch.rand(8).tolist()
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[0]
        log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * u[1]
        sx = min(1.0, math.sqrt(area * math.exp(log_r)))      # crop width and height as fractions
        sy = min(1.0, math.sqrt(area / math.exp(log_r)))
        tx, ty = (2 * u[2] - 1) * (1 - sx), (2 * u[3] - 1) * (1 - sy)   # crop centre, anywhere it fits
        angle = math.radians((2 * u[4] - 1) * self.rotation)
        mirror = -1.0 if self.flip and u[5] < 0.5 else 1.0
        c, s = math.cos(angle), math.sin(angle)
        # output pixel (x, y) in [-1, 1] -> source: crop(scale, shift) o rotate o mirror
        theta = [[sx * c * mirror, -sx * s, tx], [sy * s * mirror, sy * c, ty]]
        j = self.jitter
        return theta, ([1 - j + 2 * j * v for v in torch.rand(3).tolist()] if j else None)

    def batch(self, images) -> torch.Tensor:
        """Return a batch (N, 3, H, W) of images augmented independently, as one warp for the whole batch.

        The same images and random numbers as ``N`` calls of the transform, image after image (each image's draws
        in the same order), give bit-identical results in about a third of the time (64 images at 64 px: about
        8 ms instead of 23 ms on two cores); :meth:`CachedDataset.__getitems__` uses it for whole batches.
        """
        import torch.nn.functional as F

        x = self._to_float(images)
        n = len(x)
        draws = [self._draw() for _ in range(n)]
        theta = torch.tensor([d[0] for d in draws], dtype=torch.float32).view(n, 2, 3)
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.jitter:
            b, ct, sa = torch.tensor([d[1] for d in draws], dtype=torch.float32).T.reshape(3, n, 1, 1, 1)
            x = x * b
            grey = luma(x[:, 0], x[:, 1], x[:, 2]).unsqueeze(1)   # each image's mean alone: at 182 px and more a
            grey = torch.stack([g.mean() for g in grey]).view(n, 1, 1, 1)   # batch-wide reduction splits otherwise
            x = (x - grey) * ct + grey
            x = x.clamp(0, 1)
            grey = luma(x[:, 0], x[:, 1], x[:, 2]).unsqueeze(1)
            x = (x - grey) * sa + grey
        return (x.clamp(0, 1) - self.mean) / self.std

    def __call__(self, img) -> torch.Tensor:
        return self.batch(self._to_float(img)[None])[0]


def train_transforms(size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, *,
                     scale: tuple[float, float] = (0.8, 1.0), ratio: tuple[float, float] = (0.9, 1.1),
                     rotation: float = 10.0, jitter: float = 0.3, flip: bool = True, fast: bool = True):
    """Return the training augmentation for face crops: a PIL image or uint8 tensor -> normalised float tensor.

    Faces are already centred and upright, so the augmentation is mild: a random crop of 80-100 % of the
    area (aspect 0.9-1.1) resized to ``size``, a horizontal flip (faces are roughly symmetric), a rotation of
    up to ``rotation`` degrees and brightness/contrast/saturation jitter of ``jitter``. No vertical flips,
    no hue shifts (skin colour carries identity information).

    ``fast=True`` gives :class:`FaceAugment` (one affine warp, 4x faster); ``fast=False`` the same steps
    as a torchvision ``v2.Compose`` (easier to read, antialiased when cropping from much larger images).
    """
    if fast:
        return FaceAugment(size, mean, std, scale=scale, ratio=ratio, rotation=rotation, jitter=jitter, flip=flip)
    from torchvision.transforms import v2

    steps = [v2.ToImage(), v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if rotation:
        steps.append(v2.RandomRotation(rotation))
    if jitter:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def eval_transforms(size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """Return the deterministic evaluation transform: resize to ``size`` x ``size`` and normalise."""
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def _center_crop_box(w: int, h: int, crop: int | float | None) -> tuple[int, int, int, int] | None:
    if crop is None:
        return None
    side = int(round(crop * min(w, h))) if isinstance(crop, float) and crop <= 1 else int(crop)
    side = min(side, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


class CachedDataset(Dataset):
    """A dataset of images decoded once into one uint8 tensor (N, 3, size, size) in memory.

    Decoding JPEG/PNG files every epoch costs more than a small CNN's forward pass on two cores; this
    decodes each image of ``dataset`` once, optionally centre-crops it, resizes it to ``size`` and keeps the
    bytes (3,000 images at 64 px: 37 MB). ``transform`` then runs on the uint8 tensor each time an item is
    read (the transforms of :func:`train_transforms` / :func:`eval_transforms` accept it).

    Args:
        dataset: yields ``(PIL image or uint8 tensor, label)``, e.g. a :class:`nnprak.data.FaceDataset`
            built without a transform (a transform it has is switched off while caching).
        size: side of the cached images in pixels.
        crop: centre crop before resizing: pixels (int), a fraction of the shorter side (float <= 1) or None.
            ``LFW_STAND_IN_CROP`` on the 250 px LFW originals stands in for MTCNN crops.
        transform: applied to each cached uint8 image when read.
        progress: show a progress bar while decoding.
    """

    def __init__(self, dataset: Dataset, size: int, crop: int | float | None = None,
                 transform: Callable | None = None, progress: bool = False):
        from PIL import Image

        self.size, self.crop, self.transform = int(size), crop, transform
        self.classes = list(getattr(dataset, "classes", []))
        self.frame = getattr(dataset, "frame", None)
        self.paths = list(getattr(dataset, "paths", []))
        inner = getattr(dataset, "transform", None)
        if inner is not None:
            dataset.transform = None
        try:
            n = len(dataset)
            self.images = torch.empty((n, 3, self.size, self.size), dtype=torch.uint8)
            targets = []
            for i in progress_iter(range(n), desc="decoding images", unit="images", progress=progress, leave=False):
                img, label = dataset[i]
                if torch.is_tensor(img):
                    from torchvision.transforms.v2 import functional as F
                    img = F.to_pil_image(img)
                img = img.convert("RGB")
                box = _center_crop_box(img.width, img.height, crop)
                if box is not None:
                    img = img.crop(box)
                if img.size != (self.size, self.size):
                    img = img.resize((self.size, self.size), Image.BILINEAR, reducing_gap=None)
                self.images[i] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
                targets.append(int(label))
        finally:
            if inner is not None:
                dataset.transform = inner
        self.targets = targets

    def with_transform(self, transform: Callable | None) -> "CachedDataset":
        """Return a view of the same cached images with another transform (no second decoding)."""
        view = object.__new__(CachedDataset)
        view.__dict__.update(self.__dict__)
        view.transform = transform
        return view

    def digest(self) -> str:
        """Return a SHA-1 hex digest of the cached pixels and labels (a cache key that changes with the inputs).

        Keys built from file paths miss re-made crops (new detections, another alignment): the same paths, other
        pixels. Hashing 2,121 chips of 150 px takes about a second.
        """
        import hashlib

        h = hashlib.sha1(str((tuple(self.images.shape), self.classes)).encode("utf-8"))
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(np.asarray(self.targets, dtype=np.int64).tobytes())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = self.images[i]
        return (self.transform(img) if self.transform else img), self.targets[i]

    def __getitems__(self, indices: Sequence[int]) -> list:
        """Return the items ``indices`` (what a ``DataLoader`` asks for one batch): a transform with a ``batch``
        method (:class:`FaceAugment`) runs once on the whole batch, with the same result as item by item."""
        if not hasattr(self.transform, "batch"):
            return [self[i] for i in indices]
        out = self.transform.batch(self.images[torch.as_tensor([int(i) for i in indices], dtype=torch.long)])
        return [(img, self.targets[i]) for img, i in zip(out, indices)]


def cached_splits(manifest, size: int, path_column: str = "path", crop: int | float | None | str = "auto",
                  classes: Sequence[str] | None = None, splits: Sequence[str] = ("train", "val", "test"),
                  progress: bool = False) -> dict[str, CachedDataset]:
    """Return ``{split: CachedDataset}`` of a manifest's usable rows, all with the same class list.

    ``crop="auto"`` centre-crops to :data:`LFW_STAND_IN_CROP` when every image is an LFW original
    (``path_column == "path"`` and all paths in LFW's deep-funneled folder: stand-in face crops), and keeps
    everything else whole (face crops of another column, own photos).
    Attach transforms with :meth:`CachedDataset.with_transform`.
    """
    from .data import STATUS_OK, FaceDataset, load_manifest

    df = load_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else manifest
    usable = df[(df["status"] == STATUS_OK) & (df[path_column].astype(str) != "")]
    if isinstance(crop, str):
        if crop != "auto":
            raise ValueError(f"crop must be a number, None or 'auto', got {crop!r}")
        lfw = path_column == "path" and len(usable) > 0 and bool(
            usable[path_column].astype(str).str.contains(f"/{config.LFW_IMAGES_SUBDIR}/", regex=False).all())
        crop = LFW_STAND_IN_CROP if lfw else None
    if classes is None:
        classes = sorted(usable["person"].unique())
    return {split: CachedDataset(FaceDataset(df, split, path_column=path_column, classes=list(classes)), size,
                                 crop=crop, progress=progress) for split in splits}


def data_fingerprint(ds: Dataset) -> str:
    """Return a SHA-1 hex digest of a training set: its pixels and labels when cached (:meth:`CachedDataset.digest`),
    else its size, image paths and labels (what :func:`fit` stores in a checkpoint and checks before resuming)."""
    import hashlib

    if hasattr(ds, "digest"):
        return ds.digest()
    h = hashlib.sha1(str((len(ds), list(getattr(ds, "paths", [])))).encode("utf-8"))
    h.update(np.asarray(dataset_targets(ds), dtype=np.int64).tobytes())
    return h.hexdigest()


def dataset_targets(ds: Dataset) -> list[int]:
    """Return the labels of a dataset (its ``targets`` attribute, else by reading every item)."""
    targets = getattr(ds, "targets", None)
    if targets is None and hasattr(ds, "dataset") and hasattr(ds, "indices"):  # torch Subset
        parent = dataset_targets(ds.dataset)
        return [int(parent[i]) for i in ds.indices]
    if targets is None:
        targets = [ds[i][1] for i in range(len(ds))]
    return [int(t) for t in targets]


# ----------------------------------------------------------------------------------------------------------
# Loaders, optimiser and schedule
# ----------------------------------------------------------------------------------------------------------
def sample_weights(targets: Sequence[int], balanced: bool | float = True) -> torch.Tensor:
    """Return one sampling weight per item, ``n_class ** -power`` (power 1 for True, 0 for False)."""
    power = float(balanced) if not isinstance(balanced, bool) else (1.0 if balanced else 0.0)
    counts = Counter(int(t) for t in targets)
    return torch.tensor([counts[int(t)] ** -power for t in targets], dtype=torch.double)


def make_loaders(train_ds: Dataset, val_ds: Dataset | None = None, test_ds: Dataset | None = None, *,
                 batch_size: int = 64, balanced: bool | float = True, num_workers: int = 0,
                 seed: int = config.SEED, eval_batch_size: int | None = None,
                 ) -> tuple[DataLoader, DataLoader | None, DataLoader | None]:
    """Return ``(train_loader, val_loader, test_loader)``; a missing dataset gives None.

    The training loader draws ``len(train_ds)`` items per epoch: with ``balanced`` (True or a power in
    0..1) by class-balanced sampling with replacement (see the module text), else a plain shuffle. It drops
    the last incomplete batch (batch norm dislikes a batch of one). Validation and test loaders keep the
    dataset order. ``num_workers=0`` is deterministic and, with :class:`CachedDataset`, usually the
    fastest on two cores; ``fit`` reseeds the loader's generators every epoch.
    """
    gen = torch.Generator().manual_seed(seed)
    if balanced:
        sampler = WeightedRandomSampler(sample_weights(dataset_targets(train_ds), balanced),
                                        num_samples=len(train_ds), replacement=True, generator=gen)
        train = DataLoader(train_ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                           drop_last=len(train_ds) > batch_size, generator=torch.Generator().manual_seed(seed))
    else:
        train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                           drop_last=len(train_ds) > batch_size, generator=gen)
    eval_bs = eval_batch_size or 2 * batch_size

    def plain(ds):
        return None if ds is None else DataLoader(ds, batch_size=eval_bs, shuffle=False, num_workers=num_workers)

    return train, plain(val_ds), plain(test_ds)


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Return two parameter groups of the trainable parameters: weights with ``weight_decay``, and
    biases/batch-norm parameters (1-d tensors) without it. ``lr`` is set on both when given."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


def make_optimizer(params: nn.Module | Iterable, kind: str = "sgd", lr: float = 0.1,
                   weight_decay: float = 5e-4, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Return an optimiser: ``"sgd"`` (Nesterov momentum) or ``"adamw"``.

    ``params`` is a model (its trainable parameters, no weight decay on biases and batch norms), or an
    iterable of parameters or of parameter-group dicts (e.g. ``[{"params": head, "lr": 1e-2},
    {"params": backbone, "lr": 1e-4}]``: per-group learning rates for fine-tuning).
    """
    if isinstance(params, nn.Module):
        params = param_groups(params, weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; use 'sgd' or 'adamw'")


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str | None = "onecycle", *, epochs: int,
                   steps_per_epoch: int, pct_start: float = 0.25, warmup_epochs: float = 1.0):
    """Return a learning-rate schedule stepped once per batch (``fit`` knows this), or None for ``kind=None``.

    * ``"onecycle"``: OneCycleLR (Smith 2018), rising to each group's ``lr`` during the first ``pct_start``
      of training and annealing to almost 0 (works with per-group learning rates).
    * ``"cosine"``: linear warm-up for ``warmup_epochs``, then cosine decay of each group's ``lr`` to 0.
    """
    total = max(1, epochs * steps_per_epoch)
    if kind is None or kind == "none":
        return None
    if kind == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
            pct_start=pct_start, div_factor=25.0, final_div_factor=1e3)
    elif kind == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupCosine(int(round(warmup_epochs * steps_per_epoch)), total))
    else:
        raise ValueError(f"unknown schedule {kind!r}; use 'onecycle', 'cosine' or None")
    sched.nnprak_step = "batch"
    return sched


class WarmupCosine:
    """The rate factor of :func:`make_scheduler`'s ``"cosine"`` schedule at a step: a linear warm-up over ``warm``
    steps, then a cosine decay to 0 at step ``total`` (an object, so that a checkpoint keeps a shortened ``total``)."""

    def __init__(self, warm: int, total: int):
        self.warm, self.total = int(warm), int(total)

    def __call__(self, step: int) -> float:
        if step < self.warm:
            return (step + 1) / self.warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - self.warm) / max(1, self.total - self.warm))))


def shorten_schedule(scheduler, total_steps: int) -> bool:
    """Return whether a per-batch schedule could be compressed, in place, to end after ``total_steps`` steps.

    Works for OneCycleLR (its phases keep their shares of the run) and :func:`make_scheduler`'s cosine schedule (the
    warm-up keeps its length); other schedulers are left alone (False). :func:`fit` uses it for its time budget.
    """
    total_steps = max(1, int(total_steps))
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        old = scheduler.total_steps
        scheduler.total_steps = total_steps
        for phase in scheduler._schedule_phases:
            phase["end_step"] = (phase["end_step"] + 1) * total_steps / old - 1
        return True
    lambdas = getattr(scheduler, "lr_lambdas", None) or []
    if lambdas and all(isinstance(f, WarmupCosine) for f in lambdas):
        for f in lambdas:
            f.total = total_steps
        return True
    return False


def replan_epochs(epochs: int, planned: int, done: int, seconds: Sequence[float], budget_s: float) -> int:
    """Return the length, in epochs, that a schedule the time budget may compress should have after ``done`` epochs.

    The epochs still to come are counted at the median pace of the epochs so far (``seconds``, resumed ones
    included), so one epoch slowed by other work on the machine does not cut the run short for good: the length
    shrinks when the rest would overrun ``budget_s`` (to at least ``done + 1`` and 2 epochs) and grows back, up to
    ``planned``, when a tenth of ``planned`` more epochs fit, but only in the first third of the schedule (its
    warm-up: later, a longer schedule would raise an annealed rate again).
    """
    pace = max(float(np.median(seconds)), 1e-9) if len(seconds) else 1e-9
    fit = done + int(max(0.0, budget_s - float(sum(seconds))) // pace)
    want = min(int(planned), max(2, done + 1, fit))
    if want < epochs or (3 * done <= epochs and want >= epochs + max(1, math.ceil(planned / 10))):
        return want
    return epochs


def _scheduler_step(scheduler, how: str) -> str | None:
    if scheduler is None:
        return None
    if how != "auto":
        if how not in ("batch", "epoch"):
            raise ValueError(f"scheduler_step must be 'auto', 'batch' or 'epoch', got {how!r}")
        return how
    if getattr(scheduler, "nnprak_step", None):
        return scheduler.nnprak_step
    lrs = torch.optim.lr_scheduler
    return "batch" if isinstance(scheduler, (lrs.OneCycleLR, lrs.CyclicLR)) else "epoch"


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------
def cpu_state(model: nn.Module) -> dict:
    """Return a copy of ``model``'s weights on the CPU (``state_dict`` tensors copied), for ``load_state_dict``."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write a checkpoint dict with ``torch.save`` atomically (a crash never leaves half a file); return its path."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, which: str = "best",
                    map_location: str | torch.device = "cpu") -> dict:
    """Return a checkpoint written by :func:`fit`; with ``model``, load its ``"best"`` or ``"last"`` weights.

    The checkpoint holds ``model`` (last epoch), ``best_model`` (None when the last epoch is the best),
    ``optimizer``, ``scheduler``, ``epoch`` (completed epochs), ``history`` (list of dicts),
    ``best_epoch``, ``best_val_acc``, ``bad_epochs``, ``seed`` and ``extra`` (what the caller stored).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: train the model first (fit(..., checkpoint_path=...)).")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by nnprak.train.fit")
    if model is not None:
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', got {which!r}")
        state = ckpt["best_model"] if which == "best" and ckpt["best_model"] is not None else ckpt["model"]
        model.load_state_dict(state)
    return ckpt


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------
def default_device() -> torch.device:
    """Return the active profile's device (:func:`nnprak.config.resolve_device`: ``auto`` = CUDA when available)."""
    return config.resolve_device()


def seed_epoch(seed: int, epoch: int, loader: DataLoader | None = None) -> int:
    """Reseed Python, NumPy, PyTorch and ``loader``'s generators for one epoch; return the seed used."""
    s = int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    if loader is not None:
        gens = [getattr(loader, "generator", None), getattr(loader.sampler, "generator", None)]
        batch_sampler = getattr(loader, "batch_sampler", None)
        if batch_sampler is not None:
            gens.append(getattr(getattr(batch_sampler, "sampler", None), "generator", None))
        for k, g in enumerate(gens):
            if isinstance(g, torch.Generator):
                g.manual_seed(s + k + 1)
    return s


def _to(x, device, channels_last: bool):
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


@torch.no_grad()
def _evaluate(model: nn.Module, loader: DataLoader, loss_fn: Callable, device, channels_last: bool,
              classes: int | None = None):
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = _to(x, device, channels_last), y.to(device)
        logits = model(x)
        if classes is not None:   # only the first ``classes`` outputs compete (e.g. without the background people)
            logits = logits[:, :classes]
        total_loss += float(loss_fn(logits, y)) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return total_loss / max(n, 1), correct / max(n, 1)


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None = None, *, epochs: int,
        optimizer: torch.optim.Optimizer, scheduler=None, scheduler_step: str = "auto",
        loss_fn: Callable | None = None, label_smoothing: float = 0.1, patience: int | None = None,
        checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
        max_minutes: float | None = None, progress: bool = True, seed: int = config.SEED,
        device: str | torch.device | None = None, channels_last: bool = False,
        grad_clip: float | None = None, extra: dict | None = None, mixup: float = 0.0,
        on_epoch: Callable[[dict], None] | None = None, val_classes: int | None = None,
        keep: str = "best") -> pd.DataFrame:
    """Train ``model`` and return its history; the model ends with the weights of its best (or last) epoch.

    Args:
        model: any classifier returning logits.
        train_loader, val_loader: data; without ``val_loader`` every epoch counts as best and
            early stopping is off.
        epochs: total number of epochs (counted from the first epoch, also when resuming).
        optimizer: built by the caller (any parameter groups, e.g. per-group learning rates).
        scheduler: optional LR scheduler; ``scheduler_step`` says when it steps: ``"batch"``,
            ``"epoch"`` or ``"auto"`` (per batch for :func:`make_scheduler`'s schedules, OneCycleLR and
            CyclicLR; per epoch otherwise; ReduceLROnPlateau gets the validation loss).
        loss_fn: the loss (default: cross-entropy with ``label_smoothing``); also used for ``val_loss``.
        patience: stop when validation accuracy has not improved for this many epochs (None: never).
        checkpoint_path: where to write the checkpoint after every epoch (atomically); None: no file.
        resume: continue from ``checkpoint_path`` when it exists (model, optimiser, scheduler, epoch,
            history and early-stopping state are restored). A finished or early-stopped run then returns
            at once with its history. ``resume=False`` starts afresh and overwrites the file.
        max_minutes: time budget for the whole training (epochs of earlier, resumed runs included). A per-batch
            schedule that :func:`shorten_schedule` can compress is re-planned after every epoch
            (:func:`replan_epochs`): when the epochs still to come would not fit at the median pace so far, it is
            shortened to the epochs that fit (at least 2), so it still ends at its lowest rate, and it grows back
            (up to ``epochs``) when later epochs show that more fit, e.g. after a first epoch slowed by other work
            (``history.attrs["planned_epochs"]`` keeps the number asked for, ``"schedule_epochs"`` the length
            after each epoch of this call); otherwise training stops after the epoch that passes the budget (with
            the rate where the schedule then is). A checkpoint keeps a shorter schedule for ``resume``.
        progress: show a tqdm bar (the terminal of ``nnprak run`` gets the status either way).
        seed: reseeds every epoch (see the module text) for reproducible runs.
        device: default: the profile's ``device`` setting (:func:`default_device`; ``auto``: CUDA when available).
        channels_last: use the NHWC memory layout (faster for some CNNs on some CPUs).
        grad_clip: clip the gradient norm to this value (None: no clipping).
        extra: stored in the checkpoint under ``"extra"`` (e.g. classes and model settings).
        mixup: the alpha of mixup (Zhang et al. 2018): each training batch is blended with a shuffled copy of
            itself by a weight drawn from Beta(alpha, alpha), and the loss by the same weight; 0: off.
        on_epoch: called with each new history row (a dict) after its checkpoint is written, e.g. to print
            or plot progress.
        keep: which weights the model ends with: ``"best"`` (the epoch of the highest validation accuracy, with
            early stopping after ``patience``) or ``"last"`` (the last epoch's; validation is only recorded, no
            early stopping: for a schedule that ends at a near-zero rate, and validation sets too small to choose
            an epoch by).
        val_classes: validate on the first ``val_classes`` outputs only (the validation set's people when the
            network also learns others, e.g. :mod:`nnprak.background`'s people); None: all outputs.

    Returns:
        History DataFrame with one row per epoch: ``epoch`` (1-based), ``train_loss``, ``train_acc``
        (on the augmented training batches), ``val_loss``, ``val_acc``, ``lr`` (the first parameter
        group's rate in the epoch's last batch; groups with other rates add ``lr_g1``, ``lr_g2`` ...) and
        ``seconds``.
        ``history.attrs`` holds ``best_epoch``, ``best_val_acc``, ``planned_epochs``, ``schedule_epochs`` and
        ``stopped`` (why training ended: ``"epochs"``, ``"early_stopping"`` or ``"time_budget"``, also for a
        schedule the budget shortened).
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    step_how = _scheduler_step(scheduler, scheduler_step)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    history: list[dict] = []
    start_epoch, bad_epochs, planned_epochs = 0, 0, int(epochs)
    best = dict(epoch=0, acc=-math.inf, loss=math.inf, state=None)
    ckpt_path = Path(checkpoint_path) if checkpoint_path is not None else None
    fingerprint = data_fingerprint(train_loader.dataset) if ckpt_path is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        if ckpt.get("data") not in (None, fingerprint):   # checkpoints before the fingerprint carry none
            raise ValueError(f"{ckpt_path} was trained on other training data than this run's (the photos, the split "
                             "or the crops changed since, e.g. notebook 01 or 02 ran again): resuming would mix the "
                             "two, and photos it trained on may now be test photos. Start afresh with resume=False "
                             "(RESUME = False in notebook 03), which overwrites the file, or move the file away first "
                             "to keep it.")
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as err:   # e.g. a checkpoint of an older version's network: say what to do
            raise ValueError(f"{ckpt_path} holds the weights of another network (other settings or an older version "
                             "of nnprak), so training cannot resume from it: start afresh with resume=False "
                             "(RESUME = False in notebook 03), which overwrites the file, or move the file away first "
                             f"to keep it. PyTorch says: {str(err).splitlines()[0]}") from err
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, bad_epochs = int(ckpt["epoch"]), int(ckpt["bad_epochs"])
        epochs = min(epochs, int(ckpt.get("shortened_to") or epochs))   # a schedule the time budget shortened
        history = [dict(row) for row in ckpt["history"]]
        best.update(epoch=int(ckpt["best_epoch"]), acc=float(ckpt["best_val_acc"]),
                    loss=float(ckpt["best_val_loss"]))
        best["state"] = (ckpt["best_model"] if ckpt["best_model"] is not None
                         else {k: v.to("cpu", copy=True) for k, v in ckpt["model"].items()})

    spent = sum(row["seconds"] for row in history)
    stopped, schedule_epochs = "epochs", []
    bar = ProgressBar(total=epochs, initial=min(start_epoch, epochs), desc="training", unit="epochs",
                      progress=progress, dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, planned_epochs):
            if epoch >= epochs:   # the end of a schedule the time budget shortened
                break
            if patience is not None and val_loader is not None and bad_epochs >= patience:
                stopped = "early_stopping"
                break
            if max_minutes is not None and spent > max_minutes * 60 and epochs == planned_epochs:   # not shortened
                stopped = "time_budget"
                break
            seed_epoch(seed, epoch, train_loader)
            t0 = time.perf_counter()
            model.train()
            total_loss, correct, n, shown = 0.0, 0, 0, t0
            for b, (x, y) in enumerate(train_loader, start=1):
                x, y = _to(x, device, channels_last), y.to(device)
                if mixup:   # mix each image with another of the batch; the loss mixes their labels alike
                    lam = float(torch.distributions.Beta(mixup, mixup).sample())
                    perm = torch.randperm(len(y), device=device)
                    logits = model(lam * x + (1 - lam) * x[perm])
                    loss = lam * loss_fn(logits, y) + (1 - lam) * loss_fn(logits, y[perm])
                else:
                    logits = model(x)
                    loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                used_lrs = [float(group["lr"]) for group in optimizer.param_groups]
                if step_how == "batch":
                    scheduler.step()
                total_loss += float(loss.detach()) * len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                n += len(y)
                if time.perf_counter() - shown > 0.5:
                    shown = time.perf_counter()
                    bar.set_postfix_str(f"epoch {epoch + 1} batch {b}/{len(train_loader)}: loss {total_loss / n:.3f} "
                                        f"acc {correct / n:.3f}")
            if n == 0:
                raise ValueError("the training loader gave no batches (dataset smaller than one batch?)")
            row = dict(epoch=epoch + 1, train_loss=total_loss / n, train_acc=correct / n)
            if val_loader is not None:
                row["val_loss"], row["val_acc"] = _evaluate(model, val_loader, loss_fn, device, channels_last,
                                                            val_classes)
            else:
                row["val_loss"], row["val_acc"] = float("nan"), float("nan")
            row["lr"] = used_lrs[0]
            for g, lr in enumerate(used_lrs[1:], start=1):
                if not math.isclose(lr, used_lrs[0], rel_tol=1e-9):  # only groups with a rate of their own
                    row[f"lr_g{g}"] = lr
            if step_how == "epoch":
                scheduler.step(row["val_loss"]) if plateau else scheduler.step()
            row["seconds"] = time.perf_counter() - t0
            spent += row["seconds"]
            history.append(row)
            if max_minutes is not None and step_how == "batch" and planned_epochs > 2:   # re-planned every epoch
                fit_epochs = replan_epochs(epochs, planned_epochs, epoch + 1, [r["seconds"] for r in history],
                                           max_minutes * 60)
                if fit_epochs != epochs and shorten_schedule(scheduler, fit_epochs * len(train_loader)):
                    epochs = fit_epochs
                    bar.set_total(epochs)
            schedule_epochs.append(epochs)

            improved = val_loader is None or keep == "last" or row["val_acc"] > best["acc"] or (
                row["val_acc"] == best["acc"] and row["val_loss"] < best["loss"])
            if improved:
                best.update(epoch=epoch + 1, acc=row["val_acc"], loss=row["val_loss"], state=cpu_state(model))
                bad_epochs = 0
            else:
                bad_epochs += 1
            if ckpt_path is not None:
                save_checkpoint(ckpt_path, {
                    "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "model": model.state_dict(),
                    "best_model": None if best["epoch"] == epoch + 1 else best["state"],
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "history": history, "best_epoch": best["epoch"], "best_val_acc": best["acc"],
                    "best_val_loss": best["loss"], "bad_epochs": bad_epochs, "seed": seed,
                    "shortened_to": epochs if epochs < planned_epochs else None,
                    "data": fingerprint, "extra": extra or {}})
            if on_epoch is not None:
                on_epoch(dict(row))
            bar.set_postfix_str(f"loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} | val acc "
                                f"{row['val_acc']:.3f} (best {best['acc']:.3f} @ {best['epoch']})")
            bar.update(1)
    finally:
        bar.close()

    if stopped == "epochs" and epochs < planned_epochs:   # all epochs of a schedule the time budget shortened
        stopped = "time_budget"
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    hist = pd.DataFrame(history)
    for col in HISTORY_COLUMNS:
        if col not in hist.columns:
            hist[col] = pd.Series(dtype=float)
    hist = hist[HISTORY_COLUMNS + [c for c in hist.columns if c not in HISTORY_COLUMNS]]
    hist.attrs.update(best_epoch=best["epoch"], best_val_acc=best["acc"], stopped=stopped, planned_epochs=planned_epochs,
                      schedule_epochs=schedule_epochs)
    return hist


class MarginCrossEntropy(nn.Module):
    """Cross-entropy after subtracting ``margin`` from each sample's true-class logit (CosFace, Wang et al. 2018).

    With a cosine head (logits ``scale * cos``) the true class must beat the others by ``margin / scale`` in
    cosine, which pulls each person's faces closer together than plain softmax does. ``margin=0`` is
    ``nn.CrossEntropyLoss``.
    """

    def __init__(self, margin: float = 0.0, label_smoothing: float = 0.0):
        super().__init__()
        self.margin, self.label_smoothing = float(margin), float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the mean loss of a batch."""
        if self.margin:
            logits = logits - self.margin * nn.functional.one_hot(target, logits.shape[1]).to(logits.dtype)
        return nn.functional.cross_entropy(logits, target, label_smoothing=self.label_smoothing)


def fit_from_settings(model: nn.Module, loaders: Sequence[DataLoader | None], settings: dict, *,
                      epochs: int | None = None, checkpoint_path: str | os.PathLike | None = None,
                      resume: bool = False, max_minutes: float | None = None, seed: int = config.SEED,
                      progress: bool = True, **fit_kwargs) -> pd.DataFrame:
    """Build optimiser and schedule from a settings dict (``cfg.scratch``), run :func:`fit` and return its history.

    ``settings`` keys used: ``optimizer`` ("adamw" | "sgd"), ``lr``, ``weight_decay``, ``schedule``
    ("onecycle" | "cosine"), ``epochs``, ``label_smoothing``, ``patience`` and, if present,
    ``channels_last`` (default True: faster convolutions on CPUs), ``mixup`` (see :func:`fit`) and ``head_margin``
    (a model with a cosine head is trained with :class:`MarginCrossEntropy`, margin ``head_margin`` in cosine
    units; a linear head ignores it) and ``keep`` (see :func:`fit`). ``loaders`` is ``(train, val[, test])`` as returned by
    :func:`make_loaders`; ``epochs`` overrides ``settings["epochs"]`` (e.g. for a short ablation run). Further
    keyword arguments go to :func:`fit`.
    """
    epochs = int(epochs if epochs is not None else settings["epochs"])
    train_loader, val_loader = loaders[0], loaders[1] if len(loaders) > 1 else None
    optimizer = make_optimizer(model, settings.get("optimizer", "adamw"), lr=settings["lr"],
                               weight_decay=settings["weight_decay"])
    scheduler = make_scheduler(optimizer, settings.get("schedule", "onecycle"), epochs=epochs,
                               steps_per_epoch=len(train_loader))
    fit_kwargs.setdefault("channels_last", settings.get("channels_last", True))
    fit_kwargs.setdefault("mixup", float(settings.get("mixup", 0.0) or 0.0))
    fit_kwargs.setdefault("keep", settings.get("keep", "best"))
    margin = float(settings.get("head_margin") or 0.0)
    if margin and getattr(model, "head", "linear") == "cosine":   # in cosine units: times the head's scale
        smoothing = settings.get("label_smoothing", 0.0)
        fit_kwargs.setdefault("loss_fn", MarginCrossEntropy(margin * model.fc.scale, smoothing))
    return fit(model, train_loader, val_loader, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
               label_smoothing=settings.get("label_smoothing", 0.0), patience=settings.get("patience"),
               checkpoint_path=checkpoint_path, resume=resume, max_minutes=max_minutes, seed=seed,
               progress=progress, **fit_kwargs)


# ----------------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: str | torch.device | None = None,
            channels_last: bool = False, flip_tta: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(y_true, y_pred, probs)`` over a loader in its order; ``probs`` are softmax scores (N, C).

    ``flip_tta=True`` averages the scores of each image and its mirror image (test-time augmentation).
    """
    device = torch.device(device) if device is not None else next(
        (p.device for p in model.parameters()), torch.device("cpu"))
    model.to(device).eval()
    ys, probs = [], []
    for x, y in loader:
        x = _to(x, device, channels_last)
        p = torch.softmax(model(x).float(), 1)
        if flip_tta:
            p = (p + torch.softmax(model(torch.flip(x, dims=[3])).float(), 1)) / 2
        probs.append(p.cpu())
        ys.append(torch.as_tensor(y))
    p = torch.cat(probs).numpy() if probs else np.zeros((0, 0), dtype=np.float32)
    y_true = torch.cat(ys).numpy().astype(np.int64) if ys else np.zeros(0, dtype=np.int64)
    return y_true, p.argmax(1).astype(np.int64) if len(p) else np.zeros(0, dtype=np.int64), p


def evaluate_model(model: nn.Module, loader: DataLoader, device: str | torch.device | None = None,
                   flip_tta: bool = False) -> dict:
    """Return ``accuracy``, ``macro_f1``, ``balanced_accuracy``, ``nll`` (mean negative log-likelihood)
    and ``n`` of a model over a loader (sklearn metrics; the full set lives in ``nnprak.evaluate``)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    y_true, y_pred, probs = predict(model, loader, device, flip_tta=flip_tta)
    nll = float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, None)).mean()) if len(y_true) else 0.0
    return dict(accuracy=float(accuracy_score(y_true, y_pred)),
                macro_f1=float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
                balanced_accuracy=float(balanced_accuracy_score(y_true, y_pred)), nll=nll, n=int(len(y_true)))

