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


# ---------------------------------------------------------------------------------------------
# work-precision (benchmarks/workprecision.py)
# ---------------------------------------------------------------------------------------------

from benchmarks import workprecision as wpm  # noqa: E402


def _power_law(times, c=1e-2, p=3.0, t0=1e-3):
    """error = c·(time/t0)^(−p): a straight line in log-log, where interpolation is exact."""
    return c * (np.asarray(times) / t0) ** -p


def test_time_to_reach_is_exact_on_a_power_law():
    times = np.geomspace(1e-3, 1.0, 7)
    errors = _power_law(times)
    for target in (3e-4, 1e-7, 2.5e-10):
        got, how = wpm.time_to_reach(errors, times, target)
        want = 1e-3 * (target / 1e-2) ** (-1 / 3.0)
        assert how == "interpolated" and abs(got / want - 1) < 1e-12, (target, got, want)
    # exactly on a point: that point's time
    got, how = wpm.time_to_reach(errors, times, errors[3])
    assert how == "interpolated" and abs(got / times[3] - 1) < 1e-12


def test_time_to_reach_bounds_misses_and_dips():
    times = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    errors = np.array([1e-5, 1e-9, 1e-6, 1e-8, 1e-10])
    assert wpm.time_to_reach(errors, times, 1e-4) == (1.0, "bound")           # every run reaches it
    assert wpm.time_to_reach(errors, times, 1e-11) == (None, "not reached")   # the tightest misses it
    # the dip at 2 s does not count: 1e-7 is reached for good between 4 s (1e-6) and 8 s (1e-8)
    got, how = wpm.time_to_reach(errors, times, 1e-7)
    assert how == "interpolated" and abs(got - np.sqrt(4.0 * 8.0)) < 1e-12
    # a failed run (inf) counts as a miss, and nothing is interpolated from it: the next run's time
    assert wpm.time_to_reach([1e-5, 1e-7, np.inf, 1e-9], [1.0, 2.0, np.inf, 8.0], 1e-6) == (8.0, "bound")
    with pytest.raises(ValueError, match="target"):
        wpm.time_to_reach(errors, times, 0.0)


def test_ratios_at_equal_error_come_from_the_interpolated_times():
    """Two solvers on parallel power laws, one twice as slow at every error: x = 2 at every target
    both reach inside their range; none where one of them only has a bound."""
    times = np.geomspace(1e-3, 1.0, 7)

    def curve(ts):
        return [{"ok": True, "cpu_s": t, "error": e} for t, e in zip(ts, _power_law(times))]
    table = wpm.reach_table({"ufm auto": curve(times), "slow": curve(2 * times)}, targets=(1e-2, 1e-6, 1e-9))
    assert [r["how"] for r in table["slow"]] == ["bound", "interpolated", "interpolated"]
    assert table["slow"][0]["x_vs_base"] is None
    for r in table["slow"][1:]:
        assert abs(r["x_vs_base"] - 2.0) < 1e-12
    assert all(r["x_vs_base"] == 1.0 for r in table["ufm auto"][1:])


