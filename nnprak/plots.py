"""Figures: one :func:`save_fig` used by every notebook and the report, plus the plots the notebooks share."""
from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import config
from .utils import atomic_path

FORMATS = ("pdf", "png")
"""PDF (vector) goes into the report, PNG into slides and the README."""

CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK", "Source Han Sans", "Noto Serif CJK", "Source Han Serif",
                "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing", "AR PL UKai",
                "IPAexGothic", "IPAGothic", "Takao", "NanumGothic", "UnDotum")
"""Font families (name prefixes, preferred first) that cover Chinese, Japanese and Korean person names."""


def _cjk_family() -> str | None:
    """Return the first installed CJK family matplotlib knows (by :data:`CJK_FAMILIES` order), or None."""
    from matplotlib import font_manager

    names = sorted({f.name for f in font_manager.fontManager.ttflist})
    return next((n for prefix in CJK_FAMILIES for n in names if n.startswith(prefix)), None)


def use_fallback_fonts() -> list[str]:
    """Make matplotlib fall back per glyph to an installed CJK font and return the font family list in use."""
    from matplotlib import font_manager

    family = _cjk_family()
    if family is None and shutil.which("fc-list"):
        listed = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout
        if listed.strip():  # installed after matplotlib cached its font list: rebuild the cache once, in place
            vars(font_manager.fontManager).update(vars(font_manager._load_fontmanager(try_read_cache=False)))
            family = _cjk_family()
    if family is None:
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font", category=UserWarning)
        print("nnprak.plots: no CJK font found, so Chinese/Japanese/Korean names are drawn as boxes; "
              "install one with `make setup-fonts` (or `apt-get install fonts-noto-cjk`).")
        return list(plt.rcParams["font.family"])
    plt.rcParams["font.family"] = ["DejaVu Sans", family]  # call again after sns.set_theme(), which resets it
    return list(plt.rcParams["font.family"])


FONT_FAMILIES = use_fallback_fonts()
"""The font family list set at import: DejaVu Sans, then an installed CJK font (when there is one)."""


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


def chars_fitting(width_in: float, size_pt: float, em: float = 0.62) -> int:
    """Return how many characters of ``size_pt`` type fit in ``width_in`` inches (an average character is about
    ``em`` of the type size wide in DejaVu Sans)."""
    return int(width_in * 72 / (em * size_pt))


