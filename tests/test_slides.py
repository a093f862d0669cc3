"""Tests for nnprak.slides: the slide figures and tables are readable on a 16:9 slide and fit it."""
from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from nnprak import classify, plots, predict, report, slides

from test_report import placeholder_outputs, require_latexmk


def test_text_sizes_reads_type_sizes_of_figures_turned_text_included(tmp_path):
    """pdfminer gives each character's size as printed, y-axis labels (turned 90°) included."""
    fig = plt.figure(figsize=(3, 2))
    fig.text(0.1, 0.8, "small", fontsize=6)
    fig.text(0.1, 0.4, "large", fontsize=12)
    fig.text(0.8, 0.2, "turned", fontsize=10, rotation=90)
    fig.savefig(tmp_path / "f.pdf")
    plt.close(fig)
    sizes = slides.text_sizes(tmp_path / "f.pdf")
    by_word = {w: sizes[sizes["char"].isin(list(w))]["size"] for w in ("small", "large", "turned")}
    assert sizes.loc[sizes["char"] == "s", "size"].min() == pytest.approx(6, abs=0.1)
    assert sizes.loc[sizes["char"] == "g", "size"].max() == pytest.approx(12, abs=0.1)
    assert sizes.loc[sizes["char"] == "u", "size"].max() == pytest.approx(10, abs=0.1)   # only in "turned"
    assert len(by_word["small"]) and list(slides.small_text(tmp_path / "f.pdf")["page"]) == [1]


def test_short_name_fits_and_keeps_the_last_name():
    assert plots.short_name("George_W_Bush", 15) == "George W Bush"
    assert plots.short_name("Jeremy_Greenstock", 13) == "J. Greenstock"
    assert plots.short_name("Jeremy_Greenstock", 10) == "Greenstock"
    assert plots.short_name("Arnold_Schwarzenegger", 8) == "Schwarz…"
    assert all(len(plots.short_name(n, w)) <= w for n in ("王小明_李", "Jean-Pierre Raffarin", "A" * 30)
               for w in (6, 9, 14))


def _records(lfw_images):
    """Results as notebooks 03-05 write them (histories, open-set summaries) and predictions on LFW photos."""
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 31)
    hist = {"epoch": epochs.tolist(), "train_acc": (1 - 0.9 * np.exp(-epochs / 6)).tolist(),
            "val_acc": (0.92 - 0.8 * np.exp(-epochs / 6)).tolist()}
    known, imp = rng.normal(1.0, 0.1, 400), rng.normal(0.5, 0.12, 1100)
    correct = rng.random(400) < 0.99
    curve = classify.dir_far_curve(np.where(correct, "a", "b"), np.full(400, "a"), known, imp)
    threshold = classify.choose_threshold(imp, 0.01, confidence=0.95)
    rates = classify.open_set_rates(np.where(correct, "a", "b"), np.full(400, "a"), known, imp, threshold)
    rates.update(dir_ci=[rates["dir"] - 0.01, min(1, rates["dir"] + 0.01)], far_ci=[0.0, rates["far"] + 0.005])
    open_set = {"score": "knn3", "threshold": threshold, "far_target": 0.01, "rates": rates,
                "at": {"0.01": {"threshold": threshold, "rates": rates}},
                "curve": {k: curve[k].tolist() for k in ("far", "dir")}}
    records = [{"name": "scratch_resnet", "title": "ResNet from scratch", "extra": {"history": hist}},
               {"name": "resnet50_transfer", "title": "Transfer: dlib face ResNet",
                "extra": {"history_stage1": hist, "history_stage2": {k: v[:5] for k, v in hist.items()}}},
               {"name": "embed_svm", "title": "dlib face ResNet + SVM", "extra": {"open_set": open_set}},
               {"name": "embed_knn", "title": "dlib face ResNet + KNN", "extra": {"open_set": open_set}}]
    fpr = np.linspace(0, 1, 50)
    verifications = [{"name": n, "title": t, "accuracy": a, "fpr": fpr.tolist(), "tpr": np.sqrt(fpr).tolist()}
                     for n, t, a in (("dlib", "dlib face ResNet", 0.99),
                                     ("scratch_resnet", "ResNet from scratch (penultimate features)", 0.84))]
    people = list(lfw_images)
    rows = [{"path": str(lfw_images[p][i]), "crop": "", "true": p, "pred": people[(j + i) % len(people)]}
            for j, p in enumerate(people) for i in range(3)]
    preds = pd.DataFrame(rows)
    comparison = pd.DataFrame({"model": ["dlib face ResNet + SVM", "ResNet from scratch"], "accuracy": [0.99, 0.9],
                               "macro_f1": [0.98, 0.88], "train_min": [0.01, 2.7],
                               "name": ["embed_svm", "scratch_resnet"]})
    return records, verifications, {"embed_svm": preds, "scratch_resnet": preds}, comparison


