"""``ufm derive``: run the symbolic derivations and their numerical confirmations."""

from __future__ import annotations

HELP = "derive analytic results with sympy and check them against the integrators"


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", help="derivation to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the derivations and exit")
    parser.add_argument("--all", action="store_true", help="run every derivation")


def main(args) -> int:
    import sys
    # sympy and numba are imported only here, so that `ufm --help` stays fast
    from ufm.theory import derivations as D
    if args.list:
        width = max(len(n) for n in D.names())
        for n in D.names():
            print(f"{n:<{width}}  {D.describe(n)}")
        return 0
    from ._common import announce_first_compile
    if args.all or args.name in D.REGISTRY:
        announce_first_compile("ufm derive")      # the numerical confirmations integrate
    if args.all:
        failed = [n for n in D.names() if D.main(n) != 0]
        if failed:
            print(f"\nfailed derivations: {', '.join(failed)}", file=sys.stderr)
            return 1
        print(f"\nall {len(D.names())} derivations passed")
        return 0
    if not args.name:
        print("ufm derive: give a derivation NAME, --list or --all", file=sys.stderr)
        return 2
    if args.name not in D.REGISTRY:
        print(f"ufm derive: unknown derivation {args.name!r}; known: {', '.join(D.names())}", file=sys.stderr)
        return 2
    return D.main(args.name)
