"""Small helpers shared by every stage: atomic writes, hashing, the user cache folder, JSON results."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

PROGRESS_ENV = "NNPRAK_PROGRESS"
"""Environment variable naming the progress file: ``nnprak run`` sets it, the package's long loops write their
latest status line there (:func:`report_progress`) and the terminal shows it (executed notebooks stay bar-free)."""
PROGRESS_INTERVAL = 1.0
"""Seconds between two writes of the progress file (the last status of a loop is always written)."""


def count(n: int, noun: str) -> str:
    """Return ``n`` with ``noun``, plural unless ``n`` is 1: ``count(1, "photo") == "1 photo"``, ``"3 photos"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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


MACHINE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")
"""CPU flags :func:`machine_info` records: instruction sets by which oneDNN picks its kernels (so the rounding of a
network's training, which is why a seed's result can differ between machines)."""


def machine_info() -> dict:
    """Return the machine a result was measured on: CPU name, family and model numbers, :data:`MACHINE_FLAGS` it has,
    cores and PyTorch's version (a trained network can differ between CPUs by a few test faces; this says which)."""
    import platform

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace").split("\n\n", 1)[0]
    except OSError:
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if fields.get("model name"):
        info["cpu"] = fields["model name"]
        info["cpu_model"] = f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
        flags = set(fields.get("flags", "").split())
        info["flags"] = [f for f in MACHINE_FLAGS if f in flags]
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def show_progress(progress: bool = True) -> bool:
    """Return whether to draw a progress bar: ``progress``, unless ``$TQDM_DISABLE`` is set.

    ``nnprak run`` sets it for executed notebooks, where a bar would be stored as a frozen "0 %" widget; tqdm
    itself ignores the variable when ``disable=`` is passed explicitly, hence this helper.
    """
    return bool(progress) and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


_last_report = [0.0]


def report_progress(line: str, force: bool = False) -> bool:
    """Write ``line`` as the latest status to the file named by ``$NNPRAK_PROGRESS``; return whether it was written.

    Nothing happens without the variable (a notebook opened by hand, the tests). Writes are atomic (a reader never
    sees half a line) and at most one per :data:`PROGRESS_INTERVAL` seconds unless ``force``.
    """
    path = os.environ.get(PROGRESS_ENV)
    now = time.monotonic()
    if not path or (not force and now - _last_report[0] < PROGRESS_INTERVAL):
        return False
    try:
        atomic_write_text(path, " ".join(str(line).split()))  # one line
    except OSError:  # the terminal's status is a nicety: never fail a computation over it
        return False
    _last_report[0] = now
    return True


def read_progress(path: str | os.PathLike) -> str:
    """Return the status line last written by :func:`report_progress` to ``path`` ("" when there is none)."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


class ProgressBar:
    """A tqdm bar (shown when :func:`show_progress` allows) that also reports ``"desc i/n unit: postfix"`` to the
    progress file of :func:`report_progress`, so ``nnprak run`` can show loop progress in the terminal while the
    executed notebooks hold no bar. Use like tqdm: ``update(n)``, ``set_postfix_str(s)``, ``close()`` or ``with``.
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", progress: bool = True,
                 initial: int = 0, **tqdm_kwargs):
        from tqdm.auto import tqdm

        self.total, self.desc, self.unit, self.n, self.postfix = total, desc, unit, int(initial), ""
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not show_progress(progress),
                         **tqdm_kwargs)
        report_progress(self.line(), force=True)

    def line(self) -> str:
        """Return the status line: ``"desc i/n unit"`` plus ``": postfix"`` when one is set."""
        total = f"/{self.total}" if self.total else ""
        return f"{self.desc} {self.n}{total} {self.unit}" + (f": {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` (returns None)."""
        self.n += int(n)
        self._bar.update(n)
        report_progress(self.line(), force=self.total is not None and self.n >= self.total)

    def set_total(self, total: int) -> None:
        """Change the number of steps the bar counts to (e.g. a schedule shortened on the way; returns None)."""
        self.total = self._bar.total = int(total)
        self._bar.refresh()
        report_progress(self.line(), force=True)

    def set_postfix_str(self, s: str = "", force: bool = False) -> None:
        """Set the text after the count (loss, accuracy, ...); ``force`` reports it at once (returns None)."""
        self.postfix = str(s)
        self._bar.set_postfix_str(s)
        report_progress(self.line(), force=force)

    def close(self) -> None:
        """Close the bar, reporting the final status (returns None)."""
        report_progress(self.line(), force=True)
        self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_iter(iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "it",
                  progress: bool = True, **tqdm_kwargs) -> Iterator:
    """Yield the items of ``iterable`` while a :class:`ProgressBar` counts them."""
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    with ProgressBar(total, desc, unit, progress, **tqdm_kwargs) as bar:
        for item in iterable:
            yield item
            bar.update(1)


def _umask() -> int:
    """Return the process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically, on error it is removed.

    The temporary name keeps the suffix of ``path`` so that libraries that pick a format from the suffix
    (PIL, matplotlib, pandas) still work::

        with atomic_path("crop.png") as tmp:
            img.save(tmp)

    The file gets the permissions of a plain ``open(path, "w")`` (0666 less the umask), not the temporary file's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 would hide outputs from a team sharing the folder
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
