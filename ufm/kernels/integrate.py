"""Numba driver: explicit Runge–Kutta integration of the UFM vector field to save times.

One compiled function, :func:`integrate`, runs any explicit tableau (passed as arrays, see
:mod:`ufm.solvers`): fixed steps, or adaptive steps with an embedded error estimate (or
DOP853's pair of estimates, combined as in Hairer's code) and the PI step-size controller of
Hairer, Nørsett & Wanner (DOPRI5, §II.4 and IV.2). Save times are served by the tableau's
dense output when it has one, otherwise by shortening the step that would pass a save time so
that it lands on it. A dense output that needs stages beyond the step's (DOP853, Verner 7(6))
gets them after the step is accepted: f at the new state (which the next step needs anyway)
and the dense-only stages, the latter only when a save time falls inside the step. Steps
never cross a coupling breakpoint.

Rules for implementers:

1. ``integrate`` may be called repeatedly with increasing ``j_end``; ``carry`` holds everything
   needed to continue (time, proposed step, controller memory, counters, the next save index),
   so a call continues exactly where the last one stopped.
2. Arguments travel in the groups of :mod:`ufm.kernels.groups` (tableau, controls, model,
   outputs); only :mod:`ufm.engine` builds them.
3. It never raises: failures are reported by the returned status code, with every save before
   the failure already written, so the caller can attach a partial trajectory to its error.
4. It allocates only once per call (stage buffers), never per step.
5. ``Controls.max_steps`` bounds the attempted steps of the whole run (the carry's accepted
   plus rejected counts), however many calls it takes.
6. The step loop works on views without reference counting (:mod:`ufm.kernels.unmanaged`) of
   its buffers and the model's arrays, and passes the owners to ``keep_alive`` at the end; a
   new buffer used in the loop gets the same treatment. Why: numba updates a reference count
   atomically for every array handed to a function and every view made, and ``perf`` put
   23-28% of a K = N = 10, d = 16 solve there.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .fields import IP_NTHETA, field_of_parts, record, theta_piece, vector_field, work_size
from .unmanaged import keep_alive, unmanaged

STATUS_OK = 0
STATUS_MAX_STEPS = 1
STATUS_STEP_UNDERFLOW = 2
STATUS_NONFINITE = 3

# carry layout
CARRY_T = 0
CARRY_H = 1
CARRY_FACOLD = 2
CARRY_ACCEPTED = 3
CARRY_REJECTED = 4
CARRY_RHS = 5
CARRY_J = 6          # the next save index to write
CARRY_SIZE = 7

# PI controller constants (Hairer's DOPRI5 defaults; a tableau may carry its own BETA,
# FAC_MIN, FAC_MAX: DOP853 uses Hairer's 0, 0.333, 6).
SAFETY = 0.9
FAC_MIN = 0.2       # the step shrinks at most by 5 per step
FAC_MAX = 10.0      # and grows at most by 10
BETA = 0.04         # PI memory exponent
DIVERGED = 1e60     # |y| above this is reported as divergence (the quartic loss stays finite)
#: The stage sums and the step's end run over the state in blocks of BLOCK components (a
#: multiple of 4: the error norm's lanes run on across blocks) in large states: the partial sum
#: of a block (4 KB) stays in L1 between its passes, and at the step's end the block's k rows,
#: y and ynew stay in L1/L2 from the b-sum through the error sums and the norm, instead of each
#: pass streaming the whole state from memory (2 MB a vector at K = N = 512, d = 256). The
#: thresholds are measured (CPU µs per step, whole-vector vs blocked, dop853 / vern7 / tsit5
#: tableaux, random k; ``python benchmarks/step_loop.py``, 2026-12-03): the blocked stage sums
#: lose 5-17% at 24,576 <= n <= 65,536 and win 5-14% from n = 98,304 (dop853 at 262,144: 6.8
#: -> 5.9 ms a step); the blocked step end wins from n = 8192 (dop853 at 8192: 42 -> 38 µs, at
#: 262,144: 2.9 -> 1.6 ms). Blocks of 256 and 1024-4096 measured no better than 512.
BLOCK = 512
BLOCKED_STAGES_MIN_N = 98304
BLOCKED_END_MIN_N = 8192
#: accepted states' components smaller than this are set to 0: a component decaying under weight
#: decay (dead features, a decayed classifier) otherwise sinks into subnormal floats, whose
#: arithmetic is 10-100x slower (a fit's prediction took 11 s instead of 1 s); 1e-150 is far
#: below any absolute tolerance the error norm resolves, and products of two unflushed
#: components (>= 1e-300) stay normal
TINY = 1e-150


@njit(cache=True)
def clip_step(t, h, h_max, stop):
    """(h_try, clipped): the proposed step ``min(h, h_max)``, shortened to land on ``stop`` when
    it would pass it. A step that lands on ``stop`` to rounding keeps its size (so fixed steps
    stay exactly h: GD ≡ Euler bit for bit) but counts as clipped. Shared by every driver."""
    h_try = min(h, h_max)
    clipped = False
    if t + h_try >= stop or (stop - (t + h_try)) <= 1e-12 * abs(stop):
        if abs(stop - (t + h_try)) > 1e-12 * abs(stop):
            h_try = stop - t
        clipped = True
    return h_try, clipped


@njit(cache=True)
def accept_state(y, ynew):
    """y[:] = ynew, with components of magnitude below :data:`TINY` flushed to 0 (every driver
    takes its accepted states through this)."""
    for q in range(y.shape[0]):
        v = ynew[q]
        y[q] = v if abs(v) >= TINY else 0.0


@njit(cache=True)
def stalled(h_try, t, t_end):
    """A step this small relative to the horizon can never finish: the run has stalled."""
    return h_try <= 1e-14 * max(1.0, abs(t), abs(t_end))


@njit(cache=True)
def rejected_step(h_try, err, expo1):
    """The next trial step after a rejection, with the default factor bound FAC_MIN
    (:func:`rejected_step_bounded`)."""
    return rejected_step_bounded(h_try, err, expo1, FAC_MIN)


@njit(cache=True)
def rejected_step_bounded(h_try, err, expo1, fac_min):
    """The next trial step after a rejection with error norm ``err``: shrunk by
    SAFETY·err^(−expo1), at most by ``fac_min`` (a non-finite trial state or error shrinks by
    that maximum)."""
    if err < np.inf:
        return h_try / min(1.0 / fac_min, (err ** expo1) / SAFETY)
    return h_try * fac_min


@njit(cache=True)
def accepted_step(h, h_try, err, facold, expo1, rejected_last, clipped):
    """(h_next, facold) after an accepted step with Hairer's DOPRI5 constants BETA, FAC_MIN,
    FAC_MAX (:func:`accepted_step_pi`)."""
    return accepted_step_pi(h, h_try, err, facold, expo1, BETA, FAC_MIN, FAC_MAX, rejected_last, clipped)


@njit(cache=True)
def accepted_step_pi(h, h_try, err, facold, expo1, beta, fac_min, fac_max, rejected_last, clipped):
    """(h_next, facold) after an accepted step: Hairer's PI controller (exponents ``expo1`` and
    ``beta``; beta = 0 is the plain I controller of his DOP853), the step ratio bounded to
    [fac_min, fac_max], SAFETY; no growth right after a rejection, and a step shortened to hit
    a stop says nothing about a smaller step being needed."""
    fac11 = err ** expo1 if err > 0 else 0.0
    fac = fac11 / facold ** beta
    fac = max(1.0 / fac_max, min(1.0 / fac_min, fac / SAFETY))
    h_next = h_try / fac
    if rejected_last:
        h_next = min(h_next, h_try)
    if clipped and h_next < h:
        h_next = h
    return h_next, max(err, 1e-4)


@njit(cache=True)
def _error_norm(y, ynew, errv, rtol, atol):
    """The scaled RMS norm of the error ``errv`` (:func:`_error_norm_of`)."""
    return _error_norm_of(y, ynew, errv, 1.0, rtol, atol)


@njit(cache=True)
def _error_norm_of(y, ynew, acc, h, rtol, atol):
    """The RMS over i of h·acc_i / (atol + rtol·max(|y_i|, |ynew_i|)), with four partial sums
    (a fixed order, so deterministic) instead of one serial chain of additions."""
    n = y.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    n4 = n - n % 4
    for i in range(0, n4, 4):
        r0 = h * acc[i] / (atol + rtol * max(abs(y[i]), abs(ynew[i])))
        r1 = h * acc[i + 1] / (atol + rtol * max(abs(y[i + 1]), abs(ynew[i + 1])))
        r2 = h * acc[i + 2] / (atol + rtol * max(abs(y[i + 2]), abs(ynew[i + 2])))
        r3 = h * acc[i + 3] / (atol + rtol * max(abs(y[i + 3]), abs(ynew[i + 3])))
        s0 += r0 * r0
        s1 += r1 * r1
        s2 += r2 * r2
        s3 += r3 * r3
    for i in range(n4, n):
        r = h * acc[i] / (atol + rtol * max(abs(y[i]), abs(ynew[i])))
        s0 += r * r
    return np.sqrt(((s0 + s1) + (s2 + s3)) / n)


@njit(cache=True)
def _scaled_squares4(y, ynew, acc, h, rtol, atol, q0, q1, s0, s1, s2, s3):
    """The four partial sums of :func:`_error_norm_of` (the same operations in the same order)
    continued over components q0 <= i < q1 (multiples of 4): component i adds its squared
    scaled error to lane i mod 4."""
    for i in range(q0, q1, 4):
        r0 = h * acc[i] / (atol + rtol * max(abs(y[i]), abs(ynew[i])))
        r1 = h * acc[i + 1] / (atol + rtol * max(abs(y[i + 1]), abs(ynew[i + 1])))
        r2 = h * acc[i + 2] / (atol + rtol * max(abs(y[i + 2]), abs(ynew[i + 2])))
        r3 = h * acc[i + 3] / (atol + rtol * max(abs(y[i + 3]), abs(ynew[i + 3])))
        s0 += r0 * r0
        s1 += r1 * r1
        s2 += r2 * r2
        s3 += r3 * r3
    return s0, s1, s2, s3


@njit(cache=True)
def _lanes_norm(y, ynew, acc, h, rtol, atol, s0, s1, s2, s3):
    """:func:`_error_norm_of` from its four lanes over the first n - n mod 4 components: the
    last n mod 4 components go to lane 0, then the lanes are added pairwise."""
    n = y.shape[0]
    for i in range(n - n % 4, n):
        r = h * acc[i] / (atol + rtol * max(abs(y[i]), abs(ynew[i])))
        s0 += r * r
    return np.sqrt(((s0 + s1) + (s2 + s3)) / n)


@njit(cache=True)
def _nonzero_terms(wts, row, m, ix, cf):
    """The nonzero weights of ``wts[row, :m]`` in l order: their indices into ``ix[row]``, their
    values into ``cf[row]``; returns how many. The step loop sums stages through these lists,
    so no pass and no test is spent on a zero coefficient."""
    c = 0
    for l in range(m):
        w = wts[row, l]
        if w != 0.0:
            ix[row, c] = l
            cf[row, c] = w
            c += 1
    return c


@njit(cache=True)
def _sum_terms(k, ix, cf, row, a, b, acc, first):
    """acc (+)= Σ_{a <= u < b} cf[row, u] · k[ix[row, u]], the terms added one at a time in u
    order -- ``first``: the first term written, not added to zeros --, up to four terms per
    pass over the state. Why four per pass: at n = 320 (K = N = 10, d = 16) a pass per term
    spends its time loading and storing ``acc``; each element's additions are the same and in
    the same order as one pass per term, so the result is the same to the bit (no fast-math:
    LLVM neither reorders nor contracts them)."""
    n = acc.shape[0]
    u = a
    while u < b:
        r = min(4, b - u)
        i0 = ix[row, u]
        c0 = cf[row, u]
        if r == 4:
            i1, i2, i3 = ix[row, u + 1], ix[row, u + 2], ix[row, u + 3]
            c1, c2, c3 = cf[row, u + 1], cf[row, u + 2], cf[row, u + 3]
            if first:
                for q in range(n):
                    acc[q] = c0 * k[i0, q] + c1 * k[i1, q] + c2 * k[i2, q] + c3 * k[i3, q]
            else:
                for q in range(n):
                    acc[q] = acc[q] + c0 * k[i0, q] + c1 * k[i1, q] + c2 * k[i2, q] + c3 * k[i3, q]
        elif r == 3:
            i1, i2 = ix[row, u + 1], ix[row, u + 2]
            c1, c2 = cf[row, u + 1], cf[row, u + 2]
            if first:
                for q in range(n):
                    acc[q] = c0 * k[i0, q] + c1 * k[i1, q] + c2 * k[i2, q]
            else:
                for q in range(n):
                    acc[q] = acc[q] + c0 * k[i0, q] + c1 * k[i1, q] + c2 * k[i2, q]
        elif r == 2:
            i1 = ix[row, u + 1]
            c1 = cf[row, u + 1]
            if first:
                for q in range(n):
                    acc[q] = c0 * k[i0, q] + c1 * k[i1, q]
            else:
                for q in range(n):
                    acc[q] = acc[q] + c0 * k[i0, q] + c1 * k[i1, q]
        else:
            if first:
                for q in range(n):
                    acc[q] = c0 * k[i0, q]
            else:
                for q in range(n):
                    acc[q] = acc[q] + c0 * k[i0, q]
        first = False
        u += r


@njit(cache=True)
def _weighted_sum(k, ix, cf, cnt, row, acc):
    """acc = Σ_l w_l k_l over the nonzero weights of ``row`` (:func:`_nonzero_terms`), in l
    order (zeros when there are none)."""
    m = cnt[row]
    if m == 0:
        for q in range(acc.shape[0]):
            acc[q] = 0.0
    else:
        _sum_terms(k, ix, cf, row, 0, m, acc, True)


@njit(cache=True)
def _combine(y, k, ix, cf, cnt, row, h, acc, out):
    """out = y + h · Σ_l w_l k_l over the nonzero weights of ``row`` (:func:`_nonzero_terms`):
    the sum formed first, in l order, as in the tableau; its last term is added in the same
    pass that writes ``out``."""
    m = cnt[row]
    n = y.shape[0]
    if m == 0:
        for q in range(n):
            out[q] = y[q]
        return
    il = ix[row, m - 1]
    c = cf[row, m - 1]
    if m == 1:
        for q in range(n):
            out[q] = y[q] + h * (c * k[il, q])
    else:
        _sum_terms(k, ix, cf, row, 0, m - 1, acc, True)
        for q in range(n):
            out[q] = y[q] + h * (acc[q] + c * k[il, q])


@njit(cache=True)
def _error_norm_dop853(y, ynew, acc5, acc3, h, rtol, atol):
    """Hairer's DOP853 estimate err₅²/√(err₅² + 0.01 err₃²) of the scaled RMS norms of the
    errors h·acc5 and h·acc3."""
    n = y.shape[0]
    a5 = 0.0
    a3 = 0.0
    for i in range(n):
        sc = atol + rtol * max(abs(y[i]), abs(ynew[i]))
        r5 = h * acc5[i] / sc
        r3 = h * acc3[i] / sc
        a5 += r5 * r5
        a3 += r3 * r3
    deno = a5 + 0.01 * a3
    if deno <= 0.0:
        return 0.0
    return a5 / np.sqrt(deno * n)


@njit(cache=True)
def _sum_terms_range(k, ix, cf, row, a, b, acc, first, q0, q1):
    """:func:`_sum_terms` on acc[q0:q1] only (the same terms in the same order), for the
    blocked passes of large states (:data:`BLOCK`). A copy rather than the one implementation:
    called over the whole state, these range loops measured 1.3-1.6x slower than
    :func:`_sum_terms` at n = 320 (the stage sums of one step: dopri5 1.29 against 0.83 µs,
    vern7 2.04 against 1.49, dop853 2.62 against 1.70; CPU, best of 7, 2026-12-03), so small
    states keep the whole-vector loops.

    The loops index with unsigned integers (``range(np.uint64(q0), np.uint64(q1))``): with a
    signed start numba cannot rule out a negative index and keeps its wrap-around select in
    every access, which stops LLVM from vectorising (the blocked stage sums measured 3x slower
    at n = 8192 that way, ``benchmarks/step_loop.py``; ``range(n)`` from 0 escapes it). The
    blocked stage sums of commit d6affce had signed ranges and were 1.9x slower at K = N = 10,
    probably for this reason (not re-measured)."""
    u = a
    while u < b:
        r = min(4, b - u)
        i0 = ix[row, u]
        c0 = cf[row, u]
        if r == 4:
            i1, i2, i3 = ix[row, u + 1], ix[row, u + 2], ix[row, u + 3]
            c1, c2, c3 = cf[row, u + 1], cf[row, u + 2], cf[row, u + 3]
            if first:
                for q in range(np.uint64(q0), np.uint64(q1)):
                    acc[q] = c0 * k[i0, q] + c1 * k[i1, q] + c2 * k[i2, q] + c3 * k[i3, q]
            else:
                for q in range(np.uint64(q0), np.uint64(q1)):
                    acc[q] = acc[q] + c0 * k[i0, q] + c1 * k[i1, q] + c2 * k[i2, q] + c3 * k[i3, q]
        elif r == 3:
            i1, i2 = ix[row, u + 1], ix[row, u + 2]
            c1, c2 = cf[row, u + 1], cf[row, u + 2]
            if first:
                for q in range(np.uint64(q0), np.uint64(q1)):
                    acc[q] = c0 * k[i0, q] + c1 * k[i1, q] + c2 * k[i2, q]
            else:
                for q in range(np.uint64(q0), np.uint64(q1)):
                    acc[q] = acc[q] + c0 * k[i0, q] + c1 * k[i1, q] + c2 * k[i2, q]
        elif r == 2:
            i1 = ix[row, u + 1]
            c1 = cf[row, u + 1]
            if first:
                for q in range(np.uint64(q0), np.uint64(q1)):
                    acc[q] = c0 * k[i0, q] + c1 * k[i1, q]
            else:
                for q in range(np.uint64(q0), np.uint64(q1)):
                    acc[q] = acc[q] + c0 * k[i0, q] + c1 * k[i1, q]
        else:
            if first:
                for q in range(np.uint64(q0), np.uint64(q1)):
                    acc[q] = c0 * k[i0, q]
            else:
                for q in range(np.uint64(q0), np.uint64(q1)):
                    acc[q] = acc[q] + c0 * k[i0, q]
        first = False
        u += r


@njit(cache=True)
def _weighted_sum_range(k, ix, cf, cnt, row, acc, q0, q1):
    """:func:`_weighted_sum` on acc[q0:q1] only (see :func:`_sum_terms_range`)."""
    m = cnt[row]
    if m == 0:
        for q in range(np.uint64(q0), np.uint64(q1)):
            acc[q] = 0.0
    else:
        _sum_terms_range(k, ix, cf, row, 0, m, acc, True, q0, q1)


@njit(cache=True)
def _combine_range(y, k, ix, cf, cnt, row, h, acc, out, q0, q1):
    """:func:`_combine` on out[q0:q1] only (see :func:`_sum_terms_range`)."""
    m = cnt[row]
    if m == 0:
        for q in range(np.uint64(q0), np.uint64(q1)):
            out[q] = y[q]
        return
    il = ix[row, m - 1]
    c = cf[row, m - 1]
    if m == 1:
        for q in range(np.uint64(q0), np.uint64(q1)):
            out[q] = y[q] + h * (c * k[il, q])
    else:
        _sum_terms_range(k, ix, cf, row, 0, m - 1, acc, True, q0, q1)
        for q in range(np.uint64(q0), np.uint64(q1)):
            out[q] = y[q] + h * (acc[q] + c * k[il, q])


@njit(cache=True)
def _stage_blocked(y, k, ix, cf, cnt, row, h, acc, out, block):
    """out = y + h · Σ_l w_l k_l (:func:`_combine`) block by block: each block's partial sum
    ``acc`` stays in L1 between its passes (the whole-vector passes store and reload it once
    per four terms, 2 MB each way at n = 262,144). Every element's arithmetic is the same."""
    n = y.shape[0]
    for q0 in range(0, n, block):
        _combine_range(y, k, ix, cf, cnt, row, h, acc, out, q0, min(n, q0 + block))


