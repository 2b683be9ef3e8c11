"""``ufm.solve``: integrate a UFM's gradient flow to chosen save times.

The domain-level driver over the generic numba engine in :mod:`ufm.kernels.integrate`: it
validates arguments, packs the model, allocates the outputs, runs the kernel (in chunks when
progress is reported), and turns failures into :class:`~ufm.errors.IntegrationError` with the
partial trajectory attached.
"""

from __future__ import annotations

import math
import time as _time
import warnings

import numpy as np

from ._validation import (as_float_array, as_nonnegative, as_positive, as_positive_int, as_real, check_choice,
                          check_memory)
from .errors import IntegrationError
from .kernels import integrate as _k
from .models import UFM, GramState, State
from .reference import flatten
from .solvers import get_solver
from .trajectory import SAVEABLE, Trajectory

__all__ = ["solve"]

DEFAULT_SAVE = ("gram_W", "gram_H", "logits")
_REASONS = {
    _k.STATUS_MAX_STEPS: "max_steps",
    _k.STATUS_STEP_UNDERFLOW: "step_underflow",
    _k.STATUS_NONFINITE: "nonfinite",
}


def parse_save(save, space: str) -> tuple[str, ...]:
    """Normalise ``save=``: a name, an iterable of names, or ``"all"`` (what the space has)."""
    if save is None:
        return ()
    if isinstance(save, str) and save == "all":
        return tuple(n for n in SAVEABLE if space == "parameters" or n not in ("W", "H"))
    if isinstance(save, str):
        save = (save,)
    try:
        names = tuple(save)
    except TypeError:
        raise TypeError(f"save: expected a name or an iterable of names from {SAVEABLE}, got {save!r}") from None
    for n in names:
        if not isinstance(n, str) or n not in SAVEABLE:
            raise ValueError(f"save: unknown quantity {n!r}; expected names from {SAVEABLE} or 'all'")
    bad = [n for n in names if n in ("W", "H")]
    if space == "gram" and bad:
        raise ValueError(f"save: {bad} do not exist in Gram space (space='gram' integrates WH, G_W, G_H)")
    return names


class Outputs:
    """Preallocated output arrays for the kernels' ``record`` and their conversion to fields."""

    def __init__(self, T: int, n: int, K: int, N: int, d: int | None, bias: bool, names, times: str = "t"):
        self.names = names
        self.K, self.N, self.d, self.bias = K, N, d, bias
        want_state = any(x in names for x in ("W", "H", "b"))
        self.flags = np.array([want_state, "gram_W" in names, "gram_H" in names, "logits" in names],
                              dtype=np.int64)
        per_save = 2 + n * want_state + K * K * self.flags[1] + N * N * self.flags[2] + K * N * self.flags[3]
        check_memory(8.0 * T * float(per_save), f"{times}, save",
                     f"saving {', '.join(('loss',) + tuple(names))} at {T} save times")
        self.loss = np.full(T, np.nan)
        self.data = np.full(T, np.nan)
        self.state = np.zeros((T, n) if want_state else (0, n))
        self.gram_W = np.zeros((T, K, K) if self.flags[1] else (0, K, K))
        self.gram_H = np.zeros((T, N, N) if self.flags[2] else (0, N, N))
        self.logits = np.zeros((T, K, N) if self.flags[3] else (0, K, N))

    def kernel_args(self):
        return (self.flags, self.loss, self.data, self.state, self.gram_W, self.gram_H, self.logits)

    def fields(self, upto: int) -> dict:
        K, N, d = self.K, self.N, self.d
        out = {"loss": self.loss[:upto].copy(), "data_loss": self.data[:upto].copy()}
        if self.flags[1]:
            out["gram_W"] = self.gram_W[:upto].copy()
        if self.flags[2]:
            out["gram_H"] = self.gram_H[:upto].copy()
        if self.flags[3]:
            out["logits"] = self.logits[:upto].copy()
        S = self.state[:upto]
        if "W" in self.names:
            out["W"] = S[:, :K * d].reshape(-1, K, d).copy()
        if "H" in self.names:
            out["H"] = S[:, K * d:K * d + d * N].reshape(-1, d, N).copy()
        if "b" in self.names and self.bias:
            out["b"] = S[:, -K:].copy()
        return out


