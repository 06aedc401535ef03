"""The Paddle GLM4 MoE layer against the float64 reference, weights, configs and forced routing."""

import numpy as np
import pytest

from precision_suite.e2e import layer_paddle, runner
from precision_suite.e2e.budgets import unit_roundoff
from precision_suite.e2e.config import make_case, preset_config
from precision_suite.e2e.layer_paddle import PaddleMath
from precision_suite.e2e.runner import e2e_rows, run_stack
from precision_suite.e2e.stages import STAGES
from precision_suite.e2e.weights import make_layer_weights, make_stack_inputs
from precision_suite.errors import SpecError


def _reference_rows(rows, routing="own"):
    return [row for row in rows if row["kind"] == "reference" and row["routing"] == routing]


@pytest.mark.parametrize("qk_norm", [True, False], ids=["qk-norm", "no-qk-norm"])
def test_float64_layer_matches_reference(qk_norm):
    case = make_case("tiny", tokens=16, layers=2, use_qk_norm=qk_norm)

    stack = run_stack(case, "float64", ["all_composite"])
    rows = _reference_rows(e2e_rows(stack))

    assert {row["stage"] for row in rows} == set(STAGES)
    for row in rows:
        if row["stage"] == "expert_choice":
            assert row["routing_flips"] == 0
        else:
            # Only the summation order differs, so the stages agree to a few float64 roundings.
            assert row["norm_rel_error"] < 64 * unit_roundoff("float64"), (row["layer"], row["stage"])


def test_float64_stack_from_later_layer_has_residual_input():
    case = make_case("tiny", tokens=8, layers=1, first_layer=1)

    stack = run_stack(case, "float64", ["all_composite"])
    trace = stack.modes["all_composite"].traces[0]

    assert case.first_layer == 1
    assert trace.moe
    assert set(trace.outputs["input_norm"]) == {"out", "residual_out"}


def test_bfloat16_on_cpu_is_emulated():
    assert PaddleMath("bfloat16", "cpu").emulated
    assert not PaddleMath("float32", "cpu").emulated


def test_bfloat16_stack_outputs_bfloat16():
    case = make_case("tiny", tokens=8, layers=2)

    stack = run_stack(case, "bfloat16", ["all_composite"])
    trace = stack.modes["all_composite"].traces[1]

    assert trace.outputs["mlp"]["out"].dtype.name == "bfloat16"
    assert trace.outputs["router_logits"]["out"].dtype.name == "float32"


def test_weights_repeat_for_same_seed():
    config = preset_config("tiny")

    first = make_layer_weights(config, 1, "bfloat16", seed=5)
    second = make_layer_weights(config, 1, "bfloat16", seed=5)
    other = make_layer_weights(config, 1, "bfloat16", seed=6)

    assert first.tensors.keys() == second.tensors.keys()
    for name in first.tensors:
        assert first[name].tobytes() == second[name].tobytes(), name
    assert first["q_proj"].tobytes() != other["q_proj"].tobytes()


def test_weights_keep_values_when_token_count_changes():
    short = make_stack_inputs(make_case("tiny", tokens=4, first_layer=1), "float32")
    long = make_stack_inputs(make_case("tiny", tokens=8, first_layer=1), "float32")

    assert np.array_equal(short.hidden_states, long.hidden_states[:4])
    assert np.array_equal(short.residual, long.residual[:4])


def test_weights_have_realistic_scales():
    weights = make_layer_weights(preset_config("tiny"), 1, "float32", seed=0)

    assert abs(float(weights["q_proj"].std()) - 0.02) < 0.002
    assert abs(float(weights["input_norm"].mean()) - 1.0) < 0.05
    assert 0.05 < float(weights["input_norm"].std()) < 0.15
    assert float(np.abs(weights["correction_bias"]).max()) < 0.1
    assert weights["router"].dtype == np.float32
    assert weights["experts_gate"].shape == (8, 256, 128)


def test_inputs_have_outlier_channels():
    inputs = make_stack_inputs(make_case("tiny", tokens=32), "float32")

    channel_scale = np.abs(inputs.hidden_states).max(axis=0)
    assert inputs.residual is None
    assert int((channel_scale > 15).sum()) >= 1
    assert float(np.median(channel_scale)) < 5


