"""Helpers shared by the subcommands (not a subcommand itself: the name starts with _)."""

import os
import sys


def load_run(path, tag, prog: str, attributes: str | None = None):
    """``ufm.bridge.load`` for a command line: a format error is printed (returns None).

    ``attributes``: a .npy or text file of int (N, F) attributes chosen for this analysis; they
    override the stored ones (the override message is printed on stderr)."""
    import warnings

    import numpy as np

    import ufm.bridge

    attrs = None
    if attributes is not None:
        try:
            attrs = np.load(attributes, allow_pickle=False) if attributes.endswith(".npy") else \
                np.loadtxt(attributes, delimiter="," if attributes.endswith(".csv") else None, ndmin=2)
        except (OSError, ValueError) as exc:
            print(f"{prog}: --attributes: cannot read {attributes!r} as an int (N, F) array ({exc})", file=sys.stderr)
            return None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            run = ufm.bridge.load(path, tag=tag, attributes=attrs)
        for w in caught:
            print(f"{prog}: {w.message}", file=sys.stderr)
        return run
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


#: measured on this project's 2-core machine with an empty cache: the first `ufm run` took 48 s
#: in CI (2 min 20 s while the machine was busy), mostly compiling before its first result
COMPILE_ESTIMATE = "about a minute on 2 cores, longer on a busy machine"


def announce_first_compile(prog: str, stream=None, *, module: str = "integrate", function: str = "integrate") -> bool:
    """Say on stderr that numba is about to compile the kernels, when their cache is cold.

    What runs, why it is slow only once, roughly how long, and where the result is kept, so a
    first run does not look hung. ``module``/``function``: the kernel whose cache entry decides
    (default the solver's driver; ``ufm sweep`` runs ``sweep.integrate_many``). Returns whether
    it printed.
    """
    from .. import _numba_cache
    if _numba_cache.kernels_compiled(os.path.join(_numba_cache.KERNELS_DIR, module + ".py"), function):
        return False
    print(f"{prog}: first run of this installation: numba compiles ufm's integration kernels to machine code "
          f"({COMPILE_ESTIMATE}, once); they are cached in {_numba_cache.cache_root()} and later runs start in "
          "seconds", file=stream or sys.stderr, flush=True)
    return True


def check_figure_path(path: str, option: str) -> str | None:
    """Why ``path`` cannot take a figure (unknown suffix, a folder, a file in the way of its
    folder), or None. Checked before any work, so a typo does not cost a run."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    formats = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")
    if os.path.isdir(path):
        return f"{option}: {path!r} is a folder; give a file name such as {os.path.join(path, 'figure.png')!r}"
    if ext not in formats:
        return f"{option}: {path!r}: expected a figure file ending in one of .{', .'.join(formats)}"
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        return f"{option}: cannot create the folder of {path!r}: {parent!r} is a file"
    return None
