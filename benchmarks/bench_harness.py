"""Measure the harness's own cost: reference, metrics, threads, memory and small cases.

Run from the repository root::

    python benchmarks/bench_harness.py            # the large cases of the README figures
    python benchmarks/bench_harness.py --quick    # smaller shapes, a few seconds

It prints one table with every figure and the machine it ran on. Times are the best of
``--repeat`` runs. On machines where OPENBLAS_CORETYPE is set for old OpenBLAS builds,
unset it for this command only, since it slows current NumPy.
"""

import argparse
import os
import platform
import time
import tracemalloc

import numpy as np

from precision_suite.backends import get_backend
from precision_suite.dtypes import round_to_dtype, to_float64
from precision_suite.inputs import make_inputs
from precision_suite.metrics import measure
from precision_suite.reference import compute_reference, lazy_reference
from precision_suite.runner import run_backend
from precision_suite.spec import CaseSpec

LARGE_CASES = (
    ("bfloat16", (8192, 8192), False),
    ("float32", (16384, 4096), True),
)
QUICK_CASES = (
    ("bfloat16", (1024, 8192), False),
    ("float32", (2048, 4096), True),
)
SMALL_SHAPE = (4, 128)


def best_time(function, repeat):
    """Return the smallest wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def thread_speedups(function, repeat):
    """Time ``function(threads)`` with 1 and 2 threads in alternation, ``repeat`` pairs.

    Returns the best time of each and the speed-up of every pair. Alternating keeps a
    slow spell of a shared host from landing on one thread count only.
    """
    single, double, ratios = [], [], []
    for _ in range(repeat):
        single.append(best_time(lambda: function(1), 1))
        double.append(best_time(lambda: function(2), 1))
        ratios.append(single[-1] / double[-1])
    return min(single), min(double), sorted(ratios)


def machine_rows():
    """Return (name, value) rows describing the CPU, NumPy and its BLAS."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii") as stream:
            model = next(line.split(":", 1)[1].strip() for line in stream if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rows = [
        ("cpu", model),
        ("cores", str(os.cpu_count())),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("OPENBLAS_CORETYPE", os.environ.get("OPENBLAS_CORETYPE", "(unset)")),
    ]
    try:
        import threadpoolctl
    except ImportError:
        rows.append(("blas", "threadpoolctl not installed"))
    else:
        for pool in threadpoolctl.threadpool_info():
            rows.append(("blas", f"{pool['internal_api']} {pool['version']} {pool.get('architecture', '')} "
                                 f"{pool['num_threads']} threads"))
    return rows


def compared_outputs(spec, reference):
    """Return `measure` input for an actual output that is the correctly rounded reference."""
    outputs = [("out", round_to_dtype(reference.out, spec.dtype), reference.out, 1.0)]
    if spec.residual:
        outputs.append(("residual_out", round_to_dtype(reference.residual_out, spec.dtype), reference.residual_out, 0.0))
    return outputs


def large_case_rows(dtype, shape, residual, repeat):
    """Return the figures of one large case: throughput against astype, memory and threads.

    "reference + metrics" is `measure` against `lazy_reference`, as `run_backend` runs it:
    each reference row is computed and measured in one pass. The stored reference
    (`compute_reference`, then `measure` of the array) is timed next to it.
    """
    spec = CaseSpec("rms_norm", shape, dtype, 1e-6, "normal", "near_one", residual, 1)
    inputs = make_inputs(spec)
    arrays = [inputs.x] + ([inputs.residual] if residual else [])
    elements = sum(array.size for array in arrays)
    stored = compute_reference(spec, inputs)
    outputs = compared_outputs(spec, stored)
    del stored
    lazy = lazy_reference(spec, inputs)
    lazy_outputs = [(name, actual, getattr(lazy, name), budget) for name, actual, _, budget in outputs]

    astype = best_time(lambda: [array.astype(np.float64) for array in arrays], repeat)
    stored_time = best_time(lambda: measure(
        [(name, actual, getattr(compute_reference(spec, inputs), name), budget)
         for name, actual, _, budget in outputs]), repeat)
    single, threaded, ratios = thread_speedups(lambda threads: measure(lazy_outputs, threads=threads),
                                               max(repeat, 5))

    # Inputs and actual outputs exist before tracing starts; the peak is what the harness adds.
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    measure(lazy_outputs)
    peak = tracemalloc.get_traced_memory()[1] - baseline
    tracemalloc.stop()
    float64_bytes = elements * 8

    label = f"{dtype} {shape[0]}x{shape[1]}" + (" +residual" if residual else "")
    return [
        (f"{label}: astype(float64) of the inputs", f"{astype:.3f} s, {elements / astype / 1e6:.0f} M elements/s"),
        (f"{label}: stored reference, then metrics", f"{stored_time:.3f} s, {astype / stored_time:.0%} of astype"),
        (f"{label}: reference + metrics, 1 thread",
         f"{single:.3f} s, {elements / single / 1e6:.0f} M elements/s, {astype / single:.0%} of astype (target >= 40%)"),
        (f"{label}: reference + metrics, 2 threads",
         f"{threaded:.3f} s, {single / threaded:.2f}x speed-up of the best times (target >= 1.6x); "
         f"{len(ratios)} alternating pairs: median {ratios[len(ratios) // 2]:.2f}x, "
         f"range {ratios[0]:.2f}-{ratios[-1]:.2f}x"),
        (f"{label}: peak memory beyond inputs",
         f"{peak / 2**20:.0f} MiB, {peak / float64_bytes:.2f}x the inputs' float64 size (target <= 3x)"),
    ]


def metrics_against_numpy_rows(repeat):
    """Return the cost of `measure` next to NumPy's two assertions on the same float32 arrays."""
    spec = CaseSpec("rms_norm", (2048, 4096), "float32", 1e-6, "normal", "near_one", False, 2)
    reference = compute_reference(spec, make_inputs(spec))
    actual = round_to_dtype(reference.out, "float32")
    reference32 = round_to_dtype(reference.out, "float32")
    outputs = [("out", actual, reference.out, 1.0)]

    def numpy_checks():
        np.testing.assert_allclose(actual, reference32, rtol=1e-6, atol=0)
        np.testing.assert_array_max_ulp(actual, reference32, maxulp=1)

    numpy_time = best_time(numpy_checks, repeat)
    measure_time = best_time(lambda: measure(outputs), repeat)
    return [
        ("float32 2048x4096: assert_allclose + assert_array_max_ulp", f"{numpy_time:.3f} s"),
        ("float32 2048x4096: metrics (max/mean/p99 ulp, abs, rel, bitwise, worst 5)",
         f"{measure_time:.3f} s, {measure_time / numpy_time:.2f}x NumPy's cost (target <= 1x)"),
    ]


def small_case_rows(backend_name, count):
    """Return cases per second of `run_backend` on new small cases and where a case's time goes.

    Every spec is new, so ``prepare_case`` makes the inputs each time, as for the first
    backend of a case in a run.
    """
    from precision_suite import runner

    backend = get_backend(backend_name)
    specs = [CaseSpec("rms_norm", SMALL_SHAPE, "float32", 1e-6, "normal", "near_one", False, seed)
             for seed in range(count)]
    run_backend(specs[0], backend)

    totals = {"kernel": 0.0, "inputs and reference": 0.0, "metrics": 0.0}
    originals = (runner.prepare_case, runner.measure)
    runner.prepare_case = _timed(runner.prepare_case, totals, "inputs and reference")
    runner.measure = _timed(runner.measure, totals, "metrics")
    backend.compute = _timed(backend.compute, totals, "kernel")
    try:
        started = time.perf_counter()
        for spec in specs[1:]:
            run_backend(spec, backend)
        total = time.perf_counter() - started
    finally:
        runner.prepare_case, runner.measure = originals
        del backend.compute

    cases = count - 1
    shares = ", ".join(f"{name} {value / cases * 1e6:.0f} us ({value / total:.0%})" for name, value in totals.items())
    rest = total - sum(totals.values())
    return [
        (f"float32 4x128 on {backend_name}: run_backend",
         f"{cases / total:.0f} cases/s, {total / cases * 1e6:.0f} us/case: {shares}, "
         f"the rest {rest / cases * 1e6:.0f} us ({rest / total:.0%})"),
    ]


def _timed(function, totals, key):
    """Wrap ``function`` so every call adds its wall time to ``totals[key]``."""
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - started
    return wrapper


def ci_profile_rows():
    """Return where the ci profile's time goes in one ``precision-suite run``-style pass.

    A first pass warms Paddle's kernels and the Numba cache. The timed second pass starts
    with no recorded case sequence, so Hypothesis generates the cases once as in a fresh
    run. Kernel time is every backend call. Inputs, reference and metrics are
    ``prepare_case`` and ``measure`` inside `run_backend`. Rows are the appends to
    ``cases.jsonl``, and tables are the CSV files written at the end. The rest is
    Hypothesis' generation, the replay of its cases for the other pairs, unavailable
    results and building each result.
    """
    from precision_suite.engine import clear_generated_sequences

    _ci_profile_pass()
    clear_generated_sequences()
    return _ci_profile_pass()


def _ci_profile_pass():
    import tempfile

    from hypothesis import settings

    from precision_suite import runner
    from precision_suite.backends import list_backends
    from precision_suite.batch import PairTask, run_pairs
    from precision_suite.dtypes import DTYPES
    from precision_suite.results import RunDirectory
    from precision_suite.strategies import register_profiles

    register_profiles()
    settings.load_profile("ci")
    totals = {"kernel": 0.0, "inputs and reference": 0.0, "metrics": 0.0, "rows": 0.0, "tables": 0.0}
    originals = (runner.prepare_case, runner.measure, RunDirectory.append, RunDirectory.finalize)
    runner.prepare_case = _timed(runner.prepare_case, totals, "inputs and reference")
    runner.measure = _timed(runner.measure, totals, "metrics")
    RunDirectory.append = _timed(RunDirectory.append, totals, "rows")
    RunDirectory.finalize = _timed(RunDirectory.finalize, totals, "tables")
    backends = list_backends()
    for backend in backends:
        backend.compute = _timed(backend.compute, totals, "kernel")

    try:
        with tempfile.TemporaryDirectory() as folder:
            run_dir = RunDirectory(folder)
            run_id = run_dir.start()
            tasks = [PairTask(backend.name, dtype, "ci", "cpu", 0, folder, run_id, "cases/regressions")
                     for backend in backends for dtype in DTYPES]
            started = time.perf_counter()
            summaries = run_pairs(tasks)
            run_dir.finalize()
            wall = time.perf_counter() - started
    finally:
        runner.prepare_case, runner.measure, RunDirectory.append, RunDirectory.finalize = originals
        for backend in backends:
            del backend.compute

    cases = sum(summary.cases for summary in summaries)
    measured = sum(totals.values())
    shares = ", ".join(f"{name} {value / wall:.0%}" for name, value in totals.items())
    return [
        ("ci profile, all default backends and dtypes, 1 process",
         f"{wall:.2f} s, {cases} cases, {cases / wall:.0f} cases/s"),
        ("ci profile: share of the wall time", f"{shares}; generation and the rest {1 - measured / wall:.0%}"),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller large cases, for a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is kept (default: 3)")
    parser.add_argument("--small-cases", type=int, default=300, help="small cases per backend (default: 300)")
    args = parser.parse_args()

    rows = machine_rows()
    if args.quick:
        # On the quick shapes the serial parts of measure weigh more than on the large cases.
        rows.append(("mode", "--quick smoke run: the targets apply to the full run's large cases"))
    for dtype, shape, residual in QUICK_CASES if args.quick else LARGE_CASES:
        rows += large_case_rows(dtype, shape, residual, args.repeat)
    rows += metrics_against_numpy_rows(args.repeat)
    for backend_name in ("numpy_single_rounding", "paddle_composite"):
        rows += small_case_rows(backend_name, args.small_cases)
    rows += ci_profile_rows()

    if args.quick:
        rows = [(name, value.replace("(target ", "(full-run target ")) for name, value in rows]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
