"""Offline-first weights resolution: real files on disk, real (loopback-only) servers, no outside network."""
from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
import torchvision

from nnprak import weights as W

OFFICIAL_R18 = "resnet18-f37072fd.pth"
OFFICIAL_R18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME and nnprak cache; no env switch or proxy from the developer's shell leaks in."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("NNPRAK_CACHE", str(tmp_path / "nnprak_cache"))
    for var in ("NNPRAK_OFFLINE", "NNPRAK_WEIGHTS_DIR", "NNPRAK_WEIGHTS_MIRROR", "NNPRAK_DOWNLOAD_TIMEOUT",
                "TORCH_HUB"):
        monkeypatch.delenv(var, raising=False)
    # any request that escapes to the internet by mistake goes to a closed loopback port instead
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    return home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save_resnet18(path: Path) -> dict:
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_finds_torchvision_file_in_its_cache_and_loads_it(torch_home, monkeypatch):
    monkeypatch.setenv("NNPRAK_OFFLINE", "1")
    cached = torch_home / "hub" / "checkpoints" / OFFICIAL_R18   # torchvision's documented cache location
    state = _save_resnet18(cached)

    assert W.resolve_weights("resnet18") == cached
    loaded = W.load_state_dict("resnet18.imagenet1k_v1")
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(loaded)  # strict
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    info = W.weights_info("resnet18")
    assert info["available"] and info["path"] == str(cached) and info["cache_dir"] == str(cached.parent)

    # torchvision itself finds the same file (no download: a request would hit the dead proxy and fail)
    tv = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    assert torch.equal(tv.conv1.weight, state["conv1.weight"])


def test_facenet_cache_is_facenet_pytorchs(torch_home, monkeypatch):
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    monkeypatch.setenv("NNPRAK_OFFLINE", "1")
    folder = Path(get_torch_home()) / "checkpoints"
    assert W.cache_dir("vggface2") == folder == torch_home / "checkpoints"
    file = folder / "20180402-114759-vggface2.pt"
    folder.mkdir(parents=True)
    torch.save({"last_linear.weight": torch.ones(4, 3)}, file)
    assert W.resolve_weights("vggface2") == file
    assert torch.equal(W.load_state_dict("inception_resnet_v1.vggface2")["last_linear.weight"], torch.ones(4, 3))


def test_explicit_path_wins_and_a_wrong_one_is_an_error(torch_home, tmp_path, monkeypatch):
    monkeypatch.setenv("NNPRAK_OFFLINE", "1")
    _save_resnet18(torch_home / "hub" / "checkpoints" / OFFICIAL_R18)
    mine = tmp_path / "usb" / "my-copy.pth"
    mine.parent.mkdir(parents=True)
    torch.save({"x": torch.zeros(2)}, mine)
    assert W.resolve_weights("resnet18", path=mine) == mine
    assert set(W.load_state_dict("resnet18", path=mine)) == {"x"}

    folder = tmp_path / "folder"
    _save_resnet18(folder / OFFICIAL_R18)
    assert W.resolve_weights("resnet18", path=folder) == folder / OFFICIAL_R18  # a folder holding the file
    monkeypatch.setenv("NNPRAK_WEIGHTS_DIR", str(folder))
    assert W.resolve_weights("resnet18") == folder / OFFICIAL_R18  # before the cache

    with pytest.raises(W.WeightsUnavailable) as err:
        W.resolve_weights("resnet18", path=tmp_path / "typo.pth")
    assert "typo.pth" in str(err.value)