@njit(cache=True)
def _diverged(v, q0, q1):
    """How many of v[q0:q1] exceed :data:`DIVERGED` in magnitude or are not numbers (the step
    loop's count, on a range)."""
    n_bad = 0
    for m in range(np.uint64(q0), np.uint64(q1)):
        n_bad += 0 if abs(v[m]) <= DIVERGED else 1
    return n_bad


@njit(cache=True)
def _scaled_squares53(y, ynew, acc5, acc3, h, rtol, atol, q0, q1, a5, a3):
    """The two sums of :func:`_error_norm_dop853` (the same operations in the same order)
    continued over components q0 <= i < q1."""
    for i in range(np.uint64(q0), np.uint64(q1)):
        sc = atol + rtol * max(abs(y[i]), abs(ynew[i]))
        r5 = h * acc5[i] / sc
        r3 = h * acc3[i] / sc
        a5 += r5 * r5
        a3 += r3 * r3
    return a5, a3


@njit(cache=True)
def _dop853_norm(a5, a3, n):
    """:func:`_error_norm_dop853` from its two sums."""
    deno = a5 + 0.01 * a3
    if deno <= 0.0:
        return 0.0
    return a5 / np.sqrt(deno * n)


@njit(cache=True)
def _step_end_blocked(y, k, ix, cf, cnt, row_b, row_e, row_e3, estimates, h, rtol, atol, acc, acc3, ynew, block):
    """(n_bad, err) at the end of a step, block by block: ynew = y + h·Σ b_l k_l
    (:func:`_combine`), the count of its diverged components and, for ``estimates`` = 1 or 2,
    the error norm of h·Σ e_l k_l (:func:`_error_norm_of`) or DOP853's of it and h·Σ e3_l k_l
    (:func:`_error_norm_dop853`); err = 0 for ``estimates`` = 0, inf when n_bad > 0 (then no
    norm is formed, as in the whole-vector passes).

    Why blocks: a block's k rows, y and ynew are read from memory once, and from L1/L2 by the
    later sums and the norm, instead of once per pass over the whole state. Each element gets
    the same operations in the same order, and the norm's partial sums run on across blocks
    (``block`` a multiple of 4: the lanes of :func:`_scaled_squares4`), so the results are the
    whole-vector passes' to the bit."""
    n = y.shape[0]
    n_bad = 0
    n4 = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    for q0 in range(0, n, block):
        q1 = min(n, q0 + block)
        _combine_range(y, k, ix, cf, cnt, row_b, h, acc, ynew, q0, q1)
        n_bad += _diverged(ynew, q0, q1)
        if n_bad > 0:
            continue
        if estimates == 2:
            _weighted_sum_range(k, ix, cf, cnt, row_e, acc, q0, q1)
            _weighted_sum_range(k, ix, cf, cnt, row_e3, acc3, q0, q1)
            s0, s1 = _scaled_squares53(y, ynew, acc, acc3, h, rtol, atol, q0, q1, s0, s1)
        elif estimates == 1:
            _weighted_sum_range(k, ix, cf, cnt, row_e, acc, q0, q1)
            s0, s1, s2, s3 = _scaled_squares4(y, ynew, acc, h, rtol, atol, q0, min(q1, n4), s0, s1, s2, s3)
    if n_bad > 0:
        return n_bad, np.inf
    if estimates == 2:
        return n_bad, _dop853_norm(s0, s1, n)
    if estimates == 1:
        return n_bad, _lanes_norm(y, ynew, acc, h, rtol, atol, s0, s1, s2, s3)
    return n_bad, 0.0


