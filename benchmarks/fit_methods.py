"""``ufm.bridge.compare(run, method=M)`` for M in dopri5 and auto, back to back per run (the
order alternating from run to run): CPU and wall seconds, the best model, and each fit's wall
time, rss, parameters, message and iterations, written to OUT.json; printed per run, with the
fits whose rss differs by more than 0.1 %. On a shared machine read CPU (``time.process_time``),
not wall (and a fit's ``max_time`` is wall time: under load it stops fits earlier).

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.fit_methods OUT.json RUN.npz [RUN.npz ...]

``--profile`` instead runs the default ``compare`` once per run and prints, per fit, its CPU
seconds (``Fit.cpu_time_``: this process's, not the Jacobian workers'; compare wall with
``UFM_JAC_WORKERS=1``), predictions (evaluated points, scan and Jacobians included) and
integrations (fewer: time-map points read off another prediction, ``_Engine.time_columns``,
``prefetch_scan``), iterations, rss and message — where a slow compare spends its time — with
the load average:

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.fit_methods --profile OUT.json RUN.npz [...]
"""

from __future__ import annotations

import json
import sys
import time
import warnings


def main(out: str, paths) -> list:
    import ufm.bridge as br
    warnings.simplefilter("ignore")
    res = []
    for i, path in enumerate(paths):
        run = br.load(path)
        entry = {"run": path, "N": int(run.N)}
        for m in (("dopri5", "auto") if i % 2 == 0 else ("auto", "dopri5")):
            t0, c0 = time.perf_counter(), time.process_time()
            cmp_ = br.compare(run, method=m)
            entry[m] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "best": cmp_.best_,
                        "fits": {nm: {"wall": f.wall_time_, "rss": f.rss_, "params": f.params_, "msg": f.message_,
                                      "nfev": f.nfev_} for nm, f in cmp_.fits.items()}}
        res.append(entry)
        d, a = entry["dopri5"], entry["auto"]
        print(f"{path.split('/')[-1]:45s} CPU dopri5 {d['cpu']:6.1f} s  auto {a['cpu']:6.1f} s  "
              f"x{d['cpu'] / a['cpu']:.2f}  best {d['best']} | {a['best']}", flush=True)
        for nm, fd in d["fits"].items():         # the fits whose rss moved by more than 0.1 %
            fa = a["fits"][nm]
            if abs(fa["rss"] - fd["rss"]) > 1e-3 * abs(fd["rss"]):
                print(f"    {nm:28s} rss {fd['rss']:.6g} -> {fa['rss']:.6g} ({fa['rss'] / fd['rss'] - 1:+.1%})  "
                      f"{fd['msg'][:40]} | {fa['msg'][:40]}", flush=True)
        with open(out, "w") as fh:
            json.dump(res, fh, indent=1, default=str)
    return res


def profile(out: str, paths) -> list:
    import ufm.bridge as br
    warnings.simplefilter("ignore")
    res = []
    for path in paths:
        run = br.load(path)
        load = open("/proc/loadavg").read().split()[:3] if sys.platform.startswith("linux") else None
        t0, c0 = time.perf_counter(), time.process_time()
        cmp_ = br.compare(run)
        entry = {"run": path, "N": int(run.N), "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                 "best": cmp_.best_, "load": load, "fits": {}}
        print(f"{path.split('/')[-1]:45s} CPU {entry['cpu']:6.1f} s  wall {entry['wall']:6.1f} s  best {cmp_.best_}  "
              f"load {load}", flush=True)
        for nm, f in cmp_.fits.items():
            eng = getattr(f, "engine_", None)
            if eng is None or not hasattr(f, "cpu_time_"):       # the frozen baseline (no fit)
                continue
            entry["fits"][nm] = {"cpu": f.cpu_time_, "wall": f.wall_time_, "predictions": eng.predictions,
                                 "integrations": eng.integrations, "nfev": f.nfev_, "rss": f.rss_,
                                 "success": f.success_, "msg": f.message_}
            print(f"    {nm:28s} CPU {f.cpu_time_:6.1f} s  {eng.predictions:4d} predictions "
                  f"({eng.integrations:4d} integrated)  {f.nfev_:3d} nfev  "
                  f"rss {f.rss_:.6g}  {'' if f.success_ else 'NOT converged: '}{f.message_[:60]}", flush=True)
        res.append(entry)
        with open(out, "w") as fh:
            json.dump(res, fh, indent=1, default=str)
    return res


if __name__ == "__main__":
    args = sys.argv[1:]
    prof = "--profile" in args
    args = [a for a in args if a != "--profile"]
    if len(args) < 2:
        sys.exit(__doc__)
    (profile if prof else main)(args[0], args[1:])
