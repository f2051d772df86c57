"""Channel spaces and channel configs: widths, rounding, random / search configs, JSON, errors."""
import json
import random

import pytest
import torch
import torchvision

import slimnet
from slimnet import ChannelConfig, ConfigError, make_divisible


def meta_build(name, **kwargs):
    with torch.device("meta"):
        return slimnet.build(name, **kwargs)


@pytest.fixture(scope="module")
def v2():
    return meta_build("mobilenet_v2", max_width=1.0, min_width=0.35)


# -- make_divisible --------------------------------------------------------------------------

@pytest.mark.parametrize("value, divisor, expected", [
    (32 * 1.0, 8, 32),
    (32 * 0.35, 8, 16),     # 11.2 -> nearest multiple 8 is 8, but that is > 10% below: 16
    (16 * 0.35, 8, 8),      # 5.6 -> at least one divisor
    (24 * 0.75, 8, 24),     # 18 -> 16 is 11% below 18: bumped to 24
    (96 * 0.75, 8, 72),
    (1280 * 1.4, 8, 1792),
    (20.0, 8, 24),          # exactly halfway rounds up
    (19.9, 8, 24),          # nearest is 16, but 16 < 0.9 * 19.9: bumped to 24
    (12, 3, 12),
    (13.5, 3, 15),          # halfway between 12 and 15: rounds up
    (1, 8, 8),
])
def test_make_divisible_cases(value, divisor, expected):
    assert make_divisible(value, divisor) == expected
    assert make_divisible(value, divisor) % divisor == 0
    assert make_divisible(value, divisor) >= 0.9 * value


def test_make_divisible_min_value():
    assert make_divisible(2, 8, min_value=16) == 16


# -- uniform configs equal torchvision ------------------------------------------------------

def _torchvision_v2_channels(width):
    """Output channels of every conv of torchvision's MobileNet v2, in order."""
    tv = torchvision.models.mobilenet_v2(width_mult=width)
    return [m.out_channels for m in tv.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.35])
def test_uniform_equals_torchvision_mobilenet_v2(v2, width):
    cfg = v2.space.uniform(width)
    child = meta_build("mobilenet_v2", max_width=1.0, min_width=0.35, channels=cfg)
    ours = [m.out_channels for m in child.modules() if isinstance(m, torch.nn.Conv2d)]
    assert ours == _torchvision_v2_channels(width)
    assert cfg["last"] == 1280


def test_uniform_wider_than_one_keeps_last_scaled():
    net = meta_build("mobilenet_v2", max_width=1.5, min_width=0.35)
    cfg = net.space.uniform(1.4)
    assert cfg["last"] == make_divisible(1280 * 1.4)
    assert cfg["stem"] == make_divisible(32 * 1.4)
    assert cfg["b2.expand"] == 6 * cfg["s1"]


@pytest.mark.parametrize("depth", [18, 50])
def test_uniform_resnet_is_torchvision_at_one(depth):
    net = meta_build(f"resnet{depth}")
    child = meta_build(f"resnet{depth}", channels=net.space.uniform(1.0))
    tv = getattr(torchvision.models, f"resnet{depth}")()
    ours = sorted(m.out_channels for m in child.modules() if isinstance(m, torch.nn.Conv2d))
    theirs = sorted(m.out_channels for m in tv.modules() if isinstance(m, torch.nn.Conv2d))
    assert ours == theirs


def test_max_min_and_widths(v2):
    space = v2.space
    assert space.max() == space.uniform(1.0)
    assert space.min() == space.uniform(0.35)
    assert space.min().is_min() and not space.max().is_min()
    assert space.max_width == 1.0 and space.min_width == 0.35
    assert len(space) == len(space.names) == len(list(space))


# -- random configs ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(slimnet.MODELS))
def test_random_configs_in_range_and_divisible(name):
    net = meta_build(name, max_width=1.0, min_width=0.25, num_classes=10, input_size=32)
    rng = random.Random(123)
    for _ in range(20):
        cfg = net.space.random(rng)
        for g in net.space:
            assert g.min <= cfg[g.name] <= g.max, g.name
            assert cfg[g.name] % g.divisor == 0 or cfg[g.name] in (g.min, g.max), g.name


def test_random_is_deterministic_with_seed(v2):
    a = [v2.space.random(random.Random(7)) for _ in range(3)]
    b = [v2.space.random(random.Random(7)) for _ in range(3)]
    assert a == b
    rng1, rng2 = random.Random(1), random.Random(1)
    assert [v2.space.random(rng1) for _ in range(5)] == [v2.space.random(rng2) for _ in range(5)]
    rng = random.Random(1)
    assert len({v2.space.random(rng).key for _ in range(10)}) > 1


