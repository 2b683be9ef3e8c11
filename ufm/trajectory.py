"""Trajectories: what an integration or a training run saved, with metrics and file I/O."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import metrics as _metrics
from ._io import atomic_write, json_default, load_npy
from .problems import Problem

__all__ = ["Trajectory", "SAVEABLE"]

#: names accepted by ``save=`` in :func:`ufm.solve` / :func:`ufm.train`
SAVEABLE = ("W", "H", "b", "gram_W", "gram_H", "logits")
_ARRAY_FIELDS = ("t", "steps", "loss", "data_loss", "W", "H", "b", "gram_W", "gram_H", "logits")
FORMAT = "ufm-trajectory"
VERSION = 1


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Saved quantities at T save times.

    Attributes:
        t: (T,) ODE times (for discrete training, ``lr · steps``).
        loss: (T,) objective (data loss plus penalties, see ``UFM.loss``).
        data_loss: (T,) data loss ℓ alone.
        steps: (T,) optimiser steps for discrete training, else None.
        W: (T, K, d), H: (T, d, N), b: (T, K): parameters, when saved.
        gram_W: (T, K, K) = WWᵀ, gram_H: (T, N, N) = HᵀH, logits: (T, K, N) = WH + b1ᵀ,
            when saved.
        problem: the :class:`~ufm.problems.Problem` (labels and attributes for metrics).
        model: the :class:`~ufm.models.UFM` that produced it, when known.
        info: JSON-serialisable metadata (method, space, tolerances, step counts, d, ...).
    """

    t: np.ndarray
    loss: np.ndarray
    data_loss: np.ndarray | None = None
    steps: np.ndarray | None = None
    W: np.ndarray | None = None
    H: np.ndarray | None = None
    b: np.ndarray | None = None
    gram_W: np.ndarray | None = None
    gram_H: np.ndarray | None = None
    logits: np.ndarray | None = None
    problem: Problem | None = None
    model: object = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def __repr__(self) -> str:
        saved = [n for n in _ARRAY_FIELDS[2:] if getattr(self, n) is not None]
        span = f"t ∈ [{self.t[0]:.3g}, {self.t[-1]:.3g}]" if len(self) else "empty"
        return f"Trajectory(T={len(self)}, {span}, saved={saved})"

    @property
    def events(self) -> tuple:
        """The located events of the run (``ufm.solve(..., events=...)``), in time order: a
        tuple of :class:`ufm.events.Hit` (name, t, direction, value, ...); empty otherwise."""
        from .events import Hit
        return tuple(Hit.from_dict(h) for h in self.info.get("events", ()))

    def _need(self, name: str) -> np.ndarray:
        arr = getattr(self, name)
        if arr is None:
            hint = "" if name not in SAVEABLE else f" (pass save=[..., {name!r}] to ufm.solve / ufm.train)"
            raise ValueError(f"{name}: this trajectory did not save it{hint}")
        return arr

    def state(self, index: int = -1):
        """The state at save ``index`` (default the last), to continue from or inspect.

        Returns a :class:`~ufm.models.State` when W and H were saved, otherwise a
        :class:`~ufm.models.GramState` built from gram_W, gram_H and logits (minus the bias).

        Raises:
            ValueError: the trajectory saved neither (W, H) nor (gram_W, gram_H, logits), or the
                model has a bias that was not saved.
        """
        from .models import GramState, State
        if not len(self):
            raise ValueError("index: the trajectory is empty")
        bias = self.model is not None and self.model.bias
        if bias and self.b is None:
            raise ValueError("b: the model has a bias but the trajectory did not save it (save=[..., 'b'])")
        b = None if self.b is None else self.b[index]
        if self.W is not None and self.H is not None:
            return State(self.W[index], self.H[index], b)
        if self.gram_W is None or self.gram_H is None or self.logits is None:
            raise ValueError("save: a state needs W and H, or gram_W, gram_H and logits (save='all')")
        M = self.logits[index] if b is None else self.logits[index] - b[:, None]
        return GramState(M, self.gram_W[index], self.gram_H[index], b)

    def metric(self, name: str, **options) -> np.ndarray:
        """A metric of :mod:`ufm.metrics` at every save time, shape (T,): a thin call of
        :func:`ufm.metrics.evaluate` on this trajectory's saved Grams and logits and its problem.

        Names (:data:`ufm.metrics.METRICS`) and their options; labels, attributes and the
        attribute kernel come from the problem unless given:

        * ``"etf_distance"`` — of G_H against the label ETF (``which="W"`` for G_W; ``labels``);
        * ``"semantic_gap"`` — of G_H with the problem's attributes, from centred cosines
          (``centred=False`` for raw ones; ``attribute=f`` for one attribute; ``labels``,
          ``attributes``); pairs with equal labels are excluded whenever there are labels;
        * ``"kernel_alignment"`` — centred alignment of G_H with ``kernel=`` (default AᵀA;
          ``which``, ``centred``);
        * ``"effective_rank"`` — the entropy effective rank of G_H; ``"participation_ratio"``
          — the second-moment effective dimension of the centred G_H (``which``, ``centred``);
        * ``"nc1"``, ``"nc2"``, ``"cdnv"`` — from G_H; ``"nc3"``, ``"nc4"`` — also need logits
          (and ``gram_W`` for nc3); ``"accuracy"`` — from the logits (``labels``);
        * ``"norm_W"``, ``"norm_H"`` — Frobenius norms √tr G.

        Raises:
            ValueError: unknown name, or a quantity the trajectory did not save.
            TypeError: an option the metric does not accept.
        """
        return _metrics.evaluate(name, gram_H=self.gram_H, gram_W=self.gram_W, logits=self.logits,
                                 problem=self.problem, **options)

    def transient_summary(self, threshold: float = 0.02, **options):
        """:func:`ufm.metrics.transient_summary` of the semantic gap over this trajectory.

        Arguments:
            threshold: collapse threshold θ > 0 on the gap.
            **options: those of the ``"semantic_gap"`` metric (:meth:`metric`: ``attributes=``,
                ``attribute=``, ``labels=``, ``centred=``); the summary records the gap's
                convention (``centred``, default True).

        When the run located events of the same gap (``ufm.events.gap_peak`` and a falling
        ``gap_crossing`` at ``threshold``, same ``centred``/``attribute``, no other options), the
        peak, its time and the collapse time are the located ones instead of save-grid values,
        and the summary's ``exact`` names them.

        Raises:
            ValueError / TypeError: a threshold that is not a number > 0; see :meth:`metric`.
        """
        gap = self.metric("semantic_gap", **options)
        centred = options.get("centred", _metrics.DEFAULT_GAP_CENTRED)
        summary = _metrics.transient_summary(self.t, gap, threshold=threshold, centred=centred)
        hits = self._gap_hits(options)
        if not hits:
            return summary
        return _metrics.refine_transient(summary, self.t, gap, threshold, hits)

    def _gap_hits(self, options) -> list:
        """Hits of gap events computed with the same gap as ``options`` ask for."""
        if set(options) - {"centred", "attribute"}:
            return []
        centred = bool(options.get("centred", _metrics.DEFAULT_GAP_CENTRED))
        attribute = options.get("attribute")
        return [h for h in self.events if h.kind in ("gap_peak", "gap_crossing")
                and h.options.get("centred") == centred and h.options.get("attribute") == attribute]

    # -- labelled arrays (ufm/xarray_interop.py; optional extras) ------------------------------
    def to_xarray(self):
        """This trajectory as an ``xarray.Dataset`` (dims time, class, context, width; the
        model's parameters and the conventions as attributes): see
        :func:`ufm.xarray_interop.trajectory_to_xarray`. Needs ``pip install "ufm[xarray]"``."""
        from .xarray_interop import trajectory_to_xarray
        return trajectory_to_xarray(self)

    @classmethod
    def from_xarray(cls, ds) -> "Trajectory":
        """The trajectory of a Dataset made by :meth:`to_xarray` (or a netCDF / zarr path):
        see :func:`ufm.xarray_interop.trajectory_from_xarray`."""
        from .xarray_interop import trajectory_from_xarray
        return trajectory_from_xarray(ds)

    def to_netcdf(self, path) -> str:
        """Write :meth:`to_xarray` as netCDF-4 (``pip install "ufm[netcdf]"``); returns the path.
        :meth:`save` (``.npz``) stays the lossless default format."""
        from .xarray_interop import to_netcdf
        return to_netcdf(self, path)

    def to_zarr(self, path) -> str:
        """Write :meth:`to_xarray` as a zarr store (``pip install "ufm[zarr]"``); returns the path."""
        from .xarray_interop import to_zarr
        return to_zarr(self, path)

    # -- I/O ----------------------------------------------------------------------------------
    def save(self, path) -> str:
        """Write to ``path`` (``.npz`` appended if missing), atomically (temp file + rename).

        Arrays are stored as they are (float64, lossless); the problem, the model's parameters
        and coupling, and ``info`` go along, the scalars as JSON under the key ``meta``.
        Returns the path written.
        """
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        arrays = {k: getattr(self, k) for k in _ARRAY_FIELDS if getattr(self, k) is not None}
        meta = {"format": FORMAT, "version": VERSION, "info": self.info}
        if self.problem is not None:
            pd = self.problem.to_dict()
            meta["problem"] = {"name": pd.pop("name"), "relation_names": pd.pop("relation_names", None)}
            arrays.update({f"problem/{k}": v for k, v in pd.items()})
        if self.model is not None:
            from .models import PiecewiseCoupling
            params = self.model.params()
            cp = params.pop("coupling")
            meta["model"] = params
            if isinstance(cp, PiecewiseCoupling):
                arrays["model/coupling_times"] = cp.times
                arrays["model/coupling_kernels"] = cp.kernels
            elif cp is not None:
                arrays["model/coupling"] = cp
        arrays["meta"] = np.array(json.dumps(meta, default=json_default))
        # np.savez appends ".npz" to names without it; the temporary name keeps that suffix
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
        return path

    @classmethod
    def load(cls, path) -> "Trajectory":
        """Read a file written by :meth:`save` (no pickles are loaded), validating it.

        Raises:
            ValueError: naming the file and what is wrong: not readable as an ``.npz`` (missing,
                truncated, corrupt), no or bad ``meta`` entry (not JSON, another format, an
                unknown version), an unknown or corrupt entry, arrays of the wrong dtype or of
                shapes inconsistent with the T save times (e.g. ``gram_H`` with fewer saves
                than ``t``), or a problem or model that cannot be rebuilt.
        """
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise TypeError(f"path: expected a file path, got {type(path).__name__}")
        path = os.fspath(path)
        where = repr(path)
        try:
            data = load_npy(path)
        except FileNotFoundError:
            raise ValueError(f"path: {where}: no such file") from None
        except Exception as exc:  # noqa: BLE001 - whatever a corrupt archive makes zipfile/numpy raise
            raise ValueError(f"path: cannot read {where} as an .npz trajectory ({type(exc).__name__}: {exc}); "
                             "corrupt or truncated file?") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"path: {where} holds a single array, not an .npz trajectory")
        with data:
            if "meta" not in data.files:
                raise ValueError(f"path: {where} is not a ufm trajectory (no 'meta' entry)")
            arrays = {k: _member(data, k, where) for k in data.files}
        meta = _parse_meta(arrays.pop("meta"), where)
        _check_arrays(arrays, where)
        problem = None
        if "problem" in meta:
            pd = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("problem/")}
            pm = meta["problem"]
            if not isinstance(pm, dict):
                raise ValueError(f"path: {where}: meta 'problem' must be an object, got {type(pm).__name__}")
            pd["name"] = str(pm.get("name", ""))
            if pm.get("relation_names") is not None:
                pd["relation_names"] = pm["relation_names"]
            try:
                problem = Problem.from_dict(pd)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"path: {where}: the stored problem is invalid ({exc})") from None
        model = None
        if "model" in meta and problem is not None:
            from .models import UFM, PiecewiseCoupling
            params = meta["model"]
            if not isinstance(params, dict):
                raise ValueError(f"path: {where}: meta 'model' must be an object, got {type(params).__name__}")
            params = dict(params)
            try:
                if "model/coupling_kernels" in arrays:
                    params["coupling"] = PiecewiseCoupling(arrays.get("model/coupling_times"),
                                                           arrays["model/coupling_kernels"])
                elif "model/coupling" in arrays:
                    params["coupling"] = arrays["model/coupling"]
                else:
                    params["coupling"] = None
                model = UFM(problem, **params)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"path: {where}: the stored model is invalid ({exc})") from None
        kw = {k: arrays[k] for k in _ARRAY_FIELDS if k in arrays}
        _check_shapes(kw, problem, where)
        info = meta.get("info", {})
        if not isinstance(info, dict):
            raise ValueError(f"path: {where}: meta 'info' must be an object, got {type(info).__name__}")
        return cls(**kw, problem=problem, model=model, info=info)


