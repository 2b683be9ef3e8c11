"""The Jacobian-reusing W-method ROS34PW2 (ufm/rosenbrock.py: W-method order conditions;
ufm/kernels/rosenbrock.py: J and the LU kept over held steps; ufm/engine.py: its amortised cost
and auto's choice of stiff method). Closed forms as tests/test_rosenbrock.py: the Saxe
logistic mode for convergence, the stiff linear bias relaxation; the piecewise coupling of
tests/test_accuracy.py (scipy DOP853 reference leg by leg) for breakpoints."""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from ufm import engine
from ufm.rosenbrock import ORDER_TOL, RODAS4, ROS34PW2, RosenbrockMethod, rosenbrock_order_defects, w_order_defects
from ufm.solvers import get_solver
from systems import bias_relaxation, bias_relaxation_init
from test_rosenbrock import B0, T_STIFF, Saxe, _stiff_bias_model


def test_ros34pw2_satisfies_its_w_order_conditions_and_no_more():
    ar = ROS34PW2.arrays
    a, G = ar["alpha"], ar["Gamma"]
    w_main, w_emb = w_order_defects(a, G, ar["b"], 4), w_order_defects(a, G, ar["b_embedded"], 3)
    r_main = rosenbrock_order_defects(a, G, ar["b"], 4)
    # measured: W orders 1-3 within 2e-15, order 4 off by 0.12; embedded 1-2, order 3 off by 0.096;
    # as a Rosenbrock method order 4 off by 0.052
    assert max(w_main[:3]) < ORDER_TOL and w_main[3] > 1e-2
    assert max(w_emb[:2]) < ORDER_TOL and w_emb[2] > 1e-2
    assert max(r_main[:3]) < ORDER_TOL and r_main[3] > 1e-2
    # RODAS4 is a W-method of order 1 only (order 2 off by 0.032): it must not reuse J
    ra = RODAS4.arrays
    assert w_order_defects(ra["alpha"], ra["Gamma"], ra["b"], 2)[1] > 1e-2
    assert ROS34PW2.reuses_jacobian and not RODAS4.reuses_jacobian
    assert engine.jacobian_reuse(engine.rosenbrock_tableau(ROS34PW2))
    assert not engine.jacobian_reuse(engine.rosenbrock_tableau(RODAS4))
    # stiffly accurate (the new state is the last stage's) and L-stable (checked on construction)
    assert np.allclose(ar["a"][3, :3], ar["m"][:3]) and ar["m"][3] == 1.0


def test_a_claimed_w_order_that_fails_is_refused():
    with pytest.raises(ValueError, match="W-method order condition of order 2 fails for m"):
        RosenbrockMethod(name="rodas4w", gamma=RODAS4.gamma, a=RODAS4.a, C=RODAS4.C, m=RODAS4.m,
                         m_embedded=RODAS4.m_embedded, order=4, error_order=3, dense=RODAS4.dense, dense_order=3,
                         w_order=4)


