"""The short summary table printed at the end of a pytest session and a ``run``."""

import pandas as pd

_COLUMNS = ["backend", "dtype", "cases", "passed", "failed", "unavailable", "errors",
            "max_ulp_error", "p99_ulp_error", "ulp_budget", "margin"]


# Printed under the table, because its error columns and the budget come from different cases.
MAXIMA_NOTE = ("max_ulp_error, p99_ulp_error and ulp_budget are each the largest over the pair's cases. Each case is "
               "judged against its own budget, which grows with the hidden size for float32 and float64; margin is "
               "the smallest budget minus max ULP error of a case, negative when one exceeds its budget")


def format_summary(summary):
    """Return the summary DataFrame as aligned text, one line per backend and dtype, and a note on its maxima."""
    if summary.empty:
        return "no cases ran"
    table = summary[[column for column in _COLUMNS if column in summary.columns]].copy()
    for column in ("max_ulp_error", "p99_ulp_error", "ulp_budget", "margin"):
        if column in table.columns:
            table[column] = table[column].map(lambda value: "-" if pd.isna(value) else f"{value:.3g}")
    return table.to_string(index=False) + "\n" + MAXIMA_NOTE
