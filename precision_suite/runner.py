"""Run one case over backends: make inputs, compute the reference, measure, judge, record.

The per-case record (`CaseResult`) is the one source of every number: the pytest failure
message, the table row and the report all read it.
"""

import dataclasses
import functools
import hashlib
import math
import os
import time

import numpy as np

from precision_suite.backends.base import BackendOutput
from precision_suite.budgets import RESIDUAL_OUT_BUDGET, budget_for
from precision_suite.dtypes import dtype_name, numpy_dtype
from precision_suite.errors import BackendUnavailable, ResourceLimitError
from precision_suite.inputs import make_inputs
from precision_suite.messages import format_failure
from precision_suite import metrics
from precision_suite.metrics import measure
from precision_suite.reference import lazy_reference
from precision_suite.spec import CaseSpec

PASSED = "passed"
FAILED = "failed"
UNAVAILABLE = "unavailable"
ERROR = "error"

# Environment variable that overrides the memory limit for one case, in bytes.
MEMORY_LIMIT_VARIABLE = "PRECISION_SUITE_MEMORY_LIMIT"
# Seconds a reading of MemAvailable is reused, so small cases do not each read /proc/meminfo.
MEMINFO_MAX_AGE_S = 1.0

_meminfo_cache = {"read_at": -math.inf, "limit": math.inf}


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """The outcome of one backend on one case.

    Attributes
    ----------
    spec : CaseSpec
        The case.
    backend : str
        Backend name.
    device : str
        Device it ran on.
    status : str
        ``passed``, ``failed``, ``unavailable`` or ``error``.
    record : ErrorRecord or None
        Error statistics when the backend produced a well-formed output.
    message : str
        The reason for ``unavailable`` and ``error``, the failure message for ``failed``.
    duration_s : float
        Seconds spent on the backend call and its measurement.
    ulp_budget : float
        The budget the verdict used (NaN when no budget applies).
    """

    spec: object
    backend: str
    device: str
    status: str
    record: object = None
    message: str = ""
    duration_s: float = 0.0
    ulp_budget: float = math.nan
    output: object = dataclasses.field(default=None, repr=False, compare=False)
    recorded_max_ulp_error: float = math.nan

    @classmethod
    def from_row(cls, row):
        """Rebuild a result from a cases-table row, without its error record or output."""
        def number(name):
            value = row.get(name)
            return math.nan if value is None else float(value)

        return cls(CaseSpec.from_json(row["spec"]), row["backend"], row["device"], row["status"],
                   message=row.get("message") or "", duration_s=number("duration_s"),
                   ulp_budget=number("ulp_budget"), recorded_max_ulp_error=number("max_ulp_error"))

    @property
    def max_ulp_error(self):
        """Max ULP error from the record, or from the table row a result was rebuilt from."""
        return self.record.max_ulp_error if self.record is not None else self.recorded_max_ulp_error

    def row(self, run_id=""):
        """Return the cases-table row of this result."""
        spec = self.spec
        row = {
            "run_id": run_id,
            "case_id": spec.case_id,
            "seed": spec.seed,
            "backend": self.backend,
            "device": self.device,
            "dtype": spec.dtype,
            "shape": "x".join(str(dim) for dim in spec.shape),
            "eps": spec.eps,
            "x_dist": spec.x_dist,
            "x_scale": spec.x_scale,
            "w_dist": spec.w_dist,
            "residual": spec.residual,
            "status": self.status,
        }
        if self.record is not None:
            row.update(self.record.table_fields())
        else:
            row.update({
                "max_abs_error": math.nan, "max_rel_error": math.nan, "max_ulp_error": math.nan,
                "mean_ulp_error": math.nan, "p99_ulp_error": math.nan, "frac_over_budget": math.nan,
                "ulp_budget": self.ulp_budget, "bitwise_equal_frac": math.nan,
                "nonfinite_mismatches": -1, "worst_output": "", "worst_index": "",
                "actual_at_worst": math.nan, "reference_at_worst": math.nan,
            })
        row["duration_s"] = self.duration_s
        row["message"] = self.message
        row["spec"] = spec.to_json()
        return row


def estimate_case_bytes(spec, backends=1):
    """Estimate the peak bytes one case needs while one backend's output is measured.

    Counts the inputs and one backend's outputs. The reference is lazy (`lazy_reference`),
    so no full float64 array is made: it counts the block buffers of one thread instead,
    the larger of the NumPy path's float64 temporaries with a block of both reference
    outputs and the fused kernel's two candidate buffers. It adds the 99th percentile
    candidates, which `metrics.measure` compacts to at most twice the top 1% plus two
    blocks and copies once while it does.
    """
    elements = spec.num_elements
    item = numpy_dtype(spec.dtype).itemsize
    outputs = 2 if spec.residual else 1
    inputs = elements * item * outputs + spec.hidden_size * item
    backend_outputs = elements * item * outputs * max(1, backends)
    block = max(metrics.BLOCK_ELEMENTS * 8 * 8, metrics.FUSED_BLOCK_ELEMENTS * 8 * 2)
    top_count = math.ceil(elements * outputs * (1 - metrics.P99_QUANTILE)) + 1
    p99_candidates = 2 * (2 * top_count + metrics.BLOCK_ELEMENTS + metrics.FUSED_BLOCK_ELEMENTS) * 8
    return inputs + backend_outputs + block + p99_candidates


