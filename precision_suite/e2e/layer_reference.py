"""The float64 NumPy reference of the GLM4 MoE decoder layer.

It takes the same rounded weights and inputs as the Paddle layer, decodes them to float64
and never rounds again, so every difference from it is error of the actual run. The
residual stream of a stack stays in float64 from layer to layer.
"""

import numpy as np

from precision_suite.dtypes import to_float64
from precision_suite.e2e.stages import LayerTrace, Routing, routing_margins
from precision_suite.reference import rms_norm_float64

# Added to the sum of the chosen weights before dividing, as GLM4 implementations do.
TOPK_NORM_EPS = 1e-20


def rope_tables(tokens, rotary_dim, theta):
    """Return float64 ``cos`` and ``sin`` tables ``[tokens, rotary_dim]`` for positions 0..tokens-1.

    ``inv_freq[i] = theta ** (-2 i / rotary_dim)``; both halves of a row repeat the same
    angles, the NeoX layout that `apply_rope` expects.
    """
    inv_freq = theta ** (-np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)
    angles = np.outer(np.arange(tokens, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles), np.sin(angles)


def apply_rope(x, cos, sin, rotary_dim):
    """Rotate the first ``rotary_dim`` dims of each head with NeoX half-split ``rotate_half``.

    Parameters
    ----------
    x : numpy.ndarray
        float64 ``[tokens, heads, head_dim]``.
    cos, sin : numpy.ndarray
        ``[tokens, rotary_dim]`` from `rope_tables`.
    rotary_dim : int
        Dims rotated; the rest of each head passes through unchanged.
    """
    rotated, passthrough = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotate_half = np.concatenate([-rotated[..., half:], rotated[..., :half]], axis=-1)
    result = rotated * cos[:, None, :] + rotate_half * sin[:, None, :]
    return np.concatenate([result, passthrough], axis=-1)


def causal_attention(q, k, v):
    """Return causal grouped-query softmax attention ``[tokens, heads * head_dim]`` in float64.

    Each of the ``k.shape[1]`` key/value heads serves ``q.shape[1] / k.shape[1]`` query
    heads, consecutive ones; scores are scaled by ``head_dim ** -0.5``.
    """
    tokens, heads, head_dim = q.shape
    group = heads // k.shape[1]
    keys = np.repeat(k, group, axis=1)
    values = np.repeat(v, group, axis=1)

    scores = np.einsum("thd,shd->hts", q, keys) * head_dim ** -0.5
    future = np.triu(np.ones((tokens, tokens), dtype=bool), k=1)
    scores = np.where(future, -np.inf, scores)
    scores -= scores.max(axis=-1, keepdims=True)
    probabilities = np.exp(scores)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return np.einsum("hts,shd->thd", probabilities, values).reshape(tokens, heads * head_dim)


def route(logits, correction_bias, config):
    """Choose experts with GLM4's sigmoid router and group-limited top-k, in float64.

    Steps: ``sigma = sigmoid(logits)``; choice scores ``sigma + correction_bias``; group
    score = sum of a group's top-2 choice scores; keep the ``topk_group`` best groups;
    take the ``num_experts_per_tok`` best choice scores inside them. The weights are the
    chosen ``sigma`` values, divided by their sum (+1e-20) when ``norm_topk_prob``, times
    ``routed_scaling_factor``. Ties go to the lower index.

    Returns
    -------
    Routing
        With ``margins`` filled.
    """
    tokens, experts = logits.shape
    per_group = experts // config.n_group
    sigma = 1.0 / (1.0 + np.exp(-logits))
    choice = sigma + to_float64(correction_bias)

    grouped = np.sort(choice.reshape(tokens, config.n_group, per_group), axis=-1)
    group_scores = grouped[..., -2:].sum(axis=-1)
    chosen_groups = np.argsort(-group_scores, axis=-1, kind="stable")[:, :config.topk_group]
    group_mask = np.zeros((tokens, config.n_group), dtype=bool)
    np.put_along_axis(group_mask, chosen_groups, True, axis=-1)
    allowed = np.repeat(group_mask, per_group, axis=-1)

    masked = np.where(allowed, choice, -np.inf)
    chosen = np.argsort(-masked, axis=-1, kind="stable")[:, :config.num_experts_per_tok]
    weights = np.take_along_axis(sigma, chosen, axis=-1)
    if config.norm_topk_prob:
        weights = weights / (weights.sum(axis=-1, keepdims=True) + TOPK_NORM_EPS)
    weights = weights * config.routed_scaling_factor

    margins = routing_margins(choice, group_scores, config.num_experts_per_tok, config.topk_group, allowed)
    return Routing(experts=chosen, weights=weights, choice_scores=choice, margins=margins)


def swiglu_mlp(x, gate, up, down):
    """Return ``down(silu(x @ gate) * (x @ up))`` in float64; weights are ``[in, out]``."""
    gate_out = x @ to_float64(gate)
    activation = gate_out / (1.0 + np.exp(-gate_out)) * (x @ to_float64(up))
    return activation @ to_float64(down)


def moe_block(x, routing, weights):
    """Return the routed experts' weighted sum plus the shared experts, in float64."""
    out = np.zeros_like(x)
    for expert in np.unique(routing.experts):
        tokens, slots = np.nonzero(routing.experts == expert)
        expert_out = swiglu_mlp(x[tokens], weights["experts_gate"][expert], weights["experts_up"][expert],
                                weights["experts_down"][expert])
        out[tokens] += routing.weights[tokens, slots][:, None] * expert_out
    if weights.get("shared_gate") is not None:
        out += swiglu_mlp(x, weights["shared_gate"], weights["shared_up"], weights["shared_down"])
    return out


def _projection(x, weights, name, bias_name):
    out = x @ to_float64(weights[name])
    bias = weights.get(bias_name)
    return out if bias is None else out + to_float64(bias)


def reference_layer(config, weights, hidden, residual):
    """Run one decoder layer in float64.

    Parameters
    ----------
    config : Glm4MoeConfig
        Layer configuration.
    weights : LayerWeights
        The layer's rounded weights.
    hidden : numpy.ndarray
        float64 ``[tokens, hidden_size]`` output of the previous layer (or the stack input).
    residual : numpy.ndarray or None
        float64 residual stream, None for the model's first layer.

    Returns
    -------
    tuple
        ``(trace, hidden_out, residual_out)``: the `LayerTrace` and the float64 state
        handed to the next layer.
    """
    tokens = hidden.shape[0]
    eps = config.rms_norm_eps
    trace = LayerTrace(layer=weights.layer, moe=weights.moe)

    summed = hidden if residual is None else hidden + residual
    normed = rms_norm_float64(summed, weights["input_norm"], eps)
    trace.outputs["input_norm"] = {"out": normed} if residual is None else {"out": normed, "residual_out": summed}

    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    q = _projection(normed, weights, "q_proj", "q_bias").reshape(tokens, heads, head_dim)
    k = _projection(normed, weights, "k_proj", "k_bias").reshape(tokens, kv_heads, head_dim)
    v = _projection(normed, weights, "v_proj", "v_bias").reshape(tokens, kv_heads, head_dim)
    if config.use_qk_norm:
        q = rms_norm_float64(q, weights["q_norm"], eps)
        k = rms_norm_float64(k, weights["k_norm"], eps)
    cos, sin = rope_tables(tokens, config.rotary_dim, config.rope_theta)
    q = apply_rope(q, cos, sin, config.rotary_dim)
    k = apply_rope(k, cos, sin, config.rotary_dim)
    trace.outputs["q"] = {"out": q}
    trace.outputs["k"] = {"out": k}

    attention = causal_attention(q, k, v) @ to_float64(weights["o_proj"])
    trace.outputs["attention"] = {"out": attention}

    residual = attention + summed
    normed = rms_norm_float64(residual, weights["post_attention_norm"], eps)
    trace.outputs["post_attention_norm"] = {"out": normed, "residual_out": residual}

    if weights.moe:
        logits = normed @ to_float64(weights["router"])
        trace.outputs["router_logits"] = {"out": logits}
        trace.routing = route(logits, weights["correction_bias"], config)
        mlp = moe_block(normed, trace.routing, weights)
    else:
        mlp = swiglu_mlp(normed, weights["gate_proj"], weights["up_proj"], weights["down_proj"])
    trace.outputs["mlp"] = {"out": mlp}
    trace.outputs["layer_output"] = {"hidden": mlp, "residual": residual}
    return trace, mlp, residual


def reference_final_norm(weight, hidden, residual, eps):
    """Return the model's final norm ``RMSNorm(hidden + residual)`` in float64, with the sum."""
    summed = hidden + residual
    return {"out": rms_norm_float64(summed, weight, eps), "residual_out": summed}
