"""The ``ufm`` command with bad input: one line on stderr, a non-zero exit code, no traceback
(``--debug`` shows it). Each case here was a traceback, a misleading message or exit code 0."""

import os
import subprocess
import sys
import time

import pytest

from ufm.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_RUN = os.path.join(ROOT, "tests", "data", "transformer_factorial_adamw.npz")

SWEEP_OK = """
[sweep]
t = [1.0, 10.0]
[base]
setting = "factorial"
levels = [2, 2]
d = 4
"""

# every configuration is invalid (levels must be >= 2): each is recorded as failed, none runs
SWEEP_ALL_FAIL = """
[sweep]
t = [1.0, 10.0]
[base]
setting = "factorial"
levels = [1]
d = 4
[grid]
seed = [0, 1, 2]
"""


def one_line_error(capsys, argv, code=2):
    """Run the CLI in-process; return its single stderr line after checking the exit code."""
    assert cli_main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_run_config_with_a_string_for_a_number(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('lambda = "abc"\n[[settings]]\nsetting = "factorial"\nlevels = [2, 2]\n')
    line = one_line_error(capsys, ["run", str(cfg)])
    assert line.startswith("ufm run: ") and "lambda" in line and str(cfg) in line and "real number" in line


@pytest.mark.parametrize("body, words", [
    ('[[settings]]\nsetting = "factorial"\nlevels = [1000, 1000]\n', ("settings[0]", "1,000,000 contexts")),
    ('[[settings]]\nsetting = "factorial"\nlevels = [2, 2]\nsimilarity = "nope"\n', ("settings[0]", "nope")),
    ('snapshots = "x"\n[[settings]]\nsetting = "factorial"\nlevels = [2, 2]\n', ("snapshots", "list")),
    ('[[settings]]\nsetting = "factorial"\nlevels = [2, 2]\n[phase]\nwidths = [0]\n', ("phase.widths[0]",)),
])
def test_run_config_errors_are_found_before_any_work(tmp_path, capsys, body, words):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    started = time.perf_counter()
    line = one_line_error(capsys, ["run", str(cfg), "--out", str(tmp_path / "out")])
    assert time.perf_counter() - started < 5           # no integration ran before the check
    assert all(w in line for w in words), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_binary_config_file_is_named(tmp_path, capsys, command):
    cfg = tmp_path / "binary.toml"
    cfg.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    line = one_line_error(capsys, [command, str(cfg)])
    assert str(cfg) in line and ("TOML" in line or "UTF-8" in line)


def test_inspect_figure_into_a_missing_folder_creates_it(tmp_path, capsys):
    path = tmp_path / "new" / "folder" / "fig.png"
    assert cli_main(["inspect", REAL_RUN, "--figure", str(path)]) == 0
    assert path.stat().st_size > 0
    assert str(path) in capsys.readouterr().out


@pytest.mark.parametrize("name, words", [("fig.xyz", ("--figure", ".png")), ("", ("--figure", "is a folder"))])
def test_inspect_refuses_an_unusable_figure_path_before_loading(tmp_path, capsys, name, words):
    line = one_line_error(capsys, ["inspect", REAL_RUN, "--figure", str(tmp_path / name) if name else str(tmp_path)])
    assert all(w in line for w in words), line


def test_fit_fixed_value_that_is_not_a_number(capsys):
    line = one_line_error(capsys, ["fit", REAL_RUN, "--fixed", "lambda=abc"])
    assert "'abc'" in line and "lambda" in line and "not a number" in line
    assert "expected NAME=VALUE" not in line
    line = one_line_error(capsys, ["fit", REAL_RUN, "--fixed", "lambda"])
    assert "expected NAME=VALUE" in line


def test_fit_negative_max_time_is_refused(capsys, tmp_path):
    line = one_line_error(capsys, ["fit", REAL_RUN, "--max-time", "-5", "--out-dir", str(tmp_path)])
    assert "--max-time" in line and "-5" in line
    assert not list(tmp_path.iterdir())                  # nothing written


def test_fit_unknown_method_is_refused_before_loading(capsys, tmp_path):
    line = one_line_error(capsys, ["fit", REAL_RUN, "--method", "rk99", "--out-dir", str(tmp_path)])
    assert "--method" in line and "rk99" in line and "'auto'" in line and "'dopri5'" in line
    assert not list(tmp_path.iterdir())                  # nothing written


def test_fit_method_reaches_every_fit(monkeypatch, tmp_path, capsys):
    """--method is handed to the fits (compare passes it on to each family's Fit). The stand-in
    records its arguments and stops the command with a ValueError, which the CLI reports."""
    import ufm.bridge
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stand-in stopped here")
    monkeypatch.setattr(ufm.bridge, "compare", fake)
    monkeypatch.setattr(ufm.bridge, "fit", fake)
    for extra in ([], ["--compare"]):
        seen.clear()
        line = one_line_error(capsys, ["fit", REAL_RUN, "--method", "auto", "--out-dir", str(tmp_path), *extra])
        assert "stand-in stopped here" in line and seen["method"] == "auto"
    seen.clear()
    one_line_error(capsys, ["fit", REAL_RUN, "--out-dir", str(tmp_path)])
    assert "method" not in seen and "max_time" in seen   # the Fit default (dopri5) unless asked


@pytest.mark.parametrize("option", ["--processes", "--threads", "--chunk-size"])
def test_sweep_counts_must_be_positive(tmp_path, capsys, option):
    cfg = tmp_path / "ok.toml"
    cfg.write_text(SWEEP_OK)
    with pytest.raises(SystemExit) as info:
        cli_main(["sweep", str(cfg), option, "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "> 0" in err[0]


def test_sweep_where_every_configuration_fails_exits_non_zero(tmp_path, capsys):
    cfg = tmp_path / "fail.toml"
    cfg.write_text(SWEEP_ALL_FAIL)
    assert cli_main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "3 of 3 configuration(s) failed" in captured.err
    assert (tmp_path / "out" / "table.csv").exists()


def test_sweep_unreachable_scheduler_is_one_line_and_quick(tmp_path, capsys):
    pytest.importorskip("distributed")
    cfg = tmp_path / "ok.toml"
    cfg.write_text(SWEEP_OK)
    started = time.perf_counter()
    line = one_line_error(capsys, ["sweep", str(cfg), "--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", "1",
                                   "--out", str(tmp_path / "out")])
    assert time.perf_counter() - started < 20           # measured 3.7 s (was an OSError traceback after 30 s)
    assert "--scheduler" in line and "tcp://127.0.0.1:1" in line
    line = one_line_error(capsys, ["sweep", str(cfg), "--scheduler", "local:abc"])
    assert "local:N" in line


def test_no_figures_does_not_claim_figures(tmp_path, capsys):
    cfg = tmp_path / "small.toml"
    cfg.write_text('d = 6\nt_max = 100\nsaves = 11\n[[settings]]\nname = "tiny"\nsetting = "factorial"\n'
                   'levels = [2, 2]\n')
    assert cli_main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-figures", "--quiet"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "Figures" not in last and "summary.json" in last and str(tmp_path / "out") in last
    assert not list((tmp_path / "out").glob("*.png"))


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    from ufm.commands import cache

    def broken(args):
        raise RuntimeError("something inside broke\nsecond line")
    monkeypatch.setattr(cache, "main", broken)
    line = one_line_error(capsys, ["cache"], code=1)
    assert line == "ufm cache: RuntimeError: something inside broke (rerun with --debug for the traceback)"
    with pytest.raises(RuntimeError):
        cli_main(["--debug", "cache"])
    with pytest.raises(RuntimeError):
        cli_main(["cache", "--debug"])


def test_user_errors_from_the_library_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    line = one_line_error(capsys, ["inspect", str(bad)])
    assert line.startswith("ufm inspect: ") and str(bad) in line


def test_console_script_prints_no_traceback(tmp_path):
    """The installed entry point behaves like the in-process one (a fresh interpreter)."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text('d = "wide"\n[[settings]]\nsetting = "factorial"\nlevels = [2, 2]\n')
    res = subprocess.run([sys.executable, "-m", "ufm", "run", str(cfg)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"ufm run: config {cfg}: d: expected an integer, got 'wide'"]


def test_a_repeated_warning_is_printed_once(monkeypatch, capsys):
    """The fits of one comparison each warn about the same logged kernel: the command line
    prints each warning text once, one line each, and a different text still gets its line."""
    import warnings
    from ufm.commands import cache

    def noisy(args):
        for _ in range(4):
            warnings.warn("the logged kernel is the Euclidean NTK", UserWarning)
        warnings.warn("another warning", UserWarning)
        return 0
    monkeypatch.setattr(cache, "main", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli_main(["cache"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["ufm cache: warning: the logged kernel is the Euclidean NTK", "ufm cache: warning: another warning"]
