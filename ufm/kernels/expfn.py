"""A branch-free e^x that LLVM can vectorise (the softmax of every cross-entropy field).

Cody–Waite reduction x = k·ln2 + r, |r| <= ln2/2, with k rounded by the 1.5·2^52 shifter (no
floor, no int conversion of the float: k's bits are read from the shifted sum), a degree-13
Taylor polynomial for e^r (truncation < 1e-17 relative) evaluated by Horner steps that are
explicit fused multiply-adds (:func:`_fma`: LLVM's ``llvm.fma``, vectorised to ``vfmadd``; under
``NUMBA_DISABLE_JIT`` an exactly rounded Python twin, so both modes give the same bits), and
2^k built from its exponent bits as 2^⌊k/2⌋ · 2^(k−⌊k/2⌋), so one formula covers overflow (inf above 709.78), gradual
underflow (subnormals, rounded once) and 0 below −745.13 without a branch or a table. NaN
passes through. Tested against numpy's exp over the whole double range (tests/test_expfn.py).

Its 8-lane twin :func:`ufm.kernels.smallmm.vexp` runs the same operations on a vector (the
softmax kernels of the field), with the same bits (tests/test_field_vectors.py).

Why not SVML: numba reports "llvmlite Using SVML Patched LLVM: False" for the llvmlite (LLVM
22) installed here, so even with Intel's libsvml (``intel-cmplr-lib-rt``) on the library path
``numba -s`` says "SVML Operational: False" (checked): np.exp in a loop stays a scalar libm
call.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e+00
_SHIFTER = 6755399441055744.0          # 1.5·2^52: x + shifter rounds x to an integer in its low bits
_X_MIN = -746.0                        # e^x < smallest subnormal / 2 below −745.13
_X_MAX = 710.0                         # e^x > largest double above 709.78
#: the Taylor coefficients 1/13!, 1/12!, ..., 1/1!, 1/0! of e^r, highest first (Horner order);
#: shared with the 8-lane twin :func:`ufm.kernels.smallmm.vexp`
_TAYLOR = (1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
           1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0)


def _float_bits_py(x):
    """The IEEE-754 bits of a float64 as a Python int (for constants at compile time)."""
    return struct.unpack("<q", struct.pack("<d", x))[0]


if config.DISABLE_JIT:
    def _fma(a, b, c):
        """a·b + c rounded once, as the jitted llvm.fma (exact in fractions, then one rounding);
        non-finite operands (NaN passing through) fall back to a·b + c."""
        if math.isfinite(a) and math.isfinite(b) and math.isfinite(c):
            return float(Fraction(a) * Fraction(b) + Fraction(c))
        return a * b + c

    _float_bits = _float_bits_py

    def _bits_float(i):
        """The float64 with IEEE-754 bits ``i``."""
        return struct.unpack("<d", struct.pack("<q", i))[0]
else:
    @intrinsic
    def _fma(typingctx, a, b, c):
        """a·b + c rounded once: LLVM's fma intrinsic, which the loop vectoriser turns into
        vfmadd on FMA hardware (an explicit call, unlike numba's fastmath "contract" flag, so the
        interpreted twin above can round exactly alike)."""
        sig = types.float64(types.float64, types.float64, types.float64)

        def codegen(context, builder, signature, args):
            dbl = args[0].type
            fnty = ir.FunctionType(dbl, [dbl, dbl, dbl])
            return builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f64"), args)

        return sig, codegen

    @intrinsic
    def _float_bits(typingctx, x):
        """The IEEE-754 bits of a float64 as an int64 (an LLVM bitcast: vectorisable)."""
        sig = types.int64(types.float64)

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.int64))

        return sig, codegen

    @intrinsic
    def _bits_float(typingctx, i):
        """The float64 with IEEE-754 bits ``i`` (an LLVM bitcast)."""
        sig = types.float64(types.int64)

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.float64))

        return sig, codegen


@njit(cache=True, inline="always")
def fast_exp(x):
    """e^x for every float64 x, within 1 ulp of numpy's exp (NaN in, NaN out)."""
    xc = min(max(x, _X_MIN), _X_MAX)
    shifted = xc * _INV_LN2 + _SHIFTER
    kf = shifted - _SHIFTER
    k = _float_bits(shifted) - _float_bits(_SHIFTER)
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    # Horner steps as fused multiply-adds: half the floating-point operations of the polynomial,
    # which bounds the softmax's speed. Measured at K = N = 64 (logit_gradient without the loss,
    # 4,096 exps, the old and this version run alternately, two runs each): 9.5-10.1 -> 7.6-7.7 us;
    # rerun: the "softmax + G" column of `python -m benchmarks --quick --only roofline`.
    p = _TAYLOR[0]
    p = _fma(p, r, _TAYLOR[1])
    p = _fma(p, r, _TAYLOR[2])
    p = _fma(p, r, _TAYLOR[3])
    p = _fma(p, r, _TAYLOR[4])
    p = _fma(p, r, _TAYLOR[5])
    p = _fma(p, r, _TAYLOR[6])
    p = _fma(p, r, _TAYLOR[7])
    p = _fma(p, r, _TAYLOR[8])
    p = _fma(p, r, _TAYLOR[9])
    p = _fma(p, r, _TAYLOR[10])
    p = _fma(p, r, _TAYLOR[11])
    p = _fma(p, r, _TAYLOR[12])
    p = _fma(p, r, _TAYLOR[13])
    k1 = k >> 1
    k2 = k - k1
    res = (p * _bits_float((k1 + 1023) << 52)) * _bits_float((k2 + 1023) << 52)
    return res if x == x else x


#: the name the softmax kernels used for their exp of max-subtracted arguments (x <= 0)
exp_nonpositive = fast_exp
