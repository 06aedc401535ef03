"""The GLM4 MoE decoder layer in Paddle, with every RMSNorm site taken from a backend.

Rounding model, chosen to match FastDeploy's bfloat16 GPU inference:

- Projections round once to the activation dtype after the matmul (float32 accumulation
  in cuBLAS), and the q/k/v bias add rounds again.
- RoPE, attention (scores, causal softmax and the weighted sum of values) and SwiGLU run
  in float32 and round once, as fused kernels do.
  NOTE: FlashAttention also rounds the softmax probabilities to the activation dtype
  before multiplying by the values; that rounding is not modelled.
- The router runs in float32 on a float32 weight and float32 correction bias.
- Routed expert outputs are combined in float32 and round once; the shared experts' output
  is then added in the activation dtype.

float64 runs use float64 for every one of these steps, so they match the reference to
float64 rounding.
"""

import math

import numpy as np

from precision_suite.backends.paddle_io import import_paddle, paddle_place, to_numpy, to_paddle
from precision_suite.dtypes import numpy_dtype
from precision_suite.e2e.layer_reference import TOPK_NORM_EPS
from precision_suite.e2e.stages import LayerTrace, Routing
from precision_suite.e2e.weights import router_dtype


class PaddleMath:
    """Arithmetic in the activation dtype on one device.

    Parameters
    ----------
    dtype : str
        Activation dtype: float16, bfloat16, float32 or float64.
    device : str
        ``"cpu"``, ``"gpu"`` or ``"gpu:N"``.

    Attributes
    ----------
    wide : str
        float32, or float64 for float64 runs: the dtype of fused steps and accumulation.
    emulated : bool
        True when the device has no matmul or add kernel for ``dtype``.

    Notes
    -----
    NOTE: Paddle's CPU wheel (3.3.1) has no float16 or bfloat16 matmul, add, silu, softmax
    or exp kernels. There every matmul and add runs in float32 on the widened operands and
    rounds the result back to the activation dtype. For an add this is a correctly rounded
    add in the dtype, except for a double-rounding case at most 1 ulp off when the exponents
    differ by more than float32's extra bits. For a matmul it equals a float32-accumulating
    GEMM up to summation order. Devices with the kernels (CUDA) run the plain ops.
    """

    def __init__(self, dtype, device):
        self.paddle = import_paddle()
        self.dtype = dtype
        self.device = device
        self.place = paddle_place(device)
        self.wide = "float64" if dtype == "float64" else "float32"
        self.router = router_dtype(dtype)
        self.emulated = not self._native_ops_run()

    def _native_ops_run(self):
        """Return whether matmul and add run in the activation dtype on this device."""
        probe = self.tensor(np.ones((2, 2), dtype=numpy_dtype(self.dtype)))
        try:
            self.paddle.matmul(probe, probe)
            probe + probe
        except Exception:  # noqa: BLE001 - Paddle raises its own NotFoundError types here
            return False
        return True

    def tensor(self, array):
        """Return a Paddle tensor on this device with exactly the bits of ``array``."""
        return to_paddle(array, self.place)

    def widen(self, tensor):
        """Return ``tensor`` in the wide dtype."""
        return tensor.astype(self.wide)

    def narrow(self, tensor):
        """Return ``tensor`` rounded to the activation dtype."""
        return tensor.astype(self.dtype)

    def matmul(self, x, weight):
        """Return ``x @ weight`` rounded once to the activation dtype."""
        if self.emulated:
            return self.narrow(self.paddle.matmul(self.widen(x), self.widen(weight)))
        return self.paddle.matmul(x, weight)

    def add(self, first, second):
        """Return ``first + second`` rounded to the activation dtype."""
        if self.emulated:
            return self.narrow(self.widen(first) + self.widen(second))
        return first + second

    def linear(self, x, weight, bias=None):
        """Return ``x @ weight (+ bias)``, the matmul and the bias add each rounded."""
        out = self.matmul(x, weight)
        return out if bias is None else self.add(out, bias)

    def swiglu(self, gate, up):
        """Return ``silu(gate) * up`` computed in the wide dtype and rounded once."""
        functional = self.paddle.nn.functional
        return self.narrow(functional.silu(self.widen(gate)) * self.widen(up))


def rope_tables(paddle_math, tokens, rotary_dim, theta):
    """Return ``cos`` and ``sin`` tables ``[tokens, rotary_dim]`` in the wide dtype, built in Paddle."""
    paddle = paddle_math.paddle
    exponents = paddle.arange(0, rotary_dim, 2, dtype=paddle_math.wide) / rotary_dim
    inv_freq = paddle.exp(exponents * -math.log(theta))
    positions = paddle.arange(tokens, dtype=paddle_math.wide)
    angles = positions.unsqueeze(-1) * inv_freq.unsqueeze(0)
    angles = paddle.concat([angles, angles], axis=-1)
    return paddle.cos(angles), paddle.sin(angles)


