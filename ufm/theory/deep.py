"""The low-rank bias of the deep-backbone UFM (:class:`ufm.DeepUFM`), derived and checked.

With n = L + 2 factors (H₀, L hidden layers, the classifier) and decay λ on every factor,
the decay of any factorisation of the logits Z obeys (AM–GM on the singular values)

    Σ_j ‖W_j‖²  >=  n Σ_i σ_i(Z)^{2/n},

with equality exactly at balanced factors (all with singular values σ_i^{1/n}), which the
flow keeps. So the deep model minimises ℓ(Z) + (nλ/2) Σ σ_i^{2/n}: n times the Schatten-2/n
quasi-norm of Z to the power 2/n (n = 2: the nuclear norm of the standard UFM, whose minimiser
with one class per context is the simplex ETF; n >= 3: a quasi-norm with p = 2/n < 1 that
counts rank, not size, so fewer and larger singular values are cheaper). Counted in
*hidden layers* L the exponent is 2/(L + 2), not 2/L: the free features and the classifier are
factors too.

:func:`deep_collapse` compares, for K = N one-hot contexts of equal weight, two symmetric
candidates in closed form:

* the **simplex ETF** Z = a(I − 11ᵀ/K): K − 1 singular values a, loss log(1 + (K−1)e^{−a});
* the **cross-polytope** (K even): classes on ±e_1 … ±e_{K/2}, Z_ki = a⟨u_k, u_i⟩ — K/2
  singular values 2a, loss log(1 + (K−2)e^{−a} + e^{−2a}): half the rank.

Each is a stationary point of the balanced flow at the largest root a* of dE/da = 0 when its
one-parameter family is invariant: always for the ETF; for the cross-polytope only when n >= 3
(then every term of the end-to-end equation has the range of Z on both sides, so rank cannot
grow; for n = 2 the term G(ZᵀZ)^{1/2} has the identity on the left and the flow leaves the
rank-K/2 family for the ETF, so C(a) is then only a restricted objective). For n = 2 the ETF has the lower objective; for n >= 3 and
moderate λ the cross-polytope wins, and the flow from a generic start goes there (or to other
low-rank points) instead of the ETF.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from .result import Result, Verification

__all__ = ["deep_collapse", "balanced_regulariser"]


def balanced_regulariser():
    """Symbolic: the decay of n balanced scalar factors of σ, and the AM–GM bound.

    Returns:
        Result with ``expressions``: ``"sum of squares at balanced factors"`` (n σ^{2/n}),
        ``"stationary factor"`` (the a_j minimising Σ a_j² subject to Π a_j = σ, from the
        Lagrange condition) and ``"bound"`` (the minimum, equal to the first).
    """
    n, s, a = sp.symbols("n sigma a", positive=True)
    balanced = n * s ** (2 / n)
    # Lagrange: 2 a_j = μ Π_{i≠j} a_i ⇒ a_j² = μσ/2 for every j, so all a_j equal: a = σ^{1/n}
    lagr = sp.solve(sp.Eq(a ** n, s), a)
    root = [r for r in lagr if r.is_positive is not False][0]
    return Result("balanced factors and the Schatten-2/n quasi-norm",
                  {"sum of squares at balanced factors": balanced, "stationary factor": root,
                   "bound": sp.simplify(n * root ** 2)},
                  notes="Σ_j a_j² >= n (Π a_j)^{2/n} (AM–GM), equality iff all a_j are equal; per singular value of Z.")


def _roots(fun, lo=1e-6, hi=400.0, n=6000):
    grid = np.geomspace(lo, hi, n)
    vals = np.array([fun(x) for x in grid])
    from scipy.optimize import brentq
    out = []
    for i in range(n - 1):
        if np.isfinite(vals[i]) and np.isfinite(vals[i + 1]) and np.sign(vals[i]) != np.sign(vals[i + 1]):
            out.append(brentq(fun, grid[i], grid[i + 1], xtol=1e-14, rtol=1e-14))
    return out


def deep_collapse(model) -> Result:
    """ETF against the low-rank cross-polytope for a deep-backbone model, in closed form.

    Arguments:
        model: a :class:`ufm.DeepUFM` with ``loss="ce"``, no bias, one decay and one rate on
            every factor, and a problem with K = N, Y = I and equal weights.

    Returns:
        Result with ``expressions`` (objectives E(a), C(a) and their stationarity conditions in
        a, λ, K, n) and ``values``: ``a_etf``, ``objective_etf``, ``singular_values_etf``,
        ``a_cross``, ``objective_cross``, ``singular_values_cross`` (None for odd K or when
        no root exists), ``cross_stationary`` (n >= 3), ``lower`` (``"etf"`` or ``"cross-polytope"``). ``verify()``
        integrates the balanced flow from each candidate's symmetric subspace and the
        parameter-space flow from balanced factors.

    Raises:
        TypeError / ValueError: a model outside these conditions (named).
    """
    from ..deep import DeepUFM
    if not isinstance(model, DeepUFM):
        raise TypeError(f"model: expected a ufm.DeepUFM, got {type(model).__name__}")
    K, N = model.K, model.N
    if model.loss_name != "ce" or model.bias:
        raise ValueError("model: deep_collapse needs loss='ce' without bias")
    if K != N or not np.allclose(model.problem.Y, np.eye(K)) or not np.allclose(model.problem.weights, 1.0 / N):
        raise ValueError("model: deep_collapse needs one class per context (K = N, Y = I) and equal weights")
    if not model.balanced_exact:
        raise ValueError("model: deep_collapse needs one decay and one rate on every factor (balanced flow)")
    if not model.lambda_W > 0:
        raise ValueError("model: deep_collapse needs a decay lambda_W > 0 (without it the logits grow forever)")
    a, lam, Ks, n = sp.symbols("a lambda K n", positive=True)
    E = sp.log(1 + (Ks - 1) * sp.exp(-a)) + n * lam / 2 * (Ks - 1) * a ** (2 / n)
    C = sp.log(1 + (Ks - 2) * sp.exp(-a) + sp.exp(-2 * a)) + n * lam / 2 * (Ks / 2) * (2 * a) ** (2 / n)
    subs = {lam: model.lambda_W, Ks: K, n: model.factors}
    values = {}
    for name, expr, sv_count, sv_factor in (("etf", E, K - 1, 1.0), ("cross", C, K // 2, 2.0)):
        if name == "cross" and K % 2:
            values.update({"a_cross": None, "objective_cross": None, "singular_values_cross": None})
            continue
        dE = sp.lambdify(a, sp.diff(expr, a).subs(subs), "math")
        Ef = sp.lambdify(a, expr.subs(subs), "math")
        roots = _roots(dE)
        # the largest root is the minimum along the symmetric direction (for n >= 3 the smaller one
        # is the barrier between it and Z = 0, itself a local minimum: σ^{2/n} has infinite slope at 0)
        root = max(roots) if roots else None
        values[f"a_{name}"] = root
        values[f"objective_{name}"] = None if root is None else float(Ef(root))
        values[f"singular_values_{name}"] = None if root is None else np.r_[np.full(sv_count, sv_factor * root),
                                                                           np.zeros(K - sv_count)]
    oe, oc = values["objective_etf"], values["objective_cross"]
    values["cross_stationary"] = bool(values["a_cross"] is not None and model.factors >= 3)
    values["lower"] = ("cross-polytope" if values["cross_stationary"] and (oe is None or oc < oe) else "etf")
    res = Result("deep UFM: simplex ETF vs cross-polytope (low-rank bias)",
                 {"E(a) (ETF)": E, "C(a) (cross-polytope)": C, "dE/da = 0": sp.Eq(sp.diff(E, a), 0),
                  "dC/da = 0": sp.Eq(sp.diff(C, a), 0)},
                 values, model=model,
                 notes="n = L + 2 factors; objectives per context (mean cross-entropy) at balanced factors.")

    def candidate(name, scale):
        if name == "etf":
            return scale * (np.eye(K) - 1.0 / K)
        U = np.zeros((K, K // 2))
        for k in range(K):
            U[k, k // 2] = 1.0 if k % 2 == 0 else -1.0
        return scale * (U @ U.T)

    def verify(t_end: float = 1e4, d: int | None = None, seed: int = 0, tol_a: float = 2e-11, tol_obj: float = 1e-13,
               tol_identity: float = 5e-10):
        """(1) For each candidate: the balanced flow from 0.8·a* on its symmetric subspace,
        integrated to ``t_end``; the final singular values against the predicted ones (max
        relative) and the final objective against E(a*) or C(a*) (relative). (2) The
        parameter-space flow from balanced factors of a generic start (width d, default K + 2):
        its objective (the sum of every factor's decay) against ℓ + (nλ/2) Σ σ_i^{2/n} of its
        own logits at every save (relative) — the Schatten identity, and that the flow stays
        balanced. Measured (K = 4, n = 2, 3, 4, λ = 0.03, t_end 1e4, rtol 1e-11): singular values
        <= 2.2e-12, objectives <= 4e-16, identity <= 6.4e-11; ``tol_a`` = 2e-11,
        ``tol_obj`` = 1e-13, ``tol_identity`` = 5e-10. (For n = 2 the cross-polytope is not a
        stationary point and is not checked.)"""
        import ufm
        disc, tols, details = {}, {}, {}
        t = np.geomspace(1.0, t_end, 12)
        for name in ("etf", "cross"):
            root = res.values[f"a_{name}"]
            if root is None or (name == "cross" and not res.values["cross_stationary"]):
                continue
            Z0 = candidate(name, 0.8 * root)
            x0 = model.balanced_init(d or K + 2, Z=Z0, seed=seed)
            tr = ufm.solve(model, x0, t, space="balanced", rtol=1e-11, atol=1e-13, save=("logits",))
            sv = np.sort(np.linalg.svd(tr.logits[-1], compute_uv=False))[::-1]
            pred = np.sort(np.asarray(res.values[f"singular_values_{name}"], float))[::-1]
            disc[f"{name}: singular values (max relative)"] = float(np.abs(sv - pred).max() / pred.max())
            tols[f"{name}: singular values (max relative)"] = tol_a
            obj = float(tr.loss[-1])
            want = float(res.values[f"objective_{name}"])
            disc[f"{name}: objective at t_end (relative)"] = abs(obj - want) / abs(want)
            tols[f"{name}: objective at t_end (relative)"] = tol_obj
            details[f"{name}: final singular values"] = np.array2string(sv, precision=4)
        x0 = model.balanced_init(d or K + 2, scale=0.7, seed=seed)
        tr = ufm.solve(model, x0, np.geomspace(0.1, min(t_end, 1e3), 10), rtol=1e-11, atol=1e-13, save=("logits",))
        ident = max(abs(tr.loss[i] - model.balanced_loss(tr.logits[i])) / abs(tr.loss[i]) for i in range(len(tr)))
        disc["parameter-space objective = ℓ + (nλ/2) Σσ^(2/n) (max relative)"] = float(ident)
        tols["parameter-space objective = ℓ + (nλ/2) Σσ^(2/n) (max relative)"] = tol_identity
        details["predicted a* (ETF, cross-polytope)"] = (res.values["a_etf"], res.values["a_cross"])
        return Verification("deep UFM candidates vs ufm.solve (balanced and parameter space)", disc, tols, details)

    res._verify = verify
    return res
