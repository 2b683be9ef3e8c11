"""Problem specs: the one plain-value description of a synthetic problem.

A *problem spec* is a small dict of JSON/TOML values naming a setting of :mod:`ufm.settings`
and its arguments, e.g. ``{"setting": "factorial", "levels": [3, 3]}``. ``ufm run``'s
``[[settings]]`` tables and the sweep specs of :mod:`ufm.sweeps` both use it, so a setting
written for one works in the other, is validated by the same code and builds the same
:class:`~ufm.problems.Problem`.

================  ==========================================================================
setting           keys (defaults)
================  ==========================================================================
``factorial``     ``levels`` (required), ``samples_per_context`` (1),
                  ``label_permutation`` (None or "random"), ``label_seed`` (0)
``hierarchy``     ``branching``, ``depth`` (required), ``samples_per_context`` (1),
                  ``label_permutation`` (None), ``label_seed`` (0)
``sequences``     ``classes`` ([2, 2]), ``tokens_per_class`` (2), ``labels`` ("unique" or
                  "soft"), ``support`` (2), ``n_contexts`` (None: all), ``subset_seed`` (0)
``balanced``      ``K`` (required), ``n`` (1)
================  ==========================================================================

The normal form (:func:`normalise_problem`) holds ``setting`` and every key of that setting
with its default filled in, as plain ints, lists and strings: two specs that describe the same
problem have the same normal form (sweeps hash it).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np

from .problems import Problem

__all__ = ["SETTINGS", "PROBLEM_KEYS", "normalise_problem", "build_problem", "problem_keys"]

_REQUIRED = object()

#: setting -> {key: default}; a key without a default is required
_SETTING_KEYS: dict[str, dict] = {
    "factorial": {"levels": _REQUIRED, "samples_per_context": 1, "label_permutation": None, "label_seed": 0},
    "hierarchy": {"branching": _REQUIRED, "depth": _REQUIRED, "samples_per_context": 1,
                  "label_permutation": None, "label_seed": 0},
    "sequences": {"classes": [2, 2], "tokens_per_class": 2, "labels": "unique", "support": 2,
                  "n_contexts": None, "subset_seed": 0},
    "balanced": {"K": _REQUIRED, "n": 1},
}

SETTINGS = tuple(_SETTING_KEYS)

#: every key a problem spec may hold, with its meaning
PROBLEM_KEYS = {
    "setting": f"synthetic setting: one of {', '.join(map(repr, SETTINGS))} (required)",
    "levels": "factorial: values per attribute, e.g. [3, 3] (required)",
    "branching": "hierarchy: children per node (required)",
    "depth": "hierarchy: levels below the root (required)",
    "classes": "sequences: latent classes per position (default [2, 2])",
    "tokens_per_class": "sequences: tokens in each latent class (default 2)",
    "labels": "sequences: 'unique' (one-hot, K = N) or 'soft' (default 'unique')",
    "support": "sequences with soft labels: tokens per class combination (default 2)",
    "n_contexts": "sequences: a random subset of this many contexts (default: all)",
    "subset_seed": "sequences: seed of the random subset (default 0)",
    "K": "balanced: number of classes (required)",
    "n": "balanced: samples per class (default 1)",
    "samples_per_context": "factorial/hierarchy: samples per context (default 1)",
    "label_permutation": "factorial/hierarchy: None or 'random' (default None)",
    "label_seed": "factorial/hierarchy: seed of the random label permutation (default 0)",
}

_INT_LIST_KEYS = ("levels", "classes")
_STRING_KEYS = {"labels": ("unique", "soft")}


def problem_keys(setting: str) -> tuple[str, ...]:
    """The keys of one setting (``setting`` itself excluded), in a fixed order."""
    return tuple(_SETTING_KEYS[setting])


def _int(value, key: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise TypeError(f"{key}: expected an integer, got {value!r}")
    if not math.isfinite(float(value)) or float(value) != int(value):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _int_list(value, key: str) -> list[int]:
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{key}: expected a list of integers, got {value!r}")
    out = [_int(q, key, 2) for q in value]
    if not out:
        raise ValueError(f"{key}: expected at least one integer, got {value!r}")
    return out


def normalise_problem(spec: dict, *, other_keys=()) -> dict:
    """The normal form of the problem part of ``spec``.

    Arguments:
        spec: a dict with ``setting`` and that setting's keys (see the table in the module
            docstring). Keys named in ``other_keys`` belong to the caller (a sweep's model
            keys, ``ufm run``'s ``name``) and are skipped.
        other_keys: iterable of key names that are not problem keys but are allowed.

    Returns:
        A new dict: ``setting`` and every key of that setting, defaults filled in, sorted.

    Raises:
        TypeError: ``spec`` is not a dict, or a value of the wrong type (named).
        ValueError: a missing or unknown setting, a key of another setting, an unknown key, a
            missing required key, or a bad value (each named).
    """
    if not isinstance(spec, dict):
        raise TypeError(f"spec: expected a dict, got {type(spec).__name__}")
    setting = spec.get("setting")
    if setting is None and "kind" in spec:
        raise ValueError(f"kind: the key is called 'setting' (setting = {spec['kind']!r})")
    if not isinstance(setting, str) or setting not in _SETTING_KEYS:
        raise ValueError(f"setting: expected one of {list(SETTINGS)}, got {setting!r}")
    own = _SETTING_KEYS[setting]
    other_keys = set(other_keys)
    foreign = sorted(k for k in spec if k in PROBLEM_KEYS and k != "setting" and k not in own)
    if foreign:
        raise ValueError(f"spec: key(s) {foreign} do not apply to setting {setting!r} (it takes {sorted(own)})")
    unknown = sorted(k for k in spec if k not in PROBLEM_KEYS and k not in other_keys)
    if unknown:
        raise ValueError(f"spec: unknown key(s) {unknown}; setting {setting!r} takes {sorted(own)}")
    out: dict = {"setting": setting}
    for key, default in own.items():
        if key not in spec:
            if default is _REQUIRED:
                raise ValueError(f"{key}: required by setting {setting!r} ({PROBLEM_KEYS[key].split(': ', 1)[1]})")
            out[key] = list(default) if isinstance(default, list) else default
            continue
        value = spec[key]
        if key in _INT_LIST_KEYS:
            out[key] = _int_list(value, key)
        elif key == "label_permutation":
            if value not in (None, "random", "none"):
                raise ValueError(f"label_permutation: expected None or 'random', got {value!r}")
            out[key] = None if value in (None, "none") else "random"
        elif key in _STRING_KEYS:
            if not isinstance(value, str) or value not in _STRING_KEYS[key]:
                raise ValueError(f"{key}: expected one of {list(_STRING_KEYS[key])}, got {value!r}")
            out[key] = value
        elif key == "n_contexts":
            out[key] = None if value is None else _int(value, key, 2)
        else:
            minimum = {"branching": 2, "depth": 1, "K": 2, "label_seed": 0, "subset_seed": 0}.get(key, 1)
            out[key] = _int(value, key, minimum)
    return dict(sorted(out.items()))


@lru_cache(maxsize=64)
def _build(key: str) -> Problem:
    from . import settings
    p = json.loads(key)
    setting = p.pop("setting")
    if setting == "factorial":
        return settings.factorial(p["levels"], samples_per_context=p["samples_per_context"],
                                  label_permutation=p["label_permutation"], seed=p["label_seed"])
    if setting == "hierarchy":
        return settings.hierarchy(p["branching"], p["depth"], samples_per_context=p["samples_per_context"],
                                  label_permutation=p["label_permutation"], seed=p["label_seed"])
    if setting == "sequences":
        return settings.sequences(p["classes"], p["tokens_per_class"], labels=p["labels"], support=p["support"],
                                  n_contexts=p["n_contexts"], seed=p["subset_seed"])
    return settings.balanced(p["K"], p["n"])


def build_problem(spec: dict, *, other_keys=()) -> Problem:
    """The :class:`~ufm.problems.Problem` a problem spec describes (built once per process).

    Arguments:
        spec: a problem spec, normalised or not; ``other_keys`` as in :func:`normalise_problem`.

    Returns:
        The problem (shared between calls with the same normal form: treat it as read-only).

    Raises:
        TypeError / ValueError: as :func:`normalise_problem` and the setting's constructor.
    """
    norm = normalise_problem(spec, other_keys=other_keys)
    return _build(json.dumps(norm, sort_keys=True))
