"""ufm.theory.reduce: the exact reduced ODE (sympy, integrated by the engine), the width limit, linearisation."""

import numpy as np
import pytest

import ufm
from ufm.models import GramState
from ufm.theory.fixed_points import fixed_point
from ufm.theory.reduce import reduce, symbolic


def _balanced_coupling(p, c=0.5):
    """A coupling in the balanced scheme's algebra: samples of a class are coupled (I + c·same-class blocks)."""
    K, N = p.K, p.N
    n = N // K
    return np.eye(N) + c * np.kron(np.eye(K), np.ones((n, n)))


def _coupled(problem, **kw):
    theta = problem.coupling("attribute", 0.8) if problem.attributes is not None else _balanced_coupling(problem)
    return ufm.UFM(problem, coupling=theta, **kw)


@pytest.mark.parametrize("problem", [ufm.settings.factorial((3, 3)), ufm.settings.hierarchy(2, 2, samples_per_context=2),
                                     ufm.settings.factorial((2, 3), label_permutation="random", seed=2)],
                         ids=lambda p: p.name)
@pytest.mark.parametrize("loss,bias,lam_e", [("ce", False, 0.0), ("ce", True, 0.02), ("mse", False, 0.02), ("mse", True, 0.0)])
def test_reduced_field_equals_gram_field_pointwise(problem, loss, bias, lam_e):
    """At random states of the span the full Gram field stays in the span and its relation
    coefficients equal the reduced right-hand side (the engine's numeric field) and the sympy
    field evaluated directly."""
    m = _coupled(problem, loss=loss, lambda_W=0.03, lambda_H=0.02, lambda_E=lam_e, bias=bias,
                 lambda_b=0.05 if bias else 0.0, lr_W=1.3, lr_H=0.7, lr_b=0.9)
    r = reduce(m)
    rng = np.random.default_rng(0)
    for _ in range(3):
        y = rng.normal(size=r.size)
        yf, spread = r.state_of(m.vector_field(r.gram_state(y)))
        assert spread < 1e-13
        np.testing.assert_allclose(r.rhs(y), yf, rtol=1e-12, atol=1e-13 * np.abs(yf).max())
        np.testing.assert_allclose(r.symbolic_rhs(y), yf, rtol=1e-12, atol=1e-13 * np.abs(yf).max())


REQUIRED = [ufm.settings.factorial((3, 3)), ufm.settings.factorial((2, 2, 2)), ufm.settings.hierarchy(2, 3),
            ufm.settings.balanced(5, 3)]


@pytest.mark.parametrize("problem", REQUIRED, ids=lambda p: p.name)
def test_reduced_ode_equals_gram_space_ode(problem):
    """Coupled UFM from isotropic Grams: reduced and full Gram-space trajectories agree to 1e-9."""
    m = _coupled(problem, lambda_W=1e-3, lambda_H=2e-3)
    r = reduce(m)
    ver = r.verify(scale=0.05)
    # measured <= 6.3e-12 on these problems; the tolerance is 3e-11
    assert ver.ok, str(ver)
    assert set(ver.tolerances.values()) == {3e-11}
    # a reduced ODE with λ_H off by 0.1 % is told apart from the full one
    par = r.par
    r.par = par.copy()
    r.par[4] *= 1.001
    try:
        wrong = r.verify(scale=0.05)
    finally:
        r.par = par
    assert not wrong.ok, str(wrong)


def test_symbolic_field_matches_numeric_rhs():
    """The sympy field (model symbols, sizes symbolic) evaluated at a point equals the numba rhs."""
    p = ufm.settings.factorial((2, 3))
    m = ufm.UFM(p, lambda_W=0.05, lambda_H=0.02, coupling=p.coupling("attribute", 0.6), lr_W=1.2)
    sm = symbolic(m)
    assert ufm.theory.symbols.beta in set().union(*(f.free_symbols for f in sm.field.values()))
    y = np.random.default_rng(3).normal(size=len(sm.state))
    point = dict(zip(sm.state, y))
    full = sm.full_field()
    num = np.array([float(full[s].subs(point).subs(sm.values)) for s in sm.state])
    np.testing.assert_allclose(num, sm.reduced.rhs(y), rtol=1e-10)


def test_width_study_error_decreases_like_inverse_sqrt_width():
    """Parameter space from model.init(d, s) approaches the reduced ODE from s²I as d grows."""
    p = ufm.settings.factorial((3, 3))
    r = reduce(ufm.UFM(p, lambda_W=1e-3, lambda_H=1e-3, coupling=p.coupling("attribute", 0.8)))
    ws = r.width_study(widths=(16, 64, 256, 1024), scale=0.1, t=np.geomspace(0.1, 100, 15), seeds=(0, 1))
    print("width study: d =", ws["widths"], "error =", np.round(ws["errors"], 4), "slope =", round(ws["slope"], 3))
    assert np.all(np.diff(ws["errors"]) < 0)
    assert -0.65 < ws["slope"] < -0.35


