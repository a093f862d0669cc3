"""Tests of the from-scratch residual CNN (nnprak.models.scratch)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops import StochasticDepth

from nnprak import config
from nnprak.models.scratch import (BasicBlock, PreActBlock, ScratchResNet, count_parameters, from_settings,
                                  summary_table)


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every weight and batch-norm statistic random values (so copies cannot agree by accident)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.5)
    return module


def _tv_block(in_ch: int, out_ch: int, stride: int) -> tv_resnet.BasicBlock:
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(tv_resnet.conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
    return tv_resnet.BasicBlock(in_ch, out_ch, stride, downsample)


def test_identity_block_keeps_shape():
    block = BasicBlock(16, 16, stride=1)
    assert block.downsample is None
    assert block(torch.randn(2, 16, 20, 20)).shape == (2, 16, 20, 20)


@pytest.mark.parametrize("in_ch,out_ch,stride,out_side", [(16, 32, 2, 10), (16, 32, 1, 20), (16, 16, 2, 10)])
def test_projection_block_shape_and_stride(in_ch, out_ch, stride, out_side):
    block = BasicBlock(in_ch, out_ch, stride=stride)
    assert block.conv1.stride == (stride, stride) and block.conv2.stride == (1, 1)
    proj = block.downsample[0]
    assert isinstance(proj, nn.Conv2d) and proj.kernel_size == (1, 1) and proj.stride == (stride, stride)
    assert isinstance(block.downsample[1], nn.BatchNorm2d)
    assert block(torch.randn(2, in_ch, 20, 20)).shape == (2, out_ch, out_side, out_side)


@pytest.mark.parametrize("in_ch,out_ch,stride", [(16, 16, 1), (16, 32, 2), (8, 24, 1)])
def test_block_equals_torchvision_basic_block(in_ch, out_ch, stride):
    ours = _randomise(BasicBlock(in_ch, out_ch, stride), seed=in_ch + out_ch + stride)
    theirs = _tv_block(in_ch, out_ch, stride)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())          # strict: same names and shapes
    ours.eval(), theirs.eval()
    x = torch.randn(3, in_ch, 12, 12)
    with torch.no_grad():
        out, ref = ours(x), theirs(x)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    # and back: torchvision's weights into ours
    other = _randomise(_tv_block(in_ch, out_ch, stride), seed=99).eval()
    ours.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.allclose(ours(x), other(x), atol=1e-5, rtol=1e-5)


def test_plain_block_has_no_shortcut():
    res = _randomise(BasicBlock(16, 16, 1), seed=3).eval()
    plain = BasicBlock(16, 16, 1, residual=False).eval()
    plain.load_state_dict(res.state_dict())
    x = torch.randn(2, 16, 10, 10)
    with torch.no_grad():
        manual = torch.relu(plain.bn2(plain.conv2(torch.relu(plain.bn1(plain.conv1(x))))))
        assert torch.allclose(plain(x), manual, atol=1e-6)
        assert not torch.allclose(plain(x), res(x), atol=1e-3)
        assert torch.allclose(res(x), torch.relu(res.bn2(res.conv2(torch.relu(res.bn1(res.conv1(x))))) + x),
                              atol=1e-5)


def _explicit_plain_net(num_classes, widths, blocks):
    """The plain CNN written out layer by layer: conv-BN-ReLU pairs, pooling and a linear layer."""
    layers = [nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    in_ch = widths[0]
    for i, (w, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            layers += [nn.Conv2d(in_ch, w, 3, stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                       nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            in_ch = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)]
    return nn.Sequential(*layers)


def test_plain_network_has_no_shortcuts_and_plain_parameter_count():
    widths, blocks = (8, 16, 32, 64), (2, 1, 2, 1)
    res = ScratchResNet(7, widths, blocks, in_size=48)
    plain = ScratchResNet(7, widths, blocks, in_size=48, residual=False)
    assert not any(isinstance(m, BasicBlock) and m.downsample is not None for m in plain.modules())
    assert count_parameters(plain) == count_parameters(_explicit_plain_net(7, widths, blocks))
    shortcut = sum(p.numel() for m in res.modules() if isinstance(m, BasicBlock) and m.downsample is not None
                   for p in m.downsample.parameters())
    assert shortcut > 0 and count_parameters(res) == count_parameters(plain) + shortcut
    # same weights (the plain net simply lacks the projections): different outputs
    _randomise(res, seed=5).eval()
    plain.load_state_dict({k: v for k, v in res.state_dict().items() if "downsample" not in k})
    plain.eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert not torch.allclose(res(x), plain(x), atol=1e-3)


def test_forward_features_and_default_size():
    model = ScratchResNet(5, widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1), in_size=48).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
        assert logits.shape == (2, 5) and feats.shape == (2, 64)
        assert torch.allclose(model.fc(feats), logits, atol=1e-6)
    assert 0.5e6 <= count_parameters(ScratchResNet(62)) <= 3e6
    with pytest.raises(ValueError):
        ScratchResNet(5, widths=(8, 16), blocks=(1,))


def test_zero_init_makes_residual_blocks_start_as_identity():
    model = ScratchResNet(5, widths=(8, 16), blocks=(2, 1), in_size=32, zero_init_residual=True)
    block = model.layer1[1]  # identity shortcut: relu(0 + x) == x for the non-negative input it receives
    x = torch.rand(2, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    assert all(float(m.bn2.weight.detach().abs().sum()) > 0 for m in ScratchResNet(5, residual=False).modules()
               if isinstance(m, BasicBlock))


@pytest.mark.parametrize("depth", [1, 2, None])
def test_summary_table_parameter_total(depth):
    model = ScratchResNet(62, in_size=64)
    table = summary_table(model, (3, 64, 64), depth=depth)
    assert list(table.columns) == ["layer", "type", "output shape", "parameters"]
    assert table["parameters"].sum() == sum(p.numel() for p in model.parameters()) == table.attrs["total"]
    assert table["layer"].is_unique
    assert table["output shape"].iloc[-1] == "62"
    if depth == 2:
        shapes = dict(zip(table["layer"], table["output shape"]))
        assert shapes["layer1.0"] == "32x32x32" and shapes["layer4.0"] == "256x4x4"
    assert model.training  # the summary's forward pass leaves the mode alone


def test_avgpool_shortcut_sees_every_pixel_and_costs_no_parameters():
    conv = BasicBlock(8, 16, stride=2, shortcut="conv")
    avg = BasicBlock(8, 16, stride=2, shortcut="avgpool")
    assert isinstance(avg.downsample[0], nn.AvgPool2d) and count_parameters(avg) == count_parameters(conv)
    _randomise(avg, seed=3).eval()
    x = torch.randn(2, 8, 7, 7, requires_grad=True)                 # odd size: both shortcuts give 4 x 4
    ref = avg.downsample[2](avg.downsample[1](nn.functional.avg_pool2d(x, 2, 2, ceil_mode=True,
                                                                        count_include_pad=False)))
    assert torch.allclose(avg.downsample(x), ref, atol=1e-6)
    assert avg(x).shape == conv.eval()(x).shape == (2, 16, 4, 4)
    for block, seen in ((avg, 49), (conv, 16)):                      # input pixels that reach the shortcut
        x.grad = None
        block.downsample(x).sum().backward()
        assert int((x.grad[0, 0] != 0).sum()) == seen
    with pytest.raises(ValueError, match="shortcut"):
        BasicBlock(8, 16, stride=2, shortcut="maxpool")
    identity = BasicBlock(8, 8, stride=1, shortcut="avgpool")     # no shape change: still the identity
    assert identity.downsample is None


def test_from_settings_builds_the_configured_twins():
    s = config.load("default").scratch
    res, plain = from_settings(62, s), from_settings(62, s, residual=False)
    assert (res.widths, res.blocks, res.in_size) == (tuple(s["widths"]), tuple(s["blocks"]), s["image_size"])
    assert res.shortcut == s["shortcut"] and res.zero_init_residual == s["zero_init_residual"]
    preact = bool(s.get("preact", False))
    assert res.preact == preact and all(isinstance(b, PreActBlock if preact else BasicBlock)
                                        for stage in res.stages for b in stage)
    assert not plain.residual and not plain.zero_init_residual
    assert count_parameters(res) > count_parameters(plain)
    deeper = from_settings(62, s, blocks=tuple(b + 1 for b in s["blocks"]))
    assert deeper.blocks == tuple(b + 1 for b in s["blocks"]) and count_parameters(deeper) > count_parameters(res)


def test_network_features_in_order_and_mirror_averaged(lfw_dir):
    """evaluate.network_features keeps the dataset order; flip=True is the mean of a face's and its mirror's features."""
    from PIL import Image

    from nnprak import evaluate, train

    torch.manual_seed(0)
    model = ScratchResNet(num_classes=3, widths=(8, 16), blocks=(1, 1), in_size=32).eval()
    files = sorted((lfw_dir / "lfw-deepfunneled" / "Colin_Powell").glob("*.jpg"))[:5]
    tf = train.eval_transforms(32)
    xs = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    dataset = torch.utils.data.TensorDataset(xs, torch.arange(len(files)))
    plain, labels = evaluate.network_features(model, dataset, batch_size=2)
    both, _ = evaluate.network_features(model, dataset, batch_size=2, flip=True)
    with torch.no_grad():
        want = model.features(xs).numpy()
        mirror = model.features(torch.flip(xs, dims=[-1])).numpy()
    assert labels.tolist() == list(range(len(files))) and plain.shape == (len(files), 16)
    assert torch.allclose(torch.from_numpy(plain), torch.from_numpy(want), atol=1e-5)
    assert torch.allclose(torch.from_numpy(both), torch.from_numpy((want + mirror) / 2), atol=1e-5)
    assert not torch.allclose(torch.from_numpy(both), torch.from_numpy(plain), atol=1e-4)   # real photos are not symmetric


def test_cosine_head_gives_scaled_cosines_and_is_the_configured_head():
    """head="cosine": logits are scale x cosine of the feature and each class weight, bounded by the scale."""
    from nnprak.models.scratch import CosineClassifier

    torch.manual_seed(0)
    head = CosineClassifier(16, 5, scale=10.0)
    x = torch.randn(4, 16) * 7                                    # the feature length does not matter
    want = 10.0 * torch.nn.functional.cosine_similarity(x[:, None, :], head.weight[None, :, :], dim=2)
    logits = head(x).detach()
    assert logits.shape == (4, 5) and torch.allclose(logits, want, atol=1e-5)
    assert float(logits.abs().max()) <= 10.0 + 1e-5
    assert torch.allclose(head(3 * x).detach(), logits, atol=1e-5)         # scale-free in the features
    s = config.load("default").scratch
    model = from_settings(62, s)
    assert model.head == s["head"] and isinstance(model.fc, CosineClassifier if s["head"] == "cosine" else nn.Linear)
    assert isinstance(from_settings(62, s, head="linear").fc, nn.Linear)
    with pytest.raises(ValueError, match="unknown head"):
        ScratchResNet(3, head="arcface")


def test_network_verification_leaves_out_the_training_people(lfw_dir):
    """evaluate.network_verification scores the profile's pairs without the trained people, every face embedded."""
    from nnprak import config, data, evaluate

    cfg = config.load("smoke")
    pairs = evaluate.profile_pairs(cfg)
    table = data.scan_files(evaluate.pair_images(pairs), progress=False)
    trained = sorted(set(pairs["name1"]))[:5]
    torch.manual_seed(0)
    model = ScratchResNet(num_classes=5, widths=(8, 16), blocks=(1, 1), in_size=32)
    res = evaluate.network_verification(model, evaluate.verification_dataset(table, "path", 32), trained, cfg)
    kept = evaluate.without_people(pairs, trained)
    assert 0 < len(kept) < len(pairs)
    assert res.n_pairs == len(kept) and res.n_failed == 0 and res.norm == "cohort"
    assert len(res.fold_accuracies) == cfg.verification_folds and 0.0 <= res.accuracy <= 1.0
    assert res.pairs[["name1", "name2"]].isin(trained).sum().sum() == 0


