"""Tolerance policy v1: the ULP budget of each output dtype and rounding convention.

One table holds every budget. A backend's budget is looked up by its name first, then by
its rounding convention, so a kernel with a known different reduction gets its own row
instead of a silently scaled tolerance. Each entry states where its number comes from.
The measurements cited ran ``paddlepaddle 3.3.1`` on CPU (x86_64) with 16 rows of
``outlier_channels`` input and ``near_one`` weight at hidden sizes 128, 4096 and 16384.
"""

import dataclasses

from precision_suite.backends.base import CAST_THEN_SCALE, PLANTED_FAULT, SINGLE_ROUNDING

POLICY_VERSION = "v1"


@dataclasses.dataclass(frozen=True)
class Budget:
    """A ULP budget with the reason for its size."""

    ulp: float
    rationale: str


# Keys are (backend name or rounding convention, dtype).
BUDGETS = {
    (SINGLE_ROUNDING, "float16"): Budget(
        1.0, "fp32 math rounded once: 0.5 ulp from the rounding plus fp32 error far below 1 ulp"),
    (SINGLE_ROUNDING, "bfloat16"): Budget(
        1.0, "fp32 math rounded once: 0.5 ulp from the rounding plus fp32 error far below 1 ulp"),
    (SINGLE_ROUNDING, "float32"): Budget(
        8.0, "rsqrt, two products and a blocked reduction; fused CPU kernel measured 4.8 ulp at 16384"),
    (SINGLE_ROUNDING, "float64"): Budget(
        8.0, "as float32, but the float64 reference carries a few ulp of its own error"),
    (CAST_THEN_SCALE, "float16"): Budget(
        2.0, "two roundings (normalized value, then product): measured 1.44 ulp at most"),
    (CAST_THEN_SCALE, "bfloat16"): Budget(
        2.0, "two roundings (normalized value, then product): measured 1.42 ulp at most"),
    (CAST_THEN_SCALE, "float32"): Budget(
        8.0, "the cast is a no-op in float32, so the single-rounding budget applies"),
    (CAST_THEN_SCALE, "float64"): Budget(
        8.0, "the cast is a no-op in float64, so the single-rounding budget applies"),
    ("paddle_composite", "float32"): Budget(
        128.0, "Paddle's CPU mean sums sequentially, so error grows with hidden size: "
        "measured 25 ulp at 4096 and 97 ulp at 16384"),
    ("paddle_composite", "float64"): Budget(
        64.0, "sequential float64 mean as in float32, plus the reference's own error: "
        "measured 42 ulp at 16384"),
    ("paddle_composite_cast", "float32"): Budget(
        128.0, "the same sequential CPU mean as paddle_composite; the cast is a no-op in float32"),
    ("paddle_composite_cast", "float64"): Budget(
        64.0, "the same sequential CPU mean as paddle_composite; the cast is a no-op in float64"),
    # Planted faults claim the single-rounding contract, so they get its budgets.
    (PLANTED_FAULT, "float16"): Budget(1.0, "judged by the single-rounding contract it claims"),
    (PLANTED_FAULT, "bfloat16"): Budget(1.0, "judged by the single-rounding contract it claims"),
    (PLANTED_FAULT, "float32"): Budget(8.0, "judged by the single-rounding contract it claims"),
    (PLANTED_FAULT, "float64"): Budget(8.0, "judged by the single-rounding contract it claims"),
}


def budget_for(backend, dtype):
    """Return the `Budget` of ``backend`` for output ``dtype``.

    Raises
    ------
    KeyError
        When neither the backend's name nor its rounding convention has an entry for the
        dtype; add a row to `BUDGETS` with its rationale.
    """
    for key in ((backend.name, dtype), (backend.rounding, dtype)):
        if key in BUDGETS:
            return BUDGETS[key]
    raise KeyError(f"no ULP budget for backend {backend.name!r} ({backend.rounding}) in {dtype}; "
                   "add an entry with its rationale to precision_suite.budgets.BUDGETS")


def budget_table():
    """Return the budget table as a list of dicts, for the report and ``backends`` command."""
    return [
        {"key": key, "dtype": dtype, "ulp_budget": budget.ulp, "rationale": budget.rationale}
        for (key, dtype), budget in BUDGETS.items()
    ]
