"""Symbolic Kronecker algebra of identity and all-ones factors, with symbolic sizes.

Every matrix that the symmetric settings need (relation matrices, labels, attribute kernels)
is a sum of Kronecker products ``c · X_1 ⊗ X_2 ⊗ … ⊗ X_F`` whose factors are taken from

    q×q :  I (identity), J (all ones)          "sq"
    1×q :  u = 1ᵀ (a row of ones)               "row"
    q×1 :  v = 1  (a column of ones)            "col"
    1×1 :  1                                    "one"

with q a *symbol*. Products factor by factor follow from J² = qJ, Jv = qv, uJ = qu, uv = q,
vu = J, so the algebra is closed and exact for every value of the sizes. This is what lets
:mod:`ufm.theory.scheme` derive structure constants, eigenvalues and multiplicities of the
association schemes as polynomials in the sizes instead of for one number.
"""

from __future__ import annotations

from functools import reduce as _fold

import numpy as np
import sympy as sp

__all__ = ["KronElement", "identity", "ones", "product_element"]

# (kind_left, kind_right) -> kind of the product, and the product of basis labels
_PRODUCT_KIND = {
    ("sq", "sq"): "sq", ("sq", "col"): "col", ("row", "sq"): "row", ("row", "col"): "one",
    ("col", "row"): "sq", ("one", "row"): "row", ("col", "one"): "col", ("one", "one"): "one",
}
_BASIS = {"sq": ("I", "J"), "row": ("u",), "col": ("v",), "one": ("1",)}
_TRANSPOSE_KIND = {"sq": "sq", "row": "col", "col": "row", "one": "one"}
_TRANSPOSE_LABEL = {"I": "I", "J": "J", "u": "v", "v": "u", "1": "1"}


def _label_product(a: str, b: str, q):
    """(coefficient, label) of the product of two basis labels of one factor of size q."""
    if a == "I":
        return sp.Integer(1), b
    if b == "I":
        return sp.Integer(1), a
    table = {("J", "J"): (q, "J"), ("J", "v"): (q, "v"), ("u", "J"): (q, "u"),
             ("u", "v"): (q, "1"), ("v", "u"): (sp.Integer(1), "J"),
             ("1", "u"): (sp.Integer(1), "u"), ("v", "1"): (sp.Integer(1), "v"),
             ("1", "1"): (sp.Integer(1), "1")}
    return table[(a, b)]


