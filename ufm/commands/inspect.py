"""``ufm inspect RUN``: summary and figure of an exported training run."""

from __future__ import annotations


HELP = "summarise an exported training run (ufm-run): shapes, steps, metrics, transient, kernel; draw a figure"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="a ufm-run file (.npz, .safetensors, .h5) or directory")
    parser.add_argument("--tag", default=None, help="which run of a W_list_<tag>.npy directory")
    parser.add_argument("--figure", default=None,
                        help="where to write the figure (default: <run name>_inspect.png in the current directory)")
    parser.add_argument("--no-figure", action="store_true", help="print the summary only")


def main(args) -> int:
    from ._common import load_run, run_stem

    run = load_run(args.run, args.tag, "ufm inspect")
    if run is None:
        return 2
    print(run.summary())
    if not args.no_figure:
        import matplotlib
        matplotlib.use("Agg")
        path = args.figure or run_stem(args.run) + "_inspect.png"
        fig = run.plot()
        fig.savefig(path, dpi=110)
        print(f"\nfigure     {path}")
    return 0
