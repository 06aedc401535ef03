"""Run a GLM4 MoE stack in several norm modes against one float64 reference, and make rows.

The data path: case -> weights and inputs (rounded to the run dtype) -> the float64
reference stack and, for each available mode, the Paddle stack -> stage metrics -> rows
of the ``e2e`` and ``norm_sites`` tables. Weights are drawn one layer at a time and shared
by all modes, so a full-size layer is held once.
"""

import dataclasses
import time

from precision_suite.backends.base import Availability
from precision_suite.dtypes import to_float64
from precision_suite.e2e import budgets
from precision_suite.e2e.config import check_e2e_dtype
from precision_suite.e2e.layer_paddle import PaddleMath, paddle_final_norm, paddle_layer, paddle_weights
from precision_suite.e2e.layer_reference import reference_final_norm, reference_layer
from precision_suite.e2e.modes import (
    SITES,
    NormDispatcher,
    NormSiteRecorder,
    check_coverage,
    expected_sites,
    get_mode,
    mode_availability,
)
from precision_suite.e2e.stages import (
    ROUTED_STAGES,
    compare_routing,
    error_fields,
    mode_pair_fields,
    routing_pair_fields,
)
from precision_suite.e2e.weights import make_final_norm_weight, make_layer_weights, make_stack_inputs
from precision_suite.errors import BackendUnavailable

# Columns of e2e.csv, in order.
E2E_COLUMNS = [
    "run_id", "case_id", "preset", "device", "dtype", "mode", "kind", "compared_with", "routing", "layer",
    "layer_type", "stage", "status", "elements", "max_abs_error", "norm_rel_error", "norm_rel_budget",
    "max_ulp_error", "mean_ulp_error", "p99_ulp_error", "bitwise_equal_frac", "max_ulp_distance", "p99_ulp_distance",
    "p99_ulp_distance", "mean_ulp_distance", "routing_flips", "routing_flip_frac", "max_flip_margin", "flip_margin_budget",
    "flip_margins", "min_router_margin", "tokens", "layers", "first_layer", "use_qk_norm", "seed",
    "duration_s", "message",
]

NORM_SITE_COLUMNS = [
    "run_id", "case_id", "preset", "device", "dtype", "mode", "layer", "site", "requested_backend",
    "requested_residual", "actual_backend", "actual_residual", "calls", "status", "message",
]

# Row kinds: error against the float64 reference, or agreement between two modes.
KIND_REFERENCE = "reference"
KIND_MODE_PAIR = "mode_pair"
# Routing of a row: the run's own expert choice, or the reference's choice forced on it.
ROUTING_OWN = "own"
ROUTING_FORCED = "forced"
# ``layer`` of a row that covers the whole stack (an unavailable mode).
ALL_LAYERS = -1
# Status of rows that are measured but not judged against a budget.
REPORTED = "reported"


@dataclasses.dataclass
class ModeRun:
    """One mode's pass over the stack.

    Attributes
    ----------
    name : str
        Mode name.
    availability : Availability
        Whether the mode could run; when not, the other fields stay empty.
    traces : list of LayerTrace
        One per layer with the mode's own routing.
    forced_traces : list of LayerTrace
        The stack rerun with the reference's expert choice forced, from the first layer
        whose routing flipped on; empty when no layer flipped.
    coverage : list of SiteCoverage
        Requested against observed implementation of each norm site.
    duration_s : float
        Seconds spent in this mode's Paddle layers.
    """

    name: str
    availability: Availability
    traces: list = dataclasses.field(default_factory=list)
    forced_traces: list = dataclasses.field(default_factory=list)
    coverage: list = dataclasses.field(default_factory=list)
    duration_s: float = 0.0

    @property
    def routing_flips(self):
        """Tokens whose expert set differs from the reference's, summed over the MoE layers."""
        return sum(trace.routing_flips for trace in self.traces)


