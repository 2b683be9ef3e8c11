"""The metrics layer (issue 9, item 3): every metric broadcasts over leading axes, the
name → metric table rejects what it does not know, the semantic gap's centring convention,
the participation ratio, equal-label exclusion when K < N, and the callers (Trajectory,
bridge observables, sweep summaries) that go through it.

Direct computations here start from features H (d×N, one column per context), never from
the Gram code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from ufm import metrics as m
from ufm.bridge.observables import observe
from ufm.sweeps.engine import summarize

LEAD = (3, 2)                     # (T, C): three save times, two configurations


# ------------------------------------------------------------------------------------------
# data: a K < N problem (2 samples per context) and features with a large common mean
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def problem():
    return ufm.settings.factorial((2, 3), samples_per_context=2)      # N = 12 samples, K = 6 labels


@pytest.fixture(scope="module")
def stack(problem):
    """Features H (3, 2, d, N) with a common mean and per-attribute structure, classifier W,
    bias b; their Grams and logits."""
    rng = np.random.default_rng(7)
    d, N, K = 9, problem.N, problem.K
    T, C = LEAD
    codes = [rng.standard_normal((d, 3)) for _ in range(2)]
    base = sum(codes[f][:, problem.attributes[:, f]] for f in range(2))           # d×N
    H = base + 0.7 * rng.standard_normal((T, C, d, N)) + 3.0 * rng.standard_normal((T, C, d, 1))
    W = rng.standard_normal((T, C, K, d))
    b = rng.standard_normal((T, C, K, 1))
    return {"H": H, "W": W, "gram_H": np.swapaxes(H, -1, -2) @ H, "gram_W": W @ np.swapaxes(W, -1, -2),
            "logits": W @ H + b}


def loop(fn, *stacks):
    """fn applied matrix by matrix over the leading (T, C) axes."""
    return np.array([[np.asarray(fn(*(s[t, c] for s in stacks))) for c in range(LEAD[1])] for t in range(LEAD[0])])


def direct_gap(H, attributes, labels=None, centred=True):
    """The semantic gap straight from features: subtract the mean column (if centred), normalise
    the columns, average the cosines of pairs sharing some / no attribute (i < j, equal labels
    excluded when given)."""
    X = H - H.mean(axis=1, keepdims=True) if centred else H
    X = X / np.linalg.norm(X, axis=0)
    cos = X.T @ X
    share, none = [], []
    N = H.shape[1]
    for i in range(N):
        for j in range(i + 1, N):
            if labels is not None and labels[i] == labels[j]:
                continue
            (share if np.any(attributes[i] == attributes[j]) else none).append(cos[i, j])
    return float(np.mean(share) - np.mean(none))


# ------------------------------------------------------------------------------------------
# broadcasting: a (T, C, N, N) stack equals the loop of single-time calls
# ------------------------------------------------------------------------------------------

def test_every_metric_broadcasts_like_the_loop(problem, stack):
    gH, gW, Z = stack["gram_H"], stack["gram_W"], stack["logits"]
    lab, attrs = problem.labels, problem.attributes
    S = problem.similarities["attribute"]
    _, basis = m.eigenbasis(gH[0, 0])
    projectors = [basis[:, :4] @ basis[:, :4].T, basis[:, 4:] @ basis[:, 4:].T]
    cases = {
        "cosine": (lambda g: m.cosine(g), (gH,)),
        "cosine centred": (lambda g: m.cosine(g, centred=True), (gH,)),
        "etf_distance": (lambda g: m.etf_distance(g, lab), (gH,)),
        "etf_distance one-hot": (lambda g: m.etf_distance(g), (gW,)),
        "kernel_alignment stack-single": (lambda g: m.kernel_alignment(g, S), (gH,)),
        "kernel_alignment stack-stack": (lambda a, b: m.kernel_alignment(a, b, centred=False), (gH, gH[::-1])),
        "semantic_gap": (lambda g: m.semantic_gap(g, attrs, lab), (gH,)),
        "semantic_gap raw": (lambda g: m.semantic_gap(g, attrs, lab, centred=False), (gH,)),
        "semantic_gap attribute 1": (lambda g: m.semantic_gap(g, attrs, lab, per_attribute=True)[1], (gH,)),
        "class_means_gram": (lambda g: m.class_means_gram(g, lab), (gH,)),
        "nc1": (lambda g: m.nc1(g, lab), (gH,)),
        "nc2": (lambda g: m.nc2(g, lab), (gH,)),
        "nc3": (lambda w, h, z: m.nc3(w, h, z, lab), (gW, gH, Z)),
        "nc4": (lambda h, z: m.nc4(h, z, lab), (gH, Z)),
        "cdnv": (lambda g: m.cdnv(g, lab), (gH,)),
        "effective_rank": (lambda g: m.effective_rank(g), (gH,)),
        "effective_rank centred": (lambda g: m.effective_rank(g, centred=True), (gH,)),
        "participation_ratio": (lambda g: m.participation_ratio(g), (gH,)),
        "participation_ratio raw": (lambda g: m.participation_ratio(g, centred=False), (gH,)),
        "spectrum_in_basis columns": (lambda g: m.spectrum_in_basis(g, basis), (gH,)),
        "spectrum_in_basis projectors": (lambda g: m.spectrum_in_basis(g, projectors), (gH,)),
    }
    for name, (fn, args) in cases.items():
        expected = loop(fn, *args)
        got = np.asarray(fn(*args))
        assert got.shape == expected.shape, name
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=name)
    # one matrix gives a Python float (the single-time interface is unchanged)
    for fn, args in (cases["nc1"], cases["semantic_gap"], cases["participation_ratio"], cases["nc3"]):
        assert type(fn(*(a[0, 0] for a in args))) is float


def test_broadcasting_of_mixed_leading_axes(problem, stack):
    """nc3's three stacks broadcast against each other: one classifier Gram for every save."""
    gW, gH = stack["gram_W"], stack["gram_H"]
    W, H = stack["W"][0, 0], stack["H"]
    Z = W @ H                                             # (T, C, K, N) logits of the one W
    got = m.nc3(W @ W.T, gH, Z, problem.labels)
    expected = loop(lambda h, z: m.nc3(W @ W.T, h, z, problem.labels), gH, Z)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="logits: leading"):
        m.nc3(gW[:, :1], gH[:2], stack["logits"][:2], problem.labels)


