"""Forward-mode derivatives of the UFM vector fields: Jacobian-vector products, dense Jacobians,
and the second derivatives and parameter derivatives the forward sensitivities need.

The fields of :mod:`ufm.kernels.fields` have one shape in every space: a bilinear map of the
logit gradient G = ∂ℓ/∂Z and the state, a term in G alone (the bias), and a linear decay::

    f(y) = B(G(Z(y)), y) + B_G(G(Z(y))) + L y.

So the tangent in a direction v is, with G' the derivative of the logit gradient,

    J v = B(G'[Z' v], y) + B(G, v) + B_G(G'[Z' v]) + L v     (+ B(G, ·) terms of Z'' in
                                                              parameter space, Z = WH + b1ᵀ)

and, in Gram space (Z = M + b1ᵀ is linear), the second derivative is

    f''[u, v] = B(G''[Z u, Z v], y) + B(G'[Z u], v) + B(G'[Z v], u) + B_G(G''[Z u, Z v]).

Logit gradient and its derivatives, column by column (σ = softmax(z_i), π_i the weight)::

    CE:  G = π (σ − Y),  G'[a] = π σ ⊙ (a − ⟨σ, a⟩),  G''[a, c] = π σ ⊙ (ã ⊙ c̃ − ⟨σ, ã ⊙ c̃⟩)
         with ã = a − ⟨σ, a⟩, c̃ = c − ⟨σ, c⟩
    MSE: G = π (Z − Y),  G'[a] = π a,                 G'' = 0

The bilinear parts (``B``) and linear parts (``L``) in each space (Θ the coupling piece)::

    Gram:        B_M = −η_W G G_H − η_H (G_W G) Θ        L_M = −η_W λ_W M − η_H λ_H M Θ − η_H λ_E M
                 B_GW = −η_W (G Mᵀ + M Gᵀ)              L_GW = −2 η_W λ_W G_W
                 B_GH = −η_H (Θ Gᵀ M + Mᵀ G Θ)          L_GH = −η_H λ_H (G_H Θ + Θ G_Hᵀ) − 2 η_H λ_E G_H
    parameters:  B_W = −η_W G Hᵀ, B_H = −η_H (Wᵀ G) Θ    L_W = −η_W λ_W W, L_H = −η_H λ_H H Θ − η_H λ_E H
    both:        B_G,b = −η_b G 1                        L_b = −η_b λ_b b

(The kernel field symmetrises the λ_H term of G_H as written here: off the symmetric manifold
the derivative must match the field the integrators actually evaluate.)

Every coefficient of the field enters multi-affinely (each monomial holds one rate η and at
most one decay λ, and Θ at most once), which :func:`param_field` uses for ∂f/∂θ: the
derivative along a rate is the field with that rate set to 1 and the others to 0, exactly.

The kernel rules of :mod:`ufm.kernels.fields` hold: module-level ``@njit(cache=True)``, called
by name, nothing raised, no allocation per call (scratch in ``work`` of length
:func:`tangent_work_size`), except the dense Jacobians, which allocate their per-column blocks
(O(N (K + d)²) numbers, small beside the n² Jacobian they fill). The numpy twins are in
:mod:`ufm.reference_tangent`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from .expfn import exp_nonpositive
from .fields import work_size
from .layout import (C_LAM_B, C_LAM_E, C_LAM_H, C_LAM_W, C_LR_B, C_LR_H, C_LR_W, C_SIZE, IP_BIAS, IP_D, IP_K,
                     IP_LOSS, IP_N, IP_NTHETA, IP_SPACE, LOSS_CE, SPACE_GRAM, SPACE_PARAMETERS)
from .reduced import (TF_WEIGHT, TI_COUPLED, TI_LABEL, TI_NB, TI_NC, TI_NNZ_BILINEAR, TI_NNZ_LINEAR, TI_NR,
                      TI_OFF_BILINEAR, TI_OFF_BVAL, TI_OFF_COLV, TI_OFF_LINEAR, TI_OFF_LVAL, TI_OFF_ROWV,
                      reduced_work_size)

# Sensitivity parameter codes (ufm.sensitivities maps names to them).
PARAM_LR_W = 0
PARAM_LR_H = 1
PARAM_LR_B = 2
PARAM_LAM_W = 3
PARAM_LAM_H = 4
PARAM_LAM_B = 5
PARAM_LAM_E = 6
PARAM_TIME_SCALE = 7      # all rates scaled together: ∂f/∂s = f at s = 1
PARAM_INIT_SCALE = 8      # enters through the start only: ∂f/∂θ = 0
PARAM_COUPLING = 9        # Θ → Θ + β D: ∂f/∂β = the Θ-terms of f with Θ replaced by D


@njit(cache=True)
def tangent_work_size(model):
    """Length of the scratch buffer the functions of this module need."""
    ip = model.ip
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    if ip[IP_SPACE] == SPACE_PARAMETERS:
        return 9 * K * N + 2 * K * d + 2 * d * N + 2 * N + work_size(model)
    if ip[IP_SPACE] == SPACE_GRAM:
        return 9 * K * N + 2 * K * K + 3 * N * N + 2 * N + work_size(model)
    return 2 * reduced_work_size(model.tab_i) + model.tab_i[TI_NB]   # σ, primal and tangent buffers


# --------------------------------------------------------------------------------------------
# the logit gradient and its derivatives (K×N, column-wise)
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def _softmax_and_gradient(Z, Y, pi, loss, P, G):
    """P = softmax of each column of Z (CE; untouched for MSE) and G = ∂ℓ/∂Z."""
    K = Z.shape[0]
    N = Z.shape[1]
    if loss == LOSS_CE:
        for i in range(N):
            m = Z[0, i]
            for k in range(1, K):
                if Z[k, i] > m:
                    m = Z[k, i]
            s = 0.0
            for k in range(K):
                e = exp_nonpositive(Z[k, i] - m)
                P[k, i] = e
                s += e
            inv = 1.0 / s
            for k in range(K):
                P[k, i] *= inv
                G[k, i] = (P[k, i] - Y[k, i]) * pi[i]
    else:
        for k in range(K):
            for i in range(N):
                G[k, i] = (Z[k, i] - Y[k, i]) * pi[i]


@njit(cache=True)
def _gradient_tangent(P, pi, loss, A, dG):
    """dG = G'[A] (module docstring)."""
    K = A.shape[0]
    N = A.shape[1]
    if loss == LOSS_CE:
        for i in range(N):
            mean = 0.0
            for k in range(K):
                mean += P[k, i] * A[k, i]
            for k in range(K):
                dG[k, i] = pi[i] * P[k, i] * (A[k, i] - mean)
    else:
        for k in range(K):
            for i in range(N):
                dG[k, i] = pi[i] * A[k, i]


