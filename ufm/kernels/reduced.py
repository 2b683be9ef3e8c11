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
caller-provided ``work`` of length :func:`reduced_work_size`). ``fast_exp`` is
imported from ``expfn`` and inlined here, so after editing ``expfn.py`` delete the caches
(``find ufm -name '*.nb[ic]' -delete``): numba's cache of this file does not see the change.

Packed model: ``ip`` and ``coef`` as in :mod:`ufm.kernels.fields` (this field reads
``ip[IP_LOSS]``, ``ip[IP_BIAS]`` and all of ``coef``: η_W, η_H, η_b, λ_W, λ_H, λ_b, λ_E). The
sizes and the coupling come from the tables; ``ip[IP_NTHETA]`` is not read (the coupling's
coefficients θ_a are folded into the tables).

State layout (``y``, float64): ``[m (nB), w (nC), h (nR), b (1, if bias)]``.

Work buffer (``work``, float64, length :func:`reduced_work_size` = 5 nB + 2 nC + 3 nR), in order::

    m (nB), w (nC), h (nR)     a copy of the state, so that one index space holds every operand
    g (nB)                     relation coefficients of G = ∂ℓ/∂Z
    T1 (nB)  = G G_H           T2 (nB) = G_W G + λ_H M        S (nC) = G Mᵀ
    U (nR)   = Mᵀ G + λ_H G_H  T3 (nB) = T2 Θ                 V (nR) = U Θ

Integer table ``tab_i`` (int64)::

    tab_i[TI_NB], tab_i[TI_NC], tab_i[TI_NR]   number of logit (B), class (C), context (R) relations
    tab_i[TI_K], tab_i[TI_N]                   classes K and contexts N
    tab_i[TI_LABEL]                            index of the label relation (B_label = Y)
    tab_i[TI_COUPLED]                          0 when Θ = I (T3 = T2 and V = U, no Θ pass)
    tab_i[TI_OFF_COLV]                         offset in tab_f of the column valencies v (nB)
    tab_i[TI_OFF_ROWV]                         offset in tab_f of the row valencies ρ (nB)
    tab_i[TI_OFF_TRACE]                        offset in tab_f of the trace weights τ (nR)
    tab_i[TI_NNZ_BILINEAR], tab_i[TI_NNZ_LINEAR]   numbers of bilinear and linear entries
    tab_i[TI_OFF_BILINEAR], tab_i[TI_OFF_LINEAR]   offsets in tab_i of their index tuples
    tab_i[TI_OFF_BVAL], tab_i[TI_OFF_LVAL]         offsets in tab_f of their values

Float table ``tab_f`` (float64)::

    tab_f[TF_WEIGHT]        π, the (equal) weight of every context
    tab_f[TF_WEIGHT_SUM]    Σ_i π_i = N π
    then v, ρ, τ and the entry values at the offsets above.

Entries (sparse lists of the nonzero structure constants; indices are positions in ``work``)::

    bilinear (i, j, k), value:  work[k] += value · work[i] · work[j]
        G G_H:  i in g, j in h, k in T1    B_a R_b = Σ_c alpha[a, b, c] B_c
        G_W G:  i in w, j in g, k in T2    C_a B_b = Σ_c gamma[a, b, c] B_c
        G Mᵀ:   i in g, j in m, k in S     B_a B_bᵀ = Σ_c delta[a, b, c] C_c
        Mᵀ G:   i in m, j in g, k in U     B_aᵀ B_b = Σ_c eps[a, b, c] R_c
    linear (i, k), value:       work[k] += value · work[i]      (only when coupled)
        T2 Θ:   i in T2, k in T3           value = Σ_b θ_b alpha[a, b, c]
        U Θ:    i in U, k in V             value = Σ_b θ_b p[a, b, c]

One pass over each list computes all products (one loop, no per-product calls); the entries are
interleaved by output so that consecutive updates rarely hit the same element.

