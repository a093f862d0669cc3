"""Tests for nnprak.report: tables, numbers, what report.tex needs, and the LaTeX build.

The contract lists below are typed out on purpose (not imported): report.tex may cite only files and numbers the
notebooks produce, and changing the contract has to change this file too.
"""
from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnprak import config, report, slides

CONTRACT_FIGURES = {
    "01_images_per_person", "01_sample_images", "02_detections", "02_crops", "02_detection_prob",
    "03_learning_curves", "03_ablation", "04_learning_curves", "05_tsne", "05_distances", "05_open_set",
    "06_confusion_best", "06_confusion_scratch", "06_per_person_accuracy", "06_misclassified",
    "06_verification_roc", "06_verification_errors", "06_crop_variants", "05_demo_sheet"}
CONTRACT_TABLES = {"01_split", "02_detection", "03_ablation", "05_open_set", "06_comparison", "06_verification",
                   "06_crop_variants"}
CONTRACT_SLIDE_FIGURES = {"06_slide_faces", "06_slide_learning", "06_slide_roc", "06_slide_open_set",
                          "06_slide_misclassified"}   # notebook 06 draws them for slides.tex (nnprak.slides)
CONTRACT_SLIDE_TABLES = {"06_slide_comparison", "06_slide_open_set"}
CONTRACT_NUMBERS = {
    "NumPeople", "NumImages", "NumTrain", "NumVal", "NumTest", "DetectionRate", "ScratchAcc", "ScratchFone",
    "ScratchMinutes", "ResNetSeedAcc", "PlainSeedAcc", "DeepBlocks", "DeepResNetAcc", "DeepPlainAcc", "SeedCount",
    "TransferAcc", "TransferFone", "TransferWeights", "TransferMinutes", "SvmAcc",
    "SvmFone", "KnnAcc", "EmbedBackend", "OpenSetDIR", "OpenSetFAR", "LfwAcc", "LfwStd", "LfwPairs", "LfwErrors",
    "LfwMislabelled", "RunMinutes", "OpenSetModel", "OpenSetScore", "OpenSetDIRCI", "OpenSetFARCI", "OpenSetFARTarget",
    "OpenSetStrictTarget", "OpenSetStrictDIR", "OpenSetStrictFAR", "PlattValDIR", "ImpostorFaces",
    "LfwNormAcc", "LfwNormStd", "LfwFullAcc", "LfwFullStd", "LfwFullErrors", "LfwFullPairs", "LfwFullNormAcc",
    "LfwFullNormStd", "LfwFullNormErrors", "ResNetSeedVer", "PlainSeedVer", "DeepResNetVer", "DeepPlainVer",
    "ScratchBlocks", "SeedPairTest", "DeepPairTest", "SmallPeople", "SmallTrain", "SmallSeeds", "SmallAcc",
    "SmallEigenAcc", "SmallErrorCut",
    "SmallBackground", "SmallAloneAcc", "BackgroundPeople", "BackgroundImages", "FewestImages", "MostImages",
    "SmallPhotoPoints", "SamePhotoLeftOut", "TransferStage", "DataSetNote", "MidPeople", "MidTrain", "MidPerPerson",
    "MidSeeds", "MidAcc", "MidOriginalAcc", "MidEigenAcc", "MidPairTest", "OtherCropResNetAcc", "OtherCropPlainAcc",
    "OtherCropPairTest", "OtherCropMoved", "ScratchEpochs", "ScratchSteps", "ScratchMaxSteps"}


