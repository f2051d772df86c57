"""Tracing coverage: torchvision and timm classifiers (random weights, nothing downloaded) as traced
supernets. For each model, at a small input and min width 0.25: it traces (or fails with its
specific TraceError); the max config reproduces the model's eval outputs (BN with random running
statistics), the profile at max is FlopCounterMode's FLOPs / 2 and the report's MACs range is the
space's; children exported at 2 random per-layer configs (BN calibrated) equal the supernet there;
one sandwich step (max, min, random config) trains. ``bench/trace_coverage.py`` makes the table
of docs/RESULTS.md ("Tracing coverage") from the same checks at 224 px."""
import random
import sys

import pytest
import torch
import torch.nn as nn
from helpers import ROOT
from torch.utils.flop_counter import FlopCounterMode

import slimnet
from slimnet.export import check_export
from slimnet.nn import SlimBatchNorm2d
from slimnet.trace import TraceReport
from slimnet.trace.sources import build_source

sys.path.insert(0, ROOT)
from bench.trace_coverage import randomize_bn  # noqa: E402  (the table's models, the same statistics)

CLASSES = 10

# (source name, input size, build kwargs, (slimmable groups, fixed groups) at that size)
TORCHVISION = [
    ("resnet18", 32, {}, (12, 2)),
    ("resnet50", 32, {}, (37, 2)),
    ("resnext50_32x4d", 32, {}, (37, 2)),
    ("wide_resnet50_2", 32, {}, (37, 2)),
    ("mobilenet_v2", 32, {}, (25, 2)),
    ("mobilenet_v3_small", 32, {}, (27, 2)),
    ("mobilenet_v3_large", 32, {}, (30, 2)),
    ("mnasnet1_0", 32, {}, (25, 2)),
    ("shufflenet_v2_x1_0", 32, {}, (18, 37)),
    ("squeezenet1_1", 32, {}, (25, 2)),
    ("densenet121", 32, {}, (120, 2)),
    ("efficientnet_b0", 32, {}, (40, 2)),
    ("regnet_y_400mf", 32, {}, (53, 2)),
    ("googlenet", 32, {"aux_logits": False, "init_weights": False}, (57, 2)),
    ("convnext_tiny", 32, {}, (0, 83)),
]
TIMM = [
    ("resnet50d", 32, {}, (39, 2)),
    ("efficientnet_b0", 32, {}, (40, 2)),
    ("mobilenetv3_large_100", 32, {}, (30, 2)),
    ("rexnet_100", 32, {}, (31, 35)),
    ("ghostnet_100", 32, {}, (18, 28)),
    ("regnety_008", 32, {}, (47, 2)),
    ("dla34", 32, {}, (25, 2)),
    ("mixnet_s", 32, {}, (14, 133)),
    ("lcnet_050", 32, {}, (17, 2)),
    ("resnest14d", 32, {}, (15, 18)),
    ("repvgg_a0", 32, {}, (5, 2)),       # its blocks live in `self.stages`: no supernet attribute may hide it
]
# VGG-11 (its 25088 x 4096 linear takes 20 s here) is in the bench's table only; its flatten-into-a-
# linear path is tested on a small model in test_slimmable.py.


#: Models whose supernet cannot be made, with the exact error it stops at.
BLOCKED = {
    "timm:tf_efficientnet_b0": (slimnet.TraceError, r"torch\.fx cannot trace EfficientNet: .* in module 'conv_stem' "
                                                    r"\(Conv2dSame\) .*padding\.py"),
}


def cases():
    out = []
    for source, models in (("torchvision", TORCHVISION), ("timm", TIMM)):
        for name, size, kwargs, counts in models:
            full = f"{source}:{name}"
            out.append(pytest.param(full, size, kwargs, counts, id=full))
    return out


def make(name, kwargs):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = build_source(name, CLASSES, 3, **kwargs)
    randomize_bn(model)    # random running statistics: the max config must use the model's own, not fresh ones
    return model.eval()


def flop_macs(model, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name, size, kwargs, counts", cases())
def test_traced_supernet_of(name, size, kwargs, counts):
    model = make(name, kwargs)
    net = slimnet.slimmable(model, size, min_width=0.25).eval()
    report = TraceReport(net.traced, (size, size), 0.25)
    assert (len(report.slimmable), len(report.fixed)) == counts
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))

    # the max config is the model
    with torch.no_grad():
        want = model(x)
        assert (net(x) - want).abs().max().item() <= 1e-5
        assert (net.export(net.space.max())(x) - want).abs().max().item() <= 1e-5
    cost = slimnet.profile(net.space)
    assert cost.macs == flop_macs(model, x[:1])
    assert cost.params == sum(p.numel() for p in model.parameters())     # LayerNorms and layer scales too
    assert report.macs == (slimnet.profile(net.space, net.space.uniform(0.25)).macs, cost.macs)

    # random per-layer configs export exactly (BN calibrated on a few images)
    has_bn = any(isinstance(m, SlimBatchNorm2d) for m in net.modules())
    calib = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(3))
    rng = random.Random(0)
    for cfg in (net.space.random(rng), net.space.random(rng)):
        if has_bn:
            slimnet.calibrate_bn(net, cfg, calib)
        child = net.export(cfg)
        assert check_export(net, child, cfg, x) <= 1e-5
        assert flop_macs(child, x[:1]) == slimnet.profile(net.space, cfg).macs
    net.set_channels(net.space.max())

    # one sandwich step trains every config
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    y = torch.randint(0, CLASSES, (2,), generator=torch.Generator().manual_seed(4))
    opt.zero_grad()
    for cfg in (net.space.max(), net.space.min(), net.space.random(random.Random(1))):
        net.set_channels(cfg)
        loss = nn.functional.cross_entropy(net(x), y)
        assert torch.isfinite(loss)
        loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize("name", sorted(BLOCKED))
def test_blocked_models_fail_with_their_reason(name):
    kind, match = BLOCKED[name]
    model = make(name, {})
    with pytest.raises(kind, match=match):
        slimnet.slimmable(model, 32, min_width=0.25)
