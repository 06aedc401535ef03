"""Stage traces of a decoder layer and the metrics computed on them.

A trace keeps, for each stage of one layer, the named arrays that stage produced: the
actual ones in the run dtype from Paddle, or the reference ones in float64 from NumPy.
Comparing two traces gives one record per stage: error against the reference, routing
flips with their router margins, or the bitwise agreement of two modes.
"""

import dataclasses
import math

import numpy as np

from precision_suite.dtypes import to_float64
from precision_suite.metrics import bitwise_equal, measure, ulp_distance

# Stages in the order a layer computes them. ``final_norm`` belongs to the last layer.
STAGES = (
    "input_norm",
    "q",
    "k",
    "attention",
    "post_attention_norm",
    "router_logits",
    "expert_choice",
    "mlp",
    "layer_output",
    "final_norm",
)

# Stages whose value depends on which experts were chosen in this layer.
ROUTED_STAGES = ("mlp", "layer_output", "final_norm")


@dataclasses.dataclass(frozen=True)
class Routing:
    """Expert choice of one MoE layer.

    Attributes
    ----------
    experts : numpy.ndarray
        ``[tokens, top_k]`` expert indices, highest choice score first.
    weights : numpy.ndarray
        ``[tokens, top_k]`` combine weights of those experts, scaling factor included.
    choice_scores : numpy.ndarray
        ``[tokens, experts]`` ``sigmoid(logits) + correction_bias``, the scores top-k ranks.
    margins : numpy.ndarray or None
        ``[tokens]`` score gap that decided the choice (see `routing_margins`); the float64
        reference fills it, Paddle runs leave it None.
    """

    experts: np.ndarray
    weights: np.ndarray
    choice_scores: np.ndarray
    margins: np.ndarray | None = None

    def expert_sets(self):
        """Return the chosen experts of each token sorted ascending, for set comparison."""
        return np.sort(self.experts, axis=-1)


@dataclasses.dataclass
class LayerTrace:
    """Stage outputs of one layer.

    Attributes
    ----------
    layer : int
        Model index of the layer.
    moe : bool
        Whether the layer has the MoE block.
    outputs : dict
        Stage name to a dict of output name to array, in the order the stage produced them.
        ``final_norm`` is present on the last layer of a stack only.
    routing : Routing or None
        Expert choice of an MoE layer.
    routing_flips : int
        Tokens whose expert set differs from the reference's; set on actual traces only.
    """

    layer: int
    moe: bool
    outputs: dict = dataclasses.field(default_factory=dict)
    routing: Routing | None = None
    routing_flips: int = 0

    def stages(self):
        """Return the stages this trace has, in `STAGES` order, ``expert_choice`` included for MoE."""
        present = set(self.outputs) | ({"expert_choice"} if self.routing is not None else set())
        return [stage for stage in STAGES if stage in present]


def routing_margins(choice_scores, group_scores, top_k, topk_group, allowed):
    """Return the score gap that decided each token's expert choice.

    The gap is the smaller of two boundaries. The top-k boundary is the k-th minus the
    (k+1)-th choice score among the experts of the chosen groups. The group boundary is
    the ``topk_group``-th minus the next group score. A boundary that does not exist (every
    allowed expert chosen, or every group chosen) counts as infinite. A perturbation of
    the scores smaller than half the margin cannot change the chosen set.

    Parameters
    ----------
    choice_scores : numpy.ndarray
        ``[tokens, experts]`` float64 choice scores.
    group_scores : numpy.ndarray
        ``[tokens, groups]`` float64 group scores.
    top_k, topk_group : int
        Experts chosen per token, and groups they are chosen from.
    allowed : numpy.ndarray
        ``[tokens, experts]`` bool mask of the experts in the chosen groups.
    """
    masked = np.where(allowed, choice_scores, -np.inf)
    ordered = -np.sort(-masked, axis=-1)
    expert_margin = np.full(choice_scores.shape[0], np.inf)
    if ordered.shape[1] > top_k:
        below = ordered[:, top_k]
        expert_margin = np.where(np.isfinite(below), ordered[:, top_k - 1] - below, np.inf)

    group_margin = np.full(choice_scores.shape[0], np.inf)
    if group_scores.shape[1] > topk_group:
        groups = -np.sort(-group_scores, axis=-1)
        group_margin = groups[:, topk_group - 1] - groups[:, topk_group]
    return np.minimum(expert_margin, group_margin)


