"""``ufm run [CONFIG]``: the main job, structure before collapse."""

HELP = "run the structure-before-collapse simulations (default configuration when none is given)"


def add_arguments(parser) -> None:
    parser.add_argument("config", nargs="?", help="TOML configuration (default: the shipped one; "
                        "`ufm run --print-config > my.toml` starts an edited copy)")
    parser.add_argument("--print-config", action="store_true", help="print the default configuration and exit")
    parser.add_argument("--out", help="output folder (default: the configuration's 'out', ufm-output in the "
                        "current directory for the shipped one)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument("--format", default="png", choices=("png", "pdf", "svg"),
                        help="figure file format (default png; pdf and svg are vector, fonts kept as text)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def main(args) -> int:
    import os
    import sys

    from ..experiments import structure_before_collapse as job
    from ._common import announce_first_compile
    from ._progress import Progress

    if args.print_config:
        sys.stdout.write(job._default_text())
        return 0

    try:
        cfg = job.load_config(args.config, out=args.out)
    except ValueError as exc:
        print(f"ufm run: {exc}", file=sys.stderr)
        return 2
    out = args.out or cfg.out
    if not args.quiet:
        print(f"ufm run: {cfg.source if args.config else 'the default configuration'} -> {os.path.abspath(out)}",
              file=sys.stderr)
        announce_first_compile("ufm run")
    progress = None if args.quiet else Progress(sys.stderr)
    try:
        summary = job.run(cfg, progress=progress, figures=not args.no_figures, figure_format=args.format)
    finally:
        if progress is not None:
            progress.close()
    print(job.results_markdown(summary))
    what = "Figures, summary.json" if summary["figures"] else "summary.json"
    print(f"{what}, results.md and trajectories/ are in {out}/")
    for path in summary["figures"]:
        print(f"  {path}")
    return 0
