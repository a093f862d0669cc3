"""Tests of the shared training loop (nnprak.train) on real LFW images (the smoke profile's 5 people)."""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from nnprak import config, data, train
from nnprak.models.scratch import ScratchResNet

SIZE = 32


@pytest.fixture(scope="module")
def lfw5():
    """Cached 32 px stand-in crops of the smoke profile's 5 LFW people: {split: CachedDataset}."""
    torch.set_num_threads(2)
    manifest = data.build_manifest(config.load("smoke"), progress=False)
    return train.cached_splits(manifest, SIZE)  # crop="auto": the stand-in centre crop of LFW originals


def _tiny(num_classes=5, seed=0):
    torch.manual_seed(seed)
    return ScratchResNet(num_classes, widths=(8, 16, 16, 32), blocks=(1, 1, 1, 1), in_size=SIZE, dropout=0.1)


def _states_equal(a, b) -> bool:
    """Compare nested state dicts (tensors exactly)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
    return a == b


# ----------------------------------------------------------------------------------------------------------
def test_transforms_on_pil_and_cached_tensor(lfw5):
    img = data.load_image(lfw5["train"].paths[0])
    t_train, t_eval = train.train_transforms(SIZE), train.eval_transforms(SIZE)
    for src in (img, lfw5["train"].images[0]):
        x = t_train(src)
        assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
    a, b = t_eval(lfw5["train"].images[0]), t_eval(lfw5["train"].images[0])
    assert torch.equal(a, b) and abs(float(a.mean())) < 3
    torch.manual_seed(0)
    outs = [t_train(lfw5["train"].images[0]) for _ in range(3)]
    assert not torch.equal(outs[0], outs[1]) or not torch.equal(outs[1], outs[2])  # it is random


def test_cached_digest_follows_the_pixels_not_the_paths(lfw5):
    """CachedDataset.digest: equal for the same pixels (any view), different after one pixel or label changes."""
    ds = lfw5["val"]
    same = train.CachedDataset(torch.utils.data.TensorDataset(ds.images.clone(), torch.tensor(ds.targets)), SIZE)
    same.classes = ds.classes
    assert same.digest() == ds.digest() == ds.with_transform(train.eval_transforms(SIZE)).digest()
    same.images[0, 0, 0, 0] ^= 1                                   # a re-made crop: same path, other pixels
    assert same.digest() != ds.digest()
    same.images[0, 0, 0, 0] ^= 1
    same.targets[0] = (same.targets[0] + 1) % len(ds.classes)
    assert same.digest() != ds.digest()


def test_fast_augmentation_geometry(lfw5):
    """Without crop, rotation and jitter, FaceAugment gives the evaluation image or its mirror image, exactly."""
    img = lfw5["train"].images[5]
    plain = train.eval_transforms(SIZE)(img)
    aug = train.train_transforms(SIZE, scale=(1, 1), ratio=(1, 1), rotation=0, jitter=0, flip=True)
    torch.manual_seed(1)
    outs = [aug(img) for _ in range(12)]
    mirrored = [torch.allclose(o, torch.flip(plain, dims=[2]), atol=1e-5) for o in outs]
    same = [torch.allclose(o, plain, atol=1e-5) for o in outs]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)
    # the torchvision reference pipeline gives tensors of the same kind
    ref = train.train_transforms(SIZE, fast=False)(img)
    assert ref.shape == outs[0].shape and ref.dtype == outs[0].dtype


def test_batched_augmentation_equals_image_by_image(lfw5):
    """A loader over a CachedDataset augments whole batches (FaceAugment.batch via __getitems__) and gives the same
    batches, bit for bit, as the transform applied image by image; a transform without ``batch`` runs per image."""
    ds = lfw5["train"].with_transform(train.train_transforms(SIZE))

    class OneByOne(torch.utils.data.Dataset):   # the same items without __getitems__
        targets = ds.targets

        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return ds[i]

    batches = {}
    for name, view in (("batched", ds), ("one by one", OneByOne())):
        loader = train.make_loaders(view, batch_size=16, balanced=0.5, seed=7)[0]
        torch.manual_seed(3)
        batches[name] = [(x, y) for x, y in loader] + [(x, y) for x, y in loader]   # two epochs
    assert len(batches["batched"]) == len(batches["one by one"]) >= 4
    for (xa, ya), (xb, yb) in zip(batches["batched"], batches["one by one"]):
        assert xa.shape == (16, 3, SIZE, SIZE) and torch.equal(ya, yb) and torch.equal(xa, xb)
    assert not torch.equal(batches["batched"][0][0], batches["batched"][len(batches["batched"]) // 2][0])
    # an evaluation transform has no batch method: items are transformed one by one, as before
    view = lfw5["val"].with_transform(train.eval_transforms(SIZE))
    items = view.__getitems__([2, 0])
    assert torch.equal(items[0][0], view[2][0]) and items[1][1] == view.targets[0]
    # at 224 px too (a larger reduction than at 32 px), and for indices handed over as a tensor
    big = train.FaceAugment(224)
    imgs = torch.nn.functional.interpolate(lfw5["train"].images[:3].float(), size=(224, 224)).round().to(torch.uint8)
    torch.manual_seed(4)
    alone = [big(img) for img in imgs]
    torch.manual_seed(4)
    assert all(torch.equal(a, b) for a, b in zip(alone, big.batch(imgs)))
    torch.manual_seed(4)
    items = ds.__getitems__(torch.tensor([3, 1]))
    torch.manual_seed(4)
    assert torch.equal(items[0][0], ds[3][0]) and items[1][1] == ds.targets[1]
    # PIL images of another size go through the same warp as before (resized first)
    img = data.load_image(lfw5["train"].paths[0])
    torch.manual_seed(5)
    one = train.FaceAugment(SIZE)(img)
    torch.manual_seed(5)
    assert torch.equal(one, train.FaceAugment(SIZE).batch(train.FaceAugment(SIZE)._to_float(img)[None])[0])


def test_cached_dataset_matches_the_files(lfw5):
    ds = lfw5["train"]
    face = data.FaceDataset(data.build_manifest(config.load("smoke"), progress=False), "train")
    assert len(ds) == len(face) and ds.targets == face.targets and ds.classes == face.classes
    assert ds.crop == train.LFW_STAND_IN_CROP and lfw5["test"].classes == face.classes
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(face), 3, SIZE, SIZE)
    img = data.load_image(face.paths[3])
    o = (img.width - train.LFW_STAND_IN_CROP) // 2
    ref = img.crop((o, o, o + train.LFW_STAND_IN_CROP, o + train.LFW_STAND_IN_CROP)).resize(
        (SIZE, SIZE), Image.BILINEAR, reducing_gap=None)
    assert np.array_equal(ds.images[3].permute(1, 2, 0).numpy(), np.asarray(ref))
    view = ds.with_transform(train.eval_transforms(SIZE))
    assert view.images is ds.images and view[3][0].dtype == torch.float32 and ds[3][0].dtype == torch.uint8


def test_cached_splits_keeps_own_photos_whole(tmp_path):
    """Only LFW originals get the stand-in centre crop; an own photo is resized whole."""
    arr = np.zeros((60, 90, 3), dtype=np.uint8)
    arr[:, :45] = 255                                   # left half white, right half black
    (tmp_path / "Me").mkdir()
    Image.fromarray(arr).save(tmp_path / "Me" / "a.png")
    df = pd.DataFrame([dict(path=str(tmp_path / "Me" / "a.png"), person="Me", split="train", status="ok")])
    cached = train.cached_splits(df, 16, splits=("train",))["train"]
    assert cached.crop is None and cached.images.shape == (1, 3, 16, 16) and cached.classes == ["Me"]
    assert int(cached.images[0, :, :, 0].min()) == 255 and int(cached.images[0, :, :, -1].max()) == 0


def test_balanced_sampling_evens_out_classes():
    labels = torch.tensor([0] * 90 + [1] * 10)
    ds = TensorDataset(torch.zeros(100, 1), labels)
    ds.targets = labels.tolist()
    counts = {}
    for balanced in (True, False):
        loader = train.make_loaders(ds, batch_size=10, balanced=balanced)[0]
        train.seed_epoch(1, 0, loader)
        seen = torch.cat([y for _ in range(20) for _, y in loader])
        counts[balanced] = float((seen == 1).float().mean())
    assert 0.4 < counts[True] < 0.6          # rare class drawn about half of the time
    assert abs(counts[False] - 0.1) < 1e-6   # a shuffle keeps the natural 10 %


def test_training_steps_on_a_real_batch_lower_the_loss(lfw5):
    ds = lfw5["train"].with_transform(train.eval_transforms(SIZE))
    x = torch.stack([ds[i][0] for i in range(0, len(ds), 4)])
    y = torch.tensor([ds[i][1] for i in range(0, len(ds), 4)])
    model = _tiny()
    opt = train.make_optimizer(model, "sgd", lr=0.1, weight_decay=0)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(12):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[1] < losses[0] and losses[-1] < 0.75 * losses[0], losses


def _loaders(lfw5, batch_size=16):
    train_ds = lfw5["train"].with_transform(train.train_transforms(SIZE))
    val_ds = lfw5["val"].with_transform(train.eval_transforms(SIZE))
    return train.make_loaders(train_ds, val_ds, batch_size=batch_size, seed=0)[:2]


def _run(lfw5, epochs, total_epochs, path, resume, model_seed=0):
    model = _tiny(seed=model_seed)
    tl, vl = _loaders(lfw5)
    opt = train.make_optimizer(model, "sgd", lr=0.05, weight_decay=5e-4)
    sched = train.make_scheduler(opt, "onecycle", epochs=total_epochs, steps_per_epoch=len(tl))
    hist = train.fit(model, tl, vl, epochs=epochs, optimizer=opt, scheduler=sched, checkpoint_path=path,
                     resume=resume, progress=False, seed=7, device="cpu", extra={"classes": ["a", "b"]})
    return model, opt, sched, hist


@pytest.mark.slow
def test_fit_resume_equals_uninterrupted_run(lfw5, tmp_path):
    # uninterrupted 3 epochs
    model_a, opt_a, _, hist_a = _run(lfw5, 3, 3, tmp_path / "a.pt", resume=False)
    ckpt_a = train.load_checkpoint(tmp_path / "a.pt")
    assert list(hist_a.columns[:7]) == train.HISTORY_COLUMNS and list(hist_a["epoch"]) == [1, 2, 3]
    assert (hist_a["seconds"] > 0).all() and hist_a["lr"].notna().all()
    # the same run interrupted after 2 epochs: identical first two epochs (deterministic for a seed)
    model_b, opt_b, _, hist_b = _run(lfw5, 2, 3, tmp_path / "b.pt", resume=False)
    cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    pd.testing.assert_frame_equal(hist_b[cols], hist_a[cols].iloc[:2])
    ckpt_b = train.load_checkpoint(tmp_path / "b.pt")
    assert ckpt_b["epoch"] == 2 and ckpt_b["extra"] == {"classes": ["a", "b"]}
    # a new model (other random init) resumed from it: epoch 2, same weights and optimiser state, no training
    model_c, opt_c, sched_c, hist_c = _run(lfw5, 2, 3, tmp_path / "b.pt", resume=True, model_seed=123)
    pd.testing.assert_frame_equal(hist_c, hist_b)
    assert _states_equal(model_c.state_dict(), model_b.state_dict())
    assert _states_equal(opt_c.state_dict(), opt_b.state_dict())
    assert sched_c.last_epoch == ckpt_b["scheduler"]["last_epoch"] > 0
    # continued to 3 epochs: equals the uninterrupted run
    model_d, opt_d, _, hist_d = _run(lfw5, 3, 3, tmp_path / "b.pt", resume=True, model_seed=321)
    pd.testing.assert_frame_equal(hist_d[cols], hist_a[cols])
    ckpt_d = train.load_checkpoint(tmp_path / "b.pt")
    assert _states_equal(ckpt_d["model"], ckpt_a["model"])
    assert _states_equal(ckpt_d["optimizer"], ckpt_a["optimizer"])
    assert _states_equal(model_d.state_dict(), model_a.state_dict())
    # the model ends with its best epoch's weights
    best = int(hist_a["val_acc"].idxmax())  # first maximum; ties broken by val_loss inside fit
    assert ckpt_a["best_epoch"] == hist_a.attrs["best_epoch"]
    assert math.isclose(hist_a["val_acc"].iloc[best], ckpt_a["best_val_acc"])
    fresh = _tiny(seed=9)
    train.load_checkpoint(tmp_path / "a.pt", fresh, which="best")
    assert _states_equal(fresh.state_dict(), model_a.state_dict())
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_resume_from_another_networks_checkpoint_says_what_to_do(lfw5, tmp_path):
    """A checkpoint of another architecture (e.g. written before an update) stops resuming with a clear message."""
    path = tmp_path / "old.pt"
    _run(lfw5, 1, 1, path, resume=False)
    before = path.read_bytes()
    other = ScratchResNet(5, widths=(8, 16, 16, 32), blocks=(1, 1, 1, 1), in_size=SIZE, preact=True)
    tl, vl = _loaders(lfw5)
    opt = train.make_optimizer(other, "sgd", lr=0.05)
    with pytest.raises(ValueError, match=r"old\.pt holds the weights of another network.*resume=False"):
        train.fit(other, tl, vl, epochs=2, optimizer=opt, checkpoint_path=path, resume=True, progress=False,
                  device="cpu")
    assert path.read_bytes() == before                    # the file is left as it was


def test_resume_on_other_training_data_is_refused(lfw5, tmp_path):
    """A checkpoint trained on other photos (notebook 01 re-split, a photo added) is not continued on these."""
    path = tmp_path / "ckpt.pt"
    _run(lfw5, 1, 2, path, resume=False)
    before = path.read_bytes()
    fewer = torch.utils.data.Subset(lfw5["train"].with_transform(train.train_transforms(SIZE)),
                                    range(len(lfw5["train"]) - 1))                 # one training photo less
    model = _tiny()
    opt = train.make_optimizer(model, "sgd", lr=0.05)
    tl = train.make_loaders(fewer, batch_size=16, seed=0)[0]
    with pytest.raises(ValueError, match=r"ckpt\.pt was trained on other training data.*RESUME = False"):
        train.fit(model, tl, None, epochs=2, optimizer=opt, checkpoint_path=path, resume=True, progress=False,
                  device="cpu")
    assert path.read_bytes() == before
    _run(lfw5, 2, 2, path, resume=True)                      # the same data resumes
    assert train.load_checkpoint(path)["epoch"] == 2


class _Linear(nn.Module):
    """A model without batch norm: with lr 0 its validation accuracy can never change."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_early_stopping_and_time_budget(lfw5, tmp_path):
    tl, vl = _loaders(lfw5, batch_size=32)
    model = _Linear(3 * SIZE * SIZE, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    hist = train.fit(model, tl, vl, epochs=10, optimizer=opt, patience=2, progress=False, device="cpu",
                     checkpoint_path=tmp_path / "es.pt")
    assert len(hist) == 3 and hist.attrs["stopped"] == "early_stopping" and hist.attrs["best_epoch"] == 1
    # resuming an early-stopped run trains no further
    again = train.fit(model, tl, vl, epochs=10, optimizer=opt, patience=2, progress=False, device="cpu",
                      checkpoint_path=tmp_path / "es.pt", resume=True)
    assert len(again) == 3 and again.attrs["stopped"] == "early_stopping"
    # a spent time budget stops after the first epoch
    model = _Linear(3 * SIZE * SIZE, 5)
    hist = train.fit(model, tl, vl, epochs=10, max_minutes=0, progress=False,
                     optimizer=torch.optim.SGD(model.parameters(), lr=0.01), device="cpu")
    assert len(hist) == 1 and hist.attrs["stopped"] == "time_budget"


@pytest.mark.parametrize("kind", ["onecycle", "cosine"])
def test_a_shortened_schedule_is_the_shorter_schedule(kind):
    def rates(total, shorten_to=None):
        opt = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=0.01)
        sched = train.make_scheduler(opt, kind, epochs=total, steps_per_epoch=10)
        if shorten_to is not None:
            assert train.shorten_schedule(sched, shorten_to * 10)
        out = []
        for _ in range((shorten_to or total) * 10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return np.array(out)

    np.testing.assert_allclose(rates(30, shorten_to=12), rates(12), rtol=1e-6, atol=1e-12)
    assert not np.allclose(rates(30)[:120], rates(12))
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    assert not train.shorten_schedule(torch.optim.lr_scheduler.StepLR(opt, 5), 10)   # not one it can shorten


def test_a_time_budget_shortens_the_schedule_to_its_end(lfw5, tmp_path):
    # a budget the first epoch already spends: the one-cycle schedule of 5 epochs is compressed into 2, which still
    # end at its lowest rate (rather than stopping after epoch 1 at a high rate); resuming keeps the shorter schedule
    settings = dict(config.load("smoke").scratch, patience=None, lr=0.01)
    tl, vl = _loaders(lfw5)
    ckpt = tmp_path / "budget.pt"
    hist = train.fit_from_settings(_tiny(), (tl, vl, None), settings, epochs=5, max_minutes=0, progress=False,
                                   device="cpu", checkpoint_path=ckpt)
    assert len(hist) == 2 and hist.attrs["stopped"] == "time_budget" and hist.attrs["planned_epochs"] == 5
    assert hist["lr"].iloc[-1] < 1e-4 < 1e-3 < hist["lr"].iloc[0]
    again = train.fit_from_settings(_tiny(), (tl, vl, None), settings, epochs=5, max_minutes=0, progress=False,
                                    device="cpu", checkpoint_path=ckpt, resume=True)
    assert len(again) == 2 and again.attrs["stopped"] == "time_budget"
    roomy = train.fit_from_settings(_tiny(), (tl, vl, None), settings, epochs=3, max_minutes=60, progress=False,
                                    device="cpu")
    free = train.fit_from_settings(_tiny(), (tl, vl, None), settings, epochs=3, progress=False, device="cpu")
    assert len(roomy) == 3 and roomy.attrs["stopped"] == "epochs"   # a budget that fits changes nothing
    np.testing.assert_array_equal(roomy["train_loss"], free["train_loss"])


def test_replan_epochs_follows_the_median_pace():
    # 30 planned epochs, a 600 s budget: a first epoch of 30 s (other work on the machine) gives 20
    assert train.replan_epochs(30, 30, 1, [30.0], 600) == 20
    # then two epochs of 10 s: the median pace is 10 s, 590 - 50 s fit: back to the whole schedule
    assert train.replan_epochs(20, 30, 3, [30.0, 10.0, 10.0], 600) == 30
    # a steady pace that fits changes nothing; one that no longer does shrinks, to at least one more epoch
    assert train.replan_epochs(30, 30, 5, [12.0] * 5, 600) == 30
    assert train.replan_epochs(30, 30, 5, [30.0] * 5, 600) == 20
    assert train.replan_epochs(30, 30, 5, [200.0] * 5, 600) == 6
    # growth needs a tenth of the plan more (no change by one epoch of noise) and the first third of the schedule
    assert train.replan_epochs(28, 30, 9, [20.0] * 9, 600) == 28
    assert train.replan_epochs(20, 30, 6, [30.0] + [10.0] * 5, 600) == 30
    assert train.replan_epochs(20, 30, 7, [30.0] + [10.0] * 6, 600) == 20   # past its warm-up: the rate stays low
    assert train.replan_epochs(2, 5, 2, [0.1, 0.1], 600) == 2


def test_a_slow_first_epoch_does_not_shorten_the_run_for_good(lfw5, monkeypatch):
    """The budget re-plans after every epoch: a first epoch slowed by other work shortens the schedule, the fast
    epochs after it give it back (a decision after the first epoch alone trained 6 of the 12 epochs)."""
    settings = dict(config.load("smoke").scratch, patience=None, lr=0.01)
    tl, vl = _loaders(lfw5)
    # the training's clock is virtual: each training image costs 0.01 s, and the first epoch's images 30 s more in
    # all (other work on the machine), so the test neither waits nor depends on this machine's pace or load
    late = {"left": 0, "s": 0.0}
    monkeypatch.setattr(train.time, "perf_counter", lambda: late["s"])

    class SlowFirstEpoch(torch.utils.data.Dataset):
        targets = tl.dataset.targets

        def __len__(self):
            return len(tl.dataset)

        def __getitem__(self, i):
            late["s"] += 0.01
            if late["left"] > 0:
                late["left"] -= 1
                late["s"] += 30.0 / late["items"]
            return tl.dataset[i]

    loader = train.make_loaders(SlowFirstEpoch(), batch_size=16, seed=0)[0]
    late["left"] = late["items"] = len(loader) * 16     # the images of the first epoch's batches
    hist = train.fit_from_settings(_tiny(), (loader, vl, None), settings, epochs=12, max_minutes=200 / 60,
                                   progress=False, device="cpu")
    lengths = hist.attrs["schedule_epochs"]
    assert hist["seconds"].iloc[0] > 30 > 10 > hist["seconds"].iloc[1:].max(), hist["seconds"].tolist()
    assert lengths[0] < 12 and lengths[-1] == 12 == len(hist) and hist.attrs["stopped"] == "epochs", lengths
    assert hist["lr"].iloc[-1] < 1e-4                    # the schedule still ends at its lowest rate
def test_keep_last_keeps_the_last_epoch_without_early_stopping(lfw5):
    tl, vl = _loaders(lfw5, batch_size=32)
    model = _Linear(3 * SIZE * SIZE, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)   # validation never improves: "best" would stop after 3
    hist = train.fit(model, tl, vl, epochs=5, optimizer=opt, patience=2, progress=False, device="cpu", keep="last")
    assert len(hist) == 5 and hist.attrs["stopped"] == "epochs" and hist.attrs["best_epoch"] == 5
    assert hist["val_acc"].notna().all()                     # validation is still recorded
    model = _Linear(3 * SIZE * SIZE, 5)
    last = {}
    hist = train.fit(model, tl, vl, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), progress=False,
                     device="cpu", keep="last",
                     on_epoch=lambda row: last.update({k: v.clone() for k, v in model.state_dict().items()}))
    assert all(torch.equal(v, last[k]) for k, v in model.state_dict().items())   # the last epoch's weights
    with pytest.raises(ValueError, match="keep must be"):
        train.fit(model, tl, vl, epochs=1, optimizer=opt, progress=False, device="cpu", keep="first")


