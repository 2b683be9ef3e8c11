"""Saxe modes, the UFM mode ODE, the balance law and the Riccati closed form (MSE dynamics)."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ufm.theory.derivations._report import Report


def run() -> int:
    import ufm
    from ufm.theory import symbols as S
    from ufm.theory.closed_forms import (balance_law_symbolic, riccati, riccati_symbolic, s_sym, saxe_modes, saxe_symbolic,
                                tau, u0, ufm_mode, ufm_mode_symbolic)

    rep = Report("saxe_modes: MSE dynamics of the two-layer linear network and the UFM")
    rep.section("one mode: loss ½(ab − s)², balanced a = b, u = ab")
    d = saxe_symbolic()
    rep.show("ODE", d["ode"])
    rep.show("u(t)", d["solution"])
    rep.show("time u₀ → s − u₀", d["learning_time"])
    rep.check_zero("u(t) solves the ODE", sp.diff(d["solution"], S.t) - d["ode"].rhs.subs(d["ode"].lhs.args[0], d["solution"]))
    rep.check_equal("u(t) = s e^{2st/τ}/(e^{2st/τ} − 1 + s/u₀) (docs/theory.md)", d["solution"],
                    s_sym * sp.exp(2 * s_sym * S.t / tau) / (sp.exp(2 * s_sym * S.t / tau) - 1 + s_sym / u0))
    rep.check_zero("learning time ≈ (τ/s) ln(s/u₀) for u₀ → 0 (docs/theory.md)",
                   sp.limit(d["learning_time"] - tau / s_sym * sp.log(s_sym / u0), u0, 0))

    rep.section("UFM, mean loss, aligned balanced init W = aΦ, H = bΦᵀY, a² = nb², λ_W = λ_H = λ")
    m = ufm_mode_symbolic()
    rep.show("d(a² − nb²)/dt ÷ (a² − nb²)", m["imbalance_rate"])
    rep.show("class-logit ODE", m["ode"])
    rep.show("τ", m["tau"])
    rep.show("s", m["s"])
    rep.check_equal("imbalance decays at rate 2λ", m["imbalance_rate"], -2 * S.lam)
    rep.line("fixed point u* = s = 1 − K√nλ = the Tirer–Bruna class logit (mse_fixed_point)")
    for K, n, lam in ((4, 3, 0.0), (4, 3, 0.05), (3, 2, 0.1)):
        r = ufm_mode(ufm.UFM(ufm.settings.balanced(K, n), loss="mse", lambda_W=lam, lambda_H=lam), 1e-3)
        rep.line(f"K={K}, n={n}, λ={lam}")
        rep.verification(r.verify())

    rep.section("several modes: real targets Y = U S Vᵀ, mean loss (τ = N, s = s_α − Nλ)")
    rng = np.random.default_rng(0)
    K, N = 4, 6
    U = np.linalg.qr(rng.normal(size=(K, K)))[0]
    V = np.linalg.qr(rng.normal(size=(N, K)))[0]
    Y = U @ np.diag([3.0, 2.0, 1.0, 0.5]) @ V.T
    for lam in (0.0, 0.02):
        r = saxe_modes(ufm.UFM(ufm.Problem(Y), loss="mse", lambda_W=lam, lambda_H=lam), 1e-4)
        rep.line(f"λ = {lam}: learning order (strongest first) {list(r.values['order'])}")
        rep.verification(r.verify())

    rep.section("balance law: d/dt(WᵀW/η_W − HHᵀ/η_H)")
    b = balance_law_symbolic()
    rep.show("d/dt (WᵀW/η_W − HHᵀ/η_H)", b["dD"])
    rep.check("conserved without decay", b["conserved"])
    rep.check_zero("= −2λ_W WᵀW + 2λ_H HHᵀ", b["dD"] - b["expected"])
    model = ufm.UFM(ufm.settings.balanced(3, 2), loss="mse", lambda_W=0.03, lambda_H=0.03, lr_W=1.0, lr_H=1.0)
    x0 = model.init(5, scale=0.7, seed=1)
    tr = ufm.solve(model, x0, [0.0, 5.0, 20.0], save=("W", "H"), rtol=1e-12, atol=1e-15)
    D = [W.T @ W - H @ H.T for W, H in zip(tr.W, tr.H)]
    ratio = [np.linalg.norm(Dk) / np.linalg.norm(D[0]) for Dk in D[1:]]
    pred = [np.exp(-2 * 0.03 * t) for t in (5.0, 20.0)]
    rep.check("WᵀW − HHᵀ decays as e^{−2λt} (η = 1, CE or MSE alike)", np.allclose(ratio, pred, rtol=5e-14, atol=0),
              f"measured {np.round(ratio, 10)}, predicted {np.round(pred, 10)}, "
              f"relative {np.abs(np.array(ratio) / pred - 1).max():.1e}")
    model0 = ufm.UFM(ufm.settings.balanced(3, 2), lr_W=1.7, lr_H=0.6)
    tr = ufm.solve(model0, x0, [0.0, 10.0], save=("W", "H"), rtol=1e-12, atol=1e-15)
    D = [W.T @ W / 1.7 - H @ H.T / 0.6 for W, H in zip(tr.W, tr.H)]
    rep.check("CE without decay: WᵀW/η_W − HHᵀ/η_H conserved", np.abs(D[1] - D[0]).max() < 5e-14 * np.abs(D[0]).max(),
              f"relative change {np.abs(D[1] - D[0]).max() / np.abs(D[0]).max():.1e}")

    rep.section("sum loss ½‖WH − Y‖² from a balanced init: the Riccati closed form")
    rc = riccati_symbolic()
    rep.show("P(t)", rc["P"])
    rep.show("dP/dt − (AP + PA − P²) (product rule, noncommutative)", rc["residual"])
    rep.check("residual expands to 0", rc["residual"] == 0)
    for lam in (0.0, 0.1):
        model = ufm.UFM(ufm.Problem(Y, weights=np.ones(N)), loss="mse", lambda_W=lam, lambda_H=lam)
        d_ = 5
        W0 = rng.normal(size=(K, d_)) * 0.3
        _, sw, Vw = np.linalg.svd(W0, full_matrices=False)
        R = np.linalg.qr(rng.normal(size=(N, K)))[0]
        H0 = Vw.T @ np.diag(sw) @ R.T
        rep.line(f"λ = {lam}")
        rep.verification(riccati(model, W0, H0).verify())
    return rep.finish()


if __name__ == "__main__":   # python derivations/saxe_modes.py (ufm installed)
    import sys
    sys.exit(run())
