"""Structure before collapse (issue 3): the phenomenon, asserted on small fast configurations,
and the `ufm run` job end to end."""

import json
import os

import numpy as np
import pytest

import independent
import ufm
from ufm.cli import main as cli_main
from ufm.experiments import structure_before_collapse as job

CFG = job.load_config()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def settings_runs():
    return {spec["name"]: job.run_setting(spec, CFG) for spec in CFG.settings}


@pytest.mark.parametrize("name", ["factorial 3x3", "hierarchy 2^3"])
def test_coupled_gap_peaks_then_collapses(settings_runs, name):
    """Measured: peaks 0.75 (factorial) and 1.98 (hierarchy); at the end |gap| ~1e-16 and the
    ETF distance 6e-10 and 1.7e-9."""
    s = settings_runs[name]["summary"]["coupled"]
    assert s["peak_gap"] > 0.4
    assert s["collapsed"] and abs(s["final_gap"]) < 1e-13
    assert s["final_etf_distance"] < 1e-8


def test_hierarchy_similarity_follows_the_tree_at_the_peak(settings_runs):
    tr = settings_runs["hierarchy 2^3"]["coupled"]
    cos = job._relation_cosines_at_peak(tr, CFG.threshold)
    # deeper common ancestor -> more similar features (levels 2 > 1 > 0 = root only)
    assert cos["LCA at level 2"] > cos["LCA at level 1"] > cos["LCA at level 0"]
    assert cos["LCA at level 2"] - cos["LCA at level 0"] > 1.5     # measured 0.9998 − (−0.991)


@pytest.mark.parametrize("spec", CFG.settings, ids=[s["name"] for s in CFG.settings])
def test_standard_ufm_gap_stays_at_init_noise_level(spec):
    """Over five seeds the standard UFM's |gap| stays within job.NOISE_BAND = 4σ of the init noise
    σ (it measured <= 3.3σ), while the coupled UFM's peak exceeds 8σ (it measured >= 10σ)."""
    problem = job.build_problem(spec)
    standard, coupled = job.models_for(problem, spec, CFG.lam, CFG.beta)
    sigma = job.init_noise(problem, CFG.d, CFG.init_scale)
    for seed in range(5):
        x0 = standard.init(CFG.d, scale=CFG.init_scale, seed=seed)
        gs = ufm.solve(standard, x0, CFG.times, save="gram_H").metric("semantic_gap")
        gc = ufm.solve(coupled, x0, CFG.times, save="gram_H").metric("semantic_gap")
        assert np.abs(gs).max() < job.NOISE_BAND * sigma, (seed, np.abs(gs).max() / sigma)
        assert gc.max() > 8 * sigma, (seed, gc.max() / sigma)


def test_collapse_time_scales_like_one_over_lambda_and_lambda_zero_does_not_collapse():
    cfg = job.load_config(scaling={"setting": "factorial 3x3", "lambdas": [1e-2, 1e-3, 1e-4, 0.0], "t_max": 5e5})
    sc = job.scaling_study(cfg)
    rows = {r["lambda"]: r for r in sc["rows"]}
    times = [rows[lam]["t_collapse"] for lam in (1e-2, 1e-3, 1e-4)]
    assert times[0] < times[1] < times[2]
    assert -1.2 < sc["slope"] < -0.8, sc["slope"]    # measured −0.92 with the default configuration
    assert not rows[0.0]["collapsed"] and rows[0.0]["final_gap"] > 0.5


def test_width_below_k_minus_one_never_reaches_the_etf():
    cfg = job.load_config(phase={"setting": "factorial 3x3", "widths": [2, 4, 6, 8, 16], "t_max": 1e5})
    wd = job.width_study(cfg)
    K = wd["K"]
    for r in wd["rows"]:
        if r["d"] < K - 1:
            assert r["final_etf_distance"] > 0.3, r   # the ETF needs K − 1 dimensions (measured >= 0.59)
        else:
            assert r["final_etf_distance"] < 1e-8, r  # measured 1.1e-9 (d = 8), 6.5e-10 (d = 16)


