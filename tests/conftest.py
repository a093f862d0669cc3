"""Shared fixtures: the real LFW folder and small samples of it."""
from __future__ import annotations

import pytest

from nnprak import config, data


@pytest.fixture(scope="session")
def lfw_dir():
    """The LFW folder (../shared/datasets/lfw on this team's machines and in CI)."""
    return config.find_lfw(download=False)


@pytest.fixture(scope="session")
def lfw_images(lfw_dir):
    """A dict person -> sorted image paths for a few LFW people with >= 20 images."""
    img_dir = data.lfw_image_dir(lfw_dir)
    return {p: sorted((img_dir / p).glob("*.jpg")) for p in data.lfw_people(lfw_dir, 20, 5)}
