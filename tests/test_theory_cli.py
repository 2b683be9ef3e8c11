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


def test_every_registered_derivation_is_a_script_of_the_derivations_folder():
    """Each registered derivation is one module of the top-level derivations/ folder (installed
    as ufm.theory.derivations), runnable as a script; helpers start with an underscore."""
    import importlib
    scripts = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "derivations"))
                     if f.endswith(".py") and not f.startswith("_"))
    assert scripts == sorted(D.names())
    for name in D.names():
        mod = importlib.import_module(f"ufm.theory.derivations.{name}")
        assert os.path.samefile(mod.__file__, os.path.join(ROOT, "derivations", name + ".py"))
        with open(mod.__file__, encoding="utf-8") as fh:
            assert 'if __name__ == "__main__":' in fh.read(), name


def test_a_derivation_runs_as_a_script():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "derivations", "etf_spectra.py")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ALL CHECKS PASSED" in proc.stdout


def test_derive_runs_one_and_rejects_unknown(capsys):
    assert ufm.cli.main(["derive", "etf_spectra"]) == 0
    assert "ALL CHECKS PASSED" in capsys.readouterr().out
    assert ufm.cli.main(["derive", "no_such_thing"]) == 2
    with pytest.raises(KeyError):
        D.main("no_such_thing")
