"""Exceptions raised by the integrators."""

from __future__ import annotations


class IntegrationError(RuntimeError):
    """An integration or training run stopped before its last save time.

    Attributes:
        t: the ODE time the integrator had reached (for discrete training ``lr · step``, the
            time axis of its trajectory).
        reason: ``"max_steps"``, ``"step_underflow"``, ``"nonfinite"``, ``"stiff"`` (an explicit method
            held at its stability limit) or ``"singular"`` (a Rosenbrock matrix).
        trajectory: the :class:`~ufm.trajectory.Trajectory` of every save time passed before
            the failure (possibly empty), so nothing computed is lost.
        step: for discrete training, the optimiser step at which it failed; else None.
    """

    def __init__(self, message: str, *, t: float, reason: str, trajectory=None, step: int | None = None):
        super().__init__(message)
        self.t = t
        self.reason = reason
        self.trajectory = trajectory
        self.step = step
