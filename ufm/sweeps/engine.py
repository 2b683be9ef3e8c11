"""The worker side of a sweep: payloads in, plain result records out.

:func:`run_payloads` is what an executor runs for one chunk (and what the in-process path
runs for one batch). It builds each configuration's model and initial state, validates them
(a configuration that fails here is recorded as ``bad_input``), packs everything into the
flat buffers of :func:`ufm.kernels.sweep.integrate_many`, runs that kernel once, and turns
every configuration's outputs into a record of plain values and numpy arrays (picklable, no
:class:`~ufm.problems.Problem` inside), including its summary metrics.
"""

from __future__ import annotations

import time as _time
import traceback
import warnings

import numpy as np

from .. import metrics as _metrics
from ..kernels import integrate as _k
from ..solving import Outputs, initial_vector, parse_save
from ..trajectory import Trajectory
from .specs import build, rebuild_explicit

__all__ = ["run_payloads", "summarize", "summary_of", "resummarize", "build_payload"]

REASONS = {
    _k.STATUS_MAX_STEPS: "max_steps",
    _k.STATUS_STEP_UNDERFLOW: "step_underflow",
    _k.STATUS_NONFINITE: "nonfinite",
}
WHY = {
    "max_steps": "max_steps = {max_steps} attempted steps were used up",
    "step_underflow": "the step size underflowed (the solution is diverging, or too stiff for an explicit "
                      "method at these tolerances)",
    "nonfinite": "the state became non-finite or exceeded 1e60 (divergence)",
}


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
    import numba

    from ..kernels import sweep as _ks

    T = options["t"].shape[0]
    records: list = [None] * len(items)
    prepared = []
    for k, item in enumerate(items):
        _index, _key, payload = item
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model, init, space = build_payload(payload)
                y, d = initial_vector(model, init, space)
                if space == "gram":
                    from ..solving import _warn_if_rank_deficient
                    _warn_if_rank_deficient(init)
                names = parse_save(options["save"], space)
            packed = model._pack(space, d or 0)
            out = Outputs(T, y.size, model.K, model.N, d, model.bias, names)
            prepared.append((k, model, space, d, y, packed, out, [str(w.message) for w in caught]))
        except Exception as exc:  # noqa: BLE001 - every bad input is recorded, none stops the sweep
            records[k] = _failure(item, "bad_input", f"{type(exc).__name__}: {exc}", _safe_columns(payload))
    if prepared:
        started = _time.perf_counter()
        nthreads = numba.get_num_threads() if threads is None else threads
        if nthreads <= 1 or len(prepared) == 1:
            _run_serial(prepared, options)
        else:
            _run_kernel(prepared, options, threads, _ks, numba)
        elapsed = _time.perf_counter() - started
        for k, model, space, d, y, packed, out, warns in prepared:
            try:
                records[k] = _finish(items[k], model, space, d, out, options, elapsed, len(prepared), warns)
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


def _offsets(sizes):
    off = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=off[1:])
    return off


def _run_serial(prepared, options):
    """One configuration after the other in this thread, through the driver ufm.solve calls
    (same compiled specialisation, no threading layer: safe in forked workers, where GNU
    OpenMP — numba's usual layer on Linux — aborts after a fork)."""
    ts = options["t"]
    T = ts.shape[0]
    solver = options["solver"]
    arr = solver.arrays
    for p in prepared:
        _k_, _model, _space, _d, y, packed, out, _w = p
        ip, coef, Y, pi, theta, theta_t, theta_pinv = packed
        carry = np.zeros(_k.CARRY_SIZE)
        carry[_k.CARRY_T] = options["t0"]
        carry[_k.CARRY_H] = options["h0"]
        carry[_k.CARRY_FACOLD] = 1e-4
        status, j = _k.integrate(y, carry, ts, 0, T, arr["A"], arr["b"], arr["c"], arr["e"], arr["P"],
                                 float(solver.controller_order), int(solver.adaptive), int(solver.fsal),
                                 options["h_max"], options["rtol"], options["atol"], options["max_steps"],
                                 ip, coef, Y, pi, theta, theta_t, theta_pinv, *out.kernel_args())
        out.status, out.reached, out.carry = int(status), int(j), carry


