"""Synthetic settings: contexts with latent attributes and (by default) one-hot labels.

Each function returns a :class:`~ufm.problems.Problem` carrying Y, the attributes, the
attribute kernel (``problem.coupling("attribute", β)`` = I + β²AᵀA) and, where the setting has
one, the relation matrices of its association scheme (``problem.relations``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ._validation import as_int_array, as_positive_int, check_memory
from .problems import Problem

__all__ = ["balanced", "factorial", "hierarchy", "sequences", "relations_from_keys"]


def relations_from_keys(keys, names_of=None):
    """Relation matrices from a key per ordered pair: pairs with equal keys share a relation.

    Arguments:
        keys: (N, N) array of hashable relation keys (the identity's key must be unique to the
            diagonal).
        names_of: optional function key -> name.

    Returns:
        (relations, names): the identity first, then the other relations in sorted key order.
    """
    N = len(keys)
    diag_keys = {keys[i][i] for i in range(N)}
    groups: dict = {}
    for i in range(N):
        for j in range(N):
            groups.setdefault(keys[i][j], []).append((i, j))
    order = _sorted(diag_keys) + _sorted(k for k in groups if k not in diag_keys)
    rels, names = [], []
    for key in order:
        R = np.zeros((N, N))
        for i, j in groups[key]:
            R[i, j] = 1.0
        rels.append(R)
        names.append(names_of(key) if names_of else str(key))
    return rels, names


def _sorted(keys):
    keys = list(keys)
    try:
        return sorted(keys)
    except TypeError:  # keys of mixed types: any fixed order will do
        return sorted(keys, key=repr)


def _sizes(values, name: str, what: str) -> tuple:
    """A non-empty sequence of integers >= 2 (attribute levels, classes per position)."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name}: expected a sequence of integers >= 2, got {values!r}")
    try:
        sizes = tuple(as_positive_int(q, name, minimum=2) for q in values)
    except TypeError as exc:
        raise TypeError(f"{name}: expected a sequence of integers >= 2, got {values!r}") from exc
    if not sizes:
        raise ValueError(f"{name}: expected at least one {what}")
    return sizes


#: the most contexts a synthetic setting builds. Its association scheme is found pair by pair
#: (Python code over N² pairs) and stored as N×N matrices: measured here, N = 1024 takes 2 s
#: and N = 4096 about 30 s and several GiB; a million contexts would never finish.
MAX_CONTEXTS = 4096
#: the most sequences :func:`sequences` enumerates to draw a subset of ``n_contexts`` from
_MAX_POOL = 2 ** 20


def _check_contexts(N: int, name: str, how: str) -> None:
    """Refuse a setting with more than :data:`MAX_CONTEXTS` contexts before building anything."""
    if N > MAX_CONTEXTS:
        gib = 8.0 * float(N) * float(N) / 2 ** 30 if N < 10 ** 150 else float("inf")
        count = f"{N:,}" if N < 10 ** 15 else f"about 10^{len(str(N)) - 1}"
        raise ValueError(f"{name}: {how} gives N = {count} contexts; a synthetic setting builds N×N relation and "
                         f"similarity matrices ({gib:,.3g} GiB each here) and supports at most {MAX_CONTEXTS} contexts")


def _sample_total(samples_per_context, n_contexts: int) -> int:
    """The number of samples ``samples_per_context`` asks for (validated later), for the size check."""
    if isinstance(samples_per_context, (int, np.integer)) and not isinstance(samples_per_context, bool):
        return int(samples_per_context) * n_contexts
    try:
        counts = np.asarray(samples_per_context)
    except (TypeError, ValueError):
        return n_contexts
    if counts.dtype.kind not in "iuf":
        return n_contexts
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.sum(counts, dtype=float))
    return int(total) if np.isfinite(total) else n_contexts     # non-finite: refused by the validation


def _name(name, default: str) -> str:
    """The problem's name: ``name`` when given (a string), else the setting's own description."""
    if name is None or (isinstance(name, str) and not name):
        return default
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string or None, got {type(name).__name__}")
    return name