def require_latexmk():
    """Fail (never skip) when the LaTeX tool chain is missing: `make test` installs it."""
    missing = [exe for exe in ("latexmk", "pdflatex") if shutil.which(exe) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not on PATH: run `make setup-tex` (Debian packages latexmk "
                    "texlive-latex-base texlive-latex-recommended texlive-fonts-recommended)")


def tabular_rows(tex: str) -> list[list[str]]:
    """Cells of every row between \\midrule and \\bottomrule (split at unescaped &)."""
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    rows = [r.strip() for r in body.split("\\\\") if r.strip()]
    return [[c.strip() for c in re.split(r"(?<!\\)&", r)] for r in rows]


# ---------------------------------------------------------------------------------------------------------
# save_table
# ---------------------------------------------------------------------------------------------------------
def people_table() -> pd.DataFrame:
    return pd.DataFrame({"person": ["George_W_Bush", "Colin_Powell", "A&B 100%"],
                         "accuracy": [0.8531, 1.0, np.nan],
                         "train_images": [371, 165, 14],
                         "threshold": [0.41234, 0.5, 0.25]})


def test_save_table_writes_booktabs_tabular_and_csv(tmp_path):
    df = people_table()
    paths = report.save_table("06_people", df, caption="Accuracy per person", folder=tmp_path)
    assert paths == [tmp_path / "06_people.tex", tmp_path / "06_people.csv"]
    tex = paths[0].read_text()
    # a bare tabular with booktabs rules: the float and caption belong to report.tex
    assert re.search(r"^\\begin\{tabular\}\{lrrr\}$", tex, re.M)
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule") < tex.index("\\end{tabular}")
    assert "\\begin{table}" not in tex and "\\caption" not in tex
    assert "% caption: Accuracy per person" in tex
    header = tex.split("\\toprule", 1)[1].split("\\midrule", 1)[0]
    assert "train\\_images" in header
    rows = tabular_rows(tex)
    assert [len(r) for r in rows] == [4, 4, 4]
    assert rows[0] == ["George\\_W\\_Bush", "85.3\\%", "371", "0.412"]
    assert rows[1][1] == "100.0\\%"
    assert rows[2][0] == "A\\&B 100\\%" and rows[2][1] == "--"
    assert "George_W_Bush" not in tex  # no unescaped underscore anywhere
    back = pd.read_csv(paths[1])
    pd.testing.assert_frame_equal(back, df)  # raw values, not the LaTeX formatting


def test_save_table_options_and_atomic_overwrite(tmp_path):
    df = pd.DataFrame({"rate": [0.5, 0.25], "minutes": [12.345, 1.5], "n": [3023, 12]},
                      index=pd.Index(["plain", "aligned"], name="crop_variant"))
    report.save_table("t", df, folder=tmp_path, percent=[], float_format="{:.1f}")
    tex = (tmp_path / "t.tex").read_text()
    assert "crop\\_variant" in tex  # a named index becomes the first column
    assert tabular_rows(tex)[0] == ["plain", "0.5", "12.3", "3,023"]
    report.save_table("t", df, folder=tmp_path, percent=["rate"], percent_digits=0)
    assert tabular_rows((tmp_path / "t.tex").read_text())[1][1] == "25\\%"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.tex"]  # no temporary files left
    with pytest.raises(KeyError):
        report.save_table("t", df, folder=tmp_path, percent=["nope"])
    with pytest.raises(ValueError):
        report.save_table("../t", df, folder=tmp_path)


def test_save_table_defaults_to_active_profile_tables(tmp_path, monkeypatch):
    cfg = config.active()
    paths = dataclasses.replace(cfg.paths, tables=tmp_path / "tables")
    monkeypatch.setattr(config, "_ACTIVE", dataclasses.replace(cfg, paths=paths))
    written = report.save_table("x", pd.DataFrame({"a": [1]}))
    number_file = report.write_numbers({"Alpha": 1})
    assert written[0].parent == tmp_path / "tables" and number_file == tmp_path / "tables" / "numbers.tex"


# ---------------------------------------------------------------------------------------------------------
# write_numbers
# ---------------------------------------------------------------------------------------------------------
def test_write_numbers_merges_and_formats(tmp_path):
    path = report.write_numbers({"NumImages": 3023, "ScratchAcc": report.pct(0.8531), "RunMinutes": 17.44},
                                folder=tmp_path)
    assert path == tmp_path / "numbers.tex"
    report.write_numbers({"ScratchAcc": "90.0\\%", "TransferWeights": "imagenet1k_v2 (50% of it)",
                          "LfwStd": "$\\pm x_1$"}, folder=tmp_path)
    assert report.read_numbers(path) == {
        "NumImages": "3,023", "RunMinutes": "17.4", "ScratchAcc": "90.0\\%",      # kept, kept, overwritten
        "TransferWeights": "imagenet1k\\_v2 (50\\% of it)", "LfwStd": "$\\pm x_1$"}  # escaped outside math only
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("%")]
    assert lines == sorted(lines) and all(re.fullmatch(r"\\newcommand\{\\[A-Za-z]+\}\{.*\}", ln) for ln in lines)