INVALID_CONFIGS = {
    "kv-heads-not-dividing": ({"num_key_value_heads": 3}, "num_key_value_heads"),
    "odd-rotary-dims": ({"partial_rotary_factor": 0.53125}, "partial_rotary_factor"),
    "groups-not-dividing": ({"n_group": 3}, "n_group"),
    "topk-group-above-groups": ({"topk_group": 3}, "topk_group"),
    "too-many-experts-per-token": ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
    "zero-hidden-size": ({"hidden_size": 0}, "hidden_size"),
    "unknown-field": ({"hidden": 128}, "hidden"),
}


@pytest.mark.parametrize("name", INVALID_CONFIGS)
def test_invalid_config_names_field(name):
    overrides, field = INVALID_CONFIGS[name]

    with pytest.raises(SpecError, match=field):
        preset_config("tiny", **overrides)


@pytest.mark.parametrize("changes, field", [
    ({"tokens": 0}, "tokens"), ({"layers": 0}, "layers"), ({"seed": -1}, "seed"), ({"preset": "glm-5"}, "preset"),
])
def test_invalid_case_names_field(changes, field):
    arguments = {"preset": "tiny", **changes}

    with pytest.raises(SpecError, match=field):
        make_case(**arguments)


def test_float16_is_rejected():
    with pytest.raises(SpecError, match="bfloat16, float32, float64"):
        run_stack(make_case("tiny", tokens=4), "float16", ["all_composite"])


def test_case_id_depends_on_config():
    assert make_case("tiny").case_id == make_case("tiny").case_id
    assert make_case("tiny").case_id != make_case("tiny", use_qk_norm=False).case_id


def _flip_first_token(original):
    """Wrap the Paddle router so that its own choice of token 0 swaps one expert for another."""
    def route(paddle_math, x, router_weight, correction_bias, config, forced_experts=None):
        logits, experts, weights, choice = original(paddle_math, x, router_weight, correction_bias, config,
                                                    forced_experts)
        if forced_experts is None:
            chosen = experts.numpy()
            unused = sorted(set(range(config.n_routed_experts)) - set(chosen[0]))
            chosen[0, -1] = unused[0]
            experts = paddle_math.paddle.to_tensor(chosen, place=paddle_math.place)
        return logits, experts, weights, choice

    return route


def test_routing_flip_triggers_forced_rerun(monkeypatch):
    monkeypatch.setattr(layer_paddle, "route", _flip_first_token(layer_paddle.route))
    case = make_case("tiny", tokens=8, layers=2)

    stack = run_stack(case, "float64", ["all_composite"])
    mode_run = stack.modes["all_composite"]
    rows = e2e_rows(stack)

    assert mode_run.routing_flips == 1
    forced_choice = mode_run.forced_traces[0].routing.expert_sets()
    assert np.array_equal(forced_choice, stack.reference[1].routing.expert_sets())

    own = {row["stage"]: row for row in _reference_rows(rows) if row["layer"] == 1}
    forced = {row["stage"]: row for row in _reference_rows(rows, "forced") if row["layer"] == 1}
    assert own["expert_choice"]["routing_flips"] == 1
    assert own["mlp"]["status"] == runner.REPORTED
    assert own["mlp"]["norm_rel_error"] > 1e-6
    assert forced["mlp"]["status"] == "passed"
    assert forced["mlp"]["norm_rel_error"] < 64 * unit_roundoff("float64")
    assert forced["final_norm"]["status"] == "passed"


def test_flip_above_margin_budget_fails(monkeypatch):
    monkeypatch.setattr(layer_paddle, "route", _flip_first_token(layer_paddle.route))
    case = make_case("tiny", tokens=8, layers=2)

    rows = e2e_rows(run_stack(case, "float64", ["all_composite"]))
    choice = [row for row in _reference_rows(rows) if row["stage"] == "expert_choice"][0]

    # A swapped expert is no near tie, so its reference margin is far above the float64 budget.
    assert choice["status"] == "failed"
    assert "margin above the budget" in choice["message"]