def _samples(n_contexts: int, samples_per_context):
    return np.repeat(np.arange(n_contexts), samples_per_context)


def _sample_counts(samples_per_context, n_contexts: int):
    """An int >= 1 (balanced) or one count >= 1 per context (class imbalance)."""
    if isinstance(samples_per_context, (int, np.integer)) and not isinstance(samples_per_context, bool):
        return as_positive_int(samples_per_context, "samples_per_context")
    counts = as_int_array(samples_per_context, "samples_per_context", ndim=1)
    if counts.shape != (n_contexts,):
        raise ValueError(f"samples_per_context: expected an integer or {n_contexts} counts (one per context), "
                         f"got shape {counts.shape}")
    if counts.min() < 1:
        raise ValueError("samples_per_context: expected counts >= 1")
    return counts


def _labels_for(contexts: np.ndarray, n_contexts: int, label_permutation, seed):
    """Label of each sample: its context's index, optionally permuted."""
    if label_permutation is None:
        perm = np.arange(n_contexts)
    elif isinstance(label_permutation, str):
        if label_permutation != "random":
            raise ValueError(f"label_permutation: expected None, 'random' or a permutation array, "
                             f"got {label_permutation!r}")
        perm = np.random.default_rng(seed).permutation(n_contexts)
    else:
        perm = as_int_array(label_permutation, "label_permutation", ndim=1)
        if not np.array_equal(np.sort(perm), np.arange(n_contexts)):
            raise ValueError(f"label_permutation: expected a permutation of 0 … {n_contexts - 1}")
    return perm[contexts]


def balanced(K: int, n: int = 1, *, name: str | None = None) -> Problem:
    """The standard classification problem: K classes, n samples each, one-hot labels.

    Samples are ordered class by class (sample i has label i // n). The association scheme has
    three relations: identity, same class (n > 1 only), different class.

    Arguments:
        K: number of classes, >= 2. n: samples per class, >= 1.
    """
    K = as_positive_int(K, "K", minimum=2)
    n = as_positive_int(n, "n")
    _check_contexts(K * n, "K, n", f"K·n = {K}·{n}")
    labels = _samples(K, n)
    keys = [[((0, "identity") if i == j else (1, "same class") if labels[i] == labels[j] else (2, "different class"))
             for j in range(K * n)] for i in range(K * n)]
    rels, names = relations_from_keys(keys, lambda k: k[1])
    return Problem.classification(labels, K, relations=rels, relation_names=names,
                                  name=_name(name, f"balanced(K={K}, n={n})"))


