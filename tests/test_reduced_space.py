"""The numeric reduced space: ufm.reduction (tables, projection) and the numba field ufm.kernels.reduced.

Ground truths: the full Gram-space numpy reference (expand → ufm.reference.vector_field →
project back), the sympy-derived field of ufm.theory.reduce, and ufm.solve in Gram space.
"""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import ufm
from ufm.kernels import reduced as kr
from ufm.models import GramState, PiecewiseCoupling
from ufm.reduction import Reduction, reference_field, reference_objective


def _in_span_coupling(problem, strength=0.8):
    """A coupling in the scheme's algebra: the attribute kernel, or (balanced, no attributes)
    I + c·(blocks of the samples of a class)."""
    if problem.attributes is not None:
        return problem.coupling("attribute", strength)
    n = problem.N // problem.K
    return np.eye(problem.N) + strength ** 2 * np.kron(np.eye(problem.K), np.ones((n, n)))


def _variants(problem):
    """Every loss × coupling × bias × λ_E combination, distinct rates and decays, as (id, model)."""
    theta = _in_span_coupling(problem)
    out = []
    for loss, coupled, bias, lam_e in itertools.product(("ce", "mse"), (False, True), (False, True), (0.0, 0.07)):
        m = ufm.UFM(problem, loss=loss, lambda_W=0.03, lambda_H=0.02, lambda_E=lam_e, bias=bias,
                    lambda_b=0.011 if bias else 0.0, coupling=theta if coupled else None,
                    lr_W=1.3, lr_H=0.7, lr_b=0.9)
        out.append((f"{loss}-{'coupled' if coupled else 'standard'}-{'bias' if bias else 'nobias'}-lamE{lam_e:g}", m))
    return out


def _kernel(model, reduction=None):
    """(field(y) -> dy, objective(y) -> (objective, data loss)) through the numba kernels."""
    r = reduction or Reduction.from_model(model)
    ti, tf = r.pack()
    ip, coef = ufm.engine.pack_model(model, "gram")[:2]
    work = np.zeros(kr.reduced_work_size(ti))

    def field(y):
        dy = np.full(r.size, np.nan)
        kr.reduced_field(np.ascontiguousarray(y, dtype=float), dy, ip, coef, ti, tf, work)
        return dy

    def objective(y):
        return kr.reduced_objective(np.ascontiguousarray(y, dtype=float), ip, coef, ti, tf, work)

    return field, objective


def _random_states(r, count=3, seed=0, scale=0.8):
    """Random reduced states (coefficients ~ N(0, scale²)): logits of order 1–3."""
    rng = np.random.default_rng(seed)
    return [scale * rng.normal(size=r.size) for _ in range(count)]


FAMILIES = [
    ufm.settings.balanced(2),
    ufm.settings.balanced(5),
    ufm.settings.balanced(3, 4),
    ufm.settings.factorial((4,)),
    ufm.settings.factorial((2, 3)),
    ufm.settings.factorial((3, 3)),
    ufm.settings.factorial((4, 4)),
    ufm.settings.factorial((2, 2, 2)),
    ufm.settings.factorial((2, 3, 2)),
    ufm.settings.factorial((2, 3), samples_per_context=2),
    ufm.settings.factorial((3, 2), label_permutation="random", seed=3),
    ufm.settings.hierarchy(2, 2),
    ufm.settings.hierarchy(3, 2),
    ufm.settings.hierarchy(2, 3),
    ufm.settings.hierarchy(3, 3),
    ufm.settings.hierarchy(2, 4),
    ufm.settings.hierarchy(3, 4),
    ufm.settings.hierarchy(2, 3, samples_per_context=2),
]


def _family_id(p):
    return p.name + (f"-N{p.N}" if p.N != p.K else "")


