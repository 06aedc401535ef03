"""The regression corpus: loading, bad files, and saving a case from a table row."""

import json
import os

import pytest

from precision_suite.cli import main
from precision_suite.corpus import load_corpus, save_case
from precision_suite.errors import SpecError
from precision_suite.results import RunDirectory
from precision_suite.runner import run_backend
from precision_suite.spec import CaseSpec
from tests.helpers import NumpyBackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = CaseSpec(op="rms_norm", shape=(3, 17), dtype="bfloat16", eps=1e-5, x_dist="constant_rows", w_dist="ones",
                residual=False, seed=9)


def test_shipped_corpus_loads_and_covers_fault_kinds():
    cases, errors = load_corpus(os.path.join(ROOT, "cases", "regressions"))
    assert errors == []
    assert all(case.note for case in cases)
    x_dists = {case.spec.x_dist for case in cases}
    assert {"constant_rows", "zero_rows", "fp16_overflow", "tiny"} <= x_dists
    assert {769, 3584, 12289} <= {case.spec.hidden_size for case in cases}


def test_bad_files_named_others_still_load(tmp_path):
    save_case(SPEC, "good case", str(tmp_path))
    (tmp_path / "broken.json").write_text('{"note": "x", "spec": {')
    (tmp_path / "missing.json").write_text(json.dumps({"note": "x", "spec": {"op": "rms_norm"}}))
    (tmp_path / "foreign.json").write_text(json.dumps({"note": "x", "spec": {**SPEC.to_dict(), "op": "softmax"}}))
    (tmp_path / "no_spec.json").write_text(json.dumps({"name": "something else"}))
    (tmp_path / "notes.txt").write_text("ignored: not JSON by name")

    cases, errors = load_corpus(str(tmp_path))

    assert [case.spec for case in cases] == [SPEC]
    messages = {os.path.basename(error.path): error.message for error in errors}
    assert messages["broken.json"].startswith("invalid JSON")
    assert messages["missing.json"].startswith("shape: missing field")
    assert messages["foreign.json"].startswith("op: invalid value 'softmax'; expected one of rms_norm")
    assert messages["no_spec.json"].startswith("spec: missing field")
    assert str(errors[0]).startswith(str(tmp_path))


def test_save_requires_note(tmp_path):
    with pytest.raises(SpecError, match="^note: missing"):
        save_case(SPEC, "  ", str(tmp_path))


def test_saved_case_round_trips_from_table_row(tmp_path, capsys):
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.start()
    result = run_backend(SPEC, NumpyBackend("exact"))
    run_dir.append("cases", result.row(run_dir.run_id))
    corpus = tmp_path / "corpus"

    status = main(["save", SPEC.case_id, "--run", str(run_dir.path), "--corpus", str(corpus), "--note", "constant"])

    assert status == 0
    cases, errors = load_corpus(str(corpus))
    assert errors == []
    assert cases[0].spec == SPEC
    assert cases[0].note == "constant"
    rerun = run_backend(cases[0].spec, NumpyBackend("exact"))
    assert rerun.row(run_dir.run_id) | {"duration_s": 0} == result.row(run_dir.run_id) | {"duration_s": 0}
    assert f"saved case {SPEC.case_id}" in capsys.readouterr().out


def test_save_without_note_keeps_existing_note(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    save_case(SPEC, "guards constant rows", str(corpus))

    assert main(["save", SPEC.to_json(), "--corpus", str(corpus)]) == 0
    assert load_corpus(str(corpus))[0][0].note == "guards constant rows"
    assert "kept its note: guards constant rows" in capsys.readouterr().out

    assert main(["save", SPEC.to_json(), "--corpus", str(corpus), "--note", "new note"]) == 0
    assert load_corpus(str(corpus))[0][0].note == "new note"
    assert "replaced the note" in capsys.readouterr().out
