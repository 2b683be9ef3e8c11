"""Events and equilibria of an integration: exact times instead of times read off the save grid.

An **event** is a value (as in diffrax): a scalar function φ of the saved quantities whose
sign change marks the event. :func:`ufm.solve` (``events=[...]``) evaluates every event at
each save time; when φ changes sign between two saves, the event time is located by
restarting the integration from the state kept at the earlier save and bisecting the bracket
with the Illinois variant of regula falsi, each trial time a fresh (short) run of the same
method, so the located time is as accurate as the integrator itself and works with every
method the engine drives (nothing in the kernels is event-aware). Several sign changes between
two saves are seen as none (or one): add save times where events are dense.

Events (constructors of :class:`Event`):

* :func:`gap_crossing` — the semantic gap crossing a level (default falling: a collapse);
* :func:`gap_peak` — the gap's maximum, i.e. its time derivative crossing zero from above;
* :func:`etf_below` — the ETF distance of G_H (or G_W) falling below ε;
* :func:`peak` — the maximum of any function of the Grams (its derivative crossing zero);
* :class:`Event` itself — the root of a user function ``fn(gram_H, gram_W, logits) -> float``.

Time derivatives (``peak``, ``gap_peak``) are exact directional derivatives along the flow:
dφ/dt = (φ(y + εf) − φ(y − εf)) / 2ε with f the vector field at y (one explicit-Euler step of
the same kernel gives f exactly) and ε‖f‖ = 1e-5‖y‖ (truncation error ~1e-10 relative).

An **equilibrium** (``equilibrium=`` of :func:`ufm.solve`) ends a run early: when the flow's
speed at a save, RMS_i |f_i| / (atol + rtol·|y_i|) — the error units the state moves per unit
time, diffrax's steady-state rule ‖f‖ <= atol + rtol‖y‖ for ``equilibrium=True`` — falls
to the tolerance, the remaining saves are filled with that state and ``info`` says from
which save (``info["equilibrium_from"]``). A saddle (e.g. a start at exactly 0) is an
equilibrium too: the criterion is local.

Hits are in ``traj.events`` (tuple of :class:`Hit`, in time order) and, JSON-ready, in
``traj.info["events"]`` (kept by ``Trajectory.save``/``load``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import engine
from .kernels import integrate as _k

__all__ = ["Event", "Hit", "gap_crossing", "gap_peak", "etf_below", "peak"]

_QUANTITIES = ("gram_H", "gram_W", "logits")
#: relative size of the state perturbation along f in a directional derivative
_DERIVATIVE_STEP = 1e-5
#: Illinois iterations allowed per located event (they converge superlinearly: ~8-15 used)
_MAX_ITERATIONS = 80


class Event:
    """An event: the times where ``fn(gram_H, gram_W, logits)`` crosses zero.

    Arguments:
        fn: callable (gram_H (N, N), gram_W (K, K), logits (K, N)) -> float. Quantities a
            space cannot provide are never None: every event run records all three.
        name: the name of its hits (default ``fn.__name__``).
        direction: +1 only rising crossings (φ from < 0 to > 0), -1 only falling ones, 0 both.
        terminal: stop the run at the first hit (saves after it are not made; ``info``
            records ``terminated_by`` and ``t_final``).
        derivative: the root of dφ/dt instead of φ (a maximum for ``direction=-1``).

    Raises:
        TypeError / ValueError: a non-callable ``fn``, a bad ``direction``, a non-bool
            ``terminal``.
    """

    kind = "user"

    def __init__(self, fn, *, name: str | None = None, direction: int = 0, terminal: bool = False,
                 derivative: bool = False):
        if not callable(fn):
            raise TypeError(f"fn: expected a callable fn(gram_H, gram_W, logits) -> float, got {type(fn).__name__}")
        if direction not in (-1, 0, 1) or isinstance(direction, bool):
            raise ValueError(f"direction: expected -1 (falling), 0 (both) or +1 (rising), got {direction!r}")
        for flag, label in ((terminal, "terminal"), (derivative, "derivative")):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{label}: expected True or False, got {flag!r}")
        self.fn = fn
        self.name = str(name) if name is not None else getattr(fn, "__name__", "event")
        self.direction = int(direction)
        self.terminal = bool(terminal)
        self.derivative = bool(derivative)
        self.options: dict = {}

    def bind(self, problem) -> "Event":
        """This event for one problem (the built-in ones read its attributes); self by default."""
        return self

    def value(self, gram_H, gram_W, logits) -> float:
        """φ at one state (a float; NaN is treated as 'no sign')."""
        return float(self.fn(gram_H, gram_W, logits))

    def describe(self) -> dict:
        """JSON-ready description (kind, name, direction, terminal and the options)."""
        return {"kind": self.kind, "name": self.name, "direction": self.direction, "terminal": self.terminal,
                "derivative": self.derivative, **self.options}

    def __repr__(self):
        return f"Event({self.name!r}, kind={self.kind!r}, direction={self.direction}, terminal={self.terminal})"


class _GapEvent(Event):
    """A semantic-gap event; bound to a problem's attributes at solve time."""

    def __init__(self, kind, level, *, name, direction, terminal, derivative, centred, attribute):
        super().__init__(self._gap, name=name, direction=direction, terminal=terminal, derivative=derivative)
        self.kind = kind
        self.level = level
        self.options = {"centred": centred, "attribute": attribute, **({} if level is None else {"level": level})}
        self._problem = None

    def bind(self, problem):
        if problem.attributes is None:
            raise ValueError(f"events: {self.name!r} needs a problem with attributes (the semantic gap); "
                             "this one has none")
        bound = _GapEvent(self.kind, self.level, name=self.name, direction=self.direction, terminal=self.terminal,
                          derivative=self.derivative, centred=self.options["centred"],
                          attribute=self.options["attribute"])
        bound._problem = problem
        return bound

    def _gap(self, gram_H, gram_W, logits):
        from .metrics import evaluate
        opts = {"centred": self.options["centred"]}
        if self.options["attribute"] is not None:
            opts["attribute"] = self.options["attribute"]
        g = float(evaluate("semantic_gap", gram_H=gram_H[None], problem=self._problem, **opts)[0])
        return g - (self.level or 0.0)


