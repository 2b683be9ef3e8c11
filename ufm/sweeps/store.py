"""The ``out=`` directory of a sweep: one record per finished configuration, written atomically.

Layout (``<hash>`` is the configuration's 64-hex-digit hash, see :func:`ufm.sweeps.config_hash`)::

    out/<hash>.npz    the trajectory (ufm.Trajectory.save format; absent for bad input)
    out/<hash>.json   the record: status, error, config columns, summary metrics, info

The trajectory is written first and the record last, each to a temporary name that is then
renamed (``os.replace``), so a record on disk always means a complete configuration: a sweep
killed at any instant leaves only finished configurations (and perhaps stray ``.*.tmp*``
files, which are ignored) and a rerun skips exactly those. A rerun trusts a record only
together with its trajectory: :meth:`Store.trajectory` reads the whole ``.npz`` (every
member's CRC-32 is checked), so a record whose trajectory is missing, truncated or damaged
is run again rather than returned.

The hash names the trajectory (everything that changes an integrated number); the record
also says which summary options its summary metrics were computed with
(``summary_options``), so that a rerun with other ones recomputes them from the trajectory
(see :func:`ufm.sweep`).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from .._io import atomic_write_text, json_default
from ..trajectory import Trajectory

FORMAT = "ufm-sweep-record"
VERSION = 1
_HASH = re.compile(r"^[0-9a-f]{64}$")


def _clean(obj):
    """JSON-safe copy: non-finite floats as strings 'nan' / 'inf' / '-inf'."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if np.isfinite(v) else repr(v)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unclean(obj):
    if isinstance(obj, dict):
        return {k: _unclean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unclean(v) for v in obj]
    if obj in ("nan", "inf", "-inf"):
        return float(obj)
    return obj


class Store:
    """Records of one sweep directory.

    Arguments:
        path: the directory (created if missing).

    Raises:
        ValueError: ``path`` exists and is not a directory.
    """

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"out: {self.path!r} exists and is not a directory")
        os.makedirs(self.path, exist_ok=True)

    def record_path(self, key: str) -> str:
        return os.path.join(self.path, key + ".json")

    def trajectory_path(self, key: str) -> str:
        return os.path.join(self.path, key + ".npz")

    def hashes(self) -> list[str]:
        """Hashes of every finished record, sorted."""
        out = []
        for name in os.listdir(self.path):
            if name.endswith(".json") and _HASH.match(name[:-5]):
                out.append(name[:-5])
        return sorted(out)

    def read(self, key: str) -> dict | None:
        """The record of ``key``, or None if there is none (or it is unreadable)."""
        try:
            with open(self.record_path(key), encoding="utf-8") as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            return None
        if rec.get("format") != FORMAT or rec.get("version") != VERSION:
            return None
        return _unclean(rec)

    def trajectory(self, key: str) -> Trajectory | None:
        """The stored trajectory of ``key``, read completely, or None when the file is
        missing, truncated, damaged (a CRC-32 mismatch) or holds another configuration."""
        try:
            traj = Trajectory.load(self.trajectory_path(key))
        except (OSError, ValueError):
            return None
        return traj if traj.info.get("sweep_hash") == key else None

    def write(self, record: dict, trajectory=None) -> None:
        """Write one configuration: its trajectory (if any), then its record, each atomically.

        Arguments:
            record: the record dict (no arrays; see :mod:`ufm.sweeps.engine`).
            trajectory: a :class:`~ufm.trajectory.Trajectory` or None.
        """
        key = record["hash"]
        if trajectory is not None:
            trajectory.save(self.trajectory_path(key))  # atomic itself (temp file + os.replace)
        self._write_record(record, key + ".npz" if trajectory is not None else None)

    def update(self, record: dict) -> None:
        """Rewrite the record of a configuration whose trajectory is already on disk (e.g.
        with its summary recomputed), atomically; the trajectory file is left as it is."""
        self._write_record(record, record.get("trajectory"))

    def _write_record(self, record: dict, trajectory_name) -> None:
        rec = {k: v for k, v in record.items() if k != "arrays"}
        rec["format"], rec["version"] = FORMAT, VERSION
        rec["trajectory"] = trajectory_name
        atomic_write_text(self.record_path(record["hash"]),
                          json.dumps(_clean(rec), default=json_default, sort_keys=True, indent=1))