def factorial(levels, *, samples_per_context: int = 1, label_permutation=None, seed=None,
              name: str | None = None) -> Problem:
    """Contexts = all combinations of F attributes with ``levels[f]`` values each.

    Context c (in ``itertools.product`` order, the first attribute varying slowest) has its
    own label c (or ``label_permutation[c]``); each context is repeated
    ``samples_per_context`` times (N = n·Π levels). Attributes: (N, F) with the context's
    attribute values. The scheme's relations are indexed by the set of attributes on which
    two samples agree (the identity and, with n > 1, "same context" are separate).

    Arguments:
        levels: sequence of F >= 1 integers >= 2 (e.g. (3, 3): colour × shape).
        samples_per_context: n >= 1, or one count per context (class imbalance; the problem
            then has no association scheme and ``relations`` is None).
        label_permutation: None, ``"random"`` (uses ``seed``) or a permutation of the contexts.
        seed: seed for the random permutation.

    Raises:
        ValueError: bad levels, sample counts or permutation (named).
    """
    levels = _sizes(levels, "levels", "attribute")
    C = math.prod(levels)
    _check_contexts(C, "levels", f"{levels}")
    _check_contexts(_sample_total(samples_per_context, C), "samples_per_context",
                    f"{samples_per_context!r} sample(s) per context of {C}" if np.ndim(samples_per_context) == 0
                    else "these counts")
    combos = np.array(list(itertools.product(*[range(q) for q in levels])), dtype=np.int64)
    C = combos.shape[0]
    n = _sample_counts(samples_per_context, C)
    contexts = _samples(C, n)
    attributes = combos[contexts]
    labels = _labels_for(contexts, C, label_permutation, seed)
    N = contexts.size
    F = len(levels)
    # the scheme has a relation per set of agreeing attributes: 2^F matrices of N×N, built with copies
    check_memory(3 * 8.0 * 2.0 ** F * float(N) ** 2, "levels",
                 f"the {2 ** F} relation matrices ({N}×{N}) of {F} attributes")

    def key(i, j):
        if i == j:
            return ("identity",)
        if contexts[i] == contexts[j]:
            return ("same context",)
        return tuple(f for f in range(F) if attributes[i, f] == attributes[j, f])

    keys = [[key(i, j) for j in range(N)] for i in range(N)]

    def nm(k):
        if k and isinstance(k[0], str):
            return k[0]
        return "agree on none" if not k else "agree on " + ",".join(str(f) for f in k)

    rels, names = relations_from_keys(keys, nm) if np.ndim(n) == 0 else (None, None)
    return Problem.classification(labels, C, attributes=attributes, relations=rels, relation_names=names,
                                  name=_name(name, f"factorial{levels}"))


