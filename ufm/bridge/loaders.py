"""``ufm.bridge.load``: read an exported run from any supported file format or layout.

Formats and layouts (docs/exchange-format.md):

* a single ``.npz`` — arrays under the format's keys, metadata as a JSON string under ``meta``
  or in a side-car ``<name>.json``;
* a single ``.safetensors`` — read by :mod:`ufm.bridge.safetensors` (bfloat16/float16 upcast to
  float32, header and offsets validated, memory-mapped when large); metadata in the header;
* ``.h5`` / ``.hdf5`` — datasets at the root, metadata as root attributes (a JSON ``meta``
  attribute or one attribute per key); needs h5py (``pip install "ufm[h5]"``);
* a directory of per-checkpoint files — ``meta.json``, ``data.npz`` (or ``data.safetensors``)
  with the per-run arrays (labels or Y, attributes, optional kernel and kernel_steps), and
  ``ckpt_<step>.npz`` / ``ckpt_<step>.safetensors`` each holding ``H`` (N, d), ``W`` (K, d),
  optionally ``b`` (K,), ``step``, ``loss`` and ``kernel`` (N, N) at that step;
* the stacked layout of the NTP-UFM authors' training code — a directory with
  ``W_list_<tag>.npy`` (T, K, d), ``H_list_<tag>.npy`` ((T, N, d) or their (T, d, N)
  columns), ``rec_<tag>.npy`` (the record: (T,) steps, or (T, c) with steps in column 0 and the
  loss in column 1, or with ``allow_pickle=True`` a pickled dict with ``steps``/``epochs`` and
  ``loss``) and optionally ``labels_<tag>.npy`` or ``Y_<tag>.npy``.

A torch ``.pt`` / ``.pth`` file is recognised and refused with the two-line export recipe.
"""

from __future__ import annotations

import glob
import json
import os
import re
import warnings
import zipfile

import numpy as np

from .._io import load_npy
from .errors import FormatError
from .format import ARRAY_KEYS, CHECKPOINT_FILE, EXPORT_RECIPE, parse_meta
from .run import Run, attribute_override_message
from .safetensors import check_mmap, read_safetensors

__all__ = ["load", "detect"]

