"""Geometry of Gram matrices: ETF distance, semantic gap, NC1–NC4, CDNV, spectra, transients.

Every metric works from Gram matrices, because the toolkit also integrates in Gram space where
the features H and the classifier W themselves do not exist. All functions are single-time: a
caller loops over save times.

Conventions (DESIGN.md §2):

* features ``H`` are d×N, one column ``h_i`` per context; classifier ``W`` is K×d, one row
  ``w_k`` per class; logits ``Z = W H + b 1ᵀ`` are K×N (one column per context);
* ``gram_H = Hᵀ H`` is N×N (``G_ij = ⟨h_i, h_j⟩``), ``gram_W = W Wᵀ`` is K×K;
* ``labels`` is an integer vector of length N: ``labels[i]`` is the class of context i. Metrics
  built on class means require the values ``0 … K−1`` with every class present, so that class k
  is row k of W and of the logits (the exception is :func:`semantic_gap`, which only uses
  equality of labels);
* ``P_m = I_m − 1 1ᵀ/m`` is the m×m centring projector; ``C = P_N`` centres N×N Grams
  ("global centring": ``C G C`` is the Gram of the features after subtracting their mean).

Class means are computed through the N×K *averaging matrix* ``A`` with
``A_ik = [y_i = k] / n_k`` (``n_k`` contexts in class k), so that the d×K matrix of class means
is ``M = H A`` and its Gram is ``Mᵀ M = Aᵀ G A``. The *centred averaging matrix*
``Ã = A P_K`` gives the class means centred at their unweighted average
``μ_G = (1/K) Σ_k μ_k``: ``M̃ = H Ã = M − μ_G 1ᵀ``. Every column of ``A`` sums to 1, so
``1ᵀ Ã = 1ᵀ P_K = 0``: the columns of ``Ã`` sum to zero.

Numerical conventions: Gram matrices must be symmetric to a relative tolerance of 1e-8 (they
are symmetrised before use); tiny negative eigenvalues and diagonal entries produced by
rounding are clipped to 0. Quantities that are undefined because a normalising matrix vanishes
(a zero Gram, coinciding class means) are returned as ``nan`` rather than raising, so that a
trajectory starting from zero can still be scanned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ._validation import as_float_array, as_int_array, as_positive, as_positive_int, as_real

__all__ = [
    "PINV_RTOL",
    "TransientSummary",
    "cdnv",
    "class_means_gram",
    "cosine",
    "effective_rank",
    "eigenbasis",
    "etf_distance",
    "etf_target",
    "kernel_alignment",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "semantic_gap",
    "spectrum_in_basis",
    "transient_summary",
]

#: Relative cutoff of the pseudo-inverse in :func:`nc1`: eigenvalues of the between-class
#: covariance Σ_B below ``PINV_RTOL · λ_max(Σ_B)`` are treated as zero.
PINV_RTOL = 1e-10

_SYM_RTOL = 1e-8      # relative asymmetry tolerated in a Gram matrix
_NEG_RTOL = 1e-10     # relative size of negative diagonal entries clipped as rounding
_BASIS_TOL = 1e-8     # orthonormality / projector tolerance in spectrum_in_basis
_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------

def _square(value, name: str, *, min_size: int = 1) -> np.ndarray:
    """A finite float (N, N) matrix with N >= ``min_size``."""
    arr = as_float_array(value, name, ndim=2)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name}: expected a square (N, N) matrix, got shape {arr.shape}")
    if arr.shape[0] < min_size:
        raise ValueError(f"{name}: expected a square (N, N) matrix with N >= {min_size}, "
                         f"got shape {arr.shape}")
    return arr


def _gram(value, name: str, *, min_size: int = 1) -> np.ndarray:
    """A finite symmetric (N, N) matrix (symmetrised copy)."""
    arr = _square(value, name, min_size=min_size)
    scale = float(np.max(np.abs(arr))) if arr.size else 0.0
    asym = float(np.max(np.abs(arr - arr.T))) if arr.size else 0.0
    if asym > _SYM_RTOL * scale:
        raise ValueError(f"{name}: expected a symmetric Gram matrix, max |G − Gᵀ| = {asym:.3g} "
                         f"(relative {asym / scale:.3g} > {_SYM_RTOL:g})")
    return 0.5 * (arr + arr.T)


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
    """P_N G P_N for a square G."""
    G = G - G.mean(axis=0, keepdims=True)
    return G - G.mean(axis=1, keepdims=True)


def _negligible(x: float, scale: float, n: int) -> bool:
    """True when ``x`` is zero up to the rounding of an n-term sum of size ``scale``."""
    return not x > 10.0 * n * _EPS * scale


# --------------------------------------------------------------------------------------------
# cosines, ETF target and distance, alignment
# --------------------------------------------------------------------------------------------

def cosine(gram) -> np.ndarray:
    """Cosine-similarity matrix of the vectors behind a Gram matrix.

    .. math:: \\cos_{ij} = G_{ij} / \\sqrt{G_{ii} G_{jj}}

    Raw (uncentred) cosines: with ``gram = HᵀH`` this is the cosine between feature columns
    ``h_i`` and ``h_j``; with ``gram = WWᵀ`` between classifier rows. A vector of zero norm
    (``G_ii = 0``) has cosine 0 with every other vector and 1 with itself. Values are clipped
    to [−1, 1] and tiny negative diagonal entries (rounding) are treated as 0.

    Arguments:
        gram: symmetric (N, N) Gram matrix.

    Returns:
        (N, N) float array, symmetric, unit diagonal.

    Raises:
        ValueError: ``gram`` not square, not symmetric, non-finite, or with a diagonal entry
            that is clearly negative (not a Gram matrix).
    """
    G = _gram(gram, "gram")
    diag = np.diag(G).copy()
    scale = float(np.max(np.abs(G))) if G.size else 0.0
    if diag.size and diag.min() < -_NEG_RTOL * scale:
        i = int(np.argmin(diag))
        raise ValueError(f"gram: expected a non-negative diagonal (a Gram matrix), "
                         f"found G[{i}, {i}] = {diag[i]:.6g}")
    diag = np.clip(diag, 0.0, None)
    norms = np.sqrt(diag)
    nonzero = norms > 0
    inv = np.zeros_like(norms)
    inv[nonzero] = 1.0 / norms[nonzero]
    cos = np.clip(G * inv[:, None] * inv[None, :], -1.0, 1.0)
    np.fill_diagonal(cos, 1.0)
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


def _normalised_centred(G: np.ndarray) -> np.ndarray | None:
    """C G C / ‖C G C‖_F, or None if C G C vanishes (to rounding)."""
    CGC = _double_centre(G)
    norm = float(np.linalg.norm(CGC))
    if _negligible(norm, float(np.linalg.norm(G)), G.shape[0]):
        return None
    return CGC / norm


def etf_distance(gram, labels=None) -> float:
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
        gram: symmetric (N, N) Gram matrix, N >= 2.
        labels: optional int (N,), classes 0 … K−1 (all present, K >= 2).

    Returns:
        float in [0, 2]; ``nan`` when the centred Gram vanishes (zero Gram, or all vectors
        equal): ``‖CGC‖_F <= 10·N·eps·‖G‖_F``.

    Raises:
        ValueError: bad shapes, asymmetric or non-finite ``gram``, invalid ``labels``.
    """
    G = _gram(gram, "gram", min_size=2)
    N = G.shape[0]
    if labels is None:
        E = etf_target(n=N)
    else:
        lab, _ = _labels(labels, N)
        E = etf_target(lab)
    G_hat = _normalised_centred(G)
    if G_hat is None:
        return float("nan")
    E_hat = _double_centre(E)
    E_hat /= np.linalg.norm(E_hat)
    return float(min(np.linalg.norm(G_hat - E_hat), 2.0))


