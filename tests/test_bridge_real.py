"""ufm.bridge on the shipped real run (tests/data/transformer_factorial_adamw.npz, see
tests/data/README.md): its Gram trajectory, the model comparison, the kernel predictions, and
the ``ufm inspect`` / ``ufm fit`` commands. No torch needed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import independent
import ufm.bridge as br
from ufm.cli import main as cli

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "transformer_factorial_adamw.npz")


@pytest.fixture(scope="module")
def run():
    return br.load(FIXTURE)


@pytest.fixture(scope="module")
def comparison(run):
    # an explicit linear time map: the documented one-parameter kernel rows (the optimiser-aware
    # default comparison of this AdamW run — power time map, decay fitted — is tested in
    # test_bridge_families.py)
    return br.compare(run, time="scale")


def test_fixture_is_small_and_complete(run):
    assert os.path.getsize(FIXTURE) < 1_000_000
    assert (run.N, run.K, run.d) == (16, 16, 32) and run.T >= 50
    assert run.meta["arch"] == "transformer" and run.meta["optimizer"] == "adamw"
    assert run.lr == pytest.approx(3e-3) and run.weight_decay == pytest.approx(5e-2)
    assert run.kernel.shape[0] >= 5 and run.kernel_steps[0] == 0 and run.loss[-1] < 1e-3


def test_trajectory_shows_the_semantic_transient(run):
    """What the shipped run shows: contexts that share an attribute first draw together — the
    semantic gap rises from ≈0.04 at initialisation to a peak above 0.12 within the first 30
    steps — and then the structure collapses: the gap falls below 0.02 within a few hundred steps
    and ends slightly negative, while the ETF distance falls to under half its initial value
    (the features approach the simplex ETF) and the effective rank of G_H rises towards N − 1."""
    tr = run.trajectory()
    gap = tr.metric("semantic_gap")
    etf = tr.metric("etf_distance")
    ts = tr.transient_summary()
    print(f"gap {gap[0]:.3f} -> peak {ts.peak:.3f} at step {ts.t_peak:g} -> {gap[-1]:.3f}; collapse at step "
          f"{ts.t_collapse:.0f}; ETF distance {etf[0]:.3f} -> {etf[-1]:.3f}")
    assert gap[0] < 0.06
    assert ts.peak > 0.12 and ts.peak > 2.5 * gap[0] and ts.t_peak <= 30
    assert ts.collapsed and 100 < ts.t_collapse < 1000
    assert gap[-1] < 0.0
    assert etf[-1] < 0.5 * etf[0] and np.argmin(etf) > np.argmax(gap)
    erank = tr.metric("effective_rank")
    assert erank[-1] > erank[0] and erank[-1] > 14
    # and the backbone's kernel is not lazy: its trace grows, its shape moves
    ks = run.kernel_summary()
    assert ks["trace_ratio"][-1] > 2 and ks["alignment_initial"][-1] < 0.95


def test_model_comparison_on_the_real_run(comparison):
    """R² of every family on the semantic gap and the ETF distance (printed; see the README for
    the numbers). Checks that do not depend on tuning: the coupled family nests the standard one
    (β → 0) so it fits at least as well; the measured-kernel coupled prediction — one parameter —
    captures the transient the attribute-kernel families miss, and beats the linear-features
    form with the same kernel: this AdamW transformer follows the coupled dynamics."""
    print(comparison.report())
    fits = comparison.fits
    for name, f in fits.items():
        assert np.isfinite(f.r2_["semantic_gap"]) and np.isfinite(f.r2_["etf_distance"]), name
    assert fits["coupled"].rss_ <= fits["standard"].rss_ * (1 + 1e-3)      # up to the optimiser's tolerance
    ntk_c, ntk_l = fits["coupled · NTK Θ(0)"], fits["linear-features · NTK Θ(0)"]
    assert ntk_c.k_ == 1 and list(ntk_c.params_) == ["time_scale"]
    assert ntk_c.r2_["semantic_gap"] > fits["coupled"].r2_["semantic_gap"]
    assert ntk_c.r2_["semantic_gap"] > ntk_l.r2_["semantic_gap"]
    assert ntk_c.r2_["etf_distance"] > ntk_l.r2_["etf_distance"]
    assert comparison.best("aic").startswith("coupled")


def r_squared(observed, predicted) -> float:
    """1 − Σ(o − p)² / Σ(o − ō)² over the checkpoints where the observation is finite."""
    ok = np.all(np.isfinite(observed), axis=1)
    o, p = observed[ok], predicted[ok]
    return float(1.0 - np.sum((o - p) ** 2) / np.sum((o - o.mean(axis=0)) ** 2))


def test_kernel_prediction_fixed_vs_time_dependent(run, comparison):
    """The cost of a fixed kernel is the ratio of the two fits' residual sums of squares and
    their R², recomputed from the residual vectors and the observed / predicted curves. On this
    run the kernel's motion hardly matters: the ratios measured 0.956 (coupled) and 0.987
    (linear-features)."""
    kp = br.KernelPrediction(run, {k: v for k, v in comparison.fits.items() if "NTK" in k}, comparison.observables)
    cost = kp.fixed_theta_cost()
    print(kp.report())
    assert set(cost) == {"coupled", "linear-features"}
    for dynamics, c in cost.items():
        fixed, moving = comparison.fits[f"{dynamics} · NTK Θ(0)"], comparison.fits[f"{dynamics} · NTK Θ(t)"]
        r0, rt = fixed.residuals_, moving.residuals_
        assert c["rss_ratio"] == pytest.approx((r0 @ r0) / (rt @ rt), rel=1e-14)      # measured: equal
        assert 0.8 < c["rss_ratio"] < 1.25
        for key, f in (("r2_fixed", fixed), ("r2_t", moving)):
            assert set(c[key]) == {"relations", "semantic_gap", "etf_distance"}
            for name, value in c[key].items():
                assert value == pytest.approx(r_squared(f.observed_[name], f.predicted_[name]), rel=1e-14), name


def test_fit_observables_report_and_plot(run, comparison, tmp_path):
    """The observed curves of a fit are the run's geometry recomputed from its rows (tests/
    independent.py), the predicted ones that of the fitted trajectory; the report prints the
    fitted values and R², and the plot draws exactly these curves against the steps."""
    import matplotlib
    matplotlib.use("Agg")
    f = comparison.fits["coupled · NTK Θ(t)"]
    p = run.problem()
    assert p.K == p.N                                     # one sample per context: no pairs left out
    for curves, grams in ((f.observed_, run.grams()["gram_H"]), (f.predicted_, f.trajectory_.gram_H)):
        gap = [independent.semantic_gap(g, p.attributes) for g in grams]
        etf = [independent.etf_distance(g, p.labels) for g in grams]
        # measured agreement <= 1.1e-16 for every curve
        np.testing.assert_allclose(curves["semantic_gap"][:, 0], gap, rtol=0, atol=1e-15)
        np.testing.assert_allclose(curves["etf_distance"][:, 0], etf, rtol=0, atol=1e-15)
        C = np.eye(p.N) - 1.0 / p.N                       # relations are centred cosines, as the gap
        for r, R in enumerate(p.relations[1:]):
            pairs = np.argwhere(R > 0)
            mean = [np.mean([independent.cosine(C @ g @ C, i, j) for i, j in pairs]) for g in grams]
            np.testing.assert_allclose(curves["relations"][:, r], mean, rtol=0, atol=1e-15, err_msg=str(r))
    text = f.report()
    assert "Θ(t) = measured kernels" in text
    assert f"time_scale   = {f.params_['time_scale']:.5g} ± {f.stderr_['time_scale']:.2g}" in text
    assert ("  R²:      " + ", ".join(f"{k} {v:.3f}" for k, v in f.r2_.items())) in text
    assert f"residual norm {np.sqrt(f.rss_):.4g}, AIC {f.aic_:.1f}, BIC {f.bic_:.1f}" in text
    fig = f.plot()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split("  ")[0] for ax in axes] == list(f.r2_)
    for ax, name in zip(axes, f.r2_):
        lines = ax.get_lines()
        columns = min(f.observed_[name].shape[1], 8)
        assert len(lines) == 2 * columns, name
        for c in range(columns):
            for line, curve in ((lines[2 * c], f.observed_[name]), (lines[2 * c + 1], f.predicted_[name])):
                np.testing.assert_array_equal(line.get_xdata(), run.steps)
                np.testing.assert_array_equal(line.get_ydata(), curve[:, c])
    fig.savefig(tmp_path / "fit.png")
    fig = comparison.plot()
    # one panel per column of every fitted observable (relations: 3 here), each drawing the run
    # and every row — the baseline first — with a title, axis labels and a legend
    panels = [(n, c) for n in f.r2_ for c in range(min(f.observed_[n].shape[1], 4))]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == len(panels) == 5
    assert fig.texts and "transformer_factorial_adamw.npz" in fig.texts[0].get_text()
    for ax, (name, c) in zip(axes, panels):
        assert ax.get_xlabel() == "step" and ax.get_ylabel() and ax.get_title()
        dots, *models = ax.get_lines()
        np.testing.assert_array_equal(dots.get_ydata(), f.observed_[name][:, c])
        rows = comparison.rows()
        assert len(models) == len(rows)
        for line, fit in zip(models, rows.values()):
            np.testing.assert_array_equal(line.get_ydata(), fit.predicted_[name][:, c])
        # overlapping curves stay visible: distinct colours and markers, decreasing widths
        assert len({line.get_marker() for line in models}) >= min(len(models), 8)
        widths = [line.get_linewidth() for line in models]
        assert widths[0] > widths[-1]
        assert len(ax.get_legend().get_texts()) == 1 + len(rows)
    fig.savefig(tmp_path / "cmp.png")


def test_cli_inspect_and_fit(run, comparison, tmp_path, capsys):
    """``ufm inspect`` prints the run's summary (its numbers are checked in test_bridge_io);
    ``ufm fit --coupling measured-t --params time_scale`` is the comparison's coupled NTK Θ(t)
    fit, and its unfitted decay follows the documented rule λ = wd·lr/s."""
    fig = tmp_path / "inspect.png"
    assert cli(["inspect", FIXTURE, "--figure", str(fig)]) == 0
    out = capsys.readouterr().out
    assert run.summary() in out and f"figure     {fig}" in out and fig.stat().st_size > 5000
    assert cli(["fit", FIXTURE, "--coupling", "measured-t", "--params", "time_scale", "--out-dir",
                str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fit of the coupled UFM" in out
    stem = tmp_path / "transformer_factorial_adamw_fit"
    data = json.loads(stem.with_suffix(".json").read_text())
    same = comparison.fits["coupled · NTK Θ(t)"]
    assert data["params"] == pytest.approx(same.params_, rel=1e-12) and data["r2"] == pytest.approx(same.r2_, rel=1e-12)
    assert data["rss"] == pytest.approx(same.rss_, rel=1e-12)                   # measured: equal
    s = data["params"]["time_scale"]
    assert data["values"]["lambda_W"] == pytest.approx(run.weight_decay * run.lr / s, rel=1e-12)
    assert data["values"]["lambda_H"] == data["values"]["lambda_W"]
    r2_line = "  R²:      " + ", ".join(f"{k} {v:.3f}" for k, v in same.r2_.items())
    assert r2_line in stem.with_suffix(".txt").read_text().splitlines()
    assert stem.with_suffix(".png").stat().st_size > 5000


def test_cli_errors(tmp_path, capsys):
    assert cli(["inspect", str(tmp_path / "nope.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli(["fit", FIXTURE, "--params", "speed", "--out-dir", str(tmp_path)]) == 2
    assert "unknown parameter 'speed'" in capsys.readouterr().err
    assert cli(["fit", FIXTURE, "--fixed", "beta", "--out-dir", str(tmp_path)]) == 2
