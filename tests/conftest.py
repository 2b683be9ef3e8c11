"""Session setup shared by the tests.

Stale numba caches need no guard here: ``ufm/_numba_cache.py`` keys every kernel's cache entry
by the contents of all modules in ``ufm/kernels`` (numba itself keys by the defining file only,
and a cached caller inlines its callees), so an edit to any kernel file invalidates them all;
``tests/test_setup.py`` checks that. A ``NUMBA_CACHE_DIR`` set by hand bypasses ufm's locator
(numba's own rules then apply; see tests/README.md).
"""
