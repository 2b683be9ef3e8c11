"""Small matrix products with explicit 8-wide vectors, for the vector field at small sizes.

Why: at K = N = 10, d = 16 the field's three products cost more in BLAS call overhead than in
arithmetic (one ``np.dot`` of 10×16×10 is 1,600 multiply-adds, about 100 cycles of vector work,
and takes 130-250 ns through numba's BLAS binding), and loops written in numba do not help: the
loop vectoriser skips loops as short as a row of 10 or 16 (its minimum trip count is the vector
width times the interleave), and numba runs LLVM without its SLP vectoriser
(``NUMBA_SLP_VECTORIZE=0``), so unrolled scalar code stays scalar. Measured (CPU time, one
product 10×16×10 in a loop): a register-blocked scalar tile 430-1040 ns, ``np.dot`` 155 ns.

So this module gives numba a vector type: :data:`vec8`, an LLVM ``<8 x double>`` value (one
AVX-512 register, or two AVX2 ones), with intrinsics to load and store 8 consecutive doubles
under a lane count (LLVM's masked load and store: a row of 10 is a full block and a block of
2, nothing is read or written past it, no padding), and a fused multiply-add with a broadcast
scalar. :func:`mm_rows` is the one product kernel built on them::

    C[r, :] = s · (Σ_k A[r, k] B[k, :] + μ D[r, :])        (μ term only when ``use_d``)

with A addressed by strides (so Wᵀ needs no copy), B and C (and D) row-major with their own
leading dimensions. Rows go four at a time with two column blocks (16 columns) each: eight
independent accumulators, enough to cover the four-cycle latency of the fused multiply-add
(one row and one block at a time is latency-bound, measured 140 ns for 10×16×10); the last
block of at most 8 columns goes eight rows at a time.

Measured at K = N = 10, d = 16 (CPU time per call in a loop, session 6; /tmp scripts, the
field-level comparison is ``python -m benchmarks.small_field``): Z = WH 95-102 ns, the copy of
Hᵀ 57-59 ns, dW = −η(GHᵀ + λW) 80-90 ns, dH = −η(WᵀG + λH) 112-122 ns, against ``np.dot``
alone 155, 249 (G·Hᵀ) and 130 ns (Wᵀ·G); :func:`softmax_gradient` 0.22-0.23 µs against
0.36-0.37 µs. Session 8 (the same way, load 5-6): the gathered copy of Hᵀ 33-34 ns,
:func:`softmax_gradient` with :func:`vexp` 0.16-0.18 µs.

The cross-entropy gradient of the field (:func:`softmax_gradient`, column blocks, and
:func:`softmax_gradient_rows`, row passes) runs on the same vectors, with :func:`vexp`, an
8-lane :func:`~ufm.kernels.expfn.fast_exp` (one zmm value where LLVM's loop vectoriser makes
four-lane ymm code of the scalar one) that gives fast_exp's bits; :func:`decay_into` is the
weight-decay epilogue of the BLAS products and :func:`transpose_into` gathers (:func:`vgather`).

Each accumulator lane is the serial sum Σ_k in k order, every step one fused multiply-add, and
the epilogue rounds as written; the interpreted twins (``NUMBA_DISABLE_JIT``) do exactly that
with an exactly rounded fma (:func:`ufm.kernels.expfn._fma`), so both modes give the same bits.
"""

from __future__ import annotations

import math

import numpy as np
from numba import config, njit

from . import expfn as _expfn
from .expfn import _fma, fast_exp