@pytest.mark.parametrize("problem,loss", [(ufm.settings.factorial((3, 3)), "ce"), (ufm.settings.hierarchy(2, 3), "ce"),
                                          (ufm.settings.balanced(5, 3), "mse")], ids=lambda x: getattr(x, "name", x))
def test_linearisation_rates_equal_measured_decay(problem, loss):
    """Eigenvalues of the (symbolically derived) reduced Jacobian at the fixed point equal the
    decay rates of eigen-perturbations integrated with ufm.solve in Gram space (within 1 %)."""
    theta = problem.coupling("attribute", 0.9) if problem.attributes is not None else None
    m = ufm.UFM(problem, loss=loss, lambda_W=1e-2, lambda_H=2e-2, coupling=theta)
    r = reduce(m)
    fp = fixed_point(m)
    y0, spread = r.state_of(GramState(fp.values["M"], fp.values["G_W"], fp.values["G_H"]))
    assert spread < 3e-15                                   # measured <= 3.8e-16
    ys = r.fixed_point(y0)
    # the derived fixed point is already one of the reduced field (measured: Newton takes no step)
    assert np.abs(ys - y0).max() <= 1e-14 * np.abs(y0).max()
    ver = r.linearisation_check(ys, n_modes=3)
    assert ver.ok, str(ver)
    assert len(ver.discrepancies) == 3
    # rates 0.1 % too fast (same eigenvectors) fail every mode (measured agreement <= 8.7e-7)
    r.jacobian = lambda y: 1.001 * type(r).jacobian(r, y)
    try:
        wrong = r.linearisation_check(ys, n_modes=3)
    finally:
        del r.jacobian
    assert len(wrong.failures) == 3, str(wrong)


def test_reduce_rejects_couplings_outside_the_algebra():
    p = ufm.settings.factorial((3, 3))
    with pytest.raises(ValueError, match="span"):
        reduce(ufm.UFM(p, coupling=np.diag(np.linspace(1, 2, 9))))
    with pytest.raises(ValueError, match="PiecewiseCoupling"):
        reduce(ufm.UFM(p, coupling=ufm.PiecewiseCoupling([0.0, 1.0], np.stack([np.eye(9), np.eye(9)]))))


def test_reduced_trajectory_metrics_and_spectra_match_gram_space():
    """to_trajectory() gives a ufm.Trajectory whose metrics equal those of the Gram-space run;
    spectra() (eigenmatrix) equal numpy's eigenvalues of the expanded G_H."""
    p = ufm.settings.factorial((3, 3))
    m = ufm.UFM(p, lambda_W=1e-3, lambda_H=1e-3, coupling=p.coupling("attribute", 0.5))
    r = reduce(m)
    t = np.geomspace(1.0, 300.0, 12)
    rt = r.solve(t, scale=1e-2)
    tr = rt.to_trajectory()
    gt = ufm.solve(m, r.gram_state(r.isotropic(1e-2)), t, space="gram", rtol=1e-12, atol=1e-16)
    # measured: gap 7.9e-9 relative (1.8e-10 absolute), loss 1.9e-11, spectra 3.6e-16 of the largest
    np.testing.assert_allclose(tr.metric("semantic_gap"), gt.metric("semantic_gap"), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(tr.loss, gt.loss, rtol=1e-10)
    nu = rt.spectra("G_H")
    mult = [int(r.bound.num(x)) for x in r.bound.scheme.eigen_R[1]]
    for k in (0, len(t) - 1):
        np.testing.assert_allclose(np.sort(np.repeat(nu[k], mult)), np.linalg.eigvalsh(tr.gram_H[k]),
                                   rtol=0, atol=3e-15 * np.abs(nu[k]).max())


def test_depth_four_hierarchies_reduce_like_every_other_scheme():
    """One numeric field serves every scheme: a depth-4 tree (no special code path) reduces and
    integrates like the others."""
    p = ufm.settings.hierarchy(2, 4)
    m = ufm.UFM(p, lambda_W=1e-3, lambda_H=1e-3, coupling=p.coupling("attribute", 0.5))
    r = reduce(m)
    y = np.random.default_rng(5).normal(size=r.size)
    yf, spread = r.state_of(m.vector_field(r.gram_state(y)))
    assert spread < 1e-13
    np.testing.assert_allclose(r.rhs(y), yf, rtol=1e-12, atol=1e-13 * np.abs(yf).max())
    ver = r.verify(t=np.geomspace(0.1, 100, 8))
    assert ver.ok, str(ver)
