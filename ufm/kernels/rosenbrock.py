"""Numba driver: Rosenbrock–Wanner integration (stiff flows), optionally with forward
sensitivities, to save times.

The contract is the explicit driver's (:mod:`ufm.kernels.integrate`): the same carry layout and
status codes, resumable calls with increasing ``j_end``, ``Controls.max_steps`` over the whole
run, never raises, every save before a failure written, steps never cross a coupling breakpoint,
the same scaled RMS error norm and PI step-size controller. Saves use the method's continuous
extension (:class:`~ufm.kernels.groups.RosenbrockTableau`).

Each step evaluates the exact Jacobian J at the step's start (:func:`ufm.kernels.tangent.jacobian`:
assembled from its blocks in parameter and Gram space, one tangent per column in the reduced
space), factors
I/(hγ) − J once (LAPACK's dense LU with partial pivoting) and solves one system per stage
(form of :mod:`ufm.rosenbrock`). A rejected step keeps J and refactors.

Gram space without sensitivities solves in the independent coordinates of the state
(:func:`symmetric_coordinates`: the upper triangles of G_W and G_H, n_s = 528 of n = 768 at
K = N = 16, a third of the LU's cost): the field maps symmetric states to symmetric velocities
(it symmetrises its G_W and G_H parts), so J maps symmetric directions to symmetric ones, and
a stage system whose right-hand side is symmetric has a symmetric solution, the solution of
the system restricted to those coordinates. Its matrix sums the Jacobian's two columns of an
off-diagonal pair; the increments are written to both mirror entries (exactly symmetric).

**Schur complement** (Gram space without sensitivities): where the stage matrix's block on the
Gram coordinates (the upper triangles of G_W and G_H) is diagonal — each Gram entry's rate
depends on the other Gram entries only through its own decay, as in the linear-features UFM
(dG_W/dt = −(G Mᵀ + M Gᵀ) − 2λ_W G_W, dG_H/dt = −(Mᵀ G Θ + Θ Gᵀ M) − 2λ_E G_H, G the loss
gradient at M = WH (+ b)) and the standard one — the factorisation eliminates that block:
S = P − Q D⁻¹ R on the (M, b) block (KN (+ K) of n_s: 256 of 528 at K = N = 16), one matrix
product and an LU of half the order, a ninth of the flops (:func:`schur_factor`, :func:`schur_solve`; the same
solution to rounding). The test is exact zeros off the block's diagonal, made on every
factorisation (a coupled UFM's decay through Θ, λ_H(G_H Θ + Θ G_H), fills it unless Θ is
diagonal: dense LU).

**Jacobian reuse** (a W-method, :attr:`ufm.rosenbrock.RosenbrockMethod.reuses_jacobian`, e.g.
ROS34PW2; ``cache.state[CACHE_REUSE]`` = 1): the method keeps its order for any matrix in place
of J, so J and the LU of I/(h_LU γ) − J are kept over steps (in ``cache``, across calls too):

* the step is **held** at h_LU while the controller's proposal h lies in
  [band_low · h_LU, band · h_LU] (``CACHE_BAND_LOW``, ``CACHE_BAND``; BDF codes hold their
  step the same way), so the LU stays valid; a proposal outside the band (growth past it, a
  rejection, a clip to a breakpoint or to h_max) refactors at the new step (holding h exactly
  is what keeps the W-method's order: a matrix I/(h_LU γ) − J used at another h would be a
  W-method with the h-dependent A = J + (1/h − 1/h_LU)/γ · I, outside the theory);
* every refactorisation uses a Jacobian at the current state (assembling it is ~10 % of an LU
  from n_s ~ 500 on), so a rejected step, or an error estimate that grew until the controller
  asks for a smaller step (a stale J slowing the convergence), refreshes J;
* after ``CACHE_MAX_AGE`` accepted steps on one Jacobian J and the LU are renewed anyway (the
  order holds with any J; the stability of the stiff modes wants J near the current one).

RODAS4 (W-order 1) reuses nothing: one Jacobian and one LU per step, J kept on rejection.
Sensitivities always run without reuse (their augmented Jacobian's blocks H_k are evaluated
at the step's state with the prepared tangent work).

Sensitivities (``sens.codes`` non-empty, Gram space): the state is z = [y, S_1 … S_p] with
S_k = ∂y/∂θ_k and dS_k/dt = J(y) S_k + ∂f/∂θ_k (y). The augmented Jacobian is block lower
triangular, [[J, 0], [H_k, J]] with H_k u = f''(y)[S_k, u] + ∂_y(∂f/∂θ_k)·u, so each stage
solves with the one LU: u_y = W⁻¹ r_y, then u_k = W⁻¹ (r_k + H_k u_y). The error norm runs over
all of z (error control on the sensitivities too).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import config, njit, types

from .fields import IP_N, IP_NTHETA, record, state_size, theta_piece, vector_field, work_size
from .layout import IP_BIAS, IP_K, IP_SPACE, SPACE_GRAM
from .integrate import (BETA, CARRY_ACCEPTED, CARRY_FACOLD, CARRY_H, CARRY_J, CARRY_REJECTED, CARRY_RHS, CARRY_T,
                        DIVERGED, STATUS_MAX_STEPS, STATUS_OK, STATUS_STEP_UNDERFLOW, accept_state, accepted_step,
                        clip_step, rejected_step, stalled)
from .integrate import _error_norm, _rms_scaled   # the tolerance-scaled norms every driver uses
from .tangent import (gram_param_field, gram_param_jvp, gram_second, jacobian, jacobian_tangents, jvp_prepared,
                      prepare, tangent_work_size)

STATUS_SINGULAR = 4          # I/(hγ) − J stayed singular after repeated step halving

# counters of the stiff driver (``stats``, float64)
STAT_JACOBIANS = 0
STAT_FACTORIZATIONS = 1
STAT_JVPS = 2
STAT_SCHUR = 3           # factorisations done by the Schur complement on the (M, b) block (schur_factor)
STAT_SIZE = 4

# ``StageCache.state`` (float64): the reuse policy, then what the driver keeps between steps/calls
CACHE_REUSE = 0          # 1: a W-method, J and the LU may be kept over steps
CACHE_BAND = 1           # the step is held at h_LU while the proposal is in [h_LU, band · h_LU]
CACHE_MAX_AGE = 2        # accepted steps after which J and the LU are renewed anyway
CACHE_LU_VALID = 3       # 1: cache.Wm holds the LU of I/(h_LU γ) − J for cache.JT
CACHE_H_LU = 4           # h_LU
CACHE_JAC_AGE = 5        # accepted steps since J was evaluated (0: J is at the current state)
CACHE_JAC_VALID = 6      # 1: cache.JT holds a Jacobian
CACHE_BAND_LOW = 7       # ... and not below band_low · h_LU (nor after a rejection asked for less)
CACHE_DENSE = 8          # 1: always the dense LU of the stage matrix (no Schur complement; tests compare the two)
CACHE_SIZE = 9


class StageCache(NamedTuple):
    """The stiff driver's Jacobian and stage-matrix LU with their state, kept across calls.

    Fields:
        JT: float64 (n, n) the Jacobian J in the layout of :func:`ufm.kernels.tangent.jacobian`.
        Wm: float64 (n_f, n_f) the LU of I/(hγ) − J in the factorised coordinates (n_f = n_s of
            :func:`symmetric_order` in Gram space without sensitivities, else n).
        piv: int32 (n_f,) its pivots. state: float64 (CACHE_SIZE,) the CACHE_* entries.
    A cache whose arrays do not have these shapes is ignored (the driver allocates its own).
    """

    JT: np.ndarray
    Wm: np.ndarray
    piv: np.ndarray
    state: np.ndarray


if config.DISABLE_JIT:
    def _dgetrf(M, ipiv):
        """Interpreted runs (NUMBA_DISABLE_JIT=1): the same LAPACK routine through scipy."""
        from scipy.linalg import lapack
        lu, piv, info = lapack.dgetrf(M.T)
        M[:, :] = lu.T
        ipiv[:] = piv + 1
        return info
else:
    # LAPACK's dgetrf through numba's own binding (the one np.linalg.inv uses): a symbol name,
    # resolved when the kernel runs (scipy.linalg.cython_lapack is imported then, not with ufm),
    # so kernels that call it stay cacheable.
    _numba_xxgetrf = types.ExternalFunction("numba_xxgetrf", types.intc(
        types.char, types.intp, types.intp, types.CPointer(types.float64), types.intp, types.CPointer(types.int32)))

    @njit(cache=True)
    def _dgetrf(M, ipiv):
        n = M.shape[0]
        return _numba_xxgetrf(100, n, n, M.ctypes, n, ipiv.ctypes)     # 100 = ord("d")


@njit(cache=True)
def lu_factor(M, ipiv):
    """LU factorisation with partial pivoting (LAPACK dgetrf) of the (n, n) matrix W whose
    **transpose** is the row-major ``M`` (M is W in column-major order: I/(hγ) − Jᵀ needs no
    transposed copy). On return M holds L (unit diagonal) and U of P W = L U, column-major;
    ``ipiv`` (int32, 1-based, LAPACK's) the row interchanges. Returns 0, or 1 when U has a zero or
    non-finite diagonal entry (singular, or a non-finite matrix)."""
    if _dgetrf(M, ipiv) != 0:
        return 1
    for k in range(M.shape[0]):
        if not (abs(M[k, k]) > 0.0 and np.isfinite(M[k, k])):
            return 1
    return 0


@njit(cache=True)
def lu_solve(M, ipiv, x):
    """Solve W x = b in place (``x`` holds b on entry) with the factors from :func:`lu_factor`.
    Both sweeps run along rows of M (columns of L and U): contiguous."""
    n = M.shape[0]
    for k in range(n):
        r = ipiv[k] - 1
        if r != k:
            tmp = x[k]
            x[k] = x[r]
            x[r] = tmp
    for k in range(n):              # L y = P b, L[i, k] = M[k, i]
        xk = x[k]
        if xk != 0.0:
            col = M[k, k + 1:]
            xs = x[k + 1:]
            for i in range(col.shape[0]):
                xs[i] -= col[i] * xk
    for k in range(n - 1, -1, -1):  # U x = y, U[i, k] = M[k, i]
        xk = x[k] / M[k, k]
        x[k] = xk
        if xk != 0.0:
            col = M[k, :k]
            for i in range(k):
                x[i] -= col[i] * xk


@njit(cache=True)
def symmetric_order(model):
    """n_s, the number of independent coordinates of a Gram-space state:
    KN + K(K+1)/2 + N(N+1)/2 (+ K with a bias), against n = KN + K² + N² (+ K)."""
    K = model.ip[IP_K]
    N = model.ip[IP_N]
    nb = K if model.ip[IP_BIAS] else 0
    return K * N + K * (K + 1) // 2 + N * (N + 1) // 2 + nb


@njit(cache=True)
def symmetric_coordinates(model):
    """(ia, ib): the independent coordinates of a Gram-space state, int64 (n_s,) each
    (:func:`symmetric_order`): M and b entry by entry (ia = ib), G_W and G_H by their upper
    triangles, (i, j) at ia and its mirror (j, i) at ib."""
    K = model.ip[IP_K]
    N = model.ip[IP_N]
    nM = K * N
    nb = K if model.ip[IP_BIAS] else 0
    ns = symmetric_order(model)
    ia = np.empty(ns, dtype=np.int64)
    ib = np.empty(ns, dtype=np.int64)
    q = 0
    for i in range(nM):
        ia[q] = i
        ib[q] = i
        q += 1
    for off, m in ((nM, K), (nM + K * K, N)):
        for i in range(m):
            for j in range(i, m):
                ia[q] = off + i * m + j
                ib[q] = off + j * m + i
                q += 1
    for k in range(nb):
        ia[q] = nM + K * K + N * N + k
        ib[q] = ia[q]
        q += 1
    return ia, ib


@njit(cache=True)
def augmented_field(p, z, dz, model, sens, work_f, work_t, coef_buf, stats):
    """dz/dt of the state with its sensitivities (module docstring); plain f when p = 0."""
    n = state_size(model)
    y = z[:n]
    vector_field(p, y, dz[:n], model, work_f)
    np_ = sens.codes.shape[0]
    if np_ == 0:
        return
    prepare(y, model, work_t)
    tmp = np.empty(n)
    for k in range(np_):
        Sk = z[n * (k + 1):n * (k + 2)]
        out = dz[n * (k + 1):n * (k + 2)]
        jvp_prepared(p, y, Sk, out, model, work_t)
        gram_param_field(p, y, sens.codes[k], sens.directions[k], tmp, model, work_t, coef_buf)
        for i in range(n):
            out[i] += tmp[i]
    stats[STAT_JVPS] += np_


@njit(cache=True)
def _record_all(j, t, z, model, out, sens, work_f):
    n = state_size(model)
    record(j, t, z[:n], model, out, work_f)
    if sens.S.shape[0] > 0:
        for k in range(sens.codes.shape[0]):
            for i in range(n):
                sens.S[j, k, i] = z[n * (k + 1) + i]


@njit(cache=True)
def integrate_rosenbrock(z, carry, t_save, j_end, rtab, ctl, model, out, sens, stats, cache):
    """Advance ``z`` (in place) from ``carry[CARRY_T]`` through ``t_save[carry[CARRY_J]:j_end]``.

    Arguments:
        z: (n (1 + p),) the state followed by its p sensitivities.
        carry: (CARRY_SIZE,) as for :func:`ufm.kernels.integrate.integrate`.
        t_save, j_end: save times and the end of this call's slice.
        rtab: :class:`~ufm.kernels.groups.RosenbrockTableau`. ctl: :class:`~ufm.kernels.groups.Controls`.
        model: :class:`~ufm.kernels.groups.Model`. out: :class:`~ufm.kernels.groups.Outputs`.
        sens: :class:`~ufm.kernels.groups.Sensitivity`. stats: (STAT_SIZE,) counters, added to.
        cache: :class:`StageCache` (its policy, and J and the LU of an earlier call to continue).

    Returns:
        (status, j) as the explicit driver (plus STATUS_SINGULAR).
    """
    a = rtab.a
    Cc = rtab.C
    mw = rtab.m
    ew = rtab.e
    D = rtab.D
    gamma = rtab.gamma
    rtol = ctl.rtol
    atol = ctl.atol
    nz = z.shape[0]
    n = state_size(model)
    np_ = sens.codes.shape[0]
    s = mw.shape[0]
    U = np.empty((s, nz))
    F = np.empty(nz)
    zst = np.empty(nz)
    znew = np.empty(nz)
    errv = np.empty(nz)
    rhs = np.empty(nz)
    tmp = np.empty(n)
    tmp2 = np.empty(n)
    sym = model.ip[IP_SPACE] == SPACE_GRAM and np_ == 0
    ia, ib = symmetric_coordinates(model) if sym else (np.arange(n), np.arange(n))
    nf = ia.shape[0]                 # the order of the factorised system
    cst = cache.state
    if (cache.JT.shape[0] == n and cache.JT.shape[1] == n and cache.Wm.shape[0] == nf and cache.Wm.shape[1] == nf
            and cache.piv.shape[0] == nf and cst.shape[0] >= CACHE_SIZE):
        JT = cache.JT
        Wm = cache.Wm
        piv = cache.piv
        kept = True
    else:                            # not this run's shapes: nothing to continue, own arrays
        JT = np.empty((n, n))
        Wm = np.empty((nf, nf))
        piv = np.zeros(nf, dtype=np.int32)
        cst = np.zeros(CACHE_SIZE)
        kept = False
    reuse = cst[CACHE_REUSE] == 1.0 and np_ == 0
    band = cst[CACHE_BAND]
    band_low = cst[CACHE_BAND_LOW]
    max_age = cst[CACHE_MAX_AGE]
    # what an earlier call left: only a W-method may use a Jacobian from another state
    lu_valid = reuse and kept and cst[CACHE_LU_VALID] == 1.0 and cst[CACHE_JAC_VALID] == 1.0
    h_lu = cst[CACHE_H_LU]
    jac_age = cst[CACHE_JAC_AGE] if lu_valid else 0.0
    xs = np.empty(nf)
    # the Schur complement's (M, b) block: ci its positions among the factorised coordinates,
    # the Gram block between them is [n_m, n_m + nd) (symmetric_coordinates' order)
    n_m = model.ip[IP_K] * model.ip[IP_N] if sym else 0
    nb_s = model.ip[IP_K] if (sym and model.ip[IP_BIAS]) else 0
    nd = nf - n_m - nb_s if sym else 0
    allow_schur = sym and nd > 0 and not (cst.shape[0] > CACHE_DENSE and cst[CACHE_DENSE] == 1.0)
    nc = n_m + nb_s if allow_schur else 0
    ndd = nd if allow_schur else 0
    ci = np.empty(nc, dtype=np.int64)
    for q in range(n_m if allow_schur else 0):
        ci[q] = q
    for q in range(nb_s if allow_schur else 0):
        ci[n_m + q] = nf - nb_s + q
    S_lu = np.empty((nc, nc))
    piv_s = np.zeros(nc, dtype=np.int32)
    Q_cd = np.empty((nc, ndd))
    R_dc = np.empty((ndd, nc))
    dinv = np.empty(ndd)
    xc = np.empty(nc)
    xd = np.empty(ndd)
    schur = False                    # the current LU is schur_factor's
    work_f = np.empty(work_size(model))
    work_t = np.empty(tangent_work_size(model))
    work_j = np.empty(tangent_work_size(model))
    coef_buf = np.empty(model.coef.shape[0])
    coupled = model.ip[IP_NTHETA] > 0
    theta_t = model.theta_t
    n_pieces = theta_t.shape[0] if coupled else 1
    expo1 = 1.0 / rtab.order - 0.75 * BETA

    t = carry[CARRY_T]
    h = carry[CARRY_H]
    facold = carry[CARRY_FACOLD]
    j = int(carry[CARRY_J])
    t_end = t_save[j_end - 1]
    while j < j_end and t_save[j] <= t:
        _record_all(j, t_save[j], z, model, out, sens, work_f)
        j += 1
    if j >= j_end:
        carry[CARRY_J] = j
        return STATUS_OK, j

    p = theta_piece(theta_t, t) if coupled else 0
    augmented_field(p, z, F, model, sens, work_f, work_t, coef_buf, stats)
    carry[CARRY_RHS] += 1
    if h <= 0.0:
        # Hairer's starting-step heuristic with one explicit Euler probe
        d0 = _rms_scaled(z, z, rtol, atol)
        d1 = _rms_scaled(F, z, rtol, atol)
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        for i in range(nz):
            zst[i] = z[i] + h0 * F[i]
        augmented_field(p, zst, rhs, model, sens, work_f, work_t, coef_buf, stats)
        carry[CARRY_RHS] += 1
        for i in range(nz):
            errv[i] = rhs[i] - F[i]
        d2 = _rms_scaled(errv, z, rtol, atol) / h0
        dm = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if dm <= 1e-15 else (0.01 / dm) ** (1.0 / (rtab.order + 1.0))
        h = min(100.0 * h0, h1)
    status = STATUS_OK
    attempted = int(carry[CARRY_ACCEPTED] + carry[CARRY_REJECTED])
    rejected_last = False
    jac_valid = lu_valid and jac_age == 0.0      # a Jacobian at the current state
    singular_run = 0
    while j < j_end:
        if attempted >= ctl.max_steps:
            status = STATUS_MAX_STEPS
            break
        stop = t_end
        if p + 1 < n_pieces and theta_t[p + 1] < stop:
            stop = theta_t[p + 1]
        h_use = min(h, ctl.h_max)
        if (lu_valid and band_low * h_lu <= h_use <= band * h_lu and jac_age < max_age
                and not (rejected_last and h_use < h_lu)):
            h_use = h_lu                 # held: the kept LU serves (module docstring)
        h_try, clipped = clip_step(t, h_use, ctl.h_max, stop)
        if stalled(h_try, t, t_end):
            status = STATUS_STEP_UNDERFLOW
            break

        y = z[:n]
        if not (lu_valid and h_try == h_lu and jac_age < max_age):
            lu_valid = False
            if not jac_valid:
                jacobian(p, y, JT, model, work_j)       # leaves work_j prepared at y (for H_k)
                stats[STAT_JACOBIANS] += 1
                stats[STAT_JVPS] += jacobian_tangents(model, n)
                jac_valid = True
                jac_age = 0.0
        if not lu_valid:
            inv_hg = 1.0 / (h_try * gamma)
            _stage_matrix(JT, Wm, inv_hg, sym, ia, ib)
            stats[STAT_FACTORIZATIONS] += 1
            schur = allow_schur and diagonal_block(Wm, n_m, n_m + nd)
            if schur:
                stats[STAT_SCHUR] += 1
                singular = schur_factor(Wm, ci, n_m, S_lu, piv_s, Q_cd, R_dc, dinv)
            else:
                singular = lu_factor(Wm, piv)
            if singular != 0:
                singular_run += 1
                if singular_run >= 5:
                    status = STATUS_SINGULAR
                    break
                h = 0.5 * h_try
                carry[CARRY_REJECTED] += 1
                attempted += 1
                rejected_last = True
                continue
            singular_run = 0
            lu_valid = True
            h_lu = h_try

        finite = True
        for i in range(s):
            if i == 0:
                for q in range(nz):
                    rhs[q] = F[q]
            else:
                for q in range(nz):
                    zst[q] = z[q]
                for l in range(i):
                    c = a[i, l]
                    if c != 0.0:
                        for q in range(nz):
                            zst[q] += c * U[l, q]
                augmented_field(p, zst, rhs, model, sens, work_f, work_t, coef_buf, stats)
                carry[CARRY_RHS] += 1
                for l in range(i):
                    c = Cc[i, l] / h_try
                    if c != 0.0:
                        for q in range(nz):
                            rhs[q] += c * U[l, q]
            ui = U[i]
            if sym:
                for q in range(nf):
                    xs[q] = rhs[ia[q]]
                if schur:
                    schur_solve(S_lu, piv_s, Q_cd, R_dc, dinv, ci, n_m, xs, xc, xd)
                else:
                    lu_solve(Wm, piv, xs)
                for q in range(nf):
                    ui[ia[q]] = xs[q]
                    ui[ib[q]] = xs[q]
            else:
                for q in range(nz):
                    ui[q] = rhs[q]
                lu_solve(Wm, piv, ui[:n])
            for k in range(np_):
                # u_k = W⁻¹ (r_k + H_k u_y), H_k at the step's start (work_j prepared at y)
                Sk = z[n * (k + 1):n * (k + 2)]
                gram_second(p, y, Sk, ui[:n], tmp, model, work_j)
                gram_param_jvp(p, y, ui[:n], sens.codes[k], sens.directions[k], tmp2, model, work_j, coef_buf)
                uk = ui[n * (k + 1):n * (k + 2)]
                for q in range(n):
                    uk[q] += tmp[q] + tmp2[q]
                lu_solve(Wm, piv, uk)
            stats[STAT_JVPS] += 2 * np_
        for q in range(nz):
            acc = 0.0
            err = 0.0
            for i in range(s):
                acc += mw[i] * U[i, q]
                err += ew[i] * U[i, q]
            znew[q] = z[q] + acc
            errv[q] = err
            if not (abs(znew[q]) <= DIVERGED):
                finite = False
        attempted += 1
        err = _error_norm(z, znew, errv, rtol, atol) if finite else np.inf
        if not (err <= 1.0):
            carry[CARRY_REJECTED] += 1
            h = rejected_step(h_try, err, expo1)
            rejected_last = True
            if not reuse:
                lu_valid = False
            continue
        h_next, facold = accepted_step(h, h_try, err, facold, expo1, rejected_last, clipped)
        rejected_last = False
        carry[CARRY_ACCEPTED] += 1

        t_new = stop if clipped else t + h_try
        while j < j_end and t_save[j] <= t_new:
            th = (t_save[j] - t) / h_try
            for q in range(nz):
                k1 = 0.0
                k2 = 0.0
                for i in range(s):
                    k1 += D[0, i] * U[i, q]
                    k2 += D[1, i] * U[i, q]
                zst[q] = (1.0 - th) * z[q] + th * (znew[q] + (1.0 - th) * (k1 + th * k2))
            _record_all(j, t_save[j], zst, model, out, sens, work_f)
            j += 1
        accept_state(z, znew)
        t = t_new
        h = h_next
        p = theta_piece(theta_t, t) if coupled else 0
        jac_valid = False
        jac_age += 1.0
        if not reuse:
            lu_valid = False
        if j < j_end:
            augmented_field(p, z, F, model, sens, work_f, work_t, coef_buf, stats)
            carry[CARRY_RHS] += 1

    carry[CARRY_T] = t
    carry[CARRY_H] = h
    carry[CARRY_FACOLD] = facold
    carry[CARRY_J] = j
    # (a Schur-form LU lives in this call's arrays: the next call factors again)
    cst[CACHE_LU_VALID] = 1.0 if (lu_valid and reuse and not schur) else 0.0
    cst[CACHE_JAC_VALID] = 1.0 if (lu_valid and reuse and not schur) else 0.0
    cst[CACHE_H_LU] = h_lu
    cst[CACHE_JAC_AGE] = jac_age
    return status, j


@njit(cache=True)
def _stage_matrix(JT, Wm, inv_hg, sym, ia, ib):
    """Wm = (I/(hγ) − J)ᵀ, lu_factor's layout; with ``sym`` in the independent coordinates
    (module docstring)."""
    nf = Wm.shape[0]
    if sym:
        for r in range(nf):
            a_r = ia[r]
            b_r = ib[r]
            for c in range(nf):
                v = JT[a_r, ia[c]]
                if b_r != a_r:
                    v += JT[b_r, ia[c]]
                Wm[r, c] = -v
            Wm[r, r] += inv_hg
    else:
        for r in range(nf):
            for c in range(nf):
                Wm[r, c] = -JT[r, c]
            Wm[r, r] += inv_hg
    return


@njit(cache=True)
def diagonal_block(Wm, lo, hi):
    """Whether the block [lo, hi) × [lo, hi) of the stage matrix ``Wm`` is diagonal (exact zeros
    off its diagonal; its diagonal is checked by :func:`schur_factor`)."""
    for r in range(lo, hi):
        row = Wm[r]
        for c in range(lo, hi):
            if c != r and row[c] != 0.0:
                return False
    return True


@njit(cache=True)
def schur_factor(Wm, ci, lo, S_lu, piv_s, Q_cd, R_dc, dinv):
    """Factor the stage matrix W (``Wm`` = Wᵀ row-major, :func:`lu_factor`'s layout) by the
    Schur complement of its diagonal block D = W[d, d], d = [lo, lo + nd) (:func:`diagonal_block`),
    the other coordinates c = ``ci``: S = W[c, c] − W[c, d] D⁻¹ W[d, c], LU-factored into
    ``S_lu`` (lu_factor's layout, pivots ``piv_s``); ``Q_cd`` = W[d, c]ᵀ, ``R_dc`` = D⁻¹ W[c, d]ᵀ
    and ``dinv`` = 1/diag(D) are kept for :func:`schur_solve`. Returns lu_factor's code (1 also
    for a zero or non-finite diagonal entry of D)."""
    nc = ci.shape[0]
    nd = dinv.shape[0]
    for k in range(nd):
        dv = Wm[lo + k, lo + k]
        if not (abs(dv) > 0.0 and np.isfinite(dv)):
            return 1
        dinv[k] = 1.0 / dv
    for j in range(nc):
        row = Wm[ci[j]]
        for i in range(nc):
            S_lu[j, i] = row[ci[i]]          # Sᵀ starts as W[c, c]ᵀ
        for k in range(nd):
            Q_cd[j, k] = row[lo + k]         # Wm[c_j, d_k] = W[d_k, c_j]
    for k in range(nd):
        row = Wm[lo + k]
        for i in range(nc):
            R_dc[k, i] = row[ci[i]] * dinv[k]    # Wm[d_k, c_i] / D_k = (D⁻¹ W[c, d]ᵀ)[k, i]
    # Sᵀ = W[c, c]ᵀ − W[d, c]ᵀ D⁻¹ W[c, d]ᵀ: one matrix product (BLAS)
    S_lu -= np.dot(Q_cd, R_dc)
    return lu_factor(S_lu, piv_s)


@njit(cache=True)
def schur_solve(S_lu, piv_s, Q_cd, R_dc, dinv, ci, lo, x, xc, xd):
    """Solve W x = b in place (``x`` holds b) with :func:`schur_factor`'s factors:
    S x_c = b_c − W[c, d] D⁻¹ b_d, then x_d = D⁻¹ (b_d − W[d, c] x_c). ``xc``, ``xd``: work
    arrays of the two blocks' sizes."""
    nc = ci.shape[0]
    nd = dinv.shape[0]
    for i in range(nc):
        xc[i] = x[ci[i]]
    for k in range(nd):                      # b_c − W[c, d] D⁻¹ b_d; W[c, d][i, k] D_k⁻¹ = R_dc[k, i]
        bk = x[lo + k]
        if bk != 0.0:
            row = R_dc[k]
            for i in range(nc):
                xc[i] -= row[i] * bk
    lu_solve(S_lu, piv_s, xc)
    for k in range(nd):
        xd[k] = x[lo + k]
    for j in range(nc):                      # b_d − W[d, c] x_c; W[d, c][k, j] = Q_cd[j, k]
        v = xc[j]
        if v != 0.0:
            row = Q_cd[j]
            for k in range(nd):
                xd[k] -= row[k] * v
    for k in range(nd):
        x[lo + k] = xd[k] * dinv[k]
    for i in range(nc):
        x[ci[i]] = xc[i]
