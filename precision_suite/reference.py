"""The float64 RMSNorm reference, computed from the decoded rounded inputs.

The reference never reads a backend's output. For a fused residual it follows the kernel
contract: ``residual_out`` is ``x + residual`` rounded once to the case dtype, and the
output normalizes that rounded sum.
"""

import concurrent.futures
import dataclasses
import math
import threading

import numpy as np

from precision_suite import fused as fused_kernels
from precision_suite.dtypes import dtype_name, finfo, round_to_dtype, to_float64
from precision_suite.metrics import FUSED_BLOCK_ELEMENTS, LazyReference, decode_float64, default_block_rows, use_fused

# The fused kernel sums squares in float64, exact only for these dtypes; float64 inputs keep
# the math.fsum path.
_FUSED_DTYPES = ("float16", "bfloat16", "float32")


@dataclasses.dataclass(frozen=True)
class Reference:
    """Float64 reference outputs of one case.

    Attributes
    ----------
    out : numpy.ndarray or RmsNormRows
        float64 normalized output, in the input's shape; from `lazy_reference`, the
        `RmsNormRows` that computes it as ``(rows, hidden)``.
    residual_out : numpy.ndarray or RmsNormRows or None
        The fused residual sum rounded to the case dtype (decoded to float64), or None.
    """

    out: np.ndarray
    residual_out: np.ndarray | None


def rms_norm_float64(x, weight, eps, block_rows=None, threads=1, fused=None):
    """Compute ``x / sqrt(mean(x**2) + eps) * weight`` over the last axis in float64.

    Parameters
    ----------
    x : numpy.ndarray
        Input of any supported dtype; decoded to float64 block by block.
    weight : numpy.ndarray
        Weight of shape ``(x.shape[-1],)``.
    eps : float
        Added to the mean square.
    block_rows : int, optional
        Rows processed per block, which bounds temporary memory; by default about
        ``metrics.BLOCK_ELEMENTS`` elements' worth of rows.
    threads : int
        Threads that process blocks in parallel. The result is the same for any value.
    fused : bool, optional
        Use the Numba kernel for float16, bfloat16 and float32 inputs; by default when
        Numba can be imported. Both paths give the same bits.

    Returns
    -------
    numpy.ndarray
        float64 array of ``x.shape``.
    """
    hidden = x.shape[-1]
    rows = x.reshape(-1, hidden)
    weight64 = to_float64(weight)
    out = np.empty(rows.shape, dtype=np.float64)
    scratch = _Scratch()
    fused = use_fused(fused, [rows.dtype], _FUSED_DTYPES)

    def normalize(start, stop):
        _reference_block(rows[start:stop], None, weight64, eps, fused, out[start:stop], None, scratch)

    _run_blocks(normalize, rows.shape[0], _block_rows(hidden, block_rows, fused), threads)
    return out.reshape(x.shape)


def _block_rows(hidden, block_rows, fused):
    """Return ``block_rows`` or the default rows per block of the chosen path."""
    if block_rows is not None:
        return block_rows
    return default_block_rows(hidden, FUSED_BLOCK_ELEMENTS if fused else None)


def _reference_block(x_rows, residual_rows, weight64, eps, fused, out, residual_out, scratch):
    """Write the reference of a block of rows to ``out`` and, with a residual, ``residual_out``.

    ``out`` may be None when only ``residual_out`` is needed. Every caller computes a block
    here, so blocks give the same bits whichever caller, block size or thread ran them.
    """
    if fused and out is not None and _fused_rows(x_rows, residual_rows, weight64, eps, out, residual_out):
        return
    if residual_rows is None:
        decoded = scratch.decode(x_rows)
        _normalize_rows(decoded, weight64, eps, x_rows.dtype != np.float64, out, scratch)
        return

    summed = scratch.decode(x_rows)
    np.add(summed, scratch.decode(residual_rows, slot=1), out=summed)
    rounded = round_to_dtype(summed, dtype_name(x_rows.dtype))
    decode_float64(rounded, residual_out)
    if out is not None:
        block = scratch.decode(rounded)
        _normalize_rows(block, weight64, eps, rounded.dtype != np.float64, out, scratch)


def _fused_rows(x_rows, residual_rows, weight64, eps, out, residual_out):
    """Write a block's reference with the Numba kernel; return False when NumPy must redo it."""
    name = dtype_name(x_rows.dtype)
    info = finfo(name)
    mantissa_bits = int(info.nmant)
    highest_exponent = int(info.maxexp) - 1
    overflow = float(info.max) + math.ldexp(1.0, highest_exponent - mantissa_bits - 1)
    bits = np.dtype(f"u{x_rows.dtype.itemsize}")
    x_bits = np.ascontiguousarray(x_rows).view(bits)
    has_residual = residual_rows is not None
    residual_bits = np.ascontiguousarray(residual_rows).view(bits) if has_residual else x_bits
    return fused_kernels.reference_rows(
        x_bits, residual_bits, has_residual, fused_kernels.DTYPE_CODES[name], weight64, float(eps), overflow,
        np.float64(info.smallest_normal).view(np.uint64), math.ldexp(1.0, 52 - mantissa_bits),
        out, out if residual_out is None else residual_out)


