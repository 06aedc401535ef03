"""A deliberately wrong backend makes the precision cases fail with the mismatch message."""

import os
import shutil
import subprocess
import sys

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRONG_BACKEND_CONFTEST = '''
import numpy as np

from precision_suite.backends import register
from precision_suite.backends.base import Backend, BackendOutput
from precision_suite.dtypes import round_to_dtype, to_float64


class IgnoresEps(Backend):
    """Correct RMSNorm except that eps is always 1e-6."""

    name = "ignores_eps"
    devices = ("cpu",)

    def compute(self, x, weight, eps, residual, device):
        summed = None if residual is None else round_to_dtype(to_float64(x) + to_float64(residual), x.dtype.name)
        source = to_float64(x if summed is None else summed)
        out = source / np.sqrt((source * source).mean(axis=-1, keepdims=True) + 1e-6) * to_float64(weight)
        return BackendOutput(round_to_dtype(out, x.dtype.name), summed)


register(IgnoresEps())
'''


def run_cases(tmp_path, backend):
    project = tmp_path / "project"
    (project / "cases").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "conftest.py"), project / "conftest.py")
    shutil.copy(os.path.join(ROOT, "cases", "test_rms_norm.py"), project / "cases" / "test_rms_norm.py")
    (project / "cases" / "conftest.py").write_text(WRONG_BACKEND_CONFTEST)
    out = tmp_path / "out"

    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "precision", "cases",
         "--precision-backend", backend, "--precision-dtype", "float16", "--precision-out", str(out)],
        cwd=project, capture_output=True, text=True, timeout=300,
    )
    return completed, out


def test_wrong_backend_fails_with_message(tmp_path):
    completed, out = run_cases(tmp_path, "ignores_eps")
    output = completed.stdout

    assert completed.returncode == 1, output[-3000:]
    assert "FAILED cases/test_rms_norm.py::test_rms_norm[ignores_eps-float16]" in output
    assert "ignores_eps on cpu failed case " in output
    assert "elements exceed the budget of 1 ulp" in output
    assert "worst element out[" in output
    assert "reproduce: precision-suite repro '{" in output
    assert "--backend ignores_eps" in output

    cases = pd.read_csv(out / "cases.csv")
    assert (cases["status"] == "failed").any()
    assert set(cases["backend"]) == {"ignores_eps"}
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "failed"] >= 1


def test_correct_backend_passes_same_cases(tmp_path):
    completed, out = run_cases(tmp_path, "paddle_composite")

    assert completed.returncode == 0, completed.stdout[-3000:]
    cases = pd.read_csv(out / "cases.csv")
    assert len(cases) >= 50
    assert set(cases["status"]) == {"passed"}
    assert "precision summary" in completed.stdout
