"""Fit UFM parameters to a real run: ``ufm.bridge.fit`` and the :class:`Fit` estimator.

The model predicts the run's Gram trajectory from its first checkpoint (or from an isotropic
small initialisation), at the run's checkpoints mapped to ODE time; least squares
(``scipy.optimize.least_squares``) adjusts a few parameters so that chosen observables
(:mod:`ufm.bridge.observables`) match.

**Parameters** (all > 0, fitted in log space; a parameter not fitted takes its value from
``fixed=``, else from the run, else a default):

================  =============================================================================
``time_scale``    s, ODE time per optimiser step (time map t = s·step); default the run's lr
``time_power``    p of the power time map t = s·step^p (``time="power"``); default 1
``lambda``        one weight decay for the whole model: λ_W = λ_H = λ (standard, coupled), or
                  λ_W = λ, λ_E = L·λ, λ_H = 0 (linear-features, L = ``degree``), or every
                  factor's decay (deep)
``decay_factor``  the same tie as ``lambda``, as a multiple of the run's own decay: λ = f·wd·lr/s
                  (default 1; needs the run's weight decay). It follows the time scale, so a
                  scan over s keeps the decay per step; the adaptive-optimiser defaults fit it
``lambda_W``,     the UFM's decays individually (exclusive with ``lambda`` for the blocks it
``lambda_H``,     ties)
``lambda_E``,
``lambda_b``
``init_scale``    ``init="run"``: factor c on the measured initial W and H (Grams × c²),
                  default 1; ``init="isotropic"``: σ with G_W = σ²I, G_H = σ²I, WH = 0,
                  default the measured rms feature norm
``beta``          β of the attribute coupling Θ = I + β²AᵀA (``coupling="attribute"``)
``lr_W``,         per-block rates η of the UFM (relative speeds of classifier and features)
``lr_H``
================  =============================================================================

**Families** (``model=``): ``"standard"``, ``"coupled"``, ``"linear-features"`` (:class:`ufm.UFM`)
and ``"deep"`` (:class:`ufm.DeepUFM`: L hidden linear layers between free features and the
classifier, ``lambda`` on every factor, started from the run's first checkpoint with identity
layers so that its Grams match exactly; L from ``layers=``, else the homogeneity degree − 1,
see :func:`homogeneity_degree`). Integrated in parameter space.

**Optimiser-aware defaults** (:func:`family_defaults`, the default comparison): for Adam and
AdamW runs (metadata ``optimizer``) every family uses the power time map, and the kernel rows
fit the decay as well, since decoupled, per-parameter-preconditioned steps are neither linear
in time nor decayed at wd·lr through the Euclidean kernel. A fit that uses a logged kernel on
such a run warns (the logged NTK is not preconditioned unless the metadata says
``kernel_preconditioned``).

Decays that are not fitted come from the run's ``weight_decay`` **per step**: PyTorch's SGD
and AdamW both shrink weights by lr·wd per step, which in ODE time t = s·step is a rate
λ = wd·lr/s (so a fitted time scale does not silently change the decay). Without lr the rate
is wd per unit time; without weight decay it is 0.

**Time maps** (``time=``): ``"fixed"`` t = lr·step (the run's lr, nothing fitted);
``"scale"`` t = s·step with s fitted; ``"power"`` t = s·step^p; ``"optimizer"`` the discrete
optimiser of the run itself (``ufm.train`` with GD/momentum/Adam/AdamW in parameter space from
the run's first checkpoint), with ``time_scale`` its learning rate.

**Speed.** Predictions integrate the exact width-free Gram ODE (``space="gram"``) whenever it
is valid (the initial Grams of width d >= N, K, or an isotropic start), so cost does not grow
with the width; residuals are cached per parameter vector and the time scale is first located
by a coarse scan. Where the flow is autonomous and the model does not depend on the time map
(t = s·step^p; no Θ(t), no decay tied to s), a prediction at another ``time_scale`` or
``time_power`` is the same path seen at other times: the Jacobian columns of those two are read
off the base prediction at shifted save times (:meth:`_Engine.time_columns`), and the scan's
time-scale candidates of one model share one integration (:meth:`_Engine.prefetch_scan`); a
prediction that reached its end is not integrated again when the step budget changes. With the
power map the local fit moves the time scale to the time at the run's geometric-mean step,
s·step_ref^p, which decorrelates it from p (:meth:`_Engine.pivot_time`; reported in s). A few
parameters against 50–100 checkpoints at N ≈ 16 take seconds. A Gram-space prediction ends where the model has settled at a *stable* equilibrium
(:mod:`ufm.bridge.settling`: remaining displacement below the tolerance and every eigenvalue
of the Jacobian negative, so a saddle plateau never ends it); its later saves hold that state
(``trajectory_.info["settled_from"]``). A deep-family prediction ends where it is certified
to be in the origin's basin (no bias), its later saves filled from the exact linear decay of
the factors to within the tolerance, or at a certified stable non-trivial minimum (the
symmetry orbit lifted off the Hessian; :mod:`ufm.bridge.deep_settling`). The
local fit (:func:`_optimise`) rejects trial points whose integration needs more than 10× the
steps of the best prediction so far (stiff or diverging corners), stops ("converged by
stall", a success) when the last 3 accepted iterations lowered n·log(rss), the AIC's part that
a fit moves, by less than 0.1 (:func:`_stalled`), or at once when the linearised model at an
accepted point promises less than 0.01 of it within the search box (:func:`_promised_gain`), jumps along its last step when two steps
line up (linear convergence in a valley: :func:`_extrapolate`, trf restarted from the jump),
and reuses the optimiser's last Jacobian and best prediction; its forward differences step by 3e-4 in log parameters and keep the
columns of parameters that no longer act or sit at a box edge (:class:`_HeldJacobian`);
``jac=`` takes exact Jacobians (e.g. from forward sensitivities) and ``method=`` another
integrator (default ``"auto"``, which switches to RODAS4 where predictions turn stiff). Once a
local-fit prediction has taken 0.2 s of CPU, the forward-difference columns of each Jacobian are
computed in forked worker processes (``UFM_JAC_WORKERS``, default the CPU count; 1 for serial;
every column at the step budget of the moment, so the results are the serial ones unless a
column itself becomes the best point, :func:`_open_pool`). :func:`fit_all` (used by ``compare``)
can fit families in parallel worker processes (``UFM_FIT_WORKERS``, default the CPU count; 1 for serial; see there).
"""

from __future__ import annotations

import functools
import math
import time as _time
import warnings

import numpy as np

from .observables import CONVENTIONS, FLOORS, check_observables, column_names, default_observables, observe
from .run import _check_run

__all__ = ["Fit", "fit", "FAMILIES", "PARAMS", "TIME_MAPS", "family_defaults", "homogeneity_degree", "run_optimizer",
           "ADAPTIVE_OPTIMIZERS", "fit_all"]

FAMILIES = ("standard", "coupled", "linear-features", "deep")
PARAMS = ("time_scale", "time_power", "lambda", "decay_factor", "lambda_W", "lambda_H", "lambda_E", "lambda_b", "init_scale",
          "beta", "lr_W", "lr_H")
TIME_MAPS = ("fixed", "scale", "power", "optimizer")
INITS = ("run", "isotropic")
_OPTIMIZERS = {"sgd": "gd", "gd": "gd", "momentum": "momentum", "adam": "adam", "adamw": "adamw"}
#: log-space half-widths of the search box around the starting value
_BOX = {"time_scale": 1e6, "init_scale": 1e3, "beta": 1e3, "lr_W": 1e3, "lr_H": 1e3, "decay_factor": 1e5}
_LAMBDA_RANGE = (1e-10, 10.0)
_POWER_RANGE = (0.2, 5.0)
_MAX_STEPS = 50_000      # integrator steps allowed per prediction (more: penalised as a failure)
_PENALTY = 30.0          # weighted residual given to saves a failed integration did not reach


