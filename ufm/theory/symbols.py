"""The sympy symbols of the model family and their values for a concrete :class:`ufm.UFM`.

One set of symbols is shared by every derivation, so results compose (a fixed point of
:mod:`~ufm.theory.fixed_points` can be substituted into a reduced ODE of
:mod:`~ufm.theory.reduce`). Names follow docs/model.md: K classes, n samples per class,
N = Kn contexts, decays λ_W, λ_H, λ_b, λ_E, rates η_W, η_H, η_b, coupling strength β
(Θ = I + β²AᵀA), time t.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

__all__ = ["K", "n", "N", "lambda_W", "lambda_H", "lambda_b", "lambda_E", "eta_W", "eta_H", "eta_b",
           "beta", "t", "lam", "model_values", "positive"]


def positive(name: str) -> sp.Symbol:
    """A positive real symbol (the assumption lets sympy simplify square roots and logs)."""
    return sp.Symbol(name, positive=True)


K = sp.Symbol("K", positive=True, integer=True)
n = sp.Symbol("n", positive=True, integer=True)
N = sp.Symbol("N", positive=True, integer=True)
lambda_W = positive("lambda_W")
lambda_H = positive("lambda_H")
lambda_b = positive("lambda_b")
lambda_E = sp.Symbol("lambda_E", nonnegative=True)
eta_W = positive("eta_W")
eta_H = positive("eta_H")
eta_b = positive("eta_b")
beta = sp.Symbol("beta", nonnegative=True)
t = sp.Symbol("t", nonnegative=True)
lam = positive("lambda")          # a common decay λ_W = λ_H = λ where a result needs it


def model_values(model) -> dict:
    """Substitution dict symbol -> float for the model's scalar parameters.

    K, N and (for balanced one-hot problems) n are included; decays that are zero in the
    model are mapped to 0 (the positive symbols then describe the limit λ → 0⁺).

    Arguments:
        model: a :class:`ufm.UFM`.

    Returns:
        dict from the module's symbols to Python floats/ints.
    """
    p = model.problem
    out = {K: p.K, N: p.N, lambda_W: model.lambda_W, lambda_H: model.lambda_H,
           lambda_b: model.lambda_b, lambda_E: model.lambda_E, eta_W: model.lr_W,
           eta_H: model.lr_H, eta_b: model.lr_b}
    if p.labels is not None:
        counts = np.bincount(p.labels, minlength=p.K)
        if np.all(counts == counts[0]):
            out[n] = int(counts[0])
    return out
