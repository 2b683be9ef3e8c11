"""Explicit Runge–Kutta methods as data.

A :class:`Solver` is a Butcher tableau plus what the driver needs to use it (an embedded error
estimate, dense output, whether steps adapt). The tableau is validated on construction: it
must be explicit, have consistent nodes (c_i = Σ_j a_ij) and satisfy every order condition up
to its stated ``order`` (checked on all rooted trees, Butcher's theory), so a mistyped
coefficient fails loudly at import time rather than silently degrading the order. The stated
``order`` also drives the generic convergence-order test in ``tests/test_solvers.py``.

The numerical step itself lives in :mod:`ufm.kernels.integrate` and takes these arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["Solver", "DOPRI5", "RK4", "EULER", "SOLVERS", "get_solver", "rooted_trees"]


@lru_cache(maxsize=None)
def rooted_trees(order: int) -> tuple:
    """All rooted trees with ``order`` vertices, as sorted tuples of child subtrees.

    ``()`` is the single vertex; a tree is the sorted tuple of its children's trees.
    """
    if order == 1:
        return ((),)
    out = set()
    # children: a multiset of trees whose sizes add up to order − 1
    for parts in _partitions(order - 1):
        for combo in _tree_products(parts):
            out.add(tuple(sorted(combo)))
    return tuple(sorted(out))


def _partitions(n: int, largest: int | None = None):
    largest = n if largest is None else largest
    if n == 0:
        yield ()
        return
    for k in range(min(n, largest), 0, -1):
        for rest in _partitions(n - k, k):
            yield (k, *rest)


def _tree_products(parts):
    if not parts:
        yield ()
        return
    first, *rest = parts
    for t in rooted_trees(first):
        for others in _tree_products(tuple(rest)):
            yield (t, *others)


def _tree_size(tree) -> int:
    return 1 + sum(_tree_size(c) for c in tree)


def _density(tree) -> int:
    """γ(t): the tree's size times the densities of its subtrees."""
    g = _tree_size(tree)
    for c in tree:
        g *= _density(c)
    return g


def _stage_weights(tree, A):
    """Φ-vector of a tree: 1 for the single vertex, Π_children (A Φ(child)) otherwise."""
    v = np.ones(A.shape[0], dtype=object)
    for c in tree:
        v = v * (A @ _stage_weights(c, A))
    return v


@dataclass(frozen=True)
class Solver:
    """An explicit Runge–Kutta method.

    Arguments:
        name: identifier used by ``ufm.solve(method=name)``.
        A: (s, s) strictly lower-triangular stage coefficients a_ij.
        b: (s,) weights of the propagated solution (order ``order``).
        c: (s,) nodes, c_i = Σ_j a_ij.
        order: classical order of the propagated solution.
        b_error: (s,) weights of the embedded solution (order ``error_order``), or None for a
            fixed-step method.
        error_order: order of the embedded solution.
        dense: (s, q) dense-output coefficients P with
            y(t + θh) = y + h Σ_i k_i Σ_m P[i, m] θ^(m+1), or None.
        dense_order: order of the dense output.

    Raises:
        ValueError: the tableau is not explicit, its nodes are inconsistent, or an order
            condition up to the stated order fails (the message names the failing tree).
    """

    name: str
    A: tuple
    b: tuple
    c: tuple
    order: int
    b_error: tuple | None = None
    error_order: int | None = None
    dense: tuple | None = None
    dense_order: int | None = None
    arrays: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        A = np.array(self.A, dtype=object)
        b = np.array(self.b, dtype=object)
        c = np.array(self.c, dtype=object)
        s = len(b)
        if A.shape != (s, s) or c.shape != (s,):
            raise ValueError(f"{self.name}: expected A (s, s) and c (s,) with s = {s}")
        if any(A[i, j] != 0 for i in range(s) for j in range(i, s)):
            raise ValueError(f"{self.name}: A must be strictly lower triangular (explicit method)")
        for i in range(s):
            if sum(A[i, :]) != c[i]:
                raise ValueError(f"{self.name}: node c[{i}] = {c[i]} differs from Σ_j a_{i}j = {sum(A[i, :])}")
        _check_order(self.name, A, b, self.order, "b")
        if self.b_error is not None:
            _check_order(self.name, A, np.array(self.b_error, dtype=object), self.error_order, "b_error")
        if self.dense is not None:
            P = np.array(self.dense, dtype=object)
            # at θ = 1 the dense output must reproduce the step
            end = P.sum(axis=1)
            if any(end[i] != b[i] for i in range(s)):
                raise ValueError(f"{self.name}: dense output at θ = 1 does not equal the step weights b")
        fl = lambda x: np.array(np.array(x, dtype=object), dtype=np.float64)  # noqa: E731
        arrays = {
            "A": np.ascontiguousarray(fl(A)),
            "b": fl(b),
            "c": fl(c),
            "e": fl(b) - fl(self.b_error) if self.b_error is not None else np.zeros(s),
            "P": np.ascontiguousarray(fl(self.dense)) if self.dense is not None else np.zeros((0, 0)),
        }
        object.__setattr__(self, "arrays", arrays)

    @property
    def adaptive(self) -> bool:
        """True when the method carries an embedded error estimate."""
        return self.b_error is not None

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def fsal(self) -> bool:
        """First-same-as-last: the last stage is evaluated at the new state."""
        s = self.stages
        return self.c[-1] == 1 and all(self.A[s - 1][j] == self.b[j] for j in range(s)) and self.b[-1] == 0

    @property
    def controller_order(self) -> int:
        """Exponent base of the step controller: 1 + the lower order of the embedded pair."""
        return (min(self.order, self.error_order) + 1) if self.adaptive else self.order