def kernel_alignment(a, b, centred=True) -> float:
    """(Centred) kernel alignment of two N×N kernels (Cristianini et al. 2002; Cortes et al. 2012).

    .. math::
        \\mathrm{CKA}(A, B) = \\frac{\\langle C A C, C B C\\rangle_F}
                                   {\\lVert C A C\\rVert_F \\lVert C B C\\rVert_F},
        \\qquad C = I_N - \\tfrac1N 1 1^\\top

    (``C`` replaced by ``I`` when ``centred=False``). Scale invariant in each argument; with
    centring also invariant to adding a constant matrix ``c 1 1ᵀ`` to either kernel. In [−1, 1]
    (in [0, 1] for PSD kernels).

    Arguments:
        a: (N, N) kernel, e.g. a feature Gram ``HᵀH``.
        b: (N, N) kernel, e.g. an attribute kernel ``AᵀA``.
        centred: bool, apply the double centring ``C · C`` first (default True).

    Returns:
        float; ``nan`` if either (centred) kernel is zero to rounding.

    Raises:
        ValueError: non-square, non-finite or differently shaped kernels.
        TypeError: ``centred`` not a bool.
    """
    A = _square(a, "a")
    B = _square(b, "b")
    if B.shape != A.shape:
        raise ValueError(f"b: expected the shape of a, {A.shape}, got {B.shape}")
    if not isinstance(centred, (bool, np.bool_)):
        raise TypeError(f"centred: expected a bool, got {type(centred).__name__}")
    N = A.shape[0]
    scale_a, scale_b = float(np.linalg.norm(A)), float(np.linalg.norm(B))
    if centred:
        A, B = _double_centre(A), _double_centre(B)
    na, nb = float(np.linalg.norm(A)), float(np.linalg.norm(B))
    if _negligible(na, scale_a, N) or _negligible(nb, scale_b, N):
        return float("nan")
    return float(np.clip(np.vdot(A, B) / (na * nb), -1.0, 1.0))


