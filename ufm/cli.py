"""The ``ufm`` command: one subcommand per module in :mod:`ufm.commands`.

Each module in ``ufm/commands/`` defines ``HELP`` (one line), ``add_arguments(parser)`` and
``main(args) -> int``; modules are discovered, so a new subcommand is a new file. Heavy imports
(numba, matplotlib, sympy) belong inside ``main`` so that ``ufm --help`` stays instant.

Errors: a subcommand reports what it expects itself; anything it lets through is turned into
one line on stderr (``ufm <command>: <message>``) and exit code 2 for bad input (ValueError,
TypeError, OSError, a format error), 1 for a failed computation or an unexpected error.
``--debug`` (before or after the subcommand) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from . import commands


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``ufm sweep: argument --processes: ...``), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ufm", description="Dynamics of unconstrained-features models: simulate, derive, fit.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"ufm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        p = sub.add_parser(info.name.replace("_", "-"), help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        # SUPPRESS: `ufm --debug run` must not be reset to False by the subcommand's default
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")
        p.set_defaults(_main=mod.main)
    return parser


def _is_user_error(exc: BaseException) -> bool:
    from .errors import IntegrationError
    return isinstance(exc, (ValueError, TypeError, OSError, ImportError)) and not isinstance(exc, IntegrationError)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    prog = f"ufm {args.command}"
    shown = warnings.showwarning
    if not args.debug:
        # a warning is one line too ("ufm inspect: warning: ..."), not file:line plus source, and
        # each text is printed once (the fits of a comparison each warn about the same kernel)
        printed = set()

        def show(message, *rest, **kw):
            if str(message) not in printed:
                printed.add(str(message))
                print(f"{prog}: warning: {message}", file=sys.stderr)
        warnings.showwarning = show
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place where every error becomes one line
        if args.debug:
            raise
        message = str(exc).strip() or type(exc).__name__
        if _is_user_error(exc):
            print(f"{prog}: {message}", file=sys.stderr)
            return 2
        print(f"{prog}: {type(exc).__name__}: {message.splitlines()[0]} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
