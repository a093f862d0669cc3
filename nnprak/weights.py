"""Offline-first pretrained weights: find a file, never hang, say exactly what is missing.

Where :func:`resolve_weights` looks, in this order:

1. ``path=`` – an explicit file (or a folder holding the official file name). A wrong explicit path is an
   error, never silently replaced by a download.
2. ``$NNPRAK_WEIGHTS_DIR/<official file name>`` – e.g. a USB stick or a shared course folder.
3. The library's own cache, exactly where torchvision / facenet-pytorch would look, so a file they
   downloaded earlier is reused and a file put there by hand is found by them too:

   * torchvision: ``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``, default
     ``~/.cache/torch/hub/checkpoints``);
   * facenet-pytorch: ``$TORCH_HOME/checkpoints`` (default ``~/.cache/torch/checkpoints``).

4. A download into that cache (temporary file + rename, SHA-256 prefix checked when the file name carries
   one, as torchvision does), from ``$NNPRAK_WEIGHTS_MIRROR/<file name>`` when that is set, else from the
   official URL. Skipped when ``download=False`` or ``NNPRAK_OFFLINE=1``. A dead network fails within
   ``timeout`` seconds (default :data:`DEFAULT_TIMEOUT`, ``$NNPRAK_DOWNLOAD_TIMEOUT``), DNS included.

If all fail, :class:`WeightsUnavailable` says which file to fetch, from where, its expected hash and the
folder to put it in.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nnprak.utils import atomic_path, display_path, user_cache_dir

DEFAULT_TIMEOUT = 6.0
"""Seconds to wait for a connection and for each read during a download (the whole connect phase, DNS
included, is bounded by it too)."""

OFFLINE_ENV = "NNPRAK_OFFLINE"
WEIGHTS_DIR_ENV = "NNPRAK_WEIGHTS_DIR"
MIRROR_ENV = "NNPRAK_WEIGHTS_MIRROR"
TIMEOUT_ENV = "NNPRAK_DOWNLOAD_TIMEOUT"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# facenet-pytorch's fixed_image_standardization: (x*255 - 127.5) / 128 == (x - 0.5) / 0.50196
FACENET_MEAN = (0.5, 0.5, 0.5)
FACENET_STD = (128 / 255, 128 / 255, 128 / 255)

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torchvision's convention: <name>-<sha256 prefix>.<ext>


class WeightsUnavailable(FileNotFoundError):
    """Raised when pretrained weights are neither on disk nor downloadable; the message says how to fix it."""

    def __init__(self, message: str, spec: "WeightsSpec | None" = None, searched: tuple = (),
                 reason: str = ""):
        super().__init__(message)
        self.spec = spec
        self.searched = tuple(searched)
        self.reason = reason

    def __str__(self) -> str:  # FileNotFoundError would otherwise print "[Errno None] ..." for some arg shapes
        return self.args[0] if self.args else ""


@dataclass(frozen=True)
class WeightsSpec:
    """One known weights file: where it comes from, where its library caches it, how to feed its model."""

    name: str                     # registry key, e.g. "resnet50.imagenet1k_v2"
    filename: str                 # the official file name (also the name in the cache)
    url: str                      # the official download URL
    cache: str                    # "torchvision" | "facenet" | "nnprak": whose cache folder holds it
    arch: str                     # the model the state_dict is for
    description: str = ""
    input_size: int = 224         # side of the square input the weights were trained on
    resize_size: int | None = None  # the resize before the centre crop in the official transforms
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    size_mb: float | None = None  # approximate file size, shown in the error message
    mirrors: tuple = ()           # other public URLs of the same file (tried after the official one)
    sha256: str | None = None     # full hash when published; else the prefix in the file name is used
    aliases: tuple = field(default=(), compare=False)

    @property
    def hash_prefix(self) -> str | None:
        """Return the expected SHA-256 (full, or the prefix carried by the file name), or None if unknown."""
        if self.sha256:
            return self.sha256
        m = _HASH_IN_NAME.search(self.filename)
        return m.group(1) if m else None


_TV = "https://download.pytorch.org/models/"
_FN = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"

REGISTRY: dict[str, WeightsSpec] = {}
"""Known weights by name; :func:`register_weights` adds more (e.g. a ported dlib model)."""
ALIASES: dict[str, str] = {}


def register_weights(spec: WeightsSpec, replace: bool = False) -> WeightsSpec:
    """Add ``spec`` (and its aliases) to the registry and return it."""
    if not replace and (spec.name in REGISTRY or any(a in ALIASES for a in spec.aliases)):
        raise ValueError(f"weights {spec.name!r} (or one of its aliases) are already registered")
    REGISTRY[spec.name] = spec
    for a in spec.aliases:
        ALIASES[a] = spec.name
    return spec


for _spec in (
    WeightsSpec("resnet50.imagenet1k_v2", "resnet50-11ad3fa6.pth", _TV + "resnet50-11ad3fa6.pth", "torchvision",
                "resnet50", "torchvision ResNet-50, ImageNet-1k, IMAGENET1K_V2 (acc@1 80.9)", 224, 232,
                size_mb=97.8, aliases=("resnet50", "resnet50.imagenet", "resnet50.default")),
    WeightsSpec("resnet50.imagenet1k_v1", "resnet50-0676ba61.pth", _TV + "resnet50-0676ba61.pth", "torchvision",
                "resnet50", "torchvision ResNet-50, ImageNet-1k, IMAGENET1K_V1 (acc@1 76.1)", 224, 256,
                size_mb=97.8),
    WeightsSpec("resnet18.imagenet1k_v1", "resnet18-f37072fd.pth", _TV + "resnet18-f37072fd.pth", "torchvision",
                "resnet18", "torchvision ResNet-18, ImageNet-1k, IMAGENET1K_V1 (acc@1 69.8)", 224, 256,
                size_mb=44.7, aliases=("resnet18", "resnet18.imagenet", "resnet18.default")),
    WeightsSpec("inception_resnet_v1.vggface2", "20180402-114759-vggface2.pt", _FN + "20180402-114759-vggface2.pt",
                "facenet", "inception_resnet_v1",
                "facenet-pytorch InceptionResnetV1 trained on VGGFace2 (LFW acc 0.9965)", 160, None,
                FACENET_MEAN, FACENET_STD, size_mb=107,
                mirrors=("https://storage.yandexcloud.net/cctv-models/20180402-114759-vggface2.pt",),
                aliases=("vggface2", "facenet.vggface2")),
    WeightsSpec("inception_resnet_v1.casia-webface", "20180408-102900-casia-webface.pt",
                _FN + "20180408-102900-casia-webface.pt", "facenet", "inception_resnet_v1",
                "facenet-pytorch InceptionResnetV1 trained on CASIA-WebFace (LFW acc 0.9905)", 160, None,
                FACENET_MEAN, FACENET_STD, size_mb=111,
                mirrors=("https://storage.yandexcloud.net/cctv-models/20180408-102900-casia-webface.pt",),
                aliases=("casia-webface", "facenet.casia-webface")),
):
    register_weights(_spec)


def get_spec(name: str | WeightsSpec) -> WeightsSpec:
    """Return the :class:`WeightsSpec` registered under ``name`` (or an alias); a spec is returned as is."""
    if isinstance(name, WeightsSpec):
        return name
    key = ALIASES.get(name, name)
    if key not in REGISTRY:
        known = sorted(set(REGISTRY) | set(ALIASES))
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(known)}")
    return REGISTRY[key]


def torch_home() -> Path:
    """Return ``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (as torch and facenet do)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home))


