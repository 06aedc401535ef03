"""Layer-level budgets of the e2e check, each with the reason for its size.

Why they are looser than the kernel budgets, and in another unit: a kernel budget bounds
one RMSNorm against its exact result, one rounding, per element in ulp. A stage of the
layer is the end of a chain of rounded steps (projections summing 4096-12288 products,
softmax, SwiGLU, the expert combine, the residual adds). Cancellation in those sums leaves
some outputs near zero, with an exact value far smaller than the rounding error of the
terms. Per-element ulp error there has no useful bound: the tiny float32 stack shows up to
3e5 ulp on single elements while the stage as a whole is within 10 unit roundoffs. So a
stage is judged by its normwise relative error ``||actual - reference|| / ||reference||``,
with budgets written as multiples of the dtype's unit roundoff ``u``
(2^-8 for bfloat16, 2^-24 for float32, 2^-53 for float64). The ulp columns are reported
for reading, never judged.

Measurements behind the numbers: paddlepaddle 3.3.1 CPU wheel on x86_64. The ``tiny``
preset ran with 32 and 64 tokens, seeds 0-9, QK norm on and off, modes ``all_composite``,
``all_composite_cast`` and (float32) ``default``, in stacks of 2 and 4 layers. The
``glm-4.5-air`` preset ran with 8 tokens, seed 0, 2 layers: both composite modes in
bfloat16, ``default`` and ``proxy_composite`` in float32.

Routing is judged apart: a token's expert set may differ from the reference's only where
the reference's deciding score gap (``routing_margins``) is smaller than the flip-margin
budget, that is, at a near tie that rounding of the router input can legitimately break.
"""

import dataclasses
import math

from precision_suite.dtypes import finfo


@dataclasses.dataclass(frozen=True)
class LayerBudget:
    """A budget in units of the dtype's unit roundoff, with the reason for its size."""

    unit_roundoffs: float
    rationale: str


def unit_roundoff(dtype):
    """Return the unit roundoff ``u = 2 ** -(mantissa bits + 1)`` of ``dtype``."""
    return math.ldexp(1.0, -(int(finfo(dtype).nmant) + 1))


# Stages whose output is a norm or the residual stream; they grow with depth.
_NORM_STAGES = ("input_norm", "post_attention_norm", "layer_output", "final_norm")
# Stages at the end of a matmul chain in the attention or router.
_PROJECTION_STAGES = ("q", "k", "attention", "router_logits")

_BFLOAT16_NORM = LayerBudget(
    3.0, "measured 0.65u at most on tiny (2.5e-3, cast-then-scale input norm) and 1.1u on glm-4.5-air "
    "after 2 layers (4.3e-3, final norm); the residual stream grows with depth, so 3u leaves room")
_BFLOAT16_PROJECTION = LayerBudget(
    3.0, "one rounding after a float32-accumulated matmul on a rounded input: measured 1.3u on tiny "
    "(5.0e-3) and 1.74u on glm-4.5-air in layer 2 (6.8e-3, attention output)")
_BFLOAT16_MLP = LayerBudget(
    4.0, "three rounded matmuls and SwiGLU: measured 1.6u on tiny (6.4e-3) and 1.9u on glm-4.5-air "
    "(7.5e-3) with the reference's routing")
_FLOAT32_ALL = LayerBudget(
    128.0, "float32 sums of 4096-12288 products, and the composite backends' mean square summed "
    "sequentially on CPU (their kernel budget is 128 ulp for that reason): measured 10u at most on "
    "tiny and 30u on glm-4.5-air (1.8e-6, MoE output in proxy_composite; 14u in default)")
_FLOAT64_ALL = LayerBudget(
    64.0, "the Paddle layer in float64 against the reference differs only in summation order: "
    "measured 12u at most (1.3e-15, MoE output)")

NORM_REL_BUDGETS = {}
for _stage in _NORM_STAGES:
    NORM_REL_BUDGETS[("bfloat16", _stage)] = _BFLOAT16_NORM
