"""Tests of the HTML report, the baseline comparison and the ``report`` command.

Every test builds its run directories itself with `RunDirectory.append` and `finalize`,
from real case specs and hand-set error values, so the expected content is known exactly.
The browser test at the end drives headless Chromium over the DevTools protocol on a pipe
(no socket) and is skipped when no Chromium or Chrome binary is installed.
"""

import base64
import fcntl
import html.parser
import json
import os
import select
import shlex
import shutil
import subprocess
import time

import pandas as pd
import pytest

from precision_suite.errors import SpecError
from precision_suite.messages import repro_command
from precision_suite.report import (
    REPORT_FILE,
    compare_runs,
    load_run,
    render_report,
    write_report,
)
from precision_suite.report.command import EXIT_INVALID, EXIT_REGRESSION, build_parser, main
from precision_suite.report.compare import check_factor
from precision_suite.report.html import format_value
from precision_suite.report.labels import COLUMN_LABELS, ENVIRONMENT_LABELS, LABELS
from precision_suite.report.page import worst_cases
from precision_suite.results import RunDirectory
from precision_suite.spec import CaseSpec

SECTION_IDS = ("comparison", "summary", "unavailable", "worst-cases", "plots", "e2e", "environment")
HOSTILE = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>&amp;"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ENVIRONMENT = {
    "python": "3.11.7", "numpy": "2.1.0", "pandas": "2.2.3", "hypothesis": "6.112.0", "ml_dtypes": "0.5.0",
    "paddle_version": "3.3.1", "paddle_commit": "abc123", "cuda_compiled": False, "cuda_version": "",
    "gpu_name": "", "suite_commit": "0123456789abcdef", "platform": "Linux-x86_64",
}


# Building run directories


def make_spec(dtype="float32", hidden=64, seed=0, eps=1e-6, x_scale=1.0):
    return CaseSpec("rms_norm", (4, hidden), dtype, eps, "normal", "near_one", False, seed, x_scale)


def case_row(spec, backend, max_ulp_error, ulp_budget=2.0, status=None, device="cpu", message=""):
    """Return a cases-table row with hand-set errors. The status follows the budget unless given."""
    if status is None:
        status = "failed" if max_ulp_error > ulp_budget else "passed"
    executed = status in ("passed", "failed")
    nan = float("nan")
    return {
        "case_id": spec.case_id, "seed": spec.seed, "backend": backend, "device": device,
        "dtype": spec.dtype, "shape": "x".join(str(dim) for dim in spec.shape), "eps": spec.eps,
        "x_dist": spec.x_dist, "x_scale": spec.x_scale, "w_dist": spec.w_dist, "residual": spec.residual,
        "status": status,
        "max_abs_error": max_ulp_error * 1e-7 if executed else nan,
        "max_rel_error": max_ulp_error * 1e-7 if executed else nan,
        "max_ulp_error": max_ulp_error if executed else nan,
        "mean_ulp_error": max_ulp_error / 4 if executed else nan,
        "p99_ulp_error": max_ulp_error / 2 if executed else nan,
        "frac_over_budget": 0.01 if status == "failed" else 0.0,
        "ulp_budget": ulp_budget,
        "bitwise_equal_frac": 0.9 if executed else nan,
        "nonfinite_mismatches": 0 if executed else -1,
        "worst_output": "out" if executed else "", "worst_index": "[1, 7]" if executed else "",
        "actual_at_worst": 1.5 if executed else nan, "reference_at_worst": 1.4999 if executed else nan,
        "duration_s": 0.01, "message": message, "spec": spec.to_json(),
    }


def default_rows(fused_ulp=0.5, composite_ulp=1.0):
    """Return rows of 6 specs: paddle_fused and paddle_composite run, paddle_phi is unavailable.

    The budget is 8 ulp, and each spec scales the given max ULP error by 1.0 to 1.5.
    """
    rows = []
    for seed, (dtype, hidden) in enumerate([("float32", 64), ("float32", 1024), ("bfloat16", 128),
                                            ("bfloat16", 4096), ("float16", 8), ("float16", 2048)]):
        spec = make_spec(dtype, hidden, seed, eps=10.0 ** -(seed + 1), x_scale=10.0 ** (seed - 2))
        rows.append(case_row(spec, "paddle_fused", fused_ulp * (1 + seed / 10), ulp_budget=8.0))
        rows.append(case_row(spec, "paddle_composite", composite_ulp * (1 + seed / 10), ulp_budget=8.0))
        rows.append(case_row(spec, "paddle_phi", 0.0, status="unavailable",
                             message="(Unimplemented) There are no kernels which are registered in the rms_norm operator."))
    return rows


