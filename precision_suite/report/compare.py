"""Compare a run with a baseline run, usually the previous night's.

The comparison lists five things. Three of them are regressions, which make
``precision-suite report --fail-on-regression`` exit with status 1:

- new failures: cases that fail or raise now and did not in the baseline;
- ULP growth: a backend and dtype whose max or p99 ULP error grew beyond a factor;
- newly unavailable: a backend and dtype that ran in the baseline and is unavailable now,
  or has no rows now.

Two are listed for the reader and are not regressions: fixed cases, and differences in
the environment and run settings (the suite's own commit differs on every night).
"""

import dataclasses
import math

import pandas as pd

from precision_suite.errors import SpecError
from precision_suite.report.data import FAILING, RunData, executed, load_run
from precision_suite.results import TABLE_KEYS

# A max or p99 ULP error that more than doubles is a regression. Smaller moves can come from
# a changed reduction order alone, which is not a precision bug by itself.
DEFAULT_REGRESSION_FACTOR = 2.0

# Growth is measured from at least this many ulp, because a correctly rounded result
# already carries up to 0.5 ulp: a move from 0.2 to 0.6 ulp is rounding, not a regression.
ULP_FLOOR = 1.0

GROWTH_METRICS = ("max_ulp_error", "p99_ulp_error")

# Run settings from run.json compared next to the environment dict.
RUN_SETTINGS = ("profile", "seed", "device")

CASE_KEY = list(TABLE_KEYS["cases"])
STATUS_COLUMNS = CASE_KEY + ["dtype", "shape", "status", "baseline_status", "max_ulp_error", "ulp_budget"]
GROWTH_COLUMNS = ["backend", "dtype", "metric", "baseline_value", "current_value", "ratio", "compared_cases"]
UNAVAILABLE_COLUMNS = ["backend", "dtype", "reason"]
ENVIRONMENT_COLUMNS = ["key", "baseline", "current"]

# The status shown for a case that the baseline did not run.
ABSENT = "absent"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The differences between a baseline run and a later run.

    Attributes
    ----------
    run_path, baseline_path : str
        The two run directories.
    baseline_run_id : str
        The baseline's run id, for the page and messages.
    factor : float
        The regression factor used for ULP growth.
    new_failures, fixed_cases : pandas.DataFrame
        Cases by key (`CASE_KEY`), with the current and the baseline status.
    ulp_growth : pandas.DataFrame
        One row per backend, dtype and metric that grew beyond ``factor``.
    newly_unavailable : pandas.DataFrame
        One row per backend and dtype that ran in the baseline and does not run now.
    environment_changes : pandas.DataFrame
        One row per environment key or run setting whose value differs.
    only_in_run, only_in_baseline : int
        Numbers of case rows present in one run only; growth uses the shared cases.
    baseline_complete : bool
        Whether the baseline run finished.
    """

    run_path: str
    baseline_path: str
    baseline_run_id: str
    factor: float
    new_failures: pd.DataFrame
    fixed_cases: pd.DataFrame
    ulp_growth: pd.DataFrame
    newly_unavailable: pd.DataFrame
    environment_changes: pd.DataFrame
    only_in_run: int = 0
    only_in_baseline: int = 0
    baseline_complete: bool = True

    @property
    def has_regressions(self):
        """Whether there are new failures, ULP growth or newly unavailable backends and dtypes."""
        return not (self.new_failures.empty and self.ulp_growth.empty and self.newly_unavailable.empty)

    def describe_regressions(self):
        """Return one line per regression, for the command's output."""
        lines = []
        for row in self.new_failures.to_dict("records"):
            lines.append(f"new failure: case {row['case_id']} {row['backend']} {row['dtype']} on {row['device']} "
                         f"is {row['status']} (baseline: {row['baseline_status']})")
        for row in self.ulp_growth.to_dict("records"):
            lines.append(f"ULP growth: {row['backend']} {row['dtype']} {row['metric']} "
                         f"{row['baseline_value']:.3g} -> {row['current_value']:.3g} ulp "
                         f"(more than {self.factor:g}x)")
        for row in self.newly_unavailable.to_dict("records"):
            reason = str(row["reason"]).splitlines()[0] if row["reason"] else ""
            lines.append(f"newly unavailable: {row['backend']} {row['dtype']}: {reason}")
        return lines


def _status_changes(cases, baseline_cases):
    """Return (new failures, fixed cases) between two cases tables."""
    baseline_status = baseline_cases[CASE_KEY + ["status"]].rename(columns={"status": "baseline_status"})
    merged = cases.merge(baseline_status, on=CASE_KEY, how="left")
    merged["baseline_status"] = merged["baseline_status"].fillna(ABSENT)

    failing_now = merged["status"].isin(FAILING)
    failing_before = merged["baseline_status"].isin(FAILING)
    new_failures = merged[failing_now & ~failing_before]
    fixed = merged[(merged["status"] == "passed") & failing_before]
    return (new_failures[STATUS_COLUMNS].reset_index(drop=True),
            fixed[STATUS_COLUMNS].reset_index(drop=True))


def _grew(current, baseline, factor, floor):
    """Return whether ``current`` exceeds ``factor`` times the larger of ``baseline`` and ``floor``.

    NaN on either side is no evidence of growth. An infinite baseline (a non-finite mismatch)
    cannot grow; an infinite current value grows from any finite baseline.
    """
    if math.isnan(current) or math.isnan(baseline) or math.isinf(baseline):
        return False
    return current > factor * max(baseline, floor)


def _group_maxima(frame, metric):
    values = frame[metric].dropna()
    return float(values.max()) if len(values) else math.nan


