"""Embedders (dlib port, FaceNet with a state_dict the test makes), the embedding cache, and `nnprak predict`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnprak import classify, config, data, embed, faces


@pytest.fixture(scope="module")
def crops(tmp_path_factory, lfw_images):
    """A crops table of 3 LFW people x 8 images made by notebook 02's code in a temp folder."""
    tmp = tmp_path_factory.mktemp("crops")
    cfg = config.load("smoke")
    people = {p: files[:8] for p, files in list(lfw_images.items())[:3]}
    manifest = data.split_manifest(data.scan_files(people, progress=False))
    table = faces.crop_manifest(manifest, cfg, progress=False, faces_dir=tmp / "faces", out=False)
    assert (table["face_status"] == "ok").all()
    return table


@pytest.fixture(scope="module")
def dlib_backend():
    return embed.DlibBackend()


class CountingDlib(embed.DlibBackend):
    """The real dlib backend, counting the rows it is asked to embed."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def embed_table(self, table, progress=True):
        self.rows += len(table)
        return super().embed_table(table, progress)


def test_dlib_embeddings_separate_people(crops, dlib_backend):
    X = dlib_backend.embed_table(crops, progress=False)
    assert X.shape == (len(crops), 128) and not np.isnan(X).any()
    y = crops["person"].to_numpy()
    d = np.linalg.norm(X[:, None] - X[None], axis=-1)
    same, diff = d[(y[:, None] == y[None]) & ~np.eye(len(y), dtype=bool)], d[y[:, None] != y[None]]
    assert np.median(same) < 0.6 < np.median(diff)  # dlib's own same-person threshold


def test_rows_without_a_face_are_nan(crops, dlib_backend):
    table = crops.copy()
    table.loc[0, "face_status"] = "no_face"
    X = dlib_backend.embed_table(table.head(3), progress=False)
    assert np.isnan(X[0]).all() and not np.isnan(X[1:]).any()


def test_flipped_descriptors_do_not_change_when_the_photo_is_mirrored(crops, dlib_backend):
    row = crops.iloc[0]
    img = data.load_image(data.abs_path(row["path"]))
    lm = np.asarray(json.loads(row["landmarks"]), dtype=np.float64)
    mirror = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    lm_m = lm.copy()
    lm_m[:, 0] = img.width - 1 - lm[:, 0]
    lm_m = lm_m[[1, 0, 2, 4, 3]]                       # MTCNN order: left eye, right eye, nose, mouth l, r
    plain = embed.DlibBackend(flip=False)
    assert dlib_backend.variant == "dlib-chip-flip" and plain.variant == "dlib-chip"
    a, b = dlib_backend.embed_images([img, mirror], [lm, lm_m])
    p, q = plain.embed_images([img, mirror], [lm, lm_m])
    assert np.linalg.norm(a - b) < 0.5 * np.linalg.norm(p - q)     # averaging with the mirror image
    assert np.linalg.norm(a - b) < 0.1              # tiny next to dlib's same-person threshold 0.6
    assert embed.get_embedder("dlib", "dlib-chip").variant == "dlib-chip"   # older models keep their variant


def test_cache_embeds_only_missing_rows(tmp_path, crops):
    emb = CountingDlib()
    first = embed.cached_embeddings(emb, crops.head(10), tmp_path, progress=False)
    assert emb.rows == 10 and embed.cache_file(tmp_path, emb).exists()
    again = embed.cached_embeddings(emb, crops.head(12), tmp_path, progress=False)
    assert emb.rows == 12  # only the 2 new rows were embedded
    np.testing.assert_array_equal(again[:10], first)
    changed = crops.head(12).copy()
    changed.loc[3, "sha1"] = "0" * 40  # a changed image is embedded again
    embed.cached_embeddings(emb, changed, tmp_path, progress=False)
    assert emb.rows == 13
    lost = changed.copy()
    lost.loc[5, "face_status"] = "no_face"                  # notebook 02 lost this face (other settings) ...
    assert np.isnan(embed.cached_embeddings(emb, lost, tmp_path, progress=False)[5]).all() and emb.rows == 14
    back = embed.cached_embeddings(emb, changed, tmp_path, progress=False)   # ... and found it again: its embedding
    assert emb.rows == 14 and not np.isnan(back[5]).any()                   # (cached under its face) is back
    moved = changed.copy()
    moved.loc[7, "landmarks"] = changed.loc[8, "landmarks"]   # another face chosen in the photo: embedded anew
    embed.cached_embeddings(emb, moved, tmp_path, progress=False)
    assert emb.rows == 15


def test_cache_of_a_crop_reading_embedder_follows_the_crop_files(tmp_path, crops):
    """An embedder that reads notebook 02's crop files (FaceNet) embeds a crop again once it is written anew (e.g. with
    another margin), though the image and its face are unchanged."""
    import os
    import shutil

    rows = crops[crops["crop_plain"] != ""].head(3).copy()
    copies = []
    for i, crop in enumerate(rows["crop_plain"]):
        copies.append(tmp_path / f"c{i}.png")
        shutil.copy(data.abs_path(crop), copies[-1])
    rows["crop_plain"] = [data.rel_path(c) for c in copies]
    emb = CountingDlib()
    emb.crop_column = "crop_plain"
    embed.cached_embeddings(emb, rows, tmp_path / "cache", progress=False)
    embed.cached_embeddings(emb, rows, tmp_path / "cache", progress=False)
    assert emb.rows == 3                                                      # unchanged crops: from the cache
    Image.open(copies[1]).resize((150, 150)).resize((160, 160)).save(copies[1])
    os.utime(copies[1], ns=(copies[1].stat().st_atime_ns, copies[1].stat().st_mtime_ns + 10**9))
    embed.cached_embeddings(emb, rows, tmp_path / "cache", progress=False)
    assert emb.rows == 4                                                      # the re-made crop only


def test_auto_backend_falls_back_to_dlib_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("NNPRAK_OFFLINE", "1")
    emb = embed.get_embedder("auto")
    assert emb.name == "dlib" and "face-pretrained" in emb.weights
    assert "using dlib" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown embedding backend"):
        embed.get_embedder("arcface")


def test_facenet_backend_loads_weights_found_in_torch_home(tmp_path, monkeypatch, crops):
    from facenet_pytorch import InceptionResnetV1

    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("NNPRAK_OFFLINE", "1")
    torch.manual_seed(0)
    state = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631).state_dict()
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / "20180402-114759-vggface2.pt")
    emb = embed.get_embedder("auto", variant="plain")
    assert emb.name == "facenet-vggface2" and "20180402-114759-vggface2.pt" in emb.weights
    X = emb.embed_table(crops.head(4), progress=False)
    assert X.shape == (4, 512)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)  # FaceNet's output is L2-normalised


def test_facenet_crops_new_photos_as_the_gallery_was_cropped(tmp_path, monkeypatch, model_file, lfw_images):
    """A gallery cropped with another margin (cfg.crop_margin) is matched by predict's crops of the same margin."""
    from facenet_pytorch import InceptionResnetV1

    import torch

    from nnprak import predict

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("NNPRAK_OFFLINE", "1")
    torch.manual_seed(0)
    (tmp_path / "checkpoints").mkdir()
    torch.save(InceptionResnetV1(pretrained=None, classify=True, num_classes=8631).state_dict(),
               tmp_path / "checkpoints" / "20180402-114759-vggface2.pt")
    emb = embed.get_embedder("facenet-vggface2", "plain", crop_size=160, crop_margin=40)
    assert emb.describe()["crop_margin"] == 40
    image = data.load_image(list(lfw_images.values())[0][0])
    boxes, _, landmarks = predict.detect_faces(image)
    X = emb.embed_faces(image, boxes[:1], landmarks[:1])
    # a network of random weights: embeddings of other crops differ little, but they differ; the same crop: not at all
    np.testing.assert_array_equal(X, emb.embed_images([faces.crop_box(image, boxes[0], 160, 40)]))
    assert np.abs(X - emb.embed_images([faces.crop_box(image, boxes[0], 160, 14)])).max() > 1e-5
    facenet = classify.FaceClassifier.load(model_file)    # a model whose gallery came from that embedder
    facenet.backend, facenet.info = "facenet-vggface2", emb.describe()
    loaded = predict.load_embedder(facenet)
    assert (loaded.crop_size, loaded.crop_margin) == (160, 40)
    facenet.info = {"variant": "plain"}                   # a model saved before the margin was recorded
    assert predict.load_embedder(facenet).crop_margin == 14


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, crops, dlib_backend):
    X = dlib_backend.embed_table(crops, progress=False)
    fitted = classify.fit_classifier("svm_linear", X, crops["person"].to_numpy())
    path = tmp_path_factory.mktemp("model") / "embed_svm.joblib"
    classify.FaceClassifier(fitted.best_estimator_, 0.0, "dlib", "svm_linear", info={"variant": "dlib-chip"}).save(path)
    return path


