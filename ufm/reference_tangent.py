"""Slow numpy references for :mod:`ufm.kernels.tangent` (Jacobian-vector products, second
derivatives and parameter derivatives of the flow), written straight from the formulas in
that module's docstring on :class:`~ufm.states.State` / :class:`~ufm.states.GramState`
objects. The tests compare the kernels with these and both with finite differences.
"""

from __future__ import annotations

import numpy as np

from .reference import data_loss_and_grad
from .states import GramState, State, flatten, unflatten


def _softmax(Z):
    shifted = Z - Z.max(axis=0)
    e = np.exp(shifted)
    return e / e.sum(axis=0)


def gradient_tangent(model, Z, A):
    """G'(Z)[A], the derivative of the logit gradient G = ∂ℓ/∂Z along A (K, N)."""
    pi = model.problem.weights
    if model.loss_name == "mse":
        return A * pi
    P = _softmax(Z)
    return pi * P * (A - (P * A).sum(axis=0))


def gradient_second(model, Z, A, C):
    """G''(Z)[A, C] (zero for MSE)."""
    if model.loss_name == "mse":
        return np.zeros_like(A)
    pi = model.problem.weights
    P = _softmax(Z)
    At = A - (P * A).sum(axis=0)
    Ct = C - (P * C).sum(axis=0)
    Q = At * Ct
    return pi * P * (Q - (P * Q).sum(axis=0))


def _gram_B(model, G, s: GramState, theta, with_bias=True, rates=None):
    lr_w, lr_h, lr_b = rates if rates is not None else (model.lr_W, model.lr_H, model.lr_b)
    dM = -lr_w * G @ s.gram_H - lr_h * (s.gram_W @ G) @ theta
    dGW = -lr_w * (G @ s.M.T + s.M @ G.T)
    dGH = -lr_h * (theta @ G.T @ s.M + s.M.T @ G @ theta)
    db = None
    if s.b is not None:
        db = -lr_b * G.sum(axis=1) if with_bias else np.zeros_like(s.b)
    return GramState(dM, dGW, dGH, db)


def _gram_L(model, s: GramState, theta, rates=None, decays=None):
    lr_w, lr_h, lr_b = rates if rates is not None else (model.lr_W, model.lr_H, model.lr_b)
    lw, lh, lb, le = decays if decays is not None else (model.lambda_W, model.lambda_H, model.lambda_b,
                                                         model.lambda_E)
    dM = -lr_w * lw * s.M - lr_h * lh * s.M @ theta - lr_h * le * s.M
    dGW = -2 * lr_w * lw * s.gram_W
    dGH = -lr_h * lh * (s.gram_H @ theta + theta @ s.gram_H.T) - 2 * lr_h * le * s.gram_H
    db = None if s.b is None else -lr_b * lb * s.b
    return GramState(dM, dGW, dGH, db)


def _parts(s):
    return (s.W, s.H, s.b) if isinstance(s, State) else (s.M, s.gram_W, s.gram_H, s.b)


def _add(*states):
    out = states[0]
    for s in states[1:]:
        out = type(out)(*(None if a is None else a + b for a, b in zip(_parts(out), _parts(s))))
    return out


def jvp(model, state, v, t: float = 0.0):
    """J(state)·v of ``ufm.reference.vector_field`` (State or GramState, v of the same type)."""
    theta = model.theta(t)
    Z = state.logits()
    _, G = data_loss_and_grad(model, Z)
    if isinstance(state, GramState):
        dG = gradient_tangent(model, Z, v.logits())
        return _add(_gram_B(model, dG, state, theta), _gram_B(model, G, v, theta, with_bias=False),
                    _gram_L(model, v, theta))
    W, H = state.W, state.H
    dZ = v.W @ H + W @ v.H + (0.0 if v.b is None else v.b[:, None])
    dG = gradient_tangent(model, Z, dZ)
    dW = -model.lr_W * (dG @ H.T + G @ v.H.T + model.lambda_W * v.W)
    dH = -model.lr_H * (v.W.T @ G + W.T @ dG + model.lambda_H * v.H) @ theta - model.lr_H * model.lambda_E * v.H
    db = None if v.b is None else -model.lr_b * (dG.sum(axis=1) + model.lambda_b * v.b)
    return State(dW, dH, db)


def jacobian(model, state, t: float = 0.0) -> np.ndarray:
    """The dense Jacobian (n, n) of ``ufm.reference.vector_field`` at ``state`` (State or
    GramState): column j is :func:`jvp` along the j-th basis vector of the flattened state."""
    y = flatten(state)
    d = state.W.shape[1] if isinstance(state, State) else None
    bias = state.b is not None
    cols = []
    for j in range(y.size):
        e = np.zeros(y.size)
        e[j] = 1.0
        cols.append(flatten(jvp(model, state, unflatten(e, model.K, model.N, d, bias), t)))
    return np.stack(cols, axis=1)


def gram_second(model, state: GramState, u: GramState, v: GramState, t: float = 0.0) -> GramState:
    """f''(state)[u, v] of the Gram field."""
    theta = model.theta(t)
    Z = state.logits()
    d2G = gradient_second(model, Z, u.logits(), v.logits())
    dGu = gradient_tangent(model, Z, u.logits())
    dGv = gradient_tangent(model, Z, v.logits())
    return _add(_gram_B(model, d2G, state, theta), _gram_B(model, dGu, v, theta, with_bias=False),
                _gram_B(model, dGv, u, theta, with_bias=False))


def gram_param_field(model, state: GramState, name: str, direction=None, t: float = 0.0) -> GramState:
    """∂f/∂θ at ``state`` (Gram field) for θ = ``name`` (see ``ufm.sensitivity.PARAMETERS``)."""
    theta = model.theta(t)
    _, G = data_loss_and_grad(model, state.logits())
    zeros = GramState(*(None if a is None else np.zeros_like(a) for a in _parts(state)))
    rates = {"lr_W": (1.0, 0.0, 0.0), "lr_H": (0.0, 1.0, 0.0), "lr_b": (0.0, 0.0, 1.0)}
    decays = {"lambda_W": (1.0, 0.0, 0.0, 0.0), "lambda_H": (0.0, 1.0, 0.0, 0.0),
              "lambda_b": (0.0, 0.0, 1.0, 0.0), "lambda_E": (0.0, 0.0, 0.0, 1.0)}
    if name == "init_scale":
        return zeros
    if name == "time_scale":
        return _add(_gram_B(model, G, state, theta), _gram_L(model, state, theta))
    if name in rates:
        r = rates[name]
        return _add(_gram_B(model, G, state, theta, rates=r), _gram_L(model, state, theta, rates=r))
    if name in decays:
        return _gram_L(model, state, theta, decays=decays[name])
    if name == "coupling":
        D = np.asarray(direction)
        T = model.lr_H * (state.gram_W @ G + model.lambda_H * state.M) @ D
        U = (state.M.T @ G + model.lambda_H * state.gram_H) @ D
        return GramState(-T, np.zeros_like(state.gram_W), -model.lr_H * (U + U.T),
                         None if state.b is None else np.zeros_like(state.b))
    raise ValueError(f"name: unknown parameter {name!r}")