@njit(cache=True)
def _gradient_second(P, pi, loss, A, C, d2G):
    """d2G = G''[A, C] (module docstring); zero for MSE."""
    K = A.shape[0]
    N = A.shape[1]
    if loss != LOSS_CE:
        d2G[:, :] = 0.0
        return
    for i in range(N):
        ma = 0.0
        mc = 0.0
        for k in range(K):
            ma += P[k, i] * A[k, i]
            mc += P[k, i] * C[k, i]
        mp = 0.0
        for k in range(K):
            q = (A[k, i] - ma) * (C[k, i] - mc)
            d2G[k, i] = q
            mp += P[k, i] * q
        for k in range(K):
            d2G[k, i] = pi[i] * P[k, i] * (d2G[k, i] - mp)


# --------------------------------------------------------------------------------------------
# Gram space
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def _gram_views(x, K, N):
    nM = K * N
    return (x[:nM].reshape(K, N), x[nM:nM + K * K].reshape(K, K),
            x[nM + K * K:nM + K * K + N * N].reshape(N, N))


@njit(cache=True)
def _gram_bilinear(G, y, out, K, N, bias, coupled, theta, lr_w, lr_h, lr_b, with_bias, T, S, U, V):
    """out += B(G, y) (+ B_G(G) when ``with_bias``), module docstring; T (K×N), S (K×K),
    U, V (N×N) scratch. A zero rate skips its terms."""
    M, GW, GH = _gram_views(y, K, N)
    oM, oGW, oGH = _gram_views(out, K, N)
    if lr_w != 0.0:
        np.dot(G, GH, T)
        for k in range(K):
            for i in range(N):
                oM[k, i] -= lr_w * T[k, i]
        np.dot(G, M.T, S)
        for k in range(K):
            for l in range(K):
                oGW[k, l] -= lr_w * (S[k, l] + S[l, k])
    if lr_h != 0.0:
        np.dot(GW, G, T)
        if coupled:
            for k in range(K):
                for i in range(N):
                    s = 0.0
                    for j in range(N):
                        s += T[k, j] * theta[j, i]
                    oM[k, i] -= lr_h * s
        else:
            for k in range(K):
                for i in range(N):
                    oM[k, i] -= lr_h * T[k, i]
        np.dot(M.T, G, U)
        if coupled:
            np.dot(U, theta, V)
        else:
            V[:, :] = U
        for i in range(N):
            for j in range(N):
                oGH[i, j] -= lr_h * (V[i, j] + V[j, i])
    if bias and with_bias and lr_b != 0.0:
        ob = out[K * N + K * K + N * N:]
        for k in range(K):
            s = 0.0
            for i in range(N):
                s += G[k, i]
            ob[k] -= lr_b * s


@njit(cache=True)
def _gram_linear(y, out, K, N, bias, coupled, theta, coef, V):
    """out += L y (module docstring), with the rates and decays of ``coef``; V (N×N) scratch."""
    M, GW, GH = _gram_views(y, K, N)
    oM, oGW, oGH = _gram_views(out, K, N)
    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lam_w = coef[C_LAM_W]
    lam_h = coef[C_LAM_H]
    lam_e = coef[C_LAM_E]
    cw = lr_w * lam_w
    ch = lr_h * lam_h
    ce = lr_h * lam_e
    for k in range(K):
        for i in range(N):
            oM[k, i] -= (cw + ce) * M[k, i]
    if ch != 0.0:
        if coupled:
            for k in range(K):
                for i in range(N):
                    s = 0.0
                    for j in range(N):
                        s += M[k, j] * theta[j, i]
                    oM[k, i] -= ch * s
            np.dot(GH, theta, V)
            for i in range(N):
                for j in range(N):
                    oGH[i, j] -= ch * (V[i, j] + V[j, i])
        else:
            for k in range(K):
                for i in range(N):
                    oM[k, i] -= ch * M[k, i]
            for i in range(N):
                for j in range(N):
                    oGH[i, j] -= ch * (GH[i, j] + GH[j, i])
    for k in range(K):
        for l in range(K):
            oGW[k, l] -= 2.0 * cw * GW[k, l]
    for i in range(N):
        for j in range(N):
            oGH[i, j] -= 2.0 * ce * GH[i, j]
    if bias:
        b = y[K * N + K * K + N * N:]
        ob = out[K * N + K * K + N * N:]
        for k in range(K):
            ob[k] -= coef[C_LR_B] * coef[C_LAM_B] * b[k]


@njit(cache=True)
def _gram_logits(y, Z, K, N, bias):
    """Z = M + b1ᵀ of a Gram-space state (or of a tangent: the map is linear)."""
    nM = K * N
    for k in range(K):
        bk = y[nM + K * K + N * N + k] if bias else 0.0
        for i in range(N):
            Z[k, i] = y[k * N + i] + bk


