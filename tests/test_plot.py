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


def test_run_panels_draw_each_quantity_present_and_hide_the_rest():
    steps = np.array([0, 1, 10, 100])
    m = {"semantic_gap": np.array([0.1, 0.3, 0.2, 0.0]), "etf_distance": np.array([1.0, 0.8, 0.3, 0.1]),
         "norm_H": np.ones(4), "loss": np.array([2.0, 1.0, 0.5, 0.1])}
    axes = plot.run_panels(steps, m, title="run")
    try:
        shown = [ax.get_title() for ax in axes if ax.get_visible()]
        assert shown == ["semantic gap (centred)", "ETF distance", "rms norms", "loss"]
        np.testing.assert_array_equal(axes[1].get_lines()[0].get_ydata(), m["etf_distance"])
        assert axes[0].get_xscale() == "symlog" and axes[3].get_yscale() == "log"
        assert sum(ax.get_visible() for ax in axes) == 4 and axes[0].figure._suptitle.get_text() == "run"
    finally:
        plt.close(axes[0].figure)


def test_fit_panels_draw_observed_and_predicted_columns_and_refuse_too_few_axes(ax):
    steps = np.arange(5)
    obs = {"gap": np.linspace(0, 1, 5)[:, None], "rel": np.ones((5, 2))}
    pred = {"gap": np.linspace(0, 0.9, 5)[:, None], "rel": np.zeros((5, 2))}
    axes = plot.fit_panels(steps, obs, pred, {"gap": 0.9, "rel": -1.0}, columns={"rel": ["a", "b"]})
    try:
        dots, line = axes[0].get_lines()
        np.testing.assert_array_equal(line.get_ydata(), pred["gap"][:, 0])
        assert axes[0].get_title() == "gap  (R² 0.900)" and len(axes[1].get_lines()) == 4
        assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["a", "b"]
    finally:
        plt.close(axes[0].figure)
    with pytest.raises(ValueError, match="axes: expected at least 2"):
        plot.fit_panels(steps, obs, pred, {"gap": 0.9, "rel": -1.0}, np.array([ax]))


def test_the_house_style_is_colour_blind_safe_and_scoped():
    before = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    with plot.style():
        fig, ax = plt.subplots()
        (line,) = ax.plot([0, 1], [0, 1])
        assert line.get_color() == plot.OKABE_ITO[0]
        assert matplotlib.rcParams["pdf.fonttype"] == 42 and matplotlib.rcParams["svg.fonttype"] == "none"
        plt.close(fig)
    assert matplotlib.rcParams["axes.prop_cycle"].by_key()["color"] == before      # restored


@pytest.mark.parametrize("fmt, magic", [("pdf", b"%PDF"), ("svg", b"<?xml"), ("png", b"\x89PNG")])
def test_ufm_fit_writes_its_figure_in_the_asked_format(tmp_path, fmt, magic):
    import os
    from ufm.cli import main as cli_main
    run = os.path.join(os.path.dirname(__file__), "data", "real", "mlp_hierarchy_sgd.npz")
    assert cli_main(["fit", run, "--model", "standard", "--format", fmt, "--out-dir", str(tmp_path),
                     "--max-time", "5"]) == 0
    written = [p for p in tmp_path.iterdir() if p.suffix == "." + fmt]
    assert len(written) == 1 and written[0].read_bytes().startswith(magic)
    if fmt == "svg":                                    # text stays text in vector output
        assert b"<text" in written[0].read_bytes() or b"font-family" in written[0].read_bytes()


def test_the_run_job_refuses_an_unknown_figure_format_before_any_work():
    from ufm.experiments import structure_before_collapse as job
    with pytest.raises(ValueError, match="figure_format: expected one of"):
        job.run(job.load_config(), out="/nonexistent/never-created", figure_format="jpg")
