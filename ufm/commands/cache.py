"""``ufm cache``: where numba keeps ufm's compiled kernels; ``--clear`` empties it."""

from __future__ import annotations

HELP = "show where ufm's compiled numba kernels are cached (and whether they are); --clear removes them"


def add_arguments(parser) -> None:
    parser.add_argument("--clear", action="store_true",
                        help="delete the cached kernels of this ufm installation (they are recompiled on next use)")


def main(args) -> int:
    import glob
    import os
    import shutil

    from .. import _numba_cache as cache

    root = cache.cache_root()
    folders = sorted({cache.cache_dir_for(path, root)
                      for path in glob.glob(os.path.join(cache.PACKAGE_DIR, "**", "*.py"), recursive=True)})
    present = [f for f in folders if os.path.isdir(f)]
    files = [os.path.join(f, n) for f in present for n in os.listdir(f) if n.endswith((".nbi", ".nbc"))]
    if args.clear:
        for folder in present:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"removed {len(files)} cached file(s) of this installation from {root}")
        return 0
    size = sum(os.path.getsize(f) for f in files)
    print(f"cache folder   {root}  (set UFM_CACHE_DIR, or NUMBA_CACHE_DIR, to move it)")
    print(f"this install   {len(files)} file(s), {size / 2 ** 20:.1f} MiB in {len(present)} folder(s)")
    print(f"compiled       {'yes' if cache.kernels_compiled() else 'no: the first solve compiles them (about a minute, once)'}")
    return 0
