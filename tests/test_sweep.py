"""ufm.sweeps: sweeps equal individual ufm.solve runs, failures are recorded, out= resumes,
hashes are deterministic, results load as a table and as trajectories, executors work.

Sizes are tiny (N <= 9, d <= 10, 12 save times): the numbers checked are the equality of
code paths, not physics. Only ``test_parallel_kernel_matches_solve`` runs the prange kernel
(compiled once, ~20 s cold); the other tests use one thread, which runs the same driver
without numba's threading layer.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np
import pytest

import independent
import ufm
from ufm.models import GramState, PiecewiseCoupling
from ufm.sweeps import SweepIncomplete, config_hash, grid, sweep
from ufm.sweeps import engine

T_SAVE = np.concatenate([[0.0], np.geomspace(1e-2, 1e2, 11)])
BASE = {"setting": "factorial", "levels": [2, 3], "d": 8, "scale": 0.3}
ARRAYS = ("t", "loss", "data_loss", "W", "H", "b", "gram_W", "gram_H", "logits")
# one name, one tableau, two stated error orders: the step controller's exponent differs
CUSTOM_DOPRI5 = dataclasses.replace(ufm.solvers.DOPRI5, name="custom")
CUSTOM_DOPRI5_E3 = dataclasses.replace(ufm.solvers.DOPRI5, name="custom", error_order=3)


def mixed_configs():
    """Specs and explicit pairs of different sizes, spaces, losses, couplings and biases."""
    configs = grid({"lambda": [1e-2, 1e-3], "beta": [0.0, 0.8]}, base={**BASE, "seed": 1})
    configs.append({"setting": "hierarchy", "branching": 2, "depth": 2, "d": 5, "lambda": 3e-3, "beta": 0.5,
                    "lambda_E": 2e-2, "lr_H": 0.7, "seed": 4, "scale": 0.5})
    configs.append({"setting": "balanced", "K": 3, "n": 2, "d": 10, "loss": "mse", "bias": True,
                    "lambda_b": 0.1, "lambda": 0.05, "seed": 2, "scale": 0.5})
    configs.append({**BASE, "space": "gram", "lambda": 1e-2, "seed": 3})
    p = ufm.settings.factorial((3, 3))
    pc = PiecewiseCoupling([0.0, 1.0], np.stack([p.coupling("attribute", 1.0), np.eye(9)]))
    m = ufm.UFM(p, lambda_W=2e-2, lambda_H=1e-2, coupling=pc, bias=True, lr_W=1.3)
    configs.append((m, m.init(9, scale=0.4, seed=7)))
    q = ufm.settings.balanced(3, 2)
    mq = ufm.UFM(q, loss="mse", lambda_W=0.01, lambda_H=0.02)
    x = mq.init(7, scale=0.5, seed=3)
    configs.append((mq, x))
    return configs


def reference(config, **kw):
    """ufm.solve of one configuration, as the sweep would run it."""
    if isinstance(config, dict):
        model, init = ufm.sweeps.build(config)
        space = config.get("space", "parameters")
    else:
        model, init = config
        space = kw.pop("space", "parameters")
    return ufm.solve(model, init, T_SAVE, space=space, save="all", **kw)


def assert_same(tr, ref):
    """Bit for bit: a sweep runs each configuration through the integration ufm.solve runs
    (no fast-math, so no reordering between the two compiled paths; measured equal)."""
    for name in ARRAYS:
        a, b = getattr(tr, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert tr.info["accepted_steps"] == ref.info["accepted_steps"]
    assert tr.info["rhs_evaluations"] == ref.info["rhs_evaluations"]


def test_parallel_kernel_matches_solve(tmp_path):
    """The prange kernel, with sizes, spaces, losses, couplings differing within one batch,
    reproduces ufm.solve for every configuration; one thread and two threads agree exactly,
    and a sweep read back from out= equals the in-memory one."""
    configs = mixed_configs()
    par = sweep(configs, T_SAVE, save="all", threads=2, out=tmp_path / "par", progress=False)
    ser = sweep(configs, T_SAVE, save="all", threads=1, progress=False)
    assert len(par) == len(configs) and all(r["status"] == "ok" for r in par), par.failed
    for i, config in enumerate(configs):
        ref = reference(config)
        assert_same(par.trajectory(i), ref)
        for name in ARRAYS:
            a, b = getattr(par.trajectory(i), name), getattr(ser.trajectory(i), name)
            assert (a is None and b is None) or np.array_equal(a, b), name
    # explicit pairs keep their model and problem in the trajectory
    assert par.trajectory(len(configs) - 1).model == configs[-1][0]
    loaded = ufm.sweeps.load(tmp_path / "par")
    assert [r["hash"] for r in loaded] == [r["hash"] for r in par]
    for a, b in zip(loaded, par):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]), k


def test_failures_are_recorded_and_do_not_stop_others(tmp_path, monkeypatch):
    """Bad input and an integration that runs out of steps are recorded with their error; a
    partial trajectory is kept and equals ufm.solve's IntegrationError trajectory."""
    good = {**BASE, "lambda": 1e-2}
    slow = {**BASE, "lambda": 1e-2, "scale": 100.0}  # large init: ~600 steps instead of ~80
    p = ufm.settings.factorial((2, 3))
    m = ufm.UFM(p)
    gs = m.init(8, seed=0).grams()
    configs = [good, {**BASE, "lamda": 1e-2}, {"setting": "factorial", "levels": [2, 3]}, slow,
               (m, GramState(gs.M, gs.gram_W, gs.gram_H)), {**BASE, "setting": "tree"}, 42, good]
    res = sweep(configs, T_SAVE, max_steps=400, threads=1, out=tmp_path, progress=False)
    status = [r["status"] for r in res]
    assert status == ["ok", "failed", "failed", "failed", "failed", "failed", "failed", "ok"]
    assert [r["reason"] for r in res.failed] == ["bad_input"] * 2 + ["max_steps"] + ["bad_input"] * 3
    assert "unknown key(s) ['lamda']" in res[1]["error"]
    assert "d: required" in res[2]["error"]
    assert "GramState has no W and H" in res[4]["error"]
    assert "setting: expected one of" in res[5]["error"]
    assert "config: expected a spec dict" in res[6]["error"]
    with pytest.raises(ValueError, match="has no trajectory"):
        res.trajectory(1)
    with pytest.raises(ufm.IntegrationError) as err:
        reference(slow, max_steps=400)
    partial = res.trajectory(3)
    assert 0 < len(partial) < len(T_SAVE)
    assert res[3]["t_fail"] == pytest.approx(err.value.t, rel=1e-15)
    np.testing.assert_array_equal(partial.gram_H, err.value.trajectory.gram_H)
    # the duplicate of config 0 is the same configuration: same hash, same numbers
    assert res[7]["hash"] == res[0]["hash"]
    np.testing.assert_array_equal(res.trajectory(7).gram_H, res.trajectory(0).gram_H)
    # failures are on disk too, so a rerun does not integrate them again (unless asked); a
    # summary callable (whose code cannot be compared) is rerun on every stored trajectory
    integrated = []
    real = engine.run_payloads
    monkeypatch.setattr(engine, "run_payloads",
                        lambda items, *a: integrated.extend(h for _i, h, _p in items) or real(items, *a))
    summarised = []
    res2 = sweep(configs, T_SAVE, max_steps=400, threads=1, out=tmp_path, progress=False,
                 summary=lambda tr: summarised.append(len(tr)) or {})
    assert integrated == [] and [r["status"] for r in res2] == status
    assert sorted(summarised) == sorted([len(T_SAVE), len(partial)])  # `good` (once for both rows), `slow`
    integrated.clear()
    summarised.clear()
    res3 = sweep(configs, T_SAVE, max_steps=400, threads=1, out=tmp_path, progress=False, retry_failed=True,
                 summary=lambda tr: summarised.append(len(tr)) or {})
    # retried: `slow` and the GramState pair (bad input found by the worker); the specs that
    # are malformed never reach a worker
    assert sorted(integrated) == sorted([res[3]["hash"], res[4]["hash"]])
    assert sorted(summarised) == sorted([len(T_SAVE), len(partial)]) and [r["status"] for r in res3] == status


