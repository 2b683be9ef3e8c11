"""Sweeps: many UFM trajectories at once — in parallel threads, on an executor (a process
pool, a Dask cluster), resumable from a directory of per-configuration records.

>>> import numpy as np, ufm
>>> from ufm.sweeps import sweep, grid
>>> configs = grid({"lambda": [1e-2, 1e-3], "beta": [0.0, 1.0], "seed": range(4)},
...                base={"setting": "factorial", "levels": [3, 3], "d": 32, "scale": 1e-3})
>>> res = sweep(configs, np.geomspace(1e-2, 1e4, 40), out="runs/lambda-beta")   # doctest: +SKIP
>>> res.to_array()["t_collapse"]                                                  # doctest: +SKIP
>>> res.trajectory(0).metric("semantic_gap")                                      # doctest: +SKIP

Public API: :func:`sweep`, :class:`SweepResult` (and :func:`load` for a directory),
:class:`SweepIncomplete`, :func:`grid`, :func:`build` (the (model, init) of a spec),
:func:`config_hash`, :data:`SPEC_KEYS`, :func:`read_toml` (the ``ufm sweep`` file format).
"""

from .core import SweepIncomplete, SweepResult, config_hash, load, sweep
from .specs import SPEC_KEYS, SETTINGS, build, grid, normalise_spec
from .toml import read_toml

__all__ = ["sweep", "SweepResult", "SweepIncomplete", "load", "config_hash", "grid", "build",
           "normalise_spec", "SPEC_KEYS", "SETTINGS", "read_toml"]
