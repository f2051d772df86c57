"""AutoSlim greedy search: budgets, trajectory, resume, batched greedy, latency (an injected
clock), options (one dataclass for the signature, the fingerprint and the CLI), outputs, and a
second strategy built on the shared SearchRun."""
import json
import os
import warnings

import pytest
import torch
from helpers import sandwich_train
from search_common import ARCH, macs

import slimnet
from slimnet.cli import main
from slimnet.search import Budget, ChildLatency, SearchError, greedy_slim, write_outputs

pytestmark = pytest.mark.fashion_mnist


def test_search_meets_every_budget_with_monotone_macs(search_net, search_data, tmp_path):
    _, _, hx, hy = search_data
    net = search_net
    full = macs(net, net.space.max())
    targets = [int(full * 0.9), int(full * 0.75), int(full * 0.6)]
    stats_before = net.calibrated_configs()
    r = greedy_slim(net, hx, hy, flops=targets, batch_size=64)
    assert r.finished
    traj = r.trajectory
    assert traj[0]["step"] == 0 and traj[0]["config"] == dict(net.space.max().channels)
    assert all(a["macs"] > b["macs"] for a, b in zip(traj, traj[1:]))          # monotone MACs
    assert all(0 <= row["top1"] <= 100 for row in traj)
    prev = None
    for t in sorted(targets, reverse=True):
        cfg = r.config_for("macs", t)
        assert cfg is not None and macs(net, cfg) <= t
        if prev is not None:
            assert macs(net, cfg) <= prev
        prev = macs(net, cfg)
        # the recorded config is the first one of the trajectory under the budget
        first = next(row for row in traj if row["macs"] <= t)
        assert first["config"] == dict(cfg.channels)
    assert traj[-1]["macs"] <= min(targets)
    assert net.calibrated_configs() == stats_before             # candidate statistics cleaned up
    assert net.active_config == net.space.max()
    # searched accuracy is not random: a search_net net well above 10% chance
    assert traj[0]["top1"] > 30
    paths = write_outputs(r, tmp_path)
    for t in targets:
        label = Budget("macs", t).label
        loaded = net.space.load(paths[label])
        assert loaded == r.configs[label]
        assert json.load(open(paths[label]))["macs"] == macs(net, loaded)
    lines = open(paths["trajectory_jsonl"]).read().splitlines()
    assert len(lines) == len(traj) and json.loads(lines[-1])["step"] == traj[-1]["step"]
    assert open(paths["trajectory_csv"]).readline().startswith("step,group,channels,macs,params,latency_ms,top1")
    assert os.path.getsize(paths["plot"]) > 1000


def test_params_budget_and_labels(search_net, search_data):
    _, _, hx, hy = search_data
    p_max = slimnet.profile(search_net.space).params
    r = greedy_slim(search_net, hx[:64], hy[:64], params=[int(p_max * 0.8)], batch_size=64)
    cfg = r.config_for("params", int(p_max * 0.8))
    assert slimnet.profile(search_net.space, cfg).params <= p_max * 0.8
    assert Budget("macs", 150_000_000).label == "autoslim_150M"
    assert Budget("macs", 1_500_000_000).label == "autoslim_1.5G"
    assert Budget("params", 2_000_000).label == "autoslim_params_2M"


@pytest.mark.parametrize("bn", ["batch", "recalibrate"])
def test_resume_equals_uninterrupted(search_net, search_data, tmp_path, bn):
    _, _, hx, hy = search_data
    hx, hy = hx[:64], hy[:64]
    net = search_net
    target = int(macs(net, net.space.max()) * 0.6)
    kw = dict(flops=[target], bn=bn, calib_num=32, batch_size=32, prescreen=32, leaders=2)
    whole = greedy_slim(net, hx, hy, **kw)
    assert len(whole.trajectory) >= 5
    state = tmp_path / "state.json"
    part = greedy_slim(net, hx, hy, state_path=state, max_steps=2, **kw)
    assert not part.finished and len(part.trajectory) == 3
    saved = json.load(open(state))
    assert len(saved["trajectory"]) == 3 and not saved["finished"]
    part2 = greedy_slim(net, hx, hy, state_path=state, resume=True, max_steps=1, **kw)
    assert len(part2.trajectory) == 4
    rest = greedy_slim(net, hx, hy, state_path=state, resume=True, **kw)
    strip = lambda t: [{k: v for k, v in row.items() if k != "elapsed_s"} for row in t]  # noqa: E731
    assert rest.finished
    assert strip(rest.trajectory) == strip(whole.trajectory)
    assert rest.configs == whole.configs
    # another search's settings are refused rather than silently mixed
    with pytest.raises(SearchError, match="other settings"):
        greedy_slim(net, hx, hy, state_path=state, resume=True, **{**kw, "leaders": 3})


