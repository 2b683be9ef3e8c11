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

The coefficients are tabulated to 16 digits, so the conditions are checked to 1e-12 (a mistyped
digit breaks one by far more). The step itself lives in :mod:`ufm.kernels.rosenbrock`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .solvers import _density, rooted_trees

__all__ = ["RosenbrockMethod", "RODAS4", "ROSENBROCK_METHODS", "rosenbrock_order_defects"]

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


def rosenbrock_order_defects(alpha, gamma_matrix, b, order: int):
    """Largest |Σ_j b_j Φ_j(t) − 1/γ(t)| per order 1..``order`` (a list).

    Arguments:
        alpha: (s, s) strictly lower triangular α. gamma_matrix: (s, s) lower triangular Γ
        (diagonal γ). b: (s,) weights. order: highest order checked.
    """
    beta = alpha + gamma_matrix
    out = []
    for q in range(1, order + 1):
        out.append(max(abs(float(b @ _phi(t, alpha, beta)) - 1.0 / _density(t)) for t in rooted_trees(q)))
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
        for label, w, q in (("m", b, self.order), ("m_embedded", bh, self.error_order)):
            defects = rosenbrock_order_defects(alpha, Gam, w, q)
            for k, dft in enumerate(defects, start=1):
                if not dft <= ORDER_TOL:
                    raise ValueError(f"{self.name}: a Rosenbrock order condition of order {k} fails for {label} "
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

ROSENBROCK_METHODS = {RODAS4.name: RODAS4}
