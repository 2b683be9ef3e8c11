"""ufm — dynamics of unconstrained-features models.

Integrate the standard and coupled UFM in parameter space or in the exact width-free Gram
space (:func:`solve`), run the discrete optimisers real training uses (:func:`train`), and
measure the geometry (:mod:`ufm.metrics`). See DESIGN.md for conventions: W is K×d, H is
d×N (one column per context), Z = WH + b1ᵀ is K×N.
"""

from . import metrics, settings, solvers
from .errors import IntegrationError
from .models import UFM, GramState, PiecewiseCoupling, State
from .problems import Problem
from .solving import solve
from .training import train
from .trajectory import Trajectory

__version__ = "0.1.0"

__all__ = ["Problem", "UFM", "State", "GramState", "PiecewiseCoupling", "solve", "train",
           "Trajectory", "IntegrationError", "metrics", "settings", "solvers", "__version__"]
