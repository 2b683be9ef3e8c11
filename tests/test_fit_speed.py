"""Speed machinery of the bridge fits: the final Jacobian reused for the standard errors, and
predictions that end at a stable equilibrium (ufm.bridge.settling) but never at a saddle."""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from ufm import engine
from ufm.bridge import fitting, settling
from ufm.models import GramState


def _synthetic_run():
    """A noisy run made from a standard UFM (factorial 2×2, λ = 3e-3, time scale 0.4): the
    fits' test case."""
    p = ufm.settings.factorial((2, 2))
    m = ufm.UFM(p, lambda_W=3e-3, lambda_H=3e-3)
    s2 = 1e-3
    g0 = GramState(np.zeros((p.K, p.N)), s2 * np.eye(p.K), s2 * np.eye(p.N))
    steps = np.unique(np.concatenate([[0], np.geomspace(1, 5000, 25).round().astype(int)]))
    tr = ufm.solve(m, g0, 0.4 * steps, space="gram", rtol=1e-10, atol=1e-16)
    import ufm.bridge as br
    return br.Run.from_trajectory(tr, steps=steps, noise=0.01, seed=2)


def test_standard_errors_come_from_forward_differences_at_the_optimum():
    """The standard errors are those of a forward-difference Jacobian at the optimum (the
    optimiser's last one, scipy's steps; the engine's here: equal to 1e-3, measured 3e-5)."""
    import ufm.bridge as br
    f = br.fit(_synthetic_run(), "standard", observables=["relations", "norms"], init="isotropic",
               params=["time_scale", "lambda", "init_scale"])
    eng = f.engine_
    x = np.array([f.params_[k] for k in eng.names])
    J = eng.jacobian(x)
    r = eng.residuals(x)
    s2_hat = float(r @ r) / (r.size - x.size)
    se = x * np.sqrt(np.diag(s2_hat * np.linalg.pinv(J.T @ J)))
    for k, v in zip(eng.names, se):
        assert f.stderr_[k] == pytest.approx(v, rel=1e-3)
    assert np.array_equal(eng.last_jac_p, x)                       # the Jacobian of the last stage
    assert abs(f.params_["time_scale"] / 0.4 - 1) < 0.02 and abs(f.params_["lambda"] / 3e-3 - 1) < 0.05


# --- predictions that end at a stable equilibrium -----------------------------------------------

def _collapse_model():
    p = ufm.settings.factorial((2, 2))
    return ufm.UFM(p, lambda_W=0.05, lambda_H=0.05)


def test_settling_ends_at_the_stable_fixed_point_within_tolerance():
    """The standard UFM with decay reaches its collapse fixed point (a strict minimum up to the
    Gram space's invariances, which the Gram ODE does not have) early and sits there to
    t = 1e5: the run ends there, the filled saves agree with the full integration to the
    tolerance, and it takes a fraction of the steps."""
    m = _collapse_model()
    x0 = m.init(8, scale=0.5, seed=1)
    t = np.geomspace(1e-2, 1e5, 40)
    kw = dict(rtol=1e-8, atol=1e-11, method="dopri5")
    full = ufm.solve(m, x0, t, space="gram", save=("gram_W", "gram_H", "logits"), **kw)
    short = settling.solve_settling(m, x0, t, **kw)
    j = short.info["settled_from"]
    assert 0 < j < t.size - 5 and short.info["settled_t"] < 1e4     # the first test, after 2,000 steps
    assert short.info["settle_slowest_rate"] > 0
    for q in ("gram_W", "gram_H", "logits"):
        a, b = getattr(full, q), getattr(short, q)
        assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(a))     # measured ~1e-9
    assert short.info["accepted_steps"] < full.info["accepted_steps"] / 2


