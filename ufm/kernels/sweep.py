"""Numba sweep kernel: one adaptive trajectory per work item, on all numba threads.

This is the only ``parallel=True`` function of the package (docs/architecture.md): every
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

Arguments (``n`` configurations, ``T`` shared save times):

    order      (n,) int64      permutation: the order in which threads take configurations
                               (costliest first, so that the tail of the loop is short)
    queue      (1,) int64      the work-queue counter, 0 on entry (n + threads on exit)
    done_by    (threads,) int64  configurations integrated by each thread (one prange
                               iteration per thread)
    t_save     (T,)            save times shared by all configurations
    tab, ctl                   the Tableau and Controls groups, shared
    models     ModelBuffers    the packed models (:mod:`ufm.kernels.groups`)
    outs       OutputBuffers   their outputs
    carry      (n, CARRY_SIZE) integrator memory; row i is the ``carry`` of configuration i
    y, y_off                   flat initial states (overwritten with the final ones)
    status, reached (n,)       the driver's status code and the number of saves written

Configuration i's :class:`~ufm.kernels.groups.Model` and
:class:`~ufm.kernels.groups.Outputs` are rebuilt in the loop from views of the buffers, so the
driver runs on exactly the types :func:`ufm.solve` gives it and its cached compilation is
shared.
"""

from __future__ import annotations

from numba import config, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .fields import IP_K, IP_N, IP_NTHETA
from .groups import Model, Outputs
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
def integrate_many(order, queue, done_by, t_save, tab, ctl, models, outs, carry, y, y_off, status, reached):
    """Integrate every configuration from ``carry[i]`` through all of ``t_save``.

    See the module docstring for the arguments. Never raises: each configuration's outcome is
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
            model = model_view(models, i)
            out = output_view(outs, i, T, y_off[i + 1] - y_off[i], model.ip[IP_K], model.ip[IP_N])
            yi = y[y_off[i]:y_off[i + 1]]
            s, j = integrate(yi, carry[i], t_save, T, tab, ctl, model, out)
            status[i] = s
            reached[i] = j
            done_by[w] += 1


@njit(cache=True)
def model_view(models, i):
    """Configuration ``i``'s :class:`~ufm.kernels.groups.Model`, as views of the buffers."""
    ip = models.ip[i]
    K = ip[IP_K]
    N = ip[IP_N]
    n_pieces = max(ip[IP_NTHETA], 1)
    side = N if ip[IP_NTHETA] > 0 else 1
    return Model(ip, models.coef[i],
                 models.Y[models.Y_off[i]:models.Y_off[i + 1]].reshape((K, N)),
                 models.pi[models.pi_off[i]:models.pi_off[i + 1]],
                 models.theta[models.theta_off[i]:models.theta_off[i + 1]].reshape((n_pieces, side, side)),
                 models.theta_t[models.theta_t_off[i]:models.theta_t_off[i + 1]],
                 models.theta_pinv[models.theta_pinv_off[i]:models.theta_pinv_off[i + 1]].reshape(
                     (n_pieces, side, side)),
                 models.tab_i[models.tab_i_off[i]:models.tab_i_off[i + 1]],
                 models.tab_f[models.tab_f_off[i]:models.tab_f_off[i + 1]])


@njit(cache=True)
def output_view(outs, i, T, n, K, N):
    """Configuration ``i``'s :class:`~ufm.kernels.groups.Outputs` (state length ``n``,
    sizes K and N): a quantity not saved has a leading dimension 0."""
    flags = outs.flags[i]
    Ts = T if flags[0] else 0
    Tw = T if flags[1] else 0
    Th = T if flags[2] else 0
    Tl = T if flags[3] else 0
    return Outputs(flags, outs.loss[i], outs.data[i],
                   outs.state[outs.state_off[i]:outs.state_off[i + 1]].reshape((Ts, n)),
                   outs.gram_W[outs.gram_W_off[i]:outs.gram_W_off[i + 1]].reshape((Tw, K, K)),
                   outs.gram_H[outs.gram_H_off[i]:outs.gram_H_off[i + 1]].reshape((Th, N, N)),
                   outs.logits[outs.logits_off[i]:outs.logits_off[i + 1]].reshape((Tl, K, N)))
