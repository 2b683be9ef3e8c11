"""ufm.theory.fixed_points: derived minimisers vs the integrator run to convergence."""

import numpy as np
import pytest
import sympy as sp

import ufm
from ufm.theory import symbols as S
from ufm.theory.fixed_points import (ce_symbolic, fixed_point, max_margin, max_margin_symbolic, mse_imbalanced_symbolic,
                                     mse_symbolic, n_k, seli)


def _near(K, n, kc):
    """λ_W = λ_H with K√(nλ_Wλ_H) = kc."""
    return kc / (K * np.sqrt(n))


def _check(model):
    fp = fixed_point(model)
    ver = fp.verify()
    assert ver.ok, str(ver)
    # the tolerances: Gram entries 1e-6 relative, loss 1e-8
    assert ver.discrepancies["G_W (max entry, relative)"] < 1e-6
    assert ver.discrepancies["G_H (max entry, relative)"] < 1e-6
    assert ver.discrepancies["loss (absolute)"] < 1e-8
    return fp


CE_POINTS = [(4, 2, 5e-3, 1e-2), (3, 3, 2e-2, 1e-2), (5, 1, 2e-3, 4e-3), (4, 2, "0.95"), (3, 2, "1.05")]


@pytest.mark.parametrize("point", CE_POINTS, ids=str)
def test_ce_fixed_point_is_reached_from_a_generic_init(point):
    K, n = point[:2]
    if isinstance(point[2], str):
        lw = lh = _near(K, n, float(point[2]))
    else:
        lw, lh = point[2:]
    fp = _check(ufm.UFM(ufm.settings.balanced(K, n), lambda_W=lw, lambda_H=lh))
    assert fp.exists == (K * np.sqrt(n * lw * lh) < 1)
    if not fp.exists:
        assert fp.values["loss"] == pytest.approx(np.log(K), rel=1e-15)


MSE_POINTS = [(4, 2, 5e-3, 1e-2), (3, 3, 2e-2, 1e-2), (5, 2, 1e-2, 3e-3), (4, 2, "0.95"), (4, 2, "1.1")]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("point", MSE_POINTS, ids=str)
def test_mse_fixed_point_is_reached_from_a_generic_init(point, bias):
    K, n = point[:2]
    lw, lh = (_near(K, n, float(point[2])),) * 2 if isinstance(point[2], str) else point[2:]
    fp = _check(ufm.UFM(ufm.settings.balanced(K, n), loss="mse", lambda_W=lw, lambda_H=lh, bias=bias))
    assert fp.exists == (K * np.sqrt(n * lw * lh) < 1)


@pytest.mark.parametrize("lam", [0.02, 0.09, 0.12])
def test_imbalanced_mse_fixed_point_and_minority_collapse(lam):
    p = ufm.Problem.classification([0] * 6 + [1] * 3 + [2] * 1, 3)
    fp = _check(ufm.UFM(p, loss="mse", lambda_W=lam, lambda_H=lam))
    sizes = np.array([6, 3, 1])
    np.testing.assert_array_equal(fp.values["alive"], sizes > p.N ** 2 * lam * lam)
    assert (lam == 0.12) == (not fp.values["alive"].all())


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_coupled_ufm_has_the_standard_fixed_point(loss):
    """λ_E = 0: Θ bends the path, not the end point."""
    p = ufm.settings.factorial((3, 3))
    coupled = ufm.UFM(p, loss=loss, lambda_W=1e-2, lambda_H=2e-2, coupling=p.kernel("attribute", 1.5))
    fp = _check(coupled)
    std = fixed_point(coupled.replace(coupling=None))
    np.testing.assert_allclose(fp.values["G_H"], std.values["G_H"], rtol=1e-14)
    assert "coupled" in fp.notes


def test_ce_bias_with_decay_is_zero_at_the_minimiser():
    fp = _check(ufm.UFM(ufm.settings.balanced(4, 2), lambda_W=5e-3, lambda_H=1e-2, bias=True, lambda_b=0.05))
    assert np.all(fp.values["b"] == 0)


def test_derived_formulas_equal_the_literature():
    """The sympy derivations reproduce THEORY.md's closed forms (typed in independently here)."""
    K, n, lw, lh, N = S.K, S.n, S.lambda_W, S.lambda_H, S.N
    ce = ce_symbolic()
    assert sp.simplify(ce["margin"] - sp.log(1 / sp.sqrt(n * lw * lh) - (K - 1))) == 0
    assert sp.simplify(ce["u2"].subs(ce["m"], ce["margin"])
                       - (K - 1) / K * sp.sqrt(n * lh / lw) * sp.log(1 / sp.sqrt(n * lw * lh) - (K - 1))) == 0
    for bias in (False, True):
        d = mse_symbolic(bias)
        assert sp.simplify(d["u2"] - (sp.sqrt(n * lh / lw) - K * n * lh)) == 0
        assert sp.simplify(d["v2"] - (sp.sqrt(lw / (n * lh)) - K * lw)) == 0
        c = sp.sqrt(n * lw * lh)
        r = K - 1 if bias else K
        assert sp.simplify(d["loss"] - r * c * (1 - K * c / 2)) == 0
    im = mse_imbalanced_symbolic()
    assert sp.simplify(im["u2"] - sp.sqrt(lh / lw) * (sp.sqrt(n_k) - N * sp.sqrt(lw * lh))) == 0
    mm = max_margin_symbolic()
    assert sp.simplify(mm["u2"] - (K - 1) * sp.sqrt(n) / K) == 0 and sp.simplify(mm["ratio"] - 1 / sp.sqrt(n)) == 0


def test_unregularised_ce_direction_approaches_max_margin():
    r = max_margin(ufm.UFM(ufm.settings.balanced(3, 2)))
    ver = r.verify(t=(1e1, 1e2, 1e3, 1e4, 1e5, 1e6))
    assert ver.ok, str(ver)


@pytest.mark.parametrize("sizes", [(3, 1, 1), (5, 5, 1, 1), (4, 2, 1)])
def test_seli_is_the_nuclear_norm_max_margin_solution(sizes):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    s = seli(ufm.Problem.classification(labels, len(sizes)))
    assert s.values["kkt_holds"], s.values["kkt_max_offlabel"]
    np.testing.assert_allclose(s.values["Z"].sum(axis=0), 0, atol=1e-15)
    if sizes == (3, 1, 1):
        ver = s.verify()
        assert ver.ok, str(ver)


def test_fixed_point_refuses_what_is_not_derived():
    p = ufm.settings.balanced(3, 2)
    with pytest.raises(NotImplementedError, match="λ_E"):
        fixed_point(ufm.UFM(p, lambda_W=0.1, lambda_H=0.1, lambda_E=0.1))
    with pytest.raises(NotImplementedError, match="max_margin"):
        fixed_point(ufm.UFM(p))
    with pytest.raises(NotImplementedError, match="imbalanced"):
        fixed_point(ufm.UFM(ufm.Problem.classification([0, 0, 1]), lambda_W=0.1, lambda_H=0.1))
