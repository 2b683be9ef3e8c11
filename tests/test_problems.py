"""Tests of ``ufm.Problem`` (targets, weights, attributes, kernels, schemes) and of the
validation, immutability and state helpers of ``ufm.UFM``.

Conventions (docs/model.md): Y is K×N (one column per context), weights π has one entry per
context, attributes is N×F, W is K×d, H is d×N.
"""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from ufm.models import GramState, PiecewiseCoupling, State


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

ATTRS = np.array([[0, 1], [1, 0], [1, 2], [0, 0]])  # N = 4 contexts, F = 2 attributes (q = 2, 3)


def onehot(labels, K):
    Y = np.zeros((K, len(labels)))
    for i, c in enumerate(labels):
        Y[c, i] = 1.0
    return Y


def shared_counts(attributes):
    """Number of attributes each pair of contexts shares, by a direct double loop."""
    N = len(attributes)
    S = np.zeros((N, N))
    for i in range(N):
        for j in range(N):
            S[i, j] = sum(int(a == b) for a, b in zip(attributes[i], attributes[j]))
    return S


def full_problem():
    Y = onehot([0, 1, 2, 1], 3)
    S = np.array([[2.0, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    diff = (np.ones((4, 4)) - np.eye(4))
    rels = [np.eye(4), diff]
    return ufm.Problem(Y, weights=[0.1, 0.2, 0.3, 0.4], attributes=ATTRS, similarities={"custom": S},
                       relations=rels, relation_names=["identity", "other"], name="toy")


# ------------------------------------------------------------------------------------------
# Problem validation
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("Y,exc", [
    (np.ones(3), ValueError),                       # 1-D
    (np.ones((2, 3, 1)), ValueError),               # 3-D
    (np.zeros((0, 3)), ValueError),                 # empty
    (np.array([[1.0, np.nan], [0, 1]]), ValueError),
    (np.array([[1.0, np.inf], [0, 1]]), ValueError),
    (np.array([["a", "b"]]), TypeError),
    (np.array([[1 + 1j, 0]]), TypeError),
])
def test_problem_rejects_bad_targets(Y, exc):
    with pytest.raises(exc, match=r"^Y\b"):
        ufm.Problem(Y)


@pytest.mark.parametrize("weights", [
    [0.5, -0.1, 0.6],            # negative
    [0.0, 0.0, 0.0],             # zero sum
    [0.5, 0.5],                  # wrong length
    [[0.3, 0.3, 0.4]],           # wrong rank
    [0.5, np.nan, 0.5],          # non-finite
])
def test_problem_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match=r"^weights\b"):
        ufm.Problem(np.eye(3), weights=weights)


def test_problem_default_and_explicit_weights():
    p = ufm.Problem(np.eye(4))
    assert np.array_equal(p.weights, np.full(4, 0.25))
    q = ufm.Problem(np.eye(3), weights=[0.0, 1.0, 2.0])  # a zero weight is allowed
    assert np.array_equal(q.weights, [0.0, 1.0, 2.0])


@pytest.mark.parametrize("attributes,exc", [
    (np.zeros((3, 2), dtype=int), ValueError),           # N = 4 rows expected
    (np.zeros((4, 2, 1), dtype=int), ValueError),        # 3-D
    (np.array([[0, 1], [1, 0], [-1, 0], [0, 0]]), ValueError),   # negative
    (np.array([[0, 1], [1, 0.5], [1, 0], [0, 0]]), ValueError),  # non-integral
    (np.array([[0, 1], [1, np.nan], [1, 0], [0, 0]]), ValueError),
    (np.array([["a"], ["b"], ["c"], ["d"]]), TypeError),
    (np.ones((4, 1), dtype=bool), TypeError),
])
def test_problem_rejects_bad_attributes(attributes, exc):
    with pytest.raises(exc, match=r"^attributes\b"):
        ufm.Problem(onehot([0, 1, 2, 3], 4), attributes=attributes)


def test_problem_accepts_integral_float_and_1d_attributes():
    p = ufm.Problem(np.eye(4), attributes=[0.0, 1.0, 1.0, 2.0])
    assert p.attributes.dtype == np.int64 and p.attributes.shape == (4, 1)
    assert np.array_equal(p.attributes[:, 0], [0, 1, 1, 2])


def test_problem_rejects_bad_relations():
    Y = np.eye(3)
    eye, off = np.eye(3), np.ones((3, 3)) - np.eye(3)
    with pytest.raises(ValueError, match=r"^relations\b.*partition"):
        ufm.Problem(Y, relations=[eye])                       # misses the off-diagonal pairs
    with pytest.raises(ValueError, match=r"^relations\b.*partition"):
        ufm.Problem(Y, relations=[eye, off, off])             # covers pairs twice
    with pytest.raises(ValueError, match=r"^relations\b.*identity"):
        ufm.Problem(Y, relations=[off, eye])                  # identity not first
    with pytest.raises(ValueError, match=r"^relations\b.*0/1"):
        ufm.Problem(Y, relations=[eye, 0.5 * off, 0.5 * off])
    upper, lower = np.triu(off), np.tril(off)
    with pytest.raises(ValueError, match=r"^relations\b.*symmetric"):
        ufm.Problem(Y, relations=[eye, upper, lower])
    with pytest.raises(ValueError, match=r"^relations\[1\]"):
        ufm.Problem(Y, relations=[eye, np.ones((2, 2))])      # wrong shape, named by index
    with pytest.raises(ValueError, match=r"^relation_names\b"):
        ufm.Problem(Y, relations=[eye, off], relation_names=["identity"])
    with pytest.raises(ValueError, match=r"^relation_names\b"):
        ufm.Problem(Y, relation_names=["identity"])
    ok = ufm.Problem(Y, relations=[eye, off])
    assert ok.relation_names == ("R0", "R1")


def test_problem_rejects_bad_similarities():
    Y = np.eye(3)
    with pytest.raises(ValueError, match=r"^similarities\['s'\].*positive semi-definite"):
        ufm.Problem(Y, similarities={"s": np.diag([1.0, -1.0, 1.0])})
    with pytest.raises(ValueError, match=r"^similarities\['s'\].*symmetric"):
        ufm.Problem(Y, similarities={"s": np.triu(np.ones((3, 3)))})
    with pytest.raises(ValueError, match=r"^similarities\['s'\]"):
        ufm.Problem(Y, similarities={"s": np.eye(2)})
    with pytest.raises(TypeError, match=r"^similarities\b"):
        ufm.Problem(Y, similarities={1: np.eye(3)})


# ------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------

def test_target_kind_onehot_gives_labels():
    labels = [0, 2, 1, 1, 2]
    p = ufm.Problem(onehot(labels, 3))
    assert p.target_kind == "onehot"
    assert p.labels.dtype == np.int64 and np.array_equal(p.labels, labels)
    assert (p.K, p.N) == (3, 5)


def test_target_kind_soft_and_real():
    soft = np.array([[0.5, 1.0, 0.2], [0.5, 0.0, 0.3], [0.0, 0.0, 0.5]])
    p = ufm.Problem(soft)
    assert p.target_kind == "soft" and p.labels is None
    # every column on the simplex but all one-hot -> onehot, not soft
    assert ufm.Problem(soft[:, [1]]).target_kind == "onehot"
    for real in (2 * np.eye(3),                                   # columns sum to 2
                 np.array([[1.5, 0.0], [-0.5, 1.0]]),             # negative entry, columns sum to 1
                 np.array([[1.0, 1.0], [1.0, 0.0]]),              # 0/1 but a column with two ones
                 np.array([[0.3, -2.0], [7.0, 0.1]])):
        q = ufm.Problem(real)
        assert q.target_kind == "real" and q.labels is None


def test_classification_constructor():
    labels = [2, 0, 1, 2]
    p = ufm.Problem.classification(labels)
    assert p.K == 3 and np.array_equal(p.Y, onehot(labels, 3))
    assert np.array_equal(p.labels, labels) and p.target_kind == "onehot"
    q = ufm.Problem.classification(labels, K=5, weights=[1.0, 1.0, 1.0, 5.0], name="x")
    assert q.Y.shape == (5, 4) and np.all(q.Y[3:] == 0)
    assert np.array_equal(q.weights, [1.0, 1.0, 1.0, 5.0]) and q.name == "x"


@pytest.mark.parametrize("labels,K,exc,name", [
    ([0, 3, 1], 3, ValueError, "labels"),       # out of range
    ([0, -1, 1], None, ValueError, "labels"),   # negative
    ([0, 1.5], None, ValueError, "labels"),     # non-integral
    ([[0, 1]], None, ValueError, "labels"),     # 2-D
    ([], None, ValueError, "labels"),           # empty
    (["a", "b"], None, TypeError, "labels"),
    ([0, 1], 0, ValueError, "K"),
    ([0, 1], True, TypeError, "K"),
    ([0, 1], 2.5, TypeError, "K"),
])
def test_classification_rejects_bad_labels(labels, K, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        ufm.Problem.classification(labels, K)


# ------------------------------------------------------------------------------------------
# attributes, incidence and kernels
# ------------------------------------------------------------------------------------------

def test_incidence_matrix():
    p = ufm.Problem(np.eye(4), attributes=ATTRS)
    A = p.incidence
    # rows (f, v) ordered by f then v: f = 0 has values 0, 1; f = 1 has values 0, 1, 2
    rows = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert A.shape == (len(rows), 4)
    for r, (f, v) in enumerate(rows):
        for i in range(4):
            assert A[r, i] == (1.0 if ATTRS[i, f] == v else 0.0)
    # each context has exactly one value per attribute
    assert np.array_equal(A.sum(axis=0), np.full(4, 2.0))
    with pytest.raises(ValueError, match=r"^incidence\b"):
        ufm.Problem(np.eye(4)).incidence


def test_attribute_similarity_counts_shared_attributes():
    p = ufm.Problem(np.eye(4), attributes=ATTRS)
    S = shared_counts(ATTRS)
    assert np.array_equal(p.similarities["attribute"], S)
    beta = 0.6
    # exact: S has small integers and β² is added once per entry
    np.testing.assert_array_equal(p.coupling("attribute", beta), np.eye(4) + beta ** 2 * S)
    assert np.array_equal(p.coupling("identity", 3.0), np.eye(4))
    assert np.array_equal(p.coupling("attribute", 0.0), np.eye(4))


def test_coupling_with_custom_similarity_and_errors():
    p = full_problem()
    S = p.similarities["custom"]
    assert np.array_equal(p.coupling("custom", 2.0), np.eye(4) + 4.0 * S)
    with pytest.raises(ValueError, match=r"^similarity\b") as info:
        p.coupling("ntk")
    msg = str(info.value)
    for available in ("'identity'", "'attribute'", "'custom'"):
        assert available in msg
    with pytest.raises(ValueError, match=r"^similarity\b.*'identity'") as info:
        ufm.Problem(np.eye(3)).coupling("attribute")
    assert "'attribute'" not in str(info.value).split(";")[1]
    with pytest.raises(ValueError, match=r"^beta\b"):
        p.coupling("attribute", -0.5)
    with pytest.raises(TypeError, match=r"^beta\b"):
        p.coupling("attribute", "big")
    # the old name still works, says so, and gives the same Θ
    with pytest.warns(DeprecationWarning, match="Problem.coupling"):
        assert np.array_equal(p.kernel("custom", 2.0), p.coupling("custom", 2.0))
    # the kernel is a fresh array: changing it does not change the problem
    K = p.coupling("attribute", 1.0)
    K[0, 0] = 99.0
    assert p.coupling("attribute", 1.0)[0, 0] == 1.0 + 2.0


# ------------------------------------------------------------------------------------------
# round trip, equality, immutability
# ------------------------------------------------------------------------------------------

def test_to_dict_from_dict_round_trip():
    p = full_problem()
    d = p.to_dict()
    q = ufm.Problem.from_dict(d)
    assert q == p and not (q != p)
    for name in ("Y", "weights", "attributes", "labels"):
        assert np.array_equal(getattr(q, name), getattr(p, name)), name
    assert q.name == p.name == "toy"
    assert q.target_kind == p.target_kind
    assert q.relation_names == p.relation_names
    assert len(q.relations) == len(p.relations)
    assert all(np.array_equal(a, b) for a, b in zip(q.relations, p.relations))
    assert set(q.similarities) == set(p.similarities) == {"attribute", "custom"}
    for k in p.similarities:
        assert np.array_equal(q.similarities[k], p.similarities[k])
    # to_dict hands out copies
    d["Y"][0, 0] = 7.0
    assert p.Y[0, 0] == 1.0


def test_round_trip_keeps_a_user_given_attribute_similarity():
    # "attribute" is normally derived from the attributes (AᵀA); a user-supplied one must
    # survive the round trip too, with or without attributes.
    S = np.array([[2.0, 1, 0], [1, 2, 0], [0, 0, 1]])
    for attrs in (None, [0, 0, 1]):
        p = ufm.Problem(np.eye(3), attributes=attrs, similarities={"attribute": S})
        assert np.array_equal(p.similarities["attribute"], S)
        q = ufm.Problem.from_dict(p.to_dict())
        assert np.array_equal(q.similarities["attribute"], S)
        assert q == p
    # and it is not confused with the derived one
    derived = ufm.Problem(np.eye(3), attributes=[0, 0, 1])
    given = ufm.Problem(np.eye(3), attributes=[0, 0, 1], similarities={"attribute": S})
    assert derived != given


def test_problem_equality_sees_every_field():
    p = full_problem()
    d = p.to_dict()
    assert ufm.Problem.from_dict(d) == p
    same = np.zeros((4, 4))
    same[1, 3] = same[3, 1] = 1.0  # contexts 1 and 3 share label 1
    changes = {
        "weights": np.array([0.1, 0.2, 0.3, 0.5]),
        "name": "other",
        "attributes": ATTRS[[1, 0, 2, 3]],
        "Y": onehot([0, 1, 2, 2], 3),
        "similarity:custom": np.eye(4),
        "relations": np.array([np.eye(4), same, np.ones((4, 4)) - np.eye(4) - same]),
    }
    for key, value in changes.items():
        d2 = dict(d)
        d2[key] = value
        if key == "relations":
            d2["relation_names"] = ["identity", "other", "x"]
        assert ufm.Problem.from_dict(d2) != p, key
    d3 = dict(d)
    d3["relation_names"] = ["identity", "different"]
    assert ufm.Problem.from_dict(d3) != p
    d4 = {k: v for k, v in d.items() if k not in ("relations", "relation_names")}
    assert ufm.Problem.from_dict(d4) != p
    assert p != "toy" and (p == 3) is False
    with pytest.raises(TypeError):
        hash(p)


def test_problem_is_immutable():
    Y = onehot([0, 1, 2, 1], 3)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    attrs = ATTRS.copy()
    p = ufm.Problem(Y, weights=w, attributes=attrs,
                    relations=[np.eye(4), np.ones((4, 4)) - np.eye(4)])
    for arr in (p.Y, p.weights, p.attributes, p.labels, p.similarities["attribute"], *p.relations):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr.flat[0] = 5
    with pytest.raises(TypeError):
        p.similarities["new"] = np.eye(4)
    for name in ("Y", "weights", "attributes", "name", "K"):
        with pytest.raises(AttributeError):
            setattr(p, name, None)
    with pytest.raises(AttributeError):
        p.extra = 1
    # the inputs were copied: changing them afterwards changes nothing
    Y[0, 0], w[0], attrs[0, 0] = 5.0, 9.0, 7
    assert p.Y[0, 0] == 1.0 and p.weights[0] == 0.1 and p.attributes[0, 0] == 0


# ------------------------------------------------------------------------------------------
# UFM validation
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def problem():
    return ufm.Problem.classification([0, 1, 2, 0], attributes=ATTRS)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(loss="xent"), ValueError, "loss"),
    (dict(loss=None), ValueError, "loss"),
    (dict(lambda_W=-1e-3), ValueError, "lambda_W"),
    (dict(lambda_H=-1e-3), ValueError, "lambda_H"),
    (dict(lambda_E=-1e-3), ValueError, "lambda_E"),
    (dict(lambda_b=-1e-3, bias=True), ValueError, "lambda_b"),
    (dict(lambda_W=np.nan), ValueError, "lambda_W"),
    (dict(lambda_H="0.1"), TypeError, "lambda_H"),
    (dict(lr_W=0.0), ValueError, "lr_W"),
    (dict(lr_H=-1.0), ValueError, "lr_H"),
    (dict(lr_b=np.inf), ValueError, "lr_b"),
    (dict(lambda_b=0.1), ValueError, "lambda_b"),         # needs bias=True
    (dict(bias="yes"), TypeError, "bias"),
    (dict(bias=1), TypeError, "bias"),
    (dict(coupling=np.eye(3)), ValueError, "coupling"),  # N = 4
    (dict(coupling=np.triu(np.ones((4, 4)))), ValueError, "coupling"),
    (dict(coupling=np.diag([1.0, 1.0, -0.5, 1.0])), ValueError, "coupling"),
    (dict(coupling=np.full((4, 4), np.nan)), ValueError, "coupling"),
    (dict(coupling=PiecewiseCoupling([0.0], np.eye(3)[None])), ValueError, "coupling"),
])
def test_ufm_rejects_bad_arguments(problem, kwargs, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        ufm.UFM(problem, **kwargs)


def test_ufm_loss_versus_targets():
    real = ufm.Problem(np.array([[0.3, -1.0], [2.0, 0.5]]))
    with pytest.raises(ValueError, match=r"^loss\b.*mse"):
        ufm.UFM(real, loss="ce")
    assert ufm.UFM(real, loss="mse").loss_name == "mse"
    soft = ufm.Problem(np.array([[0.5, 0.2], [0.5, 0.8]]))
    assert ufm.UFM(soft, loss="ce").loss_name == "ce"
    with pytest.raises(TypeError, match=r"^problem\b"):
        ufm.UFM(np.eye(3))


def test_ufm_coupling_is_symmetrised_copy_and_kind(problem):
    theta = problem.coupling("attribute", 0.5)
    noisy = theta.copy()
    noisy[0, 1] += 1e-14  # rounding-level asymmetry is accepted and removed
    m = ufm.UFM(problem, coupling=noisy)
    assert np.array_equal(m.coupling, m.coupling.T)
    np.testing.assert_allclose(m.coupling, theta, rtol=0, atol=1e-14)
    noisy[2, 2] = 50.0
    assert m.coupling[2, 2] == theta[2, 2]
    assert ufm.UFM(problem).kind == "standard"
    assert m.kind == "coupled"
    assert ufm.UFM(problem, lambda_E=0.1, coupling=theta).kind == "linear-features"
    assert np.array_equal(ufm.UFM(problem).theta(), np.eye(4))


def test_ufm_is_immutable_and_replace_validates(problem):
    m = ufm.UFM(problem, loss="ce", lambda_W=1e-3, coupling=problem.coupling("attribute", 1.0), lr_H=2.0)
    for name in ("lambda_W", "loss_name", "coupling", "problem", "bias", "new_field"):
        with pytest.raises(AttributeError):
            setattr(m, name, 0.0)
    with pytest.raises(ValueError):
        m.coupling[0, 0] = 3.0
    assert m.lambda_W == 1e-3
    m2 = m.replace(lambda_W=2e-3)
    assert m2.lambda_W == 2e-3 and m.lambda_W == 1e-3
    assert m2.lr_H == 2.0 and np.array_equal(m2.coupling, m.coupling) and m2.problem is m.problem
    assert m2 != m and m.replace() == m
    assert m2 == ufm.UFM(problem, loss="ce", lambda_W=2e-3, coupling=problem.coupling("attribute", 1.0), lr_H=2.0)
    with pytest.raises(ValueError, match=r"^lambda_W\b"):
        m.replace(lambda_W=-1.0)
    with pytest.raises(ValueError, match=r"^lambda_b\b"):
        m.replace(lambda_b=0.1)
    with pytest.raises(ValueError, match=r"^coupling\b"):
        m.replace(coupling=-np.eye(4))
    with pytest.raises(TypeError, match=r"^replace\b.*lambda"):
        m.replace(lamda_W=0.1)
    assert m.replace(bias=True, lambda_b=0.1).lambda_b == 0.1


# ------------------------------------------------------------------------------------------
# states
# ------------------------------------------------------------------------------------------

def test_init_is_deterministic_for_a_seed(problem):
    m = ufm.UFM(problem, bias=True)
    a, b = m.init(5, scale=0.3, seed=42), m.init(5, scale=0.3, seed=42)
    assert np.array_equal(a.W, b.W) and np.array_equal(a.H, b.H) and np.array_equal(a.b, b.b)
    c = m.init(5, scale=0.3, seed=43)
    assert not np.array_equal(a.W, c.W) and not np.array_equal(a.H, c.H)
    assert a.W.shape == (4 - 1, 5) and a.H.shape == (5, 4)  # K = 3 classes, N = 4 contexts
    assert np.array_equal(a.b, np.zeros(3))
    assert ufm.UFM(problem).init(5, seed=0).b is None
    # scale only rescales the same draw
    s1 = m.init(5, scale=1.0, seed=42)
    np.testing.assert_allclose(a.H, 0.3 * s1.H, rtol=1e-15)


def test_init_distribution():
    # W, H entries i.i.d. N(0, scale²/d). For one column, diag(HᵀH)_i = (scale²/d)·χ²_d has
    # mean scale² and variance 2·scale⁴/d. Pooling n = seeds·N columns, the sample mean has
    # standard error scale²·√(2/(d·n)); we allow 5 standard errors (fails with probability
    # ~6e-7 for a correct implementation; the seeds are fixed, so the test is deterministic).
    # A wrong normalisation (std scale, or scale/d) is off by a factor d = 16.
    model = ufm.UFM(ufm.settings.balanced(5))  # K = N = 5
    d, scale, seeds = 16, 0.3, 300
    diag_H, diag_W, off_H, z = [], [], [], []
    for s in range(seeds):
        st = model.init(d, scale=scale, seed=s)
        GH, GW = st.H.T @ st.H, st.W @ st.W.T
        diag_H.append(np.diag(GH))
        diag_W.append(np.diag(GW))
        off_H.append(GH[np.triu_indices(5, 1)])
        z.append(np.concatenate([st.W.ravel(), st.H.ravel()]) * np.sqrt(d) / scale)
    s2 = scale ** 2
    for diag in (np.concatenate(diag_H), np.concatenate(diag_W)):
        se = s2 * np.sqrt(2.0 / (d * diag.size))
        assert abs(diag.mean() - s2) < 5 * se
    # off-diagonal Gram entries: mean 0, variance scale⁴/d
    off = np.concatenate(off_H)
    assert abs(off.mean()) < 5 * s2 / np.sqrt(d * off.size)
    # standardised entries: mean 0 and variance 1 (standard errors 1/√n and √(2/n))
    z = np.concatenate(z)
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / z.size)
    # and normal, not e.g. uniform with the same variance (kurtosis 3 vs 1.8;
    # standard error of the sample kurtosis ≈ √(24/n))
    kurt = np.mean(z ** 4) / np.mean(z ** 2) ** 2
    assert abs(kurt - 3.0) < 5 * np.sqrt(24.0 / z.size)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(d=0), ValueError, "d"),
    (dict(d=2.5), TypeError, "d"),
    (dict(d=4, scale=0.0), ValueError, "scale"),
    (dict(d=4, scale=-1.0), ValueError, "scale"),
])
def test_init_rejects_bad_arguments(problem, kwargs, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        ufm.UFM(problem).init(**kwargs)


def test_state_and_check_state(problem):
    m = ufm.UFM(problem)            # K = 3, N = 4
    mb = ufm.UFM(problem, bias=True)
    W, H = np.ones((3, 2)), np.ones((2, 4))
    st = m.state(W, H)
    assert isinstance(st, State) and st.b is None and st.d == 2
    assert np.array_equal(mb.state(W, H).b, np.zeros(3))
    with pytest.raises(ValueError, match=r"\bW must have K = 3 rows"):
        m.state(np.ones((4, 2)), H)
    with pytest.raises(ValueError, match=r"\bH must have N = 4 columns"):
        m.state(W, np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"^H\b"):
        m.state(W, np.ones((3, 4)))               # rows must match W's width
    with pytest.raises(ValueError, match=r"^W\b"):
        m.state(np.full((3, 2), np.nan), H)
    with pytest.raises(ValueError, match=r"^b\b"):
        mb.state(W, H, np.zeros(2))
    with pytest.raises(ValueError, match=r"bias"):
        m.state(W, H, np.zeros(3))
    # check_state names the argument it is given
    with pytest.raises(ValueError, match=r"^start\b.*bias"):
        mb.check_state(State(W, H), "start")
    with pytest.raises(ValueError, match=r"^start\b.*W"):
        m.check_state(State(np.ones((2, 2)), H), "start")
    with pytest.raises(TypeError, match=r"^start\b"):
        m.check_state((W, H), "start")
    gs = st.grams()
    m.check_state(gs)
    with pytest.raises(ValueError, match=r"^init\b.*M"):
        m.check_state(GramState(np.ones((3, 3)), np.eye(3), np.eye(3)))
    with pytest.raises(ValueError, match=r"^init\b.*bias"):
        mb.check_state(gs)
    # the state's arrays are read-only copies
    assert not st.W.flags.writeable
    W[0, 0] = 5.0
    assert st.W[0, 0] == 1.0


def test_problems_models_and_trajectories_pickle():
    """Process pools and Dask ship these objects: they must survive pickling unchanged."""
    import pickle
    p = ufm.settings.sequences((2, 2))
    m = ufm.UFM(p, lambda_W=0.01, coupling=p.coupling("shared_token", 0.5), bias=True)
    assert pickle.loads(pickle.dumps(p)) == p
    assert pickle.loads(pickle.dumps(m)) == m
    tr = ufm.solve(m, m.init(4, seed=0), [0.5, 1.0])
    back = pickle.loads(pickle.dumps(tr))
    assert back.model == m and np.array_equal(back.gram_H, tr.gram_H)
