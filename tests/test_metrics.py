"""ULP error, ULP distance and the error record on hand-computed values."""

import math

import ml_dtypes
import numpy as np
import pytest

from precision_suite.dtypes import bits_dtype, numpy_dtype, round_to_dtype, to_float64
from precision_suite.metrics import (
    _DtypeConstants,
    _fast_block,
    _general_block,
    _Scratch,
    bitwise_equal,
    decode_float64,
    measure,
    spacing,
    ulp_distance,
    ulp_error,
)

F16 = np.float16
BF16 = ml_dtypes.bfloat16


def f16(*values):
    return np.array(values, dtype=F16)


def bf16(*values):
    return np.array(values, dtype=BF16)


# spacing


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("float16", 1.0, 2.0**-10),
        ("float16", 1.5, 2.0**-10),
        ("float16", 2.0, 2.0**-9),
        ("float16", -3.0, 2.0**-9),
        ("float16", 65504.0, 32.0),
        ("float16", 1e6, 32.0),
        ("float16", 2.0**-14, 2.0**-24),
        ("float16", 2.0**-20, 2.0**-24),
        ("float16", 0.0, 2.0**-24),
        ("bfloat16", 1.0, 2.0**-7),
        ("bfloat16", 2.0**-126, 2.0**-133),
        ("bfloat16", 0.0, 2.0**-133),
        ("bfloat16", 3.0e38, 2.0**120),
        ("float32", 1.0, 2.0**-23),
        ("float32", 0.0, 2.0**-149),
        ("float64", 1.0, 2.0**-52),
        ("float64", 0.0, 2.0**-1074),
    ],
)
def test_spacing_hand_values(name, value, expected):
    assert spacing(np.array([value]), name)[0] == expected


def test_spacing_nonfinite_is_nan():
    assert np.isnan(spacing(np.array([np.inf, np.nan]), "float16")).all()


# ulp_error


def test_ulp_error_one_step_float16():
    assert ulp_error(f16(1.0 + 2.0**-10), np.array([1.0]), "float16")[0] == 1.0


def test_ulp_error_half_step_is_half():
    assert ulp_error(f16(1.0), np.array([1.0 + 2.0**-11]), "float16")[0] == 0.5


def test_ulp_error_uses_reference_binade():
    # 2 - 2^-10 against exact 2: the spacing at 2 is 2^-9, so the gap of 2^-10 is half an ulp.
    assert ulp_error(f16(2.0 - 2.0**-10), np.array([2.0]), "float16")[0] == 0.5


def test_ulp_error_signed_zeros_equal():
    assert ulp_error(f16(-0.0), np.array([0.0]), "float16")[0] == 0.0
    assert ulp_error(bf16(0.0), np.array([-0.0]), "bfloat16")[0] == 0.0


def test_ulp_error_subnormals_float16():
    smallest = 2.0**-24
    assert ulp_error(f16(3 * smallest), np.array([smallest]), "float16")[0] == 2.0
    assert ulp_error(f16(0.0), np.array([smallest]), "float16")[0] == 1.0


def test_ulp_error_subnormals_bfloat16():
    smallest = 2.0**-133
    assert ulp_error(bf16(2 * smallest), np.array([-smallest]), "bfloat16")[0] == 3.0


def test_ulp_error_largest_finite():
    assert ulp_error(f16(65504.0), np.array([65504.0 - 16]), "float16")[0] == 0.5
    assert ulp_error(f16(65472.0), np.array([65504.0]), "float16")[0] == 1.0


def test_ulp_error_same_infinity_is_zero():
    assert ulp_error(f16(np.inf), np.array([np.inf]), "float16")[0] == 0.0


def test_ulp_error_overflowing_reference_accepts_infinity():
    # 1e6 rounds to +inf in float16, so a kernel returning inf is correctly rounded.
    assert ulp_error(f16(np.inf), np.array([1e6]), "float16")[0] == 0.0


def test_ulp_error_nonfinite_mismatches_are_infinite():
    errors = ulp_error(f16(np.nan, np.inf, 1.0, -np.inf), np.array([1.0, 1.0, np.inf, np.inf]), "float16")
    assert np.isinf(errors).all()


