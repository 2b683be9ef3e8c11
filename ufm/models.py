"""The UFM model family (docs/model.md) as frozen, validated parameter records.

A :class:`UFM` says *how* features and classifier move for a :class:`~ufm.problems.Problem`:
loss, regularisation, per-block rates, bias, and the coupling Θ. States are
:class:`State` (parameter space: W, H, b) and :class:`GramState` (Gram space: M = WH, G_W,
G_H, b). The numpy methods here (:meth:`UFM.loss`, :meth:`UFM.gradient`, :meth:`UFM.vector_field`)
are the slow references the numba kernels are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import reference
from ._validation import (as_float_array, as_nonnegative, as_positive, as_positive_int, as_rng, check_choice,
                          check_memory, check_symmetric_psd, readonly)
from .problems import Problem
from .states import GramState, State

__all__ = ["UFM", "State", "GramState", "PiecewiseCoupling"]


@dataclass(frozen=True, eq=False)
class PiecewiseCoupling:
    """A time-dependent coupling Θ(t), constant between breakpoints.

    Arguments:
        times: (P,) strictly increasing start times; piece p applies on [times[p], times[p+1]),
            and piece 0 also before times[0].
        kernels: (P, N, N) symmetric PSD kernels.

    Raises:
        ValueError: shapes, ordering, or a kernel that is not symmetric PSD (named by index).
    """

    times: np.ndarray
    kernels: np.ndarray

    def __post_init__(self):
        times = as_float_array(self.times, "times", ndim=1)
        kernels = as_float_array(self.kernels, "kernels", ndim=3)
        if kernels.shape[0] != times.shape[0] or kernels.shape[1] != kernels.shape[2]:
            raise ValueError(f"kernels: expected shape (P={times.shape[0]}, N, N), got {kernels.shape}")
        if times.size == 0:
            raise ValueError("times: expected at least one piece")
        if np.any(np.diff(times) <= 0):
            raise ValueError("times: expected strictly increasing breakpoints")
        for p in range(kernels.shape[0]):
            check_symmetric_psd(kernels[p], f"kernels[{p}]")
        object.__setattr__(self, "times", readonly(times))
        object.__setattr__(self, "kernels", readonly(0.5 * (kernels + kernels.transpose(0, 2, 1))))

    def at(self, t: float) -> np.ndarray:
        """Θ in force at time t."""
        p = int(np.searchsorted(self.times, t, side="right")) - 1
        return self.kernels[max(p, 0)]


_MODEL_FIELDS = ("loss", "lambda_W", "lambda_H", "lambda_E", "bias", "lambda_b", "coupling",
                 "lr_W", "lr_H", "lr_b")


class UFM:
    """An unconstrained-features model: gradient flow of the regularised loss with coupling.

    Dynamics (docs/model.md), with G = ∂ℓ/∂Z, Z = WH + b1ᵀ::

        dW/dt = −η_W (G Hᵀ + λ_W W)
        dH/dt = −η_H (Wᵀ G + λ_H H) Θ − η_H λ_E H
        db/dt = −η_b (G 1 + λ_b b)

    where ℓ is the weighted cross-entropy ``−Σ_i π_i Σ_k Y_ki log softmax(z_i)_k`` or the
    weighted squared error ``½ Σ_i π_i ‖z_i − y_i‖²`` (π = ``problem.weights``).

    * ``coupling=None`` (Θ = I), ``lambda_E=0``: the standard UFM.
    * ``coupling=Θ`` (N×N symmetric PSD, or a :class:`PiecewiseCoupling`): the coupled UFM;
      with λ_E = 0 it has the standard UFM's fixed points, Θ only bends the path.
    * ``lambda_E > 0``: the linear-features model (decay not routed through Θ).

    The objective reported by :meth:`loss` is
    ``ℓ + λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖² + λ_E/2 tr(H Θ⁺ Hᵀ)``; for positive definite Θ
    the flow is Θ-preconditioned gradient descent on it, so it never increases.

    Instances are immutable; :meth:`replace` makes a validated copy with some fields changed.
    The loss *kind* given as ``loss=`` is read back as :attr:`loss_name` (``model.loss(state)``
    evaluates the objective).

    Arguments:
        problem: the :class:`~ufm.problems.Problem` (targets Y, weights π, attributes).
        loss: ``"ce"`` (targets one-hot or soft) or ``"mse"`` (any real targets).
        lambda_W, lambda_H, lambda_E, lambda_b: decay coefficients, >= 0.
        bias: whether the logits carry a bias b (lambda_b requires it).
        coupling: None, an (N, N) symmetric PSD array, or a :class:`PiecewiseCoupling`.
        lr_W, lr_H, lr_b: per-block rates η, > 0.

    Raises:
        ValueError / TypeError: naming the argument (unknown loss, CE on real targets, negative
            decay or rate, Θ of the wrong shape or not symmetric PSD, lambda_b without bias).
    """

    __slots__ = ("problem", "loss_name", "lambda_W", "lambda_H", "lambda_E", "bias", "lambda_b",
                 "coupling", "lr_W", "lr_H", "lr_b")

    def __init__(self, problem: Problem, loss: str = "ce", lambda_W: float = 0.0,
                 lambda_H: float = 0.0, lambda_E: float = 0.0, bias: bool = False,
                 lambda_b: float = 0.0, coupling=None, lr_W: float = 1.0, lr_H: float = 1.0,
                 lr_b: float = 1.0):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if not isinstance(problem, Problem):
            raise TypeError(f"problem: expected a ufm.Problem, got {type(problem).__name__}")
        put("problem", problem)
        check_choice(loss, "loss", ("ce", "mse"))
        if loss == "ce" and problem.target_kind == "real":
            raise ValueError("loss: 'ce' needs one-hot or soft-label targets (columns of Y on the "
                             "probability simplex); these targets are real-valued, use loss='mse'")
        put("loss_name", loss)
        for name, value in (("lambda_W", lambda_W), ("lambda_H", lambda_H), ("lambda_E", lambda_E),
                            ("lambda_b", lambda_b)):
            put(name, as_nonnegative(value, name))
        for name, value in (("lr_W", lr_W), ("lr_H", lr_H), ("lr_b", lr_b)):
            put(name, as_positive(value, name))
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias: expected True or False, got {bias!r}")
        put("bias", bool(bias))
        if self.lambda_b and not self.bias:
            raise ValueError("lambda_b: decay on the bias needs bias=True")
        N = problem.N
        cp = coupling
        if cp is not None and not isinstance(cp, PiecewiseCoupling):
            theta = as_float_array(cp, "coupling", shape=(N, N))
            check_symmetric_psd(theta, "coupling")
            cp = readonly(0.5 * (theta + theta.T))
        elif isinstance(cp, PiecewiseCoupling) and cp.kernels.shape[1] != N:
            raise ValueError(f"coupling: expected kernels of shape (P, {N}, {N}), got {cp.kernels.shape}")
        put("coupling", cp)

    def __setattr__(self, name, value):
        raise AttributeError(f"UFM is immutable; use model.replace({name}=...)")

    def __reduce__(self):
        return (_rebuild_ufm, (self.problem, self.params()))

    def params(self) -> dict:
        """The constructor arguments (except ``problem``) as a dict."""
        out = {name: getattr(self, name) for name in _MODEL_FIELDS if name != "loss"}
        out["loss"] = self.loss_name
        return out

    def replace(self, **changes) -> "UFM":
        """A copy with some constructor arguments changed (validated again)."""
        unknown = set(changes) - set(_MODEL_FIELDS) - {"problem"}
        if unknown:
            raise TypeError(f"replace: unknown field(s) {sorted(unknown)}; fields are {list(_MODEL_FIELDS)}")
        kw = {"problem": self.problem, **self.params(), **changes}
        return UFM(**kw)

    # -- conveniences -----------------------------------------------------------------------
    @property
    def K(self) -> int:
        return self.problem.K

    @property
    def N(self) -> int:
        return self.problem.N

    @property
    def kind(self) -> str:
        """``"standard"``, ``"coupled"`` or ``"linear-features"`` (λ_E > 0)."""
        if self.lambda_E > 0:
            return "linear-features"
        return "standard" if self.coupling is None else "coupled"

    def theta(self, t: float = 0.0) -> np.ndarray:
        """The coupling Θ in force at time t, (N, N) (the identity for the standard UFM)."""
        if self.coupling is None:
            return np.eye(self.N)
        if isinstance(self.coupling, PiecewiseCoupling):
            return np.array(self.coupling.at(t))
        return np.array(self.coupling)

    def describe(self) -> dict:
        """JSON-serialisable scalar description (arrays excluded), used in saved metadata."""
        out = {k: v for k, v in self.params().items() if k != "coupling"}
        out["kind"] = self.kind
        out["K"], out["N"] = self.K, self.N
        out["coupling"] = (None if self.coupling is None else
                           "piecewise" if isinstance(self.coupling, PiecewiseCoupling) else "matrix")
        return out

    def __eq__(self, other):
        if not isinstance(other, UFM):
            return NotImplemented
        if self.describe() != other.describe() or self.problem != other.problem:
            return False
        a, b = self.coupling, other.coupling
        if isinstance(a, PiecewiseCoupling):
            return (np.array_equal(a.times, b.times) and np.array_equal(a.kernels, b.kernels))
        return a is None and b is None or (a is not None and b is not None and np.array_equal(a, b))

    __hash__ = None

    def __repr__(self) -> str:
        parts = [f"loss={self.loss_name!r}"]
        for name in ("lambda_W", "lambda_H", "lambda_E", "lambda_b", "lr_W", "lr_H", "lr_b"):
            v = getattr(self, name)
            default = 1.0 if name.startswith("lr") else 0.0
            if v != default:
                parts.append(f"{name}={v:g}")
        if self.bias:
            parts.append("bias=True")
        parts.append(f"coupling={self.describe()['coupling']}")
        return f"UFM[{self.kind}]({self.problem!r}, " + ", ".join(parts) + ")"

    # -- states -----------------------------------------------------------------------------
    def init(self, d: int, *, scale: float = 1e-3, seed=None) -> State:
        """Random initial state of width d.

        Entries of W and H are i.i.d. normal with mean 0 and standard deviation ``scale/√d``,
        so that E[WWᵀ] = scale² I_K and E[HᵀH] = scale² I_N whatever the width (the Grams
        become exactly isotropic as d → ∞). The bias starts at 0.

        Arguments:
            d: width, integer >= 1.
            scale: root-mean-square norm of each row of W and column of H, > 0.
            seed: anything ``numpy.random.default_rng`` accepts (None, an integer >= 0, ...);
                same seed, same state.

        Raises:
            TypeError / ValueError: a bad d, scale or seed; a width whose state would not fit
                in memory.
        """
        d = as_positive_int(d, "d")
        scale = as_positive(scale, "scale")
        rng = as_rng(seed, "seed")
        # the draws, then the State's read-only copies: about three times the state itself
        check_memory(3 * 8.0 * (self.K + self.N) * d, "d", f"a width-{d} state (K + N = {self.K + self.N} rows of d)")
        sd = scale / np.sqrt(d)
        W = rng.normal(0.0, sd, size=(self.K, d))
        H = rng.normal(0.0, sd, size=(d, self.N))
        return State(W, H, np.zeros(self.K) if self.bias else None)

    def isotropic(self, scale: float = 1e-3) -> GramState:
        """The Gram-space start M = 0, G_W = scale² I_K, G_H = scale² I_N (bias 0).

        The limit of :meth:`init` as the width d → ∞, and a symmetric start from which
        ``ufm.solve(..., space="reduced")`` is exact (it lies in the span of every association
        scheme).

        Arguments:
            scale: root-mean-square norm of each row of W and column of H, > 0.
        """
        s2 = as_positive(scale, "scale") ** 2
        return GramState(np.zeros((self.K, self.N)), s2 * np.eye(self.K), s2 * np.eye(self.N),
                         np.zeros(self.K) if self.bias else None)

    def state(self, W, H, b=None) -> State:
        """An explicit parameter-space state, checked against the model's K and N."""
        if b is None and self.bias:
            b = np.zeros(self.K)
        st = State(W, H, b)
        self.check_state(st, "state")
        return st

    def check_state(self, state, name: str = "init") -> None:
        """Raise unless ``state`` fits this model (sizes, bias present iff the model has one)."""
        K, N = self.K, self.N
        if isinstance(state, State):
            if state.W.shape[0] != K:
                raise ValueError(f"{name}: W must have K = {K} rows, got shape {state.W.shape}")
            if state.H.shape[1] != N:
                raise ValueError(f"{name}: H must have N = {N} columns, got shape {state.H.shape}")
        elif isinstance(state, GramState):
            if state.M.shape != (K, N):
                raise ValueError(f"{name}: M must have shape ({K}, {N}), got {state.M.shape}")
        else:
            raise TypeError(f"{name}: expected a ufm.State or ufm.GramState, got {type(state).__name__}")
        if self.bias and state.b is None:
            raise ValueError(f"{name}: the model has a bias but the state has b = None")
        if not self.bias and state.b is not None:
            raise ValueError(f"{name}: the state has a bias b but the model has bias=False")

    # -- numpy references -------------------------------------------------------------------
    def loss(self, state, t: float = 0.0) -> float:
        """Objective ``ℓ + λ_W/2‖W‖² + λ_H/2‖H‖² + λ_b/2‖b‖² + λ_E/2 tr(HΘ⁺Hᵀ)`` at ``state``
        (a :class:`State` or :class:`GramState`; t selects Θ(t) for a piecewise coupling)."""
        self.check_state(state, "state")
        return reference.objective(self, state, t)

    def gradient(self, state: State) -> State:
        """Euclidean gradient of the data loss plus the λ_W, λ_H, λ_b penalties (numpy reference).

        Returns a :class:`State` (∇_W, ∇_H, ∇_b) = (G Hᵀ + λ_W W, Wᵀ G + λ_H H, G1 + λ_b b).
        The flow is not this gradient when Θ ≠ I or λ_E > 0; see :meth:`vector_field`.
        """
        self.check_state(state, "state")
        return reference.gradient(self, state)

    def vector_field(self, state, t: float = 0.0):
        """d(state)/dt of the flow, in the state's own space (numpy reference)."""
        self.check_state(state, "state")
        return reference.vector_field(self, state, t)


def _rebuild_ufm(problem, params):
    return UFM(problem, **params)
