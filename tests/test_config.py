"""Experiment configs: schema, _base_ inheritance, dotted overrides, validation, shipped configs."""
from __future__ import annotations

import glob
import os

import pytest
import torch
import yaml

from slimnet.config import Config, ConfigError, load_config, parse_override, to_yaml
from slimnet.train import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
DATA_DIMS = {"fashion_mnist": (10, 1, 28), "cifar10": (10, 3, 32), "cifar100": (100, 3, 32), "imagefolder": (1000, 3, 224)}


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_shipped_configs_exist():
    names = {os.path.relpath(p, os.path.join(ROOT, "configs")) for p in SHIPPED}
    for n in ["quickstart", "fixed_w035", "fixed_w050", "fixed_w075", "fixed_w100", "snet", "snet_shared_bn",
              "usnet", "usnet_no_distill", "autoslim_supernet"]:
        assert f"fashion_mnist/{n}.yaml" in names
    for n in ["s_mobilenet_v1", "s_mobilenet_v2", "us_mobilenet_v1", "us_mobilenet_v2", "s_resnet50",
              "s_shufflenet", "autoslim_mobilenet_v2"]:
        assert f"imagenet/{n}.yaml" in names
    assert any(n.startswith("cifar/") for n in names)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_shipped_config_validates_and_builds(path, tmp_path):
    overrides = []
    if path.endswith("fmnist_autoslim_retrain.yaml"):   # a template: the study gives it a searched JSON
        import slimnet
        with pytest.raises(ConfigError, match="needs exactly one of model.channels"):
            load_config(path)
        with torch.device("meta"):
            sup = slimnet.build("mobilenet_v2", num_classes=10, in_channels=1, input_size=28, max_width=1.5,
                                min_width=0.2, downsample="imagenet")
        sup.space.uniform(0.6).save(tmp_path / "searched.json")
        overrides = [f"model.channels={tmp_path / 'searched.json'}"]
    cfg = load_config(path, overrides)
    num_classes, in_ch, size = DATA_DIMS[cfg.data.name]
    size = cfg.data.input_size or size
    with torch.device("meta"):       # widths in range, JSONs readable, mode fits the model
        net, plan = build_model(cfg, num_classes, in_ch, size)
    if cfg.train.mode in ("switchable", "fixed"):
        assert plan.train_configs
    assert plan.eval_configs


def _imagenet(name):
    return load_config(os.path.join(ROOT, "configs", "imagenet", name + ".yaml"))


def _recipe(cfg, processes):
    o = cfg.optim
    return (o.name, o.momentum, o.nesterov, o.lr, o.schedule, o.weight_decay, cfg.train.epochs,
            cfg.data.batch_size * processes, cfg.data.augment)


def test_imagenet_recipes_follow_their_sources():
    """Each ImageNet config follows the source its comment names (see the comments)."""
    # the papers' US recipe (REFERENCE.md section 2), distillation on, 8 processes
    for name in ("us_mobilenet_v1", "us_mobilenet_v2"):
        cfg = _imagenet(name)
        assert _recipe(cfg, 8) == ("sgd", 0.9, True, 0.5, "linear", 4e-5, 250, 1024, "mobile")
        assert (cfg.train.mode, cfg.train.num_random, cfg.train.distill) == ("universal", 2, "soft_ce")
    # reference configs apps/s_mobilenet_v{1,2}_train_val.yml, 4 processes
    for name in ("s_mobilenet_v1", "s_mobilenet_v2"):
        cfg = _imagenet(name)
        assert _recipe(cfg, 4) == ("sgd", 0.9, True, 0.045, "exponential", 1e-4, 480, 160, "mobile")
        assert cfg.optim.gamma == 0.98
    # reference config apps/s_resnet50_train_val.yml (= REFERENCE.md section 2), 4 processes
    r50 = _imagenet("s_resnet50")
    assert _recipe(r50, 4) == ("sgd", 0.9, True, 0.1, "step", 1e-4, 100, 256, "default")
    assert (r50.optim.milestones, r50.optim.gamma) == ([30, 60, 90], 0.1)
    # reference config apps/s_shufflenet_train_val.yml, 8 processes
    assert _recipe(_imagenet("s_shufflenet"), 8) == ("sgd", 0.9, True, 0.5, "linear", 1e-4, 250, 1024, "mobile")
    auto = _imagenet("autoslim_mobilenet_v2")
    assert _recipe(auto, 8) == ("sgd", 0.9, True, 0.5, "linear", 4e-5, 250, 1024, "mobile")
    assert auto.train.label_smoothing == 0.1 and auto.model.max_width == 1.5 and auto.data.exclude_heldout
    # weight decay on conv / linear weights only, as the reference
    for name in ("s_mobilenet_v1", "us_mobilenet_v2", "s_resnet50", "s_shufflenet"):
        o = _imagenet(name).optim
        assert not (o.decay_bn or o.decay_bias or o.decay_depthwise)


