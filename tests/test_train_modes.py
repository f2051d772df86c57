"""Training modes as objects: the registry, the protocol the engine asks, the samplers, a new mode
added as one class, and the step's explicit options."""
from __future__ import annotations

import contextlib
import os

import pytest
import torch
from helpers import write_noise_fashion

import slimnet
from slimnet.config import ConfigError, load_config
from slimnet.train import (
    MODES,
    StepOptions,
    WidthSampler,
    build_model,
    get_mode,
    train,
    train_step,
)
from slimnet.train.modes import Universal

torch.set_num_threads(1)


def test_width_sampler_shared_seed_and_sandwich():
    cfg = load_config(None, ["train.mode=autoslim", "model.name=resnet20", "train.num_random=2"])
    net, plan = build_model(cfg, 10, 1, 28)
    ws = WidthSampler(net, plan, cfg)
    a, b = ws.configs(5), WidthSampler(net, plan, cfg).configs(5)
    assert [c for _, c in a] == [c for _, c in b]                     # (seed, step) only: ranks agree
    assert [c for _, c in ws.configs(6)] != [c for _, c in a]
    assert a[0] == ("max", net.space.max()) and a[-1] == ("min", net.space.min())
    assert [lab for lab, _ in a] == ws.labels() == ["max", "random", "random", "min"]
    cfg.train.mode = "universal"
    net_u, plan_u = build_model(cfg, 10, 1, 28)
    rand = [c for lab, c in WidthSampler(net_u, plan_u, cfg).configs(3) if lab == "random"]
    for c in rand:   # universal: uniform widths, i.e. configs of the form space.uniform(w)
        assert any(net_u.space.uniform(w / 100) == c for w in range(25, 101))


def test_registry_names_bn_kinds_and_compile():
    from slimnet.config import MODE_BN
    from slimnet.config import MODES as NAMES

    assert list(MODES) == ["switchable", "universal", "autoslim", "fixed"] and NAMES == tuple(MODES)
    assert all(get_mode(name) is mode and mode.name == name for name, mode in MODES.items())
    assert MODE_BN == {"switchable": ("switchable", "shared"), "universal": ("universal",),
                       "autoslim": ("universal",), "fixed": ()}
    assert [name for name, mode in MODES.items() if mode.supports_compile] == ["switchable", "fixed"]
    with pytest.raises(ConfigError, match=r"train\.mode: 'sandwich' is not one of switchable, universal, "
                                          r"autoslim, fixed"):
        get_mode("sandwich")


def test_plans_of_each_mode():
    common = ["model.name=resnet20", "model.max_width=0.5", "model.min_width=0.25"]
    plans = {}
    for mode, extra in {"switchable": ["train.widths=[0.25, 0.5]"], "universal": [], "autoslim": [],
                        "fixed": ["train.widths=[0.375]"]}.items():
        cfg = load_config(None, common + [f"train.mode={mode}"] + extra)
        net, plan = build_model(cfg, 10, 1, 28)
        assert plan.mode is MODES[mode]
        plans[mode] = (net, plan)
    net, plan = plans["switchable"]
    assert [lab for lab, _ in plan.train_configs] == ["0.5", "0.25"] and not plan.calibrate   # largest first
    assert net.bn_mode == "switchable"
    for mode in ("universal", "autoslim"):
        net, plan = plans[mode]
        assert plan.train_configs == [] and plan.calibrate and net.bn_mode == "universal"
        assert [lab for lab, _ in plan.eval_configs][0] == "0.5"
    net, plan = plans["fixed"]
    assert net.is_child and plan.train_configs == plan.eval_configs and not plan.calibrate


class Quarters(Universal):
    """A new mode for the test: the sandwich rule over widths in quarter steps."""
    name = "quarters"

    def ends_and_draw(self, space):
        largest, smallest, _ = super().ends_and_draw(space)
        lo, hi = space.min_width, space.max_width
        return largest, smallest, lambda rng: space.uniform(round(rng.uniform(lo, hi) * 4) / 4)


def test_a_new_mode_is_one_class_and_a_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(MODES, Quarters.name, Quarters())
    data = write_noise_fashion(str(tmp_path / "fm"), n_train=16, n_test=8, seed=0)
    args = ["train.mode=quarters", "model.name=resnet20", "model.max_width=0.5", "model.min_width=0.25"]
    with pytest.raises(ConfigError, match=r"train\.widths: quarters mode samples widths"):
        load_config(None, args + ["train.widths=[0.5]"])
    with pytest.raises(ConfigError, match=r"model\.bn: 'switchable' conflicts with train\.mode 'quarters'"):
        load_config(None, args + ["model.bn=switchable"])
    cfg = load_config(None, args)
    net, plan = build_model(cfg, 10, 1, 28)
    space = net.space
    configs = [c for step in range(8) for _, c in WidthSampler(net, plan, cfg).configs(step)]
    assert set(configs) <= {space.uniform(0.25), space.uniform(0.5)}
    run = ["experiment.device=cpu", f"experiment.output_dir={tmp_path / 'run'}", f"data.root={data}",
           "data.batch_size=8", "data.workers=0", "data.augment=none", "eval.calib_images=8"]
    summary = train(load_config(None, args + run), quiet=True)
    assert summary["step"] == 2 and os.path.isfile(summary["last"])
    with pytest.raises(ConfigError, match="torch.compile does not fit quarters mode"):
        train(load_config(None, args + run + ["train.compile=true"]), fresh=True, quiet=True)


def test_train_step_takes_options_and_a_loss_callable():
    cfg = load_config(None, ["train.mode=universal", "model.name=resnet20", "train.distill=kl",
                             "train.accum_steps=2"])
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    scaler, nullctx = torch.amp.GradScaler("cpu", enabled=False), contextlib.nullcontext()

    def run(options):
        torch.manual_seed(0)
        net = slimnet.build("resnet20", num_classes=10, in_channels=1, input_size=28, max_width=0.5, min_width=0.25)
        configs = [("max", net.space.max()), ("min", net.space.min())]
        losses = train_step(net, net, configs, x, y, options, scaler, nullctx, 0)
        return losses, [p.grad.clone() for p in net.parameters() if p.grad is not None]

    by_config, by_options = run(cfg), run(StepOptions.from_experiment(cfg))
    assert torch.equal(by_config[0], by_options[0])
    assert all(torch.equal(a, b) for a, b in zip(by_config[1], by_options[1]))
    seen = []

    def squares(index, logits, targets, teacher, ramp):
        seen.append((index, teacher is None))
        return logits.pow(2).mean()

    losses, _ = run(StepOptions(loss=squares, accum_steps=1, distill=False))
    assert seen == [(0, True), (1, True)] and losses.shape == (2,) and (losses > 0).all()