def gap_crossing(level: float, *, direction: int = -1, terminal: bool = False, centred: bool = True,
                 attribute=None, name: str | None = None) -> Event:
    """The semantic gap of G_H (the ``"semantic_gap"`` metric) crossing ``level``.

    Arguments:
        level: the level (finite). direction: -1 (default, falling: a collapse), +1, 0.
        terminal: stop the run at the first crossing. centred, attribute: the gap's options.
        name: default ``"gap_crossing"``.

    Returns:
        :class:`Event`.
    """
    from ._validation import as_real
    level = as_real(level, "level")
    return _GapEvent("gap_crossing", level, name=name or "gap_crossing", direction=direction, terminal=terminal,
                     derivative=False, centred=bool(centred), attribute=attribute)


def gap_peak(*, terminal: bool = False, centred: bool = True, attribute=None, name: str | None = None) -> Event:
    """The semantic gap's maxima: its time derivative crossing zero from above.

    Returns:
        :class:`Event` (its hits carry the gap at the peak as ``value``).
    """
    return _GapEvent("gap_peak", None, name=name or "gap_peak", direction=-1, terminal=terminal, derivative=True,
                     centred=bool(centred), attribute=attribute)


def etf_below(eps: float, *, which: str = "H", terminal: bool = False, name: str | None = None) -> Event:
    """The ETF distance of G_H (``which="W"``: G_W) falling below ``eps`` > 0.

    Returns:
        :class:`Event`.
    """
    from ._validation import as_positive, check_choice
    from .metrics import etf_distance
    eps = as_positive(eps, "eps")
    which = check_choice(which, "which", ("H", "W"))

    def etf(gram_H, gram_W, logits):
        return float(etf_distance(gram_H if which == "H" else gram_W)) - eps

    ev = Event(etf, name=name or "etf_below", direction=-1, terminal=terminal)
    ev.kind = "etf_below"
    ev.options = {"eps": eps, "which": which}
    return ev


def peak(fn, *, name: str | None = None, terminal: bool = False) -> Event:
    """The maxima of ``fn(gram_H, gram_W, logits)``: its time derivative crossing zero from above.

    Returns:
        :class:`Event` (hits carry fn at the peak as ``value``).
    """
    ev = Event(fn, name=name or f"peak of {getattr(fn, '__name__', 'fn')}", direction=-1, terminal=terminal,
               derivative=True)
    ev.kind = "peak"
    return ev


