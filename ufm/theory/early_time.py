"""Coupled UFM: early-time growth of semantic modes, the semantic peak, and collapse near the ETF.

**Early time.** From small init the logits are ≈ 0, softmax ≈ uniform, so
G ≈ G₀ = (11ᵀ/K − Y)/N = −P_K Y/N (columns of Y sum to 1). The flow is then linear in
X = [W; Hᵀ] ((K+N)×d), column by column:

    dX/dt = 𝒜 X,   𝒜 = [[−η_Wλ_W I,          (η_W/N) P_K Y            ],
                          [(η_H/N) Θ Yᵀ P_K,   −η_H (λ_H Θ + λ_E I)     ]].

For one-hot labels with K = N (factorial and hierarchy settings, one sample per context),
P_K Y, Θ and Yᵀ P_K all lie in the commutative algebra of the scheme, so 𝒜 splits over
its common eigenspaces V_i (eigenvalue θ_i of Θ, ρ_i ∈ {0, 1} of P_K) into 2×2 blocks

    𝒜_i = [[−η_Wλ_W, η_Wρ_i/N], [η_Hθ_iρ_i/N, −η_H(λ_Hθ_i + λ_E)]],

with growth rate r_i = its largest eigenvalue (= ρ_i√(η_Wη_Hθ_i)/N without decay). With
Θ = I + β²AᵀA the attribute eigenspaces have θ_i > 1 and grow first; modes appear in the order
of r_i. From isotropic init (E[XXᵀ] = s²I as d → ∞) the Gram of mode i is
Σ_i(t) = s² e^{𝒜_i t} e^{𝒜_iᵀ t} = [[ω_i, μ_i], [μ_i, ν_i]]: the eigenvalues of G_W, M and
G_H on V_i. sympy derives 𝒜_i, r_i and e^{𝒜_i t} (Cayley–Hamilton).

**Semantic peak.** The linear phase ends when the fastest modes' logits saturate the
softmax. Prediction: the time at which the linear-theory logit eigenvalue μ_fast(t) reaches
μ_½, the value at which the exact (entrywise) softmax has halved the fastest modes' gradient,
γ_fast(μ_½) = γ_fast(0)/2, with logits μ Σ_{i fastest} E_i. Before it the gap rises (the fast
modes dominate), after it the slower identity modes catch up and the gap falls.

**Collapse.** With λ_E = 0 the end point is the ETF of the standard UFM; near it the
deviation decays along the eigenvectors of the reduced Jacobian
(:meth:`ufm.theory.reduce.ReducedModel.jacobian`). The semantic gap is, to first order, a
linear functional ℓ of the reduced state; its asymptotic decay rate is the smallest rate
r_k whose eigenvector has ℓ(v_k) ≠ 0. All rates are ∝ λ (times a slowly varying factor
between 1 and 2 for λ_W = λ_H = λ), so the collapse time scales like 1/λ and depends only
weakly on β.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from . import symbols as S
from .reduce import reduce
from .result import Result, Verification

__all__ = ["growth_block_symbolic", "early_growth", "semantic_peak", "collapse"]

theta_i = sp.Symbol("theta_i", positive=True)
rho_i = sp.Symbol("rho_i", nonnegative=True)
s_init = sp.Symbol("s", positive=True)


@lru_cache(maxsize=None)
def growth_block_symbolic() -> dict:
    """The 2×2 block 𝒜_i, its growth rate and the isotropic-init Gram Σ_i(t) (module docstring).

    Returns:
        dict: ``A`` (sympy 2×2), ``rate`` (largest eigenvalue), ``rate_no_decay``,
        ``exp`` (e^{𝒜t}), ``Sigma`` (s² e^{𝒜t}e^{𝒜ᵀt}).
    """
    eW, eH, lW, lH, lE, N, t = S.eta_W, S.eta_H, S.lambda_W, S.lambda_H, S.lambda_E, S.N, S.t
    A = sp.Matrix([[-eW * lW, eW * rho_i / N], [eH * theta_i * rho_i / N, -eH * (lH * theta_i + lE)]])
    c = A.trace() / 2
    delta = sp.sqrt(c ** 2 - A.det())
    rate = sp.simplify(c + delta)
    ev = sp.Matrix(list(A.eigenvals().keys()))
    if not any(sp.simplify(e - rate) == 0 for e in ev):
        raise ArithmeticError("growth rate is not an eigenvalue of the block")
    E = sp.exp(c * t) * (sp.cosh(delta * t) * sp.eye(2) + sp.sinh(delta * t) / delta * (A - c * sp.eye(2)))
    # check d/dt e^{At} = A e^{At} (Cayley–Hamilton form of the matrix exponential)
    chk = (E.diff(t) - A * E).subs({eW: 1.3, eH: 0.7, lW: 0.01, lH: 0.02, lE: 0.003, N: 9, theta_i: 2.5,
                                    rho_i: 1, t: 1.7}).evalf()
    if max(abs(x) for x in chk) > 1e-10:
        raise ArithmeticError("matrix exponential check failed")
    Sigma = s_init ** 2 * E * E.T
    return {"A": A, "rate": rate, "rate_no_decay": sp.simplify(rate.subs({lW: 0, lH: 0, lE: 0})),
            "exp": E, "Sigma": Sigma, "c": c, "delta": delta}


def _require_square(model):
    r = reduce(model)
    if r.bound.scheme.samples:
        raise ValueError("model: the early-time block structure is derived for one sample per context (K = N)")
    if model.loss_name != "ce":
        raise ValueError("model: early-time theory is for cross-entropy (softmax ≈ uniform at small logits)")
    return r


def _modes(r):
    """Per eigenspace of the context scheme: name, multiplicity, θ_i (sympy and numeric), ρ_i."""
    sc = r.bound.scheme
    P, mult, names = sc.eigen_R
    sub = r.substitutions(sizes=False)
    theta_coef = [th.xreplace(sub) for th in r.ode.theta]
    out = []
    for i, nm in enumerate(names):
        th = sp.simplify(sum(P[i, a] * theta_coef[a] for a in range(len(theta_coef))))
        rho = sp.simplify(1 - sum(P[i, a] for a in range(P.shape[1])) / sc.K)
        out.append({"name": nm, "multiplicity": mult[i], "theta": th, "rho": rho})
    return out


def early_growth(model) -> Result:
    """Early-time growth rates of the scheme's modes for a (coupled) CE UFM from small init.

    Arguments:
        model: CE UFM on a factorial or hierarchy problem with one sample per context and a
            coupling in the scheme's algebra (e.g. ``problem.coupling("attribute", β)``).

    Returns:
        Result: expressions ``rate[<mode>]`` (sympy in β, sizes, η, λ); values ``modes`` (list
        of dicts: name, multiplicity, theta, rate), ``order`` (names by decreasing rate),
        ``linear(t, s)`` -> dict of (T, modes) arrays ω, μ, ν (linear theory from isotropic
        Grams); ``verify(scale=, t=, factor=, tol=, tol_rate=)``.
    """
    r = _require_square(model)
    blk = growth_block_symbolic()
    modes = _modes(r)
    vals = S.model_values(model)
    if r.beta is not None:
        vals[S.beta] = r.beta
    sizes = {q: v for q, v in r.bound.values.items()}
    exprs = {}
    for md in modes:
        rate = sp.simplify(blk["rate"].subs({theta_i: md["theta"], rho_i: md["rho"]}))
        md["rate_expr"] = rate
        exprs[f"rate[{md['name']}]"] = rate
        md["rate"] = float(rate.subs(sizes).subs(vals).subs(S.N, r.bound.num(r.bound.scheme.N)))
        md["theta_value"] = float(md["theta"].subs(sizes).subs(vals))
        md["mult"] = int(r.bound.num(md["multiplicity"]))
    order = [md["name"] for md in sorted(modes, key=lambda x: -x["rate"]) if md["rho"] != 0]
    Nn = r.bound.num(r.bound.scheme.N)
    A_num = [np.array(blk["A"].subs({theta_i: md["theta_value"], rho_i: float(md["rho"])}).subs(vals)
                      .subs(S.N, Nn), dtype=float) for md in modes]

    def linear(t, s):
        from scipy.linalg import expm
        t = np.atleast_1d(np.asarray(t, dtype=float))
        out = {"omega": np.zeros((len(t), len(modes))), "mu": np.zeros((len(t), len(modes))),
               "nu": np.zeros((len(t), len(modes)))}
        for i, A in enumerate(A_num):
            for k, tk in enumerate(t):
                E = expm(A * tk)
                Sg = s ** 2 * E @ E.T
                out["omega"][k, i], out["mu"][k, i], out["nu"][k, i] = Sg[0, 0], Sg[0, 1], Sg[1, 1]
        return out

    values = {"modes": modes, "order": order, "linear": linear}
    res = Result("early-time growth of the scheme's modes (softmax ≈ uniform)", exprs, values, None, True, model,
                 "Growth rates are the largest eigenvalues of the 2×2 blocks 𝒜_i; without decay r_i = √(η_Wη_Hθ_i)/N.")

    def verify(scale: float = 1e-4, t=None, factor: float = 10.0, tol: float = 5e-4, tol_rate: float = 3e-3):
        """Integrate the full Gram-space ODE from isotropic Grams s²I and compare, on each
        eigenspace, the measured eigenvalue ν_i(t) of G_H with the linear theory while the
        logits are small (ν < 1e-3), its growth rate (slope of ½ log ν_i over the second half of
        that window) with ``values["modes"][i]["rate"]``, and the order in which each mode's
        ν_i(t) first reaches ``factor``·s² with ``values["order"]``. Measured on factorial (3, 3),
        (2, 3) and hierarchy (2, 3) with β = 0.5 and β = 0, λ = 1e-3: ν_i(t) <= 1.1e-4 relative,
        rates <= 7.4e-4 relative (the finite-time slope still carries the block's decaying
        eigenvalue); ``tol`` = 5e-4, ``tol_rate`` = 3e-3."""
        import ufm
        modes_now = res.values["modes"]
        fast = max(md["rate"] for md in modes_now)
        t = np.linspace(0.0, np.log(1e-2 / scale ** 2) / (2 * fast), 60)[1:] if t is None else np.asarray(t, float)
        g0 = r.gram_state(r.isotropic(scale))
        tr = ufm.solve(model, g0, t, space="gram", rtol=1e-11, atol=1e-16 * scale ** 2)
        P = r.eigenmatrix("R")
        h = np.array([r.bound.project(G, "R")[0] for G in tr.gram_H])
        nu = h @ P.T
        lin = linear(t, scale)["nu"]
        # linear theory holds while the logits are small: compare where ν < 1e-3 (logits ≈ s·√ν ≪ 1)
        ok = np.all(lin < 1e-3, axis=1)
        err = float(np.max(np.abs(nu[ok] - lin[ok]) / lin[ok])) if ok.any() else np.nan
        window = np.flatnonzero(ok)
        window = window[len(window) // 2:]
        growing = [i for i, md in enumerate(modes_now) if md["rho"] != 0]
        measured_rate = {i: float(np.polyfit(t[window], 0.5 * np.log(nu[window, i]), 1)[0]) if window.size >= 3
                         else np.nan for i in growing}
        rate_err = max(abs(measured_rate[i] / modes_now[i]["rate"] - 1) for i in growing)
        cross = []
        for i, md in enumerate(modes_now):
            above = np.flatnonzero(nu[:, i] >= factor * scale ** 2)
            cross.append(t[above[0]] if above.size else np.inf)
        measured_order = [modes_now[i]["name"] for i in np.argsort(cross)
                          if modes_now[i]["rho"] != 0 and np.isfinite(cross[i])]
        predicted_order = list(res.values["order"])
        ver = Verification("early growth vs ufm.solve (Gram space, isotropic init)")
        ver.discrepancies = {"ν_i(t) linear theory (max relative, logits ≪ 1)": err,
                             "growth rates (max relative)": float(rate_err),
                             "order of appearance differs (0/1)":
                                 float(measured_order != predicted_order[:len(measured_order)] or not measured_order)}
        ver.tolerances = {"ν_i(t) linear theory (max relative, logits ≪ 1)": tol, "growth rates (max relative)": tol_rate,
                          "order of appearance differs (0/1)": 0.0}
        ver.details = {"predicted order": predicted_order, "measured order": measured_order,
                       "growth rates": {md["name"]: round(md["rate"], 6) for md in modes_now},
                       "measured rates": {modes_now[i]["name"]: round(measured_rate[i], 6) for i in growing},
                       f"time to reach {factor:g}·s²": {md["name"]: round(float(c), 3) for md, c in zip(modes_now, cross)}}
        return ver

    res._verify = verify
    return res


def _half_saturation(r, fast_idx) -> float:
    """μ_½: the logit amplitude on the fastest eigenspaces at which the exact softmax has
    halved their gradient eigenvalue."""
    from scipy.optimize import brentq
    P = r.eigenmatrix("R")
    Pinv = np.linalg.inv(P)
    direction = Pinv[:, fast_idx].sum(axis=1)      # relation coefficients of Σ E_i
    v = np.array([r.bound.num(x) for x in r.bound.scheme.col_valency])
    Nn = r.bound.num(r.bound.scheme.N)
    i0 = fast_idx[0]

    def gamma(mu):
        m = mu * direction
        e = np.exp(m - m.max())
        g = e / np.dot(v, e)
        g[r.bound.scheme.label] -= 1.0
        return float((P @ (g / Nn))[i0])

    g0 = gamma(0.0)
    hi = 1.0
    while gamma(hi) < g0 / 2:
        hi *= 2
    return brentq(lambda mu: gamma(mu) - g0 / 2, 0.0, hi, xtol=1e-12)


def semantic_peak(model, scale: float) -> Result:
    """Predicted time of the semantic peak from isotropic init s²I (module docstring).

    Arguments:
        model: a coupled :class:`ufm.UFM` (see :func:`early_growth`).
        scale: the init scale s > 0 (G_H(0) = s²I).

    Returns:
        Result with values ``t_peak`` (prediction), ``mu_half``, ``fast_modes``;
        ``verify(t=, factor=)`` measures the peak of the semantic gap (``transient_summary``
        of a Gram-space run) and passes when predicted and measured agree within ``factor``
        (default 1.2, set from the measured ratios 0.935–1.008).

    Raises:
        TypeError / ValueError: ``model`` is not a UFM, ``scale`` is not a number > 0.
    """
    from scipy.optimize import brentq

    from .._validation import as_positive, check_instance
    from ..models import UFM
    check_instance(model, "model", UFM, "a ufm.UFM")
    scale = as_positive(scale, "scale")
    eg = early_growth(model)
    r = reduce(model)
    modes = eg.values["modes"]
    rates = np.array([md["rate"] for md in modes])
    fast = [i for i, md in enumerate(modes) if md["rho"] != 0 and rates[i] >= rates.max() * (1 - 1e-12)]
    mu_half = _half_saturation(r, fast)
    lin = eg.values["linear"]
    f = lambda tt: lin([tt], scale)["mu"][0, fast[0]] - mu_half  # noqa: E731
    hi = 1.0
    while f(hi) < 0:
        hi *= 2
    t_peak = brentq(f, 0.0, hi, xtol=1e-10)
    values = {"t_peak": t_peak, "mu_half": mu_half, "fast_modes": [modes[i]["name"] for i in fast]}
    res = Result("predicted time of the semantic peak", {}, values, None, True, model,
                 "t_peak solves μ_fast^lin(t) = μ_½; within 7 % when the gap has a genuine maximum. With "
                 "strong coupling the gap saturates at its ceiling (a plateau) and the measured argmax is not "
                 "well defined; the prediction then marks the start of the plateau.")

    def verify(t=None, factor: float = 1.2):
        """Gram-space ufm.solve from s²I over [t_peak/20, 20 t_peak] (400 log-spaced saves, a
        factor 1.015 apart): |log(measured argmax of the gap / values["t_peak"])| must be at
        most log(``factor``). Measured for β = 0.5, λ = 1e-3, s = 1e-4 … 1e-2: ratio 0.993–1.008
        on factorial (3, 3), 0.978 on hierarchy (2, 3), 0.935–0.949 on factorial (2, 3);
        ``factor`` = 1.2 (log 0.18, 2.7× the worst |log ratio| 0.067)."""
        import ufm
        t_pred = float(res.values["t_peak"])
        t = np.geomspace(t_pred / 20, t_pred * 20, 400) if t is None else np.asarray(t, float)
        g0 = r.gram_state(r.isotropic(scale))
        tr = ufm.solve(model, g0, t, space="gram", rtol=1e-10, atol=1e-16 * scale ** 2)
        summ = tr.transient_summary()
        ratio = summ.t_peak / t_pred
        return Verification("semantic peak time vs ufm.solve (Gram space, isotropic init)",
                            {"|log(measured/predicted peak time)|": float(abs(np.log(ratio)))},
                            {"|log(measured/predicted peak time)|": float(np.log(factor))},
                            {"predicted t_peak": round(t_pred, 3), "measured t_peak": round(summ.t_peak, 3),
                             "ratio": round(ratio, 3), "peak gap": round(summ.peak, 4), "init scale": scale})

    res._verify = verify
    return res


def _gap_functional(r, y):
    """Semantic gap of the expanded G_H of reduced state y (ufm.metrics.semantic_gap)."""
    from ..metrics import semantic_gap
    G = r.bound.expand(r.split(y, "G_H"), "R")
    return semantic_gap(G, r.model.problem.attributes)


def collapse(model) -> Result:
    """Asymptotic collapse rate of the semantic structure near the ETF (CE, λ > 0, λ_E = 0).

    The fixed point comes from :func:`ufm.theory.fixed_points.fixed_point` (the ETF, Θ does
    not move it), refined by Newton on the reduced field; the rates are −eigenvalues of the
    reduced Jacobian. The predicted rate of the gap is the smallest rate whose eigenvector
    moves the gap (|ℓ(v_k)| > 1e-8 relative).

    Returns:
        Result with values ``rates`` (all, ascending), ``gap_rate``, ``gap_projections``,
        ``fixed_point`` (reduced state); ``verify(scale=, t_max=, tol=)`` fits the late decay of
        the measured gap of a Gram-space run from isotropic Grams (within 1e-4 relative).
    """
    from ..models import GramState
    from .fixed_points import fixed_point
    if model.loss_name != "ce" or model.lambda_E:
        raise ValueError("model: collapse() is derived for CE with λ_E = 0")
    r = reduce(model)
    fp = fixed_point(model)
    if not fp.exists:
        raise ValueError("model: beyond the existence threshold there is no ETF to collapse to")
    y0, _ = r.state_of(GramState(fp.values["M"], fp.values["G_W"], fp.values["G_H"],
                                 np.zeros(model.K) if model.bias else None))
    ys = r.fixed_point(y0)
    J = r.jacobian(ys)
    ev, V = np.linalg.eig(J)
    order = np.argsort(-ev.real)
    ev, V = ev[order], V[:, order]
    base = _gap_functional(r, ys)
    eps = 1e-6 * np.abs(ys).max()
    proj = np.array([abs(_gap_functional(r, ys + eps * np.real(V[:, k])) - base) / eps for k in range(len(ev))])
    carries = proj > 1e-8 * proj.max()
    gap_rate = float(-ev.real[carries][0])
    values = {"rates": -ev, "gap_rate": gap_rate, "gap_projections": proj, "fixed_point": ys,
              "rates_over_lambda": -ev.real / max(model.lambda_H, 1e-300)}
    res = Result("asymptotic collapse rate near the ETF (reduced Jacobian)", {}, values, None, True, model,
                 "Rates ∝ λ: collapse time ∝ 1/λ, weakly dependent on β.")

    def verify(scale: float = 1e-3, t_max: float | None = None, tol: float = 1e-4):
        """Gram-space ufm.solve from isotropic Grams; fit log|gap| where 1e-9 < |gap| < 1e-4 and
        compare the slope with ``values["gap_rate"]``. Measured on factorial (3, 3) with
        (β, λ) = (0.5, 1e-2), (1, 1e-3), (2, 1e-3): <= 1.5e-5 relative; ``tol`` = 1e-4."""
        import ufm
        from ..metrics import semantic_gap
        gap_rate = float(res.values["gap_rate"])
        t_max = t_max or 25.0 / gap_rate
        t = np.geomspace(1.0, t_max, 400)
        tr = ufm.solve(model, r.gram_state(r.isotropic(scale)), t, space="gram", rtol=1e-12, atol=1e-16)
        gap = np.array([semantic_gap(G, model.problem.attributes) for G in tr.gram_H])
        peak = int(np.argmax(gap))
        sel = (np.arange(len(t)) > peak) & (np.abs(gap) > 1e-9) & (np.abs(gap) < 1e-4)
        if sel.sum() < 5:
            return Verification("collapse rate", {"rate (relative)": np.nan}, {"rate (relative)": tol},
                                {"problem": "too few points in the fit window; raise t_max"})
        slope = np.polyfit(t[sel], np.log(np.abs(gap[sel])), 1)[0]
        return Verification("collapse rate vs ufm.solve (late decay of the semantic gap, Gram space)",
                            {"rate (relative)": abs(-slope - gap_rate) / gap_rate}, {"rate (relative)": tol},
                            {"predicted rate": gap_rate, "measured rate": -slope,
                             "fit window": f"[{t[sel][0]:.3g}, {t[sel][-1]:.3g}]",
                             "measured collapse time (gap < 0.02)": tr.transient_summary().t_collapse})

    res._verify = verify
    return res