@dataclasses.dataclass
class StackRun:
    """The reference and every requested mode over one case in one dtype on one device."""

    case: object
    dtype: str
    device: str
    reference: list
    modes: dict
    duration_s: float


class _ModeState:
    """The tensors a mode carries between layers, for its own and its forced-routing pass."""

    def __init__(self, run, dispatcher, hidden, residual):
        self.run = run
        self.dispatcher = dispatcher
        self.hidden, self.residual = hidden, residual
        self.forced = None


def _step_mode(state, paddle_math, config, weights, tensors, reference_trace):
    """Run one layer of one mode; start or continue the forced-routing pass when routing flips."""
    start = time.perf_counter()
    layer, moe = weights.layer, weights.moe
    inputs = (state.hidden, state.residual)
    trace, state.hidden, state.residual = paddle_layer(
        paddle_math, config, layer, moe, tensors, *inputs, state.dispatcher)
    if moe:
        trace.routing_flips = compare_routing(trace.routing, reference_trace.routing).flips
    state.run.traces.append(trace)

    if state.forced is None and trace.routing_flips:
        state.forced = inputs
    if state.forced is not None:
        forced = reference_trace.routing.experts if moe else None
        forced_trace, *state.forced = paddle_layer(
            paddle_math, config, layer, moe, tensors, *state.forced, state.dispatcher, forced_experts=forced)
        state.run.forced_traces.append(forced_trace)
    state.run.duration_s += time.perf_counter() - start


def _final_norm(state, paddle_math, weight, eps, layer):
    state.run.traces[-1].outputs["final_norm"] = paddle_final_norm(
        paddle_math, state.dispatcher, layer, weight, state.hidden, state.residual, eps)
    if state.forced is not None:
        state.run.forced_traces[-1].outputs["final_norm"] = paddle_final_norm(
            paddle_math, state.dispatcher, layer, weight, *state.forced, eps)


def run_stack(case, dtype, mode_names, device="cpu"):
    """Run the stack of ``case`` in ``dtype`` for each mode and for the float64 reference.

    Parameters
    ----------
    case : E2ECase
        Configuration, token count, layers and seed.
    dtype : str
        Activation dtype of the Paddle runs.
    mode_names : list of str
        Modes to run; the first available one is the baseline of mode comparisons.
    device : str
        ``"cpu"``, ``"gpu"`` or ``"gpu:N"``.

    Returns
    -------
    StackRun
        Modes that cannot run on this device and dtype are kept with their reason.

    Raises
    ------
    SpecError
        When a mode name or the dtype is invalid.
    """
    check_e2e_dtype(dtype)
    config = case.config
    modes = [get_mode(name) for name in mode_names]
    sites = expected_sites(config, case.layer_indices)
    used_sites = [site for site in SITES if any(site == name for _, name in sites)]

    try:
        paddle_math = PaddleMath(dtype, device)
    except BackendUnavailable as error:
        runs = {mode.name: ModeRun(mode.name, Availability(False, str(error))) for mode in modes}
        return StackRun(case, dtype, device, [], runs, 0.0)

    inputs = make_stack_inputs(case, dtype)
    recorders = {}
    states = {}
    runs = {}
    for mode in modes:
        runs[mode.name] = ModeRun(mode.name, mode_availability(mode, dtype, device, used_sites))
        if runs[mode.name].availability.available:
            recorders[mode.name] = NormSiteRecorder()
            dispatcher = NormDispatcher(mode, paddle_math.add, recorders[mode.name])
            residual = None if inputs.residual is None else paddle_math.tensor(inputs.residual)
            states[mode.name] = _ModeState(runs[mode.name], dispatcher, paddle_math.tensor(inputs.hidden_states),
                                           residual)

    reference = []
    reference_seconds = 0.0
    hidden = to_float64(inputs.hidden_states)
    residual = None if inputs.residual is None else to_float64(inputs.residual)
    for layer in case.layer_indices:
        weights = make_layer_weights(config, layer, dtype, case.seed)
        start = time.perf_counter()
        trace, hidden, residual = reference_layer(config, weights, hidden, residual)
        reference_seconds += time.perf_counter() - start
        reference.append(trace)

        tensors = paddle_weights(paddle_math, weights) if states else {}
        for name, state in states.items():
            with recorders[name].tracing():
                _step_mode(state, paddle_math, config, weights, tensors, trace)
        del weights, tensors

    final_weight = make_final_norm_weight(config, dtype, case.seed)
    reference[-1].outputs["final_norm"] = reference_final_norm(final_weight, hidden, residual, config.rms_norm_eps)
    for name, state in states.items():
        with recorders[name].tracing():
            _final_norm(state, paddle_math, final_weight, config.rms_norm_eps, case.layer_indices[-1])
        runs[name].coverage = check_coverage(get_mode(name), recorders[name].calls, sites)

    return StackRun(case, dtype, device, reference, runs, reference_seconds)