def test_evaluate_broadcasts_and_matches_the_functions(problem, stack):
    gH, gW, Z = stack["gram_H"], stack["gram_W"], stack["logits"]
    lab = problem.labels
    pairs = {"etf_distance": m.etf_distance(gH, lab), "semantic_gap": m.semantic_gap(gH, problem.attributes, lab),
             "nc1": m.nc1(gH, lab), "nc3": m.nc3(gW, gH, Z, lab), "participation_ratio": m.participation_ratio(gH),
             "effective_rank": m.effective_rank(gH), "norm_H": np.sqrt(np.trace(gH, axis1=-2, axis2=-1)),
             "accuracy": np.mean(np.argmax(Z, axis=-2) == lab, axis=-1)}
    for name, expected in pairs.items():
        got = m.evaluate(name, gram_H=gH, gram_W=gW, logits=Z, problem=problem)
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15, err_msg=name)
    # which="W" reads the classifier Gram
    np.testing.assert_allclose(m.evaluate("etf_distance", gram_W=gW, which="W"), m.etf_distance(gW), rtol=1e-14)


def test_stack_errors_name_the_matrix(stack):
    G = stack["gram_H"].copy()
    G[1, 0, 2, 3] += 1e-3 * np.abs(G).max()              # asymmetric matrix (1, 0)
    with pytest.raises(ValueError, match=r"gram: expected a symmetric Gram matrix \(matrix \(1, 0\) of the stack\)"):
        m.etf_distance(G)
    G = stack["gram_H"][:, 0].copy()
    G[2, 4, 4] = np.nan
    with pytest.raises(ValueError, match=r"gram_H: expected finite values, found nan in matrix 2 of the stack "
                                         r"at entry \(4, 4\)"):
        m.nc1(G, np.arange(G.shape[-1]) % 3)
    G = np.stack([np.eye(3), -np.eye(3)])
    with pytest.raises(ValueError, match=r"gram: expected a non-negative diagonal .*matrix 1 of the stack"):
        m.cosine(G)
    with pytest.raises(ValueError, match="gram: expected one .* reference Gram, got a stack"):
        m.eigenbasis(np.stack([np.eye(3)] * 2))


