"""``ufm.solve``: integrate a UFM's gradient flow to chosen save times.

The domain-level front door: it validates the arguments, then hands the run to
:mod:`ufm.engine` (packing, outputs, the kernel call, failures) and wraps the outcome in a
:class:`~ufm.trajectory.Trajectory`, or an :class:`~ufm.errors.IntegrationError` carrying the
partial trajectory.

Not to be confused with :mod:`ufm.solvers`, which holds the integration *methods* (Butcher
tableaux as validated data); this module is the *call* that runs one.
"""

from __future__ import annotations

import math

import numpy as np

from . import engine
from .deep import DeepUFM, solve_deep
from .events import Watcher, check_equilibrium, check_events
from .rosenbrock import RODAS4, ROSENBROCK_METHODS, RosenbrockMethod
from ._validation import (as_float_array, as_nonnegative, as_positive, as_positive_int, as_real, check_choice,
                          check_memory)
from .errors import IntegrationError
from .models import UFM
from .solvers import get_solver
from .trajectory import Trajectory

__all__ = ["solve"]

DEFAULT_SAVE = ("gram_W", "gram_H", "logits")
# re-exported: the sweep and the trainer validate save names the same way
parse_save = engine.parse_save
initial_vector = engine.initial_vector


def check_times(t, name: str = "t", *, start: float | None = None) -> np.ndarray:
    """1-D, finite, strictly increasing, and >= ``start``."""
    t = as_float_array(t, name, ndim=(0, 1))
    t = np.atleast_1d(t)
    if t.size == 0:
        raise ValueError(f"{name}: expected at least one save time")
    # one comparison of the shifted views (np.any(np.diff(t) <= 0) costs 4 µs of a ~1.5 ms solve)
    if not (t[1:] > t[:-1]).all():
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


