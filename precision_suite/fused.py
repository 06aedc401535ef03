"""Fused Numba kernels for the reference and the metrics, one pass over each row.

The NumPy code in `precision_suite.metrics` and `precision_suite.reference` makes about 25
passes over each block. These kernels decode, compute and reduce a row in one loop, and
they release the GIL, so threads over row blocks run in parallel. They follow the NumPy code
operation for operation, so both give the same bits:

- Row sums use NumPy's pairwise summation (`pairwise_sum`), the order that
  ``numpy.add.reduce`` uses along a contiguous axis.
- Only finite values take the fused path. A block with a non-finite input, output or
  overflowing reference is declined (the kernel returns False) and the caller measures it
  with NumPy, which settles those values by the rules in the metrics module's Notes.

`AVAILABLE` is False when Numba cannot be imported or ``NUMBA_DISABLE_JIT`` is set; the
callers then use NumPy alone. Kernels are compiled on first use for each input width and
cached in ``__pycache__`` (``cache=True``), so later processes load them from disk.
"""

import math

import numpy as np

try:
    import numba
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic, overload
except ImportError:  # pragma: no cover - exercised only where Numba is not installed
    numba = None

# Dtype codes passed to the kernels, which read every input as its unsigned bit pattern.
FLOAT16, BFLOAT16, FLOAT32, FLOAT64 = 0, 1, 2, 3
DTYPE_CODES = {"float16": FLOAT16, "bfloat16": BFLOAT16, "float32": FLOAT32, "float64": FLOAT64}

# Index of each figure in the `measure_rows` result arrays.
MAX_ULP, MAX_ABS, MAX_REL = 0, 1, 2
EQUAL, OVER_BUDGET, ABOVE_COUNT_THRESHOLD, AT_COUNT_THRESHOLD, CANDIDATES, WORST = 0, 1, 2, 3, 4, 5
WORST_COUNT = 5
# Positions of the maxima and counts arrays among a kernel's result arrays, which follow
# `measure_rows`' parameters from ``candidates`` to ``counts``.
MAXIMA, COUNTS = 7, 8
# Ranges of bit patterns that `kth_largest` counts in its first pass.
SELECT_BINS = 1 << 16

AVAILABLE = numba is not None and not numba.config.DISABLE_JIT


def _unavailable(*args, **kwargs):
    raise RuntimeError("the fused kernels need Numba; check fused.AVAILABLE before calling them")