def check_times(t, name: str = "t", *, start: float | None = None) -> np.ndarray:
    """1-D, finite, strictly increasing, and >= ``start``."""
    t = as_float_array(t, name, ndim=(0, 1))
    t = np.atleast_1d(t)
    if t.size == 0:
        raise ValueError(f"{name}: expected at least one save time")
    if np.any(np.diff(t) <= 0):
        i = int(np.argmax(np.diff(t) <= 0))
        raise ValueError(f"{name}: expected strictly increasing values, but {name}[{i + 1}] = {t[i + 1]!r} "
                         f"<= {name}[{i}] = {t[i]!r}")
    if start is not None and t[0] < start:
        raise ValueError(f"{name}: save times must be >= t0 = {start!r}, got {name}[0] = {t[0]!r}")
    return t


def check_run_options(solver, t, rtol, atol, t0, dt, max_steps, h_max):
    """Validate the integration options shared by :func:`solve` and :func:`ufm.sweep`.

    Returns:
        (rtol, atol, t0, ts, max_steps, h_max, h0): ``ts`` the checked save times, ``h0`` the
        first step (0 asks the adaptive driver for Hairer's heuristic).
    """
    rtol = as_positive(rtol, "rtol")
    atol = as_nonnegative(atol, "atol")
    t0 = as_real(t0, "t0")
    ts = check_times(t, "t", start=t0)
    max_steps = min(as_positive_int(max_steps, "max_steps"), _MAX_BUDGET)   # the kernels count in int64
    is_inf = isinstance(h_max, (float, np.floating)) and h_max == math.inf
    h_max = math.inf if is_inf else as_positive(h_max, "h_max")
    if solver.adaptive:
        h0 = 0.0 if dt is None else as_positive(dt, "dt")
    else:
        if dt is None:
            raise ValueError(f"dt: method {solver.name!r} takes fixed steps; pass dt= (the step size)")
        h0 = as_positive(dt, "dt")
    return rtol, atol, t0, ts, max_steps, h_max, h0


def initial_vector(model: UFM, init, space: str, t0: float = 0.0):
    """Flat initial state and width d (None in Gram space) from a State or GramState.

    Raises:
        TypeError / ValueError: ``init`` is not a state of this model.
        IntegrationError: ``init`` (or its Gram-space image) already has entries beyond the
            divergence bound 1e60, so the run could only stall; raised before any step.
    """
    if not isinstance(init, (State, GramState)):
        raise TypeError(f"init: expected a ufm.State (from model.init / model.state) or a ufm.GramState, "
                        f"got {type(init).__name__}")
    model.check_state(init, "init")
    if space == "parameters" and isinstance(init, GramState):
        raise TypeError("init: a GramState has no W and H; integrate it with space='gram'")
    fields = ("W", "H", "b") if isinstance(init, State) else ("M", "gram_W", "gram_H", "b")
    for name in fields:
        _check_start(getattr(init, name), f"init.{name}", t0, model)
    if space == "parameters":
        return flatten(init), init.d
    if isinstance(init, GramState):
        return flatten(init), None
    with np.errstate(over="ignore", invalid="ignore"):
        grams = (init.W @ init.H, init.W @ init.W.T, init.H.T @ init.H)
    for name, G in zip(("W H", "W Wᵀ", "Hᵀ H"), grams):
        _check_start(G, f"init's Gram-space image {name}", t0, model)
    return flatten(GramState(*grams, init.b)), None


def _check_start(arr, what: str, t0: float, model: UFM) -> None:
    """A start beyond the integrators' divergence bound (|y| > 1e60) is reported at once: the
    driver would reject every step (the trial state exceeds the bound whatever the step) and
    only stop when max_steps runs out."""
    if arr is None or not arr.size:
        return
    big = float(np.max(np.abs(arr)))
    if not big <= _k.DIVERGED:
        raise IntegrationError(
            f"integration cannot start at t = {t0:.6g}: {what} has entries up to {big:.3g}, beyond the divergence "
            f"bound {_k.DIVERGED:.0e} of the integrators (a diverged state, or a scale typo?)",
            t=float(t0), reason="nonfinite",
            trajectory=Trajectory(t=np.zeros(0), loss=np.zeros(0), problem=model.problem, model=model))