@pytest.mark.parametrize("path", [p for p in SHIPPED if os.sep + "imagenet" + os.sep in p],
                         ids=lambda p: os.path.basename(p))
def test_imagenet_configs_name_their_source(path):
    with open(path) as f:
        head = "".join(line for line in f if line.startswith("#"))
    assert "# Source" in head, f"{path}: say which paper section or reference config it follows"
    assert "REFERENCE.md section" in head or "apps/" in head


def test_base_inheritance_relative_to_including_file(tmp_path):
    write(tmp_path / "common" / "base.yaml", {"optim": {"lr": 0.3, "momentum": 0.8}, "train": {"epochs": 7}})
    child = write(tmp_path / "exp" / "child.yaml",
                  "_base_: ../common/base.yaml\noptim:\n  lr: 0.2\nexperiment:\n  name: child\n")
    cfg = load_config(child)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.train.epochs, cfg.experiment.name) == (0.2, 0.8, 7, "child")


def test_base_chain_and_list(tmp_path):
    write(tmp_path / "a.yaml", {"train": {"epochs": 3}, "optim": {"lr": 0.5}})
    write(tmp_path / "b.yaml", "_base_: a.yaml\noptim:\n  lr: 0.4\n")
    write(tmp_path / "c.yaml", {"data": {"batch_size": 16}})
    top = write(tmp_path / "top.yaml", "_base_: [b.yaml, c.yaml]\n")
    cfg = load_config(top)
    assert (cfg.train.epochs, cfg.optim.lr, cfg.data.batch_size) == (3, 0.4, 16)


