"""Model comparison on a real run: which UFM dynamics does the network follow?

:func:`compare` fits several model families to the same observables of one run — the standard
UFM (Θ = I), the coupled UFM (decay routed through Θ; fixed points = the standard UFM's, so
semantic structure is transient) and the linear-features UFM (λ_E > 0; decay not routed
through Θ, so attribute structure can persist) — and, when the run logged its feature kernel,
the zero-parameter predictions of :func:`kernel_prediction`. The table gives fitted parameters,
R² per observable, the residual norm and AIC/BIC (n·log(rss/n) + 2k, + k·log n, over the
weighted residuals: residuals along a trajectory are correlated, so read differences of a few
units as ties).

:func:`kernel_prediction` takes Θ from the run's logged empirical NTK and fits **only the time
scale**; decays come from the run's weight decay per step (λ = wd·lr/s, and λ_E = L·wd·lr/s
for the linear-features form with the backbone's homogeneity degree L). It compares a fixed
Θ(0) with the time-dependent Θ(t) (piecewise constant between the logged kernels) for both the
coupled and the linear-features dynamics, and reports how much of the error a fixed Θ costs.
"""

from __future__ import annotations

import math

import numpy as np

from .fitting import Fit
from .run import _check_run

__all__ = ["compare", "Comparison", "kernel_prediction", "KernelPrediction", "default_models", "kernel_models"]


def kernel_models() -> dict:
    """The four zero-parameter kernel predictions (only ``time_scale`` fitted), by name."""
    return {
        "coupled · NTK Θ(0)": dict(model="coupled", coupling="measured", params=["time_scale"]),
        "coupled · NTK Θ(t)": dict(model="coupled", coupling="measured-t", params=["time_scale"]),
        "linear-features · NTK Θ(0)": dict(model="linear-features", coupling="measured", params=["time_scale"]),
        "linear-features · NTK Θ(t)": dict(model="linear-features", coupling="measured-t", params=["time_scale"]),
    }


def default_models(run) -> dict:
    """The families compared by default: standard, coupled and linear-features with fitted
    parameters (attribute coupling when the run has attributes), plus the kernel predictions
    when the run logged a kernel."""
    out = {"standard": dict(model="standard")}
    if run.attributes is not None:
        out["coupled"] = dict(model="coupled")
        out["linear-features"] = dict(model="linear-features")
    elif run.kernel is not None:
        out["coupled"] = dict(model="coupled", coupling="measured-t")
        out["linear-features"] = dict(model="linear-features", coupling="measured-t")
    if run.kernel is not None:
        out.update(kernel_models())
    return out


def _as_fit(spec, common: dict) -> Fit:
    if isinstance(spec, Fit):
        f = Fit(**spec.get_params())
        if f.observables is None:
            f.observables = common.get("observables")
        return f
    if isinstance(spec, str):
        spec = {"model": spec}
    if not isinstance(spec, dict):
        raise TypeError(f"models: each model must be a family name, a dict of Fit arguments or a Fit, got "
                        f"{type(spec).__name__}")
    kw = {**common, **spec}
    model = kw.pop("model", "coupled")
    params = kw.pop("params", None)
    obs = kw.pop("observables", None)
    return Fit(model, params, obs, **kw)


