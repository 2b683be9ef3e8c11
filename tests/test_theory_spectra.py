"""ufm.theory.spectra: spectra from the symmetry vs numerical eigensolvers and the integrator."""

import numpy as np
import pytest
import sympy as sp

import ufm
from ufm.theory.spectra import etf_symbolic, gram_spectrum, jacobian_spectrum, mse_jacobian_symbolic, nc1_symbolic


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
        assert ufm.metrics.nc1(H.T @ H, labels) == pytest.approx(float(nc.subs({K: Kv, r: rv, s: sv})), rel=1e-10)


def test_mse_sector_multiplicities_cover_all_parameters():
    d = mse_jacobian_symbolic()
    rates = {nm: r for nm, r, _ in d["sectors"]}
    S = ufm.theory.symbols
    assert sp.simplify(rates["within-class, row space of W"] - sp.sqrt(S.lambda_H / (S.n * S.lambda_W)) / S.K) == 0
    assert rates["within-class, outside the row space"] == S.lambda_H


@pytest.mark.parametrize("loss,K,n,lw,lh,d", [("mse", 3, 2, 0.02, 0.05, 5), ("mse", 4, 2, 0.01, 0.01, 6),
                                              ("ce", 3, 3, 0.02, 0.01, 5), ("ce", 4, 2, 5e-3, 1e-2, 6)])
def test_jacobian_sectors_match_numerical_jacobian_and_decay(loss, K, n, lw, lh, d):
    """MSE: the whole predicted multiset equals the numerical Jacobian's eigenvalues; CE: each
    within-class rate occurs with its multiplicity. A within-class perturbation decays at the
    predicted rate under ufm.solve (within 1 %)."""
    r = jacobian_spectrum(ufm.UFM(ufm.settings.balanced(K, n), loss=loss, lambda_W=lw, lambda_H=lh), d)
    ver = r.verify()
    assert ver.ok, str(ver)


def test_gram_spectrum_from_the_eigenmatrix():
    for model in (ufm.UFM(ufm.settings.balanced(4, 2), lambda_W=5e-3, lambda_H=1e-2),
                  ufm.UFM(ufm.settings.factorial((3, 3)), loss="mse", lambda_W=1e-2, lambda_H=2e-2)):
        fp = ufm.theory.fixed_point(model)
        spec = gram_spectrum(fp)
        for key in ("G_W", "G_H"):
            pred = np.sort(np.concatenate([[x] * m for _, x, m in spec[key]]))
            np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(fp.values[key])), pred, atol=1e-10 * pred.max())