def _predict(*args):
    env = dict(os.environ, NNPRAK_PROFILE="smoke")
    return subprocess.run([sys.executable, "-m", "nnprak", "predict", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_predict_names_an_lfw_photo(model_file, lfw_images, tmp_path):
    person, files = list(lfw_images.items())[0]
    out = tmp_path / "annotated.png"
    r = _predict(files[15], "--model", model_file, "--out", out)  # an image the classifier never saw
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"face 1: {person} (confidence")
    assert Image.open(out).size == (250, 250)


def test_unknown_face_names_the_classifiers_guess_and_the_threshold(model_file, lfw_images, tmp_path):
    person, files = list(lfw_images.items())[0]
    strict = classify.FaceClassifier.load(model_file)
    strict.threshold = 1.0                                  # no confidence is above 1: every face is unknown
    strict.save(tmp_path / "strict.joblib")
    r = _predict(files[15], "--model", tmp_path / "strict.joblib")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"face 1: unknown (guess: {person}, confidence ")
    assert "not above the threshold 1.00" in r.stdout


def test_predict_two_faces_side_by_side(model_file, lfw_images, tmp_path):
    (p1, f1), (p2, f2) = list(lfw_images.items())[1:3]
    canvas = Image.new("RGB", (500, 250), "white")
    canvas.paste(Image.open(f1[12]), (0, 0))
    canvas.paste(Image.open(f2[12]), (250, 0))
    canvas.save(tmp_path / "two.jpg")
    r = _predict(tmp_path / "two.jpg", "--model", model_file)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"face 1: {p1} ") and lines[1].startswith(f"face 2: {p2} ")


