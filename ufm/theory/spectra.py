"""Spectra derived from the symmetry: Gram matrices and the linearised flow at fixed points.

* Gram spectra (ETF, fixed points) come from the association scheme's eigenmatrix:
  Σ_a c_a R_a has eigenvalue Σ_a P[i, a] c_a on the common eigenspace V_i, multiplicity m_i
  (:class:`~ufm.theory.scheme.Scheme`). No numerical eigensolver is involved.
* The linearised flow of the mean-loss MSE UFM at its minimiser (no bias, Θ = I) splits by
  the symmetry into sectors (:func:`mse_jacobian_symbolic`), each a 1×1 or 2×2 block with
  sympy eigenvalues; multiplicities add up to the K·d + d·N parameters.
* For regularised CE at the ETF, the within-class sector (NC1 relaxation) is diagonal with
  the eigenvalues of the softmax Hessian (:func:`ce_within_class_symbolic`); the symmetric
  sector's rates come from the reduced Jacobian (:func:`ufm.theory.early_time.collapse`).

For gradient flow (Θ = I, η = 1) the Jacobian is −Hessian of the objective, so the relaxation
rates listed here are the Hessian's eigenvalues at the minimiser.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from .._validation import as_positive_int
from . import symbols as S
from .fixed_points import ce_symbolic, mse_symbolic
from .result import Result, Verification
from .scheme import bind, factorial_scheme

__all__ = ["etf_symbolic", "nc1_symbolic", "gram_spectrum", "mse_jacobian_symbolic", "ce_within_class_symbolic",
           "jacobian_spectrum", "numerical_jacobian", "spectrum"]

d_sym = sp.Symbol("d", positive=True, integer=True)
r_sym = sp.Symbol("r", positive=True)
s_sym = sp.Symbol("s", positive=True)
p_plus, p_minus = sp.symbols("p_+ p_-", positive=True)


@lru_cache(maxsize=None)
def etf_symbolic() -> dict:
    """The unit simplex ETF Gram (K/(K−1))P_K in the balanced scheme {I, J − I}.

    Its relation coefficients are 1 (identity) and −1/(K−1) (different class); the eigenmatrix
    of the scheme gives the eigenvalues on the constant vector and on its complement.

    Returns:
        dict: ``coefficients``, ``spectrum`` [(name, eigenvalue, multiplicity)].
    """
    sc = factorial_scheme(1, False)
    K = sc.sizes[0]
    coef = (sp.Integer(1), -1 / (K - 1))
    return {"coefficients": coef, "spectrum": sc.spectrum(coef, "R"), "K": K}


@lru_cache(maxsize=None)
def nc1_symbolic() -> dict:
    """Population NC1 = Tr(Σ_W Σ_B⁺)/K for class means on an ETF of radius r and isotropic
    within-class noise of variance s² per coordinate.

    The means' Gram is r²·(K/(K−1))P_K, so Σ_B = (1/K)Σ_k μ_kμ_kᵀ has the nonzero eigenvalues
    r²/(K−1) (the ETF spectrum divided by K) with multiplicity K − 1, and Σ_W = s²I. Hence
    Tr(Σ_WΣ_B⁺)/K = (K−1)·s²·(K−1)/r² / K.
    """
    e = etf_symbolic()
    K = e["K"]
    (_, ev0, m0), (_, ev1, m1) = e["spectrum"]
    nonzero = [(ev, m) for ev, m in ((ev0, m0), (ev1, m1)) if sp.simplify(ev) != 0]
    tr = sum(m * s_sym ** 2 / (r_sym ** 2 * ev / K) for ev, m in nonzero)
    return {"nc1": sp.factor(sp.simplify(tr / K)), "K": K}


def gram_spectrum(result) -> dict:
    """Eigenvalues with multiplicities of G_W and G_H at a fixed point, via the scheme.

    Arguments:
        result: a :func:`ufm.theory.fixed_points.fixed_point` result whose problem has an
            association scheme (balanced, factorial, hierarchy).

    Returns:
        dict "G_W" / "G_H" -> list of (eigenspace, eigenvalue, multiplicity) with numeric values,
        obtained as P·(relation coefficients of the Gram) — exact up to the projection.
    """
    bs = bind(result.model.problem)
    out = {}
    for key, side in (("G_W", "C"), ("G_H", "R")):
        coef, spread = bs.project(result.values[key], side)
        if spread > 1e-9:
            raise ValueError(f"{key}: the fixed point is not in the span of the scheme (spread {spread:.1e})")
        P, mult, names = bs.scheme.eigen_C if side == "C" else bs.scheme.eigen_R
        Pn = np.array(P.subs(bs.values), dtype=float)
        ev = Pn @ coef
        out[key] = [(nm, float(x), int(bs.num(m))) for nm, x, m in zip(names, ev, mult)]
    return out


@lru_cache(maxsize=None)
def mse_jacobian_symbolic() -> dict:
    """Sectors of the linearised MSE flow at the no-bias minimiser (Θ = I, η = 1).

    At W = uΦ, H = vΦᵀY (u² = √(nλ_H/λ_W) − Knλ_H, v² = √(λ_W/(nλ_H)) − Kλ_W, G* = −(1−uv)Y/N)
    split δW = δA Φ + δW_⊥Ψᵀ and δH = Φᵀ(δB Y + δB_w) + Ψ(δC Y + δC_w) (Ψ ⊥ Φ, δB_wYᵀ = 0,
    δC_wYᵀ = 0). The linearisation decouples into:

    1. within-class, in the row space of W (δB_w): δG = uδB_w/N, rate u²/N + λ_H;
    2. within-class, outside it (δC_w): δG = 0, rate λ_H;
    3. class-level outside the span (δW_⊥, δC): [[−λ_W, κ/K], [κ/N, −λ_H]], κ = 1 − uv;
    4. class-level inside the span (δA, δB, K×K): the flow of A, B in W = AΦ, H = ΦᵀBY,
       dA = −((AB − I)Bᵀ/K + λ_W A), dB = −(Aᵀ(AB − I)/N + λ_H B), linearised at (uI, vI);
       δAᵀ = ±δA decouples it into symmetric and antisymmetric 2×2 blocks.

    Returns:
        dict: ``sectors`` [(name, rate (sympy, = −eigenvalue), multiplicity (sympy in K, n, d))],
        ``total`` (sum of multiplicities, = d(K + N)).
    """
    K, n, lW, lH = S.K, S.n, S.lambda_W, S.lambda_H
    N = K * n
    d = mse_symbolic(False)
    u2, v2, uv = d["u2"], d["v2"], d["uv"]
    kappa = 1 - uv
    sectors = []
    sectors.append(("within-class, row space of W", sp.simplify(u2 / N + lH), K * (N - K)))
    sectors.append(("within-class, outside the row space", lH, (d_sym - K) * (N - K)))
    B3 = sp.Matrix([[-lW, kappa / K], [kappa / N, -lH]])
    for ev in B3.eigenvals():
        sectors.append(("class-level, outside the span (pair)", sp.simplify(-ev), K * (d_sym - K)))
    x, y = sp.symbols("x y")
    for sgn, name, mult in ((1, "class-level in span, symmetric", K * (K + 1) / 2),
                            (-1, "class-level in span, antisymmetric", K * (K - 1) / 2)):
        # δA' = −[(v²/K + λ_W)δA + (uv/K + s(uv − 1)/K)δB], δB' = −[((s(uv−1) + uv)/N)δA + (u²/N + λ_H)δB]
        B4 = -sp.Matrix([[v2 / K + lW, (uv + sgn * (uv - 1)) / K], [(sgn * (uv - 1) + uv) / N, u2 / N + lH]])
        for ev in B4.eigenvals():
            sectors.append((name, sp.simplify(-ev), mult))
    total = sp.expand(sum(m for _, _, m in sectors))
    if sp.simplify(total - d_sym * (K + N)) != 0:
        raise ArithmeticError(f"sector multiplicities add up to {total}, not d(K + N)")
    return {"sectors": sectors, "total": total}


@lru_cache(maxsize=None)
def ce_within_class_symbolic() -> dict:
    """Within-class sector of the linearised CE flow at the ETF (n > 1).

    Perturbations δh_i with zero sum inside each class decouple (their class sums vanish, and
    G depends only on the class). Column i moves as dδh_i = −(WᵀS_{y_i}W/N + λ_H)δh_i with the
    softmax Hessian S_k = diag(p) − ppᵀ, p = (p_+ at k, p_− elsewhere). S_k kills 1, acts as
    p_− on zero-sum vectors supported on the wrong classes (Sv = p_−v − p(pᵀv), pᵀv = p_−Σv = 0),
    and its last eigenvalue is tr S_k − (K − 2)p_− = Kp_+p_−. With WWᵀ = ‖w‖²(K/(K−1))P_K and
    S_kP_K = S_k, the rates are λ_H + ‖w‖²K/((K−1)N)·{p_−, Kp_+p_−} in the row space of W and
    λ_H outside it. At the fixed point p_− = e^{−m}/(1 + (K−1)e^{−m}) = √(nλ_Wλ_H).

    Returns:
        dict: ``sectors`` [(name, rate, multiplicity in K, n, d)], ``p_minus`` (at the fixed point).
    """
    K, n, lH = S.K, S.n, S.lambda_H
    N = K * n
    trace = sp.expand(1 - p_plus ** 2 - (K - 1) * p_minus ** 2)
    last = sp.factor(sp.simplify((trace - (K - 2) * p_minus).subs(p_plus, 1 - (K - 1) * p_minus)))
    if sp.simplify(last - K * (1 - (K - 1) * p_minus) * p_minus) != 0:
        raise ArithmeticError("softmax Hessian: last eigenvalue is not K p_+ p_-")
    ce = ce_symbolic()
    w2 = ce["u2"]                           # ‖w_k‖² through the margin m
    m = ce["m"]
    pm_star = sp.simplify(sp.exp(-m) / (1 + (K - 1) * sp.exp(-m)))
    scale = w2 * K / ((K - 1) * N)
    sectors = [("within-class, row space, wrong-class directions", lH + scale * p_minus, K * (n - 1) * (K - 2)),
               ("within-class, row space, margin direction", lH + scale * K * p_plus * p_minus, K * (n - 1)),
               ("within-class, outside the row space", lH, K * (n - 1) * (d_sym - (K - 1)))]
    return {"sectors": sectors, "p_minus_of_m": pm_star, "last_eigenvalue": last}


def numerical_jacobian(model, state, h: float = 1e-6) -> np.ndarray:
    """Central-difference Jacobian of the parameter-space flow (a check, not a derivation)."""
    from ..reference import flatten, unflatten
    y0 = flatten(state)
    K, N, d = model.K, model.N, state.d
    f = lambda y: flatten(model.vector_field(unflatten(y, K, N, d, model.bias)))  # noqa: E731
    J = np.empty((y0.size, y0.size))
    for j in range(y0.size):
        e = np.zeros_like(y0)
        e[j] = h
        J[:, j] = (f(y0 + e) - f(y0 - e)) / (2 * h)
    return J


def _minimiser_state(model, d: int, seed: int = 0):
    """A parameter-space state of the fixed point (W = uΦ, H = vΦᵀY or the ETF analogue)."""
    from .fixed_points import fixed_point
    fp = fixed_point(model)
    rng = np.random.default_rng(seed)
    GW = fp.values["G_W"]
    # W = (G_W)^{1/2}-factor rotated into R^d; H from W and the logits: H = W⁺ M
    w, V = np.linalg.eigh(GW)
    w = np.clip(w, 0, None)
    F = V * np.sqrt(w)                        # K×K, F Fᵀ = G_W
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :model.K].T     # K×d orthonormal rows
    W = F @ Q
    H = np.linalg.pinv(W) @ fp.values["M"]
    return fp, model.state(W, H)


def _within_class_basis(model, d: int) -> np.ndarray:
    """Orthonormal basis (columns) of the within-class perturbations in the flat (W, H) layout:
    δW = 0, δH = A Bᵀ with B an orthonormal basis of the zero-sum-per-class vectors (Y B = 0)."""
    Y = model.problem.Y
    _, sv, Vt = np.linalg.svd(Y)
    B = Vt[int(np.sum(sv > 1e-12 * sv[0])):].T               # N × (N − K)
    Q_H = np.kron(np.eye(d), B)                              # δH.ravel() (row-major d × N)
    return np.vstack([np.zeros((model.K * d, Q_H.shape[1])), Q_H])


def jacobian_spectrum(model, d: int) -> Result:
    """Relaxation rates (−Jacobian eigenvalues, = Hessian eigenvalues) at the minimiser, by sector.

    MSE (no bias, Θ = I, η = 1): every sector of :func:`mse_jacobian_symbolic`.
    CE (balanced, n > 1 for a within-class sector): :func:`ce_within_class_symbolic`.

    Arguments:
        model: the standard bias-free UFM with η = 1 (MSE, or CE with balanced classes).
        d: the width (an integer >= K: the minimiser is built with K orthonormal rows in R^d,
            and the multiplicities of the sectors outside the row space are multiples of d − K
            (MSE) and d − (K − 1) (CE)).

    Returns:
        Result with values ``sectors`` [(name, rate, multiplicity)] numeric and ``complete``
        (the sectors cover every parameter: MSE); ``verify(seed=, tol=, rate_tol=, eps=)``
        compares ``values["sectors"]`` (as it is when called) with the eigenvalues of the
        central-difference Jacobian — MSE: the whole multiset of K·d + d·N eigenvalues; CE:
        the multiset of the Jacobian restricted to the within-class perturbations (δW = 0,
        zero class sums of δH), after checking that they form an invariant subspace — and
        the decay of a within-class perturbation under ufm.solve.

    Raises:
        ValueError: a model outside the derivation, or ``d`` not an integer >= K.
        TypeError: ``d`` not an integer.
    """
    if model.coupling is not None or model.bias or model.lambda_E or model.lr_W != 1 or model.lr_H != 1:
        raise ValueError("model: the sector decomposition is derived for the standard bias-free UFM with η = 1")
    try:
        d = as_positive_int(d, "d", minimum=model.K)
    except ValueError as err:
        raise ValueError(f"{err} (the width must hold the K = {model.K} class directions of the minimiser)") from None
    vals = {**S.model_values(model), d_sym: d}
    if model.loss_name == "mse":
        sym = mse_jacobian_symbolic()
        complete = True
    else:
        sym = ce_within_class_symbolic()
        ce = ce_symbolic()
        m_star = ce["margin"].subs(vals)
        vals[ce["m"]] = float(m_star)
        vals[p_minus] = float(sym["p_minus_of_m"].subs(vals))
        vals[p_plus] = 1 - (model.K - 1) * vals[p_minus]
        complete = False
    sectors = [(nm, float(sp.N(rate.subs(vals))), int(sp.N(mult.subs(vals)))) for nm, rate, mult in sym["sectors"]]
    exprs = {f"{nm} [{sp.sstr(mult)}]": rate for nm, rate, mult in sym["sectors"]}
    res = Result(f"linearisation at the {model.loss_name.upper()} minimiser by symmetry sector", exprs,
                 {"sectors": sectors, "complete": complete}, None, True, model,
                 "Rates are −eigenvalues of the flow's Jacobian (= Hessian eigenvalues for η = 1, Θ = I).")

    def verify(seed: int = 0, tol: float = 1e-9, rate_tol: float = 1e-5, eps: float = 1e-7,
               tol_invariant: float = 1e-11):
        """Eigenvalues: max |predicted − numerical| over the largest |eigenvalue| (measured on
        MSE (K, n, d) = (3, 2, 5), (4, 2, 6) and CE (3, 3, 5), (4, 2, 6): <= 2.3e-10, the
        central-difference error; ``tol`` = 1e-9). CE: the within-class subspace's invariance
        residual (measured <= 1.4e-12; ``tol_invariant`` = 1e-11).
        Decay of a within-class perturbation of size ``eps`` fitted over 3/rate: <= 2.9e-6
        relative; ``rate_tol`` = 1e-5."""
        import ufm
        secs = res.values["sectors"]
        fp, st = _minimiser_state(model, d, seed)
        J = numerical_jacobian(model, st)
        scale = max(np.abs(np.linalg.eigvalsh(0.5 * (J + J.T))).max(), 1.0)
        pred = np.sort(np.concatenate([[r] * m for _, r, m in secs]))
        disc = {}
        if complete:
            part, name = J, "all eigenvalues (max abs / scale)"
        else:
            Q = _within_class_basis(model, d)
            part = Q.T @ J @ Q
            # the sector must decouple: J maps within-class perturbations into themselves
            disc["within-class subspace invariant (‖JQ − Q·QᵀJQ‖ / scale)"] = float(np.abs(J @ Q - Q @ part).max() / scale)
            name = "within-class eigenvalues (max abs / scale)"
        ev = np.sort(-np.linalg.eigvalsh(0.5 * (part + part.T)))
        # multiplicities that do not add up to the dimension cannot match: report inf
        disc[name] = float(np.abs(pred - ev).max() / scale) if pred.size == ev.size else np.inf
        # measured decay of a within-class perturbation inside the row space of W: two samples
        # of class 0 move apart along Wᵀx, x = e_1 − e_2 (a zero-sum vector on wrong classes, an
        # eigenvector of S_0 with eigenvalue p_−; for K = 2 the margin direction e_0 − e_1)
        lab = model.problem.labels
        members = np.flatnonzero(lab == 0)[:2]
        if members.size < 2:
            raise ValueError("verify: needs at least two samples in class 0 (n >= 2)")
        x = np.zeros(model.K)
        if model.K >= 3:
            x[1], x[2] = 1.0, -1.0
            want = "within-class, row space, wrong-class directions"
        else:
            x[0], x[1] = 1.0, -1.0
            want = "within-class, row space, margin direction"
        dH = np.zeros_like(st.H)
        dH[:, members[0]] = st.W.T @ x
        dH[:, members[1]] = -st.W.T @ x
        dH *= eps * np.linalg.norm(st.H) / np.linalg.norm(dH)
        name0, rate0 = next((nm, r) for nm, r, _ in secs if nm == want or (complete and "row space of W" in nm))
        t = np.linspace(0, 3.0 / rate0, 7)[1:]
        tr = ufm.solve(model, model.state(st.W, st.H + dH), t, rtol=1e-12, atol=1e-18, save=("H",))
        Ymat = model.problem.Y
        proj = Ymat.T @ np.linalg.inv(Ymat @ Ymat.T) @ Ymat
        within = [np.linalg.norm((Hk - st.H) - (Hk - st.H) @ proj) for Hk in tr.H]
        slope = -np.polyfit(t, np.log(within), 1)[0]
        disc["within-class decay rate (relative)"] = abs(slope - rate0) / rate0
        tols = {k: (rate_tol if "decay" in k else tol_invariant if "invariant" in k else tol) for k in disc}
        return Verification("sector rates vs numerical Jacobian and ufm.solve", disc, tols,
                            {"predicted within-class rate": rate0, "measured": slope, "sector": name0,
                             "eigenvalues compared": int(ev.size), "predicted multiplicities": int(pred.size)})

    res._verify = verify
    return res


def spectrum(model, d: int | None = None) -> dict:
    """Spectra at the model's fixed point.

    Returns:
        dict with ``gram`` (eigenvalues of G_W, G_H by eigenspace, when the problem has a
        scheme), ``jacobian`` (sector rates, when derived for this model) and ``reduced``
        (the symmetric-sector rates of the reduced Jacobian, when the problem has a scheme).
    """
    from ..models import GramState
    from .fixed_points import fixed_point
    from .reduce import reduce
    out = {}
    fp = fixed_point(model)
    if model.problem.relations is not None:
        out["gram"] = gram_spectrum(fp)
        r = reduce(model)
        y0, _ = r.state_of(GramState(fp.values["M"], fp.values["G_W"], fp.values["G_H"], fp.values["b"]))
        out["reduced"] = r.rates(r.fixed_point(y0))
    try:
        out["jacobian"] = jacobian_spectrum(model, d or model.K + 2).values["sectors"]
    except ValueError:
        pass
    return out