def test_ulp_error_both_nan_is_zero():
    assert ulp_error(bf16(np.nan), np.array([np.nan]), "bfloat16")[0] == 0.0


def test_ulp_error_keeps_shape():
    assert ulp_error(np.zeros((2, 3), F16), np.zeros((2, 3)), "float16").shape == (2, 3)


# ulp_distance


def test_ulp_distance_adjacent_values():
    assert ulp_distance(f16(1.0), f16(1.0 + 2.0**-10))[0] == 1.0


def test_ulp_distance_signed_zeros():
    assert ulp_distance(f16(0.0), f16(-0.0))[0] == 0.0
    assert ulp_distance(bf16(-0.0), bf16(0.0))[0] == 0.0


def test_ulp_distance_across_zero_counts_both_sides():
    smallest = 2.0**-24
    assert ulp_distance(f16(-smallest), f16(smallest))[0] == 2.0


def test_ulp_distance_largest_finite_to_infinity():
    assert ulp_distance(f16(65504.0), f16(np.inf))[0] == 1.0
    assert ulp_distance(bf16(-3.3895313892515355e38), bf16(-np.inf))[0] == 1.0


def test_ulp_distance_opposite_extremes_float16_no_wrap():
    # 0x7bff and 0xfbff are 2 * 0x7bff steps apart; int16 arithmetic would wrap here.
    assert ulp_distance(f16(65504.0), f16(-65504.0))[0] == 2 * 0x7BFF


def test_ulp_distance_float64_extremes():
    largest = np.finfo(np.float64).max
    distance = ulp_distance(np.array([largest]), np.array([-largest]))[0]
    assert distance == pytest.approx(2.0 * 0x7FEFFFFFFFFFFFFF)


def test_ulp_distance_nan_is_nan():
    assert np.isnan(ulp_distance(f16(np.nan), f16(1.0))[0])


def test_ulp_distance_rejects_mixed_dtypes():
    with pytest.raises(TypeError, match="one dtype"):
        ulp_distance(f16(1.0), bf16(1.0))


def test_bitwise_equal_distinguishes_signed_zero():
    assert not bitwise_equal(f16(0.0), f16(-0.0))[0]
    assert bitwise_equal(bf16(1.5), bf16(1.5))[0]


# measure


def test_measure_counts_and_worst_element():
    reference = np.array([[1.0, 2.0, 4.0, 8.0]])
    actual = f16(1.0, 2.0 + 2.0**-9, 4.0 + 3 * 2.0**-8, 8.0).reshape(1, 4)
    record = measure([("out", actual, reference, 1.0)])

    assert record.elements == 4
    assert record.max_ulp_error == 3.0
    assert record.over_budget == 1
    assert record.frac_over_budget == 0.25
    assert record.bitwise_equal_frac == 0.5
    assert record.nonfinite_mismatches == 0
    assert record.worst[0].index == (0, 2)
    assert record.worst[0].actual == 4.0 + 3 * 2.0**-8
    assert record.worst[0].reference == 4.0
    assert record.max_abs_error == 3 * 2.0**-8


def test_measure_relative_error_floor():
    # Reference 0, actual the smallest subnormal: the denominator is the smallest normal.
    record = measure([("out", f16(2.0**-24).reshape(1, 1), np.zeros((1, 1)), 1.0)])
    assert record.max_rel_error == pytest.approx(2.0**-24 / 2.0**-14)


def test_measure_nonfinite_counted_on_their_own():
    record = measure([("out", f16(np.nan, 1.0).reshape(1, 2), np.array([[1.0, 1.0]]), 1.0)])
    assert record.nonfinite_mismatches == 1
    assert math.isinf(record.max_ulp_error)
    assert record.mean_ulp_error == 0.0


def test_measure_per_output_budgets():
    out = f16(1.0).reshape(1, 1)
    residual = f16(1.0 + 2.0**-10).reshape(1, 1)
    record = measure([
        ("out", out, np.array([[1.0 + 2.0**-11]]), 1.0),
        ("residual_out", residual, np.array([[1.0 + 2.0**-11]]), 0.25),
    ])
    assert record.over_budget == 1
    assert record.worst[0].output in {"out", "residual_out"}
    assert record.ulp_budget == 1.0


