"""The numeric symmetry reduction of the Gram-space ODE (the state space ``"reduced"``).

For a problem with an association scheme (``problem.relations``: 0/1 symmetric N×N matrices
R_a partitioning the context pairs, the identity first), one-hot labels and equal weights,
the Gram ODE maps the span

    M = Σ_a m_a B_a (K×N),   G_W = Σ_a w_a C_a (K×K),   G_H = Σ_a h_a R_a (N×N),   b = b·1_K

into itself when the coupling is Θ = Σ_a θ_a R_a. The class side C_a and the logit side B_a
are derived here from the context side and the labels, numerically (no sympy): the class pair
(k, l) is labelled by the vector of counts ((Y R_a Yᵀ)[k, l])_a — how many context pairs of
each relation join class k to class l — and the logit pair (k, j) by ((Y R_a)[k, j])_a. Pairs
with equal vectors form one relation. With several samples per context this merges
"identity" and "same context" into the class identity C_0 = I and the label relation
B_label = Y, as in :mod:`ufm.theory.scheme`.

All structure constants (B_aR_b, C_aB_b, B_aB_bᵀ, B_aᵀB_b, R_aR_b) are computed from the 0/1
matrices; they are integer counts, so closure is checked exactly: a product that is not
constant on every relation of its side leaves the span, and the problem does not qualify.
The resulting :class:`Reduction` packs its tables for the numba field
:func:`ufm.kernels.reduced.reduced_field` (layout documented there), projects Gram states on
the span (:meth:`Reduction.project`) and expands reduced states back (:meth:`Reduction.expand`).

:func:`reference_field` and :func:`reference_objective` are the slow ground truth: expand,
apply the full Gram-space numpy reference (:mod:`ufm.reference`), project back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import as_float_array, as_nonnegative, readonly
from .kernels import reduced as _kr

__all__ = ["Reduction", "reference_field", "reference_objective"]

#: the coupling and its pseudo-inverse must lie in the span to this relative residual
_SPAN_RTOL = 1e-10
#: default tolerance of :meth:`Reduction.project` (relative spread of a state within a relation)
PROJECT_RTOL = 1e-10


@dataclass(frozen=True, eq=False)
class Reduction:
    """The numeric reduction of a :class:`ufm.UFM` on its problem's relation scheme.

    Build it with :meth:`from_model`. All arrays are read-only.

    Attributes:
        K, N: classes and contexts.
        loss: ``"ce"`` or ``"mse"``. bias: whether the state carries the (uniform) bias b.
        R_names, C_names, B_names: names of the context, class and logit relations (a class or
            logit relation is named after the first context relation it collects, as in
            :mod:`ufm.theory.scheme`: the class identity and the label relation are "identity").
        label: index of the label relation among the B's (B_label = Y).
        R_index, C_index, B_index: (N, N), (K, K), (K, N) int arrays: the relation of each pair.
        R_count, C_count, B_count: number of pairs in each relation.
        col_valency, row_valency: entries of B_a per column (N·v_a = B_count) and per row.
        alpha: (nB, nR, nB), B_a R_b = Σ_c alpha[a, b, c] B_c.
        gamma: (nC, nB, nB), C_a B_b = Σ_c gamma[a, b, c] B_c.
        delta: (nB, nB, nC), B_a B_bᵀ = Σ_c delta[a, b, c] C_c.
        eps:   (nB, nB, nR), B_aᵀ B_b = Σ_c eps[a, b, c] R_c.
        p:     (nR, nR, nR), R_a R_b = Σ_c p[a, b, c] R_c (intersection numbers).
        theta: (nR,), Θ = Σ_a theta[a] R_a (the identity coefficient 1 without coupling).
        theta_pinv: (nR,), Θ⁺ = Σ_a theta_pinv[a] R_a (for the λ_E term of the objective).
        coupled: False when Θ = I (the Θ products are skipped by the kernel).
        weight: π, the weight of every context.
    """

    K: int
    N: int
    loss: str
    bias: bool
    R_names: tuple
    C_names: tuple
    B_names: tuple
    label: int
    R_index: np.ndarray
    C_index: np.ndarray
    B_index: np.ndarray
    R_count: np.ndarray
    C_count: np.ndarray
    B_count: np.ndarray
    col_valency: np.ndarray
    row_valency: np.ndarray
    alpha: np.ndarray
    gamma: np.ndarray
    delta: np.ndarray
    eps: np.ndarray
    p: np.ndarray
    theta: np.ndarray
    theta_pinv: np.ndarray
    coupled: bool
    weight: float

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model) -> "Reduction":
        """The reduction of ``model`` (module docstring).

        Arguments:
            model: a :class:`ufm.UFM` with a constant coupling (None or an N×N Θ).

        Returns:
            :class:`Reduction`.

        Raises:
            TypeError: ``model`` is not a ufm.UFM.
            ValueError: saying why the problem does not qualify — targets that are not one-hot
                (soft labels, regression targets), unequal context weights, no association
                scheme (``problem.relations`` is None), class or logit relations that are not
                the identity / the labels, valencies that vary, products that leave the span
                (with the residual) — or a coupling that is time-dependent or not in the span
                of the relations (with the residual).
        """
        from .models import UFM, PiecewiseCoupling
        if not isinstance(model, UFM):
            raise TypeError(f"model: expected a ufm.UFM, got {type(model).__name__}")
        problem = model.problem
        _check_problem(problem)
        if isinstance(model.coupling, PiecewiseCoupling):
            raise ValueError("coupling: space='reduced' needs a constant coupling Θ (None or an N×N matrix in the "
                             "span of problem.relations), got a PiecewiseCoupling")
        labels = problem.labels
        K, N = problem.K, problem.N
        R = np.asarray(problem.relations, dtype=float)                 # (nR, N, N)
        R_index = np.argmax(R, axis=0)
        Y = np.asarray(problem.Y, dtype=float)
        YR = np.einsum("kn,anm->akm", Y, R)                            # (nR, K, N) counts
        YRY = np.einsum("akm,lm->akl", YR, Y)                          # (nR, K, K) counts
        C_index, C_keys = _partition_by_counts(YRY)
        B_index, B_keys = _partition_by_counts(YR)
        names = problem.relation_names
        C_names = tuple(_merged_name(k, names) for k in C_keys)
        B_names = tuple(_merged_name(k, names) for k in B_keys)

        if not (np.all(np.diag(C_index) == 0) and np.count_nonzero(C_index == 0) == K):
            raise ValueError("space='reduced' needs the class pairs (k, k) to form one relation of their own "
                             "(C_0 = I): here the diagonal of Y R_a Yᵀ differs between classes, or is shared "
                             "with off-diagonal pairs, so the classes are not symmetric under the scheme")
        label = int(B_index[labels[0], 0])
        if not (np.all(B_index[labels, np.arange(N)] == label) and np.count_nonzero(B_index == label) == N):
            raise ValueError("space='reduced' needs the labels to form one logit relation (B_label = Y): the "
                             "pairs (label of context j, j) differ in their relations to the other samples of "
                             "the class")
        nR, nC, nB = R.shape[0], len(C_keys), len(B_keys)
        Rm = R
        Cm = np.stack([(C_index == c).astype(float) for c in range(nC)])
        Bm = np.stack([(B_index == c).astype(float) for c in range(nB)])
        R_count = Rm.sum(axis=(1, 2))
        C_count = Cm.sum(axis=(1, 2))
        B_count = Bm.sum(axis=(1, 2))

        per_col = Bm.sum(axis=1)                                        # (nB, N)
        per_row = Bm.sum(axis=2)                                        # (nB, K)
        if model.loss_name == "ce" and np.any(per_col != per_col[:, :1]):
            a = int(np.flatnonzero(np.any(per_col != per_col[:, :1], axis=1))[0])
            raise ValueError(f"space='reduced' with loss='ce' needs every logit relation to have the same number "
                             f"of entries in each column (the softmax of a column depends on it); logit relation "
                             f"{B_names[a]!r} has between {per_col[a].min():g} and {per_col[a].max():g}")
        if model.bias and np.any(per_row != per_row[:, :1]):
            a = int(np.flatnonzero(np.any(per_row != per_row[:, :1], axis=1))[0])
            raise ValueError(f"space='reduced' with bias=True needs every logit relation to have the same number "
                             f"of entries in each row (G1 must stay uniform); logit relation {B_names[a]!r} has "
                             f"between {per_row[a].min():g} and {per_row[a].max():g}")

        BmT = np.ascontiguousarray(Bm.transpose(0, 2, 1))    # a strided operand makes matmul skip BLAS
        alpha = _structure_constants(Bm, Rm, B_index, nB, "B_a R_b", "logit")
        gamma = _structure_constants(Cm, Bm, B_index, nB, "C_a B_b", "logit")
        delta = _structure_constants(Bm, BmT, C_index, nC, "B_a B_bᵀ", "class")
        eps = _structure_constants(BmT, Bm, R_index, nR, "B_aᵀ B_b", "context")
        p = _structure_constants(Rm, Rm, R_index, nR, "R_a R_b", "context")

        if model.coupling is None:
            theta = np.zeros(nR)
            theta[0] = 1.0
            theta_pinv = theta.copy()
        else:
            Theta = np.asarray(model.coupling, dtype=float)
            theta, resid = _project_matrix(Theta, R_index, R_count)
            if resid > _SPAN_RTOL:
                raise ValueError(f"coupling: Θ is not in the span of problem.relations (relative residual "
                                 f"{resid:.2e} > {_SPAN_RTOL:.0e}); space='reduced' needs Θ = Σ_a θ_a R_a, "
                                 "such as problem.coupling('attribute', β), or coupling=None")
            # the same pseudo-inverse the Gram-space objective uses (UFM._pack)
            theta_pinv, resid = _project_matrix(np.linalg.pinv(Theta, hermitian=True), R_index, R_count)
            if resid > 1e-8:
                raise ValueError(f"coupling: the pseudo-inverse Θ⁺ is not in the span of problem.relations "
                                 f"(relative residual {resid:.2e}); the λ_E term of the objective needs it")
        identity = np.zeros(nR)
        identity[0] = 1.0
        ro = lambda a: readonly(np.ascontiguousarray(a))  # noqa: E731
        return cls(K=K, N=N, loss=model.loss_name, bias=model.bias, R_names=tuple(names), C_names=C_names,
                   B_names=B_names, label=label, R_index=ro(R_index), C_index=ro(C_index), B_index=ro(B_index),
                   R_count=ro(R_count), C_count=ro(C_count), B_count=ro(B_count),
                   col_valency=ro(B_count / N), row_valency=ro(per_row[:, 0]), alpha=ro(alpha),
                   gamma=ro(gamma), delta=ro(delta), eps=ro(eps), p=ro(p), theta=ro(theta),
                   theta_pinv=ro(theta_pinv), coupled=not np.array_equal(theta, identity),
                   weight=float(problem.weights[0]))

    # -- layout -----------------------------------------------------------------------------------
    @property
    def sizes(self) -> tuple:
        """(nB, nC, nR): numbers of logit, class and context relations."""
        return len(self.B_names), len(self.C_names), len(self.R_names)

    @property
    def size(self) -> int:
        """Length of the reduced state [m (nB), w (nC), h (nR), b (1, if bias)]."""
        return sum(self.sizes) + int(self.bias)

    @property
    def names(self) -> tuple:
        """Name of each coordinate of the reduced state, e.g. ``"m[agree on 0]"``."""
        out = tuple(f"m[{n}]" for n in self.B_names) + tuple(f"w[{n}]" for n in self.C_names)
        out += tuple(f"h[{n}]" for n in self.R_names)
        return out + (("b",) if self.bias else ())

    def split(self, y) -> tuple:
        """(m, w, h, b) views of a reduced state (b None without bias); leading axes kept."""
        y = np.asarray(y, dtype=float)
        nB, nC, nR = self.sizes
        b = y[..., nB + nC + nR] if self.bias else None
        return y[..., :nB], y[..., nB:nB + nC], y[..., nB + nC:nB + nC + nR], b

    # -- kernel tables ---------------------------------------------------------------------------
    def pack(self) -> tuple:
        """Tables for :func:`ufm.kernels.reduced.reduced_field`: ``(tab_i, tab_f)``, int64 and
        float64, laid out as documented in :mod:`ufm.kernels.reduced`. The structure constants
        are stored as sparse lists of their nonzero entries, indexed by position in the
        kernel's work buffer; the coupling's θ is folded into the linear Θ entries."""
        nB, nC, nR = self.sizes
        at = _kr.work_layout(nB, nC, nR)
        # (table, offsets of its operands and output in the work buffer)
        bilinear = [(self.alpha, (at["g"], at["h"], at["T1"])), (self.gamma, (at["w"], at["g"], at["T2"])),
                    (self.delta, (at["g"], at["m"], at["S"])), (self.eps, (at["m"], at["g"], at["U"]))]
        linear = []
        if self.coupled:
            linear = [(np.einsum("abc,b->ac", self.alpha, self.theta), (at["T2"], at["T3"])),
                      (np.einsum("abc,b->ac", self.p, self.theta), (at["U"], at["V"]))]
        b_idx, b_val = _entries(bilinear)
        l_idx, l_val = _entries(linear)

        head_i = np.zeros(_kr.TI_HEADER, dtype=np.int64)
        head_i[_kr.TI_NB], head_i[_kr.TI_NC], head_i[_kr.TI_NR] = nB, nC, nR
        head_i[_kr.TI_K], head_i[_kr.TI_N] = self.K, self.N
        head_i[_kr.TI_LABEL] = self.label
        head_i[_kr.TI_COUPLED] = int(self.coupled)
        head_i[_kr.TI_NNZ_BILINEAR], head_i[_kr.TI_NNZ_LINEAR] = len(b_val), len(l_val)
        head_i[_kr.TI_OFF_BILINEAR] = _kr.TI_HEADER
        head_i[_kr.TI_OFF_LINEAR] = _kr.TI_HEADER + b_idx.size
        head_f = np.zeros(_kr.TF_HEADER)
        head_f[_kr.TF_WEIGHT] = self.weight
        head_f[_kr.TF_WEIGHT_SUM] = self.weight * self.N
        parts_f, off_f = [head_f], _kr.TF_HEADER
        for slot, vec in ((_kr.TI_OFF_COLV, self.col_valency), (_kr.TI_OFF_ROWV, self.row_valency),
                          (_kr.TI_OFF_TRACE, self.theta_pinv * self.R_count), (_kr.TI_OFF_BVAL, b_val),
                          (_kr.TI_OFF_LVAL, l_val)):
            head_i[slot] = off_f
            parts_f.append(np.asarray(vec, dtype=float))
            off_f += len(vec)
        tab_i = np.concatenate([head_i, b_idx.ravel(), l_idx.ravel()]).astype(np.int64)
        return np.ascontiguousarray(tab_i), np.ascontiguousarray(np.concatenate(parts_f))

    # -- states -----------------------------------------------------------------------------------
    def isotropic(self, scale: float) -> np.ndarray:
        """The reduced state of M = 0, G_W = s² I, G_H = s² I (b = 0): the d → ∞ limit of
        ``model.init(d, scale=s)``.

        Raises:
            ValueError: ``scale`` negative or not finite.
        """
        s = as_nonnegative(scale, "scale")
        nB, nC, _ = self.sizes
        y = np.zeros(self.size)
        y[nB] = s * s          # C_0 = I
        y[nB + nC] = s * s     # R_0 = I
        return y

    def project(self, state, *, strict: bool = True, rtol: float = PROJECT_RTOL):
        """Relation coefficients of a Gram state: the mean of each matrix over each relation
        (the orthogonal projection on the span).

        Arguments:
            state: a :class:`ufm.GramState` (or a :class:`ufm.State`, mapped to its Grams).
            strict: raise when the state is not in the span; ``strict=False`` projects it.
            rtol: largest accepted relative residual (max |X − proj X| / max |X| over M, G_W,
                G_H and b).

        Returns:
            (y, residual): the reduced state and the relative residual of the projection.

        Raises:
            TypeError: not a State/GramState.
            ValueError: wrong sizes, a bias present or missing against the model, or (strict)
                a residual above ``rtol``.
        """
        from .models import GramState, State
        if isinstance(state, State):
            state = state.grams()
        if not isinstance(state, GramState):
            raise TypeError(f"state: expected a ufm.GramState or ufm.State, got {type(state).__name__}")
        if state.M.shape != (self.K, self.N):
            raise ValueError(f"state: M must have shape ({self.K}, {self.N}), got {state.M.shape}")
        if self.bias != (state.b is not None):
            raise ValueError("state: the model has a bias but the state has b = None" if self.bias else
                             "state: the state has a bias b but the model has bias=False")
        m, r1 = _project_matrix(state.M, self.B_index, self.B_count)
        w, r2 = _project_matrix(state.gram_W, self.C_index, self.C_count)
        h, r3 = _project_matrix(state.gram_H, self.R_index, self.R_count)
        parts, residual = [m, w, h], max(r1, r2, r3)
        if self.bias:
            b = np.asarray(state.b, dtype=float)
            parts.append([b.mean()])
            residual = max(residual, _relative(b - b.mean(), b))
        y = np.concatenate(parts)
        if strict and residual > rtol:
            raise ValueError(f"state: not in the span of the scheme's relations (relative residual {residual:.2e} "
                             f"> {rtol:.0e}); a symmetric start such as isotropic Grams is, a random finite-width "
                             "state is not — project it explicitly (strict=False) to integrate its symmetric part")
        return y, residual

    def expand(self, y):
        """Full matrices of reduced state(s) ``y`` (shape (..., size)).

        Returns:
            (M (..., K, N), G_W (..., K, K), G_H (..., N, N), b (..., K) or None); M excludes
            the bias, as in :class:`ufm.GramState`.

        Raises:
            ValueError: the last axis of ``y`` is not :attr:`size`.
        """
        y = as_float_array(y, "y", ndim=None)
        if y.ndim < 1 or y.shape[-1] != self.size:
            raise ValueError(f"y: expected a last axis of length {self.size} (the reduced state), got shape {y.shape}")
        m, w, h, b = self.split(y)
        M = m[..., self.B_index]
        GW = w[..., self.C_index]
        GH = h[..., self.R_index]
        bb = None if b is None else np.repeat(b[..., None], self.K, axis=-1)
        return M, GW, GH, bb

    def gram_state(self, y):
        """The :class:`ufm.GramState` of one reduced state."""
        from .models import GramState
        M, GW, GH, b = self.expand(np.asarray(y, dtype=float).reshape(self.size))
        return GramState(M, GW, GH, b)

    def __repr__(self):
        nB, nC, nR = self.sizes
        return (f"Reduction(K={self.K}, N={self.N}, loss={self.loss!r}, bias={self.bias}, relations B/C/R = "
                f"{nB}/{nC}/{nR}, coupled={self.coupled}, state size {self.size})")


# ---------------------------------------------------------------------------------------------
# slow references: expand, full Gram-space numpy reference, project back
# ---------------------------------------------------------------------------------------------

def reference_field(reduction: Reduction, y, model):
    """The reduced field the obvious way: expand ``y``, apply :func:`ufm.reference.vector_field`
    in Gram space, project back.

    Returns:
        (dy, residual): the reduced derivative and the relative residual of the projection of
        the full field (rounding-level when the span is invariant).
    """
    from .reference import vector_field
    full = vector_field(model, reduction.gram_state(y))
    return reduction.project(full, strict=False)


def reference_objective(reduction: Reduction, y, model):
    """(objective, data loss) of the expanded state, from :mod:`ufm.reference`."""
    from .reference import data_loss_and_grad, objective
    gs = reduction.gram_state(y)
    return objective(model, gs), data_loss_and_grad(model, gs.logits())[0]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _check_problem(problem) -> None:
    """The conditions that do not need the partitions, each with its own message."""
    kind = problem.target_kind
    if kind != "onehot":
        why = ("soft labels (columns of Y on the simplex) are not a single logit relation" if kind == "soft" else
               "real-valued (regression) targets are not a single logit relation")
        raise ValueError(f"space='reduced' needs one-hot labels, got {kind!r} targets: {why}; use space='gram'")
    w = problem.weights
    if not np.allclose(w, w[0], rtol=1e-12, atol=0):
        raise ValueError(f"space='reduced' needs equal context weights, got weights from {w.min():.6g} to "
                         f"{w.max():.6g}: unequal weights break the symmetry between contexts of one relation; "
                         "use space='gram'")
    if problem.relations is None:
        raise ValueError("space='reduced' needs a problem with an association scheme (problem.relations is None: "
                         "settings.balanced, settings.factorial and settings.hierarchy with equal samples per "
                         "context supply one, or pass relations= to ufm.Problem); use space='gram'")


def _partition_by_counts(counts: np.ndarray):
    """Pairs labelled by their count vector over the context relations (axis 0).

    Returns:
        (index, keys): the relation of each pair and the key (count vector) of each relation,
        ordered by the first context relation with a nonzero count, then by the counts
        (descending), so that the identity / label relation comes first and the others follow
        the order of ``problem.relations``.
    """
    n_rel = counts.shape[0]
    flat = counts.reshape(n_rel, -1).T                       # (pairs, nR)
    keys, inverse = np.unique(flat, axis=0, return_inverse=True)
    first = np.argmax(keys != 0, axis=1)
    order = sorted(range(len(keys)), key=lambda i: (first[i], tuple(-keys[i])))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys))
    index = rank[inverse.ravel()].reshape(counts.shape[1:])
    return index, keys[order]


def _entries(tables):
    """Sparse entries of several tables as (index tuples, values), indices shifted by each
    table's work-buffer offsets (one offset per axis), interleaved by output: the first entry
    of every output, then the second, … (consecutive updates then rarely hit one element,
    which would serialise them)."""
    rows = []
    for table, offsets in tables:
        for pos in np.argwhere(table != 0):
            rows.append((tuple(int(o + q) for o, q in zip(offsets, pos)), float(table[tuple(pos)])))
    if not rows:
        return np.zeros((0, 0), dtype=np.int64), np.zeros(0)
    seen: dict = {}
    rank = []
    for idx, _ in rows:
        rank.append(seen.get(idx[-1], 0))
        seen[idx[-1]] = rank[-1] + 1
    order = sorted(range(len(rows)), key=lambda e: (rank[e], rows[e][0][-1]))
    return (np.array([rows[e][0] for e in order], dtype=np.int64), np.array([rows[e][1] for e in order]))


def _merged_name(key, names) -> str:
    """A class or logit relation is named after the first context relation it collects
    (with samples per context the class identity collects "identity" and "same context")."""
    return names[int(np.flatnonzero(key)[0])]


def _project_matrix(X, index, count):
    """(coefficients, relative residual) of X on the relations given by ``index``."""
    X = np.asarray(X, dtype=float)
    coef = np.bincount(index.ravel(), weights=X.ravel(), minlength=len(count)) / count
    return coef, _relative(X - coef[index], X)


def _relative(residual, X) -> float:
    scale = float(np.abs(X).max()) if np.size(X) else 0.0
    r = float(np.abs(residual).max()) if np.size(residual) else 0.0
    return 0.0 if r == 0.0 else r / max(scale, 1e-300)


def _structure_constants(left, right, index, n_out, what, side):
    """table[a, b, c] with left_a @ right_b = Σ_c table[a, b, c] E_c, E_c the relations of ``index``.

    The products are integer count matrices, so a product in the span is exactly constant on
    every relation: its coefficient is its value at any entry of the relation, and any other
    value anywhere means the relations are not closed under the products the Gram ODE takes.

    Raises:
        ValueError: a product leaves the span (names the product and the residual).
    """
    flat = index.ravel()
    first = np.full(n_out, -1)
    first[flat[::-1]] = np.arange(flat.size)[::-1]           # one entry of each relation
    table = np.zeros((left.shape[0], right.shape[0], n_out))
    for a in range(left.shape[0]):                           # one left factor at a time: memory O(nR·N²)
        prod = np.matmul(left[a][None], right).reshape(right.shape[0], -1)
        coef = prod[:, first]
        resid = np.abs(prod - coef[:, flat]).max(axis=1)
        if resid.max() > 0.5:                                # counts: anything but 0 is a failure
            b = int(np.argmax(resid))
            raise ValueError(f"space='reduced' needs the relations to be closed under the products of the Gram ODE, "
                             f"but {what} for a = {a}, b = {b} is not in the span of the {side} relations (max "
                             f"residual {resid.max():.3g} on integer counts): problem.relations is not an "
                             "association scheme compatible with the labels; use space='gram'")
        table[a] = coef
    return table