@pytest.mark.parametrize("name", ["scratch_acc", "Acc1", "", "Scratch Acc", "item", "LaTeX", "\\ScratchAcc"])
def test_write_numbers_rejects_bad_macro_names(tmp_path, name):
    with pytest.raises(ValueError):
        report.write_numbers({name: "1"}, folder=tmp_path)
    assert not (tmp_path / "numbers.tex").exists()


@pytest.mark.parametrize("value", ["two\nlines", "{unbalanced", "}{"])
def test_write_numbers_rejects_bad_values(tmp_path, value):
    with pytest.raises(ValueError):
        report.write_numbers({"Good": value}, folder=tmp_path)


def test_pct_and_num():
    assert report.pct(0.8531) == "85.3\\%" and report.pct(0.99172, 2) == "99.17\\%" and report.pct(None) == "--"
    assert report.num(3023) == "3,023" and report.num(np.int64(62)) == "62" and report.num(1.25, 2) == "1.25"
    assert report.tex_escape("George_W_Bush & 5%") == "George\\_W\\_Bush \\& 5\\%"


# ---------------------------------------------------------------------------------------------------------
# tex_targets / missing_targets
# ---------------------------------------------------------------------------------------------------------
SMALL_TEX = r"""\documentclass{article}
\usepackage{graphicx}
\graphicspath{{figures/}}
\input{tables/numbers}
\newcommand{\Helper}{x}
\begin{document}
% \includegraphics{commented_out}  \input{tables/commented_out}
Half of it: 50\% \includegraphics[width=\linewidth]{found_png} and \includegraphics{missing_fig}
\includegraphics[width=2cm]{figures/explicit.pdf} \includegraphics{found_png}
\input{tables/present} \input{tables/absent.tex} \Helper \NumPeople \MissingNumber \LaTeX % \CommentedMacro
\end{document}
"""


def small_project(tmp_path):
    tex = tmp_path / "report" / "small.tex"
    tex.parent.mkdir()
    tex.write_text(SMALL_TEX)
    figures, tables = tmp_path / "out" / "figures", tmp_path / "out" / "tables"
    figures.mkdir(parents=True)
    tables.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(figures / "found_png.png")
    (figures / "explicit.pdf").write_bytes(b"%PDF-1.4\n")
    report.save_table("present", pd.DataFrame({"a": [1]}), folder=tables)
    report.write_numbers({"NumPeople": 62}, folder=tables)
    return tex, figures, tables


def test_tex_targets_ignores_comments_and_reads_graphicspath(tmp_path):
    tex, _, _ = small_project(tmp_path)
    assert report.tex_targets(tex) == {
        "inputs": ["tables/numbers.tex", "tables/present.tex", "tables/absent.tex"],
        "graphics": ["found_png", "missing_fig", "figures/explicit.pdf"],
        "graphicspath": ["figures/"]}
    assert report.number_macros(tex) == ["NumPeople", "MissingNumber"]  # not \Helper, \LaTeX or comments


