"""Events and equilibria (ufm.events): located times against closed forms and dense references.

Closed forms (tests/systems.py): the Saxe logistic mode u(t) (MSE, aligned balanced init),
inverted for the time u crosses a level; the linear relaxation of the bias (MSE, W = H = 0),
b(t) = b* + (b0 − b*) e^{−rt}, inverted for a crossing and with the fixed point b*.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ufm
import ufm.events as E
from systems import aligned_mse_init, bias_relaxation, bias_relaxation_init, soft_label_problem

K, n, U0 = 4, 3, 1e-8
LOGISTIC_PROBLEM, W0, H0 = aligned_mse_init(K, n, 5, U0)
LOGISTIC = ufm.UFM(LOGISTIC_PROBLEM, loss="mse")
Y = LOGISTIC_PROBLEM.Y
LEVEL = 0.4


def u_of(gram_H, gram_W, logits):
    """The logistic mode's amplitude: Z = u·Y."""
    return float(np.sum(logits * Y) / np.sum(Y * Y))


def logistic_crossing(level):
    """t with u(t) = level, from u(t) = s e/(e − 1 + s/u0), e = exp(2st/τ) (λ = 0: s = 1)."""
    tau, s = K * np.sqrt(n), 1.0
    e = level * (1 - s / U0) / (level - s)
    return tau / (2 * s) * np.log(e)


@pytest.mark.parametrize("rtol", [1e-6, 1e-8, 1e-10])
def test_user_event_on_the_logistic_mode_is_located_to_the_tolerance(rtol):
    ev = E.Event(lambda gH, gW, Z: u_of(gH, gW, Z) - LEVEL, name="u")
    tr = ufm.solve(LOGISTIC, ufm.State(W0, H0), np.linspace(1, 80, 20), rtol=rtol, atol=rtol * 1e-2,
                   save="logits", events=[ev])
    (hit,) = tr.events
    exact = logistic_crossing(LEVEL)
    # measured relative errors 6.0e-7, 2.0e-8, 2.9e-10 (0.6–2.9 × rtol); the save grid alone
    # is 4 time units apart
    assert abs(hit.t - exact) / exact <= 10 * rtol
    assert hit.direction == 1 and hit.name == "u" and not hit.terminal
    assert abs(hit.value) < 1e-12                       # a user event reports φ itself


def test_peak_event_finds_the_maximum_through_the_flow_derivative():
    # −(u − level)² has its maximum where u crosses the level (u is monotone)
    pk = E.peak(lambda gH, gW, Z: -(u_of(gH, gW, Z) - LEVEL) ** 2, name="pk")
    tr = ufm.solve(LOGISTIC, ufm.State(W0, H0), np.linspace(1, 80, 20), rtol=1e-10, atol=1e-12, save="logits",
                   events=[pk])
    (hit,) = tr.events
    exact = logistic_crossing(LEVEL)
    assert abs(hit.t - exact) / exact < 3e-9          # measured 3.0e-10
    assert hit.direction == -1 and hit.value <= 0 and hit.value > -1e-15


# --- the linear bias relaxation -----------------------------------------------------------

P = soft_label_problem(3, 5)
RELAX = ufm.UFM(P, loss="mse", bias=True, lambda_b=0.3, lambda_W=0.1, lambda_H=0.2, lr_W=1.7, lr_H=0.6, lr_b=0.45)
B0 = np.array([2.0, 0.05, 1.0])
RATE = RELAX.lr_b * (P.weights.sum() + RELAX.lambda_b)
B_STAR = P.Y @ P.weights / (P.weights.sum() + RELAX.lambda_b)


def relax_crossing(k, level):
    return float(np.log((B0[k] - B_STAR[k]) / (level - B_STAR[k])) / RATE)


def b0_event(level, name="b0", **kw):
    return E.Event(lambda gH, gW, Z: float(Z[0, 0]) - level, name=name, **kw)   # Z = b1ᵀ when W = H = 0


@pytest.mark.parametrize("space,method,tol", [("parameters", "dopri5", 5e-10), ("gram", "dopri5", 5e-10),
                                              ("parameters", "rk4", 5e-10)])
