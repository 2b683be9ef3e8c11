"""Speed machinery of the bridge fits: the final Jacobian reused for the standard errors, and
predictions that end at a stable equilibrium (ufm.bridge.settling) but never at a saddle."""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from ufm import engine
from ufm.bridge import fitting, settling
from ufm.models import GramState


def test_standard_errors_come_from_forward_differences_at_the_optimum():
    """The standard errors are those of a forward-difference Jacobian at the optimum (the
    optimiser's last one, scipy's steps; the engine's here: equal to 1e-3, measured 3e-5)."""
    p = ufm.settings.factorial((2, 2))
    m = ufm.UFM(p, lambda_W=3e-3, lambda_H=3e-3)
    s2 = 1e-3
    g0 = GramState(np.zeros((p.K, p.N)), s2 * np.eye(p.K), s2 * np.eye(p.N))
    steps = np.unique(np.concatenate([[0], np.geomspace(1, 5000, 25).round().astype(int)]))
    tr = ufm.solve(m, g0, 0.4 * steps, space="gram", rtol=1e-10, atol=1e-16)
    import ufm.bridge as br
    run = br.Run.from_trajectory(tr, steps=steps, noise=0.01, seed=2)
    f = br.fit(run, "standard", observables=["relations", "norms"], init="isotropic",
               params=["time_scale", "lambda", "init_scale"])
    eng = f.engine_
    x = np.array([f.params_[k] for k in eng.names])
    J = eng.jacobian(x)
    r = eng.residuals(x)
    s2_hat = float(r @ r) / (r.size - x.size)
    se = x * np.sqrt(np.diag(s2_hat * np.linalg.pinv(J.T @ J)))
    for k, v in zip(eng.names, se):
        assert f.stderr_[k] == pytest.approx(v, rel=1e-3)
    assert np.array_equal(eng.last_jac_p, x)                       # the Jacobian of the last stage
    assert abs(f.params_["time_scale"] / 0.4 - 1) < 0.02 and abs(f.params_["lambda"] / 3e-3 - 1) < 0.05


# --- predictions that end at a stable equilibrium -----------------------------------------------

def _collapse_model():
    p = ufm.settings.factorial((2, 2))
    return ufm.UFM(p, lambda_W=0.05, lambda_H=0.05)


def test_settling_ends_at_the_stable_fixed_point_within_tolerance():
    """The standard UFM with decay reaches its collapse fixed point (a strict minimum up to the
    Gram space's invariances, which the Gram ODE does not have) early and sits there to
    t = 1e5: the run ends there, the filled saves agree with the full integration to the
    tolerance, and it takes a fraction of the steps."""
    m = _collapse_model()
    x0 = m.init(8, scale=0.5, seed=1)
    t = np.geomspace(1e-2, 1e5, 40)
    kw = dict(rtol=1e-8, atol=1e-11, method="dopri5")
    full = ufm.solve(m, x0, t, space="gram", save=("gram_W", "gram_H", "logits"), **kw)
    short = settling.solve_settling(m, x0, t, **kw)
    j = short.info["settled_from"]
    assert 0 < j < t.size - 5 and short.info["settled_t"] < 1e4     # the first test, after 2,000 steps
    assert short.info["settle_slowest_rate"] > 0
    for q in ("gram_W", "gram_H", "logits"):
        a, b = getattr(full, q), getattr(short, q)
        assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(a))     # measured ~1e-9
    assert short.info["accepted_steps"] < full.info["accepted_steps"] / 2


def test_settling_never_ends_at_the_saddle_of_a_small_start(monkeypatch):
    """From a start 1e-7 of the origin — a saddle of the decayed UFM: the flow is slow there,
    but the linearisation has a positive eigenvalue — the run is tested (every 20 steps here)
    but never ends on the plateau; it escapes, collapses and ends where the full integration
    does. At the origin itself the test says why it refuses: not a stable equilibrium."""
    monkeypatch.setattr(settling, "SETTLE_CHECK_STEPS", 20)
    m = _collapse_model()
    K, N = m.K, m.N
    s2 = 1e-14
    g0 = GramState(np.zeros((K, N)), s2 * np.eye(K), s2 * np.eye(N))
    t = np.geomspace(1e-2, 1e4, 40)
    kw = dict(rtol=1e-8, atol=1e-18, method="dopri5")
    full = ufm.solve(m, g0, t, space="gram", save=("gram_W", "gram_H", "logits"), **kw)
    short = settling.solve_settling(m, g0, t, **kw)
    assert short.info["settle_tests"] >= 2
    # the plateau: the norm of G_H stays tiny until the escape, then grows by > 10 decades
    norm = np.linalg.norm(full.gram_H, axis=(1, 2))
    escape = t[np.argmax(norm > 1e-4 * norm[-1])]
    assert norm[0] < 1e-12 * norm[-1]
    assert short.info.get("settled_t", np.inf) > escape
    assert np.max(np.abs(short.gram_H - full.gram_H)) <= 1e-6 * np.max(np.abs(full.gram_H))
    packed = engine.pack_model(m, "gram", 0)
    ok, why = settling.settled(packed, np.zeros(K * N + K * K + N * N), 0.0, 1e-8, 1e-18)
    assert not ok and why["why"] == "singular Jacobian" or not ok and why["max_real_eigenvalue"] > 0
    y0 = np.concatenate([np.zeros(K * N), (s2 * np.eye(K)).ravel(), (s2 * np.eye(N)).ravel()])
    ok, why = settling.settled(packed, y0, 0.0, 1e-8, 1e-9)     # displacement within this atol
    assert not ok and why["max_real_eigenvalue"] > 0 and why["why"].startswith("not a stable")
