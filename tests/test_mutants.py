"""Every planted fault is killed by the CI profile, and the correct kernels are not flagged.

Not marked ``precision``: these runs judge the harness, so they stay out of precision reports.
"""

import pytest
from hypothesis import settings

from precision_suite.backends import get_backend, planted_faults
from precision_suite.dtypes import DTYPES
from precision_suite.engine import drive_cases
from precision_suite.mutants import hunt, hunt_all

FAULTS = planted_faults()


@pytest.fixture(autouse=True)
def ci_profile():
    settings.load_profile("ci")


def test_every_fault_kind_is_planted():
    assert {fault.kind for fault in FAULTS} == {"eps", "reduction", "weight", "residual", "memory"}
    assert len(FAULTS) >= 20


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_fault_killed_by_ci_profile(fault):
    result = hunt(fault, profile="ci")
    assert result.killed, f"{fault.name} ({fault.description}) survived {result.examples} ci examples"
    assert result.status in {"failed", "error"}


@pytest.mark.parametrize("name", ["paddle_composite", "numpy_single_rounding"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_correct_kernel_passes_ci_profile(name, dtype):
    outcome = drive_cases(get_backend(name), dtype, profile="ci", raise_failure=False)
    assert outcome.failure_message == ""
    assert outcome.passed == outcome.cases


def test_hunt_all_table():
    faults = [get_backend("fault_weight_ignored"), get_backend("numpy_single_rounding")]
    table = hunt_all(faults, profile="ci", dtypes=["float16"])
    assert list(table["fault"]) == ["fault_weight_ignored", "numpy_single_rounding"]
    assert list(table["killed"]) == [True, False]
    assert table.loc[1, "status"] == "survived"
    assert table.loc[1, "examples"] >= 90
