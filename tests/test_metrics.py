"""Tests of ufm.metrics on hand-made configurations with known answers.

Conventions as in the module: H is d×N (one column per context), W is K×d, Z = WH + b1ᵀ is K×N,
gram_H = HᵀH, gram_W = WWᵀ.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import independent
import ufm
import ufm.bridge as br
from ufm.bridge.observables import observe
from ufm.metrics import (
    PINV_RTOL,
    TransientSummary,
    cdnv,
    class_means_gram,
    cosine,
    effective_rank,
    eigenbasis,
    etf_distance,
    etf_target,
    kernel_alignment,
    nc1,
    nc2,
    nc3,
    nc4,
    semantic_gap,
    spectrum_in_basis,
    transient_summary,
)


# ------------------------------------------------------------------------------------------
# hand-made configurations
# ------------------------------------------------------------------------------------------

def simplex_etf(K: int, d: int, rng, radius: float = 1.0) -> np.ndarray:
    """d×K matrix whose columns form a simplex ETF of the given radius, randomly rotated."""
    Q, _ = np.linalg.qr(rng.standard_normal((d, K)))          # d×K orthonormal columns
    E = np.sqrt(K / (K - 1)) * (np.eye(K) - 1.0 / K)           # unit-norm ETF in R^K
    return radius * Q @ E


def averaging(labels: np.ndarray, K: int) -> np.ndarray:
    """N×K averaging matrix A_ik = [y_i = k]/n_k."""
    A = np.zeros((labels.size, K))
    A[np.arange(labels.size), labels] = 1.0
    return A / A.sum(axis=0)


def direct_nc1(H: np.ndarray, labels: np.ndarray) -> float:
    """Papyan et al.'s Tr(Σ_W Σ_B⁺)/K straight from features."""
    K = labels.max() + 1
    N = H.shape[1]
    mu = np.stack([H[:, labels == k].mean(axis=1) for k in range(K)], axis=1)   # d×K
    R = H - mu[:, labels]
    Sw = R @ R.T / N
    Mc = mu - mu.mean(axis=1, keepdims=True)
    Sb = Mc @ Mc.T / K
    return float(np.trace(Sw @ np.linalg.pinv(Sb, rtol=PINV_RTOL, hermitian=True)) / K)


def random_psd(N: int, rng, rank: int | None = None) -> np.ndarray:
    X = rng.standard_normal((rank or N, N))
    return X.T @ X


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# ------------------------------------------------------------------------------------------
# cosine, ETF target and distance
# ------------------------------------------------------------------------------------------

def test_cosine_matches_features_and_handles_zero_rows(rng):
    H = rng.standard_normal((5, 4))
    H[:, 2] = 0.0                                          # a zero-norm context
    cos = cosine(H.T @ H)
    n = np.linalg.norm(H, axis=0)
    for i, j in [(0, 1), (1, 3), (0, 3)]:
        assert cos[i, j] == pytest.approx(H[:, i] @ H[:, j] / (n[i] * n[j]), abs=1e-14)
    assert np.all(cos[2, [0, 1, 3]] == 0.0) and np.all(cos[[0, 1, 3], 2] == 0.0)
    np.testing.assert_array_equal(np.diag(cos), 1.0)


def test_etf_target_values():
    E = etf_target([0, 0, 1, 2])
    K = 3
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) - 1.0 / K
    np.testing.assert_allclose(E, expected, atol=1e-15)
    np.testing.assert_allclose(etf_target(n=4), np.eye(4) - 0.25, atol=1e-15)
    # one-hot labels with every context its own class give P_n as well
    np.testing.assert_allclose(etf_target(np.arange(4)), etf_target(n=4), atol=1e-15)


