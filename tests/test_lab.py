"""`make lab` as a student uses it: JupyterLab starts on notebooks/, offers the `nnprak` kernel, and notebook 01 runs
in that kernel (through the server's REST and kernel WebSocket API, as the browser drives it)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid

import pytest
import requests
import websocket

from nnprak import config

TOKEN = "nnprak-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _message(msg_type: str, content: dict) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    return msg_id, json.dumps({"header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                                          "msg_type": msg_type, "version": "5.3"},
                               "parent_header": {}, "metadata": {}, "channel": "shell", "content": content})


def _wait_until_ready(ws, timeout: float = 120) -> None:
    """Ask for kernel_info until the kernel answers (requests sent while it starts may be dropped, as a
    browser's first ones would be retried)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        msg_id, text = _message("kernel_info_request", {})
        ws.send(text)
        ws.settimeout(3)
        try:
            while True:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "kernel_info_reply":
                    ws.settimeout(300)
                    return
        except websocket.WebSocketTimeoutException:
            continue
    raise TimeoutError("the nnprak kernel did not answer kernel_info within 120 s")


def _run_cell(ws, code: str, timeout: float = 300) -> tuple[str, list[str]]:
    """Execute ``code`` on the kernel behind ``ws``; return (status, outputs as text)."""
    msg_id, text = _message("execute_request", {"code": code, "silent": False, "store_history": True,
                                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    ws.send(text)
    outputs, status, idle, deadline = [], None, False, time.time() + timeout
    while time.time() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            outputs.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            outputs.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            outputs.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "execute_reply":
            status = content["status"]
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
        if idle and status is not None:   # the reply (shell) and idle (iopub) come in either order
            return status, outputs
    raise TimeoutError(f"cell did not finish in {timeout} s: {code[:80]}")


@pytest.mark.slow
def test_make_lab_serves_the_nnprak_kernel_and_notebook_01_runs_in_it(tmp_path):
    port = _free_port()
    env = dict(os.environ, NNPRAK_PROFILE="smoke", NNPRAK_PHOTOS="", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    lab_args = f"--no-browser --port {port} --IdentityProvider.token={TOKEN} --ServerApp.open_browser=False"
    log = open(tmp_path / "lab.log", "w")      # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS={lab_args}"], cwd=config.ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"token {TOKEN}"}
    try:
        for _ in range(120):
            try:
                if requests.get(f"{base}/api/status", headers=headers, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "lab.log").read_text()
            time.sleep(1)
        else:
            pytest.fail("JupyterLab did not answer within 120 s")
        # the lab front end itself, rooted at notebooks/
        assert requests.get(f"{base}/lab", headers=headers, timeout=10).ok
        listing = requests.get(f"{base}/api/contents", headers=headers, timeout=10).json()
        names = {c["name"] for c in listing["content"]}
        assert "01_data_collection_and_split.ipynb" in names and "06_evaluation.ipynb" in names, names
        specs = requests.get(f"{base}/api/kernelspecs", headers=headers, timeout=10).json()["kernelspecs"]
        assert "nnprak" in specs, f"make lab offers {sorted(specs)}: no kernel named nnprak"
        nb = requests.get(f"{base}/api/contents/01_data_collection_and_split.ipynb", headers=headers,
                          timeout=10).json()["content"]
        assert nb["metadata"]["kernelspec"]["name"] == "nnprak"
        session = requests.post(f"{base}/api/sessions", headers=headers, timeout=60, json={
            "path": "01_data_collection_and_split.ipynb", "type": "notebook", "name": "",
            "kernel": {"name": "nnprak"}}).json()
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/api/kernels/{session['kernel']['id']}/channels?token={TOKEN}", timeout=300)
        try:
            _wait_until_ready(ws)
            status, out = _run_cell(ws, "import sys, nnprak; print(sys.executable); print(nnprak.__file__)")
            assert status == "ok" and str(config.ROOT / ".venv") in out[0] and str(config.ROOT / "nnprak") in out[0]
            for cell in nb["cells"]:
                if cell["cell_type"] == "code":
                    status, out = _run_cell(ws, cell["source"])
                    assert status == "ok", f"cell failed in the nnprak kernel:\n{cell['source'][:300]}\n{out}"
            status, out = _run_cell(ws, "print(cfg.profile, len(manifest))")
            assert status == "ok" and out[0].split()[0] == "smoke" and int(out[0].split()[1]) > 0
        finally:
            ws.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
