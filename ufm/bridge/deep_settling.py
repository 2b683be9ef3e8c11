"""Deep-family predictions that end in the origin's basin: the certified linear tail.

A fitted :class:`~ufm.deep.DeepUFM` with decay on every factor can decay to the origin long
before the run's horizon ends (``mlp_factorial_adamw``'s deep fit: tr G_H ~ 1e-77 by t ≈ 126 of
a horizon of 9e5). At the origin the Jacobian of the parameter flow is exactly −diag(η_i λ_i)
(n >= 3 factors: every gradient term is a product of at least two other factors), so an
explicit method keeps stepping at its stability limit h ≈ 3.3/(ηλ) through the rest of the
horizon (48k DOPRI5 steps per prediction, 5 s). :func:`solve_deep_settling` integrates as
:func:`ufm.solve` in parameter space, but every :data:`CHECK_STEPS` steps that did not reach
the end it tests the certificate below; where it holds, the remaining saves are filled from
the exact linear decay of every factor, which the true solution follows to a bound below the
integrator's tolerance.

The certificate (:func:`origin_basin`)
--------------------------------------
Write the n = L + 2 factors y_1 = H₀, y_2 = W_1, …, y_{n−1} = W_L, y_n = W, with rates η_i,
decays λ_i, a_i = η_i λ_i, S = Σ_i a_i, Frobenius norms r_i = ‖y_i‖ and P = ∏_j r_j. With
Z = y_n ⋯ y_1 and G = ∂ℓ/∂Z the flow is dy_i/dt = −η_i (∇_i ℓ + λ_i y_i), where
∇_i ℓ = (y_n ⋯ y_{i+1})ᵀ G (y_{i−1} ⋯ y_1)ᵀ, so

    ‖∇_i ℓ‖ <= ‖G‖ ∏_{j≠i} r_j <= g P / r_i,       ⟨y_i, ∇_i ℓ⟩ = ⟨G, Z⟩ (the same for every i),

with g a bound on ‖G‖_F over the region considered:

* CE: column i of G is π_i (p_i − Y_i), p_i a probability vector, so ‖p_i − Y_i‖² <= 1 + ‖Y_i‖²
  when Y_i >= 0 (one-hot or soft labels: g = sqrt(2 Σ π_i²)), else (1 + ‖Y_i‖)²; for every Z.
* MSE: G = (Z − Y) diag(π), so ‖G‖ <= ‖Y diag π‖ + max π · ‖Z‖ <= ‖Y diag π‖ + max π · P, and P
  only decreases inside the region (below), so P at the test bounds it for all later times.

Then d r_i / dt = −a_i r_i − η_i ⟨G, Z⟩ / r_i, i.e. d ln r_i/dt = −a_i (1 + θ_i ε_i) with
|θ_i| <= 1 and

    ε_i = g P / (λ_i r_i²)          (|⟨G, Z⟩| <= ‖G‖ ‖Z‖ <= g P).

Hence d ln ε_i/dt = Σ_j d ln r_j − 2 d ln r_i <= −(S − 2a_i) + (Σ_j a_j ε_j + 2 a_i ε_i).
Let ε = max_i ε_i at the test time t_s, m = S − 2 max_i a_i (positive when n >= 3 and the
rates are comparable: (n − 2)ηλ for equal ones) and κ = m − (S + 2 max_i a_i) ε. If κ > 0,
every ε_i decreases while all ε_j <= ε, so the set {max_j ε_j <= ε} is forward-invariant and
in it ε_i(t) <= ε_i(t_s) e^{−κ(t − t_s)}; every r_i decreases (d ln r_i/dt <= −a_i(1 − ε) < 0),
so does P, and the MSE bound g stays valid. The model never leaves the origin's basin.

The linear tail. With τ = t − t_s and x_i(τ) = e^{a_i τ} y_i(t), dx_i/dτ = −η_i e^{a_i τ} ∇_i ℓ
and ‖∇_i ℓ‖ <= g P / r_i = λ_i ε_i r_i <= λ_i ε_i(t_s) e^{−κτ} r_i(t_s) e^{−a_i (1 − ε) τ}, so

    ‖x_i(τ) − y_i(t_s)‖ <= a_i ε_i(t_s) r_i(t_s) ∫₀^∞ e^{−(κ − a_i ε) s} ds = ρ_i r_i(t_s),
    ρ_i = a_i ε_i(t_s) / (κ − a_i ε)                   (needs κ > a_i ε),

that is ‖y_i(t) − e^{−a_i τ} y_i(t_s)‖ <= ρ_i ‖e^{−a_i τ} y_i(t_s)‖ for every t >= t_s: each
factor of the extrapolated tail is within a relative ρ_i of the true one, uniformly in time.
A saved product of k factors (Z: n of them; G_H = F_LᵀF_L: 2(n − 1); G_W = WWᵀ: 2) is then
within (1 + ρ)^k − 1, ρ = max ρ_i, of the true one relative to the product of the factors'
norms, and the objective's decay terms λ_i r_i²/2 within (1 + ρ)² − 1; the data loss moves by
at most g·‖ΔZ‖. The certificate holds when (1 + ρ)^{2(n−1)} − 1 <= rtol (2(n − 1) >= n: the
worst of the saves), the integrator's relative tolerance: the filled saves err by less than
one step of the integrator may. (Since ε ∝ r^{n−2} near the origin, the test passes a few
decay times after the model entered the basin.)

What it does not cover: a bias (Z = ⋯ + b1ᵀ; b then relaxes to its own optimum, which is not
a linear decay: this certificate refuses a model with a bias; the minimum test below still
applies), n = 2 factors
(``layers=0``: m <= 0, the origin may be a saddle), a factor without decay (λ_i = 0). A state
outside the basin — a saddle, a plateau, a non-trivial minimum — fails the test and the
integration goes on; it is only ever a sufficient condition.

Underflow. The exact tail leaves the floating-point range (``mlp_factorial_adamw``: G_H decays
as e^{−8ηλτ} = e^{−1.43τ} from ~1e-81 at t_s, below 1e-308 after τ ≈ 370), and a zero Gram
has no cosines: the fits'
scale-free observables would turn NaN where the true ones stay at their values of t_s (the
tail's directions are constant to within ρ). The tail is therefore held at its state at τ*,
the first τ at which a saved product (‖Z‖, tr G_H or tr G_W) reaches :data:`TINY` (1e-120: the
metrics square Gram norms, e.g. the ETF distance's normalisation, which must stay
representable; measured: at 1e-250 it turned NaN on 15 saves of that fit), provided
every factor is then within the absolute tolerance of the origin (RMS of its entries <=
atol): the held state is then as close to the exact tail as the integrator's own error control
would keep it (absolute tolerance), and its directions are exact. (An explicit method at its
stability limit does not follow the decay either: DOPRI5's tail there ends with entries of G_W ≈ 1e-20,
where the exact ones are ~e^{−0.36·8.8e5}: the lead's deep_profile_example.py prediction,
ufm.solve against solve_deep_settling.) Otherwise the tail underflows honestly.

What a test costs: the n factor norms and one bound (O(Kd + Ld² + dN)), far less than one step.

Non-trivial minima
------------------
A model with weak decay settles at a non-trivial minimum instead
(``mlp_factorial_adamw_mse``'s deep fit, λ ≈ 1.8e-4: settled by t ≈ 1e5 of a horizon of 1.9e7,
then ~47k steps at the stability limit). Outside the origin's basin the run is also tested,
after :data:`MINIMUM_CHECK_STEPS` steps and then at doubling gaps, by
:func:`settled_minimum` — settling.py's standard (Newton step below one tolerance unit and
every eigenvalue of the linearisation stable, never a saddle or a plateau) in parameter space,
with the continuous symmetries W_l → Q_l W_l Q_{l−1}ᵀ lifted off the Hessian — and where it
holds the remaining saves hold the settled state (``info["settled_kind"]`` "minimum"). The
saved quantities (Z, G_W, G_H) are invariants of the symmetry, so the drift along the orbit
that the lifted test ignores does not move them.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["origin_basin", "linear_tail", "hold_time", "settled_minimum", "solve_deep_settling", "CHECK_STEPS",
           "MINIMUM_CHECK_STEPS", "LIFTED_MARGIN", "TINY"]

#: integrator steps between two certificate tests (a test costs less than one step; measured on
#: three of mlp_factorial_adamw's deep predictions, each certified at its first test: 100 here
#: ends them after 99 steps, 0.04 s, where 1,000 took 999 steps, 0.29-0.34 s)
CHECK_STEPS = 100
#: steps before the first test for a non-trivial minimum (settled_minimum; the gap doubles after
#: each failure). A test that settles costs ~63 Hessian-vector products, 15-20 ms at d = 32, L = 3,
#: K = N = 16 (mlp_factorial_adamw_mse's deep fit), the price of ~100 DOPRI5 steps: measured at
#: three of its predictions, 1,000 here settles them after 1,000 steps (0.18-0.20 s) where
#: 2,000 took 2,000 (0.34 s) and 500 paid a failed test first (0.27-1.0 s)
MINIMUM_CHECK_STEPS = 1_000
#: the lifted Hessian counts as positive definite when its smallest eigenvalue is >= this × its
#: largest: far above the relative error of the central-difference products (~1e-10: step
#: 1e-5 relative, error O(step²) and rounding O(1e-16/step)), where settling.py's exact
#: Jacobians allow 1e-10 (measured ratios at the settled minima: 0.02 mlp_factorial_adamw_mse,
#: 0.005-0.034 mlp_factorial_sgd)
LIFTED_MARGIN = 1e-6
#: the gap between two minimum tests grows by this factor after each failure
_GAP_GROWTH = 2.0
#: whether solve_deep_settling tests for non-trivial minima at all
_MINIMUM = True
#: the linear tail is held where a saved product would fall below this (module docstring)
TINY = 1e-120


def _factors(model, y: np.ndarray, d: int):
    """[(block slice, rate η_i, decay λ_i, count in the product)] of the flat parameter
    state: W, H₀, then the L hidden layers (the kernels' layout)."""
    K, N, L = model.K, model.N, model.layers
    nW, nH = K * d, d * N
    out = [(slice(0, nW), model.lr_W, model.lambda_W), (slice(nW, nW + nH), model.lr_H, model.lambda_H)]
    for l in range(L):
        o = nW + nH + l * d * d
        out.append((slice(o, o + d * d), model.lr_L, model.lambda_L))
    return out


def _gradient_bound(model, P: float) -> float:
    """g >= ‖∂ℓ/∂Z‖_F for every Z with ‖Z‖_F <= P (module docstring)."""
    Y = np.asarray(model.problem.Y, dtype=np.float64)
    pi = np.asarray(model.problem.weights, dtype=np.float64)
    norms = np.sqrt(np.sum(Y * Y, axis=0))
    if model.loss_name == "ce":
        per = np.where(np.all(Y >= 0.0, axis=0), np.sqrt(1.0 + norms ** 2), 1.0 + norms)
        return float(np.sqrt(np.sum((pi * per) ** 2)))
    return float(np.sqrt(np.sum((pi * norms) ** 2)) + np.max(pi) * P)


def origin_basin(model, y: np.ndarray, d: int, rtol: float) -> tuple[bool, dict]:
    """Whether the parameter-space state ``y`` of a deep model is certified to decay to the
    origin along the linear tail to within ``rtol`` (the module docstring's certificate).

    Arguments:
        model: a :class:`~ufm.deep.DeepUFM`. y: (Kd + dN + Ld² [+ K],) its flat state (the
            kernels' layout). d: the width. rtol: the relative error allowed to the tail.

    Returns:
        (certified, details): details has ``epsilon`` (max ε_i), ``kappa`` (the decay rate of
        ε, nan when undefined), ``relative_error`` (the bound (1 + ρ)^{2(n−1)} − 1 on the
        saves, inf when not certified), ``rates`` (a_i = η_i λ_i, W, H₀, layers) and ``why``.
    """
    y = np.asarray(y, dtype=np.float64)
    blocks = _factors(model, y, d)
    n = len(blocks)
    a = np.array([eta * lam for _, eta, lam in blocks])
    details = {"epsilon": math.inf, "kappa": math.nan, "relative_error": math.inf, "rates": a}
    if model.bias:
        return False, {**details, "why": "the logits carry a bias (not a linear decay)"}
    if n < 3:
        return False, {**details, "why": "fewer than 3 factors (the origin may be a saddle)"}
    lam = np.array([lam for _, _, lam in blocks])
    if not np.all(lam > 0.0):
        return False, {**details, "why": "a factor without decay"}
    r = np.array([math.sqrt(float(np.dot(y[s], y[s]))) for s, _, _ in blocks])
    if not np.all(np.isfinite(r)):
        return False, {**details, "why": "non-finite state"}
    if np.all(r == 0.0):
        eps_i = np.zeros(n)                  # the origin itself: an equilibrium
    elif np.any(r == 0.0):
        # a zero factor does not stay zero (its gradient is the product of the others)
        return False, {**details, "why": "a zero factor beside non-zero ones"}
    else:
        P = float(np.prod(r))
        eps_i = _gradient_bound(model, P) * P / (lam * r * r)
    S = float(np.sum(a))
    a_max = float(np.max(a))
    eps = float(np.max(eps_i))
    kappa = (S - 2.0 * a_max) - (S + 2.0 * a_max) * eps
    details.update(epsilon=eps, kappa=kappa)
    if not kappa > a_max * eps:
        return False, {**details, "why": "outside the certified basin of the origin"}
    rho = float(np.max(a * eps_i / (kappa - a * eps)))
    bound = math.expm1(2 * (n - 1) * math.log1p(rho))
    details.update(relative_error=bound)
    if not bound <= rtol:
        return False, {**details, "why": "in the basin, the tail not yet within the tolerance"}
    return True, {**details, "why": "certified"}


def linear_tail(model, y: np.ndarray, d: int, tau: float) -> np.ndarray:
    """The extrapolated state e^{−a_i τ} y_i of every factor (module docstring), (n_state,)."""
    out = np.array(y, dtype=np.float64)
    for s, eta, lam in _factors(model, y, d):
        out[s] *= math.exp(-eta * lam * tau)
    return out


def hold_time(model, y: np.ndarray, d: int, atol: float) -> float:
    """τ* of the module docstring's underflow paragraph: the first τ at which ‖Z‖, tr G_H or
    tr G_W of the linear tail from ``y`` reaches :data:`TINY` (inf when every factor is not
    yet within ``atol`` of the origin there, or nothing decays)."""
    blocks = _factors(model, y, d)
    a = np.array([eta * lam for _, eta, lam in blocks])
    parts = [y[s].reshape(-1) for s, _, _ in blocks]
    K, N, L = model.K, model.N, model.layers
    W = parts[0].reshape(K, d)
    F = parts[1].reshape(d, N)
    for l in range(L):
        F = parts[2 + l].reshape(d, d) @ F
    sizes = {"Z": (np.linalg.norm(W @ F), float(np.sum(a))),
             "gram_H": (float(np.sum(F * F)), 2.0 * (a[1] + float(np.sum(a[2:])))),
             "gram_W": (float(np.sum(W * W)), 2.0 * a[0])}
    taus = [(math.log(v) - math.log(TINY)) / c for v, c in sizes.values() if v > 0.0 and c > 0.0]
    if not taus:
        return math.inf
    tau = max(0.0, min(taus))
    held = linear_tail(model, y, d, tau)
    for s, _, _ in blocks:
        if not math.sqrt(float(np.mean(held[s] ** 2))) <= atol:
            return math.inf
    return tau


def _orbit_tangent(model, y: np.ndarray, d: int):
    """(T, Tᵀ) of the symmetry orbit at ``y``: T maps L + 1 skew d×d generators (A_0 on H₀'s
    output space, …, A_L on W's input space) to the state tangent (δH₀ = A_0 H₀,
    δW_l = A_l W_l − W_l A_{l−1}, δW = −W A_L, δb = 0); Tᵀ is its adjoint (skew parts)."""
    K, N, L = model.K, model.N, model.layers
    nW, nH = K * d, d * N
    W = y[:nW].reshape(K, d)
    H0 = y[nW:nW + nH].reshape(d, N)
    Ls = [y[nW + nH + l * d * d:nW + nH + (l + 1) * d * d].reshape(d, d) for l in range(L)]
    n_rest = y.size - nW - nH - L * d * d

    def T(As):
        parts = [(-W @ As[L]).ravel(), (As[0] @ H0).ravel()]
        parts += [(As[l + 1] @ Ls[l] - Ls[l] @ As[l]).ravel() for l in range(L)]
        return np.concatenate(parts + [np.zeros(n_rest)])

    def Tt(v):
        vW = v[:nW].reshape(K, d)
        vH = v[nW:nW + nH].reshape(d, N)
        vL = [v[nW + nH + l * d * d:nW + nH + (l + 1) * d * d].reshape(d, d) for l in range(L)]
        out = []
        for l in range(L + 1):
            into = vH @ H0.T if l == 0 else vL[l - 1] @ Ls[l - 1].T
            out_of = Ls[l].T @ vL[l] if l < L else W.T @ vW
            X = into - out_of
            out.append(0.5 * (X - X.T))
        return out

    return T, Tt


def settled_minimum(model, y: np.ndarray, d: int, rtol: float, atol: float) -> tuple[bool, dict]:
    """Whether the parameter-space state ``y`` of a deep model sits at a *stable* equilibrium
    modulo its symmetries, to the tolerance: :func:`ufm.bridge.settling.settled`'s two tests
    in parameter space, with the orbit of the symmetry group lifted off the Hessian.

    The flow is dy/dt = −D ∇f (D the per-block rates), its Jacobian −D H, whose eigenvalues
    have the signs of H's. H is singular along the orbit tangent range(T) (the orbit of a
    critical point consists of critical points), so the tests run on H + μ T Tᵀ (μ = the
    largest eigenvalue of H): positive definite only if H is positive definite on the
    complement of range(T) (vᵀ(H + μTTᵀ)v = vᵀHv there). Tested: (1) the Newton step
    (H + μTTᵀ)⁻¹∇f (CG) at most one tolerance unit (RMS of δ_i/(atol + rtol|y_i|)); (2) the
    smallest eigenvalue of H + μTTᵀ (Lanczos, scipy's eigsh) at least :data:`LIFTED_MARGIN`·μ. Then
    the state converges to a point of the orbit within the tolerance, and every saved quantity
    (Z, G_W, G_H: orbit invariants) stays where it is. Hessian-vector products are central
    differences of the kernel's field. A saddle (negative eigenvalue) or a state still moving
    fails; a failure of the iterative solvers to converge fails too.

    Arguments:
        model: a :class:`~ufm.deep.DeepUFM`. y: flat parameter state. d: width.
        rtol, atol: the integrator's tolerances.

    Returns:
        (settled, details): ``displacement``, ``smallest`` and ``largest`` eigenvalues of the
        lifted Hessian, ``products`` (Hessian-vector products spent) and ``why``.
    """
    import scipy.sparse.linalg as sla
    from .. import engine
    from ..kernels import fields as _f
    y = np.ascontiguousarray(y, dtype=np.float64)
    packed = engine.pack_deep_model(model, "parameters", d)
    work = np.zeros(_f.work_size(packed))
    K, N, L = model.K, model.N, model.layers
    rates = np.concatenate([np.full(K * d, model.lr_W), np.full(d * N, model.lr_H), np.full(L * d * d, model.lr_L),
                            np.full(y.size - K * d - d * N - L * d * d, model.lr_b)])

    def grad(x):
        f = np.zeros_like(x)
        _f.vector_field(0, x, f, packed, work)
        return -f / rates

    g = grad(y)
    details = {"displacement": math.inf, "smallest": math.nan, "largest": math.nan, "products": 0}
    if not np.all(np.isfinite(g)):
        return False, {**details, "why": "non-finite field"}
    scale = float(np.sqrt(np.mean(y * y))) + 1e-300
    count = [0]

    def hvp(v):
        count[0] += 1
        nv = float(np.linalg.norm(v))
        if nv == 0.0:
            return np.zeros_like(v)
        e = 1e-5 * scale / nv
        return (grad(y + e * v) - grad(y - e * v)) / (2.0 * e)

    n = y.size
    T, Tt = _orbit_tangent(model, y, d)
    v0 = np.random.default_rng(0).normal(size=n)              # deterministic start vectors
    try:
        mu = float(sla.eigsh(sla.LinearOperator((n, n), matvec=hvp, dtype=np.float64), k=1, which="LA", tol=1e-3,
                             v0=v0, return_eigenvectors=False)[0])
        details["largest"] = mu
        if not mu > 0.0:
            return False, {**details, "products": count[0], "why": "no positive curvature"}
        lifted = sla.LinearOperator((n, n), matvec=lambda v: hvp(v) + mu * T(Tt(v)), dtype=np.float64)
        step, info = sla.cg(lifted, g, rtol=1e-3, maxiter=500)
        newton = float(np.sqrt(np.mean((step / (atol + rtol * np.abs(y))) ** 2))) if info == 0 else math.inf
        details["displacement"] = newton
        if not newton <= 1.0:
            return False, {**details, "products": count[0], "why": "still moving"}
        low = float(np.min(sla.eigsh(lifted, k=1, which="SA", tol=1e-4, v0=v0, maxiter=3000,
                                     return_eigenvectors=False)))
    except sla.ArpackError:                 # no convergence (ArpackNoConvergence) or any ARPACK failure
        return False, {**details, "products": count[0], "why": "eigenvalues did not converge"}
    details.update(smallest=low, products=count[0])
    if not low >= LIFTED_MARGIN * mu:
        return False, {**details, "why": "not a stable equilibrium (saddle or flat direction)"}
    return True, {**details, "why": "settled"}


def solve_deep_settling(model, init, t, *, t0: float = 0.0, method="dopri5", rtol: float = 1e-8,
                        atol: float = 1e-10, max_steps: int = 10_000_000, save=("gram_W", "gram_H", "logits")):
    """:func:`ufm.solve` of a :class:`~ufm.deep.DeepUFM` in parameter space that ends with the
    certified linear tail once the model is in the origin's basin (module docstring).

    Arguments:
        model: a DeepUFM. init: its :class:`~ufm.deep.DeepState`. t: (T,) save times.
        t0, method (an explicit method), rtol, atol, max_steps, save: as :func:`ufm.solve`.

    Returns:
        :class:`~ufm.trajectory.Trajectory`; when it stopped early, ``info`` has
        ``settled_from`` (first filled save), ``settled_t`` (the test's time) and
        ``settled_kind``: "origin" (with ``tail_relative_error``, the certified bound, and
        ``tail_held_after``, t_s + τ*, inf when not held) or "minimum" (with
        ``settle_displacement`` and ``settle_smallest``); always ``settle_tests`` and
        ``minimum_tests``.

    Raises:
        IntegrationError: as :func:`ufm.solve` (the run failed before the tail).
    """
    from .. import engine
    from ..engine import Controls
    from ..errors import IntegrationError
    from ..integration import check_run_options
    from ..kernels import fields as _f
    from ..kernels import integrate as _k
    from ..solvers import get_solver
    from ..trajectory import Trajectory

    solver = get_solver(method, rtol)           # "auto": the explicit pair for this rtol
    rtol, atol, t0, ts, max_steps, h_max, h0 = check_run_options(solver, t, rtol, atol, t0, None, max_steps, math.inf)
    names = engine.parse_save(save, "parameters")
    model.check_state(init, "init")
    y = np.array(init.flat(), dtype=np.float64, order="C")
    d = init.d
    packed = engine.pack_deep_model(model, "parameters", d)
    buffers = engine.SaveBuffers(len(ts), y.size, model.K, model.N, d, model.bias, names)
    tab = engine.tableau(solver)
    ctl = engine.controls(rtol, atol, h_max, max_steps)
    carry = engine.new_carry(t0, h0)
    T = len(ts)
    extra = {"settle_tests": 0, "minimum_tests": 0}
    next_minimum = MINIMUM_CHECK_STEPS
    gap = MINIMUM_CHECK_STEPS
    wall = 0.0
    status = _k.STATUS_OK
    while True:
        attempted = int(carry[_k.CARRY_ACCEPTED] + carry[_k.CARRY_REJECTED])
        limit = min(max_steps, attempted + CHECK_STEPS)
        run = engine.integrate(packed, y, ts, tab, Controls(ctl.rtol, ctl.atol, ctl.h_max, int(limit)), carry, buffers)
        wall += run.wall_time_s
        status = run.status
        if status != _k.STATUS_MAX_STEPS or limit >= max_steps:
            break
        ok, details = origin_basin(model, y, d, rtol)
        extra["settle_tests"] += 1
        t_s = float(carry[_k.CARRY_T])
        j = int(carry[_k.CARRY_J])
        # a test costs up to ~0.2 s (~1,000 steps at d = 32): not worth it when fewer steps remain
        remaining = (float(ts[-1]) - t_s) / max(float(carry[_k.CARRY_H]), 1e-300)
        if not ok and _MINIMUM and limit >= next_minimum and remaining > MINIMUM_CHECK_STEPS:
            at_min, mdet = settled_minimum(model, y, d, rtol, atol)
            extra["minimum_tests"] += 1
            if at_min:
                extra.update(settled_from=j, settled_t=t_s, settled_kind="minimum",
                             settle_displacement=mdet["displacement"], settle_smallest=mdet["smallest"])
                work = np.zeros(_f.work_size(packed))
                for jj in range(j, T):
                    _f.record(jj, float(ts[jj]), y, packed, buffers.group, work)
                carry[_k.CARRY_J] = T
                status = _k.STATUS_OK
                break
            gap = int(gap * _GAP_GROWTH)          # a failed test lengthens the gap to the next one
            next_minimum = limit + gap
        if not ok:
            continue
        extra.update(settled_from=j, settled_t=t_s, settled_kind="origin",
                     tail_relative_error=details["relative_error"])
        tau_hold = hold_time(model, y, d, atol)
        extra["tail_held_after"] = t_s + tau_hold
        work = np.zeros(_f.work_size(packed))
        for jj in range(j, T):
            tau = min(float(ts[jj]) - t_s, tau_hold)
            _f.record(jj, float(ts[jj]), linear_tail(model, y, d, tau), packed, buffers.group, work)
        carry[_k.CARRY_J] = T
        status = _k.STATUS_OK
        break
    run = engine.RunResult(int(status), int(carry[_k.CARRY_J]), carry, buffers, wall)
    info = {"method": solver.name, "space": "parameters", "rtol": rtol, "atol": atol, "t0": t0, "d": d, "dt": None,
            **run.counts(), "wall_time_s": wall, "model": model.describe(), **extra}
    traj = Trajectory(t=ts[:run.reached].copy(), **buffers.fields(run.reached), problem=model.problem, model=model,
                      info=info)
    if not run.ok:
        reason, message = engine.failure(run.status, run.t_reached, run.reached, max_steps, t_end=float(ts[-1]),
                                         accepted=run.counts()["accepted_steps"])
        raise IntegrationError(message, t=run.t_reached, reason=reason, trajectory=traj)
    return traj