@pytest.mark.parametrize("problem", FAMILIES, ids=_family_id)
def test_kernel_field_and_objective_equal_the_full_gram_reference(problem):
    """At random states of the span, the table-driven field equals expand → full Gram field →
    project, the full field stays in the span, and the objective equals the full objective."""
    worst = {"field": 0.0, "span": 0.0, "objective": 0.0}
    for ident, model in _variants(problem):
        r = Reduction.from_model(model)
        field, objective = _kernel(model, r)
        for y in _random_states(r):
            ref, residual = reference_field(r, y, model)
            got = field(y)
            worst["field"] = max(worst["field"], np.abs(got - ref).max() / np.abs(ref).max())
            worst["span"] = max(worst["span"], residual)
            obj, data = objective(y)
            obj_ref, data_ref = reference_objective(r, y, model)
            worst["objective"] = max(worst["objective"], abs(obj - obj_ref) / abs(obj_ref),
                                     abs(data - data_ref) / abs(data_ref))
    # measured: field and span residual <= 1.1e-13 (hierarchy(3, 4), N = 81: the rounding of the full
    # N×N products, which the span residual shows is the reference's own), <= 1e-14 elsewhere;
    # objective <= 1.2e-14 (random h make the λ_E and λ_H traces cancel, so relative to a small value)
    assert worst["field"] < 5e-13, worst
    assert worst["span"] < 5e-13, worst
    assert worst["objective"] < 6e-14, worst


def test_field_is_right_at_large_logits():
    """The softmax subtracts the maximum: logits of ±300 (label logit −300, loss ≈ 600) neither
    overflow nor lose the loss."""
    p = ufm.settings.factorial((2, 3))
    model = ufm.UFM(p, bias=True, lambda_W=0.01, lambda_H=0.01, coupling=p.coupling("attribute", 0.5))
    r = Reduction.from_model(model)
    field, objective = _kernel(model, r)
    y = _random_states(r, 1, seed=5)[0]
    y[:r.sizes[0]] = np.array([-300.0, 300.0, 120.0, -50.0])
    ref, _ = reference_field(r, y, model)
    np.testing.assert_allclose(field(y), ref, rtol=0, atol=1e-15 * np.abs(ref).max())   # measured 1.8e-16
    obj, data = objective(y)
    obj_ref, data_ref = reference_objective(r, y, model)
    assert data > 500       # the label logit is far below the others
    assert abs(obj - obj_ref) <= 1e-14 * abs(obj_ref)          # measured 0
    assert abs(data - data_ref) <= 1e-14 * abs(data_ref)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_diverged_state_gives_nan_not_a_crash(bad):
    """A non-finite logit coefficient makes the field and the loss NaN (what the driver's
    non-finite check catches) instead of indexing exp_nonpositive's table with garbage."""
    p = ufm.settings.factorial((2, 3))
    model = ufm.UFM(p, lambda_W=0.01, lambda_H=0.01, coupling=p.coupling("attribute", 0.5))
    r = Reduction.from_model(model)
    field, objective = _kernel(model, r)
    y = _random_states(r, 1)[0]
    y[1] = bad
    assert np.isnan(field(y)).any()
    assert np.isnan(objective(y)[1])


# ---------------------------------------------------------------------------------------------
# against the symbolic field of ufm.theory
# ---------------------------------------------------------------------------------------------

def _theory_order(reduction, reduced_model):
    """Index map from the theory's coefficient order to ours, per side.

    ufm.theory.scheme orders relations by its Kronecker construction and numbers classes by
    the problem's labels (BoundScheme.R, .C, .B hold the matrices); ours follow
    problem.relations. The map is found by matching the 0/1 matrices: theory coefficient j of
    a side is our coefficient order[j]. The state maps as y_theory = y[perm]."""
    bound = reduced_model.bound
    perm = []
    offset = 0
    for mats, index in ((bound.B, reduction.B_index), (bound.C, reduction.C_index), (bound.R, reduction.R_index)):
        order = []
        for E in mats:
            hit = [c for c in range(index.max() + 1) if np.array_equal(index == c, np.asarray(E) > 0)]
            assert len(hit) == 1
            order.append(hit[0])
        assert sorted(order) == list(range(len(mats)))
        perm.extend(offset + c for c in order)
        offset += len(mats)
    if reduction.bias:
        perm.append(offset)
    return np.array(perm)