class Comparison:
    """Fitted models side by side (returned by :func:`compare`).

    Attributes:
        run: the :class:`ufm.bridge.Run`.
        fits: dict name -> fitted :class:`ufm.bridge.Fit`, in the order given.
        observables: the observables every model was fitted to.
    """

    def __init__(self, run, fits: dict, observables):
        self.run = run
        self.fits = fits
        self.observables = tuple(observables)

    def __getitem__(self, name) -> Fit:
        return self.fits[name]

    def table(self) -> list[dict]:
        """One row per model: name, family, k, fitted parameters, R² per observable, residual
        norm, AIC, BIC, ΔAIC (to the best)."""
        rows = []
        for name, f in self.fits.items():
            row = {"model": name, **f.summary_row(), "residual_norm": math.sqrt(f.rss_)}
            rows.append(row)
        best = min(r["aic"] for r in rows)
        for r in rows:
            r["delta_aic"] = r["aic"] - best
        return rows

    def best(self, criterion: str = "aic") -> str:
        """Name of the model with the smallest ``criterion`` (``"aic"``, ``"bic"`` or ``"rss"``)."""
        if criterion not in ("aic", "bic", "rss"):
            raise ValueError(f"criterion: expected 'aic', 'bic' or 'rss', got {criterion!r}")
        return min(self.fits, key=lambda n: getattr(self.fits[n], criterion + "_"))

    def conventions(self) -> dict:
        """The centring convention of each reported observable that has one (name -> text)."""
        out = {}
        for f in self.fits.values():
            out.update(f.conventions())
        return out

    def r2(self, observable: str) -> dict:
        """R² of every model on one observable (name -> float)."""
        return {n: f.r2_.get(observable, float("nan")) for n, f in self.fits.items()}

    def report(self) -> str:
        """A text table of the comparison."""
        rows = self.table()
        r2names = []
        for r in rows:
            for k in r:
                if k.startswith("R2[") and k not in r2names:
                    r2names.append(k)
        w = max(len(r["model"]) for r in rows) + 2
        head = "model".ljust(w) + " k" + "".join(n[3:-1][:14].rjust(15) for n in r2names) + \
            "  resid.norm       AIC   ΔAIC       BIC   fitted parameters"
        lines = [f"model comparison on {self.run.source} (observables: {', '.join(self.observables)})", head,
                 "-" * len(head)]
        for r in rows:
            f = self.fits[r["model"]]
            pars = ", ".join(f"{k}={v:.3g}" for k, v in f.params_.items())
            lines.append(r["model"].ljust(w) + f"{r['k']:2d}" + "".join(
                f"{r.get(n, float('nan')):15.3f}" for n in r2names) + f"{r['residual_norm']:12.4g}{r['aic']:10.1f}"
                f"{r['delta_aic']:7.1f}{r['bic']:10.1f}   {pars}")
        conv = self.conventions()
        if conv:
            lines.append("centring: " + "; ".join(f"{k}: {v}" for k, v in conv.items()))
        lines.append(f"best by AIC: {self.best('aic')}; by BIC: {self.best('bic')}")
        return "\n".join(lines)

    def plot(self, fig=None, observables=("semantic_gap", "etf_distance")):
        """Observed (dots) and each model's prediction (lines) for a few observables.

        Returns:
            The matplotlib Figure.
        """
        first = next(iter(self.fits.values()))
        names = [o for o in observables if o in first.observed_]
        if not names:
            names = list(first.observed_)[:2]
        if fig is None:
            import matplotlib.pyplot as plt
            fig = plt.figure(figsize=(5.2 * len(names), 4.0))
        axes = np.atleast_1d(fig.subplots(1, len(names), squeeze=False)).ravel()
        x = self.run.steps.astype(float)
        for ax, name in zip(axes, names):
            ax.plot(x, first.observed_[name][:, 0], "ko", ms=3, label="run")
            for i, (mname, f) in enumerate(self.fits.items()):
                ls = "--" if "NTK" in mname else "-"
                ax.plot(x, f.predicted_[name][:, 0], ls, color=f"C{i}",
                        label=f"{mname} (R² {f.r2_.get(name, float('nan')):.2f})")
            ax.set_xscale("symlog", linthresh=max(1.0, float(x[x > 0].min()) if np.any(x > 0) else 1.0))
            ax.set_xlim(float(x.min()), float(x.max()))
            ax.set_xlabel("step")
            ax.set_title(name)
            ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def compare(run, models=None, observables=None, *, time="scale", **kwargs) -> Comparison:
    """Fit several UFM families to one run and tabulate them.

    Arguments:
        run: a :class:`ufm.bridge.Run`.
        models: None (:func:`default_models`), a list of family names / dicts of
            :class:`~ufm.bridge.Fit` arguments / Fit instances (named by position), or a dict
            name -> one of those.
        observables: observables shared by every model (default: those of
            :func:`ufm.bridge.observables.default_observables`).
        time: the time map of every model (``"scale"``, ``"power"``, ``"fixed"``,
            ``"optimizer"``).
        **kwargs: further :class:`~ufm.bridge.Fit` arguments applied to every model given by
            name or dict (e.g. ``init="isotropic"``, ``rtol=``).

    Returns:
        :class:`Comparison` (``.table()``, ``.report()``, ``.best()``, ``.plot()``).

    Raises:
        TypeError / ValueError: bad model specifications or arguments (named).
    """
    run = _check_run(run)
    if models is None:
        models = default_models(run)
    if isinstance(models, (list, tuple)):
        named = {}
        for i, spec in enumerate(models):
            base = spec if isinstance(spec, str) else (spec.get("model", f"model {i}") if isinstance(spec, dict)
                                                       else getattr(spec, "model", f"model {i}"))
            name = str(base) if isinstance(base, str) else f"model {i}"
            while name in named:
                name += "'"
            named[name] = spec
        models = named
    if not isinstance(models, dict) or not models:
        raise TypeError("models: expected None, a non-empty list or a non-empty dict of model specifications")
    from .observables import check_observables, default_observables
    obs = check_observables(observables if observables is not None else default_observables(run.problem()),
                            run.problem())
    common = {"observables": obs, "time": time, **kwargs}
    fits = {}
    for name, spec in models.items():
        f = _as_fit(spec, common)
        if f.observables is None or tuple(f.observables) != obs:
            f.observables = obs
        fits[name] = f.fit(run)
    return Comparison(run, fits, obs)


