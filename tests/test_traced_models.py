"""Traced models by name (``torchvision:NAME``, ``timm:NAME``, ``package.module:function``) as
registry models: ``slimnet.build``, checkpoints, children, BN kinds, configs and the commands."""
import json
import sys

import pytest
import torch

import slimnet
from slimnet.checkpoint import load_supernet, save_checkpoint
from slimnet.cli import main as cli
from slimnet.config import ConfigError, load_config
from slimnet.errors import TraceError
from slimnet.export import check_export, load_child, save_child
from slimnet.trace.sources import adapt_input_conv, build_source

ARCH = dict(num_classes=10, in_channels=1, input_size=16, min_width=0.35)
TINY = "helpers:tiny_cnn"


def grey(n=4, size=16, seed=0):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_grey_input_conv_sums_the_rgb_weights():
    torch.manual_seed(0)
    rgb = build_source("torchvision:resnet18", 10, 3)
    torch.manual_seed(0)
    one = build_source("torchvision:resnet18", 10, 1)
    assert one.conv1.in_channels == 1
    x = grey(2, 32)
    with torch.no_grad():    # a grey image is R = G = B: the adapted model computes the same outputs
        assert (rgb(x.expand(-1, 3, -1, -1)) - one(x)).abs().max() < 1e-5
    two = build_source(TINY, 10, 3)
    adapt_input_conv(two, 2)
    assert two.stem[0].weight.shape[1] == 2


def test_factory_functions_and_their_errors():
    """A ``**kwargs`` factory (torchvision's own builders) gets num_classes but not in_channels (its
    first conv is adapted instead); wrong arguments and ignored classes are named."""
    net = slimnet.build("torchvision.models:resnet18", **ARCH)
    assert net.get_submodule("conv1").in_channels == 1 and net.get_submodule("fc").out_features == 10
    with pytest.raises(TraceError, match=r"helpers:tiny_cnn\(num_classes=10, in_channels=1, depth=3\) failed: .*depth"):
        slimnet.build(TINY, **ARCH, depth=3)
    with pytest.raises(TraceError, match="gives 7 outputs but the data has 10 classes: make the model take num_classes"):
        slimnet.build("helpers:seven_classes", **ARCH)


@pytest.mark.parametrize("name, message", [
    ("torchvision:resnet19", "did you mean resnet18"),
    ("helpers:no_such_fn", "module 'helpers' has no 'no_such_fn'"),
    ("no_such_package.models:net", "cannot import module 'no_such_package.models'"),
    ("helpers:not_a_model", "returned a dict, not a torch.nn.Module"),
    ("helpers:ROOT", "non-callable 'ROOT'"),
])
def test_bad_model_sources_say_what_is_wrong(name, message):
    with pytest.raises(TraceError, match=message):
        slimnet.build(name, **ARCH)


def test_timm_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)      # import timm raises ImportError
    with pytest.raises(TraceError, match="needs timm, which is not installed: pip install timm"):
        slimnet.build("timm:resnet18", **ARCH)


def test_function_models_get_classes_and_channels_and_rebuild_from_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = slimnet.build(TINY, **ARCH, width=24)          # model kwargs go to the function
    assert net.space.model == TINY and net.arch["width"] == 24
    assert net.get_submodule("stem.0").in_channels == 1 and net.fc.out_features == 10
    assert net.calibrated_configs() == []        # random init: no statistics pass for calibrated ones
    x = grey()
    slimnet.calibrate_bn(net, net.space.uniform(0.5), x)
    save_checkpoint(tmp_path / "net.pt", net)
    again, _ = load_supernet(tmp_path / "net.pt")
    again.set_width(0.5)
    net.set_width(0.5)
    assert torch.equal(again.eval()(x), net.eval()(x))


def test_children_export_save_load_and_train_alone(tmp_path):
    torch.manual_seed(0)
    net = slimnet.build("torchvision:resnet18", **ARCH)
    cfg = net.space.uniform(0.5)
    x = grey(8)
    slimnet.calibrate_bn(net, cfg, x)
    child = slimnet.export(net, cfg)
    assert child.is_child and check_export(net, child, cfg, x) <= 1e-5
    save_child(child, tmp_path / "child.pt")
    loaded = load_child(tmp_path / "child.pt")
    assert torch.equal(loaded(x), child(x))
    fresh = slimnet.build("torchvision:resnet18", **ARCH, channels=dict(cfg.channels))   # train.mode fixed
    assert fresh.is_child and fresh.child_config == cfg.space.config(dict(cfg.channels))
    assert sum(p.numel() for p in fresh.parameters()) == slimnet.profile(net.space, cfg).params
    assert torch.equal(fresh.bn1.running_var, torch.ones_like(fresh.bn1.running_var))   # fresh statistics
    with pytest.raises(RuntimeError, match="fixed channels"):
        fresh.set_channels(cfg)


@pytest.mark.parametrize("bn", ["shared", "switchable"])
def test_bn_kinds_start_from_the_models_statistics(bn):
    torch.manual_seed(0)
    model = build_source("torchvision:resnet18", 10, 1).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    net = slimnet.slimmable(model, 16, min_width=0.35, in_channels=1, bn=bn, switchable=[1.0, 0.5]).eval()
    x = grey()
    with torch.no_grad():
        assert (net(x) - model(x)).abs().max() < 1e-5       # max width: the model itself
        net.set_width(0.5)
        assert torch.isfinite(net(x)).all()
    if bn == "switchable":
        private = net.get_submodule("layer1.0.bn1").bns[1]       # the 0.5 config's BN: the model's leading channels
        assert torch.equal(private.running_mean, model.layer1[0].bn1.running_mean[:private.num_features])


