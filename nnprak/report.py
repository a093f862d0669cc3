"""The written report: tables, measured numbers and the LaTeX build of ``report/report.tex``.

Every notebook writes its report material through this module, so ``report.tex`` only ever ``\\input``\\ s
generated files:

* :func:`save_table` — ``<tables>/<name>.tex`` (a booktabs ``tabular`` only: caption, label and float are
  chosen by ``report.tex``) and ``<tables>/<name>.csv`` (the raw values), both written atomically;
* :func:`write_numbers` — ``<tables>/numbers.tex``, one ``\\newcommand{\\Name}{value}`` per measured number,
  merged with what earlier notebooks wrote. The prose of the report cites only these macros, so every number
  in the text is regenerated with the run;
* :func:`tex_targets` / :func:`missing_targets` — what ``report.tex`` inputs and includes, and which of those
  files (and number macros) a run has not produced; notebook 06 prints the latter in a checked cell;
* :func:`report_tex` / :func:`build_pdf` — the ``report.tex`` of a profile, compiled with ``latexmk``.

The figure, table and number names the report uses are the contract between the notebooks and
``report.tex``: :data:`REPORT_FIGURES`, :data:`REPORT_TABLES`, :data:`REPORT_NUMBERS`.

Usage in a notebook::

    from nnprak import report
    report.save_table("01_split", split_df)                              # tables/01_split.tex + .csv
    report.write_numbers({"NumPeople": 62, "ScratchAcc": report.pct(0.853)})
    report.missing_targets(report.report_tex())                          # [] once 01-06 have run
    report.build_pdf(report.report_tex())                                 # report/report.pdf
"""
from __future__ import annotations

import math
import numbers as _numbers
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from . import config
from .utils import atomic_path, atomic_write_text

REPORT_DIR = config.ROOT / "report"
"""The folder of ``report.tex``; ``figures/`` and ``tables/`` of the default profile live inside it."""
REPORT_TEX = REPORT_DIR / "report.tex"
"""The report's LaTeX source (hand-written, like ``slides.tex`` and ``meta.tex``)."""
SLIDES_TEX = REPORT_DIR / "slides.tex"
"""The 16:9 Beamer deck: the same figures, tables and numbers as the report."""
META_TEX = REPORT_DIR / "meta.tex"
"""Title, authors and course, ``\\input`` by both report.tex and slides.tex."""

REPORT_FIGURES = (
    "01_images_per_person", "01_sample_images",
    "02_detections", "02_crops", "02_detection_prob",
    "03_learning_curves", "03_ablation",
    "04_learning_curves",
    "05_tsne", "05_distances", "05_open_set", "05_demo_sheet",
    "06_confusion_best", "06_confusion_scratch", "06_per_person_accuracy", "06_misclassified",
    "06_verification_roc", "06_verification_errors", "06_crop_variants",
)
"""Figure stems ``report.tex`` includes (``figures/<stem>.pdf``, written by :func:`nnprak.plots.save_fig`)."""

REPORT_TABLES = ("01_split", "02_detection", "03_ablation", "05_open_set", "06_comparison", "06_verification",
                 "06_crop_variants")
"""Table stems ``report.tex`` inputs (``tables/<stem>.tex``, written by :func:`save_table`)."""