@njit(cache=True)
def _dense_weights(P, theta, wts, row):
    """wts[row, l] = Σ_m P[l, m] θ^(m+1): the weights of the dense output at θ."""
    for l in range(P.shape[0]):
        pw = theta
        poly = 0.0
        for q in range(P.shape[1]):
            poly += P[l, q] * pw
            pw *= theta
        wts[row, l] = poly


@njit(cache=True)
def _rms_scaled(v, y, rtol, atol):
    acc = 0.0
    for i in range(v.shape[0]):
        r = v[i] / (atol + rtol * abs(y[i]))
        acc += r * r
    return np.sqrt(acc / v.shape[0])


@njit(cache=True)
def initial_step(p, y, f0, order, rtol, atol, model, work):
    """Hairer's starting-step heuristic (Solving ODEs I, §II.4): h ≈ (0.01/‖f'‖)^(1/(q+1))."""
    d0 = _rms_scaled(y, y, rtol, atol)
    d1 = _rms_scaled(f0, y, rtol, atol)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    y1 = y + h0 * f0
    f1 = np.empty_like(y)
    vector_field(p, y1, f1, model, work)
    d2 = _rms_scaled(f1 - f0, y, rtol, atol) / h0
    dm = max(d1, d2)
    if dm <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / dm) ** (1.0 / (order + 1.0))
    return min(100.0 * h0, h1)


