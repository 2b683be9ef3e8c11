"""Linearisation at the MSE and CE minimisers, split into symmetry sectors."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ufm.theory.derivations._report import Report


def run() -> int:
    import ufm
    from ufm.theory import symbols as S
    from ufm.theory.spectra import ce_within_class_symbolic, d_sym, jacobian_spectrum, mse_jacobian_symbolic, spectrum

    rep = Report("hessian_spectrum: relaxation rates = Hessian eigenvalues at the minimiser (Θ = I, η = 1)")
    rep.section("MSE, no bias: all sectors (multiplicities in K, n, width d)")
    d = mse_jacobian_symbolic()
    for name, rate, mult in d["sectors"]:
        rep.show(f"{name}   [multiplicity {sp.factor(mult)}]", rate, latex=False)
    rep.check_equal("multiplicities add up to d(K + N)", d["total"], d_sym * (S.K + S.K * S.n))
    rates = {name: rate for name, rate, _ in d["sectors"]}
    rep.check_equal("within-class rate in the row space of W = (1/K)√(λ_H/(nλ_W)) (docs/theory.md)",
                    rates["within-class, row space of W"], sp.sqrt(S.lambda_H / (S.n * S.lambda_W)) / S.K)
    rep.check_equal("within-class rate outside the row space = λ_H (docs/theory.md)",
                    rates["within-class, outside the row space"], S.lambda_H)
    rep.line("For λ_W = λ_H = λ and n = 1/(K²λ²)·x the row-space rate √(λ_H/(nλ_W))/K exceeds λ_H: feature decay, "
             "not the loss, sets the slowest NC1 mode (docs/theory.md).")
    for K, n, lw, lh, dd in ((3, 2, 0.02, 0.05, 5), (4, 2, 0.01, 0.01, 6), (3, 3, 0.05, 0.01, 4)):
        model = ufm.UFM(ufm.settings.balanced(K, n), loss="mse", lambda_W=lw, lambda_H=lh)
        r = jacobian_spectrum(model, dd)
        rep.line(f"K={K}, n={n}, λ_W={lw}, λ_H={lh}, d={dd}")
        rep.verification(r.verify())

    rep.section("CE at the ETF: within-class sector (NC1 relaxation)")
    c = ce_within_class_symbolic()
    rep.show("last eigenvalue of the softmax Hessian S_k", c["last_eigenvalue"])
    rep.show("p_− at the fixed point (through m)", c["p_minus_of_m"])
    for name, rate, mult in c["sectors"]:
        rep.show(f"{name}   [multiplicity {sp.factor(mult)}]", rate, latex=False)
    for K, n, lw, lh, dd in ((3, 3, 0.02, 0.01, 5), (4, 2, 0.005, 0.01, 6), (2, 3, 0.01, 0.02, 4)):
        model = ufm.UFM(ufm.settings.balanced(K, n), lambda_W=lw, lambda_H=lh)
        r = jacobian_spectrum(model, dd)
        rep.line(f"K={K}, n={n}, λ_W={lw}, λ_H={lh}, d={dd}: sectors {[(nm, round(x, 6), m) for nm, x, m in r.values['sectors']]}")
        rep.verification(r.verify())

    rep.section("symmetric sector at the CE minimiser (reduced Jacobian) and Gram spectra via the scheme")
    model = ufm.UFM(ufm.settings.balanced(4, 2), lambda_W=5e-3, lambda_H=1e-2)
    out = spectrum(model)
    for key, rows in out["gram"].items():
        rep.line(f"{key}: " + ", ".join(f"{nm}: {ev:.6g} (×{m})" for nm, ev, m in rows))
    fp = ufm.theory.fixed_point(model)
    for key in ("G_W", "G_H"):
        ev = np.sort(np.linalg.eigvalsh(fp.values[key]))
        pred = np.sort(np.concatenate([[x] * m for _, x, m in out["gram"][key]]))
        rep.check(f"{key} spectrum from the eigenmatrix equals numpy's", np.abs(ev - pred).max() < 5e-14 * max(1, ev.max()),
                  f"max error {np.abs(ev - pred).max():.1e}")
    rep.line("rates of the symmetric sector: " + np.array2string(np.real(out["reduced"]), precision=5))
    return rep.finish()


if __name__ == "__main__":   # python derivations/hessian_spectrum.py (ufm installed)
    import sys
    sys.exit(run())
