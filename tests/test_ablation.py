"""Notebook 03's experiments on real LFW images: the data-size rule, the eigenfaces baseline, the ablation and seeds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnprak import ablation, baseline, config, data, train

SIZE = 32
TINY = dict(image_size=SIZE, widths=(8, 16, 16, 32), blocks=(1, 1, 1, 1), epochs=2, batch_size=16, optimizer="adamw",
            lr=3e-3, weight_decay=0.05, schedule="onecycle", balanced=0.5, label_smoothing=0.1, patience=None,
            max_minutes=None, channels_last=False)


@pytest.fixture(scope="module")
def lfw5():
    """Cached 32 px stand-in crops of the smoke profile's 5 LFW people: {split: CachedDataset}."""
    torch.set_num_threads(2)
    manifest = data.build_manifest(config.load("smoke"), progress=False)
    return train.cached_splits(manifest, SIZE)


# ----------------------------------------------------------------------------------------------------------
# config.scratch_for_data
# ----------------------------------------------------------------------------------------------------------
def test_rule_keeps_lfw62_and_counts_steps_for_small_sets():
    base = config.load("default").scratch
    lfw = config.scratch_for_data(base, 2121, 62)                  # LFW-62: the recipe of the report, unchanged
    assert (lfw["epochs"], lfw["batch_size"], lfw["patience"]) == (base["epochs"], base["batch_size"], base["patience"])
    assert not lfw["small_data"] and "augment" not in lfw and lfw["balanced"] == base["balanced"]
    assert lfw["steps"] == 30 * (2121 // 64)

    small = config.scratch_for_data(base, 265, 40)                 # 40 people x 6-7 photos
    assert small["small_data"] and small["images_per_person"] == pytest.approx(6.62, abs=0.01)
    assert 16 <= small["batch_size"] < base["batch_size"]
    assert small["steps"] >= base["min_steps"] and small["steps"] < base["min_steps"] + small["steps_per_epoch"]
    assert small["epochs"] == small["steps"] // small["steps_per_epoch"] > base["epochs"]
    assert small["patience"] > base["patience"]                    # patience counts epochs: scaled with them
    assert small["balanced"] == 0.0
    train.train_transforms(small["image_size"], **small["augment"])   # the augmentation keys are valid
    assert base == config.load("default").scratch                  # the input dict is not modified

    tiny = config.scratch_for_data(base, 20, 5)
    assert tiny["batch_size"] == 16 and tiny["steps_per_epoch"] == 1 and tiny["steps"] >= base["min_steps"]
    with pytest.raises(ValueError, match="too small"):
        config.scratch_for_data(base, 1, 1)


# ----------------------------------------------------------------------------------------------------------
# eigenfaces
# ----------------------------------------------------------------------------------------------------------
def test_gray_matrix_weights_and_shape():
    img = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    img[0, 1] = 255                                                # pure green: luma 0.587
    X = baseline.gray_matrix(img, size=4)
    assert X.shape == (2, 16) and X.dtype == np.float32
    assert np.allclose(X[0], 0.587, atol=1e-3) and np.allclose(X[1], 0)


def test_eigenfaces_beats_chance_on_lfw5(lfw5):
    run = baseline.eigenfaces_baseline(lfw5, max_cv_folds=3)
    row = run["row"]
    assert row["network"] == "eigenfaces + SVM" and 0 < row["components"] <= baseline.EIGEN_SIZE ** 2
    assert row["C"] in (1.0, 10.0, 100.0, 1000.0)
    assert len(run["y_pred"]) == len(lfw5["test"]) and row["accuracy"] == pytest.approx(
        float(np.mean(run["y_pred"] == run["y_true"])))
    assert row["accuracy"] > 0.5                                   # 5 people: chance is 0.2 (0.4 for the largest)
    # the pipeline really whitens: unit variance of the projected training faces
    pca = run["search"].best_estimator_.named_steps["pca"]
    Z = pca.transform(baseline.gray_matrix(lfw5["train"].images))
    assert pca.whiten and np.allclose(Z.std(0, ddof=1)[:5], 1, atol=0.35)


# ----------------------------------------------------------------------------------------------------------
# the ablation and seed loops
# ----------------------------------------------------------------------------------------------------------
def test_ablation_depths_seeds_and_reuse(lfw5):
    known_row = {"network": "ResNet 1-1-1-1", "residual": True, "blocks": "1-1-1-1", "seed": 0, "epochs": 2,
                 "accuracy": 0.5, "macro_f1": 0.4, "best val accuracy": 0.5, "parameters": 1,
                 "cpu_minutes_per_thread": 0.0}
    histories = {}
    table = ablation.shortcut_ablation(lfw5, TINY, depths=[(1, 1, 1, 1), (2, 2, 2, 2)], seeds=(0, 1), progress=False,
                                       known={(True, (1, 1, 1, 1), 0): known_row}, histories=histories)
    assert len(table) == 8 and len(histories) == 7                # the known run is reused, not trained again
    assert list(table["network"].unique()) == ["ResNet 1-1-1-1", "plain 1-1-1-1", "ResNet 2-2-2-2", "plain 2-2-2-2"]
    assert table.loc[0, "accuracy"] == 0.5
    trained = table.iloc[1:]
    assert (trained["epochs"] == 2).all() and trained["accuracy"].between(0, 1).all()
    params = table.iloc[1:].groupby("network")["parameters"].first()
    assert params["ResNet 2-2-2-2"] > params["ResNet 1-1-1-1"] > params["plain 1-1-1-1"]
    assert params["ResNet 2-2-2-2"] > params["plain 2-2-2-2"]

    summary = ablation.seed_summary(table)
    assert (summary["seeds"] == 2).all() and len(summary) == 4
    plain = table[table["network"] == "plain 1-1-1-1"]["accuracy"]
    row = summary.set_index("network").loc["plain 1-1-1-1"]
    assert row["accuracy mean"] == pytest.approx(plain.mean()) and row["accuracy std"] == pytest.approx(plain.std())
    js = ablation.summary_json(table)
    json.dumps(js)                                                 # plain JSON types
    assert js["plain 2-2-2-2"]["seeds"] == [0, 1] and len(js["plain 2-2-2-2"]["accuracy"]["values"]) == 2


def test_train_variant_is_reproducible_per_seed(lfw5):
    a = ablation.train_variant(lfw5, dict(TINY, epochs=1), seed=3, progress=False)
    b = ablation.train_variant(lfw5, dict(TINY, epochs=1), seed=3, progress=False)
    c = ablation.train_variant(lfw5, dict(TINY, epochs=1), seed=4, progress=False)
    assert a["row"]["accuracy"] == b["row"]["accuracy"]
    assert np.array_equal(a["probs"], b["probs"]) and not np.array_equal(a["probs"], c["probs"])
    assert a["row"]["steps"] == len(lfw5["train"]) // TINY["batch_size"]
