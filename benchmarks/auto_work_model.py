"""Calibration check of ``method="auto"``'s work model (ufm/engine.py: field_work,
explicit_step_cost, rosenbrock_step_cost).

Times, on Gram-space models at the fits' sizes (balanced problems, K = N = 8 … 25) and in
parameter space, one field evaluation, the assembled Jacobian, the LU of the stage matrix, one
stage solve, and whole DOPRI5 / Tsit5 / RODAS4 steps (min of 5 repeats), and prints the
measured RODAS4-to-explicit step ratio beside the model's. The model's weights (``WORK_*``)
were set from these numbers once; the decisions never time anything.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.auto_work_model
"""

from __future__ import annotations

import time

import numpy as np


def _best(f, repeats=5):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return min(out)


def main():
    import ufm
    from numba import njit
    from ufm import engine as E
    from ufm.kernels import fields as _f, integrate as _k, rosenbrock as _kr, tangent as _kt
    from ufm.rosenbrock import RODAS4
    from ufm.solvers import get_solver

    @njit(cache=False)
    def fields(p, y, dy, model, work, reps):
        for _ in range(reps):
            _f.vector_field(p, y, dy, model, work)

    cases = [("gram", 8, 0), ("gram", 9, 0), ("gram", 16, 0), ("gram", 25, 0), ("parameters", 10, 16),
             ("parameters", 16, 32)]
    print("space       K  d     n   n_s | field us  jac ms   LU ms solve us | step us: dopri5 tsit5 rodas4 "
          "| rodas4/tsit5 measured  model")
    for space, K, d in cases:
        m = ufm.UFM(ufm.settings.balanced(K), lambda_W=1e-3, lambda_H=1e-3)
        init = m.isotropic(0.3) if space == "gram" else m.init(d, scale=0.3, seed=0)
        packed = E.pack_model(m, space, d)
        y, dd = E.initial_vector(m, init, space, 0.0)
        y = y + 1e-3 * np.random.default_rng(0).normal(size=y.size) * (space == "parameters")
        n = y.size
        ns = E.factorised_order(packed, n)
        dy, work = np.zeros(n), np.zeros(_f.work_size(packed))
        fields(0, y, dy, packed, work, 1)
        t_f = _best(lambda: fields(0, y, dy, packed, work, 2000)) / 2000
        wt, JT = np.zeros(_kt.tangent_work_size(packed)), np.zeros((n, n))
        _kt.jacobian(0, y, JT, packed, wt)
        t_j = _best(lambda: _kt.jacobian(0, y, JT, packed, wt))
        Wm = np.asfortranarray(np.eye(ns) * 10.0 - JT[:ns, :ns]).T.copy()
        piv = np.zeros(ns, dtype=np.int32)
        _kr.lu_factor(Wm.copy(), piv)
        t_lu = _best(lambda: _kr.lu_factor(Wm.copy(), piv)) - _best(lambda: Wm.copy())
        Wf = Wm.copy()
        _kr.lu_factor(Wf, piv)
        x = np.ones(ns)
        _kr.lu_solve(Wf, piv, x.copy())
        t_s = _best(lambda: _kr.lu_solve(Wf, piv, x.copy()))
        per_step = {}
        for name in ("dopri5", "tsit5", "rodas4"):
            steps = 20 if name == "rodas4" else 400

            def go():
                yy, carry = y.copy(), E.new_carry(0.0, 1e-3)
                buf = E.SaveBuffers(1, n, m.K, m.N, dd, m.bias, ("loss",))
                ctl = E.controls(1e-8, 1e-11, np.inf, steps)
                if name == "rodas4":
                    E.integrate_stiff(packed, yy, np.array([1e9]), E.rosenbrock_tableau(RODAS4), ctl, carry, buf)
                else:
                    E.integrate(packed, yy, np.array([1e9]), E.tableau(get_solver(name)), ctl, carry, buf)
                return carry

            c = go()
            per_step[name] = _best(go) / (c[_k.CARRY_ACCEPTED] + c[_k.CARRY_REJECTED])
        model = E.rosenbrock_step_cost(packed, n, RODAS4) / E.explicit_step_cost(packed, n, get_solver("tsit5"))
        print(f"{space:10s} {K:2d} {d:2d} {n:5d} {ns:5d} | {t_f * 1e6:8.2f} {t_j * 1e3:7.3f} {t_lu * 1e3:7.2f} "
              f"{t_s * 1e6:8.1f} | {per_step['dopri5'] * 1e6:14.1f} {per_step['tsit5'] * 1e6:5.1f} "
              f"{per_step['rodas4'] * 1e6:6.0f} | {per_step['rodas4'] / per_step['tsit5']:21.0f} {model:6.0f}",
              flush=True)


if __name__ == "__main__":
    main()
