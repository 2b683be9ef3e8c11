"""``ufm.sweep``: many trajectories, in parallel threads, on an executor, resumable on disk."""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import sys
import time as _time

import numpy as np

from .._validation import as_positive_int, as_real, check_choice
from ..solvers import SOLVERS, get_solver
from ..integration import DEFAULT_SAVE, check_run_options, parse_save
from ..trajectory import Trajectory
from . import engine
from .specs import digest, explicit_payload, normalise_spec
from .store import Store

__all__ = ["sweep", "SweepResult", "SweepIncomplete", "config_hash", "load"]

#: Columns every row of a result table has, in this order (config columns and summary
#: metrics follow).
BASE_COLUMNS = ("index", "hash", "status", "reason", "error", "t_fail")
_MAX_BATCH = 4096   # configurations per kernel call in this process (bounds the output buffers)


class SweepIncomplete(RuntimeError):
    """Some configurations of a sweep did not run because their task failed (a worker died,
    the pool broke, a chunk could not be shipped); it is never raised for a configuration
    that itself failed (those are recorded).

    Attributes:
        result: the :class:`SweepResult` of everything that finished (rows of the missing
            configurations have ``status == "not-run"``).
        causes: the exceptions of the failed tasks.
    """

    def __init__(self, message: str, result: "SweepResult", causes: list):
        super().__init__(message)
        self.result = result
        self.causes = causes


# -- options ---------------------------------------------------------------------------------

def _options(t, method, rtol, atol, space, save, t0, dt, max_steps, h_max, summary, threshold):
    """Validated run options (shipped to workers) and their hashable description."""
    space = check_choice(space, "space", ("parameters", "gram"))
    solver = get_solver(method, rtol)        # "auto": the explicit pair for this rtol
    rtol, atol, t0, ts, max_steps, h_max, h0 = check_run_options(solver, t, rtol, atol, t0, dt, max_steps, h_max)
    ts = np.ascontiguousarray(ts, dtype=np.float64)
    names = parse_save(save, "parameters")  # unknown names fail here, W/H in Gram space per config
    save_key = "all" if isinstance(save, str) and save == "all" else sorted(names)
    if summary is not True and summary is not False and not callable(summary):
        raise TypeError(f"summary: expected True, False or a callable summary(trajectory) -> dict, got {summary!r}")
    threshold = as_real(threshold, "threshold")
    options = {"t": ts, "solver": solver, "rtol": rtol, "atol": atol, "t0": t0, "dt": dt, "h0": h0,
               "max_steps": max_steps, "h_max": h_max, "save": save_key, "summary": summary,
               "threshold": threshold, "summary_key": _summary_key(summary, threshold)}
    # a registered method is its name; any other solver is everything the kernel receives
    method_key = solver.name if SOLVERS.get(solver.name) is solver else {
        "name": solver.name, "tableau": {k: v for k, v in solver.arrays.items()},
        "controller_order": solver.controller_order, "adaptive": solver.adaptive, "fsal": solver.fsal,
        "controller": [solver.beta, solver.fac_min, solver.fac_max]}
    run_key = {"t": ts, "method": method_key, "rtol": rtol, "atol": atol, "t0": t0,
               "dt": None if dt is None else float(dt), "max_steps": max_steps,
               "h_max": "inf" if h_max == math.inf else h_max, "save": save_key}
    return options, run_key, space


def _summary_key(summary, threshold: float) -> dict:
    """What a record's summary metrics depend on besides its trajectory (stored in the
    record as ``summary_options`` and compared on a rerun)."""
    if summary is False:
        return {"summary": "none"}
    if callable(summary):
        name = f"{getattr(summary, '__module__', '?')}.{getattr(summary, '__qualname__', type(summary).__name__)}"
        return {"summary": "callable", "callable": name, "threshold": threshold}
    return {"summary": "default", "threshold": threshold}