def test_prescreen_leaders_agree_on_trained_net(search_net, search_data):
    _, _, hx, hy = search_data
    hx, hy = hx[:64], hy[:64]
    target = int(macs(search_net, search_net.space.max()) * 0.85)
    a = greedy_slim(search_net, hx, hy, flops=[target], batch_size=32)
    b = greedy_slim(search_net, hx, hy, flops=[target], batch_size=32, prescreen=32, leaders=len(search_net.space))
    # with as many leaders as candidates, prescreening cannot change the choice
    assert [r["config"] for r in a.trajectory] == [r["config"] for r in b.trajectory]


def test_bad_budgets(search_net, search_data):
    _, _, hx, hy = search_data
    net = search_net
    lo = macs(net, net.space.min())
    with pytest.raises(SearchError, match=f"min config has .*{lo:,}"):
        greedy_slim(net, hx, hy, flops=[lo - 1])
    with pytest.raises(SearchError, match="at least one budget"):
        greedy_slim(net, hx, hy)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = greedy_slim(net, hx[:32], hy[:32], flops=[macs(net, net.space.max()) * 2])
    assert any("above the max config" in str(x.message) for x in w)
    assert list(r.configs.values()) == [net.space.max()] and len(r.trajectory) == 1


def test_unparsable_budget_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["autoslim", "--checkpoint", "x.pt", "--flops", "lots"])
    assert e.value.code == 2
    assert "cannot parse 'lots'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mbv2(search_data):
    """A MobileNet v2 supernet (25 channel groups: room for batched removals), barely search_net."""
    torch.manual_seed(0)
    x, y, _, _ = search_data
    return sandwich_train(slimnet.build("mobilenet_v2", **ARCH, max_width=0.35, min_width=0.175), x, y, steps=5)


def test_batched_greedy_applies_several_removals_and_crosses_budgets_one_step(mbv2, search_data):
    _, _, hx, hy = search_data
    hx, hy = hx[:32], hy[:32]
    net = mbv2
    full = macs(net, net.space.max())
    targets = [int(full * 0.85), int(full * 0.7)]
    kw = dict(flops=targets, batch_size=32, prescreen=16, leaders=2)
    r = greedy_slim(net, hx, hy, removals="auto", removal_rate=0.3, **kw)
    traj = r.trajectory
    assert r.finished and all(a["macs"] > b["macs"] for a, b in zip(traj, traj[1:]))
    iters = [row["iteration"] for row in traj]
    assert iters == sorted(iters) and len(set(iters)) < len(traj)        # some iteration removed > 1 group
    for row in traj[1:]:
        prev = next(p for p in traj if p["step"] == row["step"] - 1)
        changed = [g for g in row["config"] if row["config"][g] != prev["config"][g]]
        assert changed == [row["group"]]                                  # one row per applied removal
        assert (row["top1"] is None) == (row["candidates"] == 0)          # first removal of an iteration: scored
        group_rows = [p for p in traj if p["iteration"] == row["iteration"]]
        assert len({p["group"] for p in group_rows}) == len(group_rows)   # distinct groups per iteration
    for t in targets:
        first = next(row for row in traj if row["macs"] <= t)
        assert first["config"] == dict(r.config_for("macs", t).channels)
        # a budget is crossed by an exact one-step iteration, whose recorded score is the full-set one
        assert sum(p["iteration"] == first["iteration"] for p in traj) == 1 and first["top1"] is not None
    one = greedy_slim(net, hx, hy, removals=1, **kw)
    assert len({row["iteration"] for row in one.trajectory}) == len(one.trajectory)
    assert len(set(iters)) < len(one.trajectory)
    with pytest.raises(SearchError, match="removals"):
        greedy_slim(net, hx, hy, removals=3, **kw)


