"""The deep-backbone UFM (ufm.DeepUFM, kernels in ufm/kernels/deep.py): its field against the
numpy reference and finite differences of the objective, the balanced-manifold (end-to-end)
form against the parameter flow, the low-rank bias (ufm.theory.deep_collapse) and a case where
the deep model loses rank instead of reaching the simplex ETF."""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from ufm import engine
from ufm.kernels import fields as kf
from ufm.theory import deep_collapse

PROB = ufm.settings.factorial((2, 2))          # K = N = 4, one class per context


def _field(model, space, y, d=0):
    packed = engine.pack_deep_model(model, space, d)
    dy = np.zeros_like(y)
    kf.vector_field(0, np.array(y), dy, packed, np.zeros(kf.work_size(packed)))
    return dy


@pytest.fixture(scope="module")
def general():
    """Unequal decays and rates, a bias: every block of the parameter field differs."""
    model = ufm.DeepUFM(PROB, layers=2, lambda_W=1e-2, lambda_L=3e-2, lambda_H=2e-2, lr_L=0.7, lr_H=1.3, bias=True,
                        lambda_b=0.1)
    x = model.init(6, scale=0.9, seed=1)
    return model, ufm.DeepState(x.W, x.layers, x.H0, np.array([0.1, -0.2, 0.3, 0.05]))


def test_parameter_field_matches_reference_and_objective(general):
    model, x = general
    dy = _field(model, "parameters", x.flat(), x.d)
    ref = model.vector_field(x).flat()
    assert np.abs(dy - ref).max() <= 1e-15 * 100 * np.abs(ref).max()       # measured 2.8e-17 (scale 0.11)
    # dy = −rate ⊙ ∇(objective), by central differences of model.loss
    K, d, N, L = 4, 6, 4, 2
    sizes = [K * d, d * N, L * d * d, K]

    def unflat(v):
        W, H0, layers, b = np.split(v, np.cumsum(sizes)[:-1])
        return ufm.DeepState(W.reshape(K, d), layers.reshape(L, d, d), H0.reshape(d, N), b)
    y = x.flat()
    grad = np.empty_like(y)
    h = 1e-6
    for i in range(y.size):
        e = np.zeros_like(y)
        e[i] = h
        grad[i] = (model.loss(unflat(y + e)) - model.loss(unflat(y - e))) / (2 * h)
    rates = np.repeat([model.lr_W, model.lr_H, model.lr_L, model.lr_b], sizes)
    assert np.abs(dy + rates * grad).max() < 2e-9                             # measured 2.5e-10


def test_layers_zero_is_the_standard_ufm():
    deep = ufm.DeepUFM(PROB, layers=0, lambda_W=0.02)
    std = ufm.UFM(PROB, lambda_W=0.02, lambda_H=0.02)
    x = deep.init(5, scale=0.8, seed=3)
    t = np.geomspace(0.1, 50, 8)
    a = ufm.solve(deep, x, t, rtol=1e-11, atol=1e-13)
    b = ufm.solve(std, std.state(x.W, x.H0), t, rtol=1e-11, atol=1e-13)
    for name in ("logits", "gram_W", "gram_H", "loss"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-14)   # same kernel maths


@pytest.mark.parametrize("layers", [1, 2])
def test_balanced_form_matches_parameter_flow(layers):
    """From balanced factors (equal decays and rates) the logits' end-to-end equation reproduces
    the parameter flow: the field at t = 0 (chain rule through the factors) and the trajectory."""
    model = ufm.DeepUFM(PROB, layers=layers, lambda_W=1e-2)
    x = model.balanced_init(6, scale=0.9, seed=2)
    assert x.imbalance() < 1e-14
    Z = x.W @ x.features()
    dZ = _field(model, "balanced", Z.ravel()).reshape(Z.shape)
    ref, _ = model.balanced_field(Z)
    v = model.vector_field(x)
    f, df = x.factors(), [v.H0, *v.layers, v.W]
    chain = np.zeros_like(Z)
    for j in range(len(f)):
        M = df[0] if j == 0 else f[0]
        for i in range(1, len(f)):
            M = (df[i] if i == j else f[i]) @ M
        chain += M
    assert np.abs(dZ - ref).max() < 1e-14 and np.abs(dZ - chain).max() < 1e-14   # measured 2.8e-16, 5.3e-16
    t = np.geomspace(0.1, 200, 20)
    tp = ufm.solve(model, x, t, rtol=1e-11, atol=1e-13)
    tb = ufm.solve(model, x, t, space="balanced", rtol=1e-11, atol=1e-13)
    rel = lambda a, b: np.abs(a - b).max() / np.abs(a).max()  # noqa: E731
    assert rel(tp.logits, tb.logits) < 3e-11          # measured 3.4e-12 (L = 2)
    assert rel(tp.gram_H, tb.gram_H) < 5e-11          # measured 5.3e-12
    # G_W = (ZZᵀ)^(1/n) amplifies errors in the small singular values: measured 1.1e-9
    assert rel(tp.gram_W, tb.gram_W) < 1e-8
    assert np.abs(tp.loss - tb.loss).max() < 1e-9     # measured 1.2e-10


