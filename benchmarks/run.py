#!/usr/bin/env python
"""ufm benchmarks: speed against the tools users would otherwise use, on the same problems.

Run ``python benchmarks/run.py`` or ``python -m benchmarks`` from the repository root
(``--quick`` for a short run, ``--only SECTION ...`` for some sections, ``--sizes large`` for
some sizes of ``single`` -- large runs in ``--quick`` only when named --, ``--solvers LABEL ...``
for some rows, e.g. ``--solvers "ufm dop853" "scipy DOP853"``). Writes
``benchmarks/results.json`` (every measurement, the machine) and ``benchmarks/results.md``
(the tables for the README), and prints the tables.

Sections: ``single`` (CE-UFM at K = N = 10/d = 16, 64/64, 512/256: every adaptive ufm method
against scipy's solve_ivp DOP853/RK45, numbalsoda's dop853/lsoda on a numba cfunc right-hand
side and diffrax under jit), ``workprecision`` (the same problem over rtol 1e-5 … 1e-11: each solver's
time against its error, the time to reach a given error and a figure, benchmarks/workprecision.py),
``long`` (t to 1e6, where the flow turns stiff: evaluations and
accuracy vs numbalsoda's lsoda and scipy's LSODA/BDF), ``stiff`` (MSE from an init of scale
1e3, every solver under a wall-clock cap and reported "stopped" when it grinds), ``sweep``
(``ufm.sweep`` vs a loop of solve_ivp), ``fit`` (``ufm.bridge.compare`` on the shipped run),
``reduced`` (the symmetry-reduced ODE vs the Gram ODE), ``gd``, ``gram``, ``roofline``
(one evaluation vs its matrix products) and ``startup``. The peers live in
``benchmarks/peers.py``; one that is not installed (``pip install "ufm[bench]"``; numbalsoda
needs gfortran) and a ufm method this checkout does not have are reported as skipped.

Every comparison uses the same problem, the same tolerances (rtol 1e-8, atol 1e-10), the same
save times (40 log-spaced in [0.1, 1e4] from t = 0 unless a section says otherwise); each
solver's saved state is scored against scipy DOP853 at rtol 1e-13, so that speed is compared at
known accuracy. Peers get their best vectorised form (numpy matrix products for scipy,
``jit`` (+ ``vmap``) for diffrax, a compiled cfunc for numbalsoda). Times are medians of
interleaved repeated runs in one process (compilation excluded, except in the start-up
section, which measures exactly that).

Problem: cross-entropy with weight decay λ_W = λ_H = 1e-3, one-hot labels (K = N, every
context its own class), init scale 1e-2 (issue 11's setting), Θ = I unless β is given.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

def _blas_threads_from_argv(argv) -> str:
    for k, a in enumerate(argv):
        if a == "--blas-threads" and k + 1 < len(argv):
            return argv[k + 1]
        if a.startswith("--blas-threads="):
            return a.split("=", 1)[1]
    return os.environ.get("OPENBLAS_NUM_THREADS", "1")


# BLAS threads must be fixed before numpy is imported. Default 1: on this 2-core machine the
# sweeps and the process pool use both cores already, tiny matrices gain nothing from threads,
# and a multi-threaded OpenBLAS was measured 5x slower at 512x256x512 under outside load.
os.environ["OPENBLAS_NUM_THREADS"] = _blas_threads_from_argv(sys.argv)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # benchmark this checkout, whatever is installed
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import peers  # noqa: E402
from benchmarks import workprecision as wpm  # noqa: E402

LAM = 1e-3
SCALE = 1e-2
RTOL, ATOL = 1e-8, 1e-10
T_SAVE = np.geomspace(0.1, 1e4, 40)
T_LONG = np.geomspace(0.1, 1e6, 40)      # the long horizon
REDUCED_SCALE = 1e-3                    # the reduced-ODE section keeps its own (issue 9) setting
MSE_SCALE = 1e3                         # the stiff case: MSE from a large init
SIZES = {"small": (10, 16), "medium": (64, 64), "large": (512, 256)}   # K = N, d
# "fit" runs before "sweep": the sweep's parallel kernel starts numba's threading layer, and once
# that is GNU OpenMP the fits may not fork their Jacobian worker processes (as in a fresh
# `ufm fit` process they do)
SECTIONS = ("single", "workprecision", "long", "stiff", "fit", "sweep", "reduced", "gd", "gram", "roofline", "startup")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

class Timed(tuple):
    """(median wall seconds, all wall times, last result), with ``.cpu``: the median CPU
    seconds of this process and its finished children (all threads), which other jobs on a
    shared machine do not inflate."""
    cpu: float


def _cpu() -> float:
    import resource
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def timed(fn, repeat: int, warmup: int = 1) -> Timed:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeat`` timed ones."""
    out = None
    for _ in range(warmup):
        out = fn()
    walls, cpus = [], []
    for _ in range(max(1, repeat)):
        c0, t0 = _cpu(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    res = Timed((statistics.median(walls), walls, out))
    res.cpu = statistics.median(cpus)
    return res


def timed_many(fns: dict, repeat: int, warmup: int = 1) -> dict:
    """Time several functions round-robin (so that outside load hits them alike): name ->
    :class:`Timed`."""
    outs = {k: None for k in fns}
    for _ in range(warmup):
        for k, f in fns.items():
            outs[k] = f()
    walls = {k: [] for k in fns}
    cpus = {k: [] for k in fns}
    for _ in range(max(1, repeat)):
        for k, f in fns.items():
            c0, t0 = _cpu(), time.perf_counter()
            outs[k] = f()
            walls[k].append(time.perf_counter() - t0)
            cpus[k].append(_cpu() - c0)
    res = {}
    for k in fns:
        r = Timed((statistics.median(walls[k]), walls[k], outs[k]))
        r.cpu = statistics.median(cpus[k])
        res[k] = r
    return res


def rel(a, b) -> float:
    """Largest over saves of ‖a_t − b_t‖_F / ‖b_t‖_F."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    num = np.sqrt(((a - b) ** 2).reshape(len(a), -1).sum(axis=1))
    den = np.sqrt((b ** 2).reshape(len(b), -1).sum(axis=1))
    return float(np.max(num / np.maximum(den, 1e-300)))


def model_for(K, lam=LAM, beta=0.0, levels=None):
    import ufm
    p = ufm.settings.factorial(levels) if levels else ufm.settings.balanced(K)
    coupling = p.coupling("attribute", beta) if beta > 0 else None
    return ufm.UFM(p, lambda_W=lam, lambda_H=lam, coupling=coupling)


def rhs_of(model, d):
    theta = None if model.coupling is None else np.asarray(model.coupling)
    return peers.numpy_rhs(np.asarray(model.problem.Y), np.asarray(model.problem.weights), model.lambda_W,
                     model.lambda_H, d, theta)


def ivp(model, x0, method, t=T_SAVE):
    """scipy solve_ivp run; returns (G_H at the saves (T, N, N), nfev)."""
    from scipy.integrate import solve_ivp
    d = x0.d
    f = rhs_of(model, d)
    y0 = np.concatenate([x0.W.ravel(), x0.H.ravel()])
    sol = solve_ivp(f, (0.0, float(t[-1])), y0, method=method, t_eval=t, rtol=RTOL, atol=ATOL)
    if not sol.success:
        raise RuntimeError(f"solve_ivp {method}: {sol.message}")
    H = sol.y[model.K * d:].T.reshape(len(t), d, model.N)
    return np.einsum("tdi,tdj->tij", H, H), sol.nfev


def _ivp_task(task):
    """A process-pool task: one RK45 solve from arrays (module level, so it pickles)."""
    from scipy.integrate import solve_ivp
    Y, pi, lam, d, theta, y0, t = task
    f = peers.numpy_rhs(Y, pi, lam, lam, d, theta)
    sol = solve_ivp(f, (0.0, float(t[-1])), y0, method="RK45", t_eval=t, rtol=RTOL, atol=ATOL)
    K, N = Y.shape
    H = sol.y[K * d:].T.reshape(len(t), d, N)
    return np.einsum("tdi,tdj->tij", H, H)


def have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 - absent or broken: not a peer here
        return False


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------

def _ufm_label(method: str) -> str:
    return f"ufm {method}"


def solver_entries(case, cfg, *, scipy=(), numbalsoda=(), diffrax=(), cap_s=None, mxstep=None):
    """The runs to time on ``case``: label -> () -> peers.Outcome, and label -> why skipped.
    Every adaptive ufm method, then the peers asked for (compiled here, before any timing)."""
    entries, skipped = {}, {}
    wanted = cfg.get("solvers")
    if wanted:                                           # --solvers: only these labels
        scipy = tuple(m for m in scipy if f"scipy {m}" in wanted)
        numbalsoda = tuple(m for m in numbalsoda if f"numbalsoda {m}" in wanted)
        diffrax = tuple(m for m in diffrax if f"diffrax {m}" in wanted)
    for name, why in cfg["ufm_methods"].items():
        if wanted and _ufm_label(name) not in wanted:
            continue
        if why:
            skipped[_ufm_label(name)] = why
        else:
            entries[_ufm_label(name)] = lambda name=name: peers.run_ufm(case, name, cap_s=cap_s)
    for method in scipy:
        why = peers.unavailable("scipy")
        if why:
            skipped[f"scipy {method}"] = why
        else:
            entries[f"scipy {method}"] = lambda method=method: peers.run_scipy(case, method, cap_s=cap_s)
    for method in numbalsoda:
        why = peers.unavailable("numbalsoda")
        if why:
            skipped[f"numbalsoda {method}"] = why
            continue
        peers.numba_cfunc_rhs(case)                       # compile the cfunc outside the timing
        kw = {} if mxstep is None else {"mxstep": mxstep}
        entries[f"numbalsoda {method}"] = lambda method=method: peers.run_numbalsoda(case, method, **kw)
    for solver in diffrax:
        why = cfg["diffrax_skip"]
        if why:
            skipped[f"diffrax {solver}"] = why
            continue
        try:
            entries[f"diffrax {solver}"] = peers.diffrax_runner(case, solver)   # compiles
        except Exception as exc:  # noqa: BLE001 - report the peer as skipped, keep benchmarking
            skipped[f"diffrax {solver}"] = f"skipped: diffrax {solver} failed ({type(exc).__name__}: {exc})"
    return entries, skipped


def compare_solvers(case, entries, skipped, *, repeat, warmup, ref=None, cfg=None, note=""):
    """Time ``entries`` round-robin on ``case`` and score each against the reference ``ref``
    (a peers.Outcome or None). Returns the case's result dict: rows (one per solver, skipped ones
    included with their reason) and the label of ufm's default method."""
    T = timed_many(entries, repeat, warmup=warmup)
    default = _ufm_label(cfg["default_method"])
    base = T[default] if default in T and T[default][2].ok else None
    rows = []
    for label, r in T.items():
        out = r[2]
        wall = r[0]
        row = {"solver": label, "ok": out.ok, "wall_s": wall, "cpu_s": r.cpu, "walls": r[1], "rhs": out.nfev,
               "message": out.message, **{k: v for k, v in out.extra.items() if k in ("steps", "njev", "nlu")}}
        if out.nfev:
            row["us_per_rhs"] = 1e6 * wall / out.nfev
        if ref is not None and out.ok:
            row["error"] = peers.relative_error(out.y, ref.y)
        if base is not None and out.ok:
            row["x_vs_ufm"] = wall / base[0]       # > 1: ufm (default method) is that many times faster
            row["x_vs_ufm_cpu"] = r.cpu / base.cpu  # the same in CPU time, which outside load inflates less
        rows.append(row)
    for label, why in skipped.items():
        rows.append({"solver": label, "ok": None, "message": why})
    return {"case": {"K": case.K, "N": case.K, "d": case.d, "loss": case.loss, "lambda": case.lam,
                     "init_scale": case.scale, "t_last": float(case.t[-1]), "saves": len(case.t),
                     "rtol": case.rtol, "atol": case.atol},
            "default": default, "rows": rows, "repeat": repeat, "note": note,
            "reference": None if ref is None else {"method": "scipy DOP853", "rtol": peers.REFERENCE_RTOL,
                                                   "atol": peers.REFERENCE_ATOL, "rhs": ref.nfev}}