def test_settling_never_ends_at_the_saddle_of_a_small_start(monkeypatch):
    """From a start 1e-7 of the origin — a saddle of the decayed UFM: the flow is slow there,
    but the linearisation has a positive eigenvalue — the run is tested (every 20 steps here)
    but never ends on the plateau; it escapes, collapses and ends where the full integration
    does. At the origin itself the test says why it refuses: not a stable equilibrium."""
    monkeypatch.setattr(settling, "SETTLE_CHECK_STEPS", 20)
    m = _collapse_model()
    K, N = m.K, m.N
    s2 = 1e-14
    g0 = GramState(np.zeros((K, N)), s2 * np.eye(K), s2 * np.eye(N))
    t = np.geomspace(1e-2, 1e4, 40)
    kw = dict(rtol=1e-8, atol=1e-18, method="dopri5")
    full = ufm.solve(m, g0, t, space="gram", save=("gram_W", "gram_H", "logits"), **kw)
    short = settling.solve_settling(m, g0, t, **kw)
    assert short.info["settle_tests"] >= 2
    # the plateau: the norm of G_H stays tiny until the escape, then grows by > 10 decades
    norm = np.linalg.norm(full.gram_H, axis=(1, 2))
    escape = t[np.argmax(norm > 1e-4 * norm[-1])]
    assert norm[0] < 1e-12 * norm[-1]
    assert short.info.get("settled_t", np.inf) > escape
    assert np.max(np.abs(short.gram_H - full.gram_H)) <= 1e-6 * np.max(np.abs(full.gram_H))
    packed = engine.pack_model(m, "gram", 0)
    ok, why = settling.settled(packed, np.zeros(K * N + K * K + N * N), 0.0, 1e-8, 1e-18)
    assert not ok and why["why"] == "singular Jacobian" or not ok and why["max_real_eigenvalue"] > 0
    y0 = np.concatenate([np.zeros(K * N), (s2 * np.eye(K)).ravel(), (s2 * np.eye(N)).ravel()])
    ok, why = settling.settled(packed, y0, 0.0, 1e-8, 1e-9)     # displacement within this atol
    assert not ok and why["max_real_eigenvalue"] > 0 and why["why"].startswith("not a stable")


# --- the local fit's Jacobian -------------------------------------------------------------------

def test_local_fit_differences_with_the_absolute_log_step(monkeypatch):
    """The local fit's forward differences step every parameter by _DIFF_STEP in log
    parameters, from its first Jacobian on. (scipy's "2-point" with diff_step = 1e-3 steps by
    1e-3·|z|, and z = log(p / start) is 0 at the start: its first steps were 1.5e-8, where a
    prediction's integration error swamps the difference.)"""
    seen = []
    orig = fitting._Engine.residuals

    def residuals(self, p, max_steps=None):
        if max_steps is None and (not seen or not np.array_equal(seen[-1], p)):
            seen.append(np.array(p))
        return orig(self, p, max_steps)
    monkeypatch.setattr(fitting._Engine, "residuals", residuals)
    import ufm.bridge as br
    f = br.fit(_synthetic_run(), "standard", observables=["relations", "norms"], init="isotropic",
               params=["time_scale", "lambda"], scan=False, max_nfev=3)
    k = len(f.param_names_)
    assert 0.0 < f.cpu_time_ and 0.0 < f.wall_time_           # both clocks are read
    start, columns = seen[0], seen[1:1 + k]
    for i, q in enumerate(columns):
        step = np.log(q / start)
        assert abs(abs(step[i]) - fitting._DIFF_STEP) < 1e-12
        assert np.all(np.delete(step, i) == 0.0)


class _LinearEngine:
    """residuals linear in log parameters, the third column 1e-7 of the others: it does not act."""

    jac = None

    def __init__(self):
        rng = np.random.default_rng(0)
        self.A = rng.normal(size=(30, 3))
        self.A[:, 2] *= 1e-7
        self.b = rng.normal(size=30)
        self.points = []
        self.last_jac_p = None

    def residuals(self, p, max_steps=None):
        self.points.append(np.array(p))
        return self.A @ np.log(p) + self.b

    jacobian = fitting._Engine.jacobian