def _payload(config, space: str) -> dict:
    """Payload of one configuration (raises for a malformed one)."""
    if isinstance(config, dict):
        return {"kind": "spec", "spec": normalise_spec(config, space=space)}
    if isinstance(config, (tuple, list)) and len(config) == 2:
        return explicit_payload(config[0], config[1], space=space)
    raise TypeError(f"config: expected a spec dict or a (model, init) pair, got {type(config).__name__}")


def _hash(payload: dict, run_key: dict) -> str:
    return digest({"ufm-sweep": 1, "config": payload, "run": run_key})


def config_hash(config, t, *, method="auto", rtol: float = 1e-8, atol: float = 1e-10,
                space: str = "parameters", save=DEFAULT_SAVE, t0: float = 0.0, dt=None,
                max_steps: int = 10_000_000, h_max: float = math.inf) -> str:
    """The hash a configuration has in a sweep with these options (its file name in ``out=``).

    sha256 of the canonical JSON of the normalised spec (or of the model's parameters and
    the problem's and initial state's arrays, each as dtype, shape and the sha256 of its
    bytes) together with every option that changes the stored trajectory: save times,
    method (the solver's name; ``"auto"``, the default, is the name of the pair it picks for
    ``rtol``; for a solver that is not registered: its tableau, controller order, adaptivity
    and FSAL), ``rtol``, ``atol``, ``t0``, ``dt``, ``max_steps``, ``h_max``, ``space`` and
    the saved quantities. Options that only change the summary metrics (``summary``,
    ``threshold``) are not part of it: a record states the ones its summary was made with,
    and :func:`sweep` recomputes the summary from the stored trajectory when they differ,
    so one trajectory is integrated and stored once whatever it is summarised with.

    Arguments:
        config: a spec dict or a ``(model, init)`` pair.
        t, method, rtol, atol, space, save, t0, dt, max_steps, h_max: as in :func:`sweep`.

    Returns:
        64 lowercase hex digits.

    Raises:
        TypeError / ValueError: a malformed configuration or option (named).
    """
    _, run_key, space = _options(t, method, rtol, atol, space, save, t0, dt, max_steps, h_max, True, 0.02)
    return _hash(_payload(config, space), run_key)


# -- progress ----------------------------------------------------------------------------------

class _Progress:
    """A one-line progress report on stderr.

    ``mode``: None (on when stderr is a terminal, shown once the sweep has run 1 s), True
    (always: a rewritten line on a terminal, else a new line every 10 s), False (off), or a
    callable ``progress(done, total)``.
    """

    def __init__(self, mode, total: int, skipped: int):
        self.callable = mode if callable(mode) else None
        tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.enabled = self.callable is None and (mode is True or (mode is None and tty))
        self.tty = tty
        self.total, self.skipped = total, skipped
        self.started = _time.perf_counter()
        self.last = 0.0
        self.shown = False

    def update(self, done: int, failed: int, final: bool = False):
        if self.callable is not None:
            self.callable(done, self.total)
            return
        if not self.enabled:
            return
        now = _time.perf_counter()
        elapsed = now - self.started
        if not final and (elapsed < 1.0 or now - self.last < (0.2 if self.tty else 10.0)):
            return
        self.last = now
        ran = done - self.skipped
        left = self.total - done
        eta = f", ~{elapsed / ran * left:.0f} s left" if ran > 0 and left > 0 else ""
        msg = (f"sweep: {done}/{self.total} done ({self.skipped} resumed, {failed} failed), "
               f"{elapsed:.1f} s{eta}")
        if self.tty:
            sys.stderr.write("\r" + msg.ljust(78) + ("\n" if final else ""))
        else:
            sys.stderr.write(msg + "\n")
        sys.stderr.flush()
        self.shown = True

    def close(self, done, failed):
        if self.enabled and (self.shown or _time.perf_counter() - self.started >= 1.0):
            self.update(done, failed, final=True)


# -- results ------------------------------------------------------------------------------------