@dataclass(frozen=True)
class Hit:
    """One located event.

    Attributes:
        name: the event's name. t: its time. direction: +1 rising, -1 falling crossing.
        value: the event's underlying quantity there (the gap for gap events, the ETF distance
            for ``etf_below``, fn for ``peak``; for crossings of φ itself, φ + level ≈ level).
        terminal: whether it ended the run. kind, options: from the event.
    """

    name: str
    t: float
    direction: int
    value: float
    terminal: bool
    kind: str
    options: dict

    def as_dict(self) -> dict:
        return {"name": self.name, "t": self.t, "direction": self.direction, "value": self.value,
                "terminal": self.terminal, "kind": self.kind, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict) -> "Hit":
        return cls(str(d["name"]), float(d["t"]), int(d["direction"]), float(d["value"]), bool(d["terminal"]),
                   str(d["kind"]), dict(d.get("options", {})))


def check_events(events, problem) -> tuple:
    """Validate ``events=`` of :func:`ufm.solve`: None or an iterable of :class:`Event`
    (bound to the problem).

    Raises:
        TypeError: not Events. ValueError: repeated names; a gap event without attributes.
    """
    if events is None:
        return ()
    if isinstance(events, Event):
        events = (events,)
    try:
        events = tuple(events)
    except TypeError:
        raise TypeError(f"events: expected a ufm.events.Event or an iterable of them, got {type(events).__name__}") \
            from None
    for e in events:
        if not isinstance(e, Event):
            raise TypeError(f"events: expected ufm.events.Event objects (gap_crossing(...), Event(fn), ...), got "
                            f"{type(e).__name__}")
    names = [e.name for e in events]
    if len(set(names)) != len(names):
        raise ValueError(f"events: names must be distinct (hits are reported by name), got {names}")
    return tuple(e.bind(problem) for e in events)


def check_equilibrium(equilibrium):
    """``equilibrium=``: None/False (off), True (speed tolerance 1) or a tolerance > 0.

    Returns:
        None or the tolerance (float).
    """
    if equilibrium is None or equilibrium is False:
        return None
    if equilibrium is True:
        return 1.0
    from ._validation import as_positive
    return as_positive(equilibrium, "equilibrium")


# --------------------------------------------------------------------------------------------
# the watched run
# --------------------------------------------------------------------------------------------

