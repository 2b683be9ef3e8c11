"""The one driver between the domain API and the numba engine.

:func:`ufm.solve`, :func:`ufm.train`, :func:`ufm.sweep` (in-process and on executors), the
bridge's fits and the benchmarks all reach the kernels through this module, and nothing else
builds kernel arguments. It owns:

* **packing**: a :class:`~ufm.models.UFM` becomes a :class:`~ufm.kernels.groups.Model`
  (:func:`pack_model`), a :class:`~ufm.solvers.Solver` a
  :class:`~ufm.kernels.groups.Tableau` (:func:`tableau`), the tolerances a
  :class:`~ufm.kernels.groups.Controls`;
* **outputs**: :class:`SaveBuffers` allocates what the kernels record and turns it into the
  fields of a :class:`~ufm.trajectory.Trajectory`;
* **the carry**: :func:`new_carry` starts a run; a run continues from any carry;
* **the kernel calls**: :func:`integrate` (one trajectory, optionally in chunks for progress),
  :func:`integrate_batch` (many, on numba threads), :func:`run_optimizer` (discrete maps);
* **failures**: :func:`failure` maps a kernel status to the ``reason`` and message of
  :class:`~ufm.errors.IntegrationError`, worded once for every caller.

Rules for implementers:

1. Every array handed to a kernel is C-contiguous, writeable and of a fixed dtype and
   dimension (:mod:`ufm.kernels.groups`, rule 1), so each kernel compiles once and the sweep
   kernel reuses the single-trajectory compilation.
2. Validation of user input happens before this module (``ufm.integration``, ``ufm.training``,
   ``ufm.sweeps``); this module assumes checked arguments.
"""

from __future__ import annotations

import math
import time as _time
import warnings
from dataclasses import dataclass

import numpy as np

from .kernels import fields as _f
from .kernels import layout as _lay
from .kernels import integrate as _k
from .kernels import optimizers as _o
from ._validation import check_memory
from .errors import IntegrationError
from .kernels.groups import Controls, Model, ModelBuffers, Optimizer, OutputBuffers, Outputs, Tableau
from .states import GramState, State, flatten
from .trajectory import SAVEABLE, Trajectory

__all__ = ["pack_model", "pack_deep_model", "reduction_of", "tableau", "controls", "SaveBuffers", "new_carry", "integrate", "integrate_batch",
           "run_optimizer", "RunResult", "failure", "parse_save", "initial_vector", "warn_if_rank_deficient"]

_SPACES = {"parameters": _f.SPACE_PARAMETERS, "gram": _f.SPACE_GRAM, "reduced": _f.SPACE_REDUCED}
_LOSSES = {"ce": _f.LOSS_CE, "mse": _f.LOSS_MSE}

#: kernel status → the ``reason`` of an IntegrationError
REASONS = {
    _k.STATUS_MAX_STEPS: "max_steps",
    _k.STATUS_STEP_UNDERFLOW: "step_underflow",
    _k.STATUS_NONFINITE: "nonfinite",
}
_WHY = {
    "max_steps": "max_steps = {max_steps} attempted steps were used up",
    "step_underflow": "the step size underflowed (the solution is diverging, or, for an explicit method, too "
                      "stiff at these tolerances)",
    "nonfinite": "the state became non-finite or exceeded 1e60 (divergence)",
}


# --------------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------------

def _c(a, dtype=np.float64) -> np.ndarray:
    """A fresh C-contiguous, writeable copy (kernel rule 1: one numba type per argument)."""
    return np.array(a, dtype=dtype, order="C", copy=True)


#: what :func:`memo` computed, keyed by the identities of the objects it was computed from
_MEMO: dict = {}
#: :func:`memo` forgets everything when it holds this many values (a run needs a handful)
MEMO_SIZE = 64


def memo(objects: tuple, extra, compute):
    """``compute()``, computed once per combination of ``objects`` (matched by identity) and
    ``extra`` (a hashable value) and remembered.

    For what a solve rebuilds from immutable records on every call -- a solver's kernel
    tableau, the work model's choice and prices of ``method="auto"`` -- which cost tens of
    microseconds of a small solve's Python side (a solve at K = N = 10, d = 16 is ~1.5 ms).
    Each entry holds ``objects`` themselves, so their ids cannot be reused by other objects
    while it is remembered. Only for values that depend on nothing but the arguments (and on
    module constants, which are read at the first call).
    """
    key = (tuple(map(id, objects)), extra)
    hit = _MEMO.get(key)
    if hit is not None:
        return hit[1]
    value = compute()
    if len(_MEMO) >= MEMO_SIZE:
        _MEMO.clear()
    _MEMO[key] = (objects, value)
    return value


def reduction_of(model):
    """The :class:`~ufm.reduction.Reduction` of a model (computed once per model object).

    Raises:
        ValueError: the model's problem or coupling has no exact reduction (the message says why).
    """
    for m, r in _REDUCTIONS:
        if m is model:
            return r
    from .reduction import Reduction
    r = Reduction.from_model(model)
    _REDUCTIONS.insert(0, (model, r))
    del _REDUCTIONS[8:]
    return r


#: the last few (model, reduction) pairs, matched by identity (a solve asks twice: start, pack)
_REDUCTIONS: list = []


def pack_model(model, space: str, d: int = 0) -> Model:
    """The packed :class:`~ufm.kernels.groups.Model` of a UFM for ``space`` at width ``d``.

    Arguments:
        model: a :class:`~ufm.models.UFM`.
        space: ``"parameters"``, ``"gram"`` or ``"reduced"`` (the relation coefficients of the
            problem's association scheme, :mod:`ufm.reduction`).
        d: the width (parameter space; ignored elsewhere).

    Returns:
        :class:`~ufm.kernels.groups.Model`, built once per (model object, space, d) among the
        last :data:`PACKED_SIZE` asked for and then shared: the kernels only read it, and a
        caller that changes a field gives it a copy (``packed._replace(coef=...)``, as
        :func:`ufm.training.train` does). A UFM is immutable, so the same object always packs
        the same; ``model.replace(...)`` is a new object and packs afresh. (Why: packing is a
        dozen small numpy operations, ~5 µs warm and several times that between kernel calls
        that evict the interpreter's caches, of a ~1.4 ms solve at K = N = 10, d = 16.)

    Raises:
        ValueError: ``space="reduced"`` for a model without an exact reduction.
    """
    key = (space, int(d) if space == "parameters" else 0)
    for i, (m, k, packed) in enumerate(_PACKED):
        if m is model and k == key:
            if i:
                _PACKED.insert(0, _PACKED.pop(i))
            return packed
    packed = _pack_model(model, space, d)
    _PACKED.insert(0, (model, key, packed))
    del _PACKED[PACKED_SIZE:]
    return packed


#: how many packed models :func:`pack_model` keeps (few: each holds copies of Y and π)
PACKED_SIZE = 4
#: the last PACKED_SIZE (model, (space, d), packed) triples, most recent first
_PACKED: list = []


def _pack_model(model, space: str, d: int = 0) -> Model:
    ip, coef = _header(model, _SPACES[space], d if space == "parameters" else 0)
    coef[_f.C_LAM_E] = model.lambda_E
    N = model.N
    coupling = model.coupling
    if space == "reduced":
        # the coupling's coefficients are folded into the reduction's tables
        tab_i, tab_f = reduction_of(model).pack()
        return Model(ip, coef, _c(model.problem.Y), _c(model.problem.weights), np.zeros((1, 1, 1)), np.zeros(1),
                     np.zeros((1, 1, 1)), _c(tab_i, np.int64), _c(tab_f))
    if coupling is None:
        theta = np.zeros((1, 1, 1))
        theta_t = np.zeros(1)
        theta_pinv = np.zeros((1, 1, 1))
    else:
        if hasattr(coupling, "kernels"):            # a PiecewiseCoupling
            theta = _c(coupling.kernels)
            theta_t = _c(coupling.times)
        else:
            theta = _c(np.asarray(coupling)[None])
            theta_t = np.zeros(1)
        ip[_f.IP_NTHETA] = theta.shape[0]
        if model.lambda_E:
            theta_pinv = _c(np.stack([np.linalg.pinv(T, hermitian=True) for T in theta]))
        else:
            theta_pinv = np.zeros((theta.shape[0], N, N))
    return Model(ip, coef, _c(model.problem.Y), _c(model.problem.weights), theta, theta_t, theta_pinv,
                 np.zeros(0, dtype=np.int64), np.zeros(0))


