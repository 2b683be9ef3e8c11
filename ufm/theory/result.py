"""Containers shared by the theory results: a derived result and its numerical verification."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import sympy as sp

__all__ = ["Result", "Verification", "relative_error", "converge"]


@dataclass
class Verification:
    """Discrepancies between a derived result and the integrator.

    Every check is a number compared with a tolerance; the tolerances are part of the result
    (``tolerances``, printed next to each discrepancy) and were set from what the integrator
    achieves on the cases the producing function documents (a margin of a few times the
    measured value), so a prediction that is off by more than that fails.

    Attributes:
        name: what was checked.
        discrepancies: quantity -> measured discrepancy (relative unless said otherwise).
        tolerances: quantity -> largest acceptable discrepancy (every discrepancy needs one).
        details: anything else worth reporting (times, step counts, sizes).
    """

    name: str
    discrepancies: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def failures(self) -> list:
        """Names of the discrepancies that are not finite, exceed their tolerance or have none."""
        return [k for k, v in self.discrepancies.items()
                if k not in self.tolerances or not (np.isfinite(v) and v <= self.tolerances[k])]

    @property
    def ok(self) -> bool:
        """At least one check was made and every discrepancy is finite and within its tolerance."""
        return bool(self.discrepancies) and not self.failures

    def __str__(self) -> str:
        lines = [f"{self.name}: {'OK' if self.ok else 'MISMATCH'}"]
        if not self.discrepancies:
            lines.append("  (nothing was checked)")
        for k, v in self.discrepancies.items():
            tol = self.tolerances.get(k)
            lines.append(f"  {k:<34s} {v:10.3e}" + (f"  (tolerance {tol:.1e})" if tol is not None else "  (no tolerance)"))
        for k, v in self.details.items():
            lines.append(f"  {k:<34s} {v}")
        return "\n".join(lines)


@dataclass
class Result:
    """A derived result: sympy expressions, their values for a model, a condition, a check.

    Attributes:
        name: short name.
        expressions: name -> sympy expression in the model's symbols (ufm.theory.symbols).
        values: name -> numeric value (float or array) for ``model``.
        condition: sympy relational under which the result holds (existence), or None.
        exists: the condition evaluated for ``model`` (True when there is none).
        model: the :class:`ufm.UFM` the values refer to (None for purely symbolic results).
        notes: free text (normalisation, caveats).
    """

    name: str
    expressions: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    condition: Any = None
    exists: bool = True
    model: Any = None
    notes: str = ""
    _verify: Callable | None = field(default=None, repr=False)

    def verify(self, **kwargs) -> Verification:
        """Integrate the model with ``ufm.solve`` and report the discrepancy (see the
        producing function for the keyword arguments).

        The comparison is made against the numbers in ``self.values`` as they are when
        ``verify`` is called, so substituting a wrong value (a test of the check itself) makes
        the verification fail.
        """
        if self._verify is None:
            raise NotImplementedError(f"{self.name}: no numerical verification attached")
        return self._verify(**kwargs)

    def pretty(self) -> str:
        """Readable listing of the expressions (sympy pretty printing)."""
        lines = [f"== {self.name} =="]
        for k, e in self.expressions.items():
            lines.append(f"{k} =")
            lines.append(sp.pretty(e, use_unicode=True))
        if self.condition is not None:
            lines.append("holds iff:")
            lines.append(sp.pretty(self.condition, use_unicode=True))
        return "\n".join(lines)

    def latex(self) -> str:
        """The expressions as LaTeX, one ``name = ...`` per line."""
        out = [f"{_latex_name(k)} = {sp.latex(e)}" for k, e in self.expressions.items()]
        if self.condition is not None:
            out.append(r"\text{condition: } " + sp.latex(self.condition))
        return "\n".join(out)


def _latex_name(k: str) -> str:
    return r"\mathrm{" + k.replace("_", r"\_") + "}"


def relative_error(a, b) -> float:
    """max |a − b| / max |b| (entrywise, whole arrays)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    scale = np.abs(b).max()
    if scale == 0:
        return float(np.abs(a).max())
    return float(np.abs(a - b).max() / scale)


def converge(model, init, *, t_first: float = 10.0, t_max: float = 1e7, tol: float = 1e-10,
             rtol: float = 1e-11, atol: float = 1e-14):
    """Integrate ``model`` in Gram space from ``init`` until its Grams stop moving.

    Runs ``ufm.solve`` (space="gram") one decade of time at a time; after each decade it
    compares the last two saves (a factor 10^0.25 apart): converged when G_W, G_H and the
    logits changed by less than ``tol`` relative to their largest entries.

    Arguments:
        model: a :class:`ufm.UFM`. init: a State (mapped to its Grams) or a GramState.
        t_first: end of the first decade. t_max: give up after this time.
        tol: convergence threshold. rtol, atol: integrator tolerances.

    Returns:
        (final GramState, final time, largest relative change in the last step, converged).
    """
    import ufm
    from ..models import GramState
    names = ("gram_W", "gram_H", "logits") + (("b",) if model.bias else ())
    state, t0, t_end = init, 0.0, float(t_first)
    floor = None
    while True:
        lo = t_end / 10 if t0 == 0 else t0
        ts = np.geomspace(lo * 10 ** 0.25, t_end, 4)
        with warnings.catch_warnings():
            # chained states are the run's own (realisable) Grams; their low rank is expected
            warnings.simplefilter("ignore", UserWarning)
            tr = ufm.solve(model, state, ts, space="gram", rtol=rtol, atol=atol, t0=t0, save=names)
        if floor is None:
            # changes are measured relative to the current size, but not below 1e-3 of the
            # first size, so that a flow to the zero solution (which stalls at the atol noise level)
            # also counts as converged
            floor = 1e-3 * max(np.abs(tr.gram_W[0]).max(), np.abs(tr.gram_H[0]).max())
        change = max(np.abs(X[-1] - X[-2]).max() / max(np.abs(X[-1]).max(), floor)
                     for X in (tr.gram_W, tr.gram_H, tr.logits))
        b = tr.b[-1] if model.bias else None
        M = tr.logits[-1] - (b[:, None] if b is not None else 0.0)
        state = GramState(M, tr.gram_W[-1], tr.gram_H[-1], b)
        t0 = t_end
        if change < tol or t_end >= t_max:
            return state, t_end, change, change < tol
        t_end *= 10