def solve(model: UFM, init, t, *, method="dopri5", rtol: float = 1e-8, atol: float = 1e-10,
          space: str = "parameters", save=DEFAULT_SAVE, t0: float = 0.0, dt: float | None = None,
          max_steps: int = 10_000_000, h_max: float = math.inf, progress=None) -> Trajectory:
    """Integrate the gradient flow of ``model`` from ``init`` and save at times ``t``.

    Arguments:
        model: a :class:`~ufm.models.UFM`.
        init: a :class:`~ufm.models.State` (W (K, d), H (d, N), b (K,)) or, with
            ``space="gram"``, a :class:`~ufm.models.GramState`; a State is mapped to its
            Grams when ``space="gram"``.
        t: (T,) strictly increasing save times >= ``t0`` (log-spaced in typical use; a save
            at ``t0`` records the initial state).
        method: ``"dopri5"`` (adaptive Dormand–Prince 5(4), PI control, 4th-order dense
            output), ``"rk4"`` or ``"euler"`` (fixed steps ``dt``, shortened to land on save
            times), or a :class:`~ufm.solvers.Solver`.
        rtol, atol: tolerances of the adaptive methods; the error of a step is the RMS over
            components of err_i / (atol + rtol·max(|y_i|, |y_new,i|)) and must be <= 1.
        space: ``"parameters"`` integrates (W, H, b), cost O(KdN) per evaluation;
            ``"gram"`` integrates the exact width-free ODE for (WH, G_W, G_H, b), cost
            O(KN(K + N)) (DESIGN.md §2). It is exact for every width, but a width-limited
            start (d < max(K, N): rank-deficient Grams) is an unstable manifold of the Gram
            ODE when the flow wants more rank, so rounding errors can grow there; a
            UserWarning says so, and parameter space is the right choice for such widths.
        save: quantities to keep at each save time besides the loss: names from
            ``("W", "H", "b", "gram_W", "gram_H", "logits")`` or ``"all"``.
        t0: start time of ``init``.
        dt: the step of fixed-step methods (required for them); the first trial step of
            adaptive ones (default: Hairer's heuristic).
        max_steps: budget of attempted steps.
        h_max: largest step allowed.
        progress: None, or a callable ``progress(t_reached, t_end)`` called as the run proceeds
            (the integration then runs in ~50 chunks of save times).

    Returns:
        A :class:`~ufm.trajectory.Trajectory` with ``t``, ``loss``, ``data_loss`` and the
        saved quantities; ``info`` records the method, space, tolerances and step counts.

    Raises:
        TypeError / ValueError: a bad argument (named in the message).
        IntegrationError: the run diverged (non-finite or |y| > 1e60), the step size
            underflowed, or ``max_steps`` ran out; ``err.t`` says where, ``err.trajectory``
            holds every save before that.
    """
    if not isinstance(model, UFM):
        raise TypeError(f"model: expected a ufm.UFM, got {type(model).__name__}")
    space = check_choice(space, "space", ("parameters", "gram"))
    solver = get_solver(method)
    rtol, atol, t0, ts, max_steps, h_max, h0 = check_run_options(solver, t, rtol, atol, t0, dt, max_steps, h_max)
    if progress is not None and not callable(progress):
        raise TypeError("progress: expected a callable progress(t_reached, t_end) or None")
    names = parse_save(save, space)

    y, d = initial_vector(model, init, space, t0)
    if space == "gram":
        _warn_if_rank_deficient(init)
    ip, coef, Y, pi, theta, theta_t, theta_pinv = model._pack(space, d or 0)
    out = Outputs(len(ts), y.size, model.K, model.N, d, model.bias, names)
    carry = np.zeros(_k.CARRY_SIZE)
    carry[_k.CARRY_T] = t0
    carry[_k.CARRY_H] = h0
    carry[_k.CARRY_FACOLD] = 1e-4
    arr = solver.arrays
    T = len(ts)
    chunks = [(0, T)] if progress is None else _chunks(T, 50)
    started = _time.perf_counter()
    status, j = _k.STATUS_OK, 0
    for j0, j1 in chunks:
        budget = max_steps - int(carry[_k.CARRY_ACCEPTED] + carry[_k.CARRY_REJECTED])
        if budget <= 0:
            status = _k.STATUS_MAX_STEPS
            break
        status, j = _k.integrate(y, carry, ts, j0, j1, arr["A"], arr["b"], arr["c"], arr["e"], arr["P"],
                                 float(solver.controller_order), int(solver.adaptive), int(solver.fsal),
                                 h_max, rtol, atol, budget, ip, coef, Y, pi, theta, theta_t, theta_pinv,
                                 *out.kernel_args())
        if progress is not None:
            progress(float(carry[_k.CARRY_T]), float(ts[-1]))
        if status != _k.STATUS_OK:
            break
    info = {
        "method": solver.name, "space": space, "rtol": rtol, "atol": atol, "t0": t0,
        "d": d, "dt": dt, "accepted_steps": int(carry[_k.CARRY_ACCEPTED]),
        "rejected_steps": int(carry[_k.CARRY_REJECTED]), "rhs_evaluations": int(carry[_k.CARRY_RHS]),
        "wall_time_s": _time.perf_counter() - started, "model": model.describe(),
    }
    traj = Trajectory(t=ts[:j].copy(), **out.fields(j), problem=model.problem, model=model, info=info)
    if status != _k.STATUS_OK:
        reason = _REASONS[status]
        t_fail = float(carry[_k.CARRY_T])
        why = {
            "max_steps": f"max_steps = {max_steps} attempted steps were used up",
            "step_underflow": "the step size underflowed (the solution is diverging, or too stiff for "
                              "an explicit method at these tolerances)",
            "nonfinite": "the state became non-finite or exceeded 1e60 (divergence)",
        }[reason]
        if reason == "step_underflow" and _horizon_limited(t_fail, float(ts[-1])):
            floor = _UNDERFLOW_RTOL * abs(float(ts[-1]))
            if int(carry[_k.CARRY_ACCEPTED]) == 0:
                why = (f"the save horizon is the problem: t[-1] = {ts[-1]:.3g} is so far that the driver counts "
                       f"every step below {_UNDERFLOW_RTOL:g}·t[-1] = {floor:.3g} as stalled, so not one step could "
                       f"be taken. Save times up to about {1 / _UNDERFLOW_RTOL:.0e} times the time scale of the "
                       "dynamics can be reached in one call; use a nearer t[-1], or integrate in pieces "
                       "(continue from traj.state() with t0=)")
            else:
                why = (f"the step size underflowed: the smallest step allowed is {_UNDERFLOW_RTOL:g}·t[-1] = "
                       f"{floor:.3g}, set by the far save horizon t[-1] = {ts[-1]:.3g}; unless the solution "
                       "diverges here, a nearer t[-1] (or integrating in pieces from traj.state() with t0=) lets "
                       "the smaller steps it needs through")
        raise IntegrationError(
            f"integration stopped at t = {t_fail:.6g}: {why}. The {j} save time(s) before it are in "
            f"err.trajectory.", t=t_fail, reason=reason, trajectory=traj)
    return traj