def _header(model, space_id: int, d: int):
    """(ip, coef) with what every packed model holds: space, loss, bias, sizes, the rates and
    decays of W, H and b (the layout of :mod:`ufm.kernels.layout`)."""
    ip = np.zeros(_lay.IP_SIZE, dtype=np.int64)
    ip[_lay.IP_SPACE] = space_id
    ip[_lay.IP_LOSS] = _LOSSES[model.loss_name]
    ip[_lay.IP_BIAS] = int(model.bias)
    ip[_lay.IP_K], ip[_lay.IP_D], ip[_lay.IP_N] = model.K, d, model.N
    coef = np.zeros(_lay.C_SIZE)
    coef[_lay.C_LR_W], coef[_lay.C_LR_H], coef[_lay.C_LR_B] = model.lr_W, model.lr_H, model.lr_b
    coef[_lay.C_LAM_W], coef[_lay.C_LAM_H], coef[_lay.C_LAM_B] = model.lambda_W, model.lambda_H, model.lambda_b
    return ip, coef


def pack_deep_model(model, space: str, d: int = 0) -> Model:
    """The packed :class:`~ufm.kernels.groups.Model` of a :class:`~ufm.deep.DeepUFM`
    (kernels in :mod:`ufm.kernels.deep`).

    Arguments:
        model: a DeepUFM. space: ``"parameters"`` (the factors, width ``d``) or ``"balanced"``
            (the logits on the balanced manifold; the caller has checked that it is exact).
    """
    space_id = _lay.SPACE_DEEP_PARAMETERS if space == "parameters" else _lay.SPACE_DEEP_BALANCED
    ip, coef = _header(model, space_id, d if space == "parameters" else 0)
    ip[_lay.IP_LAYERS] = model.layers
    coef[_lay.C_LR_L], coef[_lay.C_LAM_L] = model.lr_L, model.lambda_L
    return Model(ip, coef, _c(model.problem.Y), _c(model.problem.weights), np.zeros((1, 1, 1)), np.zeros(1),
                 np.zeros((1, 1, 1)), np.zeros(0, dtype=np.int64), np.zeros(0))


def tableau(solver) -> Tableau:
    """The :class:`~ufm.kernels.groups.Tableau` of a :class:`~ufm.solvers.Solver`, built once per
    solver (:func:`memo`; the kernels only read it)."""
    return memo((solver,), "tableau", lambda: _tableau(solver))


def _tableau(solver) -> Tableau:
    arr = solver.arrays
    return Tableau(_c(arr["A"]), _c(arr["b"]), _c(arr["c"]), _c(arr["e"]), _c(arr["e3"]), _c(arr["P"]),
                   float(solver.controller_order), int(solver.adaptive), int(solver.fsal), int(solver.stages),
                   float(solver.beta), float(solver.fac_min), float(solver.fac_max))


def controls(rtol: float, atol: float, h_max: float = math.inf, max_steps: int = 10_000_000) -> Controls:
    """The :class:`~ufm.kernels.groups.Controls` group (arguments already validated)."""
    return Controls(float(rtol), float(atol), float(h_max), int(max_steps))


def new_carry(t0: float, h0: float) -> np.ndarray:
    """A fresh carry at time ``t0`` with first step ``h0`` (0: Hairer's heuristic)."""
    carry = np.zeros(_k.CARRY_SIZE)
    carry[_k.CARRY_T] = t0
    carry[_k.CARRY_H] = h0
    carry[_k.CARRY_FACOLD] = 1e-4
    return carry


def parse_save(save, space: str) -> tuple[str, ...]:
    """Normalise ``save=``: a name, an iterable of names, or ``"all"`` (what the space has).

    Raises:
        TypeError / ValueError: not names, an unknown name, or W/H in Gram space.
    """
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
    if space != "parameters" and bad:
        raise ValueError(f"save: {bad} do not exist in {space} space (space={space!r} integrates WH, G_W, G_H"
                         f"{' through their relation coefficients' if space == 'reduced' else ''})")
    return names


def initial_vector(model, init, space: str, t0: float = 0.0):
    """Flat initial state and width d (None outside parameter space) from a State or GramState.

    Raises:
        TypeError: ``init`` is not a State / GramState, or a GramState in parameter space.
        ValueError: ``init`` does not fit the model (shapes, non-finite values), or (reduced
            space) does not lie in the span of the scheme's relations.
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
    if space == "parameters":
        y = flatten(init)
        # one bound check of the flat start; field by field (to name the culprit) only when it fails
        if y.size and not np.abs(y).max() <= _k.DIVERGED:
            for name in fields:
                _check_start(getattr(init, name), f"init.{name}", t0, model)
        return y, init.d
    for name in fields:
        _check_start(getattr(init, name), f"init.{name}", t0, model)
    if isinstance(init, GramState):
        gs = init
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            grams = (init.W @ init.H, init.W @ init.W.T, init.H.T @ init.H)
        for name, G in zip(("W H", "W Wᵀ", "Hᵀ H"), grams):
            _check_start(G, f"init's Gram-space image {name}", t0, model)
        gs = GramState(*grams, init.b)
    if space == "reduced":
        try:
            y, _residual = reduction_of(model).project(gs, strict=True)
        except ValueError as exc:
            raise ValueError(f"init: {str(exc).removeprefix('state: ')}. model.isotropic(scale) is the symmetric "
                             "start that matches model.init(d, scale) as d → ∞") from None
        return np.ascontiguousarray(y), None
    return flatten(gs), None


def _check_start(arr, what: str, t0: float, model) -> None:
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


#: Gram-space starts from a State with K and N up to this are checked for ill-conditioned Grams
GRAM_SPECTRUM_CHECK_MAX = 1024


def warn_if_rank_deficient(init, stacklevel: int = 3) -> None:
    """Warn when a Gram-space start is rank-deficient.

    Gram space is exact for any d, but a rank-deficient G_H or G_W (d < N or d < K) is an
    unstable manifold of the Gram ODE whenever the flow wants more rank: rounding errors along
    the missing directions then grow exponentially and the run leaves every realisable state.
    A full-rank start whose Grams are ill-conditioned (eigenvalue ratio below 1e-10: e.g. a
    large initialisation) is the same manifold to the integrator, whose errors are relative to
    the largest entries; from a State this is checked when K, N <= GRAM_SPECTRUM_CHECK_MAX.
    """
    if isinstance(init, State):
        K, d = init.W.shape
        N = init.H.shape[1]
        if d < max(K, N):
            warnings.warn(f"space='gram' from a width-{d} state with K = {K}, N = {N}: the initial Grams have "
                          f"rank <= {d}, a manifold the Gram ODE need not keep (rounding errors can grow along "
                          "the missing directions). Use space='parameters' for capacity-limited widths.",
                          UserWarning, stacklevel=stacklevel)
            return
        if max(K, N) > GRAM_SPECTRUM_CHECK_MAX:
            return                   # an eigendecomposition per solve would cost more than the check is worth
        grams = (("the Gram W Wᵀ of init.W", init.W @ init.W.T), ("the Gram Hᵀ H of init.H", init.H.T @ init.H))
    else:
        grams = (("init.gram_W", init.gram_W), ("init.gram_H", init.gram_H))
    for name, G in grams:
        ev = np.linalg.eigvalsh(G)
        if ev[-1] > 0 and ev[0] < 1e-10 * ev[-1]:
            warnings.warn(f"space='gram': {name} is numerically rank-deficient (eigenvalue ratio "
                          f"{ev[0] / ev[-1]:.1e}); the Gram ODE need not keep that rank, errors along the "
                          "smallest directions can grow and leave the positive semidefinite cone. Integrate the "
                          "parameter-space State (space='parameters') instead.",
                          UserWarning, stacklevel=stacklevel)
            return


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------

class SaveBuffers:
    """Preallocated outputs of one run and their conversion to Trajectory fields.

    Arguments:
        T: number of save times. n: flat state length. K, N: sizes. d: width (None in Gram
        space). bias: whether the state carries b. names: what to save (:func:`parse_save`).
    """

    def __init__(self, T: int, n: int, K: int, N: int, d: int | None, bias: bool, names, reduction=None,
                 times: str = "t", keep_state: bool = False):
        self.names = names
        self.K, self.N, self.d, self.bias = K, N, d, bias
        self.reduction = reduction
        # keep_state: the flat state at every save (ufm.events restarts the kernel from it)
        # (Python ints and bools until the arrays are made: numpy scalar arithmetic costs µs here)
        want_state = keep_state or any(x in names for x in ("W", "H", "b"))
        gw, gh, zl = "gram_W" in names, "gram_H" in names, "logits" in names
        expanded = 0
        if reduction is not None:
            # the reduced kernel saves the coefficients; Grams are expanded from them here
            want_state = keep_state or bool(names)
            expanded = K * K * gw + N * N * gh + K * N * zl
            gw = gh = zl = False
        # estimated before allocating: a run that cannot hold its saves says so at once
        per_save = 2 + n * want_state + K * K * gw + N * N * gh + K * N * zl + expanded
        check_memory(8.0 * T * float(per_save), f"{times}, save",
                     f"saving {', '.join(('loss',) + tuple(names))} at {T} save times")
        loss = np.empty(T)
        loss.fill(np.nan)
        data = np.empty(T)
        data.fill(np.nan)
        self.group = Outputs(
            np.array([want_state, gw, gh, zl], dtype=np.int64), loss, data,
            np.zeros((T, n) if want_state else (0, n)),
            np.zeros((T, K, K) if gw else (0, K, K)),
            np.zeros((T, N, N) if gh else (0, N, N)),
            np.zeros((T, K, N) if zl else (0, K, N)))

    def fields(self, upto: int) -> dict:
        """Trajectory fields of the first ``upto`` saves (copies)."""
        g = self.group
        K, N, d = self.K, self.N, self.d
        out = {"loss": g.loss[:upto].copy(), "data_loss": g.data[:upto].copy()}
        if self.reduction is not None:
            return {**out, **self._expanded(g.state[:upto])}
        if g.flags[1]:
            out["gram_W"] = g.gram_W[:upto].copy()
        if g.flags[2]:
            out["gram_H"] = g.gram_H[:upto].copy()
        if g.flags[3]:
            out["logits"] = g.logits[:upto].copy()
        S = g.state[:upto]
        if "W" in self.names:
            out["W"] = S[:, :K * d].reshape(-1, K, d).copy()
        if "H" in self.names:
            out["H"] = S[:, K * d:K * d + d * N].reshape(-1, d, N).copy()
        if "b" in self.names and self.bias:
            out["b"] = S[:, -K:].copy()
        return out


    def grams_at(self, j: int) -> tuple:
        """(gram_H, gram_W, logits) of save ``j`` (views; expanded in reduced space). Each is
        None unless recorded (``gram_*``/``logits`` in ``names``)."""
        g = self.group
        if self.reduction is not None:
            M, GW, GH, b = self.reduction.expand(g.state[j:j + 1])
            return GH[0], GW[0], (M if b is None else M + b[..., :, None])[0]
        return (g.gram_H[j] if g.flags[2] else None, g.gram_W[j] if g.flags[1] else None,
                g.logits[j] if g.flags[3] else None)

    def _expanded(self, coefficients) -> dict:
        """Trajectory fields of saved reduced states (M, G_W, G_H and b expanded)."""
        out = {}
        if not self.names:
            return out
        M, GW, GH, b = self.reduction.expand(coefficients)
        if "gram_W" in self.names:
            out["gram_W"] = GW
        if "gram_H" in self.names:
            out["gram_H"] = GH
        if "logits" in self.names:
            out["logits"] = M if b is None else M + b[..., :, None]
        if "b" in self.names and b is not None:
            out["b"] = b
        return out


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    """What one kernel run left: its status, saves written, carry and outputs.

    Attributes:
        status: kernel STATUS_* code. reached: saves written. carry: (CARRY_SIZE,) final carry.
        buffers: the :class:`SaveBuffers`. wall_time_s: time in the kernel calls.
    """

    status: int
    reached: int
    carry: np.ndarray
    buffers: SaveBuffers
    wall_time_s: float

    @property
    def ok(self) -> bool:
        return self.status == _k.STATUS_OK

    @property
    def t_reached(self) -> float:
        return float(self.carry[_k.CARRY_T])

    def counts(self) -> dict:
        """Step and evaluation counts for a Trajectory's ``info``."""
        c = self.carry
        return {"accepted_steps": int(c[_k.CARRY_ACCEPTED]), "rejected_steps": int(c[_k.CARRY_REJECTED]),
                "rhs_evaluations": int(c[_k.CARRY_RHS])}


