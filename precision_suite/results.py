"""Run directories: rows streamed to JSON lines, and the tables derived from them.

A run directory contains:

- ``run.json``: run id, profile, seed, environment, start and end times, and whether the
  run completed.
- ``<table>.jsonl``: one JSON object per line, appended as each row finishes, so a run
  killed at any moment leaves every finished row readable. Several processes (pytest-xdist
  workers) append to the same file; each row is one ``write`` call in append mode.
- ``<table>.csv``: derived from the JSON lines, with duplicate keys dropped (last wins),
  and written atomically. ``cases`` also gets ``summary.csv`` per backend and dtype.
"""

import datetime
import json
import math
import os
import tempfile
import uuid

import pandas as pd

from precision_suite.errors import SpecError

# Columns of cases.csv, in order. Rows may carry more columns; they follow these.
CASE_COLUMNS = [
    "run_id", "case_id", "seed", "backend", "device", "dtype", "shape", "eps", "x_dist", "x_scale",
    "w_dist", "residual", "status", "max_abs_error", "max_rel_error", "max_ulp_error",
    "mean_ulp_error", "p99_ulp_error", "frac_over_budget", "ulp_budget", "bitwise_equal_frac",
    "nonfinite_mismatches", "worst_output", "worst_index", "actual_at_worst", "reference_at_worst",
    "duration_s", "message", "spec",
]

SUMMARY_COLUMNS = [
    "backend", "dtype", "cases", "passed", "failed", "unavailable", "errors",
    "max_ulp_error", "p99_ulp_error", "max_abs_error", "ulp_budget", "margin",
]

STATUSES = ("passed", "failed", "unavailable", "error")

# Columns that identify a row; a later row with the same key replaces an earlier one.
TABLE_KEYS = {
    "cases": ("case_id", "backend", "device"),
    "e2e": ("case_id", "kind", "mode", "compared_with", "routing", "dtype", "device", "layer", "stage"),
    "norm_sites": ("case_id", "mode", "dtype", "device", "layer", "site"),
}

RUN_FILE = "run.json"


def utc_now():
    """Return the current UTC time as an ISO 8601 string with seconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def new_run_id():
    """Return a run id that sorts by start time: ``YYYYmmdd-HHMMSS-xxxxxx``."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename.

    A crash leaves either the old file or the new one, never half of one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        # mkstemp creates the file readable by its owner only; tables are for everyone.
        os.fchmod(handle, 0o644)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_csv_atomic(frame, path):
    """Write a DataFrame as CSV to ``path`` atomically."""
    write_text_atomic(path, frame.to_csv(index=False))


