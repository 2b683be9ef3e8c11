"""Geometry of Gram matrices: ETF distance, semantic gap, NC1–NC4, CDNV, spectra, transients.

Every metric works from Gram matrices, because the toolkit also integrates in Gram space where
the features H and the classifier W themselves do not exist.

**Broadcasting.** Every metric accepts one matrix or a stack, as ``np.linalg`` does: Grams of
shape (..., N, N) (logits (..., K, N)), with any leading (time, configuration) axes, and
returns an array of shape (...) — a Python float for a single matrix, so single-time calls
read as before. Stacks passed together (e.g. ``gram_W``, ``gram_H`` and ``logits`` of
:func:`nc3`, or the two kernels of :func:`kernel_alignment`) broadcast against each other.
Labels and attributes are per context and shared by the whole stack. A stack equals the loop
of single-matrix calls (tested to 1e-12). :func:`evaluate` and :data:`METRICS` are the
name → metric table that :meth:`ufm.Trajectory.metric`, the bridge's observables, the sweep
summaries and the experiment call.

Conventions (docs/model.md §1, §7):

* features ``H`` are d×N, one column ``h_i`` per context; classifier ``W`` is K×d, one row
  ``w_k`` per class; logits ``Z = W H + b 1ᵀ`` are K×N (one column per context);
* ``gram_H = Hᵀ H`` is N×N (``G_ij = ⟨h_i, h_j⟩``), ``gram_W = W Wᵀ`` is K×K;
* ``labels`` is an integer vector of length N: ``labels[i]`` is the class of context i. Metrics
  built on class means require the values ``0 … K−1`` with every class present, so that class k
  is row k of W and of the logits (the exception is :func:`semantic_gap`, which only uses
  equality of labels);
* ``P_m = I_m − 1 1ᵀ/m`` is the m×m centring projector; ``C = P_N`` centres N×N Grams
  ("global centring": ``C G C`` is the Gram of the features after subtracting their unweighted
  mean over contexts, ``h_i − h̄`` with ``h̄ = (1/N) Σ_j h_j``).

**Centring** is an explicit argument wherever it matters, with these defaults:

=========================  ========  =========================================================
metric                     centred   why
=========================  ========  =========================================================
:func:`etf_distance`       always    the ETF is defined up to a common offset
:func:`kernel_alignment`   True      CKA (``centred=False``: the uncentred alignment)
:func:`semantic_gap`       True      a common mean (e.g. of ReLU features) inflates every raw
                                     cosine; the neural-collapse literature and analyses of
                                     real runs use centred features. At a simplex ETF both
                                     conventions give 0
:func:`participation_ratio` True     an effective dimension of the spread, not of the mean
:func:`cosine`             False     the plain cosine matrix (``centred=True`` for C G C)
:func:`effective_rank`     False     Roy & Vetterli's definition on the Gram itself
=========================  ========  =========================================================

Class means are computed through the N×K *averaging matrix* ``A`` with
``A_ik = [y_i = k] / n_k`` (``n_k`` contexts in class k), so that the d×K matrix of class means
is ``M = H A`` and its Gram is ``Mᵀ M = Aᵀ G A``. The *centred averaging matrix*
``Ã = A P_K`` gives the class means centred at their unweighted average
``μ_G = (1/K) Σ_k μ_k``: ``M̃ = H Ã = M − μ_G 1ᵀ``. Every column of ``A`` sums to 1, so
``1ᵀ Ã = 1ᵀ P_K = 0``: the columns of ``Ã`` sum to zero.

Numerical conventions: Gram matrices must be finite and symmetric to a relative tolerance of
1e-8 per matrix (they are symmetrised before use); errors name the argument and, for a stack,
the index of the first bad matrix. Tiny negative eigenvalues and diagonal entries produced by
rounding are clipped to 0. Quantities that are undefined because a normalising matrix vanishes
(a zero Gram, coinciding class means) are returned as ``nan`` rather than raising, so that a
trajectory starting from zero can still be scanned.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ._validation import as_float_array, as_int_array, as_positive, as_positive_int, as_real, check_choice

__all__ = [
    "DEFAULT_GAP_CENTRED",
    "GapPairs",
    "METRICS",
    "MetricSpec",
    "PINV_RTOL",
    "TransientSummary",
    "cdnv",
    "class_means_gram",
    "cosine",
    "effective_rank",
    "eigenbasis",
    "etf_distance",
    "etf_target",
    "evaluate",
    "gap_convention",
    "gap_pairs",
    "is_gram",
    "kernel_alignment",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "participation_ratio",
    "semantic_gap",
    "spectrum_in_basis",
    "transient_summary",
]

#: Relative cutoff of the pseudo-inverse in :func:`nc1`: eigenvalues of the between-class
#: covariance Σ_B below ``PINV_RTOL · λ_max(Σ_B)`` are treated as zero.
PINV_RTOL = 1e-10

#: Default centring of :func:`semantic_gap` (and of every output that reports a gap).
DEFAULT_GAP_CENTRED = True

_SYM_RTOL = 1e-8      # relative asymmetry tolerated in a Gram matrix
_NEG_RTOL = 1e-10     # relative size of negative diagonal entries clipped as rounding
_BASIS_TOL = 1e-8     # orthonormality / projector tolerance in spectrum_in_basis
_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------------
# validation helpers (vectorised over leading axes)
# --------------------------------------------------------------------------------------------

def _matrix_index(lead: tuple) -> str:
    """How an error names matrix ``lead`` of a stack."""
    return str(lead[0]) if len(lead) == 1 else str(lead)


def _check_finite(arr: np.ndarray, name: str, core: int = 2) -> None:
    """Raise on the first non-finite entry, naming the matrix of a stack and the entry."""
    if arr.size and not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        lead, entry = bad[:arr.ndim - core], bad[arr.ndim - core:]
        where = f"at index {entry}" if not lead else f"in matrix {_matrix_index(lead)} of the stack at entry {entry}"
        raise ValueError(f"{name}: expected finite values, found {arr[bad]} {where}")


def _first(mask: np.ndarray) -> tuple:
    """Leading index of the first True entry of a (...) boolean array (() for a 0-d one)."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _bad_matrix(lead: tuple) -> str:
    return "" if not lead else f" (matrix {_matrix_index(lead)} of the stack)"


def _square(value, name: str, *, min_size: int = 1) -> np.ndarray:
    """A finite float array of square matrices, shape (..., N, N) with N >= ``min_size``."""
    arr = as_float_array(value, name, finite=False)
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected a 2-D array (an (N, N) matrix) or a stack of them (..., N, N), "
                         f"got shape {arr.shape}")
    if arr.shape[-1] != arr.shape[-2]:
        if arr.ndim == 2:
            raise ValueError(f"{name}: expected a square (N, N) matrix, got shape {arr.shape}")
        raise ValueError(f"{name}: expected a stack of square (..., N, N) matrices, got shape {arr.shape}")
    if arr.shape[-1] < min_size:
        raise ValueError(f"{name}: expected a square (N, N) matrix with N >= {min_size}, got shape {arr.shape}")
    _check_finite(arr, name)
    return arr


def _max_abs(G: np.ndarray) -> np.ndarray:
    """max |G_ij| of each matrix, shape (...)."""
    return np.max(np.abs(G), axis=(-2, -1))


def _gram(value, name: str, *, min_size: int = 1) -> np.ndarray:
    """Finite symmetric (..., N, N) matrices (symmetrised copy); the first asymmetric one named."""
    arr = _square(value, name, min_size=min_size)
    if arr.size:
        scale = _max_abs(arr)
        asym = np.max(np.abs(arr - np.swapaxes(arr, -1, -2)), axis=(-2, -1))
        bad = asym > _SYM_RTOL * scale
        if np.any(bad):
            lead = _first(bad)
            a, s = float(asym[lead]), float(scale[lead])
            raise ValueError(f"{name}: expected a symmetric Gram matrix{_bad_matrix(lead)}, max |G − Gᵀ| = "
                             f"{a:.3g} (relative {a / s:.3g} > {_SYM_RTOL:g})")
    return 0.5 * (arr + np.swapaxes(arr, -1, -2))


def _nonnegative_diagonal(G: np.ndarray, name: str) -> np.ndarray:
    """The diagonals (..., N) of Grams, clearly negative entries refused, rounding clipped to 0."""
    diag = np.diagonal(G, axis1=-2, axis2=-1)
    if diag.size:
        low = diag.min(axis=-1) < -_NEG_RTOL * _max_abs(G)
        if np.any(low):
            lead = _first(low)
            i = int(np.argmin(diag[lead]))
            raise ValueError(f"{name}: expected a non-negative diagonal (a Gram matrix){_bad_matrix(lead)}, "
                             f"found G[{i}, {i}] = {float(diag[lead + (i,)]):.6g}")
    return np.clip(diag, 0.0, None)


