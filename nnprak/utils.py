"""Small helpers shared by every stage: atomic writes, hashing, the user cache folder, JSON results."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def display_path(path: str | os.PathLike) -> str:
    """Return ``path`` as recorded in results: relative to the checkout if inside it, ``~/...`` if in the home folder.

    Results and notebooks are committed; they should not carry the absolute paths of the machine that ran them.
    """
    from .config import ROOT

    p = Path(os.path.abspath(path))
    if p.is_relative_to(ROOT):
        return p.relative_to(ROOT).as_posix()
    if p.is_relative_to(Path.home()):
        return "~/" + p.relative_to(Path.home()).as_posix()
    return p.as_posix()


def show_progress(progress: bool = True) -> bool:
    """Return whether to draw a progress bar: ``progress``, unless ``$TQDM_DISABLE`` is set.

    ``nnprak run`` sets it for executed notebooks, where a bar would be stored as a frozen "0 %" widget; tqdm
    itself ignores the variable when ``disable=`` is passed explicitly, hence this helper.
    """
    return bool(progress) and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically, on error it is removed.

    The temporary name keeps the suffix of ``path`` so that libraries that pick a format from the suffix
    (PIL, matplotlib, pandas) still work::

        with atomic_path("crop.png") as tmp:
            img.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically and return the path."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha1_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def user_cache_dir() -> Path:
    """Return nnprak's cache folder: ``$NNPRAK_CACHE``, else ``$XDG_CACHE_HOME/nnprak``, else ``~/.cache/nnprak``."""
    if os.environ.get("NNPRAK_CACHE"):
        return Path(os.environ["NNPRAK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nnprak"
