"""Trajectories: what an integration or a training run saved, with metrics and file I/O."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from . import metrics as _metrics
from ._io import atomic_write, json_default
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

        ``options`` are those of the ``"semantic_gap"`` metric (:meth:`metric`); the summary
        records the gap's convention (``centred``, default True).
        """
        gap = self.metric("semantic_gap", **options)
        centred = options.get("centred", _metrics.DEFAULT_GAP_CENTRED)
        return _metrics.transient_summary(self.t, gap, threshold=threshold, centred=centred)

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
        """Read a file written by :meth:`save` (no pickles are loaded).

        Raises:
            ValueError: not a ufm trajectory file, or an unknown version.
        """
        path = os.fspath(path)
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"path: cannot read {path!r} as an .npz trajectory ({exc})") from exc
        with data:
            if "meta" not in data:
                raise ValueError(f"path: {path!r} is not a ufm trajectory (no 'meta' entry)")
            try:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                    raise ValueError(f"path: {path!r} has format {meta.get('format')!r} version "
                                     f"{meta.get('version')!r}; expected {FORMAT!r} version {VERSION}")
                # reading every member checks its CRC-32: a damaged file fails here, not later
                arrays = {k: np.array(data[k]) for k in data.files if k != "meta"}
            except (zipfile.BadZipFile, EOFError) as exc:
                raise ValueError(f"path: {path!r} is damaged ({type(exc).__name__}: {exc})") from exc
        problem = None
        if "problem" in meta:
            pd = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("problem/")}
            pd["name"] = meta["problem"]["name"]
            if meta["problem"].get("relation_names") is not None:
                pd["relation_names"] = meta["problem"]["relation_names"]
            problem = Problem.from_dict(pd)
        model = None
        if "model" in meta and problem is not None:
            from .models import UFM, PiecewiseCoupling
            params = dict(meta["model"])
            if "model/coupling_kernels" in arrays:
                params["coupling"] = PiecewiseCoupling(arrays["model/coupling_times"], arrays["model/coupling_kernels"])
            elif "model/coupling" in arrays:
                params["coupling"] = arrays["model/coupling"]
            else:
                params["coupling"] = None
            model = UFM(problem, **params)
        kw = {k: arrays[k] for k in _ARRAY_FIELDS if k in arrays}
        return cls(**kw, problem=problem, model=model, info=meta.get("info", {}))
