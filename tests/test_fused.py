"""The Numba kernels give the same bits and records as the NumPy path they replace."""

import math

import numpy as np
import pytest

from precision_suite import fused, metrics
from precision_suite.dtypes import numpy_dtype, round_to_dtype, to_float64
from precision_suite.inputs import make_inputs
from precision_suite.metrics import measure, ulp_error, use_fused
from precision_suite.reference import compute_reference
from precision_suite.spec import CaseSpec

from test_metrics import DTYPE_NAMES, _mixed_outputs, _perturbed_actual

needs_numba = pytest.mark.skipif(not fused.AVAILABLE, reason="Numba is not importable")


def _bits(array):
    return np.ascontiguousarray(array).view(np.uint64)


@needs_numba
@pytest.mark.parametrize("count", [*range(0, 40), 127, 128, 129, 136, 1000, 4096, 8191, 8192, 8200, 20_000])
def test_pairwise_sum_matches_numpy_reduce(count):
    rng = np.random.default_rng(count)
    values = rng.random(count) * np.exp(rng.normal(size=count) * 8)
    expected = np.add.reduce(values[None, :], axis=1)[0]
    assert 0.0 + fused.pairwise_sum(values, 0, count) == expected


def _selection_values(kind, size, rng):
    """Return non-negative ULP-like values: spread, tied, with infinities, zeros of either sign or many binades."""
    if kind == "spread":
        return rng.random(size) * 0.2 + 0.3
    if kind == "ties":
        return rng.integers(0, 3, size) * 0.25
    if kind == "infinities":
        values = rng.random(size)
        values[rng.random(size) < 0.3] = np.inf
        return values
    if kind == "zeros":
        return np.zeros(size)
    if kind == "signed_zeros":
        values = rng.random(size)
        values[rng.random(size) < 0.5] = -0.0
        return values
    return np.exp(rng.normal(0.0, 30.0, size))


