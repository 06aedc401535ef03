"""Stage metrics, routing comparison, mode pairs and the layer-level budgets on hand-built values."""

import math

import ml_dtypes
import numpy as np
import pytest

from precision_suite.e2e import budgets
from precision_suite.e2e.stages import (
    Routing,
    compare_routing,
    error_fields,
    mode_pair_fields,
    normwise_relative_error,
    routing_pair_fields,
)


def _routing(experts, margins=None):
    experts = np.array(experts)
    return Routing(experts=experts, weights=np.ones(experts.shape), choice_scores=np.zeros((len(experts), 4)),
                   margins=None if margins is None else np.array(margins))


def test_normwise_error_by_hand():
    actual = np.array([3.0, 4.0], dtype=np.float32)
    reference = np.array([3.0, 5.0])

    assert normwise_relative_error([(actual, reference)]) == pytest.approx(1.0 / math.sqrt(34.0), rel=1e-15)


def test_normwise_error_zero_reference():
    zeros = np.zeros(3)

    assert normwise_relative_error([(zeros.astype(np.float32), zeros)]) == 0.0
    assert normwise_relative_error([(np.ones(3, np.float32), zeros)]) == math.inf


def test_error_fields_combine_outputs():
    reference = {"hidden": np.array([1.0, 2.0]), "residual": np.array([4.0])}
    actual = {"hidden": np.array([1.0, 2.0], np.float32), "residual": np.array([4.5], np.float32)}

    fields = error_fields(actual, reference)

    assert fields["elements"] == 3
    assert fields["max_abs_error"] == 0.5
    assert fields["norm_rel_error"] == pytest.approx(0.5 / math.sqrt(21.0), rel=1e-15)
    assert fields["bitwise_equal_frac"] == pytest.approx(2 / 3)


def test_compare_routing_counts_set_changes():
    reference = _routing([[0, 1], [2, 3], [1, 2]], margins=[0.5, 0.01, 0.2])
    # Token 0 lists the same set in another order; token 1 changed one expert.
    actual = _routing([[1, 0], [2, 0], [1, 2]])

    comparison = compare_routing(actual, reference)
    fields = comparison.fields()

    assert comparison.flipped.tolist() == [False, True, False]
    assert fields["routing_flips"] == 1
    assert fields["routing_flip_frac"] == pytest.approx(1 / 3)
    assert fields["max_flip_margin"] == 0.01
    assert fields["min_router_margin"] == 0.01


def test_mode_pair_fields_by_hand():
    bfloat16 = ml_dtypes.bfloat16
    first = {"out": np.array([1.0, 1.0, -0.0], dtype=bfloat16)}
    second = {"out": np.array([1.0, 1.0078125, 0.0], dtype=bfloat16)}

    fields = mode_pair_fields(first, second)

    # -0 and +0 differ in bits but are 0 ulp apart; 1.0078125 is the next bfloat16 after 1.
    assert fields["bitwise_equal_frac"] == pytest.approx(1 / 3)
    assert fields["max_ulp_distance"] == 1.0
    assert fields["mean_ulp_distance"] == pytest.approx(1 / 3)


def test_routing_pair_fields_by_hand():
    fields = routing_pair_fields(_routing([[0, 1], [2, 3]]), _routing([[1, 0], [2, 1]]))

    assert fields["routing_flips"] == 1
    assert fields["bitwise_equal_frac"] == 0.5


def test_unit_roundoff_values():
    assert budgets.unit_roundoff("bfloat16") == 2.0 ** -8
    assert budgets.unit_roundoff("float32") == 2.0 ** -24
    assert budgets.unit_roundoff("float64") == 2.0 ** -53


def test_judge_stage_at_and_over_budget():
    budget = budgets.norm_rel_budget("bfloat16", "attention")

    assert budgets.judge_stage("bfloat16", "attention", budget)["status"] == "passed"
    failed = budgets.judge_stage("bfloat16", "attention", budget * 1.01)
    assert failed["status"] == "failed"
    assert "exceeds the budget" in failed["message"]


def test_judge_routing_flip_margins():
    budget = budgets.flip_margin_budget("bfloat16")
    reference = _routing([[0, 1], [2, 3]], margins=[budget / 2, budget * 2])

    near_tie = budgets.judge_routing("bfloat16", compare_routing(_routing([[0, 2], [2, 3]]), reference))
    wide = budgets.judge_routing("bfloat16", compare_routing(_routing([[0, 1], [2, 0]]), reference))

    assert near_tie["status"] == "passed"
    assert wide["status"] == "failed"
    assert "1 of 1 routing flips" in wide["message"]


def test_every_stage_has_budget():
    for dtype in ("bfloat16", "float32", "float64"):
        for stage in ("input_norm", "q", "k", "attention", "post_attention_norm", "router_logits", "mlp",
                      "layer_output", "final_norm"):
            assert budgets.norm_rel_budget(dtype, stage) > 0
        assert budgets.flip_margin_budget(dtype) > 0


def test_budget_table_has_rationale():
    for row in budgets.budget_table():
        assert row["rationale"]
        assert row["value"] == row["unit_roundoffs"] * budgets.unit_roundoff(row["dtype"])
