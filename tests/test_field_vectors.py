"""The 8-lane pieces of the cross-entropy field (ufm.kernels.smallmm: vexp, vgather,
softmax_gradient_rows, decay_into) against their scalar twins and numpy, bit for bit, and their
interpreted twins (NUMBA_DISABLE_JIT) against the compiled kernels.

The field-level checks (every model variant, both sides of the size switches, against
ufm.reference) are in test_kernels_reference.py; softmax_gradient (column blocks) is in
test_smallmm.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from numba import njit

import ufm.reference as ref
from ufm.kernels import fields as kf
from ufm.kernels.expfn import fast_exp
from ufm.kernels.smallmm import decay_into, softmax_gradient_rows, vexp, vgather, vload, vstore

from test_smallmm import compiled_and_interpreted, softmax_case


@njit(cache=True)
def _scalar_exp(x, out):
    for q in range(x.shape[0]):
        out[q] = fast_exp(x[q])


@njit(cache=True)
def _vector_exp(x, out):
    n = x.shape[0]
    for q in range(0, n, 8):
        c = min(8, n - q)
        vstore(out, q, vexp(vload(x, q, c)), c)


@njit(cache=True)
def _gathered(src, start, stride, count, out):
    vstore(out, 0, vgather(src, start, stride, count), 8)


def _exp_arguments(n_random):
    rng = np.random.default_rng(3)
    edges = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -1e-300, 709.78, 709.79, 710.0, 800.0,
             -708.39, -708.4, -745.13, -745.14, -746.0, -1e308, 0.5 * np.log(2.0), -0.5 * np.log(2.0)]
    return np.concatenate([rng.uniform(-760.0, 720.0, n_random), rng.uniform(-746.0, -700.0, n_random // 4),
                           rng.uniform(-1.0, 1.0, n_random // 4), edges,
                           np.arange(-1080, 1030) * np.log(2.0)])        # every 2^k, through the subnormals


def test_vexp_gives_fast_exps_bits_everywhere():
    """The 8-lane exp is fast_exp lane by lane, to the bit: overflow to inf, gradual underflow
    (the AVX-512 scalef path rounds p·2^k once, as the two-factor scalar product does), 0 below
    −745.13, NaN through; the array length is not a multiple of 8 (a masked last vector)."""
    x = _exp_arguments(400_001)
    assert x.size % 8 != 0
    a, b = np.empty_like(x), np.full_like(x, 7.0)
    _scalar_exp(x, a)
    _vector_exp(x, b)
    np.testing.assert_array_equal(a.view(np.int64)[~np.isnan(x)], b.view(np.int64)[~np.isnan(x)])
    assert np.all(np.isnan(b[np.isnan(x)]))
    fin = np.isfinite(x)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x[fin])
        assert np.all((b[fin] == e) | (np.abs(b[fin] - e) <= np.spacing(e)))    # within 1 ulp of numpy


@pytest.mark.parametrize("count", range(0, 9))
def test_vgather_reads_the_strided_lanes_and_zeros_the_rest(count):
    src = np.arange(100.0)
    out = np.full(8, -1.0)
    _gathered(src, 3, 11, count, out)
    np.testing.assert_array_equal(out, [3.0 + 11 * q if q < count else 0.0 for q in range(8)])


def _rows_pair(K, N, scale, soft, seed):
    Z, Y, pi, G_ref = softmax_case(K, N, scale, seed, soft)
    G = np.full(K * N, np.nan)
    softmax_gradient_rows(Z.ravel(), Y, pi, G, K, N, np.full(N, np.nan), np.full(N, np.nan))
    return G.reshape(K, N), G_ref, Z, Y, pi


@pytest.mark.parametrize("K,N", [(1, 1), (2, 9), (7, 8), (13, 17), (33, 32), (40, 41), (64, 64), (5, 130)])
def test_softmax_gradient_rows_is_logit_gradient_bit_for_bit(K, N):
    """The row-pass kernel the field uses above SMALL_SOFTMAX_MAX: logit_gradient's arithmetic
    to the bit, for O(1) logits and logits spread over ±900 (where a softmax without the column
    maximum overflows), one-hot and soft labels; and the gradient of ufm.reference's loss."""
    for scale, soft in ((1.0, False), (300.0, True)):
        G, G_ref, Z, Y, pi = _rows_pair(K, N, scale, soft, seed=K * 31 + N)
        assert np.all(np.isfinite(G))
        np.testing.assert_array_equal(G, G_ref)
    G, _, Z, Y, pi = _rows_pair(K, N, 1.0, True, seed=5)
    model = SimpleNamespace(loss_name="ce", problem=SimpleNamespace(Y=Y, weights=pi))
    _, G_np = ref.data_loss_and_grad(model, Z)
    np.testing.assert_allclose(G, G_np, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", (1, 7, 8, 9, 64, 131))
@pytest.mark.parametrize("nu", (0.0, 0.3))
def test_decay_into_rounds_as_written(n, nu):
    """x = s·((x + μy) + νy) on a slice (offsets, a length not a multiple of 8), each operation
    rounded once as numpy rounds it; nothing outside the slice is touched."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=n + 10)
    y = rng.normal(size=n + 4) * 1e3
    s, mu = -0.7, 1.3e-3
    want = x.copy()
    seg, ys = want[6:6 + n], y[3:3 + n]
    want[6:6 + n] = s * ((seg + mu * ys) + nu * ys) if nu != 0.0 else s * (seg + mu * ys)
    decay_into(x, 6, y, 3, n, s, mu, nu)
    np.testing.assert_array_equal(x, want)


TWIN_SCRIPT = r"""
import json, sys, numpy as np
from ufm.kernels.smallmm import decay_into, softmax_gradient_rows, transpose_into
out = []
rng = np.random.default_rng(11)
for K, N in ((3, 9), (10, 10), (5, 17)):
    Z = rng.normal(size=(K, N)) * 40
    Y = np.eye(K, N)
    pi = rng.random(N)
    G = np.zeros(K * N)
    softmax_gradient_rows(Z.ravel(), Y, pi, G, K, N, np.zeros(N), np.zeros(N))
    out.append(G.tolist())
x, y = rng.normal(size=21), rng.normal(size=21)
decay_into(x, 1, y, 2, 19, -0.9, 0.01, 0.02)
out.append(x.tolist())
src, dst = rng.normal(size=60), np.zeros(60)
transpose_into(src, 2, 11, 5, dst, 1)
out.append(dst.tolist())
json.dump(out, sys.stdout)
"""


def test_interpreted_twins_give_the_compiled_bits():
    """Under NUMBA_DISABLE_JIT the new kernels run on the numpy twins of vexp, vgather and the
    other vector intrinsics: the same bits as compiled."""
    jit, nojit = compiled_and_interpreted(TWIN_SCRIPT)
    assert len(jit) == len(nojit) == 5
    for a, b in zip(jit, nojit):
        np.testing.assert_array_equal(np.array(a), np.array(b))


FALLBACK_SCRIPT = r"""
import json, sys, numpy as np
from numba import njit
from ufm.kernels import smallmm
from ufm.kernels.smallmm import vexp, vload, vstore
assert not smallmm._AVX512F
@njit
def run(x, out):
    for q in range(0, x.shape[0], 8):
        c = min(8, x.shape[0] - q)
        vstore(out, q, vexp(vload(x, q, c)), c)
x = np.array(json.loads(sys.stdin.read()))
out = np.empty_like(x)
run(x, out)
json.dump(out.view(np.int64).tolist(), sys.stdout)
"""


def test_vexp_without_avx512_gives_the_same_bits():
    """Compiled for a generic x86-64 CPU (NUMBA_CPU_NAME=generic: no AVX-512, so 2^k is built
    from its exponent bits as in fast_exp instead of by scalef), the 8-lane exp still gives
    fast_exp's bits."""
    x = _exp_arguments(4001)
    x = x[~np.isnan(x)]
    want = np.empty_like(x)
    _scalar_exp(x, want)
    env = dict(os.environ, NUMBA_CPU_NAME="generic")
    res = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], input=json.dumps(x.tolist()), capture_output=True,
                         text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(np.array(json.loads(res.stdout), dtype=np.int64), want.view(np.int64))
