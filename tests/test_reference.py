"""The float64 reference against exact rational and high-precision arithmetic."""

import decimal
from fractions import Fraction

import numpy as np
import pytest

from precision_suite.dtypes import round_to_dtype, to_float64
from precision_suite.inputs import make_inputs
from precision_suite.reference import compute_reference, rms_norm_float64
from precision_suite.spec import CaseSpec

decimal.getcontext().prec = 60


def exact_rms_norm(row, weight, eps):
    """Return RMSNorm of one row in 60-digit decimal arithmetic from exact inputs."""
    values = [Fraction(float(value)) for value in row]
    mean_square = sum(value * value for value in values) / len(values) + Fraction(eps)
    root = decimal.Decimal(mean_square.numerator) / decimal.Decimal(mean_square.denominator)
    inverse = 1 / root.sqrt()
    return [float(decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator) * inverse
                  * decimal.Decimal(float(w))) for value, w in zip(values, weight)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("x_dist", ["normal", "outlier_channels", "tiny", "constant_rows"])
def test_reference_matches_exact(dtype, x_dist):
    spec = CaseSpec(op="rms_norm", shape=(3, 37), dtype=dtype, eps=1e-6, x_dist=x_dist, w_dist="normal",
                    residual=False, seed=11)
    inputs = make_inputs(spec)
    reference = compute_reference(spec, inputs).out

    for row_index in range(3):
        exact = exact_rms_norm(inputs.x[row_index], inputs.weight, spec.eps)
        # A few float64 roundings: well inside 1e-14 relative for every dtype.
        np.testing.assert_allclose(reference[row_index], exact, rtol=1e-14, atol=0)


def test_float64_reference_exact_wide_rows():
    # Equal terms make a naive float64 sum drift; the reference's exact sum must not.
    hidden = 4099
    x = np.full((1, hidden), 0.1)
    weight = np.ones(hidden)
    exact = exact_rms_norm(x[0, :3], weight[:3], 1e-6)[0]
    assert abs(rms_norm_float64(x, weight, 1e-6)[0, 0] - exact) <= 2 * np.spacing(exact)


def test_residual_contract():
    spec = CaseSpec(op="rms_norm", shape=(4, 16), dtype="bfloat16", eps=1e-5, x_dist="normal", w_dist="ones",
                    residual=True, seed=3)
    inputs = make_inputs(spec)
    reference = compute_reference(spec, inputs)

    summed = round_to_dtype(to_float64(inputs.x) + to_float64(inputs.residual), "bfloat16")
    assert np.array_equal(reference.residual_out, to_float64(summed))
    # The output normalizes the rounded sum, not the exact one.
    np.testing.assert_array_equal(reference.out, rms_norm_float64(summed, inputs.weight, spec.eps))


def test_zero_row_gives_zero():
    out = rms_norm_float64(np.zeros((1, 8), np.float16), np.ones(8, np.float16), 1e-12)
    assert (out == 0).all()


def test_constant_row_is_weight_times_sign():
    weight = np.linspace(0.5, 1.5, 8)
    out = rms_norm_float64(np.full((1, 8), -3.0), weight, 1e-12)
    np.testing.assert_allclose(out[0], -weight, rtol=1e-12)


def test_blocks_do_not_change_result():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 33)).astype(np.float32)
    weight = rng.normal(size=33)
    np.testing.assert_array_equal(rms_norm_float64(x, weight, 1e-6, block_rows=7),
                                  rms_norm_float64(x, weight, 1e-6, block_rows=1000))
