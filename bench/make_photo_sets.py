"""Build own-photo folders from LFW, shaped like the photo sets students bring, and print what was made.

Each kind is a folder ``<out>/<person>/<photo>`` that ``make run PHOTOS=<out>`` accepts:

* ``web``  – 5 people x 24 "web photos": sizes from 125 to 1,600 px, JPEG/PNG/WebP/BMP/TIFF/GIF, some grey,
             some transparent, some EXIF-rotated, some with the face small in a larger picture; one person's
             folder has a Chinese name, one a Cyrillic name.
* ``gif``  – 15 people x 11 grayscale GIF files without a file extension.
* ``pgm``  – 40 people x 10 grayscale PGM files.
* ``cropped`` – 40 people x 10 grayscale 92 x 112 PGM files that are already face crops: each LFW photo cut to its
             face box (forehead and chin at the edge), as in downloaded sets of cropped faces.
* ``bad``  – 4 people x 12 photos plus every bad input: a decompression bomb, a 24 x 24 px image, a broken
             symbolic link, an empty person folder, a photo outside any person folder, an empty file, a text file
             named .jpg, a truncated JPEG, a broken video, a person with too few photos, a duplicate.

People are drawn with a fixed seed from LFW people *outside* the default profile's 62 (except ``web``, which needs
24 photos per person). The LFW folder is only read.

    .venv/bin/python bench/make_photo_sets.py web /tmp/photos_web
"""
from __future__ import annotations

import argparse
import io
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nnprak import config, data, evaluate  # noqa: E402

KINDS = ("web", "gif", "pgm", "cropped", "bad")
MISLABELLED = evaluate.lfw_mislabelled_images()   # read LFW's errata once


def pick_people(n: int, min_images: int, max_images: int | None, seed: int) -> list[str]:
    """Return ``n`` LFW people with ``min_images``-``max_images`` images (None: no upper bound), drawn with ``seed``
    (sorted)."""
    counts = data.lfw_counts(config.find_lfw())
    top = counts.max() if max_images is None else max_images
    pool = sorted(counts[(counts >= min_images) & (counts <= top)].index)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, size=n, replace=False).tolist())


def lfw_images(person: str, n: int) -> list[Path]:
    """Return the first ``n`` LFW images of ``person`` (images listed as mislabelled in LFW's errata skipped)."""
    bad = MISLABELLED
    files = sorted((data.lfw_image_dir(config.find_lfw()) / person).glob("*.jpg"))
    return [f for f in files if f.stem not in bad][:n]


def web_photo(src: Path, k: int, rng: np.random.Generator) -> tuple[Image.Image, str, dict]:
    """Return (image, suffix, save kwargs) for the k-th web photo made from an LFW image."""
    img = Image.open(src).convert("RGB")
    style = k % 8
    if style == 0:    # small thumbnail: the face is ~45 px
        img = img.resize((125, 125), Image.BILINEAR)
    elif style == 1:  # the face small in a larger picture (a web page photo of a scene): a 24-30 px face
        canvas = Image.fromarray(rng.integers(60, 200, (420, 640, 3), dtype=np.uint8))
        side = int(rng.integers(64, 81))
        small = img.resize((side, side), Image.BILINEAR)
        canvas.paste(small, (int(rng.integers(0, 640 - side)), int(rng.integers(0, 420 - side))))
        img = canvas
    elif style == 2:  # a big upscale
        img = img.resize((1600, 1600), Image.BICUBIC)
    elif style == 3:  # grey
        img = img.convert("L")
    elif style == 4:  # transparent PNG
        img = img.convert("RGBA")
        alpha = np.full(img.size[::-1], 255, np.uint8)
        alpha[:20] = 0
        img.putalpha(Image.fromarray(alpha))
    elif style == 5:  # 200-300 px web size
        side = int(rng.integers(200, 301))
        img = img.resize((side, side), Image.BILINEAR)
    elif style == 6:  # a phone photo stored sideways with an EXIF orientation tag
        img = img.resize((480, 480), Image.BILINEAR).rotate(90, expand=True)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 CW to display
        return img, ".jpg", dict(exif=exif, quality=90)
    suffix = [".png", ".jpg", ".jpeg", ".png", ".png", ".webp", ".jpg", ".bmp"][style]
    if k % 11 == 10 and img.mode != "RGBA":
        suffix = ".tiff"
    if k % 13 == 12:
        suffix = ".gif"
    return img, suffix, {}


