"""dlib's face ResNet in PyTorch: the same descriptors as dlib on real LFW faces, clear errors for bad files."""
from __future__ import annotations

import shutil

import dlib
import numpy as np
import pytest
import torch
from PIL import Image

from nnprak.models import dlib_resnet as D
from nnprak.utils import sha1_file

N_FACES = 50


@pytest.fixture(scope="module")
def model():
    """dlib's network with dlib's weights (converted once, then from the user cache)."""
    return D.load_dlib_resnet()


@pytest.fixture(scope="module")
def faces(lfw_dir, model):
    """(images, dlib 5-point shapes, dlib chips) of N_FACES LFW people, spread over the alphabet."""
    img_dir = lfw_dir / "lfw-deepfunneled"
    people = sorted(p for p in img_dir.iterdir() if p.is_dir())
    emb = D.DlibEmbedder(model=model, upsample=0)   # upsample 0: fast, and LFW faces are large enough
    images, shapes, chips = [], [], []
    for person in people[::40]:
        img = np.asarray(Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB"))
        shape = emb.detect_shape(img)
        if shape is not None:
            images.append(img)
            shapes.append(shape)
            chips.append(D.chip_from_dlib_shape(img, shape))
        if len(chips) == N_FACES:
            break
    assert len(chips) == N_FACES
    return images, shapes, np.stack(chips)


@pytest.fixture(scope="module")
def descriptors(model, faces):
    """(PyTorch port, dlib's compute_face_descriptor) descriptors of the same chips."""
    chips = faces[2]
    ours = D.DlibEmbedder(model=model).embed_chips(chips)             # the fused inference copy, batched
    with torch.no_grad():                                               # the faithful module, NCHW input
        plain = model(torch.from_numpy(chips).permute(0, 3, 1, 2).contiguous()).numpy()
    facerec = dlib.face_recognition_model_v1(str(D.default_dat_path()))
    theirs = np.array([np.array(facerec.compute_face_descriptor(c)) for c in chips], dtype=np.float32)
    return ours, theirs, plain


@pytest.mark.slow
def test_descriptors_match_dlib(descriptors):
    ours, theirs, plain = descriptors
    assert ours.shape == theirs.shape == plain.shape == (N_FACES, 128)
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.abs(plain - theirs).max() <= 1e-4
    # dlib's net does not L2-normalise: the port must not either
    norms = np.linalg.norm(ours, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-2)


@pytest.mark.slow
def test_same_different_decisions_identical_at_dlib_threshold(descriptors):
    ours, theirs, _ = descriptors
    iu = np.triu_indices(N_FACES, 1)

    def same(x):
        return (np.linalg.norm(x[:, None] - x[None], axis=2) < D.SAME_PERSON_DISTANCE)[iu]

    assert (same(ours) == same(theirs)).all()
    # the same LFW image of different people must mostly be "different" (a sanity check of the decisions)
    assert same(ours).mean() < 0.05


def test_chip_from_points_is_dlibs_get_face_chip(faces):
    images, shapes, chips = faces
    for img, shape, chip in list(zip(images, shapes, chips))[:5]:
        mine = D.chip_from_points(img, D.shape_points(shape), D.DLIB_TEMPLATE)
        assert mine.shape == (150, 150, 3) and mine.dtype == np.uint8
        assert np.array_equal(mine, chip)


def test_mtcnn_template_maps_onto_dlib_chip(faces):
    """MTCNN template points placed where dlib's chip transform puts them give back (nearly) dlib's chip."""
    images, shapes, chips = faces
    chip_tpl = D.template_points(D.DLIB_TEMPLATE)
    for img, shape, chip in list(zip(images, shapes, chips))[:5]:
        chip_to_img = D.similarity_transform(chip_tpl, D.shape_points(shape))
        mtcnn_pts = D.apply_transform(chip_to_img, D.template_points(D.MTCNN_TEMPLATE))
        mine = D.chip_from_mtcnn_points(img, mtcnn_pts)
        assert np.abs(mine.astype(float) - chip.astype(float)).mean() < 3.0
    # left/right and top/bottom order of the template: eyes above nose above mouth, left before right
    t = D.MTCNN_TEMPLATE
    assert t[0, 0] < t[2, 0] < t[1, 0] and t[3, 0] < t[4, 0]
    assert max(t[0, 1], t[1, 1]) < t[2, 1] < min(t[3, 1], t[4, 1])


@pytest.mark.slow
def test_flip_and_jitter_average_descriptors(model, faces):
    emb = D.DlibEmbedder(model=model)
    chips = faces[2][:1]
    plain = emb.embed_chips(chips)
    mirrored = emb.embed_chips(np.ascontiguousarray(chips[:, :, ::-1]))
    assert np.allclose(emb.embed_chips(chips, flip=True), (plain + mirrored) / 2, atol=1e-5)
    jit = D.jitter_chip(chips[0], 4, np.random.default_rng(1))
    assert jit.shape == (4, 150, 150, 3) and jit.dtype == np.uint8
    a, b = emb.embed_chips(chips, jitter=3, seed=3), emb.embed_chips(chips, jitter=3, seed=3)
    assert np.array_equal(a, b)                                         # seeded: reproducible
    assert (np.linalg.norm(a - plain, axis=1) < 0.3).all()              # a small perturbation of the face
    with pytest.raises(ValueError, match="RGB chips"):
        emb.embed_chips(chips.astype(np.float32))


def test_parsed_file_is_dlibs_network():
    net = D.read_dlib_dat(D.default_dat_path())
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("fc") == 1
    assert net.loss["name"] == "loss_metric_2"
    assert net.loss["distance_threshold"] == pytest.approx(0.6)
    assert net.input["mean"] == pytest.approx(D.DLIB_INPUT_MEAN, abs=1e-4)
    assert (net.input["nr"], net.input["nc"]) == (150, 150)
    state = D.dlib_state_dict(net)
    ref = D.DlibFaceResNet().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in ref.items()}


