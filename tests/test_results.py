"""The results registry that notebooks 03-05 write and notebook 06, the report and the README read."""
from pathlib import Path

import pandas as pd
import pytest

from nnprak import config, results


def test_metrics_by_hand():
    m = results.classification_metrics(["a", "a", "a", "b"], ["a", "a", "b", "b"])
    assert m["accuracy"] == 0.75 and m["n_test"] == 4
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_save_and_load_round_trip(tmp_path):
    config.load("smoke")
    preds = pd.DataFrame({"path": ["x.png", "y.png"], "true": ["a", "b"], "pred": ["a", "a"], "score": [0.9, 0.4]})
    results.save_result("m1", title="Model one", metrics=results.classification_metrics(preds["true"], preds["pred"]),
                        weights="random-init", parameters=10, timings={"train_seconds": 120}, predictions=preds,
                        folder=tmp_path)
    (tmp_path / "run_times.json").write_text('{"seconds": {}}')
    rec = results.load_result("m1", tmp_path)
    assert rec["profile"] == "smoke" and rec["metrics"]["accuracy"] == 0.5 and rec["weights"] == "random-init"
    assert [r["name"] for r in results.load_results(tmp_path)] == ["m1"]
    pd.testing.assert_frame_equal(results.load_predictions("m1", tmp_path), preds)
    table = results.comparison_table(results.load_results(tmp_path))
    assert table.loc[0, "train_min"] == 2 and table.loc[0, "model"] == "Model one"
    with pytest.raises(ValueError, match="score"):
        results.save_result("m2", title="x", metrics={}, weights="w", predictions=preds.drop(columns="score"),
                            folder=tmp_path)
    with pytest.raises(FileNotFoundError, match="make run"):
        results.load_result("nope", tmp_path)


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