def _row_base(stack, run_id, mode, kind, routing, compared_with=""):
    case = stack.case
    return {
        "run_id": run_id, "case_id": case.case_id, "preset": case.preset, "device": stack.device,
        "dtype": stack.dtype, "mode": mode, "kind": kind, "compared_with": compared_with, "routing": routing,
        "tokens": case.tokens, "layers": case.layers, "first_layer": case.first_layer,
        "use_qk_norm": case.config.use_qk_norm, "seed": case.seed,
    }


def _layer_type(trace):
    return "moe" if trace.moe else "dense"


def _reference_rows(stack, run_id, mode_run, traces, routing):
    """Return the rows of one pass (own or forced routing) against the reference."""
    reference_by_layer = {trace.layer: trace for trace in stack.reference}
    rows = []
    flipped_upstream = False
    for trace in traces:
        reference = reference_by_layer[trace.layer]
        flipped_here = False
        for stage in trace.stages():
            row = _row_base(stack, run_id, mode_run.name, KIND_REFERENCE, routing)
            row.update(layer=trace.layer, layer_type=_layer_type(trace), stage=stage)
            if stage == "expert_choice":
                comparison = compare_routing(trace.routing, reference.routing)
                row.update(comparison.fields())
                row.update(budgets.judge_routing(stack.dtype, comparison))
                flipped_here = comparison.flips > 0
            else:
                row.update(error_fields(trace.outputs[stage], reference.outputs[stage]))
                if flipped_upstream or (flipped_here and stage in ROUTED_STAGES):
                    row.update(status=REPORTED, message="downstream of a routing flip; the forced-routing "
                               "rows judge the rounding error")
                else:
                    row.update(budgets.judge_stage(stack.dtype, stage, row["norm_rel_error"]))
            rows.append(row)
        flipped_upstream = flipped_upstream or flipped_here
    return rows


def _mode_pair_rows(stack, run_id, first, second):
    """Return the rows comparing two modes' own-routing passes stage by stage."""
    rows = []
    for first_trace, second_trace in zip(first.traces, second.traces):
        for stage in first_trace.stages():
            row = _row_base(stack, run_id, first.name, KIND_MODE_PAIR, ROUTING_OWN, compared_with=second.name)
            row.update(layer=first_trace.layer, layer_type=_layer_type(first_trace), stage=stage, status=REPORTED)
            if stage == "expert_choice":
                row.update(routing_pair_fields(first_trace.routing, second_trace.routing))
            else:
                row.update(mode_pair_fields(first_trace.outputs[stage], second_trace.outputs[stage]))
            rows.append(row)
    return rows