def test_add_prev_zero_pads_like_dlib():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    out = D.add_prev(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, :3, :3].eq(11).all() and out[0, 0, 3, :].eq(10).all()
    assert out[0, 1, :3, :3].eq(1).all() and out[0, 1, 3, :].eq(0).all()


# --- bad files ---------------------------------------------------------------------------------------------

def _copy_prefix(tmp_path, n_bytes: int, name: str):
    src = D.default_dat_path()
    dst = tmp_path / name
    with open(src, "rb") as f:
        dst.write_bytes(f.read(n_bytes))
    return dst


@pytest.mark.parametrize("n_bytes", [0, 30, 2_000, 11_000_000])
def test_truncated_dat_raises_clear_error(tmp_path, n_bytes):
    bad = _copy_prefix(tmp_path, n_bytes, f"truncated_{n_bytes}.dat")
    with pytest.raises(D.DlibModelError, match=bad.name) as err:
        D.read_dlib_dat(bad)
    assert "end of file" in str(err.value)
    with pytest.raises(D.DlibModelError, match=bad.name):
        D.load_dlib_resnet(bad, cache=False)


def test_garbage_dat_raises_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    for i, payload in enumerate([rng.bytes(50_000), b"hello, this is not a dlib model\n" * 100,
                                 b"\x01\x01\x01\x0dloss_metric_3" + bytes(100)]):
        bad = tmp_path / f"garbage_{i}.dat"
        bad.write_bytes(payload)
        with pytest.raises(D.DlibModelError, match=bad.name):
            D.read_dlib_dat(bad)


def test_wrong_shape_raises_clear_error(tmp_path):
    """The first convolution's num_filters field patched from 32 to 64: a shape error, not a crash later."""
    data = bytearray(D.default_dat_path().read_bytes())
    at = data.index(b"\x05con_4") + 6
    # params tensor: version (01 02), num_samples 4736 (02 80 12), k, nr, nc (01 01 each), 4736 floats
    assert data[at:at + 11] == bytes.fromhex("0102028012010101010101")
    nf = at + 11 + 4736 * 4
    assert data[nf:nf + 2] == bytes.fromhex("0120")
    data[nf + 1] = 0x40
    bad = tmp_path / "wrong_shape.dat"
    bad.write_bytes(bytes(data))
    with pytest.raises(D.DlibModelError, match="wrong_shape.dat.*convolution settings"):
        D.read_dlib_dat(bad)
    data.extend(b"\x00")                       # and trailing bytes after a valid file are reported too
    data[nf + 1] = 0x20
    bad.write_bytes(bytes(data))
    with pytest.raises(D.DlibModelError, match="unexpected bytes after the last layer"):
        D.read_dlib_dat(bad)


def test_converted_weights_are_cached_by_sha1(tmp_path, monkeypatch):
    monkeypatch.setenv("NNPRAK_CACHE", str(tmp_path / "cache"))
    dat = tmp_path / "model.dat"
    shutil.copy(D.default_dat_path(), dat)
    state = D.load_dlib_state_dict(dat)
    cached = tmp_path / "cache" / "dlib" / f"{sha1_file(dat)}.pt"
    assert cached.is_file()
    blob = torch.load(cached, weights_only=True)
    assert torch.equal(blob["state_dict"]["fc.weight"], state["fc.weight"])
    # the next load comes from the cache: a marker written into the cached weights shows up
    blob["state_dict"]["fc.weight"][0, 0] = 12345.0
    torch.save(blob, cached)
    assert D.load_dlib_resnet(dat).fc.weight[0, 0].item() == 12345.0
    # a damaged cache file is rebuilt from the .dat
    cached.write_bytes(b"not a torch file")
    assert torch.equal(D.load_dlib_resnet(dat).fc.weight, state["fc.weight"])
    assert torch.load(cached, weights_only=True)["sha1"] == sha1_file(dat)
