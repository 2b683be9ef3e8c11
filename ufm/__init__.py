"""ufm — dynamics of unconstrained-features models.

Integrate the standard and coupled UFM in parameter space or in the exact width-free Gram
space (:func:`solve`), run the discrete optimisers real training uses (:func:`train`), and
measure the geometry (:mod:`ufm.metrics`). See docs/model.md for conventions: W is K×d, H is
d×N (one column per context), Z = WH + b1ᵀ is K×N.
"""

# first of all: numba's cache for ufm's kernels goes to a per-user folder, never into the
# installed package (see ufm/_numba_cache.py); this must precede every kernel import
from . import _numba_cache

_numba_cache.install()

from . import metrics, settings, solvers  # noqa: E402
from .errors import IntegrationError  # noqa: E402
from .models import UFM, GramState, PiecewiseCoupling, State  # noqa: E402
from .deep import DeepState, DeepUFM  # noqa: E402
from .problems import Problem  # noqa: E402
from .integration import solve  # noqa: E402
from .training import train  # noqa: E402
from .trajectory import Trajectory  # noqa: E402

__version__ = "0.1.0"

# Heavier subpackages load on first use: `ufm.bridge.load(...)` works after `import ufm`
# without making `import ufm` pay for scipy.optimize, sympy or matplotlib.
_LAZY = {"bridge", "theory", "plot", "sweeps", "rosenbrock", "sensitivity"}
_LAZY_NAMES = {"sweep": "sweeps", "SweepResult": "sweeps", "sensitivities": "sensitivity",
               "Sensitivities": "sensitivity"}


def __getattr__(name):
    import importlib
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'ufm' has no attribute {name!r}")

__all__ = ["Problem", "UFM", "DeepUFM", "DeepState", "State", "GramState", "PiecewiseCoupling", "solve", "train",
           "sweep", "SweepResult", "sensitivities", "Sensitivities", "Trajectory", "IntegrationError", "metrics",
           "settings", "solvers", "__version__"]
