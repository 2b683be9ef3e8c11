"""Import structure: no cycles inside the package's sub-packages, and a light `import ufm`."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ufm"


def _relative_imports(folder: Path) -> dict:
    """module -> modules of the same folder it imports (``from .x import``), anywhere in the
    file: a lazy import inside a function is still a dependency."""
    mods = {p.stem for p in folder.glob("*.py")}
    edges = {m: set() for m in mods}
    for m in mods:
        for node in ast.walk(ast.parse((folder / f"{m}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in mods:
                edges[m].add(node.module)
    edges.pop("__init__", None)
    return edges


def _cycle(edges: dict):
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                return path + [m, n]
            if n not in state:
                found = visit(n, path + [m])
                if found:
                    return found
        state[m] = "done"
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m, [])
            if found:
                return found
    return None


@pytest.mark.parametrize("folder", ["bridge", "sweeps", "theory"])
def test_no_import_cycles_inside_a_subpackage(folder):
    assert _cycle(_relative_imports(PACKAGE / folder)) is None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_import_ufm_pulls_in_no_heavy_dependency():
    """scipy's submodules, sympy and matplotlib load only when used (numba itself imports
    the bare scipy package, which ufm cannot avoid)."""
    code = ("import sys, ufm; heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sympy', 'matplotlib') "
            "or m.startswith(('scipy.special', 'scipy.optimize', 'scipy.integrate', 'scipy.linalg'))); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