REPORT_NUMBERS = (
    "NumPeople", "NumImages", "NumTrain", "NumVal", "NumTest", "FewestImages", "MostImages",  # 01
    "SamePhotoLeftOut", "DataSetNote",                                   # 01 (twins across splits; own photos)
    "DetectionRate",                                                     # 02
    "ScratchAcc", "ScratchFone", "ScratchMinutes", "ScratchEpochs", "ScratchSteps", "ScratchMaxSteps",  # 03
    "ResNetSeedAcc", "PlainSeedAcc", "DeepBlocks", "DeepResNetAcc", "DeepPlainAcc", "SeedCount",  # 03 (ablation)
    "ResNetSeedVer", "PlainSeedVer", "DeepResNetVer", "DeepPlainVer", "ScratchBlocks",  # 03 (features, depth)
    "SeedPairTest", "DeepPairTest",                                     # 03 (the pairs face by face)
    "SmallPeople", "SmallTrain", "SmallSeeds", "SmallAcc", "SmallEigenAcc", "SmallErrorCut",  # 03 (small data)
    "SmallBackground", "SmallAloneAcc", "SmallPhotoPoints", "BackgroundPeople", "BackgroundImages",  # 03 (background people)
    "MidPeople", "MidTrain", "MidPerPerson", "MidSeeds", "MidAcc", "MidOriginalAcc", "MidEigenAcc",  # 03 (40 x 25 set)
    "MidPairTest", "OtherCropResNetAcc", "OtherCropPlainAcc", "OtherCropPairTest", "OtherCropMoved",  # 03 (one crop)
    "TransferAcc", "TransferFone", "TransferWeights", "TransferMinutes", "TransferStage",  # 04
    "SvmAcc", "SvmFone", "KnnAcc", "EmbedBackend", "OpenSetDIR", "OpenSetFAR",  # 05
    "OpenSetModel", "OpenSetScore", "OpenSetDIRCI", "OpenSetFARCI", "OpenSetFARTarget",  # 05 (open set)
    "OpenSetStrictTarget", "OpenSetStrictDIR", "OpenSetStrictFAR", "PlattValDIR", "ImpostorFaces",
    "LfwAcc", "LfwStd", "LfwNormAcc", "LfwNormStd",                      # 05 (verification: plain, normalised)
    "LfwPairs", "LfwErrors", "LfwMislabelled", "RunMinutes",             # 06
    "LfwFullAcc", "LfwFullStd", "LfwFullErrors", "LfwFullPairs",          # 06 (all pairs: bench_verification.json)
    "LfwFullNormAcc", "LfwFullNormStd", "LfwFullNormErrors",
)
"""Macros of ``tables/numbers.tex`` that the prose of ``report.tex`` cites (written by :func:`write_numbers`)."""

NUMBERS_NAME = "numbers"
GRAPHICS_EXTENSIONS = (".pdf", ".png")
"""Extensions tried, in this order, for an ``\\includegraphics`` target given without one (as pdflatex does)."""
_KNOWN_GRAPHICS_EXT = {".pdf", ".png", ".jpg", ".jpeg", ".eps", ".svg"}

PERCENT_COLUMNS = re.compile(r"(^|[^a-z])(acc|accuracy|f1|fone|rate|dir|far|frr|tar|precision|recall|share)"
                             r"($|[^a-z])", re.IGNORECASE)
"""Column names that :func:`save_table` formats as percentages (when every value lies in [0, 1])."""

# Uppercase control sequences defined by LaTeX itself or by the packages report.tex loads: never number macros.
LATEX_UPPERCASE = frozenset("""
    TeX LaTeX LaTeXe Huge LARGE Large Roman Alph S P AA AE OE L O Pr Re Im Box Diamond
    Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega Leftarrow Rightarrow Leftrightarrow
    Longrightarrow Longleftarrow Uparrow Downarrow Vert Big Bigg Bigl Bigr Biggl Biggr
    MakeUppercase MakeLowercase NeedsTeXFormat ProvidesPackage RequirePackage DeclareMathOperator
    DeclareGraphicsExtensions AtBeginDocument AtEndDocument PackageWarning GenericWarning IfFileExists
    InputIfFileExists Url Cref Autoref
""".split())


class LatexError(RuntimeError):
    """Raised when ``latexmk`` is missing or the report does not compile."""


