"""The argument groups of the numba engine: what travels together travels as one value.

Each group is a :class:`typing.NamedTuple` of arrays and scalars. numba types a named tuple by
its class and the types of its fields, caches functions taking one (checked with
``NUMBA_DEBUG_CACHE=1``: a second process loads them from disk), and builds one inside a
``prange`` loop (the sweep kernel makes a :class:`Model` per configuration from views of flat
buffers). The Python driver (:mod:`ufm.engine`) is the only place that builds them, so every
caller hands the kernels exactly the same types and every kernel is compiled once.

Rules for implementers:

1. Every array field is a C-contiguous, writeable float64 or int64 array of the documented
   number of dimensions, also when it is empty: a change of dtype, layout, dimension or
   writeability is a new numba type and a second compilation.
2. Sizes live in ``Model.ip``; an absent optional part is an empty array of the right
   dimension, never ``None`` (numba would type ``None`` differently per call).
3. Adding a field changes every signature at once: add it here and in :mod:`ufm.engine`,
   nowhere else.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Model", "Tableau", "Controls", "Outputs", "Optimizer", "ModelBuffers", "OutputBuffers"]


class Model(NamedTuple):
    """A packed UFM (layout and maths in :mod:`ufm.kernels.fields`).

    Fields:
        ip: int64 (IP_SIZE,) space, loss, bias flags, sizes K, d, N, number of coupling pieces.
        coef: float64 (C_SIZE,) rates η_W, η_H, η_b and decays λ_W, λ_H, λ_b, λ_E.
        Y: float64 (K, N) targets. pi: float64 (N,) context weights.
        theta: float64 (P, N, N) coupling pieces ((1, 1, 1) zeros without coupling).
        theta_t: float64 (P,) start time of each piece.
        theta_pinv: float64 (P, N, N) pseudo-inverses of the pieces (for the λ_E objective).
        tab_i, tab_f: int64 (·,) and float64 (·,) tables of the reduced space (empty otherwise).
    """

    ip: np.ndarray
    coef: np.ndarray
    Y: np.ndarray
    pi: np.ndarray
    theta: np.ndarray
    theta_t: np.ndarray
    theta_pinv: np.ndarray
    tab_i: np.ndarray
    tab_f: np.ndarray


class Tableau(NamedTuple):
    """An explicit Runge–Kutta method as the driver reads it (:class:`ufm.solvers.Solver`).

    Fields:
        A: float64 (S, S) strictly lower-triangular stage matrix; rows ``stages`` … S−1 serve
            the dense output only (row ``stages`` is f at the new state, the rest are evaluated
            only when a save falls inside a step). b: float64 (s,) weights.
        c: float64 (S,) nodes. e: float64 (s,) error weights b − b̂ (zeros: fixed steps).
        e3: float64 (s,) weights b − b̂₃ of DOP853's second error estimate, or (0,) without it.
        P: float64 (S, q) dense output, y(t + θh) = y + h Σ_i k_i Σ_m P[i, m] θ^(m+1);
            shape (0, 0) without dense output.
        order: float, the power of h in the error estimate (the controller's exponent base).
        adaptive: int, 1 for error-controlled steps. fsal: int, 1 when the last stage is
            f at the new state. stages: int, s, the stages of one step.
        beta: float, the PI controller's memory exponent (0: a plain I controller).
        fac_min, fac_max: float, the bounds of the step ratio h_new / h.
    """

    A: np.ndarray
    b: np.ndarray
    c: np.ndarray
    e: np.ndarray
    e3: np.ndarray
    P: np.ndarray
    order: float
    adaptive: int
    fsal: int
    stages: int
    beta: float
    fac_min: float
    fac_max: float


class Controls(NamedTuple):
    """Step control: tolerances of the scaled RMS error norm, the largest step, and the
    budget of attempted steps over the whole run (accepted + rejected, counted in the carry)."""

    rtol: float
    atol: float
    h_max: float
    max_steps: int


class Outputs(NamedTuple):
    """Where :func:`ufm.kernels.fields.record` writes each save.

    Fields:
        flags: int64 (4,) record [state, gram_W, gram_H, logits].
        loss, data: float64 (T,) objective and data loss.
        state: float64 (T or 0, n). gram_W: (T or 0, K, K). gram_H: (T or 0, N, N).
        logits: (T or 0, K, N). A quantity not saved has a leading dimension 0.
    """

    flags: np.ndarray
    loss: np.ndarray
    data: np.ndarray
    state: np.ndarray
    gram_W: np.ndarray
    gram_H: np.ndarray
    logits: np.ndarray


class Optimizer(NamedTuple):
    """A discrete optimiser (:mod:`ufm.kernels.optimizers`).

    Fields:
        kind: int OPT_* code. lr: float learning rate.
        rate: float64 (n,) per-entry step (Adam/AdamW). decay: float64 (n,) per-entry
            decoupled decay (AdamW). hyper: float64 (H_SIZE,) μ, nesterov, β₁, β₂, ε.
    """

    kind: int
    lr: float
    rate: np.ndarray
    decay: np.ndarray
    hyper: np.ndarray


class ModelBuffers(NamedTuple):
    """Many packed models in flat buffers (the sweep kernel): configuration i owns row i of
    ``ip``/``coef`` and ``X[X_off[i]:X_off[i + 1]]`` of each flat buffer X."""

    ip: np.ndarray
    coef: np.ndarray
    Y: np.ndarray
    Y_off: np.ndarray
    pi: np.ndarray
    pi_off: np.ndarray
    theta: np.ndarray
    theta_off: np.ndarray
    theta_t: np.ndarray
    theta_t_off: np.ndarray
    theta_pinv: np.ndarray
    theta_pinv_off: np.ndarray
    tab_i: np.ndarray
    tab_i_off: np.ndarray
    tab_f: np.ndarray
    tab_f_off: np.ndarray


class OutputBuffers(NamedTuple):
    """Many configurations' outputs in flat buffers, laid out like :class:`ModelBuffers`;
    ``loss`` and ``data`` are (n, T)."""

    flags: np.ndarray
    loss: np.ndarray
    data: np.ndarray
    state: np.ndarray
    state_off: np.ndarray
    gram_W: np.ndarray
    gram_W_off: np.ndarray
    gram_H: np.ndarray
    gram_H_off: np.ndarray
    logits: np.ndarray
    logits_off: np.ndarray


# --- stiff solver and forward sensitivities (ufm/kernels/rosenbrock.py) ---------------------

class RosenbrockTableau(NamedTuple):
    """A Rosenbrock–Wanner method as the stiff driver reads it (:mod:`ufm.rosenbrock`).

    Fields:
        gamma: float, the diagonal of Γ. a, C: float64 (s, s) strictly lower-triangular
        transformed coefficients. m: float64 (s,) weights. e: float64 (s,) error weights
        m − m̂. D: float64 (2, s) dense-output coefficients. order: float, the controller's
        order.
    """

    gamma: float
    a: np.ndarray
    C: np.ndarray
    m: np.ndarray
    e: np.ndarray
    D: np.ndarray
    order: float


class Sensitivity(NamedTuple):
    """Forward sensitivities integrated with the state (Gram space).

    Fields:
        codes: int64 (p,) PARAM_* codes of :mod:`ufm.kernels.tangent` (p = 0: none).
        directions: float64 (p, N, N) the direction D of a PARAM_COUPLING parameter (zeros
            otherwise). S: float64 (T or 0, p, n) the sensitivities dy/dθ at the save times.
    """

    codes: np.ndarray
    directions: np.ndarray
    S: np.ndarray