def test_etf_distance_zero_at_rotated_scaled_etf(rng):
    K, d = 5, 17
    W = simplex_etf(K, d, rng, radius=3.7).T                   # K×d classifier rows
    assert etf_distance(W @ W.T) < 1e-12
    assert nc2(W @ W.T) < 1e-12
    # a common offset of all rows is removed by the global centring
    W_off = W + rng.standard_normal(d)
    assert etf_distance(W_off @ W_off.T) < 1e-12

    # collapsed features on a rotated ETF, imbalanced classes, with a global mean offset
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4])
    M = simplex_etf(K, d, rng, radius=1.3)
    H = M[:, labels] + rng.standard_normal((d, 1))
    G = H.T @ H
    assert etf_distance(G, labels) < 1e-12
    assert nc2(G, labels) < 1e-12

    # every context its own class (the one-hot NTP setting, labels None)
    N = 7
    Hn = simplex_etf(N, 12, rng, radius=11.0)
    assert etf_distance(Hn.T @ Hn) < 1e-12


def test_etf_distance_positive_off_etf(rng):
    """Off the ETF the distances equal the definition recomputed by tests/independent.py
    (explicit simplex vertices; measured agreement 1e-16, values 0.35 … 0.86)."""
    G = random_psd(6, rng)
    dist = etf_distance(G)
    assert dist == pytest.approx(independent.etf_distance(G), rel=0, abs=1e-14) and dist > 0.1
    # collapsed features that are *not* on an ETF: NC2 is the ETF distance of the class means
    labels = np.repeat(np.arange(3), 4)
    M = rng.standard_normal((8, 3))
    H = M[:, labels]
    assert nc2(H.T @ H, labels) == pytest.approx(independent.etf_distance(M.T @ M), rel=0, abs=1e-14)
    assert nc2(H.T @ H, labels) > 0.05
    # ETF means but with within-class noise: nc2 (means only) stays 0 ...
    M = simplex_etf(3, 8, rng)
    noise = rng.standard_normal((8, 12))
    noise -= (noise @ averaging(labels, 3))[:, labels]      # zero-mean noise within each class
    H = M[:, labels] + 0.3 * noise
    assert nc2(H.T @ H, labels) < 1e-12
    # ... while the full-Gram distance to the collapsed ETF sees the scatter
    dist = etf_distance(H.T @ H, labels)
    assert dist == pytest.approx(independent.etf_distance(H.T @ H, labels), rel=0, abs=1e-14) and dist > 0.05


def test_etf_distance_degenerate_is_nan():
    assert np.isnan(etf_distance(np.zeros((4, 4))))
    assert np.isnan(etf_distance(np.full((4, 4), 2.5)))      # all vectors equal
    assert np.isnan(nc2(np.zeros((6, 6)), [0, 0, 1, 1, 2, 2]))


def test_kernel_alignment_invariances(rng):
    A = random_psd(6, rng)
    B = random_psd(6, rng, rank=2)
    assert kernel_alignment(A, A) == pytest.approx(1.0, abs=1e-14)
    assert kernel_alignment(A, 3.0 * A + 5.0) == pytest.approx(1.0, abs=1e-14)   # + 5·11ᵀ
    assert kernel_alignment(A, B) == pytest.approx(kernel_alignment(B, A), abs=1e-15)
    C = np.eye(6) - 1.0 / 6
    CAC, CBC = C @ A @ C, C @ B @ C
    expected = np.sum(CAC * CBC) / (np.linalg.norm(CAC) * np.linalg.norm(CBC))
    assert kernel_alignment(A, B) == pytest.approx(expected, abs=1e-14)
    assert kernel_alignment(A, B) < 0.99
    # uncentred: scale invariant but not invariant to a constant shift
    assert kernel_alignment(A, 4.0 * A, centred=False) == pytest.approx(1.0, abs=1e-14)
    shifted = A + 50.0
    uncentred = np.sum(A * shifted) / (np.linalg.norm(A) * np.linalg.norm(shifted))
    assert kernel_alignment(A, shifted, centred=False) == pytest.approx(uncentred, abs=1e-14)
    assert uncentred < 0.99
    assert np.isnan(kernel_alignment(A, np.ones((6, 6))))   # centred constant kernel is 0


# ------------------------------------------------------------------------------------------
# semantic gap
# ------------------------------------------------------------------------------------------

