"""The explicit driver's step-loop passes, whole-vector against block by block: CPU µs per step
of the stage sums (the s - 1 stage rows through ``_stage``) and of the step's end (b-sum,
divergence count, error sums and norm through ``_step_end``) for a tableau, at several state
sizes and block sizes, random k rows. The thresholds ``BLOCKED_STAGES_MIN_N`` and
``BLOCKED_END_MIN_N`` of :mod:`ufm.kernels.integrate` come from this (best of 5 loops).

    OPENBLAS_NUM_THREADS=1 python benchmarks/step_loop.py [METHOD [N,N,... [BLOCK,BLOCK,...]]]

(default: dop853, n = 320 ... 262,144, blocks 512 and 1024; B0 = whole-vector passes).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from numba import njit

from ufm import engine
from ufm.kernels import integrate as ki
from ufm.solvers import get_solver


@njit
def _lists(A, bw, e, e3, s):
    """The driver's (index, weight) lists of every row, as ``run_steps`` builds them."""
    n_all = A.shape[0]
    wts = np.zeros((n_all + 4, n_all))
    wts[:n_all, :] = A
    wts[n_all, :s] = bw
    wts[n_all + 1, :s] = e
    if e3.shape[0] > 0:
        wts[n_all + 2, :s] = e3
    ix = np.zeros((n_all + 4, n_all), dtype=np.int64)
    cf = np.zeros((n_all + 4, n_all))
    cnt = np.zeros(n_all + 4, dtype=np.int64)
    for i in range(n_all):
        cnt[i] = ki._nonzero_terms(wts, i, i, ix, cf)
    for i in (n_all, n_all + 1, n_all + 2):
        cnt[i] = ki._nonzero_terms(wts, i, s, ix, cf)
    return ix, cf, cnt


@njit
def _loop(m, which, y, k, ix, cf, cnt, s, h, acc, acc3, ytmp, ynew, block, estimates):
    """``m`` times the stage sums (which = 0) or the step's end (1): block = 0 as the driver
    runs them for small states (one pass per sum, count and norm), else block by block."""
    n_all = k.shape[0]
    n = y.shape[0]
    row_b, row_e, row_e3 = n_all, n_all + 1, n_all + 2
    tot = 0.0
    for _ in range(m):
        if which == 0:
            for i in range(1, s):
                if block == 0:
                    ki._combine(y, k, ix, cf, cnt, i, h, acc, ytmp)
                else:
                    ki._stage_blocked(y, k, ix, cf, cnt, i, h, acc, ytmp, block)
        elif block == 0:
            ki._combine(y, k, ix, cf, cnt, row_b, h, acc, ynew)
            n_bad = 0
            for q in range(n):
                n_bad += 0 if abs(ynew[q]) <= ki.DIVERGED else 1
            ki._weighted_sum(k, ix, cf, cnt, row_e, acc)
            if estimates == 2:
                ki._weighted_sum(k, ix, cf, cnt, row_e3, acc3)
                tot += ki._error_norm_dop853(y, ynew, acc, acc3, h, 1e-8, 1e-10) + n_bad
            else:
                tot += ki._error_norm_of(y, ynew, acc, h, 1e-8, 1e-10) + n_bad
        else:
            _, err = ki._step_end_blocked(y, k, ix, cf, cnt, row_b, row_e, row_e3, estimates, h, 1e-8, 1e-10,
                                          acc, acc3, ynew, block)
            tot += err
    return tot


def main(method="dop853", sizes=(320, 8192, 16384, 32768, 65536, 98304, 131072, 262144), blocks=(512, 1024)):
    tab = engine.tableau(get_solver(method, 1e-8))
    estimates = 2 if tab.e3.shape[0] > 0 else 1
    s, n_all = tab.stages, tab.A.shape[0]
    ix, cf, cnt = _lists(tab.A, tab.b, tab.e, tab.e3, s)
    print(f"{method}: CPU µs per step (stage sums / step end), best of 5; B0 = whole-vector passes")
    for n in sizes:
        rng = np.random.default_rng(0)
        k = rng.normal(size=(n_all, n)) * 1e-3
        y = rng.normal(size=n)
        acc, acc3, ytmp, ynew = (np.empty(n) for _ in range(4))
        reps = max(3, int(3e7 / (n * 60)))
        best = {}
        for b in (0, *blocks):
            for w in (0, 1):
                _loop(1, w, y, k, ix, cf, cnt, s, 0.1, acc, acc3, ytmp, ynew, b, estimates)
        for _ in range(5):                               # the variants alternate
            for b in (0, *blocks):
                for w in (0, 1):
                    c0 = time.process_time()
                    _loop(reps, w, y, k, ix, cf, cnt, s, 0.1, acc, acc3, ytmp, ynew, b, estimates)
                    t = 1e6 * (time.process_time() - c0) / reps
                    best[b, w] = min(best.get((b, w), np.inf), t)
        print(f"  n={n:7d}  " + "  ".join(f"B{b}: {best[b, 0]:8.1f} / {best[b, 1]:7.1f}" for b in (0, *blocks)),
              flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else "dop853",
         *([tuple(int(x) for x in a.split(",")) for a in args[1:3]]))
