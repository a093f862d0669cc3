"""The README's results table is exactly what results/ says (make run and make bench regenerate it)."""
import json

import pytest

from nnprak import config, results


def test_readme_results_table_matches_results_folder():
    text = (config.ROOT / "README.md").read_text(encoding="utf-8")
    assert results.README_START in text and results.README_END in text
    section = text.split(results.README_START, 1)[1].split(results.README_END, 1)[0].strip()
    if results.other_data_set(config.ROOT / "results"):
        # a checkout whose results/ hold a run on own photos (`make run PHOTOS=...`): the README keeps LFW's table
        assert section.startswith("| model (LFW-62, test split) |"), "README.md's table must stay LFW's benchmark"
        return
    assert section == results.readme_table(config.ROOT / "results").strip(), (
        "README.md's results table is stale: run `make bench` (or `python -m nnprak bench --write`)")


def test_update_readme_replaces_only_the_section(tmp_path):
    (tmp_path / "results").mkdir()
    config.load("smoke")
    results.save_result("m", title="Model M", metrics={"accuracy": 0.5, "macro_f1": 0.25}, weights="w",
                        timings={"train_seconds": 90}, folder=tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.README_START}\nold\n{results.README_END}\noutro\n")
    assert results.update_readme(readme, tmp_path / "results")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| Model M | 50.0% | 25.0% | 1.5 min | w |" in text
    assert not results.update_readme(readme, tmp_path / "results")  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        results.update_readme(readme, tmp_path / "results")


def test_readme_table_lists_the_all_pairs_verification_benchmark(tmp_path):
    from nnprak.utils import write_json

    (tmp_path / "results").mkdir()
    write_json(tmp_path / "results" / "bench_verification.json", {"mtcnn landmarks, flip": {
        "accuracy": 0.99, "std": 0.003, "fold_accuracies": [0.99] * 10, "n_pairs": 6000, "auc": 0.999}})
    table = results.readme_table(tmp_path / "results")
    assert ("| dlib face ResNet, mtcnn landmarks, flip (`bench/bench_verification.py`) | 99.00% ± 0.30% | – | "
            "6,000 (10) | 0.9990 |") in table


def test_the_table_names_the_data_set_of_its_results(tmp_path):
    """`nnprak bench` after an own-photos run: the headings name the photos, not LFW-62 (records of two data sets:
    says so); the seed bench of that folder is labelled with the same data set."""
    from nnprak.utils import write_json

    folder = tmp_path / "results"
    folder.mkdir()
    own = {"source": "~/photos", "description": "own photos in ~/photos: 5 people, 118 images", "id": "a1",
           "people": 5, "images": 118}
    record = {"name": "scratch_resnet", "title": "ResNet from scratch", "metrics": {"accuracy": 0.8, "macro_f1": 0.75},
              "weights": "random-init", "timings": {}, "dataset": own}
    write_json(folder / "scratch_resnet.json", record)
    write_json(folder / f"{config.SEED_BENCH}.json", {
        "people": 5, "train_images": 80, "background_people": 0,
        "summary": {"ResNet 1-1-1-1": {"seeds": [42], "accuracy": {"mean": 0.8, "std": 0.0, "values": [0.8]},
                                       "macro_f1": {"mean": 0.7, "std": 0.0, "values": [0.7]},
                                       "minutes": {"mean": 1.0}}}})
    table = results.readme_table(folder)
    assert table.splitlines()[0].startswith("| model (own photos in ~/photos: 5 people, 118 images, test split) |")
    assert "| own photos in ~/photos: 5 people, 118 images (5 people, 80 training images, no background people) | " \
           "ResNet 1-1-1-1 | 1 | 80.0% |" in table
    assert "LFW-62" not in table and results.other_data_set(folder) == own["description"]
    readme = tmp_path / "README.md"          # `nnprak bench --write` leaves the README's LFW table as it is
    readme.write_text(f"{results.README_START}\nLFW's\n{results.README_END}\n")
    with pytest.raises(ValueError, match="LFW's benchmark: it stays"):
        results.update_readme(readme, folder)
    assert results.refresh_readme(folder, readme).startswith("README.md not changed: ")   # nnprak run / bench --write
    assert "LFW's" in readme.read_text()
    write_json(folder / "embed_svm.json", dict(record, name="embed_svm", title="SVM",
                                               dataset={"source": "lfw", "description": "LFW: 62 people",
                                                        "id": "b2", "people": 62, "images": 3022}))
    assert results.readme_table(folder).startswith("| model (several data sets, test split) |")
    assert results.other_data_set(folder) == "several data sets"
    (folder / "scratch_resnet.json").unlink()
    assert results.readme_table(folder).startswith("| model (LFW-62, test split) |")
    assert results.other_data_set(folder) == ""
    # a seed bench that recorded its data set (bench_scratch_seeds.py) is named by it, whatever the folder's records
    bench = json.loads((folder / f"{config.SEED_BENCH}.json").read_text())
    write_json(folder / f"{config.SEED_BENCH}.json", dict(bench, dataset=own))
    assert "| own photos in ~/photos: 5 people, 118 images (5 people, 80 training" in results.readme_table(folder)
    # the 40 x 25 grey set's bench (bench_small_data.py --people 40 --images 25) has a row of its own
    write_json(folder / f"{config.MID_DATA_BENCHES[0]}.json", dict(bench, people=40, train_images=680))
    assert ("| 40 × 25 grey (40 people, 680 training images, no background people) | ResNet 1-1-1-1 | 1 | 80.0% |"
            in results.readme_table(folder))
