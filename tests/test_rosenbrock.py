"""The Rosenbrock method (ufm/rosenbrock.py, ufm/kernels/rosenbrock.py), stiffness detection and
``method="auto"`` (ufm/engine.py).

Closed forms (tests/README.md): the Saxe logistic mode (MSE, aligned balanced init) for the
convergence order, and the linear bias relaxation (MSE, W = H = 0), made stiff by a large η_b,
for L-stable behaviour and the stiffness verdict.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ufm
from ufm.rosenbrock import ORDER_TOL, RODAS4, RosenbrockMethod, rosenbrock_order_defects
from systems import aligned_mse_init, bias_relaxation, bias_relaxation_init, logistic_u, soft_label_problem


def test_rodas4_satisfies_its_order_conditions_and_no_more():
    ar = RODAS4.arrays
    main = rosenbrock_order_defects(ar["alpha"], ar["Gamma"], ar["b"], 5)
    embedded = rosenbrock_order_defects(ar["alpha"], ar["Gamma"], ar["b_embedded"], 4)
    # measured: main orders 1-4 within 1.8e-15, order 5 off by 4.3e-3; embedded 1-3 within
    # 2e-15, order 4 off by 0.10 -- the stated orders are exactly the orders
    assert max(main[:4]) < ORDER_TOL and main[4] > 1e-3
    assert max(embedded[:3]) < ORDER_TOL and embedded[3] > 1e-2
    # stiffly accurate: the new state is the last stage value plus the last increment
    assert np.allclose(ar["a"][5, :5], ar["m"][:5]) and ar["m"][5] == 1.0


def test_lu_solves_w_from_its_transpose_layout_and_flags_singular_matrices():
    """kernels.rosenbrock.lu_factor takes W as its row-major transpose (W column-major, LAPACK's
    layout); a zero leading entry forces a row interchange."""
    from ufm.kernels import rosenbrock as kr
    rng = np.random.default_rng(3)
    W = rng.normal(size=(7, 7))
    W[0, 0] = 0.0
    M = np.ascontiguousarray(W.T)
    piv = np.zeros(7, dtype=np.int32)
    assert kr.lu_factor(M, piv) == 0
    b = rng.normal(size=7)
    x = b.copy()
    kr.lu_solve(M, piv, x)
    assert np.abs(W @ x - b).max() < 1e-12 * np.abs(b).max() * np.linalg.cond(W)
    for bad in (np.ones((3, 3)), np.diag([1.0, np.nan, 1.0])):
        assert kr.lu_factor(np.ascontiguousarray(bad.T), np.zeros(3, dtype=np.int32)) == 1


def test_a_mistyped_coefficient_fails_on_construction():
    a = np.array(RODAS4.a)
    a[3, 1] += 1e-6
    with pytest.raises(ValueError, match="order condition of order 2 fails for m"):
        RosenbrockMethod(name="typo", gamma=RODAS4.gamma, a=tuple(map(tuple, a)), C=RODAS4.C, m=RODAS4.m,
                         m_embedded=RODAS4.m_embedded, order=4, error_order=3, dense=RODAS4.dense, dense_order=3)


def test_l_stability_of_the_stability_function():
    ar = RODAS4.arrays
    s = RODAS4.stages

    def R(z):
        return 1.0 + z * ar["b"] @ np.linalg.solve(np.eye(s) - z * (ar["alpha"] + ar["Gamma"]), np.ones(s))

    # R(z) ~ 8.8/z at the far left (measured |R(−1e8)| = 8.8e-8): R(−∞) = 0
    assert abs(R(-1e10)) < 1e-8
    # measured max 0.9990 over the sampled left half-plane
    assert max(abs(R(complex(-x, y))) for x in np.logspace(-3, 4, 40) for y in (0.0, 0.5 * x, 3 * x)) <= 1.0


class Saxe:
    K, n, lam, u0, t_end = 3, 3, 0.03, 0.05, 30.0

    def __init__(self):
        self.problem, self.W, self.H = aligned_mse_init(self.K, self.n, 5, self.u0)
        self.model = ufm.UFM(self.problem, loss="mse", lambda_W=self.lam, lambda_H=self.lam)

    def errors(self, steps, space="parameters", method="rodas4"):
        """(error at t_end, error at a save inside a step) with the step held at t_end/steps
        (tolerances so loose that every step is accepted: the step is h_max)."""
        h = self.t_end / steps
        t = np.array([3.5 * h, self.t_end])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # Gram space from a width-5 state
            tr = ufm.solve(self.model, ufm.State(self.W, self.H), t, method=method, rtol=1e3, atol=1e3, h_max=h,
                           save="logits", space=space)
        Y = self.problem.Y
        u = np.einsum("tkn,kn->t", tr.logits, Y) / np.sum(Y * Y)
        err = np.abs(u - logistic_u(t, self.u0, self.K, self.n, self.lam))
        return err[1], err[0], tr.info["rejected_steps"], tr.info


@pytest.mark.parametrize("space", ["parameters", "gram"])
def test_convergence_order_is_four(space):
    sx = Saxe()
    steps = np.array([30, 60, 120, 240])
    results = [sx.errors(s, space) for s in steps]
    assert all(r[2] == 0 for r in results)
    end = [r[0] for r in results]
    dense = [r[1] for r in results]
    slope = -np.polyfit(np.log(steps), np.log(end), 1)[0]
    # measured 4.09 (parameters) and 4.03 (Gram): the stated order 4
    assert 3.8 < slope < 4.4
    # the continuous extension (order 3, local error h^4): measured slopes 4.61 and 4.28
    assert -np.polyfit(np.log(steps), np.log(dense), 1)[0] > 3.5


def test_global_error_tracks_rtol():
    sx = Saxe()
    t = np.linspace(1.0, sx.t_end, 12)
    exact = logistic_u(t, sx.u0, sx.K, sx.n, sx.lam)
    Y = sx.problem.Y
    for rtol in (1e-5, 1e-8):
        tr = ufm.solve(sx.model, ufm.State(sx.W, sx.H), t, method="rodas4", rtol=rtol, atol=rtol * 1e-2, save="logits")
        u = np.einsum("tkn,kn->t", tr.logits, Y) / np.sum(Y * Y)
        err = np.abs(u - exact).max() / np.abs(exact).max()
        # measured 3.9e-6 at rtol 1e-5 and 4.3e-9 at 1e-8
        assert err < 10 * rtol


def _stiff_bias_model(lr_b=1e5):
    p = soft_label_problem(3, 5)
    return ufm.UFM(p, loss="mse", bias=True, lambda_b=0.3, lambda_W=0.1, lambda_H=0.2, lr_W=1.7, lr_H=0.6, lr_b=lr_b)


B0 = np.array([2.0, 0.05, 1.0])
T_STIFF = np.geomspace(1e-6, 100, 30)


def test_stiff_linear_decay_takes_few_steps_and_is_accurate():
    """Rate η_b(Σπ + λ_b) = 1.3e5 over t up to 100: an explicit method would need ~4e6 steps."""
    m = _stiff_bias_model()
    tr = ufm.solve(m, bias_relaxation_init(m, 4, B0), T_STIFF, method="rodas4", save="b")
    # measured: 125 accepted, 3 rejected, error 9.7e-9
    assert tr.info["accepted_steps"] + tr.info["rejected_steps"] < 300
    assert np.abs(tr.b - bias_relaxation(m, B0, T_STIFF)).max() < 1e-7
    assert tr.info["jacobians"] == tr.info["accepted_steps"]     # one per step, kept on rejection


def test_explicit_run_that_turns_stiff_stops_with_a_clear_message():
    m = _stiff_bias_model()
    with pytest.raises(ufm.IntegrationError) as info:
        ufm.solve(m, bias_relaxation_init(m, 4, B0), T_STIFF, method="dopri5", save="b", max_steps=100_000)
    err = info.value
    assert err.reason == "stiff"
    msg = str(err)
    assert "turned stiff" in msg and "stability boundary 3.31" in msg and "method='auto'" in msg
    # stopped at the first check (500 steps), not at max_steps
    assert err.trajectory.info["accepted_steps"] + err.trajectory.info["rejected_steps"] <= 600


def test_auto_switches_and_matches_the_closed_form():
    m = _stiff_bias_model()
    tr = ufm.solve(m, bias_relaxation_init(m, 4, B0), T_STIFF, method="auto", save="b")
    assert tr.info["method"] == "auto" and tr.info["stiff_method"] == "rodas4"
    assert 0 < tr.info["switched_to_stiff_at"] < T_STIFF[-1]
    # measured error 5.5e-9 with 507 accepted steps
    assert np.abs(tr.b - bias_relaxation(m, B0, T_STIFF)).max() < 1e-7
    assert tr.info["accepted_steps"] < 1000


def test_auto_does_not_switch_on_a_non_stiff_run():
    sx = Saxe()
    t = np.linspace(1.0, sx.t_end, 5)
    a = ufm.solve(sx.model, ufm.State(sx.W, sx.H), t, method="auto")
    b = ufm.solve(sx.model, ufm.State(sx.W, sx.H), t, method=a.info["explicit_method"])
    assert "switched_to_stiff_at" not in a.info
    assert np.array_equal(a.gram_H, b.gram_H)


def test_mse_large_init_finishes_with_auto_and_stops_quickly_with_dopri5():
    p = ufm.settings.balanced(3, 1)
    m = ufm.UFM(p, loss="mse", lambda_W=1e-3, lambda_H=1e-3)
    init = m.init(4, scale=1e3, seed=0)
    t = np.geomspace(0.1, 100, 10)
    with pytest.raises(ufm.IntegrationError) as info:
        ufm.solve(m, init, t, method="dopri5")
    assert info.value.reason == "stiff"
    tr = ufm.solve(m, init, t, method="auto")
    ref = ufm.solve(m, init, t, method="rodas4", rtol=1e-11, atol=1e-13)
    # measured: auto 513 attempted steps, loss within 1.1e-9 relative of the tight run
    assert tr.info["accepted_steps"] + tr.info["rejected_steps"] < 2000
    assert np.allclose(tr.loss, ref.loss, rtol=1e-8, atol=0)


def test_a_rejected_rosenbrock_trial_leaves_no_trace_on_the_explicit_run(monkeypatch):
    """``auto`` tries one Rosenbrock step before it switches; when every trial is rejected (the
    kernel run at rtol = atol = 1e-30 for the trials), the run is exactly the explicit method's:
    the trial neither moves the state nor changes the explicit step sequence, and each trial
    counts as one rejected step."""
    from ufm import engine
    m = ufm.UFM(ufm.settings.balanced(6), lambda_W=1e-3, lambda_H=1e-3)
    init = m.init(6, scale=0.01, seed=0)
    t = np.geomspace(0.1, 1e6, 12)
    real = engine._kr.integrate_rosenbrock
    trials = []

    def hopeless(z, carry, ts, j_end, rtab, ctl, *rest):
        trials.append(float(carry[engine._k.CARRY_H]))
        return real(z, carry, ts, j_end, rtab, engine.Controls(1e-30, 1e-30, ctl.h_max, ctl.max_steps), *rest)

    monkeypatch.setattr(engine._kr, "integrate_rosenbrock", hopeless)
    auto = ufm.solve(m, init, t, method="auto")
    explicit = ufm.solve(m, init, t, method=auto.info["explicit_method"])
    assert "switched_to_stiff_at" not in auto.info and len(trials) >= 2
    assert np.array_equal(auto.gram_H, explicit.gram_H)
    assert auto.info["accepted_steps"] == explicit.info["accepted_steps"]
    assert auto.info["rejected_steps"] == explicit.info["rejected_steps"] + len(trials)


def test_auto_on_the_long_horizon_switches_early_at_the_benchmark_accuracy():
    """The issue-11 long-horizon case (CE, K = N = 10, d = 16, λ = 1e-3, scale 0.01, 40 saves to
    t = 1e6): the explicit method is held at its stability limit from t ~ 1e4 on; auto tries
    RODAS4 at twice the break-even step every 100 steps once it is, and switches near t ~ 4e4."""
    from benchmarks import peers
    case = peers.Case(K=10, d=16, t=tuple(np.geomspace(0.1, 1e6, 40)))
    m, init = case.model(), case.init()
    auto = ufm.solve(m, init, case.times, method="auto")
    ref = ufm.solve(m, init, case.times, method="vern7", rtol=1e-12, atol=1e-14)
    # measured: 2,158 evaluations (5,177 when checked every 500 steps and switched at once), 5
    # Jacobians, switch at t = 4.0e4; gram_H within 5.0e-9 of the tight run
    assert auto.info["rhs_evaluations"] < 3000 and auto.info["jacobians"] <= 10
    assert 1e4 < auto.info["switched_to_stiff_at"] < 1e5
    assert np.abs(auto.gram_H - ref.gram_H).max() < 1e-8 * np.abs(ref.gram_H).max()


def test_auto_tries_no_rosenbrock_step_where_the_explicit_method_finishes_for_less():
    """The issue-11 small case (the same flow to t = 1e4): at its stiffness check after 100
    steps the explicit step is already stability-limited, but ~12 steps remain, fewer
    evaluations than one RODAS4 step's n + 6; a trial there was rejected and cost a Jacobian
    and an LU (auto 2.9 ms vs vern7 1.9 ms, measured). auto is now its explicit method's run."""
    from benchmarks import peers
    case = peers.Case(K=10, d=16, t=tuple(np.geomspace(0.1, 1e4, 40)))
    m, init = case.model(), case.init()
    auto = ufm.solve(m, init, case.times, method="auto")
    explicit = ufm.solve(m, init, case.times, method=auto.info["explicit_method"])
    assert "switched_to_stiff_at" not in auto.info and auto.info.get("jacobians", 0) == 0
    assert auto.info["rejected_steps"] == explicit.info["rejected_steps"]
    assert np.array_equal(auto.gram_H, explicit.gram_H)