Maths (g the relation coefficients of G, z = m + b the logit coefficients)::

    CE:  g_a = π (e^{z_a} / Σ_c v_c e^{z_c} − [a = label]),  ℓ = Nπ (log Σ_c v_c e^{z_c} − z_label)
    MSE: g_a = π (z_a − [a = label]),                         ℓ = Nπ ½ Σ_a v_a (z_a − [a = label])²

    dm = −η_W (T1 + λ_W m) − η_H (T3 + λ_E m)
    dw = −2 η_W (S + λ_W w)                 (G Mᵀ + M Gᵀ = 2S: S is symmetric in the span, C_aᵀ = C_a)
    dh = −2 η_H (V + λ_E h)                 (V + Vᵀ = 2V: V is symmetric in the span, R_aᵀ = R_a)
    db = −η_b (Σ_a ρ_a g_a + λ_b b)

    objective = ℓ + λ_W/2 K w_0 + λ_H/2 N h_0 + λ_b/2 K b² + λ_E/2 Σ_a τ_a h_a,

with τ_a = φ_a · |R_a| (Θ⁺ = Σ_a φ_a R_a, |R_a| the number of pairs in R_a), so that
Σ_a τ_a h_a = tr(Θ⁺ G_H); relation 0 is the identity on both square sides (tr G_W = K w_0).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from .expfn import fast_exp
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
TI_NNZ_BILINEAR = 10
TI_NNZ_LINEAR = 11
TI_OFF_BILINEAR = 12
TI_OFF_LINEAR = 13
TI_OFF_BVAL = 14
TI_OFF_LVAL = 15
TI_HEADER = 16

TF_WEIGHT = 0
TF_WEIGHT_SUM = 1
TF_HEADER = 2


def work_layout(nB: int, nC: int, nR: int) -> dict:
    """Offsets of the blocks of the work buffer (module docstring), for the packer and tests."""
    out, off = {}, 0
    for name, n in (("m", nB), ("w", nC), ("h", nR), ("g", nB), ("T1", nB), ("T2", nB), ("S", nC),
                    ("U", nR), ("T3", nB), ("V", nR)):
        out[name] = off
        off += n
    out["size"] = off
    return out


# Performance notes, measured per evaluation on factorial (3, 3) (12 coordinates, 132 entries) on
# a loaded 2-core machine, each step against the previous one in the same process: buffers
# addressed by offsets instead of slices passed to helper functions (numba keeps the slices'
# reference counts across calls): 590 -> 445 ns; indices cast to unsigned before use (no
# negative-index wraparound test): -> 310 ns; all products in one pass over one entry list
# instead of one call per product: -> 240 ns (prototype); entries interleaved by output: -5 %;
# the entry lists sliced once with the loop bounded by the slice's length: 350 -> 285 ns.


@njit(cache=True)
def reduced_state_size(ip, tab_i):
    """Length of the reduced state [m, w, h, (b)]."""
    return tab_i[TI_NB] + tab_i[TI_NC] + tab_i[TI_NR] + (1 if ip[IP_BIAS] else 0)


@njit(cache=True)
def reduced_work_size(tab_i):
    """Length of the scratch buffer :func:`reduced_field` and :func:`reduced_objective` need."""
    return 5 * tab_i[TI_NB] + 2 * tab_i[TI_NC] + 3 * tab_i[TI_NR]


@njit(cache=True)
def _logit_gradient(y, ip, tab_i, tab_f, work, og):
    """Write the relation coefficients of G = ∂ℓ/∂Z into work[og:og + nB]; return ℓ.

    Every column of Z holds z_a = m_a + b on v_a entries, so the column softmax is
    e^{z_a} / Σ_c v_c e^{z_c}, computed with the maximum subtracted (no overflow, and
    log Σ kept exact for the loss).
    """
    nB = tab_i[TI_NB]
    label = tab_i[TI_LABEL]
    ov = tab_i[TI_OFF_COLV]
    pi = tab_f[TF_WEIGHT]
    total = tab_f[TF_WEIGHT_SUM]
    bias = 0.0
    if ip[IP_BIAS]:
        bias = y[nB + tab_i[TI_NC] + tab_i[TI_NR]]
    if ip[IP_LOSS] == LOSS_CE:
        zsum = 0.0
        for a in range(nB):
            zsum += y[a]
        if not np.isfinite(zsum):
            # a diverged state: report NaN (the driver's non-finite check) rather than feed
            # NaN through the softmax (the loss would be NaN anyway)
            for a in range(nB):
                work[og + a] = np.nan
            return np.nan
        zmax = y[0]
        for a in range(1, nB):
            if y[a] > zmax:
                zmax = y[a]
        s = 0.0
        for a in range(nB):
            e = fast_exp(y[a] - zmax)      # the uniform bias cancels in the softmax
            work[og + a] = e
            s += tab_f[ov + a] * e
        inv = 1.0 / s
        for a in range(nB):
            work[og + a] = pi * (work[og + a] * inv - (1.0 if a == label else 0.0))
        return total * (zmax + np.log(s) - y[label])
    col = 0.0
    for a in range(nB):
        r = y[a] + bias - (1.0 if a == label else 0.0)
        work[og + a] = pi * r
        col += tab_f[ov + a] * r * r
    return 0.5 * total * col


