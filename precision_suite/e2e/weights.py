"""Deterministic weights and inputs of a GLM4 MoE stack, drawn from the case seed.

Every tensor draws from its own PCG64 stream, keyed by the seed, the layer index and the
tensor's name, so a change of one tensor's shape (or of the token count) never shifts
another tensor's values. Weights are drawn as float32 standard normals, which is fast
enough for the full-size presets, then scaled and rounded once to the run dtype. The
float64 reference decodes those same rounded values.

The scales imitate trained models. Linear weights are N(0, 0.02^2), the usual
initializer scale. Norm weights are N(1, 0.1^2) for the hidden-size norms and N(1, 0.2^2)
for the per-head q/k norms, q/k/v biases N(0, 0.1^2), and the correction bias N(0, 0.01^2).
Hidden states are N(0, 1) with one channel in 64 scaled 20-100x, like the outlier channels
of an LLM residual stream.
NOTE: these are estimates, not statistics of the released GLM-4.5 weights; loading real
weights would replace them.
"""

import dataclasses

import numpy as np

from precision_suite.dtypes import round_to_dtype

LINEAR_STD = 0.02
HIDDEN_NORM_STD = 0.1
HEAD_NORM_STD = 0.2
QKV_BIAS_STD = 0.1
CORRECTION_BIAS_STD = 0.01

# Stream numbers of the tensors; changing one changes every drawn value of that tensor.
_TENSOR_STREAMS = {
    "input_norm": 0, "post_attention_norm": 1, "q_norm": 2, "k_norm": 3,
    "q_proj": 4, "k_proj": 5, "v_proj": 6, "q_bias": 7, "k_bias": 8, "v_bias": 9, "o_proj": 10,
    "gate_proj": 11, "up_proj": 12, "down_proj": 13,
    "router": 14, "correction_bias": 15,
    "experts_gate": 16, "experts_up": 17, "experts_down": 18,
    "shared_gate": 19, "shared_up": 20, "shared_down": 21,
    "final_norm": 22,
    "hidden_states": 23, "residual": 24, "outlier_channels": 25,
}
# Layer slot of model-level tensors (inputs and the final norm) in the stream key.
_MODEL_SLOT = 0


def _generator(seed, layer_slot, tensor, extra=0):
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(layer_slot, _TENSOR_STREAMS[tensor], extra))
    return np.random.Generator(np.random.PCG64(sequence))


def _normal(seed, layer_slot, tensor, shape, mean, std, dtype, extra=0):
    """Draw N(mean, std^2) in float32 from the tensor's stream and round it to ``dtype``."""
    values = _generator(seed, layer_slot, tensor, extra).standard_normal(size=shape, dtype=np.float32)
    values *= np.float32(std)
    values += np.float32(mean)
    return round_to_dtype(values, dtype)


def router_dtype(dtype):
    """Return the dtype of the router weight and its math: float32, or float64 for float64 runs."""
    return "float64" if dtype == "float64" else "float32"


@dataclasses.dataclass
class LayerWeights:
    """Weights of one decoder layer, in the run dtype unless noted.

    Linear weights are stored ``[in, out]`` (Paddle's layout), so a projection is
    ``x @ weight``. MoE layers have ``router`` and ``correction_bias`` in `router_dtype`,
    and the routed experts stacked on a leading expert axis. Dense layers have
    ``gate_proj``, ``up_proj`` and ``down_proj`` instead.
    """

    layer: int
    moe: bool
    tensors: dict

    def __getitem__(self, name):
        return self.tensors[name]

    def get(self, name):
        """Return tensor ``name``, or None when this layer has no such tensor."""
        return self.tensors.get(name)