def hierarchy(branching: int, depth: int, *, samples_per_context: int = 1, label_permutation=None,
              seed=None, name: str | None = None) -> Problem:
    """Contexts = the leaves of a tree with ``branching`` children per node and ``depth`` levels.

    Leaf c (c = 0 … branching^depth − 1) has its own label. Its attributes are the internal
    nodes on its root-to-leaf path below the root: column l − 1 is the index of its ancestor
    at level l = 1 … depth − 1 (the root is shared by every leaf and the leaf is the context
    itself, so neither is an attribute). Relations: identity, ("same context" for n > 1,) and
    "LCA at level l" for l = depth − 1 … 0, deepest common ancestor first (Saxe et al.'s
    hierarchical data).

    Arguments:
        branching: children per node, >= 2. depth: levels below the root, >= 2.
        samples_per_context, label_permutation, seed: as in :func:`factorial`.
    """
    branching = as_positive_int(branching, "branching", minimum=2)
    depth = as_positive_int(depth, "depth", minimum=2)
    if depth * math.log2(branching) > 64:          # refuse without forming an astronomically large power
        raise ValueError(f"branching, depth: {branching}^{depth} contexts; a synthetic setting supports at most "
                         f"{MAX_CONTEXTS}")
    C = branching ** depth
    _check_contexts(C, "branching, depth", f"branching^depth = {branching}^{depth}")
    _check_contexts(_sample_total(samples_per_context, C), "samples_per_context",
                    f"{samples_per_context!r} sample(s) per context of {C}" if np.ndim(samples_per_context) == 0
                    else "these counts")
    n = _sample_counts(samples_per_context, C)
    leaves = np.arange(C)
    anc = np.stack([leaves // branching ** (depth - level) for level in range(1, depth)], axis=1)
    contexts = _samples(C, n)
    attributes = anc[contexts]
    labels = _labels_for(contexts, C, label_permutation, seed)
    N = contexts.size

    def lca(i, j):
        a, b = contexts[i], contexts[j]
        level = depth
        while a != b:
            a //= branching
            b //= branching
            level -= 1
        return level

    def key(i, j):
        if i == j:
            return (0, "identity")
        if contexts[i] == contexts[j]:
            return (1, "same context")
        return (2 + depth - lca(i, j), f"LCA at level {lca(i, j)}")

    keys = [[key(i, j) for j in range(N)] for i in range(N)]
    rels, names = relations_from_keys(keys, lambda k: k[1]) if np.ndim(n) == 0 else (None, None)
    return Problem.classification(labels, C, attributes=attributes, relations=rels, relation_names=names,
                                  name=_name(name, f"hierarchy(branching={branching}, depth={depth})"))


def sequences(classes=(2, 2), tokens_per_class: int = 2, *, labels: str = "unique", support: int = 2,
              n_contexts: int | None = None, seed=None, name: str | None = None) -> Problem:
    """Short token sequences whose positions draw tokens from latent classes (NTP setting).

    Position p has ``classes[p]`` latent classes of ``tokens_per_class`` tokens each (think
    subject / verb / object: "Mary broke the ___"). A context is one token per position; all
    Π_p classes[p]·tokens_per_class combinations are used, or a random subset of
    ``n_contexts`` of them (``seed``). Attributes: (N, P), the latent class at each position.

    Labels:
        ``"unique"``: every context has its own next token (one-hot, K = N) — the
            almost-unique contexts of next-token prediction.
        ``"soft"``: the next-token distribution depends on the latent classes only: each
            combination of classes owns ``support`` tokens of the vocabulary and a context's
            label is uniform over them (sparse soft labels, the NTP-UFM of Zhao et al.);
            contexts with the same classes share their support.

    Similarities for :meth:`Problem.coupling`: ``"attribute"`` (number of positions whose
    latent class agrees) and ``"shared_token"`` (number of positions whose token agrees).

    Arguments:
        classes: latent classes per position, a sequence of P >= 1 integers >= 2.
        tokens_per_class: tokens in each latent class, >= 1.
        labels: ``"unique"`` or ``"soft"``. support: tokens per class combination (soft), >= 1.
        n_contexts: use a random subset of this many contexts (>= 2); default all.
        seed: seed of the subset.
    Raises:
        ValueError / TypeError: naming the bad argument.
    """
    classes = _sizes(classes, "classes", "position")
    m = as_positive_int(tokens_per_class, "tokens_per_class")
    if not isinstance(labels, str) or labels not in ("unique", "soft"):
        raise ValueError(f"labels: expected 'unique' or 'soft', got {labels!r}")
    support = as_positive_int(support, "support")
    pool = math.prod(c * m for c in classes)
    if n_contexts is None:
        _check_contexts(pool, "classes, tokens_per_class", f"all {pool:,} sequences of classes = {classes}, "
                        f"tokens_per_class = {m}")
    elif pool > _MAX_POOL:
        raise ValueError(f"classes, tokens_per_class: {pool:,} possible sequences to draw n_contexts from; at most "
                         f"{_MAX_POOL:,} are enumerated")
    # token t at position p: class t // m, so tokens of a class are contiguous
    tokens = np.array(list(itertools.product(*[range(c * m) for c in classes])), dtype=np.int64)
    if n_contexts is not None:
        n_contexts = as_positive_int(n_contexts, "n_contexts", minimum=2)
        _check_contexts(n_contexts, "n_contexts", f"n_contexts = {n_contexts}")
        if n_contexts > tokens.shape[0]:
            raise ValueError(f"n_contexts: at most {tokens.shape[0]} distinct contexts exist, got {n_contexts}")
        pick = np.sort(np.random.default_rng(seed).choice(tokens.shape[0], n_contexts, replace=False))
        tokens = tokens[pick]
    attributes = tokens // m
    N = tokens.shape[0]
    shared = (tokens[:, None, :] == tokens[None, :, :]).sum(axis=2).astype(float)
    if labels == "unique":
        Y = np.eye(N)
    else:
        combos = {c: i for i, c in enumerate(sorted({tuple(a) for a in attributes}))}
        Y = np.zeros((len(combos) * support, N))
        for i, a in enumerate(attributes):
            g = combos[tuple(a)]
            Y[g * support:(g + 1) * support, i] = 1.0 / support
    nm = _name(name, f"sequences(classes={classes}, tokens_per_class={m}, labels={labels!r})")
    return Problem(Y, attributes=attributes, similarities={"shared_token": shared}, name=nm)
