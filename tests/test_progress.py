"""Tests of the terminal feedback of ``nnprak run``: the progress file, the status lines and the kernel transport."""
from __future__ import annotations

import io
import json
import threading

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnprak import monitor, train, utils
from nnprak.__main__ import kernel_config


class Clock:
    """A settable clock for the monitor."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def progress_file(tmp_path, monkeypatch):
    path = tmp_path / "progress.txt"
    monkeypatch.setenv(utils.PROGRESS_ENV, str(path))
    monkeypatch.setattr(utils, "_last_report", [0.0])
    return path


def test_report_progress_writes_one_line_and_is_throttled(progress_file, monkeypatch):
    assert utils.report_progress("detection 1/10\nimages", force=True)
    assert utils.read_progress(progress_file) == "detection 1/10 images"
    assert not utils.report_progress("detection 2/10 images")          # within PROGRESS_INTERVAL
    assert utils.read_progress(progress_file) == "detection 1/10 images"
    assert utils.report_progress("detection 10/10 images", force=True)
    assert utils.read_progress(progress_file) == "detection 10/10 images"
    assert not list(progress_file.parent.glob("*.tmp"))              # written atomically through a temporary file
    monkeypatch.delenv(utils.PROGRESS_ENV)
    assert not utils.report_progress("nowhere", force=True)           # no file named: nothing to do
    assert utils.read_progress(progress_file.parent / "missing.txt") == ""


def test_progress_bar_reports_without_drawing_a_bar(progress_file, monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with utils.ProgressBar(total=3, desc="face detection", unit="images") as bar:
        assert utils.read_progress(progress_file) == "face detection 0/3 images"
        bar.update(2)
        bar.set_postfix_str("2 faces", force=True)
        assert utils.read_progress(progress_file) == "face detection 2/3 images: 2 faces"
    assert list(utils.progress_iter(range(4), desc="decoding", unit="images")) == [0, 1, 2, 3]
    assert utils.read_progress(progress_file) == "decoding 4/4 images"
    assert capsys.readouterr().err == ""                               # TQDM_DISABLE: no bar drawn


def test_fit_reports_its_epochs(progress_file):
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = nn.Linear(8, 3)
    train.fit(model, loader, loader, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
              progress=False, device="cpu")
    line = utils.read_progress(progress_file)
    assert line.startswith("training 2/2 epochs: loss ") and "val acc" in line


def test_monitor_lines_cells_heartbeat_and_estimate(tmp_path):
    clock, out = Clock(), io.StringIO()
    pfile = tmp_path / "progress.txt"
    previous = {"01_data": 20.0, "02_crop": 60.0}
    mon = monitor.RunMonitor("smoke", ["01_data", "02_crop"], previous, pfile, out=out, clock=clock)
    mon.start_notebook("01_data", 4)
    assert mon.tick() is None                                          # nothing new yet
    clock.t += 10
    assert mon.tick() == "[smoke 0:10] 01_data | starting the kernel (0:10) | ~1:10 left"
    mon.cell_hook(cell=None, cell_index=0)
    clock.t += 1
    assert mon.tick() is None                                          # a new cell, but within MIN_GAP
    clock.t += 1
    assert mon.tick() == "[smoke 0:12] 01_data | cell 1/4 (0:02) | ~1:08 left"
    pfile.write_text("face detection 5/10 images")
    clock.t += 5
    assert mon.tick() is None                                          # silent cell: wait for the heartbeat
    clock.t += 5
    assert mon.tick() == "[smoke 0:22] 01_data | cell 1/4 (0:12) | ~1:00 left (0:02 over the previous run's time " \
                         "of this notebook) | face detection 5/10 images"
    mon.cell_hook()
    assert not pfile.exists()                                          # the old cell's loop status is gone
    mon.end_notebook()
    clock.t += 30
    assert mon.tick() is None                                          # between notebooks: the caller prints
    assert out.getvalue().count("\n") == 3


def test_monitor_without_previous_times_and_heartbeat_thread(tmp_path):
    out = io.StringIO()
    mon = monitor.RunMonitor("smoke", ["03_x"], {}, None, out=out, heartbeat=0.2, min_gap=0.1)
    with mon:
        mon.start_notebook("03_x", 2)
        mon.cell_hook()
        threading.Event().wait(1.3)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all("03_x | cell 1/2" in line and "left" not in line for line in lines)


def test_previous_times_code_cells_and_format(tmp_path):
    (tmp_path / "run_times.json").write_text(json.dumps({"seconds": {"01_a": 19.0, "02_b": 181.5, "total": 200}}))
    assert monitor.previous_times(tmp_path / "run_times.json") == {"01_a": 19.0, "02_b": 181.5}
    assert monitor.previous_times(tmp_path / "missing.json") == {}
    nb = {"cells": [{"cell_type": "markdown", "source": ["# x"]}, {"cell_type": "code", "source": ["1"]},
                    {"cell_type": "code", "source": []}, {"cell_type": "code", "source": "2\n"}]}
    (tmp_path / "x.ipynb").write_text(json.dumps(nb))
    assert monitor.code_cells(tmp_path / "x.ipynb") == 2
    assert [monitor.fmt_seconds(s) for s in (0, 59.6, 61, 3725)] == ["0:00", "1:00", "1:01", "1:02:05"]


def test_papermill_run_over_ipc_shows_cells_and_loop_status(tmp_path, capfd):
    """A real kernel: IPC transport (no TCP warning), the cell hook and the kernel's progress reach the monitor."""
    import nbformat
    import papermill as pm

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("import time\nfrom nnprak.utils import report_progress\n"
                                  "report_progress('loop 1/2 steps', force=True)\ntime.sleep(1.5)"),
        nbformat.v4.new_code_cell("x + 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, dst, pfile = tmp_path / "t.ipynb", tmp_path / "out.ipynb", tmp_path / "progress.txt"
    nbformat.write(nb, src)
    out = io.StringIO()
    mon = monitor.RunMonitor("test", ["t"], {}, pfile, out=out, heartbeat=0.5, min_gap=0.1)
    env = {utils.PROGRESS_ENV: str(pfile)}
    with pytest.MonkeyPatch.context() as mp, mon:
        for k, v in env.items():
            mp.setenv(k, v)
        mon.start_notebook("t", 3)
        pm.execute_notebook(str(src), str(dst), parameters={}, cwd=str(tmp_path), progress_bar=False,
                            kernel_name="python3", on_cell_execute=mon.cell_hook, config=kernel_config())
        mon.end_notebook()
    text = out.getvalue()
    assert "t | cell 2/3" in text and "loop 1/2 steps" in text
    assert nbformat.read(dst, as_version=4).cells[2].outputs[0]["data"]["text/plain"] == "2"
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err
