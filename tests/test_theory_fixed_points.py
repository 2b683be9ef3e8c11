"""ufm.theory.fixed_points: derived minimisers vs the integrator run to convergence."""

import numpy as np
import pytest
import sympy as sp

import ufm
from ufm.theory import symbols as S
from ufm.theory.fixed_points import (ce_symbolic, fixed_point, grams_from_scalars, max_margin, max_margin_symbolic,
                                     mse_imbalanced_symbolic, mse_symbolic, n_k, seli)


def _near(K, n, kc):
    """λ_W = λ_H with K√(nλ_Wλ_H) = kc."""
    return kc / (K * np.sqrt(n))


def _check(model):
    fp = fixed_point(model)
    ver = fp.verify()
    # tolerances of the verification (stated in it): Grams, logits, bias 1e-10 relative, loss 5e-12
    assert ver.ok, str(ver)
    assert ver.tolerances["G_W (max entry, relative)"] == 1e-10 and ver.tolerances["loss (absolute)"] == 5e-12
    return fp


def _fails_with(fp, key, wrong, *checks):
    """verify() against ``values[key] = wrong`` must fail on each of ``checks``."""
    right = fp.values[key]
    fp.values[key] = wrong
    try:
        ver = fp.verify()
    finally:
        fp.values[key] = right
    assert not ver.ok, str(ver)
    for name in checks:
        assert name in ver.failures, str(ver)


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
    coupled = ufm.UFM(p, loss=loss, lambda_W=1e-2, lambda_H=2e-2, coupling=p.coupling("attribute", 1.5))
    fp = _check(coupled)
    std = fixed_point(coupled.replace(coupling=None))
    np.testing.assert_allclose(fp.values["G_H"], std.values["G_H"], rtol=1e-14)
    assert "coupled" in fp.notes


def test_ce_bias_with_decay_is_zero_at_the_minimiser():
    fp = _check(ufm.UFM(ufm.settings.balanced(4, 2), lambda_W=5e-3, lambda_H=1e-2, bias=True, lambda_b=0.05))
    assert np.all(fp.values["b"] == 0)


def test_fixed_point_verify_fails_for_a_wrong_target():
    """Each derivation's verify compares numbers: a wrong scale of ‖w_k‖² or ‖h_i‖² (0.1 %), a
    wrong loss (1e-9), a wrong bias (0.1 %) or a wrong class norm fails it."""
    ce = fixed_point(ufm.UFM(ufm.settings.balanced(4, 2), lambda_W=5e-3, lambda_H=1e-2))
    _fails_with(ce, "G_W", 1.001 * ce.values["G_W"], "G_W (max entry, relative)", "vector field at prediction")
    _fails_with(ce, "G_H", 1.001 * ce.values["G_H"], "G_H (max entry, relative)")
    _fails_with(ce, "loss", ce.values["loss"] + 1e-9, "loss (absolute)")
    mse = fixed_point(ufm.UFM(ufm.settings.balanced(4, 2), loss="mse", lambda_W=5e-3, lambda_H=1e-2, bias=True))
    _fails_with(mse, "b", 1.001 * mse.values["b"], "bias (max entry, relative to the logits)")
    _fails_with(mse, "M", 1.001 * mse.values["M"], "logits (max entry, relative)")
    imb = fixed_point(ufm.UFM(ufm.Problem.classification([0] * 6 + [1] * 3 + [2] * 1, 3), loss="mse",
                              lambda_W=0.02, lambda_H=0.02))
    GW = imb.values["G_W"].copy()
    GW[2, 2] *= 1.001                       # the minority class's ‖w_k‖²
    _fails_with(imb, "G_W", GW, "G_W (max entry, relative)")


def test_derived_formulas_equal_the_literature():
    """The sympy derivations reproduce docs/theory.md's closed forms (typed in independently here)."""
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


def _direction_fails_with(res, replace, *checks):
    right = dict(res.values)
    res.values.update(replace)
    try:
        ver = res.verify()
    finally:
        res.values.update(right)
    assert not ver.ok, str(ver)
    for name in checks:
        assert any(k.startswith(name) for k in ver.failures), str(ver)


DIRECTION = "(G_W, G_H, logits)/(‖W‖²+‖H‖²)"
NORMS = "‖w_k‖², ‖h_i‖² over"
MARGIN = "normalised margin |1 − γ/γ*|"


