"""bench/bench_scratch_seeds.py on a tiny own-photo set: its results file, and --merge adding runs to it."""
from __future__ import annotations

import json
import os
import sys

import pytest
from PIL import Image

from nnprak import background, config, data, faces

sys.path.insert(0, str(config.ROOT / "bench"))
import bench_scratch_seeds  # noqa: E402


@pytest.fixture(scope="module")
def grey_crops(tmp_path_factory, lfw_images):
    """Crops table of 3 people x 6 grayscale LFW photos, one person in a folder named in Chinese."""
    tmp = tmp_path_factory.mktemp("seeds")
    photos = tmp / "photos"
    for k, (person, files) in enumerate(list(lfw_images.items())[:3]):
        folder = photos / ("张伟" if k == 0 else person)
        folder.mkdir(parents=True)
        for f in files[:6]:
            Image.open(f).convert("L").save(folder / f.name)
    paths = config.Paths.under(tmp).make()
    cfg = config.load("smoke", source=str(photos), paths=paths)
    manifest = data.build_manifest(cfg, progress=False)
    faces.crop_manifest(manifest, cfg, progress=False)
    background.background_crops(cfg, manifest["person"].unique(), progress=False)   # the smoke profile's few
    yield paths.crops
    config.load()


def test_seed_bench_writes_and_merges_runs(grey_crops, tmp_path):
    out = tmp_path / "seeds.json"
    def args(epochs=1):
        return ["--profile", "smoke", "--crops", str(grey_crops), "--residual-only", "--epochs", str(epochs),
                "--threads", "1", "--no-progress", "--out", str(out),
                "--background-crops", str(grey_crops.parent / background.BACKGROUND_CROPS)]

    first = bench_scratch_seeds.main(args() + ["--seeds", "42"])
    smoke = config.load("smoke").scratch
    assert first["people"] == 3 and first["crop_column"] == faces.crop_column(smoke["crop"])
    assert first["background_people"] == smoke["background_people"] and first["background_images"] >= 12
    assert first["data"] == "<work>/processed/crops.csv"   # outside the checkout: no machine path in results/
    assert first["dataset"]["people"] == 3 and first["dataset"]["description"].startswith("own photos in <work>/")
    assert first["dataset"]["source"].startswith("<work>/") and "/tmp" not in json.dumps(first["dataset"])
    assert bench_scratch_seeds.data_label(config.ROOT / "data" / "processed" / "crops.csv") == "data/processed/crops.csv"
    assert first["summary"]["ResNet 1-1-1-1"]["seeds"] == [42] and len(first["runs"]) == 1
    assert first["runs"][0]["machine"]["cores"] == os.cpu_count()   # each run names the machine it trained on
    table = faces.load_crops(grey_crops)
    assert (table.loc[table["person"] == "张伟", "face_status"] == "ok").sum() >= 3     # the Chinese folder took part

    merged = bench_scratch_seeds.main(args() + ["--seeds", "43", "--merge"])
    assert [r["seed"] for r in merged["runs"]] == [42, 43]
    assert merged["runs"][0] == json.loads(json.dumps(first["runs"][0]))            # the earlier run is kept as it was
    entry = merged["summary"]["ResNet 1-1-1-1"]
    assert entry["seeds"] == [42, 43] and len(entry["accuracy"]["values"]) == 2
    assert json.loads(out.read_text(encoding="utf-8"))["summary"] == merged["summary"]

    before = out.read_bytes()
    with pytest.raises(SystemExit, match="other data or settings"):             # another schedule: not mixed in
        bench_scratch_seeds.main(args(2) + ["--seeds", "44", "--merge"])
    assert out.read_bytes() == before
    assert merged["test_images"] == (table.loc[table["face_status"] == "ok", "split"] == "test").sum()
    out.write_text(json.dumps({**merged, "test_images": merged["test_images"] + 1}), encoding="utf-8")
    with pytest.raises(SystemExit, match="other data or settings"):             # measured on other test faces
        bench_scratch_seeds.main(args() + ["--seeds", "44", "--merge"])


def test_trials_are_refused_in_the_profiles_own_results_file(grey_crops):
    """The seed bench notebook 03 and the report read takes only the profile's settings and main pair."""
    parse, problem = bench_scratch_seeds.parse, bench_scratch_seeds.default_file_problem
    main_pair = (1, 1, 1, 1)
    assert problem(parse([]), [main_pair], main_pair) == ""
    assert problem(parse(["--depths", "2,2,2,2", "--merge"]), [(2, 2, 2, 2)], main_pair) == ""
    assert "--set" in problem(parse(["--set", "preact=True"]), [main_pair], main_pair)
    assert "--epochs" in problem(parse(["--epochs", "3", "--merge"]), [main_pair], main_pair)
    assert "without --merge" in problem(parse(["--residual-only"]), [main_pair], main_pair)
    assert "without --merge" in problem(parse(["--depths", "1,1,2,2"]), [(1, 1, 2, 2)], main_pair)

    own = config.load("smoke").paths.seed_bench
    before = own.read_bytes() if own.exists() else None
    with pytest.raises(SystemExit, match="--out results/"):      # other crops, no --out: refused before training
        bench_scratch_seeds.main(["--profile", "smoke", "--crops", str(grey_crops), "--residual-only", "--epochs",
                                  "1", "--seeds", "42", "--threads", "1", "--no-progress", "--background-crops",
                                  str(grey_crops.parent / background.BACKGROUND_CROPS)])
    assert (own.read_bytes() if own.exists() else None) == before


def test_small_data_trials_need_their_own_file():
    """bench_small_data.py writes the report's file only for the 40 x 10 set with the default settings."""
    import bench_small_data

    def trial(*argv):
        return bench_small_data.trial_options(*bench_small_data.parse(list(argv)))

    assert trial() == [] and trial("--seeds", "42", "--threads", "2", "--no-progress") == []
    assert trial("--set", "preact=True") == ["--set"] and trial("--set=background=False") == ["--set"]
    assert trial("--people", "5", "--images", "15") == ["--people", "--images"]
    assert trial("--depths", "2,2,2,2") == ["--depths"]
    with pytest.raises(SystemExit, match="--out results/"):
        bench_small_data.main(["--set", "preact=True"])
