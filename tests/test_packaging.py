"""The package list of pyproject.toml covers the tree, and the derivations folder is importable
as ``ufm.theory.derivations`` (it lives at the top level of the repository)."""

from __future__ import annotations

import pathlib
import tomllib

import ufm.theory.derivations as derivations

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_of_the_tree_is_listed():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ufm").rglob("__init__.py")}
    found |= set(conf["package-dir"])
    assert listed == found


def test_the_derivations_package_is_the_top_level_folder():
    assert pathlib.Path(derivations.__file__).resolve().parent == ROOT / "derivations"
    for name in derivations.names():
        assert (ROOT / "derivations" / f"{name}.py").is_file(), name