def write_run(path, rows, complete=True, environment=None, tables=None, finalize=True, **metadata):
    """Write a run directory from cases rows and optional extra tables, and return its path."""
    directory = RunDirectory(path)
    directory.start(profile="ci", seed=0, environment=dict(environment or ENVIRONMENT), **metadata)
    for row in rows:
        directory.append("cases", dict(row, run_id=directory.run_id))
    for name, table_rows in (tables or {}).items():
        for row in table_rows:
            directory.append(name, row)
    if finalize:
        directory.finalize(complete=complete)
    return str(path)


def e2e_rows():
    """Return e2e rows shaped like the e2e runner's: reference rows, then mode-pair rows."""
    rows = []
    for mode in ("default", "all_composite"):
        for stage_number, stage in enumerate(("input_norm", "attention", "post_attention_norm", "layer_output")):
            rows.append({"mode": mode, "kind": "reference", "compared_with": "", "routing": "own", "dtype": "bfloat16",
                         "layer": 0, "stage": stage, "max_ulp_error": 0.5 * (stage_number + 1),
                         "norm_rel_error": 1e-3 * (stage_number + 1), "bitwise_equal_frac": 0.8})
        rows.append({"mode": mode, "kind": "reference", "compared_with": "", "routing": "own", "dtype": "bfloat16",
                     "layer": 0, "stage": "expert_choice", "routing_flips": 2, "routing_flip_frac": 0.125,
                     "max_flip_margin": 3e-3})
    for stage in ("input_norm", "layer_output"):
        rows.append({"mode": "default", "kind": "mode_pair", "compared_with": "all_composite", "routing": "own",
                     "dtype": "bfloat16", "layer": 0, "stage": stage, "bitwise_equal_frac": 0.7})
    return rows


def norm_site_rows():
    return [{"mode": "default", "layer": 0, "site": site, "requested": "paddle_fused", "ran": "paddle_fused",
             "status": "passed"} for site in ("input", "post_attention", "q_norm", "k_norm")]


# Reading the page


