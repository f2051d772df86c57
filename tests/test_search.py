"""AutoSlim greedy search: budgets, trajectory, prefix reuse, BN scoring modes, resume, bad input."""
import json
import os
import warnings

import pytest
import torch
from helpers import sandwich_train
import torch.nn.functional as F

import slimnet
from slimnet.calibrate import calibrate_bn
from slimnet.cli import main
from slimnet.data import build_data
from slimnet.search import (Budget, CandidateScorer, SearchError, greedy_slim, rank_correlation,
                            write_outputs)

ARCH = dict(num_classes=10, in_channels=1, input_size=16)  # Fashion-MNIST shrunk to 16x16: fast tests


def fashion(n_train=256, n_heldout=160, seed=0):
    b = build_data("fashion_mnist", heldout_size=n_heldout, heldout_seed=seed, augment="none", subset=n_train)
    x = torch.stack([b.train[i][0] for i in range(len(b.train))])
    hx = torch.stack([b.heldout[i][0] for i in range(len(b.heldout))])
    shrink = lambda t: F.interpolate(t, size=16, mode="bilinear", antialias=True)  # noqa: E731
    return shrink(x), b.train.targets, shrink(hx), b.heldout.targets


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return fashion()


@pytest.fixture(scope="module")
def trained(data):
    torch.manual_seed(0)
    x, y, _, _ = data
    return sandwich_train(slimnet.build("resnet20", **ARCH, max_width=0.5), x, y)


def macs(net, cfg):
    return slimnet.profile(net.space, cfg).macs


def test_search_meets_every_budget_with_monotone_macs(trained, data, tmp_path):
    _, _, hx, hy = data
    net = trained
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
    # searched accuracy is not random: a trained net well above 10% chance
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


def test_params_budget_and_labels(trained, data):
    _, _, hx, hy = data
    p_max = slimnet.profile(trained.space).params
    r = greedy_slim(trained, hx[:64], hy[:64], params=[int(p_max * 0.8)], batch_size=64)
    cfg = r.config_for("params", int(p_max * 0.8))
    assert slimnet.profile(trained.space, cfg).params <= p_max * 0.8
    assert Budget("macs", 150_000_000).label == "autoslim_150M"
    assert Budget("macs", 1_500_000_000).label == "autoslim_1.5G"
    assert Budget("params", 2_000_000).label == "autoslim_params_2M"


@pytest.mark.parametrize("bn", ["batch", "recalibrate"])
@pytest.mark.parametrize("model", ["resnet20", "mobilenet_v2"])
def test_prefix_reuse_scores_equal_full_forward(model, bn, trained, data):
    _, _, hx, hy = data
    if model == "resnet20":
        net = trained
    else:
        torch.manual_seed(1)
        net = slimnet.build("mobilenet_v2", **ARCH, max_width=0.35, min_width=0.1)
    hx, hy = hx[:24], hy[:24]
    fast = CandidateScorer(net, hx, hy, bn=bn, calib_num=24, batch_size=16)
    slow = CandidateScorer(net, hx, hy, bn=bn, calib_num=24, batch_size=16, reuse_prefix=False)
    assert len(fast.stages) > 5 and len(slow.stages) == 1
    cur = net.space.max()
    cands = [c for _, c in net.space.slim_candidates(cur)]
    scores = []
    for sc in (fast, slow):
        if bn != "batch":
            sc.calibrate(cur, [cur], full=True)
            sc.calibrate(cur, cands)
        scores.append(sc.score(cur, cands))
        if bn != "batch":
            sc.drop([c.key for c in cands] + [cur.key])
    for a, b in zip(*scores):
        assert a.correct == b.correct and a.loss == pytest.approx(b.loss, rel=1e-5, abs=1e-4)
    assert fast.forwards < slow.forwards * len(fast.stages)     # the prefix was shared


def test_candidate_statistics_equal_calibrate_bn(trained, data):
    _, _, hx, hy = data
    net = trained
    sc = CandidateScorer(net, hx, hy, bn="recalibrate", calib_num=70, batch_size=32)
    cur = net.space.max()
    cands = [c for _, c in net.space.slim_candidates(cur)]
    sc.calibrate(cur, [cur], full=True)
    sc.calibrate(cur, cands)
    ours = {k: v.clone() for k, v in net.state_dict().items() if cands[-1].key in k}
    calibrate_bn(net, cands[-1], [hx[i:i + 32] for i in range(0, 70, 32)], num_images=70)
    ref = {k: v for k, v in net.state_dict().items() if cands[-1].key in k}
    assert ours.keys() == ref.keys() and len(ours) > 10
    for k in ours:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-6, atol=1e-7)
    sc.drop([c.key for c in cands] + [cur.key])
    net.set_channels(net.space.max())


@pytest.mark.parametrize("bn", ["batch", "recalibrate"])
def test_resume_equals_uninterrupted(trained, data, tmp_path, bn):
    _, _, hx, hy = data
    hx, hy = hx[:64], hy[:64]
    net = trained
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


def test_prescreen_leaders_agree_on_trained_net(trained, data):
    _, _, hx, hy = data
    hx, hy = hx[:64], hy[:64]
    target = int(macs(trained, trained.space.max()) * 0.85)
    a = greedy_slim(trained, hx, hy, flops=[target], batch_size=32)
    b = greedy_slim(trained, hx, hy, flops=[target], batch_size=32, prescreen=32, leaders=len(trained.space))
    # with as many leaders as candidates, prescreening cannot change the choice
    assert [r["config"] for r in a.trajectory] == [r["config"] for r in b.trajectory]


