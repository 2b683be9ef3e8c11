"""ufm.solve: accuracy against scipy and closed forms, Gram space, fixed points, errors, I/O."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import ufm
from ufm.reference import flatten, unflatten
from systems import aligned_mse_init, flat_rhs, logistic_u, rel_err, variant_models

VARIANTS = variant_models()
T_SAVE = np.geomspace(1e-2, 40.0, 12)


@pytest.mark.parametrize("space", ["parameters", "gram"])
@pytest.mark.parametrize("ident,model", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_matches_scipy_dop853(ident, model, space):
    """Saved Grams agree with scipy's DOP853 at rtol 1e-11 to < 1e-7 relative (ufm at rtol 1e-10).

    d = 8 >= N: with d < N the Gram-space ODE is still exact but its rank-deficient states can
    be unstable (see test_gram_space_warns_when_rank_deficient)."""
    x0 = model.init(8, scale=0.8, seed=11)
    if model.bias:
        x0 = model.state(x0.W, x0.H, np.linspace(-0.3, 0.3, model.K))
    tr = ufm.solve(model, x0, T_SAVE, rtol=1e-10, atol=1e-12, space=space)
    d = 8 if space == "parameters" else None
    y0 = flatten(x0 if space == "parameters" else x0.grams())
    ref = solve_ivp(flat_rhs(model, d), (0.0, T_SAVE[-1]), y0, method="DOP853", t_eval=T_SAVE,
                    rtol=1e-11, atol=1e-13)
    assert ref.success
    states = [unflatten(ref.y[:, i], model.K, model.N, d, model.bias) for i in range(len(T_SAVE))]
    grams = [s.grams() if space == "parameters" else s for s in states]
    assert rel_err(tr.gram_H, [g.gram_H for g in grams]) < 1e-7
    assert rel_err(tr.gram_W, [g.gram_W for g in grams]) < 1e-7
    assert rel_err(tr.logits, [g.logits() for g in grams]) < 1e-7
    np.testing.assert_allclose(tr.loss, [model.loss(s) for s in states], rtol=1e-7)


@pytest.mark.parametrize("coupled", [False, True])
def test_gram_space_equals_parameter_space_to_1e4(coupled):
    """The width-free Gram ODE reproduces parameter space over t ∈ [0, 1e4] (< 1e-8 relative)."""
    p = ufm.settings.factorial((3, 3))
    m = ufm.UFM(p, lambda_W=1e-3, lambda_H=1e-3, coupling=p.coupling("attribute", 1.0) if coupled else None)
    x0 = m.init(32, scale=1e-3, seed=3)
    t = np.concatenate([[0.0], np.geomspace(1e-2, 1e4, 40)])
    kw = dict(rtol=1e-12, atol=1e-16)
    a = ufm.solve(m, x0, t, space="parameters", **kw)
    b = ufm.solve(m, x0, t, space="gram", **kw)
    assert rel_err(b.gram_H, a.gram_H) < 1e-8
    assert rel_err(b.gram_W, a.gram_W) < 1e-8
    assert rel_err(b.logits[1:], a.logits[1:]) < 1e-8


@pytest.mark.parametrize("space", ["parameters", "gram"])
@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_closed_form_logistic_mode(space, lam):
    """Balanced aligned MSE init: logits u(t)·Y with u the logistic of docs/theory.md (Saxe modes)."""
    K, n, u0 = 4, 3, 1e-3
    problem, W, H = aligned_mse_init(K, n, 6, u0)
    m = ufm.UFM(problem, loss="mse", lambda_W=lam, lambda_H=lam)
    t = np.geomspace(0.1, 400, 25)
    # the aligned state has rank K < N, so Gram space warns that rank may not be kept; here the
    # flow keeps rank K (the minimiser has rank K) and the closed form must be met all the same
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tr = ufm.solve(m, ufm.State(W, H), t, rtol=1e-11, atol=1e-14, space=space)
    u = logistic_u(t, u0, K, n, lam)
    err = np.abs(tr.logits - u[:, None, None] * problem.Y).max(axis=(1, 2))
    assert np.all(err < 1e-9 * u), (err / u).max()


def _zhu_ce_grams(K, n, lw, lh):
    """docs/theory.md, regularised CE (Zhu et al. 2021): ETF with ‖w‖² = ((K−1)/K)√(nλ_H/λ_W)·m."""
    margin = np.log(1 / np.sqrt(n * lw * lh) - (K - 1))
    w2 = (K - 1) / K * np.sqrt(n * lh / lw) * margin
    GW = w2 * K / (K - 1) * (np.eye(K) - 1 / K)
    Y = ufm.settings.balanced(K, n).Y
    return GW, (lw / (n * lh)) * Y.T @ GW @ Y


def _tirer_bruna_mse_grams(K, n, lw, lh, bias):
    """docs/theory.md, regularised MSE: WWᵀ = (√(nλ_H/λ_W) − Knλ_H)₊ T, H̄ᵀH̄ = (√(λ_W/(nλ_H)) − Kλ_W)₊ T,
    T = I (no bias) or P_K (bias)."""
    T = np.eye(K) - 1 / K if bias else np.eye(K)
    gw = max(np.sqrt(n * lh / lw) - K * n * lh, 0.0)
    gh = max(np.sqrt(lw / (n * lh)) - K * lw, 0.0)
    Y = ufm.settings.balanced(K, n).Y
    return gw * T, Y.T @ (gh * T) @ Y


def _converge(model, d, t_end, space):
    x0 = model.init(d, scale=1.0, seed=7)
    return ufm.solve(model, x0, np.geomspace(1.0, t_end, 20), rtol=1e-10, atol=1e-12, space=space)


@pytest.mark.parametrize("K,n,lw,lh", [(4, 2, 5e-3, 1e-2), (3, 3, 2e-2, 1e-2), (5, 1, 1e-2, 1e-2)])
def test_converges_to_regularised_ce_minimiser(K, n, lw, lh):
    m = ufm.UFM(ufm.settings.balanced(K, n), lambda_W=lw, lambda_H=lh)
    GW, GH = _zhu_ce_grams(K, n, lw, lh)
    for space, t_end in (("gram", 2e4), ("parameters", 2e4)):
        tr = _converge(m, K * n + 1, t_end, space)
        assert np.abs(tr.gram_W[-1] - GW).max() < 1e-6 * np.abs(GW).max(), space
        assert np.abs(tr.gram_H[-1] - GH).max() < 1e-6 * np.abs(GH).max(), space


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("K,n,lw,lh", [(4, 2, 5e-3, 1e-2), (3, 3, 2e-2, 1e-2)])
def test_converges_to_regularised_mse_minimiser(K, n, lw, lh, bias):
    m = ufm.UFM(ufm.settings.balanced(K, n), loss="mse", lambda_W=lw, lambda_H=lh, bias=bias)
    GW, GH = _tirer_bruna_mse_grams(K, n, lw, lh, bias)
    tr = _converge(m, K * n + 1, 3e4, "gram")
    assert np.abs(tr.gram_W[-1] - GW).max() < 1e-6 * np.abs(GW).max()
    assert np.abs(tr.gram_H[-1] - GH).max() < 1e-6 * np.abs(GH).max()


def test_saves_at_t0_record_the_initial_state_and_loss():
    p = ufm.settings.balanced(3, 2)
    m = ufm.UFM(p, lambda_W=0.1, lambda_H=0.1, bias=True, lambda_b=0.2)
    x0 = m.init(4, scale=0.5, seed=0)
    tr = ufm.solve(m, x0, [0.0, 1.0], save="all")
    np.testing.assert_array_equal(tr.W[0], x0.W)
    np.testing.assert_array_equal(tr.H[0], x0.H)
    # measured: both equal numpy's to the last bit (difference 0); 1e-15 allows a few ulps should
    # the kernel's loops and numpy's BLAS ever round differently
    assert tr.loss[0] == pytest.approx(m.loss(x0), rel=1e-15)
    np.testing.assert_allclose(tr.gram_H[0], x0.H.T @ x0.H, rtol=1e-15)
    with pytest.raises(ValueError, match="t0"):
        ufm.solve(m, x0, [0.5, 1.0], t0=1.0)


def test_gram_space_warns_when_rank_deficient():
    """A rank-deficient start (d < N) sits on an unstable manifold of the Gram ODE when the
    dynamics wants more rank (MSE with K = N = 6, d = 5 wants G_H ≈ 1.03·I): rounding errors
    along the missing direction grow until Gram space leaves parameter space. solve warns."""
    p = ufm.settings.factorial((2, 3))
    m = ufm.UFM(p, loss="mse", lambda_W=0.03, lambda_H=0.02, coupling=p.coupling("attribute", 0.8))
    x0 = m.init(5, scale=0.8, seed=11)
    t = np.geomspace(1e-2, 80, 14)
    a = ufm.solve(m, x0, t)
    with pytest.warns(UserWarning, match="rank"):
        b = ufm.solve(m, x0, t, space="gram")
    assert np.linalg.eigvalsh(a.gram_H[-1])[0] < 1e-12       # parameters: rank 5 for ever
    assert np.linalg.eigvalsh(b.gram_H[-1])[0] > 0.5         # Gram space: the lost direction grew
    x_full = m.init(8, scale=0.8, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = ufm.solve(m, x_full, t, space="gram")
    assert rel_err(c.gram_H, ufm.solve(m, x_full, t).gram_H) < 1e-8


def test_a_gram_space_run_that_leaves_the_semidefinite_cone_says_so():
    """MSE from init scale 1e3 (K = N = 10, d = 16): G_H's eigenvalues span 1.9e-6 to 2.3e6, so
    rtol 1e-8 allows errors in every entry far above the smallest; the Gram state leaves the
    cone, where the Gram flow is unstable, and RODAS4 stops with a step underflow (at t ≈ 74;
    parameter space finishes). The start is well conditioned (the spread appears by t = 0.1),
    so only the error can tell: it names the cone, the eigenvalues and the way out, not
    stiffness of an explicit method."""
    m = ufm.UFM(ufm.settings.balanced(10), loss="mse", lambda_W=1e-3, lambda_H=1e-3)
    x0 = m.init(16, scale=1e3, seed=0)
    with pytest.raises(ufm.IntegrationError) as err:
        ufm.solve(m, x0, np.geomspace(0.1, 1e4, 40), space="gram", method="rodas4")
    msg = str(err.value)
    assert err.value.reason == "step_underflow"
    assert "left the positive semidefinite cone" in msg and "space='parameters'" in msg
    assert "explicit method, too stiff" in msg            # the underflow's generic causes, worded for any method
    name = msg.split("smallest eigenvalue of ")[1].split(" ")[0]
    low = float(msg.split(f"{name} is ")[1].split(" ")[0])
    assert name in ("G_W", "G_H") and low < 0


def test_gram_space_warns_when_a_full_width_start_is_ill_conditioned():
    """d >= N, but one feature column 1e-6 times the others: HᵀH has eigenvalue ratio ~1e-12,
    below what the integrator resolves, the same unstable manifold as a rank-deficient start."""
    m = ufm.UFM(ufm.settings.balanced(4), loss="mse", lambda_W=0.01, lambda_H=0.01)
    x0 = m.init(6, scale=0.8, seed=3)
    H = x0.H.copy()
    H[:, 0] = H[:, 1] + 1e-6 * H[:, 0]           # two contexts almost equal: G_H nearly singular
    with pytest.warns(UserWarning, match="the Gram Hᵀ H of init.H is numerically rank-deficient"):
        ufm.solve(m, m.state(x0.W, H), [1.0], space="gram")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ufm.solve(m, x0, [1.0], space="gram")        # the unmodified start: no warning


def test_gram_cone_escape_reads_the_flat_gram_layout():
    from ufm.integration import CONE_TOLERANCE, gram_cone_escape
    K, N = 3, 4
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(K, 6)), rng.normal(size=(6, N))
    GW, GH, M = A @ A.T, B.T @ B, A @ B
    y = np.concatenate([M.ravel(), GW.ravel(), GH.ravel()])
    assert gram_cone_escape(y, K, N, False) is None                     # a realisable state
    off = GH - (np.linalg.eigvalsh(GH)[0] + 1e-3) * np.eye(N)            # smallest eigenvalue -1e-3
    y_off = np.concatenate([M.ravel(), GW.ravel(), off.ravel(), np.zeros(K)])
    name, low, high = gram_cone_escape(y_off, K, N, True)
    assert name == "G_H" and low == pytest.approx(-1e-3, rel=1e-9) and high == pytest.approx(np.linalg.eigvalsh(off)[-1])
    # rounding-sized negative eigenvalues are not an escape
    tiny = GH - (np.linalg.eigvalsh(GH)[0] + 0.1 * CONE_TOLERANCE * np.linalg.eigvalsh(GH)[-1]) * np.eye(N)
    assert gram_cone_escape(np.concatenate([M.ravel(), GW.ravel(), tiny.ravel()]), K, N, False) is None
    y_nan = y.copy()
    y_nan[0] = np.nan
    assert gram_cone_escape(y_nan, K, N, False) is None                  # divergence is told elsewhere


def test_gram_space_rejects_parameters_it_does_not_have():
    p = ufm.settings.balanced(3, 1)
    m = ufm.UFM(p)
    x0 = m.init(4, seed=0)
    with pytest.raises(ValueError, match="save"):
        ufm.solve(m, x0, [1.0], space="gram", save=["W"])
    with pytest.raises(TypeError, match="init"):
        ufm.solve(m, x0.grams(), [1.0], space="parameters")
    tr = ufm.solve(m, x0, [1.0], space="gram", save="all")
    assert tr.W is None and tr.gram_H is not None and tr.info["d"] is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(t=[1.0, 1.0]), "strictly increasing"),
    (dict(t=[]), "at least one"),
    (dict(t=[1.0, np.nan]), "finite"),
    (dict(method="rk45"), "method"),
    (dict(method="rk4"), "dt"),
    (dict(rtol=0.0), "rtol"),
    (dict(atol=-1.0), "atol"),
    (dict(space="weights"), "space"),
    (dict(save=["Q"]), "save"),
    (dict(max_steps=0), "max_steps"),
    (dict(progress=3), "progress"),
])
def test_bad_arguments_are_named(kwargs, match):
    p = ufm.settings.balanced(3, 1)
    m = ufm.UFM(p)
    x0 = m.init(4, seed=0)
    args = dict(t=[1.0])
    args.update(kwargs)
    t = args.pop("t")
    with pytest.raises((ValueError, TypeError), match=match):
        ufm.solve(m, x0, t, **args)
    with pytest.raises(TypeError, match="model"):
        ufm.solve("model", x0, [1.0])
    with pytest.raises(ValueError, match="init"):
        ufm.solve(ufm.UFM(ufm.settings.balanced(4, 1)), x0, [1.0])


def _model_and_init():
    p = ufm.settings.balanced(3, 2)
    m = ufm.UFM(p, loss="mse", lambda_W=0.01, lambda_H=0.01)
    return m, m.init(4, scale=0.5, seed=0)


def test_divergence_raises_with_partial_trajectory():
    m, x0 = _model_and_init()
    t = np.arange(1, 200) * 7.0
    with pytest.raises(ufm.IntegrationError, match="t = ") as info:
        ufm.solve(m, x0, t, method="euler", dt=7.0)  # far beyond Euler's stability limit
    err = info.value
    assert err.reason == "nonfinite"
    assert 0 < len(err.trajectory) < len(t)
    assert np.all(np.isfinite(err.trajectory.loss))
    assert err.t >= err.trajectory.t[-1]


def test_max_steps_and_step_underflow_raise_with_partial_trajectory():
    m, x0 = _model_and_init()
    t = np.geomspace(0.01, 100, 30)
    with pytest.raises(ufm.IntegrationError) as info:
        ufm.solve(m, x0, t, max_steps=20)
    assert info.value.reason == "max_steps"
    full = ufm.solve(m, x0, t)
    part = info.value.trajectory
    assert 0 < len(part) < len(t)
    np.testing.assert_allclose(part.gram_H, full.gram_H[:len(part)], rtol=1e-6)
    with pytest.raises(ufm.IntegrationError) as info:
        ufm.solve(m, x0, t, rtol=1e-30, atol=0.0)  # no step can meet this: the step underflows
    assert info.value.reason == "step_underflow"
    assert "underflow" in str(info.value)


def test_progress_callback_and_chunking_do_not_change_results():
    m, x0 = _model_and_init()
    t = np.geomspace(0.01, 100, 60)
    calls = []
    a = ufm.solve(m, x0, t, progress=lambda tr, te: calls.append((tr, te)))
    b = ufm.solve(m, x0, t)
    assert len(calls) >= 10 and calls[-1][0] == pytest.approx(100.0)
    assert all(x[0] <= y[0] for x, y in zip(calls, calls[1:]))
    # chunks restart the step controller, so the runs differ at the level of the tolerance (1e-8)
    assert rel_err(a.gram_H, b.gram_H) < 1e-6


def test_deterministic_for_a_seed():
    m, _ = _model_and_init()
    t = np.geomspace(0.01, 10, 10)
    a = ufm.solve(m, m.init(4, seed=5), t, save="all")
    b = ufm.solve(m, m.init(4, seed=5), t, save="all")
    for name in ("W", "H", "gram_H", "gram_W", "logits", "loss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_trajectory_save_load_round_trip(tmp_path):
    p = ufm.settings.factorial((2, 3))
    theta = ufm.PiecewiseCoupling([0.0, 2.0], np.stack([p.coupling("attribute", 0.5), p.coupling("attribute", 1.0)]))
    m = ufm.UFM(p, lambda_W=0.01, lambda_H=0.02, coupling=theta, bias=True, lambda_b=0.1, lr_H=0.5)
    tr = ufm.solve(m, m.init(5, seed=1), np.geomspace(0.1, 10, 7), save="all")
    path = tr.save(tmp_path / "traj")
    assert path.endswith(".npz") and not [f for f in os.listdir(tmp_path) if "tmp" in f]
    back = ufm.Trajectory.load(path)
    for name in ("t", "loss", "data_loss", "W", "H", "b", "gram_W", "gram_H", "logits"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tr, name))
    assert back.model == m and back.problem == p
    assert json.dumps(back.info, sort_keys=True) == json.dumps(tr.info, sort_keys=True)
    np.testing.assert_array_equal(back.metric("semantic_gap"), tr.metric("semantic_gap"))
    with pytest.raises(ValueError, match="path"):
        ufm.Trajectory.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a ufm trajectory"):
        ufm.Trajectory.load(tmp_path / "other.npz")


def test_piecewise_coupling_switches_at_breakpoint():
    """Θ(t) piecewise: the run equals two runs chained at the breakpoint."""
    p = ufm.settings.factorial((2, 2))
    k1, k2 = p.coupling("attribute", 0.3), p.coupling("attribute", 1.5)
    m = ufm.UFM(p, lambda_W=0.01, lambda_H=0.01, coupling=ufm.PiecewiseCoupling([0.0, 3.0], np.stack([k1, k2])))
    x0 = m.init(6, scale=0.3, seed=2)
    whole = ufm.solve(m, x0, [3.0, 8.0], rtol=1e-11, atol=1e-13, save="all")
    first = ufm.solve(m.replace(coupling=k1), x0, [3.0], rtol=1e-11, atol=1e-13, save="all")
    mid = first.state()
    np.testing.assert_array_equal(mid.W, first.W[-1])
    # up to the breakpoint both runs take the same steps (the one that would pass t = 3 is
    # shortened to land on it in both), so the states there are identical, not merely close
    np.testing.assert_array_equal(whole.W[0], first.W[-1])
    np.testing.assert_array_equal(whole.H[0], first.H[-1])
    second = ufm.solve(m.replace(coupling=k2), mid, [8.0], t0=3.0, rtol=1e-11, atol=1e-13, save="all")
    # measured: 1.2e-13 largest relative difference (the second leg restarts the controller);
    # with piece 0 kept after t = 3 the difference is 1.7
    np.testing.assert_allclose(whole.gram_H[-1], second.gram_H[-1], rtol=1e-12)
    # the breakpoint costs no extra work: measured 145 accepted steps against 44 + 103 for the
    # two legs, 1 rejected step
    legs = first.info["accepted_steps"] + second.info["accepted_steps"]
    assert abs(whole.info["accepted_steps"] - legs) <= 0.1 * legs
    assert whole.info["rejected_steps"] <= 3


NOJIT_SCRIPT = r"""
import json, sys, numba, numpy as np, ufm
from ufm.theory.reduce import reduce
# K = 4 < N = 8 (two samples per context), distinct rates, a coupling that switches at t = 1
p = ufm.settings.factorial((2, 2), samples_per_context=2)
theta = ufm.PiecewiseCoupling([0.0, 1.0], np.stack([p.coupling("attribute", 0.7), p.coupling("attribute", 0.2)]))
out = {"disable_jit": int(numba.config.DISABLE_JIT)}
for loss in ("ce", "mse"):
    m = ufm.UFM(p, loss=loss, lambda_W=0.02, lambda_H=0.01, lambda_E=0.01, bias=True, lambda_b=0.03,
                coupling=theta, lr_W=1.3, lr_H=0.7, lr_b=0.45)
    x0 = m.init(3, scale=0.5, seed=0)
    a = ufm.solve(m, x0, [0.5, 2.0], save="all")
    g = ufm.solve(m, x0, [0.5, 2.0], space="gram")
    tr = ufm.train(m, x0, 20, 0.1, optimizer="adam", save_steps=[0, 10, 20])
    out[loss] = [a.gram_H.tolist(), a.b.tolist(), g.gram_H.tolist(), tr.gram_H.tolist(), a.loss.tolist()]
    # every adaptive tableau (dense-only stages, DOP853's two error estimates) across the breakpoint
    for method in ("tsit5", "vern7", "dop853"):
        out[loss].append(ufm.solve(m, x0, [0.5, 0.7, 2.0], method=method, save="gram_H").gram_H.tolist())
