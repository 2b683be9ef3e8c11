"""``ufm.bridge.export`` and :class:`CheckpointWriter`: write the "ufm-run" format from any
array-likes (numpy arrays, lists, torch tensors — ``.detach().cpu().numpy()`` is done by duck
typing, torch is never imported — jax arrays).

Rows are samples: ``H`` is (T, N, d) with one row per context, ``W`` is (T, K, d). If your
training code keeps features as d×N columns (as the core of ``ufm`` does), pass ``H.T`` per
checkpoint (``H.transpose(0, 2, 1)`` for a stack).

Every write is validated first (the same checks as :func:`ufm.bridge.load`), so a file that was
written can always be read back, and goes to a temporary file renamed into place, so a crash
mid-write never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._io import atomic_write, json_default
from .errors import FormatError
from .format import CHECKPOINT_FILE, FORMAT, GRAM_KEYS, VERSION, to_numpy, validate
from .loaders import load
from .safetensors import write_safetensors

__all__ = ["export", "CheckpointWriter"]

_FORMATS = ("npz", "safetensors", "hdf5", "checkpoints")
_DTYPES = (None, "float64", "float32", "float16", "bfloat16")


def _choice(value, options) -> bool:
    """``value in options`` for options of strings and None, safe for arrays and unhashables."""
    return (value is None or isinstance(value, str)) and value in options


def _infer_format(path: str, fmt):
    if fmt is not None:
        if not _choice(fmt, _FORMATS):
            raise ValueError(f"format: expected one of {_FORMATS}, got {fmt!r}")
        return fmt
    low = path.lower()
    if low.endswith(".npz"):
        return "npz"
    if low.endswith(".safetensors"):
        return "safetensors"
    if low.endswith((".h5", ".hdf5")):
        return "hdf5"
    if os.path.isdir(path) or path.endswith(os.sep) or not os.path.splitext(path)[1]:
        return "checkpoints"
    raise ValueError(f"path: cannot infer the format of {path!r} from its suffix; use .npz, .safetensors, .h5, "
                     "a directory, or pass format=")


def _check_dtype(dtype, fmt):
    if not _choice(dtype, _DTYPES):
        raise ValueError(f"dtype: expected one of {_DTYPES}, got {dtype!r}")
    if dtype == "bfloat16" and fmt not in ("safetensors",) and fmt != "checkpoints-safetensors":
        raise ValueError("dtype: 'bfloat16' can only be stored in safetensors files (format='safetensors', or "
                         "checkpoint_format='safetensors'); numpy has no bfloat16")


def _cast(arr, dtype):
    """Float array in the storage dtype (bfloat16 is cast at write time by the safetensors writer)."""
    if dtype is None:
        return np.asarray(arr)
    if dtype == "bfloat16":
        return np.asarray(arr, dtype=np.float32)
    return np.asarray(arr, dtype=dtype)


def _cast_gram(arr, dtype):
    """Grams and logits in the storage dtype, but never below float32: a float16 Gram's rounding
    (1e-3 relative) can break positive semi-definiteness, and Grams are N×N, not N×d."""
    if dtype in ("float16", "bfloat16"):
        return np.asarray(arr, dtype=np.float32)
    return _cast(arr, dtype)


def _save_npz(path, arrays, meta=None, compress=True):
    arrays = dict(arrays)
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta, default=json_default))

    def write(tmp):
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **arrays)
    return atomic_write(path, write)


def _clean_meta(meta, arrays):
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"meta: expected a dict of metadata, got {type(meta).__name__}")
    out = dict(meta or {})
    try:
        json.dumps(out, default=json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta: expected a JSON-serialisable mapping ({exc})") from None
    for k in ("lr", "weight_decay"):
        if k in arrays:
            out[k] = float(arrays[k])
    out["format"], out["version"] = FORMAT, VERSION
    return out


def export(path, *, steps, H=None, W=None, labels=None, Y=None, b=None, attributes=None, loss=None, kernel=None,
           kernel_steps=None, lr=None, weight_decay=None, gram_H=None, gram_W=None, logits=None, meta=None,
           format=None, dtype=None, checkpoint_format: str = "npz", append: bool = False,
           compress: bool = True) -> str:
    """Write a run in the "ufm-run" format (validated first).

    Arguments:
        path: the file or directory to write; the format follows the suffix (``.npz``,
            ``.safetensors``, ``.h5``/``.hdf5``; a directory or a path without suffix gives the
            per-checkpoint layout) unless ``format`` says otherwise.
        steps: int (T,) strictly increasing optimiser steps.
        H: float (T, N, d) features, one row per context. W: float (T, K, d) classifier rows.
        gram_H: instead of H and W (a Gram-only run, for models too large to export features):
            float (T, N, N) feature Grams H Hᵀ; gram_W: optional float (T, K, K) classifier
            Grams; logits: optional float (T, K, N) = W Hᵀ (+ b 1ᵀ). Stored at float32 or
            above whatever ``dtype`` says (float16 rounding can break a Gram's PSD check).
        labels: int (N,) classes, or Y: float (N, K) soft labels (rows sum to 1).
        b: optional float (T, K). attributes: optional int (N, F). loss: optional float (T,).
        kernel: optional float (N, N) or (P, N, N) feature kernel (traced empirical NTK), with
            kernel_steps: optional int (P,) steps at which it was measured.
        lr, weight_decay: optional scalars (stored in the metadata).
        meta: optional JSON-serialisable metadata (optimizer, model, task, seed, ...).
        format: ``"npz"``, ``"safetensors"``, ``"hdf5"`` or ``"checkpoints"`` (default: from path).
        dtype: storage dtype of H, W, b: None (as given), ``"float64"``, ``"float32"``,
            ``"float16"``, or ``"bfloat16"`` (safetensors only).
        checkpoint_format: file type of the checkpoints of a directory, ``"npz"`` or
            ``"safetensors"``.
        append: directories only: add these checkpoints to an existing checkpoint directory
            (its labels, attributes and metadata must match) instead of refusing to overwrite.
        compress: npz only: zip-compress the arrays.

    Returns:
        The path written.

    Raises:
        FormatError: the arrays break the format (the same checks as loading: shapes, steps,
            finiteness, labels, soft labels, kernel).
        ValueError: bad ``format`` or ``dtype``; a checkpoint directory that already holds
            checkpoints without ``append=True``.
        ImportError: HDF5 without h5py.
    """
    path = os.fspath(path)
    fmt = _infer_format(path, format)
    if not _choice(checkpoint_format, ("npz", "safetensors")):
        raise ValueError(f"checkpoint_format: expected 'npz' or 'safetensors', got {checkpoint_format!r}")
    for name, flag in (("append", append), ("compress", compress)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name}: expected True or False, got {flag!r}")
    _check_dtype(dtype, "checkpoints-safetensors" if fmt == "checkpoints" and checkpoint_format == "safetensors" else fmt)
    fields = dict(steps=steps, H=H, W=W, labels=labels, Y=Y, b=b, attributes=attributes, loss=loss, kernel=kernel,
                  kernel_steps=kernel_steps, lr=lr, weight_decay=weight_decay, gram_H=gram_H, gram_W=gram_W,
                  logits=logits)
    fields = {k: to_numpy(v, k) for k, v in fields.items() if v is not None}
    arrays, meta = validate(fields, meta, source=path)
    meta = _clean_meta(meta, arrays)
    if fmt == "checkpoints":
        held = _checkpoints_in(path)
        if held and not append:
            raise ValueError(f"append: {path!r} already holds {len(held)} checkpoint(s) (steps {held[0]} … {held[-1]}); "
                             "pass append=True to add these after them, or export to a new folder")
        writer = CheckpointWriter(path, labels=arrays.get("labels"), Y=arrays.get("Y"),
                                  attributes=arrays.get("attributes"), meta=meta, format=checkpoint_format,
                                  dtype=dtype, resume=append)
        if "kernel" in arrays:
            writer._static_kernel(arrays["kernel"], arrays["kernel_steps"])
        per_ckpt = [k for k in ("H", "W", "b", "gram_H", "gram_W", "logits") if k in arrays]
        for j, step in enumerate(arrays["steps"]):
            writer.append(int(step), **{k: arrays[k][j] for k in per_ckpt},
                          loss=None if "loss" not in arrays else arrays["loss"][j])
        return path
    if append:
        raise ValueError("append: only a checkpoint directory can be appended to")
    out = {}
    for k, v in arrays.items():
        if k in ("lr", "weight_decay"):
            continue
        out[k] = _cast(v, dtype) if k in ("H", "W", "b") else _cast_gram(v, dtype) if k in GRAM_KEYS else v
    if "kernel" in out and dtype not in (None, "float64"):
        out["kernel"] = np.asarray(out["kernel"], dtype=np.float32)
    if "Y" in out and dtype not in (None, "float64"):
        out["Y"] = np.asarray(out["Y"], dtype=np.float32)
    if fmt == "npz":
        return _save_npz(path, out, meta, compress)
    if fmt == "safetensors":
        dts = {k: "BF16" for k in ("H", "W", "b") if k in out and dtype == "bfloat16"}
        return atomic_write(path, lambda tmp: write_safetensors(tmp, out, meta, dtypes=dts))
    return atomic_write(path, lambda tmp: _write_hdf5(tmp, out, meta))


def _write_hdf5(path, arrays, meta):
    try:
        import h5py
    except ImportError:
        raise ImportError("writing HDF5 needs h5py: pip install \"ufm[h5]\" (or pip install h5py)") from None
    with h5py.File(path, "w") as fh:
        for k, v in arrays.items():
            fh.create_dataset(k, data=v)
        fh.attrs["meta"] = json.dumps(meta, default=json_default)


def _checkpoints_in(directory) -> list[int]:
    """Sorted steps of the ckpt_<step> files already in ``directory`` (none if it does not exist)."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return sorted(int(m.group(1)) for m in map(CHECKPOINT_FILE.match, names) if m)


class CheckpointWriter:
    """Append checkpoints to a per-checkpoint "ufm-run" directory during training.

    The directory holds ``meta.json``, ``data.npz`` (labels or Y, attributes) and one
    ``ckpt_<step>.npz`` (or ``.safetensors``) per :meth:`append`, each with ``H`` (N, d),
    ``W`` (K, d), ``step`` and optionally ``b`` (K,), ``loss`` and ``kernel`` (N, N). Each file
    is written atomically, so a run killed mid-training leaves a loadable directory.

    Arguments:
        directory: where to write (created if needed).
        labels: int (N,), or Y: float (N, K) soft labels — one of the two.
        attributes: optional int (N, F).
        lr, weight_decay: optional scalars for the metadata.
        meta: optional JSON-serialisable metadata.
        format: ``"npz"`` or ``"safetensors"`` checkpoint files.
        dtype: storage dtype of H, W, b (as in :func:`export`; ``"bfloat16"`` needs safetensors).
        resume: the directory may already hold checkpoints (e.g. a restarted run): new ones must
            come after the last one and match its shapes; the stored labels must match.

    Raises:
        ValueError: the directory holds checkpoints and ``resume`` is False; bad format/dtype.
        FormatError: inconsistent labels/Y/attributes (checked as in the format).

    Example::

        writer = ufm.bridge.CheckpointWriter("runs/mlp", labels=y, attributes=a, lr=0.1)
        for step in range(steps):
            ...
            if step in save_steps:
                writer.append(step, H=feats.detach().numpy(), W=head.weight.detach().numpy(), loss=loss.item())
    """

    def __init__(self, directory, *, labels=None, Y=None, attributes=None, lr=None, weight_decay=None, meta=None,
                 format: str = "npz", dtype=None, resume: bool = False):
        self.directory = os.fspath(directory)
        if not _choice(format, ("npz", "safetensors")):
            raise ValueError(f"format: expected 'npz' or 'safetensors', got {format!r}")
        _check_dtype(dtype, "checkpoints-safetensors" if format == "safetensors" else "checkpoints")
        self.format, self.dtype = format, dtype
        static = {k: to_numpy(v, k) for k, v in (("labels", labels), ("Y", Y), ("attributes", attributes))
                  if v is not None}
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"meta: expected a dict of metadata, got {type(meta).__name__}")
        meta = dict(meta or {})
        for k, v in (("lr", lr), ("weight_decay", weight_decay)):
            if v is not None:
                meta[k] = float(v)
        if not isinstance(resume, (bool, np.bool_)):
            raise TypeError(f"resume: expected True or False, got {resume!r}")
        ckpts = _checkpoints_in(self.directory)
        self._last = None
        self._shapes = None
        if ckpts and not resume:
            raise ValueError(f"resume: {self.directory!r} already holds {len(ckpts)} checkpoint(s) (steps {ckpts[0]} … "
                             f"{ckpts[-1]}); pass resume=True to add checkpoints after them")
        if ckpts:
            prev = load(self.directory)
            for k, v in static.items():
                old = getattr(prev, k)
                if old is None or np.shape(old) != np.shape(v) or not np.allclose(old, v):
                    raise FormatError(f"{k}: differs from the {k} stored in {self.directory!r}",
                                      source=self.directory, key=k)
            self._last = int(prev.steps[-1])
            self._shapes = ({"H": tuple(prev._a["H"].shape[1:]), "W": tuple(prev._a["W"].shape[1:])}
                            if prev.has_features else
                            {k: tuple(prev._a[k].shape[1:]) for k in ("gram_H", "gram_W", "logits") if k in prev._a})
            self.labels, self.Y = prev.labels, (prev.Y if prev.labels is None else None)
            self.meta = {**prev.meta, **meta}
        else:
            if "labels" not in static and "Y" not in static:
                raise FormatError(f"{self.directory}: labels: missing (a ufm-run needs labels (N,) or soft labels "
                                  "Y (N, K))", source=self.directory, key="labels")
            self._check_static(static)
            self.meta = _clean_meta(meta, {})
            os.makedirs(self.directory, exist_ok=True)
            _save_npz(os.path.join(self.directory, "data.npz"), static)
            self._write_meta()
        self._kernel_in_data = False

    def _check_static(self, static):
        lab = static.get("labels")
        Y = static.get("Y")
        N = (lab.shape[0] if lab is not None else np.shape(Y)[0])
        K = None if Y is None else np.shape(Y)[1]
        fake = {"steps": np.zeros(1, dtype=np.int64), "H": np.zeros((1, N, 1)),
                "W": np.zeros((1, K if K is not None else int(np.max(lab)) + 1, 1)), **static}
        validate(fake, source=self.directory)
        self.labels = None if lab is None else np.asarray(lab, dtype=np.int64)
        self.Y = None if Y is None else np.asarray(Y, dtype=np.float64)

    def _write_meta(self):
        text = json.dumps(self.meta, indent=1, default=json_default)

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
        atomic_write(os.path.join(self.directory, "meta.json"), write)

    def _static_kernel(self, kernel, kernel_steps):
        """Store per-run kernels in data.npz (used by :func:`export`)."""
        path = os.path.join(self.directory, "data.npz")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["kernel"] = np.asarray(kernel, dtype=np.float64 if self.dtype in (None, "float64") else np.float32)
        arrays["kernel_steps"] = np.asarray(kernel_steps, dtype=np.int64)
        _save_npz(path, arrays)
        self._kernel_in_data = True

    @property
    def last_step(self) -> int | None:
        """The step of the last checkpoint written (None before the first)."""
        return self._last

    def append(self, step: int, H=None, W=None, *, b=None, loss=None, kernel=None, gram_H=None, gram_W=None,
               logits=None) -> str:
        """Write one checkpoint: the features (H, W) or, for a Gram-only run, the Grams.

        Arguments:
            step: int, larger than every step written so far.
            H: float (N, d) features (one row per context). W: float (K, d) classifier rows.
            gram_H: instead of H and W: float (N, N) feature Gram H Hᵀ over the contexts;
                gram_W: optional float (K, K); logits: optional float (K, N) = W Hᵀ (+ b 1ᵀ).
                Every checkpoint of a directory holds the same kind.
            b: optional float (K,) (features runs). loss: optional float. kernel: optional float
                (N, N) feature kernel measured at this step.

        Returns:
            The checkpoint file written.

        Raises:
            FormatError: a step not after the last one, both or neither of features and Grams,
                shapes inconsistent with the labels or with earlier checkpoints, non-finite
                values, a Gram that is not symmetric PSD, a bad kernel.
        """
        step = int(step)
        src = self.directory
        if self._last is not None and step <= self._last:
            raise FormatError(f"{src}: steps: checkpoint step {step} is not after the last written step {self._last}",
                              source=src, key="steps")
        per = {"H": H, "W": W, "gram_H": gram_H, "gram_W": gram_W, "logits": logits}
        per = {k: to_numpy(v, k, src) for k, v in per.items() if v is not None}
        gram_only = "gram_H" in per
        if gram_only and ("H" in per or "W" in per):
            raise FormatError(f"{src}: gram_H: a checkpoint holds either features (H, W) or Grams (gram_H, gram_W, "
                              "logits), not both", source=src, key="gram_H")
        if not gram_only:
            for key in ("H", "W"):
                if key not in per:
                    raise FormatError(f"{src}: {key}: missing at step {step} (a checkpoint holds H and W, or gram_H)",
                                      source=src, key=key)
        want = {"H": "(N, d)", "W": "(K, d)", "gram_H": "(N, N)", "gram_W": "(K, K)", "logits": "(K, N)"}
        for key, arr in per.items():
            if np.ndim(arr) != 2:
                raise FormatError(f"{src}: {key}: expected a 2-D array {want[key]} for one checkpoint, found shape "
                                  f"{np.shape(arr)} at step {step}", source=src, key=key)
        shapes = {k: tuple(np.shape(v)) for k, v in per.items()}
        if self._shapes is not None and set(shapes) != set(self._shapes):
            odd = sorted(set(shapes) ^ set(self._shapes))[0]
            raise FormatError(f"{src}: {odd}: {'missing' if odd in self._shapes else 'given'} at step {step}, but the "
                              f"earlier checkpoints hold {', '.join(self._shapes)}", source=src, key=odd)
        if self._shapes is not None and shapes != self._shapes:
            raise FormatError(f"{src}: {', '.join(shapes)}: shapes {shapes} at step {step} differ from the earlier "
                              f"checkpoints' {self._shapes}", source=src, key=next(iter(shapes)))
        fields = {"steps": np.array([step]), **{k: v[None] for k, v in per.items()}}
        if self.labels is not None:
            fields["labels"] = self.labels
        else:
            fields["Y"] = self.Y
        if b is not None:
            fields["b"] = to_numpy(b, "b", src)[None]
        if loss is not None:
            fields["loss"] = np.array([float(np.asarray(to_numpy(loss, "loss", src)).reshape(-1)[0])])
        if kernel is not None:
            if self._kernel_in_data:
                raise FormatError(f"{src}: kernel: this directory keeps its kernels in data.npz", source=src,
                                  key="kernel")
            fields["kernel"] = to_numpy(kernel, "kernel", src)
            fields["kernel_steps"] = np.array([step])
        arrays, _ = validate(fields, source=src)
        out = {"step": np.array(step, dtype=np.int64)}
        for key in per:
            out[key] = _cast(arrays[key][0], self.dtype) if key in ("H", "W") else _cast_gram(arrays[key][0], self.dtype)
        if "b" in arrays:
            out["b"] = _cast(arrays["b"][0], self.dtype)
        if "loss" in arrays:
            out["loss"] = np.array(arrays["loss"][0])
        if "kernel" in arrays:
            out["kernel"] = np.asarray(arrays["kernel"][0], dtype=np.float64 if self.dtype in (None, "float64")
                                       else np.float32)
        path = os.path.join(self.directory, f"ckpt_{step}.{self.format}")
        if self.format == "npz":
            _save_npz(path, out)
        else:
            dts = {k: "BF16" for k in ("H", "W", "b") if k in out and self.dtype == "bfloat16"}
            out["step"] = out["step"].reshape(1)
            atomic_write(path, lambda tmp: write_safetensors(tmp, out, dtypes=dts))
        self._last = step
        self._shapes = shapes
        return path
