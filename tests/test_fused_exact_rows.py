"""Records of outputs with exact rows, where the fused kernels skip the ULP row sum."""

import numpy as np
import pytest

from precision_suite import fused
from precision_suite.dtypes import bits_dtype, round_to_dtype, to_float64
from precision_suite.metrics import measure

needs_numba = pytest.mark.skipif(not fused.AVAILABLE, reason="Numba is not importable")


def _outputs(name, exact_rows):
    """Return `measure` input whose rows in ``exact_rows`` have zero ULP error.

    The reference holds values of dtype ``name``, so those rows match it exactly.
    """
    rng = np.random.default_rng(11)
    reference = to_float64(round_to_dtype(rng.normal(size=(12, 136)), name))
    actual = round_to_dtype(reference, name)
    bits = actual.view(bits_dtype(name))
    inexact = np.setdiff1d(np.arange(12), exact_rows)
    bits[inexact, ::3] += 1
    return [("out", actual, reference, 1.0)]


@needs_numba
@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("exact_rows", [list(range(12)), [0, 5, 11], []])
def test_exact_rows_record_matches_numpy(name, exact_rows):
    outputs = _outputs(name, exact_rows)

    expected = repr(measure(outputs, fused=False))
    assert repr(measure(outputs, fused=True)) == expected
    assert repr(measure(outputs, block_rows=1, threads=2, fused=True)) == expected


@needs_numba
def test_exact_output_mean_is_zero():
    record = measure(_outputs("float32", list(range(12))), fused=True)

    assert record.mean_ulp_error == 0.0
    assert record.max_ulp_error == 0.0
