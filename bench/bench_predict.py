"""The class demo measured: `python -m nnprak predict` on unseen photos of gallery people and of strangers.

Takes the profile's saved predict model (``models/predict.joblib``, written by notebook 05) and
* ``--n`` test photos of gallery people (the test split of the crops table, one photo per person, people spread
  over the alphabet): the photo counts as right when its subject (the face notebook 02's selection rule picks,
  the one its label belongs to) is named as that person;
* ``--n`` photos of strangers (the impostor test split, one per person: people neither the classifier nor the
  threshold has seen): right when no face in the photo is named.
Prints each photo's result and the two counts; ``--out`` writes them as JSON.

    .venv/bin/python bench/bench_predict.py --profile default --out results/bench_predict.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnprak import classify, config, data, evaluate, faces, predict  # noqa: E402
from nnprak.utils import write_json  # noqa: E402


def spread(table, n: int):
    """Return one row per person for ``n`` people spread evenly over the sorted people of ``table``."""
    first = table.sort_values(["person", "path"]).drop_duplicates("person")
    pick = np.unique(np.linspace(0, len(first) - 1, min(n, len(first))).round().astype(int))
    return first.iloc[pick]


def subject(result: predict.PhotoResult, rule: str):
    """Return the face of a photo that notebook 02's selection ``rule`` picks (the labelled person), or None."""
    if not result.faces or result.image is None:
        return None
    i = faces.select_face(np.array([f.box for f in result.faces]), np.array([f.detection_prob for f in result.faces]),
                          result.image.size, rule)
    return result.faces[i] if i >= 0 else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--n", type=int, default=20, help="photos of each kind (default 20)")
    ap.add_argument("--out", type=Path, help="write the counts and every photo's result as JSON here")
    args = ap.parse_args(argv)
    cfg = config.load(args.profile)
    paths = cfg.paths
    model = paths.predict_model
    if not model.exists():
        print(f"{data.rel_path(model)} is missing: run notebook 05 of the {args.profile} profile first", file=sys.stderr)
        return 2
    crops = faces.load_crops(paths.crops)
    known = spread(crops[(crops["split"] == "test") & (crops["face_status"] == "ok")], args.n)
    imp = faces.load_crops(paths.processed / data.IMPOSTOR_CROPS)
    strangers = spread(imp[(imp["split"] == "test") & (imp["face_status"] == "ok")], args.n)
    mislabelled = evaluate.lfw_mislabelled_images() if cfg.is_lfw else set()
    rows = []
    for kind, table in (("gallery", known), ("stranger", strangers)):
        res = predict.predict_photos([data.abs_path(p) for p in table["path"]], model)
        for r, truth in zip(res, table["person"]):
            face = subject(r, cfg.face_select)
            named = [f.name for f in r.faces if f.name != classify.UNKNOWN]
            ok = (face is not None and face.name == truth) if kind == "gallery" else not named
            errata = Path(r.photo).stem in mislabelled
            rows.append({"kind": kind, "photo": Path(r.photo).name, "truth": truth if kind == "gallery" else "(stranger)",
                         "lfw_errata": errata,
                         "subject": face.name if face else (r.problem or "no face"),
                         "score": round(face.confidence, 3) if face else None, "faces": len(r.faces), "right": ok})
            print(f"{kind:8s} {'ok ' if ok else 'BAD'} {Path(r.photo).name:32s} -> {rows[-1]['subject']}"
                  + (f" ({face.confidence:.2f}, threshold {face.threshold:.2f})" if face else "")
                  + (f", also named: {named}" if kind == "stranger" and named else "")
                  + ("  [LFW errata: this photo shows someone else]" if errata else ""))
    g = [r["right"] for r in rows if r["kind"] == "gallery"]
    s = [r["right"] for r in rows if r["kind"] == "stranger"]
    n_errata = sum(r["lfw_errata"] for r in rows)
    print(f"gallery people named correctly: {sum(g)}/{len(g)}; strangers said unknown: {sum(s)}/{len(s)} "
          f"(model {data.rel_path(model)}, profile {args.profile})"
          + (f"; {n_errata} photo(s) are labelled wrongly in LFW (errata)" if n_errata else ""))
    if args.out:
        write_json(args.out, {"profile": args.profile, "model": data.rel_path(model), "gallery_named": sum(g),
                              "gallery_photos": len(g), "strangers_unknown": sum(s), "stranger_photos": len(s),
                              "lfw_errata_photos": n_errata,
                              "photos": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