SYMBOLIC = [
    ufm.settings.balanced(4, 3),
    ufm.settings.factorial((3,)),
    ufm.settings.factorial((3, 3)),
    ufm.settings.factorial((2, 3), samples_per_context=2),
    ufm.settings.factorial((2, 3, 2)),
    ufm.settings.factorial((3, 2), label_permutation="random", seed=3),
    ufm.settings.hierarchy(3, 2),
    ufm.settings.hierarchy(2, 3, samples_per_context=2),
    ufm.settings.hierarchy(2, 4),
]


@pytest.mark.parametrize("problem", SYMBOLIC, ids=_family_id)
def test_numeric_field_equals_the_symbolic_field(problem):
    """The numba field over numeric structure constants equals the sympy-derived reduced field
    evaluated directly (ufm.theory.reduce(model).symbolic_rhs), after mapping the coefficient
    orders (see _theory_order)."""
    worst = 0.0
    # λ_E = 0 is the same formula with one coefficient zero: the λ_E > 0 variants suffice, and
    # halve the theory's set-up (lambdify for the families without generated code)
    for ident, model in [(i, m) for i, m in _variants(problem) if m.lambda_E > 0]:
        r = Reduction.from_model(model)
        sym = ufm.theory.reduce(model)
        perm = _theory_order(r, sym)
        field, _ = _kernel(model, r)
        nB, nC, nR = r.sizes
        np.testing.assert_allclose(r.theta[perm[nB + nC:nB + nC + nR] - nB - nC], sym.theta, rtol=1e-14, atol=1e-15)
        for y in _random_states(r, 2, seed=1):
            want = sym.symbolic_rhs(y[perm])
            got = field(y)[perm]
            worst = max(worst, np.abs(got - want).max() / np.abs(want).max())
    assert worst < 1e-14, worst     # measured 1.24e-15


# ---------------------------------------------------------------------------------------------
# tables, states, packing
# ---------------------------------------------------------------------------------------------

def test_structure_constants_reproduce_the_products():
    """Each table rebuilds its products from the 0/1 relation matrices (hierarchy with samples)."""
    p = ufm.settings.hierarchy(2, 3, samples_per_context=2)
    r = Reduction.from_model(ufm.UFM(p))
    nB, nC, nR = r.sizes
    R = np.stack([(r.R_index == a) * 1.0 for a in range(nR)])
    C = np.stack([(r.C_index == a) * 1.0 for a in range(nC)])
    B = np.stack([(r.B_index == a) * 1.0 for a in range(nB)])
    np.testing.assert_array_equal(R, np.asarray(p.relations))
    np.testing.assert_array_equal(C[0], np.eye(p.K))
    np.testing.assert_array_equal(B[r.label], p.Y)
    for a, b in itertools.product(range(nB), range(nR)):
        np.testing.assert_array_equal(B[a] @ R[b], np.tensordot(r.alpha[a, b], B, 1))
    for a, b in itertools.product(range(nC), range(nB)):
        np.testing.assert_array_equal(C[a] @ B[b], np.tensordot(r.gamma[a, b], B, 1))
    for a, b in itertools.product(range(nB), range(nB)):
        np.testing.assert_array_equal(B[a] @ B[b].T, np.tensordot(r.delta[a, b], C, 1))
        np.testing.assert_array_equal(B[a].T @ B[b], np.tensordot(r.eps[a, b], R, 1))
    for a, b in itertools.product(range(nR), range(nR)):
        np.testing.assert_array_equal(R[a] @ R[b], np.tensordot(r.p[a, b], R, 1))
    np.testing.assert_array_equal(B.sum(axis=1), r.col_valency[:, None] * np.ones(p.N))
    np.testing.assert_array_equal(B.sum(axis=2), r.row_valency[:, None] * np.ones(p.K))
    assert r.names[0] == "m[identity]" and r.names[nB + nC + 1] == "h[same context]"


