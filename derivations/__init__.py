"""Derivations: one module per analytic result, each with ``run() -> int``.

``run()`` prints the derived result (pretty and LaTeX), checks it symbolically and against
the integrator, and returns 0 when every check passes (non-zero otherwise). This folder is the
repository's top-level ``derivations/``, installed as ``ufm.theory.derivations`` (see
pyproject.toml); ``ufm derive NAME`` calls :func:`main`, and ``python derivations/NAME.py``
runs one directly.
"""

from __future__ import annotations

import importlib

__all__ = ["REGISTRY", "names", "describe", "main"]

#: name -> one-line description
REGISTRY = {
    "etf_spectra": "simplex ETF and scheme spectra from the eigenmatrix; population NC1",
    "mse_fixed_point": "regularised MSE minimiser (no bias, bias, imbalanced) via the class-level problem",
    "ce_fixed_point": "regularised CE minimiser (Zhu et al.) from the ETF ansatz; coupled UFM and bias",
    "max_margin": "unregularised CE: max-margin direction, margin ODE on the symmetric manifold, SELI",
    "hessian_spectrum": "linearisation at the MSE and CE minimisers by symmetry sector",
    "saxe_modes": "Saxe modes, the UFM mode ODE, the balance law and the Riccati closed form",
    "scheme_reduction_factorial": "exact reduced ODE for factorial schemes vs the Gram-space ODE; width study",
    "scheme_reduction_hierarchy": "exact reduced ODE for the hierarchy scheme; linearisation rates",
    "coupled_early_growth": "coupled UFM: early growth rates, order of modes, time of the semantic peak",
    "coupled_collapse_rate": "coupled UFM: asymptotic collapse rate near the ETF and its scaling",
    "ntp_support_geometry": "NTP: centred support matrix, KKT check, max-margin geometry, early order",
}


def names() -> list[str]:
    return list(REGISTRY)


def describe(name: str) -> str:
    return REGISTRY[name]


def main(name: str) -> int:
    """Run one derivation by name; returns its exit code.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown derivation {name!r}; known: {', '.join(REGISTRY)}")
    mod = importlib.import_module(f"{__name__}.{name}")
    return int(mod.run())