_CKPT = CHECKPOINT_FILE          # the name the checkpoint loader uses
_NTP = re.compile(r"^W_list_(.*)\.npy$")
_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def detect(path) -> str:
    """The layout of ``path``: ``"npz"``, ``"safetensors"``, ``"hdf5"``, ``"checkpoints"``,
    ``"ntp"`` or ``"torch"``.

    Raises:
        FormatError: the path does not exist or is none of these.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        names = os.listdir(path)
        if any(_CKPT.match(n) for n in names):
            return "checkpoints"
        if any(_NTP.match(n) for n in names):
            return "ntp"
        raise FormatError(f"{path!r}: a directory, but neither a checkpoint directory (ckpt_<step>.npz|.safetensors "
                          "with meta.json and data.npz) nor the stacked layout (W_list_<tag>.npy, H_list_<tag>.npy, "
                          "rec_<tag>.npy)", source=path)
    if not os.path.exists(path):
        raise FormatError(f"{path!r}: no such file or directory", source=path)
    low = path.lower()
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if low.endswith(_TORCH_SUFFIXES[:2]):
        return "torch"
    if magic[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except Exception:  # noqa: BLE001 - a corrupt zip: the npz reader reports it, naming the file
            names = []
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        return "npz"
    if magic[:1] == b"\x80" and low.endswith(_TORCH_SUFFIXES):
        return "torch"
    if magic[:8] == b"\x89HDF\r\n\x1a\n" or low.endswith((".h5", ".hdf5")):
        return "hdf5"
    if low.endswith(".npz"):
        return "npz"
    if low.endswith(".safetensors") or (len(magic) == 8 and magic[:8] != b"" and _looks_safetensors(path)):
        return "safetensors"
    if low.endswith(".npy") and _NTP.match(os.path.basename(path)):
        return "ntp"
    if os.path.basename(low) == "meta.json":
        return "checkpoints"
    raise FormatError(f"{path!r}: unrecognised file; expected .npz, .safetensors, .h5/.hdf5, a checkpoint directory "
                      "or the W_list_/H_list_/rec_ layout", source=path)


def _looks_safetensors(path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def load(path, *, tag: str | None = None, mmap="auto", allow_pickle: bool = False, h_layout: str | None = None,
         labels=None, Y=None, attributes=None, meta: dict | None = None) -> Run:
    """Load an exported run from a file or directory (layouts in the module docstring).

    Arguments:
        path: a ``.npz``, ``.safetensors`` or ``.h5``/``.hdf5`` file, a checkpoint directory,
            or a directory (or one of its ``W_list_<tag>.npy`` files) in the stacked layout.
        tag: which run of a stacked-layout directory holding several (``W_list_<tag>.npy``).
        mmap: safetensors only: True, False or ``"auto"`` (memory-map files over 64 MiB).
        allow_pickle: stacked layout only: allow a pickled ``rec_<tag>.npy`` (a dict). Only
            for files you trust: unpickling runs code.
        h_layout: stacked layout only, when N = d makes the orientation of ``H_list``
            ambiguous: ``"rows"`` (T, N, d) or ``"columns"`` (T, d, N).
        labels, Y, attributes: fill in per-run arrays the files do not hold (e.g. the stacked
            layout stores no labels). Labels and Y given for a file that holds them must agree;
            attributes are an analysis choice and override the stored ones, with a
            ``UserWarning`` saying so (:meth:`Run.with_attributes` does the same in memory).
        meta: extra metadata merged over the stored metadata.

    Returns:
        A validated :class:`~ufm.bridge.run.Run`.

    Raises:
        FormatError: a torch file (the message shows the export recipe), an unrecognised or
            corrupt file (truncated, bad zip, bad safetensors header, bad JSON), or contents
            that break the format (missing keys, inconsistent shapes, non-increasing steps,
            non-finite values naming checkpoint and array, bad labels); never a bare
            numpy or struct traceback.
        ImportError: an HDF5 file without h5py installed (the message says how to install it).
    """
    _check_load_options(path, tag, mmap, allow_pickle, h_layout, meta)
    path = os.fspath(path)
    kind = detect(path)
    if kind == "torch":
        raise FormatError(
            f"{path!r} is a torch checkpoint (pickle). ufm never imports torch and never unpickles; export the "
            f"tensors once with the bridge's exporter (tensors' .numpy() works), e.g.\n"
            + EXPORT_RECIPE.replace("PATH", repr(path)), source=path)
    reader = {"npz": _read_npz, "safetensors": _read_safetensors, "hdf5": _read_hdf5,
              "checkpoints": _read_checkpoints, "ntp": _read_ntp}[kind]
    if kind == "safetensors":
        fields, stored_meta, dtypes = reader(path, mmap=mmap)
    elif kind == "ntp":
        fields, stored_meta, dtypes = reader(path, tag=tag, allow_pickle=allow_pickle, h_layout=h_layout,
                                             labels=labels, Y=Y)
    else:
        fields, stored_meta, dtypes = reader(path)
    for key, value in (("labels", labels), ("Y", Y), ("attributes", attributes)):
        if value is None:
            continue
        if key in fields and fields[key] is not None:
            stored = np.asarray(fields[key])
            given = np.asarray(value)
            same = stored.shape == given.shape and np.allclose(stored, given)
            if key == "attributes" and not same:
                # the grouping is an analysis choice: the user's wins, and says so
                warnings.warn(attribute_override_message(stored, given, path), UserWarning, stacklevel=2)
                fields[key] = value
                meta = {**(meta or {}), "attributes_overridden": True}
            elif not same:
                raise FormatError(f"{key}: given to load() but {path!r} holds different {key}", source=path, key=key)
        else:
            fields[key] = value
    if meta:
        stored_meta = {**stored_meta, **meta}
    unknown = sorted(set(fields) - set(ARRAY_KEYS))
    if unknown:
        raise FormatError(f"{path!r}: unknown key(s) {unknown}; the ufm-run format has {list(ARRAY_KEYS)}",
                          source=path, key=unknown[0])
    src = path.rstrip(os.sep) if kind in ("checkpoints", "ntp") else path
    if kind == "checkpoints" and os.path.basename(src) == "meta.json":
        src = os.path.dirname(src)
    return Run(**fields, meta=stored_meta, source=src, _dtypes=dtypes)


def _check_load_options(path, tag, mmap, allow_pickle, h_layout, meta) -> None:
    """The keyword arguments of :func:`load`, checked whatever the format (a bad value for an
    option the format does not use is still a mistake worth hearing about)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path: expected a file or directory path, got {type(path).__name__}")
    check_mmap(mmap)
    if tag is not None and not isinstance(tag, str):
        raise TypeError(f"tag: expected None or a string (the <tag> of W_list_<tag>.npy), got {tag!r}")
    if not isinstance(allow_pickle, (bool, np.bool_)):
        raise TypeError(f"allow_pickle: expected True or False, got {allow_pickle!r}")
    if h_layout is not None and not (isinstance(h_layout, str) and h_layout in ("rows", "columns")):
        raise ValueError(f"h_layout: expected None, 'rows' or 'columns', got {h_layout!r}")
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"meta: expected None or a dict of metadata, got {type(meta).__name__}")