def _check_order(name, A, b, order, label):
    for q in range(1, order + 1):
        for tree in rooted_trees(q):
            lhs = sum(b * _stage_weights(tree, A))
            rhs = Fraction(1, _density(tree))
            if Fraction(lhs) != rhs:
                raise ValueError(f"{name}: order condition for tree {tree} (order {q}) fails in {label}: "
                                 f"{lhs} != {rhs}")


F = Fraction

EULER = Solver(name="euler", A=((F(0),),), b=(F(1),), c=(F(0),), order=1)

RK4 = Solver(
    name="rk4",
    A=((F(0), F(0), F(0), F(0)),
       (F(1, 2), F(0), F(0), F(0)),
       (F(0), F(1, 2), F(0), F(0)),
       (F(0), F(0), F(1), F(0))),
    b=(F(1, 6), F(1, 3), F(1, 3), F(1, 6)),
    c=(F(0), F(1, 2), F(1, 2), F(1)),
    order=4,
)

# Dormand & Prince (1980) 5(4), with the 4th-order continuous extension of Shampine (1986)
# in the form used by Hairer's DOPRI5 and scipy's RK45.
DOPRI5 = Solver(
    name="dopri5",
    A=((F(0), F(0), F(0), F(0), F(0), F(0), F(0)),
       (F(1, 5), F(0), F(0), F(0), F(0), F(0), F(0)),
       (F(3, 40), F(9, 40), F(0), F(0), F(0), F(0), F(0)),
       (F(44, 45), F(-56, 15), F(32, 9), F(0), F(0), F(0), F(0)),
       (F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729), F(0), F(0), F(0)),
       (F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656), F(0), F(0)),
       (F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), F(0))),
    b=(F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), F(0)),
    c=(F(0), F(1, 5), F(3, 10), F(4, 5), F(8, 9), F(1), F(1)),
    order=5,
    b_error=(F(5179, 57600), F(0), F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)),
    error_order=4,
    dense=((F(1), F(-8048581381, 2820520608), F(8663915743, 2820520608), F(-12715105075, 11282082432)),
           (F(0), F(0), F(0), F(0)),
           (F(0), F(131558114200, 32700410799), F(-68118460800, 10900136933), F(87487479700, 32700410799)),
           (F(0), F(-1754552775, 470086768), F(14199869525, 1410260304), F(-10690763975, 1880347072)),
           (F(0), F(127303824393, 49829197408), F(-318862633887, 49829197408), F(701980252875, 199316789632)),
           (F(0), F(-282668133, 205662961), F(2019193451, 616988883), F(-1453857185, 822651844)),
           (F(0), F(40617522, 29380423), F(-110615467, 29380423), F(69997945, 29380423))),
    dense_order=4,
)

SOLVERS = {s.name: s for s in (DOPRI5, RK4, EULER)}


def get_solver(method) -> Solver:
    """Look up a solver by name (``"dopri5"``, ``"rk4"``, ``"euler"``) or pass one through."""
    if isinstance(method, Solver):
        return method
    if not isinstance(method, str) or method not in SOLVERS:
        opts = ", ".join(repr(k) for k in SOLVERS)
        raise ValueError(f"method: expected one of {opts} or a ufm.solvers.Solver, got {method!r}")
    return SOLVERS[method]
