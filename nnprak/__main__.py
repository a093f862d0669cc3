"""Command line: ``python -m nnprak run`` executes the notebooks; more sub-commands are added per stage."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import config
from .utils import PROGRESS_ENV, atomic_path, count, machine_info, write_json

NOTEBOOK_DIR = config.ROOT / "notebooks"
KERNELSPEC = {"name": "nnprak", "display_name": "Python (nnprak)", "language": "python"}
"""The kernel the committed notebooks name: this project's .venv, registered by ``make setup`` (``make kernel``)."""


def notebooks(only: list[str] | None = None) -> list[Path]:
    """Return the numbered notebooks (``notebooks/0*.ipynb``) in order, optionally only those whose name starts
    with one of ``only`` (e.g. ``["01", "02"]``)."""
    found = sorted(NOTEBOOK_DIR.glob("0*.ipynb"))
    return [nb for nb in found if not only or any(nb.name.startswith(o) for o in only)]


def _strip_machine_paths(executed: Path, name: str) -> None:
    """Replace papermill's absolute input/output paths in an executed notebook by the notebook's own name.

    They name a temporary file on the machine that ran it; committed notebooks should not carry them. The
    kernel is set back to :data:`KERNELSPEC`, and saved widget state (progress bars of some earlier interactive
    run: this run draws none) is dropped.
    """
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in meta:
            meta[key] = f"notebooks/{name}"
    nb.metadata["kernelspec"] = dict(KERNELSPEC)  # papermill ran "python3" of this env; users open it as nnprak
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, executed)


def use_photos(folder: str | os.PathLike) -> Path:
    """Return the absolute own-photos folder after making it the source of every notebook (``$NNPRAK_PHOTOS``).

    Raises:
        FileNotFoundError: the folder does not exist or holds no person folders (the message shows the layout).
    """
    root = Path(os.path.abspath(os.path.expanduser(str(folder))))
    if not root.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder. Put the photos in {folder}/<person name>/<photo>.jpg "
                                "(one folder per person) and pass that folder.")
    if not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        raise FileNotFoundError(f"{folder} has no person folders. Put the photos in {folder}/<person name>/<photo>.jpg "
                                "(one folder per person, at least 4 photos each).")
    os.environ[config.PHOTOS_ENV] = str(root)
    return root


def kernel_config():
    """Return the traitlets config papermill's kernel manager gets: IPC transport (Unix sockets) instead of TCP.

    Over TCP, ipykernel >= 7 warns twice per notebook that the "Kernel is running over TCP without encryption";
    IPC sockets are files only this user can open, which is the transport that warning recommends.
    """
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc"}})


def data_summary(cfg: config.Config) -> list[str]:
    """Return the lines the terminal shows after a run: files notebook 01 left out, images without a face and people
    notebook 02 left out (each with the notebook that lists them), and where the executed notebooks are."""
    from . import data, faces

    lines = []
    if cfg.paths.manifest.exists():
        manifest = data.load_manifest(cfg.paths.manifest)
        bad = manifest.loc[manifest["status"] != data.STATUS_OK, "status"].value_counts()
        if len(bad):
            what = ", ".join(f"{n} {status}" for status, n in bad.items())
            lines.append(f"left out by notebook 01 (its table says why and what to do): {what}")
    if cfg.paths.crops.exists():
        crops = faces.load_crops(cfg.paths.crops)
        usable = crops[crops["status"] == data.STATUS_OK]
        no_face = usable.loc[~usable["face_status"].isin(["ok", faces.NO_TRAINING_FACE]), "face_status"].value_counts()
        if len(no_face):
            lines.append("images without a usable face (notebook 02 lists them): "
                         + ", ".join(f"{n} {status}" for status, n in no_face.items()))
        left = sorted(faces.left_out_people(crops))
        if left:
            lines.append(f"people left out by notebook 02 (fewer than {faces.MIN_TRAINING_FACES} training photos with a "
                         f"face): {', '.join(left)}")
    lines.append(f"executed notebooks: {data.rel_path(cfg.paths.notebooks_out)}/ | results: "
                 f"{data.rel_path(cfg.paths.results)}/")
    return lines


