"""``Run``: one exported training run in memory, and its Gram trajectory.

Conventions: in a run, as in training code, **rows are samples** — ``H[j]`` is the (N, d)
matrix of the N contexts' features at checkpoint j and ``W[j]`` the (K, d) classifier. The core
of ``ufm`` keeps features as d×N columns; :meth:`Run.trajectory` converts at this boundary:
``gram_H[j] = H[j] H[j]ᵀ`` (N×N, the core's HᵀH), ``gram_W[j] = W[j] W[j]ᵀ`` (K×K) and
``logits[j] = W[j] H[j]ᵀ + b[j] 1ᵀ`` (K×N, one column per context).
"""

from __future__ import annotations

import os

import numpy as np

from .errors import FeaturesRequired
from .format import validate

__all__ = ["Run", "relations_from_attributes"]

#: relation matrices are built for problems up to this many contexts (they take R·N² floats)
MAX_RELATIONS_N = 512


def relations_from_attributes(attributes, labels=None):
    """Relations of contexts by which latent attributes they share (and whether labels agree).

    The key of a pair (i, j) is "identity" (i = j), "same class" (i ≠ j with equal labels, only
    when some labels repeat), or the set of attribute columns on which the two agree. For a
    factorial setting this is its Hamming-type association scheme; for a hierarchy (ancestors as
    attributes) the agreeing sets are prefixes, i.e. the depth of the lowest common ancestor.

    Arguments:
        attributes: int (N, F), F <= 60.
        labels: optional int (N,).

    Returns:
        (relations, names): a list of (N, N) 0/1 float matrices partitioning the pairs, the
        identity first, and their names (``"agree on 0,2"``, ``"agree on none"``, ...).
    """
    A = np.asarray(attributes)
    if A.ndim == 1:
        A = A[:, None]
    N, F = A.shape
    if F > 60:
        raise ValueError(f"attributes: at most 60 attribute columns for relations, got {F}")
    code = np.zeros((N, N), dtype=np.int64)
    for f in range(F):
        code |= (A[:, f, None] == A[None, :, f]).astype(np.int64) << f
    if labels is not None:
        lab = np.asarray(labels)
        if np.unique(lab).size < N:
            code[lab[:, None] == lab[None, :]] = -1
    np.fill_diagonal(code, -2)
    rels, names = [], []
    for c in np.unique(code):
        rels.append((code == c).astype(np.float64))
        if c == -2:
            names.append("identity")
        elif c == -1:
            names.append("same class")
        else:
            agree = [str(f) for f in range(F) if (int(c) >> f) & 1]
            names.append("agree on " + (",".join(agree) if agree else "none"))
    return rels, names


