"""Slide versions of the report's figures and tables: large type for a projector, drawn from results/.

The report's figures are sized for an A4 page; shrunk onto a 16:9 slide their labels become unreadable from the
back of a room. Notebook 06 calls :func:`save_slide_outputs`, which draws the figures ``report/slides.tex`` shows
at the size they appear on a slide (:data:`TEXT_WIDTH_IN` wide), so their type is the size set in :data:`RC`
(never below :data:`MIN_TEXT_PT`), and writes short tables with the columns a slide can hold.
:func:`text_sizes` measures the type on every page of a built PDF (``tests/test_slides.py`` checks the deck).
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import data, plots, report

TEXT_WIDTH_IN = 5.5
"""Width of a slide's text area in inches (the 16:9 Beamer deck: 160 mm paper, 1 cm margins)."""
TEXT_HEIGHT_IN = 2.55
"""Height a figure can take below a slide's title and one line of text, in inches."""
MIN_TEXT_PT = 8.0
"""Smallest type allowed on a slide, in points on the 160 mm slide (Beamer's \\scriptsize; body text is 11 pt)."""
RC = {"font.size": 10.5, "axes.titlesize": 11, "axes.labelsize": 10.5, "xtick.labelsize": 9.5,
      "ytick.labelsize": 9.5, "legend.fontsize": 9.5, "lines.linewidth": 2.2, "figure.titlesize": 11}
"""Matplotlib settings of every slide figure (drawn at the size it is shown, so these are the sizes seen)."""
FACE_TITLE_PT = 8.5
"""Type size of the captions under faces on slides."""
MODEL_NAMES = {"scratch_resnet": "scratch CNN", "resnet50_transfer": "transfer", "dlib": "dlib",
               "dlib-cohort": "dlib, cohort",
               "embed_svm": "dlib + SVM", "embed_knn": "dlib + KNN"}
"""Short names of the results for slide legends (others: their title, shortened)."""
FIGURES = ("06_slide_faces", "06_slide_learning", "06_slide_roc", "06_slide_open_set", "06_slide_misclassified")
"""The slide figures :func:`save_slide_outputs` writes (report/figures/<stem>.pdf and .png)."""
TABLES = ("06_slide_comparison", "06_slide_open_set")
"""The slide tables :func:`save_slide_outputs` writes (report/tables/<stem>.tex and .csv)."""


@contextmanager
def style():
    """Yield inside matplotlib's :data:`RC` settings for slide figures."""
    with plt.rc_context(RC):
        yield


def _percent_log_axis(ax) -> None:
    """Label a log x axis in percent (0.1 %, 1 %, 10 %, 100 %) instead of powers of ten, whose small exponents
    are unreadable on a slide."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _history(record: dict, key: str = "history") -> pd.DataFrame:
    return pd.DataFrame(record.get("extra", {}).get(key) or {})


def learning_figure(scratch: dict | None, transfer: dict | None):
    """Return validation (solid) and training (dashed) accuracy per epoch of the CNN from scratch and of transfer
    learning (its two stages one after the other, a dotted line where fine-tuning starts), side by side; each title
    gives the test accuracy of the weights the notebook kept (not the last epoch's validation accuracy)."""
    panels = []
    if scratch is not None and len(_history(scratch)):
        panels.append(("from scratch", _history(scratch), None, scratch))
    if transfer is not None and len(_history(transfer, "history_stage1")):
        h1, h2 = _history(transfer, "history_stage1"), _history(transfer, "history_stage2")
        both = pd.concat([h1, h2.assign(epoch=h2["epoch"] + len(h1))], ignore_index=True) if len(h2) else h1
        panels.append(("transfer learning", both, len(h1) + 0.5 if len(h2) else None, transfer))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(TEXT_WIDTH_IN * 0.97, TEXT_HEIGHT_IN), squeeze=False)
    for ax, (title, h, switch, record) in zip(axes[0], panels):
        ax.plot(h["epoch"], h["val_acc"], color="C0", label="validation")
        ax.plot(h["epoch"], h["train_acc"], color="C0", ls="--", lw=1.5, label="training")
        if switch:
            ax.axvline(switch, color="grey", ls=":", lw=1.5)
            ax.text(switch, 0.3, "fine-tune ", color="grey", ha="right")
        test = (record.get("metrics") or {}).get("accuracy")
        ax.set_title(f"{title}: {test:.1%} test" if test is not None else title)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="lower right")
    fig.tight_layout()
    return fig