def test_missing_targets_lists_what_the_run_did_not_make(tmp_path):
    tex, figures, tables = small_project(tmp_path)
    assert report.missing_targets(tex, figures, tables) == [
        "tables/absent.tex", "figures/missing_fig.pdf", "\\MissingNumber"]
    assert report.missing_targets(tex, figures, tables, check_numbers=False) == [
        "tables/absent.tex", "figures/missing_fig.pdf"]
    # without \graphicspath the bare names are looked up next to the .tex only
    tex.write_text(SMALL_TEX.replace("\\graphicspath{{figures/}}", ""))
    assert "found_png.pdf" in report.missing_targets(tex, figures, tables)
    # once everything exists, nothing is missing
    tex.write_text(SMALL_TEX)
    Image.new("RGB", (4, 4)).save(figures / "missing_fig.png")
    report.save_table("absent", pd.DataFrame({"a": [1]}), folder=tables)
    report.write_numbers({"MissingNumber": "1"}, folder=tables)
    assert report.missing_targets(tex, figures, tables) == []


# ---------------------------------------------------------------------------------------------------------
# The real report.tex keeps to the contract
# ---------------------------------------------------------------------------------------------------------
def test_report_tex_cites_only_contract_files():
    targets = report.tex_targets(report.REPORT_TEX)
    assert targets["graphicspath"] == ["figures/"]
    assert set(targets["graphics"]) == CONTRACT_FIGURES, "report.tex includes figures outside the contract"
    assert set(targets["inputs"]) == {"tables/numbers.tex", "meta.tex"} | {f"tables/{t}.tex" for t in CONTRACT_TABLES}
    assert set(report.REPORT_FIGURES) == CONTRACT_FIGURES and set(report.REPORT_TABLES) == CONTRACT_TABLES


def test_report_tex_uses_only_contract_numbers():
    used = set(report.number_macros(report.REPORT_TEX))
    assert used <= CONTRACT_NUMBERS, f"report.tex uses numbers nobody writes: {sorted(used - CONTRACT_NUMBERS)}"
    assert used == CONTRACT_NUMBERS, f"contract numbers the report never cites: {sorted(CONTRACT_NUMBERS - used)}"
    assert set(report.REPORT_NUMBERS) == CONTRACT_NUMBERS


def test_report_prose_has_no_hand_typed_results():
    """Percentages in the body are either macros or literature/setting values listed here."""
    body = report.strip_comments(report.REPORT_TEX.read_text()).split("\\begin{document}", 1)[1]
    body = body.split("\\begin{thebibliography}", 1)[0]
    typed = set(re.findall(r"\d+(?:\.\d+)?(?:\\,)?\\%", body))
    literature = {"99.63\\,\\%", "99.13\\,\\%", "99.38\\,\\%",       # FaceNet and dlib as published
                  "96.2\\,\\%", "89.5\\,\\%", "64\\,\\%"}                  # Lawrence et al. 1997 on ORL
    assert typed <= {"70\\,\\%", "15\\,\\%", "100\\,\\%", "95\\,\\%"} | literature, typed


# ---------------------------------------------------------------------------------------------------------
# Building PDFs
# ---------------------------------------------------------------------------------------------------------
def test_build_pdf_compiles_a_tiny_document(tmp_path):
    require_latexmk()
    report.save_table("demo", people_table(), folder=tmp_path / "tables")
    report.write_numbers({"DemoAcc": report.pct(0.853)}, folder=tmp_path / "tables")
    tex = tmp_path / "tiny.tex"
    tex.write_text("\\documentclass{article}\\usepackage{booktabs}\\input{tables/numbers}\n"
                   "\\begin{document}Accuracy \\DemoAcc.\\par\\input{tables/demo}\\end{document}\n")
    pdf = report.build_pdf(tex)
    assert pdf == tmp_path / "tiny.pdf" and pdf.read_bytes().startswith(b"%PDF")


