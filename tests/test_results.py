"""The results registry that notebooks 03-05 write and notebook 06, the report and the README read."""
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from nnprak import config, results
from nnprak.utils import MACHINE_FLAGS, machine_info


def test_metrics_by_hand():
    m = results.classification_metrics(["a", "a", "a", "b"], ["a", "a", "b", "b"])
    assert m["accuracy"] == 0.75 and m["n_test"] == 4
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_a_photo_without_a_face_is_an_error_of_its_person_not_a_class():
    """"no_face" (a test photo without a face) lowers its person's recall; it is no extra class with an F1 of 0."""
    true, pred = ["a", "a", "b", "b"], ["a", "no_face", "b", "b"]
    m = results.classification_metrics(true, pred)
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)                  # a: precision 1, recall 1/2; b: 1
    table = results.per_person_report(true, pred)
    assert list(table.index) == ["a", "b"] and table.loc["a", "recall"] == 0.5 and table["support"].tolist() == [2, 2]


def test_save_and_load_round_trip(tmp_path):
    config.load("smoke")
    preds = pd.DataFrame({"path": ["x.png", "y.png"], "true": ["a", "b"], "pred": ["a", "a"], "score": [0.9, 0.4]})
    results.save_result("m1", title="Model one", metrics=results.classification_metrics(preds["true"], preds["pred"]),
                        weights="random-init", parameters=10, timings={"train_seconds": 120}, predictions=preds,
                        folder=tmp_path)
    (tmp_path / "run_times.json").write_text('{"seconds": {}}')
    rec = results.load_result("m1", tmp_path)
    assert rec["profile"] == "smoke" and rec["metrics"]["accuracy"] == 0.5 and rec["weights"] == "random-init"
    assert rec["machine"] == json.loads(json.dumps(machine_info()))       # which CPU trained it, PyTorch's version
    assert rec["machine"]["cores"] == os.cpu_count() and rec["machine"]["torch"] == torch.__version__
    if Path("/proc/cpuinfo").exists():                                    # Linux: the CPU's model and its flags
        assert rec["machine"]["cpu_model"].startswith("family ") and set(rec["machine"]["flags"]) <= set(MACHINE_FLAGS)
    assert [r["name"] for r in results.load_results(tmp_path)] == ["m1"]
    pd.testing.assert_frame_equal(results.load_predictions("m1", tmp_path), preds)
    table = results.comparison_table(results.load_results(tmp_path))
    assert table.loc[0, "train_min"] == 2 and table.loc[0, "model"] == "Model one"
    with pytest.raises(ValueError, match="score"):
        results.save_result("m2", title="x", metrics={}, weights="w", predictions=preds.drop(columns="score"),
                            folder=tmp_path)
    with pytest.raises(FileNotFoundError, match="make run"):
        results.load_result("nope", tmp_path)


def test_people_named_by_numbers_stay_names(tmp_path):
    """Folders named "01", "007" (student ids): the predictions read back as the same text, and score per person."""
    config.load("smoke")
    preds = pd.DataFrame({"path": ["x.jpg", "y.jpg", "z.jpg"], "crop": ["x.png", "y.png", ""],
                          "true": ["01", "007", "007"], "pred": ["01", "01", "no_face"], "score": [0.9, 0.4, 0.0]})
    results.save_result("m", title="M", metrics={}, weights="w", predictions=preds, folder=tmp_path)
    back = results.load_predictions("m", tmp_path)
    pd.testing.assert_frame_equal(back, preds)
    table = results.per_person_accuracy(back, pd.Series({"01": 6, "007": 5}))
    assert table.set_index("person")["accuracy"].to_dict() == {"007": 0.0, "01": 1.0}
    assert table.set_index("person")["train_images"].to_dict() == {"007": 5, "01": 6}


def test_show_progress_follows_tqdm_disable(monkeypatch):
    from nnprak.utils import show_progress

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert show_progress(True) and not show_progress(False)
    monkeypatch.setenv("TQDM_DISABLE", "1")       # nnprak run sets it for executed notebooks
    assert not show_progress(True)


def test_display_path_hides_the_machine(tmp_path):
    from nnprak.utils import display_path

    assert display_path(config.ROOT / "models" / "x.pt") == "models/x.pt"
    assert display_path(Path.home() / ".cache" / "torch" / "w.pth") == "~/.cache/torch/w.pth"
    assert display_path("/opt/weights/w.pth") == "/opt/weights/w.pth"


def test_verification_errors_round_trip_and_figure(tmp_path, lfw_dir):
    import json

    import numpy as np

    from nnprak import evaluate as E
    from nnprak import plots

    config.load("smoke")
    pairs = E.read_lfw_pairs(lfw_dir / "pairs.txt")
    pairs = pairs[pairs["fold"] < 2].groupby(["fold", "same"]).head(15).reset_index(drop=True)
    rng = np.random.default_rng(1)
    no_face = pairs["path2"].iloc[0]                    # this image "has no face": its pair is an error

    def embed(paths):                                   # random vectors: about chance level
        return np.array([np.full(8, np.nan) if p == no_face else rng.normal(size=8) for p in paths])

    result = E.lfw_verification(embed, pairs=pairs, folds=2)
    errors = result.errors()
    assert 5 < len(errors) < len(pairs)
    assert errors["path2"].iloc[0] == no_face and np.isinf(errors["margin"].iloc[0])

    results.save_verification("noise", "Random vectors", result, folder=tmp_path)
    record = json.loads((tmp_path / "verification" / "noise.json").read_text())
    assert record["n_errors"] == len(errors) and record["n_mislabelled"] == 0
    assert str(tmp_path) not in json.dumps(record) and str(lfw_dir) not in json.dumps(record)  # no machine paths
    back = results.verification_errors(record, lfw_dir)
    assert back["path1"].tolist() == errors["path1"].tolist() and back["path2"].tolist() == errors["path2"].tolist()
    assert all(Path(p).is_file() for p in back["path1"])
    assert np.allclose(back["distance"], errors["distance"], equal_nan=True) and back["mislabelled"].dtype == bool
    assert np.array_equal(back["margin"], errors["margin"])              # inf for the pair without a face
    empty = results.verification_errors({"errors": []})                  # nothing wrong: an empty table
    assert empty.empty and {"path1", "path2", "distance", "mislabelled"} <= set(empty.columns)

    fig = plots.verification_pairs(back, n=4, ncols=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4
    assert shown[0].images[0].get_array().shape == (150, 2 * 150 + 4, 3)      # two 150 px faces side by side
    assert ("same person" if back["same"].iloc[0] else "different people") in shown[0].get_title()
