"""Labelled arrays for analysis: trajectories and sweeps as xarray Datasets and pandas tables.

The ``.npz`` format of :meth:`ufm.Trajectory.save` stays the lossless default; these are views
for notebooks and analysis tools, with optional dependencies imported on first use:

* :func:`trajectory_to_xarray` / :func:`trajectory_from_xarray` (``Trajectory.to_xarray()``,
  ``Trajectory.from_xarray(ds)``): dimensions ``time``, ``class`` (K), ``context`` (N),
  ``width`` (d); the second index of a Gram matrix is ``class_2`` / ``context_2``. The
  problem's arrays and the model's coupling are variables (``problem_Y``, ``model_coupling``,
  …), the model's parameters and the run's ``info`` are attributes (JSON, plus readable scalar
  copies), so the round trip rebuilds the same :class:`~ufm.trajectory.Trajectory`.
* :func:`sweep_to_xarray` (``SweepResult.to_xarray()``): one ``config`` dimension, the
  configuration's parameters (λ, β, seed, d, …) as coordinates; when the varying parameters
  form a full product the configurations are unstacked into one labelled dimension per
  parameter.
* :func:`sweep_to_dataframe` (``SweepResult.to_dataframe()``): the sweep table as a pandas
  DataFrame.
* :func:`to_netcdf` / :func:`to_zarr`: write either kind of Dataset.

Extras: ``pip install "ufm[xarray]"`` (xarray, pandas), ``"ufm[netcdf]"`` (adds h5netcdf),
``"ufm[zarr]"`` (adds zarr). A missing package raises ImportError naming the extra.
"""

from __future__ import annotations

import importlib
import json
import math
import os

import numpy as np

from ._io import json_default
from .sweeps.specs import SPEC_KEYS

__all__ = ["trajectory_to_xarray", "trajectory_from_xarray", "sweep_to_xarray", "sweep_to_dataframe",
           "to_netcdf", "to_zarr", "CONVENTIONS", "PARAMETER_COLUMNS"]

#: What the ``ufm_conventions`` attribute of every Dataset says (docs/model.md).
CONVENTIONS = ("W is K×d (classifier rows), H is d×N (one feature column per context), "
               "Z = WH + b1ᵀ is K×N; gram_W = WWᵀ, gram_H = HᵀH; losses are weighted means over "
               "contexts (weights π_i, 1/N by default); t is ODE time (lr · steps for discrete training)")

# dimensions of each saved trajectory array (the letters of Trajectory's shape checks)
_TRAJECTORY_DIMS = {"loss": ("time",), "data_loss": ("time",), "W": ("time", "class", "width"),
                    "H": ("time", "width", "context"), "b": ("time", "class"),
                    "gram_W": ("time", "class", "class_2"), "gram_H": ("time", "context", "context_2"),
                    "logits": ("time", "class", "context")}
_PROBLEM_DIMS = {"Y": ("class", "context"), "weights": ("context",), "attributes": ("context", "attribute"),
                 "relations": ("relation", "context", "context_2")}
_SIMILARITY = "problem_similarity_"

#: Sweep-table columns that describe a configuration (coordinates in :func:`sweep_to_xarray`):
#: the spec keys (:data:`ufm.sweeps.SPEC_KEYS`) and the columns an explicit (model, init) pair
#: or the run adds; every other column is a result or bookkeeping (a variable).
PARAMETER_COLUMNS = frozenset(SPEC_KEYS) | {"K", "N", "d", "space", "coupling"}


def _require(module: str, extra: str, what: str):
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs the optional package {module!r}, which is not installed: "
                          f"pip install \"ufm[{extra}]\"") from None


# -- trajectories ---------------------------------------------------------------------------------

