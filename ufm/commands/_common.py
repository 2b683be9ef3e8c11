"""Helpers shared by the subcommands (not a subcommand itself: the name starts with _)."""

import sys


def load_run(path, tag, prog: str):
    """``ufm.bridge.load`` for a command line: a format error is printed (returns None)."""
    import ufm.bridge

    try:
        return ufm.bridge.load(path, tag=tag)
    except (ufm.bridge.FormatError, ImportError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
