"""Closed-form trajectories: Saxe modes, the UFM mode ODE, the MSE Riccati flow, the CE margin.

Each symbolic derivation restricts the gradient flow of docs/model.md to an invariant
manifold, derives the scalar (or matrix) ODE there with sympy, and solves it. The matching
``*_trajectory`` functions evaluate the solution for a model and attach a ``verify()`` that
integrates the same model with ``ufm.solve`` from the corresponding initial state.

Normalisations: π_i = 1/N (mean loss) unless a function says "sum loss" (π_i = 1, build the
problem with ``weights=np.ones(N)``); rates η_W = η_H = 1 unless stated.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp
from scipy.linalg import expm

from . import symbols as S
from .result import Result, Verification

__all__ = ["saxe_symbolic", "ufm_mode_symbolic", "balance_law_symbolic", "riccati_symbolic",
           "margin_symbolic", "aligned_init", "saxe_modes", "ufm_mode", "riccati", "ce_margin"]

uu = sp.Function("u")
tt = S.t
s_sym = sp.Symbol("s", positive=True)
tau = sp.Symbol("tau", positive=True)
u0 = sp.Symbol("u_0", positive=True)
a_s, b_s = sp.symbols("a b", positive=True)
m_sym = sp.Symbol("m", positive=True)


@lru_cache(maxsize=None)
def saxe_symbolic() -> dict:
    """One mode of a two-layer linear network (Saxe, McClelland & Ganguli 2014).

    With whitened inputs and the input–output correlation's singular value s, a mode with
    weights a (second layer) and b (first layer) has loss ½(ab − s)² (time unit τ), so
    τ da/dt = b(s − ab), τ db/dt = a(s − ab). On the balanced manifold a = b the product
    u = ab obeys τ du/dt = 2u(s − u); sympy solves this Bernoulli equation.

    Returns:
        dict: ``ode`` (Eq), ``solution`` u(t), ``travel_time`` (from u_0 to u_f),
        ``learning_time`` (u_0 → s − u_0, ≈ (τ/s) ln(s/u_0) for small u_0),
        ``half_time`` (u_0 → s/2).
    """
    L = (a_s * b_s - s_sym) ** 2 / 2
    da, db = -sp.diff(L, a_s) / tau, -sp.diff(L, b_s) / tau
    du = sp.simplify((da * b_s + a_s * db).subs(b_s, a_s).subs(a_s, sp.sqrt(uu(tt))))
    ode = sp.Eq(uu(tt).diff(tt), du)
    sol = sp.dsolve(ode, uu(tt), ics={uu(0): u0})
    sol = sol[0] if isinstance(sol, list) else sol
    u_t = sp.simplify(sol.rhs)
    uf = sp.Symbol("u_f", positive=True)
    # u(t) is rational in E = e^{2st/τ}: solve u(t) = u_f for E, then t = (τ/2s) ln E
    E = sp.Symbol("E", positive=True)
    E_f = sp.solve(sp.Eq(u_t.subs(sp.exp(2 * s_sym * tt / tau), E), uf), E)[0]
    t_f = tau / (2 * s_sym) * sp.log(sp.factor(E_f))
    # the same solution written without growing exponentials, for evaluation at large t
    stable = s_sym * u0 / (u0 + (s_sym - u0) * sp.exp(-2 * s_sym * tt / tau))
    if sp.simplify(stable - u_t) != 0:
        raise ArithmeticError("Saxe solution: stable form differs")
    return {"ode": ode, "solution": u_t, "stable": stable, "travel_time": sp.simplify(t_f),
            "learning_time": sp.simplify(t_f.subs(uf, s_sym - u0)), "half_time": sp.simplify(t_f.subs(uf, s_sym / 2)),
            "u_f": uf}


@lru_cache(maxsize=None)
def ufm_mode_symbolic() -> dict:
    """The mean-loss MSE UFM on the aligned manifold W = aΦ, H = bΦᵀY (balanced, λ_W = λ_H = λ).

    The loss on the manifold is L(a, b) = ½(ab − 1)² + (Kλ/2)a² + (Nλ/2)b²; gradient flow in
    parameter space moves a with −(1/K)∂_aL (‖Φ‖² = K) and b with −(1/N)∂_bL (‖ΦᵀY‖² = N).
    The imbalance a² − nb² decays like e^{−2λt}; on a² = nb² the class logit u = ab obeys

        du/dt = (2/(K√n)) u (1 − K√nλ − u),

    Saxe's equation with τ = K√n and s = 1 − K√nλ.

    Returns:
        dict: ``flow`` (da/dt, db/dt), ``imbalance_rate`` (d(a² − nb²)/dt / (a² − nb²)),
        ``ode`` (Eq for u), ``tau``, ``s`` and ``solution`` (Saxe's with these).
    """
    K, n, lam = S.K, S.n, S.lam
    N = K * n
    L = (a_s * b_s - 1) ** 2 / 2 + K * lam * a_s ** 2 / 2 + N * lam * b_s ** 2 / 2
    da, db = -sp.diff(L, a_s) / K, -sp.diff(L, b_s) / N
    rate = sp.simplify((2 * a_s * da - n * 2 * b_s * db) / (a_s ** 2 - n * b_s ** 2))
    # on the balanced manifold: a = n^{1/4} √u, b = n^{-1/4} √u
    sub = {a_s: n ** sp.Rational(1, 4) * sp.sqrt(uu(tt)), b_s: n ** sp.Rational(-1, 4) * sp.sqrt(uu(tt))}
    du = sp.factor(sp.simplify((da * b_s + a_s * db).subs(sub)))
    tau_ = K * sp.sqrt(n)
    s_ = 1 - K * sp.sqrt(n) * lam
    saxe = saxe_symbolic()
    check = sp.simplify(du - saxe["ode"].rhs.subs({tau: tau_, s_sym: s_}))
    if check != 0:
        raise ArithmeticError(f"UFM mode ODE is not Saxe's: residual {check}")
    return {"flow": (da, db), "imbalance_rate": rate, "ode": sp.Eq(uu(tt).diff(tt), du), "tau": tau_, "s": s_,
            "solution": saxe["solution"].subs({tau: tau_, s_sym: s_}),
            "stable": saxe["stable"].subs({tau: tau_, s_sym: s_})}


@lru_cache(maxsize=None)
def balance_law_symbolic() -> dict:
    """d/dt (WᵀW/η_W − HHᵀ/η_H) for Θ = I, λ_E = 0, with noncommutative symbols.

    With dW = −η_W(GHᵀ + λ_W W), dH = −η_H(WᵀG + λ_H H):
    d(WᵀW)/η_W = −(HGᵀW + WᵀGHᵀ) − 2λ_W WᵀW and d(HHᵀ)/η_H = −(WᵀGHᵀ + HGᵀW) − 2λ_H HHᵀ, so
    the loss terms cancel: D = WᵀW/η_W − HHᵀ/η_H obeys dD/dt = −2λ_W WᵀW + 2λ_H HHᵀ — conserved
    without decay, and dD/dt = −2κD when η_Wλ_W = η_Hλ_H = κ (docs/theory.md's e^{−2λt} is η = 1).

    Returns:
        dict: ``dD`` (the derivative, simplified), ``conserved`` (True without decay).
    """
    W, H, G, Wt, Ht, Gt = sp.symbols("W H G W^T H^T G^T", commutative=False)
    eW, eH, lW, lH = S.eta_W, S.eta_H, S.lambda_W, S.lambda_H
    dW = -eW * (G * Ht + lW * W)
    dWt = -eW * (H * Gt + lW * Wt)
    dH = -eH * (Wt * G + lH * H)
    dHt = -eH * (Gt * W + lH * Ht)
    dD = sp.expand((dWt * W + Wt * dW) / eW - (dH * Ht + H * dHt) / eH)
    return {"dD": dD, "conserved": sp.expand(dD.subs({lW: 0, lH: 0})) == 0,
            "expected": sp.expand(-2 * lW * Wt * W + 2 * lH * H * Ht)}


@lru_cache(maxsize=None)
def riccati_symbolic() -> dict:
    """The sum-loss MSE flow from a balanced init is a matrix Riccati equation, solved in closed form.

    With Q = [Hᵀ; W], F = [[0, Yᵀ], [Y, 0]], A = F − λI and W₀ᵀW₀ = H₀H₀ᵀ (kept by the flow,
    see :func:`balance_law_symbolic`), dQ/dt = AQ − ½QQᵀQ, so P = QQᵀ obeys
    dP/dt = AP + PA − P². The claimed solution P = E Q₀ X⁻¹ Q₀ᵀ E with E = e^{At},
    X = I + Q₀ᵀ(∫₀ᵗ e^{2As} ds)Q₀ is checked with noncommutative symbols, using dE/dt = AE = EA,
    dX/dt = Q₀ᵀE²Q₀ and d(X⁻¹)/dt = −X⁻¹(dX/dt)X⁻¹.

    Returns:
        dict: ``P``, ``dP`` (product rule), ``residual`` (dP − (AP + PA − P²), expands to 0).
    """
    A, E, Q, Qt, Xi = sp.symbols("A E Q_0 Q_0^T X^{-1}", commutative=False)
    P = E * Q * Xi * Qt * E
    dXi = -Xi * (Qt * E * E * Q) * Xi
    dP = A * E * Q * Xi * Qt * E + E * Q * dXi * Qt * E + E * Q * Xi * Qt * E * A
    residual = sp.expand(dP - (A * P + P * A - P * P))
    return {"P": P, "dP": dP, "residual": residual}


@lru_cache(maxsize=None)
def margin_symbolic() -> dict:
    """Unregularised CE on the symmetric manifold W = aΦ (unit simplex ETF), h_i = bφ_{y_i}, a² = nb².

    L = log(1 + (K−1)e^{−m}) with m = abK/(K−1); da/dt = −(1/K)∂_aL, db/dt = −(1/N)∂_bL.
    Then dm/dt = (2/√n) m/(e^m + K − 1); separating variables,
    ∫(e^m + K − 1)/m dm = Ei(m) + (K−1) ln m = (2/√n) t + const.

    Returns:
        dict: ``ode`` (Eq for m), ``antiderivative`` F(m) with F(m(t)) = F(m_0) + (2/√n)t.
    """
    K, n = S.K, S.n
    N = K * n
    mm = sp.Function("m")
    margin = a_s * b_s * K / (K - 1)
    L = sp.log(1 + (K - 1) * sp.exp(-margin))
    da, db = -sp.diff(L, a_s) / K, -sp.diff(L, b_s) / N
    dm = K / (K - 1) * (da * b_s + a_s * db)
    # on a² = nb²: b² = m(K−1)/(K√n), a = √n b
    bb = sp.sqrt(m_sym * (K - 1) / (K * sp.sqrt(n)))
    dm = sp.simplify(dm.subs(a_s, sp.sqrt(n) * b_s).subs(b_s, bb))
    F = sp.integrate(sp.expand(1 / dm * 2 / sp.sqrt(n)), m_sym)
    return {"ode": sp.Eq(mm(tt).diff(tt), dm.subs(m_sym, mm(tt))), "rate": dm, "antiderivative": sp.simplify(F)}


# ---------------------------------------------------------------------------------------------
# evaluation against a model
# ---------------------------------------------------------------------------------------------

def _orthonormal(rows: int, cols: int, rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(cols, rows)))
    return q.T  # rows × cols, orthonormal rows


def aligned_init(model, d: int, a, b, *, basis=None, seed: int = 0):
    """The aligned state W = U diag(a) Φ, H = Φᵀ diag(b) Vᵀ of a model with targets Y = U S Vᵀ.

    Arguments:
        model: a :class:`ufm.UFM`.
        d: width (>= rank of Y).
        a, b: per-mode scalars (length = number of modes r), or scalars.
        basis: optional (U, V) with orthonormal columns (default: the SVD of Y, its top r modes).
        seed: seed of the random orthonormal Φ (r × d).

    Returns:
        ``ufm.State``.
    """
    rng = np.random.default_rng(seed)
    if basis is None:
        U, sv, Vt = np.linalg.svd(model.problem.Y, full_matrices=False)
        r = int(np.sum(sv > 1e-12 * sv[0]))
        U, V = U[:, :r], Vt[:r].T
    else:
        U, V = basis
    r = U.shape[1]
    a = np.broadcast_to(np.asarray(a, dtype=float), (r,))
    b = np.broadcast_to(np.asarray(b, dtype=float), (r,))
    Phi = _orthonormal(r, d, rng)
    return model.state(U @ np.diag(a) @ Phi, Phi.T @ np.diag(b) @ V.T)


def _check_standard(model, loss):
    if model.loss_name != loss or model.coupling is not None or model.lambda_E or model.bias:
        raise ValueError(f"model: this closed form needs the standard bias-free {loss.upper()} UFM")
    if model.lr_W != 1.0 or model.lr_H != 1.0:
        raise ValueError("model: this closed form is derived for η_W = η_H = 1")
    if model.lambda_W != model.lambda_H:
        raise ValueError("model: this closed form needs λ_W = λ_H")


def saxe_modes(model, u_start) -> Result:
    """Per-mode logistic dynamics of the mean-loss MSE UFM with real targets Y = U S Vᵀ.

    From the aligned init W = U diag(√u₀)Φ, H = Φᵀ diag(√u₀)Vᵀ each mode's strength
    u_α = U_αᵀ(WH)V_α obeys Saxe's equation with τ = N and s = s_α − Nλ (the mean loss divides
    the gradient by N; decay shifts s): u_α(t) = s e^{2st/τ}/(e^{2st/τ} − 1 + s/u₀). Stronger
    modes are learned first: half-time (τ/2s) ln(s/u₀ − 1).

    Arguments:
        model: standard MSE UFM without bias, λ_W = λ_H, η = 1, weights 1/N.
        u_start: initial strength u₀ (scalar or one per mode).

    Returns:
        Result with values ``s`` (effective strengths), ``tau``, ``half_times``, ``order``
        (mode indices by learning order), ``u(t)`` (callable); ``verify(t=, d=)``.

    Raises:
        TypeError / ValueError: ``model`` is not a UFM of this kind; ``u_start`` is not a
            number > 0 or one per mode.
    """
    from .._validation import as_float_array, check_instance
    from ..models import UFM
    check_instance(model, "model", UFM, "a ufm.UFM")
    u_start = as_float_array(u_start, "u_start", ndim=(0, 1))
    if not np.all(u_start > 0):
        raise ValueError(f"u_start: expected initial strengths > 0, got {u_start!r}")
    _check_standard(model, "mse")
    Y = model.problem.Y
    N = model.N
    if not np.allclose(model.problem.weights, 1.0 / N):
        raise ValueError("model: saxe_modes is stated for the mean loss (weights 1/N)")
    U, sv, Vt = np.linalg.svd(Y, full_matrices=False)
    r = int(np.sum(sv > 1e-12 * sv[0]))
    if u_start.ndim == 1 and u_start.shape != (r,):
        raise ValueError(f"u_start: expected one number or one per mode ({r} modes), got shape {u_start.shape}")
    U, sv, V_basis = U[:, :r], sv[:r], Vt[:r].T
    lam = model.lambda_W
    d = saxe_symbolic()
    s_eff = sv - N * lam
    ustart = np.broadcast_to(u_start, (r,))
    f = sp.lambdify((tt, s_sym, tau, u0), d["stable"], "numpy")
    half = sp.lambdify((s_sym, tau, u0), d["half_time"], "numpy")

    def u_of_t(t):
        # evaluated with the current values["s"], values["tau"] (a substituted value is used)
        t = np.asarray(t, dtype=float)[:, None]
        return f(t, np.asarray(res.values["s"], float)[None, :], float(res.values["tau"]), ustart[None, :])

    halves = np.array([half(s, float(N), x) if s > x else np.inf for s, x in zip(s_eff, ustart)])
    values = {"s": s_eff, "tau": float(N), "half_times": halves, "order": np.argsort(halves), "u(t)": u_of_t}
    res = Result("Saxe modes of the mean-loss MSE UFM", {"ode": d["ode"], "u(t)": d["solution"],
                                                           "half time": d["half_time"], "learning time": d["learning_time"]},
                 values, None, True, model, "τ = N, s = s_α − Nλ for the mean loss with λ_W = λ_H = λ.")

    def verify(t=None, d: int | None = None, seed: int = 0, tol: float = 1e-11, tol_half: float = 3e-11):
        """Parameter-space ufm.solve from the aligned init: every mode strength u_α(t) against
        the closed form (max over saves of ‖u_meas − u_pred‖/‖u_pred‖), and each learned mode
        at its predicted half-time against s_α/2 (relative). Measured (λ = 0, 0.03, 0.1, rtol
        1e-12): u(t) <= 1.8e-12, half-times <= 4.8e-12; ``tol`` = 1e-11, ``tol_half`` = 3e-11."""
        import ufm
        vals = res.values
        halves = np.asarray(vals["half_times"], float)
        learned = np.isfinite(halves)
        t = np.geomspace(0.1, 20 * halves[learned].max(), 30) if t is None else np.asarray(t, float)
        t_all = np.union1d(t, halves[learned])
        x0 = aligned_init(model, d or r + 2, np.sqrt(ustart), np.sqrt(ustart), basis=(U, V_basis), seed=seed)
        tr = ufm.solve(model, x0, t_all, rtol=1e-12, atol=1e-15, save=("logits",))
        meas_all = np.einsum("ka,tkn,na->ta", U, tr.logits, V_basis)
        meas = meas_all[np.searchsorted(t_all, t)]
        pred = vals["u(t)"](t)
        # relative to the size of the logits (Σ_α u_α U_αV_αᵀ has Frobenius norm ‖u‖): a mode with
        # s <= 0 decays to nothing and its own relative error would only measure rounding
        err = float(np.max(np.linalg.norm(meas - pred, axis=1) / np.linalg.norm(pred, axis=1)))
        at_half = np.array([meas_all[np.searchsorted(t_all, halves[a]), a] / (s_eff[a] / 2) - 1
                            for a in np.flatnonzero(learned)])
        crossing = [float(np.interp(0.5, meas[:, a] / s_eff[a], t)) if learned[a] else np.inf for a in range(r)]
        ver = Verification("Saxe modes vs ufm.solve (parameter space, aligned init)",
                           {"u_α(t) (max relative to ‖u(t)‖)": err,
                            "u_α at the predicted half-time vs s_α/2 (max relative)": float(np.abs(at_half).max()),
                            "learning order differs (0/1)": float(list(np.argsort(crossing)) != list(vals["order"]))},
                           {"u_α(t) (max relative to ‖u(t)‖)": tol,
                            "u_α at the predicted half-time vs s_α/2 (max relative)": tol_half,
                            "learning order differs (0/1)": 0.0},
                           {"predicted half-times": np.array2string(halves, precision=3),
                            "half-times interpolated on the save grid": np.array2string(np.array(crossing), precision=3)})
        return ver

    res._verify = verify
    return res


def ufm_mode(model, u_init: float) -> Result:
    """The class-logit mode of the balanced mean-loss MSE UFM from an aligned, balanced init.

    From W = aΦ, H = bΦᵀY with a² = nb², ab = u₀ the logits stay u(t)·Y with
    du/dt = (2/(K√n)) u (1 − K√nλ − u) (:func:`ufm_mode_symbolic`).

    Returns:
        Result with values ``tau``, ``s``, ``u(t)`` (callable); ``verify(t=, d=, seed=)``.
    """
    _check_standard(model, "mse")
    counts = np.bincount(model.problem.labels, minlength=model.K)
    if model.problem.target_kind != "onehot" or not np.all(counts == counts[0]):
        raise ValueError("model: ufm_mode needs balanced one-hot classes")
    d = ufm_mode_symbolic()
    vals = {**S.model_values(model), S.lam: model.lambda_W}
    tau_v, s_v = float(d["tau"].subs(vals)), float(d["s"].subs(vals))
    fsol = sp.lambdify((tt, s_sym, tau, u0), saxe_symbolic()["stable"], "numpy")

    def u_of_t(t):
        # Saxe's solution with the current values["tau"], values["s"] (a substituted value is used)
        return fsol(np.asarray(t, dtype=float), float(res.values["s"]), float(res.values["tau"]), u_init)

    res = Result("UFM class-logit mode (mean-loss MSE, balanced aligned init)",
                 {"ode": d["ode"], "tau": d["tau"], "s": d["s"], "u(t)": d["solution"]},
                 {"tau": tau_v, "s": s_v, "u(t)": u_of_t}, None, True, model,
                 "Saxe's logistic with τ = K√n, s = 1 − K√nλ; its fixed point is the Tirer–Bruna WH̄.")

    def verify(t=None, d: int | None = None, seed: int = 0, tol: float = 1e-11, space: str = "parameters"):
        """ufm.solve from the aligned balanced init: logits against u(t)·Y (max over saves of
        the largest entry error relative to u(t)). Measured (K, n, λ) = (4, 3, 0), (4, 3, 0.05),
        (3, 2, 0.1), rtol 1e-12: <= 2.9e-12; ``tol`` = 1e-11."""
        import ufm
        t = np.geomspace(0.1, 30 * tau_v / max(s_v, 1e-3), 25) if t is None else np.asarray(t, float)
        n = model.N // model.K
        b = np.sqrt(u_init / np.sqrt(n))
        # W = aΦ, H = bΦᵀY = (b√n)Φᵀ(Yᵀ/√n)ᵀ with a = √n b: aligned with U = I, V = Yᵀ/√n
        Y = model.problem.Y
        x0 = aligned_init(model, d or model.K + 2, np.sqrt(n) * b, np.sqrt(n) * b,
                          basis=(np.eye(model.K), Y.T / np.sqrt(n)), seed=seed)
        tr = ufm.solve(model, x0, t, rtol=1e-12, atol=1e-15, save=("logits",), space=space)
        pred = res.values["u(t)"](t)
        err = np.abs(tr.logits - pred[:, None, None] * model.problem.Y).max(axis=(1, 2)) / np.abs(pred)
        return Verification("UFM mode vs ufm.solve (aligned balanced init)", {"logits = u(t)·Y (max relative)": float(err.max())},
                            {"logits = u(t)·Y (max relative)": tol}, {"t range": f"[{t[0]:.2g}, {t[-1]:.3g}]"})

    res._verify = verify
    return res


def riccati(model, W0, H0) -> Result:
    """Closed-form Gram trajectory of the sum-loss MSE UFM from a balanced init (docs/theory.md).

    P(t) = QQᵀ = e^{At}Q₀[I + Q₀ᵀ(∫₀ᵗ e^{2As}ds)Q₀]⁻¹Q₀ᵀe^{At}, Q = [Hᵀ; W], A = F − λI,
    F = [[0, Yᵀ], [Y, 0]]. The integral is the top-right block of exp([[2A, I], [0, 0]] t)
    (Van Loan), so no eigendecomposition is needed; like the formula itself it loses accuracy
    when e^{At} grows large (then integrate the Riccati ODE instead).

    Arguments:
        model: standard MSE UFM, no bias, η = 1, λ_W = λ_H, sum loss (weights all 1).
        W0 (K×d), H0 (d×N): a balanced init, W0ᵀW0 = H0H0ᵀ.

    Returns:
        Result with ``values["P(t)"]`` (callable t -> (G_H, M, G_W)); ``verify(t=)``.

    Raises:
        ValueError: wrong model or an unbalanced init.
    """
    _check_standard(model, "mse")
    if not np.allclose(model.problem.weights, 1.0):
        raise ValueError("model: the Riccati closed form is for the sum loss (problem weights all 1)")
    W0, H0 = np.asarray(W0, float), np.asarray(H0, float)
    imb = np.abs(W0.T @ W0 - H0 @ H0.T).max() / max(np.abs(W0.T @ W0).max(), 1e-300)
    if imb > 1e-10:
        raise ValueError(f"W0, H0: the closed form needs a balanced init W0ᵀW0 = H0H0ᵀ (relative imbalance {imb:.1e})")
    Y = model.problem.Y
    K, N = Y.shape
    F = np.block([[np.zeros((N, N)), Y.T], [Y, np.zeros((K, K))]])
    A = F - model.lambda_W * np.eye(N + K)
    Q0 = np.vstack([H0.T, W0])
    n = N + K
    big = np.block([[2 * A, np.eye(n)], [np.zeros((n, n)), np.zeros((n, n))]])

    def P_of_t(t):
        out = []
        for ti in np.atleast_1d(t):
            E = expm(A * ti)
            Sint = expm(big * ti)[:n, n:]
            X = np.eye(Q0.shape[1]) + Q0.T @ Sint @ Q0
            EQ = E @ Q0
            P = EQ @ np.linalg.solve(X, EQ.T)
            out.append((P[:N, :N], P[N:, :N], P[N:, N:]))
        return out

    d = riccati_symbolic()
    res = Result("Riccati closed form of the sum-loss MSE UFM", {"P(t)": d["P"], "dP/dt − (AP + PA − P²)": d["residual"]},
                 {"P(t)": P_of_t}, None, True, model, "Sum loss, λ_W = λ_H = λ, balanced init.")

    def verify(t=(0.1, 0.3, 1.0, 2.0, 3.0), tol: float = 3e-11):
        """Parameter-space ufm.solve from (W0, H0) against values["P(t)"]: G_H, M and G_W
        (max over saves of the relative Frobenius error). Measured (λ = 0, 0.1, 0.5, rtol
        1e-12): <= 7.2e-12; ``tol`` = 3e-11."""
        import ufm
        t = np.asarray(t, float)
        tr = ufm.solve(model, model.state(W0, H0), t, rtol=1e-12, atol=1e-15)
        pred = res.values["P(t)"](t)
        errs = {}
        for name, k, arr in (("G_H", 0, tr.gram_H), ("M = WH", 1, tr.logits), ("G_W", 2, tr.gram_W)):
            errs[f"{name} (max relative Frobenius)"] = float(max(np.linalg.norm(arr[i] - pred[i][k]) / np.linalg.norm(pred[i][k])
                                                                 for i in range(len(t))))
        return Verification("Riccati closed form vs ufm.solve (parameter space)", errs, {k: tol for k in errs},
                            {"t": np.array2string(t)})

    res._verify = verify
    return res


def ce_margin(model, m0: float) -> Result:
    """Margin of unregularised CE on the symmetric manifold, from its implicit closed form.

    F(m(t)) = F(m₀) + (2/√n)t with F(m) = Ei(m) + (K−1) ln m (:func:`margin_symbolic`); m(t)
    is found by a bracketed root search. Late times: e^m/m ≈ (2/√n)t, m ≈ ln t + ln ln t.

    Returns:
        Result with ``values["m(t)"]`` (callable); ``verify(t=, d=)`` starts ufm.solve on the
        manifold (W = aΦ_ETF, h_i = bφ_{y_i}, a² = nb², margin m₀).
    """
    from scipy.optimize import brentq
    from scipy.special import expi
    if model.loss_name != "ce" or model.lambda_W or model.lambda_H or model.coupling is not None or model.bias:
        raise ValueError("model: ce_margin needs the standard unregularised CE UFM without bias")
    if model.lr_W != 1.0 or model.lr_H != 1.0:
        raise ValueError("model: ce_margin is derived for η_W = η_H = 1")
    counts = np.bincount(model.problem.labels, minlength=model.K)
    if not np.all(counts == counts[0]) or not np.allclose(model.problem.weights, 1.0 / model.N):
        raise ValueError("model: ce_margin needs balanced classes and the mean loss")
    K, n = model.K, int(counts[0])

    def Fm(m):
        return expi(m) + (K - 1) * np.log(m)

    F0 = Fm(m0)

    def m_of_t(t):
        out = []
        for ti in np.atleast_1d(t):
            target = F0 + 2 / np.sqrt(n) * ti
            hi = max(m0, 1.0)
            while Fm(hi) < target:
                hi *= 2
            out.append(brentq(lambda m: Fm(m) - target, m0 * (1 - 1e-12), hi, xtol=1e-15, rtol=1e-15))
        return np.array(out)

    d = margin_symbolic()
    res = Result("CE margin on the symmetric manifold (unregularised)",
                 {"dm/dt": d["rate"], "F(m) = F(m0) + 2t/sqrt(n)": d["antiderivative"]},
                 {"m(t)": m_of_t}, None, True, model, "Mean loss, balanced, a² = nb².")

    def verify(t=(0.5, 2, 10, 50, 200, 1000, 5000), d: int | None = None, seed: int = 0, tol: float = 5e-11):
        """Parameter-space ufm.solve on the manifold: the mean margin against values["m(t)"]
        (max relative). Measured (K, n, m₀) = (3, 1, 0.01), (4, 2, 0.5), (4, 2, 1), (10, 1, 0.3),
        (10, 1, 1): <= 8.9e-12; ``tol`` = 5e-11."""
        import ufm
        t = np.asarray(t, float)
        rng = np.random.default_rng(seed)
        dd = d or K + 1
        # unit simplex ETF rows in R^dd: centred basis vectors, normalised, rotated
        E = (np.eye(K) - 1.0 / K) * np.sqrt(K / (K - 1))
        Phi = np.hstack([E, np.zeros((K, dd - K))]) @ np.linalg.qr(rng.normal(size=(dd, dd)))[0]
        b = np.sqrt(m0 * (K - 1) / (K * np.sqrt(n)))
        a = np.sqrt(n) * b
        x0 = model.state(a * Phi, b * Phi.T @ model.problem.Y)
        tr = ufm.solve(model, x0, t, rtol=1e-12, atol=1e-15, save=("logits",))
        lab = model.problem.labels
        Z = tr.logits
        correct = Z[:, lab, np.arange(model.N)]
        wrong = (Z.sum(axis=1) - correct) / (K - 1)
        meas = (correct - wrong).mean(axis=1)
        pred = res.values["m(t)"](t)
        return Verification("CE margin closed form vs ufm.solve (symmetric manifold)",
                            {"m(t) (max relative)": float(np.max(np.abs(meas - pred) / pred))},
                            {"m(t) (max relative)": tol},
                            {"m at t_max (measured, predicted)": (float(meas[-1]), float(pred[-1])),
                             "ln t + ln ln t at t_max": float(np.log(t[-1]) + np.log(np.log(t[-1])))})

    res._verify = verify
    return res
