"""BN calibration: exact statistics, coexisting configs, unseen widths, mode, checkpoint, CLI."""
import copy
import hashlib
import random

import pytest
import torch
import torch.nn.functional as F

import slimnet
from slimnet.calibrate import calibrate_bn
from slimnet.checkpoint import load_supernet, save_checkpoint
from slimnet.cli import main
from slimnet.data import build_data
from slimnet.metrics import evaluate
from slimnet.nn import (
    CalibratableBN,
    SlimBatchNorm2d,
    StatsCollector,
    SwitchableBatchNorm2d,
    calibrated_stats,
    is_calibrated_stat,
)

pytestmark = pytest.mark.fashion_mnist

ARCH = dict(num_classes=10, in_channels=1, input_size=16)  # Fashion-MNIST shrunk to 16x16: fast tests



@pytest.fixture(scope="module")
def data():
    b = build_data("fashion_mnist", heldout_size=200, heldout_seed=0, augment="none", subset=512)
    shrink = lambda t: F.interpolate(t, size=16, mode="bilinear", antialias=True)  # noqa: E731
    x = shrink(torch.stack([b.train[i][0] for i in range(len(b.train))]))
    hx = shrink(torch.stack([b.heldout[i][0] for i in range(len(b.heldout))]))
    return x, b.train.targets, hx, b.heldout.targets


@pytest.fixture(scope="module")
def us_net(data):
    """A tiny US net trained only at widths 0.5 and 0.25 (sandwich max + min)."""
    torch.manual_seed(0)
    x, y, _, _ = data
    net = slimnet.build("resnet20", **ARCH, max_width=0.5, min_width=0.25)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(60):
        idx = torch.randint(len(x), (64,), generator=g)
        opt.zero_grad()
        for w in (0.5, 0.25):
            net.set_width(w)
            F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    net.set_width(0.5)
    return net


def exact_stats(net, cfg, batches, bn_type):
    """Mean / unbiased variance of every BN layer's input, collected by forward hooks in a
    separate pass (train mode, the same batches), computed over all values at once in float64."""
    seen = {}
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.setdefault(m, []).append(inp[0].detach()))
             for m in net.modules() if isinstance(m, bn_type)]
    net.set_channels(cfg)
    net.train()
    with torch.no_grad():
        for b in batches:
            net(b)
    for h in hooks:
        h.remove()
    out = {}
    for m, xs in seen.items():
        v = torch.cat(xs).double().transpose(0, 1).reshape(xs[0].shape[1], -1)
        out[m] = (v.mean(1), v.var(1, unbiased=True))
    return out


def test_exact_statistics_uniform_continuous_per_layer(data):
    torch.manual_seed(0)
    _, _, hx, _ = data
    net = slimnet.build("mobilenet_v2", **ARCH, max_width=0.35, min_width=0.1)
    cfgs = [net.space.uniform(0.25), net.space.uniform(0.2213), net.space.random(random.Random(3))]
    assert len({c.key for c in cfgs}) == 3
    batches = [hx[:70][i:i + 24] for i in range(0, 70, 24)]   # ragged last batch
    for cfg in cfgs:
        assert calibrate_bn(net, cfg, batches, num_images=70) == 70
    assert set(net.calibrated_configs()) >= {c.key for c in cfgs}   # several configs coexist
    for cfg in cfgs:
        ref = exact_stats(net, cfg, batches, SlimBatchNorm2d)
        assert len(ref) > 30
        for m, (mean, var) in ref.items():
            ours_mean, ours_var = m.stats_for(cfg.key)
            torch.testing.assert_close(ours_mean.double(), mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(ours_var.double(), var, rtol=1e-5, atol=1e-6)


def test_exact_statistics_switchable(data):
    torch.manual_seed(0)
    _, _, hx, _ = data
    net = slimnet.build("resnet20", **ARCH, max_width=0.5, bn="switchable", switchable=[0.5, 0.25])
    cfg = net.space.uniform(0.25)
    batches = [hx[i:i + 32] for i in range(0, 96, 32)]
    twin = copy.deepcopy(net)
    ref = exact_stats(twin, cfg, batches, SwitchableBatchNorm2d)
    ref = {name: ref[m] for name, m in twin.named_modules() if m in ref}
    calibrate_bn(net, cfg, batches, num_images=96)
    ours = {name: m for name, m in net.named_modules() if isinstance(m, SwitchableBatchNorm2d)}
    assert ours.keys() == ref.keys()
    for name, (mean, var) in ref.items():
        m = ours[name]
        bn = m.bns[m.keys.index(cfg.key)]
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-6)


