"""Command line: ``python -m nnprak run`` executes the notebooks; more sub-commands are added per stage."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import config
from .utils import atomic_path, write_json

NOTEBOOK_DIR = config.ROOT / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    """Return the numbered notebooks (``notebooks/0*.ipynb``) in order, optionally only those whose name starts
    with one of ``only`` (e.g. ``["01", "02"]``)."""
    found = sorted(NOTEBOOK_DIR.glob("0*.ipynb"))
    return [nb for nb in found if not only or any(nb.name.startswith(o) for o in only)]


def run_notebooks(profile: str, only: list[str] | None = None, log_output: bool = False) -> dict:
    """Execute the notebooks with papermill (``PROFILE`` parameter) and return seconds per notebook.

    Executed notebooks replace ``notebooks/*.ipynb`` for the ``default`` profile (so the committed notebooks
    carry the outputs of the default run) and go to ``build/<profile>/notebooks/`` otherwise. Each is
    written atomically: a failed run leaves the previous notebook in place and keeps the failed one
    next to it as ``<name>.failed.ipynb`` for inspection.
    """
    import papermill as pm

    cfg = config.load(profile)
    out_dir = cfg.paths.make().notebooks_out
    times = {}
    start = time.perf_counter()
    for nb in notebooks(only):
        target = out_dir / nb.name
        print(f"[{profile}] {nb.name} ...", flush=True)
        t0 = time.perf_counter()
        with atomic_path(target) as tmp:
            try:
                pm.execute_notebook(str(nb), str(tmp), parameters={"PROFILE": profile}, cwd=str(NOTEBOOK_DIR),
                                    log_output=log_output, progress_bar=False, kernel_name="python3")
            except Exception:
                failed = out_dir / f"{nb.stem}.failed.ipynb"
                os.replace(tmp, failed)
                print(f"{nb.name} failed; its executed copy is {failed}", file=sys.stderr)
                raise
        times[nb.stem] = round(time.perf_counter() - t0, 1)
        print(f"[{profile}] {nb.name} done in {times[nb.stem]:.0f} s", flush=True)
    times["total"] = round(time.perf_counter() - start, 1)
    if not only:
        write_json(cfg.paths.results / "run_times.json", {"profile": profile, "seconds": times, "threads": cfg.threads})
    print(f"[{profile}] all notebooks done in {times['total'] / 60:.1f} min")
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = argparse.ArgumentParser(prog="python -m nnprak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute notebooks 01-06 with papermill")
    p_run.add_argument("--profile", default=None, help="smoke | default | full (default: $NNPRAK_PROFILE or default)")
    p_run.add_argument("--only", nargs="*", help="notebook number prefixes to run, e.g. --only 01 02")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_notebooks(config.profile_name(args.profile), args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
