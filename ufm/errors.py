"""Exceptions raised by the integrators."""

from __future__ import annotations


class IntegrationError(RuntimeError):
    """An integration or training run stopped before its last save time.

    Attributes:
        t: the time (or step, for discrete training) the integrator had reached.
        reason: ``"max_steps"``, ``"step_underflow"`` or ``"nonfinite"``.
        trajectory: the :class:`~ufm.trajectory.Trajectory` of every save time passed before
            the failure (possibly empty), so nothing computed is lost.
    """

    def __init__(self, message: str, *, t: float, reason: str, trajectory=None):
        super().__init__(message)
        self.t = t
        self.reason = reason
        self.trajectory = trajectory
