"""Where numba keeps ufm's compiled kernels: a per-user cache directory, never the package.

numba's default for ``cache=True`` is the ``__pycache__`` folder beside each source file. For
an installed ufm that is inside ``site-packages``: the files are not pip's, so ``pip
uninstall`` leaves them behind, and the leftover ``site-packages/ufm/`` folder then shadows a
later editable install (``import ufm`` finds an empty namespace package). ufm therefore puts a
cache locator of its own in front of numba's, for ufm's source files only:

* ``NUMBA_CACHE_DIR`` set (numba's own switch): numba's locator is used, unchanged;
* else ``UFM_CACHE_DIR/numba`` when ``UFM_CACHE_DIR`` is set;
* else the per-user cache folder: ``$XDG_CACHE_HOME/ufm/numba`` or ``~/.cache/ufm/numba``
  (``~/Library/Caches/ufm/numba`` on macOS, ``%LOCALAPPDATA%\\ufm\\cache\\numba`` on Windows);
* if that folder cannot be written, ``<temp dir>/ufm-<user>/numba``.

Inside it each source folder has its own sub-folder (numba's naming: folder name + hash of
its path), so installations and source trees never share entries. A kernel module's entries
are also keyed by the contents of every module in its folder (numba keys only by the
defining file, so a kernel compiled against an older ``fields.py`` would otherwise be reused
after an upgrade). The locator is consulted when a function is decorated, so it works whether
or not numba was imported before ufm; :func:`install` must run before ``ufm.kernels`` is
imported (``ufm/__init__.py`` does it first).
"""

from __future__ import annotations

import functools
import getpass
import glob
import hashlib
import os
import sys
import tempfile

__all__ = ["install", "cache_root", "cache_dir_for", "kernels_compiled", "KERNELS_DIR"]

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
KERNELS_DIR = os.path.join(PACKAGE_DIR, "kernels")
#: folders whose modules compile together: a change to any module invalidates all of them
_GROUPED = (KERNELS_DIR,)


def _user_cache_home() -> str:
    if os.environ.get("XDG_CACHE_HOME"):
        return os.environ["XDG_CACHE_HOME"]
    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Caches")
    if os.name == "nt":
        return os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    return os.path.join(home, ".cache")


def _fallback_root() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name (containers): any stable name will do
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"ufm-{user}", "numba")


def cache_root() -> str:
    """The folder ufm's numba cache lives in (not created here).

    ``NUMBA_CACHE_DIR`` when set, else ``UFM_CACHE_DIR/numba``, else the per-user cache folder
    (see the module docstring).
    """
    if _numba_cache_dir():
        return _numba_cache_dir()
    if os.environ.get("UFM_CACHE_DIR"):
        return os.path.join(os.path.expanduser(os.environ["UFM_CACHE_DIR"]), "numba")
    base = _user_cache_home()
    return os.path.join(base, "ufm", "cache", "numba") if os.name == "nt" else os.path.join(base, "ufm", "numba")


def _numba_cache_dir() -> str:
    try:
        from numba.core import config
    except ImportError:  # pragma: no cover - numba is a dependency
        return os.environ.get("NUMBA_CACHE_DIR", "")
    return config.CACHE_DIR or ""


def _subpath(py_file: str) -> str:
    """numba's sub-folder name for a source file: its folder's name and a hash of the folder's path."""
    folder = os.path.dirname(os.path.abspath(py_file))
    return "_".join([os.path.basename(folder), hashlib.sha1(folder.encode()).hexdigest()])


def cache_dir_for(py_file: str, root: str | None = None) -> str:
    """The folder holding the cache entries of the functions defined in ``py_file``."""
    return os.path.join(root or cache_root(), _subpath(py_file))


def _group(py_file: str) -> tuple[str, ...]:
    folder = os.path.dirname(os.path.abspath(py_file))
    if folder in _GROUPED:
        return tuple(sorted(glob.glob(os.path.join(folder, "*.py"))))
    return (os.path.abspath(py_file),)