def test_bias_crossing_in_every_space_and_method(space, method, tol):
    level = 0.5 * (B0[0] + B_STAR[0])
    t = np.linspace(0.5, 10, 12) / RATE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # Gram space: the zero Grams are rank 0
        tr = ufm.solve(RELAX, bias_relaxation_init(RELAX, 4, B0), t, space=space, method=method, rtol=1e-10,
                       atol=1e-12, dt=0.01 / RATE if method == "rk4" else None, save="logits",
                       events=[b0_event(level)])
    (hit,) = tr.events
    exact = relax_crossing(0, level)
    # measured: 4.9e-11 / 5.9e-11 (dopri5, parameters / gram), 8.3e-11 (rk4, r·dt = 0.01)
    assert abs(hit.t - exact) / exact < tol
    assert hit.direction == -1


def test_terminal_event_stops_the_run_and_keeps_the_saves_before_it():
    level = 0.5 * (B0[0] + B_STAR[0])
    t = np.linspace(0.5, 10, 12) / RATE
    tr = ufm.solve(RELAX, bias_relaxation_init(RELAX, 4, B0), t, rtol=1e-10, atol=1e-12, save=("b",),
                   events=[b0_event(level, terminal=True), b0_event(0.5 * (level + B_STAR[0]), name="later")])
    exact = relax_crossing(0, level)
    assert [h.name for h in tr.events] == ["b0"] and tr.events[0].terminal
    # measured: t_final 4.9e-11 relative, b 2.3e-11 absolute
    assert tr.info["terminated_by"] == "b0" and abs(tr.info["t_final"] - exact) / exact < 5e-10
    assert len(tr) == int(np.sum(t <= exact)) and tr.t[-1] < exact
    # saves kept are the ordinary ones (b, as asked; the Grams the events read are not added)
    assert tr.gram_H is None and np.allclose(tr.b, bias_relaxation(RELAX, B0, tr.t), atol=2e-10)


def test_equilibrium_fills_the_remaining_saves_with_the_fixed_point():
    t = np.geomspace(0.1, 1e4, 40) / RATE
    init = bias_relaxation_init(RELAX, 4, B0)
    # dopri5 both (measured numbers below): the default "auto" would hand the grinding run to RODAS4
    tr = ufm.solve(RELAX, init, t, method="dopri5", rtol=1e-8, atol=1e-10, save=("b",), equilibrium=True)
    full = ufm.solve(RELAX, init, t, method="dopri5", rtol=1e-8, atol=1e-10, save=("b",))
    j = tr.info["equilibrium_from"]
    assert 0 < j < len(t) and len(tr) == len(t)
    assert tr.info["equilibrium_t"] == t[j - 1] and tr.info["equilibrium_speed"] <= 1.0
    assert np.array_equal(tr.b[j:], np.repeat(tr.b[j - 1:j], len(t) - j, axis=0))
    # every save, filled or integrated, matches the closed form (measured 3.1e-9; b* ~ 0.3)
    assert np.max(np.abs(tr.b - bias_relaxation(RELAX, B0, t))) < 3e-8
    assert np.max(np.abs(tr.b[-1] - B_STAR)) < 3e-8
    # the point of stopping: far fewer evaluations than grinding to t[-1] (measured 476 vs 18,494)
    assert tr.info["rhs_evaluations"] < full.info["rhs_evaluations"] / 10


# --- gap, ETF and the transient summary ---------------------------------------------------

FACT = ufm.settings.factorial((2, 3))
COUPLED = ufm.UFM(FACT, lambda_W=1e-2, lambda_H=1e-2, coupling=FACT.coupling("attribute", 1.0))
T_GAP = np.geomspace(0.1, 3e3, 30)


@pytest.fixture(scope="module")
def gap_run():
    evs = [E.gap_peak(), E.gap_crossing(0.02), E.etf_below(0.1)]
    return ufm.solve(COUPLED, COUPLED.isotropic(0.05), T_GAP, space="reduced", rtol=1e-10, atol=1e-12, events=evs)


