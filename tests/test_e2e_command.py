"""The ``precision-suite e2e`` subcommand on the tiny preset, and the tables it writes."""

import argparse

import pandas as pd
import pytest

from precision_suite.e2e import command
from precision_suite.e2e.config import make_case
from precision_suite.e2e.runner import e2e_rows, failure_message, norm_site_rows, run_stack
from precision_suite.errors import SpecError


def _parse(arguments):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(arguments)


def test_command_prints_table_and_writes_tables(tmp_path, capsys):
    out = tmp_path / "run"
    arguments = ["--preset", "tiny", "--mode", "default", "--mode", "all_composite", "--dtype", "float32",
                 "--tokens", "8", "--layers", "2", "--out", str(out)]

    status = command.main(_parse(arguments))
    printed = capsys.readouterr().out

    assert status == command.EXIT_OK
    assert "mode default against the float64 reference" in printed
    assert "routing flips: 0 of 8 token choices in 1 MoE layer(s)" in printed
    assert "mode default against mode all_composite:" in printed
    e2e = pd.read_csv(out / "e2e.csv")
    sites = pd.read_csv(out / "norm_sites.csv")
    assert set(e2e["mode"]) == {"default", "all_composite"}
    assert set(e2e["kind"]) == {"reference", "mode_pair"}
    assert len(sites) == 2 * 9
    assert (sites["status"] == "passed").all()


def test_command_reports_unavailable_mode(tmp_path, capsys):
    arguments = ["--mode", "all_phi", "--dtype", "float32", "--tokens", "4", "--out", str(tmp_path)]

    status = command.main(_parse(arguments))
    captured = capsys.readouterr()

    assert status == command.EXIT_NOTHING_RAN
    assert "mode all_phi: unavailable" in captured.out
    assert "no requested mode can run" in captured.err
    rows = pd.read_csv(tmp_path / "e2e.csv")
    assert rows["status"].tolist() == ["unavailable"]


@pytest.mark.parametrize("arguments, field", [
    (["--mode", "fused"], "mode"),
    (["--dtype", "float16"], "dtype"),
    (["--preset", "glm-5"], "preset"),
    (["--tokens", "0"], "tokens"),
    (["--device", "tpu"], "--device"),
])
def test_command_rejects_invalid_options(arguments, field, tmp_path):
    with pytest.raises(SpecError, match=field):
        command.main(_parse(arguments + ["--out", str(tmp_path)]))


def test_command_overrides_preset_fields(tmp_path, capsys):
    arguments = ["--mode", "all_composite", "--dtype", "float32", "--tokens", "4", "--experts", "4",
                 "--no-qk-norm", "--out", str(tmp_path)]

    assert command.main(_parse(arguments)) == command.EXIT_OK
    sites = pd.read_csv(tmp_path / "norm_sites.csv")
    assert "q_norm" not in set(sites["site"])


def test_failure_message_names_failure_and_rerun():
    stack = run_stack(make_case("tiny", tokens=4), "float32", ["all_composite"])
    rows = e2e_rows(stack)
    coverage_rows = norm_site_rows(stack)
    coverage_rows[2].update(status="failed", message="requested paddle_composite but paddle_fused ran")

    message = failure_message(stack, rows, coverage_rows)

    assert failure_message(stack, rows, norm_site_rows(stack)) == ""
    lines = message.splitlines()
    assert lines[0].startswith(f"GLM4 MoE e2e {stack.case.case_id}: preset tiny, 2 layer(s) from layer 0, 4 tokens")
    assert lines[1] == "0 stage row(s) and 1 norm site(s) failed:"
    assert lines[2] == ("  mode all_composite layer 0 norm site k_norm: "
                        "requested paddle_composite but paddle_fused ran")
    assert lines[3] == ("rerun: precision-suite e2e --preset tiny --mode all_composite --dtype float32 --layers 2 "
                        "--tokens 4 --first-layer 0 --experts 8 --qk-norm --device cpu --seed 0")
