"""GLM4 MoE decoder-layer precision cases: the tiny stack in every norm mode against float64.

Each item runs the two-layer ``tiny`` stack (one dense and one MoE layer) in one mode and
dtype, with QK norm on or off, and writes its rows to the run's ``e2e`` and ``norm_sites``
tables. It fails when a stage exceeds its layer-level budget, a routing flip happens away
from a near tie, or a norm site ran another implementation than the mode requested. A
mode whose backends cannot run here writes an ``unavailable`` row and is skipped with the
reason. The mode-pair items record how far two modes' outputs are apart, bit for bit and
in ulp; those numbers are reported, not judged.
"""

import pytest

from precision_suite.e2e.config import make_case
from precision_suite.e2e.modes import MODES
from precision_suite.e2e.runner import e2e_rows, failure_message, norm_site_rows, run_stack, write_rows

pytestmark = pytest.mark.precision

DTYPES = ("float32", "bfloat16")
QK_NORM = {"qk-norm": True, "no-qk-norm": False}
# Pairs whose agreement matters: FastDeploy's default against its phi proxy (GPU), the
# proxy's structure with a CPU stand-in, and the two composite rounding conventions.
MODE_PAIRS = (("default", "phi_proxy"), ("default", "proxy_composite"), ("all_composite", "all_composite_cast"))


def _run_and_record(run_dir, device, modes, dtype, qk_norm):
    case = make_case("tiny", layers=2, use_qk_norm=qk_norm)
    stack = run_stack(case, dtype, modes, device)
    rows = e2e_rows(stack, run_dir.run_id)
    coverage_rows = norm_site_rows(stack, run_dir.run_id)
    write_rows(run_dir, rows, coverage_rows)

    unavailable = [run for run in stack.modes.values() if not run.availability.available]
    if unavailable:
        reason = unavailable[0].availability.reason.splitlines()[0]
        pytest.skip(f"mode {unavailable[0].name} unavailable for {dtype} on {device}: {reason}")
    return stack, rows, coverage_rows


@pytest.mark.parametrize("qk_norm", QK_NORM.values(), ids=QK_NORM.keys())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_glm4_moe_stack(mode, dtype, qk_norm, precision_run_dir, precision_device, precision_dtypes):
    if dtype not in precision_dtypes:
        pytest.skip(f"{dtype} not selected with --precision-dtype")
    stack, rows, coverage_rows = _run_and_record(precision_run_dir, precision_device, [mode], dtype, qk_norm)

    message = failure_message(stack, rows, coverage_rows)
    assert not message, message


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pair", MODE_PAIRS, ids=["-vs-".join(pair) for pair in MODE_PAIRS])
def test_glm4_moe_mode_pair(pair, dtype, precision_run_dir, precision_device, precision_dtypes):
    if dtype not in precision_dtypes:
        pytest.skip(f"{dtype} not selected with --precision-dtype")
    stack, rows, _ = _run_and_record(precision_run_dir, precision_device, list(pair), dtype, qk_norm=True)

    pair_rows = [row for row in rows if row["kind"] == "mode_pair"]
    assert pair_rows, f"no mode-pair rows for {pair[0]} against {pair[1]}"
    for row in pair_rows:
        assert 0.0 <= row["bitwise_equal_frac"] <= 1.0
