"""Shared body of the scheme-reduction derivations."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ufm.theory.derivations._report import Report


def show_scheme(rep: Report, model) -> None:
    """Print the scheme, the structure of the reduced ODE and its first equations."""
    from ufm.theory.reduce import reduce, symbolic
    r = reduce(model)
    sc = r.bound.scheme
    rep.line(f"problem {model.problem.name}: {sc}")
    rep.line(f"context relations R_a: {list(sc.R_names)}")
    rep.line(f"logit relations B_a (B_{sc.label} = Y): {list(sc.B_names)}; column valencies {list(sc.col_valency)}")
    rep.show("eigenmatrix P of the context scheme", sc.eigen_R[0])
    if sc.attribute is not None:
        rep.show("AᵀA in the relation basis", sp.Matrix(sc.attribute_coefficients).T)
    sm = symbolic(model)
    rep.line(f"reduced state ({len(sm.state)} scalars, independent of N = {model.N}): {[str(s) for s in sm.state]}")
    rep.line("softmax on relation coefficients: σ_a = e^{z_a}/Σ_c v_c e^{z_c}; logit gradient g_a = (σ_a − [a = label])/N")
    for g, e in list(sm.gradient.items())[:2]:
        rep.show(str(g), e, latex=False)
    for y in sm.state[:1]:
        rep.show(f"d{y}/dt", sm.field[y])
    rep.check("the numeric reduction (the engine's space='reduced') equals the sympy field at a random state",
              bool(np.allclose(r.rhs(y_probe := np.random.default_rng(0).normal(size=r.size)),
                               r.symbolic_rhs(y_probe), rtol=1e-12, atol=1e-13)))


def pointwise(rep: Report, model, seed: int = 0) -> None:
    """Reduced field = projection of the full Gram field at random states of the span."""
    from ufm.theory.reduce import reduce
    r = reduce(model)
    rng = np.random.default_rng(seed)
    worst, spread = 0.0, 0.0
    for _ in range(5):
        y = rng.normal(size=r.size)
        f = model.vector_field(r.gram_state(y))
        yf, sp_ = r.state_of(f)
        worst = max(worst, float(np.abs(r.rhs(y) - yf).max() / np.abs(yf).max()))
        spread = max(spread, sp_)
    rep.check("the full Gram field stays in the span (relative spread within relations)", spread < 5e-15, f"{spread:.1e}; measured <= 7.3e-16")
    rep.check("reduced field = full Gram field, pointwise", worst < 5e-15,
              f"max relative difference {worst:.1e}; measured <= 5.4e-16")
