"""The work model behind ``method="auto"``'s switch (ufm/engine.py: field_work,
explicit_step_cost, rosenbrock_step_cost, implicit_pays, break_even_step) and the switch state a
settling prediction carries across its chunks (engine.SwitchState, ufm.bridge.settling)."""

from __future__ import annotations

import numpy as np

import ufm
from ufm import engine
from ufm.integration import resolve_method
from ufm.rosenbrock import RODAS4
from ufm.solvers import get_solver


def _gram(K: int, bias: bool = False):
    m = ufm.UFM(ufm.settings.balanced(K), lambda_W=1e-3, lambda_H=1e-3, bias=bias)
    n = 2 * K * K + K * K + (K if bias else 0)
    return engine.pack_model(m, "gram"), n


def _lu_work(ns: int) -> float:
    return engine.WORK_LU_FLOP * 2.0 * ns ** 3 / 3.0


def test_the_rosenbrock_step_counts_its_lu_in_the_factorised_coordinates():
    """Gram space factorises n_s = KN + K(K+1)/2 + N(N+1)/2 coordinates (528 at K = N = 16);
    the LU's 2 n_s³/3 flops are most of a step from K = N = 16 on and all of its growth: the
    step's work grows like n_s³ (x14 from 16 to 25 for the LU alone), the field's like K³ at most."""
    costs = {}
    for K in (9, 16, 25):
        packed, n = _gram(K)
        ns = engine.factorised_order(packed, n)
        assert ns == K * K + K * (K + 1)
        work = engine.rosenbrock_step_cost(packed, n, RODAS4) * engine.field_work(packed, n)
        costs[K] = (work, _lu_work(ns))
    for K in (16, 25):
        work, lu = costs[K]
        assert 0.6 * work < lu < work
    growth = costs[25][0] / costs[16][0]
    assert 0.7 * (1275 / 528) ** 3 < growth < (1275 / 528) ** 3
    # with a bias, one tangent per bias coordinate joins the assembled Jacobian, and b joins n_s
    packed_b, n_b = _gram(16, bias=True)
    assert engine.factorised_order(packed_b, n_b) == 528 + 16
    assert engine.rosenbrock_step_cost(packed_b, n_b, RODAS4) > engine.rosenbrock_step_cost(*_gram(16), RODAS4)


def test_switching_does_not_pay_where_the_lu_outweighs_the_explicit_steps_it_saves():
    """K = N = 25 in Gram space (mlp_factorial5x5_sgd's fits): a RODAS4 step 400 times the
    stability-limited Tsitouras step saves 400 steps, ~2,600 evaluations; the old count (n + 6
    = 1,881 evaluations, the LU left out) made that pay, and auto was slower there (compare
    40.5 s vs 28.8 s with dopri5). One LU of order 1,275 alone costs more."""
    packed, n = _gram(25)
    solver, stiff = resolve_method("auto", 1e-7)
    costs = engine.step_costs(packed, n, solver, stiff)
    rho, boundary = 5.0, engine.stability_boundary(solver)
    h = 400 * boundary / rho
    assert 400 * engine._evaluations_per_step(solver) >= n + stiff.stages     # the old rule's verdict: pays
    lu_in_fields = _lu_work(engine.factorised_order(packed, n)) / engine.field_work(packed, n)
    assert 400 * costs.explicit < lu_in_fields
    assert not engine.implicit_pays(h, rho, boundary, costs)
    # the break-even step is where the verdict turns
    h_be = engine.break_even_step(rho, boundary, costs)
    assert h_be > h
    assert engine.implicit_pays(1.0001 * h_be, rho, boundary, costs)
    assert not engine.implicit_pays(0.9999 * h_be, rho, boundary, costs)


