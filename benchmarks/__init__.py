"""Benchmarks of ufm against the tools users would otherwise use (see ``benchmarks/run.py``)."""
