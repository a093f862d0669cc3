"""Tests of stage 02 (nnprak.faces) on real LFW images and on images the tests make. No mocks: real MTCNN."""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnprak import config, data, faces

sys.path.insert(0, str(config.ROOT / "bench"))
from make_photo_sets import FACE_BOX  # noqa: E402  the cut of the ``cropped`` photo set

LFW = config.find_lfw(download=False) / config.LFW_IMAGES_SUBDIR
FACE_FILES = {  # people with >= 20 images, first images: one clear face each
    "Colin_Powell": ["Colin_Powell_0001.jpg", "Colin_Powell_0002.jpg", "Colin_Powell_0003.jpg"],
    "Serena_Williams": ["Serena_Williams_0001.jpg", "Serena_Williams_0002.jpg"],
    "Tony_Blair": ["Tony_Blair_0001.jpg", "Tony_Blair_0002.jpg", "Tony_Blair_0003.jpg"],
}


def make_cfg(tmp: Path, **overrides) -> config.Config:
    """Return the smoke config with every output folder inside ``tmp``."""
    cfg = config.load("smoke")
    paths = replace(cfg.paths, interim=tmp / "interim", processed=tmp / "processed", models=tmp / "models",
                    results=tmp / "results", figures=tmp / "figures", tables=tmp / "tables",
                    notebooks_out=tmp / "notebooks")
    return replace(cfg, paths=paths, **overrides)


def lfw_files(n: int | None = None) -> dict[str, list[Path]]:
    """Return ``{person: [LFW files]}`` of :data:`FACE_FILES` (the first ``n`` files overall)."""
    items = [(p, LFW / p / f) for p, fs in FACE_FILES.items() for f in fs][:n]
    out: dict[str, list[Path]] = {}
    for p, f in items:
        out.setdefault(p, []).append(f)
    return out


def manifest_of(people: dict[str, list[Path]]) -> pd.DataFrame:
    """Return manifest rows (validated by stage 01's code) for ``{person: files}``, all in split train."""
    df = data.scan_files(people, progress=False)
    df.loc[df["status"] == "ok", "split"] = "train"
    return df