def test_bad_budgets(trained, data):
    _, _, hx, hy = data
    net = trained
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


def test_switchable_and_child_are_refused(data):
    _, _, hx, hy = data
    s = slimnet.build("resnet20", **ARCH, max_width=0.5, bn="switchable", switchable=[0.5, 0.25])
    with pytest.raises(SearchError, match="universally slimmable"):
        greedy_slim(s, hx, hy, flops=[5e6])
    child = slimnet.build("resnet20", **ARCH, max_width=0.5, channels=s.space.uniform(0.25))
    with pytest.raises(SearchError, match="supernet"):
        CandidateScorer(child, hx, hy)
    with pytest.raises(SearchError, match="bn must be one of"):
        CandidateScorer(slimnet.build("resnet20", **ARCH, max_width=0.5), hx, hy, bn="nope")


def test_unparsable_budget_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["autoslim", "--checkpoint", "x.pt", "--flops", "lots"])
    assert e.value.code == 2
    assert "cannot parse 'lots'" in capsys.readouterr().err


def test_rank_correlation():
    rho, tau = rank_correlation([1, 2, 3, 4], [10, 20, 30, 40])
    assert rho == pytest.approx(1) and tau == pytest.approx(1)
    rho, tau = rank_correlation([1, 2, 3, 4], [4, 3, 2, 1])
    assert rho == pytest.approx(-1) and tau == pytest.approx(-1)
    rho, tau = rank_correlation([1, 2, 2, 3], [1, 2, 3, 4])
    assert 0.9 < rho < 1 and 0.8 < tau < 1


@pytest.fixture(scope="module")
def mbv2(data):
    """A MobileNet v2 supernet (25 channel groups: room for batched removals), barely trained."""
    torch.manual_seed(0)
    x, y, _, _ = data
    return sandwich_train(slimnet.build("mobilenet_v2", **ARCH, max_width=0.35, min_width=0.175), x, y, steps=5)


def test_batched_greedy_applies_several_removals_and_crosses_budgets_one_step(mbv2, data):
    _, _, hx, hy = data
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
def test_batched_greedy_resume_equals_uninterrupted(mbv2, data, tmp_path, bn):
    _, _, hx, hy = data
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


def test_calibrate_bn_accepts_a_bare_tensor_and_a_list_of_tensors(trained, data):
    _, _, hx, _ = data
    net = trained
    cfg = net.space.uniform(0.3)
    key = cfg.key

    def stats():
        return {k: v.clone() for k, v in net.state_dict().items() if key in k}

    assert calibrate_bn(net, cfg, hx[:96], num_images=96) == 96           # one tensor = one batch
    one = stats()
    assert one
    assert calibrate_bn(net, cfg, [hx[:96]], num_images=96) == 96        # the same as a list of one batch
    two = stats()
    assert calibrate_bn(net, cfg, hx, num_images=96) == 96               # truncated to num_images
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(one[k], stats()[k], rtol=1e-6, atol=1e-7)
    assert calibrate_bn(net, cfg, [hx[:48], hx[48:96]], num_images=96) == 96   # a list of tensors: batches
    with pytest.raises(ValueError, match="4-D"):
        calibrate_bn(net, cfg, hx[:8, 0, 0], num_images=8)
    net.set_channels(net.space.max())
    for m in net.modules():
        if hasattr(m, "drop_stats"):
            m.drop_stats(key)


def test_latency_budgets(trained, data, tmp_path, monkeypatch):
    """Latency budgets: each row's measured latency is kept, a budget gets the first trajectory
    config measured at or under it, and a resumed search re-measures nothing it already has.
    The clock is replaced by a deterministic stand-in (1 ms per million MACs of the child)."""
    import slimnet.search as search
    calls, batches_seen = [], []

    def fake_latency(model, shape, **kw):
        assert model.is_child and not model.training and shape[1:] == (1, 16, 16)
        calls.append(model.child_config.key)
        batches_seen.append(shape[0])
        return slimnet.profile(model.space, model.child_config).macs / 1e6

    monkeypatch.setattr(search, "measure_latency", fake_latency)
    _, _, hx, hy = data
    net = trained
    hi, lo = (slimnet.profile(net.space, c).macs / 1e6 for c in (net.space.max(), net.space.min()))
    targets = [lo + 0.7 * (hi - lo), lo + 0.4 * (hi - lo)]
    kw = dict(latency_ms=targets, latency_batch=2, batch_size=80, prescreen=None)
    state = tmp_path / "state.json"
    part = greedy_slim(net, hx, hy, state_path=state, max_steps=2, **kw)
    assert not part.finished
    measured = len(calls)
    assert len(set(calls)) == measured                 # cached: no config measured twice
    r = greedy_slim(net, hx, hy, state_path=state, resume=True, **kw)
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
        greedy_slim(net, hx, hy, latency_ms=[lo / 2], latency_batch=2, batch_size=80)
    with pytest.raises(SearchError, match="positive number of milliseconds"):
        greedy_slim(net, hx, hy, latency_ms=[0], batch_size=80)
