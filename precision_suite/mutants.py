"""Hunt planted faults with a profile's cases: each must be killed by some case.

A fault is killed when any case fails or errors on it. Dtypes are tried in the order of
`DTYPES` and the hunt for a fault stops at its first kill, without shrinking, so the
example count says how quickly the profile finds that kind of bug.
"""

import dataclasses
import time

import pandas as pd

from precision_suite.dtypes import DTYPES
from precision_suite.engine import drive_cases


@dataclasses.dataclass(frozen=True)
class MutantResult:
    """The outcome of hunting one planted fault."""

    fault: str
    kind: str
    killed: bool
    dtype: str
    examples: int
    case_id: str
    status: str
    spec: str
    duration_s: float

    def row(self):
        """Return the result as a table row."""
        return dataclasses.asdict(self)


def hunt(fault, profile="ci", dtypes=DTYPES, device="cpu", run_seed=0, explicit_specs=()):
    """Run a profile's cases against one fault until a case kills it.

    Returns
    -------
    MutantResult
        ``examples`` counts every case run, over all dtypes tried, up to and including the
        killing case.
    """
    started = time.perf_counter()
    examples = 0
    for dtype in dtypes:
        outcome = drive_cases(fault, dtype, profile=profile, device=device, run_seed=run_seed,
                              explicit_specs=explicit_specs, shrink=False, raise_failure=False)
        if outcome.first_failure_at is None:
            examples += outcome.examples
            continue

        examples += outcome.first_failure_at
        killer = outcome.first_failure
        return MutantResult(fault.name, getattr(fault, "kind", ""), True, dtype, examples, killer.spec.case_id,
                            killer.status, killer.spec.to_json(), time.perf_counter() - started)

    return MutantResult(fault.name, getattr(fault, "kind", ""), False, "", examples, "", "survived", "",
                        time.perf_counter() - started)


def hunt_all(faults, profile="ci", dtypes=DTYPES, device="cpu", run_seed=0, explicit_specs=(), on_result=None):
    """Hunt every fault and return a DataFrame with one `MutantResult` row per fault."""
    rows = []
    for fault in faults:
        result = hunt(fault, profile, dtypes, device, run_seed, explicit_specs)
        if on_result is not None:
            on_result(result)
        rows.append(result.row())
    return pd.DataFrame(rows)