def text_width(text: str) -> int:
    """Return the width of ``text`` in Latin characters: Chinese, Japanese and Korean ones count twice."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in str(text))


def clip_text(text: str, width: int) -> str:
    """Return ``text`` cut with "…" to at most ``width`` (:func:`text_width`)."""
    text = str(text)
    if text_width(text) <= width:
        return text
    while text and text_width(text) > width - 1:
        text = text[:-1]
    return text + "…"


def short_name(name: str, width: int = 15) -> str:
    """Return a person's name that fits ``width`` characters (for captions and labels in small figure cells):
    underscores as spaces; if too long, the first name as an initial, then only the last name, then its end
    cut with "…"."""
    name = str(name).replace("_", " ").strip()
    parts = name.split()
    if text_width(name) > width and len(parts) > 1:
        for shorter in (f"{parts[0][0]}. {' '.join(parts[1:])}", f"{parts[0][0]}. {parts[-1]}", parts[-1]):
            name = shorter
            if text_width(name) <= width:
                break
    return clip_text(name, width)


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
    ax.set_xlim(0, max(1.0, float(left.max())) * 1.3)   # room on the right: the legend covers no bar of an even set
    ax.legend(loc="lower right")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def image_grid(images, titles=None, ncols: int = 8, size: float = 1.6, suptitle: str | None = None,
               height: float | None = None):
    """Return a figure showing PIL images or arrays in a grid with optional titles.

    Each cell is ``size`` inches wide and ``height`` (default ``size``) + 0.25 inches high.
    """
    images = list(images)
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * ((height or size) + 0.25)),
                             squeeze=False)
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


def verification_pairs(pairs: pd.DataFrame, n: int = 12, ncols: int = 3, crop: int = 150, title: str = ""):
    """Return a figure of image pairs side by side (e.g. a verification's errors), captioned with the decision.

    ``pairs`` has the columns of :meth:`nnprak.evaluate.VerificationResult.errors` (``name1``, ``path1``, ``name2``,
    ``path2``, ``same``, ``distance``, ``threshold``, optional ``mislabelled``); the first ``n`` rows are drawn. LFW images are cut
    to their central ``crop`` pixels, where the (funneled) face is.
    """
    from PIL import Image

    tiles, titles = [], []
    for row in pairs.head(n).itertuples():
        halves = []
        for path in (row.path1, row.path2):
            with Image.open(path) as im:
                im = im.convert("RGB")
                left, top = (im.width - crop) // 2, (im.height - crop) // 2
                halves.append(np.asarray(im.crop((left, top, left + crop, top + crop)) if crop else im))
        gap = np.full((halves[0].shape[0], 4, 3), 255, np.uint8)
        tiles.append(np.hstack([halves[0], gap, halves[1]]))
        truth = "same person" if row.same else "different people"
        decision = ("no face found" if not np.isfinite(row.distance) else
                    f"d={row.distance:.2f} {'>' if row.distance >= row.threshold else '<'} {row.threshold:.2f}")
        note = "\n(LFW errata: mislabelled)" if getattr(row, "mislabelled", False) else ""
        names = row.name1 if row.name1 == row.name2 else f"{row.name1} / {row.name2}"
        titles.append(f"{names[:40]}\n{truth}, {decision}{note}")
    return image_grid(tiles, titles, ncols=ncols, size=3.0, height=1.9, suptitle=title or None)


def embedding_tsne(X: np.ndarray, labels, top: int = 12, seed: int = config.SEED, title: str = ""):
    """Return a t-SNE scatter of embeddings: the ``top`` most frequent people in colour, everyone else grey."""
    import seaborn as sns
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    labels = pd.Series(np.asarray(labels, dtype=object))
    Xp = PCA(n_components=min(50, X.shape[1], len(X)), random_state=seed).fit_transform(X)
    Y = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, max(5, len(X) // 5))).fit_transform(Xp)
    frequent = labels.value_counts().index[:top]
    fig, ax = plt.subplots(figsize=(8, 6.5))
    other = ~labels.isin(frequent).to_numpy()
    ax.scatter(Y[other, 0], Y[other, 1], s=6, c="lightgrey", label="other people")
    for person, colour in zip(frequent, sns.color_palette("tab20", len(frequent))):
        sel = (labels == person).to_numpy()
        ax.scatter(Y[sel, 0], Y[sel, 1], s=10, color=colour, label=person.replace("_", " "))
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title or f"t-SNE of the face embeddings ({len(X)} faces)")
    return fig


def distance_distributions(X: np.ndarray, labels, threshold: float | None = None, title: str = ""):
    """Return histograms of Euclidean distances between L2-normalised embeddings: same vs different person."""
    from scipy.spatial.distance import pdist

    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    d = pdist(Xn)
    lab = np.asarray(labels, dtype=object)
    i, j = np.triu_indices(len(lab), k=1)
    same = lab[i] == lab[j]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(0, d.max(), 80)
    ax.hist(d[~same], bins=bins, density=True, alpha=0.6, label=f"different person ({(~same).sum():,} pairs)")
    ax.hist(d[same], bins=bins, density=True, alpha=0.6, label=f"same person ({same.sum():,} pairs)")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("Euclidean distance of L2-normalised embeddings")
    ax.set_ylabel("density")
    ax.set_title(title or "Distances between test faces")
    ax.legend(fontsize=8)
    return fig


def dir_floor(dirs) -> float:
    """Return the lower DIR limit of an open-set plot: 0.5, or below the lowest operating point when one is lower
    (a small gallery at a strict FAR target)."""
    return min([0.5] + [float(d) - 0.05 for d in dirs])


def open_set_curves(evaluations: dict[str, dict], title: str = ""):
    """Return the DIR–FAR curves of several models (``classify.open_set_evaluation`` results) on a log FAR axis,
    each with its operating points (thresholds chosen on validation impostors) and their confidence intervals."""
    fig, ax = plt.subplots(figsize=(6, 4))
    markers = "os^D"
    for i, (name, ev) in enumerate(evaluations.items()):
        c = ev["curve"]
        n_imp = max(1, len(ev["impostor_scores"]))
        ax.plot(np.maximum(c["far"], 0.5 / n_imp), c["dir"], lw=2, color=f"C{i}", label=f"{name} ({ev['score']})")
        for j, (target, at) in enumerate(sorted(ev["at"].items(), reverse=True)):
            r = at["rates"]
            xerr = yerr = None
            if "dir_ci" in r:
                yerr = [[r["dir"] - r["dir_ci"][0]], [r["dir_ci"][1] - r["dir"]]]
                xerr = [[max(r["far"], 0.5 / n_imp) - max(r["far_ci"][0], 0.5 / n_imp)],
                        [max(r["far_ci"][1], 0.5 / n_imp) - max(r["far"], 0.5 / n_imp)]]
            ax.errorbar([max(r["far"], 0.5 / n_imp)], [r["dir"]], xerr=xerr, yerr=yerr, fmt=markers[j % 4],
                        color=f"C{i}", ms=6, capsize=3,
                        label=f"  val FAR {target:.1%}: test DIR {r['dir']:.1%}, FAR {r['far']:.2%}")
    ax.set_xscale("log")
    ax.set_xlim(left=min(0.5 / max(1, len(ev["impostor_scores"])) for ev in evaluations.values()), right=1)
    ax.set_ylim(dir_floor(at["rates"]["dir"] for ev in evaluations.values() for at in ev["at"].values()), 1.005)
    ax.set_xlabel("false-accept rate on test impostors (log; 0 drawn at ½ impostor)")
    ax.set_ylabel("detection & identification rate")
    ax.set_title(title or "Open set: known test faces vs people outside the gallery")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def confusion_matrix(true, pred, title: str = "", labels=None, annotate: bool | None = None):
    """Return a row-normalised confusion-matrix heatmap (recall on the diagonal) of one model's test predictions."""
    import seaborn as sns
    from sklearn.metrics import confusion_matrix as sk_confusion

    labels = list(labels) if labels is not None else sorted(set(true))
    extra = sorted(set(pred) - set(labels))  # e.g. "no_face" / "unknown" columns
    cm = sk_confusion(true, pred, labels=labels + extra, normalize="true")[: len(labels)]
    n = len(labels) + len(extra)
    annotate = n <= 15 if annotate is None else annotate
    side = min(16, max(5, 0.22 * n + 2))
    fig, ax = plt.subplots(figsize=(side * 1.1, side))
    names = [str(x).replace("_", " ") for x in labels + extra]
    sns.heatmap(cm, ax=ax, cmap="Blues", vmin=0, vmax=1, square=True, annot=annotate, fmt=".2f",
                xticklabels=names, yticklabels=names[: len(labels)], cbar_kws={"shrink": 0.6, "label": "fraction of row"})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(labelsize=6 if n > 20 else 8)
    ax.set_title(title)
    return fig


def per_person_accuracy(per_person: pd.DataFrame, title: str = ""):
    """Return a scatter of per-person test accuracy against training images, one colour per model.

    ``per_person`` has the columns ``model, person, train_images, accuracy``.
    """
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sns.scatterplot(data=per_person, x="train_images", y="accuracy", hue="model", style="model", ax=ax, s=35,
                    alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the person (log scale)")
    ax.set_ylabel("test accuracy of the person")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title or "Per-person accuracy against training images")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def roc_curves(curves: dict[str, tuple], title: str = "", zoom: bool = True):
    """Return ROC curves (``{label: (fpr, tpr)}``) on linear axes, with a zoom on the top-left corner."""
    ncols = 2 if zoom else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.3), squeeze=False)
    for ax, (lo, hi) in zip(axes[0], [(0, 1), (0, 0.2)][:ncols]):
        for label, (fpr, tpr) in curves.items():
            ax.plot(fpr, tpr, lw=1.8, label=label)
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
        ax.set_xlim(lo, hi)
        ax.set_ylim(1 - hi if hi < 1 else 0, 1.001)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    if zoom:
        axes[0][1].set_title("zoom")
    fig.suptitle(title or "LFW verification (pairs.txt), ROC")
    fig.tight_layout()
    return fig


def learning_curves(histories: dict[str, pd.DataFrame], title: str = ""):
    """Return loss and accuracy per epoch (train dashed, validation solid) for one or more training histories."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
    for (label, h), colour in zip(histories.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        ax_loss.plot(h["epoch"], h["train_loss"], ls="--", color=colour, label=f"{label} train")
        ax_loss.plot(h["epoch"], h["val_loss"], color=colour, label=f"{label} val")
        ax_acc.plot(h["epoch"], h["train_acc"], ls="--", color=colour, label=f"{label} train")
        ax_acc.plot(h["epoch"], h["val_acc"], color=colour, label=f"{label} val")
    ax_loss.set_ylabel("loss")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1.01)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def variant_bars(variants: pd.DataFrame, title: str = ""):
    """Return a bar chart of test accuracy per crop variant (columns ``model, variant, accuracy``)."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.barplot(data=variants, x="model", y="accuracy", hue="variant", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "Plain box crops vs 5-point aligned crops")
    return fig