def _json_value(value):
    """Convert NumPy scalars and tuples so a row serializes as plain JSON."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


class RunDirectory:
    """A run's output folder: run metadata, streamed rows and derived tables.

    Parameters
    ----------
    path : str or os.PathLike
        The folder; created when missing.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)

    @classmethod
    def existing(cls, path):
        """Return the run directory at ``path`` if the folder exists, else None (nothing is created)."""
        return cls(path) if os.path.isdir(path) else None

    def file(self, name):
        """Return the path of a file inside the run directory."""
        return os.path.join(self.path, name)

    # Metadata

    def read_metadata(self):
        """Return ``run.json`` as a dict, or an empty dict when it does not exist yet.

        Raises
        ------
        SpecError
            When ``run.json`` exists but is not valid JSON.
        """
        path = self.file(RUN_FILE)
        if not os.path.exists(path):
            return {}
        try:
            with open(path, encoding="utf-8") as stream:
                return json.load(stream)
        except json.JSONDecodeError as error:
            raise SpecError(f"{path}: invalid JSON ({error}); delete the file or pass another run directory") from None

    def write_metadata(self, **fields):
        """Merge ``fields`` into ``run.json`` and write it atomically."""
        metadata = self.read_metadata()
        metadata.update(fields)
        write_text_atomic(self.file(RUN_FILE), json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
        return metadata

    def start(self, run_id=None, **fields):
        """Record the start of a run unless one is recorded already, and return the run id."""
        metadata = self.read_metadata()
        if "run_id" not in metadata:
            metadata = self.write_metadata(run_id=run_id or new_run_id(), started_at=utc_now(), complete=False, **fields)
        return metadata["run_id"]

    @property
    def run_id(self):
        """The run id from ``run.json``, or an empty string before `start`."""
        return self.read_metadata().get("run_id", "")

    # Rows

    def append(self, table, row):
        """Append one row to ``<table>.jsonl`` with a single write, so it lands whole."""
        line = json.dumps({key: _json_value(value) for key, value in row.items()}, default=str) + "\n"
        descriptor = os.open(self.file(f"{table}.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode("utf-8"))
        finally:
            os.close(descriptor)

    def end_partial_line(self, table):
        """End ``<table>.jsonl`` with a newline if a killed process cut its last row short.

        Without this, the next appended row would join the cut one and both would be lost.
        Returns True when a newline was added.
        """
        path = self.file(f"{table}.jsonl")
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            return False
        with open(path, "rb") as stream:
            stream.seek(-1, os.SEEK_END)
            if stream.read(1) == b"\n":
                return False
        with open(path, "ab") as stream:
            stream.write(b"\n")
        return True

    def read_rows(self, table):
        """Return the rows of ``<table>.jsonl`` and how many lines were unreadable.

        A line cut off by a killed process does not parse; it is counted, not raised, so
        every finished row stays readable.
        """
        path = self.file(f"{table}.jsonl")
        rows, broken = [], 0
        if not os.path.exists(path):
            return rows, broken
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    broken += 1
        return rows, broken

    def frame(self, table):
        """Return a table as a DataFrame with duplicate keys dropped (the last row wins)."""
        rows, _ = self.read_rows(table)
        frame = pd.DataFrame(rows)
        key = [column for column in TABLE_KEYS.get(table, ()) if column in frame.columns]
        if key and not frame.empty:
            frame = frame.drop_duplicates(subset=key, keep="last").reset_index(drop=True)
        if table == "cases" and not frame.empty:
            ordered = [column for column in CASE_COLUMNS if column in frame.columns]
            frame = frame[ordered + [column for column in frame.columns if column not in ordered]]
        return frame

    def tables(self):
        """Return the names of the tables that have rows in this directory."""
        return sorted(name[:-len(".jsonl")] for name in os.listdir(self.path) if name.endswith(".jsonl"))

    @classmethod
    def check_new(cls, path, option, hint):
        """Raise `SpecError` when ``path`` already contains a run: a ``run.json`` or rows of a table.

        A new run there would mix its rows with the old ones. ``option`` names the flag the
        path came from, and ``hint`` is the next step that the message suggests.
        """
        existing = cls.existing(path)
        if existing is None:
            return
        try:
            metadata = existing.read_metadata()
        except SpecError as error:
            raise SpecError(f"{option}: {error}") from None
        if metadata or existing.tables():
            raise SpecError(f"{option}: {path} already contains run {metadata.get('run_id') or '(no run.json)'}; "
                            f"{hint}")

    def finished_keys(self, table="cases"):
        """Return the set of key tuples of the rows already in ``table``."""
        frame = self.frame(table)
        key = TABLE_KEYS.get(table, ())
        if frame.empty:
            return set()
        return set(frame[list(key)].itertuples(index=False, name=None))

    # Derived tables

    def finalize(self, complete=True):
        """Write every ``<table>.csv`` and ``summary.csv`` atomically and update ``run.json``.

        Returns
        -------
        dict
            Table name to DataFrame, ``summary`` included when there are case rows.
        """
        frames = {}
        for table in self.tables():
            frames[table] = self.frame(table)
            write_csv_atomic(frames[table], self.file(f"{table}.csv"))
        if "cases" in frames:
            frames["summary"] = summarize(frames["cases"])
            write_csv_atomic(frames["summary"], self.file("summary.csv"))

        metadata = self.read_metadata()
        finished = utc_now()
        fields = {"finished_at": finished, "complete": bool(complete)}
        if "started_at" in metadata:
            started = datetime.datetime.fromisoformat(metadata["started_at"])
            fields["duration_s"] = (datetime.datetime.fromisoformat(finished) - started).total_seconds()
        self.write_metadata(**fields)
        return frames


def _max_or_nan(series):
    values = pd.to_numeric(series, errors="coerce").dropna()
    return float(values.max()) if len(values) else math.nan


def budget_margin(executed):
    """Return the smallest per-case budget minus max ULP error of executed case rows, or NaN for none.

    Each case is compared with its own budget, which grows with the hidden size for float32
    and float64, so this is not the largest budget minus the largest error. A negative
    margin means at least one case exceeds its budget.
    """
    margins = (pd.to_numeric(executed["ulp_budget"], errors="coerce")
               - pd.to_numeric(executed["max_ulp_error"], errors="coerce")).dropna()
    return float(margins.min()) if len(margins) else math.nan


def summarize(cases):
    """Return the summary table: one row per backend and dtype.

    ``max_ulp_error`` and ``max_abs_error`` are the maxima over executed cases;
    ``p99_ulp_error`` is the largest per-case 99th percentile; ``ulp_budget`` is the largest
    budget and ``margin`` comes from `budget_margin`.
    """
    if cases.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)

    rows = []
    for (backend, dtype), group in cases.groupby(["backend", "dtype"], sort=True):
        counts = group["status"].value_counts()
        executed = group[group["status"].isin(["passed", "failed"])]
        rows.append({
            "backend": backend,
            "dtype": dtype,
            "cases": len(group),
            "passed": int(counts.get("passed", 0)),
            "failed": int(counts.get("failed", 0)),
            "unavailable": int(counts.get("unavailable", 0)),
            "errors": int(counts.get("error", 0)),
            "max_ulp_error": _max_or_nan(executed["max_ulp_error"]),
            "p99_ulp_error": _max_or_nan(executed["p99_ulp_error"]),
            "max_abs_error": _max_or_nan(executed["max_abs_error"]),
            "ulp_budget": _max_or_nan(group["ulp_budget"]),
            "margin": budget_margin(executed),
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
