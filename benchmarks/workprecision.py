"""Work-precision: each solver's time against the error it reaches, over a range of tolerances.

A solver's time at one tolerance says little on its own: at the same rtol one solver may be
ten times more accurate than another (ufm's dop853 and scipy's DOP853 at K = N = 64, rtol 1e-8:
errors 5e-9 and 5e-8 against the tight reference, benchmarks/results.md). This section runs
every solver over rtol = 1e-5 … 1e-11 (atol = rtol/100), scores each run against the same tight
reference as the ``single`` section (scipy DOP853 at rtol 1e-13), and reads off the time each
solver needs to reach a given error, interpolated log-log between neighbouring tolerances
(:func:`time_to_reach`); the ratio of two such times compares the solvers at equal error.

This module holds the pieces that do not time anything (the interpolation, the tables, the
figure); the measurement is ``bench_workprecision`` in :mod:`benchmarks.run`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: the tolerances of every curve (loosest first) and atol = rtol · ATOL_PER_RTOL (the single
#: section's rtol 1e-8, atol 1e-10 is one of these points)
RTOLS = tuple(10.0 ** -k for k in range(5, 12))
ATOL_PER_RTOL = 1e-2
#: the errors at which the solvers' times are compared
TARGETS = (1e-6, 1e-8, 1e-10)
#: the solver every ratio is taken against
BASE = "ufm auto"
#: the time a point is judged by: the CPU time of the process (all its threads). On this shared
#: 2-core machine a run's wall time took up to 4x its CPU time when other jobs held the cores
#: (K = N = 10, rtol 1e-6: ufm tsit5 5.3 ms wall against 1.4 ms CPU); wall times stay
#: in results.json ("wall_s"). diffrax's CPU time matched its wall time here (one thread's worth).
TIME = "cpu_s"


def time_to_reach(errors, times, target):
    """The time needed to reach ``target`` error, from one solver's runs over tolerances.

    Arguments:
        errors, times: one value per tolerance, loosest tolerance first (NaN or inf for a run
            that failed).
        target: the error to reach.

    Returns:
        (time, how): ``how`` is ``"interpolated"`` -- the target lies between two neighbouring
        tolerances, the first from which on every tighter run reaches it, and the time is
        interpolated linearly in (log error, log time) between them --, ``"bound"`` -- the time
        of the first of those runs, an upper bound, when there is no neighbour to interpolate
        from (every run reaches the target, or the looser neighbour failed) -- or
        ``"not reached"`` (time None) when the tightest run misses it. "Every tighter run" rather than the first run
        that happens to get below the target: an error curve that dips and rises again (a
        long step's dense output, say) is not credited with its lucky dip.
    """
    e = np.asarray(errors, dtype=float)
    t = np.asarray(times, dtype=float)
    if e.shape != t.shape or e.ndim != 1 or e.size == 0:
        raise ValueError(f"errors and times: expected two 1-d arrays of one length, got shapes {e.shape} and {t.shape}")
    if not target > 0:
        raise ValueError(f"target: expected an error > 0, got {target!r}")
    good = np.isfinite(e) & np.isfinite(t) & (e <= target)
    if not good[-1]:
        return None, "not reached"
    i = len(e) - 1
    while i > 0 and good[i - 1]:
        i -= 1
    if i == 0 or not (np.isfinite(e[i - 1]) and np.isfinite(t[i - 1])):
        return float(t[i]), "bound"
    e0, e1 = math.log(e[i - 1]), math.log(max(e[i], 1e-300))
    t0, t1 = math.log(t[i - 1]), math.log(t[i])
    frac = (math.log(target) - e0) / (e1 - e0)
    return float(math.exp(t0 + frac * (t1 - t0))), "interpolated"


def reach_table(curves: dict, targets=TARGETS, base=BASE) -> dict:
    """label -> one {"target", "time_s", "how", "x_vs_base"} per target (in ``targets``' order),
    from ``curves`` (label -> points with "ok", "error" and the time :data:`TIME`, loosest
    tolerance first).
    ``x_vs_base`` is the time over ``base``'s at the same target (> 1: ``base`` is faster) when
    both are interpolated, else None (a bound or a miss gives no ratio)."""
    out = {}
    for label, points in curves.items():
        errors = [p["error"] if p.get("ok") else math.inf for p in points]
        times = [p[TIME] if p.get("ok") else math.inf for p in points]
        out[label] = []
        for target in targets:
            reached, how = time_to_reach(errors, times, target)
            out[label].append({"target": target, "time_s": reached, "how": how})
    ref = out.get(base)
    for label, rows in out.items():
        for k, mine in enumerate(rows):
            ok = ref is not None and mine["how"] == ref[k]["how"] == "interpolated"
            mine["x_vs_base"] = mine["time_s"] / ref[k]["time_s"] if ok else None
    return out


def _fmt_s(x):
    """The benchmark's time format (benchmarks.run.fmt_s; imported here, not at the top,
    because run.py imports this module)."""
    from benchmarks.run import fmt_s
    return fmt_s(x)


def _auto_note(wp: dict) -> str:
    """Which method ufm auto ran at which tolerances (from ``wp["auto_methods"]``, one name per
    rtol): where it changes, its interpolated times join two methods' curves."""
    names = wp.get("auto_methods")
    if not names:
        return ""
    runs = []
    for rtol, name in zip(wp["rtols"], names):
        if runs and runs[-1][0] == name:
            runs[-1][2] = rtol
        else:
            runs.append([name, rtol, rtol])
    spans = ", ".join(f"{n} at rtol {a:.0e}" + (f"–{b:.0e}" if b != a else "") for n, a, b in runs)
    return (f" ufm auto ran {spans}" + (": a time interpolated across its switch joins two methods' curves."
                                        if len(runs) > 1 else "."))


def markdown_lines(wp: dict) -> list:
    """The section's tables for results.md: per size, the time to reach each target error (and
    the ratio to ufm auto's), then every run's time and error."""
    L = [f"**Work-precision** — the single-trajectory problem (CE, λ = {wp['lam']:g}, init scale {wp['scale']:g}, "
         f"{wp['saves']} log-spaced saves to t = {wp['t_last']:g}) over rtol = "
         f"{', '.join(f'{r:.0e}' for r in wp['rtols'])}, atol = rtol · {wp['atol_per_rtol']:g}; error = largest "
         f"relative distance of the saved state [W, H] to scipy DOP853 at rtol {wp['reference_rtol']:g}; "
         f"median of {', '.join(f'{v} ({k})' for k, v in wp['repeat'].items())} interleaved runs per point; "
         "times are CPU times of the process (outside load inflates wall times; both are in results.json). "
         "“time to 1e-8” = the time a solver needs for error ≤ 1e-8, interpolated log-log between the two "
         "neighbouring tolerances from which on every tighter run reaches it; ≤ = the time of the first such run, "
         "an upper bound (reached already at the loosest tolerance, or after a failed run); “not reached” = "
         f"missed at rtol {wp['rtols'][-1]:.0e}. × = that time / {wp['base']}'s at the same error (> 1: ufm auto "
         "faster), given when both are interpolated." + _auto_note(wp), ""]
    for name, s in wp["sizes"].items():
        if "skipped" in s:
            L += [f"*{name}*: {s['skipped']}", ""]
            continue
        c = s["case"]
        head = " | ".join(f"time to {t:.0e} | ×" for t in wp["targets"])
        L += [f"*K=N={c['K']}, d={c['d']}* (reference: {s['reference_rhs']} evaluations)", "",
              f"| solver | {head} |", "|---|" + "---|---|" * len(wp["targets"])]
        for label, reach in s["reach"].items():
            cells = []
            for r in reach:
                x = r["x_vs_base"]
                time_s = ("not reached" if r["how"] == "not reached"
                          else ("≤ " if r["how"] == "bound" else "") + _fmt_s(r["time_s"]))
                cells.append(f"{time_s} | {'–' if x is None else f'{x:.2f}'}")
            L.append(f"| {label} | " + " | ".join(cells) + " |")
        L += ["", "| solver | " + " | ".join(f"rtol {r:.0e}" for r in wp["rtols"]) + " |",
              "|---|" + "---|" * len(wp["rtols"])]
        for label, points in s["curves"].items():
            cells = [(f"{_fmt_s(p[TIME])}, {p['error']:.0e}" if p.get("ok") else "failed") for p in points]
            L.append(f"| {label} | " + " | ".join(cells) + " |")
        if s.get("skipped_solvers"):
            L += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in s["skipped_solvers"].items()) + "."]
        L.append("")
    fig = wp.get("figure")
    if fig and fig.get("file"):
        L += [f"![work-precision: time against error]({fig['file']})", ""]
    elif fig:
        L += [f"Work-precision figure: {fig['note']}", ""]
    return L


