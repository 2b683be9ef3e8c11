"""``ufm.sensitivities`` (ufm/sensitivity.py): the variational equations integrated with the state
against central finite differences of full solves at tight tolerances, and against closed forms
(the linear bias relaxation and the Saxe logistic mode)."""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from systems import (aligned_mse_init, bias_relaxation, bias_relaxation_init, logistic_u, pd_kernel,
                     soft_label_problem)

EPS = 1e-5
QUANTITIES = ("gram_W", "gram_H", "logits")


@pytest.fixture(scope="module")
def case():
    p = soft_label_problem(3, 5, seed=1)
    theta = pd_kernel(5, 1)
    D = pd_kernel(5, 7, rank=1) - np.eye(5)
    m = ufm.UFM(p, loss="ce", lambda_W=0.03, lambda_H=0.02, lambda_E=0.07, bias=True, lambda_b=0.05, coupling=theta,
                lr_W=1.3, lr_H=0.7, lr_b=0.45)
    init = m.init(6, scale=0.5, seed=2)
    t = np.linspace(0.5, 5.0, 6)
    sens = ufm.sensitivities(m, init, t, ufm.sensitivity.PARAMETERS, rtol=1e-10, atol=1e-12, coupling_direction=D)
    return m, init, t, theta, D, sens


def _variant(m, init, theta, D, name, e):
    if name == "time_scale":
        return m.replace(lr_W=m.lr_W * (1 + e), lr_H=m.lr_H * (1 + e), lr_b=m.lr_b * (1 + e)), init
    if name == "init_scale":
        return m, ufm.State(init.W * (1 + e), init.H * (1 + e), init.b)
    if name == "coupling":
        return m.replace(coupling=theta + e * D), init
    return m.replace(**{name: getattr(m, name) + e}), init


@pytest.mark.parametrize("name", ufm.sensitivity.PARAMETERS)
def test_sensitivities_match_finite_differences_of_full_solves(case, name):
    m, init, t, theta, D, sens = case
    runs = [ufm.solve(*_variant(m, init, theta, D, name, e), t, rtol=1e-12, atol=1e-14, space="gram")
            for e in (EPS, -EPS)]
    for q in QUANTITIES:
        fd = (getattr(runs[0], q) - getattr(runs[1], q)) / (2 * EPS)
        # measured worst 4.6e-9 relative (coupling, gram_W); the differences themselves carry
        # ~1e-9 (solves at rtol 1e-12 divided by 2·1e-5)
        assert np.abs(sens[name][q] - fd).max() < 3e-8 * np.abs(fd).max(), q
    # the state itself is the ordinary Gram-space solution
    ref = ufm.solve(m, init, t, rtol=1e-12, atol=1e-14, space="gram")
    assert np.abs(sens.trajectory.gram_H - ref.gram_H).max() < 1e-8


def test_bias_sensitivity_in_closed_form():
    """b(t) = b* + (b0 − b*) e^{−rt}, r = η_b(Σπ + λ_b), b* = Yπ/(Σπ + λ_b): d b/dη_b in closed form."""
    p = soft_label_problem(3, 5)
    m = ufm.UFM(p, loss="mse", bias=True, lambda_b=0.3, lambda_W=0.1, lambda_H=0.2, lr_W=1.7, lr_H=0.6, lr_b=0.45)
    b0 = np.array([2.0, 0.05, 1.0])
    t = np.linspace(0.5, 20.0, 8)
    s = ufm.sensitivities(m, bias_relaxation_init(m, 4, b0).grams(), t, ("lr_b", "lambda_b"), rtol=1e-10, atol=1e-12)
    w = p.weights.sum() + m.lambda_b
    bstar = p.Y @ p.weights / w
    exact_lr = (b0 - bstar)[None] * (-(w * t)[:, None]) * np.exp(-m.lr_b * w * t)[:, None]
    # measured 5.0e-11 (lr_b), 1.8e-11 (lambda_b), 1.2e-11 (the state)
    assert np.abs(s["lr_b"]["b"] - exact_lr).max() < 5e-10
    # d/dλ_b: b* and r both move
    dbstar = -bstar / w
    r = m.lr_b * w
    exact_lam = (dbstar[None] * (1 - np.exp(-r * t))[:, None]
                 + (b0 - bstar)[None] * (-(m.lr_b * t)[:, None]) * np.exp(-r * t)[:, None])
    assert np.abs(s["lambda_b"]["b"] - exact_lam).max() < 5e-10
    assert np.allclose(s.trajectory.logits[:, :, 0], bias_relaxation(m, b0, t), rtol=0, atol=1e-10)


def test_time_scale_sensitivity_is_t_times_the_velocity():
    """Scaling every rate by s runs the flow s times faster: y_s(t) = y(st), so dy/ds = t ẏ(t);
    on the Saxe mode u(t) is logistic and u̇ is known."""
    K, n, lam, u0 = 3, 3, 0.03, 0.05
    problem, W, H = aligned_mse_init(K, n, 9, u0)
    m = ufm.UFM(problem, loss="mse", lambda_W=lam, lambda_H=lam)
    t = np.linspace(2.0, 40.0, 6)
    s = ufm.sensitivities(m, ufm.State(W, H), t, ("time_scale",), rtol=1e-10, atol=1e-12)
    Y = problem.Y
    du = np.einsum("tkn,kn->t", s["time_scale"]["logits"], Y) / np.sum(Y * Y)
    h = 1e-4
    udot = (logistic_u(t + h, u0, K, n, lam) - logistic_u(t - h, u0, K, n, lam)) / (2 * h)
    # measured 6.5e-11 relative (u̇ by a central difference of the closed form, error ~1e-10)
    assert np.abs(du - t * udot).max() < 1e-9 * np.abs(t * udot).max()


def test_bad_arguments_are_named():
    p = soft_label_problem(3, 5)
    m = ufm.UFM(p, loss="ce")
    init = m.init(6, scale=0.5, seed=0)
    with pytest.raises(ValueError, match="parameters: unknown parameter 'lambda_X'"):
        ufm.sensitivities(m, init, [1.0], ("lambda_X",))
    with pytest.raises(ValueError, match="parameters: each name once"):
        ufm.sensitivities(m, init, [1.0], ("lambda_W", "lambda_W"))
    with pytest.raises(ValueError, match="parameters: expected at least one"):
        ufm.sensitivities(m, init, [1.0], ())
    with pytest.raises(ValueError, match="coupling_direction: the 'coupling' sensitivity needs"):
        ufm.sensitivities(m, init, [1.0], ("coupling",))
    with pytest.raises(ValueError, match=r"coupling_direction: expected shape \(5, 5\)"):
        ufm.sensitivities(m, init, [1.0], ("coupling",), coupling_direction=np.eye(4))
    with pytest.raises(ValueError, match="coupling_direction: expected a symmetric"):
        ufm.sensitivities(m, init, [1.0], ("coupling",), coupling_direction=np.triu(np.ones((5, 5))))
    with pytest.raises(ValueError, match="coupling_direction: only used with"):
        ufm.sensitivities(m, init, [1.0], ("lambda_W",), coupling_direction=np.eye(5))
    with pytest.raises(TypeError, match="model: expected a ufm.UFM"):
        ufm.sensitivities("m", init, [1.0], ("lambda_W",))
    s = ufm.sensitivities(m, init, [1.0], "lambda_W")
    with pytest.raises(KeyError, match="no sensitivity for 'lambda_H'"):
        s["lambda_H"]
