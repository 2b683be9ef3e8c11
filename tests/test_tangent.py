"""Tangents of the vector fields (ufm/kernels/tangent.py) against central finite differences of
the kernel field and against the numpy twins in ufm/reference_tangent.py.

Finite differences are of ``ufm.kernels.fields.vector_field`` itself (what the integrators
evaluate), so the tangent is checked against the field it must differentiate, off the symmetric
manifold too (random directions have non-symmetric Gram parts).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ufm
from ufm import reference_tangent as rt
from ufm.kernels import fields as kf
from ufm.kernels import tangent as kt
from ufm.reference import flatten, unflatten
from systems import pd_kernel, soft_label_problem

EPS = 1e-6
# central differences at EPS = 1e-6 on O(1) fields: measured worst 1.4e-10 relative (first and
# second derivatives); the kernel and the numpy twin agree to 4e-16
FD_RTOL = 2e-9
REF_RTOL = 1e-13


def _models():
    p = soft_label_problem(3, 5, seed=1)
    out = []
    for loss, coupled, bias in itertools.product(("ce", "mse"), (False, True), (False, True)):
        m = ufm.UFM(p, loss=loss, lambda_W=0.03, lambda_H=0.02, lambda_E=0.07, bias=bias,
                    lambda_b=0.05 if bias else 0.0, coupling=pd_kernel(5, 1) if coupled else None,
                    lr_W=1.3, lr_H=0.7, lr_b=0.45)
        out.append((f"{loss}-{'coupled' if coupled else 'standard'}-{'bias' if bias else 'nobias'}", m))
    return out


MODELS = _models()
IDS = [i for i, _ in MODELS]


def _setup(model, space, seed=0):
    rng = np.random.default_rng(seed)
    d = 4
    st = ufm.State(rng.normal(size=(model.K, d)) * 0.6, rng.normal(size=(d, model.N)) * 0.6,
                   rng.normal(size=model.K) * 0.4 if model.bias else None)
    s = st if space == "parameters" else st.grams()
    packed = ufm.engine.pack_model(model, space, d if space == "parameters" else 0)
    return s, flatten(s), packed, rng, (d if space == "parameters" else None)


def _field(packed, y):
    out = np.zeros_like(y)
    kf.vector_field(0, y, out, packed, np.zeros(kf.work_size(packed)))
    return out


def _jvp(packed, y, v):
    out = np.zeros_like(y)
    kt.jvp(0, y, v, out, packed, np.zeros(kt.tangent_work_size(packed)))
    return out


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("space", ["parameters", "gram"])
@pytest.mark.parametrize("ident,model", MODELS, ids=IDS)
def test_jvp_matches_finite_differences_and_reference(ident, model, space):
    s, y, packed, rng, d = _setup(model, space)
    v = rng.normal(size=y.size)
    got = _jvp(packed, y, v)
    fd = (_field(packed, y + EPS * v) - _field(packed, y - EPS * v)) / (2 * EPS)
    assert _rel(got, fd) < FD_RTOL
    ref = flatten(rt.jvp(model, s, unflatten(v, model.K, model.N, d, model.bias)))
    assert _rel(got, ref) < REF_RTOL


@pytest.mark.parametrize("ident,model", MODELS[::3], ids=IDS[::3])
def test_dense_jacobian_columns_are_the_tangents_of_basis_vectors(ident, model):
    s, y, packed, rng, d = _setup(model, "gram", seed=4)
    n = y.size
    JT = np.zeros((n, n))
    kt.jacobian(0, y, JT, packed, np.zeros(kt.tangent_work_size(packed)))
    v = rng.normal(size=n)
    # J v from the dense matrix equals the direct tangent, and a column equals a finite difference
    assert _rel(JT.T @ v, _jvp(packed, y, v)) < 1e-13
    e = np.zeros(n)
    e[7] = 1.0
    fd = (_field(packed, y + EPS * e) - _field(packed, y - EPS * e)) / (2 * EPS)
    assert np.abs(JT[7] - fd).max() < FD_RTOL * np.abs(JT).max()


@pytest.mark.parametrize("space", ["parameters", "gram"])
@pytest.mark.parametrize("ident,model", MODELS, ids=IDS)
def test_jacobian_assembled_from_blocks_matches_the_reference(ident, model, space):
    """Parameter and Gram space build the dense Jacobian from its blocks (not from tangents): it
    equals the numpy twin's column-by-column tangents, a finite difference of the kernel field,
    and the kernel tangent along a random direction (every loss, coupling and bias)."""
    s, y, packed, rng, d = _setup(model, space, seed=6)
    n = y.size
    JT = np.full((n, n), np.nan)                    # every entry must be written
    kt.jacobian(0, y, JT, packed, np.zeros(kt.tangent_work_size(packed)))
    assert _rel(JT.T, rt.jacobian(model, s)) < REF_RTOL
    v = rng.normal(size=n)
    assert _rel(JT.T @ v, _jvp(packed, y, v)) < 1e-13
    for j in (0, n // 2, n - 1):                    # first, middle and last blocks (b with a bias)
        e = np.zeros(n)
        e[j] = 1.0
        fd = (_field(packed, y + EPS * e) - _field(packed, y - EPS * e)) / (2 * EPS)
        assert np.abs(JT[j] - fd).max() < FD_RTOL * np.abs(JT).max()


@pytest.mark.parametrize("ident,model", MODELS, ids=IDS)
def test_gram_second_derivative(ident, model):
    s, y, packed, rng, _ = _setup(model, "gram", seed=1)
    u, v = rng.normal(size=y.size), rng.normal(size=y.size)
    work = np.zeros(kt.tangent_work_size(packed))
    kt._gram_prepare(y, packed, work)
    got = np.zeros_like(y)
    kt.gram_second(0, y, u, v, got, packed, work)
    fd = (_jvp(packed, y + EPS * u, v) - _jvp(packed, y - EPS * u, v)) / (2 * EPS)
    assert _rel(got, fd) < FD_RTOL
    ref = flatten(rt.gram_second(model, s, *(unflatten(x, model.K, model.N, None, model.bias) for x in (u, v))))
    assert _rel(got, ref) < REF_RTOL


PARAM_CASES = [("lr_W", "lr_W"), ("lr_H", "lr_H"), ("lr_b", "lr_b"), ("lambda_W", "lambda_W"),
               ("lambda_H", "lambda_H"), ("lambda_b", "lambda_b"), ("lambda_E", "lambda_E"),
               ("time_scale", None), ("coupling", None)]


@pytest.mark.parametrize("name,attribute", PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
@pytest.mark.parametrize("ident,model", [MODELS[3], MODELS[7]], ids=[IDS[3], IDS[7]])
def test_parameter_derivative_of_the_field_and_its_tangent(ident, model, name, attribute):
    """∂f/∂θ against a central difference in θ of the kernel field, and ∂_y(∂f/∂θ)·u against a
    central difference in θ of the tangent."""
    s, y, packed, rng, _ = _setup(model, "gram", seed=2)
    u = rng.normal(size=y.size)
    D = pd_kernel(model.N, 9, rank=1) - np.eye(model.N)
    code = ufm.sensitivity._CODES[name]

    def variant(e):
        if name == "time_scale":
            return model.replace(lr_W=model.lr_W * (1 + e), lr_H=model.lr_H * (1 + e), lr_b=model.lr_b * (1 + e))
        if name == "coupling":
            return model.replace(coupling=model.theta() + e * D)
        return model.replace(**{attribute: getattr(model, attribute) + e})

    work = np.zeros(kt.tangent_work_size(packed))
    coef = np.zeros(packed.coef.size)
    kt._gram_prepare(y, packed, work)
    got = np.zeros_like(y)
    kt.gram_param_field(0, y, code, D, got, packed, work, coef)
    hi, lo = (ufm.engine.pack_model(variant(e), "gram") for e in (EPS, -EPS))
    fd = (_field(hi, y) - _field(lo, y)) / (2 * EPS)
    assert _rel(got, fd) < FD_RTOL
    ref = flatten(rt.gram_param_field(model, s, name, D))
    assert _rel(got, ref) < REF_RTOL
    got_t = np.zeros_like(y)
    kt.gram_param_jvp(0, y, u, code, D, got_t, packed, work, coef)
    fd_t = (_jvp(hi, y, u) - _jvp(lo, y, u)) / (2 * EPS)
    assert _rel(got_t, fd_t) < FD_RTOL


@pytest.mark.parametrize("loss,bias,coupled", [("ce", False, False), ("ce", True, True), ("mse", True, False)])
def test_reduced_jvp_matches_finite_differences_and_the_gram_tangent(loss, bias, coupled):
    """Reduced space: the tangent of the coefficient field, and its expansion equals the Gram
    tangent along the expanded direction (the reduction is exact in the span)."""
    p = ufm.settings.factorial((2, 3))
    m = ufm.UFM(p, loss=loss, lambda_W=0.03, lambda_H=0.02, bias=bias, lambda_b=0.05 if bias else 0.0,
                coupling=p.coupling("attribute", 0.6) if coupled else None, lr_W=1.3, lr_H=0.7, lr_b=0.45)
    red = ufm.engine.reduction_of(m)
    packed = ufm.engine.pack_model(m, "reduced")
    rng = np.random.default_rng(5)
    n = kf.state_size(packed)
    y = rng.normal(size=n) * 0.5
    v = rng.normal(size=n)
    got = _jvp(packed, y, v)
    fd = (_field(packed, y + EPS * v) - _field(packed, y - EPS * v)) / (2 * EPS)
    assert _rel(got, fd) < FD_RTOL
    gram = ufm.engine.pack_model(m, "gram")
    ys = flatten(ufm.GramState(*red.expand(y)))
    vs = flatten(ufm.GramState(*red.expand(v)))
    expanded = flatten(ufm.GramState(*red.expand(got)))
    assert _rel(expanded, _jvp(gram, ys, vs)) < 1e-12


def test_spectral_radius_of_a_linear_decay_is_its_rate():
    """MSE with W = H = 0 and a bias: the flow is linear in b with rate η_b(Σπ + λ_b) on b, and
    W, H directions have their own rates; power iteration finds the largest."""
    p = soft_label_problem(3, 5)
    m = ufm.UFM(p, loss="mse", bias=True, lambda_b=0.3, lambda_W=0.1, lambda_H=0.2, lr_W=1.7, lr_H=0.6, lr_b=4.5)
    packed = ufm.engine.pack_model(m, "gram")
    y = flatten(ufm.GramState(np.zeros((3, 5)), np.zeros((3, 3)), np.zeros((5, 5)), np.ones(3)))
    JT = np.zeros((y.size, y.size))
    kt.jacobian(0, y, JT, packed, np.zeros(kt.tangent_work_size(packed)))
    exact = np.abs(np.linalg.eigvals(JT.T)).max()
    assert exact == pytest.approx(4.5 * (p.weights.sum() + 0.3), rel=1e-12)
    assert ufm.engine.spectral_radius(packed, y, 0.0) == pytest.approx(exact, rel=1e-6)
