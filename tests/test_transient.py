"""Structure before collapse: the coupled UFM's semantic transient on a 3×3 factorial problem.

DESIGN.md §2: K = N = 9, Θ = I + AᵀA, λ_W = λ_H = 1e-3, init 1e-3, d = 32. The semantic gap
(mean cosine of context pairs sharing an attribute minus pairs sharing none) rises, holds,
and collapses to the ETF value 0; the standard UFM from the same init shows no gap.
"""

import numpy as np
import pytest

import ufm

SEEDS = [0, 1, 2, 3, 4]
T = np.geomspace(1e-2, 1e5, 71)


@pytest.fixture(scope="module")
def runs():
    p = ufm.settings.factorial((3, 3))
    coupled = ufm.UFM(p, lambda_W=1e-3, lambda_H=1e-3, coupling=p.kernel("attribute", 1.0))
    standard = coupled.replace(coupling=None)
    out = []
    for seed in SEEDS:
        x0 = coupled.init(32, scale=1e-3, seed=seed)
        out.append((ufm.solve(coupled, x0, T), ufm.solve(standard, x0, T)))
    return out


def test_coupled_gap_rises_above_half_then_collapses(runs):
    for c, _ in runs:
        gap = c.metric("semantic_gap")
        assert gap[T <= 1000].max() > 0.5
        assert np.all(np.abs(gap[T >= 1e5 - 1]) < 0.02)
        assert c.metric("etf_distance")[-1] < 1e-3  # the end point is the simplex ETF


def test_standard_ufm_shows_no_semantic_gap(runs):
    for _, s in runs:
        assert np.abs(s.metric("semantic_gap")).max() < 0.15


def test_transient_summary_orders_peak_before_collapse(runs):
    for c, _ in runs:
        summary = c.transient_summary(threshold=0.02)
        assert summary.collapsed and summary.peak > 0.5
        assert 1.0 < summary.t_peak < 1e3 < summary.t_collapse < 1e5
