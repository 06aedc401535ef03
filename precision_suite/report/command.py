"""``precision-suite report RUN_DIR``: write the HTML report and compare with a baseline.

Exit status: 0 when the report was written (and, with ``--fail-on-regression``, the
comparison found no regression); 1 when ``--fail-on-regression`` is set and the comparison
found one; 2 for an invalid option or an unreadable run directory.
"""

import argparse
import sys

from precision_suite.errors import SpecError
from precision_suite.report.compare import DEFAULT_REGRESSION_FACTOR, check_factor, compare_runs
from precision_suite.report.data import load_run
from precision_suite.report.labels import LANGUAGES
from precision_suite.report.page import write_report

EXIT_REGRESSION = 1
EXIT_INVALID = 2


def _factor(text):
    try:
        return check_factor(text)
    except SpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser):
    """Add the ``report`` command's arguments to an `argparse.ArgumentParser`."""
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="run directory written by 'precision-suite run' or 'pytest -m precision'; "
                             "the report is written to RUN_DIR/index.html")
    parser.add_argument("--baseline", metavar="OTHER_RUN_DIR", default=None,
                        help="run directory to compare with, such as the previous night's; "
                             "lists new failures, fixed cases, ULP growth, newly unavailable backends "
                             "and environment differences (default: no comparison)")
    parser.add_argument("--lang", choices=LANGUAGES, default="en",
                        help="language of the page's headings and labels (default: en)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit with status 1 when the comparison finds new failures, ULP growth "
                             "or newly unavailable backends; needs --baseline")
    parser.add_argument("--regression-factor", type=_factor, default=DEFAULT_REGRESSION_FACTOR, metavar="F",
                        help="flag a backend and dtype whose max or p99 ULP error grew more than F times "
                             f"(default: {DEFAULT_REGRESSION_FACTOR:g})")
    return parser


def _print_comparison(comparison, stream):
    print(f"compared with baseline {comparison.baseline_run_id} ({comparison.baseline_path}): "
          f"{len(comparison.new_failures)} new failures, {len(comparison.fixed_cases)} fixed, "
          f"{len(comparison.ulp_growth)} ULP growth, {len(comparison.newly_unavailable)} newly unavailable, "
          f"{len(comparison.environment_changes)} environment differences", file=stream)
    for line in comparison.describe_regressions():
        print(f"  {line}", file=stream)


def main(args):
    """Run the ``report`` command with parsed arguments and return its exit status.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser set up by `add_arguments`.

    Returns
    -------
    int
        0, `EXIT_REGRESSION` or `EXIT_INVALID`, as the module docstring describes.
    """
    if args.fail_on_regression and args.baseline is None:
        print("precision-suite report: error: --fail-on-regression needs --baseline OTHER_RUN_DIR",
              file=sys.stderr)
        return EXIT_INVALID

    try:
        run = load_run(args.run_dir)
        comparison = None
        if args.baseline is not None:
            comparison = compare_runs(run, args.baseline, args.regression_factor)
        path = write_report(run, lang=args.lang, comparison=comparison)
    except SpecError as error:
        print(f"precision-suite report: error: {error}", file=sys.stderr)
        return EXIT_INVALID

    print(f"report written to {path}")
    if comparison is None:
        return 0

    _print_comparison(comparison, sys.stdout)
    if args.fail_on_regression and comparison.has_regressions:
        print("precision-suite report: regressions found against the baseline", file=sys.stderr)
        return EXIT_REGRESSION
    return 0


def build_parser():
    """Return a stand-alone parser for the ``report`` command, for tests and ``python -m``."""
    parser = argparse.ArgumentParser(prog="precision-suite report",
                                     description="Write RUN_DIR/index.html and compare with a baseline run.")
    return add_arguments(parser)


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
