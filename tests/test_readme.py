"""The README's quick start runs as written and prints what it claims."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick_start() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Quick start"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_runs_and_shows_the_transient():
    code = _quick_start()
    assert len([l for l in code.splitlines() if l.strip()]) <= 10
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    summary, etf = res.stdout.strip().splitlines()
    peak = float(re.search(r"peak=([0-9.eE+-]+)", summary).group(1))
    assert peak > 0.5 and "collapsed=True" in summary
    assert float(etf) < 1e-3


def test_cli_lists_subcommands():
    res = subprocess.run([sys.executable, "-m", "ufm", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "run" in res.stdout


def _bridge_snippet() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Real training runs"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_bridge_snippet_runs_from_the_repository_root():
    res = subprocess.run([sys.executable, "-c", _bridge_snippet()], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
    summary, fitted = res.stdout.strip().splitlines()[-2:]
    assert "collapsed=True" in summary and "time_scale" in fitted and "semantic_gap" in fitted


def test_theory_snippet_runs_and_verifies():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Theory"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].endswith("OK")


def _setup_commands() -> list:
    """The indented command lines of the README's set-up section, in order."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Set-up"):text.index("## Quick start")]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_ci_runs_the_readme_setup_commands_as_written():
    """.ci/run must run exactly the README's two set-up commands, in the README's order."""
    readme = _setup_commands()
    assert readme == ['pip install . && ufm run', 'pip install -e ".[test]" && python -m pytest -n 2']
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assigned = dict(re.findall(r"^(SETUP_RUN|SETUP_TEST)='(.*)'$", ci, re.M))
    assert [assigned["SETUP_RUN"], assigned["SETUP_TEST"]] == readme
    # the first runs as a whole; the second is split around the outside-the-repository checks
    order = [ci.index('eval "$SETUP_RUN"'), ci.index('eval "${SETUP_TEST%% && *}"'),
             ci.index("ufm --version"), ci.index('eval "${SETUP_TEST#* && }"')]
    assert order == sorted(order)
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci
