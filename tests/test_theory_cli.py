"""`ufm derive` and the derivations folder."""

import os

import pytest

import ufm.cli
from ufm.theory import derivations as D

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_derive_list(capsys):
    assert ufm.cli.main(["derive", "--list"]) == 0
    out = capsys.readouterr().out
    for name in D.names():
        assert name in out


def test_every_registered_derivation_has_a_thin_script_and_a_module():
    import importlib
    scripts = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "derivations")) if f.endswith(".py"))
    assert scripts == sorted(D.names())
    for name in D.names():
        with open(os.path.join(ROOT, "derivations", name + ".py"), encoding="utf-8") as fh:
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
        assert len(lines) <= 3 and f'main("{name}")' in lines[-1]
        assert callable(importlib.import_module(f"ufm.theory.derivations.{name}").run)


def test_derive_runs_one_and_rejects_unknown(capsys):
    assert ufm.cli.main(["derive", "etf_spectra"]) == 0
    assert "ALL CHECKS PASSED" in capsys.readouterr().out
    assert ufm.cli.main(["derive", "no_such_thing"]) == 2
    with pytest.raises(KeyError):
        D.main("no_such_thing")