def figure(wp: dict, path) -> dict:
    """Draw time against error, one panel per size, to ``path`` (PNG). Returns {"file": name}
    or, without matplotlib, {"note": why} (the benchmark runs without it)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001 - absent or broken: the tables still stand
        return {"note": f"not drawn: matplotlib not importable ({type(exc).__name__}: {exc}); "
                        "install with `pip install matplotlib`"}
    sizes = {k: v for k, v in wp["sizes"].items() if "skipped" not in v}
    if not sizes:
        return {"note": "not drawn: no size was measured"}
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 4.4), squeeze=False)
    styles = {"ufm": "-", "scipy": "--", "numbalsoda": ":", "diffrax": "-."}
    labels = list(dict.fromkeys(lbl for s in sizes.values() for lbl in s["curves"]))
    colours = {lbl: f"C{k % 10}" for k, lbl in enumerate(labels)}     # one colour per solver in every panel
    handles = {}
    for ax, (name, s) in zip(axes[0], sizes.items()):
        for label, points in s["curves"].items():
            pts = [p for p in points if p.get("ok")]
            if not pts:
                continue
            line, = ax.loglog([p["error"] for p in pts], [p[TIME] for p in pts], styles.get(label.split()[0], "-"),
                              color=colours[label], marker="o", ms=3.5, lw=2.2 if label == wp["base"] else 1.2,
                              label=label)
            handles.setdefault(label, line)
        for t in wp["targets"]:
            ax.axvline(t, color="0.85", lw=0.8, zorder=0)
        c = s["case"]
        ax.set_title(f"K = N = {c['K']}, d = {c['d']}")
        ax.set_xlabel("error vs tight reference")
        ax.invert_xaxis()                 # more accurate to the right
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("CPU time per solve [s]")
    axes[0][0].legend([handles[lbl] for lbl in labels if lbl in handles], [lbl for lbl in labels if lbl in handles],
                      fontsize=7, loc="upper left")
    fig.suptitle(f"work-precision, rtol {wp['rtols'][0]:.0e} … {wp['rtols'][-1]:.0e} (atol = rtol/100)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"file": Path(path).name}
