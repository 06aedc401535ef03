"""The pytest plugin: options, parametrization, the run directory and the closing summary.

Options live under the ``--precision-`` prefix. Under pytest-xdist the controller picks the
run id and directory and hands them to every worker, the workers append rows to the same
JSON lines files, and only the controller writes the tables and prints the summary.
"""

import os

import pytest

from precision_suite.backends import default_backend_names, get_backend
from precision_suite.backends.paddle_io import GPU_COUNT_VARIABLE, GPU_INDEX_VARIABLE, check_device
from precision_suite.corpus import DEFAULT_CORPUS_DIR, load_corpus
from precision_suite.dtypes import DTYPES, check_dtype
from precision_suite.environment import collect_environment
from precision_suite.errors import SpecError
from precision_suite.results import RunDirectory, new_run_id
from precision_suite.strategies import active_profile
from precision_suite.summary import format_summary

_STATE_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser):
    group = parser.getgroup("precision_suite", "precision_suite precision cases")
    group.addoption("--precision-out", default=None, metavar="DIR",
                    help="run directory for the tables, which must not contain a run yet "
                         "(default: reports/<run_id> under the rootdir)")
    group.addoption("--precision-device", default="cpu", metavar="DEVICE",
                    help="device for the backends: cpu, gpu or gpu:N (default: cpu)")
    group.addoption("--precision-backend", action="append", default=None, metavar="NAME",
                    help="backend to test; repeat for several (default: every default backend)")
    group.addoption("--precision-dtype", action="append", default=None, metavar="DTYPE",
                    help=f"dtype to test; repeat for several (default: {', '.join(DTYPES)})")
    group.addoption("--precision-seed", type=int, default=0, metavar="N",
                    help="seed of Hypothesis' generation; every profile draws other cases for another seed (default: 0)")
    group.addoption("--precision-corpus", default=None, metavar="DIR",
                    help="regression corpus folder (default: cases/regressions under the rootdir)")


def _is_worker(config):
    return hasattr(config, "workerinput")


def _selected(config):
    """Return the selected backend names and dtypes, validated."""
    try:
        backends = config.getoption("precision_backend") or default_backend_names()
        for name in backends:
            get_backend(name)
        dtypes = [check_dtype(name) for name in (config.getoption("precision_dtype") or DTYPES)]
    except SpecError as error:
        raise pytest.UsageError(str(error)) from None
    return backends, dtypes


def _check_options(config):
    """Raise `pytest.UsageError` for an unusable device or a negative seed, before any test runs."""
    if config.getoption("precision_seed") < 0:
        raise pytest.UsageError(f"--precision-seed: invalid value {config.getoption('precision_seed')}; "
                                "expected a whole number >= 0")
    try:
        check_device(config.getoption("precision_device"), option="--precision-device")
    except SpecError as error:
        raise pytest.UsageError(str(error)) from None


def _check_new_run_dir(out):
    """Raise `pytest.UsageError` when ``out`` already contains a run, whose rows would mix with this one's."""
    try:
        RunDirectory.check_new(out, "--precision-out", "pass a new or empty folder, or delete this one")
    except SpecError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_configure(config):
    config.addinivalue_line("markers", "precision: generated precision cases that write rows to the run's tables")
    _selected(config)
    _check_options(config)

    if _is_worker(config):
        run_id = config.workerinput["precision_run_id"]
        out = config.workerinput["precision_out"]
        worker = config.workerinput.get("workerid", "gw0")
        # Worker gwK uses GPU K modulo PRECISION_SUITE_GPU_COUNT, unless a GPU is pinned already.
        gpu_count = int(os.environ.get(GPU_COUNT_VARIABLE, "1"))
        os.environ.setdefault(GPU_INDEX_VARIABLE, str(int(worker.removeprefix("gw")) % max(1, gpu_count)))
    else:
        run_id = new_run_id()
        out = config.getoption("precision_out") or os.path.join(str(config.rootpath), "reports", run_id)
        _check_new_run_dir(out)

    corpus = config.getoption("precision_corpus") or os.path.join(str(config.rootpath), DEFAULT_CORPUS_DIR)
    config.stash[_STATE_KEY] = {"run_id": run_id, "out": os.path.abspath(out), "corpus": corpus}


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Hand the controller's run id and directory to a pytest-xdist worker."""
    state = node.config.stash[_STATE_KEY]
    node.workerinput["precision_run_id"] = state["run_id"]
    node.workerinput["precision_out"] = state["out"]


def pytest_report_header(config):
    state = config.stash[_STATE_KEY]
    return [f"precision_suite: profile {active_profile()}, device {config.getoption('precision_device')}, "
            f"run directory {state['out']}"]


def pytest_generate_tests(metafunc):
    if "precision_backend" in metafunc.fixturenames and "precision_dtype" in metafunc.fixturenames:
        backends, dtypes = _selected(metafunc.config)
        pairs = [(backend, dtype) for backend in backends for dtype in dtypes]
        metafunc.parametrize(("precision_backend", "precision_dtype"), pairs,
                             ids=[f"{backend}-{dtype}" for backend, dtype in pairs])


@pytest.fixture(scope="session")
def precision_run_dir(pytestconfig):
    """The session's `RunDirectory`; started (run.json written) on first use."""
    state = pytestconfig.stash[_STATE_KEY]
    run_dir = RunDirectory(state["out"])
    run_dir.start(
        run_id=state["run_id"],
        profile=active_profile(),
        seed=pytestconfig.getoption("precision_seed"),
        device=pytestconfig.getoption("precision_device"),
        command="pytest",
        environment=collect_environment(),
    )
    return run_dir


@pytest.fixture(scope="session")
def precision_dtypes(pytestconfig):
    """Dtypes selected with ``--precision-dtype`` (all of them by default)."""
    return _selected(pytestconfig)[1]


@pytest.fixture(scope="session")
def precision_device(pytestconfig):
    """Device the backends run on: ``cpu``, ``gpu`` or ``gpu:N``."""
    return pytestconfig.getoption("precision_device")


@pytest.fixture(scope="session")
def precision_profile():
    """Name of the Hypothesis profile in use (``dev``, ``ci`` or ``nightly``)."""
    return active_profile()


@pytest.fixture(scope="session")
def precision_seed(pytestconfig):
    """Seed of Hypothesis' generation."""
    return pytestconfig.getoption("precision_seed")


@pytest.fixture(scope="session")
def precision_corpus(pytestconfig):
    """The regression corpus as ``(cases, errors)``."""
    return load_corpus(pytestconfig.stash[_STATE_KEY]["corpus"])


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    if _is_worker(config):
        return
    state = config.stash[_STATE_KEY]
    run_dir = RunDirectory.existing(state["out"])
    if run_dir is None or not run_dir.tables():
        return

    frames = run_dir.finalize()
    terminalreporter.section("precision summary")
    if "summary" in frames:
        terminalreporter.write_line(format_summary(frames["summary"]))
    terminalreporter.write_line(f"tables written to {run_dir.path}")
