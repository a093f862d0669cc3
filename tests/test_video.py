"""Frame extraction of nnprak.video on small real videos written here from LFW photos, and on bad files."""
import hashlib
import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from nnprak import video
from nnprak.video import FrameSettings, VideoError, extract_frames

FPS = 10
SIDE = 160
REPEAT = 5  # frames per segment: 0.5 s at 10 fps
BLURRED = 2  # segment index of the strongly blurred image
# segments: image 1, image 2, image 3 blurred, image 4, image 5 -> 4 distinct sharp images
KEPT_FRAMES = [0, 5, 15, 20]


def sha1(path):
    return hashlib.sha1(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def segments(lfw_dir):
    """Five distinct LFW photos of one person, 160x160 BGR; the third strongly blurred."""
    from nnprak import data

    folder = data.lfw_image_dir(lfw_dir) / "George_W_Bush"
    imgs = [cv2.resize(cv2.imread(str(folder / f"George_W_Bush_{i:04d}.jpg")), (SIDE, SIDE),
                       interpolation=cv2.INTER_AREA) for i in range(1, 6)]
    imgs[BLURRED] = cv2.GaussianBlur(imgs[BLURRED], (31, 31), 10)
    return imgs


@pytest.fixture(scope="module")
def clip(segments, tmp_path_factory):
    """A 2.5 s MPEG-4 Part 2 ('mp4v', the encoder every OpenCV wheel has) .mp4 at 10 fps, each photo 5 frames."""
    path = tmp_path_factory.mktemp("raw") / "bush clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIDE, SIDE))
    assert writer.isOpened(), "this OpenCV build cannot write mp4v; switch the test to MJPG in .avi"
    for img in segments:
        for _ in range(REPEAT):
            writer.write(img)
    writer.release()
    return path


def test_is_video():
    assert video.is_video("a/b/clip.mp4") and video.is_video("IMG_0001.MOV") and video.is_video("x.Webm")
    assert all(video.is_video(f"v{s}") for s in video.VIDEO_SUFFIXES)
    assert not video.is_video("photo.jpg") and not video.is_video("mp4") and not video.is_video("x.mp4.txt")


def test_frame_settings_defaults_and_validation():
    s = FrameSettings()
    assert (s.every_seconds, s.max_frames, s.blur_ratio, s.duplicate_diff) == (0.5, 40, 0.35, 3.0)
    with pytest.raises(AttributeError):
        s.max_frames = 3  # frozen
    for bad in (dict(every_seconds=0), dict(every_seconds=-1), dict(max_frames=0), dict(blur_ratio=-0.1)):
        with pytest.raises(ValueError):
            FrameSettings(**bad)


def test_keeps_one_frame_per_distinct_sharp_image(clip, segments, tmp_path):
    before = sha1(clip)
    df = extract_frames(clip, tmp_path / "frames", FrameSettings(every_seconds=1 / FPS))
    assert list(df.columns) == ["frame", "time_s", "path", "kept", "reason", "sharpness"]
    # every frame sampled; index and time consistent with 10 fps
    assert df["frame"].tolist() == list(range(len(segments) * REPEAT))
    np.testing.assert_allclose(df["time_s"], df["frame"] / FPS)
    assert df.attrs["fps"] == pytest.approx(FPS)

    kept = df[df["kept"]]
    assert kept["frame"].tolist() == KEPT_FRAMES
    assert (kept["reason"] == "").all() and (df.loc[~df["kept"], "path"] == "").all()
    blurred = df["frame"] // REPEAT == BLURRED
    assert df.loc[blurred, "reason"].str.startswith("blurred (sharpness ").all()
    assert (df.loc[blurred, "sharpness"] < 0.35 * df["sharpness"].median()).all()
    repeats = ~blurred & ~df["kept"]
    assert repeats.sum() == 4 * (REPEAT - 1)
    for frame, reason in df.loc[repeats, ["frame", "reason"]].itertuples(index=False):
        assert reason.startswith(f"near-duplicate of frame {frame // REPEAT * REPEAT} (mean difference "), reason

    # kept frames written as <stem>_f<frame>.jpg, RGB, right size, showing the right photo
    files = sorted((tmp_path / "frames").iterdir())
    assert [f.name for f in files] == [f"bush clip.mp4_f{i:06d}.jpg" for i in KEPT_FRAMES]
    assert kept["path"].tolist() == [str(f) for f in files]
    for frame, path in kept[["frame", "path"]].itertuples(index=False):
        img = Image.open(path)
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (SIDE, SIDE)
        source = cv2.cvtColor(segments[frame // REPEAT], cv2.COLOR_BGR2RGB).astype(float)
        assert np.abs(np.asarray(img, dtype=float) - source).mean() < 8  # a BGR/RGB swap gives far more
    assert sha1(clip) == before  # the raw video is only read


def test_sampling_every_half_second(clip, tmp_path):
    df = extract_frames(clip, tmp_path, FrameSettings(every_seconds=0.5))
    assert df["frame"].tolist() == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(df["time_s"], [0.0, 0.5, 1.0, 1.5, 2.0])
    assert df.loc[df["kept"], "frame"].tolist() == KEPT_FRAMES
    assert df.set_index("frame").loc[10, "reason"].startswith("blurred")
    df = extract_frames(clip, tmp_path / "slow", FrameSettings(every_seconds=1.0))
    assert df["frame"].tolist() == [0, 10, 20]


def test_max_frames_thins_evenly_and_removes_stale_files(clip, tmp_path):
    out = tmp_path / "frames"
    extract_frames(clip, out, FrameSettings(every_seconds=0.1))
    assert len(list(out.iterdir())) == len(KEPT_FRAMES)
    (out / "other video.mp4_f000005.jpg").write_bytes(b"not ours")
    (out / "bush clip.mov_f000005.jpg").write_bytes(b"not ours either")   # same stem, another video
    df = extract_frames(clip, out, FrameSettings(every_seconds=0.1, max_frames=2))
    assert df.loc[df["kept"], "frame"].tolist() == [KEPT_FRAMES[0], KEPT_FRAMES[-1]]
    thinned = df[df["reason"].str.startswith("thinned")]
    assert thinned["frame"].tolist() == KEPT_FRAMES[1:-1] and (thinned["path"] == "").all()
    assert sorted(f.name for f in out.iterdir()) == ["bush clip.mov_f000005.jpg", "bush clip.mp4_f000000.jpg",
                                                       "bush clip.mp4_f000020.jpg", "other video.mp4_f000005.jpg"]


def test_rerun_writes_nothing_until_the_video_changes(clip, tmp_path):
    raw = tmp_path / "raw.mp4"
    shutil.copy2(clip, raw)
    out = tmp_path / "frames"
    settings = FrameSettings(every_seconds=0.1)
    first = extract_frames(raw, out, settings)
    stats = {f.name: (f.stat().st_mtime_ns, f.stat().st_ino) for f in out.iterdir()}
    assert len(stats) == len(KEPT_FRAMES)
    again = extract_frames(raw, out, settings)
    assert again.equals(first)
    assert {f.name: (f.stat().st_mtime_ns, f.stat().st_ino) for f in out.iterdir()} == stats
    # a newer video (re-recorded, copied again) makes its frames stale: they are written again
    future = max(m for m, _ in stats.values()) + 10**9
    os.utime(raw, ns=(future, future))
    extract_frames(raw, out, settings)
    assert all(f.stat().st_mtime_ns != stats[f.name][0] for f in out.iterdir())
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("kind, status", [("zero_bytes", "not_video"), ("text", "not_video"),
                                          ("truncated", "not_video"), ("no_frames", "empty_video")])
def test_bad_files_raise_video_error(kind, status, clip, tmp_path):
    if kind == "zero_bytes":
        bad = tmp_path / "empty.mp4"
        bad.write_bytes(b"")
    elif kind == "text":
        bad = tmp_path / "notes.mp4"
        bad.write_text("this is not a video\n" * 20)
    elif kind == "truncated":
        bad = tmp_path / "cut.mp4"
        bad.write_bytes(clip.read_bytes()[:300])
    else:  # an AVI container with no frames opens, but yields none
        bad = tmp_path / "nothing.avi"
        writer = cv2.VideoWriter(str(bad), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIDE, SIDE))
        assert writer.isOpened()
        writer.release()
    before = sha1(bad)
    with pytest.raises(VideoError) as info:
        extract_frames(bad, tmp_path / "frames")
    err = info.value
    assert isinstance(err, ValueError) and err.status == status and err.path == bad and err.detail
    assert bad.name in str(err) and "MP4 (H.264)" in str(err)
    assert sha1(bad) == before and not (tmp_path / "frames").exists()


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        extract_frames(tmp_path / "missing.mp4", tmp_path / "frames")
