"""ufm.sweep on a Dask cluster of this machine, with a worker killed mid-sweep.

Needs the ``dask`` extra (``pip install 'ufm[dask]'``; part of the ``test`` extra).
"""

from __future__ import annotations

import logging
import os
import signal

import numpy as np

import distributed  # in the test extra: a missing install must fail, not skip

from ufm.sweeps import SweepIncomplete, grid, load, sweep  # noqa: E402

T_SAVE = np.concatenate([[0.0], np.geomspace(1e-2, 1e3, 15)])


def test_dask_cluster_with_a_killed_worker(tmp_path):
    """Two worker processes; one is SIGKILLed as soon as the first chunk comes back. Dask
    reschedules its tasks (or the sweep raises SweepIncomplete and a rerun finishes it): in
    the end every configuration is on disk exactly once and equals the in-process sweep."""
    configs = grid({"lambda": [1e-2, 1e-3], "beta": [0.0, 0.8], "seed": [0, 1, 2, 3]},
                   base={"setting": "factorial", "levels": [2, 3], "d": 8, "scale": 0.3})
    opts = dict(rtol=1e-10, atol=1e-12)
    # In-process reference on one thread: the driver ufm.solve uses, which the workers run
    # too (one thread per task) and load from numba's cache once this has compiled it; the
    # prange kernel gives the same numbers exactly (test_sweep.py), and is not compiled here.
    local = sweep(configs, T_SAVE, threads=1, progress=False, **opts)

    out = tmp_path / "out"
    killed = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        pids = client.run(os.getpid)

        def kill_one(done, total):
            if done >= 2 and not killed:
                victim = sorted(pids)[0]
                os.kill(pids[victim], signal.SIGKILL)
                killed.append(victim)

        executor = client.get_executor()
        try:
            first = sweep(configs, T_SAVE, executor=executor, out=out, chunk_size=2, progress=kill_one, **opts)
        except SweepIncomplete as exc:
            first = exc.result
        assert killed, "the sweep finished before a worker could be killed"
        on_disk_after_kill = {f for f in os.listdir(out) if f.endswith(".json")}
        assert len(on_disk_after_kill) >= 2
        client.wait_for_workers(1, timeout=60)
        res = sweep(configs, T_SAVE, executor=client.get_executor(), out=out, chunk_size=2, progress=False,
                    **opts)
    assert res.complete and all(r["status"] == "ok" for r in res), [r["error"] for r in res if r["error"]]
    if first.complete:
        assert [r["hash"] for r in first] == [r["hash"] for r in res]
    assert len([f for f in os.listdir(out) if f.endswith(".json")]) == len(configs)
    loaded = load(out)
    assert sorted(r["hash"] for r in loaded) == sorted(r["hash"] for r in local)
    for i in range(len(configs)):
        assert res[i]["hash"] == local[i]["hash"]
        for name in ("loss", "gram_W", "gram_H", "logits"):
            np.testing.assert_array_equal(getattr(res.trajectory(i), name), getattr(local.trajectory(i), name))
        assert res[i]["accepted_steps"] == local[i]["accepted_steps"]
