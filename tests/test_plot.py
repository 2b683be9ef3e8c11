"""ufm.plot: every drawing function takes an Axes, draws what its arguments say, returns the Axes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ufm import plot  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_collapse_scaling_draws_the_points_and_the_fitted_power_law(ax):
    lam = np.array([1e-3, 1e-2, 1e-1])
    t = 5.0 * lam ** -1.0
    out = plot.collapse_scaling(lam, t, ax=ax, slope=-1.0, intercept=np.log(5.0), title="x")
    assert out is ax
    points, fit = ax.get_lines()
    np.testing.assert_allclose(points.get_ydata(), t)
    np.testing.assert_allclose(fit.get_ydata(), t, rtol=1e-12)       # the line is exp(c)·λ^s
    assert ax.get_xscale() == ax.get_yscale() == "log" and "slope -1.00" in fit.get_label()


def test_collapse_scaling_without_a_fit_draws_only_the_points(ax):
    plot.collapse_scaling([1e-3, 1e-2], [10.0, 1.0], ax=ax)
    assert len(ax.get_lines()) == 1


def test_width_curves_mark_the_etf_width(ax):
    out = plot.width_curves([2, 4, 8], [0.3, 0.5, 0.6], [1.0, 0.2, 0.0], ax=ax, K=9)
    assert out is ax
    peak, etf, marker = ax.get_lines()
    assert list(peak.get_xdata()) == [2, 4, 8] and list(etf.get_ydata()) == [1.0, 0.2, 0.0]
    assert list(marker.get_xdata()) == [8, 8]                          # d = K − 1
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "8"]