def semantic_gap(gram, attributes, labels=None, per_attribute=False):
    """Semantic gap: how much more similar contexts sharing a latent attribute are.

    With raw (uncentred) cosines ``c_ij`` (:func:`cosine`) over distinct pairs i < j,

    .. math::
        \\mathrm{gap} = \\operatorname{mean}_{(i,j) \\in S} c_{ij}
                      - \\operatorname{mean}_{(i,j) \\in S_0} c_{ij},

    ``S`` = pairs sharing at least one attribute value (``a_if = a_jf`` for some f), ``S_0`` =
    pairs sharing none. Per attribute,
    ``gap_f = mean_{(i,j): a_if = a_jf} c_ij − mean_{(i,j) ∈ S_0} c_ij`` (the baseline is
    always the pairs sharing nothing). If ``labels`` are given, pairs with equal labels are
    excluded from every set (they collapse together through NC1 whatever their semantics).
    At an exact ETF all off-diagonal cosines are equal and every gap is 0.

    Arguments:
        gram: symmetric (N, N) feature Gram ``HᵀH``.
        attributes: int (N, F) latent attributes, one row per context (a 1-D (N,) array is
            read as F = 1). Only equality of values is used.
        labels: optional int (N,) labels; only equality is used (any integer values).
        per_attribute: bool; if True return a dict instead of a float.

    Returns:
        float ``gap``, or with ``per_attribute=True`` a dict
        ``{"all": gap, 0: gap_0, 1: gap_1, …, F−1: gap_{F−1}}``.

    Raises:
        ValueError: bad shapes; or a pair set is empty — no (differently labelled) pair shares
            an attribute value, none shares no value, or (per attribute) no pair has equal
            values of attribute f — so its mean cosine is undefined.
        TypeError: non-integer attributes/labels, ``per_attribute`` not a bool.
    """
    cos = cosine(gram)
    N = cos.shape[0]
    attr = as_int_array(attributes, "attributes")
    if attr.ndim == 1:
        attr = attr[:, None]
    if attr.ndim != 2 or attr.shape[0] != N or attr.shape[1] < 1:
        raise ValueError(f"attributes: expected shape (N={N}, F) with F >= 1, got {attr.shape}")
    if not isinstance(per_attribute, (bool, np.bool_)):
        raise TypeError(f"per_attribute: expected a bool, got {type(per_attribute).__name__}")
    valid = np.triu(np.ones((N, N), dtype=bool), k=1)
    if labels is not None:
        lab = as_int_array(labels, "labels", ndim=1)
        if lab.shape[0] != N:
            raise ValueError(f"labels: expected shape ({N},) (one label per context), got {lab.shape}")
        valid &= lab[:, None] != lab[None, :]
    excl = " with different labels" if labels is not None else ""

    share_any = np.zeros((N, N), dtype=bool)
    per_f_means = []
    for f in range(attr.shape[1]):
        eq = (attr[:, f, None] == attr[None, :, f]) & valid
        share_any |= eq
        if per_attribute:
            count = int(eq.sum())
            if count == 0:
                raise ValueError(f"attributes: no pair of contexts{excl} has equal values of "
                                 f"attribute {f}, so its mean cosine is undefined")
            per_f_means.append(float(cos[eq].sum() / count))
    share_none = valid & ~share_any
    n_any, n_none = int(share_any.sum()), int(share_none.sum())
    if n_any == 0:
        raise ValueError(f"attributes: no pair of contexts{excl} shares an attribute value, so the "
                         f"mean cosine of sharing pairs is undefined")
    if n_none == 0:
        raise ValueError(f"attributes: every pair of contexts{excl} shares at least one attribute "
                         f"value, so the baseline (pairs sharing none) is undefined")
    base = float(cos[share_none].sum() / n_none)
    gap = float(cos[share_any].sum() / n_any) - base
    if not per_attribute:
        return gap
    out: dict = {"all": gap}
    for f, m in enumerate(per_f_means):
        out[f] = m - base
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
        gram_H: symmetric (N, N) feature Gram ``HᵀH``.
        labels: int (N,), classes 0 … K−1, every class present.

    Returns:
        (K, K) float array, ``[⟨μ_k, μ_l⟩]``.

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    G = _gram(gram_H, "gram_H")
    lab, counts = _labels(labels, G.shape[0], min_classes=1)
    A = _averaging(lab, counts)
    M = A.T @ G @ A
    return 0.5 * (M + M.T)


