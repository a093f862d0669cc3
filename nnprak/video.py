"""Data collection from a short video per person: sample frames, drop blurred ones and near-duplicates, write JPEGs.

Students may put a short clip next to their photos, ``data/raw/<person>/*.mp4`` (any of
:data:`VIDEO_SUFFIXES`). The raw folder stays read-only: :func:`extract_frames` writes the kept frames to a
folder the caller chooses, as ``<out_dir>/<video file name>_f<frame:06d>.jpg``, and returns one row per sampled
frame saying whether it was kept and, if not, why::

    frame, time_s, path, kept, reason, sharpness

Frames are read sequentially with ``grab()``/``retrieve()`` (seeking is unreliable with some codecs), so the
frame index and ``time_s = frame / fps`` are exact for constant-frame-rate videos, as phones and screen
recorders write them.
"""
from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .utils import ProgressBar, atomic_path

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v")
"""File suffixes (lower case) treated as videos."""

FRAME_COLUMNS = ["frame", "time_s", "path", "kept", "reason", "sharpness"]
DEFAULT_FPS = 25.0
"""Frame rate assumed when the container does not report one."""
SHARPNESS_SIDE = 256
"""Longest side (px) of the grey image whose Laplacian variance is the sharpness, so it ignores resolution."""
THUMB_SIDE = 32
"""Side (px) of the grey thumbnails compared to find near-duplicates."""
JPEG_QUALITY = 95

VIDEO_ADVICE = {
    "not_video": "not a video OpenCV can read: re-export it as MP4 (H.264) or remove it",
    "empty_video": "the video has no readable frames: record or copy it again, or re-export it as MP4 (H.264)",
}
"""Statuses of :class:`VideoError`, with the advice printed for each."""


def is_video(path: str | os.PathLike) -> bool:
    """Return whether ``path`` has a video suffix (:data:`VIDEO_SUFFIXES`, case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class VideoError(ValueError):
    """A video that cannot be used; ``status`` is ``not_video`` or ``empty_video`` (see :data:`VIDEO_ADVICE`)."""

    def __init__(self, path, status: str, detail: str):
        self.path, self.status, self.detail = Path(path), status, detail
        super().__init__(f"{path}: {status} ({detail}); {VIDEO_ADVICE.get(status, '')}")


@dataclass(frozen=True)
class FrameSettings:
    """Thresholds for :func:`extract_frames` (a frozen record; the defaults suit a 10-60 s phone clip).

    Args:
        every_seconds: sample one frame every ``every_seconds`` of video time (the first frame of each slot).
        max_frames: keep at most this many frames per video; if more pass the filters, they are thinned evenly
            over the video.
        blur_ratio: drop a frame as blurred when its sharpness (variance of the Laplacian of the grey image,
            computed with the longest side resized to :data:`SHARPNESS_SIDE` px so it does not depend on the
            resolution) is below ``blur_ratio`` x the median sharpness of that video's sampled frames.
        duplicate_diff: drop a frame as a near-duplicate when its mean absolute difference (0-255 scale) to the
            last kept frame, both as 32x32 grey images, is below this.
    """

    every_seconds: float = 0.5
    max_frames: int = 40
    blur_ratio: float = 0.35
    duplicate_diff: float = 3.0

    def __post_init__(self):
        if not (self.every_seconds > 0 and math.isfinite(self.every_seconds)):
            raise ValueError(f"every_seconds must be a positive number, not {self.every_seconds!r}")
        if int(self.max_frames) != self.max_frames or self.max_frames < 1:
            raise ValueError(f"max_frames must be a positive integer, not {self.max_frames!r}")
        if not self.blur_ratio >= 0 or not self.duplicate_diff >= 0:
            raise ValueError("blur_ratio and duplicate_diff must be >= 0")


# ----------------------------------------------------------------------------------------------------------
# Measures of one frame
# ----------------------------------------------------------------------------------------------------------
def _grey(bgr: np.ndarray) -> np.ndarray:
    import cv2

    return bgr if bgr.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGRA2GRAY if bgr.shape[2] == 4 else cv2.COLOR_BGR2GRAY)


def sharpness(bgr: np.ndarray) -> float:
    """Return the variance of the Laplacian of the grey frame at longest side :data:`SHARPNESS_SIDE` px."""
    import cv2

    grey = _grey(bgr)
    h, w = grey.shape
    scale = SHARPNESS_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def thumbnail(bgr: np.ndarray) -> np.ndarray:
    """Return the frame as a 32x32 grey float image (0-255), what near-duplicates are compared on."""
    import cv2

    return cv2.resize(_grey(bgr), (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Reading a video
# ----------------------------------------------------------------------------------------------------------
@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's log while reading (it prints FFmpeg errors for bad files; :class:`VideoError` says more)."""
    import cv2

    try:
        logging = cv2.utils.logging
        old = logging.getLogLevel()
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    except AttributeError:  # builds without the logging module
        yield
        return
    try:
        yield
    finally:
        logging.setLogLevel(old)