def solve(model: UFM, init, t, *, method="auto", rtol: float = 1e-8, atol: float = 1e-10,
          space: str = "parameters", save=DEFAULT_SAVE, t0: float = 0.0, dt: float | None = None,
          max_steps: int = 10_000_000, h_max: float = math.inf, progress=None, events=None,
          equilibrium=None) -> Trajectory:
    """Integrate the gradient flow of ``model`` from ``init`` and save at times ``t``.

    Arguments:
        model: a :class:`~ufm.models.UFM`.
        init: a :class:`~ufm.models.State` (W (K, d), H (d, N), b (K,)) or, outside parameter
            space, a :class:`~ufm.models.GramState`; a State is mapped to its Grams there. With
            ``space="reduced"`` the start must lie in the span of the scheme's relations (e.g.
            ``model.isotropic(scale)``, the d → ∞ limit of ``model.init(d, scale)``).
        t: (T,) strictly increasing save times >= ``t0`` (log-spaced in typical use; a save
            at ``t0`` records the initial state).
        method: ``"auto"`` (the default, below), ``"dopri5"`` (adaptive Dormand–Prince 5(4),
            PI control, 4th-order dense output), ``"tsit5"``, ``"vern7"``, ``"dop853"`` (adaptive, with dense output),
            ``"rk4"`` or ``"euler"`` (fixed steps ``dt``, shortened to land on save times), or a
            :class:`~ufm.solvers.Solver`; ``"rodas4"`` (L-stable Rosenbrock 4(3) with the exact
            Jacobian, dense LU, for stiff flows; :mod:`ufm.rosenbrock`) or a
            :class:`~ufm.rosenbrock.RosenbrockMethod`; ``"auto"``: the fastest explicit pair for
            the tolerance by measurement (Tsitouras 5(4) for rtol >= 1e-7, Verner 7(6) below:
            :func:`ufm.solvers.auto_solver`) until its step is held at its stability limit
            (h·ρ(J) near the stability boundary, ρ by power iteration on the Jacobian), then
            RODAS4 (``info["switched_to_stiff_at"]``), handing back to the explicit method
            where the implicit step stops paying (``info["method_switches"]``; docs/stiff.md
            §2); ``info["explicit_method"]`` names the explicit pair. It is the default because
            it measured as fast as dopri5 or faster at every tolerance and size tried, and more
            accurate at rtol <= 1e-8 (docs/stiff.md, "The default method"), and it finishes
            flows that turn stiff; pass ``method="dopri5"`` to reproduce runs made before it
            was the default. An explicit adaptive run
            that turns stiff and could not finish within ``max_steps`` stops at once with
            reason ``"stiff"``; one that would take more than 200,000 further steps warns.
            With ``events=`` or ``equilibrium=`` the run goes save by save with an explicit
            method (``"auto"`` then picks by tolerance only, without the stiff switch).
        rtol, atol: tolerances of the adaptive methods; the error of a step is the RMS over
            components of err_i / (atol + rtol·max(|y_i|, |y_new,i|)) and must be <= 1.
        space: ``"parameters"`` integrates (W, H, b), cost O(KdN) per evaluation;
            ``"gram"`` integrates the exact width-free ODE for (WH, G_W, G_H, b), cost
            O(KN(K + N)) (docs/model.md). It is exact for every width, but a width-limited
            start (d < max(K, N): rank-deficient Grams) is an unstable manifold of the Gram
            ODE when the flow wants more rank, so rounding errors can grow there; a
            UserWarning says so, and parameter space is the right choice for such widths.
            ``"reduced"`` integrates the same Gram ODE through the relation coefficients of the
            problem's association scheme (:mod:`ufm.reduction`): a few scalars whatever N,
            exact from symmetric starts; it needs one-hot labels, equal weights, a problem with
            ``relations`` and a constant coupling in their span (a ValueError says which is
            missing). The saved Grams and logits are expanded from the coefficients.
        save: quantities to keep at each save time besides the loss: names from
            ``("W", "H", "b", "gram_W", "gram_H", "logits")`` or ``"all"``.
        t0: start time of ``init``.
        dt: the step of fixed-step methods (required for them); the first trial step of
            adaptive ones (default: Hairer's heuristic).
        max_steps: budget of attempted steps.
        h_max: largest step allowed.
        progress: None, or a callable ``progress(t_reached, t_end)`` called as the run proceeds
            (the integration then runs in ~50 chunks of save times).
        events: None, or :class:`ufm.events.Event` objects (``ufm.events.gap_crossing``,
            ``gap_peak``, ``etf_below``, ``peak``, or ``Event(fn)`` of the Grams): each sign
            change between saves is located to the integrator's tolerance; hits are in
            ``traj.events`` and ``info["events"]``; a ``terminal`` event ends the run at its
            first hit (``info["terminated_by"]``, ``info["t_final"]``; only saves up to it).
        equilibrium: None/False, True or a tolerance > 0: end the run at the first save where
            the flow's speed RMS_i |f_i| / (atol + rtol·|y_i|) (tolerance units per unit time)
            is at most this (True: 1, i.e. ‖f‖ <= atol + rtol‖y‖); the remaining saves hold
            that state and ``info["equilibrium_from"]`` is the first of them (see
            :mod:`ufm.events`).

    Returns:
        A :class:`~ufm.trajectory.Trajectory` with ``t``, ``loss``, ``data_loss`` and the
        saved quantities; ``info`` records the method, space, tolerances and step counts.

    Raises:
        TypeError / ValueError: a bad argument (named in the message).
        IntegrationError: the run diverged (non-finite or |y| > 1e60), the step size
            underflowed, ``max_steps`` ran out, or (reason ``"stiff"``) an explicit method is
            stability-limited and would need more than ``max_steps``; ``err.t`` says where, ``err.trajectory``
            holds every save before that.
    """
    if isinstance(model, DeepUFM):         # the deep-backbone model: its own spaces, same engine
        return solve_deep(model, init, t, method=method, rtol=rtol, atol=atol, space=space, save=save, t0=t0,
                          dt=dt, max_steps=max_steps, h_max=h_max, progress=progress)
    if not isinstance(model, UFM):
        raise TypeError(f"model: expected a ufm.UFM or ufm.DeepUFM, got {type(model).__name__}")
    space = check_choice(space, "space", ("parameters", "gram", "reduced"))
    solver, stiff_method = resolve_method(method, rtol)
    rtol, atol, t0, ts, max_steps, h_max, h0 = check_run_options(solver, t, rtol, atol, t0, dt, max_steps, h_max)
    if progress is not None and not callable(progress):
        raise TypeError("progress: expected a callable progress(t_reached, t_end) or None")
    names = parse_save(save, space)
    watched = check_events(events, model.problem)
    equilibrium = check_equilibrium(equilibrium)
    if (watched or equilibrium is not None) and stiff_method is not None:
        if solver is stiff_method:
            raise ValueError(f"method: events and equilibrium are located with an explicit method; got "
                             f"{stiff_method.name!r} (use 'auto', 'dopri5', 'tsit5', 'dop853', ...)")
        stiff_method = None          # "auto" with events: the explicit pick, no stiff switch

    y, d = initial_vector(model, init, space, t0)
    if space == "gram":
        engine.warn_if_rank_deficient(init)
    packed = engine.pack_model(model, space, d or 0)
    reduction = engine.reduction_of(model) if space == "reduced" else None
    ctl = engine.controls(rtol, atol, h_max, max_steps)
    carry = engine.new_carry(t0, h0)
    watcher, report, switched_at = None, None, None
    if watched or equilibrium is not None:
        tab = engine.tableau(solver)
        watcher = Watcher(watched, equilibrium, packed, tab, ctl, y.size, model.K, model.N, d, model.bias, reduction)
        buffers = watcher.buffers(len(ts), names)
        run = watcher.run(y, ts, carry, buffers, progress)
    else:
        buffers = engine.SaveBuffers(len(ts), y.size, model.K, model.N, d, model.bias, names, reduction)
        if stiff_method is not None and solver is not stiff_method and not dense_jacobian_fits(y.size):
            stiff_method = None      # "auto" where the stiff switch could not hold its Jacobian: explicit only
        if stiff_method is not None and solver is stiff_method:
            # (auto's switch was checked to fit just above: the same bytes against the same limit)
            check_dense_jacobian(y.size, stiff_method.name, space)
            run = engine.integrate_stiff(packed, y, ts, engine.rosenbrock_tableau(stiff_method), ctl, carry, buffers,
                                         progress=progress)
        else:
            run, report, switched_at = engine.integrate_watched(packed, y, ts, solver, ctl, carry, buffers, progress,
                                                                switch_to=stiff_method)
    info = {"method": method if isinstance(method, str) else solver.name, "space": space, "rtol": rtol,
            "atol": atol, "t0": t0, "d": d, "dt": dt, **run.counts(), "wall_time_s": run.wall_time_s,
            "model": model.describe()}
    if isinstance(method, str) and method == "auto":
        info["explicit_method"] = solver.name
    if getattr(run, "stats", None) is not None:
        info.update(stiff_counts(run.stats))
    if switched_at is not None:
        info["switched_to_stiff_at"] = switched_at
        info["method_switches"] = run.switches
        info["stiff_method"] = getattr(run, "stiff_method", stiff_method).name    # auto's pick (engine)
    fields = buffers.fields(run.reached)
    if watcher is not None:
        info.update(watcher.info)
        # the watcher records the Grams and the state for itself; keep what was asked for
        fields = {k: v for k, v in fields.items() if k in ("loss", "data_loss") or k in names}
    traj = Trajectory(t=ts[:run.reached].copy(), **fields, problem=model.problem, model=model, info=info)
    if not run.ok:
        left = gram_cone_escape(y, model.K, model.N, model.bias) if space == "gram" else None
        raise run_failure(run, report, solver.name, max_steps, ts, traj, left_cone=left, rtol=rtol)
    return traj