def test_coupling_coefficients_and_pseudo_inverse():
    """θ rebuilds Θ; the Θ⁺ coefficients rebuild pinv(Θ); Θ = I (given or None) is not 'coupled'."""
    p = ufm.settings.factorial((3, 2))
    Theta = p.coupling("attribute", 0.9)
    r = Reduction.from_model(ufm.UFM(p, coupling=Theta))
    R = np.asarray(p.relations)
    np.testing.assert_allclose(np.tensordot(r.theta, R, 1), Theta, rtol=0, atol=2e-15)         # measured 4.4e-16
    np.testing.assert_allclose(np.tensordot(r.theta_pinv, R, 1), np.linalg.pinv(Theta), rtol=0, atol=2e-15)  # 3.3e-16
    assert r.coupled
    for coupling in (None, np.eye(p.N)):
        r0 = Reduction.from_model(ufm.UFM(p, coupling=coupling))
        assert not r0.coupled and r0.theta[0] == 1.0 and not r0.theta[1:].any()


def test_pack_layout():
    """The packed lists hold exactly the nonzero structure constants, addressed in the work
    buffer as documented in ufm.kernels.reduced, and the vectors sit at their offsets."""
    p = ufm.settings.factorial((2, 3))
    r = Reduction.from_model(ufm.UFM(p, coupling=p.coupling("attribute", 0.7)))
    ti, tf = r.pack()
    assert ti.dtype == np.int64 and tf.dtype == np.float64
    nB, nC, nR = r.sizes
    assert (ti[kr.TI_NB], ti[kr.TI_NC], ti[kr.TI_NR], ti[kr.TI_K], ti[kr.TI_N]) == (nB, nC, nR, p.K, p.N)
    np.testing.assert_array_equal(tf[ti[kr.TI_OFF_COLV]:][:nB], r.col_valency)
    np.testing.assert_array_equal(tf[ti[kr.TI_OFF_ROWV]:][:nB], r.row_valency)
    np.testing.assert_allclose(tf[ti[kr.TI_OFF_TRACE]:][:nR], r.theta_pinv * r.R_count, rtol=1e-15)
    assert tf[kr.TF_WEIGHT_SUM] == pytest.approx(1.0)
    at = kr.work_layout(nB, nC, nR)
    assert at["size"] == kr.reduced_work_size(ti)
    sizes = {"m": nB, "w": nC, "h": nR, "g": nB, "T1": nB, "T2": nB, "S": nC, "U": nR, "T3": nB, "V": nR}

    def block(position):
        name = max((n for n in sizes if at[n] <= position), key=lambda n: at[n])
        return name, position - at[name]

    nb, nl = ti[kr.TI_NNZ_BILINEAR], ti[kr.TI_NNZ_LINEAR]
    b_idx = ti[ti[kr.TI_OFF_BILINEAR]:][:3 * nb].reshape(nb, 3)
    b_val = tf[ti[kr.TI_OFF_BVAL]:][:nb]
    l_idx = ti[ti[kr.TI_OFF_LINEAR]:][:2 * nl].reshape(nl, 2)
    l_val = tf[ti[kr.TI_OFF_LVAL]:][:nl]
    assert ti.size == kr.TI_HEADER + b_idx.size + l_idx.size
    rebuilt = {("g", "h", "T1"): np.zeros_like(r.alpha), ("w", "g", "T2"): np.zeros_like(r.gamma),
               ("g", "m", "S"): np.zeros_like(r.delta), ("m", "g", "U"): np.zeros_like(r.eps),
               ("T2", "T3"): np.zeros((nB, nB)), ("U", "V"): np.zeros((nR, nR))}
    for idx, val in list(zip(b_idx, b_val)) + list(zip(l_idx, l_val)):
        names, pos = zip(*(block(int(q)) for q in idx))
        assert rebuilt[names][pos] == 0.0          # each structure constant stored once
        rebuilt[names][pos] = val
    np.testing.assert_array_equal(rebuilt[("g", "h", "T1")], r.alpha)
    np.testing.assert_array_equal(rebuilt[("w", "g", "T2")], r.gamma)
    np.testing.assert_array_equal(rebuilt[("g", "m", "S")], r.delta)
    np.testing.assert_array_equal(rebuilt[("m", "g", "U")], r.eps)
    np.testing.assert_array_equal(rebuilt[("T2", "T3")], np.einsum("abc,b->ac", r.alpha, r.theta))
    np.testing.assert_array_equal(rebuilt[("U", "V")], np.einsum("abc,b->ac", r.p, r.theta))
    # the standard model stores no Θ entries
    ti0, _ = Reduction.from_model(ufm.UFM(p)).pack()
    assert ti0[kr.TI_COUPLED] == 0 and ti0[kr.TI_NNZ_LINEAR] == 0
    assert kr.reduced_state_size(ufm.engine.pack_model(ufm.UFM(p, bias=True), "gram").ip, ti) == nB + nC + nR + 1


