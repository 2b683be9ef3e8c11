"""Array views without reference counting, for the hot loops of the drivers.

Every numba array carries a pointer to its memory's reference count, and numba increments and
decrements it, with atomic instructions, for each array argument of each call to a jitted
function that is not inlined and for each view (slice, reshape, transpose), unless LLVM's
reference-count pruning removes the pair -- which it does not in functions with many branches
and loops (the vector fields, the driver's helpers: checked in their optimised LLVM IR). At
K = N = 10, d = 16, ``perf`` put 23-28% of a whole explicit solve in NRT_incref/NRT_decref.

:func:`unmanaged` returns the same array (data, shape, strides, type) with no memory-info
pointer: numba's reference-count operations on it test the pointer for NULL and do nothing, and
every view made from it inherits that. The caller must keep the owning array alive while the
view is used: numba releases a local array after its last use, so a driver that makes unmanaged
views of its own buffers passes the owners to :func:`keep_alive` after its loop.

:func:`matrix_view` makes a row-major matrix view of part of a flat array the same way (no
reference count, and without the C helper numba's ``reshape`` calls to check the layout: each
of those cost ~25 ns, several per field evaluation).

Under ``NUMBA_DISABLE_JIT`` these are the plain numpy equivalents (no reference counts to avoid).
"""

from __future__ import annotations

from numba import config, njit, types
from numba.extending import intrinsic

if config.DISABLE_JIT:
    def unmanaged(a):
        """``a`` itself (interpreted mode has no reference counts to avoid)."""
        return a

    def matrix_view(flat, start, rows, cols):
        """``flat[start:start + rows·cols]`` as a (rows, cols) row-major view."""
        return flat[start:start + rows * cols].reshape(rows, cols)
else:
    @intrinsic
    def unmanaged(typingctx, arr):
        """A view of ``arr`` without a memory-info pointer (no reference counting)."""
        if not isinstance(arr, types.Array):
            return None
        sig = arr(arr)

        def codegen(context, builder, signature, args):
            from numba.np.arrayobj import make_array, populate_array
            src = make_array(arr)(context, builder, value=args[0])
            out = make_array(arr)(context, builder)
            populate_array(out, data=src.data, shape=src.shape, strides=src.strides, itemsize=src.itemsize,
                           meminfo=None)
            return out._getvalue()

        return sig, codegen

    @intrinsic
    def matrix_view(typingctx, flat, start, rows, cols):
        """``flat[start:start + rows·cols]`` (a C-contiguous 1-D array) as a (rows, cols)
        row-major view without a memory-info pointer; the caller guarantees the range lies
        inside ``flat`` and keeps ``flat``'s owner alive."""
        if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"):
            return None
        if not all(isinstance(v, types.Integer) for v in (start, rows, cols)):
            return None
        ret = types.Array(flat.dtype, 2, "C", readonly=not flat.mutable, aligned=flat.aligned)
        sig = ret(flat, start, rows, cols)

        def codegen(context, builder, signature, args):
            from numba.core import cgutils
            from numba.np.arrayobj import make_array, populate_array
            src = make_array(flat)(context, builder, value=args[0])
            out = make_array(ret)(context, builder)
            start_v, rows_v, cols_v = (context.cast(builder, v, t, types.intp)
                                       for v, t in zip(args[1:], signature.args[1:]))
            itemsize = src.itemsize
            populate_array(out, data=builder.gep(src.data, [start_v]),
                           shape=cgutils.pack_array(builder, [rows_v, cols_v]),
                           strides=cgutils.pack_array(builder, [builder.mul(cols_v, itemsize), itemsize]),
                           itemsize=itemsize, meminfo=None)
            return out._getvalue()

        return sig, codegen


@njit(cache=True)
def keep_alive(*arrays):
    """Does nothing; a call after a loop that used unmanaged views of ``arrays`` keeps the owners
    alive (numba frees a local array after its last use) until here. Returns the number of
    arrays, so that the call is not removed as dead code before numba places its releases."""
    return len(arrays)