@needs_numba
@pytest.mark.parametrize("kind", ["spread", "ties", "infinities", "zeros", "signed_zeros", "binades"])
@pytest.mark.parametrize("size", [1, 2, 7, 1000, 200_000])
def test_kth_largest_matches_partition(kind, size):
    rng = np.random.default_rng(size)
    values = _selection_values(kind, size, rng)
    for count in sorted({1, max(1, size // 100), max(1, size // 2), size}):
        expected = np.partition(values, size - count)[size - count]
        assert fused.kth_largest(values, count) == expected, f"count {count}"


@pytest.mark.parametrize("kernel", [pytest.param(True, marks=needs_numba), False], ids=["fused", "numpy"])
def test_largest_values_compacts_to_exact_value(kernel):
    rng = np.random.default_rng(9)
    blocks = [rng.random(40_000) * rng.integers(1, 4) for _ in range(6)]
    largest = metrics._LargestValues(1000, fused=kernel)
    for block in blocks:
        largest.add(-math.inf, block)

    expected = np.sort(np.concatenate(blocks))[-1000]
    assert largest.threshold > 0.0
    assert largest.size < 2 * 1000 + metrics.BLOCK_ELEMENTS
    assert largest.kth_largest() == expected


@needs_numba
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_decode_row_every_bit_pattern(name):
    patterns = np.arange(2**16, dtype=np.uint16)
    decoded = np.empty(patterns.size)
    fused.decode_row(patterns, fused.DTYPE_CODES[name], decoded)
    expected = to_float64(patterns.view(numpy_dtype(name)))
    assert np.array_equal(decoded, expected, equal_nan=True)
    assert np.array_equal(np.signbit(decoded), np.signbit(expected))


@needs_numba
@pytest.mark.parametrize("name", DTYPE_NAMES)
@pytest.mark.parametrize(("block_rows", "threads"), [(None, 1), (1, 1), (5, 2)])
def test_measure_fused_matches_numpy_with_nonfinite(name, block_rows, threads):
    # Rows 3, 7 and 11 hold NaN, infinities and a sign flip, so some blocks are declined.
    outputs = _mixed_outputs(name)
    expected = measure(outputs, fused=False)
    # repr compares NaN fields (a NaN actual at the worst element) as equal; == would not.
    assert repr(measure(outputs, block_rows=block_rows, threads=threads, fused=True)) == repr(expected)


@needs_numba
@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_measure_fused_matches_numpy_on_edge_values(name):
    rng = np.random.default_rng(4)
    reference = np.concatenate([rng.normal(size=4004), rng.normal(size=96) * float(metrics.finfo(name).smallest_normal)])
    actual = _perturbed_actual(reference, name, rng)
    outputs = [("out", actual.reshape(41, 100), reference.reshape(41, 100), 1.0)]
    assert measure(outputs, fused=True, block_rows=3) == measure(outputs, fused=False)


@pytest.mark.parametrize("kernel", [pytest.param(True, marks=needs_numba), False], ids=["fused", "numpy"])
def test_measure_sampled_bound_gives_exact_p99(monkeypatch, kernel):
    monkeypatch.setattr(metrics, "PILOT_MIN_ELEMENTS", 1000)
    monkeypatch.setattr(metrics, "PILOT_ELEMENTS", 500)
    rng = np.random.default_rng(5)
    reference = rng.normal(size=(200, 64))
    actual = _perturbed_actual(reference.ravel(), "bfloat16", rng).reshape(reference.shape)
    ulp = ulp_error(actual, reference, "bfloat16")

    record = measure([("out", actual, reference, 1.0)], block_rows=7, fused=kernel)

    assert record.p99_ulp_error == np.percentile(ulp, 99, method="higher")
    assert record == measure([("out", actual, reference, 1.0)], block_rows=1000, fused=kernel)


@pytest.mark.parametrize("kernel", [pytest.param(True, marks=needs_numba), False], ids=["fused", "numpy"])
def test_measure_unrepresentative_sample_falls_back(monkeypatch, kernel):
    monkeypatch.setattr(metrics, "PILOT_MIN_ELEMENTS", 1000)
    monkeypatch.setattr(metrics, "PILOT_ELEMENTS", 160)
    passes = []
    measure_pass = metrics._measure_pass
    monkeypatch.setattr(metrics, "_measure_pass", lambda *args: passes.append(args[4]) or measure_pass(*args))
    # 2000 rows of 8: the sample takes 20 evenly spaced rows. Half of them, and no other
    # row, are 1 ulp off: 0.5% of all elements, so the 99th percentile is 0 while the
    # sample's bound is 1.
    reference = np.ones((2000, 8))
    actual = round_to_dtype(reference, "float16")
    sampled = np.unique(np.linspace(0, 1999, 20).astype(np.int64))
    actual[sampled[::2]] = np.float16(1.0 + 2.0**-10)
    ulp = ulp_error(actual, reference, "float16")

    record = measure([("out", actual, reference, 4.0)], fused=kernel)

    assert passes == [1.0, -math.inf]
    assert record.p99_ulp_error == np.percentile(ulp, 99, method="higher") == 0.0
    assert record.max_ulp_error == 1.0
    assert record.mean_ulp_error == pytest.approx(ulp.mean(), rel=1e-15)


@needs_numba
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize(("shape", "x_dist"), [
    ((3, 41, 96), "outlier_channels"),
    ((9, 4096), "normal"),
    ((5, 300), "fp16_overflow"),
    ((4, 7), "tiny"),
])
def test_reference_fused_matches_numpy(dtype, residual, shape, x_dist):
    spec = CaseSpec("rms_norm", shape, dtype, 1e-6, x_dist, "near_one", residual, 5)
    inputs = make_inputs(spec)
    expected = compute_reference(spec, inputs, fused=False)
    actual = compute_reference(spec, inputs, block_rows=2, threads=2, fused=True)

    assert np.array_equal(_bits(actual.out), _bits(expected.out))
    if residual:
        assert np.array_equal(_bits(actual.residual_out), _bits(expected.residual_out))


@needs_numba
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("residual", [False, True])
def test_reference_fused_declines_nonfinite_rows(residual):
    spec = CaseSpec("rms_norm", (6, 16), "float16", 1e-6, "normal", "ones", residual, 6)
    inputs = make_inputs(spec)
    inputs.x[2, 3] = np.inf
    inputs.x[4, 0] = np.nan
    if residual:
        inputs.residual[1, 1] = np.float16(65504.0)
        inputs.x[1, 1] = np.float16(65504.0)
    expected = compute_reference(spec, inputs, fused=False)
    actual = compute_reference(spec, inputs, block_rows=1, fused=True)

    assert np.array_equal(_bits(actual.out), _bits(expected.out))
    if residual:
        assert math.isinf(actual.residual_out[1, 1])
        assert np.array_equal(_bits(actual.residual_out), _bits(expected.residual_out))


def test_use_fused_without_numba(monkeypatch):
    monkeypatch.setattr(fused, "AVAILABLE", False)
    float32 = np.dtype(np.float32)

    assert use_fused(None, [float32]) is False
    assert use_fused(False, [float32]) is False
    with pytest.raises(ValueError, match="Numba is not importable"):
        use_fused(True, [float32])


def test_measure_without_numba_matches(monkeypatch):
    outputs = _mixed_outputs("bfloat16")
    expected = repr(measure(outputs, fused=False))
    monkeypatch.setattr(fused, "AVAILABLE", False)
    assert repr(measure(outputs)) == expected


@needs_numba
def test_use_fused_rejects_unsupported_dtype():
    with pytest.raises(ValueError, match="got float64"):
        use_fused(True, [np.dtype(np.float64)], ("float16", "bfloat16", "float32"))
    assert use_fused(None, [np.dtype(np.float64)], ("float16", "bfloat16", "float32")) is False
