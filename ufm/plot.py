"""Matplotlib figures for UFM trajectories. The only module of the library that plots.

Every function takes an Axes (or an array of Axes) through ``ax=``/``axes=``, creates one when
given None, and returns what it drew on, so figures compose. matplotlib is imported lazily:
importing :mod:`ufm` never pulls it in.
"""

from __future__ import annotations

import numpy as np

from . import metrics as _metrics

__all__ = ["style", "FIGURE_FORMATS", "OKABE_ITO", "gram_heatmap", "gram_grid", "metric_curves", "spectrum_curves", "phase_diagram",
           "observed_vs_predicted", "attribute_order", "comparison_panel", "collapse_scaling", "width_curves",
           "run_panels", "fit_panels"]


#: Okabe & Ito's colour-blind-safe palette (black moved last: it is kept for references)
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

#: the vector and raster formats every command that writes figures accepts (``--format``)
FIGURE_FORMATS = ("png", "pdf", "svg")


def style():
    """The house style of every figure ufm writes, as a matplotlib ``rc_context``.

    Colour-blind-safe colours (:data:`OKABE_ITO`) as the property cycle, so the ``C0`` … ``C7``
    colours the drawing functions use are that palette; light grids; legends without a frame
    and placed where they cover the least data; titles and labels at readable sizes; fonts
    embedded as text in PDF/SVG (``pdf.fonttype = 42``, ``svg.fonttype = "none"``) so vector
    figures stay editable; tight bounding boxes on save.

    Use as ``with ufm.plot.style(): ...`` around drawing and saving; ``ufm run``, ``ufm
    inspect`` and ``ufm fit`` do.

    Returns:
        A context manager (``matplotlib.rc_context``).
    """
    import matplotlib
    from cycler import cycler
    return matplotlib.rc_context({
        "axes.prop_cycle": cycler(color=list(OKABE_ITO)),
        "axes.grid": True, "grid.alpha": 0.3, "axes.titlesize": 10, "axes.labelsize": 9,
        "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8, "legend.frameon": False,
        "legend.loc": "best", "figure.titlesize": 11, "savefig.bbox": "tight", "savefig.dpi": 130,
        "pdf.fonttype": 42, "svg.fonttype": "none", "image.cmap": "viridis",
    })


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg",) and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _has_display() -> bool:
    import os
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def attribute_order(attributes) -> np.ndarray:
    """Row order that groups contexts by their attributes (first attribute slowest).

    Arguments:
        attributes: (N, F) integer attributes, or None (identity order).
    Returns:
        (N,) permutation.
    """
    if attributes is None:
        return None
    a = np.asarray(attributes)
    return np.lexsort(a.T[::-1]) if a.ndim == 2 and a.shape[1] else np.arange(a.shape[0])


