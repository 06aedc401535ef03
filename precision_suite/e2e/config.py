"""GLM4 MoE layer configurations, their presets, and the e2e case that names one run.

The ``glm-4.5`` and ``glm-4.5-air`` presets keep the real hidden size, attention shape,
rotary factor, intermediate sizes, scaling factor and QK-norm setting of the released
models. They have only 16 routed experts (still top-8 per token), so one layer fits a
single GPU, and a CPU run of a few tokens fits in a few GB of memory (2.2 GB measured for
``glm-4.5-air``, 8 tokens, two layers, bfloat16).
"""

import dataclasses
import hashlib
import json

from precision_suite.errors import SpecError

SEED_LIMIT = 2**64

# Activation dtypes of the layer. float16 is left out: GLM4 MoE runs in bfloat16, and the
# Paddle CPU wheel (3.3.1) has no float16 gather kernel, which the expert dispatch needs.
E2E_DTYPES = ("bfloat16", "float32", "float64")


@dataclasses.dataclass(frozen=True)
class Glm4MoeConfig:
    """Shape and hyperparameters of GLM4 MoE decoder layers (the Hugging Face config names).

    Raises
    ------
    SpecError
        When a size is not a positive whole number, the heads do not group evenly, the
        rotary width is not an even number of dims, or the routing groups do not divide
        the experts.
    """

    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    partial_rotary_factor: float
    n_routed_experts: int
    num_experts_per_tok: int
    n_shared_experts: int
    moe_intermediate_size: int
    intermediate_size: int
    routed_scaling_factor: float
    first_k_dense_replace: int
    use_qk_norm: bool
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1e6
    attention_bias: bool = True
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = True

    def __post_init__(self):
        positive = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
                    "intermediate_size", "n_group", "topk_group")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name}: invalid value {value!r}; expected a whole number >= 1")
        for name in ("n_shared_experts", "first_k_dense_replace"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"{name}: invalid value {value!r}; expected a whole number >= 0")

        if self.num_attention_heads % self.num_key_value_heads:
            raise SpecError(f"num_key_value_heads: invalid value {self.num_key_value_heads}; it must divide "
                            f"num_attention_heads ({self.num_attention_heads})")
        rotary = self.head_dim * self.partial_rotary_factor
        if not 0 < self.partial_rotary_factor <= 1 or rotary != int(rotary) or int(rotary) % 2:
            raise SpecError(f"partial_rotary_factor: invalid value {self.partial_rotary_factor!r}; "
                            f"head_dim * factor must be an even whole number in (0, {self.head_dim}]")
        if self.n_routed_experts % self.n_group:
            raise SpecError(f"n_group: invalid value {self.n_group}; it must divide n_routed_experts "
                            f"({self.n_routed_experts})")
        if self.topk_group > self.n_group:
            raise SpecError(f"topk_group: invalid value {self.topk_group}; expected at most n_group ({self.n_group})")
        experts_in_groups = self.topk_group * (self.n_routed_experts // self.n_group)
        if self.num_experts_per_tok > experts_in_groups:
            raise SpecError(f"num_experts_per_tok: invalid value {self.num_experts_per_tok}; the {self.topk_group} "
                            f"chosen group(s) hold only {experts_in_groups} experts")
        if self.n_routed_experts // self.n_group < 2:
            raise SpecError(f"n_group: invalid value {self.n_group}; each group needs at least 2 experts, "
                            "because a group's score is the sum of its top-2 expert scores")
        if not self.rms_norm_eps > 0:
            raise SpecError(f"rms_norm_eps: invalid value {self.rms_norm_eps!r}; expected a number > 0")

    @property
    def rotary_dim(self):
        """Number of leading dims of each head that RoPE rotates: ``head_dim * partial_rotary_factor``."""
        return int(self.head_dim * self.partial_rotary_factor)

    def is_moe_layer(self, layer):
        """Return whether layer index ``layer`` has the MoE block instead of the dense MLP."""
        return layer >= self.first_k_dense_replace


PRESETS = {
    "tiny": Glm4MoeConfig(
        hidden_size=256, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
        partial_rotary_factor=0.5, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
        moe_intermediate_size=128, intermediate_size=512, routed_scaling_factor=2.5,
        first_k_dense_replace=1, use_qk_norm=True, n_group=2, topk_group=1,
    ),
    "glm-4.5": Glm4MoeConfig(
        hidden_size=5120, num_attention_heads=96, num_key_value_heads=8, head_dim=128,
        partial_rotary_factor=0.5, n_routed_experts=16, num_experts_per_tok=8, n_shared_experts=1,
        moe_intermediate_size=1536, intermediate_size=12288, routed_scaling_factor=2.5,
        first_k_dense_replace=3, use_qk_norm=True,
    ),
    "glm-4.5-air": Glm4MoeConfig(
        hidden_size=4096, num_attention_heads=96, num_key_value_heads=8, head_dim=128,
        partial_rotary_factor=0.5, n_routed_experts=16, num_experts_per_tok=8, n_shared_experts=1,
        moe_intermediate_size=1408, intermediate_size=10944, routed_scaling_factor=1.0,
        first_k_dense_replace=1, use_qk_norm=False,
    ),
}

# Token counts used when a run names none.
DEFAULT_TOKENS = {"tiny": 32, "glm-4.5": 16, "glm-4.5-air": 16}


def preset_config(name, **overrides):
    """Return the configuration of preset ``name`` with some fields replaced.

    Raises
    ------
    SpecError
        When the preset is unknown or an override is not a config field or is invalid.
    """
    if name not in PRESETS:
        raise SpecError(f"preset: unknown name {name!r}; valid names are {', '.join(PRESETS)}")
    fields = {field.name for field in dataclasses.fields(Glm4MoeConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SpecError(f"{unknown[0]}: unknown config field; valid fields are {', '.join(sorted(fields))}")
    return dataclasses.replace(PRESETS[name], **overrides)


@dataclasses.dataclass(frozen=True)
class E2ECase:
    """One end-to-end run: a configuration, a token count, a stack of layers and a seed.

    Parameters
    ----------
    preset : str
        Name of the preset the configuration came from (kept for tables and messages).
    config : Glm4MoeConfig
        The layer configuration, overrides applied.
    tokens : int
        Sequence length of the single sequence that passes through the stack.
    layers : int
        Number of decoder layers in the stack.
    first_layer : int
        Index of the first layer in the model; it decides which layers are dense. A stack
        that starts past layer 0 gets a residual input, as it would inside the model.
    seed : int
        Seed of weights and inputs, in [0, 2**64).

    Raises
    ------
    SpecError
        When a count is not a positive whole number or the seed is out of range.
    """

    preset: str
    config: Glm4MoeConfig
    tokens: int
    layers: int
    first_layer: int
    seed: int

    def __post_init__(self):
        for name in ("tokens", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name}: invalid value {value!r}; expected a whole number >= 1")
        if isinstance(self.first_layer, bool) or not isinstance(self.first_layer, int) or self.first_layer < 0:
            raise SpecError(f"first_layer: invalid value {self.first_layer!r}; expected a whole number >= 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise SpecError(f"seed: invalid value {self.seed!r}; expected a whole number in [0, 2**64)")

    @property
    def layer_indices(self):
        """Model indices of the layers in the stack, in order."""
        return list(range(self.first_layer, self.first_layer + self.layers))

    def to_json(self):
        """Return the canonical JSON form: sorted keys, no spaces."""
        data = dataclasses.asdict(self)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def case_id(self):
        """Short stable name: ``e2e-`` and 12 hex digits of the SHA-256 of the canonical JSON."""
        return "e2e-" + hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:12]


def check_e2e_dtype(name):
    """Return ``name`` if the layer runs in it, else raise `SpecError` listing `E2E_DTYPES`."""
    if name not in E2E_DTYPES:
        raise SpecError(f"dtype: invalid value {name!r} for the e2e check; expected one of {', '.join(E2E_DTYPES)}")
    return name


def make_case(preset="tiny", tokens=None, layers=2, first_layer=None, seed=0, **overrides):
    """Build an `E2ECase` from a preset name and optional config overrides.

    ``tokens`` defaults to the preset's entry in `DEFAULT_TOKENS`. ``first_layer`` defaults
    to the last dense layer, so a stack of two layers has one dense and one MoE layer.
    """
    config = preset_config(preset, **overrides)
    if tokens is None:
        tokens = DEFAULT_TOKENS.get(preset, 16)
    if first_layer is None:
        first_layer = max(0, config.first_k_dense_replace - 1)
    return E2ECase(preset=preset, config=config, tokens=tokens, layers=layers, first_layer=first_layer, seed=seed)
