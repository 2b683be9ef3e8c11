"""Exact reduction of the Gram-space ODE for factorial schemes; width study."""

from __future__ import annotations

import numpy as np

from ufm.theory.derivations._reduction import pointwise, show_scheme
from ufm.theory.derivations._report import Report


def run() -> int:
    import ufm
    from ufm.theory.reduce import reduce

    rep = Report("scheme_reduction_factorial: relation-coefficient ODE of the coupled UFM on factorial problems")
    cases = []
    for levels, beta in (((3, 3), 1.0), ((2, 2, 2), 0.7)):
        p = ufm.settings.factorial(levels)
        cases.append(ufm.UFM(p, lambda_W=1e-3, lambda_H=2e-3, coupling=p.coupling("attribute", beta)))
    p = ufm.settings.factorial((2, 3), samples_per_context=2, label_permutation="random", seed=1)
    cases.append(ufm.UFM(p, loss="mse", lambda_W=0.03, lambda_H=0.02, lambda_E=0.01, bias=True,
                         coupling=p.coupling("attribute", 0.6), lr_W=1.3, lr_H=0.8))
    for model in cases:
        rep.section(f"{model.problem.name}, {model.loss_name}, {model.kind}" + (", bias" if model.bias else ""))
        if model is cases[0]:
            show_scheme(rep, model)
        pointwise(rep, model)
        rep.verification(reduce(model).verify())
    rep.section("width study: parameter space from model.init(d, s) → the reduced ODE from s²I as d grows")
    r = reduce(cases[0])
    ws = r.width_study(widths=(16, 64, 256, 1024), scale=0.1)
    for d, e in zip(ws["widths"], ws["errors"]):
        rep.line(f"  d = {d:5d}: max relative error of the joint Gram = {e:.4f}")
    rep.line(f"  fitted exponent: error ∝ d^{ws['slope']:.3f} (law of large numbers: −1/2)")
    rep.check("the error decreases with the width", np.all(np.diff(ws["errors"]) < 0))
    rep.check("exponent close to −1/2", abs(ws["slope"] + 0.5) < 0.1, f"{ws['slope']:.3f}")
    return rep.finish()


if __name__ == "__main__":   # python derivations/scheme_reduction_factorial.py (ufm installed)
    import sys
    sys.exit(run())
