"""The guards of ``ufm.bridge.compare``: a frozen-initial-state baseline, oracle rows apart,
flags (at bounds, frozen, not converged), an ESS-corrected ranking, and ``best`` None with the
reason when no predictive family beats the baseline; ``ufm fit RUN --compare --json``.

Fits here fit few or no parameters (``params=[]`` with fixed values: one integration each), so
every test takes seconds; the guards do not care how a row was obtained.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import ufm
import ufm.bridge as br
from ufm.bridge.comparison import BASELINE, _lag1
from ufm.bridge.fitting import _at_bound
from ufm.models import GramState

HERE = os.path.dirname(os.path.abspath(__file__))
TRUE = {"time_scale": 0.5, "lambda": 2e-3, "init_scale": 3e-2, "beta": 1.5}
OBS = ["relations", "semantic_gap", "etf_distance"]


@pytest.fixture(scope="module")
def run():
    """A coupled-UFM run (2×3 factorial) from an isotropic start, logging its own Θ twice (an
    identity kernel at step 0, the true kernel from step 50), with 1 % noise."""
    p = ufm.settings.factorial((2, 3))
    theta = p.coupling("attribute", TRUE["beta"])
    m = ufm.UFM(p, lambda_W=TRUE["lambda"], lambda_H=TRUE["lambda"], coupling=theta)
    s2 = TRUE["init_scale"] ** 2
    steps = np.unique(np.concatenate([[0], np.geomspace(1, 20000, 30).round().astype(int)]))
    tr = ufm.solve(m, GramState(np.zeros((p.K, p.N)), s2 * np.eye(p.K), s2 * np.eye(p.N)), TRUE["time_scale"] * steps,
                   space="gram", rtol=1e-10, atol=1e-16)
    r = br.Run.from_trajectory(tr, steps=steps, noise=0.01, seed=3)
    fields = r.fields()
    fields.update(kernel=np.stack([np.eye(p.N), theta]), kernel_steps=np.array([0, 50]), lr=TRUE["time_scale"],
                  weight_decay=TRUE["lambda"])
    return br.Run(**fields)


def _fixed(model, coupling=None, **values):
    base = {"time_scale": TRUE["time_scale"], "init_scale": TRUE["init_scale"]}
    return dict(model=model, params=[], fixed={**base, **values}, init="isotropic", coupling=coupling)


def test_the_true_model_is_best_and_frozen_rows_are_flagged(run):
    cmp = br.compare(run, {"true coupled": _fixed("coupled", **{"lambda": TRUE["lambda"], "beta": TRUE["beta"]}),
                           "frozen standard": _fixed("standard", time_scale=1e-9, **{"lambda": TRUE["lambda"]})},
                     OBS)
    print(cmp.report())
    assert cmp.best() == "true coupled"
    assert cmp.fits["true coupled"].r2_["semantic_gap"] > 0.99           # measured 0.9996 (1 % noise)
    assert "frozen" in cmp.flags_["frozen standard"]
    table = {r["model"]: r for r in cmp.table()}
    assert list(table)[0] == BASELINE and table[BASELINE]["role"] == "baseline" and table[BASELINE]["k"] == 0
    # the frozen row predicts what the baseline predicts, up to the start: the model starts from
    # the exact isotropic state, the baseline holds the noisy first checkpoint (measured 1.3 % apart)
    assert cmp.fits["frozen standard"].rss_ == pytest.approx(cmp.baseline.rss_, rel=0.05)
    assert "smallest AIC*" in cmp.reason and "R² > 0 on semantic_gap" in cmp.reason


def test_best_is_none_when_nothing_beats_the_baseline(run):
    """Rows that are frozen or worse than the frozen start: no best model, and the reason names
    every row and why it failed."""
    cmp = br.compare(run, {"frozen": _fixed("standard", time_scale=1e-9, **{"lambda": TRUE["lambda"]}),
                           "standard": _fixed("standard", **{"lambda": TRUE["lambda"]}),
                           "wrong coupled": _fixed("coupled", **{"lambda": 0.5, "beta": TRUE["beta"]})}, OBS)
    print(cmp.report())
    assert cmp.best() is None and cmp.best("aic") is None
    assert cmp.reason.startswith("no predictive model beats the frozen initial state on semantic_gap, etf_distance")
    for name in ("frozen", "standard", "wrong coupled"):
        assert f"{name}: " in cmp.reason
    assert "frozen: its prediction is frozen at the initial state" in cmp.reason
    assert cmp.report().splitlines()[-1].startswith("best: none — no predictive model")


def test_oracle_rows_are_reported_apart_and_never_best(run):
    """Θ(t) consumes the logged kernels at every checkpoint (here it is told the true kernel
    from step 50 on): it fits best, but it is an oracle row, reported in its own block and not
    ranked; the predictive Θ(0) row (identity: the standard UFM) is what the comparison judges."""
    cmp = br.compare(run, {"coupled · NTK Θ(0)": _fixed("coupled", coupling="measured"),
                           "coupled · NTK Θ(t)": _fixed("coupled", coupling="measured-t")}, OBS)
    print(cmp.report())
    assert cmp.role("coupled · NTK Θ(t)") == "oracle" and "oracle" in cmp.flags_["coupled · NTK Θ(t)"]
    assert cmp.fits["coupled · NTK Θ(t)"].rss_ < cmp.fits["coupled · NTK Θ(0)"].rss_
    assert cmp.best() != "coupled · NTK Θ(t)"
    text = cmp.report()
    oracle_at = text.index("oracle (the logged kernel at every checkpoint")
    assert text.index("coupled · NTK Θ(t)  ") > oracle_at > text.index("coupled · NTK Θ(0)  ")
    d = cmp.as_dict()
    assert [m["role"] for m in d["models"]] == ["baseline", "predictive", "oracle"]


def test_parameters_at_bounds_are_flagged_with_a_relative_tolerance():
    # β = 0.00101 against the bound 0.001 of a box 1e-3 … 1e3 (the case) is at the bound
    assert _at_bound(0.00101, 1e-3, 1e3) and _at_bound(999.0, 1e-3, 1e3)
    assert not _at_bound(0.01, 1e-3, 1e3) and not _at_bound(1.0, 1e-3, 1e3)
    assert _at_bound(1.01e-10, 1e-10, 10.0)


def test_fit_flags_success_message_time_and_stderr_in_the_json(run):
    """A fit of β on a run whose Θ(0) is the identity ... (the coupled family fitted with a tiny
    budget): its flags, success, message, wall time and standard errors reach the JSON."""
    cmp = br.compare(run, {"coupled, 1 iteration": dict(model="coupled", params=["beta"], max_nfev=1, scan=False,
                                                         init="isotropic",
                                                         fixed={"time_scale": TRUE["time_scale"],
                                                                "init_scale": TRUE["init_scale"],
                                                                "lambda": TRUE["lambda"]},
                                                         x0={"beta": 1.0000001e-3 * 1.0})}, OBS)
    f = cmp.fits["coupled, 1 iteration"]
    row = next(m for m in cmp.as_dict()["models"] if m["name"] == "coupled, 1 iteration")
    assert row["success"] is f.success_ and row["message"] == f.message_ and row["wall_time"] == f.wall_time_ > 0
    assert set(row["stderr"]) == {"beta"} and row["bounds"]["beta"][0] > 0
    if not f.success_:
        assert "not_converged" in row["flags"] and "max_nfev = 1" in f.message_
    for p in f.at_bounds_:
        assert f"at_bound:{p}" in row["flags"]


def test_ess_correction_uses_the_residual_autocorrelation(run):
    """n_eff = n(1 − ρ)/(1 + ρ) with ρ the pooled lag-1 autocorrelation of the residuals of the
    row with the smallest rss, recomputed here from the residual vector."""
    cmp = br.compare(run, {"true coupled": _fixed("coupled", **{"lambda": TRUE["lambda"], "beta": TRUE["beta"]}),
                           "standard": _fixed("standard", **{"lambda": TRUE["lambda"]})}, OBS)
    f = cmp.fits["true coupled"]
    T = run.T
    r = f.residuals_.reshape(-1)
    num = den = 0.0
    at = 0
    for width in (f.observed_[n].shape[1] for n in OBS):
        block = r[at:at + T * width].reshape(T, width)
        at += T * width
        num += np.sum(block[1:] * block[:-1])
        den += np.sum(block ** 2)
    rho = min(max(num / den, 0.0), 0.99)
    assert cmp.rho_ == pytest.approx(rho, rel=1e-12) == _lag1(f)
    assert cmp.n_eff_ == pytest.approx(r.size * (1 - rho) / (1 + rho), rel=1e-12)
    for name, g in cmp.rows().items():
        assert cmp.aic_eff_[name] == pytest.approx(cmp.n_eff_ * math.log(g.rss_ / g.n_) + 2 * g.k_, rel=1e-12)


def test_fit_compare_json_via_the_cli(run, tmp_path):
    """``ufm fit RUN --compare --json --criterion cv`` prints one JSON object with best, reason,
    models and the cross-validation (the same object as the .json file it writes); each fit
    limited to 3 s, so which row wins is not asserted here (the guards are tested above and in
    tests/test_crossval.py, in-process)."""
    small = run.select(slice(0, None, 2))
    path = br.export(tmp_path / "small.npz", **{k: v for k, v in small.fields().items() if k not in ("kernel",
                                                                                                      "kernel_steps")})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-m", "ufm", "fit", path, "--compare", "--json", "--init", "isotropic",
                          "--out-dir", str(tmp_path), "--max-time", "3", "--criterion", "cv"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) >= {"best", "reason", "models", "n_eff", "cv"}
    assert out["criterion_key"] == "cv" and out["cv"]["scheme"] == "leave-one-out" and len(out["cv"]["folds"]) == 3
    assert all("cv_error" in m for m in out["models"])
    assert out["best"] is None or out["best"] in [m["name"] for m in out["models"]]
    names = [m["name"] for m in out["models"]]
    assert names == [BASELINE, "standard", "coupled", "linear-features", "deep"]
    for m in out["models"]:
        assert {"name", "family", "params", "r2", "flags", "success", "message", "wall_time", "stderr"} <= set(m)
        assert set(m["r2"]) == {"relations", "semantic_gap", "etf_distance"}
    with open(tmp_path / "small_compare.json", encoding="utf-8") as fh:
        assert json.load(fh) == out


@pytest.mark.parametrize("name", ["mlp_factorial_sgd_diverged", "mlp_hierarchy_sgd"])
def test_real_runs_where_no_family_beats_the_frozen_start(name):
    """Two shipped MLP runs (the fastest to compare: 2 s and 3 s measured): a diverged one, and
    one that strengthens and keeps its top-level split (persistent) — no family with its
    default parameters produces that, so no best model; the Θ(t) rows are oracle rows, and
    fits that ran to the lower bound of the time scale are flagged at the bound and frozen."""
    run = br.load(os.path.join(HERE, "data", "real", name + ".npz"))
    cmp = br.compare(run)
    print(cmp.report())
    assert cmp.best() is None, cmp.reason
    # the diverged run: a deep-backbone fit follows its pre-divergence curves well enough to beat
    # the baseline, so it is the degeneracy guard that withholds "best"
    expected = "the run is degenerate" if name.endswith("diverged") else "no predictive model beats the frozen"
    assert cmp.reason.startswith(expected), cmp.reason
    assert {cmp.role(n) for n in cmp.fits if "Θ(t)" in n} == {"oracle"}
    flags = cmp.flags_["standard"]
    assert "at_bound:time_scale" in flags and "frozen" in flags
    d = cmp.as_dict()
    assert d["best"] is None and d["reason"] == cmp.reason
    assert d["models"][0]["name"] == BASELINE and len(d["models"]) == 1 + len(cmp.fits)


def test_a_degenerate_verdict_withholds_best_even_when_a_family_beats_the_baseline(monkeypatch):
    """The guard itself: the same comparison on a run that collapses names a best model, and
    withholds it, naming the verdict, once the run is judged degenerate."""
    run = br.load(os.path.join(HERE, "data", "real", "mlp_factorial_adamw_mse.npz"))
    cmp = br.compare(run, models=["standard"])
    assert cmp.best() == "standard", cmp.reason
    real = run.verdict()
    monkeypatch.setattr(type(run), "verdict", lambda self, thresholds=None: real.__class__(
        **{**real.__dict__, "late": "degenerate", "late_rule": "a test says so"}))
    cmp = br.compare(run, models=["standard"])
    assert cmp.best() is None and cmp.reason.startswith("the run is degenerate (a test says so)")
    assert "standard would beat the frozen baseline" in cmp.reason


def test_a_degenerate_run_is_said_so_even_when_no_family_beats_the_baseline(monkeypatch):
    """On a degenerate run the reason opens with the verdict whether or not some family beat the
    frozen start, the report warns before its tables (with the verdict's own warnings), and the
    JSON carries the run's verdict; on the same run judged as it is, none of that appears."""
    run = br.load(os.path.join(HERE, "data", "real", "mlp_hierarchy_sgd.npz"))
    models = {"standard": {"model": "standard", "params": ["time_scale"]}}
    plain = br.compare(run, models)
    assert plain.best() is None and plain.reason.startswith("no predictive model beats"), plain.reason
    real = run.verdict()
    assert real.late != "degenerate"
    assert "warning: the run is degenerate" not in plain.report()
    assert plain.as_dict()["run_verdict"] == {"early": real.early, "late": real.late, "warnings": list(real.warnings)}
    monkeypatch.setattr(type(run), "verdict", lambda self, thresholds=None: real.__class__(
        **{**real.__dict__, "late": "degenerate", "late_rule": "a test says so", "warnings": ["norm spike at step 9"]}))
    cmp = br.compare(run, models)
    assert cmp.best() is None
    assert cmp.reason.startswith("the run is degenerate (a test says so); no predictive model beats"), cmp.reason
    text = cmp.report().splitlines()
    tables = text.index(next(line for line in text if line.startswith("predictive")))
    assert "warning: the run is degenerate (a test says so)" in "\n".join(text[:tables])
    assert "warning: norm spike at step 9" in text[:tables]
    d = cmp.as_dict()
    assert d["run_verdict"] == {"early": real.early, "late": "degenerate", "warnings": ["norm spike at step 9"]}
    assert d["reason"] == cmp.reason


def test_a_vocabulary_larger_than_the_contexts_is_fitted_in_its_own_shapes():
    """A held-out run with K = 32 classes for N = 16 contexts (16 classes are never a label):
    the fits start from the run's own state — the predicted logits at step 0 are W₀H₀ᵀ of the
    file — carry all K classes, and the comparison still reports the baseline first and a
    best model or the reason there is none."""
    run = br.load(os.path.join(HERE, "data", "real", "transformer_factorial_sgd_vocab32.npz"))
    assert (run.K, run.N) == (32, 16)
    # the time scale alone is fitted (a full coupled fit of this run takes ~40 s)
    cmp = br.compare(run, {"standard": {"model": "standard", "params": ["time_scale"]},
                           "coupled": {"model": "coupled", "params": ["time_scale"]}})
    for name, f in cmp.fits.items():
        tr = f.predict()
        assert tr.gram_W.shape == (run.T, 32, 32) and tr.logits.shape == (run.T, 32, 16), name
        W0, H0 = np.asarray(run.W[0], dtype=np.float64), np.asarray(run.H[0], dtype=np.float64)
        np.testing.assert_allclose(tr.logits[0], W0 @ H0.T, rtol=1e-12, atol=1e-12 * np.abs(W0 @ H0.T).max())
        assert np.all(np.isfinite(list(f.params_.values()))), name
    d = cmp.as_dict()
    assert d["models"][0]["name"] == BASELINE and len(d["models"]) == 3
    assert (d["best"] is None) == (not d["reason"].startswith("smallest AIC*")), d["reason"]
