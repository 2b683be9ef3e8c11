"""Rosenbrock–Wanner (linearly implicit) methods as data, for stiff UFM flows.

A Rosenbrock method solves, per step, s linear systems with the exact Jacobian J at the step's
start (Hairer & Wanner, Solving ODEs II, §IV.7, in the form without matrix-vector products)::

    (I/(hγ) − J) u_i = f(y + Σ_{j<i} a_ij u_j) + Σ_{j<i} (c_ij / h) u_j,
    y_new = y + Σ_i m_i u_i,    error estimate Σ_i e_i u_i.

These transformed coefficients relate to the classical ones (α, Γ = (γ_ij) lower triangular
with diagonal γ, weights b) by Γ⁻¹ = diag(1/γ) − C, a = α Γ⁻¹, m = b Γ⁻¹. A
:class:`RosenbrockMethod` converts back on construction and checks

* the Rosenbrock order conditions up to the stated order for the propagated weights b and up
  to the error order for the embedded weights b̂ (on all rooted trees: Σ_j b_j Φ_j(t) = 1/γ(t)
  with Φ built from α at vertices with several children and from β = α + Γ at vertices with
  one child, Hairer & Wanner IV.7, Theorem 7.3 in tree form);
* L-stability numerically: |R(z)| ≤ 1 on the imaginary axis and R(−∞) = 0 for the stability
  function R(z) = 1 + z bᵀ (I − z(α + Γ))⁻¹ 1.

* the continuous extension's order conditions at θ = 1/4, 1/2, 3/4 up to ``dense_order``
  (Σ_j b_j(θ) Φ_j(t) = θ^|t|/γ(t));
* for a **W-method** (``w_order`` > 0) the conditions that hold for *any* matrix A in place of
  J (Steihaug & Wolfbrandt 1979; Hairer & Wanner IV.7, "W-methods"): on bicoloured trees, where
  a vertex with one child is either an f-vertex (weight α) or an A-vertex (weight Γ), the
  f-only trees give Σ_j b_j Φ_j(t) = 1/γ(t) with Φ built from α alone and every tree with an
  A-vertex gives Σ_j b_j Φ_j(t) = 0 (the exact solution has no A-terms). Such a method keeps
  its order with a stale Jacobian, so the driver may reuse J and the LU of I/(hγ) − J over many
  steps (:mod:`ufm.kernels.rosenbrock`). RODAS4 is a W-method of order 1 only.

The coefficients are tabulated to 16 digits, so the conditions are checked to 1e-12 (a mistyped
digit breaks one by far more). The step itself lives in :mod:`ufm.kernels.rosenbrock`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .solvers import _density, rooted_trees

__all__ = ["RosenbrockMethod", "RODAS4", "ROS34PW2", "ROSENBROCK_METHODS", "rosenbrock_order_defects",
           "w_order_defects", "transformed_coefficients"]

#: the order conditions must hold to this (the coefficients carry 16 significant digits)
ORDER_TOL = 1e-12


def _phi(tree, alpha, beta):
    """Rosenbrock elementary weights Φ(t) (vector over stages)."""
    s = alpha.shape[0]
    if not tree:
        return np.ones(s)
    if len(tree) == 1:
        return beta @ _phi(tree[0], alpha, beta)
    v = np.ones(s)
    for child in tree:
        v = v * (alpha @ _phi(child, alpha, beta))
    return v


def rosenbrock_order_defects(alpha, gamma_matrix, b, order: int, theta: float = 1.0):
    """Largest |Σ_j b_j Φ_j(t) − θ^|t|/γ(t)| per order 1..``order`` (a list; θ = 1: the step's
    weights, θ in (0, 1): the continuous extension's weights b(θ) at t + θh).

    Arguments:
        alpha: (s, s) strictly lower triangular α. gamma_matrix: (s, s) lower triangular Γ
        (diagonal γ). b: (s,) weights. order: highest order checked.
    """
    beta = alpha + gamma_matrix
    out = []
    for q in range(1, order + 1):
        out.append(max(abs(float(b @ _phi(t, alpha, beta)) - theta ** q / _density(t)) for t in rooted_trees(q)))
    return out


def _bicoloured(tree):
    """The W-method trees over a rooted tree: every vertex with one child as an f-vertex
    ("f", children) or an A-vertex ("A", children)."""
    import itertools
    for kids in itertools.product(*(tuple(_bicoloured(c)) for c in tree)):
        yield ("f", kids)
        if len(tree) == 1:
            yield ("A", kids)


def _phi_w(tree, alpha, gamma_matrix):
    colour, kids = tree
    if colour == "A":
        return gamma_matrix @ _phi_w(kids[0], alpha, gamma_matrix)
    v = np.ones(alpha.shape[0])
    for child in kids:
        v = v * (alpha @ _phi_w(child, alpha, gamma_matrix))
    return v


def _has_a(tree) -> bool:
    return tree[0] == "A" or any(_has_a(c) for c in tree[1])


def w_order_defects(alpha, gamma_matrix, b, order: int, theta: float = 1.0):
    """The W-method order conditions (module docstring): the largest defect per order
    1..``order`` over the bicoloured trees, |Σ_j b_j Φ_j(t)| for trees with an A-vertex and
    |Σ_j b_j Φ_j(t) − θ^|t|/γ(t)| for the others. Arguments as :func:`rosenbrock_order_defects`."""
    out = []
    for q in range(1, order + 1):
        worst = 0.0
        for t in rooted_trees(q):
            target = theta ** q / _density(t)
            for tw in _bicoloured(t):
                value = float(b @ _phi_w(tw, alpha, gamma_matrix))
                worst = max(worst, abs(value) if _has_a(tw) else abs(value - target))
        out.append(worst)
    return out


def transformed_coefficients(gamma: float, alpha, gamma_lower, b, b_embedded, interpolant=None) -> dict:
    """The classical coefficients of a Rosenbrock method (α, the strictly lower part of Γ,
    weights b and b̂; increments k_i with y_new = y + Σ b_i k_i) in :class:`RosenbrockMethod`'s
    transformed form (a = αΓ⁻¹, C = diag(1/γ) − Γ⁻¹, m = bΓ⁻¹), as keyword arguments.

    ``interpolant`` (s, 3): a cubic continuous extension y(t + θh) = y + Σ_i B_i(θ) k_i with
    B_i(θ) = Σ_r interpolant[i, r] θ^(r+1) (PETSc's ``binterpt`` layout), converted to the
    driver's form (1 − θ) y + θ (y_new + (1 − θ)(k₁ + θ k₂)): expanding that in the
    increments u gives weights θ (m + d₁) + θ² (d₂ − d₁) − θ³ d₂, so d₁ = c₁ − m, d₂ = −c₃
    with c_r = interpolant[:, r − 1]ᵀ Γ⁻¹ (it needs Σ_r c_r = m: B_i(1) = b_i).
    """
    s = len(b)
    Gam = np.array(gamma_lower, dtype=float) + gamma * np.eye(s)
    Ginv = np.tril(np.linalg.inv(Gam))      # lower triangular (inv leaves rounding above the diagonal)
    m = np.asarray(b, dtype=float) @ Ginv
    out = {"gamma": gamma, "a": tuple(map(tuple, np.tril(np.array(alpha, dtype=float) @ Ginv, -1))),
           "C": tuple(map(tuple, np.tril(np.diag(np.full(s, 1.0 / gamma)) - Ginv, -1))),
           "m": tuple(m), "m_embedded": tuple(np.asarray(b_embedded, dtype=float) @ Ginv)}
    if interpolant is not None:
        c = np.asarray(interpolant, dtype=float).T @ Ginv          # (3, s): c_r
        out["dense"] = (tuple(c[0] - m), tuple(-c[2]))
    return out


@dataclass(frozen=True)
class RosenbrockMethod:
    """A Rosenbrock–Wanner method with an embedded error estimate and dense output.

    Arguments:
        name: identifier for ``ufm.solve(method=name)``.
        gamma: the diagonal γ of Γ.
        a: (s, s) strictly lower triangular transformed stage coefficients a_ij.
        C: (s, s) strictly lower triangular transformed coefficients c_ij.
        m: (s,) weights of the propagated solution (order ``order``).
        m_embedded: (s,) weights of the embedded solution (order ``error_order``).
        order, error_order: their orders.
        dense: (2, s) coefficients d of the continuous extension
            y(t + θh) = (1 − θ) y + θ (y_new + (1 − θ)(k₁ + θ k₂)), k_r = Σ_i d[r − 1, i] u_i.
        dense_order: its order.
        w_order, w_error_order, w_dense_order: the orders as a W-method (for any matrix in
            place of the Jacobian; 0: not claimed). A method whose ``w_order`` and
            ``w_error_order`` are its ``order`` and ``error_order`` may reuse its Jacobian and LU
            over steps (:attr:`reuses_jacobian`).

    Raises:
        ValueError: an order condition, the node consistency or L-stability fails (the message
            says which and by how much).
    """

    name: str
    gamma: float
    a: tuple
    C: tuple
    m: tuple
    m_embedded: tuple
    order: int
    error_order: int
    dense: tuple
    dense_order: int
    w_order: int = 0
    w_error_order: int = 0
    w_dense_order: int = 0
    arrays: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        a = np.array(self.a, dtype=float)
        C = np.array(self.C, dtype=float)
        m = np.array(self.m, dtype=float)
        mh = np.array(self.m_embedded, dtype=float)
        s = len(m)
        if a.shape != (s, s) or C.shape != (s, s) or mh.shape != (s,) or np.shape(self.dense) != (2, s):
            raise ValueError(f"{self.name}: expected a, C (s, s), m_embedded (s,) and dense (2, s) with s = {s}")
        if np.any(np.triu(a) != 0) or np.any(np.triu(C) != 0):
            raise ValueError(f"{self.name}: a and C must be strictly lower triangular")
        gamma_inv = np.diag(np.full(s, 1.0 / self.gamma)) - C
        Gam = np.linalg.inv(gamma_inv)
        alpha = a @ Gam
        b = m @ Gam
        bh = mh @ Gam
        D = np.array(self.dense, dtype=float)
        checks = [("m", b, self.order, self.w_order, 1.0), ("m_embedded", bh, self.error_order, self.w_error_order, 1.0)]
        for th in (0.25, 0.5, 0.75):
            # the continuous extension's weights in the increments u (RosenbrockMethod.dense), in k
            bt = (th * (m + D[0]) + th * th * (D[1] - D[0]) - th ** 3 * D[1]) @ Gam
            checks.append((f"dense at θ = {th}", bt, self.dense_order, self.w_dense_order, th))
        for label, w, q, qw, th in checks:
            for kind, defects in (("Rosenbrock", rosenbrock_order_defects(alpha, Gam, w, q, th)),
                                  ("W-method", w_order_defects(alpha, Gam, w, qw, th))):
                for k, dft in enumerate(defects, start=1):
                    if not dft <= ORDER_TOL:
                        raise ValueError(f"{self.name}: a {kind} order condition of order {k} fails for {label} "
                                         f"by {dft:.3g} (tolerance {ORDER_TOL:g})")
        R = lambda z: 1.0 + z * b @ np.linalg.solve(np.eye(s) - z * (alpha + Gam), np.ones(s))  # noqa: E731
        worst_axis = max(abs(R(1j * w)) for w in np.logspace(-3, 6, 200))
        if worst_axis > 1.0 + 1e-10 or abs(R(-1e12)) > 1e-9:
            raise ValueError(f"{self.name}: not L-stable (max |R(iω)| = {worst_axis:.6g}, |R(−1e12)| = "
                             f"{abs(R(-1e12)):.3g})")
        object.__setattr__(self, "arrays", {
            "a": np.ascontiguousarray(a), "C": np.ascontiguousarray(C), "m": m, "e": m - mh,
            "D": np.ascontiguousarray(np.array(self.dense, dtype=float)),
            "alpha": alpha, "Gamma": Gam, "b": b, "b_embedded": bh})

    @property
    def stages(self) -> int:
        return len(self.m)

    @property
    def controller_order(self) -> int:
        """Exponent base of the step controller: 1 + the lower order of the embedded pair."""
        return min(self.order, self.error_order) + 1

    @property
    def adaptive(self) -> bool:
        return True

    @property
    def reuses_jacobian(self) -> bool:
        """Whether the driver may keep J and the LU of I/(hγ) − J over steps: the method keeps
        its orders with any matrix in place of J (checked W-method order conditions)."""
        return self.w_order >= self.order and self.w_error_order >= self.error_order


def _strict(rows, s):
    out = np.zeros((s, s))
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return tuple(map(tuple, out))


# RODAS4: Hairer & Wanner, Solving ODEs II (1996), §VI.4, the coefficients of their code RODAS
# (METH = 1): 6 stages, order 4 with an embedded order-3 solution, stiffly accurate
# (y_new is the last stage value plus the last increment), L-stable, and a continuous extension
# of order 3.
_A51, _A52, _A53, _A54 = 1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950
RODAS4 = RosenbrockMethod(
    name="rodas4",
    gamma=0.25,
    a=_strict(((),
               (1.544,),
               (0.9466785280815826, 0.2557011698983284),
               (3.314825187068521, 2.896124015972201, 0.9986419139977817),
               (_A51, _A52, _A53, _A54),
               (_A51, _A52, _A53, _A54, 1.0)), 6),
    C=_strict(((),
               (-5.6688,),
               (-2.430093356833875, -0.2063599157091915),
               (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
               (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
               (8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136,
                -6.058818238834054)), 6),
    m=(_A51, _A52, _A53, _A54, 1.0, 1.0),
    m_embedded=(_A51, _A52, _A53, _A54, 1.0, 0.0),
    order=4,
    error_order=3,
    dense=((10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823, 1.025137723295662, 0.0),
           (-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386, -6.594389125716872, 0.0)),
    dense_order=3,
)

# ROS34PW2: Rang & Angermann, BIT 45 (2005) 761-787, a 4-stage W-method of order 3 with an
# embedded order-2 solution, stiffly accurate (b = the last row of α + Γ) and L-stable. The
# coefficients as PETSc registers them (src/ts/impls/rosw/rosw.c, TSROSWRA34PW2, also in
# OrdinaryDiffEq.jl's ROS34PW2 tableau), with PETSc's cubic interpolant (binterpt): order 3 as
# a Rosenbrock method, 2 as a W-method (checked below). The construction checks W-orders 3 and
# 2: they hold to 2e-16 and order 4 fails by 0.12 (W) and 0.05 (Rosenbrock), so the stated
# orders are exactly the orders (tests/test_rosenbrock.py).
_G34 = 4.3586652150845900e-01
ROS34PW2 = RosenbrockMethod(
    name="ros34pw2",
    **transformed_coefficients(
        _G34,
        alpha=((0.0, 0.0, 0.0, 0.0),
               (8.7173304301691801e-01, 0.0, 0.0, 0.0),
               (8.4457060015369423e-01, -1.1299064236484185e-01, 0.0, 0.0),
               (0.0, 0.0, 1.0, 0.0)),
        gamma_lower=((0.0, 0.0, 0.0, 0.0),
                     (-8.7173304301691801e-01, 0.0, 0.0, 0.0),
                     (-9.0338057013044082e-01, 5.4180672388095326e-02, 0.0, 0.0),
                     (2.4212380706095346e-01, -1.2232505839045147e+00, 5.4526025533510214e-01, 0.0)),
        b=(2.4212380706095346e-01, -1.2232505839045147e+00, 1.5452602553351020e+00, _G34),
        b_embedded=(3.7810903145819369e-01, -9.6042292212423178e-02, 0.5, 2.1793326075422950e-01),
        interpolant=((1.0564298455794094, -1.3864882699759573, 0.5721822314575016),
                     (2.296429974281067, -8.262611700275677, 4.742931142090097),
                     (-1.307599564525376, 7.250979895056055, -4.398120075195578),
                     (-1.045260255335102, 2.398120075195581, -0.9169932983520199))),
    order=3,
    error_order=2,
    dense_order=3,
    w_order=3,
    w_error_order=2,
    w_dense_order=2,
)

ROSENBROCK_METHODS = {RODAS4.name: RODAS4, ROS34PW2.name: ROS34PW2}
