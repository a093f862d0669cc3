"""Terminal feedback of ``nnprak run``: which notebook and cell runs, elapsed time, an estimate, the loops' progress.

While papermill executes a notebook, a :class:`RunMonitor` prints one status line

* when a new cell starts (at most one line per :data:`MIN_GAP` seconds, so quick cells do not flood the terminal),
* and at least every :data:`HEARTBEAT` seconds, also while a cell is silent,

for example::

    [default 4:05] 03_scratch_resnet | cell 7/18 (2:31) | ~6:30 left | training 3/30 epochs: epoch 4 batch 12/33: ...

``~6:30 left`` comes from the previous run's ``results/run_times.json`` of the profile (no estimate without it);
the last part is the latest status the kernel's loops wrote to the progress file (:func:`nnprak.utils.report_progress`,
``$NNPRAK_PROGRESS``), so the executed notebooks themselves hold no progress bars. Plain lines, no terminal control
codes: it reads the same in a terminal, a log file and CI.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

from .utils import read_progress

HEARTBEAT = 8.0
"""Seconds between two status lines while nothing changes: 8, so that with polling and a busy CPU a line still
comes at least every 10 s (one 11 s gap was measured with 10)."""
MIN_GAP = 2.0
"""Seconds at least between two status lines when cells change quickly."""
POLL = 0.5
"""Seconds between two looks of the heartbeat thread at the state."""


def fmt_seconds(seconds: float) -> str:
    """Return ``seconds`` as ``m:ss`` (``h:mm:ss`` from an hour on)."""
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def previous_times(path: str | Path) -> dict[str, float]:
    """Return ``{notebook stem: seconds}`` of an earlier run's ``run_times.json`` ({} when missing or unreadable)."""
    try:
        seconds = json.loads(Path(path).read_text(encoding="utf-8"))["seconds"]
        return {str(k): float(v) for k, v in seconds.items() if k != "total"}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def code_cells(notebook: str | Path) -> int:
    """Return the number of non-empty code cells of a notebook file (the cells papermill executes)."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    return sum(1 for c in nb.get("cells", []) if c.get("cell_type") == "code"
               and "".join(c.get("source", "")).strip())


class RunMonitor:
    """Prints the status lines of one ``nnprak run`` (see the module text); a context manager running the heartbeat.

    Call :meth:`start_notebook` before executing a notebook, pass :meth:`cell_hook` to papermill as
    ``on_cell_execute`` and call :meth:`end_notebook` after it. ``clock`` and ``out`` are for tests.
    """

    def __init__(self, profile: str, order: list[str], previous: dict[str, float] | None = None,
                 progress_file: str | Path | None = None, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, heartbeat: float = HEARTBEAT, min_gap: float = MIN_GAP):
        self.profile, self.order, self.previous = profile, list(order), dict(previous or {})
        self.progress_file = Path(progress_file) if progress_file else None
        self.out, self.clock, self.heartbeat, self.min_gap = out, clock, float(heartbeat), float(min_gap)
        self.poll = min(POLL, self.min_gap / 2)
        self.t_run = clock()
        self.notebook: str | None = None
        self.n_cells = 0
        self.cell = 0                 # 1-based ordinal of the running code cell, 0 while the kernel starts
        self.t_notebook = self.t_cell = self.t_run
        self.last_line = -float("inf")
        self.pending = False          # a cell started since the last line
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- state changes (papermill's thread) -------------------------------------------------------------------
    def start_notebook(self, stem: str, n_cells: int) -> None:
        """Mark notebook ``stem`` (with ``n_cells`` code cells) as running (returns None)."""
        with self._lock:
            self.notebook, self.n_cells, self.cell = stem, int(n_cells), 0
            self.t_notebook = self.t_cell = self.clock()
            self.pending = False
            self.last_line = self.t_notebook   # the caller prints the notebook's first line itself
            self._clear_progress()

    def cell_hook(self, cell=None, cell_index=None, **_) -> None:
        """Mark the next code cell as running: the ``on_cell_execute`` hook of nbclient (returns None)."""
        with self._lock:
            self.cell += 1
            self.t_cell = self.clock()
            self.pending = True
            self._clear_progress()   # a loop status belongs to the cell that wrote it

    def end_notebook(self) -> None:
        """Mark the notebook as finished (returns None)."""
        with self._lock:
            self.notebook, self.pending = None, False
            self._clear_progress()

    def _clear_progress(self) -> None:
        if self.progress_file is not None:
            self.progress_file.unlink(missing_ok=True)

    # -- lines ------------------------------------------------------------------------------------------------
    def remaining(self, now: float | None = None) -> float | None:
        """Return the estimated seconds left of the run from the previous run's times (None without them)."""
        if self.notebook is None or self.notebook not in self.previous:
            return None
        now = self.clock() if now is None else now
        later = self.order[self.order.index(self.notebook) + 1:] if self.notebook in self.order else []
        if any(s not in self.previous for s in later):
            return None
        left = max(0.0, self.previous[self.notebook] - (now - self.t_notebook))
        return left + sum(self.previous[s] for s in later)

    def status_line(self, now: float | None = None) -> str:
        """Return the current status line (notebook, cell, times, estimate, the kernel's latest loop status)."""
        now = self.clock() if now is None else now
        parts = [f"[{self.profile} {fmt_seconds(now - self.t_run)}] {self.notebook or 'between notebooks'}"]
        if self.notebook is not None:
            if self.cell == 0:
                parts.append(f"starting the kernel ({fmt_seconds(now - self.t_notebook)})")
            else:
                parts.append(f"cell {self.cell}/{self.n_cells} ({fmt_seconds(now - self.t_cell)})")
            left = self.remaining(now)
            if left is not None:
                over = now - self.t_notebook - self.previous[self.notebook]
                parts.append(f"~{fmt_seconds(left)} left" + (f" ({fmt_seconds(over)} over the previous run's time "
                                                               "of this notebook)" if over > 0 else ""))
            if self.progress_file is not None and self.cell:
                loop = read_progress(self.progress_file)
                if loop:
                    parts.append(loop)
        return " | ".join(parts)

    def tick(self, now: float | None = None) -> str | None:
        """Print and return a status line when one is due (a new cell, or :attr:`heartbeat` seconds of silence)."""
        with self._lock:
            now = self.clock() if now is None else now
            if self.notebook is None:
                return None
            quiet = now - self.last_line
            if not (quiet >= self.heartbeat or (self.pending and quiet >= self.min_gap)):
                return None
            line = self.status_line(now)
            self.last_line, self.pending = now, False
        self.print(line)
        return line

    def print(self, line: str) -> None:
        """Print one line to the terminal (``out``, default stdout) and flush it (returns None)."""
        out = self.out if self.out is not None else sys.stdout
        print(line, file=out, flush=True)

    # -- the heartbeat thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.tick()
            except Exception as err:  # a broken terminal line must never stop the run
                self.print(f"(progress display failed: {type(err).__name__}: {err})")
                return

    def __enter__(self) -> "RunMonitor":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nnprak-run-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._clear_progress()
