"""The solvers ufm is measured against, each on the same UFM gradient flow.

A *case* (:class:`Case`) is one initial-value problem: loss, K = N, width d, decays, init scale
and seed, save times, tolerances. Every runner takes a case and returns a :class:`Outcome`
(the flat state [vec(W), vec(H)] at the save times, the right-hand-side evaluation count when
the solver reports or lets us count it, success and a message), so that the benchmark can
time them alike and score each against the same tight reference (:func:`reference`).

Runners: ``ufm.solve`` with every adaptive method ``ufm.solvers`` registers (and
``method="auto"`` when ufm has it), scipy's ``solve_ivp`` on a vectorised numpy right-hand
side, numbalsoda's ``dop853`` and ``lsoda`` on a plain numba ``cfunc`` right-hand side (what a
numba user writes without ufm), and diffrax under ``jax.jit`` (float64). A peer that is not
installed, or a ufm method that does not exist in this checkout, is reported by
:func:`unavailable` / :func:`ufm_methods` with the reason, never an exception.
"""

from __future__ import annotations

import ctypes
import inspect
import time
from dataclasses import dataclass, field

import numpy as np

#: the tight reference: scipy DOP853 at these tolerances
REFERENCE_RTOL, REFERENCE_ATOL = 1e-13, 1e-16

#: how to install the optional peers (pyproject's ``bench`` extra installs all three)
INSTALL = {"numbalsoda": "apt-get install gfortran && pip install numbalsoda",
           "diffrax": "pip install jax diffrax", "scipy": "pip install scipy"}


#: Case -> its ufm.UFM (Case.model)
_SETUP: dict = {}


@dataclass(frozen=True)
class Case:
    """One initial-value problem of the UFM flow (one-hot labels, K = N, Θ = I, no bias).

    Arguments:
        K: classes = contexts. d: width. loss: ``"ce"`` or ``"mse"``.
        lam: λ_W = λ_H. scale: init scale (``UFM.init``). seed: init seed.
        t: save times (the run starts at t = 0). rtol, atol: tolerances of every solver.
    """
    K: int
    d: int
    t: tuple
    loss: str = "ce"
    lam: float = 1e-3
    scale: float = 1e-2
    seed: int = 0
    rtol: float = 1e-8
    atol: float = 1e-10
    label: str = ""

    @property
    def times(self) -> np.ndarray:
        return np.asarray(self.t, dtype=float)

    def model(self):
        """The ufm model of the case, built once per case: every runner reads the problem
        (Y, π, the initial state) from it, and building a ufm.UFM costs ~0.3 ms (measured at
        K = 10), which the timed runs are not about -- before this was cached, ``run_ufm``
        built it twice and ``run_scipy`` twice, ``run_numbalsoda`` once per timed run."""
        if self not in _SETUP:
            import ufm
            _SETUP[self] = ufm.UFM(ufm.settings.balanced(self.K), loss=self.loss, lambda_W=self.lam,
                                   lambda_H=self.lam)
        return _SETUP[self]

    def init(self):
        return self.model().init(self.d, scale=self.scale, seed=self.seed)

    def y0(self) -> np.ndarray:
        x0 = self.init()
        return np.concatenate([x0.W.ravel(), x0.H.ravel()])

    def arrays(self):
        """(Y (K, N), π (N,)) as contiguous float64 arrays."""
        p = self.model().problem
        return (np.ascontiguousarray(p.Y, dtype=float), np.ascontiguousarray(p.weights, dtype=float))


@dataclass
class Outcome:
    """What one solver run produced: ``y`` (T, n) at the save times (rows after a failure are
    NaN), ``nfev`` (right-hand-side evaluations; None when unknown), ``ok``, ``message``."""
    y: np.ndarray
    nfev: int | None
    ok: bool = True
    message: str = ""
    extra: dict = field(default_factory=dict)


def relative_error(y, y_ref) -> float:
    """Largest over save times of ‖y_t − y_ref,t‖ / ‖y_ref,t‖ (inf when y has NaNs)."""
    y, y_ref = np.asarray(y, dtype=float), np.asarray(y_ref, dtype=float)
    if y.shape != y_ref.shape or not np.all(np.isfinite(y)):
        return float("inf")
    num = np.linalg.norm(y - y_ref, axis=1)
    den = np.maximum(np.linalg.norm(y_ref, axis=1), 1e-300)
    return float(np.max(num / den))


# ---------------------------------------------------------------------------------------------
# availability
# ---------------------------------------------------------------------------------------------