class SweepResult:
    """The outcome of a sweep: one row per configuration, and its trajectory on demand.

    Rows (``result.rows``, also ``result[i]`` and iteration) are flat dicts: ``index``,
    ``hash``, ``status`` (``"ok"``, ``"failed"`` or ``"not-run"``), ``reason``, ``error``,
    ``t_fail``, the configuration's columns (the normalised spec, or the model's parameters
    for an explicit pair, plus K, N, d, space) and the summary metrics (``loss_final``,
    ``accuracy_final``, ``etf_distance_final``, ``gap_peak``, ``t_peak``, ``t_collapse``,
    ``collapsed``, ``accepted_steps``, ``rhs_evaluations``, … and those of a ``summary=``
    callable).

    Use :meth:`to_array` for a numpy structured array (one field per column),
    :meth:`column` for one column, :meth:`trajectory` for one configuration's
    :class:`~ufm.trajectory.Trajectory`, and :meth:`load` to read a sweep directory.
    """

    def __init__(self, rows: list, trajectories: list, out: str | None = None, payloads=None):
        self.rows = rows
        self._traj = trajectories   # per row: Trajectory, dict of arrays, a path, or None
        self._payloads = payloads or [None] * len(rows)
        self.out = out

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i) -> dict:
        return self.rows[self._position(i)]

    def __repr__(self) -> str:
        counts = {s: sum(r["status"] == s for r in self.rows) for s in ("ok", "failed", "not-run")}
        where = f", out={self.out!r}" if self.out else ""
        return (f"SweepResult({len(self)} configurations: {counts['ok']} ok, {counts['failed']} failed"
                + (f", {counts['not-run']} not run" if counts["not-run"] else "") + where + ")")

    @property
    def complete(self) -> bool:
        """True when every configuration ran (successfully or with a recorded failure)."""
        return all(r["status"] != "not-run" for r in self.rows)

    @property
    def failed(self) -> list[dict]:
        """Rows of the configurations that failed (their ``error`` says why)."""
        return [r for r in self.rows if r["status"] == "failed"]

    def _position(self, i) -> int:
        if isinstance(i, str):
            for k, r in enumerate(self.rows):
                if r["hash"] == i or (len(i) >= 8 and r["hash"].startswith(i)):
                    return k
            raise KeyError(f"i: no configuration with hash {i!r}")
        if isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            if not -len(self.rows) <= i < len(self.rows):
                raise IndexError(f"i: expected a row index in [0, {len(self.rows)}), got {i}")
            return int(i) % len(self.rows)
        raise TypeError(f"i: expected a row index or a hash string, got {type(i).__name__}")

    def columns(self) -> list[str]:
        """Every column name, base columns first, then in first-seen order."""
        names = list(BASE_COLUMNS)
        for r in self.rows:
            for k in r:
                if k not in names:
                    names.append(k)
        return names

    def column(self, name: str) -> np.ndarray:
        """One column as an array, (n,) (missing values: NaN, or '' for strings).

        Raises:
            KeyError: no row has this column.
        """
        if not any(name in r for r in self.rows):
            raise KeyError(f"name: no column {name!r}; columns are {self.columns()}")
        return _column([r.get(name) for r in self.rows])

    def to_array(self) -> np.ndarray:
        """The table as a numpy structured array, (n,), one field per column.

        Booleans stay bool, integers int64 (missing: -1), other numbers float64 (missing:
        NaN), everything else a unicode string.
        """
        cols = self.columns()
        arrays = [_column([r.get(c) for r in self.rows]) for c in cols]
        dtype = [(c, a.dtype) for c, a in zip(cols, arrays)]
        out = np.empty(len(self.rows), dtype=dtype)
        for c, a in zip(cols, arrays):
            out[c] = a
        return out

    def to_dataframe(self):
        """The table as a ``pandas.DataFrame`` (the dtypes of :meth:`to_array`): see
        :func:`ufm.xarray_interop.sweep_to_dataframe`. Needs ``pip install "ufm[xarray]"``."""
        from ..xarray_interop import sweep_to_dataframe
        return sweep_to_dataframe(self)

    def to_xarray(self, dims="auto"):
        """The sweep as an ``xarray.Dataset``, parameters as coordinates, unstacked into one
        dimension per parameter when the configurations form a full product: see
        :func:`ufm.xarray_interop.sweep_to_xarray` (``dims``). Needs ``"ufm[xarray]"``."""
        from ..xarray_interop import sweep_to_xarray
        return sweep_to_xarray(self, dims)

    def to_netcdf(self, path) -> str:
        """Write :meth:`to_xarray` as netCDF-4 (``pip install "ufm[netcdf]"``); returns the path."""
        from ..xarray_interop import to_netcdf
        return to_netcdf(self, path)

    def trajectory(self, i) -> Trajectory:
        """The :class:`~ufm.trajectory.Trajectory` of row ``i`` (an index or a hash).

        For a failed configuration it holds the saves before the failure.

        Raises:
            ValueError: the configuration has no trajectory (bad input, or not run).
        """
        k = self._position(i)
        tr = self._traj[k]
        if isinstance(tr, Trajectory):
            return tr
        if tr is None:
            row = self.rows[k]
            raise ValueError(f"i: configuration {k} ({row['hash'][:12]}) has no trajectory: "
                             f"{row['status']} ({row['error'] or row['reason']})")
        if isinstance(tr, str):
            traj = Trajectory.load(tr)
        else:
            arrays, info = tr
            model, _init, _space = engine.build_payload(self._payloads[k])
            traj = Trajectory(**arrays, problem=model.problem, model=model, info=info)
        self._traj[k] = traj
        return traj

    def trajectories(self) -> list:
        """Every row's trajectory (None where there is none), in row order."""
        out = []
        for k in range(len(self.rows)):
            try:
                out.append(self.trajectory(k))
            except ValueError:
                out.append(None)
        return out

    def write_csv(self, path) -> str:
        """Write the table as CSV (header = :meth:`columns`). Returns the path."""
        import csv
        path = os.fspath(path)
        cols = self.columns()
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for r in self.rows:
                w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
        return path

    @classmethod
    def load(cls, out) -> "SweepResult":
        """Every configuration recorded in a sweep directory, ordered by (index, hash).

        Arguments:
            out: the ``out=`` directory of one or more sweeps.

        Raises:
            ValueError: ``out`` is not a directory.
        """
        if not os.path.isdir(os.fspath(out)):
            raise ValueError(f"out: {os.fspath(out)!r} is not a directory")
        store = Store(out)
        recs = [r for r in (store.read(h) for h in store.hashes()) if r is not None]
        recs.sort(key=lambda r: (r.get("index", 0), r["hash"]))
        rows = [_row(r) for r in recs]
        trajs = [store.trajectory_path(r["hash"]) if r.get("trajectory") else None for r in recs]
        return cls(rows, trajs, out=store.path)


