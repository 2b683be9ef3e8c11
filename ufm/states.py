"""Model states: :class:`State` (parameter space) and :class:`GramState` (Gram space), and the
kernels' flat layout of each (:func:`flatten`, :func:`unflatten`).

The layouts (row-major, as :mod:`ufm.kernels.fields` reads them):

    State:      y = [vec(W) (K·d), vec(H) (d·N), b (K, if present)]
    GramState:  y = [vec(M) (K·N), vec(G_W) (K·K), vec(G_H) (N·N), b (K, if present)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import as_float_array, readonly

__all__ = ["State", "GramState", "flatten", "unflatten"]


@dataclass(frozen=True, eq=False)
class State:
    """A parameter-space state.

    Attributes:
        W: classifier rows, (K, d).
        H: features, one column per context, (d, N).
        b: bias, (K,), or None for a bias-free model.
    """

    W: np.ndarray
    H: np.ndarray
    b: np.ndarray | None = None

    def __post_init__(self):
        W = as_float_array(self.W, "W", ndim=2)
        H = as_float_array(self.H, "H", ndim=2)
        if W.shape[1] != H.shape[0]:
            raise ValueError(f"H: expected {W.shape[1]} rows to match W's width d = {W.shape[1]}, got shape {H.shape}")
        object.__setattr__(self, "W", readonly(W))
        object.__setattr__(self, "H", readonly(H))
        if self.b is not None:
            object.__setattr__(self, "b", readonly(as_float_array(self.b, "b", shape=(W.shape[0],))))

    @property
    def d(self) -> int:
        return self.W.shape[1]

    def grams(self) -> "GramState":
        """The exact Gram-space image (M = WH, G_W = WWᵀ, G_H = HᵀH, b)."""
        return GramState(self.W @ self.H, self.W @ self.W.T, self.H.T @ self.H, self.b)

    def logits(self) -> np.ndarray:
        """The logits Z = WH + b1ᵀ, (K, N)."""
        Z = self.W @ self.H
        return Z if self.b is None else Z + self.b[:, None]


@dataclass(frozen=True, eq=False)
class GramState:
    """A Gram-space state.

    Attributes:
        M: WH, the logits without bias, (K, N).
        gram_W: WWᵀ, (K, K), symmetric PSD.
        gram_H: HᵀH, (N, N), symmetric PSD.
        b: bias, (K,), or None.
    """

    M: np.ndarray
    gram_W: np.ndarray
    gram_H: np.ndarray
    b: np.ndarray | None = None

    def __post_init__(self):
        M = as_float_array(self.M, "M", ndim=2)
        K, N = M.shape
        object.__setattr__(self, "M", readonly(M))
        object.__setattr__(self, "gram_W", readonly(as_float_array(self.gram_W, "gram_W", shape=(K, K))))
        object.__setattr__(self, "gram_H", readonly(as_float_array(self.gram_H, "gram_H", shape=(N, N))))
        if self.b is not None:
            object.__setattr__(self, "b", readonly(as_float_array(self.b, "b", shape=(K,))))

    def logits(self) -> np.ndarray:
        """The logits Z = M + b1ᵀ, (K, N)."""
        return self.M if self.b is None else self.M + self.b[:, None]



def flatten(state) -> np.ndarray:
    """The kernels' flat layout of a State or GramState."""
    if isinstance(state, State):
        parts = [state.W.ravel(), state.H.ravel()]
    else:
        parts = [state.M.ravel(), state.gram_W.ravel(), state.gram_H.ravel()]
    if state.b is not None:
        parts.append(state.b)
    return np.concatenate(parts)


def unflatten(y: np.ndarray, K: int, N: int, d: int | None, bias: bool):
    """Inverse of :func:`flatten`: d given -> State, d None -> GramState."""
    if d is not None:
        W = y[:K * d].reshape(K, d)
        H = y[K * d:K * d + d * N].reshape(d, N)
        b = y[K * d + d * N:] if bias else None
        return State(W, H, b)
    M = y[:K * N].reshape(K, N)
    GW = y[K * N:K * N + K * K].reshape(K, K)
    GH = y[K * N + K * K:K * N + K * K + N * N].reshape(N, N)
    b = y[K * N + K * K + N * N:] if bias else None
    return GramState(M, GW, GH, b)