def test_held_columns_are_reused_and_refreshed():
    """A parameter whose trf-scaled column is below _HOLD_RATIO of the largest keeps its
    column from the last Jacobian (one prediction saved per Jacobian); every
    _HOLD_REFRESH-th Jacobian is complete again."""
    eng = _LinearEngine()
    ref = np.ones(3)
    lo_x, hi_x = np.full(3, -5.0), np.full(3, 5.0)
    hold = fitting._HeldJacobian(eng, ref, lo_x, hi_x, np.exp(hi_x))
    z = np.array([0.1, -0.2, 0.3])
    assert fitting._HOLD_REFRESH >= 2
    complete, jacs = [], []
    for _ in range(2 * fitting._HOLD_REFRESH):
        eng.points = []
        jacs.append(hold(z).copy())
        columns = [q for q in eng.points if not np.array_equal(q, np.exp(z))]     # one per computed column
        complete.append(len(columns) == 3)
        assert len(columns) in (2, 3)
    assert complete == ([True] + [False] * (fitting._HOLD_REFRESH - 1)) * 2
    for J in jacs:
        assert np.allclose(J[:, :2], eng.A[:, :2], rtol=1e-6)        # exact for a linear map
        assert np.array_equal(J[:, 2], jacs[0][:, 2])                # held: the first one's column
    # a partial Jacobian does not stand for the optimum's: last_jac_p is left unset
    eng.last_jac_p = None
    eng.jacobian(ref, columns=np.array([True, True, False]))
    assert eng.last_jac_p is None


def test_fits_integrate_with_auto_by_default():
    """The fits' predictions use ufm.solve's method "auto" (RODAS4 where the flow turns stiff)
    unless Fit(method=) says otherwise."""
    import ufm.bridge as br
    run = _synthetic_run()
    f = br.fit(run, "standard", observables=["relations", "norms"], init="isotropic", params=["time_scale"],
               max_nfev=2)
    g = br.fit(run, "standard", observables=["relations", "norms"], init="isotropic", params=["time_scale"],
               max_nfev=2, method="dopri5")
    assert f.trajectory_.info["method"] == "auto" and g.trajectory_.info["method"] == "dopri5"


def test_auto_prediction_is_not_cut_by_the_explicit_projection():
    """A settling auto prediction whose explicit method would need more than its budget, but
    RODAS4 not, is integrated to the end (it was cut at t = 794 after 434 of its 36,390 steps,
    on the explicit projection alone); it agrees with a dopri5 integration given room."""
    from pathlib import Path
    import ufm.bridge as br
    run = br.load(Path(__file__).parent / "data" / "real" / "mlp_hierarchy_adamw_depth6.npz")
    spec = dict(fitting.family_defaults(run)["linear-features · NTK Θ(0)"])
    model = spec.pop("model")
    p = {"time_scale": 0.003288, "time_power": 2.260387, "decay_factor": 1.146907}
    out = {}
    for method, budget in (("auto", 36_390), ("dopri5", 36_390), ("dopri5", 200_000)):
        eng = fitting._Engine(fitting.Fit(model, method=method, **spec), run)
        _, tr, failed = eng.predict(np.array([p[k] for k in eng.names]), max_steps=budget)
        out[method, budget] = (tr, failed)
    assert out["auto", 36_390][1] is None
    assert out["dopri5", 36_390][1] is not None                  # the explicit method does need more
    a, d = out["auto", 36_390][0], out["dopri5", 200_000][0]
    assert out["dopri5", 200_000][1] is None
    assert np.max(np.abs(a.gram_H - d.gram_H)) <= 1e-4 * np.max(np.abs(d.gram_H))


# --- the local fit's stall rule and extrapolation along aligned steps ----------------------------

