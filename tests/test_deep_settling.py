"""The deep family's certified linear tail (ufm.bridge.deep_settling): the bounds behind the
certificate against the numpy reference field, the filled tail against an accurate full
integration (within the certified bound), and states outside the basin never stopping."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ufm
from ufm.bridge import deep_settling as ds
from ufm.reference import data_loss_and_grad

PROB = ufm.settings.factorial((2, 2))          # K = N = 4, one-hot targets


def _blocks(state):
    return [state.H0] + list(state.layers) + [state.W]


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_gradient_bounds_behind_the_certificate(loss):
    """‖∇_i ℓ‖ <= g P / r_i and ⟨y_i, ∇_i ℓ⟩ = ⟨G, Z⟩ for every factor (numpy reference field),
    with g the module's bound on ‖G‖ (for MSE over ‖Z‖ <= P)."""
    model = ufm.DeepUFM(PROB, layers=2, loss=loss, lambda_W=0.1, lr_H=1.7)
    rng = np.random.default_rng(3)
    for scale in (0.3, 1.0, 2.0):
        state = model.init(5, scale=scale, seed=rng)
        zero_decay = model.replace(lambda_W=0.0, lambda_L=0.0, lambda_H=0.0)
        field = zero_decay.vector_field(state)               # −η_i ∇_i ℓ
        grads = [field.H0 / model.lr_H] + [g / model.lr_L for g in field.layers] + [field.W / model.lr_W]
        ys = _blocks(state)
        r = np.array([np.linalg.norm(y) for y in ys])
        P = float(np.prod(r))
        Z = state.logits()
        _, G = data_loss_and_grad(model, Z)
        g = ds._gradient_bound(model, P)
        assert np.linalg.norm(G) <= g
        for y, grad, ri in zip(ys, grads, r):
            assert np.linalg.norm(grad) <= g * P / ri * (1 + 1e-12)
            # ∇_i ℓ = -(dy_i/dt)/η_i, so ⟨y_i, ∇_i ℓ⟩ must equal −⟨G, Z⟩ with that sign convention
            assert np.sum(y * grad) == pytest.approx(-np.sum(G * Z), rel=1e-10)


def test_ce_gradient_bound_is_the_one_hot_value():
    model = ufm.DeepUFM(PROB, layers=1)
    pi = PROB.weights
    assert ds._gradient_bound(model, 1.0) == pytest.approx(math.sqrt(2.0 * np.sum(pi ** 2)))


def _decaying():
    """n = 3 factors, decay strong enough that a small start falls into the origin's basin."""
    model = ufm.DeepUFM(PROB, layers=1, lambda_W=0.5, lr_H=1.5)
    init = model.init(4, scale=0.6, seed=1)
    return model, init


@pytest.mark.parametrize("scale", [0.05, 0.07, 0.1])
def test_linear_tail_is_within_the_certified_bound_of_the_true_solution(scale):
    """From a state certified at a loose tolerance (so the bound is large enough to measure),
    the linear tail's W, G_W, G_H and Z against a tight integration of the true flow from the
    same state: each within the bound relative to the product of its factors' norms."""
    from ufm import engine
    from ufm.kernels import fields as kf
    model = ufm.DeepUFM(PROB, layers=2, lambda_W=0.7, lr_H=1.3)       # unequal rates
    state = model.init(4, scale=scale, seed=1)
    y = state.flat()
    ok, details = ds.origin_basin(model, y, 4, 1.0)
    assert ok
    bound = details["relative_error"]
    assert 1e-3 < bound < 0.5
    t = np.linspace(0.0, 30.0, 61)
    names = ("W", "gram_W", "gram_H", "logits")
    ref = ufm.solve(model, state, t, rtol=1e-12, atol=1e-40, save=names)
    packed = engine.pack_deep_model(model, "parameters", 4)
    buffers = engine.SaveBuffers(len(t), y.size, 4, 4, 4, False, engine.parse_save(names, "parameters"))
    work = np.zeros(kf.work_size(packed))
    for j, tj in enumerate(t):
        kf.record(j, tj, ds.linear_tail(model, y, 4, tj), packed, buffers.group, work)
    tail = buffers.fields(len(t))
    a = np.array([model.lr_W * model.lambda_W, model.lr_H * model.lambda_H, model.lr_L * model.lambda_L,
                  model.lr_L * model.lambda_L])
    r = np.array([np.linalg.norm(b) for b in (state.W, state.H0, *state.layers)])
    worst = 0.0
    for name, k in (("W", [1, 0, 0, 0]), ("gram_W", [2, 0, 0, 0]), ("gram_H", [0, 2, 2, 2]), ("logits", [1] * 4)):
        k = np.array(k)
        norms = np.prod(r ** k) * np.exp(-t * float(a @ k))            # product of the tail's factor norms
        err = np.linalg.norm((tail[name] - getattr(ref, name)).reshape(len(t), -1), axis=1)
        assert np.all(err <= bound * norms), name
        worst = max(worst, float(np.max(err / norms)))
    assert worst > 1e-3 * bound                       # the tail differs measurably: the test is not vacuous