def _bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def _result(x):
    """A Python float for a 0-d result (a single matrix), the float array otherwise."""
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def _labels(value, n: int, name: str = "labels", *, n_classes: int | None = None,
            min_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Class indices 0 … K−1 of N contexts with every class present; returns (labels, counts)."""
    if value is None:
        raise TypeError(f"{name}: expected an integer array of shape ({n},), got None")
    lab = as_int_array(value, name, ndim=1)
    if lab.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) (one class per context), got {lab.shape}")
    if lab.min() < 0:
        raise ValueError(f"{name}: expected class indices >= 0, got {int(lab.min())}")
    K = int(lab.max()) + 1 if n_classes is None else int(n_classes)
    if lab.max() >= K:
        raise ValueError(f"{name}: expected class indices < K = {K} (the number of rows of the "
                         f"logits), got {int(lab.max())}")
    counts = np.bincount(lab, minlength=K)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(f"{name}: expected every class 0 … {K - 1} to have at least one context; "
                         f"class {int(missing[0])} has none")
    if K < min_classes:
        raise ValueError(f"{name}: expected at least {min_classes} distinct classes, got {K}")
    return lab, counts


def _averaging(lab: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The N×K averaging matrix A, A_ik = [y_i = k]/n_k (class means M = H A)."""
    A = np.zeros((lab.shape[0], counts.shape[0]))
    A[np.arange(lab.shape[0]), lab] = 1.0 / counts[lab]
    return A


def _centre_columns(A: np.ndarray) -> np.ndarray:
    """A P_K: subtract from every column the mean column (columns of the result sum to 0)."""
    return A - A.mean(axis=1, keepdims=True)


def _double_centre(G: np.ndarray) -> np.ndarray:
    """P_N G P_N for (..., N, N) matrices."""
    G = G - G.mean(axis=-2, keepdims=True)
    return G - G.mean(axis=-1, keepdims=True)


def _negligible(x, scale, n: int):
    """True where ``x`` is zero up to the rounding of an n-term sum of size ``scale``."""
    return ~(np.asarray(x) > 10.0 * n * _EPS * np.asarray(scale))


def _frobenius(G: np.ndarray) -> np.ndarray:
    return np.linalg.norm(G, axis=(-2, -1))


def _trace(G: np.ndarray) -> np.ndarray:
    return np.trace(G, axis1=-2, axis2=-1)


def is_gram(gram) -> np.ndarray:
    """Which matrices of a stack the metrics accept as Grams: finite, symmetric to relative 1e-8,
    no clearly negative diagonal entry (below −1e-10 · max |G|).

    Callers that hold predictions which may have diverged (e.g. a fit's trajectories, padded
    with NaN where an integration stopped) evaluate the metrics on the accepted matrices only.

    Arguments:
        gram: (..., N, N) float array.

    Returns:
        bool array of shape (...) (a 0-d array for one matrix).

    Raises:
        ValueError: not a (stack of) square matrices.
    """
    arr = as_float_array(gram, "gram", finite=False)
    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"gram: expected a stack of square (..., N, N) matrices, got shape {arr.shape}")
    ok = np.all(np.isfinite(arr), axis=(-2, -1))
    safe = np.where(ok[..., None, None], arr, 0.0)
    scale = _max_abs(safe)
    asym = np.max(np.abs(safe - np.swapaxes(safe, -1, -2)), axis=(-2, -1))
    low = np.diagonal(safe, axis1=-2, axis2=-1).min(axis=-1) < -_NEG_RTOL * scale
    return ok & ~(asym > _SYM_RTOL * scale) & ~low


# --------------------------------------------------------------------------------------------
# cosines, ETF target and distance, alignment
# --------------------------------------------------------------------------------------------

def cosine(gram, centred=False) -> np.ndarray:
    """Cosine-similarity matrix of the vectors behind a Gram matrix (or a stack of them).

    .. math:: \\cos_{ij} = \\frac{G_{ij}}{\\sqrt{G_{ii} G_{jj}}},\\qquad
              G \\to C G C\\ \\text{first when centred}, \\quad C = I_N - \\tfrac1N 1 1^\\top.

    With ``gram = HᵀH`` this is the cosine between feature columns ``h_i`` and ``h_j``
    (``centred=True``: between ``h_i − h̄`` and ``h_j − h̄``, ``h̄`` the mean over the N
    contexts); with ``gram = WWᵀ`` between classifier rows (centred: rows minus their mean over
    classes). A vector of zero norm (``G_ii = 0``; when centred, a vector equal to the mean,
    ``(CGC)_ii`` zero to rounding: at most 10·N·eps·max |G|) has cosine 0 with every other
    vector and 1 with itself. Values are clipped to [−1, 1] and tiny negative diagonal entries
    (rounding) are treated as 0.

    Arguments:
        gram: symmetric (N, N) Gram matrix, or a stack (..., N, N).
        centred: bool, centre the vectors first (default False: raw cosines).

    Returns:
        (..., N, N) float array, symmetric, unit diagonal.

    Raises:
        ValueError: ``gram`` not square, not symmetric, non-finite, or with a diagonal entry
            that is clearly negative (not a Gram matrix); for a stack the message names the
            first bad matrix.
        TypeError: non-numeric ``gram``, ``centred`` not a bool.
    """
    G = _gram(gram, "gram")
    centred = _bool(centred, "centred")
    diag = _nonnegative_diagonal(G, "gram")
    N = G.shape[-1]
    if centred:
        scale = _max_abs(G)
        G = _double_centre(G)
        diag = np.clip(np.diagonal(G, axis1=-2, axis2=-1), 0.0, None)
        diag = np.where(_negligible(diag, scale[..., None], N), 0.0, diag)
    norms = np.sqrt(diag)
    nonzero = norms > 0
    inv = np.where(nonzero, 1.0 / np.where(nonzero, norms, 1.0), 0.0)
    cos = np.clip(G * inv[..., :, None] * inv[..., None, :], -1.0, 1.0)
    idx = np.arange(N)
    cos[..., idx, idx] = 1.0
    return cos


def etf_target(labels=None, n=None) -> np.ndarray:
    """Gram matrix of the simplex-ETF configuration (the neural-collapse end point).

    .. math:: E = Y^\\top P_K Y,\\qquad P_K = I_K - \\tfrac{1}{K} 1 1^\\top

    with ``Y`` the K×N one-hot matrix of ``labels`` (``Y_ki = [y_i = k]``), i.e.
    ``E_ij = [y_i = y_j] − 1/K``: contexts of one class coincide, class means form a simplex
    ETF of squared radius (K−1)/K. Without labels every context is its own class
    (``Y = I``) and ``E = P_n``. The scale is irrelevant for :func:`etf_distance`, which
    normalises; multiply by K/(K−1) for unit-norm vectors.

    Arguments:
        labels: optional int (N,), class of each context, values 0 … K−1 with every class
            present and K >= 2.
        n: number of rows when ``labels`` is None (n >= 2); if both are given, ``n`` must
            equal ``len(labels)``.

    Returns:
        (N, N) float array (N = len(labels) or n).

    Raises:
        TypeError: neither ``labels`` nor ``n`` given, or non-integer input.
        ValueError: fewer than 2 classes, a class with no context, ``n`` inconsistent with
            ``labels``.
    """
    if labels is None:
        if n is None:
            raise TypeError("n: expected the number of contexts when labels is None, got None")
        n = as_positive_int(n, "n", minimum=2)
        return np.eye(n) - 1.0 / n
    lab = as_int_array(labels, "labels", ndim=1)
    if n is not None:
        n = as_positive_int(n, "n", minimum=1)
        if n != lab.shape[0]:
            raise ValueError(f"n: expected n = len(labels) = {lab.shape[0]}, got {n}")
    lab, counts = _labels(lab, lab.shape[0])
    K = counts.shape[0]
    return (lab[:, None] == lab[None, :]).astype(np.float64) - 1.0 / K


