"""The report's plots, drawn on matplotlib's Agg canvas and returned as base64 PNG.

Each function takes DataFrames and returns the PNG as base64 text, or None when there is
nothing to draw. Figures are built with `matplotlib.figure.Figure` instead of pyplot, so no
global figure state or interactive backend is involved.

NOTE: axis labels stay in English for both report languages, because the default
matplotlib fonts have no CJK glyphs and a machine may lack a CJK font.
"""

import base64
import io
import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from precision_suite.dtypes import DTYPES
from precision_suite.report.data import executed, hidden_size

DPI = 96
PANEL_WIDTH = 4.0
PANEL_HEIGHT = 3.2
MAX_PANELS_PER_ROW = 4
MARKERS = ("o", "s", "^", "D", "v", "P", "X")

# Columns of an e2e table that name a series in the per-stage plot, when they vary.
E2E_SERIES_COLUMNS = ("preset", "use_qk_norm", "mode", "routing", "backend", "dtype", "layer")
# Per-stage error columns, in order of preference. The plot draws up to two of them.
E2E_ERROR_COLUMNS = ("max_ulp_error", "norm_rel_error", "normwise_rel_error", "p99_ulp_error", "max_abs_error")
# Columns that name the second mode of a row that compares two modes instead of a mode
# against the reference. Such rows carry the bit-identical fraction between the modes.
E2E_PAIR_COLUMNS = ("compared_with", "other_mode")
E2E_IDENTICAL_COLUMN = "bitwise_equal_frac"
# More series than this make the per-stage legend unreadable, so the rest are dropped.
MAX_SERIES = 12