def test_settling_run_agrees_with_the_full_integration(monkeypatch):
    """solve_deep_settling against ufm.solve at the same tolerance: bit for bit before the
    tail, and within the tolerance (W in the integrator's error units) after it, with far
    fewer steps."""
    monkeypatch.setattr(ds, "CHECK_STEPS", 20)
    model = ufm.DeepUFM(PROB, layers=2, lambda_W=0.7, lr_H=1.3)
    init = model.init(4, scale=0.6, seed=1)
    t = np.linspace(0.0, 5000.0, 201)
    rtol, atol = 1e-9, 1e-12
    names = ("W", "gram_W", "gram_H", "logits")
    tr = ds.solve_deep_settling(model, init, t, rtol=rtol, atol=atol, save=names)
    ref = ufm.solve(model, init, t, method="dopri5", rtol=rtol, atol=atol, save=names)
    j = tr.info["settled_from"]
    assert tr.info["settled_kind"] == "origin" and 0 < j < len(t) // 2
    assert tr.info["tail_relative_error"] <= rtol
    assert tr.info["accepted_steps"] * 5 < ref.info["accepted_steps"]
    for name in names:
        np.testing.assert_array_equal(getattr(tr, name)[:j], getattr(ref, name)[:j])
    units = np.abs(tr.W[j:] - ref.W[j:]) / (atol + rtol * np.abs(ref.W[j:]))
    assert np.sqrt(np.mean(units ** 2, axis=(1, 2))).max() <= 1.0
    np.testing.assert_allclose(tr.loss, ref.loss, rtol=rtol, atol=0)


def test_tail_is_held_before_underflow_and_keeps_the_directions(monkeypatch):
    """On a horizon where the exact tail underflows, the saves keep finite, non-zero Grams with
    the directions of the tail's start."""
    monkeypatch.setattr(ds, "CHECK_STEPS", 50)
    model, init = _decaying()
    t = np.concatenate([np.linspace(0.0, 60.0, 61), np.geomspace(100.0, 1e5, 20)])
    tr = ds.solve_deep_settling(model, init, t, rtol=1e-8, atol=1e-12)
    info = tr.info
    j = info["settled_from"]
    assert info["tail_held_after"] < t[-1]
    GH = tr.gram_H[j:]
    tr_H = np.trace(GH, axis1=1, axis2=2)
    assert np.all(np.isfinite(GH)) and np.all(tr_H > 0)
    assert tr_H[-1] == pytest.approx(ds.TINY, rel=1e-6) or tr_H[-1] >= ds.TINY
    cos = GH / tr_H[:, None, None]
    assert np.allclose(cos, cos[0], rtol=0, atol=1e-12)
    assert tr.info["accepted_steps"] < 2_000


def test_outside_the_basin_never_stops_and_is_unchanged(monkeypatch):
    """A model whose features grow (weak decay: a non-trivial minimum) is integrated in full,
    bit for bit as ufm.solve, though it takes many checks' worth of steps (the test for
    non-trivial minima switched off here: it would stop this run, test below)."""
    monkeypatch.setattr(ds, "CHECK_STEPS", 200)
    monkeypatch.setattr(ds, "_MINIMUM", False)
    model = ufm.DeepUFM(PROB, layers=1, lambda_W=1e-3)
    init = model.init(4, scale=0.5, seed=2)
    t = np.geomspace(1.0, 2e5, 30)
    tr = ds.solve_deep_settling(model, init, t, rtol=1e-8, atol=1e-10)
    ref = ufm.solve(model, init, t, method="dopri5", rtol=1e-8, atol=1e-10)
    assert tr.info["accepted_steps"] > 2 * ds.CHECK_STEPS       # it was tested, more than once
    assert tr.info["settle_tests"] >= 2
    assert "settled_from" not in tr.info
    assert tr.info["accepted_steps"] == ref.info["accepted_steps"]
    np.testing.assert_array_equal(tr.gram_H, ref.gram_H)
    ok, details = ds.origin_basin(model, init.flat(), 4, 1e-8)
    assert not ok and details["why"] == "outside the certified basin of the origin"