def _run_kernel(prepared, options, threads, _ks, numba):
    ts = options["t"]
    T = ts.shape[0]
    solver = options["solver"]
    arr = solver.arrays
    n = len(prepared)
    ip = np.stack([p[5][0] for p in prepared])
    coef = np.stack([p[5][1] for p in prepared])
    save = np.stack([p[6].flags for p in prepared])
    carry = np.zeros((n, _k.CARRY_SIZE))
    carry[:, _k.CARRY_T] = options["t0"]
    carry[:, _k.CARRY_H] = options["h0"]
    carry[:, _k.CARRY_FACOLD] = 1e-4
    flat = {}
    for name, get in (("y", lambda p: p[4]), ("Y", lambda p: p[5][2]), ("pi", lambda p: p[5][3]),
                      ("th", lambda p: p[5][4]), ("tt", lambda p: p[5][5]), ("tp", lambda p: p[5][6]),
                      ("st", lambda p: p[6].state), ("gw", lambda p: p[6].gram_W),
                      ("gh", lambda p: p[6].gram_H), ("lg", lambda p: p[6].logits)):
        parts = [np.ascontiguousarray(get(p), dtype=np.float64).ravel() for p in prepared]
        buf = np.concatenate(parts) if parts else np.zeros(0)
        if name in ("Y", "pi", "th"):
            buf.flags.writeable = False  # the types ufm.solve uses: one shared specialisation
        flat[name] = (buf, _offsets([a.size for a in parts]))
    out_loss = np.full((n, T), np.nan)
    out_data = np.full((n, T), np.nan)
    status = np.zeros(n, dtype=np.int64)
    reached = np.zeros(n, dtype=np.int64)
    # costliest first (state size as the proxy), so that no thread starts a big one last
    order = np.argsort(-np.array([p[4].size for p in prepared]), kind="stable").astype(np.int64)
    previous = numba.get_num_threads()
    nthreads = previous if threads is None else max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    if nthreads != previous:
        numba.set_num_threads(nthreads)
    try:
        _ks.integrate_many(order, np.zeros(1, dtype=np.int64), np.zeros(nthreads, dtype=np.int64), ts,
                           arr["A"], arr["b"], arr["c"], arr["e"], arr["P"], float(solver.controller_order),
                           int(solver.adaptive), int(solver.fsal), options["h_max"], options["rtol"],
                           options["atol"], options["max_steps"], ip, coef, save, carry,
                           *flat["y"], *flat["Y"], *flat["pi"], *flat["th"], *flat["tt"], *flat["tp"],
                           out_loss, out_data, *flat["st"], *flat["gw"], *flat["gh"], *flat["lg"],
                           status, reached)
    finally:
        if nthreads != previous:
            numba.set_num_threads(previous)
    # copy the outputs back into each configuration's Outputs (the kernel wrote the flat views)
    for q, p in enumerate(prepared):
        out = p[6]
        out.loss[:] = out_loss[q]
        out.data[:] = out_data[q]
        for name, target in (("st", out.state), ("gw", out.gram_W), ("gh", out.gram_H), ("lg", out.logits)):
            buf, off = flat[name]
            target.reshape(-1)[:] = buf[off[q]:off[q + 1]]
        p[4][:] = flat["y"][0][flat["y"][1][q]:flat["y"][1][q + 1]]
        out.status = int(status[q])
        out.reached = int(reached[q])
        out.carry = carry[q].copy()


def _finish(item, model, space, d, out, options, elapsed, batch, warns) -> dict:
    index, key, payload = item
    j = out.reached
    ts = options["t"]
    fields = out.fields(j)
    arrays = {"t": ts[:j].copy(), **fields}
    carry = out.carry
    solver = options["solver"]
    info = {
        "method": solver.name, "space": space, "rtol": options["rtol"], "atol": options["atol"],
        "t0": options["t0"], "d": d, "dt": options["dt"], "accepted_steps": int(carry[_k.CARRY_ACCEPTED]),
        "rejected_steps": int(carry[_k.CARRY_REJECTED]), "rhs_evaluations": int(carry[_k.CARRY_RHS]),
        "model": model.describe(), "sweep_hash": key, "batch_wall_time_s": elapsed, "batch_size": batch,
    }
    if warns:
        info["warnings"] = warns
    record = {"index": index, "hash": key, "status": "ok", "reason": None, "error": "", "t_fail": float("nan"),
              "columns": _columns(payload, model), "arrays": arrays, "info": info, "summary": {}}
    if out.status != _k.STATUS_OK:
        reason = REASONS[out.status]
        t_fail = float(carry[_k.CARRY_T])
        why = WHY[reason].format(max_steps=options["max_steps"])
        record.update(status="failed", reason=reason, t_fail=t_fail,
                      error=f"IntegrationError: integration stopped at t = {t_fail:.6g}: {why}. The {j} save "
                            "time(s) before it are kept.")
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

