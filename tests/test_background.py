"""nnprak.background on real LFW images: who the background people are, the joined training set, the cut head."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from nnprak import ablation, background, config, data, train
from nnprak.models.scratch import from_settings, keep_classes

SIZE = 32
TINY = dict(image_size=SIZE, widths=(8, 16, 16, 32), blocks=(1, 1, 1, 1), epochs=1, batch_size=16, optimizer="adamw",
            lr=3e-3, weight_decay=0.05, schedule="onecycle", balanced=0.5, label_smoothing=0.1, patience=None,
            max_minutes=None, channels_last=False, head="cosine")


def test_background_people_are_lfw_people_outside_the_set(lfw_dir):
    counts = data.lfw_counts(lfw_dir)
    people = background.background_images(lfw_dir, exclude=["George_W_Bush", "tony blair", "COLIN-POWELL"],
                                          min_images=10, per_person=5)
    assert not {"George_W_Bush", "Tony_Blair", "Colin_Powell"} & set(people)   # case, spaces and hyphens ignored
    assert len(people) == int((counts >= 10).sum()) - 3 and list(people) == sorted(people)
    assert all(counts[p] >= 10 and len(files) == 5 and files == sorted(files) for p, files in people.items())
    assert all(f.exists() and f.parent.name == p for p, files in people.items() for f in files)
    few = background.background_images(lfw_dir, min_images=10, per_person=None, max_people=3)
    assert list(few) == sorted(counts[counts >= 10].index)[:3]
    assert [len(f) for f in few.values()] == [int(counts[p]) for p in few]


def test_background_crops_follow_the_profile(tmp_path):
    paths = config.Paths.under(tmp_path).make()
    try:
        cfg = config.load("smoke", paths=paths)
        s = cfg.scratch
        table = background.background_crops(cfg, exclude=["Abdullah_Gul"], progress=False)
        assert table["person"].nunique() == s["background_people"] and "Abdullah_Gul" not in set(table["person"])
        assert table.groupby("person").size().max() <= s["background_per_person"]
        assert (table["face_status"] == "ok").sum() >= len(table) - 2 and (table["split"] == "train").all()
        assert (paths.processed / background.BACKGROUND_CROPS).exists()
        assert background.load_background(cfg)["path"].tolist() == table["path"].tolist()
        off = dataclasses.replace(cfg, scratch=dict(cfg.scratch, background=False))
        assert background.background_crops(off, exclude=[]) is None and background.load_background(off) is None
    finally:
        config.load()


@pytest.fixture(scope="module")
def lfw_set():
    """32 px stand-in crops of 3 LFW people (the set) and a manifest of 2 more (the background people)."""
    torch.set_num_threads(2)
    manifest = data.build_manifest(config.load("smoke"), progress=False)
    config.load()
    people = sorted(manifest["person"].unique())
    own = manifest[manifest["person"].isin(people[:3])]
    other = manifest[manifest["person"].isin(people[3:])].assign(face_status="ok")
    return train.cached_splits(own, SIZE, crop=train.LFW_STAND_IN_CROP), other


def test_with_background_joins_only_the_training_set(lfw_set):
    cached, other = lfw_set
    joined = background.with_background(cached, other, "path")
    tr, base = joined["train"], cached["train"]
    assert tr.classes == base.classes + sorted(other["person"].unique()) and background.main_classes(joined) == 3
    assert background.background_count(joined) == (2, len(other))
    assert len(background.usable_background(other, "path", base.classes)) == len(other)   # what the rules count
    assert background.usable_background(other, "path", [other["person"].iloc[0]])["person"].nunique() == 1
    assert tr.targets[:len(base)] == base.targets and min(tr.targets[len(base):]) == 3
    assert torch.equal(tr.images[:len(base)], base.images) and len(tr.images) == len(tr.targets) == len(tr.frame)
    assert joined["val"] is cached["val"] and joined["test"] is cached["test"]   # evaluated on the set's people only
    assert background.trained_people(joined) == tr.classes
    assert background.with_background(cached, None, "path") is cached
    assert background.with_background(cached, other.assign(person=base.classes[0]), "path") is cached  # no one new
    assert not background.is_grey(tr.images[len(base):])                       # colour set: colour background

    grey = {k: v.with_transform(None) for k, v in cached.items()}
    grey["train"].images = background.to_grey(grey["train"].images)
    assert background.is_grey(grey["train"].images)
    assert background.is_grey(background.with_background(grey, other, "path")["train"].images[len(base):])


def test_trained_with_background_predicts_the_set_only(lfw_set):
    cached, other = lfw_set
    joined = background.with_background(cached, other, "path")
    run = ablation.train_variant(joined, TINY, seed=0, progress=False)
    assert run["model"].fc.out_features == 3 and run["probs"].shape == (len(cached["test"]), 3)
    assert set(run["y_pred"]) <= {0, 1, 2} and np.allclose(run["probs"].sum(1), 1, atol=1e-5)
    assert run["row"]["steps"] == len(joined["train"]) // TINY["batch_size"]   # the background was trained on


@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_keep_classes_keeps_the_first_logits(head):
    torch.manual_seed(0)
    model = from_settings(7, dict(TINY, head=head)).eval()
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        before, feats = model(x), model.features(x)
        keep_classes(model, 4)
        after = model(x)
    assert after.shape == (4, 4) and torch.allclose(after, before[:, :4], atol=1e-6)
    assert torch.equal(model.features(x), feats) and model.num_classes == 4
    assert keep_classes(model, 9).fc.out_features == 4                          # never grows


def test_rule_with_background_people():
    base = config.load("default").scratch
    alone = config.scratch_for_data(base, 280, 40)
    with_bg = config.scratch_for_data(base, 280, 40, 2000)
    assert alone["small_data"] and with_bg["small_data"] and with_bg["background_images"] == 2000
    assert with_bg["blocks"] == alone["blocks"] == (config.SMALL_DATA_BLOCKS,) * 4
    assert "augment" not in with_bg and with_bg["head"] == base["head"] and with_bg["balanced"] == base["balanced"]
    assert with_bg["batch_size"] == base["batch_size"] and with_bg["steps_per_epoch"] == 2280 // base["batch_size"]
    assert with_bg["steps"] < alone["steps"] and with_bg["epochs"] == base["epochs"]
    lfw = config.scratch_for_data(base, 2121, 62, 1301)
    per_epoch = 3422 // 64   # the step cap leaves LFW-62 with its background people 24 of the 30 epochs
    assert not lfw["small_data"] and lfw["blocks"] == base["blocks"]
    assert lfw["steps"] == (config.MAX_STEPS // per_epoch) * per_epoch < 30 * per_epoch
    # input size: larger for a small set that learns beside background people, else the settings'
    assert with_bg["image_size"] == base["small_data_image_size"] > base["image_size"]
    assert alone["image_size"] == lfw["image_size"] == base["image_size"]
    # the epoch: the last for small sets (1-3 validation photos a person), the settings' choice otherwise
    assert with_bg["keep"] == alone["keep"] == "last" and lfw["keep"] == base["keep"] == "best"
    assert config.scratch_for_data(dict(base, image_size=160), 280, 40, 2000)["image_size"] == 160   # never smaller


def test_scratch_data_decodes_at_the_fitted_size(lfw_set):
    """A small set with background people is decoded at the rule's larger size; the same set alone is not."""
    cached, other = lfw_set
    table = pd.concat([cached[s].frame for s in ("train", "val", "test")]).assign(face_status="ok")
    table = table[(table["split"] != "train") | (table.groupby(["person", "split"]).cumcount() < 5)]   # 5 a person
    classes = cached["train"].classes
    settings = dict(TINY, small_data_image_size=SIZE + 8, background=True)
    base, joined, fitted = ablation.scratch_data(table, settings, classes, "path", other)
    n_own = int((table["split"] == "train").sum())
    assert fitted["small_data"] and fitted["image_size"] == SIZE + 8 and fitted["background_images"] == len(other)
    assert base["train"].images.shape[-1] == joined["train"].images.shape[-1] == SIZE + 8
    assert len(base["train"]) == n_own and background.main_classes(joined) == len(classes)
    alone, same, fitted_alone = ablation.scratch_data(table, settings, classes, "path", None)
    assert same is alone and fitted_alone["image_size"] == SIZE and alone["train"].images.shape[-1] == SIZE