def trajectory_to_xarray(traj):
    """A :class:`~ufm.trajectory.Trajectory` as an ``xarray.Dataset``.

    Arguments:
        traj: the trajectory.

    Returns:
        A Dataset with coordinate ``time`` (the ODE times ``t``; ``step`` beside it for
        discrete training), ``class``, ``context``, ``width`` (integer positions), ``label``
        on ``context`` (the problem's labels, when one-hot) and ``relation`` (the scheme's
        relation names); variables ``loss``, ``data_loss``, ``W``, ``H``, ``b``, ``gram_W``,
        ``gram_H``, ``logits`` (those saved), ``problem_*`` (the problem's arrays) and
        ``model_coupling*`` (the coupling Θ); attributes ``ufm_format``, ``ufm_version``,
        ``ufm_conventions``, ``ufm_problem``, ``ufm_model`` and ``ufm_info`` (JSON) and, for
        reading at a glance, the model's scalar parameters as ``model_<name>``.

    Raises:
        TypeError: ``traj`` is not a Trajectory.
        ImportError: xarray is not installed (``pip install "ufm[xarray]"``).
    """
    from .trajectory import _ARRAY_FIELDS, FORMAT, VERSION, Trajectory
    if not isinstance(traj, Trajectory):
        raise TypeError(f"traj: expected a ufm.Trajectory, got {type(traj).__name__}")
    xr = _require("xarray", "xarray", "Trajectory.to_xarray")
    coords = {"time": ("time", np.asarray(traj.t))}
    if traj.steps is not None:
        coords["step"] = ("time", np.asarray(traj.steps))
    data = {name: (dims, np.asarray(getattr(traj, name))) for name, dims in _TRAJECTORY_DIMS.items()
            if getattr(traj, name) is not None}
    unknown = [n for n in _ARRAY_FIELDS if n not in _TRAJECTORY_DIMS and n not in ("t", "steps")]
    if unknown:   # a field added to Trajectory without a dimension here would be dropped silently
        raise NotImplementedError(f"trajectory_to_xarray: no dimensions known for {unknown}")
    attrs = {"ufm_format": FORMAT, "ufm_version": VERSION, "ufm_conventions": CONVENTIONS,
             "ufm_info": json.dumps(traj.info, default=json_default)}
    if traj.problem is not None:
        pd = traj.problem.to_dict()
        attrs["ufm_problem"] = json.dumps({"name": pd.pop("name")})
        relation_names = pd.pop("relation_names", None)
        if relation_names is not None:
            coords["relation"] = ("relation", np.array(relation_names, dtype=str))
        labels = traj.problem.labels
        if labels is not None:
            coords["label"] = ("context", np.asarray(labels))
        for key, arr in pd.items():
            if key.startswith("similarity:"):
                data[_SIMILARITY + key.split(":", 1)[1]] = (("context", "context_2"), np.asarray(arr))
            else:
                data[f"problem_{key}"] = (_PROBLEM_DIMS[key], np.asarray(arr))
    if traj.model is not None:
        from .models import PiecewiseCoupling
        params = traj.model.params()
        coupling = params.pop("coupling")
        attrs["ufm_model"] = json.dumps(params, default=json_default)
        attrs["model_kind"] = traj.model.kind
        for key, value in params.items():
            # netCDF attributes hold numbers and strings, not booleans
            attrs[f"model_{key}"] = int(value) if isinstance(value, bool) else value
        if isinstance(coupling, PiecewiseCoupling):
            data["model_coupling_times"] = (("coupling_piece",), np.asarray(coupling.times))
            data["model_coupling_kernels"] = (("coupling_piece", "context", "context_2"),
                                              np.asarray(coupling.kernels))
        elif coupling is not None:
            data["model_coupling"] = (("context", "context_2"), np.asarray(coupling))
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    for name in ("class", "context", "width", "class_2", "context_2"):
        if name in ds.dims:
            ds = ds.assign_coords({name: np.arange(ds.sizes[name])})
    return ds