def test_predict_errors_are_one_line_and_non_zero(model_file, tmp_path):
    Image.new("RGB", (300, 300), (120, 160, 200)).save(tmp_path / "sky.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cases = [((tmp_path / "missing.jpg", "--model", model_file), 2, "does not exist"),
             ((tmp_path / "broken.jpg", "--model", model_file), 2, "broken.jpg"),
             ((tmp_path / "sky.png", "--model", model_file), 1, "no face found"),
             ((tmp_path / "sky.png", "--model", tmp_path / "none.joblib"), 2, "no trained model")]
    for args, code, message in cases:
        r = _predict(*args)
        assert r.returncode == code, (args, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_predict_without_the_models_embedder_weights_says_so_once(model_file, lfw_images, tmp_path):
    """A FaceNet model on a machine without FaceNet's weights: one message naming the weights, exit code 2, for one
    photo and for a folder alike (not a traceback, not a problem blamed on each photo)."""
    facenet = classify.FaceClassifier.load(model_file)
    facenet.backend, facenet.info = "facenet-vggface2", {"variant": "plain"}
    facenet.save(tmp_path / "facenet.joblib")
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in list(lfw_images.values())[0][15:17]:
        (photos / f.name).write_bytes(f.read_bytes())
    env = dict(os.environ, NNPRAK_PROFILE="smoke", NNPRAK_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch"))
    for target in (next(photos.iterdir()), photos):
        r = subprocess.run([sys.executable, "-m", "nnprak", "predict", str(target), "--model",
                            str(tmp_path / "facenet.joblib"), "--sheet", str(tmp_path / "sheet.png")],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") and "20180402-114759-vggface2.pt" in r.stderr, r.stderr
    assert not (tmp_path / "sheet.png").exists()


def test_the_default_contact_sheet_stays_out_of_the_photo_folders(tmp_path, monkeypatch):
    """Run from inside the photo folder, predict writes its sheet to the profile's results, not among the photos."""
    from nnprak.__main__ import default_sheet

    photos = tmp_path / "class photos"
    (photos / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert default_sheet([str(photos)]) == Path("contact_sheet.png")
    for here in (photos, photos / "sub"):
        monkeypatch.chdir(here)
        sheet = default_sheet([".", "other.jpg"] if here == photos else [str(photos)])
        assert sheet.name == "contact_sheet.png" and not sheet.resolve().is_relative_to(photos)
        assert sheet.parent == config.active().paths.results


def test_both_alignments_average_the_mtcnn_and_the_shape_predictor_chips(crops):
    rows = crops.head(3)
    both = embed.DlibBackend(align="both")
    assert both.variant == "dlib-2chip-flip"
    X = {a: embed.DlibBackend(align=a).embed_table(rows, progress=False) for a in ("mtcnn", "dlib5")}
    Xb = both.embed_table(rows, progress=False)
    np.testing.assert_allclose(Xb, (X["mtcnn"] + X["dlib5"]) / 2, atol=1e-5)
    assert not np.allclose(X["mtcnn"], X["dlib5"], atol=1e-3)          # two different alignments
    assert (np.linalg.norm(X["mtcnn"] - X["dlib5"], axis=1) < 0.3).all()   # of the same face
    # predict's path (embed_faces with the detector's arrays) gives the table's descriptor
    row = rows.iloc[0]
    img = data.load_image(data.abs_path(row["path"]))
    box, lm = faces.parse_box(row["box"]), faces.parse_landmarks(row["landmarks"])
    np.testing.assert_allclose(both.embed_faces(img, box[None], lm[None])[0], Xb[0], atol=1e-5)
    # a saved model's variant brings its alignment back (predict); unknown variants take the config's
    assert embed.get_embedder("dlib", "dlib-2chip-flip").align == "both"
    assert embed.get_embedder("dlib", "dlib-sp-chip").align == "dlib5"
    assert not embed.get_embedder("dlib", "dlib-sp-chip").flip
    assert embed.get_embedder("dlib", "plain", dlib_align="both").variant == "dlib-2chip-flip"
    with pytest.raises(ValueError, match="alignment"):
        embed.DlibBackend(align="dlib68")