#: the driver stops when a step falls below this fraction of max(1, |t|, |t_end|)
UNDERFLOW_RTOL = 1e-14


def failure(status: int, t_fail: float, saved: int, max_steps: int, kept: str = "are in err.trajectory",
            t_end: float | None = None, accepted: int = 1):
    """(reason, message) of a failed run, worded once for every caller.

    Arguments:
        status: a kernel STATUS_* code other than STATUS_OK.
        t_fail: where the run stopped. saved: saves written before it.
        max_steps: the run's step budget (quoted when it ran out).
        kept: how the caller keeps the saves (the end of the message).
        t_end: the last save time; a step underflow caused by a far horizon (the driver's
            smallest step is relative to it) is then explained as such.
        accepted: steps accepted before the failure (0: not one step could be taken).
    """
    reason = REASONS[status]
    why = _WHY[reason].format(max_steps=max_steps)
    if reason == "step_underflow" and t_end is not None and abs(t_end) > 1e3 * max(1.0, abs(t_fail)):
        floor = UNDERFLOW_RTOL * abs(t_end)
        if accepted == 0:
            why = (f"the save horizon is the problem: t[-1] = {t_end:.3g} is so far that the driver counts every "
                   f"step below {UNDERFLOW_RTOL:g}·t[-1] = {floor:.3g} as stalled, so not one step could be taken. "
                   f"Save times up to about {1 / UNDERFLOW_RTOL:.0e} times the time scale of the dynamics can be "
                   "reached in one call; use a nearer t[-1], or integrate in pieces (continue from traj.state() "
                   "with t0=)")
        else:
            why = (f"the step size underflowed: the smallest step allowed is {UNDERFLOW_RTOL:g}·t[-1] = {floor:.3g}, "
                   f"set by the far save horizon t[-1] = {t_end:.3g}; unless the solution diverges here, a nearer "
                   "t[-1] (or integrating in pieces from traj.state() with t0=) lets the smaller steps it needs through")
    return reason, (f"integration stopped at t = {t_fail:.6g}: {why}. The {saved} save time(s) before it "
                    f"{kept}.")


def integrate(packed: Model, y: np.ndarray, ts: np.ndarray, tab: Tableau, ctl: Controls, carry: np.ndarray,
              buffers: SaveBuffers, progress=None) -> RunResult:
    """Run one trajectory through the save times ``ts`` from ``carry`` (``y`` in place).

    Arguments:
        packed: :class:`~ufm.kernels.groups.Model`. y: (n,) flat state, advanced in place.
        ts: (T,) save times. tab, ctl: the method and its controls. carry: from
            :func:`new_carry` or a previous run. buffers: :class:`SaveBuffers` for ``ts``.
        progress: None, or ``progress(t_reached, t_end)`` called after each of ~50 chunks.

    Returns:
        :class:`RunResult`.
    """
    T = len(ts)
    ends = [T] if progress is None else _chunk_ends(T, 50)
    started = _time.perf_counter()
    status, j = _k.STATUS_OK, int(carry[_k.CARRY_J])
    for j_end in ends:
        status, j = _k.integrate(y, carry, ts, j_end, tab, ctl, packed, buffers.group)
        if progress is not None:
            progress(float(carry[_k.CARRY_T]), float(ts[-1]))
        if status != _k.STATUS_OK:
            break
    return RunResult(int(status), int(j), carry, buffers, _time.perf_counter() - started)


def _chunk_ends(T: int, n: int) -> list[int]:
    edges = np.unique(np.linspace(0, T, min(n, T) + 1).round().astype(int))
    return [int(e) for e in edges[1:]]


def _offsets(sizes) -> np.ndarray:
    off = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=off[1:])
    return off


def _flat(parts, dtype=np.float64):
    parts = [np.ascontiguousarray(p, dtype=dtype).ravel() for p in parts]
    buf = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return _c(buf, dtype), _offsets([p.size for p in parts])