@pytest.mark.parametrize("K,n", [(3, 2), (4, 1)])
def test_unregularised_ce_direction_approaches_max_margin(K, n):
    r = max_margin(ufm.UFM(ufm.settings.balanced(K, n)))
    ver = r.verify()
    assert ver.ok, str(ver)
    # measured at t = 1e9 (seed 0): (3, 2) 2.9e-4, (4, 1) 2.0e-3; the tolerance is 0.03
    assert ver.tolerances[DIRECTION + " at t = 1e+09 (relative)"] == 0.03


def test_max_margin_verify_fails_for_a_wrong_target():
    """Wrong ‖h_i‖² (×2, the ETF shape kept), wrong ‖w_k‖² (×1.1), a margin 10 % too large,
    and the orthogonal frame instead of the ETF all fail."""
    p = ufm.settings.balanced(3, 2)
    r = max_margin(ufm.UFM(p))
    v = r.values
    _direction_fails_with(r, {"G_H": 2 * v["G_H"]}, DIRECTION, NORMS)
    _direction_fails_with(r, {"G_W": 1.1 * v["G_W"]}, DIRECTION, NORMS)
    _direction_fails_with(r, {"M": 1.1 * v["M"]}, DIRECTION, MARGIN)
    M, GW, GH = grams_from_scalars(p, v["u2"], v["v2"], np.sqrt(v["u2"] * v["v2"]), "identity")
    _direction_fails_with(r, {"M": M, "G_W": GW, "G_H": GH}, DIRECTION)


@pytest.mark.parametrize("sizes", [(3, 1, 1), (5, 5, 1, 1), (4, 2, 1)])
def test_seli_is_the_nuclear_norm_max_margin_solution(sizes):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    s = seli(ufm.Problem.classification(labels, len(sizes)))
    assert s.values["kkt_holds"], s.values["kkt_max_offlabel"]
    np.testing.assert_allclose(s.values["Z"].sum(axis=0), 0, atol=1e-15)
    # minimum-norm factorisation: tr G_W = tr G_H = ‖Ẑ‖_*
    nuclear = np.linalg.svd(s.values["Z"], compute_uv=False).sum()
    assert np.trace(s.values["G_W"]) == pytest.approx(nuclear, rel=1e-13)
    assert np.trace(s.values["G_H"]) == pytest.approx(nuclear, rel=1e-13)


@pytest.mark.parametrize("sizes", [(3, 1, 1), (4, 2, 1)])
def test_unregularised_imbalanced_ce_approaches_seli(sizes):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    ver = seli(ufm.Problem.classification(labels, len(sizes))).verify()
    # measured at t = 1e9 (seed 0): distance (3,1,1) 1.7e-2, (4,2,1) 2.4e-2; the tolerance is 0.08
    assert ver.ok, str(ver)


def test_seli_verify_fails_for_the_balanced_etf_and_a_wrong_scale():
    """The balanced ETF (the geometry SELI replaces) fails, and so does SELI with the
    minority features' norms (or the whole G_H) off by 25 % (the check resolves ~10 %)."""
    p = ufm.Problem.classification([0, 0, 0, 1, 2], 3)
    s = seli(p)
    M, GW, GH = grams_from_scalars(p, 1.0, 1.0, 1.0, "etf")
    _direction_fails_with(s, {"M": M, "G_W": GW, "G_H": GH}, DIRECTION)
    _direction_fails_with(s, {"G_H": 1.25 * s.values["G_H"]}, DIRECTION, NORMS)
    D = np.ones(p.N)
    D[3:] = np.sqrt(1.25)                     # samples of the minority classes 1, 2
    _direction_fails_with(s, {"G_H": D[:, None] * s.values["G_H"] * D[None, :]}, NORMS)


def test_fixed_point_refuses_what_is_not_derived():
    p = ufm.settings.balanced(3, 2)
    with pytest.raises(NotImplementedError, match="λ_E"):
        fixed_point(ufm.UFM(p, lambda_W=0.1, lambda_H=0.1, lambda_E=0.1))
    with pytest.raises(NotImplementedError, match="max_margin"):
        fixed_point(ufm.UFM(p))
    with pytest.raises(NotImplementedError, match="imbalanced"):
        fixed_point(ufm.UFM(ufm.Problem.classification([0, 0, 1]), lambda_W=0.1, lambda_H=0.1))
