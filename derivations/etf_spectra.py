"""Simplex ETF and association-scheme spectra from the eigenmatrix; the population NC1 value."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ufm.theory.derivations._report import Report


def run() -> int:
    import ufm
    from ufm.theory.scheme import bind, factorial_scheme, hierarchy_scheme
    from ufm.theory.spectra import etf_symbolic, nc1_symbolic

    rep = Report("etf_spectra: Gram spectra from the symmetry (eigenmatrix of the scheme)")
    rep.section("simplex ETF Gram (K/(K−1))P_K in the scheme {I, J − I}")
    e = etf_symbolic()
    K = e["K"]
    for name, ev, mult in e["spectrum"]:
        rep.show(f"eigenvalue on '{name}' (multiplicity {mult})", ev)
    spec = {name: (ev, mult) for name, ev, mult in e["spectrum"]}
    rep.check_equal("ETF eigenvalue K/(K−1) on the complement of 1", spec["between classes"][0], K / (K - 1))
    rep.check_equal("ETF eigenvalue 0 on 1", spec["constant"][0], 0)
    rep.check_equal("multiplicities K − 1 and 1", spec["between classes"][1] + spec["constant"][1], K)
    for Kv in (3, 5, 10):
        G = Kv / (Kv - 1) * (np.eye(Kv) - 1.0 / Kv)
        ev = np.sort(np.linalg.eigvalsh(G))
        pred = np.sort([float(spec["constant"][0].subs(K, Kv))] + [float(spec["between classes"][0].subs(K, Kv))] * (Kv - 1))
        rep.check(f"K = {Kv}: numpy eigenvalues of the ETF Gram", np.abs(ev - pred).max() < 1e-14,
                  f"max error {np.abs(ev - pred).max():.1e}")

    rep.section("eigenmatrices of the factorial and hierarchy schemes (symbolic sizes)")
    for sc in (factorial_scheme(2), factorial_scheme(1, True), hierarchy_scheme(3)):
        P, mult, names = sc.eigen_R
        rep.line(f"{sc}: relations {list(sc.R_names)}")
        rep.show("eigenmatrix P (rows: " + ", ".join(names) + ")", P)
        rep.show("multiplicities", sp.Matrix(mult).T)
        rep.check_equal(f"{sc.family}: multiplicities add up to N", sum(mult), sc.N)
    for prob in (ufm.settings.factorial((3, 3)), ufm.settings.factorial((2, 3), samples_per_context=2),
                 ufm.settings.hierarchy(2, 3), ufm.settings.balanced(5, 3)):
        bs = bind(prob)
        P, mult, _ = bs.scheme.eigen_R
        Pn = np.array(P.subs(bs.values), dtype=float)
        c = np.random.default_rng(0).normal(size=len(bs.R))
        G = bs.expand(c, "R")
        pred = np.sort(np.repeat(Pn @ c, [int(bs.num(m)) for m in mult]))
        ev = np.sort(np.linalg.eigvalsh(0.5 * (G + G.T)))
        rep.check(f"{prob.name}: spectrum of a random element Σ c_a R_a", np.abs(ev - pred).max() < 1e-14,
                  f"max error {np.abs(ev - pred).max():.1e}")

    rep.section("population NC1 for means on an ETF of radius r, within-class variance s²")
    nc = nc1_symbolic()
    rep.show("Tr(Σ_W Σ_B⁺)/K", nc["nc1"])
    r_, s_ = sp.Symbol("r", positive=True), sp.Symbol("s", positive=True)
    rep.check_equal("equals s²(K−1)²/(K r²) (docs/theory.md)", nc["nc1"], s_ ** 2 * (K - 1) ** 2 / (K * r_ ** 2))
    # numerical check with ufm.metrics.nc1: features with exactly isotropic within-class scatter
    for Kv, r, s in ((3, 2.0, 0.3), (5, 1.0, 0.1), (4, 3.0, 1.0)):
        D = Kv + 2
        Mu = np.zeros((D, Kv))
        Mu[:Kv, :] = r * np.sqrt(Kv / (Kv - 1)) * (np.eye(Kv) - 1.0 / Kv)
        cols, labels = [], []
        for k in range(Kv):
            for j in range(D):
                for sign in (1, -1):
                    x = Mu[:, k].copy()
                    x[j] += sign * s * np.sqrt(D)   # ±s√D e_j over all j: covariance s²I exactly
                    cols.append(x)
                    labels.append(k)
        H = np.array(cols).T
        val = ufm.metrics.nc1(H.T @ H, np.array(labels))
        pred = float(nc["nc1"].subs({K: Kv, r_: r, s_: s}))
        rep.check(f"K = {Kv}, r = {r}, s = {s}: ufm.metrics.nc1 of exact isotropic scatter",
                  abs(val - pred) < 5e-15 * pred,
                  f"{val:.12g} vs {pred:.12g}, relative {abs(val - pred) / pred:.1e}")
    return rep.finish()


if __name__ == "__main__":   # python derivations/etf_spectra.py (ufm installed)
    import sys
    sys.exit(run())
