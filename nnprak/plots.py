"""Figures: one :func:`save_fig` used by every notebook and the report, plus the plots the notebooks share."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import config
from .utils import atomic_path

FORMATS = ("pdf", "png")
"""PDF (vector) goes into the report, PNG into slides and the README."""


def save_fig(name: str, fig=None, folder: str | os.PathLike | None = None, formats=FORMATS, dpi: int = 150,
             tight: bool = True) -> list[Path]:
    """Save a figure as ``<folder>/<name>.pdf`` and ``.png`` (atomically) and return the written paths.

    Args:
        name: file stem, e.g. ``"01_images_per_person"`` (notebook number first).
        fig: the figure; default: the current one.
        folder: default: the figures folder of the active profile (``report/figures`` for ``default``,
            ``build/<profile>/report/figures`` otherwise).
    """
    fig = fig or plt.gcf()
    folder = Path(folder) if folder else config.active().paths.figures
    written = []
    for fmt in formats:
        target = folder / f"{name}.{fmt}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight" if tight else None,
                        metadata={"CreationDate": None} if fmt == "pdf" else None)
        written.append(target)
    return written


def images_per_person(manifest: pd.DataFrame, top: int | None = None):
    """Return a bar chart of usable images per person, coloured by split."""
    import seaborn as sns

    ok = manifest[manifest["status"] == "ok"]
    counts = pd.crosstab(ok["person"], ok["split"]).reindex(columns=["train", "val", "test"], fill_value=0)
    counts = counts.loc[counts.sum(axis=1).sort_values(ascending=False).index]
    if top:
        counts = counts.head(top)
    fig, ax = plt.subplots(figsize=(10, max(3, 0.18 * len(counts) + 1)))
    left = np.zeros(len(counts))
    for split, colour in zip(counts.columns, sns.color_palette("deep", 3)):
        ax.barh(counts.index, counts[split], left=left, color=colour, label=split)
        left += counts[split].to_numpy()
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title(f"Images per person ({len(counts)} people, {int(left.sum())} images)")
    ax.legend(loc="lower right")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def image_grid(images, titles=None, ncols: int = 8, size: float = 1.6, suptitle: str | None = None):
    """Return a figure showing PIL images or arrays in a grid with optional titles."""
    images = list(images)
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.25)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.ravel()[i]
        ax.imshow(img)
        if titles is not None:
            ax.set_title(str(titles[i]).replace("_", " "), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