@njit(cache=True)
def _gram_buffers(work, K, N):
    nM = K * N
    o = 0
    Z = work[o:o + nM].reshape(K, N)
    o += nM
    P = work[o:o + nM].reshape(K, N)
    o += nM
    G = work[o:o + nM].reshape(K, N)
    o += nM
    A = work[o:o + nM].reshape(K, N)
    o += nM
    dG = work[o:o + nM].reshape(K, N)
    o += nM
    C = work[o:o + nM].reshape(K, N)
    o += nM
    d2G = work[o:o + nM].reshape(K, N)
    o += nM
    dG2 = work[o:o + nM].reshape(K, N)
    o += nM
    T = work[o:o + nM].reshape(K, N)
    o += nM
    S = work[o:o + K * K].reshape(K, K)
    o += 2 * K * K
    U = work[o:o + N * N].reshape(N, N)
    o += N * N
    V = work[o:o + N * N].reshape(N, N)
    return Z, P, G, A, dG, C, d2G, dG2, T, S, U, V


@njit(cache=True)
def _gram_prepare(y, model, work):
    """Z, softmax P and G of the state ``y`` into the work buffers."""
    K = model.ip[IP_K]
    N = model.ip[IP_N]
    Z, P, G, A, dG, C, d2G, dG2, T, S, U, V = _gram_buffers(work, K, N)
    _gram_logits(y, Z, K, N, model.ip[IP_BIAS])
    _softmax_and_gradient(Z, model.Y, model.pi, model.ip[IP_LOSS], P, G)


@njit(cache=True)
def _gram_jvp_prepared(p, y, v, out, model, work):
    """out = J(y) v once :func:`_gram_prepare` has run for ``y``."""
    ip = model.ip
    coef = model.coef
    K = ip[IP_K]
    N = ip[IP_N]
    bias = ip[IP_BIAS]
    coupled = ip[IP_NTHETA] > 0
    theta = model.theta[p]
    Z, P, G, A, dG, C, d2G, dG2, T, S, U, V = _gram_buffers(work, K, N)
    _gram_logits(v, A, K, N, bias)
    _gradient_tangent(P, model.pi, ip[IP_LOSS], A, dG)
    out[:] = 0.0
    _gram_bilinear(dG, y, out, K, N, bias, coupled, theta, coef[C_LR_W], coef[C_LR_H], coef[C_LR_B], True,
                   T, S, U, V)
    _gram_bilinear(G, v, out, K, N, bias, coupled, theta, coef[C_LR_W], coef[C_LR_H], coef[C_LR_B], False,
                   T, S, U, V)
    _gram_linear(v, out, K, N, bias, coupled, theta, coef, V)


@njit(cache=True)
def gram_second(p, y, u, v, out, model, work):
    """out = f''(y)[u, v] in Gram space (module docstring); ``_gram_prepare`` must have run."""
    ip = model.ip
    coef = model.coef
    K = ip[IP_K]
    N = ip[IP_N]
    bias = ip[IP_BIAS]
    coupled = ip[IP_NTHETA] > 0
    theta = model.theta[p]
    Z, P, G, A, dG, C, d2G, dG2, T, S, U, V = _gram_buffers(work, K, N)
    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lr_b = coef[C_LR_B]
    _gram_logits(u, A, K, N, bias)
    _gram_logits(v, C, K, N, bias)
    loss = ip[IP_LOSS]
    _gradient_tangent(P, model.pi, loss, A, dG)
    _gradient_tangent(P, model.pi, loss, C, dG2)
    _gradient_second(P, model.pi, loss, A, C, d2G)
    out[:] = 0.0
    _gram_bilinear(d2G, y, out, K, N, bias, coupled, theta, lr_w, lr_h, lr_b, True, T, S, U, V)
    _gram_bilinear(dG, v, out, K, N, bias, coupled, theta, lr_w, lr_h, lr_b, False, T, S, U, V)
    _gram_bilinear(dG2, u, out, K, N, bias, coupled, theta, lr_w, lr_h, lr_b, False, T, S, U, V)


# --------------------------------------------------------------------------------------------
# parameter space
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def _param_buffers(work, K, d, N):
    nZ = K * N
    o = 0
    Z = work[o:o + nZ].reshape(K, N)
    o += nZ
    P = work[o:o + nZ].reshape(K, N)
    o += nZ
    G = work[o:o + nZ].reshape(K, N)
    o += nZ
    A = work[o:o + nZ].reshape(K, N)
    o += nZ
    dG = work[o:o + nZ].reshape(K, N)
    o += nZ
    TKN = work[o:o + nZ].reshape(K, N)
    o += nZ
    TW = work[o:o + K * d].reshape(K, d)
    o += 2 * K * d
    TH = work[o:o + d * N].reshape(d, N)
    o += d * N
    TH2 = work[o:o + d * N].reshape(d, N)
    return Z, P, G, A, dG, TKN, TW, TH, TH2


@njit(cache=True)
def _param_prepare(y, model, work):
    ip = model.ip
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    Z, P, G, A, dG, TKN, TW, TH, TH2 = _param_buffers(work, K, d, N)
    W = y[:K * d].reshape(K, d)
    H = y[K * d:K * d + d * N].reshape(d, N)
    np.dot(W, H, Z)
    if ip[IP_BIAS]:
        b = y[K * d + d * N:]
        for k in range(K):
            for i in range(N):
                Z[k, i] += b[k]
    _softmax_and_gradient(Z, model.Y, model.pi, ip[IP_LOSS], P, G)