# 2×2 factorial: contexts (0,0), (0,1), (1,0), (1,1). Pairs sharing attribute 0:
# (0,1), (2,3); sharing attribute 1: (0,2), (1,3); sharing none: (0,3), (1,2).
FACTORIAL_2x2 = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
COS_A0, COS_A1, COS_NONE = 0.5, 0.2, -0.2


def factorial_gram(norms) -> np.ndarray:
    C = np.eye(4)
    for (i, j), c in {(0, 1): COS_A0, (2, 3): COS_A0, (0, 2): COS_A1, (1, 3): COS_A1,
                      (0, 3): COS_NONE, (1, 2): COS_NONE}.items():
        C[i, j] = C[j, i] = c
    assert np.linalg.eigvalsh(C).min() > 0                  # a genuine Gram matrix
    D = np.diag(norms)
    return D @ C @ D


def test_semantic_gap_hand_computed():
    G = factorial_gram([1.0, 2.0, 0.5, 3.0])                # unequal norms: cosines are used
    # sharing pairs: two with cos 0.5, two with cos 0.2; baseline cos −0.2
    expected = (2 * COS_A0 + 2 * COS_A1) / 4 - COS_NONE     # 0.55
    # raw cosines (centred=False): the hand-made cosines are those of the uncentred vectors
    assert semantic_gap(G, FACTORIAL_2x2, centred=False) == pytest.approx(expected, abs=1e-14)
    per = semantic_gap(G, FACTORIAL_2x2, centred=False, per_attribute=True)
    assert set(per) == {"all", 0, 1}
    assert per["all"] == pytest.approx(expected, abs=1e-14)
    assert per[0] == pytest.approx(COS_A0 - COS_NONE, abs=1e-14)   # 0.7
    assert per[1] == pytest.approx(COS_A1 - COS_NONE, abs=1e-14)   # 0.4


def test_semantic_gap_excludes_same_label_pairs():
    G = factorial_gram([1.0, 1.0, 1.0, 1.0])
    labels = [0, 0, 1, 1]                                   # removes (0,1) and (2,3): attribute-0 pairs
    assert semantic_gap(G, FACTORIAL_2x2, labels=labels, centred=False) == pytest.approx(COS_A1 - COS_NONE, abs=1e-14)
    with pytest.raises(ValueError, match="attributes: no pair of contexts with different labels "
                                         "has equal values of attribute 0"):
        semantic_gap(G, FACTORIAL_2x2, labels=labels, per_attribute=True)


# Several samples per context (K < N): samples of one context share its label and every
# attribute, and collapse together through NC1 whatever the semantics, so the semantic gap
# leaves equal-label pairs out. The rule is implemented three times — ufm.metrics via
# Trajectory.metric, ufm.bridge.observables, the sweep summary (ufm.sweeps.engine) — and each
# is checked here against tests/independent.py, on Grams where leaving the pairs in would move
# the gap by 0.03 … 0.17 (measured), far beyond the round-off agreement (1e-16).

TWO_PER_CONTEXT = ufm.settings.factorial((2, 3), samples_per_context=2)     # K = 6 < N = 12


def two_per_context_features(rng, T=4, d=5):
    """(T, d, N) features: one random mean per context and save, plus 30% noise per sample."""
    context = np.repeat(np.arange(6), 2)
    return rng.standard_normal((T, d, 6))[:, :, context] + 0.3 * rng.standard_normal((T, d, 12))


def gaps_with_and_without_exclusion(grams, problem):
    with_ = np.array([independent.semantic_gap(g, problem.attributes, problem.labels) for g in grams])
    without = np.array([independent.semantic_gap(g, problem.attributes) for g in grams])
    return with_, without


def test_semantic_gap_k_below_n_trajectory_metric(rng):
    p = TWO_PER_CONTEXT
    H = two_per_context_features(rng)
    G = np.einsum("tdi,tdj->tij", H, H)
    want, unexcluded = gaps_with_and_without_exclusion(G, p)
    assert np.abs(want - unexcluded).min() > 0.1                 # measured 0.13 … 0.17
    tr = ufm.Trajectory(t=np.arange(4.0), loss=np.zeros(4), gram_H=G, problem=p)
    np.testing.assert_allclose(tr.metric("semantic_gap"), want, rtol=0, atol=1e-15)   # measured 1.4e-17


