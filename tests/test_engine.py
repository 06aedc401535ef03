"""The Hypothesis engine: one run per case, resume, explicit specs first, failures and shrinking.

``tests/test_cli.py`` checks that serial and parallel runs generate the same case ids.
"""

import pytest
from hypothesis import settings

from precision_suite.backends import get_backend
from precision_suite.engine import CaseFailure, drive_cases, fixed_constant_pool
from precision_suite.runner import CaseResult
from precision_suite.spec import CaseSpec
from tests.helpers import NumpyBackend

def test_constant_pool_hidden_while_generating():
    from hypothesis.internal.conjecture import providers

    before = providers._get_local_constants()
    with fixed_constant_pool():
        hidden = providers._get_local_constants()
        assert len(hidden.integers) == 0
        assert len(hidden.floats) == 0
    assert providers._get_local_constants() is before


@pytest.fixture()
def ci_profile():
    settings.load_profile("ci")


def test_each_case_runs_once(ci_profile):
    runs = []
    drive_cases(NumpyBackend("exact"), "float32", "ci", on_result=runs.append)
    ids = [result.spec.case_id for result in runs]
    assert len(ids) == len(set(ids))


def test_finished_cases_not_rerun(ci_profile):
    first = []
    drive_cases(NumpyBackend("exact"), "bfloat16", "ci", on_result=first.append)
    finished = {result.spec.case_id: CaseResult.from_row(result.row()) for result in first[:30]}

    second = []
    outcome = drive_cases(NumpyBackend("exact"), "bfloat16", "ci", finished=finished, on_result=second.append)

    assert not {result.spec.case_id for result in second} & set(finished)
    assert {result.spec.case_id for result in second} | set(finished) == {result.spec.case_id for result in first}
    assert outcome.passed == outcome.cases


def test_explicit_specs_run_first(ci_profile):
    corpus = [CaseSpec(op="rms_norm", shape=(3, 769), dtype="float16", eps=1e-5, x_dist="tiny", w_dist="ones",
                       residual=False, seed=5)]
    other_dtype = corpus[0].replace(dtype="float32")
    runs = []
    drive_cases(NumpyBackend("exact"), "float16", "ci", explicit_specs=[other_dtype, *corpus], on_result=runs.append)
    assert runs[0].spec == corpus[0]
    assert other_dtype.case_id not in {result.spec.case_id for result in runs}


def test_failure_raises_shrunk_message(ci_profile):
    with pytest.raises(CaseFailure) as raised:
        drive_cases(get_backend("fault_weight_ignored"), "float16", "ci")
    message = str(raised.value)
    assert message.startswith("fault_weight_ignored on cpu failed case ")
    # Shrinking reaches a small case: the smallest shape that shows the fault.
    spec = CaseSpec.from_json(message.splitlines()[-1].split("repro ", 1)[1].split(" --backend")[0].strip("'"))
    assert spec.num_elements <= 4


def test_failure_without_raise_returns_outcome(ci_profile):
    outcome = drive_cases(get_backend("fault_tail_unwritten"), "float16", "ci", raise_failure=False, shrink=False)
    assert outcome.first_failure_at is not None
    assert outcome.first_failure.status == "failed"
    assert outcome.failure_message.startswith("fault_tail_unwritten on cpu failed case ")


def test_replayed_sequence_equals_generated(ci_profile):
    from precision_suite.engine import clear_generated_sequences

    def ids_and_counts(backend):
        runs = []
        outcome = drive_cases(backend, "float16", "ci", on_result=runs.append)
        return [result.spec.case_id for result in runs], (outcome.examples, outcome.cases, outcome.passed)

    clear_generated_sequences()
    ids_and_counts(get_backend("paddle_composite"))
    replayed = ids_and_counts(NumpyBackend("exact"))
    clear_generated_sequences()
    generated = ids_and_counts(NumpyBackend("exact"))

    assert replayed == generated
    assert len(generated[0]) >= 90


def test_failure_after_replay_matches_fresh_hunt(ci_profile):
    from precision_suite.engine import clear_generated_sequences

    fault = get_backend("fault_nan_for_zero_rows")
    clear_generated_sequences()
    fresh = drive_cases(fault, "float16", "ci", shrink=False, raise_failure=False)
    drive_cases(get_backend("numpy_single_rounding"), "float16", "ci")
    after_replay = drive_cases(fault, "float16", "ci", shrink=False, raise_failure=False)

    assert fresh.first_failure_at is not None
    assert after_replay.first_failure_at == fresh.first_failure_at
    assert after_replay.first_failure.spec == fresh.first_failure.spec
    assert after_replay.failure_message == fresh.failure_message


def _generated_specs(dtype, explicit=()):
    """Return the specs a fresh Hypothesis run checks for ``dtype``, with the dtype set to float32."""
    from precision_suite.engine import clear_generated_sequences

    clear_generated_sequences()
    runs = []
    drive_cases(NumpyBackend("exact"), dtype, "ci", on_result=runs.append, explicit_specs=explicit)
    return [result.spec.replace(dtype="float32") for result in runs[len(explicit):]]


def test_generated_specs_same_for_every_dtype(ci_profile):
    # Replay across dtypes relies on this. A change that makes the strategy draw differently
    # per dtype must also key the recorded sequences by dtype.
    explicit = [CaseSpec(op="rms_norm", shape=(3, 769), dtype="float16", eps=1e-5, x_dist="tiny", w_dist="ones",
                         residual=False, seed=5)]
    float16 = _generated_specs("float16", explicit)
    bfloat16 = _generated_specs("bfloat16")
    float64 = _generated_specs("float64")

    assert len(float16) >= 90
    assert float16 == bfloat16
    assert float16 == float64


def test_replay_for_other_dtype_equals_generated(ci_profile):
    from precision_suite.engine import clear_generated_sequences

    def ids_and_counts(dtype):
        runs = []
        outcome = drive_cases(NumpyBackend("exact"), dtype, "ci", on_result=runs.append)
        dtypes = {result.spec.dtype for result in runs}
        return [result.spec.case_id for result in runs], dtypes, (outcome.examples, outcome.cases, outcome.passed)

    clear_generated_sequences()
    ids_and_counts("float16")
    replayed = ids_and_counts("bfloat16")
    clear_generated_sequences()
    generated = ids_and_counts("bfloat16")

    assert replayed == generated
    assert replayed[1] == {"bfloat16"}