def test_unseen_width_works_after_calibration(us_net, data):
    x, _, hx, hy = data
    net = us_net
    cfg = net.space.uniform(0.4)                                # trained only at 0.5 and 0.25
    assert cfg not in (net.space.uniform(0.5), net.space.uniform(0.25))
    net.set_channels(cfg)
    test = [(hx[i:i + 100], hy[i:i + 100]) for i in range(0, len(hx), 100)]
    with pytest.raises(RuntimeError, match="no BN statistics"):   # broken before: nothing to normalise with
        evaluate(net, test)
    calibrate_bn(net, cfg, [x[i:i + 100] for i in range(0, 500, 100)], num_images=500)
    acc = evaluate(net, test)["top1"]
    assert acc > 45, acc                                        # 10 classes: chance is 10%


def test_calibration_keeps_train_eval_mode(us_net, data):
    _, _, hx, _ = data
    for mode in (True, False):
        us_net.train(mode)
        calibrate_bn(us_net, us_net.space.uniform(0.5), [hx[:50]], num_images=50)
        assert us_net.training is mode
        assert all(m.training is mode for m in us_net.modules())


def test_calibrated_stats_saved_and_reloaded(us_net, data, tmp_path):
    _, _, hx, _ = data
    net = copy.deepcopy(us_net)
    for w in (0.5, 0.4, 0.25):
        calibrate_bn(net, net.space.uniform(w), [hx[:64], hx[64:128]], num_images=128)
    save_checkpoint(tmp_path / "c.pt", net, config={}, epoch=1)
    net2, ckpt = load_supernet(tmp_path / "c.pt")
    assert net2.calibrated_configs() == net.calibrated_configs() and len(net2.calibrated_configs()) >= 3
    for w in (0.5, 0.4, 0.25):
        for n in (net, net2):
            n.eval().set_width(w)
        torch.testing.assert_close(net(hx[:16]), net2(hx[:16]))


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture()
def ckpt_path(us_net, tmp_path):
    path = tmp_path / "exp" / "best.pt"
    net = copy.deepcopy(us_net)
    for m in net.modules():
        if isinstance(m, SlimBatchNorm2d):
            m.drop_stats()
    config = {"data": {"name": "fashion_mnist", "root": None, "heldout_size": 300, "heldout_seed": 0,
                       "input_size": 16}, "experiment": {"name": "t", "output_dir": str(tmp_path / "exp")}}
    save_checkpoint(path, net, config=config, epoch=3)
    return path


