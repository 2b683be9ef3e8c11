"""ufm.theory — symbolic derivations (sympy) confirmed by the integrators.

Everything here derives a result from the model's equations — stationarity of the loss on a
symmetric ansatz, the structure constants and eigenmatrix of an association scheme, the
linearised flow — exposes it as sympy expressions in the model's symbols
(:mod:`ufm.theory.symbols`), evaluates it for a concrete :class:`ufm.UFM`, and carries a
``verify()`` that integrates the model with :func:`ufm.solve` and reports the discrepancy.

Main entry points:

* :func:`symbolic` — loss and vector field on the scheme's ansatz;
* :func:`fixed_point`, :func:`max_margin`, :func:`seli` — closed-form fixed points and
  λ → 0 directions;
* :func:`spectrum`, :func:`jacobian_spectrum`, :func:`gram_spectrum` — spectra by symmetry;
* :func:`reduce` — the exact reduced ODE on relation coefficients (sympy derives it; the engine's
  ``space="reduced"`` integrates it);
* closed-form trajectories: :func:`saxe_modes`, :func:`ufm_mode`, :func:`riccati`,
  :func:`ce_margin`;
* coupled UFM: :func:`early_growth`, :func:`semantic_peak`, :func:`collapse`;
* next-token prediction: :func:`support_geometry`;
* deep-backbone UFM: :func:`deep_collapse` (ETF vs the low-rank cross-polytope),
  :func:`balanced_regulariser` (decay on every factor = n × Schatten-2/n quasi-norm).

The derivation scripts (``ufm derive --list``) print and check each result.
"""

from . import symbols
from .deep import balanced_regulariser, deep_collapse
from .closed_forms import ce_margin, riccati, saxe_modes, ufm_mode
from .early_time import collapse, early_growth, semantic_peak
from .fixed_points import fixed_point, max_margin, seli
from .ntp import support_geometry
from .reduce import reduce, symbolic
from .result import Result, Verification
from .scheme import bind
from .spectra import gram_spectrum, jacobian_spectrum, spectrum

__all__ = ["symbols", "symbolic", "fixed_point", "max_margin", "seli", "spectrum", "gram_spectrum",
           "jacobian_spectrum", "reduce", "saxe_modes", "ufm_mode", "riccati", "ce_margin", "early_growth",
           "semantic_peak", "collapse", "support_geometry", "deep_collapse", "balanced_regulariser", "bind", "Result", "Verification"]
