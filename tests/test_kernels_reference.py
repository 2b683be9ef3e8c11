"""The numba kernels on the shapes real use has, against references that share no code with them.

test_models.py compares the kernels with ``ufm.reference`` on one problem with K = N; here:

* K ≠ N both ways: several samples per context (K = 6 < N = 12, one-hot), soft labels with
  unequal context weights (K = 3 < N = 7 and K = 5 > N = 3);
* distinct rates η_W ≠ η_H ≠ η_b and decays, so a rate or decay used for the wrong block shows;
* couplings: none, constant, and piecewise evaluated after its breakpoint (piece 1);
* ground truth independent of both kernel and reference: finite differences of an objective
  written out below from its formula. For positive definite Θ the flow is
  dW = −η_W ∇_W L, dH = −η_H ∇_H L · Θ, db = −η_b ∇_b L with
  L = ℓ + λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖² + λ_E/2 tr(HΘ⁻¹Hᵀ), and the Gram field is its
  image (d(WH), d(WWᵀ), d(HᵀH)); each block is asserted on its own.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp

import ufm
from ufm.kernels import fields as kf
from ufm.reference import flatten, unflatten
from systems import pd_kernel, soft_label_problem

RATES = dict(lr_W=1.3, lr_H=0.7, lr_b=0.45)
DECAYS = dict(lambda_W=0.03, lambda_H=0.02)
LAMBDA_B = 0.05
T_AFTER_BREAK = 1.5          # the piecewise couplings switch at t = 1


def _problems():
    samples = ufm.settings.factorial((2, 3), samples_per_context=2)          # K = 6, N = 12
    out = {"samples-K6-N12": (samples, samples.coupling("attribute", 0.8), samples.coupling("attribute", 0.3))}
    for K, N, seed in ((3, 7, 1), (5, 3, 2)):
        p = soft_label_problem(K, N, seed=seed)
        out[f"soft-K{K}-N{N}"] = (p, pd_kernel(N, seed), pd_kernel(N, seed + 10, rank=1))
    return out


PROBLEMS = _problems()


def _variants():
    """(id, model) for every problem × loss × coupling × bias × λ_E."""
    out = []
    for (name, (p, theta, theta_late)), loss, coupling, bias, lam_e in itertools.product(
            PROBLEMS.items(), ("ce", "mse"), ("none", "constant", "piecewise"), (False, True), (0.0, 0.07)):
        cp = {"none": None, "constant": theta,
              "piecewise": ufm.PiecewiseCoupling([0.0, 1.0], np.stack([theta, theta_late]))}[coupling]
        m = ufm.UFM(p, loss=loss, lambda_E=lam_e, bias=bias, lambda_b=LAMBDA_B if bias else 0.0, coupling=cp,
                    **DECAYS, **RATES)
        out.append((f"{name}-{loss}-{coupling}-{'bias' if bias else 'nobias'}-lamE{lam_e:g}", m))
    return out


VARIANTS = _variants()
IDS = [v[0] for v in VARIANTS]


def _state(model, d=4, seed=3):
    rng = np.random.default_rng(seed)
    b = rng.normal(size=model.K) * 0.4 if model.bias else None
    return ufm.State(rng.normal(size=(model.K, d)) * 0.6, rng.normal(size=(d, model.N)) * 0.6, b)


def _kernel_field(model, state, t, space):
    """dy/dt from ufm.kernels.fields.vector_field with the piece the driver would pick at t."""
    d = state.d if space == "parameters" else 0
    packed = ufm.engine.pack_model(model, space, d)
    p = kf.theta_piece(packed.theta_t, t) if packed.ip[kf.IP_NTHETA] > 0 else 0
    y = flatten(state if space == "parameters" else state.grams())
    dy = np.zeros_like(y)
    kf.vector_field(p, y, dy, packed, np.zeros(kf.work_size(packed)))
    return unflatten(dy, model.K, model.N, state.d if space == "parameters" else None, model.bias)


def objective(model, W, H, b, t):
    """L written from its formula (no ufm code): weighted CE or MSE plus the decays."""
    Y, pi = model.problem.Y, model.problem.weights
    Z = W @ H + (0.0 if b is None else b[:, None])
    if model.loss_name == "ce":
        data = -np.sum(pi * np.sum(Y * (Z - logsumexp(Z, axis=0)), axis=0))
    else:
        data = 0.5 * np.sum(pi * np.sum((Z - Y) ** 2, axis=0))
    reg = 0.5 * (model.lambda_W * np.sum(W * W) + model.lambda_H * np.sum(H * H))
    if b is not None:
        reg += 0.5 * model.lambda_b * b @ b
    if model.lambda_E:
        reg += 0.5 * model.lambda_E * np.trace(H @ np.linalg.inv(model.theta(t)) @ H.T)
    return data + reg


def _fd_gradient(f, x, h=1e-4):
    """Fourth-order central differences (truncation ~h⁴, rounding ~1e-16/h: ~1e-12 here)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        def at(s):
            xs = x.copy()
            xs[idx] += s * h
            return f(xs)
        g[idx] = (8 * (at(1) - at(-1)) - (at(2) - at(-2))) / (12 * h)
    return g