def test_stall_is_measured_in_aic_units():
    """The stall rule stops when n·log(cost) fell by at most _STALL_AIC over the window: the
    same relative fall stalls a fit with many residuals later than one with few."""
    rel = 1.0 - np.exp(-fitting._STALL_AIC / 1000)         # exactly the threshold at n = 1000
    assert fitting._stalled(100.0, 100.0 * (1 - 0.5 * rel), 1000)
    assert not fitting._stalled(100.0, 100.0 * (1 - 2 * rel), 1000)
    assert fitting._stalled(100.0, 100.0 * (1 - 2 * rel), 100)      # the same fall, 10x fewer residuals
    assert fitting._stalled(100.0, 100.5, 10)                       # no progress at all


def test_extrapolation_jumps_to_the_limit_of_geometric_steps():
    """Steps that line up and shrink by ρ = 1/2 sum to one more last step: the jump lands on the
    minimum of a quadratic along that line, and a doubled jump (worse) is not taken."""
    target = np.array([1.0, -2.0])
    calls = []

    def fun(z):
        calls.append(np.array(z))
        return 3.0 * (z - target)
    d = np.array([0.4, -0.8])
    path = [target - 2.0 * d, target - d, target - 0.5 * d]          # remaining sum: 0.5 d
    z, used = fitting._extrapolate(fun, path, np.full(2, -10.0), np.full(2, 10.0))
    assert np.allclose(z, target, atol=1e-12)
    assert used == 2                                                 # the jump and the refused doubling
    assert len(path) == 1 and np.array_equal(path[0], target - 0.5 * d)


def test_extrapolation_needs_aligned_steps_and_stays_in_the_box():
    def fun(z):
        return np.asarray(z, dtype=np.float64) - 5.0
    path = [np.zeros(2), np.array([1.0, 0.0]), np.array([1.0, 1.0])]   # a right angle: no jump
    assert fitting._extrapolate(fun, list(path), np.full(2, -10.0), np.full(2, 10.0)) == (None, 0)
    path = [np.zeros(2), np.ones(2), np.full(2, 1.9)]                  # towards (5, 5), past the box edge 2
    z, used = fitting._extrapolate(fun, path, np.full(2, -10.0), np.full(2, 2.0))
    assert used >= 1 and np.all(z <= 2.0) and np.allclose(z, 2.0)


# --- time-map columns and scan points read off one prediction -----------------------------------

def _power_engine(params=("time_scale", "lambda", "time_power"), time="power", meta=None):
    import ufm.bridge as br
    run = _synthetic_run()
    if meta:
        run = br.Run.from_trajectory(ufm.solve(ufm.UFM(ufm.settings.factorial((2, 2)), lambda_W=3e-3, lambda_H=3e-3),
                                               GramState(np.zeros((4, 4)), 1e-3 * np.eye(4), 1e-3 * np.eye(4)),
                                               0.4 * run.steps, space="gram", rtol=1e-10, atol=1e-16),
                                     steps=run.steps, noise=0.01, seed=2, meta=meta)
    f = fitting.Fit("standard", list(params), ["relations", "norms"], time=time, init="isotropic")
    eng = fitting._Engine(f, run)
    eng.box = eng.bounds()
    return eng


