"""The training engine: modes, sandwich rule, schedules, outputs, bad input, CLI, bench smoke."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from helpers import write_noise_fashion

import slimnet
from slimnet.checkpoint import load_checkpoint, load_supernet
from slimnet.config import ConfigError, load_config
from slimnet.train import (
    TrainingDiverged,
    distill_ramp,
    lr_factor,
    param_groups,
    train,
    width_loss,
)

torch.set_num_threads(1)   # tiny models: threads only add contention on a shared CPU
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def noise_data(tmp_path_factory):
    """48 train / 16 test random 28x28 images in Fashion-MNIST's IDX format (fast to load)."""
    return write_noise_fashion(str(tmp_path_factory.mktemp("fm")), n_train=48, n_test=16, seed=0)


def tiny(tmp_path, root, *overrides):
    base = [f"experiment.output_dir={tmp_path / 'run'}", "experiment.name=t", "experiment.device=cpu",
            "model.name=resnet20", "model.max_width=0.5", "model.min_width=0.25", f"data.root={root}",
            "data.batch_size=8", "data.workers=0", "data.augment=none", "train.epochs=1", "train.num_random=1",
            "optim.lr=0.05", "eval.calib_images=16"]
    return load_config(None, base + list(overrides))


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------------------------
# modes end to end
# ---------------------------------------------------------------------------------------------
def test_universal_run_writes_everything(tmp_path, noise_data, capsys):
    cfg = tiny(tmp_path, noise_data, "train.mode=universal", "train.epochs=2")
    summary = train(cfg, quiet=True)
    out = summary["output_dir"]
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tb")))
    assert "writing to" in capsys.readouterr().out
    lines = read_metrics(out)
    assert [r["epoch"] for r in lines] == [1, 2]                 # exactly the configured epochs
    rec = lines[-1]
    assert set(rec["train_loss"]) == {"max", "random", "min"}
    assert rec["step"] == 12 and "lr" in rec and rec["time"] > 0
    for label, r in rec["eval"].items():
        assert set(r) == {"top1", "top5", "loss", "macs"} and r["macs"] > 0
    # widths come out largest first; best chosen on the max width
    assert summary["best"]["label"] == "0.5"
    ckpt = load_checkpoint(os.path.join(out, "last.pt"))
    assert ckpt["epoch"] == 2 and ckpt["step"] == 12 and ckpt["batch"] == 0
    assert {"optimizer", "scheduler", "scaler", "rng", "config"} <= set(ckpt)
    assert {"torch", "python", "numpy"} <= set(ckpt["rng"])
    net, _ = load_supernet(os.path.join(out, "best.pt"))       # the format the search/export tools read
    assert net.calibrated_configs()                              # calibrated statistics travel with it
    reloaded = load_config(os.path.join(out, "config.yaml"))
    assert reloaded == cfg


def test_switchable_with_channel_json_and_widths(tmp_path, noise_data):
    with torch.device("meta"):
        proto = slimnet.build("resnet20", num_classes=10, in_channels=1, input_size=28, max_width=0.5,
                              min_width=0.25)
    searched = proto.space.uniform(0.25).replace(s3=24)
    json_path = tmp_path / "searched_small.json"
    searched.save(json_path)
    cfg = tiny(tmp_path, noise_data, "train.mode=switchable", f"train.widths=[0.5, {json_path}]",
               "train.distill=kl", "train.temperature=2.0", "train.hard_label_weight=0.5")
    summary = train(cfg, quiet=True)
    rec = read_metrics(summary["output_dir"])[-1]
    assert list(rec["train_loss"]) == ["0.5", "searched_small"]   # the teacher (largest) first
    assert set(rec["eval"]) == {"0.5", "searched_small"}
    net, _ = load_supernet(summary["last"])
    assert net.bn_mode == "switchable" and len(net.switchable_configs) == 2


def test_fixed_mode_trains_a_plain_child(tmp_path, noise_data):
    with torch.device("meta"):
        proto = slimnet.build("resnet20", num_classes=10, in_channels=1, input_size=28, max_width=0.5,
                              min_width=0.25)
    cfg_json = tmp_path / "child.json"
    proto.space.uniform(0.375).save(cfg_json)
    cfg = tiny(tmp_path, noise_data, "train.mode=fixed", f"model.channels={cfg_json}")
    summary = train(cfg, quiet=True)
    net, ckpt = load_supernet(summary["last"])
    assert net.is_child and not any(isinstance(m, slimnet.nn.SlimConv2d) for m in net.modules())
    assert ckpt["model"]["kwargs"]["channels"] == dict(proto.space.uniform(0.375).channels)
    rec = read_metrics(summary["output_dir"])[-1]
    assert list(rec["eval"]) == ["child"] and rec["eval"]["child"]["macs"] == slimnet.profile(
        proto.space, proto.space.uniform(0.375)).macs