# ------------------------------------------------------------------------------------------
# the semantic gap: centring convention, equal-label exclusion
# ------------------------------------------------------------------------------------------

def test_centred_gap_differs_from_raw_on_features_with_a_large_common_mean():
    """A 3×3 factorial code plus a common mean 5× its size (as ReLU features carry): raw
    cosines all crowd near 1 and the raw gap shrinks; the centred gap sees the code."""
    rng = np.random.default_rng(3)
    p = ufm.settings.factorial((3, 3))
    d = 12
    code = sum(rng.standard_normal((d, 3))[:, p.attributes[:, f]] for f in range(2))
    H = code + 0.3 * rng.standard_normal((d, p.N)) + 5.0 * rng.standard_normal((d, 1))
    G = H.T @ H
    centred, raw = m.semantic_gap(G, p.attributes), m.semantic_gap(G, p.attributes, centred=False)
    assert centred == pytest.approx(direct_gap(H, p.attributes), abs=1e-12)
    assert raw == pytest.approx(direct_gap(H, p.attributes, centred=False), abs=1e-12)
    assert centred - raw > 0.3, (centred, raw)           # measured: centred 0.68, raw 0.05
    # a common offset does not move the centred gap at all
    H2 = H + 40.0 * rng.standard_normal((d, 1))
    assert m.semantic_gap(H2.T @ H2, p.attributes) == pytest.approx(centred, abs=1e-9)
    # at a simplex ETF both conventions give 0
    E = m.etf_target(n=p.N)
    assert abs(m.semantic_gap(E, p.attributes)) < 1e-12 and abs(m.semantic_gap(E, p.attributes, centred=False)) < 1e-12


def test_equal_label_pairs_excluded_when_several_samples_share_a_context(problem, stack):
    """K < N: the two samples of a context share every attribute and their label. Counting them
    would add sharing pairs of high cosine; the gap excludes them (checked against numpy)."""
    H = stack["H"][0, 0]
    G = H.T @ H
    lab, attrs = problem.labels, problem.attributes
    assert problem.K < problem.N and np.unique(lab).size == problem.K
    with_exclusion = direct_gap(H, attrs, lab)
    without = direct_gap(H, attrs)
    assert abs(with_exclusion - without) > 0.02, (with_exclusion, without)   # measured 0.49 vs 0.58
    assert m.semantic_gap(G, attrs, lab) == pytest.approx(with_exclusion, abs=1e-12)
    assert m.semantic_gap(G, attrs) == pytest.approx(without, abs=1e-12)
    # the problem's labels are used by default, through the table and through a Trajectory
    tr = ufm.Trajectory(t=np.arange(1.0, 4.0), loss=np.zeros(3), gram_H=stack["gram_H"][:, 0], problem=problem)
    expected = [direct_gap(stack["H"][t, 0], attrs, lab) for t in range(3)]
    np.testing.assert_allclose(tr.metric("semantic_gap"), expected, atol=1e-12)
    np.testing.assert_allclose(tr.metric("semantic_gap", labels=None),
                               [direct_gap(stack["H"][t, 0], attrs) for t in range(3)], atol=1e-12)
    # one attribute alone: pairs equal on attribute 1, different labels; baseline pairs sharing nothing
    X = H - H.mean(axis=1, keepdims=True)
    X /= np.linalg.norm(X, axis=0)
    cos = X.T @ X
    iu = np.triu(np.ones_like(cos, dtype=bool), 1) & (lab[:, None] != lab[None, :])
    eq1 = iu & (attrs[:, 1, None] == attrs[None, :, 1])
    none = iu & np.all(attrs[:, None, :] != attrs[None, :, :], axis=2)
    assert tr.metric("semantic_gap", attribute=1)[0] == pytest.approx(cos[eq1].mean() - cos[none].mean(), abs=1e-12)
    # with one sample per context (K = N) no pair has equal labels: passing them changes nothing
    p1 = ufm.settings.factorial((2, 3))
    H1 = H[:, ::2]
    assert m.semantic_gap(H1.T @ H1, p1.attributes, p1.labels) == m.semantic_gap(H1.T @ H1, p1.attributes)


