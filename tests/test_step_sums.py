"""The explicit driver's stage sums and the engine's memo of per-solver and per-model values.

The stage sums (:func:`ufm.kernels.integrate._combine`, ``_weighted_sum``) add up to four
terms per pass over the state; the claim is that each element's arithmetic is unchanged, so
they must equal, to the bit, the plain sum written out below in numpy (one term at a time, in
stage order, zero weights skipped, the first term written rather than added to zeros). In
large states the driver runs them, and the step's end (``_step_end``: b-sum, divergence count,
error sums and norm), block by block; the blocked passes must give the same bits as the
whole-vector ones, and a whole solve through either path the same trajectory.
"""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from ufm import engine
from ufm.kernels import integrate as ki


def sequential_sum(k, w):
    """Σ_l w_l k_l, one term at a time in l order, zero weights skipped; None if all are zero."""
    acc = None
    for l, c in enumerate(w):
        if c != 0.0:
            acc = c * k[l] if acc is None else acc + c * k[l]
    return acc


def listed(w, n_all):
    """A weight row in the kernel's (index, weight) lists."""
    wts = np.zeros((1, n_all))
    wts[0, :len(w)] = w
    ix = np.zeros((1, n_all), dtype=np.int64)
    cf = np.zeros((1, n_all))
    cnt = np.array([ki._nonzero_terms(wts, 0, len(w), ix, cf)], dtype=np.int64)
    return ix, cf, cnt


@pytest.mark.parametrize("terms", range(0, 14))
def test_stage_sums_equal_the_one_term_at_a_time_sum_bit_for_bit(terms):
    rng = np.random.default_rng(terms)
    n_all, n = 16, 37                       # n not a multiple of a vector width
    k = rng.normal(size=(n_all, n)) * 10.0 ** rng.integers(-8, 8, size=(n_all, 1))
    y = rng.normal(size=n)
    w = np.zeros(n_all)
    w[rng.choice(n_all, size=terms, replace=False)] = rng.normal(size=terms)
    ix, cf, cnt = listed(w, n_all)
    assert cnt[0] == terms
    h = 0.37
    out = np.empty(n)
    ki._combine(y, k, ix, cf, cnt, 0, h, np.empty(n), out)
    acc = np.full(n, np.nan)
    ki._weighted_sum(k, ix, cf, cnt, 0, acc)
    # block by block (blocks of 8 and a tail of 5): the same bits
    blocked = np.full(n, np.nan)
    ki._stage_blocked(y, k, ix, cf, cnt, 0, h, np.empty(n), blocked, 8)
    np.testing.assert_array_equal(blocked, out)
    blocked_acc = np.full(n, np.nan)
    ki._weighted_sum_range(k, ix, cf, cnt, 0, blocked_acc, 0, 20)
    ki._weighted_sum_range(k, ix, cf, cnt, 0, blocked_acc, 20, n)
    np.testing.assert_array_equal(blocked_acc, acc)
    ref = sequential_sum(k, w)
    if ref is None:
        np.testing.assert_array_equal(out, y)
        np.testing.assert_array_equal(acc, 0.0)
        return
    np.testing.assert_array_equal(acc, ref)
    # the driver's stage: the sum of all but the last term, then y + h·(that + last term)
    last = max(np.flatnonzero(w))
    head = sequential_sum(k, np.where(np.arange(n_all) == last, 0.0, w))
    tail = w[last] * k[last]
    np.testing.assert_array_equal(out, y + h * (tail if head is None else head + tail))


