"""Generated RMSNorm precision cases: every selected backend and dtype against the reference.

Each test item drives one backend and dtype through the regression corpus first, then the
profile's generated cases. Every case's row goes to the run directory; a backend that
cannot run the dtype here records unavailable rows and the item is skipped with the reason.
"""

import pytest

from precision_suite.backends import get_backend
from precision_suite.engine import drive_cases

pytestmark = pytest.mark.precision


def test_rms_norm(precision_backend, precision_dtype, precision_run_dir, precision_device,
                  precision_profile, precision_seed, precision_corpus):
    backend = get_backend(precision_backend)
    run_id = precision_run_dir.run_id
    corpus_cases, _ = precision_corpus

    outcome = drive_cases(
        backend,
        precision_dtype,
        profile=precision_profile,
        device=precision_device,
        run_seed=precision_seed,
        on_result=lambda result: precision_run_dir.append("cases", result.row(run_id)),
        explicit_specs=[case.spec for case in corpus_cases],
    )

    if outcome.all_unavailable:
        pytest.skip(f"{backend.name} unavailable for {precision_dtype} on {precision_device}: "
                    f"{outcome.unavailable_reason}")


def test_regression_corpus_loads(precision_corpus):
    _, errors = precision_corpus
    assert not errors, "corpus files failed to load:\n" + "\n".join(str(error) for error in errors)