@njit(cache=True)
def _param_jvp_prepared(p, y, v, out, model, work):
    """out = J(y) v in parameter space once :func:`_param_prepare` has run for ``y``."""
    ip = model.ip
    coef = model.coef
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    nW = K * d
    nH = d * N
    Z, P, G, A, dG, TKN, TW, TH, TH2 = _param_buffers(work, K, d, N)
    W = y[:nW].reshape(K, d)
    H = y[nW:nW + nH].reshape(d, N)
    dW = v[:nW].reshape(K, d)
    dH = v[nW:nW + nH].reshape(d, N)
    # A = dZ = dW H + W dH + db 1ᵀ
    np.dot(dW, H, A)
    np.dot(W, dH, TKN)
    for k in range(K):
        db = v[nW + nH + k] if ip[IP_BIAS] else 0.0
        for i in range(N):
            A[k, i] += TKN[k, i] + db
    _gradient_tangent(P, model.pi, ip[IP_LOSS], A, dG)
    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lam_w = coef[C_LAM_W]
    lam_h = coef[C_LAM_H]
    lam_e = coef[C_LAM_E]
    # dW' = −η_W (dG Hᵀ + G dHᵀ + λ_W dW)
    oW = out[:nW].reshape(K, d)
    np.dot(dG, H.T, oW)
    np.dot(G, dH.T, TW)
    for k in range(K):
        for j in range(d):
            oW[k, j] = -lr_w * (oW[k, j] + TW[k, j] + lam_w * dW[k, j])
    # dH' = −η_H (dWᵀ G + Wᵀ dG + λ_H dH) Θ − η_H λ_E dH
    np.dot(dW.T, G, TH)
    np.dot(W.T, dG, TH2)
    for j in range(d):
        for i in range(N):
            TH[j, i] += TH2[j, i] + lam_h * dH[j, i]
    oH = out[nW:nW + nH].reshape(d, N)
    if ip[IP_NTHETA] > 0:
        np.dot(TH, model.theta[p], oH)
    else:
        oH[:, :] = TH
    for j in range(d):
        for i in range(N):
            oH[j, i] = -lr_h * (oH[j, i] + lam_e * dH[j, i])
    if ip[IP_BIAS]:
        for k in range(K):
            s = 0.0
            for i in range(N):
                s += dG[k, i]
            out[nW + nH + k] = -coef[C_LR_B] * (s + coef[C_LAM_B] * v[nW + nH + k])


# --------------------------------------------------------------------------------------------
# reduced space
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def _reduced_prepare(y, model, work):
    """Softmax coefficients σ_a = e^{z_a} / Σ_c v_c e^{z_c} into work[0:nB] (CE)."""
    tab_i = model.tab_i
    tab_f = model.tab_f
    nB = tab_i[TI_NB]
    if model.ip[IP_LOSS] != LOSS_CE:
        return
    ov = tab_i[TI_OFF_COLV]
    zmax = y[0]
    for a in range(1, nB):
        if y[a] > zmax:
            zmax = y[a]
    s = 0.0
    for a in range(nB):
        e = exp_nonpositive(y[a] - zmax)
        work[a] = e
        s += tab_f[ov + a] * e
    for a in range(nB):
        work[a] /= s


@njit(cache=True)
def _reduced_jvp_prepared(y, v, out, model, work):
    """out = J(y) v in reduced space (the tangent of ``reduced.reduced_field``, entry by entry:
    every bilinear entry work[k] += c·work[i]·work[j] has the tangent
    dwork[k] += c·(dwork[i]·work[j] + work[i]·dwork[j]))."""
    ip = model.ip
    coef = model.coef
    tab_i = model.tab_i
    tab_f = model.tab_f
    nB = tab_i[TI_NB]
    nC = tab_i[TI_NC]
    nR = tab_i[TI_NR]
    n = nB + nC + nR
    size = reduced_work_size(tab_i)
    sig = work[:nB]
    x = work[nB:nB + size]          # the primal work buffer of reduced_field
    dx = work[nB + size:nB + 2 * size]
    og = n
    o1 = og + nB
    o2 = o1 + nB
    oS = o2 + nB
    oU = oS + nC
    o3 = oU + nR
    oV = o3 + nB
    ow = nB
    oh = nB + nC
    pi = tab_f[TF_WEIGHT]
    label = tab_i[TI_LABEL]
    bias = ip[IP_BIAS]
    for i in range(n):
        x[i] = y[i]
        dx[i] = v[i]
    db = v[n] if bias else 0.0
    b = y[n] if bias else 0.0
    ov = tab_i[TI_OFF_COLV]
    if ip[IP_LOSS] == LOSS_CE:
        mean = 0.0
        for a in range(nB):
            mean += tab_f[ov + a] * sig[a] * v[a]
        for a in range(nB):
            x[og + a] = pi * (sig[a] - (1.0 if a == label else 0.0))
            dx[og + a] = pi * sig[a] * (v[a] - mean)        # the uniform bias cancels
    else:
        for a in range(nB):
            x[og + a] = pi * (y[a] + b - (1.0 if a == label else 0.0))
            dx[og + a] = pi * (v[a] + db)
    for i in range(o1, size):
        dx[i] = 0.0
    nb = tab_i[TI_NNZ_BILINEAR]
    b_idx = tab_i[tab_i[TI_OFF_BILINEAR]:tab_i[TI_OFF_BILINEAR] + 3 * nb]
    b_val = tab_f[tab_i[TI_OFF_BVAL]:tab_i[TI_OFF_BVAL] + nb]
    ii = 0
    for e in range(b_val.shape[0]):
        i = uint64(b_idx[ii])
        j = uint64(b_idx[ii + 1])
        k = uint64(b_idx[ii + 2])
        dx[k] += b_val[e] * (dx[i] * x[j] + x[i] * dx[j])
        ii += 3
    lam_h = coef[C_LAM_H]
    for a in range(nB):
        dx[o2 + a] += lam_h * v[a]
    for r in range(nR):
        dx[oU + r] += lam_h * v[oh + r]
    if tab_i[TI_COUPLED] != 0:
        nl = tab_i[TI_NNZ_LINEAR]
        l_idx = tab_i[tab_i[TI_OFF_LINEAR]:tab_i[TI_OFF_LINEAR] + 2 * nl]
        l_val = tab_f[tab_i[TI_OFF_LVAL]:tab_i[TI_OFF_LVAL] + nl]
        ii = 0
        for e in range(l_val.shape[0]):
            i = uint64(l_idx[ii])
            k = uint64(l_idx[ii + 1])
            dx[k] += l_val[e] * dx[i]
            ii += 2
    else:
        for a in range(nB):
            dx[o3 + a] = dx[o2 + a]
        for r in range(nR):
            dx[oV + r] = dx[oU + r]
    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lam_w = coef[C_LAM_W]
    lam_e = coef[C_LAM_E]
    for a in range(nB):
        out[a] = -lr_w * (dx[o1 + a] + lam_w * v[a]) - lr_h * (dx[o3 + a] + lam_e * v[a])
    for c in range(nC):
        out[ow + c] = -2.0 * lr_w * (dx[oS + c] + lam_w * v[ow + c])
    for r in range(nR):
        out[oh + r] = -2.0 * lr_h * (dx[oV + r] + lam_e * v[oh + r])
    if bias:
        rv = tab_i[TI_OFF_ROWV]
        s = 0.0
        for a in range(nB):
            s += tab_f[rv + a] * dx[og + a]
        out[n] = -coef[C_LR_B] * (s + coef[C_LAM_B] * v[n])


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def prepare(y, model, work):
    """Compute what the tangents at ``y`` share (logits, softmax, G) into ``work``."""
    space = model.ip[IP_SPACE]
    if space == SPACE_PARAMETERS:
        _param_prepare(y, model, work)
    elif space == SPACE_GRAM:
        _gram_prepare(y, model, work)
    else:
        _reduced_prepare(y, model, work)