def test_random_spreads_over_every_group(v2):
    """Every group, the inverted-residual hidden (expand) groups included, takes several values
    across random configs, not only its maximum."""
    rng = random.Random(0)
    seen = {n: set() for n in v2.space.names}
    for _ in range(60):
        cfg = v2.space.random(rng)
        for n in seen:
            seen[n].add(cfg[n])
    for n, values in seen.items():
        if v2.space[n].min < v2.space[n].max:
            assert len(values) >= 2, (n, values)
    expand = [n for n in seen if n.endswith(".expand")]
    assert expand
    for n in expand:
        assert min(seen[n]) < v2.space[n].max, n


# -- slim candidates -------------------------------------------------------------------------

def test_slim_candidates_remove_one_step_in_one_group(v2):
    space = v2.space
    cfg = space.uniform(0.75)
    cands = space.slim_candidates(cfg)
    assert cands
    for group, cand in cands:
        diff = {n for n in space.names if cand[n] != cfg[n]}
        assert diff == {group}
        assert cfg[group] - cand[group] == min(space.step(group), cfg[group] - space[group].min)
        assert cand[group] >= space[group].min
    # only groups already at their minimum give no candidate
    assert {g for g, _ in cands} == {n for n in space.names if cfg[n] > space[n].min}
    assert space.slim_candidates(space.min()) == []


def test_slim_candidates_reach_the_min_config(v2):
    """A group less than one step above its min steps to its min, so repeated slimming always
    ends at the min config (a search can meet any budget down to the min's MACs)."""
    space = v2.space
    near = {n: min(space[n].max, space[n].min + space[n].divisor) for n in space.names}
    cfg = space.config(near)
    short = [n for n in space.names if 0 < cfg[n] - space[n].min < space.step(n)]
    assert short, "the test needs groups less than one step above their min"
    for group, cand in space.slim_candidates(cfg):
        assert cand[group] == max(cfg[group] - space.step(group), space[group].min)
    while cands := space.slim_candidates(cfg):
        cfg = cands[0][1]
    assert cfg == space.min()


def test_step_is_a_fraction_of_max_rounded_to_divisor(v2):
    space = v2.space
    assert space.step("last") == 104           # 1280 / 12 = 106.7 -> 104
    assert space.step("stem") == 8             # at least one divisor
    for n in space.names:
        assert space.step(n) % space[n].divisor == 0


# -- config objects --------------------------------------------------------------------------

def test_config_is_hashable_immutable_and_compared_by_value(v2):
    a, b = v2.space.uniform(0.5), v2.space.config(dict(v2.space.uniform(0.5)))
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert len({a, b}) == 1
    c = a.replace(stem=24)
    assert c != a and c["stem"] == 24 and a["stem"] == 16
    assert v2.space.config(a) is a
    with pytest.raises(TypeError):
        a["stem"] = 8  # noqa


def test_config_accepts_integral_floats(v2):
    cfg = v2.space.config({**v2.space.max().channels, "stem": 16.0})
    assert cfg["stem"] == 16 and isinstance(cfg["stem"], int)


# -- JSON ------------------------------------------------------------------------------------

def test_json_round_trip(tmp_path):
    net = meta_build("mobilenet_v2", num_classes=10, input_size=32, max_width=1.0, min_width=0.35)
    cfg = net.space.random(random.Random(3))
    path = tmp_path / "cfg.json"
    cfg.save(path)
    data = json.loads(path.read_text())
    assert data["model"] == "mobilenet_v2"
    assert data["input_size"] == 32 and data["num_classes"] == 10
    assert data["channels"] == dict(cfg.channels)
    cost = slimnet.profile(net.space, cfg)
    assert data["macs"] == cost.macs and data["params"] == cost.params
    assert net.space.load(path) == cfg
    # a fresh model of the same architecture reads it too
    other = meta_build("mobilenet_v2", num_classes=10, input_size=32, max_width=1.0, min_width=0.35)
    assert other.space.load(path) == cfg


def test_hand_written_json_minimal(tmp_path, v2):
    path = tmp_path / "hand.json"
    path.write_text(json.dumps({"channels": dict(v2.space.uniform(0.5))}))
    assert v2.space.load(path) == v2.space.uniform(0.5)


# -- error messages --------------------------------------------------------------------------

def test_error_unknown_group_suggests_close_match(v2):
    channels = {**v2.space.max().channels}
    channels["stemm"] = channels.pop("stem")
    with pytest.raises(ConfigError, match=r"unknown channel group 'stemm'.*did you mean 'stem'"):
        v2.space.config(channels)
    with pytest.raises(KeyError, match="did you mean"):
        v2.space["b2.expnd"]


def test_error_missing_group(v2):
    channels = dict(v2.space.max().channels)
    del channels["last"]
    with pytest.raises(ConfigError, match=r"missing 1 group\(s\).*'last'"):
        v2.space.config(channels)