def test_semantic_gap_k_below_n_bridge_observables(rng):
    p = TWO_PER_CONTEXT
    H = two_per_context_features(rng)                              # core convention (T, d, N)
    run = br.Run(steps=np.arange(4), H=H.transpose(0, 2, 1), W=rng.standard_normal((4, 6, 5)), labels=p.labels,
                 attributes=p.attributes)
    assert (run.K, run.N) == (6, 12)
    want, unexcluded = gaps_with_and_without_exclusion(np.einsum("tdi,tdj->tij", H, H), p)
    assert np.abs(want - unexcluded).min() > 0.1
    g = run.grams()
    observed = observe(g["gram_H"], g["gram_W"], run.problem(), ["semantic_gap"])["semantic_gap"][:, 0]
    np.testing.assert_allclose(observed, want, rtol=0, atol=1e-15)                     # measured 1.1e-16
    np.testing.assert_allclose(run.metrics()["semantic_gap"], want, rtol=0, atol=1e-15)


def test_semantic_gap_k_below_n_sweep_summary():
    """The coupled flow with two samples per context: with the same-label pairs left out the
    gap collapses (at t ≈ 403); left in, the same-context pairs (cosine → 1) keep it above the
    threshold to the end — so the summary's collapse time tells the two rules apart."""
    spec = {"setting": "factorial", "levels": [2, 3], "samples_per_context": 2, "d": 8, "scale": 0.3,
            "lambda": 1e-2, "beta": 0.8, "seed": 1}
    t = np.concatenate([[0.0], np.geomspace(1e-2, 1e3, 15)])
    model, init = ufm.sweeps.build(spec)
    assert (model.K, model.N) == (6, 12)
    ref = ufm.solve(model, init, t)                                # independent of the sweep
    want, unexcluded = gaps_with_and_without_exclusion(ref.gram_H, TWO_PER_CONTEXT)
    summary = independent.transient(t, want, 0.02)
    assert summary["collapsed"] and not independent.transient(t, unexcluded, 0.02)["collapsed"]
    row = ufm.sweep([spec], t, threads=1, progress=False)[0]
    assert row["gap_final"] == pytest.approx(want[-1], rel=0, abs=1e-15)              # measured 0
    assert row["gap_peak"] == pytest.approx(summary["peak"], rel=1e-14)
    assert row["t_collapse"] == pytest.approx(summary["t_collapse"], rel=1e-14)
    assert row["collapsed"]


def test_semantic_gap_zero_at_etf(rng):
    attrs = np.array([[a, b] for a in range(3) for b in range(3)])
    H = simplex_etf(9, 15, rng, radius=2.3)
    per = semantic_gap(H.T @ H, attrs, per_attribute=True)
    for value in per.values():
        assert abs(value) < 1e-12


