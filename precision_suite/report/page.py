"""The report page: one self-contained HTML file with every section and its plots.

The page has no scripts and fetches nothing: styles are inline and plots are PNG data URIs,
so it opens from disk, from a CI artifact or as an e-mail attachment.
"""

import os

import pandas as pd

from precision_suite.budgets import POLICY_VERSION, budget_table
from precision_suite.errors import SpecError
from precision_suite.messages import repro_command
from precision_suite.report import plots
from precision_suite.report.compare import DEFAULT_REGRESSION_FACTOR, ULP_FLOOR, compare_runs
from precision_suite.report.data import FAILING, RunData, load_run
from precision_suite.report.html import (
    definition_list,
    element,
    escape_text,
    figure,
    format_exact,
    format_value,
    render_table,
    status_class,
)
from precision_suite.report.labels import ENVIRONMENT_LABELS, HTML_LANG, labels_for
from precision_suite.results import STATUSES, write_text_atomic
from precision_suite.spec import CaseSpec

REPORT_FILE = "index.html"

# How many cases the worst-cases section shows.
WORST_CASE_COUNT = 20

# Tables with their own section. Any other table goes to "Other tables".
KNOWN_TABLES = ("cases", "e2e", "norm_sites")

SUMMARY_DISPLAY_COLUMNS = [
    "backend", "dtype", "status", "cases", "passed", "failed", "unavailable", "errors",
    "max_ulp_error", "p99_ulp_error", "max_abs_error", "ulp_budget", "margin",
]

# Columns of an e2e table that identify a row, shown next to the routing columns.
E2E_ID_COLUMNS = ("preset", "use_qk_norm", "mode", "compared_with", "routing", "dtype", "layer", "stage")
# Words that mark an e2e column as a routing measurement (flip counts and router margins).
ROUTING_WORDS = ("flip", "margin")

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 1.5em 3em;
       color: #1d1d1f; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