def test_workprecision_section_on_a_tiny_case(cfg, tmp_path, monkeypatch):
    """The section end to end on K = N = 3, d = 4 at three tolerances: one point per tolerance for
    every solver asked for, errors against the reference that shrink with rtol, the tables and
    the figure (or its note without matplotlib)."""
    monkeypatch.setattr(bench, "SIZES", {"small": (3, 4)})
    monkeypatch.setattr(wpm, "RTOLS", (1e-5, 1e-7, 1e-9))
    labels = ["ufm auto", "ufm dop853", "scipy DOP853"]
    c = dict(cfg, solvers=labels, out=str(tmp_path), repeat_wp={"small": 1})
    res = {}
    bench.bench_workprecision(c, res)
    wp = res["workprecision"]
    s = wp["sizes"]["small"]
    assert list(s["curves"]) == labels and list(s["reach"]) == labels
    for label, points in s["curves"].items():
        assert [p["rtol"] for p in points] == [1e-5, 1e-7, 1e-9] and all(p["ok"] for p in points), label
        errors = [p["error"] for p in points]
        assert errors[-1] < errors[0] and errors[-1] < 1e-7, (label, errors)   # tighter rtol, smaller error
        assert all(p["atol"] == p["rtol"] * wpm.ATOL_PER_RTOL for p in points)
    assert [r["x_vs_base"] for r in s["reach"]["ufm auto"] if r["how"] == "interpolated"] == [
        1.0 for r in s["reach"]["ufm auto"] if r["how"] == "interpolated"]
    # the targets table compares the pairs at equal error too, from the same reach table
    rows = {t["target"]: t for t in bench.targets(res) if "work-precision" in t["target"]}
    scipy_row = rows["K=N=3, d=4: vs scipy DOP853 at equal error 1e-08 (work-precision)"]
    k = wp["targets"].index(bench.WP_TARGET_ERROR)
    x = s["reach"]["scipy DOP853"][k]["x_vs_base"]
    if x is not None:
        assert scipy_row["measured"].startswith(f"x{x:.2f} ") and scipy_row["met"] == (x >= 10)
    else:       # no ratio: judged only when scipy misses the error that ufm auto reaches
        reach = s["reach"]
        assert scipy_row["met"] == (True if reach["scipy DOP853"][k]["how"] == "not reached"
                                    and reach["ufm auto"][k]["how"] == "interpolated" else None)
    assert rows["K=N=3, d=4: vs numbalsoda dop853 at equal error 1e-08 (work-precision)"]["met"] is None
    md = "\n".join(wpm.markdown_lines(wp))
    assert "**Work-precision**" in md and "| ufm dop853 |" in md and "time to 1e-08" in md
    if wp["figure"].get("file"):
        assert (tmp_path / "workprecision.png").stat().st_size > 1000
        assert "](workprecision.png)" in md
    else:
        assert "not drawn" in wp["figure"]["note"]


def test_workprecision_figure_is_skipped_with_a_note_without_matplotlib(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # import matplotlib raises ImportError
    wp = {"sizes": {"small": {"case": {"K": 3, "d": 4}, "curves": {}}}, "targets": [1e-8], "rtols": [1e-5],
          "base": "ufm auto"}
    out = wpm.figure(wp, tmp_path / "workprecision.png")
    assert "matplotlib" in out["note"] and not (tmp_path / "workprecision.png").exists()


def test_step_history_replays_ufms_dop853_controller():
    """benchmarks/step_history.py runs scipy's DOP853 stages under ufm's compiled controller
    functions: its accepted and rejected step counts are those of ufm.solve(method="dop853") on
    the same problem, and its answer agrees with ufm's to the tolerance (so the per-decade step
    table it prints is ufm's own); scipy's controller takes other steps."""
    from dataclasses import replace

    from benchmarks import step_history
    case = replace(TINY, t=tuple(np.geomspace(0.1, 1e3, 12)))
    y, nfev, log = step_history.history(case, ufm_controller=True)
    ours = peers.run_ufm(case, "dop853")
    accepted = int((log[:, 3] == 1).sum())
    assert (accepted, int((log[:, 3] == 0).sum())) == (ours.extra["accepted_steps"], ours.extra["rejected_steps"])
    assert peers.relative_error(y, ours.y) < 1e-9
    _, _, scipy_log = step_history.history(case, ufm_controller=False)
    assert not np.array_equal(scipy_log[:, 1], log[:, 1])


def test_nothing_before_the_fit_section_starts_numbas_threading_layer():
    """Once numba's threading layer is GNU OpenMP, fits may not fork their Jacobian workers, so
    the benchmark would time serial fits where a fresh `ufm fit` process has workers: the
    machine record must not start the layer (numba.get_num_threads() does), and the sweep (the
    one parallel kernel) runs after the fits."""
    import os
    import subprocess
    import sys
    code = ("import numba\nfrom benchmarks import run\ninfo = run.machine()\n"
            "try:\n    numba.threading_layer()\n    print('started')\nexcept ValueError:\n    print('not started')\n"
            "print(info['numba_threads'])")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0:2] == ["not", "started"] and int(lines[2]) >= 1
    assert bench.SECTIONS.index("fit") < bench.SECTIONS.index("sweep")