def test_certificate_refuses_what_it_does_not_cover():
    rng = np.random.default_rng(0)
    tiny = 1e-4
    biased = ufm.DeepUFM(PROB, layers=1, lambda_W=0.5, bias=True, lambda_b=0.5)
    s = biased.init(4, scale=tiny, seed=rng)
    assert ds.origin_basin(biased, s.flat(), 4, 1e-2)[1]["why"].startswith("the logits carry a bias")
    two = ufm.DeepUFM(PROB, layers=0, lambda_W=0.5)
    assert ds.origin_basin(two, two.init(4, scale=tiny, seed=rng).flat(), 4, 1e-2)[1]["why"].startswith("fewer")
    undecayed = ufm.DeepUFM(PROB, layers=1, lambda_W=0.5, lambda_H=0.0)
    assert ds.origin_basin(undecayed, undecayed.init(4, scale=tiny, seed=rng).flat(), 4, 1e-2)[1]["why"] == \
        "a factor without decay"
    # the same small state is certified when every factor decays, and the origin itself is
    model = ufm.DeepUFM(PROB, layers=1, lambda_W=0.5)
    small = model.init(4, scale=tiny, seed=rng).flat()
    assert ds.origin_basin(model, small, 4, 1e-2)[0]
    assert ds.origin_basin(model, small, 4, 1e-8)[1]["why"].startswith("in the basin, the tail not yet")
    assert ds.origin_basin(model, np.zeros(4 * 4 * 2 + 16), 4, 1e-8)[0]
    one_zero = model.init(4, scale=tiny, seed=rng).flat().copy()
    one_zero[:16] = 0.0                                           # W = 0, the others not
    assert not ds.origin_basin(model, one_zero, 4, 1e-2)[0]


def test_orbit_tangent_is_adjoint_and_leaves_the_objective_flat():
    """⟨T(A), v⟩ = Σ_l ⟨A_l, Tᵀ(v)_l⟩ for skew generators, and the gradient is orthogonal to
    every orbit direction (the objective is invariant), bias block included."""
    model = ufm.DeepUFM(PROB, layers=2, lambda_W=0.1, bias=True, lambda_b=0.1)
    rng = np.random.default_rng(5)
    state = model.init(3, scale=1.0, seed=rng)
    y = state.flat()
    T, Tt = ds._orbit_tangent(model, y, 3)
    As = [(lambda M: M - M.T)(rng.normal(size=(3, 3))) for _ in range(3)]
    v = rng.normal(size=y.size)
    assert T(As) @ v == pytest.approx(sum(np.sum(A * B) for A, B in zip(As, Tt(v))), rel=1e-12)
    field = model.vector_field(state)
    rates = np.concatenate([np.full(12, model.lr_W), np.full(12, model.lr_H), np.full(18, model.lr_L), np.full(4, 1.0)])
    grad = -np.concatenate([field.W.ravel(), field.H0.ravel(), field.layers.ravel(), field.b]) / rates
    assert abs(grad @ T(As)) <= 1e-12 * np.linalg.norm(grad) * np.linalg.norm(T(As))
    assert np.linalg.norm(T(As)) > 0.1


def test_non_trivial_minimum_settles_and_agrees_with_the_full_integration(monkeypatch):
    """Weak decay: the model converges to a non-trivial minimum (outside the origin's basin);
    the test for minima stops it there, and the held saves agree with the full integration."""
    monkeypatch.setattr(ds, "CHECK_STEPS", 200)
    monkeypatch.setattr(ds, "MINIMUM_CHECK_STEPS", 200)
    model = ufm.DeepUFM(PROB, layers=1, lambda_W=1e-3)
    init = model.init(4, scale=0.5, seed=2)
    t = np.geomspace(1.0, 2e6, 40)
    rtol, atol = 1e-8, 1e-10
    names = ("gram_W", "gram_H", "logits")
    tr = ds.solve_deep_settling(model, init, t, rtol=rtol, atol=atol, save=names)
    ref = ufm.solve(model, init, t, method="dopri5", rtol=rtol, atol=atol, save=names)
    info = tr.info
    assert info["settled_kind"] == "minimum"
    j = info["settled_from"]
    assert j < len(t) - 3 and info["accepted_steps"] * 2 < ref.info["accepted_steps"]
    assert info["settle_displacement"] <= 1.0 and info["settle_smallest"] > 0
    for name in names:
        a, b = getattr(tr, name), getattr(ref, name)
        np.testing.assert_array_equal(a[:j], b[:j])
        # the held state against the full run: within a few units of the tolerance (the full
        # run's own global error is of that order)
        assert np.abs(a[j:] - b[j:]).max() <= 10 * (rtol * np.abs(b).max() + atol)


def test_a_saddle_never_counts_as_a_minimum():
    """The origin of a two-factor model (layers=0) with weak decay is a critical point and a
    saddle (curvature λ − σ_max(G(0)) < 0): the Newton step there is zero, the eigenvalue test
    must refuse it."""
    model = ufm.DeepUFM(PROB, layers=0, lambda_W=1e-2)
    y = np.zeros(4 * 4 + 4 * 4)
    ok, details = ds.settled_minimum(model, y, 4, 1e-8, 1e-10)
    assert not ok
    assert details["displacement"] == 0.0
    assert details["smallest"] < 0 and details["why"].startswith("not a stable equilibrium")
    # with strong decay the same origin is a strict minimum and is accepted
    strong = ufm.DeepUFM(PROB, layers=0, lambda_W=1.0)
    assert ds.settled_minimum(strong, y, 4, 1e-8, 1e-10)[0]
