"""RoPE and causal attention of both layer implementations against loop-based computations."""

import math

import numpy as np
import pytest

from precision_suite.e2e import layer_paddle, layer_reference
from precision_suite.e2e.layer_paddle import PaddleMath


def rope_by_loops(x, rotary_dim, theta):
    """Rotate each (i, i + rotary_dim/2) pair of each head by ``position * theta^(-2i/rotary_dim)``."""
    out = x.copy()
    half = rotary_dim // 2
    tokens, heads, _ = x.shape
    for position in range(tokens):
        for head in range(heads):
            for i in range(half):
                angle = position * theta ** (-2.0 * i / rotary_dim)
                first, second = x[position, head, i], x[position, head, i + half]
                out[position, head, i] = first * math.cos(angle) - second * math.sin(angle)
                out[position, head, i + half] = second * math.cos(angle) + first * math.sin(angle)
    return out


def attention_by_loops(q, k, v):
    """Causal grouped-query attention, one query position and head at a time."""
    tokens, heads, head_dim = q.shape
    group = heads // k.shape[1]
    out = np.zeros((tokens, heads, head_dim))
    for head in range(heads):
        kv_head = head // group
        for position in range(tokens):
            scores = [q[position, head] @ k[source, kv_head] / math.sqrt(head_dim) for source in range(position + 1)]
            weights = np.exp(np.array(scores) - max(scores))
            weights /= weights.sum()
            for source in range(position + 1):
                out[position, head] += weights[source] * v[source, kv_head]
    return out.reshape(tokens, heads * head_dim)


@pytest.fixture(scope="module")
def paddle_float64():
    return PaddleMath("float64", "cpu")


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape)


def test_reference_rope_matches_loops():
    x = _random((5, 3, 8), 0)
    cos, sin = layer_reference.rope_tables(5, 4, 10000.0)

    rotated = layer_reference.apply_rope(x, cos, sin, 4)

    np.testing.assert_allclose(rotated, rope_by_loops(x, 4, 10000.0), rtol=0, atol=1e-14)


def test_reference_rope_position_zero_is_identity():
    x = _random((1, 2, 8), 1)
    cos, sin = layer_reference.rope_tables(1, 8, 1e6)

    assert np.array_equal(layer_reference.apply_rope(x, cos, sin, 8), x)


def test_reference_rope_keeps_unrotated_dims():
    x = _random((4, 2, 8), 2)
    cos, sin = layer_reference.rope_tables(4, 4, 1e6)

    rotated = layer_reference.apply_rope(x, cos, sin, 4)

    assert np.array_equal(rotated[..., 4:], x[..., 4:])
    assert not np.array_equal(rotated[1:, :, :4], x[1:, :, :4])


def test_paddle_rope_matches_loops(paddle_float64):
    x = _random((6, 2, 16), 3)
    cos, sin = layer_paddle.rope_tables(paddle_float64, 6, 8, 1e6)

    rotated = layer_paddle.apply_rope(paddle_float64, paddle_float64.tensor(x), cos, sin, 8).numpy()

    np.testing.assert_allclose(rotated, rope_by_loops(x, 8, 1e6), rtol=0, atol=1e-13)


def test_reference_attention_matches_loops():
    q, k, v = _random((5, 4, 8), 4), _random((5, 2, 8), 5), _random((5, 2, 8), 6)

    out = layer_reference.causal_attention(q, k, v)

    np.testing.assert_allclose(out, attention_by_loops(q, k, v), rtol=1e-13, atol=1e-14)


def test_reference_attention_first_token_copies_value():
    q, k, v = _random((3, 4, 8), 7), _random((3, 2, 8), 8), _random((3, 2, 8), 9)

    out = layer_reference.causal_attention(q, k, v).reshape(3, 4, 8)

    # The first query attends to the first key alone, so its output is that position's value.
    for head in range(4):
        np.testing.assert_allclose(out[0, head], v[0, head // 2], rtol=0, atol=1e-15)


def test_reference_attention_ignores_future_tokens():
    q, k, v = _random((4, 2, 8), 10), _random((4, 1, 8), 11), _random((4, 1, 8), 12)
    changed_v = v.copy()
    changed_v[3] += 100.0

    before = layer_reference.causal_attention(q, k, v)
    after = layer_reference.causal_attention(q, k, changed_v)

    assert np.array_equal(before[:3], after[:3])
    assert not np.array_equal(before[3], after[3])


def test_paddle_attention_matches_loops(paddle_float64):
    q, k, v = _random((6, 4, 8), 13), _random((6, 2, 8), 14), _random((6, 2, 8), 15)
    tensors = [paddle_float64.tensor(array) for array in (q, k, v)]

    out = layer_paddle.causal_attention(paddle_float64, *tensors).numpy()

    np.testing.assert_allclose(out, attention_by_loops(q, k, v), rtol=1e-13, atol=1e-14)
