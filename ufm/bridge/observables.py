"""Observables compared between a run and a model: functions of the Gram trajectory.

Every observable maps a stack of Grams (``gram_H`` (T, N, N) — the core's HᵀH, i.e. H Hᵀ for a
run's row-per-sample H — ``gram_W`` (T, K, K)) to a (T, m) array, computed by
:mod:`ufm.metrics` (vectorised over time), so a fit compares exactly what
``Trajectory.metric`` reports.

=======================  =========  ==============================================================
name                     m          definition
=======================  =========  ==============================================================
``gram_H``               N(N−1)/2   off-diagonal centred cosines of the features
``gram_W``               K(K−1)/2   off-diagonal centred cosines of the classifier rows
``relations``            R − 1      mean centred feature cosine over the pairs of each non-identity
                                    relation of the problem's association scheme (needs
                                    ``problem.relations``)
``semantic_gap``         1          :func:`ufm.metrics.semantic_gap` (centred; needs attributes;
                                    pairs with equal labels excluded)
``etf_distance``         1          :func:`ufm.metrics.etf_distance` of G_H against the label ETF
``effective_rank``       1          :func:`ufm.metrics.effective_rank` of G_H (entropy)
``participation_ratio``  1          :func:`ufm.metrics.participation_ratio` of the centred G_H
``norm_H``               1          log of the rms feature norm, ½ log(tr G_H / N)
``norm_W``               1          log of the rms classifier-row norm, ½ log(tr G_W / K)
``norms``                2          ``norm_H`` and ``norm_W``
=======================  =========  ==============================================================

**Centring** (:data:`CONVENTIONS`). The cosines behind ``gram_H``, ``relations`` and
``semantic_gap`` are those of the features minus their mean over contexts (``C G_H C``,
``C = I − 11ᵀ/N``); those behind ``gram_W`` of the classifier rows minus their mean over
classes. Why: the semantic gap is centred (:func:`ufm.metrics.semantic_gap`), and the relation
coefficients are the cosines the gap averages, so the two must agree; the ETF distance
centres as well. A common mean is a nuisance the UFM does not model — the ReLU features of
real networks carry a large one, which drives every raw cosine towards 1 and would make a fit
of the raw relation coefficients mostly a fit of that mean's decay, and the mean classifier row
receives no cross-entropy gradient at all (the softmax residual sums to zero over classes), so
only weight decay moves it. At a simplex ETF, centred and raw cosines coincide.

Grams are symmetrised first (long integrations leave rounding-level asymmetry). Saves whose
Grams the metrics refuse (:func:`ufm.metrics.is_gram`: non-finite, e.g. the NaN padding of an
integration that stopped, or clearly not positive semi-definite) give NaN rows.
"""

from __future__ import annotations

import numpy as np

from .. import metrics as _metrics

__all__ = ["OBSERVABLES", "CONVENTIONS", "observe", "default_observables", "check_observables"]

OBSERVABLES = ("gram_H", "gram_W", "relations", "semantic_gap", "etf_distance", "effective_rank",
               "participation_ratio", "norm_H", "norm_W", "norms")
#: floor of the scale each observable's residuals are divided by (its natural resolution)
FLOORS = {"gram_H": 0.02, "gram_W": 0.02, "relations": 0.02, "semantic_gap": 0.02, "etf_distance": 0.02,
          "effective_rank": 0.1, "participation_ratio": 0.1, "norm_H": 0.05, "norm_W": 0.05, "norms": 0.05}
#: the centring of every observable built on cosines (reports and JSON print it)
CONVENTIONS = {
    "gram_H": "cosines of the centred features (minus their mean over contexts)",
    "gram_W": "cosines of the centred classifier rows (minus their mean over classes)",
    "relations": "mean cosine of the centred features per relation",
    "semantic_gap": _metrics.gap_convention(_metrics.DEFAULT_GAP_CENTRED) + "; pairs with equal labels excluded",
    "participation_ratio": "of the centred feature Gram",
}


def _gap_defined(problem) -> bool:
    return problem.attributes is not None and _metrics.gap_pairs(problem.attributes, problem.labels).defined


