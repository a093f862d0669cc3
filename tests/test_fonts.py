"""Person names in any script (from folder names) must be drawn with real glyphs: nnprak.plots sets a CJK fallback font.

`make test` installs the font first (`make setup-fonts`, Debian package fonts-noto-cjk); without it these tests fail.
"""
from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from nnprak import plots

NAMES = ["张伟", "山田太郎", "김민준", "Иван Петров", "Γιώργος", "José Müller"]
"""Chinese, Japanese, Korean, Cyrillic, Greek and accented Latin."""
FOLDERS = ["张伟", "山田_太郎", "김민준", "Иван_Петров", "Γιώργος", "José_Müller"]
"""The same names as folder names (underscores for spaces, as in LFW); the plots replace ``_`` by a space."""
GLYPH_WARNING = "missing from font"


def glyph_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if GLYPH_WARNING in str(w.message)]


def draw_everywhere(fig) -> None:
    """Draw on the Agg canvas and save as PNG and PDF (what save_fig writes), so every backend lays out the text."""
    fig.canvas.draw()
    for fmt in ("png", "pdf"):
        fig.savefig(io.BytesIO(), format=fmt, dpi=60)


def render(text: str) -> np.ndarray:
    """Return the ink mask (dark pixels) of ``text`` drawn alone at 24 pt on an Agg canvas."""
    fig = Figure(figsize=(3.5, 0.6), dpi=100)
    FigureCanvasAgg(fig)
    fig.text(0.02, 0.2, text, fontsize=24)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return rgb.min(axis=2) < 128


def test_fallback_family_is_an_installed_cjk_font():
    families = plots.FONT_FAMILIES
    assert families == list(plt.rcParams["font.family"])
    if len(families) < 2:
        pytest.fail(f"no CJK fallback font (font.family={families}): run `make setup-fonts` "
                    "(Debian package fonts-noto-cjk)")
    assert families[0] == "DejaVu Sans"
    cjk = families[1]
    assert cjk.startswith(plots.CJK_FAMILIES)
    path = font_manager.findfont(font_manager.FontProperties(family=cjk), fallback_to_default=False)
    charmap = font_manager.get_font(path).get_charmap()
    missing = [c for c in "".join(NAMES[:3]) if ord(c) not in charmap]
    assert not missing, f"{cjk} ({path}) lacks {missing}"


def test_mixed_script_figure_draws_without_glyph_warnings():
    fig, ax = plt.subplots(figsize=(6, 3))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ax.bar(range(len(NAMES)), np.arange(1, 7), label=" / ".join(NAMES[:3]))
            ax.set_xticks(range(len(NAMES)), NAMES, rotation=30)
            ax.set_title(" ".join(NAMES))
            ax.set_xlabel(NAMES[0])
            ax.set_ylabel(NAMES[3])
            ax.legend()
            fig.suptitle(NAMES[1] + " " + NAMES[2])
            draw_everywhere(fig)
        assert not glyph_warnings(caught)
    finally:
        plt.close(fig)


def _title_glyph_warnings() -> list[str]:
    fig, ax = plt.subplots()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ax.set_title(" ".join(NAMES))
            draw_everywhere(fig)
    finally:
        plt.close(fig)
    return glyph_warnings(caught)


def test_use_fallback_fonts_again_after_seaborn_set_theme():
    """sns.set_theme() resets font.family to "sans-serif" (one font, no fallback); use_fallback_fonts() restores it."""
    import seaborn as sns

    with plt.rc_context():
        sns.set_theme()
        assert _title_glyph_warnings(), "seaborn no longer resets the fonts: drop this test"
        assert plots.use_fallback_fonts() == plots.FONT_FAMILIES
        assert not _title_glyph_warnings()


def test_each_name_is_drawn_with_ink():
    for name in NAMES:
        ink = render(name)
        assert ink.sum() > 40, f"{name!r} drew almost nothing"
        cols = np.flatnonzero(ink.any(axis=0))
        em = 24 * 100 / 72  # pixels
        assert cols[-1] - cols[0] > 0.4 * em * len(name.replace(" ", "")), f"{name!r} is too narrow"


@pytest.mark.parametrize("a, b", [("张伟", "王芳"), ("山田", "佐藤"), ("김민준", "이서연")])
def test_different_cjk_names_render_differently(a, b):
    """Missing glyphs are drawn as identical empty boxes (tofu), real glyphs differ."""
    ra, rb = render(a), render(b)
    assert ra.any() and rb.any()
    assert (ra != rb).sum() > 50, f"{a!r} and {b!r} render alike: empty boxes instead of glyphs?"


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def _image_grid(tmp_path):
    images = [np.full((20, 20, 3), 40 * i, np.uint8) for i in range(len(FOLDERS))]
    return plots.image_grid(images, FOLDERS, ncols=3, suptitle=NAMES[0])


