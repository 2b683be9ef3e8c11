#!/usr/bin/env python
"""ufm benchmarks: speed against the tools users would otherwise use, on the same problems.

Run ``python benchmarks/run.py`` or ``python -m benchmarks`` from the repository root
(``--quick`` for a short run, ``--only SECTION ...`` for some sections). Writes
``benchmarks/results.json`` (every measurement, the machine) and ``benchmarks/results.md``
(the tables for the README), and prints the tables.

Every comparison uses the same problem, the same tolerances (rtol 1e-8, atol 1e-10, the same
RMS error norm), the same save times (40 log-spaced in [1e-2, 1e4]) and checks that the
answers agree; peers get their best vectorised form (numpy matrix products for scipy,
``jit`` + ``vmap`` for diffrax). Times are medians of repeated runs (compilation excluded,
except in the start-up section, which measures exactly that).

Problem: cross-entropy with weight decay λ_W = λ_H = 1e-3, one-hot labels (K = N, every
context its own class), init scale 1e-3 (the setting of docs/model.md), Θ = I unless β is given.
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

LAM = 1e-3
SCALE = 1e-3
RTOL, ATOL = 1e-8, 1e-10
T_SAVE = np.geomspace(1e-2, 1e4, 40)
SIZES = {"small": (10, 16), "medium": (64, 64), "large": (512, 256)}   # K = N, d
SECTIONS = ("single", "sweep", "gd", "gram", "reduced", "roofline", "startup")


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
    coupling = p.kernel("attribute", beta) if beta > 0 else None
    return ufm.UFM(p, lambda_W=lam, lambda_H=lam, coupling=coupling)


def numpy_rhs(Y, pi, lam_w, lam_h, d, theta=None):
    """scipy's right-hand side: vectorised numpy on the flat [vec(W), vec(H)] state."""
    K, N = Y.shape
    nW = K * d

    def f(t, y):
        W = y[:nW].reshape(K, d)
        H = y[nW:].reshape(d, N)
        Z = W @ H
        Z -= Z.max(axis=0)
        E = np.exp(Z)
        E /= E.sum(axis=0)
        G = (E - Y) * pi
        dW = G @ H.T
        dW += lam_w * W
        T = W.T @ G
        T += lam_h * H
        if theta is not None:
            T = T @ theta
        out = np.empty_like(y)
        out[:nW] = -dW.ravel()
        out[nW:] = -T.ravel()
        return out
    return f