class KernelPrediction(Comparison):
    """The zero-parameter predictions from a run's logged kernel (see :func:`kernel_prediction`)."""

    def fixed_theta_cost(self) -> dict:
        """For each dynamics present: the residual sum of squares with a fixed Θ(0) over that with
        Θ(t) (> 1: the fixed kernel costs accuracy), and the R² of both on each observable.

        Returns:
            dict dynamics -> {"rss_ratio": float, "r2_fixed": dict, "r2_t": dict}.
        """
        out = {}
        for dyn in ("coupled", "linear-features"):
            a, b = self.fits.get(f"{dyn} · NTK Θ(0)"), self.fits.get(f"{dyn} · NTK Θ(t)")
            if a is None or b is None:
                continue
            out[dyn] = {"rss_ratio": a.rss_ / b.rss_ if b.rss_ > 0 else float("inf"), "r2_fixed": dict(a.r2_),
                        "r2_t": dict(b.r2_)}
        return out

    def report(self) -> str:
        """The comparison's text table, then what fixing the kernel at Θ(0) costs against Θ(t)."""
        lines = [super().report(), "", "cost of a fixed kernel (rss with Θ(0) / rss with Θ(t)):"]
        for dyn, c in self.fixed_theta_cost().items():
            parts = ", ".join(f"{k}: {c['r2_fixed'][k]:.3f} → {c['r2_t'][k]:.3f}" for k in c["r2_t"])
            lines.append(f"  {dyn:16s} {c['rss_ratio']:.3g}x   (R² fixed → time-dependent: {parts})")
        return "\n".join(lines)


def kernel_prediction(run, observables=None, *, dynamics=("coupled", "linear-features"), time="scale",
                      **kwargs) -> KernelPrediction:
    """Predict a run from its logged feature kernel with only the time scale fitted.

    For each of ``dynamics`` the model takes Θ from the run's logged empirical NTK — fixed at
    its first logged value, and time-dependent (piecewise constant between logged steps) — with
    decays fixed by the run's weight decay per step (linear-features: λ_E = L·wd·lr/s with L the
    metadata's ``homogeneity_degree``, else 1; λ_H = 0).

    Arguments:
        run: a :class:`ufm.bridge.Run` with a ``kernel``.
        observables: as in :func:`compare`.
        dynamics: any of ``"coupled"``, ``"linear-features"``.
        time: time map (``"scale"``: t = s·step with s fitted; ``"fixed"``: t = lr·step, nothing
            fitted; ``"power"``).
        **kwargs: further :class:`~ufm.bridge.Fit` arguments.

    Returns:
        :class:`KernelPrediction` (a :class:`Comparison` with :meth:`~KernelPrediction.fixed_theta_cost`).

    Raises:
        ValueError: the run has no kernel, or unknown dynamics.
    """
    run = _check_run(run)
    if run.kernel is None:
        raise ValueError(f"run: {run.source} has no logged kernel (key 'kernel'); nothing to predict from")
    dyn = (dynamics,) if isinstance(dynamics, str) else tuple(dynamics)
    for d in dyn:
        if d not in ("coupled", "linear-features"):
            raise ValueError(f"dynamics: expected 'coupled' and/or 'linear-features', got {d!r}")
    models = {}
    for name, spec in kernel_models().items():
        if spec["model"] in dyn:
            spec = dict(spec)
            if time == "fixed":
                spec["params"] = []
            elif time == "power":
                spec["params"] = ["time_scale", "time_power"]
            models[name] = spec
    cmp = compare(run, models, observables, time=time, **kwargs)
    return KernelPrediction(run, cmp.fits, cmp.observables)
