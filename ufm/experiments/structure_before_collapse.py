"""Structure before collapse: the toolkit's main job (``ufm run``).

For each synthetic setting (contexts with latent attributes, one-hot labels) the standard UFM
and the coupled UFM are integrated from the same small random init with CE and weight decay.
The run measures the semantic transient (peak gap, its time, the collapse time), how the
collapse time scales with λ, and phase diagrams over (λ, β) and over width d; it writes
figures, a JSON summary of every plotted number, a markdown results table and the
trajectories.

The configuration is a TOML file (the default one ships beside this module; ``ufm run
--print-config`` prints it, to start an edited copy); :func:`load_config` documents every key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources

import numpy as np

from .._io import atomic_write_text, json_default
from ..problem_specs import build_problem as _build_problem
from ..problem_specs import normalise_problem

__all__ = ["Config", "load_config", "build_problem", "run_setting", "scaling_study", "width_study",
           "phase_study", "run", "DEFAULT_CONFIG_NAME"]

DEFAULT_CONFIG_NAME = "structure_before_collapse.toml"

@dataclass(frozen=True)
class Config:
    """A validated configuration (see the shipped TOML for the meaning of each key)."""

    out: str = "ufm-output"
    seed: int = 0
    d: int = 32
    init_scale: float = 1e-3
    lam: float = 1e-3
    beta: float = 1.0
    t_min: float = 1e-2
    t_max: float = 1e5
    saves: int = 81
    threshold: float = 0.02
    snapshots: tuple = (0.1, 3, 30, 300, 3000, 1e5)
    settings: tuple = ()
    scaling: dict = field(default_factory=dict)
    phase: dict = field(default_factory=dict)
    source: str = "<default>"

    @property
    def times(self) -> np.ndarray:
        return np.geomspace(self.t_min, self.t_max, self.saves)

    def setting(self, name: str) -> dict:
        for s in self.settings:
            if s["name"] == name:
                return s
        names = ", ".join(repr(s["name"]) for s in self.settings)
        raise ValueError(f"setting: {name!r} is not one of the configured settings ({names})")


def _default_text() -> str:
    return resources.files("ufm.experiments").joinpath(DEFAULT_CONFIG_NAME).read_text()


def load_config(path=None, **overrides) -> Config:
    """Read and validate a configuration.

    Arguments:
        path: a TOML file, or None for the shipped default.
        **overrides: top-level keys to replace (e.g. ``out=...``).

    Top-level keys: out, seed, d, init_scale, lambda, beta, t_min, t_max, saves, threshold,
    snapshots; ``[[settings]]`` tables (``name``, ``setting`` = factorial | hierarchy |
    sequences | balanced with that setting's keys — the problem-spec schema of
    :mod:`ufm.problem_specs`, shared with sweep specs — and ``similarity`` = a similarity of the
    problem); optional
    ``[scaling]`` (setting, lambdas, t_max) and ``[phase]`` (setting, lambdas, betas, widths,
    t_max).

    Raises:
        ValueError: unreadable TOML, unknown keys, bad values — naming the key.
    """
    if path is None:
        text, source = _default_text(), "<default>"
    else:
        source = os.fspath(path)
        try:
            with open(source, "rb") as fh:
                text = fh.read().decode()
        except OSError as exc:
            raise ValueError(f"config: cannot read {source!r}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"config: {source} is not a text (UTF-8) TOML file: byte {exc.start} is "
                             f"{exc.object[exc.start:exc.start + 1]!r}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config: {source} is not valid TOML: {exc}") from None
    raw.update({("lambda" if k == "lam" else k): v for k, v in overrides.items() if v is not None})
    known = {"out", "seed", "d", "init_scale", "lambda", "beta", "t_min", "t_max", "saves", "threshold",
             "snapshots", "settings", "scaling", "phase"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"config: unknown key(s) {sorted(unknown)} in {source}; known keys are {sorted(known)}")
    kw = {k: raw[k] for k in known - {"lambda", "settings", "scaling", "phase", "snapshots"} if k in raw}
    if "lambda" in raw:
        kw["lam"] = raw["lambda"]
    try:
        for key in ("settings", "snapshots"):
            if not isinstance(raw.get(key, []), (list, tuple)):
                raise ValueError(f"{key}: expected a list, got {type(raw[key]).__name__}")
        for key in ("scaling", "phase"):
            if not isinstance(raw.get(key, {}), dict):
                raise ValueError(f"{key}: expected a table [{key}], got {type(raw[key]).__name__}")
        cfg = Config(**kw, snapshots=tuple(raw.get("snapshots", Config.snapshots)),
                     settings=tuple(_check_setting(s, i) for i, s in enumerate(raw.get("settings", []))),
                     scaling=dict(raw.get("scaling", {})), phase=dict(raw.get("phase", {})), source=source)
        _check_config(cfg)
    except (TypeError, ValueError) as exc:
        # one kind of error for every bad value, naming the file and the key
        raise ValueError(f"config {source}: {exc}") from None
    return cfg


def _check_setting(s, i) -> dict:
    if not isinstance(s, dict):
        raise ValueError(f"settings[{i}]: expected a table, got {type(s).__name__}")
    if "kernel" in s:
        raise ValueError(f"settings[{i}].kernel: the key is called 'similarity' (similarity = {s['kernel']!r})")
    try:
        out = normalise_problem(s, other_keys=("name", "similarity"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"settings[{i}]: {exc}") from None
    for key in ("name", "similarity"):
        if key in s:
            out[key] = s[key]
    out.setdefault("name", f"{out['setting']} {i}")
    out.setdefault("similarity", "attribute")
    if not isinstance(out["name"], str):
        raise ValueError(f"settings[{i}].name: expected a string, got {out['name']!r}")
    try:                        # build it now: a bad argument is reported before any work starts
        problem = build_problem(out)
        if not isinstance(out["similarity"], str):
            raise TypeError(f"similarity: expected a string, got {out['similarity']!r}")
        problem.coupling(out["similarity"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"settings[{i}] ({out['name']!r}): {exc}") from None
    return out


def _check_config(cfg: Config) -> None:
    from .._validation import as_nonnegative, as_positive, as_positive_int
    if not isinstance(cfg.out, str) or not cfg.out:
        raise ValueError(f"out: expected a folder name, got {cfg.out!r}")
    as_positive_int(cfg.seed, "seed", minimum=0)
    for j, v in enumerate(cfg.snapshots):
        as_positive(v, f"snapshots[{j}]")
    if not cfg.snapshots:
        raise ValueError("snapshots: expected at least one time")
    as_positive_int(cfg.d, "d")
    as_positive_int(cfg.saves, "saves", minimum=2)
    as_positive(cfg.init_scale, "init_scale")
    as_nonnegative(cfg.lam, "lambda")
    as_nonnegative(cfg.beta, "beta")
    as_positive(cfg.t_min, "t_min")
    if not cfg.t_max > cfg.t_min:
        raise ValueError(f"t_max: expected a value > t_min = {cfg.t_min}, got {cfg.t_max}")
    as_positive(cfg.threshold, "threshold")
    if not cfg.settings:
        raise ValueError("settings: expected at least one [[settings]] table")
    names = [s["name"] for s in cfg.settings]
    if len(set(names)) != len(names):
        raise ValueError(f"settings: names must be unique, got {names}")
    for key, block in (("scaling", cfg.scaling), ("phase", cfg.phase)):
        if block and "setting" in block:
            cfg.setting(block["setting"])
        allowed = {"scaling": {"setting", "lambdas", "t_max"},
                   "phase": {"setting", "lambdas", "betas", "widths", "t_max"}}[key]
        extra = set(block) - allowed
        if extra:
            raise ValueError(f"{key}: unknown key(s) {sorted(extra)}; allowed {sorted(allowed)}")
        for name, check in (("lambdas", as_nonnegative), ("betas", as_nonnegative),
                            ("widths", lambda v, n: as_positive_int(v, n))):
            if name in block:
                if not isinstance(block[name], list) or not block[name]:
                    raise ValueError(f"{key}.{name}: expected a non-empty list, got {block[name]!r}")
                for j, v in enumerate(block[name]):
                    check(v, f"{key}.{name}[{j}]")
        if "t_max" in block and not as_positive(block["t_max"], f"{key}.t_max") > cfg.t_min:
            raise ValueError(f"{key}.t_max: expected a value > t_min = {cfg.t_min}, got {block['t_max']}")


# -- building blocks ---------------------------------------------------------------------------
def build_problem(spec: dict):
    """The :class:`~ufm.problems.Problem` of a ``[[settings]]`` table (a problem spec)."""
    return _build_problem(spec, other_keys=("name", "similarity"))


def models_for(problem, spec: dict, lam: float, beta: float):
    """(standard, coupled) CE models with weight decay λ_W = λ_H = lam and Θ = I + β² S."""
    from ..models import UFM
    coupled = UFM(problem, loss="ce", lambda_W=lam, lambda_H=lam, coupling=problem.coupling(spec["similarity"], beta))
    return coupled.replace(coupling=None), coupled


def _solve(model, x0, t):
    from ..integration import solve
    return solve(model, x0, t, save=("gram_W", "gram_H", "logits"))


def run_setting(spec: dict, cfg: Config, progress=None) -> dict:
    """Standard and coupled runs of one setting from the same init, with their summaries.

    Returns:
        dict with ``problem``, ``standard`` and ``coupled`` trajectories and ``summary``
        (per model: peak gap, t_peak, t_collapse, collapsed, final ETF distance, initial gap).
    """
    rep = _Reporter.of(progress)
    problem = build_problem(spec)
    standard, coupled = models_for(problem, spec, cfg.lam, cfg.beta)
    x0 = coupled.init(cfg.d, scale=cfg.init_scale, seed=cfg.seed)
    out = {"problem": problem, "summary": {}, "init_noise": init_noise(problem, cfg.d, cfg.init_scale)}
    for label, model in (("standard", standard), ("coupled", coupled)):
        rep.stage(f"{spec['name']}: {label} UFM")
        tr = _solve(model, x0, cfg.times)
        rep.advance()
        out[label] = tr
        out["summary"][label] = _summarise(tr, cfg.threshold)
        out["summary"][label]["transient"] = bool(out["summary"][label]["peak_gap"] > NOISE_BAND * out["init_noise"])
    return out


#: a peak gap counts as a semantic transient only above this many init-noise standard deviations
NOISE_BAND = 4.0


def init_noise(problem, d: int, scale: float, samples: int = 300) -> float:
    """RMS semantic gap of random initial states: the noise floor of the metric at width d.

    The gap of a random init is not 0 (finite-width cosines fluctuate like 1/√d); a gap within
    a few multiples of this value is noise, not semantic structure. The gap is the one the
    trajectories report (``Trajectory.metric("semantic_gap")``: centred cosines).
    """
    from ..metrics import evaluate
    from ..models import UFM
    model = UFM(problem)
    grams = np.stack([x.H.T @ x.H for x in (model.init(d, scale=scale, seed=10_000 + s) for s in range(samples))])
    gaps = evaluate("semantic_gap", gram_H=grams, problem=problem)
    return float(np.sqrt(np.mean(np.square(gaps))))


def _summarise(tr, threshold: float) -> dict:
    gap = tr.metric("semantic_gap")
    s = tr.transient_summary(threshold=threshold)
    etf = tr.metric("etf_distance")
    return {"peak_gap": s.peak, "t_peak": s.t_peak, "t_collapse": s.t_collapse, "collapsed": s.collapsed,
            "initial_gap": float(gap[0]), "final_gap": float(gap[-1]), "final_etf_distance": float(etf[-1]),
            "gap_centred": s.centred}


def scaling_study(cfg: Config, progress=None) -> dict:
    """Collapse time of the coupled UFM for each λ in ``[scaling].lambdas``.

    The log–log slope of t_collapse against λ is fitted over the λ > 0 that collapsed
    (a slope of −1 is t_collapse ∝ 1/λ). λ = 0 is expected not to collapse.
    """
    rep = _Reporter.of(progress)
    sc = cfg.scaling
    spec = cfg.setting(sc.get("setting", cfg.settings[0]["name"]))
    problem = build_problem(spec)
    t = np.geomspace(cfg.t_min, float(sc.get("t_max", cfg.t_max)), cfg.saves)
    rows = []
    for lam in sc.get("lambdas", _SCALING_LAMBDAS):
        rep.stage(f"scaling: coupled UFM at λ = {lam:g}")
        _, coupled = models_for(problem, spec, float(lam), cfg.beta)
        tr = _solve(coupled, coupled.init(cfg.d, scale=cfg.init_scale, seed=cfg.seed), t)
        row = {"lambda": float(lam), **_summarise(tr, cfg.threshold)}
        rows.append(row)
        rep.advance()
        rep(f"scaling: λ = {lam:g}: t_collapse = {row['t_collapse']:.3g}")
    fit = [(r["lambda"], r["t_collapse"]) for r in rows if r["lambda"] > 0 and r["collapsed"]]
    slope = intercept = float("nan")
    if len(fit) >= 2:
        x, y = np.log([f[0] for f in fit]), np.log([f[1] for f in fit])
        slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
    return {"setting": spec["name"], "t_max": float(t[-1]), "rows": rows, "slope": slope, "intercept": intercept}


def width_study(cfg: Config, progress=None) -> dict:
    """Coupled UFM for each width in ``[phase].widths`` (parameter space, any d ≥ 1).

    With d < K − 1 the simplex ETF does not fit: the final ETF distance stays away from 0.
    """
    rep = _Reporter.of(progress)
    ph = cfg.phase
    spec = cfg.setting(ph.get("setting", cfg.settings[0]["name"]))
    problem = build_problem(spec)
    _, coupled = models_for(problem, spec, cfg.lam, cfg.beta)
    t = np.geomspace(cfg.t_min, float(ph.get("t_max", cfg.t_max)), cfg.saves)
    rows = []
    for d in ph.get("widths", _WIDTHS):
        rep.stage(f"width: coupled UFM at d = {d}")
        tr = _solve(coupled, coupled.init(int(d), scale=cfg.init_scale, seed=cfg.seed), t)
        rows.append({"d": int(d), **_summarise(tr, cfg.threshold)})
        rep.advance()
        rep(f"width: d = {d}: final ETF distance = {rows[-1]['final_etf_distance']:.3g}")
    return {"setting": spec["name"], "K": problem.K, "rows": rows}


def phase_study(cfg: Config, progress=None) -> dict:
    """Peak gap and collapse time of the coupled UFM over the (λ, β) grid of ``[phase]``."""
    rep = _Reporter.of(progress)
    ph = cfg.phase
    spec = cfg.setting(ph.get("setting", cfg.settings[0]["name"]))
    problem = build_problem(spec)
    lambdas = [float(v) for v in ph.get("lambdas", _PHASE_LAMBDAS)]
    betas = [float(v) for v in ph.get("betas", _PHASE_BETAS)]
    t = np.geomspace(cfg.t_min, float(ph.get("t_max", cfg.t_max)), cfg.saves)
    peak = np.full((len(betas), len(lambdas)), np.nan)
    tcol = np.full_like(peak, np.nan)
    for i, beta in enumerate(betas):
        for j, lam in enumerate(lambdas):
            rep.stage(f"phase: coupled UFM at λ = {lam:g}, β = {beta:g}")
            _, coupled = models_for(problem, spec, lam, beta)
            tr = _solve(coupled, coupled.init(cfg.d, scale=cfg.init_scale, seed=cfg.seed), t)
            s = _summarise(tr, cfg.threshold)
            peak[i, j] = s["peak_gap"]
            tcol[i, j] = s["t_collapse"]
            rep.advance()
            rep(f"phase: λ = {lam:g}, β = {beta:g}: peak gap {s['peak_gap']:.3f}, t_collapse {s['t_collapse']:.3g}")
    return {"setting": spec["name"], "lambdas": lambdas, "betas": betas, "peak_gap": peak.tolist(),
            "t_collapse": tcol.tolist()}


# -- the job -----------------------------------------------------------------------------------
def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


_SCALING_LAMBDAS = [1e-2, 1e-3, 1e-4, 0.0]
_WIDTHS = [2, 4, 8, 16, 32]
_PHASE_LAMBDAS = [1e-2, 1e-3]
_PHASE_BETAS = [0.0, 1.0]


class _Reporter:
    """The job's side of progress reporting. ``progress`` may be any callable taking a message;
    a display that also has ``set_total(n)``, ``stage(text)`` and ``advance()`` (``ufm run``'s
    status line, :class:`ufm.commands._progress.Progress`) is told the number of units of work
    (one per integration and per figure), what runs now and when a unit is done."""

    def __init__(self, progress=None):
        self.progress = progress

    @classmethod
    def of(cls, progress):
        return progress if isinstance(progress, cls) else cls(progress)

    def _call(self, name, *args):
        fn = getattr(self.progress, name, None)
        if fn is not None:
            fn(*args)

    def __call__(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)

    def set_total(self, n: int) -> None:
        self._call("set_total", n)

    def stage(self, text: str) -> None:
        self._call("stage", text)

    def advance(self) -> None:
        self._call("advance")


def work_units(cfg: Config, figures: bool = True) -> int:
    """Units of work of :func:`run`: one per integration, one per figure written."""
    n = 2 * len(cfg.settings)
    if cfg.scaling:
        n += len(cfg.scaling.get("lambdas", _SCALING_LAMBDAS))
    if cfg.phase:
        n += len(cfg.phase.get("widths", _WIDTHS))
        n += len(cfg.phase.get("lambdas", _PHASE_LAMBDAS)) * len(cfg.phase.get("betas", _PHASE_BETAS))
    if figures:
        n += sum(2 + (build_problem(s).relations is not None) for s in cfg.settings)
        n += bool(cfg.scaling) + bool(cfg.phase) + 1
    return n


def run(cfg: Config | None = None, out: str | None = None, progress=None, figures: bool = True,
        figure_format: str = "png") -> dict:
    """Run the whole job: settings, scaling, width and phase studies, figures, summary.

    Arguments:
        cfg: a :class:`Config` (default: the shipped one).
        out: output folder (default ``cfg.out``); created if missing.
        progress: callable taking a message, or None for silence; a display with
            ``set_total``, ``stage`` and ``advance`` methods also gets the units of work (see
            :class:`_Reporter`).
        figures: write the figures (the JSON, markdown and trajectories are always written).
        figure_format: ``"png"``, ``"pdf"`` or ``"svg"`` (:data:`ufm.plot.FIGURE_FORMATS`).

    Returns:
        The summary dict that is also written to ``out/summary.json``.

    Raises:
        ValueError: an unknown ``figure_format`` (before any work starts).
    """
    from .._validation import check_choice
    from ..plot import FIGURE_FORMATS
    check_choice(figure_format, "figure_format", FIGURE_FORMATS)
    cfg = cfg or load_config()
    out = out or cfg.out
    os.makedirs(os.path.join(out, "trajectories"), exist_ok=True)
    say = _Reporter.of(progress)
    say.set_total(work_units(cfg, figures))
    from ..metrics import DEFAULT_GAP_CENTRED, gap_convention
    results, summary = {}, {"config": {k: v for k, v in asdict(cfg).items()}, "settings": {},
                            "conventions": {"semantic_gap": gap_convention(DEFAULT_GAP_CENTRED),
                                            "relation_cosines_at_peak": gap_convention(True)}}
    for spec in cfg.settings:
        say(f"{spec['name']}: standard and coupled UFM from the same init (d = {cfg.d})")
        res = run_setting(spec, cfg, say)
        results[spec["name"]] = res
        summary["settings"][spec["name"]] = {
            "K": res["problem"].K, "N": res["problem"].N, "init_noise": res["init_noise"], **res["summary"],
            "relation_cosines_at_peak": _relation_cosines_at_peak(res["coupled"], cfg.threshold)}
        for label in ("standard", "coupled"):
            res[label].save(os.path.join(out, "trajectories", f"{_slug(spec['name'])}_{label}.npz"))
        c = res["summary"]["coupled"]
        say(f"{spec['name']} (K = {res['problem'].K}, N = {res['problem'].N}): coupled peak gap "
            f"{c['peak_gap']:.3f} at t = {c['t_peak']:.3g}, collapse at t = {c['t_collapse']:.3g}")
    if cfg.scaling:
        summary["scaling"] = scaling_study(cfg, say)
    if cfg.phase:
        summary["width"] = width_study(cfg, say)
        summary["phase"] = phase_study(cfg, say)
    summary["figures"] = []
    if figures:
        say(f"writing figures to {out}")
        summary["figures"] = _figures(cfg, results, summary, out, say, figure_format)
    text = json.dumps(summary, indent=2, default=json_default)
    atomic_write_text(os.path.join(out, "summary.json"), text)
    md = results_markdown(summary)
    atomic_write_text(os.path.join(out, "results.md"), md)
    say(f"wrote {out}")
    return summary


def _relation_cosines_at_peak(tr, threshold):
    p = tr.problem
    if p.relations is None:
        return None
    from .. import metrics
    s = tr.transient_summary(threshold=threshold)
    j = int(np.argmin(np.abs(np.log(tr.t) - np.log(s.t_peak))))
    C = metrics.cosine(tr.gram_H[j], centred=True)      # the cosines the (centred) gap averages
    return {name: float(C[R.astype(bool)].mean()) for name, R in zip(p.relation_names, p.relations)}


def _fmt(v, spec=".3g"):
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def results_markdown(summary: dict) -> str:
    """The markdown results table (what the README shows), from a summary dict."""
    cfg = summary["config"]
    lines = [f"Coupled vs standard UFM, CE, λ_W = λ_H = {cfg['lam']:g}, β = {cfg['beta']:g}, "
             f"d = {cfg['d']}, init scale {cfg['init_scale']:g}, seed {cfg['seed']}; semantic gap = mean cosine "
             f"of pairs sharing an attribute minus pairs sharing none, from "
             f"{summary['conventions']['semantic_gap']}; collapse = semantic gap "
             f"below {cfg['threshold']:g} after its peak; σ = RMS gap of random inits (noise floor), a peak "
             f"below {NOISE_BAND:g}σ is no transient.", "",
             "| setting | K = N | σ (init noise) | model | initial gap | peak gap | t of peak | collapse time "
             "| final ETF distance |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary["settings"].items():
        for label in ("standard", "coupled"):
            r = s[label]
            if not r["transient"]:
                when = "no transient | —"
            else:
                when = f"{_fmt(r['t_peak'])} | {_fmt(r['t_collapse']) if r['collapsed'] else 'not collapsed'}"
            lines.append(f"| {name} | {s['N']} | {s['init_noise']:.3f} | {label} | {r['initial_gap']:+.3f} | {r['peak_gap']:.3f} | "
                         f"{when} | {r['final_etf_distance']:.2g} |")
    sc = summary.get("scaling")
    if sc:
        lines += ["", f"Collapse time vs λ ({sc['setting']}, coupled): " + ", ".join(
            f"λ = {r['lambda']:g}: {(_fmt(r['t_collapse']) if r['collapsed'] else 'not collapsed by t = ' + _fmt(sc['t_max']))}"
            for r in sc["rows"]) + f"; log–log slope {sc['slope']:.2f} (−1 is t_collapse ∝ 1/λ)."]
    wd = summary.get("width")
    if wd:
        lines += ["", f"Width ({wd['setting']}, K − 1 = {wd['K'] - 1}): final ETF distance " + ", ".join(
            f"d = {r['d']}: {r['final_etf_distance']:.2g}" for r in wd["rows"]) + "."]
    return "\n".join(lines) + "\n"


def transient_markers(res: dict, threshold: float) -> dict:
    """model label -> TransientSummary, for the models of one setting whose peak is a real
    transient (above the noise band: the results table's test). The figures mark a peak and a
    collapse only for these, so a curve the table calls "no transient" gets no marks."""
    return {label: res[label].transient_summary(threshold=threshold)
            for label in ("standard", "coupled") if res["summary"][label]["transient"]}


def _figures(cfg: Config, results: dict, summary: dict, out: str, progress=None, fmt: str = "png") -> list:
    from .. import plot
    with plot.style():
        return _draw_figures(cfg, results, summary, out, progress, fmt)


def _draw_figures(cfg: Config, results: dict, summary: dict, out: str, progress, fmt: str) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import metrics, plot
    rep = _Reporter.of(progress)
    written = []

    def save(fig, name):
        rep.stage(f"writing {name}")
        path = os.path.join(out, name)
        fig.savefig(path)                 # dpi and bounding box from plot.style()
        plt.close(fig)
        written.append(path)
        rep.advance()

    for name, res in results.items():
        slug = _slug(name)
        trs = {"standard (Θ = I)": res["standard"], f"coupled (β = {cfg.beta:g})": res["coupled"]}
        axes = plot.gram_grid(trs, cfg.snapshots)
        axes[0, 0].figure.suptitle(f"{name}: feature cosines, contexts ordered by attributes", fontsize=10)
        save(axes[0, 0].figure, f"grams_{slug}.{fmt}")

        fig, ax = plt.subplots(2, 2, figsize=(10, 6.5), constrained_layout=True)
        labels = {"standard": res["standard"], "coupled": res["coupled"]}
        t = res["coupled"].t
        summ = transient_markers(res, cfg.threshold)
        plot.metric_curves(t, {k: tr.metric("semantic_gap") for k, tr in labels.items()}, ax=ax[0, 0],
                           ylabel="semantic gap (centred)", summaries=summ, threshold=cfg.threshold,
                           title="semantic gap (• peak, -- collapse)")
        plot.metric_curves(t, {k: tr.metric("etf_distance") for k, tr in labels.items()}, ax=ax[0, 1],
                           ylabel="ETF distance of G_H", title="distance to the simplex ETF")
        plot.metric_curves(t, {k: tr.loss for k, tr in labels.items()}, ax=ax[1, 0], ylabel="loss", logy=True,
                           title="regularised loss")
        plot.metric_curves(t, {k: tr.metric("effective_rank") for k, tr in labels.items()}, ax=ax[1, 1],
                           ylabel="effective rank of G_H", title="effective rank")
        fig.suptitle(f"{name}: λ = {cfg.lam:g}, d = {cfg.d}, init {cfg.init_scale:g}", fontsize=11)
        save(fig, f"metrics_{slug}.{fmt}")

        p = res["problem"]
        if p.relations is not None:
            # spectra in the fixed eigenbasis of the final Gram: modes keep their identity
            _, basis = metrics.eigenbasis(res["coupled"].gram_H[-1])
            vals = np.array([metrics.spectrum_in_basis(g, basis) for g in res["coupled"].gram_H])
            ax = plot.spectrum_curves(t, vals[:, :min(8, vals.shape[1])],
                                      title=f"{name}, coupled: G_H in the final eigenbasis")
            save(ax.figure, f"spectrum_{slug}.{fmt}")

    if "scaling" in summary:
        sc = summary["scaling"]
        pos = [r for r in sc["rows"] if r["lambda"] > 0 and r["collapsed"]]
        ax = plot.collapse_scaling([r["lambda"] for r in pos], [r["t_collapse"] for r in pos], slope=sc["slope"],
                                   intercept=sc["intercept"],
                                   title=f"{sc['setting']}: collapse time vs weight decay")
        fig = ax.figure
        save(fig, f"scaling.{fmt}")

    if "phase" in summary:
        ph, wd = summary["phase"], summary["width"]
        fig, ax = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
        plot.phase_diagram(ph["lambdas"], ph["betas"], ph["peak_gap"], ax=ax[0], xlabel="λ", ylabel="β",
                           zlabel="peak semantic gap", logx=True, title=f"{ph['setting']}: peak gap")
        plot.phase_diagram(ph["lambdas"], ph["betas"], ph["t_collapse"], ax=ax[1], xlabel="λ", ylabel="β",
                           zlabel="collapse time", logx=True, lognorm=True, fmt="{:.1e}",
                           title="collapse time (– : none)")
        plot.width_curves([r["d"] for r in wd["rows"]], [r["peak_gap"] for r in wd["rows"]],
                          [r["final_etf_distance"] for r in wd["rows"]], ax=ax[2], K=wd["K"])
        save(fig, f"phase.{fmt}")

    # the README's figure: one setting's Gram snapshots and every setting's gap curve
    first = cfg.settings[0]["name"]
    fig = plt.figure(figsize=(12, 6.2), constrained_layout=True)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.25])
    axes = top.subplots(1, len(cfg.snapshots))
    plot.gram_grid({f"{first}, coupled": results[first]["coupled"]}, cfg.snapshots, axes=axes[None, :])
    top.suptitle(f"{first}: coupled-UFM feature cosines (contexts ordered by attributes)", fontsize=10)
    b = bottom.subplots(1, 2)
    t = results[first]["coupled"].t
    curves, summ, styles = {}, {}, {}
    for k, (name, res) in enumerate(results.items()):
        marks = transient_markers(res, cfg.threshold)
        for label in ("coupled", "standard"):
            key = f"{name} {label}"
            curves[key] = res[label].metric("semantic_gap")
            styles[key] = {"color": f"C{k}", "ls": "-" if label == "coupled" else "--"}
            if label in marks:
                summ[key] = marks[label]
    plot.metric_curves(t, curves, ax=b[0], ylabel="semantic gap (centred)", summaries=summ, threshold=cfg.threshold,
                       styles=styles, title="semantic gap: structure, then collapse (-- standard UFM)")
    plot.metric_curves(t, {f"{n} coupled": r["coupled"].metric("etf_distance") for n, r in results.items()},
                       ax=b[1], ylabel="ETF distance of G_H", title="distance to the simplex ETF",
                       styles={f"{n} coupled": {"color": f"C{k}"} for k, n in enumerate(results)})
    save(fig, f"overview.{fmt}")
    return written