def test_project_expand_and_isotropic():
    """expand ∘ project is the identity on the span, vectorised over a leading time axis; the
    isotropic state expands to M = 0, s²I, s²I."""
    p = ufm.settings.hierarchy(2, 2, samples_per_context=2)
    r = Reduction.from_model(ufm.UFM(p, bias=True))
    y = np.stack(_random_states(r, 4, seed=2))
    M, GW, GH, b = r.expand(y)
    assert M.shape == (4, p.K, p.N) and GW.shape == (4, p.K, p.K) and GH.shape == (4, p.N, p.N) and b.shape == (4, p.K)
    for k in range(4):
        back, residual = r.project(GramState(M[k], GW[k], GH[k], b[k]))
        assert residual < 2e-15     # measured 2.7e-16 (the mean over a relation rounds)
        np.testing.assert_allclose(back, y[k], rtol=1e-15, atol=1e-16)
    M0, GW0, GH0, b0 = r.expand(r.isotropic(0.3))
    assert not M0.any() and not b0.any()
    np.testing.assert_allclose(GW0, 0.09 * np.eye(p.K), rtol=1e-15)
    np.testing.assert_allclose(GH0, 0.09 * np.eye(p.N), rtol=1e-15)


def test_project_refuses_a_state_outside_the_span_unless_asked():
    p = ufm.settings.factorial((2, 3))
    model = ufm.UFM(p)
    r = Reduction.from_model(model)
    x = model.init(7, scale=0.5, seed=0)
    with pytest.raises(ValueError, match=r"not in the span.*strict=False"):
        r.project(x)
    y, residual = r.project(x, strict=False)
    assert residual > 0.1
    gs = x.grams()
    np.testing.assert_allclose(y[r.sizes[0] + r.sizes[1]], np.mean(np.diag(gs.gram_H)), rtol=1e-14)
    with pytest.raises(ValueError, match="bias"):
        r.project(GramState(gs.M, gs.gram_W, gs.gram_H, np.zeros(p.K)))
    with pytest.raises(ValueError, match="last axis of length"):
        r.expand(np.zeros(r.size + 1))


# ---------------------------------------------------------------------------------------------
# problems that do not qualify
# ---------------------------------------------------------------------------------------------

def test_soft_labels_are_refused():
    p = ufm.settings.sequences(labels="soft")
    with pytest.raises(ValueError, match=r"space='reduced' needs one-hot labels, got 'soft' targets"):
        Reduction.from_model(ufm.UFM(p))