def _open(path: Path):
    """Return ``(cv2.VideoCapture, fps, frame count or 0)`` of a video that yields at least one frame."""
    import cv2

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video")
    if not path.is_file():
        raise VideoError(path, "not_video", "not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        raise VideoError(path, "not_video", f"cannot be read: {err.strerror or err}") from None
    if not head:
        raise VideoError(path, "not_video", "0 bytes")
    cap = None
    for api in (cv2.CAP_FFMPEG, cv2.CAP_ANY):
        try:
            cap = cv2.VideoCapture(str(path), api)
        except cv2.error:
            cap = None
        if cap is not None and cap.isOpened():
            break
    if cap is None or not cap.isOpened():
        raise VideoError(path, "not_video", "OpenCV cannot open it (unknown container or codec)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    count = int(count) if math.isfinite(count) and count > 0 else 0
    return cap, fps, count


def _sampled_frames(cap, fps: float, every_seconds: float, bar=None) -> Iterator[tuple[int, np.ndarray | None]]:
    """Yield ``(index, BGR frame or None if it did not decode)`` for the first frame of each ``every_seconds`` slot."""
    last_slot = -1
    index = 0
    while True:
        if not cap.grab():
            return
        if bar is not None:
            bar.update(1)
        slot = math.floor(index / fps / every_seconds + 1e-9)
        if slot > last_slot:
            last_slot = slot
            ok, frame = cap.retrieve()
            yield index, (frame if ok and frame is not None and frame.size else None)
        index += 1


def frame_name(video: str | os.PathLike, frame: int) -> str:
    """Return the file name of a kept frame: ``<video file name>_f<frame:06d>.jpg``, e.g. ``clip.mp4_f000012.jpg``.

    The whole file name (with its suffix) keeps ``clip.mp4`` and ``clip.mov`` of one person apart.
    """
    return f"{Path(video).name}_f{frame:06d}.jpg"


def _is_fresh(path: Path, video_mtime_ns: int) -> bool:
    """Return whether ``path`` exists and is not older than the video (so a re-run need not write it again)."""
    try:
        return path.stat().st_mtime_ns >= video_mtime_ns
    except OSError:
        return False


def _write_jpeg(bgr: np.ndarray, path: Path) -> None:
    """Write a BGR(A)/grey frame as an RGB JPEG (quality 95) atomically."""
    import cv2
    from PIL import Image

    if bgr.ndim == 2:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    else:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB if bgr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if rgb.dtype != np.uint8:  # 16-bit decoders
        rgb = (rgb / max(1, int(np.iinfo(rgb.dtype).max) // 255)).clip(0, 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=JPEG_QUALITY)


# ----------------------------------------------------------------------------------------------------------
# Extracting frames
# ----------------------------------------------------------------------------------------------------------
def extract_frames(video: str | os.PathLike, out_dir: str | os.PathLike, settings: FrameSettings = FrameSettings(),
                   progress: bool = False) -> pd.DataFrame:
    """Return one row per sampled frame of ``video`` (frame, time_s, path, kept, reason, sharpness); write kept ones.

    Kept frames are written to ``out_dir/<video file name>_f<frame:06d>.jpg`` (RGB JPEG, quality 95); ``path`` is
    ``""`` for dropped frames and ``reason`` says why they were dropped. The video is only read. Re-running is
    cheap: a frame whose file exists and is not older than the video is not written again, and files of this
    video's earlier runs that are no longer kept (e.g. after changing ``settings``) are removed, so
    ``out_dir`` always matches the returned table. ``df.attrs`` holds ``fps`` and ``video``.

    The video is read twice, sequentially: once to measure every sampled frame (the blur threshold needs the
    median of the whole video), and once more to write the kept frames, only if some file is missing or stale.

    Args:
        video: a video file (:data:`VIDEO_SUFFIXES`; the suffix itself is not checked).
        out_dir: folder for the kept frames (created if needed); not the read-only raw folder.
        settings: sampling and filtering thresholds, see :class:`FrameSettings`.
        progress: draw a progress bar over the video's frames.

    Raises:
        VideoError: ``not_video`` (0-byte, unreadable, or not a container/codec OpenCV reads) or ``empty_video``
            (opens, but no frame decodes), naming the file and what to do.
        FileNotFoundError: ``video`` does not exist.
    """
    video, out_dir = Path(video), Path(out_dir)
    with _quiet_opencv():
        cap, fps, count = _open(video)
    rows, thumbs = [], {}
    try:
        with _quiet_opencv(), ProgressBar(total=count or None, desc=f"reading {video.name}", unit="frames",
                                              progress=progress) as bar:
            for index, frame in _sampled_frames(cap, fps, settings.every_seconds, bar):
                row = dict(frame=index, time_s=index / fps, path="", kept=False, reason="", sharpness=math.nan)
                if frame is None:
                    row["reason"] = "frame could not be decoded"
                else:
                    row["sharpness"] = sharpness(frame)
                    thumbs[index] = thumbnail(frame)
                rows.append(row)
    finally:
        cap.release()
    if not thumbs:
        detail = "no frames" if not rows else f"none of its {len(rows)} sampled frames decodes"
        raise VideoError(video, "empty_video", detail)

    # blurred: relative to this video's median, so a soft but steady webcam clip keeps its frames
    median = float(np.nanmedian([r["sharpness"] for r in rows]))
    threshold = settings.blur_ratio * median
    last = None  # (frame, thumbnail) of the last kept frame
    for row in rows:
        if row["reason"]:
            continue
        if row["sharpness"] < threshold:
            row["reason"] = (f"blurred (sharpness {row['sharpness']:.1f} < {settings.blur_ratio:g} × "
                             f"median {median:.1f})")
            continue
        thumb = thumbs[row["frame"]]
        if last is not None:
            diff = float(np.abs(thumb - last[1]).mean())
            if diff < settings.duplicate_diff:
                row["reason"] = (f"near-duplicate of frame {last[0]} (mean difference {diff:.1f} < "
                                 f"{settings.duplicate_diff:g})")
                continue
        row["kept"] = True
        last = (row["frame"], thumb)

    kept = [r for r in rows if r["kept"]]
    if len(kept) > settings.max_frames:
        chosen = set(np.round(np.linspace(0, len(kept) - 1, settings.max_frames)).astype(int).tolist())
        for i, row in enumerate(kept):
            if i not in chosen:
                row.update(kept=False, reason=f"thinned ({len(kept)} good frames > max_frames {settings.max_frames})")
        kept = [r for r in rows if r["kept"]]
    for row in kept:
        row["path"] = str(out_dir / frame_name(video, row["frame"]))

    with _quiet_opencv():
        _write_kept(video, out_dir, {r["frame"]: Path(r["path"]) for r in kept}, settings.every_seconds)

    df = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    df = df.astype({"frame": int, "time_s": float, "path": str, "kept": bool, "reason": str, "sharpness": float})
    df.attrs.update(fps=fps, video=str(video))
    return df


def _write_kept(video: Path, out_dir: Path, targets: dict[int, Path], every_seconds: float) -> None:
    """Write the frames ``{index: path}`` that are missing or stale, and remove this video's frames not kept now."""
    mtime = video.stat().st_mtime_ns
    out_dir.mkdir(parents=True, exist_ok=True)
    own = re.compile(re.escape(video.name) + r"_f\d{6}\.jpg")
    wanted = {p.name for p in targets.values()}
    for f in out_dir.iterdir():
        if own.fullmatch(f.name) and f.name not in wanted and f.is_file():
            f.unlink()
    todo = {i: p for i, p in targets.items() if not _is_fresh(p, mtime)}
    if not todo:
        return
    cap, fps, _ = _open(video)
    try:
        for index, frame in _sampled_frames(cap, fps, every_seconds):
            if index in todo and frame is not None:
                _write_jpeg(frame, todo.pop(index))
                if not todo:
                    return
    finally:
        cap.release()
    if todo:  # the second read ended early or differed: the file changed while we read it
        raise VideoError(video, "empty_video", f"frames {sorted(todo)} could not be read again")
