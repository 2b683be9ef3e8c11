"""Where ufm's DOP853 and scipy's take their steps: the same tableau under either controller.

``python -m benchmarks.step_history [--K 64 --d 64 --rtol 1e-8]`` runs scipy's ``DOP853`` on the
benchmark problem twice: with scipy's own step-size controller (an I controller: safety 0.9,
exponent 1/8, step ratio in [0.2, 10]), and with ufm's -- its compiled controller functions
(``ufm.kernels.integrate.accepted_step_pi`` / ``rejected_step_bounded``) and the constants of
``ufm.solvers.DOP853`` (PI, β = 0.04, exponent 1/8 − 0.75β), called from Python, and ufm's
initial step (Hairer's heuristic with the controller order 8, scipy's uses 7). Both use scipy's
stages, so the only difference is the controller; the second run reproduces ``ufm.solve(...,
method="dop853")``'s accepted and rejected counts (tests/test_benchmarks.py checks that). It
prints the accepted and rejected steps and the median accepted error estimate per decade of t.

Measured at K = N = 64, d = 64, rtol 1e-8, atol 1e-10 (2026-12-02): scipy 78 accepted / 4
rejected steps (1049 evaluations), ufm's controller 95 / 3 (1245; ``ufm.solve`` 1238, its
dense-only stages counted per step with a save); per decade [10, 100): 2 / 4 steps, median
error estimate 0.30 / 0.008, [100, 1e3): 23 / 27 at 0.18 / 0.029, [1e3, 1e4]: 50 / 61 at
0.41 / 0.14. The PI controller settles where SAFETY · e^(β − α) = 1, e* = 0.9^(1/0.055) = 0.15
(scipy's I controller at 0.9^8 = 0.43), and climbs there slowly from the tiny errors of the
first steps (its memory term err_prev^β holds the growth back).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _controlled_dop853(ufm_controller: bool):
    """scipy's DOP853 with a step log (t, h, error estimate, accepted) and, when
    ``ufm_controller``, ufm's controller and initial step in place of scipy's."""
    from scipy.integrate._ivp.common import select_initial_step
    from scipy.integrate._ivp.rk import DOP853, rk_step

    from ufm.kernels import integrate as kern
    from ufm.solvers import DOP853 as UFM_DOP853

    beta, fac_min, fac_max = UFM_DOP853.beta, UFM_DOP853.fac_min, UFM_DOP853.fac_max
    order = float(UFM_DOP853.controller_order)
    expo1 = 1.0 / order - 0.75 * beta            # as ufm.kernels.integrate.integrate computes it

    class Logged(DOP853):
        last = None

        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self.log = []
            self.facold = 1e-4                    # ufm's carry starts the PI memory here
            if ufm_controller:
                self.h_abs = select_initial_step(self.fun, self.t, self.y, self.t_bound, np.inf, self.f,
                                                 self.direction, order, self.rtol, self.atol)
            Logged.last = self

        def _estimate_error_norm(self, K, h, scale):
            err = super()._estimate_error_norm(K, h, scale)
            # scipy accepts err < 1, ufm err <= 1
            self.log.append((self.t, abs(h), err, err <= 1.0 if ufm_controller else err < 1.0))
            return err

        def _step_impl(self):
            if not ufm_controller:
                return super()._step_impl()
            t, y = self.t, self.y
            h_abs = self.h_abs
            rejected = False
            while True:
                t_new = min(t + h_abs, self.t_bound)
                h = t_new - t
                clipped = t_new == self.t_bound
                y_new, f_new = rk_step(self.fun, t, y, self.f, h, self.A, self.B, self.C, self.K)
                scale = self.atol + np.maximum(np.abs(y), np.abs(y_new)) * self.rtol
                err = self._estimate_error_norm(self.K, h, scale)
                if err <= 1.0:
                    h_abs, self.facold = kern.accepted_step_pi(h_abs, h, err, self.facold, expo1, beta, fac_min,
                                                               fac_max, rejected, clipped)
                    break
                h_abs = kern.rejected_step_bounded(h, err, expo1, fac_min)
                rejected = True
            self.h_previous, self.y_old, self.t, self.y, self.h_abs, self.f = h, y, t_new, y_new, h_abs, f_new
            return True, None

    return Logged


def history(case, ufm_controller: bool):
    """(saved states (T, n), evaluations, log (attempts, 4): t, h, error estimate, accepted) of
    scipy's DOP853 on ``case`` (a benchmarks.peers.Case) under scipy's or ufm's controller."""
    from scipy.integrate import solve_ivp

    from benchmarks import peers
    method = _controlled_dop853(ufm_controller)
    Y, pi = case.arrays()
    f = peers.numpy_rhs(Y, pi, case.lam, case.lam, case.d, loss=case.loss)
    sol = solve_ivp(f, (0.0, float(case.t[-1])), case.y0(), method=method, t_eval=case.times, rtol=case.rtol,
                    atol=case.atol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp DOP853 ({'ufm' if ufm_controller else 'scipy'} controller): {sol.message}")
    return sol.y.T.copy(), int(sol.nfev), np.array(method.last.log, dtype=float).reshape(-1, 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--rtol", type=float, default=1e-8)
    args = ap.parse_args(argv)
    from benchmarks import peers
    from benchmarks.run import T_SAVE
    case = peers.Case(K=args.K, d=args.d, t=tuple(T_SAVE), rtol=args.rtol, atol=args.rtol * 1e-2)
    ref = peers.reference(case)
    edges = [0.0, 1e-2, 1.0, 10.0, 100.0, 1e3, np.inf]
    print(f"K = N = {args.K}, d = {args.d}, rtol {case.rtol:g}, atol {case.atol:g}")
    for name, mine in (("scipy's controller", False), ("ufm's controller", True)):
        y, nfev, log = history(case, mine)
        acc = log[:, 3] == 1
        print(f"{name}: {nfev} evaluations, {int(acc.sum())} accepted, {int((~acc).sum())} rejected, "
              f"error vs reference {peers.relative_error(y, ref.y):.1e}")
        for a, b in zip(edges, edges[1:]):
            m = (log[:, 0] >= a) & (log[:, 0] < b)
            if (m & acc).any():
                print(f"  t in [{a:g}, {b:g}): {int((m & acc).sum()):3d} accepted, {int((m & ~acc).sum()):2d} rejected, "
                      f"median h {np.median(log[m & acc, 1]):.3g}, median error estimate {np.median(log[m & acc, 2]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
