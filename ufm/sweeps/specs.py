"""Sweep configurations: declarative specs, explicit (model, init) pairs, hashing, grids.

A *configuration* is one trajectory of a sweep. It is given either as

* a **spec**: a small dict of plain values (JSON/TOML-friendly) naming a synthetic setting,
  the model's parameters and the random initial state, e.g.
  ``{"setting": "factorial", "levels": [3, 3], "lambda": 1e-3, "beta": 1.0, "d": 32,
  "scale": 1e-3, "seed": 0}`` (keys in :data:`SPEC_KEYS`); or
* an explicit pair ``(model, init)``: a :class:`~ufm.models.UFM` and a
  :class:`~ufm.models.State` / :class:`~ufm.models.GramState`.

Either form is reduced to a *payload* of plain values and numpy arrays (picklable, so it can
be shipped to a process pool or a Dask cluster) and hashed: the hash is the sha256 of a
canonical JSON document holding the normalised spec (or the model's parameters) with every
array replaced by its dtype, shape and the sha256 of its bytes, together with the run
options that change the stored trajectory (save times, method, tolerances, t0, dt,
max_steps, h_max, space, saved quantities; see :func:`ufm.sweeps.config_hash`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math

import numpy as np

from ..models import UFM, GramState, PiecewiseCoupling, State
from ..problems import Problem
from ..problem_specs import PROBLEM_KEYS, SETTINGS, build_problem, normalise_problem

__all__ = ["SPEC_KEYS", "SETTINGS", "normalise_spec", "build", "grid", "canonical_json", "digest"]

#: Every key a spec may hold, with its meaning. Unknown keys are an error (typos would
#: otherwise silently run the default).
SPEC_KEYS = {
    **PROBLEM_KEYS,
    "loss": "'ce' or 'mse' (default 'ce')",
    "lambda": "shorthand: lambda_W = lambda_H = lambda",
    "lambda_W": "decay of W (default 0)",
    "lambda_H": "decay of H (default 0)",
    "lambda_E": "linear-features decay (default 0)",
    "bias": "logits carry a bias (default False)",
    "lambda_b": "decay of the bias (default 0)",
    "beta": "coupling strength β: Θ = I + β²·S; 0 is the standard UFM (default 0)",
    "similarity": "similarity S of the coupling Θ = I + β²·S (default 'attribute')",
    "lr_W": "rate η_W (default 1)",
    "lr_H": "rate η_H (default 1)",
    "lr_b": "rate η_b (default 1)",
    "d": "width of the random initial state (required)",
    "scale": "init scale: rms norm of rows of W and columns of H (default 1e-3)",
    "seed": "seed of the random initial state (default 0)",
    "space": "'parameters' or 'gram' (default: the sweep's space=)",
}
_MODEL_KEYS = tuple(k for k in SPEC_KEYS if k not in PROBLEM_KEYS)
_FLOAT_KEYS = ("lambda_W", "lambda_H", "lambda_E", "lambda_b", "beta", "lr_W", "lr_H", "lr_b", "scale")
_INT_KEYS = ("branching", "depth", "K", "n", "samples_per_context", "label_seed", "d", "seed")
_MODEL_DEFAULTS = {"loss": "ce", "lambda_W": 0.0, "lambda_H": 0.0, "lambda_E": 0.0, "bias": False,
                   "lambda_b": 0.0, "beta": 0.0, "similarity": "attribute", "lr_W": 1.0, "lr_H": 1.0,
                   "lr_b": 1.0, "scale": 1e-3, "seed": 0}


def _as_int(value, key: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise TypeError(f"{key}: expected an integer, got {value!r}")
    if float(value) != int(value):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    return int(value)


def _as_float(value, key: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise TypeError(f"{key}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number, got {value!r}")
    return value


def normalise_spec(spec: dict, *, space: str | None = None) -> dict:
    """The canonical form of a spec: known keys only, defaults filled in, plain types.

    ``lambda`` is expanded into ``lambda_W`` and ``lambda_H`` (an explicit ``lambda_W`` or
    ``lambda_H`` wins), numbers become ``int`` or ``float``, ``levels`` a list of ints, and
    ``space`` the sweep's default when the spec does not set it. Two specs that describe the
    same run have the same normal form, hence the same hash.

    Arguments:
        spec: a dict with keys from :data:`SPEC_KEYS`.
        space: the sweep's default space (``"parameters"`` or ``"gram"``).

    Returns:
        A new dict, sorted by key.

    Raises:
        TypeError: ``spec`` is not a dict, or a value of the wrong type (named).
        ValueError: an unknown key, a missing required key, an unknown setting (named).
    """
    if not isinstance(spec, dict):
        raise TypeError(f"config: expected a spec dict or a (model, init) pair, got {type(spec).__name__}")
    if "kernel" in spec:
        raise ValueError(f"kernel: the key is called 'similarity' (similarity = {spec['kernel']!r})")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"config: unknown key(s) {unknown}; a spec takes {sorted(SPEC_KEYS)}")
    try:
        out = normalise_problem(spec, other_keys=_MODEL_KEYS)
    except ValueError as exc:
        if str(exc).startswith("spec: "):
            raise ValueError("config: " + str(exc)[len("spec: "):]) from None
        raise

    out.update(_MODEL_DEFAULTS)
    if "lambda" in spec:
        lam = _as_float(spec["lambda"], "lambda")
        out["lambda_W"] = out["lambda_H"] = lam
    for key in _FLOAT_KEYS:
        if key in spec:
            out[key] = _as_float(spec[key], key)
    for key in ("loss", "similarity"):
        if key in spec:
            if not isinstance(spec[key], str):
                raise TypeError(f"{key}: expected a string, got {spec[key]!r}")
            out[key] = spec[key]
    if "bias" in spec:
        if not isinstance(spec["bias"], (bool, np.bool_)):
            raise TypeError(f"bias: expected true or false, got {spec['bias']!r}")
        out["bias"] = bool(spec["bias"])
    if "d" not in spec:
        raise ValueError("d: required (the width of the random initial state)")
    for key in ("d", "seed"):
        if key in spec:
            out[key] = _as_int(spec[key], key)
    sp = spec.get("space", space)
    if sp not in ("parameters", "gram"):
        raise ValueError(f"space: expected 'parameters' or 'gram', got {sp!r}")
    out["space"] = sp
    return dict(sorted(out.items()))


def build(spec: dict, *, space: str | None = "parameters"):
    """The (model, init) pair a spec describes.

    The problem is built by :mod:`ufm.settings` (and cached per process, so thousands of
    specs on one setting build it once); the coupling is ``problem.coupling(similarity, beta)``
    when ``beta > 0`` and absent (the standard UFM) when ``beta == 0``; the initial state is
    ``model.init(d, scale=scale, seed=seed)``.

    Arguments:
        spec: a spec dict (see :data:`SPEC_KEYS`), normalised or not.
        space: default space when the spec does not name one.

    Returns:
        ``(model, init)``: a :class:`~ufm.models.UFM` and a :class:`~ufm.models.State`
        (W (K, d), H (d, N), b (K,) when the model has a bias).

    Raises:
        TypeError / ValueError: a bad key or value (named), as in :func:`normalise_spec` and
            the constructors it calls.
    """
    s = normalise_spec(spec, space=space)
    problem = build_problem(s, other_keys=_MODEL_KEYS)
    coupling = problem.coupling(s["similarity"], s["beta"]) if s["beta"] > 0 else None
    model = UFM(problem, loss=s["loss"], lambda_W=s["lambda_W"], lambda_H=s["lambda_H"],
                lambda_E=s["lambda_E"], bias=s["bias"], lambda_b=s["lambda_b"], coupling=coupling,
                lr_W=s["lr_W"], lr_H=s["lr_H"], lr_b=s["lr_b"])
    return model, model.init(s["d"], scale=s["scale"], seed=s["seed"])


def grid(axes: dict, base: dict | None = None) -> list[dict]:
    """The Cartesian product of value lists, merged over a base spec.

    >>> grid({"lambda": [1e-2, 1e-3], "seed": [0, 1]}, base={"setting": "factorial", "levels": [3, 3], "d": 32})
    ... # 4 specs: (1e-2, 0), (1e-2, 1), (1e-3, 0), (1e-3, 1)

    Arguments:
        axes: dict key -> list of values (a scalar is a one-value axis). The first axis
            varies slowest.
        base: dict of values shared by every spec (default none).

    Returns:
        list of spec dicts (deep copies), ``prod(len(values))`` of them.

    Raises:
        TypeError: ``axes`` or ``base`` not a dict.
        ValueError: an axis with no values.
    """
    if not isinstance(axes, dict):
        raise TypeError(f"axes: expected a dict key -> list of values, got {type(axes).__name__}")
    if base is not None and not isinstance(base, dict):
        raise TypeError(f"base: expected a dict, got {type(base).__name__}")
    keys = list(axes)
    values = []
    for k in keys:
        v = axes[k]
        v = list(v) if isinstance(v, (list, tuple, range, np.ndarray)) else [v]
        if not v:
            raise ValueError(f"axes[{k!r}]: expected at least one value")
        values.append(v)
    out = []
    for combo in itertools.product(*values):
        spec = copy.deepcopy(base or {})
        spec.update(zip(keys, combo))
        out.append(spec)
    return out


# -- hashing ---------------------------------------------------------------------------------

def _plain(obj):
    """A JSON-ready copy: numpy scalars to Python, tuples to lists, arrays to digests."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {"__array__": a.dtype.str, "shape": list(a.shape),
                "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else repr(v)
    return obj