def normwise_relative_error(pairs):
    """Return ``||actual - reference||_2 / ||reference||_2`` over all ``(actual, reference)`` pairs.

    A zero reference norm gives 0 when the actual is zero too, else infinity.
    """
    error_square = reference_square = 0.0
    for actual, reference in pairs:
        difference = to_float64(actual) - reference
        error_square += float(np.sum(difference * difference))
        reference_square += float(np.sum(reference * reference))
    if reference_square == 0.0:
        return 0.0 if error_square == 0.0 else math.inf
    return math.sqrt(error_square / reference_square)


def error_fields(actual_outputs, reference_outputs):
    """Compute the error columns of one stage against the float64 reference.

    Parameters
    ----------
    actual_outputs, reference_outputs : dict
        Output name to array, the same names in both; actual arrays are in their own
        dtype and reference arrays in float64.

    Returns
    -------
    dict
        ``elements``, ``max_abs_error``, ``norm_rel_error``, ``max_ulp_error``,
        ``mean_ulp_error``, ``p99_ulp_error`` and ``bitwise_equal_frac`` (the fraction of
        elements equal to the reference rounded once to their dtype).
    """
    outputs = [(name, actual_outputs[name], reference_outputs[name], math.inf) for name in reference_outputs]
    record = measure(outputs)
    return {
        "elements": record.elements,
        "max_abs_error": record.max_abs_error,
        "norm_rel_error": normwise_relative_error((actual, reference) for _, actual, reference, _ in outputs),
        "max_ulp_error": record.max_ulp_error,
        "mean_ulp_error": record.mean_ulp_error,
        "p99_ulp_error": record.p99_ulp_error,
        "bitwise_equal_frac": record.bitwise_equal_frac,
    }


@dataclasses.dataclass(frozen=True)
class RoutingComparison:
    """Tokens whose chosen expert set differs from the reference's.

    Attributes
    ----------
    flipped : numpy.ndarray
        ``[tokens]`` bool mask of the tokens with a different set.
    flip_margins : numpy.ndarray
        Reference margins (`routing_margins`) of the flipped tokens, in token order.
    min_margin : float
        Smallest reference margin over all tokens, flipped or not.
    """

    flipped: np.ndarray
    flip_margins: np.ndarray
    min_margin: float

    @property
    def flips(self):
        """Number of flipped tokens."""
        return int(self.flipped.sum())

    def fields(self):
        """Return the routing columns of an ``expert_choice`` row."""
        tokens = self.flipped.size
        return {
            "elements": tokens,
            "routing_flips": self.flips,
            "routing_flip_frac": self.flips / tokens if tokens else 0.0,
            "max_flip_margin": float(self.flip_margins.max()) if self.flips else math.nan,
            "flip_margins": " ".join(f"{margin:.3g}" for margin in self.flip_margins),
            "min_router_margin": self.min_margin,
        }


def compare_routing(actual, reference):
    """Compare the expert sets of an actual `Routing` with the reference's (which has margins)."""
    flipped = np.any(actual.expert_sets() != reference.expert_sets(), axis=-1)
    margins = reference.margins
    return RoutingComparison(
        flipped=flipped,
        flip_margins=margins[flipped],
        min_margin=float(margins.min()) if margins.size else math.inf,
    )


def mode_pair_fields(first_outputs, second_outputs):
    """Compute how far two modes' outputs of one stage are apart, bit for bit and in ulp.

    Returns
    -------
    dict
        ``elements``, ``bitwise_equal_frac`` (fraction of bit-identical elements), and
        ``max_ulp_distance``, ``p99_ulp_distance`` and ``mean_ulp_distance``: the number of
        representable values between them, which is large for two tiny values of opposite
        sign.
    """
    equal = total = 0
    distances = []
    for name, first in first_outputs.items():
        second = second_outputs[name]
        equal += int(bitwise_equal(first, second).sum())
        total += first.size
        distances.append(ulp_distance(first, second).ravel())
    distance = np.concatenate(distances) if distances else np.zeros(0)
    return {
        "elements": total,
        "bitwise_equal_frac": equal / total if total else 1.0,
        "max_ulp_distance": float(np.nanmax(distance)) if distance.size else 0.0,
        "p99_ulp_distance": float(np.nanpercentile(distance, 99, method="higher")) if distance.size else 0.0,
        "mean_ulp_distance": float(np.nanmean(distance)) if distance.size else 0.0,
    }


def routing_pair_fields(first, second):
    """Compare the expert sets chosen by two modes: the mode-pair columns of ``expert_choice``."""
    same = np.all(first.expert_sets() == second.expert_sets(), axis=-1)
    differing = int((~same).sum())
    return {
        "elements": same.size,
        "bitwise_equal_frac": float(same.mean()) if same.size else 1.0,
        "routing_flips": differing,
        "routing_flip_frac": differing / same.size if same.size else 0.0,
    }