def _member(data, key: str, where: str) -> np.ndarray:
    """One entry of the archive; a corrupt member (bad CRC, truncated, pickled) names itself."""
    try:
        return np.array(data[key])
    except Exception as exc:  # noqa: BLE001 - a corrupt member makes zipfile/numpy raise anything
        # (BadZipFile, zlib.error, EOFError, NotImplementedError for a bad compression field,
        # SyntaxError from numpy's header parser, MemoryError for a corrupt shape, ...)
        raise ValueError(f"path: {where}: cannot read entry {key!r} ({type(exc).__name__}: {exc}); corrupt or "
                         "truncated file?") from None


def _parse_meta(raw: np.ndarray, where: str) -> dict:
    if raw.dtype.kind not in "US" or raw.size != 1:
        raise ValueError(f"path: {where}: 'meta' must be a JSON string, found dtype {raw.dtype} shape {raw.shape}")
    try:
        meta = json.loads(str(raw.reshape(()).item()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"path: {where}: 'meta' is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"path: {where}: 'meta' must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"path: {where} has format {meta.get('format')!r} version {meta.get('version')!r}; "
                         f"expected {FORMAT!r} version {VERSION}"
                         + (" (written by a newer ufm: upgrade)" if isinstance(meta.get("version"), int)
                            and meta.get("format") == FORMAT and meta["version"] > VERSION else ""))
    return meta


_PROBLEM_KEYS = {"Y", "weights", "attributes", "relations"}
_MODEL_KEYS = {"coupling", "coupling_times", "coupling_kernels"}


def _check_arrays(arrays: dict, where: str) -> None:
    """Known entries only, each numeric (a string array where numbers belong is corruption)."""
    for key, arr in arrays.items():
        prefix, _, rest = key.partition("/")
        known = (key in _ARRAY_FIELDS or (prefix == "problem" and (rest in _PROBLEM_KEYS or rest.startswith("similarity:")))
                 or (prefix == "model" and rest in _MODEL_KEYS))
        if not known:
            raise ValueError(f"path: {where}: unknown entry {key!r}; a ufm trajectory holds {list(_ARRAY_FIELDS)}, "
                             "problem/… and model/… entries")
        if key != "problem/relation_names" and not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"path: {where}: entry {key!r}: expected numbers, found dtype {arr.dtype}")
    for key in ("t", "loss"):
        if key not in arrays:
            raise ValueError(f"path: {where}: entry {key!r} is missing (every trajectory saves t and loss)")