def check_peer_rhs(case) -> dict:
    """The peers' right-hand sides against ufm's own numpy reference field, at a state with O(1)
    logits (scale 1): the largest |difference| / max |field|. Raises if above 1e-12."""
    from dataclasses import replace

    from ufm.states import flatten
    probe = replace(case, scale=1.0, seed=1)
    model, x0 = probe.model(), probe.init()
    want = flatten(model.vector_field(x0))
    scale = float(np.max(np.abs(want)))
    Y, pi = probe.arrays()
    got = {"numpy (scipy)": peers.numpy_rhs(Y, pi, probe.lam, probe.lam, probe.d, loss=probe.loss)(0.0, probe.y0())}
    if peers.unavailable("numbalsoda") is None:
        got["numba cfunc (numbalsoda)"] = peers.call_cfunc(peers.numba_cfunc_rhs(probe), probe.y0())
    out = {k: float(np.max(np.abs(v - want)) / scale) for k, v in got.items()}
    for k, v in out.items():
        if not v <= 1e-12:
            raise RuntimeError(f"the {k} right-hand side differs from ufm's field by {v:.1e} (relative) at "
                               f"K = {case.K}, d = {case.d}, loss {case.loss}: the comparison would be invalid")
    return out


def bench_single(cfg, res):
    """CE-UFM at the three sizes: every ufm method against scipy, numbalsoda and diffrax, timed
    round-robin, each scored against scipy DOP853 at rtol 1e-13."""
    quick = cfg["quick"]
    out = {}
    for name, (K, d) in SIZES.items():
        if cfg.get("sizes") and name not in cfg["sizes"]:
            continue
        case = peers.Case(K=K, d=d, t=tuple(T_SAVE), lam=LAM, scale=SCALE, rtol=RTOL, atol=ATOL)
        large = name == "large"
        if large and quick and not cfg.get("sizes"):
            out[name] = {"skipped": "skipped in --quick (one ufm and one scipy DOP853 solve take 10-30 s here); "
                                    "run without --quick"}
            print(f"  single {name}: {out[name]['skipped']}", flush=True)
            continue
        checks = check_peer_rhs(case) if not large else check_peer_rhs(peers.Case(K=64, d=32, t=case.t))
        if large:
            # numbalsoda's dop853 costs ~0.4 s per evaluation at this size (n = 262,144) in its own driver:
            # measured with a trivial du = -u cfunc, against 10 ms for this right-hand side called alone
            entries, skipped = solver_entries(case, cfg, scipy=("DOP853",), numbalsoda=("dop853",))
        else:
            entries, skipped = solver_entries(case, cfg, scipy=("DOP853", "RK45"), numbalsoda=("dop853", "lsoda"),
                                              diffrax=cfg["diffrax_solvers"])
        started = time.perf_counter()
        ref = peers.reference(case)
        note = f"reference: {ref.nfev} evaluations, {time.perf_counter() - started:.1f} s"
        r = compare_solvers(case, entries, skipped, repeat=cfg["repeat_large"] if large else cfg["repeat"],
                            warmup=0 if large or (quick and name != "small") else 1, ref=ref, cfg=cfg, note=note)
        r["rhs_check"] = checks
        out[name] = r
        print_case(f"single {name} K=N={K} d={d}", r)
    res["single"] = out


def print_case(title, r):
    print(f"  {title}:", flush=True)
    for row in r["rows"]:
        if row["ok"] is None:
            print(f"    {row['solver']:<22} {row['message']}", flush=True)
            continue
        err = row.get("error")
        print(f"    {row['solver']:<22} {fmt_s(row['wall_s']):>10}  x{row.get('x_vs_ufm', float('nan')):6.2f}  "
              f"rhs {row['rhs'] if row['rhs'] is not None else '-':>8}  "
              f"err {err if err is None else f'{err:.1e}'}  {row['message']}", flush=True)


WP_UFM = ("auto", "dop853", "vern7", "tsit5")
#: the peers of the work-precision curves (K = N = 512: only the target's pair and ufm's dop853;
#: numbalsoda's driver costs ~0.4 s per evaluation there, see bench_single)
WP_PEERS = {"scipy": ("DOP853", "RK45"), "numbalsoda": ("dop853",), "diffrax": ("Tsit5",)}
WP_LARGE = ("ufm auto", "ufm dop853", "scipy DOP853")
#: the error at which the targets table also compares the issue's pairs
WP_TARGET_ERROR = 1e-8


def bench_workprecision(cfg, res):
    """Work-precision curves (benchmarks/workprecision.py): the single-trajectory problem at
    K = N = 10 and 64 (and 512 without --quick) for ufm auto/dop853/vern7/tsit5, scipy
    DOP853/RK45, numbalsoda dop853 and diffrax Tsit5 over rtol 1e-5 … 1e-11 (atol = rtol/100),
    each run timed round-robin with the others at its tolerance and scored against the
    single section's tight reference; then the time each needs to reach 1e-6, 1e-8, 1e-10.
    --quick: three timed runs per point at K = N = 10, one at 64, and at 64 no numbalsoda (0.75 ms
    per evaluation there, ~7 s for its seven runs, a tenth of ufm's speed: not a contender at
    that size); the section took 11 s of a 102 s --quick run here (2026-12-02, load 1.3-1.4;
    25 s at load 2.6-3.4)."""
    from dataclasses import replace
    quick = cfg["quick"]
    # runs per point: a small solve takes milliseconds, so its medians can afford more
    repeats = cfg.get("repeat_wp") or ({"small": 3, "medium": 1, "large": 1} if quick else
                                       {"small": 5, "medium": 3, "large": 1})
    out = {"rtols": list(wpm.RTOLS), "atol_per_rtol": wpm.ATOL_PER_RTOL, "targets": list(wpm.TARGETS),
           "base": wpm.BASE, "repeat": {}, "lam": LAM, "scale": SCALE, "saves": len(T_SAVE),
           "t_last": float(T_SAVE[-1]), "reference_rtol": peers.REFERENCE_RTOL, "sizes": {}}
    try:
        from ufm.solvers import get_solver
        out["auto_methods"] = [get_solver("auto", r).name for r in wpm.RTOLS]
    except (ImportError, ValueError):                     # a checkout without "auto"
        pass
    for name, (K, d) in SIZES.items():
        if cfg.get("sizes") and name not in cfg["sizes"]:
            continue
        large = name == "large"
        if large and quick and not cfg.get("sizes"):
            out["sizes"][name] = {"skipped": "skipped in --quick (its 21 solves and the reference take ~4 min here); "
                                             "run without --quick"}
            print(f"  workprecision {name}: {out['sizes'][name]['skipped']}", flush=True)
            continue
        labels = [_ufm_label(m) for m in WP_UFM] + [f"{peer} {m}" for peer, ms in WP_PEERS.items() for m in ms]
        dropped = {}
        if large:
            labels = list(WP_LARGE)
        elif quick and name == "medium":
            labels.remove("numbalsoda dop853")
            dropped["numbalsoda dop853"] = "not run in --quick at this size (~7 s; ~10x slower than ufm per evaluation)"
        if cfg.get("solvers"):
            labels = [lbl for lbl in labels if lbl in cfg["solvers"]]
        sub = dict(cfg, solvers=labels)
        repeat = out["repeat"][name] = repeats[name]
        base = peers.Case(K=K, d=d, t=tuple(T_SAVE), lam=LAM, scale=SCALE)
        started = time.perf_counter()
        ref = peers.reference(base)                     # the tolerances are not part of the reference
        curves = {lbl: [] for lbl in labels}
        skipped = dict(dropped)
        for rtol in wpm.RTOLS:
            case = replace(base, rtol=rtol, atol=rtol * wpm.ATOL_PER_RTOL)
            entries, why = solver_entries(case, sub, scipy=WP_PEERS["scipy"], numbalsoda=WP_PEERS["numbalsoda"],
                                          diffrax=WP_PEERS["diffrax"])
            skipped.update(why)
            # one untimed run of each first (not at K = N = 512). --quick warms only ufm's runs after
            # the loosest tolerance: the first call of a method in the process costs up to ~0.1 s
            # (measured: ufm auto 121 ms against 1 ms, the first time it picked tsit5), the peers'
            # first calls at a new tolerance cost nothing extra
            if quick and not large and rtol != wpm.RTOLS[0]:
                for label, fn in entries.items():
                    if label.startswith("ufm "):
                        fn()
            warm = 0 if large or (quick and rtol != wpm.RTOLS[0]) else 1
            T = timed_many(entries, repeat, warmup=warm)
            for label, r in T.items():
                o = r[2]
                curves[label].append({"rtol": rtol, "atol": case.atol, "ok": bool(o.ok), "wall_s": r[0], "cpu_s": r.cpu,
                                      "rhs": o.nfev, "steps": o.extra.get("steps"), "message": o.message,
                                      "error": peers.relative_error(o.y, ref.y) if o.ok else None})
            print(f"  workprecision {name} rtol {rtol:.0e}: " + ", ".join(
                f"{lbl} {fmt_s(c[-1]['wall_s'])} err {fmt_e(c[-1]['error'])}" for lbl, c in curves.items() if c),
                flush=True)
        curves = {lbl: c for lbl, c in curves.items() if c}
        out["sizes"][name] = {"case": {"K": K, "N": K, "d": d}, "reference_rhs": ref.nfev, "curves": curves,
                              "reach": wpm.reach_table(curves), "skipped_solvers": skipped,
                              "wall_s": time.perf_counter() - started}
    out["figure"] = wpm.figure(out, Path(cfg.get("out", HERE)) / "workprecision.png")
    res["workprecision"] = out