def test_the_report_of_own_photos_says_which_passages_describe_lfw(tmp_path):
    """On LFW the note is empty; on own photos it names the folder and the set and compiles (underscores escaped)."""
    require_latexmk()
    import subprocess

    assert report.dataset_note(config.load("smoke"), 5, 100) == ""
    photos = tmp_path / "my_photos"
    photos.mkdir()
    note = report.dataset_note(config.load("smoke", source=str(photos)), 8, 96)
    config.load("smoke")
    assert "8 people, 96 images" in note and "my\\_photos" in note and "LFW-62" in note
    report.write_numbers({"DataSetNote": note}, folder=tmp_path / "tables")
    tex = tmp_path / "note.tex"
    tex.write_text("\\documentclass{article}\\usepackage[T1]{fontenc}\\input{tables/numbers}\n"
                   "\\begin{document}Abstract.\\DataSetNote{}Text.\\end{document}\n")
    text = subprocess.run(["pdftotext", str(report.build_pdf(tex)), "-"], capture_output=True, text=True).stdout
    flat = " ".join(text.split())
    assert "set of this run: own photos in" in flat and "my_photos, 8 people, 96 images" in flat
    cjk = tmp_path / "照片"
    cjk.mkdir()
    note = report.dataset_note(config.load("smoke", source=str(cjk)), 3, 40)      # pdflatex has no CJK letters:
    config.load("smoke")
    assert "照片" not in note and "own photos, 3 people, 40 images" in note       # the folder is left out
    report.write_numbers({"DataSetNote": note}, folder=tmp_path / "tables")
    tex.write_text("\\documentclass{article}\\usepackage[T1]{fontenc}\\usepackage[utf8]{inputenc}"
                   "\\input{tables/numbers}\n\\begin{document}\\section{A}\\label{sec:residual}"
                   "\\section{B}\\label{sec:small-data}\\DataSetNote{}\\end{document}\n")
    text = subprocess.run(["pdftotext", str(report.build_pdf(tex)), "-"], capture_output=True, text=True).stdout
    assert "Sections 1 and 2" in " ".join(text.split())                         # the sections are referenced


def test_build_pdf_reports_latex_errors(tmp_path):
    require_latexmk()
    tex = tmp_path / "broken.tex"
    tex.write_text("\\documentclass{article}\\begin{document}\\UndefinedNumber\\end{document}\n")
    with pytest.raises(report.LatexError, match="Undefined control sequence"):
        report.build_pdf(tex)