def test_semantic_gap_empty_pair_sets():
    G = factorial_gram([1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="attributes: no pair of contexts shares an attribute value"):
        semantic_gap(G, np.arange(4))
    with pytest.raises(ValueError, match="attributes: every pair .* baseline"):
        semantic_gap(G, np.zeros((4, 1), dtype=int))


# ------------------------------------------------------------------------------------------
# neural collapse
# ------------------------------------------------------------------------------------------

def test_class_means_gram(rng):
    labels = np.array([0, 1, 1, 2, 2, 2])
    H = rng.standard_normal((4, 6))
    mu = np.stack([H[:, labels == k].mean(axis=1) for k in range(3)], axis=1)
    np.testing.assert_allclose(class_means_gram(H.T @ H, labels), mu.T @ mu, atol=1e-13)


def test_nc1_population_value(rng):
    # Means on an ETF of radius r, isotropic noise of variance s² per coordinate:
    # NC1 = s²(K−1)²/(K r²) = 0.0625 here. Statistical error of the estimate: Σ_W restricted to
    # the (K−1)-dim span of the means is estimated from N−K ≈ 2000 residuals, relative std
    # ≈ sqrt(2/(3N)) ≈ 1.8%; the empirical means carry noise s/√n per coordinate, moving Σ_B by
    # ≈ 2s/(r√n)/√K ≈ 0.7% and biasing it by d s²/(n r²) ≈ 0.1% (d = 20 ≪ n = 500). Over 200
    # seeds the ratio to the population value measured 0.999 ± 0.022; a 10% tolerance is
    # ≈ 4.5 standard deviations while still catching any factor error (K, K−1, N vs n).
    K, d, n, r, s = 4, 20, 500, 3.0, 0.5
    labels = np.repeat(np.arange(K), n)
    H = simplex_etf(K, d, rng, radius=r)[:, labels] + s * rng.standard_normal((d, K * n))
    population = s**2 * (K - 1) ** 2 / (K * r**2)
    assert nc1(H.T @ H, labels) == pytest.approx(population, rel=0.10)


@pytest.mark.parametrize("d, K", [(6, 3), (3, 5)])         # (3, 5): Σ_B rank-deficient (rank d)
def test_nc1_gram_equals_features(rng, d, K):
    labels = np.concatenate([np.arange(K), rng.integers(0, K, size=4 * K)])   # imbalanced
    H = rng.standard_normal((d, labels.size)) + 2.0 * rng.standard_normal((d, K))[:, labels]
    value = nc1(H.T @ H, labels)
    expected = direct_nc1(H, labels)
    assert value == pytest.approx(expected, rel=1e-10)
    assert value > 0.0


def test_nc1_collapsed_and_degenerate(rng):
    labels = np.repeat(np.arange(3), 3)
    H = simplex_etf(3, 5, rng)[:, labels]
    assert nc1(H.T @ H, labels) < 1e-20
    assert np.isnan(nc1(np.zeros((9, 9)), labels))
    Hsame = np.ones((5, 9))                                   # every class mean the same
    assert np.isnan(nc1(Hsame.T @ Hsame, labels))


def test_nc3_self_dual_and_random(rng):
    K, d = 4, 9
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 2])
    H = rng.standard_normal((d, labels.size))
    Mt = H @ averaging(labels, K) @ (np.eye(K) - 1.0 / K)
    W = 2.5 * Mt.T                                            # self-dual classifier
    b = rng.standard_normal(K)
    for logits in (W @ H, W @ H + b[:, None]):
        assert nc3(W @ W.T, H.T @ H, logits, labels) < 1e-12
    # anti-aligned gives the maximum 4
    assert nc3(W @ W.T, H.T @ H, -W @ H, labels) == pytest.approx(4.0, abs=1e-12)
    # random W, H, with a bias in the logits: equals the direct feature computation
    W = rng.standard_normal((K, d))
    value = nc3(W @ W.T, H.T @ H, W @ H + b[:, None], labels)
    assert value == pytest.approx(independent.nc3(W, H, labels), abs=1e-12)
    assert 0.0 < value < 4.0


def test_nc3_rejects_inconsistent_logits(rng):
    K, d = 3, 5
    labels = np.array([0, 1, 2, 0, 1, 2])
    H = rng.standard_normal((d, 6))
    W = 1e-3 * rng.standard_normal((K, d))
    with pytest.raises(ValueError, match="logits: inconsistent with gram_W and gram_H"):
        nc3(W @ W.T, H.T @ H, 1e3 * rng.standard_normal((K, 6)), labels)