class KronElement:
    """A linear combination of Kronecker monomials with symbolic factor sizes.

    Arguments:
        sizes: tuple of sympy expressions, the size q_f of each factor.
        kinds: tuple of factor kinds (``"sq"``, ``"row"``, ``"col"``, ``"one"``).
        terms: mapping from a tuple of basis labels (one per factor) to a sympy coefficient.

    Raises:
        ValueError: a label that does not belong to its factor's kind.
    """

    __slots__ = ("sizes", "kinds", "terms")

    def __init__(self, sizes, kinds, terms):
        self.sizes = tuple(sizes)
        self.kinds = tuple(kinds)
        clean = {}
        for labels, c in terms.items():
            if len(labels) != len(self.kinds):
                raise ValueError(f"terms: expected {len(self.kinds)} labels, got {labels!r}")
            for lab, kind in zip(labels, self.kinds):
                if lab not in _BASIS[kind]:
                    raise ValueError(f"terms: label {lab!r} does not belong to a {kind!r} factor")
            c = sp.expand(sp.sympify(c))
            if c != 0:
                clean[tuple(labels)] = sp.expand(clean.get(tuple(labels), 0) + c)
        self.terms = {k: v for k, v in clean.items() if v != 0}

    # -- arithmetic ---------------------------------------------------------------------------
    def _same_space(self, other: "KronElement"):
        if self.kinds != other.kinds or self.sizes != other.sizes:
            raise ValueError("cannot add elements of different shapes")

    def __add__(self, other):
        self._same_space(other)
        terms = dict(self.terms)
        for k, v in other.terms.items():
            terms[k] = terms.get(k, 0) + v
        return KronElement(self.sizes, self.kinds, terms)

    def __neg__(self):
        return KronElement(self.sizes, self.kinds, {k: -v for k, v in self.terms.items()})

    def __sub__(self, other):
        return self + (-other)

    def __mul__(self, scalar):
        return KronElement(self.sizes, self.kinds, {k: v * scalar for k, v in self.terms.items()})

    __rmul__ = __mul__

    def __matmul__(self, other: "KronElement") -> "KronElement":
        """Matrix product, computed factor by factor (exact for all sizes)."""
        if self.sizes != other.sizes:
            raise ValueError("cannot multiply elements with different factor sizes")
        kinds = []
        for a, b in zip(self.kinds, other.kinds):
            if (a, b) not in _PRODUCT_KIND:
                raise ValueError(f"incompatible factor shapes {a!r} @ {b!r}")
            kinds.append(_PRODUCT_KIND[(a, b)])
        terms: dict = {}
        for la, ca in self.terms.items():
            for lb, cb in other.terms.items():
                coef = ca * cb
                labels = []
                for x, y, q in zip(la, lb, self.sizes):
                    c, lab = _label_product(x, y, q)
                    coef = coef * c
                    labels.append(lab)
                key = tuple(labels)
                terms[key] = terms.get(key, 0) + coef
        return KronElement(self.sizes, tuple(kinds), terms)

    @property
    def T(self) -> "KronElement":
        """Transpose (factor by factor)."""
        kinds = tuple(_TRANSPOSE_KIND[k] for k in self.kinds)
        terms = {tuple(_TRANSPOSE_LABEL[x] for x in lab): c for lab, c in self.terms.items()}
        return KronElement(self.sizes, kinds, terms)

    # -- evaluation -----------------------------------------------------------------------------
    def shape(self):
        """(rows, cols) as sympy expressions."""
        rows, cols = sp.Integer(1), sp.Integer(1)
        for kind, q in zip(self.kinds, self.sizes):
            rows *= q if kind in ("sq", "col") else 1
            cols *= q if kind in ("sq", "row") else 1
        return rows, cols

    def to_matrix(self, values: dict) -> np.ndarray:
        """The numeric matrix for concrete sizes ``values`` (symbol -> int).

        Raises:
            ValueError: a size or coefficient that does not evaluate to a number.
        """
        qs = [int(sp.sympify(q).subs(values)) for q in self.sizes]
        rows = int(np.prod([q if k in ("sq", "col") else 1 for k, q in zip(self.kinds, qs)]))
        cols = int(np.prod([q if k in ("sq", "row") else 1 for k, q in zip(self.kinds, qs)]))
        out = np.zeros((rows, cols))
        for labels, c in self.terms.items():
            mats = []
            for lab, q in zip(labels, qs):
                mats.append({"I": np.eye(q), "J": np.ones((q, q)), "u": np.ones((1, q)),
                             "v": np.ones((q, 1)), "1": np.ones((1, 1))}[lab])
            out += float(sp.sympify(c).subs(values)) * _fold(np.kron, mats, np.ones((1, 1)))
        return out

    def eigenvalue(self, character) -> sp.Expr:
        """Eigenvalue on the product eigenspace ``character`` (square elements only).

        ``character`` has one entry per factor: ``"c"`` (the constant vector of that factor)
        or ``"z"`` (vectors summing to zero), ignored for ``"one"`` factors. On it, I acts as 1
        and J as q (constant) or 0 (zero-sum), so a monomial acts as the product.
        """
        if any(k not in ("sq", "one") for k in self.kinds):
            raise ValueError("eigenvalue: only square elements have eigenvalues")
        total = sp.Integer(0)
        for labels, c in self.terms.items():
            val = c
            for lab, ch, q in zip(labels, character, self.sizes):
                if lab == "J":
                    val = val * (q if ch == "c" else 0)
            total += val
        return sp.expand(total)

    def __repr__(self) -> str:
        parts = [f"{c}·" + "⊗".join(lab) for lab, c in sorted(self.terms.items())]
        return "KronElement(" + (" + ".join(parts) or "0") + ")"


def identity(sizes, kinds) -> KronElement:
    """⊗ I (with the only label on non-square factors)."""
    return KronElement(sizes, kinds, {tuple("I" if k == "sq" else _BASIS[k][0] for k in kinds): 1})


def ones(sizes, kinds) -> KronElement:
    """The all-ones matrix of this shape, ⊗ J."""
    return KronElement(sizes, kinds, {tuple("J" if k == "sq" else _BASIS[k][0] for k in kinds): 1})


def product_element(sizes, kinds, choice) -> KronElement:
    """⊗_f E_f with E_f = I ("eq"), J − I ("ne") or J ("any") for square factors.

    Arguments:
        choice: one of "eq", "ne", "any" per factor (ignored for non-square factors).
    """
    elems = []
    for kind, ch in zip(kinds, choice):
        if kind != "sq":
            elems.append({_BASIS[kind][0]: sp.Integer(1)})
        elif ch == "eq":
            elems.append({"I": sp.Integer(1)})
        elif ch == "ne":
            elems.append({"J": sp.Integer(1), "I": sp.Integer(-1)})
        elif ch == "any":
            elems.append({"J": sp.Integer(1)})
        else:
            raise ValueError(f"choice: expected 'eq', 'ne' or 'any', got {ch!r}")
    terms = {(): sp.Integer(1)}
    for e in elems:
        terms = {k + (lab,): c * d for k, c in terms.items() for lab, d in e.items()}
    return KronElement(sizes, kinds, terms)
