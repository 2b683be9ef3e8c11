"""Tests of the synthetic settings (docs/model.md §6): balanced classes, factorial attributes and
hierarchies, checked against direct computations of labels, attributes and relations.

Conventions: Y is K×N with one column per sample; attributes is N×F; relations are N×N 0/1
matrices, identity first.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ufm
from ufm.settings import balanced, factorial, hierarchy


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

def check_partition(problem):
    """Relations are symmetric 0/1 matrices, identity first, summing to the all-ones matrix."""
    rels = problem.relations
    N = problem.N
    assert rels is not None and len(rels) == len(problem.relation_names)
    assert len(set(problem.relation_names)) == len(rels)
    assert np.array_equal(rels[0], np.eye(N))
    assert problem.relation_names[0] == "identity"
    for R in rels:
        assert R.shape == (N, N)
        assert np.all((R == 0) | (R == 1))
        assert np.array_equal(R, R.T)
        assert R.sum() > 0
    assert np.array_equal(np.sum(rels, axis=0), np.ones((N, N)))


def scheme_defect(rels):
    """(worst least-squares residual of R_a R_b on span{R_c}, worst |R_a R_b − R_b R_a|,
    worst distance of the coefficients (intersection numbers) to integers)."""
    basis = np.stack([R.ravel() for R in rels], axis=1)
    residual = commutator = non_integer = 0.0
    for Ra in rels:
        for Rb in rels:
            P = Ra @ Rb
            coef, *_ = np.linalg.lstsq(basis, P.ravel(), rcond=None)
            residual = max(residual, np.linalg.norm(basis @ coef - P.ravel()) / np.linalg.norm(P))
            commutator = max(commutator, np.abs(P - Rb @ Ra).max())
            non_integer = max(non_integer, np.abs(coef - np.round(coef)).max())
    return residual, commutator, non_integer


def assert_commutative_scheme(problem):
    # Products of 0/1 matrices with N <= 18 are small integers, computed exactly in float64;
    # the least-squares projection onto disjointly supported basis vectors is an average, so
    # a residual of rounding size (1e-12) is the only slack needed.
    residual, commutator, non_integer = scheme_defect(problem.relations)
    assert residual < 1e-12
    assert commutator == 0.0
    assert non_integer < 1e-12


def relation(problem, name):
    return problem.relations[problem.relation_names.index(name)]


def base_digits(c, base, length):
    """Digits of c in the given base, most significant first."""
    digits = []
    for _ in range(length):
        digits.append(c % base)
        c //= base
    return digits[::-1]


# ------------------------------------------------------------------------------------------
# the helper can fail
# ------------------------------------------------------------------------------------------

def test_scheme_check_detects_a_non_scheme():
    # path 0-1-2-3 and its complement: A² has 2 on the diagonal only at inner vertices, so it
    # is not constant on the identity relation and not in the span
    A = np.zeros((4, 4))
    for i in range(3):
        A[i, i + 1] = A[i + 1, i] = 1.0
    rels = [np.eye(4), A, np.ones((4, 4)) - np.eye(4) - A]
    residual, _, _ = scheme_defect(rels)
    assert residual > 0.1


# ------------------------------------------------------------------------------------------
# balanced
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("K,n", [(2, 1), (4, 1), (3, 3), (5, 2)])
def test_balanced(K, n):
    p = balanced(K, n)
    assert (p.K, p.N) == (K, K * n)
    expected = np.array([i // n for i in range(K * n)])
    assert np.array_equal(p.labels, expected)
    assert p.target_kind == "onehot"
    Y = np.zeros((K, K * n))
    Y[expected, np.arange(K * n)] = 1.0
    assert np.array_equal(p.Y, Y)
    assert np.array_equal(p.weights, np.full(K * n, 1.0 / (K * n)))
    assert p.attributes is None
    check_partition(p)
    same = (expected[:, None] == expected[None, :]) & ~np.eye(K * n, dtype=bool)
    if n > 1:
        assert set(p.relation_names) == {"identity", "same class", "different class"}
        assert np.array_equal(relation(p, "same class"), same.astype(float))
    else:
        assert set(p.relation_names) == {"identity", "different class"}
    diff = expected[:, None] != expected[None, :]
    assert np.array_equal(relation(p, "different class"), diff.astype(float))
    assert_commutative_scheme(p)


# ------------------------------------------------------------------------------------------
# factorial
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("levels,n", [((3, 3), 1), ((2, 2, 2), 1), ((3, 3), 2), ((2, 3), 2)])
def test_factorial_structure(levels, n):
    p = factorial(levels, samples_per_context=n)
    C = int(np.prod(levels))
    F = len(levels)
    assert (p.K, p.N) == (C, C * n)
    combos = list(itertools.product(*[range(q) for q in levels]))  # first attribute slowest
    context = np.array([i // n for i in range(C * n)])
    assert np.array_equal(p.attributes, np.array([combos[c] for c in context]))
    assert np.array_equal(p.labels, context)
    check_partition(p)

    # relations are the agreement sets: two samples are in the same relation iff they are
    # the same sample / distinct samples of one context / agree on the same attribute set
    def key(i, j):
        if i == j:
            return "identity"
        if context[i] == context[j]:
            return "same context"
        return frozenset(f for f in range(F) if combos[context[i]][f] == combos[context[j]][f])

    keys_of = []
    for R in p.relations:
        ks = {key(i, j) for i, j in zip(*np.nonzero(R))}
        assert len(ks) == 1
        keys_of.append(ks.pop())
    assert keys_of[0] == "identity"
    assert ("same context" in keys_of) == (n > 1)
    # every agreement set S of distinct contexts (all proper subsets of the F attributes)
    # occurs exactly once, and its valency is n·Π_{f∉S}(q_f − 1)
    subsets = [frozenset(S) for r in range(F) for S in itertools.combinations(range(F), r)]
    assert sorted(map(sorted, [k for k in keys_of if isinstance(k, frozenset)])) == sorted(map(sorted, subsets))
    for R, k in zip(p.relations, keys_of):
        if isinstance(k, frozenset):
            valency = n * np.prod([levels[f] - 1 for f in range(F) if f not in k])
            assert np.all(R.sum(axis=1) == valency)
    if n > 1:
        assert np.all(relation(p, "same context").sum(axis=1) == n - 1)
    assert_commutative_scheme(p)


@pytest.mark.parametrize("setting", [lambda: factorial((3, 3)), lambda: factorial((2, 2, 2), samples_per_context=2),
                                     lambda: hierarchy(2, 3), lambda: hierarchy(3, 2, samples_per_context=2)])
def test_attribute_kernel_counts_shared_attributes(setting):
    p = setting()
    A = p.attributes
    N = p.N
    shared = np.array([[np.sum(A[i] == A[j]) for j in range(N)] for i in range(N)], dtype=float)
    beta = 0.7
    # I + β²AᵀA: the diagonal is 1 + β²F, off-diagonal β²·(shared attributes); AᵀA holds
    # small integers, so the only rounding is the one product β²·count and one addition
    np.testing.assert_allclose(p.coupling("attribute", beta), np.eye(N) + beta ** 2 * shared, rtol=1e-15, atol=0)
    assert np.array_equal(p.similarities["attribute"], shared)
    assert np.all(np.diag(shared) == A.shape[1])


def test_factorial_random_permutation_is_reproducible_and_real():
    a = factorial((3, 3), label_permutation="random", seed=7)
    b = factorial((3, 3), label_permutation="random", seed=7)
    c = factorial((3, 3), label_permutation="random", seed=8)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.Y, b.Y)
    assert np.array_equal(np.sort(a.labels), np.arange(9))       # a permutation of the labels
    assert not np.array_equal(a.labels, np.arange(9))           # and not the identity
    assert not np.array_equal(a.labels, c.labels)
    # the permutation changes labels only: attributes and relations are those of the contexts
    plain = factorial((3, 3))
    assert np.array_equal(a.attributes, plain.attributes)
    assert a.relation_names == plain.relation_names
    assert all(np.array_equal(r, s) for r, s in zip(a.relations, plain.relations))
    # with samples per context, both samples of a context carry the context's label
    d = factorial((3, 3), samples_per_context=2, label_permutation="random", seed=7)
    assert np.array_equal(d.labels, np.repeat(a.labels, 2))


def test_factorial_explicit_permutation():
    perm = np.array([3, 0, 2, 1])
    p = factorial((2, 2), samples_per_context=2, label_permutation=perm)
    assert np.array_equal(p.labels, [3, 3, 0, 0, 2, 2, 1, 1])
    assert p.Y[3, 0] == 1.0 and p.Y[0, 2] == 1.0 and p.Y.sum() == 8
    q = factorial((2, 2), label_permutation=[0.0, 1.0, 3.0, 2.0])   # integral floats are fine
    assert np.array_equal(q.labels, [0, 1, 3, 2])


@pytest.mark.parametrize("perm,exc", [
    ([0, 1, 1, 2], ValueError),        # duplicate
    ([0, 1, 2], ValueError),           # too short
    ([0, 1, 2, 3, 4], ValueError),     # too long
    ([1, 2, 3, 4], ValueError),        # out of range
    ([0, 1, 2, 2.5], ValueError),      # non-integral
    ([[0, 1], [2, 3]], ValueError),    # 2-D
    ("shuffle", ValueError),
    (["a", "b", "c", "d"], TypeError),
])
def test_bad_permutation_is_named(perm, exc):
    with pytest.raises(exc, match=r"^label_permutation\b"):
        factorial((2, 2), label_permutation=perm)
    with pytest.raises(exc, match=r"^label_permutation\b"):
        hierarchy(2, 2, label_permutation=perm)


# ------------------------------------------------------------------------------------------
# hierarchy
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("b,D,n", [(2, 3, 1), (3, 2, 1), (2, 3, 2), (2, 4, 1)])
def test_hierarchy_structure(b, D, n):
    p = hierarchy(b, D, samples_per_context=n)
    C = b ** D
    assert (p.K, p.N) == (C, C * n)
    leaf = np.array([i // n for i in range(C * n)])
    assert np.array_equal(p.labels, leaf)
    digits = [base_digits(c, b, D) for c in range(C)]

    # attributes: column l − 1 is the ancestor at level l = 1 … D − 1, identified by the
    # first l digits of the leaf's path and numbered left to right within its level
    def ancestor(c, level):
        return int(sum(d * b ** (level - 1 - k) for k, d in enumerate(digits[c][:level])))

    expected = np.array([[ancestor(c, level) for level in range(1, D)] for c in leaf])
    assert p.attributes.shape == (C * n, D - 1)
    assert np.array_equal(p.attributes, expected)
    for level in range(1, D):
        assert len(set(expected[:, level - 1])) == b ** level

    check_partition(p)
    names = ["identity"] + (["same context"] if n > 1 else []) + [f"LCA at level {l}" for l in range(D - 1, -1, -1)]
    assert list(p.relation_names) == names

    def lca(c1, c2):  # depth of the lowest common ancestor: length of the common path prefix
        k = 0
        while k < D and digits[c1][k] == digits[c2][k]:
            k += 1
        return k

    N = C * n
    for level in range(D):
        direct = np.array([[float(leaf[i] != leaf[j] and lca(leaf[i], leaf[j]) == level) for j in range(N)]
                           for i in range(N)])
        R = relation(p, f"LCA at level {level}")
        assert np.array_equal(R, direct)
        # each leaf has (b − 1)·b^(D−1−l) other leaves whose LCA with it sits at level l
        assert np.all(R.sum(axis=1) == n * (b - 1) * b ** (D - 1 - level))
    if n > 1:
        assert np.all(relation(p, "same context").sum(axis=1) == n - 1)
    # shared attributes of distinct leaves = LCA depth (the root is not an attribute)
    S = p.similarities["attribute"]
    for level in range(D):
        assert np.all(S[relation(p, f"LCA at level {level}") == 1] == level)
    assert_commutative_scheme(p)


def test_hierarchy_2_3_has_eight_leaves_and_permutation():
    p = hierarchy(2, 3)
    assert p.N == 8 and p.K == 8
    # leaves 0-3 under the left child of the root, 0-1 under its left child
    assert np.array_equal(p.attributes[:, 0], [0, 0, 0, 0, 1, 1, 1, 1])
    assert np.array_equal(p.attributes[:, 1], [0, 0, 1, 1, 2, 2, 3, 3])
    q = hierarchy(2, 3, label_permutation="random", seed=3)
    assert np.array_equal(q.labels, hierarchy(2, 3, label_permutation="random", seed=3).labels)
    assert np.array_equal(np.sort(q.labels), np.arange(8)) and not np.array_equal(q.labels, np.arange(8))
    assert np.array_equal(q.attributes, p.attributes)


# ------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,name", [
    (lambda: balanced(1), ValueError, "K"),
    (lambda: balanced(2.5), TypeError, "K"),
    (lambda: balanced(True), TypeError, "K"),
    (lambda: balanced(3, 0), ValueError, "n"),
    (lambda: balanced(3, 1.5), TypeError, "n"),
    (lambda: factorial(()), ValueError, "levels"),
    (lambda: factorial((1, 3)), ValueError, "levels"),
    (lambda: factorial((3, 2.5)), TypeError, "levels"),
    (lambda: factorial(3), TypeError, "levels"),
    (lambda: factorial((2, 2), samples_per_context=0), ValueError, "samples_per_context"),
    (lambda: hierarchy(1, 3), ValueError, "branching"),
    (lambda: hierarchy(2.5, 3), TypeError, "branching"),
    (lambda: hierarchy(2, 1), ValueError, "depth"),
    (lambda: hierarchy(2, 2, samples_per_context=-1), ValueError, "samples_per_context"),
])
def test_bad_inputs_are_named(call, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        call()


def test_settings_feed_a_model():
    # the problems are usable as they come: the attribute kernel is accepted as Θ
    for p in (factorial((2, 3)), hierarchy(2, 2), balanced(3, 2)):
        theta = p.coupling("attribute", 1.0) if p.attributes is not None else p.coupling("identity")
        model = ufm.UFM(p, coupling=theta)
        assert model.kind == "coupled"
        # I + β²AᵀA with a rank-deficient incidence A (or Θ = I): the smallest eigenvalue is 1
        assert np.linalg.eigvalsh(theta).min() == pytest.approx(1.0, abs=1e-12)


def test_class_imbalance_through_per_context_counts():
    counts = [3, 1, 2, 1, 1, 2]
    p = ufm.settings.factorial((2, 3), samples_per_context=counts)
    assert p.N == sum(counts) and p.K == 6
    np.testing.assert_array_equal(np.bincount(p.labels), counts)
    # every sample carries its context's attributes
    combos = np.array([[a, b] for a in range(2) for b in range(3)])
    np.testing.assert_array_equal(p.attributes, combos[p.labels])
    assert p.relations is None  # unequal class sizes break the association scheme
    h = ufm.settings.hierarchy(2, 2, samples_per_context=[1, 2, 1, 3])
    np.testing.assert_array_equal(np.bincount(h.labels), [1, 2, 1, 3])
    for bad, match in (([1, 2], "one per context"), ([1, 0, 1, 1, 1, 1], "counts >= 1"), (0, "samples_per_context")):
        with pytest.raises(ValueError, match=match):
            ufm.settings.factorial((2, 3), samples_per_context=bad)


def test_sequences_setting():
    p = ufm.settings.sequences((2, 3), tokens_per_class=2)
    assert p.N == (2 * 2) * (3 * 2) and p.K == p.N and p.target_kind == "onehot"
    assert p.attributes.shape == (p.N, 2)
    # the shared-token similarity counts equal tokens by position and never exceeds the
    # shared-class count (equal tokens imply equal classes)
    S_tok, S_cls = p.similarities["shared_token"], p.similarities["attribute"]
    assert np.all(np.diag(S_tok) == 2) and np.all(S_tok <= S_cls)
    soft = ufm.settings.sequences((2, 2), tokens_per_class=2, labels="soft", support=3)
    assert soft.target_kind == "soft" and soft.K == 4 * 3
    np.testing.assert_allclose(soft.Y.sum(axis=0), 1.0)
    # contexts with the same latent classes share their support, others are disjoint
    same = (soft.attributes[:, None, :] == soft.attributes[None, :, :]).all(axis=2)
    overlap = (soft.Y.T > 0).astype(int) @ (soft.Y > 0).astype(int)
    assert np.all((overlap == 3) == same) and np.all((overlap == 0) == ~same)
    sub = ufm.settings.sequences((2, 2), n_contexts=5, seed=3)
    assert sub.N == 5 and np.array_equal(sub.attributes, ufm.settings.sequences((2, 2), n_contexts=5, seed=3).attributes)
    for kwargs, match in ((dict(classes=(1, 2)), "classes"), (dict(labels="hard"), "labels"),
                          (dict(n_contexts=100), "n_contexts"), (dict(tokens_per_class=0), "tokens_per_class")):
        with pytest.raises(ValueError, match=match):
            ufm.settings.sequences(**{"classes": (2, 2), **kwargs})
