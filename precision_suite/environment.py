"""The environment a run executed in, recorded in ``run.json`` and shown in the report."""

import os
import platform
import subprocess
import sys

from precision_suite.backends.paddle_io import import_paddle
from precision_suite.errors import BackendUnavailable


def _package_version(name):
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8 is not supported anyway
        return ""
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


def _suite_commit():
    """Return the git commit of this checkout, or an empty string outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        completed = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return completed.stdout.strip() if completed.returncode == 0 else ""


def _paddle_facts():
    try:
        paddle = import_paddle()
    except BackendUnavailable as error:
        return {"paddle_version": "", "paddle_commit": "", "paddle_error": str(error)}

    facts = {
        "paddle_version": paddle.__version__,
        "paddle_commit": getattr(paddle.version, "commit", ""),
        "cuda_compiled": bool(paddle.is_compiled_with_cuda()),
        "cuda_version": "",
        "gpu_name": "",
    }
    if facts["cuda_compiled"]:
        facts["cuda_version"] = str(paddle.version.cuda())
        try:
            if paddle.device.cuda.device_count() > 0:
                facts["gpu_name"] = paddle.device.cuda.get_device_name(0)
        except Exception as error:  # noqa: BLE001 - a driver failure is recorded, not fatal
            facts["gpu_name"] = f"unknown ({error})"
    return facts


def collect_environment():
    """Return a flat dict of versions and machine facts for ``run.json``.

    Keys: python, platform, machine, numpy, pandas, hypothesis, ml_dtypes, paddle_version,
    paddle_commit, cuda_compiled, cuda_version, gpu_name, suite_commit.
    """
    import hypothesis
    import numpy
    import pandas

    facts = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "executable": sys.executable,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "hypothesis": hypothesis.__version__,
        "ml_dtypes": _package_version("ml-dtypes") or _package_version("ml_dtypes"),
        "suite_commit": _suite_commit(),
    }
    facts.update(_paddle_facts())
    return facts
