"""ULP distance and the per-case error record.

Notes
-----
ULP error of an element is ``|actual - reference| / spacing(reference)``, where ``reference``
is the exact (float64) value and ``spacing`` is the gap between adjacent values of the output
dtype in the binade that contains ``|reference|``:

- Below the smallest normal (subnormals and zero) the spacing is the smallest subnormal.
- At and beyond the largest finite value the spacing of the top binade is used.
- Signed zeros are equal: ``+0`` against ``-0`` is 0 ulp.
- Infinities and NaN are settled first, against the reference rounded to the output dtype:
  the same infinity, or NaN against NaN, is 0 ulp; any other pairing with a non-finite value
  is a non-finite mismatch with infinite ulp error, counted on its own.

`ulp_distance` is the other measure: the number of representable values between two arrays
of the same dtype, counted on widened integers so float16 and bfloat16 never wrap.

`measure` works on blocks of whole rows, optionally in threads, and its record does not
depend on the block size, the thread count or whether the Numba kernels of
`precision_suite.fused` ran: maxima and counts are exact, the mean adds per-row pairwise
sums with ``math.fsum``, the 99th percentile is found exactly from the elements above a
threshold, and ties among the worst elements go to the lowest index.
"""

import concurrent.futures
import dataclasses
import functools
import itertools
import math
import threading

import numpy as np

from precision_suite import fused as fused_kernels
from precision_suite.dtypes import DTYPES, bits_dtype, dtype_name, finfo, round_to_dtype, to_float64

# Elements per block when measuring: each float64 temporary of a block is 512 KiB, which
# keeps a block's working set in a core's L2 cache on current x86 servers.
BLOCK_ELEMENTS = 1 << 16
# Elements per block for the fused kernels, which keep only row-sized temporaries: larger
# blocks cut the Python work per block, and a block's ULP candidates take at most 8 MiB.
FUSED_BLOCK_ELEMENTS = 1 << 20
# How many of the worst elements a record keeps for messages and reports.
WORST_COUNT = 5
# The quantile reported as p99_ulp_error.
P99_QUANTILE = 0.99
# Outputs with more elements than this first measure an evenly spaced sample of about
# PILOT_ELEMENTS elements, whose PILOT_QUANTILE value becomes the lower bound for the 99th
# percentile candidates; smaller outputs keep every ULP value as a candidate.
PILOT_MIN_ELEMENTS = 1 << 20
PILOT_ELEMENTS = 1 << 16
PILOT_QUANTILE = 0.98

_SIGN_BIT = np.uint64(1 << 63)
_EXPONENT_BITS = np.uint64(0x7FF << 52)


def spacing(reference, name):
    """Return the spacing of dtype ``name`` at each float64 ``reference`` value.

    Parameters
    ----------
    reference : numpy.ndarray
        float64 values; infinities and NaN give NaN.
    name : str
        Output dtype name.

    Returns
    -------
    numpy.ndarray
        float64 spacing, a power of two.
    """
    info = finfo(name)
    lowest_exponent = int(info.minexp)
    highest_exponent = int(info.maxexp) - 1
    mantissa_bits = int(info.nmant)

    magnitude = np.abs(reference)
    with np.errstate(invalid="ignore"):
        _, exponent = np.frexp(magnitude)
    # frexp puts 0 in binade -1; zero belongs with the subnormals, at the lowest exponent.
    exponent = np.where(magnitude == 0, lowest_exponent, exponent.astype(np.int64) - 1)
    exponent = np.clip(exponent, lowest_exponent, highest_exponent)
    result = np.ldexp(1.0, exponent - mantissa_bits)
    return np.where(np.isfinite(reference), result, np.nan)


def nonfinite_mismatch(actual, rounded_reference):
    """Return a bool mask of elements where exactly one side is non-finite or the infinities differ.

    Both arguments are float64; ``rounded_reference`` is the reference rounded to the output
    dtype and decoded, so a reference that overflows the dtype counts as infinite.
    """
    both_nan = np.isnan(actual) & np.isnan(rounded_reference)
    finite_actual = np.isfinite(actual)
    finite_reference = np.isfinite(rounded_reference)
    with np.errstate(invalid="ignore"):
        same_infinity = ~finite_actual & ~finite_reference & (actual == rounded_reference)
    one_side = finite_actual != finite_reference
    both_nonfinite_differ = ~finite_actual & ~finite_reference & ~same_infinity & ~both_nan
    return one_side | both_nonfinite_differ


def ulp_error(actual, reference, name):
    """Return the elementwise ULP error of ``actual`` against the exact ``reference``.

    Parameters
    ----------
    actual : numpy.ndarray
        Output in dtype ``name`` (or float64 values of it).
    reference : numpy.ndarray
        Exact values in float64, same shape.
    name : str
        Output dtype name, which sets the spacing.

    Returns
    -------
    numpy.ndarray
        float64 ULP error in ``actual``'s shape; ``inf`` at non-finite mismatches and 0 where
        both sides are the same infinity or both NaN. See the module Notes.
    """
    actual = to_float64(actual)
    reference = np.asarray(reference, dtype=np.float64)
    rounded = to_float64(round_to_dtype(reference, name))

    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(actual - reference) / spacing(reference, name)
    settled = ~np.isfinite(actual) | ~np.isfinite(rounded)
    error = np.where(settled, 0.0, error)
    return np.where(nonfinite_mismatch(actual, rounded), np.inf, error)


