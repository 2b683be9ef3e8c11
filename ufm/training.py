"""``ufm.train``: the discrete optimisers real runs use, on the same vector field as the ODE."""

from __future__ import annotations

import warnings

import numpy as np

from . import engine
from ._validation import as_int_array, as_nonnegative, as_positive, as_positive_int, as_real, check_choice, is_sequence
from .errors import IntegrationError
from .kernels import optimizers as _o
from .models import UFM, State
from .trajectory import Trajectory

__all__ = ["train", "default_save_steps"]

OPTIMIZERS = {"gd": _o.OPT_GD, "momentum": _o.OPT_MOMENTUM, "adam": _o.OPT_ADAM, "adamw": _o.OPT_ADAMW}


def default_save_steps(steps: int, count: int = 60) -> np.ndarray:
    """Step 0 and about ``count`` log-spaced steps up to ``steps`` (unique integers)."""
    if steps == 0:
        return np.zeros(1, dtype=np.int64)
    return np.unique(np.concatenate([[0], np.geomspace(1, steps, count).round().astype(np.int64)]))


def _betas(betas) -> tuple[float, float]:
    """Adam's (β₁, β₂): exactly two real numbers."""
    if not is_sequence(betas) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise TypeError(f"betas: expected a pair (β₁, β₂) of numbers in [0, 1), got {betas!r}")
    try:
        return tuple(as_real(b, "betas") for b in betas)
    except TypeError:
        raise TypeError(f"betas: expected a pair (β₁, β₂) of numbers in [0, 1), got {betas!r}") from None