@njit(cache=True)
def integrate(y, carry, t_save, j_end, tab, ctl, model, out):
    """Advance ``y`` (in place) from ``carry[CARRY_T]`` through the save times
    ``t_save[carry[CARRY_J]:j_end]``.

    Arguments:
        y: (n,) state at the current time; overwritten with the state at the last time reached.
        carry: (CARRY_SIZE,) float64: time, proposed step, controller memory, counters and the
            next save index. ``carry[CARRY_H] <= 0`` asks for an automatic initial step
            (adaptive only).
        t_save: (T,) strictly increasing save times, all >= the current time.
        j_end: save times up to (excluding) this index are written by this call.
        tab: :class:`~ufm.kernels.groups.Tableau`. ctl: :class:`~ufm.kernels.groups.Controls`.
        model: :class:`~ufm.kernels.groups.Model`. out: :class:`~ufm.kernels.groups.Outputs`.

    Returns:
        (status, j): a STATUS_* code and the number of save times written so far (j_end on
        success); ``carry[CARRY_J]`` holds j as well.
    """
    return run_steps(y, carry, t_save, j_end, tab, ctl, model, out, BLOCKED_STAGES_MIN_N, BLOCKED_END_MIN_N)


@njit(cache=True)
def run_steps(y, carry, t_save, j_end, tab, ctl, model, out, stages_min_n, end_min_n):
    """:func:`integrate` with the state sizes from which the stage sums and the step's end run
    block by block as arguments (tests force either path with them; the results are the same
    to the bit)."""
    A = tab.A
    bw = tab.b
    e = tab.e
    e3 = tab.e3
    P = tab.P
    adaptive = tab.adaptive
    fsal = tab.fsal
    order = tab.order
    rtol = ctl.rtol
    atol = ctl.atol
    h_max = ctl.h_max
    max_steps = ctl.max_steps
    # the Model's fields, read once: handing the whole group to the field on every evaluation
    # costs measurably more (see fields.field_of_parts)
    ip = model.ip
    coef = model.coef
    Y = model.Y
    pi = model.pi
    theta = model.theta
    tab_i = model.tab_i
    tab_f = model.tab_f
    n = y.shape[0]
    s = tab.stages
    n_all = A.shape[0]            # the step's stages, then f(y_new) and the dense-only stages
    extended = n_all > s
    estimates = 0 if not adaptive else (2 if e3.shape[0] > 0 else 1)
    # large states: the stage sums and the step's end run block by block (see BLOCK)
    block = BLOCK if n >= stages_min_n else 0
    end_block = BLOCK if n >= end_min_n else 0
    k = np.empty((n_all, n))
    ynew = np.empty(n)
    ytmp = np.empty(n)
    acc = np.empty(n)
    acc3 = np.empty(n)
    # every weight vector as a row of one matrix, so that no row view is made per step:
    # rows 0..n_all-1 the stage matrix A, then b, e, e3 and the dense output's weights
    row_b = n_all
    row_e = n_all + 1
    row_e3 = n_all + 2
    row_dense = n_all + 3
    wts = np.zeros((n_all + 4, n_all))
    wts[:n_all, :] = A
    wts[row_b, :s] = bw
    wts[row_e, :s] = e
    if e3.shape[0] > 0:
        wts[row_e3, :s] = e3
    # each row's nonzero weights as (stage index, weight) lists, made once per call; a stage
    # row i sums stages l < i, b and the error weights the step's s stages; the dense row is
    # listed per save (its weights depend on where the save falls)
    ix = np.zeros((n_all + 4, n_all), dtype=np.int64)
    cf = np.zeros((n_all + 4, n_all))
    cnt = np.zeros(n_all + 4, dtype=np.int64)
    for i in range(n_all):
        cnt[i] = _nonzero_terms(wts, i, i, ix, cf)
    for i in (row_b, row_e, row_e3):
        cnt[i] = _nonzero_terms(wts, i, s, ix, cf)
    work = np.empty(work_size(model))
    # The step loop works on views without reference counting (ufm.kernels.unmanaged): each
    # field evaluation and helper call otherwise pays atomic increments and decrements for
    # every array it is handed or makes. The owners stay alive to the end (keep_alive below).
    k_o, ynew_o, ytmp_o, acc_o, acc3_o, wts_o, work_o = k, ynew, ytmp, acc, acc3, wts, work
    ix_o, cf_o, cnt_o = ix, cf, cnt
    ix = unmanaged(ix_o)
    cf = unmanaged(cf_o)
    cnt = unmanaged(cnt_o)
    k = unmanaged(k_o)
    ynew = unmanaged(ynew_o)
    ytmp = unmanaged(ytmp_o)
    acc = unmanaged(acc_o)
    acc3 = unmanaged(acc3_o)
    wts = unmanaged(wts_o)
    work = unmanaged(work_o)
    y = unmanaged(y)
    P = unmanaged(P)
    ip = unmanaged(ip)
    coef = unmanaged(coef)
    Y = unmanaged(Y)
    pi = unmanaged(pi)
    theta = unmanaged(theta)
    tab_i = unmanaged(tab_i)
    tab_f = unmanaged(tab_f)
    has_dense = P.shape[0] > 0
    coupled = ip[IP_NTHETA] > 0
    theta_t = model.theta_t
    n_pieces = theta_t.shape[0] if coupled else 1
    beta = tab.beta
    fac_min = tab.fac_min
    fac_max = tab.fac_max
    expo1 = 1.0 / order - 0.75 * beta

    t = carry[CARRY_T]
    h = carry[CARRY_H]
    facold = carry[CARRY_FACOLD]
    j = int(carry[CARRY_J])
    t_end = t_save[j_end - 1]
    while j < j_end and t_save[j] <= t:
        record(j, t_save[j], y, model, out, work)
        j += 1
    if j >= j_end:
        carry[CARRY_J] = j
        return STATUS_OK, j

    p = theta_piece(theta_t, t) if coupled else 0
    field_of_parts(p, y, k[0], ip, coef, Y, pi, theta, tab_i, tab_f, work)
    carry[CARRY_RHS] += 1
    if h <= 0.0:
        h = initial_step(p, y, k[0], order, rtol, atol, model, work)
        carry[CARRY_RHS] += 1
    status = STATUS_OK
    attempted = int(carry[CARRY_ACCEPTED] + carry[CARRY_REJECTED])
    rejected_last = False
    while j < j_end:
        if attempted >= max_steps:
            status = STATUS_MAX_STEPS
            break
        # Where this step must stop: the end, the next save time (without dense output),
        # the next coupling breakpoint.
        stop = t_end
        if not has_dense and t_save[j] < stop:
            stop = t_save[j]
        if p + 1 < n_pieces and theta_t[p + 1] < stop:
            stop = theta_t[p + 1]
        h_try, clipped = clip_step(t, h, h_max, stop)
        if stalled(h_try, t, t_end):
            status = STATUS_STEP_UNDERFLOW
            break

        # Stage sums run along the state (contiguous, vectorisable) and skip zero
        # coefficients; each is y + h·(Σ_l a_il k_l) with the sum accumulated in l order.
        # Large states run these passes block by block (BLOCK), small ones as one pass each.
        for i in range(1, s):
            if block == 0:
                _combine(y, k, ix, cf, cnt, i, h_try, acc, ytmp)
            else:
                _stage_blocked(y, k, ix, cf, cnt, i, h_try, acc, ytmp, block)
            field_of_parts(p, ytmp, k[i], ip, coef, Y, pi, theta, tab_i, tab_f, work)
        carry[CARRY_RHS] += s - 1
        attempted += 1
        if end_block == 0:
            _combine(y, k, ix, cf, cnt, row_b, h_try, acc, ynew)
            # a count, not a loop with an early exit: vectorised, and divergence is rare
            n_bad = 0
            for m in range(n):
                n_bad += 0 if abs(ynew[m]) <= DIVERGED else 1
            err = 0.0                         # read only when adaptive
            if n_bad > 0:
                err = np.inf
            elif estimates == 2:
                _weighted_sum(k, ix, cf, cnt, row_e, acc)
                _weighted_sum(k, ix, cf, cnt, row_e3, acc3)
                err = _error_norm_dop853(y, ynew, acc, acc3, h_try, rtol, atol)
            elif estimates == 1:
                _weighted_sum(k, ix, cf, cnt, row_e, acc)
                err = _error_norm_of(y, ynew, acc, h_try, rtol, atol)
        else:
            # the b-sum, the count and the error sums and norm in one pass over blocks
            n_bad, err = _step_end_blocked(y, k, ix, cf, cnt, row_b, row_e, row_e3, estimates, h_try, rtol, atol,
                                           acc, acc3, ynew, end_block)
        finite = n_bad == 0
        h_next = h
        if adaptive:
            if not (err <= 1.0):
                # reject: shrink (a non-finite trial state or error shrinks by the maximum)
                carry[CARRY_REJECTED] += 1
                h = rejected_step_bounded(h_try, err, expo1, fac_min)
                rejected_last = True
                continue
            h_next, facold = accepted_step_pi(h, h_try, err, facold, expo1, beta, fac_min, fac_max,
                                              rejected_last, clipped)
        elif not finite:
            status = STATUS_NONFINITE
            break
        rejected_last = False
        carry[CARRY_ACCEPTED] += 1

        t_new = stop if clipped else t + h_try
        if extended:
            # f at the new state with this step's piece: the dense output's stage s, and the
            # next step's first stage unless the coupling changes at t_new
            field_of_parts(p, ynew, k[s], ip, coef, Y, pi, theta, tab_i, tab_f, work)
            carry[CARRY_RHS] += 1
        if has_dense:
            if extended and j < j_end and t_save[j] < t_new:
                # a save inside the step: the dense-only stages, once per step
                for i in range(s + 1, n_all):
                    if block == 0:
                        _combine(y, k, ix, cf, cnt, i, h_try, acc, ytmp)
                    else:
                        _stage_blocked(y, k, ix, cf, cnt, i, h_try, acc, ytmp, block)
                    field_of_parts(p, ytmp, k[i], ip, coef, Y, pi, theta, tab_i, tab_f, work)
                carry[CARRY_RHS] += n_all - s - 1
            while j < j_end and t_save[j] <= t_new:
                if t_save[j] == t_new:
                    # the step's end: the step's own result (no dense stages needed for it)
                    record(j, t_save[j], ynew, model, out, work)
                else:
                    _dense_weights(P, (t_save[j] - t) / h_try, wts, row_dense)
                    cnt[row_dense] = _nonzero_terms(wts, row_dense, n_all, ix, cf)
                    if block == 0:
                        _combine(y, k, ix, cf, cnt, row_dense, h_try, acc, ytmp)
                    else:
                        _stage_blocked(y, k, ix, cf, cnt, row_dense, h_try, acc, ytmp, block)
                    record(j, t_save[j], ytmp, model, out, work)
                j += 1
        else:
            while j < j_end and t_save[j] <= t_new:
                record(j, t_save[j], ynew, model, out, work)
                j += 1
        accept_state(y, ynew)
        t = t_new
        h = h_next
        p_new = theta_piece(theta_t, t) if coupled else 0
        if p_new == p and (fsal or extended):
            last = s if extended else s - 1
            for q in range(n):
                k[0, q] = k[last, q]
        else:
            p = p_new
            field_of_parts(p, y, k[0], ip, coef, Y, pi, theta, tab_i, tab_f, work)
            carry[CARRY_RHS] += 1

    carry[CARRY_T] = t
    carry[CARRY_H] = h
    carry[CARRY_FACOLD] = facold
    carry[CARRY_J] = j
    keep_alive(k_o, ynew_o, ytmp_o, acc_o, acc3_o, wts_o, work_o, ix_o, cf_o, cnt_o)
    return status, j
