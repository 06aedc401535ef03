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
"""

import dataclasses

import numpy as np

from precision_suite.dtypes import bits_dtype, dtype_name, finfo, round_to_dtype, to_float64

# Rows per block when measuring, so float64 temporaries stay a few blocks in size.
DEFAULT_BLOCK_ROWS = 256
# How many of the worst elements a record keeps for messages and reports.
WORST_COUNT = 5


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


def _element_errors(actual, reference, name, block_rows):
    """Yield per-block (ulp, abs, rel, bitwise-equal) arrays over the rows of one output."""
    hidden = actual.shape[-1] if actual.ndim else 1
    actual_rows = actual.reshape(-1, hidden)
    reference_rows = reference.reshape(-1, hidden)
    floor = float(finfo(name).smallest_normal)

    for start in range(0, actual_rows.shape[0], block_rows):
        actual_block = actual_rows[start:start + block_rows]
        reference_block = reference_rows[start:start + block_rows]
        ulp = ulp_error(actual_block, reference_block, name)

        actual64 = to_float64(actual_block)
        with np.errstate(invalid="ignore", over="ignore"):
            abs_error = np.abs(actual64 - reference_block)
        abs_error = np.where(np.isinf(ulp), np.inf, np.where(ulp == 0, 0.0, abs_error))
        rel_error = abs_error / np.maximum(np.abs(reference_block), floor)
        equal = bitwise_equal(actual_block, round_to_dtype(reference_block, name))
        yield ulp, abs_error, rel_error, equal


def measure(outputs, block_rows=DEFAULT_BLOCK_ROWS):
    """Compute the `ErrorRecord` of a backend's outputs against the reference.

    Parameters
    ----------
    outputs : list of (str, numpy.ndarray, numpy.ndarray, float)
        ``(name, actual, reference, budget)`` for each compared output: ``actual`` is in the
        output dtype, ``reference`` in float64 with the same shape, and ``budget`` the ULP
        budget its elements are held to. The first output's budget is the record's
        ``ulp_budget``.
    block_rows : int
        Rows measured at a time, which bounds temporary memory.

    Returns
    -------
    ErrorRecord
    """
    ulp_parts = []
    worst_candidates = []
    max_abs = max_rel = 0.0
    equal_count = nonfinite = elements = over_budget = 0

    for output_name, actual, reference, budget in outputs:
        name = dtype_name(actual.dtype)
        offset = 0
        for ulp, abs_error, rel_error, equal in _element_errors(actual, reference, name, block_rows):
            flat_ulp = ulp.ravel()
            ulp_parts.append(flat_ulp.astype(np.float32))
            max_abs = max(max_abs, float(abs_error.max(initial=0.0)))
            max_rel = max(max_rel, float(rel_error.max(initial=0.0)))
            equal_count += int(equal.sum())
            nonfinite += int(np.isinf(flat_ulp).sum())
            over_budget += int((flat_ulp > budget).sum())
            elements += flat_ulp.size

            count = min(WORST_COUNT, flat_ulp.size)
            top = np.argpartition(-flat_ulp, count - 1)[:count] if count else []
            for position in top:
                flat_index = offset + int(position)
                worst_candidates.append((
                    float(flat_ulp[position]), -flat_index, output_name, flat_index, actual, reference,
                    float(abs_error.ravel()[position]), float(rel_error.ravel()[position]),
                ))
            offset += flat_ulp.size

    all_ulp = np.concatenate(ulp_parts) if ulp_parts else np.zeros(0, np.float32)
    worst_candidates.sort(key=lambda item: (item[0], item[1]), reverse=True)
    worst = tuple(
        WorstElement(
            output=output_name,
            index=tuple(int(i) for i in np.unravel_index(flat_index, actual.shape)),
            actual=float(to_float64(actual.reshape(-1)[flat_index])),
            reference=float(reference.reshape(-1)[flat_index]),
            ulp_error=ulp, abs_error=abs_error, rel_error=rel_error,
        )
        for ulp, _, output_name, flat_index, actual, reference, abs_error, rel_error
        in worst_candidates[:WORST_COUNT]
    )

    finite_ulp = all_ulp[np.isfinite(all_ulp)]
    return ErrorRecord(
        elements=elements,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        max_ulp_error=float(all_ulp.max(initial=0.0)),
        mean_ulp_error=float(finite_ulp.mean(dtype=np.float64)) if finite_ulp.size else (np.inf if elements else 0.0),
        p99_ulp_error=float(np.percentile(all_ulp, 99, method="higher")) if elements else 0.0,
        frac_over_budget=over_budget / elements if elements else 0.0,
        ulp_budget=float(outputs[0][3]) if outputs else np.nan,
        bitwise_equal_frac=equal_count / elements if elements else 1.0,
        nonfinite_mismatches=nonfinite,
        worst=worst,
        over_budget=over_budget,
    )
