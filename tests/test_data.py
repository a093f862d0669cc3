"""Scanning, validation, duplicates, the split and the Dataset of nnprak.data, on LFW and on files made here."""
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnprak import config, data


@pytest.fixture(scope="module")
def lfw62_scan(lfw_dir):
    return data.mark_duplicates(data.scan_lfw(lfw_dir, 20, progress=False))


@pytest.fixture(scope="module")
def lfw62(lfw62_scan):
    return data.split_manifest(lfw62_scan)


def test_lfw_counts(lfw_dir):
    counts = data.lfw_counts(lfw_dir)
    assert len(counts) == 5749 and counts.sum() == 13233
    people = data.lfw_people(lfw_dir, 20)
    assert len(people) == 62 and counts[people].sum() == 3023
    assert data.lfw_people(lfw_dir, 20, max_people=5) == people[:5]


def test_lfw62_manifest_is_stratified_and_leak_free(lfw62):
    assert len(lfw62) == 3023 and lfw62["person"].nunique() == 62
    assert (lfw62[["width", "height"]] == 250).all(axis=None) and (lfw62["dhash"].str.len() == 16).all()
    assert all(data.split_checks(lfw62).values())
    # each person is split 70/15/15 up to rounding (val and test get round(0.15 n) each), before a photo that is the
    # same as one in an earlier split is left out: LFW-62 has one, a copy in test of a training photo
    drawn = lfw62["reason"].str.extract(r"drawn into (\w+)", expand=False).fillna(lfw62["split"])
    for person, rows in lfw62.assign(split=drawn).groupby("person"):
        n = len(rows)
        counts = rows["split"].value_counts()
        assert (counts["train"], counts["val"], counts["test"]) == data.split_counts(n), person
    left = lfw62[lfw62["status"] != "ok"]
    assert list(left["status"]) == ["same_photo"] and left["reason"].str.contains("drawn into test").all()
    twin = lfw62[(lfw62["dhash"] == left["dhash"].iloc[0]) & (lfw62["person"] == left["person"].iloc[0])]
    assert sorted(twin["split"]) == ["", "train"] and twin["sha1"].nunique() == 2
    totals = lfw62["split"].value_counts(normalize=True)
    assert abs(totals["train"] - 0.70) < 0.01 and abs(totals["test"] - 0.15) < 0.01


def test_split_table_counts_the_usable_images(lfw62):
    odd = lfw62.copy()
    odd.loc[odd.index[:5], "status"] = "corrupt"                 # unusable rows are not counted
    row = data.split_table(odd).iloc[0]
    per_person = odd[odd["status"] == "ok"].groupby("person").size()
    assert row["people"] == 62 and row["total"] == 3023 - 5 - 1 == row["train"] + row["val"] + row["test"]
    assert (row["fewest a person"], row["most a person"]) == (per_person.min(), per_person.max())
    assert row["most a person"] == lfw62["person"].value_counts().max() > 500       # George W Bush


def test_split_is_deterministic_per_seed(lfw62, lfw62_scan):
    base = lfw62_scan
    again = data.split_manifest(base, seed=config.SEED)
    assert again["split"].tolist() == lfw62["split"].tolist()
    other = data.split_manifest(base, seed=config.SEED + 1)
    assert other["split"].tolist() != lfw62["split"].tolist()
    # a person's split does not depend on which other people are in the manifest
    one = lfw62["person"].iloc[0]
    alone = data.split_manifest(base[base["person"] == one])
    assert alone["split"].tolist() == lfw62.loc[lfw62["person"] == one, "split"].tolist()


def test_split_rejects_bad_fractions(lfw62):
    with pytest.raises(ValueError, match="sum to 1"):
        data.split_manifest(lfw62, fractions=(0.8, 0.15, 0.15))


