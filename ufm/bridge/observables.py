"""Observables compared between a run and a model: functions of the Gram trajectory.

Every observable maps a stack of Grams (``gram_H`` (T, N, N) — the core's HᵀH, i.e. H Hᵀ for a
run's row-per-sample H — ``gram_W`` (T, K, K)) to a (T, m) array. They are vectorised over time
and agree with :mod:`ufm.metrics` (tested), so a fit compares exactly what
``Trajectory.metric`` reports.

====================  ====  =================================================================
name                  m     definition
====================  ====  =================================================================
``gram_H``            N(N−1)/2  off-diagonal cosines of the features (normalised Gram entries)
``gram_W``            K(K−1)/2  off-diagonal cosines of the classifier rows
``relations``         R − 1 mean feature cosine over the pairs of each non-identity relation of
                            the problem's association scheme (needs ``problem.relations``)
``semantic_gap``      1     :func:`ufm.metrics.semantic_gap` (needs attributes)
``etf_distance``      1     :func:`ufm.metrics.etf_distance` of G_H against the label ETF
``effective_rank``    1     :func:`ufm.metrics.effective_rank` of G_H
``norm_H``            1     log of the rms feature norm, ½ log(tr G_H / N)
``norm_W``            1     log of the rms classifier-row norm, ½ log(tr G_W / K)
``norms``             2     ``norm_H`` and ``norm_W``
====================  ====  =================================================================
"""

from __future__ import annotations

import numpy as np

__all__ = ["OBSERVABLES", "observe", "default_observables", "check_observables"]

OBSERVABLES = ("gram_H", "gram_W", "relations", "semantic_gap", "etf_distance", "effective_rank", "norm_H",
               "norm_W", "norms")
#: floor of the scale each observable's residuals are divided by (its natural resolution)
FLOORS = {"gram_H": 0.02, "gram_W": 0.02, "relations": 0.02, "semantic_gap": 0.02, "etf_distance": 0.02,
          "effective_rank": 0.1, "norm_H": 0.05, "norm_W": 0.05, "norms": 0.05}


def default_observables(problem) -> tuple[str, ...]:
    """The scale-free geometry: the relation coefficients when the problem has a scheme (else
    the Gram cosines), the semantic gap when it has attributes, and the ETF distance.

    Norms are not in the default: real backbones set their feature norms by mechanisms the UFM
    does not have (layer norms, homogeneity), and a norm mismatch would otherwise dominate a
    fit of the geometry. Add ``"norms"`` explicitly when they matter (e.g. to identify an
    initial scale)."""
    out = ["relations" if problem.relations is not None else "gram_H"]
    if problem.attributes is not None and _gap_masks(problem) is not None:
        out.append("semantic_gap")
    out.append("etf_distance")
    return tuple(out)


def check_observables(names, problem) -> tuple[str, ...]:
    """Validate observable names against the problem.

    Raises:
        ValueError: an unknown name, or one the problem cannot support (named).
    """
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ValueError("observables: expected at least one observable")
    for n in names:
        if n not in OBSERVABLES:
            raise ValueError(f"observables: unknown observable {n!r}; expected names from {OBSERVABLES}")
        if n == "relations" and problem.relations is None:
            raise ValueError("observables: 'relations' needs a problem with an association scheme (the run needs "
                             "attributes); use 'gram_H' instead")
        if n == "semantic_gap" and (problem.attributes is None or _gap_masks(problem) is None):
            raise ValueError("observables: 'semantic_gap' needs attributes with pairs that share a value and pairs "
                             "that share none")
    if len(set(names)) != len(names):
        raise ValueError(f"observables: repeated names in {names}")
    return names


def _cosines(G: np.ndarray) -> np.ndarray:
    """(T, n, n) cosine matrices (zero-norm vectors: cosine 0, diagonal 1), as metrics.cosine."""
    diag = np.clip(np.einsum("tii->ti", G), 0.0, None)
    norm = np.sqrt(diag)
    inv = np.where(norm > 0, 1.0 / np.where(norm > 0, norm, 1.0), 0.0)
    C = np.clip(G * inv[:, :, None] * inv[:, None, :], -1.0, 1.0)
    idx = np.arange(G.shape[1])
    C[:, idx, idx] = 1.0
    return C