def etf_distance(gram, labels=None):
    """Distance of a Gram matrix from the simplex-ETF Gram, after centring and normalising.

    .. math::
        d_{ETF} = \\lVert \\hat G - \\hat E \\rVert_F,\\qquad
        \\hat G = \\frac{C G C}{\\lVert C G C \\rVert_F},\\quad
        \\hat E = \\frac{C E C}{\\lVert C E C \\rVert_F},\\quad C = I_N - \\tfrac1N 1 1^\\top,

    with ``E = etf_target(labels, n=N)``. The centring is global (the mean of all N vectors is
    removed), so a common offset (e.g. a mean feature) does not count; the normalisation makes
    it scale-free, and a Gram is rotation invariant, so any rotated and rescaled ETF gives 0.
    Both matrices have unit norm, so the range is [0, 2].

    Use with ``gram_H`` (N×N) and ``labels`` = class of each context: the target is the fully
    collapsed ETF (NC1 and NC2 together); ``labels=None`` means every context is its own class
    (the one-hot NTP setting). Use with ``gram_W`` (K×K) and ``labels=None`` for the classifier.
    :func:`nc2` is the same distance applied to the class means only.

    Arguments:
        gram: symmetric (N, N) Gram matrix, N >= 2, or a stack (..., N, N).
        labels: optional int (N,), classes 0 … K−1 (all present, K >= 2).

    Returns:
        float in [0, 2] (an array of shape (...) for a stack); ``nan`` where the centred Gram
        vanishes (zero Gram, or all vectors equal): ``‖CGC‖_F <= 10·N·eps·‖G‖_F``.

    Raises:
        ValueError: bad shapes, asymmetric or non-finite ``gram``, invalid ``labels``.
    """
    G = _gram(gram, "gram", min_size=2)
    N = G.shape[-1]
    if labels is None:
        E = etf_target(n=N)
    else:
        lab, _ = _labels(labels, N)
        E = etf_target(lab)
    E_hat = _double_centre(E)
    E_hat /= np.linalg.norm(E_hat)
    CGC = _double_centre(G)
    norm = _frobenius(CGC)
    ok = ~_negligible(norm, _frobenius(G), N)
    safe = np.where(ok, norm, 1.0)
    d = np.minimum(_frobenius(CGC / safe[..., None, None] - E_hat), 2.0)
    return _result(np.where(ok, d, np.nan))


def kernel_alignment(a, b, centred=True):
    """(Centred) kernel alignment of two N×N kernels (Cristianini et al. 2002; Cortes et al. 2012).

    .. math::
        \\mathrm{CKA}(A, B) = \\frac{\\langle C A C, C B C\\rangle_F}
                                   {\\lVert C A C\\rVert_F \\lVert C B C\\rVert_F},
        \\qquad C = I_N - \\tfrac1N 1 1^\\top

    (``C`` replaced by ``I`` when ``centred=False``). Scale invariant in each argument; with
    centring also invariant to adding a constant matrix ``c 1 1ᵀ`` to either kernel. In [−1, 1]
    (in [0, 1] for PSD kernels).

    Arguments:
        a: (N, N) kernel, e.g. a feature Gram ``HᵀH``, or a stack (..., N, N).
        b: (N, N) kernel, e.g. an attribute kernel ``AᵀA``, or a stack; the leading axes of
            ``a`` and ``b`` broadcast.
        centred: bool, apply the double centring ``C · C`` first (default True).

    Returns:
        float (array of the broadcast leading shape for stacks); ``nan`` where either
        (centred) kernel is zero to rounding.

    Raises:
        ValueError: non-square, non-finite or differently sized kernels, leading axes that do
            not broadcast.
        TypeError: ``centred`` not a bool.
    """
    A = _square(a, "a")
    B = _square(b, "b")
    if B.shape[-2:] != A.shape[-2:]:
        raise ValueError(f"b: expected the shape of a, {A.shape[-2:]}, got {B.shape[-2:]}")
    try:
        np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except ValueError:
        raise ValueError(f"b: expected leading (stack) axes that broadcast with a's {A.shape[:-2]}, "
                         f"got {B.shape[:-2]}") from None
    centred = _bool(centred, "centred")
    N = A.shape[-1]
    scale_a, scale_b = _frobenius(A), _frobenius(B)
    if centred:
        A, B = _double_centre(A), _double_centre(B)
    na, nb = _frobenius(A), _frobenius(B)
    bad = _negligible(na, scale_a, N) | _negligible(nb, scale_b, N)
    denom = np.where(bad, 1.0, na * nb)
    value = np.clip(np.sum(A * B, axis=(-2, -1)) / denom, -1.0, 1.0)
    return _result(np.where(bad, np.nan, value))


# --------------------------------------------------------------------------------------------
# semantic gap
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class GapPairs:
    """The pairs of contexts the semantic gap compares: (N, N) boolean masks of the upper
    triangle i < j (the single implementation used by :func:`semantic_gap`, the bridge's
    observables and the sweep summaries).

    Attributes:
        share: pairs sharing at least one attribute value (``a_if = a_jf`` for some f).
        share_none: pairs sharing none (the baseline).
        per_attribute: tuple of F masks, pairs with equal values of attribute f.
        labels_excluded: whether pairs with equal labels were removed from every mask.
    """

    share: np.ndarray
    share_none: np.ndarray
    per_attribute: tuple
    labels_excluded: bool

    @property
    def defined(self) -> bool:
        """Both the sharing pairs and the baseline are non-empty (the gap is defined)."""
        return bool(self.share.any() and self.share_none.any())

    def check(self, per_attribute: bool = False) -> None:
        """Raise if a mean the gap needs is over an empty set of pairs.

        Raises:
            ValueError: no (differently labelled) pair shares an attribute value, every pair
                shares one (no baseline), or — with ``per_attribute`` — no pair has equal
                values of some attribute f.
        """
        excl = " with different labels" if self.labels_excluded else ""
        if per_attribute:
            for f, m in enumerate(self.per_attribute):
                if not m.any():
                    raise ValueError(f"attributes: no pair of contexts{excl} has equal values of "
                                     f"attribute {f}, so its mean cosine is undefined")
        if not self.share.any():
            raise ValueError(f"attributes: no pair of contexts{excl} shares an attribute value, so the "
                             f"mean cosine of sharing pairs is undefined")
        if not self.share_none.any():
            raise ValueError(f"attributes: every pair of contexts{excl} shares at least one attribute "
                             f"value, so the baseline (pairs sharing none) is undefined")


def gap_pairs(attributes, labels=None, *, n: int | None = None) -> GapPairs:
    """The pair masks of the semantic gap.

    Distinct pairs i < j; ``share`` = pairs with ``a_if = a_jf`` for some attribute f,
    ``share_none`` = pairs with no equal attribute, ``per_attribute[f]`` = pairs with
    ``a_if = a_jf``. When ``labels`` are given, pairs with equal labels are removed from every
    mask: they are pulled together by NC1 whatever their attributes. Pass the labels whenever
    the problem has them: with one context per class (K = N) no pair has equal labels and the
    exclusion changes nothing; with several contexts per class (K < N) it matters.

    Arguments:
        attributes: int (N, F) latent attributes, one row per context (a 1-D (N,) array is
            read as F = 1). Only equality of values is used.
        labels: optional int (N,) labels; only equality is used (any integer values).
        n: expected number of contexts (the size of the Gram), checked when given.

    Returns:
        :class:`GapPairs`.

    Raises:
        ValueError: ``attributes`` not (N, F) with F >= 1 (N = ``n`` when given), ``labels``
            not of shape (N,), non-integral values.
        TypeError: non-numeric input.
    """
    attr = as_int_array(attributes, "attributes")
    if attr.ndim == 1:
        attr = attr[:, None]
    N = attr.shape[0] if n is None else int(n)
    if attr.ndim != 2 or attr.shape[0] != N or attr.shape[1] < 1:
        raise ValueError(f"attributes: expected shape (N={N}, F) with F >= 1, got {attr.shape}")
    valid = np.triu(np.ones((N, N), dtype=bool), k=1)
    if labels is not None:
        lab = as_int_array(labels, "labels", ndim=1)
        if lab.shape[0] != N:
            raise ValueError(f"labels: expected shape ({N},) (one label per context), got {lab.shape}")
        valid &= lab[:, None] != lab[None, :]
    per = tuple((attr[:, f, None] == attr[None, :, f]) & valid for f in range(attr.shape[1]))
    share = np.logical_or.reduce(per)
    return GapPairs(share, valid & ~share, per, labels is not None)


def gap_convention(centred: bool = DEFAULT_GAP_CENTRED) -> str:
    """The one-line description of a semantic-gap convention, as reports print it."""
    return ("centred cosines (features minus their mean over contexts)" if centred else
            "raw (uncentred) cosines")