def test_print_config_prints_the_shipped_default(capsys):
    """`ufm run --print-config` prints the configuration `ufm run` uses without one, and that
    text loads to the default configuration (the way to start an edited copy)."""
    from ufm.cli import main
    assert main(["run", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert text == job._default_text()
    assert "[[settings]]" in text and "lambda = 1e-3" in text


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('lamda = 1e-3\n[[settings]]\nsetting = "factorial"\nlevels = [2, 2]\n')
    with pytest.raises(ValueError, match="lamda"):
        job.load_config(bad)
    bad.write_text('[[settings]]\nsetting = "torus"\n')
    with pytest.raises(ValueError, match=r"settings\[0\]: setting: expected one of"):
        job.load_config(bad)
    bad.write_text('[[settings]]\nkind = "factorial"\nlevels = [2, 2]\n')    # the old key name
    with pytest.raises(ValueError, match="the key is called 'setting'"):
        job.load_config(bad)
    bad.write_text('t_max = 0.001\n[[settings]]\nsetting = "factorial"\nlevels = [2, 2]\n')
    with pytest.raises(ValueError, match="t_max"):
        job.load_config(bad)
    bad.write_text("not toml [")
    with pytest.raises(ValueError, match="TOML"):
        job.load_config(bad)
    assert cli_main(["run", str(tmp_path / "missing.toml")]) == 2


SMALL = """
seed = 1
d = 12
init_scale = 1e-3
lambda = 1e-2
beta = 1.0
t_min = 1e-2
t_max = 3e3
saves = 41
snapshots = [1, 30, 3000]

[[settings]]
name = "tiny factorial"
setting = "factorial"
levels = [2, 3]

[scaling]
setting = "tiny factorial"
lambdas = [3e-2, 1e-2]
t_max = 3e3

[phase]
setting = "tiny factorial"
lambdas = [3e-2, 1e-2]
betas = [0.0, 1.0]
widths = [2, 8]
t_max = 3e3
"""


def test_ufm_run_end_to_end(tmp_path, capsys):
    cfg_path = tmp_path / "small.toml"
    cfg_path.write_text(SMALL)
    out = tmp_path / "out"
    assert cli_main(["run", str(cfg_path), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "tiny factorial" in printed and str(out) in printed
    for name in ("overview.png", "grams_tiny_factorial.png", "metrics_tiny_factorial.png", "phase.png",
                 "scaling.png", "summary.json", "results.md"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    # the numbers in the summary are those of the saved trajectories, recomputed here pair by
    # pair from the saved Grams (tests/independent.py shares no code with ufm.metrics); they
    # measured equal to 9e-16 relative (collapse time), 3e-17 (gaps), 1e-16 (ETF distance)
    for model in ("standard", "coupled"):
        tr = ufm.Trajectory.load(out / "trajectories" / f"tiny_factorial_{model}.npz")
        p = tr.problem
        labels = p.labels if p.K < p.N else None
        gap = [independent.semantic_gap(g, p.attributes, labels) for g in tr.gram_H]
        want = independent.transient(tr.t, gap, summary["config"]["threshold"])
        rec = summary["settings"]["tiny factorial"][model]
        for ours, theirs in (("peak_gap", "peak"), ("t_peak", "t_peak"), ("t_collapse", "t_collapse")):
            assert rec[ours] == pytest.approx(want[theirs], rel=1e-14, nan_ok=True), ours
        assert rec["collapsed"] == want["collapsed"]
        assert rec["initial_gap"] == pytest.approx(gap[0], rel=0, abs=1e-15)
        assert rec["final_gap"] == pytest.approx(gap[-1], rel=0, abs=1e-15)
        assert rec["final_etf_distance"] == pytest.approx(independent.etf_distance(tr.gram_H[-1], p.labels),
                                                          rel=0, abs=1e-15)
    assert summary["settings"]["tiny factorial"]["coupled"]["peak_gap"] > 0.3  # the transient, even this small
    assert (out / "results.md").read_text() == job.results_markdown(summary)
    assert np.array(summary["phase"]["peak_gap"]).shape == (2, 2)


def _cells(md: str):
    """Words and numbers of a results block; numbers below 1e-6 (round-off) become '~0'."""
    out = []
    for tok in md.replace("|", " ").replace(",", " ").split():
        try:
            v = float(tok.rstrip(".;"))
        except ValueError:
            out.append(tok)
            continue
        out.append("~0" if abs(v) < 1e-6 else tok)
    return out


def test_readme_results_are_what_ufm_run_prints(tmp_path):
    """The README's results block is the default job's results.md (rerun here), not typed by hand.
    Round-off-level values (< 1e-6, e.g. a final ETF distance of 6e-15) may differ by machine."""
    summary = job.run(job.load_config(), out=str(tmp_path), figures=False)
    text = open(os.path.join(ROOT, "README.md")).read()
    start = text.index("![structure before collapse](docs/figures/overview.png)")
    block = text[start:text.index("Besides the overview", start)].split("\n", 1)[1].strip()
    assert _cells(block) == _cells(job.results_markdown(summary))