def test_time_columns_are_read_off_the_base_prediction():
    """The Jacobian columns of time_scale and time_power (t = s·step^p: the model does not
    depend on them, and the flow is autonomous) are the base prediction at shifted save times:
    equal to separate predictions at the columns' points (to 1e-9 of the column, measured
    ~1e-13), without another integration, and the base residuals are bit for bit those
    without the extra saves (dense output: the same steps)."""
    eng = _power_engine()
    p = eng.start * np.array([0.7, 1.3, 1.1])
    cols = eng.time_columns(p)
    assert sorted(cols) == [0, 2]                                  # not lambda
    for i, q in cols.items():
        assert np.log(q[i] / p[i]) == pytest.approx(-fitting._DIFF_STEP, rel=1e-12)
        assert np.array_equal(np.delete(q, i), np.delete(p, i))
    budget, rtol = eng.step_budget(), eng.stage_rtol
    r0 = eng.residuals(p)
    assert eng.integrations == 1
    assert np.array_equal(r0, eng._evaluate(p, budget, rtol)[0])
    J = eng.jacobian(p, upper=eng.box[1])
    assert eng.integrations == 3                                   # the check above, and lambda's column
    for i, q in cols.items():
        sep = eng._evaluate(q, budget, rtol)[0]
        col = (sep - r0) / -fitting._DIFF_STEP
        assert np.max(np.abs(J[:, i] - col)) <= 1e-9 * np.max(np.abs(col))
    # switched off: every column is its own prediction, and the Jacobian the same
    saved = fitting._SHIFT_COLUMNS
    try:
        fitting._SHIFT_COLUMNS = False
        other = _power_engine()
        assert other.time_columns(p) == {}
        other.residuals(p)
        other.jacobian(p, upper=other.box[1])
        assert other.integrations == 4
    finally:
        fitting._SHIFT_COLUMNS = saved


def test_time_columns_with_a_decay_tied_to_the_time_scale():
    """A decay tied to the time scale (decay_factor: λ = f·wd·lr/s) moves the model with s: the
    time_scale point steps decay_factor with it (λ kept, the base path at other times), and
    the column is that directional difference less decay_factor's column: equal to the
    separately predicted column to O(h) (measured 4e-6 of the column here, where forward and
    backward differences differ by 5e-4: a scratch check of this test's engine). Without a fitted
    decay_factor (the run's decay per step, λ = wd·lr/s) it is predicted on its own."""
    meta = {"weight_decay": 1e-3, "lr": 0.4}
    eng = _power_engine(("time_scale", "decay_factor", "time_power"), meta=meta)
    p = eng.start * np.array([0.7, 1.3, 1.1])
    cols = eng.time_columns(p)
    assert sorted(cols) == [0, 2]
    q = cols[0]
    assert np.allclose(np.log(q[:2] / p[:2]), -fitting._DIFF_STEP, rtol=1e-12, atol=0) and q[2] == p[2]
    assert eng.values(q)["lambda_W"] == pytest.approx(eng.values(p)["lambda_W"], rel=1e-14)
    r0 = eng.residuals(p)
    J = eng.jacobian(p, upper=eng.box[1])
    assert eng.integrations == 2                                   # the base and decay_factor's column
    budget, rtol = eng.step_budget(), eng.stage_rtol
    qs = p.copy()
    qs[0] *= np.exp(-fitting._DIFF_STEP)
    col = (eng._evaluate(qs, budget, rtol)[0] - r0) / -fitting._DIFF_STEP
    assert np.max(np.abs(J[:, 0] - col)) <= 1e-2 * np.max(np.abs(col))
    untied = _power_engine(("time_scale", "time_power"), meta=meta)
    assert sorted(untied.time_columns(untied.start)) == [1]


def test_scan_points_at_several_time_scales_share_one_integration():
    """The scan's time-scale candidates of one model are read off the prediction with the
    largest time scale (their saves lie within its horizon): one integration, residuals equal
    to separate predictions to the scan's tolerance; where the step budget runs out first, the
    candidates beyond it are penalised from the same save on as their own predictions are."""
    for max_steps in (fitting._SCAN_MAX_STEPS, 60):
        eng = _power_engine(("time_scale", "lambda"), time="scale")
        q0 = eng.start.copy()
        points = [q0 * np.array([10.0 ** f, 1.0]) for f in (-2.0, -1.0, 0.0, 1.0, 2.0)]
        eng.prefetch_scan(points, max_steps)
        assert eng.integrations == 1
        rtol = max(eng.rtol, fitting._SCAN_RTOL)
        fresh = _power_engine(("time_scale", "lambda"), time="scale")
        failed = 0
        for q in points:
            r = eng._cache[eng._key(q, max_steps, rtol, True)]
            sep = fresh._evaluate(q, max_steps, rtol)[0]
            pen = sep == fitting._PENALTY
            failed += bool(pen.any())
            assert np.array_equal(r == fitting._PENALTY, pen)
            assert np.max(np.abs(r - sep)) <= 1e-4 * max(1.0, np.max(np.abs(sep[~pen])))
        assert (failed > 0) == (max_steps == 60)


