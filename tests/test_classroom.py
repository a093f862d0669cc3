"""The class demo on real LFW photos: a gallery model as notebook 05 saves it, then `python -m nnprak predict` on a
folder (named / unknown, one contact sheet), bad photos, `--top-k` and `python -m nnprak enroll`.

A small version of "20 gallery photos -> >= 19 named, 20 strangers -> >= 19 unknown": 4 gallery people, their
unseen photos and strangers from the impostor test split (people the threshold never saw).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from nnprak import classify, data, embed, predict

pytestmark = pytest.mark.slow


def _cli(*args):
    env = dict(os.environ, NNPRAK_PROFILE="smoke")
    return subprocess.run([sys.executable, "-m", "nnprak", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def classroom(tmp_path_factory, lfw_dir, lfw_images):
    """4 gallery people (10 training photos each), a saved open-set model, 8 unseen gallery photos, 8 strangers."""
    people = sorted(lfw_images)
    gallery, newcomer = people[:4], people[4]
    embedder = embed.DlibBackend()
    X_train, used, problems = predict.embed_photos([f for p in gallery for f in lfw_images[p][:10]], None, embedder)
    assert not problems, problems
    y_train = np.array([p for p in gallery for _ in range(10)], dtype=object)
    X_val, _, _ = predict.embed_photos([f for p in gallery for f in lfw_images[p][10:12]], None, embedder)
    y_val = np.array([p for p in gallery for _ in range(2)], dtype=object)
    imp = data.lfw_impostors(lfw_dir, exclude=people, faces_per_split=16, min_images=1, images_per_person=1)
    imp_val = [data.abs_path(p) for p in imp.loc[imp["split"] == "val", "path"]]
    strangers = [data.abs_path(p) for p in imp.loc[imp["split"] == "test", "path"]][:8]
    X_imp_val, _, _ = predict.embed_photos(imp_val, None, embedder)
    known = [lfw_images[p][k] for p in gallery for k in (14, 15)]
    X_known, _, _ = predict.embed_photos(known, None, embedder)
    X_strange, _, _ = predict.embed_photos(strangers, None, embedder)
    search = classify.fit_classifier("svm_linear", X_train, y_train)
    fc, ev = classify.open_set_model(search, "svm_linear", X_train, y_train, X_val, y_val, X_imp_val, X_known,
                                     np.array([p for p in gallery for _ in range(2)], dtype=object), X_strange,
                                     embedder.name, info=embedder.describe(), far=0.1)  # the smoke profile's target
    folder = tmp_path_factory.mktemp("classroom")
    model = fc.save(folder / "predict.joblib")
    photos = folder / "photos"
    photos.mkdir()
    truth = {}
    for i, f in enumerate(known):
        name = f"known{i:02d}.jpg"
        shutil.copy(f, photos / name)
        truth[name] = f.parent.name
    for i, f in enumerate(strangers):
        name = f"stranger{i:02d}.jpg"
        shutil.copy(f, photos / name)
        truth[name] = classify.UNKNOWN
    return dict(model=model, photos=photos, truth=truth, folder=folder, newcomer=newcomer,
                newcomer_photos=lfw_images[newcomer], strangers=strangers, fc=fc)


def _faces(stdout: str) -> dict[str, list[str]]:
    """photo file name -> the names printed for its faces (left to right; LFW photos may show people behind)."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if ": face " in line and " (" in line:
            photo, rest = line.split(": face ", 1)
            out.setdefault(os.path.basename(photo), []).append(rest.split(": ", 1)[1].split(" (", 1)[0])
    return out


def test_known_faces_named_and_strangers_unknown_with_a_contact_sheet(classroom):
    sheet = classroom["folder"] / "sheet.png"
    r = _cli("predict", classroom["photos"], "--model", classroom["model"], "--sheet", sheet)
    assert r.returncode == 0, r.stderr
    got = _faces(r.stdout)
    truth = classroom["truth"]
    assert set(got) == set(truth)
    known = [n for n in truth if truth[n] != classify.UNKNOWN]
    named = sum(truth[n] in got[n] for n in known)                        # the person is named on their photo
    rejected = sum(set(got[n]) == {classify.UNKNOWN} for n in truth if truth[n] == classify.UNKNOWN)  # nobody named
    assert named >= len(known) - 1, f"{named}/{len(known)} gallery photos named: {got}"
    assert rejected >= len(truth) - len(known) - 1, f"{rejected} strangers unknown: {got}"
    assert "contact sheet:" in r.stdout
    png, pdf = sheet, sheet.with_suffix(".pdf")
    assert Image.open(png).size[0] > 800 and pdf.read_bytes().startswith(b"%PDF")


def test_bad_photos_give_one_line_each_and_the_rest_still_works(classroom, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(classroom["photos"] / "known00.jpg", folder / "good.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(300))
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a photo")
    Image.new("RGB", (300, 300), "white").save(folder / "wall.png")
    r = _cli("predict", folder, tmp_path / "missing.jpg", "--model", classroom["model"], "--sheet",
             tmp_path / "s.png")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.strip().splitlines()
    for name in ("corrupt.jpg", "empty.png", "notes.txt", "wall.png", "missing.jpg"):
        assert sum(name in line for line in lines) == 1, (name, r.stderr)
    assert any("wall.png" in line and "no face" in line for line in lines)
    assert "good.jpg: face 1: " in r.stdout
    import re
    summary = r.stdout.strip().splitlines()[-1]
    faces = int(re.match(r"5 photos, (\d+) faces? \(", summary).group(1))
    assert summary.startswith(f"5 photos, {faces} face{'' if faces == 1 else 's'} (") and "4 without a usable face" in summary
    assert (tmp_path / "s.png").exists() and (tmp_path / "s.pdf").exists()


def test_missing_model_is_one_line(classroom, tmp_path):
    r = _cli("predict", classroom["photos"] / "known00.jpg", "--model", tmp_path / "none.joblib")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "run notebooks/05" in r.stderr


def test_enroll_then_named_with_top_k(classroom, tmp_path):
    new = classroom["newcomer"]
    photos = classroom["newcomer_photos"]
    out = tmp_path / "enrolled.joblib"
    before = classify.FaceClassifier.load(classroom["model"])
    r = _cli("predict", photos[10], "--model", classroom["model"])
    assert r.returncode == 0 and r.stdout.startswith("face 1: unknown"), r.stdout  # not in the gallery yet
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    r = _cli("enroll", new, *photos[:4], tmp_path / "bad.jpg", "--model", classroom["model"], "--out", out)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "bad.jpg" in r.stderr
    assert f"enrolled {new} from 4 of 5 photos" in r.stdout
    after = classify.FaceClassifier.load(out)
    assert after.threshold == before.threshold and new in after.people and len(after.people) == 5
    r = _cli("predict", photos[10], "--model", out, "--top-k", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"face 1: {new} (confidence"), r.stdout
    sep = " | guess, then others by confidence: "
    assert r.stdout.count(sep) == 1
    cands = [c.rsplit(" ", 1) for c in r.stdout.split(sep)[1].strip().split(", ")]
    assert len(cands) == 3 and cands[0][0] == new                      # the classifier's guess first ...
    assert float(cands[1][1]) >= float(cands[2][1])                    # ... then the others by confidence
    r = _cli("predict", classroom["strangers"][0], "--model", out)
    assert r.stdout.startswith("face 1: unknown")  # strangers stay out
    r = _cli("enroll", new, tmp_path / "bad.jpg", "--model", out)
    assert r.returncode == 2 and "nothing enrolled" in r.stderr


def test_contact_sheet_draws_cjk_names(classroom, tmp_path):
    """Names from any script render on the sheet and the annotated photo (matplotlib with nnprak.plots' fonts)."""
    photo = classroom["photos"] / "known00.jpg"
    image = data.load_image(photo)
    face = predict.FacePrediction((70, 60, 170, 180), "王小明", 0.91, 0.99, "王小明", 0.5)
    res = [predict.PhotoResult(photo, [face], "", image), predict.PhotoResult(tmp_path / "x.jpg", [], "x.jpg: no face")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = predict.contact_sheet(res, tmp_path / "cjk.png")
        annotated = predict.annotate(image, [face])
    assert not [w for w in caught if "missing from font" in str(w.message)], [str(w.message) for w in caught]
    assert [p.suffix for p in written] == [".png", ".pdf"] and annotated.size == image.size
    # the label is drawn: green pixels of the named face's box appear in the annotated photo
    arr = np.asarray(annotated).astype(int)
    assert ((arr[..., 1] > 140) & (arr[..., 0] < 80) & (arr[..., 2] < 80)).sum() > 50


def test_collect_photos_names_the_subfolders_it_does_not_read(tmp_path):
    """``predict FOLDER`` on a folder of person folders says how to name them instead of reading nothing silently."""
    photos = tmp_path / "class"
    (photos / "张伟").mkdir(parents=True)
    (photos / "Ada").mkdir()
    (photos / "group.jpg").write_bytes(b"not read here")
    (photos / ".DS_Store").write_bytes(b"")
    found, problems = predict.collect_photos([photos, tmp_path / "missing"])
    assert found == [photos / "group.jpg"]                                   # hidden files skipped
    assert len(problems) == 2 and "2 subfolder(s) (Ada, 张伟) are not read" in problems[0]
    assert str(photos / "Ada") in problems[0] and problems[1].endswith("does not exist")
    found, problems = predict.collect_photos([photos / "Ada"])
    assert found == [] and problems == [f"{photos / 'Ada'}: no files in this folder"]


def test_contact_sheet_cuts_a_long_reason_to_its_photos_square(tmp_path):
    """A bad photo's reason is wrapped and cut to the lines that fit its square: it never runs over the file name."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTTextLine

    long = "notes.jpg: not_image (an HTML/XML/SVG file (a saved web page?), not a photo); " + data.BAD_STATUSES["not_image"]
    res = [predict.PhotoResult(tmp_path / "notes.jpg", [], long)]
    pdf = [p for p in predict.contact_sheet(res, tmp_path / "sheet.png") if p.suffix == ".pdf"][0]
    lines = []

    def walk(item):
        if isinstance(item, LTTextLine):
            lines.append((item.get_text().strip(), item.y0, item.y1))
        elif hasattr(item, "__iter__"):
            for child in item:
                walk(child)
    for page in extract_pages(str(pdf)):
        walk(page)
    title = [ln for ln in lines if ln[0] == "notes.jpg"]
    reason = [ln for ln in lines if ln[0] != "notes.jpg"]
    assert len(title) == 1 and 2 <= len(reason) < 10 and reason[-1][0].endswith("…")   # cut, with a mark
    assert max(y1 for _, _, y1 in reason) <= title[0][1]                               # all below the file name
    assert "".join(t for t, _, _ in reason).startswith("not_image")
