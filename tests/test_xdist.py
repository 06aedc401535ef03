"""pytest-xdist runs: the same cases as a serial run, one row per case and one summary.

Each test starts pytest in a subprocess on the precision cases, restricted to one cheap
backend and two dtypes so both runs take seconds.
"""

import os
import subprocess
import sys

import pandas as pd
import pytest

pytest.importorskip("xdist")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = ["case_id", "backend", "device"]
SELECTION = ["--precision-backend", "paddle_composite", "--precision-dtype", "float16", "--precision-dtype", "float32"]

pytestmark = pytest.mark.slow


def _run_precision(out, *extra):
    """Run the precision cases into ``out`` and return the completed process."""
    command = [sys.executable, "-m", "pytest", "cases", "-m", "precision", "-p", "no:cacheprovider", "-q",
               "--precision-out", str(out), *SELECTION, *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The serial and the two-worker run, each as ``(process, run directory)``."""
    serial_out = tmp_path_factory.mktemp("serial")
    parallel_out = tmp_path_factory.mktemp("parallel")
    serial = _run_precision(serial_out)
    parallel = _run_precision(parallel_out, "-n", "2")
    for process in (serial, parallel):
        assert process.returncode == 0, f"pytest exited {process.returncode}:\n{process.stdout[-4000:]}\n{process.stderr[-4000:]}"
    return {"serial": (serial, serial_out), "parallel": (parallel, parallel_out)}


def test_xdist_same_cases_as_serial(runs):
    serial = pd.read_csv(runs["serial"][1] / "cases.csv")
    parallel = pd.read_csv(runs["parallel"][1] / "cases.csv")
    serial_pairs = set(zip(serial["case_id"], serial["backend"]))
    parallel_pairs = set(zip(parallel["case_id"], parallel["backend"]))

    assert len(serial_pairs) > 0
    assert parallel_pairs == serial_pairs


def test_xdist_each_case_once(runs):
    out = runs["parallel"][1]
    cases = pd.read_csv(out / "cases.csv")
    rows = pd.read_json(out / "cases.jsonl", lines=True)

    assert not cases.duplicated(KEY).any()
    # cases.csv drops duplicates, so also check the rows the workers appended.
    assert not rows.duplicated(KEY).any()
    assert len(rows) == len(cases)


def test_xdist_summary_printed_once(runs):
    process = runs["parallel"][0]
    assert process.stdout.count("precision summary") == 1
    assert process.stdout.count("tables written to") == 1