def figure_to_base64(figure):
    """Return ``figure`` rendered as PNG and encoded as base64 ASCII."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _ordered_dtypes(values):
    known = [name for name in DTYPES if name in set(values)]
    return known + sorted(set(values) - set(known))


def backend_colours(backends):
    """Return a colour per backend name, stable for a given set of names."""
    palette = colormaps["tab10"]
    return {name: palette(index % palette.N) for index, name in enumerate(sorted(set(backends)))}


def _panel_grid(count):
    columns = min(count, MAX_PANELS_PER_ROW)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, axes[:count]


def _finite(frame, column):
    values = pd.to_numeric(frame[column], errors="coerce")
    return frame[np.isfinite(values)]


def _symlog_ulp(axis, linthresh=1.0):
    """Use a scale that shows 0 ulp and thousands of ulp on one axis, starting at 0."""
    axis.set_yscale("symlog", linthresh=linthresh)
    axis.set_ylim(bottom=0)


def plot_ulp_distribution(cases):
    """Box plot of per-case max ULP error for each backend, one panel per dtype."""
    rows = _finite(executed(cases), "max_ulp_error")
    if rows.empty:
        return None

    dtypes = _ordered_dtypes(rows["dtype"])
    figure, axes = _panel_grid(len(dtypes))
    for axis, dtype in zip(axes, dtypes):
        group = rows[rows["dtype"] == dtype]
        backends = sorted(group["backend"].unique())
        data = [group.loc[group["backend"] == name, "max_ulp_error"].to_numpy(dtype=float) for name in backends]
        positions = np.arange(1, len(backends) + 1)
        axis.boxplot(data, positions=positions, widths=0.6)

        # A budget that grows with the hidden size has no single tick; the hidden-size plot shows it.
        for position, name in zip(positions, backends):
            budgets = pd.to_numeric(group.loc[group["backend"] == name, "ulp_budget"], errors="coerce").dropna()
            if budgets.nunique() == 1:
                axis.hlines(budgets.iloc[0], position - 0.35, position + 0.35, colors="red", linewidth=2)

        axis.set_xticks(positions)
        axis.set_xticklabels(backends, rotation=30, ha="right", fontsize=8)
        _symlog_ulp(axis)
        axis.set_title(dtype)
        axis.set_ylabel("max ULP error per case")
    return figure_to_base64(figure)


def plot_ulp_against_hidden_size(cases):
    """Scatter of max ULP error against hidden size, one panel per dtype, one colour per backend."""
    rows = _finite(executed(cases), "max_ulp_error").copy()
    if rows.empty:
        return None
    rows["hidden_size"] = [hidden_size(row) for row in rows.to_dict("records")]
    rows = rows.dropna(subset=["hidden_size"])
    if rows.empty:
        return None

    colours = backend_colours(rows["backend"])
    dtypes = _ordered_dtypes(rows["dtype"])
    figure, axes = _panel_grid(len(dtypes))
    for axis, dtype in zip(axes, dtypes):
        group = rows[rows["dtype"] == dtype]
        for name, series in group.groupby("backend", sort=True):
            axis.scatter(series["hidden_size"], series["max_ulp_error"], s=12, alpha=0.7,
                         color=colours[name], label=name)
            budgets = series.assign(ulp_budget=pd.to_numeric(series["ulp_budget"], errors="coerce"))
            budgets = budgets.dropna(subset=["ulp_budget"]).groupby("hidden_size")["ulp_budget"].max()
            if len(budgets):
                axis.plot(budgets.index, budgets.to_numpy(), color=colours[name], linestyle="--", linewidth=1)
        axis.set_xscale("log", base=2)
        _symlog_ulp(axis)
        axis.set_title(dtype)
        axis.set_xlabel("hidden size")
        axis.set_ylabel("max ULP error")
        axis.legend(fontsize=7)
    return figure_to_base64(figure)


def plot_error_against_eps_and_scale(cases):
    """Scatter of max ULP error over budget against eps and against x_scale."""
    rows = _finite(executed(cases), "max_ulp_error")
    rows = _finite(rows, "ulp_budget")
    rows = rows[pd.to_numeric(rows["ulp_budget"], errors="coerce") > 0]
    if rows.empty:
        return None
    ratio = rows["max_ulp_error"].astype(float) / rows["ulp_budget"].astype(float)

    colours = backend_colours(rows["backend"])
    dtypes = _ordered_dtypes(rows["dtype"])
    figure, axes = _panel_grid(2)
    for axis, column in zip(axes, ("eps", "x_scale")):
        for name in sorted(rows["backend"].unique()):
            for marker, dtype in zip(MARKERS * 2, dtypes):
                selected = (rows["backend"] == name) & (rows["dtype"] == dtype)
                if not selected.any():
                    continue
                axis.scatter(rows.loc[selected, column], ratio[selected], s=12, alpha=0.7, marker=marker,
                             color=colours[name], label=f"{name} {dtype}")
        axis.axhline(1.0, color="red", linewidth=1)
        axis.set_xscale("log")
        _symlog_ulp(axis, linthresh=0.1)
        axis.set_xlabel(column)
        axis.set_ylabel("max ULP error / budget")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return figure_to_base64(figure)


def plot_bitwise_equal(cases):
    """Heat map of the mean bit-identical fraction per backend and dtype."""
    rows = _finite(executed(cases), "bitwise_equal_frac")
    if rows.empty:
        return None
    table = rows.pivot_table(index="backend", columns="dtype", values="bitwise_equal_frac", aggfunc="mean")
    table = table[_ordered_dtypes(table.columns)]

    figure = Figure(figsize=(1.6 + 1.3 * len(table.columns), 1.0 + 0.45 * len(table.index)))
    axis = figure.subplots()
    image = axis.imshow(table.to_numpy(dtype=float), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for (row, column), value in np.ndenumerate(table.to_numpy(dtype=float)):
        if np.isfinite(value):
            axis.text(column, row, f"{value:.3f}", ha="center", va="center",
                      color="black" if value > 0.5 else "white", fontsize=8)
    axis.set_xticks(range(len(table.columns)))
    axis.set_xticklabels(table.columns)
    axis.set_yticks(range(len(table.index)))
    axis.set_yticklabels(table.index)
    figure.colorbar(image, ax=axis, label="bit-identical fraction")
    return figure_to_base64(figure)


def _plot_per_stage(frame, metrics, series_columns=E2E_SERIES_COLUMNS):
    """Line plot of ``metrics`` per stage, one line per value of the id columns that vary."""
    stages = list(dict.fromkeys(frame["stage"].astype(str)))
    positions = {stage: index for index, stage in enumerate(stages)}
    series_columns = [column for column in series_columns if column in frame.columns and frame[column].nunique() > 1]

    figure, axes = _panel_grid(len(metrics))
    for axis, metric in zip(axes, metrics):
        rows = _finite(frame, metric)
        groups = rows.groupby(series_columns, sort=True) if series_columns else [("all", rows)]
        for count, (name, series) in enumerate(groups):
            if count >= MAX_SERIES:
                break
            label = " ".join(str(part) for part in name) if isinstance(name, tuple) else str(name)
            series = series.assign(position=series["stage"].astype(str).map(positions)).sort_values("position")
            axis.plot(series["position"], series[metric].astype(float), marker="o", markersize=3, label=label)

        if "ulp" in metric:
            _symlog_ulp(axis)
        elif "frac" not in metric:
            axis.set_yscale("log", nonpositive="mask")
        axis.set_xticks(range(len(stages)))
        axis.set_xticklabels(stages, rotation=40, ha="right", fontsize=7)
        axis.set_ylabel(metric)
        if series_columns:
            axis.legend(fontsize=6)
    return figure_to_base64(figure)


def pair_rows(e2e):
    """Split the e2e table into (rows against the reference, rows comparing two modes).

    A row compares two modes when one of `E2E_PAIR_COLUMNS` has a value.
    """
    pair_columns = [column for column in E2E_PAIR_COLUMNS if column in e2e.columns]
    if not pair_columns:
        return e2e, e2e.iloc[0:0]
    is_pair = e2e[pair_columns].notna().any(axis=1) & (e2e[pair_columns].astype(str) != "").any(axis=1)
    return e2e[~is_pair], e2e[is_pair]


def plot_e2e_stages(e2e):
    """Per-stage error of the end-to-end check against the float64 reference, or None.

    Needs a ``stage`` column and at least one column of `E2E_ERROR_COLUMNS`, and draws up
    to two of them side by side.
    """
    if e2e is None or e2e.empty or "stage" not in e2e.columns:
        return None
    against_reference, _ = pair_rows(e2e)
    metrics = [column for column in E2E_ERROR_COLUMNS
               if column in against_reference.columns and len(_finite(against_reference, column))]
    if not metrics:
        return None
    return _plot_per_stage(against_reference, metrics[:2])


def plot_e2e_identical(e2e):
    """Per-stage bit-identical fraction between two modes, or None when the table has no such rows."""
    if e2e is None or e2e.empty or "stage" not in e2e.columns or E2E_IDENTICAL_COLUMN not in e2e.columns:
        return None
    _, pairs = pair_rows(e2e)
    pairs = _finite(pairs, E2E_IDENTICAL_COLUMN)
    if pairs.empty:
        return None
    pair_column = next(column for column in E2E_PAIR_COLUMNS if column in pairs.columns)
    return _plot_per_stage(pairs, [E2E_IDENTICAL_COLUMN], series_columns=("preset", "use_qk_norm", "mode", pair_column, "dtype", "layer"))