def rhs_of(model, d):
    theta = None if model.coupling is None else np.asarray(model.coupling)
    return numpy_rhs(np.asarray(model.problem.Y), np.asarray(model.problem.weights), model.lambda_W,
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
    f = numpy_rhs(Y, pi, lam, lam, d, theta)
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
# diffrax (optional peer)
# ---------------------------------------------------------------------------------------------

def diffrax_solver(K, N, d, coupled: bool):
    """A jitted diffrax Dopri5 solve of one trajectory, (W0, H0, args) -> (G_H (T, N, N), steps),
    and the same under vmap over a leading batch axis."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp

    def vf(t, y, args):
        W, H = y
        Y, pi, lam, theta = args
        Z = W @ H
        P = jax.nn.softmax(Z, axis=0)
        G = (P - Y) * pi
        dW = -(G @ H.T + lam * W)
        T = W.T @ G + lam * H
        dH = -(T @ theta) if coupled else -T
        return (dW, dH)

    term = diffrax.ODETerm(vf)
    solver = diffrax.Dopri5()
    ctrl = diffrax.PIDController(rtol=RTOL, atol=ATOL)
    saveat = diffrax.SaveAt(ts=jnp.asarray(T_SAVE))

    def one(W0, H0, args):
        sol = diffrax.diffeqsolve(term, solver, t0=0.0, t1=float(T_SAVE[-1]), dt0=None, y0=(W0, H0), args=args,
                                  saveat=saveat, stepsize_controller=ctrl, max_steps=200_000)
        H = sol.ys[1]
        return jnp.einsum("tdi,tdj->tij", H, H), sol.stats["num_steps"]

    return jax.jit(one), jax.jit(jax.vmap(one))


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------

def bench_single(cfg, res):
    import ufm
    rows = []
    sizes = dict(SIZES)
    for name, (K, d) in sizes.items():
        model = model_for(K)
        x0 = model.init(d, scale=SCALE, seed=0)
        rep = cfg["repeat_large"] if name == "large" else cfg["repeat"]
        # the numpy right-hand side is the flow: check it against ufm's own reference once
        from ufm.reference import flatten
        f = rhs_of(model, d)
        np.testing.assert_allclose(f(0.0, flatten(x0)), flatten(model.vector_field(x0)), rtol=1e-10, atol=1e-20)
        fns = {"ufm": lambda: ufm.solve(model, x0, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",))}
        if not (name == "large" and cfg["quick"]):
            for method in ("RK45", "DOP853"):
                fns[method] = (lambda method=method: ivp(model, x0, method))
        if cfg["diffrax"] and name != "large":
            import jax.numpy as jnp
            one, _ = diffrax_solver(K, K, d, coupled=False)
            args = (jnp.asarray(model.problem.Y), jnp.asarray(model.problem.weights), LAM, jnp.eye(K))
            W0, H0 = jnp.asarray(x0.W), jnp.asarray(x0.H)

            def run_diffrax():
                G, steps = one(W0, H0, args)
                G.block_until_ready()
                return np.asarray(G), int(steps)
            fns["diffrax"] = run_diffrax
        T = timed_many(fns, rep, warmup=0 if name == "large" else 1)
        tr = T["ufm"][2]
        t_u, c_u = T["ufm"][0], T["ufm"].cpu
        row = {"size": name, "K": K, "N": K, "d": d, "ufm_s": t_u, "ufm_cpu_s": c_u,
               "ufm_rhs": tr.info["rhs_evaluations"], "ufm_steps": tr.info["accepted_steps"],
               "ufm_us_per_rhs": 1e6 * t_u / tr.info["rhs_evaluations"]}
        for method in ("RK45", "DOP853"):
            if method in T:
                G, nfev = T[method][2]
                t_s = T[method][0]
                row[f"{method}_s"] = t_s
                row[f"{method}_cpu_s"] = T[method].cpu
                row[f"{method}_rhs"] = int(nfev)
                row[f"{method}_us_per_rhs"] = 1e6 * t_s / nfev
                row[f"{method}_speedup"] = t_s / t_u
                row[f"{method}_speedup_cpu"] = T[method].cpu / c_u
                row[f"{method}_agree"] = rel(tr.gram_H, G)
        if "diffrax" in T:
            G, steps = T["diffrax"][2]
            t_d = T["diffrax"][0]
            row.update(diffrax_s=t_d, diffrax_cpu_s=T["diffrax"].cpu, diffrax_steps=steps,
                       diffrax_speedup=t_d / t_u, diffrax_speedup_cpu=T["diffrax"].cpu / c_u,
                       diffrax_agree=rel(tr.gram_H, G))
        rows.append(row)
        print(f"  single {name}: ufm {t_u * 1e3:.2f} ms" + "".join(
            f", {m} {row[m + '_s'] * 1e3:.1f} ms (x{row[m + '_speedup']:.1f}, agree {row[m + '_agree']:.1e})"
            for m in ("RK45", "DOP853", "diffrax") if m + "_s" in row), flush=True)
    res["single"] = rows


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
    out = {"n": n, "K": 20, "N": 20, "d": 32, "threads": numba.get_num_threads(),
           "axes": "lambda in {1e-2, 3e-3, 1e-3, 3e-4} x beta in {0, 0.5, 1, 2} x seed"}
    sweep(sub[:8], T_SAVE, save=("gram_H",), summary=False, progress=False)   # load the kernel
    T_all = timed(lambda: sweep(specs, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",), summary=False,
                                progress=False), cfg["repeat_sweep"], warmup=0)
    T_64 = timed(lambda: sweep(sub, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",), summary=False,
                               progress=False), cfg["repeat_sweep"], warmup=0)
    (t_all, _, r_all), (t_64, _, r_64) = T_all, T_64
    c_all, c_64 = T_all.cpu, T_64.cpu
    t_sum, _, _ = timed(lambda: sweep(specs, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",), progress=False), 1,
                        warmup=0)
    t_one, _, _ = timed(lambda: sweep(specs, T_SAVE, rtol=RTOL, atol=ATOL, save=("gram_H",), summary=False,
                                      progress=False, threads=1), 1, warmup=0)
    rhs = sum(r["rhs_evaluations"] for r in r_all)
    out.update(ufm_s=t_all, ufm_64_s=t_64, ufm_cpu_s=c_all, ufm_64_cpu_s=c_64, ufm_summary_s=t_sum,
               ufm_1thread_s=t_one, ufm_rhs=rhs,
               ufm_us_per_rhs_per_core=1e6 * t_all * out["threads"] / rhs)
    print(f"  sweep: ufm {n} configs {t_all:.3f} s (64: {t_64:.3f} s; 1 thread {t_one:.3f} s; "
          f"with summaries {t_sum:.3f} s)", flush=True)

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
    print(f"  sweep: scipy RK45 loop {loop:.2f} s (64: {loop_64:.2f} s), x{loop / t_all:.1f}; agree {worst:.1e}",
          flush=True)

    tasks = []
    for model, x0 in built:
        theta = None if model.coupling is None else np.asarray(model.coupling)
        tasks.append((np.asarray(model.problem.Y), np.asarray(model.problem.weights), model.lambda_W, x0.d, theta,
                      np.concatenate([x0.W.ravel(), x0.H.ravel()]), T_SAVE))
    workers = os.cpu_count() or 1

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
            _, batched = diffrax_solver(20, 20, 32, coupled=True)
            W0 = jnp.asarray(np.stack([x.W for _, x in models]))
            H0 = jnp.asarray(np.stack([x.H for _, x in models]))
            Y = jnp.asarray(np.stack([m.problem.Y for m, _ in models]))
            pi = jnp.asarray(np.stack([m.problem.weights for m, _ in models]))
            lam = jnp.asarray([m.lambda_W for m, _ in models])
            th = jnp.asarray(np.stack([m.theta() for m, _ in models]))

            def run():
                G, steps = batched(W0, H0, (Y, pi, lam, th))
                G.block_until_ready()
                return np.asarray(G), np.asarray(steps)
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
        model = ufm.UFM(p, lambda_W=LAM, lambda_H=LAM, coupling=p.kernel("attribute", 1.0))
        x0 = model.isotropic(SCALE)
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

    @njit
    def softmax_loop(n, Z, Y, pi, G):
        colmax = np.empty(Z.shape[1])
        colsum = np.empty(Z.shape[1])
        for _ in range(n):
            logit_gradient(Z, Y, pi, LOSS_CE, G, colmax, colsum)

    @njit
    def rhs_loop(n, y, dy, packed, work):
        for _ in range(n):
            vector_field(0, y, dy, packed, work)

    @njit
    def dots_loop(n, W, H, G, Z, dW, T):
        for _ in range(n):
            np.dot(W, H, Z)
            np.dot(G, H.T, dW)
            np.dot(W.T, G, T)

    @njit
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
    for K, d in ((10, 16), (20, 32), (64, 64), (512, 256)):
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
    for label, (m, k, n_) in {"512x256x512": (512, 256, 512), "1024^3": (1024, 1024, 1024),
                              "2048^3": (2048, 2048, 2048)}.items():
        A = np.random.default_rng(1).normal(size=(m, k))
        B = np.random.default_rng(2).normal(size=(k, n_))
        t = timed(lambda: A @ B, 5)[0]
        rates[label] = 2.0 * m * k * n_ / t / 1e9
    peak = max(rates.values())
    large = rows[-1]
    # and the whole solve at the large size, from the single-trajectory section when it ran
    solve_rate = None
    if "single" in res:
        big = [r for r in res["single"] if r["size"] == "large"][0]
        solve_rate = 3 * 2.0 * 512 * 256 * 512 * big["ufm_rhs"] / big["ufm_s"] / 1e9
    res["roofline"] = {"rows": rows, "dgemm_gflops": rates, "dgemm_peak_gflops": peak,
                       "large_rhs_fraction": large["rhs_gflops"] / peak,
                       "large_solve_gflops": solve_rate,
                       "large_solve_fraction": None if solve_rate is None else solve_rate / peak}
    print(f"  dgemm {', '.join(f'{k} {v:.1f}' for k, v in rates.items())} GFLOP/s; large RHS at "
          f"{large['rhs_gflops']:.1f} GFLOP/s = {100 * large['rhs_gflops'] / peak:.0f}% of peak", flush=True)


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
    out = {"warm": {k: med(warm, k) for k in warm[0]}, "cold": {k: med(colds, k) for k in colds[0]},
           "warm_runs": warm, "cold_runs": colds}
    for kind in ("warm", "cold"):
        o = out[kind]
        o["import_plus_first_solve_s"] = o["import_s"] + o["first_solve_s"]
    res["startup"] = out
    w, c = out["warm"], out["cold"]
    print(f"  start-up warm: import {w['import_s']:.2f} s + first solve {w['first_solve_s']:.2f} s "
          f"(process {w['process_wall_s']:.2f} s); cold: import {c['import_s']:.2f} s + first solve "
          f"{c['first_solve_s']:.1f} s" + (f" + first sweep {c['first_sweep_s']:.1f} s" if c.get("first_sweep_s") else ""),
          flush=True)


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
            "scipy": scipy.__version__, "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
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


def targets(res) -> list:
    out = []

    def add(name, measured, goal, ok, note=""):
        out.append({"target": name, "measured": measured, "goal": goal, "met": bool(ok) if ok is not None else None,
                    "note": note})
    single = {r["size"]: r for r in res.get("single", [])}
    if "small" in single:
        s = single["small"]
        for peer, goal in (("RK45", 10), ("DOP853", 10), ("diffrax", 2)):
            if f"{peer}_speedup" in s:
                add(f"single small trajectory vs {'solve_ivp ' if peer != 'diffrax' else ''}{peer}",
                    f"x{s[peer + '_speedup']:.1f} wall, x{s[peer + '_speedup_cpu']:.1f} CPU", f">= x{goal}",
                    s[peer + "_speedup"] >= goal)
    sw = res.get("sweep")
    if sw and sw["n"] != 64:
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
         f"CE + weight decay λ = {LAM:g}, init scale {SCALE:g}, t ∈ [0, 1e4], 40 log-spaced saves, "
         f"rtol {RTOL:g}, atol {ATOL:g}; medians; “agree” = largest relative difference of the saved G_H.", ""]
    if "single" in res:
        L += ["**Single trajectory** (`ufm.solve` vs `solve_ivp` with a vectorised numpy RHS, and diffrax Dopri5 under `jit`; "
              "× = how many times faster ufm is, in wall time (in CPU time); runs interleaved)", "",
              "| size | ufm | µs/RHS | RK45 | ×  | DOP853 | × | diffrax | × | agree (RK45 / DOP853 / diffrax) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["single"]:
            g = lambda k: r.get(k)  # noqa: E731
            sp = lambda k: (f"{g(k):.1f} ({g(k + '_cpu'):.1f})" if g(k) is not None else "–")  # noqa: E731
            ag = " / ".join(f"{g(k):.0e}" if g(k) is not None else "–" for k in ("RK45_agree", "DOP853_agree", "diffrax_agree"))
            L.append(f"| {r['size']} K=N={r['K']}, d={r['d']} | {fmt_s(r['ufm_s'])} | {r['ufm_us_per_rhs']:.1f} | "
                     f"{fmt_s(g('RK45_s'))} | {sp('RK45_speedup')} | {fmt_s(g('DOP853_s'))} | {sp('DOP853_speedup')} | "
                     f"{fmt_s(g('diffrax_s'))} | {sp('diffrax_speedup')} | {ag} |")
        L.append("")
    if "sweep" in res:
        s = res["sweep"]
        L += [f"**Sweep** ({s['n']} configurations, K=N=20, d=32, {s['axes']}; ufm on {s['threads']} threads, "
              "64 = every 4th configuration)", "",
              "| run | wall time | CPU time | ufm is × faster (wall) | × on idle cores (from CPU time) | agree |",
              "|---|---|---|---|---|---|",
              f"| `ufm.sweep`, {s['n']} configs | {fmt_s(s['ufm_s'])} | {fmt_s(s['ufm_cpu_s'])} | | | |",
              f"| `ufm.sweep`, {s['n']} configs, 1 thread | {fmt_s(s['ufm_1thread_s'])} | | | | |",
              f"| `ufm.sweep`, {s['n']} configs, default summary metrics | {fmt_s(s['ufm_summary_s'])} | | | | |",
              f"| `ufm.sweep`, 64 configs | {fmt_s(s['ufm_64_s'])} | {fmt_s(s['ufm_64_cpu_s'])} | | | |" if s["n"] != 64 else None,
              f"| solve_ivp RK45 loop, {s['n']} configs | {fmt_s(s['scipy_loop_s'])} | {fmt_s(s['scipy_loop_cpu_s'])} | "
              f"{s['speedup_loop']:.1f} | {s['speedup_loop_idle']:.1f} | {s['scipy_agree']:.0e} |",
              f"| solve_ivp RK45 loop, 64 configs | {fmt_s(s['scipy_loop_64_s'])} | {fmt_s(s['scipy_loop_64_cpu_s'])} | "
              f"{s['speedup_loop_64']:.1f} | {s['speedup_loop_64_idle']:.1f} | |" if s["n"] != 64 else None,
              f"| solve_ivp RK45 on a pool of {s['pool_workers']} processes, {s['n']} configs | {fmt_s(s['scipy_pool_s'])} | "
              f"| {s['speedup_pool']:.1f} | | {s['pool_agree']:.0e} |"]
        L = [x for x in L if x is not None]
        for label in ("64", "all"):
            if f"diffrax_vmap_{label}_s" in s:
                nn = 64 if label == "64" else s["n"]
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
              + f". Large RHS: {100 * rf['large_rhs_fraction']:.0f}% of the best dgemm rate"
              + (f"; whole `ufm.solve` at the large size: {rf['large_solve_gflops']:.1f} GFLOP/s "
                 f"({100 * rf['large_solve_fraction']:.0f}%)" if rf.get("large_solve_gflops") else "") + ".", ""]
    if "startup" in res:
        w, c = res["startup"]["warm"], res["startup"]["cold"]
        L += ["**Start-up** (fresh process: `import ufm` + first small solve; cold = empty `NUMBA_CACHE_DIR`)", "",
              "| cache | import | first solve | first 4-config sweep | whole process |", "|---|---|---|---|---|",
              f"| warm | {fmt_s(w['import_s'])} | {fmt_s(w['first_solve_s'])} | {fmt_s(w.get('first_sweep_s'))} | {fmt_s(w['process_wall_s'])} |",
              f"| cold | {fmt_s(c['import_s'])} | {fmt_s(c['first_solve_s'])} | {fmt_s(c.get('first_sweep_s'))} | {fmt_s(c['process_wall_s'])} |",
              ""]
    L += ["**Targets**", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in res["targets"]:
        L.append(f"| {t['target']} | {t['measured']} | {t['goal']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller runs (a few minutes)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--no-diffrax", action="store_true", help="skip diffrax even when it is importable")
    ap.add_argument("--out", default=str(HERE), help="directory for results.json and results.md")
    ap.add_argument("--blas-threads", default=os.environ["OPENBLAS_NUM_THREADS"],
                    help="OpenBLAS threads for numpy, scipy and numba's matrix products (default 1, or "
                         "$OPENBLAS_NUM_THREADS)")
    args = ap.parse_args(argv)
    quick = args.quick
    cfg = {"quick": quick, "repeat": 3 if quick else 7, "repeat_large": 1 if quick else 2,
           "repeat_sweep": 1 if quick else 3, "sweep_seeds": 4 if quick else 16, "gd_steps": 10_000 if quick else 100_000,
           "gram_widths": [16, 64, 256, 1024] if quick else [16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
           "repeat_startup": 2 if quick else 3, "repeat_cold": 1,
           "diffrax": have("diffrax") and not args.no_diffrax}
    res = {"machine": machine(), "config": {k: v for k, v in cfg.items()},
           "problem": {"loss": "ce", "lambda_W": LAM, "lambda_H": LAM, "init_scale": SCALE, "t": [0.0, float(T_SAVE[-1])],
                       "saves": len(T_SAVE), "rtol": RTOL, "atol": ATOL}}
    print(f"ufm benchmarks on {res['machine']['cpu']} ({res['machine']['cores']} cores)"
          + (", quick" if quick else "") + (", diffrax included" if cfg["diffrax"] else ", no diffrax"), flush=True)
    import ufm
    m = model_for(10)
    ufm.solve(m, m.init(16, seed=0), T_SAVE)  # load the compiled kernels before timing
    for name in SECTIONS:
        if args.only and name not in args.only:
            continue
        print(f"[{name}]", flush=True)
        started = time.perf_counter()
        globals()[f"bench_{name}"](cfg, res)
        res.setdefault("section_wall_s", {})[name] = time.perf_counter() - started
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