def test_unequal_weights_are_refused():
    b = ufm.settings.balanced(3, 2)
    w = np.linspace(1.0, 2.0, b.N)
    p = ufm.Problem(b.Y, weights=w / w.sum(), relations=b.relations, relation_names=b.relation_names)
    with pytest.raises(ValueError, match="space='reduced' needs equal context weights"):
        Reduction.from_model(ufm.UFM(p))


@pytest.mark.parametrize("problem", [ufm.settings.sequences(labels="unique"),
                                     ufm.settings.factorial((2, 2), samples_per_context=[1, 2, 1, 1])],
                         ids=["sequences", "imbalanced"])
def test_a_problem_without_relations_is_refused(problem):
    with pytest.raises(ValueError, match=r"needs a problem with an association scheme \(problem.relations is None"):
        Reduction.from_model(ufm.UFM(problem))


def test_a_coupling_outside_the_span_is_refused():
    p = ufm.settings.factorial((2, 3))
    A = np.random.default_rng(0).normal(size=(p.N, p.N))
    with pytest.raises(ValueError, match=r"coupling: Θ is not in the span of problem.relations \(relative residual"):
        Reduction.from_model(ufm.UFM(p, coupling=A @ A.T))
    pc = PiecewiseCoupling([0.0, 1.0], np.stack([np.eye(p.N), p.coupling("attribute", 1.0)]))
    with pytest.raises(ValueError, match="coupling: space='reduced' needs a constant coupling"):
        Reduction.from_model(ufm.UFM(p, coupling=pc))


def test_relations_not_closed_under_the_products_are_refused():
    """A partition of the pairs that is not an association scheme: on the 6-cycle, "neighbours"
    and "not neighbours" have constant valencies, but R_1 R_1 counts 1 common neighbour for
    pairs at distance 2 and 0 for pairs at distance 3, which share the relation R_2."""
    N = 6
    ring = np.abs(np.subtract.outer(np.arange(N), np.arange(N))) % N
    R1 = ((ring == 1) | (ring == N - 1)).astype(float)
    R2 = np.ones((N, N)) - np.eye(N) - R1
    p = ufm.Problem.classification(np.arange(N), relations=[np.eye(N), R1, R2])
    with pytest.raises(ValueError, match=r"closed under the products of the Gram ODE.*max residual"):
        Reduction.from_model(ufm.UFM(p))


def _pair_relations(N, pairs):
    """identity, the symmetric relation of ``pairs``, and the rest."""
    R1 = np.zeros((N, N))
    for i, j in pairs:
        R1[i, j] = R1[j, i] = 1.0
    return [np.eye(N), R1, np.ones((N, N)) - np.eye(N) - R1]


@pytest.mark.parametrize("labels,pairs,message", [
    # classes of sizes 2 and 1: the diagonal blocks of Y R_a Yᵀ differ
    ([0, 0, 1], [], r"class pairs \(k, k\) to form one relation of their own \(C_0 = I\)"),
    # equal blocks, but context 2 has no partner in its class where 0 and 1 have one
    ([0, 0, 0, 1, 1, 1], [(0, 1), (3, 4)], r"labels to form one logit relation \(B_label = Y\)"),
    # one-sample classes, a relation with one entry in some columns and none in others
    ([0, 1, 2, 3], [(0, 1)], r"same number of entries in each column"),
], ids=["unequal classes", "labels split", "column valency"])
def test_relations_incompatible_with_the_labels_are_refused(labels, pairs, message):
    N = len(labels)
    p = ufm.Problem.classification(labels, relations=_pair_relations(N, pairs))
    with pytest.raises(ValueError, match=message):
        Reduction.from_model(ufm.UFM(p))


def test_bad_model_argument():
    with pytest.raises(TypeError, match="model: expected a ufm.UFM"):
        Reduction.from_model(ufm.settings.balanced(3))