def run_notebooks(profile: str, only: list[str] | None = None, log_output: bool = False) -> dict:
    """Execute the notebooks with papermill (``PROFILE`` parameter) and return seconds per notebook.

    The data set is the profile's (LFW) unless ``$NNPRAK_PHOTOS`` names a folder of own photos (:func:`use_photos`).

    Executed notebooks replace ``notebooks/*.ipynb`` for the ``default`` profile (so the committed notebooks
    carry the outputs of the default run) and go to ``build/<profile>/notebooks/`` otherwise. Each is
    written atomically: a failed run leaves the previous notebook in place and keeps the failed one
    next to it as ``<name>.failed.ipynb`` for inspection.

    The terminal shows the running notebook and cell, the elapsed time, an estimate from the previous run's
    ``run_times.json`` and the kernel's loop progress (:class:`nnprak.monitor.RunMonitor`); the executed notebooks
    hold no progress bars (``$TQDM_DISABLE``). The kernel talks to papermill over local IPC sockets
    (:func:`kernel_config`), not TCP.
    """
    import tempfile

    import papermill as pm

    from .monitor import RunMonitor, code_cells, fmt_seconds, previous_times

    cfg = config.load(profile)
    out_dir = cfg.paths.make().notebooks_out
    print(f"[{profile}] data: {cfg.describe_source()}", flush=True)
    # Progress bars are for people watching; in executed notebooks they would be frozen widgets at 0 %.
    # The terminal gets the loops' progress through the progress file instead ($NNPRAK_PROGRESS, read by the monitor).
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ["NNPRAK_PROFILE"] = profile
    selected = notebooks(only)
    previous = previous_times(cfg.paths.results / "run_times.json")
    times = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nnprak-run-") as tmp_dir:
        progress_file = Path(tmp_dir) / "progress.txt"
        os.environ[PROGRESS_ENV] = str(progress_file)
        monitor = RunMonitor(profile, [nb.stem for nb in selected], previous, progress_file)
        try:
            with monitor:
                for nb in selected:
                    target = out_dir / nb.name
                    before = f", {fmt_seconds(previous[nb.stem])} in the previous run" if nb.stem in previous else ""
                    n_cells = code_cells(nb)
                    monitor.print(f"[{profile}] {nb.name}: {n_cells} cells{before} ...")
                    t0 = time.perf_counter()
                    monitor.start_notebook(nb.stem, n_cells)
                    with atomic_path(target) as tmp:
                        try:
                            # The profile reaches the kernel through the environment, not as an injected parameters
                            # cell: an injected `PROFILE = "default"` would stay in the committed notebooks and
                            # override the smoke profile when nbval runs them in CI.
                            pm.execute_notebook(str(nb), str(tmp), parameters={}, cwd=str(NOTEBOOK_DIR),
                                                log_output=log_output, progress_bar=False, kernel_name="python3",
                                                on_cell_execute=monitor.cell_hook, config=kernel_config())
                            _strip_machine_paths(tmp, nb.name)
                        except Exception:
                            failed = out_dir / f"{nb.stem}.failed.ipynb"
                            os.replace(tmp, failed)
                            print(f"{nb.name} failed; its executed copy is {failed}", file=sys.stderr)
                            raise
                        finally:
                            monitor.end_notebook()
                    (out_dir / f"{nb.stem}.failed.ipynb").unlink(missing_ok=True)   # an earlier failure is fixed
                    times[nb.stem] = round(time.perf_counter() - t0, 1)
                    monitor.print(f"[{profile}] {nb.name} done in {times[nb.stem]:.0f} s")
        finally:
            os.environ.pop(PROGRESS_ENV, None)
    times["total"] = round(time.perf_counter() - start, 1)
    if not only:
        from . import report

        write_json(cfg.paths.results / "run_times.json", {"profile": profile, "seconds": times, "threads": cfg.threads,
                                                          "device": str(cfg.torch_device),
                                                          "data": cfg.describe_source(), "machine": machine_info()})
        report.write_numbers({"RunMinutes": report.num(times["total"] / 60)}, folder=cfg.paths.tables)
        from . import results

        # the README's table is LFW-62's: judged by the manifest the notebooks used (notebook 01's SOURCE can differ)
        if profile == "default" and results.current_dataset(cfg)["source"] == "lfw":
            refused = results.refresh_readme(cfg.paths.results)   # results/ of another data set: the run stands
            if refused:
                print(f"[{profile}] {refused}")
    print(f"[{profile}] all notebooks done in {times['total'] / 60:.1f} min")
    for line in data_summary(cfg):
        print(f"[{profile}] {line}")
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    parser = argparse.ArgumentParser(prog="python -m nnprak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute notebooks 01-06 with papermill")
    p_run.add_argument("--profile", default=None, help="smoke | default | full (default: $NNPRAK_PROFILE or default)")
    p_run.add_argument("--only", nargs="*", help="notebook number prefixes to run, e.g. --only 01 02")
    p_run.add_argument("--photos", default=None, metavar="FOLDER",
                       help="your own photos, FOLDER/<person>/<photo> (default: $NNPRAK_PHOTOS, else LFW)")
    p_rep = sub.add_parser("report", help="compile report/report.pdf and report/slides.pdf from the generated "
                                          "figures, tables and numbers")
    p_rep.add_argument("--only", choices=("report", "slides"), default=None, help="build only one of the two")
    p_rep.add_argument("--profile", default=None, help="whose figures/tables to use (default: default)")
    p_rep.add_argument("--photos", default=None, metavar="FOLDER", help="the own-photos folder the results are of")
    p_bench = sub.add_parser("bench", help="print the README's results table from results/ (and refresh README.md)")
    p_bench.add_argument("--profile", default=None)
    p_bench.add_argument("--write", action="store_true", help="also replace the table in README.md")
    p_pred = sub.add_parser("predict", help="name every face in photos (or say unknown); a folder gives a contact sheet")
    p_pred.add_argument("photo", nargs="+", help="photo files (JPEG, PNG, ...) and/or folders of photos")
    p_pred.add_argument("--model", default=None,
                        help=f"trained classifier (default: models/predict.joblib of the profile, the best open-set "
                             "model of notebook 05)")
    p_pred.add_argument("--out", default=None, help="one photo: write it with boxes and names to this file")
    p_pred.add_argument("--sheet", default=None, metavar="PNG",
                        help="write one annotated contact sheet of all photos (PNG and PDF next to it); default "
                             "contact_sheet.png in the current folder (in the profile's results/ when that is one "
                             "of the photo folders) when a folder or several photos are given")
    p_pred.add_argument("--top-k", type=int, default=1, metavar="K", help="also list the K best candidates per face")
    p_pred.add_argument("--profile", default=None, help="whose models/ folder holds the default model")
    p_pred.add_argument("--min-prob", type=float, default=0.9, help="minimum face detection probability")
    p_enr = sub.add_parser("enroll", help="add a person to the saved gallery model from a few photos of them")
    p_enr.add_argument("name", help="the person's name (as it should be printed)")
    p_enr.add_argument("photo", nargs="+", help="photos (or folders of photos) of that person, one face each")
    p_enr.add_argument("--model", default=None, help=f"the model to extend (default: models/predict.joblib)")
    p_enr.add_argument("--out", default=None, help="write the extended model here (default: replace --model)")
    p_enr.add_argument("--profile", default=None, help="whose models/ folder holds the default model")
    p_enr.add_argument("--min-prob", type=float, default=0.9, help="minimum face detection probability")
    args = parser.parse_args(argv)
    if getattr(args, "photos", None):
        try:
            use_photos(args.photos)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.command == "run":
        run_notebooks(config.profile_name(args.profile), args.only)
    elif args.command == "predict":
        return predict_command(args)
    elif args.command == "enroll":
        return enroll_command(args)
    elif args.command == "bench":
        from . import results

        cfg = config.load(args.profile)
        print(results.readme_table(cfg.paths.results))
        if args.write:
            refused = results.refresh_readme(cfg.paths.results)   # results of own photos: LFW's table stays
            if refused:
                print(refused, file=sys.stderr)
                return 1
    elif args.command == "report":
        from . import report

        from . import results

        cfg = config.load(args.profile)
        try:
            results.check_dataset(results.load_results(cfg.paths.results) + results.load_verifications(cfg.paths.results))
        except results.DatasetMismatch as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for what, source in (("report", report.REPORT_TEX), ("slides", report.SLIDES_TEX)):
            if args.only in (None, what):
                try:
                    pdf = report.build_pdf(report.report_tex(cfg, source))
                    print(f"{what} written:", pdf)
                    for line in report.layout_problems(pdf):
                        print(f"  warning: {pdf.name} {line}", file=sys.stderr)
                except report.LatexError as err:
                    print(f"error: {err}", file=sys.stderr)
                    return 1
    return 0


