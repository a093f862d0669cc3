"""Tests of the ``device`` setting: one function resolves it; MTCNN, the embedders and training sit where it says."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnprak import config, embed, faces, results, train

HERE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
"""What ``auto`` means on the machine running the tests."""


def _device_of(module: nn.Module) -> set[torch.device]:
    return {p.device for p in module.parameters()}


def test_resolve_device_auto_explicit_and_invalid():
    assert config.resolve_device("auto") == HERE
    assert config.resolve_device("cpu") == torch.device("cpu")
    assert config.resolve_device(" CPU ") == torch.device("cpu")
    assert config.load("smoke").device == "auto" and config.resolve_device() == HERE   # None: the active profile's
    assert config.load("smoke").torch_device == HERE
    with pytest.raises(ValueError, match=r"invalid device setting 'gpu': use one of auto, cpu, cuda, cuda:<n>"):
        config.resolve_device("gpu")
    with pytest.raises(ValueError, match="device setting"):
        config.resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            config.resolve_device("cuda")


def test_device_environment_override(monkeypatch):
    monkeypatch.setenv(config.DEVICE_ENV, "cpu")
    assert config.load("smoke").device == "cpu" and config.resolve_device() == torch.device("cpu")
    assert config.load("smoke", device="auto").device == "auto"        # an explicit override wins
    monkeypatch.setenv(config.DEVICE_ENV, "tpu")
    with pytest.raises(ValueError, match=r"invalid NNPRAK_DEVICE setting 'tpu'"):
        config.load("smoke")
    monkeypatch.delenv(config.DEVICE_ENV)
    config.load("smoke")


def test_mtcnn_and_embedders_sit_on_the_device():
    config.load("smoke")
    for setting in ("cpu", "auto", None):
        want = config.resolve_device(setting)
        mtcnn = faces.make_detector(device=setting)
        assert mtcnn.device == want and _device_of(mtcnn) == {want}
        dlib = embed.get_embedder("dlib", device=setting)
        assert dlib.device == want and dlib.describe()["device"] == str(want)
        assert _device_of(dlib.embedder.model) == {want} and _device_of(dlib.embedder._fast) == {want}
    chips = torch.zeros((2, 150, 150, 3), dtype=torch.uint8).numpy()
    assert dlib.embedder.embed_chips(chips).shape == (2, 128)          # inputs follow the model's device


def test_training_uses_the_profile_device_and_results_record_it(tmp_path):
    config.load("smoke")
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=8)
    model = nn.Linear(4, 2)
    train.fit(model, loader, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
              progress=False)
    assert _device_of(model) == {HERE}
    path = results.save_result("device_probe", title="probe", metrics={"accuracy": 1.0}, weights="none",
                               folder=tmp_path)
    assert json.loads(path.read_text())["device"] == str(HERE)