class Watcher:
    """Runs one trajectory save by save through :func:`ufm.engine.integrate`, evaluating events
    and the equilibrium test at each save; built by :func:`ufm.solve`.

    Arguments:
        events: bound :class:`Event` objects. equilibrium: None or a speed tolerance.
        packed, tab, ctl: the run's model, method and controls. names: what the caller saves.
        n, K, N, d, bias, reduction: as for :class:`ufm.engine.SaveBuffers`.
    """

    def __init__(self, events, equilibrium, packed, tab, ctl, n, K, N, d, bias, reduction):
        self.events = tuple(events)
        self.equilibrium = equilibrium
        self.packed, self.tab, self.ctl = packed, tab, ctl
        self.shape = (n, K, N, d, bias, reduction)
        self.hits: list[Hit] = []
        self.extra_rhs = 0
        self.info: dict = {}
        from .solvers import get_solver
        self._euler = engine.tableau(get_solver("euler"))

    def buffers(self, T: int, names=()) -> engine.SaveBuffers:
        """Outputs for T saves of ``names`` that also keep the state and the Grams (events
        read them)."""
        n, K, N, d, bias, reduction = self.shape
        names = tuple(names) + tuple(q for q in _QUANTITIES if q not in names)
        return engine.SaveBuffers(T, n, K, N, d, bias, names, reduction, keep_state=True)

    # -- primitives on a flat state -----------------------------------------------------------
    def _grams(self, y, t) -> tuple:
        """(gram_H, gram_W, logits) of a flat state: the kernel records a save at the current
        time without stepping."""
        buf = self.buffers(1)
        carry = engine.new_carry(t, 1.0)
        _k.integrate(y.copy(), carry, np.array([t]), 1, self.tab, self.ctl, self.packed, buf.group)
        return tuple(None if a is None else a.copy() for a in buf.grams_at(0))

    def _flow(self, y, t) -> np.ndarray:
        """The vector field f(y, t): one explicit-Euler step y + h·f of the same model (exact up
        to rounding, relative 1e-16·‖y‖ / (h‖f‖) with h‖f‖ ~ ‖y‖ after one rescaling)."""
        theta_t = self.packed.theta_t
        cap = math.inf
        if self.packed.ip[engine._f.IP_NTHETA] > 1:
            later = theta_t[theta_t > t]
            if later.size:
                cap = 0.5 * (float(later[0]) - t)          # the kernel would stop at a breakpoint
        cap = min(cap, self.ctl.h_max)                        # a longer step would be split
        h = min(1.0, cap)
        f = np.zeros_like(y)
        for _ in range(4):
            y1 = y.copy()
            target = t + h
            h_eff = target - t
            carry = engine.new_carry(t, h_eff)
            buf = engine.SaveBuffers(1, y.size, *self.shape[1:5], (), None)
            status, _ = _k.integrate(y1, carry, np.array([target]), 1, self._euler, self.ctl, self.packed, buf.group)
            self.extra_rhs += 1
            if status != _k.STATUS_OK:                      # y + h·f beyond the divergence bound
                h *= 1e-6
                continue
            f = (y1 - y) / h_eff
            ny, nf = _rms(y), _rms(f)
            if not (nf > 0 and np.isfinite(nf)) or ny == 0:
                break
            h_new = min(cap, ny / nf)                        # h‖f‖ ≈ ‖y‖: rounding ~1e-16 of f
            if 0.1 < h_new / h < 10:
                break
            h = h_new
        return f

    def _phi(self, ev: Event, y, t) -> tuple[float, float]:
        """(φ, the underlying quantity) at a flat state: φ = value, or dvalue/dt for a
        derivative event (central difference along the flow)."""
        if not ev.derivative:
            v = ev.value(*self._grams(y, t))
            return v, v + (getattr(ev, "level", None) or 0.0) + ev.options.get("eps", 0.0)
        f = self._flow(y, t)
        ny, nf = _rms(y), _rms(f)
        base = ev.value(*self._grams(y, t))
        if not nf > 0:
            return 0.0, base
        eps = _DERIVATIVE_STEP * max(ny, 1e-300) / nf
        up = ev.value(*self._grams(y + eps * f, t))
        down = ev.value(*self._grams(y - eps * f, t))
        return (up - down) / (2 * eps), base

    def _state_at(self, y_a, t_a, t_m, h) -> tuple[np.ndarray | None, int]:
        """Flat state at t_m by a fresh run of the same method from (t_a, y_a); None on failure."""
        buf = self.buffers(1)
        carry = engine.new_carry(t_a, h)
        y = y_a.copy()
        res = engine.integrate(self.packed, y, np.array([t_m]), self.tab, self.ctl, carry, buf)
        self.extra_rhs += int(carry[_k.CARRY_RHS])
        if not res.ok:
            return None, res.status
        return buf.group.state[0].copy(), res.status

    # -- location -----------------------------------------------------------------------------
    def _locate(self, ev, t_a, y_a, g_a, t_b, g_b, h):
        """Illinois regula falsi on [t_a, t_b] with φ(t_a)·φ(t_b) < 0; each trial time a fresh
        run from the left end (moved inward as the bracket shrinks). Returns (t, value)."""
        side = 0
        best_t, best_v = t_b, None
        for _ in range(_MAX_ITERATIONS):
            width = t_b - t_a
            if width <= 4 * np.finfo(float).eps * max(abs(t_a), abs(t_b)) + 1e-300:
                break
            t_m = t_b - g_b * width / (g_b - g_a) if g_b != g_a else 0.5 * (t_a + t_b)
            # keep trial times off the ends (regula falsi can stall next to one)
            lo, hi = t_a + 1e-3 * width, t_b - 1e-3 * width
            if not lo < t_m < hi:
                t_m = min(max(t_m, lo), hi)
            y_m, _ = self._state_at(y_a, t_a, t_m, h)
            if y_m is None:
                break
            g_m, v_m = self._phi(ev, y_m, t_m)
            best_t, best_v = t_m, v_m
            if g_m == 0 or not np.isfinite(g_m):
                break
            if (g_m > 0) == (g_a > 0):
                t_a, y_a, g_a = t_m, y_m, g_m
                if side == -1:
                    g_b *= 0.5
                side = -1
            else:
                t_b, g_b = t_m, g_m
                if side == 1:
                    g_a *= 0.5
                side = 1
        if best_v is None:
            y_b, _ = self._state_at(y_a, t_a, t_b, h)
            best_v = math.nan if y_b is None else self._phi(ev, y_b, t_b)[1]
        return float(best_t), float(best_v), y_a, t_a

    # -- the run ------------------------------------------------------------------------------
    def run(self, y, ts, carry, buffers, progress=None) -> engine.RunResult:
        """Integrate through ``ts`` save by save (``y`` advanced in place), locating events and
        testing for an equilibrium. Returns the :class:`~ufm.engine.RunResult` of the run; hits
        in ``self.hits``, what ``info`` should record in ``self.info``."""
        import time as _time
        started = _time.perf_counter()
        T = len(ts)
        g = buffers.group
        t_prev, y_prev = float(carry[_k.CARRY_T]), y.copy()
        phi_prev = [self._phi(ev, y_prev, t_prev)[0] for ev in self.events]
        status, j = _k.STATUS_OK, int(carry[_k.CARRY_J])
        stop_at = None
        while j < T:
            res = engine.integrate(self.packed, y, ts[:j + 1], self.tab, self.ctl, carry, buffers)
            status, j_new = res.status, res.reached
            if status != _k.STATUS_OK:
                j = j_new
                break
            t_j = float(ts[j])
            y_j = g.state[j].copy()
            hits_here = []
            phi_now = []
            for q, ev in enumerate(self.events):
                phi, _ = self._phi(ev, y_j, t_j)
                phi_now.append(phi)
                a, b = phi_prev[q], phi
                if not (np.isfinite(a) and np.isfinite(b)) or a == 0 or (a > 0) == (b > 0) and b != 0:
                    continue
                direction = 1 if b > a else -1
                if ev.direction and direction != ev.direction:
                    continue
                if b == 0:
                    t_hit, value = t_j, self._phi(ev, y_j, t_j)[1]
                else:
                    t_hit, value, _, _ = self._locate(ev, t_prev, y_prev, a, t_j, b, float(carry[_k.CARRY_H]))
                hits_here.append(Hit(ev.name, t_hit, direction, value, ev.terminal, ev.kind, dict(ev.options)))
            hits_here.sort(key=lambda h: h.t)
            for hit in hits_here:
                if stop_at is not None and hit.t > stop_at.t:
                    break
                self.hits.append(hit)
                if hit.terminal and stop_at is None:
                    stop_at = hit
            if stop_at is not None:
                # saves up to the event time only; the run's end state is the one at the event
                j = j + 1 if stop_at.t >= t_j else j
                y_end, _ = self._state_at(y_prev, t_prev, stop_at.t, float(carry[_k.CARRY_H])) \
                    if stop_at.t < t_j else (y_j, 0)
                if y_end is not None:
                    y[:] = y_end
                carry[_k.CARRY_T] = stop_at.t
                carry[_k.CARRY_J] = j
                self.info.update(terminated_by=stop_at.name, t_final=stop_at.t)
                break
            j = j_new
            if self.equilibrium is not None and j < T:
                f = self._flow(y_j, t_j)
                speed = _rms(f / (self.ctl.atol + self.ctl.rtol * np.abs(y_j)))
                if speed <= self.equilibrium:
                    for arr in (g.loss, g.data, g.state, g.gram_W, g.gram_H, g.logits):
                        if arr.shape[0] == T:
                            arr[j:] = arr[j - 1]
                    self.info.update(equilibrium_from=j, equilibrium_t=t_j, equilibrium_speed=float(speed))
                    y[:] = y_j
                    carry[_k.CARRY_T] = float(ts[-1])
                    carry[_k.CARRY_J] = T
                    j = T
                    break
            t_prev, y_prev, phi_prev = t_j, y_j, phi_now
            if progress is not None:
                progress(t_j, float(ts[-1]))
        if self.events:
            self.info["events"] = [h.as_dict() for h in self.hits]
            self.info["events_watched"] = [ev.describe() for ev in self.events]
            self.info["event_rhs_evaluations"] = self.extra_rhs
        elif self.extra_rhs:
            self.info["equilibrium_rhs_evaluations"] = self.extra_rhs
        return engine.RunResult(int(status), int(j), carry, buffers, _time.perf_counter() - started)


def _rms(v) -> float:
    return float(np.sqrt(np.mean(np.square(v)))) if v.size else 0.0