def gram_heatmap(gram, ax=None, *, cosine: bool = True, order=None, title: str | None = None,
                 colorbar: bool = True, cmap: str = "RdBu_r"):
    """Heatmap of a Gram matrix (cosines by default, on a fixed [−1, 1] colour scale).

    Arguments:
        gram: (N, N) Gram matrix.
        ax: Axes to draw on (created when None).
        cosine: plot G_ij / √(G_ii G_jj) instead of G.
        order: (N,) row/column permutation (e.g. :func:`attribute_order`).
        title: Axes title. colorbar: add a colour bar. cmap: colour map.
    Returns:
        The Axes.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3))
    G = np.asarray(gram, dtype=float)
    M = _metrics.cosine(G) if cosine else G
    if order is not None:
        M = M[np.ix_(order, order)]
    lim = 1.0 if cosine else float(np.abs(M).max() or 1.0)
    im = ax.imshow(M, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine" if cosine else "Gram")
    return ax


def gram_grid(trajectories: dict, times, *, axes=None, order=None, cosine: bool = True):
    """Grid of feature-Gram heatmaps: one row per trajectory, one column per requested time.

    Arguments:
        trajectories: mapping row label -> :class:`~ufm.trajectory.Trajectory` with gram_H.
        times: (C,) times; each panel shows the nearest save time (in log t when t > 0).
        axes: (R, C) array of Axes, or None to create a figure.
        order: (N,) row order; default groups contexts by the first trajectory's attributes.
        cosine: plot cosines.
    Returns:
        The (R, C) array of Axes.
    """
    plt = _plt()
    labels = list(trajectories)
    times = np.atleast_1d(np.asarray(times, dtype=float))
    R, C = len(labels), len(times)
    if axes is None:
        fig, axes = plt.subplots(R, C, figsize=(1.9 * C + 1.2, 1.9 * R + 0.6), squeeze=False,
                                 constrained_layout=True)
    axes = np.asarray(axes).reshape(R, C)
    if order is None:
        first = trajectories[labels[0]]
        order = attribute_order(first.problem.attributes if first.problem is not None else None)
    im = None
    for r, name in enumerate(labels):
        tr = trajectories[name]
        G = tr._need("gram_H")
        for c, t in enumerate(times):
            j = _nearest(tr.t, t)
            ax = axes[r, c]
            gram_heatmap(G[j], ax=ax, cosine=cosine, order=order, colorbar=False,
                         title=f"t = {tr.t[j]:.3g}" if r == 0 else None)
            im = ax.images[-1]
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    if im is not None:
        axes[0, 0].figure.colorbar(im, ax=list(axes.ravel()), shrink=0.8,
                                   label="feature cosine" if cosine else "feature Gram")
    return axes


def _nearest(t, target):
    t = np.asarray(t)
    if target > 0 and np.all(t > 0):
        return int(np.argmin(np.abs(np.log(t) - np.log(target))))
    return int(np.argmin(np.abs(t - target)))


def metric_curves(t, curves: dict, ax=None, *, ylabel: str = "", summaries: dict | None = None,
                  threshold: float | None = None, logx: bool = True, logy: bool = False,
                  title: str | None = None, xlabel: str = "t (gradient-flow time)", styles: dict | None = None):
    """Metric-vs-time curves with transient markers.

    Arguments:
        t: (T,) times shared by the curves (or a mapping label -> (T_i,) times).
        curves: mapping label -> (T,) values.
        ax: Axes (created when None).
        ylabel, title, xlabel: labels.
        summaries: mapping label -> :class:`~ufm.metrics.TransientSummary`; the peak is marked
            with a dot and the collapse time with a dashed vertical line in the curve's colour
            (only when the peak is above ``threshold``, if one is given). Whether a peak is a
            real transient is the caller's judgement: give summaries only for those curves.
        threshold: draw the collapse threshold as a horizontal dotted line.
        styles: mapping label -> keyword arguments of ``ax.plot`` (colour, line style, ...).
        logx, logy: logarithmic axes (log time is the natural axis for these dynamics).
    Returns:
        The Axes.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for label, y in curves.items():
        tt = t[label] if isinstance(t, dict) else t
        kw = {"lw": 1.6, **(styles or {}).get(label, {})}
        (line,) = ax.plot(tt, y, label=label, **kw)
        s = (summaries or {}).get(label)
        if s is not None and np.isfinite(s.t_peak) and (threshold is None or s.peak > threshold):
            ax.plot([s.t_peak], [s.peak], "o", color=line.get_color(), ms=5)
            if s.collapsed and np.isfinite(s.t_collapse):
                ax.axvline(s.t_collapse, color=line.get_color(), ls="--", lw=1)
    if threshold is not None:
        ax.axhline(threshold, color="0.5", ls=":", lw=1)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return ax


