"""Slow, obviously-correct numpy references for every numba kernel.

These are written for readability, straight from the formulas in docs/model.md, and are what
the kernels in :mod:`ufm.kernels` are tested against (also the implementation behind
``UFM.loss`` / ``UFM.gradient`` / ``UFM.vector_field``). Nothing here is on a hot path.
"""

from __future__ import annotations

import numpy as np

from .states import GramState, State, flatten, unflatten  # noqa: F401 - re-exported for callers


def logits(state) -> np.ndarray:
    """Z = WH + b1ᵀ (State) or M + b1ᵀ (GramState), shape (K, N)."""
    return state.logits()


def data_loss_and_grad(model, Z: np.ndarray):
    """(ℓ, G = ∂ℓ/∂Z) for logits Z (K, N)."""
    Y = model.problem.Y
    pi = model.problem.weights
    if model.loss_name == "ce":
        shifted = Z - Z.max(axis=0)
        logp = shifted - np.log(np.exp(shifted).sum(axis=0))     # log-softmax of each column
        loss = -np.sum(pi * np.sum(Y * logp, axis=0))
        G = (np.exp(logp) - Y) * pi
    else:
        R = Z - Y
        loss = 0.5 * np.sum(pi * np.sum(R * R, axis=0))
        G = R * pi
    return float(loss), G


def objective(model, state, t: float = 0.0) -> float:
    """ℓ + λ_W/2 tr G_W + λ_H/2 tr G_H + λ_b/2‖b‖² + λ_E/2 tr(Θ⁺ G_H)."""
    gs = state if isinstance(state, GramState) else state.grams()
    loss, _ = data_loss_and_grad(model, gs.logits())
    loss += 0.5 * model.lambda_W * np.trace(gs.gram_W) + 0.5 * model.lambda_H * np.trace(gs.gram_H)
    if gs.b is not None:
        loss += 0.5 * model.lambda_b * float(gs.b @ gs.b)
    if model.lambda_E:
        pinv = np.linalg.pinv(model.theta(t), hermitian=True)
        loss += 0.5 * model.lambda_E * float(np.trace(pinv @ gs.gram_H))
    return float(loss)


def gradient(model, state):
    """Euclidean gradient (G Hᵀ + λ_W W, Wᵀ G + λ_H H, G1 + λ_b b) as a State."""
    _, G = data_loss_and_grad(model, state.logits())
    gW = G @ state.H.T + model.lambda_W * state.W
    gH = state.W.T @ G + model.lambda_H * state.H
    gb = None if state.b is None else G.sum(axis=1) + model.lambda_b * state.b
    return State(gW, gH, gb)


def vector_field(model, state, t: float = 0.0):
    """The flow's right-hand side at ``state`` (State -> State, GramState -> GramState)."""
    theta = model.theta(t)
    lr_w, lr_h, lr_b = model.lr_W, model.lr_H, model.lr_b
    lam_w, lam_h, lam_e, lam_b = model.lambda_W, model.lambda_H, model.lambda_E, model.lambda_b
    _, G = data_loss_and_grad(model, state.logits())
    db = None if state.b is None else -lr_b * (G.sum(axis=1) + lam_b * state.b)
    if isinstance(state, State):
        W, H = state.W, state.H
        dW = -lr_w * (G @ H.T + lam_w * W)
        dH = -lr_h * (W.T @ G + lam_h * H) @ theta - lr_h * lam_e * H
        return State(dW, dH, db)
    M, GW, GH = state.M, state.gram_W, state.gram_H
    dM = -lr_w * (G @ GH + lam_w * M) - lr_h * (GW @ G + lam_h * M) @ theta - lr_h * lam_e * M
    dGW = -lr_w * (G @ M.T + M @ G.T + 2 * lam_w * GW)
    dGH = (-lr_h * (theta @ (G.T @ M + lam_h * GH) + (M.T @ G + lam_h * GH) @ theta)
           - 2 * lr_h * lam_e * GH)
    return GramState(dM, dGW, dGH, db)


def euler_train_reference(model, state, steps: int, lr: float):
    """Plain numpy GD loop: x ← x + lr·F(x), for testing ``ufm.train``."""
    W, H = np.array(state.W), np.array(state.H)
    b = None if state.b is None else np.array(state.b)
    for _ in range(steps):
        v = vector_field(model, State(W, H, b))
        W = W + lr * v.W
        H = H + lr * v.H
        if b is not None:
            b = b + lr * v.b
    return State(W, H, b)
