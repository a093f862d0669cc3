"""Transfer model: new head, frozen stage 1, cached features, unfreezing and per-group learning rates."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnprak import config
from nnprak import weights as W
from nnprak.models import transfer as T

SIZE = 64


def _lfw_batch(people: int, per_person: int, offset: int = 0):
    """Return (images (N,3,64,64) ImageNet-normalised, labels (N,)) from real LFW people with enough images."""
    root = config.find_lfw(download=False) / config.LFW_IMAGES_SUBDIR
    chosen = []
    for d in sorted(root.iterdir()):
        files = sorted(d.glob("*.jpg"))
        if len(files) >= offset + per_person:
            chosen.append(files[offset:offset + per_person])
        if len(chosen) == people:
            break
    mean = torch.tensor(W.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(W.IMAGENET_STD).view(3, 1, 1)
    xs, ys = [], []
    for label, files in enumerate(chosen):
        for f in files:
            img = Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
            x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
            xs.append((x - mean) / std)
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


@pytest.fixture(autouse=True)
def _offline_one_thread(tmp_path, monkeypatch):
    """Offline, an empty TORCH_HOME, and one torch thread: on a busy 2-core CI box two OpenMP threads that
    spin-wait for each other made these tiny forward passes ~20x slower."""
    monkeypatch.setenv("NNPRAK_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("NNPRAK_WEIGHTS_DIR", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def test_new_head_has_num_classes_and_random_init_is_labelled_honestly():
    model, record = T.build_resnet50(7, weights=None)
    assert isinstance(model.head[-1], nn.Linear) and model.head[-1].out_features == 7
    assert model.head[-1].in_features == 2048 and isinstance(model.backbone.fc, nn.Identity)
    model.eval()
    assert model(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 7)
    assert record.weights == "random-init" and record.pretrained is False
    assert "pretrained" not in record.weights

    with pytest.raises(W.WeightsUnavailable):  # ImageNet weights asked for, none on disk, offline
        T.build_resnet50(7, weights="imagenet")
    _, fallback = T.build_resnet50(7, weights="imagenet", fallback_to_random=True)
    assert fallback.weights == "random-init" and not fallback.pretrained
    assert "unavailable" in fallback.note and "resnet50.imagenet1k_v2" in fallback.note


def test_pretrained_file_is_loaded_and_recorded(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    file = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), file)
    model, record = T.build_resnet18(4, weights="imagenet", weights_path=file)
    assert record.weights == "imagenet1k_v1" and record.pretrained and record.source == str(file)
    assert record.input_size == 224 and record.resize_size == 256 and record.mean == W.IMAGENET_MEAN
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert model.head[-1].out_features == 4


def test_frozen_backbone_does_not_change_in_stage_1_then_layer4_trains_in_stage_2():
    x, y = _lfw_batch(people=3, per_person=2)
    model, _ = T.build_resnet50(3, weights=None)  # freeze=True by default
    assert all(not p.requires_grad for p in model.backbone.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)  # all params: frozen ones must be skipped
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()

    after = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in before.items():  # parameters AND batch-norm running statistics
        if k.startswith("backbone."):
            assert torch.equal(v, after[k]), k
    assert not torch.equal(before["head.0.weight"], after["head.0.weight"])

    # stage 2: layer4 trainable, lower learning rate than the head
    names = T.unfreeze(model, ("layer4",))
    assert names and all(n.startswith("layer4.") for n in names)
    groups = T.param_groups(model, base_lr=1e-3, head_lr=1e-2, weight_decay=1e-4)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["backbone.layer4"] == 1e-3 < lrs["head"] == 1e-2
    assert not any(n.startswith("backbone.layer3") for n in lrs)
    model.train()
    assert model.backbone.layer4[0].bn1.training and not model.backbone.bn1.training
    opt = torch.optim.SGD(groups, lr=0.0, momentum=0.0)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after2 = model.state_dict()
    assert not torch.equal(after["backbone.layer4.0.conv1.weight"], after2["backbone.layer4.0.conv1.weight"])
    assert torch.equal(after["backbone.layer3.0.conv1.weight"], after2["backbone.layer3.0.conv1.weight"])
    assert torch.equal(after["backbone.bn1.running_mean"], after2["backbone.bn1.running_mean"])

    T.unfreeze(model, ("layer3",))
    lrs = {g["name"]: g["lr"] for g in T.param_groups(model, 1e-3, 1e-2, layer_decay=0.5)}
    assert lrs["backbone.layer3"] == 5e-4 < lrs["backbone.layer4"] < lrs["head"]


class TinyFaceNet(nn.Module):
    """Stands in for another backbone (e.g. dlib's face ResNet port): images → 128-D descriptors."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU())
        self.top = nn.Sequential(nn.Conv2d(16, 128, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.top(self.stem(x))


def test_any_backbone_plugs_in():
    model = T.TransferModel(TinyFaceNet(), feature_dim=128, num_classes=5)
    T.freeze_backbone(model)
    assert T.trainable_parameters(model) == 128 * 5 + 5
    assert model(torch.randn(3, 3, SIZE, SIZE)).shape == (3, 5)
    T.unfreeze(model, ["top"])
    names = {g["name"] for g in T.param_groups(model, 1e-4, 1e-3)}
    assert names == {"backbone.top", "backbone.top.no_decay", "head", "head.no_decay"}


def test_cached_features_then_head_training_lowers_the_loss(tmp_path):
    x, y = _lfw_batch(people=4, per_person=6)
    xv, yv = _lfw_batch(people=4, per_person=2, offset=6)
    model, record = T.build_resnet18(4, weights=None)  # any backbone: the smaller one keeps the test fast
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    key = T.feature_cache_key(weights=record.as_dict(), images=len(x), size=SIZE, split="train")
    cache = tmp_path / "features" / "train.npz"

    f, l = T.cached_features(model.backbone, loader, cache, key)
    assert cache.is_file() and f.shape == (24, 512) and f.dtype == np.float32 and list(l) == y.tolist()
    # a different backbone with the same key: the cached features come back, nothing is recomputed
    other = TinyFaceNet()
    f2, _ = T.cached_features(other, loader, cache, key)
    assert np.array_equal(f, f2)
    # another key (other weights/data): recomputed with the new backbone and the cache replaced
    f3, _ = T.cached_features(other, loader, cache, key + "x")
    assert f3.shape == (24, 128)

    fv, lv = T.extract_features(model.backbone, DataLoader(TensorDataset(xv, yv), batch_size=8))
    head, hist = T.train_head(f, l, fv, lv, num_classes=4, epochs=25, lr=1e-2, batch_size=8)
    assert list(hist.columns[:7]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    assert len(hist) == 25 and hist["best"].sum() == 1
    assert hist["train_loss"].iloc[-1] < 0.5 * hist["train_loss"].iloc[0]
    assert hist["train_loss"].iloc[-1] < math.log(4)
    model.head = head  # the trained head drops into the full model
    model.eval()
    with torch.no_grad():
        assert model(xv).shape == (8, 4)


def test_fine_tuning_is_kept_only_when_it_beats_stage_1_on_validation():
    import pandas as pd

    from nnprak import train

    model = T.TransferModel(torch.nn.Flatten(), 4, 3)
    stage1 = train.cpu_state(model)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(1.0)                                              # what fine-tuning changed
    tuned = train.cpu_state(model)
    history = pd.DataFrame({"epoch": [1, 2], "val_acc": [0.90, 0.95]})
    history.attrs["best_val_acc"] = 0.95
    kept, why = T.keep_better_stage(model, stage1, 0.93, history)
    assert kept == 2 and "raised the validation accuracy from 93.00% to 95.00%" in why
    assert all(torch.equal(model.state_dict()[k], tuned[k]) for k in tuned)          # the fine-tuned weights stay
    kept, why = T.keep_better_stage(model, stage1, 0.95, history)             # a tie: back to stage 1
    assert kept == 1 and "not above stage 1's 95.00%" in why
    assert all(torch.equal(model.state_dict()[k], stage1[k]) for k in stage1)
    assert any(not torch.equal(stage1[k], tuned[k]) for k in stage1)                 # the copy was a copy
    no_val = pd.DataFrame({"epoch": [1], "val_acc": [float("nan")]})               # no validation faces at all
    kept, why = T.keep_better_stage(model, stage1, float("nan"), no_val)
    assert kept == 1 and "without validation faces" in why and "nan" not in why