def test_gap_pairs_is_the_one_mask_implementation(problem):
    pairs = m.gap_pairs(problem.attributes, problem.labels)
    N = problem.N
    for i in range(N):
        for j in range(N):
            allowed = i < j and problem.labels[i] != problem.labels[j]
            shares = bool(np.any(problem.attributes[i] == problem.attributes[j]))
            assert pairs.share[i, j] == (allowed and shares)
            assert pairs.share_none[i, j] == (allowed and not shares)
    assert pairs.defined and pairs.labels_excluded
    assert not m.gap_pairs(np.arange(4)).defined          # no pair shares a value


# ------------------------------------------------------------------------------------------
# participation ratio vs entropy effective rank
# ------------------------------------------------------------------------------------------

def test_participation_ratio_on_known_spectra():
    rng = np.random.default_rng(0)
    for n in (2, 5, 12):
        P = np.eye(n) - 1.0 / n
        assert m.participation_ratio(P) == pytest.approx(n - 1, abs=1e-12)
        assert m.participation_ratio(P, centred=False) == pytest.approx(n - 1, abs=1e-12)
        assert m.participation_ratio(np.eye(n), centred=False) == pytest.approx(n, abs=1e-12)
        assert m.participation_ratio(np.eye(n)) == pytest.approx(n - 1, abs=1e-12)    # centring removes 1
        v = rng.standard_normal(n)
        assert m.participation_ratio(np.outer(v, v)) == pytest.approx(1.0, abs=1e-12)
        assert m.participation_ratio(np.outer(v, v), centred=False) == pytest.approx(1.0, abs=1e-12)
    # spectrum (3, 1, 0): (3 + 1)²/(9 + 1) = 1.6, against the entropy rank exp(H(3/4, 1/4)) ≈ 1.755
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    G = Q @ np.diag([3.0, 1.0, 0.0]) @ Q.T
    assert m.participation_ratio(G, centred=False) == pytest.approx(1.6, abs=1e-12)
    p = np.array([0.75, 0.25])
    assert m.effective_rank(G) == pytest.approx(np.exp(-np.sum(p * np.log(p))), abs=1e-12)
    assert m.effective_rank(G) > m.participation_ratio(G, centred=False)
    # zero and all-equal vectors: no spread, 0
    assert m.participation_ratio(np.zeros((4, 4))) == 0.0
    assert m.participation_ratio(np.full((4, 4), 2.0)) == 0.0


# ------------------------------------------------------------------------------------------
# the table's rejections
# ------------------------------------------------------------------------------------------

def test_table_rejects_unknown_names_options_and_missing_quantities(problem, stack):
    tr = ufm.Trajectory(t=np.arange(1.0, 4.0), loss=np.zeros(3), gram_H=stack["gram_H"][:, 0], problem=problem)
    with pytest.raises(ValueError, match=r"name: unknown metric 'gapp'; expected one of etf_distance, semantic_gap"):
        tr.metric("gapp")
    with pytest.raises(TypeError, match=r"bogus: metric 'semantic_gap' has no option 'bogus'; its options: "
                                        r"attributes, labels, attribute, centred"):
        tr.metric("semantic_gap", bogus=1)
    with pytest.raises(TypeError, match="which: metric 'nc1' has no option 'which'; its options: labels"):
        tr.metric("nc1", which="W")
    with pytest.raises(TypeError, match="centred: metric 'norm_H' has no option 'centred'; its options: none"):
        tr.metric("norm_H", centred=True)
    with pytest.raises(ValueError, match=r"gram_W: metric 'nc3' needs the classifier Gram WWᵀ .* which was not "
                                         r"saved"):
        tr.metric("nc3")
    with pytest.raises(ValueError, match=r"logits: metric 'accuracy' needs the logits"):
        tr.metric("accuracy")
    with pytest.raises(ValueError, match="gram_W: metric 'etf_distance' needs"):
        tr.metric("etf_distance", which="W")
    with pytest.raises(ValueError, match="which: expected one of 'H', 'W', got 'X'"):
        tr.metric("effective_rank", which="X")
    with pytest.raises(ValueError, match=r"attribute: expected an attribute index 0 … 1, got 2"):
        tr.metric("semantic_gap", attribute=2)
    with pytest.raises(ValueError, match="labels: metric 'nc1' needs integer labels, and no problem was given"):
        m.evaluate("nc1", gram_H=stack["gram_H"])
    with pytest.raises(ValueError, match="attributes: metric 'semantic_gap' needs the contexts' attributes"):
        m.evaluate("semantic_gap", gram_H=stack["gram_H"])
    with pytest.raises(ValueError, match="kernel: metric 'kernel_alignment' needs kernel="):
        m.evaluate("kernel_alignment", gram_H=stack["gram_H"])
    assert set(m.METRICS) >= {"etf_distance", "semantic_gap", "kernel_alignment", "effective_rank",
                              "participation_ratio", "nc1", "nc2", "nc3", "nc4", "cdnv", "norm_H", "norm_W"}


# ------------------------------------------------------------------------------------------
# callers carry the convention
# ------------------------------------------------------------------------------------------

def test_trajectory_transient_summary_carries_the_convention(problem, stack):
    tr = ufm.Trajectory(t=np.arange(1.0, 4.0), loss=np.zeros(3), gram_H=stack["gram_H"][:, 0], problem=problem)
    s = tr.transient_summary()
    assert s.centred is True and s.as_dict()["centred"] is True
    assert s.peak == pytest.approx(tr.metric("semantic_gap").max(), abs=0)
    raw = tr.transient_summary(centred=False)
    assert raw.centred is False and raw.peak == pytest.approx(tr.metric("semantic_gap", centred=False).max())
    assert "centred" not in m.transient_summary([1.0, 2.0], [1.0, 0.0]).as_dict()   # not a gap curve


def test_sweep_summary_and_observables_use_the_layer(problem, stack):
    gH, gW = stack["gram_H"][:, 0], stack["gram_W"][:, 0]
    t = np.arange(1.0, 4.0)
    s = summarize(t, np.zeros(3), gH, stack["logits"][:, 0], problem)
    gap = m.semantic_gap(gH, problem.attributes, problem.labels)
    assert s["gap_centred"] is True and s["gap_final"] == gap[-1] and s["gap_peak"] == gap.max()
    assert s["etf_distance_final"] == m.etf_distance(gH[-1], problem.labels)
    # bridge observables: relations are mean centred cosines per relation (numpy from features)
    p = ufm.settings.factorial((2, 3))
    H = stack["H"][:, 0][..., ::2]
    G = np.swapaxes(H, -1, -2) @ H
    GW = gW[:, :p.K, :p.K]
    obs = observe(G, GW, p, ("relations", "semantic_gap", "participation_ratio"))
    for j in range(3):
        X = H[j] - H[j].mean(axis=1, keepdims=True)
        X /= np.linalg.norm(X, axis=0)
        cos = X.T @ X
        expected = [cos[np.asarray(R, dtype=bool)].mean() for R in p.relations[1:]]
        np.testing.assert_allclose(obs["relations"][j], expected, atol=1e-12)
        assert obs["semantic_gap"][j, 0] == pytest.approx(direct_gap(H[j], p.attributes), abs=1e-12)
    np.testing.assert_allclose(obs["participation_ratio"][:, 0], m.participation_ratio(G), rtol=1e-14)
    # a save that is not a Gram (NaN padding of a stopped integration) gives a NaN row
    G[1] = np.nan
    obs = observe(G, GW, p, ("relations", "etf_distance"))
    assert np.isnan(obs["relations"][1]).all() and np.isnan(obs["etf_distance"][1, 0])
    assert np.isfinite(obs["relations"][[0, 2]]).all()