class Interrupt(Exception):
    pass


def test_resume_after_interruption(tmp_path, monkeypatch):
    """A sweep interrupted after its first batch keeps the finished configurations on disk;
    the rerun integrates only the rest and the result equals an uninterrupted sweep. Stray
    temporary files and a truncated record (a write killed half-way) are ignored."""
    configs = grid({"lambda": [1e-2, 3e-3, 1e-3], "seed": [0, 1]}, base=BASE)
    full = sweep(configs, T_SAVE, threads=1, progress=False)

    def stop(done, total):
        if done >= 2:
            raise Interrupt
    with pytest.raises(Interrupt):
        sweep(configs, T_SAVE, threads=1, chunk_size=2, out=tmp_path, progress=stop)
    finished = sorted(f for f in os.listdir(tmp_path) if f.endswith(".json"))
    assert len(finished) == 2
    (tmp_path / ".abc.tmp").write_text("half-written")
    trunc = config_hash(configs[-1], T_SAVE)
    (tmp_path / f"{trunc}.json").write_text('{"format": "ufm-sweep-rec')

    ran = []
    real = engine.run_payloads

    def counting(items, options, threads=None):
        ran.extend(h for _i, h, _p in items)
        return real(items, options, threads)
    monkeypatch.setattr(engine, "run_payloads", counting)
    res = sweep(configs, T_SAVE, threads=1, chunk_size=2, out=tmp_path, progress=False)
    assert len(ran) == 4 and trunc in ran
    assert not {f[:-5] for f in finished} & set(ran)
    assert res.complete and [r["status"] for r in res] == ["ok"] * 6
    for i in range(len(configs)):
        for name in ("loss", "gram_H", "gram_W", "logits"):
            np.testing.assert_array_equal(getattr(res.trajectory(i), name), getattr(full.trajectory(i), name))
        for key in ("loss_final", "gap_peak", "t_collapse", "etf_distance_final"):
            assert res[i][key] == full[i][key] or np.isnan(res[i][key]) and np.isnan(full[i][key])
    ran.clear()
    sweep(configs, T_SAVE, threads=1, out=tmp_path, progress=False)
    assert ran == []


