"""What a run did, read from its geometry: :func:`verdict` (``Run.verdict()``, ``ufm inspect``).

Two labels, each decided from several quantities (docs/bridge.md, "Verdicts"):

* **early** — where the semantic structure comes from, read from the *centred* semantic gap g
  over all checkpoints: ``"amplified"`` (training raises g materially above its initial
  value g₀), ``"inherited"`` (g₀ is already material and training does not raise it: the
  structure comes from the input, and training only keeps or removes it), ``"none"``.
* **late** — what the features end as, at the last checkpoint, first rule that applies:
  ``"degenerate"`` (diverged, non-finite, identical or dead features, a loss blow-up),
  ``"low_rank"`` (the centred features occupy about one direction, far fewer than the simplex
  ETF's K − 1: a rank collapse instead of the ETF), ``"persistent"`` (a material attribute
  code kept), ``"collapse"`` (no attribute code left and the features approach the ETF).

The thresholds are properties of the quantities, not fitted to any runs; every number is
relative to a reference the run itself defines (its initial state, the pure attribute code of
its attributes, the ETF of its labels, K − 1):

=====================  =========  ==============================================================
threshold              value      meaning
=====================  =========  ==============================================================
``gap_material``       0.1        a centred gap that counts as structure: ≈ 1/7 of the gap of
                                  the pure attribute code (g* = 0.67–0.75 for the factorial and
                                  hierarchy settings; reported per run as
                                  ``attribute_code_gap``)
``gap_rise``           0.05       a rise above g₀ that counts as amplification: half the
                                  material gap; the rise must also exceed ``noise_factor``
                                  times the run's own checkpoint noise σ̂ of g
``noise_factor``       3          σ̂ = median |Δ²g| / (0.6745·√6), the robust standard deviation
                                  of iid noise from second differences (a smooth trend has
                                  none), so a rise must be 3σ̂ — a few 1e-3 on smooth runs
``rank_directions``    2          low rank: fewer than 2 effective directions (participation
                                  ratio; 1 for a rank-1 code), and at most (K − 1)/2, so that
                                  low rank is never confused with the ETF of 2 or 3 classes
``rank_loss``          0.5        low rank: the participation ratio also fell to at most half
                                  its initial value (rank was lost, not inherited)
``null_quantile``      0.95       persistent also needs the final gap above this quantile of the
                                  gaps of 200 random regroupings of the contexts (the attributes
                                  permuted over the contexts, seed 0): features with few
                                  directions give large gaps to *any* grouping (±0.25 on a
                                  4×4 MLP run), so an absolute cut alone is not enough
``etf_approach``       0.9        collapse: the ETF distance fell by at least 10 % of its
                                  initial value, or
``etf_near``           0.5        … is at most half the distance of the pure attribute code
                                  from the ETF (the code a persistent run would keep)
``loss_blowup``        10         degenerate: the loss exceeds 10× its initial value at the
                                  last checkpoint (diverged); a warning at any checkpoint
``norm_blowup``        1000       degenerate: the rms feature norm ends 1000× its initial
                                  value (AdamW runs that fit grow 10–40×)
``norm_spike``         10         warning: the rms feature norm jumps 10× between two
                                  consecutive checkpoints
``identical_rtol``     1e-6       identical rows: the centred Gram's trace is below 1e-6 of the
                                  raw trace (rows equal to 1e-3 of their norm), or all rows 0
``loss_fit``           0.5        warning: the loss fell by less than half (the run is far from
                                  converged; the late verdict describes where it stopped)
=====================  =========  ==============================================================

Any number within 20 % of a threshold that decided a label is named in ``borderline``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Verdict", "verdict", "THRESHOLDS", "EARLY", "LATE"]

EARLY = ("inherited", "amplified", "none")
LATE = ("collapse", "persistent", "low_rank", "degenerate")

THRESHOLDS = {
    "gap_material": 0.1,
    "gap_rise": 0.05,
    "noise_factor": 3.0,
    "rank_directions": 2.0,
    "rank_loss": 0.5,
    "null_quantile": 0.95,
    "etf_approach": 0.9,
    "etf_near": 0.5,
    "loss_blowup": 10.0,
    "norm_blowup": 1000.0,
    "norm_spike": 10.0,
    "identical_rtol": 1e-6,
    "loss_fit": 0.5,
}
_BORDER = 0.2     # relative closeness to a threshold named as borderline
_NULL_PERMUTATIONS = 200


@dataclass
class Verdict:
    """The verdict on a run (from :meth:`ufm.bridge.Run.verdict`).

    Attributes:
        early: ``"inherited"``, ``"amplified"`` or ``"none"``.
        late: ``"collapse"``, ``"persistent"``, ``"low_rank"`` or ``"degenerate"``.
        evidence: the numbers the labels were decided from (name -> float, int or None).
        thresholds: the thresholds used (:data:`THRESHOLDS`, or overrides).
        early_rule, late_rule: the rule that decided each label, in words, with its numbers.
        warnings: degeneracy and divergence checks that fired, each naming the checkpoint.
        borderline: the deciding numbers within 20 % of their threshold.
    """

    early: str
    late: str
    evidence: dict
    thresholds: dict
    early_rule: str
    late_rule: str
    warnings: list = field(default_factory=list)
    borderline: list = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready: ``{"early", "late", **evidence, "thresholds", "rules", "warnings",
        "borderline"}`` (non-finite numbers as None)."""
        out = {"early": self.early, "late": self.late}
        out.update({k: _jsonable(v) for k, v in self.evidence.items()})
        out["thresholds"] = dict(self.thresholds)
        out["rules"] = {"early": self.early_rule, "late": self.late_rule}
        out["warnings"] = list(self.warnings)
        out["borderline"] = list(self.borderline)
        return out

    def report(self) -> str:
        """The verdict with the rules and numbers behind it, as ``ufm inspect`` prints it."""
        e = self.evidence
        import textwrap

        def wrap(head, text):
            return textwrap.wrap(text, 110, initial_indent=head, subsequent_indent=" " * len(head))
        lines = [f"verdict    early: {self.early}   late: {self.late}",
                 *wrap("  early    ", self.early_rule), *wrap("  late     ", self.late_rule)]
        nums = []
        for key, label in (("gap_initial", "gap₀"), ("gap_max", "gap max"), ("gap_final", "gap end"),
                           ("attribute_code_gap", "g* (pure code)"), ("etf_initial", "ETF₀"),
                           ("etf_min", "ETF min"), ("etf_final", "ETF end"), ("etf_attribute_code", "ETF(code)"),
                           ("pr_initial", "PR₀"), ("pr_final", "PR end"), ("pr_etf", "PR(ETF)"),
                           ("loss_initial", "loss₀"), ("loss_final", "loss end"), ("norm_H_initial", "‖h‖₀"),
                           ("norm_H_final", "‖h‖ end")):
            v = e.get(key)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                nums.append(f"{label} {v:.3g}")
        for i in range(0, len(nums), 6):
            lines.append(("  numbers  " if i == 0 else "           ") + ", ".join(nums[i:i + 6]))
        for b in self.borderline:
            lines += wrap("  borderline: ", b)
        for w in self.warnings:
            lines += wrap("  warning: ", w)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _jsonable(v):
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _close(value, threshold) -> bool:
    return (value is not None and np.isfinite(value) and threshold != 0
            and abs(value - threshold) <= _BORDER * abs(threshold))