def test_bad_inputs_name_the_argument():
    model = ufm.DeepUFM(PROB, layers=1, lambda_W=1e-2, lambda_H=2e-2)
    x = model.init(5, seed=0)
    with pytest.raises(ValueError, match="space: 'balanced' is exact only"):
        ufm.solve(model, x, [1.0], space="balanced")
    eq = ufm.DeepUFM(PROB, layers=1, lambda_W=1e-2)
    with pytest.raises(ValueError, match="init: space='balanced' needs balanced factors"):
        ufm.solve(eq, x, [1.0], space="balanced")
    with pytest.raises(ValueError, match="save: a DeepUFM's features"):
        ufm.solve(eq, x, [1.0], save=("H",))
    with pytest.raises(ValueError, match="init: the model has layers = 2"):
        ufm.solve(eq.replace(layers=2), x, [1.0])
    with pytest.raises(ValueError, match="layers"):
        ufm.DeepUFM(PROB, layers=-1)
    with pytest.raises(ValueError, match="d: balanced factors of a rank-4"):
        eq.balanced_init(3, seed=0)


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_deep_collapse_verifies(layers):
    res = deep_collapse(ufm.DeepUFM(PROB, layers=layers, lambda_W=0.03))
    ver = res.verify()
    assert ver.ok, str(ver)
    # n = 2 (the standard UFM): the nuclear norm, the ETF is the lower candidate; n >= 3: the cross-polytope
    assert res.values["lower"] == ("etf" if layers == 0 else "cross-polytope")


def test_deep_collapse_fails_for_a_wrong_target():
    res = deep_collapse(ufm.DeepUFM(PROB, layers=1, lambda_W=0.03))
    good = res.values["singular_values_etf"].copy()
    res.values["singular_values_etf"] = good * 1.001
    assert "etf: singular values (max relative)" in res.verify().failures
    res.values["singular_values_etf"] = good
    res.values["objective_cross"] *= 1.001
    assert res.verify().failures == ["cross: objective at t_end (relative)"]


def test_deep_model_loses_rank_instead_of_reaching_the_etf():
    """K = N = 4, λ = 0.03 on every factor, the same generic start: the standard UFM (n = 2)
    reaches the simplex ETF (3 equal singular values a* = 3.412); with two hidden layers (n = 4)
    the flow ends at rank 2 — the cross-polytope, whose objective 0.3751 is below the best ETF's
    0.4129 — the low-rank bias of the Schatten-2/4 quasi-norm."""
    t = np.geomspace(1.0, 3e4, 10)
    ends = {}
    for layers in (0, 2):
        model = ufm.DeepUFM(PROB, layers=layers, lambda_W=0.03)
        res = deep_collapse(model)
        x = model.balanced_init(6, scale=0.7, seed=0)
        tr = ufm.solve(model, x, t, space="balanced", rtol=1e-10, atol=1e-13, save=("logits",))
        sv = np.linalg.svd(tr.logits[-1], compute_uv=False)
        ends[layers] = (sv, float(tr.loss[-1]), res)
    sv, loss, res = ends[0]
    assert np.sum(sv > 1e-6 * sv[0]) == 3
    np.testing.assert_allclose(sv[:3], res.values["a_etf"], rtol=1e-6)                  # measured 1e-9
    assert loss == pytest.approx(res.values["objective_etf"], rel=1e-8)
    sv, loss, res = ends[2]
    assert np.sum(sv > 1e-6 * sv[0]) == 2
    np.testing.assert_allclose(sv[:2], 2 * res.values["a_cross"], rtol=1e-6)
    assert loss == pytest.approx(res.values["objective_cross"], rel=1e-8)
    assert loss < res.values["objective_etf"] - 0.03                               # 0.3751 vs 0.4129
