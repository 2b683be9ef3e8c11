"""Metrics recomputed pair by pair from their definitions, sharing no code with ufm.

Tests compare what ufm reports (a sweep's summary, a job's summary, a bridge run's observables,
``Trajectory.metric``) with these, so that a summary is never checked against the very function
that produced it. They are slow loops over pairs; use them on small N.
"""

from __future__ import annotations

import math

import numpy as np


def cosine(G: np.ndarray, i: int, j: int) -> float:
    """Cosine of vectors i and j behind the Gram matrix G (0 when either has zero norm)."""
    norm = math.sqrt(G[i, i] * G[j, j])
    return float(G[i, j] / norm) if norm > 0 else 0.0


def semantic_gap(G: np.ndarray, attributes, labels=None, centred: bool = True) -> float:
    """Mean cosine over pairs i < j sharing some attribute value minus that over pairs sharing
    none; with ``labels``, pairs of equal labels are left out of both. ``centred``: cosines of
    the features minus their mean over the N contexts (the Gram C G C, C = I − 11ᵀ/N)."""
    if centred:
        C = np.eye(len(G)) - np.full((len(G), len(G)), 1.0 / len(G))
        G = C @ G @ C
    attributes = np.asarray(attributes).reshape(len(G), -1)
    sharing, disjoint = [], []
    for i in range(len(G)):
        for j in range(i + 1, len(G)):
            if labels is not None and labels[i] == labels[j]:
                continue
            shares = any(attributes[i, f] == attributes[j, f] for f in range(attributes.shape[1]))
            (sharing if shares else disjoint).append(cosine(G, i, j))
    return sum(sharing) / len(sharing) - sum(disjoint) / len(disjoint)


def etf_distance(G: np.ndarray, labels=None) -> float:
    """‖Ĝ − Ê‖_F with X̂ = CXC/‖CXC‖_F, C = I − 11ᵀ/N, and E the Gram of the collapsed simplex:
    sample i sits at vertex e_{y_i} − 1/K of the standard simplex (every sample its own class
    when ``labels`` is None)."""
    N = len(G)
    labels = np.arange(N) if labels is None else np.asarray(labels)
    K = int(labels.max()) + 1
    vertices = np.eye(K) - 1.0 / K                       # row k: e_k − 1/K
    X = vertices[labels]                                 # (N, K): one row per sample
    E = X @ X.T
    C = np.eye(N) - np.full((N, N), 1.0 / N)

    def unit(M):
        M = C @ M @ C
        return M / np.linalg.norm(M)
    return float(np.linalg.norm(unit(np.asarray(G, dtype=float)) - unit(E)))


def transient(t, gap, threshold: float) -> dict:
    """Peak of ``gap``, its (first) time, and the first time after it that the curve is below
    ``threshold``: linear in log t between the bracketing saves when both are at t > 0 and the
    peak is above the threshold, else the save time itself; nan when it never falls below."""
    t = [float(x) for x in t]
    gap = [float(x) for x in gap]
    top = max(range(len(gap)), key=lambda j: (gap[j], -j))
    out = {"peak": gap[top], "t_peak": t[top], "t_collapse": float("nan"), "collapsed": False}
    for c in range(top, len(gap)):
        if gap[c] < threshold:
            out["collapsed"] = True
            if c == top or t[c - 1] <= 0:
                out["t_collapse"] = t[c]
            else:
                phi = (gap[c - 1] - threshold) / (gap[c - 1] - gap[c])
                out["t_collapse"] = math.exp(math.log(t[c - 1]) + phi * (math.log(t[c]) - math.log(t[c - 1])))
            break
    return out


def accuracy(logits: np.ndarray, labels) -> float:
    """Fraction of columns of the (K, N) logits whose largest entry is at the label."""
    hits = [int(np.argmax(logits[:, i])) == int(labels[i]) for i in range(logits.shape[1])]
    return sum(hits) / len(hits)


def effective_rank_of_features(X: np.ndarray) -> float:
    """exp of the entropy of the normalised squared singular values of the features X (any
    orientation): the effective rank of their Gram, without forming or diagonalising it."""
    s2 = np.linalg.svd(np.asarray(X, dtype=float), compute_uv=False) ** 2
    p = s2[s2 > 0] / s2.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def kernel_alignment(A: np.ndarray, B: np.ndarray) -> float:
    """Centred alignment ⟨CAC, CBC⟩_F / (‖CAC‖_F ‖CBC‖_F), C = I − 11ᵀ/N."""
    N = len(A)
    C = np.eye(N) - np.full((N, N), 1.0 / N)
    a, b = C @ A @ C, C @ B @ C
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def nc3(W: np.ndarray, H: np.ndarray, labels) -> float:
    """‖P_K W/‖P_K W‖ − M̃ᵀ/‖M̃‖‖²_F from the features: W (K, d) classifier rows, H (d, N)
    feature columns, M̃ (d, K) the class means minus their average (P_K = I − 11ᵀ/K)."""
    labels = np.asarray(labels)
    K = W.shape[0]
    means = np.stack([H[:, labels == k].mean(axis=1) for k in range(K)], axis=1)
    centred_means = means - means.mean(axis=1, keepdims=True)
    centred_W = W - W.mean(axis=0)
    D = centred_W / np.linalg.norm(centred_W) - centred_means.T / np.linalg.norm(centred_means)
    return float(np.sum(D * D))
