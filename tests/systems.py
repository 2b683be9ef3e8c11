"""Test systems shared by the test modules (see tests/README.md for the closed forms)."""

from __future__ import annotations

import itertools

import numpy as np

import ufm


def variant_models(problem=None):
    """Every combination of loss × coupling × bias × linear-features decay, as (id, model)."""
    p = problem or ufm.settings.factorial((2, 3))
    theta = p.kernel("attribute", 0.8)
    out = []
    for loss, coupled, bias, lam_e in itertools.product(("ce", "mse"), (False, True), (False, True), (0.0, 0.07)):
        m = ufm.UFM(p, loss=loss, lambda_W=0.03, lambda_H=0.02, lambda_E=lam_e, bias=bias,
                    lambda_b=0.01 if bias else 0.0, coupling=theta if coupled else None,
                    lr_W=1.3, lr_H=0.8, lr_b=1.1)
        ident = f"{loss}-{'coupled' if coupled else 'standard'}-{'bias' if bias else 'nobias'}-lamE{lam_e:g}"
        out.append((ident, m))
    return out


def aligned_mse_init(K: int, n: int, d: int, u0: float, seed: int = 0):
    """Balanced aligned init of Saxe type: W = aΦ, h_i = bφ_{y_i}, a² = n b², ab = u0.

    Φ (K×d) has orthonormal rows, so WH = u0·Y and the class-level singular value u = ab
    follows the logistic ODE du/dt = (2/(K√n)) u (1 − K√nλ − u) (THEORY.md, MSE dynamics).
    """
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, K)))
    Phi = Q.T  # K × d, orthonormal rows
    b = np.sqrt(u0 / np.sqrt(n))
    a = np.sqrt(n) * b
    problem = ufm.settings.balanced(K, n)
    Y = problem.Y
    W = a * Phi
    H = b * Phi.T @ Y
    return problem, W, H


def logistic_u(t, u0: float, K: int, n: int, lam: float):
    """Closed-form u(t) = s e^{2st/τ} / (e^{2st/τ} − 1 + s/u0), τ = K√n, s = 1 − K√nλ."""
    tau = K * np.sqrt(n)
    s = 1.0 - K * np.sqrt(n) * lam
    e = np.exp(2 * s * np.asarray(t) / tau)
    return s * e / (e - 1.0 + s / u0)


def flat_rhs(model, d):
    """A numpy right-hand side f(t, y) for scipy, on the kernels' flat layout."""
    from ufm.reference import flatten, unflatten, vector_field
    K, N = model.K, model.N

    def f(t, y):
        st = unflatten(y, K, N, d, model.bias)
        return flatten(vector_field(model, st, t))

    return f


def rel_err(a, b):
    """max over save times of ‖a_t − b_t‖_F / ‖b_t‖_F."""
    a = np.asarray(a).reshape(len(a), -1)
    b = np.asarray(b).reshape(len(b), -1)
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))