class PageParser(html.parser.HTMLParser):
    """Collect the parts of a report page that the tests check."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []
        self.ids = set()
        self.attributes = []
        self.section_headings = {}
        self.images = []
        self.text = []
        self.html_lang = None
        self.title = ""
        self.table_rows = []
        self.pre_blocks = []
        self._stack = []
        self._section = None
        self._table = None
        self._capture = None
        self._buffer = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append(tag)
        self.attributes.extend(attrs)
        self._stack.append(tag)
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag == "html":
            self.html_lang = attributes.get("lang")
        if tag == "section":
            self._section = attributes.get("id")
        if tag == "img":
            self.images.append(attributes)
        if tag == "table":
            self._table = attributes.get("id")
        if tag == "tr":
            self.table_rows.append({"class": attributes.get("class"), "cells": [], "section": self._section,
                                    "table": self._table})
        if tag in ("h2", "title", "pre", "td", "th"):
            self._capture = (tag, attributes)
            self._buffer = []

    def handle_endtag(self, tag):
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()
        if self._capture and self._capture[0] == tag:
            text = "".join(self._buffer)
            if tag == "h2":
                self.section_headings[self._section] = text
            elif tag == "title":
                self.title = text
            elif tag == "pre":
                self.pre_blocks.append((self._capture[1].get("class"), text))
            elif self.table_rows:
                self.table_rows[-1]["cells"].append(text)
            self._capture = None

    def handle_data(self, data):
        self.text.append(data)
        if self._capture:
            self._buffer.append(data)

    def rows_in(self, section, table=None):
        return [row for row in self.table_rows
                if row["section"] == section and row["cells"] and (table is None or row["table"] == table)]


def parse_page(text):
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


def read_page(run_dir):
    with open(os.path.join(run_dir, REPORT_FILE), encoding="utf-8") as stream:
        return stream.read()


# Loading runs


def test_load_run_missing_directory(tmp_path):
    with pytest.raises(SpecError, match="run directory not found"):
        load_run(tmp_path / "missing")


def test_load_run_empty_directory(tmp_path):
    with pytest.raises(SpecError, match="not a run directory"):
        load_run(tmp_path)


def test_load_run_partial_reads_json_lines(tmp_path):
    path = write_run(tmp_path / "run", default_rows(), finalize=False)
    with open(os.path.join(path, "cases.jsonl"), "a", encoding="utf-8") as stream:
        stream.write('{"case_id": "cut off mid-li')

    run = load_run(path)

    assert not os.path.exists(os.path.join(path, "cases.csv"))
    assert len(run.cases) == 18
    assert run.broken_lines == 1
    assert run.unfinalized_tables == ("cases",)
    assert not run.complete


def test_load_run_csv_only(tmp_path):
    path = write_run(tmp_path / "run", default_rows())
    os.remove(os.path.join(path, "cases.jsonl"))

    run = load_run(path)

    assert len(run.cases) == 18
    assert run.cases["max_ulp_error"].dtype.kind == "f"
    assert run.complete


def test_summary_matches_summary_csv(tmp_path):
    path = write_run(tmp_path / "run", default_rows())
    written = pd.read_csv(os.path.join(path, "summary.csv"))

    computed = load_run(path).summary

    pd.testing.assert_frame_equal(computed.reset_index(drop=True), written, check_dtype=False)


# Page structure and escaping


def test_report_has_every_section(tmp_path):
    path = write_run(tmp_path / "run", default_rows(),
                     tables={"e2e": e2e_rows(), "norm_sites": norm_site_rows()})

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    for section_id in SECTION_IDS:
        assert section_id in page.ids, section_id
        assert page.section_headings[section_id]
    assert "overview" in page.ids
    assert page.html_lang == "en"


def test_report_is_self_contained(tmp_path):
    path = write_run(tmp_path / "run", default_rows(), tables={"e2e": e2e_rows()})

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    assert "script" not in page.tags
    assert "link" not in page.tags
    for name, value in page.attributes:
        if name in ("src", "href"):
            assert value.startswith(("data:image/png;base64,", "#")), (name, value)
    # Four kernel plots, the per-stage e2e plot and the mode-pair plot.
    assert len(page.images) == 6
    for image in page.images:
        data = base64.b64decode(image["src"].split(",", 1)[1])
        assert data.startswith(PNG_SIGNATURE)


def test_report_escapes_case_text(tmp_path):
    rows = default_rows()
    rows[0]["message"] = HOSTILE
    rows[0]["status"] = "failed"
    rows[1]["spec"] = HOSTILE
    rows[1]["status"] = "error"
    rows[2]["message"] = HOSTILE
    environment = dict(ENVIRONMENT, gpu_name=HOSTILE)
    path = write_run(tmp_path / "run", rows, environment=environment,
                     tables={"e2e": [dict(e2e_rows()[0], stage=HOSTILE)], "norm_sites": [{"site": HOSTILE}]})

    text = read_page(os.path.dirname(write_report(path)))
    page = parse_page(text)

    assert "script" not in page.tags
    assert all(not name.startswith("on") for name, _ in page.attributes)
    assert all(image["src"].startswith("data:image/png;base64,") for image in page.images)
    assert "<script>alert" not in text
    # The parser decodes the escapes, so the reader sees the original text, several times.
    assert "".join(page.text).count(HOSTILE) >= 5
    assert ("message", HOSTILE) in page.pre_blocks
    assert ("spec", HOSTILE) in page.pre_blocks


def test_report_shows_invalid_spec_without_repro(tmp_path):
    rows = default_rows()
    rows[0].update(status="failed", max_ulp_error=99.0, spec="{not json")
    path = write_run(tmp_path / "run", rows)

    text = read_page(os.path.dirname(write_report(path)))

    assert LABELS["en"]["spec_invalid"] in text


def test_summary_rows_coloured_by_status(tmp_path):
    path = write_run(tmp_path / "run", default_rows(fused_ulp=9.0))

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    classes = {(row["cells"][0], row["cells"][1]): row["class"] for row in page.rows_in("summary", "summary-table")}
    assert classes[("paddle_fused", "float32")] == "status-failed"
    assert classes[("paddle_composite", "float32")] == "status-passed"
    assert classes[("paddle_phi", "float16")] == "status-unavailable"


def test_summary_margin_is_smallest(tmp_path):
    spec_a, spec_b = make_spec(seed=1), make_spec(seed=2)
    rows = [case_row(spec_a, "paddle_fused", 1.0, ulp_budget=8.0), case_row(spec_b, "paddle_fused", 3.0, ulp_budget=4.0)]
    path = write_run(tmp_path / "run", rows)

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    header, values = [row["cells"] for row in page.rows_in("summary", "summary-table")]
    assert values[header.index("margin")] == "1"
    assert values[header.index("ulp_budget")] == "8"


def test_unavailable_lists_reason(tmp_path):
    path = write_run(tmp_path / "run", default_rows())

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    rows = [row["cells"] for row in page.rows_in("unavailable") if row["cells"][0] == "paddle_phi"]
    assert len(rows) == 3
    assert all("no kernels which are registered" in cells[-1] for cells in rows)
    assert all(cells[3] == "2" for cells in rows)


def test_worst_cases_failures_first():
    rows = default_rows(fused_ulp=0.5, composite_ulp=1.9)
    rows[0].update(status="failed", max_ulp_error=2.5)
    rows[3].update(status="error", max_ulp_error=float("nan"), message="raised RuntimeError")
    frame = pd.DataFrame(rows)

    ordered = worst_cases(frame, count=4)

    assert list(ordered["status"][:2]) == ["failed", "error"] or list(ordered["status"][:2]) == ["error", "failed"]
    assert set(ordered["status"][2:]) == {"passed"}
    assert list(ordered["backend"][2:]) == ["paddle_composite", "paddle_composite"]
    assert "unavailable" not in set(worst_cases(frame, count=100)["status"])


def test_repro_command_reruns_spec(tmp_path):
    rows = default_rows()
    rows[0].update(status="failed", max_ulp_error=9.0)
    spec = CaseSpec.from_json(rows[0]["spec"])
    path = write_run(tmp_path / "run", rows)

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    commands = [text for class_, text in page.pre_blocks if class_ == "repro"]
    assert commands[0] == repro_command(spec, "paddle_fused")
    arguments = shlex.split(commands[0])
    assert arguments[:2] == ["precision-suite", "repro"]
    assert CaseSpec.from_json(arguments[2]) == spec


def test_partial_run_marked_incomplete(tmp_path):
    path = write_run(tmp_path / "run", default_rows()[:5], finalize=False)

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    assert "incomplete" in page.ids
    assert page.title.endswith("(incomplete)")
    assert any(LABELS["en"]["incomplete_tables"] in text for text in page.text)
    assert "passed: 4" in "".join(page.text)


def test_complete_run_not_marked_incomplete(tmp_path):
    path = write_run(tmp_path / "run", default_rows())

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    assert "incomplete" not in page.ids
    assert "(incomplete)" not in page.title


def test_e2e_not_run(tmp_path):
    path = write_run(tmp_path / "run", default_rows())

    text = read_page(os.path.dirname(write_report(path)))

    assert LABELS["en"]["e2e_not_run"] in text
    assert LABELS["en"]["norm_sites_not_run"] in text


def test_e2e_tables_rendered(tmp_path):
    path = write_run(tmp_path / "run", default_rows(), tables={"e2e": e2e_rows(), "norm_sites": norm_site_rows()})

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    stage_rows = page.rows_in("e2e", "e2e-table")
    assert len(stage_rows) == 1 + len(e2e_rows())
    assert {"input_norm", "layer_output", "expert_choice"} <= {cell for row in stage_rows for cell in row["cells"]}
    routing_header, *routing_rows = [row["cells"] for row in page.rows_in("e2e", "routing-table")]
    assert "max_flip_margin" in routing_header
    assert "routing" in routing_header
    assert [cells[routing_header.index("mode")] for cells in routing_rows] == ["default", "all_composite"]
    site_rows = page.rows_in("e2e", "norm-sites-table")
    assert len(site_rows) == 1 + len(norm_site_rows())
    assert LABELS["en"]["e2e_not_run"] not in "".join(page.text)


def test_other_tables_rendered(tmp_path):
    path = write_run(tmp_path / "run", default_rows(), tables={"timings": [{"phase": "reference", "seconds": 1.5}]})

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    assert "other-tables" in page.ids
    assert ["reference", "1.5"] in [row["cells"] for row in page.rows_in("other-tables")]


def test_environment_lists_versions(tmp_path):
    path = write_run(tmp_path / "run", default_rows())

    page = parse_page(read_page(os.path.dirname(write_report(path))))

    facts = {row["cells"][0]: row["cells"][1] for row in page.rows_in("environment") if len(row["cells"]) == 2}
    names = ENVIRONMENT_LABELS["en"]
    assert facts[names["paddle_version"]] == "3.3.1"
    assert facts[names["paddle_commit"]] == "abc123"
    assert facts[names["hypothesis"]] == "6.112.0"
    assert facts[names["suite_commit"]] == "0123456789abcdef"
    assert facts[names["profile"]] == "ci"
    assert facts[names["seed"]] == "0"
    assert facts[names["gpu_name"]] == LABELS["en"]["empty_value"]
    assert facts[names["complete"]] == "true"
    assert facts[names["started_at"]]


def test_chinese_labels(tmp_path):
    path = write_run(tmp_path / "run", default_rows())

    page = parse_page(read_page(os.path.dirname(write_report(path, lang="zh"))))

    assert page.html_lang == "zh-CN"
    assert page.section_headings["summary"] == LABELS["zh"]["section_summary"]
    assert page.section_headings["environment"] == LABELS["zh"]["section_environment"]
    assert COLUMN_LABELS["zh"]["max_ulp_error"] in "".join(page.text)


def test_label_sets_match():
    assert set(LABELS["zh"]) == set(LABELS["en"])
    assert set(ENVIRONMENT_LABELS["zh"]) == set(ENVIRONMENT_LABELS["en"])


def test_unknown_language_rejected(tmp_path):
    path = write_run(tmp_path / "run", default_rows())

    with pytest.raises(SpecError, match="lang: invalid value 'fr'"):
        write_report(path, lang="fr")


def test_render_report_empty_run(tmp_path):
    directory = RunDirectory(tmp_path / "run")
    directory.start(profile="ci")

    page = parse_page(render_report(load_run(directory.path)))

    for section_id in SECTION_IDS:
        assert section_id in page.ids
    assert LABELS["en"]["verdict_empty"] in "".join(page.text)


@pytest.mark.parametrize("value, text", [
    (float("nan"), ""), (float("inf"), "inf"), (2.0, "2"), (0.000123456, "0.0001235"),
    (True, "true"), (7, "7"), (None, ""), ("a<b", "a<b"),
])
def test_format_value(value, text):
    assert format_value(value) == text


def test_worst_element_at_full_precision(tmp_path):
    spec = make_spec("float32", 64, 3)
    row = case_row(spec, "paddle_composite", 99.6, ulp_budget=8.0)
    row["actual_at_worst"] = -0.9999001026153564
    row["reference_at_worst"] = -0.9999060630798340
    directory = write_run(tmp_path / "run", [row])

    text = " ".join(parse_page(render_report(load_run(directory))).text)

    assert "actual -0.9999001026153564, reference -0.999906063079834" in text


# Comparison


def test_compare_flags_worse_backend(tmp_path):
    baseline = write_run(tmp_path / "baseline", default_rows(fused_ulp=1.0))
    current = write_run(tmp_path / "current", default_rows(fused_ulp=2.8))

    comparison = compare_runs(current, baseline, factor=2.0)

    assert comparison.has_regressions
    grown = comparison.ulp_growth
    assert set(grown["backend"]) == {"paddle_fused"}
    assert set(grown.loc[grown["metric"] == "max_ulp_error", "dtype"]) == {"float32", "bfloat16", "float16"}
    # p99 is half the max here: only float16 (2.1 ulp) passes 2 x the 1 ulp floor.
    assert set(grown.loc[grown["metric"] == "p99_ulp_error", "dtype"]) == {"float16"}
    assert (grown["compared_cases"] == 2).all()
    assert comparison.new_failures.empty


def test_compare_new_failures(tmp_path):
    baseline = write_run(tmp_path / "baseline", default_rows(fused_ulp=1.0))
    current = write_run(tmp_path / "current", default_rows(fused_ulp=9.0))

    comparison = compare_runs(current, baseline)

    assert len(comparison.new_failures) == 6
    assert set(comparison.new_failures["backend"]) == {"paddle_fused"}
    assert set(comparison.new_failures["baseline_status"]) == {"passed"}
    assert comparison.fixed_cases.empty
    assert any("new failure" in line and "paddle_fused" in line for line in comparison.describe_regressions())


def test_compare_fixed_cases_not_regression(tmp_path):
    baseline = write_run(tmp_path / "baseline", default_rows(fused_ulp=9.0))
    current = write_run(tmp_path / "current", default_rows(fused_ulp=1.0))

    comparison = compare_runs(current, baseline)

    assert len(comparison.fixed_cases) == 6
    assert not comparison.has_regressions


def test_compare_identical_runs(tmp_path):
    baseline = write_run(tmp_path / "baseline", default_rows())
    current = write_run(tmp_path / "current", default_rows())

    comparison = compare_runs(current, baseline)

    assert not comparison.has_regressions
    assert comparison.describe_regressions() == []
    assert list(comparison.environment_changes["key"]) == []
    assert comparison.only_in_run == 0
    assert comparison.only_in_baseline == 0


def test_compare_newly_unavailable(tmp_path):
    baseline_rows = default_rows()
    current_rows = [row for row in default_rows() if not (row["backend"] == "paddle_composite"
                                                          and row["dtype"] == "float16")]
    for row in current_rows:
        if row["backend"] == "paddle_fused" and row["dtype"] == "bfloat16":
            row.update(status="unavailable", max_ulp_error=float("nan"), message="driver too old")
    baseline = write_run(tmp_path / "baseline", baseline_rows)
    current = write_run(tmp_path / "current", current_rows)

    comparison = compare_runs(current, baseline)

    reasons = {(row["backend"], row["dtype"]): row["reason"] for row in comparison.newly_unavailable.to_dict("records")}
    assert reasons == {("paddle_fused", "bfloat16"): "driver too old",
                       ("paddle_composite", "float16"): "no rows in this run"}
    assert comparison.has_regressions


def test_compare_environment_not_regression(tmp_path):
    baseline = write_run(tmp_path / "baseline", default_rows())
    current = write_run(tmp_path / "current", default_rows(), environment=dict(ENVIRONMENT, paddle_version="3.3.2"))

    comparison = compare_runs(current, baseline)

    assert comparison.environment_changes.to_dict("records") == [
        {"key": "paddle_version", "baseline": "3.3.1", "current": "3.3.2"}]
    assert not comparison.has_regressions


@pytest.mark.parametrize("baseline_ulp, current_ulp, grew", [
    (0.3, 0.9, False),           # below the 1 ulp floor: rounding noise
    (0.3, 2.5, True),            # beyond 2 x the floor
    (3.0, 5.9, False),
    (3.0, 6.1, True),
    (3.0, float("inf"), True),   # a non-finite mismatch appeared
    (float("inf"), float("inf"), False),
])
def test_growth_threshold(tmp_path, baseline_ulp, current_ulp, grew):
    spec = make_spec()
    baseline = write_run(tmp_path / "baseline", [case_row(spec, "paddle_fused", baseline_ulp, ulp_budget=100.0)])
    current = write_run(tmp_path / "current", [case_row(spec, "paddle_fused", current_ulp, ulp_budget=100.0)])

    comparison = compare_runs(current, baseline, factor=2.0)

    assert ("max_ulp_error" in set(comparison.ulp_growth["metric"])) is grew


def test_growth_without_shared_cases(tmp_path):
    baseline = write_run(tmp_path / "baseline", [case_row(make_spec(seed=1), "paddle_fused", 1.0, 100.0)])
    current = write_run(tmp_path / "current", [case_row(make_spec(seed=2), "paddle_fused", 5.0, 100.0)])

    comparison = compare_runs(current, baseline)

    assert list(comparison.ulp_growth["compared_cases"]) == [0, 0]
    assert comparison.only_in_run == 1
    assert comparison.only_in_baseline == 1


@pytest.mark.parametrize("factor", [0.5, float("nan"), float("inf"), "two"])
def test_check_factor_rejects(factor):
    with pytest.raises(SpecError, match="regression factor: invalid value"):
        check_factor(factor)


def test_report_lists_comparison(tmp_path):
    baseline = write_run(tmp_path / "baseline", default_rows(fused_ulp=1.0))
    current = write_run(tmp_path / "current", default_rows(fused_ulp=9.0))

    page = parse_page(read_page(os.path.dirname(write_report(current, baseline))))

    assert {"comparison-new-failures", "comparison-ulp-growth", "comparison-newly-unavailable",
            "comparison-fixed-cases", "comparison-environment-changes"} <= page.ids
    failing = [row for row in page.rows_in("comparison") if "paddle_fused" in row["cells"]]
    assert len(failing) >= 6
    assert LABELS["en"]["comparison_regressions"] in "".join(page.text)


# The report command


def run_command(arguments, capsys):
    status = main(build_parser().parse_args([str(argument) for argument in arguments]))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_command_fails_on_regression(tmp_path, capsys):
    baseline = write_run(tmp_path / "baseline", default_rows(fused_ulp=1.0))
    current = write_run(tmp_path / "current", default_rows(fused_ulp=2.8))

    status, out, err = run_command([current, "--baseline", baseline, "--fail-on-regression"], capsys)

    assert status == EXIT_REGRESSION
    assert "ULP growth: paddle_fused" in out
    assert "regressions found" in err
    assert os.path.exists(os.path.join(current, REPORT_FILE))


def test_command_regression_without_flag(tmp_path, capsys):
    baseline = write_run(tmp_path / "baseline", default_rows(fused_ulp=1.0))
    current = write_run(tmp_path / "current", default_rows(fused_ulp=2.8))

    status, out, _ = run_command([current, "--baseline", baseline], capsys)

    assert status == 0
    assert "ULP growth: paddle_fused" in out


def test_command_factor_controls_growth(tmp_path, capsys):
    baseline = write_run(tmp_path / "baseline", default_rows(fused_ulp=1.0))
    current = write_run(tmp_path / "current", default_rows(fused_ulp=2.8))

    status, _, _ = run_command([current, "--baseline", baseline, "--fail-on-regression",
                                "--regression-factor", "3"], capsys)

    assert status == 0


def test_command_clean_comparison(tmp_path, capsys):
    baseline = write_run(tmp_path / "baseline", default_rows())
    current = write_run(tmp_path / "current", default_rows())

    status, out, _ = run_command([current, "--baseline", baseline, "--fail-on-regression", "--lang", "zh"], capsys)

    assert status == 0
    assert "0 new failures" in out
    assert 'lang="zh-CN"' in read_page(current)


def test_command_missing_run_dir(tmp_path, capsys):
    status, _, err = run_command([tmp_path / "missing"], capsys)

    assert status == EXIT_INVALID
    assert "run directory not found" in err


def test_command_flag_needs_baseline(tmp_path, capsys):
    current = write_run(tmp_path / "current", default_rows())

    status, _, err = run_command([current, "--fail-on-regression"], capsys)

    assert status == EXIT_INVALID
    assert "--fail-on-regression needs --baseline" in err


def test_command_rejects_bad_factor(capsys):
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["run", "--regression-factor", "0.5"])

    assert raised.value.code == 2
    assert "regression factor: invalid value" in capsys.readouterr().err


# Headless browser

BROWSER_NAMES = ("chromium", "google-chrome", "google-chrome-stable", "chromium-browser")
BROWSER_TIMEOUT_S = 60


def find_browser():
    """Return the path of a Chromium or Chrome binary, or None."""
    configured = os.environ.get("PRECISION_SUITE_CHROMIUM")
    if configured:
        return configured
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _move_above(descriptor, lowest):
    """Return a duplicate of ``descriptor`` numbered >= ``lowest`` and close the original."""
    moved = fcntl.fcntl(descriptor, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(descriptor)
    return moved


class DevToolsPipe:
    """A Chrome DevTools protocol client over ``--remote-debugging-pipe`` (fds 3 and 4).

    The pipe keeps the browser off every socket, so the test opens no port.
    """

    def __init__(self, browser, user_data_dir):
        commands_read, self._commands = os.pipe()
        self._events, events_write = os.pipe()
        # Move the child's ends above fd 4, so dup2 below never maps an fd onto itself
        # (which would keep its close-on-exec flag) or onto the other end.
        commands_read = _move_above(commands_read, 10)
        events_write = _move_above(events_write, 10)

        def connect_pipes():
            # Chrome reads commands from fd 3 and writes replies to fd 4.
            os.dup2(commands_read, 3)
            os.dup2(events_write, 4)

        arguments = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
            "--disable-default-apps", f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
            "--window-size=1400,2000", "about:blank",
        ]
        # close_fds=False because the fds 3 and 4 made by connect_pipes must reach Chrome.
        self.process = subprocess.Popen(arguments, preexec_fn=connect_pipes, close_fds=False,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(events_write)
        self._next_id = 0
        self._pending = b""
        self.events = []

    def _read_message(self, deadline):
        while b"\0" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no DevTools message from the browser before the deadline")
            ready, _, _ = select.select([self._events], [], [], remaining)
            if ready:
                chunk = os.read(self._events, 1 << 16)
                if not chunk:
                    raise ConnectionError("the browser closed the DevTools pipe")
                self._pending += chunk
        message, self._pending = self._pending.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, params=None, session_id=None, timeout=BROWSER_TIMEOUT_S):
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        os.write(self._commands, json.dumps(message).encode() + b"\0")

        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method, timeout=BROWSER_TIMEOUT_S):
        """Return the first event called ``method``, waiting for it when it has not arrived yet."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._read_message(deadline))

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError, ConnectionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._events)


