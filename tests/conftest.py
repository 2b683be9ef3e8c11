"""Session setup: remove numba disk caches that may hold code older than a jitted source.

numba's cache of a function is keyed by its *defining* file only, but a cached caller inlines
its callees (the ODE driver in ufm/kernels/integrate.py and the optimiser loop in
optimizers.py inline the vector field of fields.py). After an edit to any jitted source,
every cache file older than that edit may therefore run old code. Before
the session (in the xdist controller only) the cache files under the working tree's ``ufm/``
that are older than the newest jitted source are deleted; when no jitted source changed since
the caches were written nothing is touched, so warm runs stay warm. Caches under a
``NUMBA_CACHE_DIR`` elsewhere are not checked (tests/README.md).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ufm"
# a decorator line that jit-compiles the function below it (a line inside a string, such as
# the code generator's template, does not count)
_JIT_DECORATOR = re.compile(r"^\s*@(numba\.)?(njit|jit|generated_jit|vectorize|guvectorize|intrinsic)\b",
                            re.MULTILINE)


def jitted_sources(package: Path) -> list[Path]:
    """The ``.py`` files under ``package`` that define numba-compiled functions."""
    return [p for p in package.rglob("*.py") if _JIT_DECORATOR.search(p.read_text(encoding="utf-8"))]


def _cache_group(path: Path) -> Path:
    """The index file a cache file belongs to: ``f-12.py311.nbi`` for itself and for its data
    files ``f-12.py311.<n>.nbc``."""
    if path.suffix == ".nbc":
        return path.with_name(path.name.rsplit(".", 2)[0] + ".nbi")
    return path


def stale_numba_caches(package: Path) -> list[Path]:
    """Cache files (``*.nbi``, ``*.nbc``) under ``package`` that may hold stale code.

    A cache group (an index and its data files) is stale when any of its files is older than
    the newest jitted source under ``package``: a cache written before an edit of *any* jitted
    file may have inlined the old version of it.

    Arguments:
        package: the package directory to scan (its ``__pycache__`` folders hold the caches).

    Returns:
        The stale files, sorted; empty when no jitted source is newer than any cache.
    """
    sources = jitted_sources(package)
    if not sources:
        return []
    newest = max(p.stat().st_mtime_ns for p in sources)
    groups: dict[Path, list[Path]] = {}
    for path in [*package.rglob("*.nbi"), *package.rglob("*.nbc")]:
        groups.setdefault(_cache_group(path), []).append(path)
    stale = []
    for files in groups.values():
        if min(p.stat().st_mtime_ns for p in files) < newest:
            stale.extend(files)
    return sorted(stale)


def clear_stale_numba_caches(package: Path) -> list[Path]:
    """Delete :func:`stale_numba_caches` (a file already gone is skipped); return what was removed."""
    removed = []
    for path in stale_numba_caches(package):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def pytest_configure(config):
    if hasattr(config, "workerinput"):     # an xdist worker: the controller has already checked
        return
    removed = clear_stale_numba_caches(PACKAGE)
    if removed:
        print(f"conftest: removed {len(removed)} numba cache files older than the newest jitted source "
              f"under {PACKAGE} (they could run pre-edit code)", file=sys.stderr)