def roc_figure(verifications: list[dict]):
    """Return the LFW verification ROC of every model on a log false-positive axis (where they differ)."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH_IN * 0.56, TEXT_HEIGHT_IN))
    for i, v in enumerate(sorted(verifications, key=lambda v: -v["accuracy"])):
        fpr = np.maximum(np.asarray(v["fpr"], float), 1e-3)
        ax.plot(fpr, v["tpr"], color=f"C{i}", label=f"{MODEL_NAMES.get(v['name'], _short(v['title']))} "
                                                    f"{v['accuracy']:.1%}")
    ax.set_xscale("log")
    _percent_log_axis(ax)
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (log)")
    ax.set_ylabel("true positive rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", handlelength=1.2, borderaxespad=0.3, labelspacing=0.3)
    fig.tight_layout()
    return fig


def open_set_figure(records: list[dict]):
    """Return the DIR–FAR curves (log FAR) of the models with an open-set evaluation, each with its operating
    point (threshold chosen on validation strangers) and that point's 95 % intervals."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH_IN * 0.54, TEXT_HEIGHT_IN * 1.05))
    shown = [r for r in records if r.get("extra", {}).get("open_set", {}).get("curve")]
    for i, r in enumerate(shown):
        o = r["extra"]["open_set"]
        floor = 0.5 / max(1, o["rates"]["n_impostors"])
        ax.plot(np.maximum(o["curve"]["far"], floor), o["curve"]["dir"], color=f"C{i}",
                ls="-" if i == 0 else "--", label=_model_label(r))
        rt = o["rates"]
        xerr = [[max(rt["far"], floor) - max(rt["far_ci"][0], floor)], [max(rt["far_ci"][1], floor) - max(rt["far"], floor)]]
        yerr = [[rt["dir"] - rt["dir_ci"][0]], [rt["dir_ci"][1] - rt["dir"]]]
        ax.errorbar([max(rt["far"], floor)], [rt["dir"]], xerr=xerr, yerr=yerr, fmt="o", color=f"C{i}", capsize=3)
    low = plots.dir_floor(at["rates"]["dir"] for r in shown for at in [*r["extra"]["open_set"]["at"].values(),
                                                                         {"rates": r["extra"]["open_set"]["rates"]}])
    if shown:
        target = shown[0]["extra"]["open_set"]["far_target"]
        ax.axvline(target, color="grey", ls=":", lw=1.5)
        ax.text(target, low + 0.03, f"target {target:.0%} ", color="grey", ha="right")
        ax.set_xlim(left=0.5 / max(1, shown[0]["extra"]["open_set"]["rates"]["n_impostors"]), right=1)
    ax.set_xscale("log")
    _percent_log_axis(ax)
    ax.set_ylim(low, 1.005)
    ax.set_xlabel("strangers accepted (FAR, log)")
    ax.set_ylabel("known faces named (DIR)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def name_width(cell_in: float, size_pt: float = FACE_TITLE_PT) -> int:
    """Return how many characters of a caption fit under a face ``cell_in`` inches wide at ``size_pt``."""
    return max(6, plots.chars_fitting(cell_in, size_pt) - 1)


def faces_figure(images, titles, ncols: int = 5, width: float = TEXT_WIDTH_IN, title_lines: int = 1):
    """Return a grid of face images ``width`` inches wide, captioned at :data:`FACE_TITLE_PT` (shorten the
    captions to :func:`name_width` of ``width / ncols`` first)."""
    images = list(images)
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    cell = width / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, nrows * (cell + 0.2 * title_lines + 0.05)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t in zip(axes.ravel(), images, titles):
        ax.imshow(img)
        ax.set_title(t, fontsize=FACE_TITLE_PT, pad=2)
    fig.tight_layout(pad=0.2, h_pad=0.3, w_pad=0.2)
    return fig


def _short(title: str) -> str:
    """Return a model title short enough for a slide legend (``"dlib face ResNet + SVM"`` → ``"dlib + SVM"``)."""
    return re.sub(r"\s*face ResNet", "", str(title)).replace("ResNet-50 ", "").strip()


def _model_label(record: dict) -> str:
    name = record.get("name", "")
    return "SVM" if "svm" in name else "KNN" if "knn" in name else _short(record.get("title", name))


def _crop_image(row: pd.Series):
    return data.load_image(data.abs_path(row.get("crop") or row["path"]))


def sample_faces_figure(predictions: pd.DataFrame, n: int = 5, seed: int = 0):
    """Return one row of ``n`` test faces of different people (correctly named ones) captioned with their names."""
    right = predictions[predictions["true"] == predictions["pred"]]
    pick = right.drop_duplicates("true").sample(frac=1.0, random_state=seed).head(n)
    width = TEXT_WIDTH_IN * 0.95
    fits = name_width(width / n)
    return faces_figure([_crop_image(r) for _, r in pick.iterrows()],
                        [plots.short_name(t, fits) for t in pick["true"]], ncols=n, width=width)


def misclassified_figure(predictions: pd.DataFrame, n: int = 10):
    """Return up to ``n`` misclassified test faces captioned with the true name (top) and the prediction
    (bottom, after "→")."""
    wrong = predictions[predictions["true"] != predictions["pred"]].head(n)
    ncols = min(5, max(1, len(wrong)))
    width = TEXT_WIDTH_IN * 0.86 * ncols / 5
    fits = name_width(width / ncols)
    titles = [f"{plots.short_name(t, fits)}\n→ {plots.short_name(p, fits - 2)}"
              for t, p in zip(wrong["true"], wrong["pred"])]
    return faces_figure([_crop_image(r) for _, r in wrong.iterrows()], titles, ncols=ncols, width=width, title_lines=2)


def comparison_rows(comparison: pd.DataFrame) -> pd.DataFrame:
    """Return the model comparison with the columns a slide can hold: model, accuracy, macro-F1, training time."""
    return pd.DataFrame({"Model": comparison["model"].map(_short), "Accuracy": comparison["accuracy"],
                         "Macro-F1": comparison["macro_f1"], "Training (min)": comparison["train_min"]})


def open_set_rows(records: list[dict]) -> pd.DataFrame:
    """Return :func:`nnprak.classify.open_set_table` of the open-set models in ``records`` with the columns a slide
    can hold: the main rule (the 95 % upper bound of the validation FAR at the target) first, then the plain
    targets; test DIR and FAR with their 95 % intervals."""
    from . import classify

    evaluations = {_model_label(r): r["extra"]["open_set"] for r in records if r.get("extra", {}).get("open_set")}
    if not evaluations:
        return pd.DataFrame(columns=["Model", "Val. FAR", "DIR", "DIR 95% CI", "FAR", "FAR 95% CI"])
    t = classify.open_set_table(evaluations)
    rule = [f"{far:.1%}" + (", 95 % bound" if r == "95 % bound" else "") for far, r in zip(t["FAR target"], t["rule"])]
    return pd.DataFrame({"Model": t["model"], "Val. FAR": rule, "DIR": t["DIR"], "DIR 95% CI": t["DIR 95% CI"],
                         "FAR": t["FAR"], "FAR 95% CI": t["FAR 95% CI"]})


def save_slide_outputs(records: list[dict], verifications: list[dict], predictions: dict[str, pd.DataFrame],
                       comparison: pd.DataFrame, figures_dir: str | os.PathLike | None = None,
                       tables_dir: str | os.PathLike | None = None) -> list[str]:
    """Draw the slide figures and write the slide tables of :data:`FIGURES` and :data:`TABLES`; return their stems.

    Args:
        records: ``results.load_results()``; verifications: ``results.load_verifications()``;
        predictions: ``{result name: results.load_predictions(name)}``; comparison: ``results.comparison_table``
        sorted best first (its first row's predictions give the sample faces; the CNN from scratch's, when
        there is one, the misclassified ones); figures_dir, tables_dir: default those of the active profile.
    """
    by_name = {r["name"]: r for r in records}
    best = comparison.iloc[0]["name"]
    written = []
    with style():
        figures = {
            "06_slide_faces": sample_faces_figure(predictions[best]),
            "06_slide_learning": learning_figure(by_name.get("scratch_resnet"), by_name.get("resnet50_transfer")),
            "06_slide_roc": roc_figure(verifications),
            "06_slide_open_set": open_set_figure(records),
            "06_slide_misclassified": misclassified_figure(
                predictions.get("scratch_resnet", predictions[best])),
        }
        for stem, fig in figures.items():
            plots.save_fig(stem, fig, folder=figures_dir)
            plt.close(fig)
            written.append(stem)
    report.save_table("06_slide_comparison", comparison_rows(comparison), float_format="{:.1f}",   # minutes to a tenth
                      percent=["Accuracy", "Macro-F1"], folder=tables_dir)
    report.save_table("06_slide_open_set", open_set_rows(records), percent=["DIR", "FAR"], folder=tables_dir)
    return written + list(TABLES)


def text_sizes(pdf: str | os.PathLike) -> pd.DataFrame:
    """Return the type size of every character of a PDF, in points as it appears on the page (columns ``page``,
    ``char``, ``size``), figures' text included: pdfminer applies each figure's scaling to its text.

    Text drawn into embedded bitmaps is not text and is not seen; slide figures are PDFs, so theirs is.
    """
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTChar, LTContainer

    rows = []

    def walk(item, page):
        if isinstance(item, LTChar):
            if item.get_text().strip():
                a, b = item.matrix[:2]
                size = item.width if abs(b) > abs(a) else item.size   # turned 90° (y-axis labels): its width
                rows.append({"page": page, "char": item.get_text(), "size": round(float(size), 2)})
        elif isinstance(item, LTContainer):
            for child in item:
                walk(child, page)

    for number, layout in enumerate(extract_pages(str(pdf)), start=1):
        walk(layout, number)
    return pd.DataFrame(rows, columns=["page", "char", "size"])


def small_text(pdf: str | os.PathLike, min_pt: float = MIN_TEXT_PT) -> pd.DataFrame:
    """Return, per page of a PDF with type smaller than ``min_pt``, the smallest size and the small text."""
    sizes = text_sizes(pdf)
    small = sizes[sizes["size"] < min_pt - 0.05]
    return (small.groupby("page").agg(size=("size", "min"), text=("char", lambda c: "".join(c)[:60]))
            .reset_index())