def _model_path(args) -> Path:
    return Path(args.model) if args.model else config.load(args.profile).paths.predict_model


def predict_command(args) -> int:
    """Run ``predict`` and return the exit code: one line per face, one line per bad photo on stderr (no tracebacks).

    Exit code 0 when every photo gave faces, 1 when some did not (one photo: it has no face), 2 when nothing could
    be tried (no model, no photo, one photo that cannot be read).
    """
    from . import classify
    from .predict import (NoFaceFound, collect_photos, contact_sheet, load_embedder, predict_file, predict_photos,
                          problem_line)

    photos, problems = collect_photos(args.photo)
    for line in problems:
        print(line, file=sys.stderr)
    if not photos:
        if not problems:
            print("error: no photos to look at", file=sys.stderr)
        return 2
    try:
        model = classify.FaceClassifier.load(_model_path(args))
        embedder = load_embedder(model)   # before any photo: missing weights are the model's problem, not a photo's
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print("error: --top-k must be at least 1", file=sys.stderr)
        return 2
    many = len(photos) > 1 or any(Path(p).is_dir() for p in args.photo)
    if not many and not args.sheet:
        try:
            preds = predict_file(photos[0], model, args.out, args.min_prob, args.top_k, embedder=embedder)
        except (OSError, ValueError) as err:  # no face: 1; unreadable photo: 2 (nothing could be tried)
            print(problem_line(photos[0], err), file=sys.stderr)
            return 1 if isinstance(err, NoFaceFound) else 2
        for i, p in enumerate(preds, 1):
            print(f"face {i}: {p.line()}")
        if args.out:
            print(f"annotated photo written to {args.out}")
        return 0
    results = predict_photos(photos, model, args.min_prob, args.top_k, embedder=embedder)
    failed = 0
    for r in results:
        if r.problem:
            failed += 1
            print(r.problem, file=sys.stderr)
        for i, p in enumerate(r.faces, 1):
            print(f"{r.photo}: face {i}: {p.line()}")
    written = contact_sheet(results, args.sheet or default_sheet(args.photo))
    named = sum(p.name != classify.UNKNOWN for r in results for p in r.faces)
    faces = sum(len(r.faces) for r in results)
    print(f"{count(len(results), 'photo')}, {count(faces, 'face')} ({named} named, {faces - named} unknown), "
          f"{failed} without a usable face | contact sheet: {', '.join(map(str, written))}")
    return 1 if failed or problems else 0


