"""Run every selected backend and dtype of a profile outside pytest, with progress and resume.

``precision-suite run`` calls `run_pairs`. Each (backend, dtype) pair is one Hypothesis
loop from `drive_cases`. With several workers the pairs run in separate processes, which
append to the same run directory.
"""

import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import sys
import time

from hypothesis import settings

from precision_suite.backends import get_backend
from precision_suite.backends.paddle_io import GPU_COUNT_VARIABLE, GPU_INDEX_VARIABLE
from precision_suite.corpus import load_corpus
from precision_suite.engine import drive_cases
from precision_suite.results import RunDirectory
from precision_suite.runner import CaseResult
from precision_suite.strategies import register_profiles

LOG_FILE = "run.log"
logger = logging.getLogger("precision_suite")


@dataclasses.dataclass(frozen=True)
class PairTask:
    """Everything a worker process needs to run one backend and dtype."""

    backend: str
    dtype: str
    profile: str
    device: str
    run_seed: int
    out: str
    run_id: str
    corpus_dir: str
    resume: bool = False


@dataclasses.dataclass(frozen=True)
class PairSummary:
    """Counts of one finished pair, sent back from a worker."""

    backend: str
    dtype: str
    cases: int
    passed: int
    failed: int
    errors: int
    unavailable: int
    failure_message: str
    unavailable_reason: str
    duration_s: float


def count_noun(count, noun):
    """Return ``"1 case"`` or ``"3 cases"``: the count and the noun in singular or plural."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class Progress:
    """Prints cases done, failures so far and elapsed time at most every ``interval`` seconds."""

    def __init__(self, stream=sys.stderr, interval=2.0):
        self.stream = stream
        self.interval = interval
        self.started = time.monotonic()
        self.last = 0.0
        self.cases = self.failed = 0

    def update(self, cases=0, failed=0, label="", force=False):
        """Add counts and print a line when the interval has passed or ``force`` is set."""
        self.cases += cases
        self.failed += failed
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            line = f"[{now - self.started:7.1f}s] {count_noun(self.cases, 'case')} done, {self.failed} failed"
            if label:
                line += f" ({label})"
            print(line, file=self.stream, flush=True)
            logger.info(line)


def setup_logging(run_dir):
    """Log to ``<run_dir>/run.log``, once per process; worker processes append to the same file."""
    path = os.path.abspath(run_dir.file(LOG_FILE))
    for existing in logger.handlers:
        if isinstance(existing, logging.FileHandler) and existing.baseFilename == path:
            return existing
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # Paddle installs a root handler on import; the progress lines already go to stderr.
    logger.propagate = False
    return handler


def run_pair(task, progress=None):
    """Run one backend and dtype and return its `PairSummary`; used in-process and by workers."""
    register_profiles()
    settings.load_profile(task.profile)

    run_dir = RunDirectory(task.out)
    setup_logging(run_dir)
    backend = get_backend(task.backend)
    corpus_cases, _ = load_corpus(task.corpus_dir)
    finished = {}
    if task.resume:
        finished = {
            row["case_id"]: CaseResult.from_row(row)
            for row in run_dir.read_rows("cases")[0]
            if row.get("backend") == task.backend and row.get("device") == task.device and row.get("dtype") == task.dtype
        }

    def record(result):
        run_dir.append("cases", result.row(task.run_id))
        if result.status in ("failed", "error"):
            logger.warning("%s %s case %s %s: %s", task.backend, task.dtype, result.spec.case_id, result.status,
                           result.message.splitlines()[0] if result.message else "")
        if progress is not None:
            progress.update(1, int(result.status in ("failed", "error")), f"{task.backend} {task.dtype}")

    started = time.monotonic()
    logger.info("start %s %s (%d finished cases kept)", task.backend, task.dtype, len(finished))
    outcome = drive_cases(backend, task.dtype, profile=task.profile, device=task.device, run_seed=task.run_seed,
                          on_result=record, explicit_specs=[case.spec for case in corpus_cases],
                          finished=finished, raise_failure=False)
    logger.info("end %s %s: %d cases, %d failed, %d errors, %d unavailable", task.backend, task.dtype,
                outcome.cases, outcome.failed, outcome.errors, outcome.unavailable)
    return PairSummary(task.backend, task.dtype, outcome.cases, outcome.passed, outcome.failed, outcome.errors,
                       outcome.unavailable, outcome.failure_message, outcome.unavailable_reason,
                       time.monotonic() - started)


def _claim_gpu(gpu_indexes):
    """Worker initializer: take one GPU index from the queue for the life of the process."""
    os.environ[GPU_INDEX_VARIABLE] = str(gpu_indexes.get())


def run_pairs(tasks, workers=1, progress=None):
    """Run tasks serially or in ``workers`` processes and return their summaries in task order.

    With ``PRECISION_SUITE_GPU_COUNT=N`` set, worker process k uses GPU ``k % N`` for all the
    pairs it runs, so no two workers share a GPU while workers <= N.
    """
    if workers <= 1:
        return [run_pair(task, progress) for task in tasks]

    # Spawned workers start clean instead of inheriting the parent's Paddle state by fork.
    context = multiprocessing.get_context("spawn")
    initializer, initargs = None, ()
    gpu_count = int(os.environ.get(GPU_COUNT_VARIABLE, "0"))
    if gpu_count > 0:
        gpu_indexes = context.Queue()
        for worker in range(workers):
            gpu_indexes.put(worker % gpu_count)
        initializer, initargs = _claim_gpu, (gpu_indexes,)

    summaries = [None] * len(tasks)
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                initializer=initializer, initargs=initargs) as pool:
        futures = {pool.submit(run_pair, task): index for index, task in enumerate(tasks)}
        for future in concurrent.futures.as_completed(futures):
            summary = future.result()
            summaries[futures[future]] = summary
            if progress is not None:
                progress.update(summary.cases, summary.failed + summary.errors,
                                f"{summary.backend} {summary.dtype} finished", force=True)
    return summaries