def load(out) -> SweepResult:
    """Read a sweep directory (see :meth:`SweepResult.load`)."""
    return SweepResult.load(out)


def _column(values) -> np.ndarray:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present):
        return np.array([bool(v) if v is not None else False for v in values], dtype=bool)
    if present and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in present):
        return np.array([int(v) if v is not None else -1 for v in values], dtype=np.int64)
    if present and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                       for v in present):
        return np.array([float(v) if v is not None else np.nan for v in values], dtype=np.float64)
    strs = ["" if v is None else (v if isinstance(v, str) else str(v)) for v in values]
    return np.array(strs, dtype=f"U{max([1] + [len(s) for s in strs])}")


def _row(record: dict) -> dict:
    row = {k: record.get(k) for k in BASE_COLUMNS}
    row["index"] = int(row["index"]) if row["index"] is not None else -1
    row["error"] = row["error"] or ""
    row["t_fail"] = float("nan") if row["t_fail"] is None else float(row["t_fail"])
    for k, v in (record.get("columns") or {}).items():
        row.setdefault(k, v)
    for k, v in (record.get("summary") or {}).items():
        row.setdefault(k, v)
    return row


# -- the driver -----------------------------------------------------------------------------------

def _guess_workers(executor) -> int:
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int) and n > 0:
        return n
    client = getattr(executor, "_client", None)
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:  # noqa: BLE001 - a client that cannot answer: fall back
            pass
    return os.cpu_count() or 1