def unavailable(peer: str) -> str | None:
    """None when ``peer`` ("numbalsoda", "diffrax", "scipy") imports, else why not (with the
    install command)."""
    module = {"numbalsoda": "numbalsoda", "diffrax": "diffrax", "scipy": "scipy.integrate"}[peer]
    try:
        __import__(module)
        if peer == "diffrax":
            __import__("jax")
    except Exception as exc:  # noqa: BLE001 - absent or broken: not a peer in this run
        return f"skipped: {peer} not installed ({type(exc).__name__}: {exc}); install with `{INSTALL[peer]}`"
    return None


def default_method() -> str:
    """The method ``ufm.solve`` uses when none is given."""
    import ufm
    return inspect.signature(ufm.solve).parameters["method"].default


def ufm_methods() -> dict:
    """Every adaptive method this checkout of ufm offers, name -> None (usable) or the reason it
    is skipped. Reads ``ufm.solvers.SOLVERS`` (so new tableaux are picked up) and probes
    ``"auto"`` and each method with a tiny solve."""
    import ufm
    import ufm.solvers as solvers
    names = [name for name, s in getattr(solvers, "SOLVERS", {}).items() if getattr(s, "adaptive", True)]
    for extra in ("auto", default_method()):
        if extra not in names:
            names.append(extra)
    model = ufm.UFM(ufm.settings.balanced(2), lambda_W=1e-3, lambda_H=1e-3)
    x0 = model.init(3, scale=1e-2, seed=0)
    out = {}
    for name in names:
        try:
            ufm.solve(model, x0, np.array([0.5, 1.0]), method=name, save=("W", "H"))
            out[name] = None
        except (ValueError, TypeError, NotImplementedError) as exc:
            out[name] = f"skipped: not available in this ufm ({exc})"
        except Exception as exc:  # noqa: BLE001 - a method that exists but fails: report it, benchmark the rest
            out[name] = f"skipped: ufm.solve(method={name!r}) failed on a tiny problem ({type(exc).__name__}: {exc})"
    return out


# ---------------------------------------------------------------------------------------------
# right-hand sides
# ---------------------------------------------------------------------------------------------

def numpy_rhs(Y, pi, lam_w, lam_h, d, theta=None, loss="ce"):
    """scipy's right-hand side: vectorised numpy on the flat [vec(W), vec(H)] state."""
    K, N = Y.shape
    nW = K * d
    mse = loss == "mse"

    def f(t, y):
        W = y[:nW].reshape(K, d)
        H = y[nW:].reshape(d, N)
        Z = W @ H
        if mse:
            G = (Z - Y) * pi
        else:
            Z -= Z.max(axis=0)
            E = np.exp(Z)
            E /= E.sum(axis=0)
            G = (E - Y) * pi
        dW = G @ H.T
        dW += lam_w * W
        T = W.T @ G
        T += lam_h * H
        if theta is not None:
            T = T @ theta
        out = np.empty_like(y)
        out[:nW] = -dW.ravel()
        out[nW:] = -T.ravel()
        return out
    return f


_CFUNCS: dict = {}


def numba_cfunc_rhs(case: Case):
    """The right-hand side a numba user writes for numbalsoda without ufm: a ``cfunc`` of the
    ``lsoda_sig`` signature (t, u*, du*, p*) with the products as ``@`` on views of the state
    (numba calls BLAS for them) and the column softmax and the updates as row-major loops;
    ``p[0]`` counts the evaluations. Cached per case shape."""
    key = (case.K, case.d, case.loss, case.lam)
    if key in _CFUNCS:
        return _CFUNCS[key]
    from numba import carray, cfunc
    from numbalsoda import lsoda_sig
    Y, pi = case.arrays()
    K, N = Y.shape
    d = case.d
    nW = K * d
    n = nW + d * N
    lam = float(case.lam)
    mse = case.loss == "mse"

    @cfunc(lsoda_sig)
    def rhs(t, u, du, p):
        y = carray(u, (n,))
        dy = carray(du, (n,))
        counter = carray(p, (1,))
        counter[0] += 1.0
        W = y[:nW].reshape((K, d))
        H = y[nW:].reshape((d, N))
        Z = W @ H
        G = np.empty((K, N))
        if mse:
            for k in range(K):
                for i in range(N):
                    G[k, i] = (Z[k, i] - Y[k, i]) * pi[i]
        else:
            # column softmax in row-major passes (Z is C-ordered: the inner loop runs along a row)
            top = Z[0].copy()
            for k in range(1, K):
                for i in range(N):
                    top[i] = max(top[i], Z[k, i])
            total = np.zeros(N)
            for k in range(K):
                for i in range(N):
                    e = np.exp(Z[k, i] - top[i])
                    G[k, i] = e
                    total[i] += e
            for k in range(K):
                for i in range(N):
                    G[k, i] = (G[k, i] / total[i] - Y[k, i]) * pi[i]
        dW = G @ H.T
        dH = W.T @ G
        for k in range(K):
            for j in range(d):
                dy[k * d + j] = -(dW[k, j] + lam * W[k, j])
        for j in range(d):
            for i in range(N):
                dy[nW + j * N + i] = -(dH[j, i] + lam * H[j, i])

    _CFUNCS[key] = rhs
    return rhs


