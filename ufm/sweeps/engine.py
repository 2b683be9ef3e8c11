"""The worker side of a sweep: payloads in, plain result records out.

:func:`run_payloads` is what an executor runs for one chunk (and what the in-process path
runs for one batch). It builds each configuration's model and initial state, validates them
(a configuration that fails here is recorded as ``bad_input``), runs them all through
:func:`ufm.engine.integrate_batch` (one call of the parallel kernel, or one after the other),
and turns every configuration's outputs into a record of plain values and numpy arrays
(picklable, no :class:`~ufm.problems.Problem` inside), including its summary metrics.
"""

from __future__ import annotations

import traceback
import warnings

import numpy as np

from .. import engine
from .. import metrics as _metrics
from ..trajectory import Trajectory
from .specs import build, rebuild_explicit

__all__ = ["run_payloads", "summarize", "summary_of", "resummarize", "build_payload"]

def build_payload(payload: dict):
    """(model, init, space) of a payload (a spec or an explicit pair)."""
    if payload["kind"] == "spec":
        spec = payload["spec"]
        model, init = build(spec)
        return model, init, spec["space"]
    model, init = rebuild_explicit(payload)
    return model, init, payload["space"]


def summarize(t, loss, gram_H, logits, problem, threshold: float = 0.02) -> dict:
    """Default summary metrics of one trajectory (NaN where undefined or not saved), all from
    :func:`ufm.metrics.evaluate` (the metrics ``Trajectory.metric`` reports).

    Arguments:
        t: (T,) save times reached; loss: (T,) objective.
        gram_H: (T, N, N) or None; logits: (T, K, N) or None.
        problem: the :class:`~ufm.problems.Problem` (labels, attributes).
        threshold: collapse threshold of the semantic gap (see
            :func:`ufm.metrics.transient_summary`).

    Returns:
        dict with ``t_final``, ``loss_final``, ``accuracy_final``, ``etf_distance_final``,
        ``gap_final``, ``gap_peak``, ``t_peak``, ``t_collapse``, ``collapsed`` and
        ``gap_centred`` (the gap's convention: True, centred cosines; pairs with equal labels
        excluded).
    """
    nan = float("nan")
    out = {"t_final": nan, "loss_final": nan, "accuracy_final": nan, "etf_distance_final": nan,
           "gap_final": nan, "gap_peak": nan, "t_peak": nan, "t_collapse": nan, "collapsed": False,
           "gap_centred": _metrics.DEFAULT_GAP_CENTRED}
    if len(t) == 0:
        return out
    out["t_final"] = float(t[-1])
    out["loss_final"] = float(loss[-1])
    labels = problem.labels
    if logits is not None and labels is not None:
        out["accuracy_final"] = _metrics.evaluate("accuracy", logits=logits[-1], problem=problem)
    if gram_H is not None and labels is not None and problem.N >= 2:
        try:
            out["etf_distance_final"] = _metrics.evaluate("etf_distance", gram_H=gram_H[-1], problem=problem)
        except ValueError:
            pass
    if gram_H is not None and problem.attributes is not None and np.all(np.isfinite(gram_H)) \
            and _metrics.gap_pairs(problem.attributes, labels).defined:
        gap = _metrics.evaluate("semantic_gap", gram_H=gram_H, problem=problem)
        out["gap_final"] = float(gap[-1])
        s = _metrics.transient_summary(t, gap, threshold=threshold, centred=out["gap_centred"])
        out.update(gap_peak=s.peak, t_peak=s.t_peak, t_collapse=s.t_collapse, collapsed=bool(s.collapsed))
    return out


def _failure(item, reason: str, message: str, columns: dict) -> dict:
    index, key, _payload = item
    return {"index": index, "hash": key, "status": "failed", "reason": reason, "error": message,
            "t_fail": float("nan"), "columns": columns, "arrays": None, "info": {}, "summary": {}}


def _columns(payload: dict, model=None) -> dict:
    from .specs import explicit_columns
    if payload["kind"] == "spec":
        cols = dict(payload["spec"])
        cols["levels"] = "x".join(str(q) for q in cols["levels"]) if "levels" in cols else ""
        cols["label_permutation"] = cols.get("label_permutation") or "none"
        if model is not None:
            cols["K"], cols["N"] = model.K, model.N
        return cols
    return explicit_columns(payload)


