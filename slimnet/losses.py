"""Classification and distillation losses.

Slimmable training distils the largest sub-network (teacher) into the smaller
ones (students) in the same forward pass ("in-place distillation").  All losses
here therefore

* detach the teacher themselves, so a caller cannot accidentally push student
  gradients into the teacher's weights through the shared parameters, and
* compute in float32 (``.float()``), because softmax / log-softmax differences
  of bf16/fp16 logits lose most of their precision under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DISTILL_KINDS",
    "alpha_divergence",
    "cross_entropy",
    "distill_loss",
    "kl_divergence",
    "soft_cross_entropy",
]

DISTILL_KINDS = ("soft_ce", "kl", "alpha")

# |alpha| (or |alpha - 1|) below this uses the exact KL limit instead of the
# general formula, whose 1 / (alpha (alpha - 1)) prefactor is 0/0 there.
_ALPHA_LIMIT_TOL = 1e-3


def _check_pair(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(f"student and teacher logits must both be (batch, classes); got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy against class indices (or class probabilities), in float32."""
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy of the student against the teacher's soft labels.

    ``-(softmax(t/T) * log_softmax(s/T)).sum(1).mean() * T^2``.  This is the
    in-place distillation loss of slimmable/universally slimmable networks; it
    equals KL(p_t || p_s) plus the teacher entropy, which has no gradient w.r.t.
    the student, so both give the same student update.  The ``T^2`` factor keeps
    gradient magnitudes comparable across temperatures (Hinton et al., 2015).
    """
    _check_pair(student_logits, teacher_logits)
    _check_temperature(temperature)
    p_teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    return -(p_teacher * log_q).sum(dim=1).mean() * (temperature * temperature)


def kl_divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(p_teacher || p_student) averaged over the batch, times ``T^2``.

    Computed from log-probabilities on both sides so confident teachers (tiny
    probabilities) do not produce ``0 * log 0`` NaNs.
    """
    _check_pair(student_logits, teacher_logits)
    _check_temperature(temperature)
    log_p = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * (temperature * temperature)


def _alpha_divergence_per_sample(log_p: Tensor, log_q: Tensor, alpha: float, clip: float) -> Tensor:
    """Per-sample D_alpha(p || q) (Amari alpha-divergence, as used by AlphaNet).

        D_alpha(p || q) = 1 / (alpha (alpha - 1)) * sum_i q_i [ (p_i / q_i)^alpha - 1 ]

    alpha -> 1 gives KL(p || q) and alpha -> 0 gives KL(q || p); those limits are
    evaluated exactly.  Elsewhere the importance weight (p_i / q_i)^alpha is
    clamped to at most ``clip``: for alpha < 0 it is (q_i / p_i)^|alpha|, which
    explodes on classes the teacher rules out, and for alpha > 1 it explodes on
    classes the student rules out; that is the variance AlphaNet's clipping
    removes.  The clamp is applied in log space (before ``exp``) so a huge
    weight never becomes ``inf`` and the backward pass never sees ``0 * inf``.
    ``expm1`` keeps precision when alpha is close to (but not within the
    tolerance of) 0 or 1, where the bracket is tiny.
    """
    if abs(alpha - 1.0) < _ALPHA_LIMIT_TOL:
        return (log_p.exp() * (log_p - log_q)).sum(dim=1)
    if abs(alpha) < _ALPHA_LIMIT_TOL:
        return (log_q.exp() * (log_q - log_p)).sum(dim=1)
    log_weight = (alpha * (log_p - log_q)).clamp(max=math.log(clip))
    return (log_q.exp() * torch.expm1(log_weight)).sum(dim=1) / (alpha * (alpha - 1.0))


def alpha_divergence(student_logits: Tensor, teacher_logits: Tensor, alpha_min: float = -1.0,
                     alpha_max: float = 1.0, clip: float = 5.0) -> Tensor:
    """AlphaNet's adaptive alpha-divergence (Wang et al., ICML 2021).

    For each sample computes D_{alpha_min}(p || q) and D_{alpha_max}(p || q)
    between teacher ``p`` and student ``q`` and keeps the larger, then averages
    over the batch.  A negative alpha weights classes by (q/p)^|alpha| and so
    punishes the student for putting much more mass than the teacher on a class;
    alpha >= 1 weights by (p/q)^alpha and punishes putting much less.  KL alone
    only sees the second failure; taking the max per sample lets each example
    be corrected for whichever of the two it currently shows.
    The gradient flows through the selected term only (like the paper).
    """
    _check_pair(student_logits, teacher_logits)
    if alpha_min > alpha_max:
        raise ValueError(f"alpha_min ({alpha_min}) must be <= alpha_max ({alpha_max})")
    if not clip > 1.0:
        raise ValueError(f"clip must be > 1 (an upper bound on the importance weight), got {clip}")
    log_p = F.log_softmax(teacher_logits.detach().float(), dim=1)
    log_q = F.log_softmax(student_logits.float(), dim=1)
    d_min = _alpha_divergence_per_sample(log_p, log_q, alpha_min, clip)
    d_max = _alpha_divergence_per_sample(log_p, log_q, alpha_max, clip)
    return torch.maximum(d_min, d_max).mean()


def distill_loss(kind: str, student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                 **kw) -> Tensor:
    """Dispatch to a distillation loss by name (``"soft_ce"``, ``"kl"``, ``"alpha"``).

    ``kw`` is passed to the loss (``alpha_min``, ``alpha_max``, ``clip`` for
    ``"alpha"``).  For ``"alpha"`` a temperature other than 1 softens both logits
    and scales the result by ``T^2``, the same convention as the other kinds.
    """
    if kind == "soft_ce":
        return soft_cross_entropy(student_logits, teacher_logits, temperature, **kw)
    if kind == "kl":
        return kl_divergence(student_logits, teacher_logits, temperature, **kw)
    if kind == "alpha":
        _check_temperature(temperature)
        if temperature == 1.0:
            return alpha_divergence(student_logits, teacher_logits, **kw)
        scaled = alpha_divergence(student_logits.float() / temperature, teacher_logits.float() / temperature, **kw)
        return scaled * (temperature * temperature)
    raise ValueError(f"unknown distillation loss {kind!r}; valid kinds: {', '.join(DISTILL_KINDS)}")
