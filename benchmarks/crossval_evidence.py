"""The evidence behind the comparison's ranking rule: AIC* against blocked cross-validation.

For each run given, fits the default comparison (``ufm.bridge.compare``), then cross-validates
it under both schemes of :func:`ufm.bridge.crossval.cross_validate` (4 blocks, the first never
held out), and prints, per row: its role, k, rss, AIC*, the held-out error under forward
chaining and under leave-one-block-out, the R² of each observable and its flags, plus the CPU
time of the compare and of each cross-validation (this process and its Jacobian workers).
docs/bridge.md ("Cross-validation") quotes its output.

Run::

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.crossval_evidence tests/data/real/*.npz [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import warnings


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (the Jacobian workers)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def evidence(path: str) -> dict:
    """Compare and cross-validate one run; the record that :func:`main` prints."""
    import ufm.bridge as bridge
    from ufm.bridge.comparison import BASELINE
    from ufm.bridge.crossval import cross_validate

    run = bridge.load(path)
    c0 = _cpu()
    cmp = bridge.compare(run)
    rec = {"compare_cpu": _cpu() - c0, "best": cmp.best_, "rho": cmp.rho_, "n_eff": cmp.n_eff_, "rows": {}}
    for scheme in ("forward", "leave-one-out"):
        c0 = _cpu()
        cv = cross_validate(cmp, scheme=scheme, blocks=4)
        rec[scheme + "_cpu"] = _cpu() - c0
        for name in [BASELINE] + [n for n in cmp.fits if n in cv.error]:
            row = rec["rows"].setdefault(name, {})
            row[scheme] = cv.error[name]
            row[scheme + "_folds"] = cv.fold_error[name]
    for name, f in cmp.rows().items():
        rec["rows"].setdefault(name, {}).update(
            role=cmp.role(name), rss=f.rss_, aic_eff=cmp.aic_eff_[name], k=f.k_, flags=cmp.flags_[name],
            why=cmp.why_not_.get(name), r2={k: float(v) for k, v in f.r2_.items()})
    return rec


def _print(path: str, rec: dict) -> None:
    print(f"== {path}: compare {rec['compare_cpu']:.1f} s, forward {rec['forward_cpu']:.1f} s, "
          f"leave-one-out {rec['leave-one-out_cpu']:.1f} s CPU; best {rec['best']}; "
          f"rho {rec['rho']:.2f}, n_eff {rec['n_eff']:.1f}", flush=True)
    for name, d in rec["rows"].items():
        if d.get("role") == "oracle" and "forward" not in d:
            continue
        r2 = " ".join(f"{k[:6]}={v:.2f}" for k, v in d.get("r2", {}).items())
        print(f"   {name[:34]:34s} {d.get('role', '?')[:4]} k{d.get('k')} rss {d.get('rss', float('nan')):8.2f} "
              f"AIC* {d.get('aic_eff', float('nan')):8.2f} forward {d.get('forward', float('nan')):9.2f} "
              f"leave-one-out {d.get('leave-one-out', float('nan')):9.2f} R2 {r2} {','.join(d.get('flags', []))}",
              flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="exported runs (.npz, .safetensors or checkpoint folders)")
    ap.add_argument("--json", help="also write every record to this JSON file")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    out = {}
    for path in args.runs:
        out[path] = evidence(path)
        _print(path, out[path])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, default=str, indent=1)


if __name__ == "__main__":
    main()
