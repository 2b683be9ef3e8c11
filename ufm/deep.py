"""The deep-backbone UFM: L linear layers between free features and the classifier.

A :class:`DeepUFM` is the linear deep unconstrained-features model (Súkeník, Mondelli &
Lampert, NeurIPS 2023; arXiv 2405.14468; docs/model.md)::

    Z = W W_L ⋯ W_1 H₀ + b1ᵀ,   objective ℓ(Z) + λ_W/2‖W‖² + λ_L/2 Σ_l‖W_l‖² + λ_H/2‖H₀‖² + λ_b/2‖b‖²

with free features H₀ (d×N), hidden layers W_l (d×d), classifier W (K×d). The flow is plain
gradient flow with per-block rates (η_W, η_L, η_H, η_b). ``layers=0`` is the standard UFM.
The features that reach the classifier are F_L = W_L ⋯ W_1 H₀, and the trajectory's
``gram_H`` is F_LᵀF_L.

It is integrated by the same engine as :class:`ufm.UFM` (:func:`ufm.solve`, kernels in
:mod:`ufm.kernels.deep`) in two spaces:

* ``space="parameters"`` from a :class:`DeepState` (any factors);
* ``space="balanced"``: the logits alone, by the end-to-end equation of Arora, Cohen & Hazan
  (2018), exact when all n = L + 2 factors are balanced (W_{j+1}ᵀW_{j+1} = W_jW_jᵀ) and share
  one rate and one decay (the flow then stays balanced); start from
  :meth:`DeepUFM.balanced_init`. Its cost does not grow with the width.

The numpy methods (:meth:`DeepUFM.loss`, :meth:`DeepUFM.vector_field`) are the slow references
the kernels are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import as_float_array, as_nonnegative, as_positive, as_positive_int, as_rng, check_choice, readonly
from .problems import Problem
from .kernels.deep import RANK_RTOL
from .reference import data_loss_and_grad

__all__ = ["DeepUFM", "DeepState", "balanced_factors"]


@dataclass(frozen=True, eq=False)
class DeepState:
    """A parameter-space state of the deep-backbone model.

    Attributes:
        W: classifier (K, d). layers: hidden layers (L, d, d), W_1 first. H0: free features
        (d, N). b: bias (K,) or None.

    Raises:
        ValueError: shapes that do not chain (named).
    """

    W: np.ndarray
    layers: np.ndarray
    H0: np.ndarray
    b: np.ndarray | None = None

    def __post_init__(self):
        W = as_float_array(self.W, "W", ndim=2)
        H0 = as_float_array(self.H0, "H0", ndim=2)
        layers = as_float_array(self.layers, "layers", ndim=3)
        d = W.shape[1]
        if H0.shape[0] != d:
            raise ValueError(f"H0: expected {d} rows to match W's width d = {d}, got shape {H0.shape}")
        if layers.shape[1:] != (d, d):
            raise ValueError(f"layers: expected shape (L, {d}, {d}), got {layers.shape}")
        object.__setattr__(self, "W", readonly(W))
        object.__setattr__(self, "H0", readonly(H0))
        object.__setattr__(self, "layers", readonly(layers))
        if self.b is not None:
            object.__setattr__(self, "b", readonly(as_float_array(self.b, "b", shape=(W.shape[0],))))

    @property
    def d(self) -> int:
        return self.W.shape[1]

    @property
    def L(self) -> int:
        return self.layers.shape[0]

    def features(self) -> np.ndarray:
        """F_L = W_L ⋯ W_1 H₀ (d, N): the features entering the classifier."""
        F = np.array(self.H0)
        for Wl in self.layers:
            F = Wl @ F
        return F

    def logits(self) -> np.ndarray:
        """Z = W·W_L⋯W_1·H₀ (+ b): (K, N) logits of this state."""
        Z = self.W @ self.features()
        return Z if self.b is None else Z + self.b[:, None]

    def factors(self) -> list:
        """[H₀, W_1, …, W_L, W], lowest first."""
        return [np.array(self.H0), *[np.array(x) for x in self.layers], np.array(self.W)]

    def imbalance(self) -> float:
        """max_j ‖W_{j+1}ᵀW_{j+1} − W_jW_jᵀ‖_F / ‖W_jW_jᵀ‖_F over consecutive factors (0 when
        balanced)."""
        f = self.factors()
        worst = 0.0
        for lo, hi in zip(f[:-1], f[1:]):
            a, c = hi.T @ hi, lo @ lo.T
            worst = max(worst, float(np.linalg.norm(a - c) / max(np.linalg.norm(c), 1e-300)))
        return worst

    def flat(self) -> np.ndarray:
        """The kernel layout [vec W, vec H₀, vec W_1 … vec W_L, b]."""
        parts = [self.W.ravel(), self.H0.ravel(), self.layers.ravel()]
        if self.b is not None:
            parts.append(self.b)
        return np.concatenate(parts)


def balanced_factors(Z: np.ndarray, layers: int, d: int, seed=None) -> tuple:
    """Balanced factors of a K×N matrix: (W, layers (L, d, d), H₀) with W W_L ⋯ W_1 H₀ = Z and
    W_{j+1}ᵀW_{j+1} = W_jW_jᵀ; every factor has singular values σ_i(Z)^{1/n}, n = L + 2.

    The inner bases are random orthonormal d×r frames (r = rank Z), so the factors are generic.

    Raises:
        ValueError: d smaller than the rank of Z.
    """
    Z = as_float_array(Z, "Z", ndim=2)
    L = as_positive_int(layers, "layers", minimum=0)
    d = as_positive_int(d, "d")
    U, s, Vt = np.linalg.svd(Z, full_matrices=False)
    keep = s > s.max() * 1e-12 if s.size and s.max() > 0 else np.zeros(s.size, bool)
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    r = s.size
    if d < r:
        raise ValueError(f"d: balanced factors of a rank-{r} matrix need width d >= {r}, got {d}")
    rng = as_rng(seed, "seed")
    n = L + 2
    root = s ** (1.0 / n)
    frames = [np.linalg.qr(rng.normal(size=(d, d)))[0][:, :r] for _ in range(L + 1)]
    H0 = (frames[0] * root) @ Vt
    hidden = np.stack([(frames[l + 1] * root) @ frames[l].T for l in range(L)]) if L else np.zeros((0, d, d))
    W = (U * root) @ frames[L].T
    return W, hidden, H0


_FIELDS = ("loss", "layers", "lambda_W", "lambda_L", "lambda_H", "bias", "lambda_b", "lr_W", "lr_L", "lr_H", "lr_b")


class DeepUFM:
    """The deep-backbone (deep linear) unconstrained-features model (module docstring).

    Arguments:
        problem: a :class:`ufm.Problem`.
        layers: L, the number of hidden linear layers between H₀ and the classifier (>= 0;
            0 is the standard UFM). The model has n = L + 2 factors.
        loss: ``"ce"`` or ``"mse"``.
        lambda_W, lambda_L, lambda_H, lambda_b: decays of the classifier, of every hidden
            layer, of H₀ and of the bias (>= 0). ``lambda_L`` and ``lambda_H`` default to
            ``lambda_W`` (decay on every factor, as weight decay on a network does).
        bias: whether the logits carry a bias.
        lr_W, lr_L, lr_H, lr_b: per-block rates (> 0); ``lr_L`` and ``lr_H`` default to ``lr_W``.

    Raises:
        TypeError / ValueError: naming the argument.
    """

    __slots__ = ("problem",) + tuple("loss_name" if f == "loss" else f for f in _FIELDS)

    def __init__(self, problem: Problem, layers: int = 1, loss: str = "ce", lambda_W: float = 0.0,
                 lambda_L: float | None = None, lambda_H: float | None = None, bias: bool = False,
                 lambda_b: float = 0.0, lr_W: float = 1.0, lr_L: float | None = None, lr_H: float | None = None,
                 lr_b: float = 1.0):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if not isinstance(problem, Problem):
            raise TypeError(f"problem: expected a ufm.Problem, got {type(problem).__name__}")
        put("problem", problem)
        put("layers", as_positive_int(layers, "layers", minimum=0))
        check_choice(loss, "loss", ("ce", "mse"))
        if loss == "ce" and problem.target_kind == "real":
            raise ValueError("loss: 'ce' needs one-hot or soft-label targets; these targets are real-valued, "
                             "use loss='mse'")
        put("loss_name", loss)
        lam_w = as_nonnegative(lambda_W, "lambda_W")
        put("lambda_W", lam_w)
        put("lambda_L", lam_w if lambda_L is None else as_nonnegative(lambda_L, "lambda_L"))
        put("lambda_H", lam_w if lambda_H is None else as_nonnegative(lambda_H, "lambda_H"))
        put("lambda_b", as_nonnegative(lambda_b, "lambda_b"))
        lr_w = as_positive(lr_W, "lr_W")
        put("lr_W", lr_w)
        put("lr_L", lr_w if lr_L is None else as_positive(lr_L, "lr_L"))
        put("lr_H", lr_w if lr_H is None else as_positive(lr_H, "lr_H"))
        put("lr_b", as_positive(lr_b, "lr_b"))
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias: expected True or False, got {bias!r}")
        put("bias", bool(bias))
        if self.lambda_b and not self.bias:
            raise ValueError("lambda_b: decay on the bias needs bias=True")

    def __setattr__(self, name, value):
        raise AttributeError(f"DeepUFM is immutable; use model.replace({name}=...)")

    def __reduce__(self):
        # rebuilt through the constructor: the default pickling of a __slots__ object restores
        # each slot with setattr, which this immutable class refuses (fits of the deep family
        # travel between processes in ufm.bridge.fitting.fit_all)
        return (_rebuild_deep, (self.problem, self.params()))

    def params(self) -> dict:
        """The constructor arguments (decays, rates, layers, loss, bias) as a plain dict."""
        out = {f: getattr(self, f) for f in _FIELDS if f != "loss"}
        out["loss"] = self.loss_name
        return out

    def replace(self, **changes) -> "DeepUFM":
        """A copy with some constructor arguments changed.

        Raises:
            TypeError: an argument the model does not have (named).
        """
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise TypeError(f"replace: unknown field(s) {sorted(unknown)}; fields are {list(_FIELDS)}")
        return DeepUFM(self.problem, **{**self.params(), **changes})

    @property
    def K(self) -> int:
        return self.problem.K

    @property
    def N(self) -> int:
        return self.problem.N

    @property
    def factors(self) -> int:
        """n = L + 2, the number of factors of the logits."""
        return self.layers + 2

    kind = "deep"
    coupling = None
    lambda_E = 0.0

    @property
    def balanced_exact(self) -> bool:
        """True when the balanced-manifold (end-to-end) equation is exact for this model: one
        rate and one decay for every factor."""
        return (self.lambda_W == self.lambda_L == self.lambda_H) and (self.lr_W == self.lr_L == self.lr_H)

    def describe(self) -> dict:
        """:meth:`params` plus the family, K, N and the (absent) coupling: what a trajectory's
        ``info["model"]`` records."""
        out = self.params()
        out.update(kind="deep", K=self.K, N=self.N, coupling=None)
        return out

    def __repr__(self) -> str:
        return (f"DeepUFM(layers={self.layers}, loss={self.loss_name!r}, λ_W={self.lambda_W:g}, λ_L={self.lambda_L:g}, "
                f"λ_H={self.lambda_H:g}" + (", bias=True" if self.bias else "") + ")")

    # -- states -----------------------------------------------------------------------------
    def init(self, d: int, *, scale: float = 1e-1, seed=None) -> DeepState:
        """Random factors of width d: i.i.d. normal entries with standard deviation scale/√d,
        so that every row of W, column of H₀ and row of each layer has rms norm ``scale``."""
        d = as_positive_int(d, "d")
        scale = as_positive(scale, "scale")
        rng = as_rng(seed, "seed")
        sd = scale / np.sqrt(d)
        W = rng.normal(0.0, sd, size=(self.K, d))
        layers = rng.normal(0.0, sd, size=(self.layers, d, d))
        H0 = rng.normal(0.0, sd, size=(d, self.N))
        return DeepState(W, layers, H0, np.zeros(self.K) if self.bias else None)

    def balanced_init(self, d: int, *, scale: float = 1e-1, seed=None, Z=None) -> DeepState:
        """Balanced factors (:func:`balanced_factors`) of Z (default: a random K×N Gaussian
        matrix normalised so that every factor's singular values have rms ``scale``)."""
        rng = as_rng(seed, "seed")
        if Z is None:
            scale = as_positive(scale, "scale")
            A = rng.normal(size=(self.K, self.N))
            s = np.linalg.svd(A, compute_uv=False)
            A = A / np.sqrt(np.mean(s ** 2))                       # rms singular value 1
            U, s, Vt = np.linalg.svd(A, full_matrices=False)
            Z = (U * (scale * s ** (1.0 / self.factors)) ** self.factors) @ Vt
        else:
            Z = as_float_array(Z, "Z", shape=(self.K, self.N))
        W, layers, H0 = balanced_factors(Z, self.layers, d, seed=rng)
        return DeepState(W, layers, H0, np.zeros(self.K) if self.bias else None)

    def check_state(self, state, name: str = "init") -> None:
        """Raise unless ``state`` is a DeepState of this model's sizes and layer count."""
        if not isinstance(state, DeepState):
            raise TypeError(f"{name}: expected a ufm.DeepState (model.init / model.balanced_init), "
                            f"got {type(state).__name__}")
        if state.W.shape[0] != self.K or state.H0.shape[1] != self.N:
            raise ValueError(f"{name}: expected W with K = {self.K} rows and H0 with N = {self.N} columns, got "
                             f"{state.W.shape} and {state.H0.shape}")
        if state.L != self.layers:
            raise ValueError(f"{name}: the model has layers = {self.layers}, the state {state.L}")
        if self.bias != (state.b is not None):
            raise ValueError(f"{name}: bias {'missing' if self.bias else 'present'} in the state, model bias={self.bias}")

    # -- numpy references -------------------------------------------------------------------
    def loss(self, state: DeepState) -> float:
        """The objective at a parameter-space state (numpy reference)."""
        self.check_state(state, "state")
        data, _ = data_loss_and_grad(self, state.logits())
        reg = 0.5 * (self.lambda_W * np.sum(state.W ** 2) + self.lambda_L * np.sum(state.layers ** 2)
                     + self.lambda_H * np.sum(state.H0 ** 2))
        if state.b is not None:
            reg += 0.5 * self.lambda_b * float(state.b @ state.b)
        return float(data + reg)

    def balanced_loss(self, Z: np.ndarray, b=None) -> float:
        """ℓ(Z + b1ᵀ) + (nλ/2) Σ σ_i(Z)^{2/n}: the objective at balanced factors of Z."""
        Z = as_float_array(Z, "Z", shape=(self.K, self.N))
        data, _ = data_loss_and_grad(self, Z if b is None else Z + np.asarray(b)[:, None])
        s = np.linalg.svd(Z, compute_uv=False)
        s = np.where(s > RANK_RTOL * s.max(), s, 0.0) if s.size else s
        reg = 0.5 * self.factors * self.lambda_W * float(np.sum(s ** (2.0 / self.factors)))
        if b is not None:
            reg += 0.5 * self.lambda_b * float(np.dot(b, b))
        return float(data + reg)

    def vector_field(self, state: DeepState) -> DeepState:
        """d(state)/dt of the parameter-space flow (numpy reference)."""
        self.check_state(state, "state")
        _, G = data_loss_and_grad(self, state.logits())
        Fs = [np.array(state.H0)]
        for Wl in state.layers:
            Fs.append(Wl @ Fs[-1])
        dW = -self.lr_W * (G @ Fs[-1].T + self.lambda_W * state.W)
        B = state.W.T @ G
        dlayers = np.zeros_like(state.layers)
        for l in range(self.layers - 1, -1, -1):
            dlayers[l] = -self.lr_L * (B @ Fs[l].T + self.lambda_L * state.layers[l])
            B = state.layers[l].T @ B
        dH0 = -self.lr_H * (B + self.lambda_H * state.H0)
        db = None if state.b is None else -self.lr_b * (G.sum(axis=1) + self.lambda_b * state.b)
        return DeepState(dW, dlayers, dH0, db)

    def balanced_field(self, Z: np.ndarray, b=None):
        """(dZ/dt, db/dt) of the end-to-end equation on the balanced manifold (numpy reference:
        fractional powers of ZZᵀ and ZᵀZ from the SVD of Z, singular values below
        ``RANK_RTOL``·σ_max counted as 0 as in the kernel)."""
        Z = as_float_array(Z, "Z", shape=(self.K, self.N))
        _, G = data_loss_and_grad(self, Z if b is None else Z + np.asarray(b)[:, None])
        n = self.factors
        U, s, Vt = np.linalg.svd(Z)
        s = np.where(s > RANK_RTOL * s.max(), s, 0.0) if s.size else s
        mu, nu = np.zeros(self.K), np.zeros(self.N)
        mu[:s.size], nu[:s.size] = s ** 2, s ** 2

        def power(U, w, e):
            return np.eye(U.shape[0]) if e == 0 else (U * np.where(w > 0, w, 0.0) ** e) @ U.T
        dZ = sum(power(U, mu, (n - j) / n) @ G @ power(Vt.T, nu, (j - 1) / n) for j in range(1, n + 1))
        dZ = -self.lr_W * (dZ + n * self.lambda_W * Z)
        db = None if b is None else -self.lr_b * (G.sum(axis=1) + self.lambda_b * np.asarray(b))
        return dZ, db


def solve_deep(model: DeepUFM, init, t, *, method="dopri5", rtol: float = 1e-8, atol: float = 1e-10,
               space: str = "parameters", save=("gram_W", "gram_H", "logits"), t0: float = 0.0, dt=None,
               max_steps: int = 10_000_000, h_max: float = float("inf"), progress=None, balance_tol: float = 1e-6):
    """:func:`ufm.solve` for a :class:`DeepUFM` (called by it; same engine, same outputs).

    ``space="parameters"`` integrates the factors from any :class:`DeepState`;
    ``space="balanced"`` integrates the logits by the end-to-end equation, from a DeepState
    whose factors are balanced to ``balance_tol`` (relative), for a model with one rate and one
    decay on every factor. ``save`` may hold ``"W"`` only in parameter space; the features are
    a product, so save ``"gram_H"`` for them.

    Raises:
        TypeError / ValueError: a bad argument (named), an unbalanced start or a model whose
            rates or decays differ between factors with ``space="balanced"``.
        IntegrationError: as :func:`ufm.solve`.
    """
    from . import engine
    from .errors import IntegrationError
    from .solvers import get_solver
    from .integration import check_run_options
    from .trajectory import Trajectory
    space = check_choice(space, "space", ("parameters", "balanced"))
    solver = get_solver(method, rtol)          # "auto" picks its pair by the run's tolerance
    rtol, atol, t0, ts, max_steps, h_max, h0 = check_run_options(solver, t, rtol, atol, t0, dt, max_steps, h_max)
    names = engine.parse_save(save, "parameters")
    if "H" in names:
        raise ValueError("save: a DeepUFM's features are the product W_L ⋯ W_1 H₀; save 'gram_H' (F_LᵀF_L) instead "
                         "of 'H'")
    if space == "balanced" and "W" in names:
        raise ValueError("save: 'W' does not exist in space='balanced' (it integrates the logits)")
    model.check_state(init, "init")
    if space == "balanced":
        if not model.balanced_exact:
            raise ValueError("space: 'balanced' is exact only with one rate and one decay for every factor; this model "
                             f"has λ_W, λ_L, λ_H = {model.lambda_W:g}, {model.lambda_L:g}, {model.lambda_H:g} and "
                             f"η_W, η_L, η_H = {model.lr_W:g}, {model.lr_L:g}, {model.lr_H:g}: use space='parameters'")
        imb = init.imbalance()
        if not imb <= balance_tol:
            raise ValueError(f"init: space='balanced' needs balanced factors (W_(j+1)ᵀW_(j+1) = W_jW_jᵀ); this start is "
                             f"off by {imb:.2e} (relative) > balance_tol = {balance_tol:g}. Use model.balanced_init "
                             "or space='parameters'")
        Z = init.W @ init.features()
        y = np.concatenate([Z.ravel()] + ([init.b] if init.b is not None else []))
        d = None
    else:
        y = init.flat()
        d = init.d
    y = np.array(y, dtype=np.float64, order="C")
    packed = engine.pack_deep_model(model, space, d or 0)
    buffers = engine.SaveBuffers(len(ts), y.size, model.K, model.N, d, model.bias, names)
    run = engine.integrate(packed, y, ts, engine.tableau(solver), engine.controls(rtol, atol, h_max, max_steps),
                           engine.new_carry(t0, h0), buffers, progress)
    fields = buffers.fields(run.reached)         # W is the first block and b the last in both layouts
    info = {"method": solver.name, "space": space, "rtol": rtol, "atol": atol, "t0": t0, "d": d, "dt": dt,
            **run.counts(), "wall_time_s": run.wall_time_s, "model": model.describe()}
    traj = Trajectory(t=ts[:run.reached].copy(), **fields, problem=model.problem, model=model, info=info)
    if not run.ok:
        reason, message = engine.failure(run.status, run.t_reached, run.reached, max_steps, t_end=float(ts[-1]),
                                         accepted=run.counts()["accepted_steps"])
        raise IntegrationError(message, t=run.t_reached, reason=reason, trajectory=traj)
    return traj


def _rebuild_deep(problem, params):
    return DeepUFM(problem, **params)