PAGE_FACTS_SCRIPT = """JSON.stringify({
  sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
  headings: Array.from(document.querySelectorAll('section > h2')).map(h => h.textContent),
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth})),
  scripts: document.scripts.length,
  summaryRows: document.querySelectorAll('#summary-table tbody tr').length,
})"""


def load_in_browser(browser, page_path, user_data_dir, screenshot_path):
    """Open ``page_path`` in headless Chromium; return (page facts, network URLs, console errors)."""
    client = DevToolsPipe(browser, user_data_dir)
    try:
        target = client.call("Target.createTarget", {"url": "about:blank"})
        session = client.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            client.call(f"{domain}.enable", session_id=session)

        url = "file://" + os.path.abspath(page_path)
        client.call("Page.navigate", {"url": url}, session_id=session)
        client.wait_for("Page.loadEventFired")
        result = client.call("Runtime.evaluate", {"expression": PAGE_FACTS_SCRIPT, "returnByValue": True},
                             session_id=session)
        facts = json.loads(result["result"]["value"])
        shot = client.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                           session_id=session)
        with open(screenshot_path, "wb") as stream:
            stream.write(base64.b64decode(shot["data"]))

        page_events = [event for event in client.events if event.get("sessionId") == session]
        requests = [event["params"]["request"]["url"] for event in page_events
                    if event.get("method") == "Network.requestWillBeSent"]
        errors = [event for event in page_events if event.get("method") == "Runtime.exceptionThrown"
                  or (event.get("method") == "Runtime.consoleAPICalled" and event["params"]["type"] in ("error", "assert"))
                  or (event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")]
        return facts, requests, url, errors
    finally:
        client.close()


@pytest.mark.skipif(find_browser() is None,
                    reason="no chromium, google-chrome or chromium-browser on PATH; install one or set "
                           "PRECISION_SUITE_CHROMIUM to run the browser test")
def test_report_renders_in_browser(tmp_path):
    rows = default_rows(fused_ulp=9.0)
    rows[0]["message"] = HOSTILE
    baseline = write_run(tmp_path / "baseline", default_rows())
    current = write_run(tmp_path / "current", rows, tables={"e2e": e2e_rows(), "norm_sites": norm_site_rows()})
    page_path = write_report(current, baseline)
    screenshot = os.environ.get("PRECISION_SUITE_SCREENSHOT") or str(tmp_path / "report.png")

    facts, requests, url, errors = load_in_browser(find_browser(), page_path, tmp_path / "profile", screenshot)

    assert errors == []
    assert [request for request in requests if request != url and not request.startswith("data:")] == []
    assert facts["sections"] == list(SECTION_IDS)
    assert all(heading for heading in facts["headings"])
    assert facts["scripts"] == 0
    assert facts["summaryRows"] == 9
    assert len(facts["images"]) == 6
    assert all(image["complete"] and image["width"] > 0 for image in facts["images"])
    with open(screenshot, "rb") as stream:
        assert stream.read(8) == PNG_SIGNATURE


def test_worst_case_per_backend_and_dtype():
    from precision_suite.report.page import worst_per_backend_dtype

    cases = pd.DataFrame([
        {"backend": "a", "dtype": "float16", "case_id": "x1", "status": "passed", "max_ulp_error": 0.5, "ulp_budget": 1.0},
        {"backend": "a", "dtype": "float16", "case_id": "x2", "status": "passed", "max_ulp_error": 0.9, "ulp_budget": 1.0},
        {"backend": "a", "dtype": "float32", "case_id": "x3", "status": "failed", "max_ulp_error": 90.0, "ulp_budget": 40.0},
        {"backend": "a", "dtype": "float32", "case_id": "x4", "status": "passed", "max_ulp_error": 100.0, "ulp_budget": 200.0},
        {"backend": "b", "dtype": "float16", "case_id": "x5", "status": "unavailable", "max_ulp_error": None,
         "ulp_budget": None},
    ])
    worst = worst_per_backend_dtype(cases)
    assert list(worst["case_id"]) == ["x2", "x3"]
    assert list(worst["dtype"]) == ["float16", "float32"]


def test_missing_pairs_of_interrupted_run(tmp_path):
    from precision_suite.backends import get_backend
    from precision_suite.report.data import load_run
    from precision_suite.report.page import missing_pairs, render_report
    from precision_suite.results import RunDirectory
    from precision_suite.runner import run_backend
    from precision_suite.spec import CaseSpec

    run_dir = RunDirectory(tmp_path / "killed")
    run_dir.start(backends=["paddle_composite", "paddle_fused"], dtypes=["float16", "float32"])
    spec = CaseSpec(op="rms_norm", shape=(2, 8), dtype="float16", eps=1e-5, x_dist="normal", w_dist="ones",
                    residual=False, seed=1)
    run_dir.append("cases", run_backend(spec, get_backend("paddle_composite")).row(run_dir.run_id))
    run = load_run(run_dir.path)

    missing = missing_pairs(run)
    assert list(missing.itertuples(index=False, name=None)) == [
        ("paddle_composite", "float32"), ("paddle_fused", "float16"), ("paddle_fused", "float32")]
    page = render_report(run)
    assert "Asked for but not started" in page
    assert "Every backend ran every dtype" not in page


def test_worst_cases_one_passing_case_per_pair():
    rows = default_rows(fused_ulp=0.5, composite_ulp=1.9)
    frame = pd.DataFrame(rows)
    ordered = worst_cases(frame, count=100)
    pairs = list(zip(ordered["backend"], ordered["dtype"]))
    assert len(pairs) == len(set(pairs)) == 6
