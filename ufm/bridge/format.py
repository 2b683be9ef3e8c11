"""The "ufm-run" exchange format, version 1 (docs/exchange-format.md): keys, shapes and validation.

Rows are samples, as in training code:

============  =====================  ==========================================================
key           dtype, shape           meaning
============  =====================  ==========================================================
steps         int (T,)               optimiser step of each checkpoint, strictly increasing
H             float (T, N, d)        features of the N training contexts (one row per context)
W             float (T, K, d)        classifier / unembedding rows
gram_H        float (T, N, N)        instead of H and W (a Gram-only run): the feature Gram
                                     H Hᵀ over the N contexts (a probe set) at each checkpoint
gram_W        float (T, K, K)        Gram-only runs, optional: the classifier Gram W Wᵀ
logits        float (T, K, N)        Gram-only runs, optional: W Hᵀ (+ b 1ᵀ), one column per
                                     context
b             float (T, K)           optional bias
labels        int (N,)               class of each context in 0 … K−1, or
Y             float (N, K)           soft labels (rows on the probability simplex)
attributes    int (N, F)             optional latent attributes (values >= 0)
loss          float (T,)             optional training loss
kernel        float (N, N)/(P, N, N) optional feature kernel (traced empirical NTK)
kernel_steps  int (P,)               optional: the step of each logged kernel (an extension of
                                     v1; default: the first step for one kernel, ``steps``
                                     when P = T)
lr,           float scalars          optional; also accepted in the metadata
weight_decay
============  =====================  ==========================================================

Metadata (optimizer, model, task, lr, weight_decay, seed, ..., ``format = "ufm-run"``,
``version = 1``) is a JSON object. The core of ``ufm`` stores features as d×N (one *column*
per context); the bridge converts at the boundary (:meth:`Run.trajectory` works with Grams,
which do not care).

:func:`validate` is the single place that checks all of this; every loader and the exporter
go through it, so the errors are the same whichever file format carried the run.
"""

from __future__ import annotations

import json
import numbers
import re

import numpy as np

from .errors import FormatError

__all__ = ["FORMAT", "VERSION", "REQUIRED", "OPTIONAL", "ARRAY_KEYS", "GRAM_KEYS", "validate", "to_numpy", "parse_meta",
           "EXPORT_RECIPE"]

FORMAT = "ufm-run"
VERSION = 1
REQUIRED = ("steps", "H", "W")
#: the keys of a Gram-only run, which replace H and W (gram_H required, the others optional)
GRAM_KEYS = ("gram_H", "gram_W", "logits")
OPTIONAL = ("b", "labels", "Y", "attributes", "loss", "kernel", "kernel_steps", "lr", "weight_decay") + GRAM_KEYS
ARRAY_KEYS = REQUIRED + OPTIONAL
#: relative tolerances of a logged Gram: asymmetry, and negative eigenvalues (float32/16 rounding)
_GRAM_SYM_RTOL = 1e-3
_GRAM_PSD_RTOL = 1e-3

#: tolerance on the row sums of soft labels, by the precision they were stored in
_SOFT_TOL = {2: 1e-2, 4: 1e-4, 8: 1e-8}
_KERNEL_SYM_RTOL = 1e-3
_KERNEL_PSD_RTOL = 1e-4

EXPORT_RECIPE = (
    "    import ufm.bridge, torch; ck = torch.load(PATH)   # your tensors, e.g. stacked over checkpoints\n"
    "    ufm.bridge.export(\"run.npz\", steps=ck[\"steps\"], H=ck[\"H\"].float().numpy(), W=ck[\"W\"].float().numpy(), "
    "labels=ck[\"labels\"].numpy())"
)


