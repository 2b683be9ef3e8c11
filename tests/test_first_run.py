"""A first ``ufm run``: it says when kernels compile, its progress moves, its figures mark only
real transients."""

import io
import os
import time

import pytest

from ufm import _numba_cache
from ufm.commands import _common
from ufm.commands._progress import Progress
from ufm.experiments import structure_before_collapse as job

# a setting whose standard UFM has a gap peak above the collapse threshold (0.02) but inside
# the noise band (the table's "no transient"): the case overview.png used to mark anyway
SETTINGS = """
d = 32
t_min = 1e-2
t_max = 1e4
saves = 41
snapshots = [1, 100]

[[settings]]
name = "hierarchy 2^3"
setting = "hierarchy"
branching = 2
depth = 3
"""


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    """Run the job with figures, recording what it passes to plot.metric_curves (the figures are
    built but not rendered: the test is on the data, and rendering is most of the job's time)."""
    from matplotlib.figure import Figure

    from ufm import plot
    folder = tmp_path_factory.mktemp("first-run")
    (folder / "cfg.toml").write_text(SETTINGS)
    calls = []
    original, savefig = plot.metric_curves, Figure.savefig

    def record(t, curves, ax=None, **kw):
        calls.append({"curves": curves, **kw})
        return original(t, curves, ax=ax, **kw)
    plot.metric_curves = record
    Figure.savefig = lambda self, path, **kw: open(path, "wb").close()
    try:
        summary = job.run(job.load_config(folder / "cfg.toml"), out=str(folder / "out"))
    finally:
        plot.metric_curves, Figure.savefig = original, savefig
    return summary, calls


def test_the_figures_mark_only_what_the_table_calls_a_transient(plotted):
    summary, calls = plotted
    table = job.results_markdown(summary)
    overview = [c for c in calls if any(k.endswith(" standard") for k in c["curves"])]
    assert len(overview) == 1                       # the overview's gap panel
    marked = set(overview[0]["summaries"])
    for name, s in summary["settings"].items():
        std, cpl = s["standard"], s["coupled"]
        # the precondition that made the old figure wrong: a standard peak above the threshold
        assert std["peak_gap"] > summary["config"]["threshold"] and not std["transient"], name
        assert f"| {name} | {s['N']} | {s['init_noise']:.3f} | standard |" in table
        assert f"{name} standard" not in marked
        assert cpl["transient"] and f"{name} coupled" in marked
    per_setting = [c for c in calls if set(c["curves"]) == {"standard", "coupled"} and c.get("summaries") is not None]
    assert len(per_setting) == len(summary["settings"])
    for c in per_setting:
        assert set(c["summaries"]) == {"coupled"}


def test_progress_counts_every_unit_of_work(plotted, tmp_path):
    summary, _ = plotted
    cfg = job.load_config(os.path.join(os.path.dirname(summary["figures"][0]), "..", "cfg.toml"))
    # one unit per integration and per figure: the figure run wrote this many files
    assert job.work_units(cfg) == 2 + len(summary["figures"])
    events = []

    class Recorder:
        def __call__(self, msg):
            events.append(("say", msg))

        def set_total(self, n):
            events.append(("total", n))

        def stage(self, text):
            events.append(("stage", text))

        def advance(self):
            events.append(("advance", None))
    job.run(cfg, out=str(tmp_path / "out"), progress=Recorder(), figures=False)
    total = [v for k, v in events if k == "total"]
    assert total == [job.work_units(cfg, figures=False)] == [2]
    assert sum(k == "advance" for k, _ in events) == 2
    stages = [v for k, v in events if k == "stage"]
    assert stages == ["hierarchy 2^3: standard UFM", "hierarchy 2^3: coupled UFM"]


def test_status_line_moves_while_a_stage_runs():
    out = io.StringIO()
    p = Progress(out, interactive=True, refresh=0.05)
    p.set_total(4)
    p.stage("factorial 3x3: standard UFM")
    time.sleep(0.3)                                  # e.g. numba compiling inside one call
    first = out.getvalue()
    time.sleep(1.1)
    p.advance()
    p("a result")
    p.close()
    text = out.getvalue()
    redraws = first.count("\r\x1b[K")
    assert redraws >= 3                              # the ticker redrew while nothing else happened
    assert "[#####...............] 1/4 factorial 3x3: standard UFM (1 s)" in text
    assert "a result\n" in text and text.endswith("\r\x1b[K")   # the status line is removed at the end


def test_plain_lines_with_a_heartbeat_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(out, interactive=False, heartbeat=0.2, refresh=0.05)
    p("starting")
    p.stage("factorial 3x3: standard UFM")
    time.sleep(0.7)
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and lines[0].endswith("] starting")
    beats = [line for line in lines if "still running: factorial 3x3: standard UFM" in line]
    assert len(beats) >= 2


def test_a_cold_cache_is_announced_once_with_what_why_and_how_long(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(_numba_cache, "kernels_compiled", lambda *a, **k: False)
    assert _common.announce_first_compile("ufm run", out)
    msg = out.getvalue()
    assert msg.count("\n") == 1
    for words in ("numba compiles", "first run", "a minute", "once", _numba_cache.cache_root()):
        assert words in msg
    monkeypatch.setattr(_numba_cache, "kernels_compiled", lambda *a, **k: True)
    out = io.StringIO()
    assert not _common.announce_first_compile("ufm run", out) and out.getvalue() == ""