def integrate_batch(jobs, ts: np.ndarray, tab: Tableau, ctl: Controls, carries: np.ndarray,
                    threads: int | None = None) -> list[RunResult]:
    """Run many trajectories with one call of the parallel sweep kernel.

    Arguments:
        jobs: list of ``(packed Model, y (n_i,), SaveBuffers)``; each ``y`` is advanced in place.
        ts: (T,) save times shared by all. tab, ctl: shared method and controls.
        carries: (n_jobs, CARRY_SIZE) starting carries (updated in place).
        threads: numba threads for this call (None: numba's setting). With one thread, or one
            job, the jobs run one after the other through :func:`integrate` (no threading
            layer: safe in forked workers, where GNU OpenMP aborts after a fork).

    Returns:
        One :class:`RunResult` per job, in order (``wall_time_s`` is the batch's).
    """
    import numba

    started = _time.perf_counter()
    nthreads = numba.get_num_threads() if threads is None else threads
    if nthreads <= 1 or len(jobs) <= 1:
        results = [integrate(packed, y, ts, tab, ctl, carries[q], buf) for q, (packed, y, buf) in enumerate(jobs)]
        elapsed = _time.perf_counter() - started
        for r in results:
            r.wall_time_s = elapsed
        return results

    from .kernels import sweep as _ks

    n = len(jobs)
    T = ts.shape[0]
    models = [m for m, _, _ in jobs]
    groups = [b.group for _, _, b in jobs]
    mb = ModelBuffers(np.stack([m.ip for m in models]), np.stack([m.coef for m in models]),
                      *_flat([m.Y for m in models]), *_flat([m.pi for m in models]),
                      *_flat([m.theta for m in models]), *_flat([m.theta_t for m in models]),
                      *_flat([m.theta_pinv for m in models]), *_flat([m.tab_i for m in models], np.int64),
                      *_flat([m.tab_f for m in models]))
    ob = OutputBuffers(np.stack([g.flags for g in groups]), np.full((n, T), np.nan), np.full((n, T), np.nan),
                       *_flat([g.state for g in groups]), *_flat([g.gram_W for g in groups]),
                       *_flat([g.gram_H for g in groups]), *_flat([g.logits for g in groups]))
    y, y_off = _flat([y for _, y, _ in jobs])
    status = np.zeros(n, dtype=np.int64)
    reached = np.zeros(n, dtype=np.int64)
    # costliest first (state size as the proxy), so that no thread starts a big one last
    order = np.argsort(-np.diff(y_off), kind="stable").astype(np.int64)
    previous = numba.get_num_threads()
    nthreads = max(1, min(int(nthreads), numba.config.NUMBA_NUM_THREADS))
    if nthreads != previous:
        numba.set_num_threads(nthreads)
    try:
        _ks.integrate_many(order, np.zeros(1, dtype=np.int64), np.zeros(nthreads, dtype=np.int64), ts, tab, ctl,
                           mb, ob, carries, y, y_off, status, reached)
    finally:
        if nthreads != previous:
            numba.set_num_threads(previous)
    elapsed = _time.perf_counter() - started
    results = []
    for q, (_, yq, buf) in enumerate(jobs):
        g = buf.group
        g.loss[:] = ob.loss[q]
        g.data[:] = ob.data[q]
        for name in ("state", "gram_W", "gram_H", "logits"):
            flat, off = getattr(ob, name), getattr(ob, name + "_off")
            getattr(g, name).reshape(-1)[:] = flat[off[q]:off[q + 1]]
        yq[:] = y[y_off[q]:y_off[q + 1]]
        results.append(RunResult(int(status[q]), int(reached[q]), carries[q], buf, elapsed))
    return results


def run_optimizer(y: np.ndarray, step0: int, save_steps: np.ndarray, opt: Optimizer, packed: Model,
                  packed_record: Model, buffers: SaveBuffers):
    """Run a discrete optimiser (:func:`ufm.kernels.optimizers.train`).

    Arguments:
        y: (n,) parameters, advanced in place. step0: their step count. save_steps: (T,)
        int64 steps to record. opt: :class:`~ufm.kernels.groups.Optimizer`. packed: the model
        of the update direction; packed_record: the model whose objective is recorded.
        buffers: :class:`SaveBuffers` for ``save_steps``.

    Returns:
        (status, saves written, last step reached, wall time in s).
    """
    n = y.shape[0]
    started = _time.perf_counter()
    status, j, reached = _o.train(y, np.zeros(n), np.zeros(n), int(step0), _c(save_steps, np.int64), opt, packed,
                                  packed_record, buffers.group)
    return int(status), int(j), int(reached), _time.perf_counter() - started


def optimizer_group(kind: int, lr: float, rate: np.ndarray, decay: np.ndarray, hyper: np.ndarray) -> Optimizer:
    """The :class:`~ufm.kernels.groups.Optimizer` group."""
    return Optimizer(int(kind), float(lr), _c(rate), _c(decay), _c(hyper))


# --------------------------------------------------------------------------------------------
# stiff flows: the Rosenbrock driver, stiffness detection, automatic switching, sensitivities
# --------------------------------------------------------------------------------------------

from . import rosenbrock as _rosenbrock  # noqa: E402  (the registry of Rosenbrock methods, for auto_plan)
from .kernels import rosenbrock as _kr  # noqa: E402
from .kernels import tangent as _kt  # noqa: E402
from .kernels.groups import RosenbrockTableau, Sensitivity  # noqa: E402

REASONS[_kr.STATUS_SINGULAR] = "singular"
_WHY["singular"] = ("the Rosenbrock matrix I/(hγ) − J stayed singular after halving the step 5 times "
                    "(the Jacobian is not finite there)")

#: explicit steps per kernel call between two stiffness checks
STIFF_CHECK_STEPS = 500
#: the same for ``method="auto"``, which can act on a stiff verdict (switch to RODAS4): checked
#: more often, so the explicit method does not grind at its stability limit for up to 500 steps
#: before the switch (a check is one spectral-radius estimate, 40 tangents: ~4% of 100 steps of
#: Verner 7(6))
AUTO_CHECK_STEPS = 100
#: the step is stability-limited when h·ρ(J) is above this fraction of the stability boundary
STIFF_FRACTION = 0.5
#: Rosenbrock steps per kernel call of ``method="auto"`` between two checks whether the explicit
#: method should take over again (a check is one spectral-radius estimate: 40 tangents)
STIFF_BACK_CHECK_STEPS = 25
#: a stiff explicit run projected to need more steps than this warns that it will be slow
STIFF_WARN_STEPS = 200_000
#: ``method="auto"`` tries its first Rosenbrock step at this multiple of the break-even step
#: (:func:`break_even_step`): accepted, the implicit method pays even if the controller's next
#: steps come out somewhat smaller
TRIAL_MARGIN = 2.0
#: Rosenbrock attempts of one trial: a first try rejected with a shrunk step that still pays is
#: tried once more at that step (the Jacobian is rebuilt, ~10 % of a step; the LU redone), so
#: a flow whose accurate RODAS4 step lies between the break-even step and the first try
#: switches instead of waiting (transformer_hierarchy_adamw's linear-features fit: 8 trials
#: rejected at 2x before one was accepted)
TRIAL_ATTEMPTS = 2
#: no trial unless the explicit method's remaining work ((t_end − t)/h steps) is at least this
#: many Rosenbrock steps' worth: a trial costs up to TRIAL_ATTEMPTS Rosenbrock steps and, when it
#: switches (at >= TRIAL_MARGIN x break-even), saves at least half the remaining work, so with
#: some trials rejected it repays only on long stiff stretches. At 1 (a trial whenever the rest
#: cost more than one Rosenbrock step) the fits of the K = 24, 32 runs paid 1.3-1.9x CPU for
#: trials in predictions a few hundred steps from their end (110 Jacobians of order 820 in
#: mlp_factorial_momentum_vocab24's linear-features fit, 4 switches)
TRIAL_PAYBACK = 10.0
#: power iterations of the spectral-radius estimate
POWER_ITERATIONS = 40


#: a Jacobian-reusing (W-) method holds its step at the LU's h_LU while the controller proposes
#: a step in [h_LU, JACOBIAN_BAND · h_LU] (:mod:`ufm.kernels.rosenbrock`, "Jacobian reuse")
JACOBIAN_BAND = 2.0
#: ... and not below JACOBIAN_BAND_LOW · h_LU (after an accepted step the PI controller never
#: proposes less than 0.62 h, so this holds every accepted step's proposal, as CVODE keeps its
#: step for any η < 1.5; a rejection refactors at the smaller step). Against a band [1, 2]:
#: ROS34PW2 on Gram K = N = 16 linear features (rtol 1e-7) 37 -> 28 LUs, 546 -> 469 ms; MSE from
#: scale 1e3 (K = N = 10, rtol 1e-8) 1,803 -> 1,362 LUs, 2.65 -> 2.38 s (a scratch script of session 6, not kept)
JACOBIAN_BAND_LOW = 0.5
#: ... and renews J and the LU after this many accepted steps on one Jacobian
JACOBIAN_MAX_AGE = 50

_REUSE: dict = {}


def jacobian_reuse(rtab: RosenbrockTableau) -> bool:
    """Whether the driver may keep J and its LU over steps with the tableau ``rtab``: its
    propagated and embedded weights satisfy the W-method order conditions
    (:func:`ufm.rosenbrock.w_order_defects`) up to the controller's error order (memoised per
    tableau; RODAS4: W-order 1, no; ROS34PW2: 3 and 2, yes)."""
    key = (rtab.gamma, rtab.a.tobytes(), rtab.C.tobytes(), rtab.m.tobytes(), rtab.e.tobytes())
    if key not in _REUSE:
        from .rosenbrock import ORDER_TOL, w_order_defects
        s = rtab.m.shape[0]
        Gam = np.linalg.inv(np.diag(np.full(s, 1.0 / rtab.gamma)) - rtab.C)
        alpha = rtab.a @ Gam
        q = int(round(rtab.order)) - 1
        _REUSE[key] = all(max(w_order_defects(alpha, Gam, w @ Gam, q)) <= ORDER_TOL for w in (rtab.m, rtab.m - rtab.e))
    return _REUSE[key]