def test_stochastic_depth_drops_whole_residual_branches_in_training_only():
    model = ScratchResNet(5, widths=(8, 16, 16, 32), blocks=(1, 1, 2, 1), in_size=32, shortcut="avgpool",
                          drop_path=0.2)
    rates = [b.drop_path.p for b in model.modules() if isinstance(b, BasicBlock)]
    assert rates == pytest.approx([0.2 * k / 5 for k in range(1, 6)])   # linear in depth, the last block at 0.2
    always = BasicBlock(8, 8, drop_path=1.0)                            # every row's branch dropped: relu(x)
    _randomise(always, seed=1).train()
    x = torch.randn(4, 8, 6, 6)
    assert torch.equal(always(x), torch.relu(x))
    assert not torch.equal(always.eval()(x), torch.relu(x))           # at test time the branch is always there
    _randomise(model, seed=2).eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(image), model(image))                  # deterministic when evaluating
    plain = ScratchResNet(5, residual=False, drop_path=0.2)               # nothing to fall back on without a shortcut
    assert plain.drop_path == 0.0 and not any(isinstance(m, StochasticDepth) for m in plain.modules())
    built = from_settings(5, dict(widths=(8, 16, 16, 32), blocks=(1, 1, 1, 1), drop_path=0.3))
    assert built.drop_path == 0.3 and built.layer4[0].drop_path.p == pytest.approx(0.3)