def apply_rope(paddle_math, x, cos, sin, rotary_dim):
    """Rotate the first ``rotary_dim`` dims of each head of ``[tokens, heads, head_dim]`` (NeoX)."""
    paddle = paddle_math.paddle
    wide = paddle_math.widen(x)
    rotated, passthrough = wide[..., :rotary_dim], wide[..., rotary_dim:]
    half = rotary_dim // 2
    rotate_half = paddle.concat([-rotated[..., half:], rotated[..., :half]], axis=-1)
    result = rotated * cos.unsqueeze(1) + rotate_half * sin.unsqueeze(1)
    return paddle_math.narrow(paddle.concat([result, passthrough], axis=-1))


def causal_attention(paddle_math, q, k, v):
    """Return causal grouped-query attention ``[tokens, heads * head_dim]`` rounded once.

    Scores, softmax and the weighted sum run in the wide dtype.
    """
    paddle = paddle_math.paddle
    tokens, heads, head_dim = q.shape
    group = heads // k.shape[1]
    queries = paddle_math.widen(q).transpose([1, 0, 2])
    keys = paddle.repeat_interleave(paddle_math.widen(k).transpose([1, 0, 2]), group, axis=0)
    values = paddle.repeat_interleave(paddle_math.widen(v).transpose([1, 0, 2]), group, axis=0)

    scores = paddle.matmul(queries, keys, transpose_y=True) * head_dim ** -0.5
    mask = np.triu(np.full((tokens, tokens), -np.inf), k=1).astype(numpy_dtype(paddle_math.wide))
    scores = scores + paddle_math.tensor(mask)
    probabilities = paddle.nn.functional.softmax(scores, axis=-1)
    out = paddle.matmul(probabilities, values).transpose([1, 0, 2]).reshape([tokens, heads * head_dim])
    return paddle_math.narrow(out)


def route(paddle_math, x, router_weight, correction_bias, config, forced_experts=None):
    """Return router logits, chosen experts and their weights, computed in the router dtype.

    With ``forced_experts`` (``[tokens, top_k]`` indices) the choice is replaced by those
    experts, and their weights still come from this run's own sigmoid scores.

    Returns
    -------
    tuple
        ``(logits, experts, weights, choice_scores)`` as Paddle tensors.
    """
    paddle = paddle_math.paddle
    tokens, experts = x.shape[0], router_weight.shape[1]
    logits = paddle.matmul(x.astype(paddle_math.router), router_weight)
    sigma = paddle.nn.functional.sigmoid(logits)
    choice = sigma + correction_bias

    if forced_experts is None:
        per_group = experts // config.n_group
        grouped = choice.reshape([tokens, config.n_group, per_group])
        group_scores = paddle.topk(grouped, k=2, axis=-1)[0].sum(axis=-1)
        chosen_groups = paddle.topk(group_scores, k=config.topk_group, axis=-1)[1]
        group_mask = paddle.put_along_axis(
            paddle.zeros([tokens, config.n_group], dtype=paddle_math.router), chosen_groups,
            paddle.ones(chosen_groups.shape, dtype=paddle_math.router), axis=-1)
        allowed = group_mask.unsqueeze(-1).expand([tokens, config.n_group, per_group]).reshape([tokens, experts])
        masked = paddle.where(allowed > 0, choice, paddle.full_like(choice, -np.inf))
        chosen = paddle.topk(masked, k=config.num_experts_per_tok, axis=-1)[1]
    else:
        chosen = paddle.to_tensor(np.asarray(forced_experts, dtype=np.int64), place=paddle_math.place)

    weights = paddle.take_along_axis(sigma, chosen, axis=-1)
    if config.norm_topk_prob:
        weights = weights / (weights.sum(axis=-1, keepdim=True) + TOPK_NORM_EPS)
    weights = weights * config.routed_scaling_factor
    return logits, chosen, weights, choice


def expert_mlp(paddle_math, x, gate, up, down):
    """Return ``down(swiglu(x @ gate, x @ up))`` with each matmul rounded to the activation dtype."""
    return paddle_math.matmul(paddle_math.swiglu(paddle_math.matmul(x, gate), paddle_math.matmul(x, up)), down)


def moe_block(paddle_math, x, experts, weights, tensors):
    """Return routed experts combined in the wide dtype and rounded, plus the shared experts."""
    paddle = paddle_math.paddle
    chosen = experts.numpy()
    combined = paddle.zeros([x.shape[0], x.shape[1]], dtype=paddle_math.wide)
    for expert in np.unique(chosen):
        tokens, slots = np.nonzero(chosen == expert)
        token_index = paddle.to_tensor(tokens, place=paddle_math.place)
        expert_out = expert_mlp(paddle_math, paddle.gather(x, token_index), tensors["experts_gate"][int(expert)],
                                tensors["experts_up"][int(expert)], tensors["experts_down"][int(expert)])
        scale = paddle.gather_nd(weights, paddle.to_tensor(np.stack([tokens, slots], axis=-1),
                                                           place=paddle_math.place))
        contribution = paddle_math.widen(expert_out) * scale.astype(paddle_math.wide).unsqueeze(-1)
        combined = paddle.index_add(combined, token_index, 0, contribution)
    out = paddle_math.narrow(combined)
    if "shared_gate" in tensors:
        shared = expert_mlp(paddle_math, x, tensors["shared_gate"], tensors["shared_up"], tensors["shared_down"])
        out = paddle_math.add(out, shared)
    return out