def verdict(run, thresholds: dict | None = None) -> Verdict:
    """Decide the early and late verdicts of a run (module docstring: the rules and thresholds).

    Arguments:
        run: a :class:`ufm.bridge.Run` (features or Gram-only).
        thresholds: optional overrides of :data:`THRESHOLDS` (name -> number).

    Returns:
        :class:`Verdict`.

    Raises:
        ValueError: an unknown threshold name or a non-positive threshold.
    """
    th = dict(THRESHOLDS)
    for k, v in (thresholds or {}).items():
        if k not in THRESHOLDS:
            raise ValueError(f"thresholds: unknown name {k!r}; expected names from {sorted(THRESHOLDS)}")
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"thresholds: {k} must be a finite number > 0, got {v!r}")
        th[k] = float(v)
    from .. import metrics as M
    g = run.grams()
    GH = g["gram_H"]
    steps = run.steps
    T, N, K = run.T, run.N, run.K
    m = run.metrics()
    warnings_: list[str] = []
    ev: dict = {"checkpoints": T, "last_step": int(steps[-1])}

    def at(j):
        return f"checkpoint {j} (step {int(steps[j])})"

    # -- degeneracy checks -----------------------------------------------------------------
    raw_tr = np.trace(GH, axis1=1, axis2=2)
    cen_tr = np.trace(M._double_centre(GH), axis1=1, axis2=2)
    identical = ~(cen_tr > th["identical_rtol"] * np.maximum(raw_tr, 0.0)) | ~(raw_tr > 0)
    ident_from = None
    if identical[-1]:
        j = T - 1
        while j > 0 and identical[j - 1]:
            j -= 1
        ident_from = j
        what = "all zero (dead features)" if not raw_tr[-1] > 0 else "identical"
        warnings_.append(f"feature rows {what} from {at(j)} to the end")
    elif identical.any():
        j = int(np.flatnonzero(identical)[0])
        warnings_.append(f"feature rows identical or zero at {at(j)} (not at the end)")
    ev["identical_from_step"] = None if ident_from is None else int(steps[ident_from])
    nonfinite = [k for k in ("etf_distance", "participation_ratio") if not np.isfinite(m[k][-1])]
    norm_h = m["norm_H"]
    ev["norm_H_initial"], ev["norm_H_max"], ev["norm_H_final"] = float(norm_h[0]), float(np.max(norm_h)), float(norm_h[-1])
    ev["norm_W_final"] = float(m["norm_W"][-1]) if "norm_W" in m else None
    ratio = norm_h[1:] / np.where(norm_h[:-1] > 0, norm_h[:-1], np.inf)
    for j in np.flatnonzero(ratio > th["norm_spike"]):
        warnings_.append(f"norm spike: the rms feature norm jumps {ratio[j]:.3g}× from {at(j)} to {at(j + 1)}")
    norm_blowup = norm_h[0] > 0 and norm_h[-1] > th["norm_blowup"] * norm_h[0]
    loss = m.get("loss")
    loss_blowup = False
    if loss is not None:
        ev["loss_initial"], ev["loss_final"], ev["loss_max"] = float(loss[0]), float(loss[-1]), float(np.max(loss))
        high = np.flatnonzero(loss > th["loss_blowup"] * loss[0])
        if high.size:
            warnings_.append(f"loss blow-up: {loss[high[0]]:.3g} at {at(int(high[0]))}, over "
                             f"{th['loss_blowup']:g}× the initial {loss[0]:.3g}")
        loss_blowup = bool(loss[-1] > th["loss_blowup"] * loss[0])
        if loss[-1] > th["loss_fit"] * loss[0] and not loss_blowup:
            warnings_.append(f"the loss fell by less than half ({loss[0]:.3g} → {loss[-1]:.3g} at {at(T - 1)}): "
                             "the run is far from a fit, the late verdict describes where it stopped")
    stopped = run.meta.get("stopped")
    if stopped:
        where = stopped.get("step") if isinstance(stopped, dict) else stopped
        why = stopped.get("reason", "") if isinstance(stopped, dict) else ""
        warnings_.append(f"the exporter stopped the run at step {where}" + (f" ({why})" if why else ""))
    if norm_blowup:
        warnings_.append(f"norm blow-up: the rms feature norm ends {norm_h[-1] / norm_h[0]:.3g}× its initial value")

    # -- early: the centred gap ------------------------------------------------------------
    gap = m.get("semantic_gap")
    if gap is not None:
        finite = np.isfinite(gap)
        gap_f = np.where(finite, gap, -np.inf)
        jmax = int(np.argmax(gap_f))
        g0 = float(gap[0])
        gmax = float(gap_f[jmax])
        rise = gmax - g0
        d2 = np.abs(np.diff(gap[finite], 2))
        noise = float(np.median(d2)) / (0.6745 * math.sqrt(6.0)) if d2.size else 0.0
        ev.update(gap_initial=g0, gap_max=gmax, gap_max_step=int(steps[jmax]), gap_final=float(gap[-1]),
                  gap_rise=rise, gap_noise=noise)
        try:
            ug = M.semantic_gap(GH[[0, -1]], run.attributes, run.labels, centred=False)
            ev["gap_uncentred_initial"], ev["gap_uncentred_final"] = float(ug[0]), float(ug[-1])
        except ValueError:
            pass
        ev["gap_null_initial"] = _null_quantile(GH[0], run.attributes, run.labels, th["null_quantile"])
        ev["gap_null_final"] = _null_quantile(GH[-1], run.attributes, run.labels, th["null_quantile"])
        code = _attribute_code_gram(run.attributes)
        ev["attribute_code_gap"] = float(M.semantic_gap(code, run.attributes, run.labels))
        ev["etf_attribute_code"] = float(M.etf_distance(code, run.labels))
        need = max(th["gap_rise"], th["noise_factor"] * noise)
        if rise >= need:
            early = "amplified"
            rule = (f"the centred gap rises {rise:.3f} above its initial {g0:.3f} (to {gmax:.3f} at step "
                    f"{int(steps[jmax])}), at least {need:.3g}")
            if _close(rise, th["gap_rise"]):
                ev.setdefault("_border", []).append(f"the rise {rise:.3f} is near gap_rise = {th['gap_rise']:g}")
        elif g0 >= th["gap_material"]:
            early = "inherited"
            rule = (f"the centred gap is already {g0:.3f} (>= {th['gap_material']:g}) at step {int(steps[0])} and "
                    f"rises only {rise:.3f} (< {need:.3g}): structure of the input, which training does not raise")
            for val, nm in ((rise, "gap_rise"), (g0, "gap_material")):
                if _close(val, th[nm]):
                    ev.setdefault("_border", []).append(f"{val:.3f} is near {nm} = {th[nm]:g}")
            if not g0 > (1 + _BORDER) * ev["gap_null_initial"]:
                ev.setdefault("_border", []).append(
                    f"the initial gap {g0:.3f} is not clearly above what random regroupings of the initial features "
                    f"give ({th['null_quantile']:g} quantile {ev['gap_null_initial']:.3f})")
        else:
            early = "none"
            rule = (f"the centred gap starts at {g0:.3f} (< {th['gap_material']:g}) and rises only {rise:.3f} "
                    f"(< {need:.3g})")
            for val, nm in ((rise, "gap_rise"), (g0, "gap_material")):
                if _close(val, th[nm]):
                    ev.setdefault("_border", []).append(f"{val:.3f} is near {nm} = {th[nm]:g}")
    else:
        early = "none"
        rule = "the run has no attributes (or no pair sharing / not sharing one): no semantic gap to read"
    early_rule = rule

    # -- late ------------------------------------------------------------------------------
    etf, pr = m["etf_distance"], m["participation_ratio"]
    pr_etf = float(M.participation_ratio(M.etf_target(run.labels) if run.labels is not None
                                         else M.etf_target(n=N)))
    rank1 = np.outer(np.arange(N) - (N - 1) / 2.0, np.arange(N) - (N - 1) / 2.0)
    ev.update(etf_initial=float(etf[0]), etf_min=float(np.nanmin(etf)) if np.isfinite(etf).any() else float("nan"),
              etf_final=float(etf[-1]), etf_rank1=float(M.etf_distance(rank1, run.labels)),
              pr_initial=float(pr[0]), pr_min=float(np.nanmin(pr)), pr_final=float(pr[-1]), pr_etf=pr_etf)
    border = ev.pop("_border", [])
    rank_cut = min(th["rank_directions"], pr_etf / 2.0)
    g_end = ev.get("gap_final")
    if ident_from is not None or nonfinite or loss_blowup or norm_blowup or stopped:
        late = "degenerate"
        why = []
        if stopped:
            why.append("the exporter stopped it (non-finite or beyond the stored precision)")
        if ident_from is not None:
            why.append(f"the feature rows are identical or zero from step {int(steps[ident_from])}")
        elif nonfinite:
            why.append(f"{', '.join(nonfinite)} undefined at the last checkpoint")
        if loss_blowup:
            why.append(f"the loss ends at {loss[-1]:.3g}, over {th['loss_blowup']:g}× its initial {loss[0]:.3g}")
        if norm_blowup:
            why.append(f"‖h‖ ends {norm_h[-1] / norm_h[0]:.3g}× its initial value (> {th['norm_blowup']:g}×)")
        late_rule = "; ".join(why)
    elif pr[-1] < rank_cut and pr[-1] <= th["rank_loss"] * pr[0]:
        late = "low_rank"
        late_rule = (f"participation ratio {pr[-1]:.3g} < {rank_cut:.3g} directions and <= {th['rank_loss']:g}× its "
                     f"initial {pr[0]:.3g} (the ETF has {pr_etf:.3g}); ETF distance {etf[-1]:.3f} "
                     f"(a rank-1 code: {ev['etf_rank1']:.3f})"
                     + (f"; the surviving direction carries a centred gap {g_end:.3f}" if g_end is not None else ""))
        for val, ref, nm in ((pr[-1], rank_cut, "rank_directions"), (pr[-1], th["rank_loss"] * pr[0], "rank_loss")):
            if _close(val, ref):
                border.append(f"PR {val:.3g} is near the {nm} cut {ref:.3g}")
    elif g_end is not None and g_end >= th["gap_material"] and not g_end <= ev["gap_null_final"]:
        late = "persistent"
        late_rule = (f"centred gap {g_end:.3f} >= {th['gap_material']:g} at the last checkpoint and above "
                     f"{ev['gap_null_final']:.3f}, the {th['null_quantile']:g} quantile of random regroupings (the pure "
                     f"attribute code: {ev['attribute_code_gap']:.3f}); ETF distance {etf[-1]:.3f}, PR {pr[-1]:.3g} "
                     f"of {pr_etf:.3g}")
        if _close(g_end, th["gap_material"]):
            border.append(f"the final gap {g_end:.3f} is near gap_material = {th['gap_material']:g}")
        if _close(g_end, ev["gap_null_final"]):
            border.append(f"the final gap {g_end:.3f} is near the random-regrouping quantile {ev['gap_null_final']:.3f}")
    else:
        ref_code = ev.get("etf_attribute_code", ev["etf_rank1"])
        near = th["etf_near"] * ref_code
        approach = th["etf_approach"] * etf[0]
        if g_end is None:
            gtxt = "no attributes"
        elif g_end < th["gap_material"]:
            gtxt = f"centred gap {g_end:.3f} < {th['gap_material']:g}"
        else:
            gtxt = (f"centred gap {g_end:.3f} within what random regroupings give ({th['null_quantile']:g} quantile "
                    f"{ev['gap_null_final']:.3f})")
        late = "collapse"
        if etf[-1] < near or etf[-1] < approach:
            late_rule = (f"{gtxt}; ETF distance {etf[0]:.3f} → {etf[-1]:.3f} (min {ev['etf_min']:.3f}), below "
                         + (f"{th['etf_near']:g}× the attribute code's {ref_code:.3f}" if etf[-1] < near else
                            f"{th['etf_approach']:g}× its initial value ({approach:.3f})")
                         + f"; PR {pr[-1]:.3g} of {pr_etf:.3g}")
            if _close(etf[-1], near) and _close(etf[-1], approach):
                border.append(f"ETF distance {etf[-1]:.3f} is near both collapse cuts ({near:.3f}, {approach:.3f})")
        else:
            late_rule = (f"{gtxt}, PR {pr[-1]:.3g} not low, but the ETF distance did not approach the ETF "
                         f"({etf[0]:.3f} → {etf[-1]:.3f}): no structure kept and no collapse reached — "
                         "undecided, reported as collapse")
            warnings_.append("late verdict undecided: no attribute code, no rank collapse, no approach to the ETF")
        if g_end is not None and _close(g_end, th["gap_material"]):
            border.append(f"the final gap {g_end:.3f} is near gap_material = {th['gap_material']:g}")
    return Verdict(early, late, ev, th, early_rule, late_rule, warnings_, border)