nav ul { columns: 3; padding-left: 1.2em; }
.counts span { display: inline-block; margin: 0 0.6em 0.4em 0; padding: 0.25em 0.7em; border-radius: 4px; }
.banner { padding: 0.7em 1em; border-radius: 4px; margin: 1em 0; }
.banner.incomplete { background: #fff3c4; border: 1px solid #d9b300; }
.banner.regressions { background: #fbd5d5; border: 1px solid #c0392b; }
.banner.clean { background: #d8f3dc; border: 1px solid #2d8a4e; }
.status-passed { background: #d8f3dc; }
.status-failed { background: #fbd5d5; }
.status-error { background: #fde2c4; }
.status-unavailable { background: #e6e6e6; color: #555; }
.table-wrap { overflow-x: auto; }
table.data { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; }
table.data th, table.data td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
table.data th { background: #f0f0f0; position: sticky; top: 0; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
article.case { border: 1px solid #bbb; border-left-width: 6px; border-radius: 4px; padding: 0.2em 1em 0.6em;
               margin: 1em 0; background: #fff; }
article.case.status-failed { border-left-color: #c0392b; }
article.case.status-error { border-left-color: #d35400; }
article.case.status-passed { border-left-color: #2d8a4e; }
article.case h3 { font-size: 15px; }
dl { display: grid; grid-template-columns: repeat(3, max-content minmax(8em, auto)); gap: 0.1em 1em; margin: 0.4em 0; }
dt { font-weight: 600; }
dd { margin: 0; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 0.5em; white-space: pre-wrap; word-break: break-all; }
pre.repro { user-select: all; background: #eef3ff; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #444; font-size: 13px; }
.empty { color: #666; font-style: italic; }
"""


def _section(section_id, heading, content):
    return element("section", element("h2", escape_text(heading)) + content, id=section_id)


def _paragraph(text, class_=None):
    return element("p", escape_text(text), class_=class_)


def _subheading(text):
    return element("h3", escape_text(text))


# Header


def _status_counts(cases):
    counts = cases["status"].value_counts() if not cases.empty else pd.Series(dtype=int)
    return {status: int(counts.get(status, 0)) for status in STATUSES}


def _incomplete_banner(run, labels):
    if run.complete:
        return ""
    reasons = []
    if run.metadata.get("complete") is not True:
        reasons.append(labels["incomplete_flag"])
    if run.unfinalized_tables:
        reasons.append(f"{labels['incomplete_tables']}: {', '.join(run.unfinalized_tables)}")
    items = "".join(element("li", escape_text(reason)) for reason in reasons)
    return element("div", element("strong", escape_text(labels["incomplete_banner"])) + element("ul", items),
                   class_="banner incomplete", id="incomplete")


def _header(run, labels):
    counts = _status_counts(run.cases)
    badges = "".join(
        element("span", escape_text(f"{labels['status_' + status]}: {counts[status]}"), class_=status_class(status))
        for status in STATUSES
    )
    total = sum(counts.values())
    if total == 0:
        verdict = labels["verdict_empty"]
    elif counts["failed"] or counts["error"]:
        verdict = labels["verdict_failed"]
    else:
        verdict = labels["verdict_passed"]

    parts = [
        element("h1", escape_text(labels["title"])),
        _paragraph(f"{labels['run']} {run.run_id} · {run.path} · {total} {labels['count_cases']}"),
        _incomplete_banner(run, labels),
        element("div", badges, class_="counts", id="counts"),
        _paragraph(verdict, class_="verdict"),
    ]
    if run.broken_lines:
        parts.append(_paragraph(f"{labels['broken_lines']}: {run.broken_lines}"))
    return element("header", "".join(parts), id="overview")


def _navigation(sections, labels):
    items = "".join(element("li", element("a", escape_text(heading), href=f"#{section_id}"))
                    for section_id, heading in sections)
    return element("nav", element("strong", escape_text(labels["nav"])) + element("ul", items))


# Summary and budgets


def _summary_status(row):
    if row["failed"]:
        return "failed"
    if row["errors"]:
        return "error"
    if row["unavailable"] == row["cases"]:
        return "unavailable"
    return "passed"


def summary_display(summary):
    """Return the summary table with a ``status`` column added.

    The summary comes from `results.summarize`, whose ``margin`` column is already there.
    """
    frame = summary.copy()
    if frame.empty:
        return frame
    frame["status"] = [_summary_status(row) for row in frame.to_dict("records")]
    return frame


def _summary_section(run, labels, lang):
    table = render_table(summary_display(run.summary), lang, SUMMARY_DISPLAY_COLUMNS, labels["worst_none"],
                         table_id="summary-table")
    budgets = pd.DataFrame(budget_table())
    budget_part = (_subheading(labels["section_budgets"])
                   + _paragraph(f"{labels['budgets_note']} {POLICY_VERSION}.")
                   + render_table(budgets, lang, table_id="budget-table"))
    return _paragraph(labels["summary_note"]) + table + budget_part


# Unavailable


def unavailable_table(cases):
    """Return one row per backend, dtype, device and reason among the unavailable cases."""
    rows = cases[cases["status"] == "unavailable"]
    if rows.empty:
        return pd.DataFrame(columns=["backend", "dtype", "device", "cases", "reason"])
    grouped = (rows.assign(reason=rows["message"].fillna("").astype(str))
               .groupby(["backend", "dtype", "device", "reason"], sort=True, dropna=False)
               .size().reset_index(name="cases"))
    return grouped[["backend", "dtype", "device", "cases", "reason"]]


def missing_pairs(run):
    """Return the backend and dtype pairs that ``run.json`` asked for and that have no rows yet."""
    backends = run.metadata.get("backends") or []
    dtypes = run.metadata.get("dtypes") or []
    present = set()
    if not run.cases.empty:
        present = set(run.cases[["backend", "dtype"]].itertuples(index=False, name=None))
    return pd.DataFrame([{"backend": backend, "dtype": dtype} for backend in backends for dtype in dtypes
                         if (backend, dtype) not in present], columns=["backend", "dtype"])


def _unavailable_section(run, labels, lang):
    table = unavailable_table(run.cases)
    missing = missing_pairs(run)
    if missing.empty:
        empty_text = labels["unavailable_none"] if run.complete else labels["unavailable_none_so_far"]
        return render_table(table, lang, empty_text=empty_text)
    return (render_table(table, lang, empty_text=labels["unavailable_none_so_far"])
            + _subheading(labels["not_started"]) + render_table(missing, lang, table_id="not-started"))


# Worst cases


def worst_cases(cases, count=WORST_CASE_COUNT):
    """Return up to ``count`` rows: every failure and error first, then passing cases by max ULP error over budget.

    Passing cases are limited to the worst one per backend and dtype, so one backend's
    near misses do not fill the list.
    """
    rows = cases[cases["status"].isin(("passed", "failed", "error"))].copy()
    if rows.empty:
        return rows
    rows["_failing"] = rows["status"].isin(FAILING)
    rows["_ratio"] = (rows["max_ulp_error"] / rows["ulp_budget"]).fillna(-1.0)
    rows = rows.sort_values(["_failing", "_ratio", "max_ulp_error"], ascending=False, na_position="last")
    passing = rows[~rows["_failing"]].drop_duplicates(["backend", "dtype"])
    rows = pd.concat([rows[rows["_failing"]], passing])
    return rows.head(count).drop(columns=["_failing", "_ratio"])


WORST_PER_PAIR_COLUMNS = ["backend", "dtype", "case_id", "status", "max_ulp_error", "ulp_budget", "p99_ulp_error",
                          "shape", "eps", "x_dist", "x_scale", "w_dist", "residual"]


def worst_per_backend_dtype(cases):
    """Return the executed case with the highest ratio of max ULP error to budget, per backend and dtype.

    In the nightly profile Hypothesis' target phase climbs toward these cases.
    """
    rows = cases[cases["status"].isin(("passed", "failed", "error"))].copy()
    if rows.empty:
        return rows
    rows["_ratio"] = (rows["max_ulp_error"] / rows["ulp_budget"]).fillna(float("inf"))
    rows = rows.sort_values(["_ratio", "max_ulp_error"], ascending=False, na_position="first")
    worst = rows.drop_duplicates(["backend", "dtype"]).sort_values(["backend", "dtype"])
    return worst[[column for column in WORST_PER_PAIR_COLUMNS if column in worst.columns]]


def _repro_block(row, labels):
    try:
        spec = CaseSpec.from_json(str(row.get("spec", "")))
    except SpecError as error:
        return _paragraph(f"{labels['spec_invalid']}: {error}", class_="empty")
    return element("pre", escape_text(repro_command(spec, row.get("backend"))), class_="repro")


def _worst_element(row):
    if not row.get("worst_output"):
        return ""
    # Full precision: at 4 digits an actual and a reference 100 ulp apart print the same.
    return (f"{row['worst_output']}{row.get('worst_index', '')}: actual {format_exact(row.get('actual_at_worst'))}, "
            f"reference {format_exact(row.get('reference_at_worst'))}")


def _case_article(number, row, labels):
    heading = (f"{row.get('case_id')} · {row.get('backend')} · {row.get('dtype')} · {row.get('shape')} · "
               f"{row.get('status')}")
    facts = [
        ("device", row.get("device")),
        ("eps", format_value(row.get("eps"))),
        ("x_dist", f"{row.get('x_dist')} (x_scale {format_value(row.get('x_scale'))})"),
        ("w_dist", row.get("w_dist")),
        ("residual", format_value(row.get("residual"))),
        ("seed", row.get("seed")),
        ("max_ulp_error / ulp_budget",
         f"{format_value(row.get('max_ulp_error'))} / {format_value(row.get('ulp_budget'))}"),
        ("p99_ulp_error", format_value(row.get("p99_ulp_error"))),
        ("max_abs_error", format_value(row.get("max_abs_error"))),
        ("max_rel_error", format_value(row.get("max_rel_error"))),
        ("frac_over_budget", format_value(row.get("frac_over_budget"))),
        ("bitwise_equal_frac", format_value(row.get("bitwise_equal_frac"))),
        ("nonfinite_mismatches", format_value(row.get("nonfinite_mismatches"))),
        (labels["worst_element"], _worst_element(row)),
    ]
    parts = [element("h3", escape_text(heading)), definition_list(facts),
             element("h4", escape_text(labels["spec"])), element("pre", escape_text(row.get("spec", "")), class_="spec")]
    message = row.get("message")
    if isinstance(message, str) and message:
        parts += [element("h4", escape_text(labels["message"])), element("pre", escape_text(message), class_="message")]
    parts += [element("h4", escape_text(labels["repro"])), _repro_block(row, labels)]
    return element("article", "".join(parts), class_=f"case {status_class(row.get('status')) or ''}".strip(),
                   id=f"case-{number}")


def _worst_section(run, labels, lang):
    rows = worst_cases(run.cases)
    if rows.empty:
        return _paragraph(labels["worst_none"], class_="empty")
    per_pair = render_table(worst_per_backend_dtype(run.cases), lang, caption=labels["worst_per_pair"],
                            table_id="worst-per-backend-dtype")
    articles = "".join(_case_article(number, row, labels) for number, row in enumerate(rows.to_dict("records"), 1))
    return per_pair + _paragraph(labels["worst_note"]) + articles


# Plots


def _plots_section(run, labels):
    cases = run.cases
    figures = [
        (plots.plot_ulp_distribution(cases), labels["plot_ulp_distribution"]),
        (plots.plot_ulp_against_hidden_size(cases), labels["plot_ulp_hidden"]),
        (plots.plot_error_against_eps_and_scale(cases), labels["plot_eps_scale"]),
        (plots.plot_bitwise_equal(cases), labels["plot_bitwise"]),
    ]
    content = "".join(figure(png, caption, labels["plot_none"]) for png, caption in figures)
    return _paragraph(labels["plot_labels_note"], class_="empty") + content


# End to end


def routing_table(e2e):
    """Return the routing columns of the e2e table with its id columns, rows with a value only."""
    routing = [column for column in e2e.columns if any(word in column for word in ROUTING_WORDS)]
    if not routing:
        return pd.DataFrame()
    ids = [column for column in E2E_ID_COLUMNS if column in e2e.columns]
    measured = e2e[routing].notna() & (e2e[routing].astype(str) != "")
    return e2e.loc[measured.any(axis=1), ids + routing]


def _e2e_section(run, labels, lang):
    e2e = run.tables.get("e2e")
    norm_sites = run.tables.get("norm_sites")
    parts = []

    if e2e is None:
        parts.append(_paragraph(labels["e2e_not_run"], class_="empty"))
    else:
        parts.append(figure(plots.plot_e2e_stages(e2e), labels["plot_e2e_stages"], labels["plot_none"]))
        identical = plots.plot_e2e_identical(e2e)
        if identical is not None:
            parts.append(figure(identical, labels["plot_e2e_identical"], labels["plot_none"]))
        parts.append(_subheading(labels["e2e_stages"])
                     + render_table(e2e, lang, empty_text=labels["none"], table_id="e2e-table"))
        parts.append(_subheading(labels["e2e_routing"])
                     + render_table(routing_table(e2e), lang, empty_text=labels["e2e_routing_none"],
                                    table_id="routing-table"))

    parts.append(_subheading(labels["norm_sites"]))
    if norm_sites is None:
        parts.append(_paragraph(labels["norm_sites_not_run"], class_="empty"))
    else:
        parts.append(render_table(norm_sites, lang, empty_text=labels["none"], table_id="norm-sites-table"))
    return "".join(parts)


def _other_tables_section(run, lang, labels):
    names = [name for name in run.tables if name not in KNOWN_TABLES]
    return "".join(_subheading(name) + render_table(run.tables[name], lang, empty_text=labels["none"])
                   for name in names)


# Comparison


def _comparison_section(comparison, labels, lang):
    if comparison is None:
        return _paragraph(labels["comparison_none"], class_="empty")

    if comparison.has_regressions:
        banner = element("div", escape_text(labels["comparison_regressions"]), class_="banner regressions")
    else:
        banner = element("div", escape_text(labels["comparison_clean"]), class_="banner clean")
    facts = [
        (labels["baseline"], f"{comparison.baseline_run_id} · {comparison.baseline_path}"),
        (labels["regression_factor"], f"{comparison.factor:g} (ULP floor {ULP_FLOOR:g})"),
        (labels["case_set_changes"], f"{comparison.only_in_run} / {comparison.only_in_baseline}"),
    ]
    parts = [banner, definition_list(facts)]
    if not comparison.baseline_complete:
        parts.append(_paragraph(labels["baseline_incomplete"], class_="banner incomplete"))

    listed = [
        ("new_failures", comparison.new_failures, None),
        ("ulp_growth", comparison.ulp_growth, labels["ulp_growth_note"]),
        ("newly_unavailable", comparison.newly_unavailable, None),
        ("fixed_cases", comparison.fixed_cases, None),
        ("environment_changes", comparison.environment_changes, None),
    ]
    for key, frame, note in listed:
        parts.append(element("h3", escape_text(labels[key]), id=f"comparison-{key.replace('_', '-')}"))
        if note:
            parts.append(_paragraph(note))
        parts.append(render_table(frame, lang, empty_text=labels["none"]))
    return "".join(parts)


# Environment


def environment_facts(run):
    """Return (key, value) pairs: run settings and times, then the environment dict, known keys first."""
    facts = {key: run.metadata.get(key) for key in ("run_id", "profile", "seed", "device", "started_at",
                                                    "finished_at", "duration_s", "complete")}
    facts.update(run.environment)
    for key, value in run.metadata.items():
        if key not in facts and key != "environment":
            facts[key] = value
    return list(facts.items())


def _environment_section(run, labels, lang):
    names = ENVIRONMENT_LABELS[lang]
    ordered = sorted(environment_facts(run), key=lambda item: list(names).index(item[0]) if item[0] in names
                     else len(names))
    rows = pd.DataFrame([
        {labels["key"]: names.get(key, key),
         labels["value"]: labels["empty_value"] if value in (None, "") else format_value(value)}
        for key, value in ordered
    ])
    return render_table(rows, lang)


# Page


def render_report(run, lang="en", comparison=None):
    """Return the report page of ``run`` as HTML text.

    Parameters
    ----------
    run : RunData
        The run, from `load_run`.
    lang : {"en", "zh"}
        Language of headings and labels.
    comparison : Comparison, optional
        The comparison with a baseline, shown in its own section.

    Raises
    ------
    SpecError
        When ``lang`` is not a supported language.
    """
    labels = labels_for(lang)
    sections = [
        ("comparison", labels["section_comparison"], _comparison_section(comparison, labels, lang)),
        ("summary", labels["section_summary"], _summary_section(run, labels, lang)),
        ("unavailable", labels["section_unavailable"],
         _unavailable_section(run, labels, lang)),
        ("worst-cases", labels["section_worst"], _worst_section(run, labels, lang)),
        ("plots", labels["section_plots"], _plots_section(run, labels)),
        ("e2e", labels["section_e2e"], _e2e_section(run, labels, lang)),
        ("environment", labels["section_environment"], _environment_section(run, labels, lang)),
    ]
    other = _other_tables_section(run, lang, labels)
    if other:
        sections.insert(-1, ("other-tables", labels["section_other_tables"], other))

    title = f"{labels['title']} · {run.run_id}" + ("" if run.complete else f" ({labels['incomplete_title']})")
    head = ('<meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            + element("title", escape_text(title))
            + element("style", STYLE))
    body = (_header(run, labels)
            + _navigation([(section_id, heading) for section_id, heading, _ in sections], labels)
            + "".join(_section(section_id, heading, content) for section_id, heading, content in sections))
    return f"<!DOCTYPE html>\n{element('html', element('head', head) + element('body', body), lang=HTML_LANG[lang])}\n"


def write_report(run_dir, baseline_dir=None, lang="en", regression_factor=DEFAULT_REGRESSION_FACTOR,
                 comparison=None):
    """Write ``RUN_DIR/index.html`` atomically and return its path.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunData
        The run directory, or a run already read with `load_run`; a partial run renders
        too and is marked incomplete.
    baseline_dir : str or os.PathLike, optional
        A run to compare with; ignored when ``comparison`` is given.
    lang : {"en", "zh"}
        Language of headings and labels.
    regression_factor : float
        Factor for ULP growth in the comparison (see `compare_runs`).
    comparison : Comparison, optional
        A comparison computed already, so a caller that needs it does not compute it twice.

    Returns
    -------
    str
        Path of the written ``index.html``.

    Raises
    ------
    SpecError
        When a run directory is missing or unreadable, or an option is invalid.
    """
    labels_for(lang)
    run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir)
    if comparison is None and baseline_dir is not None:
        comparison = compare_runs(run, baseline_dir, regression_factor)

    path = os.path.join(run.path, REPORT_FILE)
    write_text_atomic(path, render_report(run, lang, comparison))
    return path