def spectrum_curves(t, values, ax=None, *, labels=None, logx: bool = True, logy: bool = True,
                    title: str | None = None, ylabel: str = "eigenvalue in fixed basis"):
    """Gram spectra tracked in a fixed basis (modes keep their identity across time).

    Arguments:
        t: (T,) times. values: (T, m) mode values (e.g. :func:`ufm.metrics.spectrum_in_basis`).
        labels: m labels (optional).
    Returns:
        The Axes.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    V = np.asarray(values, dtype=float)
    for i in range(V.shape[1]):
        y = V[:, i]
        ax.plot(t, np.where(y > 0, y, np.nan) if logy else y,
                label=None if labels is None else labels[i], lw=1.4)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if labels is not None:
        ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return ax


def phase_diagram(x, y, Z, ax=None, *, xlabel: str, ylabel: str, zlabel: str, logx: bool = False,
                  logy: bool = False, lognorm: bool = False, title: str | None = None,
                  annotate: bool = True, fmt: str = "{:.2g}", cmap: str = "viridis"):
    """A quantity over a 2-D parameter grid, one cell per grid point, with a colour bar.

    Arguments:
        x: (nx,) grid values along the horizontal axis; y: (ny,) along the vertical axis.
        Z: (ny, nx) values (nan cells are left blank).
        xlabel, ylabel, zlabel: axis and colour-bar labels.
        logx, logy: label the grid values in log style (cells stay evenly spaced).
        lognorm: logarithmic colour scale (positive values).
        annotate: write each value in its cell.
    Returns:
        The Axes.
    """
    plt = _plt()
    from matplotlib.colors import LogNorm
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 3.6))
    Z = np.asarray(Z, dtype=float)
    norm = None
    if lognorm:
        pos = Z[np.isfinite(Z) & (Z > 0)]
        if pos.size:
            norm = LogNorm(vmin=pos.min(), vmax=pos.max())
    im = ax.imshow(Z, origin="lower", aspect="auto", cmap=cmap, norm=norm)
    ax.set_xticks(range(len(x)), [(f"{v:.0e}" if logx else f"{v:g}") for v in x], fontsize=8)
    ax.set_yticks(range(len(y)), [(f"{v:.0e}" if logy else f"{v:g}") for v in y], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.figure.colorbar(im, ax=ax, label=zlabel)
    if annotate:
        finite = Z[np.isfinite(Z)]
        mid = np.median(finite) if finite.size else 0
        for i in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                v = Z[i, j]
                ax.text(j, i, "–" if not np.isfinite(v) else fmt.format(v), ha="center", va="center",
                        fontsize=7, color="w" if (np.isfinite(v) and v < mid) else "k")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def observed_vs_predicted(x, observed, predicted, ax=None, *, label: str = "", logx: bool = True,
                          xlabel: str = "step"):
    """An observable logged from a real run (dots) against a model's prediction (line).

    Arguments:
        x: (T,) steps or times. observed, predicted: (T,) values.
    Returns:
        The Axes.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 3.2))
    xx = np.asarray(x, dtype=float)
    if logx:
        xx = np.where(xx > 0, xx, np.nan)
    (pts,) = ax.plot(xx, observed, "o", ms=3, label=f"{label} observed".strip())
    ax.plot(xx, predicted, "-", color=pts.get_color(), lw=1.4, label=f"{label} predicted".strip())
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return ax


#: line styles of the rows of a comparison, by role; markers cycle so overlapping curves show
_ROLE_STYLE = {"predictive": "-", "oracle": "--", "baseline": ":"}
_MARKERS = ("s", "^", "v", "D", "P", "X", "<", ">")


