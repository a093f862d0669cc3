"""Notebook 03's experiments on real LFW images: the data-size rule, the eigenfaces baseline, the ablation and seeds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnprak import ablation, baseline, config, data, train
from nnprak.models.scratch import from_settings

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
    lfw = config.scratch_for_data(base, 2121, 62)                  # LFW-62 alone (33 steps an epoch): unchanged
    assert (lfw["epochs"], lfw["batch_size"], lfw["patience"]) == (base["epochs"], base["batch_size"], base["patience"])
    assert not lfw["small_data"] and "augment" not in lfw and lfw["balanced"] == base["balanced"]
    assert lfw["steps"] == 30 * (2121 // 64)

    small = config.scratch_for_data(base, 265, 40)                 # 40 people x 6-7 photos
    assert small["small_data"] and small["images_per_person"] == pytest.approx(6.62, abs=0.01)
    assert 16 <= small["batch_size"] < base["batch_size"]
    need = base["small_data_min_steps"]                           # small sets get the longer schedule in steps
    assert need > base["min_steps"] and need <= small["steps"] < need + small["steps_per_epoch"]
    medium = config.scratch_for_data(base, 80, 5)                  # 5 people x 16 photos: not small, min_steps
    assert not medium["small_data"] and base["min_steps"] <= medium["steps"] < need
    assert small["epochs"] == small["steps"] // small["steps_per_epoch"] > base["epochs"]
    assert small["patience"] > base["patience"]                    # patience counts epochs: scaled with them
    assert small["balanced"] == 0.0
    assert small["head"] == config.SMALL_DATA_HEAD and lfw["head"] == medium["head"] == base["head"]
    assert small["blocks"] == (config.SMALL_DATA_BLOCKS,) * 4 and base["blocks"] == lfw["blocks"] == medium["blocks"]
    deep = dict(base, blocks=(2, 2, 2, 2))                          # a deeper main model: small sets keep the rule's
    assert config.scratch_for_data(deep, 265, 40)["blocks"] == small["blocks"] != deep["blocks"]
    assert config.scratch_for_data(deep, 2121, 62)["blocks"] == deep["blocks"]
    # the block form: pre-activation from 15 photos a person, the original blocks below (config.SMALL_DATA_PREACT)
    assert base["preact"] and lfw["preact"] and medium["preact"] and small["preact"] is config.SMALL_DATA_PREACT is False
    assert from_settings(40, small).blocks == small["blocks"]      # the network the rule asks for
    assert not from_settings(40, small).preact and from_settings(62, lfw).preact
    assert config.scratch_for_data(dict(base, small_data_preact=True), 265, 40)["preact"] is True   # a trial's switch
    train.train_transforms(small["image_size"], **small["augment"])   # the augmentation keys are valid
    assert base == config.load("default").scratch                  # the input dict is not modified

    # photos that are already face crops (their aligned crops mostly black fill): box crops; others keep the setting
    assert lfw["crop"] == "aligned" and lfw["aligned_fill"] == 0.0
    assert config.scratch_for_data(base, 265, 40, aligned_fill=0.74)["crop"] == "plain"
    assert config.scratch_for_data(base, 265, 40, aligned_fill=config.ALIGNED_MAX_FILL)["crop"] == "aligned"
    assert config.scratch_for_data(dict(base, crop="plain"), 265, 40)["crop"] == "plain"

    tiny = config.scratch_for_data(base, 20, 5)
    assert tiny["batch_size"] == 16 and tiny["steps_per_epoch"] == 1 and tiny["steps"] >= need
    with pytest.raises(ValueError, match="too small"):
        config.scratch_for_data(base, 1, 1)


def test_max_steps_caps_the_schedule_of_large_sets_to_the_time_budget():
    base = config.load("default").scratch
    assert "max_steps" not in base and config.MAX_STEPS                 # the default cap: config.MAX_STEPS
    lfw = config.scratch_for_data(base, 2121, 62, 1301)                # LFW-62 with its background people
    assert lfw["steps_per_epoch"] == 3422 // 64 and lfw["epochs"] == config.MAX_STEPS // 53 < base["epochs"]
    assert lfw["steps"] <= config.MAX_STEPS and lfw["patience"] == base["patience"]   # patience is not cut
    big = config.scratch_for_data(base, 6000, 100, 1301)               # a larger set: fewer epochs, the same budget
    assert big["epochs"] < lfw["epochs"] and config.MAX_STEPS - big["steps_per_epoch"] < big["steps"] <= config.MAX_STEPS
    alone = config.scratch_for_data(base, 2121, 62)                    # 33 steps an epoch: all 30 epochs fit
    assert alone["epochs"] == base["epochs"] and alone["steps"] <= config.MAX_STEPS
    assert config.scratch_for_data(dict(base, max_steps=None), 2121, 62, 1301)["epochs"] == base["epochs"]
    full = config.load("full").scratch                                  # the GPU profile has no cap
    assert config.scratch_for_data(full, 2121, 62, 1301)["epochs"] == full["epochs"]
    # the floors win over the cap: small sets keep their schedule in steps
    small = config.scratch_for_data(dict(base, max_steps=100), 265, 40)
    assert small["steps"] >= base["small_data_min_steps"] and small["patience"] > base["patience"]
    assert config.scratch_for_data(dict(base, max_steps=100), 80, 5)["steps"] >= base["min_steps"]


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


# ----------------------------------------------------------------------------------------------------------
# the seed bench in notebook 03 (default profile: no twin trained in the run)
# ----------------------------------------------------------------------------------------------------------
def _bench_file(tmp_path, people=62, train_images=2121, verify=False):
    """Write a seed-bench results file as bench/bench_scratch_seeds.py does (summary_json of real-shaped rows).

    ``verify=True``: rows with a ``verification`` value, as ``--verify`` writes them.
    """
    import pandas as pd

    rows = [dict(network=ablation.network_name(r, b), residual=r, blocks="-".join(map(str, b)), seed=s,
                 accuracy=acc, macro_f1=acc - 0.03, parameters=1000 + r, minutes=2.0 + s / 100,
                 **({"verification": acc - 0.06} if verify else {}))
            for (r, b, s, acc) in [(True, (1, 1, 1, 1), 42, 0.93), (True, (1, 1, 1, 1), 43, 0.95),
                                   (False, (1, 1, 1, 1), 42, 0.90), (False, (1, 1, 1, 1), 43, 0.92),
                                   (True, (2, 2, 2, 2), 42, 0.94), (False, (2, 2, 2, 2), 42, 0.80)]]
    frame = pd.DataFrame(rows)
    hist = {"epoch": [1, 2], "train_loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "train_acc": [0.3, 0.6], "val_acc": [0.2, 0.5]}
    runs = [dict(r, history=hist if r["seed"] == 42 else None) for r in rows]
    path = tmp_path / "bench_scratch_seeds.json"
    path.write_text(json.dumps({"people": people, "train_images": train_images,
                                "summary": ablation.summary_json(frame), "runs": runs}))
    return path


def test_seed_bench_is_read_only_for_its_own_data(tmp_path):
    path = _bench_file(tmp_path)
    assert ablation.load_seed_bench(path, 62, 2121)["people"] == 62
    assert ablation.load_seed_bench(path, 40, 265) is None          # another data set: not this one's numbers
    assert ablation.load_seed_bench(path, 62, 2121, 1301) is None    # measured without the background people
    assert ablation.load_seed_bench(path, 62, 2121, n_test=450) is None   # a file that does not say its test images
    with_test = tmp_path / "with_test.json"
    with_test.write_text(json.dumps({**json.loads(path.read_text()), "test_images": 451}))
    assert ablation.load_seed_bench(with_test, 62, 2121, n_test=451)["test_images"] == 451
    assert ablation.load_seed_bench(with_test, 62, 2121, n_test=450) is None   # a photo left the test split since
    assert ablation.load_seed_bench(tmp_path / "missing.json", 62, 2121) is None
    (tmp_path / "broken.json").write_text("{not json")
    assert ablation.load_seed_bench(tmp_path / "broken.json", 62, 2121) is None


def test_seed_table_numbers_and_curves(tmp_path):
    bench = ablation.load_seed_bench(_bench_file(tmp_path), 62, 2121)
    main = dict(network="ResNet 1-1-1-1", residual=True, blocks="1-1-1-1", seed=42, accuracy=0.9312, macro_f1=0.9,
                parameters=1001, minutes=3.25)
    eigen = dict(network="eigenfaces + SVM", accuracy=0.7, macro_f1=0.6, parameters=5, minutes=0.1)
    table = ablation.seed_table(bench, [main], [eigen])
    assert list(table["network"]) == ["ResNet 1-1-1-1", "ResNet 1-1-1-1", "plain 1-1-1-1", "ResNet 2-2-2-2",
                                      "plain 2-2-2-2", "eigenfaces + SVM"]
    deep_first = dict(reversed(list(bench["summary"].items())))          # runs merged later come first in a file
    assert list(ablation.seed_table(dict(bench, summary=deep_first))["network"]) == list(table["network"])[1:-1]
    assert list(table["source"]) == ["this run (seed 42)"] + ["seed bench"] * 4 + ["this run"]
    assert table["test accuracy (%)"].tolist()[:3] == ["93.1", "94.0 ± 1.4", "91.0 ± 1.4"]
    assert table["seeds"].tolist() == [1, 2, 2, 1, 1, "–"]
    assert table["test accuracy (%)"].tolist()[3:] == ["94.0", "80.0", "70.0"]      # one seed: no "± 0.0"

    numbers = ablation.seed_numbers(bench, [main])
    assert numbers["ResNetSeedAcc"] == "94.0\\% $\\pm$ 1.4\\%" and numbers["SeedCount"] == "2"
    assert numbers["DeepBlocks"] == "2-2-2-2" and numbers["DeepPlainAcc"] == "80.0\\% (one seed)"
    alone = ablation.seed_numbers(None, [main])                      # own photos: no bench for this data
    assert alone["ResNetSeedAcc"] == "93.1\\% (one seed)" and alone["PlainSeedAcc"] == "not measured on this data"
    assert alone["DeepBlocks"] == "2-2-2-2" and alone["DeepResNetAcc"] == "not measured on this data"

    curves = ablation.bench_histories(bench)                          # first seed's runs that kept a history
    assert sorted(curves) == ["ResNet 1-1-1-1 (seed 42)", "ResNet 2-2-2-2 (seed 42)", "plain 1-1-1-1 (seed 42)",
                              "plain 2-2-2-2 (seed 42)"]
    assert curves["plain 1-1-1-1 (seed 42)"]["val_acc"].tolist() == [0.2, 0.5]
    assert ablation.bench_histories(None) == {}
    assert sorted(ablation.bench_histories(bench, skip=["ResNet 1-1-1-1"]))[0] == "ResNet 2-2-2-2 (seed 42)"
    assert ablation.VERIFICATION_COLUMN not in table                 # a bench without --verify: no empty column
    assert numbers["ResNetSeedVer"] == "not measured on this data"


def test_seed_table_shows_the_verification_of_a_verify_bench(tmp_path):
    bench = ablation.load_seed_bench(_bench_file(tmp_path, verify=True), 62, 2121)
    assert bench["summary"]["ResNet 1-1-1-1"]["verification"]["values"] == pytest.approx([0.87, 0.89])
    main = dict(network="ResNet 1-1-1-1", residual=True, blocks="1-1-1-1", seed=42, accuracy=0.9312, macro_f1=0.9,
                parameters=1001, minutes=3.25)
    table = ablation.seed_table(bench, [main])
    ver = table[ablation.VERIFICATION_COLUMN].tolist()
    assert ver == ["", "88.0 ± 1.4", "85.0 ± 1.4", "88.0", "74.0"]   # the run's own row: measured later, in the notebook
    numbers = ablation.seed_numbers(bench, [main])
    assert numbers["ResNetSeedVer"] == "88.0\\% $\\pm$ 1.4\\%" and numbers["DeepPlainVer"] == "74.0\\% (one seed)"


def test_blocks_per_stage_reads_as_the_report_says_it():
    assert ablation.blocks_per_stage((2, 2, 2, 2)) == "2" and ablation.blocks_per_stage([1]) == "1"
    assert ablation.blocks_per_stage((2, 1, 2, 1)) == "2-1-2-1"


def test_small_data_numbers_from_the_small_data_bench(tmp_path):
    import pandas as pd

    rows = [dict(network="ResNet 1-1-1-1", residual=True, blocks="1-1-1-1", seed=s, accuracy=acc, macro_f1=acc,
                 parameters=10, minutes=3.0) for s, acc in ((42, 0.8), (43, 0.7), (44, 0.75))]
    rows.append(dict(rows[0], network="ResNet 2-2-2-2", blocks="2-2-2-2", accuracy=0.6))   # not the rule's depth
    path = tmp_path / "bench_small_data.json"
    runs = [dict(r, test_correct=[1] * 60 + [0] * 20) for r in rows[:3]]      # 80 test photos a run
    path.write_text(json.dumps({"people": 40, "train_images": 240, "eigenfaces": {"accuracy": 0.5},
                                "background_people": 118, "summary": ablation.summary_json(pd.DataFrame(rows)),
                                "runs": runs}))
    alone = tmp_path / "bench_small_data_alone.json"                  # the same set without background people
    alone.write_text(json.dumps({"people": 40, "train_images": 240, "eigenfaces": {"accuracy": 0.5},
                                 "summary": ablation.summary_json(pd.DataFrame(rows[1:3]))}))
    numbers = ablation.small_data_numbers(path, alone)
    assert numbers == {"SmallPeople": "40", "SmallTrain": "240", "SmallSeeds": "3",
                       "SmallAcc": "75.0\\% $\\pm$ 5.0\\%", "SmallEigenAcc": "50.0\\%",
                       "SmallErrorCut": "50\\%",                       # errors 25 % against 50 %: half avoided
                       "SmallBackground": "118", "SmallAloneAcc": "72.5\\% $\\pm$ 3.5\\%",
                       "SmallPhotoPoints": "1.25"}                     # one of 80 test photos
    assert ablation.small_data_numbers(path)["SmallAloneAcc"] == "--"
    assert ablation.small_data_numbers(alone)["SmallPhotoPoints"] == "--"   # no per-face results: not guessed
    assert set(ablation.small_data_numbers(tmp_path / "missing.json").values()) == {"--"}


def test_mid_data_numbers_compare_the_block_forms_face_by_face(tmp_path):
    import pandas as pd

    def bench(path, correct_by_seed, eigen=0.6):
        rows = [dict(network="ResNet 1-1-1-1", residual=True, blocks="1-1-1-1", seed=s, accuracy=sum(c) / len(c),
                     macro_f1=0.5, parameters=10, minutes=4.0) for s, c in correct_by_seed.items()]
        path.write_text(json.dumps({"people": 40, "train_images": 680, "eigenfaces": {"accuracy": eigen},
                                    "summary": ablation.summary_json(pd.DataFrame(rows)),
                                    "runs": [dict(r, test_correct=c) for r, c in zip(rows, correct_by_seed.values())]}))
        return path

    preact = bench(tmp_path / "bench_mid_data.json", {42: [1, 1, 1, 0], 43: [1, 1, 1, 1]})   # 75 % and 100 %
    original = bench(tmp_path / "bench_mid_data_original.json", {42: [1, 0, 0, 1], 43: [1, 1, 1, 1]})
    numbers = ablation.mid_data_numbers(preact, original)
    assert numbers == {"MidPeople": "40", "MidTrain": "680", "MidPerPerson": "17", "MidSeeds": "2",
                       "MidAcc": "87.5\\% $\\pm$ 17.7\\%", "MidOriginalAcc": "75.0\\% $\\pm$ 35.4\\%",
                       "MidEigenAcc": "60.0\\%",
                       "MidPairTest": "2 against 1 faces, $p = 1.00$"}   # seed 42: faces 2 and 3 against face 4
    assert ablation.mid_data_numbers(preact)["MidPairTest"] == ablation.mid_data_numbers(preact)["MidOriginalAcc"] == "--"
    assert set(ablation.mid_data_numbers(tmp_path / "missing.json", original).values()) == {"--"}


def test_other_crop_numbers_compare_the_pair_and_the_two_sets_of_crops_face_by_face():
    import pandas as pd

    def bench(correct: dict) -> dict:   # {(network, seed): faces right}
        rows = [dict(network=n, residual=n.startswith("ResNet"), blocks="1-1-1-1", seed=s, accuracy=sum(c) / len(c),
                     macro_f1=0.5, parameters=10, minutes=4.0) for (n, s), c in correct.items()]
        return {"summary": ablation.summary_json(pd.DataFrame(rows)),
                "runs": [dict(r, test_correct=c) for r, c in zip(rows, correct.values())]}

    other = bench({("ResNet 1-1-1-1", 42): [1, 1, 1, 0], ("ResNet 1-1-1-1", 43): [1, 1, 1, 1],
                   ("plain 1-1-1-1", 42): [1, 0, 0, 0], ("plain 1-1-1-1", 43): [1, 1, 1, 1]})
    first = bench({("ResNet 1-1-1-1", 42): [0, 1, 1, 1], ("ResNet 1-1-1-1", 43): [1, 1, 1, 1]})
    numbers = ablation.other_crop_numbers(other, first)
    assert numbers == {"OtherCropResNetAcc": "87.5\\% $\\pm$ 17.7\\%", "OtherCropPlainAcc": "62.5\\% $\\pm$ 53.0\\%",
                       "OtherCropPairTest": "2 against 0 faces, $p = 0.50$",     # seed 42: faces 2 and 3
                       "OtherCropMoved": "1 against 1 faces, $p = 1.00$"}        # seed 42: face 1 against face 4
    assert ablation.other_crop_numbers(other)["OtherCropMoved"] == "not measured on this data"
    shorter = dict(first, settings={"steps": 1272})                 # another schedule: not the crops' effect alone
    other["settings"] = {"steps": 1590}
    assert ablation.other_crop_numbers(other, shorter)["OtherCropMoved"] == "not the same schedule"
    assert ablation.other_crop_numbers(other, dict(first, settings={"steps": 1590}))["OtherCropMoved"] == \
        numbers["OtherCropMoved"]
    assert set(ablation.other_crop_numbers(None, first).values()) == {"not measured on this data"}


def test_paired_test_counts_the_faces_one_network_alone_got_right():
    import pandas as pd

    def run(network, seed, correct):
        residual, blocks = network.startswith("ResNet"), network.split()[1]
        return dict(network=network, residual=residual, blocks=blocks, seed=seed, accuracy=sum(correct) / len(correct),
                    macro_f1=0.5, parameters=10, minutes=1.0, test_correct=correct)

    runs = [run("ResNet 1-1-1-1", 42, [1, 1, 0, 0, 1]), run("plain 1-1-1-1", 42, [1, 0, 1, 0, 1]),   # 1 against 1
            run("ResNet 1-1-1-1", 43, [1, 1, 1, 1, 1]), run("plain 1-1-1-1", 43, [1, 0, 0, 0, 1]),   # 3 against 0
            run("ResNet 1-1-1-1", 44, [1, 1, 1, 1, 1]),                                             # no twin: left out
            run("ResNet 2-2-2-2", 42, [1] * 8), run("plain 2-2-2-2", 42, [0] * 8),
            run("ResNet 3-3-3-3", 42, [1, 0]), dict(run("plain 3-3-3-3", 42, [1, 0]), test_correct=None)]
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "test_correct"} for r in runs])
    bench = {"summary": ablation.summary_json(frame), "runs": runs}
    test = ablation.paired_test(bench, "ResNet 1-1-1-1", "plain 1-1-1-1")
    assert (test["seeds"], test["faces"], test["first_only"], test["second_only"]) == ([42, 43], 10, 4, 1)
    assert test["p_value"] == pytest.approx(2 * (1 + 5) / 2 ** 5)    # P(X <= 1) + P(X >= 4), X ~ Binomial(5, 1/2)
    same = ablation.paired_test(bench, "ResNet 1-1-1-1", "ResNet 1-1-1-1")
    assert same["first_only"] == same["second_only"] == 0 and same["p_value"] == 1.0
    deep = ablation.paired_test(bench, "ResNet 2-2-2-2", "plain 2-2-2-2")
    assert deep["p_value"] == pytest.approx(2 / 2 ** 8)               # 8 faces, all the ResNet's
    assert ablation.paired_test(bench, "ResNet 3-3-3-3", "plain 3-3-3-3") is None   # a run without per-face results
    assert ablation.paired_test(None, "ResNet 1-1-1-1", "plain 1-1-1-1") is None
    table = ablation.paired_table(bench)
    assert table["depth"].tolist() == ["1-1-1-1", "2-2-2-2"]
    counts = ["seeds", "test faces", "only the ResNet right", "only the plain twin right"]
    assert table.iloc[0][counts].tolist() == [2, 10, 4, 1]
    numbers = ablation.seed_numbers(bench)
    assert numbers["SeedPairTest"] == "4 against 1 faces, $p = 0.38$" and numbers["DeepBlocks"] == "3-3-3-3"
    assert numbers["DeepPairTest"] == "not measured on this data"
    assert [ablation.p_text(p) for p in (1.0, 0.375, 0.0078125, 0.0004)] == ["= 1.00", "= 0.38", "= 0.008", "< 0.001"]
    assert table["McNemar p"].tolist() == [0.38, 0.0078]
    other = {"runs": [dict(runs[0], test_correct=[0, 1, 1, 1, 1]), dict(runs[2], seed=45)]}   # e.g. --set preact=True
    across = ablation.paired_test(bench, "ResNet 1-1-1-1", "ResNet 1-1-1-1", second_bench=other)
    assert (across["seeds"], across["first_only"], across["second_only"]) == ([42], 1, 2)   # seed 42 alone in both
    runs[1]["test_correct"] = [1, 0, 1]                                # another test set: an error, not a number
    with pytest.raises(ValueError, match="not the same test set"):
        ablation.paired_test(bench, "ResNet 1-1-1-1", "plain 1-1-1-1")
