"""``ufm.bridge.compare(run, method=M)`` for M in dopri5 and auto, back to back per run (the
order alternating from run to run): CPU and wall seconds, the best model, and each fit's wall
time, rss, parameters, message and iterations, written to OUT.json; printed per run, with the
fits whose rss differs by more than 0.1 %. On a shared machine read CPU (``time.process_time``),
not wall (and a fit's ``max_time`` is wall time: under load it stops fits earlier).

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.fit_methods OUT.json RUN.npz [RUN.npz ...]
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


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