def collage(left: Image.Image, right: Image.Image, canvas=(760, 320), left_x=120, right_x=470,
            right_scale=1.0) -> Image.Image:
    """Return a grey canvas with two face images pasted side by side (the right one optionally scaled)."""
    img = Image.new("RGB", canvas, (127, 127, 127))
    if right_scale != 1.0:
        right = right.resize((round(right.width * right_scale), round(right.height * right_scale)))
    img.paste(left, (left_x, (canvas[1] - left.height) // 2))
    img.paste(right, (right_x, (canvas[1] - right.height) // 2))
    return img


def face_only(path: Path) -> Image.Image:
    """Return the central part of an LFW image (the subject's face, no background faces)."""
    return data.load_image(path).crop((55, 50, 195, 200))


# ----------------------------------------------------------------------------------------------------------
# Small functions
# ----------------------------------------------------------------------------------------------------------
def test_select_face_rules():
    boxes = np.array([[10, 10, 60, 60],      # small, top-left, most probable
                      [80, 80, 120, 120],    # small, at the centre
                      [120, 20, 200, 100]])  # large, off-centre
    probs = np.array([0.999, 0.95, 0.98])
    size = (200, 200)
    assert faces.select_face(boxes, probs, size, "central") == 1
    assert faces.select_face(boxes, probs, size, "largest") == 2
    assert faces.select_face(boxes, probs, size, "probable") == 0
    # faces below min_prob do not compete while another one reaches it
    assert faces.select_face(boxes, probs, size, "central", min_prob=0.97) == 2
    # ... but when none reaches it, the rule still picks one (reported as low_confidence by the stage)
    assert faces.select_face(boxes, probs, size, "central", min_prob=0.9999) == 1
    assert faces.select_face(np.zeros((0, 4)), np.zeros(0), size, "central") == -1
    with pytest.raises(ValueError, match="central"):
        faces.select_face(boxes, probs, size, "biggest")


def test_crop_box_matches_facenet_extract_face():
    from facenet_pytorch import extract_face

    img = data.load_image(LFW / "Colin_Powell" / "Colin_Powell_0001.jpg")
    for box in ([70.3, 60.8, 180.2, 190.6], [-5.0, 3.0, 120.0, 140.0], [150.0, 140.0, 262.0, 255.0]):
        ours = np.asarray(faces.crop_box(img, box, 160, 14), dtype=np.float32)
        theirs = extract_face(img, np.array(box), image_size=160, margin=14).permute(1, 2, 0).numpy()
        assert ours.shape == (160, 160, 3)
        np.testing.assert_array_equal(ours, theirs)


def test_similarity_transform_recovers_a_similarity():
    src = faces.template(112)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    m = faces.similarity_transform(src, dst)
    np.testing.assert_allclose(m, np.hstack([scale * rot, shift[:, None]]), atol=1e-9)
    np.testing.assert_allclose(faces.template(160), faces.ARCFACE_TEMPLATE_112 * 160 / 112)


def test_align_face_puts_landmarks_on_the_template():
    img = data.load_image(LFW / "Tony_Blair" / "Tony_Blair_0002.jpg")
    mtcnn = faces.make_detector()
    (boxes, probs, points), = faces.detect([img], mtcnn)
    i = faces.select_face(boxes, probs, img.size)
    aligned = faces.align_face(img, points[i], 160)
    assert aligned.size == (160, 160) and aligned.mode == "RGB"
    # MTCNN run again on the aligned crop finds the landmarks near the template
    (b2, p2, pts2), = faces.detect([aligned], faces.make_detector(min_face_size=40))
    j = faces.select_face(b2, p2, aligned.size)
    assert j >= 0
    err = np.linalg.norm(pts2[j] - faces.template(160), axis=1)
    assert err.mean() < 5.0, err


def test_crop_column_names_the_variants():
    assert [faces.crop_column(v) for v in faces.VARIANTS] == ["crop_plain", "crop_aligned"]
    assert set(faces.crop_column(v) for v in faces.VARIANTS) <= set(faces.FACE_COLUMNS)
    assert faces.crop_column(config.load("default").scratch["crop"]) in faces.FACE_COLUMNS
    with pytest.raises(ValueError, match="unknown crop variant"):
        faces.crop_column("tight")


def test_crop_names_stay_unique_within_a_person():
    """Photos whose crop names clash (another suffix, a nested folder of the person's name) get one file each."""
    paths = ["p/Anna/a.jpeg", "p/Anna/a.jpg", "p/Anna/Anna/a.jpg", "p/Anna/a_jpg.png", "p/Ben/a.jpg"]
    names = faces._unique_names(pd.DataFrame({"path": paths, "person": ["Anna"] * 4 + ["Ben"]}))
    assert len(set(names[:4])) == 4 and names[0] == "a.png" and names[4] == "a.png"


def test_crop_name_and_paths(tmp_path):
    assert faces.crop_name("../shared/lfw/Tony_Blair/Tony_Blair_0001.jpg", "Tony_Blair") == "Tony_Blair_0001.png"
    assert faces.crop_name("data/raw/Ana/holiday/img 1.JPG", "Ana") == "holiday/img 1.png"
    p = faces.crop_paths(tmp_path, "Ana", "holiday/img 1.png")
    assert p["plain"] == tmp_path / "plain" / "Ana" / "holiday" / "img 1.png"
    assert p["aligned"] == tmp_path / "aligned" / "Ana" / "holiday" / "img 1.png"
    assert p["detections"] == tmp_path / "detections" / "Ana" / "holiday" / "img 1.json"


def test_detect_falls_back_to_single_images_when_a_batch_call_fails():
    # facenet-pytorch raises on a batch of unequal sizes: the batch helper must answer per image instead.
    a = data.load_image(LFW / "Colin_Powell" / "Colin_Powell_0001.jpg")
    b = Image.new("RGB", (200, 180), (90, 90, 90))
    mtcnn = faces.make_detector()
    stats: dict = {}
    dets = faces._detect_batch(mtcnn, [a, b], stats)
    assert stats["batch_fallbacks"] == 1
    assert len(dets[0][0]) >= 1 and len(dets[1][0]) == 0
    single, = faces.detect([a], mtcnn)
    np.testing.assert_allclose(dets[0][0], single[0], atol=0.05)


def _face_only_crops(n_people: int = 4, per_person: int = 5) -> list[Image.Image]:
    """Return LFW faces cut to their face box (forehead and chin at the edge), grey, 92 x 112 px: a set of photos
    that are already face crops."""
    counts = data.lfw_counts(config.find_lfw(download=False))
    people = sorted(counts[(counts >= 10) & (counts < 20)].index)[:n_people]
    return [Image.open(f).convert("L").crop(FACE_BOX).resize((92, 112), Image.BILINEAR).convert("RGB")
            for p in people for f in data.lfw_files(config.find_lfw(download=False), p, per_person)]


def test_aligned_fill_is_the_black_share_of_the_aligned_crop():
    img = data.load_image(LFW / "Tony_Blair" / "Tony_Blair_0002.jpg")
    (boxes, probs, points), = faces.detect([img], faces.make_detector())
    lm = points[faces.select_face(boxes, probs, img.size)]
    box = np.concatenate([lm.min(0) - 8, lm.max(0) + 8]).round().astype(int)   # a cut tighter than the face
    tight, tight_lm = img.crop(tuple(box)), lm - box[:2]
    for photo, marks in ((img, lm), (tight, tight_lm)):
        black = (np.asarray(faces.align_face(photo, marks, 112)).max(axis=2) == 0).mean()
        assert faces.aligned_fill(marks, photo.size) == pytest.approx(black, abs=0.03)
    assert faces.aligned_fill(lm, img.size) < 0.01 < config.ALIGNED_MAX_FILL < faces.aligned_fill(tight_lm, tight.size)
    table = pd.DataFrame({"face_status": ["ok", "ok", "ok", "no_face"], "landmarks": [json.dumps(lm.tolist())] * 2 +
                          [json.dumps(tight_lm.tolist()), ""], "width": [250, 250, tight.width, 250],
                          "height": [250, 250, tight.height, 250]})
    assert faces.median_aligned_fill(table) == pytest.approx(faces.aligned_fill(lm, img.size))   # 2 of 3 faces
    assert faces.median_aligned_fill(table.iloc[1:]) > config.ALIGNED_MAX_FILL
    assert faces.median_aligned_fill(table.iloc[3:]) == 0.0


def test_photos_that_are_already_face_crops_are_found_with_a_border():
    images = _face_only_crops()
    without = faces.detect_with_retry(images, faces.DetectorSettings(pad_retry=None), min_prob=0.9)
    stats: dict = {}
    with_border = faces.detect_with_retry(images, faces.DetectorSettings(), stats=stats, min_prob=0.9)
    found_without = [bool((d[0][1] >= 0.9).any()) for d in without]
    found_with = [bool((d[0][1] >= 0.9).any()) for d in with_border]
    assert sum(found_with) >= sum(found_without) + 5 and sum(found_with) >= 0.8 * len(images)
    assert stats["padded"] == len(images) - sum(found_without)     # only faceless images get the third pass
    for (det, _, problem), img, before in zip(with_border, images, without):
        if not any(before[0][1] >= 0.9):
            continue
        np.testing.assert_array_equal(det[0], before[0][0])          # a face found before is kept as it was
    for (boxes, probs, points), _, _ in with_border:
        if len(probs) and probs.max() >= 0.9:
            eyes = points[probs.argmax()][:2]   # in the photo's own pixels (the cut is tight: an eye may be at the edge)
            assert (eyes[:, 0] > -0.1 * 92).all() and (eyes[:, 0] < 1.1 * 92).all()
            assert (eyes[:, 1] > 0).all() and (eyes[:, 1] < 112 / 2).all()  # the upper half
            assert eyes[0, 0] + 30 < eyes[1, 0]                      # the left eye well left of the right one


def test_a_border_moves_no_face():
    # Faces MTCNN finds either way: the padded pass returns them where the plain pass does (the border taken off).
    images = [Image.open(f).convert("RGB").crop((60, 50, 190, 200)) for fs in lfw_files(6).values() for f in fs]
    plain = faces.detect(images, faces.make_detector(faces.DEFAULT_RETRY_MIN_FACE_SIZE))
    padded = faces._detect_padded(images, list(range(len(images))), faces.DetectorSettings(), 32, None)
    shifts = [np.abs(a[2][a[1].argmax()] - b[0][2][b[0][1].argmax()]).max() for a, b in zip(plain, padded)]
    assert len(shifts) == 6 and np.median(shifts) < 4, shifts
    img, px = faces.pad_image(images[0], 0.15)
    assert px == round(0.15 * 150) and img.size == (130 + 2 * px, 150 + 2 * px)
    assert img.getpixel((0, 0)) == (128, 128, 128) and img.getpixel((px, px)) == images[0].getpixel((0, 0))


def test_collage_rules_pick_the_documented_face():
    powell = face_only(LFW / "Colin_Powell" / "Colin_Powell_0001.jpg")
    serena = face_only(LFW / "Serena_Williams" / "Serena_Williams_0001.jpg")
    mtcnn = faces.make_detector()
    # Powell's face is nearer the canvas centre (x = 380): central picks him
    img = collage(powell, serena, left_x=250, right_x=560)
    (boxes, probs, _), = faces.detect([img], mtcnn)
    assert len(boxes) == 2, boxes
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    powell_i, serena_i = int(np.argmin(cx)), int(np.argmax(cx))
    assert faces.select_face(boxes, probs, img.size, "central") == powell_i
    assert faces.select_face(boxes, probs, img.size, "probable") == int(np.argmax(probs))
    # Serena scaled up 1.6x: largest picks her, central still picks Powell
    img = collage(powell, serena, canvas=(800, 340), left_x=250, right_x=500, right_scale=1.6)
    (boxes, probs, _), = faces.detect([img], mtcnn)
    assert len(boxes) == 2, boxes
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    powell_i, serena_i = int(np.argmin(cx)), int(np.argmax(cx))
    assert faces.select_face(boxes, probs, img.size, "largest") == serena_i
    assert faces.select_face(boxes, probs, img.size, "central") == powell_i


# ----------------------------------------------------------------------------------------------------------
# The stage on a mixed folder: faces, a blank image, grayscale, a corrupt file, a row the manifest excluded
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mixed")
    photos = tmp / "photos"
    people = {p: list(fs) for p, fs in lfw_files(5).items()}
    (photos / "Nobody").mkdir(parents=True)
    Image.new("RGB", (250, 250), (128, 128, 128)).save(photos / "Nobody" / "blank.png")  # same size as LFW
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (250, 250, 3), dtype=np.uint8)).save(photos / "Nobody" / "noise.png")
    people["Nobody"] = [photos / "Nobody" / "blank.png", photos / "Nobody" / "noise.png"]
    (photos / "Tony_Blair").mkdir()
    gray = photos / "Tony_Blair" / "gray.jpg"
    Image.open(LFW / "Tony_Blair" / "Tony_Blair_0001.jpg").convert("L").save(gray)
    broken_later = photos / "Tony_Blair" / "broken_later.jpg"
    shutil.copy(LFW / "Tony_Blair" / "Tony_Blair_0003.jpg", broken_later)
    broken_before = photos / "Tony_Blair" / "broken_before.jpg"
    broken_before.write_bytes((LFW / "Tony_Blair" / "Tony_Blair_0002.jpg").read_bytes()[:3000])
    people["Tony_Blair"] = [gray, broken_later, broken_before]
    manifest = manifest_of(people)
    # the file got corrupted after stage 01 validated it: the manifest still says ok
    broken_later.write_bytes(broken_later.read_bytes()[:3000])
    cfg = make_cfg(tmp, detect_batch_size=16)
    stats: dict = {}
    table = faces.crop_manifest(manifest, cfg, progress=False, stats=stats)
    return dict(cfg=cfg, manifest=manifest, table=table, stats=stats, tmp=tmp)


def _row(table, name):
    rows = table[table["path"].str.endswith(name)]
    assert len(rows) == 1, name
    return rows.iloc[0]


def test_statuses_of_a_mixed_folder(mixed):
    t = mixed["table"]
    assert len(t) == len(mixed["manifest"])
    for person, files in lfw_files(5).items():
        for f in files:
            r = _row(t, f.name)
            assert r["face_status"] == "ok" and r["prob"] >= 0.9 and r["n_faces"] >= 1, r
    assert _row(t, "blank.png")["face_status"] == "no_face"
    assert _row(t, "noise.png")["face_status"] == "no_face"
    assert _row(t, "gray.jpg")["face_status"] == "ok"
    r = _row(t, "broken_later.jpg")
    assert r["face_status"] == "unreadable" and "corrupt" in r["face_reason"]
    r = _row(t, "broken_before.jpg")
    assert r["face_status"] == "skipped" and "corrupt" in r["face_reason"]
    # the stage keeps the manifest's columns as they were
    pd.testing.assert_frame_equal(t[data.MANIFEST_COLUMNS], mixed["manifest"][data.MANIFEST_COLUMNS])
    # the seven 250x250 images (5 LFW, blank, noise) and the gray one share one MTCNN call: a batch that
    # mixes faces and no faces did not crash; the two face-less ones are detected again, together, at the retry size,
    # and once more, together, with a grey border (still no face)
    assert mixed["stats"]["detector_calls"] == 3 and mixed["stats"]["retried"] == 2 and mixed["stats"]["padded"] == 2
    assert mixed["stats"]["detected"] == 8 and mixed["stats"]["unreadable"] == 1
    assert _row(t, "blank.png")["min_face_size"] == faces.DEFAULT_RETRY_MIN_FACE_SIZE
    assert _row(t, "gray.jpg")["min_face_size"] == mixed["cfg"].min_face_size


def test_face_columns_and_crop_files(mixed):
    t, cfg = mixed["table"], mixed["cfg"]
    assert list(t.columns) == data.MANIFEST_COLUMNS + faces.FACE_COLUMNS
    ok = t[t["face_status"] == "ok"]
    bad = t[t["face_status"] != "ok"]
    assert (bad["crop_plain"] == "").all() and (bad["crop_aligned"] == "").all()
    assert (bad["face_index"] == -1).all() and bad["prob"].isna().all()
    for _, r in ok.iterrows():
        assert len(json.loads(r["box"])) == 4
        assert np.asarray(json.loads(r["landmarks"])).shape == (5, 2)
        assert 0 <= r["face_index"] < r["n_faces"]
        for v in faces.VARIANTS:
            p = data.abs_path(r[f"crop_{v}"])
            assert p.suffix == ".png" and p.is_relative_to(cfg.paths.faces / v / r["person"])
            with Image.open(p) as im:
                assert im.format == "PNG" and im.size == (cfg.crop_size, cfg.crop_size) and im.mode == "RGB"
    # the grayscale input gives an RGB crop
    assert data.abs_path(_row(t, "gray.jpg")["crop_plain"]).exists()
    # no temporary files are left behind
    assert not [p for p in cfg.paths.faces.rglob("*") if ".tmp" in p.name]


def test_table_file_and_dataset(mixed):
    t, cfg = mixed["table"], mixed["cfg"]
    assert cfg.paths.crops.exists() and not cfg.paths.manifest.exists()
    back = faces.load_crops(cfg.paths.crops)
    pd.testing.assert_frame_equal(back[faces.FACE_COLUMNS], t[faces.FACE_COLUMNS], check_dtype=False)
    ds = data.FaceDataset(back, path_column="crop_plain")
    assert len(ds) == int((t["face_status"] == "ok").sum())
    img, label = ds[0]
    assert img.size == (cfg.crop_size, cfg.crop_size)


def test_crops_of_an_older_manifest_are_refused(mixed, tmp_path):
    """crops.csv beside a manifest.csv that notebook 01 re-made since: notebooks 03-05 are told to re-run notebook 02."""
    import shutil

    crops = tmp_path / "crops.csv"
    shutil.copy(mixed["cfg"].paths.crops, crops)
    data.save_manifest(mixed["manifest"], tmp_path / "manifest.csv")
    assert len(faces.load_crops(crops)) == len(mixed["table"])                # cropped from this manifest
    resplit = data.split_manifest(mixed["manifest"], seed=config.SEED + 1)
    assert data.dataset_id(resplit) != data.dataset_id(mixed["manifest"])
    data.save_manifest(resplit, tmp_path / "manifest.csv")
    with pytest.raises(ValueError, match=r"crops\.csv was cropped from another manifest.*Run notebook 02 again"):
        faces.load_crops(crops)


def test_failures_and_summary(mixed):
    t = mixed["table"]
    fails = faces.failures(t)
    assert sorted(fails["path"].map(lambda p: Path(p).name)) == ["blank.png", "broken_before.jpg",
                                                                 "broken_later.jpg", "noise.png"]
    assert (fails["face_reason"] != "").all()
    s = faces.summary(t)
    assert list(s.index) == list(faces.FACE_STATUSES)
    assert s["ok"] == 6 and s["no_face"] == 2 and s["unreadable"] == 1 and s["skipped"] == 1


def test_people_without_a_training_face_are_left_out_with_a_message(mixed):
    t = mixed["table"].copy()
    blair = t.index[(t["person"] == "Tony_Blair") & (t["face_status"] == "ok")]       # gray.jpg: his one face
    t.loc[blair, "split"] = "test"                                                     # ... now a test photo
    t.loc[t["path"].str.endswith("broken_later.jpg"), "split"] = "train"               # his training photo: unreadable
    before = t.copy()
    out, messages = faces.leave_out_faceless_people(t)
    pd.testing.assert_frame_equal(t, before)                                          # the table passed in is kept
    assert list(messages) == ["Nobody", "Tony_Blair"]                                  # no face at all / none in train
    assert "Tony_Blair (0 of the 1 training photo(s) with a face, fewer than 2; faces in 1 of 2 photos)" in messages[
        "Tony_Blair"]
    assert "add photos" in messages["Nobody"] and "faces in 0 of 2 photos" in messages["Nobody"]
    assert (out.loc[blair, "face_status"] == faces.NO_TRAINING_FACE).all() and out.loc[blair, "face_reason"].str.len().all()
    assert (out.loc[blair, ["crop_plain", "crop_aligned"]] == "").all(axis=None)      # no dataset reads them
    kept = sorted(set(out["person"]) - faces.left_out_people(out))
    assert len(data.FaceDataset(out, "test", path_column="crop_aligned", classes=kept)) == 0   # no KeyError either
    changed = (out["face_status"] != before["face_status"])
    assert changed.sum() == len(blair)                                                 # everyone else untouched
    assert faces.summary(out)[faces.NO_TRAINING_FACE] == len(blair) and faces.NO_TRAINING_FACE in faces.FACE_STATUSES
    # as cropped (all in train): Serena Williams has her 2 faces; Tony Blair 1 (gray.jpg; broken_later is unreadable)
    _, as_cropped = faces.leave_out_faceless_people(mixed["table"])
    assert list(as_cropped) == ["Nobody", "Tony_Blair"] and "1 of the 2 training photo(s) with a face" in as_cropped[
        "Tony_Blair"]
    assert faces.left_out_people(out) == {"Nobody", "Tony_Blair"} and faces.left_out_people(before) == {"Nobody"}


def test_photos_without_a_face_count_as_errors_for_the_people_models_know(mixed):
    t = mixed["table"].copy()
    t["split"] = np.where(t["status"] == "ok", "test", "")          # every usable photo a test photo
    rows = faces.faceless_predictions(t)
    # Tony Blair is known (gray.jpg has a face): his unreadable photo is an error; Nobody has no face at all: left out
    assert rows["path"].map(lambda p: Path(p).name).tolist() == ["broken_later.jpg"]
    assert rows[["true", "pred", "score", "crop"]].values.tolist() == [["Tony_Blair", "no_face", 0.0, ""]]
    assert faces.faceless_predictions(t, split="train").empty


def test_run_summary_names_what_was_left_out(mixed, tmp_path):
    """``nnprak run`` ends with what notebooks 01 and 02 left out, so a student watching the terminal sees it."""
    from nnprak.__main__ import data_summary

    cfg = make_cfg(tmp_path)
    cfg.paths.make()
    assert data_summary(cfg) == [f"executed notebooks: {data.rel_path(cfg.paths.notebooks_out)}/ | results: "
                                 f"{data.rel_path(cfg.paths.results)}/"]          # nothing run yet: nothing left out
    data.save_manifest(mixed["manifest"], cfg.paths.manifest)
    data.save_manifest(faces.leave_out_faceless_people(mixed["table"])[0], cfg.paths.crops)
    lines = data_summary(cfg)
    assert lines[0] == "left out by notebook 01 (its table says why and what to do): 1 corrupt"
    assert lines[1] == "images without a usable face (notebook 02 lists them): 2 no_face, 1 unreadable"
    assert lines[2] == "people left out by notebook 02 (fewer than 2 training photos with a face): Nobody, Tony_Blair"
    assert len(lines) == 4


def test_figures(mixed):
    import matplotlib.pyplot as plt

    t = mixed["table"]
    imgs = [data.load_image(data.abs_path(p)) for p in t["path"].iloc[:2]]
    figs = [faces.plot_detections(imgs, faces.detect(imgs)), faces.plot_crop_grid(t, 4),
            faces.plot_crop_grid(t, 4, variant="aligned"), faces.plot_prob_hist(t, 0.9), faces.plot_failures(t),
            faces.plot_variants(t, 2)]
    for fig in figs:
        assert isinstance(fig, matplotlib.figure.Figure)
        fig.savefig(mixed["tmp"] / "fig.png")
        plt.close(fig)


def test_unknown_rule_is_refused(tmp_path):
    with pytest.raises(ValueError, match="face_select"):
        faces.crop_manifest(manifest_of(lfw_files(1)), make_cfg(tmp_path, face_select="middle"), progress=False)


# ----------------------------------------------------------------------------------------------------------
# Resuming
# ----------------------------------------------------------------------------------------------------------
def _normalised(table: pd.DataFrame, faces_dir: Path) -> pd.DataFrame:
    t = table.copy()
    for col in ("crop_plain", "crop_aligned"):
        t[col] = [Path(data.abs_path(p)).relative_to(faces_dir).as_posix() if p else "" for p in t[col]]
    return t


def _assert_same_table(a: pd.DataFrame, b: pd.DataFrame):
    exact = [c for c in a.columns if c not in ("prob", "box", "landmarks")]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    np.testing.assert_allclose(a["prob"], b["prob"], rtol=1e-5)
    for col in ("box", "landmarks"):
        for x, y in zip(a[col], b[col]):
            assert (x == "") == (y == "")
            if x:
                np.testing.assert_allclose(json.loads(x), json.loads(y), atol=0.05)


class Interrupt(RuntimeError):
    pass


def test_a_photo_replaced_under_its_name_is_detected_again_even_with_its_old_date(tmp_path):
    """``mv b.jpg a.jpg`` (or ``cp -p``, an unpacked archive) keeps b's old date: the saved detection of the old a.jpg
    must not be reused for it; the manifest's sha1 tells them apart."""
    a, b = LFW / "Tony_Blair" / "Tony_Blair_0001.jpg", LFW / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    photo = tmp_path / "photos" / "Tony_Blair" / "a.jpg"
    photo.parent.mkdir(parents=True)
    shutil.copy(a, photo)
    cfg = make_cfg(tmp_path)
    first = faces.crop_manifest(manifest_of({"Tony_Blair": [photo]}), cfg, progress=False)
    old = os.stat(photo).st_mtime - 3600
    shutil.copy(b, photo)
    os.utime(photo, (old, old))                                       # the new bytes carry an old date
    stats: dict = {}
    second = faces.crop_manifest(manifest_of({"Tony_Blair": [photo]}), cfg, progress=False, stats=stats)
    assert stats.get("detected") == 1 and not stats.get("reused")
    fresh = faces.crop_manifest(manifest_of({"Tony_Blair": [photo]}), make_cfg(tmp_path / "fresh"), progress=False)
    assert second["box"].iloc[0] == fresh["box"].iloc[0] != first["box"].iloc[0]
    again: dict = {}
    faces.crop_manifest(manifest_of({"Tony_Blair": [photo]}), cfg, progress=False, stats=again)
    assert again.get("reused") == 1 and not again.get("detected")    # unchanged bytes: reused as before


def test_parallel_detection_equals_one_batch_at_a_time(tmp_path):
    """Two batches detected at once (one torch thread each) give the same table and crop files as one at a time."""
    people = lfw_files()
    manifest = manifest_of(people)
    one_cfg = make_cfg(tmp_path / "one", detect_batch_size=2, detect_workers=1)
    two_cfg = make_cfg(tmp_path / "two", detect_batch_size=2, detect_workers=2)
    assert faces.detection_workers(make_cfg(tmp_path, threads=2), "cpu") == 2
    assert faces.detection_workers(make_cfg(tmp_path, threads=2), "cuda") == 1
    seen = []
    one = faces.crop_manifest(manifest, one_cfg, progress=False)
    two = faces.crop_manifest(manifest, two_cfg, progress=False, on_batch=seen.append)
    assert two.attrs["stats"]["workers"] == 2 and seen == list(range(2, len(manifest), 2)) + [len(manifest)]
    assert two.attrs["stats"]["detected"] == len(manifest) and two.attrs["stats"]["detector_calls"] >= 4
    pd.testing.assert_frame_equal(_normalised(two, two_cfg.paths.faces), _normalised(one, one_cfg.paths.faces))
    for rel in one["crop_aligned"]:
        a = data.abs_path(rel)
        b = two_cfg.paths.faces / a.relative_to(one_cfg.paths.faces)
        assert a.read_bytes() == b.read_bytes()
    import torch
    assert torch.get_num_threads() == one_cfg.threads   # the notebook continues with the profile's threads

    def stop(done):
        raise Interrupt(done)

    with pytest.raises(Interrupt):   # an interrupt lets the batches already running finish, starts no other
        faces.crop_manifest(manifest, replace(two_cfg, paths=replace(two_cfg.paths, interim=tmp_path / "cut")),
                            progress=False, on_batch=stop)
    assert len(list((tmp_path / "cut" / "faces" / "plain").rglob("*.png"))) in (2, 4)


@pytest.mark.slow
def test_interrupted_run_resumes_and_equals_a_full_run(tmp_path):
    photos = tmp_path / "photos"  # own copies, so the test can make a source newer than its crops
    people = {}
    for person, files in lfw_files().items():
        (photos / person).mkdir(parents=True)
        people[person] = [Path(shutil.copy2(f, photos / person / f.name)) for f in files]
    manifest = manifest_of(people)
    n = len(manifest)

    full_cfg = make_cfg(tmp_path / "full", detect_batch_size=3)
    full = faces.crop_manifest(manifest, full_cfg, progress=False)
    assert full.attrs["stats"]["detected"] == n

    cfg = make_cfg(tmp_path / "resumed", detect_batch_size=3, detect_workers=1)   # one batch at a time

    def stop_after_first_batch(done):
        raise Interrupt(done)

    with pytest.raises(Interrupt):
        faces.crop_manifest(manifest, cfg, progress=False, on_batch=stop_after_first_batch)
    assert not cfg.paths.crops.exists()  # the table is only written by a finished run
    assert len(list((cfg.paths.faces / "plain").rglob("*.png"))) == 3

    stats: dict = {}
    resumed = faces.crop_manifest(manifest, cfg, progress=False, stats=stats)
    assert stats["detected"] == n - 3 and stats["reused"] == 3 and stats["cropped"] == n - 3
    _assert_same_table(_normalised(resumed, cfg.paths.faces), _normalised(full, full_cfg.paths.faces))

    # a run over finished work does nothing but read the sidecars
    again = faces.crop_manifest(manifest, cfg, progress=False)
    assert again.attrs["stats"]["detected"] == 0 and again.attrs["stats"]["cropped"] == 0
    pd.testing.assert_frame_equal(again, resumed)

    # deleted crops are written again from the stored detections, without detecting
    ok = resumed[resumed["face_status"] == "ok"]
    for p in ok["crop_plain"].iloc[:2]:
        data.abs_path(p).unlink()
    data.abs_path(ok["crop_aligned"].iloc[2]).unlink()
    after = faces.crop_manifest(manifest, cfg, progress=False)
    assert after.attrs["stats"]["detected"] == 0 and after.attrs["stats"]["cropped"] == 3
    pd.testing.assert_frame_equal(after, resumed)

    # a photo replaced after its crops were made is detected again (outputs made older than the photo)
    src = data.abs_path(manifest["path"].iloc[0])
    older = src.stat().st_mtime - 10
    for p in faces.crop_paths(cfg.paths.faces, manifest["person"].iloc[0], src.with_suffix(".png").name).values():
        os.utime(p, (older, older))
    after = faces.crop_manifest(manifest, cfg, progress=False)
    assert after.attrs["stats"]["detected"] == 1 and after.attrs["stats"]["cropped"] == 1

    # another selection rule re-crops from the sidecars without detecting again
    after = faces.crop_manifest(manifest, replace(cfg, face_select="largest"), progress=False)
    assert after.attrs["stats"]["detected"] == 0 and after.attrs["stats"]["cropped"] == n
    assert (after["face_status"] == "ok").all()


@pytest.mark.slow
def test_bench_crop_runs(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_crop", config.ROOT / "bench" / "bench_crop.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--n", "2"])
    assert result["n"] == 2 and result["pipeline_ok"] == 2 and result["loop_found"] == 2
    assert "speed-up" in capsys.readouterr().out


def test_detection_batches_are_cut_by_pixels_as_well():
    """Small images make batches of detect_batch_size; huge photos fewer per batch (their decoded originals are
    kept for cropping), so 32 phone photos never sit in memory at once."""
    lfw = {i: 250 * 250 for i in range(70)}
    assert [len(c) for c in faces._chunks(list(lfw), 32, lfw)] == [32, 32, 6]
    huge = {i: 6000 * 4000 for i in range(7)}
    chunks = faces._chunks(list(huge), 32, huge)
    assert [len(c) for c in chunks] == [2, 2, 2, 1] and sum(chunks, []) == list(huge)
    assert all(sum(huge[i] for i in c) <= faces.MAX_CHUNK_PIXELS for c in chunks)