def test_a_time_column_at_the_lower_edge_steps_forward():
    """At the lower edge of its box the time power's column steps forward (the backward point
    would leave the box), still read off the base prediction, which then runs on past its
    horizon: equal to a separate prediction to 1e-9 of the column."""
    eng = _power_engine()
    p = eng.start * np.array([0.7, 1.3, 1.0])
    p[2] = eng.box[0][2]
    q = eng.time_columns(p)[2]
    assert np.log(q[2] / p[2]) == pytest.approx(fitting._DIFF_STEP, rel=1e-12)
    r0 = eng.residuals(p)
    J = eng.jacobian(p, upper=eng.box[1])
    assert eng.integrations == 2                                   # the base and lambda's column
    sep = eng._evaluate(q, eng.step_budget(), eng.stage_rtol)[0]
    col = (sep - r0) / fitting._DIFF_STEP
    assert np.max(np.abs(J[:, 2] - col)) <= 1e-9 * np.max(np.abs(col))


# --- stopping when the linearised model promises too little --------------------------------------

def test_promised_gain_is_the_bounded_linear_models_reduction():
    """fitting._promised_gain: n·log(rss / the least rss of r + J·δ) over δ in the box, against
    numpy's least squares (the box open) and the clipped one-parameter step (the box binding)."""
    rng = np.random.default_rng(4)
    J = rng.normal(size=(40, 3))
    r = J @ np.array([0.3, -0.2, 0.1]) + 0.05 * rng.normal(size=40)
    lo, hi = np.full(3, -10.0), np.full(3, 10.0)
    z = np.zeros(3)
    step = np.linalg.lstsq(J, -r, rcond=None)[0]
    best = float(np.sum((r + J @ step) ** 2))
    assert fitting._promised_gain(J, r, z, lo, hi) == pytest.approx(40 * np.log(float(r @ r) / best), rel=1e-9)
    # one parameter whose best step 0.3 leaves the box at 0.1: the step stops at the edge
    j = J[:, :1]
    r1 = -0.3 * j[:, 0] + 0.01 * rng.normal(size=40)
    edge = float(np.sum((r1 + j[:, 0] * 0.1) ** 2))
    assert fitting._promised_gain(j, r1, np.zeros(1), np.array([-5.0]), np.array([0.1])) == pytest.approx(
        40 * np.log(float(r1 @ r1) / edge), rel=1e-9)
    assert fitting._promised_gain(J, np.full(40, np.nan), z, lo, hi) == np.inf


def test_the_local_fit_stops_when_the_linearised_model_promises_too_little(monkeypatch):
    """The linear-features fit of the synthetic run stops when the bounded linear model at its
    accepted point promises at most _PROMISE_AIC (its message says so), with fewer predictions
    than the stall rule alone needs (measured 70 against 82) and an n·log(rss) within 0.01 of
    that fit's (measured 0.001)."""
    import ufm.bridge as br
    run = _synthetic_run()
    fast = br.fit(run, "linear-features")
    monkeypatch.setattr(fitting, "_PROMISE_STOP", False)
    slow = br.fit(run, "linear-features")
    assert fast.message_.startswith("converged: the linearised model promises") and fast.success_
    assert not slow.message_.startswith("converged: the linearised model promises")
    assert fast.engine_.integrations < slow.engine_.integrations
    assert fast.n_ * np.log(fast.rss_ / slow.rss_) < 0.01
