"""Exact reduction for the hierarchy scheme; fixed point and linearisation of the reduced ODE."""

from __future__ import annotations

import numpy as np

from ufm.theory.derivations._reduction import pointwise, show_scheme
from ufm.theory.derivations._report import Report


def run() -> int:
    import ufm
    from ufm.theory.fixed_points import fixed_point
    from ufm.models import GramState
    from ufm.theory.reduce import reduce

    rep = Report("scheme_reduction_hierarchy: relation-coefficient ODE on the leaves of a tree")
    p = ufm.settings.hierarchy(2, 3)
    model = ufm.UFM(p, lambda_W=1e-2, lambda_H=2e-2, coupling=p.coupling("attribute", 0.7))
    show_scheme(rep, model)
    pointwise(rep, model)
    r = reduce(model)
    rep.verification(r.verify())
    for prob in (ufm.settings.hierarchy(3, 2), ufm.settings.hierarchy(2, 2, samples_per_context=3),
                 ufm.settings.balanced(5, 3)):
        m = ufm.UFM(prob, lambda_W=1e-3, lambda_H=1e-3,
                    coupling=prob.coupling("attribute", 0.5) if prob.attributes is not None else None)
        rep.section(prob.name)
        pointwise(rep, m)
        rep.verification(reduce(m).verify())

    rep.section("fixed point of the reduced ODE and its linearisation (coupled, CE)")
    fp = fixed_point(model)
    y0, _ = r.state_of(GramState(fp.values["M"], fp.values["G_W"], fp.values["G_H"]))
    ys = r.fixed_point(y0)
    rep.check("Newton on the reduced field lands on the derived ETF", np.abs(ys - y0).max() < 1e-14 * np.abs(y0).max(),
              f"max difference {np.abs(ys - y0).max():.1e}")
    rates = r.rates(ys)
    rep.line("relaxation rates (−eigenvalues of the reduced Jacobian): " + np.array2string(np.real(rates), precision=6))
    rep.verification(r.linearisation_check(ys))
    return rep.finish()


if __name__ == "__main__":   # python derivations/scheme_reduction_hierarchy.py (ufm installed)
    import sys
    sys.exit(run())
