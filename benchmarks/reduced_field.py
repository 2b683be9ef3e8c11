#!/usr/bin/env python
"""The numeric reduced field (ufm.kernels.reduced) against the Gram-space field, per evaluation
and per solve.

Run from the repository root: ``python benchmarks/reduced_field.py``. Prints a table. Times are
medians of CPU time (``time.process_time``), compilation excluded.

Per evaluation: jitted loops calling ``ufm.kernels.reduced.reduced_field`` and
``ufm.kernels.fields.vector_field`` (Gram space) many times, so Python overhead is excluded.

Per solve: until the reduced space is wired into the driver, the driver's own source
(``ufm/kernels/integrate.py``) is copied into a temporary module whose ``fields`` imports are
replaced by adapters that call the reduced field and objective, so step control, dense output
and save handling are the same code as ``ufm.solve``. Both runs start from isotropic Grams
s²I (in the span), use dopri5 at rtol 1e-8, atol 1e-10, and save at the same times; the
expanded reduced trajectory is compared with the Gram-space one.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

import ufm  # noqa: E402
from ufm.kernels import fields as kf  # noqa: E402
from ufm.kernels import integrate as ki  # noqa: E402
from ufm.kernels import reduced as kr  # noqa: E402
from ufm.reduction import Reduction  # noqa: E402
from ufm.solvers import DOPRI5  # noqa: E402

RTOL, ATOL = 1e-8, 1e-10
SCALE = 1e-3
LAM = 1e-3
BETA = 1.0
T_SAVE = np.geomspace(1e-2, 1e5, 80)

_SHIM = '''
import numpy as np
from numba import njit
from ufm.kernels.fields import IP_NTHETA, IP_SIZE, state_size, theta_piece
from ufm.kernels.reduced import reduced_field, reduced_objective

# the reduced tables travel in the Gram field's Y (tab_i) and pi (tab_f) slots; the work size in ip[IP_SIZE]


@njit
def work_size(ip):
    return ip[IP_SIZE]


@njit
def vector_field(p, y, dy, ip, coef, Y, pi, theta, work):
    reduced_field(y, dy, ip, coef, Y, pi, work)


@njit
def record(j, t, y, ip, coef, Y, pi, theta_pinv, theta_t, save, out_loss, out_data, out_state, out_gram_W,
           out_gram_H, out_logits, work):
    obj, data = reduced_objective(y, ip, coef, Y, pi, work)
    out_loss[j] = obj
    out_data[j] = data
    if save[0]:
        out_state[j, :] = y
'''


def _reduced_driver():
    """A copy of the driver module whose field and record are the reduced ones."""
    tmp = Path(tempfile.mkdtemp(prefix="ufm_reduced_bench_"))
    (tmp / "_reduced_shim.py").write_text(_SHIM)
    src = Path(ki.__file__).read_text()
    src, n = re.subn(r"from \.fields import ", "from _reduced_shim import ", src)
    assert n == 1, "the driver's imports changed: update this benchmark"
    src = src.replace("@njit(cache=True)", "@njit")
    (tmp / "_reduced_integrate.py").write_text(src)
    sys.path.insert(0, str(tmp))
    import _reduced_integrate
    return _reduced_integrate


@njit
def _reduced_loop(n, y, dy, ip, coef, tab_i, tab_f, work):
    for _ in range(n):
        kr.reduced_field(y, dy, ip, coef, tab_i, tab_f, work)


@njit
def _gram_loop(n, y, dy, ip, coef, Y, pi, theta, work):
    for _ in range(n):
        kf.vector_field(0, y, dy, ip, coef, Y, pi, theta, work)


def _median_time(fn, repeat=7):
    """Median CPU seconds of this process (other jobs on a shared machine inflate wall time)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def _generated_rhs(model):
    """The sympy-generated numba right-hand side of ufm.theory for this model, or None."""
    from ufm.theory import _generated_reduced as gen
    from ufm.theory import codegen
    sym = ufm.theory.reduce(model)
    key = codegen.variant_key(sym.ode.scheme, sym.ode.bias)
    if key not in gen.VARIANTS:
        return None
    fn = getattr(gen, "rhs_" + key)

    @njit
    def loop(n, ce, y, par, dy):
        for _ in range(n):
            fn(ce, y, par, dy)
    return loop, sym


def per_evaluation(model):
    r = Reduction.from_model(model)
    tab_i, tab_f = r.pack()
    ip, coef, Y, pi, theta, _, _ = model._pack("gram", 0)
    y = 0.3 * np.random.default_rng(0).normal(size=r.size)
    dy = np.zeros_like(y)
    work = np.zeros(kr.reduced_work_size(tab_i))
    M, GW, GH, b = r.expand(y)
    yg = np.concatenate([M.ravel(), GW.ravel(), GH.ravel()])
    dyg = np.zeros_like(yg)
    workg = np.zeros(kf.work_size(ip))
    n_red, n_gram = 200_000, max(200, int(2e8 / (model.K * model.N * (model.K + model.N))))
    t_red = _median_time(lambda: _reduced_loop(n_red, y, dy, ip, coef, tab_i, tab_f, work)) / n_red
    t_gram = _median_time(lambda: _gram_loop(n_gram, yg, dyg, ip, coef, Y, pi, theta, workg)) / n_gram
    t_gen = float("nan")
    generated = _generated_rhs(model)
    if generated is not None:
        loop, sym = generated
        # the theory orders coefficients differently; the time does not depend on the order
        ce = 1 if model.loss_name == "ce" else 0
        t_gen = _median_time(lambda: loop(n_red, ce, y.copy(), sym.par, np.zeros_like(y))) / n_red
    return r, t_red, t_gram, t_gen