for _stage in _PROJECTION_STAGES:
    NORM_REL_BUDGETS[("bfloat16", _stage)] = _BFLOAT16_PROJECTION
NORM_REL_BUDGETS[("bfloat16", "mlp")] = _BFLOAT16_MLP
for _stage in _NORM_STAGES + _PROJECTION_STAGES + ("mlp",):
    NORM_REL_BUDGETS[("float32", _stage)] = _FLOAT32_ALL
    NORM_REL_BUDGETS[("float64", _stage)] = _FLOAT64_ALL

FLIP_MARGIN_BUDGETS = {
    "bfloat16": LayerBudget(
        1.0, "the router input carries about 1u of normwise error, which moves a sigmoid score by "
        "at most 0.25 * |logit| * u, below 1u while |logit| < 4; flips were measured at margins "
        "up to 0.19u (7.3e-4)"),
    "float32": LayerBudget(
        128.0, "as for bfloat16, with the float32 router-logit budget of 128u; no flips were measured"),
    "float64": LayerBudget(
        64.0, "as for bfloat16 with the float64 budget of 64u; no flips were measured"),
}


def norm_rel_budget(dtype, stage):
    """Return the normwise relative error budget of ``stage`` in ``dtype`` as a number.

    Raises
    ------
    KeyError
        When the table has no entry; add one to `NORM_REL_BUDGETS` with its rationale.
    """
    key = (dtype, stage)
    if key not in NORM_REL_BUDGETS:
        raise KeyError(f"no e2e budget for stage {stage!r} in {dtype}; add an entry with its rationale "
                       "to precision_suite.e2e.budgets.NORM_REL_BUDGETS")
    return NORM_REL_BUDGETS[key].unit_roundoffs * unit_roundoff(dtype)


def flip_margin_budget(dtype):
    """Return the largest reference margin at which a routing flip is accepted in ``dtype``."""
    return FLIP_MARGIN_BUDGETS[dtype].unit_roundoffs * unit_roundoff(dtype)


def judge_stage(dtype, stage, norm_rel_error):
    """Return the ``status``, ``norm_rel_budget`` and ``message`` columns of a stage row."""
    budget = norm_rel_budget(dtype, stage)
    if norm_rel_error <= budget:
        return {"status": "passed", "norm_rel_budget": budget, "message": ""}
    message = (f"norm_rel_error {norm_rel_error:.3g} exceeds the budget {budget:.3g} "
               f"({NORM_REL_BUDGETS[(dtype, stage)].unit_roundoffs:g}u of {dtype})")
    return {"status": "failed", "norm_rel_budget": budget, "message": message}


def judge_routing(dtype, comparison):
    """Return the ``status``, ``flip_margin_budget`` and ``message`` columns of an expert choice row.

    The row fails when any token flipped at a reference margin above the budget.
    """
    budget = flip_margin_budget(dtype)
    wide = comparison.flip_margins[comparison.flip_margins > budget]
    if not wide.size:
        return {"status": "passed", "flip_margin_budget": budget, "message": ""}
    message = (f"{wide.size} of {comparison.flips} routing flips at a reference margin above the budget "
               f"{budget:.3g}: largest {wide.max():.3g}")
    return {"status": "failed", "flip_margin_budget": budget, "message": message}


def budget_table():
    """Return the e2e budgets as a list of dicts, for reports."""
    rows = [
        {"dtype": dtype, "stage": stage, "budget": "norm_rel_error", "unit_roundoffs": budget.unit_roundoffs,
         "value": budget.unit_roundoffs * unit_roundoff(dtype), "rationale": budget.rationale}
        for (dtype, stage), budget in NORM_REL_BUDGETS.items()
    ]
    rows += [
        {"dtype": dtype, "stage": "expert_choice", "budget": "flip_margin", "unit_roundoffs": budget.unit_roundoffs,
         "value": budget.unit_roundoffs * unit_roundoff(dtype), "rationale": budget.rationale}
        for dtype, budget in FLIP_MARGIN_BUDGETS.items()
    ]
    return rows