def test_nc4_collapsed_and_constructed_mismatch(rng):
    K = 3
    labels = np.repeat(np.arange(K), 2)
    M = simplex_etf(K, 6, rng, radius=2.0)
    H = M[:, labels]                                          # collapsed, well separated
    W = M.T                                                   # classifier = class means
    assert nc4(H.T @ H, W @ H, labels) == 0.0
    # logits that pick a wrong class for contexts 1 and 4; NCC picks the true class everywhere
    predicted = labels.copy()
    predicted[1], predicted[4] = 2, 0
    logits = np.eye(K)[:, predicted]
    assert nc4(H.T @ H, logits, labels) == pytest.approx(2 / 6, abs=1e-15)
    # 1-D features: class 0 at 0, 0, 3 (mean 1), class 1 at 4, 4 (mean 4). The context at 3 is
    # nearer to mean 4 (distance 1) than to mean 1 (distance 2): NCC says class 1, while the
    # logits say its true class 0 -> one mismatch out of five.
    h = np.array([[0.0, 0.0, 3.0, 4.0, 4.0]])
    lab = np.array([0, 0, 0, 1, 1])
    assert nc4(h.T @ h, np.eye(2)[:, lab], lab) == pytest.approx(1 / 5, abs=1e-15)


def test_cdnv_against_features(rng):
    K, d = 4, 7
    labels = np.concatenate([np.arange(K), rng.integers(0, K, size=15)])
    H = rng.standard_normal((d, labels.size)) + 3.0 * rng.standard_normal((d, K))[:, labels]
    mu = np.stack([H[:, labels == k].mean(axis=1) for k in range(K)], axis=1)
    V = np.array([np.mean(np.sum((H[:, labels == k] - mu[:, [k]]) ** 2, axis=0)) for k in range(K)])
    terms = [(V[k] + V[l]) / (2 * np.sum((mu[:, k] - mu[:, l]) ** 2))
             for k in range(K) for l in range(K) if k != l]
    assert cdnv(H.T @ H, labels) == pytest.approx(np.mean(terms), rel=1e-10)
    Hc = mu[:, labels]
    assert cdnv(Hc.T @ Hc, labels) < 1e-12


# ------------------------------------------------------------------------------------------
# spectra
# ------------------------------------------------------------------------------------------

def test_effective_rank(rng):
    for n in (2, 5, 12):
        assert effective_rank(np.eye(n) - 1.0 / n) == pytest.approx(n - 1, abs=1e-12)
    v = rng.standard_normal(6)
    assert effective_rank(np.outer(v, v)) == pytest.approx(1.0, abs=1e-12)
    assert effective_rank(np.diag([2.0, 2.0, 0.0, 0.0])) == pytest.approx(2.0, abs=1e-14)
    assert effective_rank(np.zeros((3, 3))) == 0.0


def test_spectrum_in_basis_keeps_mode_identity(rng):
    N = 5
    V, _ = np.linalg.qr(rng.standard_normal((N, N)))
    lam1 = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    lam2 = np.array([1.0, 4.0, 3.0, 2.0, 5.0])               # modes 0 and 4 have crossed
    G1, G2 = V @ np.diag(lam1) @ V.T, V @ np.diag(lam2) @ V.T
    vals, basis = eigenbasis(G1)                              # fixed reference basis
    np.testing.assert_allclose(vals, lam1, atol=1e-12)
    np.testing.assert_allclose(basis.T @ basis, np.eye(N), atol=1e-12)
    np.testing.assert_allclose(spectrum_in_basis(G1, basis), lam1, atol=1e-12)
    np.testing.assert_allclose(spectrum_in_basis(G2, basis), lam2, atol=1e-12)
    # re-sorting would have lost the crossing
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(G2))[::-1], lam1, atol=1e-12)
    # projector form: mean eigenvalue per subspace
    P_a, P_b = V[:, :2] @ V[:, :2].T, V[:, 2:] @ V[:, 2:].T
    np.testing.assert_allclose(spectrum_in_basis(G2, [P_a, P_b]), [2.5, 10.0 / 3.0], atol=1e-12)
    # association-scheme projectors of G = a I + c 11ᵀ: eigenvalues a + n c and a
    a, c, n = 0.7, 0.3, 6
    G = a * np.eye(n) + c
    J = np.full((n, n), 1.0 / n)
    np.testing.assert_allclose(spectrum_in_basis(G, np.stack([J, np.eye(n) - J])),
                               [a + n * c, a], atol=1e-14)


# ------------------------------------------------------------------------------------------
# transient summary
# ------------------------------------------------------------------------------------------