def driver_lists(tab):
    """The (index, weight) lists of the b, e and e3 rows, as the driver builds them."""
    n_all, s = tab.A.shape[0], tab.stages
    wts = np.zeros((3, n_all))
    wts[0, :s], wts[1, :s] = tab.b, tab.e
    if tab.e3.shape[0] > 0:
        wts[2, :s] = tab.e3
    ix = np.zeros((3, n_all), dtype=np.int64)
    cf = np.zeros((3, n_all))
    cnt = np.array([ki._nonzero_terms(wts, r, s, ix, cf) for r in range(3)], dtype=np.int64)
    return ix, cf, cnt


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "vern7", "dop853", "rk4"])
@pytest.mark.parametrize("bad", [False, True])
def test_the_blocked_step_end_equals_the_whole_vector_passes_bit_for_bit(method, bad):
    """ynew, the divergence count and the error norm (one estimate, DOP853's two, or none for a
    fixed-step tableau) of ``_step_end_blocked`` (blocks of 8 and 12: lanes of the norm across
    blocks, a tail of n mod 4 = 3) against the driver's whole-vector passes (``_combine``,
    ``_weighted_sum``, ``_error_norm_of`` / ``_error_norm_dop853``); a diverged stage gives inf."""
    tab = engine.tableau(ufm.solvers.get_solver(method))
    estimates = 0 if not tab.adaptive else (2 if tab.e3.shape[0] > 0 else 1)
    ix, cf, cnt = driver_lists(tab)
    rng = np.random.default_rng(7)
    n = 103
    k = rng.normal(size=(tab.A.shape[0], n)) * 10.0 ** rng.integers(-6, 3, size=(tab.A.shape[0], 1))
    if bad:
        k[0, 50] = np.inf                            # b_0 != 0 in every tableau here
    y = rng.normal(size=n) * 10.0 ** rng.integers(-12, 2, size=n)
    h, rtol, atol = 0.0123, 1e-8, 1e-10
    # the whole-vector passes, as the driver makes them for small states
    ynew0 = np.full(n, np.nan)
    ki._combine(y, k, ix, cf, cnt, 0, h, np.empty(n), ynew0)
    bad0 = int(np.sum(~(np.abs(ynew0) <= ki.DIVERGED)))
    acc, acc3 = np.empty(n), np.empty(n)
    err0 = 0.0
    if bad0:
        err0 = np.inf
    elif estimates == 2:
        ki._weighted_sum(k, ix, cf, cnt, 1, acc)
        ki._weighted_sum(k, ix, cf, cnt, 2, acc3)
        err0 = ki._error_norm_dop853(y, ynew0, acc, acc3, h, rtol, atol)
    elif estimates == 1:
        ki._weighted_sum(k, ix, cf, cnt, 1, acc)
        err0 = ki._error_norm_of(y, ynew0, acc, h, rtol, atol)
    assert (bad0 > 0) == bad
    if estimates and not bad:
        assert 0.0 < err0 < np.inf
    for block in (8, 12):
        ynew = np.full(n, np.nan)
        n_bad, err = ki._step_end_blocked(y, k, ix, cf, cnt, 0, 1, 2, estimates, h, rtol, atol, np.empty(n),
                                          np.empty(n), ynew, block)
        if not bad:                                  # a rejected trial state is not used
            np.testing.assert_array_equal(ynew, ynew0)
        assert (n_bad > 0) == bad
        assert err == err0                           # the same bits, not close


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "vern7", "dop853", "rk4", "euler"])
def test_a_solve_through_the_blocked_step_loop_is_the_whole_vector_solve_bit_for_bit(method, monkeypatch):
    """The driver with both thresholds forced to 0 (every stage sum, dense output and step end
    in blocks of ki.BLOCK; n = 558: a full block and a tail that is no multiple of 4) and forced
    above n (whole-vector passes): the same trajectory, losses and counts, for every explicit
    tableau. The default solve at this size takes the whole-vector path, so it must agree too."""
    model = ufm.UFM(ufm.settings.balanced(9), lambda_W=1e-3, lambda_H=1e-3)
    x0 = model.init(31, scale=0.05, seed=3)
    ts = np.geomspace(0.1, 300.0, 9)
    n = 2 * 9 * 31
    assert ki.BLOCK < n < 2 * ki.BLOCK and n % 4 != 0 and n < min(ki.BLOCKED_STAGES_MIN_N, ki.BLOCKED_END_MIN_N)
    kw = dict(dt=0.25) if method in ("rk4", "euler") else dict(rtol=1e-9, atol=1e-11)
    default = ufm.solve(model, x0, ts, method=method, save=("W", "H"), **kw)
    runs, calls = [], []
    for min_n in (0, n + 1):
        def forced(y, carry, t_save, j_end, tab, ctl, packed, out, min_n=min_n):
            calls.append(min_n)
            return ki.run_steps(y, carry, t_save, j_end, tab, ctl, packed, out, min_n, min_n)
        monkeypatch.setattr(ki, "integrate", forced)
        runs.append(ufm.solve(model, x0, ts, method=method, save=("W", "H"), **kw))
    monkeypatch.undo()
    assert 0 in calls and n + 1 in calls                 # both solves ran through the forced driver
    blocked, whole = runs
    assert blocked.info["rhs_evaluations"] > 20
    for tr in (blocked, whole):
        np.testing.assert_array_equal(tr.W, default.W)
        np.testing.assert_array_equal(tr.H, default.H)
        np.testing.assert_array_equal(tr.loss, default.loss)
        assert tr.info["rhs_evaluations"] == default.info["rhs_evaluations"]
        assert tr.info.get("rejected_steps") == default.info.get("rejected_steps")


