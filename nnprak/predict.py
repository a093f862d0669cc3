"""``python -m nnprak predict PHOTO|FOLDER``: who is in these photos? Detect every face, embed it, name it or say
"unknown"; a contact sheet of many photos for a slide; ``python -m nnprak enroll NAME PHOTO...`` adds a person."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import classify, config, data, embed, faces
from .utils import atomic_path

LABEL_PT = 8.0
"""Type size of the name labels on a contact sheet (readable on a slide at the sheet's own size)."""
CAPTION_PT = 8.0
"""Type size of a contact sheet's file names and problem lines (Beamer's \\scriptsize, the smallest on a slide)."""


LAYOUT_NOTE = "no face found; the gallery's photos are face crops: its face layout used"
"""What a prediction or an enrolled photo says when its face is the gallery's face layout (:func:`detect_faces`)."""


class NoFaceFound(ValueError):
    """The photo holds no face MTCNN can find."""


@dataclass
class FacePrediction:
    """One face of a photo: its box (x1, y1, x2, y2), the name (or "unknown") and the confidence.

    ``closest`` is the gallery person the classifier named (the name itself unless the confidence was not above
    ``threshold``, the open-set threshold of the model). The confidence measures the face against that person's
    gallery faces only, so another candidate of ``--top-k`` can score higher than the classifier's guess.
    ``detection_prob`` is NaN for a face that MTCNN did not find: the face layout of a gallery of face crops.
    """

    box: tuple
    name: str
    confidence: float
    detection_prob: float
    closest: str = ""
    threshold: float = 0.0
    candidates: list = None            # [(person, score), ...] with --top-k: ``closest`` first, then by score

    def line(self) -> str:
        """Return the face as one printable line (for "unknown": the classifier's guess and the threshold)."""
        box = ", ".join(f"{v:.0f}" for v in self.box)
        if self.name == classify.UNKNOWN and self.closest:
            text = (f"{self.name} (guess: {self.closest}, confidence {self.confidence:.2f} not above the "
                    f"threshold {self.threshold:.2f}) box=({box})")
        else:
            text = f"{self.name} (confidence {self.confidence:.2f}) box=({box})"
        if np.isnan(self.detection_prob):
            text += f" [{LAYOUT_NOTE}]"
        if self.candidates and len(self.candidates) > 1:
            text += " | guess, then others by confidence: " + ", ".join(f"{n} {c:.2f}" for n, c in self.candidates)
        return text


def detect_faces(image: Image.Image, min_prob: float = 0.9,
                 layout: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (boxes, probabilities, landmarks) of the faces in ``image`` with probability >= ``min_prob``, left
    to right (raises :class:`NoFaceFound` with the reason when there is none).

    ``layout``: the face layout of a gallery whose photos are face crops (``model.info["face_layout"]``,
    :func:`nnprak.faces.face_layout_info`). A photo of the gallery's shape in which MTCNN finds no face gets it, as
    notebook 02 gives one to such photos of the set (:func:`nnprak.faces.whole_photo_faces`), with probability NaN.
    """
    settings = faces.detector_settings(config.active())   # the detection of notebook 02's crops
    (boxes, probs, landmarks), _, problem = faces.detect_with_retry([image], settings, min_prob=min_prob)[0]
    if not problem:
        keep = probs >= min_prob
        boxes, probs, landmarks = boxes[keep], probs[keep], landmarks[keep]
        if len(boxes):
            order = np.argsort(boxes[:, 0])
            return boxes[order], probs[order], landmarks[order]
    whole = faces.layout_face(image.size, layout)
    if whole is not None:
        return whole[0], np.array([np.nan]), whole[1]
    raise NoFaceFound(problem.split(": ", 1)[1] if problem else "no face found")


def load_embedder(model: classify.FaceClassifier, embedder: embed.Embedder | None = None) -> embed.Embedder:
    """Return ``embedder`` when given, else the embedder that made ``model``'s gallery (its backend and variant).

    Raises:
        FileNotFoundError: its weights cannot be found or downloaded (:class:`nnprak.weights.WeightsUnavailable`;
            the message names the file and where to put it).
    """
    if embedder is not None:
        return embedder
    info = model.info   # FaceNet crops new photos as the gallery's were cropped (older models: get_embedder's defaults)
    crops = {k: info[k] for k in ("crop_size", "crop_margin") if k in info}
    return embed.get_embedder(model.backend, info.get("variant", "plain"), **crops)


def predict_image(image: Image.Image, model: classify.FaceClassifier, embedder: embed.Embedder | None = None,
                  min_prob: float = 0.9, top_k: int = 1) -> list[FacePrediction]:
    """Return a prediction for every face in ``image`` with detection probability >= ``min_prob``, left to right
    (with ``top_k`` > 1, each also lists its best ``top_k`` candidates and their scores)."""
    boxes, probs, landmarks = detect_faces(image, min_prob, model.info.get("face_layout"))
    X = load_embedder(model, embedder).embed_faces(image, boxes, landmarks)
    names, conf, closest = model.predict_with_closest(X)
    cands = model.top_k(X, top_k) if top_k > 1 else [None] * len(X)
    return [FacePrediction(tuple(float(v) for v in b), str(n), float(c), float(p), str(g), float(model.threshold), k)
            for b, n, c, p, g, k in zip(boxes, names, conf, probs, closest, cands)]


def _draw_faces(ax, predictions: list[FacePrediction], fontsize: float = 9, lw: float = 2, width: int = 0) -> None:
    """Draw a box and a "name score" label (white on green = named, on red = unknown) per face on ``ax``; names
    longer than ``width`` characters (0: no limit) are shortened (:func:`nnprak.plots.short_name`)."""
    from . import plots

    import matplotlib
    from matplotlib import patheffects

    for p in predictions:
        x1, y1, x2, y2 = p.box
        colour = "#d62728" if p.name == classify.UNKNOWN else "#2ca02c"
        ax.add_patch(matplotlib.patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=lw))
        name = plots.short_name(p.name, width) if width else p.name.replace("_", " ")
        ax.text((x1 + x2) / 2, y2, f"{name}\n{p.confidence:.2f}", ha="center", va="bottom",
                fontsize=fontsize, color="white", fontweight="bold", clip_on=True, linespacing=1.0,
                path_effects=[patheffects.withStroke(linewidth=1.5, foreground="black")],
                bbox=dict(boxstyle="round,pad=0.2", fc=colour, ec="none", alpha=0.85))


def annotate(image: Image.Image, predictions: list[FacePrediction]) -> Image.Image:
    """Return a copy of ``image`` (same size) with a box and a name label drawn for every prediction.

    Drawn with matplotlib and the fonts of :mod:`nnprak.plots`, so Chinese, Japanese and Korean names render
    (PIL's default font has no such glyphs).
    """
    import matplotlib.pyplot as plt

    from . import plots  # noqa: F401  (sets the fallback fonts)

    dpi = 100
    fig = plt.figure(figsize=(image.width / dpi, image.height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    ax.imshow(image)
    scale = max(image.size) / 250
    _draw_faces(ax, predictions, fontsize=max(6.0, 7 * scale), lw=max(1.5, 1.5 * scale))
    fig.canvas.draw()
    out = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB")
    plt.close(fig)
    return out.resize(image.size) if out.size != image.size else out


def _load_model(model) -> classify.FaceClassifier:
    return model if isinstance(model, classify.FaceClassifier) else classify.FaceClassifier.load(model)


def predict_file(photo: str | os.PathLike, model_path, out: str | os.PathLike | None = None,
                 min_prob: float = 0.9, top_k: int = 1, embedder=None) -> list[FacePrediction]:
    """Return the predictions for a photo file and write the annotated image to ``out`` when given.

    ``model_path``: a saved model's path or a loaded :class:`~nnprak.classify.FaceClassifier`.

    Raises:
        FileNotFoundError: the photo or the model is missing (the message says what to do).
        data.ImageError: the photo cannot be read.
        NoFaceFound: no face in the photo.
    """
    photo = Path(photo)
    if not photo.exists():
        raise FileNotFoundError(f"{photo} does not exist")
    model = _load_model(model_path)
    image = data.load_image(photo)
    preds = predict_image(image, model, embedder, min_prob=min_prob, top_k=top_k)
    if out:
        with atomic_path(out) as tmp:
            annotate(image, preds).save(tmp)
    return preds


def collect_photos(inputs) -> tuple[list[Path], list[str]]:
    """Return (photo files, one-line problems) for files and folders on the command line.

    A folder contributes every file in it (not recursively, hidden files skipped), sorted by name, whatever its
    extension: photos come as .jpg, .pgm or without an extension at all, and a file that is not an image gets its
    one-line reason when it is read (:func:`problem_line`). Missing paths and empty folders are problems here, and
    so are a folder's subfolders (a folder of person folders is named one subfolder at a time).
    """
    photos, problems = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            entries = [p for p in item.iterdir() if not p.name.startswith(".")]
            found = sorted(p for p in entries if p.is_file())
            subfolders = sorted(p.name for p in entries if p.is_dir())
            if subfolders:
                shown = ", ".join(subfolders[:3]) + (", ..." if len(subfolders) > 3 else "")
                problems.append(f"{item}: its {len(subfolders)} subfolder(s) ({shown}) are not read: name them "
                                f"on the command line, e.g. {item / subfolders[0]}")
            if not found and not subfolders:
                problems.append(f"{item}: no files in this folder")
            photos += found
        elif item.exists():
            photos.append(item)
        else:
            problems.append(f"{item}: does not exist")
    return photos, problems


def problem_line(photo, err: Exception) -> str:
    """Return one line saying why ``photo`` gave no prediction (no traceback)."""
    if isinstance(err, NoFaceFound):
        return f"{photo}: no face found ({err}; try a larger, sharper photo, or --min-prob 0.7)"
    if isinstance(err, data.ImageError):
        return f"{photo}: {err.status} ({err.detail}); {data.BAD_STATUSES.get(err.status, '')}".rstrip("; ")
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if str(photo) in text else f"{photo}: {text}"


@dataclass
class PhotoResult:
    """The outcome for one photo: its faces, or the one-line reason there are none."""

    photo: Path
    faces: list
    problem: str = ""
    image: Image.Image | None = None


def predict_photos(photos, model, min_prob: float = 0.9, top_k: int = 1, embedder=None) -> list[PhotoResult]:
    """Return a :class:`PhotoResult` per photo; a bad photo gets its one-line problem, never an exception."""
    model = _load_model(model)
    embedder = load_embedder(model, embedder)
    out = []
    for photo in map(Path, photos):
        try:
            image = data.load_image(photo)
            preds = predict_image(image, model, embedder, min_prob=min_prob, top_k=top_k)
            out.append(PhotoResult(photo, preds, "", image))
        except (OSError, ValueError) as err:  # ImageError and NoFaceFound are ValueErrors
            out.append(PhotoResult(photo, [], problem_line(photo, err)))
    return out


def contact_sheet(results: list[PhotoResult], out: str | os.PathLike, title: str = "", ncols: int | None = None,
                  thumb: float = 1.05, formats=("png", "pdf")) -> list[Path]:
    """Draw every photo with a box and a name on each face in one figure and save it as PNG and PDF.

    ``out`` is the file name (its suffix is replaced per format). Each photo is ``thumb`` inches wide and the type
    has a fixed size (names :data:`LABEL_PT`, file names and problems :data:`CAPTION_PT`), so the sheet can go on a
    slide at its own size: 4 columns of the default ``thumb`` fit a 16:9 slide's text width and two rows its
    height; names and file names are shortened to fit a photo's width. Names are drawn with matplotlib and the
    fonts of :mod:`nnprak.plots` (Chinese, Japanese and Korean names render when a CJK font is installed); known
    faces are green, unknown red; photos without a face say why. Returns the written files.
    """
    import textwrap

    import matplotlib.pyplot as plt

    from . import plots

    n = max(1, len(results))
    ncols = ncols or min(n, 5 if n > 12 else 4)
    nrows = int(np.ceil(n / ncols))
    fits = max(6, plots.chars_fitting(thumb, CAPTION_PT, em=0.6))   # characters of a caption in a photo's width
    max_lines = max(2, int(thumb * 72 / (CAPTION_PT * 1.3)))         # lines of a caption in a photo's height
    fig, axes = plt.subplots(nrows, ncols, figsize=(thumb * ncols, (thumb + 0.25) * nrows + (0.25 if title else 0)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, results):
        name = r.photo.name                         # long names keep their end (number and extension)
        if plots.text_width(name) > fits:
            name = plots.clip_text(name[:-8], fits - 8) + name[-8:]
        ax.set_title(name, fontsize=CAPTION_PT, pad=2)
        if r.image is None:   # the reason, cut to the lines that fit the photo's square (the terminal has it whole)
            lines = textwrap.wrap(r.problem.split(": ", 1)[-1], fits)
            if len(lines) > max_lines:
                lines = lines[:max_lines - 1] + [plots.clip_text(lines[max_lines - 1], fits - 1).removesuffix("…") + "…"]
            ax.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", fontsize=CAPTION_PT,
                    transform=ax.transAxes, color="#a00")
            continue
        ax.imshow(r.image)
        _draw_faces(ax, r.faces, fontsize=LABEL_PT, width=plots.chars_fitting(thumb, LABEL_PT))
    if title:
        fig.suptitle(title, fontsize=LABEL_PT + 2)
    fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.3)
    out = Path(out)
    written = plots.save_fig(out.stem, fig, folder=out.parent, formats=formats, dpi=200, tight=False)
    plt.close(fig)
    return written


class EnrolError(ValueError):
    """No usable face among the photos given to enrol a person."""


def embed_photos(photos, model, embedder=None, min_prob: float = 0.9) -> tuple[np.ndarray, list[str], list[str]]:
    """Return (one embedding per photo that has a face: its largest, lines about the photos used, one-line
    problems of the photos skipped), embedded as ``predict`` embeds faces (by ``embedder``, else ``model``'s; a
    loaded ``model`` of a face-only gallery lends its face layout to photos without a face, :func:`detect_faces`)."""
    if embedder is None:   # the model is loaded only when no embedder is given
        model = _load_model(model)
        embedder = load_embedder(model)
    layout = model.info.get("face_layout") if isinstance(model, classify.FaceClassifier) else None
    X, used, problems = [], [], []
    for photo in map(Path, photos):
        try:
            if not photo.exists():
                raise FileNotFoundError(f"{photo} does not exist")
            image = data.load_image(photo)
            boxes, probs, landmarks = detect_faces(image, min_prob, layout)
            i = faces.select_face(boxes, probs, image.size, "largest")
            X.append(embedder.embed_faces(image, boxes[i:i + 1], landmarks[i:i + 1])[0])
            note = f" (largest of {len(boxes)} faces)" if len(boxes) > 1 else ""
            note = f" ({LAYOUT_NOTE})" if np.isnan(probs[i]) else note
            used.append(f"{photo}: face used{note}")
        except (OSError, ValueError) as err:
            problems.append(problem_line(photo, err))
    return (np.vstack(X) if X else np.empty((0, 0))), used, problems


def enroll_photos(model, name: str, photos, min_prob: float = 0.9) -> tuple[classify.FaceClassifier, list[str], list[str]]:
    """Return (the model with ``name`` added, lines about each photo used, one-line problems of photos skipped).

    Each photo must show the person: its largest face is used (a photo with several faces says so). The
    classifier is refit on the gallery plus the new faces; the accept/reject threshold stays the same.

    Raises:
        EnrolError: no photo gave a face.
    """
    model = _load_model(model)
    embedder = load_embedder(model)
    name = str(name).strip()
    if not name or name == classify.UNKNOWN or "/" in name:
        raise EnrolError(f"{name!r} cannot be a person's name")
    X, used, problems = embed_photos(photos, model, embedder, min_prob)
    if not len(X):
        raise EnrolError(f"no face found in any of the {len(list(photos))} photos of {name}; nothing enrolled")
    model.enroll(name, X)
    return model, used, problems
