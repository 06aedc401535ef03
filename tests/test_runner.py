"""Running one backend on one case: verdicts, error rows and the mismatch message."""

import dataclasses

import numpy as np
import pytest

from precision_suite.backends.base import BackendOutput
from precision_suite.errors import ResourceLimitError
from precision_suite.runner import check_memory, estimate_case_bytes, run_backend
from precision_suite.spec import CaseSpec
from tests.helpers import NumpyBackend

SPEC = CaseSpec(op="rms_norm", shape=(4, 96), dtype="float16", eps=0.05, x_dist="normal", w_dist="near_one",
                residual=True, seed=5)


def test_correct_backend_passes():
    result = run_backend(SPEC, NumpyBackend("exact"))
    assert result.status == "passed"
    assert result.record.max_ulp_error <= 0.5
    assert result.record.bitwise_equal_frac == 1.0


def test_backend_ignoring_eps_fails_with_message():
    result = run_backend(SPEC, NumpyBackend("no_eps", ignore_eps=True))
    lines = result.message.splitlines()

    assert result.status == "failed"
    assert lines[0] == ("no_eps on cpu failed case {}: rms_norm float16 shape [4, 96] eps 0.05 x_dist normal "
                        "(x_scale 1) w_dist near_one residual true seed 5").format(SPEC.case_id)
    assert lines[1].startswith(f"{result.record.over_budget} of 768 elements exceed the budget of 1 ulp "
                               "(0.515625 ulp for residual_out)")
    assert lines[2].startswith("worst element out[")
    assert "ulp (budget 1)" in lines[2]
    assert lines[3].startswith("next worst: ")
    assert lines[4].startswith("keep it as a regression case: precision-suite save '{")
    assert lines[5] == f"reproduce: precision-suite repro '{SPEC.to_json()}' --backend no_eps"


def test_raising_backend_is_error_row():
    def explode(output):
        # The availability probe runs 2 x 8; raise only on the real case, as a kernel bug would.
        if output.out.shape[-1] > 8:
            raise RuntimeError("CUDA error: an illegal memory access")
        return output

    result = run_backend(SPEC, NumpyBackend("raises", transform=explode))
    assert result.status == "error"
    assert result.message == "raises raised RuntimeError: CUDA error: an illegal memory access"
    assert result.row()["status"] == "error"


def test_backend_failing_its_probe_is_unavailable():
    def explode(output):
        raise RuntimeError("no kernel image is available for execution on the device")

    result = run_backend(SPEC, NumpyBackend("no_image", transform=explode))
    assert result.status == "unavailable"
    assert result.message == "RuntimeError: no kernel image is available for execution on the device"


def test_wrong_shape_is_error_row():
    result = run_backend(SPEC, NumpyBackend("short", transform=lambda out: dataclasses.replace(out, out=out.out[:2])))
    assert result.status == "error"
    assert result.message == "out has shape [2, 96], expected [4, 96]"


def test_wrong_dtype_is_error_row():
    widen = lambda out: dataclasses.replace(out, out=out.out.astype(np.float32))  # noqa: E731
    result = run_backend(SPEC, NumpyBackend("wide", transform=widen))
    assert result.status == "error"
    assert result.message == "out has dtype float32, expected float16"


def test_missing_residual_out_is_error_row():
    result = run_backend(SPEC, NumpyBackend("no_residual", transform=lambda out: BackendOutput(out.out)))
    assert result.status == "error"
    assert result.message.startswith("residual_out is NoneType")


def test_nan_output_fails_as_nonfinite():
    def poison(output):
        out = output.out.copy()
        out[1, 3] = np.nan
        return dataclasses.replace(output, out=out)

    result = run_backend(SPEC, NumpyBackend("nan", transform=poison))
    assert result.status == "failed"
    assert result.record.nonfinite_mismatches == 1
    assert "1 elements are NaN or inf where the reference is finite" in result.message
    assert "worst element out[1, 3]: actual nan" in result.message


def test_unavailable_dtype_is_unavailable_row():
    backend = NumpyBackend("fp32_only")
    backend.dtypes = ("float32",)
    result = run_backend(SPEC, backend)
    assert result.status == "unavailable"
    assert result.message == ("fp32_only does not support float16 on any device; its dtypes are float32 where "
                              "the device has the kernel")


def test_row_has_all_case_columns():
    from precision_suite.results import CASE_COLUMNS

    row = run_backend(SPEC, NumpyBackend("exact")).row("run-1")
    assert [column for column in CASE_COLUMNS if column not in row] == []
    assert row["run_id"] == "run-1"
    assert row["shape"] == "4x96"


def test_memory_estimate_refuses_large_case():
    big = SPEC.replace(shape=(65536, 65536), dtype="float32")
    with pytest.raises(ResourceLimitError) as raised:
        check_memory(big, limit=2**30)
    message = str(raised.value)
    assert message.startswith(f"case {big.case_id} (shape [65536, 65536], float32) needs about ")
    assert "GiB but the limit is 1.00 GiB" in message
    assert "PRECISION_SUITE_MEMORY_LIMIT" in message


def test_memory_refusal_is_error_row(monkeypatch):
    monkeypatch.setenv("PRECISION_SUITE_MEMORY_LIMIT", "1000")
    result = run_backend(SPEC, NumpyBackend("exact"))
    assert result.status == "error"
    assert "needs about" in result.message


def test_memory_estimate_grows_with_residual():
    assert estimate_case_bytes(SPEC) > estimate_case_bytes(SPEC.replace(residual=False))
