"""Coupled UFM near the ETF: asymptotic collapse rate and how the collapse time scales."""

from __future__ import annotations

from ufm.theory.derivations._report import Report


def run() -> int:
    import ufm
    from ufm.theory.early_time import collapse

    rep = Report("coupled_collapse_rate: linearisation of the reduced ODE at the ETF (CE, Θ = I + β²AᵀA, λ_E = 0)")
    p = ufm.settings.factorial((3, 3))
    rep.line("rates are −eigenvalues of the reduced Jacobian (12 scalars for factorial (3, 3)); the gap decays with")
    rep.line("the slowest rate whose eigenvector moves it (ℓ(v_k) ≠ 0)")
    rep.section("rate of the semantic gap / λ  (λ_W = λ_H = λ)")
    table = {}
    rep.line("  β \\ λ      1e-2      1e-3      1e-4")
    for beta in (0.0, 0.5, 1.0, 2.0):
        row = []
        for lam in (1e-2, 1e-3, 1e-4):
            model = ufm.UFM(p, lambda_W=lam, lambda_H=lam, coupling=p.coupling("attribute", beta) if beta else None)
            c = collapse(model)
            row.append(c.values["gap_rate"] / lam)
            table[(beta, lam)] = c
        rep.line(f"  {beta:4.1f}   " + "  ".join(f"{x:8.4f}" for x in row))
    rep.line("⇒ every rate is λ times a factor between 1 and 2 (→ 2 as λ → 0): the collapse time scales like 1/λ,")
    rep.line("  and β changes the factor by < 20 %.")
    rep.section("measured decay of the gap (Gram-space ufm.solve from isotropic Grams s = 1e-3)")
    for beta, lam in ((0.5, 1e-2), (1.0, 1e-3), (2.0, 1e-3)):
        rep.line(f"β = {beta}, λ = {lam:g}")
        rep.verification(table[(beta, lam)].verify())
    rep.section("collapse time (gap < 0.02) vs λ, β = 1, s = 1e-3")
    times = []
    for lam in (1e-2, 1e-3):
        model = ufm.UFM(p, lambda_W=lam, lambda_H=lam, coupling=p.coupling("attribute", 1.0))
        c = table[(1.0, lam)]
        v = c.verify()
        times.append(v.details["measured collapse time (gap < 0.02)"])
        rep.line(f"λ = {lam:g}: collapse at t ≈ {times[-1]:.4g}; λ·t_collapse = {lam * times[-1]:.3g}")
    ratio = times[1] / times[0]
    rep.check("collapse time grows ~1/λ (ratio for a decade of λ between 5 and 20)", 5 < ratio < 20, f"ratio {ratio:.2f}")
    return rep.finish()


if __name__ == "__main__":   # python derivations/coupled_collapse_rate.py (ufm installed)
    import sys
    sys.exit(run())