def comparison_panel(x, observed, curves: dict, ax=None, *, title: str = "", ylabel: str = "",
                     xlabel: str = "step", best: str | None = None):
    """One observable of a model comparison: the run (dots) and every model's prediction.

    Curves that coincide stay visible: each model has its own colour, a line style by role
    (predictive solid, oracle dashed, baseline dotted) and sparse markers at staggered
    checkpoints; later curves are drawn thinner and on top, so an identical curve underneath
    still shows around them. The best model (if any) is drawn thickest.

    Arguments:
        x: (T,) steps (a symlog axis: step 0 is kept).
        observed: (T,) observed values.
        curves: name -> (predicted (T,), role, R²); role ``"predictive"``, ``"oracle"`` or
            ``"baseline"``.
        ax: Axes to draw on (created when None).
        title, ylabel, xlabel: labels. best: the name of the best model, marked in the legend.

    Returns:
        The Axes.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 3.6))
    xx = np.asarray(x, dtype=float)
    ax.plot(xx, observed, "o", ms=3.5, color="k", label="run (observed)", zorder=10)
    n = len(curves)
    T = xx.size
    every = max(T // 8, 1)
    for i, (name, (pred, role, r2)) in enumerate(curves.items()):
        lw = 3.2 - 2.2 * i / max(n - 1, 1)
        if name == best:
            lw = 3.4
        tag = f"{name} [{role}]" if role != "predictive" else name
        r2txt = f"R² {r2:.2f}" if np.isfinite(r2) else "R² –"
        ax.plot(xx, pred, _ROLE_STYLE.get(role, "-"), lw=lw, color="0.45" if role == "baseline" else f"C{i % 10}",
                marker=_MARKERS[i % len(_MARKERS)], ms=4, markevery=(i % every, every), alpha=0.9,
                label=f"{tag} ({r2txt})" + (" ← best" if name == best else ""), zorder=2 + i)
    pos = xx[xx > 0]
    ax.set_xscale("symlog", linthresh=float(pos.min()) if pos.size else 1.0)
    ax.set_xlim(float(xx.min()), float(xx.max()))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best", framealpha=0.75)
    return ax


def collapse_scaling(lambdas, t_collapse, ax=None, *, slope: float = float("nan"), intercept: float = float("nan"),
                     title: str | None = None):
    """Collapse time against weight decay on log–log axes, with the fitted power law.

    Arguments:
        lambdas: (M,) decays λ > 0 of runs that collapsed. t_collapse: (M,) their collapse times.
        slope, intercept: the fit log t = intercept + slope·log λ (drawn when finite).
        title: optional title.
    Returns:
        The Axes.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    lam = np.asarray(lambdas, dtype=float)
    ax.loglog(lam, np.asarray(t_collapse, dtype=float), "o", label="measured")
    if np.isfinite(slope) and np.isfinite(intercept) and lam.size:
        ax.loglog(lam, np.exp(intercept) * lam ** slope, "-", label=f"fit: slope {slope:.2f}")
    ax.set_xlabel("λ (= λ_W = λ_H)")
    ax.set_ylabel("collapse time")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False)
    return ax