def bench_long(cfg, res):
    """The long horizon t ∈ [0.1, 1e6] at K = N = 10, d = 16, where the flow turns stiff near
    its fixed point: evaluations and accuracy against the tight reference, vs numbalsoda's lsoda
    (Adams/BDF switching) and scipy's LSODA and BDF."""
    case = peers.Case(K=10, d=16, t=tuple(T_LONG), lam=LAM, scale=SCALE, rtol=RTOL, atol=ATOL)
    entries, skipped = solver_entries(case, cfg, scipy=("DOP853", "LSODA", "BDF"), numbalsoda=("lsoda", "dop853"))
    started = time.perf_counter()
    ref = peers.reference(case)
    note = f"reference: {ref.nfev} evaluations, {time.perf_counter() - started:.1f} s"
    # one untimed warm-up run each, as in every other section: the first auto call loads the
    # RODAS4 kernel from numba's cache (~150 ms, more than the integration itself)
    r = compare_solvers(case, entries, skipped, repeat=cfg["repeat_long"], warmup=1, ref=ref, cfg=cfg, note=note)
    print_case("long horizon K=N=10 d=16 t<=1e6", r)
    r["gram_space"] = long_gram_space(cfg)
    res["long"] = r


#: the Gram-space long horizon: the bridge's fits predict in Gram space at K = N = 16
LONG_GRAM_K = 16


def long_gram_space(cfg) -> dict:
    """The same long horizon in Gram space at K = N = LONG_GRAM_K (state 3·K², the size the
    bridge's fits use): ufm's auto against its explicit methods (no peer integrates the Gram
    ODE), each scored on gram_H against ufm vern7 at rtol 1e-12, atol 1e-14."""
    import ufm
    case = peers.Case(K=LONG_GRAM_K, d=16, t=tuple(T_LONG), lam=LAM, scale=SCALE, rtol=RTOL, atol=ATOL)
    model, x0 = case.model(), case.init()

    def runner(method, rtol=RTOL, atol=ATOL):
        return lambda: ufm.solve(model, x0, case.times, method=method, rtol=rtol, atol=atol, space="gram",
                                 save=("gram_H",))
    ref = runner("vern7", 1e-12, 1e-14)()
    methods = [m for m in ("auto", "vern7", "dopri5") if cfg["ufm_methods"].get(m, "not in this checkout") is None]
    T = timed_many({_ufm_label(m): runner(m) for m in methods}, cfg["repeat_long"], warmup=1)
    rows = []
    for label, t in T.items():
        tr = t[2]
        err = float(np.max(np.linalg.norm(tr.gram_H - ref.gram_H, axis=(1, 2))
                           / np.linalg.norm(ref.gram_H, axis=(1, 2))))
        rows.append({"solver": label, "ok": True, "wall_s": t[0], "cpu_s": t.cpu, "rhs": tr.info["rhs_evaluations"],
                     "error": err, "message": "", **{k: tr.info[k] for k in ("jacobians", "switched_to_stiff_at")
                                                     if k in tr.info}})
    out = {"case": {"K": case.K, "N": case.K, "space": "gram", "n": 3 * case.K ** 2, "t_last": float(case.t[-1])},
           "rows": rows, "reference": {"method": "ufm vern7 (gram)", "rtol": 1e-12, "atol": 1e-14}}
    print_case(f"long horizon, Gram space K=N={case.K} (n = {3 * case.K ** 2}); error on gram_H", out)
    return out


def bench_stiff(cfg, res):
    """MSE from an init of scale 1e3 (K = N = 10, d = 16): very stiff. Every solver gets a wall-clock
    cap (ufm and scipy are stopped by the benchmark; numbalsoda, which cannot be interrupted, by a
    step budget sized to the cap) and is reported "stopped" when it would grind."""
    cap = cfg["stiff_cap_s"]
    case = peers.Case(K=10, d=16, t=tuple(T_SAVE), loss="mse", lam=LAM, scale=MSE_SCALE, rtol=RTOL, atol=ATOL)
    import ufm
    m = case.model()
    ufm.solve(m, m.init(4, scale=0.1, seed=0), np.array([1.0]))        # load the MSE kernel before timing
    # numbalsoda's dop853 takes ~12 evaluations of ~3 µs per step at this size: this budget stops it near the cap
    entries, skipped = solver_entries(case, cfg, scipy=("RK45", "LSODA", "BDF"), numbalsoda=("lsoda", "dop853"),
                                      cap_s=cap, mxstep=int(3e4 * cap))
    ref = None
    started = time.perf_counter()
    tight = peers.Outcome(None, None, False, "not run in --quick") if cfg["quick"] else \
        peers.run_scipy(case, "LSODA", rtol=1e-12, atol=1e-14, cap_s=10 * cap)
    if tight.ok:
        ref = tight
        note = f"reference: scipy LSODA rtol 1e-12, atol 1e-14 ({tight.nfev} evaluations, " \
               f"{time.perf_counter() - started:.1f} s; explicit DOP853 would grind here)"
    elif cfg["quick"]:
        note = "no reference in --quick (scipy LSODA at rtol 1e-12 takes ~10 s here)"
    else:
        note = f"no reference: scipy LSODA at rtol 1e-12 did not finish ({tight.message})"
    r = compare_solvers(case, entries, skipped, repeat=1, warmup=0, ref=ref, cfg=cfg, note=note)
    r["cap_s"] = cap
    if ref is not None:
        r["reference"] = {"method": "scipy LSODA", "rtol": 1e-12, "atol": 1e-14, "rhs": ref.nfev}
    print_case(f"stiff MSE init {MSE_SCALE:g} (cap {cap:g} s)", r)
    res["stiff"] = r


FIT_RUN = ROOT / "tests" / "data" / "transformer_factorial_adamw.npz"
#: every shipped run ``fit`` times (--quick: FIT_RUNS_QUICK); the issue-10 target is on the 16-context ones
FIT_RUNS = [FIT_RUN] + sorted((ROOT / "tests" / "data" / "real").glob("*.npz"))
FIT_RUNS_QUICK = [FIT_RUN, ROOT / "tests" / "data" / "real" / "mlp_factorial_sgd.npz"]
FIT_SECONDS = 10.0           # issue 10, item 5: compare on a 16-context, ~60-checkpoint run


def bench_fit(cfg, res):
    """``ufm fit RUN --compare`` through the Python API (``ufm.bridge.compare``) on the shipped
    runs: the 4x4 factorial AdamW transformer of tests/data (repeated) and, once each, every
    run of tests/data/real (--quick: one of them)."""
    import ufm.bridge as br
    if not FIT_RUN.exists():
        res["fit"] = {"skipped": f"skipped: {FIT_RUN} not found"}
        return
    from ufm.bridge import fitting
    workers = fitting._fit_workers() if fitting._fork_safe() else 1
    workers_note = (f"families fitted in {workers} worker processes (UFM_FIT_WORKERS; their Jacobian columns "
                    "serial), CPU time includes them" if workers > 1 else
                    "families fitted one after the other (UFM_FIT_WORKERS=1, or forking unsafe in this process: "
                    "numba's OpenMP threading layer already started), slow predictions' Jacobian columns in "
                    f"{fitting._jac_workers()} worker processes (UFM_JAC_WORKERS)")
    run = br.load(str(FIT_RUN))
    T = timed(lambda: br.compare(run), cfg["repeat_fit"], warmup=0)
    cmp_ = T[2]
    table = cmp_.table()
    res["fit"] = {"run": str(FIT_RUN.relative_to(ROOT)), "wall_s": T[0], "walls": T[1], "cpu_s": T.cpu,
                  "models": [row["model"] for row in table], "best_aic": cmp_.best("aic"),
                  "fit_workers": workers,
                  "note": "first call in the process includes loading the fitting kernels from numba's cache; "
                          + workers_note}
    print(f"  fit --compare {res['fit']['run']}: {T[0]:.1f} s (runs {', '.join(f'{w:.1f}' for w in T[1])}), "
          f"{len(table)} models, best AIC {cmp_.best('aic')}", flush=True)
    runs = []
    for path in (FIT_RUNS_QUICK if cfg["quick"] else FIT_RUNS)[1:]:
        if not path.exists():
            continue
        r = br.load(str(path))
        Tr = timed(lambda: br.compare(r), 1, warmup=0)
        runs.append({"run": str(path.relative_to(ROOT)), "N": int(r.N), "T": int(r.T), "wall_s": Tr[0],
                     "cpu_s": Tr.cpu, "best": Tr[2].best_,
                     "slowest_fit": max(((nm, f.wall_time_) for nm, f in Tr[2].fits.items()), key=lambda x: x[1])})
        print(f"  fit --compare {runs[-1]['run']}: {Tr[0]:.1f} s (best {Tr[2].best_}; slowest fit "
              f"{runs[-1]['slowest_fit'][0]} {runs[-1]['slowest_fit'][1]:.1f} s)", flush=True)
    res["fit"]["runs"] = [{"run": res["fit"]["run"], "N": int(run.N), "T": int(run.T), "wall_s": T[0],
                           "cpu_s": T.cpu, "best": cmp_.best_}] + runs