def test_val_classes_validates_on_the_first_outputs(lfw5):
    """A network with 2 extra outputs (background people) that always win: validated on the first 5 only."""
    tl, vl = _loaders(lfw5, batch_size=32)

    class Extra(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _Linear(3 * SIZE * SIZE, 5)

        def forward(self, x):
            logits = self.inner(x)
            return torch.cat([logits, logits.detach().abs().amax(1, keepdim=True).repeat(1, 2) + 100], 1)

    torch.manual_seed(0)
    model = Extra()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    every = train.fit(model, tl, vl, epochs=1, optimizer=opt, progress=False, device="cpu")
    own = train.fit(model, tl, vl, epochs=1, optimizer=opt, progress=False, device="cpu", val_classes=5)
    _, y_pred, _ = train.predict(model.inner, vl)
    assert every["val_acc"].iloc[0] == 0.0                    # the extra outputs take every face
    assert own["val_acc"].iloc[0] == pytest.approx(float((np.array(vl.dataset.targets) == y_pred).mean()))


def test_predict_and_evaluate(lfw5):
    model = _tiny().eval()
    loader = train.make_loaders(lfw5["train"].with_transform(train.eval_transforms(SIZE)),
                                test_ds=lfw5["test"].with_transform(train.eval_transforms(SIZE)))[2]
    y_true, y_pred, probs = train.predict(model, loader)
    assert list(y_true) == lfw5["test"].targets
    assert probs.shape == (len(y_true), 5) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.array_equal(y_pred, probs.argmax(1))
    # flip test-time augmentation = mean of the scores of the images and of their mirror images
    from torchvision.transforms import v2
    mirrored = lfw5["test"].with_transform(v2.Compose([train.eval_transforms(SIZE), v2.RandomHorizontalFlip(p=1)]))
    _, _, probs_mirror = train.predict(model, train.make_loaders(mirrored, test_ds=mirrored)[2])
    _, _, probs_tta = train.predict(model, loader, flip_tta=True)
    assert not np.allclose(probs, probs_mirror, atol=1e-4)
    assert np.allclose(probs_tta, (probs + probs_mirror) / 2, atol=1e-5)
    metrics = train.evaluate_model(model, loader)
    assert metrics["n"] == len(y_true) and math.isclose(metrics["accuracy"], float((y_true == y_pred).mean()))
    assert 0 <= metrics["macro_f1"] <= 1 and metrics["nll"] > 0


def test_fit_from_settings_uses_the_profile_settings(lfw5):
    settings = dict(config.load("smoke").scratch, epochs=3, patience=None, lr=0.01)
    tl, vl = _loaders(lfw5)
    model = _tiny()
    hist = train.fit_from_settings(model, (tl, vl, None), settings, epochs=2, progress=False, device="cpu")
    assert list(hist["epoch"]) == [1, 2] and hist.attrs["stopped"] == "epochs"
    assert list(hist.columns) == train.HISTORY_COLUMNS  # decay/no-decay groups share one rate: no lr_g1
    # one-cycle over the 2 epochs asked for: the rate ends near zero, far below its peak
    assert hist["lr"].iloc[-1] < 1e-4 < hist["lr"].iloc[0] <= 0.01
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)