def _fd_flow(model, st, t):
    """(dW, dH, db) = (−η_W ∇_W L, −η_H ∇_H L Θ(t), −η_b ∇_b L) by finite differences."""
    W, H, b = np.array(st.W), np.array(st.H), None if st.b is None else np.array(st.b)
    gW = _fd_gradient(lambda X: objective(model, X, H, b, t), W)
    gH = _fd_gradient(lambda X: objective(model, W, X, b, t), H)
    dW = -model.lr_W * gW
    dH = -model.lr_H * gH @ model.theta(t)
    db = None if b is None else -model.lr_b * _fd_gradient(lambda X: objective(model, W, H, X, t), b)
    return dW, dH, db


def _time(ident):
    return T_AFTER_BREAK if "piecewise" in ident else 0.0


def test_problems_have_the_shapes_they_claim():
    shapes = {name: (p.K, p.N, p.target_kind) for name, (p, _, _) in PROBLEMS.items()}
    assert shapes == {"samples-K6-N12": (6, 12, "onehot"), "soft-K3-N7": (3, 7, "soft"),
                      "soft-K5-N3": (5, 3, "soft")}
    for _, (p, theta, late) in PROBLEMS.items():
        assert np.linalg.eigvalsh(theta)[0] > 0.5 and np.linalg.eigvalsh(late)[0] > 0.5
        assert np.abs(theta - late).max() > 0.1         # the breakpoint changes Θ
    soft = PROBLEMS["soft-K3-N7"][0]
    assert np.ptp(soft.weights) > 0.02 and soft.weights.sum() == pytest.approx(1.0)
    theta_t = ufm.engine.pack_model(VARIANTS[-1][1], "parameters", 4).theta_t
    assert kf.theta_piece(theta_t, T_AFTER_BREAK) == 1 and kf.theta_piece(theta_t, 0.5) == 0


@pytest.mark.parametrize("space", ["parameters", "gram"])
@pytest.mark.parametrize("ident,model", VARIANTS, ids=IDS)
def test_kernel_field_matches_reference(ident, model, space):
    """The numba field equals ufm.reference's numpy twin (measured: ≤ 4e-16 of the largest entry)."""
    st = _state(model)
    t = _time(ident)
    got = flatten(_kernel_field(model, st, t, space))
    ref = flatten(model.vector_field(st if space == "parameters" else st.grams(), t))
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=4e-15 * np.abs(ref).max())


