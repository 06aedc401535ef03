"""The HTML precision report and the comparison with a baseline run.

`write_report` writes ``RUN_DIR/index.html``; `compare_runs` returns a `Comparison` whose
``has_regressions`` drives ``precision-suite report --fail-on-regression``. The command
itself is in `precision_suite.report.command`.
"""

from precision_suite.report.compare import DEFAULT_REGRESSION_FACTOR, Comparison, compare_runs
from precision_suite.report.data import RunData, load_run
from precision_suite.report.page import REPORT_FILE, render_report, write_report

__all__ = [
    "DEFAULT_REGRESSION_FACTOR",
    "REPORT_FILE",
    "Comparison",
    "RunData",
    "compare_runs",
    "load_run",
    "render_report",
    "write_report",
]
