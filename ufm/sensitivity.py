"""``ufm.sensitivities``: forward sensitivities of a Gram-space solution with respect to model
parameters, for fits (d(saved quantity)/dθ at every save time).

The variational equations dS/dt = J(y) S + ∂f/∂θ (y), S(t0) = ∂y(t0)/∂θ, are integrated with
the state by the Rosenbrock driver (RODAS4, :mod:`ufm.kernels.rosenbrock`) with the exact
augmented Jacobian, so S is the derivative of the *computed* solution to the integrator's
tolerance, and the step-size control runs over the state and the sensitivities together.

Parameters (names of :data:`PARAMETERS`):

* ``"lambda_W"``, ``"lambda_H"``, ``"lambda_b"``, ``"lambda_E"``: the decays;
* ``"lr_W"``, ``"lr_H"``, ``"lr_b"``: the rates η;
* ``"time_scale"``: a common factor s of every rate (η → sη, the flow run s times faster),
  at s = 1;
* ``"init_scale"``: a factor s of the start (W → sW, H → sH, so M, G_W, G_H → s² ·), at
  s = 1; divide by the scale σ of ``model.init(d, scale=σ)`` for d/dσ;
* ``"coupling"``: β in Θ → Θ + β D at β = 0 for a direction D (``coupling_direction=``; for a
  one-parameter family of kernels Θ(β), D = dΘ/dβ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import engine
from ._validation import as_float_array
from .kernels import tangent as _kt
from .models import UFM
from .rosenbrock import RODAS4
from .integration import (DEFAULT_SAVE, check_dense_jacobian, check_run_options, initial_vector, run_failure,
                      stiff_counts)
from .states import unflatten
from .trajectory import Trajectory

__all__ = ["sensitivities", "Sensitivities", "PARAMETERS"]

_CODES = {"lr_W": _kt.PARAM_LR_W, "lr_H": _kt.PARAM_LR_H, "lr_b": _kt.PARAM_LR_B,
          "lambda_W": _kt.PARAM_LAM_W, "lambda_H": _kt.PARAM_LAM_H, "lambda_b": _kt.PARAM_LAM_B,
          "lambda_E": _kt.PARAM_LAM_E, "time_scale": _kt.PARAM_TIME_SCALE, "init_scale": _kt.PARAM_INIT_SCALE,
          "coupling": _kt.PARAM_COUPLING}
#: the parameters :func:`sensitivities` differentiates by
PARAMETERS = tuple(_CODES)


@dataclass
class Sensitivities:
    """The solution and its derivatives at the save times.

    Attributes:
        trajectory: the :class:`~ufm.trajectory.Trajectory` of the run (Gram space).
        parameters: the parameter names, in order.
        derivatives: ``derivatives[name][q]`` is d q/dθ_name, q in ``"gram_W"`` (T, K, K),
            ``"gram_H"`` (T, N, N), ``"logits"`` (T, K, N) and, with a bias, ``"b"`` (T, K).
    """

    trajectory: Trajectory
    parameters: tuple
    derivatives: dict

    def __getitem__(self, name: str) -> dict:
        if name not in self.derivatives:
            raise KeyError(f"name: no sensitivity for {name!r}; computed: {list(self.parameters)}")
        return self.derivatives[name]


def _check_parameters(parameters) -> tuple:
    if isinstance(parameters, str):
        parameters = (parameters,)
    try:
        names = tuple(parameters)
    except TypeError:
        raise TypeError(f"parameters: expected names from {PARAMETERS}, got {parameters!r}") from None
    if not names:
        raise ValueError(f"parameters: expected at least one name from {PARAMETERS}")
    for name in names:
        if not isinstance(name, str) or name not in _CODES:
            raise ValueError(f"parameters: unknown parameter {name!r}; expected names from {PARAMETERS}")
    if len(set(names)) != len(names):
        raise ValueError(f"parameters: each name once, got {names}")
    return names


def sensitivities(model: UFM, init, t, parameters, *, rtol: float = 1e-8, atol: float = 1e-10,
                  t0: float = 0.0, coupling_direction=None, dt: float | None = None,
                  max_steps: int = 10_000_000, h_max: float = math.inf, progress=None) -> Sensitivities:
    """Integrate ``model`` from ``init`` in Gram space with the derivatives of the solution.

    Arguments:
        model: a :class:`~ufm.models.UFM`.
        init: a :class:`~ufm.models.State` or :class:`~ufm.models.GramState` (mapped to Gram
            space, as ``ufm.solve(..., space="gram")``).
        t: (T,) strictly increasing save times >= ``t0``.
        parameters: names from :data:`PARAMETERS` (module docstring for their meaning).
        rtol, atol: tolerances of the error control over the state and the sensitivities.
        t0: start time. dt: the first trial step (default: Hairer's heuristic).
        coupling_direction: (N, N) symmetric D of the ``"coupling"`` parameter (required with it).
        max_steps, h_max, progress: as for :func:`ufm.solve`.

    Returns:
        :class:`Sensitivities`; its trajectory saves ``gram_W``, ``gram_H`` and ``logits``.

    Raises:
        TypeError / ValueError: a bad argument (named in the message).
        IntegrationError: the run failed (as :func:`ufm.solve`).
    """
    if not isinstance(model, UFM):
        raise TypeError(f"model: expected a ufm.UFM, got {type(model).__name__}")
    names = _check_parameters(parameters)
    rtol, atol, t0, ts, max_steps, h_max, h0 = check_run_options(RODAS4, t, rtol, atol, t0, dt, max_steps, h_max)
    N, K = model.N, model.K
    directions = np.zeros((len(names), N, N))
    if "coupling" in names:
        if coupling_direction is None:
            raise ValueError("coupling_direction: the 'coupling' sensitivity needs the direction D of Θ → Θ + βD, "
                             f"an (N, N) = ({N}, {N}) symmetric array; got None")
        D = as_float_array(coupling_direction, "coupling_direction", ndim=2)
        if D.shape != (N, N):
            raise ValueError(f"coupling_direction: expected shape ({N}, {N}), got {D.shape}")
        if not np.allclose(D, D.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(D).max()))):
            raise ValueError("coupling_direction: expected a symmetric matrix (couplings are symmetric)")
        directions[names.index("coupling")] = D
    elif coupling_direction is not None:
        raise ValueError("coupling_direction: only used with the 'coupling' parameter, which is not in parameters")
    if progress is not None and not callable(progress):
        raise TypeError("progress: expected a callable progress(t_reached, t_end) or None")

    y, _ = initial_vector(model, init, "gram", t0)
    engine.warn_if_rank_deficient(init)
    n = y.size
    check_dense_jacobian(n, RODAS4.name, "gram")
    packed = engine.pack_model(model, "gram")
    buffers = engine.SaveBuffers(len(ts), n, K, N, None, model.bias, DEFAULT_SAVE)
    S0 = np.zeros((len(names), n))
    if "init_scale" in names:
        nb = K if model.bias else 0
        S0[names.index("init_scale"), :n - nb] = 2.0 * y[:n - nb]
    S = np.zeros((len(ts), len(names), n))
    sens = engine.Sensitivity(np.array([_CODES[x] for x in names], dtype=np.int64), np.ascontiguousarray(directions),
                              S)
    z = np.ascontiguousarray(np.concatenate([y, S0.ravel()]))
    ctl = engine.controls(rtol, atol, h_max, max_steps)
    run = engine.integrate_stiff(packed, z, ts, engine.rosenbrock_tableau(RODAS4), ctl, engine.new_carry(t0, h0),
                                 buffers, sens, progress=progress)
    info = {"method": RODAS4.name, "space": "gram", "rtol": rtol, "atol": atol, "t0": t0, "d": None, "dt": dt,
            **run.counts(), **stiff_counts(run.stats), "wall_time_s": run.wall_time_s, "model": model.describe(),
            "sensitivities": list(names)}
    traj = Trajectory(t=ts[:run.reached].copy(), **buffers.fields(run.reached), problem=model.problem, model=model,
                      info=info)
    if not run.ok:
        raise run_failure(run, None, RODAS4.name, max_steps, ts, traj)
    derivatives = {}
    for k, name in enumerate(names):
        parts = [unflatten(S[j, k], K, N, None, model.bias) for j in range(run.reached)]
        out = {"gram_W": np.array([g.gram_W for g in parts]), "gram_H": np.array([g.gram_H for g in parts]),
               "logits": np.array([g.logits() for g in parts])}
        if model.bias:
            out["b"] = np.array([g.b for g in parts])
        derivatives[name] = out
    return Sensitivities(traj, names, derivatives)