def test_auto_estimates_no_spectral_radius_where_the_explicit_method_finishes_for_less(monkeypatch):
    """The same case: the "finishes for less than one RODAS4 step" rule needs only the step
    ((t_end - t)/h steps), so it is applied before the spectral-radius estimate, whose 40
    tangents cost more than the rest of the run's overhead (auto 2.34 ms vs vern7 2.06 ms with
    the estimate, 2.09 ms without, measured side by side). The long horizon, where
    the explicit method has far to go, still estimates it and switches."""
    from benchmarks import peers
    from ufm import engine
    calls = []
    real = engine.spectral_radius
    monkeypatch.setattr(engine, "spectral_radius", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    case = peers.Case(K=10, d=16, t=tuple(np.geomspace(0.1, 1e4, 40)))
    m, init = case.model(), case.init()
    auto = ufm.solve(m, init, case.times, method="auto")
    assert auto.info["accepted_steps"] + auto.info["rejected_steps"] > engine.AUTO_CHECK_STEPS   # a check was due
    assert calls == []
    ufm.solve(m, init, np.geomspace(0.1, 1e6, 40), method="auto")
    assert len(calls) > 0


def test_gram_space_rodas4_solves_in_the_independent_coordinates():
    """Gram space factorises the stage systems in the upper triangles of G_W and G_H (n_s = 33
    of n = 45 at K = N = 3 with a bias): the run keeps the Grams exactly symmetric and is the
    parameter-space run's flow (the same ODE in other coordinates) to the tolerance; with a
    coupling and a bias."""
    from ufm.kernels import rosenbrock as kr
    from systems import pd_kernel
    m = ufm.UFM(ufm.settings.balanced(3), lambda_W=1e-3, lambda_H=2e-3, bias=True, lambda_b=1e-3,
                coupling=pd_kernel(3, 1))
    init = m.init(4, scale=0.3, seed=2)
    t = np.geomspace(0.1, 1e5, 12)
    ia, ib = kr.symmetric_coordinates(ufm.engine.pack_model(m, "gram"))
    assert ia.size == 9 + 6 + 6 + 3 and len(set(ia) | set(ib)) == 9 + 9 + 9 + 3
    gram = ufm.solve(m, init, t, method="rodas4", space="gram", rtol=1e-10, atol=1e-12, save="all")
    param = ufm.solve(m, init, t, method="rodas4", rtol=1e-10, atol=1e-12)
    for G in (gram.gram_W, gram.gram_H):
        assert np.array_equal(G, np.swapaxes(G, 1, 2))
    # measured: 2.4e-11 relative (1,714 steps); the full-n LU it replaced left asymmetries of 9e-16
    assert np.abs(gram.gram_H - param.gram_H).max() < 1e-8 * np.abs(param.gram_H).max()


def test_auto_hands_a_fast_transient_back_to_the_explicit_method():
    """MSE from scale 1e3 to t = 1e4: stiff early, then the weights' collapse near t ~ 5e3 is a
    transient where the Rosenbrock step no longer pays (engine.implicit_pays); auto goes back to
    the explicit method there and stays (no ping-pong), at RODAS4's accuracy."""
    p = ufm.settings.balanced(3, 1)
    m = ufm.UFM(p, loss="mse", lambda_W=1e-3, lambda_H=1e-3)
    init = m.init(4, scale=1e3, seed=0)
    t = np.geomspace(0.1, 1e4, 10)
    auto = ufm.solve(m, init, t, method="auto")
    rodas = ufm.solve(m, init, t, method="rodas4")
    ref = ufm.solve(m, init, t, method="rodas4", rtol=1e-11, atol=1e-13)
    # measured: auto 875 Jacobians and 2 switches (to RODAS4 and back), RODAS4 alone 2,596;
    # gram_H within 9.8e-10 (auto) and 7.6e-10 (rodas4) of the tight run
    assert auto.info["method_switches"] == 2
    assert auto.info["jacobians"] < 0.5 * rodas.info["jacobians"]
    scale = np.abs(ref.gram_H).max()
    assert np.abs(auto.gram_H - ref.gram_H).max() < 1e-8 * scale
    assert np.abs(rodas.gram_H - ref.gram_H).max() < 1e-8 * scale


@pytest.mark.parametrize("method", ["rodas4", "ros34pw2"])
def test_chunked_calls_continue_the_run_and_max_steps_counts_over_calls(method):
    """A run in ~50 kernel calls (progress) continues from the carry: it reaches the same
    solution (each call's last step lands on its last save, as in the explicit driver, so the
    step sequences differ) and the step budget spans all calls. A W-method's stage cache
    carries J and the LU from call to call."""
    m = _stiff_bias_model(lr_b=1e3)
    init = bias_relaxation_init(m, 4, B0)
    exact = bias_relaxation(m, B0, T_STIFF)
    one = ufm.solve(m, init, T_STIFF, method=method, save="b")
    calls = []
    chunked = ufm.solve(m, init, T_STIFF, method=method, save="b", progress=lambda t, te: calls.append(t))
    assert len(calls) == len(T_STIFF) and calls == sorted(calls) and calls[-1] == T_STIFF[-1]
    # measured: 7.5e-9 (one call) and 2.3e-9 (chunked) from the closed form
    assert np.abs(one.b - exact).max() < 1e-7 and np.abs(chunked.b - exact).max() < 1e-7
    if method == "ros34pw2":      # far fewer LUs than steps although the run is ~50 calls
        assert chunked.info["lu_factorizations"] < chunked.info["accepted_steps"] / 5
    budget = one.info["accepted_steps"] // 2
    for progress in (None, lambda t, te: None):
        with pytest.raises(ufm.IntegrationError) as info:
            ufm.solve(m, init, T_STIFF, method=method, save="b", max_steps=budget, progress=progress)
        got = info.value.trajectory.info
        assert info.value.reason == "max_steps"
        assert got["accepted_steps"] + got["rejected_steps"] == budget
        saved = len(info.value.trajectory.t)
        assert 0 < saved < len(T_STIFF)
        assert np.abs(info.value.trajectory.b - exact[:saved]).max() < 1e-7


def test_unknown_method_lists_the_stiff_methods():
    m = _stiff_bias_model()
    with pytest.raises(ValueError, match="method: .*'rodas4', 'ros34pw2', 'auto'"):
        ufm.solve(m, bias_relaxation_init(m, 4, B0), T_STIFF, method="rodas9")


def _schur_case(rng, nc_m, nd, nb):
    """A stage matrix W (returned with its layout Wm = Wᵀ) whose block [nc_m, nc_m + nd) is
    diagonal, the (M, b) coordinates around it dense (b at the end, as symmetric_coordinates
    orders them)."""
    n = nc_m + nd + nb
    W = rng.normal(size=(n, n)) + 4.0 * np.eye(n)
    d = slice(nc_m, nc_m + nd)
    W[d, d] = np.diag(rng.uniform(1.0, 3.0, size=nd))
    return W, np.ascontiguousarray(W.T)


@pytest.mark.parametrize("nb", [0, 2])
def test_schur_complement_solves_the_stage_system_as_the_dense_lu(nb):
    """kernels.rosenbrock.schur_factor / schur_solve against numpy's dense solve (the reference):
    W x = b with W's Gram block diagonal, the (M, b) coordinates before and after it."""
    from ufm.kernels import rosenbrock as kr
    rng = np.random.default_rng(11)
    nc_m, nd = 6, 5
    W, Wm = _schur_case(rng, nc_m, nd, nb)
    n = W.shape[0]
    assert kr.diagonal_block(Wm, nc_m, nc_m + nd)
    ci = np.array(list(range(nc_m)) + list(range(n - nb, n)), dtype=np.int64)
    nc = ci.size
    S, piv = np.empty((nc, nc)), np.zeros(nc, dtype=np.int32)
    Q, R, dinv = np.empty((nc, nd)), np.empty((nd, nc)), np.empty(nd)
    assert kr.schur_factor(Wm.copy(), ci, nc_m, S, piv, Q, R, dinv) == 0
    for _ in range(3):
        b = rng.normal(size=n)
        x = b.copy()
        kr.schur_solve(S, piv, Q, R, dinv, ci, nc_m, x, np.empty(nc), np.empty(nd))
        ref = np.linalg.solve(W, b)
        assert np.abs(x - ref).max() < 1e-12 * np.linalg.cond(W) * np.abs(ref).max()
    # one off-diagonal entry in the Gram block: not diagonal (the driver takes the dense LU)
    Wm[nc_m, nc_m + 1] = 1e-300
    assert not kr.diagonal_block(Wm, nc_m, nc_m + nd)
    # a zero on D's diagonal: singular, reported as lu_factor does
    Wm2 = Wm.copy()
    Wm2[nc_m, nc_m + 1] = 0.0
    Wm2[nc_m + 2, nc_m + 2] = 0.0
    assert kr.schur_factor(Wm2, ci, nc_m, S, piv, Q, R, dinv) == 1


def _stiff_gram_run(model, init, t, dense):
    from ufm import engine
    from ufm.integration import initial_vector
    from ufm.kernels import rosenbrock as kr
    y, _ = initial_vector(model, init, "gram", 0.0)
    packed = engine.pack_model(model, "gram", 0)
    rtab = engine.rosenbrock_tableau(RODAS4)
    cache = engine.stage_cache(packed, y.size, rtab)
    cache.state[kr.CACHE_DENSE] = 1.0 if dense else 0.0
    buffers = engine.SaveBuffers(len(t), y.size, model.K, model.N, None, model.bias,
                                 engine.parse_save(("gram_W", "gram_H"), "gram"))
    stats = engine.stiff_stats()
    run = engine.integrate_stiff(packed, y, t, rtab, engine.controls(1e-9, 1e-12), engine.new_carry(0.0, 0.0), buffers,
                                 stats=stats, cache=cache)
    assert run.ok
    return buffers.fields(run.reached), stats


@pytest.mark.parametrize("bias", [False, True])
def test_linear_features_rodas4_factors_by_the_schur_complement_and_matches_the_dense_lu(bias):
    """The linear-features UFM's Gram block of the Jacobian is diagonal (each Gram entry sees the
    others only through its own decay): every RODAS4 factorisation takes the Schur complement
    (kernels.rosenbrock.schur_factor), and the run is the dense-LU run to rounding. A coupled
    UFM whose decay runs through Θ ≠ I fills that block: every factorisation is dense."""
    from systems import pd_kernel
    from ufm.kernels import rosenbrock as kr
    prob = ufm.settings.balanced(3)
    t = np.geomspace(0.1, 1e4, 10)
    lf = ufm.UFM(prob, lambda_W=1e-3, lambda_H=0.0, lambda_E=0.7, bias=bias, lambda_b=1e-3 if bias else 0.0,
                 coupling=pd_kernel(3, 1))
    init = lf.init(4, scale=0.3, seed=2)
    fast, st = _stiff_gram_run(lf, init, t, dense=False)
    slow, sd = _stiff_gram_run(lf, init, t, dense=True)
    assert st[kr.STAT_FACTORIZATIONS] > 10 and st[kr.STAT_SCHUR] == st[kr.STAT_FACTORIZATIONS]
    assert sd[kr.STAT_SCHUR] == 0
    for k in ("gram_H", "gram_W"):
        assert np.abs(fast[k] - slow[k]).max() < 1e-9 * np.abs(slow[k]).max()
    coupled = ufm.UFM(prob, lambda_W=1e-3, lambda_H=0.5, bias=bias, lambda_b=1e-3 if bias else 0.0,
                 coupling=pd_kernel(3, 1))
    _, sc = _stiff_gram_run(coupled, coupled.init(4, scale=0.3, seed=2), t, dense=False)
    assert sc[kr.STAT_FACTORIZATIONS] > 0 and sc[kr.STAT_SCHUR] == 0