def _gap_masks(problem):
    """(any, none) boolean masks of the pairs sharing some / no attribute value, as in
    :func:`ufm.metrics.semantic_gap` (pairs with equal labels excluded when K < N); None when
    either set is empty."""
    A = problem.attributes
    N = problem.N
    valid = np.triu(np.ones((N, N), dtype=bool), k=1)
    if problem.labels is not None and problem.K < N:
        lab = problem.labels
        valid &= lab[:, None] != lab[None, :]
    share = np.zeros((N, N), dtype=bool)
    for f in range(A.shape[1]):
        share |= A[:, f, None] == A[None, :, f]
    anym, none = share & valid, valid & ~share
    if not anym.any() or not none.any():
        return None
    return anym, none


def _etf_hat(problem) -> np.ndarray:
    from ..metrics import etf_target
    N = problem.N
    E = etf_target(problem.labels) if problem.labels is not None else etf_target(n=N)
    E = _double_centre(E)
    return E / np.linalg.norm(E)


def _double_centre(G):
    G = G - G.mean(axis=-2, keepdims=True)
    return G - G.mean(axis=-1, keepdims=True)


def observe(gram_H, gram_W, problem, names) -> dict:
    """Observables of a Gram trajectory.

    Arguments:
        gram_H: (T, N, N) feature Grams (HᵀH in the core's d×N convention).
        gram_W: (T, K, K) classifier Grams.
        problem: the :class:`ufm.Problem` (labels, attributes, relations).
        names: observable names (module table).

    Returns:
        dict name -> (T, m) float array (NaN where undefined, e.g. a zero Gram).
    """
    GH = np.asarray(gram_H, dtype=np.float64)
    GW = np.asarray(gram_W, dtype=np.float64)
    GH = 0.5 * (GH + GH.transpose(0, 2, 1))
    GW = 0.5 * (GW + GW.transpose(0, 2, 1))
    out = {}
    CH = None
    for n in names:
        if n in ("gram_H", "relations", "semantic_gap") and CH is None:
            CH = _cosines(GH)
        if n == "gram_H":
            iu = np.triu_indices(problem.N, k=1)
            out[n] = CH[:, iu[0], iu[1]]
        elif n == "gram_W":
            iu = np.triu_indices(problem.K, k=1)
            out[n] = _cosines(GW)[:, iu[0], iu[1]]
        elif n == "relations":
            cols = []
            for R in problem.relations[1:]:
                mask = np.asarray(R, dtype=bool)
                cols.append(CH[:, mask].mean(axis=1))
            out[n] = np.stack(cols, axis=1)
        elif n == "semantic_gap":
            anym, none = _gap_masks(problem)
            out[n] = (CH[:, anym].mean(axis=1) - CH[:, none].mean(axis=1))[:, None]
        elif n == "etf_distance":
            E = _etf_hat(problem)
            C = _double_centre(GH)
            norm = np.linalg.norm(C, axis=(1, 2))
            scale = np.linalg.norm(GH, axis=(1, 2))
            ok = norm > 10.0 * GH.shape[1] * np.finfo(np.float64).eps * scale
            d = np.full(GH.shape[0], np.nan)
            d[ok] = np.minimum(np.linalg.norm(C[ok] / norm[ok, None, None] - E, axis=(1, 2)), 2.0)
            out[n] = d[:, None]
        elif n == "effective_rank":
            lam = np.clip(np.linalg.eigvalsh(GH), 0.0, None)
            tot = lam.sum(axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                p = np.where(tot > 0, lam / np.where(tot > 0, tot, 1.0), 0.0)
                ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
            out[n] = np.where(tot[:, 0] > 0, np.exp(ent), 0.0)[:, None]
        elif n in ("norm_H", "norm_W", "norms"):
            with np.errstate(divide="ignore"):
                nh = 0.5 * np.log(np.clip(np.einsum("tii->t", GH), 0.0, None) / GH.shape[1])
                nw = 0.5 * np.log(np.clip(np.einsum("tii->t", GW), 0.0, None) / GW.shape[1])
            out[n] = {"norm_H": nh[:, None], "norm_W": nw[:, None], "norms": np.stack([nh, nw], axis=1)}[n]
    return out


def column_names(name: str, problem) -> list[str]:
    """Labels of the columns of an observable (for plots and reports)."""
    if name == "relations":
        return list(problem.relation_names[1:])
    if name == "norms":
        return ["norm_H", "norm_W"]
    if name == "gram_H":
        iu = np.triu_indices(problem.N, k=1)
        return [f"cos(h{i},h{j})" for i, j in zip(*iu)]
    if name == "gram_W":
        iu = np.triu_indices(problem.K, k=1)
        return [f"cos(w{i},w{j})" for i, j in zip(*iu)]
    return [name]