def trajectory_from_xarray(ds):
    """Rebuild a :class:`~ufm.trajectory.Trajectory` from :func:`trajectory_to_xarray`'s Dataset.

    Arguments:
        ds: the Dataset (as written, or read back from netCDF or zarr), or the path of a
            netCDF file or zarr store holding one.

    Returns:
        The trajectory, with its problem and model when the Dataset holds them; arrays are
        float64 copies of the Dataset's values.

    Raises:
        ImportError: xarray (or the engine for a path) is not installed.
        TypeError: ``ds`` is neither a Dataset nor a path.
        ValueError: ``ds`` is not a ufm trajectory (no or another ``ufm_format``), or its
            arrays, problem or model are inconsistent (the checks of
            :meth:`ufm.Trajectory.load`).
    """
    from .models import UFM, PiecewiseCoupling
    from .problems import Problem
    from .trajectory import FORMAT, VERSION, Trajectory, _check_shapes
    xr = _require("xarray", "xarray", "Trajectory.from_xarray")
    if isinstance(ds, (str, os.PathLike)):
        ds = _open(xr, os.fspath(ds))
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds: expected an xarray.Dataset or a path, got {type(ds).__name__}")
    fmt, version = ds.attrs.get("ufm_format"), ds.attrs.get("ufm_version")
    if fmt != FORMAT or version != VERSION:
        raise ValueError(f"ds: not a ufm trajectory: attribute ufm_format {fmt!r} version {version!r}, "
                         f"expected {FORMAT!r} version {VERSION}")
    where = "ds"
    if "time" not in ds.coords or "loss" not in ds:
        raise ValueError("ds: a ufm trajectory has a 'time' coordinate and a 'loss' variable")
    kw = {"t": np.array(ds["time"].values, dtype=np.float64)}
    if "step" in ds.coords:
        kw["steps"] = np.array(ds["step"].values)
    for name, dims in _TRAJECTORY_DIMS.items():
        if name in ds:
            if ds[name].dims != dims:
                raise ValueError(f"ds: variable {name!r} has dimensions {ds[name].dims}, expected {dims}")
            kw[name] = np.array(ds[name].values, dtype=np.float64)
    problem = None
    if "problem_Y" in ds:
        pd = {"name": _json_attr(ds, "ufm_problem", {}).get("name", "")}
        for key in _PROBLEM_DIMS:
            if f"problem_{key}" in ds:
                pd[key] = np.array(ds[f"problem_{key}"].values)
        for name in ds.data_vars:
            if str(name).startswith(_SIMILARITY):
                pd["similarity:" + str(name)[len(_SIMILARITY):]] = np.array(ds[name].values)
        if "relation" in ds.coords:
            pd["relation_names"] = [str(v) for v in ds["relation"].values]
        try:
            problem = Problem.from_dict(pd)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ds: the stored problem is invalid ({exc})") from None
    model = None
    if "ufm_model" in ds.attrs and problem is not None:
        params = _json_attr(ds, "ufm_model", None)
        if not isinstance(params, dict):
            raise ValueError(f"ds: attribute 'ufm_model' must be a JSON object, got {type(params).__name__}")
        try:
            if "model_coupling_kernels" in ds:
                params["coupling"] = PiecewiseCoupling(np.array(ds["model_coupling_times"].values),
                                                       np.array(ds["model_coupling_kernels"].values))
            elif "model_coupling" in ds:
                params["coupling"] = np.array(ds["model_coupling"].values)
            else:
                params["coupling"] = None
            model = UFM(problem, **params)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"ds: the stored model is invalid ({exc})") from None
    _check_shapes(kw, problem, where)
    info = _json_attr(ds, "ufm_info", {})
    if not isinstance(info, dict):
        raise ValueError(f"ds: attribute 'ufm_info' must be a JSON object, got {type(info).__name__}")
    return Trajectory(**kw, problem=problem, model=model, info=info)


def _json_attr(ds, name: str, default):
    raw = ds.attrs.get(name)
    if raw is None:
        return default
    try:
        return json.loads(str(raw))
    except json.JSONDecodeError as exc:
        raise ValueError(f"ds: attribute {name!r} is not valid JSON ({exc.msg})") from None


def _open(xr, path: str):
    if not os.path.exists(path):
        raise ValueError(f"ds: {path!r}: no such file or directory")
    if os.path.isdir(path):
        _require("zarr", "zarr", "reading a zarr store")
        return xr.open_zarr(path).load()
    return xr.load_dataset(path, engine=_netcdf_engine("reading a netCDF file"))


# -- sweeps ----------------------------------------------------------------------------------------

def sweep_to_dataframe(result):
    """The sweep table (:meth:`ufm.SweepResult.to_array`) as a ``pandas.DataFrame``.

    Arguments:
        result: a :class:`~ufm.sweeps.SweepResult`.

    Returns:
        One row per configuration, one column per table column (:meth:`SweepResult.columns`
        order), with the dtypes of :meth:`~ufm.sweeps.SweepResult.to_array` (bool, int64,
        float64 with NaN for missing values, str).

    Raises:
        TypeError: ``result`` is not a SweepResult.
        ImportError: pandas is not installed (``pip install "ufm[xarray]"``).
    """
    _check_sweep(result)
    pd = _require("pandas", "xarray", "SweepResult.to_dataframe")
    table = result.to_array()
    return pd.DataFrame({name: table[name] for name in table.dtype.names})


