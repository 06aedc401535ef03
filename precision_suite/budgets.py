"""Tolerance policy v1: the ULP budget of each output dtype and rounding convention.

One table holds every budget. A backend's budget is looked up by its name first, then by
its rounding convention, so a kernel with a known different reduction gets its own row
instead of a silently scaled tolerance.

A budget is ``ulp + per_hidden * hidden_size``. The growth term exists because a float32
(or float64) sum of squares over n terms has a relative error that grows with the number
of terms each partial sum adds (up to ``(m - 1) * u`` for m terms added in sequence), and the
square root halves it. In float16 and bfloat16 that error stays far below one ulp of the
output, so their budgets are constant.

Measurements cited ran ``paddlepaddle 3.3.1`` on CPU (x86_64), 4 rows, every input
distribution, ``normal`` weight, 3 seeds, with and without a residual; constant rows are the
worst input because equal terms make the rounding errors of a sum add up in one direction.
"""

import dataclasses

from precision_suite.backends.base import CAST_THEN_SCALE, PLANTED_FAULT, SINGLE_ROUNDING

POLICY_VERSION = "v1"


@dataclasses.dataclass(frozen=True)
class Budget:
    """A ULP budget with the reason for its size.

    Attributes
    ----------
    ulp : float
        Budget at any hidden size.
    rationale : str
        One line on where the number comes from.
    per_hidden : float
        Extra ulp per element of the hidden size, for reductions whose error grows with it.
    """

    ulp: float
    rationale: str
    per_hidden: float = 0.0

    def for_hidden(self, hidden_size):
        """Return the budget in ulp for a case with ``hidden_size`` elements per row."""
        return self.ulp + self.per_hidden * hidden_size


_ONE_ROUNDING = "fp32 math rounded once: 0.5 ulp from the rounding plus fp32 error far below 1 ulp"
_TWO_ROUNDINGS = "two roundings (normalized value, then product): measured 1.44 ulp at most"

# Keys are (backend name or rounding convention, dtype).
BUDGETS = {
    (SINGLE_ROUNDING, "float16"): Budget(1.0, _ONE_ROUNDING),
    (SINGLE_ROUNDING, "bfloat16"): Budget(1.0, _ONE_ROUNDING),
    (SINGLE_ROUNDING, "float32"): Budget(
        8.0, "rsqrt and two products, plus a reduction over up to hidden/16 terms per partial sum "
        "(the fused CPU kernel's 16 lanes): measured 30 ulp at 4096 and 109 ulp at 16384", per_hidden=1 / 64),
    (SINGLE_ROUNDING, "float64"): Budget(
        8.0, "as float32; the float64 reference adds a few ulp of its own", per_hidden=1 / 64),
    (CAST_THEN_SCALE, "float16"): Budget(2.0, _TWO_ROUNDINGS),
    (CAST_THEN_SCALE, "bfloat16"): Budget(2.0, _TWO_ROUNDINGS),
    (CAST_THEN_SCALE, "float32"): Budget(
        8.0, "the cast is a no-op in float32, so the single-rounding budget applies", per_hidden=1 / 64),
    (CAST_THEN_SCALE, "float64"): Budget(
        8.0, "the cast is a no-op in float64, so the single-rounding budget applies", per_hidden=1 / 64),
    ("paddle_composite", "float32"): Budget(
        8.0, "Paddle's CPU mean adds in sequence: measured 481 ulp at 4096 and 1930 ulp at 16384 "
        "(0.12 per element)", per_hidden=1 / 4),
    ("paddle_composite", "float64"): Budget(
        8.0, "sequential CPU mean as in float32: measured 485 ulp at 4096 and 1650 ulp at 16384",
        per_hidden=1 / 4),
    ("paddle_composite_cast", "float32"): Budget(
        8.0, "the same sequential CPU mean as paddle_composite; the cast is a no-op", per_hidden=1 / 4),
    ("paddle_composite_cast", "float64"): Budget(
        8.0, "the same sequential CPU mean as paddle_composite; the cast is a no-op", per_hidden=1 / 4),
    # Planted faults claim the single-rounding contract, so they are judged by it.
    (PLANTED_FAULT, "float16"): Budget(1.0, "the single-rounding contract the fault claims"),
    (PLANTED_FAULT, "bfloat16"): Budget(1.0, "the single-rounding contract the fault claims"),
    (PLANTED_FAULT, "float32"): Budget(8.0, "the single-rounding contract the fault claims", per_hidden=1 / 64),
    (PLANTED_FAULT, "float64"): Budget(8.0, "the single-rounding contract the fault claims", per_hidden=1 / 64),
}


# residual_out is x + residual rounded once to the dtype: exact rounding is 0.5 ulp. The margin
# admits a sum formed in float32 and then rounded again (at most 0.5 + 2**-16 ulp for float16
# and bfloat16) but not truncation, which errs by up to 1 ulp.
RESIDUAL_OUT_BUDGET = Budget(0.5 + 1 / 64, "x + residual rounded once to the dtype; the margin admits a "
                             "float32 intermediate sum, not truncation")


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
        {"key": key, "dtype": dtype, "ulp_budget": budget.ulp, "per_hidden": budget.per_hidden,
         "rationale": budget.rationale}
        for (key, dtype), budget in BUDGETS.items()
    ]