# -- readers: each returns (fields, meta, dtypes) ---------------------------------------------

def _np_array(data, key, path):
    """One member of an npz, with decompression errors turned into FormatError."""
    try:
        return data[key]
    except Exception as exc:  # noqa: BLE001 - a corrupt member makes zipfile/numpy raise anything
        # (BadZipFile, zlib.error, NotImplementedError, SyntaxError from numpy's header parser, ...)
        msg = str(exc)
        if "pickle" in msg.lower():
            msg = "it holds pickled Python objects, which ufm never loads"
        raise FormatError(f"{path!r}: cannot read array {key!r}: {msg} (corrupt or truncated file?)",
                          source=path, key=key) from None


def _open_npz(path):
    try:
        return load_npy(path)
    except FileNotFoundError:
        raise FormatError(f"{path!r}: no such file", source=path) from None
    except Exception as exc:  # noqa: BLE001 - whatever a corrupt archive makes zipfile/numpy raise
        raise FormatError(f"{path!r}: not a readable .npz file ({exc}); corrupt or truncated?", source=path) from None


def _meta_from_npz(data, path):
    if "meta" not in data.files:
        return None
    raw = _np_array(data, "meta", path)
    if raw.dtype.kind not in "US" or raw.size != 1:
        raise FormatError(f"{path!r}: 'meta' must be a JSON string (0-d str array), found dtype {raw.dtype} "
                          f"shape {raw.shape}", source=path, key="meta")
    return parse_meta(raw.reshape(()).item(), f"{path!r} ('meta')", path)


def _sidecar(path):
    base = path[:-4] if path.lower().endswith(".npz") else path
    for cand in (base + ".json", path + ".json"):
        if os.path.isfile(cand):
            with open(cand, "rb") as fh:
                return parse_meta(fh.read(), repr(cand), path)
    return None


def _read_npz(path):
    with _open_npz(path) as data:
        meta = _meta_from_npz(data, path)
        fields = {k: _np_array(data, k, path) for k in data.files if k != "meta"}
    side = _sidecar(path)
    if side is not None:
        meta = {**side, **(meta or {})}
    return _scalars(fields), meta or {}, {}


def _scalars(fields):
    """0-d lr / weight_decay arrays to floats; a 0-d step to an int."""
    for k in ("lr", "weight_decay"):
        if k in fields and np.ndim(fields[k]) == 0:
            fields[k] = fields[k].item() if hasattr(fields[k], "item") else fields[k]
    return fields


