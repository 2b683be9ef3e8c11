"""``ufm inspect RUN``: summary, verdict and figure of an exported training run."""

from __future__ import annotations


HELP = ("summarise an exported training run (ufm-run): shapes, steps, metrics, the early/late verdict with the numbers "
        "behind it, the kernel; draw a figure")


def add_arguments(parser) -> None:
    parser.add_argument("run", help="a ufm-run file (.npz, .safetensors, .h5) or directory")
    parser.add_argument("--tag", default=None, help="which run of a W_list_<tag>.npy directory")
    parser.add_argument("--attributes", default=None, metavar="FILE",
                        help="latent attributes chosen for this analysis, int (N, F) in a .npy or text file (one row "
                             "per context); they override the run's stored attributes, with a message")
    parser.add_argument("--figure", default=None,
                        help="where to write the figure, .png/.pdf/.svg (default: <run name>_inspect.png in the current "
                        "directory); missing folders are created")
    parser.add_argument("--no-figure", action="store_true", help="print the summary only")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (run, shapes, verdict, metrics at the first/last checkpoints) "
                             "instead of the text summary; no figure unless --figure is given")


def main(args) -> int:
    import json
    import os
    import sys

    from ._common import check_figure_path, load_run, run_stem

    run = load_run(args.run, args.tag, "ufm inspect", attributes=args.attributes)
    if run is None:
        return 2
    path = None
    if not args.no_figure and (not args.json or args.figure):
        path = args.figure or run_stem(args.run) + "_inspect.png"
        problem = check_figure_path(path, "--figure")
        if problem:
            print(f"ufm inspect: {problem}", file=sys.stderr)
            return 2
    try:
        verdict = run.verdict()
    except ValueError as exc:
        print(f"ufm inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        from .fit import _finite
        print(json.dumps(_finite(run.inspect_dict()), indent=1, default=_json_default, allow_nan=False))
    else:
        print(run.summary())
        print("")
        print(verdict.report())
    if path is not None:
        import matplotlib
        matplotlib.use("Agg")
        from .. import plot
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with plot.style():                  # the format follows the file name's extension
            run.plot().savefig(path)
        if not args.json:
            print(f"\nfigure     {path}")
    return 0


def _json_default(obj):
    import numpy as np
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj).__name__)
