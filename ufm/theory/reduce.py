"""Exact symmetry reduction of the Gram-space ODE to relation coefficients.

For a problem with an association scheme (balanced, factorial, hierarchy; one-hot labels,
equal weights) and a coupling Θ = Σ_a θ_a R_a in the scheme's algebra, write

    M = WH = Σ_a m_a B_a (K×N),   G_W = Σ_a w_a C_a (K×K),   G_H = Σ_a h_a R_a (N×N),
    b = b·1_K (bias, when present).

The Gram-space ODE (docs/model.md)

    dM/dt   = −η_W (G G_H + λ_W M) − η_H (G_W G + λ_H M) Θ − η_H λ_E M
    dG_W/dt = −η_W (G Mᵀ + M Gᵀ + 2 λ_W G_W)
    dG_H/dt = −η_H [Θ (Gᵀ M + λ_H G_H) + (Mᵀ G + λ_H G_H) Θ] − 2 η_H λ_E G_H
    db/dt   = −η_b (G 1 + λ_b b)

maps this span into itself: every product is a product of relation matrices (structure
constants of :class:`~ufm.theory.scheme.Scheme`), and the logit gradient G is entrywise in
the logits except for the column normalisation of the softmax. Because every column of every
B_a holds the same number v_a of entries (the column valency), every column of
Z = M + b1ᵀ has the same multiset of values {z_a with multiplicity v_a}, so

    softmax(Z) = Σ_a σ_a B_a,   σ_a = e^{z_a} / Σ_c v_c e^{z_c},
    G = Σ_a g_a B_a,            g_a = (σ_a − [a = label]) / N   (CE),
                                g_a = (z_a − [a = label]) / N   (MSE),
    G1 = (Σ_a ρ_a g_a) 1_K      (ρ_a the row valency).

The reduced ODE therefore closes on (m, w, h, b): 3 × (number of relations) + 1 scalars,
whatever N is. Isotropic Grams (M = 0, G_W = s² I, G_H = s² I) — the d → ∞ limit of
``model.init(d, scale=s)`` — lie in the span, so the reduction is exact from there.

Numerics: sympy derives; the numbers come from the engine. :meth:`ReducedModel.rhs` and
:meth:`ReducedModel.solve` run the numeric reduction of :mod:`ufm.reduction` (one numba field
over the scheme's structure-constant tables, ``ufm.solve(..., space="reduced")``), with the
coefficients mapped to this module's order; :meth:`ReducedModel.symbolic_rhs` evaluates the
sympy field itself (lambdified), which the tests compare with the engine's.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import sympy as sp

from . import symbols as S
from .result import Verification
from .scheme import BoundScheme, Scheme, bind

__all__ = ["ReducedODE", "ReducedModel", "ReducedTrajectory", "SymbolicModel", "reduced_ode", "reduce", "symbolic",
           "PARAMETERS"]

#: order of the scalar parameters in the numeric parameter vector (then sizes, then θ_a)
PARAMETERS = (S.eta_W, S.eta_H, S.eta_b, S.lambda_W, S.lambda_H, S.lambda_b, S.lambda_E)


def _dot3(x, y, table):
    """Σ_{a,b} x_a y_b table[a][b][c] for every c."""
    nc = len(table[0][0])
    terms = [[] for _ in range(nc)]
    for a, xa in enumerate(x):
        if xa == 0:
            continue
        for b, yb in enumerate(y):
            if yb == 0:
                continue
            for c, coef in enumerate(table[a][b]):
                if coef != 0:
                    terms[c].append(coef * xa * yb)
    return [sp.Add(*tc) for tc in terms]


@dataclass(eq=False)
class ReducedODE:
    """The reduced ODE of a scheme, loss and bias, in sympy.

    Attributes:
        scheme: the :class:`~ufm.theory.scheme.Scheme`.
        loss: ``"ce"`` or ``"mse"``. bias: whether the state carries the bias b.
        m, w, h: relation-coefficient symbols of M, G_W, G_H; ``b`` the bias symbol or None.
        theta: symbols θ_a of the coupling Θ = Σ_a θ_a R_a.
        g: symbols of the logit-gradient coefficients g_a (intermediates).
        g_of_state: expressions of g_a in the state (softmax with valencies / residual).
        field_in_g: d(state)/dt as polynomials in (state, g, parameters).
        state: the state symbols in the numeric layout [m, w, h, (b)].
        parameters: parameter symbols in the numeric layout
            [η_W, η_H, η_b, λ_W, λ_H, λ_b, λ_E, sizes…, θ…].
    """

    scheme: Scheme
    loss: str
    bias: bool
    m: tuple
    w: tuple
    h: tuple
    b: sp.Symbol | None
    theta: tuple
    g: tuple
    g_of_state: tuple
    field_in_g: tuple

    @property
    def state(self) -> tuple:
        return self.m + self.w + self.h + ((self.b,) if self.bias else ())

    @property
    def parameters(self) -> tuple:
        return PARAMETERS + tuple(self.scheme.sizes) + self.theta

    @cached_property
    def field(self) -> tuple:
        """d(state)/dt with the g_a substituted (sympy)."""
        sub = dict(zip(self.g, self.g_of_state))
        return tuple(e.xreplace(sub) for e in self.field_in_g)

    @cached_property
    def objective(self) -> sp.Expr:
        """ℓ + λ_W/2 tr G_W + λ_H/2 tr G_H + λ_b/2 ‖b‖² (+ the λ_E term is left out here)."""
        sc = self.scheme
        z = [mi + (self.b if self.bias else 0) for mi in self.m]
        v = sc.col_valency
        if self.loss == "ce":
            lse = sp.log(sum(vi * sp.exp(zi) for vi, zi in zip(v, z)))
            data = -(z[sc.label] - lse)
        else:
            data = sp.Rational(1, 2) * sum(vi * (zi - (1 if a == sc.label else 0)) ** 2
                                           for a, (vi, zi) in enumerate(zip(v, z)))
        reg = (S.lambda_W / 2) * sc.K * self.w[0] + (S.lambda_H / 2) * sc.N * self.h[0]
        if self.bias:
            reg += (S.lambda_b / 2) * sc.K * self.b ** 2
        return data + reg

    @cached_property
    def jacobian_parts(self):
        """(∂f/∂y, ∂f/∂g, ∂g/∂y) as sympy matrices: the chain rule keeps them small."""
        y = sp.Matrix(self.state)
        f = sp.Matrix(self.field_in_g)
        gs = sp.Matrix(self.g_of_state)
        return f.jacobian(y), f.jacobian(sp.Matrix(self.g)), gs.jacobian(y)


@lru_cache(maxsize=None)
def reduced_ode(scheme: Scheme, loss: str = "ce", bias: bool = False) -> ReducedODE:
    """Derive the reduced ODE of ``scheme`` (module docstring) for a loss and bias.

    Arguments:
        scheme: a :class:`~ufm.theory.scheme.Scheme` (e.g. ``factorial_scheme(2)``).
        loss: ``"ce"`` or ``"mse"``.
        bias: include the (uniform) bias b in the state.

    Returns:
        :class:`ReducedODE`.

    Raises:
        ValueError: unknown loss.
    """
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss: expected 'ce' or 'mse', got {loss!r}")
    nB, nC, nR = len(scheme.B), len(scheme.C), len(scheme.R)
    m = sp.symbols(f"m_0:{nB}", real=True)
    w = sp.symbols(f"w_0:{nC}", real=True)
    h = sp.symbols(f"h_0:{nR}", real=True)
    g = sp.symbols(f"g_0:{nB}", real=True)
    theta = sp.symbols(f"theta_0:{nR}", real=True)
    b = sp.Symbol("b", real=True) if bias else None
    eW, eH, eb = S.eta_W, S.eta_H, S.eta_b
    lW, lH, lb, lE = S.lambda_W, S.lambda_H, S.lambda_b, S.lambda_E

    # dM = −η_W (G G_H + λ_W M) − η_H ((G_W G + λ_H M) Θ + λ_E M)
    T1 = _dot3(g, h, scheme.alpha)
    T2 = [x + lH * mc for x, mc in zip(_dot3(w, g, scheme.gamma), m)]
    T3 = _dot3(T2, theta, scheme.alpha)
    dm = [-eW * (T1[c] + lW * m[c]) - eH * (T3[c] + lE * m[c]) for c in range(nB)]
    # dG_W = −η_W (G Mᵀ + M Gᵀ + 2 λ_W G_W)
    S1 = _dot3(g, m, scheme.delta)
    S2 = _dot3(m, g, scheme.delta)
    dw = [-eW * (S1[c] + S2[c] + 2 * lW * w[c]) for c in range(nC)]
    # dG_H = −η_H [(Mᵀ G + λ_H G_H) Θ + Θ (Gᵀ M + λ_H G_H)] − 2 η_H λ_E G_H
    U1 = [x + lH * hc for x, hc in zip(_dot3(m, g, scheme.eps), h)]
    U2 = [x + lH * hc for x, hc in zip(_dot3(g, m, scheme.eps), h)]
    V1 = _dot3(U1, theta, scheme.p)
    V2 = _dot3(theta, U2, scheme.p)
    dh = [-eH * (V1[c] + V2[c]) - 2 * eH * lE * h[c] for c in range(nR)]
    field = list(dm + dw + dh)
    if bias:
        rowsum = sum(rho * ga for rho, ga in zip(scheme.row_valency, g))
        field.append(-eb * (rowsum + lb * b))

    z = [mi + (b if bias else 0) for mi in m]
    label = scheme.label
    if loss == "ce":
        norm = sum(v * sp.exp(zc) for v, zc in zip(scheme.col_valency, z))
        g_of = tuple((sp.exp(za) / norm - (1 if a == label else 0)) / scheme.N for a, za in enumerate(z))
    else:
        g_of = tuple((za - (1 if a == label else 0)) / scheme.N for a, za in enumerate(z))
    return ReducedODE(scheme, loss, bias, tuple(m), tuple(w), tuple(h), b, tuple(theta), tuple(g), g_of,
                      tuple(field))


# ---------------------------------------------------------------------------------------------
# numeric evaluation
# ---------------------------------------------------------------------------------------------

class _LambdifiedRHS:
    """The sympy field evaluated numerically (lambdify): the symbolic ground truth that
    :meth:`ReducedModel.symbolic_rhs` exposes; slow, not used for integration."""

    def __init__(self, ode: ReducedODE):
        args = list(ode.state) + list(ode.g) + list(ode.parameters)
        self._f = sp.lambdify(args, list(ode.field_in_g), "math", cse=True)
        self.ode = ode
        sc = ode.scheme
        sizes = list(sc.sizes)
        self._v = sp.lambdify(sizes, list(sc.col_valency), "math")
        self._N = sp.lambdify(sizes, sc.N, "math")

    def __call__(self, y, par):
        ode = self.ode
        nB = len(ode.m)
        nsz = len(ode.scheme.sizes)
        sizes = par[7:7 + nsz]
        v = np.array(self._v(*sizes), dtype=float)
        Nn = float(self._N(*sizes))
        g = _relation_logit_gradient(ode, y[:nB] + (y[-1] if ode.bias else 0.0), v, Nn)
        return np.array(self._f(*y, *g, *par), dtype=float)


def _engine_order(numeric, bound) -> np.ndarray:
    """Index map between the engine's coefficient order and this module's: ``y_theory =
    y_engine[order]``. The scheme here orders relations by its Kronecker construction, the
    engine by ``problem.relations``; the map matches their 0/1 matrices side by side."""
    order, offset = [], 0
    for mats, index in ((bound.B, numeric.B_index), (bound.C, numeric.C_index), (bound.R, numeric.R_index)):
        for E in mats:
            hit = [c for c in range(int(index.max()) + 1) if np.array_equal(index == c, np.asarray(E) > 0)]
            if len(hit) != 1:   # pragma: no cover - both partition the same pairs
                raise RuntimeError("reduce: the scheme's relations do not match the numeric reduction's")
            order.append(offset + hit[0])
        offset += len(mats)
    if numeric.bias:
        order.append(offset)
    return np.array(order, dtype=np.int64)


@dataclass(eq=False)
class ReducedTrajectory:
    """A solution of the reduced ODE.

    Attributes:
        t: (T,) times. y: (T, n) states [m, w, h, (b)]. model: the :class:`ReducedModel`.
    """

    t: np.ndarray
    y: np.ndarray
    model: "ReducedModel"

    def coefficients(self, which: str) -> np.ndarray:
        """(T, ·) relation coefficients of ``"M"``, ``"G_W"`` or ``"G_H"`` (or ``"b"``)."""
        return self.model.split(self.y.T, which).T if which != "b" else self.y[:, -1]

    def grams(self):
        """Full matrices (T, K, N), (T, K, K), (T, N, N): logits Z (with bias), G_W, G_H."""
        bs = self.model.bound
        M = np.tensordot(self.coefficients("M"), np.asarray(bs.B), axes=1)
        if self.model.ode.bias:
            M = M + self.y[:, -1][:, None, None]
        GW = np.tensordot(self.coefficients("G_W"), np.asarray(bs.C), axes=1)
        GH = np.tensordot(self.coefficients("G_H"), np.asarray(bs.R), axes=1)
        return M, GW, GH

    def spectra(self, which: str = "G_H") -> np.ndarray:
        """(T, eigenspaces) eigenvalues of G_H (or G_W) on the scheme's eigenspaces, from the
        eigenmatrix: ν = P h."""
        P = self.model.eigenmatrix("R" if which == "G_H" else "C")
        return self.coefficients(which) @ P.T

    def to_trajectory(self):
        """A :class:`ufm.Trajectory` (loss, G_W, G_H, logits) so that metrics apply."""
        from ..models import GramState
        from ..trajectory import Trajectory
        Z, GW, GH = self.grams()
        model = self.model.model
        loss = []
        for k in range(len(self.t)):
            b = self.y[k, -1] * np.ones(model.K) if self.model.ode.bias else None
            st = GramState(Z[k] - (b[:, None] if b is not None else 0.0), GW[k], GH[k], b)
            loss.append(model.loss(st))
        return Trajectory(t=self.t.copy(), loss=np.array(loss), gram_W=GW, gram_H=GH, logits=Z,
                          problem=model.problem, model=model, info={"space": "reduced"})


class ReducedModel:
    """The reduced ODE of a concrete model (see :func:`reduce`)."""

    def __init__(self, model, bound: BoundScheme, ode: ReducedODE, theta: np.ndarray, beta: float | None):
        self.model = model
        self.bound = bound
        self.ode = ode
        self.theta = theta
        self.beta = beta
        sizes = [bound.values[q] for q in ode.scheme.sizes]
        self.par = np.array([model.lr_W, model.lr_H, model.lr_b, model.lambda_W, model.lambda_H,
                             model.lambda_b, model.lambda_E, *sizes, *theta], dtype=float)
        from .. import engine
        from ..kernels import fields as _kf
        self._numeric = engine.reduction_of(model)
        self._order = _engine_order(self._numeric, bound)        # y_theory = y_engine[order]
        self._inverse = np.argsort(self._order)                    # y_engine = y_theory[inverse]
        self._packed = engine.pack_model(model, "reduced")
        self._work = np.empty(_kf.work_size(self._packed))

    # -- layout -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.ode.state)

    def split(self, y, which: str):
        nB, nC, nR = len(self.ode.m), len(self.ode.w), len(self.ode.h)
        sl = {"M": slice(0, nB), "G_W": slice(nB, nB + nC), "G_H": slice(nB + nC, nB + nC + nR)}[which]
        return np.asarray(y)[sl]

    def eigenmatrix(self, side: str = "R") -> np.ndarray:
        P, _, _ = self.bound.scheme.eigen_R if side == "R" else self.bound.scheme.eigen_C
        return np.array(P.subs(self.bound.values), dtype=float)

    # -- symbolic views -----------------------------------------------------------------------
    def substitutions(self, sizes: bool = True) -> dict:
        """Symbol -> value map: θ_a as functions of β (attribute kernel) or numbers; sizes."""
        sc = self.bound.scheme
        sub = {}
        if self.model.coupling is None:
            for a, th in enumerate(self.ode.theta):
                sub[th] = sp.Integer(1 if a == 0 else 0)
        elif self.beta is not None:
            s = sc.attribute_coefficients
            for a, th in enumerate(self.ode.theta):
                sub[th] = (1 if a == 0 else 0) + S.beta ** 2 * s[a]
        else:
            for a, th in enumerate(self.ode.theta):
                sub[th] = sp.nsimplify(self.theta[a])
        if sizes:
            sub.update({q: sp.Integer(v) for q, v in self.bound.values.items()})
        return sub

    def equations(self, sizes: bool = False):
        """The reduced ODE as a list of ``sympy.Eq(d state/dt, expression)`` in the model's
        symbols (η, λ, β — and the size symbols unless ``sizes=True`` substitutes them)."""
        sub = self.substitutions(sizes=sizes)
        tt = S.t
        out = []
        for y, f in zip(self.ode.state, self.ode.field_in_g):
            out.append(sp.Eq(sp.Derivative(sp.Function(str(y))(tt), tt), f.xreplace(sub)))
        return out

    # -- numerics -----------------------------------------------------------------------------
    def rhs(self, y) -> np.ndarray:
        """d(state)/dt at ``y`` (numeric: the engine's reduced field)."""
        from ..kernels import fields as _kf
        y_engine = np.ascontiguousarray(np.asarray(y, dtype=float)[self._inverse])
        dy = np.empty_like(y_engine)
        packed = self._packed._replace(coef=np.ascontiguousarray(self.par[:7]))   # rates and decays as set now
        _kf.vector_field(0, y_engine, dy, packed, self._work)
        return dy[self._order]

    def _model_now(self):
        """The model with the rates and decays of ``self.par`` as it is now (the coupling and
        sizes come from the model)."""
        names = ("lr_W", "lr_H", "lr_b", "lambda_W", "lambda_H", "lambda_b", "lambda_E")
        changes = {n: float(v) for n, v in zip(names, self.par[:7]) if float(v) != getattr(self.model, n)}
        return self.model.replace(**changes) if changes else self.model

    @cached_property
    def _symbolic(self):
        return _LambdifiedRHS(self.ode)

    def symbolic_rhs(self, y) -> np.ndarray:
        """d(state)/dt at ``y`` from the sympy expressions (lambdified; slow, the ground truth
        the engine's field is tested against)."""
        return self._symbolic(np.asarray(y, dtype=float), self.par)

    def isotropic(self, scale: float) -> np.ndarray:
        """The reduced state of isotropic Grams: M = 0, G_W = s² I, G_H = s² I, b = 0."""
        y = np.zeros(self.size)
        nB, nC = len(self.ode.m), len(self.ode.w)
        y[nB] = scale ** 2
        y[nB + nC] = scale ** 2
        return y

    def state_of(self, gram_state):
        """Project a :class:`ufm.GramState` onto relation coefficients.

        Returns:
            (y, spread): the reduced state and the largest relative deviation of the Grams
            from the span (0 for a symmetric state).
        """
        bs = self.bound
        m, s1 = bs.project(gram_state.M, "B")
        w, s2 = bs.project(gram_state.gram_W, "C")
        h, s3 = bs.project(gram_state.gram_H, "R")
        y = np.concatenate([m, w, h])
        if self.ode.bias:
            b = np.asarray(gram_state.b)
            y = np.append(y, b.mean())
        return y, max(s1, s2, s3)

    def gram_state(self, y):
        """The :class:`ufm.GramState` of a reduced state."""
        from ..models import GramState
        bs = self.bound
        b = y[-1] * np.ones(self.model.K) if self.ode.bias else None
        return GramState(bs.expand(self.split(y, "M"), "B"), bs.expand(self.split(y, "G_W"), "C"),
                         bs.expand(self.split(y, "G_H"), "R"), b)

    def solve(self, t, *, scale: float = 1e-3, init=None, rtol: float = 1e-12, atol: float = 1e-14,
              t0: float = 0.0) -> ReducedTrajectory:
        """Integrate the reduced ODE: ``ufm.solve(model, …, space="reduced")``, the engine's
        Dormand–Prince on the numeric reduction, with the saved states in this module's order.

        Arguments:
            t: save times (increasing, >= t0).
            scale: isotropic initial Grams s² I (ignored when ``init`` is given).
            init: a reduced state (this module's order), or a :class:`ufm.GramState` in the span.
            rtol, atol: tolerances.

        Raises:
            ValueError: a GramState that is not in the scheme's span, or bad times.
            ufm.IntegrationError: the integration failed (with the partial trajectory).
        """
        from ..models import GramState
        from ..integration import solve
        if init is None:
            y0 = self.isotropic(scale)
        elif isinstance(init, GramState):
            y0, spread = self.state_of(init)
            if spread > 1e-10:
                raise ValueError(f"init: the GramState is not in the scheme's span (relative spread {spread:.1e})")
        else:
            y0 = np.asarray(init, dtype=float)
        tr = solve(self._model_now(), self.gram_state(y0), t, t0=t0, rtol=rtol, atol=atol, space="reduced",
                   save=("gram_W", "gram_H", "logits", "b") if self.ode.bias else ("gram_W", "gram_H", "logits"))
        ys = []
        for k in range(len(tr.t)):
            b = None if tr.b is None else tr.b[k]
            M = tr.logits[k] if b is None else tr.logits[k] - b[:, None]
            ys.append(self.state_of(GramState(M, tr.gram_W[k], tr.gram_H[k], b))[0])
        return ReducedTrajectory(tr.t, np.array(ys), self)

    # -- fixed points and linearisation ----------------------------------------------------------
    @cached_property
    def _jacobian_fns(self):
        fy, fg, gy = self.ode.jacobian_parts
        sub = {}
        args = list(self.ode.state) + list(self.ode.g) + list(self.ode.parameters)
        return (sp.lambdify(args, fy.xreplace(sub), "numpy"), sp.lambdify(args, fg, "numpy"),
                sp.lambdify(args, gy, "numpy"))

    def _g(self, y):
        ode = self.ode
        nB = len(ode.m)
        v = np.array([self.bound.num(x) for x in ode.scheme.col_valency])
        Nn = self.bound.num(ode.scheme.N)
        return _relation_logit_gradient(ode, y[:nB] + (y[-1] if ode.bias else 0.0), v, Nn)

    def jacobian(self, y) -> np.ndarray:
        """∂(d state/dt)/∂state at ``y``, from the symbolic derivative (chain rule through g)."""
        fy, fg, gy = self._jacobian_fns
        args = list(y) + list(self._g(np.asarray(y, dtype=float))) + list(self.par)
        return np.array(fy(*args), dtype=float) + np.array(fg(*args), dtype=float) @ np.array(gy(*args), dtype=float)

    def fixed_point(self, guess, *, tol: float = 1e-13, max_iter: int = 100) -> np.ndarray:
        """Newton's method on the reduced field from ``guess`` (a reduced state).

        Raises:
            RuntimeError: no convergence.
        """
        y = np.array(guess, dtype=float)
        for _ in range(max_iter):
            F = self.rhs(y)
            scale = max(np.abs(y).max(), 1.0)
            if np.abs(F).max() < tol * scale:
                return y
            J = self.jacobian(y)
            step = np.linalg.lstsq(J, -F, rcond=None)[0]
            y = y + step
        if np.abs(self.rhs(y)).max() < 1e3 * tol * max(np.abs(y).max(), 1.0):
            return y
        raise RuntimeError("fixed_point: Newton's method did not converge")

    def rates(self, y) -> np.ndarray:
        """Relaxation rates at a fixed point: −eigenvalues of the reduced Jacobian, sorted
        ascending by real part (the first is the slowest mode)."""
        ev = np.linalg.eigvals(self.jacobian(y))
        return np.sort_complex(-ev)

    # -- verification -------------------------------------------------------------------------
    def verify(self, t=None, *, scale: float = 0.05, init=None, rtol: float = 1e-13, tol: float = 3e-11) -> Verification:
        """Integrate the reduced ODE and the full Gram-space ODE (``ufm.solve``, space="gram")
        from the same symmetric state (isotropic Grams by default) and compare the expanded
        logits, G_W and G_H: max over saves of ‖reduced − full‖_F / ‖full‖_F.

        The reduced side uses ``self.par`` as it is when called. Measured on the factorial,
        hierarchy and balanced problems of the tests and derivations (CE and MSE, bias, λ_E,
        coupled): <= 7.3e-12; ``tol`` = 3e-11.
        """
        import ufm
        t = np.concatenate([[0.0], np.geomspace(1e-2, 3e3, 40)]) if t is None else np.asarray(t, float)
        y0 = self.isotropic(scale) if init is None else np.asarray(init, float)
        rt = self.solve(t, init=y0, rtol=rtol, atol=1e-16)
        gt = ufm.solve(self.model, self.gram_state(y0), t, space="gram", rtol=rtol, atol=1e-16)
        Z, GW, GH = rt.grams()
        disc = {}
        for name, a, b in (("logits", Z, gt.logits), ("G_W", GW, gt.gram_W), ("G_H", GH, gt.gram_H)):
            a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
            nb = np.linalg.norm(b2, axis=1)
            ok = nb > 0
            disc[f"{name} (max relative Frobenius)"] = float(np.max(np.linalg.norm(a2 - b2, axis=1)[ok] / nb[ok]))
        return Verification(f"reduced ODE vs Gram-space ufm.solve: {self.model.problem.name}, {self.model.kind}",
                            disc, {k: tol for k in disc},
                            {"reduced state size": self.size, "Gram state size": self.model.K * self.model.N
                             + self.model.K ** 2 + self.model.N ** 2, "t range": f"[{t[0]:g}, {t[-1]:g}]",
                             "integrated by": "ufm.solve(space='reduced')"})

    def width_study(self, widths=(16, 64, 256, 1024), *, scale: float = 0.1, t=None, seeds=(0, 1, 2)) -> dict:
        """Parameter-space runs from ``model.init(d, scale)`` against the reduced ODE from
        isotropic Grams s²I (their d → ∞ limit).

        The error at width d is the max over saves of the relative Frobenius distance between
        the joint Grams [[G_W, M], [Mᵀ, G_H]] (the Gram of [W; Hᵀ]), averaged over seeds.

        Returns:
            dict: ``widths``, ``errors`` (mean per width), ``per_seed``, ``slope`` (fitted
            exponent of error ∝ d^slope; −1/2 expected from the law of large numbers).
        """
        import ufm
        t = np.geomspace(1e-1, 300, 30) if t is None else np.asarray(t, float)
        Z, GW, GH = self.solve(t, scale=scale).grams()

        def joint(Z, GW, GH):
            top = np.concatenate([GW, Z], axis=2)
            bot = np.concatenate([np.transpose(Z, (0, 2, 1)), GH], axis=2)
            return np.concatenate([top, bot], axis=1)

        ref = joint(Z, GW, GH).reshape(len(t), -1)
        per = []
        for d in widths:
            errs = []
            for seed in seeds:
                tr = ufm.solve(self.model, self.model.init(d, scale=scale, seed=seed), t, rtol=1e-9, atol=1e-14)
                J = joint(tr.logits, tr.gram_W, tr.gram_H).reshape(len(t), -1)
                errs.append(float(np.max(np.linalg.norm(J - ref, axis=1) / np.linalg.norm(ref, axis=1))))
            per.append(errs)
        errors = np.mean(per, axis=1)
        slope = float(np.polyfit(np.log(widths), np.log(errors), 1)[0])
        return {"widths": list(widths), "errors": errors, "per_seed": per, "slope": slope}

    def linearisation_check(self, y_star, *, eps: float = 1e-6, n_modes: int = 4, decades: float = 1.0,
                            tol: float = 5e-6) -> Verification:
        """Linearisation rates at a fixed point vs decay rates measured with ``ufm.solve``.

        For the ``n_modes`` slowest distinct real eigenvalues r_k of the reduced Jacobian, start
        the full Gram-space ODE at y* + ε·v_k (v_k the eigenvector, expanded to full matrices),
        project the deviation y(t) − y* on the left eigenspace of r_k (rows of V⁻¹) and fit
        log|projection| linearly over t ∈ [0, 2.3·decades/r_k] (``decades`` factors of 10).

        The predicted rates and eigenvectors come from ``self.jacobian`` when called.

        Returns:
            Verification with the relative difference of each measured rate; ``tol`` = 5e-6
            (measured <= 8.7e-7 on factorial (3, 3), hierarchy (2, 3) and balanced (5, 3) at
            λ = 1e-2 … 2e-2, four modes each).
        """
        import ufm
        from ..models import GramState
        J = self.jacobian(y_star)
        ev, V = np.linalg.eig(J)
        Vinv = np.linalg.inv(V)          # rows: left eigenvectors, biorthogonal to the columns of V
        real = np.flatnonzero(np.abs(ev.imag) < 1e-12 * np.abs(ev).max())
        real = real[np.argsort(-ev.real[real])]
        disc, details = {}, {}
        chosen, seen = [], []
        for k in real:
            if any(abs(ev.real[k] - x) < 1e-6 * abs(ev.real[k]) for x in seen):
                continue      # skip degenerate eigenvalues: their eigenvectors are not unique
            seen.append(ev.real[k])
            chosen.append(k)
            if len(chosen) == n_modes:
                break
        for k in chosen:
            rate = -ev.real[k]
            v = np.real(V[:, k])
            v = v / np.abs(v).max()
            # a degenerate eigenvalue: measure the whole eigenspace (its eigenvectors are not unique)
            cluster = np.flatnonzero(np.abs(ev - ev[k]) < 1e-6 * abs(ev[k]))
            y0 = y_star + eps * np.abs(y_star).max() * v
            t = np.linspace(0.0, 2.3 * decades / rate, 12)[1:]
            with warnings.catch_warnings():
                # the fixed point may have rank-deficient Grams (e.g. NC1); that is the point studied
                warnings.simplefilter("ignore", UserWarning)
                gt = ufm.solve(self.model, self.gram_state(y0), t, space="gram", rtol=1e-13, atol=1e-18,
                               save=("gram_W", "gram_H", "logits") + (("b",) if self.ode.bias else ()))
            proj = []
            for j in range(len(t)):
                b = gt.b[j] if self.ode.bias else None
                Mj = gt.logits[j] - (b[:, None] if b is not None else 0.0)
                yk, _ = self.state_of(GramState(Mj, gt.gram_W[j], gt.gram_H[j], b))
                proj.append(np.linalg.norm(Vinv[cluster] @ (yk - y_star)))
            slope = -np.polyfit(t, np.log(proj), 1)[0]
            disc[f"rate {rate:.6g} (relative)"] = abs(slope - rate) / rate
            details[f"mode {len(details)}"] = f"predicted {rate:.8g}, measured {slope:.8g}"
        return Verification("linearisation rates vs decay measured with ufm.solve (Gram space)", disc,
                            {k: tol for k in disc}, details)

    def __repr__(self):
        return (f"ReducedModel({self.bound.scheme}, loss={self.ode.loss!r}, bias={self.ode.bias}, "
                f"state size {self.size})")


def reduce(model) -> ReducedModel:
    """The exact reduced ODE of ``model`` on relation coefficients (module docstring).

    Arguments:
        model: a :class:`ufm.UFM` whose problem is balanced, factorial or hierarchy (one-hot
            labels, equal weights, possibly samples per context and a label permutation) and
            whose coupling is None or a constant Θ in the span of the relations (e.g.
            ``problem.coupling("attribute", β)``). λ_E, bias and both losses are supported.

    Returns:
        :class:`ReducedModel`: symbolic equations (``.equations()``), numeric right-hand
        side, integration from isotropic Grams (``.solve``), expansion to full Grams, fixed
        points (``.fixed_point``) and the linearisation (``.jacobian``, ``.rates``).

    Raises:
        ValueError: a problem without a matching scheme, a time-dependent coupling, or a
            coupling outside the scheme's algebra.
    """
    from ..models import PiecewiseCoupling
    if isinstance(model.coupling, PiecewiseCoupling):
        raise ValueError("model: the reduction needs a constant coupling Θ, got a PiecewiseCoupling")
    bound = bind(model.problem)
    theta = bound.coupling_coefficients(model.coupling)
    beta = None
    sc = bound.scheme
    if model.coupling is not None and sc.attribute_coefficients is not None:
        s = np.array([bound.num(x) for x in sc.attribute_coefficients])
        e0 = np.zeros_like(s)
        e0[0] = 1.0
        # Θ = I + β² AᵀA  <=>  θ − e_0 is a non-negative multiple of s
        c = float(np.dot(theta - e0, s) / np.dot(s, s))
        if c >= 0 and np.allclose(theta, e0 + c * s, rtol=0, atol=1e-12 * max(1.0, np.abs(theta).max())):
            beta = math.sqrt(c)
    ode = reduced_ode(sc, model.loss_name, model.bias)
    return ReducedModel(model, bound, ode, theta, beta)


@dataclass(eq=False)
class SymbolicModel:
    """The loss and the vector field of a model as sympy expressions on the symmetric ansatz.

    Attributes:
        state: the ansatz coordinates (relation coefficients m_a, w_a, h_a and b).
        field: state symbol -> d/dt as a sympy expression in the state, the logit-gradient
            coefficients g_a and the model's symbols (η, λ, β — Θ = I + β²AᵀA — and the
            scheme's size symbols).
        gradient: g_a -> its expression in the state (softmax with valencies, or residual).
        loss: the objective ℓ + λ_W/2 tr G_W + λ_H/2 tr G_H (+ λ_b/2‖b‖²) on the ansatz.
        values: symbol -> number for this model (rates, decays, β, sizes).
        reduced: the numeric :class:`ReducedModel`.
    """

    state: tuple
    field: dict
    gradient: dict
    loss: sp.Expr
    values: dict
    reduced: ReducedModel

    def full_field(self) -> dict:
        """The field with the g_a substituted (state and parameters only)."""
        return {y: f.xreplace(self.gradient) for y, f in self.field.items()}

    def evaluate(self, expr):
        """Substitute this model's numbers into an expression."""
        return sp.sympify(expr).subs(self.values)


def symbolic(model) -> SymbolicModel:
    """Symbolic form of ``model``: loss and gradient-flow field on the scheme's ansatz.

    The ansatz is the span of the association scheme (M = Σ m_aB_a, G_W = Σ w_aC_a,
    G_H = Σ h_aR_a), which contains every state reachable from isotropic Grams, so these
    expressions hold for all parameter values — the sizes stay symbols (q_f, K, n).

    Raises:
        ValueError: as :func:`reduce`.
    """
    r = reduce(model)
    sub = r.substitutions(sizes=False)
    field = {y: f.xreplace(sub) for y, f in zip(r.ode.state, r.ode.field_in_g)}
    gradient = dict(zip(r.ode.g, r.ode.g_of_state))
    values = {q: v for q, v in r.bound.values.items()}
    values.update({S.eta_W: model.lr_W, S.eta_H: model.lr_H, S.eta_b: model.lr_b, S.lambda_W: model.lambda_W,
                   S.lambda_H: model.lambda_H, S.lambda_b: model.lambda_b, S.lambda_E: model.lambda_E})
    if r.beta is not None:
        values[S.beta] = r.beta
    return SymbolicModel(r.ode.state, field, gradient, r.ode.objective, values, r)


def _relation_logit_gradient(ode, z, valency, N):
    """Relation coefficients of G = ∂ℓ/∂Z from those of the logits z (one per relation).

    Each column of Z holds relation value z_r on valency_r entries, so the softmax is
    e^{z_r} / Σ_s valency_s e^{z_s} (CE) or z_r (MSE), minus 1 on the label relation, over N.
    """
    if ode.loss == "ce":
        e = np.exp(z - z.max())
        g = e / np.dot(valency, e)
    else:
        g = np.array(z, dtype=float, copy=True)
    g[ode.scheme.label] -= 1.0
    return g / N