def train(model: UFM, init: State, steps: int, lr: float, optimizer: str = "gd", *,
          momentum: float = 0.9, nesterov: bool = False, betas=(0.9, 0.999), eps: float = 1e-8,
          save_steps=None, save=("gram_W", "gram_H", "logits")) -> Trajectory:
    """Run ``steps`` steps of a discrete optimiser on the model's vector field.

    With F the flow's right-hand side (``UFM.vector_field``) and g = −F:

    * ``"gd"``: x ← x + lr·F(x) — bit for bit the Euler method with step lr;
    * ``"momentum"``: PyTorch heavy ball, v ← μv + g, x ← x − lr·v (``nesterov=True``:
      x ← x − lr·(g + μv));
    * ``"adam"``: Adam with bias correction on g computed with η = 1; block rates enter as the
      per-block step lr·η (Adam is invariant to the gradient's scale);
    * ``"adamw"``: decoupled decay — x ← x − lr·η·λ·x with the model's λ for each block
      (λ_H + λ_E for H), then Adam on the decay-free gradient.

    The ODE time of step k is t = lr·k (``trajectory.t``); the coupling piece in force at
    step k is the one at that time.

    Arguments:
        model: a :class:`~ufm.models.UFM`.
        init: a parameter-space :class:`~ufm.models.State`.
        steps: number of steps, >= 0.
        lr: learning rate, > 0.
        optimizer: ``"gd"``, ``"momentum"``, ``"adam"`` or ``"adamw"``.
        momentum: μ in [0, 1).
        nesterov: Nesterov momentum.
        betas: (β₁, β₂) in [0, 1).
        eps: Adam's ε > 0.
        save_steps: (T,) strictly increasing step counts in [0, steps]; default step 0 and ~60
            log-spaced steps up to ``steps``. The final step ``steps`` is always saved (appended
            when missing), so the run always reaches it.
        save: as in :func:`ufm.solve` (``"W"``, ``"H"``, ``"b"``, ``"gram_W"``, ``"gram_H"``,
            ``"logits"``, or ``"all"``).

    Returns:
        A :class:`~ufm.trajectory.Trajectory` with ``steps`` and ``t = lr·steps``.

    Warns:
        UserWarning: the objective ended higher than it started (a learning rate too large
            for the optimiser: Adam's bounded steps oscillate instead of diverging).

    Raises:
        TypeError / ValueError: a bad argument (named).
        IntegrationError: parameters became non-finite (or > 1e60), or the start already is;
            ``err.t`` is the ODE time ``lr · step`` (the trajectory's time axis), ``err.step``
            the step, ``err.trajectory`` holds the saves before it.
    """
    if not isinstance(model, UFM):
        raise TypeError(f"model: expected a ufm.UFM, got {type(model).__name__}")
    if not isinstance(init, State):
        raise TypeError(f"init: expected a parameter-space ufm.State, got {type(init).__name__}")
    steps = as_positive_int(steps, "steps", minimum=0)
    if steps >= 2 ** 62:                     # the kernels count steps in int64
        raise ValueError(f"steps: expected fewer than 2^62 steps, got {steps:.3g}")
    lr = as_positive(lr, "lr")
    check_choice(optimizer, "optimizer", tuple(OPTIMIZERS))
    mu = as_nonnegative(momentum, "momentum")
    if mu >= 1 and optimizer == "momentum":
        raise ValueError(f"momentum: expected a value in [0, 1), got {mu}")
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov: expected True or False, got {nesterov!r}")
    b1, b2 = _betas(betas)
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"betas: expected values in [0, 1), got {betas!r}")
    eps = as_positive(eps, "eps")
    if save_steps is None:
        save_steps = default_save_steps(steps)
    else:
        save_steps = as_int_array(save_steps, "save_steps", ndim=1)
        if save_steps.size == 0 or np.any(np.diff(save_steps) <= 0):
            raise ValueError("save_steps: expected a non-empty, strictly increasing array of steps")
        if save_steps[0] < 0 or save_steps[-1] > steps:
            raise ValueError(f"save_steps: expected steps in [0, {steps}], got [{save_steps[0]}, {save_steps[-1]}]")
        if save_steps[-1] < steps:  # the run goes to ``steps``: its final state is always kept
            save_steps = np.append(save_steps, steps)
    names = engine.parse_save(save, "parameters")

    y, d = engine.initial_vector(model, init, "parameters")
    kind = OPTIMIZERS[optimizer]
    packed = engine.pack_model(model, "parameters", d)
    packed_record = packed                      # the objective is always the model's own
    K, N = model.K, model.N
    sizes = (K * d, d * N, K if model.bias else 0)
    rate = np.full(y.size, lr)
    decay = np.zeros(y.size)
    if kind in (_o.OPT_ADAM, _o.OPT_ADAMW):
        # Adam is invariant to the gradient's scale: the field is taken with unit rates and the
        # block rates enter through the per-entry step; AdamW also takes the decay out of the
        # field and applies it decoupled.
        etas = (model.lr_W, model.lr_H, model.lr_b)
        rate = np.repeat([lr * e for e in etas], sizes)
        coef = packed.coef.copy()
        coef[:3] = 1.0
        if kind == _o.OPT_ADAMW:
            lams = (model.lambda_W, model.lambda_H + model.lambda_E, model.lambda_b)
            decay = np.repeat(lams, sizes).astype(np.float64)
            coef[3:] = 0.0
        packed = packed._replace(coef=coef)
    hyper = np.zeros(_o.H_SIZE)
    hyper[_o.H_MU] = mu
    hyper[_o.H_NESTEROV] = float(bool(nesterov))
    hyper[_o.H_BETA1], hyper[_o.H_BETA2], hyper[_o.H_EPS] = b1, b2, eps
    buffers = engine.SaveBuffers(len(save_steps), y.size, K, N, d, model.bias, names, times="save_steps")
    opt = engine.optimizer_group(kind, lr, rate, decay, hyper)
    status, j, reached, wall = engine.run_optimizer(y, 0, save_steps, opt, packed, packed_record, buffers)
    info = {"optimizer": optimizer, "lr": lr, "momentum": mu, "nesterov": bool(nesterov),
            "betas": [b1, b2], "eps": eps, "steps": steps, "d": d, "space": "parameters",
            "wall_time_s": wall, "model": model.describe()}
    traj = Trajectory(t=lr * save_steps[:j].astype(np.float64), steps=save_steps[:j].copy(), **buffers.fields(j),
                      problem=model.problem, model=model, info=info)
    if status != _o.STATUS_OK:
        raise IntegrationError(
            f"training diverged at step {reached} (t = {lr * reached:.6g}): the parameters became non-finite "
            f"or exceeded 1e60; lower lr. The {j} saves before it are in err.trajectory.",
            t=float(lr * reached), step=int(reached), reason="nonfinite", trajectory=traj)
    _warn_if_objective_rose(model, init, traj, optimizer, lr)
    return traj


def _warn_if_objective_rose(model, init, traj, optimizer, lr) -> None:
    """Gradient methods at a workable rate lower the objective; one that ends above its start
    ran at a rate too large (Adam's steps are bounded by lr, so it oscillates at a high loss
    rather than overflowing into an IntegrationError)."""
    if not len(traj):
        return
    start = traj.loss[0] if traj.steps[0] == 0 else model.loss(init)
    end = traj.loss[-1]
    if end > start * (1 + 1e-9) + 1e-300:
        warnings.warn(f"train: the objective rose from {start:.4g} at step 0 to {end:.4g} at step "
                      f"{int(traj.steps[-1])} ({optimizer}, lr = {lr:g}): the learning rate is probably too large "
                      "for this problem; lower lr", UserWarning, stacklevel=3)