def _read_safetensors(path, mmap="auto"):
    try:
        arrays, meta, dtypes = read_safetensors(path, mmap=mmap)
    except OSError as exc:
        raise FormatError(f"{path!r}: cannot read ({exc})", source=path) from None
    if "meta" in meta and isinstance(meta["meta"], dict) and len(meta) == 1:
        meta = meta["meta"]
    return _scalars(arrays), meta, dtypes


def _read_hdf5(path):
    try:
        import h5py
    except ImportError:
        raise ImportError(f"{path!r} is an HDF5 file; reading it needs h5py: pip install \"ufm[h5]\" "
                          "(or pip install h5py)") from None
    try:
        fh = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path!r}: not a readable HDF5 file ({exc}); corrupt or truncated?", source=path) from None
    with fh:
        fields = {}
        for key in fh.keys():
            obj = fh[key]
            if not isinstance(obj, h5py.Dataset):
                raise FormatError(f"{path!r}: {key!r} is a group; the ufm-run format keeps its arrays at the root",
                                  source=path, key=key)
            try:
                fields[key] = obj[()]
            except (OSError, ValueError, TypeError) as exc:
                raise FormatError(f"{path!r}: cannot read dataset {key!r} ({exc}); corrupt file?",
                                  source=path, key=key) from None
        meta = {}
        for k, v in fh.attrs.items():
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            if isinstance(v, np.generic):
                v = v.item()
            if k == "meta":
                meta.update(parse_meta(v, f"{path!r} (attribute 'meta')", path))
                continue
            if isinstance(v, str):
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
            elif isinstance(v, np.ndarray):
                v = v.tolist()
            meta[k] = v
    return _scalars(fields), meta, {}


def _read_static(folder):
    """meta.json and data.npz / data.safetensors of a checkpoint directory."""
    meta = {}
    mpath = os.path.join(folder, "meta.json")
    if os.path.isfile(mpath):
        with open(mpath, "rb") as fh:
            meta = parse_meta(fh.read(), repr(mpath), folder)
    fields, dtypes = {}, {}
    npz, st = os.path.join(folder, "data.npz"), os.path.join(folder, "data.safetensors")
    if os.path.isfile(npz):
        with _open_npz(npz) as data:
            fields = {k: _np_array(data, k, npz) for k in data.files if k != "meta"}
            inner = _meta_from_npz(data, npz)
            if inner:
                meta = {**inner, **meta}
    elif os.path.isfile(st):
        fields, smeta, dtypes = read_safetensors(st, mmap=False)
        meta = {**smeta, **meta}
    bad = sorted(set(fields) - {"labels", "Y", "attributes", "kernel", "kernel_steps", "lr", "weight_decay"})
    if bad:
        raise FormatError(f"{folder!r}: data file holds per-checkpoint key(s) {bad}; those belong in ckpt_<step> files",
                          source=folder, key=bad[0])
    return _scalars(fields), meta, dtypes


_CKPT_KEYS = ("H", "W", "b", "step", "loss", "kernel", "gram_H", "gram_W", "logits")
_GRAM_CKPT = ("gram_H", "gram_W", "logits")