def test_transient_summary_bump():
    x = np.linspace(-2.0, 8.0, 201)                            # log t, step h = 0.05, x[80] = 2
    h = x[1] - x[0]
    t = np.exp(x)
    gap = np.exp(-((x - 2.0) ** 2))
    thr = 0.02
    s = transient_summary(t, gap, threshold=thr)
    assert isinstance(s, TransientSummary)
    assert s.collapsed is True
    assert s.peak == pytest.approx(1.0, abs=1e-12)
    assert s.t_peak == pytest.approx(np.exp(2.0), rel=1e-12)
    # analytic crossing: (x − 2)² = ln(1/thr). Linear interpolation of g in x over a bracket of
    # width h errs by at most h²/8·max|g''| in g, i.e. h²/8·max|g''|/min|g'| in x.
    xc = 2.0 + np.sqrt(np.log(1.0 / thr))
    xs = np.linspace(xc - h, xc + h, 101)
    g = np.exp(-((xs - 2.0) ** 2))
    g1 = np.abs(-2.0 * (xs - 2.0) * g)
    g2 = np.abs((4.0 * (xs - 2.0) ** 2 - 2.0) * g)
    bound = h**2 / 8.0 * g2.max() / g1.min()                  # ≈ 1.5e-3, well below h
    assert abs(np.log(s.t_collapse) - xc) <= bound
    assert bound < h / 10                                      # a non-interpolated answer would fail
    d = s.as_dict()
    assert d == {"peak": s.peak, "t_peak": s.t_peak, "t_collapse": s.t_collapse, "collapsed": True}
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.peak = 2.0                                           # type: ignore[misc]


def test_transient_summary_never_collapses_and_edge_cases():
    x = np.linspace(-2.0, 8.0, 201)
    s = transient_summary(np.exp(x), 0.5 + np.exp(-((x - 2.0) ** 2)))
    assert s.collapsed is False and np.isnan(s.t_collapse)
    assert s.peak == pytest.approx(1.5, abs=1e-12)
    # t starting at 0: the bracket (t = 1, 2) is positive, so interpolate in log t there:
    # φ = (0.5 − 0.02)/(0.5 − 0.01), t_collapse = exp(φ log 2) = 2^φ
    t = np.arange(6.0)
    s = transient_summary(t, [1.0, 0.5, 0.01, 0.0, 0.0, 0.0], threshold=0.02)
    assert s.t_collapse == pytest.approx(2.0 ** (0.48 / 0.49), rel=1e-14)
    # a bracket starting at a non-positive time: the plain save time is returned
    s = transient_summary(t - 1.0, [1.0, 0.01, 0.0, 0.0, 0.0, 0.0])
    assert s.t_collapse == 0.0                                 # bracket starts at t = −1 ≤ 0
    # the peak itself below the threshold: collapsed at the peak
    s = transient_summary([1.0, 2.0], [0.01, 0.005])
    assert s.collapsed and s.t_collapse == 1.0


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------

G4 = np.eye(4)
LAB4 = np.array([0, 0, 1, 1])