def resolve_method(method, rtol: float | None = None):
    """(solver, stiff method or None) of ``method=``: an explicit :class:`~ufm.solvers.Solver`
    name or object (no stiff method), a Rosenbrock name or :class:`~ufm.rosenbrock.RosenbrockMethod`
    (it is both), or ``"auto"`` (the explicit pair :func:`ufm.solvers.auto_solver` picks for
    ``rtol``, switching to RODAS4 when the flow turns stiff).

    Raises:
        ValueError: an unknown name (the message lists every method).
    """
    if isinstance(method, RosenbrockMethod):
        return method, method
    if isinstance(method, str) and method in ROSENBROCK_METHODS:
        return ROSENBROCK_METHODS[method], ROSENBROCK_METHODS[method]
    if isinstance(method, str) and method == "auto":
        return get_solver("auto", rtol), RODAS4
    try:
        return get_solver(method), None
    except ValueError as exc:
        extra = ", ".join(repr(k) for k in (*ROSENBROCK_METHODS, "auto"))
        raise ValueError(f"{exc} (or a stiff method: {extra}, or a ufm.rosenbrock.RosenbrockMethod)") from None


def _dense_jacobian_bytes(n: int) -> float:
    """The Rosenbrock driver's Jacobian and its LU: two n×n float64 arrays."""
    return 16.0 * n * n