@njit(cache=True)
def jvp_prepared(p, y, v, out, model, work):
    """out = J(y) v, after :func:`prepare` (y, model, work) has run for this ``y``."""
    space = model.ip[IP_SPACE]
    if space == SPACE_PARAMETERS:
        _param_jvp_prepared(p, y, v, out, model, work)
    elif space == SPACE_GRAM:
        _gram_jvp_prepared(p, y, v, out, model, work)
    else:
        _reduced_jvp_prepared(y, v, out, model, work)


@njit(cache=True)
def jvp(p, y, v, out, model, work):
    """Write the Jacobian-vector product J(y) v of :func:`ufm.kernels.fields.vector_field`
    (coupling piece ``p``) into ``out``; ``work`` has length :func:`tangent_work_size`."""
    prepare(y, model, work)
    jvp_prepared(p, y, v, out, model, work)


@njit(cache=True)
def _loss_curvature(P, pi, cross_entropy):
    """Per-context Hessians of the weighted loss in the logits, D (N, K, K): for cross-entropy
    D_i = π_i (diag(p_i) − p_i p_iᵀ) with p_i = P[:, i] the softmax column, for MSE π_i I.
    Shared by the parameter- and Gram-space Jacobians."""
    K, N = P.shape
    Dm = np.zeros((N, K, K))
    if cross_entropy:
        for i in range(N):
            for k in range(K):
                for l in range(K):
                    Dm[i, k, l] = -pi[i] * P[k, i] * P[l, i]
                Dm[i, k, k] += pi[i] * P[k, i]
    else:
        for i in range(N):
            for k in range(K):
                Dm[i, k, k] = pi[i]
    return Dm