def _ulp_growth(cases, baseline_cases, factor, floor):
    """Return the ULP growth table, over the executed cases both runs share.

    A backend and dtype that shares no executed case with the baseline (the generated case
    set changed) is compared over all executed cases of each run instead, and its
    ``compared_cases`` is 0.
    """
    current = executed(cases)
    baseline = executed(baseline_cases)
    shared = current.merge(baseline[CASE_KEY + list(GROWTH_METRICS)], on=CASE_KEY, suffixes=("", "_baseline"))

    rows = []
    for (backend, dtype), group in current.groupby(["backend", "dtype"], sort=True):
        shared_group = shared[(shared["backend"] == backend) & (shared["dtype"] == dtype)]
        baseline_group = baseline[(baseline["backend"] == backend) & (baseline["dtype"] == dtype)]
        if baseline_group.empty:
            continue

        for metric in GROWTH_METRICS:
            if len(shared_group):
                current_value = _group_maxima(shared_group, metric)
                baseline_value = _group_maxima(shared_group, f"{metric}_baseline")
            else:
                current_value = _group_maxima(group, metric)
                baseline_value = _group_maxima(baseline_group, metric)
            if not _grew(current_value, baseline_value, factor, floor):
                continue
            ratio = current_value / baseline_value if baseline_value > 0 else math.inf
            rows.append({
                "backend": backend, "dtype": dtype, "metric": metric,
                "baseline_value": baseline_value, "current_value": current_value,
                "ratio": ratio, "compared_cases": len(shared_group),
            })
    return pd.DataFrame(rows, columns=GROWTH_COLUMNS)


def _first_message(frame):
    messages = frame["message"].dropna().astype(str)
    messages = messages[messages != ""]
    return messages.iloc[0] if len(messages) else ""


def _newly_unavailable(cases, baseline_cases):
    """Return backends and dtypes that executed in the baseline and are unavailable or absent now."""
    rows = []
    for (backend, dtype), baseline_group in baseline_cases.groupby(["backend", "dtype"], sort=True):
        if executed(baseline_group).empty or (baseline_group["status"] == "unavailable").any():
            continue

        group = cases[(cases["backend"] == backend) & (cases["dtype"] == dtype)]
        if group.empty:
            rows.append({"backend": backend, "dtype": dtype, "reason": "no rows in this run"})
            continue
        unavailable = group[group["status"] == "unavailable"]
        if len(unavailable):
            rows.append({"backend": backend, "dtype": dtype, "reason": _first_message(unavailable)})
    return pd.DataFrame(rows, columns=UNAVAILABLE_COLUMNS)


def _environment_changes(run, baseline):
    """Return the run settings and environment keys whose values differ, as text."""
    current = {key: run.metadata.get(key) for key in RUN_SETTINGS}
    current.update(run.environment)
    previous = {key: baseline.metadata.get(key) for key in RUN_SETTINGS}
    previous.update(baseline.environment)

    rows = []
    for key in list(dict.fromkeys(list(current) + list(previous))):
        before, after = previous.get(key), current.get(key)
        if before is None and after is None:
            continue
        if str(before) != str(after):
            rows.append({"key": key, "baseline": "" if before is None else str(before),
                         "current": "" if after is None else str(after)})
    return pd.DataFrame(rows, columns=ENVIRONMENT_COLUMNS)


def check_factor(factor):
    """Return ``factor`` as a float after checking it is finite and >= 1.

    Raises
    ------
    SpecError
        When the factor is not a finite number >= 1.
    """
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise SpecError(f"regression factor: invalid value {factor!r}; expected a number >= 1") from None
    if not math.isfinite(value) or value < 1:
        raise SpecError(f"regression factor: invalid value {factor!r}; expected a finite number >= 1 "
                        "(1 flags any growth, 2 flags a doubling)")
    return value


def compare_runs(run, baseline, factor=DEFAULT_REGRESSION_FACTOR, ulp_floor=ULP_FLOOR):
    """Compare ``run`` with ``baseline``.

    Parameters
    ----------
    run, baseline : str, os.PathLike or RunData
        Run directories, or runs already read with `load_run`.
    factor : float
        A max or p99 ULP error counts as grown when it exceeds ``factor`` times the larger
        of the baseline value and ``ulp_floor``.
    ulp_floor : float
        The smallest baseline, in ulp, that growth is measured from.

    Returns
    -------
    Comparison

    Raises
    ------
    SpecError
        When a run directory is missing or unreadable, or ``factor`` is not >= 1.
    """
    factor = check_factor(factor)
    run = run if isinstance(run, RunData) else load_run(run)
    baseline = baseline if isinstance(baseline, RunData) else load_run(baseline)

    cases, baseline_cases = run.cases, baseline.cases
    new_failures, fixed = _status_changes(cases, baseline_cases)

    keys = set(cases[CASE_KEY].itertuples(index=False, name=None))
    baseline_keys = set(baseline_cases[CASE_KEY].itertuples(index=False, name=None))

    return Comparison(
        run_path=run.path,
        baseline_path=baseline.path,
        baseline_run_id=baseline.run_id,
        factor=factor,
        new_failures=new_failures,
        fixed_cases=fixed,
        ulp_growth=_ulp_growth(cases, baseline_cases, factor, ulp_floor),
        newly_unavailable=_newly_unavailable(cases, baseline_cases),
        environment_changes=_environment_changes(run, baseline),
        only_in_run=len(keys - baseline_keys),
        only_in_baseline=len(baseline_keys - keys),
        baseline_complete=baseline.complete,
    )