def canonical_json(obj) -> str:
    """Canonical JSON of ``obj``: sorted keys, no spaces, arrays as dtype/shape/sha256."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def digest(obj) -> str:
    """sha256 hex digest of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


# -- payloads: what is shipped to a worker ----------------------------------------------------

def explicit_payload(model, init, *, space: str) -> dict:
    """Plain-data form of an explicit (model, init) pair (picklable, hashable).

    Raises:
        TypeError: ``model`` is not a UFM or ``init`` not a State / GramState.
    """
    if not isinstance(model, UFM):
        raise TypeError(f"config: expected (model, init) with a ufm.UFM model, got {type(model).__name__}")
    if not isinstance(init, (State, GramState)):
        raise TypeError(f"config: expected (model, init) with a ufm.State or ufm.GramState init, "
                        f"got {type(init).__name__}")
    params = model.params()
    cp = params.pop("coupling")
    if isinstance(cp, PiecewiseCoupling):
        coupling = {"times": np.array(cp.times), "kernels": np.array(cp.kernels)}
    elif cp is not None:
        coupling = {"matrix": np.array(cp)}
    else:
        coupling = None
    if isinstance(init, State):
        st = {"kind": "state", "W": np.array(init.W), "H": np.array(init.H)}
    else:
        st = {"kind": "gram", "M": np.array(init.M), "gram_W": np.array(init.gram_W),
              "gram_H": np.array(init.gram_H)}
    st["b"] = None if init.b is None else np.array(init.b)
    return {"kind": "explicit", "problem": model.problem.to_dict(), "model": params,
            "coupling": coupling, "init": st, "space": space}