@njit(cache=True)
def _param_jacobian(p, y, JT, model, work):
    """The dense parameter-space Jacobian, transposed (``JT[r]`` = J(y) e_r), assembled from its
    blocks instead of n tangents: with D_i = ∂G[:, i]/∂Z[:, i] (K×K; CE: π_i (diag σ_i − σ_i σ_iᵀ),
    MSE: π_i I) and (WD)_i = D_i W, Q_i = Wᵀ D_i W, the raw H-rows TH = Wᵀ G + λ_H H (before Θ) have

        ∂oW[k, j]/∂W[l, a] = −η_W (Σ_i D_i[k, l] H[a, i] H[j, i] + λ_W δ_kl δ_aj)
        ∂oW[k, j]/∂H[a, i] = −η_W ((WD)_i[k, a] H[j, i] + G[k, i] δ_aj)
        ∂TH[j, i]/∂W[l, a] = δ_ja G[l, i] + (WD)_i[l, j] H[a, i]
        ∂TH[j, i]/∂H[a, c] = δ_ic (Q_i[j, a] + λ_H δ_ja)
        oH = −η_H (TH Θ + λ_E H),   and with a bias b: Z gains b 1ᵀ, ∂Z[:, i]/∂b = I.

    The same matrix as :func:`jacobian`'s tangents (the tests compare them); its cost is
    O(N K² d² + n d N) (+ n d N² with a coupling) instead of n tangents of O(K d N) each plus
    their small matrix products."""
    ip = model.ip
    coef = model.coef
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    bias = ip[IP_BIAS]
    coupled = ip[IP_NTHETA] > 0
    nW = K * d
    nH = d * N
    _param_prepare(y, model, work)
    Z, P, G, A, dG, TKN, TW, TH, TH2 = _param_buffers(work, K, d, N)
    W = y[:nW].reshape(K, d)
    H = y[nW:nW + nH].reshape(d, N)
    pi = model.pi
    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lr_b = coef[C_LR_B]
    lam_w = coef[C_LAM_W]
    lam_h = coef[C_LAM_H]
    lam_e = coef[C_LAM_E]
    lam_b = coef[C_LAM_B]
    # per-column curvature blocks (small: N·K·(K + 2d) + N·d² numbers, once per Jacobian)
    Dm = _loss_curvature(P, pi, ip[IP_LOSS] == LOSS_CE)
    WD = np.zeros((N, K, d))
    Q = np.zeros((N, d, d))
    for i in range(N):
        for k in range(K):
            for m in range(K):
                c = Dm[i, k, m]
                if c != 0.0:
                    for a in range(d):
                        WD[i, k, a] += c * W[m, a]
        for k in range(K):
            for j in range(d):
                c = W[k, j]
                for a in range(d):
                    Q[i, j, a] += c * WD[i, k, a]
    theta = model.theta[p]             # (1, 1, 1) placeholder when uncoupled: not read then
    JT[:, :] = 0.0
    raw = np.empty((d, N))             # the TH row of one input, before Θ
    for r in range(JT.shape[0]):
        oW = JT[r, :nW]
        raw[:, :] = 0.0
        l = 0
        a = 0
        col = 0
        if r < nW:                     # input W[l, a]
            l = r // d
            a = r % d
            for k in range(K):
                for i in range(N):
                    c = Dm[i, k, l] * H[a, i]
                    if c != 0.0:
                        for j in range(d):
                            oW[k * d + j] += c * H[j, i]
            oW[r] += lam_w
            for i in range(N):
                raw[a, i] += G[l, i]
                for j in range(d):
                    raw[j, i] += WD[i, l, j] * H[a, i]
        elif r < nW + nH:              # input H[a, c]
            a = (r - nW) // N
            col = (r - nW) % N
            for k in range(K):
                wd = WD[col, k, a]
                for j in range(d):
                    oW[k * d + j] += wd * H[j, col]
                oW[k * d + a] += G[k, col]
            for j in range(d):
                raw[j, col] = Q[col, j, a]
            raw[a, col] += lam_h
        else:                          # input b[l]
            l = r - nW - nH
            for k in range(K):
                for i in range(N):
                    c = Dm[i, k, l]
                    if c != 0.0:
                        for j in range(d):
                            oW[k * d + j] += c * H[j, i]
            for i in range(N):
                for j in range(d):
                    raw[j, i] = WD[i, l, j]
        for q in range(nW):
            oW[q] *= -lr_w
        oH = JT[r, nW:nW + nH]
        for j in range(d):
            for i in range(N):
                if coupled:
                    s = 0.0
                    for c2 in range(N):
                        s += raw[j, c2] * theta[c2, i]
                else:
                    s = raw[j, i]
                oH[j * N + i] = -lr_h * s
        if nW <= r < nW + nH:
            oH[r - nW] -= lr_h * lam_e
        if bias:                       # ob[k] = −η_b (Σ_i G[k, i] + λ_b b[k])
            ob = JT[r, nW + nH:]
            for k in range(K):
                s = 0.0
                if r < nW:
                    for i in range(N):
                        s += Dm[i, k, l] * H[a, i]
                elif r < nW + nH:
                    s = WD[col, k, a]
                else:
                    for i in range(N):
                        s += Dm[i, k, l]
                    if k == l:
                        s += lam_b
                ob[k] = -lr_b * s


@njit(cache=True)
def _gram_jacobian(p, y, JT, model, work):
    """The dense Gram-space Jacobian, transposed (``JT[r]`` = J(y) e_r), assembled from its
    blocks for the M, G_W and G_H coordinates (one tangent each for the K bias coordinates,
    whose logit change is dense). With D_c = ∂G[:, c]/∂Z[:, c] (as in :func:`_param_jacobian`),
    (G_W D)_c = G_W D_c, (Mᵀ D)_c = Mᵀ D_c and GΘ = G Θ, a unit change of

        M[l, c]:   dM[k, i]   = −η_W (D_c[k, l] G_H[c, i] + λ_W δ) − η_H ((G_W D)_c[k, l] + λ_H δ_kl) Θ[c, i]
                                − η_H λ_E δ                                (δ: (k, i) = (l, c))
                   dG_W[k, m] = −η_W (D_c[k, l] M[m, c] + G[k, c] δ_ml + (k ↔ m))
                   dG_H[i, j] = −η_H (δ_ic GΘ[l, j] + (Mᵀ D)_c[i, l] Θ[c, j] + (i ↔ j))
                   db[k]      = −η_b D_c[k, l]
        G_W[m, l]: dM[m, i]   = −η_H GΘ[l, i],         dG_W[m, l] = −2 η_W λ_W
        G_H[c, e]: dM[k, e]   = −η_W G[k, c],          dG_H[i, j] = −η_H λ_H (δ_ic Θ[e, j] + δ_jc Θ[e, i])
                                                                    − 2 η_H λ_E δ_(i,j)=(c,e)

    (the tangents of the field of :mod:`ufm.kernels.fields` with its symmetrised G_H terms).
    The same matrix as the tangents (the tests compare them), at O(n (K + N)) per row instead of
    a full tangent with its small matrix products."""
    ip = model.ip
    coef = model.coef
    K = ip[IP_K]
    N = ip[IP_N]
    bias = ip[IP_BIAS]
    coupled = ip[IP_NTHETA] > 0
    nM = K * N
    oGW = nM
    oGH = nM + K * K
    ob = oGH + N * N
    n = y.shape[0]
    _gram_prepare(y, model, work)
    Z, P, G, A, dG, C, d2G, dG2, T, S, U, V = _gram_buffers(work, K, N)
    M, GW, GH = _gram_views(y, K, N)
    theta = model.theta[p]             # (1, 1, 1) placeholder when uncoupled: not read then
    pi = model.pi
    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lr_b = coef[C_LR_B]
    lam_w = coef[C_LAM_W]
    lam_h = coef[C_LAM_H]
    lam_e = coef[C_LAM_E]
    Th = np.zeros((N, N))              # Θ, or I without a coupling
    if coupled:
        Th[:, :] = theta
    else:
        for i in range(N):
            Th[i, i] = 1.0
    Dm = _loss_curvature(P, pi, ip[IP_LOSS] == LOSS_CE)
    GWD = np.zeros((N, K, K))
    MD = np.zeros((N, N, K))
    for c in range(N):
        for k in range(K):
            for m in range(K):
                g = GW[k, m]
                for l in range(K):
                    GWD[c, k, l] += g * Dm[c, m, l]
        for k in range(K):
            for i in range(N):
                mk = M[k, i]
                for l in range(K):
                    MD[c, i, l] += mk * Dm[c, k, l]
    GT = np.zeros((K, N))
    for l in range(K):
        for i in range(N):
            s = 0.0
            for j in range(N):
                s += G[l, j] * Th[j, i]
            GT[l, i] = s
    JT[:, :] = 0.0
    for l in range(K):                 # inputs M[l, c]
        for c in range(N):
            row = JT[l * N + c]
            for k in range(K):
                for i in range(N):
                    row[k * N + i] = -lr_w * Dm[c, k, l] * GH[c, i] - lr_h * GWD[c, k, l] * Th[c, i]
                    if k == l:
                        row[k * N + i] -= lr_h * lam_h * Th[c, i]
            row[l * N + c] -= lr_w * lam_w + lr_h * lam_e
            for k in range(K):
                for m in range(K):
                    row[oGW + k * K + m] = -lr_w * (Dm[c, k, l] * M[m, c] + Dm[c, m, l] * M[k, c])
            for k in range(K):
                row[oGW + k * K + l] -= lr_w * G[k, c]
                row[oGW + l * K + k] -= lr_w * G[k, c]
            for i in range(N):
                for j in range(N):
                    row[oGH + i * N + j] = -lr_h * (MD[c, i, l] * Th[c, j] + MD[c, j, l] * Th[c, i])
            for j in range(N):
                row[oGH + c * N + j] -= lr_h * GT[l, j]
                row[oGH + j * N + c] -= lr_h * GT[l, j]
            if bias:
                for k in range(K):
                    row[ob + k] = -lr_b * Dm[c, k, l]
    for m in range(K):                 # inputs G_W[m, l]
        for l in range(K):
            row = JT[oGW + m * K + l]
            for i in range(N):
                row[m * N + i] = -lr_h * GT[l, i]
            row[oGW + m * K + l] = -2.0 * lr_w * lam_w
    for c in range(N):                 # inputs G_H[c, e]
        for e in range(N):
            row = JT[oGH + c * N + e]
            for k in range(K):
                row[k * N + e] = -lr_w * G[k, c]
            for j in range(N):
                row[oGH + c * N + j] -= lr_h * lam_h * Th[e, j]
                row[oGH + j * N + c] -= lr_h * lam_h * Th[e, j]
            row[oGH + c * N + e] -= 2.0 * lr_h * lam_e
    if bias:                           # inputs b[l]: one tangent each (dense logit change)
        unit = np.zeros(n)
        for r in range(ob, n):
            unit[r] = 1.0
            _gram_jvp_prepared(p, y, unit, JT[r], model, work)
            unit[r] = 0.0