def test_measure_blocks_match_single_block():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(37, 19))
    actual = (reference * (1 + 1e-3 * rng.normal(size=reference.shape))).astype(F16)
    whole = measure([("out", actual, reference, 1.0)], block_rows=1000)
    blocked = measure([("out", actual, reference, 1.0)], block_rows=4)
    assert whole == blocked


# measure: fast path, blocks, threads and streaming statistics


DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")


def _edge_reference(name, rng, size):
    """Return float64 references mixing normal, subnormal, zero, tie and near-overflow values."""
    info = ml_dtypes.finfo(numpy_dtype(name))
    tiny = float(info.smallest_subnormal)
    largest = float(info.max)
    values = np.concatenate([
        rng.normal(size=size),
        rng.normal(size=size) * float(info.smallest_normal),
        rng.integers(-8, 8, size=size) * tiny * 1.5,
        [0.0, -0.0, tiny, -tiny, largest, -largest, 1.0 + 2.0 ** -(int(info.nmant) + 1)],
        rng.uniform(0.5, 1.0, size=size) * largest,
    ])
    return values


def _perturbed_actual(reference, name, rng):
    """Return ``reference`` rounded to ``name`` and moved by -2..2 representable values at random."""
    rounded = round_to_dtype(reference, name)
    bits = rounded.view(bits_dtype(name)).astype(np.int64)
    moved = bits + rng.integers(-2, 3, size=bits.size)
    moved = np.where((moved < 0) | (moved >= 2 ** (8 * rounded.itemsize)), bits, moved)
    actual = moved.astype(bits_dtype(name)).view(numpy_dtype(name))
    return np.where(np.isfinite(actual), actual, rounded).astype(numpy_dtype(name))


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_fast_block_matches_general_block(name):
    rng = np.random.default_rng(1)
    reference = _edge_reference(name, rng, 4000)
    actual = _perturbed_actual(reference, name, rng)
    constants = _DtypeConstants.of(name)

    fast = _fast_block(actual, reference, constants, _Scratch())
    general = _general_block(actual, reference, name)

    assert fast is not None
    for fast_values, general_values in zip(fast[:3], general[:3]):
        assert np.array_equal(fast_values.view(np.uint64), general_values.view(np.uint64))
    assert fast[3] == general[3]


@pytest.mark.parametrize("name", ("float16", "bfloat16", "float32"))
def test_fast_block_declines_overflowing_reference(name):
    largest = float(ml_dtypes.finfo(numpy_dtype(name)).max)
    reference = np.array([1.0, largest * 1.01])
    actual = round_to_dtype(np.array([1.0, largest]), name)
    assert _fast_block(actual, reference, _DtypeConstants.of(name), _Scratch()) is None


def test_fast_block_declines_nonfinite_actual():
    assert _fast_block(f16(1.0, np.nan), np.array([1.0, 1.0]), _DtypeConstants.of("float16"), _Scratch()) is None


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("name", ("float16", "bfloat16"))
def test_decode_float64_every_bit_pattern(name):
    values = np.arange(2**16, dtype=np.uint16).view(numpy_dtype(name))
    decoded = decode_float64(values, np.empty(values.size))
    expected = to_float64(values)
    assert np.array_equal(decoded, expected, equal_nan=True)
    assert np.array_equal(np.signbit(decoded), np.signbit(expected))


