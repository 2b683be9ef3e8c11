"""Unregularised CE: max-margin direction, the margin ODE on the symmetric manifold, SELI."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ufm.theory.derivations._report import Report


def run() -> int:
    import ufm
    from ufm.theory import symbols as S
    from ufm.theory.closed_forms import ce_margin, margin_symbolic
    from ufm.theory.fixed_points import ce_symbolic, max_margin, max_margin_symbolic, seli

    rep = Report("max_margin: gradient flow of unregularised CE (Ji et al. 2022; Lyu & Li 2020)")
    rep.section("min ½(‖W‖² + ‖H‖²) s.t. margins >= 1 on the ETF ansatz (Lagrange)")
    d = max_margin_symbolic()
    rep.show("‖w_k‖²", d["u2"])
    rep.show("‖h_i‖²", d["v2"])
    rep.show("h_i / w_{y_i}", d["ratio"])
    rep.check_equal("‖w_k‖² = (K−1)√n/K (docs/theory.md)", d["u2"], (S.K - 1) * sp.sqrt(S.n) / S.K)
    rep.check_equal("h_i = w_{y_i}/√n (docs/theory.md)", d["ratio"], 1 / sp.sqrt(S.n))
    ce = ce_symbolic()
    rep.check_equal("the regularised minimiser with λ_W = λ_H has the same h/w ratio at every λ",
                    ce["ratio"].subs(S.lambda_H, S.lambda_W), d["ratio"])

    rep.section("margin ODE on the symmetric manifold W = aΦ, h_i = bφ_{y_i}, a² = nb²")
    mg = margin_symbolic()
    rep.show("dm/dt", mg["ode"])
    rep.show("F(m) with F(m(t)) = F(m₀) + 2t/√n", mg["antiderivative"])
    m = sp.Symbol("m", positive=True)
    rep.check_equal("dm/dt = (2/√n) m/(e^m + K − 1) (docs/theory.md)", mg["rate"], 2 / sp.sqrt(S.n) * m / (sp.exp(m) + S.K - 1))
    rep.check_equal("F(m) = Ei(m) + (K−1) ln m", sp.expand_log(mg["antiderivative"], force=True),
                    sp.Ei(m) + (S.K - 1) * sp.log(m))
    for K, n, m0 in ((3, 1, 0.01), (4, 2, 0.5), (10, 1, 1.0)):
        r = ce_margin(ufm.UFM(ufm.settings.balanced(K, n)), m0)
        rep.line(f"K={K}, n={n}, m₀={m0}")
        rep.verification(r.verify())

    rep.section("direction of the flow from a generic init (balanced): logarithmic convergence")
    for K, n in ((3, 2), (4, 1)):
        r = max_margin(ufm.UFM(ufm.settings.balanced(K, n)))
        rep.line(f"K={K}, n={n}")
        rep.verification(r.verify())

    rep.section("SELI (imbalanced, λ → 0): KKT check of Ẑ = P_K Y for min ‖Z‖_* s.t. margins >= 1")
    for sizes in ((3, 1, 1), (5, 5, 1, 1), (4, 2, 1)):
        labels = np.repeat(np.arange(len(sizes)), sizes)
        s = seli(ufm.Problem.classification(labels, len(sizes)))
        rep.check(f"class sizes {sizes}: off-label entries of UVᵀ <= 0 (SELI optimal)", s.values["kkt_holds"],
                  f"max off-label entry {s.values['kkt_max_offlabel']:.3e}")
    # the unregularised flow from a generic init approaches the SELI directions
    for sizes in ((3, 1, 1), (4, 2, 1)):
        labels = np.repeat(np.arange(len(sizes)), sizes)
        rep.line(f"class sizes {sizes}: unregularised CE from a generic init")
        rep.verification(seli(ufm.Problem.classification(labels, len(sizes))).verify())
    return rep.finish()


if __name__ == "__main__":   # python derivations/max_margin.py (ufm installed)
    import sys
    sys.exit(run())