def semantic_gap(gram, attributes, labels=None, *, centred=DEFAULT_GAP_CENTRED, per_attribute=False):
    """Semantic gap: how much more similar contexts sharing a latent attribute are.

    With the cosines ``c_ij`` of :func:`cosine` — by default of the centred features
    ``h_i − h̄`` (``h̄ = (1/N) Σ_j h_j``), i.e. of ``C G C`` with ``C = I − 11ᵀ/N`` — over the
    distinct pairs of :func:`gap_pairs`,

    .. math::
        \\mathrm{gap} = \\operatorname{mean}_{(i,j) \\in S} c_{ij}
                      - \\operatorname{mean}_{(i,j) \\in S_0} c_{ij},

    ``S`` = pairs sharing at least one attribute value (``a_if = a_jf`` for some f), ``S_0`` =
    pairs sharing none. Per attribute,
    ``gap_f = mean_{(i,j): a_if = a_jf} c_ij − mean_{(i,j) ∈ S_0} c_ij`` (the baseline is
    always the pairs sharing nothing). If ``labels`` are given, pairs with equal labels are
    excluded from every set (they collapse together through NC1 whatever their semantics;
    with one context per class this changes nothing, so pass them whenever there are labels).
    At an exact simplex ETF all off-diagonal cosines are equal, centred or not (the ETF is
    centred), and every gap is 0.

    Why centred by default: features with a large common mean (ReLU features of real
    networks) have raw cosines all close to 1, which compresses and shifts the gap (a 3×3
    factorial code under a common mean five times its size: 0.68 centred, 0.05 raw, in
    tests/test_metrics_layer.py); centring measures the geometry of the spread, as the
    neural-collapse literature does. ``centred=False`` gives the raw-cosine gap.

    Arguments:
        gram: symmetric (N, N) feature Gram ``HᵀH``, or a stack (..., N, N).
        attributes: int (N, F) latent attributes, one row per context (a 1-D (N,) array is
            read as F = 1). Only equality of values is used.
        labels: optional int (N,) labels; only equality is used (any integer values).
        centred: bool, cosines of the centred features (default True).
        per_attribute: bool; if True return a dict instead of a float.

    Returns:
        float ``gap`` (array (...) for a stack), or with ``per_attribute=True`` a dict
        ``{"all": gap, 0: gap_0, 1: gap_1, …, F−1: gap_{F−1}}``.

    Raises:
        ValueError: bad shapes; or a pair set is empty — no (differently labelled) pair shares
            an attribute value, none shares no value, or (per attribute) no pair has equal
            values of attribute f — so its mean cosine is undefined.
        TypeError: non-integer attributes/labels, ``centred`` or ``per_attribute`` not a bool.
    """
    G = _gram(gram, "gram")
    pairs = gap_pairs(attributes, labels, n=G.shape[-1])
    per_attribute = _bool(per_attribute, "per_attribute")
    centred = _bool(centred, "centred")
    pairs.check(per_attribute)
    cos = cosine(G, centred=centred)
    base = cos[..., pairs.share_none].mean(axis=-1)
    gap = _result(cos[..., pairs.share].mean(axis=-1) - base)
    if not per_attribute:
        return gap
    out: dict = {"all": gap}
    for f, mask in enumerate(pairs.per_attribute):
        out[f] = _result(cos[..., mask].mean(axis=-1) - base)
    return out


# --------------------------------------------------------------------------------------------
# neural collapse
# --------------------------------------------------------------------------------------------

def class_means_gram(gram_H, labels) -> np.ndarray:
    """Gram matrix of the (uncentred) class means.

    .. math:: M^\\top M = A^\\top G_H A,\\qquad A_{ik} = [y_i = k]/n_k,

    where ``M = H A`` is the d×K matrix whose column k is the class mean
    ``μ_k = (1/n_k) Σ_{i: y_i = k} h_i``.

    Arguments:
        gram_H: symmetric (N, N) feature Gram ``HᵀH``, or a stack (..., N, N).
        labels: int (N,), classes 0 … K−1, every class present.

    Returns:
        (..., K, K) float array, ``[⟨μ_k, μ_l⟩]``.

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    G = _gram(gram_H, "gram_H")
    lab, counts = _labels(labels, G.shape[-1], min_classes=1)
    A = _averaging(lab, counts)
    M = A.T @ G @ A
    return 0.5 * (M + np.swapaxes(M, -1, -2))


def nc1(gram_H, labels):
    """NC1 within-class variability, Tr(Σ_W Σ_B⁺)/K (Papyan, Han & Donoho 2020).

    .. math::
        \\Sigma_W = \\frac1N \\sum_i (h_i - μ_{y_i})(h_i - μ_{y_i})^\\top,\\quad
        \\Sigma_B = \\frac1K \\sum_k (μ_k - μ_G)(μ_k - μ_G)^\\top,\\quad
        μ_G = \\frac1K \\sum_k μ_k

    (μ_G is the unweighted mean of class means, the global mean when classes are balanced).

    Computed from the Gram without features. With the centred averaging matrix
    ``Ã = A P_K`` (module docstring), ``B = H Ã`` (so ``Σ_B = B Bᵀ/K``) and the within-class
    residuals ``H R``, ``R = I − A Y`` (an orthogonal projector), one has
    ``Σ_W = H R Hᵀ/N``, ``Σ_B⁺ = K (B⁺)ᵀ B⁺`` and ``B⁺ = (BᵀB)⁺ Bᵀ``, hence

    .. math::
        \\frac1K \\operatorname{Tr}(\\Sigma_W \\Sigma_B^+)
        = \\frac1N \\lVert (Ã^\\top G Ã)^+ \\, Ã^\\top G R \\rVert_F^2,

    a K×K pseudo-inverse only. This equals the value computed from any features with
    ``HᵀH = G`` (it is invariant under isometries of feature space).

    Pseudo-inverse cutoff: eigenvalues of ``ÃᵀGÃ`` (the nonzero ones are K times those of
    Σ_B) below ``PINV_RTOL · λ_max`` (``PINV_RTOL = 1e-10``) are set to zero — the same as
    ``numpy.linalg.pinv(Σ_B, rcond=1e-10, hermitian=True)`` on features. ``Ã`` always has the
    null vector 1, so Σ_B has rank at most K − 1.

    Population value (docs/theory.md): means on an ETF of radius r, isotropic within-class
    noise of variance s² per coordinate: ``s²(K−1)²/(K r²)``.

    Arguments:
        gram_H: symmetric (N, N) feature Gram ``HᵀH``, or a stack (..., N, N).
        labels: int (N,), classes 0 … K−1, every class present, K >= 2.

    Returns:
        float >= 0 (array (...) for a stack); ``nan`` where all class means coincide
        (Σ_B = 0 to rounding, e.g. a zero Gram), where the metric is undefined.

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    G = _gram(gram_H, "gram_H")
    N = G.shape[-1]
    lab, counts = _labels(labels, N)
    A = _averaging(lab, counts)
    At = _centre_columns(A)
    GAt = G @ At                                  # (..., N, K)
    SB = At.T @ GAt                               # (..., K, K), = Bᵀ B
    SB = 0.5 * (SB + np.swapaxes(SB, -1, -2))
    lam, V = np.linalg.eigh(SB)
    lam_max = lam[..., -1]
    undefined = _negligible(lam_max, _max_abs(G), N)
    keep = lam > PINV_RTOL * lam_max[..., None]
    inv = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
    SB_pinv = (V * inv[..., None, :]) @ np.swapaxes(V, -1, -2)
    T = np.swapaxes(GAt, -1, -2) - (At.T @ (G @ A))[..., lab]   # Ãᵀ G R = ÃᵀG − (ÃᵀGA) Y
    X = SB_pinv @ T
    return _result(np.where(undefined, np.nan, np.sum(X * X, axis=(-2, -1)) / N))