# the parallel sweep kernel (two configurations on two threads: integrate_many, not the serial path)
configs = [{"setting": "factorial", "levels": [2, 2], "samples_per_context": 2, "d": 4, "lambda": 1e-2,
            "beta": 0.5, "bias": True, "lr_H": 0.7, "seed": s} for s in range(2)]
res = ufm.sweep(configs, [0.5, 2.0], threads=2, progress=False, save="all")
out["sweep"] = [res.trajectory(i).gram_H.tolist() for i in range(len(res))]
# the reduced space through the driver (ufm.solve(space="reduced")) and the reduced field
# behind ufm.theory.reduce
rng = np.random.default_rng(0)
red = []
for q, loss, bias in ((ufm.settings.factorial((2, 2), samples_per_context=2), "ce", True),
                      (ufm.settings.hierarchy(2, 2), "mse", False)):
    mq = ufm.UFM(q, loss=loss, bias=bias, lambda_W=0.03, lambda_H=0.02, lambda_E=0.01,
                 lambda_b=0.05 if bias else 0.0, coupling=q.coupling("attribute", 0.8), lr_W=1.3, lr_H=0.7, lr_b=0.9)
    r = reduce(mq)
    red.append(r.rhs(rng.normal(size=r.size)).tolist())
    red.append(ufm.solve(mq, mq.isotropic(0.3), [0.5, 2.0], space="reduced", save="gram_H").gram_H.tolist())