def test_missing_base_and_cycle(tmp_path):
    bad = write(tmp_path / "x.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(bad)
    write(tmp_path / "p.yaml", "_base_: q.yaml\n")
    q = write(tmp_path / "q.yaml", "_base_: p.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(q)


def test_overrides_parse_yaml_scalars():
    assert parse_override("optim.lr=0.1") == (["optim", "lr"], 0.1)
    assert parse_override("data.batch_size=128") == (["data", "batch_size"], 128)
    assert parse_override("train.widths=[1.0, 0.5]") == (["train", "widths"], [1.0, 0.5])
    assert parse_override("model.min_width=null") == (["model", "min_width"], None)
    assert parse_override("train.channels_last=true")[1] is True
    cfg = load_config(None, ["optim.lr=0.25", "data.batch_size=64", "train.mode=universal", "optim.weight_decay=1e-4"])
    assert cfg.optim.lr == 0.25 and cfg.data.batch_size == 64 and cfg.optim.weight_decay == 1e-4
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("optim.lr")


def test_int_accepted_for_float_but_not_str_for_int():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer"):
        load_config(None, ["data.batch_size=big"])
    with pytest.raises(ConfigError, match=r"train\.channels_last: expected true or false"):
        load_config(None, ["train.channels_last=3"])


def test_unknown_keys_name_close_matches(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*'lr'"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"'optimizer'.*'optim'"):
        load_config(None, ["optimizer.lr=0.1"])
    f = write(tmp_path / "t.yaml", {"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"train\.epoch.*'epochs'"):
        load_config(f)


@pytest.mark.parametrize("override, key", [
    ("train.epochs=0", "train.epochs"),
    ("optim.lr=-0.1", "optim.lr"),
    ("train.mode=unversal", "train.mode"),
    ("optim.schedule=cosin", "optim.schedule"),
    ("train.amp=fp8", "train.amp"),
    ("train.distill=kll", "train.distill"),
    ("data.name=mnistt", "data.name"),
    ("train.label_smoothing=1.5", "train.label_smoothing"),
    ("model.name=resnet21", "model.name"),
    ("data.workers=-1", "data.workers"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_mode_and_bn_must_agree():
    with pytest.raises(ConfigError, match=r"model\.bn.*conflicts with train\.mode 'universal'"):
        load_config(None, ["train.mode=universal", "model.bn=switchable"])
    with pytest.raises(ConfigError, match=r"model\.bn"):
        load_config(None, ["train.mode=fixed", "train.widths=[0.5]", "model.bn=universal"])
    # the naive shared-BN ablation is a switchable-mode choice
    cfg = load_config(None, ["train.mode=switchable", "train.widths=[1.0, 0.5]", "model.bn=shared"])
    assert cfg.model.bn == "shared"
    # universal BN has no running statistics: evaluating without calibration would fail after epoch 1
    for mode in ("universal", "autoslim"):
        with pytest.raises(ConfigError, match=rf"eval\.calibrate: {mode} mode's universal BN tracks no statistics"):
            load_config(None, [f"train.mode={mode}", "eval.calibrate=false"])
    assert load_config(None, ["train.mode=switchable", "train.widths=[1.0]", "eval.calibrate=false"])


def test_widths_outside_the_model_range():
    with pytest.raises(ConfigError, match=r"train\.widths\[1\].*above model\.max_width"):
        load_config(None, ["train.mode=switchable", "train.widths=[1.0, 1.25]"])
    with pytest.raises(ConfigError, match=r"train\.widths\[0\].*below model\.min_width"):
        load_config(None, ["train.mode=switchable", "train.widths=[0.2]", "model.min_width=0.25"])
    with pytest.raises(ConfigError, match=r"train\.widths.*universal mode samples"):
        load_config(None, ["train.mode=universal", "train.widths=[1.0]"])
    with pytest.raises(ConfigError, match=r"train\.widths.*needs exactly one"):
        load_config(None, ["train.mode=fixed", "train.widths=[1.0, 0.5]"])
    with pytest.raises(ConfigError, match=r"eval\.widths.*not among train\.widths"):
        load_config(None, ["train.mode=switchable", "train.widths=[1.0, 0.5]", "eval.widths=[0.75]"])


def test_channel_json_paths_resolved(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.channels: file 'missing\.json' not found"):
        load_config(None, ["train.mode=fixed", "model.channels=missing.json"])
    (tmp_path / "c.json").write_text('{"channels": {}}')
    f = write(tmp_path / "exp.yaml", {"train": {"mode": "fixed"}, "model": {"channels": "c.json"}})
    cfg = load_config(f)   # relative to the config file when not found from the working directory
    assert cfg.model.channels == str(tmp_path / "c.json")


def test_yaml_roundtrip(tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs/fashion_mnist/usnet.yaml"), ["optim.lr=0.07"])
    f = write(tmp_path / "resolved.yaml", to_yaml(cfg))
    again = load_config(f)
    assert again == cfg and isinstance(again, Config)


def test_cli_print_config(capsys):
    from slimnet.cli import main

    rc = main(["train", "--config", os.path.join(ROOT, "configs/fashion_mnist/snet.yaml"), "--print-config",
               "optim.lr=0.3"])
    out = capsys.readouterr().out
    assert rc == 0 and "lr: 0.3" in out and "mode: switchable" in out
    rc = main(["train", "--config", os.path.join(ROOT, "configs/fashion_mnist/snet.yaml"), "optim.lrr=1"])
    assert rc == 2
    assert "did you mean 'lr'" in capsys.readouterr().err
