"""Stage 03: a small residual CNN written from scratch (and its plain twin for the ablation).

The network follows the ResNet recipe of He et al. (2016) scaled down for 2-core laptops::

    stem   conv3x3(3 -> w0, stride 2) + BN + ReLU               64 px -> 32 px   (112 px -> 56 px)
    layer1 blocks[0] x BasicBlock(w0)                          32 px            (56 px)
    layer2 blocks[1] x BasicBlock(w1), first one stride 2      16 px            (28 px)
    layer3 blocks[2] x BasicBlock(w2), first one stride 2       8 px            (14 px)
    layer4 blocks[3] x BasicBlock(w3), first one stride 2       4 px            (7 px)
    global average pool -> features (w3 numbers) -> dropout -> linear or cosine head -> num_classes logits

With the widths (32, 64, 128, 256) and 62 people it has 1.24 M parameters with one block per stage (the class
default and ``blocks`` in ``nnprak.config``) and 2.81 M with two (the deeper pair of notebook 03's ablation); a 64 px
training step costs about 5-8 ms of one CPU core per image with one block per stage, about 1.7 times that with two.

:class:`BasicBlock` has the structure and parameter names of ``torchvision.models.resnet.BasicBlock``
(``conv1, bn1, conv2, bn2, downsample.0, downsample.1``), so weights copy between the two with
``load_state_dict``. ``residual=False`` builds the same stack of convolutions without any shortcut (no
identity, no 1x1 projection): the "plain" network of equal depth used in the ablation. ``preact=True`` builds the
stages from :class:`PreActBlock` (batch norm and ReLU before each convolution, nothing after the sum; He et al. 2016b);
its plain twin is the same network as the plain twin of :class:`BasicBlock`.

Usage::

    from nnprak.models.scratch import ScratchResNet, summary_table
    model = ScratchResNet(num_classes=62, widths=(32, 64, 128, 256), blocks=(2, 2, 2, 2), in_size=64)
    summary_table(model, (3, 64, 64))        # one row per block: output shape and parameters
    emb = model.features(x)                   # (N, 256) embedding for t-SNE / nearest neighbours
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth


SHORTCUTS = ("conv", "avgpool")
"""Projection shortcuts of a block that changes the shape: strided 1x1 conv (torchvision) or avg-pool + 1x1 (ResNet-D)."""


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """Return a 3x3 convolution with padding 1 and no bias (a batch norm follows)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """Return a 1x1 convolution without bias (the projection shortcut)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def _projection(in_ch: int, out_ch: int, stride: int, shortcut: str, norm: bool) -> nn.Sequential:
    """Return the projection shortcut of a block that changes the shape (see :class:`BasicBlock`).

    ``norm=False`` leaves out the batch norm after the 1x1 convolution (the pre-activation block, whose next
    block normalises the sum).
    """
    if shortcut == "avgpool" and stride != 1:   # ResNet-D: average 2x2 blocks, then project (no pixel dropped)
        layers = [nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False), conv1x1(in_ch, out_ch)]
    else:
        layers = [conv1x1(in_ch, out_ch, stride)]
    return nn.Sequential(*layers, *([nn.BatchNorm2d(out_ch)] if norm else []))


def _add_shortcut(block: nn.Module, in_ch: int, out_ch: int, stride: int, residual: bool, shortcut: str,
                  drop_path: float, norm: bool) -> None:
    """Give a block (:class:`BasicBlock`, :class:`PreActBlock`) its shortcut parts and settings; return nothing.

    Sets ``downsample`` (None, or the projection of :func:`_projection` when the block changes the shape),
    ``drop_path`` (``StochasticDepth`` or an identity) and ``stride``, ``residual``, ``shortcut``.
    """
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; use one of {', '.join(SHORTCUTS)}")
    block.downsample = None
    if residual and (stride != 1 or in_ch != out_ch):
        block.downsample = _projection(in_ch, out_ch, stride, shortcut, norm=norm)
    block.stride, block.residual, block.shortcut = stride, residual, shortcut
    block.drop_path = StochasticDepth(float(drop_path), "row") if residual and drop_path > 0 else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 conv + batch-norm layers with a shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity when shape is kept, else a projection (``downsample``) that matches stride
    and width: ``shortcut="conv"`` a strided 1x1 convolution + batch norm (torchvision's, which reads only
    one pixel in four), ``shortcut="avgpool"`` a 2x2 average pool, then a 1x1 convolution + batch norm
    ("ResNet-D", He et al. 2019: every pixel reaches the next stage). With ``residual=False`` there is no shortcut at all:
    ``relu(bn2(conv2(relu(bn1(conv1(x))))))``.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the first convolution (2 halves height and width).
        residual: add the shortcut (True) or build the plain block (False).
        shortcut: ``"conv"`` or ``"avgpool"``, the kind of projection of a block that changes the shape.
        drop_path: stochastic depth (``torchvision.ops.StochasticDepth``, per image): during training the residual
            branch of each image is dropped with this probability, so the block passes on only its shortcut (the
            plain block has no shortcut to fall back on and ignores it).
    """

    expansion = 1
    branch_end = "bn2"
    """The residual branch's last layer (``zero_init_residual`` starts its weight at zero)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, residual: bool = True, shortcut: str = "conv",
                 drop_path: float = 0.0):
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        _add_shortcut(self, in_ch, out_ch, stride, residual, shortcut, drop_path, norm=True)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` (without the shortcut for the plain twin)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = self.drop_path(out)
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class PreActBlock(nn.Module):
    """The full pre-activation block of He et al. (2016b): ``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)``.

    Batch norm and ReLU come before each convolution, so nothing follows the addition: the shortcut of one block
    feeds the next block's sum unchanged (the "identity mapping" of the paper; :class:`BasicBlock` puts a ReLU
    after the sum). A block that changes the shape projects the pre-activated input ``relu(bn1(x))`` (avg-pool +
    1x1 or a strided 1x1 convolution, no batch norm). ``residual=False`` drops the shortcut: a chain of
    BN-ReLU-conv layers, which is the plain network of :class:`BasicBlock` with the layers grouped one step
    later (:class:`ScratchResNet` with ``preact=True`` builds the same plain twin as without it).

    Args: as :class:`BasicBlock`.
    """

    expansion = 1
    branch_end = "conv2"
    """The residual branch's last layer (``zero_init_residual`` starts its weight at zero)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, residual: bool = True, shortcut: str = "conv",
                 drop_path: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.relu = nn.ReLU(inplace=True)
        _add_shortcut(self, in_ch, out_ch, stride, residual, shortcut, drop_path, norm=False)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)``, nothing after the sum (plain twin: no sum)."""
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        if self.residual:
            out = self.drop_path(out) + (x if self.downsample is None else self.downsample(pre))
        return out


class CosineClassifier(nn.Module):
    """Logits ``scale * cos(feature, class weight)``: a linear layer on unit-length features and weights (NormFace).

    Wang et al. (2017): a softmax over cosines makes the classes separate by angle, so the penultimate features of a
    classifier compare well by cosine distance on people it never saw (face verification). ``scale`` sets how
    peaked the softmax can get (cosines lie in [-1, 1]).
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 16.0):
        super().__init__()
        self.in_features, self.out_features, self.scale = int(in_features), int(out_features), float(scale)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``scale * cos`` logits, shape (N, out_features)."""
        return self.scale * nn.functional.linear(nn.functional.normalize(x, dim=1),
                                                 nn.functional.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        """Return the sizes and the scale, as ``print(model)`` shows them."""
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale:g}"


HEADS = ("linear", "cosine")
"""Classifier heads of :class:`ScratchResNet`: a plain linear layer or :class:`CosineClassifier`."""


class ScratchResNet(nn.Module):
    """A ResNet-style classifier with configurable widths and depth, trained from random weights.

    Args:
        num_classes: number of people (logits).
        widths: channels of the four (or any number of) stages; each stage after the first halves the size.
        blocks: :class:`BasicBlock` s per stage (same length as ``widths``).
        in_size: input height/width the network is meant for (used by :meth:`summary` and ``repr``;
            the network itself accepts any size thanks to global average pooling).
        residual: False builds the plain CNN of equal depth (no shortcuts) for the ablation.
        stem_stride: stride of the stem convolution (2: halve the input before the first stage).
        dropout: dropout probability before the final linear layer.
        zero_init_residual: start each residual block's last batch-norm scale at 0, so every block begins
            as the identity (Goyal et al. 2017); ignored for the plain network, where it would cut the signal.
            Off by default: with AdamW a zero scale grows by at most about the learning rate per step, and the
            one-cycle warm-up of a 30-epoch schedule sums to 0.005 after one epoch, 0.05 after three and 0.44
            after eight, so every 3x3 convolution of the network stays nearly silent (and nearly untrained:
            its gradients are scaled by that same number) for the first quarter of training. Measured on LFW-62
            (64 px, 30 epochs, MTCNN crops, ``bench/bench_scratch_seeds.py``): test accuracy 88.2 % with it
            (seed 42), 92.2 % and 92.9 % without it (seeds 42, 43), plain twin 92.7 % and 93.8 %; without it
            and with ``shortcut="avgpool"`` (the default of ``cfg.scratch``) 93.8 % (seed 42).
        shortcut: projection of the blocks that halve the size, ``"conv"`` (strided 1x1) or ``"avgpool"``
            (ResNet-D); see :class:`BasicBlock`. The plain network has none either way.
        head: the classifier layer, ``"linear"`` or ``"cosine"`` (:class:`CosineClassifier`).
        head_scale: the scale of the cosine head (ignored by the linear one).
        drop_path: stochastic depth (Huang et al. 2016), only for the residual network: the k-th of the network's
            n blocks drops its residual branch with probability ``drop_path * k / n`` during training (see
            :class:`BasicBlock`). Off (0) by default: on LFW-62 with one block per stage (``preact=False``), 0.1
            gave 94.5 % +- 0.5 % test accuracy and 88.8 % +- 0.9 % unseen-people verification over seeds 42/43/44
            (``bench/bench_scratch_seeds.py --set drop_path=0.1``) against 94.7 % +- 1.0 % and 88.4 % +- 0.5 %
            without it, within the variation between seeds.
        preact: build the residual stages from :class:`PreActBlock` (He et al. 2016b: batch norm and ReLU before
            each convolution, nothing after the sum); the stem is then the convolution alone and one batch norm +
            ReLU follows the last stage. Without shortcuts (``residual=False``) this is the same network, layer for
            layer and with the same random initial weights, as ``preact=False``. Off in this class, on in
            ``cfg.scratch`` for sets of 15 or more photos a person: with one block per stage it gave 95.0 % +- 0.6 %
            on LFW-62 (seeds 42-49; the original blocks 94.5 % +- 0.6 %, the plain twin 94.6 % +- 0.8 %), but
            86.25 % against 91.25 % on the 40 x 10 grey set of ``bench/bench_small_data.py`` (face by face 5
            against 17, p = 0.017), whose sets keep the original blocks (``config.SMALL_DATA_PREACT``); see
            ``preact`` in ``nnprak.config``.

    With the defaults (widths 32-256, one block per stage) the network has about 1.2 M parameters.
    """

    def __init__(self, num_classes: int, widths: Sequence[int] = (32, 64, 128, 256),
                 blocks: Sequence[int] = (1, 1, 1, 1), in_size: int = 64, residual: bool = True,
                 stem_stride: int = 2, dropout: float = 0.2, zero_init_residual: bool = False,
                 shortcut: str = "conv", head: str = "linear", head_scale: float = 16.0, drop_path: float = 0.0,
                 preact: bool = False):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; use one of {', '.join(HEADS)}")
        widths, blocks = tuple(int(w) for w in widths), tuple(int(b) for b in blocks)
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {widths} and blocks {blocks} need the same (non-zero) length")
        if min(blocks) < 1:
            raise ValueError(f"every stage needs at least one block, got blocks={blocks}")
        self.num_classes, self.widths, self.blocks = num_classes, widths, blocks
        self.in_size, self.residual, self.stem_stride = in_size, residual, stem_stride
        self.shortcut, self.zero_init_residual = shortcut, bool(zero_init_residual and residual)
        self.preact = bool(preact)
        block = PreActBlock if self.preact else BasicBlock
        stem = [nn.Conv2d(3, widths[0], kernel_size=3, stride=stem_stride, padding=1, bias=False)]
        if not self.preact:   # the pre-activation blocks normalise their input themselves
            stem += [nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        in_ch, k, total = widths[0], 0, sum(blocks)
        self.drop_path = float(drop_path) if residual else 0.0
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                k += 1   # Huang et al. (2016): block k of `total` drops its branch at k / total * drop_path
                stage.append(block(in_ch, w, stride, residual=residual, shortcut=shortcut,
                                   drop_path=self.drop_path * k / total))
                in_ch = w
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        # pre-activation: the last sum still needs its batch norm + ReLU before pooling
        self.final = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True)) if self.preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes) if head == "linear" else CosineClassifier(in_ch, num_classes, head_scale)
        self.head = head
        self.feature_dim = in_ch

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if residual and zero_init_residual:   # the last layer of each residual branch starts at zero
            for stage in self.stages:
                for b in stage:
                    nn.init.zeros_(getattr(b, b.branch_end).weight)

    @property
    def stages(self) -> list[nn.Sequential]:
        """Return the residual stages ``layer1 ... layerN``."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.widths))]

    def features(self, x: Tensor) -> Tensor:
        """Return the penultimate-layer embedding: globally pooled last-stage activations, shape (N, widths[-1])."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return torch.flatten(self.pool(self.final(x)), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Return class logits, shape (N, num_classes)."""
        return self.fc(self.dropout(self.features(x)))

    def summary(self) -> pd.DataFrame:
        """Return :func:`summary_table` for a ``(3, in_size, in_size)`` input."""
        return summary_table(self, (3, self.in_size, self.in_size))

    def extra_repr(self) -> str:
        """Return the design settings (widths, blocks, input size, shortcuts, ...), as ``print(model)`` shows them."""
        return (f"widths={self.widths}, blocks={self.blocks}, in_size={self.in_size}, residual={self.residual}, "
                f"shortcut={self.shortcut if self.residual else None}, zero_init_residual={self.zero_init_residual}, "
                f"head={self.head}, preact={self.preact}, "
                f"parameters={count_parameters(self):,}")