def rebuild_explicit(payload: dict):
    """(model, init) from :func:`explicit_payload`'s output."""
    problem = Problem.from_dict(payload["problem"])
    cp = payload["coupling"]
    if cp is None:
        coupling = None
    elif "matrix" in cp:
        coupling = cp["matrix"]
    else:
        coupling = PiecewiseCoupling(cp["times"], cp["kernels"])
    model = UFM(problem, coupling=coupling, **payload["model"])
    st = payload["init"]
    if st["kind"] == "state":
        init = State(st["W"], st["H"], st["b"])
    else:
        init = GramState(st["M"], st["gram_W"], st["gram_H"], st["b"])
    return model, init


def explicit_columns(payload: dict) -> dict:
    """Table columns describing an explicit configuration (scalars only)."""
    m = dict(payload["model"])
    cols = {"setting": payload["problem"].get("name") or "custom"}
    cols.update({k: m[k] for k in sorted(m)})
    Y = payload["problem"]["Y"]
    cols["K"], cols["N"] = int(Y.shape[0]), int(Y.shape[1])
    cp = payload["coupling"]
    cols["coupling"] = "none" if cp is None else ("matrix" if "matrix" in cp else "piecewise")
    st = payload["init"]
    cols["d"] = int(st["W"].shape[1]) if st["kind"] == "state" else -1
    cols["space"] = payload["space"]
    return cols
