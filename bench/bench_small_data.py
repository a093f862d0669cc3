"""The scratch CNN and eigenfaces on a student-sized set made from LFW: 40 people x 10 grayscale photos.

    python bench/bench_small_data.py                       # 40 x 10 grayscale PGM files, seeds 42 43 44
    python bench/bench_small_data.py --seeds 42 --set lr=0.002 --work /tmp/pgm40 --out results/x.json  # a trial
    python bench/bench_small_data.py --people 40 --images 25 --out results/bench_mid_data.json  # 40 x 25 grey

Builds the set with ``bench/make_photo_sets.py`` (LFW people outside the default 62, 10 images each, saved as
grayscale PGM; the split gives 6 training, 2 validation and 2 test photos per person; with ``--images`` over 19 LFW's
people with that many images, mostly LFW-62's), runs stages 01 and 02
on it (manifest, split, MTCNN crops, the background people's crops) into ``--work`` and then
``bench/bench_scratch_seeds.py`` on those crops with
the eigenfaces baseline: the scratch settings come from :func:`nnprak.config.scratch_for_data`, the rules a
student's set gets. Writes ``results/bench_small_data.json`` (the report reads it: a run with other settings or
another set is refused there and needs ``--out``). LFW is only read.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=40)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--work", type=Path, default=None, help="folder for the photos and outputs (default: a temp dir); "
                    "an existing one is reused (its photos and crops)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: <results>/bench_small_data.json)")
    return ap.parse_known_args(argv)


def prepare(work: Path, people: int, images: int) -> Path:
    """Return the crops CSV of a ``people`` x ``images`` grayscale set under ``work`` (built on first use)."""
    import make_photo_sets

    from nnprak import background, config, data, faces

    photos = work / "photos"
    if not photos.is_dir():
        tmp = work / "photos.partial"
        tmp.mkdir(parents=True, exist_ok=True)
        make_photo_sets.make_gray(tmp, config.SEED, people, images, "PPM", ".pgm")
        tmp.rename(photos)
    paths = config.Paths.under(work).make()
    cfg = config.load("default", source=str(photos), paths=paths)
    if not paths.crops.exists():
        manifest = data.build_manifest(cfg, progress=False)
        data.save_manifest(manifest, paths.manifest)
        faces.crop_manifest(manifest, cfg, progress=True)
    if cfg.scratch.get("background") and not (paths.processed / background.BACKGROUND_CROPS).exists():
        people = sorted(data.load_manifest(paths.manifest)["person"].unique())
        background.background_crops(cfg, people, progress=True)   # LFW people outside the set, as notebook 02
    return paths.crops


PASSED_ON = ("--seeds", "--threads", "--no-progress", "--checkpoint-dir", "--merge")
"""Options of ``bench_scratch_seeds.py`` that keep a run fit for the default results file (they change no result)."""


def trial_options(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """Return the options that make this run a trial (another set or other settings), [] for the set of the report."""
    own = [f"--{name}" for name, default in (("people", 40), ("images", 10)) if getattr(args, name) != default]
    return own + [a.split("=")[0] for a in rest if a.startswith("--") and a.split("=")[0] not in PASSED_ON]


def main(argv=None) -> dict:
    args, rest = parse(argv)
    import bench_scratch_seeds

    from nnprak import config

    out = args.out or config.load("default").paths.small_data_benches[0]
    trial = [] if args.out is not None else trial_options(args, rest)
    if trial:   # before building the set: the report reads the default file
        raise SystemExit(f"{out} is the 40 x 10 set's bench with the default settings, which the report reads; "
                         f"{', '.join(trial)} make this run a trial: name another results file with --out "
                         "results/<name>.json")
    work = args.work or Path(tempfile.mkdtemp(prefix="nnprak_small_"))
    crops = prepare(work, args.people, args.images)
    if "--seeds" not in rest:
        rest += ["--seeds", "42", "43", "44"]
    bg = ["--background-crops", str(crops.parent / "background_crops.csv")]
    return bench_scratch_seeds.main(["--crops", str(crops), "--eigenfaces", "--residual-only", "--out", str(out),
                                     *bg, *rest])


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
