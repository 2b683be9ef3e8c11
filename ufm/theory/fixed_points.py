"""Closed-form fixed points of the UFM, derived with sympy from stationarity on an ansatz.

Every derivation starts from the objective of docs/model.md (mean loss, π_i = 1/N) on a
symmetric ansatz — W = uΦ, h_i = vφ_{y_i} with Φ orthonormal (MSE) or a unit simplex ETF
(CE) — differentiates it with sympy, solves the stationarity equations, and checks that the
residuals simplify to 0. The result is exposed as sympy expressions in the model's symbols
(:mod:`ufm.theory.symbols`), evaluated for a concrete model, with its existence condition and
a ``verify()`` that runs the integrator to convergence from a generic initialisation.

Why the ansatz contains the global minimiser is the content of the cited papers (Zhu et al.
2021 for CE; Tirer & Bruna 2022, Zhou et al. 2022 for MSE via the class-level nuclear-norm
problem, which :func:`mse_class_level` derives as well); the derivations here supply the
numbers and the integrator confirms them.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import sympy as sp

from . import symbols as S
from .result import Result, Verification, converge, relative_error

__all__ = ["fixed_point", "in_terms_of_c", "ce_symbolic", "mse_symbolic", "mse_imbalanced_symbolic", "mse_class_level",
           "max_margin_symbolic", "max_margin", "seli", "grams_from_scalars"]

u, v = sp.symbols("u v", positive=True)          # ansatz scalars: W = uΦ, h_i = vφ_{y_i}
m_sym = sp.Symbol("m", positive=True)             # logit margin
z_sym = sp.Symbol("z", nonnegative=True)          # class-level singular value
c_sym = sp.Symbol("c", positive=True)             # c = √(nλ_Wλ_H)
b0 = sp.Symbol("b_0", real=True)                  # uniform bias b = b_0·1
n_k = sp.Symbol("n_k", positive=True)             # size of class k (imbalanced)


def in_terms_of_c(expr) -> sp.Expr:
    """Rewrite an expression through c = √(nλ_Wλ_H) (substituting λ_H = c²/(nλ_W))."""
    return sp.simplify(sp.sympify(expr).subs(S.lambda_H, c_sym ** 2 / (S.n * S.lambda_W)))


def _check_zero(exprs, sub) -> None:
    """Raise unless every expression simplifies to 0 after substitution (a derivation guard)."""
    for e in exprs:
        r = sp.simplify(sp.expand(e.subs(sub)))
        if r != 0:
            raise ArithmeticError(f"derivation check failed: residual {r}")


# ---------------------------------------------------------------------------------------------
# cross-entropy (Zhu et al. 2021)
# ---------------------------------------------------------------------------------------------

def _nonzero_stationary_point(eqs, u, v):
    """Solve ∂L/∂u = ∂L/∂v = 0 for the non-zero stationary point of a two-factor loss L(u, v).

    The balance law u ∂L/∂u − v ∂L/∂v = 0 gives v(u); substituting it into ∂L/∂u / u leaves
    an equation for U = u². Returns (u², u*, v*, balance, v(u)), checked to make both
    equations vanish.
    """
    balance = sp.factor(sp.simplify(u * eqs[0] - v * eqs[1]))
    v_of_u = [s for s in sp.solve(balance, v) if s.is_positive is not False][0]
    U = sp.Symbol("U", positive=True)
    u2 = sp.solve(sp.simplify(eqs[0].subs(v, v_of_u) / u).subs(u, sp.sqrt(U)), U)[0]
    u_star = sp.sqrt(u2)
    v_star = v_of_u.subs(u, u_star)
    _check_zero(eqs, {u: u_star, v: v_star})
    return u2, u_star, v_star, balance, v_of_u


@lru_cache(maxsize=None)
def ce_symbolic() -> dict:
    """Regularised CE, balanced: stationarity of the loss on the ETF ansatz.

    Ansatz: W = uΦ with Φ (K×d) a unit simplex ETF (ΦΦᵀ = (K/(K−1))P_K), h_i = vφ_{y_i}.
    Then Z = uv(K/(K−1))P_K Y: every correct logit beats every wrong one by the margin
    m = uvK/(K−1), the per-sample loss is log(1 + (K−1)e^{−m}), and

        L(u, v) = log(1 + (K−1)e^{−m}) + (λ_W K/2) u² + (λ_H N/2) v²,   N = Kn.

    Derivation: u∂_uL − v∂_vL = K(λ_W u² − nλ_H v²) = 0 fixes v/u; writing u, v through the
    margin turns u∂_uL = 0 into an equation for m alone, solved by sympy.

    Returns:
        dict of sympy expressions: ``L`` (the ansatz loss), ``stationarity``, ``balance``,
        ``margin`` m, ``u2`` = ‖w_k‖², ``v2`` = ‖h_i‖², ``uv``, ``ratio`` (h = ratio·w),
        ``loss`` (value at the minimiser), ``condition`` (existence), ``trivial_loss``.
    """
    K, n, lW, lH = S.K, S.n, S.lambda_W, S.lambda_H
    N = K * n
    margin = u * v * K / (K - 1)
    L = sp.log(1 + (K - 1) * sp.exp(-margin)) + lW * K * u ** 2 / 2 + lH * N * v ** 2 / 2
    du, dv = sp.diff(L, u), sp.diff(L, v)
    balance = sp.factor(sp.simplify(u * du - v * dv))
    v_of_u = [s for s in sp.solve(balance, v) if s.is_positive is not False][0]
    u_of_m = [s for s in sp.solve(sp.Eq(u * v_of_u, m_sym * (K - 1) / K), u) if s.is_positive is not False][0]
    eq_m = sp.simplify((u * du).subs(v, v_of_u).subs(u, u_of_m))
    m_star = [s for s in sp.solve(eq_m, m_sym) if s != 0][0]
    u_star = u_of_m.subs(m_sym, m_star)
    v_star = v_of_u.subs(u, u_star)
    _check_zero([du, dv], {u: u_star, v: v_star})
    # the norms and the loss read best through the margin m (substitute m* to evaluate)
    u2_m = sp.simplify(u_of_m ** 2)
    v2_m = sp.simplify(v_of_u.subs(u, u_of_m) ** 2)
    uv_m = sp.simplify(u_of_m * v_of_u.subs(u, u_of_m))
    loss_m = sp.simplify(L.subs(v, v_of_u).subs(u, u_of_m))
    return {"L": L, "stationarity": (du, dv), "balance": balance, "margin": m_star, "m": m_sym,
            "u2": u2_m, "v2": v2_m, "uv": uv_m, "loss": loss_m, "ratio": sp.simplify(v_of_u / u),
            "condition": sp.StrictLessThan(K * sp.sqrt(n * lW * lH), 1), "trivial_loss": sp.log(K)}


# ---------------------------------------------------------------------------------------------
# MSE (Tirer & Bruna 2022; Zhou et al. 2022)
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def mse_class_level() -> dict:
    """The class-level problem (1/2K)‖Z − T‖² + c‖Z‖_* per singular value.

    With NC1 and the AM–GM bound λ_W/2‖W‖² + nλ_H/2‖H̄‖² >= √(nλ_Wλ_H)‖WH̄‖_* (equality at
    balance), the regularised MSE reduces to this problem on Z = WH̄. Each singular value
    σ_T = 1 of T contributes f(z) = (1/2K)(z − 1)² + cz, minimised at z* = (1 − Kc)₊.

    Returns:
        dict: ``f``, ``z`` (the minimiser when positive), ``value`` = f(z*), ``condition``.
    """
    K = S.K
    f = (z_sym - 1) ** 2 / (2 * K) + c_sym * z_sym
    zs = sp.solve(sp.diff(f, z_sym), z_sym)[0]
    return {"f": f, "z": zs, "value": sp.factor(sp.simplify(f.subs(z_sym, zs))),
            "condition": sp.StrictLessThan(K * c_sym, 1)}


@lru_cache(maxsize=None)
def mse_symbolic(bias: bool = False) -> dict:
    """Regularised MSE, balanced, with or without an unregularised bias.

    Ansatz (no bias): W = uΦ (orthonormal rows), H = vΦᵀY: Z = uvY and
    L = ½(uv − 1)² + (Kλ_W/2)u² + (Nλ_H/2)v².
    Ansatz (bias): W = uE, H = vEᵀY with EEᵀ = P_K, b = b_0 1: ∂L/∂b_0 = 0 gives b_0 = 1/K
    and L = ((K−1)/K)[½(uv − 1)² + (Kλ_W/2)u² + (Nλ_H/2)v²] — the same scalars.

    Returns:
        dict: ``L``, ``u2`` (= eigenvalue of WWᵀ), ``v2`` (= of H̄ᵀH̄), ``uv``, ``ratio``
        (W = ratio·H̄ᵀ), ``bias`` (b_0 or None), ``loss``, ``condition``, ``trivial_loss``,
        ``rank`` r (K or K − 1).
    """
    K, n, lW, lH = S.K, S.n, S.lambda_W, S.lambda_H
    N = K * n
    if not bias:
        L = (u * v - 1) ** 2 / 2 + K * lW * u ** 2 / 2 + N * lH * v ** 2 / 2
        eqs = [sp.diff(L, u), sp.diff(L, v)]
        b_star = None
    else:
        # residual of a column of class k: (uv − 1)e_k − (uv/K)1 + b_0 1
        r2 = (u * v - 1) ** 2 + 2 * (u * v - 1) * (b0 - u * v / K) + K * (b0 - u * v / K) ** 2
        L = r2 / 2 + lW * u ** 2 * (K - 1) / 2 + lH * v ** 2 * N * (K - 1) / K / 2
        b_star = sp.solve(sp.diff(L, b0), b0)[0]
        L = sp.factor(sp.simplify(L.subs(b0, b_star)))
        eqs = [sp.diff(L, u), sp.diff(L, v)]
    u2, u_star, v_star, balance, v_of_u = _nonzero_stationary_point(eqs, u, v)
    loss = sp.simplify(L.subs({u: u_star, v: v_star}))
    trivial = L.subs({u: 0, v: 0})
    return {"L": L, "balance": balance, "u2": sp.simplify(u2), "v2": sp.simplify(v_star ** 2),
            "uv": sp.simplify(u_star * v_star), "ratio": sp.simplify(u / v_of_u), "bias": b_star,
            "loss": loss, "condition": sp.StrictLessThan(K * sp.sqrt(n * lW * lH), 1),
            "trivial_loss": sp.simplify(trivial), "rank": K - 1 if bias else K}


@lru_cache(maxsize=None)
def mse_imbalanced_symbolic() -> dict:
    """Regularised MSE without bias, class sizes n_k: the problem decouples per class.

    Ansatz: w_k = u_k φ_k, h_i = v_k φ_k for i in class k (orthonormal φ_k):
    L_k = (n_k/2N)(u_kv_k − 1)² + (λ_W/2)u_k² + (λ_H n_k/2)v_k².

    Returns:
        dict: ``L_k``, ``u2`` (‖w_k‖²), ``v2`` (‖h_i‖²), ``uv``, ``condition`` (class k
        survives iff n_k > N²λ_Wλ_H), ``loss_k``.
    """
    N, lW, lH = S.N, S.lambda_W, S.lambda_H
    L = n_k * (u * v - 1) ** 2 / (2 * N) + lW * u ** 2 / 2 + lH * n_k * v ** 2 / 2
    eqs = [sp.diff(L, u), sp.diff(L, v)]
    u2, u_star, v_star, balance, v_of_u = _nonzero_stationary_point(eqs, u, v)
    return {"L_k": L, "u2": sp.simplify(u2), "v2": sp.simplify(v_star ** 2), "uv": sp.simplify(u_star * v_star),
            "loss_k": sp.simplify(L.subs({u: u_star, v: v_star})), "trivial_loss_k": L.subs({u: 0, v: 0}),
            "condition": sp.StrictGreaterThan(n_k, N ** 2 * lW * lH)}


# ---------------------------------------------------------------------------------------------
# unregularised CE: max-margin direction (Ji et al. 2022; Lyu & Li 2020)
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def max_margin_symbolic() -> dict:
    """min ½(‖W‖² + ‖H‖²) s.t. every margin >= 1, on the ETF ansatz (Lagrange multipliers).

    On the ansatz ½(Ku² + Nv²) is minimised subject to uvK/(K−1) = 1.

    Returns:
        dict: ``u2`` (‖w_k‖²), ``v2`` (‖h_i‖²), ``ratio`` (h = ratio·w), ``multiplier``.
    """
    K, n = S.K, S.n
    N = K * n
    mu = sp.Symbol("mu", positive=True)
    Lag = (K * u ** 2 + N * v ** 2) / 2 - mu * (u * v * K / (K - 1) - 1)
    sol = sp.solve([sp.diff(Lag, u), sp.diff(Lag, v), sp.diff(Lag, mu)], [u, v, mu], dict=True)
    sol = [s for s in sol if all(x.is_positive is not False for x in s.values())][0]
    return {"u2": sp.simplify(sol[u] ** 2), "v2": sp.simplify(sol[v] ** 2), "ratio": sp.simplify(sol[v] / sol[u]),
            "multiplier": sp.simplify(sol[mu])}


# ---------------------------------------------------------------------------------------------
# numeric evaluation and verification
# ---------------------------------------------------------------------------------------------

def _class_sizes(problem):
    if problem.labels is None:
        raise ValueError("problem: fixed points need one-hot labels")
    counts = np.bincount(problem.labels, minlength=problem.K)
    if np.any(counts == 0):
        raise ValueError("problem: every class needs at least one context")
    if not np.allclose(problem.weights, 1.0 / problem.N, rtol=1e-12, atol=0):
        raise ValueError("problem: fixed points are derived for the mean loss (weights 1/N)")
    return counts


def grams_from_scalars(problem, u2, v2, uv, shape: str):
    """Grams and logits (M = WH) of the ansatz for a problem.

    Arguments:
        u2, v2, uv: ‖w_k‖², ‖h_i‖², and u·v (arrays of length K for "diag").
        shape: "identity" (W = uΦ, Φ orthonormal), "centred" (EEᵀ = P_K), "etf" (unit simplex
            ETF, ΦΦᵀ = (K/(K−1))P_K) or "diag" (one scalar per class).

    Returns:
        (M, G_W, G_H).
    """
    Y = problem.Y
    K = problem.K
    if shape == "identity":
        T = np.eye(K)
    elif shape == "centred":
        T = np.eye(K) - 1.0 / K
    elif shape == "etf":
        T = (np.eye(K) - 1.0 / K) * K / (K - 1)
    elif shape == "diag":
        return np.diag(uv) @ Y, np.diag(u2), Y.T @ np.diag(v2) @ Y
    else:
        raise ValueError(f"shape: unknown {shape!r}")
    return uv * T @ Y, u2 * T, v2 * Y.T @ T @ Y


def _verify_fixed_point(model, M, GW, GH, b, loss_value, *, d=None, seed=0, scale=1.0, tol_gram=1e-10,
                        tol_loss=5e-12, tol_field=1e-14, t_max=1e7, rtol=1e-11) -> Verification:
    """Run the integrator to convergence from ``model.init(d, scale, seed)`` and compare.

    Compared: G_W, G_H, the logits and the bias (max entry relative to the largest predicted
    one), the loss, and the vector field at the prediction (it must vanish). Tolerances, from
    the integrator run to a relative change of 1e-10 (``converge``) on the CE, MSE (with and
    without bias), imbalanced-MSE and coupled cases of the tests and derivations — measured:
    Grams, logits and bias <= 2.0e-11, loss <= 9.2e-13, field <= 3.9e-16 (rounding):
    ``tol_gram`` = 1e-10 (Grams, logits, bias), ``tol_loss`` = 5e-12, ``tol_field`` = 1e-14.
    """
    from ..models import GramState
    d = d or (model.K + model.N)
    init = model.init(d, scale=scale, seed=seed)
    if model.bias:
        init = model.state(init.W, init.H, np.random.default_rng(seed).normal(0, scale, model.K))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        state, t_end, change, ok = converge(model, init, t_max=t_max, rtol=rtol)
    pred = GramState(M, GW, GH, b)
    field = model.vector_field(pred)
    fscale = max(np.abs(GW).max(), np.abs(GH).max(), 1.0)
    parts = [field.M, field.gram_W, field.gram_H] + ([field.b] if model.bias else [])
    res = max(np.abs(x).max() for x in parts) / fscale
    ver = Verification("fixed point vs ufm.solve (Gram space, generic init)")
    ver.discrepancies = {
        "G_W (max entry, relative)": relative_error(state.gram_W, GW),
        "G_H (max entry, relative)": relative_error(state.gram_H, GH),
        "logits (max entry, relative)": relative_error(state.logits(), pred.logits()),
    }
    if model.bias:
        # relative to the largest logit: the predicted bias may be 0 (CE with bias decay)
        ver.discrepancies["bias (max entry, relative to the logits)"] = (
            float(np.abs(state.b - b).max()) / max(np.abs(pred.logits()).max(), 1e-300))
    ver.discrepancies.update({"loss (absolute)": abs(model.loss(state) - loss_value),
                              "vector field at prediction": res})
    ver.tolerances = {k: tol_gram for k in ver.discrepancies}
    ver.tolerances.update({"loss (absolute)": tol_loss, "vector field at prediction": tol_field})
    ver.details = {"t_end": t_end, "converged": ok, "last relative change": f"{change:.1e}", "d": d, "seed": seed}
    return ver


def fixed_point(model) -> Result:
    """The closed-form fixed point of ``model`` (a global minimiser of its objective).

    Covered: regularised MSE with and without an unregularised bias (balanced), regularised
    MSE without bias for imbalanced classes, regularised CE (balanced; with bias the optimal
    bias is 0 when λ_b > 0). A coupled model (constant Θ positive definite, λ_E = 0) has the
    same fixed points: the flow is dW = −∇_W L, dH = −(∇_H L)Θ, which vanishes iff ∇L = 0.

    Arguments:
        model: a :class:`ufm.UFM` with one-hot labels and mean-loss weights.

    Returns:
        :class:`~ufm.theory.result.Result` with expressions ``G_W``, ``G_H``, ``margin`` /
        ``singular value``, ``loss`` …, values (``G_W``, ``G_H``, ``M``, ``b``, ``loss``,
        ``exists``), the existence condition and ``verify(d=, seed=, scale=, tol_gram=,
        tol_loss=, tol_field=)``, which compares ``values`` (as they are when it is called)
        with the integrator run to convergence (see :func:`_verify_fixed_point`).

    Raises:
        NotImplementedError: configurations without a derived closed form (λ_E > 0, CE with
            imbalance or without decay — see :func:`max_margin` / :func:`seli` —, MSE with
            bias decay or imbalance with bias).
        ValueError: a coupling that is not positive definite.
    """
    from .._validation import check_instance
    from ..models import UFM, PiecewiseCoupling
    check_instance(model, "model", UFM, "a ufm.UFM")
    if model.lambda_E > 0:
        raise NotImplementedError("fixed_point: λ_E > 0 (linear-features model) changes the landscape; "
                                  "no closed form is derived")
    if isinstance(model.coupling, PiecewiseCoupling):
        raise NotImplementedError("fixed_point: time-dependent coupling")
    note = ""
    if model.coupling is not None:
        ev = np.linalg.eigvalsh(model.coupling)
        if ev[0] <= 1e-12 * ev[-1]:
            raise ValueError("coupling: Θ must be positive definite for the fixed points to be those of the "
                             "standard UFM (a null direction of Θ leaves ∇_H L unconstrained)")
        note = ("coupled UFM with λ_E = 0: dH/dt = −(∇_H L)Θ vanishes iff ∇_H L = 0 (Θ invertible), so the "
                "fixed points are those of the standard UFM; Θ only bends the path. ")
    counts = _class_sizes(model.problem)
    balanced = np.all(counts == counts[0])
    p = model.problem
    vals = S.model_values(model)
    if model.loss_name == "ce":
        if not balanced:
            raise NotImplementedError("fixed_point: regularised CE with imbalanced classes has no closed form "
                                      "here (see seli() for the λ → 0 direction)")
        if model.lambda_W <= 0 or model.lambda_H <= 0:
            raise NotImplementedError("fixed_point: unregularised CE has no finite fixed point; see max_margin()")
        if model.bias and model.lambda_b <= 0:
            raise NotImplementedError("fixed_point: CE with an unregularised bias (the bias is then not fixed)")
        d = ce_symbolic()
        exists = bool(d["condition"].subs(vals))
        if exists:
            vals_m = {**vals, m_sym: d["margin"].subs(vals)}
            u2, v2, uv = (float(d[k].subs(vals_m)) for k in ("u2", "v2", "uv"))
            loss = float(d["loss"].subs(vals_m))
        else:
            u2 = v2 = uv = 0.0
            loss = float(np.log(p.K))
        M, GW, GH = grams_from_scalars(p, u2, v2, uv, "etf")
        K = S.K
        P = sp.Symbol("P_K", commutative=False)
        expressions = {"margin m": d["margin"], "‖w_k‖²": d["u2"], "‖h_i‖²": d["v2"], "h_i / w_{y_i}": d["ratio"],
                       "G_W": d["u2"] * K / (K - 1) * P, "loss": d["loss"]}
        note += "‖w_k‖², ‖h_i‖², G_W and the loss are written through the margin m. "
        name = "regularised CE fixed point (Zhu et al. 2021): simplex ETF"
        b = np.zeros(p.K) if model.bias else None
        values = {"G_W": GW, "G_H": GH, "M": M, "b": b, "loss": loss, "margin": float(d["margin"].subs(vals)) if exists else 0.0,
                  "u2": u2, "v2": v2}
        if model.bias:
            note += "With bias and λ_b > 0 the optimal bias is 0 (the rows of G sum to 0 on the ETF). "
        result = Result(name, expressions, values, d["condition"], exists, model, note + "Mean-loss normalisation.")
    else:
        if model.lambda_W <= 0 or model.lambda_H <= 0:
            raise NotImplementedError("fixed_point: MSE without decay has a manifold of minimisers")
        if model.bias and model.lambda_b > 0:
            raise NotImplementedError("fixed_point: MSE with a regularised bias is not derived (docs/theory.md: b unregularised)")
        if balanced:
            d = mse_symbolic(bool(model.bias))
            exists = bool(d["condition"].subs(vals))
            if exists:
                u2, v2, uv = (float(d[k].subs(vals)) for k in ("u2", "v2", "uv"))
                loss = float(d["loss"].subs(vals))
            else:
                u2 = v2 = uv = 0.0
                loss = float(d["trivial_loss"].subs(vals))
            M, GW, GH = grams_from_scalars(p, u2, v2, uv, "centred" if model.bias else "identity")
            b = np.full(p.K, float(d["bias"].subs(vals))) if model.bias else None
            T = sp.Symbol("P_K" if model.bias else "I_K", commutative=False)
            expressions = {"WWᵀ": d["u2"] * T, "H̄ᵀH̄": d["v2"] * T, "WH̄": d["uv"] * T, "W / H̄ᵀ": d["ratio"],
                           "loss": d["loss"]}
            if model.bias:
                expressions["b"] = d["bias"]
            name = f"regularised MSE fixed point (Tirer & Bruna 2022), {'with' if model.bias else 'no'} bias"
            values = {"G_W": GW, "G_H": GH, "M": M, "b": b, "loss": loss, "u2": u2, "v2": v2, "uv": uv}
            result = Result(name, expressions, values, d["condition"], exists, model, note + "Mean-loss normalisation.")
        else:
            if model.bias:
                raise NotImplementedError("fixed_point: imbalanced MSE with bias is not derived")
            d = mse_imbalanced_symbolic()
            per = [{**vals, n_k: int(c)} for c in counts]
            alive = np.array([bool(d["condition"].subs(x)) for x in per])
            u2 = np.array([float(d["u2"].subs(x)) if a else 0.0 for x, a in zip(per, alive)])
            v2 = np.array([float(d["v2"].subs(x)) if a else 0.0 for x, a in zip(per, alive)])
            uv = np.array([float(d["uv"].subs(x)) if a else 0.0 for x, a in zip(per, alive)])
            loss = sum(float((d["loss_k"] if a else d["trivial_loss_k"]).subs(x)) for x, a in zip(per, alive))
            M, GW, GH = grams_from_scalars(p, u2, v2, uv, "diag")
            expressions = {"‖w_k‖²": d["u2"], "‖h_i‖² (i in class k)": d["v2"], "w_k·h_i": d["uv"],
                           "loss_k": d["loss_k"]}
            name = "regularised MSE fixed point, imbalanced classes (minority collapse)"
            values = {"G_W": GW, "G_H": GH, "M": M, "b": None, "loss": loss, "alive": alive, "class_sizes": counts}
            result = Result(name, expressions, values, d["condition"], bool(alive.all()), model,
                            note + "Mean-loss normalisation; class k vanishes iff n_k <= N²λ_Wλ_H.")
    V = result.values

    def verify(**kw):
        return _verify_fixed_point(model, V["M"], V["G_W"], V["G_H"], V["b"], V["loss"], **kw)

    result._verify = verify
    return result


# ---------------------------------------------------------------------------------------------
# λ → 0 directions
# ---------------------------------------------------------------------------------------------

def _smallest_margin(Z, labels) -> float:
    """min over samples of z_{y_i,i} − max_{k≠y_i} z_{k,i}."""
    cols = np.arange(Z.shape[1])
    others = np.array(Z, dtype=float, copy=True)
    others[labels, cols] = -np.inf
    return float((Z[labels, cols] - others.max(axis=0)).min())


def _verify_direction(model, values, name, *, t, d, seed, scale, tol, tol_above=1e-9) -> Verification:
    """Unregularised CE from ``model.init(d, scale, seed)`` against a max-margin prediction.

    ``values`` holds the minimum-norm solution with margin 1: ``G_W``, ``G_H`` and the logits
    ``M``. Along the flow ‖W‖² + ‖H‖² = tr G_W + tr G_H grows like log t; the theory fixes the
    limit of every Gram entry and logit divided by it, including the relative scales of
    ‖w_k‖² and ‖h_i‖² (one normalisation for all three matrices, not one each). Checked at the
    last save time:

    * the relative distance of (G_W, G_H, logits)/(‖W‖² + ‖H‖²) to the prediction's;
    * the diagonal alone (each ‖w_k‖² and ‖h_i‖² over ‖W‖² + ‖H‖², max relative error);
    * the normalised margin γ = (smallest margin)/(‖W‖² + ‖H‖²) against the prediction's γ*,
      and that γ(t) never exceeds γ* (γ* is the maximum over all W, H when the prediction is
      the max-margin solution, so a larger measured γ refutes it);
    * that the distance decreases over the second half of the save times.
    """
    import ufm
    t = np.asarray(t, dtype=float)
    labels = model.problem.labels
    GW, GH, M = (np.asarray(values[k], dtype=float) for k in ("G_W", "G_H", "M"))
    total = np.trace(GW) + np.trace(GH)
    pred = np.concatenate([GW.ravel(), GH.ravel(), M.ravel()]) / total
    pred_norms = np.concatenate([np.diag(GW), np.diag(GH)]) / total
    gamma_pred = _smallest_margin(M, labels) / total
    x0 = model.init(d or model.K + model.N, scale=scale, seed=seed)
    tr = ufm.solve(model, x0, t, space="gram", rtol=1e-10, atol=1e-13 * scale ** 2)
    T = len(t)
    s = np.trace(tr.gram_W, axis1=1, axis2=2) + np.trace(tr.gram_H, axis1=1, axis2=2)
    meas = np.concatenate([tr.gram_W.reshape(T, -1), tr.gram_H.reshape(T, -1), tr.logits.reshape(T, -1)], axis=1)
    dist = np.linalg.norm(meas / s[:, None] - pred, axis=1) / np.linalg.norm(pred)
    norms = np.concatenate([np.diagonal(tr.gram_W, axis1=1, axis2=2), np.diagonal(tr.gram_H, axis1=1, axis2=2)],
                           axis=1) / s[:, None]
    gamma = np.array([_smallest_margin(Z, labels) for Z in tr.logits]) / s
    late = dist[T // 2:]
    at = f"t = {t[-1]:.0e}"
    ver = Verification(name)
    ver.discrepancies = {
        f"(G_W, G_H, logits)/(‖W‖²+‖H‖²) at {at} (relative)": float(dist[-1]),
        f"‖w_k‖², ‖h_i‖² over ‖W‖²+‖H‖² at {at} (max relative)":
            float(np.max(np.abs(norms[-1] - pred_norms) / pred_norms)),
        f"normalised margin |1 − γ/γ*| at {at}": float(abs(1 - gamma[-1] / gamma_pred)),
        "normalised margin above the predicted maximum (max γ/γ* − 1)": float(max(0.0, (gamma / gamma_pred - 1).max())),
        "distance not decreasing over the later saves (0/1)": 0.0 if np.all(np.diff(late) < 0) else 1.0,
    }
    ver.tolerances = dict(zip(ver.discrepancies, (tol, tol, tol, tol_above, 0.0)))
    ver.details = {"distance vs t": np.array2string(dist, precision=4), "γ/γ* vs t": np.array2string(gamma / gamma_pred, precision=5),
                   "t": np.array2string(t, precision=1), "init scale": scale, "seed": seed}
    return ver


def max_margin(model) -> Result:
    """Direction of unregularised CE gradient flow, balanced classes (Ji et al. 2022).

    The flow converges in direction to the minimum-norm separating solution; on the ETF ansatz
    (:func:`max_margin_symbolic`) it has h_i = w_{y_i}/√n and ‖w_k‖² = (K−1)√n/K at margin
    1, logits P_K Y (·K/(K−1) scaled to margin 1). This equals the direction of the
    regularised minimiser for λ_W = λ_H at every λ (its h/w ratio is √(λ_W/(nλ_H))).

    Returns:
        Result with values ``G_W``, ``G_H``, ``M`` (the margin-1 minimum-norm solution),
        ``u2`` = ‖w_k‖², ``v2`` = ‖h_i‖², and ``verify(t=, d=, seed=, scale=, tol=)``.
        The verification (:func:`_verify_direction`) integrates the unregularised model from
        a small generic init and compares (G_W, G_H, logits)/(‖W‖² + ‖H‖²), the norms and the
        normalised margin with the prediction at the last time. Convergence is slow: the
        norm grows like log t, and from an O(1) init the distance falls only like 1/√log t
        (0.066 at t = 1e7, 0.056 at 1e9 for K = 3, n = 2) — the class mean of W is conserved (1ᵀG = 0) and
        its cross terms with the growing part fade like 1/√log t. A small init makes these
        remnants small, hence the default scale 1e-3. Measured at t = 1e9, seeds 0–2, K ≤ 5, n ≤ 3:
        distance <= 9.9e-3, norms <= 3.3e-3, margin gap <= 4.3e-3 (K = 2, n = 3: distance 6.8e-5);
        default ``tol`` = 0.03. Larger K approach more slowly (K = 6, n = 1: 0.25 at 1e9).

    Raises:
        ValueError: not CE, decay present, or imbalanced classes.
    """
    if model.loss_name != "ce" or model.lambda_W or model.lambda_H:
        raise ValueError("model: max_margin describes unregularised CE (λ_W = λ_H = 0)")
    counts = _class_sizes(model.problem)
    if not np.all(counts == counts[0]):
        raise ValueError("model: imbalanced classes; use seli()")
    d = max_margin_symbolic()
    vals = S.model_values(model)
    u2, v2 = float(d["u2"].subs(vals)), float(d["v2"].subs(vals))
    uv = np.sqrt(u2 * v2)
    M, GW, GH = grams_from_scalars(model.problem, u2, v2, uv, "etf")
    expressions = {"‖w_k‖²": d["u2"], "‖h_i‖²": d["v2"], "h_i / w_{y_i}": d["ratio"]}
    values = {"G_W": GW, "G_H": GH, "M": M, "u2": u2, "v2": v2}
    res = Result("max-margin direction of unregularised CE (balanced)", expressions, values, None, True, model,
                 "The norms grow like log t; the direction and the relative scales are predicted.")

    def verify(t=tuple(10.0 ** np.arange(1, 10)), d=None, seed=0, scale=1e-3, tol=0.03):
        return _verify_direction(model, res.values, "max-margin direction vs unregularised ufm.solve",
                                 t=t, d=d, seed=seed, scale=scale, tol=tol)

    res._verify = verify
    return res


def seli(problem) -> Result:
    """SELI geometry of imbalanced unregularised CE (Thrampoulidis et al. 2022).

    Logits → Ẑ = P_K Y (the simplex-encoded label matrix), G_W ∝ (ẐẐᵀ)^{1/2},
    G_H ∝ (ẐᵀẐ)^{1/2}. Derivation: with ‖W‖² + ‖H‖² >= 2‖WH‖_* the max-margin problem
    becomes min ‖Z‖_* s.t. (e_{y_i} − e_k)ᵀz_i >= 1, whose KKT conditions at Ẑ (all margins
    exactly 1) ask the subgradient UVᵀ of the nuclear norm to be a non-negative combination
    of the constraint gradients (e_{y_i} − e_k)e_iᵀ: every off-label entry of UVᵀ must be
    <= 0 (its columns already sum to 0). ``values["kkt_max_offlabel"]`` is the largest
    off-label entry (<= 0 when SELI is optimal); ``values["kkt_holds"]`` says so.

    Returns:
        Result with values ``Z`` (Ẑ, margins exactly 1), ``M`` (= Ẑ), ``G_W`` = (ẐẐᵀ)^{1/2}
        and ``G_H`` = (ẐᵀẐ)^{1/2} (the minimum-norm factorisation W = UΣ^{1/2}R,
        H = RᵀΣ^{1/2}Vᵀ of Ẑ = UΣVᵀ: tr G_W = tr G_H = ‖Ẑ‖_*), the KKT entries, and
        ``verify(t=, d=, seed=, scale=, tol=)``: unregularised CE from a generic init compared
        at the last time as in :func:`max_margin` (:func:`_verify_direction`), plus the KKT
        condition. The approach is slower than for balanced classes and does not profit from
        a small init (the remaining distance does not depend on it); measured at t = 1e9
        (scale 0.1, seeds 0–2), class sizes (3,1,1), (4,2,1), (3,2,2,1), (2,1): distance
        <= 2.8e-2, norms <= 3.7e-2, margin gap <= 1.9e-2; default ``tol`` = 0.08 (so a
        geometry off by more than ~0.1, or norms off by ~20 %, fail). Strong imbalance is
        slower still: (5,5,1,1) has distance 0.12 at t = 1e9.
    """
    Y = np.asarray(problem.Y)
    K = problem.K
    Zh = (np.eye(K) - 1.0 / K) @ Y
    # (ẐẐᵀ)^{1/2} = U Σ Uᵀ and (ẐᵀẐ)^{1/2} = V Σ Vᵀ from the SVD Ẑ = U Σ Vᵀ (both are singular)
    Uz, sz, Vzt = np.linalg.svd(Zh, full_matrices=False)
    GW = Uz @ np.diag(sz) @ Uz.T
    GH = Vzt.T @ np.diag(sz) @ Vzt
    # UVᵀ = (ẐẐᵀ)^{+1/2} Ẑ
    w, V = np.linalg.eigh(Zh @ Zh.T)
    keep = w > 1e-12 * w.max()
    UVt = (V[:, keep] / np.sqrt(w[keep])) @ V[:, keep].T @ Zh
    off = UVt[(1 - Y).astype(bool)]
    values = {"Z": Zh, "M": Zh, "G_W": GW, "G_H": GH, "kkt_max_offlabel": float(off.max()),
              "kkt_holds": bool(off.max() <= 1e-12)}
    res = Result("SELI geometry (imbalanced, λ → 0)", {}, values, None, values["kkt_holds"], None,
                 "Evaluated numerically for the given class sizes; the KKT check decides optimality.")

    def verify(t=tuple(10.0 ** np.arange(1, 10)), d=None, seed=0, scale=0.1, tol=0.08):
        import ufm
        ver = _verify_direction(ufm.UFM(problem), res.values, "SELI geometry vs unregularised ufm.solve",
                                t=t, d=d, seed=seed, scale=scale, tol=tol)
        ver.discrepancies["KKT violated (0/1)"] = float(not res.values["kkt_holds"])
        ver.tolerances["KKT violated (0/1)"] = 0.0
        return ver

    res._verify = verify
    return res