@njit(cache=True)
def reduced_field(y, dy, ip, coef, tab_i, tab_f, work):
    """Write dy/dt of the reduced state ``y`` into ``dy`` (module docstring)."""
    nB = tab_i[TI_NB]
    nC = tab_i[TI_NC]
    nR = tab_i[TI_NR]
    n = nB + nC + nR
    ow = nB
    oh = nB + nC
    og = n
    o1 = og + nB
    o2 = o1 + nB
    oS = o2 + nB
    oU = oS + nC
    o3 = oU + nR
    oV = o3 + nB
    end = oV + nR
    for i in range(n):
        work[i] = y[i]
    _logit_gradient(y, ip, tab_i, tab_f, work, og)
    for i in range(o1, end):
        work[i] = 0.0

    # every product at once: T1 = G G_H, T2 = G_W G, S = G Mᵀ, U = Mᵀ G
    nb = tab_i[TI_NNZ_BILINEAR]
    b_idx = tab_i[tab_i[TI_OFF_BILINEAR]:tab_i[TI_OFF_BILINEAR] + 3 * nb]
    b_val = tab_f[tab_i[TI_OFF_BVAL]:tab_i[TI_OFF_BVAL] + nb]
    ii = 0
    for e in range(b_val.shape[0]):
        i = uint64(b_idx[ii])
        j = uint64(b_idx[ii + 1])
        k = uint64(b_idx[ii + 2])
        work[k] += b_val[e] * work[i] * work[j]
        ii += 3
    lam_h = coef[C_LAM_H]
    for a in range(nB):
        work[o2 + a] += lam_h * y[a]
    for r in range(nR):
        work[oU + r] += lam_h * y[oh + r]
    # T3 = T2 Θ, V = U Θ
    if tab_i[TI_COUPLED] != 0:
        nl = tab_i[TI_NNZ_LINEAR]
        l_idx = tab_i[tab_i[TI_OFF_LINEAR]:tab_i[TI_OFF_LINEAR] + 2 * nl]
        l_val = tab_f[tab_i[TI_OFF_LVAL]:tab_i[TI_OFF_LVAL] + nl]
        ii = 0
        for e in range(l_val.shape[0]):
            i = uint64(l_idx[ii])
            k = uint64(l_idx[ii + 1])
            work[k] += l_val[e] * work[i]
            ii += 2
    else:
        for a in range(nB):
            work[o3 + a] = work[o2 + a]
        for r in range(nR):
            work[oV + r] = work[oU + r]

    lr_w = coef[C_LR_W]
    lr_h = coef[C_LR_H]
    lam_w = coef[C_LAM_W]
    lam_e = coef[C_LAM_E]
    for a in range(nB):
        dy[a] = -lr_w * (work[o1 + a] + lam_w * y[a]) - lr_h * (work[o3 + a] + lam_e * y[a])
    for c in range(nC):
        dy[ow + c] = -2.0 * lr_w * (work[oS + c] + lam_w * y[ow + c])
    for r in range(nR):
        dy[oh + r] = -2.0 * lr_h * (work[oV + r] + lam_e * y[oh + r])
    if ip[IP_BIAS]:
        rv = tab_i[TI_OFF_ROWV]
        s = 0.0
        for a in range(nB):
            s += tab_f[rv + a] * work[og + a]
        dy[n] = -coef[C_LR_B] * (s + coef[C_LAM_B] * y[n])


@njit(cache=True)
def reduced_objective(y, ip, coef, tab_i, tab_f, work):
    """(objective, data loss ℓ) of the reduced state ``y``: the objective is
    ℓ + λ_W/2 tr G_W + λ_H/2 tr G_H + λ_b/2 ‖b‖² + λ_E/2 tr(Θ⁺ G_H), as ``fields.record``."""
    nB = tab_i[TI_NB]
    nC = tab_i[TI_NC]
    nR = tab_i[TI_NR]
    data = _logit_gradient(y, ip, tab_i, tab_f, work, 0)
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