def nc2(gram, labels=None):
    """NC2: distance of the class means (or of the rows) from a simplex ETF.

    The same quantity as :func:`etf_distance` — ``‖Ĝ − Ê‖_F`` with ``Ĝ = CGC/‖CGC‖_F`` —
    applied to:

    * ``labels`` given (``gram`` = ``gram_H``): the K×K Gram of the class means,
      ``Aᵀ G A`` (:func:`class_means_gram`), whose centring by ``P_K`` subtracts the unweighted
      mean of class means μ_G (as in :func:`nc1`); the target is ``P_K``. Within-class
      scatter does not enter.
    * ``labels=None``: the rows themselves (e.g. ``gram_W``, K×K, target ``P_K``).

    This replaces Papyan et al.'s pair of statistics (spread of norms and of cosines) with one
    scale-free number in [0, 2], 0 exactly at a (rotated, rescaled) simplex ETF.

    Arguments:
        gram: symmetric Gram, (N, N) ``gram_H`` with labels, or (K, K) e.g. ``gram_W``; or a
            stack (..., N, N).
        labels: optional int (N,), classes 0 … K−1 (all present, K >= 2).

    Returns:
        float in [0, 2] (array (...) for a stack), ``nan`` where the centred Gram vanishes.

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    if labels is None:
        return etf_distance(gram)
    G = _gram(gram, "gram")
    _labels(labels, G.shape[-1])                  # checks K >= 2 with a message about labels
    return etf_distance(class_means_gram(G, labels))


def _logits(value, K: int, N: int, name: str = "logits", *, fixed_k: bool = True) -> np.ndarray:
    """Finite (..., K, N) logits (K free when ``fixed_k`` is False)."""
    Z = as_float_array(value, name, finite=False)
    if fixed_k:
        if Z.ndim < 2 or Z.shape[-2:] != (K, N):
            want = f"({K}, {N})" if Z.ndim <= 2 else f"(..., {K}, {N})"
            raise ValueError(f"{name}: expected shape {want}, got {Z.shape}")
    elif Z.ndim < 2 or Z.shape[-1] != N:
        raise ValueError(f"{name}: expected shape (K, N={N}) (one column per context), or a stack "
                         f"(..., K, N), got {Z.shape}")
    _check_finite(Z, name)
    return Z


def _broadcast(name: str, *arrays_and_core):
    """Check that the leading axes of several stacks broadcast; return the common leading shape."""
    leads = [a.shape[:a.ndim - core] for a, core in arrays_and_core]
    try:
        return np.broadcast_shapes(*leads)
    except ValueError:
        raise ValueError(f"{name}: leading (stack) axes {leads} do not broadcast") from None


def nc3(gram_W, gram_H, logits, labels):
    """NC3 self-duality: distance between the centred classifier and the centred class means.

    .. math::
        \\mathrm{NC3} = \\Bigl\\lVert \\frac{\\hat W}{\\lVert \\hat W\\rVert_F}
                      - \\frac{\\tilde M^\\top}{\\lVert \\tilde M\\rVert_F} \\Bigr\\rVert_F^2
                    = 2 - 2\\,\\frac{\\langle \\hat W, \\tilde M^\\top\\rangle_F}
                                    {\\lVert \\hat W\\rVert_F \\lVert \\tilde M\\rVert_F},

    ``Ŵ = P_K W`` (rows centred over classes), ``M̃ = H Ã`` the d×K globally centred class
    means (``Ã = A P_K``, module docstring). From Grams and logits:

    * ``‖Ŵ‖_F² = Tr(P_K G_W)``, ``‖M̃‖_F² = Tr(Ãᵀ G_H Ã)``;
    * ``⟨Ŵ, M̃ᵀ⟩_F = Tr(Ŵ M̃) = Tr(P_K W H Ã)``, and ``W H = Z − b 1ᵀ``. The bias term
      ``Tr(P_K b 1ᵀ Ã) = Tr(P_K b (1ᵀ Ã)) = 0`` because the columns of ``Ã`` sum to zero
      (``1ᵀ Ã = 1ᵀ A P_K = 1ᵀ_K P_K = 0``). With ``Ã = A P_K`` and ``P_K² = P_K``,
      ``Tr(P_K Z Ã) = Tr(Z A P_K P_K) = Tr(Z Ã) = Tr(P_K Z A)``. So
      ``⟨Ŵ, M̃ᵀ⟩_F = Tr(Z Ã) = Σ_{k,i} Z_ki Ã_ik`` for logits with or without a bias, and the
      bias need not be known.

    Range [0, 4]: 0 when ``Ŵ ∝ M̃ᵀ`` with a positive factor, 4 when anti-aligned.

    Arguments:
        gram_W: symmetric (K, K) classifier Gram ``WWᵀ``, or a stack (..., K, K).
        gram_H: symmetric (N, N) feature Gram ``HᵀH``, or a stack (..., N, N).
        logits: (K, N) logits ``Z = WH + b1ᵀ`` of the same W, H (any bias b), or a stack
            (..., K, N); the leading axes of the three broadcast.
        labels: int (N,), classes 0 … K−1 (K = rows of logits), every class present.

    Returns:
        float in [0, 4] (array (...) for stacks); ``nan`` where ``Ŵ`` or ``M̃`` vanishes.

    Raises:
        ValueError: bad or inconsistent shapes, invalid labels, or logits inconsistent with the
            Grams (the implied cosine exceeds 1 by more than 1e-6, i.e. Cauchy–Schwarz fails;
            the first such matrix of a stack is named).
        TypeError: non-numeric input.
    """
    GW = _gram(gram_W, "gram_W")
    GH = _gram(gram_H, "gram_H")
    K, N = GW.shape[-1], GH.shape[-1]
    Z = _logits(logits, K, N)
    _broadcast("logits", (GW, 2), (GH, 2), (Z, 2))
    lab, counts = _labels(labels, N, n_classes=K)
    At = _centre_columns(_averaging(lab, counts))
    w2 = _trace(GW) - GW.sum(axis=(-2, -1)) / K                # ‖P_K W‖²
    m2 = _trace(At.T @ GH @ At)                                 # ‖M̃‖²
    undefined = _negligible(w2, _max_abs(GW), K) | _negligible(m2, _max_abs(GH), N)
    inner = np.sum(Z * At.T, axis=(-2, -1))                     # Tr(Z Ã)
    c = inner / np.sqrt(np.where(undefined, 1.0, w2 * m2))
    c, undefined = np.broadcast_arrays(c, undefined)
    wrong = (np.abs(c) > 1.0 + 1e-6) & ~undefined
    if np.any(wrong):
        lead = _first(wrong)
        raise ValueError(f"logits: inconsistent with gram_W and gram_H{_bad_matrix(lead)}: implied cosine "
                         f"⟨Ŵ, M̃ᵀ⟩/(‖Ŵ‖‖M̃‖) = {float(c[lead]):.6g} lies outside [−1, 1] (logits must be "
                         f"W H + b 1ᵀ for the same W, H)")
    return _result(np.where(undefined, np.nan, np.clip(2.0 - 2.0 * c, 0.0, 4.0)))


def nc4(gram_H, logits, labels):
    """NC4: disagreement between the classifier and the nearest-class-mean rule.

    .. math::
        \\mathrm{NC4} = \\frac1N \\#\\{i : \\arg\\max_k Z_{ki} \\ne
                                       \\arg\\min_k \\lVert h_i - μ_k \\rVert\\},\\qquad
        \\lVert h_i - μ_k\\rVert^2 = G_{ii} - 2 (G A)_{ik} + (A^\\top G A)_{kk}

    with ``A`` the averaging matrix (class means ``μ_k`` of the training contexts). Ties are
    broken towards the smaller class index in both rules.

    Arguments:
        gram_H: symmetric (N, N) feature Gram ``HᵀH``, or a stack (..., N, N).
        logits: (K, N) logits, one column per context, or a stack (..., K, N) (leading axes
            broadcast with those of ``gram_H``).
        labels: int (N,), classes 0 … K−1 (K = rows of logits), every class present.

    Returns:
        float in [0, 1] (array (...) for stacks).

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    G = _gram(gram_H, "gram_H")
    N = G.shape[-1]
    Z = _logits(logits, None, N, fixed_k=False)
    _broadcast("logits", (G, 2), (Z, 2))
    lab, counts = _labels(labels, N, n_classes=Z.shape[-2], min_classes=1)
    A = _averaging(lab, counts)
    GA = G @ A
    dist2 = (np.diagonal(G, axis1=-2, axis2=-1)[..., :, None] - 2.0 * GA
             + np.diagonal(A.T @ GA, axis1=-2, axis2=-1)[..., None, :])
    return _result(np.mean(np.argmax(Z, axis=-2) != np.argmin(dist2, axis=-1), axis=-1))