def test_the_kernel_tableau_and_stability_boundary_are_built_once_per_solver():
    vern7 = ufm.solvers.get_solver("vern7")
    assert engine.tableau(vern7) is engine.tableau(vern7)
    assert engine.tableau(vern7) is not engine.tableau(ufm.solvers.get_solver("tsit5"))
    fresh = engine._tableau(vern7)
    for a, b in zip(engine.tableau(vern7), fresh):
        np.testing.assert_array_equal(a, b)
    assert engine.stability_boundary(vern7) == engine.real_stability_boundary(vern7)


def test_the_auto_plan_is_the_work_models_and_follows_the_model():
    """auto's Rosenbrock pick and step prices are remembered per model header, state size, solver
    and rtol: the same as computing them afresh, and a different model (other sizes, space)
    gets its own."""
    vern7 = ufm.solvers.get_solver("vern7")
    plans = {}
    for K, space in ((10, "parameters"), (16, "parameters"), (16, "gram")):
        model = ufm.UFM(ufm.settings.balanced(K), lambda_W=1e-3, lambda_H=1e-3)
        d = 16 if space == "parameters" else 0
        packed = engine.pack_model(model, space, d)
        n = engine.initial_vector(model, model.init(16, scale=0.1, seed=0), space)[0].size
        for rtol in (1e-5, 1e-8):
            method, costs = engine.auto_plan(packed, n, vern7, rtol)
            assert engine.auto_plan(packed, n, vern7, rtol)[1] is costs          # remembered
            want = engine.auto_stiff_method(packed, n, vern7, rtol)
            assert method is want
            assert costs == engine.step_costs(packed, n, vern7, want)
            plans[K, space, rtol] = (method.name, costs)
    # the prices differ between the models (a stale entry would repeat the first one)
    assert plans[10, "parameters", 1e-8][1] != plans[16, "parameters", 1e-8][1]
    assert plans[16, "parameters", 1e-8][1] != plans[16, "gram", 1e-8][1]


def test_a_packed_model_is_shared_per_model_object_and_a_changed_model_packs_afresh():
    model = ufm.UFM(ufm.settings.balanced(6), lambda_W=1e-3, lambda_H=1e-3)
    a = engine.pack_model(model, "parameters", 8)
    assert engine.pack_model(model, "parameters", 8) is a
    assert engine.pack_model(model, "parameters", 9) is not a          # another width
    assert engine.pack_model(model, "gram") is not a                   # another space
    changed = model.replace(lambda_W=2e-3)                             # a new (immutable) model
    b = engine.pack_model(changed, "parameters", 8)
    assert b is not a
    fresh = engine._pack_model(changed, "parameters", 8)
    for x, y in zip(b, fresh):
        np.testing.assert_array_equal(x, y)
    assert a.coef[ufm.kernels.layout.C_LAM_W] == 1e-3 and b.coef[ufm.kernels.layout.C_LAM_W] == 2e-3
    # a solve does not write into the shared arrays
    before = [x.copy() for x in a]
    ufm.solve(model, model.init(8, scale=0.1, seed=0), [1.0, 10.0])
    for x, y in zip(a, before):
        np.testing.assert_array_equal(x, y)
    assert engine.pack_model(model, "parameters", 8) is a