def paddle_weights(paddle_math, weights):
    """Return the layer's weights as Paddle tensors on the run's device, keyed like `LayerWeights`."""
    return {name: paddle_math.tensor(array) for name, array in weights.tensors.items()}


def _stage(**tensors):
    return {name: to_numpy(tensor) for name, tensor in tensors.items()}


def paddle_layer(paddle_math, config, layer, moe, tensors, hidden, residual, norms, forced_experts=None):
    """Run one decoder layer in Paddle.

    Parameters
    ----------
    paddle_math : PaddleMath
        Dtype and device arithmetic.
    config : Glm4MoeConfig
        Layer configuration.
    layer : int
        Model index of the layer, recorded with each norm site call.
    moe : bool
        Whether the layer has the MoE block.
    tensors : dict
        Weights from `paddle_weights`.
    hidden, residual : paddle.Tensor
        ``[tokens, hidden_size]`` inputs; ``residual`` is None for the model's first layer.
    norms : NormDispatcher
        Runs each norm site with the mode's backend.
    forced_experts : numpy.ndarray, optional
        Expert choice to use instead of the router's own.

    Returns
    -------
    tuple
        ``(trace, hidden_out, residual_out)``: the `LayerTrace` with NumPy arrays and the
        Paddle tensors handed to the next layer.
    """
    tokens = hidden.shape[0]
    eps = config.rms_norm_eps
    trace = LayerTrace(layer=layer, moe=moe)

    normed, summed = norms.apply("input_norm", layer, hidden, tensors["input_norm"], eps, residual)
    if summed is None:
        summed = hidden
        trace.outputs["input_norm"] = _stage(out=normed)
    else:
        trace.outputs["input_norm"] = _stage(out=normed, residual_out=summed)

    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    q = paddle_math.linear(normed, tensors["q_proj"], tensors.get("q_bias")).reshape([tokens, heads, head_dim])
    k = paddle_math.linear(normed, tensors["k_proj"], tensors.get("k_bias")).reshape([tokens, kv_heads, head_dim])
    v = paddle_math.linear(normed, tensors["v_proj"], tensors.get("v_bias")).reshape([tokens, kv_heads, head_dim])
    if config.use_qk_norm:
        q, _ = norms.apply("q_norm", layer, q, tensors["q_norm"], eps)
        k, _ = norms.apply("k_norm", layer, k, tensors["k_norm"], eps)
    cos, sin = rope_tables(paddle_math, tokens, config.rotary_dim, config.rope_theta)
    q = apply_rope(paddle_math, q, cos, sin, config.rotary_dim)
    k = apply_rope(paddle_math, k, cos, sin, config.rotary_dim)
    trace.outputs["q"] = _stage(out=q)
    trace.outputs["k"] = _stage(out=k)

    attention = paddle_math.matmul(causal_attention(paddle_math, q, k, v), tensors["o_proj"])
    trace.outputs["attention"] = _stage(out=attention)

    normed, residual = norms.apply("post_attention_norm", layer, attention, tensors["post_attention_norm"], eps,
                                   summed)
    trace.outputs["post_attention_norm"] = _stage(out=normed, residual_out=residual)

    if moe:
        logits, experts, weights, choice = route(paddle_math, normed, tensors["router"], tensors["correction_bias"],
                                                 config, forced_experts)
        trace.outputs["router_logits"] = _stage(out=logits)
        trace.routing = Routing(experts=experts.numpy(), weights=weights.numpy(), choice_scores=choice.numpy())
        mlp = moe_block(paddle_math, normed, experts, weights, tensors)
    else:
        mlp = expert_mlp(paddle_math, normed, tensors["gate_proj"], tensors["up_proj"], tensors["down_proj"])
    trace.outputs["mlp"] = _stage(out=mlp)
    trace.outputs["layer_output"] = _stage(hidden=mlp, residual=residual)
    return trace, mlp, residual


def paddle_final_norm(paddle_math, norms, layer, weight, hidden, residual, eps):
    """Return the final norm's stage outputs ``RMSNorm(hidden + residual)`` as NumPy arrays."""
    out, summed = norms.apply("final_norm", layer, hidden, paddle_math.tensor(weight), eps, residual)
    return _stage(out=out, residual_out=summed)