def e2e_rows(stack, run_id=""):
    """Return the ``e2e`` table rows of a `StackRun`.

    One row per mode, stage and layer against the reference (``kind`` reference, ``routing``
    own); the same for the forced-routing pass when routing flipped; one row per stage and
    layer for each mode against the first available mode (``kind`` mode_pair); and one
    ``unavailable`` row for each mode that could not run, with the reason as its message.
    """
    rows = []
    available = []
    for mode_run in stack.modes.values():
        if not mode_run.availability.available:
            row = _row_base(stack, run_id, mode_run.name, KIND_REFERENCE, ROUTING_OWN)
            row.update(stage="all", layer=ALL_LAYERS, layer_type="", status="unavailable", message=mode_run.availability.reason)
            rows.append(row)
            continue
        available.append(mode_run)
        mode_rows = _reference_rows(stack, run_id, mode_run, mode_run.traces, ROUTING_OWN)
        mode_rows += _reference_rows(stack, run_id, mode_run, mode_run.forced_traces, ROUTING_FORCED)
        for row in mode_rows:
            row["duration_s"] = mode_run.duration_s
        rows += mode_rows

    for other in available[1:]:
        rows += _mode_pair_rows(stack, run_id, available[0], other)
    return rows


def norm_site_rows(stack, run_id=""):
    """Return the ``norm_sites`` table rows: one per mode, layer and norm site."""
    rows = []
    case = stack.case
    for mode_run in stack.modes.values():
        for coverage in mode_run.coverage:
            row = {
                "run_id": run_id, "case_id": case.case_id, "preset": case.preset, "device": stack.device,
                "dtype": stack.dtype, "mode": mode_run.name,
            }
            row.update(coverage.fields())
            rows.append(row)
    return rows


def failed_rows(rows):
    """Return the rows whose status is ``failed``."""
    return [row for row in rows if row.get("status") == "failed"]


def write_rows(run_dir, rows, coverage_rows):
    """Append ``e2e`` and ``norm_sites`` rows to a `RunDirectory`, columns in table order."""
    for row in rows:
        run_dir.append("e2e", {column: row.get(column) for column in E2E_COLUMNS})
    for row in coverage_rows:
        run_dir.append("norm_sites", {column: row.get(column) for column in NORM_SITE_COLUMNS})


def rerun_command(stack, modes):
    """Return the ``precision-suite e2e`` command line that reruns this case in ``modes``."""
    case = stack.case
    parts = ["precision-suite e2e", f"--preset {case.preset}"]
    parts += [f"--mode {mode}" for mode in modes]
    parts += [f"--dtype {stack.dtype}", f"--layers {case.layers}", f"--tokens {case.tokens}",
              f"--first-layer {case.first_layer}", f"--experts {case.config.n_routed_experts}",
              "--qk-norm" if case.config.use_qk_norm else "--no-qk-norm", f"--device {stack.device}",
              f"--seed {case.seed}"]
    return " ".join(parts)


def failure_message(stack, rows, coverage_rows):
    """Return the assertion message for failed stage rows and norm sites, or "" when none failed.

    It states what ran, each failure with its layer, stage or site and reason, then the
    command that reruns the case.
    """
    failures = failed_rows(rows)
    site_failures = failed_rows(coverage_rows)
    if not failures and not site_failures:
        return ""

    case = stack.case
    modes = list(dict.fromkeys(row["mode"] for row in failures + site_failures))
    lines = [f"GLM4 MoE e2e {case.case_id}: preset {case.preset}, {case.layers} layer(s) from layer "
             f"{case.first_layer}, {case.tokens} tokens, qk_norm {case.config.use_qk_norm}, {stack.dtype} on "
             f"{stack.device}, seed {case.seed}"]
    lines.append(f"{len(failures)} stage row(s) and {len(site_failures)} norm site(s) failed:")
    for row in failures:
        lines.append(f"  mode {row['mode']} ({row['routing']} routing) layer {row['layer']} {row['stage']}: "
                     f"{row['message']}")
    for row in site_failures:
        lines.append(f"  mode {row['mode']} layer {row['layer']} norm site {row['site']}: {row['message']}")
    lines.append(f"rerun: {rerun_command(stack, modes)}")
    return "\n".join(lines)