def sweep(configs, t, *, executor=None, out=None, method="auto", rtol: float = 1e-8, atol: float = 1e-10,
          space: str = "parameters", save=DEFAULT_SAVE, t0: float = 0.0, dt=None, max_steps: int = 10_000_000,
          h_max: float = math.inf, summary=True, threshold: float = 0.02, threads: int | None = None,
          chunk_size: int | None = None, retry_failed: bool = False, progress=None) -> SweepResult:
    """Integrate many configurations to the same save times, in parallel.

    Each configuration is one adaptive trajectory of :func:`ufm.solve` (same numbers, same
    options): the configurations never share a stacked ODE, so each takes its own steps.

    * In this process (``executor=None``) the configurations run in batches through one
      numba kernel whose threads (all of numba's, or ``threads``) each take the next
      configuration until none is left.
    * With ``executor=`` (anything with ``submit(fn, *args)`` returning a
      ``concurrent.futures.Future``: ``ProcessPoolExecutor``, ``distributed.Client(...)
      .get_executor()``, …) the configurations are shipped in chunks of ``chunk_size``; each
      task runs the same kernel with ``threads`` threads (default 1, one per worker core).
    * With ``out=DIR`` each finished configuration is written atomically under its hash (see
      :func:`config_hash`) as soon as its batch or chunk returns; configurations already in
      DIR are not run again (a killed sweep resumes where it stopped). A stored record is
      returned only as what a fresh run with these options would give: one whose trajectory
      file is missing or damaged is run again, and one whose summary was made with other
      ``summary`` / ``threshold`` options (or any record, when ``summary`` is a callable,
      whose code cannot be compared) has its summary recomputed from the stored trajectory
      and its record rewritten; a failure while summarising (reason ``"error"``), which has
      no trajectory, is run again in that case.

    A configuration that fails — bad input (``reason="bad_input"``), or an integration that
    stops (``"max_steps"``, ``"step_underflow"``, ``"nonfinite"``: an
    :class:`~ufm.errors.IntegrationError` in :func:`ufm.solve`) — is recorded with its error
    (and, for the latter, the trajectory up to the failure) and does not stop the others.

    Arguments:
        configs: sequence of configurations, each a spec dict (keys in
            :data:`ufm.sweeps.SPEC_KEYS`, e.g. ``{"setting": "factorial", "levels": [3, 3],
            "lambda": 1e-3, "beta": 1.0, "d": 32, "seed": 0}``; see :func:`ufm.sweeps.grid`)
            or a ``(model, init)`` pair (a :class:`~ufm.models.UFM` and a
            :class:`~ufm.models.State` with W (K, d), H (d, N), or a
            :class:`~ufm.models.GramState`). Sizes may differ between configurations.
        t: (T,) strictly increasing save times >= ``t0``, shared by all configurations.
        executor: None (this process) or a ``concurrent.futures.Executor``-compatible object.
        out: None, or a directory (str / path) for the per-configuration records.
        method, rtol, atol, space, save, t0, dt, max_steps, h_max: as in :func:`ufm.solve`
            (``space`` is the default for specs without a ``"space"`` key and for pairs),
            except that ``"auto"`` (the default) is only the explicit pair
            :func:`ufm.solvers.auto_solver` picks for ``rtol`` (the batch kernel has no stiff
            switch), and is hashed as that pair: a configuration run with the default hashes
            as with ``method="vern7"`` at rtol < 1e-7 and ``"tsit5"`` above. Sweeps written
            before ``"auto"`` became the default (when it was ``"dopri5"``) are found again
            with ``method="dopri5"``; with the default they are recomputed.
        summary: True (default metrics), False (none; only step counts), or a callable
            ``summary(trajectory) -> dict`` of scalars added to the default metrics (it runs
            where the configuration runs, so it must be picklable for process executors).
        threshold: collapse threshold of the semantic gap in the default metrics.
        threads: numba threads in this process (default: all), or per executor task
            (default 1).
        chunk_size: configurations per executor task (default: about four tasks per worker,
            at most 64 configurations each), or per in-process batch (default: grows so that a
            batch takes about 2 s; all at once when ``out`` and progress are off).
        retry_failed: rerun configurations recorded as failed in ``out`` (default: skip them).
        progress: None (a progress line on stderr when it is a terminal), True, False, or a
            callable ``progress(done, total)``.

    Returns:
        A :class:`SweepResult` (rows in the order of ``configs``).

    Raises:
        TypeError / ValueError: ``configs`` is not a sequence, or an option is bad (named);
            a bad *configuration* is recorded instead.
        SweepIncomplete: an executor task failed (worker died, pool broken); every
            configuration that finished is in ``err.result`` (and in ``out``): rerun the same
            call to run the rest.
    """
    if isinstance(configs, (dict, str, bytes)) or not hasattr(configs, "__iter__"):
        raise TypeError(f"configs: expected a sequence of configurations (spec dicts or (model, init) pairs), "
                        f"got {type(configs).__name__}")
    configs = list(configs)
    options, run_key, space = _options(t, method, rtol, atol, space, save, t0, dt, max_steps, h_max,
                                       summary, threshold)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor: expected an object with submit(fn, *args) (a concurrent.futures.Executor), "
                        f"got {type(executor).__name__}")
    if threads is not None:
        threads = as_positive_int(threads, "threads")
    if chunk_size is not None:
        chunk_size = as_positive_int(chunk_size, "chunk_size")
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise TypeError(f"progress: expected None, True, False or a callable progress(done, total), got {progress!r}")
    store = Store(out) if out is not None else None

    n = len(configs)
    rows: list = [None] * n
    trajs: list = [None] * n
    payloads: list = [None] * n
    keys: list = [None] * n
    todo: dict = {}          # hash -> list of positions
    resumed: dict = {}       # hash -> its stored record brought up to date, or None (run it)
    for pos, config in enumerate(configs):
        try:
            payload = _payload(config, space)
            key = _hash(payload, run_key)
        except Exception as exc:  # noqa: BLE001 - a bad configuration is recorded, not raised
            key = digest({"ufm-sweep": 1, "bad-config": repr(config)[:10_000], "run": run_key})
            rec = engine._failure((pos, key, None), "bad_input", f"{type(exc).__name__}: {exc}", {})
            keys[pos] = key
            _accept(rec, pos, rows, trajs, store, None)
            continue
        keys[pos], payloads[pos] = key, payload
        if store is not None and key not in todo:
            if key not in resumed:
                resumed[key] = _resume(store, key, options, retry_failed)
            rec = resumed[key]
            if rec is not None:
                rows[pos] = _row({**rec, "index": pos})
                trajs[pos] = store.trajectory_path(key) if rec.get("trajectory") else None
                continue
        todo.setdefault(key, []).append(pos)

    skipped = sum(r is not None for r in rows)
    prog = _Progress(progress, n, skipped)
    counter = {"done": skipped, "failed": sum(r is not None and r["status"] == "failed" for r in rows)}
    items = [(positions[0], key, payloads[positions[0]]) for key, positions in todo.items()]

    def accept(rec):
        for pos in todo[rec["hash"]]:
            _accept({**rec, "index": pos}, pos, rows, trajs, store, payloads[pos])
            counter["done"] += 1
            counter["failed"] += rec["status"] == "failed"
        prog.update(counter["done"], counter["failed"])

    causes = []
    try:
        if executor is None:
            _run_local(items, options, threads, chunk_size, store is not None or prog.enabled
                       or prog.callable is not None, accept)
        else:
            causes = _run_executor(executor, items, options, threads or 1, chunk_size, accept)
    finally:
        prog.close(counter["done"], counter["failed"])

    missing = [pos for pos in range(n) if rows[pos] is None]
    for pos in missing:
        why = f"{type(causes[0]).__name__}: {causes[0]}" if causes else "not run"
        rows[pos] = {"index": pos, "hash": keys[pos], "status": "not-run", "reason": "task_failed",
                     "error": why, "t_fail": float("nan")}
    result = SweepResult(rows, trajs, out=None if store is None else store.path, payloads=payloads)
    if missing:
        where = f" Finished ones are in {store.path!r};" if store is not None else ""
        raise SweepIncomplete(f"{len(missing)} of {n} configurations did not run because their task failed "
                              f"({rows[missing[0]]['error']}).{where} rerun the same sweep to run the rest.",
                              result, causes)
    return result