def test_error_count_above_max(v2):
    with pytest.raises(ConfigError, match=r"'stem': 40 channels is above the supernet's maximum 32"):
        v2.space.max().replace(stem=40)


@pytest.mark.parametrize("bad", [0, -8])
def test_error_count_below_one(v2, bad):
    with pytest.raises(ConfigError, match=r"'stem': channel count must be >= 1"):
        v2.space.max().replace(stem=bad)


@pytest.mark.parametrize("bad", [16.5, "16", True, None])
def test_error_non_integer_count(v2, bad):
    with pytest.raises(ConfigError, match=r"'stem': channel count must be an integer"):
        v2.space.max().replace(stem=bad)


def test_error_file_for_another_model(tmp_path, v2):
    other = meta_build("mobilenet_v1")
    path = tmp_path / "v1.json"
    other.space.max().save(path)
    with pytest.raises(ConfigError, match=r"made for model 'mobilenet_v1', not 'mobilenet_v2'"):
        v2.space.load(path)


def test_error_file_for_another_architecture(tmp_path):
    a = meta_build("mobilenet_v2", num_classes=10, input_size=32, max_width=1.0, min_width=0.35)
    b = meta_build("mobilenet_v2", num_classes=100, input_size=32, max_width=1.0, min_width=0.35)
    path = tmp_path / "a.json"
    a.space.max().save(path)
    with pytest.raises(ConfigError, match=r"num_classes=10.*num_classes=100"):
        b.space.load(path)


def test_error_invalid_json(tmp_path, v2):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        v2.space.load(path)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="'channels' mapping"):
        v2.space.load(path)


def test_error_width_above_max_and_below_min(v2):
    with pytest.raises(ConfigError, match=r"width 1.5 is wider.*max_width=1.0.*max_width >= 1.5"):
        v2.space.uniform(1.5)
    with pytest.raises(ConfigError, match=r"width 0.2 is narrower.*min_width=0.35.*min_width <= 0.2"):
        v2.space.uniform(0.2)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="width must be a positive number"):
            v2.space.uniform(bad)


def test_error_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'mobilenet_v3'.*mobilenet_v1, mobilenet_v2.*resnet18"):
        slimnet.build("mobilenet_v3")


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=0), "num_classes must be a positive integer"),
    (dict(num_classes=2.5), "num_classes must be a positive integer"),
    (dict(num_classes=True), "num_classes must be a positive integer"),
    (dict(in_channels=0), "in_channels must be a positive integer"),
    (dict(input_size=-1), "input_size must be a positive integer"),
    (dict(max_width=0), "max_width must be positive"),
    (dict(max_width=1.0, min_width=1.5), r"min_width must be in \(0, max_width=1.0\]"),
    (dict(bn="batch"), "bn must be one of"),
    (dict(bn="switchable"), "bn='switchable' needs `switchable`"),
])
def test_error_bad_build_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        meta_build("mobilenet_v2", **kwargs)


def test_error_registry_fixed_arguments():
    with pytest.raises(ValueError, match="resnet50 fixes"):
        slimnet.build("resnet50", depth=18)
    with pytest.raises(ValueError, match="ResNet depth must be one of"):
        slimnet.models.ResNet(depth=19)
    with pytest.raises(ValueError, match="groups must be one of"):
        slimnet.models.ShuffleNetV1(groups=5)


def test_error_duplicate_switchable_config():
    with pytest.raises(ValueError, match="duplicate"):
        meta_build("mobilenet_v2", bn="switchable", switchable=[0.5, 0.5], min_width=0.35)


def test_config_of_another_space_is_revalidated():
    a = meta_build("mobilenet_v2", max_width=1.0, min_width=0.35)
    b = meta_build("mobilenet_v2", max_width=0.5, min_width=0.35)
    assert b.space.config(a.space.uniform(0.5)) == b.space.uniform(0.5)
    with pytest.raises(ConfigError, match="above the supernet's maximum"):
        b.space.config(a.space.max())
    assert isinstance(b.space.config(a.space.uniform(0.5)), ChannelConfig)


def test_shufflenet_counts_must_split_into_its_groups():
    net = slimnet.build("shufflenet_v1", num_classes=10, input_size=32)
    cfg = net.space.uniform(0.5)
    assert all(c % 3 == 0 for c in cfg.values())
    with pytest.raises(ConfigError, match=r"group 'b1.mid': 31 channels is not a multiple of 3 .shufflenet_v1 "
                                          r"splits it into 3 equal groups."):
        cfg.replace(**{"b1.mid": 31})
    for _, cand in net.space.slim_candidates(net.space.max()):    # search steps keep multiples of 3
        assert all(c % 3 == 0 for c in cand.values())