def _read_checkpoints(path):
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    static, meta, dtypes = _read_static(folder)
    files = {}
    for name in os.listdir(folder):
        m = _CKPT.match(name)
        if m:
            step = int(m.group(1))
            if step in files:
                raise FormatError(f"{folder!r}: two files for step {step}: {files[step]} and {name}",
                                  source=folder, key="steps")
            files[step] = name
    steps = sorted(files)
    per = {k: [] for k in _CKPT_KEYS}
    kernel_steps = []
    for j, step in enumerate(steps):
        fpath = os.path.join(folder, files[step])
        if fpath.endswith(".npz"):
            with _open_npz(fpath) as data:
                arrs = {k: _np_array(data, k, fpath) for k in data.files}
            dts = {}
        else:
            arrs, _, dts = read_safetensors(fpath, mmap=False)
        unknown = sorted(set(arrs) - set(_CKPT_KEYS))
        if unknown:
            raise FormatError(f"{fpath!r}: unknown key(s) {unknown}; a checkpoint file holds {list(_CKPT_KEYS)}",
                              source=fpath, key=unknown[0], checkpoint=j)
        if "gram_H" in arrs and j == 0:
            gram_dir = True
        elif j == 0:
            gram_dir = False
        if gram_dir:
            for key in _GRAM_CKPT:
                if key == "gram_H" or per[key] or (j == 0 and key in arrs):
                    if key not in arrs:
                        raise FormatError(f"{fpath!r}: {key}: missing from checkpoint {j} (step {step}) of a Gram-only "
                                          "directory", source=fpath, key=key, checkpoint=j)
                    per[key].append(np.asarray(arrs[key]))
                elif key in arrs:
                    raise FormatError(f"{fpath!r}: {key}: present at step {step} but not in the first checkpoint",
                                      source=fpath, key=key, checkpoint=j)
        for key in ("H", "W") if not gram_dir else ():
            if key not in arrs:
                raise FormatError(f"{fpath!r}: {key}: missing from checkpoint {j} (step {step})", source=fpath,
                                  key=key, checkpoint=j)
        if "step" in arrs:
            s = np.asarray(arrs["step"]).reshape(-1)
            if s.size != 1 or int(s[0]) != step:
                raise FormatError(f"{fpath!r}: step: the file holds step {s.tolist()} but its name says {step}",
                                  source=fpath, key="step", checkpoint=j)
        for key in ("H", "W", "b"):
            a = arrs.get(key)
            if a is None:
                per[key].append(None)
                continue
            want = 1 if key == "b" else 2
            if np.ndim(a) != want:
                raise FormatError(f"{fpath!r}: {key}: expected a {want}-D array in a checkpoint file "
                                  f"({'(K,)' if key == 'b' else '(N, d)' if key == 'H' else '(K, d)'}), found shape "
                                  f"{np.shape(a)}", source=fpath, key=key, checkpoint=j)
            if j and per[key][0] is not None and np.shape(a) != np.shape(per[key][0]):
                raise FormatError(f"{fpath!r}: {key}: shape {np.shape(a)} at checkpoint {j} (step {step}) differs from "
                                  f"{np.shape(per[key][0])} at step {steps[0]}", source=fpath, key=key, checkpoint=j)
            per[key].append(a)
        if "loss" in arrs:
            per["loss"].append(float(np.asarray(arrs["loss"], dtype=np.float64).reshape(-1)[0]))
        if "kernel" in arrs:
            per["kernel"].append(np.asarray(arrs["kernel"], dtype=np.float64))
            kernel_steps.append(step)
        dtypes.update({k: v for k, v in dts.items() if k in ("H", "W")})
    if not steps:
        raise FormatError(f"{folder!r}: no ckpt_<step>.npz|.safetensors files", source=folder, key="steps")
    _warn_if_gaps(folder, steps)
    fields = dict(static)
    fields["steps"] = np.array(steps, dtype=np.int64)
    if gram_dir:
        for key in _GRAM_CKPT:
            if per[key]:
                shapes = {a.shape for a in per[key]}
                if len(shapes) != 1:
                    raise FormatError(f"{folder!r}: {key}: checkpoints have different shapes {sorted(shapes)}",
                                      source=folder, key=key)
                fields[key] = np.stack(per[key])
    else:
        fields["H"] = np.stack(per["H"])
        fields["W"] = np.stack(per["W"])
    nb = sum(x is not None for x in per["b"])
    if nb:
        if nb != len(steps):
            j = next(i for i, x in enumerate(per["b"]) if x is None)
            raise FormatError(f"{folder!r}: b: present in some checkpoints but missing at checkpoint {j} "
                              f"(step {steps[j]})", source=folder, key="b", checkpoint=j)
        fields["b"] = np.stack(per["b"])
    if per["loss"]:
        if len(per["loss"]) != len(steps):
            raise FormatError(f"{folder!r}: loss: present in {len(per['loss'])} of {len(steps)} checkpoints",
                              source=folder, key="loss")
        fields["loss"] = np.array(per["loss"])
    if per["kernel"]:
        if "kernel" in static:
            raise FormatError(f"{folder!r}: kernel: both in the data file and in checkpoint files", source=folder,
                              key="kernel")
        shapes = {k.shape for k in per["kernel"]}
        if len(shapes) != 1:
            raise FormatError(f"{folder!r}: kernel: checkpoint kernels have different shapes {sorted(shapes)}",
                              source=folder, key="kernel")
        fields["kernel"] = np.stack(per["kernel"])
        fields["kernel_steps"] = np.array(kernel_steps, dtype=np.int64)
    return fields, meta, dtypes