@pytest.mark.parametrize("call, exc, match", [
    (lambda: cosine(np.ones((3, 4))), ValueError, r"gram: expected a square \(N, N\) matrix, got shape \(3, 4\)"),
    (lambda: cosine(np.ones(3)), ValueError, r"gram: expected a 2-D array"),
    (lambda: cosine([[1.0, 2.0], [0.0, 1.0]]), ValueError, "gram: expected a symmetric"),
    (lambda: cosine([[1.0, np.nan], [np.nan, 1.0]]), ValueError, "gram: expected finite"),
    (lambda: cosine([[-1.0, 0.0], [0.0, 1.0]]), ValueError, "gram: expected a non-negative diagonal"),
    (lambda: cosine([["a", "b"], ["c", "d"]]), TypeError, "gram: expected an array of real numbers"),
    (lambda: etf_target(), TypeError, "n: expected the number of contexts"),
    (lambda: etf_target(n=1), ValueError, "n: expected an integer >= 2"),
    (lambda: etf_target([0, 0, 1], n=4), ValueError, "n: expected n = len"),
    (lambda: etf_target([0, 0, 0]), ValueError, "labels: expected at least 2 distinct classes"),
    (lambda: etf_distance(G4, [0, 1, 1]), ValueError, r"labels: expected shape \(4,\)"),
    (lambda: etf_distance(G4, [0, 0, 2, 2]), ValueError, "labels: expected every class 0 … 2 .* class 1 has none"),
    (lambda: etf_distance(G4, [0, 0, -1, 1]), ValueError, "labels: expected class indices >= 0"),
    (lambda: etf_distance(G4, [0, 0.5, 1, 1]), ValueError, "labels: expected integer values"),
    (lambda: etf_distance(np.eye(1)), ValueError, "gram: expected a square .* N >= 2"),
    (lambda: kernel_alignment(G4, np.eye(3)), ValueError, r"b: expected the shape of a"),
    (lambda: kernel_alignment(G4, G4, centred="yes"), TypeError, "centred: expected a bool"),
    (lambda: semantic_gap(G4, np.zeros((3, 2), dtype=int)), ValueError, r"attributes: expected shape \(N=4, F\)"),
    (lambda: semantic_gap(G4, [[0.5], [1], [0], [1]]), ValueError, "attributes: expected integer values"),
    (lambda: semantic_gap(G4, [0, 0, 1, 1], labels=[0, 1]), ValueError, r"labels: expected shape \(4,\)"),
    (lambda: semantic_gap(G4, [0, 0, 1, 1], per_attribute=1), TypeError, "per_attribute: expected a bool"),
    (lambda: nc1(G4, None), TypeError, "labels: expected an integer array"),
    (lambda: nc1(G4, [0, 0, 0, 0]), ValueError, "labels: expected at least 2 distinct classes"),
    (lambda: nc3(np.eye(2), G4, np.zeros((3, 4)), LAB4), ValueError, r"logits: expected shape \(2, 4\)"),
    (lambda: nc3(np.eye(3), G4, np.zeros((3, 4)), LAB4), ValueError, "labels: expected every class 0 … 2"),
    (lambda: nc3(np.ones((2, 3)), G4, np.zeros((2, 4)), LAB4), ValueError, "gram_W: expected a square"),
    (lambda: nc4(G4, np.zeros((2, 5)), LAB4), ValueError, r"logits: expected shape \(K, N=4\)"),
    (lambda: nc4(G4, np.zeros((2, 4)), [0, 0, 1, 2]), ValueError, "labels: expected class indices < K = 2"),
    (lambda: cdnv(np.ones((4, 3)), LAB4), ValueError, "gram_H: expected a square"),
    (lambda: spectrum_in_basis(G4, np.ones((4, 2))), ValueError, "basis: expected orthonormal columns"),
    (lambda: spectrum_in_basis(G4, np.eye(3)), ValueError, r"basis: expected an \(N=4, m\) matrix"),
    (lambda: spectrum_in_basis(G4, [2 * np.eye(4)]), ValueError, "basis: projector 0 is not an orthogonal projector"),
    (lambda: spectrum_in_basis(G4, [np.zeros((4, 4))]), ValueError, "basis: projector 0 is zero"),
    (lambda: spectrum_in_basis(G4, []), ValueError, "basis: expected .* non-empty list"),
    (lambda: transient_summary([1.0, 2.0, 2.0], [0.0, 1.0, 0.0]), ValueError, r"t: expected strictly increasing times, got t\[1\]"),
    (lambda: transient_summary([1.0, 2.0], [0.0, 1.0, 0.0]), ValueError, r"gap: expected the shape of t, \(2,\)"),
    (lambda: transient_summary([1.0, np.inf], [0.0, 1.0]), ValueError, "t: expected finite values"),
    (lambda: transient_summary([], []), ValueError, "t: expected at least one save time"),
    (lambda: transient_summary([1.0, 2.0], [0.0, 1.0], threshold="x"), TypeError, "threshold: expected a real number"),
])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
