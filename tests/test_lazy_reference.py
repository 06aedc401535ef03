"""A lazy reference gives the same reference bits and error records as the stored array."""

import types

import numpy as np
import pytest

from precision_suite import fused
from precision_suite.budgets import RESIDUAL_OUT_BUDGET
from precision_suite.dtypes import round_to_dtype
from precision_suite.inputs import make_inputs
from precision_suite.metrics import measure
from precision_suite.reference import RmsNormRows, compute_reference, lazy_reference
from precision_suite.runner import prepare_case, run_backend
from precision_suite.spec import CaseSpec
from tests.helpers import NumpyBackend

needs_numba = pytest.mark.skipif(not fused.AVAILABLE, reason="Numba is not importable")


def _bits(array):
    return np.ascontiguousarray(array).view(np.uint64)


def _outputs(spec, reference, lazy, seed):
    """Return `measure` inputs against the stored and the lazy reference, with the same perturbed actuals."""
    rng = np.random.default_rng(seed)
    stored, deferred = [], []
    for name, budget in (("out", 1.0), ("residual_out", 0.0)):
        values = getattr(reference, name)
        if values is None:
            continue
        actual = round_to_dtype(values * (1 + rng.normal(size=values.shape) * 2.0**-9), spec.dtype)
        stored.append((name, actual, values, budget))
        deferred.append((name, actual, getattr(lazy, name), budget))
    return stored, deferred


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize(("shape", "x_dist"), [
    ((3, 41, 96), "outlier_channels"),
    ((9, 300), "normal"),
    ((5, 300), "fp16_overflow"),
    ((4, 7), "tiny"),
])
def test_lazy_reference_bits_match(dtype, residual, shape, x_dist):
    spec = CaseSpec("rms_norm", shape, dtype, 1e-6, x_dist, "near_one", residual, 5)
    inputs = make_inputs(spec)
    stored = compute_reference(spec, inputs, fused=False)
    lazy = lazy_reference(spec, inputs)

    assert np.array_equal(_bits(np.asarray(lazy.out)), _bits(stored.out.reshape(-1, shape[-1])))
    if residual:
        assert np.array_equal(_bits(np.asarray(lazy.residual_out)), _bits(stored.residual_out.reshape(-1, shape[-1])))
    else:
        assert lazy.residual_out is None


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("x_dist", ["normal", "outlier_channels", "fp16_overflow"])
@pytest.mark.parametrize(("block_rows", "threads", "kernel"), [
    (None, 1, None), (1, 1, None), (5, 2, None), (None, 2, False), (3, 1, False),
])
def test_lazy_reference_record_matches(dtype, residual, x_dist, block_rows, threads, kernel):
    spec = CaseSpec("rms_norm", (23, 160), dtype, 1e-6, x_dist, "near_one", residual, 8)
    inputs = make_inputs(spec)
    stored, deferred = _outputs(spec, compute_reference(spec, inputs), lazy_reference(spec, inputs, fused=kernel), 3)

    expected = repr(measure(stored, fused=False))
    assert repr(measure(deferred, block_rows=block_rows, threads=threads, fused=kernel)) == expected


@pytest.mark.parametrize("residual", [False, True])
def test_lazy_reference_without_numba(monkeypatch, residual):
    spec = CaseSpec("rms_norm", (17, 64), "bfloat16", 1e-6, "normal", "near_one", residual, 4)
    inputs = make_inputs(spec)
    stored, _ = _outputs(spec, compute_reference(spec, inputs, fused=False), lazy_reference(spec, inputs), 6)
    expected = repr(measure(stored, fused=False))

    monkeypatch.setattr(fused, "AVAILABLE", False)
    lazy = lazy_reference(spec, inputs)
    _, deferred = _outputs(spec, compute_reference(spec, inputs), lazy, 6)

    assert lazy.out.fused is False
    assert repr(measure(deferred, block_rows=4, threads=2)) == expected


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("residual", [False, True])
def test_lazy_reference_nonfinite_rows_fall_back(residual):
    spec = CaseSpec("rms_norm", (6, 16), "float16", 1e-6, "normal", "ones", residual, 6)
    inputs = make_inputs(spec)
    inputs.x[2, 3] = np.inf
    inputs.x[4, 0] = np.nan
    if residual:
        inputs.x[1, 1] = np.float16(65504.0)
        inputs.residual[1, 1] = np.float16(65504.0)
    reference = compute_reference(spec, inputs, fused=False)
    stored, deferred = _outputs(spec, reference, lazy_reference(spec, inputs), 7)

    expected = measure(stored, fused=False)
    assert repr(measure(deferred, block_rows=1)) == repr(expected)
    assert repr(measure(deferred)) == repr(expected)