def test_cli_calibrate_to_new_file_keeps_input(ckpt_path, tmp_path, capsys):
    before = _digest(ckpt_path)
    out = tmp_path / "calibrated.pt"
    chan = tmp_path / "c.json"
    net, _ = load_supernet(ckpt_path)
    cfg = net.space.random(random.Random(0))
    cfg.save(chan)
    rc = main(["calibrate", "--checkpoint", str(ckpt_path), "--width", "0.5", "--width", "0.4",
               "--channels", str(chan), "--images", "200", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    assert _digest(ckpt_path) == before                        # the input is untouched
    net2, ckpt = load_supernet(out)
    keys = {net.space.uniform(0.5).key, net.space.uniform(0.4).key, cfg.key}
    assert set(net2.calibrated_configs()) == keys
    assert ckpt["epoch"] == 3 and ckpt["config"]["data"]["heldout_size"] == 300
    assert "calibrated width 0.4" in capsys.readouterr().out


def test_cli_calibrate_in_place_is_atomic_and_adds(ckpt_path):
    assert main(["calibrate", "--checkpoint", str(ckpt_path), "--width", "0.4", "--images", "100"]) == 0
    assert main(["calibrate", "--checkpoint", str(ckpt_path), "--width", "0.25", "--images", "100"]) == 0
    net, ckpt = load_supernet(ckpt_path)
    assert set(net.calibrated_configs()) == {net.space.uniform(0.4).key, net.space.uniform(0.25).key}
    assert ckpt["epoch"] == 3
    assert not [p for p in ckpt_path.parent.iterdir() if ".tmp" in p.name]


def test_cli_calibrate_bad_input(ckpt_path, tmp_path, capsys):
    assert main(["calibrate", "--checkpoint", str(ckpt_path)]) == 2
    assert "nothing to calibrate" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint", str(ckpt_path), "--width", "0.9"]) == 2
    assert "wider than this" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint", str(tmp_path / "missing.pt"), "--width", "0.5"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bare = tmp_path / "bare.pt"
    net, _ = load_supernet(ckpt_path)
    save_checkpoint(bare, net)                                  # no experiment config: no data known
    assert main(["calibrate", "--checkpoint", str(bare), "--width", "0.5"]) == 2
    assert "--data NAME" in capsys.readouterr().err


def test_one_collector_calibrates_several_configs_in_the_same_passes(data):
    """nn.StatsCollector, the mechanism under calibrate_bn and the search's scorer: recording two
    configs' statistics in the same passes stores what calibrate_bn stores for each; inside the
    collector with nothing recorded BN uses batch statistics and stores nothing."""
    torch.manual_seed(0)
    _, _, hx, _ = data
    net = slimnet.build("mobilenet_v2", **ARCH, max_width=0.35, min_width=0.1)
    cfgs = [net.space.uniform(0.3), net.space.random(random.Random(1))]
    batches = [hx[:40], hx[40:64]]
    collector = StatsCollector(m for m in net.modules() if isinstance(m, CalibratableBN))
    stats = {c.key: collector.new_stats() for c in cfgs}
    net.eval()
    with collector, torch.no_grad():
        for x in batches:
            for c in cfgs:
                net.set_channels(c)
                with collector.recording(stats[c.key]):
                    net(x)
        net.set_channels(cfgs[0])
        batch_stats_logits = net(hx[:8])              # nothing recorded: batch statistics
    assert net.calibrated_configs() == []
    with torch.no_grad():
        for c in cfgs:
            net.set_channels(c)
            collector.store(stats[c.key])
    ours = calibrated_stats(net)
    twin = slimnet.build("mobilenet_v2", **ARCH, max_width=0.35, min_width=0.1)
    twin.load_state_dict({k: v for k, v in net.state_dict().items() if not is_calibrated_stat(k)})
    for c in cfgs:
        calibrate_bn(twin, c, batches, num_images=64)
    ref = calibrated_stats(twin)
    assert ours.keys() == ref.keys() and len(ours) == 2 * 2 * len(collector.layers)
    for k in ours:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-6, atol=1e-7)
    twin.train().set_channels(cfgs[0])
    with torch.no_grad():
        torch.testing.assert_close(batch_stats_logits, twin(hx[:8]), rtol=0, atol=0)
    net.eval().set_channels(cfgs[1])                               # back to normal after the block:
    twin.eval().set_channels(cfgs[1])                              # eval mode uses the stored statistics
    with torch.no_grad():
        torch.testing.assert_close(net(hx[:8]), twin(hx[:8]), rtol=1e-5, atol=1e-6)