def width_curves(widths, peak_gap, final_etf_distance, ax=None, *, K: int | None = None,
                 title: str = "capacity: width d"):
    """Peak semantic gap and final ETF distance against the width d (log x axis).

    Arguments:
        widths: (M,) widths d. peak_gap, final_etf_distance: (M,) values at each width.
        K: number of classes; marks d = K − 1, the smallest width that holds a simplex ETF.
        title: the title.
    Returns:
        The Axes.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    d = [int(v) for v in widths]
    ax.semilogx(d, peak_gap, "o-", label="peak semantic gap")
    ax.semilogx(d, final_etf_distance, "s-", label="final ETF distance")
    if K is not None:
        ax.axvline(K - 1, color="0.5", ls=":", label="d = K − 1")
    ax.set_xticks(d, [str(v) for v in d])
    ax.minorticks_off()
    ax.set_xlabel("width d")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return ax


def _step_axis(ax, x):
    """A symlog step axis that keeps step 0 and starts linear below the first positive step."""
    ax.set_xscale("symlog", linthresh=max(1.0, float(x[x > 0].min()) if np.any(x > 0) else 1.0))
    ax.set_xlim(float(x.min()), float(x.max()))
    ax.set_xlabel("step")


def run_panels(steps, metrics: dict, axes=None, *, kernel_summary: dict | None = None, title: str = ""):
    """A real run's geometry over its checkpoints, one panel per quantity (what ``Run.plot`` draws).

    Panels, in order, for the quantities present: the centred semantic gap, the ETF distance,
    the entropy effective rank of G_H, the rms norms of features and classifier (log), the
    loss (log), and the logged kernel's trace ratio with its alignments (when
    ``kernel_summary`` is given).

    Arguments:
        steps: (T,) checkpoint steps.
        metrics: name -> (T,) values (``Run.metrics()``: ``semantic_gap``, ``etf_distance``,
            ``effective_rank``, ``norm_H``, ``norm_W``, ``loss``; missing ones are skipped).
        axes: at least as many Axes as panels (a new 2×3 figure when None); extras are hidden.
        kernel_summary: ``Run.kernel_summary()`` (steps, trace_ratio, alignment_initial,
            alignment_attributes) or None.
        title: the figure's title.

    Returns:
        The array of Axes.
    """
    plt = _plt()
    if axes is None:
        fig = plt.figure(figsize=(11, 6.5))
        axes = fig.subplots(2, 3)
    axes = np.ravel(axes)
    x = np.asarray(steps, dtype=float)
    panels = [("semantic_gap", "semantic gap (centred)"), ("etf_distance", "ETF distance"),
              ("effective_rank", "entropy effective rank of G_H"), ("norms", "rms norms"), ("loss", "loss")]
    panels = [p for p in panels if p[0] in metrics or (p[0] == "norms" and "norm_H" in metrics)]
    if kernel_summary is not None:
        panels.append(("kernel", "kernel"))
    if len(axes) < len(panels):
        raise ValueError(f"axes: expected at least {len(panels)} Axes, got {len(axes)}")
    for ax, (key, name) in zip(axes, panels):
        if key == "norms":
            ax.plot(x, metrics["norm_H"], label="features")
            if "norm_W" in metrics:
                ax.plot(x, metrics["norm_W"], label="classifier")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        elif key == "kernel":
            ks = kernel_summary
            ax.plot(ks["steps"], ks["trace_ratio"], "o-", label="trace / trace₀")
            ax2 = ax.twinx()
            ax2.plot(ks["steps"], ks["alignment_initial"], "s--", color="C1", label="CKA with Θ₀")
            ax2.plot(ks["steps"], ks["alignment_attributes"], "^--", color="C2", label="CKA with AᵀA")
            ax2.set_ylim(0, 1.05)
            ax.legend(fontsize=7, loc="upper left")
            ax2.legend(fontsize=7, loc="lower right")
        else:
            ax.plot(x, metrics[key], "-")
            if key == "loss":
                ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        _step_axis(ax, x)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig = axes[0].figure
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return axes


def fit_panels(steps, observed: dict, predicted: dict, r2: dict, axes=None, *, columns: dict | None = None,
               title: str = "", max_columns: int = 8):
    """Observed (markers) against predicted (lines) observables of one fit (what ``Fit.plot`` draws).

    Arguments:
        steps: (T,) checkpoint steps.
        observed, predicted: name -> (T, C) arrays (C columns per observable).
        r2: name -> R², shown in each panel's title; the panels follow its order.
        axes: at least ``len(r2)`` Axes (a new grid, 3 per row, when None); extras are hidden.
        columns: name -> list of C column labels (a legend when C > 1).
        title: the figure's title. max_columns: columns drawn per observable.

    Returns:
        The array of Axes.
    """
    plt = _plt()
    names = list(r2)
    if axes is None:
        rows, cols = -(-len(names) // 3), min(len(names), 3)
        fig = plt.figure(figsize=(4.0 * cols, 3.3 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
    axes = np.ravel(axes)
    if len(axes) < len(names):
        raise ValueError(f"axes: expected at least {len(names)} Axes, got {len(axes)}")
    x = np.asarray(steps, dtype=float)
    for ax, name in zip(axes, names):
        obs, pred = np.asarray(observed[name]), np.asarray(predicted[name])
        labels = (columns or {}).get(name) or [str(c) for c in range(obs.shape[1])]
        for c in range(min(obs.shape[1], max_columns)):
            ax.plot(x, obs[:, c], "o", ms=3, color=f"C{c}", alpha=0.7)
            ax.plot(x, pred[:, c], "-", color=f"C{c}", label=labels[c] if obs.shape[1] > 1 else None)
        ax.set_title(f"{name}  (R² {r2[name]:.3f})", fontsize=10)
        _step_axis(ax, x)
        if obs.shape[1] > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig = axes[0].figure
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return axes