def missing_checkpoints(steps) -> tuple[int, list[int]]:
    """(δ, steps missing) of an evenly spaced checkpoint schedule, (0, []) when there is no such schedule.

    A schedule counts as evenly spaced by δ when at least 3 of 4 consecutive differences are δ
    (the most common one) and all are multiples of δ; the multiples are then gaps. Log-spaced
    or mixed schedules have no common difference and are never flagged.
    """
    steps = [int(s) for s in steps]
    diffs = np.diff(steps)
    if diffs.size < 3:
        return 0, []
    values, counts = np.unique(diffs, return_counts=True)
    delta = int(values[np.argmax(counts)])
    if delta <= 0 or counts.max() < 0.75 * diffs.size or np.any(diffs % delta) or np.all(diffs == delta):
        return 0, []
    have = set(steps)
    return delta, [s for s in range(steps[0], steps[-1], delta) if s not in have]


def _warn_if_gaps(folder, steps) -> None:
    delta, missing = missing_checkpoints(steps)
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        warnings.warn(f"{folder!r}: the checkpoints are spaced every {delta} steps"
                      f" but step(s) {shown} are missing (deleted, or not written by an interrupted run?); "
                      "the run is loaded without them", UserWarning, stacklevel=4)


def _npy(path, allow_pickle=False):
    try:
        return load_npy(path, allow_pickle=allow_pickle)
    except Exception as exc:  # noqa: BLE001 - whatever a corrupt file makes numpy raise
        msg = str(exc)
        if "pickle" in msg.lower():
            msg = ("it holds pickled Python objects; pass allow_pickle=True to load() if you trust the file "
                   "(unpickling runs code)")
        raise FormatError(f"{path!r}: cannot read ({msg})", source=path) from None