def test_autoslim_mode_amp_channels_last_adamw_step(tmp_path, noise_data):
    cfg = tiny(tmp_path, noise_data, "train.mode=autoslim", "train.amp=bf16", "train.channels_last=true",
               "optim.name=adamw", "optim.lr=0.001", "optim.schedule=step", "optim.milestones=[0.5]",
               "train.distill=alpha", "train.label_smoothing=0.1", "train.accum_steps=2",
               "eval.widths=[0.5, 0.25]", "optim.grad_clip=1.0")
    summary = train(cfg, quiet=True)
    rec = read_metrics(summary["output_dir"])[-1]
    assert all(math.isfinite(v) for v in rec["train_loss"].values())
    assert set(rec["eval"]) == {"0.5", "0.25"}
    assert rec["lr"] == pytest.approx(0.0001)   # stepped down by gamma at half the run


@pytest.mark.parametrize("clip", [None, 1e-6])
def test_gradient_norm_is_logged_and_clipping_bounds_the_update(tmp_path, noise_data, clip):
    """TensorBoard's train/grad_norm is the global norm before clipping; with a tiny optim.grad_clip
    plain SGD (no momentum, no decay, no warm-up) moves every parameter by at most lr * clip."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    extra = [] if clip is None else [f"optim.grad_clip={clip}"]
    cfg = tiny(tmp_path, noise_data, "train.mode=universal", "optim.momentum=0", "optim.nesterov=false",
               "optim.weight_decay=0", "optim.warmup_epochs=0", "optim.schedule=constant", *extra)
    summary = train(cfg, quiet=True)
    ea = EventAccumulator(os.path.join(summary["output_dir"], "tb"))
    ea.Reload()
    norms = [e.value for e in ea.Scalars("train/grad_norm")]
    assert norms and all(v > 0 and math.isfinite(v) for v in norms)
    if clip is not None:
        from slimnet.train.modes import build_model
        torch.manual_seed(cfg.experiment.seed)             # as training does: the same initial weights
        start, _ = build_model(cfg, 10, 1, 28)
        steps = summary["step"]
        trained = dict(summary["model"].named_parameters())
        moved = max((p - trained[name].detach().cpu()).abs().max().item() for name, p in start.named_parameters())
        assert moved <= 0.05 * clip * steps * 1.01 and norms[0] > 100 * clip


def test_fixed_mode_from_width_and_cli(tmp_path, noise_data, capsys):
    from slimnet.cli import main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"_base_: {ROOT}/configs/fashion_mnist/fixed_w050.yaml\n")
    rc = main(["train", "--config", str(cfg_file), "--quiet", "--device", "cpu",
               f"experiment.output_dir={tmp_path / 'cli'}", "model.name=resnet20", f"data.root={noise_data}",
               "data.batch_size=16", "data.workers=0", "train.epochs=1", "optim.warmup_epochs=0"])
    assert rc == 0, capsys.readouterr().err
    assert "writing to" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "cli" / "best.pt")
    # an existing run resumes automatically; it has nothing left to do
    rc = main(["train", "--config", str(cfg_file), "--quiet", f"experiment.output_dir={tmp_path / 'cli'}",
               "model.name=resnet20", f"data.root={noise_data}", "data.batch_size=16", "data.workers=0",
               "train.epochs=1", "optim.warmup_epochs=0"])
    assert rc == 0 and "nothing to do" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------------------------
def test_lr_schedules_per_iteration():
    o = load_config(None, ["optim.lr=1.0", "optim.warmup_epochs=1", "optim.schedule=cosine",
                           "train.epochs=10"]).optim
    assert lr_factor(0, o, 10, 100) == 0.0 and lr_factor(50, o, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, o, 10, 100) == pytest.approx(1.0)
    assert lr_factor(999, o, 10, 100) < 1e-4
    o.schedule = "linear"
    assert lr_factor(550, o, 10, 100) == pytest.approx(0.5)
    o.schedule, o.warmup_epochs, o.milestones = "step", 0, [3, 6]
    assert [lr_factor(s, o, 10, 100) for s in (299, 300, 600)] == pytest.approx([1.0, 0.1, 0.01])
    o.schedule, o.gamma = "exponential", 0.98
    assert [lr_factor(s, o, 10, 100) for s in (0, 99, 100, 250, 999)] == pytest.approx(
        [1.0, 1.0, 0.98, 0.98 ** 2, 0.98 ** 9])


def test_weight_decay_only_on_conv_linear_weights():
    net = slimnet.build("mobilenet_v2", num_classes=10, in_channels=1, input_size=28, max_width=0.5, min_width=0.35)
    o = load_config(None).optim
    decay, no_decay = param_groups(net, o)
    decay_ids = {id(p) for p in decay["params"]}
    for name, mod in net.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            is_dw = getattr(mod, "depthwise", False)
            expect = pname == "weight" and isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and not is_dw
            assert (id(p) in decay_ids) == expect, f"{name}.{pname}"
    o.decay_depthwise = o.decay_bn = True
    decay2, _ = param_groups(net, o)
    assert len(decay2["params"]) > len(decay["params"])
    assert decay["weight_decay"] == o.weight_decay and no_decay["weight_decay"] == 0.0


def test_width_loss_hard_labels_and_distillation():
    cfg = load_config(None)
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(width_loss(cfg, 0, s, y, None), ce)                # the max width: labels
    soft = -(torch.softmax(t, 1) * torch.log_softmax(s, 1)).sum(1).mean()
    assert torch.allclose(width_loss(cfg, 1, s, y, t), soft, atol=1e-6)      # inplace distillation
    # distillation warm-up: the student's loss blends from the labels (ramp 0) to the teacher (ramp 1)
    assert torch.allclose(width_loss(cfg, 1, s, y, t, distill_ramp=0.0), ce, atol=1e-6)
    assert torch.allclose(width_loss(cfg, 1, s, y, t, distill_ramp=0.25), 0.25 * soft + 0.75 * ce, atol=1e-6)
    assert torch.allclose(width_loss(cfg, 0, s, y, t, distill_ramp=0.0), ce)   # the teacher: labels always
    assert [distill_ramp(k, 10, 2.0) for k in (0, 5, 10, 20, 30)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert distill_ramp(0, 10, 0.0) == 1.0                                     # the papers' recipe
    cfg.train.hard_label_weight = 0.5
    assert torch.allclose(width_loss(cfg, 1, s, y, t), soft + 0.5 * ce, atol=1e-6)
    assert torch.allclose(width_loss(cfg, 1, s, y, t, distill_ramp=0.5), 0.5 * soft + 1.0 * ce, atol=1e-6)
    cfg.train.distill = "none"                                                 # ablation: all on labels
    cfg.train.label_smoothing = 0.1
    sm = torch.nn.functional.cross_entropy(s, y, label_smoothing=0.1)
    assert torch.allclose(width_loss(cfg, 1, s, y, None), sm)


def test_backward_frees_each_width_graph():
    """Peak memory saved for backward during a sandwich step is about one width's, not the sum."""
    import contextlib

    from slimnet.train import train_step

    live, peak = [0], [0]

    class Held:
        def __init__(self, t):
            self.t, self.n = t, t.numel() * t.element_size()
            live[0] += self.n
            peak[0] = max(peak[0], live[0])

        def __del__(self):
            live[0] -= self.n

    def measure(configs):
        live[0] = peak[0] = 0
        with torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t):
            train_step(net, net, configs, x, y, cfg, scaler, contextlib.nullcontext(), 0, False)
        net.zero_grad(set_to_none=True)
        return peak[0]

    cfg = load_config(None, ["train.mode=universal", "model.name=resnet20"])
    net = slimnet.build("resnet20", num_classes=10, in_channels=1, input_size=28, max_width=1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    space = net.space
    sandwich = [("max", space.max()), ("random", space.uniform(0.75)), ("random", space.uniform(0.5)),
                ("min", space.min())]
    one = measure(sandwich[:1])
    four = measure(sandwich)
    # kept graphs would need max + 0.75 + 0.5 + 0.25 of the activations (about 2.5x)
    assert one > 0 and four < 1.1 * one, (one, four)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_missing_data_is_a_clear_error(tmp_path):
    cfg = load_config(None, [f"experiment.output_dir={tmp_path}", "data.name=cifar10", f"data.root={tmp_path}",
                             "model.name=resnet20"])
    with pytest.raises(FileNotFoundError, match="cifar10 not found"):
        train(cfg, quiet=True)


def test_batch_larger_than_data(tmp_path, noise_data):
    cfg = tiny(tmp_path, noise_data, "train.mode=universal", "data.batch_size=64")
    with pytest.raises(ConfigError, match=r"data\.batch_size: 64 is larger than the 48 images"):
        train(cfg, quiet=True)


def test_fp16_on_cpu_and_compile_in_universal_mode_are_refused(tmp_path, noise_data):
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        train(tiny(tmp_path, noise_data, "train.mode=universal", "train.amp=fp16"), quiet=True)
    with pytest.raises(ConfigError, match="torch.compile does not fit universal"):
        train(tiny(tmp_path, noise_data, "train.mode=universal", "train.compile=true"), quiet=True)


def test_resume_from_another_config_names_the_keys(tmp_path, noise_data):
    train(tiny(tmp_path, noise_data, "train.mode=universal"), quiet=True)
    other = tiny(tmp_path, noise_data, "train.mode=universal", "model.max_width=0.75", "optim.lr=0.2")
    with pytest.raises(ConfigError) as err:
        train(other, resume=True, quiet=True)
    msg = str(err.value)
    assert "model.max_width" in msg and "optim.lr" in msg and "--fresh" in msg
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny(tmp_path / "elsewhere", noise_data, "train.mode=universal"), resume=True, quiet=True)
    # an allowed change (more epochs) resumes
    more = tiny(tmp_path, noise_data, "train.mode=universal", "train.epochs=2")
    assert train(more, quiet=True)["step"] == 12


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, noise_data):
    cfg = tiny(tmp_path, noise_data, "train.mode=universal", "train.checkpoint_every=2",
               "train.debug_nan_at_step=3")
    with pytest.raises(TrainingDiverged, match=r"step 3 .*width 'min'.*step 2\) is intact"):
        train(cfg, quiet=True)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["batch"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model_state"].values() if v.is_floating_point())


# ---------------------------------------------------------------------------------------------
# benchmark smoke test
# ---------------------------------------------------------------------------------------------
