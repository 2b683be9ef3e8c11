"""Association schemes of the symmetric settings, derived symbolically in their sizes.

The settings with a symmetry (``settings.balanced``, ``settings.factorial``,
``settings.hierarchy``, with or without several samples per context) have relation matrices
that are Kronecker products of I, J − I and J over the factors of the context index
(attribute values, tree digits, the sample index). :class:`Scheme` builds them in
:mod:`~ufm.theory.algebra` with symbolic factor sizes and derives:

* the three relation bases the Gram-space ODE lives in — contexts (N×N, R_a), classes (K×K,
  C_a) and logits (K×N, B_a; B_label = Y) — with one-hot labels, class k is the context
  combination k, so the class side uses the same scheme with the sample factor dropped;
* the structure constants of every product the Gram ODE takes
  (R_aR_b, B_aR_b, C_aB_b, B_aB_bᵀ, B_aᵀB_b), the valencies, and the attribute kernel AᵀA in
  the relation basis;
* the eigenmatrix P (P[i, a] = eigenvalue of R_a on the common eigenspace V_i) and the
  multiplicities, from the product characters: on a factor, I acts as 1 and J as q on the
  constant vector and as 0 on zero-sum vectors. No numerical eigensolver is involved.

:func:`bind` matches a concrete :class:`~ufm.problems.Problem` to a family, giving a
:class:`BoundScheme` with the numeric relation matrices in the scheme's order, the size
values, and the label permutation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import sympy as sp

from .algebra import KronElement, product_element

__all__ = ["Scheme", "BoundScheme", "factorial_scheme", "hierarchy_scheme", "bind"]


def _sum(elems):
    out = elems[0]
    for e in elems[1:]:
        out = out + e
    return out


@dataclass(eq=False)
class Scheme:
    """A symmetric setting's relation algebra with symbolic sizes (see the module docstring).

    Attributes:
        family: ``"factorial"`` or ``"hierarchy"``.
        n_factors: F (attributes) or D (tree depth).
        samples: whether contexts carry a sample index (n > 1 samples per context).
        sizes: the distinct size symbols (e.g. (q_1, q_2), (K, n), (q,)).
        factor_sizes: the size of each factor (class factors, then n if ``samples``).
        R, C, B: context, class and logit relation elements (identity first; ``B[label] = Y``).
        R_names, C_names, B_names: their names.
        label: index of Y among the B's.
        attribute: AᵀA as an element of the context algebra (number of shared attributes).
        K, N: sympy expressions of the sizes.
    """

    family: str
    n_factors: int
    samples: bool
    sizes: tuple
    factor_sizes: tuple
    R: tuple
    C: tuple
    B: tuple
    R_names: tuple
    C_names: tuple
    B_names: tuple
    label: int
    attribute: KronElement | None
    K: sp.Expr
    N: sp.Expr
    characters_R: tuple = field(default=())
    characters_C: tuple = field(default=())

    # -- products in a basis ------------------------------------------------------------------
    @staticmethod
    def _solver(basis):
        """Monomial coordinates of the basis and a left inverse (exact rationals)."""
        monos = sorted({lab for e in basis for lab in e.terms})
        A = sp.Matrix([[e.terms.get(m, 0) for e in basis] for m in monos])
        left = (A.T * A).inv() * A.T
        return monos, A, left

    def express(self, X: KronElement, which: str) -> tuple:
        """Coefficients c with X = Σ_a c_a E_a in basis ``which`` ("R", "C" or "B").

        Raises:
            ValueError: X is not in the span (the algebra would not be closed).
        """
        monos, A, left = self._solvers[which]
        extra = set(X.terms) - set(monos)
        if extra:
            raise ValueError(f"express: element not in the span of the {which} relations")
        x = sp.Matrix([X.terms.get(m, 0) for m in monos])
        c = (left * x).applyfunc(sp.expand)
        if any(sp.expand(v) != 0 for v in (A * c - x)):
            raise ValueError(f"express: element not in the span of the {which} relations")
        return tuple(c)

    @cached_property
    def _solvers(self):
        return {"R": self._solver(self.R), "C": self._solver(self.C), "B": self._solver(self.B)}

    def _table(self, left, right, which, transpose=None):
        out = []
        for a in left:
            row = []
            for b in right:
                x = a.T if transpose == "left" else a
                y = b.T if transpose == "right" else b
                row.append(self.express(x @ y, which))
            out.append(tuple(row))
        return tuple(out)

    @cached_property
    def p(self):
        """R_a R_b = Σ_c p[a][b][c] R_c (intersection numbers)."""
        return self._table(self.R, self.R, "R")

    @cached_property
    def alpha(self):
        """B_a R_b = Σ_c alpha[a][b][c] B_c."""
        return self._table(self.B, self.R, "B")

    @cached_property
    def gamma(self):
        """C_a B_b = Σ_c gamma[a][b][c] B_c."""
        return self._table(self.C, self.B, "B")

    @cached_property
    def delta(self):
        """B_a B_bᵀ = Σ_c delta[a][b][c] C_c."""
        return self._table(self.B, self.B, "C", transpose="right")

    @cached_property
    def eps(self):
        """B_aᵀ B_b = Σ_c eps[a][b][c] R_c."""
        return self._table(self.B, self.B, "R", transpose="left")

    @staticmethod
    def _line_sum(e: KronElement, axis: str):
        """Row sums (axis="row") or column sums (axis="col"), constant for these elements."""
        total = sp.Integer(0)
        for labels, c in e.terms.items():
            v = c
            for lab, q in zip(labels, e.sizes):
                if lab == "J" or (lab == "u" and axis == "row") or (lab == "v" and axis == "col"):
                    v = v * q
            total += v
        return sp.expand(total)

    @cached_property
    def col_valency(self):
        """Number of entries of B_a in each column (the same for every column)."""
        return tuple(self._line_sum(b, "col") for b in self.B)

    @cached_property
    def row_valency(self):
        """Number of entries of B_a in each row."""
        return tuple(self._line_sum(b, "row") for b in self.B)

    @cached_property
    def valency(self):
        """Valencies of the context relations (entries of R_a per row)."""
        return tuple(self._line_sum(r, "row") for r in self.R)

    @cached_property
    def class_valency(self):
        return tuple(self._line_sum(c, "row") for c in self.C)

    @cached_property
    def attribute_coefficients(self):
        """AᵀA = Σ_a s_a R_a (s_a = attributes shared by a pair in relation a)."""
        if self.attribute is None:
            return None
        return self.express(self.attribute, "R")

    # -- spectra ------------------------------------------------------------------------------
    def _character_order(self, ch):
        """Presentation order: constant first, then coarse to fine, within-context last."""
        F = self.n_factors
        within = len(ch) > F and ch[F] == "z"
        T = [f for f in range(F) if ch[f] == "z"]
        if self.family == "hierarchy":
            return (within, max(T) + 1 if T else 0)
        return (within, len(T), T)

    def _eigen(self, basis, characters, names_of):
        """Merge product characters with equal eigenvalues on every basis element."""
        groups: list = []
        for ch in sorted(characters, key=self._character_order):
            vec = tuple(e.eigenvalue(ch) for e in basis)
            for g in groups:
                if all(sp.expand(x - y) == 0 for x, y in zip(g["vec"], vec)):
                    g["chars"].append(ch)
                    break
            else:
                groups.append({"vec": vec, "chars": [ch]})
        P, mult, names = [], [], []
        for g in groups:
            P.append(list(g["vec"]))
            m = sp.Integer(0)
            for ch in g["chars"]:
                term = sp.Integer(1)
                for c, q in zip(ch, self.factor_sizes):
                    if c == "z":
                        term *= (q - 1)
                m += term
            mult.append(sp.factor(m))
            names.append(names_of(g["chars"]))
        return sp.Matrix(P), tuple(mult), tuple(names)

    @cached_property
    def eigen_R(self):
        """(P, multiplicities, names) of the context scheme: P[i, a] = eigenvalue of R_a on V_i."""
        return self._eigen(self.R, self.characters_R, self._eigen_name)

    @cached_property
    def eigen_C(self):
        """(P, multiplicities, names) of the class scheme."""
        return self._eigen(self.C, self.characters_C, self._eigen_name)

    def _eigen_name(self, chars):
        F = self.n_factors
        if self.samples and all(ch[F] == "z" for ch in chars) and len(chars) > 0 and len(self.factor_sizes) > F:
            return "within context" if self.family != "factorial" or F > 1 else "within class"
        ch = chars[0]
        T = [f for f in range(F) if ch[f] == "z"]
        if not T:
            return "constant"
        if self.family == "hierarchy":
            return f"level {max(T) + 1}"
        if F == 1:
            return "between classes"
        if len(T) == 1:
            return f"attribute {T[0]}"
        return "interaction " + ",".join(str(f) for f in T)

    def spectrum(self, coefficients, side: str = "R"):
        """Eigenvalues (sympy) of Σ_a c_a R_a (side "R") or Σ_a c_a C_a (side "C").

        Returns:
            list of (name, eigenvalue, multiplicity) per common eigenspace.
        """
        P, mult, names = self.eigen_R if side == "R" else self.eigen_C
        vals = P * sp.Matrix(list(coefficients))
        return [(nm, sp.simplify(v), m) for nm, v, m in zip(names, vals, mult)]

    def __repr__(self):
        return (f"Scheme({self.family}, factors={self.n_factors}, samples={self.samples}, "
                f"sizes={self.sizes}, relations={len(self.R)})")


def _kinds(F: int, samples: bool):
    ctx = ("sq",) * (F + samples)
    cls = ("sq",) * F + (("one",) if samples else ())
    logit = ("sq",) * F + (("row",) if samples else ())
    return ctx, cls, logit


def _characters(F: int, samples: bool, side: str):
    base = list(itertools.product("cz", repeat=F))
    if not samples:
        return tuple(base)
    if side == "R":
        return tuple(ch + (s,) for ch in base for s in "cz")
    return tuple(ch + ("c",) for ch in base)


def _build(family, F, samples, sizes, factor_sizes, choices_class, class_names, attribute_terms):
    """Common construction: relation elements from per-relation factor choices."""
    ctx_k, cls_k, log_k = _kinds(F, samples)
    R, R_names, C, C_names, B, B_names = [], [], [], [], [], []
    for choice, name in zip(choices_class, class_names):
        C.append(product_element(factor_sizes, cls_k, choice + (("any",) if samples else ())))
        C_names.append(name)
        B.append(product_element(factor_sizes, log_k, choice + (("any",) if samples else ())))
        B_names.append(name)
        if not samples:
            R.append(product_element(factor_sizes, ctx_k, choice))
            R_names.append(name)
        elif all(c == "eq" for c in choice):
            R.append(product_element(factor_sizes, ctx_k, choice + ("eq",)))
            R_names.append("identity")
            R.append(product_element(factor_sizes, ctx_k, choice + ("ne",)))
            R_names.append("same context" if F > 1 or family == "hierarchy" else "same class")
        else:
            R.append(product_element(factor_sizes, ctx_k, choice + ("any",)))
            R_names.append(name)
    attribute = None
    if attribute_terms:
        attribute = _sum([KronElement(factor_sizes, ctx_k, {lab + (("J",) if samples else ()): 1})
                          for lab in attribute_terms])
    N = sp.Integer(1)
    for q in factor_sizes:
        N *= q
    Kx = sp.Integer(1)
    for q in factor_sizes[:F]:
        Kx *= q
    return Scheme(family=family, n_factors=F, samples=samples, sizes=sizes, factor_sizes=factor_sizes,
                  R=tuple(R), C=tuple(C), B=tuple(B), R_names=tuple(R_names), C_names=tuple(C_names),
                  B_names=tuple(B_names), label=0, attribute=attribute, K=Kx, N=N,
                  characters_R=_characters(F, samples, "R"), characters_C=_characters(F, samples, "C"))


@lru_cache(maxsize=None)
def factorial_scheme(F: int, samples: bool = False) -> Scheme:
    """The factorial scheme: contexts = all combinations of F attributes with q_f values.

    Two contexts are in relation "agree on S" when their attribute values agree exactly on
    the attributes in S. F = 1 with samples is the balanced classification problem
    (symbols K, n). Relations: identity first, then S by decreasing size.

    Arguments:
        F: number of attributes, >= 1.
        samples: whether each context has n samples (relations "identity" and "same
            context" then split the diagonal blocks).
    """
    if F < 1:
        raise ValueError(f"F: expected >= 1 attribute, got {F}")
    if F == 1:
        q = (sp.Symbol("K", positive=True, integer=True),)
    else:
        q = tuple(sp.Symbol(f"q_{f + 1}", positive=True, integer=True) for f in range(F))
    nsym = (sp.Symbol("n", positive=True, integer=True),) if samples else ()
    subsets = sorted(itertools.chain.from_iterable(itertools.combinations(range(F), k) for k in range(F + 1)),
                     key=lambda S: (-len(S), S))
    choices = [tuple("eq" if f in S else "ne" for f in range(F)) for S in subsets]
    if F == 1:
        names = ["identity", "different class"]
    else:
        names = ["identity" if len(S) == F else "agree on none" if not S else
                 "agree on " + ",".join(str(f) for f in S) for S in subsets]
    attribute_terms = [tuple("I" if g == f else "J" for g in range(F)) for f in range(F)]
    return _build("factorial", F, samples, q + nsym, q + nsym, choices, names, attribute_terms)


@lru_cache(maxsize=None)
def hierarchy_scheme(D: int, samples: bool = False) -> Scheme:
    """The hierarchy scheme: contexts = leaves of a tree of depth D and branching q.

    Relations: identity, then "LCA at level l" for l = D − 1 … 0 (the first l digits of the
    two leaves agree and digit l + 1 differs). The attributes are the ancestors at levels
    1 … D − 1, so AᵀA[i, j] = number of levels l >= 1 at which the ancestors agree.
    """
    if D < 2:
        raise ValueError(f"D: expected depth >= 2, got {D}")
    q = sp.Symbol("q", positive=True, integer=True)
    nsym = (sp.Symbol("n", positive=True, integer=True),) if samples else ()
    factor_sizes = (q,) * D + nsym
    choices = [("eq",) * D] + [tuple("eq" if f < lvl else "ne" if f == lvl else "any" for f in range(D))
                               for lvl in range(D - 1, -1, -1)]
    names = ["identity"] + [f"LCA at level {lvl}" for lvl in range(D - 1, -1, -1)]
    attribute_terms = [tuple("I" if f < lvl else "J" for f in range(D)) for lvl in range(1, D)]
    return _build("hierarchy", D, samples, (q,) + nsym, factor_sizes, choices, names, attribute_terms)


# ---------------------------------------------------------------------------------------------
# binding to a concrete problem
# ---------------------------------------------------------------------------------------------

@dataclass(eq=False)
class BoundScheme:
    """A :class:`Scheme` matched to a concrete problem.

    Attributes:
        scheme: the symbolic scheme.
        values: size symbol -> int.
        R, C, B: numeric relation matrices in the scheme's order; C and B follow the
            problem's label numbering (class k is the problem's label k).
        problem_index: ``problem.relations[problem_index[a]]`` is R[a].
        perm: perm[c] = the problem's label of the scheme's canonical class c.
    """

    scheme: Scheme
    values: dict
    R: tuple
    C: tuple
    B: tuple
    problem_index: tuple
    perm: np.ndarray

    def num(self, expr) -> float:
        """A sympy expression of the sizes, evaluated."""
        return float(sp.sympify(expr).subs(self.values))

    def expand(self, coefficients, side: str) -> np.ndarray:
        """Σ_a c_a E_a for side "R" (N×N), "C" (K×K) or "B" (K×N)."""
        mats = {"R": self.R, "C": self.C, "B": self.B}[side]
        c = np.asarray(coefficients, dtype=float)
        return np.tensordot(c, np.asarray(mats), axes=1)

    def project(self, X, side: str):
        """Relation coefficients of X (the mean of X over each relation's entries) and the
        largest relative spread within a relation (0 when X is in the span)."""
        mats = {"R": self.R, "C": self.C, "B": self.B}[side]
        X = np.asarray(X, dtype=float)
        coef = np.array([X[R > 0].mean() for R in mats])
        resid = X - self.expand(coef, side)
        scale = max(np.abs(X).max(), 1e-300)
        return coef, float(np.abs(resid).max() / scale)

    def coupling_coefficients(self, theta) -> np.ndarray:
        """Θ = Σ_a θ_a R_a; raises ValueError when Θ is not in the span of the relations."""
        if theta is None:
            out = np.zeros(len(self.R))
            out[0] = 1.0
            return out
        coef, spread = self.project(theta, "R")
        if spread > 1e-12:
            raise ValueError(f"coupling: Θ is not in the span of the scheme's relations (relative residual "
                             f"{spread:.2e}); the reduction needs a coupling in the scheme's algebra")
        return coef


def _candidates(problem):
    """(scheme, values) families that could describe the problem."""
    K, N = problem.K, problem.N
    if N % K:
        return []
    n = N // K
    samples = n > 1
    nvals = {sp.Symbol("n", positive=True, integer=True): n} if samples else {}
    out = []
    attrs = problem.attributes
    if attrs is None:
        s = factorial_scheme(1, samples)
        out.append((s, {s.sizes[0]: K, **nvals}))
        return out
    levels = [int(attrs[:, f].max()) + 1 for f in range(attrs.shape[1])]
    if int(np.prod(levels)) == K:
        s = factorial_scheme(len(levels), samples)
        out.append((s, {**{q: v for q, v in zip(s.sizes, levels)}, **nvals}))
    q = levels[0]
    D = len(levels) + 1
    if q >= 2 and all(levels[i] == q ** (i + 1) for i in range(len(levels))) and q ** D == K:
        s = hierarchy_scheme(D, samples)
        out.append((s, {s.sizes[0]: q, **nvals}))
    return out


def bind(problem) -> BoundScheme:
    """Match ``problem`` to a symmetric family and return the :class:`BoundScheme`.

    Requirements: one-hot labels with every class the same size, uniform context weights,
    relation matrices, and a problem that is (up to a relabelling of the classes) one of
    ``settings.balanced``, ``settings.factorial`` or ``settings.hierarchy``.

    Raises:
        TypeError: ``problem`` is not a :class:`ufm.Problem`.
        ValueError: naming what does not fit (no relations, soft labels, weights, no family).
    """
    from .._validation import check_instance
    from ..problems import Problem
    check_instance(problem, "problem", Problem, "a ufm.Problem (e.g. ufm.settings.factorial((3, 3)))")
    if problem.relations is None:
        raise ValueError("problem: has no association scheme (problem.relations is None); the symmetry "
                         "reduction needs balanced, factorial or hierarchy problems")
    if problem.target_kind != "onehot":
        raise ValueError(f"problem: the reduction needs one-hot labels, got {problem.target_kind!r} targets")
    w = problem.weights
    if not np.allclose(w, w[0], rtol=1e-14, atol=0):
        raise ValueError("problem: the reduction needs equal context weights")
    rels = [np.asarray(R) for R in problem.relations]
    for scheme, values in _candidates(problem):
        mats = [e.to_matrix(values) for e in scheme.R]
        if len(mats) != len(rels) or mats[0].shape != rels[0].shape:
            continue
        index = []
        for M in mats:
            hit = [j for j, R in enumerate(rels) if np.array_equal(M, R)]
            if len(hit) != 1:
                break
            index.append(hit[0])
        if len(index) != len(mats) or len(set(index)) != len(index):
            continue
        # labels: canonical class of context i is i // n; the problem's label is a relabelling
        n = problem.N // problem.K
        labels = problem.labels
        perm = labels[::n].copy()
        if not (np.array_equal(np.sort(perm), np.arange(problem.K))
                and np.array_equal(labels, perm[np.arange(problem.N) // n])):
            continue
        if scheme.attribute is not None and "attribute" in problem.similarities:
            if not np.array_equal(scheme.attribute.to_matrix(values), problem.similarities["attribute"]):
                continue
        Pm = np.zeros((problem.K, problem.K))
        Pm[perm, np.arange(problem.K)] = 1.0
        C = tuple(Pm @ e.to_matrix(values) @ Pm.T for e in scheme.C)
        B = tuple(Pm @ e.to_matrix(values) for e in scheme.B)
        if not np.array_equal(B[scheme.label], problem.Y):
            continue
        return BoundScheme(scheme, dict(values), tuple(mats), C, B, tuple(index), perm)
    raise ValueError(f"problem: {problem!r} matches none of the symmetric families (balanced, factorial, "
                     "hierarchy, possibly with samples per context and a label permutation)")
