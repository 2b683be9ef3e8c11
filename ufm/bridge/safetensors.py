"""A small pure-numpy reader and writer for the safetensors format (no torch, no safetensors).

Layout of a ``.safetensors`` file: 8 bytes little-endian unsigned header length n, then n
bytes of UTF-8 JSON ``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
"__metadata__": {str: str}}``, then the byte buffer; offsets are relative to the start of the
buffer, tensors are C-ordered little-endian, and the buffer is covered by the tensors without
holes or overlaps.

Reading validates all of that against the file size, so a truncated or corrupt file gives a
:class:`~ufm.bridge.errors.FormatError` naming the file and the tensor rather than a numpy or
struct traceback. ``BF16`` and ``F16`` tensors are upcast to float32 (bfloat16 is the upper half
of a float32, so the upcast is exact). Large files are memory-mapped.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from .._io import atomic_write
from .errors import FormatError

__all__ = ["read_safetensors", "write_safetensors", "to_bfloat16_bits", "from_bfloat16_bits"]

#: safetensors dtype name -> numpy dtype (little-endian); BF16 is handled separately
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"), "BF16": np.dtype("<u2"),
}
_NAMES = {np.dtype(v).newbyteorder("<").str: k for k, v in DTYPES.items() if k != "BF16"}
MAX_HEADER = 100_000_000
#: files larger than this are memory-mapped by default (``mmap="auto"``)
MMAP_THRESHOLD = 64 * 2 ** 20


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """float32 array from bfloat16 bit patterns (uint16, any shape); exact."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_bfloat16_bits(x) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float values, rounded to nearest even (NaN kept NaN)."""
    x = np.asarray(x, dtype=np.float32)
    f = np.ascontiguousarray(x).reshape(-1)
    u = f.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)   # keep a quiet NaN
    return rounded.reshape(x.shape)


