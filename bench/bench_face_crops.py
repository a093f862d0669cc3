"""Photos that are already face crops: faces MTCNN finds with and without the grey-border pass, and what a
classifier then names.

Builds ``bench/make_photo_sets.py cropped`` (40 LFW people outside the default 62 x 10 grey PGM files of
92 x 112 px, each cut to the face box) in a temporary folder, splits it as notebook 01 does, crops it as
notebook 02 does with ``detect_pad_retry`` off and on (:data:`nnprak.faces.DEFAULT_PAD_RETRY`), then with the set's
face layout for the photos still without a face (``face_only_layout``, :func:`nnprak.faces.whole_photo_faces`), and
prints per run the faces found, the people notebook 02 keeps (at least 2 training faces) and the test accuracy on their test
photos of a linear SVM on dlib embeddings, chosen as notebook 05 chooses it (a test photo without a face counts as
an error).

    .venv/bin/python bench/bench_face_crops.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from nnprak import classify, config, data, embed, faces  # noqa: E402

import make_photo_sets  # noqa: E402


def run(photos: Path, out: Path, pad: float | None, layout: bool) -> str:
    """Return one printable line of a crop run on ``photos`` with ``detect_pad_retry=pad``, ``face_only_layout``."""
    paths = config.Paths.under(out)
    cfg = config.load("default", source=str(photos), paths=paths.make(), detect_pad_retry=pad,
                      face_only_layout=layout)
    start = time.perf_counter()
    table = faces.crop_manifest(data.build_manifest(cfg, progress=False), cfg, progress=False, leave_out=True)
    seconds = time.perf_counter() - start
    found = table["face_status"].isin(["ok", faces.NO_TRAINING_FACE])   # found, whether or not the person is kept
    kept = ~table["person"].isin(faces.left_out_people(table))
    line = (f"detect_pad_retry={pad}, face_only_layout={layout}: faces {int(found.sum())} of {len(table)} "
            f"({table.attrs['stats']['padded']} detected inside a border, {table.attrs['stats']['whole_photo']} given "
            f"the set's face layout), people kept {table.loc[kept, 'person'].nunique()} of "
            f"{table['person'].nunique()}, {seconds:.0f} s")
    table = table[kept].reset_index(drop=True)
    X = embed.cached_embeddings(embed.get_embedder("dlib"), table, cfg.paths.embeddings, progress=False)
    y, split = table["person"].to_numpy(dtype=object), table["split"].to_numpy()
    has = ~np.isnan(X).any(axis=1)
    tr, va, te = (split == "train") & has, (split == "val") & has, split == "test"
    search = classify.fit_classifier("svm_linear", X[tr], y[tr], X_val=X[va], y_val=y[va],
                                     max_cv_folds=cfg.max_cv_folds)
    pred, _ = classify.predict_with_missing(search, X[te])
    return line + f" | linear SVM test accuracy {np.mean(pred == y[te]):.1%} of {int(te.sum())} test photos"


def main() -> int:
    """Build the set, crop it both ways and print the two lines."""
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        make_photo_sets.make_gray(photos, config.SEED, 40, 10, "PPM", ".pgm", face_only=True)
        for pad, layout in ((None, False), (faces.DEFAULT_PAD_RETRY, False), (faces.DEFAULT_PAD_RETRY, True)):
            print(run(photos, Path(tmp) / f"out_{pad}_{layout}", pad, layout), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