def stage_cache(packed: Model, n: int, rtab: RosenbrockTableau, sensitivities: int = 0):
    """A fresh :class:`~ufm.kernels.rosenbrock.StageCache` for a state of size ``n`` (without
    its sensitivities) and its policy: reuse J and the LU for a W-method
    (:func:`jacobian_reuse`), never with sensitivities."""
    nf = factorised_order(packed, n) if sensitivities == 0 else n
    state = np.zeros(_kr.CACHE_SIZE)
    state[_kr.CACHE_REUSE] = 1.0 if (sensitivities == 0 and jacobian_reuse(rtab)) else 0.0
    state[_kr.CACHE_BAND] = JACOBIAN_BAND
    state[_kr.CACHE_BAND_LOW] = JACOBIAN_BAND_LOW
    state[_kr.CACHE_MAX_AGE] = JACOBIAN_MAX_AGE
    return _kr.StageCache(np.empty((n, n)), np.empty((nf, nf)), np.zeros(nf, dtype=np.int32), state)


def forget_jacobian(cache) -> None:
    """Mark ``cache``'s J and LU stale-and-gone (the state was moved by another method)."""
    cache.state[_kr.CACHE_LU_VALID] = 0.0
    cache.state[_kr.CACHE_JAC_VALID] = 0.0


def rosenbrock_tableau(method) -> RosenbrockTableau:
    """The :class:`~ufm.kernels.groups.RosenbrockTableau` of a :class:`~ufm.rosenbrock.RosenbrockMethod`,
    built once per method (:func:`memo`; the kernels only read it)."""
    return memo((method,), "rosenbrock tableau", lambda: _rosenbrock_tableau(method))


def _rosenbrock_tableau(method) -> RosenbrockTableau:
    arr = method.arrays
    return RosenbrockTableau(float(method.gamma), _c(arr["a"]), _c(arr["C"]), _c(arr["m"]), _c(arr["e"]),
                             _c(arr["D"]), float(method.controller_order))


def no_sensitivity(N: int) -> Sensitivity:
    """The empty :class:`~ufm.kernels.groups.Sensitivity` (a plain stiff run)."""
    return Sensitivity(np.zeros(0, dtype=np.int64), np.zeros((0, N, N)), np.zeros((0, 0, 0)))


def stiff_stats() -> np.ndarray:
    """Fresh counters of the stiff driver (Jacobians, factorisations, tangents)."""
    return np.zeros(_kr.STAT_SIZE)