def cdnv(gram_H, labels):
    """Class-distance normalised variance (Galanti, György & Hutter 2022).

    .. math::
        \\mathrm{CDNV} = \\frac{1}{K(K-1)} \\sum_{k \\ne l}
            \\frac{V_k + V_l}{2 \\lVert μ_k - μ_l\\rVert^2},\\qquad
        V_k = \\frac{1}{n_k} \\sum_{i: y_i = k} \\lVert h_i - μ_k\\rVert^2
            = \\frac{1}{n_k}\\sum_{i: y_i=k} G_{ii} - (A^\\top G A)_{kk},

    ``‖μ_k − μ_l‖² = M_kk + M_ll − 2 M_kl`` with ``M = AᵀGA`` (:func:`class_means_gram`).
    The mean over ordered pairs equals the mean over unordered pairs.

    Arguments:
        gram_H: symmetric (N, N) feature Gram ``HᵀH``, or a stack (..., N, N).
        labels: int (N,), classes 0 … K−1, every class present, K >= 2.

    Returns:
        float >= 0 (array (...) for a stack); ``inf`` if two class means coincide while some
        variance is positive, ``nan`` if they coincide with zero variance.

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    G = _gram(gram_H, "gram_H")
    lab, counts = _labels(labels, G.shape[-1])
    A = _averaging(lab, counts)
    M = A.T @ G @ A
    M = 0.5 * (M + np.swapaxes(M, -1, -2))
    mean_sq = np.diagonal(G, axis1=-2, axis2=-1) @ (A > 0).astype(np.float64) / counts       # (1/n_k) Σ_{y_i = k} G_ii
    dm = np.diagonal(M, axis1=-2, axis2=-1)
    V = np.clip(mean_sq - dm, 0.0, None)
    D = np.clip(dm[..., :, None] + dm[..., None, :] - 2.0 * M, 0.0, None)
    K = counts.shape[0]
    off = ~np.eye(K, dtype=bool)
    num = (V[..., :, None] + V[..., None, :])[..., off]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num / (2.0 * D[..., off])
    return _result(np.mean(ratio, axis=-1))


# --------------------------------------------------------------------------------------------
# spectra and effective dimensions
# --------------------------------------------------------------------------------------------

def effective_rank(gram, centred=False):
    """*Entropy* effective rank (Roy & Vetterli 2007): exponential of the spectral entropy.

    .. math::
        \\operatorname{erank}(G) = \\exp\\Bigl(-\\sum_j p_j \\log p_j\\Bigr),\\qquad
        p_j = λ_j / \\sum_l λ_l,

    over the eigenvalues ``λ_j`` of the Gram (of ``C G C`` when ``centred``), negative ones
    (rounding) clipped to 0, with ``0 log 0 = 0``. Between 1 and N for a nonzero Gram: ``P_n``
    gives n − 1, a rank-1 Gram gives 1. Not to be confused with :func:`participation_ratio`,
    the *second-moment* effective dimension ``(Σλ)²/Σλ²``: both equal the rank for a flat
    spectrum, but the entropy rank counts small eigenvalues more (erank >= participation ratio
    for any spectrum).

    Arguments:
        gram: symmetric (N, N) Gram matrix, or a stack (..., N, N).
        centred: bool, use the centred Gram ``C G C`` (default False: the Gram itself, as
            Roy & Vetterli define it and as earlier versions computed it).

    Returns:
        float (array (...) for a stack); 0 for the zero matrix.

    Raises:
        ValueError: non-square, asymmetric or non-finite ``gram``.
        TypeError: ``centred`` not a bool.
    """
    G = _gram(gram, "gram")
    if _bool(centred, "centred"):
        G = _double_centre(G)
    lam = np.clip(np.linalg.eigvalsh(G), 0.0, None)
    total = lam.sum(axis=-1, keepdims=True)
    positive = total > 0
    p = lam / np.where(positive, total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return _result(np.where(positive[..., 0], np.exp(-terms.sum(axis=-1)), 0.0))


def participation_ratio(gram, centred=True):
    """*Second-moment* effective dimension (participation ratio) of a Gram's spectrum.

    .. math::
        \\mathrm{PR}(G) = \\frac{(\\operatorname{tr} C)^2}{\\operatorname{tr}(C^2)}
                        = \\frac{(\\sum_j λ_j)^2}{\\sum_j λ_j^2},
        \\qquad C = P_N G P_N\\ \\text{(centred, default)}\\ \\text{or}\\ C = G,

    ``λ_j`` the eigenvalues of ``C``. For a PSD Gram, ``1 <= PR <= rank(C)``: a rank-1 Gram
    gives 1, ``I_n`` gives n uncentred and n − 1 centred, ``P_n`` (the simplex ETF of n
    one-context classes) gives n − 1. It is the dimension the spread of the features mostly
    occupies, robust to many small eigenvalues; a collapse of rank (features going low-rank
    instead of reaching the ETF) shows as PR → 1–2. Not to be confused with
    :func:`effective_rank`, the *entropy* effective rank ``exp(−Σ p log p)``, which is larger
    for any spectrum that is not flat (equal for a flat one).

    Arguments:
        gram: symmetric (N, N) Gram matrix, or a stack (..., N, N).
        centred: bool, use the centred Gram ``C = P G P`` (default True: the features minus
            their mean over contexts, so a common mean does not count as a dimension).

    Returns:
        float (array (...) for a stack); 0 where ``C`` vanishes to rounding
        (``‖C‖_F <= 10·N·eps·‖G‖_F``: zero Gram, or, centred, all vectors equal).

    Raises:
        ValueError: non-square, asymmetric or non-finite ``gram``.
        TypeError: ``centred`` not a bool.
    """
    G = _gram(gram, "gram")
    C = _double_centre(G) if _bool(centred, "centred") else G
    frob = _frobenius(C)                        # tr(C²) = ‖C‖_F² for symmetric C
    zero = _negligible(frob, _frobenius(G), G.shape[-1])
    value = _trace(C) ** 2 / np.where(zero, 1.0, frob * frob)
    return _result(np.where(zero, 0.0, value))


def eigenbasis(gram) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of one reference Gram, to be used as a fixed basis.

    ``G = V diag(λ) Vᵀ`` with eigenvalues in descending order. Each eigenvector's sign is fixed
    so that its entry of largest magnitude is positive (first such entry on ties), making the
    basis reproducible. Within a degenerate eigenspace the basis is arbitrary; pass the
    eigenspace projectors to :func:`spectrum_in_basis` if that matters.

    Arguments:
        gram: one symmetric (N, N) Gram matrix (a reference, not a stack).

    Returns:
        (eigenvalues (N,) descending, eigenvectors (N, N) with orthonormal columns,
        column j belonging to eigenvalue j).

    Raises:
        ValueError: not a single square matrix, asymmetric or non-finite ``gram``.
    """
    G = _gram(gram, "gram")
    if G.ndim != 2:
        raise ValueError(f"gram: expected one (N, N) reference Gram, got a stack of shape {G.shape}")
    lam, V = np.linalg.eigh(G)
    lam, V = lam[::-1].copy(), V[:, ::-1].copy()
    idx = np.argmax(np.abs(V), axis=0)
    signs = np.sign(V[idx, np.arange(V.shape[1])])
    signs[signs == 0] = 1.0
    return lam, V * signs


def spectrum_in_basis(gram, basis) -> np.ndarray:
    """Gram spectrum read in a fixed basis, so that modes keep their identity over time.

    Two forms of ``basis``:

    * a 2-D (N, m) matrix ``B`` with orthonormal columns (``BᵀB = I_m`` to 1e-8, e.g. from
      :func:`eigenbasis` of a reference Gram): returns the Rayleigh quotients
      ``diag(Bᵀ G B)``, i.e. ``b_jᵀ G b_j`` for each column — the eigenvalues of G whenever
      the columns are its eigenvectors, listed in the basis's order and not re-sorted;
    * a list (or (P, N, N) stack) of orthogonal projectors ``P_p`` (symmetric, idempotent to
      1e-8, nonzero), e.g. the eigenspaces of an association scheme: returns
      ``Tr(P_p G)/Tr(P_p)``, the mean eigenvalue of G on each subspace (the eigenvalue itself
      when G acts on it as a multiple of the identity).

    Arguments:
        gram: symmetric (N, N) Gram matrix, or a stack (..., N, N) (e.g. every save of a
            trajectory); the basis is shared.
        basis: (N, m) orthonormal columns, or a sequence / (P, N, N) array of projectors.

    Returns:
        float array, shape (..., m) or (..., P).

    Raises:
        ValueError: shapes inconsistent with ``gram``; columns not orthonormal; a matrix that
            is not a symmetric idempotent nonzero projector.
    """
    G = _gram(gram, "gram")
    N = G.shape[-1]
    if isinstance(basis, (list, tuple)) and len(basis) == 0:
        raise ValueError("basis: expected an (N, m) matrix or a non-empty list of (N, N) projectors, got an empty list")
    B = as_float_array(basis, "basis", ndim=(2, 3))
    if B.ndim == 2:
        if B.shape[0] != N or B.shape[1] < 1:
            raise ValueError(f"basis: expected an (N={N}, m) matrix with m >= 1, got shape {B.shape}")
        err = float(np.max(np.abs(B.T @ B - np.eye(B.shape[1]))))
        if err > _BASIS_TOL:
            raise ValueError(f"basis: expected orthonormal columns (BᵀB = I to {_BASIS_TOL:g}), "
                             f"max |BᵀB − I| = {err:.3g}")
        return np.einsum("ij,...ik,kj->...j", B, G, B)
    if B.shape[1:] != (N, N) or B.shape[0] < 1:
        raise ValueError(f"basis: expected projectors of shape (N, N) = ({N}, {N}), got stack of shape {B.shape}")
    asym = np.max(np.abs(B - np.swapaxes(B, -1, -2)), axis=(-2, -1))
    idem = np.max(np.abs(B @ B - B), axis=(-2, -1))
    bad = (asym > _BASIS_TOL) | (idem > _BASIS_TOL)
    if np.any(bad):
        p = int(np.flatnonzero(bad)[0])
        raise ValueError(f"basis: projector {p} is not an orthogonal projector "
                         f"(max |P − Pᵀ| = {asym[p]:.3g}, max |P² − P| = {idem[p]:.3g}, tolerance {_BASIS_TOL:g})")
    tr = _trace(B)
    if np.any(tr < 0.5):
        p = int(np.flatnonzero(tr < 0.5)[0])
        raise ValueError(f"basis: projector {p} is zero (trace {tr[p]:.3g})")
    return np.einsum("pij,...ij->...p", B, G) / tr


