"""``ufm fit RUN``: fit UFM dynamics to an exported run; write a report, a figure and JSON."""

from __future__ import annotations

import json
import math
import os
import sys

HELP = "fit UFM dynamics (standard / coupled / linear-features) to an exported run; write report + figure"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="a ufm-run file (.npz, .safetensors, .h5) or directory")
    parser.add_argument("--tag", default=None, help="which run of a W_list_<tag>.npy directory")
    parser.add_argument("--model", default="coupled", choices=("standard", "coupled", "linear-features", "deep"),
                        help="model family (default coupled)")
    parser.add_argument("--params", default=None,
                        help="comma-separated parameters to fit (default by family), from time_scale, time_power, "
                             "lambda, lambda_W, lambda_H, lambda_E, lambda_b, init_scale, beta, lr_W, lr_H")
    parser.add_argument("--observables", default=None,
                        help="comma-separated observables (default relations/gram_H, semantic_gap, etf_distance), "
                             "from gram_H, gram_W, relations, semantic_gap, etf_distance, effective_rank, norm_H, "
                             "norm_W, norms")
    parser.add_argument("--time", default=None, choices=("fixed", "scale", "power", "optimizer"),
                        help="time map: t = lr·step, s·step, s·step^p, or the discrete optimiser (default: s·step; "
                             "with --compare on an Adam/AdamW run, s·step^p and a fitted decay)")
    parser.add_argument("--init", default="run", choices=("run", "isotropic"),
                        help="start from the run's first checkpoint (default) or an isotropic small init")
    parser.add_argument("--coupling", default=None, choices=("identity", "attribute", "measured", "measured-t"),
                        help="Θ: attribute kernel (default for coupled/linear-features), the run's logged kernel "
                             "fixed (measured) or time-dependent (measured-t)")
    parser.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE",
                        help="fix a parameter that is not fitted (repeatable)")
    parser.add_argument("--degree", type=float, default=None,
                        help="homogeneity degree L for linear-features (default: metadata, else estimated from the run)")
    parser.add_argument("--layers", type=int, default=None, help="hidden layers of the deep family (default degree − 1)")
    parser.add_argument("--compare", action="store_true",
                        help="fit every family (and the kernel predictions when the run has a kernel) and tabulate")
    parser.add_argument("--kernel", action="store_true",
                        help="zero-parameter predictions from the logged kernel (coupled and linear-features, "
                             "fixed Θ(0) and time-dependent Θ(t))")
    parser.add_argument("--attributes", default=None, metavar="FILE",
                        help="latent attributes chosen for this analysis, int (N, F) in a .npy or text file; they "
                             "override the run's stored attributes, with a message")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of the text report (--compare/--kernel: "
                             "{best, reason, models: [{name, family, params, r2, flags, ...}]}); the files are "
                             "written as usual")
    parser.add_argument("--format", default="png", choices=("png", "pdf", "svg"),
                        help="figure file format (default png; pdf and svg are vector)")
    parser.add_argument("--out-dir", default=".", help="directory for the outputs (default: current)")
    parser.add_argument("--criterion", default="aic_eff", choices=("aic_eff", "cv"),
                        help="with --compare: how the best model is chosen — aic_eff (default: ESS-corrected AIC) "
                             "or cv (leave-one-block-out cross-validation: blocks 2-4 of 4 blocks of checkpoints held "
                             "out in turn; refits every family 3 times: slower)")
    parser.add_argument("--max-time", type=float, default=120.0, help="seconds per fit before keeping the best so far")
    parser.add_argument("--method", default=None,
                        help="integrator of the predictions, any method of ufm.solve (default auto: an explicit "
                             "pair that switches to a stiff Rosenbrock method where a prediction turns stiff; "
                             "docs/bridge.md, Speed)")


def _list(text):
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def main(args) -> int:
    import ufm.bridge

    from ._common import announce_first_compile, load_run, run_stem

    if not args.max_time > 0:
        print(f"ufm fit: --max-time: expected seconds > 0, got {args.max_time:g}", file=sys.stderr)
        return 2
    if args.method is not None:
        from ..integration import resolve_method
        try:
            resolve_method(args.method)
        except ValueError as exc:
            print(f"ufm fit: --method: {exc}", file=sys.stderr)
            return 2
    run = load_run(args.run, args.tag, "ufm fit", attributes=args.attributes)
    if run is None:
        return 2
    fixed = {}
    for item in args.fixed:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            print(f"ufm fit: --fixed: expected NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        try:
            fixed[name.strip()] = float(value)
        except ValueError:
            print(f"ufm fit: --fixed {item}: the value {value.strip()!r} of {name.strip()} is not a number",
                  file=sys.stderr)
            return 2
    import matplotlib
    matplotlib.use("Agg")
    stem = os.path.join(args.out_dir, run_stem(args.run))
    os.makedirs(args.out_dir, exist_ok=True)
    kw = dict(init=args.init, max_time=args.max_time)
    if args.method is not None:
        kw["method"] = args.method
    if args.time is not None:
        kw["time"] = args.time
    announce_first_compile("ufm fit")
    try:
        if args.compare or args.kernel:
            obs = _list(args.observables)
            if args.kernel:
                result = ufm.bridge.kernel_prediction(run, obs, **kw)
                suffix = "_kernel"
            else:
                result = ufm.bridge.compare(run, None, obs, criterion=args.criterion, **kw)
                suffix = "_compare"
            report = result.report()
            payload = result.as_dict()
        else:
            result = ufm.bridge.fit(run, args.model, _list(args.params), _list(args.observables),
                                    coupling=args.coupling, fixed=fixed or None, degree=args.degree, layers=args.layers,
                                    **kw)
            report = result.report()
            payload = {"run": str(run.source), **result.summary_row(), "params": result.params_,
                       "stderr": result.stderr_, "values": result.values_, "r2": result.r2_,
                       "bounds": result.bounds_, "at_bounds": result.at_bounds_,
                       "success": result.success_, "message": result.message_, "wall_time": result.wall_time_,
                       "conventions": result.conventions()}
            suffix = "_fit"
    except (TypeError, ValueError) as exc:
        print(f"ufm fit: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(_finite(payload), indent=1, default=_json, allow_nan=False)
    print(text if args.json else report)
    with open(stem + suffix + ".txt", "w", encoding="utf-8") as fh:
        fh.write(report + "\n")
    with open(stem + suffix + ".json", "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    from .. import plot
    with plot.style():
        fig = result.plot()
        fig.savefig(stem + suffix + "." + args.format)
    print(f"\nwrote {stem + suffix}.txt, .json, .{args.format}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _finite(obj):
    """The payload with non-finite floats as None (JSON has no NaN), recursively."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json(obj):
    try:
        import numpy as np
        if isinstance(obj, np.floating):
            return float(obj) if np.isfinite(obj) else None
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(type(obj).__name__)