def _ordered_integers(values):
    """Map float bits to signed integers that increase with the float value; -0 maps to 0."""
    name = dtype_name(values.dtype)
    width = bits_dtype(name).itemsize * 8
    bits = np.ascontiguousarray(values).view(bits_dtype(name)).astype(np.uint64)
    sign_mask = np.uint64(1 << (width - 1))
    magnitude = (bits & ~sign_mask).astype(np.int64)
    return np.where(bits & sign_mask, -magnitude, magnitude)


def ulp_distance(first, second):
    """Return the number of representable values between two arrays of the same dtype.

    Parameters
    ----------
    first, second : numpy.ndarray
        Arrays of one of the supported dtypes, broadcastable to each other.

    Returns
    -------
    numpy.ndarray
        float64 distances: 0 for equal values and for ``+0`` against ``-0``, 1 between the
        largest finite value and infinity, NaN where either side is NaN. Exact up to 2**53.

    Raises
    ------
    TypeError
        When the dtypes differ.
    """
    first = np.asarray(first)
    second = np.asarray(second)
    if first.dtype != second.dtype:
        raise TypeError(f"ulp_distance needs one dtype, got {first.dtype} and {second.dtype}; "
                        "cast one side first")

    ordered_first = _ordered_integers(first)
    ordered_second = _ordered_integers(second)
    same_sign = (ordered_first >= 0) == (ordered_second >= 0)
    # Opposite signs: the sum of magnitudes can pass int64 for float64, so add in float64.
    across_zero = np.abs(ordered_first).astype(np.float64) + np.abs(ordered_second).astype(np.float64)
    within = np.abs(ordered_first - np.where(same_sign, ordered_second, 0)).astype(np.float64)
    distance = np.where(same_sign, within, across_zero)

    nan = np.isnan(to_float64(first)) | np.isnan(to_float64(second))
    return np.where(nan, np.nan, distance)


def bitwise_equal(first, second):
    """Return a bool mask of elements whose bit patterns are identical (NaN payloads included)."""
    first = np.ascontiguousarray(first)
    second = np.ascontiguousarray(second)
    bits = bits_dtype(dtype_name(first.dtype))
    return first.view(bits) == second.view(bits)


class LazyReference:
    """A float64 reference of ``(rows, hidden)`` values that computes row blocks on request.

    `measure` accepts one in place of a reference array, so a large case never stores its
    full float64 reference. Subclasses implement `rows` and `__array__`, and may implement
    `measure_fused` to measure a block without materializing it.
    """

    shape = (0, 0)

    def rows(self, selection):
        """Return the lazy reference of the rows picked by a slice or an integer index array."""
        raise NotImplementedError

    def __getitem__(self, key):
        """Index like the ``(rows, hidden)`` array: a row selection, or ``(row, column)`` for one value."""
        if isinstance(key, tuple):
            row, column = key
            return np.asarray(self.rows(slice(row, row + 1)))[0, column]
        return self.rows(key)

    def __array__(self, dtype=None, copy=None):
        """Compute the reference rows as a float64 array of shape ``(rows, hidden)``."""
        raise NotImplementedError

    def measure_fused(self, actual_bits, constants, budget, thresholds, results):
        """Measure a block in a Numba kernel that computes each reference row in place.

        ``thresholds`` is ``(collect, count, worst)`` and ``results`` the kernel's result
        arrays, both in `fused.measure_rows` order. Returns False when the block must be
        measured against `__array__` instead.
        """
        return False

    def pairs_with(self, other):
        """Return whether `measure_fused_pair` can measure this reference's rows with ``other``'s."""
        return False

    def measure_fused_pair(self, other, actual_bits, other_actual_bits, constants, budget, other_budget,
                           thresholds, results, other_results):
        """Measure a block of this output and the paired ``other`` in one kernel, like `measure_fused`."""
        return False


