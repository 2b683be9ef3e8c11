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