# ---------------------------------------------------------------------------------------------
# numba disabled; integration end to end
# ---------------------------------------------------------------------------------------------

NOJIT_SCRIPT = r"""
import json, sys, numpy as np, ufm
from ufm.kernels import reduced as kr
from ufm.reduction import Reduction
p = ufm.settings.factorial((2, 3))
out = {}
for loss in ("ce", "mse"):
    m = ufm.UFM(p, loss=loss, lambda_W=0.02, lambda_H=0.01, lambda_E=0.05, bias=True, lambda_b=0.03,
                coupling=p.coupling("attribute", 0.7), lr_W=1.2, lr_H=0.8)
    r = Reduction.from_model(m)
    ti, tf = r.pack()
    ip, coef = ufm.engine.pack_model(m, "gram")[:2]
    y = 0.8 * np.random.default_rng(4).normal(size=r.size)
    dy = np.zeros(r.size)
    work = np.zeros(kr.reduced_work_size(ti))
    kr.reduced_field(y, dy, ip, coef, ti, tf, work)
    out[loss] = [dy.tolist(), list(kr.reduced_objective(y, ip, coef, ti, tf, work))]
json.dump(out, sys.stdout)
"""


def test_results_agree_with_numba_jit_disabled():
    """The reduced kernels run as plain Python under NUMBA_DISABLE_JIT=1 and give the same numbers."""
    def run(env_extra):
        res = subprocess.run([sys.executable, "-c", NOJIT_SCRIPT], capture_output=True, text=True,
                             env=dict(os.environ, **env_extra), timeout=600)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)
    jit, nojit = run({}), run({"NUMBA_DISABLE_JIT": "1"})
    for loss in ("ce", "mse"):
        for a, b in zip(jit[loss], nojit[loss]):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("problem,loss,bias", [(ufm.settings.factorial((3, 3)), "ce", False),
                                               (ufm.settings.hierarchy(2, 2, samples_per_context=2), "mse", True)],
                         ids=["factorial(3,3)-ce", "hierarchy(2,2)n2-mse-bias"])
def test_integrated_reduced_field_matches_the_gram_space_solve(problem, loss, bias):
    """DOP853 on the numba reduced field from isotropic Grams, expanded, equals ufm.solve in
    Gram space from the same state: the reduction is exact end to end."""
    model = ufm.UFM(problem, loss=loss, lambda_W=2e-3, lambda_H=3e-3, lambda_E=0.01, bias=bias,
                    lambda_b=0.02 if bias else 0.0, coupling=_in_span_coupling(problem, 0.8), lr_W=1.2, lr_H=0.8)
    r = Reduction.from_model(model)
    field, objective = _kernel(model, r)
    t = np.array([0.5, 5.0, 50.0, 300.0])
    y0 = r.isotropic(0.1)
    sol = solve_ivp(lambda _t, y: field(y), (0.0, t[-1]), y0, method="DOP853", t_eval=t, rtol=1e-13, atol=1e-15)
    assert sol.success
    full = ufm.solve(model, r.gram_state(y0), t, space="gram", rtol=1e-12, atol=1e-14, save="all")
    M, GW, GH, b = r.expand(sol.y.T)
    Z = M + (b[:, :, None] if bias else 0.0)
    worst = 0.0
    for mine, theirs in ((Z, full.logits), (GW, full.gram_W), (GH, full.gram_H)):
        a, c = mine.reshape(len(t), -1), theirs.reshape(len(t), -1)
        worst = max(worst, float(np.max(np.linalg.norm(a - c, axis=1) / np.linalg.norm(c, axis=1))))
    assert worst < 1e-11, worst      # measured 1.4e-12 (both integrators at rtol ~1e-12)
    loss_reduced = np.array([objective(y)[0] for y in sol.y.T])
    np.testing.assert_allclose(loss_reduced, full.loss, rtol=1e-12)     # measured 9.3e-14