def call_cfunc(rhs, y: np.ndarray, t: float = 0.0) -> np.ndarray:
    """Evaluate a numbalsoda ``cfunc`` right-hand side at ``y`` from Python (for checks)."""
    y = np.ascontiguousarray(y, dtype=float)
    dy = np.empty_like(y)
    counter = np.zeros(1)
    ptr = ctypes.POINTER(ctypes.c_double)
    rhs.ctypes(t, y.ctypes.data_as(ptr), dy.ctypes.data_as(ptr), counter.ctypes.data_as(ptr))
    return dy


# ---------------------------------------------------------------------------------------------
# runners
# ---------------------------------------------------------------------------------------------

def run_ufm(case: Case, method: str, *, cap_s: float | None = None, space: str = "parameters") -> Outcome:
    """``ufm.solve`` with ``method``; ``cap_s`` stops the run (reported, not raised) once that many
    wall seconds have passed (checked between chunks of save times)."""
    import ufm
    from ufm.errors import IntegrationError
    model, x0 = case.model(), case.init()
    started = time.perf_counter()

    class _Capped(Exception):
        pass

    def watch(t_reached, t_end):
        if time.perf_counter() - started > cap_s:
            raise _Capped(f"stopped by the benchmark's {cap_s:g} s wall-clock cap at t = {t_reached:.3g}")
    try:
        tr = ufm.solve(model, x0, case.times, method=method, rtol=case.rtol, atol=case.atol, save=("W", "H"),
                       space=space, progress=watch if cap_s else None)
    except _Capped as exc:
        return Outcome(np.full((len(case.t), 2 * case.K * case.d), np.nan), None, False, str(exc))
    except IntegrationError as exc:
        return Outcome(np.full((len(case.t), 2 * case.K * case.d), np.nan), None, False,
                       f"IntegrationError: {exc}")
    y = np.concatenate([tr.W.reshape(len(tr.t), -1), tr.H.reshape(len(tr.t), -1)], axis=1)
    info = tr.info
    return Outcome(y, int(info["rhs_evaluations"]), True, "",
                   {k: v for k, v in info.items() if isinstance(v, (int, float, str)) and k != "model"})


def run_scipy(case: Case, method: str, *, rtol=None, atol=None, cap_s: float | None = None) -> Outcome:
    """``scipy.integrate.solve_ivp`` on :func:`numpy_rhs` (finite-difference Jacobians for the
    implicit methods, as a user gets by default)."""
    from scipy.integrate import solve_ivp
    Y, pi = case.arrays()
    f = numpy_rhs(Y, pi, case.lam, case.lam, case.d, loss=case.loss)
    started = time.perf_counter()

    class _Capped(Exception):
        pass
    if cap_s:
        inner = f

        def f(t, y):  # noqa: F811 - the capped variant
            if time.perf_counter() - started > cap_s:
                raise _Capped(f"stopped by the benchmark's {cap_s:g} s wall-clock cap at t = {t:.3g}")
            return inner(t, y)
    t = case.times
    try:
        sol = solve_ivp(f, (0.0, float(t[-1])), case.y0(), method=method, t_eval=t,
                        rtol=case.rtol if rtol is None else rtol, atol=case.atol if atol is None else atol)
    except _Capped as exc:
        return Outcome(np.full((len(t), 2 * case.K * case.d), np.nan), None, False, str(exc))
    if not sol.success:
        return Outcome(np.full((len(t), 2 * case.K * case.d), np.nan), int(sol.nfev), False, sol.message)
    return Outcome(sol.y.T.copy(), int(sol.nfev), True, "", {"njev": int(sol.njev), "nlu": int(sol.nlu)})