if AVAILABLE:
    _SIGN = np.uint64(1 << 63)
    _MAGNITUDE = np.uint64((1 << 63) - 1)
    _EXPONENT = np.uint64(0x7FF << 52)

    @intrinsic
    def _as_float64(typingctx, bits):
        """Reinterpret uint64 bits as a float64."""
        if bits != types.uint64:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.DoubleType())

        return types.float64(types.uint64), codegen

    @intrinsic
    def _as_bits(typingctx, value):
        """Reinterpret a float64 as its uint64 bits."""
        if value != types.float64:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(64))

        return types.uint64(types.float64), codegen

    @intrinsic
    def _as_float32(typingctx, bits):
        """Reinterpret the low 32 bits of an unsigned integer as a float32."""
        if not isinstance(bits, types.Integer) or bits.signed or bits.bitwidth < 32:
            return None

        def codegen(context, builder, signature, args):
            low = args[0] if bits.bitwidth == 32 else builder.trunc(args[0], ir.IntType(32))
            return builder.bitcast(low, ir.FloatType())

        return types.float32(bits), codegen

    _jit = numba.njit(nogil=True, cache=True, error_model="numpy")

    def _element_as_float64(values, j, shift):
        """Return ``values[j]`` as float64: a float as it is, or float32 bits shifted left by ``shift``."""

    @overload(_element_as_float64, jit_options={"nogil": True, "error_model": "numpy"})
    def _element_as_float64_overload(values, j, shift):
        if isinstance(values.dtype, types.Float):
            return lambda values, j, shift: np.float64(values[j])
        return lambda values, j, shift: np.float64(_as_float32(np.uint64(values[j]) << np.uint64(shift)))

    @_jit
    def _half_to_float64(half):
        """Decode float16 bits (in a uint64) exactly; NaN payloads are kept, as in NumPy's cast."""
        sign = (half & np.uint64(0x8000)) << np.uint64(48)
        exponent = (half >> np.uint64(10)) & np.uint64(0x1F)
        mantissa = half & np.uint64(0x3FF)
        if exponent == 0:
            # Subnormals and zero: mantissa * 2**-24 is exact in float64.
            return _as_float64(_as_bits(np.float64(mantissa) * 2.0**-24) | sign)
        if exponent == 31:
            return _as_float64(sign | _EXPONENT | (mantissa << np.uint64(42)))
        return _as_float64(sign | ((exponent + np.uint64(1008)) << np.uint64(52)) | (mantissa << np.uint64(42)))

    @_jit
    def decode_row(bits, code, out):
        """Decode one row of bit patterns of dtype ``code`` into the float64 array ``out``."""
        if code == BFLOAT16:
            for j in range(out.size):
                out[j] = np.float64(_as_float32(np.uint64(bits[j]) << np.uint64(16)))
        elif code == FLOAT16:
            for j in range(out.size):
                out[j] = _half_to_float64(np.uint64(bits[j]))
        elif code == FLOAT32:
            for j in range(out.size):
                out[j] = np.float64(_as_float32(np.uint64(bits[j])))
        else:
            for j in range(out.size):
                out[j] = _as_float64(np.uint64(bits[j]))

    @_jit
    def _term(values, j, square):
        value = values[j]
        return value * value if square else value

    @_jit
    def _leaf_sum(values, start, count, square):
        """Sum at most 128 values (or their squares) as NumPy's pairwise summation does at its leaves."""
        if count < 8:
            total = 0.0
            for j in range(start, start + count):
                total += _term(values, j, square)
            return total
        # A slice and a range loop give LLVM indices it can prove non-negative, so it can
        # vectorize the eight partial sums (0.34 to 0.20 ns per element on the 2-core AMD EPYC
        # benchmark machine). Each partial sum still adds its values in order, so the bits are
        # those of NumPy's loop.
        leaf = values[start:start + count]
        r0 = _term(leaf, 0, square)
        r1 = _term(leaf, 1, square)
        r2 = _term(leaf, 2, square)
        r3 = _term(leaf, 3, square)
        r4 = _term(leaf, 4, square)
        r5 = _term(leaf, 5, square)
        r6 = _term(leaf, 6, square)
        r7 = _term(leaf, 7, square)
        stop = count - count % 8
        for j in range(8, stop, 8):
            r0 += _term(leaf, j, square)
            r1 += _term(leaf, j + 1, square)
            r2 += _term(leaf, j + 2, square)
            r3 += _term(leaf, j + 3, square)
            r4 += _term(leaf, j + 4, square)
            r5 += _term(leaf, j + 5, square)
            r6 += _term(leaf, j + 6, square)
            r7 += _term(leaf, j + 7, square)
        total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for j in range(stop, count):
            total += _term(leaf, j, square)
        return total

    @_jit
    def _pairwise_stack():
        """Return the ``(frames, partial)`` stack arrays that `_pairwise_sum` needs (64 levels)."""
        return np.empty((64, 3), np.int64), np.empty(64)

    @_jit
    def _row_buffers(hidden):
        """Return the row-sized scratch arrays of the RMSNorm kernels: reference, other, decoded, ulp."""
        return np.empty(hidden), np.empty(hidden), np.empty(hidden), np.empty(hidden)

    @_jit
    def _pairwise_sum(values, start, count, frames, partial, square):
        """Sum like `pairwise_sum`, with caller-owned stack arrays of at least 64 rows.

        With ``square`` it sums the squares of the values, each rounded to float64 as
        NumPy's ``multiply`` would before ``add.reduce``.

        The recursion of NumPy's code runs on an explicit stack because Numba cannot load a
        recursive function from its on-disk cache. ``frames`` rows are (start, count, phase).
        """
        if count <= 128:
            return _leaf_sum(values, start, count, square)
        depth = 0
        frames[0, 0] = start
        frames[0, 1] = count
        frames[0, 2] = 0
        result = 0.0
        returned = False
        while True:
            if returned:
                if depth < 0:
                    return result
                if frames[depth, 2] == 1:
                    # The left half is done: keep its sum and descend into the right half.
                    partial[depth] = result
                    frames[depth, 2] = 2
                    half = frames[depth, 1] // 2
                    half -= half % 8
                    frames[depth + 1, 0] = frames[depth, 0] + half
                    frames[depth + 1, 1] = frames[depth, 1] - half
                    frames[depth + 1, 2] = 0
                    depth += 1
                    returned = False
                else:
                    result = partial[depth] + result
                    depth -= 1
                continue
            length = frames[depth, 1]
            if length <= 128:
                result = _leaf_sum(values, frames[depth, 0], length, square)
                depth -= 1
                returned = True
                continue
            frames[depth, 2] = 1
            half = length // 2
            half -= half % 8
            frames[depth + 1, 0] = frames[depth, 0]
            frames[depth + 1, 1] = half
            frames[depth + 1, 2] = 0
            depth += 1

    @_jit
    def pairwise_sum(values, start, count):
        """Sum ``values[start:start + count]`` in the order of NumPy's pairwise summation.

        NumPy (``numpy/_core/src/umath/loops_utils.h.src``) adds fewer than 8 values in
        order, up to 128 values in 8 interleaved partial sums, and splits longer runs at
        half the length rounded down to a multiple of 8.
        """
        frames, partial = _pairwise_stack()
        return _pairwise_sum(values, start, count, frames, partial, False)

    @_jit
    def _round_to_format(value, overflow, smallest_normal_bits, offset_scale):
        """Round a float64 to the output dtype (round to nearest even) and return it as float64.

        Adding and removing ``spacing * 2**52`` rounds the magnitude at the dtype's spacing,
        the same trick as the metrics' fast path; values at or beyond ``overflow`` become
        infinite and NaN stays NaN.
        """
        bits = _as_bits(value)
        sign = bits & _SIGN
        magnitude_bits = bits & _MAGNITUDE
        magnitude = _as_float64(magnitude_bits)
        if not magnitude < overflow:
            if magnitude != magnitude:
                return value
            return _as_float64(sign | _EXPONENT)
        offset = _as_float64(max(magnitude_bits, smallest_normal_bits) & _EXPONENT) * offset_scale
        rounded = (magnitude + offset) - offset
        return _as_float64(_as_bits(rounded) | sign)

    @_jit
    def _round_in_range(value, overflow, smallest_normal_bits, offset_scale):
        """Round a float64 to the dtype like `_round_to_format`, without its branches.

        Returns ``(rounded, in_range)``. When ``in_range`` is False (NaN or a magnitude at or
        beyond ``overflow``), ``rounded`` is wrong.
        """
        bits = _as_bits(value)
        magnitude_bits = bits & _MAGNITUDE
        magnitude = _as_float64(magnitude_bits)
        offset = _as_float64(max(magnitude_bits, smallest_normal_bits) & _EXPONENT) * offset_scale
        rounded = _as_float64(_as_bits((magnitude + offset) - offset) | (bits & _SIGN))
        return rounded, magnitude < overflow

    @_jit
    def _round_sum_bits(first_bits, second_bits, shift, overflow, smallest_normal_bits, offset_scale, out):
        """Write the sum of two rows of float32 bit patterns, rounded to the dtype, to ``out``.

        Each pattern is shifted left by ``shift`` first, 16 for bfloat16. Returns False when a
        sum is NaN or at or beyond ``overflow``. The loop has no branch, so LLVM vectorizes it.
        """
        in_range = True
        for j in range(out.size):
            value = (np.float64(_as_float32(np.uint64(first_bits[j]) << np.uint64(shift)))
                     + np.float64(_as_float32(np.uint64(second_bits[j]) << np.uint64(shift))))
            out[j], in_bounds = _round_in_range(value, overflow, smallest_normal_bits, offset_scale)
            in_range &= in_bounds
        return in_range

    @_jit
    def _round_sum(row, other, overflow, smallest_normal_bits, offset_scale):
        """Replace ``row`` by ``row + other`` rounded to the dtype, returning False as `_round_sum_bits` does."""
        in_range = True
        for j in range(row.size):
            row[j], in_bounds = _round_in_range(row[j] + other[j], overflow, smallest_normal_bits, offset_scale)
            in_range &= in_bounds
        return in_range

    @_jit
    def _rounded_input_row(x_bits, residual_bits, has_residual, code, overflow, smallest_normal_bits, offset_scale,
                           row, other):
        """Decode one row of ``x`` into ``row``, with ``residual`` added and rounded once to the dtype."""
        if not has_residual:
            decode_row(x_bits, code, row)
            return
        if code == FLOAT16:
            decode_row(x_bits, code, row)
            decode_row(residual_bits, code, other)
            in_range = _round_sum(row, other, overflow, smallest_normal_bits, offset_scale)
        else:
            # bfloat16 is the upper half of a float32, so one shift decodes both dtypes.
            shift = 16 if code == BFLOAT16 else 0
            in_range = _round_sum_bits(x_bits, residual_bits, shift, overflow, smallest_normal_bits, offset_scale,
                                       row)
        if in_range:
            return
        decode_row(x_bits, code, row)
        decode_row(residual_bits, code, other)
        for j in range(row.size):
            row[j] = _round_to_format(row[j] + other[j], overflow, smallest_normal_bits, offset_scale)

    @_jit
    def _normalize_row(row, weight, eps, frames, partial, out):
        """Write ``row / sqrt(mean(row**2) + eps) * weight`` to ``out``, which may be ``row`` itself.

        Returns False, with ``out`` unchanged, when the sum of squares is not finite.
        """
        hidden = row.size
        # Squares of these dtypes are exact in float64; a NaN or infinity makes the sum non-finite.
        total = 0.0 + _pairwise_sum(row, 0, hidden, frames, partial, True)
        if not total < math.inf:
            return False
        inverse_rms = 1.0 / math.sqrt(total / hidden + eps)
        for j in range(hidden):
            out[j] = row[j] * inverse_rms * weight[j]
        return True

    @_jit
    def reference_rows(x_bits, residual_bits, has_residual, code, weight, eps, overflow,
                       smallest_normal_bits, offset_scale, out, residual_out):
        """Write the RMSNorm reference of a block of float16, bfloat16 or float32 rows.

        ``x_bits`` and ``residual_bits`` are the inputs' bit patterns, shaped
        ``(rows, hidden)``. With ``has_residual``, ``residual_out`` receives ``x + residual``
        rounded to the dtype and the norm reads that sum. Returns False, with the block
        partly written, when a row has a non-finite value; the caller then recomputes the
        block with NumPy.
        """
        rows, hidden = x_bits.shape
        row = np.empty(hidden)
        other = np.empty(hidden)
        frames, partial = _pairwise_stack()
        for i in range(rows):
            _rounded_input_row(x_bits[i], residual_bits[i], has_residual, code, overflow, smallest_normal_bits,
                               offset_scale, row, other)
            if has_residual:
                residual_out[i] = row
            if not _normalize_row(row, weight, eps, frames, partial, out[i]):
                return False
        return True

    @_jit
    def _measure_row(i, actual_row, code, reference_row, reference_bits_row, budget, mantissa_bits, overflow,
                     smallest_normal_bits, collect_threshold, count_threshold, worst_threshold, decoded, ulp,
                     frames, partial, candidates, row_sums, worst_ulp, worst_position, worst_abs, worst_rel,
                     worst_reference, maxima_bits, counts):
        """Measure row ``i`` of a block against its float64 reference row; see `measure_rows`.

        Adds the row's maxima (as int64 bit patterns) and counts to ``maxima_bits`` and
        ``counts``. Returns False when a value is not finite.
        """
        if code == FLOAT32 or code == BFLOAT16:
            # The error loop decodes these from their bits, which saves a pass over ``decoded``.
            return _measure_decoded_row(i, actual_row, 16 if code == BFLOAT16 else 0, code, reference_row,
                                        reference_bits_row, budget, mantissa_bits, overflow, smallest_normal_bits,
                                        collect_threshold, count_threshold, worst_threshold, ulp, frames, partial,
                                        candidates, row_sums, worst_ulp, worst_position, worst_abs, worst_rel,
                                        worst_reference, maxima_bits, counts)
        decode_row(actual_row, code, decoded)
        return _measure_decoded_row(i, decoded, 0, code, reference_row, reference_bits_row, budget, mantissa_bits,
                                    overflow, smallest_normal_bits, collect_threshold, count_threshold,
                                    worst_threshold, ulp, frames, partial, candidates, row_sums, worst_ulp,
                                    worst_position, worst_abs, worst_rel, worst_reference, maxima_bits, counts)

    @_jit
    def _measure_decoded_row(i, actual_row, shift, code, reference_row, reference_bits_row, budget, mantissa_bits,
                             overflow, smallest_normal_bits, collect_threshold, count_threshold, worst_threshold,
                             ulp, frames, partial, candidates, row_sums, worst_ulp, worst_position, worst_abs,
                             worst_rel, worst_reference, maxima_bits, counts):
        """Measure a row like `_measure_row`; ``actual_row`` is decoded float64 or bits read by `_element_as_float64`."""
        hidden = actual_row.size
        narrow = code != FLOAT64
        # Reciprocal spacing 2**(mantissa_bits - e) from the biased exponent bits E = e + 1023.
        reciprocal_base = np.uint64((2046 + mantissa_bits) << 52)
        spacing_scale = 2.0 ** -mantissa_bits
        offset_scale = 2.0 ** (52 - mantissa_bits)
        row_max_bits = np.int64(0)
        max_abs_bits = np.int64(0)
        max_rel_bits = np.int64(0)
        equal = 0
        over_budget = 0
        above = 0
        at = 0
        finite = True
        for j in range(hidden):
            reference_word = reference_bits_row[j]
            magnitude_bits = reference_word & _MAGNITUDE
            actual = _element_as_float64(actual_row, j, shift)
            abs_error = abs(actual - reference_row[j])
            finite &= (_as_float64(magnitude_bits) < overflow) & (abs_error < math.inf)
            denominator_bits = max(magnitude_bits, smallest_normal_bits)
            exponent_bits = denominator_bits & _EXPONENT
            if narrow:
                # abs_error times an exact power of two equals abs_error / spacing.
                value = abs_error * _as_float64(reciprocal_base - exponent_bits)
                offset = _as_float64(exponent_bits) * offset_scale
                magnitude = _as_float64(magnitude_bits)
                rounded_bits = _as_bits((magnitude + offset) - offset) | (reference_word & _SIGN)
                equal += rounded_bits == _as_bits(actual)
            else:
                value = abs_error / (_as_float64(exponent_bits) * spacing_scale)
                equal += reference_word == _as_bits(actual)
            rel_error = abs_error / _as_float64(denominator_bits)
            ulp[j] = value
            # Non-negative float64 values order like their bit patterns, also as int64.
            row_max_bits = max(row_max_bits, np.int64(_as_bits(value)))
            max_abs_bits = max(max_abs_bits, np.int64(_as_bits(abs_error)))
            max_rel_bits = max(max_rel_bits, np.int64(_as_bits(rel_error)))
            over_budget += value > budget
            above += value > count_threshold
            at += value == count_threshold
        if not finite:
            return False

        maxima_bits[MAX_ULP] = max(maxima_bits[MAX_ULP], row_max_bits)
        maxima_bits[MAX_ABS] = max(maxima_bits[MAX_ABS], max_abs_bits)
        maxima_bits[MAX_REL] = max(maxima_bits[MAX_REL], max_rel_bits)
        counts[EQUAL] += equal
        counts[OVER_BUDGET] += over_budget
        counts[ABOVE_COUNT_THRESHOLD] += above
        counts[AT_COUNT_THRESHOLD] += at

        row_max = _as_float64(np.uint64(row_max_bits))
        if row_max > collect_threshold:
            collected = counts[CANDIDATES]
            for j in range(hidden):
                if ulp[j] > collect_threshold:
                    candidates[collected] = ulp[j]
                    collected += 1
            counts[CANDIDATES] = collected
        if row_max > worst_threshold:
            kept = counts[WORST]
            for j in range(hidden):
                value = ulp[j]
                if value > worst_threshold and (kept < WORST_COUNT or value > worst_ulp[WORST_COUNT - 1]):
                    slot = 0
                    while slot < kept and worst_ulp[slot] >= value:
                        slot += 1
                    last = min(kept, WORST_COUNT - 1)
                    for moved in range(last, slot, -1):
                        worst_ulp[moved] = worst_ulp[moved - 1]
                        worst_position[moved] = worst_position[moved - 1]
                        worst_abs[moved] = worst_abs[moved - 1]
                        worst_rel[moved] = worst_rel[moved - 1]
                        worst_reference[moved] = worst_reference[moved - 1]
                    abs_error = abs(_element_as_float64(actual_row, j, shift) - reference_row[j])
                    denominator = _as_float64(max(reference_bits_row[j] & _MAGNITUDE, smallest_normal_bits))
                    worst_ulp[slot] = value
                    worst_position[slot] = i * hidden + j
                    worst_abs[slot] = abs_error
                    worst_rel[slot] = abs_error / denominator
                    worst_reference[slot] = reference_row[j]
                    kept = min(kept + 1, WORST_COUNT)
            counts[WORST] = kept
        if row_max_bits == 0:
            # Every ULP value is +0.0 (``abs`` never gives -0.0), so the sum is 0.0. Outputs that
            # are exact, as ``residual_out`` usually is, skip a pass.
            row_sums[i] = 0.0
        else:
            row_sums[i] = 0.0 + _pairwise_sum(ulp, 0, hidden, frames, partial, False)
        return True

    @_jit
    def _store_maxima(maxima_bits, maxima):
        for index in range(3):
            maxima[index] = _as_float64(np.uint64(maxima_bits[index]))

    @_jit
    def measure_rows(actual_bits, code, reference, reference_bits, budget, mantissa_bits, overflow,
                     smallest_normal_bits, collect_threshold, count_threshold, worst_threshold,
                     candidates, row_sums, worst_ulp, worst_position, worst_abs, worst_rel, worst_reference, maxima,
                     counts):
        """Measure a block of finite rows in one pass; see `precision_suite.metrics.measure`.

        ``actual_bits`` holds the output's bit patterns and ``reference`` the float64
        reference (``reference_bits`` is its uint64 view), both ``(rows, hidden)``. Writes
        the ULP values above ``collect_threshold`` to ``candidates``, each row's pairwise
        ULP sum to ``row_sums``, the `WORST_COUNT` largest ULP errors above
        ``worst_threshold`` (ties to the lower position) with their positions, errors and
        reference values to the ``worst_*`` arrays, and the
        maxima and counts to ``maxima`` and ``counts`` at the indices named in this module.

        Returns False when a value is NaN or infinite or a reference rounds to infinity;
        the outputs are then incomplete and the caller measures the block with NumPy.
        """
        rows, hidden = actual_bits.shape
        decoded = np.empty(hidden)
        ulp = np.empty(hidden)
        frames, partial = _pairwise_stack()
        maxima_bits = np.zeros(3, np.int64)
        counts[:] = 0
        for i in range(rows):
            if not _measure_row(i, actual_bits[i], code, reference[i], reference_bits[i], budget, mantissa_bits,
                                overflow, smallest_normal_bits, collect_threshold, count_threshold,
                                worst_threshold, decoded, ulp, frames, partial, candidates, row_sums, worst_ulp,
                                worst_position, worst_abs, worst_rel, worst_reference, maxima_bits, counts):
                return False
        _store_maxima(maxima_bits, maxima)
        return True

    @_jit
    def measure_rms_norm_rows(actual_bits, code, x_bits, residual_bits, has_residual, normalize, weight, eps,
                              budget, mantissa_bits, overflow, smallest_normal_bits, collect_threshold,
                              count_threshold, worst_threshold, candidates, row_sums, worst_ulp, worst_position,
                              worst_abs, worst_rel, worst_reference, maxima, counts):
        """Measure a block like `measure_rows`, computing each reference row as `reference_rows` does.

        The reference row lives in a row-sized buffer, so the float64 reference of the block
        is never written to memory. With ``normalize`` the reference is RMSNorm's ``out``;
        without it the reference is ``residual_out``, ``x + residual`` rounded to the dtype.
        Returns False when an input, output or reference value is not finite.
        """
        rows, hidden = actual_bits.shape
        row_offset_scale = 2.0 ** (52 - mantissa_bits)
        reference_row, other, decoded, ulp = _row_buffers(hidden)
        reference_bits_row = reference_row.view(np.uint64)
        frames, partial = _pairwise_stack()
        maxima_bits = np.zeros(3, np.int64)
        counts[:] = 0
        for i in range(rows):
            _rounded_input_row(x_bits[i], residual_bits[i], has_residual, code, overflow, smallest_normal_bits,
                               row_offset_scale, reference_row, other)
            if normalize and not _normalize_row(reference_row, weight, eps, frames, partial, reference_row):
                return False
            if not _measure_row(i, actual_bits[i], code, reference_row, reference_bits_row, budget, mantissa_bits,
                                overflow, smallest_normal_bits, collect_threshold, count_threshold,
                                worst_threshold, decoded, ulp, frames, partial, candidates, row_sums, worst_ulp,
                                worst_position, worst_abs, worst_rel, worst_reference, maxima_bits, counts):
                return False
        _store_maxima(maxima_bits, maxima)
        return True

    @_jit
    def measure_rms_norm_pair_rows(out_bits, residual_out_bits, code, x_bits, residual_bits, weight, eps,
                                   out_budget, residual_out_budget, mantissa_bits, overflow, smallest_normal_bits,
                                   collect_threshold, count_threshold, worst_threshold, out_results,
                                   residual_out_results):
        """Measure a block of both outputs of RMSNorm with a residual, reading the inputs once.

        Each row's rounded sum is measured against ``residual_out_bits``, then normalized in
        place and measured against ``out_bits``, as `measure_rms_norm_rows` does for each
        output alone. ``out_results`` and ``residual_out_results`` hold each output's result
        arrays in `measure_rows` order.
        """
        rows, hidden = out_bits.shape
        offset_scale = 2.0 ** (52 - mantissa_bits)
        reference_row, other, decoded, ulp = _row_buffers(hidden)
        reference_bits_row = reference_row.view(np.uint64)
        frames, partial = _pairwise_stack()
        out_maxima_bits = np.zeros(3, np.int64)
        residual_out_maxima_bits = np.zeros(3, np.int64)
        out_results[COUNTS][:] = 0
        residual_out_results[COUNTS][:] = 0
        for i in range(rows):
            _rounded_input_row(x_bits[i], residual_bits[i], True, code, overflow, smallest_normal_bits,
                               offset_scale, reference_row, other)
            if not _measure_row(i, residual_out_bits[i], code, reference_row, reference_bits_row,
                                residual_out_budget, mantissa_bits, overflow, smallest_normal_bits,
                                collect_threshold, count_threshold, worst_threshold, decoded, ulp, frames, partial,
                                residual_out_results[0], residual_out_results[1], residual_out_results[2],
                                residual_out_results[3], residual_out_results[4], residual_out_results[5],
                                residual_out_results[6], residual_out_maxima_bits, residual_out_results[COUNTS]):
                return False
            if not _normalize_row(reference_row, weight, eps, frames, partial, reference_row):
                return False
            if not _measure_row(i, out_bits[i], code, reference_row, reference_bits_row, out_budget, mantissa_bits,
                                overflow, smallest_normal_bits, collect_threshold, count_threshold,
                                worst_threshold, decoded, ulp, frames, partial, out_results[0], out_results[1],
                                out_results[2], out_results[3], out_results[4], out_results[5], out_results[6],
                                out_maxima_bits, out_results[COUNTS]):
                return False
        _store_maxima(out_maxima_bits, out_results[MAXIMA])
        _store_maxima(residual_out_maxima_bits, residual_out_results[MAXIMA])
        return True

    @_jit
    def kth_largest(values, count):
        """Return the ``count``-th largest of non-negative float64 ``values`` (infinity and -0.0 allowed, no NaN).

        The result equals ``numpy.partition(values, values.size - count)[values.size - count]``.
        Non-negative floats order like their bit patterns. A first pass finds the smallest and
        largest pattern, a second counts the values in `SELECT_BINS` equal ranges between
        them, a third gathers the range that contains the k-th largest, and a partition
        of that range finishes. For 1.3 million values this took 2.6 ms against NumPy's
        12.6 ms on the 2-core benchmark machine.
        """
        bits = values.view(np.uint64)
        # Without the sign bit, -0.0 orders as +0.0.
        low = bits[0] & _MAGNITUDE
        high = low
        for word in bits:
            low = min(low, word & _MAGNITUDE)
            high = max(high, word & _MAGNITUDE)
        span = high - low
        shift = np.uint64(0)
        while (span >> shift) >= np.uint64(SELECT_BINS):
            shift += np.uint64(1)

        histogram = np.zeros(SELECT_BINS, np.int64)
        for word in bits:
            histogram[((word & _MAGNITUDE) - low) >> shift] += 1
        # Walk down from the top bin until it and the bins above it contain ``count`` values.
        chosen = SELECT_BINS - 1
        above = 0
        while above + histogram[chosen] < count:
            above += histogram[chosen]
            chosen -= 1

        gathered = np.empty(histogram[chosen])
        filled = 0
        for index in range(bits.size):
            if ((bits[index] & _MAGNITUDE) - low) >> shift == chosen:
                gathered[filled] = values[index]
                filled += 1
        rank = count - above
        return np.partition(gathered, gathered.size - rank)[gathered.size - rank]

else:
    decode_row = pairwise_sum = reference_rows = measure_rows = measure_rms_norm_rows = \
        measure_rms_norm_pair_rows = kth_largest = _unavailable
