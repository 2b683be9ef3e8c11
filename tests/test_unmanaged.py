"""ufm.kernels.unmanaged: views without reference counting share their owner's memory."""

import numpy as np
from numba import njit

from ufm.kernels.unmanaged import keep_alive, matrix_view, unmanaged


@njit(cache=True)
def _write_through(a):
    u = unmanaged(a)
    u[1] = 7.0
    v = u.reshape(2, 3)          # a view of the unmanaged view: unmanaged as well
    v[1, 2] = 9.0
    w = v.T
    w[0, 1] = -1.0               # element (1, 0) of v: flat index 3
    return u.shape[0], v.shape[0], v.shape[1], v.strides[0], v.strides[1]


@njit(cache=True)
def _local_owner(n):
    owner = np.zeros(n)
    u = unmanaged(owner)
    for q in range(n):
        u[q] = q * q
    s = 0.0
    for q in range(n):
        s += owner[q]
    keep_alive(owner)
    return s


def test_an_unmanaged_view_and_its_views_write_to_the_owner():
    a = np.zeros(6)
    n, r, c, s0, s1 = _write_through(a)
    assert (n, r, c, s0, s1) == (6, 2, 3, 24, 8)
    np.testing.assert_array_equal(a, [0.0, 7.0, 0.0, -1.0, 0.0, 9.0])


def test_a_local_owner_kept_alive_holds_what_its_unmanaged_view_wrote():
    n = 1000
    assert _local_owner(n) == float(sum(q * q for q in range(n)))


@njit(cache=True)
def _matrix_views(flat):
    A = matrix_view(flat, 2, 3, 4)        # flat[2:14] as 3×4
    A[1, 0] = -5.0                        # flat[6]
    B = matrix_view(flat, 14, 2, 3)
    C = np.empty((3, 3))
    np.dot(A[:, :2], B, C)               # a BLAS product on the views
    return A.shape[0], A.shape[1], A.strides[0], A.strides[1], A[2, 3], B[1, 2], C


def test_matrix_view_is_the_reshaped_slice():
    flat = np.arange(20.0)
    want = flat.copy()
    want[6] = -5.0
    r, c, s0, s1, a23, b12, C = _matrix_views(flat)
    np.testing.assert_array_equal(flat, want)
    assert (r, c, s0, s1, a23, b12) == (3, 4, 32, 8, 13.0, 19.0)
    A = want[2:14].reshape(3, 4)
    B = want[14:20].reshape(2, 3)
    np.testing.assert_allclose(C, A[:, :2] @ B, rtol=1e-15)
