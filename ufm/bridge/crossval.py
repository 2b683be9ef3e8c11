"""Blocked cross-validation of a comparison's rows over held-out checkpoints.

The checkpoints 1 … T−1 of a run are cut into ``blocks`` contiguous blocks (checkpoint 0 is
the initial state every prediction starts from, so it is never held out). Two schemes:

* ``"forward"`` (forward chaining): for each block after the first, refit every row on the
  checkpoints before it and predict it — the model must extrapolate its own dynamics to later
  training times, as a prediction of a run from its start does;
* ``"leave-one-out"`` (leave one block out): for each block after the first, refit on every
  checkpoint but that block and predict it — the model must bridge a hole in the trajectory
  (the last block: extrapolate past the end).

The first block is never held out: its checkpoints anchor the map from steps to ODE time. A
power map t = s·step^p fitted without them is free at small steps, so a held-out first block
is predicted by extrapolating backwards over decades of log step — a test of the time map's
parametrisation, not of the dynamics. Measured (``python -m benchmarks.crossval_evidence`` on
transformer_hierarchy_adamw, 4 blocks, the first held out too): the coupled · NTK Θ(0) row's
held-out error was 164 against the frozen baseline's 51 in the first block, and 20, 6, 22
against 76, 47, 77 in the other three.

A refit starts from the full fit's parameters (``x0``, no coarse scan) with a small
``max_nfev``, keeps the full fit's homogeneity degree and layers (an estimate from a shorter
run would change the model, not only its parameters), and scales every observable's residuals
exactly as the full fit does (``weights`` compensate the training part's own spread), so a
held-out residual is in the units the comparison ranks in. Held-out error is the sum of squared
scaled residuals over the held-out checkpoints; the frozen baseline's is its own residuals
there (it has no parameter to refit).

Why blocks and not single checkpoints: residuals along a trajectory are strongly correlated
(lag-1 autocorrelation 0.9–0.98 on the shipped runs), so a held-out checkpoint between two
training ones is nearly given by its neighbours; contiguous blocks keep the held-out part
about as far from the training part as the residuals' correlation length.
"""

from __future__ import annotations

import math
import time as _time
import warnings

import numpy as np

from .observables import FLOORS, observe

__all__ = ["cross_validate", "CrossValidation", "SCHEMES", "scaled_residuals"]

SCHEMES = ("forward", "leave-one-out")


def scaled_residuals(engine, predicted: dict) -> np.ndarray:
    """(T, total columns) residuals of ``predicted`` (observable -> (T, m)) against the
    engine's observations, scaled as the fit scales them (``engine.scaled_residuals``), the
    observables side by side; a non-finite prediction counts inf."""
    return np.concatenate(engine.scaled_residuals(predicted, nonfinite=math.inf), axis=1)


