"""``ufm.solve(..., space="reduced")``: the symmetry-reduced ODE through the front door.

The reduced space integrates the relation coefficients of the problem's association scheme
with the same driver, tolerances and outputs as the other spaces. From a symmetric start the
reduction is exact, so the expanded Grams must equal a Gram-space run of the same start to
within the integration error (the comparison is tolerance-normalised: |Δ| / (atol + rtol·|y|)).
"""

from __future__ import annotations

import numpy as np
import pytest

import ufm

T_SAVE = np.geomspace(1e-2, 3e3, 25)
RTOL, ATOL = 1e-10, 1e-14


def _families():
    f = ufm.settings.factorial((2, 3))
    h = ufm.settings.hierarchy(2, 3)
    b = ufm.settings.balanced(4, 2)
    return [
        ("factorial 2x3 CE coupled", ufm.UFM(f, lambda_W=3e-3, lambda_H=2e-3, coupling=f.coupling("attribute", 0.8),
                                             lr_W=1.3, lr_H=0.7)),
        ("hierarchy 2^3 MSE bias", ufm.UFM(h, loss="mse", lambda_W=1e-2, lambda_H=1e-2, bias=True,
                                           coupling=h.coupling("attribute", 0.5), lr_b=0.5)),
        ("balanced 4x2 CE lambda_E", ufm.UFM(b, lambda_W=1e-3, lambda_H=0.0, lambda_E=2e-3)),
    ]


FAMILIES = _families()


@pytest.mark.parametrize("name,model", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_reduced_equals_gram_space_from_a_symmetric_start(name, model):
    x0 = model.isotropic(0.05)
    red = ufm.solve(model, x0, T_SAVE, space="reduced", rtol=RTOL, atol=ATOL, save="all")
    gram = ufm.solve(model, x0, T_SAVE, space="gram", rtol=RTOL, atol=ATOL, save="all")
    for key in ("gram_H", "gram_W", "logits"):
        a, b = getattr(red, key), getattr(gram, key)
        err = np.max(np.abs(a - b) / (ATOL + RTOL * np.abs(b)))
        # measured 0.14 … 33 tolerance units over these families (the two runs take different
        # steps, each accurate to its own tolerance); a wrong table entry is an error of order
        # |y|, i.e. ~1e10 units
        assert err < 300, (key, err)
    np.testing.assert_allclose(red.loss, gram.loss, rtol=1e-7)
    assert red.info["space"] == "reduced"
    if model.bias:
        np.testing.assert_allclose(red.b, gram.b, rtol=1e-7, atol=1e-12)


def test_reduced_state_is_small_whatever_N():
    p = ufm.settings.factorial((10, 10))                       # N = 100 contexts
    model = ufm.UFM(p, lambda_W=1e-3, lambda_H=1e-3, coupling=p.coupling("attribute", 1.0))
    tr = ufm.solve(model, model.isotropic(1e-3), np.geomspace(1e-2, 1e2, 10), space="reduced", save="gram_H")
    assert ufm.engine.reduction_of(model).size == 12           # 4 relations on each of M, G_W, G_H
    assert tr.gram_H.shape == (10, 100, 100)
    # the expanded Gram is constant on each relation: two pairs of the same relation agree
    R = p.relations
    for Ra in R:
        i, j = np.argwhere(Ra)[[0, -1]].T
        np.testing.assert_allclose(tr.gram_H[:, i[0], j[0]], tr.gram_H[:, i[1], j[1]], rtol=1e-12)


def test_random_finite_width_start_is_refused_with_the_way_out():
    model = FAMILIES[0][1]
    with pytest.raises(ValueError, match=r"init: not in the span.*model\.isotropic"):
        ufm.solve(model, model.init(8, seed=0), T_SAVE, space="reduced")


def test_problems_without_a_reduction_say_why():
    soft = ufm.settings.sequences(labels="soft")
    with pytest.raises(ValueError, match="soft|one-hot"):
        m = ufm.UFM(soft, lambda_W=1e-3, lambda_H=1e-3)
        ufm.solve(m, m.isotropic(0.1), T_SAVE, space="reduced")
    f = ufm.settings.factorial((2, 3))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(f.N, f.N))
    theta = X @ X.T / f.N + np.eye(f.N)
    m = ufm.UFM(f, lambda_W=1e-3, lambda_H=1e-3, coupling=theta)
    with pytest.raises(ValueError, match="coupling"):
        ufm.solve(m, m.isotropic(0.1), T_SAVE, space="reduced")
    pc = ufm.PiecewiseCoupling([0.0, 1.0], np.stack([np.eye(f.N), f.coupling("attribute", 1.0)]))
    m = ufm.UFM(f, lambda_W=1e-3, lambda_H=1e-3, coupling=pc)
    with pytest.raises(ValueError, match="coupling"):
        ufm.solve(m, m.isotropic(0.1), T_SAVE, space="reduced")


def test_parameters_cannot_be_saved_in_reduced_space():
    model = FAMILIES[0][1]
    with pytest.raises(ValueError, match=r"save: \['W'\] do not exist in reduced space"):
        ufm.solve(model, model.isotropic(0.1), T_SAVE, space="reduced", save=("W", "gram_H"))
