"""Training problems: targets, context weights, latent attributes, couplings Θ.

A :class:`Problem` is the data side of a UFM: what the features must fit, not how they move.
Conventions (docs/model.md): ``Y`` is K×N with one column per context; ``weights`` (π) has one
entry per context and multiplies that context's loss; ``attributes`` is N×F with one row per
context and integer attribute values ``0 … q_f − 1`` in column f.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from ._validation import as_float_array, as_int_array, as_nonnegative, check_memory, is_sequence, readonly

__all__ = ["Problem"]

_ONE_HOT_TOL = 1e-12
_SOFT_TOL = 1e-9


class Problem:
    """Targets, weights and (optional) latent structure of N training contexts.

    Arguments:
        Y: targets, shape (K, N). One-hot columns (classification), columns on the probability
            simplex (soft labels, the NTP-UFM), or arbitrary reals (regression targets; MSE only).
        weights: context weights π, shape (N,), finite and >= 0 with a positive sum.
            Default ``1/N`` for every context: the mean-loss normalisation of Zhu et al. (2021)
            and Tirer & Bruna (2022). The data loss is ``Σ_i π_i ℓ(z_i, y_i)``.
        attributes: latent attributes, integer array of shape (N, F); column f takes values
            ``0 … q_f − 1``. Optional.
        similarities: mapping name -> (N, N) symmetric PSD similarity S used by
            :meth:`coupling` to build ``I + β² S``. ``"attribute"`` (AᵀA) is added automatically
            when ``attributes`` are given.
        relations: optional association scheme: a sequence of (N, N) 0/1 matrices that
            partition the N×N index pairs, the first being the identity. Settings with a
            symmetry (balanced classes, factorial, hierarchy) supply it.
        relation_names: names for ``relations`` (same length).
        name: free-text description, carried into saved trajectories.

    Raises:
        ValueError / TypeError: naming the argument, for wrong shapes, non-finite values,
            negative or all-zero weights, non-integral or negative attributes, similarity
            matrices that are not symmetric PSD, relations that do not partition the pairs.
    """

    __slots__ = ("_Y", "_weights", "_attributes", "_labels", "_target_kind", "_similarities",
                 "_relations", "_relation_names", "_name")

    def __init__(self, Y, weights=None, attributes=None, *, similarities=None, relations=None,
                 relation_names=None, name: str = ""):
        Y = as_float_array(Y, "Y", ndim=2)
        K, N = Y.shape
        if K < 1 or N < 1:
            raise ValueError(f"Y: expected a non-empty K×N array, got shape {Y.shape}")
        if weights is None:
            weights = np.full(N, 1.0 / N)
        else:
            weights = as_float_array(weights, "weights", shape=(N,))
            if np.any(weights < 0) or not weights.sum() > 0:
                raise ValueError("weights: expected entries >= 0 with a positive sum")
        self._Y = readonly(Y)
        self._weights = readonly(weights)
        self._target_kind, labels = _classify_targets(Y)
        self._labels = None if labels is None else readonly(labels)

        if attributes is not None:
            attributes = as_int_array(attributes, "attributes")
            if attributes.ndim == 1:
                attributes = attributes[:, None]
            if attributes.ndim != 2 or attributes.shape[0] != N:
                raise ValueError(f"attributes: expected shape (N={N}, F), got {attributes.shape}")
            if attributes.size and attributes.min() < 0:
                raise ValueError("attributes: expected values >= 0 (attribute f takes values 0 … q_f − 1)")
            attributes = readonly(attributes)
        self._attributes = attributes

        if similarities is not None and not isinstance(similarities, Mapping):
            raise TypeError(f"similarities: expected a mapping name -> (N, N) matrix, got {type(similarities).__name__}")
        if relations is not None and not is_sequence(relations):
            raise TypeError(f"relations: expected a sequence of (N, N) 0/1 matrices, got {type(relations).__name__}")
        if relation_names is not None and not is_sequence(relation_names):
            raise TypeError(f"relation_names: expected a sequence of names, got {type(relation_names).__name__}")
        sims = {}
        if attributes is not None:
            # the incidence matrix has one row per attribute value: Σ_f (max_f + 1) rows of N
            rows = float(np.sum(attributes.max(axis=0) + 1.0)) if attributes.size else 0.0
            check_memory(3 * 8.0 * rows * N, "attributes",
                         f"the incidence matrix of attribute values up to {int(attributes.max())} ({rows:.0f} rows)")
            A = _incidence(attributes)
            sims["attribute"] = A.T @ A
        for key, S in dict(similarities or {}).items():
            if not isinstance(key, str):
                raise TypeError(f"similarities: keys must be strings, got {key!r}")
            S = as_float_array(S, f"similarities[{key!r}]", shape=(N, N))
            from ._validation import check_symmetric_psd
            check_symmetric_psd(S, f"similarities[{key!r}]")
            sims[key] = S
        self._similarities = MappingProxyType({k: readonly(v) for k, v in sims.items()})

        if relations is not None:
            rel = [as_float_array(R, f"relations[{i}]", shape=(N, N)) for i, R in enumerate(relations)]
            total = np.sum(rel, axis=0)
            if not all(np.all((R == 0) | (R == 1)) for R in rel):
                raise ValueError("relations: expected 0/1 matrices")
            if not np.array_equal(total, np.ones((N, N))):
                raise ValueError("relations: expected matrices that partition all N×N pairs (they must sum to the all-ones matrix)")
            if not np.array_equal(rel[0], np.eye(N)):
                raise ValueError("relations: the first relation must be the identity")
            if not all(np.array_equal(R, R.T) for R in rel):
                raise ValueError("relations: expected symmetric relation matrices")
            names = list(relation_names) if relation_names is not None else [f"R{i}" for i in range(len(rel))]
            if len(names) != len(rel):
                raise ValueError(f"relation_names: expected {len(rel)} names, got {len(names)}")
            self._relations = tuple(readonly(R) for R in rel)
            self._relation_names = tuple(str(n) for n in names)
        else:
            if relation_names is not None:
                raise ValueError("relation_names: given without relations")
            self._relations = None
            self._relation_names = None
        self._name = str(name)

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def classification(cls, labels, K: int | None = None, **kwargs) -> "Problem":
        """One-hot problem from integer labels.

        Arguments:
            labels: integer class of each context, shape (N,), values in ``0 … K − 1``.
            K: number of classes; default ``max(labels) + 1``.
            **kwargs: passed to :class:`Problem` (weights, attributes, ...).

        Raises:
            ValueError: labels out of range, empty, or not 1-D.
        """
        labels = as_int_array(labels, "labels", ndim=1)
        if labels.size == 0:
            raise ValueError("labels: expected at least one label")
        if labels.min() < 0:
            raise ValueError(f"labels: expected values >= 0, found {labels.min()}")
        if K is None:
            K = int(labels.max()) + 1
        else:
            from ._validation import as_positive_int
            K = as_positive_int(K, "K")
            if labels.max() >= K:
                raise ValueError(f"labels: expected values < K={K}, found {labels.max()}")
        # Y, its read-only copy and the checks' temporaries: a few K×N arrays
        check_memory(4 * 8.0 * K * labels.size, "K", f"one-hot targets for K = {K} classes and N = {labels.size} contexts")
        Y = np.zeros((K, labels.size))
        Y[labels, np.arange(labels.size)] = 1.0
        return cls(Y, **kwargs)

    # -- data -------------------------------------------------------------------------------
    @property
    def Y(self) -> np.ndarray:
        """Targets, (K, N), read-only."""
        return self._Y

    @property
    def weights(self) -> np.ndarray:
        """Context weights π, (N,), read-only."""
        return self._weights

    @property
    def attributes(self) -> np.ndarray | None:
        """Latent attributes, (N, F) int, or None."""
        return self._attributes

    @property
    def labels(self) -> np.ndarray | None:
        """Class of each context, (N,) int, when Y is one-hot; otherwise None."""
        return self._labels

    @property
    def target_kind(self) -> str:
        """``"onehot"``, ``"soft"`` (columns on the simplex) or ``"real"``."""
        return self._target_kind

    @property
    def K(self) -> int:
        return self._Y.shape[0]

    @property
    def N(self) -> int:
        return self._Y.shape[1]

    @property
    def name(self) -> str:
        return self._name

    @property
    def similarities(self):
        """Read-only mapping name -> (N, N) similarity used by :meth:`coupling`."""
        return self._similarities

    @property
    def relations(self) -> tuple[np.ndarray, ...] | None:
        """Relation matrices of the association scheme (identity first), or None."""
        return self._relations

    @property
    def relation_names(self) -> tuple[str, ...] | None:
        return self._relation_names

    @property
    def incidence(self) -> np.ndarray:
        """Attribute incidence matrix A, shape (Σ_f q_f, N): ``A[(f, v), i] = 1`` iff
        context i has value v for attribute f (rows ordered by f, then v).

        Raises:
            ValueError: the problem has no attributes.
        """
        if self._attributes is None:
            raise ValueError("incidence: this problem has no attributes")
        return _incidence(self._attributes)

    def coupling(self, similarity: str = "attribute", beta: float = 1.0) -> np.ndarray:
        """The coupling ``Θ = I + β² · S_similarity`` (N×N, symmetric PSD) for ``UFM(coupling=)``.

        Θ is always "the coupling" in ufm's API; "kernel" is kept for the numba code and for a
        run's logged NTK (:attr:`ufm.bridge.Run.kernel`), which can be used as a coupling.

        Arguments:
            similarity: ``"identity"`` (Θ = I, the standard UFM) or a key of
                :attr:`similarities` (``"attribute"``: S = AᵀA, the number of attributes two
                contexts share).
            beta: coupling strength β >= 0.

        Returns:
            (N, N) float array Θ.

        Raises:
            ValueError: unknown similarity (the message lists the available ones) or negative β.
        """
        beta = as_nonnegative(beta, "beta")
        eye = np.eye(self.N)
        if similarity == "identity":
            return eye
        if not isinstance(similarity, str) or similarity not in self._similarities:
            avail = ", ".join(repr(k) for k in ("identity", *self._similarities))
            raise ValueError(f"similarity: unknown similarity {similarity!r}; this problem has {avail}")
        return eye + beta ** 2 * np.array(self._similarities[similarity])

    def kernel(self, kind: str = "attribute", strength: float = 1.0) -> np.ndarray:
        """Deprecated name of :meth:`coupling` (Θ is the coupling everywhere in the API)."""
        import warnings
        warnings.warn("Problem.kernel(kind, strength) is now Problem.coupling(similarity, beta)", DeprecationWarning,
                      stacklevel=2)
        return self.coupling(kind, strength)

    def to_dict(self) -> dict:
        """Arrays and names needed to rebuild the problem (used by Trajectory.save)."""
        out = {"Y": np.array(self._Y), "weights": np.array(self._weights), "name": self._name}
        if self._attributes is not None:
            out["attributes"] = np.array(self._attributes)
        auto = None
        if self._attributes is not None:
            A = _incidence(self._attributes)
            auto = A.T @ A
        for k, S in self._similarities.items():
            # "attribute" is rebuilt from the attributes; write it only when the user gave a
            # different one (or there are no attributes), so the round trip is lossless
            if k != "attribute" or auto is None or not np.array_equal(S, auto):
                out[f"similarity:{k}"] = np.array(S)
        if self._relations is not None:
            out["relations"] = np.array(self._relations)
            out["relation_names"] = list(self._relation_names)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Problem":
        """Rebuild a problem from :meth:`to_dict`'s output.

        Arguments:
            d: a mapping with ``Y`` and optionally ``weights``, ``attributes``, ``relations``,
                ``relation_names``, ``name`` and ``similarity:<name>`` entries.
        Raises:
            TypeError: ``d`` is not a mapping.
            ValueError: ``Y`` is missing, or an unknown key; the constructor's checks.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"d: expected a mapping from Problem.to_dict(), got {type(d).__name__}")
        if "Y" not in d:
            raise ValueError(f"d: missing 'Y' (the K×N targets); got keys {sorted(map(str, d))}")
        known = {"Y", "weights", "attributes", "relations", "relation_names", "name"}
        unknown = sorted(str(k) for k in d if k not in known and not str(k).startswith("similarity:"))
        if unknown:
            raise ValueError(f"d: unknown key(s) {unknown}; expected {sorted(known)} and 'similarity:<name>'")
        sims = {k.split(":", 1)[1]: v for k, v in d.items() if k.startswith("similarity:")}
        rel = d.get("relations")
        return cls(d["Y"], d.get("weights"), d.get("attributes"), similarities=sims or None,
                   relations=None if rel is None else list(rel),
                   relation_names=d.get("relation_names"), name=d.get("name", ""))

    def __reduce__(self):
        # the similarity mapping is a read-only proxy, which pickle cannot copy: rebuild instead
        return (Problem.from_dict, (self.to_dict(),))

    def __repr__(self) -> str:
        attrs = "" if self._attributes is None else f", F={self._attributes.shape[1]}"
        nm = f" {self._name!r}" if self._name else ""
        return f"Problem{nm}(K={self.K}, N={self.N}, targets={self._target_kind}{attrs})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Problem):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()
        if a.keys() != b.keys():
            return False
        return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)

    __hash__ = None


def _classify_targets(Y: np.ndarray):
    """(kind, labels): one-hot columns give integer labels; simplex columns are 'soft'."""
    is01 = np.all((np.abs(Y) < _ONE_HOT_TOL) | (np.abs(Y - 1) < _ONE_HOT_TOL))
    colsum = Y.sum(axis=0)
    if is01 and np.all(np.abs(colsum - 1) < _ONE_HOT_TOL):
        return "onehot", np.argmax(Y, axis=0).astype(np.int64)
    if np.all(Y >= -_SOFT_TOL) and np.all(np.abs(colsum - 1) < _SOFT_TOL):
        return "soft", None
    return "real", None


def _incidence(attributes: np.ndarray) -> np.ndarray:
    N, F = attributes.shape
    blocks = []
    for f in range(F):
        q = int(attributes[:, f].max()) + 1 if N else 0
        B = np.zeros((q, N))
        B[attributes[:, f], np.arange(N)] = 1.0
        blocks.append(B)
    return np.vstack(blocks) if blocks else np.zeros((0, N))