if config.DISABLE_JIT:
    def vzero():
        """Eight zeros."""
        return np.zeros(8)

    def vload(arr, start, count):
        """arr.flat[start : start + count] in the first ``count`` lanes (0 <= count <= 8), zeros after."""
        out = np.zeros(8)
        if count > 0:
            out[:count] = arr.reshape(-1)[start:start + count]
        return out

    def vstore(arr, start, v, count):
        """arr.flat[start : start + count] = the first ``count`` lanes of ``v``."""
        if count > 0:
            arr.reshape(-1)[start:start + count] = v[:count]

    def vfma(v, x, acc):
        """v·x + acc lane by lane (x a scalar), each rounded once; a lane whose product is
        exactly 0 (v = 0: the masked-off lanes) is acc + v·x in float, which is that rounding."""
        x = float(x)
        fin = math.isfinite(x)
        return np.array([acc[q] + v[q] * x if v[q] == 0.0 and fin else _fma(float(v[q]), x, float(acc[q]))
                         for q in range(8)])

    def store_out(C, c_at, acc, D, d_at, s, mu, use_d, count):
        """C[c_at : c_at + count] = s·(acc + μ·D[d_at : d_at + count]) (``use_d``) or s·acc,
        lane by lane, rounded as written."""
        if count > 0:
            a = acc[:count]
            Cf = C.reshape(-1)
            Cf[c_at:c_at + count] = s * (a + mu * D.reshape(-1)[d_at:d_at + count]) if use_d else s * a

    def at(arr, i):
        """arr.flat[i] (0 <= i < arr.size)."""
        return arr.reshape(-1)[i]

    def vsplat(x):
        """x in every lane."""
        return np.full(8, float(x))

    def vadd(a, b):
        """a + b lane by lane."""
        return a + b

    def vsub(a, b):
        """a − b lane by lane."""
        return a - b

    def vmul(a, b):
        """a·b lane by lane."""
        return a * b

    def vdiv(a, b):
        """a / b lane by lane."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return a / b

    def vmax(a, b):
        """b where b > a, else a, lane by lane (a NaN in b is skipped, one in a kept)."""
        return np.where(b > a, b, a)

    def vgather(arr, start, stride, count):
        """arr.flat[start + q·stride] in lanes q < ``count`` (0 <= count <= 8), zeros after."""
        out = np.zeros(8)
        flat = arr.reshape(-1)
        for q in range(count):
            out[q] = flat[start + q * stride]
        return out

    def vexp(v):
        """:func:`~ufm.kernels.expfn.fast_exp` lane by lane."""
        return np.array([fast_exp(float(a)) for a in v])
else:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.core.datamodel import models
    from numba.extending import intrinsic, register_model

    _V = ir.VectorType(ir.DoubleType(), 8)

    def _host_avx512f():
        """Whether numba compiles for this machine's CPU (no NUMBA_CPU_NAME override) and it
        has AVX-512F (numba's on-disk cache is keyed by CPU name and features, so code built
        with it is not loaded elsewhere)."""
        from llvmlite import binding
        if config.CPU_NAME not in (None, "host") or config.CPU_FEATURES:
            return False
        try:
            return bool(binding.get_host_cpu_features().get("avx512f", False))
        except RuntimeError:
            return False

    _AVX512F = _host_avx512f()
    _I64x8 = ir.VectorType(ir.IntType(64), 8)
    _I32 = ir.IntType(32)

    class Vec8Type(types.Type):
        """Eight float64 lanes held as one LLVM vector value."""

        def __init__(self):
            super().__init__(name="Vec8")

    vec8 = Vec8Type()

    @register_model(Vec8Type)
    class _Vec8Model(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, _V)

    def _pointer(context, builder, arrty, arr, start, startty):
        from numba.np.arrayobj import make_array
        a = make_array(arrty)(context, builder, value=arr)
        i = context.cast(builder, start, startty, types.intp)
        return builder.bitcast(builder.gep(a.data, [i]), _V.as_pointer())

    def _lanes_below(builder, count):
        """The mask of lanes q < count."""
        c = builder.insert_element(ir.Constant(_I64x8, None), count, ir.Constant(_I32, 0))
        c = builder.shuffle_vector(c, c, ir.Constant(ir.VectorType(_I32, 8), [0] * 8))
        lanes = ir.Constant(_I64x8, list(range(8)))
        return builder.icmp_signed("<", lanes, c)

    def _splat(builder, x):
        v = builder.insert_element(ir.Constant(_V, None), x, ir.Constant(_I32, 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 8), [0] * 8))

    def _splat_int(builder, i):
        v = builder.insert_element(ir.Constant(_I64x8, None), i, ir.Constant(_I32, 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 8), [0] * 8))

    def _splat_bool(builder, b):
        v = builder.insert_element(ir.Constant(ir.VectorType(ir.IntType(1), 8), None), b, ir.Constant(_I32, 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 8), [0] * 8))

    def _flat_c(arr):
        """A C-contiguous float64 array of any dimension: addressed by flat index."""
        return isinstance(arr, types.Array) and arr.layout == "C" and arr.dtype == types.float64

    @intrinsic
    def vzero(typingctx):
        """Eight zeros."""
        def codegen(context, builder, sig, args):
            return ir.Constant(_V, [0.0] * 8)
        return vec8(), codegen

    @intrinsic
    def vload(typingctx, arr, start, count):
        """arr[start : start + count] in the first ``count`` lanes (0 <= count <= 8), zeros
        after; lanes at or past ``count`` are not read (LLVM's masked load)."""
        if not (_flat_c(arr) and isinstance(start, types.Integer) and isinstance(count, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            p = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
            mask = _lanes_below(builder, context.cast(builder, args[2], sig.args[2], types.int64))
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V, [_V.as_pointer(), _I32, mask.type, _V]), "llvm.masked.load.v8f64.p0")
            return builder.call(fn, [p, ir.Constant(_I32, 8), mask, ir.Constant(_V, [0.0] * 8)])
        return vec8(arr, start, count), codegen

    @intrinsic
    def vstore(typingctx, arr, start, v, count):
        """arr[start : start + count] = the first ``count`` lanes of ``v`` (masked store)."""
        if not (_flat_c(arr) and isinstance(start, types.Integer) and v == vec8 and isinstance(count, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            p = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
            mask = _lanes_below(builder, context.cast(builder, args[3], sig.args[3], types.int64))
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [_V, _V.as_pointer(), _I32, mask.type]),
                "llvm.masked.store.v8f64.p0")
            builder.call(fn, [args[2], p, ir.Constant(_I32, 8), mask])
            return context.get_dummy_value()
        return types.void(arr, start, v, count), codegen

    @intrinsic
    def vfma(typingctx, v, x, acc):
        """v·x + acc lane by lane (x a scalar broadcast), each rounded once (llvm.fma)."""
        if not (v == vec8 and acc == vec8):
            return None

        def codegen(context, builder, sig, args):
            xs = _splat(builder, context.cast(builder, args[1], sig.args[1], types.float64))
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V, [_V, _V, _V]), "llvm.fma.v8f64")
            return builder.call(fn, [args[0], xs, args[2]])
        return vec8(v, types.float64, acc), codegen

    @intrinsic
    def store_out(typingctx, C, c_at, acc, D, d_at, s, mu, use_d, count):
        """C[c_at : c_at + count] = s·(acc + μ·D[d_at : d_at + count]) when ``use_d``, else
        s·acc, lane by lane, rounded as written (no contraction); masked: nothing at or past
        ``count`` is read or written. An intrinsic, so that no array reference is counted."""
        if not (_flat_c(C) and _flat_c(D) and acc == vec8):
            return None

        def codegen(context, builder, sig, args):
            Cv, c_at_v, accv, Dv, d_at_v, sv, muv, use_v, count_v = args
            mask = _lanes_below(builder, context.cast(builder, count_v, sig.args[8], types.int64))
            sp = _splat(builder, context.cast(builder, sv, sig.args[5], types.float64))
            out = builder.fmul(sp, accv)
            pd = _pointer(context, builder, sig.args[3], Dv, d_at_v, sig.args[4])
            load = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V, [_V.as_pointer(), _I32, mask.type, _V]), "llvm.masked.load.v8f64.p0")
            # D is read under the lanes mask and only used when use_d (a select, not a branch)
            dmask = builder.and_(mask, _splat_bool(builder, context.cast(builder, use_v, sig.args[7], types.boolean)))
            dv = builder.call(load, [pd, ir.Constant(_I32, 8), dmask, ir.Constant(_V, [0.0] * 8)])
            mp = _splat(builder, context.cast(builder, muv, sig.args[6], types.float64))
            with_d = builder.fmul(sp, builder.fadd(accv, builder.fmul(mp, dv)))
            res = builder.select(context.cast(builder, use_v, sig.args[7], types.boolean), with_d, out)
            pc = _pointer(context, builder, sig.args[0], Cv, c_at_v, sig.args[1])
            store = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [_V, _V.as_pointer(), _I32, mask.type]),
                "llvm.masked.store.v8f64.p0")
            builder.call(store, [res, pc, ir.Constant(_I32, 8), mask])
            return context.get_dummy_value()
        return types.void(C, c_at, acc, D, d_at, types.float64, types.float64, types.boolean, count), codegen

    @intrinsic
    def vsplat(typingctx, x):
        """x in every lane."""
        if not isinstance(x, (types.Float, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float64))
        return vec8(x), codegen

    def _binop(emit, doc):
        @intrinsic
        def op(typingctx, a, b):
            if not (a == vec8 and b == vec8):
                return None

            def codegen(context, builder, sig, args):
                return emit(builder, args[0], args[1])
            return vec8(a, b), codegen
        op.__doc__ = doc
        return op

    vadd = _binop(lambda bd, a, b: bd.fadd(a, b), "a + b lane by lane.")
    vsub = _binop(lambda bd, a, b: bd.fsub(a, b), "a − b lane by lane.")
    vmul = _binop(lambda bd, a, b: bd.fmul(a, b), "a·b lane by lane.")
    vdiv = _binop(lambda bd, a, b: bd.fdiv(a, b), "a / b lane by lane.")
    vmax = _binop(lambda bd, a, b: bd.select(bd.fcmp_ordered(">", b, a), b, a),
                  "b where b > a, else a, lane by lane (a NaN in b is skipped, one in a kept).")

    @intrinsic
    def vgather(typingctx, arr, start, stride, count):
        """arr[start + q·stride] in lanes q < ``count`` (0 <= count <= 8), zeros after; lanes at
        or past ``count`` are not read (LLVM's masked gather)."""
        if not (_flat_c(arr) and all(isinstance(t, types.Integer) for t in (start, stride, count))):
            return None

        def codegen(context, builder, sig, args):
            from numba.np.arrayobj import make_array
            a = make_array(sig.args[0])(context, builder, value=args[0])
            i64 = ir.IntType(64)
            st, sd, cn = (context.cast(builder, v, t, types.int64) for v, t in zip(args[1:], sig.args[1:]))
            lanes = ir.Constant(_I64x8, list(range(8)))
            idx = builder.add(builder.mul(lanes, _splat_int(builder, sd)), _splat_int(builder, st))
            base = _splat_int(builder, builder.ptrtoint(a.data, i64))
            addr = builder.add(base, builder.mul(idx, ir.Constant(_I64x8, [8] * 8)))
            pty = ir.VectorType(ir.DoubleType().as_pointer(), 8)
            ptrs = builder.inttoptr(addr, pty)
            mask = _lanes_below(builder, cn)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V, [pty, _I32, mask.type, _V]), "llvm.masked.gather.v8f64.v8p0")
            return builder.call(fn, [ptrs, ir.Constant(_I32, 8), mask, ir.Constant(_V, [0.0] * 8)])
        return vec8(arr, start, stride, count), codegen

    @intrinsic
    def vexp(typingctx, v):
        """:func:`~ufm.kernels.expfn.fast_exp` on eight lanes at once: the same operations in
        the same order (the clamp as numba's max/min, the shifter, the two-part ln 2, the Horner
        fused multiply-adds, the two-factor 2^k, NaN passed through), so the same bits. Why:
        LLVM vectorises a loop of fast_exp four lanes wide (ymm) here; this is one zmm value."""
        if v != vec8:
            return None

        def codegen(context, builder, sig, args):
            x = args[0]

            def c(val):
                return ir.Constant(_V, [float(val)] * 8)

            def ci(val):
                return ir.Constant(_I64x8, [int(val)] * 8)
            lo = builder.select(builder.fcmp_ordered(">", c(_expfn._X_MIN), x), c(_expfn._X_MIN), x)
            xc = builder.select(builder.fcmp_ordered("<", c(_expfn._X_MAX), lo), c(_expfn._X_MAX), lo)
            shifted = builder.fadd(builder.fmul(xc, c(_expfn._INV_LN2)), c(_expfn._SHIFTER))
            kf = builder.fsub(shifted, c(_expfn._SHIFTER))
            r = builder.fsub(builder.fsub(xc, builder.fmul(kf, c(_expfn._LN2_HI))), builder.fmul(kf, c(_expfn._LN2_LO)))
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V, [_V, _V, _V]), "llvm.fma.v8f64")
            p = c(_expfn._TAYLOR[0])
            for coef in _expfn._TAYLOR[1:]:
                p = builder.call(fma, [p, r, c(coef)])
            if _AVX512F:
                # p·2^k rounded once, as the two factors below round it (their first product is
                # exact: p·2^⌊k/2⌋ stays normal), in one instruction instead of eight
                scalef = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(_V, [_V, _V, _V, ir.IntType(8), _I32]),
                    "llvm.x86.avx512.mask.scalef.pd.512")
                res = builder.call(scalef, [p, kf, ir.Constant(_V, [0.0] * 8), ir.Constant(ir.IntType(8), -1),
                                            ir.Constant(_I32, 4)])
            else:
                k = builder.sub(builder.bitcast(shifted, _I64x8), ci(_expfn._float_bits_py(_expfn._SHIFTER)))
                k1 = builder.ashr(k, ci(1))
                k2 = builder.sub(k, k1)
                s1 = builder.bitcast(builder.shl(builder.add(k1, ci(1023)), ci(52)), _V)
                s2 = builder.bitcast(builder.shl(builder.add(k2, ci(1023)), ci(52)), _V)
                res = builder.fmul(builder.fmul(p, s1), s2)
            return builder.select(builder.fcmp_ordered("==", x, x), res, x)
        return vec8(v), codegen

    @intrinsic
    def at(typingctx, arr, i):
        """arr[i] without numba's negative-index wraparound (the caller guarantees 0 <= i <
        len(arr))."""
        if not (_flat_c(arr) and isinstance(i, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            from numba.np.arrayobj import make_array
            a = make_array(sig.args[0])(context, builder, value=args[0])
            return builder.load(builder.gep(a.data, [context.cast(builder, args[1], sig.args[1], types.intp)]))
        return types.float64(arr, i), codegen


@njit(cache=True)
def mm_rows(A, a_off, a_rs, a_cs, B, b_off, ldb, C, c_off, ldc, M, Kc, Nc, s, D, d_off, ldd, mu, use_d):
    """C[r, :Nc] = s·(Σ_{k<Kc} A[r, k] B[k, :Nc] + μ D[r, :Nc]) for r < M, on flat arrays:
    A[r, k] = A[a_off + r·a_rs + k·a_cs], B[k, i] = B[b_off + k·ldb + i], C[r, i] = C[c_off + r·ldc + i],
    D[r, i] = D[d_off + r·ldd + i] (read only when ``use_d``; otherwise the result is s·Σ).

    C must not overlap A, B or D except that D may be C itself (each block of D is read just
    before the same block of C is written). See the module docstring for the blocking and the
    rounding."""
    i0 = 0
    while i0 + 8 < Nc:
        # two column blocks (the second possibly partial)
        n0 = 8
        n1 = min(8, Nc - i0 - 8)
        r = 0
        while r + 4 <= M:
            a00 = vzero()
            a01 = vzero()
            a10 = vzero()
            a11 = vzero()
            a20 = vzero()
            a21 = vzero()
            a30 = vzero()
            a31 = vzero()
            pa = a_off + r * a_rs
            for k in range(Kc):
                pb = b_off + k * ldb + i0
                b0 = vload(B, pb, n0)
                b1 = vload(B, pb + 8, n1)
                pk = pa + k * a_cs
                x0 = at(A, pk)
                x1 = at(A, pk + a_rs)
                x2 = at(A, pk + 2 * a_rs)
                x3 = at(A, pk + 3 * a_rs)
                a00 = vfma(b0, x0, a00)
                a01 = vfma(b1, x0, a01)
                a10 = vfma(b0, x1, a10)
                a11 = vfma(b1, x1, a11)
                a20 = vfma(b0, x2, a20)
                a21 = vfma(b1, x2, a21)
                a30 = vfma(b0, x3, a30)
                a31 = vfma(b1, x3, a31)
            pc = c_off + r * ldc + i0
            pd = d_off + r * ldd + i0
            store_out(C, pc, a00, D, pd, s, mu, use_d, n0)
            store_out(C, pc + 8, a01, D, pd + 8, s, mu, use_d, n1)
            store_out(C, pc + ldc, a10, D, pd + ldd, s, mu, use_d, n0)
            store_out(C, pc + ldc + 8, a11, D, pd + ldd + 8, s, mu, use_d, n1)
            store_out(C, pc + 2 * ldc, a20, D, pd + 2 * ldd, s, mu, use_d, n0)
            store_out(C, pc + 2 * ldc + 8, a21, D, pd + 2 * ldd + 8, s, mu, use_d, n1)
            store_out(C, pc + 3 * ldc, a30, D, pd + 3 * ldd, s, mu, use_d, n0)
            store_out(C, pc + 3 * ldc + 8, a31, D, pd + 3 * ldd + 8, s, mu, use_d, n1)
            r += 4
        while r + 2 <= M:
            a00 = vzero()
            a01 = vzero()
            a10 = vzero()
            a11 = vzero()
            pa = a_off + r * a_rs
            for k in range(Kc):
                pb = b_off + k * ldb + i0
                b0 = vload(B, pb, n0)
                b1 = vload(B, pb + 8, n1)
                pk = pa + k * a_cs
                x0 = at(A, pk)
                x1 = at(A, pk + a_rs)
                a00 = vfma(b0, x0, a00)
                a01 = vfma(b1, x0, a01)
                a10 = vfma(b0, x1, a10)
                a11 = vfma(b1, x1, a11)
            pc = c_off + r * ldc + i0
            pd = d_off + r * ldd + i0
            store_out(C, pc, a00, D, pd, s, mu, use_d, n0)
            store_out(C, pc + 8, a01, D, pd + 8, s, mu, use_d, n1)
            store_out(C, pc + ldc, a10, D, pd + ldd, s, mu, use_d, n0)
            store_out(C, pc + ldc + 8, a11, D, pd + ldd + 8, s, mu, use_d, n1)
            r += 2
        if r < M:
            a00 = vzero()
            a01 = vzero()
            pa = a_off + r * a_rs
            for k in range(Kc):
                pb = b_off + k * ldb + i0
                x0 = at(A, pa + k * a_cs)
                a00 = vfma(vload(B, pb, n0), x0, a00)
                a01 = vfma(vload(B, pb + 8, n1), x0, a01)
            pc = c_off + r * ldc + i0
            pd = d_off + r * ldd + i0
            store_out(C, pc, a00, D, pd, s, mu, use_d, n0)
            store_out(C, pc + 8, a01, D, pd + 8, s, mu, use_d, n1)
        i0 += 16
    if i0 < Nc:
        # the last block of at most 8 columns: eight rows at a time keep eight accumulators
        n0 = Nc - i0
        r = 0
        while r + 8 <= M:
            a0 = vzero()
            a1 = vzero()
            a2 = vzero()
            a3 = vzero()
            a4 = vzero()
            a5 = vzero()
            a6 = vzero()
            a7 = vzero()
            pa = a_off + r * a_rs
            for k in range(Kc):
                b0 = vload(B, b_off + k * ldb + i0, n0)
                pk = pa + k * a_cs
                a0 = vfma(b0, at(A, pk), a0)
                a1 = vfma(b0, at(A, pk + a_rs), a1)
                a2 = vfma(b0, at(A, pk + 2 * a_rs), a2)
                a3 = vfma(b0, at(A, pk + 3 * a_rs), a3)
                a4 = vfma(b0, at(A, pk + 4 * a_rs), a4)
                a5 = vfma(b0, at(A, pk + 5 * a_rs), a5)
                a6 = vfma(b0, at(A, pk + 6 * a_rs), a6)
                a7 = vfma(b0, at(A, pk + 7 * a_rs), a7)
            pc = c_off + r * ldc + i0
            pd = d_off + r * ldd + i0
            store_out(C, pc, a0, D, pd, s, mu, use_d, n0)
            store_out(C, pc + ldc, a1, D, pd + ldd, s, mu, use_d, n0)
            store_out(C, pc + 2 * ldc, a2, D, pd + 2 * ldd, s, mu, use_d, n0)
            store_out(C, pc + 3 * ldc, a3, D, pd + 3 * ldd, s, mu, use_d, n0)
            store_out(C, pc + 4 * ldc, a4, D, pd + 4 * ldd, s, mu, use_d, n0)
            store_out(C, pc + 5 * ldc, a5, D, pd + 5 * ldd, s, mu, use_d, n0)
            store_out(C, pc + 6 * ldc, a6, D, pd + 6 * ldd, s, mu, use_d, n0)
            store_out(C, pc + 7 * ldc, a7, D, pd + 7 * ldd, s, mu, use_d, n0)
            r += 8
        while r < M:
            a0 = vzero()
            a1 = vzero()
            pa = a_off + r * a_rs
            two = r + 1 < M
            for k in range(Kc):
                b0 = vload(B, b_off + k * ldb + i0, n0)
                pk = pa + k * a_cs
                a0 = vfma(b0, at(A, pk), a0)
                if two:
                    a1 = vfma(b0, at(A, pk + a_rs), a1)
            pc = c_off + r * ldc + i0
            pd = d_off + r * ldd + i0
            store_out(C, pc, a0, D, pd, s, mu, use_d, n0)
            if two:
                store_out(C, pc + ldc, a1, D, pd + ldd, s, mu, use_d, n0)
            r += 2


@njit(cache=True)
def transpose_into(src, off, rows, cols, dst, dst_off):
    """dst[dst_off + c·rows + r] = src[off + r·cols + c]: the (cols, rows) row-major transpose
    of the (rows, cols) row-major block of ``src`` at ``off``, each row of ``dst`` gathered 8
    elements at a time (:func:`vgather`). Measured at rows = 16, cols = 10 (CPU time, a loop of
    calls, a scratch script, session 8): 106 ns as a scalar double loop, 33-34 ns gathered."""
    for c in range(cols):
        for r0 in range(0, rows, 8):
            n = min(8, rows - r0)
            vstore(dst, dst_off + c * rows + r0, vgather(src, off + r0 * cols + c, cols, n), n)


@njit(cache=True)
def softmax_gradient(Z, Y, pi, G, K, N):
    """G = (softmax(Z) − Y) diag(π) for (K, N) row-major blocks held flat in ``Z`` and ``G``
    (softmax of each column; Y (K, N) and π (N,) C-contiguous): the cross-entropy gradient of
    :func:`ufm.kernels.fields.logit_gradient` with the same arithmetic, bit for bit (column
    maximum subtracted, one :func:`~ufm.kernels.expfn.fast_exp` per entry, the column sum in
    row order inverted once, (e·(1/Σ) − y)·π).

    One block of 8 columns at a time goes through all three steps (maximum; exp, store and
    sum; normalise and subtract Y), so each block of Z and G is read from memory once and
    reused from cache, and the exp runs 8 lanes wide (:func:`vexp`). When N is not a multiple
    of 8 the last block of each row is partly empty, so the exp runs instead as one flat pass
    over all K·N entries (at K = N = 10: 13 vectors instead of 20)."""
    one = vsplat(1.0)
    if N % 8 == 0:
        for i0 in range(0, N, 8):
            m = vload(Z, i0, 8)
            for k in range(1, K):
                m = vmax(m, vload(Z, k * N + i0, 8))
            sm = vzero()
            for k in range(K):
                at_k = k * N + i0
                e = vexp(vsub(vload(Z, at_k, 8), m))
                vstore(G, at_k, e, 8)
                sm = vadd(sm, e)
            _normalise_block(G, Y, pi, K, N, i0, 8, vdiv(one, sm))
        return
    for i0 in range(0, N, 8):
        c = min(8, N - i0)
        m = vload(Z, i0, c)
        for k in range(1, K):
            m = vmax(m, vload(Z, k * N + i0, c))
        for k in range(K):
            vstore(G, k * N + i0, vsub(vload(Z, k * N + i0, c), m), c)
    n = K * N
    for q in range(0, n, 8):
        c = min(8, n - q)
        vstore(G, q, vexp(vload(G, q, c)), c)
    for i0 in range(0, N, 8):
        c = min(8, N - i0)
        sm = vzero()
        for k in range(K):
            sm = vadd(sm, vload(G, k * N + i0, c))
        _normalise_block(G, Y, pi, K, N, i0, c, vdiv(one, sm))


@njit(cache=True, inline="always")
def _normalise_block(G, Y, pi, K, N, i0, c, inv):
    """Columns i0 … i0 + c − 1 of G: G = (G·(1/Σ) − Y)·π, with ``inv`` = 1/Σ."""
    w = vload(pi, i0, c)
    for k in range(K):
        at_k = k * N + i0
        vstore(G, at_k, _gradient_of(vload(G, at_k, c), inv, vload(Y, at_k, c), w), c)


@njit(cache=True, inline="always")
def _gradient_of(e, inv, y, w):
    """(e·inv − y)·w lane by lane: the softmax e/Σ minus the label, weighted (both softmax
    kernels)."""
    return vmul(vsub(vmul(e, inv), y), w)


@njit(cache=True)
def softmax_gradient_rows(Z, Y, pi, G, K, N, colmax, colsum):
    """:func:`softmax_gradient` (the same arithmetic and bits) in passes along rows, the column
    maxima and sums kept in the length-N buffers ``colmax`` and ``colsum``: for large N, where a
    block of 8 columns strides through K rows N·8 bytes apart (at N = 512 every row of a block
    falls into the same few cache sets, and the three passes over it miss each time). Each pass
    runs over the full 8-lane blocks of a row with a constant lane count (no mask to build per
    vector) and then over the partial last block."""
    n8 = N - N % 8
    tail = N - n8
    for i0 in range(0, n8, 8):
        vstore(colmax, i0, vload(Z, i0, 8), 8)
        vstore(colsum, i0, vzero(), 8)
    if tail:
        vstore(colmax, n8, vload(Z, n8, tail), tail)
        vstore(colsum, n8, vzero(), tail)
    for k in range(1, K):
        for i0 in range(0, n8, 8):
            vstore(colmax, i0, vmax(vload(colmax, i0, 8), vload(Z, k * N + i0, 8)), 8)
        if tail:
            vstore(colmax, n8, vmax(vload(colmax, n8, tail), vload(Z, k * N + n8, tail)), tail)
    for k in range(K):
        for i0 in range(0, n8, 8):
            _exp_sum_block(Z, G, colmax, colsum, k * N + i0, i0, 8)
        if tail:
            _exp_sum_block(Z, G, colmax, colsum, k * N + n8, n8, tail)
    one = vsplat(1.0)
    for i0 in range(0, N, 8):
        c = min(8, N - i0)
        vstore(colsum, i0, vdiv(one, vload(colsum, i0, c)), c)
    for k in range(K):
        for i0 in range(0, n8, 8):
            _normalise_at(G, Y, pi, colsum, k * N + i0, i0, 8)
        if tail:
            _normalise_at(G, Y, pi, colsum, k * N + n8, n8, tail)


@njit(cache=True, inline="always")
def _exp_sum_block(Z, G, colmax, colsum, at_k, i0, c):
    """G[at_k …] = exp(Z[at_k …] − colmax[i0 …]), colsum[i0 …] += that, ``c`` lanes."""
    e = vexp(vsub(vload(Z, at_k, c), vload(colmax, i0, c)))
    vstore(G, at_k, e, c)
    vstore(colsum, i0, vadd(vload(colsum, i0, c), e), c)


@njit(cache=True, inline="always")
def _normalise_at(G, Y, pi, inv, at_k, i0, c):
    """G[at_k …] = (G·inv[i0 …] − Y[at_k …])·π[i0 …], ``c`` lanes."""
    vstore(G, at_k, _gradient_of(vload(G, at_k, c), vload(inv, i0, c), vload(Y, at_k, c), vload(pi, i0, c)), c)


@njit(cache=True)
def decay_into(x, x_off, y, y_off, n, s, mu, nu):
    """x[x_off + q] = s·((x[x_off + q] + μ·y[y_off + q]) + ν·y[y_off + q]) for q < n (the ν term
    only when ν ≠ 0), rounded as written: the weight-decay epilogue of the BLAS products, 8 lanes
    at a time (numba leaves the plain loop scalar: measured at K = N = d = 64, the two decay
    passes of the field cost 3.9 µs as loops and 1.3 µs here, a scratch script, session 8)."""
    sv = vsplat(s)
    mv = vsplat(mu)
    nv = vsplat(nu)
    n8 = n - n % 8
    if nu != 0.0:
        for q in range(0, n8, 8):
            _decay2_at(x, x_off + q, y, y_off + q, sv, mv, nv, 8)
        if n8 < n:
            _decay2_at(x, x_off + n8, y, y_off + n8, sv, mv, nv, n - n8)
    else:
        for q in range(0, n8, 8):
            _decay1_at(x, x_off + q, y, y_off + q, sv, mv, 8)
        if n8 < n:
            _decay1_at(x, x_off + n8, y, y_off + n8, sv, mv, n - n8)


@njit(cache=True, inline="always")
def _decay1_at(x, xa, y, ya, sv, mv, c):
    vstore(x, xa, vmul(sv, vadd(vload(x, xa, c), vmul(mv, vload(y, ya, c)))), c)


@njit(cache=True, inline="always")
def _decay2_at(x, xa, y, ya, sv, mv, nv, c):
    yv = vload(y, ya, c)
    vstore(x, xa, vmul(sv, vadd(vadd(vload(x, xa, c), vmul(mv, yv)), vmul(nv, yv))), c)
