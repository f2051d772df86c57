"""How well one way of scoring candidates ranks them against another (bench/bench_search.py)."""
from __future__ import annotations

import math
from typing import Sequence


def _ranks(v: Sequence[float]) -> list[float]:
    """Ranks from 0, ties getting their average rank."""
    n = len(v)
    order = sorted(range(n), key=lambda i: v[i])
    r = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def _kendall_tau_b(a: Sequence[float], b: Sequence[float]) -> float:
    conc = disc = ta = tb = 0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ta) * (conc + disc + tb))
    return (conc - disc) / denom if denom else float("nan")


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(Spearman rho, Kendall tau-b) of two score lists (ties get average ranks / tau-b)."""
    n = len(a)
    if n < 2:
        return float("nan"), float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.sqrt(sum((x - ma) ** 2 for x in ra))
    vb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    rho = cov / (va * vb) if va and vb else float("nan")
    return rho, _kendall_tau_b(a, b)
