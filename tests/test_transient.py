"""Structure before collapse: the coupled UFM's semantic transient on a 3×3 factorial problem.

The setting of the README's results: K = N = 9, Θ = I + AᵀA, λ_W = λ_H = 1e-3, init 1e-3, d = 32. The semantic gap
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
    coupled = ufm.UFM(p, lambda_W=1e-3, lambda_H=1e-3, coupling=p.coupling("attribute", 1.0))
    standard = coupled.replace(coupling=None)
    out = []
    for seed in SEEDS:
        x0 = coupled.init(32, scale=1e-3, seed=seed)
        # dopri5, the method the measured values below come from (the default "auto" hands the
        # late, stiff stretch to RODAS4, whose LU solves leave the standard run's gap at ~1e-12)
        out.append((ufm.solve(coupled, x0, T, method="dopri5"), ufm.solve(standard, x0, T, method="dopri5")))
    return out


def test_coupled_gap_rises_above_half_then_collapses(runs):
    """Measured over the five seeds: peak 0.7492 … 0.7497 (the width-32 flow forgets its
    init), |gap| at t = 1e5 below 1.5e-15 and the ETF distance 6e-10 … 2.8e-9."""
    peaks = []
    for c, _ in runs:
        gap = c.metric("semantic_gap")
        peaks.append(gap[T <= 1000].max())
        assert peaks[-1] > 0.5
        assert abs(gap[-1]) < 1e-13                  # collapsed to the ETF value 0 (round-off)
        assert c.metric("etf_distance")[-1] < 1e-8  # the end point is the simplex ETF
    assert max(peaks) - min(peaks) < 5e-3            # seed-independent (spread measured 4.6e-4)


def test_standard_ufm_shows_no_semantic_gap(runs):
    """The standard UFM's |gap| stays at the init-noise level (measured at most 0.088, against
    the coupled peak 0.75) and ends at the ETF value 0 as well."""
    for _, s in runs:
        gap = s.metric("semantic_gap")
        assert np.abs(gap).max() < 0.15
        assert abs(gap[-1]) < 1e-13 and s.metric("etf_distance")[-1] < 1e-12   # measured 3e-17, 2.7e-14


def test_transient_summary_orders_peak_before_collapse(runs):
    """Measured: t_peak 63 … 200, t_collapse 5369 … 5884 (spread 1.10×, set by λ = 1e-3)."""
    collapse = []
    for c, _ in runs:
        summary = c.transient_summary(threshold=0.02)
        assert summary.collapsed and summary.peak > 0.5
        assert 10.0 < summary.t_peak < 1e3 < summary.t_collapse < 3e4
        collapse.append(summary.t_collapse)
    assert max(collapse) / min(collapse) < 1.3
