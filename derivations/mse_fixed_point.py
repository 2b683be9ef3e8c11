"""Regularised MSE minimiser (Tirer & Bruna 2022; Zhou et al. 2022), derived two ways."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ufm.theory.derivations._report import Report


def mse_cases():
    """(label, model) parameter points: generic, asymmetric decays, near the threshold K√(nλλ) = 0.95."""
    import ufm
    out = []
    for bias in (False, True):
        for K, n, kc_or_l in ((4, 2, (5e-3, 1e-2)), (3, 3, (2e-2, 1e-2)), (4, 2, 0.95)):
            if isinstance(kc_or_l, tuple):
                lw, lh = kc_or_l
                lab = f"K={K}, n={n}, λ_W={lw:g}, λ_H={lh:g}"
            else:
                lw = lh = kc_or_l / (K * np.sqrt(n))
                lab = f"K={K}, n={n}, K√(nλλ)={kc_or_l} (near threshold)"
            out.append((lab + (", bias" if bias else ""), ufm.UFM(ufm.settings.balanced(K, n), loss="mse",
                                                                    lambda_W=lw, lambda_H=lh, bias=bias)))
    return out


def imbalanced_cases():
    import ufm
    p = ufm.Problem.classification([0] * 6 + [1] * 3 + [2] * 1, 3)
    return [(f"sizes (6, 3, 1), λ = {lam}", ufm.UFM(p, loss="mse", lambda_W=lam, lambda_H=lam)) for lam in (0.02, 0.09, 0.12)]


def run() -> int:
    from ufm.theory import symbols as S
    from ufm.theory.fixed_points import c_sym, fixed_point, in_terms_of_c, mse_class_level, mse_imbalanced_symbolic, mse_symbolic, n_k

    rep = Report("mse_fixed_point: regularised MSE UFM, mean loss (1/2N)‖WH (+b1ᵀ) − Y‖² + λ_W/2‖W‖² + λ_H/2‖H‖²")
    rep.section("route 1: class-level nuclear-norm problem (1/2K)‖Z − T‖² + c‖Z‖_*, c = √(nλ_Wλ_H)")
    cl = mse_class_level()
    rep.show("per singular value f(z)", cl["f"])
    rep.show("stationary point z*", cl["z"])
    rep.show("f(z*)", cl["value"])
    K = S.K
    rep.section("route 2: stationarity of the loss on the ansatz W = uΦ, H = vΦᵀY")
    for bias in (False, True):
        d = mse_symbolic(bias)
        rep.line(f"[{'with unregularised bias, EEᵀ = P_K' if bias else 'no bias, ΦΦᵀ = I'}]")
        rep.show("L(u, v)", d["L"])
        if bias:
            rep.show("optimal bias b_0", d["bias"])
        rep.show("‖w_k‖² (eigenvalue of WWᵀ)", d["u2"])
        rep.show("eigenvalue of H̄ᵀH̄", d["v2"])
        rep.show("class logit uv", d["uv"])
        rep.show("optimal value", in_terms_of_c(d["loss"]))
        r = d["rank"]
        rep.check_equal(f"{'bias' if bias else 'no bias'}: uv = z* = 1 − Kc", in_terms_of_c(d["uv"]), cl["z"])
        rep.check_equal(f"{'bias' if bias else 'no bias'}: WWᵀ = √(nλ_H/λ_W) − Knλ_H (docs/theory.md)", d["u2"],
                        sp.sqrt(S.n * S.lambda_H / S.lambda_W) - K * S.n * S.lambda_H)
        rep.check_equal(f"{'bias' if bias else 'no bias'}: H̄ᵀH̄ = √(λ_W/(nλ_H)) − Kλ_W (docs/theory.md)", d["v2"],
                        sp.sqrt(S.lambda_W / (S.n * S.lambda_H)) - K * S.lambda_W)
        rep.check_equal(f"{'bias' if bias else 'no bias'}: W = √(nλ_H/λ_W) H̄ᵀ", d["ratio"], sp.sqrt(S.n * S.lambda_H / S.lambda_W))
        rep.check_equal(f"{'bias' if bias else 'no bias'}: value = r·f(z*) = r c(1 − Kc/2), r = {r}",
                        in_terms_of_c(d["loss"]), r * c_sym * (1 - K * c_sym / 2))
        if bias:
            rep.check_equal("optimal bias 1/K", d["bias"], 1 / K)
    rep.line("Existence: u² > 0 ⇔ 1 − K√(nλ_Wλ_H) > 0; otherwise W = H = 0 is the minimiser.")
    rep.check_zero("u²/√(nλ_H/λ_W) = 1 − K√(nλ_Wλ_H)", mse_symbolic(False)["u2"] / sp.sqrt(S.n * S.lambda_H / S.lambda_W)
                   - (1 - K * sp.sqrt(S.n * S.lambda_W * S.lambda_H)))

    rep.section("imbalanced classes, no bias (per-class problem)")
    di = mse_imbalanced_symbolic()
    rep.show("L_k(u, v)", di["L_k"])
    rep.show("‖w_k‖²", di["u2"])
    rep.check_equal("‖w_k‖² = √(λ_H/λ_W)(√n_k − N√(λ_Wλ_H)) (docs/theory.md)", di["u2"],
                    sp.sqrt(S.lambda_H / S.lambda_W) * (sp.sqrt(n_k) - S.N * sp.sqrt(S.lambda_W * S.lambda_H)))
    rep.line("class k vanishes iff n_k <= N²λ_Wλ_H (minority collapse)")

    rep.section("numerical confirmation: ufm.solve (Gram space) to convergence from a generic init")
    for lab, model in mse_cases() + imbalanced_cases():
        fp = fixed_point(model)
        rep.line(f"{lab}: exists = {fp.exists}" + (f", alive = {fp.values['alive']}" if "alive" in fp.values else ""))
        rep.verification(fp.verify())
    return rep.finish()


if __name__ == "__main__":   # python derivations/mse_fixed_point.py (ufm installed)
    import sys
    sys.exit(run())