@njit(cache=True)
def jacobian_tangents(model, n):
    """How many tangents :func:`jacobian` evaluates for an n-coordinate state (parameter space
    assembles it from blocks, Gram space too but for one tangent per bias coordinate)."""
    space = model.ip[IP_SPACE]
    if space == SPACE_PARAMETERS:
        return 0
    if space == SPACE_GRAM:
        return model.ip[IP_K] if model.ip[IP_BIAS] else 0
    return n


@njit(cache=True)
def jacobian(p, y, JT, model, work):
    """The dense Jacobian, transposed: row j of ``JT`` (n×n) is J(y) e_j. Parameter and Gram
    space assemble it from its blocks (:func:`_param_jacobian`, :func:`_gram_jacobian`); the
    reduced space takes one tangent per basis vector (the logits and softmax computed once)."""
    n = y.shape[0]
    if model.ip[IP_SPACE] == SPACE_PARAMETERS:
        _param_jacobian(p, y, JT, model, work)
        return
    if model.ip[IP_SPACE] == SPACE_GRAM:
        _gram_jacobian(p, y, JT, model, work)
        return
    prepare(y, model, work)
    e = np.zeros(n)
    for j in range(n):
        e[j] = 1.0
        jvp_prepared(p, y, e, JT[j], model, work)
        e[j] = 0.0


@njit(cache=True)
def spectral_radius(p, y, model, work, iterations, seed_vector):
    """Estimate of the Jacobian's spectral radius by power iteration on J(y) (the largest
    |eigenvalue| the explicit methods' stability boundary is compared with).

    Returns the Rayleigh-type ratio ‖J v_k‖ / ‖v_k‖ after ``iterations`` steps from
    ``seed_vector`` (overwritten). Power iteration converges to the dominant eigenvalue's
    modulus for a diagonalisable J; with complex pairs it oscillates around it, which is
    enough for a stability verdict within a factor of order 1.
    """
    n = y.shape[0]
    prepare(y, model, work)
    w = np.empty(n)
    v = seed_vector
    nrm = 0.0
    for i in range(n):
        nrm += v[i] * v[i]
    nrm = np.sqrt(nrm)
    if nrm == 0.0:
        return 0.0
    for i in range(n):
        v[i] /= nrm
    rho = 0.0
    for _ in range(iterations):
        jvp_prepared(p, y, v, w, model, work)
        nrm = 0.0
        for i in range(n):
            nrm += w[i] * w[i]
        nrm = np.sqrt(nrm)
        rho = nrm
        if nrm == 0.0 or not np.isfinite(nrm):
            break
        for i in range(n):
            v[i] = w[i] / nrm
    return rho


# --------------------------------------------------------------------------------------------
# parameter derivatives (Gram space, for the forward sensitivities)
# --------------------------------------------------------------------------------------------

@njit(cache=True)
def _rates_only(coef, which, out_coef):
    """out_coef = coef with the rates set to e_which (decays kept)."""
    for i in range(C_SIZE):
        out_coef[i] = coef[i]
    out_coef[C_LR_W] = 1.0 if which == C_LR_W else 0.0
    out_coef[C_LR_H] = 1.0 if which == C_LR_H else 0.0
    out_coef[C_LR_B] = 1.0 if which == C_LR_B else 0.0