@pytest.mark.parametrize("ident,model", VARIANTS, ids=IDS)
def test_kernel_fields_are_rate_scaled_gradients_of_the_objective(ident, model):
    """Parameter kernel, block by block, against −η_block × finite-difference gradient of L
    (× Θ(t) for H); Gram kernel against the image of that flow. Measured: ≤ 4.1e-11 of the
    largest entry (the FD error); tolerance 3e-10 of it."""
    st = _state(model)
    t = _time(ident)
    dW, dH, db = _fd_flow(model, st, t)
    k = _kernel_field(model, st, t, "parameters")
    np.testing.assert_allclose(k.W, dW, rtol=1e-9, atol=3e-10 * np.abs(dW).max(), err_msg="dW = −η_W ∇_W L")
    np.testing.assert_allclose(k.H, dH, rtol=1e-9, atol=3e-10 * np.abs(dH).max(), err_msg="dH = −η_H ∇_H L Θ")
    if model.bias:
        np.testing.assert_allclose(k.b, db, rtol=1e-9, atol=3e-10 * np.abs(db).max(), err_msg="db = −η_b ∇_b L")
    W, H = st.W, st.H
    image = (dW @ H + W @ dH, dW @ W.T + W @ dW.T, dH.T @ H + H.T @ dH)
    g = _kernel_field(model, st, t, "gram")
    for name, a, b in zip(("dM", "dG_W", "dG_H"), (g.M, g.gram_W, g.gram_H), image):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=3e-10 * np.abs(b).max(), err_msg=name)
    if model.bias:
        np.testing.assert_allclose(g.b, db, rtol=1e-9, atol=3e-10 * np.abs(db).max(), err_msg="Gram db")


@pytest.mark.parametrize("ident,model", [v for v in VARIANTS if v[1].bias], ids=[i for i in IDS if "-bias-" in i])
def test_recorded_objective_matches_the_formula(ident, model):
    """The kernel's ``record`` (run from t0 = t, saved at t0) reports L at the piece in force
    at t, the data loss ℓ, and Z = WH + b1ᵀ. Measured: ≤ 2.2e-16 relative; tolerance 2e-15."""
    st = _state(model)
    t = _time(ident)
    tr = ufm.solve(model, st, [t], t0=t, save="all")
    assert tr.loss[0] == pytest.approx(objective(model, st.W, st.H, st.b, t), rel=2e-15)
    no_reg = model.replace(lambda_W=0.0, lambda_H=0.0, lambda_E=0.0, lambda_b=0.0)
    assert tr.data_loss[0] == pytest.approx(objective(no_reg, st.W, st.H, st.b, t), rel=2e-15)
    Z = st.W @ st.H + st.b[:, None]
    np.testing.assert_allclose(tr.logits[0], Z, rtol=2e-15, atol=2e-15 * np.abs(Z).max())


#: (K, N, d) on both sides of the field's size switches (fields.small_products: K·d·N <= 32³
#: takes ufm.kernels.smallmm's products; K·N <= 32² its softmax), with K ≠ N and odd sizes
THRESHOLD_SIZES = ((8, 32, 128), (8, 32, 129), (32, 32, 32), (33, 32, 31), (64, 64, 8), (7, 13, 5), (13, 7, 17))


@pytest.mark.parametrize("K,N,d", THRESHOLD_SIZES)
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_parameter_field_on_both_sides_of_the_size_switches(K, N, d, loss):
    """The parameter-space field equals the numpy reference whichever product and softmax path
    its sizes select: plain (Θ = I, no bias) and with bias, a constant coupling and λ_E, soft
    labels and unequal weights. Tolerance as test_kernel_field_matches_reference."""
    p = soft_label_problem(K, N, seed=K + N + d)
    paths = (kf.small_products(K, d, N), K * N <= kf.SMALL_SOFTMAX_MAX)
    assert paths == {(8, 32, 128): (True, True), (8, 32, 129): (False, True), (32, 32, 32): (True, True),
                     (33, 32, 31): (True, False), (64, 64, 8): (True, False), (7, 13, 5): (True, True),
                     (13, 7, 17): (True, True)}[(K, N, d)]
    for extra in ({}, {"bias": True, "lambda_b": LAMBDA_B, "lambda_E": 0.07, "coupling": pd_kernel(N, seed=d)}):
        m = ufm.UFM(p, loss=loss, **DECAYS, **RATES, **extra)
        rng = np.random.default_rng(d)
        st = ufm.State(rng.normal(size=(K, d)) * 0.6, rng.normal(size=(d, N)) * 0.6,
                       rng.normal(size=K) * 0.4 if m.bias else None)
        got = flatten(_kernel_field(m, st, 0.0, "parameters"))
        ref = flatten(m.vector_field(st, 0.0))
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=4e-15 * np.abs(ref).max(), err_msg=str(extra))