def _normalize_rows(block, weight64, eps, exact_squares, out, scratch):
    """Write the normalized float64 ``block`` times ``weight64`` into ``out``; ``block`` is overwritten.

    The squares of float16, bfloat16 and float32 values are summed with ``numpy.add.reduce``
    (pairwise summation), whose order the fused kernel repeats bit for bit.
    """
    hidden = block.shape[1]
    if exact_squares:
        squares = np.multiply(block, block, out=scratch.squares(block.size).reshape(block.shape))
        mean_square = np.add.reduce(squares, axis=1) / hidden
    else:
        mean_square = _float64_mean_square(block)
    inverse_rms = 1.0 / np.sqrt(mean_square + eps)
    np.multiply(block, inverse_rms[:, None], out=block)
    np.multiply(block, weight64, out=out)


class _Scratch(threading.local):
    """Per-thread float64 buffers (``slot`` 0 and 1) for decoding blocks, reused across blocks."""

    def decode(self, block, slot=0):
        if getattr(self, "size", 0) < block.size:
            self.size = block.size
            self.floats = [np.empty(block.size, np.float64) for _ in range(2)]
            self.words = np.empty(block.size, np.uint32)
        return decode_float64(np.ascontiguousarray(block), self.floats[slot][:block.size], self.words)

    def squares(self, size):
        if getattr(self, "squares_size", 0) < size:
            self.squares_size = size
            self.squares_buffer = np.empty(size, np.float64)
        return self.squares_buffer[:size]