@pytest.mark.parametrize("bn", ["batch", "recalibrate"])
def test_batched_greedy_resume_equals_uninterrupted(mbv2, search_data, tmp_path, bn):
    _, _, hx, hy = search_data
    hx, hy = hx[:32], hy[:32]
    net = mbv2
    stats_before = net.calibrated_configs()
    kw = dict(flops=[int(macs(net, net.space.max()) * 0.75)], bn=bn, calib_num=32, batch_size=32, prescreen=16,
              leaders=2, removals="auto", removal_rate=0.3)
    whole = greedy_slim(net, hx, hy, **kw)
    state = tmp_path / "state.json"
    part = greedy_slim(net, hx, hy, state_path=state, max_steps=2, **kw)
    assert not part.finished and part.trajectory[-1]["iteration"] == 2
    rest = greedy_slim(net, hx, hy, state_path=state, resume=True, **kw)
    strip = lambda t: [{k: v for k, v in row.items() if k != "elapsed_s"} for row in t]  # noqa: E731
    assert rest.finished and strip(rest.trajectory) == strip(whole.trajectory)
    assert net.calibrated_configs() == stats_before
    with pytest.raises(SearchError, match="other settings"):
        greedy_slim(net, hx, hy, state_path=state, resume=True, **{**kw, "removals": 1})


class FakeClock:
    """A deterministic stand-in for ``measure_latency``: 1 ms per million MACs of the child."""

    def __init__(self):
        self.calls, self.batches = [], []

    def __call__(self, model, shape, **kw):
        assert model.is_child and not model.training and shape[1:] == (1, 16, 16)
        self.calls.append(model.child_config.key)
        self.batches.append(shape[0])
        return slimnet.profile(model.space, model.child_config).macs / 1e6


def test_latency_budgets(search_net, search_data, tmp_path):
    """Latency budgets: each row's measured latency is kept, a budget gets the first trajectory
    config measured at or under it, and a resumed search re-measures nothing it already has.
    The clock is injected (``ChildLatency(measure=...)``)."""
    clock = FakeClock()
    calls, batches_seen = clock.calls, clock.batches

    def latency():   # a fresh cache per search, as the command makes
        return ChildLatency(search_net, 16, batch=2, measure=clock)

    _, _, hx, hy = search_data
    net = search_net
    hi, lo = (slimnet.profile(net.space, c).macs / 1e6 for c in (net.space.max(), net.space.min()))
    targets = [lo + 0.7 * (hi - lo), lo + 0.4 * (hi - lo)]
    kw = dict(latency_ms=targets, batch_size=80, prescreen=None)
    state = tmp_path / "state.json"
    part = greedy_slim(net, hx, hy, state_path=state, max_steps=2, latency=latency(), **kw)
    assert not part.finished
    measured = len(calls)
    assert len(set(calls)) == measured                 # cached: no config measured twice
    r = greedy_slim(net, hx, hy, state_path=state, resume=True, latency=latency(), **kw)
    assert r.finished
    rows = r.trajectory
    assert all(row["latency_ms"] == pytest.approx(row["macs"] / 1e6, abs=1e-3) for row in rows)
    assert set(calls) >= {net.space.config(row["config"]).key for row in rows}
    assert set(batches_seen) == {2}                    # latency_batch
    # the resumed search measured only configs it had not seen (min and max again: fresh cache)
    assert len(calls) - measured == len(rows) - len(part.trajectory) + 2
    for t in targets:
        b = Budget("latency", int(round(t * 1000)))
        assert b.label == f"autoslim_latency_{b.value / 1000:g}ms"
        first = next(row for row in rows if row["latency_us"] <= b.value)
        assert r.configs[b.label] == net.space.config(first["config"])
    with pytest.raises(SearchError, match="below the smallest config"):
        greedy_slim(net, hx, hy, latency_ms=[lo / 2], latency=latency(), batch_size=80)
    with pytest.raises(SearchError, match="positive number of milliseconds"):
        greedy_slim(net, hx, hy, latency_ms=[0], batch_size=80)


# -- options: one dataclass for the signature, the resume fingerprint and the command line -----

