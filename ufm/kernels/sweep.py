"""Numba sweep kernel: one adaptive trajectory per work item, on all numba threads.

This is the only ``parallel=True`` function of the package (DESIGN.md §5): every
configuration of a sweep is integrated by the generic driver
:func:`ufm.kernels.integrate.integrate`, called *by name* so that ``cache=True`` holds.
Configurations never share a stacked ODE, so each takes its own steps.

Scheduling: the ``prange`` runs one iteration per thread, and each iteration takes the next
configuration from a shared atomic counter until none is left (a work queue). Numba's own
``prange`` scheduling is static (measured: ``parallel_chunksize`` did not rebalance under the
OpenMP layer), which leaves one thread idle behind a few stiff configurations; the queue
keeps every thread busy until the last configuration starts.

Configurations may differ in every size (K, N, d, space, coupling pieces, saved quantities).
Their arrays are therefore concatenated into flat float64 buffers, and configuration ``i``
owns ``buf[off[i]:off[i + 1]]`` of each buffer, reshaped in the kernel to the 1-, 2- or
3-D shape the driver expects (the slices of a C-contiguous 1-D buffer are C-contiguous, so
the driver is specialised on exactly the array types :func:`ufm.solve` uses).

Layout of the arguments (``n`` configurations, ``T`` shared save times):

    order      (n,) int64      permutation: the order in which threads take configurations
                               (costliest first, so that the tail of the loop is short)
    queue      (1,) int64      the work-queue counter, 0 on entry (n + threads on exit)
    done_by    (threads,) int64  configurations integrated by each thread (one prange
                               iteration per thread)
    ip         (n, IP_SIZE)    packed models (ufm.kernels.fields), one row per configuration
    coef       (n, C_SIZE)     packed coefficients
    save       (n, 4)          record flags [state, gram_W, gram_H, logits]
    carry      (n, CARRY_SIZE) integrator memory; row i is the ``carry`` of configuration i
    y, y_off                   flat initial states (overwritten with the final ones)
    Y, Y_off / pi, pi_off      targets (K·N) and context weights (N)
                               (Y, pi and th are passed read-only and j0 as a non-literal
                               integer, so the driver's specialisation is the one
                               :func:`ufm.solve` compiles for a coupled model: it is reused
                               from the cache instead of being compiled a second time)
    th, th_off / tt, tt_off / tp, tp_off
                               coupling kernels (P·N·N), piece start times (P) and the
                               kernels' pseudo-inverses (P·N·N)
    out_loss, out_data (n, T)  objective and data loss at each save time
    st, st_off / gw, gw_off / gh, gh_off / lg, lg_off
                               flat outputs: states (T_i·n_i), G_W (T_i·K·K), G_H (T_i·N·N)
                               and logits (T_i·K·N), with T_i = T when saved and 0 otherwise
    status, reached (n,)       the driver's status code and the number of saves written
"""

from __future__ import annotations

from numba import config, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .fields import IP_K, IP_N, IP_NTHETA
from .integrate import integrate


if config.DISABLE_JIT:
    def fetch_add(counter, index):
        """``counter[index] += 1``, returning the old value (NUMBA_DISABLE_JIT: one thread)."""
        old = counter[index]
        counter[index] = old + 1
        return old
else:
    @intrinsic
    def fetch_add(typingctx, counter, index):
        """Atomically ``counter[index] += 1`` and return the old value (int64 array,
        sequentially consistent): the work queue of :func:`integrate_many`."""
        sig = types.int64(counter, index)

        def codegen(context, builder, signature, args):
            arr, idx = args
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, arr)
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [idx])
            return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "seq_cst")

        return sig, codegen


@njit(parallel=True, cache=True)
def integrate_many(order, queue, done_by, t_save, A, bw, c, e, P, controller_order, adaptive, fsal, h_max, rtol, atol,
                   max_steps, ip, coef, save, carry, y, y_off, Y, Y_off, pi, pi_off, th, th_off, tt, tt_off,
                   tp, tp_off, out_loss, out_data, st, st_off, gw, gw_off, gh, gh_off, lg, lg_off,
                   status, reached):
    """Integrate every configuration from ``carry[i]`` through all of ``t_save``.

    See the module docstring for the layout of the arguments; the tableau and the controller
    arguments (``A`` … ``max_steps``) are those of :func:`ufm.kernels.integrate.integrate`
    and are shared by all configurations. Never raises: each configuration's outcome is
    ``status[i]`` (a ``STATUS_*`` code) and ``reached[i]`` (saves written).
    """
    n_cfg = order.shape[0]
    T = t_save.shape[0]
    for w in prange(done_by.shape[0]):
        while True:
            q = fetch_add(queue, 0)
            if q >= n_cfg:
                break
            i = order[q]
            K = ip[i, IP_K]
            N = ip[i, IP_N]
            n_pieces = max(ip[i, IP_NTHETA], 1)
            side = N if ip[i, IP_NTHETA] > 0 else 1
            yi = y[y_off[i]:y_off[i + 1]]
            n = yi.shape[0]
            Yi = Y[Y_off[i]:Y_off[i + 1]].reshape((K, N))
            pii = pi[pi_off[i]:pi_off[i + 1]]
            thi = th[th_off[i]:th_off[i + 1]].reshape((n_pieces, side, side))
            tti = tt[tt_off[i]:tt_off[i + 1]]
            tpi = tp[tp_off[i]:tp_off[i + 1]].reshape((n_pieces, side, side))
            Ts = T if save[i, 0] else 0
            Tw = T if save[i, 1] else 0
            Th = T if save[i, 2] else 0
            Tl = T if save[i, 3] else 0
            sti = st[st_off[i]:st_off[i + 1]].reshape((Ts, n))
            gwi = gw[gw_off[i]:gw_off[i + 1]].reshape((Tw, K, K))
            ghi = gh[gh_off[i]:gh_off[i + 1]].reshape((Th, N, N))
            lgi = lg[lg_off[i]:lg_off[i + 1]].reshape((Tl, K, N))
            s, j = integrate(yi, carry[i], t_save, T - T, T, A, bw, c, e, P, controller_order, adaptive, fsal,
                             h_max, rtol, atol, max_steps, ip[i], coef[i], Yi, pii, thi, tti, tpi,
                             save[i], out_loss[i], out_data[i], sti, gwi, ghi, lgi)
            status[i] = s
            reached[i] = j
            done_by[w] += 1