def default_observables(problem) -> tuple[str, ...]:
    """The scale-free geometry: the relation coefficients when the problem has a scheme (else
    the Gram cosines), the semantic gap when it has attributes, and the ETF distance.

    Norms are not in the default: real backbones set their feature norms by mechanisms the UFM
    does not have (layer norms, homogeneity), and a norm mismatch would otherwise dominate a
    fit of the geometry. Add ``"norms"`` explicitly when they matter (e.g. to identify an
    initial scale)."""
    out = ["relations" if problem.relations is not None else "gram_H"]
    if _gap_defined(problem):
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
        if n == "semantic_gap" and not _gap_defined(problem):
            raise ValueError("observables: 'semantic_gap' needs attributes with pairs that share a value and pairs "
                             "that share none")
    if len(set(names)) != len(names):
        raise ValueError(f"observables: repeated names in {names}")
    return names


def observe(gram_H, gram_W, problem, names) -> dict:
    """Observables of a Gram trajectory.

    Arguments:
        gram_H: (T, N, N) feature Grams (HᵀH in the core's d×N convention).
        gram_W: (T, K, K) classifier Grams, or None (a Gram-only run without them: the
            classifier observables then raise).
        problem: the :class:`ufm.Problem` (labels, attributes, relations).
        names: observable names (module table).

    Returns:
        dict name -> (T, m) float array (NaN at saves whose Grams are not valid Grams, and
        where a metric is undefined, e.g. a zero Gram).
    """
    GH = np.asarray(gram_H, dtype=np.float64)
    GH = 0.5 * (GH + GH.transpose(0, 2, 1))
    if gram_W is None:
        # a Gram-only run that logged no classifier Gram: only the feature observables exist
        need_W = [n for n in names if n in ("gram_W", "norm_W", "norms")]
        if need_W:
            raise ValueError(f"observables: {need_W[0]!r} needs the classifier Gram (gram_W, or the run's W); this "
                             "Gram-only run logged gram_H only")
        GW = None
        ok = _metrics.is_gram(GH)
    else:
        GW = np.asarray(gram_W, dtype=np.float64)
        GW = 0.5 * (GW + GW.transpose(0, 2, 1))
        ok = _metrics.is_gram(GH) & _metrics.is_gram(GW)
        GW = GW[ok]
    GH = GH[ok]
    T = ok.shape[0]
    out = {}
    CH = None
    for n in names:
        if n in ("gram_H", "relations", "semantic_gap") and CH is None:
            CH = _metrics.cosine(GH, centred=True)
        if n == "gram_H":
            iu = np.triu_indices(problem.N, k=1)
            value = CH[:, iu[0], iu[1]]
        elif n == "gram_W":
            iu = np.triu_indices(problem.K, k=1)
            value = _metrics.cosine(GW, centred=True)[:, iu[0], iu[1]]
        elif n == "relations":
            value = np.stack([CH[:, np.asarray(R, dtype=bool)].mean(axis=1) for R in problem.relations[1:]], axis=1)
        elif n == "semantic_gap":
            # the centred gap of the "semantic_gap" metric, from the cosines already at hand
            # (the same arithmetic as ufm.metrics.semantic_gap: one cosine pass fewer per call)
            pairs = _metrics.gap_pairs(problem.attributes, problem.labels, n=problem.N)
            value = (CH[:, pairs.share].mean(axis=-1) - CH[:, pairs.share_none].mean(axis=-1))[:, None]
        elif n in ("etf_distance", "effective_rank", "participation_ratio"):
            value = _metrics.evaluate(n, gram_H=GH, problem=problem)[:, None]
        elif n in ("norm_H", "norm_W", "norms"):
            rms = {"norm_H": _metrics.evaluate("norm_H", gram_H=GH) / np.sqrt(problem.N),
                   "norm_W": _metrics.evaluate("norm_W", gram_W=GW) / np.sqrt(problem.K)}
            with np.errstate(divide="ignore"):
                logs = {k: np.log(v) for k, v in rms.items()}
            value = np.stack([logs["norm_H"], logs["norm_W"]], axis=1) if n == "norms" else logs[n][:, None]
        full = np.full((T,) + value.shape[1:], np.nan)
        full[ok] = value
        out[n] = full
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
