"""ufm.theory.closed_forms: Saxe modes, UFM mode ODE, Riccati, CE margin, balance law."""

import numpy as np
import pytest
import sympy as sp

import ufm
from ufm.theory.closed_forms import (balance_law_symbolic, ce_margin, riccati, riccati_symbolic, saxe_modes,
                                     saxe_symbolic, ufm_mode, ufm_mode_symbolic)


@pytest.mark.parametrize("K,n,lam", [(4, 3, 0.0), (4, 3, 0.05), (3, 2, 0.1)])
def test_ufm_mode_logistic(K, n, lam):
    r = ufm_mode(ufm.UFM(ufm.settings.balanced(K, n), loss="mse", lambda_W=lam, lambda_H=lam), 1e-3)
    assert r.values["s"] == pytest.approx(1 - K * np.sqrt(n) * lam)
    ver = r.verify()
    assert ver.ok, str(ver)


def test_ufm_mode_is_saxe_with_tau_and_s():
    d = ufm_mode_symbolic()
    K, n, lam = ufm.theory.symbols.K, ufm.theory.symbols.n, ufm.theory.symbols.lam
    assert sp.simplify(d["tau"] - K * sp.sqrt(n)) == 0 and sp.simplify(d["s"] - (1 - K * sp.sqrt(n) * lam)) == 0
    assert sp.simplify(d["imbalance_rate"] + 2 * lam) == 0
    s = saxe_symbolic()
    u = s["solution"]
    assert sp.simplify(sp.diff(u, ufm.theory.symbols.t) - s["ode"].rhs.subs(s["ode"].lhs.args[0], u)) == 0


def _orthogonal_targets(seed=0):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    V = np.linalg.qr(rng.normal(size=(6, 4)))[0]
    return U @ np.diag([3.0, 2.0, 1.0, 0.5]) @ V.T, rng


@pytest.mark.parametrize("lam", [0.0, 0.03, 0.1])
def test_saxe_modes_and_learning_order(lam):
    Y, _ = _orthogonal_targets()
    r = saxe_modes(ufm.UFM(ufm.Problem(Y), loss="mse", lambda_W=lam, lambda_H=lam), 1e-4)
    # s_α − Nλ <= u₀ means the mode is never learned (infinite half-time); the rest by strength
    alive = r.values["s"] > 1e-4
    assert list(r.values["order"][:alive.sum()]) == list(np.flatnonzero(alive))
    ver = r.verify()
    assert ver.ok, str(ver)


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.5])
def test_riccati_closed_form(lam):
    assert riccati_symbolic()["residual"] == 0
    Y, rng = _orthogonal_targets(1)
    model = ufm.UFM(ufm.Problem(Y, weights=np.ones(6)), loss="mse", lambda_W=lam, lambda_H=lam)
    W0 = rng.normal(size=(4, 5)) * 0.3
    _, sw, Vw = np.linalg.svd(W0, full_matrices=False)
    H0 = Vw.T @ np.diag(sw) @ np.linalg.qr(rng.normal(size=(6, 4)))[0].T
    ver = riccati(model, W0, H0).verify()
    assert ver.ok, str(ver)
    with pytest.raises(ValueError, match="balanced"):
        riccati(model, W0, rng.normal(size=(5, 6)))


@pytest.mark.parametrize("K,n,m0", [(3, 1, 0.01), (4, 2, 1.0), (10, 1, 0.3)])
def test_ce_margin_implicit_solution(K, n, m0):
    ver = ce_margin(ufm.UFM(ufm.settings.balanced(K, n)), m0).verify()
    assert ver.ok, str(ver)


def _fails_with(res, key, wrong, *checks):
    right = res.values[key]
    res.values[key] = wrong
    try:
        ver = res.verify()
    finally:
        res.values[key] = right
    assert not ver.ok, str(ver)
    for name in checks:
        assert name in ver.failures, str(ver)


def test_closed_form_verifies_fail_for_a_wrong_target():
    """Perturbed rates (s by 1e-6), a half-time 1e-6 late, a Riccati solution and a margin
    off by 1e-8 relative all fail (the tolerances are 1e-11 … 5e-11)."""
    mode = ufm_mode(ufm.UFM(ufm.settings.balanced(3, 2), loss="mse", lambda_W=0.1, lambda_H=0.1), 1e-3)
    _fails_with(mode, "s", mode.values["s"] * (1 + 1e-6), "logits = u(t)·Y (max relative)")
    _fails_with(mode, "tau", mode.values["tau"] * (1 + 1e-6), "logits = u(t)·Y (max relative)")
    Y, _ = _orthogonal_targets()
    sx = saxe_modes(ufm.UFM(ufm.Problem(Y), loss="mse", lambda_W=0.03, lambda_H=0.03), 1e-4)
    _fails_with(sx, "s", sx.values["s"] * (1 + 1e-6), "u_α(t) (max relative to ‖u(t)‖)")
    _fails_with(sx, "half_times", sx.values["half_times"] * (1 + 1e-6),
                "u_α at the predicted half-time vs s_α/2 (max relative)")
    Y, rng = _orthogonal_targets(1)
    model = ufm.UFM(ufm.Problem(Y, weights=np.ones(6)), loss="mse", lambda_W=0.1, lambda_H=0.1)
    W0 = rng.normal(size=(4, 5)) * 0.3
    _, sw, Vw = np.linalg.svd(W0, full_matrices=False)
    ric = riccati(model, W0, Vw.T @ np.diag(sw) @ np.linalg.qr(rng.normal(size=(6, 4)))[0].T)
    P = ric.values["P(t)"]
    _fails_with(ric, "P(t)", lambda t: [(GH * (1 + 1e-8), M, GW) for GH, M, GW in P(t)], "G_H (max relative Frobenius)")
    cm = ce_margin(ufm.UFM(ufm.settings.balanced(4, 2)), 0.5)
    m = cm.values["m(t)"]
    _fails_with(cm, "m(t)", lambda t: m(t) * (1 + 1e-8), "m(t) (max relative)")


def test_balance_law():
    b = balance_law_symbolic()
    assert b["conserved"] and sp.expand(b["dD"] - b["expected"]) == 0
    model = ufm.UFM(ufm.settings.balanced(3, 2), lambda_W=0.04, lambda_H=0.04)
    x0 = model.init(5, scale=0.7, seed=1)
    tr = ufm.solve(model, x0, [0.0, 10.0], save=("W", "H"), rtol=1e-12, atol=1e-15)
    D0, D1 = (W.T @ W - H @ H.T for W, H in zip(tr.W, tr.H))
    expected = np.exp(-2 * 0.04 * 10.0) * D0
    # measured: 1.5e-13 of the largest entry (rtol 1e-12)
    assert np.abs(D1 - expected).max() < 1e-12 * np.abs(expected).max()
    assert np.abs(D1 - D0).max() > 0.5 * np.abs(D0).max()        # it does decay (by e^{−0.8})
