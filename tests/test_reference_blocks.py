"""The float64 reference gives the same bits for every block size and thread count."""

import numpy as np
import pytest

from precision_suite.dtypes import round_to_dtype, to_float64
from precision_suite.inputs import make_inputs
from precision_suite.reference import compute_reference, rms_norm_float64
from precision_suite.spec import CaseSpec


def _bits(array):
    return np.ascontiguousarray(array).view(np.uint64)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize(("block_rows", "threads"), [(1, 1), (7, 2), (None, 3)])
def test_reference_blocks_and_threads_match(dtype, residual, block_rows, threads):
    spec = CaseSpec("rms_norm", (3, 41, 96), dtype, 1e-6, "outlier_channels", "near_one", residual, 5)
    inputs = make_inputs(spec)
    whole = compute_reference(spec, inputs, block_rows=10_000)
    blocked = compute_reference(spec, inputs, block_rows=block_rows, threads=threads)

    assert np.array_equal(_bits(blocked.out), _bits(whole.out))
    if residual:
        assert np.array_equal(_bits(blocked.residual_out), _bits(whole.residual_out))


def test_reference_residual_out_is_rounded_sum():
    spec = CaseSpec("rms_norm", (64, 32), "bfloat16", 1e-6, "normal", "ones", True, 9)
    inputs = make_inputs(spec)
    expected = to_float64(round_to_dtype(to_float64(inputs.x) + to_float64(inputs.residual), "bfloat16"))
    assert np.array_equal(compute_reference(spec, inputs, block_rows=5).residual_out, expected)


def test_reference_matches_unblocked_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    weight = rng.normal(size=16).astype(np.float32)
    wide = x.astype(np.float64)
    expected = wide / np.sqrt(np.mean(wide * wide, axis=-1, keepdims=True) + 1e-5) * weight.astype(np.float64)
    np.testing.assert_allclose(rms_norm_float64(x, weight, 1e-5, block_rows=3, threads=2), expected, rtol=1e-14)


@pytest.mark.parametrize(("argument", "value"), [("block_rows", 0), ("threads", 0)])
def test_reference_rejects_invalid_blocking(argument, value):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=f"{argument} must be at least 1, got 0"):
        rms_norm_float64(x, np.ones(4, np.float32), 1e-6, **{argument: value})