def test_flat_images_are_not_copies_and_a_person_left_without_a_test_photo_is_warned(capsys):
    """Blank images all hash to zero bits: they are never taken for one photo. A copy that was its person's only test
    photo is still left out, with a warning that names the person and what to do."""
    flat = data.difference_hash(Image.new("RGB", (120, 90), (200, 200, 200)))
    dark = data.difference_hash(Image.new("L", (640, 480), 3))
    assert flat == dark == "0" * 16 and not data.informative_hash(flat)
    rng = np.random.default_rng(0)
    photo = data.difference_hash(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    assert data.informative_hash(photo)
    df = pd.DataFrame({"path": ["a.jpg", "b.png", "c.jpg", "d.jpg", "e.png", "f.png"], "person": ["Ann"] * 4 + ["Bo"] * 2,
                       "split": ["train", "test", "val", "train", "train", "test"], "status": "ok", "reason": "", "sha1": list("abcdef"),
                       "dhash": [photo, photo, "1234abcd5678ef90", "0fedcba987654321", flat, flat], "video": ""})
    out = data.leave_out_split_twins(df)
    assert list(out["status"]) == ["ok", "same_photo", "ok", "ok", "ok", "ok"]      # Bo's blank images both stay
    said = capsys.readouterr().out
    assert "left out: b.png (drawn into test)" in said and "warning: Ann has no test photo left" in said
    assert data.split_checks(out)["copies of one photo (equal difference hash) share one split"]
    assert not data.split_checks(out)["every person is in train, val and test"]
    # with a training photo to spare, one moves to test instead (the last by path without a copy), so every check holds
    more = pd.concat([df, df.iloc[[2]].assign(path="g.jpg", split="train", sha1="g", dhash="f0f0f0f00f0f0f0f"),
                      df.iloc[[2]].assign(path="h.jpg", split="train", sha1="h", dhash="123456789abcdef0")],
                     ignore_index=True)
    out = data.leave_out_split_twins(more)
    assert out.loc[out["path"] == "b.png", "status"].item() == "same_photo"
    assert out.loc[out["path"] == "h.jpg", "split"].item() == "test" and (out["split"] != more["split"]).sum() == 2
    assert "moved: h.jpg from train to test, so that Ann keeps a test photo" in capsys.readouterr().out
    assert all(data.split_checks(out[out["person"] == "Ann"]).values())


def _copy_people(lfw_images, root, n_people=3, n_images=6):
    for person, files in list(lfw_images.items())[:n_people]:
        (root / person).mkdir(parents=True)
        for f in files[:n_images]:
            shutil.copy(f, root / person / f.name)


def test_duplicates_kept_once_and_never_straddle_splits(tmp_path, lfw_images):
    _copy_people(lfw_images, tmp_path, n_people=3, n_images=10)
    people = sorted(p.name for p in tmp_path.iterdir())
    src = next((tmp_path / people[0]).iterdir())
    shutil.copy(src, tmp_path / people[0] / "copy_of_first.jpg")     # same person: kept once
    shutil.copy(src, tmp_path / people[1] / "mislabelled.jpg")       # other person: kept, same split
    for seed in range(10):
        df = data.split_manifest(data.mark_duplicates(data.scan_folder(tmp_path, progress=False)), seed=seed)
        same = df[df["sha1"] == data.sha1_file(src)]
        assert len(same) == 3
        assert (same["status"] == "duplicate").sum() == 1
        assert "same bytes as" in same.loc[same["status"] == "duplicate", "reason"].iloc[0]
        kept = same[same["status"] == "ok"]
        assert kept["person"].nunique() == 2 and kept["split"].nunique() == 1
        assert all(data.split_checks(df).values())
        cross = data.cross_person_duplicates(df)
        assert len(cross) == 2 and cross["advice"].str.startswith("also filed under ").all()
        assert f"also filed under {people[1]}:" in cross.loc[cross["person"] == people[0], "advice"].iloc[0]


def test_a_photo_filed_under_two_people_leaves_both_a_full_split(tmp_path, lfw_images, capsys):
    """Ben's 4 photos include one of Ann's (same bytes): it follows Ann's split, and Ben still gets 2/1/1."""
    (ann_name, ann), (ben_name, ben) = list(lfw_images.items())[:2]
    for name, files in (("Ann", ann[:10]), ("Ben", ben[:3])):
        (tmp_path / name).mkdir()
        for f in files:
            shutil.copy(f, tmp_path / name / f.name)
    shutil.copy(ann[0], tmp_path / "Ben" / "group.jpg")
    scanned = data.mark_duplicates(data.scan_folder(tmp_path, progress=False))
    moved = 0
    for seed in range(40):
        df = data.split_manifest(scanned, seed=seed)
        said = capsys.readouterr().out
        ben_splits = df.loc[(df["person"] == "Ben") & (df["status"] == "ok"), "split"].value_counts()
        assert ben_splits.get("train", 0) >= data.MIN_TRAIN_PHOTOS and ben_splits.get("val", 0) >= 1 \
            and ben_splits.get("test", 0) >= 1, (seed, ben_splits.to_dict())
        shared = df[df["sha1"] == data.sha1_file(ann[0])]
        assert len(shared) == 2 and shared["split"].nunique() == 1 and (shared["status"] == "ok").all()
        assert all(data.split_checks(df).values()) and "warning" not in said
        moved += "moved:" in said
    assert moved >= 5   # the rule had work to do in several of the seeds


def _save(img, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def test_bad_and_odd_inputs_get_their_status(tmp_path, lfw_images):
    person = tmp_path / "Zoë_Ångström"   # non-ASCII person folder
    face = Image.open(next(iter(lfw_images.values()))[0]).convert("RGB")
    (person).mkdir()
    (person / "empty.jpg").write_bytes(b"")
    (person / "notes.txt").write_text("not a photo")
    (person / "fake.jpg").write_text("<html>this is a web page saved as .jpg</html>")
    _save(face, person / "full.jpg", quality=90)
    (person / "truncated.jpg").write_bytes((person / "full.jpg").read_bytes()[:3000])
    _save(face.convert("L"), person / "grey.png")
    _save(face.convert("RGBA"), person / "rgba.png")
    _save(face.convert("P", palette=Image.ADAPTIVE), person / "palette.gif")
    _save(face.convert("CMYK"), person / "cmyk.jpg")
    grey16 = Image.fromarray(np.asarray(face.convert("L"), dtype=np.uint16) * 257)
    assert grey16.mode == "I;16"
    _save(grey16, person / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise on display
    _save(face.crop((0, 0, 200, 100)), person / "rotated.jpg", exif=exif)
    _save(face.resize((40, 40)), person / "tiny.jpg")
    (person / ".DS_Store").write_bytes(b"\0\0")  # hidden files are skipped silently

    df = data.scan_folder(tmp_path, min_side=64, progress=False)
    df.index = df["path"].str.rsplit("/", n=1).str[-1]
    status = df["status"].to_dict()
    assert status == {"cmyk.jpg": "ok", "empty.jpg": "empty", "fake.jpg": "not_image", "full.jpg": "ok",
                      "grey.png": "ok", "grey16.png": "ok", "notes.txt": "not_image", "palette.gif": "ok",
                      "rgba.png": "ok", "rotated.jpg": "ok", "tiny.jpg": "ok", "truncated.jpg": "corrupt"}
    assert (df["person"] == "Zoë_Ångström").all()
    assert df.loc["tiny.jpg", "tiny"] and "tiny image" in df.loc["tiny.jpg", "reason"]
    assert df.loc["empty.jpg", "reason"].endswith("copy the photo again")
    assert set(df.loc[["grey.png", "grey16.png", "cmyk.jpg", "palette.gif"], "orig_mode"]) == {"L", "I;16", "CMYK", "P"}
    # EXIF orientation is applied: the stored 200x100 picture is shown 100x200
    assert (df.loc["rotated.jpg", "width"], df.loc["rotated.jpg", "height"]) == (100, 200)
    for name in ("grey.png", "grey16.png", "cmyk.jpg", "rgba.png", "palette.gif"):
        img = data.load_image(person / name)
        assert img.mode == "RGB" and img.size == (250, 250), name
    # 16-bit grey keeps its picture (rescaled, not clipped to white)
    assert np.abs(np.asarray(data.load_image(person / "grey16.png"))[..., 0].astype(int)
                  - np.asarray(face.convert("L")).astype(int)).max() <= 1
    for name, status_ in (("truncated.jpg", "corrupt"), ("fake.jpg", "not_image"), ("empty.jpg", "empty")):
        with pytest.raises(data.ImageError, match=name) as err:
            data.load_image(person / name)
        assert err.value.status == status_


def test_own_photos_end_to_end_with_too_few_images(tmp_path, lfw_images, capsys):
    raw = tmp_path / "raw"
    _copy_people(lfw_images, raw, n_people=2, n_images=8)
    (raw / "Jürgen_Ölschläger").mkdir()
    for f in list(lfw_images.values())[3][:2]:
        shutil.copy(f, raw / "Jürgen_Ölschläger" / f.name)
    cfg = config.load("smoke", source=str(raw))
    df = data.build_manifest(cfg, progress=False)
    assert "left out: Jürgen_Ölschläger (2 usable images < 4)" in capsys.readouterr().out
    assert (df.loc[df["person"] == "Jürgen_Ölschläger", "status"] == "too_few").all()
    only_few = tmp_path / "few"
    shutil.copytree(raw / "Jürgen_Ölschläger", only_few / "Jürgen_Ölschläger")     # nobody with 4 photos
    with pytest.raises(ValueError, match="no person .* has 4 or more usable photos .* add photos"):
        data.build_manifest(config.load("smoke", source=str(only_few)), progress=False)
    one = next(p for p in raw.iterdir() if p.name != "Jürgen_Ölschläger")
    shutil.copytree(one, only_few / one.name)                                       # one person with 8 photos
    with pytest.raises(ValueError, match=f"only one person \\({one.name}\\).*at least two people"):
        data.build_manifest(config.load("smoke", source=str(only_few)), progress=False)
    config.load("smoke")
    empty = data.split_table(df.assign(status="too_few")).iloc[0]
    assert (empty["people"], empty["total"], empty["fewest a person"]) == (0, 0, 0)
    ok = df[df["status"] == "ok"]
    assert ok["person"].nunique() == 2 and all(data.split_checks(df).values())
    # paths are stored relative to the checkout and resolve back to the files
    assert all(data.abs_path(p).exists() for p in df["path"])
    out = data.save_manifest(df, tmp_path / "manifest.csv")
    back = data.load_manifest(out)
    pd.testing.assert_frame_equal(back[data.MANIFEST_COLUMNS], df[data.MANIFEST_COLUMNS], check_dtype=False)


def test_face_dataset_over_manifest(lfw62):
    train = data.FaceDataset(lfw62, "train")
    test = data.FaceDataset(lfw62, "test")
    assert len(train) == (lfw62["split"] == "train").sum() and len(train.classes) == 62
    assert train.classes == test.classes
    img, label = test[0]
    assert img.mode == "RGB" and img.size == (250, 250)
    assert test.classes[label] == test.frame["person"].iloc[0]
    assert data.FaceDataset(lfw62, "val", transform=lambda im: im.size)[0][0] == (250, 250)


def test_missing_manifest_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebooks/01"):
        data.load_manifest(tmp_path / "manifest.csv")


def test_video_frames_split_in_time_blocks_photos_shuffled():
    """Frames of a video go to train, val, test in time order (no neighbouring frames across splits)."""
    import pandas as pd

    rows = [dict(path=f"frames/a/clip_{f:04d}.png", person="A", video="raw/A/clip.mp4", frame=f) for f in range(20)]
    rows += [dict(path=f"raw/A/photo_{k}.jpg", person="A", video="", frame=-1) for k in range(6)]
    rows += [dict(path=f"frames/a/talk_{f:04d}.png", person="A", video="raw/A/talk.mov", frame=f) for f in range(0, 40, 4)]
    rows += [dict(path=f"raw/B/{k}.jpg", person="B", video="", frame=-1) for k in range(10)]
    df = pd.DataFrame(rows).assign(status=data.STATUS_OK, reason="")
    df["sha1"] = [f"{i:040x}" for i in range(len(df))]
    out = data.split_manifest(df.sample(frac=1, random_state=0))   # row order must not matter
    for clip in ("raw/A/clip.mp4", "raw/A/talk.mov"):
        frames = out[out["video"] == clip].sort_values("frame")
        order = frames["split"].map({"train": 0, "val": 1, "test": 2}).tolist()
        assert order == sorted(order) and set(order) == {0, 1, 2}, (clip, order)
        n_train, n_val, n_test = data.split_counts(len(frames))
        assert order.count(0) == n_train and order.count(2) == n_test
    photos_b = out[out["person"] == "B"]["split"].value_counts()
    assert photos_b.to_dict() == dict(zip(("train", "val", "test"), data.split_counts(10)))
    assert all(data.split_checks(out).values())


def test_impostors_leave_out_the_gallery_people_however_their_folders_are_spelled(lfw_dir):
    """A student's folder "aaron peirsol" is LFW's Aaron_Peirsol: never a stranger of the open-set test."""
    counts = data.lfw_counts(lfw_dir)
    small = sorted(counts[(counts >= 1) & (counts <= 19)].index)
    gallery = [small[0].replace("_", " ").lower(), small[1].replace("_", "-").upper()]
    assert data.person_key(gallery[0]) == data.person_key(small[0])
    df = data.lfw_impostors(lfw_dir, exclude=gallery, n_people=len(small), min_images=1)   # everyone else
    assert set(df["person"]).isdisjoint(small[:2]) and df["person"].nunique() == len(small) - 2


def test_the_same_photo_saved_twice_is_left_out_of_the_later_split(tmp_path, lfw_images):
    """A photo's PNG or resized copy (other bytes) gets its difference hash; a copy in a later split than its twin is
    left out (``same_photo``, naming the twin), a copy in the same split is kept, and no other photo changes split."""
    from pathlib import Path

    person, files = next(iter(lfw_images.items()))
    folder = tmp_path / "photos" / person
    folder.mkdir(parents=True)
    for f in files[:6]:
        shutil.copy(f, folder / f.name)
    img = data.load_image(files[0])
    img.save(folder / "copy.png")                                           # lossless: the same pixels
    img.resize((500, 500)).save(folder / "big.jpg", quality=80)             # another size and quality
    df = data.scan_folder(tmp_path / "photos", progress=False)
    assert len(set(df["sha1"])) == len(df) == 8                              # all other bytes: no exact duplicates
    name = df["path"].map(lambda p: Path(p).name)
    assert df.loc[name.isin(["copy.png", "big.jpg", files[0].name]), "dhash"].nunique() == 1
    assert df["dhash"].nunique() == 6                                        # the other photos differ
    df["split"] = "train"
    df.loc[name == "copy.png", "split"] = "test"
    df.loc[name == "big.jpg", "split"] = "val"
    out = data.leave_out_split_twins(df)
    left = out[out["status"] == "same_photo"]
    assert sorted(left["path"].map(lambda p: Path(p).name)) == ["big.jpg", "copy.png"]
    assert left["reason"].str.contains(files[0].name).all() and left["reason"].str.contains("delete one copy").all()
    assert (left["split"] == "").all() and left["reason"].str.contains("drawn into (?:val|test)").all()
    rest = out.loc[~out.index.isin(left.index)]
    assert (rest["status"] == "ok").all() and all(data.split_checks(out).values())
    moved = rest[rest["split"] != df.loc[rest.index, "split"]]           # the person's only val and test photos left:
    assert sorted(moved["split"]) == ["test", "val"]                       # two training photos took their places
    assert files[0].name not in set(moved["path"].map(lambda p: Path(p).name))   # never the original of the copies
    df["split"] = "train"
    assert (data.leave_out_split_twins(df)["status"] == "ok").all()          # all in one split: all kept
    df.loc[name == files[0].name, "split"] = "test"                          # the original later: it goes, a copy stays
    out = data.leave_out_split_twins(df)
    assert list(out.loc[out["status"] == "same_photo", "path"].map(lambda p: Path(p).name)) == [files[0].name]


def test_person_names_match_lfw_whatever_the_spelling_of_the_folder():
    """Folder names are matched with LFW's (background people, strangers, verification pairs) without case, accents,
    spaces, underscores or hyphens; other scripts are not transliterated."""
    import pandas as pd

    from nnprak import evaluate

    assert data.person_key("renée  zellweger") == data.person_key("Renee_Zellweger") == "reneezellweger"
    assert data.person_key("Jean-Claude Van Damme") == data.person_key("Jean_Claude_Van_Damme")
    assert data.person_key("张伟") == "张伟" and data.person_key("Anna") != data.person_key("Hanna")
    pairs = pd.DataFrame({"name1": ["Bill_Gates", "Renee_Zellweger", "Tony_Blair"],
                          "name2": ["Bill_Gates", "Tony_Blair", "Colin_Powell"], "fold": [0, 0, 0]})
    kept = evaluate.without_people(pairs, ["bill gates", "Renée Zellweger"])     # a student's folder names
    assert kept[["name1", "name2"]].values.tolist() == [["Tony_Blair", "Colin_Powell"]]


def test_the_processed_readme_names_every_manifest_column():
    """data/processed/README.md describes the manifest students open: every column the code writes."""
    text = (config.ROOT / "data" / "processed" / "README.md").read_text(encoding="utf-8")
    assert [c for c in data.MANIFEST_COLUMNS if c not in text] == []