# --------------------------------------------------------------------------------------------
# transient summary
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TransientSummary:
    """Summary of a rise-and-collapse curve (e.g. the semantic gap over time).

    Attributes:
        peak: maximum of the curve.
        t_peak: save time of the maximum (first one on ties).
        t_collapse: time the curve falls below the threshold after the peak (see
            :func:`transient_summary`), ``nan`` if it never does.
        collapsed: whether it does.
        centred: for a semantic-gap curve, its convention — True for centred cosines, False
            for raw ones (:func:`semantic_gap`); None for any other curve.
    """

    peak: float
    t_peak: float
    t_collapse: float
    collapsed: bool
    centred: bool | None = None
    exact: tuple = ()

    def as_dict(self) -> dict:
        """The fields as a plain dict of Python floats and bools (``centred`` only when set,
        ``exact`` only when non-empty)."""
        out = asdict(self)
        if out["centred"] is None:
            del out["centred"]
        if not out["exact"]:
            del out["exact"]
        else:
            out["exact"] = list(out["exact"])
        return out


def transient_summary(t, gap, threshold=0.02, *, centred=None) -> TransientSummary:
    """Peak, time of peak, and collapse time of a transient curve.

    ``peak = max_j gap_j`` at ``t_peak = t_{j*}`` (first maximum). The collapse index ``c`` is
    the first save at or after ``j*`` with ``gap_c < threshold``. If ``gap_{c−1} >= threshold``
    (always the case when ``peak >= threshold``) the crossing is interpolated linearly in
    log t between the bracketing saves,

    .. math::
        \\log t_{collapse} = \\log t_{c-1} + φ(\\log t_c - \\log t_{c-1}),\\qquad
        φ = \\frac{gap_{c-1} - θ}{gap_{c-1} - gap_c},

    when ``t_{c−1} > 0``; otherwise (non-positive times, or ``c = j*`` because the peak itself
    is below the threshold — no transient above it) ``t_collapse = t_c``. If the curve never
    falls below the threshold after the peak: ``t_collapse = nan``, ``collapsed = False``.

    Arguments:
        t: (T,) save times, finite and strictly increasing, T >= 1.
        gap: (T,) finite values of the curve at those times.
        threshold: θ > 0 (default 0.02): a curve at or below 0 never counts as collapsed.
        centred: the convention of a semantic-gap curve (True: centred cosines, False: raw),
            recorded in the summary; None (default) for other curves.

    Returns:
        :class:`TransientSummary`.

    Raises:
        ValueError: empty, non-finite or mismatched arrays; ``t`` not strictly increasing.
        TypeError: non-numeric input, ``centred`` neither None nor a bool.
    """
    t = as_float_array(t, "t", ndim=1)
    g = as_float_array(gap, "gap", ndim=1)
    theta = as_positive(threshold, "threshold")
    if centred is not None:
        centred = _bool(centred, "centred")
    if t.shape[0] < 1:
        raise ValueError("t: expected at least one save time, got an empty array")
    if g.shape != t.shape:
        raise ValueError(f"gap: expected the shape of t, {t.shape}, got {g.shape}")
    steps = np.diff(t)
    if steps.size and not np.all(steps > 0):
        j = int(np.flatnonzero(~(steps > 0))[0])
        raise ValueError(f"t: expected strictly increasing times, got t[{j}] = {t[j]!r} "
                         f">= t[{j + 1}] = {t[j + 1]!r}")
    jp = int(np.argmax(g))
    peak, t_peak = float(g[jp]), float(t[jp])
    below = np.flatnonzero(g[jp:] < theta)
    if below.size == 0:
        return TransientSummary(peak, t_peak, float("nan"), False, centred)
    c = jp + int(below[0])
    if c == jp or not t[c - 1] > 0:
        return TransientSummary(peak, t_peak, float(t[c]), True, centred)
    phi = (g[c - 1] - theta) / (g[c - 1] - g[c])
    lo, hi = np.log(t[c - 1]), np.log(t[c])
    return TransientSummary(peak, t_peak, float(np.exp(lo + phi * (hi - lo))), True, centred)


def refine_transient(summary: TransientSummary, t, gap, threshold, hits) -> TransientSummary:
    """A save-grid :class:`TransientSummary` with located event times put in (see
    :mod:`ufm.events`).

    The peak is replaced by a ``gap_peak`` hit between the saves next to the grid maximum
    (value and time); the collapse time by the first falling ``gap_crossing`` hit at level
    ``threshold`` after the (refined) peak. ``exact`` lists the fields replaced.

    Arguments:
        summary: from :func:`transient_summary`. t, gap: the curve it was computed from.
        threshold: its threshold. hits: :class:`ufm.events.Hit` objects of the same gap.
    """
    from dataclasses import replace
    t = np.asarray(t, dtype=float)
    jp = int(np.argmax(gap))
    lo, hi = t[max(jp - 1, 0)], t[min(jp + 1, t.size - 1)]
    exact = []
    peak, t_peak = summary.peak, summary.t_peak
    for h in hits:
        if h.kind == "gap_peak" and lo <= h.t <= hi and np.isfinite(h.value) and h.value >= peak:
            peak, t_peak = float(h.value), float(h.t)
            exact += ["peak", "t_peak"]
            break
    t_collapse, collapsed = summary.t_collapse, summary.collapsed
    for h in hits:
        if (h.kind == "gap_crossing" and h.direction == -1 and h.t >= t_peak
                and math.isclose(h.options.get("level", math.nan), threshold, rel_tol=1e-12)):
            t_collapse, collapsed = float(h.t), True
            exact.append("t_collapse")
            break
    return replace(summary, peak=peak, t_peak=t_peak, t_collapse=t_collapse, collapsed=collapsed, exact=tuple(exact))


# --------------------------------------------------------------------------------------------
# the name → metric table
# --------------------------------------------------------------------------------------------

_FROM_PROBLEM = object()      # an option not given: filled from the problem where it applies
_QUANTITIES = {"gram_H": "the feature Gram HᵀH (T, N, N)", "gram_W": "the classifier Gram WWᵀ (T, K, K)",
               "logits": "the logits WH + b1ᵀ (T, K, N)"}


@dataclass(frozen=True)
class MetricSpec:
    """One entry of :data:`METRICS`: what a named metric computes, reads and accepts.

    Attributes:
        name: the metric's name.
        summary: one line, as :func:`evaluate`'s table shows it.
        reads: the saved quantities it needs (``"gram"`` stands for ``gram_H``, or ``gram_W``
            with ``which="W"``).
        options: the keyword options it accepts.
        compute: ``compute(inputs, problem, **options)``; ``inputs`` maps the quantities read to
            arrays, options not given are absent.
    """

    name: str
    summary: str
    reads: tuple
    options: tuple
    compute: Callable = field(repr=False)

    def inputs(self, which: str = "H") -> tuple:
        """The quantities read for this ``which`` (``gram`` resolved to gram_H / gram_W)."""
        return tuple(("gram_H" if which == "H" else "gram_W") if q == "gram" else q for q in self.reads)


def _option_labels(options: dict, problem, metric: str, *, required: bool, which: str = "H"):
    """labels= if given (None included), else the problem's labels (for G_H only)."""
    lab = options.get("labels", _FROM_PROBLEM)
    if lab is _FROM_PROBLEM:
        lab = problem.labels if (problem is not None and which == "H") else None
    if required and lab is None:
        why = "the problem has none (soft labels?)" if problem is not None else "no problem was given"
        raise ValueError(f"labels: metric {metric!r} needs integer labels, and {why}; pass labels=")
    return lab


def _option_attributes(options: dict, problem, metric: str):
    attrs = options.get("attributes", _FROM_PROBLEM)
    if attrs is _FROM_PROBLEM:
        attrs = problem.attributes if problem is not None else None
    if attrs is None:
        why = "the problem has none" if problem is not None else "no problem was given"
        raise ValueError(f"attributes: metric {metric!r} needs the contexts' attributes, and {why}; "
                         "pass attributes=")
    return attrs