def run_payloads(items, options: dict, threads: int | None = None) -> list[dict]:
    """Integrate a batch of configurations with one call of the parallel kernel.

    Arguments:
        items: list of ``(index, hash, payload)``; a payload is ``{"kind": "spec", "spec": …}``
            or the output of :func:`ufm.sweeps.specs.explicit_payload`.
        options: the run options (``t`` (T,), ``solver``, ``rtol``, ``atol``, ``t0``, ``dt``,
            ``max_steps``, ``h_max``, ``save``, ``summary``, ``threshold``, ``summary_key``), as built by
            :func:`ufm.sweep`.
        threads: numba threads for this call (None: numba's setting). With one thread (or
            one configuration) the configurations run one after the other through the same
            driver as :func:`ufm.solve`, without numba's threading layer.

    Returns:
        One record per item, in order: ``index``, ``hash``, ``status`` (``"ok"`` or
        ``"failed"``), ``reason`` (None, ``"bad_input"``, ``"max_steps"``,
        ``"step_underflow"``, ``"nonfinite"`` or ``"error"``), ``error`` (message),
        ``t_fail``, ``columns`` (config description), ``arrays`` (``t``, ``loss``,
        ``data_loss`` and the saved quantities, or None), ``info``, ``summary`` and (except
        for bad input) ``summary_options``, the options the summary was made with.
    """
    T = options["t"].shape[0]
    records: list = [None] * len(items)
    prepared = []
    for k, item in enumerate(items):
        _index, _key, payload = item
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model, init, space = build_payload(payload)
                y, d = engine.initial_vector(model, init, space)
                if space == "gram":
                    engine.warn_if_rank_deficient(init)
                names = engine.parse_save(options["save"], space)
            packed = engine.pack_model(model, space, d or 0)
            buffers = engine.SaveBuffers(T, y.size, model.K, model.N, d, model.bias, names)
            prepared.append((k, model, space, d, (packed, y, buffers), [str(w.message) for w in caught]))
        except Exception as exc:  # noqa: BLE001 - every bad input is recorded, none stops the sweep
            records[k] = _failure(item, "bad_input", f"{type(exc).__name__}: {exc}", _safe_columns(payload))
    if prepared:
        carries = np.stack([engine.new_carry(options["t0"], options["h0"]) for _ in prepared])
        ctl = engine.controls(options["rtol"], options["atol"], options["h_max"], options["max_steps"])
        runs = engine.integrate_batch([p[4] for p in prepared], options["t"], engine.tableau(options["solver"]),
                                      ctl, carries, threads)
        for (k, model, space, d, _job, warns), run in zip(prepared, runs):
            try:
                records[k] = _finish(items[k], model, space, d, run, options, len(prepared), warns)
            except Exception as exc:  # noqa: BLE001 - e.g. a user summary callable that raised
                records[k] = _failure(items[k], "error", f"{type(exc).__name__}: {exc}\n"
                                      f"{traceback.format_exc(limit=3)}", _safe_columns(items[k][2], model))
                # the failure may be the summary's: a rerun with other summary options retries it
                records[k]["summary_options"] = options["summary_key"]
    return records


def _safe_columns(payload, model=None):
    try:
        return _columns(payload, model)
    except Exception:  # noqa: BLE001 - a malformed payload still gets a row
        return {}


def _finish(item, model, space, d, run, options, batch, warns) -> dict:
    index, key, payload = item
    j = run.reached
    ts = options["t"]
    arrays = {"t": ts[:j].copy(), **run.buffers.fields(j)}
    solver = options["solver"]
    info = {
        "method": solver.name, "space": space, "rtol": options["rtol"], "atol": options["atol"],
        "t0": options["t0"], "d": d, "dt": options["dt"], **run.counts(),
        "model": model.describe(), "sweep_hash": key, "batch_wall_time_s": run.wall_time_s, "batch_size": batch,
    }
    if warns:
        info["warnings"] = warns
    record = {"index": index, "hash": key, "status": "ok", "reason": None, "error": "", "t_fail": float("nan"),
              "columns": _columns(payload, model), "arrays": arrays, "info": info, "summary": {}}
    if not run.ok:
        reason, message = engine.failure(run.status, run.t_reached, j, options["max_steps"], kept="are kept")
        record.update(status="failed", reason=reason, t_fail=run.t_reached, error=f"IntegrationError: {message}")
    record["summary"] = summary_of(Trajectory(**arrays, problem=model.problem, model=model, info=info), options)
    record["summary_options"] = options["summary_key"]
    return record


def summary_of(traj: Trajectory, options: dict) -> dict:
    """The summary metrics a record stores for one configuration's saves.

    The one place they are computed: for a fresh run (from the kernel's outputs) and for a
    resumed one whose stored summary was made with other options (from the stored
    trajectory), so that both give the same numbers.

    Arguments:
        traj: the configuration's trajectory (its model, problem and ``info`` step counts).
        options: the run options (``summary``, ``threshold``).

    Returns:
        dict: :func:`summarize`'s metrics (unless ``summary`` is False), those of a
        ``summary`` callable, ``accepted_steps`` and ``rhs_evaluations``.

    Raises:
        TypeError: the summary callable returned something other than a dict of scalars.
    """
    out = {}
    summary_opt = options["summary"]
    if summary_opt is not False:
        out = summarize(traj.t, traj.loss, traj.gram_H, traj.logits, traj.model.problem, options["threshold"])
        if callable(summary_opt):
            extra = summary_opt(traj)
            if not isinstance(extra, dict):
                raise TypeError(f"summary: the callable must return a dict of scalars, got {type(extra).__name__}")
            out.update({str(k): _scalar(v, k) for k, v in extra.items()})
    out["accepted_steps"] = traj.info["accepted_steps"]
    out["rhs_evaluations"] = traj.info["rhs_evaluations"]
    return out


def resummarize(record: dict, traj: Trajectory, options: dict) -> dict:
    """A stored record with its summary recomputed from its stored trajectory under
    ``options``: what a fresh run with these options records (a summary callable that
    raises makes it a failure with reason ``"error"``, as in a fresh run)."""
    try:
        summary = summary_of(traj, options)
    except Exception as exc:  # noqa: BLE001 - e.g. a user summary callable that raised
        failed = _failure((record["index"], record["hash"], None), "error", f"{type(exc).__name__}: {exc}\n"
                          f"{traceback.format_exc(limit=3)}", record.get("columns") or {})
        return {**failed, "summary_options": options["summary_key"]}
    return {**record, "summary": summary, "summary_options": options["summary_key"]}


def _scalar(v, k):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, str):
        return v
    raise TypeError(f"summary: value {k!r} must be a number, bool or string, got {type(v).__name__}")

