"""ufm.theory.scheme: symbolic association schemes against explicit relation matrices."""

import numpy as np
import pytest
import sympy as sp

import ufm
from ufm.theory.scheme import bind, factorial_scheme, hierarchy_scheme

PROBLEMS = [
    ufm.settings.factorial((3, 3)),
    ufm.settings.factorial((2, 2, 2)),
    ufm.settings.hierarchy(2, 3),
    ufm.settings.balanced(5, 3),
    ufm.settings.factorial((2, 3), samples_per_context=2, label_permutation="random", seed=4),
    ufm.settings.hierarchy(3, 2, samples_per_context=2),
]


def _expand(bs, coefs, mats):
    return sum(bs.num(c) * M for c, M in zip(coefs, mats))


@pytest.mark.parametrize("problem", PROBLEMS, ids=[p.name + str(p.N) for p in PROBLEMS])
def test_structure_constants_match_matrix_products(problem):
    """Symbolic structure constants, evaluated at the problem's sizes, reproduce every product
    of the explicit relation matrices (R·R, B·R, C·B, B·Bᵀ, Bᵀ·B)."""
    bs = bind(problem)
    sc = bs.scheme
    R, C, B = bs.R, bs.C, bs.B
    for a in range(len(R)):
        for b in range(len(R)):
            np.testing.assert_array_equal(R[a] @ R[b], _expand(bs, sc.p[a][b], R))
    for a in range(len(B)):
        for b in range(len(R)):
            np.testing.assert_array_equal(B[a] @ R[b], _expand(bs, sc.alpha[a][b], B))
        for b in range(len(B)):
            np.testing.assert_array_equal(B[a] @ B[b].T, _expand(bs, sc.delta[a][b], C))
            np.testing.assert_array_equal(B[a].T @ B[b], _expand(bs, sc.eps[a][b], R))
    for a in range(len(C)):
        for b in range(len(B)):
            np.testing.assert_array_equal(C[a] @ B[b], _expand(bs, sc.gamma[a][b], B))
    np.testing.assert_array_equal(B[sc.label], problem.Y)
    for a, Ba in enumerate(B):
        assert np.all(Ba.sum(axis=0) == bs.num(sc.col_valency[a]))
        assert np.all(Ba.sum(axis=1) == bs.num(sc.row_valency[a]))
    if "attribute" in problem.similarities:
        np.testing.assert_array_equal(_expand(bs, sc.attribute_coefficients, R), problem.similarities["attribute"])


@pytest.mark.parametrize("problem", PROBLEMS, ids=[p.name + str(p.N) for p in PROBLEMS])
def test_eigenmatrix_gives_the_spectrum(problem):
    """Eigenvalues from P·c with multiplicities m_i equal numpy's for a random element."""
    bs = bind(problem)
    rng = np.random.default_rng(1)
    for side, mats, (P, mult, _) in (("R", bs.R, bs.scheme.eigen_R), ("C", bs.C, bs.scheme.eigen_C)):
        c = rng.normal(size=len(mats))
        G = bs.expand(c, side)
        Pn = np.array(P.subs(bs.values), dtype=float)
        pred = np.sort(np.repeat(Pn @ c, [int(bs.num(m)) for m in mult]))
        np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(0.5 * (G + G.T))), pred, atol=1e-10)


@pytest.mark.parametrize("scheme", [factorial_scheme(1, True), factorial_scheme(2), factorial_scheme(3, True),
                                    hierarchy_scheme(3), hierarchy_scheme(2, True)], ids=str)
def test_multiplicities_and_valencies_are_symbolic_identities(scheme):
    P, mult, names = scheme.eigen_R
    assert sp.simplify(sum(mult) - scheme.N) == 0
    assert sp.simplify(sum(scheme.valency) - scheme.N) == 0
    assert sp.simplify(sum(scheme.col_valency) - scheme.K) == 0
    assert names[0] == "constant" and list(P[0, :]) == list(scheme.valency)


def test_bind_names_what_does_not_fit():
    p = ufm.settings.balanced(3, 2)
    with pytest.raises(ValueError, match="association scheme"):
        bind(ufm.Problem.classification([0, 1, 2]))
    with pytest.raises(ValueError, match="weights"):
        bind(ufm.Problem(p.Y, weights=np.arange(1.0, 7.0), relations=p.relations))
    b = bind(ufm.settings.factorial((3, 3)))
    with pytest.raises(ValueError, match="span"):
        b.coupling_coefficients(np.diag(np.arange(1.0, 10.0)))
