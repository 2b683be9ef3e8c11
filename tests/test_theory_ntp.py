"""ufm.theory.ntp: the centred-support prediction, its exactness (KKT), early order."""

import numpy as np
import pytest

import ufm
from ufm.theory.ntp import soft_labels, support_geometry, svm_solution


@pytest.mark.parametrize("V,sups,exact", [
    (4, [(0,), (1,), (2,), (3,)], True),
    (4, [(0, 1, 2), (0, 1), (2, 3), (3,)], True),
    (5, [(0, 1), (0, 2), (0, 3), (4,)], False),
])
def test_kkt_decides_whether_the_centred_support_is_the_max_margin_solution(V, sups, exact):
    Y = soft_labels(sups, V)
    res = support_geometry(ufm.Problem(Y))
    assert res.values["kkt_holds"] == exact
    L, GW, GH, nuc, _ = svm_solution(Y)
    nuc_s = np.linalg.svd(res.values["St"], compute_uv=False).sum()
    dist = np.linalg.norm(GH / np.linalg.norm(GH) - res.values["G_H"])
    if exact:
        assert abs(nuc - nuc_s) < 1e-8 and dist < 1e-6
    else:
        assert nuc < nuc_s - 1e-3 and dist > 1e-2


def test_one_hot_supports_predict_the_plain_etf():
    res = support_geometry(ufm.Problem(np.eye(5)))
    sv = res.values["sigma"]
    assert len(sv) == 4 and np.ptp(sv) < 1e-12


def test_concepts_with_larger_singular_values_appear_first():
    res = support_geometry(ufm.Problem(soft_labels([(0, 1), (0, 1), (2, 3), (2, 3), (4,), (5,)], 6)))
    ver = res.verify_early()
    assert ver.ok, str(ver)


def test_regularised_geometry_approaches_the_prediction_as_lambda_decreases():
    res = support_geometry(ufm.Problem(soft_labels([(0, 1, 2), (0, 1), (2, 3), (3,)], 4)))
    ver = res.verify(lambdas=(1e-2, 1e-3))
    assert ver.discrepancies["distance not decreasing (0/1)"] == 0.0, str(ver)
