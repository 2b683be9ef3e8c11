"""Families that can express real runs (ufm.bridge.fitting): the optimiser-aware default
comparison, the warning for a Euclidean kernel under Adam, the homogeneity degree and where it
came from, and the deep-backbone family fitted by the same Fit."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import ufm.bridge as br
from ufm.bridge.fitting import family_defaults, homogeneity_degree

REAL = os.path.join(os.path.dirname(__file__), "data", "real")


def load(name):
    return br.load(os.path.join(REAL, name + ".npz"))


def _decaying_run(degree, wd=0.05, lr=0.01, grow=False):
    """Features whose rms norm decays (or grows) as exp(∓degree·wd·lr·step): what weight decay
    alone does to a degree-homogeneous backbone."""
    rng = np.random.default_rng(0)
    steps = np.arange(0, 400, 20)
    H0 = rng.normal(size=(4, 6))
    W0 = rng.normal(size=(4, 6))
    sign = 1.0 if grow else -1.0
    H = np.stack([H0 * np.exp(sign * degree * wd * lr * s) for s in steps])
    W = np.stack([W0] * len(steps))
    return br.Run(steps, H, W, labels=np.arange(4), lr=lr, weight_decay=wd, meta={"optimizer": "sgd"})


def test_homogeneity_degree_sources():
    assert homogeneity_degree(load("mlp_hierarchy_adamw")) == (4.0, "metadata")       # the MLP's 4 layers
    assert homogeneity_degree(load("mlp_hierarchy_adamw"), 2.5) == (2.5, "argument")
    # the transformers' features grow over the late half (LayerNorm output): no estimate, default 1
    assert homogeneity_degree(load("transformer_factorial_adamw")) == (1.0, "default (no metadata, feature "
                                                                             "norms do not decay)")
    est, source = homogeneity_degree(_decaying_run(3.0))
    assert source == "estimated from the late feature-norm decay" and est == pytest.approx(3.0, rel=1e-9)
    assert homogeneity_degree(_decaying_run(3.0, grow=True))[1].startswith("default")
    with pytest.raises(ValueError, match="degree: expected a homogeneity degree > 0"):
        homogeneity_degree(load("mlp_hierarchy_adamw"), -1.0)


def test_default_comparison_is_optimizer_aware():
    adamw = family_defaults(load("transformer_factorial_adamw"))
    assert {"standard", "coupled", "linear-features", "deep", "coupled · NTK Θ(t)"} <= set(adamw)
    assert all(spec["time"] == "power" for spec in adamw.values())
    assert adamw["coupled · NTK Θ(t)"]["params"] == ["time_scale", "time_power", "decay_factor"]
    sgd = family_defaults(load("transformer_factorial_sgd"))
    assert set(sgd) == set(adamw)
    assert not any("time" in spec for spec in sgd.values())
    assert sgd["coupled · NTK Θ(t)"]["params"] == ["time_scale"]
    # an explicit time map is the caller's: no per-row time, kernel rows as documented
    explicit = family_defaults(load("transformer_factorial_adamw"), time="scale")
    assert not any("time" in spec for spec in explicit.values())
    assert explicit["coupled · NTK Θ(0)"]["params"] == ["time_scale"]


def test_euclidean_kernel_under_adam_warns():
    quick = dict(coupling="measured", params=["time_scale"], scan=False, max_nfev=1)
    with pytest.warns(UserWarning, match="un-preconditioned"):
        fit = br.Fit("coupled", **quick).fit(load("transformer_factorial_adamw"))
    assert any("un-preconditioned" in n for n in fit.notes_) and "note: the logged kernel" in fit.report()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = br.Fit("coupled", **quick).fit(load("transformer_factorial_sgd"))
    assert fit.notes_ == []


def test_deep_family_argument_errors():
    run = load("mlp_hierarchy_adamw")
    with pytest.raises(ValueError, match="coupling: the deep family has no coupling"):
        br.Fit("deep", coupling="measured").fit(run)
    with pytest.raises(ValueError, match=r"params: \['lambda_E'\] are not parameters of the deep family"):
        br.Fit("deep", ["time_scale", "lambda_E"]).fit(run)
    with pytest.raises(ValueError, match="time: 'optimizer' runs ufm.train"):
        br.Fit("deep", time="optimizer").fit(run)
    with pytest.raises(ValueError, match="layers"):
        br.Fit("deep", layers=-2).fit(run)


@pytest.fixture(scope="module")
def low_rank_fits():
    """The AdamW MLP on the hierarchy (tests/data/real/README.md: late verdict low_rank, the
    participation ratio of the centred features 3.38 → 1.24): the standard UFM and the deep
    family (metadata degree 4: 3 hidden layers), both with the linear time map."""
    run = load("mlp_hierarchy_adamw")
    return {fam: br.fit(run, fam, time="scale") for fam in ("standard", "deep")}


def _participation_ratio(G):
    N = G.shape[-1]
    C = np.eye(N) - 1.0 / N
    ev = np.linalg.eigvalsh(C @ G @ C)
    return float(ev.sum() ** 2 / (ev ** 2).sum())


def test_deep_family_loses_rank_with_the_run(low_rank_fits):
    """Measured: standard AIC −157.6, R² (relations, gap, ETF) −0.25, −0.17, −1.20, predicted
    participation ratio 3.38 → 3.52; deep AIC −360.6, R² −0.85, 0.77, −0.34, predicted 3.38 →
    1.21 against the run's 1.24 (s = 1.6e-3, λ = 0.054). The only family that loses rank
    instead of heading for the ETF; it still misses the relation coefficients."""
    std, deep = low_rank_fits["standard"], low_rank_fits["deep"]
    print(std.report(), deep.report(), sep="\n")
    assert deep.layers_ == 3 and deep.degree_source_ == "metadata"
    assert "deep backbone: 3 hidden layer(s), 5 factors" in deep.report()
    assert type(deep.model_).__name__ == "DeepUFM" and deep.model_.layers == 3
    assert deep.aic_ < std.aic_ - 100
    assert deep.r2_["semantic_gap"] > 0.5 and std.r2_["semantic_gap"] < 0
    observed = deep.run_.grams()["gram_H"]
    # the fitted model starts at the run's Grams (identity layers) ...
    np.testing.assert_allclose(deep.trajectory_.gram_H[0], observed[0], rtol=1e-6, atol=1e-6)
    # ... and ends at the run's low rank, where the standard UFM keeps its rank
    pr_run = _participation_ratio(observed[-1])
    assert abs(_participation_ratio(deep.trajectory_.gram_H[-1]) - pr_run) < 0.2
    assert _participation_ratio(std.trajectory_.gram_H[-1]) > 3.0 > pr_run