def nc1(gram_H, labels) -> float:
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

    Population value (THEORY.md): means on an ETF of radius r, isotropic within-class noise of
    variance s² per coordinate: ``s²(K−1)²/(K r²)``.

    Arguments:
        gram_H: symmetric (N, N) feature Gram ``HᵀH``.
        labels: int (N,), classes 0 … K−1, every class present, K >= 2.

    Returns:
        float >= 0; ``nan`` when all class means coincide (Σ_B = 0 to rounding, e.g. a zero
        Gram), where the metric is undefined.

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    G = _gram(gram_H, "gram_H")
    N = G.shape[0]
    lab, counts = _labels(labels, N)
    A = _averaging(lab, counts)
    At = _centre_columns(A)
    GAt = G @ At                                  # N×K
    SB = At.T @ GAt                               # K×K, = Bᵀ B
    SB = 0.5 * (SB + SB.T)
    lam, V = np.linalg.eigh(SB)
    lam_max = float(lam[-1])
    if _negligible(lam_max, float(np.max(np.abs(G))), N):
        return float("nan")
    keep = lam > PINV_RTOL * lam_max
    SB_pinv = (V[:, keep] / lam[keep]) @ V[:, keep].T
    T = GAt.T - (At.T @ (G @ A))[:, lab]          # Ãᵀ G R = ÃᵀG − (ÃᵀGA) Y
    X = SB_pinv @ T
    return float(np.sum(X * X) / N)


def nc2(gram, labels=None) -> float:
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
        gram: symmetric Gram, (N, N) ``gram_H`` with labels, or (K, K) e.g. ``gram_W``.
        labels: optional int (N,), classes 0 … K−1 (all present, K >= 2).

    Returns:
        float in [0, 2], ``nan`` if the centred Gram vanishes.

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    if labels is None:
        return etf_distance(gram)
    G = _gram(gram, "gram")
    _labels(labels, G.shape[0])                   # checks K >= 2 with a message about labels
    return etf_distance(class_means_gram(G, labels))