def _resume(store: Store, key: str, options: dict, retry_failed: bool) -> dict | None:
    """The stored record of ``key`` as a fresh run with ``options`` would give it, or None
    when the configuration must run (no usable record, a failure to retry, a missing or
    damaged trajectory, or a summarising failure under other summary options)."""
    rec = store.read(key)
    if rec is None or (rec["status"] != "ok" and retry_failed):
        return None
    current = rec.get("summary_options") == options["summary_key"] and not callable(options["summary"])
    if not rec.get("trajectory"):
        # bad input (no summary at all), or a failure while summarising: retried when the
        # summary may now be another one
        return rec if current or rec["reason"] == "bad_input" else None
    traj = store.trajectory(key)
    if traj is None:
        return None
    if not current:
        rec = engine.resummarize(rec, traj, options)
        store.update(rec)
    return rec


def _accept(rec, pos, rows, trajs, store, payload):
    """Store one record: its row, its trajectory (in memory or on disk)."""
    arrays = rec.get("arrays")
    traj = None
    if store is not None:
        if arrays is not None:
            model, _init, _space = engine.build_payload(payload)
            traj = Trajectory(**arrays, problem=model.problem, model=model, info=rec["info"])
        store.write(rec, traj)
        trajs[pos] = store.trajectory_path(rec["hash"]) if arrays is not None else None
    else:
        trajs[pos] = None if arrays is None else (arrays, rec["info"])
    rows[pos] = _row(rec)