def to_numpy(value, name: str, source: str = "<arrays>") -> np.ndarray:
    """Any array-like (numpy, lists, torch tensors, jax arrays, memmaps) as a numpy array.

    Torch tensors are detached and moved to the CPU by duck typing (``detach``, ``cpu``,
    ``numpy``) — torch itself is never imported; bfloat16 tensors are cast with ``.float()``
    first because numpy has no bfloat16.

    Raises:
        FormatError: the value cannot be turned into a numeric array.
    """
    if isinstance(value, np.ndarray):
        return value
    x = value
    try:
        if hasattr(x, "detach") and callable(x.detach):
            x = x.detach()
        if hasattr(x, "cpu") and callable(x.cpu):
            x = x.cpu()
        if "bfloat16" in str(getattr(x, "dtype", "")) and hasattr(x, "float"):
            x = x.float()
        if hasattr(x, "numpy") and callable(x.numpy) and not isinstance(x, np.generic):
            x = x.numpy()
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything an exotic array type raises
        raise FormatError(f"{name}: cannot convert {type(value).__name__} to a numpy array ({exc})",
                          source=source, key=name) from None


def parse_meta(text, where: str, source: str) -> dict:
    """A metadata JSON object from text (or bytes).

    Raises:
        FormatError: invalid JSON (with line and column) or not a JSON object.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{where}: metadata is not UTF-8 text", source=source, key="meta") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where}: bad JSON in the metadata at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                          source=source, key="meta") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{where}: metadata must be a JSON object, got {type(meta).__name__}",
                          source=source, key="meta")
    return meta


def _err(msg, source, key=None, checkpoint=None):
    return FormatError(f"{source}: {msg}" if source else msg, source=source, key=key, checkpoint=checkpoint)


def _numeric(arr: np.ndarray, key: str, source: str, *, integer=False) -> np.ndarray:
    dt = arr.dtype
    if dt == object or dt.kind in "USVMmO" or dt == bool or dt.kind == "c":
        want = "integers" if integer else "real numbers"
        raise _err(f"{key}: expected an array of {want}, found dtype {dt}", source, key)
    if integer:
        if dt.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise _err(f"{key}: expected integer values, found non-integral entries (dtype {dt})", source, key)
            if arr.size and np.max(np.abs(arr)) >= 2.0 ** 63:
                raise _err(f"{key}: expected integers below 2^63, found {np.max(np.abs(arr)):.3g}", source, key)
        return np.asarray(arr, dtype=np.int64)
    return arr


def _shape(arr, key, want, source, why=""):
    """``want``: tuple of ints or None; raise naming the expected and found shapes."""
    if arr.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, arr.shape)):
        txt = "(" + ", ".join("*" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
        raise _err(f"{key}: expected shape {txt}{why}, found {arr.shape}", source, key)


def _scalar(value, key, source, *, positive=False):
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        raise _err(f"{key}: expected a real scalar, found {value!r}", source, key)
    x = float(arr.reshape(()))
    if not np.isfinite(x) or x < 0 or (positive and x == 0):
        raise _err(f"{key}: expected a finite number {'> 0' if positive else '>= 0'}, found {x!r}", source, key)
    return x


def _first_nonfinite(arr: np.ndarray) -> int | None:
    """Index along axis 0 of the first checkpoint with a non-finite entry (chunked, memmap friendly)."""
    for j in range(arr.shape[0]):
        if not np.all(np.isfinite(arr[j])):
            return j
    return None


def validate(fields: dict, meta: dict | None = None, *, source: str = "<arrays>", dtypes: dict | None = None) -> tuple[dict, dict]:
    """Check the arrays and metadata of a run against the "ufm-run" v1 format.

    Arguments:
        fields: key -> array-like for the keys in the module table (unknown keys raise).
        meta: the metadata object (may be None); ``lr`` and ``weight_decay`` are read from it
            when they are not arrays.
        source: the file being read, named in every error.
        dtypes: optional key -> stored dtype name (e.g. ``"BF16"``), which loosens the soft-label
            tolerance for low-precision storage.

    Returns:
        (arrays, meta): validated numpy arrays (steps, labels, attributes, kernel_steps int64;
        H, W, b — or, for a Gram-only run, gram_H, gram_W, logits — keep their float dtype;
        kernel float64, symmetrised) and the metadata with ``format`` and ``version`` filled in.

    Raises:
        FormatError: a missing key, an unknown key, features and Grams together, a wrong
            dtype, inconsistent N/K/d/T, a logged Gram that is not symmetric PSD,
            non-increasing steps, a non-finite value (naming the checkpoint and the step),
            labels out of range, soft labels whose rows do not sum to 1, a kernel that is not
            symmetric PSD, or metadata of another format or a newer version.
    """
    if meta is not None and not isinstance(meta, dict):
        raise _err(f"meta: expected a dict of metadata, got {type(meta).__name__}", source, "meta")
    meta = dict(meta or {})
    dtypes = dtypes or {}
    unknown = sorted(set(fields) - set(ARRAY_KEYS))
    if unknown:
        raise _err(f"unknown key(s) {unknown}; the ufm-run format has {list(ARRAY_KEYS)}", source, unknown[0])
    fmt = meta.get("format", FORMAT)
    if fmt != FORMAT:
        raise _err(f"format: metadata says format {fmt!r}, expected {FORMAT!r}", source, "format")
    ver = meta.get("version", VERSION)
    if not isinstance(ver, numbers.Integral) or isinstance(ver, bool) or not 1 <= ver <= VERSION:
        raise _err(f"version: this ufm reads {FORMAT!r} version {VERSION}, the metadata says version {ver!r}"
                   + (" (written by a newer ufm: upgrade)" if isinstance(ver, numbers.Integral) and ver > VERSION else ""),
                   source, "version")
    meta["format"], meta["version"] = FORMAT, VERSION
    gram_only = fields.get("H") is None and fields.get("W") is None and fields.get("gram_H") is not None
    if not gram_only:
        given = [k for k in GRAM_KEYS if fields.get(k) is not None]
        if given and fields.get("H") is not None:
            raise _err(f"{given[0]}: a run holds either features (H, W) or Grams (gram_H, optional gram_W, logits), "
                       "not both", source, given[0])
        for key in REQUIRED:
            if fields.get(key) is None:
                raise _err(f"{key}: missing (a ufm-run needs steps, H, W — or gram_H instead of H and W — and labels "
                           "or Y)", source, key)
    elif fields.get("steps") is None:
        raise _err("steps: missing (a ufm-run needs steps)", source, "steps")
    if fields.get("labels") is None and fields.get("Y") is None:
        raise _err("labels: missing (a ufm-run needs labels (N,) or soft labels Y (N, K))", source, "labels")
    arr = {k: to_numpy(v, k, source) for k, v in fields.items() if v is not None}

    steps = _numeric(arr["steps"], "steps", source, integer=True)
    if steps.ndim != 1 or steps.size == 0:
        raise _err(f"steps: expected a non-empty 1-D array (T,), found shape {steps.shape}", source, "steps")
    bad = np.flatnonzero(np.diff(steps) <= 0)
    if bad.size:
        j = int(bad[0])
        raise _err(f"steps: expected strictly increasing steps, but steps[{j + 1}] = {steps[j + 1]} <= "
                   f"steps[{j}] = {steps[j]}", source, "steps", j + 1)
    T = steps.size
    if gram_only:
        out = _validate_grams(arr, steps, source)
        N, K = out["gram_H"].shape[1], out["_K"]
        del out["_K"]
        return _validate_rest(arr, out, meta, steps, N, K, source, dtypes)
    H = _numeric(arr["H"], "H", source)
    W = _numeric(arr["W"], "W", source)
    if H.ndim != 3:
        raise _err(f"H: expected shape (T, N, d) (one row per context at each checkpoint), found {H.shape}", source, "H")
    _shape(H, "H", (T, None, None), source, f" with T = {T} checkpoints as in steps")
    N, d = H.shape[1:]
    if W.ndim != 3:
        raise _err(f"W: expected shape (T, K, d) (one row per class at each checkpoint), found {W.shape}", source, "W")
    _shape(W, "W", (T, None, d), source, f" (T = {T} as in steps, d = {d} as in H)")
    K = W.shape[1]
    if N < 1 or K < 1 or d < 1:
        raise _err(f"H, W: expected N, K, d >= 1, found N = {N}, K = {K}, d = {d}", source, "H")
    out = {"steps": steps, "H": H, "W": W}
    if "b" in arr:
        b = _numeric(arr["b"], "b", source)
        _shape(b, "b", (T, K), source, " (T checkpoints, K classes as in W)")
        out["b"] = b
    for key in ("H", "W", "b"):
        if key in out:
            j = _first_nonfinite(out[key])
            if j is not None:
                where = np.argwhere(~np.isfinite(np.asarray(out[key][j])))[0]
                raise _err(f"{key}: non-finite value {np.asarray(out[key][j])[tuple(where)]} at checkpoint {j} "
                           f"(step {steps[j]}), entry {tuple(int(i) for i in where)}", source, key, j)
    return _validate_rest(arr, out, meta, steps, N, K, source, dtypes)


def _validate_rest(arr, out, meta, steps, N, K, source, dtypes):
    """Labels, soft labels, attributes, loss, kernel and scalars, once N and K are known."""
    T = steps.size
    if "labels" in arr:
        lab = _numeric(arr["labels"], "labels", source, integer=True)
        _shape(lab, "labels", (N,), source, " (one class per context, N as in H)")
        if lab.size and (lab.min() < 0 or lab.max() >= K):
            i = int(np.flatnonzero((lab < 0) | (lab >= K))[0])
            raise _err(f"labels: expected classes in 0 … {K - 1} (K = {K} classes), found labels[{i}] = {lab[i]}",
                       source, "labels")
        out["labels"] = lab
    if "Y" in arr:
        Y = _numeric(arr["Y"], "Y", source)
        _shape(Y, "Y", (N, K), source, " (one row of soft labels per context; N as in H, K as in W)")
        Y = np.asarray(Y, dtype=np.float64)
        if not np.all(np.isfinite(Y)):
            i = int(np.argwhere(~np.isfinite(Y))[0][0])
            raise _err(f"Y: non-finite soft label in row {i}", source, "Y")
        if np.any(Y < 0):
            i = int(np.argwhere(Y < 0)[0][0])
            raise _err(f"Y: soft labels must be >= 0, row {i} has {Y[i].min():.6g}", source, "Y")
        itemsize = 2 if dtypes.get("Y") in ("BF16", "F16") else arr["Y"].dtype.itemsize
        tol = _SOFT_TOL.get(itemsize, 1e-4)
        sums = Y.sum(axis=1)
        badrow = np.flatnonzero(np.abs(sums - 1) > tol)
        if badrow.size:
            i = int(badrow[0])
            raise _err(f"Y: soft-label rows must sum to 1 (tolerance {tol:g}), row {i} sums to {sums[i]:.6g}",
                       source, "Y")
        if "labels" in out:
            onehot = np.zeros((N, K))
            onehot[np.arange(N), out["labels"]] = 1.0
            if not np.allclose(Y, onehot, atol=tol):
                raise _err("Y: both labels and Y are given but Y is not the one-hot matrix of labels", source, "Y")
        out["Y"] = Y
    if "attributes" in arr:
        A = _numeric(arr["attributes"], "attributes", source, integer=True)
        if A.ndim == 1:
            A = A[:, None]
        _shape(A, "attributes", (N, None), source, " (one row of attributes per context)")
        if A.size and A.min() < 0:
            raise _err(f"attributes: expected values >= 0, found {A.min()}", source, "attributes")
        out["attributes"] = A
    if "loss" in arr:
        loss = np.asarray(_numeric(arr["loss"], "loss", source), dtype=np.float64)
        _shape(loss, "loss", (T,), source, " (one value per checkpoint)")
        if not np.all(np.isfinite(loss)):
            j = int(np.flatnonzero(~np.isfinite(loss))[0])
            raise _err(f"loss: non-finite value at checkpoint {j} (step {steps[j]})", source, "loss", j)
        out["loss"] = loss
    if "kernel" in arr:
        out.update(_validate_kernel(arr, steps, N, source))
    elif "kernel_steps" in arr:
        raise _err("kernel_steps: given without a kernel", source, "kernel_steps")
    for key in ("lr", "weight_decay"):
        val = arr.get(key)
        if val is None:
            val = meta.get(key)
        x = _scalar(val, key, source, positive=(key == "lr"))
        if x is not None:
            out[key] = x
            meta[key] = x
    return out, meta


def _class_count(arr, source) -> int | None:
    """K of a Gram-only run without gram_W or logits: from Y, else from the labels."""
    if "Y" in arr:
        return int(np.shape(arr["Y"])[1]) if np.ndim(arr["Y"]) == 2 else None
    if "labels" in arr:
        lab = np.asarray(arr["labels"])
        return int(lab.max()) + 1 if lab.size and lab.dtype.kind in "iuf" else None
    return None


def _check_gram_stack(G, key, source, steps):
    """Symmetric PSD (to float32 rounding) and finite at every checkpoint, naming the first bad one."""
    j = _first_nonfinite(G)
    if j is not None:
        raise _err(f"{key}: non-finite value at checkpoint {j} (step {steps[j]})", source, key, j)
    for j in range(G.shape[0]):
        Gj = np.asarray(G[j], dtype=np.float64)
        scale = float(np.max(np.abs(np.diagonal(Gj)))) or float(np.max(np.abs(Gj))) or 1.0
        asym = float(np.max(np.abs(Gj - Gj.T)))
        if asym > _GRAM_SYM_RTOL * scale:
            raise _err(f"{key}: not symmetric at checkpoint {j} (step {steps[j]}): max |G − Gᵀ| = {asym:.3g} "
                       f"(relative {asym / scale:.2g})", source, key, j)
        lo = float(np.linalg.eigvalsh(0.5 * (Gj + Gj.T))[0])
        if lo < -_GRAM_PSD_RTOL * scale:
            raise _err(f"{key}: not positive semi-definite at checkpoint {j} (step {steps[j]}): smallest eigenvalue "
                       f"{lo:.3g} (largest diagonal entry {scale:.3g}); a Gram is H Hᵀ", source, key, j)


def _validate_grams(arr, steps, source) -> dict:
    """gram_H (T, N, N), optional gram_W (T, K, K) and logits (T, K, N) of a Gram-only run."""
    T = steps.size
    if "b" in arr:
        raise _err("b: a Gram-only run carries the bias inside its logits (W Hᵀ + b 1ᵀ); drop b", source, "b")
    GH = _numeric(arr["gram_H"], "gram_H", source)
    if GH.ndim != 3 or GH.shape[1] != GH.shape[2]:
        raise _err(f"gram_H: expected shape (T, N, N) (the feature Gram H Hᵀ at each checkpoint), found {GH.shape}",
                   source, "gram_H")
    _shape(GH, "gram_H", (T, None, None), source, f" with T = {T} checkpoints as in steps")
    N = GH.shape[1]
    if N < 1:
        raise _err("gram_H: expected N >= 1 contexts, found 0", source, "gram_H")
    out = {"steps": steps, "gram_H": GH}
    K = None
    if "gram_W" in arr:
        GW = _numeric(arr["gram_W"], "gram_W", source)
        if GW.ndim != 3 or GW.shape[1] != GW.shape[2]:
            raise _err(f"gram_W: expected shape (T, K, K) (the classifier Gram W Wᵀ), found {GW.shape}", source,
                       "gram_W")
        _shape(GW, "gram_W", (T, None, None), source, f" with T = {T} checkpoints as in steps")
        K = GW.shape[1]
        out["gram_W"] = GW
    if "logits" in arr:
        Z = _numeric(arr["logits"], "logits", source)
        _shape(Z, "logits", (T, K, N), source, f" (T checkpoints, K classes{' as in gram_W' if K else ''}, N = {N} "
               "contexts as in gram_H: one column per context)")
        K = Z.shape[1]
        j = _first_nonfinite(Z)
        if j is not None:
            raise _err(f"logits: non-finite value at checkpoint {j} (step {steps[j]})", source, "logits", j)
        out["logits"] = Z
    if K is None:
        K = _class_count(arr, source)
        if K is None:
            raise _err("labels: missing (a ufm-run needs labels (N,) or soft labels Y (N, K))", source, "labels")
    for key in ("gram_H", "gram_W"):
        if key in out:
            _check_gram_stack(out[key], key, source, steps)
    out["_K"] = K
    return out


def _validate_kernel(arr, steps, N, source) -> dict:
    K = np.asarray(_numeric(arr["kernel"], "kernel", source), dtype=np.float64)
    if K.ndim == 2:
        K = K[None]
    if K.ndim != 3 or K.shape[1:] != (N, N):
        raise _err(f"kernel: expected shape (N, N) or (P, N, N) with N = {N} contexts, found {arr['kernel'].shape}",
                   source, "kernel")
    P = K.shape[0]
    if "kernel_steps" in arr:
        ks = _numeric(arr["kernel_steps"], "kernel_steps", source, integer=True).reshape(-1)
        if ks.shape != (P,):
            raise _err(f"kernel_steps: expected shape ({P},) (one step per kernel), found {arr['kernel_steps'].shape}",
                       source, "kernel_steps")
        bad = np.flatnonzero(np.diff(ks) <= 0)
        if bad.size:
            raise _err(f"kernel_steps: expected strictly increasing steps, found {ks[bad[0]]} then {ks[bad[0] + 1]}",
                       source, "kernel_steps")
    elif P == 1:
        ks = steps[:1].copy()
    elif P == steps.size:
        ks = steps.copy()
    else:
        raise _err(f"kernel_steps: {P} kernels but {steps.size} checkpoints; say at which steps the kernels were "
                   "measured with kernel_steps (P,)", source, "kernel_steps")
    for p in range(P):
        Kp = K[p]
        if not np.all(np.isfinite(Kp)):
            raise _err(f"kernel: non-finite value in kernel {p} (step {ks[p]})", source, "kernel", p)
        scale = float(np.max(np.abs(Kp))) or 1.0
        asym = float(np.max(np.abs(Kp - Kp.T)))
        if asym > _KERNEL_SYM_RTOL * scale:
            raise _err(f"kernel: kernel {p} (step {ks[p]}) is not symmetric: max |Θ − Θᵀ| = {asym:.3g} "
                       f"(relative {asym / scale:.2g})", source, "kernel", p)
        Ks = 0.5 * (Kp + Kp.T)
        lo = float(np.linalg.eigvalsh(Ks)[0])
        if lo < -_KERNEL_PSD_RTOL * scale * N:
            raise _err(f"kernel: kernel {p} (step {ks[p]}) is not positive semi-definite: smallest eigenvalue "
                       f"{lo:.3g}", source, "kernel", p)
        K[p] = Ks
    return {"kernel": K, "kernel_steps": ks}


#: the file name of one checkpoint in a per-checkpoint run directory: ``ckpt_<step>.npz`` or
#: ``ckpt_<step>.safetensors`` (read by the loaders, listed by the checkpoint writer)
CHECKPOINT_FILE = re.compile(r"^ckpt_(-?\d+)\.(npz|safetensors)$")