def _check_shapes(kw: dict, problem, where: str) -> None:
    """Every saved array has one entry per save time, and K, N, d agree across them."""
    t = kw["t"]
    if t.ndim != 1:
        raise ValueError(f"path: {where}: 't' must be 1-D (T,), found shape {t.shape}")
    T = t.shape[0]
    if T and not np.all(np.isfinite(t)):
        raise ValueError(f"path: {where}: 't' holds non-finite times")
    if T > 1 and np.any(np.diff(t) <= 0):
        raise ValueError(f"path: {where}: 't' must be strictly increasing")
    K = N = d = None
    if problem is not None:
        K, N = problem.K, problem.N
    dims = {"loss": "T", "data_loss": "T", "steps": "T", "W": "TKd", "H": "TdN", "b": "TK", "gram_W": "TKK",
            "gram_H": "TNN", "logits": "TKN"}
    sizes = {"T": T, "K": K, "N": N, "d": d}
    for key, letters in dims.items():
        arr = kw.get(key)
        if arr is None:
            continue
        if arr.ndim != len(letters):
            raise ValueError(f"path: {where}: '{key}' must have shape ({', '.join(letters)}), found {arr.shape}")
        for letter, n in zip(letters, arr.shape):
            if sizes[letter] is None:
                sizes[letter] = n
            elif sizes[letter] != n:
                what = {"T": f"T = {T} save times (the length of 't')", "K": f"K = {sizes['K']} classes",
                        "N": f"N = {sizes['N']} contexts", "d": f"width d = {sizes['d']}"}[letter]
                raise ValueError(f"path: {where}: '{key}' has shape {arr.shape}, inconsistent with {what}")
