"""Inputs made from a spec alone: determinism, golden hashes and the distributions."""

import hashlib

import numpy as np
import pytest

from precision_suite.dtypes import to_float64
from precision_suite.inputs import make_inputs
from precision_suite.spec import CaseSpec


def spec(**changes):
    values = dict(op="rms_norm", shape=(8, 64), dtype="float32", eps=1e-6, x_dist="normal",
                  w_dist="near_one", residual=False, seed=7, x_scale=1.0)
    values.update(changes)
    return CaseSpec(**values)


def digest(inputs):
    hasher = hashlib.sha256()
    for array in (inputs.x, inputs.weight, inputs.residual):
        if array is not None:
            hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()[:16]


GOLDEN = [
    spec(),
    spec(dtype="bfloat16", x_dist="outlier_channels", residual=True, seed=2**64 - 1),
    spec(dtype="float16", shape=(2, 3, 769), x_dist="fp16_overflow", w_dist="normal"),
    spec(dtype="float64", x_dist="uniform", x_scale=1000.0, w_dist="near_zero", residual=True),
]


GOLDEN_HASHES = ["b7bb339a07ff804a", "a66edcc6782899cd", "230a897f9fed6051", "8577985bbecb291b"]


@pytest.mark.parametrize(("case", "expected"), list(zip(GOLDEN, GOLDEN_HASHES)), ids=[case.case_id for case in GOLDEN])
def test_golden_input_hashes(case, expected):
    # NOTE: a NumPy release that changes PCG64 or its distributions changes these hashes.
    assert digest(make_inputs(case)) == expected


def test_same_spec_same_bits():
    first = make_inputs(spec(dtype="bfloat16", residual=True))
    second = make_inputs(spec(dtype="bfloat16", residual=True))
    assert digest(first) == digest(second)


def test_weight_independent_of_shape_rows():
    assert np.array_equal(make_inputs(spec(shape=(2, 64))).weight, make_inputs(spec(shape=(9, 64))).weight)


def test_inputs_have_case_dtype_and_shape():
    inputs = make_inputs(spec(dtype="bfloat16", shape=(2, 3, 5), residual=True))
    assert inputs.x.dtype.name == "bfloat16"
    assert inputs.x.shape == (2, 3, 5)
    assert inputs.residual.shape == (2, 3, 5)
    assert inputs.weight.shape == (5,)


def test_no_residual_without_flag():
    assert make_inputs(spec()).residual is None


def test_rounding_is_nearest_even_from_float64():
    inputs = make_inputs(spec(dtype="bfloat16"))
    # Rounding the rounded values again must change nothing.
    assert np.array_equal(to_float64(inputs.x).astype(inputs.x.dtype), inputs.x)


def test_constant_rows():
    x = to_float64(make_inputs(spec(x_dist="constant_rows")).x)
    assert (x == x[:, :1]).all()
    assert len(np.unique(x[:, 0])) == x.shape[0]


def test_zero_rows_alternate():
    x = to_float64(make_inputs(spec(x_dist="zero_rows")).x)
    assert (x[0::2] == 0).all()
    assert (x[1::2] != 0).any(axis=1).all()


def test_outlier_channels_are_large():
    x = to_float64(make_inputs(spec(x_dist="outlier_channels", shape=(256, 128))).x)
    channel_rms = np.sqrt((x * x).mean(axis=0))
    assert (channel_rms > 15).sum() == 2
    assert np.median(channel_rms) < 1.5


def test_tiny_values_mean_square_below_eps():
    case = spec(x_dist="tiny", eps=1e-4, shape=(16, 256))
    x = to_float64(make_inputs(case).x)
    assert ((x * x).mean(axis=-1) < case.eps).all()


def test_fp16_overflow_elements_fit_but_squares_overflow():
    x = make_inputs(spec(x_dist="fp16_overflow", dtype="float16")).x
    assert np.isfinite(x).all()
    with np.errstate(over="ignore"):
        assert np.isinf(x * x).all()


def test_x_scale_scales_normal():
    small = to_float64(make_inputs(spec(x_scale=1e-3, shape=(64, 64))).x)
    assert 5e-4 < small.std() < 2e-3


@pytest.mark.parametrize(("w_dist", "low", "high"), [("ones", 1.0, 1.0), ("near_one", 0.5, 1.5),
                                                      ("near_zero", -0.01, 0.01)])
def test_weight_distributions(w_dist, low, high):
    weight = to_float64(make_inputs(spec(w_dist=w_dist)).weight)
    assert low <= weight.min()
    assert weight.max() <= high


def test_large_scale_float16_inputs_stay_finite():
    case = spec(dtype="float16", x_dist="outlier_channels", x_scale=1000.0, shape=(64, 128), residual=True)
    inputs = make_inputs(case)
    x = to_float64(inputs.x)
    residual = to_float64(inputs.residual)
    assert np.isfinite(x).all()
    assert np.abs(x).max() <= 65504 / 2
    assert np.isfinite(x + residual).all()
