"""Gradients, numba vector fields against the numpy references, and the Lyapunov property."""

import numpy as np
import pytest

import ufm
from ufm.kernels import fields as kf
from ufm.reference import flatten
from systems import variant_models

VARIANTS = variant_models()


def _random_state(model, d, seed, scale=0.7):
    rng = np.random.default_rng(seed)
    b = rng.normal(size=model.K) * 0.3 if model.bias else None
    return ufm.State(rng.normal(size=(model.K, d)) * scale, rng.normal(size=(d, model.N)) * scale, b)


def _fd_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("ident,model", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_gradient_matches_finite_differences(ident, model):
    """model.gradient = ∇(ℓ + λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖²) (checked without the λ_E term)."""
    m = model.replace(lambda_E=0.0)
    st = _random_state(m, 4, seed=1)
    g = m.gradient(st)
    fW = lambda W: m.loss(ufm.State(W, st.H, st.b))  # noqa: E731
    fH = lambda H: m.loss(ufm.State(st.W, H, st.b))  # noqa: E731
    np.testing.assert_allclose(g.W, _fd_gradient(fW, np.array(st.W)), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.H, _fd_gradient(fH, np.array(st.H)), rtol=1e-6, atol=1e-8)
    if m.bias:
        fb = lambda b: m.loss(ufm.State(st.W, st.H, b))  # noqa: E731
        np.testing.assert_allclose(g.b, _fd_gradient(fb, np.array(st.b)), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("ident,model", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_flow_is_preconditioned_gradient_of_objective(ident, model):
    """For positive definite Θ: dW = −η_W ∇_W L, dH = −η_H ∇_H L Θ, db = −η_b ∇_b L, with L the
    reported objective including λ_E/2 tr(HΘ⁻¹Hᵀ) — so the objective is a Lyapunov function."""
    st = _random_state(model, 4, seed=2)
    v = model.vector_field(st)
    theta = model.theta()
    fW = lambda W: model.loss(ufm.State(W, st.H, st.b))  # noqa: E731
    fH = lambda H: model.loss(ufm.State(st.W, H, st.b))  # noqa: E731
    np.testing.assert_allclose(v.W, -model.lr_W * _fd_gradient(fW, np.array(st.W)), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(v.H, -model.lr_H * _fd_gradient(fH, np.array(st.H)) @ theta, rtol=1e-6, atol=1e-8)
    if model.bias:
        fb = lambda b: model.loss(ufm.State(st.W, st.H, b))  # noqa: E731
        np.testing.assert_allclose(v.b, -model.lr_b * _fd_gradient(fb, np.array(st.b)), rtol=1e-6, atol=1e-8)


def _kernel_field(model, state, space):
    d = state.d if space == "parameters" else 0
    packed = ufm.engine.pack_model(model, space, d)
    y = flatten(state if space == "parameters" else state.grams())
    dy = np.zeros_like(y)
    work = np.zeros(kf.work_size(packed))
    kf.vector_field(0, y, dy, packed, work)
    return dy


@pytest.mark.parametrize("space", ["parameters", "gram"])
@pytest.mark.parametrize("ident,model", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_numba_field_matches_numpy_reference(ident, model, space):
    st = _random_state(model, 5, seed=3)
    ref = model.vector_field(st if space == "parameters" else st.grams())
    np.testing.assert_allclose(_kernel_field(model, st, space), flatten(ref), rtol=1e-12, atol=1e-13)


def test_gram_field_is_the_image_of_the_parameter_field():
    """d/dt (WH, WWᵀ, HᵀH) computed from (dW, dH) equals the Gram-space field at the Grams."""
    for ident, model in VARIANTS:
        st = _random_state(model, 6, seed=4)
        v = model.vector_field(st)
        W, H = st.W, st.H
        dM = v.W @ H + W @ v.H
        dGW = v.W @ W.T + W @ v.W.T
        dGH = v.H.T @ H + H.T @ v.H
        g = model.vector_field(st.grams())
        for a, b in ((dM, g.M), (dGW, g.gram_W), (dGH, g.gram_H)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13, err_msg=ident)


def test_softmax_is_stable_for_huge_logits():
    """Logits of ±1e4 neither overflow nor lose the loss: CE of a column z with the target at
    the maximum is log(1 + Σ_{k≠y} e^{z_k − z_y})."""
    p = ufm.settings.balanced(3, 1)
    m = ufm.UFM(p)
    W = np.diag([1e4, 1e4, 1e4])
    st = ufm.State(W, np.eye(3))
    tr = ufm.solve(m, st, [0.0], save="logits")
    assert np.isfinite(tr.loss[0]) and tr.loss[0] == pytest.approx(0.0, abs=1e-300)
    W2 = np.array([[1e4, 0, 0], [1e4 - 1, 0, 0], [0, 0, 0.0]])
    st2 = ufm.State(W2, np.eye(3))
    tr2 = ufm.solve(m, st2, [0.0], save=())
    # context 0: z = (1e4, 1e4−1, 0), target 0: loss log(1 + e^{−1}); contexts 1, 2: logits all 0 -> log 3
    expected = (np.log1p(np.exp(-1.0)) + 2 * np.log(3.0)) / 3
    assert tr2.loss[0] == pytest.approx(expected, rel=1e-12)
    assert m.loss(st2) == pytest.approx(expected, rel=1e-12)


def test_softmax_is_stable_for_hugely_negative_logits():
    """Every logit of a column near −1e4: e^z underflows to 0 for all of them unless the column
    maximum is subtracted first. Each column is z = (−1e4, −1e4 − 1, −1e4 − 2) and context i has
    label i, so the CE is mean_i(i) + log(1 + e^{−1} + e^{−2}) = 1 + log(1 + e^{−1} + e^{−2})."""
    m = ufm.UFM(ufm.settings.balanced(3, 1))
    st = ufm.State(np.array([[-1e4], [-1e4 - 1.0], [-1e4 - 2.0]]), np.ones((1, 3)))
    expected = 1.0 + np.log1p(np.exp(-1.0) + np.exp(-2.0))
    tr = ufm.solve(m, st, [0.0], save=())
    assert tr.loss[0] == pytest.approx(expected, rel=1e-12)
    ref = m.vector_field(st)
    np.testing.assert_allclose(_kernel_field(m, st, "parameters"), flatten(ref), rtol=1e-12)
    assert np.abs(ref.H).max() > 0.1        # measured 0.53: softmax(z) − y is O(1), the field is not 0


def _random_model(rng, i):
    K = int(rng.integers(2, 6))
    N = int(rng.integers(2, 7))
    labels = rng.integers(0, K, size=N)
    loss = ("ce", "mse")[i % 2]
    p = ufm.Problem.classification(labels, K)
    A = rng.normal(size=(N, int(rng.integers(1, N + 1))))
    pd_kernel = i % 3 == 0
    theta = A @ A.T + (np.eye(N) if pd_kernel else 0.0)  # rank-deficient PSD unless pd_kernel
    lam_e = 0.05 if pd_kernel else 0.0                     # λ_E needs Θ > 0 for the Lyapunov property
    bias = bool(i % 4 == 1)
    return ufm.UFM(p, loss=loss, lambda_W=float(rng.uniform(0, 0.05)), lambda_H=float(rng.uniform(0, 0.05)),
                   lambda_E=lam_e, bias=bias, lambda_b=0.01 if bias else 0.0, coupling=theta / N,
                   lr_W=float(rng.uniform(0.5, 2)), lr_H=float(rng.uniform(0.5, 2)))


def test_objective_never_increases_for_20_random_models():
    rng = np.random.default_rng(2024)
    t = np.geomspace(1e-3, 200, 80)
    for i in range(20):
        model = _random_model(rng, i)
        x0 = model.init(int(rng.integers(2, 6)), scale=float(rng.uniform(0.1, 2)), seed=i)
        tr = ufm.solve(model, x0, t, rtol=1e-10, atol=1e-12, save=())
        inc = np.diff(tr.loss)
        assert np.all(inc <= 1e-11 * np.abs(tr.loss[:-1]) + 1e-14), (i, model, inc.max())
        assert tr.loss[-1] < tr.loss[0]


def test_softmax_exponential_is_within_one_ulp_of_numpy():
    """The kernels' e^x for x <= 0 (a polynomial, 2.4x faster than libm) against numpy."""
    from numba import njit
    exp_np = njit(_apply)
    rng = np.random.default_rng(0)
    x = -np.concatenate([rng.random(200_000) * 40, rng.random(20_000) * 745, [0.0, 1e-300, 708.4, 744.99]])
    out = np.empty_like(x)
    exp_np(x, out)
    ref = np.exp(x)
    normal = ref > np.finfo(float).tiny
    ulp = np.abs(out - ref)[normal] / np.spacing(ref[normal])
    assert ulp.max() <= 1.0
    assert np.abs(out - ref)[~normal].max() <= 1e-315      # subnormal results: absolute error
    assert kf.exp_nonpositive(-746.0) == 0.0 and kf.exp_nonpositive(0.0) == 1.0


def _apply(x, out):
    for i in range(x.shape[0]):
        out[i] = kf.exp_nonpositive(x[i])
