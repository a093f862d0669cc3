"""Stage 01: scanning photo folders, validating images, the stratified split, the manifest, a torch Dataset.

Two sources give the same manifest: LFW (people with at least N images) and a folder of own photos laid out
as ``<root>/<person>/*``. Every file gets one row::

    path, person, split, sha1, width, height, orig_mode, tiny, status, reason

``status`` is ``ok`` for images the later stages use, otherwise one of :data:`BAD_STATUSES` with a
human-readable ``reason``. ``path`` is relative to the checkout (``config.ROOT``), in POSIX form, so a
manifest stays valid when the checkout moves together with ``../shared``.
"""
from __future__ import annotations

import io
import os
import re
import warnings
import zlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from . import config
from .utils import atomic_path, progress_iter, sha1_file

STATUS_OK = "ok"
BAD_STATUSES = {
    "empty": "0-byte file: copy the photo again",
    "not_image": "not an image file PIL can read: remove it or convert it to JPEG/PNG",
    "corrupt": "image data is truncated or corrupt: copy the photo again or remove it",
    "unreadable": "file cannot be opened (permissions?): check the file",
    "duplicate": "same bytes as another image of this person: kept once",
    "same_photo": "left out, so that no photo is in two splits (trained on and then validated or tested): delete one copy",
    "too_few": "person has too few usable images for a train/val/test split",
    "too_large": "the image declares more pixels than PIL opens safely (a decompression bomb or a huge scan): "
                 "resize it below 50 megapixels or remove it",
    "broken_link": "symbolic link whose target does not exist: fix the link or remove it",
    "empty_folder": "person folder without photos: add photos or remove the folder",
    "no_person": "file outside any person folder: move it into <folder>/<person name>/",
    "not_video": "video file OpenCV cannot read: re-export it as MP4 (H.264) or remove it",
    "empty_video": "video without readable frames: re-export it as MP4 (H.264) or remove it",
    "no_frames": "no sharp, distinct frame in this video: film the face longer, steadier and better lit",
    "bad_name": "the file or folder name is not UTF-8 (a zip made on Windows and unpacked with unzip?): rename it, "
                "e.g. convmv -r -f gbk -t utf-8 --notest <folder>, or unpack again with unzip -O gbk",
}
"""Statuses of rows the later stages skip, with the advice printed for each."""

MANIFEST_COLUMNS = ["path", "person", "split", "sha1", "dhash", "width", "height", "orig_mode", "tiny", "status",
                    "reason", "video", "frame"]
"""Manifest columns; ``dhash`` is the photo's :func:`difference_hash`; ``video``/``frame`` name the video and frame index
a row was sampled from ("" / -1 for photos)."""
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------------------
# Reading one image
# ----------------------------------------------------------------------------------------------------------
class ImageError(ValueError):
    """An image that cannot be used; ``status`` is one of :data:`BAD_STATUSES`."""

    def __init__(self, path, status: str, detail: str):
        self.path, self.status, self.detail = Path(path), status, detail
        super().__init__(f"{path}: {status} ({detail}); {BAD_STATUSES.get(status, '')}")


def to_rgb(img: Image.Image) -> Image.Image:
    """Return ``img`` as 8-bit RGB: EXIF orientation applied; grey, palette, 16-bit, CMYK and alpha converted.

    Transparent areas are composited onto white; 16/32-bit grey is rescaled from its actual range to 0-255.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def open_image(path: str | os.PathLike) -> tuple[Image.Image, str]:
    """Return ``(RGB image, original mode)`` of a file, fully decoded.

    Raises:
        ImageError: ``empty``, ``not_image``, ``corrupt`` or ``unreadable``, naming the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(path, "unreadable", err.strerror or str(err)) from None
    if not data:
        raise ImageError(path, "empty", "0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: large but allowed
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise ImageError(path, "too_large", _bomb_detail(err)) from None
    except Exception:  # UnidentifiedImageError, OSError, or a plugin's own error on a strange file
        raise ImageError(path, "not_image", sniff_format(data)) from None
    mode = img.mode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            rgb = to_rgb(img)
    except Image.DecompressionBombError as err:
        raise ImageError(path, "too_large", _bomb_detail(err)) from None
    except MemoryError:
        raise ImageError(path, "too_large", f"{img.width}x{img.height} px do not fit in memory") from None
    except Exception as err:  # OSError (truncated), SyntaxError, ValueError, struct.error, ...
        raise ImageError(path, "corrupt", f"{type(err).__name__}: {err}") from None
    return rgb, mode


def _bomb_detail(err: Exception) -> str:
    """Return PIL's decompression-bomb message in words: how many pixels the file declares, and PIL's limit."""
    import re

    nums = [int(x) for x in re.findall(r"(\d+) pixels", str(err))]
    if len(nums) >= 2:
        return f"declares {nums[0]:,} pixels, more than PIL's safety limit of {nums[1]:,}"
    return str(err)


_SIGNATURES = (
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"\x1a\x45\xdf\xa3", "a WebM/Matroska video"), (b"RIFF", "a RIFF file (AVI video or WAV sound)"),
)