@needs_numba
def test_lazy_reference_pair_kernel_runs(monkeypatch):
    spec = CaseSpec("rms_norm", (12, 96), "bfloat16", 1e-6, "normal", "near_one", True, 2)
    inputs = make_inputs(spec)
    stored, deferred = _outputs(spec, compute_reference(spec, inputs), lazy_reference(spec, inputs), 2)
    calls = []
    pair_kernel = fused.measure_rms_norm_pair_rows
    monkeypatch.setattr(fused, "measure_rms_norm_pair_rows", lambda *args: calls.append(1) or pair_kernel(*args))

    record = measure(deferred, block_rows=5)

    assert len(calls) == 3
    assert repr(record) == repr(measure(stored, fused=False))


def test_lazy_reference_worst_ties_across_pairs():
    # x = 2**60 and residual 0: out's reference is exactly 1 and residual_out's is 2**60, so
    # one step up is exactly 1 ulp in both. residual_out fills the worst five in row 0 before
    # out's row 1 merges; out's equal error must still win the tie as the first output.
    hidden = 8
    spec = CaseSpec("rms_norm", (4, hidden), "float32", 1e-6, "normal", "ones", True, 1)
    inputs = types.SimpleNamespace(x=np.full((4, hidden), 2.0**60, np.float32), weight=np.ones(hidden, np.float32),
                                   residual=np.zeros((4, hidden), np.float32))
    lazy = lazy_reference(spec, inputs)
    reference = compute_reference(spec, inputs)
    assert np.all(reference.out == 1.0)

    out = np.ones((4, hidden), np.float32)
    out[1, 2] = np.nextafter(np.float32(1.0), np.float32(2.0))
    residual_out = np.full((4, hidden), 2.0**60, np.float32)
    residual_out[0, :5] = np.nextafter(np.float32(2.0**60), np.float32(2.0**61))
    stored = [("out", out, reference.out, 1.0), ("residual_out", residual_out, reference.residual_out, 0.0)]
    deferred = [("out", out, lazy.out, 1.0), ("residual_out", residual_out, lazy.residual_out, 0.0)]

    expected = measure(stored, fused=False)
    record = measure(deferred, block_rows=1)

    assert [(item.output, item.index) for item in expected.worst][:2] == [("out", (1, 2)), ("residual_out", (0, 0))]
    assert repr(record) == repr(expected)


def test_lazy_reference_rows_select_blocks():
    spec = CaseSpec("rms_norm", (10, 32), "float16", 1e-6, "normal", "near_one", True, 3)
    inputs = make_inputs(spec)
    stored = compute_reference(spec, inputs)
    lazy = lazy_reference(spec, inputs)
    picks = np.array([0, 4, 9])

    assert np.array_equal(np.asarray(lazy.out[2:5]), stored.out[2:5])
    assert np.array_equal(np.asarray(lazy.residual_out[picks]), stored.residual_out[picks])
    assert lazy.out[3, 7] == stored.out[3, 7]


def test_lazy_reference_rejects_invalid_output():
    rows = np.ones((2, 4), np.float16)
    with pytest.raises(ValueError, match="output must be 'out' or 'residual_out', got 'sum'"):
        RmsNormRows(rows, None, np.ones(4), 1e-6, "sum", False)
    with pytest.raises(ValueError, match="needs residual rows"):
        RmsNormRows(rows, None, np.ones(4), 1e-6, "residual_out", False)


def test_prepare_case_reference_is_lazy():
    spec = CaseSpec("rms_norm", (4, 96), "float16", 0.05, "normal", "near_one", True, 5)
    inputs, reference = prepare_case(spec)
    stored = compute_reference(spec, inputs)

    assert isinstance(reference.out, RmsNormRows)
    assert np.array_equal(np.asarray(reference.residual_out), stored.residual_out)
    result = run_backend(spec, NumpyBackend("exact"), budget=1.0, keep_output=True)
    expected = measure([("out", result.output.out, stored.out, 1.0),
                        ("residual_out", result.output.residual_out, stored.residual_out, RESIDUAL_OUT_BUDGET.ulp)],
                       fused=False)
    assert repr(result.record) == repr(expected)