def test_switching_pays_at_small_n_where_the_old_count_overcharged_the_jacobian():
    """K = N = 9 in Gram space (mlp_factorial3x3_sgd_d64, where auto already made the compare
    3x faster): the Jacobian is assembled from its blocks, not n tangents, and the LU is of
    order 171: a RODAS4 step 40 stability-limited steps long pays, which the old count (n + 6 =
    249 evaluations against 40 x 6) refused."""
    packed, n = _gram(9)
    solver, stiff = resolve_method("auto", 1e-7)
    costs = engine.step_costs(packed, n, solver, stiff)
    rho, boundary = 5.0, engine.stability_boundary(solver)
    h = 40 * boundary / rho
    assert 40 * engine._evaluations_per_step(solver) < n + stiff.stages        # the old rule's verdict: no
    assert engine.implicit_pays(h, rho, boundary, costs)


def test_the_explicit_step_cost_is_its_evaluations_and_its_vector_updates():
    """First-same-as-last pairs evaluate one stage fewer than they have (DOPRI5 6 of 7, Tsit5 6
    of 7; Verner 7(6) 10 of 10); the vector updates (one per non-zero coefficient: 31, 34 and
    51) add ~0.7, ~0.7 and ~1.1 evaluations at K = N = 16 (measured whole steps: 5-6, 6-7 and
    9.5-11.7 evaluations' time)."""
    packed, n = _gram(16)
    for name, evaluations, updates in (("dopri5", 6, 31), ("tsit5", 6, 34), ("vern7", 10, 51)):
        cost = engine.explicit_step_cost(packed, n, get_solver(name))
        assert np.isclose(cost, evaluations + engine.WORK_VECTOR_ELEMENT * n * updates / engine.field_work(packed, n))
        assert evaluations < cost < evaluations + 1.5


def test_a_settling_run_that_switched_stays_implicit_across_its_chunks(monkeypatch):
    """solve_settling integrates in chunks between equilibrium tests; with ``auto`` each chunk
    used to start explicit again, pay a trial and switch anew (MSE from scale 1e3, chunks of 20
    steps: 2 switches, 13 rejected steps, 748 accepted, measured before the SwitchState). Now
    the chunked run switches once, as the unchunked one does."""
    from ufm.bridge import settling
    m = ufm.UFM(ufm.settings.balanced(3, 1), loss="mse", lambda_W=1e-3, lambda_H=1e-3)
    init = m.init(4, scale=1e3, seed=0)
    t = np.geomspace(0.1, 100, 10)
    whole = settling.solve_settling(m, init, t, method="auto")
    monkeypatch.setattr(settling, "SETTLE_CHECK_STEPS", 20)
    chunked = settling.solve_settling(m, init, t, method="auto")
    assert chunked.info["settle_tests"] >= 3                 # it did run in several chunks
    assert whole.info["method_switches"] == chunked.info["method_switches"] == 1
    # measured: 501 accepted steps chunked, 554 whole
    assert chunked.info["accepted_steps"] <= 1.1 * whole.info["accepted_steps"]
    scale = np.abs(whole.gram_H).max()
    assert np.abs(chunked.gram_H - whole.gram_H).max() < 1e-6 * scale


def test_the_deep_model_picks_autos_explicit_pair_by_the_runs_tolerance():
    """solve_deep's ``method="auto"`` is the pair ufm.solve's auto runs at that rtol (Tsit5 at
    the fits' 1e-5 and 1e-7, Verner 7(6) below 1e-7); it took Verner's pair at every tolerance
    before (10 evaluations a step: the deep rows of compare(run, method="auto") ran 1.1-2.3x
    longer)."""
    m = ufm.DeepUFM(ufm.settings.balanced(3), layers=1, lambda_W=1e-2)
    init = m.init(4, scale=0.3, seed=0)
    t = np.geomspace(0.1, 10.0, 4)
    for rtol in (1e-5, 1e-7, 1e-9):
        tr = ufm.solve(m, init, t, method="auto", rtol=rtol)
        assert tr.info["method"] == get_solver("auto", rtol).name
    assert get_solver("auto", 1e-7).name == "tsit5" and get_solver("auto", 1e-9).name == "vern7"
