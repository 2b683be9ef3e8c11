"""Numba vector fields of the deep-backbone (deep linear unconstrained-features) model.

The logits are Z = W W_L ⋯ W_1 H₀ + b1ᵀ: free features H₀ (d×N), L hidden linear layers
W_l (d×d), the classifier W (K×d); every factor carries its own decay. The gradient flow of

    ℓ(Z) + λ_W/2 ‖W‖² + λ_L/2 Σ_l ‖W_l‖² + λ_H/2 ‖H₀‖² + λ_b/2 ‖b‖²

is integrated in one of two spaces (``ip[IP_SPACE]``, :mod:`ufm.kernels.layout`):

* ``SPACE_DEEP_PARAMETERS``: y = [vec(W) (K·d), vec(H₀) (d·N), vec(W_1) … vec(W_L) (d·d each),
  b (K, if bias)], row-major. With F₀ = H₀, F_l = W_l F_{l−1} and B_L = WᵀG, B_{l−1} = W_lᵀB_l::

      dW/dt   = −η_W (G F_Lᵀ + λ_W W)
      dW_l/dt = −η_L (B_l F_{l−1}ᵀ + λ_L W_l)
      dH₀/dt  = −η_H (B_0 + λ_H H₀)

* ``SPACE_DEEP_BALANCED``: y = [vec(Z without bias) (K·N), b]. On the balanced manifold
  (W_{j+1}ᵀW_{j+1} = W_jW_jᵀ for the n = L + 2 factors, which the flow keeps when all rates
  and decays are equal) the product obeys the end-to-end equation of Arora, Cohen & Hazan
  (2018), with a decay term n·λ·Z::

      dZ/dt = −η [Σ_{j=1}^{n} (ZZᵀ)^{(n−j)/n} G (ZᵀZ)^{(j−1)/n} + n λ Z]

  (exponent 0 is the identity), evaluated with one full SVD Z = U S Vᵀ (μ = ν = s², padded
  with zeros) as U [(UᵀGV) ⊙ C] Vᵀ, C_ki = Σ_j μ_k^{(n−j)/n} ν_i^{(j−1)/n}. The Grams
  are functions of Z there: G_W = (ZZᵀ)^{1/n}, G_H = (ZᵀZ)^{(n−1)/n} (G_H of the features
  F_L entering the classifier), and each factor's ‖·‖² is tr(ZᵀZ)^{1/n}, so the objective is
  ℓ + (nλ/2) Σ_i σ_i(Z)^{2/n}: n times the Schatten-2/n quasi-norm to the power 2/n.

Rules as in :mod:`ufm.kernels.fields` (module-level ``@njit(cache=True)``, called by name),
except that the balanced field's SVD allocates (LAPACK via numba).
The coupling Θ is not part of this model (``ip[IP_NTHETA]`` is 0). Numpy twins:
:mod:`ufm.deep` (``DeepUFM.vector_field``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .fields import _bias_field, logit_gradient
from .layout import (C_LAM_B, C_LAM_H, C_LAM_L, C_LAM_W, C_LR_H, C_LR_L, C_LR_W, IP_BIAS, IP_D, IP_K, IP_LAYERS,
                     IP_LOSS, IP_N, SPACE_DEEP_PARAMETERS)


@njit(cache=True)
def deep_state_size(model):
    """Length of the flat state of a packed deep model."""
    ip = model.ip
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    nb = K if ip[IP_BIAS] else 0
    if ip[0] == SPACE_DEEP_PARAMETERS:
        return K * d + d * N + ip[IP_LAYERS] * d * d + nb
    return K * N + nb


@njit(cache=True)
def deep_work_size(model):
    """Scratch length for :func:`deep_field` and :func:`deep_record`."""
    ip = model.ip
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    if ip[0] == SPACE_DEEP_PARAMETERS:
        return 2 * K * N + (ip[IP_LAYERS] + 2) * d * N + K * K + N * N + 2 * N
    return 4 * K * N + K * K + N * N + 2 * N


@njit(cache=True)
def _add_bias(Z, y, off_b, bias):
    if bias:
        for k in range(Z.shape[0]):
            for i in range(Z.shape[1]):
                Z[k, i] += y[off_b + k]


@njit(cache=True)
def _forward(y, ip, Y, pi, work):
    """Features F_1 … F_L (in work), Z and G = ∂ℓ/∂Z; returns (data loss, F_L view)."""
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    L = ip[IP_LAYERS]
    nW = K * d
    nH = d * N
    W = y[:nW].reshape(K, d)
    F = y[nW:nW + nH].reshape(d, N)
    off = 2 * K * N
    for l in range(L):
        Wl = y[nW + nH + l * d * d:nW + nH + (l + 1) * d * d].reshape(d, d)
        Fn = work[off + l * nH:off + (l + 1) * nH].reshape(d, N)
        np.dot(Wl, F, Fn)
        F = Fn
    Z = work[:K * N].reshape(K, N)
    G = work[K * N:2 * K * N].reshape(K, N)
    np.dot(W, F, Z)
    _add_bias(Z, y, nW + nH + L * d * d, ip[IP_BIAS])
    nwork = work.shape[0]
    data = logit_gradient(Z, Y, pi, ip[IP_LOSS], G, work[nwork - 2 * N:nwork - N], work[nwork - N:])
    return data, F


@njit(cache=True)
def _parameter_field(y, dy, ip, coef, Y, pi, work):
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    L = ip[IP_LAYERS]
    nW = K * d
    nH = d * N
    _, FL = _forward(y, ip, Y, pi, work)
    W = y[:nW].reshape(K, d)
    H0 = y[nW:nW + nH].reshape(d, N)
    G = work[K * N:2 * K * N].reshape(K, N)
    off = 2 * K * N
    B = work[off + L * nH:off + (L + 1) * nH].reshape(d, N)
    B2 = work[off + (L + 1) * nH:off + (L + 2) * nH].reshape(d, N)

    lr_w = coef[C_LR_W]
    lam_w = coef[C_LAM_W]
    dW = dy[:nW].reshape(K, d)
    np.dot(G, FL.T, dW)
    for k in range(K):
        for j in range(d):
            dW[k, j] = -lr_w * (dW[k, j] + lam_w * W[k, j])
    np.dot(W.T, G, B)                                   # B_L = ∂ℓ/∂F_L
    lr_l = coef[C_LR_L]
    lam_l = coef[C_LAM_L]
    for l in range(L - 1, -1, -1):                      # layer W_{l+1} maps F_l to F_{l+1}
        o = nW + nH + l * d * d
        Wl = y[o:o + d * d].reshape(d, d)
        dWl = dy[o:o + d * d].reshape(d, d)
        if l == 0:
            Fprev = H0
        else:
            Fprev = work[off + (l - 1) * nH:off + l * nH].reshape(d, N)
        np.dot(B, Fprev.T, dWl)
        for a in range(d):
            for c in range(d):
                dWl[a, c] = -lr_l * (dWl[a, c] + lam_l * Wl[a, c])
        np.dot(Wl.T, B, B2)
        B[:, :] = B2
    lr_h = coef[C_LR_H]
    lam_h = coef[C_LAM_H]
    dH = dy[nW:nW + nH].reshape(d, N)
    for j in range(d):
        for i in range(N):
            dH[j, i] = -lr_h * (B[j, i] + lam_h * H0[j, i])
    if ip[IP_BIAS]:
        o = nW + nH + L * d * d
        _bias_field(G, y[o:], dy[o:], coef)


#: singular values below this fraction of the largest are rounding noise of the SVD and count as
#: 0: a fractional power σ^(2/n) would lift them (1e-16 becomes 1e-4 for n = 4)
RANK_RTOL = 64 * 2.220446049250313e-16


@njit(cache=True)
def _power(value, exponent):
    """value^exponent for an eigenvalue of ZZᵀ or ZᵀZ (0 stays 0; exponent 0 gives 1, the
    identity of an empty product of factors)."""
    if exponent == 0.0:
        return 1.0
    return value ** exponent if value > 0.0 else 0.0


@njit(cache=True)
def _powers(values, exponent):
    out = np.empty(values.shape[0])
    for i in range(values.shape[0]):
        out[i] = _power(values[i], exponent)
    return out


@njit(cache=True)
def _spectra(M):
    """(U (K×K), V (N×N), μ (K,), ν (N,)): ZZᵀ = U diag(μ) Uᵀ and ZᵀZ = V diag(ν) Vᵀ from one
    full SVD of Z (accurate small singular values, unlike eigendecompositions of the squares),
    with singular values below RANK_RTOL·σ_max set to 0."""
    K = M.shape[0]
    N = M.shape[1]
    U, s, Vt = np.linalg.svd(M)
    mu = np.zeros(K)
    nu = np.zeros(N)
    floor = RANK_RTOL * (s[0] if s.shape[0] > 0 else 0.0)
    for i in range(s.shape[0]):
        if s[i] > floor:
            mu[i] = s[i] * s[i]
            nu[i] = s[i] * s[i]
    return U, Vt.T.copy(), mu, nu


@njit(cache=True)
def _balanced_field(y, dy, ip, coef, Y, pi, work):
    K = ip[IP_K]
    N = ip[IP_N]
    n = ip[IP_LAYERS] + 2
    nZ = K * N
    M = y[:nZ].reshape(K, N)
    Z = work[:nZ].reshape(K, N)
    G = work[nZ:2 * nZ].reshape(K, N)
    Z[:, :] = M
    _add_bias(Z, y, nZ, ip[IP_BIAS])
    nwork = work.shape[0]
    logit_gradient(Z, Y, pi, ip[IP_LOSS], G, work[nwork - 2 * N:nwork - N], work[nwork - N:])
    U, V, mu, nu = _spectra(M)
    Gt = U.T @ G @ V
    for k in range(K):
        for i in range(N):
            c = 0.0
            for j in range(1, n + 1):
                c += _power(mu[k], (n - j) / n) * _power(nu[i], (j - 1) / n)
            Gt[k, i] *= c
    D = U @ Gt @ V.T
    lr = coef[C_LR_W]
    lam = coef[C_LAM_W]
    dZ = dy[:nZ].reshape(K, N)
    for k in range(K):
        for i in range(N):
            dZ[k, i] = -lr * (D[k, i] + n * lam * M[k, i])
    if ip[IP_BIAS]:
        _bias_field(G, y[nZ:], dy[nZ:], coef)


@njit(cache=True)
def deep_field(y, dy, ip, coef, Y, pi, work):
    """Write dy/dt of a packed deep model at ``y`` into ``dy``, given the fields of its
    :class:`~ufm.kernels.groups.Model` that the field reads (maths in the module docstring;
    the space is ``ip[IP_SPACE]``)."""
    if ip[0] == SPACE_DEEP_PARAMETERS:
        _parameter_field(y, dy, ip, coef, Y, pi, work)
    else:
        _balanced_field(y, dy, ip, coef, Y, pi, work)


@njit(cache=True)
def deep_record(j, y, model, out, work):
    """The saves of :func:`ufm.kernels.fields.record` for a deep model: the objective, the data
    loss and, per ``out.flags``, the flat state, G_W = WWᵀ, G_H = F_LᵀF_L (the features entering
    the classifier) and Z."""
    ip = model.ip
    coef = model.coef
    K = ip[IP_K]
    d = ip[IP_D]
    N = ip[IP_N]
    L = ip[IP_LAYERS]
    Z = work[:K * N].reshape(K, N)
    GW = np.empty((K, K))
    GH = np.empty((N, N))
    if ip[0] == SPACE_DEEP_PARAMETERS:
        data, FL = _forward(y, ip, model.Y, model.pi, work)
        W = y[:K * d].reshape(K, d)
        np.dot(W, W.T, GW)
        np.dot(FL.T, FL, GH)
        H0 = y[K * d:K * d + d * N]
        layers = y[K * d + d * N:K * d + d * N + L * d * d]
        reg = 0.5 * coef[C_LAM_W] * np.sum(W * W) + 0.5 * coef[C_LAM_H] * np.sum(H0 * H0) \
            + 0.5 * coef[C_LAM_L] * np.sum(layers * layers)
        off_b = K * d + d * N + L * d * d
    else:
        n = L + 2
        M = y[:K * N].reshape(K, N)
        Z[:, :] = M
        _add_bias(Z, y, K * N, ip[IP_BIAS])
        G = work[K * N:2 * K * N].reshape(K, N)
        nwork = work.shape[0]
        data = logit_gradient(Z, model.Y, model.pi, ip[IP_LOSS], G, work[nwork - 2 * N:nwork - N], work[nwork - N:])
        U, V, mu, nu = _spectra(M)
        GW[:, :] = (U * _powers(mu, 1.0 / n)) @ U.T
        GH[:, :] = (V * _powers(nu, (n - 1.0) / n)) @ V.T
        # every factor's ‖·‖² is tr (ZᵀZ)^{1/n} on the balanced manifold
        reg = 0.5 * n * coef[C_LAM_W] * np.sum(_powers(mu, 1.0 / n))
        off_b = K * N
    if ip[IP_BIAS]:
        b = y[off_b:off_b + K]
        reg += 0.5 * coef[C_LAM_B] * np.sum(b * b)
    out.data[j] = data
    out.loss[j] = data + reg
    flags = out.flags
    if flags[0]:
        out.state[j, :] = y
    if flags[1]:
        out.gram_W[j] = GW
    if flags[2]:
        out.gram_H[j] = GH
    if flags[3]:
        out.logits[j] = Z
