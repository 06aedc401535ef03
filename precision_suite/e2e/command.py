"""The ``precision-suite e2e`` subcommand: run a GLM4 MoE stack and print the stage table.

``add_arguments(parser)`` adds the options to an argparse parser. ``main(args)`` runs the
check and returns the exit status: 0 when every judged row and norm site passed, 1 when
one failed, 2 when no requested mode can run on this device and dtype. Invalid options
raise `SpecError`, which the command line prints as one line.
"""

import argparse
import os
import sys
import time

import pandas as pd

from precision_suite.backends.paddle_io import check_device
from precision_suite.e2e.config import DEFAULT_TOKENS, E2E_DTYPES, PRESETS, check_e2e_dtype, make_case
from precision_suite.e2e.modes import MODES, get_mode
from precision_suite.e2e.runner import (
    KIND_MODE_PAIR,
    KIND_REFERENCE,
    e2e_rows,
    failed_rows,
    norm_site_rows,
    run_stack,
    write_rows,
)
from precision_suite.environment import collect_environment
from precision_suite.errors import SpecError
from precision_suite.results import RunDirectory, new_run_id

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOTHING_RAN = 2

_STAGE_COLUMNS = ["routing", "layer", "stage", "status", "max_abs_error", "norm_rel_error", "norm_rel_budget",
                  "max_ulp_error", "p99_ulp_error", "bitwise_equal_frac", "routing_flips", "max_flip_margin"]
_PAIR_COLUMNS = ["layer", "stage", "bitwise_equal_frac", "max_ulp_distance", "p99_ulp_distance",
                 "mean_ulp_distance", "routing_flips"]


def add_arguments(parser):
    """Add the ``e2e`` options to an argparse parser."""
    parser.add_argument("--preset", default="tiny", help=f"layer configuration: {', '.join(PRESETS)} (default: tiny)")
    parser.add_argument("--mode", action="append",
                        help=f"norm mode; repeat for several, the first is the baseline of mode comparisons: "
                        f"{', '.join(MODES)} (default: all, unavailable ones reported with the reason)")
    parser.add_argument("--dtype", action="append",
                        help=f"activation dtype; repeat for several: {', '.join(E2E_DTYPES)} (default: bfloat16)")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers in the stack (default: 2)")
    parser.add_argument("--tokens", type=int,
                        help="sequence length (default: " + ", ".join(f"{name} {count}" for name, count
                                                                      in DEFAULT_TOKENS.items()) + ")")
    parser.add_argument("--first-layer", type=int,
                        help="model index of the first layer, which decides the dense layers (default: the last "
                        "dense layer, so two layers are one dense and one MoE layer)")
    parser.add_argument("--experts", type=int, help="routed experts per MoE layer (default: the preset's)")
    parser.add_argument("--qk-norm", action=argparse.BooleanOptionalAction, default=None,
                        help="per-head q/k RMSNorm (default: the preset's)")
    parser.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default: 0)")
    parser.add_argument("--out", help="run directory for e2e.csv and norm_sites.csv (default: reports/<run_id>)")


def _case_from_args(args):
    overrides = {}
    if args.experts is not None:
        overrides["n_routed_experts"] = args.experts
    if args.qk_norm is not None:
        overrides["use_qk_norm"] = args.qk_norm
    return make_case(args.preset, tokens=args.tokens, layers=args.layers, first_layer=args.first_layer,
                     seed=args.seed, **overrides)


def _table(rows, columns):
    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame.columns:
            frame[column] = float("nan")
    return frame[columns].to_string(index=False, na_rep="", float_format=lambda value: f"{value:.3g}")


def format_stack_report(stack, rows, coverage_rows):
    """Format the report of one dtype: each mode's stage table, routing flips and failed
    norm sites, then the mode comparison tables."""
    lines = []
    case = stack.case
    lines.append(f"{case.preset} ({case.case_id}): {case.layers} layer(s) from layer {case.first_layer}, "
                 f"{case.tokens} tokens, {stack.dtype} on {stack.device}, seed {case.seed}")
    for name, mode_run in stack.modes.items():
        lines.append("")
        if not mode_run.availability.available:
            lines.append(f"mode {name}: unavailable: {mode_run.availability.reason.splitlines()[0]}")
            continue
        mode_rows = [row for row in rows if row["mode"] == name and row["kind"] == KIND_REFERENCE]
        lines.append(f"mode {name} against the float64 reference ({mode_run.duration_s:.2f} s):")
        lines.append(_table(mode_rows, _STAGE_COLUMNS))

        choices = [row for row in mode_rows if row["stage"] == "expert_choice" and row["routing"] == "own"]
        tokens = sum(row["elements"] for row in choices)
        lines.append(f"routing flips: {mode_run.routing_flips} of {tokens} token choices in "
                     f"{len(choices)} MoE layer(s)")
        site_failures = [row for row in coverage_rows if row["mode"] == name and row["status"] == "failed"]
        for row in site_failures:
            lines.append(f"norm site failed: layer {row['layer']} {row['site']}: {row['message']}")

    pair_rows = [row for row in rows if row["kind"] == KIND_MODE_PAIR]
    for other in dict.fromkeys(row["compared_with"] for row in pair_rows):
        selected = [row for row in pair_rows if row["compared_with"] == other]
        lines.append("")
        lines.append(f"mode {selected[0]['mode']} against mode {other}:")
        lines.append(_table(selected, _PAIR_COLUMNS))
    return "\n".join(lines)


def main(args):
    """Run the e2e check that ``args`` describes, print its tables and return the exit status.

    Raises
    ------
    SpecError
        When an option is invalid.
    """
    case = _case_from_args(args)
    modes = args.mode or list(MODES)
    for name in modes:
        get_mode(name)
    dtypes = [check_e2e_dtype(name) for name in (args.dtype or ["bfloat16"])]
    check_device(args.device)

    run_id = new_run_id()
    path = args.out or os.path.join("reports", run_id)
    existing = RunDirectory.existing(path)
    if existing is not None and "e2e.jsonl" in os.listdir(path):
        raise SpecError(f"--out: {path} already contains e2e rows of run {existing.run_id}; pass a new folder")
    run_dir = RunDirectory(path)
    run_id = run_dir.start(run_id=run_id, command="precision-suite e2e", device=args.device,
                           environment=collect_environment())

    failed = ran = 0
    for dtype in dtypes:
        start = time.perf_counter()
        stack = run_stack(case, dtype, modes, args.device)
        rows = e2e_rows(stack, run_id)
        coverage_rows = norm_site_rows(stack, run_id)
        write_rows(run_dir, rows, coverage_rows)

        print(format_stack_report(stack, rows, coverage_rows))
        print(f"\n{dtype} finished in {time.perf_counter() - start:.1f} s\n")
        ran += sum(mode_run.availability.available for mode_run in stack.modes.values())
        failed += len(failed_rows(rows)) + len(failed_rows(coverage_rows))

    run_dir.finalize()
    print(f"tables written to {run_dir.file('e2e.csv')} and {run_dir.file('norm_sites.csv')}")
    if not ran:
        print(f"precision-suite e2e: no requested mode can run on {args.device}; see the reasons above",
              file=sys.stderr)
        return EXIT_NOTHING_RAN
    return EXIT_FAILED if failed else EXIT_OK