@pytest.mark.slow
def test_slides_with_the_slide_figures_have_no_small_type_and_nothing_overflows(tmp_path, lfw_images):
    """slides.tex built with real slide figures (drawn from results shaped like a run's) and a real contact
    sheet: no type under MIN_TEXT_PT on any page and no box wider or taller than its slide."""
    require_latexmk()
    tex, base, paths = placeholder_outputs(tmp_path, report.SLIDES_TEX, (160, 90))
    records, verifications, preds, comparison = _records(lfw_images)
    written = slides.save_slide_outputs(records, verifications, preds, comparison, paths.figures, paths.tables)
    assert set(written) == set(slides.FIGURES) | set(slides.TABLES)
    minutes = (paths.tables / "06_slide_comparison.tex").read_text()   # tenths of a minute, not 0.00 for 0.01
    assert "& 0.0 \\" in minutes and "& 2.7 \\" in minutes and "0.00" not in minutes and "2.70" not in minutes
    for stem in slides.FIGURES:
        (paths.figures / f"{stem}.png").unlink()          # the placeholder PNGs would win over nothing: use the PDFs
    photos = [p for ps in lfw_images.values() for p in ps[:2]][:8]
    res = [predict.PhotoResult(p, [predict.FacePrediction((70, 60, 180, 190), n, 0.86, 0.99, n, 0.8)], "",
                               plt.imread(p)) for p, n in zip(photos, ["Alejandro_Toledo", "unknown"] * 4)]
    (paths.figures / "05_demo_sheet.png").unlink()
    predict.contact_sheet(res, paths.figures / "05_demo_sheet.png", ncols=4)
    table = slides.open_set_rows(records)
    assert list(table["Val. FAR"])[:2] == ["1.0%, 95 % bound", "1.0%"]
    pdf = report.build_pdf(tex)
    log = (base / "slides.log").read_text()
    assert not re.findall(r"Overfull \\[hv]box \((\d+\.\d+)pt", log) or max(
        float(x) for x in re.findall(r"Overfull \\[hv]box \((\d+\.\d+)pt", log)) < 1.0, log.split("Overfull")[1][:300]
    small = slides.small_text(pdf)
    assert small.empty, small.to_string()


@pytest.mark.slow
def test_layout_problems_finds_half_empty_pages_and_small_type_on_slides(tmp_path):
    require_latexmk()
    block = lambda h: f"\\noindent\\rule{{\\linewidth}}{{{h}\\textheight}}\n\\clearpage\n"   # ink of a known height
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\\begin{document}\n" + block(0.95) + block(0.3) + block(0.95) + block(0.2)
                   + "\\end{document}\n")   # pages 1 and 3 full, page 2 mostly empty, page 4 the last (not checked)
    problems = report.layout_problems(report.build_pdf(doc))
    assert len(problems) == 1 and problems[0].startswith("page 2:"), problems   # full pages 1 and 3 are fine
    deck = tmp_path / "deck.tex"
    deck.write_text("\\documentclass[aspectratio=169,11pt]{beamer}\\begin{document}\n"
                    "\\begin{frame}{Readable}Body text\\end{frame}\n"
                    "\\begin{frame}{Too small}{\\tiny a table nobody can read}\\end{frame}\n\\end{document}\n")
    problems = report.layout_problems(report.build_pdf(deck))
    assert len(problems) == 1 and problems[0].startswith("page 2: type of") and "nobody" in problems[0]