def default_sheet(inputs) -> Path:
    """Return where ``predict`` writes its contact sheet without ``--sheet``: ``contact_sheet.png`` in the current
    folder, or in the profile's results folder when the current folder is (inside) one of the photo folders given,
    which are only read (and a sheet there would be read as a photo next time)."""
    here = Path.cwd().resolve()
    folders = [Path(p).resolve() for p in inputs if Path(p).is_dir()]
    inside = any(here == f or here.is_relative_to(f) for f in folders)
    return config.active().paths.make().results / "contact_sheet.png" if inside else Path("contact_sheet.png")


def enroll_command(args) -> int:
    """Run ``enroll`` and return the exit code: add a person to the saved model; one line per photo problem,
    non-zero exit on failure."""
    from . import classify
    from .predict import collect_photos, enroll_photos

    photos, problems = collect_photos(args.photo)
    for line in problems:
        print(line, file=sys.stderr)
    path = _model_path(args)
    try:
        model = classify.FaceClassifier.load(path)
        name = model.gallery_name(args.name.strip())
        if name != args.name.strip():
            print(f"{args.name} is {name} of the gallery: adding the photos to {name}")
        model, used, skipped = enroll_photos(model, name, photos, args.min_prob)
    except (FileNotFoundError, ValueError) as err:  # EnrolError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in skipped:
        print(line, file=sys.stderr)
    out = Path(args.out) if args.out else path
    model.save(out)
    print(f"enrolled {name} from {len(used)} of {len(photos)} photos; the gallery has {len(model.people)} "
          f"people; same threshold {model.threshold:.3f} ({model.score} score) | model: {out}")
    return 1 if skipped or problems else 0


if __name__ == "__main__":
    sys.exit(main())
