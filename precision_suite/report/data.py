"""Read a run directory for the report and the comparison, finished or not.

Rows are read from the streamed JSON lines through `RunDirectory.frame`, the same function
that `RunDirectory.finalize` uses to write the CSVs, so a partial run (killed before
``finalize``) shows every finished row. A table that has only a CSV (a copied artifact
without its JSON lines) is read from the CSV.
"""

import dataclasses
import json
import os
import re

import pandas as pd

from precision_suite.errors import SpecError
from precision_suite.results import CASE_COLUMNS, RUN_FILE, RunDirectory, summarize

# Columns of the cases table that hold numbers; CSV readers may see them as text.
NUMERIC_CASE_COLUMNS = (
    "eps", "x_scale", "max_abs_error", "max_rel_error", "max_ulp_error", "mean_ulp_error",
    "p99_ulp_error", "frac_over_budget", "ulp_budget", "bitwise_equal_frac", "nonfinite_mismatches",
    "actual_at_worst", "reference_at_worst", "duration_s",
)

EXECUTED = ("passed", "failed")
FAILING = ("failed", "error")

# Tables derived from others, which the report recomputes instead of reading.
DERIVED_TABLES = ("summary",)


@dataclasses.dataclass
class RunData:
    """One run directory as the report reads it.

    Attributes
    ----------
    path : str
        The run directory.
    metadata : dict
        ``run.json``; empty when the file is missing.
    tables : dict of str to pandas.DataFrame
        Every table with rows, by name (``cases``, ``e2e``, ``norm_sites``, ...).
    broken_lines : int
        JSON lines that did not parse, over all tables.
    unfinalized_tables : tuple of str
        Tables with JSON lines but no CSV, which means ``finalize`` never ran.
    """

    path: str
    metadata: dict
    tables: dict
    broken_lines: int = 0
    unfinalized_tables: tuple = ()

    @property
    def cases(self):
        """The cases table; an empty frame with `CASE_COLUMNS` when the run has none."""
        return self.tables.get("cases", pd.DataFrame(columns=CASE_COLUMNS))

    @property
    def summary(self):
        """The summary per backend and dtype, computed by the function that writes summary.csv."""
        return summarize(self.cases)

    @property
    def environment(self):
        """The environment dict recorded in ``run.json``."""
        return self.metadata.get("environment") or {}

    @property
    def run_id(self):
        """The run id from ``run.json``, else the folder name."""
        return str(self.metadata.get("run_id") or os.path.basename(os.path.normpath(self.path)))

    @property
    def complete(self):
        """Whether ``run.json`` marks the run complete and every table reached its CSV."""
        return self.metadata.get("complete") is True and not self.unfinalized_tables


def _coerce_numbers(frame, columns):
    """Convert ``columns`` of ``frame`` to floats in place, with unparsable text as NaN."""
    for column in columns:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _table_names(path):
    names = set()
    for entry in os.listdir(path):
        stem, extension = os.path.splitext(entry)
        if extension in (".jsonl", ".csv") and not entry.startswith(".") and stem not in DERIVED_TABLES:
            names.add(stem)
    return sorted(names)


def load_run(path):
    """Read a run directory into a `RunData`.

    Parameters
    ----------
    path : str or os.PathLike
        A folder written by ``precision-suite run`` or ``pytest -m precision``.

    Returns
    -------
    RunData

    Raises
    ------
    SpecError
        When the folder does not exist, contains neither ``run.json`` nor any table, or its
        ``run.json`` is not valid JSON.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise SpecError(f"{path}: run directory not found; pass the --out folder of a precision-suite run")

    names = _table_names(path)
    if not names and not os.path.exists(os.path.join(path, RUN_FILE)):
        raise SpecError(f"{path}: not a run directory (no {RUN_FILE} and no .jsonl or .csv tables); "
                        "pass the --out folder of a precision-suite run")

    directory = RunDirectory(path)
    tables, broken, unfinalized = {}, 0, []
    for name in names:
        lines_path = directory.file(f"{name}.jsonl")
        csv_path = directory.file(f"{name}.csv")
        if os.path.exists(lines_path):
            tables[name] = directory.frame(name)
            broken += directory.read_rows(name)[1]
            if not os.path.exists(csv_path):
                unfinalized.append(name)
        else:
            try:
                tables[name] = pd.read_csv(csv_path)
            except pd.errors.EmptyDataError:
                tables[name] = pd.DataFrame()

    if "cases" in tables:
        _coerce_numbers(tables["cases"], NUMERIC_CASE_COLUMNS)

    return RunData(path=path, metadata=directory.read_metadata(), tables=tables,
                   broken_lines=broken, unfinalized_tables=tuple(unfinalized))


def executed(cases):
    """Return the rows whose backend produced an output (status passed or failed)."""
    return cases[cases["status"].isin(EXECUTED)]


def hidden_size(row):
    """Return the hidden size of a cases row from its spec JSON, else its shape text, else None."""
    spec = row.get("spec")
    if isinstance(spec, str) and spec:
        try:
            return int(json.loads(spec)["shape"][-1])
        except (ValueError, KeyError, IndexError, TypeError):
            pass

    dims = re.findall(r"\d+", str(row.get("shape", "")))
    return int(dims[-1]) if dims else None
