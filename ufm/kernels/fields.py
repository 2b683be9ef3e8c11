"""Numba vector fields of the UFM family, in parameter space and in Gram space.

Pure functions on flat float64 arrays. They know nothing of models, files or plotting: the
driver (:mod:`ufm.solve`) packs a model into the integer/float arrays described below.

Rules for these kernels (docs/architecture.md):

1. Every function is module-level ``@njit(cache=True)`` and calls the others *by name*, so the
   on-disk cache is reused across process starts. No jitted function is passed as an argument.
   The model travels as one :class:`~ufm.kernels.groups.Model` and the outputs as one
   :class:`~ufm.kernels.groups.Outputs`, built only by :mod:`ufm.engine`.
2. One entry point, :func:`vector_field`, dispatches on small integer flags (space, loss, bias,
   coupling), so there is one compiled driver for every model variant.
3. Nothing allocates per call: intermediates live in a caller-provided ``work`` buffer of
   length :func:`work_size`.
4. Each function has a slow numpy twin in :mod:`ufm.reference` that the tests compare against.
5. numba's on-disk cache is keyed by the *defining* file only: a cached caller (e.g. the
   optimiser loop in ``optimizers.py``) keeps the old inlined copy of a function edited here.
   After editing a kernel, delete the caches (``find ufm -name '*.nb[ic]' -delete``; the test
   suite's conftest does it when a jitted source is newer than the caches); a fresh clone (CI)
   always compiles from source.

Packed model (:class:`~ufm.kernels.groups.Model`; its ``ip``, int64)::

    ip[IP_SPACE]  0 = parameters, 1 = Gram
    ip[IP_LOSS]   0 = cross-entropy (soft labels), 1 = MSE
    ip[IP_BIAS]   1 if the logits carry a bias b
    ip[IP_K], ip[IP_D], ip[IP_N]   sizes (d is ignored in Gram space)
    ip[IP_NTHETA] number of coupling pieces (0: Θ = I, the standard UFM)

Packed coefficients (``Model.coef``, float64): η_W, η_H, η_b, λ_W, λ_H, λ_b, λ_E.

Coupling: ``theta`` has shape (P, N, N) and ``theta_t`` (P,) the start time of each piece; the
piece in force at time t is the last one with ``theta_t[p] <= t`` (piece 0 always applies
before the others). A constant Θ is P = 1.

State layout:
    parameters: y = [vec(W) (K·d), vec(H) (d·N), b (K, if bias)], row-major.
    Gram:       y = [vec(M) (K·N), vec(G_W) (K·K), vec(G_H) (N·N), b (K, if bias)] with
                M = WH (logits without bias), G_W = WWᵀ, G_H = HᵀH.

Maths (G = ∂ℓ/∂Z, Z = M + b1ᵀ)::

    CE:  G = (softmax(Z) − Y) diag(π),   ℓ = −Σ_i π_i Σ_k Y_ki log softmax(z_i)_k
    MSE: G = (Z − Y) diag(π),            ℓ = ½ Σ_i π_i ‖z_i − y_i‖²

    dW/dt = −η_W (G Hᵀ + λ_W W)
    dH/dt = −η_H (Wᵀ G + λ_H H) Θ − η_H λ_E H
    db/dt = −η_b (G 1 + λ_b b)

    dM/dt   = −η_W (G G_H + λ_W M) − η_H (G_W G + λ_H M) Θ − η_H λ_E M
    dG_W/dt = −η_W (G Mᵀ + M Gᵀ + 2 λ_W G_W)
    dG_H/dt = −η_H [Θ (Gᵀ M + λ_H G_H) + (Mᵀ G + λ_H G_H) Θ] − 2 η_H λ_E G_H
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .expfn import exp_nonpositive, fast_exp  # noqa: F401  (exp_nonpositive: the older name, tests/test_models.py)
from .smallmm import decay_into, mm_rows, softmax_gradient, softmax_gradient_rows, transpose_into
from .unmanaged import matrix_view, unmanaged
from .reduced import reduced_field, reduced_objective, reduced_state_size, reduced_work_size
from .layout import (C_LAM_B, C_LAM_E, C_LAM_H, C_LAM_W, C_LR_B, C_LR_H, C_LR_W, C_SIZE, IP_BIAS,  # noqa: F401
                     IP_D, IP_K, IP_LOSS, IP_N, IP_NTHETA, IP_SIZE, IP_SPACE, LOSS_CE, LOSS_MSE, SPACE_GRAM,
                     SPACE_PARAMETERS, SPACE_REDUCED, SPACE_DEEP_PARAMETERS)


@njit(cache=True)
def state_size(model):
    """Length of the flat state vector of the packed ``model``."""
    ip = model.ip
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    nb = K if ip[IP_BIAS] else 0
    if ip[IP_SPACE] >= SPACE_DEEP_PARAMETERS:           # registration hook: ufm.kernels.deep
        return _deep.deep_state_size(model)
    if ip[IP_SPACE] == SPACE_PARAMETERS:
        return K * d + d * N + nb
    if ip[IP_SPACE] == SPACE_REDUCED:
        return reduced_state_size(ip, model.tab_i)
    return K * N + K * K + N * N + nb


@njit(cache=True)
def work_size(model):
    """Length of the scratch buffer :func:`vector_field` and :func:`record` need."""
    ip = model.ip
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    if ip[IP_SPACE] >= SPACE_DEEP_PARAMETERS:           # registration hook: ufm.kernels.deep
        return _deep.deep_work_size(model)
    if ip[IP_SPACE] == SPACE_PARAMETERS:
        return 2 * K * N + d * N + K * K + N * N + 2 * N
    if ip[IP_SPACE] == SPACE_REDUCED:
        return reduced_work_size(model.tab_i)
    return 4 * K * N + K * K + 2 * N * N + 2 * N


@njit(cache=True)
def theta_piece(theta_t, t):
    """Index of the coupling piece in force at time ``t``."""
    p = 0
    for q in range(1, theta_t.shape[0]):
        if t >= theta_t[q]:
            p = q
        else:
            break
    return p


@njit(cache=True)
def logit_gradient(Z, Y, pi, loss, G, colmax, colsum, want_loss=True):
    """Write G = ∂ℓ/∂Z into ``G`` (K×N) and return the data loss ℓ (0.0 when ``want_loss``
    is false: the vector field needs only G).

    The softmax of each column is computed with the column maximum subtracted, and
    log-softmax as z − (m + log Σ exp(z − m)), so large logits neither overflow nor lose the
    loss value. Every pass runs along rows (the contiguous direction of the row-major K×N
    arrays) with per-column maxima and sums in the length-N buffers ``colmax`` and ``colsum``,
    and has no branch and no scalar reduction, so LLVM vectorises it (with the branch-free
    :func:`~ufm.kernels.expfn.fast_exp`); the loss, a scalar sum, is a separate pass run only
    when asked for.
    """
    K = Z.shape[0]
    N = Z.shape[1]
    total = 0.0
    if loss == LOSS_CE:
        for i in range(N):
            colmax[i] = Z[0, i]
            colsum[i] = 0.0
        for k in range(1, K):
            for i in range(N):
                colmax[i] = max(colmax[i], Z[k, i])
        for k in range(K):
            for i in range(N):
                e = fast_exp(Z[k, i] - colmax[i])
                G[k, i] = e
                colsum[i] += e
        for i in range(N):
            colsum[i] = 1.0 / colsum[i]
        for k in range(K):
            for i in range(N):
                G[k, i] = (G[k, i] * colsum[i] - Y[k, i]) * pi[i]
        if want_loss:
            for i in range(N):
                colmax[i] -= np.log(colsum[i])       # colmax now holds log Σ_k exp(z_ki)
            for k in range(K):
                for i in range(N):
                    y = Y[k, i]
                    if y != 0.0:
                        total -= pi[i] * y * (Z[k, i] - colmax[i])
    else:
        for k in range(K):
            for i in range(N):
                G[k, i] = (Z[k, i] - Y[k, i]) * pi[i]
        if want_loss:
            for k in range(K):
                for i in range(N):
                    r = Z[k, i] - Y[k, i]
                    total += 0.5 * pi[i] * r * r
    return total


@njit(cache=True)
def field_logit_gradient(work, Y, pi, loss, K, N):
    """G = ∂ℓ/∂Z for the vector fields: Z is ``work[:K·N]`` and G goes to ``work[K·N:2·K·N]``
    (row-major K×N), the last 2N entries of ``work`` are scratch; no loss value (the fields need
    only G). Cross-entropy through the 8-lane kernels of :mod:`ufm.kernels.smallmm` (column
    blocks up to :data:`SMALL_SOFTMAX_MAX`, row passes above; :func:`logit_gradient`'s bits),
    MSE through :func:`logit_gradient`."""
    nZ = K * N
    nwork = work.shape[0]
    if loss == LOSS_CE and nZ <= SMALL_SOFTMAX_MAX:
        softmax_gradient(work[:nZ], Y, pi, work[nZ:2 * nZ], K, N)
    elif loss == LOSS_CE:
        softmax_gradient_rows(work[:nZ], Y, pi, work[nZ:2 * nZ], K, N, work[nwork - 2 * N:nwork - N], work[nwork - N:])
    else:
        logit_gradient(matrix_view(work, 0, K, N), Y, pi, loss, matrix_view(work, nZ, K, N),
                       work[nwork - 2 * N:nwork - N], work[nwork - N:], False)


#: the parameter-space field takes its three products through
#: :func:`ufm.kernels.smallmm.mm_rows` (explicit 8-wide vectors, no BLAS call overhead) when
#: K·d·N is at most this, and through BLAS above (measured: :func:`small_products`)
SMALL_PRODUCTS_MAX = 32 * 32 * 32
#: and its cross-entropy gradient through :func:`ufm.kernels.smallmm.softmax_gradient` (8-column
#: blocks, each through all three steps) when K·N is at most this, and through
#: :func:`ufm.kernels.smallmm.softmax_gradient_rows` (the same arithmetic in row passes) above:
#: the column blocks stride through Z and G, which stops paying near K = N = 48-64. Measured (CPU
#: time, the three alternately, µs, ``python -m benchmarks.small_field``'s softmax part, session 8,
#: load 5.7): K = N = 10: logit_gradient 0.35, blocks 0.18, rows 0.53; 20: 0.74, 0.44, 1.03;
#: 32: 1.64, 0.93, 1.03; 48: 3.34, 1.94, 1.99; 64: 6.64, 4.19, 4.31; 128: 24.8, 19.0, 15.9;
#: 512: 523, 1009, 399
SMALL_SOFTMAX_MAX = 32 * 32


@njit(cache=True)
def small_products(K, d, N):
    """Whether the parameter-space field computes its products with
    :func:`ufm.kernels.smallmm.mm_rows` (True) rather than BLAS (``np.dot``) at these sizes.

    Measured: one CE field evaluation (K = N, λ = 1e-3, init scale 0.3), best of 3 loops, CPU
    time, the BLAS build (threshold 0) and the vector build alternately in subprocesses, range
    over three rounds, µs (``python -m benchmarks.small_field``, session 6)::

        K×d     10×16      10×64      16×32      20×20      24×24      32×32      40×48      64×64
        BLAS    0.99-1.09  2.18-2.30  2.14-2.26  2.47-2.70  3.36-3.56  6.05-6.43  12.3-13.6  35.3-39.2
        vector  0.82-0.89  1.93-2.06  1.73-1.92  2.11-2.37  2.74-3.18  5.76-5.89  11.4-12.4  34.0-37.3

    (an earlier round-robin of the same kind: 40×48 won 2 of 3, 64×64 tied), so the threshold
    stays at 32³, below the sizes where the two are within the machine's noise."""
    return K * d * N <= SMALL_PRODUCTS_MAX


@njit(cache=True)
def _parameter_field(p, y, dy, ip, coef, Y, pi, theta, work):
    # The weight-decay terms run as flat 8-lane passes over the 1-D state slices
    # (ufm.kernels.smallmm.decay_into), and without coupling the product WᵀG is written
    # straight into dH (no copy through the scratch T). At small sizes the products and the
    # decay terms are one pass each (ufm.kernels.smallmm.mm_rows, the decay in its epilogue).
    # The cross-entropy gradient is one 8-lane kernel (no loss: the field needs only G), in
    # column blocks up to SMALL_SOFTMAX_MAX and in row passes above.
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    nW = K * d
    nH = d * N
    nZ = K * N
    small = small_products(K, d, N)
    # matrix views without reshape's layout check or reference counts (ufm.kernels.unmanaged;
    # the arguments outlive this call)
    W = matrix_view(y, 0, K, d)
    H = matrix_view(y, nW, d, N)
    Z = matrix_view(work, 0, K, N)
    G = matrix_view(work, nZ, K, N)
    if small:
        mm_rows(y, 0, d, 1, y, nW, N, work, 0, N, K, d, N, 1.0, work, 0, N, 0.0, False)
    else:
        np.dot(W, H, Z)
    if ip[IP_BIAS]:
        b = y[nW + nH:]
        for k in range(K):
            bk = b[k]
            for i in range(N):
                Z[k, i] += bk
    field_logit_gradient(work, Y, pi, ip[IP_LOSS], K, N)

    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lam_w = coef[C_LAM_W]
    lam_h = coef[C_LAM_H]
    lam_e = coef[C_LAM_E]
    coupled = ip[IP_NTHETA] > 0
    if small:
        # dW = −η_W (G Hᵀ + λ_W W) with Hᵀ copied into the scratch T (rows contiguous for the
        # vector loads); then WᵀG (A = Wᵀ by strides, no copy): straight into dH without
        # coupling, into T (+ λ_H H) with it
        t0 = 2 * nZ
        transpose_into(y, nW, d, N, work, t0)
        mm_rows(work, nZ, N, 1, work, t0, d, dy, 0, d, K, N, d, -lr_w, y, 0, d, lam_w, True)
        if coupled:
            mm_rows(y, 0, 1, d, work, nZ, N, work, t0, N, d, K, N, 1.0, y, nW, N, lam_h, True)
        else:
            mm_rows(y, 0, 1, d, work, nZ, N, dy, nW, N, d, K, N, -lr_h, y, nW, N, lam_h + lam_e, True)
    else:
        np.dot(G, H.T, matrix_view(dy, 0, K, d))
        decay_into(dy, 0, y, 0, nW, -lr_w, lam_w, 0.0)
        if coupled:
            np.dot(W.T, G, matrix_view(work, 2 * nZ, d, N))
            decay_into(work, 2 * nZ, y, nW, nH, 1.0, lam_h, 0.0)
        else:
            np.dot(W.T, G, matrix_view(dy, nW, d, N))
            decay_into(dy, nW, y, nW, nH, -lr_h, lam_h, lam_e)
    if coupled:
        np.dot(matrix_view(work, 2 * nZ, d, N), theta[p], matrix_view(dy, nW, d, N))
        decay_into(dy, nW, y, nW, nH, -lr_h, lam_e, 0.0)

    if ip[IP_BIAS]:
        _bias_field(G, y[nW + nH:], dy[nW + nH:], coef)


@njit(cache=True)
def _bias_field(G, b, db, coef):
    K = G.shape[0]
    N = G.shape[1]
    for k in range(K):
        s = 0.0
        for i in range(N):
            s += G[k, i]
        db[k] = -coef[C_LR_B] * (s + coef[C_LAM_B] * b[k])


@njit(cache=True)
def _gram_field(p, y, dy, ip, coef, Y, pi, theta, work):
    K = ip[IP_K]
    N = ip[IP_N]
    nM = K * N
    nGW = K * K
    nGH = N * N
    M = y[:nM].reshape(K, N)
    GW = y[nM:nM + nGW].reshape(K, K)
    GH = y[nM + nGW:nM + nGW + nGH].reshape(N, N)
    Z = work[:nM].reshape(K, N)
    G = work[nM:2 * nM].reshape(K, N)
    T1 = work[2 * nM:3 * nM].reshape(K, N)
    T2 = work[3 * nM:4 * nM].reshape(K, N)
    S = work[4 * nM:4 * nM + nGW].reshape(K, K)
    U = work[4 * nM + nGW:4 * nM + nGW + nGH].reshape(N, N)
    V = work[4 * nM + nGW + nGH:4 * nM + nGW + 2 * nGH].reshape(N, N)
    Z[:, :] = M
    if ip[IP_BIAS]:
        b = y[nM + nGW + nGH:]
        for k in range(K):
            for i in range(N):
                Z[k, i] += b[k]
    field_logit_gradient(work, Y, pi, ip[IP_LOSS], K, N)

    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lam_w = coef[C_LAM_W]
    lam_h = coef[C_LAM_H]
    lam_e = coef[C_LAM_E]
    coupled = ip[IP_NTHETA] > 0

    # dM = −η_W (G G_H + λ_W M) − η_H (G_W G + λ_H M) Θ − η_H λ_E M
    np.dot(G, GH, T1)
    np.dot(GW, G, T2)
    for k in range(K):
        for i in range(N):
            T2[k, i] += lam_h * M[k, i]
    dM = dy[:nM].reshape(K, N)
    if coupled:
        np.dot(T2, theta[p], dM)
    else:
        dM[:, :] = T2
    for k in range(K):
        for i in range(N):
            dM[k, i] = -lr_w * (T1[k, i] + lam_w * M[k, i]) - lr_h * (dM[k, i] + lam_e * M[k, i])

    # dG_W = −η_W (S + Sᵀ + 2 λ_W G_W), S = G Mᵀ
    np.dot(G, M.T, S)
    dGW = dy[nM:nM + nGW].reshape(K, K)
    for k in range(K):
        for l in range(K):
            dGW[k, l] = -lr_w * (S[k, l] + S[l, k] + 2.0 * lam_w * GW[k, l])

    # dG_H = −η_H (V + Vᵀ) − 2 η_H λ_E G_H, V = (Mᵀ G + λ_H G_H) Θ  (Θ(GᵀM + λ_H G_H) = Vᵀ)
    np.dot(M.T, G, U)
    for i in range(N):
        for j in range(N):
            U[i, j] += lam_h * GH[i, j]
    if coupled:
        np.dot(U, theta[p], V)
    else:
        V[:, :] = U
    dGH = dy[nM + nGW:nM + nGW + nGH].reshape(N, N)
    for i in range(N):
        for j in range(N):
            dGH[i, j] = -lr_h * (V[i, j] + V[j, i] + 2.0 * lam_e * GH[i, j])

    if ip[IP_BIAS]:
        b = y[nM + nGW + nGH:]
        db = dy[nM + nGW + nGH:]
        _bias_field(G, b, db, coef)


@njit(cache=True)
def vector_field(p, y, dy, model, work):
    """Write dy/dt at state ``y`` into ``dy`` for the packed ``model`` (a
    :class:`~ufm.kernels.groups.Model`, maths in the module docstring), with coupling piece
    ``p`` in force (see :func:`theta_piece`; ignored without coupling).

    The field runs on views without reference counts (:func:`~ufm.kernels.unmanaged.unmanaged`;
    the caller owns the arrays for the whole call), so that none of the kernels it calls counts
    references to its arguments. Measured at K = N = 10, d = 16 (CPU time, a loop of calls,
    a scratch script, session 8): 0.89 µs per evaluation with the managed arrays, 0.76 µs
    without (the driver's step loop already unpacks unmanaged views and calls
    :func:`field_of_parts`)."""
    field_of_parts(p, unmanaged(y), unmanaged(dy), unmanaged(model.ip), unmanaged(model.coef), unmanaged(model.Y),
                   unmanaged(model.pi), unmanaged(model.theta), unmanaged(model.tab_i), unmanaged(model.tab_f),
                   unmanaged(work))


@njit(cache=True)
def field_of_parts(p, y, dy, ip, coef, Y, pi, theta, tab_i, tab_f, work):
    """:func:`vector_field` on the fields of a :class:`~ufm.kernels.groups.Model` that the
    field reads, for loops that call it many times.

    Why it exists: handing the whole Model to a jitted function costs every call the
    marshalling and reference counting of all nine of its arrays; measured at K = N = 10,
    d = 16 (CE, parameter space), a loop calling :func:`vector_field` costs 1.089x one that
    reads the fields once before the loop and calls this (2.16 vs 1.99 µs per evaluation,
    CPU time, a scratch script, not kept). The driver's step loop unpacks once and calls this.
    """
    space = ip[IP_SPACE]
    if space == SPACE_PARAMETERS:
        _parameter_field(p, y, dy, ip, coef, Y, pi, theta, work)
    elif space == SPACE_GRAM:
        _gram_field(p, y, dy, ip, coef, Y, pi, theta, work)
    elif space >= SPACE_DEEP_PARAMETERS:                # registration hook: ufm.kernels.deep
        _deep.deep_field(y, dy, ip, coef, Y, pi, work)
    else:
        reduced_field(y, dy, ip, coef, tab_i, tab_f, work)


@njit(cache=True)
def record(j, t, y, model, out, work):
    """Store the derived quantities of state ``y`` at save index ``j`` in ``out`` (an
    :class:`~ufm.kernels.groups.Outputs`).

    Always: the objective (``out.loss``) and the data loss ℓ (``out.data``). Optionally, per
    ``out.flags`` [state, gram_W, gram_H, logits]: the flat state, G_W (K×K), G_H (N×N) and
    Z (K×N). The objective is

        ℓ + λ_W/2 tr G_W + λ_H/2 tr G_H + λ_b/2 ‖b‖² + λ_E/2 tr(Θ⁺ G_H),

    a Lyapunov function of the flow whenever Θ is positive definite (Θ⁺ = I without coupling).
    """
    ip = model.ip
    coef = model.coef
    if ip[IP_SPACE] >= SPACE_DEEP_PARAMETERS:           # registration hook: ufm.kernels.deep
        _deep.deep_record(j, y, model, out, work)
        return
    if ip[IP_SPACE] == SPACE_REDUCED:
        # the Grams are expanded from the saved coefficients by the Python driver
        out.loss[j], out.data[j] = reduced_objective(y, ip, coef, model.tab_i, model.tab_f, work)
        if out.flags[0]:
            out.state[j, :] = y
        return
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    Z = work[:K * N].reshape(K, N)
    G = work[K * N:2 * K * N].reshape(K, N)
    GWbuf = work[2 * K * N:2 * K * N + K * K].reshape(K, K)
    GHbuf = work[2 * K * N + K * K:2 * K * N + K * K + N * N].reshape(N, N)
    flags = out.flags
    need_gh = flags[2] or (coef[C_LAM_E] != 0.0 and ip[IP_NTHETA] > 0)
    tr_w = 0.0
    tr_h = 0.0
    if ip[IP_SPACE] == SPACE_PARAMETERS:
        W = y[:K * d].reshape(K, d)
        H = y[K * d:K * d + d * N].reshape(d, N)
        np.dot(W, H, Z)
        # a Gram is formed only when it is saved or Θ⁺ needs it; the objective's traces are the
        # squared norms, O(Kd) instead of the O(K²d) product (at K = N = 512, d = 256 the two
        # products cost ~3 ms a save, a third of record's time)
        if flags[1]:
            np.dot(W, W.T, GWbuf)
        if need_gh:
            np.dot(H.T, H, GHbuf)
        for q in range(K * d):
            tr_w += y[q] * y[q]
        for q in range(K * d, K * d + d * N):
            tr_h += y[q] * y[q]
        off_b = K * d + d * N
    else:
        Z[:, :] = y[:K * N].reshape(K, N)
        GWbuf[:, :] = y[K * N:K * N + K * K].reshape(K, K)
        GHbuf[:, :] = y[K * N + K * K:K * N + K * K + N * N].reshape(N, N)
        for k in range(K):
            tr_w += GWbuf[k, k]
        for i in range(N):
            tr_h += GHbuf[i, i]
        off_b = K * N + K * K + N * N
    reg_b = 0.0
    if ip[IP_BIAS]:
        for k in range(K):
            bk = y[off_b + k]
            reg_b += bk * bk
            for i in range(N):
                Z[k, i] += bk
    nwork = work.shape[0]
    data = logit_gradient(Z, model.Y, model.pi, ip[IP_LOSS], G, work[nwork - 2 * N:nwork - N], work[nwork - N:])
    reg_e = 0.0
    if coef[C_LAM_E] != 0.0:
        if ip[IP_NTHETA] > 0:
            p = theta_piece(model.theta_t, t)
            for i in range(N):
                for l in range(N):
                    reg_e += model.theta_pinv[p, i, l] * GHbuf[l, i]
        else:
            reg_e = tr_h
    out.data[j] = data
    out.loss[j] = (data + 0.5 * coef[C_LAM_W] * tr_w + 0.5 * coef[C_LAM_H] * tr_h
                   + 0.5 * coef[C_LAM_B] * reg_b + 0.5 * coef[C_LAM_E] * reg_e)
    if flags[0]:
        out.state[j, :] = y
    if flags[1]:
        out.gram_W[j] = GWbuf
    if flags[2]:
        out.gram_H[j] = GHbuf
    if flags[3]:
        out.logits[j] = Z


# registration hook, imported last: ufm.kernels.deep uses logit_gradient and _bias_field above
from . import deep as _deep  # noqa: E402
