"""The command line: bad input, a full run, and a run killed with SIGKILL then resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from precision_suite.cli import main
from precision_suite.results import RunDirectory, write_text_atomic

SPEC_JSON = json.dumps({"op": "rms_norm", "shape": [2, 33], "dtype": "float32", "eps": 1e-6, "x_dist": "normal",
                        "w_dist": "near_one", "residual": True, "seed": 1, "x_scale": 1.0})


def cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "precision_suite.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def assert_usage_error(completed, message_start):
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.startswith("precision-suite: error: ")]
    assert len(lines) == 1, completed.stderr
    assert lines[0].removeprefix("precision-suite: error: ").startswith(message_start), lines[0]


def test_invalid_spec_json_exits_2():
    spec = json.loads(SPEC_JSON) | {"eps": -1}
    assert_usage_error(cli("repro", json.dumps(spec)), "eps: invalid value -1; expected a finite number > 0")


def test_unknown_dtype_lists_names():
    assert_usage_error(cli("run", "--dtype", "fp8", "--out", "unused"),
                       "dtype: invalid value 'fp8'; expected one of float16, bfloat16, float32, float64")


def test_unknown_backend_lists_names():
    completed = cli("repro", SPEC_JSON, "--backend", "cudnn")
    assert_usage_error(completed, "backend: unknown name 'cudnn'; valid names are ")
    assert "paddle_composite" in completed.stderr


def test_unknown_profile():
    assert_usage_error(cli("run", "--profile", "weekly", "--out", "unused"),
                       "profile: unknown name 'weekly'; valid names are dev, ci, nightly")


@pytest.mark.skipif(os.environ.get("CUDA_VISIBLE_DEVICES") not in (None, ""), reason="checks machines without a GPU")
def test_gpu_device_without_gpu():
    pytest.importorskip("paddle")
    import paddle

    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle has CUDA")
    assert_usage_error(cli("run", "--device", "gpu", "--out", "unused"),
                       "--device gpu: no usable GPU on this machine: device 'gpu' needs a CUDA build of Paddle")


def test_unknown_case_id():
    assert_usage_error(cli("repro", "0123456789ab", "--corpus", "nowhere", "--run", "nowhere"),
                       "case: id '0123456789ab' not found in nowhere, nowhere")


def test_repro_is_bit_identical_each_time():
    first = cli("repro", SPEC_JSON, "--backend", "paddle_composite", "--backend", "paddle_fused")
    second = cli("repro", SPEC_JSON, "--backend", "paddle_composite", "--backend", "paddle_fused")

    assert first.returncode == 0, first.stderr
    digests = [line for line in first.stdout.splitlines() if "output sha256" in line]
    assert len(digests) == 2
    assert digests == [line for line in second.stdout.splitlines() if "output sha256" in line]
    assert "paddle_composite vs paddle_fused: " in first.stdout


def test_corrupt_corpus_file_still_runs_others(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "bad.json").write_text('{"note": "n", "spec": {"op": "rms_norm"')
    out = tmp_path / "run"

    completed = cli("run", "--backend", "paddle_composite", "--dtype", "float16", "--out", str(out),
                    "--corpus", str(corpus))

    assert completed.returncode == 1
    assert f"precision-suite: error: {corpus / 'bad.json'}: invalid JSON" in completed.stderr
    cases = pd.read_csv(out / "cases.csv")
    assert len(cases) >= 50
    assert set(cases["status"]) == {"passed"}


def test_run_writes_tables_and_metadata(tmp_path):
    out = tmp_path / "run"
    status = main(["run", "--backend", "paddle_fused", "--backend", "paddle_phi", "--dtype", "float32",
                   "--out", str(out), "--corpus", str(tmp_path / "none")])

    assert status == 0
    cases = pd.read_csv(out / "cases.csv")
    phi = cases[cases["backend"] == "paddle_phi"]
    assert len(phi) > 0
    assert set(phi["status"]) <= {"unavailable", "passed"}
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["backend"]) == {"paddle_fused", "paddle_phi"}
    metadata = json.loads((out / "run.json").read_text())
    assert metadata["complete"] is True
    assert metadata["profile"] == "ci"
    assert metadata["environment"]["paddle_version"]
    assert (out / "run.log").read_text().count("start paddle_") == 2


def _count_rows(path):
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


def test_killed_run_resumes_without_duplicates(tmp_path):
    out = tmp_path / "run"
    arguments = ["run", "--backend", "paddle_composite", "--backend", "paddle_composite_cast",
                 "--dtype", "float16", "--dtype", "float32", "--out", str(out), "--corpus", str(tmp_path / "none")]
    process = subprocess.Popen([sys.executable, "-m", "precision_suite.cli", *arguments],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _count_rows(out / "cases.jsonl") < 150 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()

    run_dir = RunDirectory(out)
    before, _ = run_dir.read_rows("cases")
    assert 150 <= len(before) < 400, "the run finished before it was killed; kill it earlier"
    assert json.loads((out / "run.json").read_text())["complete"] is False

    completed = cli("run", "--resume", str(out), "--corpus", str(tmp_path / "none"))
    assert completed.returncode == 0, completed.stderr

    after, broken = run_dir.read_rows("cases")
    keys = [(row["case_id"], row["backend"], row["device"]) for row in after]
    assert broken <= 1
    assert len(keys) == len(set(keys)), "a finished case was run again"
    by_key = {(row["case_id"], row["backend"], row["device"]): row for row in after}
    for row in before:
        assert by_key[(row["case_id"], row["backend"], row["device"])] == row
    assert len(pd.read_csv(out / "cases.csv")) == len(set(keys))

    fresh = tmp_path / "fresh"
    assert main([*arguments[:-4], "--out", str(fresh), "--corpus", str(tmp_path / "none")]) == 0
    assert set(pd.read_csv(fresh / "cases.csv")["case_id"]) == {key[0] for key in keys}
    assert json.loads((out / "run.json").read_text())["complete"] is True


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "cases.csv"
    path.write_text("old\n")

    def fail(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(str(path), "new\n" * 1000)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["cases.csv"]


def test_partial_last_line_is_ended_before_appending(tmp_path):
    run_dir = RunDirectory(tmp_path)
    run_dir.append("cases", {"case_id": "a", "backend": "b", "device": "cpu"})
    with open(run_dir.file("cases.jsonl"), "a") as stream:
        stream.write('{"case_id": "cut')

    assert run_dir.end_partial_line("cases")
    run_dir.append("cases", {"case_id": "c", "backend": "b", "device": "cpu"})
    rows, broken = run_dir.read_rows("cases")
    assert [row["case_id"] for row in rows] == ["a", "c"]
    assert broken == 1


def test_atomic_write_makes_file_readable(tmp_path):
    path = tmp_path / "summary.csv"
    write_text_atomic(str(path), "a,b\n")
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_workers_give_same_rows_as_serial(tmp_path):
    arguments = ["run", "--backend", "paddle_composite", "--dtype", "float16", "--dtype", "bfloat16",
                 "--corpus", str(tmp_path / "none")]
    assert main([*arguments, "--out", str(tmp_path / "serial")]) == 0
    assert main([*arguments, "--out", str(tmp_path / "parallel"), "--workers", "2"]) == 0

    serial = pd.read_csv(tmp_path / "serial" / "cases.csv")
    parallel = pd.read_csv(tmp_path / "parallel" / "cases.csv")
    assert set(serial["case_id"]) == set(parallel["case_id"])
    assert len(parallel) == len(parallel.drop_duplicates(["case_id", "backend", "device"]))
    columns = ["case_id", "backend", "status", "max_ulp_error"]
    merged = serial[columns].merge(parallel[columns], on=["case_id", "backend"], suffixes=("_serial", "_parallel"))
    assert (merged["max_ulp_error_serial"] == merged["max_ulp_error_parallel"]).all()


def test_worker_gpu_assignment(monkeypatch):
    from multiprocessing import get_context

    from precision_suite.batch import _claim_gpu

    queue = get_context("spawn").Queue()
    queue.put(1)
    monkeypatch.setenv("PRECISION_SUITE_GPU", "0")
    _claim_gpu(queue)
    assert os.environ["PRECISION_SUITE_GPU"] == "1"


def test_out_with_existing_run_rejected(tmp_path):
    out = tmp_path / "run"
    arguments = ["run", "--backend", "paddle_composite", "--dtype", "float16", "--corpus", str(tmp_path / "none")]
    assert main([*arguments, "--out", str(out)]) == 0
    run_id = json.loads((out / "run.json").read_text())["run_id"]

    completed = cli(*arguments, "--out", str(out))
    assert_usage_error(completed, f"--out: {out} already contains run {run_id}; finish it with --resume {out}")
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id


def test_run_folder_named_by_run_id(tmp_path):
    completed = cli("run", "--backend", "paddle_composite", "--dtype", "float16", "--corpus", "none", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    (folder,) = os.listdir(tmp_path / "reports")
    assert json.loads((tmp_path / "reports" / folder / "run.json").read_text())["run_id"] == folder
    assert f"run {folder}:" in completed.stderr


@pytest.mark.parametrize("bad", [["--dtype", "fp8"], ["--backend", "nosuch"], ["--seed", "-1"], ["--workers", "0"]])
def test_bad_run_option_writes_nothing(tmp_path, bad):
    out = tmp_path / "never"
    completed = cli("run", *bad, "--out", str(out))
    assert completed.returncode == 2
    assert not out.exists()


def test_negative_seed_rejected():
    assert_usage_error(cli("run", "--seed", "-1", "--out", "unused"), "--seed: invalid value -1; expected a whole number >= 0")


def test_repro_missing_file():
    assert_usage_error(cli("repro", "/nonexistent/case.json"), "case: file '/nonexistent/case.json' not found")


def test_corpus_error_named_again_at_end(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "bad.json").write_text("{")
    completed = cli("run", "--backend", "paddle_composite", "--dtype", "float32", "--out", str(tmp_path / "run"),
                    "--corpus", str(corpus))
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1] == (
        f"precision-suite: error: 1 corpus file(s) in {corpus} failed to load (listed at the start); "
        "fix or remove them")


def test_pytest_gpu_device_without_gpu_is_usage_error(tmp_path):
    paddle = pytest.importorskip("paddle")
    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle has CUDA")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    completed = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--precision-device", "gpu",
                                "--precision-out", str(tmp_path), os.path.join(root, "cases", "test_rms_norm.py")],
                               capture_output=True, text=True, cwd=root, timeout=300)
    assert completed.returncode == 4
    assert "--precision-device gpu: no usable GPU on this machine" in completed.stderr


def test_run_log_has_worker_lines(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--backend", "paddle_composite", "--dtype", "float16", "--dtype", "float32", "--workers", "2",
                 "--out", str(out), "--corpus", str(tmp_path / "none")]) == 0
    log = (out / "run.log").read_text()
    assert log.count("start paddle_composite") == 2
    assert log.count("end paddle_composite") == 2


def test_pytest_rejects_out_with_run(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "run"
    assert main(["run", "--backend", "paddle_composite", "--dtype", "float32", "--out", str(out),
                 "--corpus", str(tmp_path / "none")]) == 0
    rows_before = (out / "cases.jsonl").read_text()

    completed = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "precision",
                                "--precision-out", str(out), os.path.join(root, "cases", "test_rms_norm.py")],
                               capture_output=True, text=True, cwd=root, timeout=300)

    assert completed.returncode == 4
    assert f"--precision-out: {out} already contains run " in completed.stderr
    assert (out / "cases.jsonl").read_text() == rows_before


def test_run_notes_missing_corpus(tmp_path):
    missing = tmp_path / "no_corpus"
    completed = cli("run", "--backend", "paddle_composite", "--dtype", "float32", "--out", str(tmp_path / "run"),
                    "--corpus", str(missing))

    assert completed.returncode == 0, completed.stderr
    assert f"precision-suite: note: no regression corpus at {missing}, so none is replayed; " in completed.stderr
    assert ", 0 corpus cases, " in completed.stderr
    assert "device cpu, 1 backend x 1 dtype, " in completed.stderr
    # Paddle warns about a missing ccache on import; the suite filters it before importing Paddle.
    assert "No ccache found" not in completed.stderr


def test_resume_of_complete_run_changes_nothing(tmp_path):
    out = tmp_path / "run"
    arguments = ["--backend", "paddle_composite", "--dtype", "float32", "--corpus", str(tmp_path / "none")]
    assert main(["run", *arguments, "--out", str(out)]) == 0
    rows_before = (out / "cases.jsonl").read_text()
    run_id = json.loads((out / "run.json").read_text())["run_id"]

    metadata_before = (out / "run.json").read_text()

    completed = cli("run", "--resume", str(out), "--corpus", str(tmp_path / "none"))

    assert completed.returncode == 0, completed.stderr
    assert f"precision-suite: note: run {run_id} in {out} is already complete; nothing was run." in completed.stderr
    assert "paddle_composite" in completed.stdout
    assert (out / "cases.jsonl").read_text() == rows_before
    assert (out / "run.json").read_text() == metadata_before


def test_summary_notes_its_maxima():
    from precision_suite.summary import MAXIMA_NOTE, format_summary

    summary = pd.DataFrame([{"backend": "paddle_composite", "dtype": "float32", "cases": 2, "passed": 2, "failed": 0,
                             "unavailable": 0, "errors": 0, "max_ulp_error": 420.0, "p99_ulp_error": 3.5,
                             "ulp_budget": 3080.0, "margin": 612.0}])
    lines = format_summary(summary).splitlines()

    assert lines[-1] == MAXIMA_NOTE
    assert lines[1].split()[-4:] == ["420", "3.5", "3.08e+03", "612"]
    assert format_summary(summary.iloc[:0]) == "no cases ran"


def test_summary_margin_uses_each_case_budget():
    from precision_suite.results import summarize

    cases = pd.DataFrame([
        {"backend": "b", "dtype": "float32", "status": "passed", "max_ulp_error": 420.0, "p99_ulp_error": 2.0,
         "max_abs_error": 1e-5, "ulp_budget": 1032.0},
        {"backend": "b", "dtype": "float32", "status": "passed", "max_ulp_error": 3.0, "p99_ulp_error": 1.0,
         "max_abs_error": 1e-6, "ulp_budget": 3080.0},
        {"backend": "b", "dtype": "float32", "status": "unavailable", "max_ulp_error": float("nan"),
         "p99_ulp_error": float("nan"), "max_abs_error": float("nan"), "ulp_budget": 1.0},
    ])
    row = summarize(cases).iloc[0]

    assert row["ulp_budget"] == 3080.0
    assert row["max_ulp_error"] == 420.0
    assert row["margin"] == 1032.0 - 420.0


def test_run_elsewhere_replays_checkout_corpus(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    corpus_files = [name for name in os.listdir(os.path.join(root, "cases", "regressions")) if name.endswith(".json")]
    completed = cli("run", "--backend", "paddle_composite", "--dtype", "float32", "--out", str(tmp_path / "run"),
                    cwd=tmp_path)

    assert completed.returncode == 0, completed.stderr
    assert f", {len(corpus_files)} corpus cases, " in completed.stderr
    assert "no regression corpus" not in completed.stderr


def test_progress_line_singular_and_plural():
    import io

    from precision_suite.batch import Progress

    stream = io.StringIO()
    progress = Progress(stream=stream)
    progress.update(1, 0, force=True)
    progress.update(2, 1, label="done", force=True)
    first, second = [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()]

    assert first == "1 case done, 0 failed"
    assert second == "3 cases done, 1 failed (done)"


def test_pytest_rejects_out_with_broken_run_json(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{")

    completed = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "precision",
                                "--precision-out", str(out), os.path.join(root, "cases", "test_rms_norm.py")],
                               capture_output=True, text=True, cwd=root, timeout=300)

    assert completed.returncode == 4
    assert f"--precision-out: {out / 'run.json'}: invalid JSON" in completed.stderr
    assert (out / "run.json").read_text() == "{"


def test_run_rejects_out_with_rows_only(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "cases.jsonl").write_text('{"case_id": "abc"}\n')

    completed = cli("run", "--backend", "paddle_composite", "--dtype", "float32", "--out", str(out))

    assert_usage_error(completed, f"--out: {out} already contains run (no run.json); finish it with --resume {out}")
    assert not (out / "run.json").exists()