def _gram_of(q: dict):
    return q.get("gram_H", q.get("gram_W"))


def _m_etf(q, problem, **o):
    which = o.get("which", "H")
    return etf_distance(_gram_of(q), labels=_option_labels(o, problem, "etf_distance", required=False, which=which))


def _m_gap(q, problem, **o):
    attrs = _option_attributes(o, problem, "semantic_gap")
    labels = _option_labels(o, problem, "semantic_gap", required=False)
    centred = o.get("centred", DEFAULT_GAP_CENTRED)
    attribute = o.get("attribute")
    if attribute is None:
        return semantic_gap(q["gram_H"], attrs, labels, centred=centred)
    arr = as_int_array(attrs, "attributes")
    F = 1 if arr.ndim == 1 else arr.shape[-1]
    if isinstance(attribute, (bool, np.bool_)) or not isinstance(attribute, (int, np.integer)) \
            or not 0 <= int(attribute) < F:
        raise ValueError(f"attribute: expected an attribute index 0 … {F - 1}, got {attribute!r}")
    return semantic_gap(q["gram_H"], attrs, labels, centred=centred, per_attribute=True)[int(attribute)]


def _m_alignment(q, problem, **o):
    kern = o.get("kernel")
    if kern is None:
        if o.get("which", "H") == "W":
            raise ValueError("kernel: metric 'kernel_alignment' with which='W' needs a (K, K) kernel=; the "
                             "problem's attribute kernel AᵀA is (N, N)")
        if problem is None or "attribute" not in problem.similarities:
            raise ValueError("kernel: metric 'kernel_alignment' needs kernel=, and the problem has no attribute "
                             "kernel AᵀA to default to")
        kern = problem.similarities["attribute"]
    return kernel_alignment(_gram_of(q), kern, centred=o.get("centred", True))


def _m_erank(q, problem, **o):
    return effective_rank(_gram_of(q), centred=o.get("centred", False))


def _m_pr(q, problem, **o):
    return participation_ratio(_gram_of(q), centred=o.get("centred", True))


def _m_labelled(fn):
    def compute(q, problem, **o):
        return fn(q["gram_H"], _option_labels(o, problem, fn.__name__, required=True))
    return compute


def _m_nc3(q, problem, **o):
    return nc3(q["gram_W"], q["gram_H"], q["logits"], _option_labels(o, problem, "nc3", required=True))


def _m_nc4(q, problem, **o):
    return nc4(q["gram_H"], q["logits"], _option_labels(o, problem, "nc4", required=True))


def _m_norm(name):
    def compute(q, problem, **o):
        G = _gram(q[name], name)
        return _result(np.sqrt(np.maximum(_trace(G), 0.0)))
    return compute


def _m_accuracy(q, problem, **o):
    Z = as_float_array(q["logits"], "logits")
    if Z.ndim < 2:
        raise ValueError(f"logits: expected shape (K, N) or a stack (..., K, N), got {Z.shape}")
    lab = as_int_array(_option_labels(o, problem, "accuracy", required=True), "labels", ndim=1)
    if lab.shape[0] != Z.shape[-1]:
        raise ValueError(f"labels: expected shape ({Z.shape[-1]},) (one class per context), got {lab.shape}")
    return _result(np.mean(np.argmax(Z, axis=-2) == lab, axis=-1))


#: name → :class:`MetricSpec` of every metric :func:`evaluate` (and ``Trajectory.metric``) knows.
METRICS = {s.name: s for s in (
    MetricSpec("etf_distance", "distance of G_H from the labels' simplex-ETF Gram (which='W': of G_W from P_K)",
               ("gram",), ("which", "labels"), _m_etf),
    MetricSpec("semantic_gap", "mean cosine of pairs sharing an attribute minus pairs sharing none (centred by "
               "default; attribute=f for one attribute)", ("gram_H",),
               ("attributes", "labels", "attribute", "centred"), _m_gap),
    MetricSpec("kernel_alignment", "centred alignment (CKA) of G_H (which='W': G_W) with kernel= (default AᵀA)",
               ("gram",), ("which", "kernel", "centred"), _m_alignment),
    MetricSpec("effective_rank", "entropy effective rank exp(−Σ p log p) of G_H (which='W': G_W)",
               ("gram",), ("which", "centred"), _m_erank),
    MetricSpec("participation_ratio", "second-moment effective dimension (tr C)²/tr C² of the centred G_H "
               "(which='W': G_W)", ("gram",), ("which", "centred"), _m_pr),
    MetricSpec("nc1", "within-class variability Tr(Σ_W Σ_B⁺)/K", ("gram_H",), ("labels",), _m_labelled(nc1)),
    MetricSpec("nc2", "ETF distance of the class means", ("gram_H",), ("labels",), _m_labelled(nc2)),
    MetricSpec("cdnv", "class-distance normalised variance", ("gram_H",), ("labels",), _m_labelled(cdnv)),
    MetricSpec("nc3", "self-duality of classifier and centred class means", ("gram_W", "gram_H", "logits"),
               ("labels",), _m_nc3),
    MetricSpec("nc4", "disagreement of the classifier with the nearest class mean", ("gram_H", "logits"),
               ("labels",), _m_nc4),
    MetricSpec("accuracy", "fraction of contexts whose largest logit is their label", ("logits",), ("labels",),
               _m_accuracy),
    MetricSpec("norm_H", "Frobenius norm of the features √tr G_H", ("gram_H",), (), _m_norm("gram_H")),
    MetricSpec("norm_W", "Frobenius norm of the classifier √tr G_W", ("gram_W",), (), _m_norm("gram_W")),
)}


def evaluate(name: str, *, gram_H=None, gram_W=None, logits=None, problem=None, **options):
    """A named metric of :data:`METRICS` on Grams and logits, over any leading axes.

    =======================  ===========================  ================================
    name                     reads                        options
    =======================  ===========================  ================================
    ``etf_distance``         G_H (``which="W"``: G_W)     ``which``, ``labels``
    ``semantic_gap``         G_H                          ``attributes``, ``labels``,
                                                          ``attribute``, ``centred``
    ``kernel_alignment``     G_H (``which="W"``: G_W)     ``which``, ``kernel``, ``centred``
    ``effective_rank``       G_H (``which="W"``: G_W)     ``which``, ``centred``
    ``participation_ratio``  G_H (``which="W"``: G_W)     ``which``, ``centred``
    ``nc1``, ``nc2``,        G_H                          ``labels``
    ``cdnv``
    ``nc3``                  G_W, G_H, logits             ``labels``
    ``nc4``                  G_H, logits                  ``labels``
    ``accuracy``             logits                       ``labels``
    ``norm_H``, ``norm_W``   G_H / G_W: √tr G             —
    =======================  ===========================  ================================

    Options and their defaults: ``which="H"``; ``labels`` — the problem's integer labels
    (for G_H; pass ``labels=None`` explicitly for "every context its own class" in
    ``etf_distance`` or "no exclusion" in ``semantic_gap``); ``attributes`` — the problem's;
    ``attribute=f`` — the gap of attribute f alone (default: all attributes);
    ``centred`` — as the function's default (semantic gap True, participation ratio True,
    kernel alignment True, effective rank False); ``kernel`` — the problem's attribute
    similarity AᵀA.

    Arguments:
        name: a key of :data:`METRICS`.
        gram_H: (..., N, N) feature Grams; gram_W: (..., K, K); logits: (..., K, N).
        problem: optional :class:`ufm.Problem` supplying labels, attributes and the kernel.
        **options: the metric's options (table).

    Returns:
        float for single matrices, else a float array of the leading shape (e.g. (T,)).

    Raises:
        ValueError: unknown ``name`` (the known names listed); a quantity the metric reads was
            not given (not saved); labels or attributes needed and not available; bad input
            (see the metric's function).
        TypeError: an option the metric does not accept (the accepted ones listed).
    """
    spec = METRICS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"name: unknown metric {name!r}; expected one of {', '.join(METRICS)}")
    for opt in options:
        if opt not in spec.options:
            accepted = ", ".join(spec.options) if spec.options else "none"
            raise TypeError(f"{opt}: metric {name!r} has no option {opt!r}; its options: {accepted}")
    which = options.get("which", "H")
    if "which" in options:
        check_choice(which, "which", ("H", "W"))
    given = {"gram_H": gram_H, "gram_W": gram_W, "logits": logits}
    inputs = {}
    for q in spec.inputs(which):
        if given[q] is None:
            raise ValueError(f"{q}: metric {name!r} needs {_QUANTITIES[q]}, which was not saved "
                             f"(ufm.solve / ufm.train: save=[..., {q!r}]) or given")
        inputs[q] = given[q]
    return spec.compute(inputs, problem, **options)