def dense_jacobian_fits(n: int) -> bool:
    """Whether the Rosenbrock driver's Jacobian and LU fit in the memory available
    (:func:`~ufm._validation.fits_in_memory`)."""
    from ._validation import fits_in_memory
    return fits_in_memory(_dense_jacobian_bytes(n))


def check_dense_jacobian(n: int, method_name: str, space: str) -> None:
    """The Rosenbrock driver holds the Jacobian and its LU (two n×n float64 arrays): refuse
    before the run when they cannot fit in memory.

    Raises:
        ValueError: naming ``method`` and ``space``.
    """
    check_memory(_dense_jacobian_bytes(n), "method, space",
                 f"{method_name} in {space} space factors a dense {n}×{n} Jacobian per step, which")


def stiff_counts(stats) -> dict:
    """The stiff driver's counters for a Trajectory's ``info``."""
    from .kernels import rosenbrock as _kr

    return {"jacobians": int(stats[_kr.STAT_JACOBIANS]), "lu_factorizations": int(stats[_kr.STAT_FACTORIZATIONS]),
            "jvps": int(stats[_kr.STAT_JVPS])}


def run_failure(run, report, method_name: str, max_steps: int, ts, traj, left_cone=None,
                rtol: float | None = None) -> IntegrationError:
    """The IntegrationError of a failed run; a stiff explicit run (``report``) gets reason
    ``"stiff"`` and a message saying so; a Gram-space run whose state left the positive
    semidefinite cone (``left_cone``, from :func:`gram_cone_escape`) says that this, not
    stiffness, is what stopped it."""
    if report is not None:
        message = (f"integration stopped at t = {run.t_reached:.6g}: {report.message(method_name)}. The "
                   f"{run.reached} save time(s) before it are in err.trajectory.")
        return IntegrationError(message, t=run.t_reached, reason="stiff", trajectory=traj)
    reason, message = engine.failure(run.status, run.t_reached, run.reached, max_steps, t_end=float(ts[-1]),
                                     accepted=run.counts()["accepted_steps"])
    if left_cone is not None:
        name, low, high = left_cone
        message += (f" The Gram state had left the positive semidefinite cone: the smallest eigenvalue of "
                    f"{name} is {low:.3g} against a largest of {high:.3g}. Off the cone the Gram-space flow "
                    f"is unstable, and a start whose Grams span more decades than the tolerance resolves "
                    f"(rtol = {rtol:g} allows errors of about rtol·‖G‖ in every entry) leaves it; integrate "
                    f"in parameter space (space='parameters'), which stays on it by construction.")
    return IntegrationError(message, t=run.t_reached, reason=reason, trajectory=traj)


#: a Gram eigenvalue below −this × the largest is off the cone beyond rounding
CONE_TOLERANCE = 1e-12


def gram_cone_escape(y: np.ndarray, K: int, N: int, bias: bool):
    """Whether a Gram-space state (the kernels' flat layout) is off the positive semidefinite
    cone: (name, smallest eigenvalue, largest eigenvalue) of the first of G_W, G_H whose
    smallest eigenvalue is below −:data:`CONE_TOLERANCE` × its largest, or None (also when the
    state is not finite: then divergence, not the cone, is the story).

    Arguments:
        y: float (K·N + K² + N² [+ K],) the state. K, N: the model's sizes. bias: whether y
            ends with b.
    """
    from .states import unflatten
    if not np.all(np.isfinite(y)):
        return None
    gs = unflatten(y, K, N, None, bias)
    for name, G in (("G_W", gs.gram_W), ("G_H", gs.gram_H)):
        ev = np.linalg.eigvalsh(0.5 * (G + G.T))
        if ev[-1] > 0 and ev[0] < -CONE_TOLERANCE * ev[-1]:
            return name, float(ev[0]), float(ev[-1])
    return None


#: larger step budgets are the same as this one (it never runs out; the kernels use int64)
_MAX_BUDGET = 2 ** 62