def _run_blocks(function, rows, block_rows, threads):
    """Call ``function(start, stop)`` for each block of rows, in ``threads`` threads."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be at least 1, got {block_rows}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")

    starts = range(0, rows, block_rows)
    if threads == 1:
        for start in starts:
            function(start, min(rows, start + block_rows))
        return
    with concurrent.futures.ThreadPoolExecutor(threads) as executor:
        # list() re-raises the first exception of a block in the calling thread.
        list(executor.map(lambda start: function(start, min(rows, start + block_rows)), starts))


def _float64_mean_square(block):
    """Return the mean square of float64 rows with a correctly rounded sum of the squares.

    Squares of float16, bfloat16 and float32 values are exact in float64 and their float64
    sum errs by far less than an output ulp. Squares of float64 values are not, so the sum
    uses ``math.fsum``: each square errs by at most 0.5 ulp and all are positive, so the mean
    square stays within about 1 ulp for any hidden size, and the reference within a few ulp.
    """
    sums = np.fromiter((math.fsum(row) for row in block * block), dtype=np.float64, count=block.shape[0])
    return sums / block.shape[1]


def compute_reference(spec, inputs, block_rows=None, threads=1, fused=None):
    """Return the float64 `Reference` for a case's rounded inputs.

    With a residual, the rounded sum and the output are made in one pass over row blocks,
    so no full-size float64 temporary beyond ``out`` and ``residual_out`` exists.
    ``block_rows``, ``threads`` and ``fused`` are as in `rms_norm_float64` and never change
    the result.
    """
    if inputs.residual is None:
        out = rms_norm_float64(inputs.x, inputs.weight, spec.eps, block_rows=block_rows, threads=threads,
                               fused=fused)
        return Reference(out=out, residual_out=None)

    hidden = inputs.x.shape[-1]
    x_rows = inputs.x.reshape(-1, hidden)
    residual_rows = inputs.residual.reshape(-1, hidden)
    weight64 = to_float64(inputs.weight)
    out = np.empty(x_rows.shape, dtype=np.float64)
    residual_out = np.empty(x_rows.shape, dtype=np.float64)
    scratch = _Scratch()
    fused = use_fused(fused, [x_rows.dtype], _FUSED_DTYPES)

    def add_and_normalize(start, stop):
        _reference_block(x_rows[start:stop], residual_rows[start:stop], weight64, spec.eps, fused, out[start:stop],
                         residual_out[start:stop], scratch)

    _run_blocks(add_and_normalize, x_rows.shape[0], _block_rows(hidden, block_rows, fused), threads)
    return Reference(out=out.reshape(inputs.x.shape), residual_out=residual_out.reshape(inputs.x.shape))


class RmsNormRows(LazyReference):
    """The float64 reference of one RMSNorm output, computed for the row blocks that `measure` requests.

    With the fused kernels `measure_fused` computes each reference row in a row-sized
    buffer and measures it at once, so the float64 reference never reaches memory. Other
    blocks are computed by the same block function as `compute_reference`, so every path
    gives its bits.

    Parameters
    ----------
    x_rows, residual_rows : numpy.ndarray
        Inputs as ``(rows, hidden)``; ``residual_rows`` is None without a residual.
    weight64 : numpy.ndarray
        The weight decoded to float64.
    eps : float
        Added to the mean square.
    output : str
        ``"out"`` for the normalized output, ``"residual_out"`` for the rounded sum.
    fused : bool
        Whether the Numba kernels may compute and measure the rows.
    """

    def __init__(self, x_rows, residual_rows, weight64, eps, output, fused):
        if output not in ("out", "residual_out"):
            raise ValueError(f"output must be 'out' or 'residual_out', got {output!r}")
        if output == "residual_out" and residual_rows is None:
            raise ValueError("output 'residual_out' needs residual rows, got None")
        self.x_rows = x_rows
        self.residual_rows = residual_rows
        self.weight64 = weight64
        self.eps = float(eps)
        self.output = output
        self.fused = fused
        self.shape = x_rows.shape

    def rows(self, selection):
        residual_rows = None if self.residual_rows is None else self.residual_rows[selection]
        return RmsNormRows(self.x_rows[selection], residual_rows, self.weight64, self.eps, self.output, self.fused)

    def __array__(self, dtype=None, copy=None):
        residual_out = np.empty(self.shape) if self.residual_rows is not None else None
        out = np.empty(self.shape) if self.output == "out" else None
        _reference_block(self.x_rows, self.residual_rows, self.weight64, self.eps, self.fused, out, residual_out,
                         _thread_scratch)
        result = out if self.output == "out" else residual_out
        return result if dtype is None else result.astype(dtype, copy=False)

    def measure_fused(self, actual_bits, constants, budget, thresholds, outputs):
        name = dtype_name(self.x_rows.dtype)
        if not self.fused or fused_kernels.DTYPE_CODES[name] != constants.code:
            return False
        bits = np.dtype(f"u{self.x_rows.dtype.itemsize}")
        x_bits = np.ascontiguousarray(self.x_rows).view(bits)
        has_residual = self.residual_rows is not None
        residual_bits = np.ascontiguousarray(self.residual_rows).view(bits) if has_residual else x_bits
        return fused_kernels.measure_rms_norm_rows(
            actual_bits, constants.code, x_bits, residual_bits, has_residual, self.output == "out", self.weight64,
            self.eps, budget, constants.mantissa_bits, constants.overflow, constants.smallest_normal_bits,
            *thresholds, *outputs)

    def pairs_with(self, other):
        return (isinstance(other, RmsNormRows) and self.fused and other.fused and self.output == "out"
                and other.output == "residual_out" and self.residual_rows is not None and _same_rows(self.x_rows, other.x_rows)
                and _same_rows(self.residual_rows, other.residual_rows))

    def measure_fused_pair(self, other, actual_bits, other_actual_bits, constants, budget, other_budget,
                           thresholds, results, other_results):
        name = dtype_name(self.x_rows.dtype)
        if not self.pairs_with(other) or fused_kernels.DTYPE_CODES[name] != constants.code:
            return False
        bits = np.dtype(f"u{self.x_rows.dtype.itemsize}")
        return fused_kernels.measure_rms_norm_pair_rows(
            actual_bits, other_actual_bits, constants.code, np.ascontiguousarray(self.x_rows).view(bits),
            np.ascontiguousarray(self.residual_rows).view(bits), self.weight64, self.eps, budget, other_budget,
            constants.mantissa_bits, constants.overflow, constants.smallest_normal_bits, *thresholds,
            tuple(results), tuple(other_results))


def _same_rows(first, second):
    """Return whether two arrays are views of the same memory with the same layout."""
    return (first.__array_interface__["data"][0] == second.__array_interface__["data"][0]
            and first.shape == second.shape and first.strides == second.strides)


_thread_scratch = _Scratch()


def lazy_reference(spec, inputs, fused=None):
    """Return the `Reference` of a case as `RmsNormRows`, which `metrics.measure` computes block by block.

    No float64 array of the case's size is made; ``numpy.asarray`` of a field computes it
    in full. ``fused`` is as in `rms_norm_float64` and never changes the values.
    """
    hidden = inputs.x.shape[-1]
    x_rows = inputs.x.reshape(-1, hidden)
    residual_rows = None if inputs.residual is None else inputs.residual.reshape(-1, hidden)
    weight64 = to_float64(inputs.weight)
    fused = use_fused(fused, [x_rows.dtype], _FUSED_DTYPES)
    out = RmsNormRows(x_rows, residual_rows, weight64, spec.eps, "out", fused)
    if residual_rows is None:
        return Reference(out=out, residual_out=None)
    return Reference(out=out, residual_out=RmsNormRows(x_rows, residual_rows, weight64, spec.eps, "residual_out",
                                                       fused))