class Fit:
    """Least-squares fit of a UFM family to a run (scikit-learn style: construct, then
    :meth:`fit`; results in attributes ending in ``_``).

    Arguments:
        model: ``"standard"`` (Θ = I), ``"coupled"`` (Θ ≠ I, decay through Θ),
            ``"linear-features"`` (λ_E > 0, decay not through Θ), or a :class:`ufm.UFM` whose
            family, coupling and parameters serve as template and fixed values.
        params: names of the parameters to fit (module table); default by family: standard
            ``time_scale, lambda``; coupled ``time_scale, lambda`` (+ ``beta`` with the
            attribute coupling); linear-features ``time_scale, lambda_W, lambda_E``
            (+ ``beta``); ``time_scale`` is dropped for ``time="fixed"``, ``time_power``
            added for ``time="power"``.
        observables: names from :data:`ufm.bridge.observables.OBSERVABLES`; default relation
            coefficients (or Gram cosines), semantic gap, ETF distance, norms.
        time: ``"fixed"``, ``"scale"`` (default), ``"power"`` or ``"optimizer"``.
        init: ``"run"`` (start from the run's first checkpoint, default) or ``"isotropic"``.
        coupling: Θ: None (family default: identity for standard, ``"attribute"`` otherwise),
            ``"attribute"`` (I + β²AᵀA), ``"identity"``, ``"measured"`` (the run's first logged
            kernel, fixed), ``"measured-t"`` (the logged kernels, piecewise constant between
            their steps: Θ(t)), or an (N, N) array.
        fixed: parameter name -> value for parameters not fitted (model units).
        x0: parameter name -> starting value for fitted parameters.
        degree: homogeneity degree L of the backbone for linear-features (λ_E = L·λ); default
            :func:`homogeneity_degree` (the metadata's ``homogeneity_degree``, else an estimate
            from the late decay of the feature norms, else 1); ``degree_`` and
            ``degree_source_`` say which.
        layers: hidden layers of the ``"deep"`` family (integer >= 0); default the degree − 1
            (the features of a degree-L homogeneous backbone are a product of L factors: H₀
            and L − 1 layers), at least 1.
        optimizer: for ``time="optimizer"``: ``"gd"``, ``"momentum"``, ``"adam"``, ``"adamw"``
            (default from the run's metadata ``optimizer``).
        space: ``"auto"`` (Gram space when valid), ``"gram"`` or ``"parameters"``.
        weights: observable name -> extra weight of its residuals (default 1 each; every
            observable is first scaled by its own spread, so each counts equally).
        rtol: integration tolerance of each prediction.
        max_nfev: budget of least-squares iterations (function evaluations, not counting the
            finite-difference Jacobian's nor the extrapolation's trial points; ``nfev_`` counts
            those too).
        max_time: seconds (> 0) after which the fit stops and keeps the best parameters
            evaluated so far (``message_`` says so); None for no limit.
        scan: locate the time scale by a coarse scan before the local fit.
        method: the integrator of the predictions (any ``method=`` of :func:`ufm.solve`;
            default ``"auto"``: an explicit pair that switches to RODAS4 where a prediction
            turns stiff, :data:`_METHOD`).
        jac: None (forward-difference Jacobians: one prediction per fitted parameter), or a
            callable ``jac(engine, p)`` returning the (n_residuals, k) Jacobian of
            ``engine.residuals(p)`` with respect to the log parameters (e.g. from forward
            sensitivities of the solution; ``engine.values(p)``, ``engine.make_model``,
            ``engine.initial`` and ``engine.times`` give the model it must differentiate).
        coarse: optimise first at the loose tolerance 1e-5, then polish at ``rtol`` from that
            optimum. Off by default: on the shipped real runs it made ``compare`` 15–20 %
            slower (predictions there take few steps, so the tolerance barely changes their
            cost, and the polish adds iterations).

    Attributes (after :meth:`fit`):
        params_: dict fitted parameter -> value. stderr_: dict -> standard error (from the
            Jacobian at the optimum; residuals along a trajectory are correlated, so read them
            as a lower bound). values_: every parameter used (fitted and fixed). bounds_: dict
            fitted parameter -> (lower, upper) of its search box; at_bounds_: the fitted
            parameters within :data:`BOUND_RTOL` of the box's log width of an edge.
        model_: the fitted :class:`ufm.UFM`. trajectory_: its predicted :class:`ufm.Trajectory`
            at the run's checkpoints (``steps`` = the run's steps, ``t`` = ODE times).
        observed_, predicted_: dict observable -> (T, m). residuals_: the weighted residual
            vector. r2_: dict observable -> R² (1 − SS_res/SS_tot about each column's time
            mean), for the fitted observables and, when defined, the semantic gap and the ETF
            distance. rss_, n_, k_, aic_, bic_: weighted residual sum of squares, residual
            count, number of fitted parameters and information criteria n·log(rss/n) + 2k,
            + k·log n. success_, message_, nfev_, wall_time_ (seconds, wall clock), cpu_time_
            (this process's CPU seconds, what to compare on a shared machine; without the
            Jacobian workers' when they ran, :func:`_open_pool`).

    Raises (from :meth:`fit`):
        TypeError / ValueError: bad arguments, naming them (unknown family, parameter or
            observable; ``"beta"`` without the attribute coupling; a measured coupling for a
            run without a kernel; ``time="fixed"`` without the run's lr; ...).
    """

    def __init__(self, model="coupled", params=None, observables=None, *, time="scale", init="run", coupling=None,
                 fixed=None, x0=None, degree=None, optimizer=None, space="auto", weights=None, rtol=1e-7,
                 max_nfev=25, max_time=120.0, scan=True, layers=None, method=None, jac=None, coarse=False):
        self.model = model
        self.params = params
        self.observables = observables
        self.time = time
        self.init = init
        self.coupling = coupling
        self.fixed = fixed
        self.x0 = x0
        self.degree = degree
        self.optimizer = optimizer
        self.space = space
        self.weights = weights
        self.rtol = rtol
        self.max_nfev = max_nfev
        self.max_time = max_time
        self.scan = scan
        self.layers = layers
        self.method = method
        self.jac = jac
        self.coarse = coarse

    def get_params(self) -> dict:
        """The constructor arguments (scikit-learn convention)."""
        return {k: getattr(self, k) for k in ("model", "params", "observables", "time", "init", "coupling", "fixed",
                                               "x0", "degree", "optimizer", "space", "weights", "rtol", "max_nfev",
                                               "max_time", "scan", "layers", "method", "jac", "coarse")}

    def __repr__(self):
        name = self.model if isinstance(self.model, str) else "UFM template"
        return f"Fit({name!r}, params={self.params!r}, time={self.time!r}, coupling={self.coupling!r})"

    def _check_budget(self) -> None:
        """max_time, max_nfev and rtol, checked before any work (a negative max_time used to
        stop the fit at once and return the starting parameters as if fitted)."""
        from .._validation import as_positive, as_positive_int
        if self.max_time is not None:
            as_positive(self.max_time, "max_time")
        as_positive_int(self.max_nfev, "max_nfev")
        rtol = as_positive(self.rtol, "rtol")
        if rtol >= 1:
            raise ValueError(f"rtol: expected a relative tolerance < 1, got {rtol!r}")

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, run) -> "Fit":
        """Fit the parameters to ``run``.

        Arguments:
            run: a :class:`ufm.bridge.Run`.

        Returns:
            self, with the attributes listed in the class docstring.
        """
        from scipy.optimize import least_squares

        started, cpu_started = _time.perf_counter(), _time.process_time()
        run = _check_run(run)
        self._check_budget()
        eng = _Engine(self, run)
        self.run_ = run
        self.family_ = eng.family
        self.param_names_ = eng.names
        self.observable_names_ = eng.obs_names
        self.engine_ = eng
        self.degree_, self.degree_source_ = eng.degree, eng.degree_source
        self.layers_ = eng.layers
        self.notes_ = list(eng.notes)
        ref = eng.start.copy()
        lo, hi = eng.bounds()
        eng.box = (lo, hi)
        eng.deadline = None if self.max_time is None else started + float(self.max_time)
        jac = np.zeros((0, 0))
        success, message, nfev = True, "nothing to fit", 0
        try:
            if self.scan and eng.names:
                ref = eng.search(ref, lo, hi, skip=set(self.x0 or ()))
            ref, lo, hi = eng.pivot_time(ref, lo, hi)
            eng.box = (lo, hi)
            if eng.names:
                jac, success, message, nfev = _optimise(eng, ref, lo, hi, self)
        except _OutOfTime:
            success, message = False, f"stopped by max_time = {self.max_time} s (best parameters so far kept)"
        finally:
            _close_pool(eng)
        eng.deadline = None
        eng.stage_rtol = eng.rtol
        p = eng.best_p if eng.best_p is not None else ref
        r = eng.best_r if eng.best_p is not None else eng.residuals(p)
        if jac.size and not np.array_equal(p, eng.last_jac_p):
            try:
                jac = eng.jacobian(p, upper=hi)
            finally:
                _close_pool(eng)             # the final Jacobian may have opened one again
        # the local fit's coordinates (pivot_time) -> the user's: the box of s at the fitted p
        self.at_bounds_ = [nm for nm, v, a, b in zip(eng.names, p, lo, hi) if _at_bound(v, a, b)]
        user = eng.user_params(p)
        scale = user / p
        jac = eng.user_jacobian(jac, p)
        self.params_ = dict(zip(eng.names, map(float, user)))
        self.bounds_ = {nm: (float(a * f), float(b * f)) for nm, a, b, f in zip(eng.names, lo, hi, scale)}
        self.values_ = eng.values(p)
        n, k = r.size, len(eng.names)
        rss = float(r @ r)
        if k and n > k and jac.size:
            s2 = rss / (n - k)
            cov = s2 * np.linalg.pinv(jac.T @ jac)
            se = user * np.sqrt(np.clip(np.diag(cov), 0.0, None))
        else:
            se = np.full(k, np.nan)
        self.stderr_ = dict(zip(eng.names, map(float, se)))
        self.residuals_ = r
        self.rss_, self.n_, self.k_ = rss, n, k
        safe = max(rss / n, 1e-300)
        self.aic_ = float(n * math.log(safe) + 2 * k)
        self.bic_ = float(n * math.log(safe) + k * math.log(n))
        self.model_, self.trajectory_, self.failed_at_ = eng.prediction(p)
        self.observed_ = eng.observed
        self.predicted_ = eng.observe_prediction(self.trajectory_)
        self.r2_ = {name: _r2(self.observed_[name], self.predicted_[name]) for name in eng.report_names}
        self.success_, self.message_, self.nfev_ = success, message, nfev
        self.wall_time_ = _time.perf_counter() - started
        self.cpu_time_ = _time.process_time() - cpu_started
        return self

    def predict(self, params: dict | None = None):
        """The model's predicted trajectory at the run's checkpoints.

        Arguments:
            params: fitted-parameter values to use (default the fitted ``params_``).

        Returns:
            :class:`ufm.Trajectory` (``steps`` = the run's steps).
        """
        self._check_fitted()
        eng = self.engine_
        vals = dict(self.params_ if params is None else params)
        unknown = set(vals) - set(eng.names)
        if unknown:
            raise ValueError(f"params: {sorted(unknown)} are not fitted parameters of this fit ({eng.names})")
        p = np.array([vals.get(nm, self.params_[nm]) for nm in eng.names])
        return eng.predict(eng.engine_params(p), keep=True)[1]

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise RuntimeError("this Fit is not fitted yet; call .fit(run) first")

    # -- output -------------------------------------------------------------------------------
    def summary_row(self) -> dict:
        """Scalars for a comparison table: family, fitted params, R² per observable, rss, aic, bic."""
        self._check_fitted()
        row = {"family": self.family_, "k": self.k_, "rss": self.rss_, "aic": self.aic_, "bic": self.bic_}
        row.update({f"{k}": v for k, v in self.params_.items()})
        row.update({f"R2[{k}]": v for k, v in self.r2_.items()})
        return row

    def conventions(self) -> dict:
        """The centring convention of each reported observable that has one (name -> text,
        :data:`ufm.bridge.observables.CONVENTIONS`)."""
        self._check_fitted()
        return {k: CONVENTIONS[k] for k in self.r2_ if k in CONVENTIONS}

    def report(self) -> str:
        """A text report: the model, fitted parameters with standard errors, fixed values, R² per
        observable (with the centring convention of the cosine-based ones), residual norm and
        information criteria."""
        self._check_fitted()
        eng = self.engine_
        lines = [f"fit of the {self.family_} UFM to {self.run_.source}",
                 f"  coupling {eng.coupling_desc}; time map {eng.time_desc}; init {self.init!r}; "
                 f"space {eng.space}; {self.n_} residuals, {self.k_} parameters, {self.nfev_} evaluations, "
                 f"{self.wall_time_:.1f} s" + ("" if self.success_ else f" (optimiser: {self.message_})")]
        lines.append("  fitted:")
        for k, v in self.params_.items():
            se = self.stderr_[k]
            lo, hi = self.bounds_[k]
            lines.append(f"    {k:12s} = {v:.5g}" + (f" ± {se:.2g}" if np.isfinite(se) else "")
                         + (f"   (at the bound of the search box {lo:.3g} … {hi:.3g})" if k in self.at_bounds_
                            else ""))
        if not self.params_:
            lines.append("    (none)")
        fixed = {k: v for k, v in self.values_.items() if k not in self.params_}
        if fixed:
            lines.append("  fixed:   " + ", ".join(f"{k} = {v:.4g}" for k, v in fixed.items()))
        ex = eng.derived(self.values_)
        if ex:
            lines.append("  derived: " + ", ".join(f"{k} = {v:.4g}" for k, v in ex.items()))
        lines.append("  R²:      " + ", ".join(f"{k} {v:.3f}" + ("" if k in eng.obs_names else " (not fitted)")
                                               for k, v in self.r2_.items()))
        conv = self.conventions()
        if conv:
            lines.append("  centring: " + "; ".join(f"{k}: {v}" for k, v in conv.items()))
        lines.append(f"  residual norm {math.sqrt(self.rss_):.4g}, AIC {self.aic_:.1f}, BIC {self.bic_:.1f}")
        if self.failed_at_ is not None:
            lines.append(f"  warning: the prediction stopped at t = {self.failed_at_:.4g} ({eng.last_error})")
        lines.extend(_family_lines(self))
        return "\n".join(lines)

    def plot(self, fig=None, observables=None):
        """Observed (markers) against predicted (lines) observables over log steps (drawn by
        :func:`ufm.plot.fit_panels`).

        Arguments:
            fig: optional matplotlib Figure (a new one otherwise).
            observables: which to draw (default: those in ``r2_``); multi-column observables
                draw at most 8 columns.

        Returns:
            The matplotlib Figure.
        """
        self._check_fitted()
        from .. import plot
        names = list(observables or self.r2_)
        unknown = [n for n in names if n not in self.r2_]
        if unknown:
            raise ValueError(f"observables: {unknown} were not fitted; expected names from {list(self.r2_)}")
        axes = None
        if fig is not None:
            axes = fig.subplots(math.ceil(len(names) / 3), min(len(names), 3), squeeze=False)
        prob = self.run_.problem()
        axes = plot.fit_panels(self.run_.steps, self.observed_, self.predicted_, {n: self.r2_[n] for n in names}, axes,
                               columns={n: column_names(n, prob) for n in names},
                               title=f"{self.family_} UFM ({self.engine_.coupling_desc}) vs {self.run_.source}: dots "
                                     "observed, lines predicted")
        return axes[0].figure


def fit(run, model="coupled", params=None, observables=None, *, time="scale", **kwargs) -> Fit:
    """Fit a UFM family to a run: ``Fit(model, params, observables, time=time, **kwargs).fit(run)``.

    Arguments:
        run: a :class:`ufm.bridge.Run`.
        model, params, observables, time, **kwargs: see :class:`Fit`.

    Returns:
        The fitted :class:`Fit` (``params_``, ``stderr_``, ``r2_``, ``trajectory_``,
        ``report()``, ``plot()``).

    Raises:
        TypeError / ValueError: bad arguments (named).
    """
    return Fit(model, params, observables, time=time, **kwargs).fit(run)


#: a fitted value counts as "at the bound" within this fraction of the search box's log width
#: (at least 2 %): β = 0.00101 against a bound of 0.001 on a box 1e-3 … 1e3 is at the bound
BOUND_RTOL = 0.01


def _at_bound(value: float, lo: float, hi: float) -> bool:
    """Whether a fitted value sits at (or within BOUND_RTOL of) an edge of its search box, in
    log space (parameters are fitted in log space)."""
    width = math.log(hi / lo) if hi > lo > 0 else 0.0
    tol = max(BOUND_RTOL * width, math.log(1.02))
    return bool(math.log(value / lo) <= tol or math.log(hi / value) <= tol)