MODEL_KEYS = ("widths", "blocks", "image_size", "stem_stride", "dropout", "zero_init_residual", "shortcut", "head",
              "head_scale", "drop_path", "preact")
"""Keys of a settings dict (``cfg.scratch``) that :func:`from_settings` reads."""


def from_settings(num_classes: int, settings: dict, **overrides) -> ScratchResNet:
    """Return a :class:`ScratchResNet` built from a settings dict (``cfg.scratch``); keyword arguments override it.

    Keys read (missing ones keep the class defaults): ``widths``, ``blocks``, ``image_size`` (as ``in_size``),
    ``stem_stride``, ``dropout``, ``zero_init_residual``, ``shortcut``, ``head``, ``head_scale``, ``preact``,
    ``drop_path`` (not in ``cfg.scratch``: 0 = off); ``residual=False`` gives the plain twin.
    """
    kw = {k: settings[k] for k in MODEL_KEYS if k in settings and k != "image_size"}
    if "image_size" in settings:
        kw["in_size"] = int(settings["image_size"])
    kw.update(overrides)
    return ScratchResNet(num_classes, **kw)


def keep_classes(model: ScratchResNet, n: int) -> ScratchResNet:
    """Return ``model`` with its classifier cut to the first ``n`` classes (in place).

    Notebook 03 trains the network on the set's people and the background people (:mod:`nnprak.background`),
    whose labels come last; cutting their outputs afterwards leaves a network that predicts the set's people only
    (the softmax then spreads over those). The features are unchanged.
    """
    n = int(n)
    fc = model.fc
    if n >= fc.out_features:
        return model
    with torch.no_grad():
        if isinstance(fc, CosineClassifier):
            new = CosineClassifier(fc.in_features, n, fc.scale)
            new.weight.copy_(fc.weight[:n])
        else:
            new = nn.Linear(fc.in_features, n, bias=fc.bias is not None)
            new.weight.copy_(fc.weight[:n])
            if fc.bias is not None:
                new.bias.copy_(fc.bias[:n])
    model.fc = new.to(fc.weight.device)
    model.num_classes = n
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameters of ``model`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summary_table(model: nn.Module, input_size: Sequence[int] = (3, 64, 64), depth: int | None = 2,
                  device: str | torch.device | None = None) -> pd.DataFrame:
    """Return one row per layer: ``layer``, ``type``, ``output shape`` and ``parameters``.

    A forward pass on one zero image of ``input_size`` (C, H, W) with forward hooks records each layer's
    output shape. ``depth`` picks the level of detail: 1 = top-level parts (stem, stages, pool, fc),
    2 = one row per block (default), None = every leaf layer (convolutions, batch norms, ReLUs).
    A layer shallower than ``depth`` without children is listed as it is. The rows partition the model,
    so ``table["parameters"].sum()`` equals the model's parameter count (also in ``table.attrs["total"]``).
    Rows come in the order the forward pass runs them; a listed layer that never runs shows ``-``.
    """
    chosen: dict[str, nn.Module] = {}
    own_rows: set[str] = set()  # containers listed for the parameters they hold directly

    def visit(prefix: str, module: nn.Module, level: int) -> None:
        children = list(module.named_children())
        if prefix and (not children or (depth is not None and level >= depth)):
            chosen[prefix] = module
            return
        for name, child in children:
            visit(f"{prefix}.{name}" if prefix else name, child, level + 1)
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if prefix and own:  # parameters held directly by a container: give it a row of its own
            chosen[prefix] = module
            own_rows.add(prefix)

    visit("", model, 0)
    shapes: dict[str, str] = {}
    order: list[str] = []

    def hook(name):
        def record(_module, _inputs, output):
            if name not in shapes:
                out = output[0] if isinstance(output, (tuple, list)) else output
                shapes[name] = "x".join(str(s) for s in out.shape[1:]) if torch.is_tensor(out) else "-"
                order.append(name)
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in chosen.items()]
    was_training = model.training
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    names = order + [n for n in chosen if n not in shapes]
    rows = []
    for name in names:
        m = chosen[name]
        params = sum(p.numel() for p in m.parameters(recurse=name not in own_rows))
        rows.append({"layer": name, "type": type(m).__name__, "output shape": shapes.get(name, "-"),
                     "parameters": int(params)})
    table = pd.DataFrame(rows, columns=["layer", "type", "output shape", "parameters"])
    table.attrs["total"] = count_parameters(model)
    table.attrs["input"] = "x".join(str(s) for s in input_size)
    return table