def test_configs_accept_traced_names_and_refuse_what_cannot_work():
    base = dict(data={"name": "fashion_mnist"}, train={"mode": "universal"})
    exp = load_config(data={**base, "model": {"name": "torchvision:resnet18", "max_width": 1.0}})
    assert exp.model.name == "torchvision:resnet18"
    wide = load_config(data={**base, "model": {"name": "torchvision:resnet18", "max_width": 1.5}})
    assert wide.model.max_width == 1.5          # a supernet wider than the model (AutoSlim's 1.5x)
    with pytest.raises(ConfigError, match="can be wider, not narrower: use >= 1.0"):
        load_config(data={**base, "model": {"name": "torchvision:resnet18", "max_width": 0.75}})
    with pytest.raises(ConfigError, match="nor a model to trace"):
        load_config(data={**base, "model": {"name": "resnet_18"}})


@pytest.mark.fashion_mnist
def test_train_search_export_evaluate_a_traced_model(tmp_path):
    """The commands, end to end at smoke size, on the model a user names in the config."""
    out = tmp_path / "run"
    common = ["experiment.output_dir=" + str(out), f"model.name={TINY}", "data.input_size=16", "data.subset=256",
              "data.heldout_size=64", "data.test_subset=100", "train.epochs=1", "eval.calib_images=64",
              "eval.widths=[1.0,0.5]"]
    assert cli(["train", "--config", "configs/fashion_mnist/traced_resnet18.yaml", "--quiet", *common]) == 0
    ckpt = str(out / "best.pt")
    net, _ = load_supernet(ckpt)
    budget = int(slimnet.profile(net.space, net.space.uniform(0.75)).macs)
    assert cli(["autoslim", "--checkpoint", ckpt, "--macs", str(budget), "--search-images", "64",
                "--calib-images", "64", "--quiet", "--no-plot"]) == 0
    (found,) = out.glob("autoslim_*M.json")
    assert json.loads(found.read_text())["macs"] <= budget
    assert cli(["export", "--checkpoint", ckpt, "--channels", str(found), "--out", str(tmp_path / "child"),
                "--torchscript", "--calibrate-images", "64", "--no-latency"]) == 0
    report = tmp_path / "eval.json"
    assert cli(["evaluate", "--child", str(tmp_path / "child" / "child.pt"), "--data", "fashion_mnist",
                "--test-subset", "100", "--json", str(report)]) == 0
    (row,) = json.loads(report.read_text())["results"]
    assert row["macs"] == json.loads(found.read_text())["macs"]


def test_a_wider_named_supernet_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = slimnet.build(TINY, **{**ARCH, "max_width": 1.5})
    assert net.space.max()["stem.0"] == 24 and net.space.uniform(1.0)["stem.0"] == 16
    x = grey(8)
    slimnet.calibrate_bn(net, net.space.max(), x)
    save_checkpoint(tmp_path / "wide.pt", net)
    again, _ = load_supernet(tmp_path / "wide.pt")
    assert again.arch["max_width"] == 1.5
    assert torch.equal(again.eval()(x), net.eval()(x))


def test_a_child_holds_no_reference_to_its_supernet_and_copies_as_itself():
    import copy
    import gc
    import weakref

    from slimnet.checkpoint import model_spec
    net = slimnet.build(TINY, **ARCH)
    cfg = net.space.uniform(0.5)
    slimnet.calibrate_bn(net, cfg, grey(8))
    child = net.export(cfg)
    gone = weakref.ref(net)
    del net, cfg
    gc.collect()
    assert gone() is None                         # the supernet's memory is not kept by the child
    assert slimnet.profile(child.space, child.child_config).params == sum(p.numel() for p in child.parameters())
    twin = copy.deepcopy(child)                   # e.g. for an EMA copy: still a child with its config
    assert type(twin) is type(child) and model_spec(twin) == model_spec(child)
    x = grey()
    assert torch.equal(twin(x), child(x))


@pytest.mark.fashion_mnist
def test_model_reorder_sorts_a_fresh_runs_channels_and_is_refused_where_meaningless(tmp_path, capsys):
    common = [f"model.name={TINY}", "data.input_size=16", "data.subset=128", "data.heldout_size=64",
              "data.test_subset=50", "train.epochs=1", "eval.calib_images=32", "eval.widths=[1.0,0.5]"]
    # activation reads the calibration images even where evaluation does not calibrate (shared BN)
    no_calib = ["train.mode=switchable", "model.bn=shared", "train.widths=[1.0,0.5]", "eval.calibrate=false"]
    for criterion, extra in (("l1", []), ("activation", no_calib)):
        out = tmp_path / criterion
        assert cli(["train", "--config", "configs/fashion_mnist/traced_resnet18.yaml", "--quiet",
                    f"experiment.output_dir={out}", f"model.reorder={criterion}", *common, *extra]) == 0
        assert f"by {criterion}" in capsys.readouterr().out
    base = dict(data={"name": "fashion_mnist"}, model={"name": TINY, "reorder": "bn"})
    with pytest.raises(ConfigError, match="a fixed child has no narrower widths"):
        load_config(data={**base, "train": {"mode": "fixed", "widths": [1.0]}})
    with pytest.raises(ConfigError, match="switchable BN keeps a private BN"):
        load_config(data={**base, "train": {"mode": "switchable", "widths": [1.0, 0.5]}})
    with pytest.raises(ConfigError, match="model.reorder: 'taylor' is not one of bn, l1, activation"):
        load_config(data={**base, "model": {"name": TINY, "reorder": "taylor"}, "train": {"mode": "universal"}})