def make_web(out: Path, seed: int) -> None:
    """Write the ``web`` set."""
    names = {0: "鲍勃", 1: "Иван_Петров"}  # two folders in non-Latin scripts
    rng = np.random.default_rng(seed)
    for p, person in enumerate(pick_people(5, 24, 60, seed)):
        folder = out / names.get(p, person)
        folder.mkdir(parents=True)
        for k, src in enumerate(lfw_images(person, 24)):
            img, suffix, kw = web_photo(src, k, rng)
            if suffix in (".jpg", ".jpeg", ".bmp") and img.mode == "RGBA":
                img = img.convert("RGB")
            img.save(folder / f"IMG_{1000 + k}{suffix}", **kw)


FACE_BOX = (88, 80, 162, 172)
"""The face box of LFW's deep-funneled 250 px photos (eyebrows to chin, cheek to cheek): the ``cropped`` set's cut."""


def make_gray(out: Path, seed: int, n_people: int, n_images: int, fmt: str, suffix: str,
              face_only: bool = False) -> None:
    """Write ``n_people`` x ``n_images`` grayscale files of format ``fmt`` named ``photo_NN<suffix>`` (with
    ``face_only``: each cut to :data:`FACE_BOX` and resized to 92 x 112 px).

    The people are drawn from those with ``n_images`` to 19 LFW images (outside LFW-62, the default set); for
    ``n_images`` over 19, from everyone with at least that many (then mostly LFW-62's people)."""
    for person in pick_people(n_people, n_images, 19 if n_images <= 19 else None, seed):
        folder = out / person
        folder.mkdir(parents=True)
        for k, src in enumerate(lfw_images(person, n_images)):
            img = Image.open(src).convert("L")
            if face_only:
                img = img.crop(FACE_BOX).resize((92, 112), Image.BILINEAR)
            img.save(folder / f"photo_{k:02d}{suffix}", format=fmt)


def bomb_png() -> bytes:
    """Return a small PNG whose header declares 30,000 x 30,000 pixels (a decompression bomb for PIL)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 30001)) + chunk(b"IEND", b"")


def make_bad(out: Path, seed: int) -> None:
    """Write the ``bad`` set: 4 usable people and every kind of bad input."""
    people = pick_people(5, 12, 19, seed)
    for person in people[:4]:
        folder = out / person
        folder.mkdir(parents=True)
        for k, src in enumerate(lfw_images(person, 12)):
            (folder / f"{k:02d}.jpg").write_bytes(src.read_bytes())
    first = out / people[0]
    good = (first / "00.jpg").read_bytes()
    (first / "bomb.png").write_bytes(bomb_png())
    Image.open(io.BytesIO(good)).resize((24, 24)).save(first / "tiny24.png")
    (first / "empty.jpg").write_bytes(b"")
    (first / "notes.jpg").write_text("this is not a photo\n")
    (first / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (first / "copy_of_00.jpg").write_bytes(good)
    (first / "clip.mp4").write_bytes(b"\0\0\0\x18ftypmp42 not really a video")
    os.symlink(out / "does_not_exist.jpg", first / "broken_link.jpg")
    (out / "Empty_Person").mkdir()
    (out / "loose_photo.jpg").write_bytes(good)
    # names in another encoding (a zip made on Windows, unpacked with unzip): Latin-1 "Grüße", GBK "王芳"
    (first / os.fsdecode(b"Gr\xfc\xdfe.jpg")).write_bytes(good)
    gbk = out / os.fsdecode(b"\xcd\xf5\xb7\xbc")
    gbk.mkdir()
    (gbk / "00.jpg").write_bytes(good)
    few = out / people[4]
    few.mkdir()
    for k, src in enumerate(lfw_images(people[4], 2)):
        (few / f"{k:02d}.jpg").write_bytes(src.read_bytes())


def main(argv=None) -> int:
    """Build one photo set and print its size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("out", help="folder to create (must not exist)")
    parser.add_argument("--seed", type=int, default=config.SEED)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        parser.error(f"{out} exists: choose a new folder")
    out.mkdir(parents=True)
    if args.kind == "web":
        make_web(out, args.seed)
    elif args.kind == "gif":
        make_gray(out, args.seed, 15, 11, "GIF", "")
    elif args.kind == "pgm":
        make_gray(out, args.seed, 40, 10, "PPM", ".pgm")
    elif args.kind == "cropped":
        make_gray(out, args.seed, 40, 10, "PPM", ".pgm", face_only=True)
    else:
        make_bad(out, args.seed)
    files = [f for f in out.rglob("*") if f.is_file() or f.is_symlink()]
    print(f"{args.kind}: {sum(1 for d in out.iterdir() if d.is_dir())} person folders, {len(files)} files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