def test_offline_raises_with_file_url_hash_and_folder(torch_home, monkeypatch):
    monkeypatch.setenv("NNPRAK_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(W.WeightsUnavailable) as err:
        W.resolve_weights("resnet50")
    assert time.perf_counter() - t0 < 1.0  # no network attempt at all
    msg = str(err.value)
    folder = torch_home / "hub" / "checkpoints"
    for part in ("resnet50-11ad3fa6.pth", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
                 "11ad3fa6", str(folder), "NNPRAK_OFFLINE"):
        assert part in msg, part
    assert isinstance(err.value, FileNotFoundError)
    assert not folder.exists() or not any(folder.iterdir())

    with pytest.raises(W.WeightsUnavailable) as err:  # download=False: same honest message
        W.load_state_dict("casia-webface", download=False)
    msg = str(err.value)
    for part in ("20180408-102900-casia-webface.pt",
                 "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
                 "20180408-102900-casia-webface.pt", str(torch_home / "checkpoints")):
        assert part in msg, part


def test_refused_download_fails_fast_with_instructions(torch_home, monkeypatch):
    port = _free_port()  # nothing listens there
    monkeypatch.setenv("NNPRAK_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}/models")
    t0 = time.perf_counter()
    with pytest.raises(W.WeightsUnavailable) as err:
        W.resolve_weights("resnet18")
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    for part in (OFFICIAL_R18, OFFICIAL_R18_URL, f"127.0.0.1:{port}", "download failed",
                 str(torch_home / "hub" / "checkpoints")):
        assert part in msg, part


class _Silent:
    """A loopback TCP server that accepts connections (or sends ``reply``) and then never says more."""

    def __init__(self, reply: bytes = b""):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.reply, self.conns, self.stop = reply, [], threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            if self.reply:
                conn.recv(65536)
                conn.sendall(self.reply)

    def close(self):
        self.stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()


def test_silent_server_fails_within_10_seconds_with_default_timeout(torch_home, monkeypatch):
    server = _Silent()
    monkeypatch.setenv("NNPRAK_WEIGHTS_MIRROR", f"http://127.0.0.1:{server.port}")
    try:
        t0 = time.perf_counter()
        with pytest.raises(W.WeightsUnavailable) as err:
            W.resolve_weights("resnet18")  # default timeout
        elapsed = time.perf_counter() - t0
    finally:
        server.close()
    assert elapsed < 10
    assert OFFICIAL_R18_URL in str(err.value)


def test_stalled_body_leaves_no_partial_file(torch_home, monkeypatch):
    server = _Silent(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)  # then silence
    monkeypatch.setenv("NNPRAK_WEIGHTS_MIRROR", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("NNPRAK_DOWNLOAD_TIMEOUT", "1")
    try:
        t0 = time.perf_counter()
        with pytest.raises(W.WeightsUnavailable):
            W.resolve_weights("resnet18")
        assert time.perf_counter() - t0 < 5
    finally:
        server.close()
    folder = torch_home / "hub" / "checkpoints"
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.fixture
def http_dir(tmp_path):
    """Serve ``tmp_path/www`` over HTTP on loopback; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _tiny_state_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, buf)
    return buf.getvalue()


def test_download_is_atomic_and_hash_checked(torch_home, http_dir, monkeypatch):
    root, base = http_dir
    data = _tiny_state_bytes()
    good = f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / good).write_bytes(data)
    spec = W.WeightsSpec("test.tiny", good, f"{base}/{good}", "nnprak", "tiny", "a tiny test state_dict")
    monkeypatch.setitem(W.REGISTRY, spec.name, spec)

    path = W.resolve_weights("test.tiny")
    assert path == W.cache_dir(spec) / good and path.read_bytes() == data
    assert torch.equal(W.load_state_dict("test.tiny", verify=True)["w"], torch.arange(6.0).reshape(2, 3))
    assert [p.name for p in path.parent.iterdir()] == [good]  # no temporary leftovers

    bad = "tiny-deadbeef.pth"  # the name promises a hash the bytes do not have
    (root / bad).write_bytes(data)
    spec_bad = W.WeightsSpec("test.bad", bad, f"{base}/{bad}", "nnprak", "tiny", "a corrupted download")
    monkeypatch.setitem(W.REGISTRY, spec_bad.name, spec_bad)
    with pytest.raises(W.WeightsUnavailable) as err:
        W.resolve_weights("test.bad")
    assert "SHA-256 mismatch" in str(err.value) and "deadbeef" in str(err.value)
    assert [p.name for p in path.parent.iterdir()] == [good]

    spec_404 = W.WeightsSpec("test.404", "gone.pth", f"{base}/gone.pth", "nnprak", "tiny", "missing upstream",
                             mirrors=(f"{base}/{good}",))  # an HTTP error moves on to the mirror
    monkeypatch.setitem(W.REGISTRY, spec_404.name, spec_404)
    assert W.resolve_weights("test.404").read_bytes() == data


def test_unreadable_file_and_unknown_name(torch_home, monkeypatch):
    monkeypatch.setenv("NNPRAK_OFFLINE", "1")
    cached = torch_home / "hub" / "checkpoints" / OFFICIAL_R18
    cached.parent.mkdir(parents=True)
    cached.write_text("<html>proxy login page</html>")  # what a captive portal saves as .pth
    with pytest.raises(W.WeightsUnavailable) as err:
        W.load_state_dict("resnet18")
    assert "could not be read" in str(err.value) and str(cached) in str(err.value)
    with pytest.raises(W.WeightsUnavailable, match="SHA-256"):
        W.load_state_dict("resnet18", verify=True)
    with pytest.raises(KeyError):
        W.get_spec("resnet1000")
