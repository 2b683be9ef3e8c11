"""Regularised CE minimiser (Zhu et al. 2021) from stationarity on the ETF ansatz."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ufm.theory.derivations._report import Report


def ce_cases():
    """(label, model): generic points and one near the threshold K√(nλ_Wλ_H) = 0.95."""
    import ufm
    out = []
    for K, n, lw, lh in ((4, 2, 5e-3, 1e-2), (3, 3, 2e-2, 1e-2), (5, 1, 1e-3, 1e-3)):
        out.append((f"K={K}, n={n}, λ_W={lw:g}, λ_H={lh:g}", ufm.UFM(ufm.settings.balanced(K, n), lambda_W=lw, lambda_H=lh)))
    K, n = 4, 2
    lam = 0.95 / (K * np.sqrt(n))
    out.append((f"K={K}, n={n}, K√(nλλ) = 0.95 (near threshold)", ufm.UFM(ufm.settings.balanced(K, n), lambda_W=lam, lambda_H=lam)))
    lam = 1.05 / (K * np.sqrt(n))
    out.append((f"K={K}, n={n}, K√(nλλ) = 1.05 (beyond: W = H = 0)", ufm.UFM(ufm.settings.balanced(K, n), lambda_W=lam, lambda_H=lam)))
    return out


def run() -> int:
    import ufm
    from ufm.theory import symbols as S
    from ufm.theory.fixed_points import c_sym, ce_symbolic, fixed_point, in_terms_of_c

    rep = Report("ce_fixed_point: regularised CE UFM (mean loss), ansatz W = uΦ_ETF, h_i = vφ_{y_i}")
    d = ce_symbolic()
    K, n = S.K, S.n
    rep.show("L(u, v)", d["L"])
    rep.show("u ∂L/∂u − v ∂L/∂v (balance)", d["balance"])
    rep.show("h_i / w_{y_i} = v/u", d["ratio"])
    rep.show("margin m*", d["margin"])
    rep.show("‖w_k‖² (through m)", d["u2"])
    rep.show("loss at the minimiser (through m)", d["loss"])
    rep.check_equal("h = √(λ_W/(nλ_H)) w (docs/theory.md)", d["ratio"], sp.sqrt(S.lambda_W / (n * S.lambda_H)))
    rep.check_equal("m = ln(1/√(nλ_Wλ_H) − (K−1)) (docs/theory.md)", d["margin"],
                    sp.log(1 / sp.sqrt(n * S.lambda_W * S.lambda_H) - (K - 1)))
    rep.check_equal("‖w_k‖² = ((K−1)/K)√(nλ_H/λ_W)·m (docs/theory.md)", d["u2"],
                    (K - 1) / K * sp.sqrt(n * S.lambda_H / S.lambda_W) * d["m"])
    rep.check_zero("∂L/∂u = 0 at the solution", d["stationarity"][0].subs(
        {sp.Symbol("u", positive=True): sp.sqrt(d["u2"].subs(d["m"], d["margin"])),
         sp.Symbol("v", positive=True): sp.sqrt(d["v2"].subs(d["m"], d["margin"]))}))
    value_c = in_terms_of_c(d["loss"].subs(d["m"], d["margin"]))
    rep.show("loss through c = √(nλ_Wλ_H)", sp.simplify(value_c))
    rep.line("existence: m* > 0 ⇔ 1/c − (K − 1) > 1 ⇔ K c < 1 (else W = H = 0, loss ln K)")
    rep.check_zero("m* = 0 exactly at Kc = 1", in_terms_of_c(d["margin"]).subs(c_sym, 1 / K))

    rep.section("the reduced ODE of the balanced scheme vanishes at the derived point (symbolic K, n)")
    from ufm.theory.reduce import reduced_ode
    from ufm.theory.scheme import factorial_scheme
    ode = reduced_ode(factorial_scheme(1, True), "ce", False)
    u2_, v2_ = d["u2"].subs(d["m"], d["margin"]), d["v2"].subs(d["m"], d["margin"])
    uv_ = d["uv"].subs(d["m"], d["margin"])
    Kq, nq = factorial_scheme(1, True).sizes
    # relation coefficients of the ETF fixed point: logits (label, other), G_W (identity,
    # different class), G_H (identity, same class, different class)
    state = {ode.m[0]: uv_, ode.m[1]: -uv_ / (K - 1), ode.w[0]: u2_, ode.w[1]: -u2_ / (K - 1),
             ode.h[0]: v2_, ode.h[1]: v2_, ode.h[2]: -v2_ / (K - 1)}
    sub = {**state, **{th: (1 if a == 0 else 0) for a, th in enumerate(ode.theta)}, Kq: K, nq: n,
           S.lambda_E: 0}
    for name, f in zip([str(s) for s in ode.state], ode.field):
        rep.check_zero(f"d{name}/dt at the ETF", sp.simplify(f.xreplace(sub)))

    rep.section("numerical confirmation: ufm.solve (Gram space) to convergence from a generic init")
    for lab, model in ce_cases():
        fp = fixed_point(model)
        rep.line(f"{lab}: exists = {fp.exists}, margin = {fp.values['margin']:.6g}, loss = {fp.values['loss']:.12g}")
        rep.verification(fp.verify())
    rep.section("coupled UFM (Θ = I + β²AᵀA, λ_E = 0): the same fixed point")
    p = ufm.settings.factorial((3, 3))
    for beta in (0.5, 2.0):
        model = ufm.UFM(p, lambda_W=1e-2, lambda_H=2e-2, coupling=p.coupling("attribute", beta))
        fp = fixed_point(model)
        rep.line(fp.notes)
        rep.verification(fp.verify())
    rep.section("bias with λ_b > 0: the optimal bias is 0")
    model = ufm.UFM(ufm.settings.balanced(4, 2), lambda_W=5e-3, lambda_H=1e-2, bias=True, lambda_b=0.05)
    rep.verification(fixed_point(model).verify())
    return rep.finish()


if __name__ == "__main__":   # python derivations/ce_fixed_point.py (ufm installed)
    import sys
    sys.exit(run())