def test_hash_is_deterministic_and_canonical():
    """Equivalent specs hash alike (also in a fresh process with another PYTHONHASHSEED);
    anything that changes the numbers changes the hash."""
    a = {"setting": "factorial", "levels": [2, 3], "d": 8, "lambda": 1e-3, "seed": 0}
    b = {"seed": 0.0, "lambda_W": 0.001, "lambda_H": 1e-3, "d": 8.0, "levels": (2, 3), "setting": "factorial",
         "beta": 0, "scale": 1e-3, "space": "parameters"}
    h = config_hash(a, T_SAVE)
    assert h == config_hash(b, T_SAVE) and len(h) == 64
    for change in ({"seed": 1}, {"lambda": 2e-3}, {"beta": 0.1}, {"d": 9}, {"space": "gram"}):
        assert config_hash({**a, **change}, T_SAVE) != h, change
    assert config_hash(a, T_SAVE[:-1]) != h
    for option in ({"rtol": 1e-9}, {"atol": 1e-9}, {"save": "gram_H"}, {"method": "rk4", "dt": 0.1},
                   {"method": CUSTOM_DOPRI5}, {"t0": -1.0}, {"dt": 0.1}, {"max_steps": 1000}, {"h_max": 5.0},
                   {"space": "gram"}):
        assert config_hash(a, T_SAVE, **option) != h, option
    # a solver that is not registered is keyed by all the kernel receives, not its name
    assert config_hash(a, T_SAVE, method=CUSTOM_DOPRI5_E3) != config_hash(a, T_SAVE, method=CUSTOM_DOPRI5)
    m, x = ufm.sweeps.build(a)
    hp = config_hash((m, x), T_SAVE)
    assert hp == config_hash(ufm.sweeps.build(b), T_SAVE) and hp != h
    W = x.W.copy()
    W[0, 0] = np.nextafter(W[0, 0], 1.0)
    assert config_hash((m, ufm.State(W, x.H)), T_SAVE) != hp
    code = ("import json, numpy as np; from ufm.sweeps import config_hash; "
            f"print(config_hash(json.loads({json.dumps(json.dumps(a))}), "
            "np.concatenate([[0.0], np.geomspace(1e-2, 1e2, 11)])))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == h


def test_default_method_is_auto_hashed_as_the_pair_it_picks_for_rtol():
    """The default method of sweep and config_hash is "auto", the explicit pair
    ufm.solvers.auto_solver picks for rtol (the batch kernel has no stiff switch), hashed as
    that pair; records of the old default dopri5 are reached with method="dopri5" only."""
    import inspect
    a = {"setting": "factorial", "levels": [2, 3], "d": 8, "lambda": 1e-3, "seed": 0}
    assert inspect.signature(sweep).parameters["method"].default == "auto"
    assert inspect.signature(ufm.solve).parameters["method"].default == "auto"
    assert config_hash(a, T_SAVE) == config_hash(a, T_SAVE, method="vern7")
    assert config_hash(a, T_SAVE, rtol=1e-6) == config_hash(a, T_SAVE, rtol=1e-6, method="tsit5")
    assert config_hash(a, T_SAVE) != config_hash(a, T_SAVE, method="dopri5")
    row = sweep([a], T_SAVE, threads=1, progress=False, rtol=1e-6).rows[0]
    pair = ufm.solve(*ufm.sweeps.build(a), T_SAVE, rtol=1e-6, method="tsit5")
    assert row["hash"] == config_hash(a, T_SAVE, rtol=1e-6)
    assert row["rhs_evaluations"] == pair.info["rhs_evaluations"]


def test_table_and_summary(tmp_path):
    """Rows carry config columns and summary metrics; to_array gives typed fields; the
    summary equals the metrics recomputed pair by pair (tests/independent.py) from a separate
    ufm.solve of each configuration; a summary callable adds columns."""
    configs = grid({"beta": [0.0, 1.0]}, base={"setting": "factorial", "levels": [3, 3], "d": 12, "scale": 1e-2,
                                               "lambda": 1e-2, "seed": 5})
    t = np.geomspace(1e-1, 3e3, 25)
    res = sweep(configs, t, threads=1, out=tmp_path, progress=False,
                summary=lambda tr: {"norm_H_final": float(tr.metric("norm_H")[-1]), "tag": "x"})
    arr = res.to_array()
    assert arr.shape == (2,)
    assert arr["beta"].dtype == np.float64 and arr["d"].dtype == np.int64 and arr["collapsed"].dtype == bool
    assert arr["status"].dtype.kind == "U" and list(arr["levels"]) == ["3x3", "3x3"]
    assert list(arr["K"]) == [9, 9] and list(arr["tag"]) == ["x", "x"]
    for i in range(2):
        model, init = ufm.sweeps.build(configs[i])
        ref = ufm.solve(model, init, t)
        p = model.problem
        gap = [independent.semantic_gap(g, p.attributes) for g in ref.gram_H]     # K = N: no labels
        want = independent.transient(t, gap, 0.02)
        # measured: peak and collapse time equal to 2e-15 relative (the sweep runs the same
        # integration as ufm.solve); final gap and ETF distance (both round-off, ~1e-13) to 3e-17
        assert res[i]["gap_peak"] == pytest.approx(want["peak"], rel=1e-14)
        assert res[i]["t_peak"] == want["t_peak"]
        assert res[i]["t_collapse"] == pytest.approx(want["t_collapse"], rel=1e-14, nan_ok=True)
        assert res[i]["collapsed"] == want["collapsed"]
        assert res[i]["gap_final"] == pytest.approx(gap[-1], rel=0, abs=1e-15)
        assert res[i]["etf_distance_final"] == pytest.approx(independent.etf_distance(ref.gram_H[-1], p.labels),
                                                             rel=0, abs=1e-15)
        assert res[i]["loss_final"] == pytest.approx(ref.loss[-1], rel=1e-14)
        assert res[i]["norm_H_final"] == pytest.approx(np.sqrt(np.trace(ref.gram_H[-1])), rel=1e-14)
        assert res[i]["accuracy_final"] == independent.accuracy(ref.logits[-1], p.labels) == 1.0
        assert res[i]["accepted_steps"] == ref.info["accepted_steps"]
    assert res[0]["collapsed"] and res[1]["collapsed"]         # both collapse within t: t_collapse is a number
    assert res[1]["gap_peak"] > res[0]["gap_peak"] + 0.1  # coupling makes semantic structure
    np.testing.assert_array_equal(res.column("beta"), [0.0, 1.0])
    with pytest.raises(KeyError, match="no column"):
        res.column("nope")
    # files are plain Trajectory files and JSON records
    tr = ufm.Trajectory.load(tmp_path / f"{res[1]['hash']}.npz")
    np.testing.assert_array_equal(tr.gram_H, res.trajectory(1).gram_H)
    assert res.trajectory(res[1]["hash"][:12]).model == tr.model
    rows = list(csv_rows(res.write_csv(tmp_path / "table.csv")))
    assert rows[0][:3] == ["index", "hash", "status"] and len(rows) == 3


def csv_rows(path):
    import csv
    with open(path, newline="") as fh:
        yield from csv.reader(fh)


def test_process_pool_executor(tmp_path):
    """Chunks on a (fork) process pool give the same numbers as this process."""
    configs = grid({"lambda": [1e-2, 1e-3], "beta": [0.0, 0.8], "seed": [0, 1]}, base=BASE)
    local = sweep(configs, T_SAVE, threads=1, progress=False)
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
        res = sweep(configs, T_SAVE, executor=ex, chunk_size=3, out=tmp_path, progress=False)
    assert res.complete and len(os.listdir(tmp_path)) == 2 * len(configs)
    for i in range(len(configs)):
        np.testing.assert_array_equal(res.trajectory(i).gram_H, local.trajectory(i).gram_H)
        assert res[i]["hash"] == local[i]["hash"]


class InlineExecutor:
    """An executor running each task at submission; task number ``dies`` fails like a
    killed worker."""

    def __init__(self, dies=None):
        self.calls = 0
        self.dies = dies

    def submit(self, fn, *args):
        fut = cf.Future()
        self.calls += 1
        if self.calls == self.dies:
            fut.set_exception(cf.process.BrokenProcessPool("worker died"))
        else:
            fut.set_result(fn(*args))
        return fut


def test_failed_task_raises_incomplete_and_resumes(tmp_path):
    """A task that dies is not a configuration failure: SweepIncomplete lists what did not
    run, the finished ones are kept, and the rerun runs only those and completes the sweep."""
    configs = grid({"seed": [0, 1, 2, 3]}, base={**BASE, "lambda": 1e-2})
    with pytest.raises(SweepIncomplete, match="2 of 4 configurations did not run") as err:
        sweep(configs, T_SAVE, executor=InlineExecutor(dies=2), chunk_size=2, out=tmp_path, progress=False)
    partial = err.value.result
    assert [r["status"] for r in partial] == ["ok", "ok", "not-run", "not-run"]
    assert not partial.complete and "BrokenProcessPool" in partial[2]["error"]
    ex = InlineExecutor()
    res = sweep(configs, T_SAVE, executor=ex, chunk_size=1, out=tmp_path, progress=False)
    assert ex.calls == 2
    assert res.complete and all(r["status"] == "ok" for r in res)
    local = sweep(configs, T_SAVE, threads=1, progress=False)
    for i in range(4):
        np.testing.assert_array_equal(res.trajectory(i).logits, local.trajectory(i).logits)


def test_bad_arguments_name_the_argument():
    with pytest.raises(TypeError, match="configs"):
        sweep({"setting": "factorial"}, T_SAVE)
    with pytest.raises(ValueError, match="t: expected strictly increasing"):
        sweep([BASE], [1.0, 0.5])
    with pytest.raises(TypeError, match="executor"):
        sweep([BASE], T_SAVE, executor=object())
    with pytest.raises(ValueError, match="save: unknown quantity"):
        sweep([BASE], T_SAVE, save=["G"])
    with pytest.raises(ValueError, match="dt:"):
        sweep([BASE], T_SAVE, method="rk4")
    with pytest.raises(TypeError, match="summary"):
        sweep([BASE], T_SAVE, summary="yes")
    with pytest.raises(ValueError, match="space"):
        sweep([BASE], T_SAVE, space="weights")
    with pytest.raises(TypeError, match="axes"):
        grid([1, 2])


def test_toml_and_cli(tmp_path, capsys):
    """``ufm sweep CONFIG.toml --out DIR`` runs the grid, writes records and a table."""
    cfg = tmp_path / "s.toml"
    cfg.write_text("""
[sweep]
t = {start = 1e-2, stop = 1e2, num = 11, zero = true}
save = ["gram_H"]

[base]
setting = "factorial"
levels = [2, 3]
d = 8
scale = 0.3

[grid]
lambda = [1e-2, 1e-3]
seed = [0, 1]

[[configs]]
lambda = 0.0
label_permutation = "none"
""")
    spec = ufm.sweeps.read_toml(cfg)
    assert len(spec["configs"]) == 5 and spec["out"] is None
    np.testing.assert_allclose(spec["t"], T_SAVE)
    from ufm.cli import main
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "5 configurations: 5 ok" in text
    res = ufm.sweeps.load(out)
    assert len(res) == 5 and os.path.exists(out / "table.csv")
    ref = sweep(spec["configs"], spec["t"], save=["gram_H"], threads=1, progress=False)
    assert sorted(r["hash"] for r in res) == sorted(r["hash"] for r in ref)
    cfg.write_text("[sweep]\nt = [1, 2]\n[base]\nsetting = 'factorial'\n[bogus]\n")
    assert main(["sweep", str(cfg)]) == 2
    assert "unknown section" in capsys.readouterr().err


# -- a rerun into the same out= returns what a fresh run with its options returns ------------

T_LONG = np.concatenate([[0.0], np.geomspace(1e-1, 3e3, 24)])  # long enough for the gap to collapse


def resume_configs():
    """A coupled spec whose semantic gap rises and collapses within T_LONG (t_collapse ≈ 725
    at threshold 0.02, ≈ 409 at 0.2) and an explicit pair with a bias."""
    q = ufm.settings.balanced(3, 2)
    mq = ufm.UFM(q, loss="mse", lambda_W=0.01, lambda_H=0.02, bias=True)
    spec = {"setting": "factorial", "levels": [3, 3], "d": 12, "scale": 1e-2, "lambda": 1e-2, "beta": 1.0,
            "seed": 5}
    return [spec, (mq, mq.init(7, scale=0.5, seed=3))]


def norm_H_final(tr):
    return {"norm_H_final": float(tr.metric("norm_H")[-1])}


def counting_runs(monkeypatch):
    """Record the hashes engine.run_payloads integrates."""
    integrated = []
    real = engine.run_payloads
    monkeypatch.setattr(engine, "run_payloads",
                        lambda items, *a: integrated.extend(h for _i, h, _p in items) or real(items, *a))
    return integrated


def same_value(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


def assert_same_result(res, fresh):
    """Rows equal value by value (NaN = NaN) and trajectories array by array."""
    assert len(res) == len(fresh)
    for i in range(len(res)):
        assert res[i].keys() == fresh[i].keys(), i
        for k in res[i]:
            assert same_value(res[i][k], fresh[i][k]), (i, k, res[i][k], fresh[i][k])
        a, b = res.trajectory(i), fresh.trajectory(i)
        for name in ARRAYS:
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), (i, name)


def differs(res, other) -> bool:
    """Some row value or saved array differs (so a stale answer would be caught)."""
    for i in range(len(res)):
        if any(not same_value(res[i].get(k), other[i].get(k)) for k in set(res[i]) | set(other[i]) - {"hash"}):
            return True
        a, b = res.trajectory(i), other.trajectory(i)
        for name in ARRAYS:
            x, y = getattr(a, name), getattr(b, name)
            if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
                return True
    return False


def test_rerun_with_another_threshold_returns_fresh_collapse_times(tmp_path, monkeypatch):
    """The stale-threshold bug: a rerun into the same out= with threshold 0.2 returned the
    collapse times of threshold 0.02 (725 instead of 409). Now it returns a fresh run's
    numbers, recomputed from the stored trajectories (nothing is integrated again), and
    the records on disk say so too."""
    configs = resume_configs()
    first = sweep(configs, T_LONG, threads=1, out=tmp_path / "out", progress=False, threshold=0.02)
    integrated = counting_runs(monkeypatch)
    rerun = sweep(configs, T_LONG, threads=1, out=tmp_path / "out", progress=False, threshold=0.2)
    fresh = sweep(configs, T_LONG, threads=1, out=tmp_path / "fresh", progress=False, threshold=0.2)
    assert integrated == [h for h in (r["hash"] for r in fresh)]  # only the fresh run integrated
    assert_same_result(rerun, fresh)
    # a higher threshold is crossed earlier on the way down (measured 409 against 725), so the
    # stale answer is far from the fresh one
    assert rerun[0]["t_collapse"] < 0.8 * first[0]["t_collapse"]
    assert_same_result(ufm.sweeps.load(tmp_path / "out"), ufm.sweeps.load(tmp_path / "fresh"))
    record = json.loads((tmp_path / "out" / f"{rerun[0]['hash']}.json").read_text())
    assert record["summary_options"] == {"summary": "default", "threshold": 0.2}


#: (options of the first run, options of the rerun, change to the configurations): each
#: changes a stored number (checked), and the rerun into the same out= must equal a fresh run
RERUN_CHANGES = {
    "t": ({}, {"t": T_LONG[:-3]}, None),
    "rtol": ({}, {"rtol": 1e-5}, None),
    "atol": ({}, {"atol": 1e-4}, None),
    "method": ({}, {"method": "rk4", "dt": 0.5}, None),
    "solver controller": ({"method": CUSTOM_DOPRI5}, {"method": CUSTOM_DOPRI5_E3}, None),
    "space": ({}, {"space": "gram"}, None),
    "max_steps": ({}, {"max_steps": 60}, None),
    "h_max": ({}, {"h_max": 5.0}, None),
    "t0": ({}, {"t0": -1.0}, None),
    "dt": ({}, {"dt": 0.1}, None),
    "save": ({}, {"save": ["gram_H", "b"]}, None),
    "threshold": ({}, {"threshold": 0.2}, None),
    "summary on": ({"summary": False}, {}, None),
    "summary off": ({}, {"summary": False}, None),
    "summary callable": ({}, {"summary": norm_H_final}, None),
    "seed": ({}, {}, lambda cs: [{**cs[0], "seed": 6}, cs[1]]),
    "spec key": ({}, {}, lambda cs: [{**cs[0], "lr_H": 0.5}, cs[1]]),
    "init": ({}, {}, lambda cs: [cs[0], (cs[1][0], ufm.State(cs[1][1].W * 1.01, cs[1][1].H, cs[1][1].b))]),
    "model": ({}, {}, lambda cs: [cs[0], (cs[1][0].replace(lambda_b=0.1), cs[1][1])]),
}


@pytest.mark.parametrize("change", list(RERUN_CHANGES))
def test_rerun_with_any_changed_option_returns_fresh_numbers(tmp_path, change):
    first_kw, rerun_kw, change_configs = RERUN_CHANGES[change]
    configs = resume_configs()
    kw = dict(threads=1, progress=False)
    t = rerun_kw.pop("t", T_LONG) if "t" in rerun_kw else T_LONG
    rerun_kw = {k: v for k, v in rerun_kw.items() if k != "t"}
    first = sweep(configs, T_LONG, out=tmp_path / "out", **kw, **first_kw)
    configs2 = change_configs(configs) if change_configs else configs
    rerun = sweep(configs2, t, out=tmp_path / "out", **kw, **rerun_kw)
    fresh = sweep(configs2, t, out=tmp_path / "fresh", **kw, **rerun_kw)
    assert differs(fresh, first), f"changing {change} changes nothing here: the case tests nothing"
    assert_same_result(rerun, fresh)


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped byte", "another configuration's"])
def test_record_with_damaged_trajectory_is_run_again(tmp_path, monkeypatch, damage):
    """A record is trusted only with its complete trajectory: a missing, truncated or damaged
    .npz (or one holding another configuration) makes the configuration run again."""
    configs = resume_configs()
    first = sweep(configs, T_LONG, threads=1, out=tmp_path, progress=False)
    path = tmp_path / f"{first[0]['hash']}.npz"
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(data[: len(data) - 100])
    elif damage == "flipped byte":
        pos = data.index(b"gram_H.npy") + 2000  # inside the Gram array's data
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0x10]) + data[pos + 1:])
    else:
        path.write_bytes((tmp_path / f"{first[1]['hash']}.npz").read_bytes())
    integrated = counting_runs(monkeypatch)
    rerun = sweep(configs, T_LONG, threads=1, out=tmp_path, progress=False)
    assert integrated == [first[0]["hash"]]
    assert_same_result(rerun, first)
    assert ufm.Trajectory.load(path).info["sweep_hash"] == first[0]["hash"]  # repaired on disk


def test_failure_while_summarising_is_retried_with_another_summary(tmp_path):
    """A summary callable that raises records the configuration as failed (reason "error",
    no trajectory); a rerun with another summary runs it again and equals a fresh run."""
    configs = resume_configs()

    def broken(tr):
        raise RuntimeError("summary bug")
    first = sweep(configs, T_LONG, threads=1, out=tmp_path / "out", progress=False, summary=broken)
    assert [r["reason"] for r in first] == ["error", "error"] and "summary bug" in first[0]["error"]
    rerun = sweep(configs, T_LONG, threads=1, out=tmp_path / "out", progress=False)
    fresh = sweep(configs, T_LONG, threads=1, out=tmp_path / "fresh", progress=False)
    assert [r["status"] for r in rerun] == ["ok", "ok"]
    assert_same_result(rerun, fresh)
