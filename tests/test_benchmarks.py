"""The benchmark's machinery (benchmarks/peers.py, benchmarks/run.py) on a tiny case: the peers'
right-hand sides are the flow ufm integrates, every solver is scored against the tight
reference, missing peers and methods become notes, and the targets table is built from the
measured rows. Timings are not asserted (they depend on the machine and its load)."""

import numpy as np
import pytest

from benchmarks import peers
from benchmarks import run as bench

TINY = peers.Case(K=3, d=4, t=tuple(np.geomspace(0.1, 10.0, 5)))
HAVE_NUMBALSODA = peers.unavailable("numbalsoda") is None


@pytest.fixture(scope="module")
def cfg():
    c = {"quick": True, "diffrax_solvers": ("Tsit5",)}
    c.update(bench.solver_config(no_diffrax=True))   # diffrax compiles for ~10 s: not in the suite
    return c


@pytest.fixture(scope="module")
def compared(cfg):
    entries, skipped = bench.solver_entries(TINY, cfg, scipy=("DOP853", "RK45"), numbalsoda=("dop853", "lsoda"),
                                            diffrax=cfg["diffrax_solvers"])
    return bench.compare_solvers(TINY, entries, skipped, repeat=1, warmup=0, ref=peers.reference(TINY), cfg=cfg)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_peer_right_hand_sides_are_ufms_field(loss):
    case = peers.Case(K=3, d=4, t=TINY.t, loss=loss)
    diffs = bench.check_peer_rhs(case)
    expected = {"numpy (scipy)"} | ({"numba cfunc (numbalsoda)"} if HAVE_NUMBALSODA else set())
    assert set(diffs) == expected
    for name, diff in diffs.items():
        assert diff <= 1e-14, (name, diff)          # measured 0 to 3e-16 (rounding of the products)


def test_a_missing_peer_is_a_note_with_the_install_command():
    why = peers.unavailable("numbalsoda")
    if HAVE_NUMBALSODA:
        assert why is None
    else:
        assert why.startswith("skipped:") and "pip install numbalsoda" in why


def test_ufm_methods_cover_every_adaptive_solver():
    import ufm.solvers
    methods = peers.ufm_methods()
    adaptive = [name for name, s in ufm.solvers.SOLVERS.items() if s.adaptive]
    assert all(methods[name] is None for name in adaptive)
    assert "rk4" not in methods and "euler" not in methods        # fixed-step methods are not timed
    assert methods[peers.default_method()] is None
    assert methods["auto"] is None or methods["auto"].startswith("skipped: not available")


def test_every_solver_is_timed_and_scored(cfg, compared):
    rows = {row["solver"]: row for row in compared["rows"]}
    expected = {f"ufm {m}" for m in cfg["ufm_methods"]} | {"scipy DOP853", "scipy RK45", "numbalsoda dop853",
                                                           "numbalsoda lsoda", "diffrax Tsit5"}
    assert set(rows) == expected
    assert rows["diffrax Tsit5"]["ok"] is None and rows["diffrax Tsit5"]["message"] == "skipped: --no-diffrax"
    default = rows[compared["default"]]
    assert default["x_vs_ufm"] == 1.0
    ran = [row for row in rows.values() if row["ok"] is not None]
    if not HAVE_NUMBALSODA:
        assert rows["numbalsoda dop853"]["ok"] is None
    for row in ran:
        assert row["ok"], row
        # every solver at rtol 1e-8 lands near the rtol-1e-13 reference (measured <= 2e-8 here)
        assert row["error"] < 1e-6, row
        assert row["wall_s"] > 0 and row["x_vs_ufm"] > 0
        if not row["solver"].startswith("diffrax"):
            assert row["rhs"] > 10 and row["us_per_rhs"] > 0
    assert compared["reference"]["rtol"] == peers.REFERENCE_RTOL


def test_a_grinding_run_is_reported_stopped_not_raised():
    stiff = peers.Case(K=3, d=4, t=tuple(np.geomspace(0.1, 1e4, 5)), loss="mse", scale=1e3)
    out = peers.run_ufm(stiff, peers.default_method(), cap_s=0.2)
    if out.ok:   # a solver that handles the stiff case finishes; then its answer must be finite
        assert np.all(np.isfinite(out.y))
    else:
        assert "wall-clock cap" in out.message or "IntegrationError" in out.message
        assert np.all(np.isnan(out.y))
    capped = peers.run_scipy(stiff, "RK45", cap_s=0.2)
    assert not capped.ok and "wall-clock cap" in capped.message


def test_targets_and_tables_come_from_the_rows(compared):
    # (bench.machine() would import torch and jax for their versions: seconds this test does not need)
    machine = {"cpu": "test", "cores": 2, "numba": "x", "numba_threads": 2, "numpy": np.__version__, "scipy": "x",
               "date": "today"}
    res = {"machine": machine, "config": {"quick": True}, "single": {"small": compared}}
    res["targets"] = bench.targets(res)
    by_name = {t["target"]: t for t in res["targets"]}
    t = by_name["K=N=10, d=16: vs scipy DOP853"]
    x = bench.row_of(compared, "scipy DOP853")["x_vs_ufm"]
    assert t["measured"].startswith(f"x{x:.2f} ") and t["met"] == (x >= 10)
    t = by_name["K=N=10, d=16: vs numbalsoda dop853"]
    assert t["met"] is None if not HAVE_NUMBALSODA else t["met"] == (
        bench.row_of(compared, "numbalsoda dop853")["x_vs_ufm"] >= 2)
    assert by_name["K=N=10, d=16: vs diffrax (its fastest solver)"]["met"] is None   # diffrax was skipped
    md = bench.markdown(res)
    assert "| scipy DOP853 |" in md and "skipped: --no-diffrax" in md and "**Targets**" in md


def test_solvers_option_keeps_only_the_named_rows(cfg):
    """--solvers "ufm dopri5" "scipy DOP853": the entries are those two, nothing compiled or
    noted for the others (the K = N = 512 run names the solvers it can afford)."""
    only = dict(cfg, solvers=["ufm dopri5", "scipy DOP853"])
    entries, skipped = bench.solver_entries(TINY, only, scipy=("DOP853", "RK45"), numbalsoda=("dop853", "lsoda"),
                                            diffrax=cfg["diffrax_solvers"])
    assert set(entries) | set(skipped) == {"ufm dopri5", "scipy DOP853"}
    everything, _ = bench.solver_entries(TINY, cfg, scipy=("DOP853",))
    assert {"ufm dopri5", "ufm vern7", "scipy DOP853"} <= set(everything)
