"""ULP error, ULP distance and the error record on hand-computed values."""

import math

import ml_dtypes
import numpy as np
import pytest

from precision_suite.metrics import bitwise_equal, measure, spacing, ulp_distance, ulp_error

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