def cache_dir(name: str | WeightsSpec) -> Path:
    """Return the folder in which the weights' own library caches (and looks for) the file."""
    spec = get_spec(name)
    if spec.cache == "torchvision":
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints"
    if spec.cache == "facenet":
        return torch_home() / "checkpoints"
    if spec.cache == "nnprak":
        return user_cache_dir() / "weights"
    raise ValueError(f"unknown cache kind {spec.cache!r} for {spec.name}")


def is_offline() -> bool:
    """Return True when ``$NNPRAK_OFFLINE`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


def candidate_paths(name: str | WeightsSpec, path: str | os.PathLike | None = None) -> list[Path]:
    """Return the files :func:`resolve_weights` checks on disk, in order (explicit, $NNPRAK_WEIGHTS_DIR, cache)."""
    spec = get_spec(name)
    cands = []
    if path is not None:
        p = Path(path).expanduser()
        cands.append(p / spec.filename if p.is_dir() else p)
    if os.environ.get(WEIGHTS_DIR_ENV):
        cands.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser() / spec.filename)
    cands.append(cache_dir(spec) / spec.filename)
    return cands


def how_to_get(name: str | WeightsSpec) -> str:
    """Return the manual-download instructions for a weights file (file, URL, hash, target folder)."""
    spec = get_spec(name)
    folder = cache_dir(spec)
    h = spec.hash_prefix
    lines = [
        f"  file:     {spec.filename}" + (f" (~{spec.size_mb:g} MB)" if spec.size_mb else ""),
        f"  url:      {spec.url}",
    ]
    lines += [f"  mirror:   {m}" for m in spec.mirrors]
    lines += [
        f"  sha256:   {h + ('' if spec.sha256 else '…  (prefix, from the file name)') if h else 'not published'}",
        f"  put it in {display_path(folder)}/  (or pass path=..., or set {WEIGHTS_DIR_ENV} to its folder)",
    ]
    return "\n".join(lines)


def _unavailable(spec: WeightsSpec, searched, reason: str) -> WeightsUnavailable:
    msg = (f"Pretrained weights {spec.name!r} ({spec.description}) are not available: {reason}.\n"
           f"Searched: {', '.join(display_path(s) for s in searched) or '-'}.\n"
           f"To use them offline, download the file on a machine with internet and copy it:\n{how_to_get(spec)}")
    return WeightsUnavailable(msg, spec=spec, searched=searched, reason=reason)


def resolve_weights(name: str | WeightsSpec, path: str | os.PathLike | None = None, download: bool = True,
                    timeout: float | None = None) -> Path:
    """Return the path of the weights file: explicit path → $NNPRAK_WEIGHTS_DIR → library cache → download.

    Raises:
        WeightsUnavailable: nothing on disk and the download is off (``download=False``, ``NNPRAK_OFFLINE=1``)
            or failed; the message names the file, its URL, its expected hash and the folder to put it in.
    """
    spec = get_spec(name)
    searched = candidate_paths(spec, path)
    if path is not None:
        if searched[0].is_file():
            return searched[0]
        # an explicit path that is wrong is a user error: say so instead of downloading something else
        raise _unavailable(spec, searched[:1], f"the explicit path {path} is not a file")
    for cand in searched:
        if cand.is_file():
            return cand
    if not download:
        raise _unavailable(spec, searched, "not found on disk and download=False")
    if is_offline():
        raise _unavailable(spec, searched, f"not found on disk and {OFFLINE_ENV}=1 (no download attempted)")
    target = cache_dir(spec) / spec.filename
    mirror = os.environ.get(MIRROR_ENV)
    urls = [mirror.rstrip("/") + "/" + spec.filename] if mirror else [spec.url, *spec.mirrors]
    errors = []
    for url in urls:
        try:
            return download_file(url, target, hash_prefix=spec.hash_prefix, timeout=timeout)
        except (urllib.error.HTTPError, ValueError) as err:  # this server answered: another mirror may work
            errors.append(f"{url}: {err}")
        except OSError as err:  # no network (refused, timeout, DNS): don't wait for every mirror in turn
            errors.append(f"{url}: {getattr(err, 'reason', None) or err}")
            break
    raise _unavailable(spec, searched, "not found on disk and the download failed (" + "; ".join(errors) + ")")


def _open(url: str, timeout: float):
    """Open ``url`` with every step before the body (DNS, connect, TLS, redirects, headers) within ``timeout``."""
    box: dict = {}

    def worker():
        try:
            box["resp"] = urllib.request.urlopen(url, timeout=timeout)
        except BaseException as err:  # noqa: BLE001 – handed to the caller's thread
            box["err"] = err

    t = threading.Thread(target=worker, name="nnprak-weights-connect", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():  # e.g. getaddrinfo() hanging on a network without DNS: leave the daemon thread behind
        raise TimeoutError(f"no answer from {url} within {timeout:g} s (offline? set {OFFLINE_ENV}=1)")
    if "err" in box:
        raise box["err"]
    return box["resp"]


def download_file(url: str, target: str | os.PathLike, hash_prefix: str | None = None,
                  timeout: float | None = None) -> Path:
    """Download ``url`` to ``target`` atomically (temp file + rename) and return ``target``.

    The SHA-256 of the bytes must start with ``hash_prefix`` when one is given, else nothing is written.
    Raises ``OSError``/``URLError`` (connection, timeout) or ``ValueError`` (hash mismatch).
    """
    target = Path(target)
    t = _timeout(timeout)
    sha = hashlib.sha256()
    with _open(url, t) as resp, atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            while True:
                block = resp.read(1 << 20)  # each read is bounded by the socket timeout
                if not block:
                    break
                sha.update(block)
                out.write(block)
        digest = sha.hexdigest()
        if hash_prefix and not digest.startswith(hash_prefix):
            raise ValueError(f"SHA-256 mismatch for {url}: got {digest[:len(hash_prefix)]}…, "
                             f"expected {hash_prefix}… (corrupted or wrong file; nothing was kept)")
    return target


def verify_file(name: str | WeightsSpec, path: str | os.PathLike) -> bool:
    """Return True when the file's SHA-256 matches the spec's (full or prefix); True when no hash is known."""
    h = get_spec(name).hash_prefix
    if not h:
        return True
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest().startswith(h)


def load_state_dict(name: str | WeightsSpec, path: str | os.PathLike | None = None, download: bool = True,
                    timeout: float | None = None, verify: bool = False) -> dict:
    """Return the weights' state_dict (on CPU, loaded with ``weights_only=True``) found by :func:`resolve_weights`.

    ``verify=True`` also checks the SHA-256 of a file found on disk (downloads are always checked).
    """
    import torch

    spec = get_spec(name)
    file = resolve_weights(spec, path=path, download=download, timeout=timeout)
    if verify and not verify_file(spec, file):
        raise _unavailable(spec, [file], f"{file} does not match the expected SHA-256 (corrupted or wrong file)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated copy, HTML error page saved as .pth, ...
        raise _unavailable(spec, [file], f"{file} could not be read as a state_dict ({type(err).__name__}: "
                                         f"{err}); delete it and fetch it again") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a training checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise _unavailable(spec, [file], f"{file} holds a {type(state).__name__}, not a state_dict")
    return state


def weights_info(name: str | WeightsSpec) -> dict:
    """Return a JSON-ready dict: the spec, its cache folder, and the file found on disk now (or None)."""
    spec = get_spec(name)
    found = next((p for p in candidate_paths(spec) if p.is_file()), None)
    info = asdict(spec)
    info.update(mean=list(spec.mean), std=list(spec.std), mirrors=list(spec.mirrors), aliases=list(spec.aliases),
                hash_prefix=spec.hash_prefix, cache_dir=str(cache_dir(spec)),
                path=str(found) if found else None, available=found is not None, offline=is_offline())
    return info


def available_weights() -> list[str]:
    """Return the names of all registered weights."""
    return sorted(REGISTRY)


__all__ = ["WeightsUnavailable", "WeightsSpec", "REGISTRY", "register_weights", "get_spec", "cache_dir",
           "candidate_paths", "how_to_get", "resolve_weights", "download_file", "verify_file", "load_state_dict",
           "weights_info", "available_weights", "is_offline", "torch_home", "IMAGENET_MEAN", "IMAGENET_STD",
           "FACENET_MEAN", "FACENET_STD", "DEFAULT_TIMEOUT"]
