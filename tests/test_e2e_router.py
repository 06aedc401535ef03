"""The GLM4 router of both layer implementations against brute-force enumeration of expert sets."""

import itertools

import numpy as np
import pytest

from precision_suite.e2e import layer_paddle
from precision_suite.e2e.config import preset_config
from precision_suite.e2e.layer_paddle import PaddleMath
from precision_suite.e2e.layer_reference import route


def brute_force_experts(choice, config):
    """Return each token's expert set by enumerating every group set, then every expert set.

    A group's score is its best pair of choice scores, and the group set with the largest
    sum of group scores wins. Inside the winning groups, the expert set with the largest
    sum of choice scores wins.
    """
    per_group = config.n_routed_experts // config.n_group
    sets = []
    for scores in choice:
        groups = scores.reshape(config.n_group, per_group)
        group_scores = [max(a + b for a, b in itertools.combinations(group, 2)) for group in groups]
        best_groups = max(itertools.combinations(range(config.n_group), config.topk_group),
                          key=lambda chosen: sum(group_scores[g] for g in chosen))
        allowed = [g * per_group + e for g in best_groups for e in range(per_group)]
        best = max(itertools.combinations(allowed, config.num_experts_per_tok),
                   key=lambda chosen: sum(scores[e] for e in chosen))
        sets.append(sorted(best))
    return np.array(sets)


ROUTER_CONFIGS = {
    "groups-2-of-4-top-3": dict(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=3),
    "groups-1-of-2-top-2": dict(n_routed_experts=8, n_group=2, topk_group=1, num_experts_per_tok=2),
    "one-group-top-4": dict(n_routed_experts=8, n_group=1, topk_group=1, num_experts_per_tok=4),
}


def _router_inputs(overrides, seed, tokens=24):
    config = preset_config("tiny", **overrides)
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, size=(tokens, config.n_routed_experts))
    bias = rng.normal(0.0, 0.05, size=config.n_routed_experts)
    return config, logits, bias


@pytest.mark.parametrize("name", ROUTER_CONFIGS)
def test_reference_router_matches_enumeration(name):
    config, logits, bias = _router_inputs(ROUTER_CONFIGS[name], seed=1)

    routing = route(logits, bias, config)

    assert np.array_equal(routing.expert_sets(), brute_force_experts(routing.choice_scores, config))


@pytest.mark.parametrize("name", ROUTER_CONFIGS)
def test_paddle_router_matches_enumeration(name):
    config, logits, bias = _router_inputs(ROUTER_CONFIGS[name], seed=2)
    paddle_math = PaddleMath("float64", "cpu")
    # An identity router weight makes the Paddle logits exactly these logits.
    identity = np.eye(config.n_routed_experts)

    _, experts, _, choice = layer_paddle.route(paddle_math, paddle_math.tensor(logits), paddle_math.tensor(identity),
                                               paddle_math.tensor(bias), config)

    assert np.array_equal(np.sort(experts.numpy(), axis=-1), brute_force_experts(choice.numpy(), config))


def test_router_weights_by_hand():
    config = preset_config("tiny", n_routed_experts=4, n_group=1, topk_group=1, num_experts_per_tok=2,
                           routed_scaling_factor=2.5)
    logits = np.array([[0.0, 2.0, -1.0, 1.0]])
    sigma = 1.0 / (1.0 + np.exp(-logits[0]))

    routing = route(logits, np.zeros(4), config)

    assert routing.experts.tolist() == [[1, 3]]
    expected = sigma[[1, 3]] / (sigma[1] + sigma[3]) * 2.5
    np.testing.assert_allclose(routing.weights[0], expected, rtol=1e-15)


def test_router_correction_bias_changes_choice_not_weights():
    config = preset_config("tiny", n_routed_experts=4, n_group=1, topk_group=1, num_experts_per_tok=1,
                           routed_scaling_factor=1.0, norm_topk_prob=False)
    logits = np.array([[1.0, 0.9, -3.0, -3.0]])

    routing = route(logits, np.array([0.0, 0.2, 0.0, 0.0]), config)

    assert routing.experts.tolist() == [[1]]
    np.testing.assert_allclose(routing.weights[0, 0], 1.0 / (1.0 + np.exp(-0.9)), rtol=1e-15)


def test_router_margin_by_hand():
    config = preset_config("tiny", n_routed_experts=4, n_group=2, topk_group=1, num_experts_per_tok=1)
    # Choice scores (sigmoid + bias): group 0 contains experts 0-1, group 1 experts 2-3.
    choice = np.array([[0.9, 0.8, 0.85, 0.7]])
    logits = np.log(choice / (1.0 - choice))

    routing = route(logits, np.zeros(4), config)

    # Group scores are 1.7 and 1.55, a gap of 0.15; inside group 0 the gap is 0.1.
    assert routing.experts.tolist() == [[0]]
    np.testing.assert_allclose(routing.margins, [0.1], rtol=1e-12)


def test_paddle_router_forced_experts():
    config, logits, bias = _router_inputs(ROUTER_CONFIGS["groups-1-of-2-top-2"], seed=3, tokens=4)
    paddle_math = PaddleMath("float64", "cpu")
    forced = np.array([[0, 7], [1, 2], [3, 4], [5, 6]])
    identity = paddle_math.tensor(np.eye(config.n_routed_experts))

    _, experts, weights, _ = layer_paddle.route(paddle_math, paddle_math.tensor(logits), identity,
                                                paddle_math.tensor(bias), config, forced_experts=forced)

    assert np.array_equal(experts.numpy(), forced)
    sigma = np.take_along_axis(1.0 / (1.0 + np.exp(-logits)), forced, axis=-1)
    expected = sigma / sigma.sum(axis=-1, keepdims=True) * config.routed_scaling_factor
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-14)