def memory_limit_bytes():
    """Return the per-case memory limit: ``PRECISION_SUITE_MEMORY_LIMIT`` or 80% of available memory."""
    override = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if override:
        return int(float(override))
    now = time.monotonic()
    if now - _meminfo_cache["read_at"] > MEMINFO_MAX_AGE_S:
        _meminfo_cache["limit"] = _read_memory_limit()
        _meminfo_cache["read_at"] = now
    return _meminfo_cache["limit"]


def _read_memory_limit():
    """Return 80% of MemAvailable from /proc/meminfo, in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * 0.8)
    except OSError:
        pass
    # NOTE: without /proc/meminfo (macOS, Windows) no limit is enforced.
    return math.inf


def check_memory(spec, backends=1, limit=None):
    """Raise `ResourceLimitError` when a case's estimate exceeds the memory limit."""
    limit = memory_limit_bytes() if limit is None else limit
    needed = estimate_case_bytes(spec, backends)
    if needed > limit:
        raise ResourceLimitError(
            f"case {spec.case_id} (shape {list(spec.shape)}, {spec.dtype}) needs about "
            f"{needed / 2**30:.2f} GiB but the limit is {limit / 2**30:.2f} GiB; use fewer rows "
            f"or a smaller hidden size, or raise {MEMORY_LIMIT_VARIABLE} (bytes)"
        )


@functools.lru_cache(maxsize=4)
def prepare_case(spec):
    """Return ``(inputs, reference)`` of a case, cached for the few most recent specs.

    Backends run one after another on the same case, so the cache saves remaking the
    inputs for each of them. The reference is `lazy_reference`: `measure` computes its rows
    block by block, so no float64 array of the case's size is stored.
    """
    inputs = make_inputs(spec)
    return inputs, lazy_reference(spec, inputs)


def _check_output(spec, output, name, has_residual):
    """Return a reason string when a backend's output has the wrong type, shape or dtype."""
    if not isinstance(output, BackendOutput):
        return f"backend {name} returned {type(output).__name__}, not BackendOutput"
    expected = numpy_dtype(spec.dtype)
    arrays = [("out", output.out)]
    if has_residual:
        arrays.append(("residual_out", output.residual_out))
    for label, array in arrays:
        if not isinstance(array, np.ndarray):
            return f"{label} is {type(array).__name__}, expected a NumPy array of shape {list(spec.shape)}"
        if array.shape != spec.shape:
            return f"{label} has shape {list(array.shape)}, expected {list(spec.shape)}"
        if array.dtype != expected:
            return f"{label} has dtype {array.dtype}, expected {spec.dtype}"
    return ""


def run_backend(spec, backend, device="cpu", budget=None, keep_output=False):
    """Run one backend on one case and judge it against its budget.

    Parameters
    ----------
    spec : CaseSpec
        The case.
    backend : Backend
        The implementation under test.
    device : str
        ``"cpu"``, ``"gpu"`` or ``"gpu:N"``.
    budget : float, optional
        ULP budget; defaults to the budget table's entry for the backend and dtype.
    keep_output : bool
        Keep the backend's `BackendOutput` in the result (``repro`` hashes and compares it).

    Returns
    -------
    CaseResult
        Never raises for a backend failure: exceptions, malformed outputs and unavailable
        dtypes become ``error`` and ``unavailable`` results with the reason.
    """
    started = time.perf_counter()

    availability = backend.probe(spec.dtype, device, spec.residual)
    if not availability.available:
        return CaseResult(spec, backend.name, device, UNAVAILABLE, message=availability.reason)
    if budget is None:
        budget = budget_for(backend, spec.dtype).for_hidden(spec.hidden_size)

    try:
        check_memory(spec)
        inputs, reference = prepare_case(spec)
    except ResourceLimitError as error:
        return CaseResult(spec, backend.name, device, ERROR, message=str(error), ulp_budget=budget)

    try:
        output = backend.run(inputs.x, inputs.weight, spec.eps, inputs.residual, device)
    except BackendUnavailable as error:
        return CaseResult(spec, backend.name, device, UNAVAILABLE, message=str(error))
    except Exception as error:  # noqa: BLE001 - a raising backend is a result, not a crash
        message = f"{backend.name} raised {type(error).__name__}: {error}"
        return CaseResult(spec, backend.name, device, ERROR, message=message,
                          duration_s=time.perf_counter() - started, ulp_budget=budget)

    problem = _check_output(spec, output, backend.name, spec.residual)
    if problem:
        return CaseResult(spec, backend.name, device, ERROR, message=problem,
                          duration_s=time.perf_counter() - started, ulp_budget=budget)

    compared = [("out", output.out, reference.out, budget)]
    if spec.residual:
        compared.append(("residual_out", output.residual_out, reference.residual_out, RESIDUAL_OUT_BUDGET.ulp))
    record = measure(compared)

    failed = record.over_budget > 0 or record.nonfinite_mismatches > 0
    result = CaseResult(spec, backend.name, device, FAILED if failed else PASSED, record=record,
                        duration_s=time.perf_counter() - started, ulp_budget=budget,
                        output=output if keep_output else None)
    if failed:
        result = dataclasses.replace(result, message=format_failure(result))
    return result


def output_digest(output):
    """Return a short SHA-256 of a backend output's bits, to show reruns are bit-identical."""
    digest = hashlib.sha256()
    for array in (output.out, output.residual_out):
        if array is not None:
            digest.update(dtype_name(array.dtype).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