@dataclasses.dataclass(frozen=True)
class WorstElement:
    """One element with a large ULP error.

    Attributes
    ----------
    output : str
        ``"out"`` or ``"residual_out"``.
    index : tuple of int
        Index in that output's shape.
    actual, reference : float
        Backend value and float64 reference value.
    ulp_error, abs_error, rel_error : float
        Errors at that element.
    """

    output: str
    index: tuple
    actual: float
    reference: float
    ulp_error: float
    abs_error: float
    rel_error: float


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    """Error statistics of one backend on one case, over all compared outputs.

    Relative error uses ``max(|reference|, smallest_normal)`` of the output dtype as its
    denominator, so elements near zero are measured against that floor instead of dividing
    by zero. Non-finite mismatches have infinite abs, rel and ULP error, so they show in the
    maxima and p99, while ``mean_ulp_error`` averages the finite errors only.
    ``over_budget`` counts elements above their own output's budget.
    """

    elements: int
    max_abs_error: float
    max_rel_error: float
    max_ulp_error: float
    mean_ulp_error: float
    p99_ulp_error: float
    frac_over_budget: float
    ulp_budget: float
    bitwise_equal_frac: float
    nonfinite_mismatches: int
    worst: tuple
    over_budget: int = 0

    def table_fields(self):
        """Return the record's columns for a cases table row."""
        worst = self.worst[0] if self.worst else None
        return {
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "max_ulp_error": self.max_ulp_error,
            "mean_ulp_error": self.mean_ulp_error,
            "p99_ulp_error": self.p99_ulp_error,
            "frac_over_budget": self.frac_over_budget,
            "ulp_budget": self.ulp_budget,
            "bitwise_equal_frac": self.bitwise_equal_frac,
            "nonfinite_mismatches": self.nonfinite_mismatches,
            "worst_output": worst.output if worst else "",
            "worst_index": str(list(worst.index)) if worst else "",
            "actual_at_worst": worst.actual if worst else np.nan,
            "reference_at_worst": worst.reference if worst else np.nan,
        }


