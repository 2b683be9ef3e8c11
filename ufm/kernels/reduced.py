"""Numba vector field of the symmetry-reduced Gram ODE, driven by structure-constant tables.

For a problem with an association scheme the Gram state stays in the span of the relation
matrices (see :mod:`ufm.reduction`, which builds and packs the tables):

    M = Σ_a m_a B_a (K×N),   G_W = Σ_a w_a C_a (K×K),   G_H = Σ_a h_a R_a (N×N),   b = b·1_K,

and the Gram ODE of :mod:`ufm.kernels.fields` becomes an ODE on the coefficients. Every
product it takes is a bilinear map between relation coefficients with integer structure
constants; this module evaluates them from sparse (a, b, c, value) lists, so one compiled
field serves every scheme (balanced, factorial, hierarchy, any sizes) and the cost of an
evaluation is O(number of nonzero structure constants), independent of K and N.

The rules of :mod:`ufm.kernels.fields` apply: module-level ``@njit(cache=True)`` functions
that call each other by name, nothing raised, nothing allocated per call (scratch in a
caller-provided ``work`` of length :func:`reduced_work_size`). ``exp_nonpositive`` is
imported from ``expfn`` and inlined here, so after editing ``expfn.py`` delete the caches
(``find ufm -name '*.nb[ic]' -delete``): numba's cache of this file does not see the change.

Packed model: ``ip`` and ``coef`` as in :mod:`ufm.kernels.fields` (this field reads
``ip[IP_LOSS]``, ``ip[IP_BIAS]`` and all of ``coef``: η_W, η_H, η_b, λ_W, λ_H, λ_b, λ_E). The
sizes and the coupling come from the tables; ``ip[IP_NTHETA]`` is not read (the coupling's
coefficients θ_a are folded into the tables).

State layout (``y``, float64): ``[m (nB), w (nC), h (nR), b (1, if bias)]``.

Integer table ``tab_i`` (int64)::

    tab_i[TI_NB], tab_i[TI_NC], tab_i[TI_NR]   number of logit (B), class (C), context (R) relations
    tab_i[TI_K], tab_i[TI_N]                   classes K and contexts N
    tab_i[TI_LABEL]                            index of the label relation (B_label = Y)
    tab_i[TI_COUPLED]                          0 when Θ = I (the Θ products are skipped)
    tab_i[TI_OFF_COLV]                         offset in tab_f of the column valencies v (nB)
    tab_i[TI_OFF_ROWV]                         offset in tab_f of the row valencies ρ (nB)
    tab_i[TI_OFF_TRACE]                        offset in tab_f of the trace weights τ (nR)
    tab_i[TI_TABLES + 3t + 0]                  number of nonzero entries of table t
    tab_i[TI_TABLES + 3t + 1]                  offset in tab_i of its index tuples
    tab_i[TI_TABLES + 3t + 2]                  offset in tab_f of its values
    tab_i[TI_HEADER:]                          index tuples: (a, b, c) for a bilinear table,
                                               (a, c) for a linear one, entry after entry

Float table ``tab_f`` (float64)::

    tab_f[TF_WEIGHT]        π, the (equal) weight of every context
    tab_f[TF_WEIGHT_SUM]    Σ_i π_i = N π
    then v, ρ, τ and the values of the tables at the offsets above.

Tables (t), each a sparse list: bilinear ``out_c = Σ value · x_a y_b``, linear ``out_c = Σ value · x_a``::

    TAB_GH      (g ∈ B, h ∈ R) -> B     B_a R_b = Σ_c alpha[a, b, c] B_c        (G G_H)
    TAB_WG      (w ∈ C, g ∈ B) -> B     C_a B_b = Σ_c gamma[a, b, c] B_c        (G_W G)
    TAB_GM      (g ∈ B, m ∈ B) -> C     B_a B_bᵀ = Σ_c delta[a, b, c] C_c       (G Mᵀ)
    TAB_MG      (m ∈ B, g ∈ B) -> R     B_aᵀ B_b = Σ_c eps[a, b, c] R_c         (Mᵀ G)
    TAB_THETA_B  x ∈ B -> B             X Θ: value[a, c] = Σ_b θ_b alpha[a, b, c]
    TAB_THETA_R  x ∈ R -> R             X Θ: value[a, c] = Σ_b θ_b p[a, b, c]

Maths (g the relation coefficients of G = ∂ℓ/∂Z, z = m + b the logit coefficients)::

    CE:  g_a = π (e^{z_a} / Σ_c v_c e^{z_c} − [a = label]),  ℓ = Nπ (log Σ_c v_c e^{z_c} − z_label)
    MSE: g_a = π (z_a − [a = label]),                         ℓ = Nπ ½ Σ_a v_a (z_a − [a = label])²

    dm = −η_W (GH(g, h) + λ_W m) − η_H (ΘB(WG(w, g) + λ_H m) + λ_E m)
    dw = −2 η_W (GM(g, m) + λ_W w)                 (G Mᵀ is symmetric in the span: C_aᵀ = C_a)
    dh = −2 η_H (ΘR(MG(m, g) + λ_H h) + λ_E h)     (V = UΘ is symmetric in the span: R_aᵀ = R_a)
    db = −η_b (Σ_a ρ_a g_a + λ_b b)

    objective = ℓ + λ_W/2 K w_0 + λ_H/2 N h_0 + λ_b/2 K b² + λ_E/2 Σ_a τ_a h_a,

with τ_a = φ_a · |R_a| (Θ⁺ = Σ_a φ_a R_a, |R_a| the number of pairs in R_a), so that
Σ_a τ_a h_a = tr(Θ⁺ G_H); relation 0 is the identity on both square sides (tr G_W = K w_0).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .expfn import exp_nonpositive
from .layout import C_LAM_B, C_LAM_E, C_LAM_H, C_LAM_W, C_LR_B, C_LR_H, C_LR_W, IP_BIAS, IP_LOSS, LOSS_CE

TI_NB = 0
TI_NC = 1
TI_NR = 2
TI_K = 3
TI_N = 4
TI_LABEL = 5
TI_COUPLED = 6
TI_OFF_COLV = 7
TI_OFF_ROWV = 8
TI_OFF_TRACE = 9
TI_TABLES = 10

TAB_GH = 0
TAB_WG = 1
TAB_GM = 2
TAB_MG = 3
TAB_THETA_B = 4
TAB_THETA_R = 5
N_TABLES = 6
#: index tuple length of each table: 3 for bilinear (a, b, c), 2 for linear (a, c)
TABLE_ARITY = (3, 3, 3, 3, 2, 2)
TI_HEADER = TI_TABLES + 3 * N_TABLES

TF_WEIGHT = 0
TF_WEIGHT_SUM = 1
TF_HEADER = 2


@njit(cache=True)
def reduced_state_size(ip, tab_i):
    """Length of the reduced state [m, w, h, (b)]."""
    return tab_i[TI_NB] + tab_i[TI_NC] + tab_i[TI_NR] + (1 if ip[IP_BIAS] else 0)


@njit(cache=True)
def reduced_work_size(tab_i):
    """Length of the scratch buffer :func:`reduced_field` and :func:`reduced_objective` need."""
    nB = tab_i[TI_NB]
    return 5 * nB + tab_i[TI_NC] + 2 * tab_i[TI_NR]


@njit(cache=True)
def _bilinear(x, y, out, tab_i, tab_f, table):
    """out_c = Σ_entries value · x_a · y_b over the sparse list of ``table`` (out zeroed first)."""
    for c in range(out.shape[0]):
        out[c] = 0.0
    d = TI_TABLES + 3 * table
    nnz = tab_i[d]
    ii = tab_i[d + 1]
    vv = tab_i[d + 2]
    for e in range(nnz):
        out[tab_i[ii + 2]] += tab_f[vv + e] * x[tab_i[ii]] * y[tab_i[ii + 1]]
        ii += 3


@njit(cache=True)
def _linear(x, out, tab_i, tab_f, table):
    """out_c = Σ_entries value · x_a over the sparse list of ``table`` (out zeroed first)."""
    for c in range(out.shape[0]):
        out[c] = 0.0
    d = TI_TABLES + 3 * table
    nnz = tab_i[d]
    ii = tab_i[d + 1]
    vv = tab_i[d + 2]
    for e in range(nnz):
        out[tab_i[ii + 1]] += tab_f[vv + e] * x[tab_i[ii]]
        ii += 2


@njit(cache=True)
def relation_logit_gradient(z, g, loss, tab_i, tab_f):
    """Write the relation coefficients g of G = ∂ℓ/∂Z for logit coefficients z; return ℓ.

    Every column of Z holds z_a on v_a entries, so the column softmax is
    e^{z_a} / Σ_c v_c e^{z_c}, computed with the maximum subtracted (no overflow, and
    log Σ kept exact for the loss).
    """
    nB = tab_i[TI_NB]
    label = tab_i[TI_LABEL]
    ov = tab_i[TI_OFF_COLV]
    pi = tab_f[TF_WEIGHT]
    total = tab_f[TF_WEIGHT_SUM]
    if loss == LOSS_CE:
        zmax = z[0]
        for a in range(1, nB):
            if z[a] > zmax:
                zmax = z[a]
        s = 0.0
        for a in range(nB):
            e = exp_nonpositive(z[a] - zmax)
            g[a] = e
            s += tab_f[ov + a] * e
        inv = 1.0 / s
        for a in range(nB):
            g[a] = pi * (g[a] * inv - (1.0 if a == label else 0.0))
        return total * (zmax + np.log(s) - z[label])
    col = 0.0
    for a in range(nB):
        r = z[a] - (1.0 if a == label else 0.0)
        g[a] = pi * r
        col += tab_f[ov + a] * r * r
    return 0.5 * total * col


@njit(cache=True)
def _logits(y, ip, tab_i, z):
    """z = m + b (the bias is uniform, so it adds to every logit relation)."""
    nB = tab_i[TI_NB]
    bias = 0.0
    if ip[IP_BIAS]:
        bias = y[nB + tab_i[TI_NC] + tab_i[TI_NR]]
    for a in range(nB):
        z[a] = y[a] + bias


@njit(cache=True)
def reduced_field(y, dy, ip, coef, tab_i, tab_f, work):
    """Write dy/dt of the reduced state ``y`` into ``dy`` (module docstring)."""
    nB = tab_i[TI_NB]
    nC = tab_i[TI_NC]
    nR = tab_i[TI_NR]
    m = y[:nB]
    w = y[nB:nB + nC]
    h = y[nB + nC:nB + nC + nR]
    z = work[:nB]
    g = work[nB:2 * nB]
    T1 = work[2 * nB:3 * nB]
    T2 = work[3 * nB:4 * nB]
    T3 = work[4 * nB:5 * nB]
    S = work[5 * nB:5 * nB + nC]
    U = work[5 * nB + nC:5 * nB + nC + nR]
    V = work[5 * nB + nC + nR:5 * nB + nC + 2 * nR]
    _logits(y, ip, tab_i, z)
    relation_logit_gradient(z, g, ip[IP_LOSS], tab_i, tab_f)

    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lam_w = coef[C_LAM_W]
    lam_h = coef[C_LAM_H]
    lam_e = coef[C_LAM_E]
    coupled = tab_i[TI_COUPLED] != 0

    # dM = −η_W (G G_H + λ_W M) − η_H ((G_W G + λ_H M) Θ + λ_E M)
    _bilinear(g, h, T1, tab_i, tab_f, TAB_GH)
    _bilinear(w, g, T2, tab_i, tab_f, TAB_WG)
    for a in range(nB):
        T2[a] += lam_h * m[a]
    if coupled:
        _linear(T2, T3, tab_i, tab_f, TAB_THETA_B)
    else:
        for a in range(nB):
            T3[a] = T2[a]
    for a in range(nB):
        dy[a] = -lr_w * (T1[a] + lam_w * m[a]) - lr_h * (T3[a] + lam_e * m[a])

    # dG_W = −η_W (S + Sᵀ + 2 λ_W G_W), S = G Mᵀ = Sᵀ in the span
    _bilinear(g, m, S, tab_i, tab_f, TAB_GM)
    for c in range(nC):
        dy[nB + c] = -2.0 * lr_w * (S[c] + lam_w * w[c])

    # dG_H = −η_H (V + Vᵀ) − 2 η_H λ_E G_H, V = (Mᵀ G + λ_H G_H) Θ = Vᵀ in the span
    _bilinear(m, g, U, tab_i, tab_f, TAB_MG)
    for r in range(nR):
        U[r] += lam_h * h[r]
    if coupled:
        _linear(U, V, tab_i, tab_f, TAB_THETA_R)
    else:
        for r in range(nR):
            V[r] = U[r]
    for r in range(nR):
        dy[nB + nC + r] = -2.0 * lr_h * (V[r] + lam_e * h[r])

    if ip[IP_BIAS]:
        ob = nB + nC + nR
        rv = tab_i[TI_OFF_ROWV]
        s = 0.0
        for a in range(nB):
            s += tab_f[rv + a] * g[a]
        dy[ob] = -coef[C_LR_B] * (s + coef[C_LAM_B] * y[ob])


@njit(cache=True)
def reduced_objective(y, ip, coef, tab_i, tab_f, work):
    """(objective, data loss ℓ) of the reduced state ``y``: the objective is
    ℓ + λ_W/2 tr G_W + λ_H/2 tr G_H + λ_b/2 ‖b‖² + λ_E/2 tr(Θ⁺ G_H), as ``fields.record``."""
    nB = tab_i[TI_NB]
    nC = tab_i[TI_NC]
    nR = tab_i[TI_NR]
    z = work[:nB]
    g = work[nB:2 * nB]
    _logits(y, ip, tab_i, z)
    data = relation_logit_gradient(z, g, ip[IP_LOSS], tab_i, tab_f)
    K = tab_i[TI_K]
    N = tab_i[TI_N]
    out = data + 0.5 * coef[C_LAM_W] * K * y[nB] + 0.5 * coef[C_LAM_H] * N * y[nB + nC]
    if ip[IP_BIAS]:
        b = y[nB + nC + nR]
        out += 0.5 * coef[C_LAM_B] * K * b * b
    if coef[C_LAM_E] != 0.0:
        ot = tab_i[TI_OFF_TRACE]
        tr = 0.0
        for r in range(nR):
            tr += tab_f[ot + r] * y[nB + nC + r]
        out += 0.5 * coef[C_LAM_E] * tr
    return out, data