def sniff_format(data: bytes) -> str:
    """Return words saying what a file that PIL cannot open seems to be (from its first bytes)."""
    head = data[:64]
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        if brand.lower().startswith(("heic", "heix", "hevc", "mif1", "msf1", "heif")):
            return f"a HEIC/HEIF photo (brand {brand!r}), which PIL cannot read: export it as JPEG"
        return f"an MP4/QuickTime file (brand {brand!r}), not a photo"
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "an HTML/XML/SVG file (a saved web page?), not a photo"
    try:
        head.decode("utf-8")
        return "a text file, not a photo"
    except UnicodeDecodeError:
        return f"an unknown format (first bytes {head[:8].hex(' ')})"


def load_image(path: str | os.PathLike) -> Image.Image:
    """Return the image at ``path`` as 8-bit RGB with EXIF orientation applied (raises :class:`ImageError`)."""
    return open_image(path)[0]


def inspect_image(path: str | os.PathLike, min_side: int = 64) -> dict:
    """Return a manifest row's image fields (sha1, dhash, width, height, orig_mode, tiny, status, reason); never raises."""
    path = Path(path)
    row = dict(sha1="", dhash="", width=0, height=0, orig_mode="", tiny=False, status=STATUS_OK, reason="", video="", frame=-1)
    try:
        row["sha1"] = sha1_file(path)
        img, mode = open_image(path)
    except ImageError as err:
        row.update(status=err.status, reason=f"{err.detail}; {BAD_STATUSES[err.status]}")
        return row
    except OSError as err:  # sha1 failed: permissions, vanished file
        row.update(status="unreadable", reason=f"{err.strerror or err}; {BAD_STATUSES['unreadable']}")
        return row
    row.update(dhash=difference_hash(img), width=img.width, height=img.height, orig_mode=mode,
               tiny=min(img.size) < min_side)
    if row["tiny"]:
        row["reason"] = f"tiny image ({img.width}x{img.height} < {min_side} px): kept, but faces may not be found"
    return row


# ----------------------------------------------------------------------------------------------------------
# Scanning sources
# ----------------------------------------------------------------------------------------------------------
def rel_path(path: str | os.PathLike) -> str:
    """Return ``path`` relative to the checkout, in POSIX form (how the manifest stores paths)."""
    return Path(os.path.relpath(Path(path).absolute(), config.ROOT)).as_posix()


def abs_path(path: str | os.PathLike) -> Path:
    """Return the absolute path of a manifest ``path`` (inverse of :func:`rel_path`)."""
    p = Path(path)
    return p if p.is_absolute() else Path(os.path.normpath(config.ROOT / p))


def person_files(root: str | os.PathLike) -> dict[str, list[Path]]:
    """Return ``{person: [files]}`` for a folder laid out as ``<root>/<person>/**`` (hidden files skipped).

    Broken symbolic links are included (:func:`scan_files` reports them); empty folders map to ``[]``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder. Put photos in {root}/<person name>/<photo>.jpg.")
    people = {}
    for person_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in person_dir.rglob("*")
                       if (f.is_file() or (f.is_symlink() and not f.exists()))
                       and not any(part.startswith(".") for part in f.relative_to(root).parts))
        people[person_dir.name] = files
    return people


def loose_files(root: str | os.PathLike) -> list[Path]:
    """Return the files lying directly in ``root`` (outside any person folder; hidden files skipped)."""
    return sorted(f for f in Path(root).iterdir()
                  if (f.is_file() or f.is_symlink()) and not f.name.startswith(".") and not f.is_dir())


def printable_name(text: str) -> str:
    """Return a file name with the bytes that are not UTF-8 written as ``\\xNN`` (they cannot go into a CSV or a figure)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def bad_name(path: str | os.PathLike) -> bool:
    """Return whether a path holds bytes that are not UTF-8 (a name made on a system with another encoding)."""
    return printable_name(str(path)) != str(path)


def _problem_row(path: Path, person: str, status: str, detail: str) -> dict:
    return dict(path=printable_name(rel_path(path)), person=printable_name(person), split="", sha1="", dhash="",
                width=0, height=0, orig_mode="", tiny=False, status=status, reason=f"{detail}; {BAD_STATUSES[status]}",
                video="", frame=-1)