def sweep_to_xarray(result, dims="auto"):
    """A sweep as an ``xarray.Dataset``: results as variables, parameters as coordinates.

    Arguments:
        result: a :class:`~ufm.sweeps.SweepResult`.
        dims: ``"auto"`` — unstack the configurations into one dimension per varying
            parameter when they form a full product (every combination exactly once), else
            keep one ``config`` dimension; ``None`` — always one ``config`` dimension; or a
            list of parameter columns (e.g. ``["lambda", "beta", "seed"]``) to unstack by,
            which must form a full product. Parameters that change together (``lambda_W``
            and ``lambda_H`` of the spec key ``lambda``) share one dimension, named
            ``lambda`` when the two are equal in every configuration.

    Returns:
        A Dataset whose variables are the result columns (``gap_peak``, ``t_collapse``,
        ``collapsed``, …, and ``status``, ``reason``, ``error``, ``t_fail``, ``hash``) and
        whose coordinates are the parameter columns (:data:`PARAMETER_COLUMNS`): varying ones
        along the configuration dimension(s), constant ones as scalars. Attribute
        ``ufm_conventions`` as for trajectories; ``ufm_out`` is the sweep directory, if any.

    Raises:
        TypeError: ``result`` is not a SweepResult, or ``dims`` is not "auto", None or a list
            of names.
        ValueError: a named dimension is not a parameter column, or the named dimensions do
            not form a full product (the message says how many combinations are missing or
            repeated).
        ImportError: xarray is not installed (``pip install "ufm[xarray]"``).
    """
    _check_sweep(result)
    xr = _require("xarray", "xarray", "SweepResult.to_xarray")
    table = result.to_array()
    names = list(table.dtype.names)
    n = len(table)
    parameters = [c for c in names if c in PARAMETER_COLUMNS]
    varying = [c for c in parameters if n and len(np.unique(table[c])) > 1]
    coords, data = {"config": ("config", np.arange(n))}, {}
    if "lambda_W" in varying and "lambda_H" in varying and np.array_equal(table["lambda_W"], table["lambda_H"]):
        coords["lambda"] = ("config", table["lambda_W"])
        varying.insert(varying.index("lambda_H"), "lambda")
    for c in names:
        if c in parameters:
            # constant parameters are scalar coordinates (an empty sweep has no value to show)
            coords[c] = ("config", table[c]) if c in varying or not n else table[c][0]
        else:
            data[c] = ("config", table[c])
    attrs = {"ufm_conventions": CONVENTIONS, "ufm_configurations": n}
    if result.out:
        attrs["ufm_out"] = str(result.out)
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    if dims is None:
        return ds
    if isinstance(dims, str) and dims == "auto":
        chosen = _product_dims(table, coords, varying)
        if chosen is None:
            return ds
    elif isinstance(dims, (list, tuple)) and all(isinstance(d, str) for d in dims):
        chosen = list(dims)
        for d in chosen:
            if d not in varying:
                raise ValueError(f"dims: {d!r} is not a varying parameter of this sweep; varying parameters are "
                                 f"{varying}")
        problem = _product_problem([np.asarray(coords[d][1]) for d in chosen])
        if problem:
            raise ValueError(f"dims: {chosen} do not form a full product of the configurations ({problem}); "
                             "pass dims=None for one 'config' dimension")
    else:
        raise TypeError(f"dims: expected 'auto', None or a list of parameter names, got {dims!r}")
    return _unstack(ds, chosen, [v for v in varying if v not in chosen])


def _product_problem(columns: list) -> str:
    """Why these columns do not enumerate a full product exactly once ('' if they do)."""
    n = len(columns[0]) if columns else 0
    keys = list(zip(*[c.tolist() for c in columns]))
    expected = math.prod(len(np.unique(c)) for c in columns)
    distinct = len(set(keys))
    if distinct == n == expected:
        return ""
    return (f"{n} configurations, {distinct} distinct combinations, a full product has {expected}"
            + (f"; {n - distinct} repeated" if distinct < n else ""))