def integrate_stiff(packed: Model, z: np.ndarray, ts: np.ndarray, rtab: RosenbrockTableau, ctl: Controls,
                    carry: np.ndarray, buffers: SaveBuffers, sens: Sensitivity | None = None, stats=None,
                    progress=None, cache=None) -> RunResult:
    """Run one trajectory with the Rosenbrock driver (:func:`ufm.kernels.rosenbrock.integrate_rosenbrock`).

    Arguments as :func:`integrate`, plus ``sens`` (:class:`~ufm.kernels.groups.Sensitivity`,
    None: none; then ``z`` is the state, else the state followed by its sensitivities),
    ``stats`` (counters from :func:`stiff_stats`, added to) and ``cache`` (a
    :func:`stage_cache` to continue, None: a fresh one).

    Returns:
        :class:`RunResult` (its ``stats`` attribute holds the counters).
    """
    sens = no_sensitivity(int(packed.ip[_f.IP_N])) if sens is None else sens
    stats = stiff_stats() if stats is None else stats
    p = int(sens.codes.shape[0])
    cache = stage_cache(packed, z.size // (1 + p), rtab, p) if cache is None else cache
    T = len(ts)
    ends = [T] if progress is None else _chunk_ends(T, 50)
    started = _time.perf_counter()
    status, j = _k.STATUS_OK, int(carry[_k.CARRY_J])
    for j_end in ends:
        if j_end <= j:
            continue
        status, j = _kr.integrate_rosenbrock(z, carry, ts, j_end, rtab, ctl, packed, buffers.group, sens, stats,
                                             cache)
        if progress is not None:
            progress(float(carry[_k.CARRY_T]), float(ts[-1]))
        if status != _k.STATUS_OK:
            break
    run = RunResult(int(status), int(j), carry, buffers, _time.perf_counter() - started)
    run.stats = stats
    return run


_BOUNDARIES: dict = {}


def stability_boundary(solver) -> float:
    """:func:`real_stability_boundary` of ``solver``, computed once per tableau (it costs ~10 ms,
    more than a whole small solve)."""
    def by_value():        # solvers with the same step tableau share it
        b = solver.arrays["b"]
        key = (solver.arrays["A"][:len(b), :len(b)].tobytes(), b.tobytes())
        if key not in _BOUNDARIES:
            _BOUNDARIES[key] = real_stability_boundary(solver)
        return _BOUNDARIES[key]
    return memo((solver,), "stability boundary", by_value)


def real_stability_boundary(solver) -> float:
    """Where the stability region of an explicit tableau ends on the negative real axis: the
    largest x with |R(−ξ)| <= 1 for all 0 <= ξ <= x, R(z) = 1 + z bᵀ(I − zA)⁻¹1 (Euler 2,
    RK4 2.785, DOPRI5 3.307, Tsit5 3.507, Vern7 4.640, DOP853 6.394)."""
    b = solver.arrays["b"]
    s = len(b)
    A = solver.arrays["A"][:s, :s]      # the step's stages (dense-only stages do not enter R)

    def amplification(x):
        return abs(1.0 - x * b @ np.linalg.solve(np.eye(s) + x * A, np.ones(s)))

    grid = np.linspace(1e-3, 20.0, 4001)
    bad = next((x for x in grid if amplification(x) > 1.0 + 1e-12), grid[-1])
    lo, hi = bad - (grid[1] - grid[0]), bad
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if amplification(mid) <= 1.0 + 1e-12 else (lo, mid)
    return float(lo)


def spectral_radius(packed: Model, y: np.ndarray, t: float, seed: int = 0) -> float:
    """Power-iteration estimate of ρ(J) at state ``y`` (:func:`ufm.kernels.tangent.spectral_radius`)."""
    p = _f.theta_piece(packed.theta_t, t) if packed.ip[_f.IP_NTHETA] > 0 else 0
    v = np.random.default_rng(seed).normal(size=y.size)
    work = np.zeros(_kt.tangent_work_size(packed))
    return float(_kt.spectral_radius(p, np.ascontiguousarray(y), packed, work, POWER_ITERATIONS, v))


@dataclass
class StiffnessReport:
    """Why an explicit run was judged stiff: at time ``t`` the step ``h`` sat at ``h·ρ`` of the
    explicit method's stability ``boundary``; ``projected_steps`` more steps to ``t_end``."""

    t: float
    h: float
    rho: float
    boundary: float
    projected_steps: float
    t_end: float

    def message(self, method: str) -> str:
        return (f"the flow turned stiff at t = {self.t:.6g}: the explicit method {method!r} is held at its "
                f"stability limit (step h = {self.h:.3g}, spectral radius of the Jacobian ρ ≈ {self.rho:.3g} by "
                f"power iteration, h·ρ = {self.h * self.rho:.3g} against the stability boundary "
                f"{self.boundary:.3g}), so reaching t = {self.t_end:.6g} would take about "
                f"{self.projected_steps:.3g} more steps. Use method='rodas4' (L-stable Rosenbrock with the exact "
                "Jacobian) or method='auto' (switches to it when this happens)")


def check_stiff(packed: Model, y: np.ndarray, carry: np.ndarray, t_end: float, boundary: float):
    """A :class:`StiffnessReport` when the explicit step in ``carry`` is stability-limited at
    ``y`` (h·ρ(J) >= STIFF_FRACTION · boundary), else None."""
    t = float(carry[_k.CARRY_T])
    h = float(carry[_k.CARRY_H])
    if not (h > 0 and np.all(np.isfinite(y))):
        return None
    rho = spectral_radius(packed, y, t)
    if not (np.isfinite(rho) and h * rho >= STIFF_FRACTION * boundary):
        return None
    return StiffnessReport(t, h, rho, boundary, (t_end - t) / h, t_end)


# --- the work model of ``method="auto"`` --------------------------------------------------------
# Operation counts (flops of the field's matrix products, of the dense LU and of the stage
# solves; entries of the Jacobian and of the factorised matrix; element-wise passes over the
# state), each weighted by what one such operation cost on the reference machine (AMD EPYC,
# OPENBLAS_NUM_THREADS=1, session 5; rerun /tmp-free with benchmarks' component timings, see
# docs/stiff.md "Cost"). Nothing is timed during a run: auto's decisions are a function of the
# model's sizes, its tableaux and the state, so a run is reproducible on any machine. The weights
# are reference nanoseconds; only their ratios enter the decisions.
#: per field evaluation: the calls of its small matrix products and its loops' set-up
WORK_FIELD_CALL = 1000.0
#: per state coordinate and field evaluation (the softmax's exponentials, element-wise passes)
WORK_FIELD_COORDINATE = 2.0
#: per flop of the field's matrix products (BLAS, small matrices)
WORK_PRODUCT_FLOP = 0.03
#: per element of one vector update of a step (a stage combination, the error estimate)
WORK_VECTOR_ELEMENT = 0.1
#: per entry of the dense Jacobian assembled from its blocks (Gram space: each entry O(1);
#: parameter space: the loss curvature enters each entry with O(K) work)
WORK_JACOBIAN_ENTRY_GRAM = 0.4
WORK_JACOBIAN_ENTRY_PARAMETERS = 2.0
#: per flop of the LU of the stage matrix (2 n_s³/3 flops, LAPACK's blocked dgetrf)
WORK_LU_FLOP = 0.022
#: per entry of the stage matrix: building I/(hγ) − J in the factorised coordinates and the
#: LU's unblocked panel work (dominant below n_s ~ 300)
WORK_MATRIX_ENTRY = 3.2
#: per flop of one stage solve with the factors (2 n_s² flops, triangular sweeps)
WORK_SOLVE_FLOP = 0.08


def _products_flops(packed) -> float:
    """Flops of the matrix products of one field evaluation (:mod:`ufm.kernels.fields`):
    Gram space G G_H, G_W G, G Mᵀ, Mᵀ G (+ the coupling's products with Θ), parameter space
    W H, G Hᵀ, Wᵀ G (+ Θ); the reduced and deep spaces are charged per coordinate only."""
    ip = packed.ip
    K, N, d = int(ip[_f.IP_K]), int(ip[_f.IP_N]), int(ip[_f.IP_D])
    coupled = ip[_f.IP_NTHETA] > 0
    space = int(ip[_f.IP_SPACE])
    if space == _f.SPACE_GRAM:
        return 2.0 * (2 * K * K * N + 2 * K * N * N) + (2.0 * (K * N * N + N ** 3) if coupled else 0.0)
    if space == _f.SPACE_PARAMETERS:
        return 6.0 * K * d * N + (2.0 * d * N * N if coupled else 0.0)
    return 0.0


def field_work(packed, n: int) -> float:
    """The work model's cost of one field evaluation at state size ``n`` (reference ns)."""
    return WORK_FIELD_CALL + WORK_FIELD_COORDINATE * n + WORK_PRODUCT_FLOP * _products_flops(packed)


def _evaluations_per_step(solver) -> int:
    """Field evaluations of one explicit step (first-same-as-last pairs reuse their last stage)."""
    return solver.stages - 1 if solver.fsal else solver.stages


def explicit_step_cost(packed, n: int, solver) -> float:
    """One step of the explicit ``solver`` at state size ``n``, in field evaluations of the
    work model: its evaluations and its vector updates (one per non-zero stage coefficient,
    weight and error weight)."""
    arr = solver.arrays
    s = solver.stages
    updates = np.count_nonzero(arr["A"][:s, :s]) + np.count_nonzero(arr["b"]) + np.count_nonzero(arr["e"])
    return _evaluations_per_step(solver) + WORK_VECTOR_ELEMENT * n * updates / field_work(packed, n)


def factorised_order(packed, n: int) -> int:
    """n_s, the order of the Rosenbrock driver's stage matrix: in Gram space the independent
    coordinates (:func:`ufm.kernels.rosenbrock.symmetric_coordinates`), else the state size."""
    if int(packed.ip[_f.IP_SPACE]) != _f.SPACE_GRAM:
        return n
    return int(_kr.symmetric_order(packed))


def rosenbrock_step_cost(packed, n: int, method, steps_per_factorisation: float | None = None) -> float:
    """One step of the Rosenbrock ``method`` at state size ``n``, in field evaluations of the
    work model: the Jacobian (assembled from its blocks in Gram and parameter space, plus one
    tangent, ~2 evaluations, per bias coordinate in Gram space; n tangents in the other
    spaces), the stage matrix I/(hγ) − J of order n_s (:func:`factorised_order`) and its LU
    (2 n_s³/3 flops), one solve (2 n_s² flops) and one evaluation per stage, and the vector
    updates. Measured at the fits' sizes against whole steps: K = N = 9 (n_s = 171) ~100
    evaluations, K = N = 16 (528) ~700, K = N = 25 (1,275) ~4,000 (the LU is 80–90 % of it
    from K = N = 16 on); docs/stiff.md "Cost". A Jacobian-reusing method
    (:attr:`~ufm.rosenbrock.RosenbrockMethod.reuses_jacobian`) is charged its Jacobian, stage
    matrix and LU over ``steps_per_factorisation`` steps (default STEPS_PER_FACTORISATION)."""
    ip = packed.ip
    f = field_work(packed, n)
    space = int(ip[_f.IP_SPACE])
    if space == _f.SPACE_GRAM:
        jac = WORK_JACOBIAN_ENTRY_GRAM * n * n + (2.0 * f * int(ip[_f.IP_K]) if ip[_f.IP_BIAS] else 0.0)
    elif space == _f.SPACE_PARAMETERS:
        jac = WORK_JACOBIAN_ENTRY_PARAMETERS * n * n
    else:
        jac = 2.0 * f * n
    ns = factorised_order(packed, n)
    s = method.stages
    arr = method.arrays
    updates = sum(np.count_nonzero(arr[k]) for k in ("a", "C", "m", "e"))
    factorisation = jac + WORK_MATRIX_ENTRY * ns * ns + WORK_LU_FLOP * 2.0 * ns ** 3 / 3.0
    if method.reuses_jacobian:                         # amortised over the steps that keep it
        factorisation /= STEPS_PER_FACTORISATION if steps_per_factorisation is None else steps_per_factorisation
    work = factorisation + s * (WORK_SOLVE_FLOP * 2.0 * ns * ns + f) + WORK_VECTOR_ELEMENT * n * updates
    return work / f


#: steps per Jacobian and LU of a Jacobian-reusing (W-) method, the work model's prior: measured
#: 21-34 on smooth stiff decays (ROS34PW2, JACOBIAN_BAND [0.5, 2]: the stiff bias relaxation at
#: rtol 1e-8, 581 steps / 28 LUs; Gram K = N = 16 linear features to t = 1e4 at rtol 1e-7,
#: 941 / 28) but 6.2 through the MSE-from-scale-1e3 transient (8,462 / 1,362: many
#: rejections). ``auto`` corrects it by the run's own count while it runs the W-method
#: (:func:`observed_steps_per_factorisation`), so it hands such a transient back sooner
STEPS_PER_FACTORISATION = 20.0
#: a Jacobian-reusing method takes this many more steps for holding its step in the band
#: (ROS34PW2 with JACOBIAN_BAND = 2 against no hold: 601 / 490 on the stiff bias relaxation)
HOLD_STEP_FACTOR = 1.2


def observed_steps_per_factorisation(steps: float, factorisations: float) -> float:
    """The steps per LU the work model charges a W-method after ``steps`` attempted steps with
    ``factorisations`` LUs in this run: the count with STEPS_PER_FACTORISATION as the prior
    (one LU's worth of it), so a few steps do not swing it; counts, not timers."""
    return (steps + STEPS_PER_FACTORISATION) / (factorisations + 1.0)


def relative_steps(method, rtol: float) -> float:
    """The work model's step count of the Rosenbrock ``method`` over a stretch, up to a common
    factor: accepted steps of an error-per-step controller of order q scale like rtol^(−1/q)
    (tests/test_accuracy.py), times HOLD_STEP_FACTOR for a method that holds its step.
    ROS34PW2 (q = 3) against RODAS4 (q = 4) at rtol 1e-7: 3.8 x 1.2 = 4.6; measured 4.8 and
    4.8 (Gram K = N = 16 at 1e-7; the stiff bias relaxation at 1e-8, where the model says 5.6)."""
    q = float(method.controller_order)
    return rtol ** (-1.0 / q) * (HOLD_STEP_FACTOR if method.reuses_jacobian else 1.0)


def auto_stiff_method(packed, n: int, solver, rtol: float):
    """The Rosenbrock method ``method="auto"`` switches to: of the registered ones
    (:data:`ufm.rosenbrock.ROSENBROCK_METHODS`), the one whose modelled work over a stiff
    stretch, :func:`rosenbrock_step_cost` × :func:`relative_steps`, is least, where a
    Jacobian-reusing method must promise less than PICK_MARGIN × RODAS4's (the default's) work:
    RODAS4 where the LU is cheap or the tolerance tight, ROS34PW2 where the LU dominates
    (Gram space: K = N = 16 and 25 at rtol 1e-7, from K = N = 9 at 1e-5; RODAS4 at K = N = 16
    with rtol 1e-8 and in parameter space K = N = 10, d = 16 at 1e-8, the benchmarks' cases)."""
    from .rosenbrock import RODAS4, ROSENBROCK_METHODS

    def work(me):
        w = rosenbrock_step_cost(packed, n, me) * relative_steps(me, rtol)
        return w / PICK_MARGIN if me.reuses_jacobian else w

    return min((RODAS4, *(me for me in ROSENBROCK_METHODS.values() if me is not RODAS4)), key=work)


#: :func:`auto_stiff_method` takes a Jacobian-reusing method only when its modelled work is
#: below this fraction of RODAS4's: the model's steps per LU (STEPS_PER_FACTORISATION, 20;
#: measured 6-34) and step ratio (relative_steps; measured 3.6-4.8 against 4.6-5.6) are
#: uncertain by about this much, and through MSE-from-scale-1e3's transient (parameter space
#: K = N = 10, rtol 1e-8) auto with ROS34PW2 took 1.00 s against 0.63 s with RODAS4
PICK_MARGIN = 0.5


@dataclass(frozen=True)
class StepCosts:
    """What :func:`implicit_pays` weighs, in field evaluations of the work model: one step of
    the explicit method (:func:`explicit_step_cost`) and one Rosenbrock step
    (:func:`rosenbrock_step_cost`)."""

    explicit: float
    rosenbrock: float


def step_costs(packed, n: int, solver, method) -> StepCosts:
    """:class:`StepCosts` of an ``auto`` run: explicit ``solver``, Rosenbrock ``method``."""
    return StepCosts(explicit_step_cost(packed, n, solver), rosenbrock_step_cost(packed, n, method))


def auto_plan(packed, n: int, solver, rtol: float):
    """(:func:`auto_stiff_method`, its :func:`step_costs`) of an ``auto`` run, computed once per
    explicit ``solver``, registry of Rosenbrock methods, model header ``packed.ip`` (space,
    loss, bias, sizes, coupling pieces: all the work model reads of the model), state size and
    ``rtol`` (:func:`memo`): ~25 µs per solve otherwise, 2 % of a solve at K = N = 10, d = 16."""
    def compute():
        method = auto_stiff_method(packed, n, solver, rtol)
        return method, step_costs(packed, n, solver, method)
    return memo((solver, *_rosenbrock.ROSENBROCK_METHODS.values()), ("auto plan", packed.ip.tobytes(), n, float(rtol)), compute)


def implicit_pays(h: float, rho: float, boundary: float, costs: StepCosts) -> bool:
    """Whether a Rosenbrock step h beats the explicit method at spectral radius ``rho``: held at
    its stability limit h_e = boundary/ρ, the explicit method covers h in h·ρ/boundary steps
    of ``costs.explicit`` each, against ``costs.rosenbrock``."""
    return bool(h * rho / boundary * costs.explicit >= costs.rosenbrock)


def break_even_step(rho: float, boundary: float, costs: StepCosts) -> float:
    """The smallest Rosenbrock step that :func:`implicit_pays` at spectral radius ``rho``:
    costs.rosenbrock / costs.explicit explicit steps of boundary/ρ."""
    return costs.rosenbrock / costs.explicit * boundary / rho


def explicit_again(packed: Model, y: np.ndarray, carry: np.ndarray, boundary: float, costs: StepCosts) -> float | None:
    """ρ(J) (by power iteration) when the Rosenbrock step in ``carry`` no longer pays at ``y``
    (:func:`implicit_pays`), else None."""
    h = float(carry[_k.CARRY_H])
    if not (h > 0 and np.all(np.isfinite(y))):
        return None
    rho = spectral_radius(packed, y, float(carry[_k.CARRY_T]))
    if np.isfinite(rho) and not implicit_pays(h, rho, boundary, costs):
        return rho
    return None


@dataclass
class SwitchState:
    """What ``method="auto"`` carries between calls of :func:`integrate_watched` on one run (a
    settling prediction runs in chunks, :func:`ufm.bridge.settling.solve_settling`): whether
    it runs the Rosenbrock method now (a switched run stays implicit across calls instead of
    starting each chunk explicit and paying a new trial), the time before which no trial is
    made, the rejected trials in a row, explicit chunks since the last trial, when it first
    switched, how often it changed method, the explicit steps between stiffness checks (0: not
    yet set), (``work_budget``) the budget its Rosenbrock steps took beyond one step each, and
    the Rosenbrock driver's :func:`stage_cache` (a W-method's J and LU carry over while it stays
    implicit) with the Rosenbrock steps and LUs so far (:func:`observed_steps_per_factorisation`)."""

    stiff: bool = False
    t_trial: float = -math.inf
    failed: int = 0
    chunks: int = 0
    switched_at: float | None = None
    switches: int = 0
    check_steps: int = 0
    charged: float = 0.0
    cache: object = None
    w_steps: float = 0.0
    w_lus: float = 0.0


def integrate_watched(packed: Model, y: np.ndarray, ts: np.ndarray, solver, ctl: Controls, carry: np.ndarray,
                      buffers: SaveBuffers, progress=None, switch_to=None, state: SwitchState | None = None,
                      work_budget: bool = False):
    """An explicit run in chunks of :data:`STIFF_CHECK_STEPS` steps (:data:`AUTO_CHECK_STEPS`
    with ``switch_to``) that watches for stiffness.

    After each chunk that did not finish, the step is compared with the stability limit
    (:func:`check_stiff`). When it is stability-limited:

    * with ``switch_to`` (a :class:`~ufm.rosenbrock.RosenbrockMethod`, ``method="auto"``):
      unless the explicit method finishes for less than :data:`TRIAL_PAYBACK` Rosenbrock steps
      cost (:class:`StepCosts`), a Rosenbrock step is tried from the same carry at
      :data:`TRIAL_MARGIN` × the break-even step h_be (:func:`break_even_step`; at least the
      explicit step). Rejected, with a shrunk step h_R that still pays
      (:func:`implicit_pays`), it is tried once more at h_R (the accuracy-limited step is
      between h_be and the first try). Accepted, with a next step that pays, the run goes on
      with the Rosenbrock driver, in chunks of :data:`STIFF_BACK_CHECK_STEPS` steps; after
      each, :func:`explicit_again` decides whether the explicit method takes over again (a
      fast transient after a stiff stretch). Otherwise RODAS4's accuracy-limited step does not
      pay yet: the explicit method goes on from its own step (from the state the trial
      reached if it was accepted, else untouched). After such a trial or a switch back at time
      t, the next trial waits until t · h_trial / h_R (steps of these decaying flows grow about
      like t), so a transient where both methods are held at their limits does not ping-pong;
      after the k-th failed trial in a row it also waits 2^(k−1) chunks (the trials' cost
      stays a small fraction of a run where the implicit method never pays);
    * otherwise, when the projected number of steps exceeds what is left of ``max_steps``, the
      run stops with reason ``"stiff"``; when it exceeds :data:`STIFF_WARN_STEPS`, a
      UserWarning says so once and the run continues.

    ``state`` (:class:`SwitchState`, updated in place) continues an ``auto`` run from an earlier
    call; None starts afresh. ``work_budget`` (the fits' predictions): ``max_steps`` budgets
    work, not steps: a Rosenbrock step takes costs.rosenbrock / costs.explicit explicit steps'
    worth of it (``state.charged`` holds the excess), so a prediction that switched is cut at the
    same work as an explicit one; and after a trial that does not pay, a run that neither method
    can finish within the budget (the explicit method's projected steps, and the implicit
    method's with its step growing like t) stops as stiff at once, as an explicit run does.

    Returns:
        (RunResult, StiffnessReport or None, switched_at or None). A run stopped as stiff has
        status STATUS_MAX_STEPS and the report; the caller words the error. A run that switched
        has ``stats`` (the stiff counters of this call) and ``switches`` (how many times it
        changed method, over every call that shared ``state``).
    """
    T = len(ts)
    tab = tableau(solver)
    boundary = stability_boundary(solver) if solver.adaptive else math.inf
    ends = [T] if progress is None else _chunk_ends(T, 50)
    started = _time.perf_counter()
    status, j = _k.STATUS_OK, int(carry[_k.CARRY_J])
    report = None
    warned = False
    st = SwitchState() if state is None else state
    stats = stiff_stats() if switch_to is not None else None
    costs = None
    if switch_to is not None:
        switch_to, costs = auto_plan(packed, y.size, solver, ctl.rtol)
    rtab = rosenbrock_tableau(switch_to) if switch_to is not None else None
    sens = None              # the empty Sensitivity group, made at the first Rosenbrock call
    called = False           # whether this call ran the Rosenbrock driver (most runs never do)

    # what one Rosenbrock step takes from max_steps (work_budget: its work in explicit steps)
    ratio = costs.rosenbrock / costs.explicit if (costs is not None and work_budget) else 1.0
    if switch_to is None:
        st.check_steps = STIFF_CHECK_STEPS
    elif st.check_steps == 0:
        st.check_steps = AUTO_CHECK_STEPS

    def attempted_now() -> int:
        return int(carry[_k.CARRY_ACCEPTED] + carry[_k.CARRY_REJECTED])

    def budget_left() -> float:
        return ctl.max_steps - attempted_now() - st.charged

    def rosenbrock(steps, j_end):
        nonlocal sens, called
        if sens is None:
            sens = no_sensitivity(int(packed.ip[_f.IP_N]))
        called = True
        if st.cache is None:         # allocated at the first trial (2 n² floats; most runs never try)
            st.cache = stage_cache(packed, y.size, rtab)
        before, lus = attempted_now(), stats[_kr.STAT_FACTORIZATIONS]
        chunk = Controls(ctl.rtol, ctl.atol, ctl.h_max, int(before + steps))
        out = _kr.integrate_rosenbrock(y, carry, ts, j_end, rtab, chunk, packed, buffers.group, sens, stats,
                                       st.cache)
        st.charged += (attempted_now() - before) * (ratio - 1.0)
        st.w_steps += attempted_now() - before
        st.w_lus += stats[_kr.STAT_FACTORIZATIONS] - lus
        return out

    for j_end in ends:
        while j < j_end:
            attempted = attempted_now()
            left = budget_left()
            if st.stiff:
                steps = min(STIFF_BACK_CHECK_STEPS, int(left // ratio))
                if steps < 1:
                    status = _k.STATUS_MAX_STEPS
                    break
                status, j = rosenbrock(steps, j_end)
                if status != _k.STATUS_MAX_STEPS or budget_left() < ratio:
                    break
                if switch_to.reuses_jacobian:
                    # charge the W-method the steps per LU this run has seen (counts, not timers)
                    spl = observed_steps_per_factorisation(st.w_steps, st.w_lus)
                    now = StepCosts(costs.explicit, rosenbrock_step_cost(packed, y.size, switch_to, spl))
                else:
                    now = costs
                back = explicit_again(packed, y, carry, boundary, now)
                if back is not None:
                    st.stiff = False
                    st.switches += 1
                    carry[_k.CARRY_FACOLD] = 1e-4
                    t_b, h_b = float(carry[_k.CARRY_T]), float(carry[_k.CARRY_H])
                    st.t_trial = t_b * TRIAL_MARGIN * break_even_step(back, boundary, costs) / h_b
                continue
            # fixed-step methods have no stability-limited step to watch: one call
            steps = min(st.check_steps, int(left)) if solver.adaptive else int(left)
            exhausted = steps >= int(left)
            chunk = Controls(ctl.rtol, ctl.atol, ctl.h_max, int(attempted + steps))
            status, j = _k.integrate(y, carry, ts, j_end, tab, chunk, packed, buffers.group)
            if status == _k.STATUS_MAX_STEPS and exhausted and solver.adaptive and switch_to is None:
                report = check_stiff(packed, y, carry, float(ts[-1]), boundary)   # explains the failure
            if status != _k.STATUS_MAX_STEPS or exhausted or not solver.adaptive:
                break
            st.chunks += 1
            if switch_to is not None and (carry[_k.CARRY_T] < st.t_trial
                                          or (st.failed and st.chunks < 2 ** (st.failed - 1))):
                continue
            if switch_to is not None and carry[_k.CARRY_H] > 0 and ((float(ts[-1]) - carry[_k.CARRY_T])
                                                                    / carry[_k.CARRY_H] * costs.explicit
                                                                    < TRIAL_PAYBACK * costs.rosenbrock):
                # too little explicit work left to repay a trial (TRIAL_PAYBACK): no check either.
                # (check_stiff reports only for h > 0, with projected_steps = (t_end − t)/h, so a
                # report below always has enough work left)
                continue
            found = check_stiff(packed, y, carry, float(ts[-1]), boundary)
            if switch_to is not None:
                # a step far from its stability limit checks less and less often (each check is
                # 40 tangents, ~15 % of 100 Tsitouras steps at K = N = 16), up to STIFF_CHECK_STEPS
                st.check_steps = AUTO_CHECK_STEPS if found is not None else min(2 * st.check_steps,
                                                                                 STIFF_CHECK_STEPS)
            if found is None:
                continue
            if switch_to is not None:
                if budget_left() < ratio:
                    continue         # no budget for a Rosenbrock step: the explicit method goes on
                h_explicit, facold = float(carry[_k.CARRY_H]), float(carry[_k.CARRY_FACOLD])
                accepted = carry[_k.CARRY_ACCEPTED]
                h_trial = max(h_explicit, TRIAL_MARGIN * break_even_step(found.rho, boundary, costs))
                carry[_k.CARRY_H] = h_trial
                carry[_k.CARRY_FACOLD] = 1e-4
                st.chunks = 0
                if st.cache is not None:
                    forget_jacobian(st.cache)    # the explicit method moved the state since
                for _ in range(TRIAL_ATTEMPTS):
                    status, j = rosenbrock(1, j_end)
                    if (carry[_k.CARRY_ACCEPTED] > accepted or status != _k.STATUS_MAX_STEPS
                            or budget_left() < ratio
                            or not implicit_pays(float(carry[_k.CARRY_H]), found.rho, boundary, costs)):
                        break            # accepted, finished, out of budget, or the shrunk step no longer pays
                h_rosenbrock = float(carry[_k.CARRY_H])
                took = carry[_k.CARRY_ACCEPTED] > accepted
                if took and implicit_pays(h_rosenbrock, found.rho, boundary, costs):
                    if st.switched_at is None:
                        st.switched_at = found.t
                    st.stiff = True
                    st.switches += 1
                    st.failed = 0
                elif status in (_k.STATUS_MAX_STEPS, _k.STATUS_OK):
                    # RODAS4's accurate step does not pay yet: back to the explicit step (from
                    # the state an accepted trial reached, else from the untouched one)
                    t_now = float(carry[_k.CARRY_T])
                    st.t_trial = t_now * h_trial / h_rosenbrock
                    carry[_k.CARRY_H], carry[_k.CARRY_FACOLD] = h_explicit, facold
                    st.failed += 1
                    if work_budget and status == _k.STATUS_MAX_STEPS and t_now > 0:
                        # neither method finishes within the budget: the explicit one needs
                        # found.projected_steps; the implicit one, its step growing about like t
                        # from h_R, ~ (t / h_R) ln(t_end / t) steps of ``ratio`` each. Fail now,
                        # as an explicit method does (a fit rejects such a trial point anyway)
                        t_end = float(ts[-1])
                        implicit = ratio * t_now / h_rosenbrock * math.log(max(t_end / t_now, 1.0))
                        if min(found.projected_steps, implicit) > budget_left():
                            report = found
                            break
                if status != _k.STATUS_MAX_STEPS or budget_left() < 1:
                    break
                continue
            if found.projected_steps > left:
                report = found
                status = _k.STATUS_MAX_STEPS
                break
            if found.projected_steps > STIFF_WARN_STEPS and not warned:
                warnings.warn(found.message(solver.name).replace("would take", "will take")
                              + " (faster)", UserWarning, stacklevel=4)
                warned = True
        if progress is not None:
            progress(float(carry[_k.CARRY_T]), float(ts[-1]))
        if status != _k.STATUS_OK:
            break
    run = RunResult(int(status), int(j), carry, buffers, _time.perf_counter() - started)
    run.stiff_method = switch_to
    if st.switched_at is not None:
        run.stats = stats
        run.switches = st.switches
    elif called and stats.any():
        run.stats = stats            # rejected trials only: their Jacobians and LUs count too
    return run, report, st.switched_at