def _r2(obs: np.ndarray, pred: np.ndarray) -> float:
    ok = np.all(np.isfinite(obs), axis=1)
    o, p = obs[ok], pred[ok]
    if not np.all(np.isfinite(p)):
        return float("-inf")
    ss_tot = float(np.sum((o - o.mean(axis=0)) ** 2))
    ss_res = float(np.sum((o - p) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


# ----------------------------------------------------------------------------------------------
# the engine: parameters -> model -> predicted trajectory -> residuals
# ----------------------------------------------------------------------------------------------

class _Engine:
    """Everything a fit precomputes from (settings, run), and the residual function."""

    def __init__(self, spec: Fit, run):
        from ..deep import DeepUFM
        from ..models import UFM
        self.run = run
        self.problem = run.problem()
        N, K = run.N, run.K
        model = spec.model
        self.template = None
        if isinstance(model, (UFM, DeepUFM)):
            if model.N != N or model.K != K:
                raise ValueError(f"model: the template UFM has N = {model.N}, K = {model.K}, the run N = {N}, K = {K}")
            self.template = model
            family = model.kind
            if family == "deep" and spec.layers is not None and int(spec.layers) != model.layers:
                raise ValueError(f"layers: {spec.layers!r} contradicts the template DeepUFM's layers = {model.layers}")
        elif isinstance(model, str) and model in FAMILIES:
            family = model
        else:
            raise ValueError(f"model: expected one of {FAMILIES} or a ufm.UFM / ufm.DeepUFM template, got {model!r}")
        self.family = family
        if spec.time not in TIME_MAPS:
            raise ValueError(f"time: expected one of {TIME_MAPS}, got {spec.time!r}")
        if spec.init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {spec.init!r}")
        self.time_map, self.init = spec.time, spec.init
        if family == "deep" and self.time_map == "optimizer":
            raise ValueError("time: 'optimizer' runs ufm.train, which integrates the UFM only; the deep family takes "
                             "'scale', 'power' or 'fixed'")
        if self.time_map == "fixed" and run.lr is None and "time_scale" not in (spec.fixed or {}):
            raise ValueError(f"time: 'fixed' maps t = lr·step but {run.source} has no lr; pass fixed={{'time_scale': ...}} "
                             "or use time='scale'")
        # coupling
        cp = spec.coupling
        if cp is None:
            if self.template is not None:
                cp = "template"
            else:
                cp = "identity" if family in ("standard", "deep") else "attribute"
        if isinstance(cp, str):
            if cp not in ("identity", "attribute", "measured", "measured-t", "template"):
                raise ValueError(f"coupling: expected None, 'identity', 'attribute', 'measured', 'measured-t' or an "
                                 f"(N, N) array, got {cp!r}")
            if cp == "attribute" and "attribute" not in self.problem.similarities:
                raise ValueError("coupling: 'attribute' needs a run with attributes")
            if cp in ("measured", "measured-t") and run.kernel is None:
                raise ValueError(f"coupling: {cp!r} needs a run with a logged kernel (key 'kernel'); {run.source} has none")
            self.coupling_kind = cp
            self.theta = None
        else:
            from .._validation import as_float_array
            self.theta = as_float_array(cp, "coupling", shape=(N, N))
            self.coupling_kind = "matrix"
        if family == "deep" and self.coupling_kind not in ("identity", "template"):
            raise ValueError(f"coupling: the deep family has no coupling Θ (its layers are the backbone); got "
                             f"coupling={spec.coupling!r}")
        if family == "standard" and self.coupling_kind not in ("identity", "template"):
            raise ValueError(f"coupling: the standard UFM has Θ = I; got coupling={spec.coupling!r} (use model='coupled')")
        if family != "standard" and self.coupling_kind == "identity" and family == "coupled":
            raise ValueError("coupling: 'identity' with model='coupled' is the standard UFM; use model='standard'")
        self.coupling_desc = {"identity": "Θ = I", "attribute": "Θ = I + β²AᵀA",
                              "measured": "Θ = measured kernel at the first logged step (fixed)",
                              "measured-t": "Θ(t) = measured kernels, piecewise between logged steps",
                              "template": "as in the template", "matrix": "Θ given"}[self.coupling_kind]
        # parameters
        names = spec.params
        if names is None:
            names = ["time_scale"]
            if family == "deep":
                names += ["lambda"]
            elif family == "linear-features":
                names += ["lambda_W", "lambda_E"]
            else:
                names += ["lambda"]
            if self.coupling_kind == "attribute":
                names.append("beta")
            if self.time_map == "fixed":
                names.remove("time_scale")
            if self.time_map == "power":
                names.append("time_power")
        if isinstance(names, str):
            names = [names]
        names = list(names)
        for nm in names:
            if nm not in PARAMS:
                raise ValueError(f"params: unknown parameter {nm!r}; expected names from {PARAMS}")
        if len(set(names)) != len(names):
            raise ValueError(f"params: repeated names in {names}")
        fixed = dict(spec.fixed or {})
        for nm, v in fixed.items():
            if nm not in PARAMS:
                raise ValueError(f"fixed: unknown parameter {nm!r}; expected names from {PARAMS}")
            if nm in names:
                raise ValueError(f"fixed: {nm!r} is also in params (fitted)")
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ValueError(f"fixed: {nm} must be a finite number >= 0, got {v!r}")
        explicit = set(names) | set(fixed)
        if "decay_factor" in explicit:
            if "lambda" in explicit:
                raise ValueError("params: 'decay_factor' and 'lambda' are the same decay (λ = f·wd·lr/s); give one")
            if not run.weight_decay:
                raise ValueError(f"params: 'decay_factor' is a multiple of the run's weight decay, and {run.source} "
                                 "has none; fit 'lambda' instead")
        if "lambda" in explicit or "decay_factor" in explicit:
            tied = ("lambda_W", "lambda_E") if family == "linear-features" else ("lambda_W", "lambda_H")
            clash = [t for t in tied if t in explicit]
            if clash:
                raise ValueError(f"params: 'lambda' ties {tied} for the {family} UFM; do not also give {clash}")
        if family == "deep":
            bad = sorted(explicit - _DEEP_PARAMS)
            if bad:
                raise ValueError(f"params: {bad} are not parameters of the deep family (it takes {sorted(_DEEP_PARAMS)}; "
                                 "'lambda' is the decay of every factor)")
        if "beta" in explicit and self.coupling_kind != "attribute":
            raise ValueError(f"params: 'beta' is the strength of the attribute coupling; this fit uses {self.coupling_desc}")
        if "time_scale" in names and self.time_map == "fixed":
            raise ValueError("params: 'time_scale' cannot be fitted with time='fixed' (t = lr·step); use time='scale'")
        if "time_power" in explicit and self.time_map != "power":
            raise ValueError("params: 'time_power' needs time='power'")
        self.names, self.fixed, self.explicit = names, fixed, explicit
        self.degree, self.degree_source = homogeneity_degree(run, spec.degree)
        self.layers = None
        if family == "deep":
            if self.template is not None:
                self.layers = self.template.layers
            elif spec.layers is not None:
                from .._validation import as_positive_int
                self.layers = as_positive_int(spec.layers, "layers", minimum=0)
            else:
                self.layers = max(1, int(round(self.degree)) - 1)
        self.notes = []
        optimizer = run_optimizer(run)
        if (self.coupling_kind in ("measured", "measured-t") and optimizer in ADAPTIVE_OPTIMIZERS
                and not run.meta.get("kernel_preconditioned")):
            note = (f"the logged kernel of {run.source} is the Euclidean (un-preconditioned) NTK, but the run used "
                    f"{optimizer}, whose per-parameter preconditioning changes the kernel the features follow; read "
                    "this fit's Θ as an approximation (metadata kernel_preconditioned = true silences this)")
            warnings.warn(note, UserWarning, stacklevel=4)
            self.notes.append(note)
        # optimiser
        if self.time_map == "optimizer":
            name = spec.optimizer or str(run.meta.get("optimizer", "")).lower()
            if name not in _OPTIMIZERS:
                raise ValueError(f"optimizer: time='optimizer' needs the run's optimiser (one of {sorted(_OPTIMIZERS)}); "
                                 f"the metadata says {run.meta.get('optimizer')!r}: pass optimizer=")
            opt = _OPTIMIZERS[name]
            if opt == "gd" and float(run.meta.get("momentum", 0) or 0) > 0:
                opt = "momentum"
            self.opt = opt
            self.time_desc = f"the discrete optimiser ({opt}) with lr = time_scale"
        else:
            self.time_desc = {"fixed": "t = lr·step", "scale": "t = s·step", "power": "t = s·step^p"}[self.time_map]
        # space
        d = run.d
        if spec.space not in ("auto", "gram", "parameters"):
            raise ValueError(f"space: expected 'auto', 'gram' or 'parameters', got {spec.space!r}")
        if not run.has_features:
            # a Gram-only run: its start is the exact factorisation of the joint Gram (width K + N)
            d = N + K
            if self.time_map == "optimizer":
                run.require_features("time='optimizer' (the discrete optimiser acts on parameters)")
            if family == "deep":
                run.require_features("the deep family (it starts from the run's features H, W)")
        if self.time_map == "optimizer" or family == "deep":
            if family == "deep" and spec.space == "gram":
                raise ValueError("space: the deep family is integrated in parameter space (its Grams close only on the "
                                 "balanced manifold, which the run's first checkpoint is not on)")
            self.space = "parameters"
        elif spec.space == "auto":
            self.space = "gram" if (self.init == "isotropic" or d >= max(N, K)) else "parameters"
        else:
            self.space = spec.space
        # observables
        obs = spec.observables if spec.observables is not None else default_observables(self.problem)
        self.obs_names = check_observables(obs, self.problem)
        extra = [n for n in ("semantic_gap", "etf_distance") if n not in self.obs_names]
        extra = [n for n in extra if n != "semantic_gap" or "semantic_gap" in default_observables(self.problem)]
        self.report_names = tuple(self.obs_names) + tuple(extra)
        g = run.grams()
        self.observed = observe(g["gram_H"], g["gram_W"], self.problem, self.report_names)
        w = dict(spec.weights or {})
        for nm in w:
            if nm not in self.obs_names:
                raise ValueError(f"weights: {nm!r} is not one of the fitted observables {self.obs_names}")
        self.scales = {}
        for nm in self.obs_names:
            o = self.observed[nm]
            spread = float(np.nanstd(o)) if np.isfinite(o).any() else 1.0
            self.scales[nm] = max(spread, FLOORS[nm]) * math.sqrt(o.shape[1]) / math.sqrt(float(w.get(nm, 1.0)))
        self.valid_rows = {nm: np.all(np.isfinite(self.observed[nm]), axis=1) for nm in self.obs_names}
        # initial state
        self.steps = run.steps.astype(np.float64)
        if self.init == "run" or run.has_features or g["gram_W"] is not None and g["logits"] is not None:
            W0, H0 = run.initial_factors()                    # (K, d), (N, d): rows are samples
        else:                                                 # Gram-only, isotropic start: only the scale is used
            H0 = np.sqrt(np.clip(np.diag(g["gram_H"][0]), 0.0, None))[:, None]
            W0 = np.full((K, 1), float(np.sqrt(np.mean(np.diag(g["gram_H"][0])))))
        self.W0, self.H0 = W0, H0.T                           # core convention: H is d×N
        self.b0 = None if run.b is None else np.asarray(run.b[0], dtype=np.float64)
        self.bias = run.b is not None
        self.gram_size = K * N + K * K + N * N + (K if self.bias else 0)
        self.rms0 = float(np.sqrt(np.mean(np.sum(H0 * H0, axis=1))))
        self.gram_scale = max(min(float(np.mean(np.sum(H0 * H0, axis=1))), float(np.mean(np.sum(W0 * W0, axis=1))),
                                  1.0), 1e-30)
        self.rtol = float(spec.rtol)
        self.stage_rtol = self.rtol          # the tolerance of the current optimisation stage
        self.method = spec.method if spec.method is not None else _METHOD
        self.jac = spec.jac
        if self.jac is not None and not callable(self.jac):
            raise TypeError(f"jac: expected None (finite differences) or a callable jac(engine, p), got "
                            f"{type(self.jac).__name__}")
        self.last_error = ""
        self._cache = {}
        self.deadline = None
        self.best_p, self.best_c = None, math.inf
        self.best_prediction = None
        self.best_r = None
        self.best_steps = None
        self.predictions = 0
        self.last_jac_p = None
        self.pool = None                     # worker processes for Jacobian columns (_open_pool)
        self.pool_failed = False             # a pool failed: this fit opens no other
        self.slowest = 0.0                   # CPU seconds of the slowest local-fit prediction so far
        self._shifted = {}                   # residuals at time-column points seen in a prediction (time_columns)
        self._seen = ([], False)             # the shifted Grams of the last scan evaluation (prefetch_scan)
        self._finished = {}                  # local-fit predictions that reached the end: (residuals, steps)
        self.last_reason = None
        self.integrations = 0                # predictions integrated (predictions also counts those read off one)
        self.box = None                      # the search box (lower, upper), set by Fit.fit
        self.pivot = 0.0                     # the local fit's time-scale coordinate (pivot_time); 0: the user's
        self.pivot_moves = []                # ... the parameters it scales
        # starting values
        start = []
        x0 = dict(spec.x0 or {})
        for nm in x0:
            if nm not in names:
                raise ValueError(f"x0: {nm!r} is not a fitted parameter ({names})")
        for nm in names:
            start.append(float(x0[nm]) if nm in x0 else self._guess(nm))
        self.start = np.array(start, dtype=np.float64)
        if np.any(~(self.start > 0)):
            raise ValueError(f"x0: starting values must be > 0, got {dict(zip(names, self.start))}")

    # -- parameter values ---------------------------------------------------------------------
    def _run_decay(self, s: float) -> float:
        wd = self.run.weight_decay
        if not wd:
            return 0.0
        lr = self.run.lr
        return wd * lr / s if lr else wd

    def _guess(self, nm: str) -> float:
        lr = self.run.lr
        s = lr if lr else 1.0
        wd = self.run.weight_decay or 0.0
        lam = (wd * (lr / s if lr else 1.0)) if wd else 1e-3
        if nm == "time_scale":
            return s
        if nm in ("time_power", "decay_factor"):
            return 1.0
        if nm in ("lambda", "lambda_W", "lambda_H", "lambda_b"):
            return lam
        if nm == "lambda_E":
            return self.degree * lam
        if nm == "init_scale":
            return 1.0 if self.init == "run" else self.rms0
        return 1.0                                            # beta, lr_W, lr_H

    def bounds(self):
        lo, hi = [], []
        for nm, v in zip(self.names, self.start):
            if nm.startswith("lambda"):
                a, b = _LAMBDA_RANGE
            elif nm == "time_power":
                a, b = _POWER_RANGE
            else:
                a, b = v / _BOX[nm], v * _BOX[nm]
            lo.append(min(a, v * 0.999))
            hi.append(max(b, v * 1.001))
        return np.array(lo), np.array(hi)

    def values(self, p) -> dict:
        """All parameter values (fitted + fixed + defaults) in model units."""
        v = dict(self.fixed)
        v.update(zip(self.names, map(float, p)))
        if self.pivot:                       # the local fit's coordinates: the time at the pivot step (pivot_time)
            back = self._pivot_shift(v["time_power"])
            for i in self.pivot_moves:
                v[self.names[i]] /= back
        tmpl = self.template.params() if self.template is not None else {}
        s = v.get("time_scale", self.run.lr if self.run.lr else 1.0)
        v.setdefault("time_scale", s)
        if self.time_map == "power":
            v.setdefault("time_power", 1.0)
        run_lam = self._run_decay(s)
        if "decay_factor" in v:
            v["lambda"] = v["decay_factor"] * run_lam
        fam = self.family
        tied = "lambda" in self.explicit or "decay_factor" in self.explicit
        if fam == "deep":
            lam = v.get("lambda", tmpl.get("lambda_W", run_lam))
            v.setdefault("lambda", lam)
            v["lambda_W"] = lam
            v["lambda_L"] = lam if tied else tmpl.get("lambda_L", lam)
            v["lambda_H"] = lam if tied else tmpl.get("lambda_H", lam)
            v["lambda_E"] = 0.0
        if "lambda" in v and fam != "deep":
            lam = v["lambda"]
            v.setdefault("lambda_W", lam)
            if fam == "linear-features":
                v.setdefault("lambda_E", self.degree * lam)
            else:
                v.setdefault("lambda_H", lam)
        v.setdefault("lambda_W", tmpl.get("lambda_W", run_lam))
        if fam == "linear-features":
            v.setdefault("lambda_H", tmpl.get("lambda_H", 0.0))
            v.setdefault("lambda_E", tmpl.get("lambda_E", self.degree * run_lam))
        else:
            v.setdefault("lambda_H", tmpl.get("lambda_H", run_lam))
            v.setdefault("lambda_E", tmpl.get("lambda_E", 0.0))
        if self.bias:
            v.setdefault("lambda_b", tmpl.get("lambda_b", v["lambda_W"]))
        v.setdefault("init_scale", 1.0 if self.init == "run" else self.rms0)
        if self.coupling_kind == "attribute":
            v.setdefault("beta", 1.0)
        v.setdefault("lr_W", tmpl.get("lr_W", 1.0))
        v.setdefault("lr_H", tmpl.get("lr_H", 1.0))
        return v

    # -- the local fit's time coordinate ------------------------------------------------------
    def pivot_time(self, p, lo, hi):
        """Move the fitted time scale of the power map t = s·step^p to the time at the run's
        pivot step, s̃ = s·step_ref^p, for the local fit (:func:`_optimise`), and return
        (p, lo, hi) in those coordinates (unchanged unless both ``time_scale`` and
        ``time_power`` are fitted).

        Why: with log t = log s + p·log step, every change of p must be paid back in log s by
        p·log(step) at the steps the fit weighs, so (log s, log p) lie in a narrow oblique
        valley that trf, with its spherical trust region, crawls along (transformer_hierarchy_adamw's
        linear-features fit: 17 Jacobians, log s from 0.37 to −0.33 while p went 1.16 → 1.47, the
        ratio Δlog s/Δp = −5.2 = −log 180 ≈ −log of the run's typical step). About
        step_ref = the geometric mean of the positive checkpoint steps, log s̃ and p are
        nearly independent. A fitted ``decay_factor`` (λ = f·wd·lr/s) moves with s by the same
        factor, f̃ = f·step_ref^p, so that λ = f̃·wd·lr/s̃ does not change with p either
        (mlp_factorial_adam's linear-features · NTK Θ(t) crawled along log s = log f + const,
        λ fixed, for 22 Jacobians). Where the model depends on s otherwise (the run's decay per
        step, λ = wd·lr/s, not fitted) the coordinates stay the user's: a fixed s̃ would move
        that decay with p. The scan keeps the user's coordinates (its grids, and so the basin
        it picks, are unchanged); :meth:`values` maps back, so the model and its time map are
        exactly those at the same (s, p, f); the boxes of s and f move at the scan's p (the same
        log widths). :meth:`user_params` and :meth:`user_jacobian` map results back."""
        moved = self._pivot_moves()
        if moved is None:
            return p, lo, hi
        steps = self.steps[self.steps > 0]
        q = np.array(p, dtype=np.float64)
        q[moved] *= 2.0
        if not steps.size or not _same_model(self.values(p), self.values(q)):
            return p, lo, hi
        self.pivot = float(np.mean(np.log(steps)))
        self.pivot_moves = moved
        p, lo, hi = (np.array(a, dtype=np.float64) for a in (p, lo, hi))
        shift = self._pivot_shift(p[self.names.index("time_power")])
        for a in (p, lo, hi):
            a[moved] *= shift
        # the residuals cached so far are keyed by parameter vectors in the user's coordinates
        # (the best point is the local fit's own: the scan records none, _optimise resets it)
        for store in (self._cache, self._finished, self._shifted):
            store.clear()
        return p, lo, hi

    def _pivot_moves(self):
        """Indices that :meth:`pivot_time` scales (time_scale, + decay_factor), or None."""
        if not (self.time_map == "power" and "time_scale" in self.names and "time_power" in self.names):
            return None
        return [self.names.index(nm) for nm in ("time_scale", "decay_factor") if nm in self.names]

    def _pivot_shift(self, power: float) -> float:
        return math.exp(power * self.pivot)

    def user_params(self, p) -> np.ndarray:
        """Parameters ``p`` of the local fit's coordinates (:meth:`pivot_time`) in the user's."""
        p = np.array(p, dtype=np.float64)
        if self.pivot:
            p[self.pivot_moves] /= self._pivot_shift(p[self.names.index("time_power")])
        return p

    def engine_params(self, p) -> np.ndarray:
        """The inverse of :meth:`user_params`."""
        p = np.array(p, dtype=np.float64)
        if self.pivot:
            p[self.pivot_moves] *= self._pivot_shift(p[self.names.index("time_power")])
        return p

    def user_jacobian(self, J, p) -> np.ndarray:
        """A Jacobian in the local fit's log coordinates at ``p`` (its coordinates) in the user's:
        log s̃ = log s + p·pivot (and log f̃ = log f + p·pivot), so ∂r/∂log p (user) =
        ∂r/∂log p + p·pivot·(∂r/∂log s̃ + ∂r/∂log f̃); the other columns are unchanged."""
        J = np.array(J, dtype=np.float64)
        if self.pivot and J.size:
            ip = self.names.index("time_power")
            J[:, ip] += float(p[ip]) * self.pivot * J[:, self.pivot_moves].sum(axis=1)
        return J

    def derived(self, v) -> dict:
        """Interpretable combinations: decay per step and the equivalent weight decay."""
        out = {}
        s = v["time_scale"]
        if self.time_map in ("scale", "optimizer", "fixed"):
            out["lambda_W·s (decay per step)"] = v["lambda_W"] * s
            if self.run.lr:
                out["equivalent weight decay λ_W·s/lr"] = v["lambda_W"] * s / self.run.lr
                out["s/lr"] = s / self.run.lr
        return out

    # -- model and prediction -----------------------------------------------------------------
    def times(self, v) -> tuple[np.ndarray, float]:
        s = v["time_scale"]
        if self.time_map == "power":
            t = s * self.steps ** v["time_power"]
        else:
            t = s * self.steps
        return t, float(t[0])

    def make_model(self, v):
        from ..models import UFM
        prob = self.problem
        if self.family == "deep":
            from ..deep import DeepUFM
            loss = self.template.loss_name if self.template is not None else "ce"
            return DeepUFM(prob, layers=self.layers, loss=loss, lambda_W=v["lambda_W"], lambda_L=v["lambda_L"],
                           lambda_H=v["lambda_H"], bias=self.bias, lambda_b=v.get("lambda_b", 0.0), lr_W=v["lr_W"],
                           lr_L=v["lr_W"], lr_H=v["lr_H"])
        kind = self.coupling_kind
        if kind == "identity":
            cp = None
        elif kind == "attribute":
            cp = prob.coupling("attribute", v["beta"])
        elif kind == "measured":
            cp = self.run.coupling("fixed")
        elif kind == "measured-t":
            if self.time_map == "optimizer":
                cp = self.run.coupling("piecewise", time_scale=v["time_scale"])
            elif self.time_map == "power":
                from ..models import PiecewiseCoupling
                cp = self.run.coupling("piecewise", time_scale=1.0)
                if isinstance(cp, PiecewiseCoupling):
                    cp = PiecewiseCoupling(v["time_scale"] * np.asarray(cp.times) ** v["time_power"], cp.kernels)
            else:
                cp = self.run.coupling("piecewise", time_scale=v["time_scale"])
        elif kind == "template":
            cp = self.template.coupling
        else:
            cp = self.theta
        loss = self.template.loss_name if self.template is not None else "ce"
        return UFM(prob, loss=loss, lambda_W=v["lambda_W"], lambda_H=v["lambda_H"], lambda_E=v["lambda_E"],
                   bias=self.bias, lambda_b=v.get("lambda_b", 0.0), coupling=cp, lr_W=v["lr_W"], lr_H=v["lr_H"])

    def initial(self, v, model):
        from ..models import GramState, State
        c = v["init_scale"]
        if self.init == "run":
            W, H = c * self.W0, c * self.H0
        else:
            K, N = self.run.K, self.run.N
            W = np.zeros((K, K + N))
            H = np.zeros((K + N, N))
            W[:, :K] = c * np.eye(K)
            H[K:, :] = c * np.eye(N)
        b = None
        if self.bias:
            b = self.b0.copy() if self.init == "run" else np.zeros(self.run.K)
        if self.family == "deep":
            from ..deep import DeepState
            # identity layers: F_L = H₀, so the start's Grams are the run's exactly
            layers = np.broadcast_to(np.eye(H.shape[0]), (self.layers,) + (H.shape[0],) * 2)
            return DeepState(W, layers, H, b)
        if self.space == "gram":
            return GramState(W @ H, W @ W.T, H.T @ H, b)
        return State(W, H, b)

    def predict(self, p, keep=False, max_steps=None, rtol=None, shifted=()):
        """(model, Trajectory at the run's steps, t of failure or None).

        ``shifted``: offsets τ (arrays of T times after the first save) at which the same
        integration also saves (it runs on to the latest); their Grams are in
        ``trajectory.info["shifted"]``, a list of (gram_H, gram_W, saves reached) (NaN beyond
        a failure; :meth:`time_columns`, :meth:`prefetch_scan`)."""
        from ..errors import IntegrationError
        from ..integration import solve
        from ..trajectory import Trajectory
        from .settling import solve_settling
        v = self.values(p)
        model = self.make_model(v)
        init = self.initial(v, model)
        failed = None
        T = self.steps.size
        where = None                 # indices of the run's saves (then of each shifted set) in the union
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                if self.time_map == "optimizer":
                    tr = self._train(model, init, v)
                else:
                    t, t0 = self.times(v)
                    if shifted:
                        # one integration saves at the run's times and at the shifted ones (an
                        # autonomous flow: a prediction at another time map is the same path at
                        # other times); dense output, so the steps are the base prediction's
                        sets = [t] + [t0 + np.asarray(tau, dtype=np.float64) for tau in shifted]
                        t, inverse = np.unique(np.concatenate(sets), return_inverse=True)
                        where = inverse.reshape(len(sets), T)
                    c2 = v["init_scale"] ** 2 * self.gram_scale if self.init == "run" else v["init_scale"] ** 2
                    rt = self.rtol if rtol is None else rtol
                    kw = dict(t0=t0, rtol=rt, method=self.method, atol=rt * 1e-3 * min(c2, 1.0),
                              save=("gram_W", "gram_H", "logits"), max_steps=int(max_steps or _MAX_STEPS))
                    if _SETTLE and self.space == "gram" and self.family != "deep" and self.gram_size <= _SETTLE_MAX_STATE:
                        # ends at a stable equilibrium (never a saddle), to the tolerance: ufm.bridge.settling
                        tr = solve_settling(model, init, t, **kw)
                    elif _DEEP_SETTLE and self.family == "deep":
                        # ends in the origin's basin (certified linear tail) or at a certified stable
                        # minimum, to the tolerance: ufm.bridge.deep_settling
                        from .deep_settling import solve_deep_settling
                        tr = solve_deep_settling(model, init, t, **kw)
                    else:
                        tr = solve(model, init, t, space=self.space, **kw)
        except IntegrationError as err:
            tr = err.trajectory
            failed = float(err.t)
            self.last_error = str(err).split(".")[0]
            self.last_reason = err.reason
        extra = []
        if where is not None:
            n_all = int(where.max()) + 1
            reached = len(tr) if tr is not None else 0
            if tr is not None and len(tr) < n_all:
                tr = _pad(tr, n_all)
            if tr is not None:
                extra = [(tr.gram_H[w], tr.gram_W[w], int(np.sum(w < reached))) for w in where[1:]]
            w = where[0]
            tr = Trajectory(t=tr.t[w], loss=_take(tr.loss, w), data_loss=_take(tr.data_loss, w),
                            gram_W=_take(tr.gram_W, w), gram_H=_take(tr.gram_H, w), logits=_take(tr.logits, w),
                            problem=tr.problem, model=tr.model, info=tr.info)
        if tr is not None and len(tr) < self.steps.size:
            tr = _pad(tr, self.steps.size)
        tr = Trajectory(t=tr.t, loss=tr.loss, data_loss=tr.data_loss, steps=self.run.steps.copy(),
                        gram_W=tr.gram_W, gram_H=tr.gram_H, logits=tr.logits, problem=self.problem, model=model,
                        info={**tr.info, "fit": "ufm.bridge", "time_map": self.time_desc,
                              **({"shifted": extra} if shifted else {})})
        return model, tr, failed

    def _train(self, model, init, v):
        from ..training import train
        s0 = int(self.run.steps[0])
        rel = (self.run.steps - s0).astype(np.int64)
        meta = self.run.meta
        kw = {}
        if self.opt == "momentum":
            kw["momentum"] = float(meta.get("momentum", 0.9))
            kw["nesterov"] = bool(meta.get("nesterov", False))
        if self.opt in ("adam", "adamw") and "betas" in meta:
            kw["betas"] = tuple(meta["betas"])
        tr = train(model, init, int(rel[-1]), v["time_scale"], self.opt, save_steps=rel,
                   save=("gram_W", "gram_H", "logits"), **kw)
        return tr

    def observe_prediction(self, tr) -> dict:
        return observe(tr.gram_H, tr.gram_W, self.problem, self.report_names)

    def residuals(self, p, max_steps: int | None = None, shifted=()) -> np.ndarray:
        """Weighted residual vector at parameters ``p`` (model units), cached per (p, budget,
        tolerance). ``max_steps`` given: a scan evaluation (loose tolerance, that budget);
        otherwise the stage tolerance ``stage_rtol`` and the early-rejection budget
        (:meth:`step_budget`). ``shifted`` (a scan evaluation, :meth:`prefetch_scan`): further
        save offsets, their Grams left in ``_seen``."""
        scan = max_steps is not None
        rtol = max(self.rtol, _SCAN_RTOL) if scan else self.stage_rtol
        budget = int(max_steps) if scan else self.step_budget()
        key = self._key(p, budget, rtol, scan)
        if key in self._cache:
            return self._cache[key]
        done = None if scan else self._finished.get(self._point(p, rtol))
        if done is not None and done[1] <= budget:
            # predicted to the end under another budget (a new best point changed it): the budget
            # only cuts a prediction short, so this one's residuals stand (the local fit's
            # Jacobian at an accepted point used to integrate it again)
            self._cache[key] = done[0]
            return done[0]
        if self.deadline is not None and _time.perf_counter() > self.deadline:
            raise _OutOfTime()
        c0 = _time.process_time()
        shifts = [] if scan else self._shifts(p)
        out, model, tr, failed = self._evaluate(p, budget, rtol, list(shifted) if scan else [tau for _, tau in shifts])
        if not scan:
            self.slowest = max(self.slowest, _time.process_time() - c0)
        seen = tr.info.pop("shifted", [])
        if scan:
            self._seen = (seen, failed is not None and self.last_reason != "max_steps")
            seen = []
        elif failed is None:
            if len(self._finished) > 2000:
                self._finished.clear()
            self._finished[self._point(p, rtol)] = (out, _steps_of(tr.info))
        if seen and failed is None:
            if len(self._shifted) > 200:
                self._shifted.clear()
            need = _steps_of(tr.info)
            for (q, _), (gH, gW, _) in zip(shifts, seen):
                self._shifted[self._point(q, rtol)] = (self._residual_vector(gH, gW, None), tr.info, need)
        self._record(key, p, out, scan, model, tr, failed, tr.info)
        return out

    def time_columns(self, p) -> dict:
        """column index -> the Jacobian's point for the fitted time parameters (``time_scale``,
        ``time_power``) whose prediction is the prediction at ``p`` seen at other times: with
        the time maps t = s·step^p the model and its start do not depend on s and p (unless a
        decay is tied to s, ``decay_factor`` or the run's decay per step), and for an autonomous
        flow (no Θ(t), no optimiser map) the state at a save is y(t − t₀) of one path. Their
        columns step backward (p·e^(−h): the shifted saves stay within the prediction's horizon,
        so they cost the base prediction nothing and leave its steps as they were,
        :meth:`residuals`); forward only where the backward step would leave the search box
        (a time power at its lower bound; then the base prediction runs on by that step's
        share of its horizon, e^h − 1 = 3e-4, and its saves move by its interpolation error).
        Forward steps throughout (the other columns' direction) were tried: they move every
        base prediction by that interpolation error, which at the coarse stage's rtol 1e-5
        moved test_coarse_stage_reaches_the_same_optimum's optimum by 3.5e-5 (its bound 3e-5),
        and they did not keep every non-converged row where it was either (mlp_factorial_sgd's
        linear-features, xtol: rss 228.68 -> 232.18 forward, 232.68 backward)."""
        out = {}
        if (not _SHIFT_COLUMNS or self.jac is not None or self.time_map not in ("scale", "power")
                or self.coupling_kind not in ("identity", "attribute", "measured", "matrix")):
            return out
        v = self.values(p)
        lo, hi = self.box if self.box is not None else (np.zeros(len(p)), np.full(len(p), np.inf))
        for i, nm in enumerate(self.names):
            if nm not in ("time_scale", "time_power"):
                continue
            # decay_factor (λ = f·wd·lr/s) moves with s: stepping both keeps λ, so the point is
            # again the base path at other times, along the direction e_s + e_f (jacobian)
            move = [i] + ([self.names.index("decay_factor")] if nm == "time_scale" and "decay_factor" in self.names
                          else [])
            for h in (-_DIFF_STEP, _DIFF_STEP):          # backward first; forward at a lower edge
                q = np.array(p, dtype=np.float64)
                q[move] *= math.exp(h)
                if np.all(q[move] >= lo[move]) and np.all(q[move] <= hi[move]):
                    break
            else:
                continue
            if not _same_model(v, self.values(q)):
                continue                     # the model itself moves with it (a decay tied to s)
            out[i] = q
        return out

    def _shifts(self, p) -> list:
        """(q, τ) for each :meth:`time_columns` point q: its save times after its first save."""
        out = []
        for q in self.time_columns(p).values():
            tq, tq0 = self.times(self.values(q))
            tau = tq - tq0
            if np.all(np.isfinite(tau)):
                out.append((q, tau))
        return out

    def prefetch_scan(self, points, max_steps) -> None:
        """Evaluate the scan points ``points`` that differ only in ``time_scale`` (from one
        another) in one integration where the flow is autonomous and the model does not depend
        on the time scale (:meth:`time_columns`' condition): the prediction with the largest
        time scale, saving also at the others' times (t − t₀ = s·(step^p − step₀^p) scales
        with s, so they lie within its horizon); the others' residuals are cached as scan
        evaluations. Where the step budget ran out first, a point beyond it is penalised from
        the same save on as its own prediction (on the same path, it runs out at the same
        step); where the integration stopped for another reason (stiff, non-finite: judged on
        its own horizon) such points are left to be predicted on their own. So every cached
        residual is what the point's own prediction gives, to the tolerance (the path is the
        same; only ``auto``'s stiff trials, which look at the horizon, can take other steps)."""
        if (not _SHIFT_COLUMNS or self.time_map not in ("scale", "power") or "time_scale" not in self.names
                or self.coupling_kind not in ("identity", "attribute", "measured", "matrix")):
            return
        its = self.names.index("time_scale")
        budget, rtol = int(max_steps), max(self.rtol, _SCAN_RTOL)
        todo, keys = [], set()
        for q in points:
            q = np.asarray(q, dtype=np.float64)
            key = self._key(q, budget, rtol, True)
            if key not in self._cache and key not in keys:
                todo.append(q)
                keys.add(key)
        if len(todo) < 2:
            return
        base = max(todo, key=lambda q: q[its])
        others = [q for q in todo if q is not base]
        rest = np.arange(base.size) != its
        vb = self.values(base)
        t, t0 = self.times(vb)
        taus = []
        for q in others:
            vq = self.values(q)
            if not np.array_equal(q[rest], base[rest]) or not _same_model(vb, vq):
                return                       # not one model at several time scales
            tq, tq0 = self.times(vq)
            taus.append(tq - tq0)
            if not (np.all(np.isfinite(taus[-1])) and float(taus[-1].max()) <= float(t[-1] - t0)):
                return
        self.residuals(base, max_steps=budget, shifted=taus)
        seen, other_failure = self._seen
        self._seen = ([], False)
        T = self.steps.size
        for q, (gH, gW, n_ok) in zip(others, seen):
            if n_ok < T and other_failure:
                continue                     # stopped as stiff or non-finite: judged on its own horizon
            # short of its horizon only when the step budget ran out first: its own prediction,
            # on the same path, runs out at the same step (its saves after that are penalised)
            r = self._residual_vector(gH, gW, None if n_ok >= T else 0.0, n_ok)
            self._record(self._key(q, budget, rtol, True), q, r, True, None, None, None, {})

    def take_shifted(self, q) -> None:
        """Record the residuals at a :meth:`time_columns` point ``q`` (seen in an earlier
        prediction) in the cache at the current budget, as if it had been predicted now, when
        that prediction's steps fit the budget."""
        budget, rtol = self.step_budget(), self.stage_rtol
        key = self._key(q, budget, rtol, False)
        if key in self._cache:
            return
        entry = self._shifted.pop(self._point(q, rtol), None)
        if entry is not None and entry[2] <= budget:
            self._record(key, q, entry[0], False, None, None, None, entry[1])

    @staticmethod
    def _point(p, rtol) -> bytes:
        return np.asarray(p, dtype=np.float64).tobytes() + bytes(repr(rtol), "ascii")

    def _key(self, p, budget, rtol, scan) -> bytes:
        return np.asarray(p, dtype=np.float64).tobytes() + bytes(f"{budget} {rtol!r} {scan}", "ascii")

    def _evaluate(self, p, budget, rtol, shifted=()):
        """(residual vector, model, Trajectory, t of failure) of one prediction, uncached
        (``shifted``: as :meth:`predict`)."""
        model, tr, failed = self.predict(p, max_steps=budget, rtol=rtol, shifted=shifted)
        self.integrations += 1
        n_ok = len(tr) if failed is None else int(np.sum(np.isfinite(tr.t)))
        return self._residual_vector(tr.gram_H, tr.gram_W, failed, n_ok), model, tr, failed

    def _residual_vector(self, gram_H, gram_W, failed, n_ok=None) -> np.ndarray:
        """The weighted residuals of predicted Grams (saves from ``n_ok`` on penalised when the
        prediction ``failed``)."""
        parts = self.scaled_residuals(observe(gram_H, gram_W, self.problem, self.obs_names))
        if failed is not None:
            for r in parts:
                r[n_ok:] = _PENALTY
        return np.concatenate([r.ravel() for r in parts])

    def scaled_residuals(self, predicted: dict, nonfinite: float = _PENALTY) -> list:
        """[(T, m) residuals of each observable, in ``obs_names`` order]: ``predicted``
        (observable -> (T, m)) minus the observations, divided by the fit's scale of it;
        checkpoints where the observation is undefined count 0, a non-finite value counts
        ``nonfinite``."""
        parts = []
        for nm in self.obs_names:
            r = (np.asarray(predicted[nm], dtype=np.float64) - self.observed[nm]) / self.scales[nm]
            r[~self.valid_rows[nm]] = 0.0
            r[~np.isfinite(r)] = nonfinite
            parts.append(r)
        return parts

    def _record(self, key, p, out, scan, model, tr, failed, info) -> None:
        """Cache a residual vector and keep the best prediction (``tr`` None: evaluated in a
        worker process, so the best's trajectory is recomputed when asked for)."""
        self.predictions += 1
        if len(self._cache) > 2000:
            self._cache.clear()
        self._cache[key] = out
        c = float(out @ out)
        if not scan and c < self.best_c:
            self.best_p, self.best_c = np.array(p, dtype=np.float64), c
            self.best_prediction = None if tr is None else (key, model, tr, failed)
            self.best_r = out
            self.best_steps = _steps_of(info)
            if "settled_from" in info:
                # its steps end where it settled: a trial that does not settle is no stiffer for
                # needing more (as a budget they cut such trials and distorted the fit: measured on
                # the settled Θ(t) rows, rss +4 % and +10 %)
                self.best_steps = _MAX_STEPS

    def columns_in_workers(self, points) -> None:
        """Evaluate the uncached local-fit ``points`` (a Jacobian's columns) in the fit's worker
        processes (:data:`_JAC_WORKERS`) and record them as :meth:`residuals` would; every point
        gets the step budget of the moment (serially a column that became the best changed the
        next column's budget)."""
        budget, rtol = self.step_budget(), self.stage_rtol
        todo = [q for q in points if self._key(q, budget, rtol, False) not in self._cache]
        if self.pool is None or len(todo) < 2:
            return
        if self.deadline is not None and _time.perf_counter() > self.deadline:
            raise _OutOfTime()
        try:
            results = list(self.pool.map(_column_in_worker, [(q, budget, rtol) for q in todo]))
        except Exception as exc:
            # a worker died (killed, out of memory) or could not be reached: nothing is lost, the
            # columns are computed serially by the caller (where an error of the prediction
            # itself is raised again), and this fit opens no further pool
            import warnings
            warnings.warn(f"a Jacobian worker process of the {self.family!r} fit failed "
                          f"({type(exc).__name__}: {exc}); "
                          "computing its columns serially from here (UFM_JAC_WORKERS=1 avoids the workers)",
                          RuntimeWarning, stacklevel=2)
            _close_pool(self)
            self.pool_failed = True
            return
        self.integrations += len(todo)
        for q, (out, failed, info) in zip(todo, results):
            self._record(self._key(q, budget, rtol, False), q, out, False, None, None, failed, info)
            if failed is None:
                self._finished[self._point(q, rtol)] = (out, _steps_of(info))

    def step_budget(self) -> int:
        """Integrator steps allowed to one prediction of the local fit: a fixed multiple of
        what the best prediction so far needed (at least :data:`_MIN_BUDGET`, at most
        :data:`_MAX_STEPS`). A trial point whose integration needs far more — a stiff or
        diverging corner of parameter space — is rejected (its unreached saves penalised)
        after that budget instead of being integrated to the end."""
        if self.best_steps is None:
            return _MAX_STEPS
        return int(min(_MAX_STEPS, max(_MIN_BUDGET, _BUDGET_FACTOR * self.best_steps)))

    def prediction(self, p):
        """(model, Trajectory, t of failure) at ``p`` and the fit's tolerance: the best
        prediction kept by :meth:`residuals` when it is that one, else a fresh one."""
        kept = self.best_prediction
        if kept is not None and self.best_p is not None and np.array_equal(self.best_p, p) \
                and self.stage_rtol == self.rtol:
            _, model, tr, failed = kept
            if failed is None:
                return model, tr, failed
        return self.predict(p, keep=True)

    def jacobian(self, p, upper=None, columns=None) -> np.ndarray:
        """Jacobian of the residuals in log parameters at p: the fit's ``jac`` callable when
        given, else forward differences (one prediction per fitted parameter) with the step
        :data:`_DIFF_STEP` in log parameters — backward for a parameter whose forward step
        would pass ``upper`` (the search box's upper bounds, model units), so that no
        prediction leaves the box. ``columns`` (forward differences only): a boolean mask of
        the columns to compute, the others are left 0 (and ``last_jac_p`` is not set)."""
        if self.jac is not None:
            J = np.asarray(self.jac(self, np.array(p, dtype=np.float64)), dtype=np.float64)
            r0 = self.residuals(p)
            if J.shape != (r0.size, len(p)):
                raise ValueError(f"jac: expected a ({r0.size}, {len(p)}) Jacobian of the residuals in log "
                                 f"parameters, got shape {J.shape}")
            self.last_jac_p = np.array(p)
            return J
        r0 = self.residuals(p)
        J = np.zeros((r0.size, len(p)))
        steps = {}
        shifted = self.time_columns(p) if hasattr(self, "time_columns") else {}
        along = {}                           # time column -> the columns its point also moved (decay_factor)
        for i, q in shifted.items():
            comp = [j for j in range(len(p)) if j != i and q[j] != p[j]]
            if all(columns is None or columns[j] for j in comp) and not any(j in shifted for j in comp):
                along[i] = comp
        for i in range(len(p)):
            if columns is not None and not columns[i]:
                continue
            if i in along:                   # a time column: seen in the prediction at p (time_columns)
                steps[i] = (shifted[i], -_DIFF_STEP if shifted[i][i] < p[i] else _DIFF_STEP)
                self.take_shifted(shifted[i])
                continue
            q = np.array(p, dtype=np.float64)
            h = -_DIFF_STEP if upper is not None and q[i] * math.exp(_DIFF_STEP) > upper[i] else _DIFF_STEP
            q[i] *= math.exp(h)
            steps[i] = (q, h)
        if hasattr(self, "pool"):
            _open_pool(self, self.slowest)
            if self.pool is not None:
                self.columns_in_workers([q for q, _ in steps.values()])
        for i, (q, h) in steps.items():
            J[:, i] = (self.residuals(q) - r0) / h
        for i, comp in along.items():
            # a difference along e_i + Σ e_j: the directional derivative, less the others' columns
            if i in steps:
                J[:, i] -= J[:, comp].sum(axis=1)
        if columns is None or np.all(columns):
            self.last_jac_p = np.array(p)
        return J

    def cost(self, p, max_steps: int | None = None) -> float:
        r = self.residuals(p, max_steps)
        return float(r @ r)

    def search(self, ref, lo, hi, skip=()):
        """Coarse search on log grids so that the local least-squares fit starts in the right
        basin: the time scale first; then each other fitted parameter over its grid, re-scanning
        the time scale (four decades, then locally) at every value — a parameter that changes the
        speed of the dynamics must not be judged at the wrong speed; a last finer pass over the
        time scale.
        Parameters in ``skip`` (given starting values) are not searched."""
        cost = lambda q: self.cost(q, max_steps=_SCAN_MAX_STEPS)  # noqa: E731
        its = self.names.index("time_scale") if "time_scale" in self.names and "time_scale" not in skip else None

        def clip(q, i, value):
            q = q.copy()
            q[i] = np.clip(value, lo[i], hi[i])
            return q

        def prefetch(q, grid, with_q=False):
            # the time-scale candidates of q in one integration where they are one path (prefetch_scan)
            self.prefetch_scan(([q] if with_q else []) + [clip(q, its, q[its] * 10.0 ** f) for f in grid],
                               _SCAN_MAX_STEPS)

        def scan_ts(q, c, grid):
            prefetch(q, grid)
            for n, f in enumerate(grid):
                cand = clip(q, its, q[its] * 10.0 ** f)
                cc = cost(cand)
                if cc < c:
                    q, c = cand, cc
                    prefetch(q, grid[n + 1:])        # the rest are relative to the new point
            return q, c

        if its is not None:
            prefetch(ref, _GRIDS["time_scale"], with_q=True)
        best, best_c = ref.copy(), cost(ref)
        if its is not None:
            best, best_c = scan_ts(best, best_c, _GRIDS["time_scale"])
        for sweep in range(2):
            for i, nm in enumerate(self.names):
                if i == its or nm in skip:
                    continue
                grid = _GRIDS["lambda" if nm.startswith("lambda") or nm == "decay_factor" else
                              nm if nm in _GRIDS else "other"]
                base = best.copy()
                for f in (grid if sweep == 0 else grid / 2.0):
                    q = clip(base, i, base[i] * 10.0 ** f)
                    if q[i] == base[i]:
                        continue
                    if its is not None:
                        prefetch(q, (-2.0, -1.0, 1.0, 2.0) if sweep == 0 else (-1.0, 1.0), with_q=True)
                    c = cost(q)
                    if its is not None:
                        q, c = scan_ts(q, c, (-2.0, -1.0, 1.0, 2.0) if sweep == 0 else (-1.0, 1.0))
                        q, c = scan_ts(q, c, (-0.5, 0.5))
                    if c < best_c:
                        best, best_c = q, c
        if its is not None:
            best, best_c = scan_ts(best, best_c, (-0.25, 0.25))
        return best


# ----------------------------------------------------------------------------------------------
# the optimisation loop (speed): stages, early rejection, stopping on stagnation
# ----------------------------------------------------------------------------------------------

#: integrator of the predictions (Fit(method=...) overrides): "auto" (explicit, RODAS4 where a
#: prediction turns stiff; its work model, the switch kept across settling chunks, a work budget).
#: Compare CPU s on the 27 shipped runs, dopri5 -> auto, both with this module's Jacobian and
#: settling as they are now (2026-12-02, 2-core machine at load 2-6; /tmp scripts doing what
#: python -m benchmarks.fit_methods does): 494.7 -> 407.4 in all; mlp_factorial3x3_sgd_d64 34.4 ->
#: 9.3, mlp_factorial_adamw_dead 37.8 -> 14.1, mlp_factorial_adamw 40.2 -> 30.0,
#: mlp_hierarchy_adamw_depth6 49.1 -> 26.5, mlp_hierarchy_adamw_seed1 46.1 -> 29.2,
#: transformer_hierarchy_adamw 97.0 -> 84.9, mlp_factorial_adam 12.2 -> 37.7 (its
#: linear-features · NTK Θ(t) crawls to max_nfev, rss 114.5 -> 114.2). The best model is the same
#: on 26 runs; on mlp_hierarchy_adamw_depth6 it becomes linear-features · NTK Θ(0) (rss 163.6 ->
#: 94.7: dopri5 stops against its 50,000-step limit there). Fitted rss better with auto:
#: sgd_dead coupled · NTK Θ(t) 135,334 -> 404, adamw_dead's 2215 -> 916, seed1's 589 -> 177;
#: worse: adamw_dead linear-features · NTK Θ(t) 373.3 -> 475.3 (another basin: the coarse scan
#: takes another path because auto finishes scan points that dopri5 fails at its 2,000 steps;
#: at dopri5's optimum both predict the same cost, 373.30046), adamw_mse coupled · NTK Θ(0)
#: 26.4 -> 27.8 and transformer_factorial3x3_adamw_d64 standard 62.2 -> 64.5 (both max_nfev).
#: The stall rule in AIC units and the extrapolation along aligned steps (_stalled, _extrapolate;
#: 2026-12-02 18:55-19:35 UTC, compare CPU s on the 12 slowest shipped runs, one after the other
#: in one session, load 1.8-3.4 before and 0.8-1.6 after): 400.0 -> 372.5 in all; the best model
#: the same on all 12; fits stopped by max_nfev/max_time 15 -> 4 (transformer_hierarchy_adamw's
#: linear-features no longer hits max_time: 120.5 -> 98.7 s, rss 57.2711 -> 57.2707). Fitted rss
#: that moved by more than 0.1 %: mlp_hierarchy_adamw_seed1 standard 584.92 -> 586.48 (was
#: max_nfev, now a stall), transformer_factorial_adamw_seed1 standard 106.448 -> 106.556 and
#: coupled 106.404 -> 106.545 (stall), mlp_factorial_adamw_mse coupled · NTK Θ(0) 27.80 -> 26.32,
#: transformer_factorial_adam_mean linear-features · NTK Θ(0) 407.58 -> 406.01 and · NTK Θ(t)
#: 191.19 -> 189.55, deep 420.81 -> 420.31, mlp_factorial_adamw_dead coupled · NTK Θ(t) 2216.2 ->
#: 2205.0; worse: mlp_factorial5x5_sgd coupled · NTK Θ(t) 2399.9 -> 2418.3 (xtol both). Without
#: the extrapolation (stall rule alone) 4 of these runs took 176.4 s against 182.6 s with it, but
#: 5 fits stopped by max_nfev against 1: it buys convergence, not speed
_METHOD = "auto"
#: Gram-space predictions end at a stable equilibrium (ufm.bridge.settling.solve_settling).
#: Measured at the fitted parameters of three slow Θ(t) rows of the shipped runs: 49,269 -> 1,491,
#: 49,973 -> 1,978 and 46,726 -> 993 DOPRI5 steps (4.3x, 7x, 31x faster), observables equal to
#: <= 2.4e-8 of their residual scale; unchanged bit for bit where it does not settle
_SETTLE = True
#: ... for Gram states up to this size (n = KN + K² + N², 768 at K = N = 16): a test costs a
#: dense Jacobian and an LU (an eigenvalue problem when it may stop), which at N = K = 25 (n = 1875)
#: cost more than the steps it could save (mlp_factorial5x5_sgd's linear-features fit hit
#: max_time with the tests, 77 s without)
_SETTLE_MAX_STATE = 800
#: deep-family predictions end with the certified linear tail once in the origin's basin, or at
#: a certified stable minimum (ufm.bridge.deep_settling.solve_deep_settling)
_DEEP_SETTLE = True
#: forward-difference step in log parameters (absolute: _Engine.jacobian): ≈ √rtol at the default
#: rtol 1e-7, where the truncation error (∝ h) and the integration error (∝ rtol/h) balance.
#: Measured (compare's rows, fitted rss): 1e-3 and 1e-2 sent mlp_factorial_adamw_mse's
#: coupled · NTK Θ(t) to another basin (51.7, 59.0; scipy's relative steps 34.0; 3e-4: 31.8),
#: 1e-4 left mlp_factorial5x5_sgd's coupled · NTK Θ(t) in its noise (2484.8; 3e-4: 2399.9)
_DIFF_STEP = 3e-4
#: the Jacobian columns of time_scale and time_power are read off the base prediction at shifted
#: save times where the flow is autonomous (_Engine.time_columns: no prediction for them), the
#: scan's time-scale candidates share an integration (_Engine.prefetch_scan), and (with these, in
#: the A/B below) a finished prediction is not integrated again at another step budget. Off
#: against on, compare CPU s, UFM_JAC_WORKERS=1, max_time=None, one process alternating
#: (2026-12-02 21:32-21:46 UTC, load 5-6 from other jobs; a /tmp script doing what
#: benchmarks.fit_methods does; before the decay_factor companion step): transformer_hierarchy_adamw
#: 100.6 -> 75.1 (linear-features 92.4 -> 67.8, 300 -> 157 integrations, rss 57.2707 both),
#: mlp_factorial_adamw 43.2 -> 32.6 (linear-features 33.9 -> 24.3), mlp_factorial_sgd_dead
#: 17.6 -> 14.1 (deep 13.3 -> 9.5); every fitted rss within 0.01 % (coupled 325.332 -> 325.311).
#: The shifted residuals agree with separate predictions to 1e-10 of the column (scratch check on
#: transformer_hierarchy_adamw's and mlp_factorial_sgd's default rows at their starts)
_SHIFT_COLUMNS = True
_COARSE_RTOL = 1e-5      # tolerance of the first optimisation stage
_MIN_BUDGET = 4_000      # early rejection: a trial prediction may take max(this, ...
_BUDGET_FACTOR = 10      # ... this × the best prediction's steps) integrator steps
_STALL_ITERATIONS = 4    # stop when the cost's n·log fell by less than _STALL_AIC over this
_STALL_AIC = 0.1         # many iterations: creeping along a valley or towards a bound (_stalled)
_POLISH_STALL_ITERATIONS = 3
#: ... or at once when the linearised model promises at most _PROMISE_AIC (_promised_gain)
_PROMISE_STOP = True
_PROMISE_AIC = 0.01
_EXTRAPOLATE = True      # jump along aligned steps (_extrapolate), restarting trf from there
_ALIGN = 0.9             # ... when the cosine of the last two steps is at least this
_MAX_JUMP = 8.0          # ... by at most this many last steps
_HOLD_RATIO = 1e-3       # a parameter whose trf-scaled column is below this fraction of the largest keeps
_HOLD_REFRESH = 3        # its column from the last Jacobian; every this-many-th one is complete (_HeldJacobian)
# Forward differences at every iteration, measured against Broyden updates between them (compare
# on the shipped runs): Broyden with a difference polish roughly doubled the
# iterations (mlp_factorial_adamw coupled 25 -> 46) and was no faster; without the polish it
# ended fits early at a worse rss (mlp_factorial_sgd_dead linear-features 96.4 -> 137.6).


def _optimise(eng, ref, lo, hi, spec):
    """Least squares in log parameters around ``ref`` inside [lo, hi], in stages.

    Stage 1 (``spec.coarse``): at the loose tolerance ``_COARSE_RTOL``; stage 2 at the fit's
    tolerance, warm-started from stage 1's optimum. Each stage stops at scipy's tolerances, at
    ``max_nfev``, or when n·log(cost) has fallen by less than ``_STALL_AIC`` over
    ``_STALL_ITERATIONS`` accepted iterations (``_POLISH_STALL_ITERATIONS`` in the polish;
    scipy >= 1.16: "converged by stall", a success). Where the last two accepted steps line
    up, :func:`_extrapolate` tries a jump along them and trf restarts from it when it lowers
    the cost (the stall rule's costs run on across restarts; ``max_nfev`` budgets trf's own
    evaluations). Trial predictions that need far more
    integrator steps than the best one are rejected early (:meth:`_Engine.step_budget`).

    Returns:
        (jac at the optimum or an empty array, success, message, evaluations).
    """
    from scipy.optimize import least_squares
    lo_x, hi_x = np.log(lo / ref), np.log(hi / ref)
    margin = np.minimum(0.5, 0.25 * (hi_x - lo_x))       # start inside the box: trf stalls on its edge
    x = np.clip(np.zeros(len(eng.names)), lo_x + margin, hi_x - margin)
    fun = lambda z: eng.residuals(ref * np.exp(z))  # noqa: E731
    # the engine's forward differences, not scipy's "2-point": scipy's diff_step is relative to
    # |z|, and z = log(p / ref) starts at 0 (its step there falls back to 1.5e-8), so its steps
    # were 1e-8 ... 1e-5 in log parameters, where a prediction's integration error (rtol 1e-7:
    # one more rejected step moved the cost by 2.5e-5 of itself on mlp_factorial5x5_sgd's
    # coupled · NTK Θ(t) row) swamps the difference
    jac = (lambda z: eng.jacobian(ref * np.exp(z))) if eng.jac is not None else _HeldJacobian(eng, ref, lo_x, hi_x, hi)  # noqa: E731
    stages = [eng.rtol]
    if spec.coarse and _COARSE_RTOL > eng.rtol and eng.time_map != "optimizer":    # the optimiser has no rtol
        stages.insert(0, _COARSE_RTOL)
    nfev, res = 0, None
    for stage, rtol in enumerate(stages):
        eng.stage_rtol = rtol
        # the polish starts at an optimum: two iterations without progress settle it
        window = _STALL_ITERATIONS if stage == 0 and len(stages) > 1 else _POLISH_STALL_ITERATIONS
        eng.best_p, eng.best_c, eng.best_prediction, eng.best_r = None, math.inf, None, None
        costs = []                   # accepted costs of this stage, across restarts
        promised = []                # set when the linearised model promised too little (_promised_gain)
        stale = False
        n_res = fun(x).size
        left = int(spec.max_nfev)
        while True:
            path = [x.copy()]            # accepted points since the (re)start
            jump = []

            def stalled(intermediate_result):
                cost = float(intermediate_result.cost)
                if costs and cost >= costs[-1]:
                    return                               # a rejected step: the radius shrinks, no verdict
                costs.append(cost)
                path.append(np.array(intermediate_result.x, dtype=np.float64))
                if len(costs) > window and _stalled(costs[-1 - window], costs[-1], n_res):
                    raise StopIteration
                if _PROMISE_STOP and isinstance(jac, _HeldJacobian) and jac.last_z is not None \
                        and np.array_equal(jac.last_z, intermediate_result.x):
                    gain = _promised_gain(jac.last, np.asarray(intermediate_result.fun), jac.last_z, lo_x, hi_x)
                    if gain <= _PROMISE_AIC:
                        promised.append(gain)
                        raise StopIteration
                if _EXTRAPOLATE and len(path) >= 3:
                    z, used = _extrapolate(fun, path, lo_x, hi_x)
                    jump.append(used)
                    if z is not None:
                        jump.append(z)
                        raise StopIteration

            kw = {"callback": stalled} if _scipy_has_callback() else {}
            res = least_squares(fun, x, jac=jac, bounds=(lo_x, hi_x), method="trf", x_scale=1.0,
                                ftol=1e-6, xtol=1e-6, gtol=1e-8, max_nfev=left, **kw)
            # max_nfev budgets trf's evaluations (a restart's first one is the cached jump point);
            # the extrapolation's trial points count in nfev_ but not against it
            restarted = len(costs) > 0 and left < int(spec.max_nfev)
            nfev += int(res.nfev) - int(restarted) + sum(j for j in jump if isinstance(j, int))
            left -= int(res.nfev) - int(restarted)
            x = res.x
            if promised or not (jump and not isinstance(jump[-1], int)):
                break                                    # no jump: scipy's verdict (or the stall) stands
            x = jump[-1]
            if left <= 0:
                res.status, res.x = 0, x                 # the budget ran out at the extrapolated point
                stale = True                             # res.jac is not the jump point's
                break
    success, message = bool(res.success) or res.status == -2, str(res.message)
    if res.status == -2 and promised:
        message = (f"converged: the linearised model promises less than {_PROMISE_AIC:g} in n·log(rss) (the AIC) "
                   f"within the search box ({promised[-1]:.3g})")
    elif res.status == -2:
        message = (f"converged by stall: the last {window} iterations lowered n·log(rss) (the AIC) by "
                   f"less than {_STALL_AIC:g}")
    if res.status == 0:
        success, message = False, f"stopped after max_nfev = {spec.max_nfev} iterations"
    if (isinstance(jac, _HeldJacobian) and jac.partial) or stale:
        eng.last_jac_p = None                # held columns or a jump: Fit.fit recomputes every column
    elif eng.best_p is not None and np.array_equal(eng.best_p, ref * np.exp(res.x)):
        eng.last_jac_p = eng.best_p.copy()
    return np.asarray(res.jac), success, message, nfev


def _stalled(before: float, after: float, n: int) -> bool:
    """Whether a fit's cost moved from ``before`` to ``after`` over the stall window by less
    than :data:`_STALL_AIC` in n·log(rss), the part of the AIC that the fit can still change
    (the comparison needs 2 ESS-corrected units, AIC_MARGIN, to prefer a model; the effective
    count is below n, so the corrected change is smaller still)."""
    if not (after > 0 and before > 0):
        return before - after <= 0
    return n * math.log(before / after) <= _STALL_AIC


def _promised_gain(J, r, z, lo_x, hi_x) -> float:
    """What the linearised model r + J·δ promises at z: n·log(rss / min rss) over steps δ that
    stay in the search box [lo_x, hi_x] (bounded linear least squares, no trust region; n the
    residual count), in the AIC units of :func:`_stalled`.

    The local fit stops when this is at most :data:`_STALL_AIC`: even the model's best step
    would not lower n·log(rss) by that much, so the stall rule's further iterations (each a
    Jacobian) could not either, to the model's accuracy. Where the linear model is poor (a
    curved valley, a nonlinear corner) it promises more than a step then delivers (trf's
    rejected steps), so the rule does not fire there; it fires where the fit has converged."""
    from scipy.optimize import lsq_linear
    r = np.asarray(r, dtype=np.float64)
    J = np.asarray(J, dtype=np.float64)
    c = float(r @ r)
    if not (c > 0 and np.all(np.isfinite(J)) and np.all(np.isfinite(r))):
        return math.inf
    lo, hi = np.asarray(lo_x) - z, np.asarray(hi_x) - z
    if not np.all(hi > lo):
        return math.inf
    step = lsq_linear(J, -r, bounds=(lo, hi), method="bvls").x
    after = r + J @ step
    left = float(after @ after)
    return r.size * math.log(c / left) if left > 0 else math.inf


def _extrapolate(fun, path, lo_x, hi_x):
    """A jump along a fit's last step when its steps line up (linear convergence in a valley).

    ``path`` holds the accepted points; when the last two steps point the same way
    (cosine >= :data:`_ALIGN`), the next points of a geometric sequence with the observed ratio
    of step lengths ρ lie along the last step d at x + α·d, α = ρ/(1 − ρ) for the remaining sum
    (ρ < 1), capped at :data:`_MAX_JUMP`, else 2. The candidate (clipped into the box) is
    accepted when its cost is below the current one, and then doubled while that improves
    (at most twice more). Returns (z or None, evaluations used)."""
    x, d, d0 = path[-1], path[-1] - path[-2], path[-2] - path[-3]
    nd, nd0 = float(np.linalg.norm(d)), float(np.linalg.norm(d0))
    if not (nd > 0 and nd0 > 0) or float(d @ d0) < _ALIGN * nd * nd0:
        return None, 0
    rho = nd / nd0
    alpha = min(rho / (1.0 - rho), _MAX_JUMP) if rho < 1.0 else 2.0
    r = fun(x)
    best, best_c, used = None, float(r @ r), 0
    for _ in range(3):
        z = np.clip(x + alpha * d, lo_x, hi_x)
        r = fun(z)
        used += 1
        c = float(r @ r)
        if not c < best_c:
            break
        best, best_c = z, c
        alpha *= 2.0
    del path[:-1]                    # a jump or not: the next attempt needs two new steps
    return best, used


class _HeldJacobian:
    """The local fit's Jacobian in log parameters z (``_Engine.jacobian``'s forward
    differences), except for the columns of *held* parameters, which are kept from the last
    Jacobian: those whose column, scaled as trf scales it (Coleman–Li: by the square root of
    the distance to the box edge the cost's gradient points at, the gradient from the last
    Jacobian and the current residuals), is below :data:`_HOLD_RATIO` of the largest scaled
    column. Such a column has that weight in trf's step, so a stale one changes the step by
    as little: a parameter pressed against an edge of its box (a time power or a decay at its
    bound) or one that has stopped acting (a decay driven towards 1e-10, where the cost does
    not depend on it). One prediction is saved per held parameter and Jacobian
    (mlp_factorial_adamw's linear-features fit holds three of its five). Every
    :data:`_HOLD_REFRESH`-th Jacobian recomputes every column (a parameter that acts again, or
    whose gradient turned away from its edge, is freed), and the fit's final Jacobian (standard
    errors) is always complete."""

    def __init__(self, eng, ref, lo_x, hi_x, upper):
        self.eng, self.ref, self.lo_x, self.hi_x, self.upper = eng, ref, lo_x, hi_x, upper
        self.last = None
        self.last_z = None                   # where self.last was computed
        self.partial = 0                     # Jacobians with held columns since the last complete one

    def held(self, z) -> np.ndarray:
        k = z.size
        if self.last is None or self.partial + 1 >= _HOLD_REFRESH:
            return np.zeros(k, dtype=bool)
        g = self.last.T @ self.eng.residuals(self.ref * np.exp(z))
        below, above = z - self.lo_x, self.hi_x - z
        v = np.where(g > 0, below, np.where(g < 0, above, 1.0))     # scipy's CL_scaling_vector
        scaled = np.sqrt(v) * np.linalg.norm(self.last, axis=0)
        return scaled <= _HOLD_RATIO * float(np.max(scaled))

    def __call__(self, z) -> np.ndarray:
        held = self.held(z)
        J = self.eng.jacobian(self.ref * np.exp(z), upper=self.upper, columns=~held)
        if held.any():
            J[:, held] = self.last[:, held]
            self.partial += 1
        else:
            self.partial = 0
        self.last = J
        self.last_z = np.array(z, dtype=np.float64)
        return J


@functools.lru_cache(maxsize=1)
def _scipy_has_callback() -> bool:
    """least_squares takes ``callback`` (and stops on StopIteration) from scipy 1.16 on."""
    import inspect
    from scipy.optimize import least_squares
    return "callback" in inspect.signature(least_squares).parameters


def fit_all(fits, run, workers=None) -> list:
    """Fit several :class:`Fit` objects to one run, in parallel worker processes where it pays.

    The fits are independent, and each is a long chain of small integrations (one
    prediction per residual), so they parallelise across processes (numba's kernels hold the
    GIL, so threads would not). Workers are forked, so they inherit the compiled kernels.

    Arguments:
        fits: Fit objects (not yet fitted).
        run: the :class:`ufm.bridge.Run`.
        workers: processes to use; None: the environment variable ``UFM_FIT_WORKERS`` if set,
            else the CPU count (``UFM_FIT_WORKERS=1``: one after the other in this process).
            Measured with ``ufm fit RUN --compare`` on a 2-core machine at load 1–2
            (2026-12-03): ``mlp_factorial_adamw_dead`` 16.5 s serially against 9.8 s in 2
            workers, ``mlp_factorial_adamw_mse`` 15.6 against 11.4 s, the same rss on every
            row; on a machine with no idle core (load 3) it did not pay (3 families of
            ``mlp_factorial_sgd``: 2.2 s against 1.6 s), so set ``UFM_FIT_WORKERS=1`` there.
            Fits in workers compute their Jacobian columns serially (the workers already hold
            the cores), which is why the costliest fits are started first.
            Parallel fitting falls back to serial when it cannot be done safely: no ``fork``
            start method, inside a daemonic worker, a fit argument that cannot be pickled
            (e.g. a lambda ``jac``), or numba's OpenMP threading layer already started (GNU
            OpenMP aborts in forked children).

    Returns:
        The fitted Fit objects, in order (copies when fitted in workers).
    """
    fits = list(fits)
    if workers is None:
        workers = _fit_workers()
    else:
        from .._validation import as_positive_int
        workers = as_positive_int(workers, "workers")
    workers = min(workers, len(fits))
    if workers <= 1 or not _can_fork(fits):
        return [f.fit(run) for f in fits]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        # costliest first (more fitted parameters: more predictions), so no worker starts a big one last
        order = sorted(range(len(fits)), key=lambda i: -_expected_cost(fits[i]))
        futures = {i: pool.submit(_fit_in_worker, fits[i], run) for i in order}
        return [futures[i].result() for i in range(len(fits))]


def _fit_workers() -> int:
    """Worker processes for :func:`fit_all`'s families: the environment variable
    ``UFM_FIT_WORKERS`` (1: serial), else the machine's CPU count."""
    import os
    env = os.environ.get("UFM_FIT_WORKERS", "").strip()
    if env:
        from .._validation import as_positive_int
        return as_positive_int(int(env) if env.isdigit() else env, "UFM_FIT_WORKERS")
    return os.cpu_count() or 1


def _expected_cost(f) -> int:
    params = f.params
    if params is None:
        return 4
    return len([params] if isinstance(params, str) else params)


def _fork_safe() -> bool:
    """Whether forking worker processes is safe here: the ``fork`` start method exists, this is
    not a daemonic worker, and numba's OpenMP threading layer has not started (GNU OpenMP
    aborts in forked children)."""
    import multiprocessing as mp
    if "fork" not in mp.get_all_start_methods() or mp.current_process().daemon:
        return False
    try:
        import numba
        if numba.threading_layer() == "omp":
            return False
    except ValueError:
        pass                                             # no threading layer started yet: safe
    return True


def _open_pool(eng, seconds: float) -> None:
    """Give the engine worker processes for its Jacobian columns when asked for
    (:func:`_jac_workers` > 1), where it can (forward differences, :func:`_fork_safe`) and where
    it may pay: a prediction of the local fit took ``seconds`` >= :data:`_JAC_POOL_MIN_SECONDS`
    (forking and shipping residual vectors cost ~10 ms a column)."""
    global _WORKER_ENGINE
    n = _jac_workers()
    if eng.pool is not None or eng.pool_failed or n <= 1 or eng.jac is not None or seconds < _JAC_POOL_MIN_SECONDS or not _fork_safe():
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    _WORKER_ENGINE = eng                 # forked workers inherit it (and the compiled kernels)
    eng.pool = ProcessPoolExecutor(min(n, len(eng.names)), mp_context=mp.get_context("fork"))


def _close_pool(eng) -> None:
    global _WORKER_ENGINE
    if getattr(eng, "pool", None) is not None:
        eng.pool.shutdown()
        eng.pool = None
    _WORKER_ENGINE = None


def _can_fork(fits) -> bool:
    import pickle
    if not _fork_safe():
        return False
    try:
        pickle.loads(pickle.dumps([f.get_params() for f in fits]))     # both ways: a class may pickle but not unpickle
    except Exception:
        return False
    return True


def _fit_in_worker(f, run):
    """Fit in a worker process; the residual caches stay behind (they can hold thousands of
    residual vectors). The worker computes its Jacobian columns itself: the workers already
    hold the cores, and a pool forked from a pool worker would oversubscribe them."""
    global _JAC_WORKERS
    _JAC_WORKERS = 1                     # this process only (a forked pool worker)
    f.fit(run)
    _close_pool(f.engine_)
    for store in (f.engine_._cache, f.engine_._finished, f.engine_._shifted):
        store.clear()
    return f


#: search grids, in decades relative to the current value
_GRIDS = {"time_scale": np.array([-3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]),
          "lambda": np.array([-2.0, -1.0, 1.0, 2.0]),
          "beta": np.array([-2.0, -1.0, -0.5, 0.5, 1.0]),
          "time_power": np.array([-0.15, 0.15, 0.3]),
          "other": np.array([-1.0, -0.5, 0.5, 1.0])}
_SCAN_MAX_STEPS = 2_000
_SCAN_RTOL = 1e-5


#: worker processes that compute a local fit's Jacobian columns (None: _jac_workers()'s default).
#: transformer_hierarchy_adamw's linear-features fit (~1 s a prediction, 5 parameters), 2
#: workers against serial, back to back at load 1.5 on 2 cores: 72.2 s against 92.3 s wall,
#: the same 300 predictions and rss (2026-12-02 19:47-19:53 UTC)
_JAC_WORKERS = None
#: ... opened once a local-fit prediction has taken at least this many CPU seconds
_JAC_POOL_MIN_SECONDS = 0.2
_WORKER_ENGINE = None


def _column_in_worker(args):
    q, budget, rtol = args
    out, _, tr, failed = _WORKER_ENGINE._evaluate(q, budget, rtol)
    keep = ("budget_steps", "accepted_steps", "rejected_steps", "settled_from")
    return out, failed, {k: tr.info[k] for k in keep if k in tr.info}


def _jac_workers() -> int:
    """Worker processes for Jacobian columns: :data:`_JAC_WORKERS`, else the environment
    variable ``UFM_JAC_WORKERS`` (1: serial), else the machine's CPU count."""
    import os
    if _JAC_WORKERS is not None:
        return int(_JAC_WORKERS)
    env = os.environ.get("UFM_JAC_WORKERS", "").strip()
    if env:
        from .._validation import as_positive_int
        return as_positive_int(int(env) if env.isdigit() else env, "UFM_JAC_WORKERS")
    return os.cpu_count() or 1


class _OutOfTime(Exception):
    """Raised inside the residual function when a fit's max_time has passed."""


def _same_model(v: dict, w: dict) -> bool:
    """Whether two parameter value sets (:meth:`_Engine.values`) make the same model: equal but
    for the time map (and decay_factor, which enters as the decays it makes), to rounding
    (λ = f·wd·lr/s with f and s stepped by one factor)."""
    return v.keys() == w.keys() and all(math.isclose(x, w[k], rel_tol=1e-13, abs_tol=0.0) for k, x in v.items()
                                        if k not in ("time_scale", "time_power", "decay_factor"))


def _steps_of(info) -> int:
    """The integrator steps a prediction took (an auto prediction's Rosenbrock steps count at
    their work: settling's budget_steps)."""
    return int(info.get("budget_steps", int(info.get("accepted_steps", 0)) + int(info.get("rejected_steps", 0))))


def _take(a, rows):
    return None if a is None else a[rows]


def _pad(tr, T):
    """A Trajectory padded to T saves with NaN (saves an integration did not reach)."""
    from ..trajectory import Trajectory
    n = len(tr)

    def pad(a):
        if a is None:
            return None
        out = np.full((T,) + a.shape[1:], np.nan)
        out[:n] = a
        return out
    t = np.full(T, np.nan)
    t[:n] = tr.t
    return Trajectory(t=t, loss=pad(tr.loss), data_loss=pad(tr.data_loss), gram_W=pad(tr.gram_W),
                      gram_H=pad(tr.gram_H), logits=pad(tr.logits), problem=tr.problem, model=tr.model, info=tr.info)


# ----------------------------------------------------------------------------------------------
# families and their defaults: the optimiser, the homogeneity degree, the default comparison
# ----------------------------------------------------------------------------------------------

#: parameters the deep family takes ("lambda": the decay of every factor)
_DEEP_PARAMS = {"time_scale", "time_power", "lambda", "lambda_b", "init_scale", "lr_W", "lr_H"}

#: optimisers that precondition each parameter's step (the logged Euclidean NTK is not their kernel,
#: their decoupled decay is not wd·lr through it, and their progress is not linear in the step)
ADAPTIVE_OPTIMIZERS = ("adam", "adamw")


def run_optimizer(run) -> str | None:
    """The run's optimiser from its metadata ``optimizer``, lower-case (None when absent)."""
    name = run.meta.get("optimizer")
    return str(name).strip().lower() if name else None


def homogeneity_degree(run, degree=None) -> tuple[float, str]:
    """The backbone's homogeneity degree L (features scale as c^L when every backbone weight is
    scaled by c, so weight decay shrinks them at L times its rate: λ_E = L·λ), and where it came
    from.

    In order: the argument ``degree``; the metadata ``homogeneity_degree`` (the exporter knows
    the architecture); an estimate from the run itself — over the last half of the checkpoints,
    where the loss gradient is smallest, the features' rms norm decays as exp(−L·wd·lr·step), so
    L = −slope of log‖h‖ per step / (wd·lr), used only when the norm decays there; else 1.

    Arguments:
        run: a :class:`ufm.bridge.Run`. degree: an explicit degree (> 0) or None.

    Returns:
        (L, source), source one of ``"argument"``, ``"metadata"``, ``"estimated from the late
        feature-norm decay"``, ``"default (no metadata, feature norms do not decay)"``.

    Raises:
        ValueError: a degree (argument or metadata) that is not a finite number > 0.
    """
    if degree is not None:
        value, source = degree, "argument"
    elif "homogeneity_degree" in run.meta:
        value, source = run.meta["homogeneity_degree"], "metadata"
    else:
        est = _degree_from_norm_decay(run)
        if est is None:
            return 1.0, "default (no metadata, feature norms do not decay)"
        return est, "estimated from the late feature-norm decay"
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"degree: expected a homogeneity degree > 0 ({source}), got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"degree: expected a homogeneity degree > 0 ({source}), got {value!r}")
    return value, source


def _degree_from_norm_decay(run) -> float | None:
    wd, lr = run.weight_decay, run.lr
    if not wd or not lr or run.T < 6:
        return None
    H = np.asarray(run.H, dtype=np.float64)
    rms = np.sqrt(np.mean(np.sum(H * H, axis=2), axis=1))
    half = slice(run.T // 2, run.T)
    steps = run.steps[half].astype(np.float64)
    ok = np.isfinite(rms[half]) & (rms[half] > 0)
    if ok.sum() < 3 or np.ptp(steps[ok]) <= 0:
        return None
    slope = float(np.polyfit(steps[ok], np.log(rms[half][ok]), 1)[0])
    if not slope < 0:
        return None
    return -slope / (wd * lr)


def family_defaults(run, time: str | None = None) -> dict:
    """The families of the default comparison for ``run``, name -> :class:`Fit` arguments.

    standard; coupled and linear-features (attribute coupling when the run has attributes,
    else the measured Θ(t) when it logged a kernel); deep (:class:`ufm.DeepUFM`); and, with a
    logged kernel, the kernel rows of :func:`ufm.bridge.comparison.kernel_models`.

    Optimiser-aware: for Adam/AdamW runs (:data:`ADAPTIVE_OPTIMIZERS`) and no explicit
    ``time``, every row uses the power time map t = s·step^p, and the kernel rows also fit the
    decay, as ``decay_factor`` (a multiple of wd·lr/s, so that the time-scale scan keeps the
    run's decay per step: fitting ``lambda`` from its wd·lr/lr start froze these rows on the
    shipped transformer), since AdamW's decoupled decay is not wd·lr through the Euclidean
    kernel. An explicit ``time`` is left to the caller (the rows then carry no time map).

    Returns:
        dict name -> dict of Fit arguments (``model``, ``coupling``, ``params``, ``time``).
    """
    out = {"standard": dict(model="standard")}
    if run.attributes is not None:
        out["coupled"] = dict(model="coupled")
        out["linear-features"] = dict(model="linear-features")
    elif run.kernel is not None:
        out["coupled"] = dict(model="coupled", coupling="measured-t")
        out["linear-features"] = dict(model="linear-features", coupling="measured-t")
    out["deep"] = dict(model="deep")
    adaptive = time is None and run_optimizer(run) in ADAPTIVE_OPTIMIZERS
    if run.kernel is not None:
        for name, spec in kernel_models().items():
            spec = dict(spec)
            if adaptive:
                spec["params"] = ["time_scale", "time_power", "decay_factor"]
            out[name] = spec
    if adaptive:
        for spec in out.values():
            spec["time"] = "power"
    return out


def _family_lines(fit) -> list:
    """Report lines of the family settings: the homogeneity degree and where it came from (when
    it enters the model), the deep family's layers, and the notes (warnings) of the fit."""
    lines = []
    if fit.family_ == "linear-features" or fit.family_ == "deep":
        lines.append(f"  homogeneity degree L = {fit.degree_:.4g} ({fit.degree_source_})"
                     + (f"; deep backbone: {fit.layers_} hidden layer(s), {fit.layers_ + 2} factors"
                        if fit.family_ == "deep" else ""))
    lines.extend(f"  note: {n}" for n in fit.notes_)
    return lines


def kernel_models() -> dict:
    """The four zero-parameter kernel predictions (only ``time_scale`` fitted), by name."""
    return {
        "coupled · NTK Θ(0)": dict(model="coupled", coupling="measured", params=["time_scale"]),
        "coupled · NTK Θ(t)": dict(model="coupled", coupling="measured-t", params=["time_scale"]),
        "linear-features · NTK Θ(0)": dict(model="linear-features", coupling="measured", params=["time_scale"]),
        "linear-features · NTK Θ(t)": dict(model="linear-features", coupling="measured-t", params=["time_scale"]),
    }