def test_gap_events_match_a_dense_reference(gap_run):
    hits = {h.name: h for h in gap_run.events}
    assert set(hits) == {"gap_peak", "gap_crossing", "etf_below"}
    # dense references: 2001 saves across ±10 % (±1 %) of the located time, at rtol 1e-12
    tp = hits["gap_peak"].t
    td = np.linspace(0.9 * tp, 1.1 * tp, 2001)
    g = ufm.solve(COUPLED, COUPLED.isotropic(0.05), td, space="reduced", rtol=1e-12, atol=1e-14).metric("semantic_gap")
    j = int(np.argmax(g))
    c = np.polyfit(td[j - 3:j + 4] - td[j], g[j - 3:j + 4], 2)
    t_ref = td[j] - c[1] / (2 * c[0])
    assert abs(tp - t_ref) / t_ref < 3e-8              # measured 3.7e-9
    assert abs(hits["gap_peak"].value - g[j]) < 1e-9   # measured 3e-11
    tc = hits["gap_crossing"].t
    td = np.linspace(0.99 * tc, 1.01 * tc, 2001)
    g = ufm.solve(COUPLED, COUPLED.isotropic(0.05), td, space="reduced", rtol=1e-12,
                  atol=1e-14).metric("semantic_gap") - 0.02
    k = int(np.flatnonzero(g < 0)[0])
    t_ref = td[k - 1] - g[k - 1] * (td[k] - td[k - 1]) / (g[k] - g[k - 1])
    assert abs(tc - t_ref) / t_ref < 1e-9              # measured 1.0e-10
    # the isotropic start is an ETF (distance 0): the distance rises, then falls below 0.1 once
    etf = gap_run.metric("etf_distance")
    falls = np.flatnonzero((etf[:-1] >= 0.1) & (etf[1:] < 0.1))
    assert falls.size == 1 and T_GAP[falls[0]] < hits["etf_below"].t <= T_GAP[falls[0] + 1]


def test_transient_summary_uses_the_located_times(gap_run):
    s = gap_run.transient_summary(0.02)
    hits = {h.name: h for h in gap_run.events}
    assert s.exact == ("peak", "t_peak", "t_collapse")
    assert s.t_peak == hits["gap_peak"].t and s.t_collapse == hits["gap_crossing"].t
    grid = ufm.metrics.transient_summary(gap_run.t, gap_run.metric("semantic_gap"), 0.02)
    assert s.peak >= grid.peak                          # the grid misses the top (0.9195 vs 0.9328)
    # another threshold, or another convention, has no located time and stays on the grid
    assert "t_collapse" not in gap_run.transient_summary(0.05).exact
    assert gap_run.transient_summary(0.02, centred=False).exact == ()


def test_gram_and_reduced_spaces_agree_on_the_events(gap_run):
    evs = [E.gap_peak(), E.gap_crossing(0.02), E.etf_below(0.1)]
    tr = ufm.solve(COUPLED, COUPLED.isotropic(0.05), T_GAP, space="gram", rtol=1e-10, atol=1e-12, events=evs)
    for a, b in zip(tr.events, gap_run.events):
        assert a.name == b.name and abs(a.t - b.t) / b.t < 5e-10    # measured <= 6.4e-11


def test_events_survive_save_and_load(gap_run, tmp_path):
    path = gap_run.save(tmp_path / "tr.npz")
    back = ufm.Trajectory.load(path)
    assert back.events == gap_run.events


def test_bad_events_and_equilibrium_are_named():
    init = LOGISTIC.init(5, scale=0.1)
    t = [1.0, 2.0]
    with pytest.raises(TypeError, match="events"):
        ufm.solve(LOGISTIC, init, t, events=[lambda a, b, c: 0.0])
    with pytest.raises(ValueError, match="distinct"):
        ufm.solve(LOGISTIC, init, t, events=[E.Event(u_of, name="a"), E.Event(u_of, name="a")])
    with pytest.raises(ValueError, match="attributes"):
        ufm.solve(LOGISTIC, init, t, events=[E.gap_peak()])
    with pytest.raises(ValueError, match="equilibrium"):
        ufm.solve(LOGISTIC, init, t, equilibrium=-1.0)
    with pytest.raises(ValueError, match="direction"):
        E.Event(u_of, direction=2)
    with pytest.raises(TypeError, match="fn"):
        E.Event(3.0)