def _run_local(items, options, threads, chunk_size, batched, accept):
    """Batches through the parallel kernel in this process."""
    if not items:
        return
    import numba
    nthreads = threads or numba.get_num_threads()
    if not batched and chunk_size is None:
        # nothing to checkpoint or report: as few kernel calls as memory allows
        for k in range(0, len(items), _MAX_BATCH):
            for rec in engine.run_payloads(items[k:k + _MAX_BATCH], options, threads):
                accept(rec)
        return
    size = chunk_size or min(len(items), 2 * nthreads)
    k = 0
    while k < len(items):
        batch = items[k:k + size]
        started = _time.perf_counter()
        for rec in engine.run_payloads(batch, options, threads):
            accept(rec)
        k += len(batch)
        if chunk_size is None:
            # aim at about 2 s per batch (a progress tick and a checkpoint), whole thread rounds
            per = (_time.perf_counter() - started) / len(batch)
            size = int(min(_MAX_BATCH, max(nthreads, 2.0 / max(per, 1e-6))))
            size = max(nthreads, size // nthreads * nthreads)


def _run_executor(executor, items, options, threads, chunk_size, accept) -> list:
    """Chunks on an executor; returns the exceptions of failed tasks."""
    if not items:
        return []
    workers = _guess_workers(executor)
    size = chunk_size or max(1, min(64, math.ceil(len(items) / (4 * workers))))
    chunks = [items[k:k + size] for k in range(0, len(items), size)]
    futures = {}
    causes = []
    try:
        for chunk in chunks:
            try:
                futures[executor.submit(engine.run_payloads, chunk, options, threads)] = chunk
            except Exception as exc:  # noqa: BLE001 - a broken pool: record, keep what finished
                causes.append(exc)
                break
        for fut in cf.as_completed(list(futures)):
            try:
                recs = fut.result()
            except Exception as exc:  # noqa: BLE001 - the task failed, not a configuration
                causes.append(exc)
                continue
            for rec in recs:
                accept(rec)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    return causes
