"""Test systems shared by the test modules (see tests/README.md for the closed forms)."""

from __future__ import annotations

import itertools

import numpy as np

import ufm


def variant_models(problem=None):
    """Every combination of loss × coupling × bias × linear-features decay, as (id, model)."""
    p = problem or ufm.settings.factorial((2, 3))
    theta = p.coupling("attribute", 0.8)
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
    follows the logistic ODE du/dt = (2/(K√n)) u (1 − K√nλ − u) (docs/theory.md, MSE dynamics).
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


def soft_label_problem(K: int = 3, N: int = 5, seed: int = 0):
    """K classes, N contexts (K != N), soft-label targets (columns on the simplex) and unequal
    context weights π summing to 1 — the shapes a next-token problem has."""
    rng = np.random.default_rng(seed)
    Y = rng.dirichlet(np.ones(K), size=N).T
    weights = rng.uniform(0.5, 1.5, size=N)
    return ufm.Problem(Y, weights=weights / weights.sum())


def pd_kernel(N: int, seed: int = 0, rank: int = 2) -> np.ndarray:
    """A positive definite N×N coupling I + AAᵀ/N (A of the given rank), for problems without
    attributes."""
    A = np.random.default_rng(seed).normal(size=(N, rank))
    return np.eye(N) + A @ A.T / N


def bias_relaxation_init(model, d: int, b0):
    """W = 0, H = 0 and bias b0: W and H stay 0 (both fields vanish there), and for MSE the
    bias obeys the linear ODE of :func:`bias_relaxation`."""
    return model.state(np.zeros((model.K, d)), np.zeros((d, model.N)), np.asarray(b0, dtype=float))


def bias_relaxation(model, b0, t):
    """Closed form of the bias when W = H = 0 and the loss is MSE.

    Then Z = b1ᵀ, G = (b1ᵀ − Y) diag(π) and db/dt = −η_b (G1 + λ_b b) is linear:
    db/dt = −r (b − b*), r = η_b (Σπ + λ_b), b* = Yπ / (Σπ + λ_b), so
    b(t) = b* + (b0 − b*) e^{−rt}. Returns (T, K).
    """
    Y, pi = model.problem.Y, model.problem.weights
    total = pi.sum() + model.lambda_b
    rate = model.lr_b * total
    b_star = Y @ pi / total
    decay = np.exp(-rate * np.asarray(t, dtype=float))[:, None]
    return b_star + (np.asarray(b0, dtype=float) - b_star) * decay


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