def video_rows(video: Path, person: str, frames_dir: Path, min_side: int = 64, subfolder: str | os.PathLike = ""
               ) -> list[dict]:
    """Return manifest rows for a person's video: one per kept frame (written under ``frames_dir``), or one problem row.

    Frames are sampled, blurred and near-duplicate ones dropped (:func:`nnprak.video.extract_frames`); each kept
    frame becomes a photo of the person with ``video`` (the video's path) and ``frame`` (its index) filled in.
    They go to ``frames_dir/<person>/<subfolder>``: ``subfolder`` is the video's folder inside the person's folder, so
    ``2023/IMG_0001.mp4`` and ``2024/IMG_0001.mp4`` (phones restart their numbering) keep their frames apart.
    """
    from . import video as video_mod

    try:
        frames = video_mod.extract_frames(video, Path(frames_dir) / person / subfolder)
    except video_mod.VideoError as err:
        return [_problem_row(video, person, err.status, err.detail)]
    kept = frames[frames["kept"]]
    if kept.empty:
        dropped = frames["reason"].str.split(" ").str[0].value_counts().to_dict()
        return [_problem_row(video, person, "no_frames", f"{len(frames)} frames sampled, dropped: {dropped}")]
    rows = []
    for _, fr in kept.iterrows():
        row = dict(path=rel_path(fr["path"]), person=person, split="", **inspect_image(fr["path"], min_side))
        row.update(video=rel_path(video), frame=int(fr["frame"]))
        rows.append(row)
    return rows