@pytest.mark.parametrize("in_ch,out_ch,stride,shortcut", [(8, 8, 1, "conv"), (8, 16, 2, "avgpool"), (8, 16, 2, "conv")])
def test_preact_block_normalises_before_each_conv_and_adds_last(in_ch, out_ch, stride, shortcut):
    block = _randomise(PreActBlock(in_ch, out_ch, stride, shortcut=shortcut), seed=in_ch + stride).eval()
    x = torch.randn(3, in_ch, 10, 10)
    with torch.no_grad():
        pre = torch.relu(block.bn1(x))
        branch = block.conv2(torch.relu(block.bn2(block.conv1(pre))))
        if block.downsample is None:
            assert in_ch == out_ch and stride == 1
            expected = branch + x                                   # the raw input, not its activation
        else:                                                       # the projection sees the activated input
            assert not any(isinstance(m, nn.BatchNorm2d) for m in block.downsample)
            assert isinstance(block.downsample[0], nn.AvgPool2d) == (shortcut == "avgpool")
            expected = branch + block.downsample(pre)
        out = block(x)
    assert out.shape == (3, out_ch, 10 // stride, 10 // stride)
    assert torch.allclose(out, expected, atol=1e-5)
    assert (out < 0).any()                                          # no ReLU after the sum
    plain = _randomise(PreActBlock(in_ch, out_ch, stride, residual=False), seed=1).eval()
    with torch.no_grad():
        assert plain.downsample is None and torch.allclose(
            plain(x), plain.conv2(torch.relu(plain.bn2(plain.conv1(torch.relu(plain.bn1(x)))))), atol=1e-6)


def test_preact_network_structure_and_zero_init_identity():
    widths, blocks = (8, 16, 16, 32), (2, 1, 1, 1)
    res = ScratchResNet(5, widths, blocks, in_size=32, shortcut="avgpool", preact=True)
    assert all(isinstance(b, PreActBlock) for stage in res.stages for b in stage)
    assert len(res.stem) == 1 and isinstance(res.final[0], nn.BatchNorm2d) and res.final[0].num_features == 32
    plain = ScratchResNet(5, widths, blocks, in_size=32, residual=False, preact=True)
    projections = sum(p.numel() for b in res.modules() if isinstance(b, PreActBlock) and b.downsample is not None
                      for p in b.downsample.parameters())
    assert projections == 8 * 16 + 16 * 16 + 16 * 32                 # 1x1 convolutions only, no batch norm
    assert count_parameters(res) == count_parameters(plain) + projections
    built = from_settings(5, dict(widths=widths, blocks=blocks, preact=True))
    assert built.preact and "preact=True" in repr(built)
    zero = ScratchResNet(5, widths, blocks, in_size=32, preact=True, zero_init_residual=True).train()
    assert all(not b.conv2.weight.any() and b.conv1.weight.any() for stage in zero.stages for b in stage)
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(zero.layer1[1](x), x)                     # an identity block starts as the identity


def test_preact_plain_twin_is_the_plain_network_layer_for_layer():
    """Without shortcuts the pre-activation network is the plain network: same initial weights, same training."""
    kw = dict(widths=(8, 16, 16, 32), blocks=(1, 2, 1, 1), in_size=32, residual=False, shortcut="avgpool",
              head="cosine")
    nets = []
    for preact in (False, True):
        torch.manual_seed(7)
        nets.append(ScratchResNet(6, preact=preact, **kw))
    weights = [[p for p in net.parameters() if p.ndim > 1] for net in nets]
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 3, 32, 32, generator=g), torch.randint(0, 6, (12,), generator=g)
    for net in nets:
        torch.manual_seed(1)                                         # the same dropout masks for both
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
        net.train()
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    weights = [[p for p in net.parameters() if p.ndim > 1] for net in nets]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*weights))
    nets[0].eval(), nets[1].eval()
    with torch.no_grad():
        assert torch.allclose(nets[0](x), nets[1](x), atol=1e-5)
    res = ScratchResNet(6, preact=True, **{**kw, "residual": True}).eval()
    res.load_state_dict(nets[1].state_dict(), strict=False)   # the projections keep their own weights
    with torch.no_grad():
        assert not torch.allclose(res(x), nets[1](x), atol=1e-3)     # the shortcuts change the function