out["reduced"] = red
json.dump(out, sys.stdout)
"""


def test_results_agree_with_numba_jit_disabled():
    """The kernels run as plain Python under NUMBA_DISABLE_JIT=1 and give the same numbers:
    solve in both spaces across a breakpoint, train, the parallel sweep kernel and the
    reduced space (solve and field), on K ≠ N with distinct rates."""
    def run(env_extra):
        env = dict(os.environ, **env_extra)
        res = subprocess.run([sys.executable, "-c", NOJIT_SCRIPT], capture_output=True, text=True, env=env,
                             timeout=600)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)
    jit = run({"NUMBA_DISABLE_JIT": "0"})
    nojit = run({"NUMBA_DISABLE_JIT": "1"})
    assert (jit.pop("disable_jit"), nojit.pop("disable_jit")) == (0, 1)
    assert set(jit) == {"ce", "mse", "sweep", "reduced"} == set(nojit)
    for key in jit:
        assert len(jit[key]) == len(nojit[key]) > 0, key
        for a, b in zip(jit[key], nojit[key]):
            # measured: bit-identical here; 1e-14 leaves room for LLVM rounding differently from
            # the interpreter (contracted multiply-adds) on other machines
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-14, atol=1e-16, err_msg=key)


def test_continuing_from_a_saved_state_in_gram_space():
    """Trajectory.state() rebuilds a GramState (logits minus bias) that continues the run."""
    p = ufm.settings.balanced(3, 2)
    m = ufm.UFM(p, lambda_W=0.02, lambda_H=0.02, bias=True)
    x0 = m.init(8, scale=0.5, seed=4)
    whole = ufm.solve(m, x0, [2.0, 6.0], space="gram", rtol=1e-11, atol=1e-13, save="all")
    first = ufm.solve(m, x0, [2.0], space="gram", rtol=1e-11, atol=1e-13, save="all")
    rest = ufm.solve(m, first.state(), [6.0], t0=2.0, space="gram", rtol=1e-11, atol=1e-13, save="all")
    assert rel_err(rest.gram_H, whole.gram_H[1:]) < 1e-8
    with pytest.raises(ValueError, match="b"):
        ufm.solve(m, x0, [1.0], save=("gram_W", "gram_H", "logits")).state()


def test_auto_runs_explicit_only_where_the_stiff_switch_cannot_hold_its_jacobian(monkeypatch):
    """method="auto" on a state whose dense Jacobian (n = 1280: 26 MB, above the size below
    which check_memory does not look) exceeds the memory available runs its explicit pick alone
    (the K = N = 512, d = 256 benchmark case would need 1 TiB), while asking for rodas4 itself
    still refuses, naming the argument."""
    import ufm._validation as validation
    m = ufm.UFM(ufm.settings.balanced(10), lambda_W=1e-3, lambda_H=1e-3)
    x0 = m.init(64, scale=1e-2, seed=0)
    t = np.geomspace(0.1, 10.0, 4)
    free = ufm.solve(m, x0, t, method="auto")
    assert 16.0 * (20 * 64) ** 2 > validation.ALWAYS_FITS
    monkeypatch.setattr(validation, "available_memory", lambda: 20_000_000)
    tight = ufm.solve(m, x0, t, method="auto")
    assert tight.info["explicit_method"] == free.info["explicit_method"]
    assert np.array_equal(tight.gram_H, ufm.solve(m, x0, t, method=tight.info["explicit_method"]).gram_H)
    with pytest.raises(ValueError, match="method, space: rodas4 .* Jacobian"):
        ufm.solve(m, x0, t, method="rodas4")
