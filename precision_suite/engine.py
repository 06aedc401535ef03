"""Drive generated cases through one backend with Hypothesis.

The pytest cases, ``precision-suite run`` and ``precision-suite mutants`` all call
`drive_cases`, so they generate the same specs for a profile, dtype and seed. Outside the
nightly profile's target phase every backend and dtype gets the same sequence of generated
cases, apart from the dtype, until one fails and shrinking begins. A process therefore
generates the sequence once and replays it.
"""

import contextlib
import dataclasses
import math

from hypothesis import Phase, example, given, seed, settings, target

from precision_suite.messages import format_error
from precision_suite.runner import ERROR, FAILED, PASSED, UNAVAILABLE, run_backend
from precision_suite.strategies import case_specs


# Generated specs in the order Hypothesis checked them, by (profile, seed), from runs in which
# every case passed. The explicit specs that ran first are not part of the list.
# Without the target phase and without a failure, generation does not depend on the backend.
# It does not depend on the dtype either, because `case_specs` of one dtype draws no choice for
# it (``tests/test_engine.py`` checks this). So the next backend and dtype replay the list with
# their own dtype instead of generating it again. At their first failure they fall back to
# Hypothesis, which shrinks it.
_GENERATED_SEQUENCES = {}


class CaseFailure(AssertionError):
    """A backend failed or errored on a case; the message is the mismatch message."""


@dataclasses.dataclass
class DriveOutcome:
    """Counts of one backend and dtype over a profile's generated cases.

    Attributes
    ----------
    examples : int
        Cases checked, repeats and shrinking included; each distinct case runs once.
    cases : int
        Distinct cases, resumed ones included: the rows this backend and dtype have.
    first_failure_at : int or None
        1-based number of the case that failed first.
    first_failure : CaseResult or None
        That case's result.
    failure_message : str
        The message Hypothesis raised after shrinking, or empty.
    unavailable_reason : str
        Set when every case was unavailable.
    """

    backend: str
    dtype: str
    examples: int = 0
    cases: int = 0
    passed: int = 0  # this and the next three count distinct cases
    failed: int = 0
    errors: int = 0
    unavailable: int = 0
    first_failure_at: int | None = None
    first_failure: object = None
    failure_message: str = ""
    unavailable_reason: str = ""

    def count(self, result, repeat=False):
        """Add one checked case; a ``repeat`` of a case already counted adds to ``examples`` only."""
        self.examples += 1
        if result.status in (FAILED, ERROR) and self.first_failure_at is None:
            self.first_failure_at = self.examples
            self.first_failure = result
        if repeat:
            return

        if result.status == PASSED:
            self.passed += 1
        elif result.status == FAILED:
            self.failed += 1
        elif result.status == ERROR:
            self.errors += 1
        elif result.status == UNAVAILABLE:
            self.unavailable += 1
            # The reason without a residual is the kernel's own; keep it over the residual add's.
            if not self.unavailable_reason or not result.spec.residual:
                self.unavailable_reason = result.message

    @property
    def all_unavailable(self):
        """True when cases ran and every one of them was unavailable."""
        return self.examples > 0 and self.unavailable == self.passed + self.failed + self.errors + self.unavailable


