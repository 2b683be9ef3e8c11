"""ufm.theory.spectra: spectra from the symmetry vs numerical eigensolvers and the integrator."""

import numpy as np
import pytest
import sympy as sp

import ufm
from ufm.theory.spectra import (_minimiser_state, etf_symbolic, gram_spectrum, jacobian_spectrum, mse_jacobian_symbolic,
                                nc1_symbolic, numerical_jacobian)


def test_etf_spectrum_and_population_nc1():
    e = etf_symbolic()
    K = e["K"]
    spec = {nm: (ev, m) for nm, ev, m in e["spectrum"]}
    assert sp.simplify(spec["between classes"][0] - K / (K - 1)) == 0 and spec["constant"][0] == 0
    assert sp.simplify(spec["between classes"][1] - (K - 1)) == 0
    nc = nc1_symbolic()["nc1"]
    r, s = sp.Symbol("r", positive=True), sp.Symbol("s", positive=True)
    # numerical check with ufm.metrics.nc1 on features with exactly isotropic within-class scatter
    for Kv, rv, sv in ((3, 2.0, 0.3), (5, 1.0, 0.1)):
        D = Kv + 2
        mu = np.zeros((D, Kv))
        mu[:Kv] = rv * np.sqrt(Kv / (Kv - 1)) * (np.eye(Kv) - 1.0 / Kv)
        H = np.concatenate([mu[:, [k]] + sign * sv * np.sqrt(D) * np.eye(D)[:, [j]]
                            for k in range(Kv) for j in range(D) for sign in (1, -1)], axis=1)
        labels = np.repeat(np.arange(Kv), 2 * D)
        # measured: 5.6e-16 relative
        assert ufm.metrics.nc1(H.T @ H, labels) == pytest.approx(float(nc.subs({K: Kv, r: rv, s: sv})), rel=5e-15)


def _counted(eigenvalues, gap):
    """Distinct values of a sorted spectrum with their multiplicities (a new value starts where
    consecutive eigenvalues differ by more than ``gap``)."""
    ev = np.sort(eigenvalues)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ev) > gap) + 1, [ev.size]])
    return [(float(ev[a:b].mean()), int(b - a)) for a, b in zip(starts[:-1], starts[1:])]


@pytest.mark.parametrize("K,n,lw,lh,d", [(3, 2, 0.02, 0.05, 5), (4, 2, 0.01, 0.03, 7), (3, 3, 0.03, 0.01, 3)])
def test_mse_sector_multiplicities_cover_all_parameters(K, n, lw, lh, d):
    """The symbolic multiplicities add up to d(K + N), and — evaluated — equal the multiplicities
    counted in the spectrum of a central-difference Jacobian at the minimiser (equal rates of
    different sectors merged); d = K leaves the sectors outside the row space empty."""
    dd = mse_jacobian_symbolic()
    rates = {nm: r for nm, r, _ in dd["sectors"]}
    S = ufm.theory.symbols
    assert sp.simplify(rates["within-class, row space of W"] - sp.sqrt(S.lambda_H / (S.n * S.lambda_W)) / S.K) == 0
    assert rates["within-class, outside the row space"] == S.lambda_H
    dsym = sp.Symbol("d", positive=True, integer=True)
    assert sp.expand(dd["total"] - dsym * (S.K + S.K * S.n)) == 0
    model = ufm.UFM(ufm.settings.balanced(K, n), loss="mse", lambda_W=lw, lambda_H=lh)
    predicted = {}
    for _, rate, mult in jacobian_spectrum(model, d).values["sectors"]:
        key = round(rate, 9)
        predicted[key] = predicted.get(key, 0) + mult
    predicted = sorted((r, m) for r, m in predicted.items() if m > 0)
    _, state = _minimiser_state(model, d)
    J = numerical_jacobian(model, state)
    assert J.shape == (K * d + d * K * n,) * 2
    # distinct rates here are >= 4e-3 apart; the central-difference spectrum is exact to ~1e-10
    counted = _counted(-np.linalg.eigvalsh(0.5 * (J + J.T)), gap=1e-6)
    assert [m for _, m in counted] == [m for _, m in predicted]
    np.testing.assert_allclose([r for r, _ in counted], [r for r, _ in predicted], rtol=0, atol=1e-9)


def test_jacobian_spectrum_validates_the_width():
    model = ufm.UFM(ufm.settings.balanced(3, 2), loss="mse", lambda_W=0.02, lambda_H=0.05)
    for bad in (0, -1, 2):
        with pytest.raises(ValueError, match=r"d: expected an integer >= 3, got"):
            jacobian_spectrum(model, bad)
    for bad in (2.5, True, "5"):
        with pytest.raises(TypeError, match="d: expected an integer"):
            jacobian_spectrum(model, bad)
    assert all(m >= 0 for _, _, m in jacobian_spectrum(model, 3).values["sectors"])


@pytest.mark.parametrize("loss,K,n,lw,lh,d", [("mse", 3, 2, 0.02, 0.05, 5), ("mse", 4, 2, 0.01, 0.01, 6),
                                              ("ce", 3, 3, 0.02, 0.01, 5), ("ce", 4, 2, 5e-3, 1e-2, 6)])
def test_jacobian_sectors_match_numerical_jacobian_and_decay(loss, K, n, lw, lh, d):
    """MSE: the whole predicted multiset equals the numerical Jacobian's eigenvalues; CE: the
    within-class multiset equals the spectrum of the Jacobian restricted to the within-class
    subspace. A within-class perturbation decays at the predicted rate under ufm.solve."""
    r = jacobian_spectrum(ufm.UFM(ufm.settings.balanced(K, n), loss=loss, lambda_W=lw, lambda_H=lh), d)
    ver = r.verify()
    assert ver.ok, str(ver)
    # a wrong target fails: one rate off by 1e-6 relative, or one unit of multiplicity moved
    sectors = r.values["sectors"]
    (n0, r0, m0), (n1, r1, m1) = sectors[0], sectors[1]
    for wrong in ([(n0, r0 * (1 + 1e-6), m0)] + sectors[1:], [(n0, r0, m0 - 1), (n1, r1, m1 + 1)] + sectors[2:]):
        r.values["sectors"] = wrong
        try:
            bad = r.verify()
        finally:
            r.values["sectors"] = sectors
        assert len(bad.failures) == 1 and "eigenvalues" in bad.failures[0], str(bad)


def test_gram_spectrum_from_the_eigenmatrix():
    for model in (ufm.UFM(ufm.settings.balanced(4, 2), lambda_W=5e-3, lambda_H=1e-2),
                  ufm.UFM(ufm.settings.factorial((3, 3)), loss="mse", lambda_W=1e-2, lambda_H=2e-2)):
        fp = ufm.theory.fixed_point(model)
        spec = gram_spectrum(fp)
        for key in ("G_W", "G_H"):
            pred = np.sort(np.concatenate([[x] * m for _, x, m in spec[key]]))
            # measured: 5.8e-16 of the largest eigenvalue
            np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(fp.values[key])), pred, rtol=0, atol=5e-15 * pred.max())
