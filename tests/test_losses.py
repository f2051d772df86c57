import math

import pytest
import torch
import torch.nn.functional as F

from slimnet.losses import (
    alpha_divergence,
    cross_entropy,
    distill_loss,
    kl_divergence,
    soft_cross_entropy,
)

# A tiny example small enough to compute by hand (in python floats).
STUDENT = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
TEACHER = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def softmax_list(row, temperature=1.0):
    exps = [math.exp(x / temperature) for x in row]
    z = sum(exps)
    return [e / z for e in exps]


def hand_soft_ce(temperature):
    total = 0.0
    for s, t in zip(STUDENT, TEACHER):
        p, q = softmax_list(t, temperature), softmax_list(s, temperature)
        total += -sum(pi * math.log(qi) for pi, qi in zip(p, q))
    return total / len(STUDENT) * temperature ** 2


def hand_kl(temperature):
    total = 0.0
    for s, t in zip(STUDENT, TEACHER):
        p, q = softmax_list(t, temperature), softmax_list(s, temperature)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / len(STUDENT) * temperature ** 2


def hand_alpha(alpha, clip=float("inf")):
    """Per-sample max of D_{alpha} (both terms the same alpha here) then mean."""
    total = 0.0
    for s, t in zip(STUDENT, TEACHER):
        p, q = softmax_list(t), softmax_list(s)
        inner = sum(qi * (min((pi / qi) ** alpha, clip) - 1.0) for pi, qi in zip(p, q))
        total += inner / (alpha * (alpha - 1.0))
    return total / len(STUDENT)


def tensors():
    return torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_soft_ce_and_kl_match_hand_computation(temperature):
    s, t = tensors()
    assert soft_cross_entropy(s, t, temperature).item() == pytest.approx(hand_soft_ce(temperature), rel=1e-5)
    assert kl_divergence(s, t, temperature).item() == pytest.approx(hand_kl(temperature), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_soft_ce_equals_kl_plus_teacher_entropy(temperature):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g) * 3
    p = F.softmax(t / temperature, dim=1)
    entropy = -(p * p.log()).sum(1).mean() * temperature ** 2
    expected = kl_divergence(s, t, temperature) + entropy
    torch.testing.assert_close(soft_cross_entropy(s, t, temperature), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["soft_ce", "kl", "alpha"])
def test_no_gradient_into_teacher(kind):
    g = torch.Generator().manual_seed(1)
    student = torch.randn(4, 5, generator=g, requires_grad=True)
    teacher = torch.randn(4, 5, generator=g, requires_grad=True)
    distill_loss(kind, student, teacher, temperature=2.0).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_alpha_divergence_hand_computation_and_clip():
    s, t = tensors()
    for alpha in (-1.0, 0.5, 2.0):
        got = alpha_divergence(s, t, alpha_min=alpha, alpha_max=alpha, clip=1e9).item()
        assert got == pytest.approx(hand_alpha(alpha), rel=1e-5)
    # a small clip changes the value exactly as the min() in the formula says
    got = alpha_divergence(s, t, alpha_min=-1.0, alpha_max=-1.0, clip=1.5).item()
    assert got == pytest.approx(hand_alpha(-1.0, clip=1.5), rel=1e-5)
    assert got != pytest.approx(hand_alpha(-1.0), rel=1e-3)


def test_alpha_divergence_takes_the_larger_term_per_sample():
    s, t = tensors()
    per_alpha = []
    for alpha in (-1.0, 0.5):
        rows = [alpha_divergence(s[i:i + 1], t[i:i + 1], alpha, alpha, clip=5.0) for i in range(2)]
        per_alpha.append(torch.stack(rows))
    expected = torch.maximum(*per_alpha).mean()
    torch.testing.assert_close(alpha_divergence(s, t, -1.0, 0.5, clip=5.0), expected)


def test_alpha_divergence_nonnegative_and_zero_at_equality():
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        s, t = torch.randn(16, 10, generator=g) * 4, torch.randn(16, 10, generator=g) * 4
        assert alpha_divergence(s, t).item() >= 0.0
    x = torch.randn(16, 10, generator=g)
    assert abs(alpha_divergence(x, x.clone()).item()) < 1e-6
    assert abs(alpha_divergence(x, x.clone(), alpha_min=-2.0, alpha_max=3.0).item()) < 1e-6


def test_alpha_divergence_limits_are_kl():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    forward_kl = kl_divergence(s, t)
    reverse_kl = kl_divergence(t, s)
    # exactly at the limits
    torch.testing.assert_close(alpha_divergence(s, t, 1.0, 1.0), forward_kl)
    torch.testing.assert_close(alpha_divergence(s, t, 0.0, 0.0), reverse_kl)
    # the general formula approaches them continuously (just outside the switch tolerance)
    near_one = alpha_divergence(s, t, 1.0 - 2e-3, 1.0 - 2e-3, clip=1e9)
    near_zero = alpha_divergence(s, t, 2e-3, 2e-3, clip=1e9)
    torch.testing.assert_close(near_one, forward_kl, rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(near_zero, reverse_kl, rtol=1e-2, atol=1e-4)


def test_alpha_divergence_finite_gradients_for_confident_logits():
    student = torch.tensor([[60.0, -60.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-60.0, 60.0, 0.0], [100.0, -100.0, 0.0]])
    loss = alpha_divergence(student, teacher, alpha_min=-1.0, alpha_max=2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_cross_entropy_label_smoothing_and_float32():
    g = torch.Generator().manual_seed(4)
    logits, target = torch.randn(6, 7, generator=g), torch.randint(0, 7, (6,), generator=g)
    for smoothing in (0.0, 0.1):
        torch.testing.assert_close(cross_entropy(logits, target, smoothing),
                                   F.cross_entropy(logits, target, label_smoothing=smoothing))
    assert cross_entropy(logits.bfloat16(), target).dtype == torch.float32


@pytest.mark.parametrize("kind", ["soft_ce", "kl", "alpha"])
def test_half_precision_inputs_give_float32(kind):
    s, t = torch.randn(3, 4).half(), torch.randn(3, 4).bfloat16()
    out = distill_loss(kind, s, t)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_distill_loss_dispatch_and_errors():
    s, t = tensors()
    torch.testing.assert_close(distill_loss("kl", s, t, 2.0), kl_divergence(s, t, 2.0))
    torch.testing.assert_close(distill_loss("soft_ce", s, t), soft_cross_entropy(s, t))
    torch.testing.assert_close(distill_loss("alpha", s, t, clip=3.0), alpha_divergence(s, t, clip=3.0))
    torch.testing.assert_close(distill_loss("alpha", s, t, 2.0), alpha_divergence(s / 2, t / 2) * 4)
    with pytest.raises(ValueError, match="soft_ce, kl, alpha"):
        distill_loss("mse", s, t)
    with pytest.raises(ValueError, match="temperature"):
        kl_divergence(s, t, temperature=0.0)
    with pytest.raises(ValueError, match="batch, classes"):
        kl_divergence(s, t[:, :2])