@njit(cache=True)
def _decay_only(coef, which, out_coef):
    """out_coef = coef with the decays set to e_which (rates kept)."""
    for i in range(C_SIZE):
        out_coef[i] = coef[i]
    out_coef[C_LAM_W] = 1.0 if which == C_LAM_W else 0.0
    out_coef[C_LAM_H] = 1.0 if which == C_LAM_H else 0.0
    out_coef[C_LAM_B] = 1.0 if which == C_LAM_B else 0.0
    out_coef[C_LAM_E] = 1.0 if which == C_LAM_E else 0.0


@njit(cache=True)
def gram_param_field(p, y, code, direction, out, model, work, coef_buf):
    """out = ∂f/∂θ (y) for the parameter ``code`` (PARAM_*), Gram space; ``direction`` (N×N) is
    D of PARAM_COUPLING. Requires :func:`_gram_prepare` for ``y``."""
    ip = model.ip
    coef = model.coef
    K = ip[IP_K]
    N = ip[IP_N]
    bias = ip[IP_BIAS]
    coupled = ip[IP_NTHETA] > 0
    theta = model.theta[p]
    Z, P, G, A, dG, C, d2G, dG2, T, S, U, V = _gram_buffers(work, K, N)
    out[:] = 0.0
    if code == PARAM_INIT_SCALE:
        return
    if code <= PARAM_LR_B or code == PARAM_TIME_SCALE:
        # rates: the field with that rate 1 and the others 0 (the field is linear in each rate);
        # the time scale: every rate at once, i.e. the field itself
        for i in range(C_SIZE):
            coef_buf[i] = coef[i]
        if code != PARAM_TIME_SCALE:
            _rates_only(coef, code, coef_buf)
        _gram_bilinear(G, y, out, K, N, bias, coupled, theta, coef_buf[C_LR_W], coef_buf[C_LR_H],
                       coef_buf[C_LR_B], True, T, S, U, V)
        _gram_linear(y, out, K, N, bias, coupled, theta, coef_buf, V)
        return
    if code <= PARAM_LAM_E:
        _decay_only(coef, code, coef_buf)
        _gram_linear(y, out, K, N, bias, coupled, theta, coef_buf, V)
        return
    # PARAM_COUPLING: the Θ-terms with Θ → D (Θ-free terms dropped)
    _gram_coupling_terms(G, y, out, K, N, direction, coef[C_LR_H], coef[C_LAM_H], T, U, V)


@njit(cache=True)
def _gram_coupling_terms(G, y, out, K, N, D, lr_h, lam_h, T, U, V):
    """out += −η_H (G_W G + λ_H M) D in M and −η_H (D (Gᵀ M + λ_H G_H) + (Mᵀ G + λ_H G_H) D) in G_H."""
    M, GW, GH = _gram_views(y, K, N)
    oM, oGW, oGH = _gram_views(out, K, N)
    np.dot(GW, G, T)
    for k in range(K):
        for i in range(N):
            T[k, i] += lam_h * M[k, i]
    for k in range(K):
        for i in range(N):
            s = 0.0
            for j in range(N):
                s += T[k, j] * D[j, i]
            oM[k, i] -= lr_h * s
    np.dot(M.T, G, U)
    for i in range(N):
        for j in range(N):
            U[i, j] += lam_h * GH[i, j]
    np.dot(U, D, V)
    for i in range(N):
        for j in range(N):
            oGH[i, j] -= lr_h * (V[i, j] + V[j, i])


@njit(cache=True)
def gram_param_jvp(p, y, u, code, direction, out, model, work, coef_buf):
    """out = ∂/∂y (∂f/∂θ)(y) · u for the parameter ``code``, Gram space; requires
    :func:`_gram_prepare` for ``y``. (The y-derivative of ∂f/∂θ is ∂/∂θ of J u: the tangent
    with the same coefficient substitution as :func:`gram_param_field`.)"""
    ip = model.ip
    coef = model.coef
    K = ip[IP_K]
    N = ip[IP_N]
    bias = ip[IP_BIAS]
    coupled = ip[IP_NTHETA] > 0
    theta = model.theta[p]
    Z, P, G, A, dG, C, d2G, dG2, T, S, U, V = _gram_buffers(work, K, N)
    out[:] = 0.0
    if code == PARAM_INIT_SCALE:
        return
    if code <= PARAM_LAM_E and code > PARAM_LR_B:
        _decay_only(coef, code, coef_buf)
        _gram_linear(u, out, K, N, bias, coupled, theta, coef_buf, V)
        return
    _gram_logits(u, A, K, N, bias)
    _gradient_tangent(P, model.pi, ip[IP_LOSS], A, dG)
    if code == PARAM_COUPLING:
        _gram_coupling_terms(dG, y, out, K, N, direction, coef[C_LR_H], 0.0, T, U, V)
        _gram_coupling_terms(G, u, out, K, N, direction, coef[C_LR_H], coef[C_LAM_H], T, U, V)
        return
    for i in range(C_SIZE):
        coef_buf[i] = coef[i]
    if code != PARAM_TIME_SCALE:
        _rates_only(coef, code, coef_buf)
    _gram_bilinear(dG, y, out, K, N, bias, coupled, theta, coef_buf[C_LR_W], coef_buf[C_LR_H], coef_buf[C_LR_B],
                   True, T, S, U, V)
    _gram_bilinear(G, u, out, K, N, bias, coupled, theta, coef_buf[C_LR_W], coef_buf[C_LR_H], coef_buf[C_LR_B],
                   False, T, S, U, V)
    _gram_linear(u, out, K, N, bias, coupled, theta, coef_buf, V)