def test_fit_with_per_group_learning_rates(lfw5):
    """Notebook 04's use: a backbone and a new head with their own learning rates."""
    model = _tiny()
    head = list(model.fc.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    opt = train.make_optimizer([{"params": head, "lr": 1e-2}, {"params": body, "lr": 1e-3}], "adamw",
                               weight_decay=0.01)
    tl, vl = _loaders(lfw5)
    sched = train.make_scheduler(opt, "cosine", epochs=2, steps_per_epoch=len(tl), warmup_epochs=0.5)
    before = model.stem[0].weight.detach().clone()
    hist = train.fit(model, tl, vl, epochs=1, optimizer=opt, scheduler=sched, progress=False, device="cpu")
    assert {"lr", "lr_g1"} <= set(hist.columns)
    assert math.isclose(hist["lr_g1"].iloc[0] / hist["lr"].iloc[0], 0.1, rel_tol=1e-6)
    assert 0 < hist["lr"].iloc[0] < 1e-2   # past the warm-up peak, on the cosine decay
    assert not torch.equal(before, model.stem[0].weight.detach())


def test_margin_cross_entropy():
    """MarginCrossEntropy: margin 0 is cross-entropy; a margin raises the loss by lowering the true-class logit."""
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    plain = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y)
    assert torch.allclose(train.MarginCrossEntropy(0.0, 0.1)(logits, y), plain)
    shifted = logits.clone()
    shifted[torch.arange(8), y] -= 2.0
    assert torch.allclose(train.MarginCrossEntropy(2.0, 0.1)(logits, y), nn.CrossEntropyLoss(label_smoothing=0.1)(shifted, y))
    assert float(train.MarginCrossEntropy(2.0)(logits, y)) > float(nn.CrossEntropyLoss()(logits, y))


def test_mixup_is_seeded_and_changes_training(lfw5):
    """fit(mixup=alpha): the same seed gives the same run; the blended batches give another run than mixup=0."""
    def run(mixup):
        model = _tiny()
        tl, vl = _loaders(lfw5)
        opt = train.make_optimizer(model, "sgd", lr=0.05, weight_decay=0)
        return train.fit(model, tl, vl, epochs=2, optimizer=opt, progress=False, seed=3, device="cpu", mixup=mixup)

    a, b, plain = run(0.4), run(0.4), run(0.0)
    assert a["train_loss"].tolist() == b["train_loss"].tolist() and a["val_acc"].tolist() == b["val_acc"].tolist()
    assert a["train_loss"].tolist() != plain["train_loss"].tolist()