def per_solve(model, driver, repeat=7):
    r = Reduction.from_model(model)
    tab_i, tab_f = r.pack()
    ip, coef, _, _, _, _, _ = model._pack("gram", 0)
    ip = np.append(ip, kr.reduced_work_size(tab_i))
    ip[kf.IP_NTHETA] = 0
    y0 = r.isotropic(SCALE)
    arr = DOPRI5.arrays
    T = len(T_SAVE)
    save = np.array([1, 0, 0, 0], dtype=np.int64)
    outs = {}

    def run_reduced():
        y = y0.copy()
        carry = np.zeros(ki.CARRY_SIZE)
        carry[ki.CARRY_FACOLD] = 1e-4
        out_loss, out_data, out_state = np.full(T, np.nan), np.full(T, np.nan), np.zeros((T, r.size))
        status, j = driver.integrate(y, carry, T_SAVE, 0, T, arr["A"], arr["b"], arr["c"], arr["e"], arr["P"],
                                     float(DOPRI5.controller_order), 1, int(DOPRI5.fsal), np.inf, RTOL, ATOL,
                                     10_000_000, ip, coef, tab_i, tab_f, np.zeros((1, 1, 1)), np.zeros(1),
                                     np.zeros((1, 1, 1)), save, out_loss, out_data, out_state,
                                     np.zeros((0, 1, 1)), np.zeros((0, 1, 1)), np.zeros((0, 1, 1)))
        assert status == ki.STATUS_OK
        outs["reduced"] = (out_state, out_loss, int(carry[ki.CARRY_RHS]))

    gs0 = r.gram_state(y0)

    def run_gram():
        outs["gram"] = ufm.solve(model, gs0, T_SAVE, space="gram", rtol=RTOL, atol=ATOL, save=("logits", "gram_H"))

    def run_theory():
        outs["theory"] = reduced_theory.solve(T_SAVE, scale=SCALE, rtol=RTOL, atol=ATOL)

    def run_setup():
        Reduction.from_model(model).pack()

    t_red = _median_time(run_reduced, repeat)
    t_gram = _median_time(run_gram, repeat)
    t_setup = _median_time(run_setup, repeat)
    reduced_theory = ufm.theory.reduce(model)
    t_theory = _median_time(run_theory, 3) if model.N <= 16 else float("nan")
    states, loss, rhs = outs["reduced"]
    M, _, GH, _ = r.expand(states)
    g = outs["gram"]
    agree = max(float(np.max(np.linalg.norm((M - g.logits).reshape(T, -1), axis=1)
                             / np.linalg.norm(g.logits.reshape(T, -1), axis=1))),
                float(np.max(np.linalg.norm((GH - g.gram_H).reshape(T, -1), axis=1)
                             / np.linalg.norm(g.gram_H.reshape(T, -1), axis=1))),
                float(np.max(np.abs(loss - g.loss) / np.abs(g.loss))))
    return {"reduced_s": t_red, "gram_s": t_gram, "setup_s": t_setup, "theory_s": t_theory, "agree": agree,
            "reduced_rhs": rhs, "gram_rhs": g.info["rhs_evaluations"]}


def main():
    driver = _reduced_driver()
    print(f"dopri5 rtol {RTOL:g} atol {ATOL:g}, {len(T_SAVE)} saves in [{T_SAVE[0]:g}, {T_SAVE[-1]:g}], CE, "
          f"λ_W = λ_H = {LAM:g}, Θ = problem.kernel('attribute', {BETA:g}), isotropic start s = {SCALE:g}")
    for levels in ((3, 3), (10, 10)):
        p = ufm.settings.factorial(levels)
        model = ufm.UFM(p, lambda_W=LAM, lambda_H=LAM, coupling=p.kernel("attribute", BETA))
        r, e_red, e_gram, e_gen = per_evaluation(model)
        s = per_solve(model, driver)
        print(f"factorial{levels} (K = N = {p.N}, reduced state {r.size} vs Gram {p.K * p.N + p.K ** 2 + p.N ** 2}):")
        print(f"  per evaluation: reduced {e_red * 1e9:.0f} ns, Gram {e_gram * 1e6:.2f} µs (x{e_gram / e_red:.0f}), "
              f"ufm.theory's generated code {e_gen * 1e9:.0f} ns")
        print(f"  per solve: reduced {s['reduced_s'] * 1e3:.3f} ms ({s['reduced_rhs']} rhs), Gram ufm.solve "
              f"{s['gram_s'] * 1e3:.2f} ms ({s['gram_rhs']} rhs), x{s['gram_s'] / s['reduced_s']:.0f}; "
              f"Reduction.from_model + pack {s['setup_s'] * 1e3:.2f} ms; "
              f"theory.reduce().solve (scipy DOP853) {s['theory_s'] * 1e3:.1f} ms; agree {s['agree']:.1e}")


if __name__ == "__main__":
    main()