@functools.lru_cache(maxsize=None)
def _hash_files(stats: tuple) -> str:
    h = hashlib.sha256()
    for path, _mtime, _size in stats:
        h.update(path.encode())
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def source_stamp(py_file: str) -> str:
    """Hash of the contents of ``py_file`` and of the modules compiled with it (its folder,
    for ``ufm/kernels``): the cache entries of ``py_file`` are valid while it is unchanged."""
    stats = []
    for path in _group(py_file):
        st = os.stat(path)
        stats.append((path, st.st_mtime_ns, st.st_size))   # re-hash when a file changes in-process
    return _hash_files(tuple(stats))


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _usable_root(preferred: str) -> str | None:
    for root in (preferred, _fallback_root()):
        if _writable(root):
            return root
    return None


def kernels_compiled(py_file: str | None = None, function: str = "integrate") -> bool:
    """Whether compiled code for ``function`` of ``py_file`` (default: ``integrate`` of
    ``ufm/kernels/integrate.py``, the driver every solve uses) is in the cache and current, i.e.
    whether its first call in this process loads rather than compiles. Used to announce a
    first compile; False when unsure."""
    from numba.core import config
    if config.DISABLE_JIT:
        return True
    py_file = py_file or os.path.join(KERNELS_DIR, "integrate.py")
    root = cache_root() if _numba_cache_dir() else _usable_root(cache_root())
    if root is None:
        return False
    stem = os.path.splitext(os.path.basename(py_file))[0]
    index_files = glob.glob(os.path.join(cache_dir_for(py_file, root), f"{stem}.{function}-*.nbi"))
    if _numba_cache_dir():
        return bool(index_files)   # numba's own locator and stamps: presence is the best we can tell
    import pickle

    import numba
    stamp = source_stamp(py_file)
    for path in index_files:
        try:
            with open(path, "rb") as fh:
                version = pickle.load(fh)
                stored, overloads = pickle.loads(fh.read())
        except Exception:  # noqa: BLE001 - an unreadable index is a cold cache
            continue
        if version == numba.__version__ and stored == stamp and overloads:
            return True
    return False


def _locator_class():
    from numba.core import caching

    base = caching._CacheLocator
    mixin = caching._SourceFileBackedLocatorMixin

    class UfmCacheLocator(mixin, base):
        """numba cache locator for ufm's own source files: the per-user cache folder."""

        def __init__(self, py_func, py_file, root):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = cache_dir_for(py_file, root)

        def get_cache_path(self):
            return self._cache_path

        def get_source_stamp(self):
            return source_stamp(self._py_file)

        @classmethod
        def from_function(cls, py_func, py_file):
            if _numba_cache_dir():
                return None            # NUMBA_CACHE_DIR given: numba's own locator honours it
            path = os.path.abspath(py_file)
            if not path.startswith(PACKAGE_DIR + os.sep) or not os.path.exists(path):
                return None            # not ufm's code: numba's usual locators decide
            root = _usable_root(cache_root())
            if root is None:
                return None
            self = cls(py_func, path, root)
            try:
                self.ensure_cache_path()
            except OSError:
                return None
            return self

    return UfmCacheLocator


def install() -> None:
    """Put ufm's locator first in numba's list (once). Harmless for code outside ufm.

    The locator list is numba's internal API; should a numba release rename it, ufm falls back
    to numba's public switch (``NUMBA_CACHE_DIR`` for this process), which keeps the cache out
    of the package too but also moves the caches of other numba code.
    """
    from numba.core import caching, config
    try:
        impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
        classes = impl._locator_classes
        locator = _locator_class()
    except AttributeError:  # pragma: no cover - a numba without these internals
        if not config.CACHE_DIR:
            root = _usable_root(cache_root())
            if root is not None:
                os.environ["NUMBA_CACHE_DIR"] = config.CACHE_DIR = root
        return
    if not any(getattr(c, "__name__", "") == "UfmCacheLocator" for c in classes):
        classes.insert(0, locator)