def test_options_object_keywords_and_command_line_agree(search_net, search_data, tmp_path):
    import argparse

    from slimnet.commands.autoslim import add_arguments
    from slimnet.search import GreedyOptions, options_from_args
    _, _, hx, hy = search_data
    hx, hy = hx[:48], hy[:48]
    target = int(macs(search_net, search_net.space.max()) * 0.8)
    opts = GreedyOptions(batch_size=24, prescreen=16, leaders=2, removals="1")
    assert opts.removals == 1                                   # the command line's "1" is exact greedy
    by_object = greedy_slim(search_net, hx, hy, opts, macs=[target], state_path=tmp_path / "a.json")
    by_keywords = greedy_slim(search_net, hx, hy, flops=[target], batch_size=24, prescreen=16, leaders=2, removals=1,
                              state_path=tmp_path / "b.json")
    strip = lambda t: [{k: v for k, v in row.items() if k != "elapsed_s"} for row in t]  # noqa: E731
    assert strip(by_object.trajectory) == strip(by_keywords.trajectory)
    settings = json.load(open(tmp_path / "a.json"))["settings"]
    assert settings == json.load(open(tmp_path / "b.json"))["settings"]
    assert {k: settings[k] for k in opts.fingerprint(0)} == opts.fingerprint(0)   # the state's fingerprint
    assert settings["removal_rate"] is None and settings["calib_images"] == 0
    # the command's flags are the dataclass's fields (with their defaults), --flops is --macs
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--flops", "1M", "--macs", "2M", "--removals-per-step", "1", "--prescreen", "0",
                         "--calib-images", "16", "--leaders", "2", "--batch-size", "24"])
    assert args.macs == [1_000_000, 2_000_000]
    assert options_from_args(GreedyOptions, args) == GreedyOptions(removals=1, prescreen=None, calib_num=16,
                                                                   leaders=2, batch_size=24)
    assert options_from_args(GreedyOptions, p.parse_args([])) == GreedyOptions()
    with pytest.raises(TypeError, match="unknown GreedyOptions option.*'leader'"):
        greedy_slim(search_net, hx, hy, flops=[target], leader=2)


def test_outputs_prefix_is_a_parameter(search_net, search_data, tmp_path):
    from slimnet.search import make_budgets, output_names
    _, _, hx, hy = search_data
    target = int(macs(search_net, search_net.space.max()) * 0.9)
    assert make_budgets(flops=[target]) == make_budgets(macs=[target]) == make_budgets([target])
    r = greedy_slim(search_net, hx[:32], hy[:32], macs=[target], batch_size=32)
    paths = write_outputs(r, tmp_path, plot=False, prefix="mine_")
    label = Budget("macs", target).label
    assert sorted(os.listdir(tmp_path)) == sorted(["mine_trajectory.jsonl", "mine_trajectory.csv",
                                                   f"mine_{Budget('macs', target).name}.json"])
    assert os.path.basename(paths[label]) == f"mine_{Budget('macs', target).name}.json"
    assert output_names(r.budgets, "mine_")[0] == os.path.basename(paths[label])
    assert output_names(r.budgets)[0] == f"{label}.json"            # the default prefix is the label's


# -- a second strategy is one class on the shared SearchRun ------------------------------------

def test_a_second_strategy_reuses_budgets_scoring_state_and_outputs(search_net, search_data, tmp_path):
    """A strategy that slims the first group above its minimum each round (no scoring of
    alternatives): budgets, rows, resumable state and outputs come from SearchRun."""
    from slimnet.search import SearchRun, make_budgets

    class FirstGroup(SearchRun):
        def iterate(self):
            cur = self.state.current
            cands = self.space.slim_candidates(cur)
            if not cands:
                return False
            group, cand = cands[0]
            score = self.scorer.score(cur, [cand])[0]
            self.add_row(cand, iteration=len(self.state.trajectory), group=group, score=score, candidates=1)
            return True

    _, _, hx, hy = search_data
    budgets = make_budgets(macs=[int(macs(search_net, search_net.space.max()) * 0.8)])
    state = tmp_path / "state.json"
    part = FirstGroup(search_net, hx[:32], hy[:32], budgets=budgets, state_path=state).run(max_steps=1)
    assert len(part.trajectory) == 2 and not part.finished
    rest = FirstGroup(search_net, hx[:32], hy[:32], budgets=budgets, state_path=state, resume=True).run()
    assert rest.finished and rest.trajectory[:2] == part.trajectory[:2]
    for prev, row in zip(rest.trajectory, rest.trajectory[1:]):     # the strategy's choice, row by row
        assert row["group"] == search_net.space.slim_candidates(search_net.space.config(prev["config"]))[0][0]
    assert rest.configs[budgets[0].label] == search_net.space.config(rest.trajectory[-1]["config"])
    assert os.path.exists(write_outputs(rest, tmp_path, plot=False)["trajectory_csv"])
    assert search_net.active_config == search_net.space.max()
