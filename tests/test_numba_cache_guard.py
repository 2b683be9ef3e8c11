"""The conftest guard against stale numba caches, on a fake package tree."""

from __future__ import annotations

import os

from conftest import PACKAGE, clear_stale_numba_caches, jitted_sources, stale_numba_caches

T0 = 1_700_000_000          # an arbitrary epoch second; files are dated relative to it


def _write(path, text="", age=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    os.utime(path, (T0 + age, T0 + age))
    return path


def _tree(tmp_path):
    """pkg/kernels/a.py (jitted), pkg/kernels/b.py (jitted, calls a), pkg/plain.py (no numba,
    but mentions "@njit" inside a string), and one cache group per jitted function."""
    pkg = tmp_path / "pkg"
    _write(pkg / "kernels" / "a.py", "from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x\n", age=0)
    _write(pkg / "kernels" / "b.py", "import numba\n\n@numba.njit(cache=True)\ndef g(x):\n    return f(x)\n", age=0)
    _write(pkg / "plain.py", 'TEMPLATE = ["@njit(cache=True)", "def h(): pass"]\n', age=0)
    cache = pkg / "kernels" / "__pycache__"
    a = [_write(cache / "a.f-3.py311.nbi", age=10), _write(cache / "a.f-3.py311.1.nbc", age=10)]
    b = [_write(cache / "b.g-3.py311.nbi", age=10), _write(cache / "b.g-3.py311.1.nbc", age=10),
         _write(cache / "b.g-3.py311.2.nbc", age=10)]
    return pkg, a, b


def test_only_files_with_jit_decorators_count_as_jitted_sources(tmp_path):
    pkg, _, _ = _tree(tmp_path)
    assert sorted(p.name for p in jitted_sources(pkg)) == ["a.py", "b.py"]
    # the real package: the kernel modules with jitted code (not layout.py or groups.py)
    names = sorted(str(p.relative_to(PACKAGE)) for p in jitted_sources(PACKAGE))
    assert names == ["kernels/expfn.py", "kernels/fields.py", "kernels/integrate.py", "kernels/optimizers.py",
                     "kernels/reduced.py", "kernels/rosenbrock.py", "kernels/sweep.py", "kernels/tangent.py"]


def test_caches_newer_than_every_jitted_source_are_kept(tmp_path):
    pkg, a, b = _tree(tmp_path)
    assert stale_numba_caches(pkg) == []
    # editing a file without jitted code (even one that mentions @njit in a string) keeps them
    os.utime(pkg / "plain.py", (T0 + 100, T0 + 100))
    assert clear_stale_numba_caches(pkg) == []
    assert all(p.exists() for p in a + b)


def test_an_edited_jitted_source_makes_every_older_cache_stale(tmp_path):
    """Editing a.py invalidates b's cache too: b.g may have inlined a.f."""
    pkg, a, b = _tree(tmp_path)
    os.utime(pkg / "kernels" / "a.py", (T0 + 20, T0 + 20))
    # numba recompiled b.g after the edit (its index and one data file rewritten) but an older
    # data file of the group remains: the group counts as stale as a whole
    os.utime(b[0], (T0 + 30, T0 + 30))
    os.utime(b[1], (T0 + 30, T0 + 30))
    assert stale_numba_caches(pkg) == sorted(a + b)
    removed = clear_stale_numba_caches(pkg)
    assert removed == sorted(a + b)
    assert not any(p.exists() for p in a + b)
    assert (pkg / "kernels" / "a.py").exists() and (pkg / "plain.py").exists()
    # a second run finds nothing left to do
    assert clear_stale_numba_caches(pkg) == []


def test_fresh_groups_survive_next_to_stale_ones(tmp_path):
    pkg, a, b = _tree(tmp_path)
    os.utime(pkg / "kernels" / "b.py", (T0 + 20, T0 + 20))
    for p in b:                         # b recompiled after its edit, a not yet
        os.utime(p, (T0 + 30, T0 + 30))
    assert clear_stale_numba_caches(pkg) == sorted(a)
    assert all(p.exists() for p in b) and not any(p.exists() for p in a)
