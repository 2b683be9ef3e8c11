"""File helpers shared by every module that writes results: atomic writes and JSON encoding."""

from __future__ import annotations

import os
import tempfile

import numpy as np

# mkstemp creates files readable by the owner only; results get the mode a plain open() gives
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def atomic_write(path, write) -> str:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path`` (atomic on POSIX).

    A reader never sees a half-written file, and a crash leaves no partial file behind: the
    temporary file lives in the destination folder (same file system) and is removed on error.

    Arguments:
        path: destination file; its folder is created if missing.
        write: callable writing the complete file to the path it is given.
    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp" + suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def json_default(obj):
    """``json.dump(default=...)`` for numpy scalars and arrays."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_text(path, text: str) -> str:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    return atomic_write(path, write)


def load_npy(path, allow_pickle: bool = False):
    """``numpy.load`` of a file path that never leaks the open file.

    numpy opens the file itself and, when the zip directory of an ``.npz`` is corrupt, raises
    without closing it (a ResourceWarning later). Here the file is opened first and closed on
    any error; an ``NpzFile`` result owns it (closing the archive closes the file).
    """
    fh = open(path, "rb")
    try:
        data = np.load(fh, allow_pickle=allow_pickle)
    except BaseException:
        fh.close()
        raise
    if isinstance(data, np.lib.npyio.NpzFile):
        data.fid = fh            # NpzFile.close() closes its fid
    else:
        fh.close()
    return data