def nc3(gram_W, gram_H, logits, labels) -> float:
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
        gram_W: symmetric (K, K) classifier Gram ``WWᵀ``.
        gram_H: symmetric (N, N) feature Gram ``HᵀH``.
        logits: (K, N) logits ``Z = WH + b1ᵀ`` of the same W, H (any bias b).
        labels: int (N,), classes 0 … K−1 (K = rows of logits), every class present.

    Returns:
        float in [0, 4]; ``nan`` if ``Ŵ`` or ``M̃`` vanishes.

    Raises:
        ValueError: bad or inconsistent shapes, invalid labels, or logits inconsistent with the
            Grams (the implied cosine exceeds 1 by more than 1e-6, i.e. Cauchy–Schwarz fails).
        TypeError: non-numeric input.
    """
    GW = _gram(gram_W, "gram_W")
    GH = _gram(gram_H, "gram_H")
    K, N = GW.shape[0], GH.shape[0]
    Z = as_float_array(logits, "logits", shape=(K, N))
    lab, counts = _labels(labels, N, n_classes=K)
    At = _centre_columns(_averaging(lab, counts))
    w2 = float(np.trace(GW) - GW.sum() / K)                  # ‖P_K W‖²
    m2 = float(np.trace(At.T @ GH @ At))                     # ‖M̃‖²
    if _negligible(w2, float(np.max(np.abs(GW))), K) or _negligible(m2, float(np.max(np.abs(GH))), N):
        return float("nan")
    inner = float(np.sum(Z * At.T))                          # Tr(Z Ã)
    c = inner / np.sqrt(w2 * m2)
    if abs(c) > 1.0 + 1e-6:
        raise ValueError(f"logits: inconsistent with gram_W and gram_H: implied cosine "
                         f"⟨Ŵ, M̃ᵀ⟩/(‖Ŵ‖‖M̃‖) = {c:.6g} lies outside [−1, 1] (logits must be "
                         f"W H + b 1ᵀ for the same W, H)")
    return float(np.clip(2.0 - 2.0 * c, 0.0, 4.0))


def nc4(gram_H, logits, labels) -> float:
    """NC4: disagreement between the classifier and the nearest-class-mean rule.

    .. math::
        \\mathrm{NC4} = \\frac1N \\#\\{i : \\arg\\max_k Z_{ki} \\ne
                                       \\arg\\min_k \\lVert h_i - μ_k \\rVert\\},\\qquad
        \\lVert h_i - μ_k\\rVert^2 = G_{ii} - 2 (G A)_{ik} + (A^\\top G A)_{kk}

    with ``A`` the averaging matrix (class means ``μ_k`` of the training contexts). Ties are
    broken towards the smaller class index in both rules.

    Arguments:
        gram_H: symmetric (N, N) feature Gram ``HᵀH``.
        logits: (K, N) logits, one column per context.
        labels: int (N,), classes 0 … K−1 (K = rows of logits), every class present.

    Returns:
        float in [0, 1].

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    G = _gram(gram_H, "gram_H")
    N = G.shape[0]
    Z = as_float_array(logits, "logits", ndim=2)
    if Z.shape[1] != N:
        raise ValueError(f"logits: expected shape (K, N={N}) (one column per context), got {Z.shape}")
    lab, counts = _labels(labels, N, n_classes=Z.shape[0], min_classes=1)
    A = _averaging(lab, counts)
    GA = G @ A
    dist2 = np.diag(G)[:, None] - 2.0 * GA + np.diag(A.T @ GA)[None, :]
    return float(np.mean(np.argmax(Z, axis=0) != np.argmin(dist2, axis=1)))


def cdnv(gram_H, labels) -> float:
    """Class-distance normalised variance (Galanti, György & Hutter 2022).

    .. math::
        \\mathrm{CDNV} = \\frac{1}{K(K-1)} \\sum_{k \\ne l}
            \\frac{V_k + V_l}{2 \\lVert μ_k - μ_l\\rVert^2},\\qquad
        V_k = \\frac{1}{n_k} \\sum_{i: y_i = k} \\lVert h_i - μ_k\\rVert^2
            = \\frac{1}{n_k}\\sum_{i: y_i=k} G_{ii} - (A^\\top G A)_{kk},

    ``‖μ_k − μ_l‖² = M_kk + M_ll − 2 M_kl`` with ``M = AᵀGA`` (:func:`class_means_gram`).
    The mean over ordered pairs equals the mean over unordered pairs.

    Arguments:
        gram_H: symmetric (N, N) feature Gram ``HᵀH``.
        labels: int (N,), classes 0 … K−1, every class present, K >= 2.

    Returns:
        float >= 0; ``inf`` if two class means coincide while some variance is positive,
        ``nan`` if they coincide with zero variance.

    Raises:
        ValueError / TypeError: bad shapes or labels.
    """
    G = _gram(gram_H, "gram_H")
    lab, counts = _labels(labels, G.shape[0])
    A = _averaging(lab, counts)
    M = A.T @ G @ A
    M = 0.5 * (M + M.T)
    mean_sq = np.bincount(lab, weights=np.diag(G)) / counts
    V = np.clip(mean_sq - np.diag(M), 0.0, None)
    dm = np.diag(M)
    D = np.clip(dm[:, None] + dm[None, :] - 2.0 * M, 0.0, None)
    K = counts.shape[0]
    off = ~np.eye(K, dtype=bool)
    num = (V[:, None] + V[None, :])[off]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num / (2.0 * D[off])
    return float(np.mean(ratio))


# --------------------------------------------------------------------------------------------
# spectra
# --------------------------------------------------------------------------------------------