def split(T: int, blocks: int, scheme: str) -> list:
    """[(train index array, held-out index array), ...] for a run of T checkpoints (module
    docstring). Raises ValueError when T is too short for the blocks."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: expected one of {SCHEMES}, got {scheme!r}")
    blocks = int(blocks)
    if blocks < 2:
        raise ValueError(f"blocks: expected an integer >= 2, got {blocks!r}")
    if T - 1 < 2 * blocks:
        raise ValueError(f"blocks: {blocks} blocks need at least {2 * blocks + 1} checkpoints, the run has {T}")
    edges = np.linspace(1, T, blocks + 1).round().astype(int)
    cuts = [np.arange(edges[i], edges[i + 1]) for i in range(blocks)]
    out = []
    if scheme == "forward":
        for i in range(1, blocks):
            out.append((np.arange(0, edges[i]), cuts[i]))
    else:
        everything = np.arange(T)
        for i in range(1, blocks):
            out.append((np.setdiff1d(everything, cuts[i]), cuts[i]))
    return out


class CrossValidation:
    """Result of :func:`cross_validate`.

    Attributes:
        scheme: as given. blocks: the blocks used (fewer than asked on a short run).
        folds: [(train indices, held-out indices), ...].
        error: row name -> held-out sum of squared scaled residuals over every fold (inf when a
            refit's prediction failed to integrate; absent for rows not cross-validated).
        fold_error: row name -> list of per-fold held-out errors.
        n: held-out residuals in all (the same for every row).
        cpu_time: row name -> this process's CPU seconds of its refits (without the Jacobian
            workers', :func:`ufm.bridge.fitting.fit_all`); cpu_time_total the sum.
        refit_params: row name -> list of per-fold fitted parameters.
    """

    def __init__(self, scheme, blocks, folds):
        self.scheme, self.blocks, self.folds = scheme, blocks, folds
        self.error, self.fold_error, self.cpu_time, self.refit_params = {}, {}, {}, {}
        self.n = 0

    @property
    def cpu_time_total(self) -> float:
        return float(sum(self.cpu_time.values()))

    def describe(self) -> str:
        """E.g. "forward-chaining cross-validation, 3 folds of 4 blocks"."""
        what = "forward-chaining" if self.scheme == "forward" else "leave-one-block-out"
        return f"{what} cross-validation, {len(self.folds)} folds of {self.blocks} blocks"

    def as_dict(self) -> dict:
        """scheme, blocks, folds (held-out checkpoint ranges), n, cpu_time_s."""
        return {"scheme": self.scheme, "blocks": self.blocks, "n": int(self.n),
                "folds": [[int(h[0]), int(h[-1])] for _, h in self.folds], "cpu_time_s": self.cpu_time_total}

    def mse(self, name: str) -> float:
        """Held-out mean squared scaled residual of a row."""
        return self.error[name] / self.n if self.n else float("nan")


def _refit(f, run, train, max_nfev: int):
    """A copy of the fitted ``f`` refitted on the checkpoints ``train`` of ``run`` (module
    docstring)."""
    from .fitting import Fit
    eng = f.engine_
    kw = f.get_params()
    weights = {}
    for nm in eng.obs_names:
        o = eng.observed[nm][train]
        spread = float(np.nanstd(o)) if np.isfinite(o).any() else 1.0
        # the sub-run's engine scales by max(spread of its part, floor)·√m / √w: choose w so that
        # its scale is the full fit's
        weights[nm] = (max(spread, FLOORS[nm]) * math.sqrt(o.shape[1]) / eng.scales[nm]) ** 2
    kw.update(x0=dict(f.params_), scan=False, max_nfev=int(max_nfev), weights=weights,
              degree=getattr(f, "degree_", None), observables=tuple(eng.obs_names))
    if getattr(f, "family_", None) == "deep":
        kw["layers"] = f.layers_
    g = Fit(**kw)
    with warnings.catch_warnings():
        # the full fit has said it already (e.g. a Euclidean kernel on an Adam run); once per refit is noise
        warnings.simplefilter("ignore", UserWarning)
        return g.fit(run.select(train))


def cross_validate(cmp, *, blocks: int = 4, scheme: str = "leave-one-out", max_nfev: int = 8, oracle: bool = False,
                   names=None) -> CrossValidation:
    """Blocked cross-validation of a :class:`~ufm.bridge.Comparison`'s rows (module docstring).

    Arguments:
        cmp: a fitted Comparison.
        blocks: contiguous blocks of checkpoints 1 … T−1 (>= 2; fewer on a run too short for
            two checkpoints a block); either scheme holds out each block after the first in turn:
            blocks − 1 refits per row.
        scheme: ``"leave-one-out"`` (default) or ``"forward"``.
        max_nfev: least-squares budget of each refit (it starts at the full fit's optimum).
        oracle: also cross-validate the oracle rows (never ranked; off by default: they cost
            refits and decide nothing).
        names: the rows to cross-validate (default every predictive row, + oracle rows).

    Returns:
        :class:`CrossValidation`; the baseline's error is included under its row name.
    """
    # the baseline's row name from the comparison itself (importing it from .comparison would be a cycle)
    base = next(nm for nm in cmp.rows() if cmp.role(nm) == "baseline")
    run = cmp.run
    # a short run (an exporter that stopped early) gets fewer blocks: two checkpoints a block at least
    folds = split(run.T, min(int(blocks), max(2, (run.T - 1) // 2)), scheme)
    blocks = len(folds) + 1
    cv = CrossValidation(scheme, int(blocks), folds)
    base_eng = cmp.baseline.engine_
    held = np.concatenate([h for _, h in folds])
    cv.n = int(held.size * sum(base_eng.observed[nm].shape[1] for nm in base_eng.obs_names))
    rb = scaled_residuals(base_eng, cmp.baseline.predicted_)
    cv.fold_error[base] = [float(np.sum(rb[h] ** 2)) for _, h in folds]
    cv.error[base] = float(sum(cv.fold_error[base]))
    cv.cpu_time[base] = 0.0
    if names is None:
        names = [nm for nm in cmp.fits if cmp.role(nm) == "predictive" or (oracle and cmp.role(nm) == "oracle")]
    for nm in names:
        f = cmp.fits[nm]
        c0 = _time.process_time()
        errs, pars = [], []
        for train, hold in folds:
            try:
                g = _refit(f, run, train, max_nfev)
            except Exception as err:          # a refit that cannot be set up is a failed prediction
                errs.append(math.inf)
                pars.append({"error": f"{type(err).__name__}: {err}"})
                continue
            tr = f.predict(g.params_)
            pred = observe(tr.gram_H, tr.gram_W, f.engine_.problem, f.engine_.obs_names)
            r = scaled_residuals(f.engine_, pred)[hold]
            e = float(np.sum(r ** 2))
            errs.append(e if math.isfinite(e) else math.inf)
            pars.append(dict(g.params_))
        cv.fold_error[nm] = errs
        cv.error[nm] = float(sum(errs))
        cv.refit_params[nm] = pars
        cv.cpu_time[nm] = _time.process_time() - c0
    return cv