def _null_quantile(gram, attributes, labels, q) -> float:
    """The ``q`` quantile of the centred gap of ``gram`` when the attribute rows are permuted
    over the contexts (a fixed seed, so a verdict is reproducible); NaN when undefined."""
    from .. import metrics as M
    if not np.all(np.isfinite(gram)):
        return float("nan")
    rng = np.random.default_rng(0)
    N = gram.shape[0]
    A = np.asarray(attributes)
    gaps = []
    for _ in range(_NULL_PERMUTATIONS):
        perm = rng.permutation(N)
        try:
            gaps.append(float(M.semantic_gap(gram, A[perm], labels)))
        except ValueError:          # a regrouping with no pair sharing (or none not sharing) a value
            continue
    gaps = np.asarray(gaps)
    gaps = gaps[np.isfinite(gaps)]
    return float(np.quantile(gaps, q)) if gaps.size else float("nan")


def _attribute_code_gram(attributes) -> np.ndarray:
    """Gram of the pure attribute code: one one-hot block per attribute column (the structure a
    persistent run keeps, at full strength)."""
    A = np.asarray(attributes)
    blocks = [np.eye(int(A[:, f].max()) + 1)[A[:, f]] for f in range(A.shape[1])]
    code = np.concatenate(blocks, axis=1)
    return code @ code.T