# ==========================================================================================================
# Formatting helpers
# ==========================================================================================================
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text) -> str:
    """Return ``text`` as LaTeX source that prints it literally (``George_W_Bush`` -> ``George\\_W\\_Bush``)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def pct(x, digits: int = 1) -> str:
    """Return a fraction in [0, 1] as a LaTeX percentage, e.g. ``pct(0.8531) == "85.3\\\\%"`` (``--`` for NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "--"
    return f"{100 * float(x):.{digits}f}\\%"


def pct_range(interval, digits: int = 1) -> str:
    """Return a (low, high) interval of fractions as a LaTeX percentage range, e.g. ``"97.9\\%--99.1\\%"``."""
    low, high = interval
    return f"{pct(low, digits)}--{pct(high, digits)}"


def dataset_note(cfg: config.Config, people: int, images: int) -> str:
    """Return the report's note on its data set: empty for LFW (the text was written for it), else a LaTeX paragraph
    saying that the numbers, tables and figures are of the own photos and which passages still speak of LFW."""
    if cfg.is_lfw:
        return ""
    from .utils import display_path

    path = display_path(cfg.photo_dir)
    # pdflatex's fonts have no CJK or Cyrillic letters: such a folder is named in the notebooks, not here
    where = f" in \\texttt{{{tex_escape(path)}}}" if path.isascii() else ""
    return ("\\par\\medskip\\noindent\\fbox{\\parbox{0.97\\linewidth}{\\textbf{Data set of this run:} own photos"
            f"{where}, {num(int(people))} people, {num(int(images))} images. The numbers, tables and "
            "figures are of these photos; the prose was written for the LFW-62 benchmark, and where it describes LFW "
            "(its people, imbalance, image size, label errors and the trials of Sections~\\ref{sec:residual} "
            "and~\\ref{sec:small-data}) it does not describe this set: rewrite those passages before handing the "
            "report in.}}\\par\\medskip")


def num(x, digits: int = 1) -> str:
    """Return a number for the prose: integers with thousands separators (``3,023``), floats with ``digits``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "--"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, _numbers.Integral):
        return f"{int(x):,d}"
    return f"{float(x):,.{digits}f}"


# ==========================================================================================================
# Tables
# ==========================================================================================================
def _tables_dir(folder) -> Path:
    return Path(folder) if folder else config.active().paths.tables


def _is_integral(col: pd.Series) -> bool:
    vals = pd.to_numeric(col, errors="coerce").dropna()
    return len(vals) > 0 and bool(np.all(np.isfinite(vals))) and bool(np.all(vals == np.round(vals)))


def _percent_columns(df: pd.DataFrame, percent) -> set:
    if percent is not None:
        unknown = set(percent) - set(df.columns)
        if unknown:
            raise KeyError(f"percent names columns the table does not have: {sorted(map(str, unknown))}")
        return set(percent)
    chosen = set()
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_float_dtype(col) and PERCENT_COLUMNS.search(str(c)):
            vals = col.dropna()
            if len(vals) and vals.between(0, 1).all():
                chosen.add(c)
    return chosen


def _auto_float_format(col: pd.Series) -> Callable:
    # one number of decimals per column, from the column's largest value: 1234 | 45.3 | 9.80 | 0.412
    vals = pd.to_numeric(col, errors="coerce").abs()
    top = vals[np.isfinite(vals)].max() if np.isfinite(vals).any() else 0.0
    decimals = 0 if top >= 100 else 1 if top >= 10 else 2 if top >= 1 else 3
    return lambda x: f"{float(x):,.{decimals}f}"


def _formatter(col: pd.Series, is_percent: bool, float_format, digits: int) -> Callable:
    fmt_float = (_auto_float_format(col) if float_format is None
                 else float_format if callable(float_format) else float_format.format)
    if is_percent:
        return lambda x: pct(x, digits)
    if pd.api.types.is_bool_dtype(col):
        return lambda x: "yes" if x else "no"
    if pd.api.types.is_integer_dtype(col) or (pd.api.types.is_float_dtype(col) and _is_integral(col)):
        return lambda x: f"{int(round(float(x))):,d}"
    if pd.api.types.is_float_dtype(col):
        return lambda x: fmt_float(x)

    def mixed(x):  # object columns: numbers keep a number format, everything else is text (escaped by Styler)
        if isinstance(x, (bool, np.bool_)):
            return "yes" if x else "no"
        if isinstance(x, _numbers.Integral):
            return f"{int(x):,d}"
        if isinstance(x, _numbers.Real):
            return fmt_float(x)
        return str(x)
    return mixed


def table_tex(df: pd.DataFrame, float_format: str | Callable | None = None, percent: Iterable | None = None,
              percent_digits: int = 1, index: bool | None = None) -> str:
    """Return the LaTeX of ``df`` as a booktabs ``tabular`` (no float, no caption), with text escaped.

    Numbers are right-aligned, text left-aligned; integers get thousands separators, ``NaN`` prints ``--``.
    The ``percent`` columns (default: float columns named like accuracy/F1/rate/DIR/FAR whose values all lie
    in [0, 1]) print as ``85.3\\%``; other floats use ``float_format`` (a format string such as ``"{:.2f}"``
    or a callable; None = per column, 0 to 3 decimals depending on the column's largest value). ``index``
    (default: only when it is not a plain 0..n-1 range) adds the index as the first column(s).
    """
    df = _with_index(df, index)
    if df.columns.duplicated().any():
        raise ValueError(f"duplicate column names: {list(df.columns[df.columns.duplicated()])}")
    pcols = _percent_columns(df, None if percent is None else list(percent))
    formatters = {c: _formatter(df[c], c in pcols, float_format, percent_digits) for c in df.columns}
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
                    else "l" for c in df.columns)
    styler = (df.style.hide(axis="index")
              .format(formatters, na_rep="--", escape="latex")
              .format_index(escape="latex", axis=1))
    return styler.to_latex(hrules=True, column_format=align or "l")


def _with_index(df: pd.DataFrame, index: bool | None) -> pd.DataFrame:
    plain = isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1 \
        and df.index.name is None
    if index is None:
        index = not plain
    df = df.reset_index() if index else df.reset_index(drop=True)
    df.columns = [str(c) if not isinstance(c, tuple) else " ".join(map(str, c)).strip() for c in df.columns]
    return df


def save_table(name: str, df: pd.DataFrame, caption: str | None = None, float_format: str | Callable | None = None,
               folder: str | os.PathLike | None = None, *, percent: Iterable | None = None,
               percent_digits: int = 1, index: bool | None = None) -> list[Path]:
    """Write ``<folder>/<name>.tex`` (booktabs tabular, see :func:`table_tex`) and ``<name>.csv``; return both paths.

    Args:
        name: file stem, e.g. ``"06_comparison"`` (notebook number first, one of :data:`REPORT_TABLES` for the
            report).
        df: the table; column names are printed as given (escaped), so rename them for readers first.
        caption: a suggested caption, written as a ``%`` comment on top of the .tex (``report.tex`` sets the
            real caption, label and placement).
        float_format: format string (``"{:.2f}"``) or callable for non-percentage floats; None = per column
            (0-3 decimals depending on the column's largest value).
        folder: default: the tables folder of the active profile (``report/tables`` for ``default``).
        percent: columns printed as percentages (fractions in [0, 1]); None = guess from the column names,
            ``[]`` = none.
        index: include the index as first column(s); None = only when it is not a plain range.

    The CSV holds the raw values (fractions, not percentages) for anyone who wants to re-plot them.
    """
    _check_stem(name)
    folder = _tables_dir(folder)
    body = table_tex(df, float_format=float_format, percent=percent, percent_digits=percent_digits, index=index)
    header = f"% {name}: generated by nnprak.report.save_table; do not edit (re-run the notebook instead).\n"
    if caption:
        header += "".join(f"% caption: {line}\n" for line in str(caption).splitlines())
    tex_path, csv_path = folder / f"{name}.tex", folder / f"{name}.csv"
    atomic_write_text(tex_path, header + body)
    with atomic_path(csv_path) as tmp:
        _with_index(df, index).to_csv(tmp, index=False)
    return [tex_path, csv_path]


def _check_stem(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", name or ""):
        raise ValueError(f"table name {name!r}: use letters, digits, '_' and '-' only (no folder, no extension)")


# ==========================================================================================================
# Numbers for the prose
# ==========================================================================================================
_NUMBER_LINE = re.compile(r"^\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}\s*$")
_MACRO_NAME = re.compile(r"[A-Za-z]+")


def _check_macro(name: str) -> None:
    if not isinstance(name, str) or not _MACRO_NAME.fullmatch(name):
        raise ValueError(f"number name {name!r}: a LaTeX macro name may contain letters only "
                         "(e.g. 'ScratchAcc', not 'scratch_acc' or 'Acc1')")
    if name in LATEX_UPPERCASE or not name[0].isupper():
        raise ValueError(f"number name {name!r}: start it with a capital letter and avoid LaTeX's own "
                         "commands (e.g. 'ScratchAcc')")


def _latex_value(value) -> str:
    """Return the LaTeX text of one number: strings as given (bare % & # _ escaped), numbers via :func:`num`."""
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            raise ValueError(f"number value {value!r} spans several lines")
        out, math_mode, i = [], False, 0
        while i < len(value):
            ch = value[i]
            if ch == "\\":  # an escaped character or a macro: keep both characters
                out.append(value[i:i + 2])
                i += 2
                continue
            if ch == "$":
                math_mode = not math_mode
            elif ch in "%&#" or (ch == "_" and not math_mode):
                ch = "\\" + ch
            out.append(ch)
            i += 1
        text = "".join(out)
        depth = 0
        for ch in re.sub(r"\\.", "", text):
            depth += (ch == "{") - (ch == "}")
            if depth < 0:
                break
        if depth != 0:
            raise ValueError(f"number value {value!r} has unbalanced braces")
        return text
    if isinstance(value, (_numbers.Number, np.number)):
        return num(value.item() if isinstance(value, np.generic) else value)
    raise TypeError(f"number value {value!r}: give a str (LaTeX) or a number, not {type(value).__name__}")


def read_numbers(path: str | os.PathLike) -> dict[str, str]:
    """Return the macros of a numbers file written by :func:`write_numbers` as {name: LaTeX value} ({} if absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _NUMBER_LINE.match(line.strip())
        if m:
            found[m.group(1)] = m.group(2)
    return found


def write_numbers(numbers: Mapping[str, str | float], name: str = NUMBERS_NAME,
                  folder: str | os.PathLike | None = None) -> Path:
    """Merge ``numbers`` into ``<folder>/<name>.tex`` (one ``\\newcommand`` each) and return its path.

    Keys are macro names (letters only, starting with a capital: ``ScratchAcc`` becomes ``\\ScratchAcc``); they
    overwrite the same keys of an existing file, other keys are kept, so every notebook adds its own numbers.
    Values: a ``str`` is LaTeX as it should print (``"85.3\\\\%"``; a bare ``%``, ``&``, ``#`` or ``_`` outside
    ``$...$`` is escaped for you), an int or float is formatted by :func:`num` (use :func:`pct` for rates).
    The file is sorted by name and written atomically.
    """
    _check_stem(name)
    new = {}
    for key, value in numbers.items():
        _check_macro(key)
        new[key] = _latex_value(value)
    path = _tables_dir(folder) / f"{name}.tex"
    merged = {**read_numbers(path), **new}
    lines = ["% Measured numbers cited by report.tex: generated by nnprak.report.write_numbers (each notebook",
             "% adds its own). Do not edit: re-run the notebooks (make run) instead."]
    lines += [f"\\newcommand{{\\{k}}}{{{merged[k]}}}" for k in sorted(merged)]
    return atomic_write_text(path, "\n".join(lines) + "\n")


# ==========================================================================================================
# What report.tex needs
# ==========================================================================================================
def strip_comments(tex: str) -> str:
    """Return LaTeX source without its comments (from an unescaped ``%`` to the end of the line)."""
    out = []
    for line in tex.splitlines():
        i = 0
        while i < len(line):
            if line[i] == "\\":
                i += 2
                continue
            if line[i] == "%":
                line = line[:i]
                break
            i += 1
        out.append(line)
    return "\n".join(out)


_INPUT = re.compile(r"\\(?:input|include)\s*\{([^{}]+)\}")
_GRAPHICS = re.compile(r"\\includegraphics\*?\s*(?:\[[^\]]*\]\s*){0,2}\{([^{}]+)\}")
_GRAPHICSPATH = re.compile(r"\\graphicspath\s*\{((?:\s*\{[^{}]*\})*)\s*\}")
_CONTROL_SEQ = re.compile(r"\\([A-Za-z]+)")
_DEFINED = re.compile(r"\\(?:(?:new|renew|provide)command\*?|DeclareMathOperator\*?|newsavebox|newlength|"
                      r"newcounter|def|let)\s*\{?\s*\\?([A-Za-z]+)")


def _read_tex(tex_path) -> str:
    return strip_comments(Path(tex_path).read_text(encoding="utf-8"))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def tex_targets(tex_path: str | os.PathLike) -> dict[str, list[str]]:
    """Return what a .tex file reads: ``{"inputs": [...], "graphics": [...], "graphicspath": [...]}``.

    ``inputs`` are the ``\\input``/``\\include`` targets with ``.tex`` added when they have no extension
    (``"tables/numbers.tex"``); ``graphics`` are the ``\\includegraphics`` targets as written (``"05_tsne"``),
    looked up by :func:`missing_targets` in the ``\\graphicspath`` folders with :data:`GRAPHICS_EXTENSIONS`.
    Commented-out lines are ignored; each list keeps the order of first use, without repeats.
    """
    tex = _read_tex(tex_path)
    inputs = [t.strip() for t in _INPUT.findall(tex)]
    inputs = [t if Path(t).suffix else t + ".tex" for t in inputs]
    paths = []
    for group in _GRAPHICSPATH.findall(tex):
        paths += re.findall(r"\{([^{}]*)\}", group)
    return {"inputs": _unique(inputs), "graphics": _unique(t.strip() for t in _GRAPHICS.findall(tex)),
            "graphicspath": _unique(paths)}


def number_macros(tex_path: str | os.PathLike) -> list[str]:
    """Return the number macros a .tex file uses: capitalised commands that neither it nor LaTeX defines.

    These are the macros :func:`write_numbers` must provide (e.g. ``["NumPeople", "ScratchAcc"]``), in order of
    first use. Commands the file defines itself (``\\newcommand``) and :data:`LATEX_UPPERCASE` are left out.
    """
    tex = _read_tex(tex_path)
    defined = set(_DEFINED.findall(tex))
    return _unique(m for m in _CONTROL_SEQ.findall(tex)
                   if m[0].isupper() and m not in defined and m not in LATEX_UPPERCASE)


def _locate(rel: str, tex_dir: Path, figures_dir: Path, tables_dir: Path) -> Path:
    parts = Path(rel).parts
    if parts and parts[0] == "figures":
        return figures_dir.joinpath(*parts[1:])
    if parts and parts[0] == "tables":
        return tables_dir.joinpath(*parts[1:])
    return tex_dir / rel


def _graphic_candidates(name: str, graphicspath: list[str]) -> list[str]:
    prefixes = [""] + graphicspath
    exts = [""] if Path(name).suffix.lower() in _KNOWN_GRAPHICS_EXT else list(GRAPHICS_EXTENSIONS)
    return [f"{p}{name}{e}" for p in prefixes for e in exts]


def _graphic_report_name(name: str, graphicspath: list[str]) -> str:
    # the name a reader looks for: the first graphicspath folder and the first default extension
    prefix = graphicspath[0] if graphicspath and "/" not in name else ""
    ext = "" if Path(name).suffix.lower() in _KNOWN_GRAPHICS_EXT else GRAPHICS_EXTENSIONS[0]
    return f"{prefix}{name}{ext}"


def missing_targets(tex_path: str | os.PathLike | None = None, figures_dir: str | os.PathLike | None = None,
                    tables_dir: str | os.PathLike | None = None, check_numbers: bool = True) -> list[str]:
    """Return the files (and number macros) ``tex_path`` needs that a run has not produced; ``[]`` when complete.

    Paths under ``figures/`` and ``tables/`` (relative to the .tex) are looked up in ``figures_dir`` and
    ``tables_dir`` (default: those of the active profile), anything else next to the .tex. A missing figure is
    reported as ``figures/<name>.pdf``, a missing input as ``tables/<name>.tex``; with ``check_numbers``, every
    :func:`number_macros` macro that no existing input file defines is reported as ``\\Name``.
    """
    tex_path = Path(tex_path) if tex_path else REPORT_TEX
    cfg_paths = config.active().paths if figures_dir is None or tables_dir is None else None
    figures_dir = Path(figures_dir) if figures_dir is not None else cfg_paths.figures
    tables_dir = Path(tables_dir) if tables_dir is not None else cfg_paths.tables
    tex_dir = tex_path.parent
    targets = tex_targets(tex_path)
    missing, defined = [], set()
    for rel in targets["inputs"]:
        found = _locate(rel, tex_dir, figures_dir, tables_dir)
        if found.is_file():
            defined |= set(_DEFINED.findall(strip_comments(found.read_text(encoding="utf-8"))))
        else:
            missing.append(rel)
    for name in targets["graphics"]:
        cands = _graphic_candidates(name, targets["graphicspath"])
        if not any(_locate(c, tex_dir, figures_dir, tables_dir).is_file() for c in cands):
            missing.append(_graphic_report_name(name, targets["graphicspath"]))
    if check_numbers:
        missing += [f"\\{m}" for m in number_macros(tex_path) if m not in defined]
    return missing


# ==========================================================================================================
# Building the PDF
# ==========================================================================================================
def report_tex(cfg: config.Config | None = None, source: str | os.PathLike | None = None) -> Path:
    """Return the report.tex to build for a profile: ``report/report.tex`` itself for ``default``, else a copy.

    Other profiles keep their figures and tables under ``build/<profile>/report/``; the source (and
    ``meta.tex`` and a ``references.bib`` next to it, if any) is copied there so that the same relative paths
    work. ``source``: :data:`REPORT_TEX` (default) or :data:`SLIDES_TEX`.
    """
    cfg = cfg or config.active()
    source = Path(source) if source else REPORT_TEX
    target_dir = cfg.paths.figures.parent
    if cfg.paths.tables.parent != target_dir:
        raise ValueError(f"figures ({cfg.paths.figures}) and tables ({cfg.paths.tables}) must share one parent "
                         "folder for report.tex to find both")
    if target_dir.resolve() == source.parent.resolve():
        return source
    for extra in [source] + sorted(source.parent.glob("*.bib")) + sorted(source.parent.glob("meta.tex")):
        with atomic_path(target_dir / extra.name) as tmp:
            shutil.copyfile(extra, tmp)
    return target_dir / source.name


def _log_errors(log: Path, limit: int = 30) -> str:
    if not log.exists():
        return ""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    picked = []
    for i, line in enumerate(lines):
        if line.startswith("!") or re.match(r"^\S+\.tex:\d+: ", line):
            picked += lines[i:i + 3]
    return "\n".join(picked[:limit])


def build_pdf(tex_path: str | os.PathLike | None = None, force: bool = False, timeout: float = 600) -> Path:
    """Compile ``tex_path`` (default ``report/report.tex``) with latexmk in its folder and return the PDF's path.

    Runs ``latexmk -pdf -interaction=nonstopmode -halt-on-error`` (``-g`` with ``force``), which reruns
    pdflatex until references settle. Raises :class:`LatexError` when latexmk or pdflatex is not installed
    (``make setup-tex`` installs them) or when the document does not compile (with the errors from the log).
    """
    tex_path = Path(tex_path) if tex_path else REPORT_TEX
    if not tex_path.is_file():
        raise FileNotFoundError(f"{tex_path} does not exist")
    missing = [exe for exe in ("latexmk", "pdflatex") if shutil.which(exe) is None]
    if missing:
        raise LatexError(f"{' and '.join(missing)} not found on PATH: run `make setup-tex` (it installs the Debian "
                         "packages latexmk texlive-latex-base texlive-latex-recommended texlive-fonts-recommended)")
    cmd = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error"]
    if force:
        cmd.append("-g")
    cmd.append(tex_path.name)
    try:
        proc = subprocess.run(cmd, cwd=tex_path.parent, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise LatexError(f"latexmk did not finish {tex_path.name} within {timeout:.0f} s") from err
    pdf = tex_path.with_suffix(".pdf")
    if proc.returncode != 0 or not pdf.is_file():
        errors = _log_errors(tex_path.with_suffix(".log")) or "\n".join(
            (proc.stdout + proc.stderr).splitlines()[-30:])
        hint = missing_targets(tex_path, tex_path.parent / "figures", tex_path.parent / "tables")
        raise LatexError(f"{tex_path} did not compile (latexmk exit code {proc.returncode}):\n{errors}"
                         + (f"\nFiles/numbers the report needs that are missing: {hint}" if hint else ""))
    return pdf


def layout_problems(pdf: str | os.PathLike, max_blank: float = 0.3, dpi: int = 20) -> list[str]:
    """Return one line per layout problem of a built PDF; ``[]`` when there is none.

    A document (pages taller than wide): every page but the last whose empty gaps (runs of blank rows taller than
    a paragraph break, between the top and bottom margins of pages rendered by ``pdftoppm`` of poppler-utils) add
    up to more than ``max_blank`` of it: what a half-empty float page or a \\clearpage leaves. Slides (pages wider than tall): every page with type under
    :data:`nnprak.slides.MIN_TEXT_PT`, measured by :func:`nnprak.slides.small_text`.
    """
    import tempfile

    import numpy as np
    from PIL import Image

    from pdfminer.high_level import extract_pages

    first = next(extract_pages(str(pdf), maxpages=1), None)
    if first is not None and first.width > first.height:
        from . import slides

        return [f"page {r.page}: type of {r.size:.1f} pt, under {slides.MIN_TEXT_PT:g} pt ({r.text})"
                for r in slides.small_text(pdf).itertuples()]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(pdf), f"{tmp}/p"], check=True,
                       capture_output=True)
        pages = [np.asarray(Image.open(png).convert("L")) < 200 for png in sorted(Path(tmp).glob("p-*.png"))]
    for number, ink in enumerate(pages[:-1], start=1):
        body = ink[int(0.08 * len(ink)):int(0.92 * len(ink))].any(axis=1)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (~body).astype(int), [0]])))
        runs = edges[1::2] - edges[::2]                       # lengths of the runs of blank rows
        empty = runs[runs > 0.03 * len(body)].sum() / len(body)  # gaps taller than a paragraph break
        if empty > max_blank:
            problems.append(f"page {number}: {empty:.0%} of it is empty (floats placed after a \\clearpage, or "
                            "too large to share a page with text)")
    return problems
