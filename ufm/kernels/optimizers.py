"""Numba discrete-time training maps: gradient descent, heavy-ball momentum, Adam, AdamW.

Real runs take finite steps; these maps let a logged run be compared with the optimiser it
actually used. They iterate the same packed vector field F as the ODE driver
(:func:`ufm.kernels.fields.vector_field`), so with ``g = −F``:

    gd        x ← x − lr·g                                  (Euler with step lr, bit for bit)
    momentum  v ← μ v + g;  x ← x − lr·v                    (PyTorch SGD, dampening 0)
              nesterov: x ← x − lr·(g + μ v)
    adam      m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
              x ← x − r ⊙ m̂ / (√v̂ + ε),  m̂ = m/(1−β₁ᵏ), v̂ = v/(1−β₂ᵏ)
    adamw     x ← x − r ⊙ ω ⊙ x, then the adam update on the decay-free gradient

For gd and momentum F carries the per-block rates η (so lr·η is the step of each block); Adam
is invariant to the gradient's scale, so there F is computed with η = 1 and the rates enter
through the per-entry step r = lr·η_block. ω holds each entry's decoupled decay λ_block.
The coupling piece at step k is the one in force at ODE time t = k·lr.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .fields import IP_NTHETA, record, theta_piece, vector_field, work_size
from .integrate import DIVERGED, STATUS_NONFINITE, STATUS_OK

OPT_GD = 0
OPT_MOMENTUM = 1
OPT_ADAM = 2
OPT_ADAMW = 3

H_MU = 0
H_NESTEROV = 1
H_BETA1 = 2
H_BETA2 = 3
H_EPS = 4
H_SIZE = 5



@njit(cache=True)
def train(y, buf1, buf2, step0, save_steps, opt, model, model_record, out):
    """Run the optimiser from step ``step0`` through ``save_steps[-1]``, recording at save steps.

    Arguments:
        y: (n,) parameters, updated in place.
        buf1, buf2: (n,) optimiser memory (momentum buffer; Adam's m and v), updated in place.
        step0: the step count of ``y`` (0 at initialisation).
        save_steps: (T,) strictly increasing step counts >= step0.
        opt: :class:`~ufm.kernels.groups.Optimizer` (kind, lr, per-entry rate and decay, hyper).
        model: :class:`~ufm.kernels.groups.Model` of the update direction (module docstring).
        model_record: the same model with the coefficients of the recorded objective.
        out: :class:`~ufm.kernels.groups.Outputs`.

    Returns:
        (status, j, step): STATUS_OK or STATUS_NONFINITE, saves written, last step reached.
    """
    n = y.shape[0]
    F = np.empty(n)
    work = np.empty(work_size(model))
    j = 0
    T = save_steps.shape[0]
    step = step0
    kind = opt.kind
    lr = opt.lr
    rate = opt.rate
    decay = opt.decay
    hyper = opt.hyper
    mu = hyper[H_MU]
    nesterov = hyper[H_NESTEROV] != 0.0
    b1 = hyper[H_BETA1]
    b2 = hyper[H_BETA2]
    eps = hyper[H_EPS]
    b1k = 1.0
    b2k = 1.0
    for _ in range(step0):
        b1k *= b1
        b2k *= b2
    coupled = model.ip[IP_NTHETA] > 0
    while True:
        t = step * lr
        while j < T and save_steps[j] == step:
            record(j, t, y, model_record, out, work)
            j += 1
        if j >= T:
            break
        p = theta_piece(model.theta_t, t) if coupled else 0
        vector_field(p, y, F, model, work)
        if kind == OPT_GD:
            for m in range(n):
                y[m] = y[m] + lr * F[m]
        elif kind == OPT_MOMENTUM:
            for m in range(n):
                g = -F[m]
                if step == 0:
                    buf1[m] = g
                else:
                    buf1[m] = mu * buf1[m] + g
                if nesterov:
                    y[m] = y[m] - lr * (g + mu * buf1[m])
                else:
                    y[m] = y[m] - lr * buf1[m]
        else:
            b1k *= b1
            b2k *= b2
            for m in range(n):
                g = -F[m]
                buf1[m] = b1 * buf1[m] + (1.0 - b1) * g
                buf2[m] = b2 * buf2[m] + (1.0 - b2) * g * g
                if kind == OPT_ADAMW:
                    y[m] = y[m] - rate[m] * decay[m] * y[m]
                mhat = buf1[m] / (1.0 - b1k)
                vhat = buf2[m] / (1.0 - b2k)
                y[m] = y[m] - rate[m] * mhat / (np.sqrt(vhat) + eps)
        step += 1
        for m in range(n):
            if not (abs(y[m]) <= DIVERGED):
                return STATUS_NONFINITE, j, step
    return STATUS_OK, j, step
