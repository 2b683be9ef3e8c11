"""Printing and bookkeeping shared by the derivation scripts."""

from __future__ import annotations

import sys
import time

import sympy as sp

__all__ = ["Report"]


class Report:
    """Collects a derivation's output and its checks; ``finish()`` returns the exit code.

    Every check is printed with PASS/FAIL; a derivation fails if any check fails.
    """

    def __init__(self, title: str, stream=None):
        self.stream = stream or sys.stdout
        self.failures: list[str] = []
        self.started = time.perf_counter()
        self.line("=" * 78)
        self.line(title)
        self.line("=" * 78)

    def line(self, text: str = "") -> None:
        print(text, file=self.stream)

    def section(self, title: str) -> None:
        self.line()
        self.line(f"-- {title} " + "-" * max(0, 74 - len(title)))

    def show(self, name: str, expr, latex: bool = True) -> None:
        """Pretty-print ``name = expr`` and its LaTeX."""
        self.line(f"{name} =")
        self.line(sp.pretty(expr, use_unicode=True))
        if latex:
            self.line(f"  LaTeX: {sp.latex(expr)}")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        ok = bool(ok)
        self.line(f"[{'PASS' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
        if not ok:
            self.failures.append(name)
        return ok

    def check_zero(self, name: str, expr) -> bool:
        """Symbolic check: simplify(expr) == 0."""
        r = sp.simplify(expr)
        return self.check(f"{name}: simplify(...) == 0", r == 0, "" if r == 0 else f"residual {r}")

    def check_equal(self, name: str, a, b) -> bool:
        return self.check_zero(f"{name}", sp.sympify(a) - sp.sympify(b))

    def verification(self, ver) -> bool:
        """Print a :class:`~ufm.theory.result.Verification` and record it as a check."""
        for text in str(ver).splitlines():
            self.line("  " + text)
        return self.check(ver.name, ver.ok)

    def finish(self) -> int:
        self.line()
        took = time.perf_counter() - self.started
        if self.failures:
            self.line(f"FAILED ({len(self.failures)}): " + "; ".join(self.failures) + f"  [{took:.1f} s]")
            return 1
        self.line(f"ALL CHECKS PASSED  [{took:.1f} s]")
        return 0
