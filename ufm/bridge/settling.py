"""Predictions that end at a *stable* equilibrium: the fits' answer to models that settle long
before the run ends.

A fitted UFM can reach its fixed point early in ODE time and sit there for the rest of the
run's horizon (under the power time map λ·t_end reaches 1e4–1e5). An explicit method then
keeps stepping at its stability limit through a stretch where nothing moves (three Θ(t) rows
of the shipped runs: 47k–50k steps per prediction), and a stiff method still pays a Jacobian
and an LU per step. (Most slow fits are slow for another reason: their states keep moving.)

:func:`solve_settling` integrates as :func:`ufm.solve` (Gram space), but every
:data:`SETTLE_CHECK_STEPS` integrator steps that did not reach the end it asks whether the
state has settled, and ends the run there when all of these hold at the current state y:

1. the linearisation is **stable**: every eigenvalue of the Jacobian J(y) of the Gram flow
   (restricted to symmetric Grams, the flow's invariant subspace) has a negative real part,
   at least :data:`STABLE_MARGIN` of the largest |eigenvalue|. A saddle — the plateau of a
   small initialisation, where the flow is slow but will leave — has a positive eigenvalue
   and never ends a run, however slow it is there;
2. the **remaining displacement** is below the integrator's tolerance: the Newton step
   J⁻¹f — the distance to the fixed point of the linearised flow, where the linearised
   trajectory ends (y(∞) − y = −J⁻¹f) — is at most one tolerance unit in the integrator's own
   error norm (RMS over components of δ_i / (atol + rtol·|y_i|)): what is left to move is
   below what each step may err by. The cruder bound ‖f‖ / |slowest rate| (reported as
   ``speed_bound``) is not the test: the integrated state sits off the fixed point by its own
   error, mostly along fast directions, and dividing that speed by the slowest rate
   overstates the distance (2.3 units at the converged collapse of the 2×2 factorial UFM at
   λ = 0.05, rtol 1e-8, where the Newton step is 0.5; tests/test_fit_speed.py).

The saves after that point then hold the settled state (``info["settled_from"]`` is the first
of them, ``info["settled_t"]`` the time of the test). With a time-dependent coupling Θ(t)
(piecewise constant between logged kernels) the fixed point moves at each breakpoint: the saves
before the next breakpoint are filled and the integration resumes there from the settled
state. A failed test doubles the steps before the next one (a long saddle plateau costs a few
tests, not one per chunk).

What a test costs: one field evaluation, the dense Jacobian, an LU and a
non-symmetric eigenvalue problem of size KN + K(K+1)/2 + N(N+1)/2 (528 at K = N = 16:
about 0.13 s with one BLAS thread) — the price of ~3,000 DOPRI5 steps at that size, paid only
by predictions that ran :data:`SETTLE_CHECK_STEPS` steps without finishing.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["solve_settling", "settled", "SETTLE_CHECK_STEPS", "STABLE_MARGIN"]

#: integrator steps between two equilibrium tests (doubled after each failed test)
SETTLE_CHECK_STEPS = 2_000
#: the linearisation counts as stable when max Re λ <= -STABLE_MARGIN · max |λ|
STABLE_MARGIN = 1e-10


def _rms(v) -> float:
    return float(np.sqrt(np.mean(np.square(v))))


def settled(packed, y: np.ndarray, t: float, rtol: float, atol: float, coords=None) -> tuple[bool, dict]:
    """Whether the Gram-space state ``y`` sits at a stable equilibrium to the tolerance (the
    module docstring's tests 1 and 2).

    Arguments:
        packed: the :class:`~ufm.kernels.groups.Model` (Gram space). y: (n,) flat state.
        t: its time (selects the coupling piece). rtol, atol: the integrator's tolerances.
        coords: the model's independent coordinates and their mirrors,
            :func:`ufm.kernels.rosenbrock.symmetric_coordinates` (computed when None).

    Returns:
        (settled, details): details has ``max_real_eigenvalue``, ``slowest_rate``,
        ``displacement`` (the Newton step in tolerance units, RMS norm), ``speed_bound``
        (‖f‖/slowest rate, same units; when the eigenvalues were computed) and ``why`` (the
        failed test, or "settled").
    """
    from ..kernels import fields as _f
    from ..kernels import tangent as _kt
    from ..kernels.rosenbrock import symmetric_coordinates
    ip = packed.ip
    keep, mirror = coords if coords is not None else symmetric_coordinates(packed)
    y = np.ascontiguousarray(y, dtype=np.float64)
    p = _f.theta_piece(packed.theta_t, t) if ip[_f.IP_NTHETA] > 0 else 0
    f = np.zeros_like(y)
    _f.vector_field(p, y, f, packed, np.zeros(_f.work_size(packed)))
    JT = np.zeros((y.size, y.size))
    _kt.jacobian(p, y, JT, packed, np.zeros(_kt.tangent_work_size(packed)))
    # J on symmetric Grams: the column of an off-diagonal coordinate is J(e_ij + e_ji)
    cols = JT[keep]
    off = keep != mirror
    cols[off] += JT[mirror[off]]
    J = cols[:, keep].T
    fs = f[keep]
    scale = atol + rtol * np.abs(y[keep])
    details = {"max_real_eigenvalue": math.nan, "slowest_rate": math.nan, "displacement": math.inf}
    if not (np.all(np.isfinite(J)) and np.all(np.isfinite(fs))):
        return False, {**details, "why": "non-finite field or Jacobian"}
    # the cheap test first: a state far from any fixed point fails here without the eigenvalues
    try:
        step = np.linalg.solve(J, fs)
    except np.linalg.LinAlgError:
        return False, {**details, "why": "singular Jacobian"}
    newton = _rms(step / scale)
    if not newton <= 1.0:
        return False, {**details, "displacement": newton, "why": "still moving"}
    lam = np.linalg.eigvals(J)
    top = float(np.max(lam.real))
    rho = float(np.max(np.abs(lam)))
    slowest = float(np.min(np.abs(lam.real)))
    details.update(max_real_eigenvalue=top, slowest_rate=slowest)
    if not top <= -STABLE_MARGIN * rho:
        return False, {**details, "displacement": newton, "why": "not a stable equilibrium (saddle or flat direction)"}
    details.update(displacement=newton, speed_bound=_rms(fs / scale) / slowest)
    return True, {**details, "why": "settled"}


def solve_settling(model, init, t, *, t0: float = 0.0, method="dopri5", rtol: float = 1e-8, atol: float = 1e-10,
                   max_steps: int = 10_000_000, save=("gram_W", "gram_H", "logits")):
    """:func:`ufm.solve` in Gram space that ends at a stable equilibrium (module docstring).

    Arguments:
        model: a :class:`~ufm.models.UFM`. init: its start (State or GramState).
        t: (T,) save times. t0, method, rtol, atol, max_steps, save: as :func:`ufm.solve`
            (``method`` an explicit method, a Rosenbrock method or ``"auto"``; with ``"auto"``
            ``max_steps`` budgets work: a RODAS4 step takes as much of it as the explicit
            steps it costs, engine.integrate_watched's ``work_budget``).

    Returns:
        :class:`~ufm.trajectory.Trajectory`; when it settled, ``info`` has ``settled_from``
        (first filled save), ``settled_t``, ``settle_tests`` and ``settle_slowest_rate``; an
        ``auto`` run that took Rosenbrock steps has ``budget_steps`` (the steps it was charged).

    Raises:
        IntegrationError: as :func:`ufm.solve` (the run failed before it settled).
    """
    from .. import engine
    from ..integration import (check_run_options, initial_vector, resolve_method, run_failure, stiff_counts)
    from ..kernels import fields as _f
    from ..kernels import integrate as _k
    from ..kernels.rosenbrock import symmetric_coordinates
    from ..trajectory import Trajectory
    from ..engine import Controls

    solver, stiff_method = resolve_method(method, rtol)
    rtol, atol, t0, ts, max_steps, h_max, h0 = check_run_options(solver, t, rtol, atol, t0, None, max_steps, math.inf)
    names = engine.parse_save(save, "gram")
    y, d = initial_vector(model, init, "gram", t0)
    engine.warn_if_rank_deficient(init)
    packed = engine.pack_model(model, "gram", 0)
    ctl = engine.controls(rtol, atol, h_max, max_steps)
    carry = engine.new_carry(t0, h0)
    T = len(ts)
    buffers = engine.SaveBuffers(T, y.size, model.K, model.N, None, model.bias, names)
    coords = symmetric_coordinates(packed)
    breaks = np.asarray(packed.theta_t, dtype=np.float64)[1:] if packed.ip[_f.IP_NTHETA] > 1 else np.zeros(0)
    rosenbrock_only = stiff_method is not None and solver is stiff_method
    stats = engine.stiff_stats() if stiff_method is not None else None
    every = SETTLE_CHECK_STEPS
    info_extra = {"settle_tests": 0}
    report = None
    switching = engine.SwitchState()         # auto: a switched run stays implicit from chunk to chunk
    wall = 0.0
    status = _k.STATUS_OK
    while True:
        # the budget counts a Rosenbrock step of auto at its work (engine.integrate_watched's work_budget)
        attempted = int(carry[_k.CARRY_ACCEPTED] + carry[_k.CARRY_REJECTED]) + switching.charged
        limit = min(max_steps, int(attempted) + every)
        chunk = Controls(ctl.rtol, ctl.atol, ctl.h_max, int(limit))
        if rosenbrock_only:
            run = engine.integrate_stiff(packed, y, ts, engine.rosenbrock_tableau(stiff_method), chunk, carry,
                                         buffers, stats=stats)
        else:
            run, report, _ = engine.integrate_watched(packed, y, ts, solver, chunk, carry, buffers,
                                                      switch_to=stiff_method, state=switching, work_budget=True)
            if getattr(run, "stats", None) is not None:
                stats += run.stats               # rejected trials count too, switched or not
        wall += run.wall_time_s
        status = run.status
        if status != _k.STATUS_MAX_STEPS or limit >= max_steps:
            break
        left = max_steps - int(carry[_k.CARRY_ACCEPTED] + carry[_k.CARRY_REJECTED]) - switching.charged
        if report is not None and stiff_method is None and report.projected_steps > left:
            break                            # stiff beyond the whole budget: fail now, as ufm.solve does
        # (auto: the engine stopped this chunk because neither method would finish within the
        # *chunk's* budget — the explicit projection alone says nothing about RODAS4's, so the run
        # goes on. Failing here on the explicit projection cut predictions that RODAS4 finishes:
        # mlp_hierarchy_adamw_depth6's linear-features · NTK Θ(0) at time_power 2.26 stopped at
        # t = 794 after 434 of a 36,390-step budget, and finishes in 3,874; the fit's cost had a
        # cliff there and stopped against it, rss 258.2 against dopri5's 163.6)
        report = None
        t_now = float(carry[_k.CARRY_T])
        ok, details = settled(packed, y, t_now, rtol, atol, coords)
        info_extra["settle_tests"] += 1
        if not ok:
            every *= 2
            continue
        # fill the saves up to the next breakpoint of Θ(t) (or the end) with the settled state
        later = breaks[breaks > t_now]
        t_next = float(later[0]) if later.size else math.inf
        j = int(carry[_k.CARRY_J])
        info_extra.setdefault("settled_from", j)
        info_extra.setdefault("settled_t", t_now)
        info_extra["settle_slowest_rate"] = details["slowest_rate"]
        work = np.zeros(_f.work_size(packed))
        while j < T and ts[j] < t_next:
            _f.record(j, float(ts[j]), y, packed, buffers.group, work)
            j += 1
        carry[_k.CARRY_J] = j
        if j >= T:
            status = _k.STATUS_OK
            break
        carry[_k.CARRY_T] = t_next           # resume at the breakpoint, the kernel changes there
        every = SETTLE_CHECK_STEPS
    run = engine.RunResult(int(status), int(carry[_k.CARRY_J]), carry, buffers, wall)
    info = {"method": method if isinstance(method, str) else solver.name, "space": "gram", "rtol": rtol,
            "atol": atol, "t0": t0, "d": d, "dt": None, **run.counts(), "wall_time_s": wall,
            "model": model.describe(), **info_extra}
    if stats is not None:
        info.update(stiff_counts(stats))
    if switching.charged:
        info["budget_steps"] = int(run.counts()["accepted_steps"] + run.counts()["rejected_steps"] + switching.charged)
    if switching.switched_at is not None:
        info["switched_to_stiff_at"] = switching.switched_at
        info["method_switches"] = switching.switches
    traj = Trajectory(t=ts[:run.reached].copy(), **buffers.fields(run.reached), problem=model.problem, model=model,
                      info=info)
    if not run.ok:
        raise run_failure(run, report, solver.name, max_steps, ts, traj)
    return traj
