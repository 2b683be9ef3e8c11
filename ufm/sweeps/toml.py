"""The sweep file read by ``ufm sweep CONFIG.toml``.

Example::

    [sweep]
    t = {start = 1e-2, stop = 1e4, num = 40}   # log-spaced (spacing = "linear" for even steps,
                                               # zero = true to save t = 0 too), or a list
    rtol = 1e-8                                # any option of ufm.sweep: method, atol, space,
    save = ["gram_H"]                          # save, t0, dt, max_steps, h_max, threshold,
    out = "runs/lambda-beta"                   # chunk_size, threads; out is relative to this file

    [base]                                     # keys shared by every configuration
    setting = "factorial"
    levels = [3, 3]
    d = 32

    [grid]                                     # Cartesian product (first key slowest)
    lambda = [1e-2, 1e-3, 1e-4]
    beta = [0.0, 1.0]
    seed = [0, 1, 2, 3]

    [[configs]]                                # extra configurations, each merged over [base]
    lambda = 0.0
    beta = 1.0

Spec keys are those of :data:`ufm.sweeps.SPEC_KEYS`; TOML has no null, so
``label_permutation = "none"`` stands for None.
"""

from __future__ import annotations

import os
import tomllib

import numpy as np

from .specs import grid

__all__ = ["read_toml"]

_OPTIONS = {"method": str, "rtol": float, "atol": float, "space": str, "save": (str, list), "t0": float,
            "dt": float, "max_steps": int, "h_max": float, "threshold": float, "chunk_size": int,
            "threads": int, "retry_failed": bool}


def _times(value) -> np.ndarray:
    if isinstance(value, list):
        return np.array(value, dtype=np.float64)
    if not isinstance(value, dict):
        raise TypeError(f"sweep.t: expected a list of times or a table {{start, stop, num}}, got {value!r}")
    unknown = set(value) - {"start", "stop", "num", "spacing", "zero"}
    if unknown:
        raise ValueError(f"sweep.t: unknown key(s) {sorted(unknown)}; expected start, stop, num, spacing, zero")
    try:
        start, stop, num = float(value["start"]), float(value["stop"]), int(value["num"])
    except KeyError as exc:
        raise ValueError(f"sweep.t: missing {exc.args[0]!r} (expected start, stop, num)") from None
    spacing = value.get("spacing", "log")
    if spacing == "log":
        if not (0 < start < stop):
            raise ValueError(f"sweep.t: log spacing needs 0 < start < stop, got start = {start}, stop = {stop}")
        t = np.geomspace(start, stop, num)
    elif spacing == "linear":
        t = np.linspace(start, stop, num)
    else:
        raise ValueError(f"sweep.t.spacing: expected 'log' or 'linear', got {spacing!r}")
    if value.get("zero", False) and t[0] > 0:
        t = np.concatenate([[0.0], t])
    return t


def read_toml(path) -> dict:
    """Read a sweep file.

    Arguments:
        path: the TOML file (format in the module docstring).

    Returns:
        dict with ``configs`` (list of spec dicts), ``t`` ((T,) float array), ``options``
        (keyword arguments for :func:`ufm.sweep`) and ``out`` (absolute directory or None).

    Raises:
        ValueError: unreadable TOML, unknown sections or options, no save times (named).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config: {path!r} is not valid TOML: {exc}") from None
    unknown = set(doc) - {"sweep", "base", "grid", "configs"}
    if unknown:
        raise ValueError(f"config: unknown section(s) {sorted(unknown)} in {path!r}; expected [sweep], [base], "
                         "[grid], [[configs]]")
    sw = dict(doc.get("sweep", {}))
    if "t" not in sw:
        raise ValueError(f"sweep.t: {path!r} must give the save times in [sweep] "
                         "(t = [..] or t = {start = .., stop = .., num = ..})")
    t = _times(sw.pop("t"))
    out = sw.pop("out", None)
    if out is not None:
        out = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(out)))
    options = {}
    for key, value in sw.items():
        if key not in _OPTIONS:
            raise ValueError(f"sweep.{key}: unknown option; expected one of {sorted(_OPTIONS) + ['t', 'out']}")
        options[key] = value
    base = dict(doc.get("base", {}))
    configs = []
    if "grid" in doc:
        configs.extend(grid(dict(doc["grid"]), base=base))
    extra = doc.get("configs", [])
    if not isinstance(extra, list):
        raise ValueError("configs: expected an array of tables ([[configs]])")
    for c in extra:
        configs.append({**base, **c})
    if not configs:
        configs = [base]
    return {"configs": configs, "t": t, "options": options, "out": out}