def scan_files(people: dict[str, Iterable[Path]], min_side: int = 64, progress: bool = True,
               frames_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Return manifest rows (split still empty) for ``{person: files}``, validating every file.

    Videos (:data:`nnprak.video.VIDEO_SUFFIXES`) become rows of sampled frames written under ``frames_dir``
    (listed as ``not_image`` when ``frames_dir`` is None); broken links get ``broken_link``, and a file whose name
    or folder name is not UTF-8 gets ``bad_name`` (its row shows the name with ``\\xNN`` for those bytes).
    ``root``: the folder holding the person folders (:func:`scan_folder`), so that a video's frames keep the
    sub-folder it lies in.
    """
    from .video import is_video

    items = [(person, Path(f)) for person, files in people.items() for f in files]
    rows = []
    for person, f in progress_iter(items, desc="validating images", unit="img", progress=progress):
        if bad_name(f):
            rows.append(_problem_row(f, person, "bad_name", f"{printable_name(f.name)} in {printable_name(person)}/"))
        elif f.is_symlink() and not f.exists():
            rows.append(_problem_row(f, person, "broken_link", f"link to {os.readlink(f)}"))
        elif is_video(f) and frames_dir is not None:
            sub = f.parent.relative_to(Path(root) / person) if root is not None else ""
            rows.extend(video_rows(f, person, Path(frames_dir), min_side, subfolder=sub))
        else:
            rows.append(dict(path=rel_path(f), person=person, split="", **inspect_image(f, min_side)))
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    df["split"] = df["split"].astype(str)
    df["frame"] = df["frame"].astype(int)
    return df


def scan_folder(root: str | os.PathLike, min_side: int = 64, progress: bool = True,
                frames_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Return manifest rows for every file of an own-photos folder ``<root>/<person>/*``.

    Besides one row per file (or per kept video frame), problems of the layout get a row each so that they are
    listed with what to do: an empty person folder (``empty_folder``) and a file directly in ``root``
    (``no_person``, person "").
    """
    people = person_files(root)
    df = scan_files(people, min_side, progress, frames_dir, root=root)
    extra = [_problem_row(Path(root) / person, person, "empty_folder", "no files")
             for person, files in people.items() if not files]
    extra += [_problem_row(f, "", "no_person", f"lies directly in {Path(root).name}/") for f in loose_files(root)]
    if extra:
        df = pd.concat([df, pd.DataFrame(extra, columns=MANIFEST_COLUMNS)], ignore_index=True)
    return df


def lfw_image_dir(lfw_dir: str | os.PathLike) -> Path:
    """Return the folder holding LFW's ``<Name>/<Name>_NNNN.jpg`` images."""
    return Path(lfw_dir) / config.LFW_IMAGES_SUBDIR


def lfw_files(lfw_dir: str | os.PathLike, person: str, limit: int | None = None) -> list[Path]:
    """Return a person's LFW images in file order (the first ``limit`` of them)."""
    return sorted((lfw_image_dir(lfw_dir) / person).glob("*.jpg"))[:limit]


def lfw_counts(lfw_dir: str | os.PathLike) -> pd.Series:
    """Return the number of images per LFW person (index: name), sorted by name."""
    img_dir = lfw_image_dir(lfw_dir)
    counts = {d.name: sum(1 for f in d.iterdir() if f.suffix.lower() == ".jpg")
              for d in img_dir.iterdir() if d.is_dir()}
    return pd.Series(counts, name="images").sort_index()


def lfw_people(lfw_dir: str | os.PathLike, min_images: int = 20, max_people: int | None = None) -> list[str]:
    """Return the LFW people with at least ``min_images`` images (alphabetical, the first ``max_people``)."""
    counts = lfw_counts(lfw_dir)
    people = counts[counts >= min_images].index.tolist()
    return people[:max_people] if max_people else people


def scan_lfw(lfw_dir: str | os.PathLike, min_images: int = 20, max_people: int | None = None,
             min_side: int = 64, progress: bool = True) -> pd.DataFrame:
    """Return manifest rows for the LFW people with at least ``min_images`` images."""
    people = {p: lfw_files(lfw_dir, p) for p in lfw_people(lfw_dir, min_images, max_people)}
    return scan_files(people, min_side, progress)


# ----------------------------------------------------------------------------------------------------------
# Duplicates and the split
# ----------------------------------------------------------------------------------------------------------
def mark_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy where repeated images (same sha1) of one person are kept once (others: ``duplicate``).

    Identical images filed under *different* people are kept (their labels differ) and listed by
    :func:`cross_person_duplicates`; :func:`split_manifest` puts them into one split.
    """
    df = df.sort_values(["person", "path"], kind="stable").reset_index(drop=True)
    ok = df["status"] == STATUS_OK
    first = df[ok].groupby(["person", "sha1"])["path"].transform("first")
    dup = first.index[first != df.loc[ok, "path"]]
    df.loc[dup, "status"] = "duplicate"
    df.loc[dup, "reason"] = [f"same bytes as {first[i]}; {BAD_STATUSES['duplicate']}" for i in dup]
    return df


def cross_person_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Return the usable rows whose exact bytes (sha1) also appear under another person, with what to do (``advice``).

    They are kept (a group photo can show both people), in one split; a portrait filed under the wrong person
    teaches the models a wrong label and should be moved."""
    ok = df[df["status"] == STATUS_OK]
    n_people = ok.groupby("sha1")["person"].transform("nunique")
    out = ok[n_people > 1].sort_values(["sha1", "person"])[["sha1", "person", "path", "split"]]
    others = {sha: sorted(set(g)) for sha, g in out.groupby("sha1")["person"]}
    out["advice"] = [f"also filed under {', '.join(p for p in others[sha] if p != person)}: if it shows one person "
                     "only, remove it from the other folder(s)" for sha, person in zip(out["sha1"], out["person"])]
    return out


def difference_hash(img: Image.Image, size: int = 8) -> str:
    """Return an image's difference hash (dHash: whether each pixel of a ``size+1`` x ``size`` grey thumbnail is brighter
    than its left neighbour) as hex digits: the same for a photo and its copies in another format, size or quality."""
    thumb = img.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS)
    a = np.asarray(thumb, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{size * size // 4}x}"


def informative_hash(dhash: str, min_bits: int = 8) -> bool:
    """Return whether a :func:`difference_hash` says something about the photo: at least ``min_bits`` of its bits set
    and as many unset. A flat or nearly flat image (a blank scan, a black frame) hashes to (almost) all zeros, so two
    such images would look like one photo."""
    if not dhash:
        return False
    ones = bin(int(dhash, 16)).count("1")
    return min_bits <= ones <= len(dhash) * 4 - min_bits


def _twin_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Return the usable photo rows (not video frames) whose ``dhash`` is :func:`informative_hash`, with column ``dhash``."""
    photo = df["video"].astype(str) == "" if "video" in df else pd.Series(True, index=df.index)
    dhash = df["dhash"].astype(str) if "dhash" in df else pd.Series("", index=df.index)
    keep = (df["status"] == STATUS_OK) & photo & dhash.map(informative_hash)
    return df[keep].assign(dhash=dhash[keep])


def _single_copies(df: pd.DataFrame) -> pd.Index:
    """Return the index of the usable rows whose bytes (sha1) no other usable row has: photos a split rule may move."""
    sha1 = df.loc[df["status"] == STATUS_OK, "sha1"]
    return sha1.index[sha1.map(sha1.value_counts()) == 1]


MIN_TRAIN_PHOTOS = 2
"""Training photos a person keeps when :func:`leave_out_split_twins` moves one to validation or test."""

MIN_PHOTOS_PER_PERSON = 4
"""Usable photos a person needs: 4 split into 2 training, 1 validation and 1 test photo, and notebook 05 needs two
training faces a person for its cross-validation (:data:`nnprak.faces.MIN_TRAINING_FACES`)."""


def leave_out_split_twins(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy where a person's photo that is the same photo as one in an earlier split (equal ``dhash``, other
    bytes; train before val before test) gets status ``same_photo`` and no split (the reason names the twin and the split
    it was drawn into): no photo is both trained on and validated or tested.

    Exact copies (same bytes) are kept once by :func:`mark_duplicates` and put into one split by :func:`split_manifest`;
    these copies in another format, size or quality slip past both. Twins within one split are kept (a photo trained
    on twice does no harm), and so is the split of every other photo, except that a person left without a validation
    or test photo gets one of their photos without a copy there (:func:`_keep_split_minimums`: from training when
    more than :data:`MIN_TRAIN_PHOTOS` are left there); otherwise a warning says what to do. Video frames are skipped
    (neighbouring frames look alike by nature and are split in time blocks); so are rows without a hash (manifests from
    before it) or with a flat image's (:func:`informative_hash`).
    """
    df = df.copy()
    ok = _twin_rows(df)
    rank = ok["split"].map({s: i for i, s in enumerate(SPLITS)})
    groups = rank.groupby([ok["person"], ok["dhash"]])
    first, size = groups.transform("min"), groups.transform("size")
    later = rank.index[rank > first]
    for i in later:
        twins = ok[(ok["person"] == ok.at[i, "person"]) & (ok["dhash"] == ok.at[i, "dhash"]) & (rank == first[i])]
        kept = twins.sort_values("path").iloc[0]
        split = df.at[i, "split"]
        df.loc[i, ["status", "split"]] = ["same_photo", ""]   # like every row left out: no split, no later stage uses it
        df.at[i, "reason"] = (f"this copy was drawn into {split}; {kept['path']}, in {kept['split']}, is the same photo in "
                              f"another format, size or quality; {BAD_STATUSES['same_photo']}")
        print(f"left out: {df.at[i, 'path']} (drawn into {split}): the same photo as {kept['path']} ({kept['split']})")
    spare = ok[~ok["dhash"].isin(set(ok.loc[size > 1, "dhash"])) & ok.index.isin(_single_copies(df))]  # no copy
    for person in sorted(set(ok.loc[later, "person"])):
        _keep_split_minimums(df, person, spare.index[spare["person"] == person],
                             "after leaving out a second copy of a photo: delete the copy")
    return df


SPLIT_MINIMUMS = {"train": MIN_TRAIN_PHOTOS, "val": 1, "test": 1}
"""Photos a person keeps in each split when a rule of :func:`split_manifest` moves or leaves out some."""
_DONORS = {"train": ("test", "val"), "val": ("train", "test"), "test": ("train", "val")}


def _keep_split_minimums(df: pd.DataFrame, person: str, free, why: str) -> None:
    """Give ``person`` :data:`SPLIT_MINIMUMS` again after a rule took photos from a split: the last by path of their
    photos among ``free`` (index labels of photos that may move) in a split with more than its minimum (for training:
    test, then validation; for validation or test: training, then the other one) moves there; what cannot be mended
    is printed as a warning (``why``: what took the photo and what to do). Changes ``df`` in place."""
    mine = (df["person"] == person) & (df["status"] == STATUS_OK)
    free = pd.Index(free)
    for split, minimum in SPLIT_MINIMUMS.items():
        while (have := int((mine & (df["split"] == split)).sum())) < minimum:
            counts = df.loc[mine, "split"].value_counts()
            donors = [d for d in _DONORS[split] if counts.get(d, 0) > SPLIT_MINIMUMS[d]
                      and len(df.index[mine & (df["split"] == d)].intersection(free))]
            if not donors:
                left = f"no {split} photo" if not have else f"only {have} {split} photo(s)"
                print(f"warning: {person} has {left} left {why}, add a photo of {person} and run notebook 01 again")
                break
            j = df.loc[df.index[mine & (df["split"] == donors[0])].intersection(free)].sort_values("path").index[-1]
            df.at[j, "split"] = split
            print(f"moved: {df.at[j, 'path']} from {donors[0]} to {split}, so that {person} keeps "
                  + (f"a {split} photo" if minimum == 1 else f"{minimum} {split} photos"))


def _person_rng(seed: int, person: str) -> np.random.Generator:
    # One generator per person: a person's split does not change when other people are added or removed.
    return np.random.default_rng([seed, zlib.crc32(person.encode("utf-8"))])


def split_counts(n: int, fractions=(0.70, 0.15, 0.15)) -> tuple[int, int, int]:
    """Return (train, val, test) sizes for ``n`` images: val and test get at least one image each."""
    _, f_val, f_test = fractions
    n_val = max(1, int(round(n * f_val)))
    n_test = max(1, int(round(n * f_test)))
    return n - n_val - n_test, n_val, n_test


def _assign_split(df: pd.DataFrame, rows: list, order, fractions) -> None:
    """Set ``split`` of ``rows`` (index labels): the first ``split_counts`` of ``order`` train, then val, then test.

    Fewer than three rows all go to train (a validation and a test image need a training image beside them).
    """
    n_train, n_val, _ = split_counts(len(rows), fractions) if len(rows) >= 3 else (len(rows), 0, 0)
    for rank, i in enumerate(order):
        df.at[rows[i], "split"] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"


def split_manifest(df: pd.DataFrame, fractions=(0.70, 0.15, 0.15), seed: int = config.SEED,
                   min_per_person: int = MIN_PHOTOS_PER_PERSON) -> pd.DataFrame:
    """Return a copy with a per-person stratified ``split`` (train/val/test) for every usable row.

    People with fewer than ``min_per_person`` usable images get status ``too_few`` (a message says so).
    Rows with identical bytes never end up in two splits: each group of identical images follows its first row (a
    person whose split this leaves without :data:`MIN_TRAIN_PHOTOS` training photos or a validation or test photo
    gets other photos of theirs moved, :func:`_keep_split_minimums`). A
    photo saved again in another format, size or quality that lands in a later split than its twin is left out
    (status ``same_photo``, :func:`leave_out_split_twins`); no other photo changes its split.
    Frames of a video (column ``video``) are split in time blocks per video, not shuffled: the first 70 % of a
    video's frames train, the next 15 % validation, the last 15 % test (neighbouring frames are near-duplicates).
    """
    if abs(sum(fractions) - 1) > 1e-6 or len(fractions) != 3:
        raise ValueError(f"split fractions must be three numbers that sum to 1, got {fractions}")
    df = df.copy()
    df["split"] = ""
    for person, idx in df[df["status"] == STATUS_OK].groupby("person").groups.items():
        idx = sorted(idx, key=lambda i: df.at[i, "path"])
        if len(idx) < min_per_person:
            df.loc[idx, ["status", "reason"]] = ["too_few", f"{person} has {len(idx)} usable image(s), "
                                                 f"fewer than {min_per_person}: add photos or leave them out"]
            print(f"left out: {person} ({len(idx)} usable images < {min_per_person})")
            continue
        videos = df.loc[idx, "video"].astype(str) if "video" in df else pd.Series("", index=idx)
        photos = [i for i in idx if not videos[i]]
        _assign_split(df, photos, _person_rng(seed, person).permutation(len(photos)), fractions)   # seeded shuffle
        # Frames of one video are near-duplicates: shuffled, neighbouring frames would sit in train and test.
        # Each video is cut into time blocks instead (first 70 % of its frames train, then val, then test).
        for _, rows in df.loc[idx][videos != ""].groupby("video"):
            rows = sorted(rows.index, key=lambda i: (int(df.at[i, "frame"]), df.at[i, "path"]))
            _assign_split(df, rows, range(len(rows)), fractions)
    ok = df["status"] == STATUS_OK
    drawn = df["split"].copy()
    df.loc[ok, "split"] = df[ok].groupby("sha1")["split"].transform("first")   # one photo filed under two people
    free = _single_copies(df)
    for person in sorted(set(df.loc[df.index[ok & (df["split"] != drawn)], "person"])):
        _keep_split_minimums(df, person, free, "after a photo filed under two people followed the other person's "
                             "split: move a wrongly filed photo")
    return leave_out_split_twins(df)


def split_checks(df: pd.DataFrame) -> dict[str, bool]:
    """Return the split's invariants (each True when it holds): stratified, disjoint, duplicates and copies of one photo
    (:func:`leave_out_split_twins`) together."""
    ok = df[df["status"] == STATUS_OK]
    photos = _twin_rows(df)
    per_person = pd.crosstab(ok["person"], ok["split"]).reindex(columns=list(SPLITS), fill_value=0)
    return {
        "every usable image has a split": bool(ok["split"].isin(SPLITS).all()),
        "every person is in train, val and test": bool((per_person > 0).all(axis=None)),
        "no file is in two splits": bool(ok.groupby("path")["split"].nunique().max() <= 1),
        "identical images share one split": bool(ok.groupby("sha1")["split"].nunique().max() <= 1),
        "copies of one photo (equal difference hash) share one split":
            bool(photos.groupby(["person", "dhash"])["split"].nunique().max() <= 1) if len(photos) else True,
    }


def person_key(name: str) -> str:
    """Return a person's name without case, accents (combining marks), spaces, underscores or hyphens, to match folder
    names with LFW's ASCII names: "renée zellweger" is ``Renee_Zellweger``. Names in other scripts are not
    transliterated ("胡锦涛" matches no LFW name)."""
    import unicodedata

    plain = "".join(c for c in unicodedata.normalize("NFKD", str(name)) if not unicodedata.combining(c))
    return re.sub(r"[\s_\-]+", "", plain).casefold()


def lfw_impostors(lfw_dir: str | os.PathLike, exclude: Iterable[str], n_people: int = 100,
                  images_per_person: int = 2, min_images: int = 2, max_images: int = 19,
                  seed: int = config.SEED, progress: bool = False,
                  faces_per_split: int | None = None) -> pd.DataFrame:
    """Return manifest rows of LFW people outside the gallery, for testing the open-set "unknown" decision.

    People with ``min_images``–``max_images`` images (none of ``exclude``, names compared by :func:`person_key`: a
    folder "Aaron Peirsol" is LFW's ``Aaron_Peirsol``) are drawn in a seeded random order,
    ``images_per_person`` images each. Whole people go to ``val`` (choosing the threshold) or ``test``
    (measuring it), so test impostors are people the threshold has never seen.

    * ``faces_per_split=None``: ``n_people`` people, half to each split;
    * ``faces_per_split=N``: people are drawn (each to the split with fewer images so far) until both splits
      hold at least N images — a pool large enough to place a 1 % or 0.1 % false-accept threshold
      (``n_people`` is then ignored). Raises ValueError when LFW has too few such people.
    """
    counts = lfw_counts(lfw_dir)
    skip = {person_key(p) for p in exclude}
    pool = sorted(p for p in counts[(counts >= min_images) & (counts <= max_images)].index if person_key(p) not in skip)
    rng = np.random.default_rng(seed)
    if faces_per_split is None:
        chosen = sorted(rng.choice(pool, size=min(n_people, len(pool)), replace=False).tolist())
        order = rng.permutation(len(chosen))
        split_of = {p: ("val" if rank % 2 == 0 else "test") for p, rank in zip(chosen, order)}
    else:
        split_of, n = {}, {"val": 0, "test": 0}
        for p in rng.permutation(pool).tolist():
            if min(n.values()) >= faces_per_split:
                break
            s = "val" if n["val"] <= n["test"] else "test"
            split_of[p] = s
            n[s] += min(int(counts[p]), images_per_person)
        if min(n.values()) < faces_per_split:
            raise ValueError(f"LFW has only {sum(n.values())} impostor images with these settings; "
                             f"{faces_per_split} per split were asked for")
        chosen = sorted(split_of)
    df = scan_files({p: lfw_files(lfw_dir, p, images_per_person) for p in chosen},
                    progress=progress)
    df["split"] = df["person"].map(split_of)
    return df


IMPOSTOR_CROPS = "impostor_crops.csv"
"""Notebook 05's crops table of the open-set impostors (:func:`impostor_pool`), in the profile's processed folder."""


def impostor_pool(cfg: config.Config, exclude: Iterable[str], progress: bool = False) -> pd.DataFrame:
    """Return the profile's open-set impostors (:func:`lfw_impostors` with ``cfg.embed``'s ``impostor_faces``
    per split, ``impostor_min_images`` and ``impostor_images_per_person``)."""
    e = cfg.embed
    return lfw_impostors(config.find_lfw(), exclude=exclude, seed=cfg.seed, progress=progress,
                         faces_per_split=e["impostor_faces"], min_images=e["impostor_min_images"],
                         images_per_person=e["impostor_images_per_person"])


def build_manifest(cfg: config.Config, progress: bool = True) -> pd.DataFrame:
    """Return the validated, de-duplicated and split manifest of ``cfg.source``.

    ``cfg.source`` is ``"lfw"``, ``"raw"`` (own photos in ``data/raw/<person>/``) or any folder laid out the same.
    Excluded files are printed with their reason; the scan never stops at a bad file. Raises ValueError when fewer
    than two people are left with :data:`MIN_PHOTOS_PER_PERSON` usable photos (nothing to tell apart).
    """
    if cfg.is_lfw:
        df = scan_lfw(config.find_lfw(), cfg.min_images_per_person, cfg.max_people, cfg.min_image_side, progress)
    else:
        df = scan_folder(cfg.photo_dir, cfg.min_image_side, progress, frames_dir=cfg.paths.interim / "frames")
    for _, row in df[df["status"] != STATUS_OK].iterrows():
        print(f"excluded: {row['path']}: {row['status']}: {row['reason']}")
    df = split_manifest(mark_duplicates(df), cfg.split_fractions, cfg.seed)
    people = df.loc[df["status"] == STATUS_OK, "person"].unique()
    if len(people) < 2:
        who = "no person" if not len(people) else f"only one person ({people[0]})"
        raise ValueError(f"{who} in {cfg.describe_source()} has {MIN_PHOTOS_PER_PERSON} or more usable photos (the "
                         "lines above say why each file or person was left out); telling faces apart needs at least "
                         "two people: add photos, one folder per person, then run notebook 01 again")
    return df


def save_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest CSV atomically and return its path."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Return a manifest CSV as a DataFrame (strings stay strings, empty splits stay '')."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/01_data_collection_and_split.ipynb first.")
    df = pd.read_csv(path, dtype={"path": str, "person": str, "split": str, "sha1": str, "dhash": str, "status": str,
                                  "reason": str, "orig_mode": str, "video": str}, keep_default_na=False)
    if "video" not in df:  # manifests written before videos were supported
        df["video"], df["frame"] = "", -1
    if "dhash" not in df:  # manifests written before the difference hash
        df["dhash"] = ""
    return df


def dataset_id(df: pd.DataFrame) -> str:
    """Return a short hash of a manifest's usable rows (path, person, split, sha1): equal hashes, same data set."""
    import hashlib

    ok = df[df["status"] == STATUS_OK].sort_values("path")
    text = "\n".join(f"{p}\t{q}\t{s}\t{h}" for p, q, s, h in zip(ok["path"], ok["person"], ok["split"], ok["sha1"]))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def describe_manifest(df: pd.DataFrame) -> dict:
    """Return where a manifest's usable images come from: ``source`` (their common folder), ``description``
    (e.g. "LFW: 62 people, 3,023 images" or "own photos in ~/photos: 5 people, 118 images"), ``people``, ``images``."""
    from .utils import display_path

    ok = df[df["status"] == STATUS_OK]
    if ok.empty:
        return {"source": "", "description": "no usable images", "people": 0, "images": 0}
    origin = [v if v else p for v, p in zip(ok["video"], ok["path"])]
    common = Path(os.path.commonpath([str(abs_path(p).parent.parent) for p in origin]))
    size = f"{ok['person'].nunique()} people, {len(ok):,} images"
    is_lfw = common.name == config.LFW_IMAGES_SUBDIR
    return {"source": "lfw" if is_lfw else display_path(common),
            "description": f"LFW: {size}" if is_lfw else f"own photos in {display_path(common)}: {size}",
            "people": int(ok["person"].nunique()), "images": int(len(ok))}


def split_table(df: pd.DataFrame) -> pd.DataFrame:
    """Return one row of usable images: people, per split (train/val/test), total, the split fractions and the
    fewest and most images of one person."""
    ok = df[df["status"] == STATUS_OK]
    table = pd.crosstab(ok["person"], ok["split"]).reindex(columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    summary = pd.DataFrame({"people": [len(table)], **{c: [int(table[c].sum())] for c in table.columns}})
    total = max(1, int(table["total"].sum()))
    summary["fraction"] = [" / ".join(f"{table[s].sum() / total:.2f}" for s in SPLITS)]
    summary["fewest a person"] = [int(table["total"].min()) if len(table) else 0]
    summary["most a person"] = [int(table["total"].max()) if len(table) else 0]
    return summary


# ----------------------------------------------------------------------------------------------------------
# A torch Dataset over the manifest
# ----------------------------------------------------------------------------------------------------------
try:
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # notebook 01 works without torch
    _TorchDataset = object


class FaceDataset(_TorchDataset):
    """A torch ``Dataset`` of (image, label) over the usable manifest rows of one split.

    Args:
        manifest: a manifest DataFrame (or the path of its CSV).
        split: ``"train"``, ``"val"``, ``"test"`` or None for all usable rows.
        transform: applied to the PIL image (e.g. torchvision transforms).
        path_column: which column holds the image path (``"path"`` for originals, a crop column later).
        classes: class names in label order; default: sorted people of the manifest's usable rows, so every
            split of one manifest shares the same labels.
    """

    def __init__(self, manifest, split: str | None = None, transform: Callable | None = None,
                 path_column: str = "path", classes: list[str] | None = None):
        df = load_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else manifest
        usable = df[(df["status"] == STATUS_OK) & (df[path_column].astype(str) != "")]
        self.classes = list(classes) if classes is not None else sorted(usable["person"].unique())
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        rows = usable if split is None else usable[usable["split"] == split]
        self.frame = rows.reset_index(drop=True)
        self.paths = [abs_path(p) for p in self.frame[path_column]]
        self.targets = [self.class_to_idx[p] for p in self.frame["person"]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_image(self.paths[i])
        return (self.transform(img) if self.transform else img), self.targets[i]