def _mixed_outputs(name, rows=23, hidden=37, seed=2):
    """Return two outputs with ties, non-finite mismatches and budget overruns in a few rows."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=(rows, hidden))
    actual = _perturbed_actual(reference.ravel(), name, rng).reshape(rows, hidden)
    actual[3, 5] = np.nan
    actual[7, :] = np.inf
    residual_reference = to_float64(round_to_dtype(rng.normal(size=(rows, hidden)), name))
    residual_actual = round_to_dtype(residual_reference, name)
    residual_actual[11, 2] = -residual_actual[11, 2]
    return [("out", actual, reference, 1.0), ("residual_out", residual_actual, residual_reference, 0.0)]


@pytest.mark.parametrize("name", DTYPE_NAMES)
@pytest.mark.parametrize(("block_rows", "threads"), [(1, 1), (4, 1), (5, 2), (None, 3), (1, 4)])
def test_measure_blocks_and_threads_match_single_block(name, block_rows, threads):
    outputs = _mixed_outputs(name)
    whole = measure(outputs, block_rows=10_000)
    # repr compares NaN fields (a NaN actual at the worst element) as equal; == would not.
    assert repr(measure(outputs, block_rows=block_rows, threads=threads)) == repr(whole)


def test_measure_threads_match_on_large_case():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(300, 1024))
    actual = _perturbed_actual(reference.ravel(), "bfloat16", rng).reshape(reference.shape)
    outputs = [("out", actual, reference, 1.0)]
    assert measure(outputs, threads=2) == measure(outputs, block_rows=300)


def test_measure_statistics_match_numpy():
    outputs = _mixed_outputs("float16", rows=41, hidden=29)
    ulp = np.concatenate([ulp_error(actual, reference, "float16").ravel() for _, actual, reference, _ in outputs])
    record = measure(outputs, block_rows=3)

    assert record.max_ulp_error == ulp.max()
    assert record.p99_ulp_error == np.percentile(ulp, 99, method="higher")
    finite = ulp[np.isfinite(ulp)]
    assert record.mean_ulp_error == pytest.approx(finite.mean(), rel=1e-15)
    assert record.nonfinite_mismatches == np.isinf(ulp).sum()


@pytest.mark.parametrize("elements", [1, 2, 99, 100, 101, 199, 1000, 4097, 70_001])
def test_measure_p99_matches_numpy_higher(elements):
    rng = np.random.default_rng(elements)
    reference = rng.normal(size=(1, elements))
    actual = _perturbed_actual(reference.ravel(), "bfloat16", rng).reshape(1, elements)
    ulp = ulp_error(actual, reference, "bfloat16")
    record = measure([("out", actual, reference, 1.0)], block_rows=1)
    assert record.p99_ulp_error == np.percentile(ulp, 99, method="higher")


def test_measure_max_ulp_is_exact_float64():
    # 0.5 + 2^-21 ulp rounds to 0.5 in float32, which would hide the overrun of a 0.5 budget.
    reference = np.array([[1.0 + 2.0**-11 - 2.0**-31]])
    actual = f16(1.0 + 2.0**-10).reshape(1, 1)
    record = measure([("out", actual, reference, 0.5)])
    assert record.over_budget == 1
    assert record.max_ulp_error == 0.5 + 2.0**-21


def test_measure_worst_ties_take_lowest_index():
    reference = np.ones((3, 4))
    actual = f16(*[1.0 + 2.0**-10] * 12).reshape(3, 4)
    for block_rows in (1, 2, 3):
        record = measure([("out", actual, reference, 2.0)], block_rows=block_rows, threads=2)
        assert [worst.index for worst in record.worst] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]


def test_measure_worst_prefers_first_output_on_ties():
    reference = np.ones((1, 2))
    actual = f16(1.0 + 2.0**-10, 1.0).reshape(1, 2)
    record = measure([("out", actual, reference, 2.0), ("residual_out", actual, reference, 2.0)])
    assert [(worst.output, worst.index) for worst in record.worst[:2]] == [("out", (0, 0)), ("residual_out", (0, 0))]


@pytest.mark.parametrize(("argument", "value"), [("block_rows", 0), ("threads", 0)])
def test_measure_rejects_invalid_blocking(argument, value):
    outputs = [("out", f16(1.0).reshape(1, 1), np.ones((1, 1)), 1.0)]
    with pytest.raises(ValueError, match=f"{argument} must be at least 1, got 0"):
        measure(outputs, **{argument: value})


def test_measure_empty_output():
    record = measure([("out", np.zeros((0, 4), F16), np.zeros((0, 4)), 1.0)])
    assert record.elements == 0
    assert record.p99_ulp_error == 0.0
    assert record.worst == ()
