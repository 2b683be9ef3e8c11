"""Set-up that cannot break: numba's cache lives in a per-user folder, never in the package.

An installed ufm used to write its numba cache into ``site-packages/ufm/kernels/__pycache__``;
``pip uninstall`` left those files, and the leftover folder shadowed a later editable install.
These tests compile one tiny kernel (``theta_piece``, well under a second) in fresh processes.
"""

import glob
import os
import subprocess
import sys

import ufm
from ufm import _numba_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.dirname(os.path.abspath(ufm.__file__))

# numba imported first on purpose: ufm's locator must work whatever the user imported before
COMPILE_ONE = ("import numba, numpy as np, ufm; from ufm.kernels import fields; "
               "print(fields.theta_piece(np.array([0.0, 1.0]), 2.0) == 1)")


def _env(**changes):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "UFM_CACHE_DIR", "NUMBA_DEBUG_CACHE")}
    env.update(changes)
    return env


def _run(code, env):
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return res


def _package_cache_files():
    return glob.glob(os.path.join(PACKAGE, "**", "*.nb[ic]"), recursive=True)


def test_kernels_are_cached_in_the_user_folder_and_loaded_from_it(tmp_path):
    before = set(_package_cache_files())
    env = _env(UFM_CACHE_DIR=str(tmp_path))
    first = _run(COMPILE_ONE, env)
    assert first.stdout.strip() == "True"           # t = 2 lies in the second piece
    folder = _numba_cache.cache_dir_for(os.path.join(PACKAGE, "kernels", "fields.py"), str(tmp_path / "numba"))
    assert glob.glob(os.path.join(folder, "fields.theta_piece-*.nbi")), os.listdir(tmp_path)
    assert set(_package_cache_files()) == before    # nothing written beside the sources
    # a second process loads the compiled code instead of compiling again
    second = _run(COMPILE_ONE, {**env, "NUMBA_DEBUG_CACHE": "1"})
    loaded = [line for line in second.stdout.splitlines() if line.startswith("[cache] data loaded from")]
    assert loaded and all(str(tmp_path) in line for line in loaded), second.stdout
    assert not any(line.startswith("[cache] data saved") for line in second.stdout.splitlines())


def test_an_explicit_numba_cache_dir_wins(tmp_path):
    numba_dir, ufm_dir = tmp_path / "numba-dir", tmp_path / "ufm-dir"
    _run(COMPILE_ONE, _env(NUMBA_CACHE_DIR=str(numba_dir), UFM_CACHE_DIR=str(ufm_dir)))
    assert glob.glob(str(numba_dir / "kernels_*" / "fields.theta_piece-*.nbi"))
    assert not glob.glob(str(ufm_dir / "**" / "*.nbi"), recursive=True)


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr("numba.core.config.CACHE_DIR", "")
    monkeypatch.setenv("UFM_CACHE_DIR", str(tmp_path / "mine"))
    assert _numba_cache.cache_root() == str(tmp_path / "mine" / "numba")
    monkeypatch.delenv("UFM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert _numba_cache.cache_root() == str(tmp_path / "xdg" / "ufm" / "numba")
    monkeypatch.setattr("numba.core.config.CACHE_DIR", str(tmp_path / "numba"))
    assert _numba_cache.cache_root() == str(tmp_path / "numba")


def test_an_unwritable_cache_folder_falls_back_to_the_temp_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _numba_cache._usable_root.cache_clear()
    try:
        assert _numba_cache._usable_root(str(blocker / "numba")) == _numba_cache._fallback_root()
    finally:
        _numba_cache._usable_root.cache_clear()


def test_kernel_entries_are_keyed_by_every_module_of_the_kernel_folder(monkeypatch, tmp_path):
    """numba keys a cache entry by its defining file only; a kernel inlines its siblings, so a
    change to fields.py must invalidate integrate.py's entries too."""
    a, b, other = tmp_path / "integrate.py", tmp_path / "fields.py", tmp_path / "elsewhere.py"
    for f in (a, b, other):
        f.write_text("x = 1\n")
    monkeypatch.setattr(_numba_cache, "_GROUPED", (str(tmp_path),))
    stamp = _numba_cache.source_stamp(str(a))
    b.write_text("x = 2\n")
    assert _numba_cache.source_stamp(str(a)) != stamp
    monkeypatch.setattr(_numba_cache, "_GROUPED", ())
    alone = _numba_cache.source_stamp(str(a))
    b.write_text("x = 3\n")
    assert _numba_cache.source_stamp(str(a)) == alone


def test_kernels_compiled_reports_a_cold_and_a_warm_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UFM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("numba.core.config.CACHE_DIR", "")
    _numba_cache._usable_root.cache_clear()
    fields = os.path.join(PACKAGE, "kernels", "fields.py")
    try:
        assert not _numba_cache.kernels_compiled(fields, "theta_piece")
        _run(COMPILE_ONE, _env(UFM_CACHE_DIR=str(tmp_path)))
        assert _numba_cache.kernels_compiled(fields, "theta_piece")
        assert not _numba_cache.kernels_compiled(fields, "vector_field")
    finally:
        _numba_cache._usable_root.cache_clear()


def test_every_jitted_source_is_in_the_folder_the_locator_groups():
    """The locator's content key covers ufm/kernels only: a jitted function defined elsewhere
    could inline a kernel and keep running pre-edit code from its cache."""
    import re
    from pathlib import Path
    package = Path(_numba_cache.PACKAGE_DIR)
    decorator = re.compile(r"^\s*@(numba\.)?(njit|jit|generated_jit|vectorize|guvectorize|cfunc)\b", re.MULTILINE)
    jitted = [p for p in package.rglob("*.py") if decorator.search(p.read_text(encoding="utf-8"))]
    assert jitted and all(str(p.parent) in _numba_cache._GROUPED for p in jitted), jitted