def make_layer_weights(config, layer, dtype, seed):
    """Draw the weights of model layer ``layer`` for ``config`` in ``dtype``.

    Returns
    -------
    LayerWeights
        Bit-identical for the same arguments on every machine with the same NumPy release.
    """
    slot = layer + 1
    hidden = config.hidden_size
    q_width = config.num_attention_heads * config.head_dim
    kv_width = config.num_key_value_heads * config.head_dim

    def linear(name, shape, extra=0):
        return _normal(seed, slot, name, shape, 0.0, LINEAR_STD, dtype, extra)

    tensors = {
        "input_norm": _normal(seed, slot, "input_norm", (hidden,), 1.0, HIDDEN_NORM_STD, dtype),
        "post_attention_norm": _normal(seed, slot, "post_attention_norm", (hidden,), 1.0, HIDDEN_NORM_STD, dtype),
        "q_proj": linear("q_proj", (hidden, q_width)),
        "k_proj": linear("k_proj", (hidden, kv_width)),
        "v_proj": linear("v_proj", (hidden, kv_width)),
        "o_proj": linear("o_proj", (q_width, hidden)),
    }
    if config.use_qk_norm:
        tensors["q_norm"] = _normal(seed, slot, "q_norm", (config.head_dim,), 1.0, HEAD_NORM_STD, dtype)
        tensors["k_norm"] = _normal(seed, slot, "k_norm", (config.head_dim,), 1.0, HEAD_NORM_STD, dtype)
    if config.attention_bias:
        tensors["q_bias"] = _normal(seed, slot, "q_bias", (q_width,), 0.0, QKV_BIAS_STD, dtype)
        tensors["k_bias"] = _normal(seed, slot, "k_bias", (kv_width,), 0.0, QKV_BIAS_STD, dtype)
        tensors["v_bias"] = _normal(seed, slot, "v_bias", (kv_width,), 0.0, QKV_BIAS_STD, dtype)

    moe = config.is_moe_layer(layer)
    if not moe:
        width = config.intermediate_size
        tensors["gate_proj"] = linear("gate_proj", (hidden, width))
        tensors["up_proj"] = linear("up_proj", (hidden, width))
        tensors["down_proj"] = linear("down_proj", (width, hidden))
        return LayerWeights(layer=layer, moe=False, tensors=tensors)

    experts = config.n_routed_experts
    width = config.moe_intermediate_size
    router = router_dtype(dtype)
    tensors["router"] = _normal(seed, slot, "router", (hidden, experts), 0.0, LINEAR_STD, router)
    tensors["correction_bias"] = _normal(seed, slot, "correction_bias", (experts,), 0.0, CORRECTION_BIAS_STD, router)
    tensors["experts_gate"] = np.stack([linear("experts_gate", (hidden, width), e) for e in range(experts)])
    tensors["experts_up"] = np.stack([linear("experts_up", (hidden, width), e) for e in range(experts)])
    tensors["experts_down"] = np.stack([linear("experts_down", (width, hidden), e) for e in range(experts)])
    if config.n_shared_experts:
        shared = config.n_shared_experts * width
        tensors["shared_gate"] = linear("shared_gate", (hidden, shared))
        tensors["shared_up"] = linear("shared_up", (hidden, shared))
        tensors["shared_down"] = linear("shared_down", (shared, hidden))
    return LayerWeights(layer=layer, moe=True, tensors=tensors)


def make_final_norm_weight(config, dtype, seed):
    """Draw the weight of the model's final norm in ``dtype``."""
    return _normal(seed, _MODEL_SLOT, "final_norm", (config.hidden_size,), 1.0, HIDDEN_NORM_STD, dtype)


def _hidden_like(seed, tensor, tokens, hidden, dtype):
    """Draw N(0, 1) states of ``[tokens, hidden]`` whose outlier channels are 20-100x larger."""
    values = _generator(seed, _MODEL_SLOT, tensor).standard_normal(size=(tokens, hidden))
    outliers = _generator(seed, _MODEL_SLOT, "outlier_channels")
    count = max(1, hidden // 64)
    channels = outliers.choice(hidden, size=count, replace=False)
    values[:, channels] *= outliers.uniform(20.0, 100.0, size=count)
    return round_to_dtype(values, dtype)


@dataclasses.dataclass(frozen=True)
class StackInputs:
    """Inputs of the first layer of a stack, in the run dtype.

    Attributes
    ----------
    hidden_states : numpy.ndarray
        ``[tokens, hidden_size]``.
    residual : numpy.ndarray or None
        ``[tokens, hidden_size]`` when the stack starts past layer 0, else None, because the
        model's first layer has no residual yet. Both share the same outlier channels.
    """

    hidden_states: np.ndarray
    residual: np.ndarray | None


def make_stack_inputs(case, dtype):
    """Draw the inputs of the stack of ``case`` in ``dtype``."""
    hidden = case.config.hidden_size
    hidden_states = _hidden_like(case.seed, "hidden_states", case.tokens, hidden, dtype)
    residual = None
    if case.first_layer > 0:
        residual = _hidden_like(case.seed, "residual", case.tokens, hidden, dtype)
    return StackInputs(hidden_states=hidden_states, residual=residual)
