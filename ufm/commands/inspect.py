"""``ufm inspect RUN``: summary and figure of an exported training run."""

from __future__ import annotations


HELP = "summarise an exported training run (ufm-run): shapes, steps, metrics, transient, kernel; draw a figure"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="a ufm-run file (.npz, .safetensors, .h5) or directory")
    parser.add_argument("--tag", default=None, help="which run of a W_list_<tag>.npy directory")
    parser.add_argument("--figure", default=None,
                        help="where to write the figure, .png/.pdf/.svg (default: <run name>_inspect.png in the current "
                        "directory); missing folders are created")
    parser.add_argument("--no-figure", action="store_true", help="print the summary only")


def main(args) -> int:
    import os
    import sys

    from ._common import check_figure_path, load_run, run_stem

    run = load_run(args.run, args.tag, "ufm inspect")
    if run is None:
        return 2
    path = None
    if not args.no_figure:
        path = args.figure or run_stem(args.run) + "_inspect.png"
        problem = check_figure_path(path, "--figure")
        if problem:
            print(f"ufm inspect: {problem}", file=sys.stderr)
            return 2
    print(run.summary())
    if path is not None:
        import matplotlib
        matplotlib.use("Agg")
        fig = run.plot()
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fig.savefig(path, dpi=110)
        print(f"\nfigure     {path}")
    return 0
