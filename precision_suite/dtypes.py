"""Dtype names, their NumPy types and correct rounding from float64.

bfloat16 comes from ml_dtypes, which rounds float64 to bfloat16 directly with
round-to-nearest-even (no double rounding through float32), as NumPy does for float16.
"""

import ml_dtypes
import numpy as np

from precision_suite.errors import SpecError

DTYPES = ("float16", "bfloat16", "float32", "float64")

_NUMPY_DTYPES = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}

# Unsigned integer types of the same width, for bit patterns and Paddle's bfloat16 transfer.
_BITS_DTYPES = {
    "float16": np.dtype(np.uint16),
    "bfloat16": np.dtype(np.uint16),
    "float32": np.dtype(np.uint32),
    "float64": np.dtype(np.uint64),
}


def check_dtype(name):
    """Return ``name`` if it is a supported dtype name, else raise `SpecError`."""
    if name not in _NUMPY_DTYPES:
        raise SpecError(
            f"dtype: invalid value {name!r}; expected one of {', '.join(DTYPES)}"
        )
    return name


def numpy_dtype(name):
    """Return the NumPy dtype for a dtype name (ml_dtypes' type for bfloat16)."""
    return _NUMPY_DTYPES[check_dtype(name)]


def dtype_name(dtype):
    """Return the dtype name of a NumPy dtype, or raise `SpecError` for other dtypes."""
    dtype = np.dtype(dtype)
    for name, candidate in _NUMPY_DTYPES.items():
        if candidate == dtype:
            return name
    raise SpecError(f"dtype: unsupported NumPy dtype {dtype}; expected one of {', '.join(DTYPES)}")


def bits_dtype(name):
    """Return the unsigned integer dtype with the width of ``name``."""
    return _BITS_DTYPES[check_dtype(name)]


def finfo(name):
    """Return machine limits for a dtype name; ``ml_dtypes.finfo`` also covers bfloat16."""
    return ml_dtypes.finfo(numpy_dtype(name))


def round_to_dtype(values, name):
    """Round float64 values to ``name`` with round-to-nearest-even, once.

    Parameters
    ----------
    values : array_like
        Values in float64 (or exactly convertible to it).
    name : str
        Target dtype name.

    Returns
    -------
    numpy.ndarray
        The rounded array in the target dtype. Values beyond the largest finite value
        round to infinity, as IEEE 754 prescribes.
    """
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(numpy_dtype(name))


def to_float64(values):
    """Decode an array of any supported dtype into float64 exactly."""
    return np.asarray(values).astype(np.float64)
