"""Argument checking shared by the public constructors.

Every public entry point funnels user input through these helpers so that a bad argument
always produces the same kind of message: the argument's name, what was expected, and what
was found.
"""

from __future__ import annotations

import numbers
import os

import numpy as np


def as_float_array(value, name: str, *, ndim: int | tuple[int, ...] | None = None,
                   shape: tuple | None = None, finite: bool = True) -> np.ndarray:
    """Convert ``value`` to a C-contiguous float64 array and check its rank, shape, finiteness.

    Arguments:
        value: any array-like (lists, numpy arrays, objects with ``__array__``).
        name: the argument name used in error messages.
        ndim: required number of dimensions (or a tuple of allowed ones).
        shape: required shape; ``None`` entries match any size.
        finite: reject NaN and infinities.

    Raises:
        TypeError: ``value`` is not numeric.
        ValueError: wrong rank, shape, or non-finite entries.
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"{name}: expected an array-like of numbers, got {type(value).__name__}") from exc
    if arr.dtype.kind != "f":       # real floats (the usual case) pass both tests; each costs ~0.4 µs
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name}: expected an array of real numbers, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"{name}: expected real numbers, got complex dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64, order="C")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{k}-D" for k in allowed)
            raise ValueError(f"{name}: expected a {want} array, got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    if finite and arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name}: expected finite values, found {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    return arr


def as_int_array(value, name: str, *, ndim: int | None = None) -> np.ndarray:
    """Convert ``value`` to an int64 array, refusing non-integral numbers."""
    arr = np.asarray(value)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name}: expected integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: expected integer values, got non-integral entries")
        if arr.size and np.max(np.abs(arr)) >= 2.0 ** 63:
            raise ValueError(f"{name}: expected integers below 2^63, got {np.max(np.abs(arr)):.3g}")
    arr = np.asarray(arr, dtype=np.int64, order="C")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return arr


def as_nonnegative(value, name: str) -> float:
    """A finite real number >= 0."""
    x = as_real(value, name)
    if x < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {x!r}")
    return x


def as_positive(value, name: str) -> float:
    """A finite real number > 0."""
    x = as_real(value, name)
    if not x > 0:
        raise ValueError(f"{name}: expected a number > 0, got {x!r}")
    return x


def as_real(value, name: str) -> float:
    """A finite real scalar (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.number):
            value = value.item()
        else:
            raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    x = float(value)
    if not np.isfinite(x):
        raise ValueError(f"{name}: expected a finite number, got {x!r}")
    return x


def as_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (bool and non-integral floats refused)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def check_choice(value, name: str, choices) -> str:
    """A string among ``choices``."""
    if not isinstance(value, str) or value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {opts}, got {value!r}")
    return value


def check_symmetric_psd(theta: np.ndarray, name: str, *, rtol: float = 1e-10) -> None:
    """Raise unless ``theta`` is symmetric positive semi-definite (to rounding)."""
    scale = max(1.0, float(np.max(np.abs(theta)))) if theta.size else 1.0
    asym = float(np.max(np.abs(theta - theta.T))) if theta.size else 0.0
    if asym > rtol * scale * 10:
        raise ValueError(f"{name}: expected a symmetric matrix, max |Θ − Θᵀ| = {asym:.3g}")
    lo = float(np.linalg.eigvalsh(0.5 * (theta + theta.T)).min()) if theta.size else 0.0
    if lo < -1e-9 * scale * theta.shape[0]:
        raise ValueError(f"{name}: expected a positive semi-definite matrix, smallest eigenvalue {lo:.3g}")


def readonly(arr: np.ndarray) -> np.ndarray:
    """A read-only view, so that frozen records cannot be mutated through their arrays."""
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


def as_rng(seed, name: str = "seed") -> np.random.Generator:
    """``numpy.random.default_rng(seed)``, with a message naming the argument when it refuses.

    Arguments:
        seed: None, an integer >= 0, a sequence of them, a ``SeedSequence``, a bit generator or
            a ``Generator``.
    Raises:
        TypeError / ValueError: anything else (a string, a negative or non-integral number).
    """
    if isinstance(seed, (str, bytes)):
        raise TypeError(f"{name}: expected None, an integer >= 0 or a sequence of them, got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except TypeError:
        raise TypeError(f"{name}: expected None, an integer >= 0 or a sequence of them, got {seed!r}") from None
    except ValueError:
        raise ValueError(f"{name}: expected None, an integer >= 0 or a sequence of them, got {seed!r}") from None


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get without swapping: Linux's MemAvailable, else the
    physical memory, or None when the system does not say."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX systems
        return None


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{int(n)} bytes"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


#: allocations this small are not checked against the available memory
ALWAYS_FITS = 16 * 2 ** 20


def fits_in_memory(nbytes: float) -> bool:
    """Whether an allocation of ``nbytes`` fits in the memory available (True when that is
    unknown, and without looking for sizes up to :data:`ALWAYS_FITS`)."""
    if nbytes <= ALWAYS_FITS:
        return True     # reading /proc/meminfo costs ~20 µs, a tenth of a small solve's Python side
    limit = available_memory()
    return limit is None or nbytes <= limit


def check_memory(nbytes: float, name: str, what: str) -> None:
    """Refuse, before allocating, arrays larger than the memory available on this machine.

    numpy's ``zeros`` succeeds lazily for almost any size on Linux (memory is overcommitted),
    and the process then swaps or is killed while filling it: a ValueError up front says which
    argument asked for too much.

    Arguments:
        nbytes: the estimated size of the allocation.
        name: the argument(s) that set the size, named in the message.
        what: what would be allocated ("saving gram_H (N×N) at 10⁶ times", ...).
    Raises:
        ValueError: ``nbytes`` exceeds the available memory (:func:`available_memory`).
    """
    if not fits_in_memory(nbytes):
        limit = available_memory()
        raise ValueError(f"{name}: {what} needs {_bytes(nbytes)}, more than the {_bytes(limit)} of memory available "
                         "on this machine")


def check_instance(value, name: str, cls, what: str):
    """``value`` itself if it is a ``cls``; else a TypeError naming the argument and the type found."""
    if not isinstance(value, cls):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__}")
    return value


def is_sequence(value) -> bool:
    """A list-like of items: iterable, not a string, bytes, mapping or 0-d array."""
    from collections.abc import Mapping
    if isinstance(value, (str, bytes, Mapping)):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    return hasattr(value, "__iter__")