def run_numbalsoda(case: Case, method: str, *, mxstep: int = 2_000_000_000) -> Outcome:
    """numbalsoda's ``dop853`` or ``lsoda`` on :func:`numba_cfunc_rhs` (saves from t = 0)."""
    import numbalsoda
    rhs = numba_cfunc_rhs(case)
    solver = {"dop853": numbalsoda.dop853, "lsoda": numbalsoda.lsoda}[method]
    t_eval = np.concatenate([[0.0], case.times])
    counter = np.zeros(1)
    usol, ok = solver(rhs.address, case.y0(), t_eval, data=counter, rtol=case.rtol, atol=case.atol,
                      mxstep=int(mxstep))
    y = usol[1:].copy()
    message = "" if ok else f"numbalsoda {method} failed (mxstep = {mxstep} or step size too small)"
    if not ok:
        y[:] = np.nan
    return Outcome(y, int(counter[0]), bool(ok), message)


_DIFFRAX: dict = {}


def diffrax_solver(ts, solver: str = "Dopri5", *, coupled: bool = False, loss: str = "ce", rtol=1e-8,
                   atol=1e-10, max_steps: int = 1_000_000):
    """A jitted diffrax solve, (W0, H0, args) -> (W at ts (T, K, d), H at ts (T, d, N), steps),
    and the same under vmap over a leading batch axis; args = (Y, π, λ, Θ). float64.

    ``rtol=None, atol=None``: the tolerances become arguments instead,
    (W0, H0, args, rtol, atol), so that one compilation serves every tolerance (the
    work-precision section runs seven; one compile at K = N = 10 took 1.7-2 s here)."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp

    def vf(t, y, args):
        W, H = y
        Y, pi, lam, theta = args
        Z = W @ H
        G = ((Z - Y) if loss == "mse" else (jax.nn.softmax(Z, axis=0) - Y)) * pi
        dW = -(G @ H.T + lam * W)
        T = W.T @ G + lam * H
        dH = -(T @ theta) if coupled else -T
        return (dW, dH)

    term = diffrax.ODETerm(vf)
    method = getattr(diffrax, solver)()
    ts = np.asarray(ts, dtype=float)
    saveat = diffrax.SaveAt(ts=jnp.asarray(ts))

    def solve(W0, H0, args, rtol, atol):
        ctrl = diffrax.PIDController(rtol=rtol, atol=atol)
        sol = diffrax.diffeqsolve(term, method, t0=0.0, t1=float(ts[-1]), dt0=None, y0=(W0, H0), args=args,
                                  saveat=saveat, stepsize_controller=ctrl, max_steps=max_steps)
        return sol.ys[0], sol.ys[1], sol.stats["num_steps"]

    if rtol is None:
        return jax.jit(solve), jax.jit(jax.vmap(solve, in_axes=(0, 0, 0, None, None)))

    def one(W0, H0, args):
        return solve(W0, H0, args, rtol, atol)

    return jax.jit(one), jax.jit(jax.vmap(one))


def diffrax_runner(case: Case, solver: str):
    """A compiled diffrax solve of ``case`` with ``solver``: a function () -> :class:`Outcome`
    (compiled on the first call for the case's shape, saves and solver, whatever its tolerances,
    so timing its calls excludes compilation). nfev is not reported (diffrax counts steps)."""
    import jax.numpy as jnp
    key = (case.K, case.d, case.loss, case.lam, case.t, solver)
    if key not in _DIFFRAX:
        _DIFFRAX[key] = diffrax_solver(case.times, solver, loss=case.loss, rtol=None, atol=None)[0]
    solve = _DIFFRAX[key]
    rtol, atol = float(case.rtol), float(case.atol)

    def one(W0, H0, args):
        return solve(W0, H0, args, rtol, atol)
    Y, pi = case.arrays()
    x0 = case.init()
    args = (jnp.asarray(Y), jnp.asarray(pi), case.lam, jnp.eye(case.K))
    W0, H0 = jnp.asarray(x0.W), jnp.asarray(x0.H)

    def run() -> Outcome:
        W, H, steps = one(W0, H0, args)
        H.block_until_ready()
        T = len(case.t)
        y = np.concatenate([np.asarray(W).reshape(T, -1), np.asarray(H).reshape(T, -1)], axis=1)
        ok = bool(np.all(np.isfinite(y)))
        return Outcome(y, None, ok, "" if ok else "diffrax returned non-finite values", {"steps": int(steps)})
    run()                                    # compile
    return run


def reference(case: Case) -> Outcome:
    """The tight reference: scipy DOP853 at rtol 1e-13, atol 1e-16."""
    out = run_scipy(case, "DOP853", rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)
    if not out.ok:
        raise RuntimeError(f"reference solve failed: {out.message}")
    return out
