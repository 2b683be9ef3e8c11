"""Helpers shared by the subcommands (not a subcommand itself: the name starts with _)."""

import os
import sys


def load_run(path, tag, prog: str):
    """``ufm.bridge.load`` for a command line: a format error is printed (returns None)."""
    import ufm.bridge

    try:
        return ufm.bridge.load(path, tag=tag)
    except (ufm.bridge.FormatError, ImportError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None


def run_stem(path) -> str:
    """A run's name for output files: its file or folder name without the format suffix."""
    base = os.path.basename(os.path.normpath(path))
    for suffix in (".npz", ".safetensors", ".h5", ".hdf5"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base
