"""The explicit driver's stage sums and the engine's memo of per-solver and per-model values.

The stage sums (:func:`ufm.kernels.integrate._combine`, ``_weighted_sum``) add up to four
terms per pass over the state; the claim is that each element's arithmetic is unchanged, so
they must equal, to the bit, the plain sum written out below in numpy (one term at a time, in
stage order, zero weights skipped, the first term written rather than added to zeros).
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