def _confusion_matrix(tmp_path):
    true = FOLDERS * 2
    pred = FOLDERS + FOLDERS[1:] + FOLDERS[:1]
    return plots.confusion_matrix(true, pred, title="confusion " + NAMES[1])


def _images_per_person(tmp_path):
    rows = [{"person": p, "split": s, "status": "ok"}
            for k, p in enumerate(FOLDERS) for s in ["train"] * (k + 2) + ["val", "test"]]
    return plots.images_per_person(pd.DataFrame(rows))


def _embedding_tsne(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(FOLDERS) * 6, 16)).astype(np.float32)
    return plots.embedding_tsne(X, FOLDERS * 6, top=len(FOLDERS))


def _verification_pairs(tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.jpg")
        Image.new("RGB", (250, 250), (60 * i, 90, 120)).save(paths[-1])
    pairs = pd.DataFrame([
        {"name1": NAMES[0], "path1": paths[0], "name2": NAMES[0], "path2": paths[1], "same": True,
         "distance": 1.3, "threshold": 1.1},
        {"name1": NAMES[1], "path1": paths[0], "name2": NAMES[2], "path2": paths[1], "same": False,
         "distance": 0.9, "threshold": 1.1}])
    return plots.verification_pairs(pairs, ncols=2, crop=150, title=NAMES[3])


@pytest.mark.parametrize("make", [_image_grid, _confusion_matrix, _images_per_person, _embedding_tsne,
                                  _verification_pairs], ids=lambda f: f.__name__.strip("_"))
def test_plots_draw_person_names_without_glyph_warnings(make, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = make(tmp_path)
        try:
            draw_everywhere(fig)
            texts = _texts(fig)
        finally:
            plt.close(fig)
    assert not glyph_warnings(caught)
    shown = [n for n in NAMES if n in texts]
    assert len(shown) >= 3, f"the figure shows too few of the test names: {texts!r}"


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def _stale_cache_env(tmp_path) -> dict:
    """An MPLCONFIGDIR whose font-list cache predates the CJK fonts (as when they are installed after matplotlib)."""
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path), "MPLBACKEND": "Agg"}
    result = _run(
        "from matplotlib import font_manager as fm\n"
        "m = fm.fontManager\n"  # a fresh cache, with the CJK fonts: drop them
        f"m.ttflist = [f for f in m.ttflist if not (f.name.startswith({plots.CJK_FAMILIES!r}) or 'CJK' in f.name)]\n"
        "fm.json_dump(m, fm.Path(fm.mpl.get_cachedir(), f'fontlist-v{fm.FontManager.__version__}.json'))\n",
        env)
    assert result.returncode == 0, result.stderr
    (cache,) = tmp_path.glob("fontlist-*.json")
    assert "CJK" not in cache.read_text()
    return env


def test_stale_font_cache_is_rebuilt_once(tmp_path):
    env = _stale_cache_env(tmp_path)
    result = _run("from nnprak import plots; print(plots.FONT_FAMILIES)", env)
    assert result.returncode == 0, result.stderr
    families = ast.literal_eval(result.stdout.splitlines()[-1])
    assert families[0] == "DejaVu Sans" and families[1].startswith(plots.CJK_FAMILIES), result.stdout
    (cache,) = tmp_path.glob("fontlist-*.json")
    assert any("CJK" in f["name"] for f in json.loads(cache.read_text())["ttflist"])


def test_without_cjk_font_one_hint_and_no_warning_flood(tmp_path):
    """No CJK font known (stale cache, no fc-list to find one): one line of advice instead of a warning per glyph."""
    env = {**_stale_cache_env(tmp_path), "PATH": str(tmp_path)}  # no fc-list on PATH
    result = _run(
        "import matplotlib.pyplot as plt\n"
        "from nnprak import plots\n"
        "assert len(plots.FONT_FAMILIES) == 1, plots.FONT_FAMILIES\n"
        f"for name in {NAMES!r}:\n"
        "    fig, ax = plt.subplots(); ax.set_title(name * 3); fig.canvas.draw(); plt.close(fig)\n",
        env)
    assert result.returncode == 0, result.stderr
    assert GLYPH_WARNING not in result.stderr
    hints = [line for line in result.stdout.splitlines() if "CJK font" in line]
    assert len(hints) == 1 and "make setup-fonts" in hints[0] and "fonts-noto-cjk" in hints[0], result.stdout
