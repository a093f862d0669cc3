"""``python -m nnprak predict PHOTO``: who is in this photo? Detect every face, embed it, name it or say "unknown"."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import classify, data, embed, faces
from .utils import atomic_path


class NoFaceFound(ValueError):
    """The photo holds no face MTCNN can find."""


@dataclass
class FacePrediction:
    """One face of a photo: its box (x1, y1, x2, y2), the name (or "unknown") and the confidence.

    ``closest`` is the gallery person the classifier ranked first (the name itself unless the confidence was
    not above ``threshold``, the open-set threshold of the model).
    """

    box: tuple
    name: str
    confidence: float
    detection_prob: float
    closest: str = ""
    threshold: float = 0.0

    def line(self) -> str:
        """Return the face as one printable line (for "unknown": the closest person and the threshold)."""
        box = ", ".join(f"{v:.0f}" for v in self.box)
        if self.name == classify.UNKNOWN and self.closest:
            return (f"{self.name} (closest: {self.closest}, confidence {self.confidence:.2f} not above the "
                    f"threshold {self.threshold:.2f}) box=({box})")
        return f"{self.name} (confidence {self.confidence:.2f}) box=({box})"


def predict_image(image: Image.Image, model: classify.FaceClassifier, embedder: embed.Embedder | None = None,
                  min_prob: float = 0.9) -> list[FacePrediction]:
    """Return a prediction for every face in ``image`` with detection probability >= ``min_prob``, left to right."""
    embedder = embedder or embed.get_embedder(model.backend, model.info.get("variant", "plain"))
    (boxes, probs, landmarks), _, problem = faces.detect_with_retry([image], faces.DetectorSettings(), min_prob=min_prob)[0]
    if problem:
        raise NoFaceFound(problem.split(": ", 1)[1])
    keep = probs >= min_prob
    boxes, probs, landmarks = boxes[keep], probs[keep], landmarks[keep]
    if len(boxes) == 0:
        raise NoFaceFound("no face found")
    order = np.argsort(boxes[:, 0])
    boxes, probs, landmarks = boxes[order], probs[order], landmarks[order]
    names, conf, closest = model.predict_with_closest(embedder.embed_faces(image, boxes, landmarks))
    return [FacePrediction(tuple(float(v) for v in b), str(n), float(c), float(p), str(g), float(model.threshold))
            for b, n, c, p, g in zip(boxes, names, conf, probs, closest)]


def annotate(image: Image.Image, predictions: list[FacePrediction]) -> Image.Image:
    """Return a copy of ``image`` with a box and a name label drawn for every prediction."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(image.size) / 250))
    for p in predictions:
        colour = (200, 30, 30) if p.name == classify.UNKNOWN else (30, 170, 60)
        draw.rectangle(p.box, outline=colour, width=width)
        label = f"{p.name.replace('_', ' ')} {p.confidence:.2f}"
        x, y = p.box[0], max(0, p.box[1] - 12 * width)
        tb = draw.textbbox((x, y), label)
        draw.rectangle(tb, fill=colour)
        draw.text((x, y), label, fill=(255, 255, 255))
    return out


def predict_file(photo: str | os.PathLike, model_path: str | os.PathLike, out: str | os.PathLike | None = None,
                 min_prob: float = 0.9) -> list[FacePrediction]:
    """Return the predictions for a photo file and write the annotated image to ``out`` when given.

    Raises:
        FileNotFoundError: the photo or the model is missing (the message says what to do).
        data.ImageError: the photo cannot be read.
        NoFaceFound: no face in the photo.
    """
    photo = Path(photo)
    if not photo.exists():
        raise FileNotFoundError(f"{photo} does not exist")
    model = classify.FaceClassifier.load(model_path)
    image = data.load_image(photo)
    preds = predict_image(image, model, min_prob=min_prob)
    if out:
        with atomic_path(out) as tmp:
            annotate(image, preds).save(tmp)
    return preds