def drive_cases(backend, dtype, profile, device="cpu", run_seed=0, on_result=None, explicit_specs=(),
                finished=None, shrink=True, raise_failure=True):
    """Run a profile's generated cases for one backend and dtype.

    Parameters
    ----------
    backend : Backend
        The implementation under test.
    dtype : str
        Dtype of every generated case.
    profile : str
        Hypothesis profile name (``dev``, ``ci`` or ``nightly``); it sets the example count
        and the shape limits.
    device : str
        Device for the backend.
    run_seed : int
        Seed of Hypothesis' generation for profiles that are not derandomized.
    on_result : callable, optional
        Called with every `CaseResult` as soon as it exists.
    explicit_specs : iterable of CaseSpec
        Specs run before any generated one (the regression corpus); those of other dtypes
        are left out.
    finished : dict, optional
        ``case_id`` to an already recorded `CaseResult` of this backend; such cases are not
        run again (``run --resume``) and ``on_result`` is not called for them.
    shrink : bool
        Whether Hypothesis shrinks a failing case; ``mutants`` turns it off for speed.
    raise_failure : bool
        Raise `CaseFailure` at the end when a case failed; otherwise return the outcome
        with ``failure_message`` set.

    Returns
    -------
    DriveOutcome
    """
    base = settings.get_profile(profile)
    targeting = Phase.target in base.phases
    explicit = [spec for spec in explicit_specs if spec.dtype == dtype]
    sequence_key = (profile, run_seed)

    outcome = DriveOutcome(backend=backend.name, dtype=dtype)
    # Results by case id: Hypothesis can draw one spec twice (and shrinking replays a failure),
    # and each case is run and recorded once.
    seen = dict(finished or {})
    counted = set()
    checked = []

    def check_case(spec):
        checked.append(spec)
        result = seen.get(spec.case_id)
        if result is None:
            result = run_backend(spec, backend, device)
            seen[spec.case_id] = result
            if on_result is not None:
                on_result(result)
        outcome.count(result, repeat=spec.case_id in counted)
        counted.add(spec.case_id)

        # Scores steer generation even outside the target phase, so they are reported only
        # where that phase runs. Elsewhere every backend gets the same cases until one fails.
        if targeting and math.isfinite(result.max_ulp_error):
            target(result.max_ulp_error, label=f"max_ulp_error {backend.name} {dtype}")
        if result.status == FAILED:
            raise CaseFailure(result.message)
        if result.status == ERROR:
            raise CaseFailure(format_error(result))

    generated = None if targeting else _GENERATED_SEQUENCES.get(sequence_key)
    if generated is not None:
        try:
            for spec in explicit:
                check_case(spec)
            for spec in generated:
                check_case(spec if spec.dtype == dtype else spec.replace(dtype=dtype))
        except CaseFailure:
            # Shrinking needs Hypothesis: start the counts again, keeping the results in `seen`.
            outcome = DriveOutcome(backend=backend.name, dtype=dtype)
            counted.clear()
        else:
            outcome.cases = len(seen)
            return outcome
    checked.clear()

    phases = [phase for phase in base.phases if shrink or phase is not Phase.shrink]
    test = given(spec=case_specs(dtypes=[dtype], profile=profile))(check_case)
    for spec in reversed(explicit):
        test = example(spec=spec)(test)
    test = settings(base, phases=phases)(test)
    test = seed(run_seed)(test)

    try:
        with fixed_constant_pool():
            test()
    except Exception as error:  # noqa: BLE001 - narrowed to CaseFailure just below
        failure = _case_failure(error)
        if failure is None:
            raise
        outcome.failure_message = str(failure)
        if raise_failure:
            raise failure from None
    else:
        # Hypothesis runs the explicit specs first and in order, so only what follows them was generated.
        if not targeting and checked[:len(explicit)] == explicit:
            _GENERATED_SEQUENCES[sequence_key] = checked[len(explicit):]
    finally:
        outcome.cases = len(seen)
    return outcome


def clear_generated_sequences():
    """Forget the recorded sequences of cases, so the next `drive_cases` generates with Hypothesis again."""
    _GENERATED_SEQUENCES.clear()


@contextlib.contextmanager
def fixed_constant_pool():
    """Keep Hypothesis from mixing literals of loaded local modules into the generated cases.

    Hypothesis (6.13x and later) sometimes draws integer and float literals found in any
    loaded module outside site-packages. pytest, the command line and pytest-xdist workers
    load different modules, so without this the same profile and seed would generate
    different case ids in each of them.

    NOTE: this replaces a private Hypothesis function for the duration of the run. If a
    Hypothesis release moves it, generation still works but may differ between processes;
    ``tests/test_engine.py`` detects that.
    """
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants

        original = providers._get_local_constants
        cache = providers.CONSTANTS_CACHE
    except (ImportError, AttributeError):
        yield
        return

    empty = Constants()
    providers._get_local_constants = lambda: empty
    cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.cache.clear()


def _case_failure(error):
    """Return the first `CaseFailure` in ``error`` or its exception group, else None.

    Hypothesis raises an exception group when several explicit examples fail.
    """
    if isinstance(error, CaseFailure):
        return error
    for inner in getattr(error, "exceptions", ()):
        found = _case_failure(inner)
        if found is not None:
            return found
    return None