def default_block_rows(hidden, elements=None):
    """Return the rows per block that keep a block near ``elements`` elements (at least one row).

    ``elements`` defaults to `BLOCK_ELEMENTS`.
    """
    return max(1, (BLOCK_ELEMENTS if elements is None else elements) // max(1, hidden))


def use_fused(requested, dtypes, supported=DTYPES):
    """Return whether to run the Numba kernels for arrays of ``dtypes``.

    Parameters
    ----------
    requested : bool or None
        None picks the kernels when Numba is importable and every dtype is ``supported``;
        False picks NumPy; True demands the kernels.
    dtypes : iterable of numpy.dtype
        Dtypes of the arrays the kernels would read.
    supported : tuple of str
        Dtype names the caller's kernel handles.

    Raises
    ------
    ValueError
        When ``requested`` is True and Numba is missing or a dtype is not supported.
    """
    names = [dtype_name(dtype) for dtype in dtypes]
    possible = fused_kernels.AVAILABLE and all(name in supported for name in names)
    if requested is None:
        return possible
    if requested and not possible:
        reason = "Numba is not importable (or NUMBA_DISABLE_JIT is set)" if not fused_kernels.AVAILABLE \
            else f"the kernel handles {', '.join(supported)}, got {', '.join(names)}"
        raise ValueError(f"fused=True is not possible: {reason}; pass fused=None or False")
    return bool(requested)


def decode_float64(values, out, scratch=None):
    """Decode an array of a supported dtype into the float64 array ``out`` exactly.

    bfloat16 is widened through its bit pattern (the top half of a float32), which is several
    times faster than ml_dtypes' element-wise cast and gives the same values.

    Parameters
    ----------
    values : numpy.ndarray
        C-contiguous input of any supported dtype.
    out : numpy.ndarray
        float64 array of ``values.size`` elements.
    scratch : numpy.ndarray, optional
        uint32 array of at least ``values.size`` elements for the bfloat16 path.

    Returns
    -------
    numpy.ndarray
        ``out``, reshaped to ``values.shape``.
    """
    out = out.reshape(values.shape)
    if dtype_name(values.dtype) == "bfloat16":
        widened = np.empty(values.shape, np.uint32) if scratch is None else scratch[:values.size].reshape(values.shape)
        np.left_shift(values.view(np.uint16), 16, out=widened, dtype=np.uint32)
        # Signalling NaNs become quiet NaNs here, as in ml_dtypes' cast; that is no error.
        with np.errstate(invalid="ignore"):
            np.copyto(out, widened.view(np.float32))
    else:
        np.copyto(out, values)
    return out


@dataclasses.dataclass(frozen=True)
class _DtypeConstants:
    """Bit patterns and limits of one output dtype, for the fast path of a block."""

    smallest_normal_bits: np.uint64
    spacing_scale: float
    overflow: float
    rounds_in_float64: bool
    mantissa_bits: int
    code: int

    @classmethod
    @functools.lru_cache(maxsize=None)
    def of(cls, name):
        info = finfo(name)
        mantissa_bits = int(info.nmant)
        highest_exponent = int(info.maxexp) - 1
        smallest_normal = np.float64(info.smallest_normal)
        # Values at or beyond max + spacing / 2 round to infinity; float64 itself has no such bound.
        if name == "float64":
            overflow = math.inf
        else:
            overflow = float(info.max) + math.ldexp(1.0, highest_exponent - mantissa_bits - 1)
        return cls(
            smallest_normal_bits=smallest_normal.view(np.uint64),
            spacing_scale=math.ldexp(1.0, -mantissa_bits),
            overflow=overflow,
            rounds_in_float64=mantissa_bits <= 50,
            mantissa_bits=mantissa_bits,
            code=fused_kernels.DTYPE_CODES[name],
        )


@dataclasses.dataclass
class _BlockStats:
    """Statistics of one block of rows; `measure` merges them in block order."""

    elements: int
    max_ulp: float
    max_abs: float
    max_rel: float
    equal: int
    nonfinite: int
    over_budget: int
    row_sums: np.ndarray
    p99_threshold: float
    p99_values: np.ndarray
    worst: list
    above_count_threshold: int
    at_count_threshold: int


class _Scratch(threading.local):
    """Per-thread reusable buffers, so blocks do not allocate (and page-fault) their temporaries."""

    def buffers(self, size):
        if getattr(self, "size", 0) < size:
            self.size = size
            self.floats = [np.empty(size, np.float64) for _ in range(4)]
            self.words = [np.empty(size, np.uint64) for _ in range(2)]
            self.halves = np.empty(size, np.uint32)
            self.flags = np.empty(size, np.bool_)
        return self

    def candidates(self, size, slot=0):
        """Return candidate buffer ``slot`` (0 or 1) of at least ``size`` float64 values."""
        if getattr(self, "candidates_size", 0) < size:
            self.candidates_size = size
            self.candidates_buffers = [None, None]
        if self.candidates_buffers[slot] is None:
            self.candidates_buffers[slot] = np.empty(self.candidates_size, np.float64)
        return self.candidates_buffers[slot]


class _SharedThresholds:
    """Thresholds raised as blocks merge in order; a block reads them when it starts.

    A block that starts before an earlier block merged reads a lower threshold and returns more
    candidates than needed, never fewer, so the merged result stays exact. ``count`` stays
    fixed for a pass: blocks count the ULP values above and at it.
    """

    def __init__(self, count=-math.inf):
        self.count = count
        self.p99 = count
        self.worst = -math.inf


def _fast_block(actual, reference, constants, scratch):
    """Return ``(ulp, abs_error, rel_error, equal_count)`` of a block whose values are all finite.

    Returns None when an actual or reference value is non-finite or the reference rounds to
    infinity in the output dtype; `_general_block` settles those. The spacing comes from the
    reference's exponent bits and matches `spacing` bit for bit on finite values.
    """
    size = actual.size
    buffers = scratch.buffers(size)
    reference_bits = reference.view(np.uint64)

    magnitude_bits = np.bitwise_and(reference_bits, ~_SIGN_BIT, out=buffers.words[0][:size])
    magnitude = magnitude_bits.view(np.float64)
    if not magnitude.max() < constants.overflow:
        return None

    decoded = decode_float64(actual, buffers.floats[0][:size], buffers.halves)
    abs_error = np.subtract(decoded, reference, out=buffers.floats[1][:size])
    np.abs(abs_error, out=abs_error)
    if not abs_error.max() < math.inf:
        return None

    # Non-negative float64 bit patterns order like their values, so integer maximum clamps.
    denominator_bits = np.maximum(magnitude_bits, constants.smallest_normal_bits, out=buffers.words[1][:size])
    spacing_values = np.bitwise_and(denominator_bits, _EXPONENT_BITS, out=buffers.floats[2][:size].view(np.uint64))
    spacing_values = spacing_values.view(np.float64)
    np.multiply(spacing_values, constants.spacing_scale, out=spacing_values)
    ulp = np.divide(abs_error, spacing_values, out=buffers.floats[3][:size])
    rel_error = np.divide(abs_error, denominator_bits.view(np.float64), out=denominator_bits.view(np.float64))

    decoded_bits = decoded.view(np.uint64)
    if constants.rounds_in_float64:
        # Adding and removing 2**52 spacings rounds |reference| to the output dtype in float64
        # (round to nearest even), so no slow cast to float16 or bfloat16 is needed.
        offset = np.multiply(spacing_values, 2.0**52, out=spacing_values)
        np.add(magnitude, offset, out=magnitude)
        np.subtract(magnitude, offset, out=magnitude)
        sign_bits = np.bitwise_and(reference_bits, _SIGN_BIT, out=offset.view(np.uint64))
        np.bitwise_or(magnitude_bits, sign_bits, out=magnitude_bits)
        equal = np.equal(magnitude_bits, decoded_bits, out=buffers.flags[:size])
    else:
        equal = np.equal(reference_bits, decoded_bits, out=buffers.flags[:size])
    return ulp, abs_error, rel_error, int(np.count_nonzero(equal))


def _general_block(actual, reference, name):
    """Return ``(ulp, abs_error, rel_error, equal_count)`` of a block by the module Notes' rules."""
    floor = float(finfo(name).smallest_normal)
    ulp = ulp_error(actual, reference, name)

    with np.errstate(invalid="ignore", over="ignore"):
        abs_error = np.abs(to_float64(actual) - reference)
    abs_error = np.where(np.isinf(ulp), np.inf, np.where(ulp == 0, 0.0, abs_error))
    with np.errstate(invalid="ignore"):
        rel_error = abs_error / np.maximum(np.abs(reference), floor)
    equal = int(np.count_nonzero(bitwise_equal(actual, round_to_dtype(reference, name))))
    return ulp, abs_error, rel_error, equal


def _largest_with_lowest_index(values, count):
    """Return positions into ``values`` of the ``count`` largest, ties broken by lower index."""
    if values.size <= count:
        return np.arange(values.size)
    cutoff = np.partition(values, values.size - count)[values.size - count]
    above = np.flatnonzero(values > cutoff)
    at_cutoff = np.flatnonzero(values == cutoff)[:count - above.size]
    return np.concatenate([above, at_cutoff])


def _fused_results(rows, size, scratch, slot=0):
    """Return the result arrays of a fused kernel, in `fused.measure_rows` order."""
    return (scratch.candidates(size, slot), np.empty(rows), np.empty(WORST_COUNT), np.empty(WORST_COUNT, np.int64),
            np.empty(WORST_COUNT), np.empty(WORST_COUNT), np.empty(WORST_COUNT), np.empty(3), np.empty(6, np.int64))


def _fused_stats(elements, p99_threshold, results):
    """Build the `_BlockStats` of a block from a fused kernel's result arrays."""
    candidates, row_sums, worst_ulp, worst_position, worst_abs, worst_rel, worst_reference, maxima, counts = results
    kept = int(counts[fused_kernels.WORST])
    return _BlockStats(
        elements=elements,
        max_ulp=float(maxima[fused_kernels.MAX_ULP]),
        max_abs=float(maxima[fused_kernels.MAX_ABS]),
        max_rel=float(maxima[fused_kernels.MAX_REL]),
        equal=int(counts[fused_kernels.EQUAL]),
        nonfinite=0,
        over_budget=int(counts[fused_kernels.OVER_BUDGET]),
        row_sums=row_sums,
        p99_threshold=p99_threshold,
        p99_values=candidates[:counts[fused_kernels.CANDIDATES]].copy(),
        worst=[(float(worst_ulp[i]), int(worst_position[i]), float(worst_abs[i]), float(worst_rel[i]),
                float(worst_reference[i])) for i in range(kept)],
        above_count_threshold=int(counts[fused_kernels.ABOVE_COUNT_THRESHOLD]),
        at_count_threshold=int(counts[fused_kernels.AT_COUNT_THRESHOLD]),
    )


def _fused_block(actual, reference, budget, constants, thresholds, scratch):
    """Compute the `_BlockStats` of a ``(rows, hidden)`` block with the Numba kernel.

    Returns None when the block has a non-finite value, which NumPy then settles.
    """
    p99_threshold = thresholds.p99
    results = _fused_results(actual.shape[0], actual.size, scratch)
    actual_bits = actual.view(bits_dtype(dtype_name(actual.dtype)))
    if isinstance(reference, LazyReference):
        finite = reference.measure_fused(actual_bits, constants, float(budget),
                                         (p99_threshold, thresholds.count, thresholds.worst), results)
    else:
        finite = fused_kernels.measure_rows(
            actual_bits, constants.code, reference, reference.view(np.uint64),
            float(budget), constants.mantissa_bits, constants.overflow, constants.smallest_normal_bits,
            p99_threshold, thresholds.count, thresholds.worst, *results)
    if not finite:
        return None
    return _fused_stats(actual.size, p99_threshold, results)


def _fused_pair_block(first, second, thresholds, scratch):
    """Measure the same rows of two outputs whose lazy references pair, in one fused kernel.

    ``first`` and ``second`` are ``(actual, reference, budget, constants)``. Returns the
    two `_BlockStats`, or None when the kernel declined the block.
    """
    actual, reference, budget, constants = first
    partner_actual, partner_reference, partner_budget, _ = second
    actual = np.ascontiguousarray(actual)
    partner_actual = np.ascontiguousarray(partner_actual)
    p99_threshold = thresholds.p99
    results = _fused_results(actual.shape[0], actual.size, scratch)
    partner_results = _fused_results(actual.shape[0], actual.size, scratch, slot=1)
    finite = reference.measure_fused_pair(
        partner_reference, actual.view(bits_dtype(dtype_name(actual.dtype))),
        partner_actual.view(bits_dtype(dtype_name(partner_actual.dtype))), constants, float(budget),
        float(partner_budget), (p99_threshold, thresholds.count, thresholds.worst), results, partner_results)
    if not finite:
        return None
    return _fused_stats(actual.size, p99_threshold, results), _fused_stats(actual.size, p99_threshold,
                                                                           partner_results)


def _measure_block(actual, reference, name, budget, constants, thresholds, scratch, fused):
    """Compute the `_BlockStats` of one block of rows, shaped ``(rows, hidden)``."""
    rows = actual.shape[0]
    actual = np.ascontiguousarray(actual)
    if fused and isinstance(reference, LazyReference):
        stats = _fused_block(actual, reference, budget, constants, thresholds, scratch)
        if stats is not None:
            return stats
    reference = np.ascontiguousarray(reference, dtype=np.float64)
    if fused:
        stats = _fused_block(actual, reference, budget, constants, thresholds, scratch)
        if stats is not None:
            return stats

    actual = actual.reshape(-1)
    reference = reference.reshape(-1)
    p99_threshold = thresholds.p99
    worst_threshold = thresholds.worst
    count_threshold = thresholds.count

    errors = _fast_block(actual, reference, constants, scratch)
    if errors is None:
        errors = _general_block(actual, reference, name)
    ulp, abs_error, rel_error, equal = errors

    max_ulp = float(ulp.max(initial=0.0))
    infinite = int(np.count_nonzero(np.isinf(ulp))) if max_ulp == math.inf else 0
    finite_ulp = np.where(np.isinf(ulp), 0.0, ulp) if infinite else ulp
    row_sums = np.add.reduce(finite_ulp.reshape(rows, -1), axis=1)
    over_budget = int(np.count_nonzero(ulp > budget)) if max_ulp > budget else 0
    p99_values = ulp[ulp > p99_threshold] if max_ulp > p99_threshold else ulp[:0]
    if count_threshold == -math.inf:
        above, at = ulp.size, 0
    else:
        above = int(np.count_nonzero(ulp > count_threshold)) if max_ulp > count_threshold else 0
        at = int(np.count_nonzero(ulp == count_threshold)) if max_ulp >= count_threshold else 0

    worst = []
    if max_ulp > worst_threshold:
        positions = np.flatnonzero(ulp > worst_threshold)
        chosen = positions[_largest_with_lowest_index(ulp[positions], WORST_COUNT)]
        worst = [(float(ulp[i]), int(i), float(abs_error[i]), float(rel_error[i]), float(reference[i]))
                 for i in chosen]

    return _BlockStats(
        elements=ulp.size,
        max_ulp=max_ulp,
        max_abs=float(np.fmax.reduce(abs_error, initial=0.0)),
        max_rel=float(np.fmax.reduce(rel_error, initial=0.0)),
        equal=equal,
        nonfinite=infinite,
        over_budget=over_budget,
        row_sums=row_sums,
        p99_threshold=p99_threshold,
        p99_values=p99_values,
        worst=worst,
        above_count_threshold=above,
        at_count_threshold=at,
    )


class _LargestValues:
    """Streaming k-th largest value: keeps only the values above a threshold that only rises.

    The threshold is always a value with at least ``k`` seen elements at or above it, so an
    element below it can never be the k-th largest. Compaction keeps the values near ``2 k``,
    and the doubling buffer holds at most about twice that plus one block's values. With
    ``fused`` large selections run in `fused.kth_largest`, the others in ``numpy.partition``.
    """

    def __init__(self, count, fused=False):
        self.count = count
        self.fused = fused
        self.threshold = -math.inf
        # Kept values fill ``buffer[:size]``, and the buffer doubles when full. Each block's
        # values are copied once as they merge, while later blocks are still measured.
        self.buffer = np.empty(0)
        self.size = 0

    def add(self, threshold_used, values):
        if threshold_used < self.threshold:
            values = values[values > self.threshold]
        needed = self.size + values.size
        if needed > self.buffer.size:
            grown = np.empty(max(needed, 2 * self.buffer.size))
            grown[:self.size] = self.buffer[:self.size]
            self.buffer = grown
        self.buffer[self.size:needed] = values
        self.size = needed
        if self.size >= 2 * self.count + BLOCK_ELEMENTS:
            self._compact()

    def _compact(self):
        values = self.buffer[:self.size]
        if values.size >= self.count:
            self.threshold = self._select(values)
            above_threshold = values[values > self.threshold]
            self.buffer[:above_threshold.size] = above_threshold
            self.size = above_threshold.size

    def kth_largest(self):
        values = self.buffer[:self.size]
        if values.size >= self.count:
            return self._select(values)
        return self.threshold

    def _select(self, values):
        """Return the k-th largest of ``values``, which contains at least k ULP values (never NaN)."""
        # The kernel's histogram costs more than a partition of fewer values than its bins.
        if self.fused and values.size >= fused_kernels.SELECT_BINS:
            return float(fused_kernels.kth_largest(values, self.count))
        return float(np.partition(values, values.size - self.count)[values.size - self.count])


def _p99_rank(elements):
    """Return the 0-based sorted index of the 99th percentile (NumPy's method ``"higher"``)."""
    return int(math.ceil((elements - 1) * P99_QUANTILE))


def _paired_outputs(prepared, fused):
    """Return ``{index: partner_index}`` of outputs whose lazy references one fused kernel measures together."""
    pairs = {}
    if not fused:
        return pairs
    for index in range(len(prepared) - 1):
        first, second = prepared[index], prepared[index + 1]
        if (index not in pairs.values() and isinstance(first.reference_rows, LazyReference)
                and first.actual_rows.shape == second.actual_rows.shape and first.dtype == second.dtype
                and first.reference_rows.pairs_with(second.reference_rows)):
            pairs[index] = index + 1
    return pairs


def _block_tasks(prepared, block_rows, fused, pairs):
    """Yield ``(output_index, start_row, stop_row, partner_index)`` of every block, outputs in order.

    A paired output's blocks come with its partner's index and the partner has no tasks of
    its own; ``partner_index`` is None for the others.
    """
    partners = set(pairs.values())
    for index, item in enumerate(prepared):
        if index in partners:
            continue
        rows, hidden = item.actual_rows.shape
        if block_rows is not None:
            step = block_rows
        else:
            step = default_block_rows(hidden, FUSED_BLOCK_ELEMENTS if fused else None)
        for start in range(0, rows, step):
            yield index, start, min(rows, start + step), pairs.get(index)


@dataclasses.dataclass(frozen=True)
class _Output:
    """One compared output, with its rows as ``(rows, hidden)`` views."""

    name: str
    actual: np.ndarray
    reference: np.ndarray
    budget: float
    dtype: str
    constants: _DtypeConstants
    actual_rows: np.ndarray
    reference_rows: np.ndarray


@dataclasses.dataclass
class _Totals:
    """Statistics of one pass over every block, merged in block order."""

    max_ulp: float = 0.0
    max_abs: float = 0.0
    max_rel: float = 0.0
    equal: int = 0
    nonfinite: int = 0
    over_budget: int = 0
    above_count_threshold: int = 0
    at_count_threshold: int = 0
    row_sums: list = dataclasses.field(default_factory=list)
    worst: list = dataclasses.field(default_factory=list)
    largest: object = None


def measure(outputs, block_rows=None, threads=1, fused=None):
    """Compute the `ErrorRecord` of a backend's outputs against the reference.

    Parameters
    ----------
    outputs : list of (str, numpy.ndarray, numpy.ndarray, float)
        ``(name, actual, reference, budget)`` for each compared output: ``actual`` is in the
        output dtype, ``reference`` in float64 with the same shape (or a `LazyReference`
        of the ``(rows, hidden)`` view), and ``budget`` the ULP
        budget its elements are held to. The first output's budget is the record's
        ``ulp_budget``.
    block_rows : int, optional
        Rows measured at a time, which bounds temporary memory; by default about
        `BLOCK_ELEMENTS` elements' worth of rows, or `FUSED_BLOCK_ELEMENTS` with the fused
        kernel.
    threads : int
        Threads that measure blocks in parallel (NumPy and the fused kernel release the GIL).
    fused : bool, optional
        Measure finite blocks with the Numba kernel of `precision_suite.fused`; by default
        when Numba can be imported. The record is the same either way.

    Returns
    -------
    ErrorRecord
        The same record for every ``block_rows``, ``threads`` and ``fused``.

    Raises
    ------
    ValueError
        When ``block_rows`` or ``threads`` is below 1, or ``fused=True`` is not possible.

    Notes
    -----
    ``max_ulp_error`` is the exact float64 maximum. ``mean_ulp_error`` averages the finite
    ULP errors: each row is summed with NumPy's pairwise sum and the row sums are added with
    ``math.fsum``. ``p99_ulp_error`` is the element at sorted index ``ceil(0.99 (n - 1))``,
    NumPy's ``percentile(..., method="higher")``. Outputs of more than `PILOT_MIN_ELEMENTS`
    elements first measure a sample of rows and keep only the ULP values above the sample's
    `PILOT_QUANTILE` value; blocks count the values above and at that bound, and when fewer
    than ``n - ceil(0.99 (n - 1))`` are at or above it (the sample was not representative)
    every block is measured a second time with no bound. Temporary memory is a few blocks
    per thread plus a few percent of the elements for the 99th percentile.
    """
    if block_rows is not None and block_rows < 1:
        raise ValueError(f"block_rows must be at least 1, got {block_rows}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    fused = use_fused(fused, [actual.dtype for _, actual, _, _ in outputs])

    prepared = []
    for output_name, actual, reference, budget in outputs:
        name = dtype_name(actual.dtype)
        hidden = actual.shape[-1] if actual.ndim else 1
        prepared.append(_Output(output_name, actual, reference, budget, name, _DtypeConstants.of(name),
                                actual.reshape(-1, hidden), _reference_rows(reference, hidden)))
    elements = sum(item.actual.size for item in prepared)
    if not elements:
        return _record(outputs, prepared, elements, _Totals(), 0.0)

    pairs = _paired_outputs(prepared, fused)
    tasks = list(_block_tasks(prepared, block_rows, fused, pairs))
    top_count = elements - _p99_rank(elements)
    count_threshold = _pilot_threshold(prepared, elements, fused) if elements > PILOT_MIN_ELEMENTS else -math.inf
    totals = _measure_pass(prepared, tasks, threads, fused, count_threshold, top_count)
    p99 = _p99_from_pass(totals, count_threshold, top_count)
    if p99 is None:
        # NOTE: the sample put the bound above the 99th percentile, so the exact value needs a
        # second pass that keeps every candidate; rows with very different errors cause this.
        totals = _measure_pass(prepared, tasks, threads, fused, -math.inf, top_count)
        p99 = _p99_from_pass(totals, -math.inf, top_count)
    return _record(outputs, prepared, elements, totals, p99)


def _reference_rows(reference, hidden):
    """Return a reference as ``(rows, hidden)``: a `LazyReference` as it is, an array reshaped."""
    if isinstance(reference, LazyReference):
        return reference
    return np.asarray(reference).reshape(-1, hidden)


def _pilot_threshold(prepared, elements, fused):
    """Return the `PILOT_QUANTILE` ULP value of an evenly spaced sample of rows of every output."""
    values = []
    for item in prepared:
        rows = item.actual_rows.shape[0]
        count = min(rows, max(1, round(rows * PILOT_ELEMENTS / elements)))
        picks = np.unique(np.linspace(0, rows - 1, count).astype(np.int64))
        stats = _measure_block(item.actual_rows[picks], item.reference_rows[picks], item.dtype, item.budget,
                               item.constants, _SharedThresholds(), _Scratch(), fused)
        values.append(stats.p99_values)
    values = np.concatenate(values)
    rank = int(math.ceil((values.size - 1) * PILOT_QUANTILE))
    return float(np.partition(values, rank)[rank])


def _measure_pass(prepared, tasks, threads, fused, count_threshold, top_count):
    """Measure every block and merge the statistics in block order."""
    thresholds = _SharedThresholds(count_threshold)
    scratch = _Scratch()
    totals = _Totals(largest=_LargestValues(top_count, fused))

    paired = any(task[3] is not None for task in tasks)

    def run(task):
        index, start, stop, partner = task
        if partner is not None:
            pair = [(prepared[i].actual_rows[start:stop], prepared[i].reference_rows[start:stop],
                     prepared[i].budget, prepared[i].constants) for i in (index, partner)]
            both = _fused_pair_block(pair[0], pair[1], thresholds, scratch)
            if both is not None:
                return [(index, start, both[0]), (partner, start, both[1])]
        results = []
        for output in (index,) if partner is None else (index, partner):
            item = prepared[output]
            stats = _measure_block(item.actual_rows[start:stop], item.reference_rows[start:stop], item.dtype,
                                   item.budget, item.constants, thresholds, scratch, fused)
            results.append((output, start, stats))
        return results

    with concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else _InlineExecutor() as executor:
        for index, start, stats in itertools.chain.from_iterable(executor.map(run, tasks)):
            hidden = prepared[index].actual_rows.shape[1]
            totals.max_ulp = max(totals.max_ulp, stats.max_ulp)
            totals.max_abs = max(totals.max_abs, stats.max_abs)
            totals.max_rel = max(totals.max_rel, stats.max_rel)
            totals.equal += stats.equal
            totals.nonfinite += stats.nonfinite
            totals.over_budget += stats.over_budget
            totals.above_count_threshold += stats.above_count_threshold
            totals.at_count_threshold += stats.at_count_threshold
            totals.row_sums.append(stats.row_sums)
            totals.largest.add(stats.p99_threshold, stats.p99_values)
            thresholds.p99 = max(count_threshold, totals.largest.threshold)

            totals.worst.extend((ulp, -index, -(start * hidden + position), abs_error, rel_error, reference)
                                for ulp, position, abs_error, rel_error, reference in stats.worst)
            totals.worst.sort(reverse=True)
            del totals.worst[WORST_COUNT:]
            if len(totals.worst) == WORST_COUNT:
                # With pairs, a block of an earlier output can merge after a later output's
                # block and wins ties with it, so blocks must also keep values equal to the bound.
                bound = totals.worst[-1][0]
                thresholds.worst = float(np.nextafter(bound, -math.inf)) if paired else bound
    return totals


def _p99_from_pass(totals, count_threshold, top_count):
    """Return the exact 99th percentile, or None when it lies below the pass's count threshold."""
    if totals.above_count_threshold >= top_count:
        return totals.largest.kth_largest()
    if totals.above_count_threshold + totals.at_count_threshold >= top_count:
        return count_threshold
    return None


def _record(outputs, prepared, elements, totals, p99):
    """Build the `ErrorRecord` from a pass's merged statistics."""
    finite = elements - totals.nonfinite
    total = math.fsum(np.concatenate(totals.row_sums)) if totals.row_sums else 0.0
    if finite:
        mean_ulp = total / finite
    else:
        mean_ulp = math.inf if elements else 0.0
    return ErrorRecord(
        elements=elements,
        max_abs_error=totals.max_abs,
        max_rel_error=totals.max_rel,
        max_ulp_error=totals.max_ulp,
        mean_ulp_error=mean_ulp,
        p99_ulp_error=p99,
        frac_over_budget=totals.over_budget / elements if elements else 0.0,
        ulp_budget=float(outputs[0][3]) if outputs else np.nan,
        bitwise_equal_frac=totals.equal / elements if elements else 1.0,
        nonfinite_mismatches=totals.nonfinite,
        worst=tuple(_worst_element(prepared, item) for item in totals.worst),
        over_budget=totals.over_budget,
    )


def _worst_element(prepared, item):
    """Build the `WorstElement` of a merged ``(ulp, -output, -flat_index, abs, rel, reference)`` entry."""
    ulp, negative_output, negative_index, abs_error, rel_error, reference = item
    output = prepared[-negative_output]
    row, column = divmod(-negative_index, output.actual_rows.shape[1])
    index = []
    remainder = -negative_index
    for size in reversed(output.actual.shape):
        remainder, position = divmod(remainder, size)
        index.append(position)
    return WorstElement(
        output=output.name,
        index=tuple(reversed(index)),
        actual=float(output.actual_rows[row, column]),
        reference=reference,
        ulp_error=ulp, abs_error=abs_error, rel_error=rel_error,
    )


class _InlineExecutor:
    """Runs `map` in the calling thread, so one thread pays no pool overhead."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def map(self, function, tasks):
        return map(function, tasks)