def effective_rank(gram) -> float:
    """Effective rank (Roy & Vetterli 2007): exponential of the spectral entropy.

    .. math::
        \\operatorname{erank}(G) = \\exp\\Bigl(-\\sum_j p_j \\log p_j\\Bigr),\\qquad
        p_j = λ_j / \\sum_l λ_l,

    over the eigenvalues ``λ_j`` of the (uncentred) Gram, negative ones (rounding) clipped to
    0, with ``0 log 0 = 0``. Between 1 and N for a nonzero Gram: ``P_n`` gives n − 1, a rank-1
    Gram gives 1.

    Arguments:
        gram: symmetric (N, N) Gram matrix.

    Returns:
        float; 0 for the zero matrix.

    Raises:
        ValueError: non-square, asymmetric or non-finite ``gram``.
    """
    G = _gram(gram, "gram")
    lam = np.clip(np.linalg.eigvalsh(G), 0.0, None)
    total = float(lam.sum())
    if not total > 0:
        return 0.0
    p = lam[lam > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def eigenbasis(gram) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a reference Gram, to be used as a fixed basis.

    ``G = V diag(λ) Vᵀ`` with eigenvalues in descending order. Each eigenvector's sign is fixed
    so that its entry of largest magnitude is positive (first such entry on ties), making the
    basis reproducible. Within a degenerate eigenspace the basis is arbitrary; pass the
    eigenspace projectors to :func:`spectrum_in_basis` if that matters.

    Arguments:
        gram: symmetric (N, N) Gram matrix.

    Returns:
        (eigenvalues (N,) descending, eigenvectors (N, N) with orthonormal columns,
        column j belonging to eigenvalue j).

    Raises:
        ValueError: non-square, asymmetric or non-finite ``gram``.
    """
    G = _gram(gram, "gram")
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
        gram: symmetric (N, N) Gram matrix.
        basis: (N, m) orthonormal columns, or a sequence / (P, N, N) array of projectors.

    Returns:
        float array, shape (m,) or (P,).

    Raises:
        ValueError: shapes inconsistent with ``gram``; columns not orthonormal; a matrix that
            is not a symmetric idempotent nonzero projector.
    """
    G = _gram(gram, "gram")
    N = G.shape[0]
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
        return np.einsum("ij,ik,kj->j", B, G, B)
    if B.shape[1:] != (N, N) or B.shape[0] < 1:
        raise ValueError(f"basis: expected projectors of shape (N, N) = ({N}, {N}), got stack of shape {B.shape}")
    out = np.empty(B.shape[0])
    for p, P in enumerate(B):
        asym = float(np.max(np.abs(P - P.T)))
        idem = float(np.max(np.abs(P @ P - P)))
        if asym > _BASIS_TOL or idem > _BASIS_TOL:
            raise ValueError(f"basis: projector {p} is not an orthogonal projector "
                             f"(max |P − Pᵀ| = {asym:.3g}, max |P² − P| = {idem:.3g}, tolerance {_BASIS_TOL:g})")
        tr = float(np.trace(P))
        if tr < 0.5:
            raise ValueError(f"basis: projector {p} is zero (trace {tr:.3g})")
        out[p] = float(np.sum(P * G)) / tr
    return out


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
    """

    peak: float
    t_peak: float
    t_collapse: float
    collapsed: bool

    def as_dict(self) -> dict:
        """The four fields as a plain dict of Python floats and a bool."""
        return asdict(self)


def transient_summary(t, gap, threshold=0.02) -> TransientSummary:
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

    Returns:
        :class:`TransientSummary`.

    Raises:
        ValueError: empty, non-finite or mismatched arrays; ``t`` not strictly increasing.
        TypeError: non-numeric input.
    """
    t = as_float_array(t, "t", ndim=1)
    g = as_float_array(gap, "gap", ndim=1)
    theta = as_positive(threshold, "threshold")
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
        return TransientSummary(peak, t_peak, float("nan"), False)
    c = jp + int(below[0])
    if c == jp or not t[c - 1] > 0:
        return TransientSummary(peak, t_peak, float(t[c]), True)
    phi = (g[c - 1] - theta) / (g[c - 1] - g[c])
    lo, hi = np.log(t[c - 1]), np.log(t[c])
    return TransientSummary(peak, t_peak, float(np.exp(lo + phi * (hi - lo))), True)