class Run:
    """An exported training run: checkpoints of features and classifier, labels, metadata.

    Construct one with :func:`ufm.bridge.load` from a file, or directly from arrays (same
    validation). Arrays are kept as stored (float32 stays float32; large safetensors files stay
    memory-mapped); Grams are computed in float64.

    Arguments:
        steps: int (T,), strictly increasing optimiser steps of the checkpoints.
        H: float (T, N, d): features, **one row per context** (the core's H is d×N; see the
            module docstring).
        W: float (T, K, d): classifier rows.
        gram_H: instead of H and W (a **Gram-only run**, for models too large to export their
            features): float (T, N, N) feature Grams H Hᵀ over the N contexts.
        gram_W: Gram-only runs, optional: float (T, K, K) classifier Grams W Wᵀ.
        logits: Gram-only runs, optional: float (T, K, N) logits W Hᵀ (+ b 1ᵀ).
        labels: int (N,) classes in 0 … K−1, or
        Y: float (N, K) soft labels (rows on the simplex); at least one of the two.
        b: optional float (T, K) bias.
        attributes: optional int (N, F) latent attributes.
        loss: optional float (T,) logged training loss.
        kernel: optional float (N, N) or (P, N, N): the backbone's feature kernel (traced
            empirical NTK) at ``kernel_steps``.
        kernel_steps: optional int (P,) steps of the kernels (default: the first step for a
            single kernel, ``steps`` when P = T).
        lr, weight_decay: optional scalars (also read from ``meta``).
        meta: optional JSON-serialisable metadata (optimizer, model, task, seed, ...).
        source: where the run came from, used in messages.

    Raises:
        FormatError: anything :func:`ufm.bridge.format.validate` rejects (missing or
            inconsistent arrays, non-increasing steps, non-finite values, bad labels, ...).
    """

    def __init__(self, steps=None, H=None, W=None, *, labels=None, Y=None, b=None, attributes=None, loss=None, kernel=None,
                 kernel_steps=None, lr=None, weight_decay=None, gram_H=None, gram_W=None, logits=None, meta=None,
                 source: str = "<arrays>", _dtypes=None):
        fields = dict(steps=steps, H=H, W=W, labels=labels, Y=Y, b=b, attributes=attributes, loss=loss,
                      kernel=kernel, kernel_steps=kernel_steps, lr=lr, weight_decay=weight_decay, gram_H=gram_H,
                      gram_W=gram_W, logits=logits)
        arrays, meta = validate({k: v for k, v in fields.items() if v is not None}, meta, source=source,
                                dtypes=_dtypes)
        self._a = arrays
        self.meta = meta
        self.source = source
        self._cache = {}

    # -- fields -------------------------------------------------------------------------------
    steps = property(lambda self: self._a["steps"], doc="int (T,) optimiser steps.")

    @property
    def has_features(self) -> bool:
        """True when the run holds the features H and W; False for a Gram-only run."""
        return "H" in self._a

    def require_features(self, what: str) -> None:
        """Raise :class:`FeaturesRequired` naming ``what`` when the run is Gram-only."""
        if not self.has_features:
            have = ", ".join(k for k in ("gram_H", "gram_W", "logits") if k in self._a)
            raise FeaturesRequired(f"{what} needs the features H and W, and {self.source} is a Gram-only run (it holds "
                                   f"{have}); the metrics, verdicts and Gram-space fits work from the Grams")

    @property
    def H(self):
        """float (T, N, d) features, one row per context (FeaturesRequired for a Gram-only run)."""
        self.require_features("H")
        return self._a["H"]

    @property
    def W(self):
        """float (T, K, d) classifier rows (FeaturesRequired for a Gram-only run)."""
        self.require_features("W")
        return self._a["W"]
    b = property(lambda self: self._a.get("b"), doc="float (T, K) bias, or None.")
    labels = property(lambda self: self._a.get("labels"), doc="int (N,) labels, or None (soft labels).")
    attributes = property(lambda self: self._a.get("attributes"), doc="int (N, F) attributes, or None.")
    loss = property(lambda self: self._a.get("loss"), doc="float (T,) logged loss, or None.")
    kernel = property(lambda self: self._a.get("kernel"), doc="float (P, N, N) logged kernels, or None.")
    kernel_steps = property(lambda self: self._a.get("kernel_steps"), doc="int (P,) steps of the kernels, or None.")
    lr = property(lambda self: self._a.get("lr"), doc="learning rate, or None.")
    weight_decay = property(lambda self: self._a.get("weight_decay"), doc="weight decay, or None.")

    @property
    def Y(self) -> np.ndarray:
        """(N, K) targets: the soft labels, or the one-hot matrix of ``labels``."""
        if "Y" in self._a:
            return self._a["Y"]
        Y = np.zeros((self.N, self.K))
        Y[np.arange(self.N), self.labels] = 1.0
        return Y

    @property
    def T(self) -> int:
        return int(self.steps.shape[0])

    @property
    def N(self) -> int:
        return int(self._a["H"].shape[1] if self.has_features else self._a["gram_H"].shape[1])

    @property
    def K(self) -> int:
        if self.has_features:
            return int(self._a["W"].shape[1])
        for key, axis in (("gram_W", 1), ("logits", 1), ("Y", 1)):
            if key in self._a:
                return int(self._a[key].shape[axis])
        return int(self._a["labels"].max()) + 1

    @property
    def d(self) -> int | None:
        """Feature width, or None for a Gram-only run."""
        return int(self._a["H"].shape[2]) if self.has_features else None

    def fields(self) -> dict:
        """The run's arrays and scalars as keyword arguments of :func:`ufm.bridge.export`."""
        out = dict(self._a)
        out["meta"] = dict(self.meta)
        return out

    def __repr__(self) -> str:
        extra = ", ".join(k for k in ("b", "attributes", "loss", "kernel") if k in self._a)
        width = f"d={self.d}" if self.has_features else "Gram-only"
        return (f"Run({os.path.basename(str(self.source))!r}, T={self.T}, N={self.N}, K={self.K}, {width}, "
                f"steps {self.steps[0]}…{self.steps[-1]}" + (f", with {extra}" if extra else "") + ")")

    @classmethod
    def from_trajectory(cls, trajectory, *, steps=None, noise: float = 0.0, seed=None, meta=None,
                        source: str = "<simulation>") -> "Run":
        """A run from a simulated trajectory (to test the pipeline on data with known parameters).

        Features and classifier come from the trajectory's W and H when it saved them (H is
        transposed to rows-are-samples), otherwise from an exact factorisation of the joint Gram
        ``[[G_W, WH], [(WH)ᵀ, G_H]] = [W; Hᵀ][W; Hᵀ]ᵀ`` at width K + N (a Gram-space run).

        Arguments:
            trajectory: a :class:`ufm.Trajectory` with a problem (labels or soft targets) and
                either W and H or gram_W, gram_H and logits (no bias).
            steps: int (T,) steps to record (default ``trajectory.steps``, else
                ``round(trajectory.t)``).
            noise: relative Gaussian noise added to every entry of H and W (standard deviation
                ``noise`` times the checkpoint's rms row norm / √d).
            seed: seed of the noise.
            meta: metadata for the run.

        Returns:
            :class:`Run`.

        Raises:
            ValueError: a trajectory without a problem, with a bias, or without the arrays above.
        """
        tr = trajectory
        if tr.problem is None:
            raise ValueError("trajectory: needs a problem (labels or soft targets)")
        if tr.b is not None or (tr.model is not None and getattr(tr.model, "bias", False)):
            raise ValueError("trajectory: runs from biased models are not supported by from_trajectory")
        if steps is None:
            steps = tr.steps if tr.steps is not None else np.round(tr.t).astype(np.int64)
        if tr.W is not None and tr.H is not None:
            W = np.array(tr.W, dtype=np.float64)
            H = np.array(tr.H, dtype=np.float64).transpose(0, 2, 1)
        elif tr.gram_W is not None and tr.gram_H is not None and tr.logits is not None:
            K, N = tr.logits.shape[1:]
            W = np.empty((len(tr), K, K + N))
            H = np.empty((len(tr), N, K + N))
            for j in range(len(tr)):
                J = np.block([[tr.gram_W[j], tr.logits[j]], [tr.logits[j].T, tr.gram_H[j]]])
                lam, V = np.linalg.eigh(0.5 * (J + J.T))
                F = V * np.sqrt(np.clip(lam, 0.0, None))
                W[j], H[j] = F[:K], F[K:]
        else:
            raise ValueError("trajectory: needs W and H, or gram_W, gram_H and logits (save them in ufm.solve)")
        if noise:
            rng = np.random.default_rng(seed)
            for A in (W, H):
                rms = np.sqrt(np.mean(np.sum(A * A, axis=2), axis=1))          # (T,)
                A += noise * rms[:, None, None] / np.sqrt(A.shape[2]) * rng.normal(size=A.shape)
        prob = tr.problem
        kw = {"labels": prob.labels} if prob.labels is not None else {"Y": np.array(prob.Y).T}
        if prob.attributes is not None:
            kw["attributes"] = prob.attributes
        m = {"task": prob.name, "model": "simulated UFM", **(meta or {})}
        return cls(steps, H, W, **kw, meta=m, source=source)

    # -- views --------------------------------------------------------------------------------
    def select(self, index) -> "Run":
        """A run with a subset of the checkpoints.

        Arguments:
            index: anything that indexes axis 0 of ``steps`` (slice, int array, boolean mask),
                keeping the order increasing.

        Returns:
            A new :class:`Run`; kernels are kept whole (they carry their own steps).
        """
        idx = np.arange(self.T)[index]
        idx = np.atleast_1d(idx)
        kw = {k: v for k, v in self._a.items()}
        for k in ("steps", "H", "W", "b", "loss", "gram_H", "gram_W", "logits"):
            if k in kw:
                kw[k] = np.asarray(kw[k][idx])
        return Run(**kw, meta=self.meta, source=self.source)

    def with_attributes(self, attributes, *, quiet: bool = False) -> "Run":
        """The same run analysed with another attribute grouping (chosen at analysis time).

        The given attributes replace the stored ones for every metric, relation, verdict and fit
        of the returned run; a ``UserWarning`` says so when stored attributes are replaced (the
        metadata records ``attributes_overridden``).

        Arguments:
            attributes: int (N, F) (or (N,)), values >= 0, one row per context.
            quiet: no warning.

        Returns:
            A new :class:`Run`.

        Raises:
            FormatError: attributes of the wrong shape or with negative / non-integer values.
        """
        import warnings
        kw = dict(self._a)
        stored = kw.get("attributes")
        kw["attributes"] = attributes
        meta = dict(self.meta)
        meta["attributes_overridden"] = stored is not None
        run = Run(**kw, meta=meta, source=self.source)
        if stored is not None and not quiet:
            warnings.warn(attribute_override_message(stored, run.attributes, self.source), UserWarning, stacklevel=2)
        return run

    def to_gram_only(self, *, with_W: bool = True) -> "Run":
        """The run as a Gram-only run: ``gram_H`` (and, with ``with_W``, ``gram_W`` and
        ``logits``) in float64 instead of H and W; everything else kept.

        Returns:
            A new :class:`Run` (``has_features`` False).
        """
        g = self.grams()
        kw = {k: v for k, v in self._a.items() if k not in ("H", "W", "b", "gram_H", "gram_W", "logits")}
        kw["gram_H"] = g["gram_H"]
        if with_W and g.get("gram_W") is not None:
            kw["gram_W"] = g["gram_W"]
        if with_W and g.get("logits") is not None:
            kw["logits"] = g["logits"]
        return Run(**kw, meta=dict(self.meta), source=self.source)

    def initial_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Classifier and features at the first checkpoint, float64: ``(W0 (K, m), H0 (N, m))``,
        rows are samples. The stored arrays (m = d) for a features run; for a Gram-only run an
        exact factorisation of the joint Gram ``[[G_W, Z], [Zᵀ, G_H]]`` at width m = K + N
        (the Grams and logits are reproduced; any rotation of it is as good, since the Gram
        dynamics do not see rotations).

        Raises:
            FeaturesRequired: a Gram-only run without gram_W or logits (the joint Gram is not
                known; start a fit from ``init="isotropic"`` instead).
        """
        if self.has_features:
            return (np.asarray(self._a["W"][0], dtype=np.float64), np.asarray(self._a["H"][0], dtype=np.float64))
        g = self.grams()
        if g["gram_W"] is None or g["logits"] is None:
            raise FeaturesRequired(f"the initial state of {self.source} needs gram_W and logits at the first checkpoint "
                                   "(or the features H and W); this Gram-only run holds only "
                                   + ", ".join(k for k in ("gram_H", "gram_W", "logits") if g.get(k) is not None)
                                   + " — start a fit from init='isotropic'")
        if "b" in self._a:      # pragma: no cover - Gram-only runs carry no b (format)
            raise FeaturesRequired("a Gram-only run with a bias")
        K = self.K
        J = np.block([[g["gram_W"][0], g["logits"][0]], [g["logits"][0].T, g["gram_H"][0]]])
        lam, V = np.linalg.eigh(0.5 * (J + J.T))
        F = V * np.sqrt(np.clip(lam, 0.0, None))
        return F[:K].copy(), F[K:].copy()

    def problem(self):
        """The :class:`ufm.Problem` of the run: one-hot or soft targets (Y is the core's K×N),
        the attributes, and relation matrices built from the attributes (N <= 512).

        Returns:
            :class:`ufm.Problem` (cached).
        """
        if "problem" not in self._cache:
            from ..problems import Problem
            attrs = self.attributes
            kw = {"name": str(self.meta.get("task", "")) or os.path.basename(str(self.source))}
            if attrs is not None:
                kw["attributes"] = attrs
                if self.N <= MAX_RELATIONS_N:
                    rels, names = relations_from_attributes(attrs, self.labels)
                    if len(rels) > 1:
                        kw["relations"], kw["relation_names"] = rels, names
            if self.labels is not None:
                prob = Problem.classification(self.labels, self.K, **kw)
            else:
                prob = Problem(self.Y.T, **kw)
            self._cache["problem"] = prob
        return self._cache["problem"]

    def grams(self) -> dict:
        """Gram matrices and logits at every checkpoint, float64 (cached).

        Returns:
            dict with ``gram_H`` (T, N, N) = H Hᵀ per checkpoint, ``gram_W`` (T, K, K) = W Wᵀ,
            ``logits`` (T, K, N) = W Hᵀ (+ b 1ᵀ); for a Gram-only run the stored ones (symmetrised,
            float64), ``gram_W`` and ``logits`` None when the run did not log them.
        """
        if "grams" not in self._cache and not self.has_features:
            out = {}
            for key in ("gram_H", "gram_W", "logits"):
                a = self._a.get(key)
                if a is not None:
                    a = np.array(a, dtype=np.float64)
                    if key != "logits":
                        a = 0.5 * (a + a.transpose(0, 2, 1))
                out[key] = a
            self._cache["grams"] = out
        if "grams" not in self._cache:
            T, N, K = self.T, self.N, self.K
            gH = np.empty((T, N, N))
            gW = np.empty((T, K, K))
            Z = np.empty((T, K, N))
            for j in range(T):
                h = np.asarray(self.H[j], dtype=np.float64)
                w = np.asarray(self.W[j], dtype=np.float64)
                gH[j] = h @ h.T
                gW[j] = w @ w.T
                Z[j] = w @ h.T
                if self.b is not None:
                    Z[j] += np.asarray(self.b[j], dtype=np.float64)[:, None]
            self._cache["grams"] = {"gram_H": gH, "gram_W": gW, "logits": Z}
        return self._cache["grams"]

    def times(self, time: str = "steps") -> np.ndarray:
        """(T,) times of the checkpoints: ``"steps"`` (the steps as floats) or ``"lr"`` (lr·step).

        Raises:
            ValueError: unknown ``time``, or ``"lr"`` for a run without a learning rate.
        """
        if time == "steps":
            return self.steps.astype(np.float64)
        if time == "lr":
            if self.lr is None:
                raise ValueError(f"time: 'lr' needs the run's learning rate, and {self.source} has none "
                                 "(lr in the arrays or the metadata)")
            return self.lr * self.steps.astype(np.float64)
        raise ValueError(f"time: expected 'steps' or 'lr', got {time!r}")

    def trajectory(self, time: str = "steps"):
        """The run as a :class:`ufm.Trajectory`, so the core's metrics and plots apply.

        Arguments:
            time: ``"steps"`` (t = step) or ``"lr"`` (t = lr·step, the GD time of the core).

        Returns:
            :class:`ufm.Trajectory` with ``t`` (T,), ``steps``, ``loss`` (the logged loss, NaN
            where absent), ``gram_H`` (T, N, N), ``gram_W`` (T, K, K), ``logits`` (T, K, N) and
            ``problem`` (labels, attributes, relations); ``info`` holds the run's source and
            metadata.
        """
        from ..trajectory import Trajectory
        g = self.grams()
        loss = self.loss if self.loss is not None else np.full(self.T, np.nan)
        return Trajectory(t=self.times(time), loss=np.asarray(loss, dtype=np.float64), steps=self.steps.copy(),
                          gram_H=g["gram_H"], gram_W=g["gram_W"], logits=g["logits"], problem=self.problem(),
                          info={"source": str(self.source), "meta": dict(self.meta), "from": "ufm.bridge.Run"})

    # -- kernels ------------------------------------------------------------------------------
    def coupling(self, kind: str = "fixed", *, time_scale: float = 1.0, psd: bool = True):
        """The logged kernel as a coupling Θ for :class:`ufm.UFM`.

        Arguments:
            kind: ``"fixed"`` (the first logged kernel, Θ(0)) or ``"piecewise"`` (a
                :class:`ufm.PiecewiseCoupling`: kernel p applies from ``time_scale ·
                kernel_steps[p]`` until the next one).
            time_scale: ODE time per step (the time map t = time_scale · step).
            psd: clip the kernels' negative eigenvalues (rounding of a float32 NTK) to 0.

        Returns:
            (N, N) array or :class:`ufm.PiecewiseCoupling`.

        Raises:
            ValueError: the run has no kernel, or unknown ``kind``.
        """
        if self.kernel is None:
            raise ValueError(f"kernel: {self.source} has no logged kernel (key 'kernel' of the ufm-run format)")
        ks = self.kernel
        if psd:
            ks = np.stack([_psd(k) for k in ks])
        if kind == "fixed":
            return ks[0]
        if kind == "piecewise":
            from ..models import PiecewiseCoupling
            if ks.shape[0] == 1:
                return ks[0]
            return PiecewiseCoupling(time_scale * self.kernel_steps.astype(np.float64), ks)
        raise ValueError(f"kind: expected 'fixed' or 'piecewise', got {kind!r}")

    def kernel_summary(self) -> dict | None:
        """How the logged kernel moves: trace, centred alignment with the first kernel and with
        the attribute kernel AᵀA, at each kernel step.

        Returns:
            dict of (P,) arrays ``steps``, ``trace``, ``trace_ratio`` (trace / first trace),
            ``alignment_initial``, ``alignment_attributes`` (NaN without attributes), or None
            when the run has no kernel.
        """
        if self.kernel is None:
            return None
        from ..metrics import kernel_alignment
        K = self.kernel
        tr = np.trace(K, axis1=1, axis2=2)
        out = {"steps": self.kernel_steps.copy(), "trace": tr, "trace_ratio": tr / tr[0],
               "alignment_initial": np.array([kernel_alignment(k, K[0]) for k in K])}
        prob = self.problem()
        if "attribute" in prob.similarities:
            S = np.asarray(prob.similarities["attribute"])
            out["alignment_attributes"] = np.array([kernel_alignment(k, S) for k in K])
        else:
            out["alignment_attributes"] = np.full(K.shape[0], np.nan)
        return out

    # -- reports ------------------------------------------------------------------------------
    def metrics(self) -> dict:
        """Per-checkpoint geometry: dict of (T,) arrays ``etf_distance``, ``semantic_gap`` (when
        the run has attributes and the gap is defined; centred cosines, pairs with equal labels
        excluded), ``effective_rank`` (entropy), ``participation_ratio`` (of the centred
        G_H), ``norm_H``, ``norm_W`` (root-mean-square row norms; ``norm_W`` only when the run
        has W or gram_W), ``loss`` (when logged)."""
        tr = self.trajectory()
        out = {"etf_distance": tr.metric("etf_distance")}
        if self.attributes is not None:
            try:
                out["semantic_gap"] = tr.metric("semantic_gap")
            except ValueError:
                pass
        out["effective_rank"] = tr.metric("effective_rank")
        out["participation_ratio"] = tr.metric("participation_ratio")
        out["norm_H"] = tr.metric("norm_H") / np.sqrt(self.N)
        if tr.gram_W is not None:
            out["norm_W"] = tr.metric("norm_W") / np.sqrt(self.K)
        if self.loss is not None:
            out["loss"] = np.asarray(self.loss, dtype=np.float64)
        return out

    def verdict(self, thresholds: dict | None = None):
        """What the run did: early (``inherited`` / ``amplified`` / ``none``) and late
        (``collapse`` / ``persistent`` / ``low_rank`` / ``degenerate``) verdicts from the centred
        semantic gap, the ETF distance, the participation ratio, the norms and the loss, with
        the numbers, the thresholds, the deciding rules and degeneracy warnings naming the
        checkpoint (:mod:`ufm.bridge.verdict`, docs/bridge.md).

        Arguments:
            thresholds: optional overrides of :data:`ufm.bridge.verdict.THRESHOLDS`.

        Returns:
            :class:`ufm.bridge.verdict.Verdict` (cached for the default thresholds).
        """
        from .verdict import verdict
        if thresholds:
            return verdict(self, thresholds)
        if "verdict" not in self._cache:
            self._cache["verdict"] = verdict(self)
        return self._cache["verdict"]

    def summary(self) -> str:
        """A text summary: shapes, steps, metadata, metrics at the first, peak-gap and last
        checkpoints, the semantic gap's peak, and the kernel's motion (a few rows however many
        kernels were logged). The verdict is :meth:`verdict` (``ufm inspect`` prints both)."""
        m = self.metrics()
        if self.has_features:
            shapes = f"d = {self.d} (H {self._a['H'].dtype}, W {self._a['W'].dtype})"
        else:
            shapes = "Gram-only (" + ", ".join(f"{k} {self._a[k].dtype}" for k in ("gram_H", "gram_W", "logits")
                                               if k in self._a) + ")"
        lines = [f"run        {self.source}",
                 f"shapes     T = {self.T} checkpoints, N = {self.N} contexts, K = {self.K} classes, {shapes}",
                 f"steps      {self.steps[0]} … {self.steps[-1]}",
                 f"targets    {'labels (one-hot)' if self.labels is not None else 'soft labels Y'}"
                 + (f", attributes F = {self.attributes.shape[1]}" if self.attributes is not None else "")
                 + (" (chosen at analysis time)" if self.meta.get("attributes_overridden") else "")]
        keys = [k for k in ("task", "model", "optimizer", "lr", "weight_decay", "seed") if k in self.meta]
        if keys:
            import textwrap
            lines += textwrap.wrap(", ".join(f"{k} = {self.meta[k]}" for k in keys), 118,
                                   initial_indent="meta       ", subsequent_indent=" " * 11)
        rows = [0, self.T - 1]
        if "semantic_gap" in m and np.isfinite(m["semantic_gap"]).any():
            rows.insert(1, int(np.nanargmax(m["semantic_gap"])))
        if "semantic_gap" in m:
            from ..metrics import gap_convention
            lines.append(f"gap        semantic gap from {gap_convention()}; pairs with equal labels excluded")
        lines.append("")
        names = [k for k in ("loss", "semantic_gap", "etf_distance", "effective_rank", "norm_H", "norm_W") if k in m]
        lines.append("step".rjust(10) + "".join(n.rjust(16) for n in names))
        for j in dict.fromkeys(rows):
            lines.append(str(self.steps[j]).rjust(10) + "".join(f"{m[n][j]:16.4g}" for n in names))
        if "semantic_gap" in m and np.all(np.isfinite(m["semantic_gap"])):
            from ..metrics import DEFAULT_GAP_CENTRED, transient_summary
            ts = transient_summary(self.steps.astype(float), m["semantic_gap"], centred=DEFAULT_GAP_CENTRED)
            lines.append("")
            lines.append(f"transient  peak semantic gap {ts.peak:.3f} (centred) at step {ts.t_peak:g}; "
                         + (f"falls below 0.02 at step {ts.t_collapse:.3g}" if ts.collapsed else
                            f"still {m['semantic_gap'][-1]:.3f} at the last step"))
        ks = self.kernel_summary()
        if ks is not None:
            P = len(ks["steps"])
            shown = _spread(P, 8)
            lines.append("")
            lines.append(f"kernel     {P} logged, steps {int(ks['steps'][0])} … {int(ks['steps'][-1])}"
                         + ("" if len(shown) == P else f"; {len(shown)} shown (first, log-spaced, last)"))
            lines.append("step".rjust(10) + "trace/first".rjust(14) + "CKA(Θ₀)".rjust(10) + "CKA(AᵀA)".rjust(10))
            for p in shown:
                lines.append(str(int(ks["steps"][p])).rjust(10) + f"{ks['trace_ratio'][p]:14.3g}"
                             f"{ks['alignment_initial'][p]:10.3f}{ks['alignment_attributes'][p]:10.3f}")
        return "\n".join(lines)

    def inspect_dict(self) -> dict:
        """What ``ufm inspect RUN --json`` prints: run, shapes, ``verdict`` (early, late and the
        evidence, :meth:`ufm.bridge.verdict.Verdict.as_dict`), the metrics at the first and last
        checkpoints, and the kernel summary (None without a kernel)."""
        m = self.metrics()
        ks = self.kernel_summary()
        return {"run": str(self.source), "T": self.T, "N": self.N, "K": self.K, "d": self.d,
                "gram_only": not self.has_features, "steps": [int(self.steps[0]), int(self.steps[-1])],
                "verdict": self.verdict().as_dict(),
                "metrics": {k: {"first": _finite_or_none(v[0]), "last": _finite_or_none(v[-1])} for k, v in m.items()},
                "kernel": None if ks is None else {k: [_finite_or_none(x) for x in v] for k, v in ks.items()}}

    def plot(self, fig=None):
        """Figure of the run's geometry over log steps: semantic gap, ETF distance, effective
        rank, norms and loss (drawn by :func:`ufm.plot.run_panels`).

        Arguments:
            fig: optional matplotlib Figure to draw into (a new one otherwise).

        Returns:
            The matplotlib Figure.
        """
        from .. import plot
        axes = None if fig is None else fig.subplots(2, 3)
        title = os.path.basename(str(self.source)) + (f" — {self.meta.get('task')}" if "task" in self.meta else "")
        axes = plot.run_panels(self.steps, self.metrics(), axes, kernel_summary=self.kernel_summary(), title=title)
        return axes[0].figure


def attribute_override_message(stored, given, source) -> str:
    """The message printed when attributes chosen at analysis time replace stored ones."""
    stored, given = np.asarray(stored), np.asarray(given)
    sf = 1 if stored.ndim == 1 else stored.shape[1]
    gf = 1 if given.ndim == 1 else (given.shape[1] if given.ndim > 1 else 1)
    return (f"attributes: using the {gf} attribute column(s) given at analysis time instead of the {sf} stored in "
            f"{source!r}; the semantic gap, relations and verdicts follow the given grouping")


def _spread(n: int, most: int) -> list[int]:
    """At most ``most`` indices of 0 … n−1: the first, the last and log-spaced ones between."""
    if n <= most:
        return list(range(n))
    idx = np.unique(np.round(np.geomspace(1, n, most)).astype(int) - 1)
    return sorted(set(idx.tolist()) | {0, n - 1})


def _finite_or_none(x):
    x = float(x)
    return x if np.isfinite(x) else None


def _psd(K: np.ndarray) -> np.ndarray:
    """Nearest symmetric PSD matrix (negative eigenvalues set to 0)."""
    K = 0.5 * (K + K.T)
    lam, V = np.linalg.eigh(K)
    if lam[0] >= 0:
        return K
    lam = np.clip(lam, 0.0, None)
    out = (V * lam) @ V.T
    return 0.5 * (out + out.T)


def _check_run(run) -> "Run":
    if not isinstance(run, Run):
        raise TypeError(f"run: expected a ufm.bridge.Run (from ufm.bridge.load), got {type(run).__name__}")
    return run