#: larger step budgets are the same as this one (it never runs out; the kernels use int64)
_MAX_BUDGET = 2 ** 62

#: the driver stops when a step falls below this fraction of max(1, |t|, |t_end|)
_UNDERFLOW_RTOL = 1e-14


def _horizon_limited(t_fail: float, t_end: float) -> bool:
    """Whether a step underflow was caused by the horizon rather than by the dynamics: the
    driver's smallest step is relative to max(1, |t|, |t_end|), so a far t_end alone can make
    every step at the current time 'too small'."""
    return abs(t_end) > 1e3 * max(1.0, abs(t_fail))


def _warn_if_rank_deficient(init) -> None:
    """Gram space is exact for any d, but a rank-deficient G_H or G_W (d < N or d < K) is an
    unstable manifold of the Gram ODE whenever the flow wants more rank: rounding errors along
    the missing directions then grow exponentially and the run leaves every realisable state."""
    if isinstance(init, State):
        K, d = init.W.shape
        N = init.H.shape[1]
        if d < max(K, N):
            warnings.warn(f"space='gram' from a width-{d} state with K = {K}, N = {N}: the initial Grams have "
                          f"rank <= {d}, a manifold the Gram ODE need not keep (rounding errors can grow along "
                          "the missing directions). Use space='parameters' for capacity-limited widths.",
                          UserWarning, stacklevel=3)
        return
    for name, G in (("gram_W", init.gram_W), ("gram_H", init.gram_H)):
        ev = np.linalg.eigvalsh(G)
        if ev[-1] > 0 and ev[0] < 1e-10 * ev[-1]:
            warnings.warn(f"space='gram': init.{name} is numerically rank-deficient (eigenvalue ratio "
                          f"{ev[0] / ev[-1]:.1e}); the Gram ODE need not keep that rank, rounding errors can grow "
                          "along the missing directions. Integrate a parameter-space State if the width is limited.",
                          UserWarning, stacklevel=3)
            return


def _chunks(T: int, n: int):
    edges = np.unique(np.linspace(0, T, min(n, T) + 1).round().astype(int))
    return list(zip(edges[:-1], edges[1:]))
