"""ufm.kernels.smallmm (the vector-field products and softmax at small sizes) against numpy,
and its interpreted twins (NUMBA_DISABLE_JIT) against the compiled kernels, bit for bit.

The field-level checks (every model variant, K ≠ N, both sides of the size thresholds) are in
test_kernels_reference.py; here the kernels alone, on the shapes their blocking has edges at:
rows 1-9 (tiles of 8, 4, 2, 1), columns 1-25 (blocks of 16 = 8 + partial 8, then one partial
block), a contraction length of 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ufm.kernels import fields as kf
from ufm.kernels.smallmm import mm_rows, softmax_gradient, transpose_into

ROWS = (1, 2, 3, 4, 5, 7, 8, 9, 13)
COLS = (1, 3, 7, 8, 9, 10, 15, 16, 17, 24, 25)
SENTINEL = 12345.678


def _mm_case(M, Kc, Nc, transposed, use_d, seed=0):
    """(C as mm_rows left it, the expected C) for C = s·(A B + μ D) with C inside a larger
    buffer (leading dimension Nc + 3, offset 5) whose other entries must stay SENTINEL."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(M, Kc))
    B = rng.normal(size=(Kc, Nc))
    D = rng.normal(size=(M, Nc))
    s, mu = -0.7, 0.3
    ldc = Nc + 3
    buf = np.full(5 + M * ldc + 4, SENTINEL)
    Dbuf = np.full(2 + M * ldc, SENTINEL)
    for r in range(M):
        Dbuf[2 + r * ldc:2 + r * ldc + Nc] = D[r]
    # A stored as itself (row stride Kc) or as its transpose (row stride 1, column stride M)
    if transposed:
        Aflat, a_rs, a_cs = np.ascontiguousarray(A.T).ravel(), 1, M
    else:
        Aflat, a_rs, a_cs = A.ravel(), Kc, 1
    Bflat = np.concatenate([np.full(3, SENTINEL), B.ravel()])
    mm_rows(Aflat, 0, a_rs, a_cs, Bflat, 3, Nc, buf, 5, ldc, M, Kc, Nc, s, Dbuf, 2, ldc, mu, use_d)
    want = s * (A @ B + mu * D) if use_d else s * (A @ B)
    got = np.array([buf[5 + r * ldc:5 + r * ldc + Nc] for r in range(M)])
    outside = np.delete(buf, [5 + r * ldc + i for r in range(M) for i in range(Nc)])
    return got, want, outside


@pytest.mark.parametrize("M", ROWS)
@pytest.mark.parametrize("Nc", COLS)
def test_mm_rows_matches_numpy_and_writes_only_its_block(M, Nc):
    """Every row tile and column block edge, A plain and transposed by strides, with and without
    the D term; nothing outside C's block is written (masked stores). Measured: <= 4 ulp of the
    largest entry; tolerance 1e-14 of it."""
    for Kc in (1, 5, 16):
        for transposed in (False, True):
            for use_d in (False, True):
                got, want, outside = _mm_case(M, Kc, Nc, transposed, use_d, seed=M * 100 + Nc)
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-14 * np.abs(want).max(),
                                           err_msg=f"M={M} Kc={Kc} Nc={Nc} transposed={transposed} D={use_d}")
                assert np.all(outside == SENTINEL), (M, Kc, Nc, transposed, use_d)


def test_mm_rows_with_d_the_output_itself():
    """D may be C (the field's T += λ_H H pattern reads each block just before writing it)."""
    rng = np.random.default_rng(4)
    M, Kc, Nc = 9, 6, 19
    A, B, C0 = rng.normal(size=(M, Kc)), rng.normal(size=(Kc, Nc)), rng.normal(size=(M, Nc))
    C = C0.ravel().copy()
    mm_rows(A.ravel(), 0, Kc, 1, B.ravel(), 0, Nc, C, 0, Nc, M, Kc, Nc, 2.0, C, 0, Nc, 0.5, True)
    want = 2.0 * (A @ B + 0.5 * C0)
    np.testing.assert_allclose(C.reshape(M, Nc), want, rtol=0, atol=1e-14 * np.abs(want).max())


def test_transpose_into():
    src = np.arange(40.0)
    dst = np.full(30, -1.0)
    transpose_into(src, 4, 3, 7, dst, 2)
    np.testing.assert_array_equal(dst[2:23].reshape(7, 3), src[4:25].reshape(3, 7).T)
    assert np.all(dst[:2] == -1.0) and np.all(dst[23:] == -1.0)


