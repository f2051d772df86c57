"""Candidate scoring: prefix reuse over the model's declared stages, BN modes, per-candidate
statistics through the BN collector, refused models, rank correlation."""
import warnings

import pytest
import torch
from search_common import ARCH

import slimnet
from slimnet.calibrate import calibrate_bn
from slimnet.search import CandidateScorer, SearchError, greedy_slim, rank_correlation

pytestmark = pytest.mark.fashion_mnist


@pytest.mark.parametrize("bn", ["batch", "recalibrate"])
@pytest.mark.parametrize("model", ["resnet20", "mobilenet_v2"])
def test_prefix_reuse_scores_equal_full_forward(model, bn, search_net, search_data):
    _, _, hx, hy = search_data
    if model == "resnet20":
        net = search_net
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


def test_candidate_statistics_equal_calibrate_bn(search_net, search_data):
    _, _, hx, hy = search_data
    net = search_net
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


def test_switchable_and_child_are_refused(search_data):
    _, _, hx, hy = search_data
    s = slimnet.build("resnet20", **ARCH, max_width=0.5, bn="switchable", switchable=[0.5, 0.25])
    with pytest.raises(SearchError, match="universally slimmable"):
        greedy_slim(s, hx, hy, flops=[5e6])
    child = slimnet.build("resnet20", **ARCH, max_width=0.5, channels=s.space.uniform(0.25))
    with pytest.raises(SearchError, match="supernet"):
        CandidateScorer(child, hx, hy)
    with pytest.raises(SearchError, match="bn must be one of"):
        CandidateScorer(slimnet.build("resnet20", **ARCH, max_width=0.5), hx, hy, bn="nope")


def test_rank_correlation():
    rho, tau = rank_correlation([1, 2, 3, 4], [10, 20, 30, 40])
    assert rho == pytest.approx(1) and tau == pytest.approx(1)
    rho, tau = rank_correlation([1, 2, 3, 4], [4, 3, 2, 1])
    assert rho == pytest.approx(-1) and tau == pytest.approx(-1)
    rho, tau = rank_correlation([1, 2, 2, 3], [1, 2, 3, 4])
    assert 0.9 < rho < 1 and 0.8 < tau < 1


def test_calibrate_bn_accepts_a_bare_tensor_and_a_list_of_tensors(search_net, search_data):
    _, _, hx, _ = search_data
    net = search_net
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


# -- the model's declared stages ---------------------------------------------------------------

def test_scorer_asks_the_model_for_its_stages(search_net, search_data):
    _, _, hx, hy = search_data
    sc = CandidateScorer(search_net, hx[:16], hy[:16], batch_size=16)
    assert sc.stages[:-1] == search_net.trunk() and len(sc.stages) == len(search_net.trunk()) + 1


def test_a_model_without_stages_is_searched_with_a_loud_warning(search_net, search_data):
    """A model that declares no stages: a warning naming its class and what is missing, then a
    full forward per candidate with the same scores."""
    _, _, hx, hy = search_data

    class NoStages(type(search_net)):
        trunk = slimnet.SlimNet.trunk

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))

    net = NoStages(**search_net.arch)
    net.load_state_dict(search_net.state_dict())
    with pytest.warns(UserWarning, match=r"NoStages declares no stages \(SlimNet.trunk\(\) and head\(\)"):
        sc = CandidateScorer(net, hx[:24], hy[:24], batch_size=24)
    assert sc.stages == [net]
    ref = CandidateScorer(search_net, hx[:24], hy[:24], batch_size=24)
    cur = net.space.max()
    cands = [c for _, c in net.space.slim_candidates(cur)][:4]
    for a, b in zip(sc.score(cur, cands), ref.score(cur, cands)):
        assert a.correct == b.correct and a.loss == pytest.approx(b.loss, rel=1e-5, abs=1e-4)


def test_stages_that_do_not_compose_to_forward_are_not_reused(search_net, search_data):
    _, _, hx, hy = search_data

    class Doubled(type(search_net)):
        def forward(self, x):
            return 2 * super().forward(x)

    net = Doubled(**search_net.arch)
    net.load_state_dict(search_net.state_dict())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sc = CandidateScorer(net, hx[:8], hy[:8], batch_size=8)
    assert sc.stages == [net]
    assert any("Doubled: forward is not the composition of its stages" in str(x.message) for x in w)
