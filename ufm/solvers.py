"""Explicit Runge–Kutta methods as data.

A :class:`Solver` is a Butcher tableau plus what the driver needs to use it (an embedded error
estimate, dense output, whether steps adapt). The tableau is validated on construction: it
must be explicit, have consistent nodes (c_i = Σ_j a_ij) and satisfy every order condition up
to its stated ``order`` (checked on all rooted trees, Butcher's theory), and so must its
embedded solutions (``error_order``, ``error3_order``) and its dense output (``dense_order``,
checked as polynomial identities in θ), so a mistyped coefficient fails loudly at import time
rather than silently degrading the order. The stated orders also drive the generic
convergence and accuracy tests (``tests/test_solvers.py``, ``tests/test_accuracy.py``).

Coefficients are exact rationals (:class:`fractions.Fraction`); a method published only as
decimals (DOP853's nodes involve √6; Tsitouras' and Verner's dense stages are given to 17–85
digits) is transcribed digit for digit, as the exact rational of the printed decimal, and its
conditions are checked to within ``tolerance`` (far below float64 rounding and far above the
residual of the printed digits: one wrong digit anywhere in the first 16 fails).

Stages: the first ``stages`` rows of ``A`` make a step. A method whose dense output needs more
(DOP853, Verner's 7(6)) lists them after these: first the stage f(y₁) at the new state
(c = 1, row = b), which the driver evaluates after every accepted step anyway (it is the next
step's first stage), then the dense-only stages, evaluated only when a save time falls inside
the step.

The numerical step itself lives in :mod:`ufm.kernels.integrate` and takes these arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from fractions import Fraction
from functools import cached_property, lru_cache

import numpy as np

__all__ = ["Solver", "DOPRI5", "DOP853", "TSIT5", "VERN7", "RK4", "EULER", "SOLVERS", "AUTO", "get_solver",
           "rooted_trees"]


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


#: True while the shipped tableaux are built: their order conditions are checked by the test
#: suite (``Solver.check_conditions``), not at every import (it took ~0.2 s of ``import ufm``);
#: a user's Solver is always checked on construction.
_DEFERRED_CHECKS = False


class _StageWeights:
    """Φ-vectors of trees for one stage matrix A: 1 for the single vertex, Π_children (A Φ(child))
    otherwise; memoised, since every order condition of every tree reuses its subtrees'.

    Exact and fast: A is scaled to integers by the common denominator D of its entries, and
    Φ(t) is kept as an integer vector over D^k, so no rational is normalised on the way (the
    checks of DOP853's and Verner's tableaux take ~0.05 s instead of ~1.5 s with Fractions).
    """

    def __init__(self, A):
        self.D = math.lcm(*(Fraction(a).denominator for a in A.ravel()))
        self.A = [[int(Fraction(a) * self.D) for a in row] for row in A]
        self.n = len(self.A)
        self.memo = {}

    def __call__(self, tree):
        """(integer vector v, k) with Φ(tree) = v / D^k."""
        out = self.memo.get(tree)
        if out is None:
            v, k = [1] * self.n, 0
            for child in tree:
                cv, ck = self(child)
                v = [vi * sum(a * x for a, x in zip(row, cv)) for vi, row in zip(v, self.A)]
                k += ck + 1
            out = self.memo[tree] = (v, k)
        return out

    def condition(self, w, tree, rhs):
        """Σ_i w_i Φ_i(tree) − rhs, exactly (w: Fractions)."""
        v, k = self(tree)
        dw = math.lcm(*(Fraction(x).denominator for x in w))
        num = sum(int(Fraction(x) * dw) * vi for x, vi in zip(w, v))
        rhs = Fraction(rhs)
        return Fraction(num * rhs.denominator - rhs.numerator * dw * self.D ** k, rhs.denominator * dw * self.D ** k)


def _worst(residuals):
    return max((abs(r) for r in residuals), default=Fraction(0))


def _fractions(x):
    """Nested tuples of numbers or decimal/rational strings → object array of exact Fractions."""
    return np.array(np.vectorize(Fraction, otypes=[object])(np.array(x, dtype=object)), dtype=object)


@dataclass(frozen=True)
class Solver:
    """An explicit Runge–Kutta method.

    Arguments:
        name: identifier used by ``ufm.solve(method=name)``.
        A: (S, S) strictly lower-triangular stage coefficients a_ij (S >= ``stages``, see below).
        b: (s,) weights of the propagated solution (order ``order``).
        c: (S,) nodes, c_i = Σ_j a_ij.
        order: classical order of the propagated solution.
        b_error: (s,) weights of the embedded solution (order ``error_order``), or None for a
            fixed-step method.
        error_order: order of the embedded solution.
        b_error3: (s,) weights of a second, lower-order embedded solution (order
            ``error3_order``) for Hairer's DOP853 error estimate
            err = err₅² / √(err₅² + 0.01 err₃²) (the step error of the order-8 result, so the
            controller's exponent is 1/8), or None.
        error3_order: order of that solution.
        dense: (S, q) dense-output coefficients P with
            y(t + θh) = y + h Σ_i k_i Σ_m P[i, m] θ^(m+1), or None.
        dense_order: order of the dense output (checked for every θ).
        stages: s, the stages of a step (default: len(b)). Rows s … S−1 of A serve only the
            dense output: row s must be the stage at the new state (c = 1, a_sj = b_j), the
            rest are evaluated only when a save falls inside a step.
        tolerance: largest |residual| allowed in any node or order condition (0: exact).
        dense_tolerance: the same for the dense output (default: ``tolerance``).
        beta: memory exponent of the PI step controller, in [0, 0.2] (default 0.04, Hairer's
            DOPRI5; 0 is a plain I controller, Hairer's DOP853 default).
        fac_min, fac_max: bounds of the step ratio h_new / h per step (default 0.2 and 10,
            Hairer's DOPRI5; his DOP853 uses 0.333 and 6).

    Raises:
        ValueError: the tableau is not explicit, its nodes are inconsistent, an order
            condition up to a stated order fails (the message names the failing tree), or the
            controller constants are out of range.
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
    b_error3: tuple | None = None
    error3_order: int | None = None
    stages: int | None = None
    tolerance: Fraction = Fraction(0)
    dense_tolerance: Fraction | None = None
    beta: float = 0.04
    fac_min: float = 0.2
    fac_max: float = 10.0
    arrays: dict = field(init=False, repr=False, compare=False)
    conditions_checked: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self):
        A = _fractions(self.A)
        b = _fractions(self.b)
        c = _fractions(self.c)
        s = len(b)
        if self.stages is None:
            object.__setattr__(self, "stages", s)
        if self.stages != s:
            raise ValueError(f"{self.name}: stages = {self.stages} but b has {s} weights")
        S = A.shape[0] if A.ndim == 2 else -1
        if A.shape != (S, S) or S < s or c.shape != (S,):
            raise ValueError(f"{self.name}: expected A (S, S) and c (S,) with S >= s = {s}, got A {A.shape}, "
                             f"c {c.shape}")
        tol = Fraction(self.tolerance)
        if any(A[i, j] != 0 for i in range(S) for j in range(i, S)):
            raise ValueError(f"{self.name}: A must be strictly lower triangular (explicit method)")
        for i in range(S):
            if abs(sum(A[i, :]) - c[i]) > tol:
                raise ValueError(f"{self.name}: node c[{i}] = {c[i]} differs from Σ_j a_{i}j = {sum(A[i, :])}")
        if S > s and (c[s] != 1 or any(abs(A[s, j] - b[j]) > tol for j in range(s))):
            raise ValueError(f"{self.name}: the first stage after the step's {s} (row {s}) must be f at the new "
                             "state: c = 1 and a_sj = b_j")
        P = _fractions(self.dense) if self.dense is not None else None
        if P is not None and (P.ndim != 2 or P.shape[0] != S):
            raise ValueError(f"{self.name}: dense output must be (S, q) = ({S}, q), got {P.shape}")
        if not (0.0 <= self.beta <= 0.2):
            raise ValueError(f"{self.name}: beta (the PI controller's memory exponent) must be in [0, 0.2], "
                             f"got {self.beta!r}")
        if not (0.0 < self.fac_min < 1.0 < self.fac_max):
            raise ValueError(f"{self.name}: the step-ratio bounds must satisfy 0 < fac_min < 1 < fac_max, got "
                             f"fac_min = {self.fac_min!r}, fac_max = {self.fac_max!r}")
        if _DEFERRED_CHECKS:
            object.__setattr__(self, "conditions_checked", False)
        else:
            self.check_conditions()
        fl = lambda x: np.array(np.array(x, dtype=object), dtype=np.float64)  # noqa: E731
        arrays = {
            "A": np.ascontiguousarray(fl(A)),
            "b": fl(b),
            "c": fl(c),
            "e": fl(b) - fl(_fractions(self.b_error)) if self.b_error is not None else np.zeros(s),
            "e3": fl(b) - fl(_fractions(self.b_error3)) if self.b_error3 is not None else np.zeros(0),
            "P": np.ascontiguousarray(fl(P)) if self.dense is not None else np.zeros((0, 0)),
        }
        # the error weights as differences of the exact weights (b − b̂ loses digits in float64)
        if self.b_error is not None:
            arrays["e"] = fl(b - _fractions(self.b_error))
        if self.b_error3 is not None:
            arrays["e3"] = fl(b - _fractions(self.b_error3))
        object.__setattr__(self, "arrays", arrays)

    def check_conditions(self) -> None:
        """Check every order condition of the tableau (b, the embedded weights, the dense
        output), exactly or to within ``tolerance``; run on construction, except for the
        shipped tableaux, whose checks (~0.2 s of import time) run in the test suite
        (``tests/test_solvers.py``).

        Raises:
            ValueError: an order condition up to a stated order fails (the message names the
                failing tree and the weights).
        """
        A = _fractions(self.A)
        b = _fractions(self.b)
        s = self.stages
        S = A.shape[0]
        tol = Fraction(self.tolerance)
        step = _StageWeights(A[:s, :s])
        _check_order(self.name, step, b, self.order, "b", tol)
        if self.b_error is not None:
            _check_order(self.name, step, _fractions(self.b_error), self.error_order, "b_error", tol)
        if self.b_error3 is not None:
            _check_order(self.name, step, _fractions(self.b_error3), self.error3_order, "b_error3", tol)
        if self.dense is not None:
            P = _fractions(self.dense)
            dtol = tol if self.dense_tolerance is None else Fraction(self.dense_tolerance)
            # at θ = 1 the dense output must reproduce the step
            end = P.sum(axis=1)
            bfull = np.concatenate([b, np.zeros(S - s, dtype=object) + Fraction(0)])
            if _worst(end - bfull) > dtol:
                raise ValueError(f"{self.name}: dense output at θ = 1 does not equal the step weights b")
            _check_dense_order(self.name, _StageWeights(A), P, self.dense_order, dtol)
        object.__setattr__(self, "conditions_checked", True)

    @property
    def adaptive(self) -> bool:
        """True when the method carries an embedded error estimate."""
        return self.b_error is not None

    @property
    def dense_stages(self) -> int:
        """Stages evaluated only for the dense output (beyond the stage at the new state)."""
        return max(len(self.c) - self.stages - 1, 0)

    @cached_property
    def fsal(self) -> bool:
        """First-same-as-last: the last stage of a step is evaluated at the new state."""
        s = self.stages
        return (self.c[s - 1] == 1 and all(Fraction(self.A[s - 1][j]) == Fraction(self.b[j]) for j in range(s))
                and self.b[-1] == 0)

    @cached_property
    def controller_order(self) -> int:
        """Exponent base of the step controller: the power of h in the error estimate.

        1 + the lower order of the embedded pair; with a second estimate of order q₃ (DOP853)
        err₅²/√(err₅² + 0.01 err₃²) ~ h^(2(q₅+1) − (q₃+1)) = h⁸ for q₅ = 5, q₃ = 3.
        """
        if not self.adaptive:
            return self.order
        q = min(self.order, self.error_order) + 1
        if self.b_error3 is not None:
            return 2 * q - (min(self.order, self.error3_order) + 1)
        return q


def _check_order(name, weights, b, order, label, tol=Fraction(0)):
    for q in range(1, order + 1):
        for tree in rooted_trees(q):
            residual = weights.condition(b, tree, Fraction(1, _density(tree)))
            if abs(residual) > tol:
                raise ValueError(f"{name}: order condition for tree {tree} (order {q}) fails in {label}: "
                                 f"residual {float(residual):.3g}")


def _check_dense_order(name, weights, P, order, tol):
    """Σ_i b_i(θ) Φ_i(t) = θ^|t|/γ(t) for every θ: the coefficient of θ^m is [m = |t|]/γ(t)."""
    for q in range(1, order + 1):
        for tree in rooted_trees(q):
            for m in range(P.shape[1]):
                residual = weights.condition(P[:, m], tree, Fraction(1, _density(tree)) if m + 1 == q else 0)
                if abs(residual) > tol:
                    raise ValueError(f"{name}: dense-output order condition for tree {tree} (order {q}) fails at "
                                     f"θ^{m + 1}: residual {float(residual):.3g}")


def _residual_report(solver, dense_order=None) -> dict:
    """Largest |residual| of each family of conditions (for the tolerances' comments and tests);
    ``dense_order`` checks the dense output to another order than the stated one."""
    A = _fractions(solver.A)
    s = solver.stages
    step = _StageWeights(A[:s, :s])
    out = {"nodes": _worst(sum(A[i, :]) - Fraction(solver.c[i]) for i in range(len(solver.c)))}
    for label, w, order in (("b", solver.b, solver.order), ("b_error", solver.b_error, solver.error_order),
                            ("b_error3", solver.b_error3, solver.error3_order)):
        if w is not None:
            w = _fractions(w)
            out[label] = _worst(step.condition(w, t, Fraction(1, _density(t)))
                                for q in range(1, order + 1) for t in rooted_trees(q))
    if solver.dense is not None:
        P = _fractions(solver.dense)
        full = _StageWeights(A)
        out["dense"] = _worst(full.condition(P[:, m], t, Fraction(1, _density(t)) if m + 1 == q else 0)
                              for q in range(1, (dense_order or solver.dense_order) + 1) for t in rooted_trees(q)
                              for m in range(P.shape[1]))
    return out


F = Fraction

# the shipped tableaux: their order conditions are checked in the test suite, not on import
_DEFERRED_CHECKS = True

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

def _sparse_rows(S, rows, width=None):
    """A tableau from {row: ((column, value), ...)}: an S × width tuple of Fractions."""
    width = S if width is None else width
    out = [[F(0)] * width for _ in range(S)]
    for i, entries in rows.items():
        for j, v in entries:
            out[i][j] = F(v)
    return tuple(map(tuple, out))


def _poly_mul(p, q):
    """Product of polynomials given as coefficient lists (constant term first)."""
    out = [F(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def _poly_add(p, q):
    n = max(len(p), len(q))
    return [(p[i] if i < len(p) else F(0)) + (q[i] if i < len(q) else F(0)) for i in range(n)]


# ------------------------------------------------------------------------------------------
# DOP853: Hairer's 8(5,3) pair with its 7th-order dense output (Hairer, Nørsett & Wanner,
# Solving ODEs I, §II.10; the 30-digit coefficients of dop853.f, as in scipy's
# dop853_coefficients.py). 12 stages per step; stage 12 (0-based) is f(y₁) and stages 13–15
# serve the dense output only.
# ------------------------------------------------------------------------------------------

_DOP853_C = ("0.0", "0.526001519587677318785587544488e-01", "0.789002279381515978178381316732e-01", "0.118350341907227396726757197510", "0.281649658092772603273242802490", "0.333333333333333333333333333333", "0.25", "0.307692307692307692307692307692", "0.651282051282051282051282051282", "0.6", "0.857142857142857142857142857142", "1.0", "1.0", "0.1", "0.2", "0.777777777777777777777777777778")
_DOP853_A = {  # row: ((column, a), ...); row 12 is b (the stage f(y1)), rows 13-15 the dense stages
    1: ((0, "5.26001519587677318785587544488e-2"),),
    2: ((0, "1.97250569845378994544595329183e-2"), (1, "5.91751709536136983633785987549e-2"),),
    3: ((0, "2.95875854768068491816892993775e-2"), (2, "8.87627564304205475450678981324e-2"),),
    4: ((0, "2.41365134159266685502369798665e-1"), (2, "-8.84549479328286085344864962717e-1"), (3, "9.24834003261792003115737966543e-1"),),
    5: ((0, "3.7037037037037037037037037037e-2"), (3, "1.70828608729473871279604482173e-1"), (4, "1.25467687566822425016691814123e-1"),),
    6: ((0, "3.7109375e-2"), (3, "1.70252211019544039314978060272e-1"), (4, "6.02165389804559606850219397283e-2"), (5, "-1.7578125e-2"),),
    7: ((0, "3.70920001185047927108779319836e-2"), (3, "1.70383925712239993810214054705e-1"), (4, "1.07262030446373284651809199168e-1"), (5, "-1.53194377486244017527936158236e-2"), (6, "8.27378916381402288758473766002e-3"),),
    8: ((0, "6.24110958716075717114429577812e-1"), (3, "-3.36089262944694129406857109825"), (4, "-8.68219346841726006818189891453e-1"), (5, "2.75920996994467083049415600797e1"), (6, "2.01540675504778934086186788979e1"), (7, "-4.34898841810699588477366255144e1"),),
    9: ((0, "4.77662536438264365890433908527e-1"), (3, "-2.48811461997166764192642586468"), (4, "-5.90290826836842996371446475743e-1"), (5, "2.12300514481811942347288949897e1"), (6, "1.52792336328824235832596922938e1"), (7, "-3.32882109689848629194453265587e1"), (8, "-2.03312017085086261358222928593e-2"),),
    10: ((0, "-9.3714243008598732571704021658e-1"), (3, "5.18637242884406370830023853209"), (4, "1.09143734899672957818500254654"), (5, "-8.14978701074692612513997267357"), (6, "-1.85200656599969598641566180701e1"), (7, "2.27394870993505042818970056734e1"), (8, "2.49360555267965238987089396762"), (9, "-3.0467644718982195003823669022"),),
    11: ((0, "2.27331014751653820792359768449"), (3, "-1.05344954667372501984066689879e1"), (4, "-2.00087205822486249909675718444"), (5, "-1.79589318631187989172765950534e1"), (6, "2.79488845294199600508499808837e1"), (7, "-2.85899827713502369474065508674"), (8, "-8.87285693353062954433549289258"), (9, "1.23605671757943030647266201528e1"), (10, "6.43392746015763530355970484046e-1"),),
    12: ((0, "5.42937341165687622380535766363e-2"), (5, "4.45031289275240888144113950566"), (6, "1.89151789931450038304281599044"), (7, "-5.8012039600105847814672114227"), (8, "3.1116436695781989440891606237e-1"), (9, "-1.52160949662516078556178806805e-1"), (10, "2.01365400804030348374776537501e-1"), (11, "4.47106157277725905176885569043e-2"),),
    13: ((0, "5.61675022830479523392909219681e-2"), (6, "2.53500210216624811088794765333e-1"), (7, "-2.46239037470802489917441475441e-1"), (8, "-1.24191423263816360469010140626e-1"), (9, "1.5329179827876569731206322685e-1"), (10, "8.20105229563468988491666602057e-3"), (11, "7.56789766054569976138603589584e-3"), (12, "-8.298e-3"),),
    14: ((0, "3.18346481635021405060768473261e-2"), (5, "2.83009096723667755288322961402e-2"), (6, "5.35419883074385676223797384372e-2"), (7, "-5.49237485713909884646569340306e-2"), (10, "-1.08347328697249322858509316994e-4"), (11, "3.82571090835658412954920192323e-4"), (12, "-3.40465008687404560802977114492e-4"), (13, "1.41312443674632500278074618366e-1"),),
    15: ((0, "-4.28896301583791923408573538692e-1"), (5, "-4.69762141536116384314449447206"), (6, "7.68342119606259904184240953878"), (7, "4.06898981839711007970213554331"), (8, "3.56727187455281109270669543021e-1"), (12, "-1.39902416515901462129418009734e-3"), (13, "2.9475147891527723389556272149"), (14, "-9.15095847217987001081870187138"),),
}
_DOP853_E5 = ((0, "0.1312004499419488073250102996e-1"), (5, "-0.1225156446376204440720569753e+1"), (6, "-0.4957589496572501915214079952"), (7, "0.1664377182454986536961530415e+1"), (8, "-0.3503288487499736816886487290"), (9, "0.3341791187130174790297318841"), (10, "0.8192320648511571246570742613e-1"), (11, "-0.2235530786388629525884427845e-1"))
_DOP853_BHH = ((0, "0.244094488188976377952755905512"), (8, "0.733846688281611857341361741547"), (11, "0.220588235294117647058823529412e-1"))
_DOP853_D = (
    ((0, "-0.84289382761090128651353491142e+1"), (5, "0.56671495351937776962531783590"), (6, "-0.30689499459498916912797304727e+1"), (7, "0.23846676565120698287728149680e+1"), (8, "0.21170345824450282767155149946e+1"), (9, "-0.87139158377797299206789907490"), (10, "0.22404374302607882758541771650e+1"), (11, "0.63157877876946881815570249290"), (12, "-0.88990336451333310820698117400e-1"), (13, "0.18148505520854727256656404962e+2"), (14, "-0.91946323924783554000451984436e+1"), (15, "-0.44360363875948939664310572000e+1")),
    ((0, "0.10427508642579134603413151009e+2"), (5, "0.24228349177525818288430175319e+3"), (6, "0.16520045171727028198505394887e+3"), (7, "-0.37454675472269020279518312152e+3"), (8, "-0.22113666853125306036270938578e+2"), (9, "0.77334326684722638389603898808e+1"), (10, "-0.30674084731089398182061213626e+2"), (11, "-0.93321305264302278729567221706e+1"), (12, "0.15697238121770843886131091075e+2"), (13, "-0.31139403219565177677282850411e+2"), (14, "-0.93529243588444783865713862664e+1"), (15, "0.35816841486394083752465898540e+2")),
    ((0, "0.19985053242002433820987653617e+2"), (5, "-0.38703730874935176555105901742e+3"), (6, "-0.18917813819516756882830838328e+3"), (7, "0.52780815920542364900561016686e+3"), (8, "-0.11573902539959630126141871134e+2"), (9, "0.68812326946963000169666922661e+1"), (10, "-0.10006050966910838403183860980e+1"), (11, "0.77771377980534432092869265740"), (12, "-0.27782057523535084065932004339e+1"), (13, "-0.60196695231264120758267380846e+2"), (14, "0.84320405506677161018159903784e+2"), (15, "0.11992291136182789328035130030e+2")),
    ((0, "-0.25693933462703749003312586129e+2"), (5, "-0.15418974869023643374053993627e+3"), (6, "-0.23152937917604549567536039109e+3"), (7, "0.35763911791061412378285349910e+3"), (8, "0.93405324183624310003907691704e+2"), (9, "-0.37458323136451633156875139351e+2"), (10, "0.10409964950896230045147246184e+3"), (11, "0.29840293426660503123344363579e+2"), (12, "-0.43533456590011143754432175058e+2"), (13, "0.96324553959188282948394950600e+2"), (14, "-0.39177261675615439165231486172e+2"), (15, "-0.14972683625798562581422125276e+3")),
)



def _dop853():
    S, s = 16, 12
    A = _sparse_rows(S, _DOP853_A)
    b = A[s][:s]
    e5 = [F(0)] * s
    for j, v in _DOP853_E5:
        e5[j] = F(v)
    bhh = [F(0)] * s
    for j, v in _DOP853_BHH:
        bhh[j] = F(v)
    # Dense output (scipy's Dop853DenseOutput, from dop853.f's CONTD8): with Δ = Σ b_i k_i,
    # y(θ) − y₀ = h θ (F0 + (1−θ)(F1 + θ(F2 + (1−θ)(F3 + θ(F4 + (1−θ)(F5 + θ F6)))))),
    # F0 = Δ, F1 = k₁ − Δ, F2 = 2Δ − (k₁ + f(y₁)), F3..F6 = Σ_i D[m, i] k_i: expanded here into
    # one polynomial in θ per stage.
    unit = lambda i: [F(int(i == j)) for j in range(S)]  # noqa: E731
    delta = list(b) + [F(0)] * (S - s)
    Fs = [delta, [u - d for u, d in zip(unit(0), delta)],
          [2 * d - u - v for d, u, v in zip(delta, unit(0), unit(s))]]
    for row in _DOP853_D:
        r = [F(0)] * S
        for j, v in row:
            r[j] = F(v)
        Fs.append(r)
    theta, one_minus = [F(0), F(1)], [F(1), F(-1)]
    P = []
    for i in range(S):
        poly = [Fs[6][i]]
        for m, factor in ((5, theta), (4, one_minus), (3, theta), (2, one_minus), (1, theta), (0, one_minus)):
            poly = _poly_add([Fs[m][i]], _poly_mul(factor, poly))
        poly = _poly_mul(theta, poly)           # degree 7, no constant term
        P.append(tuple(poly[1:8]))
    return Solver(name="dop853", A=A, b=b, c=tuple(F(x) for x in _DOP853_C), order=8,
                  b_error=tuple(bi - ei for bi, ei in zip(b, e5)), error_order=5,
                  b_error3=tuple(bhh), error3_order=3, dense=tuple(P), dense_order=7, stages=s,
                  tolerance=_DOP853_TOLERANCE)


# Largest residuals of the 30-digit decimals (measured with ufm.solvers._residual_report):
# nodes 5.8e-29, b 2.9e-29, 5th-order embedded 4.7e-28, 3rd-order 2.5e-29, dense output 3.1e-26;
# tolerance ~30x the largest. One wrong digit in the 16th place moves some condition by ~1e-16.
_DOP853_TOLERANCE = F(1, 10 ** 24)
# The step controller: DOP853's error estimate is Hairer's (err₅²/√(err₅² + 0.01 err₃²)), but it
# runs under ufm's PI controller (β = 0.04, step ratio in [0.2, 10]), not dop853.f's defaults
# (β = 0, ratio in [0.333, 6]; ``dataclasses.replace(DOP853, name=..., beta=0.0, fac_min=0.333,
# fac_max=6.0)`` is that controller). Measured: Hairer's constants take 7-11 % fewer evaluations
# at equal rtol but miss the tolerance by more: tolerance-normalised RMS logit error on the
# benchmark problem (CE, K = N = 10, d = 16, atol = rtol/100, against vern7 at 1e-13) 16.8 / 11.6 /
# 58.6 at rtol 1e-6 / 1e-8 / 1e-10 against 4.2 / 1.5 / 11.5 with PI; worst normalised error on the
# closed-form logistic mode 3.3 / 0.80 / 2.2 against 0.66 / 0.28 / 1.3; on the stiff bias
# relaxation (t ∈ [1e-6, 0.01]) 24 / 11 / 12 against 8.9 / 7.8 / 5.9. This PI controller is why
# ufm's dop853 takes more steps than scipy's DOP853 (an I controller) at equal rtol: it settles at
# an error estimate 0.9^(1/(α − β)) = 0.15 (α = 1/8 − 0.75β = 0.095) against scipy's 0.9^8 = 0.43,
# 95 accepted steps against 78 at K = N = 64, rtol 1e-8, and a tenth of scipy's error
# (`python -m benchmarks.step_history`; the measurements and the variants tried are in
# docs/benchmarks.md).

DOP853 = _dop853()


# ------------------------------------------------------------------------------------------
# Tsit5: Tsitouras' 5(4) pair (Comput. Math. Appl. 62 (2011) 770), 7 stages, FSAL, with its
# free 4th-order interpolant; coefficients to ~85 digits as in OrdinaryDiffEq.jl / diffrax,
# the interpolant as published there (16–19 digits, factored form).
# ------------------------------------------------------------------------------------------

_TSIT5_A = (
    ("161/1000",),
    ("-0.8480655492356988544426874250230774675121177393430391537369234245294192976164141156943e-2", "0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569"),
    ("2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289", "-6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366", "4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077"),
    ("5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791", "-11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589", "7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753", "-0.9249506636175524925650207933207191611349983406029535244034750452930469056411389539635e-1"),
    ("5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748", "-12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452", "8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986", "-0.7158497328140099722453054252582973869127213147363544882721139659546372402303777878835e-1", "-0.2826905039406838290900305721271224146717633626879770007617876201276764571291579142206e-1"),
    ("0.9646076681806522951816731316512876333711995238157997181903319145764851595234062815396e-1", "1/100", "0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509", "1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331", "-3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677", "2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841"),
)
_TSIT5_B = ("0.9646076681806522951816731316512876333711995238157997181903319145764851595234062815396e-1", "1/100", "0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509", "1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331", "-3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677", "2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841", "0.0")
_TSIT5_BHAT = ("0.9468075576583945807478876255758922856117527357724631226139574065785592789071067303271e-1", "0.9183565540343253096776363936645313759813746240984095238905939532922955247253608687270e-2", "0.4877705284247615707855642599631228241516691959761363774365216240304071651579571959813", "1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761", "-2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702", "1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089", "1/66")
_TSIT5_C = ("161/1000", "327/1000", "9/10", "0.9800255409045096857298102862870245954942137979563024768854764293221195950761080302604", "1.0", "1.0")

# interpolant b_i(θ) = scale · θ^power · Π (θ − root) · Π (θ² + p θ + q)
_TSIT5_INTERP = (
    ("-1.0530884977290216", 1, ("1.3299890189751412",), (("-1.4364028541716351", "0.7139816917074209"),)),
    ("0.1017", 2, (), (("-2.1966568338249754", "1.2949852507374631"),)),
    ("2.490627285651252793", 2, (), (("-2.38535645472061657", "1.57803468208092486"),)),
    ("-16.54810288924490272", 2, ("1.21712927295533244", "0.61620406037800089"), ()),
    ("47.37952196281928122", 2, ("1.203071208372362603", "0.658047292653547382"), ()),
    ("-34.87065786149660974", 2, ("1.2", "0.666666666666666667"), ()),
    ("2.5", 2, ("1", "0.6"), ()),
)


def _tsit5():
    S = 7
    A = [[F(0)] * S for _ in range(S)]
    for i, row in enumerate(_TSIT5_A, start=1):
        for j, v in enumerate(row):
            A[i][j] = F(v)
    P = []
    for scale, power, roots, quadratics in _TSIT5_INTERP:
        poly = [F(0)] * power + [F(scale)]
        for r in roots:
            poly = _poly_mul(poly, [-F(r), F(1)])
        for p, q in quadratics:
            poly = _poly_mul(poly, [F(q), F(p), F(1)])
        P.append(tuple(poly[1:5]) + (F(0),) * (4 - len(poly[1:5])))
    return Solver(name="tsit5", A=tuple(map(tuple, A)), b=tuple(F(x) for x in _TSIT5_B),
                  c=(F(0),) + tuple(F(x) for x in _TSIT5_C), order=5, b_error=tuple(F(x) for x in _TSIT5_BHAT),
                  error_order=4, dense=tuple(P), dense_order=4, tolerance=F(1, 10 ** 81),
                  dense_tolerance=F(5, 10 ** 16))


# Largest residuals (measured): nodes 3.6e-84, b 6.7e-83, embedded 4.2e-83 (85 digits); the
# interpolant 5.1e-17 (its 16–19 digits). Tolerances 15x and 10x those.
TSIT5 = _tsit5()


# ------------------------------------------------------------------------------------------
# Verner's "most efficient" 7(6) pair (Verner's website; the rational form and the 40-digit
# dense-output stages and interpolant as transcribed in OrdinaryDiffEq.jl's verner_tableaus.jl).
_VERN7_C = ("0", "1/200", "49/450", "49/300", "911/2000", "3480084980/5709648941", "221/250", "37/40", "1", "1")
_VERN7_A = {  # row: ((column, a), ...), 0-based
    1: ((0, "1/200"),),
    2: ((0, "-4361/4050"), (1, "2401/2025")),
    3: ((0, "49/1200"), (2, "49/400")),
    4: ((0, "2454451729/3841600000"), (2, "-9433712007/3841600000"), (3, "4364554539/1920800000")),
    5: ((0, "-6187101755456742839167388910402379177523537620/2324599620333464857202963610201679332423082271"),
        (2, "27569888999279458303270493567994248533230000/2551701010245296220859455115479340650299761"),
        (3, "-37368161901278864592027018689858091583238040000/4473131870960004275166624817435284159975481033"),
        (4, "1392547243220807196190880383038194667840000000/1697219131380493083996999253929006193143549863")),
    6: ((0, "11272026205260557297236918526339/1857697188743815510261537500000"),
        (2, "-48265918242888069/1953194276993750"),
        (3, "26726983360888651136155661781228/1308381343805114800955157615625"),
        (4, "-2090453318815827627666994432/1096684189897834170412307919"),
        (5, "1148577938985388929671582486744843844943428041509/1141532118233823914568777901158338927629837500000")),
    7: ((0, "1304457204588839386329181466225966641/108211771565488329642169667802016000"),
        (2, "-1990261989751005/40001418792832"),
        (3, "2392691599894847687194643439066780106875/58155654089143548047476915856270826016"),
        (4, "-1870932273351008733802814881998561250/419326053051486744762255151208232123"),
        (5, "1043329047173803328972823866240311074041739158858792987034783181/"
            "510851127745017966999893975119259285040213723744255237522144000"),
        (6, "-311918858557595100410788125/3171569057622789618800376448")),
    8: ((0, "17579784273699839132265404100877911157/1734023495717116205617154737841023480"),
        (2, "-18539365951217471064750/434776548575709731377"),
        (3, "447448655912568142291911830292656995992000/12511202807447096607487664209063950964109"),
        (4, "-65907597316483030274308429593905808000000/15158061430635748897861852383197382130691"),
        (5, "273847823027445129865693702689010278588244606493753883568739168819449761/"
            "136252034448398939768371761610231099586032870552034688235302796640584360"),
        (6, "694664732797172504668206847646718750/1991875650119463976442052358853258111"),
        (7, "-19705319055289176355560129234220800/72595753317320295604316217197876507")),
    9: ((0, "-511858190895337044664743508805671/11367030248263048398341724647960"),
        (2, "2822037469238841750/15064746656776439"),
        (3, "-23523744880286194122061074624512868000/152723005449262599342117017051789699"),
        (4, "10685036369693854448650967542704000000/575558095977344459903303055137999707"),
        (5, "-6259648732772142303029374363607629515525848829303541906422993/"
            "876479353814142962817551241844706205620792843316435566420120"),
        (6, "17380896627486168667542032602031250/13279937889697320236613879977356033")),
}
_VERN7_B = {0: "96762636172307789/2051985304794103980", 3: "312188947591288252500000/1212357694274963646019729",
            4: "13550580884964304000000000000/51686919683339547115937980629",
            5: "72367769693133178898676076432831566019684378142853445230956642801/"
               "475600216991873963561768100160364792981629064220601844848928537580",
            6: "1619421054120605468750/3278200730370057108183", 7: "-66898316144057728000/227310933007074849597",
            8: "181081444637946577/2226845467039736466"}
_VERN7_BHAT = {0: "117807213929927/2640907728177740", 3: "4758744518816629500000/17812069906509312711137",
               4: "1730775233574080000000000/7863520414322158392809673",
               5: "2682653613028767167314032381891560552585218935572349997/"
                  "12258338284789875762081637252125169126464880985167722660",
               6: "40977117022675781250/178949401077111131341", 9: "2152106665253777/106040260335225546"}
# dense-output stages 11-15 (0-based); stage 10 is f(y1)
_VERN7_DENSE_C = ("29/100", "1/8", "1/4", "53/100", "79/100")
_VERN7_DENSE_A = (
    ((0, ".5232227691599689815470932256735029887614e-1"), (3, ".2249586182670571550244187743667190903405"),
     (4, ".1744370924877637539031751304611402542578e-1"), (5, "-.7669379876829393188009028209348812321417e-2"),
     (6, ".3435896044073284645684381456417912794447e-1"), (7, "-.4102097230093949839125144540100346681769e-1"),
     (8, ".2565113300520561655297104906598973655221e-1"), (10, "-.160443457e-1")),
    ((0, ".5305334125785908638834747243817578898946e-1"), (3, ".1219530101140188607092225622195251463666"),
     (4, ".1774684073760249704011573985936092552347e-1"), (5, "-.5928372667681494328907467430302313286925e-3"),
     (6, ".8381833970853750873624781948796072714855e-2"), (7, "-.1293369259698611956700998079778496462996e-1"),
     (8, ".9412056815253860804791356641605087829772e-2"), (10, "-.5353253107275676032399320754008272222345e-2"),
     (11, "-.6666729992455811078380186481263955324311e-1")),
    ((0, ".3887903257436303686399931060834951327899e-1"), (3, "-.2440320330830131517910045090190069290791e-2"),
     (4, "-.1392891721467262281273220992320214734208e-2"), (5, "-.4744629155868013465038358934145339168472e-3"),
     (6, ".3920793241315951369383517310870803393356e-3"), (7, "-.4055473328512800136385880031750264996936e-3"),
     (8, ".1989709314771672628794304728258886009267e-3"), (10, "-.1027819879317916884712606136811051029682e-3"),
     (11, ".3385661513870266715302548402957613704604e-1"), (12, ".1814893063199928004309543737509423302792")),
    ((0, ".5723681204690012909606837582140921695189e-1"), (3, ".2226594806676118099285816235023183680020"),
     (4, ".1234486420018689904911221497830317287757"), (5, ".4006332526666490875113688731927762275433e-1"),
     (6, "-.5269894848581452066926326838943832327366e-1"), (7, ".4765971214244522856887315416093212596338e-1"),
     (8, "-.2138895885042213036387863538386958914368e-1"), (10, ".1519389106403640165459624646184297766866e-1"),
     (11, ".1206054671628965554251364472502413614358"), (12, "-.2277942301618737288237298052574548913451e-1")),
    ((0, ".5137203880275681426595607279552927584506e-1"), (3, ".5414214473439405582401399378307410450482"),
     (4, ".3503998066921840081154745647747846804810"), (5, ".1419311226969218216861835872156617148040"),
     (6, ".1052737747842942254816302629823570359198"), (7, "-.3108184780587401700842726199589213259835e-1"),
     (8, "-.7401883149519145061791854716430279714483e-2"), (10, "-.6377932504865363437569726480040013149706e-2"),
     (11, "-.1732549590836186403386348310205265959935"), (12, "-.1822815677762202619429607513861847306420")),
)
# interpolant: stage -> coefficients of θ^1 … θ^7
_VERN7_INTERP = {
    0: ("1", "-8.413387198332767469319987751201351965810", "33.67550888449089654479469983556967202215",
        "-70.80159089484886164618905961010838757357", "80.64695108301297872968868805293298389704",
        "-47.19413969837521580145883430419406103536", "11.13381344253924186418881142808952641234"),
    3: ("0", "8.754921980674397160629587282876763437696", "-88.45968286997709426134300934922618655402",
        "346.9017638429916309499891288356321692825", "-629.2580030059837046812187141184986252218",
        "529.6773755604192983874116479833480529304", "-167.3588698651401860365089970240284051167"),
    4: ("0", "8.913387586637921662996190126913331844214", "-90.06081846893217794712014609702916991513",
        "353.1807459217057824951538014683541349020", "-640.6476819744374433668701027882567716886",
        "539.2646279047155261551781390920363285084", "-170.3880944299154827945664954924414008798"),
    5: ("0", "5.173312029847800338889849068990984974299", "-52.27111590005538823385270070373176751689",
        "204.9853867374073094711024260808085419491", "-371.8306118563602890875634623992262437796",
        "312.9880934374529000210073972654145891826", "-98.89290352172494693555119599233959305606"),
    6: ("0", "16.79537744079695986364946329034055578253", "-169.7004000005972744435739149730966805754",
        "665.4937727009246303131700313781960584913", "-1207.163889233600728395392916633015853882",
        "1016.129151581854603280159105697386989470", "-321.0600155723749421933210511704882816019"),
    7: ("0", "-10.00599753609866476866352971232058330270", "101.1005433052275068199636113246449312792",
        "-396.4739151237843754958939772727577263768", "719.1787707014182914108130834128646525498",
        "-605.3681033918824350795711030652978269725", "191.2743989279793520691961908384572824802"),
    8: ("0", "2.764708833638599139713222853969606774131", "-27.93460263739046178114640484830267988046",
        "109.5477918613789217803046856340175757800", "-198.7128113064482116421691972646370773711",
        "167.2663357164031670694252647113936863857", "-52.85010499525706346613022509203974406942"),
    10: ("0", "-2.169632028016350481156919876642428429100", "22.01669603756987625585768587320929912766",
         "-86.90152427798948350846176288615482496306", "159.2238897386147443720253338471077193471",
         "-135.9618306534587908363115231453760181702", "43.79240118328000419804718618785625308759"),
    11: ("0", "-4.890070188793803933769786966428026149549", "22.75407737425176120799532459991506803585",
         "-30.78034218537730965082079824005797506535", "-2.797194317207249021142015125037024035537",
         "31.36945663750840183161406140272783187147", "-15.65592732038180043387678567111987465689"),
    12: ("0", "10.86217092955196715517224349929627754387", "-50.54297141782710697188187875653305700081",
         "68.37148040407511827604242008548181691494", "6.213326521632409162585500428935637861213",
         "-69.68006323194158104163196358466588618336", "34.77605679450919341971367832748521086414"),
    13: ("0", "-11.37286691922922915922346687401389055763", "130.7905807824671644130452602841032046030",
         "-488.6511367778560207543260583489312609826", "832.2148793276440873476229585070779183432",
         "-664.7743368554426242883314487337054193624", "201.7928804424166224412127551654694479565"),
    14: ("0", "-5.919778732715006698693070786679427540601", "63.27679965889218829298274978013773800731",
         "-265.4326820887379575820873554556433306580", "520.1009254140610824835871087519714692468",
         "-467.4121095339020118993777963241667608460", "155.3868452824017054035883640343803117904"),
    15: ("0", "-10.49214619796182281022379415510181241136", "105.3553852518801101042787230303396283676",
         "-409.4397501198893846479834816688367917005", "732.8314489076540326880337353277812147333",
         "-606.3044574733512377981129469949015057785", "188.0495196316683024640077644607192667895"),
}


def _vern7():
    s, S = 10, 16
    rows = dict(_VERN7_A)
    bvec = [F(0)] * s
    for j, v in _VERN7_B.items():
        bvec[j] = F(v)
    rows[s] = tuple((j, v) for j, v in enumerate(bvec) if v)          # f(y₁)
    for i, entries in enumerate(_VERN7_DENSE_A, start=s + 1):
        rows[i] = entries
    A = _sparse_rows(S, rows)
    bhat = [F(0)] * s
    for j, v in _VERN7_BHAT.items():
        bhat[j] = F(v)
    P = [(F(0),) * 7] * S
    for i, coeffs in _VERN7_INTERP.items():
        P[i] = tuple(F(x) for x in coeffs)
    c = tuple(F(x) for x in _VERN7_C) + (F(1),) + tuple(F(x) for x in _VERN7_DENSE_C)
    return Solver(name="vern7", A=A, b=tuple(bvec), c=c, order=7, b_error=tuple(bhat), error_order=6,
                  dense=tuple(P), dense_order=6, stages=s, tolerance=F(3, 10 ** 36))


# Largest residuals (measured): the rational step tableau and its embedded pair are exact (0);
# the 40-digit dense stages' nodes 9e-41, the interpolant's conditions up to order 6 3.1e-37
# (tolerance 10x that). The order-7 conditions of the interpolant as transcribed fail by up to
# 1.3e-4 (72 of the 336 coefficient conditions; tests/test_solvers.py measures it), so its stated
# dense order is 6: a dense error O(h^7) per step, one order below the step's.
VERN7 = _vern7()

_DEFERRED_CHECKS = False

SOLVERS = {s.name: s for s in (DOPRI5, TSIT5, VERN7, DOP853, RK4, EULER)}

#: ``method="auto"``: the adaptive method used below each rtol bound (first match), chosen by
#: measurement (see :func:`auto_solver`).
AUTO = ((1e-7, "vern7"), (math.inf, "tsit5"))


def auto_solver(rtol: float) -> Solver:
    """The method ``method="auto"`` uses at relative tolerance ``rtol`` (table :data:`AUTO`).

    Measured (CE, one-hot K = N, λ = 1e-3, init scale 0.01, 40 log-spaced saves in
    [0.1, 1e4], atol = rtol/100; CPU ms per solve, median of 5, fastest in brackets;
    OPENBLAS_NUM_THREADS=1, this 2-core machine)::

        K = N = 10, d = 16   dopri5  tsit5   vern7   dop853
          rtol 1e-4          1.36   [1.22]   1.92    1.67
          rtol 1e-6          1.91   [1.77]   2.36    2.22
          rtol 1e-8          3.54    3.28    3.34   [3.03]
          rtol 1e-10         7.72    7.13    5.39   [4.29]
          rtol 1e-12        18.28   16.37    9.08   [6.68]
        K = N = 64, d = 64
          rtol 1e-4         25.96  [24.16]  36.82   36.55
          rtol 1e-6         40.32  [37.86]  51.94   46.92
          rtol 1e-8         89.28  [75.37]  77.08   76.82
          rtol 1e-10       193.24  174.43 [132.97] 134.91
          rtol 1e-12       456.74  397.64 [237.32] 240.25
        Gram space, K = N = 10: tsit5 fastest at 1e-4 and 1e-6, dop853 at 1e-8 … 1e-12.

    Tsitouras' pair wins at loose tolerances, DOP853 is fastest from 1e-8 down, Verner's pair
    within 2 % of it at K = N = 64 and within 10–35 % at K = N = 10. The errors normalised by
    the tolerance were tsit5 0.2–3.8, dop853 0.17–11.6 (on the logits), dopri5 0.47–10.5;
    vern7 0.03–0.3 (it overshoots the accuracy asked for). ``"auto"`` takes Verner's pair
    below 1e-7, not DOP853, for accuracy: in a stability-limited stretch (the stiff bias
    relaxation of tests/test_rosenbrock.py before the stiff switch, t ∈ [1e-6, 0.01]) DOP853's
    normalised error was 1079 / 43 / 32 at rtol 1e-6 / 1e-8 / 1e-10, dopri5's 2.8 / 1.8 / 4.3,
    tsit5's 3.5 / 4.2 / 3.3 and vern7's 0.99 / 0.70 / 0.77; and on the benchmark problem
    above (K = N = 10, after the merge, CPU ms / normalised error) rtol 1e-8: tsit5 3.10 / 0.18,
    vern7 3.22 / 0.02, dop853 2.81 / 0.87; rtol 1e-10: vern7 5.23 / 0.02, dop853 3.91 / 6.6.
    DOP853's excess is its 7th-order dense output, not its steps: on that problem at rtol 1e-10
    (atol 1e-12) the saves that end a step are within 0.75 of the tolerance, those interpolated
    inside the long late steps up to 72 (t = 5540); steps shortened to land on every save (no
    dense output) give 0.21 overall at 1898 evaluations instead of 11.5 at 1609 (same at 1e-8:
    0.034 at 1345 against 1.5 at 1064). The interpolant equals scipy's DOP853 dense output to
    3e-15 on one step, so this is the method's, not a transcription error. Rerun with
    ``OPENBLAS_NUM_THREADS=1 python -c "import ufm.solvers as s; s.auto_method_scan()"``.

    Re-measured in session 7 with the 8-wide small-size field and the fused stage sums
    (``s.auto_method_scan(repeats=7)``, load 1.4–1.8; CPU ms / normalised logit error)::

        K = N = 10, d = 16   tsit5          vern7          dop853
          rtol 1e-6          [0.75] / 0.52   1.03 / 0.07    0.93 / 4.2
          rtol 1e-8           1.36 / 0.45    1.44 / 0.03   [1.25] / 1.49
          rtol 1e-10          2.99 / 0.28    2.26 / 0.04   [1.73] / 11.5
        K = N = 64, d = 64
          rtol 1e-8         [54.8] / 0.34   58.4 / 0.08    58.4 / 0.17
          rtol 1e-10        125.6 / 0.33   [97.6] / 0.04  100.1 / 0.89
        Gram space, K = N = 10, rtol 1e-8: tsit5 3.15 / 0.54, vern7 3.28 / 0.11,
          [dop853] 2.81 / 0.84

    The choice holds: at rtol 1e-8 Tsitouras' pair is 4–6 % faster than Verner's at every
    size, and DOP853 13 % faster at K = N = 10, but Verner's error is 5–15× smaller than
    Tsitouras' and DOP853's exceeds the tolerance (1.49; 11.5 at 1e-10) at K = N = 10; from
    1e-10 Verner's pair is also faster than Tsitouras' (by 25 %) and within 3 % of DOP853 at
    K = N = 64 (docs/stiff.md, "The default method").

    Arguments:
        rtol: the run's relative tolerance.

    Returns:
        The :class:`Solver` for it.
    """
    for bound, name in AUTO:
        if rtol < bound:
            return SOLVERS[name]
    return SOLVERS[AUTO[-1][1]]


def get_solver(method, rtol: float | None = None) -> Solver:
    """Look up a solver by name or pass one through.

    Arguments:
        method: ``"auto"`` (picked by ``rtol``, :func:`auto_solver`), a name from
            :data:`SOLVERS` (``"dopri5"``, ``"tsit5"``, ``"vern7"``, ``"dop853"``, ``"rk4"``,
            ``"euler"``) or a :class:`Solver`.
        rtol: the run's relative tolerance (needed by ``"auto"``; 1e-8 when not given).

    Raises:
        ValueError: an unknown name or another type.
    """
    if isinstance(method, Solver):
        return method
    if isinstance(method, str) and method == "auto":
        try:
            rtol = 1e-8 if rtol is None else float(rtol)
        except (TypeError, ValueError):
            rtol = 1e-8          # a bad rtol is reported by the caller's own validation
        return auto_solver(rtol)
    if not isinstance(method, str) or method not in SOLVERS:
        opts = ", ".join(repr(k) for k in ("auto", *SOLVERS))
        raise ValueError(f"method: expected one of {opts} or a ufm.solvers.Solver, got {method!r}")
    return SOLVERS[method]


def auto_method_scan(sizes=((10, 16, "parameters"), (64, 64, "parameters"), (10, 16, "gram")),
                     rtols=(1e-4, 1e-6, 1e-8, 1e-10, 1e-12), repeats: int = 5) -> list:
    """Re-measure the table of :func:`auto_solver`: CPU time and tolerance-normalised logit
    error of every adaptive method (against vern7 at rtol 1e-13) per size and rtol.

    Arguments:
        sizes: (K = N, d, space) cases. rtols: tolerances (atol = rtol/100). repeats: runs
            per timing (median).

    Returns:
        Rows (K, d, space, rtol, method, CPU ms, evaluations, normalised error); also printed.
    """
    import time

    import ufm

    ts = np.geomspace(0.1, 1e4, 40)
    rows = []
    for K, d, space in sizes:
        model = ufm.UFM(ufm.Problem(np.eye(K)), loss="ce", lambda_W=1e-3, lambda_H=1e-3)
        init = model.init(d, scale=0.01, seed=0)
        kw = dict(space=space, save=("gram_H", "logits"))
        ref = ufm.solve(model, init, ts, method="vern7", rtol=1e-13, atol=1e-15, **kw).logits
        for rtol in rtols:
            atol = rtol * 1e-2
            for name in ("dopri5", "tsit5", "vern7", "dop853"):
                ufm.solve(model, init, ts, method=name, rtol=rtol, atol=atol, **kw)
                times = []
                for _ in range(repeats):
                    t0 = time.process_time()
                    tr = ufm.solve(model, init, ts, method=name, rtol=rtol, atol=atol, **kw)
                    times.append(time.process_time() - t0)
                err = float(np.sqrt(np.mean(((tr.logits - ref) / (atol + rtol * np.abs(ref))) ** 2)))
                rows.append((K, d, space, rtol, name, 1e3 * float(np.median(times)), tr.info["rhs_evaluations"], err))
                print(*rows[-1])
    return rows