def test_build_pdf_names_make_setup_tex_when_latexmk_is_missing(tmp_path, monkeypatch):
    tex = tmp_path / "a.tex"
    tex.write_text("\\documentclass{article}\\begin{document}x\\end{document}\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no latexmk
    with pytest.raises(report.LatexError, match="make setup-tex"):
        report.build_pdf(tex)


def placeholder_outputs(tmp_path, source, size):
    """Return (tex, base, paths): ``source`` copied into ``tmp_path/report`` with a placeholder for every contract
    figure (``size`` px), table and number, as the notebooks would write them."""
    cfg = config.active()
    base = tmp_path / "report"
    paths = dataclasses.replace(cfg.paths, figures=base / "figures", tables=base / "tables")
    tex = report.report_tex(dataclasses.replace(cfg, paths=paths), source)
    paths.figures.mkdir(parents=True)
    for stem in CONTRACT_FIGURES | CONTRACT_SLIDE_FIGURES:
        Image.new("RGB", size, "steelblue").save(paths.figures / f"{stem}.png")
    table = pd.DataFrame({"model": ["a_b", "c"], "accuracy": [0.5, 0.75], "n": [10, 20]})
    for stem in CONTRACT_TABLES | CONTRACT_SLIDE_TABLES:
        report.save_table(stem, table, folder=paths.tables)
    report.write_numbers({name: "1.0\\%" for name in CONTRACT_NUMBERS}, folder=paths.tables)
    return tex, base, paths


@pytest.mark.slow
def test_real_report_compiles_with_placeholder_outputs(tmp_path):
    """report.tex compiles once every contract file exists (placeholders here; the smoke run makes real ones)."""
    require_latexmk()
    tex, base, paths = placeholder_outputs(tmp_path, report.REPORT_TEX, (60, 40))
    assert tex == base / "report.tex" and tex.read_text() == report.REPORT_TEX.read_text()
    assert report.missing_targets(tex, paths.figures, paths.tables) == []
    pdf = report.build_pdf(tex)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert "undefined references" not in (base / "report.log").read_text()


# ---------------------------------------------------------------------------------------------------------
# The slides: same generated files as the report, title and authors from meta.tex
# ---------------------------------------------------------------------------------------------------------
def test_slides_cite_only_generated_files():
    """slides.tex includes only contract figures/tables/numbers (what the notebooks write) and meta.tex."""
    targets = report.tex_targets(report.SLIDES_TEX)
    assert targets["graphicspath"] == ["figures/"]
    figures = CONTRACT_FIGURES | CONTRACT_SLIDE_FIGURES
    assert targets["graphics"] and set(targets["graphics"]) <= figures, sorted(set(targets["graphics"]) - figures)
    assert CONTRACT_SLIDE_FIGURES == set(slides.FIGURES) and CONTRACT_SLIDE_TABLES == set(slides.TABLES)
    assert CONTRACT_SLIDE_FIGURES <= set(targets["graphics"]), "a slide figure notebook 06 draws is not shown"
    tables = {t for t in targets["inputs"] if t.startswith("tables/")} - {"tables/numbers.tex"}
    assert tables and tables <= {f"tables/{t}.tex" for t in CONTRACT_TABLES | CONTRACT_SLIDE_TABLES}
    assert set(targets["inputs"]) - tables == {"tables/numbers.tex", "meta.tex"}
    used = set(report.number_macros(report.SLIDES_TEX))
    assert used and used <= CONTRACT_NUMBERS, f"slides use numbers nobody writes: {sorted(used - CONTRACT_NUMBERS)}"
    assert "05_demo_sheet" in targets["graphics"] and "06_slide_open_set" in targets["graphics"]
    body = report.strip_comments(report.SLIDES_TEX.read_text()).split("\\begin{document}", 1)[1]
    typed = set(re.findall(r"\d+(?:\.\d+)?(?:\\,)?\s*\\%", body))
    assert typed <= {"95\\,\\%"}, f"hand-typed results on the slides: {typed}"


def test_report_and_slides_share_title_and_authors():
    for tex in (report.REPORT_TEX, report.SLIDES_TEX):
        body = report.strip_comments(tex.read_text())
        assert "\\input{meta}" in body and "\\author{\\metaauthors}" in body and "\\metatitle" in body
        assert "Student One" not in body  # names only in meta.tex
    assert "\\newcommand{\\metaauthors}" in report.META_TEX.read_text()


@pytest.mark.slow
def test_slides_compile_to_a_16_9_deck_of_10_to_14_pages(tmp_path):
    require_latexmk()
    tex, base, paths = placeholder_outputs(tmp_path, report.SLIDES_TEX, (160, 90))
    assert tex == base / "slides.tex" and (base / "meta.tex").exists()
    assert report.missing_targets(tex, paths.figures, paths.tables) == []
    pdf = report.build_pdf(tex)
    log = (base / "slides.log").read_text()
    pages = int(re.search(r"Output written on slides.pdf \((\d+) pages", log).group(1))
    assert 10 <= pages <= 14
    import subprocess

    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout  # poppler-utils (setup-tex)
    size = re.search(r"Page size:\s+([\d.]+) x ([\d.]+) pts", info)
    assert size and abs(float(size.group(1)) / float(size.group(2)) - 16 / 9) < 0.01, info
    assert "Overfull \\hbox" not in log, "something on a slide is wider than the slide"