@pytest.mark.parametrize("space", ["parameters", "gram"])
def test_convergence_with_one_jacobian_over_many_steps(space):
    """Fixed steps (h_max, loose tolerances): ROS34PW2 keeps one Jacobian and LU over up to
    JACOBIAN_MAX_AGE steps and still converges at order >= 3; RODAS4 forced to reuse the same
    way (engine.jacobian_reuse patched) loses its order -- the W conditions are what allow it."""
    sx = Saxe()
    steps = np.array([30, 60, 120, 240])

    def slope(method, space):
        tr = [sx.errors(s, space, method) for s in steps]
        return -np.polyfit(np.log(steps), np.log([r[0] for r in tr]), 1)[0], tr

    s_w, runs = slope("ros34pw2", space)
    # measured 4.38 (parameters), 4.66 (Gram); 1-10 Jacobians for 30-240 steps
    assert s_w > 2.8
    assert all(r[3]["jacobians"] <= s // 20 + 8 for r, s in zip(runs, steps))
    assert all(r[2] == 0 for r in runs)


def test_rodas4_with_a_reused_jacobian_loses_its_order(monkeypatch):
    sx = Saxe()
    steps = np.array([30, 60, 120, 240])
    monkeypatch.setattr(engine, "jacobian_reuse", lambda rtab: True)
    errs = [sx.errors(s, "parameters", "rodas4") for s in steps]
    assert all(r[3]["jacobians"] < s for r, s in zip(errs, steps))
    # measured slope 2.29 (W-order 1; with a fresh J each step 4.09, tests/test_rosenbrock.py)
    assert -np.polyfit(np.log(steps), np.log([r[0] for r in errs]), 1)[0] < 3.0


def test_stiff_linear_decay_with_few_factorisations():
    """Rate 1.3e5 over t up to 100 (tests/test_rosenbrock.py): accurate, and one LU serves ~20
    steps instead of one per step."""
    m = _stiff_bias_model()
    tr = ufm.solve(m, bias_relaxation_init(m, 4, B0), T_STIFF, method="ros34pw2", save="b")
    i = tr.info
    # measured: 601 accepted, 4 rejected, 25 Jacobians, 29 LUs, error 1.0e-8
    assert np.abs(tr.b - bias_relaxation(m, B0, T_STIFF)).max() < 1e-7
    assert i["accepted_steps"] < 1500
    assert i["lu_factorizations"] < i["accepted_steps"] / 10 and i["jacobians"] <= i["lu_factorizations"]


def test_breakpoints_are_not_crossed_with_a_held_step():
    """The piecewise coupling of tests/test_accuracy.py: the error tracks rtol across both
    breakpoints (a step clipped to a breakpoint refactors instead of using the held LU)."""
    from test_accuracy import ATOL_PER_RTOL, _breakpoint_case, normalised_error
    model, x0, t, ref = _breakpoint_case()
    for rtol in (1e-5, 1e-8):
        atol = ATOL_PER_RTOL * rtol
        tr = ufm.solve(model, x0, t, method="ros34pw2", rtol=rtol, atol=atol, save=("W", "H", "b"))
        got = np.concatenate([tr.W.reshape(len(t), -1), tr.H.reshape(len(t), -1), tr.b], axis=1)
        # measured normalised errors 0.26 (1e-5), 0.51 (1e-8)
        assert normalised_error(got, ref, rtol, atol) < 2.5
        assert tr.info["lu_factorizations"] < tr.info["accepted_steps"]


def test_gram_space_keeps_the_grams_symmetric():
    m = ufm.UFM(ufm.settings.balanced(4), lambda_W=0.5, lambda_E=1.0)
    init = m.init(8, scale=1.0, seed=0)
    t = np.geomspace(0.1, 1e3, 12)
    w = ufm.solve(m, init, t, method="ros34pw2", space="gram", rtol=1e-9, atol=1e-12, save="all")
    ref = ufm.solve(m, init, t, method="rodas4", space="gram", rtol=1e-11, atol=1e-13, save="all")
    for G in (w.gram_W, w.gram_H):
        assert np.array_equal(G, np.swapaxes(G, 1, 2))
    assert np.abs(w.gram_H - ref.gram_H).max() < 1e-7 * np.abs(ref.gram_H).max()


def test_the_amortised_lu_makes_the_w_step_cheap_where_the_lu_dominates():
    """The work model: ROS34PW2's step carries 1/STEPS_PER_FACTORISATION of its LU. At
    K = N = 16 in Gram space its step is a quarter of RODAS4's or less; auto picks it at a
    loose tolerance, where its lower order costs few extra steps, and RODAS4 at rtol 1e-8."""
    m = ufm.UFM(ufm.settings.balanced(16), lambda_W=1e-3, lambda_H=1e-3)
    packed = engine.pack_model(m, "gram")
    n = 3 * 16 * 16
    solver = get_solver("auto", 1e-5)
    w, r = engine.rosenbrock_step_cost(packed, n, ROS34PW2), engine.rosenbrock_step_cost(packed, n, RODAS4)
    assert w < 0.25 * r
    assert engine.auto_stiff_method(packed, n, solver, 1e-5) is ROS34PW2
    assert engine.auto_stiff_method(packed, n, solver, 1e-8) is RODAS4
    # small n_s: the LU is cheap, RODAS4's higher order wins at the default tolerance
    small = engine.pack_model(ufm.UFM(ufm.settings.balanced(3), lambda_W=1e-3, lambda_H=1e-3), "gram")
    assert engine.auto_stiff_method(small, 27, solver, 1e-8) is RODAS4


def test_auto_switches_to_the_w_method_where_the_model_picks_it():
    """Gram space, K = N = 16, linear features with decays ~1 to t = 1e4 at rtol 1e-5: auto
    switches to ROS34PW2 (the work model's pick) and keeps the tolerance."""
    m = ufm.UFM(ufm.settings.balanced(16), lambda_W=0.5, lambda_E=1.0)
    x0 = m.init(32, scale=1.0, seed=0)
    t = np.geomspace(0.1, 1e4, 40)
    tr = ufm.solve(m, x0, t, method="auto", space="gram", rtol=1e-5, atol=1e-8, save="gram_H")
    ref = ufm.solve(m, x0, t, method="rodas4", space="gram", rtol=1e-11, atol=1e-14, save="gram_H")
    assert tr.info["stiff_method"] == "ros34pw2" and 0 < tr.info["switched_to_stiff_at"] < t[-1]
    # measured 2.5e-7
    assert np.abs(tr.gram_H - ref.gram_H).max() < 1e-5 * np.abs(ref.gram_H).max()


def _w_step_reference(f, J, y, h, method):
    """One step of ``method`` in the transformed form of ufm.rosenbrock, in numpy, with the
    matrix ``J`` (any approximation of the Jacobian: a W-method's)."""
    ar = method.arrays
    s = method.stages
    W = np.eye(y.size) / (h * method.gamma) - J
    U = np.zeros((s, y.size))
    for i in range(s):
        r = f(y + ar["a"][i, :i] @ U[:i]) + (ar["C"][i, :i] / h) @ U[:i]
        U[i] = np.linalg.solve(W, r)
    return y + ar["m"] @ U


def test_held_steps_are_the_w_step_with_the_first_jacobian():
    """Two steps of h (h_max = h, tolerances so loose every step is accepted): the driver takes
    the second with the Jacobian and LU of the first (one of each), and both agree with a numpy
    W-step that uses J(y0) both times (ufm.reference's field and ufm.reference_tangent's J)."""
    from ufm.reference import flatten, unflatten, vector_field
    from ufm.reference_tangent import jacobian
    from ufm.states import State
    m = ufm.UFM(ufm.settings.balanced(3), lambda_W=0.05, lambda_H=0.1, bias=True, lambda_b=0.2)
    x0 = m.init(4, scale=0.7, seed=1)
    h = 0.3
    tr = ufm.solve(m, x0, [h, 2 * h], method="ros34pw2", rtol=1e3, atol=1e3, h_max=h, dt=h, save=("W", "H", "b"))
    assert tr.info["accepted_steps"] == 2 and tr.info["jacobians"] == 1 and tr.info["lu_factorizations"] == 1
    unflat = lambda y: unflatten(y, 3, 3, 4, True)  # noqa: E731
    f = lambda y: flatten(vector_field(m, unflat(y), 0.0))  # noqa: E731
    y0 = flatten(x0)
    J0 = jacobian(m, x0)
    y1 = _w_step_reference(f, J0, y0, h, ROS34PW2)
    y2 = _w_step_reference(f, J0, y1, h, ROS34PW2)
    for j, want in enumerate((y1, y2)):
        got = flatten(State(tr.W[j], tr.H[j], tr.b[j]))
        assert np.abs(got - want).max() < 1e-12 * np.abs(want).max()
    # and the second step is not the one with a fresh Jacobian (the reuse is real)
    fresh = _w_step_reference(f, jacobian(m, unflat(y1)), y1, h, ROS34PW2)
    assert np.abs(fresh - y2).max() > 1e-8 * np.abs(y2).max()