def _product_dims(table, coords, varying):
    """Varying parameters grouped by the ones that determine each other; one per group as a
    dimension if the groups form a full product, else None."""
    columns = {v: np.asarray(coords[v][1]) for v in varying}
    groups: list[list[str]] = []
    for v in varying:
        for g in groups:
            if _bijective(columns[g[0]], columns[v]):
                g.append(v)
                break
        else:
            groups.append([v])
    chosen = [g[0] for g in groups]
    if not chosen or _product_problem([columns[c] for c in chosen]):
        return None
    return chosen


def _bijective(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _unstack(ds, chosen: list, dependent: list):
    """Unstack ``config`` into ``chosen``; a dependent parameter that follows one chosen
    dimension becomes a 1-D coordinate of it, any other keeps all the new dimensions."""
    follows = {}
    for v in dependent:
        for c in chosen:
            if _bijective(ds[c].values, ds[v].values):
                follows[v] = (c, dict(zip(ds[c].values.tolist(), ds[v].values.tolist())))
                break
    out = ds.drop_vars([v for v in follows]).set_index(config=chosen).unstack("config")
    for v, (c, mapping) in follows.items():
        out = out.assign_coords({v: (c, np.array([mapping[x] for x in out[c].values.tolist()]))})
    return out.rename_vars({"config": "config_position"}) if "config" in out.variables else out


def _check_sweep(result):
    from .sweeps import SweepResult
    if not isinstance(result, SweepResult):
        raise TypeError(f"result: expected a ufm.SweepResult, got {type(result).__name__}")


# -- files ------------------------------------------------------------------------------------------

def _netcdf_engine(what: str) -> str:
    for module, engine in (("h5netcdf", "h5netcdf"), ("netCDF4", "netcdf4")):
        try:
            importlib.import_module(module)
            return engine
        except ImportError:
            continue
    raise ImportError(f"{what} needs the optional package 'h5netcdf' (or 'netCDF4'), which is not installed: "
                      "pip install \"ufm[netcdf]\"")


def _dataset(obj, what: str):
    """A Trajectory or SweepResult as a Dataset (a Dataset passes through)."""
    from .sweeps import SweepResult
    from .trajectory import Trajectory
    xr = _require("xarray", "netcdf" if "netCDF" in what else "zarr", what)
    if isinstance(obj, Trajectory):
        return trajectory_to_xarray(obj)
    if isinstance(obj, SweepResult):
        return sweep_to_xarray(obj)
    if isinstance(obj, xr.Dataset):
        return obj
    raise TypeError(f"obj: expected a ufm.Trajectory, a ufm.SweepResult or an xarray.Dataset, "
                    f"got {type(obj).__name__}")


def to_netcdf(obj, path) -> str:
    """Write a trajectory or sweep (or a Dataset of this module) as a netCDF-4 file.

    Arguments:
        obj: a :class:`~ufm.trajectory.Trajectory`, a :class:`~ufm.sweeps.SweepResult` or an
            ``xarray.Dataset``.
        path: the file to write (``.nc`` by convention).

    Returns:
        The path written. Read it back with ``xarray.load_dataset(path)`` or
        ``ufm.Trajectory.from_xarray(path)``.

    Raises:
        ImportError: xarray, or both h5netcdf and netCDF4, are not installed
            (``pip install "ufm[netcdf]"``).
        TypeError: ``obj`` is none of these, or ``path`` is not a path.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    ds = _dataset(obj, "writing netCDF")
    engine = _netcdf_engine("writing netCDF")
    path = os.fspath(path)
    ds.to_netcdf(path, engine=engine)
    return path


def to_zarr(obj, path) -> str:
    """Write a trajectory or sweep (or a Dataset of this module) as a zarr store.

    Arguments:
        obj: a :class:`~ufm.trajectory.Trajectory`, a :class:`~ufm.sweeps.SweepResult` or an
            ``xarray.Dataset``.
        path: the store's directory (replaced if it exists).

    Returns:
        The path written. Read it back with ``xarray.open_zarr(path)`` or
        ``ufm.Trajectory.from_xarray(path)``.

    Raises:
        ImportError: xarray or zarr is not installed (``pip install "ufm[zarr]"``).
        TypeError: ``obj`` is none of these, or ``path`` is not a path.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a directory path, got {type(path).__name__}")
    ds = _dataset(obj, "writing zarr")
    _require("zarr", "zarr", "writing zarr")
    path = os.fspath(path)
    # zarr format 2: its string and metadata encodings are stable (format 3 warns about both)
    ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True)
    return path