def _read_ntp(path, *, tag=None, allow_pickle=False, h_layout=None, labels=None, Y=None):
    if os.path.isfile(path):
        m = _NTP.match(os.path.basename(path))
        if m is None:
            raise FormatError(f"{path!r}: expected a W_list_<tag>.npy file or its directory", source=path)
        if tag is None:
            tag = m.group(1)
        folder = os.path.dirname(path) or "."
    else:
        folder = path
    tags = sorted(_NTP.match(os.path.basename(p)).group(1) for p in glob.glob(os.path.join(glob.escape(folder), "W_list_*.npy")))
    if tag is None:
        if len(tags) != 1:
            raise FormatError(f"{folder!r}: several runs in the stacked layout ({tags}); pass tag=", source=folder,
                              key="tag")
        tag = tags[0]
    if tag not in tags:
        raise FormatError(f"{folder!r}: no W_list_{tag}.npy (runs here: {tags})", source=folder, key="tag")
    f = lambda stem: os.path.join(folder, f"{stem}_{tag}.npy")  # noqa: E731
    if not os.path.isfile(f("H_list")):
        raise FormatError(f"{folder!r}: H: missing H_list_{tag}.npy beside W_list_{tag}.npy", source=folder, key="H")
    Wl = _npy(f("W_list"))
    Hl = _npy(f("H_list"))
    fields, meta = {}, {"layout": "ntp-stacked", "tag": tag}
    for name, arr in (("W_list", Wl), ("H_list", Hl)):
        if arr.ndim != 3:
            raise FormatError(f"{f(name)!r}: expected a stacked 3-D array (T, ·, ·), found shape {arr.shape}",
                              source=f(name), key="W" if name == "W_list" else "H")
    T = Wl.shape[0]
    for stem, key in (("labels", "labels"), ("Y", "Y")):
        if os.path.isfile(f(stem)):
            fields[key] = _npy(f(stem))
    if labels is not None:
        fields["labels"] = np.asarray(labels)
    if Y is not None:
        fields["Y"] = np.asarray(Y)
    K = None
    if "Y" in fields:
        Yf = np.asarray(fields["Y"])
        K = Yf.shape[1] if Yf.ndim == 2 else None
    # W: (T, K, d) or (T, d, K); H: (T, N, d) or (T, d, N)
    if K is not None and Wl.shape[1] != K and Wl.shape[2] == K:
        Wl = Wl.transpose(0, 2, 1)
    d = Wl.shape[2]
    if h_layout is None:
        if Hl.shape[2] == d and Hl.shape[1] != d:
            h_layout = "rows"
        elif Hl.shape[1] == d and Hl.shape[2] != d:
            h_layout = "columns"
        elif Hl.shape[1] == Hl.shape[2] == d:
            raise FormatError(f"{f('H_list')!r}: shape {Hl.shape} with N = d = {d}: the orientation is ambiguous; "
                              "pass h_layout='rows' (T, N, d) or 'columns' (T, d, N)", source=folder, key="H")
        else:
            raise FormatError(f"{f('H_list')!r}: shape {Hl.shape} does not share the width d = {d} of W_list "
                              f"{Wl.shape}", source=folder, key="H")
    if h_layout == "columns":
        Hl = Hl.transpose(0, 2, 1)
    elif h_layout != "rows":
        raise FormatError(f"h_layout: expected 'rows' or 'columns', got {h_layout!r}", source=folder, key="H")
    if "Y" in fields:
        Yf = np.asarray(fields["Y"])
        if Yf.ndim == 2 and Yf.shape != (Hl.shape[1], Wl.shape[1]) and Yf.T.shape == (Hl.shape[1], Wl.shape[1]):
            fields["Y"] = Yf.T
    fields["H"], fields["W"] = Hl, Wl
    rec_path = f("rec")
    if os.path.isfile(rec_path):
        rec = _npy(rec_path, allow_pickle=allow_pickle)
        if rec.dtype == object:
            rec = rec.item() if rec.ndim == 0 else rec
            if not isinstance(rec, dict):
                raise FormatError(f"{rec_path!r}: a pickled record must be a dict, found {type(rec).__name__}",
                                  source=rec_path, key="steps")
            st = next((rec[k] for k in ("steps", "step", "iters", "iterations", "epochs", "epoch") if k in rec), None)
            if st is None:
                raise FormatError(f"{rec_path!r}: the record has no 'steps' or 'epochs' entry (keys {sorted(rec)})",
                                  source=rec_path, key="steps")
            fields["steps"] = np.asarray(st)
            for k in ("loss", "train_loss"):
                if k in rec and np.shape(rec[k]) == (T,):
                    fields["loss"] = np.asarray(rec[k], dtype=np.float64)
                    break
        elif rec.ndim == 1:
            fields["steps"] = rec
        elif rec.ndim == 2:
            fields["steps"] = rec[:, 0]
            if rec.shape[1] > 1:
                fields["loss"] = rec[:, 1]
        else:
            raise FormatError(f"{rec_path!r}: expected (T,) steps or a (T, c) record, found shape {rec.shape}",
                              source=rec_path, key="steps")
        if np.shape(fields["steps"])[0] != T:
            raise FormatError(f"{rec_path!r}: steps: the record has {np.shape(fields['steps'])[0]} entries but "
                              f"W_list_{tag}.npy has T = {T} checkpoints", source=rec_path, key="steps")
    else:
        fields["steps"] = np.arange(T)
        meta["steps_are_indices"] = True
    return fields, meta, {}