def _is_int(value) -> bool:
    """A JSON integer (JSON true / false decode to bools, which Python counts as ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_mmap(mmap) -> None:
    """``mmap`` must be True, False or ``"auto"`` (any other value used to mean True)."""
    if not (isinstance(mmap, (bool, np.bool_)) or (isinstance(mmap, str) and mmap == "auto")):
        raise ValueError(f"mmap: expected True, False or 'auto', got {mmap!r}")


def read_safetensors(path, *, mmap="auto") -> tuple[dict, dict, dict]:
    """Read every tensor of a ``.safetensors`` file.

    Arguments:
        path: the file.
        mmap: True (memory-map tensors whose dtype needs no conversion), False (read into
            memory) or ``"auto"`` (map files larger than 64 MiB).

    Returns:
        (arrays, metadata, dtypes): arrays name -> numpy array (BF16 and F16 upcast to
        float32, other dtypes as stored); the ``__metadata__`` mapping with every value
        JSON-decoded when it is valid JSON (a plain string otherwise); name -> stored dtype
        name (``"BF16"``, ``"F32"``, ...).

    Raises:
        FormatError: the file is shorter than its header says, the header is not valid JSON
            or describes tensors inconsistently (unknown dtype, size not matching the shape,
            offsets outside the buffer, overlapping or leaving holes), or a ``__metadata__``
            value that is not a string; names the file and tensor.
        ValueError: ``mmap`` is not True, False or ``"auto"``.
        OSError: the file cannot be opened.
    """
    check_mmap(mmap)
    path = os.fspath(path)
    src = repr(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise FormatError(f"{src}: not a safetensors file: {size} bytes, shorter than the 8-byte header length",
                              source=path)
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise FormatError(f"{src}: corrupt or truncated safetensors file: the header claims {n} bytes but the file "
                              f"has {size} bytes in all", source=path)
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{src}: corrupt safetensors header (not UTF-8 JSON: {exc})", source=path) from None
    if not isinstance(header, dict):
        raise FormatError(f"{src}: corrupt safetensors header: expected a JSON object, got {type(header).__name__}",
                          source=path)
    meta_raw = header.pop("__metadata__", None) or {}
    if not isinstance(meta_raw, dict):
        raise FormatError(f"{src}: __metadata__ must be a JSON object of strings, got {type(meta_raw).__name__}",
                          source=path, key="__metadata__")
    metadata = {}
    for k, v in meta_raw.items():
        if not isinstance(v, str):
            # the format allows only strings here (other readers refuse anything else)
            raise FormatError(f"{src}: __metadata__[{k!r}]: expected a string (safetensors metadata maps strings to "
                              f"strings; JSON-encode other values), got {type(v).__name__} {v!r}",
                              source=path, key="__metadata__")
        try:
            metadata[k] = json.loads(v)
        except json.JSONDecodeError:
            metadata[k] = v
    buffer = size - 8 - n
    spans = []
    entries = {}
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise FormatError(f"{src}: tensor {name!r}: header entry must have dtype, shape and data_offsets, got {info!r}",
                              source=path, key=name)
        dt = info["dtype"]
        if dt not in DTYPES:
            raise FormatError(f"{src}: tensor {name!r}: unsupported dtype {dt!r} (supported: {', '.join(DTYPES)})",
                              source=path, key=name)
        shape, offs = info["shape"], info["data_offsets"]
        if (not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape)
                or not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs)):
            raise FormatError(f"{src}: tensor {name!r}: bad shape {shape!r} or data_offsets {offs!r}",
                              source=path, key=name)
        begin, end = offs
        if not 0 <= begin <= end:
            raise FormatError(f"{src}: tensor {name!r}: data_offsets {offs} must have 0 <= begin <= end",
                              source=path, key=name)
        want = int(np.prod(shape, dtype=np.int64)) * DTYPES[dt].itemsize
        if end - begin != want:
            raise FormatError(f"{src}: tensor {name!r}: data_offsets {offs} span {end - begin} bytes but dtype {dt} "
                              f"and shape {tuple(shape)} need {want}", source=path, key=name)
        if end > buffer:
            raise FormatError(f"{src}: truncated file: tensor {name!r} ends at byte {end} of the data buffer, "
                              f"which has only {buffer} bytes", source=path, key=name)
        spans.append((begin, end, name))
        entries[name] = (dt, tuple(shape), begin)
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin < pos:
            raise FormatError(f"{src}: corrupt file: tensor {name!r} overlaps the previous tensor", source=path, key=name)
        if begin > pos:
            raise FormatError(f"{src}: corrupt file: {begin - pos} unused bytes before tensor {name!r}",
                              source=path, key=name)
        pos = end
    if pos != buffer:
        raise FormatError(f"{src}: corrupt file: {buffer - pos} bytes after the last tensor are not described by "
                          "the header", source=path)
    use_mmap = (size > MMAP_THRESHOLD) if mmap == "auto" else bool(mmap)
    arrays, dtypes = {}, {}
    start = 8 + n
    with open(path, "rb") as fh:
        for name, (dt, shape, begin) in entries.items():
            npd = DTYPES[dt]
            count = int(np.prod(shape, dtype=np.int64))
            if use_mmap and dt not in ("BF16", "F16") and count > 0:
                arr = np.memmap(path, dtype=npd, mode="r", offset=start + begin, shape=shape)
            else:
                fh.seek(start + begin)
                buf = fh.read(count * npd.itemsize)
                if len(buf) != count * npd.itemsize:   # file changed under us
                    raise FormatError(f"{src}: truncated file while reading tensor {name!r}", source=path, key=name)
                arr = np.frombuffer(buf, dtype=npd, count=count).reshape(shape)
                if dt == "BF16":
                    arr = from_bfloat16_bits(arr)
                elif dt == "F16":
                    arr = arr.astype(np.float32)
                else:
                    arr = arr.astype(npd.newbyteorder("="), copy=True)
            arrays[name] = arr
            dtypes[name] = dt
    return arrays, metadata, dtypes


def write_safetensors(path, arrays: dict, metadata: dict | None = None, *, dtypes: dict | None = None) -> str:
    """Write numpy arrays as a ``.safetensors`` file, atomically (temp file + rename).

    Arguments:
        path: the file to write.
        arrays: name -> array-like (converted with ``numpy.asarray``; C order on disk).
        metadata: optional JSON-serialisable mapping stored in ``__metadata__``; strings are
            stored as they are, other values JSON-encoded (the format allows only strings there;
            :func:`read_safetensors` decodes every value that is valid JSON).
        dtypes: optional name -> stored dtype name (``"BF16"``, ``"F16"``, ``"F32"``, ``"F64"``,
            ``"I64"``, ...); default: the array's own dtype (float arrays keep their precision).

    Returns:
        The path written.

    Raises:
        ValueError: an array whose dtype has no safetensors equivalent, or an unknown name in
            ``dtypes``.
    """
    path = os.fspath(path)
    dtypes = dict(dtypes or {})
    header, blobs, offset = {}, [], 0
    for name in arrays:
        arr = np.asarray(arrays[name])
        want = dtypes.get(name)
        if want is None:
            key = arr.dtype.newbyteorder("<").str if arr.dtype.byteorder not in ("|",) else arr.dtype.str
            if key not in _NAMES:
                raise ValueError(f"arrays[{name!r}]: dtype {arr.dtype} has no safetensors equivalent")
            want = _NAMES[key]
        if want not in DTYPES:
            raise ValueError(f"dtypes[{name!r}]: unknown safetensors dtype {want!r}; expected one of {list(DTYPES)}")
        if want == "BF16":
            data = to_bfloat16_bits(arr)
        else:
            data = np.ascontiguousarray(arr, dtype=DTYPES[want])
        blob = data.tobytes(order="C")
        header[name] = {"dtype": want, "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)                        # align the buffer to 8 bytes
    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
            for blob in blobs:
                fh.write(blob)

    atomic_write(path, write)
    return path