def softmax_case(K, N, scale, seed, soft):
    """Random logits Z (K, N), labels Y (one-hot columns, or soft ones summing to 1), weights pi
    (N,) and the reference CE logit gradient G_ref (K, N) from ``fields.logit_gradient``; shared
    with tests/test_field_vectors.py."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(K, N)) * scale
    if soft:
        Y = rng.random(size=(K, N))
        Y /= Y.sum(axis=0)
    else:
        Y = np.zeros((K, N))
        Y[rng.integers(0, K, size=N), np.arange(N)] = 1.0
    pi = rng.random(N) + 0.1
    G_ref = np.empty((K, N))
    kf.logit_gradient(Z, Y, pi, kf.LOSS_CE, G_ref, np.empty(N), np.empty(N), False)
    return Z, Y, pi, G_ref


def _softmax_pair(K, N, scale, seed, soft):
    Z, Y, pi, G_ref = softmax_case(K, N, scale, seed, soft)
    G = np.full(K * N, np.nan)
    softmax_gradient(Z.ravel(), Y, pi, G, K, N)
    return G.reshape(K, N), G_ref, Z, Y, pi


@pytest.mark.parametrize("K", (1, 2, 3, 7, 8, 10, 17))
@pytest.mark.parametrize("N", (1, 2, 7, 8, 9, 10, 16, 17, 33))
def test_softmax_gradient_is_logit_gradient_bit_for_bit(K, N):
    """The same arithmetic as fields.logit_gradient's cross-entropy branch, in vector blocks:
    identical bits, for O(1) logits and for logits spread over ±800 (where a softmax without
    the column maximum overflows), one-hot and soft labels."""
    for scale, soft in ((1.0, False), (300.0, True)):
        G, G_ref, Z, Y, pi = _softmax_pair(K, N, scale, seed=K * 50 + N, soft=soft)
        assert np.all(np.isfinite(G))
        np.testing.assert_array_equal(G, G_ref)
    # and it is the gradient: against the numpy softmax at moderate logits
    G, _, Z, Y, pi = _softmax_pair(K, N, 1.0, seed=1, soft=True)
    P = np.exp(Z - Z.max(axis=0))
    P /= P.sum(axis=0)
    np.testing.assert_allclose(G, (P - Y) * pi, rtol=0, atol=1e-15)


def test_size_thresholds_pick_the_paths_documented():
    """small_products is the size switch the field reads (and the K = N = 10 benchmark size is
    on the vector side)."""
    assert kf.small_products(10, 16, 10)
    assert kf.small_products(8, 128, 32) and not kf.small_products(8, 129, 32)
    assert kf.SMALL_SOFTMAX_MAX == 32 * 32


TWIN_SCRIPT = r"""
import json, sys, numpy as np
from ufm.kernels.smallmm import mm_rows, softmax_gradient
from ufm.kernels import fields as kf
out = []
rng = np.random.default_rng(7)
for M, Kc, Nc in ((1, 3, 1), (3, 2, 9), (5, 4, 17), (9, 3, 7), (4, 1, 25)):
    A, B, D = rng.normal(size=M * Kc), rng.normal(size=Kc * Nc), rng.normal(size=M * Nc)
    C = np.zeros(M * Nc)
    mm_rows(A, 0, Kc, 1, B, 0, Nc, C, 0, Nc, M, Kc, Nc, -0.9, D, 0, Nc, 0.4, True)
    out.append(C.tolist())
    mm_rows(A, 0, 1, M, B, 0, Nc, C, 0, Nc, M, Kc, Nc, 1.0, D, 0, Nc, 0.0, False)
    out.append(C.tolist())
for K, N in ((3, 9), (10, 10), (5, 17)):
    Z = rng.normal(size=(K, N)) * 5
    Y = np.eye(K, N)
    pi = rng.random(N)
    G = np.zeros(K * N)
    softmax_gradient(Z.ravel(), Y, pi, G, K, N)
    out.append(G.tolist())
json.dump(out, sys.stdout)
"""


def compiled_and_interpreted(script):
    """The JSON that ``script`` prints, run in a fresh interpreter compiled and then with
    NUMBA_DISABLE_JIT=1 (shared with tests/test_field_vectors.py)."""
    def run(flag):
        env = dict(os.environ, NUMBA_DISABLE_JIT=flag)
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)
    return run("0"), run("1")


def test_interpreted_twins_give_the_compiled_bits():
    """Under NUMBA_DISABLE_JIT the kernels run on the numpy twins of the vector intrinsics
    (exactly rounded fma): the same bits as compiled, on shapes with partial blocks."""
    jit, nojit = compiled_and_interpreted(TWIN_SCRIPT)
    assert len(jit) == len(nojit) == 13
    for a, b in zip(jit, nojit):
        np.testing.assert_array_equal(np.array(a), np.array(b))