def sweep_specs(n_seeds):
    from ufm.sweeps import grid
    return grid({"lambda": [1e-2, 3e-3, 1e-3, 3e-4], "beta": [0.0, 0.5, 1.0, 2.0], "seed": list(range(n_seeds))},
                base={"setting": "factorial", "levels": [4, 5], "d": 32, "scale": SCALE})


def bench_sweep(cfg, res):
    import numba

    import ufm
    from ufm.sweeps import build, sweep
    n_seeds = cfg["sweep_seeds"]
    specs = sweep_specs(n_seeds)
    sub = specs[::4]                                   # 64 configurations spanning every (λ, β)
    n = len(specs)
    out = {"n": n, "n_sub": len(sub), "K": 20, "N": 20, "d": 32, "threads": numba.get_num_threads(),
           "axes": "lambda in {1e-2, 3e-3, 1e-3, 3e-4} x beta in {0, 0.5, 1, 2} x seed"}
    sweep(sub[:8], T_SAVE, save=("gram_H",), summary=False, progress=False)   # load the kernel
    T_all = timed(lambda: sweep(specs, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",), summary=False,
                                progress=False), cfg["repeat_sweep"], warmup=0)
    T_64 = timed(lambda: sweep(sub, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",), summary=False,
                               progress=False), cfg["repeat_sweep"], warmup=0)
    (t_all, _, r_all), (t_64, _, r_64) = T_all, T_64
    c_all, c_64 = T_all.cpu, T_64.cpu
    t_sum = t_one = None
    if cfg["sweep_extras"]:
        t_sum, _, _ = timed(lambda: sweep(specs, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",), progress=False), 1,
                            warmup=0)
        t_one, _, _ = timed(lambda: sweep(specs, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",), summary=False,
                                          progress=False, threads=1), 1, warmup=0)
    rhs = sum(r["rhs_evaluations"] for r in r_all)
    out.update(ufm_s=t_all, ufm_64_s=t_64, ufm_cpu_s=c_all, ufm_64_cpu_s=c_64, ufm_summary_s=t_sum,
               ufm_1thread_s=t_one, ufm_rhs=rhs,
               ufm_us_per_rhs_per_core=1e6 * t_all * out["threads"] / rhs)
    print(f"  sweep: ufm {n} configs {t_all:.3f} s ({len(sub)}: {t_64:.3f} s; 1 thread {fmt_s(t_one)}; "
          f"with summaries {fmt_s(t_sum)})", flush=True)

    # scipy loop, each configuration timed, so the 64-subset's loop time is measured, not scaled
    built = [build(s) for s in specs]
    per = []
    worst = 0.0
    nfev = 0
    per_cpu = []
    for k, (model, x0) in enumerate(built):
        c0, t0 = _cpu(), time.perf_counter()
        G, fe = ivp(model, x0, "RK45")
        per.append(time.perf_counter() - t0)
        per_cpu.append(_cpu() - c0)
        nfev += fe
        worst = max(worst, rel(r_all.trajectory(k).gram_H, G))
    loop = float(np.sum(per))
    loop_64 = float(np.sum(per[::4]))
    loop_cpu, loop_64_cpu = float(np.sum(per_cpu)), float(np.sum(per_cpu[::4]))
    threads = out["threads"]
    out.update(scipy_loop_s=loop, scipy_loop_64_s=loop_64, scipy_loop_cpu_s=loop_cpu, scipy_loop_64_cpu_s=loop_64_cpu,
               scipy_rhs=int(nfev), scipy_agree=worst,
               scipy_us_per_rhs=1e6 * loop / nfev, speedup_loop=loop / t_all, speedup_loop_64=loop_64 / t_64,
               # on {threads} idle cores: the loop uses one, the sweep all of them (CPU time / threads)
               speedup_loop_64_idle=loop_64_cpu / (c_64 / threads), speedup_loop_idle=loop_cpu / (c_all / threads))
    print(f"  sweep: scipy RK45 loop {loop:.2f} s ({len(sub)}: {loop_64:.2f} s), x{loop / t_all:.1f}; agree {worst:.1e}",
          flush=True)

    tasks = []
    for model, x0 in built:
        theta = None if model.coupling is None else np.asarray(model.coupling)
        tasks.append((np.asarray(model.problem.Y), np.asarray(model.problem.weights), model.lambda_W, x0.d, theta,
                      np.concatenate([x0.W.ravel(), x0.H.ravel()]), T_SAVE))
    workers = os.cpu_count() or 1
    if not cfg["sweep_extras"]:              # --quick: no process pool, no diffrax vmap
        res["sweep"] = out
        return

    def pool_run():
        # spawn (JAX's and numba's threads make fork unsafe here); pool start-up included
        pool = mp.get_context("spawn").Pool(workers)
        try:
            return pool.map(_ivp_task, tasks, chunksize=max(1, len(tasks) // (4 * workers)))
        finally:
            pool.close()
            pool.join()
    t_pool, _, Gs = timed(pool_run, 1, warmup=0)
    out.update(pool_workers=workers, scipy_pool_s=t_pool, speedup_pool=t_pool / t_all,
               pool_agree=max(rel(r_all.trajectory(k).gram_H, G) for k, G in enumerate(Gs)))
    print(f"  sweep: scipy RK45 on a pool of {workers}: {t_pool:.2f} s, x{t_pool / t_all:.1f}", flush=True)

    if cfg["diffrax"]:
        import jax.numpy as jnp
        for label, group, t_ref, idx in (("64", sub, t_64, list(range(0, n, 4))),):
            models = [built[i] for i in idx]
            _, batched = peers.diffrax_solver(T_SAVE, "Dopri5", coupled=True, rtol=RTOL, atol=ATOL)
            W0 = jnp.asarray(np.stack([x.W for _, x in models]))
            H0 = jnp.asarray(np.stack([x.H for _, x in models]))
            Y = jnp.asarray(np.stack([m.problem.Y for m, _ in models]))
            pi = jnp.asarray(np.stack([m.problem.weights for m, _ in models]))
            lam = jnp.asarray([m.lambda_W for m, _ in models])
            th = jnp.asarray(np.stack([m.theta() for m, _ in models]))

            def run():
                _, H, steps = batched(W0, H0, (Y, pi, lam, th))
                H = np.asarray(H.block_until_ready())
                return np.einsum("btdi,btdj->btij", H, H), np.asarray(steps)
            Td = timed(run, 1)
            t_d, _, (G, steps) = Td
            out[f"diffrax_vmap_{label}_cpu_s"] = Td.cpu
            out[f"speedup_diffrax_{label}_idle"] = Td.cpu / (c_64 / threads)
            agree = max(rel(r_all.trajectory(i).gram_H, G[j]) for j, i in enumerate(idx))
            out[f"diffrax_vmap_{label}_s"] = t_d
            out[f"diffrax_vmap_{label}_steps_max"] = int(steps.max())
            out[f"diffrax_vmap_{label}_agree"] = agree
            out[f"speedup_diffrax_{label}"] = t_d / t_ref
            print(f"  sweep: diffrax vmap ({label}) {t_d:.2f} s, x{t_d / t_ref:.1f}; agree {agree:.1e}", flush=True)
    res["sweep"] = out


def bench_gd(cfg, res):
    import ufm
    rows = []
    steps = cfg["gd_steps"]
    lr = 0.5
    for K, d in ((10, 16), (20, 32)):
        model = model_for(K)
        x0 = model.init(d, scale=0.1, seed=0)
        save = np.array([0, steps])
        t_u, _, tr = timed(lambda: ufm.train(model, x0, steps, lr, "gd", save_steps=save, save=("W", "H")),
                           cfg["repeat"])
        f = rhs_of(model, d)
        y0 = np.concatenate([x0.W.ravel(), x0.H.ravel()])

        def numpy_loop():
            y = y0.copy()
            for _ in range(steps):
                y += lr * f(0.0, y)
            return y
        t_n, _, y = timed(numpy_loop, 1, warmup=0)
        yu = np.concatenate([tr.W[-1].ravel(), tr.H[-1].ravel()])
        row = {"K": K, "N": K, "d": d, "steps": steps, "lr": lr, "ufm_s": t_u, "numpy_s": t_n,
               "speedup_numpy": t_n / t_u, "agree_numpy": float(np.linalg.norm(yu - y) / np.linalg.norm(y)),
               "ufm_us_per_step": 1e6 * t_u / steps, "numpy_us_per_step": 1e6 * t_n / steps}
        if have("torch"):
            import torch
            Wt = torch.tensor(x0.W)
            Ht = torch.tensor(x0.H)
            Yt = torch.tensor(np.asarray(model.problem.Y))
            pit = torch.tensor(np.asarray(model.problem.weights))

            torch.set_num_threads(1)   # best for these tiny tensors (more threads only add sync)

            def torch_loop():
                W, H = Wt.clone(), Ht.clone()
                with torch.no_grad():
                    for _ in range(steps):
                        G = (torch.softmax(W @ H, dim=0) - Yt) * pit
                        dW = G @ H.T + LAM * W
                        dH = W.T @ G + LAM * H
                        W -= lr * dW
                        H -= lr * dH
                return np.concatenate([W.numpy().ravel(), H.numpy().ravel()])
            t_t, _, yt = timed(torch_loop, 1, warmup=0)
            row.update(torch_s=t_t, speedup_torch=t_t / t_u, agree_torch=float(np.linalg.norm(yu - yt) / np.linalg.norm(yt)))
        rows.append(row)
        print(f"  gd K=N={K} d={d}: ufm {t_u:.3f} s, numpy {t_n:.2f} s (x{t_n / t_u:.1f}, agree {row['agree_numpy']:.1e})"
              + (f", torch {row['torch_s']:.2f} s" if "torch_s" in row else ", torch not installed"), flush=True)
    res["gd"] = {"rows": rows, "torch": have("torch")}


def bench_gram(cfg, res):
    import ufm
    K = 32
    model = model_for(K)
    rows = []
    for d in cfg["gram_widths"]:
        x0 = model.init(d, scale=SCALE, seed=0)
        rep = cfg["repeat"] if d <= 512 else 1
        t_p, _, tp = timed(lambda: ufm.solve(model, x0, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",)), rep)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # d < K + N: rank-deficient Grams, timed anyway
            t_g, _, tg = timed(lambda: ufm.solve(model, x0, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",),
                                                 space="gram"), rep)
        rows.append({"d": d, "parameters_s": t_p, "gram_s": t_g, "ratio": t_p / t_g, "agree": rel(tg.gram_H, tp.gram_H),
                     "parameters_rhs": tp.info["rhs_evaluations"], "gram_rhs": tg.info["rhs_evaluations"]})
        print(f"  gram d={d}: parameters {t_p * 1e3:.1f} ms, gram {t_g * 1e3:.1f} ms (x{t_p / t_g:.2f}), "
              f"agree {rows[-1]['agree']:.1e}", flush=True)
    res["gram"] = {"K": K, "N": K, "rows": rows}


def bench_reduced(cfg, res):
    """The symmetry-reduced ODE (space="reduced") against the full Gram-space ODE it reduces,
    same driver, tolerances and save times, from the same isotropic start (issue 9's setting:
    factorial (3, 3) coupled, t ∈ [1e-2, 1e5], 80 saves), and the reduced solve at N = 100."""
    import ufm
    t = np.geomspace(1e-2, 1e5, 80)
    rows = []
    for levels in ((3, 3), (10, 10)):
        p = ufm.settings.factorial(levels)
        model = ufm.UFM(p, lambda_W=LAM, lambda_H=LAM, coupling=p.coupling("attribute", 1.0))
        x0 = model.isotropic(REDUCED_SCALE)
        reps = cfg["repeat"]
        t_r, _, tr = timed(lambda: ufm.solve(model, x0, t, rtol=RTOL, atol=ATOL, space="reduced", save=("gram_H",)),
                           reps)
        t_r0, _, _ = timed(lambda: ufm.solve(model, x0, t, rtol=RTOL, atol=ATOL, space="reduced", save=None), reps)
        row = {"levels": "x".join(map(str, levels)), "N": p.N, "reduced_s": t_r, "reduced_nosave_s": t_r0,
               "reduced_rhs": tr.info["rhs_evaluations"],
               "reduced_size": ufm.engine.reduction_of(model).size}
        if p.N <= 16:
            t_g, _, tg = timed(lambda: ufm.solve(model, x0, t, rtol=RTOL, atol=ATOL, space="gram", save=("gram_H",)),
                               reps)
            row.update(gram_s=t_g, gram_rhs=tg.info["rhs_evaluations"], ratio=t_g / t_r,
                       ratio_nosave=t_g / t_r0, agree=rel(tr.gram_H, tg.gram_H))
        rows.append(row)
        print(f"  reduced factorial {row['levels']} (N = {p.N}, {row['reduced_size']} scalars): "
              f"{t_r * 1e3:.2f} ms ({t_r0 * 1e3:.2f} ms without saved Grams)"
              + (f", Gram space {row['gram_s'] * 1e3:.1f} ms: x{row['ratio']:.1f}, agree {row['agree']:.0e}"
                 if "gram_s" in row else ""), flush=True)
    res["reduced"] = {"rows": rows}


def _rhs_kernels():
    from numba import njit

    from ufm.kernels.fields import LOSS_CE, logit_gradient, vector_field

    @njit(cache=True)
    def softmax_loop(n, Z, Y, pi, G):
        colmax = np.empty(Z.shape[1])
        colsum = np.empty(Z.shape[1])
        for _ in range(n):
            logit_gradient(Z, Y, pi, LOSS_CE, G, colmax, colsum)

    @njit(cache=True)
    def rhs_loop(n, y, dy, packed, work):
        for _ in range(n):
            vector_field(0, y, dy, packed, work)

    @njit(cache=True)
    def dots_loop(n, W, H, G, Z, dW, T):
        for _ in range(n):
            np.dot(W, H, Z)
            np.dot(G, H.T, dW)
            np.dot(W.T, G, T)

    @njit(cache=True)
    def hand_loop(n, W, H, G, Z, dW, T):
        K, d = W.shape
        N = H.shape[1]
        for _ in range(n):
            for k in range(K):
                for i in range(N):
                    Z[k, i] = 0.0
                for j in range(d):
                    w = W[k, j]
                    for i in range(N):
                        Z[k, i] += w * H[j, i]
            for k in range(K):
                for j in range(d):
                    s = 0.0
                    for i in range(N):
                        s += G[k, i] * H[j, i]
                    dW[k, j] = s
            for j in range(d):
                for i in range(N):
                    T[j, i] = 0.0
            for k in range(K):
                for j in range(d):
                    w = W[k, j]
                    for i in range(N):
                        T[j, i] += w * G[k, i]
    return rhs_loop, dots_loop, hand_loop, softmax_loop


def bench_roofline(cfg, res):
    import ufm
    from ufm.kernels.fields import work_size
    from ufm.reference import flatten
    rhs_loop, dots_loop, hand_loop, softmax_loop = _rhs_kernels()
    rows = []
    for K, d in ((10, 16), (20, 32), (64, 64)) + (() if cfg["quick"] else ((512, 256),)):
        N = K
        model = model_for(K)
        x0 = model.init(d, scale=0.3, seed=0)
        packed = ufm.engine.pack_model(model, "parameters", d)
        Y, pi = packed.Y, packed.pi
        y = flatten(x0)
        dy = np.empty_like(y)
        work = np.empty(work_size(packed))
        n = max(3, int(2e5 / (K * d * N) * 50))
        W, H = np.ascontiguousarray(x0.W), np.ascontiguousarray(x0.H)
        G = np.random.default_rng(0).normal(size=(K, N))
        Z, dW, T = np.empty((K, N)), np.empty((K, d)), np.empty((d, N))
        rhs_loop(1, y, dy, packed, work)
        dots_loop(1, W, H, G, Z, dW, T)
        hand_loop(1, W, H, G, Z, dW, T)
        Zs = W @ H
        softmax_loop(1, Zs, Y, pi, G)
        t_soft = timed(lambda: softmax_loop(n, Zs, Y, pi, G), 5)[0] / n
        t_rhs = timed(lambda: rhs_loop(n, y, dy, packed, work), 5)[0] / n
        t_dot = timed(lambda: dots_loop(n, W, H, G, Z, dW, T), 5)[0] / n
        t_hand = timed(lambda: hand_loop(n, W, H, G, Z, dW, T), 5)[0] / n if K * d * N <= 64 ** 3 else float("nan")
        flops = 3 * 2.0 * K * d * N
        rows.append({"K": K, "N": N, "d": d, "rhs_us": 1e6 * t_rhs, "matmuls_us": 1e6 * t_dot,
                     "hand_matmuls_us": 1e6 * t_hand, "softmax_us": 1e6 * t_soft, "rhs_over_matmuls": t_rhs / t_dot,
                     "rhs_gflops": flops / t_rhs / 1e9})
        print(f"  rhs K=N={K} d={d}: {1e6 * t_rhs:.2f} us, its 3 matmuls {1e6 * t_dot:.2f} us "
              f"(hand loops {1e6 * t_hand:.2f} us), softmax+G {1e6 * t_soft:.2f} us, ratio {t_rhs / t_dot:.2f}, {flops / t_rhs / 1e9:.2f} GFLOP/s",
              flush=True)
    # the machine's dgemm rate, numpy in this process
    rates = {}
    shapes = {"512x256x512": (512, 256, 512), "1024^3": (1024, 1024, 1024), "2048^3": (2048, 2048, 2048)}
    for label, (m, k, n_) in (list(shapes.items())[:1] if cfg["quick"] else shapes.items()):
        A = np.random.default_rng(1).normal(size=(m, k))
        B = np.random.default_rng(2).normal(size=(k, n_))
        t = timed(lambda: A @ B, 5)[0]
        rates[label] = 2.0 * m * k * n_ / t / 1e9
    peak = max(rates.values())
    large = next((r for r in rows if r["K"] == 512), None)
    # and the whole solve at the large size, from the single-trajectory section when it ran
    solve_rate = None
    big = row_of(res.get("single", {}).get("large"), res.get("single", {}).get("large", {}).get("default"))
    if big and big.get("rhs"):
        solve_rate = 3 * 2.0 * 512 * 256 * 512 * big["rhs"] / big["wall_s"] / 1e9
    res["roofline"] = {"rows": rows, "dgemm_gflops": rates, "dgemm_peak_gflops": peak,
                       "large_rhs_fraction": None if large is None else large["rhs_gflops"] / peak,
                       "large_solve_gflops": solve_rate,
                       "large_solve_fraction": None if solve_rate is None else solve_rate / peak}
    print(f"  dgemm {', '.join(f'{k} {v:.1f}' for k, v in rates.items())} GFLOP/s" + (
          "" if large is None else f"; large RHS at {large['rhs_gflops']:.1f} GFLOP/s = "
          f"{100 * large['rhs_gflops'] / peak:.0f}% of peak"), flush=True)


STARTUP = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import ufm
t1 = time.perf_counter()
m = ufm.UFM(ufm.settings.balanced(10), lambda_W=1e-3, lambda_H=1e-3)
ufm.solve(m, m.init(16, scale=1e-3, seed=0), np.geomspace(1e-2, 1e4, 40))
t2 = time.perf_counter()
out = {"import_s": t1 - t0, "first_solve_s": t2 - t1}
if "sweep" in sys.argv:
    from ufm.sweeps import grid, sweep
    sweep(grid({"seed": [0, 1, 2, 3]}, base={"setting": "balanced", "K": 10, "d": 16, "lambda": 1e-3}),
          np.geomspace(1e-2, 1e4, 40), progress=False)
    out["first_sweep_s"] = time.perf_counter() - t2
print(json.dumps(out))
"""


def _fresh(cache_dir=None, sweep=False):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", STARTUP] + (["sweep"] if sweep else []), env=env,
                       capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


def bench_startup(cfg, res):
    _fresh(sweep=True)                                 # make sure the cache is warm
    warm = [_fresh(sweep=True) for _ in range(cfg["repeat_startup"])]
    colds = []
    for _ in range(cfg["repeat_cold"]):
        with tempfile.TemporaryDirectory() as tmp:
            colds.append(_fresh(cache_dir=tmp, sweep=not cfg["quick"]))
    med = lambda rows, k: statistics.median(r[k] for r in rows) if all(k in r for r in rows) else None  # noqa: E731
    out = {"warm": {k: med(warm, k) for k in warm[0]}, "cold": {k: med(colds, k) for k in colds[0]} if colds else None,
           "warm_runs": warm, "cold_runs": colds}
    for kind in ("warm", "cold"):
        o = out[kind]
        if o is not None:
            o["import_plus_first_solve_s"] = o["import_s"] + o["first_solve_s"]
    res["startup"] = out
    w, c = out["warm"], out["cold"]
    print(f"  start-up warm: import {w['import_s']:.2f} s + first solve {w['first_solve_s']:.2f} s "
          f"(process {w['process_wall_s']:.2f} s); " + ("cold: not measured (--quick)" if c is None else
          f"cold: import {c['import_s']:.2f} s + first solve {c['first_solve_s']:.1f} s"
          + (f" + first sweep {c['first_sweep_s']:.1f} s" if c.get("first_sweep_s") else "")), flush=True)


# ---------------------------------------------------------------------------------------------
# machine, targets, report
# ---------------------------------------------------------------------------------------------

def machine() -> dict:
    import numba
    import scipy
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "numba": numba.__version__, "numba_threads": numba.config.NUMBA_NUM_THREADS,   # get_num_threads() would start the threading layer
           
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    try:
        info["numba_threading_layer"] = numba.config.THREADING_LAYER
    except Exception:  # noqa: BLE001
        pass
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        if var in os.environ:
            info[var] = os.environ[var]
    for mod in ("jax", "diffrax", "torch"):
        if have(mod):
            info[mod] = __import__(mod).__version__
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


DIFFRAX_SOLVERS = ("Dopri5", "Tsit5", "Dopri8")
STIFF_SECONDS = 10.0        # "within seconds": the stiff target's bound on ufm's wall time


def row_of(r, label):
    """The row of solver ``label`` in a case's result (None when absent)."""
    if not r:
        return None
    return next((row for row in r.get("rows", []) if row["solver"] == label), None)


def stiff_choice(r) -> str:
    """The ufm method judged on the long and stiff cases: ``auto`` when ufm has it, else the default."""
    auto = row_of(r, _ufm_label("auto"))
    return _ufm_label("auto") if auto and auto.get("ok") is not None else r["default"]


def fmt_e(x):
    return "–" if x is None else f"{x:.0e}"


def targets(res) -> list:
    out = []

    def add(name, measured, goal, ok, note=""):
        out.append({"target": name, "measured": measured, "goal": goal, "met": bool(ok) if ok is not None else None,
                    "note": note})
    single = res.get("single", {})

    def ratio_target(name, r, peer_labels, goal, *, faster=True):
        """ufm's default method against the best of ``peer_labels`` that ran (a ratio >= goal)."""
        if not r:
            return
        ours = row_of(r, r["default"])
        theirs = [row_of(r, lbl) for lbl in peer_labels]
        theirs = [t for t in theirs if t and t.get("ok") and "x_vs_ufm" in t]
        if not ours or not ours.get("ok"):
            add(name, "ufm did not finish", f">= x{goal}", False, (ours or {}).get("message", ""))
        elif not theirs:
            why = "; ".join(row_of(r, lbl)["message"] for lbl in peer_labels if row_of(r, lbl)) or "not run"
            add(name, "peer not measured", f">= x{goal}", None, why)
        else:
            best = min(theirs, key=lambda t: t["wall_s"])
            add(name, f"x{best['x_vs_ufm']:.2f} ({r['default']} {fmt_s(ours['wall_s'])}, {best['solver']} "
                f"{fmt_s(best['wall_s'])}; errors {fmt_e(ours.get('error'))} / {fmt_e(best.get('error'))})",
                f">= x{goal}", best["x_vs_ufm"] >= goal)
    ratio_target("K=N=10, d=16: vs numbalsoda dop853", single.get("small"), ["numbalsoda dop853"], 2)
    ratio_target("K=N=10, d=16: vs scipy DOP853", single.get("small"), ["scipy DOP853"], 10)
    diffrax_labels = [f"diffrax {s_}" for s_ in DIFFRAX_SOLVERS]
    ratio_target("K=N=10, d=16: vs diffrax (its fastest solver)", single.get("small"), diffrax_labels, 2)
    ratio_target("K=N=64, d=64: vs scipy DOP853", single.get("medium"), ["scipy DOP853"], 2)
    ratio_target("K=N=64, d=64: vs numbalsoda (faster of dop853, lsoda)", single.get("medium"),
                 ["numbalsoda dop853", "numbalsoda lsoda"], 2)
    ratio_target("K=N=512, d=256: time <= 0.8x scipy DOP853's (ratio >= 1.25)", single.get("large") if
                 "skipped" not in single.get("large", {}) else None,
                 ["scipy DOP853"], 1.25)
    wp = res.get("workprecision")
    if wp:
        # the same pairs at equal error instead of equal tolerance (ufm's runs are the more accurate
        # ones at equal rtol: 3e-9 against scipy DOP853's 5e-8 at K = N = 64, rtol 1e-8)
        at = WP_TARGET_ERROR
        k = wp["targets"].index(at) if at in wp["targets"] else None
        for size, peer, goal in (("small", "numbalsoda dop853", 2), ("small", "scipy DOP853", 10),
                                 ("small", "diffrax Tsit5", 2), ("medium", "scipy DOP853", 2),
                                 ("medium", "numbalsoda dop853", 2), ("large", "scipy DOP853", 1.25)):
            sz = wp["sizes"].get(size)
            K, d = (sz["case"]["K"], sz["case"]["d"]) if sz and "case" in sz else SIZES.get(size, ("?", "?"))
            name = f"K=N={K}, d={d}: vs {peer} at equal error {at:.0e} (work-precision)"
            reach = (sz or {}).get("reach", {})
            if k is None or peer not in reach or wpm.BASE not in reach:
                why = (sz or {}).get("skipped") or (sz or {}).get("skipped_solvers", {}).get(peer, "not measured")
                add(name, "not measured", f">= x{goal}", None, why)
                continue
            ours, theirs = reach[wpm.BASE][k], reach[peer][k]
            x = theirs["x_vs_base"]
            measured = (f"x{x:.2f}" if x is not None else "no ratio") + (
                f" ({wpm.BASE} {fmt_s(ours['time_s'])}, {peer} "
                f"{'not reached' if theirs['how'] == 'not reached' else fmt_s(theirs['time_s'])} CPU)")
            met = (x >= goal) if x is not None else (True if theirs["how"] == "not reached"
                                                      and ours["how"] == "interpolated" else None)
            add(name, measured, f">= x{goal}", met, "" if x is not None else
                f"ufm auto: {ours['how']}, {peer}: {theirs['how']} (a ratio needs both interpolated)")
    lg = res.get("long")
    if lg:
        pick = stiff_choice(lg)
        ours = row_of(lg, pick)
        today = row_of(lg, _ufm_label("dopri5"))
        if ours and ours.get("ok"):
            same_accuracy = today is None or not today.get("ok") or ours["error"] <= 3 * today["error"]
            add("t in [0.1, 1e6], K=N=10: <= 5,200 evaluations at the same accuracy",
                f"{ours['rhs']} evaluations ({pick}; error {fmt_e(ours.get('error'))}"
                + (f", dopri5 {today['rhs']} at {fmt_e(today.get('error'))}" if today and today.get("ok") else "") + ")",
                "<= 5200", ours["rhs"] <= 5200 and same_accuracy,
                "" if same_accuracy else "error above 3x dopri5's")
        else:
            add("t in [0.1, 1e6], K=N=10: <= 5,200 evaluations at the same accuracy", "ufm did not finish",
                "<= 5200", False, (ours or {}).get("message", ""))
        peer = row_of(lg, "numbalsoda lsoda")
        if ours and ours.get("ok") and peer and peer.get("ok"):
            x = peer["wall_s"] / ours["wall_s"]
            add("t in [0.1, 1e6], K=N=10: vs numbalsoda lsoda", f"x{x:.2f} ({pick} {fmt_s(ours['wall_s'])}, "
                f"lsoda {fmt_s(peer['wall_s'])}; errors {fmt_e(ours.get('error'))} / {fmt_e(peer.get('error'))})",
                ">= x3", x >= 3)
        else:
            add("t in [0.1, 1e6], K=N=10: vs numbalsoda lsoda", "not measured", ">= x3", None,
                (peer or {}).get("message", "numbalsoda not run"))
    st = res.get("stiff")
    if st:
        pick = stiff_choice(st)
        ours = row_of(st, pick) or {}
        msg = ours.get("message", "")
        clear_stop = (not ours.get("ok")) and "stiff" in msg.lower() and "benchmark" not in msg
        quick_enough = ours.get("wall_s", math.inf) <= STIFF_SECONDS
        add(f"MSE from init scale {MSE_SCALE:g}: finishes, or stops saying it is stiff, within seconds",
            f"{pick}: " + ("finished" if ours.get("ok") else "stopped: " + msg[:120]) + f" after {fmt_s(ours.get('wall_s'))}",
            f"<= {STIFF_SECONDS:g} s", (bool(ours.get("ok")) or clear_stop) and quick_enough)
    sw = res.get("sweep")
    if sw and sw["n"] >= 256:
        add("64-config sweep vs solve_ivp loop",
            f"x{sw['speedup_loop_64']:.1f} wall, x{sw['speedup_loop_64_idle']:.1f} on idle cores", ">= x10",
            sw["speedup_loop_64"] >= 10)
        if "speedup_diffrax_64" in sw:
            add("64-config sweep vs diffrax vmap",
                f"x{sw['speedup_diffrax_64']:.1f} wall, x{sw['speedup_diffrax_64_idle']:.1f} on idle cores", ">= x10",
                sw["speedup_diffrax_64"] >= 10)
    rf = res.get("roofline")
    if rf:
        for r in rf["rows"][:2]:
            add(f"RHS time / its matmuls alone, K=N={r['K']} d={r['d']}", f"{r['rhs_over_matmuls']:.2f}", "<= 2",
                r["rhs_over_matmuls"] <= 2)
        for r in rf["rows"]:
            if r["K"] in (10, 64):
                add(f"issue 11: one evaluation / its matmuls, K=N={r['K']} d={r['d']}", f"{r['rhs_over_matmuls']:.2f}",
                    "<= 1.5", r["rhs_over_matmuls"] <= 1.5)
        if rf["large_rhs_fraction"] is not None:
            add("large RHS (K=N=512, d=256) / dgemm rate", f"{100 * rf['large_rhs_fraction']:.0f}%", ">= 50%",
                rf["large_rhs_fraction"] >= 0.5)
    gr = res.get("gram")
    if gr:
        big = [r for r in gr["rows"] if r["d"] >= gr["K"] + gr["N"]]
        worst = min(r["ratio"] for r in big) if big else float("nan")
        add("Gram space faster than parameter space for d >= K + N", f"min x{worst:.2f}", "> x1", worst > 1)
    rd = res.get("reduced")
    if rd:
        small = next(r for r in rd["rows"] if "ratio" in r)
        add("reduced vs Gram-space ODE, factorial 3x3 coupled, t in [1e-2, 1e5], 80 saves",
            f"x{small['ratio']:.1f} ({small['reduced_rhs']} vs {small['gram_rhs']} RHS evaluations)", ">= x50",
            small["ratio"] >= 50)
        big = next(r for r in rd["rows"] if r["N"] == 100)
        add("reduced solve, factorial 10x10 (N = 100)", f"{big['reduced_nosave_s'] * 1e3:.1f} ms "
            f"({big['reduced_s'] * 1e3:.1f} ms saving G_H)", "< 5 ms", big["reduced_nosave_s"] < 5e-3)
    ft = res.get("fit")
    if ft and ft.get("runs"):
        sixteen = [r for r in ft["runs"] if r["N"] == 16]
        worst = max(sixteen, key=lambda r: r["wall_s"])
        every = len(ft["runs"]) >= len(FIT_RUNS)
        fast = worst["wall_s"] <= FIT_SECONDS
        within = sum(r["wall_s"] <= FIT_SECONDS for r in sixteen)
        headline = ft.get("wall_s")
        if headline is not None:
            # the case: the bridge's documented example run (16 contexts, 53 checkpoints)
            add(f"issue 10: ufm fit RUN --compare on the shipped transformer run ({ft['run']})", f"{headline:.1f} s",
                f"<= {FIT_SECONDS:g} s", headline <= FIT_SECONDS)
        # "every run" cannot be met on a sample: --quick can only fail it
        add(f"issue 10: ... on every shipped 16-context run measured ({within} of {len(sixteen)} within)",
            f"max {worst['wall_s']:.1f} s ({worst['run']})", f"<= {FIT_SECONDS:g} s",
            fast if every or not fast else None,
            "" if every else f"--quick measures {len(ft['runs'])} of the runs: not judged unless one is too slow")
    st = res.get("startup")
    if st:
        w = st["warm"]["import_plus_first_solve_s"]
        add("warm import + first small solve (fresh process)", f"{w:.2f} s", "<= 2 s", w <= 2)
    return out


def fmt_s(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"


def markdown(res) -> str:
    m = res["machine"]
    L = [f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, numba {m['numba']} with "
         f"{m['numba_threads']} threads, OpenBLAS threads {m.get('OPENBLAS_NUM_THREADS', 'default')}, "
         f"numpy {m['numpy']}, scipy {m['scipy']}"
         + (f", jax {m['jax']}, diffrax {m['diffrax']}" if "diffrax" in m else "")
         + (f", torch {m['torch']}" if "torch" in m else "") + "), "
         f"load average at start {', '.join(f'{x:.1f}' for x in m.get('loadavg_start', []))}, at end "
         f"{', '.join(f'{x:.1f}' for x in m.get('loadavg_end', []))} (other jobs shared the machine). "
         f"Unless a section says otherwise: CE + weight decay λ_W = λ_H = {LAM:g}, init scale {SCALE:g}, "
         f"from t = 0 with 40 log-spaced saves in [0.1, 1e4], rtol {RTOL:g}, atol {ATOL:g}; medians; "
         f"“agree” = largest relative difference of the saved G_H. Sections took "
         + ", ".join(f"{k} {v:.0f} s" for k, v in res.get("section_wall_s", {}).items())
         + f" ({'--quick' if res['config']['quick'] else 'full run'}, {res.get('total_wall_s', 0):.0f} s in all).", ""]
    def case_table(title, r):
        c = r["case"]
        ref = r.get("reference")
        L.extend([f"{title} — {c['loss'].upper()}, K=N={c['K']}, d={c['d']}, λ = {c['lambda']:g}, init scale "
                  f"{c['init_scale']:g}, {c['saves']} log-spaced saves to t = {c['t_last']:g}, rtol {c['rtol']:g}, "
                  f"atol {c['atol']:g}; median of {r['repeat']} interleaved runs. × = the solver's time / "
                  f"{r['default']}'s (> 1: ufm faster). Error: largest relative distance of the saved state "
                  f"[W, H] to " + (f"{ref['method']} at rtol {ref['rtol']:g}" if ref else "– (no reference)")
                  + (f". {r['note']}." if r.get("note") else "."), "",
                  "| solver | time | × | × CPU | RHS evals | µs / eval | error | note |",
                  "|---|---|---|---|---|---|---|---|"])
        for row in r["rows"]:
            if row["ok"] is None:
                L.append(f"| {row['solver']} | – | – | – | – | – | – | {row['message']} |")
                continue
            x, xc = row.get("x_vs_ufm"), row.get("x_vs_ufm_cpu")
            evals = row["rhs"] if row["rhs"] is not None else (f"{row['steps']} steps" if "steps" in row else "–")
            us = f"{row['us_per_rhs']:.1f}" if "us_per_rhs" in row else "–"
            status = "" if row["ok"] else "**stopped**: "
            L.append(f"| {row['solver']} | {fmt_s(row['wall_s'])} | {'–' if x is None else f'{x:.2f}'} | {'–' if xc is None else f'{xc:.2f}'} | {evals} | {us} | "
                     f"{fmt_e(row.get('error'))} | {status}{row['message']} |".replace("\n", " "))
        if r.get("rhs_check"):
            L.append("")
            L.append("Right-hand sides checked against ufm's field (largest relative difference): "
                     + ", ".join(f"{k} {v:.0e}" for k, v in r["rhs_check"].items()) + ".")
        L.append("")
    for name, r in res.get("single", {}).items():
        if "skipped" in r:
            L.extend([f"**Single trajectory, {name}**: {r['skipped']}.", ""])
        else:
            case_table(f"**Single trajectory, {name}**", r)
    if "workprecision" in res:
        L.extend(wpm.markdown_lines(res["workprecision"]))
    if "long" in res:
        case_table("**Long horizon**", res["long"])
    if "stiff" in res:
        case_table(f"**Stiff: MSE from a large init** (wall-clock cap {res['stiff']['cap_s']:g} s)", res["stiff"])
    if "fit" in res:
        f = res["fit"]
        if "skipped" in f:
            L += ["**Bridge fit**: " + f["skipped"], ""]
        else:
            L += [f"**Bridge fit** (`ufm fit {f['run']} --compare` through `ufm.bridge.compare`): "
                  f"{f['wall_s']:.1f} s wall (median of {len(f['walls'])}: "
                  f"{', '.join(f'{w:.1f} s' for w in f['walls'])}), {f['cpu_s']:.1f} s CPU, {len(f['models'])} models "
                  f"({', '.join(f['models'])}); best by AIC: {f['best_aic']}. {f['note']}.", ""]
            if f.get("runs"):
                L += ["| run | N | checkpoints | compare wall | CPU | best |", "|---|---|---|---|---|---|"]
                L += [f"| {r['run']} | {r['N']} | {r['T']} | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | {r['best']} |"
                      for r in f["runs"]]
                L.append("")
    if "sweep" in res:
        s = res["sweep"]
        L += [f"**Sweep** ({s['n']} configurations, K=N=20, d=32, {s['axes']}; ufm on {s['threads']} threads, "
              f"{s['n_sub']} = every 4th configuration)", "",
              "| run | wall time | CPU time | ufm is × faster (wall) | × on idle cores (from CPU time) | agree |",
              "|---|---|---|---|---|---|",
              f"| `ufm.sweep`, {s['n']} configs | {fmt_s(s['ufm_s'])} | {fmt_s(s['ufm_cpu_s'])} | | | |",
              f"| `ufm.sweep`, {s['n']} configs, 1 thread | {fmt_s(s['ufm_1thread_s'])} | | | | |" if s.get("ufm_1thread_s") else None,
              f"| `ufm.sweep`, {s['n']} configs, default summary metrics | {fmt_s(s['ufm_summary_s'])} | | | | |" if s.get("ufm_summary_s") else None,
              f"| `ufm.sweep`, {s['n_sub']} configs | {fmt_s(s['ufm_64_s'])} | {fmt_s(s['ufm_64_cpu_s'])} | | | |" if s["n"] != 64 else None,
              f"| solve_ivp RK45 loop, {s['n']} configs | {fmt_s(s['scipy_loop_s'])} | {fmt_s(s['scipy_loop_cpu_s'])} | "
              f"{s['speedup_loop']:.1f} | {s['speedup_loop_idle']:.1f} | {s['scipy_agree']:.0e} |",
              f"| solve_ivp RK45 loop, {s['n_sub']} configs | {fmt_s(s['scipy_loop_64_s'])} | {fmt_s(s['scipy_loop_64_cpu_s'])} | "
              f"{s['speedup_loop_64']:.1f} | {s['speedup_loop_64_idle']:.1f} | |" if s["n"] != 64 else None,
              f"| solve_ivp RK45 on a pool of {s['pool_workers']} processes, {s['n']} configs | {fmt_s(s['scipy_pool_s'])} | "
              f"| {s['speedup_pool']:.1f} | | {s['pool_agree']:.0e} |" if "scipy_pool_s" in s else None]
        L = [x for x in L if x is not None]
        for label in ("64", "all"):
            if f"diffrax_vmap_{label}_s" in s:
                nn = s["n_sub"] if label == "64" else s["n"]
                L.append(f"| diffrax Dopri5 `vmap`, {nn} configs | {fmt_s(s[f'diffrax_vmap_{label}_s'])} | "
                         f"{fmt_s(s[f'diffrax_vmap_{label}_cpu_s'])} | {s[f'speedup_diffrax_{label}']:.1f} | "
                         f"{s[f'speedup_diffrax_{label}_idle']:.1f} | {s[f'diffrax_vmap_{label}_agree']:.0e} |")
        L.append("")
    if "gd" in res:
        tor = res["gd"]["torch"]
        L += ["**Discrete GD** (`ufm.train`, lr 0.5, vs the same update in a numpy loop"
              + (" and a torch CPU loop (float64, 1 thread)" if tor else "; torch is not installed, so no torch loop")
              + ")", "",
              "| size | steps | ufm | numpy | × | agree |" + (" torch | × | agree |" if tor else ""),
              "|---|---|---|---|---|---|" + ("---|---|---|" if tor else "")]
        for r in res["gd"]["rows"]:
            L.append(f"| K=N={r['K']}, d={r['d']} | {r['steps']:.0e} | {fmt_s(r['ufm_s'])} | {fmt_s(r['numpy_s'])} | "
                     f"{r['speedup_numpy']:.0f} | {r['agree_numpy']:.0e} |"
                     + (f" {fmt_s(r['torch_s'])} | {r['speedup_torch']:.0f} | {r['agree_torch']:.0e} |" if tor else ""))
        L.append("")
    if "gram" in res:
        g = res["gram"]
        L += [f"**Gram vs parameter space** (K=N={g['K']}; Gram space does not depend on d)", "",
              "| d | parameters | Gram | params/Gram | agree |", "|---|---|---|---|---|"]
        for r in g["rows"]:
            L.append(f"| {r['d']} | {fmt_s(r['parameters_s'])} | {fmt_s(r['gram_s'])} | {r['ratio']:.2f} | {r['agree']:.0e} |")
        L.append("")
    if "reduced" in res:
        L += ["**Symmetry-reduced ODE** (`space=\"reduced\"` vs `space=\"gram\"`, coupled factorial, β = 1, "
              "isotropic start, t ∈ [1e-2, 1e5], 80 saves; the reduced run expands and saves G_H unless noted)", "",
              "| setting | N | reduced scalars | reduced | no saved Grams | RHS evals | Gram space | RHS evals | × | agree |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["reduced"]["rows"]:
            L.append(f"| {r['levels']} | {r['N']} | {r['reduced_size']} | {fmt_s(r['reduced_s'])} | "
                     f"{fmt_s(r['reduced_nosave_s'])} | {r['reduced_rhs']} | {fmt_s(r.get('gram_s'))} | "
                     f"{r.get('gram_rhs', '–')} | {r['ratio']:.1f} | {r['agree']:.0e} |" if "ratio" in r else
                     f"| {r['levels']} | {r['N']} | {r['reduced_size']} | {fmt_s(r['reduced_s'])} | "
                     f"{fmt_s(r['reduced_nosave_s'])} | {r['reduced_rhs']} | – | – | – | – |")
        L.append("")
    if "roofline" in res:
        rf = res["roofline"]
        L += ["**Right-hand side vs its matrix products** (one evaluation, numba; “hand” = the same three products "
              "as plain loops)", "",
              "| K=N, d | RHS | 3 matmuls (BLAS) | 3 matmuls (hand loops) | softmax + G | RHS / matmuls | GFLOP/s |",
              "|---|---|---|---|---|---|---|"]
        for r in rf["rows"]:
            hand = "–" if math.isnan(r["hand_matmuls_us"]) else f"{r['hand_matmuls_us']:.2f} µs"
            L.append(f"| {r['K']}, {r['d']} | {r['rhs_us']:.2f} µs | {r['matmuls_us']:.2f} µs | {hand} | "
                     f"{r['softmax_us']:.2f} µs | "
                     f"{r['rhs_over_matmuls']:.2f} | {r['rhs_gflops']:.1f} |")
        L += ["", f"numpy dgemm: " + ", ".join(f"{k}: {v:.1f} GFLOP/s" for k, v in rf["dgemm_gflops"].items())
              + (f". Large RHS: {100 * rf['large_rhs_fraction']:.0f}% of the best dgemm rate"
                 if rf["large_rhs_fraction"] is not None else ". Large size not measured in --quick")
              + (f"; whole `ufm.solve` at the large size: {rf['large_solve_gflops']:.1f} GFLOP/s "
                 f"({100 * rf['large_solve_fraction']:.0f}%)" if rf.get("large_solve_gflops") else "") + ".", ""]
    if "startup" in res:
        w, c = res["startup"]["warm"], res["startup"]["cold"]
        L += ["**Start-up** (fresh process: `import ufm` + first small solve; cold = empty `NUMBA_CACHE_DIR`)", "",
              "| cache | import | first solve | first 4-config sweep | whole process |", "|---|---|---|---|---|",
              f"| warm | {fmt_s(w['import_s'])} | {fmt_s(w['first_solve_s'])} | {fmt_s(w.get('first_sweep_s'))} | {fmt_s(w['process_wall_s'])} |",
              f"| cold | {fmt_s(c['import_s'])} | {fmt_s(c['first_solve_s'])} | {fmt_s(c.get('first_sweep_s'))} | {fmt_s(c['process_wall_s'])} |"
              if c else "| cold | not measured in --quick | | | |", ""]
    for name, why in res.get("failed_sections", {}).items():
        L += [f"**Section {name} failed** in this run: {why}", ""]
    L += ["**Targets** (issue 11's first; ratios from this run)", "", "| target | measured | goal | met | note |",
          "|---|---|---|---|---|"]
    for t in res["targets"]:
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "no")
        L.append(f"| {t['target']} | {t['measured']} | {t['goal']} | {met} | {t.get('note', '')} |")
    return "\n".join(L) + "\n"


def solver_config(no_diffrax: bool = False) -> dict:
    """What this checkout and environment offer: ufm's adaptive methods (name -> None or why
    skipped), its default method, and why diffrax is skipped (None when it runs)."""
    why = "skipped: --no-diffrax" if no_diffrax else peers.unavailable("diffrax")
    return {"ufm_methods": peers.ufm_methods(), "default_method": peers.default_method(),
            "diffrax": why is None, "diffrax_skip": why}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller runs (a few minutes)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--sizes", nargs="+", choices=tuple(SIZES),
                    help="the sizes of the single section to run (default all; large runs only without --quick "
                         "unless named here)")
    ap.add_argument("--solvers", nargs="+", metavar="LABEL",
                    help='only these solvers, by their row label (e.g. "ufm auto" "scipy DOP853")')
    ap.add_argument("--no-diffrax", action="store_true", help="skip diffrax even when it is importable")
    ap.add_argument("--out", default=str(HERE), help="directory for results.json and results.md")
    ap.add_argument("--blas-threads", default=os.environ["OPENBLAS_NUM_THREADS"],
                    help="OpenBLAS threads for numpy, scipy and numba's matrix products (default 1, or "
                         "$OPENBLAS_NUM_THREADS)")
    args = ap.parse_args(argv)
    quick = args.quick
    cfg = {"quick": quick, "repeat": 3 if quick else 7, "repeat_large": 1 if quick else 2,
           "repeat_sweep": 1 if quick else 3, "sweep_seeds": 1 if quick else 16, "sweep_extras": not quick, "gd_steps": 10_000 if quick else 100_000,
           "gram_widths": [16, 64, 256, 1024] if quick else [16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
           "repeat_startup": 2 if quick else 3, "repeat_cold": 0 if quick else 1,
           "repeat_long": 1 if quick else 3, "repeat_fit": 1 if quick else 2, "stiff_cap_s": 3.0 if quick else 10.0,
           "diffrax_solvers": DIFFRAX_SOLVERS[:2] if quick else DIFFRAX_SOLVERS}
    cfg.update(solver_config(no_diffrax=args.no_diffrax))
    cfg["sizes"] = args.sizes
    cfg["out"] = args.out
    cfg["solvers"] = args.solvers
    res = {"machine": machine(), "config": {k: v for k, v in cfg.items()},
           "problem": {"loss": "ce", "lambda_W": LAM, "lambda_H": LAM, "init_scale": SCALE, "t": [0.0, float(T_SAVE[-1])],
                       "saves": len(T_SAVE), "rtol": RTOL, "atol": ATOL}}
    print(f"ufm benchmarks on {res['machine']['cpu']} ({res['machine']['cores']} cores)"
          + (", quick" if quick else "") + (", diffrax included" if cfg["diffrax"] else ", no diffrax"), flush=True)
    print("ufm methods: " + ", ".join(f"{k} ({v or 'ok'})" for k, v in cfg["ufm_methods"].items()), flush=True)
    import ufm
    m = model_for(10)
    ufm.solve(m, m.init(16, seed=0), T_SAVE)  # load the compiled kernels before timing
    run_started = time.perf_counter()
    for name in SECTIONS:
        if args.only and name not in args.only:
            continue
        print(f"[{name}]", flush=True)
        started = time.perf_counter()
        try:
            globals()[f"bench_{name}"](cfg, res)
        except Exception as exc:  # noqa: BLE001 - e.g. a kernel interface changed: report it, run the rest
            import traceback
            traceback.print_exc()
            res.setdefault("failed_sections", {})[name] = f"{type(exc).__name__}: {exc}"
            res.pop(name, None)
        res.setdefault("section_wall_s", {})[name] = time.perf_counter() - started
    res["total_wall_s"] = time.perf_counter() - run_started
    try:
        res["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    res["targets"] = targets(res)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(res, fh, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    md = markdown(res)
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(md)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
